//! The one place colours and type sizes of the app shell are chosen.
//! Dark command-hall palette: deep navy ground, cool cyan buildings, amber accents.

use bevy::prelude::*;
use bevy_egui::egui;

pub const CLEAR: Color = Color::srgb(0.012, 0.018, 0.035);
pub const GROUND: Color = Color::srgb(0.035, 0.045, 0.07);
pub const SELECTION: Color = Color::srgb(1.0, 0.78, 0.2);

/// Building shader style (sRGB): low buildings deep navy, towers bright cyan, edges glow.
pub const BUILDING_LOW: Color = Color::srgb(0.09, 0.22, 0.40);
pub const BUILDING_HIGH: Color = Color::srgb(0.37, 0.83, 1.0);
pub const BUILDING_EDGE: Color = Color::srgb(0.62, 0.96, 1.0);
pub const BUILDING_TINT_FULL_M: f32 = 60.0;

pub const ACCENT: egui::Color32 = egui::Color32::from_rgb(0x3f, 0xd0, 0xff);
pub const WARN: egui::Color32 = egui::Color32::from_rgb(0xff, 0xb0, 0x30);
pub const GOOD: egui::Color32 = egui::Color32::from_rgb(0x2f, 0xbf, 0x71);
pub const ALARM: egui::Color32 = egui::Color32::from_rgb(0xff, 0x4d, 0x4d);
pub const MUTED: egui::Color32 = egui::Color32::from_rgb(0x8a, 0x98, 0xad);
pub const PANEL_FILL: egui::Color32 = egui::Color32::from_rgb(8, 13, 24);

/// egui visuals for the command hall: dark, high contrast, larger type.
pub fn egui_style(ctx: &egui::Context) {
    ctx.set_theme(egui::Theme::Dark);
    let mut visuals = egui::Visuals::dark();
    visuals.panel_fill = PANEL_FILL;
    visuals.window_fill = PANEL_FILL;
    visuals.extreme_bg_color = egui::Color32::from_rgb(4, 7, 14);
    visuals.selection.bg_fill = egui::Color32::from_rgb(0x14, 0x5a, 0x7a);
    visuals.hyperlink_color = ACCENT;
    ctx.set_visuals(visuals);
    ctx.style_mut_of(egui::Theme::Dark, |style| {
        for (text_style, font) in style.text_styles.iter_mut() {
            font.size = match text_style {
                egui::TextStyle::Heading => 20.0,
                egui::TextStyle::Small => 12.0,
                _ => 15.0,
            };
        }
    });
}
