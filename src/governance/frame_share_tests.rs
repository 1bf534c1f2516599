//! What spreading whole-city passes over frames must not change: snapshots and 304s
//! of small feeds stay cheap, the backlog counts what waits, and a stepped pass counts
//! each thing once.

use std::collections::HashMap;

use crate::feeds::config::{FeedConfig, parse_feeds};
use crate::feeds::poll::FeedEvent;
use crate::feeds::{Decoded, EntityKind, EntityUpdate};
use crate::geo_frame::GeoFrame;
use crate::governance::health::{Ingest, MAX_UPDATES_PER_FRAME};
use crate::state::LiveState;
use crate::state::kpi::KpiPass;
use crate::state::sweep::Budget;

const T: i64 = 1_795_946_400_000;

fn update(id: &str, at: i64) -> EntityUpdate {
    EntityUpdate {
        id: id.into(),
        entity_type: "Vehicle".into(),
        kind: EntityKind::Generic,
        position: Some([24.94, 60.17]),
        line: None,
        observed_at_ms: Some(at),
        fields: Default::default(),
        units: Default::default(),
        notes: Vec::new(),
    }
}

fn batch(feed: u32, ids: &[String], at: i64) -> FeedEvent {
    FeedEvent::Batch {
        feed,
        decoded: Decoded {
            updates: ids.iter().map(|id| update(id, at)).collect(),
            rejects: Vec::new(),
            withheld: Default::default(),
        },
        received_at_ms: at,
    }
}

fn ok(feed: u32, at: i64, not_modified: bool) -> FeedEvent {
    FeedEvent::PollOk {
        feed,
        at_ms: at,
        not_modified,
        complete: true,
        bytes: 0,
    }
}

/// `n` NGSI-LD feeds polled every `interval_s`.
fn feeds(n: usize, interval_s: f64) -> Vec<FeedConfig> {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "[[feed]]\nname='feed{i}'\nkind='ngsi-ld'\nurl='http://h/e{i}'\ndomain='traffic'\ninterval_s={interval_s}\n"
        ));
    }
    parse_feeds(&text).unwrap()
}

/// A state with `n` entities of feed 0 (put straight in: what is measured is the
/// pumps that follow).
fn big_state(n: usize) -> LiveState {
    let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
    for i in 0..n {
        state.apply(0, update(&format!("big{i}"), T), T);
    }
    state.drain_changed();
    state
}

/// Payloads received and not yet taken in count in `backlog()` (surge's
/// `frames_with_backlog`, bench frame and the screenshot's "feeds in" read it).
#[test]
fn backlog_counts_payloads_waiting_in_the_inbox() {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ingest = Ingest::new(&feeds(1, 5.0), rx);
    let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
    for b in 0..30 {
        let ids: Vec<String> = (0..1000).map(|i| format!("b{b}-{i}")).collect();
        tx.send(batch(0, &ids, T)).unwrap();
    }
    let applied = ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
    assert_eq!(applied, MAX_UPDATES_PER_FRAME);
    let waiting = ingest.backlog();
    let more = ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
    assert_eq!(more, 5_000, "5,000 updates were still waiting");
    assert_eq!(waiting, 5_000, "backlog() after the first pump");
}

/// A snapshot's removals and a 304's marks walk the feed's own entities: a small
/// feed's snapshot never holds up another feed's updates for a sweep of the city.
#[test]
fn a_one_entity_feeds_snapshot_holds_up_every_other_feed() {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ingest = Ingest::new(&feeds(2, 5.0), rx);
    let mut state = big_state(200_000);
    // Churn: 150,000 of them gone; their slots stay.
    for i in 0..150_000 {
        state.remove(0, &format!("big{i}"));
    }
    assert_eq!((state.len(), state.slot_count()), (50_000, 200_000));
    let mut frames_for = |not_modified: bool, urgent: &str, at: i64| {
        tx.send(batch(1, &["tiny".to_string()], at)).unwrap();
        tx.send(ok(1, at, not_modified)).unwrap();
        tx.send(batch(0, &[urgent.to_string()], at)).unwrap();
        let mut frames = 0;
        while state.get(0, urgent).is_none() {
            ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
            frames += 1;
            assert!(frames < 1000);
        }
        frames
    };
    let after_snapshot = frames_for(false, "urgent-1", T + 1000);
    let after_304 = frames_for(true, "urgent-2", T + 2000);
    assert!(
        after_snapshot <= 2 && after_304 <= 2,
        "frames before another feed's update is applied: {after_snapshot} behind a \
         one-entity feed's snapshot, {after_304} behind its 304 (old code: 1)"
    );
}

