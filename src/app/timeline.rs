//! The timeline along the bottom of the window: live, paused, or playing the recorded
//! history forwards or backwards. The past is read on threads (a seek, then a reader a
//! few seconds ahead) and shown instead of now ([`Live::show`]); the feeds go on into
//! the live state and the recording meanwhile. While the past is shown the one clock
//! ([`ViewClock`]) stands at its instant and the desk takes no commands.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError};

use bevy::prelude::*;
use bevy_egui::egui;

use super::live::Live;
use super::{AppSystems, City, Selection, ViewClock};
use crate::history::ReplayAhead;
use crate::history::playback::{Mode, Playback, SPEEDS};

/// A jump further than this ahead is a seek, not playback.
const PLAY_AHEAD_MAX_MS: i64 = 120_000;

/// What the timeline bar asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TimelineAction {
    GoLive,
    Pause,
    /// Play at this speed (negative: backwards).
    Play(f64),
    /// Jump to an instant (Unix ms).
    Seek(i64),
    /// The speed to play at (playing goes on at it, in its direction).
    Speed(f64),
}

/// The timeline's clock and its reading of the history.
#[derive(Resource)]
pub struct Timeline {
    pub playback: Playback,
    /// The speed ◀ and ▶ play at (times real time).
    pub speed: f64,
    /// The history recorded into, read for the past.
    pub dir: PathBuf,
    /// The recording's first instant (looked up every few seconds).
    pub earliest_ms: Option<i64>,
    looked_at: Option<std::time::Instant>,
    /// In a mutex only so the resource is `Sync`; the frame's system alone uses it.
    reader: std::sync::Mutex<Reader>,
    /// The instant whose state is shown, once one is.
    pub shown_ms: Option<i64>,
    /// The reading is behind the clock (playing faster than it decodes).
    pub catching_up: bool,
    /// The user jumped (a seek): read from there, not played through.
    jump: bool,
    /// When the reader standing in the past was started.
    read_since: Option<std::time::Instant>,
    /// Why the past could not be shown.
    pub trouble: Option<String>,
    /// Problems met reading the history (damaged segments, the one being written).
    pub problems: Vec<String>,
    /// Playing pauses on reaching this instant (an incident's replay, at its closure).
    pub stop_at_ms: Option<i64>,
    /// The read-ahead's health revision last shown.
    health_revision: u64,
    /// Why a console's mirror of its hall's history is not up to date, if it is not.
    pub mirror_problem: Option<String>,
}

enum Reader {
    Idle,
    /// A seek on its own thread, to this instant.
    Seeking {
        to_ms: i64,
        rx: Receiver<anyhow::Result<ReplayAhead>>,
    },
    /// Standing in the past, with the records after it read ahead.
    Ahead(Box<ReplayAhead>),
}

