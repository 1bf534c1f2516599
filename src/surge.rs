//! `zhongshu bench surge`: an emergency played on the default city through the real
//! ingest and dispatch paths, to show the hub does not paralyse when the city needs it
//! most.
//!
//! A rainstorm: waterlogging, traffic accidents, power outages, road damage and gas
//! leaks across the city at `scale` times the default simulation's busiest rate of
//! new events ([`NORMAL_EVENTS_PER_HOUR`]). Each is reported by one to three agencies
//! (the 12345 hotline, the water sensors' platform, the police), every report a CAP
//! 1.2 message POSTed over loopback to a `cap-intake` feed, so it goes through the
//! hardened HTTP server, the CAP decoder, the ingest, the live state, the alerts'
//! de-duplication and the dispatch writer into a real SQLite log. Meanwhile every
//! simulated sub-brain publishes at five times its rate, a dispatcher issues each new
//! incident's playbook orders, and the departments that take them are slow and fail
//! (see [`departments`]).
//!
//! The main thread plays the frame at 60 Hz, doing what the app's frame does with the
//! state: the ingest's bounded pump and expiry, alerts from changed entities to the
//! dispatch writer, committed events into the book, the incident list's order by
//! urgency, the KPIs twice a second and the copy reconciliation takes every two
//! seconds (the pass itself runs on its own thread). `frame_ms` is that work, without
//! drawing (`bench markers` measures the markers' share).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::rss_bytes;
use crate::dispatch::book::{Actor, Command, NewOrder};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::delivery::SimBehaviour;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::service::{DispatchService, ServiceOptions};
use crate::dispatch::worker::DeskWorker;
use crate::dispatch::{Role, alerts::SAME_PLACE_M};
use crate::feeds::config::FeedConfig;
use crate::stats::percentile;

/// New events an hour in the default simulation at its busiest (grid events at the
/// evening peak, outages): what "normal" means for `--scale`.
pub const NORMAL_EVENTS_PER_HOUR: f64 = 12.0;

/// Frames per second the frame loop keeps.
const FPS: f64 = 60.0;

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

#[derive(Clone, Debug)]
pub struct SurgeOptions {
    /// Minutes of surge (then up to 30 s for the last reports to be raised).
    pub minutes: f64,
    /// Times the normal rate of new events.
    pub scale: f64,
    /// The SQLite log to write (a temporary one when `None`).
    pub db: Option<PathBuf>,
    pub seed: u64,
}

