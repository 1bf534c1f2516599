//! Feed health and the ingest pump: events from the feed threads are applied to the
//! live state in bounded batches (so a flood never stalls a frame), and every feed
//! keeps its own counters, last success, last error and rate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::mpsc::Receiver;

use serde::Serialize;

use super::EntityUpdate;
use super::config::FeedConfig;
use super::poll::FeedEvent;
use crate::governance::catalog::ObservedSchema;
use crate::governance::quality::{FeedQuality, QualityRules};
use crate::state::{ApplyOutcome, FeedId, LiveState};

/// Window over which `updates_per_s` is measured.
const RATE_WINDOW_MS: i64 = 10_000;
/// Quarantine: rejects above this share of items over the last payloads …
const MAX_REJECT_SHARE: f64 = 0.5;
/// … counted over this many payloads, once they hold at least this many items.
const REJECT_WINDOW_PAYLOADS: usize = 10;
const MIN_ITEMS_FOR_REJECT_RATE: u64 = 20;
/// Quarantine after this many oversized payloads in a row.
const MAX_OVERSIZED_IN_A_ROW: u32 = 2;
/// Quarantine a feed applying more updates per second than this (a flood).
pub const MAX_UPDATES_PER_S: f64 = 200_000.0;
/// How long a quarantine lasts before the feed is tried again.
pub const QUARANTINE_MS: i64 = 60_000;

/// A feed held out of the live state, with the reason shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quarantine {
    pub reason: String,
    pub since_ms: i64,
    pub retry_at_ms: i64,
}

/// How one feed is doing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeedHealth {
    pub feed: String,
    /// Updates accepted into the live state.
    pub updates: u64,
    /// Out-of-order or duplicate updates ignored.
    pub ignored: u64,
    /// Items rejected by the decoder.
    pub rejected: u64,
    /// Reject reasons and poll failure causes → count.
    pub reasons: BTreeMap<String, u64>,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Unix ms of the last successful poll.
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Set while the feed is quarantined.
    pub quarantined: Option<Quarantine>,
    /// Updates dropped because the feed was quarantined.
    pub dropped: u64,
    #[serde(skip)]
    recent: VecDeque<(i64, u64)>,
    /// (items, rejects) of the last payloads.
    #[serde(skip)]
    recent_payloads: VecDeque<(u64, u64)>,
    #[serde(skip)]
    oversized_in_a_row: u32,
}

impl FeedHealth {
    fn new(name: &str) -> Self {
        Self {
            feed: name.to_string(),
            ..Default::default()
        }
    }

    /// Accepted updates per second over the last ten seconds, as of `now_ms`.
    pub fn updates_per_s(&self, now_ms: i64) -> f64 {
        let n: u64 = self
            .recent
            .iter()
            .filter(|(t, _)| now_ms - t <= RATE_WINDOW_MS)
            .map(|(_, n)| n)
            .sum();
        n as f64 / (RATE_WINDOW_MS as f64 / 1000.0)
    }

    /// Seconds since the last successful poll.
    pub fn age_s(&self, now_ms: i64) -> Option<f64> {
        self.last_ok_ms.map(|t| (now_ms - t).max(0) as f64 / 1000.0)
    }

    fn quarantine(&mut self, reason: String, now_ms: i64) {
        if self.quarantined.is_none() {
            self.quarantined = Some(Quarantine {
                reason,
                since_ms: now_ms,
                retry_at_ms: now_ms + QUARANTINE_MS,
            });
        }
    }

    /// Lifts an expired quarantine; true while the feed stays quarantined.
    fn is_quarantined(&mut self, now_ms: i64) -> bool {
        if let Some(q) = &self.quarantined
            && now_ms >= q.retry_at_ms
        {
            // On probation: the history that got it quarantined starts afresh.
            self.quarantined = None;
            self.recent_payloads.clear();
            self.oversized_in_a_row = 0;
        }
        self.quarantined.is_some()
    }

