//! `bench surge --window` and `bench soak --minutes M --window`: the real app (map,
//! live layers, the desk on the drill's log with its slow departments, the panels) in
//! a window plays the frames of a [`Drill`]. The drill's agencies post to the app's
//! CAP intake; the app's live pump and desk take the alerts in as they always do; the
//! drill's dispatcher issues orders through the desk's writer; and the frames are
//! measured here. The drill itself is plain Rust (`crate::surge`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy::ecs::system::NonSendMarker;
use bevy::prelude::*;
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};

use super::desk::{Desk, DeskSetup};
use super::desk_ui::DeskCommand;
use super::live::Live;
use super::ready::SceneReady;
use super::{AppOptions, AppSystems, City};
use crate::stats::thread_cpu;
use crate::surge::{Drill, DrillLog, DrillOptions, DrillOutcome, FrameCost, LiveGauges};

/// What `frame_ms` measures in a window.
pub const WINDOW_FRAME: &str = "window: the main world's update each frame, from the start of First to the end of Last (input, the live ingest's bounded pump and expiry, the desk: committed events, alerts to the writer, the dispatcher's orders; layers, pins and routes; the egui panels' passes; camera), wall time, its systems spread over the main thread and the task pool; not the render world (extraction, drawing, lavapipe's rasterising, presenting), which runs on the render thread beside the next frame's update: frame_interval_ms has everything";

/// How long the app may take to load the log and draw the city before the drill
/// gives up.
const READY_WITHIN: Duration = Duration::from_secs(300);

/// Where the outcome comes back to [`run`].
type Slot = Arc<Mutex<Option<anyhow::Result<DrillOutcome>>>>;

/// A drill for the app to play, and where its outcome goes.
pub struct DrillRun {
    drill: Drill,
    outcome: Slot,
    /// A PNG of the window to write when half the storm has passed.
    snapshot: Option<PathBuf>,
}

impl DrillRun {
    /// The feeds the app runs: the drill's.
    pub fn feeds(&self) -> &[crate::feeds::config::FeedConfig] {
        self.drill.feeds()
    }
}

/// Plays `options` in a window; the app exits by itself at the end. Fails at once
/// without a display. `timezone`: `--timezone`, else the map's zone. `snapshot`: a
/// PNG of the window when half the storm has passed.
pub fn run(
    options: &DrillOptions,
    ui_scale: f32,
    timezone: Option<crate::clock::CityTime>,
    snapshot: Option<PathBuf>,
) -> anyhow::Result<DrillOutcome> {
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        anyhow::bail!(
            "--window needs a display, and there is none (neither DISPLAY nor WAYLAND_DISPLAY is set): run it under xvfb-run -a, or leave out --window for the headless drill"
        );
    }
    // A local X display (`:N`) whose server is gone (a stale DISPLAY, an Xvfb that
    // died) is said as clearly, not left to the window library's panic.
    if std::env::var_os("WAYLAND_DISPLAY").is_none()
        && let Some(display) = std::env::var("DISPLAY").ok()
        && let Some(n) = display
            .strip_prefix(':')
            .and_then(|d| d.split('.').next())
            .and_then(|d| d.parse::<u32>().ok())
        && std::os::unix::net::UnixStream::connect(format!("/tmp/.X11-unix/X{n}")).is_err()
    {
        anyhow::bail!(
            "--window: no X server answers on DISPLAY={display}: start one (e.g. run under xvfb-run -a), or leave out --window for the headless drill"
        );
    }
    options.check()?;
    let log = DrillLog::new(options.db.as_deref())?;
    let drill = Drill::prepare(options, &log, true, WINDOW_FRAME)?;
    let desk = DeskSetup {
        db: log.path.clone(),
        seal_key: None,
        demo: true,
        config: crate::dispatch::config::DispatchConfig::default_config(),
        users: crate::dispatch::users::Users::demo(),
        // The demo dispatcher at the desk, so that the panel shows the incidents.
        sign_in: Some(("dispatch".into(), "zhongshu".into())),
        service: drill.service_options(),
        open: true,
        hall: None,
    };
    let outcome: Slot = Default::default();
    super::run(AppOptions {
        map: None,
        map_load: Default::default(),
        look_at: None,
        select: None,
        feeds: None,
        steward: false,
        ui_scale,
        timezone,
        screenshot: None,
        desk: Some(desk),
        drill: Some(DrillRun {
            drill,
            outcome: outcome.clone(),
            snapshot,
        }),
        history: None,
        past: None,
        briefing: None,
    })?;
    let outcome = outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| Err(anyhow::anyhow!("the window closed before the drill ended")));
    drop(log);
    outcome
}

/// The drill in the app.
#[derive(Resource)]
struct Playing {
    drill: Drill,
    outcome: Slot,
    opened_at: Instant,
    /// The start of this frame's update: wall time and the main thread's CPU time.
    began: Option<(Instant, Option<Duration>)>,
    last_began: Option<Instant>,
    over: bool,
    snapshot: Option<PathBuf>,
    /// The most urgent incident has been opened.
    selected: bool,
}

impl Playing {
    fn end(&mut self, outcome: anyhow::Result<DrillOutcome>, exit: &mut MessageWriter<AppExit>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        self.over = true;
        exit.write(AppExit::Success);
    }
}

