//! egui shell: top bar (city, clock), layer panel, status bar, building inspector.
//!
//! Panels only read state and push [`UiCommand`]s; `apply_ui_commands` carries them out.

use bevy::diagnostic::{DiagnosticsStore, FrameTimeDiagnosticsPlugin};
use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

pub use super::fonts::install_fonts;

use super::camera::CameraRig;
use super::layers::markers::{MarkerKind, aqi_srgb};
use super::layout::{Bar, ShellContent, ShellLayout, SidePanel, SidePanelKind, show_shell};
use super::live::{DomainVisibility, Live};
use super::scene::{LayerVisibility, SceneStats};
use super::widgets::{
    UiCommand, UiInput, age_text, alerts_colour, aqi_colour, congestion_colour, domain_label,
    hospital_colour, panel_header, truncated_label,
};
use super::{AppSystems, City, Selection, theme};
use crate::clock::CityTime;
use crate::feeds::config::FeedConfig;
use crate::feeds::{Domain, EntityKind, FieldValue};
use crate::governance::health::FeedHealth;
use crate::map::mesh::MapLayer;
use crate::map::{AreaKind, CityMap, SkipReason};
use crate::model::value_with_unit;
use crate::state::kpi::{CityKpis, KpiPass};
use crate::state::sweep::Budget;
use crate::state::{LiveEntity, LiveState};

#[derive(Resource, Default)]
struct PendingUiCommands(Vec<UiCommand>);

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<UiInput>()
        .init_resource::<PendingUiCommands>()
        .init_resource::<ShellLayout>()
        .add_systems(EguiPrimaryContextPass, shell_ui)
        .add_systems(Update, apply_ui_commands.in_set(AppSystems::Apply));
}

/// What the shell reads to draw its panels.
#[derive(bevy::ecs::system::SystemParam)]
struct ShellView<'w, 's> {
    city: Res<'w, City>,
    time: Res<'w, super::LocalTime>,
    clock: Res<'w, super::ViewClock>,
    stats: Res<'w, SceneStats>,
    diagnostics: Res<'w, DiagnosticsStore>,
    layers: Res<'w, LayerVisibility>,
    rig: Res<'w, CameraRig>,
    selection: Res<'w, Selection>,
    ready: Res<'w, super::ready::SceneReady>,
    live: Option<Res<'w, Live>>,
    domains: Res<'w, DomainVisibility>,
    governance: Res<'w, super::governance::Governance>,
    operations: Res<'w, super::operations::HubOps>,
    timeline: Option<Res<'w, super::timeline::Timeline>>,
    briefing: Option<Res<'w, super::briefing_launch::BriefingLauncher>>,
    ui_scale: Query<'w, 's, &'static super::WindowUiScale, With<bevy::window::PrimaryWindow>>,
}

