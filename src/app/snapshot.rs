//! `zhongshu screenshot`: render until every pipeline is compiled and the city shows,
//! then save the window (3D scene and egui chrome) as a PNG and exit.

use std::path::PathBuf;

use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};

use super::ready::SceneReady;
use super::{ScreenshotRequest, StartedAt, theme};

/// Give up after this long without a drawn city (software rendering included).
const TIMEOUT_SECS: f32 = 240.0;
/// Complete frames to wait before capturing, so the picture has settled.
const SETTLE_FRAMES: u32 = 3;

#[derive(Resource)]
struct SnapshotState {
    out: PathBuf,
    settled_frames: u32,
    in_flight: bool,
    attempts: u32,
    done: bool,
}

pub(super) fn add(app: &mut App, request: ScreenshotRequest) {
    app.insert_resource(SnapshotState {
        out: request.out,
        settled_frames: 0,
        in_flight: false,
        attempts: 0,
        done: false,
    })
    .add_systems(Last, request_capture.after(super::ready::track_readiness));
}

fn request_capture(
    mut commands: Commands,
    time: Res<Time<Real>>,
    ready: Res<SceneReady>,
    live: Option<Res<super::live::Live>>,
    timeline: Option<Res<super::timeline::Timeline>>,
    mut state: ResMut<SnapshotState>,
    mut exit: MessageWriter<AppExit>,
) {
    if time.elapsed_secs() > TIMEOUT_SECS {
        error!("screenshot: the city was not drawn within {TIMEOUT_SECS} s");
        exit.write(AppExit::error());
        return;
    }
    if state.in_flight || state.done {
        return;
    }
    // Live layers count as drawn once every feed has answered (or failed) and its
    // updates are applied; a feed that never answers is not waited on past 20 s.
    let feeds_in = live.as_ref().is_none_or(|l| l.feeds_answered());
    // A past instant: its state read and shown.
    let past_in = timeline.is_none_or(|t| t.settled());
    if !ready.is_ready() || !past_in || (!feeds_in && time.elapsed_secs() < 20.0) {
        state.settled_frames = 0;
        return;
    }
    state.settled_frames += 1;
    if state.settled_frames < SETTLE_FRAMES {
        return;
    }
    state.in_flight = true;
    state.attempts += 1;
    commands
        .spawn(Screenshot::primary_window())
        .observe(on_captured);
}

/// Share of pixels that are neither the clear colour nor the ground: the drawn city.
pub fn city_pixel_share(image: &image::RgbImage) -> f64 {
    let to_u8 = |c: Color| {
        let s = c.to_srgba();
        [
            (s.red * 255.0) as i32,
            (s.green * 255.0) as i32,
            (s.blue * 255.0) as i32,
        ]
    };
    let backgrounds = [to_u8(theme::CLEAR), to_u8(theme::GROUND)];
    let drawn = image
        .pixels()
        .filter(|p| {
            backgrounds.iter().all(|b| {
                (p[0] as i32 - b[0]).abs() + (p[1] as i32 - b[1]).abs() + (p[2] as i32 - b[2]).abs()
                    > 12
            })
        })
        .count();
    drawn as f64 / (image.width() as f64 * image.height() as f64).max(1.0)
}

fn on_captured(
    captured: On<ScreenshotCaptured>,
    started: Res<StartedAt>,
    ready: Res<SceneReady>,
    mut state: ResMut<SnapshotState>,
    mut exit: MessageWriter<AppExit>,
) {
    state.in_flight = false;
    let rgb = match captured.image.clone().try_into_dynamic() {
        Ok(image) => image.to_rgb8(),
        Err(e) => {
            error!("screenshot: cannot read the captured frame: {e}");
            exit.write(AppExit::error());
            return;
        }
    };
    let share = city_pixel_share(&rgb);
    // Pipelines can finish compiling between the check and the capture on a slow
    // software renderer: retry a few times before accepting a sparse frame.
    if share < 0.2 && state.attempts < 5 {
        state.settled_frames = 0;
        return;
    }
    if let Some(parent) = state.out.parent().filter(|p| !p.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        error!("screenshot: cannot create {}: {e}", parent.display());
        exit.write(AppExit::error());
        return;
    }
    if let Err(e) = rgb.save(&state.out) {
        error!("screenshot: cannot write {}: {e}", state.out.display());
        exit.write(AppExit::error());
        return;
    }
    let ready_ms = started.0.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{}",
        serde_json::json!({
            "out": state.out.display().to_string(),
            "width": rgb.width(),
            "height": rgb.height(),
            "city_pixel_share": (share * 1000.0).round() / 1000.0,
            "ready_ms": ready_ms.round(),
            "first_full_frame_ms": ready.first_full_frame_ms.map(f64::round),
        })
    );
    state.done = true;
    exit.write(AppExit::Success);
}
