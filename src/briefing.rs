//! The leaders' briefing, as plain data: a deck of slides made from the record of a
//! period (the dispatch log's book and operating figures), and the PDF of its pictures.
//!
//! Slides, in order: the period at a glance; incidents by sub-brain and severity; one
//! slide per key incident, in the order they were raised (the map flown to it, its
//! timeline, its orders and who did what, its outcome); the departments' performance;
//! what the log holds of the data's sources.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::clock::CityTime;
use crate::dispatch::book::{Book, Incident};
use crate::dispatch::ops::OpsReport;
use crate::model::{Domain, Severity};
use crate::wall::{Bar, Chart, ChartKind, Tone};

/// Instants across the period at which the vital signs are read from the history.
pub const VITAL_SIGN_INSTANTS: usize = 17;

/// Key incidents shown one slide each, at most.
pub const MAX_KEY_INCIDENTS: usize = 12;
/// Below this many severe ones, the most severe of the rest fill in.
pub const MIN_KEY_INCIDENTS: usize = 5;
/// Timeline entries on an incident's slide (the latest).
const TIMELINE_LINES: usize = 8;

/// What a slide is about.
#[derive(Clone, Debug, PartialEq)]
pub enum SlideKind {
    /// The period at a glance, over the whole city.
    Overview,
    /// Incidents by sub-brain and severity.
    Incidents,
    /// One key incident: the map flown to it.
    Incident { id: String, lon: f64, lat: f64 },
    /// The departments' performance.
    Departments,
    /// The data's sources, as far as the log holds them.
    Sources,
}

/// One slide: a heading, lines in large type, details in smaller type, charts, and
/// the presenter's notes (not shown to the room when presented).
#[derive(Clone, Debug, PartialEq)]
pub struct Slide {
    pub kind: SlideKind,
    pub title: String,
    pub lines: Vec<String>,
    /// Smaller lines below them (a timeline, the figures by kind).
    pub details: Vec<String>,
    pub notes: Vec<String>,
    /// Charts beside the lines.
    pub charts: Vec<Chart>,
}

/// The city's vital signs at an instant of the period, from the recorded history.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VitalSample {
    pub at_ms: i64,
    /// Share of the judged road length congested, 0–100.
    pub congestion_pct: Option<f64>,
    pub mean_aqi: Option<f64>,
    pub open_alerts: Option<f64>,
}

/// Instants across a period for its charts over time: `n` of them, ends included.
pub fn chart_instants(since_ms: i64, until_ms: i64, n: usize) -> Vec<i64> {
    let n = n.max(2);
    let span = (until_ms - since_ms).max(0) as f64;
    (0..n)
        .map(|k| since_ms + (span * k as f64 / (n - 1) as f64).round() as i64)
        .collect()
}

/// The vital signs at `instants` from a recorded history (see
/// [`crate::history::state_at::kpis_at`]); problems met are returned to be said.
pub fn vital_signs_from_history(
    history: &crate::history::History,
    frame: crate::geo_frame::GeoFrame,
    instants: &[i64],
) -> (Vec<VitalSample>, Vec<String>) {
    let (figures, problems) = crate::history::state_at::kpis_at(history, frame, instants);
    let samples = figures
        .into_iter()
        .map(|(at_ms, k)| VitalSample {
            at_ms,
            congestion_pct: k.congestion_index.map(|c| c * 100.0),
            mean_aqi: k.mean_aqi,
            open_alerts: Some(k.open_alerts as f64),
        })
        .collect();
    (samples, problems)
}

/// Open incidents over `[since, until]` at 49 instants (every 10 minutes of a shift).
pub fn open_incidents_chart(book: &Book, since_ms: i64, until_ms: i64) -> Chart {
    let at = chart_instants(since_ms, until_ms, 49);
    let open = crate::wall::open_incidents_at(book, &at);
    Chart {
        title: "Open incidents 未结事件".into(),
        tone: Tone::Neutral,
        kind: ChartKind::Line {
            points: at
                .into_iter()
                .zip(open.into_iter().map(|n| n as f64))
                .collect(),
            span: (since_ms, until_ms),
        },
    }
}

