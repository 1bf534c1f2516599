//! The live hub inside the app: running feeds, the ingest pump (bounded per frame so
//! the frame never waits), the live state, and which sub-brain layers are shown.

use std::collections::BTreeMap;

use bevy::prelude::*;

use super::{AppSystems, City};
use crate::feeds::config::FeedConfig;
use crate::feeds::{Domain, RunningFeeds, start_feeds};
use crate::governance::health::Ingest;
use crate::state::LiveState;

pub use crate::governance::health::MAX_UPDATES_PER_FRAME;

/// Everything live.
#[derive(Resource)]
pub struct Live {
    pub feeds: Vec<FeedConfig>,
    pub state: LiveState,
    pub ingest: Ingest,
    _running: Option<RunningFeeds>,
    /// A console of a hall polls nothing: it follows the hub's live layers.
    pub hall: Option<HallLive>,
    /// The history being recorded (`--history`), and what hands it the changes.
    pub recorder: Option<(crate::history::Recorder, crate::history::record::RecordTap)>,
    /// The city as it stood at the timeline's past instant, shown instead of `state`
    /// (which goes on taking in the feeds and recording).
    pub replay: Option<LiveState>,
    /// Counts the times the state shown was replaced (entering or leaving the past,
    /// a seek): slots of one are not slots of the other, so the layers redraw all.
    pub shown_epoch: u64,
    /// With the past shown: each feed's health as recorded then (the history's
    /// health lines), which the sub-brains panel shows instead of now's.
    pub replay_health: std::collections::BTreeMap<u32, serde_json::Value>,
}

/// A console's share of the hall's live layers.
pub struct HallLive {
    follower: crate::hall::live::Follower,
    pub applier: crate::hall::live::LiveApplier,
}

impl Live {
    /// Every feed has answered (or failed) at least once and its updates are applied:
    /// the live layers are drawn as far as they can be (pictures wait for this).
    pub fn feeds_answered(&self) -> bool {
        self.ingest.backlog() == 0
            && self
                .ingest
                .health
                .iter()
                .all(|h| h.polls_ok + h.polls_failed > 0)
    }

    pub fn new(
        feeds: Vec<FeedConfig>,
        state: LiveState,
        ingest: Ingest,
        running: RunningFeeds,
    ) -> Self {
        Self {
            feeds,
            state,
            ingest,
            _running: Some(running),
            hall: None,
            recorder: None,
            replay: None,
            shown_epoch: 0,
            replay_health: Default::default(),
        }
    }

    /// The state the views draw: the past while the timeline shows it, else now.
    pub fn shown(&self) -> &LiveState {
        self.replay.as_ref().unwrap_or(&self.state)
    }

    /// Shows `past` (or now, with `None`) from this frame on.
    pub fn show(&mut self, past: Option<LiveState>) {
        if past.is_none() {
            self.replay_health.clear();
        }
        self.replay = past;
        self.shown_epoch += 1;
    }

    /// Why the hall's live layers may be behind, in a console of a hall.
    pub fn hall_trouble(&self) -> Option<&str> {
        self.hall.as_ref()?.applier.trouble.as_deref()
    }

    /// The domain of the feed an entity came from.
    pub fn domain_of(&self, feed: u32) -> Option<Domain> {
        self.feeds.get(feed as usize).map(|f| f.domain)
    }
}

/// Which sub-brain layers are shown.
#[derive(Resource, Debug, Clone)]
pub struct DomainVisibility(pub BTreeMap<Domain, bool>);

impl Default for DomainVisibility {
    fn default() -> Self {
        Self(Domain::ALL.iter().map(|&d| (d, true)).collect())
    }
}

impl DomainVisibility {
    pub fn is_visible(&self, d: Domain) -> bool {
        self.0.get(&d).copied().unwrap_or(true)
    }
}

/// Slots of the shown state ([`Live::shown`]) changed this frame, for the layers
/// to redraw.
#[derive(Resource, Default)]
pub struct ChangedSlots(pub Vec<u32>);

/// Slots of the live state (now) changed this frame: what the desk reads for alerts
/// and units, whatever the timeline shows.
#[derive(Resource, Default)]
pub struct LiveChangedSlots(pub Vec<u32>);

/// Feeds to start, chosen on the command line.
#[derive(Resource, Clone)]
pub struct FeedSetup {
    pub feeds: Vec<FeedConfig>,
    pub ranges: Vec<crate::feeds::config::RangeRule>,
    /// The feeds file's `[[area]]` gazetteer for CAP alerts.
    pub areas: Vec<crate::feeds::config::AreaConfig>,
    pub seed: u64,
    /// A console of a hall: follow the hub's live layers instead of polling.
    pub hall: Option<(crate::nats::Nats, String)>,
    /// Record the live changes into this history folder.
    pub history: Option<std::path::PathBuf>,
    /// Show this recorded state instead of running the feeds.
    pub past: Option<std::sync::Arc<crate::history::Snapshot>>,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<DomainVisibility>()
        .init_resource::<ChangedSlots>()
        .init_resource::<LiveChangedSlots>()
        .add_systems(Startup, start_live)
        .add_systems(Update, pump_feeds.in_set(AppSystems::Apply));
}