#[allow(clippy::too_many_arguments)]
fn shell_ui(
    mut contexts: EguiContexts,
    mut styled: Local<bool>,
    mut kpis: Local<KpiStrip>,
    // The timeline's marks, for the book's revision they were taken at.
    mut marks: Local<(u64, Vec<super::timeline::Mark>)>,
    view: ShellView,
    mut layout: ResMut<ShellLayout>,
    mut ui_input: ResMut<UiInput>,
    mut pending: ResMut<PendingUiCommands>,
    mut desk: Option<ResMut<super::desk::Desk>>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if !*styled {
        install_fonts(ctx);
        theme::egui_style(ctx);
        // The scale is a setting (`--ui-scale`, or a wall screen's); Ctrl +/- would
        // drift from it and Ctrl+0 would drop it.
        ctx.options_mut(|o| o.zoom_with_keyboard = false);
        *styled = true;
    }
    // egui's zoom multiplies the monitor's scale factor, which bevy_egui passes on.
    let zoom = view.ui_scale.iter().next().map_or(1.0, |s| s.0);
    if ctx.zoom_factor() != zoom {
        ctx.set_zoom_factor(zoom);
    }
    let ShellView {
        city,
        stats,
        diagnostics,
        layers,
        rig,
        selection,
        ready,
        live,
        domains,
        governance,
        time,
        ..
    } = &view;
    let time = &time.0;
    let fps = diagnostics
        .get(&FrameTimeDiagnosticsPlugin::FPS)
        .and_then(|d| d.smoothed())
        .unwrap_or(0.0);
    let now_ms = view.clock.now_ms();
    let as_of = view.clock.as_of_ms.is_some();
    if let Some(book) = desk.as_ref().and_then(|d| d.book())
        && marks.0 != book.revision
    {
        *marks = (book.revision, super::timeline::marks_of(book));
    }
    // Another state shown: the KPI pass in progress was over the other one.
    if let Some(live) = &live
        && kpis.epoch != live.shown_epoch
    {
        kpis.epoch = live.shown_epoch;
        kpis.pass = None;
        kpis.shown_at_ms = i64::MIN / 2;
    }
    // KPIs twice a second, steadier to read than every frame; a pass over the whole
    // city is a frame's budget at a time, so no frame pays for all of it.
    if let Some(live) = &live {
        if kpis.pass.is_none() && (now_ms as f64 - kpis.shown_at_ms as f64).abs() > 500.0 {
            kpis.pass = Some(KpiPass::new(now_ms));
        }
        if let Some(pass) = &mut kpis.pass
            && let Some(figures) = pass.step(
                live.shown(),
                &governance.reconciliation.winner_of,
                Budget::frame(),
            )
        {
            kpis.shown_at_ms = pass.now_ms();
            kpis.shown = figures;
            kpis.pass = None;
        }
    }
    let map = &city.map;
    let demo = desk.as_ref().is_some_and(|d| d.demo);
    let desk_open = desk.as_ref().is_some_and(|d| d.open);
    let has_hall = desk.as_ref().is_some_and(|d| d.hall.is_some());
    let steward_open = governance.steward_open;
    let operations_open = view.operations.open;
    // A new incident goes where the selected building is, else the view centre.
    let location = selection
        .building
        .and_then(|i| map.buildings.get(i))
        .and_then(|b| geo::Centroid::centroid(&b.footprint))
        .map(|c| (c.x(), c.y()))
        .unwrap_or_else(|| {
            // The centre of the map the panels leave, not of the window.
            let f = rig.map_centre();
            let [e, n] = crate::geo_frame::local_from_world(f.x, f.z);
            (e, n)
        });
    let [lon, lat] = map.frame.wgs84_from_local(location.0, location.1);
    // The hall bar reads the desk's link and the desk panel writes the desk: one after
    // the other, in the same frame.
    let desk = std::cell::RefCell::new(desk.as_deref_mut());

    let mut side = vec![SidePanel {
        kind: SidePanelKind::Layers,
        tab: "Layers 图层",
        add: Box::new(|ui, out| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                layer_panel_ui(ui, map, layers, rig, ready.first_full_frame_ms, out);
                if let Some(live) = &live {
                    ui.separator();
                    sub_brains_ui(
                        ui,
                        &SubBrains {
                            feeds: &live.feeds,
                            health: &live.ingest.health,
                            recorded: live.replay.as_ref().map(|_| &live.replay_health),
                            state: live.shown(),
                        },
                        domains,
                        now_ms,
                        out,
                    );
                }
            });
        }),
    }];
    if desk_open {
        side.push(SidePanel {
            kind: SidePanelKind::Desk,
            tab: "Dispatch 调度",
            add: Box::new(|ui, _| {
                if let Some(desk) = desk.borrow_mut().as_deref_mut() {
                    // The past is shown: the book as it stood then, and nothing is
                    // issued from it (replay never writes to the log).
                    super::desk::desk_panel_ui(ui, desk, Some((lon, lat)), now_ms, time, as_of)
                }
            }),
        });
    }
    if let (Some(slot), Some(live)) = (selection.entity, &live) {
        side.push(SidePanel {
            kind: SidePanelKind::Inspector,
            tab: "Details 详情",
            add: Box::new(move |ui, out| {
                entity_inspector_ui(
                    ui,
                    &live.feeds,
                    live.shown(),
                    slot,
                    now_ms,
                    time,
                    &governance.reconciliation,
                    out,
                )
            }),
        });
    } else if let Some(index) = selection.building {
        side.push(SidePanel {
            kind: SidePanelKind::Inspector,
            tab: "Building 建筑",
            add: Box::new(move |ui, out| inspector_ui(ui, map, index, out)),
        });
    }
    let bar = TopBar {
        now_ms,
        as_of,
        demo,
        steward_open,
        desk_open,
        operations_open,
        briefing: view.briefing.as_ref().map(|b| b.state()),
    };
    let content = ShellContent {
        top_bar: Box::new(|ui, out| top_bar_ui(ui, map, time, &bar, out)),
        hall_bar: has_hall.then(|| -> Bar<'_> {
            Box::new(|ui, _| {
                if let Some(link) = desk.borrow().as_ref().and_then(|d| d.hall.as_ref()) {
                    let trouble = live.as_deref().and_then(|l| l.hall_trouble());
                    hall_bar_ui(ui, link, trouble, time, now_ms)
                }
            })
        }),
        kpi_strip: live
            .is_some()
            .then(|| -> Bar<'_> { Box::new(|ui, _| kpi_strip_ui(ui, &kpis.shown)) }),
        timeline: view.timeline.as_deref().map(|t| -> Bar<'_> {
            let marks = &marks.1;
            Box::new(move |ui, out| {
                // A console's mirror of the hall's history in trouble: one more note.
                let with_mirror: Vec<String>;
                let problems: &[String] = match &t.mirror_problem {
                    Some(p) => {
                        with_mirror = t
                            .problems
                            .iter()
                            .cloned()
                            .chain(std::iter::once(format!("the hall's history: {p}")))
                            .collect();
                        &with_mirror
                    }
                    None => &t.problems,
                };
                let shown = super::timeline::TimelineView {
                    playback: t.playback,
                    speed: t.speed,
                    earliest_ms: t.earliest_ms,
                    now_ms: crate::clock::unix_ms_now(),
                    shown_ms: now_ms,
                    seeking: t.seeking(),
                    catching_up: t.catching_up,
                    trouble: t.trouble.as_deref(),
                    problems,
                    marks,
                };
                let mut actions = Vec::new();
                super::timeline::timeline_bar_ui(ui, &shown, time, &mut actions);
                out.extend(actions.into_iter().map(UiCommand::Timeline));
            })
        }),
        status_bar: Box::new(|ui, _| status_bar_ui(ui, map, stats, fps)),
        side,
        steward: match (steward_open, &live) {
            (true, Some(live)) => Some(Box::new(move |ui, _| {
                super::steward::steward_ui(
                    ui,
                    &live.feeds,
                    &live.ingest.health,
                    &live.ingest.quality,
                    &governance.reconciliation,
                    now_ms,
                )
            })),
            _ => None,
        },
    };
    let view = show_shell(ctx, &mut layout, content, &mut pending.0);
    // The camera reads the cursor in the window's logical pixels.
    let zoom = ctx.zoom_factor();
    ui_input.view_rect = egui::Rect::from_min_max(
        (view.min.to_vec2() * zoom).to_pos2(),
        (view.max.to_vec2() * zoom).to_pos2(),
    );
    ui_input.wants_pointer = ctx.egui_is_using_pointer() || ctx.is_pointer_over_egui();
    ui_input.wants_keyboard = ctx.egui_wants_keyboard_input();
    Ok(())
}

