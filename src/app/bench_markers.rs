//! `zhongshu bench markers`: the frame-side CPU cost of live markers, measured in a
//! headless bevy app running the real marker systems (spawn/update from changed slots,
//! glide between positions, transform propagation). Every marker gets a new position
//! each simulated second; each second is 60 frames.

use std::time::Instant;

use bevy::prelude::*;
use serde::Serialize;

use super::layers::markers::{MarkerLayer, move_markers, update_markers};
use super::live::{ChangedSlots, DomainVisibility, Live};
use super::{AppSystems, City};
use crate::feeds::{EntityKind, EntityUpdate, FieldValue};
use crate::map::{self, pick::BuildingIndex};
use crate::state::LiveState;

#[derive(Debug, Serialize)]
pub struct MarkerBenchReport {
    pub markers: usize,
    pub frames: usize,
    /// Mean CPU time of one frame's `App::update`, all frames.
    pub mean_frame_ms: f64,
    pub p50_frame_ms: f64,
    pub p99_frame_ms: f64,
    /// The frames where every marker got a new target (once a second).
    pub mean_update_frame_ms: f64,
    /// The frames in between (gliding only).
    pub mean_glide_frame_ms: f64,
}

pub fn vehicle(i: usize, second: u32, frame: &crate::geo_frame::GeoFrame) -> EntityUpdate {
    let angle = i as f64 * 0.618;
    let r = 50.0 + (i % 2000) as f64 + second as f64 * 8.0;
    let [lon, lat] = frame.wgs84_from_local(r * angle.cos(), r * angle.sin());
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("speed".into(), FieldValue::Number(30.0));
    EntityUpdate {
        id: format!("v{i}"),
        entity_type: "Vehicle".into(),
        kind: EntityKind::Vehicle {
            vehicle_type: Some(["bus", "taxi", "police", "ambulance"][i % 4].into()),
            speed_kmh: Some(30.0),
            heading_deg: Some((i % 360) as f64),
            service_status: None,
        },
        position: Some([lon, lat]),
        line: None,
        observed_at_ms: Some(second as i64 * 1000),
        fields,
        units: Default::default(),
        notes: Vec::new(),
    }
}

/// A headless app with the default city, an empty live state fed by the simulator's
/// feed list (feed index = `Domain::ALL` order) and the frame phases: what the marker
/// and traffic systems need, without a window or a GPU.
pub fn headless_live_app() -> App {
    let map = map::load_default().expect("the embedded map loads");
    let frame = map.frame;
    let feeds = crate::feeds::sim_source::default_sim_feeds();
    let (running, rx) = crate::feeds::start_feeds(&[], &[], &map, 1);
    let ingest = crate::governance::health::Ingest::new(&feeds, rx);
    let index = BuildingIndex::new(&map);

    let mut app = App::new();
    app.add_plugins((MinimalPlugins, TransformPlugin, AssetPlugin::default()))
        .init_asset::<Mesh>()
        .init_asset::<Image>()
        .init_asset::<StandardMaterial>()
        .insert_resource(City { map, index })
        .insert_resource(Live::new(feeds, LiveState::new(frame), ingest, running))
        .init_resource::<ChangedSlots>()
        .init_resource::<DomainVisibility>()
        .configure_sets(
            Update,
            (AppSystems::Input, AppSystems::Apply, AppSystems::SyncScene).chain(),
        );
    app
}

/// Applies `updates` from feed `feed` to the live state and marks what changed for
/// the next frame's layers.
pub fn apply_updates(app: &mut App, feed: u32, updates: impl IntoIterator<Item = EntityUpdate>) {
    let world = app.world_mut();
    let mut live = world.resource_mut::<Live>();
    for u in updates {
        live.state.apply(feed, u, 0);
    }
    let changed = live.state.drain_changed();
    world.resource_mut::<ChangedSlots>().0 = changed;
}

pub fn run(markers: usize, seconds: u32) -> MarkerBenchReport {
    let mut app = headless_live_app();
    let frame = app.world().resource::<City>().map.frame;
    app.init_resource::<MarkerLayer>().add_systems(
        Update,
        (update_markers, move_markers)
            .chain()
            .in_set(AppSystems::SyncScene),
    );
    app.update();

    let mut frame_ms = Vec::new();
    let mut update_frames = Vec::new();
    let mut glide_frames = Vec::new();
    for second in 0..=seconds {
        // Ingest is measured by `bench ingest`; here only the frame side counts.
        apply_updates(
            &mut app,
            0,
            (0..markers).map(|i| vehicle(i, second, &frame)),
        );
        for f in 0..60 {
            let t = Instant::now();
            app.update();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if f == 0 {
                app.world_mut().resource_mut::<ChangedSlots>().0.clear();
            }
            // Second 0 spawns every marker: a one-off, not the steady state.
            if second == 0 {
                continue;
            }
            frame_ms.push(ms);
            if f == 0 {
                update_frames.push(ms)
            } else {
                glide_frames.push(ms)
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut sorted = frame_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| crate::stats::percentile(&sorted, p);
    MarkerBenchReport {
        markers,
        frames: frame_ms.len(),
        mean_frame_ms: mean(&frame_ms),
        p50_frame_ms: pct(0.5),
        p99_frame_ms: pct(0.99),
        mean_update_frame_ms: mean(&update_frames),
        mean_glide_frame_ms: mean(&glide_frames),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn markers_follow_their_entities_in_a_headless_app() {
        let report = super::run(500, 1);
        assert_eq!(report.frames, 60);
        assert!(report.mean_frame_ms > 0.0);
    }
}
