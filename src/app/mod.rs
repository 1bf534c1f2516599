//! The bevy shell: everything that imports bevy lives under `app/`. One plugin per
//! concern; each draws core state or forwards user input, and owns no business rules.

pub mod bench_desk;
pub mod bench_markers;
pub mod briefing_launch;
pub mod camera;
pub mod charts;
pub mod desk;
pub mod desk_ui;
pub mod drill;
pub mod fonts;
pub mod governance;
pub mod hotplug;
pub mod labels;
pub mod layers;
pub mod layout;
pub mod live;
pub mod operations;
pub mod ready;
pub mod scene;
pub mod snapshot;
pub mod steward;
pub mod theme;
pub mod timeline;
pub mod ui;
pub mod wall;
pub mod widgets;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bevy::diagnostic::FrameTimeDiagnosticsPlugin;
use bevy::prelude::*;
use bevy::window::PresentMode;
use bevy_egui::EguiPlugin;

use crate::clock::CityTime;
use crate::map::{self, CityMap, pick::BuildingIndex};
use camera::CameraRig;

/// What the `zhongshu` binary asked the app to do.
pub struct AppOptions {
    pub map: Option<PathBuf>,
    /// How to read the map: `--crs`, `--coords`, `--schema`.
    pub map_load: map::LoadOptions,
    /// Initial view: longitude, latitude, distance in metres.
    pub look_at: Option<[f64; 3]>,
    /// Building id to select at start.
    pub select: Option<String>,
    /// Feeds file; `None` runs every sub-brain on the simulator.
    pub feeds: Option<PathBuf>,
    /// Open the data-steward window at start.
    pub steward: bool,
    /// `--ui-scale`: panels and type at this factor of the monitor's scale factor.
    pub ui_scale: f32,
    /// `--timezone`: the city's zone; `None` looks it up from the map's position.
    pub timezone: Option<CityTime>,
    pub screenshot: Option<ScreenshotRequest>,
    /// The dispatch desk (event log, departments, users, sign-in).
    pub desk: Option<desk::DeskSetup>,
    /// A drill to play (`bench surge --window`): its feeds replace `feeds`, and the
    /// app exits when it is over.
    pub drill: Option<drill::DrillRun>,
    /// Record every live change into this history folder (`--history`), which the
    /// timeline reads (with `past`: read only).
    pub history: Option<PathBuf>,
    /// Show the city as it stood at a past instant (`screenshot --at`): this recorded
    /// state instead of the feeds, and the clock stopped at its instant.
    pub past: Option<std::sync::Arc<crate::history::Snapshot>>,
    /// How the desk presents the briefing (the top bar's button, F5): the program
    /// and arguments of a `zhongshu briefing` on the same map and log.
    pub briefing: Option<Vec<std::ffi::OsString>>,
}

/// The one clock the views read: now, or the past instant shown.
#[derive(Resource, Clone, Copy, Debug, Default)]
pub struct ViewClock {
    /// `Some`: the city as it stood then, not live.
    pub as_of_ms: Option<i64>,
}

/// A console's mirror of its hall's history (the timeline reads it), kept running
/// while the window is open.
#[derive(Resource)]
pub struct HallHistoryMirror(pub crate::hall::history::SyncThread);

/// An after-action review asked for (an incident's "Replay"): the timeline plays
/// from `from_ms` and pauses at `until_ms` (its closure; none: it plays on).
#[derive(Resource, Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayRequest(pub Option<(i64, Option<i64>)>);

impl ViewClock {
    pub fn now_ms(&self) -> i64 {
        self.as_of_ms.unwrap_or_else(crate::clock::unix_ms_now)
    }
}

/// Render off-screen until the city is drawn, write a PNG, exit.
#[derive(Clone, Debug)]
pub struct ScreenshotRequest {
    pub out: PathBuf,
    pub size: (u32, u32),
}

/// The loaded city and its picking index.
#[derive(Resource)]
pub struct City {
    pub map: CityMap,
    pub index: BuildingIndex,
}

/// The city's time zone: every time a person reads is written in it.
#[derive(Resource, Clone, Debug)]
pub struct LocalTime(pub CityTime);

/// The picked building, if any (index into `CityMap::buildings`).
#[derive(Resource, Default, Debug)]
pub struct Selection {
    pub building: Option<usize>,
    /// A live entity (slot in the live state).
    pub entity: Option<u32>,
}

/// The UI scale of a window: egui's zoom on top of the monitor's own scale factor
/// (2.0 draws panels and type twice as large). A component of the window entity, so
/// that each screen of a wall can have its own; `--ui-scale` sets the primary window's.
#[derive(Component, Clone, Copy, Debug, PartialEq)]
pub struct WindowUiScale(pub f32);

impl Default for WindowUiScale {
    fn default() -> Self {
        Self(1.0)
    }
}

impl WindowUiScale {
    pub const RANGE: std::ops::RangeInclusive<f32> = 0.5..=4.0;

