//! The city's history: every change to the live state, recorded with its time, so the
//! state at any past instant can be rebuilt (`zhongshu state-at`, replay).
//!
//! A history is a folder of [MCAP](https://mcap.dev) segments,
//! `zhongshu-<start ms>.mcap`, one per [`HistoryOptions::segment_ms`] of data time:
//! zstd-compressed chunks with a chunk index, readable by the MCAP tools and
//! libraries (`mcap` for Python, Foxglove). Topics:
//! - `changes`: state changes in the compact encoding of [`codec`] (about a second
//!   each);
//! - `keyframe`: every entity then, each [`HistoryOptions::keyframe_ms`]; a keyframe
//!   starts a chunk, so reading can start at one without what came before;
//! - `health`: each feed's health as JSON when it changed (and again after each
//!   keyframe);
//! - the metadata record `feeds` names the feeds (`id`, `name`, `domain`).
//!
//! Recording never blocks the live path: [`Recorder`] takes changes over a bounded
//! channel and counts what it had to drop. Segments older than the retention go
//! first. A damaged or cut-short segment is reported and read as far as it goes.

pub mod codec;
pub mod export;
pub mod playback;
pub mod record;
pub mod state_at;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::geo_frame::GeoFrame;
use crate::model::{EntityUpdate, FeedId};
use crate::state::numbers::{Numbers, NumbersUpdate, UpdateShape};
use crate::state::{ApplyOutcome, Journaled, LiveState, Slot};
use codec::{Change, Decoder, Encoder, Record};

pub const DAY_MS: i64 = 86_400_000;

/// The file a recorder holds locked in its history folder while it writes.
pub const LOCK_FILE: &str = ".zhongshu-history.lock";

/// How a history is kept.
#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Segments wholly older than this (before the newest data) are deleted.
    pub retention_ms: i64,
    /// A keyframe every so often (data time).
    pub keyframe_ms: i64,
    /// A new segment every so often (data time).
    pub segment_ms: i64,
    /// Changes are written as one message per this much data time.
    pub message_ms: i64,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self {
            retention_ms: 7 * DAY_MS,
            keyframe_ms: 30_000,
            segment_ms: 600_000,
            message_ms: 1_000,
        }
    }
}

/// A feed as the history names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedMeta {
    pub id: FeedId,
    pub name: String,
    pub domain: String,
}

const SCHEMA: &str = "zhongshu.changes.v1";
const ENCODING: &str = "x-zhongshu-changes";
const CHANGES: &str = "changes";
const KEYFRAME: &str = "keyframe";
const HEALTH: &str = "health";

fn segment_name(start_ms: i64) -> String {
    format!("zhongshu-{start_ms}.mcap")
}

