//! `zhongshu bench surge` and `zhongshu bench soak --minutes`: an emergency played on
//! the default city through the real ingest and dispatch paths, to show the hub does
//! not paralyse when the city needs it most, nor wear down over an hour of load.
//!
//! Both are one [`Drill`]. A rainstorm: waterlogging, traffic accidents, power
//! outages, road damage and gas leaks across the city at `alert_scale` times the
//! default simulation's busiest rate of new events ([`NORMAL_EVENTS_PER_HOUR`]). Each
//! is reported by one to three agencies (the 12345 hotline, the water sensors'
//! platform, the police), every report a CAP 1.2 message POSTed over loopback to a
//! `cap-intake` feed, so it goes through the hardened HTTP server, the CAP decoder,
//! the ingest, the live state, the alerts' de-duplication and the dispatch writer into
//! a real SQLite log. Meanwhile every simulated sub-brain publishes at `feed_rate`
//! times its rate, a dispatcher issues each new incident's playbook orders, and the
//! departments that take them are slow and fail (see [`departments`]).
//!
//! Headless ([`run_headless`]), the main thread plays the frame at 60 Hz, doing what
//! the app's frame does with the state: the ingest's pump and expiry within 4 ms,
//! alerts from changed entities to the dispatch writer, committed events into the
//! book, the incident list's order by urgency, a 1 ms step of the KPIs (twice a
//! second) and of the copy reconciliation takes every two seconds (the pass itself
//! runs on its own thread).
//! `frame_ms` is that work, without drawing (`bench markers` measures the markers'
//! share). With `--window` the real app plays the frame (`app::drill`) and the drill
//! only posts, dispatches and measures.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{rss_anon_bytes, rss_bytes, slope};
use crate::dispatch::Role;
use crate::dispatch::book::{Actor, Book, Command, NewOrder};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::delivery::SimBehaviour;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::service::{AlertTaken, DispatchService, ServiceOptions};
use crate::dispatch::worker::{AlertDone, DeskWorker, Done};
use crate::feeds::config::FeedConfig;
use crate::state::sweep::Budget;
use crate::stats::percentile;

/// New events an hour in the default simulation at its busiest (grid events at the
/// evening peak, outages): what "normal" means for `--scale`.
pub const NORMAL_EVENTS_PER_HOUR: f64 = 12.0;

/// Frames per second the headless frame loop keeps.
const FPS: f64 = 60.0;

/// After the drill's span: at most this long for the last reports to be raised and
/// the last commands answered.
const SETTLE_MS: f64 = 30_000.0;

/// What `frame_ms` measures, headless.
pub const HEADLESS_FRAME: &str = "headless: the frame thread's work each frame (the ingest's pump and expiry within 4 ms, alerts to the dispatch writer, committed events into the book, the incident list by urgency, a 1 ms step of the KPIs twice a second and of reconciliation's copy every 2 s), wall time, no drawing";

/// The incident kinds of the storm: (CAP event, CAP category, incident kind, share).
const KINDS: [(&str, &str, &str, f64); 5] = [
    ("Waterlogging", "Met", "waterlogging", 0.40),
    ("Traffic accident", "Transport", "traffic_accident", 0.25),
    ("Power outage", "Infra", "power_outage", 0.15),
    ("Road damage", "Infra", "road_damage", 0.12),
    ("Gas leak", "Safety", "gas_leak", 0.08),
];

/// Who reports: (CAP sender, how far from the event its report places it, metres).
const AGENCIES: [(&str, f64); 3] = [
    ("hotline@12345.city.example", 60.0),
    ("iot@water.city.example", 20.0),
    ("command@110.city.example", 40.0),
];

/// `bench surge`: a short hard storm.
#[derive(Clone, Debug)]
pub struct SurgeOptions {
    /// Minutes of surge (then up to 30 s for the last reports to be raised).
    pub minutes: f64,
    /// Times the normal rate of new events.
    pub scale: f64,
    /// The SQLite log to write (a temporary one when `None`).
    pub db: Option<PathBuf>,
    pub seed: u64,
    /// Set (by SIGINT or SIGTERM) to end the drill early, with its report.
    pub interrupt: Option<&'static AtomicBool>,
}

impl Default for SurgeOptions {
    fn default() -> Self {
        Self {
            minutes: 2.0,
            scale: 100.0,
            db: None,
            seed: 1,
            interrupt: None,
        }
    }
}

impl SurgeOptions {
    /// The drill a surge plays: the sub-brains at five times their rate.
    pub fn drill(&self) -> anyhow::Result<DrillOptions> {
        if !(self.minutes.is_finite() && self.minutes > 0.0 && self.minutes <= 240.0) {
            anyhow::bail!(
                "--minutes {}: give minutes above 0, at most 240",
                self.minutes
            );
        }
        Ok(DrillOptions {
            minutes: self.minutes,
            alert_scale: self.scale,
            feed_rate: 5.0,
            db: self.db.clone(),
            seed: self.seed,
            sample_every_s: None,
            interrupt: self.interrupt,
        })
    }
}

/// `bench soak --minutes`: an hour (or what is asked) at ten times the load.
#[derive(Clone, Debug)]
pub struct LiveSoakOptions {
    pub minutes: f64,
    pub db: Option<PathBuf>,
    pub seed: u64,
    /// A sample every this many seconds (60 on the command line; less in tests).
    pub sample_every_s: f64,
    /// Set (by SIGINT or SIGTERM) to end the soak early, with its report.
    pub interrupt: Option<&'static AtomicBool>,
}

impl LiveSoakOptions {
    /// Times the normal load a soak runs at: the sub-brains' rate and new events.
    pub const LOAD: f64 = 10.0;

    /// The drill a soak plays.
    pub fn drill(&self) -> anyhow::Result<DrillOptions> {
        if !(self.minutes.is_finite() && self.minutes > 0.0 && self.minutes <= 1440.0) {
            anyhow::bail!(
                "--minutes {}: give real minutes above 0, at most 1440",
                self.minutes
            );
        }
        if !(self.sample_every_s.is_finite()
            && self.sample_every_s >= 1.0
            && self.sample_every_s <= self.minutes * 60.0)
        {
            anyhow::bail!(
                "--every-min {}: give a sample interval of at least a second, at most the run ({} min)",
                self.sample_every_s / 60.0,
                self.minutes
            );
        }
        Ok(DrillOptions {
            minutes: self.minutes,
            alert_scale: Self::LOAD,
            feed_rate: Self::LOAD,
            db: self.db.clone(),
            seed: self.seed,
            sample_every_s: Some(self.sample_every_s),
            interrupt: self.interrupt,
        })
    }
}

/// What a drill plays.
#[derive(Clone, Debug)]
pub struct DrillOptions {
    /// Minutes of storm (then up to 30 s for the last reports to be raised).
    pub minutes: f64,
    /// Times the normal rate of new events ([`NORMAL_EVENTS_PER_HOUR`]) the agencies
    /// report.
    pub alert_scale: f64,
    /// Times its own rate every simulated sub-brain publishes at.
    pub feed_rate: f64,
    /// The SQLite log to write, a new file (a temporary one when `None`).
    pub db: Option<PathBuf>,
    pub seed: u64,
    /// A [`DrillSample`] every this many seconds of the storm (none: no samples).
    pub sample_every_s: Option<f64>,
    /// Set (by SIGINT or SIGTERM) to end the drill early: it reports what it found so
    /// far, marked `interrupted`.
    pub interrupt: Option<&'static AtomicBool>,
}

