//! Feed health and the ingest pump: events from the feed threads are applied to the
//! live state in bounded batches (so a flood never stalls a frame), and every feed
//! keeps its own counters, last success, last error and rate.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::mpsc::Receiver;

use serde::{Deserialize, Serialize};

use super::catalog::ObservedSchema;
use super::quality::{BatchCheck, FeedQuality, QualityRules};
use crate::feeds::config::FeedConfig;
use crate::feeds::poll::FeedEvent;
use crate::feeds::{EntityKind, EntityUpdate, Reject};
use crate::state::sweep::{Budget, Sweep};
use crate::state::{ApplyOutcome, FeedId, FeedStanding, LiveState, as_of_ms};

/// Rejected items kept as examples per feed: the first ones seen.
pub const MAX_REJECT_EXAMPLES: usize = 5;
/// Window over which `updates_per_s` is measured.
const RATE_WINDOW_MS: i64 = 10_000;
/// Quarantine: rejects above this share of items over the last payloads …
const MAX_REJECT_SHARE: f64 = 0.95;
/// … counted over this many payloads, once they hold at least this many items.
const REJECT_WINDOW_PAYLOADS: usize = 10;
const MIN_ITEMS_FOR_REJECT_RATE: u64 = 20;
/// Quarantine after this many oversized payloads in a row.
const MAX_OVERSIZED_IN_A_ROW: u32 = 2;
/// Quarantine a feed applying more updates per second than this (a flood).
pub const MAX_UPDATES_PER_S: f64 = 200_000.0;
/// Updates a frame applies at most; the rest wait for the next frame.
pub const MAX_UPDATES_PER_FRAME: usize = 25_000;
/// Updates of one payload scored and queued at a time.
pub const RECEIVE_PART: usize = 1_024;
/// Slots a call's snapshot removals, 304 marks and expiry each look at, at most.
pub const SWEEP_SLOTS: usize = 32_768;
/// Entities a sweep step removes at most (removing is what costs).
pub const MAX_REMOVALS_PER_STEP: usize = 2_048;
/// Updates a frame applies even when its time is spent, so a busy frame still moves on.
pub const MIN_UPDATES_PER_FRAME: usize = 1_000;
/// What a frame spends on the ingest (taking in, applying, sweeps), beyond
/// [`MIN_UPDATES_PER_FRAME`], at least: see [`ingest_budget`].
pub const INGEST_FRAME_BUDGET: std::time::Duration = std::time::Duration::from_millis(4);
/// Share of the time between frames the ingest may take when frames are slow.
pub const INGEST_FRAME_SHARE: f64 = 0.25;

/// The ingest's time in a frame that follows `frame_interval`: [`INGEST_FRAME_BUDGET`]
/// at 60 frames a second, and a quarter of the interval when frames are slower (a
/// wall drawn in software, a busy machine), so the updates taken in a second never
/// fall with the frame rate.
pub fn ingest_budget(frame_interval: std::time::Duration) -> std::time::Duration {
    INGEST_FRAME_BUDGET.max(
        frame_interval
            .mul_f64(INGEST_FRAME_SHARE)
            .min(std::time::Duration::from_secs(1)),
    )
}
/// How long a quarantine lasts before the feed is tried again.
pub const QUARANTINE_MS: i64 = 60_000;
/// Expiry looks for unreported entities at most this often.
const EXPIRE_EVERY_MS: i64 = 1_000;

/// A feed held out of the live state, with the reason shown to operators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    pub reason: String,
    pub since_ms: i64,
    pub retry_at_ms: i64,
}

/// How one feed is doing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedHealth {
    pub feed: String,
    /// Updates accepted into the live state.
    pub updates: u64,
    /// Out-of-order or duplicate updates ignored.
    pub ignored: u64,
    /// Items rejected by the decoder.
    pub rejected: u64,
    /// Reject reasons of items → count.
    pub reasons: BTreeMap<String, u64>,
    /// Poll failure causes (`timeout`, `http_status`, `not_json`, …) → count.
    #[serde(default)]
    pub poll_errors: BTreeMap<String, u64>,
    /// Requests a push endpoint refused (wrong token, over its rate, too large, too
    /// slow, ...) by why: an attack or a misconfigured sender, never the feed's own
    /// failure.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// The first [`MAX_REJECT_EXAMPLES`] rejected items, with id, path and detail.
    #[serde(default)]
    pub reject_examples: Vec<Reject>,
    /// Decode notes (`values_cut`, `geometry_wrapped`, `ngsi_v2_in_ngsi_ld_feed`) →
    /// items they were made on.
    #[serde(default)]
    pub notes: BTreeMap<String, u64>,
    /// Values left out by the size limits, over all items.
    #[serde(default)]
    pub values_cut: u64,
    pub polls_ok: u64,
    pub polls_failed: u64,
    /// Unix ms of the last successful poll.
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Set while the feed is quarantined.
    pub quarantined: Option<Quarantine>,
    /// Messages read and kept out of incidents, by why: CAP `test`, `exercise`,
    /// `system`, `draft` statuses, `ack` and `error` message types. Each message
    /// counts once however often it is polled.
    pub withheld: BTreeMap<String, u64>,
    /// Keys of the withheld messages counted (bounded: see [`MAX_WITHHELD_KEYS`]).
    #[serde(skip)]
    withheld_keys: HashSet<String>,
    /// Updates dropped because the feed was quarantined.
    pub dropped: u64,
    /// Newest time the feed's data is as of (observation time, or receive time for
    /// untimed data); a 304 adds nothing. Freshness is measured from here.
    pub data_as_of_ms: Option<i64>,
    /// Entities removed because a complete snapshot no longer had them.
    pub removed: u64,
    /// Entities removed because the feed stopped reporting them.
    pub expired: u64,
    /// (Unix ms, updates) of the rate window: carried to a hall's consoles too.
    #[serde(default)]
    recent: VecDeque<(i64, u64)>,
    /// (items, rejects) of the last payloads.
    #[serde(skip)]
    recent_payloads: VecDeque<(u64, u64)>,
    #[serde(skip)]
    oversized_in_a_row: u32,
}

