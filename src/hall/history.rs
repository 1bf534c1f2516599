//! The hall's history, one for every console: the active hub records the live state
//! it publishes (the same MCAP segments a window records, a segment a minute) and puts
//! each segment that changed into the hall's JetStream object store,
//! `zhongshu_<hall>_history`, whose age limit is the retention. A console mirrors the
//! bucket into a folder of its own and reads that folder as any history: its timeline,
//! `state-at` and `export` see the past from before the console started, the same past
//! as every other console.
//!
//! The segment being written is put again every couple of seconds, so the hall's past
//! reaches up to a few seconds ago; a put catches the segment as far as it was written
//! then, which a reader reads as far as it goes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::object_store::{self, ObjectStore};

use crate::nats::Nats;

/// The hall's history bucket.
pub fn bucket_name(hall: &str) -> String {
    format!("zhongshu_{hall}_history")
}

/// The folder a console mirrors the hall's history into, under its `--history`.
pub fn mirror_dir(history: &Path, hall: &str) -> PathBuf {
    history.join(format!("hall-{hall}"))
}

/// A hub records segments of this much data time, so the open one, put again and
/// again, stays small.
pub const HALL_SEGMENT_MS: i64 = 60_000;
/// How often the hub puts the segments that changed, and a console mirrors them.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// A segment's file name as the recorder writes it (`zhongshu-<start ms>.mcap`, the
/// number as written, from the year 2000 on), and nothing else: an object named
/// otherwise is never written to disk.
fn is_segment_name(name: &str) -> bool {
    /// 2000-01-01T00:00:00Z.
    const EARLIEST_MS: i64 = 946_684_800_000;
    name.strip_prefix("zhongshu-")
        .and_then(|r| r.strip_suffix(".mcap"))
        .is_some_and(|ms| {
            ms.parse::<i64>()
                .is_ok_and(|v| v >= EARLIEST_MS && v.to_string() == ms)
        })
}

/// The largest segment a console fetches (a hub's segment of a minute is a few MB).
pub const MAX_SEGMENT_BYTES: usize = 512 << 20;