impl DrillOptions {
    /// Refuses what a drill cannot play, before anything is created.
    pub fn check(&self) -> anyhow::Result<()> {
        if !(self.minutes.is_finite() && self.minutes > 0.0) {
            anyhow::bail!("--minutes {}: give minutes above 0", self.minutes);
        }
        if !(self.alert_scale.is_finite()
            && self.alert_scale > 0.0
            && self.alert_scale <= 100_000.0)
        {
            anyhow::bail!(
                "--scale {}: give a factor above 0, at most 100000",
                self.alert_scale
            );
        }
        let planned = NORMAL_EVENTS_PER_HOUR * self.alert_scale * self.minutes / 60.0;
        if planned > MAX_DRILL_EVENTS {
            anyhow::bail!(
                "--minutes {} at --scale {}: about {planned:.0} events; a drill plans at most {MAX_DRILL_EVENTS} (fewer minutes or a smaller scale)",
                self.minutes,
                self.alert_scale
            );
        }
        if !(self.feed_rate.is_finite() && self.feed_rate >= 1.0) {
            anyhow::bail!("a feed rate of {}: at least 1", self.feed_rate);
        }
        Ok(())
    }
}

/// Events a drill may plan (the whole storm is planned before it begins).
pub const MAX_DRILL_EVENTS: f64 = 100_000.0;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Self {
            p50: round2(percentile(&ms, 0.5)),
            p99: round2(percentile(&ms, 0.99)),
            max: round2(ms.last().copied().unwrap_or(0.0)),
        }
    }
}

/// Frame times in constant memory, so that an hour of frames never grows the memory
/// a soak measures: 10 µs steps up to 100 ms, then 1 ms steps up to 10 s (longer
/// ones count in the last step; the max is exact).
struct FrameTimes {
    counts: Vec<u32>,
    n: u64,
    max: f64,
}

impl FrameTimes {
    const FINE_MS: f64 = 0.01;
    const FINE: usize = 10_000;
    const COARSE: usize = 9_900;

    fn new() -> Self {
        Self {
            counts: vec![0; Self::FINE + Self::COARSE],
            n: 0,
            max: 0.0,
        }
    }

    fn add(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let fine_top = Self::FINE as f64 * Self::FINE_MS;
        let bucket = if ms < fine_top {
            ((ms / Self::FINE_MS) as usize).min(Self::FINE - 1)
        } else {
            Self::FINE + ((ms - fine_top) as usize).min(Self::COARSE - 1)
        };
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.n += 1;
        self.max = self.max.max(ms);
    }

    /// The middle of a bucket.
    fn value(bucket: usize) -> f64 {
        if bucket < Self::FINE {
            (bucket as f64 + 0.5) * Self::FINE_MS
        } else {
            Self::FINE as f64 * Self::FINE_MS + (bucket - Self::FINE) as f64 + 0.5
        }
    }

