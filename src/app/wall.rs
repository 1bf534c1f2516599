//! `zhongshu wall`: one process drives the video wall. A borderless fullscreen window
//! per screen (on its monitor, or at a position and size), each a grid of tiles drawn
//! from the same state as the desk: map tiles with their own cameras, layers and
//! sub-brains (a camera with a viewport per tile), and egui tiles for the vital signs,
//! the boards, the trends and the data health. Read-only and unattended: no sign-in,
//! no modal, rendering whether focused or not, a banner on each tile whose data stops,
//! and the layout file read again when it changes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bevy::camera::visibility::RenderLayers;
use bevy::camera::{ClearColorConfig, RenderTarget, Viewport};
use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::ecs::schedule::ScheduleLabel;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::window::{
    ExitCondition, Monitor, MonitorSelection, PresentMode, RawHandleWrapper, WindowMode,
    WindowPosition, WindowRef, WindowResolution,
};
use bevy::winit::WinitSettings;
use bevy_egui::{EguiContext, EguiGlobalSettings, EguiPlugin, EguiSchedule, egui};

use super::camera::{CameraRig, FOV_Y, MapView};
use super::layers::air::HeatmapSheet;
use super::layers::choropleth::ChoroplethSheet;
use super::layers::markers::LiveMarker;
use super::layers::traffic::TrafficChunkMarker;
use super::live::Live;
use super::scene::ChunkLayer;
use super::{AppSystems, City, LocalTime, StartedAt, theme};
use crate::dispatch::book::Book;
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::past::{OpenLog, PastBooks};
use crate::governance::quality::{Freshness, freshness};
use crate::map::mesh::MapLayer;
use crate::model::Domain;
use crate::state::kpi::{CityKpis, KpiPass};
use crate::wall::{
    DataState, FeedState, HotspotFollower, LayoutWatch, SignHistory, TileKind, View, WallLayout,
};

/// What `zhongshu wall` runs.
pub struct WallRun {
    pub map: Option<PathBuf>,
    pub map_load: crate::map::LoadOptions,
    pub feeds: Option<PathBuf>,
    pub timezone: Option<crate::clock::CityTime>,
    /// The layout; `None`: a screen per detected monitor, by default.
    pub layout: Option<WallLayout>,
    /// `--screenshot-dir DIR` with `--size`: each screen a window of that size, one
    /// PNG per screen, then exit.
    pub screenshots: Option<(PathBuf, (u32, u32))>,
    /// The dispatch log the boards read (read-only), and how its events replay.
    pub log: Option<(OpenLog, DispatchConfig)>,
    /// A wall of a hall: the live layers follow the hub.
    pub hall: Option<(crate::nats::Nats, String)>,
    /// Type and panels at this factor on top of the size that follows the screen.
    pub ui_scale: f32,
    /// `bench wall`: measure this many seconds of frames once the screens are drawn,
    /// print the figures and exit.
    pub bench_secs: Option<f64>,
    /// `zhongshu briefing --out`: each slide drawn in turn in one window of the
    /// screenshot size, a PNG each, then the PDF.
    pub briefing: Option<BriefingRun>,
    /// The recorded history the trends start from (the hours before the wall
    /// started), when there is one.
    pub history: Option<PathBuf>,
}

/// A deck to write or present: its slides, the book its pins come from.
pub struct BriefingRun {
    pub deck: crate::briefing::Deck,
    pub book: Book,
    pub mode: BriefingMode,
}

/// What becomes of a briefing.
pub enum BriefingMode {
    /// `briefing --out DIR`: a PNG per slide, then the PDF, then exit.
    Write { out: PathBuf },
    /// `zhongshu --briefing`, `briefing` without `--out`: shown full screen, moved by
    /// the presenter's keys; the presenter's view on a second monitor (with
    /// `presenter`, in a window when there is none).
    Present { presenter: bool },
}

/// A briefing being presented: the slides as shown (no notes), where the talk is.
#[derive(Resource)]
pub struct Presenting {
    deck: crate::briefing::Deck,
    slides: Vec<crate::wall::Screen>,
    pub talk: crate::briefing::Talk,
    /// `--presenter`: the presenter's view even without a second monitor.
    presenter_always: bool,
    /// The presenter closed that window: not opened again.
    presenter_dismissed: bool,
    presenter_shown: Option<bool>,
    started: Instant,
}

impl Presenting {
    fn screens(&self, presenter: bool) -> Vec<crate::wall::Screen> {
        let i = self.talk.index;
        let mut screens: Vec<_> = self.slides.get(i).cloned().into_iter().collect();
        if presenter && !self.deck.slides.is_empty() {
            screens.push(crate::briefing::presenter_screen(&self.deck, i));
        }
        screens
    }
}

/// The presenter's keys: → ↓ PageDown Space Enter N next; ← ↑ PageUp Backspace P
/// previous (clickers send PageUp/PageDown); Home or F5 first; End last.
pub fn presenter_go(keys: &ButtonInput<KeyCode>) -> Option<crate::briefing::Go> {
    use crate::briefing::Go;
    const NEXT: [KeyCode; 6] = [
        KeyCode::ArrowRight,
        KeyCode::ArrowDown,
        KeyCode::PageDown,
        KeyCode::Space,
        KeyCode::Enter,
        KeyCode::KeyN,
    ];
    const PREVIOUS: [KeyCode; 5] = [
        KeyCode::ArrowLeft,
        KeyCode::ArrowUp,
        KeyCode::PageUp,
        KeyCode::Backspace,
        KeyCode::KeyP,
    ];
    if keys.any_just_pressed(NEXT) {
        Some(Go::Next)
    } else if keys.any_just_pressed(PREVIOUS) {
        Some(Go::Previous)
    } else if keys.any_just_pressed([KeyCode::Home, KeyCode::F5]) {
        Some(Go::First)
    } else if keys.just_pressed(KeyCode::End) {
        Some(Go::Last)
    } else {
        None
    }
}

/// Moves the talk on the presenter's keys (Esc ends it), and opens or closes the
/// presenter's view as a second monitor comes and goes.
fn present(
    keys: Res<ButtonInput<KeyCode>>,
    monitors: Query<(), With<Monitor>>,
    windows: Query<&WallWindow>,
    mut presenting: ResMut<Presenting>,
    mut wall: ResMut<Wall>,
    mut exit: MessageWriter<AppExit>,
) {
    if keys.just_pressed(KeyCode::Escape) {
        exit.write(AppExit::Success);
        return;
    }
    // Its window closed: the presenter does not want it.
    if presenting.presenter_shown == Some(true)
        && wall.built == Some(wall.generation)
        && !windows.iter().any(|w| w.screen == 1)
    {
        presenting.presenter_dismissed = true;
    }
    let moved = presenter_go(&keys).is_some_and(|go| presenting.talk.go(go));
    let presenter = !presenting.presenter_dismissed
        && (presenting.presenter_always || monitors.iter().count() >= 2);
    if !moved && presenting.presenter_shown == Some(presenter) {
        return;
    }
    presenting.presenter_shown = Some(presenter);
    wall.layout.screens = presenting.screens(presenter);
    wall.slide = Some((presenting.talk.index, presenting.talk.count));
    wall.generation += 1;
}

/// The slides left to draw, and what was written.
#[derive(Resource)]
struct DeckShots {
    /// Where the slides go until the deck is whole (taken when it is).
    writer: Option<crate::briefing::DeckWriter>,
    out: PathBuf,
    screens: Vec<crate::wall::Screen>,
    incidents: Vec<String>,
    /// Each slide's charts: their titles and how many bars or points each has.
    charts: Vec<serde_json::Value>,
    /// The slide shown now (all asked for when it is the number of slides).
    index: usize,
    /// Frames the slide shown has been whole.
    settled: u32,
    /// The pictures written, by slide.
    written: Vec<Option<PathBuf>>,
    failed: bool,
}

fn deck_to_write(deck: crate::briefing::Deck, writer: crate::briefing::DeckWriter) -> DeckShots {
    let screens: Vec<_> = deck
        .slides
        .iter()
        .enumerate()
        .map(|(i, s)| crate::briefing::slide_screen(s, i, true))
        .collect();
    DeckShots {
        out: writer.out().to_path_buf(),
        writer: Some(writer),
        written: vec![None; screens.len()],
        screens,
        incidents: deck.incident_ids().into_iter().map(String::from).collect(),
        charts: deck
            .slides
            .iter()
            .map(|s| {
                s.charts
                    .iter()
                    .map(|c| {
                        let n = match &c.kind {
                            crate::wall::ChartKind::Bars(b) => b.len(),
                            crate::wall::ChartKind::Line { points, .. } => points.len(),
                        };
                        (c.title.clone(), serde_json::Value::from(n))
                    })
                    .collect::<serde_json::Map<String, serde_json::Value>>()
                    .into()
            })
            .collect(),
        index: 0,
        settled: 0,
        failed: false,
    }
}

/// Frames a slide is drawn whole before its picture is taken: the first, where its
/// cameras are made, placed and drawn, and its words' new letters reach the GPU
/// ([`super::egui_textures_this_frame`]). The deck's pictures are the same as with a
/// frame more, at half the frames.
const SLIDE_SETTLE_FRAMES: u32 = 1;

/// Draws the slides one after the other: each once its map is in place and its text
/// drawn, its picture taken of that frame while the next slide is drawn; then the PDF
/// of them all.
#[allow(clippy::too_many_arguments)]
fn play_deck(
    mut commands: Commands,
    time: Res<Time<Real>>,
    ready: Res<super::ready::SceneReady>,
    mut wall: ResMut<Wall>,
    windows: Query<(Entity, &WallWindow)>,
    cameras: Query<&WallMapCamera>,
    ui_cameras: Query<&WallUiCamera>,
    mut shots: ResMut<DeckShots>,
    mut exit: MessageWriter<AppExit>,
) {
    if time.elapsed_secs() > SHOT_TIMEOUT_S + shots.screens.len() as f32 * 20.0 {
        error!("briefing: the slides were not drawn in time");
        exit.write(AppExit::error());
        return;
    }
    if shots.index >= shots.screens.len() {
        return;
    }
    let Some((window, _)) = windows.iter().next() else {
        return;
    };
    let arrived = cameras.iter().all(|c| {
        let (p, g) = (c.rig.pose, c.rig.goal);
        !c.goal_for.is_empty()
            && p.focus.distance(g.focus) < 1.0
            && (p.distance - g.distance).abs() < 1.0
    });
    // The screen's egui context has drawn a few passes (an area is measured on its
    // first; the context stays from slide to slide).
    let drawn = ui_cameras.iter().all(|c| c.drawn >= 3) && !ui_cameras.is_empty();
    if wall.built != Some(wall.generation) || !ready.is_ready() || !arrived || !drawn {
        shots.settled = 0;
        return;
    }
    shots.settled += 1;
    if shots.settled < SLIDE_SETTLE_FRAMES {
        return;
    }
    // This frame is the slide's picture (the render of this frame's world); the next
    // slide is made from the next frame on.
    let index = shots.index;
    let Some(out) = shots.writer.as_ref().map(|w| w.slide_path(index)) else {
        return;
    };
    info!(
        "briefing: slide {} of {} drawn {:.0} ms after start",
        index + 1,
        shots.screens.len(),
        time.elapsed_secs_f64() * 1000.0
    );
    commands.spawn(Screenshot::window(window)).observe(
        move |captured: On<ScreenshotCaptured>,
              started: Res<StartedAt>,
              mut shots: ResMut<DeckShots>,
              mut exit: MessageWriter<AppExit>| {
            if shots.failed {
                return;
            }
            let saved = captured
                .image
                .clone()
                .try_into_dynamic()
                .map_err(|e| e.to_string())
                .and_then(|image| image.to_rgb8().save(&out).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                error!("briefing: cannot write {}: {e}", out.display());
                shots.failed = true;
                exit.write(AppExit::error());
                return;
            }
            shots.written[index] = Some(out.clone());
            if shots.written.iter().any(Option::is_none) {
                return;
            }
            let written: Vec<PathBuf> = shots.written.iter().flatten().cloned().collect();
            // The whole deck, in place of the one there.
            let result = match shots.writer.take() {
                Some(writer) => writer.finish(&written),
                None => return,
            };
            match result {
                Ok((written, pdf, pages)) => {
                    println!(
                        "{}",
                        serde_json::json!({
                            "out": shots.out.display().to_string(),
                            "slides": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                            "pdf": pdf.display().to_string(),
                            "pages": pages,
                            "incidents": shots.incidents,
                            "charts": shots.charts,
                            "ms": started.0.elapsed().as_millis() as u64,
                        })
                    );
                    exit.write(AppExit::Success);
                }
                Err(e) => {
                    error!("briefing: {e}");
                    exit.write(AppExit::error());
                }
            }
        },
    );
    shots.index += 1;
    shots.settled = 0;
    if let Some(next) = shots.screens.get(shots.index) {
        wall.layout.screens = vec![next.clone()];
        wall.slide = Some((shots.index, shots.screens.len()));
        wall.generation += 1;
    }
}