/// The bucket's segments; entries that cannot be read are counted, not fatal.
fn list_segments(
    nats: &Nats,
    store: &ObjectStore,
) -> Result<(Vec<object_store::ObjectInfo>, usize), String> {
    use futures_util::StreamExt;
    let store = store.clone();
    nats.call("list the hall's history", async move {
        let mut list = store.list().await.map_err(|e| e.to_string())?;
        let (mut all, mut unreadable) = (Vec::new(), 0);
        while let Some(info) = list.next().await {
            match info {
                Ok(info) if !info.deleted && is_segment_name(&info.name) => all.push(info),
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
        }
        Ok((all, unreadable))
    })
}

/// A name for a file being written beside `name`, unique to this process and call.
fn partial_name(name: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{name}.{}.{}.partial",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Opens the hall's history bucket; with `create` (the hub), creates it when missing,
/// its objects kept `retention` (the server drops older ones).
fn open_bucket(
    nats: &Nats,
    hall: &str,
    create: Option<(Duration, usize)>,
) -> Result<ObjectStore, String> {
    let js = nats.js.clone();
    let name = bucket_name(hall);
    nats.call("open the hall's history", async move {
        if let Ok(store) = js.get_object_store(&name).await {
            return Ok(store);
        }
        let Some((retention, replicas)) = create else {
            return Err(format!(
                "the hall has no history yet (no object store {name}): its hub records it"
            ));
        };
        let config = object_store::Config {
            bucket: name.clone(),
            description: Some("the hall's recorded history (MCAP segments)".into()),
            max_age: retention,
            storage: async_nats::jetstream::stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        match js.create_object_store(config).await {
            Ok(store) => Ok(store),
            Err(first) => js
                .get_object_store(&name)
                .await
                .map_err(|_| format!("cannot create the object store {name}: {first}")),
        }
    })
}

/// The hub's side: puts the segments of a local history folder that changed.
pub struct Uploader {
    store: ObjectStore,
    dir: PathBuf,
    /// What was put, by file name: its length and modification time then.
    put: HashMap<String, (u64, Option<SystemTime>)>,
    /// Segments put so far.
    pub puts: u64,
}

impl Uploader {
    /// The hall's bucket (created, keeping `retention`, when missing) for the
    /// history recorded in `dir`.
    pub fn open(
        nats: &Nats,
        hall: &str,
        dir: &Path,
        retention: Duration,
        replicas: usize,
    ) -> Result<Self, String> {
        let store = open_bucket(nats, hall, Some((retention, replicas)))?;
        // What the bucket holds already (put before a restart or a failover) is not
        // put again: a local segment of the same length is the same.
        let mut put = HashMap::new();
        if let Ok((listed, _)) = list_segments(nats, &store) {
            for info in listed {
                if let Ok(meta) = std::fs::metadata(dir.join(&info.name))
                    && meta.len() == info.size as u64
                {
                    put.insert(info.name, (meta.len(), meta.modified().ok()));
                }
            }
        }
        Ok(Self {
            store,
            dir: dir.to_path_buf(),
            put,
            puts: 0,
        })
    }

    /// Puts every segment whose length or modification time changed since it was
    /// last put; returns how many.
    pub fn sync(&mut self, nats: &Nats) -> Result<usize, String> {
        let segments = crate::history::segments(&self.dir)
            .map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let mut n = 0;
        for (_, path) in segments {
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
                continue;
            };
            // Deleted meanwhile (the retention): nothing to put.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            // An empty file (a segment that could not be started) holds nothing.
            if meta.len() == 0 {
                continue;
            }
            let key = (meta.len(), meta.modified().ok());
            if self.put.get(&name) == Some(&key) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let store = self.store.clone();
            let object = name.clone();
            nats.call("put a history segment", async move {
                let mut reader: &[u8] = &bytes;
                store
                    .put(object.as_str(), &mut reader)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("cannot put {object}: {e}"))
            })?;
            self.put.insert(name, key);
            self.puts += 1;
            n += 1;
        }
        // Forget what the retention deleted (the bucket's age limit drops it there).
        let dir = &self.dir;
        self.put.retain(|name, _| dir.join(name).exists());
        Ok(n)
    }
}

/// What a mirror did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MirrorReport {
    /// Segments the bucket holds.
    pub segments: usize,
    /// Segments fetched (new or changed).
    pub fetched: usize,
    /// Local segments removed (gone from the bucket).
    pub removed: usize,
    /// What could not be taken (an entry that cannot be read, a segment too large or
    /// that failed to fetch), each said; the rest is mirrored.
    pub problems: Vec<String>,
}

/// A console's side: keeps a local folder equal to the hall's history bucket.
pub struct Mirror {
    store: ObjectStore,
    dir: PathBuf,
    /// The version (nuid) of each object fetched.
    have: HashMap<String, String>,
}