    fn note_payload(&mut self, items: u64, rejects: u64, now_ms: i64) {
        self.oversized_in_a_row = 0;
        self.recent_payloads.push_back((items, rejects));
        while self.recent_payloads.len() > REJECT_WINDOW_PAYLOADS {
            self.recent_payloads.pop_front();
        }
        let (n, bad) = self
            .recent_payloads
            .iter()
            .fold((0, 0), |(n, b), (i, r)| (n + i, b + r));
        if n >= MIN_ITEMS_FOR_REJECT_RATE && bad as f64 > MAX_REJECT_SHARE * n as f64 {
            let share = 100.0 * bad as f64 / n as f64;
            self.quarantine(
                format!(
                    "{share:.0}% of items rejected over the last {} payloads",
                    self.recent_payloads.len()
                ),
                now_ms,
            );
        }
        if self.updates_per_s(now_ms) > MAX_UPDATES_PER_S {
            self.quarantine(
                format!(
                    "flooding: {:.0} updates/s (limit {MAX_UPDATES_PER_S:.0})",
                    self.updates_per_s(now_ms)
                ),
                now_ms,
            );
        }
    }

    fn note_accepted(&mut self, at_ms: i64, n: u64) {
        if n == 0 {
            return;
        }
        self.updates += n;
        self.recent.push_back((at_ms, n));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| at_ms - t > RATE_WINDOW_MS)
        {
            self.recent.pop_front();
        }
    }
}

/// Receives feed events and applies them to the live state.
pub struct Ingest {
    /// In a mutex only so the app can share `Ingest` across threads; one reader.
    rx: Mutex<Receiver<FeedEvent>>,
    queue: VecDeque<(FeedId, EntityUpdate, i64)>,
    pub health: Vec<FeedHealth>,
    /// Quality of each feed's data under `rules`.
    pub quality: Vec<FeedQuality>,
    /// Entity types and fields each feed has been seen to carry.
    pub schemas: Vec<ObservedSchema>,
    rules: QualityRules,
    feeds: Vec<FeedConfig>,
}

impl Ingest {
    pub fn new(feeds: &[FeedConfig], rx: Receiver<FeedEvent>) -> Self {
        Self::with_rules(
            feeds,
            rx,
            QualityRules {
                city_bounds: None,
                ranges: Vec::new(),
            },
        )
    }

    /// An ingest that scores every payload under `rules` before applying it.
    pub fn with_rules(feeds: &[FeedConfig], rx: Receiver<FeedEvent>, rules: QualityRules) -> Self {
        Self {
            rx: Mutex::new(rx),
            queue: VecDeque::new(),
            health: feeds.iter().map(|f| FeedHealth::new(&f.name)).collect(),
            quality: vec![FeedQuality::default(); feeds.len()],
            schemas: vec![ObservedSchema::default(); feeds.len()],
            rules,
            feeds: feeds.to_vec(),
        }
    }

    /// Updates received but not yet applied.
    pub fn backlog(&self) -> usize {
        self.queue.len()
    }