/// `zhongshu bench wall`: what a wall's frames cost once the city is drawn.
#[derive(Debug, serde::Serialize)]
pub struct WallBenchReport {
    pub screens: usize,
    pub tiles: usize,
    pub map_tiles: usize,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    pub seconds: f64,
    /// Frames drawn per second (software rendering here, a GPU on a wall).
    pub fps: f64,
    /// CPU time of the main world's frame (input, ingest, layers, every tile's egui
    /// pass), milliseconds.
    pub mean_frame_cpu_ms: f64,
    pub p50_frame_cpu_ms: f64,
    pub p99_frame_cpu_ms: f64,
    /// The time between frames, milliseconds (what a viewer sees).
    pub p50_frame_interval_ms: f64,
    pub p99_frame_interval_ms: f64,
    pub live_entities: usize,
}

#[derive(Resource)]
struct WallBench {
    secs: f64,
    started: Option<Instant>,
    frame_start: Option<Instant>,
    last_end: Option<Instant>,
    cpu_ms: Vec<f64>,
    interval_ms: Vec<f64>,
    size: (u32, u32),
}

fn bench_frame_start(mut bench: ResMut<WallBench>) {
    bench.frame_start = Some(Instant::now());
}

fn bench_frame_end(
    mut bench: ResMut<WallBench>,
    ready: Res<super::ready::SceneReady>,
    wall: Res<Wall>,
    live: Option<Res<Live>>,
    windows: Query<(), With<WallWindow>>,
    mut exit: MessageWriter<AppExit>,
) {
    let now = Instant::now();
    let bench = &mut *bench;
    let drawn = ready.is_ready() && windows.iter().count() == wall.layout.screens.len();
    if !drawn || wall.started.elapsed() < Duration::from_secs(5) {
        bench.last_end = Some(now);
        return;
    }
    let started = *bench.started.get_or_insert(now);
    if let Some(start) = bench.frame_start {
        bench.cpu_ms.push((now - start).as_secs_f64() * 1000.0);
    }
    if let Some(last) = bench.last_end {
        bench.interval_ms.push((now - last).as_secs_f64() * 1000.0);
    }
    bench.last_end = Some(now);
    let elapsed = (now - started).as_secs_f64();
    if elapsed < bench.secs {
        return;
    }
    let mut cpu = bench.cpu_ms.clone();
    cpu.sort_by(f64::total_cmp);
    let mut interval = bench.interval_ms.clone();
    interval.sort_by(f64::total_cmp);
    let p = |v: &[f64], q: f64| (crate::stats::percentile(v, q) * 100.0).round() / 100.0;
    let tiles: usize = wall.layout.screens.iter().map(|s| s.tiles.len()).sum();
    let map_tiles = wall
        .layout
        .screens
        .iter()
        .flat_map(|s| &s.tiles)
        .filter(|t| t.kind.map().is_some())
        .count();
    let report = WallBenchReport {
        screens: wall.layout.screens.len(),
        tiles,
        map_tiles,
        width: bench.size.0,
        height: bench.size.1,
        frames: cpu.len(),
        seconds: (elapsed * 10.0).round() / 10.0,
        fps: ((cpu.len() as f64 / elapsed) * 10.0).round() / 10.0,
        mean_frame_cpu_ms: ((cpu.iter().sum::<f64>() / cpu.len().max(1) as f64) * 100.0).round()
            / 100.0,
        p50_frame_cpu_ms: p(&cpu, 0.5),
        p99_frame_cpu_ms: p(&cpu, 0.99),
        p50_frame_interval_ms: p(&interval, 0.5),
        p99_frame_interval_ms: p(&interval, 0.99),
        live_entities: live.map_or(0, |l| l.shown().len()),
    };
    match serde_json::to_string_pretty(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => error!("bench wall: {e}"),
    }
    exit.write(AppExit::Success);
}

/// The render layer nothing is on: the backdrop and egui cameras draw no meshes.
const UI_LAYER: usize = 31;
/// Base-map layers are on 1…5, sub-brains on 8…14; layer 0 (the ground, untagged
/// things) every map tile shows.
const MAP_LAYER_BASE: usize = 1;
const DOMAIN_LAYER_BASE: usize = 8;

fn map_layer_of(layer: MapLayer) -> usize {
    MAP_LAYER_BASE
        + MapLayer::ALL
            .iter()
            .position(|l| *l == layer)
            .unwrap_or_default()
}

#[cfg(test)]
fn map_layer_named(name: &str) -> Option<MapLayer> {
    Some(match name {
        "buildings" => MapLayer::Buildings,
        "roads" => MapLayer::Roads,
        "water" => MapLayer::Water,
        "green" => MapLayer::Green,
        "districts" => MapLayer::Districts,
        _ => return None,
    })
}

fn domain_layer_of(d: Domain) -> usize {
    DOMAIN_LAYER_BASE + Domain::ALL.iter().position(|x| *x == d).unwrap_or_default()
}

/// The egui pass of screen N: one schedule per screen, as bevy_egui asks.
#[derive(ScheduleLabel, Clone, Debug, PartialEq, Eq, Hash)]
pub struct WallScreenPass(pub usize);

/// The wall's layout in force, and the file it is watched in.
#[derive(Resource)]
pub struct Wall {
    pub layout: WallLayout,
    watch: Option<LayoutWatch>,
    last_look: Instant,
    /// Why the file's latest version was not applied.
    pub problem: Option<String>,
    /// Bumped when the layout changes: the screens are built again.
    generation: u64,
    built: Option<u64>,
    /// Monitors seen when the screens were last placed.
    monitors_seen: Vec<Seen>,
    ui_scale: f32,
    windowed: Option<(u32, u32)>,
    started: Instant,
    /// A briefing's slide shown, from 0, and the number of slides.
    slide: Option<(usize, usize)>,
}

/// A screen's window.
#[derive(Component)]
pub struct WallWindow {
    pub screen: usize,
    /// Its monitor was not found: shown in a window, said on screen.
    pub missing_monitor: Option<String>,
    /// Put on its monitor (or in its window) since the window was made.
    placed: bool,
    /// The monitor it was last put on.
    on: Option<String>,
    /// Where its window is to be moved and sized (place, size, frames left to try).
    settling: Option<(IVec2, UVec2, u32)>,
}

/// Frames a window is moved and sized again until it is where it was placed.
const SETTLE_TRIES: u32 = 300;

/// Cameras of a screen (rebuilt with the layout).
#[derive(Component)]
struct WallCamera;

/// A screen's egui camera (drawn last, over the map tiles).
#[derive(Component)]
struct WallUiCamera {
    screen: usize,
    /// Its egui context has the fonts and the theme (a new camera, a new context).
    styled: bool,
    /// Passes its egui context has drawn (a new slide is captured after a few).
    drawn: u32,
}

/// A map tile's camera and what it follows.
#[derive(Component)]
pub struct WallMapCamera {
    pub screen: usize,
    pub tile: usize,
    rig: CameraRig,
    follower: HotspotFollower,
    /// What the goal was last set for (a view's key): set again only when it changes.
    goal_for: String,
    /// What the tile shows now (a bookmark, an incident), for its heading.
    pub caption: String,
}

/// The data the tiles draw: the book, the vital signs and their history.
#[derive(Resource, Default)]
pub struct WallData {
    books: Option<PastBooks>,
    asked_at: Option<Instant>,
    read_at: Option<Instant>,
    pub book: Option<Book>,
    kpis: CityKpis,
    kpi_pass: Option<KpiPass>,
    kpis_at_ms: i64,
    epoch: u64,
    pub signs: SignHistory,
    /// The vital signs read from the recorded history on a thread of their own,
    /// until they come.
    past_signs: Option<std::sync::Mutex<std::sync::mpsc::Receiver<PastSigns>>>,
    /// Samples put ahead of the trends from the recorded history.
    pub signs_recorded: usize,
    pub state: DataState,
    now_ms: i64,
}

/// The city's figures over the hours kept, read from the history, and what went
/// wrong reading it.
type PastSigns = (Vec<(i64, CityKpis)>, Vec<String>);

/// Reads the figures every 5 minutes over the hours the trends keep, from the
/// recorded history (a seek each: never on the frame).
fn read_past_signs(
    dir: PathBuf,
    frame: crate::geo_frame::GeoFrame,
) -> std::sync::mpsc::Receiver<PastSigns> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("wall-history".into())
        .spawn(move || {
            let now = crate::clock::unix_ms_now();
            let past = match crate::history::History::open(&dir) {
                Ok(history) => {
                    let steps = crate::wall::KEEP_MS / (5 * 60_000);
                    let instants: Vec<i64> = (0..steps)
                        .map(|k| now - crate::wall::KEEP_MS + k * 5 * 60_000)
                        .collect();
                    crate::history::state_at::kpis_at(&history, frame, &instants)
                }
                Err(e) => (Vec::new(), vec![format!("{e:#}")]),
            };
            let _ = tx.send(past);
        });
    if let Err(e) = spawned {
        warn!("wall: cannot read the recorded history: {e}");
    }
    rx
}

impl WallData {
    pub fn kpis(&self) -> &CityKpis {
        &self.kpis
    }
}