impl Mirror {
    /// A mirror of the hall's history into `dir` (created); an error when the hall
    /// has no history bucket yet.
    pub fn open(nats: &Nats, hall: &str, dir: &Path) -> Result<Self, String> {
        let store = open_bucket(nats, hall, None)?;
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self {
            store,
            dir: dir.to_path_buf(),
            have: HashMap::new(),
        })
    }

    /// The folder mirrored into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Fetches the segments that are new or changed in the bucket (each written whole
    /// beside its place, then moved over it) and removes local ones the bucket no
    /// longer holds.
    pub fn sync(&mut self, nats: &Nats) -> Result<MirrorReport, String> {
        let (listed, unreadable) = list_segments(nats, &self.store)?;
        let mut report = MirrorReport::default();
        if unreadable > 0 {
            report.problems.push(format!(
                "{unreadable} entries of the bucket could not be read; skipped"
            ));
        }
        let mut names = HashSet::new();
        for info in listed {
            names.insert(info.name.clone());
            report.segments += 1;
            let path = self.dir.join(&info.name);
            let known = match self.have.get(&info.name) {
                Some(nuid) => *nuid == info.nuid,
                // From an earlier run: a finished segment does not change, so one of
                // the same length is the same.
                None => std::fs::metadata(&path).is_ok_and(|m| m.len() == info.size as u64),
            };
            if known {
                self.have.insert(info.name.clone(), info.nuid.clone());
                continue;
            }
            if info.size > MAX_SEGMENT_BYTES {
                report.problems.push(format!(
                    "{} is {} MB, more than a segment can be ({} MB); skipped",
                    info.name,
                    info.size >> 20,
                    MAX_SEGMENT_BYTES >> 20
                ));
                continue;
            }
            let store = self.store.clone();
            let name = info.name.clone();
            let fetched = nats.call("fetch a history segment", async move {
                use tokio::io::AsyncReadExt;
                let mut object = store
                    .get(name.as_str())
                    .await
                    .map_err(|e| format!("cannot fetch {name}: {e}"))?;
                let mut bytes = Vec::new();
                (&mut object)
                    .take(MAX_SEGMENT_BYTES as u64 + 1)
                    .read_to_end(&mut bytes)
                    .await
                    .map_err(|e| format!("cannot fetch {name}: {e}"))?;
                if bytes.len() > MAX_SEGMENT_BYTES {
                    return Err(format!("{name} is larger than a segment can be; skipped"));
                }
                Ok(bytes)
            });
            let bytes = match fetched {
                Ok(bytes) => bytes,
                Err(e) => {
                    report.problems.push(e);
                    continue;
                }
            };
            // Written whole beside its place under a name of its own, then moved over
            // it: readers (and another mirror of the same folder) never see half.
            let partial = self.dir.join(partial_name(&info.name));
            let written =
                std::fs::write(&partial, &bytes).and_then(|_| std::fs::rename(&partial, &path));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&partial);
                report.problems.push(format!("{}: {e}", path.display()));
                continue;
            }
            self.have.insert(info.name.clone(), info.nuid.clone());
            report.fetched += 1;
        }
        for (_, path) in crate::history::segments(&self.dir).unwrap_or_default() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if !names.contains(name) && std::fs::remove_file(&path).is_ok() {
                self.have.remove(name);
                report.removed += 1;
            }
        }
        Ok(report)
    }
}

/// How a mirror or an uploader on its thread is doing.
#[derive(Clone, Debug, Default)]
pub struct SyncStatus {
    /// Syncs that went through.
    pub syncs: u64,
    /// The last problem, while it lasts.
    pub problem: Option<String>,
}