/// Withheld messages remembered per feed to count each once; past this the memory
/// starts again (a re-polled old message may then count twice).
pub const MAX_WITHHELD_KEYS: usize = 10_000;

impl FeedHealth {
    /// Counts a withheld message `key` under `why`, once.
    fn note_withheld(&mut self, why: &str, key: &str) {
        if self.withheld_keys.len() >= MAX_WITHHELD_KEYS {
            self.withheld_keys.clear();
        }
        if self.withheld_keys.insert(format!("{why}|{key}")) {
            *self.withheld.entry(why.to_owned()).or_default() += 1;
        }
    }

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

    /// Seconds since the last successful poll (the endpoint's health).
    pub fn age_s(&self, now_ms: i64) -> Option<f64> {
        self.last_ok_ms.map(|t| (now_ms - t).max(0) as f64 / 1000.0)
    }

    /// Age of the feed's newest data, seconds (what freshness is about).
    pub fn data_age_s(&self, now_ms: i64) -> Option<f64> {
        self.data_as_of_ms
            .map(|t| (now_ms - t).max(0) as f64 / 1000.0)
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
        // Not a reset of `oversized_in_a_row`: a paged feed decodes its first pages
        // before a later one is oversized; only a whole successful poll resets it.
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

/// Work waiting for the live state, in arrival order.
// Nearly every entry is an update: boxing it would cost an allocation per update to
// save space only on the rare snapshot marker.
#[allow(clippy::large_enum_variant)]
enum Pending {
    Update(FeedId, EntityUpdate, i64),
    /// A complete snapshot of the feed ended: what it did not report has gone. Looked
    /// for a sweep step a frame.
    Snapshot {
        feed: FeedId,
        seen: HashSet<String>,
        walk: FeedWalk,
        removed: u64,
    },
    /// A 304 (or a poll cut short): every entity of the feed is still there, as of
    /// `at_ms`. Marked a step a frame.
    Touch {
        feed: FeedId,
        at_ms: i64,
        walk: FeedWalk,
    },
}

/// Updates a feed event carries.
fn updates_in(event: &FeedEvent) -> usize {
    match event {
        FeedEvent::Batch { decoded, .. } => decoded.updates.len(),
        _ => 0,
    }
}

/// A walk over one feed's entities, [`SWEEP_SLOTS`] a call: its slots are listed
/// when the walk starts (the feed's own updates wait behind it, so the list stays
/// whole), so a small feed's snapshot costs what the feed holds, not the city.
#[derive(Default)]
struct FeedWalk {
    slots: Option<Vec<crate::state::Slot>>,
    next: usize,
}

impl FeedWalk {
    /// Visits up to `budget` of the feed's slots (stopping when `visit` says so, or at
    /// `deadline`); true when the walk is done. Returns the slots visited too.
    fn step(
        &mut self,
        state: &LiveState,
        feed: FeedId,
        budget: usize,
        deadline: Option<std::time::Instant>,
        mut visit: impl FnMut(crate::state::Slot, &crate::state::LiveEntity) -> bool,
    ) -> (bool, usize) {
        let slots = self.slots.get_or_insert_with(|| state.slots_of(feed));
        let start = self.next;
        let end = start.saturating_add(budget).min(slots.len());
        while self.next < end {
            let slot = slots[self.next];
            self.next += 1;
            if let Some(e) = state.entity(slot)
                && e.feed == feed
                && !visit(slot, e)
            {
                break;
            }
            if self.next.is_multiple_of(256)
                && deadline.is_some_and(|t| std::time::Instant::now() >= t)
            {
                break;
            }
        }
        (self.next >= slots.len(), self.next - start)
    }
}

/// A payload being taken in a part a frame: its updates not yet scored and queued.
struct Taking {
    feed: FeedId,
    received_at_ms: i64,
    rest: std::vec::IntoIter<EntityUpdate>,
    check: BatchCheck,
    rejected: usize,
}

/// What one poll in progress has reported so far.
#[derive(Default)]
struct PollTally {
    seen: HashSet<String>,
    /// Part of the poll was not taken in (quarantine): it is no complete snapshot.
    partial: bool,
}

/// Receives feed events and applies them to the live state.
pub struct Ingest {
    /// In a mutex only so the app can share `Ingest` across threads; one reader.
    rx: Mutex<Receiver<FeedEvent>>,
    /// Events received from the feeds and not yet taken in, and the updates they carry.
    inbox: VecDeque<FeedEvent>,
    inbox_updates: usize,
    /// The payload being taken in, a part a frame.
    taking: Option<Taking>,
    queue: VecDeque<Pending>,
    polls: Vec<PollTally>,
    last_expiry_ms: i64,
    /// The expiry sweep in progress, and the time it is for.
    expiry: Option<(Sweep, i64)>,
    pub health: Vec<FeedHealth>,
    /// Quality of each feed's data under `rules`.
    pub quality: Vec<FeedQuality>,
    /// Entity types and fields each feed has been seen to carry.
    pub schemas: Vec<ObservedSchema>,
    rules: QualityRules,
    feeds: Vec<FeedConfig>,
    /// Updates applied since the ingest began (what `pump` returned, summed).
    pub applied_total: u64,
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
            inbox: VecDeque::new(),
            inbox_updates: 0,
            taking: None,
            queue: VecDeque::new(),
            polls: feeds.iter().map(|_| PollTally::default()).collect(),
            last_expiry_ms: i64::MIN,
            expiry: None,
            health: feeds.iter().map(|f| FeedHealth::new(&f.name)).collect(),
            quality: vec![FeedQuality::default(); feeds.len()],
            schemas: vec![ObservedSchema::default(); feeds.len()],
            rules,
            feeds: feeds.to_vec(),
            applied_total: 0,
        }
    }