/// Runs the wall until its windows are closed (or, with `--screenshot-dir`, until
/// every screen is written).
pub fn run(run: WallRun) -> anyhow::Result<()> {
    let started = Instant::now();
    super::WindowUiScale::checked(run.ui_scale)?;
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "the wall needs a display, and there is none (neither DISPLAY nor WAYLAND_DISPLAY is set): start it in the hall's graphical session, or under xvfb-run -a for pictures"
        );
    }
    if let Some((dir, _)) = run
        .screenshots
        .as_ref()
        .filter(|_| run.bench_secs.is_none())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot make the folder {}: {e}", dir.display()))?;
    }
    // A briefing's folder holds one deck, replaced whole when the new one is; one
    // briefing at a time writes into it.
    let mut deck_writer = match &run.briefing {
        Some(BriefingRun {
            mode: BriefingMode::Write { out: dir },
            ..
        }) => Some(crate::briefing::DeckWriter::begin(dir).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let map = super::load_map(run.map.as_deref(), &run.map_load)?;
    let time = crate::clock::CityTime::resolve(
        run.timezone.clone(),
        map.frame.origin_lon,
        map.frame.origin_lat,
    );
    let crate::feeds::config::FeedsSetup {
        feeds,
        rules: ranges,
        areas,
        ..
    } = match &run.feeds {
        Some(path) => crate::feeds::config::load_setup(path)?,
        None => crate::feeds::config::FeedsSetup {
            feeds: crate::feeds::sim_source::default_sim_feeds(),
            ..Default::default()
        },
    };
    let index = crate::map::pick::BuildingIndex::new(&map);
    let rig = CameraRig::for_bounds(map.local_bounds());
    let mut data = WallData::default();
    if let Some((open, config)) = run.log {
        data.books = Some(PastBooks::start(open, config)?);
    }
    if let Some(dir) = run.history.filter(|_| run.briefing.is_none()) {
        data.past_signs = Some(std::sync::Mutex::new(read_past_signs(dir, map.frame)));
    }
    // A briefing draws the record: its book, the first slide's screen, no feeds.
    let mut deck_shots = None;
    let mut presenting = None;
    let slide_count = run.briefing.as_ref().map(|b| b.deck.slides.len());
    if let Some(b) = run.briefing {
        data.book = Some(b.book);
        data.read_at = Some(Instant::now());
        match b.mode {
            BriefingMode::Write { .. } => {
                if let Some(writer) = deck_writer.take() {
                    deck_shots = Some(deck_to_write(b.deck, writer));
                }
            }
            BriefingMode::Present { presenter } => {
                presenting = Some(Presenting {
                    slides: b
                        .deck
                        .slides
                        .iter()
                        .enumerate()
                        .map(|(i, s)| crate::briefing::slide_screen(s, i, false))
                        .collect(),
                    talk: crate::briefing::Talk::new(b.deck.slides.len()),
                    deck: b.deck,
                    presenter_always: presenter,
                    presenter_dismissed: false,
                    presenter_shown: None,
                    started: Instant::now(),
                })
            }
        }
    }
    let feeds = if slide_count.is_some() {
        Vec::new()
    } else {
        feeds
    };
    let layout = match (&deck_shots, &presenting) {
        (Some(d), _) => Some(WallLayout {
            source: None,
            screens: d.screens.first().cloned().into_iter().collect(),
            bookmarks: Vec::new(),
        }),
        (_, Some(p)) => Some(WallLayout {
            source: None,
            screens: p.screens(p.presenter_always),
            bookmarks: Vec::new(),
        }),
        (None, None) => run.layout.clone(),
    };

    let default_layout = layout.is_none();
    let watch = layout
        .as_ref()
        .and_then(|l| l.source.clone())
        .map(LayoutWatch::new);
    let what = match (&deck_shots, &presenting) {
        (Some(_), _) => "slides written".to_string(),
        (_, Some(_)) => "presented full screen".to_string(),
        _ => layout
            .as_ref()
            .map_or_else(|| "a screen per monitor".into(), |l| l.describe()),
    };
    eprintln!(
        "zhongshu: {} of {} ({what}): {} buildings",
        if slide_count.is_some() {
            "briefing"
        } else {
            "wall"
        },
        map.name,
        map.buildings.len()
    );
    let mut app = App::new();
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: None,
                exit_condition: ExitCondition::DontExit,
                ..default()
            })
            .set(bevy::log::LogPlugin {
                filter: "wgpu=error,naga=warn,bevy_render=warn,bevy_winit=warn".into(),
                ..default()
            }),
    )
    .add_plugins((
        bevy::diagnostic::FrameTimeDiagnosticsPlugin::default(),
        EguiPlugin::default(),
    ))
    .add_plugins(super::egui_textures_this_frame)
    // A wall is unattended: it renders whether or not a window has the focus.
    .insert_resource(WinitSettings {
        focused_mode: bevy::winit::UpdateMode::Continuous,
        unfocused_mode: bevy::winit::UpdateMode::Continuous,
    })
    .insert_resource(City { map, index })
    .insert_resource(LocalTime(time))
    .init_resource::<super::ReplayRequest>()
    .insert_resource(super::ViewClock::default())
    .init_resource::<super::Selection>()
    // The layers and the scene read the rig (no window of the wall moves it).
    .insert_resource(rig)
    .insert_resource(StartedAt(started))
    .insert_resource(super::live::FeedSetup {
        feeds,
        ranges,
        areas,
        seed: 1,
        hall: run.hall.clone(),
        history: None,
        past: None,
    })
    .insert_resource(Wall {
        layout: layout.unwrap_or_else(|| WallLayout::default_for(1)),
        watch,
        last_look: Instant::now(),
        problem: None,
        generation: 0,
        built: None,
        monitors_seen: Vec::new(),
        ui_scale: run.ui_scale,
        windowed: run.screenshots.as_ref().map(|(_, size)| *size),
        started,
        slide: slide_count.map(|n| (0, n)),
    })
    .insert_resource(data)
    .insert_resource(DefaultLayout(default_layout))
    .configure_sets(
        Update,
        (AppSystems::Input, AppSystems::Apply, AppSystems::SyncScene).chain(),
    )
    .add_plugins((
        super::scene::plugin,
        super::ready::plugin,
        super::live::plugin,
        super::layers::plugin,
        super::governance::plugin,
        super::hotplug::plugin,
    ))
    .add_systems(Startup, |mut settings: ResMut<EguiGlobalSettings>| {
        settings.auto_create_primary_context = false;
    })
    .add_systems(
        Update,
        (
            (watch_layout, build_screens, place_on_monitors)
                .chain()
                .in_set(AppSystems::Input),
            wall_data.in_set(AppSystems::Apply),
            steer_map_cameras.in_set(AppSystems::SyncScene),
            // After the windows of a new layout are made (their commands applied).
            exit_when_closed.after(build_screens),
        ),
    )
    .add_systems(PostUpdate, tag_render_layers)
    // Next frame, once bevy has sent the window system what was placed.
    .add_systems(First, settle_windows)
    .add_observer(keep_off_monitors);
    for screen in 0..crate::wall::MAX_SCREENS {
        app.add_systems(WallScreenPass(screen), move |view: ScreenView| {
            draw_screen(screen, view)
        });
    }
    if let Some(secs) = run.bench_secs {
        app.insert_resource(WallBench {
            secs,
            started: None,
            frame_start: None,
            last_end: None,
            cpu_ms: Vec::new(),
            interval_ms: Vec::new(),
            size: run.screenshots.as_ref().map_or((0, 0), |(_, s)| *s),
        })
        .add_systems(First, bench_frame_start)
        .add_systems(Last, bench_frame_end.after(super::ready::track_readiness));
    }
    let writing = deck_shots.is_some();
    if let Some(shots) = deck_shots {
        app.insert_resource(shots)
            .add_systems(Last, play_deck.after(super::ready::track_readiness));
    }
    if let Some(presenting) = presenting {
        app.insert_resource(presenting).add_systems(
            Update,
            present.before(watch_layout).in_set(AppSystems::Input),
        );
    }
    if let Some((dir, _)) = run
        .screenshots
        .filter(|_| run.bench_secs.is_none() && !writing)
    {
        app.insert_resource(WallShots {
            dir,
            settled: 0,
            in_flight: 0,
            written: Vec::new(),
            done: false,
        })
        .add_systems(Last, capture_screens.after(super::ready::track_readiness));
    }
    let _trimmer = crate::memory::Trimmer::start(crate::memory::TRIM_EVERY);
    match app.run() {
        AppExit::Success => Ok(()),
        AppExit::Error(code) => anyhow::bail!("the wall exited with error code {code}"),
    }
}

/// No layout file: one screen per monitor, decided once the monitors are known.
#[derive(Resource)]
struct DefaultLayout(bool);

/// Reads the layout file again when it changed (once a second); a layout with an
/// error is said on every screen and the one in force stays.
fn watch_layout(mut wall: ResMut<Wall>) {
    if wall.last_look.elapsed() < Duration::from_secs(1) {
        return;
    }
    wall.last_look = Instant::now();
    let Some(watch) = wall.watch.as_mut() else {
        return;
    };
    match watch.changed() {
        None => {}
        Some(Ok(layout)) => {
            info!("wall layout {} changed: applied", layout.describe());
            wall.layout = layout;
            wall.problem = None;
            wall.generation += 1;
        }
        Some(Err(e)) => {
            warn!("wall layout not applied: {e}");
            wall.problem = Some(e);
        }
    }
}

/// A monitor as the wall places screens on it.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    entity: Entity,
    name: String,
    /// Its place on the desktop and its size, in physical pixels.
    at: IVec2,
    size: UVec2,
    /// It shows what a monitor before it at the same place shows (a clone, xrandr's
    /// `--same-as`): it has no index of its own and adds no screen.
    mirror: bool,
}

/// Monitors left to right (then top to bottom), with their names, places and sizes
/// as they are now. bevy's `Monitor` entities keep the place and size a monitor had
/// when it was first seen (winit calls a monitor given another mode or place the
/// same one), so these are read from winit's list, fresh after each RandR change,
/// once a window exists; its entity is the bevy monitor of the same name. winit's
/// windows are the main thread's own: the marker says the caller runs there.
fn monitors_in_order(
    monitors: &Query<(Entity, &Monitor)>,
    _on_main_thread: &bevy::ecs::system::NonSendMarker,
) -> Vec<Seen> {
    let known: Vec<Seen> = monitors
        .iter()
        .map(|(entity, m)| Seen {
            entity,
            name: m.name.clone().unwrap_or_default(),
            at: m.physical_position,
            size: UVec2::new(m.physical_width, m.physical_height),
            mirror: false,
        })
        .collect();
    let fresh: Option<Vec<(String, IVec2, UVec2)>> =
        bevy::winit::WINIT_WINDOWS.with_borrow(|windows| {
            let window = windows.windows.values().next()?;
            Some(
                window
                    .available_monitors()
                    .map(|m| {
                        let (at, size) = (m.position(), m.size());
                        (
                            m.name().unwrap_or_default(),
                            IVec2::new(at.x, at.y),
                            UVec2::new(size.width, size.height),
                        )
                    })
                    .collect(),
            )
        });
    let mut list = match fresh {
        // A monitor bevy has not made an entity for yet is taken a frame later.
        Some(fresh) => fresh
            .into_iter()
            .filter_map(|(name, at, size)| {
                let entity = known.iter().find(|k| k.name == name)?.entity;
                Some(Seen {
                    entity,
                    name,
                    at,
                    size,
                    mirror: false,
                })
            })
            .collect(),
        None => known,
    };
    // Clones by name, so that the same one of them is the first every time.
    list.sort_by(|a, b| (a.at.x, a.at.y, &a.name).cmp(&(b.at.x, b.at.y, &b.name)));
    for i in 1..list.len() {
        list[i].mirror = list[..i].iter().any(|m| m.at == list[i].at);
    }
    list
}

/// The monitors that show a picture of their own (clones counted once), in order.
fn distinct(monitors: &[Seen]) -> impl Iterator<Item = &Seen> {
    monitors.iter().filter(|m| !m.mirror)
}

/// The wall's own layout (no --layout) for `monitors`: a screen per monitor, each
/// placed by the monitor's name, so that one going away or coming back moves no
/// other screen until the layout is made again.
fn default_layout_on(monitors: &[Seen]) -> WallLayout {
    let mut layout = WallLayout::default_for(distinct(monitors).count());
    for (screen, monitor) in layout.screens.iter_mut().zip(distinct(monitors)) {
        screen.placement = crate::wall::Placement::MonitorName(monitor.name.clone());
    }
    layout
}

/// The monitor names the screens of `layout` are placed on, in order.
fn placed_on(layout: &WallLayout) -> Vec<&str> {
    layout
        .screens
        .iter()
        .filter_map(|s| match &s.placement {
            crate::wall::Placement::MonitorName(n) => Some(n.as_str()),
            _ => None,
        })
        .collect()
}

/// The monitor screen `placement` asks for among `monitors`: `Ok(None)` for a
/// screen at a position and size of its own, `Err` naming the monitor that is not
/// there.
fn monitor_of<'m>(
    placement: &crate::wall::Placement,
    monitors: &'m [Seen],
) -> Result<Option<&'m Seen>, String> {
    use crate::wall::Placement;
    match placement {
        Placement::MonitorIndex(i) => distinct(monitors)
            .nth(*i)
            .map(Some)
            .ok_or_else(|| format!("monitor {i}")),
        Placement::MonitorName(name) => monitors
            .iter()
            .find(|m| &m.name == name)
            .map(Some)
            .ok_or_else(|| format!("monitor \"{name}\"")),
        Placement::Area { .. } => Ok(None),
    }
}

/// Puts a screen's window where its placement says, with the window manager's help
/// or without it: on its monitor, borderless fullscreen and also moved and sized to
/// the monitor (a wall PC with no window manager leaves a fullscreen window where
/// and as large as it was made); its monitor not there, in a window with a frame,
/// half the size of the first monitor and centred on it, so the screen stays in
/// sight; at a position and size of its own, there. Sets the window's mode and
/// frame; the place and size it returns are given the window by [`settle_windows`].
fn place_window(
    window: &mut Window,
    placement: &crate::wall::Placement,
    monitors: &[Seen],
) -> Placed {
    let (mode, at, size, missing) = match monitor_of(placement, monitors) {
        Ok(Some(m)) => (
            WindowMode::BorderlessFullscreen(MonitorSelection::Entity(m.entity)),
            Some(m.at),
            Some(m.size),
            None,
        ),
        Ok(None) => match placement {
            crate::wall::Placement::Area { position, size } => (
                WindowMode::Windowed,
                Some(IVec2::new(position[0], position[1])),
                Some(UVec2::new(size[0], size[1])),
                None,
            ),
            _ => (WindowMode::Windowed, None, None, None),
        },
        Err(missing) => match monitors.first() {
            Some(first) => {
                let size = UVec2::new((first.size.x / 2).max(640), (first.size.y / 2).max(360));
                let at = first.at + (first.size.as_ivec2() - size.as_ivec2()).max(IVec2::ZERO) / 2;
                (WindowMode::Windowed, Some(at), Some(size), Some(missing))
            }
            None => (WindowMode::Windowed, None, None, Some(missing)),
        },
    };
    if window.mode != mode {
        window.mode = mode;
    }
    if let Some(at) = at {
        window.position = WindowPosition::At(at);
    }
    let framed = missing.is_some();
    if window.decorations != framed {
        window.decorations = framed;
    }
    Placed {
        missing,
        at: at.zip(size),
    }
}

/// Where [`place_window`] put a screen.
struct Placed {
    /// The monitor asked for that is not there.
    missing: Option<String>,
    /// The place and size the window is to have (physical pixels).
    at: Option<(IVec2, UVec2)>,
}