    /// Drains the channel and applies at most `max_updates` updates. Returns how many
    /// were applied; the rest wait for the next call.
    pub fn pump(&mut self, state: &mut LiveState, max_updates: usize) -> usize {
        let events: Vec<FeedEvent> = match self.rx.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(_) => Vec::new(),
        };
        for event in events {
            self.receive(event);
        }
        let mut applied = 0;
        while applied < max_updates {
            let Some((feed, update, received_at_ms)) = self.queue.pop_front() else {
                break;
            };
            let outcome = state.apply(feed, update, received_at_ms);
            if let Some(h) = self.health.get_mut(feed as usize) {
                match outcome {
                    ApplyOutcome::Inserted | ApplyOutcome::Updated => {
                        h.note_accepted(received_at_ms, 1)
                    }
                    ApplyOutcome::OutOfOrder | ApplyOutcome::Duplicate => h.ignored += 1,
                }
            }
            applied += 1;
        }
        applied
    }

    fn receive(&mut self, event: FeedEvent) {
        match event {
            FeedEvent::Batch {
                feed,
                decoded,
                received_at_ms,
            } => {
                let i = feed as usize;
                if let Some(h) = self.health.get_mut(i) {
                    if h.is_quarantined(received_at_ms) {
                        h.dropped += decoded.updates.len() as u64;
                        return;
                    }
                    h.rejected += decoded.rejects.len() as u64;
                    for r in &decoded.rejects {
                        *h.reasons.entry(r.reason.as_str().to_string()).or_default() += 1;
                    }
                    let items = (decoded.updates.len() + decoded.rejects.len()) as u64;
                    h.note_payload(items, decoded.rejects.len() as u64, received_at_ms);
                    if h.quarantined.is_some() {
                        h.dropped += decoded.updates.len() as u64;
                        return;
                    }
                }
                if let (Some(q), Some(config)) = (self.quality.get_mut(i), self.feeds.get(i)) {
                    q.check_batch(&self.rules, config, &decoded.updates, received_at_ms);
                }
                if let Some(schema) = self.schemas.get_mut(i) {
                    // A sample is enough to learn a feed's schema.
                    for u in decoded.updates.iter().step_by(64) {
                        schema.observe(u);
                    }
                }
                self.queue.extend(
                    decoded
                        .updates
                        .into_iter()
                        .map(|u| (feed, u, received_at_ms)),
                );
            }
            FeedEvent::PollOk { feed, at_ms, .. } => {
                if let Some(h) = self.health.get_mut(feed as usize) {
                    h.polls_ok += 1;
                    h.last_ok_ms = Some(at_ms);
                }
            }
            FeedEvent::PollFailed {
                feed,
                at_ms,
                reason,
                error,
                ..
            } => {
                if let Some(h) = self.health.get_mut(feed as usize) {
                    h.polls_failed += 1;
                    *h.reasons.entry(reason.to_string()).or_default() += 1;
                    if reason == "too_large" {
                        h.oversized_in_a_row += 1;
                        if h.oversized_in_a_row >= MAX_OVERSIZED_IN_A_ROW {
                            h.quarantine(format!("oversized payloads: {error}"), at_ms);
                        }
                    }
                    h.last_error = Some(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::{Decoded, EntityKind, Reject, RejectReason};
    use crate::geo_frame::GeoFrame;

    fn update(id: &str) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Generic,
            position: Some([24.94, 60.17]),
            line: None,
            observed_at_ms: Some(1),
            fields: Default::default(),
        }
    }

    fn reject() -> Reject {
        Reject {
            reason: RejectReason::MissingId,
            item_id: None,
            detail: String::new(),
        }
    }

    #[test]
    fn a_feed_rejecting_most_items_is_quarantined_then_retried() {
        let feeds = parse_feeds("[[feed]]\nname='bad'\nkind='sim'\ndomain='urban'\n[[feed]]\nname='good'\nkind='sim'\ndomain='traffic'\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds, rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let batch = |feed: u32, good: usize, bad: usize, at: i64| FeedEvent::Batch {
            feed,
            decoded: Decoded {
                updates: (0..good).map(|i| update(&format!("{feed}-{i}"))).collect(),
                rejects: (0..bad).map(|_| reject()).collect(),
            },
            received_at_ms: at,
        };
        tx.send(batch(0, 2, 30, 1_000)).unwrap();
        tx.send(batch(1, 5, 0, 1_000)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        let q = ingest.health[0].quarantined.clone().expect("quarantined");
        assert!(q.reason.contains("94% of items rejected"), "{}", q.reason);
        assert_eq!(ingest.health[0].dropped, 2);
        assert!(ingest.health[1].quarantined.is_none());
        assert_eq!(state.count_for_feed(1), 5, "the good feed is untouched");
        // While quarantined its data is held out …
        tx.send(batch(0, 3, 0, 2_000)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.count_for_feed(0), 0);
        // … and after the quarantine it is tried again.
        tx.send(batch(0, 3, 0, 1_000 + QUARANTINE_MS)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert!(ingest.health[0].quarantined.is_none());
        assert_eq!(state.count_for_feed(0), 3);
    }
}