pub(super) fn add(app: &mut App, run: DrillRun) {
    app.insert_resource(Playing {
        drill: run.drill,
        outcome: run.outcome,
        opened_at: Instant::now(),
        began: None,
        last_began: None,
        over: false,
        snapshot: run.snapshot,
        selected: false,
    })
    .add_systems(First, frame_begins)
    .add_systems(Update, dispatch.in_set(AppSystems::SyncScene))
    .add_systems(Last, frame_ends);
}

/// On the main thread, first thing in the frame.
fn frame_begins(_main: NonSendMarker, mut playing: ResMut<Playing>) {
    playing.began = Some((Instant::now(), thread_cpu()));
}

/// The storm begins once the log is loaded and the city drawn; then the drill's
/// dispatcher takes its answers and issues orders through the desk's writer.
fn dispatch(
    mut playing: ResMut<Playing>,
    desk: Option<ResMut<Desk>>,
    live: Option<Res<Live>>,
    city: Res<City>,
    ready: Res<SceneReady>,
    mut exit: MessageWriter<AppExit>,
) {
    let playing = &mut *playing;
    let (Some(mut desk), Some(live)) = (desk, live) else {
        return;
    };
    if playing.over {
        return;
    }
    if !playing.drill.is_started() {
        // Answers to commands the desk did not send come to the drill.
        desk.other_answers.get_or_insert_with(Vec::new);
        if let Some(e) = &desk.worker.load_error {
            let e = anyhow::anyhow!("the dispatch log: {e}");
            playing.end(Err(e), &mut exit);
        } else if let Some(book) = desk.worker.book()
            && ready.is_ready()
        {
            info!("drill: the city is drawn and the log loaded; the storm begins");
            let gauges = LiveGauges::of(&live.state, &live.ingest);
            playing.drill.start(city.map.bbox_wgs84, book, gauges);
        } else if playing.opened_at.elapsed() > READY_WITHIN {
            let e = anyhow::anyhow!(
                "the app did not load the log and draw the city within {} s",
                READY_WITHIN.as_secs()
            );
            playing.end(Err(e), &mut exit);
        }
        return;
    }
    let answers = desk
        .other_answers
        .as_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    if let Err(e) = playing.drill.dispatch(&mut desk.worker, answers) {
        playing.end(Err(e), &mut exit);
        return;
    }
    // A quarter of the way through, the operator opens the most urgent incident:
    // from then on its detail, units and buttons are drawn every frame.
    if !playing.selected
        && playing
            .drill
            .elapsed_s()
            .is_some_and(|s| s >= playing.drill.options().minutes * 15.0)
        && let Some(book) = desk.book()
        && let Some(&first) = book.by_urgency().first()
    {
        let id = book.incidents[first].id.clone();
        desk.pending.push(DeskCommand::SelectIncident(Some(id)));
        playing.selected = true;
    }
}

/// On the main thread, last thing in the frame: what it cost, and the drill's
/// bookkeeping; the app exits when the drill is over.
fn frame_ends(
    _main: NonSendMarker,
    mut commands: Commands,
    mut playing: ResMut<Playing>,
    desk: Option<Res<Desk>>,
    live: Option<Res<Live>>,
    mut exit: MessageWriter<AppExit>,
) {
    let (end, cpu) = (Instant::now(), thread_cpu());
    let playing = &mut *playing;
    let Some((began, began_cpu)) = playing.began.take() else {
        return;
    };
    let interval = playing.last_began.replace(began).map(|b| began - b);
    if playing.over || !playing.drill.is_started() {
        return;
    }
    let cost = FrameCost {
        work_ms: (end - began).as_secs_f64() * 1000.0,
        main_thread_cpu_ms: began_cpu
            .zip(cpu)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1000.0),
        interval_ms: interval.map(|i| i.as_secs_f64() * 1000.0),
    };
    let gauges = live
        .as_ref()
        .map(|l| LiveGauges::of(&l.state, &l.ingest))
        .unwrap_or_default();
    let book = desk.as_ref().and_then(|d| d.book());
    if playing
        .drill
        .elapsed_s()
        .is_some_and(|s| s >= playing.drill.options().minutes * 30.0)
        && let Some(out) = playing.snapshot.take()
    {
        commands.spawn(Screenshot::primary_window()).observe(
            move |captured: On<ScreenshotCaptured>| {
                let written = captured
                    .image
                    .clone()
                    .try_into_dynamic()
                    .map_err(|e| e.to_string())
                    .and_then(|image| image.to_rgb8().save(&out).map_err(|e| e.to_string()));
                match written {
                    Ok(()) => eprintln!("drill: the window at mid-storm: {}", out.display()),
                    Err(e) => eprintln!(
                        "drill: the window was not written to {}: {e}",
                        out.display()
                    ),
                }
            },
        );
    }
    let news = playing.drill.end_frame(cost, gauges, book);
    if let Some(line) = &news.line {
        eprintln!("{line}");
    }
    if let Some(s) = &news.sample {
        eprintln!("{s}");
    }
    if news.done {
        let outcome = playing.drill.finish(book);
        playing.end(Ok(outcome), &mut exit);
    }
}
