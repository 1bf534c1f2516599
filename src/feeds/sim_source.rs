//! The built-in simulator as a feed source: one thread owns the [`Simulator`], keeps
//! it at wall-clock time and publishes each `sim` feed's domain on its interval,
//! through the same channel and ingest path as HTTP feeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::{FeedConfig, FeedKind, SimTrouble};
use super::poll::FeedEvent;
use super::{Decoded, Domain};
use crate::clock::unix_ms_now;
use crate::map::CityMap;
use crate::model::FeedId;
use crate::sim::{SimConfig, Simulator};

/// The `sim` feeds of a feeds list and when each is next due: what the simulator
/// publishes, and the trouble each feed plays ([`SimTrouble`]), at any time asked
/// (wall clock in the app, simulated time in tests and benches).
pub struct SimFeeds {
    /// (feed id, domain, interval, trouble).
    feeds: Vec<(FeedId, Domain, i64, Option<SimTrouble>)>,
    next_due: Vec<i64>,
    seed: u64,
    /// When the simulation started: trouble is timed from here.
    origin_ms: i64,
}

impl SimFeeds {
    /// The `sim` feeds among `feeds` (ids are positions in `feeds`), starting at
    /// `origin_ms`; `None` when there are none.
    pub fn new(feeds: &[FeedConfig], seed: u64, origin_ms: i64) -> Option<SimFeeds> {
        let feeds: Vec<_> = feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind == FeedKind::Sim)
            .map(|(i, f)| {
                let interval_ms = ((f.interval_s * 1000.0) as i64).max(100);
                (i as FeedId, f.domain, interval_ms, f.trouble)
            })
            .collect();
        (!feeds.is_empty()).then(|| SimFeeds {
            next_due: vec![origin_ms; feeds.len()],
            feeds,
            seed,
            origin_ms,
        })
    }

    /// Advances `sim` to `now_ms` and returns what the feeds due publish (a batch
    /// and a completed poll each); a feed late or out at the moment publishes
    /// nothing.
    pub fn publish_due(&mut self, sim: &mut Simulator, now_ms: i64) -> Vec<FeedEvent> {
        use crate::sim::trouble;
        sim.advance(now_ms);
        let mut events = Vec::new();
        for (k, &(feed, domain, interval_ms, trouble)) in self.feeds.iter().enumerate() {
            if now_ms < self.next_due[k] {
                continue;
            }
            self.next_due[k] = now_ms + interval_ms;
            let (seed, origin) = (self.seed, self.origin_ms);
            let updates = match trouble {
                Some(SimTrouble::Late) if trouble::is_late(seed, origin, now_ms) => continue,
                Some(SimTrouble::Outage) if trouble::is_out(seed, origin, now_ms) => continue,
                Some(SimTrouble::Glitch) => {
                    trouble::glitch(sim.snapshot(domain), seed, origin, now_ms)
                }
                Some(SimTrouble::Drift) => {
                    trouble::second_department(&sim.snapshot(domain), origin, now_ms)
                }
                _ => sim.snapshot(domain),
            };
            events.push(FeedEvent::Batch {
                feed,
                decoded: Decoded {
                    updates,
                    rejects: Vec::new(),
                    withheld: Default::default(),
                },
                received_at_ms: now_ms,
            });
            events.push(FeedEvent::PollOk {
                feed,
                at_ms: now_ms,
                not_modified: false,
                complete: true,
                bytes: 0,
            });
        }
        events
    }

    /// When the next feed is due.
    pub fn next_due_ms(&self) -> i64 {
        self.next_due.iter().min().copied().unwrap_or(i64::MAX)
    }
}

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
        let start_ms = unix_ms_now();
        let mut sim_feeds = SimFeeds::new(feeds, seed, start_ms)?;
        let mut config = SimConfig::for_map(map);
        config.seed = seed;
        let mut sim = Simulator::new(map, config, start_ms);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    for event in sim_feeds.publish_due(&mut sim, unix_ms_now()) {
                        if tx.send(event).is_err() {
                            return; // the app is gone
                        }
                    }
                    let wait = sim_feeds.next_due_ms().saturating_sub(unix_ms_now());
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