/// Moves and sizes each screen's window to where it was placed, through the window
/// system, until it is there: after going fullscreen (which winit does with the
/// place a monitor had when it was first seen) and whatever bevy sends in between.
/// The size is asked of the window system, and the window takes it when the window
/// system says it has it (as when a window manager resizes it), never before: a
/// screen's cameras and the window's surface always agree on its size.
fn settle_windows(
    mut windows: Query<(Entity, &mut WallWindow)>,
    _main_thread: bevy::ecs::system::NonSendMarker,
) {
    for (entity, mut w) in &mut windows {
        let Some((at, size, tries)) = w.settling else {
            continue;
        };
        let there = bevy::winit::WINIT_WINDOWS.with_borrow(|windows| {
            let Some(window) = windows.get_window(entity) else {
                return true;
            };
            let place = window.outer_position().ok();
            let inner = window.inner_size();
            let placed = place == Some(winit::dpi::PhysicalPosition::new(at.x, at.y));
            let sized = (inner.width, inner.height) == (size.x, size.y);
            if !placed {
                window.set_outer_position(winit::dpi::PhysicalPosition::new(at.x, at.y));
            }
            if !sized {
                let _ = window.request_inner_size(winit::dpi::PhysicalSize::new(size.x, size.y));
            }
            placed && sized
        });
        // Asked again each frame for a few seconds; a window manager that will not
        // have it so is not argued with for ever.
        w.settling = (!there && tries > 0).then_some((at, size, tries - 1));
    }
}

/// Builds each screen's window and cameras (again when the layout changed): the
/// windows that stay keep their place; the cameras are made anew.
#[allow(clippy::too_many_arguments)]
fn build_screens(
    mut commands: Commands,
    mut wall: ResMut<Wall>,
    default_layout: Res<DefaultLayout>,
    monitors: Query<(Entity, &Monitor)>,
    frames: Res<bevy::diagnostic::FrameCount>,
    windows: Query<(Entity, &WallWindow)>,
    cameras: Query<(Entity, Option<&WallUiCamera>), With<WallCamera>>,
    rig: Res<CameraRig>,
    main_thread: bevy::ecs::system::NonSendMarker,
) {
    if wall.built == Some(wall.generation) {
        return;
    }
    let found = monitors_in_order(&monitors, &main_thread);
    // The monitors arrive with the event loop; a screenshot needs none.
    if found.is_empty() && wall.windowed.is_none() && frames.0 < 30 {
        return;
    }
    if default_layout.0 && wall.built.is_none() && wall.windowed.is_none() {
        wall.layout = default_layout_on(&found);
    }
    wall.built = Some(wall.generation);
    wall.monitors_seen = found.clone();
    let mut existing: Vec<Option<Entity>> = vec![None; crate::wall::MAX_SCREENS];
    // The monitor each kept window was on: a screen the new layout puts on another
    // says so when it is placed there.
    let mut was_on: Vec<Option<String>> = vec![None; crate::wall::MAX_SCREENS];
    for (e, w) in &windows {
        if w.screen < wall.layout.screens.len() {
            existing[w.screen] = Some(e);
            was_on[w.screen] = w.on.clone();
        } else {
            commands.entity(e).despawn();
        }
    }
    // A screen that keeps its window keeps its egui camera (and its context, fonts
    // and measured areas): the next slide of a briefing is drawn whole at once.
    let mut ui_kept = [false; crate::wall::MAX_SCREENS];
    for (e, ui) in &cameras {
        match ui {
            Some(ui) if existing.get(ui.screen).is_some_and(Option::is_some) => {
                ui_kept[ui.screen] = true;
            }
            _ => commands.entity(e).despawn(),
        }
    }
    let screens = wall.layout.screens.clone();
    for (si, screen) in screens.iter().enumerate() {
        // Made as a plain window where the screen goes (on its monitor, of its size),
        // then put fullscreen by place_on_monitors once it exists: a window made
        // fullscreen is made at a default size, which only a window manager corrects.
        let (position, resolution, missing) = match (wall.windowed, &screen.placement) {
            // Pictures: a window each, of the size asked for, wherever.
            (Some(size), _) => (
                WindowPosition::Automatic,
                WindowResolution::from(size).with_scale_factor_override(1.0),
                None,
            ),
            (None, crate::wall::Placement::Area { position, size }) => (
                WindowPosition::At(IVec2::new(position[0], position[1])),
                WindowResolution::new(size[0], size[1]),
                None,
            ),
            (None, placement) => match monitor_of(placement, &found) {
                Ok(Some(m)) => {
                    let mut resolution = WindowResolution::default();
                    resolution.set_physical_resolution(m.size.x, m.size.y);
                    (WindowPosition::At(m.at), resolution, None)
                }
                other => (
                    WindowPosition::Automatic,
                    WindowResolution::new(1280, 720),
                    other.err(),
                ),
            },
        };
        // A new window made at its place is placed once it exists (a screen at a
        // position and size of its own needs nothing more then); a window kept from
        // the layout before is placed again, whatever it had become.
        let placed = wall.windowed.is_some()
            || (existing[si].is_none()
                && matches!(screen.placement, crate::wall::Placement::Area { .. }));
        if let Some(m) = &missing {
            warn!(
                "wall screen \"{}\": {m} is not connected; shown in a window until it is",
                screen.name
            );
        }
        let title = match wall.slide {
            Some(_) if si == 0 => "中枢 Zhongshu briefing 简报".to_string(),
            Some(_) => "中枢 Zhongshu briefing 简报 — presenter 演讲者视图".to_string(),
            None => format!("中枢 Zhongshu wall — {}", screen.name),
        };
        let window = match existing[si] {
            Some(e) => {
                commands.entity(e).insert(WallWindow {
                    screen: si,
                    missing_monitor: missing,
                    placed,
                    on: was_on[si].take(),
                    settling: None,
                });
                e
            }
            None => commands
                .spawn((
                    Window {
                        title,
                        resolution,
                        mode: WindowMode::Windowed,
                        position,
                        decorations: wall.windowed.is_some() || missing.is_some(),
                        // Mailbox, else immediate: a window that is covered or on a
                        // sleeping panel never holds the others' frames back.
                        present_mode: PresentMode::AutoNoVsync,
                        ..default()
                    },
                    WallWindow {
                        screen: si,
                        missing_monitor: missing,
                        placed,
                        on: None,
                        settling: None,
                    },
                ))
                .id(),
        };
        let target = RenderTarget::Window(WindowRef::Entity(window));
        // The screen's ground: the gaps between tiles and the non-map tiles.
        commands.spawn((
            WallCamera,
            Camera3d::default(),
            Camera {
                order: (si * 100) as isize,
                clear_color: ClearColorConfig::Custom(theme::CLEAR),
                ..default()
            },
            target.clone(),
            RenderLayers::layer(UI_LAYER),
            Msaa::Sample4,
            Tonemapping::None,
        ));
        for (ti, tile) in screen.tiles.iter().enumerate() {
            let Some(map) = tile.kind.map() else { continue };
            let mut layers = RenderLayers::layer(0);
            for l in MapLayer::ALL {
                let name = format!("{l:?}").to_ascii_lowercase();
                if map.layers.as_ref().is_none_or(|set| set.contains(&name)) {
                    layers = layers.with(map_layer_of(l));
                }
            }
            for d in Domain::ALL {
                if map.shows_domain(d) {
                    layers = layers.with(domain_layer_of(d));
                }
            }
            let mut tile_rig = rig.clone();
            tile_rig.bookmarks.clear();
            commands.spawn((
                WallCamera,
                WallMapCamera {
                    screen: si,
                    tile: ti,
                    rig: tile_rig,
                    follower: HotspotFollower::default(),
                    goal_for: String::new(),
                    caption: map.view_name.clone(),
                },
                Camera3d::default(),
                Camera {
                    order: (si * 100 + 1 + ti) as isize,
                    // A clear would clear the whole window, not just the tile: the
                    // backdrop cleared it, in the map's own colour.
                    clear_color: ClearColorConfig::None,
                    // No size until the window has one (set each frame).
                    is_active: false,
                    ..default()
                },
                target.clone(),
                Projection::Perspective(PerspectiveProjection {
                    fov: FOV_Y,
                    near: 1.0,
                    far: 200_000.0,
                    ..default()
                }),
                layers,
                Msaa::Sample4,
                Tonemapping::None,
                Transform::from_translation(rig.pose.eye()).looking_at(rig.pose.focus, Vec3::Y),
            ));
        }
        // egui over everything: the tiles' text, headings and banners.
        if ui_kept[si] {
            continue;
        }
        commands.spawn((
            WallCamera,
            WallUiCamera {
                screen: si,
                styled: false,
                drawn: 0,
            },
            Camera3d::default(),
            Camera {
                order: (si * 100 + 99) as isize,
                clear_color: ClearColorConfig::None,
                ..default()
            },
            target,
            RenderLayers::layer(UI_LAYER),
            Msaa::Sample4,
            Tonemapping::None,
            EguiSchedule::new(WallScreenPass(si)),
        ));
    }
}

/// How long the default layout keeps the screen of a monitor that went away (in a
/// window) before it is made for the monitors that are left.
const DEFAULT_LAYOUT_SHRINKS_AFTER: Duration = Duration::from_secs(5);

/// A window made, or a monitor plugged in or out (or given another mode): each
/// screen goes on its own monitor, or into a window until it returns.
fn place_on_monitors(
    mut wall: ResMut<Wall>,
    default_layout: Res<DefaultLayout>,
    mut fewer_since: Local<Option<Instant>>,
    monitors: Query<(Entity, &Monitor)>,
    mut windows: Query<(&mut Window, &mut WallWindow, Has<RawHandleWrapper>)>,
    // winit's monitors are read on the main thread, where its windows live.
    main_thread: bevy::ecs::system::NonSendMarker,
) {
    if wall.windowed.is_some() || wall.built.is_none() {
        return;
    }
    let found = monitors_in_order(&monitors, &main_thread);
    // The wall's own layout (no --layout) has a screen per monitor (clones counted
    // once), each on its monitor by name: one plugged in gets its screen at once (the
    // screens there keep their windows); when one goes away, its screen goes on in a
    // window for a while, in case it comes straight back (a cable reseated, a panel's
    // handshake), the others where they are; then the layout is made for the
    // monitors there are.
    if default_layout.0 && !found.is_empty() {
        let count = distinct(&found).count().min(crate::wall::MAX_SCREENS);
        let screens = wall.layout.screens.len();
        let change = match count.cmp(&screens) {
            std::cmp::Ordering::Greater => Some("a monitor was plugged in"),
            std::cmp::Ordering::Less => {
                let since = fewer_since.get_or_insert_with(Instant::now);
                (since.elapsed() >= DEFAULT_LAYOUT_SHRINKS_AFTER).then_some("a monitor went away")
            }
            std::cmp::Ordering::Equal => {
                *fewer_since = None;
                // As many, but not the same ones, or in another order.
                let names: Vec<&str> = distinct(&found).map(|m| m.name.as_str()).collect();
                (placed_on(&wall.layout) != names[..count]).then_some("the monitors changed")
            }
        };
        if let Some(what) = change {
            *fewer_since = None;
            wall.layout = default_layout_on(&found);
            wall.generation += 1;
            let screens = if count == 1 { "screen" } else { "screens" };
            info!("wall: {what}: {count} {screens} now");
            return;
        }
    }
    let changed = found != wall.monitors_seen;
    if !changed && windows.iter().all(|(_, w, made)| w.placed || !made) {
        return;
    }
    wall.monitors_seen = found.clone();
    for (mut window, mut w, made) in &mut windows {
        if !made || (w.placed && !changed) {
            continue;
        }
        let Some(screen) = wall.layout.screens.get(w.screen) else {
            continue;
        };
        let Placed { missing, at } = place_window(&mut window, &screen.placement, &found);
        w.settling = at.map(|(at, size)| (at, size, SETTLE_TRIES));
        let on = monitor_of(&screen.placement, &found)
            .ok()
            .flatten()
            .map(|m| m.name.clone());
        match &missing {
            Some(m) if w.missing_monitor.is_none() => warn!(
                "wall screen \"{}\": {m} went away; shown in a window until it is back",
                screen.name
            ),
            None if w.missing_monitor.is_some() => {
                info!("wall screen \"{}\": its monitor is back", screen.name)
            }
            // A screen counted by index lands on another monitor when one to its
            // left comes or goes: said, so nobody wonders why it moved.
            None if w.on.is_some() && on.is_some() && on != w.on => info!(
                "wall screen \"{}\": now on monitor \"{}\"",
                screen.name,
                on.as_deref().unwrap_or_default()
            ),
            _ => {}
        }
        w.missing_monitor = missing;
        w.on = on;
        w.placed = true;
    }
}

/// bevy links a window to the monitor it is on so that despawning the monitor
/// despawns the window (`HasWindows` is `linked_spawn`): unplugging the monitor a
/// wall's windows stood on closed them all, and the wall with them. A wall window
/// is never linked; it outlives its monitor and goes on in a window.
fn keep_off_monitors(
    insert: On<Insert, bevy::window::OnMonitor>,
    walls: Query<(), With<WallWindow>>,
    mut commands: Commands,
) {
    if walls.contains(insert.entity) {
        commands
            .entity(insert.entity)
            .remove::<bevy::window::OnMonitor>();
    }
}

