//! `zhongshu bench hub`: the hall's figures on a real nats-server (the one given, or
//! one started on 127.0.0.1 for the run):
//! - a command at one console → visible at 4 others (each following the stream
//!   without waiting on the network), p50/p99;
//! - a console joining a hall with N events ready (replay of the stream into the
//!   book);
//! - hub failover: the active hub stops renewing (as a crash would), the standby
//!   reports active;
//! - live layers, hub → 4 consoles: updates per second each console applies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::hub::{HubOptions, HubState};
use crate::dispatch::Role;
use crate::dispatch::book::{Actor, Command, NewIncident, Severity};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::service::ServiceOptions;
use crate::nats::{Nats, NatsOptions};
use crate::stats::percentile;
use crate::store::jetstream::{HallLogOptions, JetStreamLog};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn console(nats_url: &str, hall: &str) -> anyhow::Result<Dispatcher> {
    let nats = Nats::connect(&NatsOptions {
        url: nats_url.to_string(),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let log = JetStreamLog::open(&nats, hall, &HallLogOptions::default())?;
    Ok(Dispatcher::open_store(
        Box::new(log),
        DispatchConfig::default_config(),
    )?)
}

/// Runs the benchmark. `url`: the server, or `None` to start one (needs
/// `nats-server` on the PATH). Halls are named after the run, so a shared server
/// is not disturbed.
pub fn bench_hub(
    url: Option<&str>,
    commands: usize,
    join_events: u64,
    commit_events: usize,
    live_entities: usize,
) -> anyhow::Result<serde_json::Value> {
    let _own;
    let url = match url {
        Some(u) => u.to_string(),
        None => {
            let s = crate::nats::testing::NatsServer::start("bench-hub");
            let u = s.url();
            _own = s;
            u
        }
    };
    let run = format!("bench{}", std::process::id());
    let propagation = bench_propagation(&url, &format!("{run}-p"), commands)?;
    let join = bench_join(&url, &format!("{run}-j"), join_events, commit_events)?;
    let failover = bench_failover(&url, &format!("{run}-f"))?;
    let live = bench_live(&url, &format!("{run}-l"), live_entities, 5)?;
    Ok(serde_json::json!({
        "server": url,
        "command_to_4_consoles_ms": propagation,
        "join": join,
        "failover": failover,
        "live_updates_per_s": live["per_console_updates_per_s"].clone(),
        "live": live,
    }))
}

/// Live layers, hub → 4 consoles: `entities` entities all change `rounds` times,
/// published as the hub does; each console follows (snapshot, then frames) and
/// applies them to its own live state. Measured from the first round's publishing
/// until a console holds every entity's last version.
fn bench_live(
    url: &str,
    hall: &str,
    entities: usize,
    rounds: usize,
) -> anyhow::Result<serde_json::Value> {
    use super::live::{Follower, LiveApplier, Publisher};
    use crate::model::{EntityKind, EntityUpdate, FieldValue};
    use crate::state::LiveState;

    let connect = || {
        Nats::connect(&NatsOptions {
            url: url.to_string(),
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)
    };
    let frame = crate::geo_frame::GeoFrame::new(24.94, 60.17);
    let update = |i: usize, at_ms: i64| EntityUpdate {
        id: format!("urn:ngsi-ld:TrafficFlowObserved:bench-{i}"),
        entity_type: "TrafficFlowObserved".into(),
        kind: EntityKind::TrafficFlow {
            average_speed_kmh: Some((i % 90) as f64 + (at_ms % 7) as f64),
            intensity: Some((i % 500) as f64),
            occupancy: Some(0.3),
            congested: Some(false),
        },
        position: Some([
            24.90 + (i % 300) as f64 * 1e-4,
            60.15 + (i / 300) as f64 * 1e-5,
        ]),
        line: None,
        observed_at_ms: Some(at_ms),
        fields: [
            (
                "averageVehicleSpeed".to_string(),
                FieldValue::Number((i % 90) as f64),
            ),
            (
                "laneDirection".to_string(),
                FieldValue::Text("forward".into()),
            ),
        ]
        .into_iter()
        .collect(),
        units: Default::default(),
        notes: Vec::new(),
    };
    let t0 = crate::clock::unix_ms_now() - 60_000;
    let last_at = t0 + rounds as i64;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Duration, u64)>();
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut consoles = Vec::new();
    for c in 0..4 {
        let nats = connect()?;
        let follower = Follower::start(&nats, hall).map_err(anyhow::Error::msg)?;
        let (stop, started, done_tx, ready) = (
            stop.clone(),
            started.clone(),
            done_tx.clone(),
            ready.clone(),
        );
        consoles.push(std::thread::spawn(move || {
            let mut applier = LiveApplier::default();
            let mut state = LiveState::new(frame);
            let mut said_ready = false;
            let mut last_check = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if applier.pump(&follower.rx, &mut state, usize::MAX) == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                if !said_ready && applier.snapshots > 0 {
                    said_ready = true;
                    ready.fetch_add(1, Ordering::Relaxed);
                }
                // Entities at their last version, looked at every 20 ms.
                if last_check.elapsed() < Duration::from_millis(20) {
                    continue;
                }
                last_check = Instant::now();
                let current = state.iter().filter(|(_, e)| e.as_of_ms == last_at).count();
                if current == entities {
                    let since = started.lock().ok().and_then(|s| *s);
                    if let Some(since) = since {
                        let _ = done_tx.send((c, since.elapsed(), applier.snapshots));
                    }
                    return;
                }
            }
        }));
    }
    drop(done_tx);
    let nats = connect()?;
    let mut publisher = Publisher::start(&nats, hall, "bench-hub").map_err(anyhow::Error::msg)?;
    let mut state = LiveState::new(frame);
    // Every console has its (empty) snapshot before the clock starts.
    let until = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < 4 {
        publisher
            .publish_changes(&state, &[])
            .map_err(anyhow::Error::msg)?;
        if Instant::now() > until {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!("the bench consoles took no snapshot within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let begin = Instant::now();
    if let Ok(mut s) = started.lock() {
        *s = Some(begin);
    }
    let mut publish_ms = Vec::new();
    for round in 1..=rounds {
        for i in 0..entities {
            state.apply(0, update(i, t0 + round as i64), t0 + round as i64);
        }
        let changed = state.drain_changed();
        let at = Instant::now();
        publisher
            .publish_changes(&state, &changed)
            .map_err(anyhow::Error::msg)?;
        publish_ms.push(at.elapsed().as_secs_f64() * 1000.0);
    }
    let publishing_s = begin.elapsed().as_secs_f64();
    let mut per_console = Vec::new();
    let mut resnapshots = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while per_console.len() < 4 {
        // Keep answering snapshot requests of consoles that fell behind.
        publisher
            .publish_changes(&state, &[])
            .map_err(anyhow::Error::msg)?;
        match done_rx.recv_timeout(Duration::from_millis(20)) {
            Ok((_, took, snapshots)) => {
                per_console.push(took.as_secs_f64());
                resnapshots += snapshots.saturating_sub(1);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break,
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in consoles {
        let _ = c.join();
    }
    let updates = (entities * rounds) as f64;
    let slowest = per_console.iter().cloned().fold(0.0_f64, f64::max);
    Ok(serde_json::json!({
        "entities": entities,
        "rounds": rounds,
        "consoles_done": per_console.len(),
        "publish_ms_per_round": publish_ms.iter().map(|m| round2(*m)).collect::<Vec<_>>(),
        "publishing_s": round2(publishing_s),
        "slowest_console_s": round2(slowest),
        "per_console_updates_per_s": if per_console.len() == 4 { (updates / slowest).round() } else { 0.0 },
        "delivered_updates_per_s": if per_console.len() == 4 { (4.0 * updates / slowest).round() } else { 0.0 },
        "resnapshots": resnapshots,
    }))
}

fn bench_propagation(url: &str, hall: &str, commands: usize) -> anyhow::Result<serde_json::Value> {
    let mut writer = console(url, hall)?;
    let watchers: Vec<Dispatcher> = (0..4)
        .map(|_| console(url, hall))
        .collect::<Result<_, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    // Each watcher records when it first shows each incident.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let handles: Vec<_> = watchers
        .into_iter()
        .map(|mut w| {
            let tx = tx.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = w.book().incidents.len();
                while !stop.load(Ordering::Relaxed) {
                    let _ = w.sync();
                    let n = w.book().incidents.len();
                    if n > seen {
                        let at = Instant::now();
                        for i in seen..n {
                            let _ = tx.send((i, at));
                        }
                        seen = n;
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let actor = Actor::new("bench", Role::Dispatcher, None);
    let mut sent_at = Vec::with_capacity(commands);
    for n in 0..commands {
        let now = crate::clock::unix_ms_now();
        let t = Instant::now();
        writer.execute(
            &Command::ReportIncident(NewIncident {
                kind: "bench".into(),
                title: format!("propagation #{n}"),
                domain: crate::feeds::Domain::Urban,
                severity: Severity::Minor,
                lon: 121.47,
                lat: 31.23,
                source: "bench".into(),
                key: None,
            }),
            &actor,
            now,
        )?;
        sent_at.push(t);
        // A dispatcher's pace, not a flood: one command every 5 ms.
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut latencies = Vec::with_capacity(commands * 4);
    while latencies.len() < commands * 4 && Instant::now() < deadline {
        if let Ok((i, at)) = rx.recv_timeout(Duration::from_millis(100))
            && i < sent_at.len()
        {
            latencies.push(at.duration_since(sent_at[i]).as_secs_f64() * 1000.0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    latencies.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "commands": commands,
        "observations": latencies.len(),
        "p50": round2(percentile(&latencies, 0.5)),
        "p99": round2(percentile(&latencies, 0.99)),
        "max": round2(latencies.last().copied().unwrap_or(0.0)),
    }))
}

fn bench_join(
    url: &str,
    hall: &str,
    events: u64,
    commit_events: usize,
) -> anyhow::Result<serde_json::Value> {
    let fill = Instant::now();
    {
        let mut d = console(url, hall)?;
        let book = d.book().clone();
        drop(book);
        let nats = Nats::connect(&NatsOptions {
            url: url.to_string(),
            timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)?;
        let mut log = JetStreamLog::open(&nats, hall, &HallLogOptions::default())?;
        use crate::store::EventStore;
        log.scan_replay(&mut |_, _, _, _| {})?;
        crate::dispatch::bench::fill_log(&mut log, d.book().clone(), events, commit_events.max(1))?;
        let _ = d.sync();
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = console(url, hall)?;
    let join_ms = t.elapsed().as_secs_f64() * 1000.0;
    Ok(serde_json::json!({
        "events": d.opened.events,
        "incidents": d.opened.incidents,
        "orders": d.opened.orders,
        "events_per_commit": commit_events,
        "join_ms": round2(join_ms),
        "fill_s": round2(fill_s),
    }))
}

fn bench_failover(url: &str, hall: &str) -> anyhow::Result<serde_json::Value> {
    let nats = || {
        Nats::connect(&NatsOptions {
            url: url.to_string(),
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)
    };
    let options = |addr: &str| HubOptions {
        hall: hall.to_string(),
        config: DispatchConfig::default_config(),
        service: ServiceOptions {
            api_addr: addr.to_string(),
            ..Default::default()
        },
        replicas: 1,
        crash_on_stop: true,
        live: None,
    };
    let (tx, rx) = std::sync::mpsc::channel::<(usize, HubState, Instant)>();
    let mut stops = Vec::new();
    let mut handles = Vec::new();
    for i in 0..2 {
        let stop = Arc::new(AtomicBool::new(false));
        stops.push(stop.clone());
        let tx = tx.clone();
        let nats = nats()?;
        let options = options("127.0.0.1:0");
        handles.push(std::thread::spawn(move || {
            super::hub::run(&nats, options, stop, |s| {
                let _ = tx.send((i, s, Instant::now()));
            })
        }));
        // The first becomes active before the second starts.
        if i == 0 {
            loop {
                let (_, s, _) = rx.recv_timeout(Duration::from_secs(30))?;
                if matches!(s, HubState::Active { .. }) {
                    break;
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let crashed = Instant::now();
    stops[0].store(true, Ordering::Relaxed);
    let took = loop {
        let (i, s, at) = rx.recv_timeout(Duration::from_secs(30))?;
        if i == 1 && matches!(s, HubState::Active { .. }) {
            break at.duration_since(crashed);
        }
    };
    stops[1].store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    Ok(serde_json::json!({
        "takeover_ms": round2(took.as_secs_f64() * 1000.0),
        "lease_ttl_ms": super::LEASE_TTL.as_millis() as u64,
    }))
}