fn start_live(mut commands: Commands, setup: Res<FeedSetup>, city: Res<City>) {
    if let Some(snap) = &setup.past {
        // The city as it stood: the recorded state, its feeds, nothing polled.
        let feeds = crate::history::record::feed_configs(&snap.feeds);
        let (_tx, rx) = std::sync::mpsc::channel();
        commands.insert_resource(Live {
            ingest: Ingest::new(&feeds, rx),
            feeds,
            state: crate::history::state_at::live_state(snap, city.map.frame),
            _running: None,
            hall: None,
            recorder: None,
            replay: None,
            shown_epoch: 0,
            replay_health: Default::default(),
        });
        return;
    }
    if let Some((nats, hall)) = &setup.hall {
        let (_tx, rx) = std::sync::mpsc::channel();
        let live = match crate::hall::live::Follower::start(nats, hall) {
            Ok(follower) => Some(HallLive {
                follower,
                applier: Default::default(),
            }),
            Err(e) => {
                error!("hall {hall}: {e}");
                None
            }
        };
        commands.insert_resource(Live {
            feeds: Vec::new(),
            state: LiveState::new(city.map.frame),
            ingest: Ingest::new(&[], rx),
            _running: None,
            hall: live,
            recorder: None,
            replay: None,
            shown_epoch: 0,
            replay_health: Default::default(),
        });
        return;
    }
    let (running, rx) = start_feeds(&setup.feeds, &setup.areas, &city.map, setup.seed);
    let rules = crate::governance::quality::QualityRules::for_city(city.map.bbox_wgs84)
        .with_ranges(setup.ranges.clone());
    let ingest = Ingest::with_rules(&setup.feeds, rx, rules);
    let mut live = Live::new(
        setup.feeds.clone(),
        LiveState::new(city.map.frame),
        ingest,
        running,
    );
    if let Some(dir) = &setup.history {
        let metas = crate::history::record::feed_metas(&setup.feeds);
        // A history that cannot be written is said; the city stays live.
        match crate::history::Recorder::start(dir, metas, Default::default()) {
            Ok(recorder) => {
                info!("recording the history into {}", dir.display());
                live.state.keep_journal(true);
                live.recorder = Some((recorder, Default::default()));
            }
            Err(e) => error!("not recording the history: {e:#}"),
        }
    }
    commands.insert_resource(live);
}

pub(super) fn pump_feeds(
    live: Option<ResMut<Live>>,
    mut changed: ResMut<ChangedSlots>,
    mut live_changed: ResMut<LiveChangedSlots>,
    time: Res<Time>,
) {
    let Some(mut live) = live else { return };
    pump(&mut live, &time);
    // Now's changes go to the desk; the views redraw what changed in what they show.
    live_changed.0 = live.state.drain_changed();
    changed.0 = match &mut live.replay {
        Some(past) => past.drain_changed(),
        None => live_changed.0.clone(),
    };
}

/// Takes in what the feeds (or the hall) sent into the live state.
fn pump(live: &mut Live, time: &Time) {
    let Live {
        feeds,
        state,
        ingest,
        hall,
        recorder,
        _running,
        ..
    } = live;
    if _running.is_none() && hall.is_none() {
        // A past state shown: nothing comes in, nothing expires.
        return;
    }
    if let Some(hall) = hall {
        hall.applier
            .pump(&hall.follower.rx, state, MAX_UPDATES_PER_FRAME);
        // The hub's feeds, health and quality: what the panels show.
        if let Some(status) = hall.applier.status.take() {
            if *feeds != status.feeds {
                *feeds = status.feeds;
                let (_tx, rx) = std::sync::mpsc::channel();
                *ingest = Ingest::new(feeds, rx);
            }
            ingest.health = status.health;
            ingest.quality = status.quality;
        }
        // Standings (stale after, quarantined) from the hub's health; the hub
        // expires and removes, and says so.
        ingest.pump(state, 0);
        return;
    }
    // The ingest's share of the frame: what is left waits for the next.
    let deadline =
        std::time::Instant::now() + crate::governance::health::ingest_budget(time.delta());
    ingest.pump_within(state, MAX_UPDATES_PER_FRAME, Some(deadline));
    let now_ms = crate::clock::unix_ms_now();
    ingest.expire_within(state, now_ms, Some(deadline));
    if let Some((recorder, tap)) = recorder {
        // Handed over, never waited for.
        tap.tap(recorder, state, ingest, now_ms);
    }
}