    /// Each feed's standing as the history records it: what a steward would call a
    /// change (freshness, quarantine, the last error, validity and completeness to
    /// the percent), not every poll's counters.
    pub fn health_summary(&self, feed: usize, now_ms: i64) -> Option<serde_json::Value> {
        let (config, health) = (self.feeds.get(feed)?, self.health.get(feed)?);
        let quality = self.quality.get(feed)?;
        let (freshness, _) =
            super::quality::freshness(health.data_as_of_ms, config.cadence_s(), now_ms);
        let percent = |v: f64| (v * 100.0).round() / 100.0;
        Some(serde_json::json!({
            "feed": config.name,
            "freshness": freshness,
            "quarantined": health.quarantined.as_ref().map(|q| q.reason.clone()),
            "last_error": health.last_error,
            "validity": percent(quality.validity()),
            "completeness": percent(quality.completeness()),
        }))
    }

    /// Updates received but not yet applied.
    pub fn backlog(&self) -> usize {
        self.queue.len() + self.taking.as_ref().map_or(0, |t| t.rest.len()) + self.inbox_updates
    }

    /// Takes in what the feeds sent and applies at most `max_updates` updates. Returns
    /// how many were applied; the rest wait for the next call.
    ///
    /// Nothing here is a whole-city pass: a payload is scored and queued a part at a
    /// time, no more than a call applies, and a snapshot's removals and a 304's marks
    /// go a sweep step ([`SWEEP_SLOTS`]) a call.
    pub fn pump(&mut self, state: &mut LiveState, max_updates: usize) -> usize {
        self.pump_within(state, max_updates, None)
    }