/// Each map tile's content on its own render layers: base-map layers by kind, live
/// layers by sub-brain.
#[allow(clippy::type_complexity)]
fn tag_render_layers(
    mut commands: Commands,
    chunks: Query<(Entity, &ChunkLayer), Without<RenderLayers>>,
    markers: Query<(Entity, &LiveMarker, Option<&RenderLayers>), Changed<LiveMarker>>,
    sheets: Query<
        (
            Entity,
            Has<HeatmapSheet>,
            Has<ChoroplethSheet>,
            Has<TrafficChunkMarker>,
        ),
        (
            Without<RenderLayers>,
            Or<(
                With<HeatmapSheet>,
                With<ChoroplethSheet>,
                With<TrafficChunkMarker>,
            )>,
        ),
    >,
) {
    for (e, ChunkLayer(layer)) in &chunks {
        commands
            .entity(e)
            .insert(RenderLayers::layer(map_layer_of(*layer)));
    }
    for (e, marker, layers) in &markers {
        let want = RenderLayers::layer(domain_layer_of(marker.domain));
        if layers != Some(&want) {
            commands.entity(e).insert(want);
        }
    }
    for (e, heat, choropleth, traffic) in &sheets {
        let domain = match (heat, choropleth, traffic) {
            (true, _, _) => Domain::Ecology,
            (_, true, _) => Domain::Economy,
            _ => Domain::Traffic,
        };
        commands
            .entity(e)
            .insert(RenderLayers::layer(domain_layer_of(domain)));
    }
}

/// Keeps the book, the vital signs and the data's state current.
fn wall_data(
    mut data: ResMut<WallData>,
    live: Option<Res<Live>>,
    governance: Res<super::governance::Governance>,
    wall: Res<Wall>,
) {
    let data = &mut *data;
    let now_ms = crate::clock::unix_ms_now();
    data.now_ms = now_ms;
    if let Some(rx) = data.past_signs.as_mut() {
        let rx = rx
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rx.try_recv() {
            Ok((past, problems)) => {
                for p in problems {
                    warn!("wall: the recorded history: {p}");
                }
                data.signs_recorded = data.signs.seed(&past);
                data.past_signs = None;
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => data.past_signs = None,
        }
    }
    // The book as of now, asked every second; the reader reads the log again when
    // it is 2 s old.
    if let Some(books) = data.books.as_mut() {
        if data
            .asked_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            books.ask(now_ms);
            data.asked_at = Some(Instant::now());
        }
        if books.poll()
            && let Some(shown) = &books.shown
        {
            data.book = Some(shown.book.clone());
            data.read_at = Some(Instant::now());
        }
    }
    if let Some(live) = &live {
        if data.epoch != live.shown_epoch {
            data.epoch = live.shown_epoch;
            data.kpi_pass = None;
            data.kpis_at_ms = i64::MIN / 2;
        }
        if data.kpi_pass.is_none() && now_ms.saturating_sub(data.kpis_at_ms) > 1000 {
            data.kpi_pass = Some(KpiPass::new(now_ms));
        }
        if let Some(pass) = &mut data.kpi_pass
            && let Some(figures) = pass.step(
                live.shown(),
                &governance.reconciliation.winner_of,
                crate::state::sweep::Budget::frame(),
            )
        {
            data.kpis_at_ms = pass.now_ms();
            data.kpis = figures;
            data.kpi_pass = None;
            let kpis = data.kpis.clone();
            data.signs.sample(now_ms, &kpis);
        }
        data.state.feeds = live
            .feeds
            .iter()
            .zip(&live.ingest.health)
            .map(|(f, h)| FeedState {
                name: f.name.clone(),
                domain: f.domain,
                freshness: freshness(h.data_as_of_ms, f.interval_s, now_ms).0,
                data_age_s: h.data_age_s(now_ms),
                quarantined: h.quarantined.is_some(),
                failing: h.polls_failed > 0 && h.data_as_of_ms.is_none(),
            })
            .collect();
    }
    data.state.book_trouble = data.books.as_ref().and_then(|b| b.trouble.clone());
    data.state.book_age_s = data.read_at.map(|t| t.elapsed().as_secs_f64());
    data.state.uptime_s = wall.started.elapsed().as_secs_f64();
    if data.books.is_none() {
        data.state.book_trouble = Some("no dispatch log given".into());
    }
}

/// A map tile's size in logical pixels and where it lies in its window, physical.
fn tile_viewport(
    wall: &Wall,
    window: &Window,
    screen: usize,
    tile: usize,
) -> Option<(Vec2, Viewport)> {
    let s = wall.layout.screens.get(screen)?;
    let t = s.tiles.get(tile)?;
    let scale = window.scale_factor();
    let [x, y, w, h] = s.tile_rect(t, [window.width(), window.height()]);
    let max = window.physical_size();
    let pos = UVec2::new((x * scale) as u32, (y * scale) as u32).min(max);
    let size = UVec2::new((w * scale) as u32, (h * scale) as u32).min(max.saturating_sub(pos));
    (size.x > 0 && size.y > 0).then(|| {
        (
            Vec2::new(w, h),
            Viewport {
                physical_position: pos,
                physical_size: size,
                ..default()
            },
        )
    })
}

/// The camera pose for a view, in a tile of `size` logical pixels.
fn goal_for(rig: &mut CameraRig, city: &City, view: &View) {
    match *view {
        View::City => rig.reset(),
        View::At {
            lon,
            lat,
            distance_m,
            yaw_deg,
            pitch_deg,
        } => {
            let [e, n] = city.map.frame.local_from_wgs84(lon, lat);
            rig.goal.focus = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
            rig.goal.distance = distance_m as f32;
            rig.goal.yaw = (yaw_deg as f32).to_radians();
            rig.goal.pitch = (pitch_deg as f32).to_radians();
            rig.clamp_goal();
        }
    }
}

/// Sizes each map tile's viewport to its cell, and steers its camera: a fixed view, the
/// hotspot, or the tour's stop.
fn steer_map_cameras(
    time: Res<Time>,
    wall: Res<Wall>,
    city: Res<City>,
    mut data: ResMut<WallData>,
    windows: Query<(&Window, &WallWindow)>,
    mut cameras: Query<(&mut WallMapCamera, &mut Camera, &mut Transform)>,
) {
    let now_ms = data.now_ms;
    let data = &mut *data;
    for (mut tile_cam, mut camera, mut transform) in &mut cameras {
        let tile_cam = &mut *tile_cam;
        let Some((window, _)) = windows.iter().find(|(_, w)| w.screen == tile_cam.screen) else {
            camera.is_active = false;
            continue;
        };
        let Some((size, viewport)) = tile_viewport(&wall, window, tile_cam.screen, tile_cam.tile)
        else {
            camera.is_active = false;
            continue;
        };
        let same = camera.viewport.as_ref().is_some_and(|v| {
            v.physical_position == viewport.physical_position
                && v.physical_size == viewport.physical_size
        });
        if !same {
            camera.viewport = Some(viewport);
        }
        camera.is_active = true;
        let first_view = tile_cam.rig.map_view.is_none();
        tile_cam.rig.map_view = MapView::new(Rect::new(0.0, 0.0, size.x, size.y), size);
        let Some(kind) = wall
            .layout
            .screens
            .get(tile_cam.screen)
            .and_then(|s| s.tiles.get(tile_cam.tile))
            .map(|t| &t.kind)
        else {
            continue;
        };
        let (key, view, caption) = match kind {
            TileKind::Map(m) => (m.view_name.clone(), m.view, m.view_name.clone()),
            TileKind::Hotspot(m) => {
                match data.book.as_ref().and_then(|b| tile_cam.follower.follow(b)) {
                    Some(i) => (
                        i.id.clone(),
                        View::At {
                            lon: i.lon,
                            lat: i.lat,
                            distance_m: 700.0,
                            yaw_deg: 25.0,
                            pitch_deg: 50.0,
                        },
                        format!("{} · {} · {}", i.severity.label(), i.id, i.title),
                    ),
                    None => (
                        "no incident".into(),
                        m.view,
                        "No open incident 无未结事件".into(),
                    ),
                }
            }
            TileKind::Tour { every_s, stops, .. } => {
                let all = crate::wall::tour_stops(stops, data.book.as_ref(), 900.0);
                let at = crate::wall::tour_index(now_ms, *every_s, all.len());
                let stop = &all[at];
                (
                    format!("{at} {}", stop.name),
                    stop.view,
                    format!("{} ({}/{})", stop.name, at + 1, all.len()),
                )
            }
            _ => continue,
        };
        let key = format!("{key} {}x{}", size.x as u32, size.y as u32);
        if key != tile_cam.goal_for {
            goal_for(&mut tile_cam.rig, &city, &view);
            if tile_cam.goal_for.is_empty() || first_view {
                tile_cam.rig.pose = tile_cam.rig.goal;
            }
            tile_cam.goal_for = key;
        }
        tile_cam.caption = caption;
        tile_cam.rig.step(time.delta_secs());
        let pose = tile_cam.rig.pose;
        *transform = Transform::from_translation(pose.eye()).looking_at(pose.focus, Vec3::Y);
    }
}

/// The wall's windows all closed by hand: the process ends.
fn exit_when_closed(
    wall: Res<Wall>,
    windows: Query<&WallWindow>,
    presenting: Option<Res<Presenting>>,
    mut exit: MessageWriter<AppExit>,
) {
    // A briefing ends with its slides' window (the presenter's may be closed alone).
    let shown = match presenting {
        Some(_) => windows.iter().any(|w| w.screen == 0),
        None => !windows.is_empty(),
    };
    if wall.built == Some(wall.generation) && !shown {
        exit.write(AppExit::Success);
    }
}

/// What a screen's egui pass reads.
#[derive(bevy::ecs::system::SystemParam)]
struct ScreenView<'w, 's> {
    contexts: Query<'w, 's, (&'static mut EguiContext, &'static mut WallUiCamera)>,
    windows: Query<'w, 's, (&'static Window, &'static WallWindow)>,
    map_cameras: Query<'w, 's, &'static WallMapCamera>,
    wall: Res<'w, Wall>,
    data: Res<'w, WallData>,
    live: Option<Res<'w, Live>>,
    time: Res<'w, LocalTime>,
    city: Res<'w, City>,
    presenting: Option<Res<'w, Presenting>>,
}

/// The type size of the wall's body text on a window `height` logical pixels tall: a
/// share of the height, so it reads from 5 m away on any panel.
pub fn wall_zoom(width: f32, height: f32, ui_scale: f32) -> f32 {
    // By the shorter side: a screen on end (or a tall slide) keeps words whole.
    (height.min(width) / 540.0).clamp(1.0, 6.0) * ui_scale
}