/// The departments' on-time share and time to sign for (median), a bar each; none
/// when no department had an order.
pub fn department_charts(report: &OpsReport) -> Vec<Chart> {
    if report.departments.is_empty() {
        return Vec::new();
    }
    let bars = |value: &dyn Fn(&crate::dispatch::ops::DepartmentFigures) -> (f64, String)| {
        ChartKind::Bars(
            report
                .departments
                .iter()
                .map(|(id, f)| {
                    let (value, text) = value(f);
                    Bar {
                        name: f.name.clone().unwrap_or_else(|| id.clone()),
                        value,
                        text,
                    }
                })
                .collect(),
        )
    };
    let charts = vec![
        Chart {
            title: "On time 按时率".into(),
            tone: Tone::Good,
            kind: bars(&|f| {
                (
                    f.on_time_pct.unwrap_or(0.0),
                    f.on_time_pct.map_or("—".into(), |p| format!("{p:.0}%")),
                )
            }),
        },
        Chart {
            title: "Time to sign for, p50 签收用时".into(),
            tone: Tone::Warn,
            kind: bars(&|f| {
                (
                    f.sign_for_ms.p50.unwrap_or(0) as f64 / 60_000.0,
                    f.sign_for_ms.p50.map_or("—".into(), minutes),
                )
            }),
        },
    ];
    // A chart of nothing known (no order due yet, none signed for) is left out.
    let known = [
        report.departments.values().any(|f| f.on_time_pct.is_some()),
        report
            .departments
            .values()
            .any(|f| f.sign_for_ms.p50.is_some()),
    ];
    charts
        .into_iter()
        .zip(known)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

/// The deck of a period.
#[derive(Clone, Debug, PartialEq)]
pub struct Deck {
    pub since_ms: i64,
    pub until_ms: i64,
    pub slides: Vec<Slide>,
}

impl Deck {
    /// The vital signs over the period, from the recorded history, as charts on the
    /// overview (before its open incidents); none recorded is said in its notes.
    pub fn add_vital_signs(&mut self, samples: &[VitalSample]) {
        let span = (self.since_ms, self.until_ms);
        let Some(overview) = self
            .slides
            .iter_mut()
            .find(|s| s.kind == SlideKind::Overview)
        else {
            return;
        };
        let series = |f: fn(&VitalSample) -> Option<f64>| -> Vec<(i64, f64)> {
            samples
                .iter()
                .filter_map(|s| f(s).map(|v| (s.at_ms, v)))
                .collect()
        };
        let charts: Vec<Chart> = [
            (
                "Congestion % 拥堵",
                Tone::Warn,
                series(|s| s.congestion_pct),
            ),
            ("AQI 空气质量", Tone::Good, series(|s| s.mean_aqi)),
            ("Open alerts 告警", Tone::Alarm, series(|s| s.open_alerts)),
        ]
        .into_iter()
        .filter(|(_, _, points)| !points.is_empty())
        .map(|(title, tone, points)| Chart {
            title: title.into(),
            tone,
            kind: ChartKind::Line { points, span },
        })
        .collect();
        if charts.is_empty() {
            overview.notes.push(
                "No live history recorded in the period: the vital signs are not charted.".into(),
            );
            return;
        }
        overview.notes.push(format!(
            "Vital signs from the recorded history at {} instant{}.",
            samples.len(),
            if samples.len() == 1 { "" } else { "s" }
        ));
        let tail = std::mem::take(&mut overview.charts);
        overview.charts = charts;
        overview.charts.extend(tail);
    }

    /// The key incidents' ids, in slide order.
    pub fn incident_ids(&self) -> Vec<&str> {
        self.slides
            .iter()
            .filter_map(|s| match &s.kind {
                SlideKind::Incident { id, .. } => Some(id.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn minutes(ms: i64) -> String {
    crate::clock::age_words(ms.max(0) as f64 / 1000.0)
}

/// The key incidents of `[since, until]`: every severe or extreme one, else the most
/// severe, at least [`MIN_KEY_INCIDENTS`] when there are that many and at most
/// [`MAX_KEY_INCIDENTS`]; in the order they were raised.
pub fn key_incidents(book: &Book, since_ms: i64, until_ms: i64) -> Vec<&Incident> {
    let mut period: Vec<&Incident> = book
        .incidents
        .iter()
        .filter(|i| i.reported_ms >= since_ms && i.reported_ms <= until_ms)
        .collect();
    // Most severe first, then the earliest.
    period.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(a.reported_ms.cmp(&b.reported_ms))
            .then(a.id.cmp(&b.id))
    });
    let severe = period
        .iter()
        .filter(|i| i.severity >= Severity::Severe)
        .count();
    let take = severe.clamp(MIN_KEY_INCIDENTS, MAX_KEY_INCIDENTS);
    let mut key: Vec<&Incident> = period.into_iter().take(take).collect();
    key.sort_by(|a, b| a.reported_ms.cmp(&b.reported_ms).then(a.id.cmp(&b.id)));
    key
}

/// The deck of `[since, until]` from the book as it stood at `until` and the period's
/// operating figures; times in the city's zone.
pub fn deck(
    book: &Book,
    report: &OpsReport,
    since_ms: i64,
    until_ms: i64,
    time: &CityTime,
) -> Deck {
    let day = |ms: i64| time.text(ms);
    // Times of day when the period lies within one date, else with the date: a time
    // across midnight is never ambiguous.
    let one_date = day(since_ms).get(..10) == day(until_ms).get(..10);
    let hm = |ms: i64| {
        if one_date {
            time.time_of_day(ms)
        } else {
            day(ms)
        }
    };
    let in_period: Vec<&Incident> = book
        .incidents
        .iter()
        .filter(|i| i.reported_ms >= since_ms && i.reported_ms <= until_ms)
        .collect();
    let orders_in: Vec<_> = book
        .orders
        .iter()
        .filter(|o| o.issued_ms >= since_ms && o.issued_ms <= until_ms)
        .collect();
    let open_at_end = book.incidents.iter().filter(|i| i.is_open()).count();
    let (due, on_time) = report
        .departments
        .values()
        .fold((0, 0), |(d, t), f| (d + f.due, t + f.on_time));
    let mut slides = Vec::new();
    slides.push(Slide {
        kind: SlideKind::Overview,
        title: format!("Briefing 简报 · {} – {}", hm(since_ms), hm(until_ms)),
        lines: vec![
            format!("{} – {}", day(since_ms), day(until_ms)),
            format!(
                "{} incidents raised 新增事件 · {} still open 未结",
                in_period.len(),
                open_at_end
            ),
            format!(
                "{} orders issued 下达指令 · {} on time 按时{}",
                orders_in.len(),
                on_time,
                if due > 0 {
                    format!(" ({:.0}%)", on_time as f64 * 100.0 / due as f64)
                } else {
                    String::new()
                }
            ),
            format!(
                "{} orders overdue now 当前超时 · {} service-target breaches 超出时限",
                report.overdue.len(),
                report.sla_breaches.len()
            ),
            format!(
                "{} severe or extreme 重大以上 · {} key incidents follow{}",
                in_period
                    .iter()
                    .filter(|i| i.severity >= Severity::Severe)
                    .count(),
                key_incidents(book, since_ms, until_ms).len(),
                if in_period
                    .iter()
                    .filter(|i| i.severity >= Severity::Severe)
                    .count()
                    > MAX_KEY_INCIDENTS
                {
                    format!(" (the first {MAX_KEY_INCIDENTS} most severe; ops-report has them all)")
                } else {
                    String::new()
                }
            ),
        ],
        details: Vec::new(),
        notes: vec![format!(
            "Figures from the dispatch log ({} events in the period); times in {}.",
            report.events_in_window,
            time.name()
        )],
        charts: vec![open_incidents_chart(book, since_ms, until_ms)],
    });
    // Incidents by sub-brain and severity.
    let mut by_domain: BTreeMap<Domain, [usize; 4]> = BTreeMap::new();
    for i in &in_period {
        let at = Severity::ALL
            .iter()
            .position(|s| *s == i.severity)
            .unwrap_or(0);
        by_domain.entry(i.domain).or_default()[at] += 1;
    }
    let mut lines: Vec<String> = by_domain
        .iter()
        .map(|(d, counts)| {
            let parts: Vec<String> = Severity::ALL
                .iter()
                .rev()
                .zip(counts.iter().rev())
                .filter(|(_, n)| **n > 0)
                .map(|(s, n)| format!("{n} {}", s.label()))
                .collect();
            format!(
                "{}: {} ({})",
                d.label(),
                counts.iter().sum::<usize>(),
                parts.join(", ")
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("No incident in the period 本时段无事件".into());
    }
    let mut details = Vec::new();
    if report.incidents.len() > 8 {
        details.push(format!(
            "The 8 of {} kinds with the most incidents:",
            report.incidents.len()
        ));
    }
    let mut kinds: Vec<_> = report.incidents.iter().collect();
    kinds.sort_by(|a, b| b.count.cmp(&a.count).then(b.severity.cmp(&a.severity)));
    for f in kinds.into_iter().take(8) {
        details.push(format!(
            "{} ({}): {} raised, {} open; first order p50 {}, closed p50 {}",
            f.kind,
            f.severity.label(),
            f.count,
            f.open,
            f.first_order_ms.p50.map_or("—".into(), minutes),
            f.close_ms.p50.map_or("—".into(), minutes),
        ));
    }
    let mut by_severity = [0usize; 4];
    for counts in by_domain.values() {
        for (k, n) in counts.iter().enumerate() {
            by_severity[k] += n;
        }
    }
    let charts = if in_period.is_empty() {
        Vec::new()
    } else {
        vec![
            Chart {
                title: "By sub-brain 按领域".into(),
                tone: Tone::Neutral,
                kind: ChartKind::Bars(
                    by_domain
                        .iter()
                        .map(|(d, counts)| {
                            let n: usize = counts.iter().sum();
                            Bar {
                                name: d.label().into(),
                                value: n as f64,
                                text: n.to_string(),
                            }
                        })
                        .collect(),
                ),
            },
            Chart {
                title: "By severity 按等级".into(),
                tone: Tone::Alarm,
                kind: ChartKind::Bars(
                    Severity::ALL
                        .iter()
                        .zip(by_severity)
                        .rev()
                        .map(|(s, n)| Bar {
                            name: s.label().into(),
                            value: n as f64,
                            text: n.to_string(),
                        })
                        .collect(),
                ),
            },
        ]
    };
    slides.push(Slide {
        kind: SlideKind::Incidents,
        title: "Incidents by sub-brain 各领域事件".into(),
        lines,
        details,
        notes: vec![format!(
            "{} incidents in the period; time to first order and to close are medians by kind.",
            in_period.len()
        )],
        charts,
    });
    for i in key_incidents(book, since_ms, until_ms) {
        let mut lines = vec![format!(
            "Raised {} · {} · {} · from {}",
            hm(i.reported_ms),
            i.severity.label(),
            i.domain.label(),
            i.source
        )];
        for &o in &i.orders {
            let Some(o) = book.orders.get(o) else {
                continue;
            };
            let signed = o
                .steps
                .iter()
                .find(|s| s.status.is_signed_for())
                .map(|s| format!(", signed for after {}", minutes(s.at_ms - o.issued_ms)))
                .unwrap_or_default();
            let done = o
                .steps
                .iter()
                .find(|s| s.status == crate::dispatch::OrderStatus::Done)
                .map(|s| format!(", done after {}", minutes(s.at_ms - o.issued_ms)))
                .unwrap_or_default();
            lines.push(format!(
                "{} → {}: {}{signed}{done}",
                o.id,
                o.department,
                o.status.label()
            ));
        }
        lines.push(match i.finished_ms {
            Some(f) => format!(
                "Outcome 结果: {} at {}, {} after it was raised",
                i.status.label(),
                hm(f),
                minutes(f - i.reported_ms)
            ),
            None => format!(
                "Outcome 结果: still {} at {}",
                i.status.label(),
                hm(until_ms)
            ),
        });
        let start = i.timeline.len().saturating_sub(TIMELINE_LINES);
        let details = i.timeline[start..]
            .iter()
            .map(|t| format!("{} {}: {}", hm(t.at_ms), t.who, t.text))
            .collect();
        let notes = vec![format!(
            "{} timeline entries in all{}; {} orders.",
            i.timeline.len(),
            if start > 0 {
                format!(", the latest {TIMELINE_LINES} shown")
            } else {
                String::new()
            },
            i.orders.len()
        )];
        slides.push(Slide {
            kind: SlideKind::Incident {
                id: i.id.clone(),
                lon: i.lon,
                lat: i.lat,
            },
            title: format!("{} · {}", i.id, i.title),
            lines,
            details,
            notes,
            charts: Vec::new(),
        });
    }
    let mut lines: Vec<String> = report
        .departments
        .iter()
        .map(|(id, f)| {
            // Only what is known: a figure with no order to measure is left out.
            let mut parts = vec![format!("{} orders", f.orders)];
            parts.extend(f.on_time_pct.map(|p| format!("{p:.0}% on time")));
            parts.extend(
                f.sign_for_ms
                    .p50
                    .map(|ms| format!("sign-for p50 {}", minutes(ms))),
            );
            parts.extend(f.done_ms.p50.map(|ms| format!("done p50 {}", minutes(ms))));
            if f.rejected > 0 {
                parts.push(format!("{} rejected", f.rejected));
            }
            if f.escalated > 0 {
                parts.push(format!("{} escalated", f.escalated));
            }
            format!(
                "{}: {}",
                f.name.clone().unwrap_or_else(|| id.clone()),
                parts.join(" · ")
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("No order in the period 本时段无指令".into());
    }
    let charts = department_charts(report);
    slides.push(Slide {
        kind: SlideKind::Departments,
        title: "Departments 部门处置".into(),
        charts,
        lines,
        notes: vec![format!(
            "{} departments had orders; {} service-target breaches.",
            report.departments.len(),
            report.sla_breaches.len()
        )],
        details: report
            .sla_breaches
            .iter()
            .take(10)
            .map(|b| {
                format!(
                    "{} ({}) missed its {:?} target by {}",
                    b.order,
                    b.department,
                    b.target,
                    minutes(b.over_ms)
                )
            })
            .collect(),
    });
    let mut lines: Vec<String> = report
        .feeds
        .incidents_by_source
        .iter()
        .map(|(source, f)| {
            format!(
                "{source}: {} incidents raised, {} withdrawn by the source",
                f.incidents, f.withdrawn
            )
        })
        .collect();
    if lines.is_empty() {
        lines.push("No incident came from a feed 无数据源事件".into());
    }
    slides.push(Slide {
        kind: SlideKind::Sources,
        title: "Data sources 数据来源".into(),
        lines,
        details: vec![report.feeds.note.to_string()],
        notes: Vec::new(),
        charts: Vec::new(),
    });
    Deck {
        since_ms,
        until_ms,
        slides,
    }
}

/// The slide as a screen of the wall's renderer: the map (flown to the incident, or
/// the whole city) beside the slide's text, or the text alone.
pub fn slide_screen(slide: &Slide, index: usize, with_notes: bool) -> crate::wall::Screen {
    use crate::wall::{MapTile, Placement, Screen, Tile, TileKind, View};
    let charted = !slide.charts.is_empty();
    let text = |at: [u32; 2], span: [u32; 2]| Tile {
        kind: TileKind::Slide {
            lines: slide.lines.clone(),
            details: slide.details.clone(),
            notes: if with_notes {
                slide.notes.clone()
            } else {
                Vec::new()
            },
        },
        at,
        span,
        title: Some(slide.title.clone()),
    };
    let charts = |at: [u32; 2], span: [u32; 2]| Tile {
        kind: TileKind::Charts(slide.charts.clone()),
        at,
        span,
        title: Some("Figures 图表".into()),
    };
    let map = |view: View, view_name: String, focus: Option<String>, rows: u32| Tile {
        kind: TileKind::Map(MapTile {
            view,
            view_name,
            layers: None,
            domains: None,
            focus,
        }),
        at: [0, 0],
        span: [2, rows],
        title: Some(format!("{} / {}", index + 1, "Briefing 简报")),
    };
    let (columns, rows, tiles) = match &slide.kind {
        // The city on the left half; the figures above their charts on the right.
        SlideKind::Overview if charted => (
            4,
            2,
            vec![
                map(View::City, crate::wall::CITY_VIEW.into(), None, 2),
                text([2, 0], [2, 1]),
                charts([2, 1], [2, 1]),
            ],
        ),
        SlideKind::Overview => (
            3,
            1,
            vec![
                map(View::City, crate::wall::CITY_VIEW.into(), None, 1),
                text([2, 0], [1, 1]),
            ],
        ),
        SlideKind::Incident { id, lon, lat } => (
            3,
            1,
            vec![
                map(
                    View::At {
                        lon: *lon,
                        lat: *lat,
                        distance_m: 700.0,
                        yaw_deg: 25.0,
                        pitch_deg: 50.0,
                    },
                    id.clone(),
                    Some(id.clone()),
                    1,
                ),
                text([2, 0], [1, 1]),
            ],
        ),
        _ if charted => (2, 1, vec![text([0, 0], [1, 1]), charts([1, 0], [1, 1])]),
        _ => (1, 1, vec![text([0, 0], [1, 1])]),
    };
    Screen {
        name: format!("slide {}", index + 1),
        placement: Placement::MonitorIndex(0),
        columns,
        rows,
        tiles,
    }
}

/// The presenter's screen beside slide `index` of `deck`: on the second monitor, or
/// in a window.
pub fn presenter_screen(deck: &Deck, index: usize) -> crate::wall::Screen {
    use crate::wall::{Placement, PresenterView, Screen, Tile, TileKind};
    let slide = &deck.slides[index.min(deck.slides.len().saturating_sub(1))];
    Screen {
        name: "presenter".into(),
        placement: Placement::MonitorIndex(1),
        columns: 1,
        rows: 1,
        tiles: vec![Tile {
            kind: TileKind::Presenter(Box::new(PresenterView {
                index,
                count: deck.slides.len(),
                title: slide.title.clone(),
                notes: slide.notes.clone(),
                next: deck.slides.get(index + 1).map(|s| s.title.clone()),
                outline: deck.slides.iter().map(|s| s.title.clone()).collect(),
            })),
            at: [0, 0],
            span: [1, 1],
            title: None,
        }],
    }
}

/// A presenter's move through the deck (arrow keys, PageUp/PageDown as clickers send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Go {
    Next,
    Previous,
    First,
    Last,
}

/// Where a presented deck stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Talk {
    pub index: usize,
    pub count: usize,
}

impl Talk {
    pub fn new(count: usize) -> Self {
        Self { index: 0, count }
    }

    /// Moves; `true` when another slide is shown. Past either end it stays.
    pub fn go(&mut self, go: Go) -> bool {
        let last = self.count.saturating_sub(1);
        let to = match go {
            Go::Next => (self.index + 1).min(last),
            Go::Previous => self.index.saturating_sub(1),
            Go::First => 0,
            Go::Last => last,
        };
        let moved = to != self.index;
        self.index = to;
        moved
    }
}

/// Removes an earlier deck from `dir` (its `slide-NN.png` and `briefing.pdf`, nothing
/// else), so a folder never mixes two decks.
pub fn clear_deck(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let slide = name
            .strip_prefix("slide-")
            .and_then(|rest| rest.strip_suffix(".png"))
            .is_some_and(|n| n.len() >= 2 && n.chars().all(|c| c.is_ascii_digit()));
        if (slide || name == "briefing.pdf" || name == ".briefing.pdf.partial")
            && entry.file_type()?.is_file()
        {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A deck being written into a folder: the folder is locked against another
/// briefing, the slides and the PDF go into a staging folder inside it, and only a
/// whole deck replaces the one there (a run killed midway leaves the earlier deck).
pub struct DeckWriter {
    out: PathBuf,
    staging: PathBuf,
    _lock: std::fs::File,
}

/// The staging folder's name, inside the deck's folder.
const STAGING: &str = ".briefing-staging";

impl DeckWriter {
    /// Locks `out` (made when missing) and starts an empty staging folder in it (one
    /// left by a killed run goes).
    pub fn begin(out: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let lock_path = out.join(".briefing.lock");
        let lock = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "another briefing is writing into {} (give each its own --out)",
                    out.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("{}: {e}", lock_path.display()));
            }
        }
        let staging = out.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        }
        std::fs::create_dir(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        Ok(Self {
            out: out.to_path_buf(),
            staging,
            _lock: lock,
        })
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Where slide `index` (from 0) is written while the deck is made.
    pub fn slide_path(&self, index: usize) -> PathBuf {
        self.staging.join(format!("slide-{:02}.png", index + 1))
    }

    /// The PDF of the slides written, then the whole deck moved into the folder in
    /// place of the one there: the slides' and the PDF's final paths, and the pages.
    pub fn finish(self, slides: &[PathBuf]) -> Result<(Vec<PathBuf>, PathBuf, usize), String> {
        let staged_pdf = self.staging.join("briefing.pdf");
        let pages = write_pdf(slides, &staged_pdf)?;
        clear_deck(&self.out).map_err(|e| format!("{}: {e}", self.out.display()))?;
        let mut moved = Vec::with_capacity(slides.len());
        for slide in slides {
            let name = slide
                .file_name()
                .ok_or_else(|| format!("{}: not a file", slide.display()))?;
            let to = self.out.join(name);
            std::fs::rename(slide, &to).map_err(|e| format!("{}: {e}", to.display()))?;
            moved.push(to);
        }
        let pdf = self.out.join("briefing.pdf");
        std::fs::rename(&staged_pdf, &pdf).map_err(|e| format!("{}: {e}", pdf.display()))?;
        let _ = std::fs::remove_dir_all(&self.staging);
        Ok((moved, pdf, pages))
    }
}

/// Writes `pages` (PNG pictures, one a page, each page the picture's size in points)
/// as one PDF at `out`; the number of pages written.
pub fn write_pdf(pages: &[PathBuf], out: &Path) -> Result<usize, String> {
    use pdf_writer::{Content, Filter, Finish, Name, Pdf, Rect, Ref};
    use std::io::Write;
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let ids: Vec<(Ref, Ref, Ref)> = (0..pages.len() as i32)
        .map(|i| {
            (
                Ref::new(3 + i * 3),
                Ref::new(4 + i * 3),
                Ref::new(5 + i * 3),
            )
        })
        .collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(ids.iter().map(|(page, _, _)| *page))
        .count(pages.len() as i32);
    let name = Name(b"Slide");
    for (path, (page_id, image_id, content_id)) in pages.iter().zip(&ids) {
        let image = image::open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .to_rgb8();
        let (w, h) = (image.width(), image.height());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(image.as_raw())
            .and_then(|_| z.flush())
            .map_err(|e| format!("compressing {}: {e}", path.display()))?;
        let encoded = z
            .finish()
            .map_err(|e| format!("compressing {}: {e}", path.display()))?;
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, w as f32, h as f32));
        page.parent(tree);
        page.contents(*content_id);
        page.resources().x_objects().pair(name, *image_id);
        page.finish();
        let mut xobject = pdf.image_xobject(*image_id, &encoded);
        xobject.filter(Filter::FlateDecode);
        xobject.width(w as i32);
        xobject.height(h as i32);
        xobject.color_space().device_rgb();
        xobject.bits_per_component(8);
        xobject.finish();
        let mut content = Content::new();
        content.save_state();
        content.transform([w as f32, 0.0, 0.0, h as f32, 0.0, 0.0]);
        content.x_object(name);
        content.restore_state();
        pdf.stream(*content_id, &content.finish());
    }
    std::fs::write(out, pdf.finish()).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(pages.len())
}

/// Pages in a PDF written by [`write_pdf`] (its page tree's count).
pub fn pdf_page_count(bytes: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(bytes);
    let at = text.find("/Type /Pages")?;
    let rest = &text[at..];
    let count = rest.find("/Count ")?;
    rest[count + 7..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Action;
    use crate::dispatch::book::{Actor, Command, NewIncident, NewOrder};
    use crate::dispatch::config::DispatchConfig;
    use crate::dispatch::dispatcher::Dispatcher;
    use crate::dispatch::ops::OpsBuilder;
    use crate::dispatch::testing::temp_db;

    const T0: i64 = 1_795_946_400_000; // 2026-11-29T10:00:00Z
    const MIN: i64 = 60_000;

    /// Nine incidents over a shift: three extreme or severe, six minor or moderate.
    fn shift(name: &str) -> (Book, OpsReport) {
        let db = temp_db("briefing", name);
        let mut d = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let li = Actor::new("li.wei", crate::dispatch::Role::Dispatcher, None);
        let raised = [
            (Severity::Minor, 5, "Bin fire"),
            (Severity::Severe, 20, "Gas leak on Mannerheimintie"),
            (Severity::Moderate, 30, "Water main burst"),
            (Severity::Extreme, 60, "Chemical plant fire"),
            (Severity::Minor, 90, "Fallen tree"),
            (Severity::Moderate, 120, "Power cut in Kamppi"),
            (Severity::Severe, 200, "Underpass flooded"),
            (Severity::Minor, 300, "Broken traffic light"),
            (Severity::Minor, 400, "Illegal dumping"),
        ];
        for (severity, at, title) in raised {
            d.execute(
                &Command::ReportIncident(NewIncident {
                    kind: "building_fire".into(),
                    title: title.into(),
                    domain: Domain::Safety,
                    severity,
                    lon: 24.94,
                    lat: 60.17,
                    source: "map".into(),
                    key: None,
                }),
                &li,
                T0 + at * MIN,
            )
            .unwrap();
        }
        d.execute(
            &Command::IssueOrders {
                incident: "INC-000004".into(),
                orders: vec![NewOrder {
                    department: "central_district".into(),
                    instruction: "Four engines".into(),
                    deadline_ms: T0 + 90 * MIN,
                }],
            },
            &li,
            T0 + 62 * MIN,
        )
        .unwrap();
        for (action, at) in [(Action::AcknowledgeOrder, 65), (Action::CompleteOrder, 150)] {
            d.execute(
                &Command::Order {
                    id: "ORD-000001".into(),
                    action,
                    note: None,
                },
                &li,
                T0 + at * MIN,
            )
            .unwrap();
        }
        let mut b = OpsBuilder::new(DispatchConfig::default_config(), None, None);
        let log = crate::store::EventLog::open(&db).unwrap();
        log.verify_with(|e| b.push_stored(false, e.at_ms, &e.operator, &e.role, &e.payload))
            .unwrap();
        let book = b.book().clone();
        (book, b.finish(T0 + 480 * MIN))
    }

    #[test]
    fn the_deck_has_an_overview_then_the_key_incidents_in_the_order_raised() {
        let (book, report) = shift("deck");
        let time = CityTime::from_flag("Europe/Helsinki").unwrap();
        let deck = deck(&book, &report, T0, T0 + 480 * MIN, &time);
        // The three severe ones and the two most severe of the rest (the moderate
        // ones), in the order they were raised.
        assert_eq!(
            deck.incident_ids(),
            [
                "INC-000002",
                "INC-000003",
                "INC-000004",
                "INC-000006",
                "INC-000007"
            ]
        );
        assert_eq!(deck.slides.len(), 2 + 5 + 2);
        assert_eq!(deck.slides[0].kind, SlideKind::Overview);
        assert!(
            deck.slides[0].lines[1].starts_with("9 incidents raised"),
            "{:?}",
            deck.slides[0].lines
        );
        let fire = deck
            .slides
            .iter()
            .find(|s| s.title.contains("Chemical plant fire"))
            .unwrap();
        assert!(fire.lines[0].contains("Raised 13:00"), "{:?}", fire.lines); // UTC+2
        assert!(
            fire.lines
                .iter()
                .any(|l| l.contains("ORD-000001 → central_district")
                    && l.contains("signed for after 3 min")
                    && l.contains("done after 88 min")),
            "{:?}",
            fire.lines
        );
        assert!(
            fire.lines.last().unwrap().contains("still"),
            "{:?}",
            fire.lines
        );
        // A period across midnight writes its times with their dates.
        let night = super::deck(&book, &report, T0 - 13 * 60 * MIN, T0 + 480 * MIN, &time);
        let fire = night
            .slides
            .iter()
            .find(|s| s.title.contains("Chemical plant fire"))
            .unwrap();
        assert!(
            fire.lines[0].contains("Raised 2026-11-29 13:00"),
            "{:?}",
            fire.lines
        );
        // A period of the first two hours: two severe, and the three most severe
        // of the rest.
        let early = super::deck(&book, &report, T0, T0 + 120 * MIN, &time);
        assert_eq!(
            early.incident_ids(),
            [
                "INC-000001",
                "INC-000002",
                "INC-000003",
                "INC-000004",
                "INC-000006"
            ]
        );
    }

    #[test]
    fn a_pdf_has_a_page_per_picture() {
        let dir = std::env::temp_dir().join(format!("briefing-pdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pages = Vec::new();
        for i in 0..3u8 {
            let path = dir.join(format!("slide-{i:02}.png"));
            image::RgbImage::from_pixel(64, 36, image::Rgb([i * 80, 20, 200]))
                .save(&path)
                .unwrap();
            pages.push(path);
        }
        let out = dir.join("briefing.pdf");
        assert_eq!(write_pdf(&pages, &out).unwrap(), 3);
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.starts_with(b"%PDF-"));
        assert_eq!(pdf_page_count(&bytes), Some(3));
        // An earlier deck goes, nothing else.
        std::fs::write(dir.join("notes.txt"), "keep").unwrap();
        std::fs::write(dir.join("slide-x.png"), "keep").unwrap();
        assert_eq!(clear_deck(&dir).unwrap(), 4);
        assert!(dir.join("notes.txt").exists() && dir.join("slide-x.png").exists());
        assert!(!out.exists() && !pages[0].exists());
        let e = write_pdf(&[dir.join("missing.png")], &out).unwrap_err();
        assert!(e.contains("missing.png"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A deck is swapped in whole: while one is written the earlier one stays (a run
    /// killed midway leaves it), a second writer into the folder is refused by name,
    /// and a user's own files stay.
    #[test]
    fn a_deck_replaces_the_earlier_one_only_when_whole() {
        let dir = std::env::temp_dir().join(format!(
            "zhongshu-deck-writer-{}-{}",
            std::process::id(),
            crate::clock::unix_ms_now()
        ));
        let picture = |path: &Path, shade: u8| {
            image::RgbImage::from_pixel(64, 36, image::Rgb([shade, 20, 200]))
                .save(path)
                .unwrap();
        };
        // An earlier deck of three slides, and the user's own slide-1.png.
        let first = DeckWriter::begin(&dir).unwrap();
        let pages: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = first.slide_path(i);
                picture(&p, 10);
                p
            })
            .collect();
        let (slides, pdf, n) = first.finish(&pages).unwrap();
        assert_eq!(n, 3);
        assert_eq!(slides[2], dir.join("slide-03.png"));
        assert!(pdf.exists() && slides.iter().all(|s| s.exists()));
        std::fs::write(dir.join("slide-1.png"), "mine").unwrap();
        // A second deck of two, midway: the first is all there, another writer is
        // refused.
        let second = DeckWriter::begin(&dir).unwrap();
        picture(&second.slide_path(0), 200);
        let e = DeckWriter::begin(&dir)
            .err()
            .expect("a second writer is refused");
        assert!(e.contains("another briefing is writing"), "{e}");
        assert!(dir.join("slide-03.png").exists());
        assert_eq!(
            pdf_page_count(&std::fs::read(dir.join("briefing.pdf")).unwrap()),
            Some(3)
        );
        // Killed there: the next run starts clean and the first deck is still whole.
        drop(second);
        let third = DeckWriter::begin(&dir).unwrap();
        assert!(
            !third.slide_path(0).exists(),
            "the killed run's slide is gone"
        );
        let pages: Vec<PathBuf> = (0..2)
            .map(|i| {
                let p = third.slide_path(i);
                picture(&p, 200);
                p
            })
            .collect();
        third.finish(&pages).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "briefing.pdf",
                "slide-01.png",
                "slide-02.png",
                "slide-1.png"
            ]
        );
        assert_eq!(
            pdf_page_count(&std::fs::read(dir.join("briefing.pdf")).unwrap()),
            Some(2)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_presenter_moves_through_the_deck_and_stays_at_its_ends() {
        let mut talk = Talk::new(4);
        assert!(!talk.go(Go::Previous), "before the first there is nothing");
        assert_eq!(talk.index, 0);
        assert!(talk.go(Go::Next));
        assert!(talk.go(Go::Next));
        assert_eq!(talk.index, 2);
        assert!(talk.go(Go::Previous));
        assert_eq!(talk.index, 1);
        assert!(talk.go(Go::Last));
        assert_eq!(talk.index, 3);
        assert!(!talk.go(Go::Next), "past the last it stays");
        assert_eq!(talk.index, 3);
        assert!(talk.go(Go::First));
        assert_eq!(talk.index, 0);
        let mut empty = Talk::new(0);
        assert!(!empty.go(Go::Next) && !empty.go(Go::Last));
        assert_eq!(empty.index, 0);
    }

    #[test]
    fn the_presenter_sees_the_notes_and_what_comes_next_which_the_slide_does_not_show() {
        let (book, report) = shift("presenter");
        let time = CityTime::from_flag("Europe/Helsinki").unwrap();
        let deck = deck(&book, &report, T0, T0 + 480 * MIN, &time);
        let i = deck
            .slides
            .iter()
            .position(|s| !s.notes.is_empty())
            .expect("a slide with notes");
        let presenter = presenter_screen(&deck, i);
        let crate::wall::TileKind::Presenter(view) = &presenter.tiles[0].kind else {
            panic!("{:?}", presenter.tiles[0].kind);
        };
        assert_eq!((view.index, view.count), (i, deck.slides.len()));
        assert_eq!(view.title, deck.slides[i].title);
        assert_eq!(view.notes, deck.slides[i].notes);
        assert_eq!(
            view.next.as_deref(),
            Some(deck.slides[i + 1].title.as_str())
        );
        assert_eq!(view.outline.len(), deck.slides.len());
        assert_eq!(
            presenter.placement,
            crate::wall::Placement::MonitorIndex(1),
            "the presenter's screen is the second"
        );
        let last = presenter_screen(&deck, deck.slides.len() - 1);
        let crate::wall::TileKind::Presenter(view) = &last.tiles[0].kind else {
            panic!()
        };
        assert_eq!(view.next, None, "nothing after the last slide");
        // Shown to the room, the slide keeps its notes to itself; on paper it has them.
        let shown = slide_screen(&deck.slides[i], i, false);
        let paper = slide_screen(&deck.slides[i], i, true);
        let notes_of = |s: &crate::wall::Screen| {
            s.tiles
                .iter()
                .find_map(|t| match &t.kind {
                    crate::wall::TileKind::Slide { notes, .. } => Some(notes.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert!(notes_of(&shown).is_empty());
        assert_eq!(notes_of(&paper), deck.slides[i].notes);
    }

    fn bars_of<'a>(slide: &'a Slide, title_starts: &str) -> &'a [Bar] {
        let chart = slide
            .charts
            .iter()
            .find(|c| c.title.starts_with(title_starts))
            .unwrap_or_else(|| panic!("no chart {title_starts} on {}", slide.title));
        match &chart.kind {
            ChartKind::Bars(bars) => bars,
            other => panic!("{other:?}"),
        }
    }

    /// The figures slides carry charts of what their lines say: incidents by
    /// sub-brain and by severity (worst first), departments' on-time share and time
    /// to sign for, and the open incidents over the period on the overview.
    #[test]
    fn slides_chart_their_figures() {
        let (book, report) = shift("charts");
        let time = CityTime::from_flag("Europe/Helsinki").unwrap();
        let deck = deck(&book, &report, T0, T0 + 480 * MIN, &time);
        let incidents = deck
            .slides
            .iter()
            .find(|s| s.kind == SlideKind::Incidents)
            .unwrap();
        let by_domain = bars_of(incidents, "By sub-brain");
        assert_eq!(by_domain.len(), 1);
        assert_eq!(by_domain[0].name, Domain::Safety.label());
        assert_eq!((by_domain[0].value, by_domain[0].text.as_str()), (9.0, "9"));
        let by_severity: Vec<(String, f64)> = bars_of(incidents, "By severity")
            .iter()
            .map(|b| (b.name.clone(), b.value))
            .collect();
        assert_eq!(
            by_severity,
            vec![
                (Severity::Extreme.label().to_string(), 1.0),
                (Severity::Severe.label().to_string(), 2.0),
                (Severity::Moderate.label().to_string(), 2.0),
                (Severity::Minor.label().to_string(), 4.0),
            ]
        );
        let departments = deck
            .slides
            .iter()
            .find(|s| s.kind == SlideKind::Departments)
            .unwrap();
        let figures = &report.departments["central_district"];
        let on_time = bars_of(departments, "On time");
        assert_eq!(on_time.len(), report.departments.len());
        assert_eq!(on_time[0].value, figures.on_time_pct.unwrap_or(0.0));
        let sign_for = bars_of(departments, "Time to sign for");
        // Signed for three minutes after it was issued.
        assert_eq!(sign_for[0].value, 3.0);
        assert_eq!(sign_for[0].text, "3 min");
        // The overview: open incidents at 49 instants over the shift, none at its
        // start, all nine (none closed) at its end, and four an hour in.
        let overview = &deck.slides[0];
        let ChartKind::Line { points: open, span } = &overview.charts[0].kind else {
            panic!("{:?}", overview.charts[0].kind)
        };
        assert_eq!(open.len(), 49);
        assert_eq!(*span, (T0, T0 + 480 * MIN), "drawn over the period");
        assert_eq!(open[0], (T0, 0.0));
        assert_eq!(open[48], (T0 + 480 * MIN, 9.0));
        assert_eq!(open[6], (T0 + 60 * MIN, 4.0));
        // A slide with charts is laid out with them; one without is text alone.
        let screen = slide_screen(incidents, 1, false);
        assert!(
            screen
                .tiles
                .iter()
                .any(|t| matches!(&t.kind, crate::wall::TileKind::Charts(c) if c.len() == 2))
        );
        assert!(crate::wall::check_screen(&screen).is_ok(), "{screen:?}");
        let sources = deck.slides.last().unwrap();
        assert!(sources.charts.is_empty());
        assert_eq!(slide_screen(sources, 9, false).tiles.len(), 1);
    }

    /// The vital signs are read from a recorded history at instants over the period:
    /// each is what was live then; instants before the recording or well after its
    /// end have none; the overview charts them, or says there were none.
    #[test]
    fn the_overview_charts_the_vital_signs_recorded_in_the_period() {
        use crate::history::{FeedMeta, History, HistoryOptions, HistoryWriter};
        use crate::model::{EntityKind, EntityUpdate};
        let dir = std::env::temp_dir().join(format!(
            "zhongshu-briefing-vitals-{}-{}",
            std::process::id(),
            crate::clock::unix_ms_now()
        ));
        let frame = crate::geo_frame::GeoFrame::new(24.94, 60.17);
        let mut state = crate::state::LiveState::new(frame);
        state.keep_journal(true);
        let feeds = vec![FeedMeta {
            id: 0,
            name: "air".into(),
            domain: "ecology".into(),
        }];
        let options = HistoryOptions {
            retention_ms: 7 * 24 * 3_600_000,
            keyframe_ms: 60_000,
            segment_ms: 600_000,
            message_ms: 1_000,
        };
        // Three stations each minute for an hour from T0; their AQI a function of
        // the minute.
        let aqi = |station: i64, minute: i64| (20 + station * 10 + minute) as f64;
        let mut writer = HistoryWriter::create(&dir, feeds, options).unwrap();
        for minute in 0..=60 {
            let t = T0 + minute * MIN;
            for station in 0..3 {
                state.apply(
                    0,
                    EntityUpdate {
                        id: format!("urn:ngsi-ld:AirQualityObserved:s{station}"),
                        entity_type: "AirQualityObserved".into(),
                        kind: EntityKind::AirQuality {
                            aqi: Some(aqi(station, minute)),
                            pm25: None,
                            pm10: None,
                            no2: None,
                            o3: None,
                        },
                        position: Some([24.94 + station as f64 * 0.01, 60.17]),
                        line: None,
                        observed_at_ms: Some(t),
                        fields: Default::default(),
                        units: Default::default(),
                        notes: Vec::new(),
                    },
                    t,
                );
            }
            writer.journal(t, &state.drain_journal()).unwrap();
        }
        writer.finish().unwrap();
        let history = History::open(&dir).unwrap();
        let instants = [
            T0 - 10 * MIN,
            T0 + 90_000,
            T0 + 30 * MIN + 20_000,
            T0 + 60 * MIN,
            T0 + 120 * MIN,
        ];
        let (samples, problems) = vital_signs_from_history(&history, frame, &instants);
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<(i64, Option<f64>)> = samples.iter().map(|s| (s.at_ms, s.mean_aqi)).collect();
        // The mean of the three stations' latest values: 30 + the minute.
        assert_eq!(
            got,
            vec![
                (T0 + 90_000, Some(31.0)),
                (T0 + 30 * MIN + 20_000, Some(60.0)),
                (T0 + 60 * MIN, Some(90.0)),
            ]
        );
        let (book, report) = shift("vitals");
        let time = CityTime::from_flag("Europe/Helsinki").unwrap();
        let mut charted = deck(&book, &report, T0, T0 + 480 * MIN, &time);
        charted.add_vital_signs(&samples);
        let titles: Vec<&str> = charted.slides[0]
            .charts
            .iter()
            .map(|c| c.title.as_str())
            .collect();
        // No traffic in the history: no congestion chart; the alerts counted (none).
        assert_eq!(
            titles,
            vec![
                "AQI 空气质量",
                "Open alerts 告警",
                "Open incidents 未结事件"
            ]
        );
        let screen = slide_screen(&charted.slides[0], 0, false);
        assert_eq!((screen.columns, screen.rows), (4, 2));
        assert!(crate::wall::check_screen(&screen).is_ok(), "{screen:?}");
        let mut bare = deck(&book, &report, T0, T0 + 480 * MIN, &time);
        bare.add_vital_signs(&[]);
        assert_eq!(bare.slides[0].charts.len(), 1);
        assert!(
            bare.slides[0]
                .notes
                .iter()
                .any(|n| n.contains("No live history recorded")),
            "{:?}",
            bare.slides[0].notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
