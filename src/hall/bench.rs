//! `zhongshu bench hub`: the hall's figures on a real nats-server (the one given, or
//! one started on 127.0.0.1 for the run):
//! - a command at one console → visible at 4 others (each following the stream
//!   without waiting on the network), p50/p99;
//! - a console joining a hall with N events ready (replay of the stream into the
//!   book);
//! - hub failover: the active hub stops renewing (as a crash would), the standby
//!   reports active.

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
    Ok(serde_json::json!({
        "server": url,
        "command_to_4_consoles_ms": propagation,
        "join": join,
        "failover": failover,
        "live_updates_per_s": serde_json::Value::Null,
        "notes": ["live layers are not yet published by the hub: updates per second not measured"],
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