/// The segments in `dir`, oldest first: (start ms, path).
pub fn segments(dir: &Path) -> std::io::Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(start) = name
            .strip_prefix("zhongshu-")
            .and_then(|n| n.strip_suffix(".mcap"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        out.push((start, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// What a writer has done so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WriterStats {
    /// Changes written (each once).
    pub records: u64,
    /// Entities listed by keyframes (again each time).
    pub keyframe_entities: u64,
    pub messages: u64,
    pub keyframes: u64,
    pub segments: u64,
    pub segments_deleted: u64,
    /// Bytes of the segments finished so far.
    pub bytes_finished: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

struct Segment {
    start_ms: i64,
    path: PathBuf,
    writer: mcap::Writer<BufWriter<File>>,
    changes: u16,
    keyframe: u16,
    health: u16,
    sequence: u32,
}

/// Writes a history synchronously (the [`Recorder`]'s thread drives one; the bench
/// times one directly).
pub struct HistoryWriter {
    /// Held while it writes: [`LOCK_FILE`] locked.
    _lock: File,
    dir: PathBuf,
    options: HistoryOptions,
    feeds: Vec<FeedMeta>,
    encoder: Encoder,
    segment: Option<Segment>,
    /// The changes message being gathered and the time it is based on.
    pending: Vec<u8>,
    pending_base_ms: i64,
    pending_records: u64,
    next_keyframe_ms: i64,
    /// The newest data time seen.
    now_ms: i64,
    health: BTreeMap<FeedId, Value>,
    pub stats: WriterStats,
    /// When starting a segment last failed (tried again after [`REOPEN_AFTER`]).
    open_failed: Option<std::time::Instant>,
}

impl HistoryWriter {
    /// A writer into `dir` (created when missing).
    pub fn create(
        dir: &Path,
        feeds: Vec<FeedMeta>,
        options: HistoryOptions,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the history folder {}", dir.display()))?;
        // Fail now, not at the first write, when the folder cannot be written.
        let probe = dir.join(".zhongshu-write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("cannot write in the history folder {}", dir.display()))?;
        let _ = std::fs::remove_file(probe);
        // One recorder a folder: two would interleave their segments into a history
        // that goes back and forth in time.
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot create {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another recorder is writing the history in {} (give each its own --history, or --no-history)",
                dir.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            options,
            feeds,
            encoder: Encoder::new(),
            segment: None,
            pending: Vec::new(),
            pending_base_ms: 0,
            pending_records: 0,
            next_keyframe_ms: i64::MIN,
            now_ms: i64::MIN,
            health: BTreeMap::new(),
            stats: WriterStats::default(),
            open_failed: None,
        })
    }

    fn open_segment(&mut self, start_ms: i64) -> anyhow::Result<()> {
        // A segment that could not be started (a full disk) is tried again after a
        // while, not at every change: no heap of empty files.
        if let Some(failed) = self.open_failed
            && failed.elapsed() < REOPEN_AFTER
        {
            bail!(NOT_WRITTEN);
        }
        let mut start = start_ms;
        // Never write over a segment (a clock set back, a restart in the same ms).
        while self.dir.join(segment_name(start)).exists() {
            start += 1;
        }
        let path = self.dir.join(segment_name(start));
        let result = self.start_segment(start, &path);
        if result.is_err() {
            // Nothing half-made is left behind.
            let _ = std::fs::remove_file(&path);
            self.open_failed = Some(std::time::Instant::now());
        } else {
            self.open_failed = None;
        }
        result
    }

    fn start_segment(&mut self, start: i64, path: &Path) -> anyhow::Result<()> {
        let path = path.to_path_buf();
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Zstd))
            .compression_threads(0)
            .chunk_size(Some(1 << 20))
            .profile("zhongshu")
            .library(concat!("zhongshu ", env!("CARGO_PKG_VERSION")))
            .create(BufWriter::with_capacity(1 << 16, file))?;
        let schema = writer.add_schema(SCHEMA, ENCODING, b"")?;
        let none = BTreeMap::new();
        let changes = writer.add_channel(schema, CHANGES, ENCODING, &none)?;
        let keyframe = writer.add_channel(schema, KEYFRAME, ENCODING, &none)?;
        let health = writer.add_channel(0, HEALTH, "json", &none)?;
        let feeds = serde_json::to_string(&self.feeds)?;
        writer.write_metadata(&mcap::records::Metadata {
            name: "feeds".into(),
            metadata: [("feeds".to_string(), feeds)].into_iter().collect(),
        })?;
        self.segment = Some(Segment {
            start_ms: start,
            path,
            writer,
            changes,
            keyframe,
            health,
            sequence: 0,
        });
        self.stats.segments += 1;
        Ok(())
    }

    fn write(
        &mut self,
        channel: fn(&Segment) -> u16,
        at_ms: i64,
        data: &[u8],
    ) -> anyhow::Result<()> {
        let Some(segment) = self.segment.as_mut() else {
            bail!(NOT_WRITTEN);
        };
        segment.sequence += 1;
        let time = at_ms.max(0) as u64 * 1_000_000;
        segment.writer.write_to_known_channel(
            &mcap::records::MessageHeader {
                channel_id: channel(segment),
                sequence: segment.sequence,
                log_time: time,
                publish_time: time,
            },
            data,
        )?;
        self.stats.messages += 1;
        Ok(())
    }

    fn flush_pending(&mut self) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending);
        let base = self.pending_base_ms;
        self.write(|s| s.changes, base, &data)?;
        self.stats.records += self.pending_records;
        self.pending_records = 0;
        self.pending = data;
        self.pending.clear();
        Ok(())
    }

    fn finish_segment(&mut self) -> anyhow::Result<()> {
        if let Some(mut segment) = self.segment.take() {
            segment.writer.finish()?;
            drop(segment.writer);
            self.stats.bytes_finished += std::fs::metadata(&segment.path).map_or(0, |m| m.len());
        }
        Ok(())
    }

    /// Deletes segments wholly older than the retention (a segment ends where the next
    /// one starts).
    fn apply_retention(&mut self) {
        let Ok(all) = segments(&self.dir) else { return };
        let cut = self.now_ms.saturating_sub(self.options.retention_ms);
        for pair in all.windows(2) {
            let (_, path) = &pair[0];
            let (next_start, _) = pair[1];
            if next_start <= cut && std::fs::remove_file(path).is_ok() {
                self.stats.segments_deleted += 1;
            }
        }
    }

    fn keyframe(&mut self, at_ms: i64) -> anyhow::Result<()> {
        self.flush_pending()?;
        if let Some(s) = self.segment.as_mut() {
            // The keyframe starts a chunk, so a reader can start there.
            s.writer.flush()?;
        }
        let mut data = Vec::new();
        let n = self.encoder.keyframe(at_ms, &mut data);
        self.write(|s| s.keyframe, at_ms, &data)?;
        self.stats.keyframe_entities += n as u64;
        self.stats.keyframes += 1;
        let health: Vec<(FeedId, Value)> =
            self.health.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (_, value) in health {
            let bytes = serde_json::to_vec(&value)?;
            self.write(|s| s.health, at_ms, &bytes)?;
        }
        self.next_keyframe_ms = at_ms + self.options.keyframe_ms;
        Ok(())
    }

    /// Moves the data clock to `at_ms`: a new segment or keyframe when due.
    fn advance(&mut self, at_ms: i64) -> anyhow::Result<()> {
        if at_ms <= self.now_ms {
            return Ok(());
        }
        self.now_ms = at_ms;
        let rotate = self
            .segment
            .as_ref()
            .is_none_or(|s| at_ms >= s.start_ms.saturating_add(self.options.segment_ms));
        if rotate {
            self.flush_pending()?;
            self.finish_segment()?;
            self.open_segment(at_ms)?;
            self.apply_retention();
            self.keyframe(at_ms)?;
        } else if at_ms >= self.next_keyframe_ms {
            self.keyframe(at_ms)?;
        } else if !self.pending.is_empty()
            && at_ms >= self.pending_base_ms.saturating_add(self.options.message_ms)
        {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn start_pending(&mut self, at_ms: i64) {
        if self.pending.is_empty() {
            self.pending_base_ms = at_ms;
        }
    }

    /// Records one change to the live state taken in at `at_ms`.
    pub fn upsert(
        &mut self,
        feed: FeedId,
        at_ms: i64,
        update: &EntityUpdate,
    ) -> anyhow::Result<()> {
        self.advance(at_ms)?;
        self.start_pending(at_ms);
        let base = self.pending_base_ms;
        self.encoder
            .upsert(base, feed, at_ms, update, &mut self.pending);
        self.pending_records += 1;
        Ok(())
    }

    /// Records that `id` of `feed` went at `at_ms`.
    pub fn remove(&mut self, feed: FeedId, id: &str, at_ms: i64) -> anyhow::Result<()> {
        self.advance(at_ms)?;
        self.start_pending(at_ms);
        let base = self.pending_base_ms;
        let before = self.pending.len();
        self.encoder
            .remove(base, feed, id, at_ms, &mut self.pending);
        if self.pending.len() > before {
            self.pending_records += 1;
        }
        Ok(())
    }

    /// Records the state's journal, removals stamped `at_ms`.
    pub fn journal(&mut self, at_ms: i64, changes: &[Journaled]) -> anyhow::Result<()> {
        for change in changes {
            match change {
                Journaled::Upsert {
                    feed,
                    received_at_ms,
                    update,
                } => self.upsert(*feed, *received_at_ms, update)?,
                Journaled::Remove { feed, id } => self.remove(*feed, id, at_ms)?,
            }
        }
        Ok(())
    }

    /// Records a feed's health when it differs from what was recorded last.
    pub fn health(&mut self, feed: FeedId, at_ms: i64, health: Value) -> anyhow::Result<()> {
        if self.health.get(&feed) == Some(&health) {
            return Ok(());
        }
        self.advance(at_ms)?;
        // The changes gathered so far go first: messages stay in time order, so a
        // reader stopping at the first one after an instant has read all before it.
        self.flush_pending()?;
        let line = serde_json::json!({"feed": feed, "at_ms": at_ms, "health": health});
        self.health.insert(feed, line.clone());
        let bytes = serde_json::to_vec(&line)?;
        self.write(|s| s.health, at_ms, &bytes)
    }

    /// Writes what is gathered and closes the open chunk: a reader of the open
    /// segment, or one after a crash, reads all of it.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        self.flush_pending()?;
        if let Some(s) = self.segment.as_mut() {
            s.writer.flush()?;
        }
        Ok(())
    }

    /// Finishes the open segment (its index written).
    pub fn finish(mut self) -> anyhow::Result<WriterStats> {
        self.flush_pending()?;
        self.finish_segment()?;
        Ok(self.stats.clone())
    }
}

impl Drop for HistoryWriter {
    fn drop(&mut self) {
        let _ = self.flush_pending();
        let _ = self.finish_segment();
    }
}

enum Msg {
    Journal(i64, Vec<Journaled>),
    Health(FeedId, i64, Value),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Records on its own thread; the live path hands changes over and never waits.
pub struct Recorder {
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
    stats: Arc<Mutex<WriterStats>>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

/// Batches of changes the recorder's queue holds before it drops new ones.
const QUEUE: usize = 4096;

/// A writer that failed to start a segment tries again after this long.
const REOPEN_AFTER: Duration = Duration::from_secs(5);

/// What a change meets while no segment could be started (one text, so it is said
/// once).
const NOT_WRITTEN: &str =
    "the history is not being written (a segment could not be started; tried again every 5 s)";

/// The recorder closes its open chunk (and writes it out) at least this often.
const CHUNK_EVERY: Duration = Duration::from_secs(1);

impl Recorder {
    pub fn start(
        dir: &Path,
        feeds: Vec<FeedMeta>,
        options: HistoryOptions,
    ) -> anyhow::Result<Self> {
        let writer = HistoryWriter::create(dir, feeds, options)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let shared = stats.clone();
        let thread = std::thread::Builder::new()
            .name("history".into())
            .spawn(move || record(writer, rx, shared))?;
        Ok(Self {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
            stats,
            thread: Some(thread),
            dir: dir.to_path_buf(),
        })
    }

    /// The folder recorded to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hands the state's journal over; false (and counted) when the recorder is
    /// behind and the changes were dropped.
    pub fn journal(&self, at_ms: i64, changes: Vec<Journaled>) -> bool {
        if changes.is_empty() {
            return true;
        }
        let n = changes.len() as u64;
        let sent = self.tx.as_ref().is_some_and(|tx| {
            !matches!(
                tx.try_send(Msg::Journal(at_ms, changes)),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
            )
        });
        if !sent {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
        sent
    }

    /// Hands a feed's health over (recorded when it changed).
    pub fn health(&self, feed: FeedId, at_ms: i64, health: Value) {
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Health(feed, at_ms, health));
        }
    }

    /// Waits until everything handed over so far is written.
    pub fn flush(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if let Some(tx) = &self.tx
            && tx.send(Msg::Flush(done)).is_ok()
        {
            let _ = wait.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Asks for everything handed over so far to be written (a reader of the open
    /// segment sees it then); does not wait.
    pub fn flush_soon(&self) {
        let (done, _) = std::sync::mpsc::channel();
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(Msg::Flush(done));
        }
    }

    /// Changes dropped because the recorder was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> WriterStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops, writing what is left and finishing the open segment.
    pub fn finish(mut self) -> WriterStats {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record(mut writer: HistoryWriter, rx: Receiver<Msg>, stats: Arc<Mutex<WriterStats>>) {
    let note = |writer: &mut HistoryWriter, result: anyhow::Result<()>| {
        if let Err(e) = result {
            writer.stats.errors += 1;
            writer.stats.last_error = Some(format!("{e:#}"));
        }
    };
    // The open chunk is closed and written at least this often: what it holds is
    // readable by others then, and a crash (kill -9, power) loses no more.
    let mut written = std::time::Instant::now();
    loop {
        let message = rx.recv_timeout(Duration::from_millis(500));
        let quiet = matches!(message, Err(RecvTimeoutError::Timeout));
        match message {
            Ok(Msg::Journal(at_ms, changes)) => {
                let r = writer.journal(at_ms, &changes);
                note(&mut writer, r);
            }
            Ok(Msg::Health(feed, at_ms, value)) => {
                let r = writer.health(feed, at_ms, value);
                note(&mut writer, r);
            }
            Ok(Msg::Flush(done)) => {
                let r = writer.flush();
                note(&mut writer, r);
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if quiet || written.elapsed() >= CHUNK_EVERY {
            let r = writer.flush();
            note(&mut writer, r);
            written = std::time::Instant::now();
        }
        if let Ok(mut s) = stats.lock() {
            *s = writer.stats.clone();
        }
    }
    let r = writer.flush_pending().and_then(|_| writer.finish_segment());
    note(&mut writer, r);
    if let Ok(mut s) = stats.lock() {
        *s = writer.stats.clone();
    }
}

/// One entity as it stood at an instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    pub feed: FeedId,
    /// When its last change was taken in.
    pub at_ms: i64,
    pub update: EntityUpdate,
}

/// The recorded state at an instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub at_ms: i64,
    /// By (feed, id).
    pub entities: BTreeMap<(FeedId, String), Entity>,
    /// Each feed's last recorded health then.
    pub health: BTreeMap<FeedId, Value>,
    pub feeds: Vec<FeedMeta>,
    /// The segment read and the keyframe started from.
    pub segment: Option<PathBuf>,
    pub keyframe_ms: Option<i64>,
    /// Records applied after the keyframe.
    pub records: u64,
    /// The newest data time seen at or before `at_ms` (a change, a keyframe or a
    /// health line).
    pub data_until_ms: Option<i64>,
    /// Damaged or cut-short segments met, said, and read as far as they go.
    pub problems: Vec<String>,
    /// The recording holds nothing after `data_until_ms`: the instant lies at or
    /// after its end.
    pub recording_ended: bool,
}

impl Snapshot {
    /// When the instant lies well after the recording's end (a minute or more), a
    /// line saying so: the city shown is as it stood at the end.
    pub fn after_the_end(&self) -> Option<String> {
        let until = self.data_until_ms?;
        (self.recording_ended && self.at_ms - until >= 60_000).then(|| {
            format!(
                "the recording ends at {} ({} s before the time asked): the city is as it stood then",
                crate::clock::rfc3339_from_unix_ms(until),
                (self.at_ms - until) / 1000
            )
        })
    }
}

/// A history folder opened for reading.
pub struct History {
    dir: PathBuf,
    segments: Vec<(i64, PathBuf)>,
}

impl History {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let segments = segments(dir)
            .with_context(|| format!("cannot read the history folder {}", dir.display()))?;
        if segments.is_empty() {
            bail!(
                "{} holds no history (no zhongshu-*.mcap segments)",
                dir.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            segments,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The time the oldest segment starts.
    pub fn first_ms(&self) -> i64 {
        self.segments.first().map_or(0, |s| s.0)
    }

    /// The state at `t_ms`: the latest segment starting at or before it, from its
    /// latest keyframe at or before it, then every change up to it (a [`Replay`]
    /// standing there). A segment that cannot be read, or holds no keyframe by then,
    /// is said in `problems`, and the one before it is used; none readable is an
    /// error.
    pub fn state_at(&self, t_ms: i64) -> anyhow::Result<Snapshot> {
        Ok(self.replay_from(t_ms)?.into_snapshot())
    }

    /// The latest segment starting at or before `t_ms`.
    fn last_segment_by(&self, t_ms: i64) -> anyhow::Result<usize> {
        self.segments
            .iter()
            .rposition(|(start, _)| *start <= t_ms)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the history in {} starts at {}, after the time asked",
                    self.dir.display(),
                    crate::clock::rfc3339_from_unix_ms(self.first_ms())
                )
            })
    }
}

fn feeds_of(metadata: &mcap::records::Metadata) -> Vec<FeedMeta> {
    metadata
        .metadata
        .get("feeds")
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default()
}

/// Plays a history forward from an instant, a step at a time (the timeline's
/// replay): each step hands over the changes up to its instant, in order.
pub struct Replay {
    segments: Vec<(i64, PathBuf)>,
    /// The segment being read (an index in `segments`).
    seg: usize,
    map: Option<memmap2::Mmap>,
    summary: Option<mcap::Summary>,
    chunks: Vec<mcap::records::ChunkIndex>,
    next_chunk: usize,
    /// Messages read and not yet decoded: topic, time, bytes.
    messages: VecDeque<(String, i64, Vec<u8>)>,
    /// A changes message decoded up to a byte offset: its time, bytes, offset.
    current: Option<(i64, Vec<u8>, usize)>,
    /// The state replayed so far (the entities live in it, decoded in place).
    decoder: Decoder,
    keyframe_seen: bool,
    /// The decoder's state follows the recording (false after a damaged message,
    /// until the next keyframe).
    synced: bool,
    /// Every record of the history has been handed over.
    ended: bool,
    /// All but the entities, which [`Replay::snapshot`] takes from the decoder.
    snap: Snapshot,
}

impl History {
    /// A replay standing at `t_ms` (its snapshot is the state then).
    ///
    /// It starts in the latest segment beginning at or before `t_ms`; one that cannot
    /// be read, or holds no keyframe by then, is said in the snapshot's `problems` and
    /// the one before it is used. None readable is an error saying why.
    pub fn replay_from(&self, t_ms: i64) -> anyhow::Result<Replay> {
        let last = self.last_segment_by(t_ms)?;
        let mut problems: Vec<String> = Vec::new();
        fn say_once(problems: &mut Vec<String>, problem: String) {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        for seg in (0..=last).rev() {
            let path = &self.segments[seg].1;
            match self.replay_in(seg, t_ms) {
                Ok(mut replay) if replay.keyframe_seen => {
                    for p in std::mem::take(&mut replay.snap.problems) {
                        say_once(&mut problems, p);
                    }
                    replay.snap.problems = problems;
                    return Ok(replay);
                }
                Ok(replay) => {
                    for p in replay.snap.problems {
                        say_once(&mut problems, p);
                    }
                    say_once(
                        &mut problems,
                        format!(
                            "{}: no keyframe at or before the time asked; skipped",
                            path.display()
                        ),
                    );
                }
                Err(e) => say_once(&mut problems, format!("{}: {e:#}; skipped", path.display())),
            }
        }
        bail!(
            "no readable history at or before {} in {}: {}",
            crate::clock::rfc3339_from_unix_ms(t_ms),
            self.dir.display(),
            problems.join("; ")
        )
    }

    /// A replay of segment `seg` and those after it, standing at `t_ms`.
    fn replay_in(&self, seg: usize, t_ms: i64) -> anyhow::Result<Replay> {
        let mut replay = Replay {
            segments: self.segments.clone(),
            seg,
            map: None,
            summary: None,
            chunks: Vec::new(),
            next_chunk: 0,
            messages: VecDeque::new(),
            current: None,
            decoder: Decoder::new(),
            keyframe_seen: false,
            synced: false,
            ended: false,
            snap: Snapshot {
                at_ms: t_ms,
                ..Snapshot::default()
            },
        };
        replay.open_segment(seg, Some(t_ms))?;
        replay.advance(t_ms, |_| {})?;
        Ok(replay)
    }
}

impl Replay {
    /// The state as of the last step (its entities copied out).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            entities: self.entities(),
            recording_ended: self.ended,
            ..self.snap.clone()
        }
    }

    /// The state as of the last step, the replay given up for it.
    pub fn into_snapshot(mut self) -> Snapshot {
        self.snap.entities = self.entities();
        self.snap.recording_ended = self.ended;
        self.snap
    }

    fn entities(&self) -> BTreeMap<(FeedId, String), Entity> {
        self.decoder
            .alive()
            .map(|(feed, at_ms, update)| {
                (
                    (feed, update.id.clone()),
                    Entity {
                        feed,
                        at_ms,
                        update: update.clone(),
                    },
                )
            })
            .collect()
    }

    /// The feeds the history names.
    pub fn feeds(&self) -> &[FeedMeta] {
        &self.snap.feeds
    }

    /// Damaged or cut-short segments met so far.
    pub fn problems(&self) -> &[String] {
        &self.snap.problems
    }

    /// Each feed's last recorded health line up to where it has read.
    pub fn health(&self) -> &BTreeMap<FeedId, Value> {
        &self.snap.health
    }

    /// Every record of the history has been handed over.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn open_segment(&mut self, seg: usize, from_ms: Option<i64>) -> anyhow::Result<()> {
        self.seg = seg;
        self.map = None;
        self.summary = None;
        self.chunks.clear();
        self.next_chunk = 0;
        self.messages.clear();
        let Some((_, path)) = self.segments.get(seg).cloned() else {
            return Ok(());
        };
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: segments are only appended to by their writer and deleted whole; a
        // segment cut short reads as far as it goes.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot map {}", path.display()))?;
        match mcap::Summary::read(&map).ok().flatten() {
            Some(summary) => {
                if let Some(index) = summary.metadata_indexes.iter().find(|m| m.name == "feeds")
                    && let Ok(metadata) = mcap::read::metadata(&map, index)
                {
                    self.snap.feeds = feeds_of(&metadata);
                }
                let keyframe = summary
                    .channels
                    .iter()
                    .find(|(_, c)| c.topic == KEYFRAME)
                    .map(|(id, _)| *id);
                let mut chunks = summary.chunk_indexes.clone();
                chunks.sort_by_key(|c| (c.message_start_time, c.chunk_start_offset));
                if let Some(from) = from_ms {
                    let from_ns = (from.max(0) as u64).saturating_mul(1_000_000);
                    self.next_chunk = chunks
                        .iter()
                        .rposition(|c| {
                            c.message_start_time <= from_ns
                                && keyframe
                                    .is_some_and(|k| c.message_index_offsets.contains_key(&k))
                        })
                        .unwrap_or(0);
                }
                self.chunks = chunks;
                self.summary = Some(summary);
            }
            None => {
                // Being written or cut short: every message it holds, read now.
                self.snap.problems.push(format!(
                    "{} has no index (being written, or cut short): read from its start",
                    path.display()
                ));
                let mut all = Vec::new();
                collect_linear(
                    &map,
                    &path,
                    &mut all,
                    &mut self.snap.feeds,
                    &mut self.snap.problems,
                );
                self.messages.extend(all);
            }
        }
        self.map = Some(map);
        Ok(())
    }

    /// The next message of the history, moving on to the next segment at the end of
    /// one; `None` at the end of the history.
    fn next_message(&mut self) -> anyhow::Result<Option<(String, i64, Vec<u8>)>> {
        loop {
            if let Some(m) = self.messages.pop_front() {
                return Ok(Some(m));
            }
            if let (Some(summary), Some(map)) = (&self.summary, &self.map)
                && let Some(chunk) = self.chunks.get(self.next_chunk)
            {
                self.next_chunk += 1;
                match summary.stream_chunk(map, chunk) {
                    Ok(messages) => {
                        for m in messages {
                            match m {
                                Ok(m) => self.messages.push_back((
                                    m.channel.topic.clone(),
                                    (m.log_time / 1_000_000) as i64,
                                    m.data.into_owned(),
                                )),
                                Err(e) => {
                                    self.snap.problems.push(format!("a damaged chunk: {e}"));
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => self.snap.problems.push(format!("a damaged chunk: {e}")),
                }
                continue;
            }
            if self.seg + 1 >= self.segments.len() {
                return Ok(None);
            }
            let next = self.seg + 1;
            if let Err(e) = self.open_segment(next, None) {
                self.snap.problems.push(format!("{e:#}; skipped"));
                self.map = None;
                self.summary = None;
            }
        }
    }

    /// A keyframe: the decoder starts afresh from it; what differs from the state
    /// replayed so far is handed over as changes (all of it at the first keyframe).
    fn take_keyframe(
        &mut self,
        at_ms: i64,
        data: &[u8],
        each: &mut impl FnMut(Change<'_>),
    ) -> anyhow::Result<()> {
        let before = std::mem::take(&mut self.decoder);
        let was: HashMap<(FeedId, &str), (usize, &EntityUpdate)> = before
            .alive()
            .enumerate()
            .map(|(n, (feed, _, u))| ((feed, u.id.as_str()), (n, u)))
            .collect();
        let mut present = vec![false; was.len()];
        let first = !self.synced;
        let decoded = self.decoder.decode(at_ms, data, 0, i64::MAX, |c| {
            if let Change::Upsert { feed, update, .. } = c {
                let old = was.get(&(feed, update.id.as_str()));
                if let Some((n, _)) = old {
                    present[*n] = true;
                }
                if first || old.is_none_or(|(_, u)| *u != update) {
                    each(c);
                }
            }
        });
        if let Err(e) = decoded {
            // The state handed over so far stands, not a keyframe read in part.
            drop(was);
            self.decoder = before;
            self.synced = false;
            return Err(anyhow::anyhow!("a damaged keyframe at {at_ms}: {e}"));
        }
        for (n, (feed, _, u)) in before.alive().enumerate() {
            if !present[n] {
                each(Change::Remove {
                    feed,
                    at_ms,
                    id: &u.id,
                });
            }
        }
        self.snap.keyframe_ms = Some(at_ms);
        self.snap.segment = self.segments.get(self.seg).map(|s| s.1.clone());
        self.snap.records = 0;
        self.keyframe_seen = true;
        self.synced = true;
        Ok(())
    }

    /// Hands over every change up to `to_ms`, in order, and stands there. A damaged
    /// message ends its segment's reading (said in the snapshot's problems). The
    /// changes are borrowed from the replay's state: copy what is kept.
    pub fn advance(&mut self, to_ms: i64, mut each: impl FnMut(Change<'_>)) -> anyhow::Result<()> {
        loop {
            if let Some((base_ms, data, from)) = self.current.take() {
                let snap = &mut self.snap;
                let decoded = self.decoder.decode(base_ms, &data, from, to_ms, |c| {
                    snap.records += 1;
                    snap.data_until_ms =
                        Some(snap.data_until_ms.map_or(c.at_ms(), |d| d.max(c.at_ms())));
                    each(c);
                });
                match decoded {
                    Ok(Some(stopped)) => {
                        self.current = Some((base_ms, data, stopped));
                        self.snap.at_ms = to_ms;
                        return Ok(());
                    }
                    Ok(None) => {}
                    Err(e) => self.damaged(format!("a damaged message at {base_ms}: {e}")),
                }
            }
            let Some((topic, at_ms, data)) = self.next_message()? else {
                self.snap.at_ms = to_ms;
                self.ended = true;
                return Ok(());
            };
            if at_ms > to_ms {
                self.messages.push_front((topic, at_ms, data));
                self.snap.at_ms = to_ms;
                return Ok(());
            }
            // A keyframe or a health line is data of its time too: a recording that
            // went on with nothing changing (or nothing left) has not ended.
            self.snap.data_until_ms = Some(self.snap.data_until_ms.map_or(at_ms, |d| d.max(at_ms)));
            match topic.as_str() {
                KEYFRAME => {
                    let mut until = self.snap.data_until_ms;
                    let r = self.take_keyframe(at_ms, &data, &mut |c: Change<'_>| {
                        until = Some(until.map_or(c.at_ms(), |d| d.max(c.at_ms())));
                        each(c);
                    });
                    self.snap.data_until_ms = until;
                    if let Err(e) = r {
                        self.damaged(format!("{e:#}"));
                    }
                }
                CHANGES if self.synced => self.current = Some((at_ms, data, 0)),
                HEALTH => {
                    if let Ok(line) = serde_json::from_slice::<Value>(&data)
                        && let Some(feed) = line["feed"].as_u64()
                    {
                        self.snap.health.insert(feed as FeedId, line);
                    }
                }
                _ => {}
            }
        }
    }

    /// A damaged message: said, and the rest of its segment skipped; the state waits
    /// for the next keyframe.
    fn damaged(&mut self, problem: String) {
        self.snap
            .problems
            .push(format!("{problem}: the rest of the segment skipped"));
        self.messages.clear();
        self.current = None;
        self.next_chunk = self.chunks.len();
        self.synced = false;
    }
}

/// A [`Replay`] read ahead on its own thread, so the frame only applies what it is
/// handed (the timeline's playback): the thread decodes a second of data at a time, at
/// most [`ReplayAhead::AHEAD_S`] seconds ahead of what was taken. The frame borrows
/// the records; spent batches go back to the thread to be freed there, so the frame
/// neither allocates nor frees for them.
///
/// Started in the state's frame ([`ReplayAhead::start_in`]), the thread also tells
/// each record's shape and projects its place ([`crate::state::numbers`]), so a
/// vehicle that only moved is written into the frame's state from a few numbers,
/// without reading the record's text ([`ReplayAhead::apply_until`]).
pub struct ReplayAhead {
    /// The state at the instant it started from, to show first.
    pub start: Snapshot,
    /// Each start entity's key and shape tag, in `start.entities`' order.
    start_keys: Vec<(u32, u64)>,
    /// The frame the thread projects in, when it does.
    frame: Option<GeoFrame>,
    /// Batches: every record up to a data time (and the feeds' recorded health then,
    /// when it changed).
    rx: Receiver<Batch>,
    /// The batch being taken, and how far.
    batch: Vec<Prepared>,
    next: usize,
    /// Spent batches, back to the thread.
    spent: std::sync::mpsc::Sender<Vec<Prepared>>,
    /// The data time up to which every record has been received.
    complete_to_ms: i64,
    ended: bool,
    /// Each feed's recorded health line as of the batch being taken.
    health: BTreeMap<FeedId, Value>,
    /// Bumped when `health` changes.
    pub health_revision: u64,
    /// Each key's slot in the state [`Self::apply_until`] writes to (`slots_for`).
    slots: Vec<Slot>,
    slots_for: u64,
    fast_applied: u64,
    applied: u64,
    /// Problems met reading (the start's, then the thread's), in order.
    problems: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Every record up to a data time, and the feeds' health then when it changed.
type Batch = (i64, Vec<Prepared>, Option<BTreeMap<FeedId, Value>>);

/// No slot known for a key.
const NO_SLOT: Slot = Slot::MAX;

/// Notes `key`'s slot.
fn remember(slots: &mut Vec<Slot>, key: u32, slot: Slot) {
    let key = key as usize;
    if slots.len() <= key {
        slots.resize(key + 1, NO_SLOT);
    }
    slots[key] = slot;
}

/// A record as the read-ahead thread hands it over.
struct Prepared {
    at_ms: i64,
    /// The entity's number in this replay (the frame's slot cache).
    key: u32,
    /// The update's shape tag (0 for a removal).
    tag: u64,
    body: Body,
}

/// What a record carries over to the frame.
enum Body {
    /// The record as it is: a removal, an update whose numbers do not fit
    /// [`Numbers`], or any record of a replay not started in a frame.
    Whole(Record),
    /// An update as its shape (shared with the entity's other updates of that shape),
    /// place (projected), times and numbers: nothing of it is copied on the thread,
    /// and it is rebuilt whole only when the frame needs it so.
    Numbers {
        id: Arc<str>,
        shape: Arc<UpdateShape>,
        numbers: NumbersUpdate,
    },
}

impl Prepared {
    /// The record, whole.
    fn record(&self) -> std::borrow::Cow<'_, Record> {
        match &self.body {
            Body::Whole(r) => std::borrow::Cow::Borrowed(r),
            Body::Numbers { id, shape, numbers } => std::borrow::Cow::Owned(Record::Upsert {
                feed: numbers.feed,
                at_ms: numbers.received_at_ms,
                update: shape.rebuild(id, numbers),
            }),
        }
    }
}

/// The read-ahead thread's knowledge of entities' shapes: each entity's key and the
/// shape of its latest update; shapes met lately are shared, so a city of taxis on
/// their rounds has a handful.
struct Shapes {
    keys: HashMap<FeedId, HashMap<Arc<str>, Known>>,
    next_key: u32,
    recent: VecDeque<(Arc<UpdateShape>, u64)>,
    /// This replay's tags: `generation << 32 | n`.
    generation: u64,
    next_shape: u64,
    frame: Option<GeoFrame>,
}

/// An entity's key, and the shape of its latest update with its tag.
type Known = (u32, Arc<UpdateShape>, u64);

/// What [`Shapes::tag`] tells of an update: its entity's key and id, its shape and
/// the shape's tag.
struct Tagged {
    key: u32,
    id: Arc<str>,
    shape: Arc<UpdateShape>,
    tag: u64,
}

impl Shapes {
    const RECENT: usize = 16;

    fn new(frame: Option<GeoFrame>) -> Self {
        static GENERATION: AtomicU64 = AtomicU64::new(1);
        Self {
            keys: HashMap::new(),
            next_key: 0,
            recent: VecDeque::new(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            next_shape: 0,
            frame,
        }
    }

    /// The entity's key and its update's shape, with the shape's tag.
    fn tag(&mut self, feed: FeedId, u: &EntityUpdate) -> Tagged {
        if let Some((id, (key, shape, tag))) = self
            .keys
            .get(&feed)
            .and_then(|keys| keys.get_key_value(u.id.as_str()))
            && shape.matches(u)
        {
            return Tagged {
                key: *key,
                id: id.clone(),
                shape: shape.clone(),
                tag: *tag,
            };
        }
        let (shape, tag) = match self.recent.iter().find(|(shape, _)| shape.matches(u)) {
            Some((shape, tag)) => (shape.clone(), *tag),
            None => {
                // Tags never repeat within a replay: past 2^32 shapes, new ones get
                // none (0, which no entity holds: applied whole).
                self.next_shape = self.next_shape.saturating_add(1);
                let tag = if self.next_shape <= 0xffff_ffff {
                    self.generation << 32 | self.next_shape
                } else {
                    0
                };
                let made = (Arc::new(UpdateShape::of(u)), tag);
                if self.recent.len() >= Self::RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(made.clone());
                made
            }
        };
        let keys = self.keys.entry(feed).or_default();
        let (id, key) = match keys.get_key_value(u.id.as_str()) {
            Some((id, known)) => (id.clone(), known.0),
            None => {
                let key = self.next_key;
                self.next_key += 1;
                (Arc::from(u.id.as_str()), key)
            }
        };
        keys.insert(id.clone(), (key, shape.clone(), tag));
        Tagged {
            key,
            id,
            shape,
            tag,
        }
    }

    fn prepare(&mut self, c: Change<'_>) -> Prepared {
        match c {
            Change::Upsert {
                feed,
                at_ms,
                update,
            } => {
                let tagged = self.tag(feed, update);
                let numbers = self.frame.and_then(|frame| {
                    Some(NumbersUpdate {
                        feed,
                        received_at_ms: at_ms,
                        observed_at_ms: update.observed_at_ms,
                        position: update.position,
                        local: update
                            .position
                            .map(|[lon, lat]| frame.local_from_wgs84(lon, lat)),
                        numbers: Numbers::of(update)?,
                    })
                });
                let body = match numbers {
                    Some(numbers) => Body::Numbers {
                        id: tagged.id,
                        shape: tagged.shape,
                        numbers,
                    },
                    None => Body::Whole(c.to_record()),
                };
                Prepared {
                    at_ms,
                    key: tagged.key,
                    tag: tagged.tag,
                    body,
                }
            }
            Change::Remove { at_ms, .. } => Prepared {
                at_ms,
                key: u32::MAX,
                tag: 0,
                body: Body::Whole(c.to_record()),
            },
        }
    }
}

impl ReplayAhead {
    /// Seconds of data decoded ahead of the frame.
    pub const AHEAD_S: usize = 4;

    /// Stands at `t_ms` (its state in `start`) and starts reading ahead from there.
    pub fn start(history: &History, t_ms: i64) -> anyhow::Result<Self> {
        Self::started(history, t_ms, None)
    }

    /// [`Self::start`], for a state in `frame`: the thread projects places and tells
    /// shapes, for [`Self::apply_until`]'s fast path.
    pub fn start_in(history: &History, t_ms: i64, frame: GeoFrame) -> anyhow::Result<Self> {
        Self::started(history, t_ms, Some(frame))
    }

    fn started(history: &History, t_ms: i64, frame: Option<GeoFrame>) -> anyhow::Result<Self> {
        let mut replay = history.replay_from(t_ms)?;
        let start = replay.snapshot();
        let mut shapes = Shapes::new(frame);
        let start_keys = if frame.is_some() {
            start
                .entities
                .values()
                .map(|e| {
                    let t = shapes.tag(e.feed, &e.update);
                    (t.key, t.tag)
                })
                .collect()
        } else {
            Vec::new()
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(Self::AHEAD_S);
        let (spent, spent_rx) = std::sync::mpsc::channel::<Vec<Prepared>>();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let problems = Arc::new(Mutex::new(start.problems.clone()));
        let said = problems.clone();
        let thread = std::thread::Builder::new()
            .name("zhongshu-replay".into())
            .spawn(move || {
                let mut to = t_ms;
                let say = |problem: String| {
                    if let Ok(mut p) = said.lock() {
                        p.push(problem);
                    }
                };
                let mut known = replay.problems().len();
                let mut health = replay.health().clone();
                while !stopping.load(Ordering::Relaxed) {
                    // Freed here, not in the frame.
                    while spent_rx.try_recv().is_ok() {}
                    to += 1000;
                    let mut batch = Vec::new();
                    let advanced = replay.advance(to, |c| batch.push(shapes.prepare(c)));
                    for p in &replay.problems()[known..] {
                        say(p.clone());
                    }
                    known = replay.problems().len();
                    if let Err(e) = advanced {
                        say(format!("reading stopped: {e:#}"));
                        break;
                    }
                    let last = replay.ended();
                    let upto = if last { i64::MAX } else { to };
                    let changed = (replay.health() != &health).then(|| {
                        health = replay.health().clone();
                        health.clone()
                    });
                    if tx.send((upto, batch, changed)).is_err() || last {
                        break;
                    }
                }
            })?;
        Ok(Self {
            health: start.health.clone(),
            health_revision: 0,
            start,
            start_keys,
            frame,
            rx,
            batch: Vec::new(),
            next: 0,
            spent,
            complete_to_ms: t_ms,
            ended: false,
            slots: Vec::new(),
            slots_for: 0,
            fast_applied: 0,
            applied: 0,
            problems,
            stop,
            thread: Some(thread),
        })
    }

    /// The state at the instant it started from, in `frame`, ready for
    /// [`Self::apply_until`].
    pub fn live_state(&mut self, frame: GeoFrame) -> LiveState {
        let mut state = state_at::live_state(&self.start, frame);
        self.slots.clear();
        self.slots_for = state.uid();
        if self.frame == Some(frame) {
            for (e, &(key, tag)) in self.start.entities.values().zip(&self.start_keys) {
                if let Some(slot) = state.slot_of(e.feed, &e.update.id) {
                    state.set_shape(slot, tag);
                    remember(&mut self.slots, key, slot);
                }
            }
        }
        state
    }

    /// Records [`Self::apply_until`] wrote from their numbers alone so far.
    pub fn fast_applied(&self) -> u64 {
        self.fast_applied
    }

    /// Records [`Self::apply_until`] applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies to `state`, in order, every record up to `to_ms` that the thread has
    /// read, as [`Self::take_until`] hands them to [`LiveState::apply_ref`] and
    /// [`LiveState::remove`], with the same outcome; a change of an entity's place and
    /// numbers alone is written from those (see [`crate::state::numbers`]). Never
    /// waits; false when the reading is behind `to_ms` or the history has ended.
    pub fn apply_until(&mut self, to_ms: i64, state: &mut LiveState) -> bool {
        if self.slots_for != state.uid() {
            self.slots.clear();
            self.slots_for = state.uid();
        }
        let fast = self.frame.as_ref() == Some(state.frame());
        let mut slots = std::mem::take(&mut self.slots);
        let (mut fast_applied, mut applied) = (0, 0);
        let whole = self.take_prepared(to_ms, |p| {
            applied += 1;
            let (feed, id) = match &p.body {
                Body::Whole(Record::Remove { feed, id, .. }) => {
                    state.remove(*feed, id);
                    return;
                }
                Body::Whole(Record::Upsert { feed, update, .. }) => (*feed, update.id.as_str()),
                Body::Numbers { id, numbers, .. } => (numbers.feed, &**id),
            };
            let slot = slots.get(p.key as usize).copied().unwrap_or(NO_SLOT);
            if let (true, Body::Numbers { numbers, .. }) = (fast && slot != NO_SLOT, &p.body)
                && state.apply_numbers(slot, p.tag, numbers).is_some()
            {
                fast_applied += 1;
                return;
            }
            let outcome = match &p.body {
                Body::Whole(Record::Upsert {
                    feed,
                    at_ms,
                    update,
                }) => state.apply_ref(*feed, update, *at_ms),
                Body::Numbers { id, shape, numbers } => state.apply_ref(
                    numbers.feed,
                    &shape.rebuild(id, numbers),
                    numbers.received_at_ms,
                ),
                Body::Whole(Record::Remove { .. }) => return,
            };
            if !fast {
                return;
            }
            // A key's slot holds its entity until it is removed (slots are never
            // used again); then it is looked up anew.
            let slot = if slot == NO_SLOT || state.entity(slot).is_none() {
                let Some(slot) = state.slot_of(feed, id) else {
                    return;
                };
                remember(&mut slots, p.key, slot);
                slot
            } else {
                slot
            };
            if matches!(outcome, ApplyOutcome::Inserted | ApplyOutcome::Updated) {
                state.set_shape(slot, p.tag);
            }
        });
        self.slots = slots;
        self.fast_applied += fast_applied;
        self.applied += applied;
        whole
    }

    /// Hands over, in order, every record up to `to_ms` that the thread has read;
    /// never waits. False when the reading is behind `to_ms` (shown as "catching
    /// up"), or the history has ended.
    pub fn take_until(&mut self, to_ms: i64, mut each: impl FnMut(&Record)) -> bool {
        self.take_prepared(to_ms, |p| each(&p.record()))
    }

    fn take_prepared(&mut self, to_ms: i64, mut each: impl FnMut(&Prepared)) -> bool {
        loop {
            while let Some(p) = self.batch.get(self.next) {
                if p.at_ms > to_ms {
                    return true;
                }
                each(p);
                self.next += 1;
            }
            if !self.batch.is_empty() {
                let spent = std::mem::take(&mut self.batch);
                self.next = 0;
                // A thread that has finished: dropped here instead.
                let _ = self.spent.send(spent);
            }
            if self.complete_to_ms >= to_ms {
                return true;
            }
            match self.rx.try_recv() {
                Ok((upto, batch, health)) => {
                    self.complete_to_ms = upto;
                    self.ended = upto == i64::MAX;
                    self.batch = batch;
                    self.next = 0;
                    if let Some(health) = health {
                        self.health = health;
                        self.health_revision += 1;
                    }
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => {
                    self.ended = true;
                    return false;
                }
            }
        }
    }

    /// Each feed's recorded health line as of the records being handed over (to
    /// the second).
    pub fn health(&self) -> &BTreeMap<FeedId, Value> {
        &self.health
    }

    /// The history has no more records (the end of the recording).
    pub fn ended(&self) -> bool {
        self.ended && self.next >= self.batch.len()
    }

    /// Problems met reading so far (damaged or missing segments), in order.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// How many problems have been met (cheap to ask every frame).
    pub fn problem_count(&self) -> usize {
        self.problems.lock().map_or(0, |p| p.len())
    }

    /// The data time up to which every record has been read (and handed over when
    /// [`Self::take_until`] asked for it).
    pub fn read_to_ms(&self) -> i64 {
        self.complete_to_ms
    }
}

impl Drop for ReplayAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks a thread waiting to hand over a batch.
        while self.rx.try_recv().is_ok() {}
        drop(std::mem::replace(
            &mut self.rx,
            std::sync::mpsc::sync_channel(0).1,
        ));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every message of a segment read from its start (one without an index).
fn collect_linear(
    map: &[u8],
    path: &Path,
    out: &mut Vec<(String, i64, Vec<u8>)>,
    feeds: &mut Vec<FeedMeta>,
    problems: &mut Vec<String>,
) {
    let mut channels: HashMap<u16, String> = HashMap::new();
    let options = mcap::read::Options::IgnoreEndMagic.into();
    let Ok(reader) = mcap::read::LinearReader::new_with_options(map, options) else {
        problems.push(format!("{} is not an MCAP file", path.display()));
        return;
    };
    for record in reader {
        let record = match record {
            Ok(r) => r,
            // The chunk a recorder has open: its length is written when it closes
            // (within a second). A segment being written, not a damaged one.
            Err(mcap::McapError::RecordTooLarge {
                opcode: 0x06,
                len: u64::MAX,
            }) => return,
            Err(e) => {
                problems.push(format!(
                    "{} is cut short or damaged ({e}): read as far as it goes",
                    path.display()
                ));
                return;
            }
        };
        match record {
            mcap::records::Record::Metadata(m) if m.name == "feeds" => *feeds = feeds_of(&m),
            mcap::records::Record::Channel(c) => {
                channels.insert(c.id, c.topic.clone());
            }
            mcap::records::Record::Chunk { header, data } => {
                let Ok(chunk) = mcap::read::ChunkReader::new(header, &data) else {
                    problems.push(format!(
                        "{}: a damaged chunk: read up to it",
                        path.display()
                    ));
                    return;
                };
                for inner in chunk {
                    match inner {
                        Ok(mcap::records::Record::Channel(c)) => {
                            channels.insert(c.id, c.topic.clone());
                        }
                        Ok(mcap::records::Record::Message { header, data }) => {
                            let topic = channels
                                .get(&header.channel_id)
                                .cloned()
                                .unwrap_or_default();
                            out.push((
                                topic,
                                (header.log_time / 1_000_000) as i64,
                                data.into_owned(),
                            ));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            problems.push(format!(
                                "{}: a damaged chunk ({e}): read up to it",
                                path.display()
                            ));
                            return;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EntityKind, FieldValue};
    use crate::state::LiveState;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "zhongshu-history-{name}-{}-{}",
            std::process::id(),
            crate::clock::unix_ms_now()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A value that is a known function of the entity and the second.
    fn level(i: u64, t_s: i64) -> f64 {
        ((i as i64 * 37 + t_s * 11) % 1000) as f64 / 10.0
    }

    fn sensor(i: u64, t_ms: i64) -> EntityUpdate {
        let t_s = t_ms / 1000;
        EntityUpdate {
            id: format!("urn:ngsi-ld:Vehicle:bus-{i}"),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("bus".into()),
                speed_kmh: Some(level(i, t_s)),
                heading_deg: Some((t_s % 360) as f64),
                service_status: Some(if t_s % 7 == 0 { "parked" } else { "onRoute" }.into()),
            },
            position: Some([
                24.9 + i as f64 * 1e-3 + t_s as f64 * 1.3e-5,
                60.1 + (t_s as f64 * 0.1).sin() * 1e-3,
            ]),
            line: None,
            observed_at_ms: Some(t_ms - 300),
            fields: [
                ("speed".to_string(), FieldValue::Number(level(i, t_s))),
                ("vehicleType".to_string(), FieldValue::Text("bus".into())),
            ]
            .into_iter()
            .collect(),
            units: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// What the live state held after second `t_s` (the ground truth).
    type Truth = BTreeMap<String, EntityUpdate>;

    const T0: i64 = 1_795_946_400_000;

    /// 200 s of 60 vehicles every second, some going and coming back, recorded with
    /// a keyframe every 7 s and a segment every 45 s; returns each second's truth.
    fn record_city(dir: &Path, options: HistoryOptions) -> Vec<(i64, Truth)> {
        let frame = crate::geo_frame::GeoFrame::new(24.94, 60.17);
        let mut state = LiveState::new(frame);
        state.keep_journal(true);
        let feeds = vec![FeedMeta {
            id: 0,
            name: "buses".into(),
            domain: "traffic".into(),
        }];
        let mut writer = HistoryWriter::create(dir, feeds, options).unwrap();
        let mut truths = Vec::new();
        for s in 0..200i64 {
            let t = T0 + s * 1000;
            for i in 0..60u64 {
                // Bus i is off the road for seconds where (s + i) % 50 is in 20..25.
                let off = (20..25).contains(&((s + i as i64) % 50));
                if off {
                    state.remove(0, &format!("urn:ngsi-ld:Vehicle:bus-{i}"));
                } else {
                    state.apply(0, sensor(i, t), t);
                }
            }
            writer.journal(t, &state.drain_journal()).unwrap();
            let truth: Truth = (0..60u64)
                .filter_map(|i| state.get(0, &format!("urn:ngsi-ld:Vehicle:bus-{i}")))
                .map(|e| (e.id.clone(), e.to_update()))
                .collect();
            truths.push((t, truth));
        }
        writer.finish().unwrap();
        truths
    }

    fn small() -> HistoryOptions {
        HistoryOptions {
            retention_ms: DAY_MS,
            keyframe_ms: 7_000,
            segment_ms: 45_000,
            message_ms: 1_000,
        }
    }

    fn assert_matches(snap: &Snapshot, truth: &Truth, t: i64) {
        assert_eq!(snap.entities.len(), truth.len(), "at {t}");
        for (id, want) in truth {
            let got = &snap.entities[&(0, id.clone())].update;
            let (g, w) = (got.position.unwrap(), want.position.unwrap());
            assert!(
                (g[0] - w[0]).abs() <= 1e-7 && (g[1] - w[1]).abs() <= 1e-7,
                "{id} at {t}: {g:?} {w:?}"
            );
            assert_eq!(got.fields, want.fields, "{id} at {t}");
            assert_eq!(got.kind, want.kind, "{id} at {t}");
            assert_eq!(got.observed_at_ms, want.observed_at_ms, "{id} at {t}");
        }
    }

    /// The state at any instant, asked in random order (seeking back and forth), is
    /// what was live then; every segment and keyframe boundary is crossed.
    #[test]
    fn the_state_at_any_instant_is_what_was_live_then() {
        let dir = temp_dir("state-at");
        let truths = record_city(&dir, small());
        let history = History::open(&dir).unwrap();
        assert!(segments(&dir).unwrap().len() >= 4);
        let mut seed = 0x9e37_79b9_u64;
        for _ in 0..150 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let s = (seed % 200) as usize;
            // Anywhere within the second after the changes of second s.
            let t = truths[s].0 + (seed % 1000) as i64;
            let snap = history.state_at(t).unwrap();
            assert!(snap.problems.is_empty(), "{:?}", snap.problems);
            assert_matches(&snap, &truths[s].1, t);
        }
        // Before the history starts: said, not guessed.
        let early = history.state_at(T0 - 1).unwrap_err().to_string();
        assert!(early.contains("starts at"), "{early}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A writer into `dir` of one feed of sensors, in small segments.
    fn sensors_writer(dir: &Path) -> HistoryWriter {
        let feeds = vec![FeedMeta {
            id: 0,
            name: "sensors".into(),
            domain: "ecology".into(),
        }];
        HistoryWriter::create(dir, feeds, small()).unwrap()
    }

    #[test]
    fn a_health_line_never_hides_the_changes_taken_in_before_it() {
        // A change at 1000, the feed's health at 1100 in the same second: the state
        // at 1050 holds the change.
        let dir = temp_dir("health-order");
        let mut writer = sensors_writer(&dir);
        let t0 = 1_800_000_000_000;
        writer.upsert(0, t0, &sensor(1, t0)).unwrap();
        writer.upsert(0, t0 + 1000, &sensor(2, t0 + 1000)).unwrap();
        writer
            .health(0, t0 + 1100, serde_json::json!({"freshness": "fresh"}))
            .unwrap();
        writer.upsert(0, t0 + 1200, &sensor(3, t0 + 1200)).unwrap();
        writer.finish().unwrap();
        let history = History::open(&dir).unwrap();
        let ids = |t: i64| -> Vec<String> {
            history
                .state_at(t)
                .unwrap()
                .entities
                .values()
                .map(|e| e.update.id.clone())
                .collect()
        };
        assert_eq!(ids(t0 + 1050).len(), 2, "{:?}", ids(t0 + 1050));
        assert_eq!(ids(t0 + 1100).len(), 2);
        assert_eq!(ids(t0 + 1200).len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_recording_that_goes_on_with_nothing_changing_has_not_ended() {
        // A change at the start, then only health lines for two minutes.
        let dir = temp_dir("quiet-end");
        let mut writer = sensors_writer(&dir);
        let t0 = 1_800_000_000_000;
        writer.upsert(0, t0, &sensor(1, t0)).unwrap();
        for s in 1..=120i64 {
            let health = serde_json::json!({"polls": s});
            writer.health(0, t0 + s * 1000, health).unwrap();
        }
        writer.finish().unwrap();
        let history = History::open(&dir).unwrap();
        let at = history.state_at(t0 + 130_000).unwrap();
        assert_eq!(at.data_until_ms, Some(t0 + 120_000));
        assert_eq!(at.after_the_end(), None);
        let late = history.state_at(t0 + 200_000).unwrap();
        assert!(
            late.after_the_end().unwrap().contains("80 s"),
            "{:?}",
            late.after_the_end()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_replay_stepping_forward_hands_over_what_was_live() {
        let dir = temp_dir("replay");
        let truths = record_city(&dir, small());
        let history = History::open(&dir).unwrap();
        let mut replay = history.replay_from(truths[10].0).unwrap();
        assert_matches(&replay.snapshot(), &truths[10].1, truths[10].0);
        let mut live: BTreeMap<String, EntityUpdate> = replay
            .snapshot()
            .entities
            .values()
            .map(|e| (e.update.id.clone(), e.update.clone()))
            .collect();
        for (t, truth) in &truths[11..] {
            replay
                .advance(*t, |c| match c {
                    Change::Upsert { update, .. } => {
                        live.insert(update.id.clone(), update.clone());
                    }
                    Change::Remove { id, .. } => {
                        live.remove(id);
                    }
                })
                .unwrap();
            assert_matches(&replay.snapshot(), truth, *t);
            assert_eq!(
                live.keys().collect::<Vec<_>>(),
                truth.keys().collect::<Vec<_>>(),
                "at {t}"
            );
            for (id, want) in truth {
                assert_eq!(live[id].fields, want.fields, "{id} at {t}");
            }
        }
        assert!(replay.problems().is_empty(), "{:?}", replay.problems());
        assert!(replay.ended());

        // Read ahead on its own thread: the same changes, handed over by value, and
        // the history's end said.
        let mut ahead = ReplayAhead::start(&history, truths[30].0).unwrap();
        assert_matches(&ahead.start, &truths[30].1, truths[30].0);
        let mut live: BTreeMap<String, EntityUpdate> = ahead
            .start
            .entities
            .values()
            .map(|e| (e.update.id.clone(), e.update.clone()))
            .collect();
        for (t, truth) in &truths[31..] {
            let waited = std::time::Instant::now();
            while !ahead.take_until(*t, |r| match r {
                Record::Upsert { update, .. } => {
                    live.insert(update.id.clone(), update.clone());
                }
                Record::Remove { id, .. } => {
                    live.remove(id);
                }
            }) {
                assert!(
                    waited.elapsed().as_secs() < 10,
                    "the reading never caught up"
                );
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(
                live.keys().collect::<Vec<_>>(),
                truth.keys().collect::<Vec<_>>(),
                "at {t}"
            );
            for (id, want) in truth {
                assert_eq!(live[id].fields, want.fields, "{id} at {t}");
            }
        }
        let waited = std::time::Instant::now();
        while !ahead.ended() {
            ahead.take_until(i64::MAX, |_| {});
            assert!(waited.elapsed().as_secs() < 10, "the end never came");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Dropped mid-way: the thread stops.
        drop(ReplayAhead::start(&history, truths[5].0).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The frame's fast path (a change of place and numbers alone written from
    /// those) leaves the state exactly as applying every whole record does: every
    /// entity's every value, version and times, and what is marked changed, at each
    /// second, across keyframes (which list every entity again), segments, removals
    /// and returns, and a vehicle's text changing; most records take it.
    #[test]
    fn a_replay_written_from_numbers_is_the_replay_of_whole_records() {
        let dir = temp_dir("replay-numbers");
        let truths = record_city(&dir, small());
        let history = History::open(&dir).unwrap();
        let frame = crate::geo_frame::GeoFrame::new(24.94, 60.17);
        for from in [3usize, 40, 150] {
            let mut fast = ReplayAhead::start_in(&history, truths[from].0, frame).unwrap();
            let mut fast_state = fast.live_state(frame);
            let mut whole = ReplayAhead::start(&history, truths[from].0).unwrap();
            let mut whole_state = crate::history::state_at::live_state(&whole.start, frame);
            let step = |t: i64, f: &mut dyn FnMut() -> bool| {
                let waited = std::time::Instant::now();
                while !f() {
                    assert!(waited.elapsed().as_secs() < 10, "no catching up at {t}");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            };
            let mut records = 0u64;
            for (t, truth) in &truths[from + 1..] {
                step(*t, &mut || fast.apply_until(*t, &mut fast_state));
                step(*t, &mut || {
                    whole.take_until(*t, |r| {
                        records += 1;
                        match r {
                            Record::Upsert {
                                feed,
                                at_ms,
                                update,
                            } => {
                                whole_state.apply_ref(*feed, update, *at_ms);
                            }
                            Record::Remove { feed, id, .. } => {
                                whole_state.remove(*feed, id);
                            }
                        }
                    })
                });
                let mut changed = fast_state.drain_changed();
                let mut changed_whole = whole_state.drain_changed();
                changed.sort_unstable();
                changed_whole.sort_unstable();
                assert_eq!(changed, changed_whole, "changed at {t}");
                let all = |s: &LiveState| {
                    s.iter()
                        .map(|(_, e)| (e.id.clone(), e.clone()))
                        .collect::<BTreeMap<_, _>>()
                };
                let got = all(&fast_state);
                assert_eq!(got, all(&whole_state), "at {t} from {from}");
                assert_eq!(got.len(), truth.len(), "at {t}");
                for (id, want) in truth {
                    assert_eq!(got[id].fields, want.fields, "{id} at {t}");
                    assert_eq!(got[id].kind, want.kind, "{id} at {t}");
                }
            }
            // Most records are a bus that moved; its status text changing (parked
            // one second in seven, so two changes of shape in seven) and a bus
            // coming back take the whole path.
            assert!(
                fast.fast_applied() * 10 >= records * 6,
                "from {from}: {} of {records} records written from numbers",
                fast.fast_applied()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_oldest_segments_go_first_past_the_retention() {
        let dir = temp_dir("retention");
        let options = HistoryOptions {
            retention_ms: 60_000,
            ..small()
        };
        let truths = record_city(&dir, options);
        let left = segments(&dir).unwrap();
        // 200 s in 45 s segments: five made, those wholly older than 60 s gone.
        assert!(left.len() <= 3, "{left:?}");
        assert!(left[0].0 >= T0 + 90_000, "{left:?}");
        let history = History::open(&dir).unwrap();
        let gone = history.state_at(T0 + 10_000).unwrap_err().to_string();
        assert!(gone.contains("starts at"), "{gone}");
        let last = truths.last().unwrap();
        assert_matches(&history.state_at(last.0).unwrap(), &last.1, last.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A segment cut short (a crash, a full disk) or damaged is said and read as far
    /// as it goes; never a panic.
    #[test]
    fn a_damaged_or_cut_short_segment_is_reported_and_skipped() {
        let dir = temp_dir("damaged");
        let truths = record_city(&dir, small());
        let all = segments(&dir).unwrap();
        let (start, path) = all[2].clone();
        let bytes = std::fs::read(&path).unwrap();
        // Cut in the middle: no index, its later chunks gone.
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let history = History::open(&dir).unwrap();
        let t = start + 2_000;
        let snap = history.state_at(t).unwrap();
        assert!(
            snap.problems.iter().any(|p| p.contains("no index")),
            "{:?}",
            snap.problems
        );
        let s = ((t - T0) / 1000) as usize;
        assert_matches(&snap, &truths[s].1, t);
        // Garbage over a segment: the one before it answers, with the problem said.
        let mut junk = bytes.clone();
        for b in junk.iter_mut().skip(8) {
            *b = b.wrapping_mul(31).wrapping_add(7);
        }
        std::fs::write(&path, &junk).unwrap();
        let snap = history.state_at(t).unwrap();
        assert!(!snap.problems.is_empty());
        assert!(snap.segment.as_ref().is_some_and(|p| p != &path));
        // Every cut of a segment reads without a panic.
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let _ = history.state_at(start + 30_000);
        }
        // No segment readable by then: an error saying why, not an empty city.
        for (_, p) in &all[..=2] {
            std::fs::write(p, b"").unwrap();
        }
        let none = history.state_at(t).unwrap_err().to_string();
        assert!(none.contains("no readable history"), "{none}");
        // One recorder a folder.
        let _writer = HistoryWriter::create(&dir, Vec::new(), small()).unwrap();
        let second = HistoryWriter::create(&dir, Vec::new(), small())
            .err()
            .unwrap();
        assert!(second.to_string().contains("another recorder"), "{second}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What a running recorder took in is readable by others within about a second,
    /// without a flush asked for and long before a keyframe: the open chunk is closed
    /// and written on a cadence, so a crash (kill -9) loses no more than that.
    #[test]
    fn a_running_recorder_is_readable_within_a_second() {
        let dir = temp_dir("readable-while-running");
        let options = HistoryOptions {
            keyframe_ms: 600_000,
            ..small()
        };
        let recorder = Recorder::start(&dir, Vec::new(), options).unwrap();
        let mut state = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        state.keep_journal(true);
        for s in 0..4i64 {
            let t = T0 + s * 1000;
            for i in 0..60u64 {
                state.apply(0, sensor(i, t), t);
            }
            assert!(recorder.journal(t, state.drain_journal()));
        }
        let want: Truth = (0..60u64)
            .filter_map(|i| state.get(0, &format!("urn:ngsi-ld:Vehicle:bus-{i}")))
            .map(|e| (e.id.clone(), e.to_update()))
            .collect();
        let waited = std::time::Instant::now();
        let snap = loop {
            let snap = History::open(&dir).and_then(|h| h.state_at(T0 + 3_500));
            if let Ok(snap) = &snap
                && snap.entities.len() == 60
                && snap.data_until_ms == Some(T0 + 3000)
            {
                break snap.clone();
            }
            assert!(
                waited.elapsed() < Duration::from_secs(5),
                "not readable while recording: {:?}",
                snap.map(|s| (s.entities.len(), s.data_until_ms, s.problems))
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_matches(&snap, &want, T0 + 3_500);
        drop(recorder);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The recorder never makes the live path wait: a flood of changes handed over
    /// faster than it writes is counted as dropped, and what it took is written.
    #[test]
    fn recording_never_blocks_the_live_path() {
        let dir = temp_dir("never-blocks");
        let recorder = Recorder::start(&dir, Vec::new(), small()).unwrap();
        let started = std::time::Instant::now();
        let mut handed = 0u64;
        for round in 0..20_000i64 {
            let changes: Vec<Journaled> = (0..50u64)
                .map(|i| Journaled::Upsert {
                    feed: 0,
                    received_at_ms: T0 + round,
                    update: sensor(i, T0 + round * 1000),
                })
                .collect();
            handed += changes.len() as u64;
            recorder.journal(T0 + round, changes);
        }
        let handing = started.elapsed();
        recorder.flush();
        let dropped = recorder.dropped();
        let stats = recorder.finish();
        assert_eq!(stats.errors, 0, "{stats:?}");
        assert_eq!(
            stats.records + dropped,
            handed,
            "{stats:?} dropped {dropped}"
        );
        // A million changes handed over in well under the time writing them takes.
        assert!(handing < std::time::Duration::from_secs(20), "{handing:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