    /// [`Self::pump`] for a frame: stops at `deadline` (having applied at least
    /// [`MIN_UPDATES_PER_FRAME`] when there were that many).
    pub fn pump_within(
        &mut self,
        state: &mut LiveState,
        max_updates: usize,
        deadline: Option<std::time::Instant>,
    ) -> usize {
        let late = || deadline.is_some_and(|t| std::time::Instant::now() >= t);
        if let Ok(rx) = self.rx.lock() {
            for event in rx.try_iter() {
                self.inbox_updates += updates_in(&event);
                self.inbox.push_back(event);
            }
        }
        // Take in no more than this call can apply.
        let mut taken = 0usize;
        while taken < max_updates
            && self.queue.len() < max_updates
            && (self.queue.len() < MIN_UPDATES_PER_FRAME || !late())
        {
            if self.taking.is_some() {
                taken += self.take_part(RECEIVE_PART.min(max_updates - taken));
                continue;
            }
            let Some(event) = self.inbox.pop_front() else {
                break;
            };
            self.inbox_updates -= updates_in(&event);
            self.receive(event);
        }
        for (i, (f, h)) in self.feeds.iter().zip(&self.health).enumerate() {
            state.set_feed_standing(
                i as FeedId,
                FeedStanding {
                    stale_after_ms: Some(f.stale_after_ms()),
                    quarantined: h.quarantined.is_some(),
                },
            );
        }
        let mut applied = 0;
        let mut sweep_slots = SWEEP_SLOTS;
        while applied < max_updates {
            if applied >= MIN_UPDATES_PER_FRAME && applied % 256 == 0 && late() {
                break;
            }
            match self.queue.front_mut() {
                None => break,
                Some(Pending::Snapshot {
                    feed,
                    seen,
                    walk,
                    removed,
                }) => {
                    if sweep_slots == 0 {
                        break;
                    }
                    let feed = *feed;
                    let mut gone = Vec::new();
                    let (done, visited) =
                        walk.step(state, feed, sweep_slots, deadline, |slot, e| {
                            if !seen.contains(&e.id) {
                                gone.push(slot);
                            }
                            gone.len() < MAX_REMOVALS_PER_STEP
                        });
                    sweep_slots = sweep_slots.saturating_sub(visited.max(1));
                    for slot in gone {
                        *removed += u64::from(state.remove_slot(slot));
                    }
                    if !done {
                        break;
                    }
                    let removed = *removed;
                    if let Some(h) = self.health.get_mut(feed as usize) {
                        h.removed += removed;
                    }
                    self.queue.pop_front();
                }
                Some(Pending::Touch { feed, at_ms, walk }) => {
                    if sweep_slots == 0 {
                        break;
                    }
                    let (feed, at_ms) = (*feed, *at_ms);
                    let mut marked = Vec::new();
                    let (done, visited) =
                        walk.step(state, feed, sweep_slots, deadline, |slot, e| {
                            if e.seen_at_ms < at_ms {
                                marked.push(slot);
                            }
                            true
                        });
                    sweep_slots = sweep_slots.saturating_sub(visited.max(1));
                    for slot in marked {
                        state.touch_slot(slot, at_ms);
                    }
                    if !done {
                        break;
                    }
                    self.queue.pop_front();
                }
                Some(Pending::Update(..)) => {
                    let Some(Pending::Update(feed, update, received_at_ms)) =
                        self.queue.pop_front()
                    else {
                        unreachable!("the front is an update");
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
            }
        }
        self.applied_total += applied as u64;
        applied
    }

    /// Removes entities their feed has not reported for its expiry time (a number of
    /// cadences), as of `now_ms`. A pass starts at most once a second and goes a sweep
    /// step ([`SWEEP_SLOTS`]) a call. Returns how many went in this call.
    pub fn expire(&mut self, state: &mut LiveState, now_ms: i64) -> usize {
        self.expire_within(state, now_ms, None)
    }

    /// [`Self::expire`] for a frame: the step also stops at `deadline`.
    pub fn expire_within(
        &mut self,
        state: &mut LiveState,
        now_ms: i64,
        deadline: Option<std::time::Instant>,
    ) -> usize {
        if self.expiry.is_none() {
            if now_ms.saturating_sub(self.last_expiry_ms) < EXPIRE_EVERY_MS {
                return 0;
            }
            self.last_expiry_ms = now_ms;
            if self.feeds.iter().all(|f| f.expire_after_ms().is_none()) {
                return 0;
            }
            self.expiry = Some((Sweep::new(), now_ms));
        }
        let Some((sweep, at_ms)) = &mut self.expiry else {
            return 0;
        };
        let at_ms = *at_ms;
        let limits: Vec<Option<i64>> = self.feeds.iter().map(|f| f.expire_after_ms()).collect();
        let mut gone = Vec::new();
        let budget = Budget {
            slots: SWEEP_SLOTS,
            until: deadline,
        };
        let done = sweep.step_while(state, budget, |slot, e| {
            if let Some(Some(limit)) = limits.get(e.feed as usize)
                && at_ms - e.seen_at_ms > *limit
            {
                gone.push((slot, e.feed));
            }
            gone.len() < MAX_REMOVALS_PER_STEP
        });
        if done {
            self.expiry = None;
        }
        let mut total = 0;
        for (slot, feed) in gone {
            if state.remove_slot(slot) {
                total += 1;
                if let Some(h) = self.health.get_mut(feed as usize) {
                    h.expired += 1;
                }
            }
        }
        total
    }

    /// Scores and queues up to `n` updates of the payload being taken in; closes it
    /// when none are left. Returns how many were taken.
    fn take_part(&mut self, n: usize) -> usize {
        let Some(taking) = &mut self.taking else {
            return 0;
        };
        let i = taking.feed as usize;
        let mut part: Vec<EntityUpdate> = taking.rest.by_ref().take(n.max(1)).collect();
        let taken = part.len();
        if let Some(config) = self.feeds.get(i) {
            // Untyped GeoJSON features take their type from the feed, so feature `1`
            // of the hydrants is not bike station `1`.
            for u in &mut part {
                if u.entity_type == "Feature" {
                    u.entity_type = config.untyped_entity_type().to_string();
                }
            }
        }
        if let Some(h) = self.health.get_mut(i) {
            for note in part.iter().flat_map(|u| &u.notes) {
                *h.notes.entry(note.code().to_string()).or_default() += 1;
                if let crate::feeds::DecodeNote::ValuesCut { cut, .. } = note {
                    h.values_cut += cut;
                }
            }
            // An alert's time is when it was raised, not a reading: an alert feed is
            // as fresh as its last report.
            let received_at_ms = taking.received_at_ms;
            let newest = part
                .iter()
                .map(|u| match u.kind {
                    EntityKind::Alert { .. } => received_at_ms,
                    _ => as_of_ms(u.observed_at_ms, received_at_ms),
                })
                .max();
            h.data_as_of_ms = h.data_as_of_ms.max(newest);
        }
        if let Some(p) = self.polls.get_mut(i) {
            p.seen.extend(part.iter().map(|u| u.id.clone()));
        }
        if let (Some(q), Some(config)) = (self.quality.get_mut(i), self.feeds.get(i)) {
            q.check_part(
                &self.rules,
                config,
                &part,
                taking.received_at_ms,
                &mut taking.check,
            );
        }
        if let Some(schema) = self.schemas.get_mut(i) {
            // A sample is enough to learn a feed's schema.
            for u in part.iter().step_by(64) {
                schema.observe(u);
            }
        }
        let (feed, at) = (taking.feed, taking.received_at_ms);
        self.queue
            .extend(part.into_iter().map(|u| Pending::Update(feed, u, at)));
        if taking.rest.len() == 0
            && let Some(done) = self.taking.take()
            && let Some(q) = self.quality.get_mut(i)
        {
            q.finish_batch(done.check, done.rejected);
        }
        taken
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
                        if let Some(p) = self.polls.get_mut(i) {
                            p.partial = true;
                        }
                        return;
                    }
                    for (why, key) in &decoded.withheld {
                        h.note_withheld(why, key);
                    }
                    h.rejected += decoded.rejects.len() as u64;
                    for r in &decoded.rejects {
                        *h.reasons.entry(r.reason.as_str().to_string()).or_default() += 1;
                    }
                    let room = MAX_REJECT_EXAMPLES.saturating_sub(h.reject_examples.len());
                    h.reject_examples
                        .extend(decoded.rejects.iter().take(room).cloned());
                    let items = (decoded.updates.len() + decoded.rejects.len()) as u64;
                    h.note_payload(items, decoded.rejects.len() as u64, received_at_ms);
                    if h.quarantined.is_some() {
                        h.dropped += decoded.updates.len() as u64;
                        if let Some(p) = self.polls.get_mut(i) {
                            p.partial = true;
                        }
                        return;
                    }
                }
                if let Some(p) = self.polls.get_mut(i) {
                    // A broken item of an entity does not mean the entity has gone.
                    p.seen
                        .extend(decoded.rejects.iter().filter_map(|r| r.item_id.clone()));
                }
                if let Some(p) = self.polls.get_mut(i) {
                    // Room for the payload's ids now, not doubling part by part.
                    p.seen.reserve(decoded.updates.len());
                }
                // Scored and queued a part a frame (see `take_part`).
                self.taking = Some(Taking {
                    feed,
                    received_at_ms,
                    check: BatchCheck::with_capacity(decoded.updates.len()),
                    rest: decoded.updates.into_iter(),
                    rejected: decoded.rejects.len(),
                });
                if self.taking.as_ref().is_some_and(|t| t.rest.len() == 0) {
                    self.take_part(0);
                }
            }
            FeedEvent::PollOk {
                feed,
                at_ms,
                not_modified,
                complete,
                ..
            } => {
                let i = feed as usize;
                let tally = self
                    .polls
                    .get_mut(i)
                    .map(std::mem::take)
                    .unwrap_or_default();
                if let Some(h) = self.health.get_mut(i) {
                    h.polls_ok += 1;
                    h.last_ok_ms = Some(at_ms);
                    h.oversized_in_a_row = 0;
                }
                let push = self.feeds.get(i).is_some_and(|f| f.kind.is_push());
                if push {
                    // A push feed's keep-alive: its entities expire by their cadence.
                } else if not_modified || !complete {
                    // Nothing changed (on some pages): every entity is still there, but
                    // none is newer; which ones the unchanged pages hold is not known.
                    self.queue.push_back(Pending::Touch {
                        feed,
                        at_ms,
                        walk: FeedWalk::default(),
                    });
                } else if complete
                    && !tally.partial
                    && self.feeds.get(i).is_some_and(FeedConfig::removes_missing)
                    && self.health.get(i).is_some_and(|h| h.quarantined.is_none())
                {
                    self.queue.push_back(Pending::Snapshot {
                        feed,
                        seen: tally.seen,
                        walk: FeedWalk::default(),
                        removed: 0,
                    });
                }
            }
            FeedEvent::PollFailed {
                feed,
                at_ms,
                reason,
                error,
                ..
            } => {
                // Whatever pages arrived are no complete snapshot.
                if let Some(p) = self.polls.get_mut(feed as usize) {
                    *p = PollTally::default();
                }
                if let Some(h) = self.health.get_mut(feed as usize) {
                    h.polls_failed += 1;
                    *h.poll_errors.entry(reason.to_string()).or_default() += 1;
                    if reason == "too_large" {
                        h.oversized_in_a_row += 1;
                        if h.oversized_in_a_row >= MAX_OVERSIZED_IN_A_ROW {
                            h.quarantine(format!("oversized payloads: {error}"), at_ms);
                        }
                    }
                    h.last_error = Some(error);
                }
            }
            FeedEvent::Refused { feed, counts, .. } => {
                if let Some(h) = self.health.get_mut(feed as usize) {
                    for (why, n) in counts {
                        *h.refused.entry(why).or_default() += n;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::{DecodeNote, Decoded, EntityKind, Reject, RejectReason};
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
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn reject() -> Reject {
        Reject {
            reason: RejectReason::MissingId,
            item_id: None,
            path: None,
            detail: String::new(),
        }
    }

    fn feeds(extra: &str) -> Vec<FeedConfig> {
        parse_feeds(&format!(
            "[[feed]]\nname='ambulances'\nkind='ngsi-ld'\nurl='http://h/e'\ndomain='health'\ninterval_s=5\n{extra}\n"
        ))
        .unwrap()
    }

    fn batch(feed: u32, ids: &[&str], observed: Option<i64>, at: i64) -> FeedEvent {
        FeedEvent::Batch {
            feed,
            decoded: Decoded {
                updates: ids
                    .iter()
                    .map(|id| EntityUpdate {
                        observed_at_ms: observed,
                        ..update(id)
                    })
                    .collect(),
                rejects: Vec::new(),
                withheld: Default::default(),
            },
            received_at_ms: at,
        }
    }

    fn ok(feed: u32, at: i64, not_modified: bool, complete: bool) -> FeedEvent {
        FeedEvent::PollOk {
            feed,
            at_ms: at,
            not_modified,
            complete,
            bytes: 0,
        }
    }

    fn ids(state: &LiveState) -> Vec<String> {
        let mut ids: Vec<String> = state.iter().map(|(_, e)| e.id.clone()).collect();
        ids.sort();
        ids
    }

    const T: i64 = 1_795_946_400_000;

    #[test]
    fn a_withheld_message_counts_once_however_often_it_is_polled() {
        let mut h = FeedHealth::default();
        for _ in 0..5 {
            h.note_withheld("exercise", "pelastus,DRILL-1");
        }
        h.note_withheld("exercise", "pelastus,DRILL-2");
        h.note_withheld("test", "pelastus,DRILL-1");
        assert_eq!(
            h.withheld,
            BTreeMap::from([("exercise".to_string(), 2), ("test".to_string(), 1)])
        );
    }

    #[test]
    fn slow_frames_give_the_ingest_a_share_of_their_time() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        assert_eq!(ingest_budget(ms(16)), INGEST_FRAME_BUDGET);
        assert_eq!(ingest_budget(ms(0)), INGEST_FRAME_BUDGET);
        assert_eq!(ingest_budget(ms(700)), ms(175));
        assert_eq!(
            ingest_budget(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_city_sized_payload_is_taken_in_a_part_a_frame_and_scored_as_one() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // 150,000 ambulances in one payload (a whole city's GeoJSON, say).
        let all: Vec<String> = (0..150_000).map(|i| format!("a{i}")).collect();
        let ids_of = |range: std::ops::Range<usize>| -> Vec<&str> {
            all[range].iter().map(String::as_str).collect()
        };
        tx.send(batch(0, &ids_of(0..150_000), Some(T), T)).unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        let mut frames = 0;
        while state.len() < 150_000 {
            let before = ingest.quality[0].checked;
            let applied = ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
            // A frame scores and applies no more than its share.
            assert!(applied <= MAX_UPDATES_PER_FRAME);
            assert!(ingest.quality[0].checked - before <= MAX_UPDATES_PER_FRAME as u64);
            frames += 1;
            assert!(frames < 20, "stuck at {}", state.len());
        }
        assert_eq!(frames, 6);
        // One payload, however many parts it was scored in.
        assert_eq!(ingest.quality[0].checked, 150_000);
        assert_eq!(ingest.quality[0].history.len(), 1);
        assert_eq!(ingest.health[0].recent_payloads.len(), 1);

        // The next poll reports all but the first 40,000: they leave, the removals a
        // sweep step a frame, and the updates after the snapshot wait for it.
        tx.send(batch(0, &ids_of(40_000..150_000), Some(T + 5000), T + 5000))
            .unwrap();
        tx.send(ok(0, T + 5000, false, true)).unwrap();
        tx.send(batch(0, &["late"], Some(T + 6000), T + 6000))
            .unwrap();
        let mut frames = 0;
        while ingest.backlog() > 0 || state.get(0, "late").is_none() {
            ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
            frames += 1;
            assert!(frames < 40, "stuck at {}", state.len());
        }
        assert_eq!(state.len(), 110_001);
        assert!(state.get(0, "a39999").is_none() && state.get(0, "a40000").is_some());
        assert_eq!(ingest.health[0].removed, 40_000);
        // 150,000 slots at SWEEP_SLOTS a frame: more than one frame for the removals.
        assert!(frames >= 5 + 150_000 / SWEEP_SLOTS, "{frames}");

        // A 304 marks every entity as still there, a step at a time too.
        tx.send(ok(0, T + 60_000, true, true)).unwrap();
        for _ in 0..10 {
            ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
        }
        assert!(state.iter().all(|(_, e)| e.seen_at_ms >= T + 6000));
        assert_eq!(state.get(0, "a40000").unwrap().seen_at_ms, T + 60_000);
    }

    #[test]
    fn a_complete_snapshot_without_an_entity_removes_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        tx.send(batch(0, &["a1", "a2", "a3"], Some(T), T)).unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.len(), 3);
        // Three ambulances, then one: two have left the feed.
        tx.send(batch(0, &["a2"], Some(T + 5000), T + 5000))
            .unwrap();
        tx.send(ok(0, T + 5000, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(ids(&state), vec!["a2"]);
        assert_eq!(ingest.health[0].removed, 2);
        // A poll that failed half way, or had unchanged pages, proves nothing.
        tx.send(batch(0, &["a4"], Some(T + 9000), T + 9000))
            .unwrap();
        tx.send(FeedEvent::PollFailed {
            feed: 0,
            at_ms: T + 9000,
            reason: "timeout",
            error: "timed out".into(),
            retry_in: std::time::Duration::from_secs(1),
        })
        .unwrap();
        tx.send(batch(0, &["a5"], Some(T + 10_000), T + 10_000))
            .unwrap();
        tx.send(ok(0, T + 10_000, false, false)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(ids(&state), vec!["a2", "a4", "a5"]);
        // Configured off, a feed's polls are not snapshots.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds("remove_missing = false"), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        tx.send(batch(0, &["a1", "a2"], Some(T), T)).unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        tx.send(batch(0, &["a2"], Some(T + 1), T + 1)).unwrap();
        tx.send(ok(0, T + 1, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn entities_not_reported_for_their_expiry_time_go() {
        // Cadence 5 s: stale after 10 cadences (50 s), gone after 30 (150 s).
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds("remove_missing = false"), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        tx.send(batch(0, &["old", "kept"], Some(T), T)).unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        tx.send(batch(0, &["kept"], Some(T + 100_000), T + 100_000))
            .unwrap();
        ingest.pump(&mut state, usize::MAX);
        let old = state.get(0, "old").unwrap().clone();
        assert_eq!(
            state.standing(&old, T + 50_000),
            crate::state::Standing::Current
        );
        assert_eq!(
            state.standing(&old, T + 50_001),
            crate::state::Standing::Stale
        );
        assert_eq!(ingest.expire(&mut state, T + 150_000), 0);
        assert_eq!(ingest.expire(&mut state, T + 150_001), 0, "once a second");
        assert_eq!(ingest.expire(&mut state, T + 151_000), 1);
        assert_eq!(ids(&state), vec!["kept"]);
        assert_eq!(ingest.health[0].expired, 1);
        // A 304 says everything is still there: nothing expires, nothing is newer.
        tx.send(ok(0, T + 240_000, true, false)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(ingest.expire(&mut state, T + 250_001), 0);
        assert_eq!(state.len(), 1);
        assert_eq!(ingest.health[0].data_as_of_ms, Some(T + 100_000));
    }

    #[test]
    fn freshness_is_the_age_of_the_data_not_of_the_poll() {
        use crate::governance::quality::{Freshness, freshness};
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // Answered promptly, with readings from 2020.
        let in_2020 = 1_590_000_000_000;
        tx.send(batch(0, &["a1"], Some(in_2020), T)).unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        let h = &ingest.health[0];
        assert_eq!(h.last_ok_ms, Some(T));
        assert_eq!(freshness(h.data_as_of_ms, 5.0, T).0, Freshness::Stale);
        assert_eq!(
            state.standing(state.get(0, "a1").unwrap(), T),
            crate::state::Standing::Stale
        );
        // Current readings are fresh; 304s after them add no freshness.
        tx.send(batch(0, &["a1"], Some(T + 1000), T + 1000))
            .unwrap();
        tx.send(ok(0, T + 1000, false, true)).unwrap();
        for k in 1..=20 {
            tx.send(ok(0, T + 1000 + k * 5000, true, false)).unwrap();
        }
        ingest.pump(&mut state, usize::MAX);
        let h = &ingest.health[0];
        assert_eq!(
            freshness(h.data_as_of_ms, 5.0, T + 2000).0,
            Freshness::Fresh
        );
        assert_eq!(h.last_ok_ms, Some(T + 101_000));
        assert_eq!(
            freshness(h.data_as_of_ms, 5.0, T + 101_000).0,
            Freshness::Stale
        );
        // Untimed data is as of its arrival.
        tx.send(batch(0, &["a9"], None, T + 200_000)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(ingest.health[0].data_as_of_ms, Some(T + 200_000));
    }

    #[test]
    fn a_quarantined_feed_is_held_out() {
        let feeds = parse_feeds(
            "[[feed]]\nname='bad'\nkind='sim'\ndomain='urban'\n[[feed]]\nname='good'\nkind='sim'\ndomain='urban'\n",
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds, rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        tx.send(batch(0, &["x1", "x2"], Some(T), T)).unwrap();
        tx.send(batch(1, &["y1"], Some(T), T)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        // Then it sends garbage (under 5 % of its items valid).
        tx.send(FeedEvent::Batch {
            feed: 0,
            decoded: Decoded {
                updates: Vec::new(),
                rejects: (0..60).map(|_| reject()).collect(),
                withheld: Default::default(),
            },
            received_at_ms: T + 1000,
        })
        .unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert!(ingest.health[0].quarantined.is_some());
        let x1 = state.get(0, "x1").unwrap();
        assert_eq!(
            state.standing(x1, T + 1000),
            crate::state::Standing::Quarantined
        );
        let y1 = state.get(1, "y1").unwrap();
        assert_eq!(
            state.standing(y1, T + 1000),
            crate::state::Standing::Current
        );
        // Its polls while quarantined remove nothing.
        tx.send(ok(0, T + 2000, false, true)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.count_for_feed(0), 2);
    }

    #[test]
    fn requests_a_push_endpoint_refused_show_in_its_health_not_as_failures() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let refused = |pairs: &[(&str, u64)]| FeedEvent::Refused {
            feed: 0,
            at_ms: T,
            counts: pairs.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
        };
        tx.send(refused(&[("unauthorized", 40), ("rate_limited", 7)]))
            .unwrap();
        tx.send(refused(&[("unauthorized", 2)])).unwrap();
        ingest.pump(&mut state, usize::MAX);
        let h = &ingest.health[0];
        assert_eq!(h.refused.get("unauthorized"), Some(&42));
        assert_eq!(h.refused.get("rate_limited"), Some(&7));
        assert_eq!((h.polls_failed, h.rejected), (0, 0));
        assert!(h.quarantined.is_none() && h.last_error.is_none());
    }

    #[test]
    fn oversized_later_pages_count_in_a_row() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let too_large = |at| FeedEvent::PollFailed {
            feed: 0,
            at_ms: at,
            reason: "too_large",
            error: "payload of 9 bytes exceeds the 1-byte limit".into(),
            retry_in: std::time::Duration::from_secs(1),
        };
        // Page 0 decodes every time; page 1 is oversized every time.
        for k in 0..2 {
            tx.send(batch(0, &["a1"], Some(T + k), T + k)).unwrap();
            tx.send(too_large(T + k)).unwrap();
        }
        ingest.pump(&mut state, usize::MAX);
        let q = ingest.health[0].quarantined.clone().expect("quarantined");
        assert!(q.reason.contains("oversized"), "{}", q.reason);
        // A whole poll that succeeds in between resets the count.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        tx.send(too_large(T)).unwrap();
        tx.send(ok(0, T + 1, false, true)).unwrap();
        tx.send(too_large(T + 2)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert!(ingest.health[0].quarantined.is_none());
    }

    #[test]
    fn untyped_geojson_features_take_the_feeds_type() {
        let feeds = parse_feeds(
            "[[feed]]\nname='hydrants'\nkind='geojson'\nurl='http://h/h'\ndomain='utilities'\n\
             [[feed]]\nname='bikes'\nkind='geojson'\nurl='http://h/b'\ndomain='traffic'\nentity_type='BikeHireDockingStation'\n",
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds, rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        for feed in [0, 1] {
            tx.send(FeedEvent::Batch {
                feed,
                decoded: Decoded {
                    updates: vec![EntityUpdate {
                        entity_type: "Feature".into(),
                        ..update("1")
                    }],
                    rejects: Vec::new(),
                    withheld: Default::default(),
                },
                received_at_ms: T,
            })
            .unwrap();
        }
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.get(0, "1").unwrap().entity_type, "hydrants");
        assert_eq!(
            state.get(1, "1").unwrap().entity_type,
            "BikeHireDockingStation"
        );
    }

    #[test]
    fn a_feed_of_only_rejects_is_not_valid_and_shows_its_first_rejects() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let rejects_mixed = || {
            crate::feeds::decode::decode_ngsi_ld(include_bytes!(
                "../../tests/data/sdm/rejects-mixed.jsonld"
            ))
            .unwrap()
        };
        tx.send(FeedEvent::Batch {
            feed: 0,
            decoded: rejects_mixed(),
            received_at_ms: T,
        })
        .unwrap();
        tx.send(ok(0, T, false, true)).unwrap();
        tx.send(FeedEvent::PollFailed {
            feed: 0,
            at_ms: T + 5000,
            reason: "timeout",
            error: "timed out".into(),
            retry_in: std::time::Duration::from_secs(1),
        })
        .unwrap();
        ingest.pump(&mut state, usize::MAX);
        let quality = &ingest.quality[0];
        assert_eq!(quality.validity(), 0.0);
        assert_eq!(quality.completeness(), 0.0);
        let h = &ingest.health[0];
        assert_eq!(h.rejected, 5);
        // Item reasons and poll failures are told apart.
        let reasons: Vec<_> = h.reasons.keys().map(String::as_str).collect();
        assert_eq!(
            reasons,
            [
                "bad_coordinates",
                "bad_timestamp",
                "missing_id",
                "missing_type",
                "wrong_value_type"
            ]
        );
        assert_eq!(h.poll_errors.get("timeout"), Some(&1));
        let examples: Vec<_> = h
            .reject_examples
            .iter()
            .map(|r| (r.item_id.is_some(), r.path.as_deref()))
            .collect();
        assert_eq!(
            examples,
            [
                (false, Some("id")),
                (true, Some("type")),
                (true, Some("location.value.coordinates[0]")),
                (true, Some("averageVehicleSpeed.value")),
                (true, Some("dateObserved.value")),
            ]
        );
        // The first few stay: a later poll's rejects do not push them out.
        tx.send(FeedEvent::Batch {
            feed: 0,
            decoded: Decoded {
                updates: Vec::new(),
                rejects: vec![reject()],
                withheld: Default::default(),
            },
            received_at_ms: T + 10_000,
        })
        .unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(ingest.health[0].reject_examples.len(), MAX_REJECT_EXAMPLES);
        assert_eq!(
            ingest.health[0].reject_examples[0].path.as_deref(),
            Some("id")
        );
    }

    #[test]
    fn decode_notes_are_counted_per_feed() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ingest = Ingest::new(&feeds(""), rx);
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let noted = |id: &str, notes: Vec<DecodeNote>| EntityUpdate {
            notes,
            ..update(id)
        };
        tx.send(FeedEvent::Batch {
            feed: 0,
            decoded: Decoded {
                updates: vec![
                    noted(
                        "a",
                        vec![
                            DecodeNote::GeometryWrapped {
                                path: "geometry".into(),
                            },
                            DecodeNote::ValuesCut {
                                path: "refSeeAlso".into(),
                                cut: 999_000,
                            },
                        ],
                    ),
                    noted(
                        "b",
                        vec![DecodeNote::GeometryWrapped {
                            path: "geometry".into(),
                        }],
                    ),
                    noted("c", vec![]),
                ],
                rejects: Vec::new(),
                withheld: Default::default(),
            },
            received_at_ms: T,
        })
        .unwrap();
        ingest.pump(&mut state, usize::MAX);
        let h = &ingest.health[0];
        assert_eq!(h.notes.get("geometry_wrapped"), Some(&2));
        assert_eq!(h.notes.get("values_cut"), Some(&1));
        assert_eq!(h.values_cut, 999_000);
        // The entity keeps its notes for the inspector.
        assert_eq!(state.get(0, "a").unwrap().notes.len(), 2);
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
                withheld: Default::default(),
            },
            received_at_ms: at,
        };
        // Validity 6 % is poor but not nothing: kept, and counted.
        tx.send(batch(0, 2, 30, 500)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert!(ingest.health[0].quarantined.is_none());
        // Under 5 % valid over the last payloads: quarantined.
        tx.send(batch(0, 0, 400, 1_000)).unwrap();
        tx.send(batch(0, 1, 0, 1_000)).unwrap();
        tx.send(batch(1, 5, 0, 1_000)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        let q = ingest.health[0].quarantined.clone().expect("quarantined");
        assert!(q.reason.contains("% of items rejected"), "{}", q.reason);
        assert_eq!(ingest.health[0].dropped, 1);
        assert!(ingest.health[1].quarantined.is_none());
        assert_eq!(state.count_for_feed(1), 5, "the good feed is untouched");
        // While quarantined its data is held out (the two taken before stay, shown
        // as of a quarantined feed) …
        tx.send(batch(0, 3, 0, 2_000)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert_eq!(state.count_for_feed(0), 2);
        // … and after the quarantine it is tried again.
        tx.send(batch(0, 3, 0, 1_000 + QUARANTINE_MS)).unwrap();
        ingest.pump(&mut state, usize::MAX);
        assert!(ingest.health[0].quarantined.is_none());
        assert_eq!(state.count_for_feed(0), 3);
    }
}
