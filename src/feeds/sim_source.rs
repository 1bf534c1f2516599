//! The built-in simulator as a feed source: one thread owns the [`Simulator`], keeps
//! it at wall-clock time and publishes each `sim` feed's domain on its interval,
//! through the same channel and ingest path as HTTP feeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::{FeedConfig, FeedKind};
use super::poll::FeedEvent;
use super::{Decoded, Domain};
use crate::clock::unix_ms_now;
use crate::map::CityMap;
use crate::model::FeedId;
use crate::sim::{SimConfig, Simulator};

/// The running simulator thread; dropping it stops the thread.
pub struct SimSource {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimSource {
    /// Starts the simulator for the `sim` feeds among `feeds` (ids are positions in
    /// `feeds`); `None` when there are none.
    pub fn start(
        feeds: &[FeedConfig],
        map: &CityMap,
        seed: u64,
        tx: Sender<FeedEvent>,
    ) -> Option<SimSource> {
        let sim_feeds: Vec<(FeedId, Domain, i64)> = feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == FeedKind::Sim)
            .map(|(i, f)| (i as FeedId, f.domain, (f.interval_s * 1000.0) as i64))
            .collect();
        if sim_feeds.is_empty() {
            return None;
        }
        let mut config = SimConfig::for_map(map);
        config.seed = seed;
        let mut sim = Simulator::new(map, config, unix_ms_now());
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || {
                let mut next_due: Vec<i64> = vec![0; sim_feeds.len()];
                while !thread_stop.load(Ordering::Relaxed) {
                    let now = unix_ms_now();
                    sim.advance(now);
                    for (k, &(feed, domain, interval_ms)) in sim_feeds.iter().enumerate() {
                        if now < next_due[k] {
                            continue;
                        }
                        next_due[k] = now + interval_ms.max(100);
                        let updates = sim.snapshot(domain);
                        let sent = tx.send(FeedEvent::Batch {
                            feed,
                            decoded: Decoded {
                                updates,
                                rejects: Vec::new(),
                                withheld: Default::default(),
                            },
                            received_at_ms: now,
                        });
                        let ok = tx.send(FeedEvent::PollOk {
                            feed,
                            at_ms: now,
                            not_modified: false,
                            complete: true,
                            bytes: 0,
                        });
                        if sent.is_err() || ok.is_err() {
                            return; // the app is gone
                        }
                    }
                    let wait = next_due.iter().min().copied().unwrap_or(now + 1000) - unix_ms_now();
                    std::thread::park_timeout(Duration::from_millis(wait.clamp(10, 250) as u64));
                }
            })
            .expect("spawn the simulator thread");
        Some(SimSource {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SimSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The feeds used when no feeds file is given: every sub-brain simulated on the map.
pub fn default_sim_feeds() -> Vec<FeedConfig> {
    let owner = |d: Domain| match d {
        Domain::Traffic => "Transport Bureau",
        Domain::Safety => "Public Security Bureau",
        Domain::Ecology => "Ecology and Environment Bureau",
        Domain::Urban => "Urban Management Bureau",
        Domain::Health => "Health Commission",
        Domain::Utilities => "Utilities Group",
        Domain::Economy => "Development and Reform Commission",
    };
    Domain::ALL
        .iter()
        .map(|&d| FeedConfig {
            name: format!("sim-{}", d.as_str()),
            kind: FeedKind::Sim,
            url: None,
            domain: d,
            owner: Some(format!("{} (simulated)", owner(d))),
            interval_s: match d {
                Domain::Traffic | Domain::Safety | Domain::Health => 1.0,
                _ => 5.0,
            },
            licence: Some("simulated data".into()),
            page_size: 1000,
            max_pages: 1000,
            max_poll_items: 2_000_000,
            max_poll_bytes: 1 << 30,
            timeout_s: 10.0,
            context: None,
            required_fields: Vec::new(),
            authoritative_for: Vec::new(),
            max_payload_bytes: super::MAX_PAYLOAD_BYTES,
            cadence_s: None,
            stale_after_cadences: 10.0,
            expire_after_cadences: 30.0,
            remove_missing: None,
            entity_type: None,
            headers: Default::default(),
            redirect_hosts: Vec::new(),
            topics: Vec::new(),
            payload: None,
            field_map: Default::default(),
            username: None,
            password: None,
            client_id: None,
            ca: None,
            listen: None,
            token: None,
            tls_cert: None,
            tls_key: None,
            notify_url: None,
            subscription_s: 3600.0,
        })
        .collect()
}
