//! `zhongshu record`: the feeds run headless (as `feeds-check` runs them) and every
//! change to the live state recorded into a history.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{FeedMeta, HistoryOptions, Recorder, WriterStats};
use crate::clock::unix_ms_now;
use crate::feeds::config::{FeedConfig, FeedsSetup};
use crate::governance::health::Ingest;
use crate::governance::quality::QualityRules;
use crate::map::CityMap;
use crate::state::LiveState;

/// What a recording did.
#[derive(Clone, Debug, Serialize)]
pub struct RecordReport {
    pub history: String,
    pub seconds: f64,
    /// Changes handed to the recorder, and those it had to drop being behind.
    pub changes: u64,
    pub dropped: u64,
    pub entities_at_end: usize,
    #[serde(flatten)]
    pub writer: WriterStats,
}

/// The feeds as the history names them.
pub fn feed_metas(feeds: &[FeedConfig]) -> Vec<FeedMeta> {
    feeds
        .iter()
        .enumerate()
        .map(|(i, f)| FeedMeta {
            id: i as u32,
            name: f.name.clone(),
            domain: f.domain.as_str().to_string(),
        })
        .collect()
}

/// Feeds standing for a history's: their names and domains (what the views show of
/// them), nothing to poll.
pub fn feed_configs(metas: &[FeedMeta]) -> Vec<FeedConfig> {
    let base: FeedConfig =
        serde_json::from_value(serde_json::json!({"name": "", "kind": "sim", "domain": "urban"}))
            .expect("a simulated feed needs only a name and a domain");
    // Feed ids are places in the list: each keeps its place, gaps filled.
    let n = metas
        .iter()
        .map(|m| m.id as usize + 1)
        .max()
        .unwrap_or(0)
        .min(u16::MAX as usize);
    (0..n)
        .map(|i| {
            let mut feed = base.clone();
            match metas.iter().find(|m| m.id as usize == i) {
                Some(m) => {
                    feed.name = m.name.clone();
                    // A domain this build does not know shows as urban management.
                    feed.domain = serde_json::from_value(m.domain.as_str().into())
                        .unwrap_or(crate::model::Domain::Urban);
                }
                None => feed.name = format!("feed {i}"),
            }
            feed
        })
        .collect()
}

/// Hands the state's journal and each feed's health (once a second) to `recorder`;
/// what the live path calls after taking updates in.
pub struct RecordTap {
    last_health_ms: i64,
    pub changes: u64,
}

impl Default for RecordTap {
    fn default() -> Self {
        Self {
            last_health_ms: i64::MIN,
            changes: 0,
        }
    }
}

impl RecordTap {
    pub fn tap(
        &mut self,
        recorder: &Recorder,
        state: &mut LiveState,
        ingest: &Ingest,
        now_ms: i64,
    ) {
        let journal = state.drain_journal();
        self.changes += journal.len() as u64;
        recorder.journal(now_ms, journal);
        if now_ms >= self.last_health_ms.saturating_add(1_000) {
            self.last_health_ms = now_ms;
            for feed in 0..ingest.health.len() {
                if let Some(h) = ingest.health_summary(feed, now_ms) {
                    recorder.health(feed as u32, now_ms, h);
                }
            }
        }
    }
}

/// Runs `setup`'s feeds on `city` for `for_secs`, recording into `dir`.
pub fn record_for(
    setup: &FeedsSetup,
    city: &CityMap,
    for_secs: f64,
    dir: &Path,
    options: HistoryOptions,
) -> anyhow::Result<RecordReport> {
    let recorder = Recorder::start(dir, feed_metas(&setup.feeds), options)?;
    let mut state = LiveState::new(city.frame);
    state.keep_journal(true);
    let rules = QualityRules::for_city(city.bbox_wgs84).with_ranges(setup.rules.clone());
    let (running, rx) = crate::feeds::start_feeds(&setup.feeds, &setup.areas, city, 1);
    let mut ingest = Ingest::with_rules(&setup.feeds, rx, rules);
    let mut tap = RecordTap::default();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(for_secs);
    while Instant::now() < until {
        let now = unix_ms_now();
        ingest.pump(&mut state, usize::MAX);
        ingest.expire(&mut state, now);
        tap.tap(&recorder, &mut state, &ingest, now);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(running);
    let now = unix_ms_now();
    ingest.pump(&mut state, usize::MAX);
    tap.tap(&recorder, &mut state, &ingest, now);
    let dropped = recorder.dropped();
    let writer = recorder.finish();
    Ok(RecordReport {
        history: dir.display().to_string(),
        seconds: started.elapsed().as_secs_f64(),
        changes: tap.changes,
        dropped,
        entities_at_end: state.len(),
        writer,
    })
}