/// A console of a hall: which hall, who else is here, and — in red, with the time
/// since — when its server is out of reach.
fn hall_bar_ui(
    ui: &mut egui::Ui,
    link: &super::desk::HallLink,
    live_trouble: Option<&str>,
    time: &CityTime,
    now_ms: i64,
) {
    ui.horizontal(|ui| match link.down_since_ms {
        Some(since) => {
            egui::Frame::new()
                .fill(theme::ALARM)
                .inner_margin(egui::Margin::symmetric(8, 2))
                .show(ui, |ui| {
                    // Wraps by words on a narrow window rather than running off it.
                    ui.add(
                        egui::Label::new(
                            egui::RichText::new(format!(
                                "HALL {} — server unreachable 服务器不可达 since {} ({} s): last state shown, commands refused",
                                link.hall,
                                time.text(since),
                                (now_ms - since).max(0) / 1000
                            ))
                            .color(egui::Color32::WHITE)
                            .strong(),
                        )
                        .wrap(),
                    )
                });
        }
        None => {
            // Read under the lock, without copying the list every frame.
            let (consoles, hub) = match link.members.lock() {
                Ok(members) => (
                    members
                        .iter()
                        .filter(|m| m.kind == "console" && m.id != link.member_id)
                        .filter_map(|m| m.user.as_deref())
                        .collect::<Vec<_>>()
                        .join(", "),
                    members
                        .iter()
                        .find(|m| m.kind == "hub" && m.state == "active")
                        .map_or("no active hub".to_string(), |m| format!("hub {}", m.host)),
                ),
                Err(_) => (String::new(), "no active hub".to_string()),
            };
            ui.label(
                egui::RichText::new(format!("HALL {} 大厅", link.hall))
                    .color(theme::GOOD)
                    .strong(),
            );
            if let Some(domain) = &link.watching {
                ui.label(
                    egui::RichText::new(format!(
                        "watched over the link (domain {domain}), read-only 跨级只读"
                    ))
                    .color(theme::WARN)
                    .strong(),
                );
            }
            ui.label(egui::RichText::new(hub).color(theme::MUTED));
            // The live layers come from the hub: say when they wait for it.
            if let Some(why) = live_trouble {
                truncated_label(ui, format!("live layers 实时图层: {why}"));
            }
            if !consoles.is_empty() {
                truncated_label(ui, format!("also here 同时在线: {consoles}"));
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
/// What the top bar shows besides the city.
#[derive(Clone, Debug, Default)]
pub struct TopBar {
    pub now_ms: i64,
    /// The clock shows a past instant (replay).
    pub as_of: bool,
    pub demo: bool,
    pub steward_open: bool,
    pub desk_open: bool,
    pub operations_open: bool,
    /// The briefing button, when this window can start one.
    pub briefing: Option<super::briefing_launch::BriefingState>,
}

pub fn top_bar_ui(
    ui: &mut egui::Ui,
    map: &CityMap,
    time: &CityTime,
    bar: &TopBar,
    out: &mut Vec<UiCommand>,
) {
    let TopBar {
        now_ms,
        as_of,
        demo,
        steward_open,
        desk_open,
        operations_open,
        ref briefing,
    } = *bar;
    let bar_width = ui.available_width();
    ui.horizontal(|ui| {
        // The clock and the toggles are laid out first, from the right, so they always
        // show whole; the title and the city's name take the room left and elide.
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            // The city's local time; which zone, and why, on hover.
            ui.add(
                egui::Label::new(
                    egui::RichText::new(time.text(now_ms))
                        .monospace()
                        .size(17.0),
                )
                .extend(),
            )
            .on_hover_text(time.describe(now_ms));
            if as_of {
                // The past is never taken for now: said beside the clock, which
                // shows the instant replayed.
                egui::Frame::new()
                    .fill(theme::WARN)
                    .inner_margin(egui::Margin::symmetric(8, 1))
                    .corner_radius(4)
                    .show(ui, |ui| {
                        ui.add(
                            egui::Label::new(
                                egui::RichText::new("REPLAY 回放 · as of")
                                    .color(egui::Color32::BLACK)
                                    .strong(),
                            )
                            .extend(),
                        )
                    })
                    .response
                    .on_hover_text("The city as recorded at this instant, not live.");
            }
            // Next to the clock, so a narrow bar never pushes it off.
            if demo {
                // Demo accounts and tokens are active: said wherever anyone looks.
                egui::Frame::new()
                    .fill(theme::ALARM)
                    .inner_margin(egui::Margin::symmetric(8, 1))
                    .corner_radius(4)
                    .show(ui, |ui| {
                        ui.add(
                            egui::Label::new(
                                egui::RichText::new("DEMO 演示")
                                    .color(egui::Color32::WHITE)
                                    .strong(),
                            )
                            .extend(),
                        )
                    })
                    .response
                    .on_hover_text(
                        "Demo accounts (published passphrase) and demo department tokens are active: not for operations. Run with --users and --dispatch.",
                    );
            }
            let narrow = bar_width < 640.0;
            if !narrow {
                ui.separator();
            }
            // Toggles that show whether their panel is open.
            // On a narrow bar the toggles keep only their Chinese names (the
            // English on hover), so neither is pushed off the bar.
            let (dispatch, steward, operations, briefing_label) = if narrow {
                ("调度", "治理", "运营", "简报")
            } else {
                (
                    "Dispatch 指挥调度",
                    "Data steward 数据治理",
                    "Operations 运营",
                    "Briefing 简报",
                )
            };
            // The briefing and the operations window: on a bar too narrow for all
            // the toggles, in a menu, so the panels' own toggles stay on the bar.
            let occasional = |ui: &mut egui::Ui, out: &mut Vec<UiCommand>, in_menu: bool| {
                if let Some(state) = briefing {
                    use super::briefing_launch::BriefingState;
                    let running = *state == BriefingState::Running;
                    let hover = match state {
                        BriefingState::Ready => {
                            "Present the last shift's briefing full screen (F5); → next, ← previous, Esc ends".to_string()
                        }
                        BriefingState::Running => "The briefing is being presented".to_string(),
                        BriefingState::Failed(why) => why.clone(),
                    };
                    let text = match state {
                        BriefingState::Failed(_) => {
                            egui::RichText::new(format!("⚠ {briefing_label}")).color(theme::WARN)
                        }
                        _ => egui::RichText::new(briefing_label),
                    };
                    if ui
                        .selectable_label(running, text)
                        .on_hover_text(hover)
                        .clicked()
                    {
                        out.push(UiCommand::StartBriefing);
                        if in_menu {
                            ui.close();
                        }
                    }
                }
                if ui
                    .selectable_label(operations_open, operations)
                    .on_hover_text("Hub operations 运营: the last shift's operating figures")
                    .clicked()
                {
                    out.push(UiCommand::ToggleOperations);
                    if in_menu {
                        ui.close();
                    }
                }
            };
            if ui
                .selectable_label(desk_open, dispatch)
                .on_hover_text("Dispatch 指挥调度")
                .clicked()
            {
                out.push(UiCommand::ToggleDesk);
            }
            if ui
                .selectable_label(steward_open, steward)
                .on_hover_text("Data steward 数据治理")
                .clicked()
            {
                out.push(UiCommand::ToggleSteward);
            }
            // (The full labels of all four take about 560 points beside the clock.)
            let crowded = bar_width < 1100.0;
            if crowded {
                ui.menu_button("⋯", |ui| occasional(ui, out, true))
                    .response
                    .on_hover_text("Briefing 简报, Operations 运营");
            } else {
                occasional(ui, out, false);
            }
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                ui.add(
                    egui::Label::new(
                        egui::RichText::new("中枢 Zhongshu")
                            .heading()
                            .color(theme::ACCENT)
                            .strong(),
                    )
                    .truncate(),
                );
                ui.separator();
                truncated_label(ui, egui::RichText::new(&map.name).heading());
            });
        });
    });
}

pub fn status_bar_ui(ui: &mut egui::Ui, map: &CityMap, stats: &SceneStats, fps: f64) {
    // The attribution is laid out first, from the right, so it always shows in
    // full; the figures take the room left and elide on a narrow window.
    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
        if let Some(attribution) = &map.attribution {
            ui.label(egui::RichText::new(attribution).color(theme::MUTED));
            ui.separator();
        }
        ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
            ui.label(format!("{fps:.0} fps"));
            ui.separator();
            let skipped = map.skipped.broken_total();
            let pieces = map.pieces_dropped.broken_total();
            let text = egui::RichText::new(if pieces > 0 {
                format!("skipped {skipped} (+{pieces} pieces)")
            } else {
                format!("skipped {skipped}")
            });
            let label = ui.label(if skipped + pieces > 0 {
                text.color(theme::WARN)
            } else {
                text
            });
            label.on_hover_ui(|ui| skipped_ui(ui, map));
            ui.separator();
            ui.add(
                egui::Label::new(format!(
                    "{} chunks · {} k triangles",
                    stats.chunk_entities,
                    stats.triangles / 1000
                ))
                .truncate(),
            );
            ui.separator();
            ui.add(
                egui::Label::new(format!(
                    "{} buildings · {} roads · {} water · {} green · {} districts",
                    map.buildings.len(),
                    map.roads.len(),
                    map.count_areas(AreaKind::Water) + map.waterways.len(),
                    map.count_areas(AreaKind::Green),
                    map.districts.len(),
                ))
                .truncate(),
            );
        });
    });
}