    /// As [`Percentiles::of`] ranks a sorted list, to a bucket's width.
    fn percentiles(&self) -> Percentiles {
        if self.n == 0 {
            return Percentiles::default();
        }
        let at = |q: f64| {
            let rank = ((self.n - 1) as f64 * q).round() as u64;
            let mut seen = 0u64;
            for (bucket, &count) in self.counts.iter().enumerate() {
                seen += count as u64;
                if seen > rank {
                    return Self::value(bucket).min(self.max);
                }
            }
            self.max
        };
        Percentiles {
            p50: round2(at(0.5)),
            p99: round2(at(0.99)),
            max: round2(self.max),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// What a drill found (`bench surge` prints it as it is).
#[derive(Debug, Default, Serialize)]
pub struct SurgeReport {
    pub minutes: f64,
    /// Times the normal rate of new events.
    pub scale: f64,
    /// Times their own rate the simulated sub-brains published at.
    pub feed_rate: f64,
    /// The real app in a window played the frames (`--window`).
    pub window: bool,
    /// New events an hour during the surge.
    pub events_per_hour: f64,
    /// Things that happened in the city (each reported by one to three agencies).
    pub events: usize,
    /// Alert messages the agencies posted and Zhongshu took (202).
    pub alerts_in: u64,
    /// Posts not taken (any answer but 202, or none): the agency knows, so not
    /// dropped, but a drill with any is a failed drill.
    pub refused: u64,
    /// Reports of the storm never posted because the drill ended first: must be 0.
    pub not_posted: u64,
    /// Incidents raised from the surge's alerts (on the desk's book).
    pub incidents_raised: usize,
    /// Alerts the dispatcher joined to an incident already raised (another agency's
    /// report of it, within 150 m and 30 minutes), as it said of each.
    pub deduplicated: u64,
    /// Alerts the dispatcher took in and raised nothing for, as it said (refused,
    /// a withdrawal).
    pub not_raised: u64,
    /// Alerts the dispatch writer could not write (a storage error): also dropped.
    pub write_failures: u64,
    /// Storage errors the dispatch writer reported while the drill ran (the first is
    /// printed on stderr).
    pub writer_errors: u64,
    /// Events none of whose reports raised or joined an incident on the desk, plus
    /// alerts taken in (202) that did neither (written or not, answered or not):
    /// must be 0. Every alert is accounted for by what the dispatch writer said
    /// became of it, never by what is near it on the map.
    pub dropped: u64,
    /// An event's first report posted → the incident its report raised or joined on
    /// the frame's book.
    pub alert_to_incident_ms: Percentiles,
    /// A dispatcher's command (a new incident's playbook orders) sent → answered
    /// durable by the writer, while the surge goes on.
    pub commit_ms: Percentiles,
    pub orders_issued: usize,
    /// Orders the slow and failing departments had taken by the end.
    pub orders_delivered: usize,
    /// What `frame_ms` measures.
    pub frame_ms_measures: String,
    /// Per frame (see `frame_ms_measures`).
    pub frame_ms: Percentiles,
    /// With a window: the main thread's CPU time in the same span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_main_thread_cpu_ms: Option<Percentiles>,
    /// With a window: the start of one frame to the start of the next, wall time
    /// (everything: the app's work, rendering, presenting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame_interval_ms: Option<Percentiles>,
    pub frames: usize,
    /// Frames that left live updates waiting for the next (shown as a backlog).
    pub frames_with_backlog: usize,
    /// Live updates applied (simulated sub-brains and the alerts).
    pub updates_applied: u64,
    pub peak_rss_mb: f64,
    pub log: String,
    /// Ended early by SIGINT or SIGTERM: the figures are of the part that ran.
    pub interrupted: bool,
}

/// One sample of a drill, at the end of each interval (a minute on the command line).
#[derive(Clone, Debug, Serialize)]
pub struct DrillSample {
    /// Minutes since the storm began.
    pub minute: f64,
    pub rss_mb: f64,
    /// The part of it that is the process's own (heap, stacks), without the pages of
    /// the executable the kernel maps in and out (those vary with what has run and
    /// with the page cache, not with what the process holds).
    pub rss_anon_mb: f64,
    /// The frames of this interval.
    pub frame_ms: Percentiles,
    pub frames: usize,
    /// Entities in the live state.
    pub entities: usize,
    /// Live updates received and not yet applied.
    pub ingest_backlog: usize,
    /// In the desk's book.
    pub incidents: usize,
    pub orders: usize,
    /// Alert messages taken so far.
    pub alerts_in: u64,
}

impl std::fmt::Display for DrillSample {
    /// The sample as the command line prints it, one line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "minute {:6.2}: {:7.1} MB ({:.1} MB own), frame p50 {:.2} p99 {:.2} max {:.2} ms, {} entities, backlog {}, {} incidents, {} orders, {} alerts in",
            self.minute,
            self.rss_mb,
            self.rss_anon_mb,
            self.frame_ms.p50,
            self.frame_ms.p99,
            self.frame_ms.max,
            self.entities,
            self.ingest_backlog,
            self.incidents,
            self.orders,
            self.alerts_in
        )
    }
}

/// `bench soak --minutes`: the drill's totals and the curve.
#[derive(Debug, Serialize)]
pub struct LiveSoakReport {
    #[serde(flatten)]
    pub totals: SurgeReport,
    /// The first samples, left out of the growth figures (start-up: caches, the
    /// simulator's vehicles, the book filling): a tenth of the run, at least a
    /// sample's interval (a minute on the command line).
    pub warm_up_minutes: f64,
    /// Resident memory, the last sample against the first after warm-up, in %
    /// (`null` with fewer than two such samples).
    pub rss_growth_pct: Option<f64>,
    /// Least-squares slope of resident memory over the samples after warm-up.
    pub rss_mb_per_hour: f64,
    /// The same two for the process's own memory (`rss_anon_mb`).
    pub rss_anon_growth_pct: Option<f64>,
    pub rss_anon_mb_per_hour: f64,
    /// Frame p99 of the last sample's interval against the first after warm-up, in %.
    pub frame_p99_growth_pct: Option<f64>,
    pub samples: Vec<DrillSample>,
}

/// The departments during the storm: one order in three answered only after 5 s,
/// one POST in three failing with a 500 (retried by the outbox), some orders rejected
/// or ignored until urged.
pub fn departments(seed: u64) -> SimBehaviour {
    SimBehaviour {
        seed,
        fail_rate: 0.3,
        slow_rate: 0.3,
        slow_s: 5.0,
        reject_rate: 0.1,
        ignore_rate: 0.1,
        ..Default::default()
    }
}

/// One report to post.
struct Report {
    /// When to post it, ms from the start.
    at_ms: f64,
    event: usize,
    xml: String,
}

/// One thing that happened (where and what: the tests check reports against it).
#[cfg_attr(not(test), allow(dead_code))]
struct Event {
    kind: &'static str,
    lon: f64,
    lat: f64,
}

/// SplitMix64: deterministic for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The storm: events at random times and places, and their reports.
fn storm(
    options: &DrillOptions,
    bbox: [f64; 4],
    started_unix_ms: i64,
) -> (Vec<Event>, Vec<Report>) {
    let mut rng = Rng(options.seed ^ 0x5EED_5116);
    let per_ms = NORMAL_EVENTS_PER_HOUR * options.alert_scale / 3_600_000.0;
    let span_ms = options.minutes * 60_000.0;
    let [west, south, east, north] = bbox;
    let mut events = Vec::new();
    let mut reports = Vec::new();
    let mut t = 0.0;
    loop {
        // Poisson arrivals.
        t += -(1.0 - rng.unit()).ln() / per_ms;
        if t >= span_ms {
            break;
        }
        let pick = rng.unit();
        let mut acc = 0.0;
        let &(event_name, category, kind, _) = KINDS
            .iter()
            .find(|k| {
                acc += k.3;
                pick < acc
            })
            .unwrap_or(&KINDS[0]);
        let (lon, lat) = (
            west + (east - west) * (0.1 + 0.8 * rng.unit()),
            south + (north - south) * (0.1 + 0.8 * rng.unit()),
        );
        let event = events.len();
        events.push(Event { kind, lon, lat });
        let agencies = 1 + (rng.next() % AGENCIES.len() as u64) as usize;
        let first = (rng.next() % AGENCIES.len() as u64) as usize;
        for k in 0..agencies {
            let (sender, spread_m) = AGENCIES[(first + k) % AGENCIES.len()];
            // Later reports follow within a minute and a half, and within the
            // storm's span: every report is posted before the drill ends.
            let at_ms = t + if k == 0 {
                0.0
            } else {
                90_000f64.min(span_ms - t) * rng.unit()
            };
            let bearing = std::f64::consts::TAU * rng.unit();
            let d = spread_m * rng.unit();
            let dlat = d * bearing.cos() / 111_320.0;
            let dlon = d * bearing.sin() / (111_320.0 * lat.to_radians().cos());
            let sent = crate::clock::rfc3339_from_unix_ms(started_unix_ms + at_ms as i64);
            let sent = format!("{}Z", &sent[..19]);
            let xml = format!(
                r#"<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>SURGE-{event}-{k}</identifier>
  <sender>{sender}</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <category>{category}</category>
    <event>{event_name}</event>
    <urgency>Immediate</urgency>
    <severity>Severe</severity>
    <certainty>Observed</certainty>
    <headline>{event_name} reported during the rainstorm</headline>
    <area>
      <areaDesc>Reported position</areaDesc>
      <circle>{:.6},{:.6} 0.05</circle>
    </area>
  </info>
</alert>
"#,
                lat + dlat,
                lon + dlon
            );
            reports.push(Report { at_ms, event, xml });
        }
    }
    reports.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    (events, reports)
}

/// The event a surge incident was raised for, from its key (`…SURGE-<event>-<k>`).
fn event_of_key(key: &str) -> Option<usize> {
    let rest = &key[key.rfind("SURGE-")? + "SURGE-".len()..];
    rest.split('-').next()?.parse().ok()
}

/// What the posting agencies saw.
#[derive(Default)]
struct Posted {
    taken: AtomicU64,
    refused: AtomicU64,
    /// Per event: when its first report was posted (ms from the start).
    first_post_ms: Mutex<Vec<Option<f64>>>,
}

/// The log a drill writes: `--db` (a new file: a drill never writes into a log in
/// use, and a rerun never counts the last run's incidents), or a temporary one in a
/// folder of its own, removed when this is dropped.
pub struct DrillLog {
    pub path: PathBuf,
    scratch: Option<PathBuf>,
}

impl DrillLog {
    pub fn new(db: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(db) = db {
            // What an earlier log leaves beside it (its witness, its key, SQLite's
            // journal) would be taken as this one's.
            let mut beside = db.as_os_str().to_owned();
            for suffix in [".head", ".key", "-wal", "-shm", "-journal"] {
                beside.push(suffix);
                let path = Path::new(&beside);
                if path.exists() {
                    anyhow::bail!(
                        "--db {}: {} is there, left by an earlier log; a drill writes a new log of its own (remove it, or give another --db)",
                        db.display(),
                        path.display()
                    );
                }
                beside = db.as_os_str().to_owned();
            }
            // Claimed at once, so two drills never share a log.
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(db)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
                        "--db {}: the file exists; a drill writes a new log of its own, never into one in use",
                        db.display()
                    ),
                    _ => anyhow::anyhow!("--db {}: {e}", db.display()),
                })?;
            return Ok(Self {
                path: db.to_path_buf(),
                scratch: None,
            });
        }
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "zhongshu-drill-{}-{}",
            std::process::id(),
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            path: dir.join("drill.sqlite"),
            scratch: Some(dir),
        })
    }

    /// How the report names the log.
    fn describe(&self) -> String {
        match &self.scratch {
            None => format!(
                "{} (SQLite, one durable commit per command)",
                self.path.display()
            ),
            Some(_) => "a temporary SQLite log, one durable commit per command (removed)".into(),
        }
    }
}