impl Timeline {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            playback: Playback::live(),
            speed: 60.0,
            dir,
            earliest_ms: None,
            looked_at: None,
            reader: std::sync::Mutex::new(Reader::Idle),
            shown_ms: None,
            catching_up: false,
            jump: false,
            read_since: None,
            trouble: None,
            problems: Vec::new(),
            stop_at_ms: None,
            health_revision: 0,
            mirror_problem: None,
        }
    }

    /// Paused at `t_ms` of the history in `dir` (a screenshot of the past).
    pub fn paused_at(dir: PathBuf, t_ms: i64) -> Self {
        let mut timeline = Self::new(dir);
        timeline.playback.seek(t_ms, t_ms, i64::MAX);
        timeline
    }

    /// The state shown is the clock's: live, or the past read to its instant.
    pub fn settled(&self) -> bool {
        !self.playback.is_past() || (self.shown_ms.is_some() && !self.seeking())
    }

    /// A seek is in progress.
    pub fn seeking(&self) -> bool {
        self.reader
            .lock()
            .is_ok_and(|r| matches!(*r, Reader::Seeking { .. }))
    }

    /// Carries out what the bar asked.
    pub fn act(&mut self, action: TimelineAction, now_ms: i64) {
        let earliest = self.earliest_ms.unwrap_or(now_ms);
        // Whatever the user does next is theirs: an incident's stop is forgotten.
        self.stop_at_ms = None;
        match action {
            TimelineAction::GoLive => self.playback.go_live(),
            TimelineAction::Pause => self.playback.pause(now_ms),
            TimelineAction::Play(speed) => {
                self.speed = speed.abs();
                self.playback.play(speed, now_ms);
            }
            TimelineAction::Speed(speed) => {
                self.speed = speed.abs();
                if let Mode::Playing { speed: now_speed } = self.playback.mode() {
                    self.playback.play(speed.abs() * now_speed.signum(), now_ms);
                }
            }
            TimelineAction::Seek(t) => {
                self.playback.seek(t, earliest, now_ms);
                self.jump = true;
            }
        }
        if self.playback.is_past() {
            self.trouble = None;
        }
    }

    /// Plays from `from_ms` at the timeline's speed, pausing at `until_ms` (an
    /// incident's replay: five minutes before it was raised, to its closure).
    pub fn replay_span(&mut self, from_ms: i64, until_ms: Option<i64>, now_ms: i64) {
        self.act(TimelineAction::Seek(from_ms), now_ms);
        let speed = self.speed.max(1.0);
        self.act(TimelineAction::Play(speed), now_ms);
        self.stop_at_ms = until_ms;
    }

    /// A seek to `to_ms` on its own thread; a thread that cannot start is trouble,
    /// and the clock goes back to live.
    fn seek(&mut self, to_ms: i64, frame: crate::geo_frame::GeoFrame) -> Reader {
        self.jump = false;
        let dir = self.dir.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("zhongshu-seek".into())
            .spawn(move || {
                let ahead = crate::history::History::open(&dir)
                    .and_then(|history| ReplayAhead::start_in(&history, to_ms, frame));
                let _ = tx.send(ahead);
            });
        match spawned {
            Ok(_) => Reader::Seeking { to_ms, rx },
            Err(e) => {
                self.trouble = Some(format!("cannot read the history: {e}"));
                self.playback.go_live();
                Reader::Idle
            }
        }
    }
}

pub(super) fn plugin(app: &mut App) {
    app.add_systems(
        Update,
        drive_timeline
            .in_set(AppSystems::Apply)
            .before(super::live::pump_feeds),
    );
}

