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
    #[serde(skip)]
    recent: VecDeque<(i64, u64)>,
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
        Self::with_rules(feeds, rx, QualityRules { city_bounds: None })
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
                    h.rejected += decoded.rejects.len() as u64;
                    for r in &decoded.rejects {
                        *h.reasons.entry(r.reason.as_str().to_string()).or_default() += 1;
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
                reason,
                error,
                ..
            } => {
                if let Some(h) = self.health.get_mut(feed as usize) {
                    h.polls_failed += 1;
                    *h.reasons.entry(reason.to_string()).or_default() += 1;
                    h.last_error = Some(error);
                }
            }
        }
    }
}