fn draw_screen(screen: usize, mut view: ScreenView) {
    let Some((mut ctx, mut camera)) = view.contexts.iter_mut().find(|(_, c)| c.screen == screen)
    else {
        return;
    };
    let ctx = ctx.get_mut().clone();
    // A layout applied makes the screen's cameras anew, and their contexts.
    if !camera.styled {
        super::fonts::install_fonts(&ctx);
        theme::egui_style(&ctx);
        camera.styled = true;
    }
    camera.drawn = camera.drawn.saturating_add(1);
    let Some((window, wall_window)) = view.windows.iter().find(|(_, w)| w.screen == screen) else {
        return;
    };
    let zoom = wall_zoom(window.width(), window.height(), view.wall.ui_scale);
    if (ctx.zoom_factor() - zoom).abs() > 1e-3 {
        ctx.set_zoom_factor(zoom);
    }
    let Some(layout) = view.wall.layout.screens.get(screen) else {
        return;
    };
    let size = [window.width(), window.height()];
    let painter = ctx.layer_painter(egui::LayerId::background());
    let now_ms = view.data.now_ms;
    for (ti, tile) in layout.tiles.iter().enumerate() {
        let [x, y, w, h] = layout.tile_rect(tile, size);
        let rect = egui::Rect::from_min_size(
            egui::pos2(x / zoom, y / zoom),
            egui::vec2(w / zoom, h / zoom),
        );
        let is_map = tile.kind.map().is_some();
        if !is_map {
            painter.rect_filled(rect, 6.0, theme::PANEL_FILL);
        }
        painter.rect_stroke(
            rect,
            6.0,
            egui::Stroke::new(1.0, egui::Color32::from_rgb(0x1c, 0x2a, 0x40)),
            egui::StrokeKind::Inside,
        );
        let caption = view
            .map_cameras
            .iter()
            .find(|c| c.screen == screen && c.tile == ti)
            .map(|c| c.caption.clone());
        let mut ui = egui::Ui::new(
            ctx.clone(),
            egui::Id::new(("wall-tile", screen, ti)),
            egui::UiBuilder::new()
                .max_rect(rect.shrink(10.0))
                .layer_id(egui::LayerId::background()),
        );
        ui.set_clip_rect(rect);
        tile_heading(&mut ui, tile, caption.as_deref(), is_map);
        match &tile.kind {
            TileKind::Kpi => kpi_ui(&mut ui, &view.data),
            TileKind::Incidents => incidents_ui(&mut ui, view.data.book.as_ref(), now_ms),
            TileKind::Orders => orders_ui(&mut ui, view.data.book.as_ref(), now_ms),
            TileKind::Feeds => feeds_ui(&mut ui, &view.data.state),
            TileKind::Trends => trends_ui(&mut ui, &view.data, screen, ti),
            TileKind::Slide {
                lines,
                details,
                notes,
            } => slide_ui(&mut ui, lines, details, notes),
            TileKind::Charts(charts) => {
                super::charts::charts_ui(&mut ui, ("wall-charts", screen, ti), charts, &view.time.0)
            }
            TileKind::Presenter(p) => presenter_ui(
                &mut ui,
                p,
                view.presenting.as_ref().map(|p| p.started.elapsed()),
                &view.time.0.time_of_day(crate::clock::unix_ms_now()),
            ),
            _ => {}
        }
        if let (Some(cam), Some(book), Some(map)) = (
            view.map_cameras
                .iter()
                .find(|c| c.screen == screen && c.tile == ti),
            view.data.book.as_ref(),
            tile.kind.map(),
        ) {
            incident_pins(&ctx, rect, zoom, cam, book, map, &view.city);
        }
        if let Some(banner) = crate::wall::tile_banner(&tile.kind, &view.data.state) {
            tile_banner_ui(&ctx, rect, &banner, (screen, ti));
        }
    }
    // The whole screen: the clock, the layout's trouble, a monitor gone.
    let mut notes = Vec::new();
    if let Some(problem) = &view.wall.problem {
        notes.push(format!("Layout not applied 布局未生效: {problem}"));
    }
    if let Some(m) = &wall_window.missing_monitor {
        notes.push(format!("{m} not connected 显示器未连接: shown in a window"));
    }
    let clock = match view.wall.slide {
        // A slide is of the record: its number, not the time it was drawn.
        Some((i, slides)) => format!("{} / {slides}", i + 1),
        None => view.time.0.time_of_day(now_ms),
    };
    // A slide's number at the bottom left (the right's foot is the charts' time
    // axis, the top the headings); the wall's clock at the bottom right. Painted at
    // the corner each frame: an area anchored there is placed by the size it had the
    // frame before, and a wider second ("…:51" to "…:54") ran off the screen.
    let area = ctx.content_rect();
    let (corner, at) = if view.wall.slide.is_some() {
        (
            egui::Align2::LEFT_BOTTOM,
            area.left_bottom() + egui::vec2(12.0, -8.0),
        )
    } else {
        (
            egui::Align2::RIGHT_BOTTOM,
            area.right_bottom() + egui::vec2(-12.0, -8.0),
        )
    };
    let hall = if view.live.as_ref().is_some_and(|l| l.hall.is_some()) {
        " · hall"
    } else {
        ""
    };
    // The presenter's screen says the slide at its top (its foot is the keys' help).
    let presenter = layout
        .tiles
        .iter()
        .any(|t| matches!(t.kind, TileKind::Presenter(_)));
    if !presenter {
        let body = ctx.global_style().text_styles[&egui::TextStyle::Body].clone();
        let painter = ctx.layer_painter(egui::LayerId::new(
            egui::Order::Foreground,
            egui::Id::new(("wall-clock", screen)),
        ));
        let galley = painter.layout_no_wrap(format!("{clock}{hall}"), body, theme::MUTED);
        let rect = corner.anchor_size(at, galley.size());
        // On a backing of the panel's colour: it reads over a map's markers.
        painter.rect_filled(
            rect.expand(4.0),
            4.0,
            theme::PANEL_FILL.gamma_multiply(0.85),
        );
        painter.galley(rect.min, galley, theme::MUTED);
    }
    if !notes.is_empty() {
        egui::Area::new(egui::Id::new(("wall-notes", screen)))
            .order(egui::Order::Foreground)
            .anchor(egui::Align2::CENTER_BOTTOM, egui::vec2(0.0, -8.0))
            .interactable(false)
            .show(&ctx, |ui| {
                egui::Frame::new()
                    .fill(egui::Color32::from_rgb(0x5a, 0x16, 0x16))
                    .inner_margin(8.0)
                    .corner_radius(4.0)
                    .show(ui, |ui| {
                        for n in &notes {
                            ui.label(egui::RichText::new(n).color(egui::Color32::WHITE));
                        }
                    });
            });
    }
}

/// The open incidents of the tile's sub-brains as pins where they are, coloured by
/// severity; the one a hotspot follows ringed.
fn incident_pins(
    ctx: &egui::Context,
    rect: egui::Rect,
    zoom: f32,
    cam: &WallMapCamera,
    book: &Book,
    map: &crate::wall::MapTile,
    city: &City,
) {
    // Under the tile's heading, never over it.
    let painter = ctx
        .layer_painter(egui::LayerId::new(
            egui::Order::Middle,
            egui::Id::new(("wall-pins", cam.screen, cam.tile)),
        ))
        .with_clip_rect(egui::Rect::from_min_max(
            egui::pos2(rect.min.x, (rect.min.y + 40.0).min(rect.max.y)),
            rect.max,
        ));
    let size = Vec2::new(rect.width() * zoom, rect.height() * zoom);
    let focus = map.focus.as_deref();
    for i in book
        .incidents
        .iter()
        .filter(|i| i.is_open() || focus == Some(i.id.as_str()))
    {
        if !map.shows_domain(i.domain) {
            continue;
        }
        let [e, n] = city.map.frame.local_from_wgs84(i.lon, i.lat);
        let world = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
        let Some(p) = super::camera::project(&cam.rig.pose, world, size) else {
            continue;
        };
        let at = rect.min + egui::vec2(p.x / zoom, p.y / zoom);
        if !rect.contains(at) {
            continue;
        }
        let colour = severity_colour(i.severity);
        if cam.follower.current.as_deref() == Some(i.id.as_str()) || focus == Some(i.id.as_str()) {
            painter.circle_stroke(at, 16.0, egui::Stroke::new(3.0, colour));
        }
        painter.circle(
            at,
            7.0,
            colour,
            egui::Stroke::new(1.5, egui::Color32::WHITE),
        );
    }
}

/// A briefing slide's text: its lines in large type, wrapped; the notes below, muted.
fn slide_ui(ui: &mut egui::Ui, lines: &[String], details: &[String], notes: &[String]) {
    // The type at its size when it fits the tile, else smaller (to half) until it
    // does: a slide never loses a line off its foot.
    let width = ui.available_width();
    let room = ui.available_height();
    let parts: [(&[String], f32, f32); 3] =
        [(lines, 17.0, 6.0), (details, 12.0, 0.0), (notes, 12.0, 0.0)];
    let height_at = |scale: f32| -> f32 {
        ui.ctx().fonts_mut(|fonts| {
            let mut h = 6.0 * scale;
            for (texts, size, gap) in parts {
                if !texts.is_empty() {
                    h += 8.0 * scale;
                }
                for t in texts {
                    let galley = fonts.layout(
                        t.clone(),
                        egui::FontId::proportional(size * scale),
                        egui::Color32::WHITE,
                        width,
                    );
                    h += galley.size().y + gap * scale + ui.spacing().item_spacing.y;
                }
            }
            h
        })
    };
    let mut scale = 1.0f32;
    while scale > 0.5 && height_at(scale) > room {
        scale -= 0.05;
    }
    ui.add_space(6.0 * scale);
    for line in lines {
        ui.add(
            egui::Label::new(
                egui::RichText::new(line)
                    .size(17.0 * scale)
                    .color(egui::Color32::WHITE),
            )
            .wrap(),
        );
        ui.add_space(6.0 * scale);
    }
    if !details.is_empty() {
        ui.add_space(6.0 * scale);
        for line in details {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(line)
                        .size(12.0 * scale)
                        .color(egui::Color32::from_gray(200)),
                )
                .wrap(),
            );
        }
    }
    if !notes.is_empty() {
        ui.add_space(8.0 * scale);
        for note in notes {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(note)
                        .size(12.0 * scale)
                        .color(theme::MUTED),
                )
                .wrap(),
            );
        }
    }
}

/// The presenter's view: where the talk is and for how long, the notes in reading
/// size, what comes next, the whole deck, the keys.
fn presenter_ui(
    ui: &mut egui::Ui,
    p: &crate::wall::PresenterView,
    elapsed: Option<Duration>,
    clock: &str,
) {
    ui.horizontal(|ui| {
        ui.label(
            egui::RichText::new(format!("{} / {}", p.index + 1, p.count))
                .size(22.0)
                .color(egui::Color32::WHITE)
                .strong(),
        );
        ui.add_space(12.0);
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let secs = elapsed.map_or(0, |d| d.as_secs());
            ui.label(
                egui::RichText::new(format!("{clock}   ⏱ {:02}:{:02}", secs / 60, secs % 60))
                    .size(18.0)
                    .color(theme::ACCENT),
            );
            ui.add(
                egui::Label::new(
                    egui::RichText::new(&p.title)
                        .size(18.0)
                        .color(egui::Color32::WHITE),
                )
                .truncate(),
            );
        });
    });
    ui.separator();
    let rest = ui.available_height();
    ui.columns(2, |cols| {
        let notes = &mut cols[0];
        notes.label(
            egui::RichText::new("Notes 备注")
                .color(theme::MUTED)
                .strong(),
        );
        if p.notes.is_empty() {
            notes.label(egui::RichText::new("(none)").color(theme::MUTED));
        }
        egui::ScrollArea::vertical()
            .id_salt("presenter-notes")
            .max_height(rest * 0.8)
            .show(notes, |ui| {
                for n in &p.notes {
                    ui.add(
                        egui::Label::new(
                            egui::RichText::new(n)
                                .size(16.0)
                                .color(egui::Color32::WHITE),
                        )
                        .wrap(),
                    );
                    ui.add_space(4.0);
                }
            });
        let side = &mut cols[1];
        side.label(
            egui::RichText::new("Next 下一张")
                .color(theme::MUTED)
                .strong(),
        );
        side.add(
            egui::Label::new(
                egui::RichText::new(p.next.as_deref().unwrap_or("End of the briefing 简报结束"))
                    .size(16.0)
                    .color(egui::Color32::WHITE),
            )
            .wrap(),
        );
        side.add_space(10.0);
        side.label(
            egui::RichText::new("Slides 目录")
                .color(theme::MUTED)
                .strong(),
        );
        for (i, title) in p.outline.iter().enumerate() {
            let text = egui::RichText::new(format!("{:>2}  {title}", i + 1)).size(11.0);
            let text = if i == p.index {
                text.color(theme::ACCENT).strong()
            } else {
                text.color(theme::MUTED)
            };
            side.add(egui::Label::new(text).truncate());
        }
    });
    ui.with_layout(egui::Layout::bottom_up(egui::Align::Min), |ui| {
        ui.label(
            egui::RichText::new(
                "→ ↓ PageDown Space: next · ← ↑ PageUp: previous · Home: first · End: last · Esc: end",
            )
            .size(10.0)
            .color(theme::MUTED),
        );
    });
}

fn tile_heading(ui: &mut egui::Ui, tile: &crate::wall::Tile, caption: Option<&str>, map: bool) {
    let heading = tile.heading();
    let text = match caption {
        Some(c) if !c.is_empty() && c != crate::wall::CITY_VIEW => format!("{heading} · {c}"),
        _ => heading,
    };
    let rich = egui::RichText::new(text).color(theme::ACCENT).strong();
    if map {
        egui::Frame::new()
            .fill(egui::Color32::from_rgba_unmultiplied(4, 8, 16, 200))
            .inner_margin(egui::Margin::symmetric(6, 2))
            .corner_radius(4.0)
            .show(ui, |ui| {
                ui.add(egui::Label::new(rich).truncate());
            });
    } else if matches!(tile.kind, TileKind::Slide { .. }) {
        // A slide's title is read whole.
        ui.add(egui::Label::new(rich.size(18.0)).wrap());
        ui.add_space(4.0);
    } else {
        ui.add(egui::Label::new(rich).truncate());
        ui.add_space(4.0);
    }
}

fn tile_banner_ui(ctx: &egui::Context, rect: egui::Rect, text: &str, id: (usize, usize)) {
    // The theme's body size; the band sits under the tile's heading.
    let body = 15.0;
    let painter = ctx
        .layer_painter(egui::LayerId::new(
            egui::Order::Middle,
            egui::Id::new(("wall-banner", id)),
        ))
        .with_clip_rect(rect);
    let galley = painter.layout(
        text.to_string(),
        egui::FontId::proportional(body),
        egui::Color32::WHITE,
        rect.width() - 20.0,
    );
    let top = rect.min.y + body * 2.2;
    let band = egui::Rect::from_min_size(
        egui::pos2(rect.min.x, top),
        egui::vec2(rect.width(), galley.size().y + 12.0),
    );
    painter.rect_filled(
        band,
        0.0,
        egui::Color32::from_rgba_unmultiplied(150, 20, 20, 235),
    );
    painter.galley(
        band.min + egui::vec2(10.0, 6.0),
        galley,
        egui::Color32::WHITE,
    );
}