/// Moves the clock on and brings the shown state to its instant: records read ahead
/// while playing forwards, a seek for anything else (a jump, backwards).
#[allow(clippy::too_many_arguments)]
fn drive_timeline(
    timeline: Option<ResMut<Timeline>>,
    live: Option<ResMut<Live>>,
    city: Res<City>,
    time: Res<Time>,
    mut clock: ResMut<ViewClock>,
    mut selection: ResMut<Selection>,
    request: Option<ResMut<super::ReplayRequest>>,
    mirror: Option<Res<super::HallHistoryMirror>>,
) {
    let (Some(mut timeline), Some(mut live)) = (timeline, live) else {
        return;
    };
    let timeline = &mut *timeline;
    let now = crate::clock::unix_ms_now();
    if let Some(mirror) = mirror {
        let problem = mirror.0.status().problem;
        if problem != timeline.mirror_problem {
            timeline.mirror_problem = problem;
        }
    }
    if let Some((from, until)) = request.and_then(|mut r| r.0.take()) {
        timeline.replay_span(from, until, now);
    }
    if timeline
        .looked_at
        .is_none_or(|t| t.elapsed().as_secs_f64() > 5.0)
    {
        timeline.looked_at = Some(std::time::Instant::now());
        timeline.earliest_ms = crate::history::segments(&timeline.dir)
            .ok()
            .and_then(|s| s.first().map(|f| f.0));
    }
    let earliest = timeline.earliest_ms.unwrap_or(now);
    timeline.playback.tick(time.delta_secs_f64(), earliest, now);
    if let Some(stop) = timeline.stop_at_ms
        && matches!(timeline.playback.mode(), Mode::Playing { speed } if speed > 0.0)
        && timeline.playback.shown_ms(now) >= stop
    {
        // Paused at the stop itself, not a frame's worth of play past it.
        timeline.playback.seek(stop, earliest, now);
        timeline.playback.pause(now);
        timeline.stop_at_ms = None;
    }
    if !timeline.playback.is_past() {
        if live.replay.is_some() {
            live.show(None);
            selection.entity = None;
        }
        *timeline
            .reader
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Reader::Idle;
        timeline.shown_ms = None;
        timeline.catching_up = false;
        clock.as_of_ms = None;
        return;
    }
    let target = timeline.playback.shown_ms(now);
    let reader = std::mem::replace(
        timeline
            .reader
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Reader::Idle,
    );
    let playing = match timeline.playback.mode() {
        Mode::Playing { speed } => speed,
        _ => 0.0,
    };
    // Playing forwards faster than the history is read, the state lags the clock; a
    // second's worth of play behind (two minutes at least), a seek catches up.
    let lag_limit = PLAY_AHEAD_MAX_MS.max((playing.abs() * 1000.0) as i64);
    let next = match reader {
        Reader::Ahead(mut ahead)
            if !timeline.jump
                && timeline.shown_ms.is_some_and(|s| {
                    target >= s
                        && target - s
                            <= if playing > 0.0 {
                                lag_limit
                            } else {
                                PLAY_AHEAD_MAX_MS
                            }
                }) =>
        {
            if let Some(past) = live.replay.as_mut() {
                let whole = ahead.apply_until(target, past);
                let shown = timeline.shown_ms.unwrap_or(target);
                let applied = if whole {
                    target
                } else {
                    ahead.read_to_ms().clamp(shown, target)
                };
                timeline.shown_ms = Some(applied);
                timeline.catching_up = applied < target;
            }
            if ahead.problem_count() != timeline.problems.len() {
                timeline.problems = ahead.problems();
            }
            if ahead.health_revision != timeline.health_revision {
                timeline.health_revision = ahead.health_revision;
                live.replay_health = ahead.health().clone();
            }
            // At the end of what is written while the window goes on recording: the
            // newest written out, and read again from here.
            let stale_end = ahead.ended()
                && playing > 0.0
                && target < now - 2_000
                && timeline
                    .read_since
                    .is_some_and(|t| t.elapsed().as_secs_f64() > 2.0);
            if stale_end {
                if let Some((recorder, _)) = &live.recorder {
                    recorder.flush_soon();
                }
                timeline.seek(target, city.map.frame)
            } else {
                Reader::Ahead(ahead)
            }
        }
        // Backwards, or a jump: seek there (what is shown stays until it is read).
        Reader::Ahead(ahead) if !timeline.jump && Some(target) == timeline.shown_ms => {
            Reader::Ahead(ahead)
        }
        Reader::Ahead(_) | Reader::Idle => {
            // The newest changes written out, so the past reaches up to now.
            if let Some((recorder, _)) = &live.recorder {
                recorder.flush_soon();
            }
            timeline.seek(target, city.map.frame)
        }
        Reader::Seeking { to_ms, rx } => match rx.try_recv() {
            Ok(Ok(mut ahead)) => {
                let past = ahead.live_state(city.map.frame);
                timeline.problems = ahead.problems();
                live.show(Some(past));
                live.replay_health = ahead.health().clone();
                timeline.health_revision = ahead.health_revision;
                selection.entity = None;
                timeline.shown_ms = Some(to_ms);
                timeline.read_since = Some(std::time::Instant::now());
                if target != to_ms && playing <= 0.0 {
                    // Playing backwards (or moved on meanwhile): the next seek.
                    timeline.seek(target, city.map.frame)
                } else {
                    Reader::Ahead(Box::new(ahead))
                }
            }
            Ok(Err(e)) => {
                timeline.trouble = Some(format!("{e:#}"));
                timeline.playback.go_live();
                Reader::Idle
            }
            Err(TryRecvError::Empty) => Reader::Seeking { to_ms, rx },
            Err(TryRecvError::Disconnected) => {
                timeline.trouble = Some("the history reader stopped".into());
                timeline.playback.go_live();
                Reader::Idle
            }
        },
    };
    *timeline
        .reader
        .get_mut()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    clock.as_of_ms = Some(timeline.shown_ms.unwrap_or(target));
}

/// A mark on the scrubber: an incident raised, an order issued.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    pub at_ms: i64,
    pub label: String,
    pub incident: bool,
}

