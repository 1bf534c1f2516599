//! Charts shared by the wall, the briefing's slides and the Hub operations window:
//! bars by name (drawn here, names in full beside them) and lines over time
//! (egui_plot).

use bevy_egui::egui;

use super::theme;
use crate::clock::CityTime;
use crate::wall::{Bar, Chart, ChartKind, Tone};

pub fn tone_colour(tone: Tone) -> egui::Color32 {
    match tone {
        Tone::Neutral => theme::ACCENT,
        Tone::Good => theme::GOOD,
        Tone::Warn => theme::WARN,
        Tone::Alarm => theme::ALARM,
    }
}

/// A bar per row: the name, the bar against the largest value, the value's text.
/// Rows share the height given, in the body's type size at most (the wall's and the
/// slides' follow the screen).
pub fn bar_list(ui: &mut egui::Ui, bars: &[Bar], colour: egui::Color32) {
    if bars.is_empty() {
        ui.label(egui::RichText::new("—").color(theme::MUTED));
        return;
    }
    let body = egui::TextStyle::Body.resolve(ui.style()).size;
    let area = ui.available_rect_before_wrap();
    let row = (area.height() / bars.len() as f32).clamp(6.0, body * 1.7);
    let text_size = (row * 0.62).clamp(5.0, body);
    let name_width = area.width() * 0.42;
    let max = bars
        .iter()
        .map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let painter = ui.painter_at(area);
    let font = egui::FontId::proportional(text_size);
    for (k, bar) in bars.iter().enumerate() {
        let top = area.top() + k as f32 * row;
        let mid = top + row / 2.0;
        // A name wider than its room ends in "…" before the bar.
        let mut job = egui::text::LayoutJob::simple_singleline(
            bar.name.clone(),
            font.clone(),
            egui::Color32::WHITE,
        );
        job.wrap = egui::text::TextWrapping::truncate_at_width((name_width - 6.0).max(8.0));
        let name = painter.layout_job(job);
        painter.galley(
            egui::pos2(area.left(), mid - name.size().y / 2.0),
            name,
            egui::Color32::WHITE,
        );
        let room = (area.width() - name_width) * 0.78;
        let share = if max > 0.0 && bar.value.is_finite() {
            (bar.value / max).clamp(0.0, 1.0) as f32
        } else {
            0.0
        };
        let left = area.left() + name_width;
        let bar_rect = egui::Rect::from_min_size(
            egui::pos2(left, mid - row * 0.3),
            egui::vec2((room * share).max(1.0), row * 0.6),
        );
        painter.rect_filled(bar_rect, 2.0, colour);
        painter.text(
            egui::pos2(bar_rect.right() + 6.0, mid),
            egui::Align2::LEFT_CENTER,
            &bar.text,
            font.clone(),
            egui::Color32::WHITE,
        );
    }
    ui.allocate_rect(
        egui::Rect::from_min_size(area.min, egui::vec2(area.width(), row * bars.len() as f32)),
        egui::Sense::hover(),
    );
}

/// A value over time in the space given: x in the units `points` are in, over
/// `x_span` when given (else the points' own), labelled by `x_label`.
pub fn line_chart(
    ui: &mut egui::Ui,
    id: impl std::hash::Hash + std::fmt::Debug,
    title: &str,
    points: Vec<[f64; 2]>,
    colour: egui::Color32,
    x_span: Option<(f64, f64)>,
    x_label: impl Fn(f64) -> String + 'static,
) {
    // Exactly the room given: a small cell never pushes the plot over what follows.
    let room = ui.available_size_before_wrap();
    // A line at zero all along sits on the axis, not in the middle of -100..100.
    let top = points.iter().map(|p| p[1]).fold(0.0f64, f64::max);
    let mut plot = egui_plot::Plot::new(id);
    if let Some((from, to)) = x_span {
        plot = plot.include_x(from).include_x(to);
    }
    plot.min_size(egui::vec2(16.0, 16.0))
        .width(room.x.max(16.0))
        .height(room.y.max(16.0))
        .show_axes([true, true])
        .show_grid(false)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .allow_boxed_zoom(false)
        .allow_double_click_reset(false)
        .show_background(false)
        .include_y(0.0)
        .include_y(if top > 0.0 { top } else { 1.0 })
        // No time label at either end of the axis: centred on its tick there, it ran
        // past the chart's edge (into the next chart, or cut: "0 mi").
        .x_axis_formatter(move |mark, range| {
            let span = (range.end() - range.start()).max(f64::EPSILON);
            let from_edge = (mark.value - range.start()).min(range.end() - mark.value);
            if from_edge < span * 0.1 {
                String::new()
            } else {
                x_label(mark.value)
            }
        })
        .show(ui, |plot| {
            plot.line(egui_plot::Line::new(title, points).stroke(egui::Stroke::new(2.0, colour)));
        });
}

/// Charts one above the other, each with its title, sharing the space given. Lines
/// over time are labelled in the city's time of day.
pub fn charts_ui(
    ui: &mut egui::Ui,
    id: impl std::hash::Hash + std::fmt::Debug + Copy,
    charts: &[Chart],
    time: &CityTime,
) {
    if charts.is_empty() {
        return;
    }
    let area = ui.available_rect_before_wrap();
    // Side by side in a wide space, else one above the other.
    let n = charts.len() as f32;
    let in_a_row = area.width() >= area.height() * 1.6 && n > 1.0;
    let cell = if in_a_row {
        egui::vec2(area.width() / n, area.height())
    } else {
        egui::vec2(area.width(), area.height() / n)
    };
    for (k, chart) in charts.iter().enumerate() {
        let offset = if in_a_row {
            egui::vec2(k as f32 * cell.x, 0.0)
        } else {
            egui::vec2(0.0, k as f32 * cell.y)
        };
        let rect = egui::Rect::from_min_size(area.min + offset, cell)
            .shrink2(egui::vec2(if in_a_row { 6.0 } else { 0.0 }, 3.0));
        ui.scope_builder(egui::UiBuilder::new().max_rect(rect), |ui| {
            ui.label(
                egui::RichText::new(&chart.title)
                    .color(theme::MUTED)
                    .strong(),
            );
            let colour = tone_colour(chart.tone);
            match &chart.kind {
                ChartKind::Bars(bars) => bar_list(ui, bars, colour),
                ChartKind::Line { points, span } => {
                    let time = time.clone();
                    // Minutes since the epoch, over the whole period; marks are times
                    // of day over a day or so, dates over longer, months over years.
                    let xy = points
                        .iter()
                        .map(|(t, v)| [*t as f64 / 60_000.0, *v])
                        .collect();
                    let hours = (span.1 - span.0) as f64 / 3_600_000.0;
                    let x_span = (span.0 as f64 / 60_000.0, span.1 as f64 / 60_000.0);
                    line_chart(
                        ui,
                        (id, k),
                        &chart.title,
                        xy,
                        colour,
                        Some(x_span),
                        move |m| {
                            let ms = (m * 60_000.0) as i64;
                            if hours <= 36.0 {
                                let text = time.time_of_day(ms);
                                text.get(..5).unwrap_or(&text).to_string()
                            } else {
                                // "2026-12-01 05:15:08 EET"
                                let text = time.text(ms);
                                let part = if hours <= 400.0 * 24.0 { 5..10 } else { 0..7 };
                                text.get(part).unwrap_or(&text).to_string()
                            }
                        },
                    );
                }
            }
        });
    }
    ui.allocate_rect(area, egui::Sense::hover());
}