fn skipped_ui(ui: &mut egui::Ui, map: &CityMap) {
    if map.skipped.total() == 0 {
        ui.label("Every feature in the file was drawn.");
        return;
    }
    let rows = |ui: &mut egui::Ui, id: &str, counts: Vec<(SkipReason, u64)>| {
        egui::Grid::new(id).striped(true).show(ui, |ui| {
            for (reason, n) in counts {
                ui.label(reason.as_str()).on_hover_text(reason.describe());
                ui.label(n.to_string());
                ui.end_row();
            }
        });
    };
    if map.skipped.broken_total() == 0 {
        ui.label("No broken features.");
    } else {
        ui.label("Broken features left out, by reason:");
        rows(ui, "skipped", map.skipped.broken().collect());
    }
    if map.pieces_dropped.broken_total() > 0 {
        ui.label("Broken pieces left out of features drawn without them:");
        rows(ui, "pieces", map.pieces_dropped.broken().collect());
    }
    if map.skipped.not_drawn_total() > 0 {
        ui.label("Not drawn (not errors):");
        rows(ui, "not-drawn", map.skipped.not_drawn().collect());
    }
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
    ui.collapsing(
        format!("Skipped features: {}", map.skipped.broken_total()),
        |ui| skipped_ui(ui, map),
    );
}

pub fn inspector_ui(ui: &mut egui::Ui, map: &CityMap, index: usize, out: &mut Vec<UiCommand>) {
    let Some(b) = map.buildings.get(index) else {
        return;
    };
    panel_header(ui, egui::RichText::new("Building 建筑").heading(), |ui| {
        if ui.button("×").on_hover_text("Close 关闭").clicked() {
            out.push(UiCommand::ClearSelection);
        }
        if ui.button("Fly to 飞至").clicked() {
            out.push(UiCommand::FlyToBuilding(index));
        }
    });
    if ui.button("Report incident here 在此上报").clicked() {
        out.push(UiCommand::ReportIncidentHere);
    }
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
            // Simple 3D Buildings: a part names its outline (which is not drawn), and
            // an outline says how many parts stand for it; both are a click away.
            if let Some(outline) = b.outline.and_then(|o| map.buildings.get(o).map(|x| (o, x))) {
                ui.label("part of");
                let text = outline
                    .1
                    .name
                    .clone()
                    .unwrap_or_else(|| outline.1.id.clone());
                if ui.link(text).on_hover_text(&outline.1.id).clicked() {
                    out.push(UiCommand::SelectBuilding(outline.0));
                }
                ui.end_row();
            }
            if b.has_parts {
                let parts = map
                    .buildings
                    .iter()
                    .filter(|p| p.outline == Some(index))
                    .count();
                ui.label("parts");
                ui.label(format!("{parts} (drawn instead of this outline)"));
                ui.end_row();
            }
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

/// KPI values are this share of the window's height: readable across a hall on a 4K
/// wall, whatever the scale (a share of the height in points is the same share in pixels).
pub const KPI_VALUE_SHARE: f32 = 0.03;

/// The KPI value type size (points) on a window `screen_height` points tall.
pub fn kpi_value_size(screen_height: f32) -> f32 {
    (screen_height * KPI_VALUE_SHARE).clamp(22.0, 160.0)
}

/// One tile, measured first so that on a narrow window it moves to the next row whole
/// instead of squeezing its text a character per line.
fn kpi_tile(ui: &mut egui::Ui, label: &str, value: String, colour: egui::Color32, size: f32) {
    let label = egui::RichText::new(label)
        .color(theme::MUTED)
        .size((size * 0.45).max(13.0));
    let value = egui::RichText::new(value).size(size).strong().color(colour);
    let one_line = |text: egui::RichText, ui: &egui::Ui| {
        egui::WidgetText::from(text).into_galley(
            ui,
            Some(egui::TextWrapMode::Extend),
            f32::INFINITY,
            egui::TextStyle::Body,
        )
    };
    let (label, value) = (one_line(label, ui), one_line(value, ui));
    let tile = egui::vec2(
        label.size().x.max(value.size().x),
        label.size().y + ui.spacing().item_spacing.y + value.size().y,
    );
    ui.allocate_ui_with_layout(tile, egui::Layout::top_down(egui::Align::Min), |ui| {
        ui.add(egui::Label::new(label).extend());
        ui.add(egui::Label::new(value).extend());
    });
}

/// Headline figures in large type, for the wall: sized to the window's height, in
/// rows that wrap tile by tile on a narrow window.
/// The KPI strip's figures and the pass computing the next ones.
#[derive(Default)]
pub struct KpiStrip {
    shown: CityKpis,
    shown_at_ms: i64,
    pass: Option<KpiPass>,
    /// The [`Live::shown_epoch`] the figures are of.
    epoch: u64,
}

pub fn kpi_strip_ui(ui: &mut egui::Ui, k: &CityKpis) {
    let size = kpi_value_size(ui.ctx().viewport_rect().height());
    let dash = || "—".to_string();
    ui.horizontal_wrapped(|ui| {
        ui.spacing_mut().item_spacing.x = (size * 0.7).max(18.0);
        kpi_tile(
            ui,
            "Road speed 路网均速",
            k.mean_road_speed_kmh
                .map_or_else(dash, |v| format!("{v:.0} km/h")),
            theme::ACCENT,
            size,
        );
        kpi_tile(
            ui,
            "Congestion 拥堵指数",
            k.congestion_index
                .map_or_else(dash, |v| format!("{:.0}%", v * 100.0)),
            congestion_colour(k.congestion_index),
            size,
        );
        kpi_tile(
            ui,
            "AQI 空气质量",
            match (k.mean_aqi, k.max_aqi) {
                (Some(m), Some(x)) => format!("{m:.0} (max {x:.0})"),
                _ => dash(),
            },
            aqi_colour(k.mean_aqi),
            size,
        );
        kpi_tile(
            ui,
            "Open alerts 未结告警",
            k.open_alerts.to_string(),
            alerts_colour(k.open_alerts),
            size,
        );
        kpi_tile(
            ui,
            "Hospital load 医院负荷",
            k.hospital_load
                .map_or_else(dash, |v| format!("{:.0}%", v * 100.0)),
            hospital_colour(k.hospital_load),
            size,
        );
        kpi_tile(
            ui,
            "Units 在途车辆",
            k.vehicles.to_string(),
            theme::ACCENT,
            size,
        );
        if !k.excluded.is_empty() {
            // Say what the figures leave out, so nobody reads them as everything.
            let e = &k.excluded;
            let note = egui::RichText::new(format!(
                "excludes {} stale, {} quarantined, {} reported twice, {} implausible 不含过期/隔离/重复/异常",
                e.stale, e.quarantined, e.duplicates, e.implausible
            ))
            .color(theme::MUTED)
            .size((size * 0.45).max(13.0));
            let galley = egui::WidgetText::from(note.clone()).into_galley(
                ui,
                Some(egui::TextWrapMode::Extend),
                f32::INFINITY,
                egui::TextStyle::Body,
            );
            // Its own row when the tiles leave too little; elided only on a window
            // narrower than the note itself.
            let width = galley.size().x.min(ui.max_rect().width());
            ui.allocate_ui_with_layout(
                egui::vec2(width, galley.size().y),
                egui::Layout::left_to_right(egui::Align::Min),
                |ui| truncated_label(ui, note),
            );
        }
    });
}

/// Layers grouped by sub-brain: toggle, entity count, and each feed's health.
/// What the sub-brains panel reads: the feeds, their health now or as recorded (in
/// replay), and the state shown.
pub struct SubBrains<'a> {
    pub feeds: &'a [FeedConfig],
    pub health: &'a [FeedHealth],
    pub recorded: Option<&'a std::collections::BTreeMap<u32, serde_json::Value>>,
    pub state: &'a LiveState,
}