/// At 165,000 entities, 13 small feeds polled once a second (complete snapshots)
/// never make a big feed's updates wait longer and longer.
#[test]
fn small_feeds_polled_each_second_stall_a_big_citys_ingest() {
    const FPS: i64 = 60;
    const SMALL: usize = 13;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut ingest = Ingest::new(&feeds(SMALL + 1, 1.0), rx);
    let mut state = big_state(165_000);
    let mut sent_at: HashMap<String, i64> = HashMap::new();
    let mut latency = Vec::new();
    for frame in 0..20 * FPS {
        let now = T + frame * 1000 / FPS;
        let (second, in_second) = (frame / FPS, frame % FPS);
        if in_second == 0 {
            let id = format!("tick-{second}");
            tx.send(batch(0, std::slice::from_ref(&id), now)).unwrap();
            sent_at.insert(id, frame);
        }
        for k in 0..SMALL as i64 {
            if in_second == 4 * k + 1 {
                let feed = k as u32 + 1;
                let ids: Vec<String> = (0..3).map(|i| format!("s{feed}-{i}")).collect();
                tx.send(batch(feed, &ids, now)).unwrap();
                tx.send(ok(feed, now, false)).unwrap();
            }
        }
        ingest.pump(&mut state, MAX_UPDATES_PER_FRAME);
        sent_at.retain(|id, at| {
            if state.get(0, id).is_some() {
                latency.push((id.clone(), frame - *at));
                false
            } else {
                true
            }
        });
    }
    latency.sort_by_key(|(id, _)| id[5..].parse::<i64>().unwrap());
    let worst = latency.iter().map(|l| l.1).max().unwrap_or(i64::MAX);
    assert!(
        sent_at.is_empty() && worst <= FPS,
        "frames from a big feed's update to its apply, by second: {latency:?}; \
         never applied: {} (backlog {})",
        sent_at.len(),
        ingest.backlog()
    );
}

/// A KPI pass spread over frames counts an entity that leaves and comes back
/// mid-pass once.
#[test]
fn a_kpi_pass_counts_a_vehicle_twice_when_it_leaves_and_returns_mid_pass() {
    let vehicle = |id: &str| EntityUpdate {
        kind: EntityKind::Vehicle {
            vehicle_type: Some("bus".into()),
            speed_kmh: Some(20.0),
            heading_deg: None,
            service_status: None,
        },
        ..update(id, T)
    };
    let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
    for i in 0..1000 {
        state.apply(0, vehicle(&format!("bus{i}")), T);
    }
    let whole = crate::state::kpi::CityKpis::compute(&state, &HashMap::new(), T);
    assert_eq!(whole.vehicles, 1000);
    let mut pass = KpiPass::new(T);
    assert!(
        pass.step(&state, &HashMap::new(), Budget::slots(500))
            .is_none()
    );
    // Between two frames: bus10 leaves (a snapshot without it), then comes back.
    state.remove(0, "bus10");
    state.apply(0, vehicle("bus10"), T + 1);
    let stepped = loop {
        if let Some(k) = pass.step(&state, &HashMap::new(), Budget::slots(500)) {
            break k;
        }
    };
    assert_eq!(
        stepped.vehicles, 1000,
        "1,000 buses, counted {}",
        stepped.vehicles
    );
}