fn trend_colour(good_when_up: Option<bool>, t: crate::wall::Trend) -> egui::Color32 {
    use crate::wall::Trend;
    match (good_when_up, t) {
        (_, Trend::Flat) | (None, _) => theme::MUTED,
        (Some(true), Trend::Up) | (Some(false), Trend::Down) => theme::GOOD,
        _ => theme::WARN,
    }
}

/// The label's and the value's type size in a card `w` × `h` points: shares of the
/// card, a narrow card's value smaller (never a clamp whose ends can cross); the
/// labels are then fitted to the card's width as a set ([`kpi_ui`]).
fn card_type(w: f32, h: f32) -> (f32, f32) {
    let (w, h) = (w.max(0.0), h.max(0.0));
    ((h * 0.16).max(6.0), (h * 0.42).min(w * 0.2).max(8.0))
}

/// A vital sign's card: label, value, colour, its index in [`crate::wall::SIGNS`] for the trend,
/// and whether up is good.
type Card = (
    &'static str,
    String,
    egui::Color32,
    Option<usize>,
    Option<bool>,
);

/// A bilingual label as one row, or as two: what comes before its first Chinese
/// character, then the rest ("Open incidents 未结事件": "Open incidents", "未结事件").
fn label_rows(label: &str, two: bool) -> impl Iterator<Item = &str> {
    let split = label
        .char_indices()
        .find(|(_, c)| *c >= '\u{2E80}')
        .map(|(i, _)| i)
        .filter(|&i| two && i > 0);
    let rows = match split {
        Some(i) => [label[..i].trim_end(), &label[i..]],
        None => [label, ""],
    };
    rows.into_iter().filter(|r| !r.is_empty())
}

/// The vital signs in cards: the value in type a share of the card, a trend arrow.
fn kpi_ui(ui: &mut egui::Ui, data: &WallData) {
    let k = &data.kpis;
    let dash = || "—".to_string();
    let book = data.book.as_ref();
    let open_incidents = book.map(|b| b.incidents.iter().filter(|i| i.is_open()).count());
    let overdue = book.map(|b| {
        b.orders
            .iter()
            .filter(|o| crate::wall::is_overdue(o, data.now_ms))
            .count()
    });
    let cards: [Card; 8] = [
        (
            "Road speed 路网均速",
            k.mean_road_speed_kmh
                .map_or_else(dash, |v| format!("{v:.0} km/h")),
            theme::ACCENT,
            Some(0),
            Some(true),
        ),
        (
            "Congestion 拥堵指数",
            k.congestion_index
                .map_or_else(dash, |v| format!("{:.0}%", v * 100.0)),
            super::widgets::congestion_colour(k.congestion_index),
            Some(1),
            Some(false),
        ),
        (
            "AQI 空气质量",
            k.mean_aqi.map_or_else(dash, |v| format!("{v:.0}")),
            super::widgets::aqi_colour(k.mean_aqi),
            Some(2),
            Some(false),
        ),
        (
            "Open alerts 未结告警",
            k.open_alerts.to_string(),
            super::widgets::alerts_colour(k.open_alerts),
            Some(3),
            Some(false),
        ),
        (
            "Hospital load 医院负荷",
            k.hospital_load
                .map_or_else(dash, |v| format!("{:.0}%", v * 100.0)),
            super::widgets::hospital_colour(k.hospital_load),
            Some(4),
            Some(false),
        ),
        (
            "Units 在途车辆",
            k.vehicles.to_string(),
            theme::ACCENT,
            Some(5),
            None,
        ),
        (
            "Open incidents 未结事件",
            open_incidents.map_or_else(dash, |n| n.to_string()),
            if open_incidents.unwrap_or(0) > 0 {
                theme::WARN
            } else {
                theme::GOOD
            },
            None,
            None,
        ),
        (
            "Overdue orders 超时指令",
            overdue.map_or_else(dash, |n| n.to_string()),
            if overdue.unwrap_or(0) > 0 {
                theme::ALARM
            } else {
                theme::GOOD
            },
            None,
            None,
        ),
    ];
    let area = ui.available_rect_before_wrap();
    let painter = ui.painter().clone();
    // The labels' type: the cards' share of height, made smaller when the widest
    // label does not fit its card (all alike, so a row reads as one). A label too
    // wide for one line at a readable size goes on two, its English above its
    // Chinese, where the card has the height.
    let widest = |size: f32, two_lines: bool| {
        cards
            .iter()
            .flat_map(|c| label_rows(c.0, two_lines))
            .map(|text| {
                painter
                    .layout_no_wrap(
                        text.to_string(),
                        egui::FontId::proportional(size),
                        theme::MUTED,
                    )
                    .size()
                    .x
            })
            .fold(0.0, f32::max)
    };
    let fit = |columns: usize| {
        let rows = cards.len().div_ceil(columns);
        let cell = egui::vec2(area.width() / columns as f32, area.height() / rows as f32);
        let (cap, value) = card_type(cell.x, cell.y);
        let room = (cell.x - 8.0).max(1.0);
        let fitted = |two: bool| {
            let wide = widest(cap, two);
            if wide > room { cap * room / wide } else { cap }
        };
        let one = fitted(false);
        let two = fitted(true);
        let two_fits = two * 1.4 * 2.0 + value * 1.1 <= cell.y - 8.0;
        let (label, lines) = if two_fits && two > one * 1.2 {
            (two, 2)
        } else {
            (one.max(cap * 0.5), 1)
        };
        (columns, cell, label.max(6.0), lines, value)
    };
    // Four across on a wide tile, unless two across set the labels larger, or the
    // values larger with labels no smaller.
    let (columns, cell, label_size, lines, value_size) = if area.width() > area.height() * 1.6 {
        let (four, two) = (fit(4), fit(2));
        if two.2 > four.2 * 1.25 || (two.2 >= four.2 && two.4 > four.4 * 1.25) {
            two
        } else {
            four
        }
    } else {
        fit(2)
    };
    for (i, (label, value, colour, sign, good_up)) in cards.into_iter().enumerate() {
        let min =
            area.min + egui::vec2((i % columns) as f32 * cell.x, (i / columns) as f32 * cell.y);
        let card = egui::Rect::from_min_size(min, cell).shrink(4.0);
        for (line, text) in label_rows(label, lines == 2).enumerate() {
            one_line(
                &painter,
                card.left_top() + egui::vec2(0.0, line as f32 * label_size * 1.25),
                text,
                egui::FontId::proportional(label_size),
                theme::MUTED,
                card.width(),
            );
        }
        let value_top = label_size * (1.4 + 1.25 * (lines - 1) as f32);
        let value_rect = painter.text(
            card.left_top() + egui::vec2(0.0, value_top),
            egui::Align2::LEFT_TOP,
            value,
            egui::FontId::proportional(value_size),
            colour,
        );
        if let Some(trend) = sign.and_then(|s| data.signs.trend(s)) {
            painter.text(
                value_rect.right_bottom() + egui::vec2(value_size * 0.15, 0.0),
                egui::Align2::LEFT_BOTTOM,
                trend.arrow(),
                egui::FontId::proportional(value_size * 0.5),
                trend_colour(good_up, trend),
            );
        }
    }
    ui.allocate_rect(area, egui::Sense::hover());
}

fn severity_colour(s: crate::model::Severity) -> egui::Color32 {
    use crate::model::Severity::*;
    match s {
        Extreme => theme::ALARM,
        Severe => egui::Color32::from_rgb(0xff, 0x7a, 0x30),
        Moderate => theme::WARN,
        Minor => theme::ACCENT,
    }
}

/// One line of text at most `width` wide: what does not fit ends in "…", so a cut row
/// says it was cut.
fn one_line(
    painter: &egui::Painter,
    at: egui::Pos2,
    text: &str,
    font: egui::FontId,
    colour: egui::Color32,
    width: f32,
) {
    let mut job = egui::text::LayoutJob::simple_singleline(text.to_owned(), font, colour);
    job.wrap = egui::text::TextWrapping::truncate_at_width(width);
    painter.galley(at, painter.layout_job(job), colour);
}

/// Rows of two lines in the tile, as many as fit; "and N more" when some do not.
fn board_rows(ui: &mut egui::Ui, rows: Vec<(egui::Color32, String, String)>, empty: &str) {
    let area = ui.available_rect_before_wrap();
    let body = ui.style().text_styles[&egui::TextStyle::Body].size;
    let row_h = body * 2.6;
    let painter = ui.painter().with_clip_rect(area);
    if rows.is_empty() {
        painter.text(
            area.left_top(),
            egui::Align2::LEFT_TOP,
            empty,
            egui::FontId::proportional(body),
            theme::MUTED,
        );
        return;
    }
    let fit = ((area.height() / row_h).floor() as usize).max(1);
    let shown = if rows.len() > fit {
        fit - 1
    } else {
        rows.len()
    };
    for (i, (colour, first, second)) in rows.iter().take(shown).enumerate() {
        let top = area.min.y + i as f32 * row_h;
        let bar = egui::Rect::from_min_size(
            egui::pos2(area.min.x, top + 2.0),
            egui::vec2(body * 0.3, row_h - 6.0),
        );
        painter.rect_filled(bar, 2.0, *colour);
        let x = area.min.x + body * 0.7;
        let row_painter = painter.with_clip_rect(egui::Rect::from_min_max(
            egui::pos2(x, top),
            egui::pos2(area.max.x, top + row_h),
        ));
        let width = (area.max.x - x).max(0.0);
        one_line(
            &row_painter,
            egui::pos2(x, top),
            first,
            egui::FontId::proportional(body),
            egui::Color32::WHITE,
            width,
        );
        one_line(
            &row_painter,
            egui::pos2(x, top + body * 1.2),
            second,
            egui::FontId::proportional(body * 0.8),
            theme::MUTED,
            width,
        );
    }
    if shown < rows.len() {
        painter.text(
            egui::pos2(area.min.x, area.min.y + shown as f32 * row_h),
            egui::Align2::LEFT_TOP,
            format!(
                "and {} more 另有 {} 项",
                rows.len() - shown,
                rows.len() - shown
            ),
            egui::FontId::proportional(body * 0.8),
            theme::MUTED,
        );
    }
}

fn incidents_ui(ui: &mut egui::Ui, book: Option<&Book>, now_ms: i64) {
    let Some(book) = book else {
        return board_rows(ui, Vec::new(), "No data 无数据");
    };
    let rows = {
        crate::wall::open_incidents(book)
            .into_iter()
            .map(|i| {
                (
                    severity_colour(i.severity),
                    format!("{} · {}", i.id, i.title),
                    format!(
                        "{} · {} · {} · {} ago · {} orders",
                        i.severity.label(),
                        super::widgets::domain_label(i.domain),
                        i.status.label(),
                        crate::clock::age_words((now_ms - i.reported_ms).max(0) as f64 / 1000.0),
                        i.orders.len()
                    ),
                )
            })
            .collect()
    };
    board_rows(ui, rows, "No open incident 无未结事件");
}

fn orders_ui(ui: &mut egui::Ui, book: Option<&Book>, now_ms: i64) {
    let Some(book) = book else {
        return board_rows(ui, Vec::new(), "No data 无数据");
    };
    let rows = {
        crate::wall::open_orders(book, now_ms)
            .into_iter()
            .map(|o| {
                let overdue = crate::wall::is_overdue(o, now_ms);
                let due = if overdue {
                    format!(
                        "OVERDUE 超时 {}",
                        crate::clock::age_words((now_ms - o.deadline_ms).max(0) as f64 / 1000.0)
                    )
                } else {
                    format!(
                        "due in {}",
                        crate::clock::age_words((o.deadline_ms - now_ms) as f64 / 1000.0)
                    )
                };
                let colour = if overdue { theme::ALARM } else { theme::ACCENT };
                (
                    colour,
                    format!("{} → {}", o.id, o.department),
                    format!("{} · {} · {}", o.incident, o.status.label(), due),
                )
            })
            .collect()
    };
    board_rows(ui, rows, "No open order 无未完成指令");
}

fn feeds_ui(ui: &mut egui::Ui, state: &DataState) {
    let rows = state
        .feeds
        .iter()
        .map(|f| {
            let (word, colour) = if f.quarantined {
                ("QUARANTINED 隔离", theme::ALARM)
            } else {
                match f.freshness {
                    Freshness::Fresh => ("fresh 新鲜", theme::GOOD),
                    Freshness::Late => ("late 延迟", theme::WARN),
                    Freshness::Stale => ("STALE 过期", theme::ALARM),
                    Freshness::Never if f.failing => ("NO DATA 无数据 · failing", theme::ALARM),
                    Freshness::Never => ("no data yet 尚无数据", theme::MUTED),
                }
            };
            (
                colour,
                format!("{} · {}", f.name, super::widgets::domain_label(f.domain)),
                match f.data_age_s {
                    Some(a) => format!("{word} · data {} old", crate::clock::age_words(a)),
                    None => word.to_string(),
                },
            )
        })
        .collect();
    board_rows(ui, rows, "No feed 无数据源");
}