/// The feeds used when no feeds file is given: every sub-brain simulated on the map
/// (in `Domain::ALL` order), with the trouble real feeds have: the ecology bureau's
/// stations glitch now and then and are authoritative for air quality, a district's
/// monitors report some of them with drift (the last feed), the economy's statistics
/// go late now and then, the health commission's feed has a short outage.
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
    let mut feeds: Vec<FeedConfig> = Domain::ALL
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
            authoritative_for: match d {
                Domain::Ecology => vec!["AirQualityObserved".into()],
                _ => Vec::new(),
            },
            max_payload_bytes: super::MAX_PAYLOAD_BYTES,
            cadence_s: None,
            stale_after_cadences: 10.0,
            // The health feed's outage greys its hospitals out; they stay on the map.
            expire_after_cadences: match d {
                Domain::Health => 300.0,
                _ => 30.0,
            },
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
            rate_per_s: None,
            tls_cert: None,
            tls_key: None,
            notify_url: None,
            subscription_s: 3600.0,
            trouble: match d {
                Domain::Ecology => Some(SimTrouble::Glitch),
                Domain::Economy => Some(SimTrouble::Late),
                Domain::Health => Some(SimTrouble::Outage),
                _ => None,
            },
            coords: Default::default(),
            classification: Default::default(),
            field_classification: Default::default(),
            open_fields: None,
        })
        .collect();
    let ecology = feeds
        .iter()
        .find(|f| f.domain == Domain::Ecology)
        .cloned()
        .expect("an ecology feed");
    feeds.push(FeedConfig {
        name: "sim-ecology-district".into(),
        owner: Some("Central District Environmental Monitoring Station (simulated)".into()),
        interval_s: 10.0,
        authoritative_for: Vec::new(),
        trouble: Some(SimTrouble::Drift),
        ..ecology
    });
    feeds
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::governance::health::Ingest;
    use crate::governance::quality::{Freshness, QualityRules, freshness};
    use crate::governance::reconcile::reconcile;
    use crate::sim::trouble;
    use crate::state::LiveState;

    const START: i64 = 1_795_946_400_000;

    /// What the steward would see of the troubled default feeds, second by second of
    /// simulated time.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        /// Freshness of each feed, by simulated second since the start.
        freshness: BTreeMap<String, Vec<Freshness>>,
        /// Simulated seconds at which the ecology feed's readings were out of range.
        out_of_range: u64,
        /// (second, winner feed, other feed, field) of the drift conflicts.
        conflicts: Vec<(i64, String, String, String)>,
        /// Entities of each feed at the end.
        entities: BTreeMap<String, usize>,
        /// Every batch published: (second, feed, ids and AQI values).
        published: Vec<(i64, u32, usize, i64)>,
    }

    /// Plays the feeds with trouble (not traffic and safety, which have none) for
    /// `minutes` of simulated time through the real ingest, quality rules and
    /// reconciliation.
    fn play(seed: u64, minutes: i64) -> Seen {
        let map = crate::map::load_default().unwrap();
        let feeds: Vec<FeedConfig> = default_sim_feeds()
            .into_iter()
            .filter(|f| f.trouble.is_some())
            .collect();
        let mut config = SimConfig::for_map(&map);
        config.seed = seed;
        config.vehicles = Some(40);
        let mut sim = Simulator::new(&map, config, START);
        let mut sim_feeds = SimFeeds::new(&feeds, seed, START).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::with_rules(&feeds, rx, QualityRules::for_city(map.bbox_wgs84));
        let mut state = LiveState::new(map.frame);
        let mut seen = Seen::default();
        for second in 0..minutes * 60 {
            let now = START + second * 1000;
            for event in sim_feeds.publish_due(&mut sim, now) {
                if let FeedEvent::Batch { feed, decoded, .. } = &event {
                    let aqi: f64 = decoded
                        .updates
                        .iter()
                        .filter_map(|u| u.kind.numbers().first().and_then(|(_, v)| *v))
                        .sum();
                    seen.published
                        .push((second, *feed, decoded.updates.len(), aqi as i64));
                }
                tx.send(event).unwrap();
            }
            ingest.pump(&mut state, usize::MAX);
            ingest.expire(&mut state, now);
            for (i, f) in feeds.iter().enumerate() {
                let (status, _) = freshness(ingest.health[i].data_as_of_ms, f.cadence_s(), now);
                seen.freshness
                    .entry(f.name.clone())
                    .or_default()
                    .push(status);
            }
            if second % 30 == 0 {
                for c in reconcile(&state, &feeds, now).conflicts {
                    seen.conflicts
                        .push((second, c.winner.feed, c.other.feed, c.field));
                }
            }
        }
        let ecology = feeds.iter().position(|f| f.name == "sim-ecology").unwrap();
        seen.out_of_range = ingest.quality[ecology]
            .issues
            .get("out_of_range")
            .copied()
            .unwrap_or(0);
        for (i, f) in feeds.iter().enumerate() {
            seen.entities
                .insert(f.name.clone(), state.count_for_feed(i as u32));
        }
        seen
    }

    #[test]
    fn the_default_simulation_plays_its_trouble_on_simulated_time() {
        let minutes = 45;
        let seen = play(1, minutes);
        let at = |feed: &str, ms: i64| seen.freshness[feed][((ms - START) / 1000) as usize];

        // The economy's statistics go late in each 6-minute period, at the times the
        // seed gives, and are never stale for it; fresh again once they come.
        let mut late_episodes = 0;
        for k in 0..minutes * 60_000 / trouble::LATE_EVERY_MS {
            let (start, end) = trouble::late_episode(1, START, k);
            assert_eq!(at("sim-economy", start - 1000), Freshness::Fresh, "k = {k}");
            assert_eq!(at("sim-economy", end - 1000), Freshness::Late, "k = {k}");
            assert_eq!(at("sim-economy", end + 6000), Freshness::Fresh, "k = {k}");
            late_episodes += 1;
        }
        assert_eq!(late_episodes, 7);
        assert!(!seen.freshness["sim-economy"].contains(&Freshness::Stale));

        // The health commission's feed goes dark for a minute: stale, then back,
        // its hospitals kept on the map meanwhile.
        let (start, end) = trouble::outage_episode(1, START, 0);
        assert!(start - START < 6 * 60_000, "within minutes of the start");
        assert_eq!(at("sim-health", start - 1000), Freshness::Fresh);
        assert_eq!(at("sim-health", start + 5_000), Freshness::Late);
        assert_eq!(at("sim-health", end - 1000), Freshness::Stale);
        assert_eq!(at("sim-health", end + 1000), Freshness::Fresh);
        assert!(seen.entities["sim-health"] > 0);
        let others_fresh = seen.freshness["sim-ecology"]
            .iter()
            .skip(10)
            .all(|f| *f == Freshness::Fresh);
        assert!(others_fresh, "only the troubled feeds falter");

        // The ecology feed's implausible readings are caught by the validity rules:
        // one station, once a glitch episode (two readings at 5 s in 10 s).
        let glitches = minutes * 60_000 / trouble::GLITCH_EVERY_MS;
        assert!(
            (glitches..=2 * glitches).contains(&(seen.out_of_range as i64)),
            "{} out-of-range readings in {glitches} glitches",
            seen.out_of_range
        );

        // The district's monitors link to the bureau's stations and disagree with
        // them as they drift; the bureau is the authoritative source.
        assert!(seen.entities["sim-ecology-district"] >= 3);
        assert!(!seen.conflicts.is_empty());
        for (_, winner, other, _) in &seen.conflicts {
            assert_eq!(
                (winner.as_str(), other.as_str()),
                ("sim-ecology", "sim-ecology-district")
            );
        }
        assert!(seen.conflicts.iter().any(|c| c.3 == "airQualityIndex"));
        // A monitor drifts in and out of tolerance: some checks find fewer conflicts.
        let mut per_check: BTreeMap<i64, usize> = (0..minutes * 2).map(|k| (k * 30, 0)).collect();
        for c in &seen.conflicts {
            *per_check.entry(c.0).or_default() += 1;
        }
        let counts: std::collections::BTreeSet<usize> =
            per_check.values().skip(1).copied().collect();
        assert!(counts.len() > 1, "{counts:?}");
    }

    #[test]
    fn the_same_seed_plays_the_same_trouble_and_another_seed_does_not() {
        let a = play(7, 8);
        assert_eq!(a, play(7, 8));
        assert_ne!(a.freshness, play(8, 8).freshness);
    }
}
