//! `zhongshu bench desk`: the dispatch desk's cost to a frame.
//!
//! - **Panel:** the desk's egui panel (430 px wide, a 1600×900 window) with a busy
//!   day's book, the Orders tab open on "All", laid out and tessellated headless,
//!   frame after frame: still, and with an event applied every frame (the board
//!   regrouped each time).
//! - **Clock tick:** a log with `overdue` orders past their deadline opened behind
//!   the desk's writer thread: the first tick marks and urges them all; what each
//!   frame spends taking the committed events in is timed, and the writer's commits.

use std::time::{Duration, Instant};

use bevy_egui::egui;
use serde::Serialize;

use super::desk_ui::{DeskCommand, DeskState, DeskTab, DeskView, desk_ui};
use crate::dispatch::book::{Actor, Book, Command};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::service::{DispatchService, ServiceOptions};
use crate::dispatch::worker::DeskWorker;
use crate::dispatch::{Action, Role};
use crate::stats::percentile;

#[derive(Debug, Serialize)]
pub struct FrameTimes {
    pub frames: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl FrameTimes {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        Self {
            frames: ms.len(),
            p50_ms: round3(percentile(&ms, 0.50)),
            p99_ms: round3(percentile(&ms, 0.99)),
            max_ms: round3(ms.last().copied().unwrap_or(0.0)),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TickReport {
    pub overdue_orders: usize,
    pub events_written: u64,
    /// From the writer starting until the frame showed every order overdue.
    pub shown_after_ms: f64,
    /// What each frame spent taking committed events in meanwhile.
    pub frame_poll: FrameTimes,
}

#[derive(Debug, Serialize)]
pub struct DeskBenchReport {
    pub orders: usize,
    pub orders_tab_all: FrameTimes,
    pub orders_tab_all_events_flowing: FrameTimes,
    pub incidents_tab: FrameTimes,
    pub clock_tick: TickReport,
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Lays out and tessellates the desk panel for `frames` frames; `between` runs
/// before each frame (outside the timing) and may change the book.
fn panel_frames(
    book: &mut Book,
    state: &mut DeskState,
    frames: usize,
    now_ms: i64,
    mut between: impl FnMut(&mut Book, usize),
) -> FrameTimes {
    let ctx = egui::Context::default();
    super::fonts::install_fonts(&ctx);
    let actor = Actor::new("dispatch", Role::Dispatcher, None);
    // The default city's zone, daylight saving and all, as the app formats it.
    let time = crate::clock::CityTime::from_flag("Europe/Helsinki")
        .unwrap_or_else(|e| crate::clock::CityTime::utc(e.to_string()));
    let mut out: Vec<DeskCommand> = Vec::new();
    let mut times = Vec::with_capacity(frames);
    for f in 0..frames + 10 {
        between(book, f);
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1600.0, 900.0),
            )),
            time: Some(f as f64 / 60.0),
            ..Default::default()
        };
        let started = Instant::now();
        let output = ctx.run_ui(input, |ui| {
            egui::Panel::right("desk").exact_size(430.0).show(ui, |ui| {
                let view = DeskView {
                    book,
                    actor: &actor,
                    now_ms: now_ms + f as i64 * 16,
                    time: &time,
                    selected: None,
                    recommendations: &[],
                    status_line: None,
                    location: None,
                    replay: false,
                };
                desk_ui(ui, &view, state, &mut out);
            });
        });
        let mut output = output;
        let shapes = std::mem::take(&mut output.shapes);
        let _ = ctx.tessellate(shapes, output.pixels_per_point);
        output.textures_delta.clear();
        // The first frames load fonts and lay out everything once.
        if f >= 10 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        out.clear();
    }
    FrameTimes::of(times)
}

/// The clock tick with `overdue` orders past their deadline, behind the writer.
fn clock_tick(overdue: usize) -> anyhow::Result<TickReport> {
    let dir = std::env::temp_dir().join(format!("zhongshu-bench-desk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let db = dir.join("events.db");
    let now = crate::clock::unix_ms_now();
    crate::dispatch::bench::overdue_log(&mut crate::store::EventLog::open(&db)?, overdue, now)?;
    let before = Dispatcher::open(&db, DispatchConfig::default_config())?
        .log()
        .len();
    let path = db.clone();
    let started = Instant::now();
    let mut worker = DeskWorker::start(move || {
        let d =
            Dispatcher::open(&path, DispatchConfig::default_config()).map_err(|e| e.to_string())?;
        let options = ServiceOptions {
            api_addr: "127.0.0.1:0".into(),
            sim: crate::dispatch::delivery::SimBehaviour::silent(),
            ..Default::default()
        };
        DispatchService::start(d, options).map_err(|e| format!("{e:#}"))
    });
    let mut polls = Vec::new();
    let mut shown_after_ms = f64::NAN;
    let mut total = 0;
    while started.elapsed() < Duration::from_secs(120) {
        let t = Instant::now();
        worker.poll();
        polls.push(t.elapsed().as_secs_f64() * 1000.0);
        if let Some(book) = worker.book() {
            total = book.orders.len();
            if total > 0
                && worker.backlog() == 0
                && book
                    .orders
                    .iter()
                    .all(|o| o.overdue_ms.is_some() && o.urges > 0)
            {
                shown_after_ms = started.elapsed().as_secs_f64() * 1000.0;
                break;
            }
        }
        if let Some(e) = &worker.load_error {
            anyhow::bail!("the log did not open: {e}");
        }
        std::thread::sleep(Duration::from_millis(16));
    }
    drop(worker);
    let after = Dispatcher::open(&db, DispatchConfig::default_config())?
        .log()
        .len();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(TickReport {
        overdue_orders: total,
        events_written: (after - before).max(0) as u64,
        shown_after_ms: round3(shown_after_ms),
        frame_poll: FrameTimes::of(polls),
    })
}

pub fn run(orders: usize, frames: usize, overdue: usize) -> anyhow::Result<DeskBenchReport> {
    let now = crate::clock::unix_ms_now();
    let mut book =
        crate::dispatch::bench::busy_book(DispatchConfig::default_config(), orders, now)?;
    let mut state = DeskState {
        tab: DeskTab::Orders,
        board_all: true,
        ..Default::default()
    };
    let still = panel_frames(&mut book, &mut state, frames, now, |_, _| {});
    // An event a frame: the open orders urged in turn.
    let open: Vec<String> = book
        .orders
        .iter()
        .filter(|o| o.status.is_open())
        .map(|o| o.id.clone())
        .collect();
    let dispatcher = Actor::new("dispatch", Role::Dispatcher, None);
    let flowing = panel_frames(&mut book, &mut state, frames, now, |book, f| {
        let Some(id) = open.get(f % open.len().max(1)) else {
            return;
        };
        let command = Command::Order {
            id: id.clone(),
            action: Action::UrgeOrder,
            note: None,
        };
        if let Ok(events) = book.plan(&command, &dispatcher, now) {
            for e in events {
                book.apply(&e, now, &dispatcher.name, dispatcher.role);
            }
        }
    });
    let mut incidents = DeskState::default();
    let incidents_tab = panel_frames(&mut book, &mut incidents, frames, now, |_, _| {});
    Ok(DeskBenchReport {
        orders: book.orders.len(),
        orders_tab_all: still,
        orders_tab_all_events_flowing: flowing,
        incidents_tab,
        clock_tick: clock_tick(overdue)?,
    })
}
