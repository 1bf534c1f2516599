//! egui shell: top bar (city, clock), layer panel, status bar, building inspector.
//!
//! Panels only read state and push [`UiCommand`]s; `apply_ui_commands` carries them out.

use bevy::diagnostic::{DiagnosticsStore, FrameTimeDiagnosticsPlugin};
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

use super::camera::CameraRig;
use super::scene::{LayerVisibility, SceneStats};
use super::{AppSystems, City, Selection, theme};
use crate::clock::utc_clock_text;
use crate::map::mesh::MapLayer;
use crate::map::{AreaKind, CityMap};

/// The CJK font registered with egui so Chinese names and labels render.
const CJK_FONT: &[u8] = include_bytes!("../../assets/fonts/NotoSansSC-Regular-subset.otf");

/// What the user asked for through the panels.
#[derive(Clone, Debug, PartialEq)]
pub enum UiCommand {
    SetLayer(MapLayer, bool),
    ResetView,
    FlyToBuilding(usize),
    ClearSelection,
    AddBookmark,
    GoToBookmark(usize),
}

/// Where the 3D view is (the screen area no panel covers) and whether egui holds input.
#[derive(Resource, Debug, Clone)]
pub struct UiInput {
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

#[derive(Resource, Default)]
struct PendingUiCommands(Vec<UiCommand>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<UiInput>()
        .init_resource::<PendingUiCommands>()
        .add_systems(EguiPrimaryContextPass, shell_ui)
        .add_systems(Update, apply_ui_commands.in_set(AppSystems::Apply));
}

/// Registers the bundled CJK font as a fallback for every egui font family.
pub fn install_fonts(ctx: &egui::Context) {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        "noto-sans-sc".to_owned(),
        std::sync::Arc::new(egui::FontData::from_static(CJK_FONT)),
    );
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push("noto-sans-sc".to_owned());
    }
    ctx.set_fonts(fonts);
}

#[allow(clippy::too_many_arguments)]
fn shell_ui(
    mut contexts: EguiContexts,
    mut styled: Local<bool>,
    city: Res<City>,
    stats: Res<SceneStats>,
    diagnostics: Res<DiagnosticsStore>,
    layers: Res<LayerVisibility>,
    rig: Res<CameraRig>,
    selection: Res<Selection>,
    ready: Res<super::ready::SceneReady>,
    mut ui_input: ResMut<UiInput>,
    mut pending: ResMut<PendingUiCommands>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if !*styled {
        install_fonts(ctx);
        theme::egui_style(ctx);
        *styled = true;
    }
    let fps = diagnostics
        .get(&FrameTimeDiagnosticsPlugin::FPS)
        .and_then(|d| d.smoothed())
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);

    let mut root = egui::Ui::new(
        ctx.clone(),
        "zhongshu-root".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(ctx.viewport_rect()),
    );
    let out = &mut pending.0;
    egui::Panel::top("top-bar").show(&mut root, |ui| top_bar_ui(ui, &city.map, now));
    egui::Panel::bottom("status-bar")
        .show(&mut root, |ui| status_bar_ui(ui, &city.map, &stats, fps));
    egui::Panel::left("layers")
        .resizable(true)
        .default_size(270.0)
        .show(&mut root, |ui| {
            layer_panel_ui(ui, &city.map, &layers, &rig, ready.first_full_frame_ms, out)
        });
    if let Some(index) = selection.building {
        egui::Panel::right("inspector")
            .resizable(true)
            .default_size(340.0)
            .max_size(460.0)
            .show(&mut root, |ui| inspector_ui(ui, &city.map, index, out));
    }
    ui_input.view_rect = root.available_rect_before_wrap();
    ui_input.wants_pointer = ctx.egui_is_using_pointer() || ctx.is_pointer_over_egui();
    ui_input.wants_keyboard = ctx.egui_wants_keyboard_input();
    Ok(())
}

pub fn top_bar_ui(ui: &mut egui::Ui, map: &CityMap, unix_secs: i64) {
    ui.horizontal(|ui| {
        ui.label(
            egui::RichText::new("中枢 Zhongshu")
                .heading()
                .color(theme::ACCENT)
                .strong(),
        );
        ui.separator();
        ui.label(egui::RichText::new(&map.name).heading());
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.add(
                egui::Label::new(
                    egui::RichText::new(utc_clock_text(unix_secs))
                        .monospace()
                        .size(17.0),
                )
                .extend(),
            );
        });
    });
}