impl Default for SurgeOptions {
    fn default() -> Self {
        Self {
            minutes: 2.0,
            scale: 100.0,
            db: None,
            seed: 1,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let r = |x: f64| (x * 100.0).round() / 100.0;
        Self {
            p50: r(percentile(&ms, 0.5)),
            p99: r(percentile(&ms, 0.99)),
            max: r(ms.last().copied().unwrap_or(0.0)),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SurgeReport {
    pub minutes: f64,
    pub scale: f64,
    /// New events an hour during the surge.
    pub events_per_hour: f64,
    /// Things that happened in the city (each reported by one to three agencies).
    pub events: usize,
    /// Alert messages the agencies posted and Zhongshu took (202).
    pub alerts_in: u64,
    /// Posts not taken (any answer but 202, or none).
    pub refused: u64,
    /// Incidents raised from the surge's alerts.
    pub incidents_raised: usize,
    /// Alerts that joined an incident already raised (another agency's report of it).
    pub deduplicated: u64,
    /// Events with no incident of their kind within reach on the desk at the end,
    /// plus refused posts: must be 0.
    pub dropped: u64,
    /// An event's first report posted → an incident of its kind within reach of it in
    /// the frame's book (raised by its report, or one its report was merged into).
    pub alert_to_incident_ms: Percentiles,
    /// A dispatcher's command (a new incident's playbook orders) sent → answered
    /// durable by the writer, while the surge goes on.
    pub commit_ms: Percentiles,
    pub orders_issued: usize,
    /// Orders the slow and failing departments had taken by the end.
    pub orders_delivered: usize,
    /// The frame thread's work (see the module's description), per frame.
    pub frame_ms: Percentiles,
    pub frames: usize,
    /// Frames that left live updates waiting for the next (shown as a backlog).
    pub frames_with_backlog: usize,
    /// Live updates applied (simulated sub-brains at 5× their rate, and the alerts).
    pub updates_applied: u64,
    pub peak_rss_mb: f64,
    pub log: String,
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

/// One thing that happened.
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
    options: &SurgeOptions,
    bbox: [f64; 4],
    started_unix_ms: i64,
) -> (Vec<Event>, Vec<Report>) {
    let mut rng = Rng(options.seed ^ 0x5EED_5116);
    let per_ms = NORMAL_EVENTS_PER_HOUR * options.scale / 3_600_000.0;
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
            // Later reports follow within a minute and a half (a short drill's
            // within its span).
            let at_ms = t + if k == 0 {
                0.0
            } else {
                90_000f64.min(span_ms) * rng.unit()
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

/// Runs the surge; `progress` hears a line every ten seconds.
pub fn bench_surge(
    options: &SurgeOptions,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SurgeReport> {
    if !(options.minutes.is_finite() && options.minutes > 0.0 && options.minutes <= 240.0) {
        anyhow::bail!(
            "--minutes {}: give minutes above 0, at most 240",
            options.minutes
        );
    }
    if !(options.scale.is_finite() && options.scale > 0.0 && options.scale <= 100_000.0) {
        anyhow::bail!(
            "--scale {}: give a factor above 0, at most 100000",
            options.scale
        );
    }
    if let Some(db) = &options.db
        && db.exists()
    {
        anyhow::bail!(
            "--db {}: the file exists; a drill writes a new log of its own, never into one in use",
            db.display()
        );
    }
    let city = crate::map::load_default()?;
    // A temporary log when none is given, removed however the run ends.
    struct Scratch(Option<PathBuf>);
    impl Drop for Scratch {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    let scratch = Scratch(
        options
            .db
            .is_none()
            .then(|| std::env::temp_dir().join(format!("zhongshu-surge-{}", std::process::id()))),
    );
    let db = match (&options.db, &scratch.0) {
        (Some(db), _) => db.clone(),
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            dir.join("surge.sqlite")
        }
        (None, None) => unreachable!("a scratch folder when no --db"),
    };

    // The feeds: every simulated sub-brain at five times its rate, and the agencies'
    // CAP intake.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let token = format!("surge-token-{:016x}", Rng(options.seed).next());
    let mut feeds: Vec<FeedConfig> = crate::feeds::sim_source::default_sim_feeds()
        .into_iter()
        .map(|mut f| {
            f.interval_s /= 5.0;
            f
        })
        .collect();
    let mut intake = crate::feeds::config::parse_feeds(&format!(
        "[[feed]]\nname = \"storm-agencies\"\nkind = \"cap-intake\"\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{token}\"\ndomain = \"safety\"\nowner = \"Emergency management\"\n"
    ))
    .map_err(|e| anyhow::anyhow!(e))?;
    feeds.append(&mut intake);
    let rules = crate::governance::quality::QualityRules::for_city(city.bbox_wgs84);
    let (running, rx) = crate::feeds::start_feeds(&feeds, &[], &city, options.seed);
    let mut ingest = crate::governance::health::Ingest::with_rules(&feeds, rx, rules);
    let mut state = crate::state::LiveState::new(city.frame);

    // The dispatch writer on a real log, its departments slow and failing.
    let config = DispatchConfig::default_config();
    let service_options = ServiceOptions {
        api_addr: "127.0.0.1:0".into(),
        sim: departments(options.seed),
        ..Default::default()
    };
    let log_path = db.clone();
    let mut worker = DeskWorker::start(move || {
        let seal = crate::store::SealOptions::with_key(&log_path, None);
        let d = crate::store::EventLog::open_with(&log_path, &seal)
            .and_then(|log| Dispatcher::open_store(Box::new(log), config))
            .map_err(|e| e.to_string())?;
        DispatchService::start(d, service_options).map_err(|e| format!("{e:#}"))
    });
    let loading = Instant::now();
    while worker.book().is_none() {
        worker.poll();
        if let Some(e) = &worker.load_error {
            anyhow::bail!("the dispatch log {}: {e}", db.display());
        }
        if loading.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the dispatch log did not open within two minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let known_incidents = worker.book().map_or(0, |b| b.incidents.len());

    // The storm, posted by four agency threads on its schedule.
    let started = Instant::now();
    let started_unix = crate::clock::unix_ms_now();
    let (events, reports) = storm(options, city.bbox_wgs84, started_unix);
    let posted = Arc::new(Posted {
        first_post_ms: Mutex::new(vec![None; events.len()]),
        ..Default::default()
    });
    let queue = Arc::new(Mutex::new(
        reports
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let stop_posting = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{port}/cap");
    let posters: Vec<_> = (0..4)
        .map(|_| {
            let (queue, posted, stop, url, token) = (
                queue.clone(),
                posted.clone(),
                stop_posting.clone(),
                url.clone(),
                token.clone(),
            );
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
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
                            .post(&url)
                            .bearer_auth(&token)
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
            })
        })
        .collect();

    // The frame.
    let dispatcher = Actor::new("surge.dispatcher", Role::Dispatcher, None);
    let frame_period = Duration::from_secs_f64(1.0 / FPS);
    let surge_ms = options.minutes * 60_000.0;
    let mut frame_ms = Vec::new();
    let mut frames_with_backlog = 0;
    let mut updates_applied = 0u64;
    // Per event: when an incident of its kind within reach of it was first on the
    // desk (raised by one of its reports, or one it was merged into).
    let mut on_desk_at: Vec<Option<f64>> = vec![None; events.len()];
    let reach = SAME_PLACE_M + 2.0 * AGENCIES.iter().map(|a| a.1).fold(0.0, f64::max);
    let covers = |i: &crate::dispatch::book::Incident, e: &Event| {
        i.kind == e.kind
            && geo::Distance::distance(
                &geo::Haversine,
                geo::Point::new(e.lon, e.lat),
                geo::Point::new(i.lon, i.lat),
            ) <= reach
    };
    let mut incidents_raised = 0usize;
    let mut seen_incidents = known_incidents;
    let mut sent_commands: std::collections::HashMap<u64, Instant> = Default::default();
    let mut commit_ms = Vec::new();
    let mut orders_issued = 0usize;
    let mut kpis_at = Instant::now() - Duration::from_secs(1);
    let mut reconcile_at = Instant::now() - Duration::from_secs(3);
    let mut reconciliation: Option<
        std::thread::JoinHandle<crate::governance::reconcile::Reconciliation>,
    > = None;
    let mut winner_of = Default::default();
    let mut urgency_revision = u64::MAX;
    let mut peak_rss = 0u64;
    let mut rss_at = Instant::now();
    let mut said_at = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut next_frame = Instant::now();
    loop {
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let surging = elapsed_ms < surge_ms;
        let frame = Instant::now();
        let now = crate::clock::unix_ms_now();

        updates_applied +=
            ingest.pump(&mut state, crate::governance::health::MAX_UPDATES_PER_FRAME) as u64;
        ingest.expire(&mut state, now);
        if ingest.backlog() > 0 {
            frames_with_backlog += 1;
        }
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
        for done in worker.poll() {
            if let Some(sent) = sent_commands.remove(&done.ticket) {
                commit_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                if let Err(e) = done.result {
                    progress(&format!("a dispatcher's command was refused: {e}"));
                }
            }
        }
        let mut to_issue = Vec::new();
        if let Some(book) = worker.book() {
            for incident in &book.incidents[seen_incidents.min(book.incidents.len())..] {
                if incident.key.as_deref().and_then(event_of_key).is_none() {
                    continue;
                }
                incidents_raised += 1;
                if let Some(playbook) = book.config.playbook(&incident.kind) {
                    to_issue.push((incident.id.clone(), NewOrder::from_playbook(playbook, now)));
                }
            }
            seen_incidents = book.incidents.len();
            // The desk's incident list and the map's pins, by urgency.
            if book.revision != urgency_revision {
                urgency_revision = book.revision;
                std::hint::black_box(book.by_urgency());
            }
        }
        for (incident, orders) in to_issue {
            orders_issued += orders.len();
            let ticket = worker
                .execute(Command::IssueOrders { incident, orders }, &dispatcher)
                .map_err(|e| anyhow::anyhow!("the dispatch writer: {e}"))?;
            sent_commands.insert(ticket, Instant::now());
        }
        if kpis_at.elapsed() >= Duration::from_millis(500) {
            kpis_at = Instant::now();
            std::hint::black_box(crate::state::kpi::CityKpis::compute(
                &state, &winner_of, now,
            ));
        }
        if let Some(pass) = reconciliation.take_if(|p| p.is_finished())
            && let Ok(r) = pass.join()
        {
            winner_of = r.winner_of;
        }
        if reconciliation.is_none() && reconcile_at.elapsed() >= Duration::from_secs(2) {
            reconcile_at = Instant::now();
            let input = crate::governance::reconcile::ReconcileInput::from_state(&state, now);
            let feeds = feeds.clone();
            reconciliation = Some(std::thread::spawn(move || {
                crate::governance::reconcile::reconcile_input(&input, &feeds, now)
            }));
        }
        frame_ms.push(frame.elapsed().as_secs_f64() * 1000.0);

        // Which posted events are on the desk now (bookkeeping, outside the frame).
        if let Some(book) = worker.book() {
            let first = posted
                .first_post_ms
                .lock()
                .map(|v| v.clone())
                .unwrap_or_default();
            for (e, event) in events.iter().enumerate() {
                if on_desk_at[e].is_none()
                    && first.get(e).copied().flatten().is_some()
                    && book.incidents.iter().any(|i| covers(i, event))
                {
                    on_desk_at[e] = Some(elapsed_ms);
                }
            }
        }

        if rss_at.elapsed() >= Duration::from_millis(500) {
            rss_at = Instant::now();
            peak_rss = peak_rss.max(rss_bytes().unwrap_or(0));
        }
        if said_at.elapsed() >= Duration::from_secs(10) {
            said_at = Instant::now();
            progress(&format!(
                "{:5.0} s: {} alerts in, {incidents_raised} of {} events raised, {orders_issued} orders, frame p99 so far {:.1} ms",
                elapsed_ms / 1000.0,
                posted.taken.load(Ordering::Relaxed),
                events.len(),
                Percentiles::of(frame_ms.clone()).p99
            ));
        }
        if !surging {
            // The surge is over: wait for the last reports to be raised and the last
            // commands answered, at most 30 s, or 5 s of nothing left to come.
            let posted_all = queue.lock().map(|q| q.is_empty()).unwrap_or(true);
            let outstanding = on_desk_at.iter().filter(|r| r.is_none()).count();
            if posted_all && outstanding == 0 && sent_commands.is_empty() {
                break;
            }
            let quiet = quiet_since.get_or_insert_with(Instant::now);
            if elapsed_ms > surge_ms + 30_000.0
                || quiet.elapsed() > Duration::from_secs(5)
                    && posted_all
                    && sent_commands.is_empty()
            {
                break;
            }
        }
        next_frame += frame_period;
        let now_i = Instant::now();
        if next_frame > now_i {
            std::thread::sleep(next_frame - now_i);
        } else {
            next_frame = now_i;
        }
    }
    stop_posting.store(true, Ordering::Relaxed);
    for p in posters {
        let _ = p.join();
    }
    let orders_delivered = worker.book().map_or(0, |b| {
        b.orders.iter().filter(|o| o.delivered_ms.is_some()).count()
    });
    drop(running);
    let first_post = posted
        .first_post_ms
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let mut latencies = Vec::new();
    let mut unraised = 0u64;
    for (e, shown) in on_desk_at.iter().enumerate() {
        match (shown, first_post.get(e).copied().flatten()) {
            (Some(shown), Some(posted_at)) => latencies.push((shown - posted_at).max(0.0)),
            _ => unraised += 1,
        }
    }
    let alerts_in = posted.taken.load(Ordering::Relaxed);
    let refused = posted.refused.load(Ordering::Relaxed);
    let log = match &options.db {
        Some(db) => format!("{} (SQLite, one durable commit per command)", db.display()),
        None => "a temporary SQLite log, one durable commit per command (removed)".into(),
    };
    drop(worker);
    drop(scratch);
    Ok(SurgeReport {
        minutes: options.minutes,
        scale: options.scale,
        events_per_hour: NORMAL_EVENTS_PER_HOUR * options.scale,
        events: events.len(),
        alerts_in,
        refused,
        incidents_raised,
        deduplicated: alerts_in.saturating_sub(incidents_raised as u64),
        dropped: unraised + refused,
        alert_to_incident_ms: Percentiles::of(latencies),
        commit_ms: Percentiles::of(commit_ms),
        orders_issued,
        orders_delivered,
        frames: frame_ms.len(),
        frame_ms: Percentiles::of(frame_ms),
        frames_with_backlog,
        updates_applied,
        peak_rss_mb: (peak_rss as f64 / 1e6 * 10.0).round() / 10.0,
        log,
    })
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
        assert_eq!(
            report.deduplicated,
            report.alerts_in - report.incidents_raised as u64
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
    fn a_storm_is_the_same_for_a_seed_and_its_reports_name_their_event() {
        let options = SurgeOptions {
            minutes: 10.0,
            scale: 100.0,
            ..Default::default()
        };
        let bbox = [24.92, 60.15, 24.96, 60.18];
        let (events, reports) = storm(&options, bbox, 0);
        let (again, _) = storm(&options, bbox, 0);
        // 12 an hour × 100 for 10 minutes: about 200.
        assert!((120..=280).contains(&events.len()), "{}", events.len());
        assert_eq!(
            events.iter().map(|e| (e.kind, e.lon)).collect::<Vec<_>>(),
            again.iter().map(|e| (e.kind, e.lon)).collect::<Vec<_>>()
        );
        assert!(reports.len() > events.len());
        for r in &reports {
            let alert =
                crate::feeds::cap::decode_cap(r.xml.as_bytes(), &Default::default()).unwrap();
            let update = &alert.updates[0];
            assert_eq!(event_of_key(&update.id), Some(r.event), "{}", update.id);
            let a = crate::dispatch::alerts::from_cap_feed(update, "storm").unwrap();
            assert_eq!(a.kind, events[r.event].kind);
        }
    }
}
