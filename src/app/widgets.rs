//! Widgets and helpers the panels share (the desk, the steward view, the wall, the
//! top and side panels): ages, domain labels, KPI colours, panel headers, and where
//! the 3D view is. Panels import this; it imports no panel.

use bevy::prelude::*;
use bevy_egui::egui;

use super::layers::markers::aqi_srgb;
use super::theme;
use crate::feeds::Domain;
use crate::map::mesh::MapLayer;

/// What the user asked for through the panels.
#[derive(Clone, Debug, PartialEq)]
pub enum UiCommand {
    SetLayer(MapLayer, bool),
    ResetView,
    FlyToBuilding(usize),
    /// Select a building (e.g. a part's outline from the inspector).
    SelectBuilding(usize),
    ClearSelection,
    AddBookmark,
    GoToBookmark(usize),
    SetDomain(Domain, bool),
    FlyToEntity(u32),
    ToggleSteward,
    /// The hub operations window (运营).
    ToggleOperations,
    /// Present the leaders' briefing (F5).
    StartBriefing,
    /// The steward window's own close button.
    CloseSteward,
    ToggleDesk,
    /// Open the desk's report form at the selected building.
    ReportIncidentHere,
    /// The timeline: live, pause, play, seek.
    Timeline(super::timeline::TimelineAction),
}

/// Where the 3D view is (the screen area no panel covers) and whether egui holds input.
#[derive(Resource, Debug, Clone)]
pub struct UiInput {
    /// In the window's logical pixels (bevy's cursor units: egui points × UI scale).
    pub view_rect: egui::Rect,
    pub wants_pointer: bool,
    pub wants_keyboard: bool,
}

impl Default for UiInput {
    fn default() -> Self {
        Self {
            view_rect: egui::Rect::EVERYTHING,
            wants_pointer: false,
            wants_keyboard: false,
        }
    }
}

impl UiInput {
    /// True when a cursor at `p` (logical pixels) is over the 3D view, not a panel.
    pub fn over_3d_view(&self, p: Vec2) -> bool {
        !self.wants_pointer && self.view_rect.contains(egui::pos2(p.x, p.y))
    }
}

/// A one-line label that elides to the room it has and shows its whole text on
/// hover: for rows in bounded panels (titles, headlines, names), which must not
/// widen their panel nor wrap a character per line.
pub fn truncated_label(ui: &mut egui::Ui, text: impl Into<egui::WidgetText>) -> egui::Response {
    ui.add(egui::Label::new(text).truncate())
}

/// A panel's title row: `buttons` laid out from the right edge first (a close button
/// first of all), so they stay in the panel; the title elides in the room left.
pub fn panel_header(
    ui: &mut egui::Ui,
    title: impl Into<egui::WidgetText>,
    buttons: impl FnOnce(&mut egui::Ui),
) {
    ui.horizontal(|ui| {
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            buttons(ui);
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                truncated_label(ui, title);
            });
        });
    });
}

/// Domain names for the panels.
pub fn domain_label(d: Domain) -> &'static str {
    d.label()
}

/// The colour of the congestion index (a share): green, amber past 15 %, red past 30 %.
pub fn congestion_colour(c: Option<f64>) -> egui::Color32 {
    match c {
        Some(c) if c > 0.3 => theme::ALARM,
        Some(c) if c > 0.15 => theme::WARN,
        _ => theme::GOOD,
    }
}

/// The colour of an AQI: the heat map's ramp; muted when unknown.
pub fn aqi_colour(aqi: Option<f64>) -> egui::Color32 {
    aqi.map_or(theme::MUTED, |a| {
        let c = aqi_srgb(a);
        egui::Color32::from_rgb((c >> 16) as u8, (c >> 8) as u8, c as u8)
    })
}

/// Open alerts: amber when any.
pub fn alerts_colour(n: usize) -> egui::Color32 {
    if n > 0 { theme::WARN } else { theme::GOOD }
}

/// Hospital load (a share): amber past 75 %, red past 90 %.
pub fn hospital_colour(load: Option<f64>) -> egui::Color32 {
    match load {
        Some(l) if l > 0.9 => theme::ALARM,
        Some(l) if l > 0.75 => theme::WARN,
        _ => theme::GOOD,
    }
}

/// Seconds as a short age: `0.4 s`, `12 s`, `3 min`.
pub fn age_text(secs: f64) -> String {
    crate::clock::age_words(secs)
}