pub fn status_bar_ui(ui: &mut egui::Ui, map: &CityMap, stats: &SceneStats, fps: f64) {
    ui.horizontal(|ui| {
        ui.label(format!("{fps:.0} fps"));
        ui.separator();
        ui.label(format!(
            "{} buildings · {} roads · {} water · {} green · {} districts",
            map.buildings.len(),
            map.roads.len(),
            map.count_areas(AreaKind::Water) + map.waterways.len(),
            map.count_areas(AreaKind::Green),
            map.districts.len()
        ));
        ui.separator();
        ui.label(format!(
            "{} chunks · {} k triangles",
            stats.chunk_entities,
            stats.triangles / 1000
        ));
        ui.separator();
        let skipped = map.skipped.total();
        let text = egui::RichText::new(format!("skipped {skipped}"));
        let label = ui.label(if skipped > 0 {
            text.color(theme::WARN)
        } else {
            text
        });
        label.on_hover_ui(|ui| skipped_ui(ui, map));
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if let Some(attribution) = &map.attribution {
                ui.label(egui::RichText::new(attribution).color(theme::MUTED));
            }
        });
    });
}

fn skipped_ui(ui: &mut egui::Ui, map: &CityMap) {
    if map.skipped.total() == 0 {
        ui.label("Every feature in the file was drawn.");
        return;
    }
    ui.label("Features left out, by reason:");
    egui::Grid::new("skipped").striped(true).show(ui, |ui| {
        for (reason, n) in &map.skipped.0 {
            ui.label(reason.as_str());
            ui.label(n.to_string());
            ui.end_row();
        }
    });
}

pub fn layer_panel_ui(
    ui: &mut egui::Ui,
    map: &CityMap,
    layers: &LayerVisibility,
    rig: &CameraRig,
    first_full_frame_ms: Option<f64>,
    out: &mut Vec<UiCommand>,
) {
    ui.heading("Layers 图层");
    for layer in MapLayer::ALL {
        let count = match layer {
            MapLayer::Buildings => map.buildings.len(),
            MapLayer::Roads => map.roads.len(),
            MapLayer::Water => map.count_areas(AreaKind::Water) + map.waterways.len(),
            MapLayer::Green => map.count_areas(AreaKind::Green),
            MapLayer::Districts => map.districts.len(),
        };
        let mut on = layers.is_visible(layer);
        ui.horizontal(|ui| {
            if ui.checkbox(&mut on, layer.label()).changed() {
                out.push(UiCommand::SetLayer(layer, on));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(egui::RichText::new(count.to_string()).color(theme::MUTED));
            });
        });
    }
    ui.separator();
    ui.heading("View 视图");
    ui.horizontal(|ui| {
        if ui
            .button("Whole city 全城")
            .on_hover_text("Home / 0")
            .clicked()
        {
            out.push(UiCommand::ResetView);
        }
        if ui.button("Bookmark 收藏").clicked() {
            out.push(UiCommand::AddBookmark);
        }
    });
    for (i, (name, _)) in rig.bookmarks.iter().enumerate() {
        if ui.link(name).clicked() {
            out.push(UiCommand::GoToBookmark(i));
        }
    }
    ui.label(
        egui::RichText::new(
            "Left-drag pan · right-drag orbit/tilt · wheel zoom · WASD/QE/RF · click a building",
        )
        .small()
        .color(theme::MUTED),
    );
    ui.separator();
    ui.heading("Map 地图");
    let [a, b, c, d] = map.bbox_wgs84;
    ui.label(format!("{b:.4}°N {a:.4}°E — {d:.4}°N {c:.4}°E"));
    ui.label(format!("loaded in {:.0} ms", map.load_ms));
    if let Some(ms) = first_full_frame_ms {
        ui.label(format!("first full frame {ms:.0} ms after start"));
    }
    ui.collapsing(format!("Skipped features: {}", map.skipped.total()), |ui| {
        skipped_ui(ui, map)
    });
}

pub fn inspector_ui(ui: &mut egui::Ui, map: &CityMap, index: usize, out: &mut Vec<UiCommand>) {
    let Some(b) = map.buildings.get(index) else {
        return;
    };
    ui.horizontal(|ui| {
        ui.heading("Building 建筑");
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            if ui.button("✕").clicked() {
                out.push(UiCommand::ClearSelection);
            }
            if ui.button("Fly to 飞至").clicked() {
                out.push(UiCommand::FlyToBuilding(index));
            }
        });
    });
    if let Some(name) = &b.name {
        ui.label(egui::RichText::new(name).size(18.0).color(theme::ACCENT));
    }
    let area = geo::Area::unsigned_area(&b.footprint);
    egui::Grid::new("building-facts")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            ui.label("id");
            ui.label(&b.id);
            ui.end_row();
            ui.label("type");
            ui.label(&b.kind);
            ui.end_row();
            ui.label("height");
            ui.label(format!(
                "{:.1} m ({})",
                b.extent.height_m,
                height_source_text(b.extent.source)
            ));
            ui.end_row();
            if b.extent.min_height_m > 0.0 {
                ui.label("base");
                ui.label(format!("{:.1} m", b.extent.min_height_m));
                ui.end_row();
            }
            ui.label("footprint");
            ui.label(format!("{area:.0} m²"));
            ui.end_row();
        });
    ui.separator();
    ui.label(egui::RichText::new("Tags").strong());
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("building-tags")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                for (k, v) in &b.tags {
                    ui.label(egui::RichText::new(k).color(theme::MUTED));
                    ui.add(egui::Label::new(v).wrap());
                    ui.end_row();
                }
            });
    });
}