    /// A scale from the command line: a finite factor in [`Self::RANGE`].
    pub fn checked(factor: f32) -> anyhow::Result<Self> {
        if !factor.is_finite() || !Self::RANGE.contains(&factor) {
            anyhow::bail!(
                "--ui-scale {factor}: must be between {} and {}",
                Self::RANGE.start(),
                Self::RANGE.end()
            );
        }
        Ok(Self(factor))
    }
}

/// When the process started, for time-to-first-frame.
#[derive(Resource, Clone, Copy)]
pub struct StartedAt(pub Instant);

/// egui's textures (its font atlas: glyphs met for the first time) written before
/// the frame's asset events are sent, so they reach the GPU with the frame that
/// first shows them: else a new word is drawn without its letters for a frame, and
/// a picture taken of that frame (a briefing's slide) shows the gaps.
pub(crate) fn egui_textures_this_frame(app: &mut App) {
    app.configure_sets(
        PostUpdate,
        bevy_egui::EguiPostUpdateSet::PostProcessOutput.before(bevy::asset::AssetEventSystems),
    );
}

/// Frame phases: read input, apply commands to state, then mirror state into the scene.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppSystems {
    Input,
    Apply,
    SyncScene,
}

/// Loads the map (before any window opens, so a bad path is a plain error) and runs
/// the command-centre window, or the screenshot pass.
pub fn run(options: AppOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let ui_scale = WindowUiScale::checked(options.ui_scale)?;
    let map = load_map(options.map.as_deref(), &options.map_load)?;
    eprintln!(
        "zhongshu: {}: {} buildings, {} roads, {} skipped, {} not drawn, loaded in {:.0} ms",
        map.name,
        map.buildings.len(),
        map.roads.len(),
        map.skipped.broken_total(),
        map.skipped.not_drawn_total(),
        map.load_ms
    );
    let time = CityTime::resolve(options.timezone, map.frame.origin_lon, map.frame.origin_lat);
    eprintln!(
        "zhongshu: local time {}",
        time.describe(crate::clock::unix_ms_now())
    );
    let crate::feeds::config::FeedsSetup {
        feeds,
        rules: ranges,
        areas,
        ..
    } = match (&options.drill, &options.feeds) {
        (Some(run), _) => crate::feeds::config::FeedsSetup {
            feeds: run.feeds().to_vec(),
            ..Default::default()
        },
        (None, Some(path)) => crate::feeds::config::load_setup(path)?,
        (None, None) => crate::feeds::config::FeedsSetup {
            feeds: crate::feeds::sim_source::default_sim_feeds(),
            ..Default::default()
        },
    };
    let index = BuildingIndex::new(&map);
    let mut rig = CameraRig::for_bounds(map.local_bounds());
    if let Some([lon, lat, distance]) = options.look_at {
        let [e, n] = map.frame.local_from_wgs84(lon, lat);
        rig.goal.focus = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
        rig.goal.distance = distance as f32;
        rig.goal.pitch = 0.6;
        rig.clamp_goal();
        rig.pose = rig.goal;
    }
    let selected = match &options.select {
        Some(id) => {
            let Some(i) = map.buildings.iter().position(|b| &b.id == id) else {
                anyhow::bail!("--select {id}: no building with that id in {}", map.name);
            };
            Some(i)
        }
        None => None,
    };
    let title = format!("中枢 Zhongshu — {}", map.name);
    // A window follows the monitor's scale factor (a 1600×900 window is 3200×1800
    // pixels at 2×); a screenshot is exactly the pixels asked for, at scale 1. Either
    // way `--ui-scale` zooms the panels on top.
    let resolution = match &options.screenshot {
        Some(s) => bevy::window::WindowResolution::from(s.size).with_scale_factor_override(1.0),
        None => bevy::window::WindowResolution::from((1600, 900)),
    };

    let city = City { map, index };
    if let Some(i) = selected {
        fly_to_building(&mut rig, &city, i);
        rig.pose = rig.goal;
    }
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: Some(Window {
                    title,
                    resolution,
                    present_mode: PresentMode::AutoVsync,
                    ..default()
                }),
                ..default()
            })
            .set(bevy::log::LogPlugin {
                filter: "wgpu=error,naga=warn,bevy_render=warn,bevy_winit=warn".into(),
                ..default()
            }),
    )
    .add_plugins((FrameTimeDiagnosticsPlugin::default(), EguiPlugin::default()))
    .add_plugins(egui_textures_this_frame)
    .insert_resource(city)
    .insert_resource(LocalTime(time))
    .init_resource::<ReplayRequest>()
    .insert_resource(ViewClock {
        as_of_ms: options.past.as_ref().map(|p| p.at_ms),
    })
    .insert_resource(Selection {
        building: selected,
        entity: None,
    })
    .insert_resource(rig)
    .insert_resource(StartedAt(started))
    .insert_resource(live::FeedSetup {
        feeds,
        ranges,
        areas,
        seed: 1,
        hall: options
            .desk
            .as_ref()
            .and_then(|d| d.hall.as_ref())
            .map(|h| (h.nats.clone(), h.hall.clone())),
        history: options.history.clone(),
        past: options.past.clone(),
    })
    .configure_sets(
        Update,
        (AppSystems::Input, AppSystems::Apply, AppSystems::SyncScene).chain(),
    )
    .add_plugins((
        scene::plugin,
        camera::plugin,
        ui::plugin,
        ready::plugin,
        live::plugin,
        layers::plugin,
        governance::plugin,
        desk::plugin,
        labels::plugin,
        timeline::plugin,
        operations::plugin,
        briefing_launch::plugin,
    ));
    // The timeline reads the history the window records; a screenshot of the past
    // stands paused at its instant.
    let hall = options.desk.as_ref().and_then(|d| d.hall.as_ref());
    match (&options.history, &options.past) {
        // A console of a hall replays the hall's history, which its hub records:
        // mirrored into a folder of its own, read as any history.
        (Some(dir), None) if hall.is_some() => {
            let hall = hall.expect("a hall");
            let dir = crate::hall::history::mirror_dir(dir, &hall.hall);
            match crate::hall::history::start_mirror(
                hall.nats.clone(),
                hall.hall.clone(),
                dir.clone(),
            ) {
                Ok(mirror) => {
                    app.insert_resource(HallHistoryMirror(mirror));
                }
                Err(e) => error!("the hall's history is not mirrored: {e}"),
            }
            app.insert_resource(timeline::Timeline::new(dir));
        }
        (Some(dir), None) => {
            app.insert_resource(timeline::Timeline::new(dir.clone()));
        }
        (Some(dir), Some(past)) => {
            app.insert_resource(timeline::Timeline::paused_at(dir.clone(), past.at_ms));
        }
        (None, _) => {}
    }
    let mut primary = app
        .world_mut()
        .query_filtered::<Entity, With<bevy::window::PrimaryWindow>>();
    let primary: Vec<Entity> = primary.iter(app.world()).collect();
    for window in primary {
        app.world_mut().entity_mut(window).insert(ui_scale);
    }
    if let Some(setup) = options.desk {
        app.insert_resource(setup);
    }
    if let Some(command) = options.briefing {
        app.insert_resource(briefing_launch::BriefingLauncher::new(command));
    }
    if options.steward {
        app.world_mut()
            .resource_mut::<governance::Governance>()
            .steward_open = true;
    }
    if let Some(request) = options.screenshot {
        snapshot::add(&mut app, request);
    }
    if let Some(run) = options.drill {
        drill::add(&mut app, run);
    }
    // A console runs for a whole shift: freed memory goes back to the system.
    let _trimmer = crate::memory::Trimmer::start(crate::memory::TRIM_EVERY);
    match app.run() {
        AppExit::Success => Ok(()),
        AppExit::Error(code) => anyhow::bail!("the app exited with error code {code}"),
    }
}

