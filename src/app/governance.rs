//! Data governance kept current for every view (the desk, the steward window, the
//! wall): reconciliation recomputed off the frame thread, and the trust overlay
//! (markers of stale feeds fade to grey, contradicted ones turn magenta).

use bevy::prelude::*;

use super::AppSystems;
use super::layers::markers::LiveMarker;
use super::live::Live;
use crate::governance::reconcile::{ReconcileCopy, Reconciliation, reconcile_input};
use crate::map::mesh::linear_from_srgb;
use crate::state::Standing;
use crate::state::sweep::Budget;

/// How often reconciliation and the trust overlay are recomputed.
const EVERY_MS: i64 = 2_000;

/// The latest reconciliation, and whether the steward window is open.
#[derive(Resource, Default)]
pub struct Governance {
    pub reconciliation: Reconciliation,
    pub computed_ms: i64,
    /// How long the last pass took on its own thread.
    pub last_pass_ms: f64,
    /// The most one frame spent copying the state for the last pass (the copy is
    /// spread across frames, a frame's budget at a time).
    pub last_copy_ms: f64,
    pub steward_open: bool,
    /// The pass in progress, off the frame thread: (result, its time, its duration).
    running: Option<std::thread::JoinHandle<(Reconciliation, i64, f64)>>,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<Governance>().add_systems(
        Update,
        (reconcile_now, fade_stale_markers)
            .chain()
            .in_set(AppSystems::Apply),
    );
}

/// Keeps reconciliation current without a frame paying for a whole-city pass: when
/// one is due, the frame copies the shared part of the state a frame's budget at a
/// time ([`ReconcileCopy`]), then the pass runs on its own thread and the frame takes
/// its result when it is done.
fn reconcile_now(
    live: Option<Res<Live>>,
    clock: Res<super::ViewClock>,
    mut governance: ResMut<Governance>,
    // The copy in progress and the most a frame spent on it; kept out of the resource
    // so that stepping it does not mark the reconciliation changed.
    mut copying: Local<Option<(ReconcileCopy, f64)>>,
    mut epoch: Local<u64>,
) {
    let Some(live) = live else { return };
    if std::mem::replace(&mut *epoch, live.shown_epoch) != live.shown_epoch {
        // Another state shown (the timeline): its slots are not the copy's; start
        // again on it now.
        *copying = None;
        governance.computed_ms = i64::MIN / 2;
    }
    if let Some(pass) = &governance.running {
        if !pass.is_finished() {
            return;
        }
        if let Some(pass) = governance.running.take()
            && let Ok((reconciliation, at_ms, took_ms)) = pass.join()
        {
            governance.reconciliation = reconciliation;
            governance.computed_ms = at_ms;
            governance.last_pass_ms = took_ms;
        }
        return;
    }
    if copying.is_none() {
        let now = clock.now_ms();
        if (now - governance.computed_ms).abs() < EVERY_MS {
            return;
        }
        *copying = Some((ReconcileCopy::new(now), 0.0));
    }
    let Some((mut copy, mut most_ms)) = copying.take() else {
        return;
    };
    let started = std::time::Instant::now();
    let input = copy.step(live.shown(), Budget::frame());
    most_ms = most_ms.max(started.elapsed().as_secs_f64() * 1000.0);
    let Some(input) = input else {
        *copying = Some((copy, most_ms));
        return;
    };
    governance.last_copy_ms = most_ms;
    let now = copy.now_ms();
    let feeds = live.feeds.clone();
    let spawned = std::thread::Builder::new()
        .name("reconciliation".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let r = reconcile_input(&input, &feeds, now);
            (r, now, started.elapsed().as_secs_f64() * 1000.0)
        });
    match spawned {
        Ok(handle) => governance.running = Some(handle),
        // No thread to spare: try again at the next interval.
        Err(_) => governance.computed_ms = now,
    }
}

/// Markers the trust overlay looks at a frame (a city's markers over several frames).
const FADE_MARKERS_PER_FRAME: usize = 16_384;

/// Trust overlay: markers whose data is stale, or whose feed is quarantined, turn
/// grey, so nobody acts on old or suspect data; markers a more authoritative source
/// contradicts turn magenta. Looked at again after each reconciliation,
/// [`FADE_MARKERS_PER_FRAME`] a frame.
#[allow(clippy::too_many_arguments)]
fn fade_stale_markers(
    live: Option<Res<Live>>,
    governance: Res<Governance>,
    mut grey: Local<Option<Handle<StandardMaterial>>>,
    mut magenta: Local<Option<Handle<StandardMaterial>>>,
    // Where the look in progress has got to.
    mut cursor: Local<Option<usize>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
    mut markers: Query<(&LiveMarker, &mut MeshMaterial3d<StandardMaterial>)>,
) {
    let Some(live) = live else { return };
    if governance.is_changed() {
        *cursor = Some(0);
    }
    let Some(from) = *cursor else {
        return;
    };
    let now = governance.computed_ms;
    // Entities a winning source contradicts, worked out with the pass.
    let contradicted = &governance.reconciliation.contradicted;
    let held_out = |slot: u32| {
        live.shown()
            .entity(slot)
            .is_some_and(|e| live.shown().standing(e, now) != Standing::Current)
    };
    let mut flat = |srgb: u32| {
        let [r, g, b, _] = linear_from_srgb(srgb);
        materials.add(StandardMaterial {
            base_color: Color::linear_rgb(r, g, b),
            unlit: true,
            ..default()
        })
    };
    let magenta = magenta.get_or_insert_with(|| flat(0xFF2BD6)).clone();
    let grey = grey.get_or_insert_with(|| flat(0x5A6270)).clone();
    let mut looked = 0;
    for (marker, mut material) in markers.iter_mut().skip(from).take(FADE_MARKERS_PER_FRAME) {
        looked += 1;
        if held_out(marker.slot) {
            if material.0 != grey {
                material.0 = grey.clone();
            }
        } else if contradicted.contains(&marker.slot) && material.0 != magenta {
            material.0 = magenta.clone();
        }
    }
    *cursor = (looked == FADE_MARKERS_PER_FRAME).then_some(from + looked);
}