/// The incidents raised and orders issued that the desk's book holds.
pub fn marks_of(book: &crate::dispatch::book::Book) -> Vec<Mark> {
    let mut marks: Vec<Mark> = book
        .incidents
        .iter()
        .map(|i| Mark {
            at_ms: i.reported_ms,
            label: format!("{} {}", i.id, i.title),
            incident: true,
        })
        .chain(book.orders.iter().map(|o| Mark {
            at_ms: o.issued_ms,
            label: format!("{} issued", o.id),
            incident: false,
        }))
        .collect();
    marks.sort_by_key(|m| m.at_ms);
    marks
}

/// What the bar draws.
pub struct TimelineView<'a> {
    pub playback: Playback,
    /// The speed ◀ and ▶ play at.
    pub speed: f64,
    pub earliest_ms: Option<i64>,
    pub now_ms: i64,
    /// The instant the views show (now when live).
    pub shown_ms: i64,
    pub seeking: bool,
    pub catching_up: bool,
    pub trouble: Option<&'a str>,
    /// Problems met reading the history (damaged, cut short, being written).
    pub problems: &'a [String],
    pub marks: &'a [Mark],
}

const AMBER: egui::Color32 = egui::Color32::from_rgb(0xF5, 0xA6, 0x23);
const LIVE_GREEN: egui::Color32 = egui::Color32::from_rgb(0x3C, 0xC8, 0x6E);

/// The timeline bar: mode, playback buttons and speeds, the instant shown, and a
/// scrubber over the recording with incidents (red) and orders (blue) marked; a
/// click on a mark jumps to it.
pub fn timeline_bar_ui(
    ui: &mut egui::Ui,
    view: &TimelineView<'_>,
    time: &crate::clock::CityTime,
    out: &mut Vec<TimelineAction>,
) {
    ui.horizontal(|ui| {
        let (badge, colour) = match view.playback.mode() {
            Mode::Live => ("LIVE 实时".to_string(), LIVE_GREEN),
            Mode::Paused => ("PAUSED 暂停".to_string(), AMBER),
            Mode::Playing { speed } => (format!("REPLAY 回放 {}", speed_text(speed)), AMBER),
        };
        ui.label(egui::RichText::new(badge).strong().color(colour));
        let past = view.playback.is_past();
        if ui
            .add_enabled(past, egui::Button::new("Live 实时"))
            .on_hover_text("Back to now")
            .clicked()
        {
            out.push(TimelineAction::GoLive);
        }
        let playing = match view.playback.mode() {
            Mode::Playing { speed } => speed,
            _ => 0.0,
        };
        let speed = view.speed.abs().max(1.0);
        if ui
            .add(egui::Button::new("◀").selected(playing < 0.0))
            .on_hover_text(format!("Play backwards at {}", speed_text(speed)))
            .clicked()
        {
            out.push(TimelineAction::Play(-speed));
        }
        if ui
            .add(egui::Button::new("⏸").selected(view.playback.mode() == Mode::Paused))
            .on_hover_text("Pause at the instant shown")
            .clicked()
        {
            out.push(TimelineAction::Pause);
        }
        // Forwards from live is live: forwards plays the past only.
        if ui
            .add_enabled(past, egui::Button::new("▶").selected(playing > 0.0))
            .on_hover_text(format!("Play at {}", speed_text(speed)))
            .clicked()
        {
            out.push(TimelineAction::Play(speed));
        }
        let mut chosen = speed;
        egui::ComboBox::from_id_salt("timeline-speed")
            .width(70.0)
            .selected_text(speed_text(speed))
            .show_ui(ui, |ui| {
                for s in SPEEDS {
                    ui.selectable_value(&mut chosen, s, speed_text(s));
                }
            })
            .response
            .on_hover_text("Playback speed, forwards or backwards");
        if chosen != speed {
            out.push(TimelineAction::Speed(chosen));
        }
        ui.separator();
        let when = time.time_of_day(view.shown_ms);
        let text = if past {
            format!("as of {when}")
        } else {
            format!("now {when}")
        };
        ui.label(egui::RichText::new(text).monospace().color(if past {
            AMBER
        } else {
            ui.visuals().text_color()
        }));
        if view.seeking {
            ui.label("seeking…");
        } else if view.catching_up {
            ui.label("catching up…");
        }
        if let Some(trouble) = view.trouble {
            ui.label(egui::RichText::new(trouble).color(egui::Color32::LIGHT_RED));
        }
        if past && !view.problems.is_empty() {
            let n = view.problems.len();
            ui.label(
                egui::RichText::new(format!(
                    "⚠ {n} history note{}",
                    if n == 1 { "" } else { "s" }
                ))
                .color(AMBER),
            )
            .on_hover_text(view.problems.join("\n"));
        }
    });
    scrubber_ui(ui, view, time, out);
}