pub fn sub_brains_ui(
    ui: &mut egui::Ui,
    view: &SubBrains,
    domains: &DomainVisibility,
    now_ms: i64,
    out: &mut Vec<UiCommand>,
) {
    let SubBrains {
        feeds,
        health,
        recorded,
        state,
    } = *view;
    ui.heading("Sub-brains 子脑");
    for domain in Domain::ALL {
        let feed_ids: Vec<usize> = (0..feeds.len())
            .filter(|&i| feeds[i].domain == domain)
            .collect();
        let count: usize = feed_ids
            .iter()
            .map(|&i| state.count_for_feed(i as u32))
            .sum();
        let mut on = domains.is_visible(domain);
        ui.horizontal(|ui| {
            if ui.checkbox(&mut on, domain_label(domain)).changed() {
                out.push(UiCommand::SetDomain(domain, on));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(egui::RichText::new(count.to_string()).color(theme::MUTED));
            });
        });
        if feed_ids.is_empty() {
            ui.label(
                egui::RichText::new("    no feed configured")
                    .small()
                    .color(theme::MUTED),
            );
        }
        for i in feed_ids {
            // The past shown: each feed's health as recorded then.
            if let Some(recorded) = recorded {
                let (text, colour) =
                    recorded_health_text(&feeds[i].name, recorded.get(&(i as u32)));
                ui.label(
                    egui::RichText::new(format!("    {text}"))
                        .small()
                        .color(colour),
                )
                .on_hover_text("As recorded at the instant shown 回放时记录的状态");
                continue;
            }
            let (feed, h) = (&feeds[i], &health[i]);
            let stale_after_s = (feed.interval_s * 3.0).max(5.0);
            let (text, colour) = match h.age_s(now_ms) {
                None if h.last_error.is_some() => {
                    (format!("{} · failing", feed.name), theme::ALARM)
                }
                None => (format!("{} · waiting", feed.name), theme::MUTED),
                Some(age) => {
                    let colour = if age > stale_after_s {
                        theme::WARN
                    } else {
                        theme::MUTED
                    };
                    // Tests and exercises are news to an operator: said on the line.
                    let withheld: String = h
                        .withheld
                        .iter()
                        .map(|(why, n)| format!(" · {n} {why}"))
                        .collect();
                    (
                        format!(
                            "{} · {} ago · {:.0}/s · {} rejected{withheld}",
                            feed.name,
                            age_text(age),
                            h.updates_per_s(now_ms),
                            h.rejected
                        ),
                        colour,
                    )
                }
            };
            ui.label(
                egui::RichText::new(format!("    {text}"))
                    .small()
                    .color(colour),
            )
            .on_hover_ui(|ui| feed_health_ui(ui, feed, h));
        }
    }
    ui.separator();
    legend_ui(ui);
}

/// A feed's line from its recorded health (`{"health": {"freshness", "validity",
/// "quarantined", "last_error", …}}`), in replay.
pub fn recorded_health_text(
    name: &str,
    line: Option<&serde_json::Value>,
) -> (String, egui::Color32) {
    let Some(h) = line.map(|l| &l["health"]) else {
        return (format!("{name} · no health recorded by then"), theme::MUTED);
    };
    let freshness = h["freshness"].as_str().unwrap_or("unknown");
    let mut text = format!("{name} · {freshness}");
    if let Some(v) = h["validity"].as_f64() {
        text.push_str(&format!(" · {:.0}% valid", v * 100.0));
    }
    let mut colour = match freshness {
        "fresh" => theme::MUTED,
        _ => theme::WARN,
    };
    if let Some(q) = h["quarantined"].as_str() {
        text.push_str(&format!(" · quarantined: {q}"));
        colour = theme::ALARM;
    } else if let Some(e) = h["last_error"].as_str() {
        text.push_str(&format!(" · failing: {e}"));
        colour = theme::ALARM;
    }
    (text, colour)
}

fn feed_health_ui(ui: &mut egui::Ui, feed: &FeedConfig, h: &FeedHealth) {
    egui::Grid::new("feed-health")
        .num_columns(2)
        .show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.label(egui::RichText::new(k).color(theme::MUTED));
                ui.label(v);
                ui.end_row();
            };
            row("owner", feed.owner.clone().unwrap_or_else(|| "—".into()));
            row(
                "source",
                feed.url
                    .clone()
                    .unwrap_or_else(|| "built-in simulator".into()),
            );
            row("every", format!("{} s", feed.interval_s));
            row("updates", h.updates.to_string());
            row("ignored (old/duplicate)", h.ignored.to_string());
            row(
                "polls ok / failed",
                format!("{} / {}", h.polls_ok, h.polls_failed),
            );
            for (reason, n) in &h.reasons {
                row(&format!("rejected: {reason}"), n.to_string());
            }
            for (cause, n) in &h.poll_errors {
                row(&format!("poll failed: {cause}"), n.to_string());
            }
            for (why, n) in &h.refused {
                row(&format!("requests refused: {why}"), n.to_string());
            }
            for (note, n) in &h.notes {
                row(&format!("note: {note}"), n.to_string());
            }
            for (why, n) in &h.withheld {
                row(&format!("{why} messages (no incident)"), n.to_string());
            }
            if let Some(e) = &h.last_error {
                row("last error", e.clone());
            }
        });
}