impl Drop for DrillLog {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The storm under way: its events and the agencies posting its reports.
struct Storm {
    started: Instant,
    events: Vec<Event>,
    posted: Arc<Posted>,
    queue: Arc<Mutex<VecDeque<Report>>>,
    stop: Arc<AtomicBool>,
    posters: Vec<JoinHandle<()>>,
}

impl Storm {
    /// Four agency threads post the reports on their schedule.
    fn start(options: &DrillOptions, bbox: [f64; 4], url: &str, token: &str) -> Self {
        let started = Instant::now();
        let (events, reports) = storm(options, bbox, crate::clock::unix_ms_now());
        let posted = Arc::new(Posted {
            first_post_ms: Mutex::new(vec![None; events.len()]),
            ..Default::default()
        });
        let queue = Arc::new(Mutex::new(reports.into_iter().collect::<VecDeque<_>>()));
        let stop = Arc::new(AtomicBool::new(false));
        let posters = (0..4)
            .map(|_| {
                let (queue, posted, stop, url, token) = (
                    queue.clone(),
                    posted.clone(),
                    stop.clone(),
                    url.to_string(),
                    token.to_string(),
                );
                std::thread::spawn(move || post(started, &queue, &posted, &stop, &url, &token))
            })
            .collect();
        Self {
            started,
            events,
            posted,
            queue,
            stop,
            posters,
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for p in self.posters.drain(..) {
            let _ = p.join();
        }
    }

    fn posted_all(&self) -> bool {
        self.queue.lock().map(|q| q.is_empty()).unwrap_or(true)
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One agency: posts the reports that are due, until none is left or told to stop.
fn post(
    started: Instant,
    queue: &Mutex<VecDeque<Report>>,
    posted: &Posted,
    stop: &AtomicBool,
    url: &str,
    token: &str,
) {
    let client = crate::http::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    while !stop.load(Ordering::Relaxed) {
        let next = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            match q.front() {
                None => break,
                Some(r) if r.at_ms > started.elapsed().as_secs_f64() * 1000.0 => None,
                Some(_) => q.pop_front(),
            }
        };
        let Some(report) = next else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let at = started.elapsed().as_secs_f64() * 1000.0;
        {
            let mut first = posted
                .first_post_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let slot = &mut first[report.event];
            *slot = Some(slot.map_or(at, |t: f64| t.min(at)));
        }
        // Still starting: a connection refused is tried again.
        let mut tries = 0;
        let status = loop {
            tries += 1;
            match client
                .post(url)
                .bearer_auth(token)
                .header("Content-Type", "application/cap+xml")
                .body(report.xml.clone())
                .send()
            {
                Ok(r) => break r.status().as_u16(),
                Err(e) if e.is_connect() && tries < 50 => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(_) => break 0,
            }
        };
        if status == 202 {
            posted.taken.fetch_add(1, Ordering::Relaxed);
        } else {
            posted.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every alert of the storm accounted for, by what the dispatch writer said became
/// of it, and every event by whether one of its reports raised or joined an incident
/// on the desk's book.
#[derive(Debug, Default)]
struct Tally {
    /// Per event: when one of its reports was first on the desk (ms from the start).
    on_desk_at: Vec<Option<f64>>,
    raised: u64,
    joined: u64,
    withdrawn: u64,
    not_raised: u64,
    write_failures: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn new(events: usize) -> Self {
        Self {
            on_desk_at: vec![None; events],
            ..Default::default()
        }
    }

    /// What became of one alert, told after its events are on `book`. Alerts not of
    /// the storm are not counted.
    fn take(&mut self, done: &AlertDone, book: &Book, elapsed_ms: f64) {
        let Some(e) = event_of_key(&done.key).filter(|&e| e < self.on_desk_at.len()) else {
            return;
        };
        let on_desk = match &done.taken {
            Ok(AlertTaken::Raised) => {
                self.raised += 1;
                book.incident_for_key(&done.key).is_some()
            }
            Ok(AlertTaken::Joined { incident_key }) => {
                self.joined += 1;
                book.incident_for_key(incident_key).is_some()
            }
            Ok(AlertTaken::Withdrawn) => {
                self.withdrawn += 1;
                false
            }
            Ok(AlertTaken::NotRaised(_) | AlertTaken::ForTheHub) => {
                self.not_raised += 1;
                false
            }
            Err(why) => {
                self.write_failures += 1;
                self.first_failure.get_or_insert_with(|| why.clone());
                false
            }
        };
        if on_desk && self.on_desk_at[e].is_none() {
            self.on_desk_at[e] = Some(elapsed_ms);
        }
    }

    /// Alerts the writer has said something of.
    fn accounted(&self) -> u64 {
        self.raised + self.joined + self.withdrawn + self.not_raised + self.write_failures
    }

    /// Alerts taken in that raised or joined nothing, of `alerts_in`.
    fn alerts_lost(&self, alerts_in: u64) -> u64 {
        alerts_in.saturating_sub(self.raised + self.joined)
    }

    /// Events posted and not (yet) on the desk.
    fn outstanding(&self, first_post: &[Option<f64>]) -> usize {
        self.on_desk_at
            .iter()
            .zip(first_post)
            .filter(|(shown, posted)| shown.is_none() && posted.is_some())
            .count()
    }
}

/// What one frame cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCost {
    /// The frame's work (what the report's `frame_ms_measures` says).
    pub work_ms: f64,
    /// The main thread's CPU time in the same span, where measured.
    pub main_thread_cpu_ms: Option<f64>,
    /// Since the start of the frame before, where measured.
    pub interval_ms: Option<f64>,
}

/// The live side at the end of a frame.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveGauges {
    /// Entities in the live state.
    pub entities: usize,
    /// Live updates received and not yet applied.
    pub ingest_backlog: usize,
    /// Live updates applied since the feeds started.
    pub updates_applied: u64,
}

impl LiveGauges {
    pub fn of(state: &crate::state::LiveState, ingest: &crate::governance::health::Ingest) -> Self {
        Self {
            entities: state.len(),
            ingest_backlog: ingest.backlog(),
            updates_applied: ingest.applied_total,
        }
    }
}

/// What a frame's end brought.
#[derive(Debug, Default)]
pub struct FrameNews {
    /// The drill is over: [`Drill::finish`].
    pub done: bool,
    /// A progress line (every ten seconds).
    pub line: Option<String>,
    /// A sample (every `sample_every_s`).
    pub sample: Option<DrillSample>,
}

/// What a drill found: the totals and the curve.
#[derive(Debug)]
pub struct DrillOutcome {
    pub report: SurgeReport,
    pub samples: Vec<DrillSample>,
}

impl SurgeReport {
    /// Why the drill failed, if it did: anything dropped, refused, never posted or
    /// not written. `bench surge` and `bench soak --minutes` exit non-zero with it.
    pub fn failure(&self) -> Option<String> {
        let mut why = Vec::new();
        for (n, what) in [
            (self.dropped, "dropped"),
            (self.refused, "refused"),
            (self.not_posted, "not posted"),
            (self.write_failures, "alerts not written"),
            (self.writer_errors, "storage errors"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// A drill without its frame: the feeds to run, the log, the agencies posting, the
/// dispatcher, and the measurements. Whoever plays the frame (the headless loop of
/// [`run_headless`], or the app in a window) runs the feeds and the dispatch writer on
/// the drill's log, and calls [`Drill::dispatch`] and [`Drill::end_frame`] each frame.
pub struct Drill {
    options: DrillOptions,
    feeds: Vec<FeedConfig>,
    url: String,
    token: String,
    log_path: PathBuf,
    log: String,
    frame_measures: String,
    window: bool,
    storm: Option<Storm>,
    dispatcher: Actor,
    /// Every alert and event accounted for.
    tally: Tally,
    interrupted: bool,
    /// Storage errors the writer reported while the drill ran, and the first.
    writer_errors: u64,
    first_writer_error: Option<String>,
    /// Incidents in the book already looked at.
    seen_incidents: usize,
    incidents_raised: usize,
    sent_commands: HashMap<u64, Instant>,
    commit_ms: Vec<f64>,
    orders_issued: usize,
    frame_ms: FrameTimes,
    frame_cpu_ms: FrameTimes,
    frame_interval_ms: FrameTimes,
    frames_with_backlog: usize,
    updates_at_start: u64,
    updates_applied: u64,
    peak_rss: u64,
    rss_at: Instant,
    said_at: Instant,
    quiet_since: Option<Instant>,
    /// The frames since the last sample.
    interval_ms: Vec<f64>,
    next_sample_s: f64,
    samples: Vec<DrillSample>,
}

impl Drill {
    /// Checks the options and readies the feeds (every simulated sub-brain at
    /// `feed_rate` times its rate, and the agencies' CAP intake on a free loopback
    /// port). `frame_measures` says what the frame's cost is.
    pub fn prepare(
        options: &DrillOptions,
        log: &DrillLog,
        window: bool,
        frame_measures: &str,
    ) -> anyhow::Result<Self> {
        options.check()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let token = format!("surge-token-{:016x}", Rng(options.seed).next());
        let mut feeds: Vec<FeedConfig> = crate::feeds::sim_source::default_sim_feeds()
            .into_iter()
            .map(|mut f| {
                f.interval_s /= options.feed_rate;
                f
            })
            .collect();
        let mut intake = crate::feeds::config::parse_feeds(&format!(
            "[[feed]]\nname = \"storm-agencies\"\nkind = \"cap-intake\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\ndomain = \"safety\"\nowner = \"Emergency management\"\n"
        ))
        .map_err(|e| anyhow::anyhow!(e))?;
        feeds.append(&mut intake);
        let now = Instant::now();
        Ok(Self {
            options: options.clone(),
            feeds,
            url: format!("http://127.0.0.1:{port}/cap"),
            token,
            log_path: log.path.clone(),
            log: log.describe(),
            frame_measures: frame_measures.into(),
            window,
            storm: None,
            dispatcher: Actor::new("surge.dispatcher", Role::Dispatcher, None),
            tally: Tally::default(),
            interrupted: false,
            writer_errors: 0,
            first_writer_error: None,
            seen_incidents: 0,
            incidents_raised: 0,
            sent_commands: HashMap::new(),
            commit_ms: Vec::new(),
            orders_issued: 0,
            frame_ms: FrameTimes::new(),
            frame_cpu_ms: FrameTimes::new(),
            frame_interval_ms: FrameTimes::new(),
            frames_with_backlog: 0,
            updates_at_start: 0,
            updates_applied: 0,
            peak_rss: 0,
            rss_at: now,
            said_at: now,
            quiet_since: None,
            interval_ms: Vec::new(),
            next_sample_s: options.sample_every_s.unwrap_or(f64::INFINITY),
            samples: Vec::new(),
        })
    }

    /// The feeds to run: the simulated sub-brains and the agencies' intake.
    pub fn feeds(&self) -> &[FeedConfig] {
        &self.feeds
    }

    pub fn options(&self) -> &DrillOptions {
        &self.options
    }

    /// The dispatch writer's service on the drill's log, its departments slow and
    /// failing, its status API on a free loopback port.
    pub fn service_options(&self) -> ServiceOptions {
        ServiceOptions {
            api_addr: "127.0.0.1:0".into(),
            sim: departments(self.options.seed),
            ..Default::default()
        }
    }

    /// Opens the drill's log for a [`DeskWorker`].
    pub fn open_writer(&self) -> impl FnOnce() -> Result<DispatchService, String> + Send + 'static {
        let (path, options) = (self.log_path.clone(), self.service_options());
        move || {
            let seal = crate::store::SealOptions::with_key(&path, None);
            let d = crate::store::EventLog::open_with(&path, &seal)
                .and_then(|log| {
                    Dispatcher::open_store(Box::new(log), DispatchConfig::default_config())
                })
                .map_err(|e| e.to_string())?;
            DispatchService::start(d, options).map_err(|e| format!("{e:#}"))
        }
    }

    pub fn is_started(&self) -> bool {
        self.storm.is_some()
    }

    /// Seconds since the storm began.
    pub fn elapsed_s(&self) -> Option<f64> {
        Some(self.storm.as_ref()?.started.elapsed().as_secs_f64())
    }

    /// The storm begins over the city's `bbox` (west, south, east, north): the
    /// agencies start posting. `book` is the desk's book as loaded; frames count from
    /// now.
    pub fn start(&mut self, bbox: [f64; 4], book: &Book, gauges: LiveGauges) {
        let storm = Storm::start(&self.options, bbox, &self.url, &self.token);
        self.tally = Tally::new(storm.events.len());
        self.seen_incidents = book.incidents.len();
        self.updates_at_start = gauges.updates_applied;
        let now = Instant::now();
        (self.rss_at, self.said_at) = (now, now);
        self.storm = Some(storm);
    }

    /// The dispatcher's part of a frame: takes the writer's answers to its commands
    /// (`answers` may hold others', which are left alone) and issues each new
    /// incident's playbook orders. Never waits.
    pub fn dispatch(&mut self, worker: &mut DeskWorker, answers: Vec<Done>) -> anyhow::Result<()> {
        // What becomes of every alert is kept from the first frame.
        worker.track_alerts();
        let Some(storm) = &self.storm else {
            return Ok(());
        };
        let elapsed_ms = storm.started.elapsed().as_secs_f64() * 1000.0;
        for done in answers {
            if let Some(sent) = self.sent_commands.remove(&done.ticket) {
                self.commit_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                if let Err(e) = done.result {
                    eprintln!("a dispatcher's command was refused: {e}");
                }
            }
        }
        let outcomes = worker.take_alert_outcomes();
        if let Some(book) = worker.book() {
            for done in &outcomes {
                self.tally.take(done, book, elapsed_ms);
            }
        }
        if let Some(e) = worker.pump_error.take() {
            self.writer_errors += 1;
            if self.first_writer_error.is_none() {
                eprintln!("the dispatch writer: {e}");
                self.first_writer_error = Some(e);
            }
        }
        if let Some(why) = &self.tally.first_failure
            && self.first_writer_error.is_none()
        {
            eprintln!("an alert was not written: {why}");
            self.first_writer_error = Some(why.clone());
        }
        let now = crate::clock::unix_ms_now();
        let mut to_issue = Vec::new();
        if let Some(book) = worker.book() {
            for incident in &book.incidents[self.seen_incidents.min(book.incidents.len())..] {
                if incident.key.as_deref().and_then(event_of_key).is_none() {
                    continue;
                }
                self.incidents_raised += 1;
                if let Some(playbook) = book.config.playbook(&incident.kind) {
                    to_issue.push((incident.id.clone(), NewOrder::from_playbook(playbook, now)));
                }
            }
            self.seen_incidents = book.incidents.len();
        }
        for (incident, orders) in to_issue {
            self.orders_issued += orders.len();
            let ticket = worker
                .execute(Command::IssueOrders { incident, orders }, &self.dispatcher)
                .map_err(|e| anyhow::anyhow!("the dispatch writer: {e}"))?;
            self.sent_commands.insert(ticket, Instant::now());
        }
        Ok(())
    }

    /// The end of a frame: what it cost, the live side, the desk's book. Frames
    /// before the storm began are not counted.
    pub fn end_frame(
        &mut self,
        cost: FrameCost,
        gauges: LiveGauges,
        book: Option<&Book>,
    ) -> FrameNews {
        let mut news = FrameNews::default();
        let Some(storm) = &self.storm else {
            return news;
        };
        let elapsed_ms = storm.started.elapsed().as_secs_f64() * 1000.0;
        let span_ms = self.options.minutes * 60_000.0;
        self.frame_ms.add(cost.work_ms);
        self.interval_ms.push(cost.work_ms);
        if let Some(ms) = cost.main_thread_cpu_ms {
            self.frame_cpu_ms.add(ms);
        }
        if let Some(ms) = cost.interval_ms {
            self.frame_interval_ms.add(ms);
        }
        if gauges.ingest_backlog > 0 {
            self.frames_with_backlog += 1;
        }
        self.updates_applied = gauges.updates_applied.saturating_sub(self.updates_at_start);

        if self.rss_at.elapsed() >= Duration::from_millis(500) {
            self.rss_at = Instant::now();
            self.peak_rss = self.peak_rss.max(rss_bytes().unwrap_or(0));
        }
        let alerts_in = storm.posted.taken.load(Ordering::Relaxed);
        if self.said_at.elapsed() >= Duration::from_secs(10) {
            self.said_at = Instant::now();
            news.line = Some(format!(
                "{:5.0} s: {alerts_in} alerts in, {} of {} events raised, {} orders, {} live entities, backlog {}, frame p99 so far {:.1} ms",
                elapsed_ms / 1000.0,
                self.incidents_raised,
                storm.events.len(),
                self.orders_issued,
                gauges.entities,
                gauges.ingest_backlog,
                self.frame_ms.percentiles().p99
            ));
        }
        if elapsed_ms >= self.next_sample_s * 1000.0 && self.next_sample_s * 1000.0 <= span_ms + 1.0
        {
            let rss = rss_bytes().unwrap_or(0);
            self.peak_rss = self.peak_rss.max(rss);
            let sample = DrillSample {
                minute: round2(self.next_sample_s / 60.0),
                rss_mb: round1(rss as f64 / 1e6),
                rss_anon_mb: round1(rss_anon_bytes().unwrap_or(0) as f64 / 1e6),
                frames: self.interval_ms.len(),
                frame_ms: Percentiles::of(std::mem::take(&mut self.interval_ms)),
                entities: gauges.entities,
                ingest_backlog: gauges.ingest_backlog,
                incidents: book.map_or(0, |b| b.incidents.len()),
                orders: book.map_or(0, |b| b.orders.len()),
                alerts_in,
            };
            self.samples.push(sample.clone());
            news.sample = Some(sample);
            self.next_sample_s += self.options.sample_every_s.unwrap_or(f64::INFINITY);
        }
        if self
            .options
            .interrupt
            .is_some_and(|i| i.load(Ordering::Relaxed))
        {
            self.interrupted = true;
            news.done = true;
        } else if elapsed_ms >= span_ms {
            // The storm is over: wait for the last reports to be raised and the last
            // commands answered, at most 30 s, or 5 s of nothing left to come.
            let posted_all = storm.posted_all();
            let outstanding = {
                let first = storm.posted.first_post_ms.lock();
                first.map_or(0, |f| self.tally.outstanding(&f))
            } + alerts_in.saturating_sub(self.tally.accounted()) as usize;
            let quiet = self.quiet_since.get_or_insert_with(Instant::now);
            news.done = posted_all && outstanding == 0 && self.sent_commands.is_empty()
                || elapsed_ms > span_ms + SETTLE_MS
                || quiet.elapsed() > Duration::from_secs(5)
                    && posted_all
                    && self.sent_commands.is_empty();
        }
        news
    }

    /// The agencies stop; the totals and the curve. `book`: the desk's book now.
    pub fn finish(&mut self, book: Option<&Book>) -> DrillOutcome {
        let (events, first_post, alerts_in, refused, not_posted) = match self.storm.as_mut() {
            Some(storm) => {
                storm.stop();
                (
                    storm.events.len(),
                    storm
                        .posted
                        .first_post_ms
                        .lock()
                        .map(|v| v.clone())
                        .unwrap_or_default(),
                    storm.posted.taken.load(Ordering::Relaxed),
                    storm.posted.refused.load(Ordering::Relaxed),
                    storm.queue.lock().map_or(0, |q| q.len() as u64),
                )
            }
            None => (0, Vec::new(), 0, 0, 0),
        };
        let orders_delivered = book.map_or(0, |b| {
            b.orders.iter().filter(|o| o.delivered_ms.is_some()).count()
        });
        let mut latencies = Vec::new();
        let mut unraised = 0u64;
        for (e, shown) in self.tally.on_desk_at.iter().enumerate() {
            match (shown, first_post.get(e).copied().flatten()) {
                (Some(shown), Some(posted_at)) => latencies.push((shown - posted_at).max(0.0)),
                _ => unraised += 1,
            }
        }
        let some = |t: &FrameTimes| (t.n > 0).then(|| t.percentiles());
        let report = SurgeReport {
            minutes: self.options.minutes,
            scale: self.options.alert_scale,
            feed_rate: self.options.feed_rate,
            window: self.window,
            events_per_hour: NORMAL_EVENTS_PER_HOUR * self.options.alert_scale,
            events,
            alerts_in,
            refused,
            not_posted,
            incidents_raised: self.incidents_raised,
            deduplicated: self.tally.joined,
            not_raised: self.tally.not_raised,
            write_failures: self.tally.write_failures,
            writer_errors: self.writer_errors,
            dropped: unraised + self.tally.alerts_lost(alerts_in),
            alert_to_incident_ms: Percentiles::of(latencies),
            commit_ms: Percentiles::of(std::mem::take(&mut self.commit_ms)),
            orders_issued: self.orders_issued,
            orders_delivered,
            frame_ms_measures: self.frame_measures.clone(),
            frames: self.frame_ms.n as usize,
            frame_ms: self.frame_ms.percentiles(),
            frame_main_thread_cpu_ms: some(&self.frame_cpu_ms),
            frame_interval_ms: some(&self.frame_interval_ms),
            frames_with_backlog: self.frames_with_backlog,
            updates_applied: self.updates_applied,
            peak_rss_mb: round1(self.peak_rss as f64 / 1e6),
            log: self.log.clone(),
            interrupted: self.interrupted,
        };
        DrillOutcome {
            report,
            samples: std::mem::take(&mut self.samples),
        }
    }
}

/// Plays a drill headless: the feeds, the ingest and the dispatch writer on the
/// drill's log, and the frame at 60 Hz on this thread (see the module's description).
/// `progress` hears a line every ten seconds and `on_sample` each sample.
pub fn run_headless(
    options: &DrillOptions,
    mut progress: impl FnMut(&str),
    mut on_sample: impl FnMut(&DrillSample),
) -> anyhow::Result<DrillOutcome> {
    options.check()?;
    let _trimmer = crate::memory::Trimmer::start(crate::memory::TRIM_EVERY);
    let log = DrillLog::new(options.db.as_deref())?;
    let mut drill = Drill::prepare(options, &log, false, HEADLESS_FRAME)?;
    let city = crate::map::load_default()?;
    let feeds = drill.feeds().to_vec();
    let rules = crate::governance::quality::QualityRules::for_city(city.bbox_wgs84);
    let (running, rx) = crate::feeds::start_feeds(&feeds, &[], &city, options.seed);
    let mut ingest = crate::governance::health::Ingest::with_rules(&feeds, rx, rules);
    let mut state = crate::state::LiveState::new(city.frame);

    let mut worker = DeskWorker::start(drill.open_writer());
    let loading = Instant::now();
    while worker.book().is_none() {
        worker.poll();
        if let Some(e) = &worker.load_error {
            anyhow::bail!("the dispatch log {}: {e}", log.path.display());
        }
        if loading.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the dispatch log did not open within two minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(book) = worker.book() {
        drill.start(city.bbox_wgs84, book, LiveGauges::of(&state, &ingest));
    }

    let frame_period = Duration::from_secs_f64(1.0 / FPS);
    let mut kpis_at = Instant::now() - Duration::from_secs(1);
    let mut kpi_pass: Option<crate::state::kpi::KpiPass> = None;
    let mut reconcile_at = Instant::now() - Duration::from_secs(3);
    let mut copying: Option<crate::governance::reconcile::ReconcileCopy> = None;
    let mut reconciliation: Option<JoinHandle<crate::governance::reconcile::Reconciliation>> = None;
    let mut winner_of = Default::default();
    let mut urgency_revision = u64::MAX;
    let mut next_frame = Instant::now();
    loop {
        let frame = Instant::now();
        let now = crate::clock::unix_ms_now();

        // As the app's frame: the ingest's 4 ms, whole-city passes a step a frame.
        let deadline = frame + crate::governance::health::INGEST_FRAME_BUDGET;
        ingest.pump_within(
            &mut state,
            crate::governance::health::MAX_UPDATES_PER_FRAME,
            Some(deadline),
        );
        ingest.expire_within(&mut state, now, Some(deadline));
        for slot in state.drain_changed() {
            let Some(e) = state.entity(slot) else {
                continue;
            };
            if e.entity_type != "Alert" {
                continue;
            }
            if let Some(alert) =
                crate::dispatch::alerts::of_feed(&e.to_update(), feeds.get(e.feed as usize))
            {
                worker
                    .take_alert(alert)
                    .map_err(|e| anyhow::anyhow!("the dispatch writer: {e}"))?;
            }
        }
        let answers = worker.poll();
        drill.dispatch(&mut worker, answers)?;
        // The desk's incident list and the map's pins, by urgency.
        if let Some(book) = worker.book()
            && book.revision != urgency_revision
        {
            urgency_revision = book.revision;
            std::hint::black_box(book.by_urgency());
        }
        if kpi_pass.is_none() && kpis_at.elapsed() >= Duration::from_millis(500) {
            kpis_at = Instant::now();
            kpi_pass = Some(crate::state::kpi::KpiPass::new(now));
        }
        if let Some(pass) = &mut kpi_pass
            && let Some(kpis) = pass.step(&state, &winner_of, Budget::frame())
        {
            std::hint::black_box(kpis);
            kpi_pass = None;
        }
        if let Some(pass) = reconciliation.take_if(|p| p.is_finished())
            && let Ok(r) = pass.join()
        {
            winner_of = r.winner_of;
        }
        if reconciliation.is_none()
            && copying.is_none()
            && reconcile_at.elapsed() >= Duration::from_secs(2)
        {
            reconcile_at = Instant::now();
            copying = Some(crate::governance::reconcile::ReconcileCopy::new(now));
        }
        if let Some(copy) = &mut copying
            && let Some(input) = copy.step(&state, Budget::frame())
        {
            let (feeds, at) = (feeds.clone(), copy.now_ms());
            copying = None;
            reconciliation = Some(std::thread::spawn(move || {
                crate::governance::reconcile::reconcile_input(&input, &feeds, at)
            }));
        }
        let cost = FrameCost {
            work_ms: frame.elapsed().as_secs_f64() * 1000.0,
            ..Default::default()
        };

        let news = drill.end_frame(cost, LiveGauges::of(&state, &ingest), worker.book());
        if let Some(line) = &news.line {
            progress(line);
        }
        if let Some(sample) = &news.sample {
            on_sample(sample);
        }
        if news.done {
            break;
        }
        next_frame += frame_period;
        let now_i = Instant::now();
        if next_frame > now_i {
            std::thread::sleep(next_frame - now_i);
        } else {
            next_frame = now_i;
        }
    }
    let outcome = drill.finish(worker.book());
    drop(running);
    drop(worker);
    drop(drill);
    drop(log);
    Ok(outcome)
}

/// Runs the surge (headless); `progress` hears a line every ten seconds.
pub fn bench_surge(
    options: &SurgeOptions,
    progress: impl FnMut(&str),
) -> anyhow::Result<SurgeReport> {
    Ok(run_headless(&options.drill()?, progress, |_| {})?.report)
}

/// Runs a soak in real time (headless): `progress` hears a line every ten seconds,
/// `on_sample` each sample.
pub fn bench_soak_live(
    options: &LiveSoakOptions,
    progress: impl FnMut(&str),
    on_sample: impl FnMut(&DrillSample),
) -> anyhow::Result<LiveSoakReport> {
    let drill = options.drill()?;
    let outcome = run_headless(&drill, progress, on_sample)?;
    Ok(soak_report(&drill, outcome))
}

/// A soak's report from a drill's outcome: the growth after warm-up.
pub fn soak_report(options: &DrillOptions, outcome: DrillOutcome) -> LiveSoakReport {
    let every_min = options.sample_every_s.unwrap_or(60.0) / 60.0;
    let warm_up_minutes = round2((options.minutes / 10.0).max(every_min));
    let settled: Vec<&DrillSample> = outcome
        .samples
        .iter()
        .filter(|s| s.minute >= warm_up_minutes - 1e-9)
        .collect();
    let growth = |f: &dyn Fn(&DrillSample) -> f64| match (settled.first(), settled.last()) {
        (Some(a), Some(b)) if settled.len() >= 2 && f(a) > 0.0 => {
            Some(round2((f(b) - f(a)) / f(a) * 100.0))
        }
        _ => None,
    };
    let per_hour = |f: &dyn Fn(&DrillSample) -> f64| {
        round2(slope(
            &settled
                .iter()
                .map(|s| (s.minute / 60.0, f(s)))
                .collect::<Vec<_>>(),
        ))
    };
    LiveSoakReport {
        warm_up_minutes,
        rss_growth_pct: growth(&|s| s.rss_mb),
        rss_mb_per_hour: per_hour(&|s| s.rss_mb),
        rss_anon_growth_pct: growth(&|s| s.rss_anon_mb),
        rss_anon_mb_per_hour: per_hour(&|s| s.rss_anon_mb),
        frame_p99_growth_pct: growth(&|s| s.frame_ms.p99),
        samples: outcome.samples,
        totals: outcome.report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_hard_surge_loses_no_alert_and_every_event_reaches_the_desk() {
        let dir = crate::dispatch::testing::temp_db("surge", "short");
        // 12 × 3000 an hour for six seconds: about 60 events, each reported one to
        // three times, with the sub-brains at 5× and the departments failing.
        let options = SurgeOptions {
            minutes: 0.1,
            scale: 3000.0,
            db: Some(dir.clone()),
            seed: 7,
            interrupt: None,
        };
        let report = bench_surge(&options, |_| {}).unwrap();
        assert!(report.events >= 30, "{report:?}");
        assert_eq!(report.refused, 0, "{report:?}");
        assert_eq!(report.dropped, 0, "{report:?}");
        assert!(report.alerts_in >= report.events as u64, "{report:?}");
        // One incident an event at most (its agencies' reports are one), fewer where
        // events of a kind fall within 150 m of each other.
        assert!(
            report.incidents_raised <= report.events
                && report.incidents_raised * 2 >= report.events,
            "{report:?}"
        );
        // Every alert accounted for by what the writer said of it: it raised an
        // incident or joined one.
        assert_eq!(
            report.incidents_raised as u64 + report.deduplicated,
            report.alerts_in,
            "{report:?}"
        );
        assert_eq!(
            (report.not_posted, report.not_raised, report.write_failures),
            (0, 0, 0),
            "{report:?}"
        );
        assert!(
            report.orders_issued > 0 && report.updates_applied > 0,
            "{report:?}"
        );
        // The log holds them: every raised incident is in the file.
        let log = crate::store::EventLog::open(&dir).unwrap();
        let d = Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
        let in_log = d
            .book()
            .incidents
            .iter()
            .filter(|i| i.key.as_deref().and_then(event_of_key).is_some())
            .count();
        assert_eq!(in_log, report.incidents_raised);
    }

    #[test]
    fn an_event_is_on_the_desk_only_when_its_own_report_raised_or_joined_an_incident() {
        use crate::dispatch::book::{Command, NewIncident};
        use crate::dispatch::testing::temp_db;
        let mut d =
            Dispatcher::open(&temp_db("surge", "tally"), DispatchConfig::default_config()).unwrap();
        // Event 0 raised an incident; event 1, the same kind 100 m away, was lost
        // on the way (no word from the writer); event 2's report joined event 0's
        // incident; event 3's report could not be written.
        let raise = |key: &str| {
            Command::ReportIncident(NewIncident {
                kind: "waterlogging".into(),
                title: "Waterlogging".into(),
                domain: crate::feeds::Domain::Safety,
                severity: crate::model::Severity::Severe,
                lon: 24.94,
                lat: 60.17,
                source: "hotline".into(),
                key: Some(key.into()),
            })
        };
        d.execute(&raise("storm/SURGE-0-0"), &Actor::system(), 1_000)
            .unwrap();
        let book = d.book();
        let mut tally = Tally::new(4);
        let done = |key: &str, taken| AlertDone {
            key: key.into(),
            taken,
        };
        tally.take(&done("storm/SURGE-0-0", Ok(AlertTaken::Raised)), book, 10.0);
        tally.take(
            &done(
                "storm/SURGE-2-1",
                Ok(AlertTaken::Joined {
                    incident_key: "storm/SURGE-0-0".into(),
                }),
            ),
            book,
            20.0,
        );
        tally.take(
            &done("storm/SURGE-3-0", Err("disk full".into())),
            book,
            30.0,
        );
        // An alert of another feed is not the storm's.
        tally.take(&done("sim/ALERT-9", Ok(AlertTaken::Raised)), book, 40.0);
        assert_eq!(tally.on_desk_at, vec![Some(10.0), None, Some(20.0), None]);
        assert_eq!(
            (tally.raised, tally.joined, tally.write_failures),
            (1, 1, 1)
        );
        assert_eq!(tally.first_failure.as_deref(), Some("disk full"));
        // Five alerts taken in: two raised or joined, three lost.
        assert_eq!(tally.accounted(), 3);
        assert_eq!(tally.alerts_lost(5), 3);
        let posted = [Some(0.0), Some(1.0), Some(2.0), None];
        assert_eq!(
            tally.outstanding(&posted),
            1,
            "event 1 (event 3 never posted)"
        );
    }

    #[test]
    fn a_storm_is_the_same_for_a_seed_and_its_reports_name_their_event() {
        let options = SurgeOptions {
            minutes: 10.0,
            scale: 100.0,
            ..Default::default()
        }
        .drill()
        .unwrap();
        let bbox = [24.92, 60.15, 24.96, 60.18];
        let (events, reports) = storm(&options, bbox, 0);
        let (again, _) = storm(&options, bbox, 0);
        // 12 an hour × 100 for 10 minutes: about 200.
        assert!((120..=280).contains(&events.len()), "{}", events.len());
        assert_eq!(
            events
                .iter()
                .map(|e| (e.kind, e.lon, e.lat))
                .collect::<Vec<_>>(),
            again
                .iter()
                .map(|e| (e.kind, e.lon, e.lat))
                .collect::<Vec<_>>()
        );
        assert!(reports.len() > events.len());
        // Every report is posted within the storm's span, the last events' too.
        assert!(reports.iter().all(|r| r.at_ms < options.minutes * 60_000.0));
        for r in &reports {
            let alert =
                crate::feeds::cap::decode_cap(r.xml.as_bytes(), &Default::default()).unwrap();
            let update = &alert.updates[0];
            assert_eq!(event_of_key(&update.id), Some(r.event), "{}", update.id);
            let a = crate::dispatch::alerts::from_cap_feed(update, "storm").unwrap();
            assert_eq!(a.kind, events[r.event].kind);
        }
    }

    #[test]
    fn a_short_soak_samples_its_curve_and_loses_nothing() {
        let dir = crate::dispatch::testing::temp_db("soak", "live");
        // Three seconds at ten times the load, a sample a second.
        let options = LiveSoakOptions {
            minutes: 0.05,
            db: Some(dir.clone()),
            seed: 3,
            sample_every_s: 1.0,
            interrupt: None,
        };
        let mut heard = 0;
        let report = bench_soak_live(&options, |_| {}, |_| heard += 1).unwrap();
        assert_eq!(report.samples.len(), 3, "{report:?}");
        assert_eq!(heard, 3);
        assert_eq!(report.totals.dropped, 0, "{report:?}");
        assert_eq!(report.totals.refused, 0, "{report:?}");
        assert_eq!(report.totals.feed_rate, 10.0);
        assert_eq!(report.totals.scale, 10.0);
        assert!(!report.totals.window);
        for (i, s) in report.samples.iter().enumerate() {
            assert!((s.minute - (i + 1) as f64 / 60.0).abs() < 0.01, "{s:?}");
            assert!(s.rss_mb > 0.0 && s.frames > 0, "{s:?}");
            assert!(s.rss_anon_mb > 0.0 && s.rss_anon_mb <= s.rss_mb, "{s:?}");
            assert!(s.frame_ms.p50 <= s.frame_ms.p99 && s.frame_ms.p99 <= s.frame_ms.max);
        }
        // Every sub-brain is in by the last sample.
        assert!(report.samples[2].entities > 1000, "{report:?}");
        // A tenth of three seconds is less than a sample's interval: one second.
        assert!((report.warm_up_minutes - 1.0 / 60.0).abs() < 0.01);
        assert!(
            report.rss_growth_pct.is_some_and(f64::is_finite),
            "{report:?}"
        );
        assert!(report.frame_p99_growth_pct.is_some_and(f64::is_finite));
        assert!(report.rss_mb_per_hour.is_finite());
        let json = serde_json::to_value(&report).unwrap();
        for field in [
            "samples",
            "warm_up_minutes",
            "rss_growth_pct",
            "rss_mb_per_hour",
            "rss_anon_growth_pct",
            "frame_p99_growth_pct",
            "alerts_in",
            "dropped",
            "frame_ms",
            "peak_rss_mb",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert!(json["samples"][0]["frame_ms"]["p99"].is_number());
    }

    #[test]
    fn frame_times_in_constant_memory_rank_as_a_sorted_list_does() {
        let mut times = FrameTimes::new();
        let mut all = Vec::new();
        let mut rng = Rng(5);
        for i in 0..20_000 {
            // Mostly under 100 ms, a few long ones, one very long.
            let ms = match i % 500 {
                0 => 100.0 + 900.0 * rng.unit(),
                _ => 40.0 * rng.unit() * rng.unit(),
            };
            times.add(ms);
            all.push(ms);
        }
        times.add(25_000.0);
        all.push(25_000.0);
        let exact = Percentiles::of(all);
        let binned = times.percentiles();
        assert!(
            (binned.p50 - exact.p50).abs() <= 0.02,
            "{binned:?} {exact:?}"
        );
        assert!(
            (binned.p99 - exact.p99).abs() <= 0.02,
            "{binned:?} {exact:?}"
        );
        assert_eq!(binned.max, 25_000.0);
        assert_eq!(times.n, 20_001);
        assert_eq!(FrameTimes::new().percentiles().max, 0.0);
    }

    #[test]
    fn a_soak_growth_is_read_after_warm_up() {
        let options = LiveSoakOptions {
            minutes: 60.0,
            db: None,
            seed: 1,
            sample_every_s: 60.0,
            interrupt: None,
        }
        .drill()
        .unwrap();
        let sample = |minute: f64, rss_mb: f64, p99: f64| DrillSample {
            minute,
            rss_mb,
            rss_anon_mb: rss_mb / 2.0,
            frame_ms: Percentiles {
                p50: 1.0,
                p99,
                max: p99,
            },
            frames: 3600,
            entities: 0,
            ingest_backlog: 0,
            incidents: 0,
            orders: 0,
            alerts_in: 0,
        };
        // Start-up growth in the first six minutes, then 200 → 204 MB.
        let samples: Vec<DrillSample> = (1..=60)
            .map(|m| {
                let m = m as f64;
                if m < 6.0 {
                    sample(m, 100.0 + 20.0 * m, 9.0)
                } else {
                    sample(m, 200.0 + 4.0 * (m - 6.0) / 54.0, 10.0 + (m - 6.0) / 54.0)
                }
            })
            .collect();
        let report = soak_report(
            &options,
            DrillOutcome {
                report: SurgeReport {
                    minutes: 60.0,
                    scale: 10.0,
                    feed_rate: 10.0,
                    window: false,
                    events_per_hour: 120.0,
                    ..Default::default()
                },
                samples,
            },
        );
        assert_eq!(report.warm_up_minutes, 6.0);
        assert_eq!(report.rss_growth_pct, Some(2.0));
        assert_eq!(report.rss_anon_growth_pct, Some(2.0));
        assert_eq!(report.frame_p99_growth_pct, Some(10.0));
        // 4 MB over 54 minutes.
        assert!(
            (report.rss_mb_per_hour - 4.0 * 60.0 / 54.0).abs() < 0.01,
            "{}",
            report.rss_mb_per_hour
        );
    }
}