fn speed_text(speed: f64) -> String {
    if speed < 0.0 {
        format!("−{}×", -speed)
    } else {
        format!("{speed}×")
    }
}

fn scrubber_ui(
    ui: &mut egui::Ui,
    view: &TimelineView<'_>,
    time: &crate::clock::CityTime,
    out: &mut Vec<TimelineAction>,
) {
    let Some(earliest) = view.earliest_ms.filter(|&e| e < view.now_ms) else {
        ui.label("No history recorded yet: the past can be shown once some is.");
        return;
    };
    let span = (view.now_ms - earliest) as f32;
    let width = ui.available_width().max(50.0);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(width, 18.0), egui::Sense::click_and_drag());
    response.widget_info(|| {
        egui::WidgetInfo::labeled(egui::WidgetType::Slider, true, "Timeline 时间轴")
    });
    let x_of = |t: i64| rect.left() + rect.width() * ((t - earliest) as f32 / span).clamp(0.0, 1.0);
    let painter = ui.painter_at(rect);
    let track = egui::Rect::from_center_size(rect.center(), egui::vec2(rect.width(), 6.0));
    painter.rect_filled(track, 3.0, ui.visuals().extreme_bg_color);
    let shown_x = x_of(view.shown_ms);
    painter.rect_filled(
        egui::Rect::from_min_max(track.min, egui::pos2(shown_x, track.max.y)),
        3.0,
        if view.playback.is_past() {
            AMBER.gamma_multiply(0.6)
        } else {
            LIVE_GREEN.gamma_multiply(0.6)
        },
    );
    let mut hovered_mark: Option<&Mark> = None;
    let pointer = response.hover_pos();
    for mark in view
        .marks
        .iter()
        .filter(|m| m.at_ms >= earliest && m.at_ms <= view.now_ms)
    {
        let x = x_of(mark.at_ms);
        let (colour, top) = if mark.incident {
            (egui::Color32::from_rgb(0xE5, 0x48, 0x4D), rect.top())
        } else {
            (egui::Color32::from_rgb(0x4C, 0x9A, 0xFF), rect.center().y)
        };
        painter.line_segment(
            [egui::pos2(x, top), egui::pos2(x, rect.bottom())],
            egui::Stroke::new(2.0, colour),
        );
        if pointer.is_some_and(|p| (p.x - x).abs() <= 4.0) {
            hovered_mark = Some(mark);
        }
    }
    painter.circle_filled(
        egui::pos2(shown_x, rect.center().y),
        6.0,
        ui.visuals().strong_text_color(),
    );
    let response = match (hovered_mark, pointer) {
        (Some(mark), _) => {
            response.on_hover_text(format!("{} — {}", time.time_of_day(mark.at_ms), mark.label))
        }
        (None, Some(p)) => {
            let t = earliest + (((p.x - rect.left()) / rect.width()).clamp(0.0, 1.0) * span) as i64;
            response.on_hover_text(time.time_of_day(t))
        }
        _ => response,
    };
    if response.clicked() || response.dragged() {
        let t = match (hovered_mark, response.interact_pointer_pos()) {
            (Some(mark), _) if response.clicked() => Some(mark.at_ms),
            (_, Some(p)) => Some(
                earliest + (((p.x - rect.left()) / rect.width()).clamp(0.0, 1.0) * span) as i64,
            ),
            _ => None,
        };
        if let Some(t) = t {
            out.push(TimelineAction::Seek(t));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::live::{ChangedSlots, LiveChangedSlots};
    use crate::history::{FeedMeta, History, HistoryOptions, HistoryWriter};
    use crate::model::{EntityKind, EntityUpdate};

    fn vehicle(id: &str, lon: f64, at_ms: i64) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("taxi".into()),
                speed_kmh: None,
                heading_deg: None,
                service_status: None,
            },
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: Some(at_ms),
            fields: Default::default(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    /// Runs frames until `done` (10 s at most).
    fn frames_until(app: &mut App, what: &str, done: impl Fn(&App) -> bool) {
        let started = std::time::Instant::now();
        while !done(app) {
            app.update();
            assert!(started.elapsed().as_secs() < 10, "never: {what}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn ids(state: &crate::state::LiveState) -> Vec<String> {
        let mut ids: Vec<String> = state.iter().map(|(_, e)| e.id.clone()).collect();
        ids.sort();
        ids
    }

    struct BarState {
        playback: Playback,
        problems: Vec<String>,
        marks: Vec<Mark>,
        out: Vec<TimelineAction>,
    }

    fn bar(playback: Playback) -> egui_kittest::Harness<'static, BarState> {
        const NOW: i64 = 1_800_000_000_000;
        let time = crate::clock::CityTime::utc("test");
        egui_kittest::Harness::builder()
            .with_size(egui::vec2(900.0, 80.0))
            .build_ui_state(
                move |ui, s: &mut BarState| {
                    let view = TimelineView {
                        playback: s.playback,
                        speed: 60.0,
                        earliest_ms: Some(NOW - 3_600_000),
                        now_ms: NOW,
                        shown_ms: s.playback.shown_ms(NOW),
                        seeking: false,
                        catching_up: false,
                        trouble: None,
                        problems: &s.problems,
                        marks: &s.marks,
                    };
                    timeline_bar_ui(ui, &view, &time, &mut s.out);
                },
                BarState {
                    playback,
                    problems: vec!["zhongshu-1.mcap: a damaged chunk; skipped".into()],
                    // One incident, at the middle of the hour recorded.
                    marks: vec![Mark {
                        at_ms: NOW - 1_800_000,
                        label: "INC-000001 Fire".into(),
                        incident: true,
                    }],
                    out: Vec::new(),
                },
            )
    }

    #[test]
    fn the_bar_plays_pauses_goes_live_and_jumps_to_a_mark() {
        use egui_kittest::kittest::Queryable;
        // Live: forwards and Live are off (forwards from now is now).
        let mut h = bar(Playback::live());
        h.run();
        h.get_by_label("LIVE 实时");
        assert!(h.query_by_label("⚠ 1 history note").is_none());
        h.get_by_label("▶").click();
        h.get_by_label("Live 实时").click();
        h.run();
        assert!(h.state().out.is_empty(), "{:?}", h.state().out);
        h.get_by_label("◀").click();
        h.run();
        h.get_by_label("⏸").click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![TimelineAction::Play(-60.0), TimelineAction::Pause]
        );
        // Paused in the past: forwards plays, Live goes back.
        let mut paused = Playback::live();
        paused.pause(1_800_000_000_000 - 60_000);
        let mut h = bar(paused);
        h.run();
        h.get_by_label("PAUSED 暂停");
        // What reading the past met is said (live, it is not the past's).
        h.get_by_label("⚠ 1 history note");
        h.get_by_label("▶").click();
        h.run();
        h.get_by_label("Live 实时").click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![TimelineAction::Play(60.0), TimelineAction::GoLive]
        );
        // A click on the scrubber at the incident's mark jumps to it exactly; one
        // elsewhere, to the instant under it.
        let click = |h: &mut egui_kittest::Harness<'static, BarState>, p: egui::Pos2| {
            h.hover_at(p);
            h.run();
            for pressed in [true, false] {
                h.event(egui::Event::PointerButton {
                    pos: p,
                    button: egui::PointerButton::Primary,
                    pressed,
                    modifiers: Default::default(),
                });
                h.run();
            }
        };
        h.state_mut().out.clear();
        let r = h.get_by_label("Timeline 时间轴").rect();
        click(&mut h, egui::pos2(r.center().x + 2.0, r.center().y));
        assert_eq!(
            h.state().out,
            vec![TimelineAction::Seek(1_800_000_000_000 - 1_800_000)]
        );
        h.state_mut().out.clear();
        click(
            &mut h,
            egui::pos2(r.left() + r.width() * 0.75, r.center().y),
        );
        let [TimelineAction::Seek(t)] = h.state().out[..] else {
            panic!("{:?}", h.state().out)
        };
        let want = 1_800_000_000_000 - 900_000;
        assert!((t - want).abs() < 10_000, "{t} against {want}");
    }

    #[test]
    fn the_timeline_shows_the_recorded_past_while_now_goes_on_and_comes_back_to_live() {
        // Two minutes ago: 20 taxis moving east for 60 s; 5 more from 30 s to 40 s.
        let dir = std::env::temp_dir().join(format!("zhongshu-timeline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = crate::clock::unix_ms_now();
        let t0 = now - 120_000;
        let feeds = vec![FeedMeta {
            id: 0,
            name: "taxis".into(),
            domain: "traffic".into(),
        }];
        let options = HistoryOptions {
            keyframe_ms: 10_000,
            ..Default::default()
        };
        let mut writer = HistoryWriter::create(&dir, feeds, options).unwrap();
        let lon = |i: usize, s: i64| 24.93 + i as f64 * 1e-3 + s as f64 * 1e-5;
        for s in 0..60i64 {
            let at = t0 + s * 1000;
            for i in 0..20 {
                writer
                    .upsert(0, at, &vehicle(&format!("taxi-{i}"), lon(i, s), at))
                    .unwrap();
            }
            if (30..40).contains(&s) {
                for i in 0..5 {
                    let id = format!("extra-{i}");
                    writer.upsert(0, at, &vehicle(&id, lon(i, s), at)).unwrap();
                }
            }
            if s == 40 {
                for i in 0..5 {
                    writer.remove(0, &format!("extra-{i}"), at).unwrap();
                }
            }
            // The feed's health: fresh from 5 s, stale from 32 s.
            let health = |freshness: &str| {
                serde_json::json!({"feed": "taxis", "freshness": freshness, "validity": 0.98,
                    "quarantined": null, "last_error": null, "completeness": 1.0})
            };
            if s == 5 {
                writer.health(0, at, health("fresh")).unwrap();
            }
            if s == 32 {
                writer.health(0, at, health("stale")).unwrap();
            }
        }
        writer.finish().unwrap();
        let history = History::open(&dir).unwrap();

        // Now: three buses, the live state the feeds go into.
        let map = crate::map::load_default().unwrap();
        let (running, rx) = crate::feeds::start_feeds(&[], &[], &map, 1);
        let mut state = crate::state::LiveState::new(map.frame);
        for i in 0..3 {
            state.apply(0, vehicle(&format!("bus-{i}"), 24.94, now), now);
        }
        let live = Live::new(
            Vec::new(),
            state,
            crate::governance::health::Ingest::new(&[], rx),
            running,
        );
        let index = crate::map::pick::BuildingIndex::new(&map);
        let mut app = App::new();
        app.insert_resource(City { map, index })
            .insert_resource(live)
            .insert_resource(Time::<()>::default())
            .insert_resource(ViewClock::default())
            .insert_resource(Selection::default())
            .insert_resource(ChangedSlots::default())
            .insert_resource(LiveChangedSlots::default())
            .insert_resource(Timeline::new(dir.clone()))
            .add_systems(
                Update,
                (drive_timeline, crate::app::live::pump_feeds).chain(),
            );
        app.update();
        assert_eq!(app.world().resource::<Timeline>().earliest_ms, Some(t0));

        let live_ids = vec!["bus-0", "bus-1", "bus-2"];
        let shown_at = |app: &App, t: i64| {
            let timeline = app.world().resource::<Timeline>();
            timeline.shown_ms == Some(t) && !timeline.seeking()
        };
        let check_past = |app: &App, t: i64| {
            let live = app.world().resource::<Live>();
            let want = history.state_at(t).unwrap();
            let shown = live.shown();
            assert_eq!(shown.len(), want.entities.len(), "at {t}");
            for e in want.entities.values() {
                let got = shown.get(0, &e.update.id).expect("the entity shown");
                assert_eq!(got.position, e.update.position, "{} at {t}", e.update.id);
            }
            // Now goes on apart: nothing of the past in it.
            assert_eq!(ids(&live.state), live_ids);
            assert_eq!(app.world().resource::<ViewClock>().as_of_ms, Some(t));
        };

        // A seek into the past: the extras are there at 35 s.
        let t35 = t0 + 35_000;
        app.world_mut()
            .resource_mut::<Timeline>()
            .act(TimelineAction::Seek(t35), now);
        frames_until(&mut app, "the seek to 35 s", |app| shown_at(app, t35));
        check_past(&app, t35);
        assert_eq!(app.world().resource::<Live>().shown().len(), 25);
        let freshness = |app: &App| {
            app.world()
                .resource::<Live>()
                .replay_health
                .get(&0)
                .map(|l| {
                    l["health"]["freshness"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
        };
        assert_eq!(freshness(&app).as_deref(), Some("stale"));
        assert!(app.world().resource::<Live>().shown_epoch >= 1);

        // Backwards: a seek again; at 10 s there are no extras.
        let t10 = t0 + 10_000;
        app.world_mut()
            .resource_mut::<Timeline>()
            .act(TimelineAction::Seek(t10), now);
        frames_until(&mut app, "the seek to 10 s", |app| shown_at(app, t10));
        check_past(&app, t10);
        assert_eq!(app.world().resource::<Live>().shown().len(), 20);
        assert_eq!(freshness(&app).as_deref(), Some("fresh"));

        // Played forwards at 60x for 0.4 s: 24 s of data read ahead and applied, no
        // seek; the extras come in at 30 s.
        let epoch = app.world().resource::<Live>().shown_epoch;
        app.world_mut()
            .resource_mut::<Timeline>()
            .act(TimelineAction::Play(60.0), now);
        app.world_mut()
            .resource_mut::<Time>()
            .advance_by(std::time::Duration::from_millis(400));
        app.update();
        let t34 = t10 + 24_000;
        app.world_mut()
            .resource_mut::<Timeline>()
            .act(TimelineAction::Pause, crate::clock::unix_ms_now());
        frames_until(&mut app, "the reading to catch up", |app| {
            let timeline = app.world().resource::<Timeline>();
            !timeline.catching_up && app.world().resource::<Live>().shown().len() == 25
        });
        assert_eq!(
            app.world().resource::<Timeline>().shown_ms,
            Some(t34),
            "playback moved 24 s"
        );
        check_past(&app, t34);
        assert_eq!(
            app.world().resource::<Live>().shown_epoch,
            epoch,
            "played, not sought"
        );
        // The health recorded at 32 s came in with the records.
        assert_eq!(freshness(&app).as_deref(), Some("stale"));

        // An incident's replay: from 20 s, played at 60x, paused at its closure at
        // 30 s (not a frame's worth of play past it). The clock stands still between
        // the frames that move it.
        app.world_mut()
            .resource_mut::<Time>()
            .advance_by(std::time::Duration::ZERO);
        app.world_mut().resource_mut::<Timeline>().replay_span(
            t0 + 20_000,
            Some(t0 + 30_000),
            crate::clock::unix_ms_now(),
        );
        frames_until(&mut app, "the seek to 20 s", |app| {
            shown_at(app, t0 + 20_000)
        });
        app.world_mut()
            .resource_mut::<Time>()
            .advance_by(std::time::Duration::from_millis(400));
        app.update();
        app.world_mut()
            .resource_mut::<Time>()
            .advance_by(std::time::Duration::ZERO);
        let t30 = t0 + 30_000;
        assert_eq!(
            app.world().resource::<Timeline>().playback.mode(),
            Mode::Paused
        );
        frames_until(&mut app, "the stop at 30 s", |app| shown_at(app, t30));
        check_past(&app, t30);

        // Live again: now is shown, the clock runs.
        app.world_mut()
            .resource_mut::<Timeline>()
            .act(TimelineAction::GoLive, now);
        app.update();
        let live = app.world().resource::<Live>();
        assert!(live.replay.is_none());
        assert!(live.replay_health.is_empty());
        assert_eq!(ids(live.shown()), live_ids);
        assert_eq!(app.world().resource::<ViewClock>().as_of_ms, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