fn swatch(ui: &mut egui::Ui, srgb: u32, label: &str) {
    ui.horizontal(|ui| {
        let (rect, _) = ui.allocate_exact_size(egui::vec2(14.0, 14.0), egui::Sense::hover());
        let c = egui::Color32::from_rgb((srgb >> 16) as u8, (srgb >> 8) as u8, srgb as u8);
        ui.painter().rect_filled(rect, 3.0, c);
        ui.label(egui::RichText::new(label).small());
    });
}

/// What the colours mean.
pub fn legend_ui(ui: &mut egui::Ui) {
    ui.collapsing("Legend 图例", |ui| {
        ui.label(
            egui::RichText::new("Road speed vs free flow")
                .small()
                .strong(),
        );
        for (c, l) in [
            (0x2FBF71, "free (> 80%)"),
            (0xF2A23A, "slow (~60%)"),
            (0xE8412C, "congested (< 35%)"),
        ] {
            swatch(ui, c, l);
        }
        ui.label(egui::RichText::new("Units and places").small().strong());
        for k in [
            MarkerKind::Bus,
            MarkerKind::Taxi,
            MarkerKind::Police,
            MarkerKind::FireEngine,
            MarkerKind::Ambulance,
            MarkerKind::Hospital,
            MarkerKind::WaterStation,
            MarkerKind::District,
        ] {
            swatch(ui, k.srgb(), k.label());
        }
        ui.label(
            egui::RichText::new("Air quality index (stations and heat map)")
                .small()
                .strong(),
        );
        for (a, l) in [
            (25.0, "good < 50"),
            (75.0, "moderate < 100"),
            (125.0, "sensitive < 150"),
            (175.0, "unhealthy < 200"),
            (250.0, "very unhealthy"),
        ] {
            swatch(ui, aqi_srgb(a), l);
        }
        ui.label(
            egui::RichText::new("Economy: footfall per hour by area (of the busiest)")
                .small()
                .strong(),
        );
        for (t, l) in [(0.0, "quiet"), (0.5, "half"), (1.0, "busiest")] {
            let [r, g, b, _] = super::layers::choropleth::ramp(t);
            let to_srgb = |c: f32| {
                let c = if c <= 0.003_130_8 {
                    c * 12.92
                } else {
                    1.055 * c.powf(1.0 / 2.4) - 0.055
                };
                (c.clamp(0.0, 1.0) * 255.0).round() as u32
            };
            swatch(ui, (to_srgb(r) << 16) | (to_srgb(g) << 8) | to_srgb(b), l);
        }
        ui.label(
            egui::RichText::new("Alerts by severity (pulsing)")
                .small()
                .strong(),
        );
        for (sev, l) in [
            ("low", "low"),
            ("medium", "medium"),
            ("high", "high"),
            ("critical", "critical"),
        ] {
            swatch(ui, super::layers::markers::severity_srgb(Some(sev)), l);
        }
    });
}

