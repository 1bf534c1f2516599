//! When is the city fully drawn? Tracks the render world's pipeline compilation so the
//! app knows its first *complete* frame (every shader compiled, every mesh drawable):
//! logged, shown in the map panel, and awaited by `zhongshu screenshot`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bevy::prelude::*;
use bevy::render::render_resource::PipelineCache;
use bevy::render::{Render, RenderApp, RenderSystems};

use super::StartedAt;

/// Frames in a row with no pipeline compiling before a frame counts as complete.
pub const SETTLE_FRAMES: u32 = 3;

/// Pipelines still compiling in the render world, shared with the main world.
#[derive(Resource, Clone, Default)]
pub struct PipelinesPending(Arc<AtomicUsize>);

/// Whether the scene is completely drawn, and since when.
#[derive(Resource, Debug, Default)]
pub struct SceneReady {
    /// Consecutive frames with nothing left to compile.
    pub settled_frames: u32,
    /// Milliseconds from process start to the first complete frame.
    pub first_full_frame_ms: Option<f64>,
    /// When the current run of settled frames began.
    streak_started_ms: f64,
}

impl SceneReady {
    pub fn is_ready(&self) -> bool {
        self.settled_frames >= SETTLE_FRAMES
    }
}

pub(super) fn plugin(app: &mut App) {
    let pending = PipelinesPending::default();
    app.insert_resource(pending.clone())
        .init_resource::<SceneReady>()
        .add_systems(Last, track_readiness);
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app.insert_resource(pending).add_systems(
            Render,
            count_pending_pipelines.in_set(RenderSystems::Cleanup),
        );
    }
}

fn count_pending_pipelines(cache: Res<PipelineCache>, pending: Res<PipelinesPending>) {
    pending
        .0
        .store(cache.waiting_pipelines().count(), Ordering::Relaxed);
}

pub(super) fn track_readiness(
    pending: Res<PipelinesPending>,
    started: Res<StartedAt>,
    frames: Res<bevy::diagnostic::FrameCount>,
    mut ready: ResMut<SceneReady>,
) {
    // The first frames run before any mesh is queued: nothing pending yet means nothing.
    if frames.0 < 2 || pending.0.load(Ordering::Relaxed) > 0 {
        ready.settled_frames = 0;
        return;
    }
    ready.settled_frames = ready.settled_frames.saturating_add(1);
    if ready.settled_frames == 1 {
        ready.streak_started_ms = started.0.elapsed().as_secs_f64() * 1000.0;
    }
    if ready.is_ready() && ready.first_full_frame_ms.is_none() {
        // The first frame of the settled run was already complete; the rest confirm it.
        let ms = ready.streak_started_ms;
        ready.first_full_frame_ms = Some(ms);
        info!("first full frame {ms:.0} ms after start");
    }
}