/// The map of `--map` (read as `load` says), or the embedded default city: loaded
/// before any window opens, so a bad path is a plain error.
pub fn load_map(
    path: Option<&std::path::Path>,
    load: &map::LoadOptions,
) -> anyhow::Result<CityMap> {
    match path {
        Some(path) => Ok(map::load_path_with(path, load)?),
        None if load.coords != Default::default() => {
            anyhow::bail!("--crs and --coords describe a map given with --map")
        }
        None if load.schema.is_some() => {
            anyhow::bail!("--schema says how a --map's fields are read: give --map too")
        }
        None => map::load_default().context("the embedded default map failed to load"),
    }
}

/// Flies the camera to a building, framed by its size and height.
pub fn fly_to_building(rig: &mut CameraRig, city: &City, index: usize) {
    let Some(b) = city.map.buildings.get(index) else {
        return;
    };
    let Some(rect) = geo::BoundingRect::bounding_rect(&b.footprint) else {
        return;
    };
    let c = rect.center();
    let size = (rect.width().max(rect.height()) as f32).max(b.extent.height_m);
    let focus = Vec3::from_array(crate::geo_frame::world_from_local(c.x, c.y, 0.0));
    rig.fly_to(focus, (size * 3.5).max(120.0));
}

#[cfg(test)]
mod tests {
    use super::WindowUiScale;

    #[test]
    fn the_ui_scale_is_a_factor_from_half_to_four() {
        assert_eq!(WindowUiScale::checked(2.0).unwrap(), WindowUiScale(2.0));
        assert_eq!(WindowUiScale::checked(0.5).unwrap(), WindowUiScale(0.5));
        for bad in [0.0, 0.4, 4.5, -1.0, f32::NAN, f32::INFINITY] {
            let e = WindowUiScale::checked(bad).unwrap_err().to_string();
            assert!(e.contains("--ui-scale"), "{e}");
        }
    }
}