/// The typed values of an entity's kind, each in the unit its source gave (`units`, by
/// Smart Data Models name) or, when it gave none, the model's unit.
fn kind_rows(
    kind: &EntityKind,
    units: &std::collections::BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    let num = |v: &Option<f64>, field: &str, model_unit: &str| {
        v.map(|x| match units.get(field) {
            Some(code) => value_with_unit(&FieldValue::Number(x), Some(code)),
            None => format!("{x}{model_unit}"),
        })
    };
    let txt = |v: &Option<String>| v.clone();
    let rows: Vec<(&'static str, Option<String>)> = match kind {
        EntityKind::TrafficFlow {
            average_speed_kmh,
            intensity,
            occupancy,
            congested,
        } => vec![
            (
                "average speed",
                num(average_speed_kmh, "averageVehicleSpeed", " km/h"),
            ),
            ("intensity", num(intensity, "intensity", " veh/h")),
            (
                "occupancy",
                match units.get("occupancy").map(String::as_str) {
                    None | Some("C62") => occupancy.map(|o| format!("{:.0}%", o * 100.0)),
                    Some(_) => num(occupancy, "occupancy", ""),
                },
            ),
            ("congested", congested.map(|c| c.to_string())),
        ],
        EntityKind::AirQuality {
            aqi,
            pm25,
            pm10,
            no2,
            o3,
        } => vec![
            ("AQI", num(aqi, "airQualityIndex", "")),
            ("PM2.5", num(pm25, "pm25", " µg/m³")),
            ("PM10", num(pm10, "pm10", " µg/m³")),
            ("NO₂", num(no2, "no2", " µg/m³")),
            ("O₃", num(o3, "o3", " µg/m³")),
        ],
        EntityKind::Vehicle {
            vehicle_type,
            speed_kmh,
            heading_deg,
            service_status,
        } => vec![
            ("vehicle", txt(vehicle_type)),
            ("speed", num(speed_kmh, "speed", " km/h")),
            ("heading", num(heading_deg, "heading", "°")),
            ("status", txt(service_status)),
        ],
        EntityKind::Alert {
            category,
            sub_category,
            severity,
            description,
        } => vec![
            ("category", txt(category)),
            ("kind", txt(sub_category)),
            ("severity", txt(severity)),
            ("description", txt(description)),
        ],
        EntityKind::Parking {
            available_spots,
            total_spots,
            status,
        } => vec![
            (
                "free spots",
                num(available_spots, "availableSpotNumber", ""),
            ),
            ("total spots", num(total_spots, "totalSpotNumber", "")),
            ("status", txt(status)),
        ],
        EntityKind::Generic => vec![],
    };
    rows.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Any live entity: its values, source feed, owner and age.
#[allow(clippy::too_many_arguments)]
pub fn entity_inspector_ui(
    ui: &mut egui::Ui,
    feeds: &[FeedConfig],
    state: &LiveState,
    slot: u32,
    now_ms: i64,
    time: &CityTime,
    reconciliation: &crate::governance::reconcile::Reconciliation,
    out: &mut Vec<UiCommand>,
) {
    let Some(e): Option<&LiveEntity> = state.entity(slot) else {
        return;
    };
    panel_header(ui, egui::RichText::new(&e.entity_type).heading(), |ui| {
        if ui.button("×").on_hover_text("Close 关闭").clicked() {
            out.push(UiCommand::ClearSelection);
        }
        if ui.button("Fly to 飞至").clicked() {
            out.push(UiCommand::FlyToEntity(slot));
        }
    });
    if let Some(name) = e.fields.get("name").and_then(FieldValue::as_str) {
        ui.label(egui::RichText::new(name).size(18.0).color(theme::ACCENT));
    }
    let feed = feeds.get(e.feed as usize);
    // One data, one source: say which source is authoritative for this thing.
    if let Some(winner) = reconciliation
        .winner_of
        .get(&slot)
        .and_then(|&w| state.entity(w))
    {
        let name = feeds
            .get(winner.feed as usize)
            .map_or("another feed", |f| f.name.as_str());
        ui.label(
            egui::RichText::new(format!(
                "Superseded by {name} ({}), the authoritative source",
                winner.id
            ))
            .color(theme::WARN),
        );
    }
    let feed_name = feed.map(|f| f.name.as_str()).unwrap_or("");
    for c in reconciliation.conflicts.iter().filter(|c| {
        (c.winner.id == e.id && c.winner.feed == feed_name)
            || (c.other.id == e.id && c.other.feed == feed_name)
    }) {
        ui.label(
            egui::RichText::new(format!(
                "{}: {} says {}, {} says {} — {} wins",
                c.field,
                c.winner.feed,
                c.winner.shown(),
                c.other.feed,
                c.other.shown(),
                c.winner.feed
            ))
            .small()
            .color(theme::WARN),
        );
    }
    egui::Grid::new("entity-facts")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            let mut row = |k: &str, v: String| {
                ui.label(egui::RichText::new(k).color(theme::MUTED));
                ui.add(egui::Label::new(v).wrap());
                ui.end_row();
            };
            row("id", e.id.clone());
            if let Some(f) = feed {
                row("feed", f.name.clone());
                row("sub-brain", domain_label(f.domain).to_string());
                row("owner", f.owner.clone().unwrap_or_else(|| "—".into()));
            }
            if let Some(t) = e.observed_at_ms {
                row(
                    "observed",
                    format!(
                        "{} ({} ago)",
                        time.text(t),
                        age_text((now_ms - t).max(0) as f64 / 1000.0)
                    ),
                );
            }
            row(
                "received",
                format!(
                    "{} ago",
                    age_text((now_ms - e.received_at_ms).max(0) as f64 / 1000.0)
                ),
            );
            row("version", e.version.to_string());
            if let Some([lon, lat]) = e.position {
                row("position", format!("{lat:.5}°N {lon:.5}°E"));
            }
            for (k, v) in kind_rows(&e.kind, &e.units) {
                row(k, v);
            }
        });
    // What the decoder changed or left out, so nobody takes it for the source's word.
    for note in &e.notes {
        ui.label(
            egui::RichText::new(note.describe())
                .small()
                .color(theme::WARN),
        );
    }
    ui.separator();
    ui.label(egui::RichText::new("Values").strong());
    egui::ScrollArea::vertical().show(ui, |ui| {
        egui::Grid::new("entity-fields")
            .num_columns(2)
            .striped(true)
            .show(ui, |ui| {
                for (k, v) in &e.fields {
                    ui.label(egui::RichText::new(k).color(theme::MUTED));
                    let text = value_with_unit(v, e.units.get(k).map(String::as_str));
                    ui.add(egui::Label::new(text).wrap());
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

#[allow(clippy::too_many_arguments)]
fn apply_ui_commands(
    mut pending: ResMut<PendingUiCommands>,
    mut layers: ResMut<LayerVisibility>,
    mut rig: ResMut<CameraRig>,
    mut selection: ResMut<Selection>,
    mut domains: ResMut<DomainVisibility>,
    mut governance: ResMut<super::governance::Governance>,
    mut operations: ResMut<super::operations::HubOps>,
    live: Option<Res<Live>>,
    city: Res<City>,
    mut desk: Option<ResMut<super::desk::Desk>>,
    mut timeline: Option<ResMut<super::timeline::Timeline>>,
    mut briefing: Option<ResMut<super::briefing_launch::BriefingLauncher>>,
) {
    for command in pending.0.drain(..) {
        match command {
            UiCommand::Timeline(action) => {
                if let Some(timeline) = timeline.as_deref_mut() {
                    timeline.act(action, crate::clock::unix_ms_now());
                }
            }
            UiCommand::ToggleDesk => {
                if let Some(desk) = desk.as_deref_mut() {
                    desk.open = !desk.open;
                }
            }
            UiCommand::ReportIncidentHere => {
                if let Some(desk) = desk.as_deref_mut() {
                    desk.open = true;
                    desk.ui.tab = super::desk_ui::DeskTab::New;
                }
            }
            UiCommand::SetLayer(layer, on) => {
                layers.0.insert(layer, on);
            }
            UiCommand::ResetView => rig.reset(),
            UiCommand::FlyToBuilding(i) => super::fly_to_building(&mut rig, &city, i),
            UiCommand::ClearSelection => {
                selection.building = None;
                selection.entity = None;
            }
            UiCommand::SelectBuilding(index) => {
                selection.building = Some(index);
                selection.entity = None;
            }
            UiCommand::ToggleSteward => governance.steward_open = !governance.steward_open,
            UiCommand::ToggleOperations => operations.open = !operations.open,
            UiCommand::StartBriefing => {
                if let Some(launcher) = briefing.as_deref_mut() {
                    launcher.start();
                }
            }
            UiCommand::CloseSteward => governance.steward_open = false,
            UiCommand::SetDomain(domain, on) => {
                domains.0.insert(domain, on);
            }
            UiCommand::FlyToEntity(slot) => {
                if let Some([e, n]) = live
                    .as_ref()
                    .and_then(|l| l.shown().entity(slot))
                    .and_then(|x| x.local)
                {
                    let focus = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
                    rig.fly_to(focus, 250.0);
                }
            }
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
        let buildings = harness.state().map.buildings.len().to_string();
        harness.get_by_label(&buildings);
        harness.get_by_label("first full frame 1234 ms after start");
    }

    #[test]
    fn status_bar_shows_counts_skips_and_the_osm_attribution() {
        let s = state();
        // The default city has next to no broken features, and many it does not draw (tags the map has no layer for, ways cut by the
        // extract's edge): the bar warns of the broken ones only.
        let skipped = s.map.skipped.broken_total();
        assert!(skipped < 100, "{skipped}");
        assert!(s.map.skipped.not_drawn_total() > 1000);
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
        harness.get_by_label(&format!("skipped {skipped}"));
        harness.get_by_label("© OpenStreetMap contributors (ODbL)");
    }

    #[test]
    fn on_a_narrow_window_the_status_bar_never_covers_the_attribution() {
        let stats = SceneStats {
            chunk_entities: 43,
            triangles: 41_698,
            mesh_ms: 5.0,
        };
        let s = state();
        let label = format!("skipped {}", s.map.skipped.broken_total());
        let mut harness = Harness::builder()
            .with_size(egui::vec2(640.0, 30.0))
            .build_ui_state(
                move |ui, s: &mut PanelState| status_bar_ui(ui, &s.map, &stats, 59.6),
                s,
            );
        harness.run();
        let attribution = harness
            .get_by_label("© OpenStreetMap contributors (ODbL)")
            .rect();
        let skipped = harness.get_by_label(&label).rect();
        assert!(attribution.right() <= 640.0 + 0.5, "{attribution:?}");
        assert!(
            skipped.right() <= attribution.left(),
            "{skipped:?} overlaps {attribution:?}"
        );
    }

    /// The live entity's inspector as an operator reads it, for the first entity of a
    /// decoded fixture.
    fn entity_inspector_harness(
        update: crate::feeds::EntityUpdate,
    ) -> Harness<'static, PanelState> {
        entity_inspector_harness_in(update, CityTime::utc("a test"))
    }

    fn entity_inspector_harness_in(
        update: crate::feeds::EntityUpdate,
        time: CityTime,
    ) -> Harness<'static, PanelState> {
        let feeds = crate::feeds::config::parse_feeds(
            "[[feed]]\nname='air'\nkind='ngsi-ld'\nurl='http://h/e'\ndomain='ecology'\n",
        )
        .unwrap();
        let mut live = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        live.apply(0, update, 0);
        let reconciliation = crate::governance::reconcile::Reconciliation::default();
        Harness::new_ui_state(
            move |ui, s: &mut PanelState| {
                entity_inspector_ui(
                    ui,
                    &feeds,
                    &live,
                    0,
                    1000,
                    &time,
                    &reconciliation,
                    &mut s.out,
                )
            },
            state(),
        )
    }

    #[test]
    fn the_entity_inspector_shows_units_lists_and_sub_properties() {
        let stations = crate::feeds::decode::decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-normalized.jsonld"
        ))
        .unwrap()
        .updates;
        let harness = entity_inspector_harness(stations[0].clone());
        // The value with its unit, in the values and in the typed rows alike.
        assert_eq!(harness.get_all_by_label("38.5 µg/m³").count(), 2);
        harness.get_by_label("0.3 mg/m³");
        harness.get_by_label("2.1 °C");
        harness.get_by_label("no2.accuracy");
        harness.get_by_label("0.95");
        harness.get_by_label("[urban, traffic]");

        // A typed value in another unit is shown in that unit, not in µg/m³.
        let mut in_mg = stations[1].clone();
        in_mg
            .fields
            .insert("pm25".into(), FieldValue::Number(0.0081));
        in_mg.units.insert("pm25".into(), "GP".into());
        in_mg.kind = EntityKind::AirQuality {
            aqi: None,
            pm25: Some(0.0081),
            pm10: None,
            no2: None,
            o3: None,
        };
        let harness = entity_inspector_harness(in_mg);
        assert_eq!(harness.get_all_by_label("0.0081 mg/m³").count(), 2);
        harness.get_by_label("0.2 ppm");
    }

    #[test]
    fn the_entity_inspector_reads_observed_in_the_city_s_time() {
        let [mut lot] = <[crate::feeds::EntityUpdate; 1]>::try_from(
            crate::feeds::decode::decode_geojson(include_bytes!(
                "../../tests/data/sdm/off-street-parking-geojson.json"
            ))
            .unwrap()
            .updates,
        )
        .unwrap();
        // 2026-11-29T10:00:00Z.
        lot.observed_at_ms = Some(1_795_946_400_000);
        let shanghai = CityTime::from_flag("Asia/Shanghai").unwrap();
        let harness = entity_inspector_harness_in(lot.clone(), shanghai);
        harness.get_by_label_contains("2026-11-29 18:00:00 CST (");
        let helsinki = CityTime::from_flag("Europe/Helsinki").unwrap();
        let harness = entity_inspector_harness_in(lot, helsinki);
        harness.get_by_label_contains("2026-11-29 12:00:00 EET (");
    }

    #[test]
    fn the_entity_inspector_says_what_the_decoder_changed() {
        let [lot] = <[crate::feeds::EntityUpdate; 1]>::try_from(
            crate::feeds::decode::decode_geojson(include_bytes!(
                "../../tests/data/sdm/off-street-parking-geojson.json"
            ))
            .unwrap()
            .updates,
        )
        .unwrap();
        let harness = entity_inspector_harness(lot);
        harness.get_by_label("geometry was wrapped in an NGSI-LD GeoProperty (unwrapped)");
        harness.get_by_label("[car, motorcycle]");
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

    #[test]
    fn a_part_names_its_outline_and_the_outline_counts_its_parts() {
        let s = state();
        let outline = s
            .map
            .buildings
            .iter()
            .position(|b| b.id == "way/8035238")
            .expect("Lasipalatsi is in the default city");
        let part = s
            .map
            .buildings
            .iter()
            .position(|b| b.outline == Some(outline))
            .expect("Lasipalatsi has parts");
        let parts = s
            .map
            .buildings
            .iter()
            .filter(|b| b.outline == Some(outline))
            .count();
        let mut harness = Harness::new_ui_state(
            move |ui, s: &mut PanelState| inspector_ui(ui, &s.map, part, &mut s.out),
            s,
        );
        harness.get_by_label("part of");
        let name = {
            let b = &harness.state().map.buildings[outline];
            b.name.clone().unwrap_or_else(|| b.id.clone())
        };
        harness.get_by_label(&name).click();
        harness.run();
        assert_eq!(
            harness.state().out,
            vec![UiCommand::SelectBuilding(outline)]
        );
        let harness = Harness::new_ui_state(
            move |ui, s: &mut PanelState| inspector_ui(ui, &s.map, outline, &mut s.out),
            state(),
        );
        harness.get_by_label(&format!("{parts} (drawn instead of this outline)"));
    }

    #[test]
    fn a_feeds_recorded_health_reads_as_it_was() {
        let line = serde_json::json!({"feed": 0, "at_ms": 1, "health": {"feed": "taxis",
            "freshness": "late", "validity": 0.874, "quarantined": null,
            "last_error": "HTTP 503", "completeness": 1.0}});
        let (text, colour) = recorded_health_text("taxis", Some(&line));
        assert_eq!(text, "taxis · late · 87% valid · failing: HTTP 503");
        assert_eq!(colour, crate::app::theme::ALARM);
        let (text, _) = recorded_health_text("taxis", None);
        assert_eq!(text, "taxis · no health recorded by then");
    }
}