/// A sync run every [`SYNC_EVERY`] on a thread of its own until dropped.
pub struct SyncThread {
    stop: Arc<AtomicBool>,
    pub status: Arc<Mutex<SyncStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SyncThread {
    /// Runs `sync` now and then every [`SYNC_EVERY`] (and once more on stop).
    pub fn start(
        name: &str,
        mut sync: impl FnMut() -> Result<(), String> + Send + 'static,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(SyncStatus::default()));
        let (stopping, shared) = (stop.clone(), status.clone());
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                loop {
                    let last = stopping.load(Ordering::Relaxed);
                    let result = sync();
                    if let Ok(mut s) = shared.lock() {
                        match result {
                            Ok(()) => {
                                s.syncs += 1;
                                s.problem = None;
                            }
                            Err(e) => s.problem = Some(e),
                        }
                    }
                    if last {
                        return;
                    }
                    let started = std::time::Instant::now();
                    while started.elapsed() < SYNC_EVERY && !stopping.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })?;
        Ok(Self {
            stop,
            status,
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> SyncStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for SyncThread {
    /// Stops it after one last round (bounded by the server's timeout), waited for.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A console's mirror of the hall's history on its own thread. A hall without a
/// history yet is tried again at each round.
pub fn start_mirror(nats: Nats, hall: String, dir: PathBuf) -> std::io::Result<SyncThread> {
    let mut mirror: Option<Mirror> = None;
    SyncThread::start("hall-history-mirror", move || {
        if mirror.is_none() {
            mirror = Some(Mirror::open(&nats, &hall, &dir)?);
        }
        match mirror.as_mut() {
            Some(m) => m.sync(&nats).and_then(|r| match r.problems.first() {
                None => Ok(()),
                Some(p) => Err(p.clone()),
            }),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{FeedMeta, History, HistoryOptions, HistoryWriter};
    use crate::model::{EntityKind, EntityUpdate};
    use crate::nats::testing::NatsServer;

    const T0: i64 = 1_795_946_400_000;

    fn bus(i: u64, t_ms: i64) -> EntityUpdate {
        EntityUpdate {
            id: format!("bus-{i}"),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("bus".into()),
                speed_kmh: None,
                heading_deg: None,
                service_status: None,
            },
            position: Some([24.93 + i as f64 * 1e-3 + (t_ms - T0) as f64 * 1e-8, 60.17]),
            line: None,
            observed_at_ms: Some(t_ms),
            fields: Default::default(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zhongshu-hall-history-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What the hub records reaches a console's mirror whole: the state at any
    /// instant read there equals the hub's; the segment being written follows as it
    /// grows; a segment the hub's retention deleted (and the bucket let go) goes from
    /// the mirror; an object that is not a segment is never written to disk.
    #[test]
    fn a_console_replays_the_history_the_hub_recorded() {
        let server = NatsServer::start("hall-history");
        let nats = server.connect("hub");
        let (hub_dir, console_dir) = (temp("hub"), temp("console"));
        let options = HistoryOptions {
            segment_ms: 20_000,
            keyframe_ms: 5_000,
            ..Default::default()
        };
        let feeds = vec![FeedMeta {
            id: 0,
            name: "buses".into(),
            domain: "traffic".into(),
        }];
        let mut writer = HistoryWriter::create(&hub_dir, feeds, options).unwrap();
        let record = |writer: &mut HistoryWriter, seconds: std::ops::Range<i64>| {
            for s in seconds {
                let t = T0 + s * 1000;
                for i in 0..30 {
                    writer.upsert(0, t, &bus(i, t)).unwrap();
                }
            }
            writer.flush().unwrap();
        };
        record(&mut writer, 0..50);
        let mut uploader =
            Uploader::open(&nats, "hh", &hub_dir, Duration::from_secs(3600), 1).unwrap();
        assert_eq!(uploader.sync(&nats).unwrap(), 3);
        // Nothing changed: nothing put again.
        assert_eq!(uploader.sync(&nats).unwrap(), 0);

        let console = server.connect("console");
        let mut mirror = Mirror::open(&console, "hh", &console_dir).unwrap();
        let report = mirror.sync(&console).unwrap();
        assert_eq!((report.segments, report.fetched), (3, 3));
        let (hub, mirrored) = (
            History::open(&hub_dir).unwrap(),
            History::open(&console_dir).unwrap(),
        );
        for s in [0, 7, 19, 20, 33, 45, 49] {
            let t = T0 + s * 1000 + 500;
            let (a, b) = (hub.state_at(t).unwrap(), mirrored.state_at(t).unwrap());
            assert_eq!(a.entities, b.entities, "at {s} s");
            assert_eq!(b.entities.len(), 30);
        }
        // The open segment grows: it is put again and fetched again.
        record(&mut writer, 50..58);
        assert_eq!(uploader.sync(&nats).unwrap(), 1);
        assert_eq!(mirror.sync(&console).unwrap().fetched, 1);
        let t = T0 + 57_500;
        let snap = History::open(&console_dir).unwrap().state_at(t).unwrap();
        assert_eq!(snap.data_until_ms, Some(T0 + 57_000));
        assert_eq!(snap.entities, hub.state_at(t).unwrap().entities);
        // A segment gone from the bucket goes from the mirror.
        let first = crate::history::segments(&console_dir).unwrap()[0].1.clone();
        let name = first.file_name().unwrap().to_str().unwrap().to_string();
        let store = open_bucket(&nats, "hh", None).unwrap();
        nats.call("delete", {
            let store = store.clone();
            let name = name.clone();
            async move { store.delete(name.as_str()).await.map_err(|e| e.to_string()) }
        })
        .unwrap();
        // An object that is not a segment (a hostile name) is left alone.
        nats.call("put", {
            let store = store.clone();
            async move {
                let mut r: &[u8] = b"junk";
                store
                    .put("../escape.mcap", &mut r)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .unwrap();
        let report = mirror.sync(&console).unwrap();
        assert_eq!((report.segments, report.removed), (2, 1));
        assert!(!first.exists());
        assert!(!console_dir.parent().unwrap().join("escape.mcap").exists());
        // A fresh console (nothing fetched yet) takes what it already holds as is.
        let mut again = Mirror::open(&console, "hh", &console_dir).unwrap();
        assert_eq!(again.sync(&console).unwrap().fetched, 0);
        // A hub started again (a restart, a failover back) puts nothing the bucket
        // holds already: only the segment deleted from it above.
        let mut restarted =
            Uploader::open(&nats, "hh", &hub_dir, Duration::from_secs(3600), 1).unwrap();
        assert_eq!(restarted.sync(&nats).unwrap(), 1);
        assert_eq!(restarted.sync(&nats).unwrap(), 0);
        assert_eq!(again.sync(&console).unwrap().fetched, 1);
        // An entry of the bucket that cannot be read (another client's, with an
        // empty time) is said and skipped; the rest is still mirrored.
        nats.call("publish", {
            let js = nats.js.clone();
            async move {
                let info = br#"{"name":"notes.txt","bucket":"zhongshu_hh_history","nuid":"x","size":4,"chunks":1,"mtime":"","deleted":true}"#;
                js.publish("$O.zhongshu_hh_history.M.bm90ZXMudHh0", info.as_slice().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .unwrap();
        let report = again.sync(&console).unwrap();
        assert_eq!(report.segments, 3, "{report:?}");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("could not be read")),
            "{report:?}"
        );
        // Two mirrors of one folder at once (a console and a state-at) never trip
        // over each other's files.
        record(&mut writer, 58..60);
        uploader.sync(&nats).unwrap();
        std::thread::scope(|scope| {
            for k in 0..4 {
                let (server, dir) = (&server, &console_dir);
                scope.spawn(move || {
                    let nats = server.connect(&format!("mirror-{k}"));
                    for _ in 0..5 {
                        let mut m = Mirror::open(&nats, "hh", dir).unwrap();
                        let r = m.sync(&nats).unwrap();
                        assert!(
                            r.problems.iter().all(|p| p.contains("could not be read")),
                            "{r:?}"
                        );
                    }
                });
            }
        });
        let leftovers: Vec<_> = std::fs::read_dir(&console_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        writer.finish().unwrap();
        for d in [&hub_dir, &console_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn a_hall_without_a_history_says_so() {
        let server = NatsServer::start("hall-history-none");
        let nats = server.connect("console");
        let dir = temp("none");
        let e = Mirror::open(&nats, "empty", &dir).err().unwrap();
        assert!(e.contains("no history yet"), "{e}");
    }

    #[test]
    fn only_segment_names_are_taken() {
        assert!(is_segment_name("zhongshu-1795946400000.mcap"));
        for bad in [
            "zhongshu-0.mcap",
            "zhongshu-01795946400000.mcap",
            "zhongshu-99999999999999999999.mcap",
            "zhongshu-.mcap",
            "../zhongshu-1.mcap",
            "zhongshu-1.mcap/x",
            "zhongshu-1a.mcap",
            "x.mcap",
        ] {
            assert!(!is_segment_name(bad), "{bad}");
        }
    }
}