fn height_source_text(source: crate::map::HeightSource) -> &'static str {
    match source {
        crate::map::HeightSource::Tagged => "tagged height",
        crate::map::HeightSource::Levels => "from levels",
        crate::map::HeightSource::Default => "default for type",
    }
}

fn apply_ui_commands(
    mut pending: ResMut<PendingUiCommands>,
    mut layers: ResMut<LayerVisibility>,
    mut rig: ResMut<CameraRig>,
    mut selection: ResMut<Selection>,
    city: Res<City>,
) {
    for command in pending.0.drain(..) {
        match command {
            UiCommand::SetLayer(layer, on) => {
                layers.0.insert(layer, on);
            }
            UiCommand::ResetView => rig.reset(),
            UiCommand::FlyToBuilding(i) => super::fly_to_building(&mut rig, &city, i),
            UiCommand::ClearSelection => selection.building = None,
            UiCommand::AddBookmark => {
                let name = format!("View {}", rig.bookmarks.len() + 1);
                let pose = rig.goal;
                rig.bookmarks.push((name, pose));
            }
            UiCommand::GoToBookmark(i) => {
                if let Some((_, pose)) = rig.bookmarks.get(i).cloned() {
                    rig.goal = pose;
                }
            }
        }
    }
}

#[cfg(test)]
mod panel_tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;

    struct PanelState {
        map: CityMap,
        layers: LayerVisibility,
        rig: CameraRig,
        out: Vec<UiCommand>,
    }

    fn state() -> PanelState {
        let map = crate::map::load_default().unwrap();
        let rig = CameraRig::for_bounds(map.local_bounds());
        PanelState {
            map,
            layers: LayerVisibility::default(),
            rig,
            out: Vec::new(),
        }
    }

    #[test]
    fn layer_toggles_and_view_buttons_emit_commands() {
        let mut harness = Harness::new_ui_state(
            |ui, s: &mut PanelState| {
                layer_panel_ui(ui, &s.map, &s.layers, &s.rig, Some(1234.0), &mut s.out)
            },
            state(),
        );
        harness.get_by_label("Roads 道路").click();
        harness.run();
        harness.get_by_label("Whole city 全城").click();
        harness.run();
        assert_eq!(
            harness.state().out,
            vec![
                UiCommand::SetLayer(MapLayer::Roads, false),
                UiCommand::ResetView
            ]
        );
        // Counts and the first-frame figure are on the panel.
        harness.get_by_label("574");
        harness.get_by_label("first full frame 1234 ms after start");
    }

    #[test]
    fn status_bar_shows_counts_skips_and_the_osm_attribution() {
        let s = state();
        let stats = SceneStats {
            chunk_entities: 43,
            triangles: 41_698,
            mesh_ms: 5.0,
        };
        let harness = Harness::new_ui_state(
            move |ui, s: &mut PanelState| status_bar_ui(ui, &s.map, &stats, 59.6),
            s,
        );
        harness.get_by_label("60 fps");
        harness.get_by_label("43 chunks · 41 k triangles");
        harness.get_by_label("skipped 1717");
        harness.get_by_label("© OpenStreetMap contributors (ODbL)");
    }

    #[test]
    fn inspector_shows_the_building_and_flies_to_it() {
        let s = state();
        let index = s
            .map
            .buildings
            .iter()
            .position(|b| b.id == "way/122595241")
            .unwrap();
        let mut harness = Harness::new_ui_state(
            move |ui, s: &mut PanelState| inspector_ui(ui, &s.map, index, &mut s.out),
            s,
        );
        // The name heads the panel and appears again among the tags.
        assert!(harness.get_all_by_label("Stockmann").count() >= 2);
        harness.get_by_label("39.0 m (tagged height)");
        harness.get_by_label("department_store");
        harness.get_by_label("Fly to 飞至").click();
        harness.run();
        assert_eq!(harness.state().out, vec![UiCommand::FlyToBuilding(index)]);
    }
}
