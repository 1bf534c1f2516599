//! Names on the map: districts, main roads and landmarks, drawn where they stand in
//! the 3D city, kept clear of each other and of the selected building
//! (`map::labels` decides which fit), each with a dark halo so it reads over any
//! building on a wall. Drawn under the panels.

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

use super::camera::{CameraRig, project};
use super::{City, Selection};
use crate::geo_frame::world_from_local;
use crate::map::labels::{self, LabelCandidate, LabelKind, ScreenLabel};

/// The names there are to show, worked out once for the map.
#[derive(Resource, Default)]
pub struct MapLabels {
    pub candidates: Vec<LabelCandidate>,
    /// Names placed last frame (how many), for tests and the status line.
    pub shown: usize,
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<MapLabels>()
        .add_systems(Startup, collect)
        .add_systems(EguiPrimaryContextPass, draw);
}

fn collect(city: Res<City>, mut labels: ResMut<MapLabels>) {
    labels.candidates = labels::candidates(&city.map);
}

/// Space kept between names, pixels.
const MARGIN_PX: f32 = 6.0;

fn draw(
    mut contexts: EguiContexts,
    rig: Res<CameraRig>,
    city: Res<City>,
    selection: Res<Selection>,
    mut labels: ResMut<MapLabels>,
) -> Result {
    let Some(view) = rig.map_view else {
        return Ok(());
    };
    let ctx = contexts.ctx_mut()?;
    let zoom = ctx.zoom_factor().max(0.1);
    // Logical pixels (bevy) → egui points.
    let to_points = |p: Vec2| egui::pos2(p.x / zoom, p.y / zoom);
    let rect = egui::Rect::from_min_max(to_points(view.rect.min), to_points(view.rect.max));
    let pose = rig.pose;
    let height = rect.height();
    let mut screen = Vec::new();
    for (i, c) in labels.candidates.iter().enumerate() {
        if pose.distance > c.kind.max_distance_m() {
            continue;
        }
        let [x, y, z] = world_from_local(c.anchor[0], c.anchor[1], c.anchor[2] as f32);
        let Some(p) = project(&pose, Vec3::new(x, y, z), view.window) else {
            continue;
        };
        let p = to_points(p);
        if !rect.expand(200.0).contains(p) {
            continue;
        }
        let font = font_px(c.kind, height);
        screen.push(ScreenLabel {
            index: i,
            centre: [p.x, p.y],
            size: labels::text_size(&c.text, font),
            priority: c.kind.priority(),
            rank: c.rank,
        });
    }
    // Never over the selected building: its footprint's box on the screen.
    let mut keep_out = Vec::new();
    if let Some(b) = selection.building.and_then(|i| city.map.buildings.get(i)) {
        let mut min = Vec2::splat(f32::MAX);
        let mut max = Vec2::splat(f32::MIN);
        for ring in b.rings() {
            for c in &ring.0 {
                for h in [b.extent.min_height_m, b.extent.height_m] {
                    let [x, y, z] = world_from_local(c.x, c.y, h);
                    if let Some(p) = project(&pose, Vec3::new(x, y, z), view.window) {
                        let p = to_points(p);
                        min = min.min(Vec2::new(p.x, p.y));
                        max = max.max(Vec2::new(p.x, p.y));
                    }
                }
            }
        }
        if min.x <= max.x {
            keep_out.push([min.x, min.y, max.x, max.y]);
        }
    }
    let kept = labels::place(
        &screen,
        [rect.min.x, rect.min.y, rect.max.x, rect.max.y],
        &keep_out,
        MARGIN_PX,
    );
    labels.shown = kept.len();
    let painter = ctx
        .layer_painter(egui::LayerId::new(
            egui::Order::Background,
            egui::Id::new("map-labels"),
        ))
        .with_clip_rect(rect);
    for k in kept {
        let s = &screen[k];
        let c = &labels.candidates[s.index];
        let font = egui::FontId::proportional(font_px(c.kind, height));
        let colour = match c.kind {
            LabelKind::District => egui::Color32::from_rgb(0xF2, 0xC2, 0x30),
            LabelKind::Road => egui::Color32::from_rgb(0xE8, 0xEC, 0xF2),
            LabelKind::Landmark => egui::Color32::from_rgb(0xB8, 0xE0, 0xFF),
        };
        let at = egui::pos2(s.centre[0], s.centre[1]);
        // A halo: the name in dark, a pixel or two around, then in colour.
        let halo = egui::Color32::from_rgba_unmultiplied(6, 10, 18, 230);
        let w = (font.size / 12.0).clamp(1.0, 3.0);
        for (dx, dy) in [
            (-w, 0.0),
            (w, 0.0),
            (0.0, -w),
            (0.0, w),
            (-w, -w),
            (w, w),
            (-w, w),
            (w, -w),
        ] {
            painter.text(
                at + egui::vec2(dx, dy),
                egui::Align2::CENTER_CENTER,
                &c.text,
                font.clone(),
                halo,
            );
        }
        painter.text(at, egui::Align2::CENTER_CENTER, &c.text, font, colour);
    }
    Ok(())
}

/// Type size in points: a share of the map's height, never too small to read.
fn font_px(kind: LabelKind, view_height: f32) -> f32 {
    (kind.size_share() * view_height).clamp(11.0, 96.0)
}