/// Four small charts: congestion, AQI, open alerts, open incidents, over the hours the
/// wall has seen.
fn trends_ui(ui: &mut egui::Ui, data: &WallData, screen: usize, tile: usize) {
    let now = data.now_ms;
    let minutes = |t: i64| (t - now) as f64 / 60_000.0;
    let series = |i: usize| -> Vec<[f64; 2]> {
        data.signs
            .series(i)
            .into_iter()
            .map(|(t, v)| [minutes(t), v])
            .collect()
    };
    let times: Vec<i64> = data.signs.series(3).iter().map(|(t, _)| *t).collect();
    let incidents: Vec<[f64; 2]> = match &data.book {
        Some(book) => times
            .iter()
            .zip(crate::wall::open_incidents_at(book, &times))
            .map(|(t, n)| [minutes(*t), n as f64])
            .collect(),
        None => Vec::new(),
    };
    let charts = [
        ("Congestion % 拥堵", series(1), theme::WARN),
        ("AQI 空气质量", series(2), theme::GOOD),
        ("Open alerts 告警", series(3), theme::ALARM),
        ("Open incidents 事件", incidents, theme::ACCENT),
    ];
    let area = ui.available_rect_before_wrap();
    let cols = if area.width() > area.height() * 2.0 {
        4
    } else {
        2
    };
    let rows = charts.len().div_ceil(cols);
    let cell = egui::vec2(area.width() / cols as f32, area.height() / rows as f32);
    for (i, (title, points, colour)) in charts.into_iter().enumerate() {
        let min = area.min + egui::vec2((i % cols) as f32 * cell.x, (i / cols) as f32 * cell.y);
        let rect = egui::Rect::from_min_size(min, cell).shrink(4.0);
        ui.scope_builder(egui::UiBuilder::new().max_rect(rect), |ui| {
            // One line, cut with "…" in a narrow cell (never wrapped mid-word).
            ui.add(
                egui::Label::new(egui::RichText::new(title).color(theme::MUTED).small()).truncate(),
            );
            super::charts::line_chart(
                ui,
                ("wall-trend", screen, tile, i),
                title,
                points,
                colour,
                None,
                |m| format!("{m:.0} min"),
            );
        });
    }
    ui.allocate_rect(area, egui::Sense::hover());
}

/// What a tile shows, for the screenshot's report: scripts check the wall from it.
fn tile_report(
    tile: &crate::wall::Tile,
    data: &WallData,
    caption: Option<String>,
) -> serde_json::Value {
    let shows = match &tile.kind {
        TileKind::Incidents => serde_json::json!(
            data.book
                .as_ref()
                .map(|b| crate::wall::open_incidents(b)
                    .iter()
                    .map(|i| i.id.clone())
                    .collect::<Vec<_>>())
        ),
        TileKind::Orders => serde_json::json!(
            data.book
                .as_ref()
                .map(|b| crate::wall::open_orders(b, data.now_ms)
                    .iter()
                    .map(|o| o.id.clone())
                    .collect::<Vec<_>>())
        ),
        TileKind::Feeds => serde_json::json!(
            data.state
                .feeds
                .iter()
                .map(|f| serde_json::json!({"feed": f.name, "freshness": f.freshness, "quarantined": f.quarantined}))
                .collect::<Vec<_>>()
        ),
        TileKind::Kpi => serde_json::json!({
            "road_speed_kmh": data.kpis.mean_road_speed_kmh,
            "congestion_index": data.kpis.congestion_index,
            "mean_aqi": data.kpis.mean_aqi,
            "open_alerts": data.kpis.open_alerts,
            "vehicles": data.kpis.vehicles,
        }),
        TileKind::Trends => serde_json::json!({
            "samples": data.signs.len(),
            "recorded": data.signs_recorded,
        }),
        TileKind::Slide { lines, details, .. } => {
            serde_json::json!({ "lines": lines, "details": details })
        }
        TileKind::Charts(charts) => serde_json::json!(
            charts
                .iter()
                .map(|c| match &c.kind {
                    crate::wall::ChartKind::Bars(bars) => serde_json::json!({
                        "title": c.title,
                        "bars": bars.iter().map(|b| serde_json::json!([b.name, b.value])).collect::<Vec<_>>(),
                    }),
                    crate::wall::ChartKind::Line { points, .. } => serde_json::json!({
                        "title": c.title,
                        "points": points.len(),
                    }),
                })
                .collect::<Vec<_>>()
        ),
        TileKind::Presenter(p) => serde_json::json!({
            "slide": p.index + 1,
            "slides": p.count,
            "title": p.title,
            "notes": p.notes,
            "next": p.next,
        }),
        TileKind::Map(_) | TileKind::Hotspot(_) | TileKind::Tour { .. } => {
            serde_json::json!(caption)
        }
    };
    serde_json::json!({
        "kind": tile.kind.name(),
        "at": tile.at,
        "span": tile.span,
        "banner": crate::wall::tile_banner(&tile.kind, &data.state),
        "shows": shows,
    })
}

/// `--screenshot-dir`: every screen written once the city is drawn and the data in.
#[derive(Resource)]
struct WallShots {
    dir: PathBuf,
    settled: u32,
    in_flight: usize,
    written: Vec<serde_json::Value>,
    done: bool,
}

/// Give up after this long without a drawn city.
const SHOT_TIMEOUT_S: f32 = 240.0;

#[allow(clippy::too_many_arguments)]
fn capture_screens(
    mut commands: Commands,
    time: Res<Time<Real>>,
    ready: Res<super::ready::SceneReady>,
    live: Option<Res<Live>>,
    data: Res<WallData>,
    wall: Res<Wall>,
    windows: Query<(Entity, &WallWindow)>,
    map_cameras: Query<&WallMapCamera>,
    mut shots: ResMut<WallShots>,
    mut exit: MessageWriter<AppExit>,
) {
    if time.elapsed_secs() > SHOT_TIMEOUT_S {
        error!("wall: the screens were not drawn within {SHOT_TIMEOUT_S} s");
        exit.write(AppExit::error());
        return;
    }
    if shots.done || shots.in_flight > 0 {
        return;
    }
    let feeds_in = live.as_ref().is_none_or(|l| l.feeds_answered());
    let book_in = data.books.is_none() || data.book.is_some() || data.state.book_trouble.is_some();
    let kpis_in = data.kpis_at_ms > 0;
    let history_in = data.past_signs.is_none();
    let elapsed = time.elapsed_secs();
    if wall.built.is_none()
        || windows.iter().count() < wall.layout.screens.len()
        || !ready.is_ready()
        || ((!feeds_in || !book_in || !kpis_in || !history_in) && elapsed < 20.0)
    {
        shots.settled = 0;
        return;
    }
    // The cameras fly to their views: let them arrive.
    let arrived = map_cameras.iter().all(|c| {
        let (p, g) = (c.rig.pose, c.rig.goal);
        p.focus.distance(g.focus) < 1.0 && (p.distance - g.distance).abs() < 1.0
    });
    if !arrived {
        shots.settled = 0;
        return;
    }
    shots.settled += 1;
    if shots.settled < 5 {
        return;
    }
    if let Err(e) = std::fs::create_dir_all(&shots.dir) {
        error!("wall: cannot create {}: {e}", shots.dir.display());
        exit.write(AppExit::error());
        return;
    }
    for (entity, w) in &windows {
        let Some(screen) = wall.layout.screens.get(w.screen) else {
            continue;
        };
        let slug: String = screen
            .name
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { '-' })
            .collect();
        let out = shots
            .dir
            .join(format!("screen-{}-{slug}.png", w.screen + 1));
        let name = screen.name.clone();
        let index = w.screen + 1;
        let tiles: Vec<serde_json::Value> = screen
            .tiles
            .iter()
            .enumerate()
            .map(|(ti, tile)| {
                let caption = map_cameras
                    .iter()
                    .find(|c| c.screen == w.screen && c.tile == ti)
                    .map(|c| c.caption.clone());
                tile_report(tile, &data, caption)
            })
            .collect();
        shots.in_flight += 1;
        commands.spawn(Screenshot::window(entity)).observe(
            move |captured: On<ScreenshotCaptured>,
                  mut shots: ResMut<WallShots>,
                  mut exit: MessageWriter<AppExit>| {
                shots.in_flight = shots.in_flight.saturating_sub(1);
                let rgb = match captured.image.clone().try_into_dynamic() {
                    Ok(image) => image.to_rgb8(),
                    Err(e) => {
                        error!("wall: cannot read the captured frame: {e}");
                        exit.write(AppExit::error());
                        return;
                    }
                };
                if let Err(e) = rgb.save(&out) {
                    error!("wall: cannot write {}: {e}", out.display());
                    exit.write(AppExit::error());
                    return;
                }
                shots.written.push(serde_json::json!({
                    "index": index,
                    "screen": name,
                    "out": out.display().to_string(),
                    "width": rgb.width(),
                    "height": rgb.height(),
                    "tiles": tiles,
                    "city_pixel_share": (super::snapshot::city_pixel_share(&rgb) * 1000.0).round() / 1000.0,
                }));
                if shots.in_flight == 0 {
                    shots.written.sort_by_key(|l| l["index"].as_u64());
                    for line in &shots.written {
                        println!("{line}");
                    }
                    exit.write(AppExit::Success);
                }
            },
        );
    }
    shots.done = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_card_of_any_size_has_type_sizes() {
        // A third of a 960-point-wide screen split in two columns, a tiny card, none.
        for (w, h) in [
            (160.0, 180.0),
            (74.0, 90.0),
            (1.0, 1.0),
            (0.0, 0.0),
            (-5.0, 3.0),
        ] {
            let (label, value) = card_type(w, h);
            assert!(label.is_finite() && value.is_finite() && label >= 6.0 && value >= 8.0);
        }
        let (label, value) = card_type(480.0, 270.0);
        assert!((label, value) == (270.0 * 0.16, 96.0), "{label} {value}");
    }

    #[test]
    fn wall_type_grows_with_the_screen() {
        assert_eq!(wall_zoom(960.0, 540.0, 1.0), 1.0);
        assert_eq!(wall_zoom(1920.0, 1080.0, 1.0), 2.0);
        assert_eq!(wall_zoom(3840.0, 2160.0, 1.0), 4.0);
        assert_eq!(wall_zoom(533.0, 300.0, 1.0), 1.0);
        assert_eq!(wall_zoom(1920.0, 1080.0, 1.5), 3.0);
        // On end, by its width: 1080 wide is 1080 tall's type.
        assert_eq!(wall_zoom(1080.0, 1920.0, 1.0), 2.0);
        assert_eq!(wall_zoom(640.0, 4000.0, 1.0), 640.0 / 540.0);
    }

    #[test]
    fn the_presenters_keys_and_a_clickers_move_the_talk() {
        use crate::briefing::Go;
        let go = |key: KeyCode| {
            let mut keys = ButtonInput::<KeyCode>::default();
            keys.press(key);
            presenter_go(&keys)
        };
        for key in [
            KeyCode::ArrowRight,
            KeyCode::PageDown,
            KeyCode::Space,
            KeyCode::Enter,
        ] {
            assert_eq!(go(key), Some(Go::Next), "{key:?}");
        }
        for key in [KeyCode::ArrowLeft, KeyCode::PageUp, KeyCode::Backspace] {
            assert_eq!(go(key), Some(Go::Previous), "{key:?}");
        }
        assert_eq!(go(KeyCode::Home), Some(Go::First));
        assert_eq!(go(KeyCode::F5), Some(Go::First));
        assert_eq!(go(KeyCode::End), Some(Go::Last));
        assert_eq!(go(KeyCode::KeyW), None);
        // Held down, a key moves once.
        let mut keys = ButtonInput::<KeyCode>::default();
        keys.press(KeyCode::PageDown);
        keys.clear();
        assert_eq!(presenter_go(&keys), None);
    }

    #[test]
    fn every_layer_and_sub_brain_has_its_own_render_layer() {
        let mut seen = BTreeSet::new();
        for l in MapLayer::ALL {
            assert!(seen.insert(map_layer_of(l)));
            let name = format!("{l:?}").to_ascii_lowercase();
            assert_eq!(map_layer_named(&name), Some(l));
            assert!(crate::wall::LAYER_NAMES.contains(&name.as_str()));
        }
        for d in Domain::ALL {
            assert!(seen.insert(domain_layer_of(d)));
        }
        assert!(!seen.contains(&0) && !seen.contains(&UI_LAYER));
    }
}
