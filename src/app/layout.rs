//! The shell's layout: where the bars, the side panels and the steward window go, so
//! the map keeps its share of any window from 800×600 to a 4K wall.
//!
//! Side panels get a width between a minimum and a share of the window; together they
//! never take more than `1 − MAP_MIN_SHARE` of it. When their minimums do not fit, they
//! collapse into one panel with tabs. A width the operator drags a panel to is kept
//! here (not in egui's memory, which would keep a width squeezed by a narrow window):
//! when the window has room again, the panel returns to it.

use bevy::prelude::*;
use bevy_egui::egui;

use super::widgets::UiCommand;

/// The share of the window's width the 3D view keeps whatever panels are open.
pub const MAP_MIN_SHARE: f32 = 0.4;
/// Width of the tabbed panel unless the operator drags it.
const TABS_DEFAULT: f32 = 360.0;
const TABS_MIN: f32 = 240.0;

/// A side panel of the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SidePanelKind {
    /// Layer toggles, view, sub-brains (left).
    Layers,
    /// The dispatch desk (right, outermost).
    Desk,
    /// The building or entity inspector (right, beside the desk).
    Inspector,
}

impl SidePanelKind {
    /// The egui id of the panel (its width lives there between frames).
    pub fn id(self) -> &'static str {
        match self {
            Self::Layers => "layers",
            Self::Desk => "desk",
            Self::Inspector => "inspector",
        }
    }

    fn right(self) -> bool {
        !matches!(self, Self::Layers)
    }

    /// Narrowest the panel is drawn beside others (points).
    pub fn min_width(self) -> f32 {
        match self {
            Self::Layers => 200.0,
            Self::Desk => 300.0,
            Self::Inspector => 240.0,
        }
    }

    /// Widest the panel may be, as a share of the window's width.
    pub fn max_share(self) -> f32 {
        match self {
            Self::Layers => 0.25,
            Self::Desk => 0.4,
            Self::Inspector => 0.3,
        }
    }

    fn default_width(self) -> f32 {
        match self {
            Self::Layers => 270.0,
            Self::Desk => 430.0,
            Self::Inspector => 340.0,
        }
    }

    fn slot(self) -> usize {
        match self {
            Self::Layers => 0,
            Self::Desk => 1,
            Self::Inspector => 2,
        }
    }
}

const TABS_SLOT: usize = 3;

/// How the open side panels share the window this frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Side by side: each panel's width, and how wide a drag may make it.
    Side(Vec<(SidePanelKind, f32, f32)>),
    /// One panel with a tab per open panel: its width and drag limit.
    Tabs { width: f32, max: f32 },
}

/// Where the shell put things in the last frame (points).
#[derive(Clone, Debug)]
pub struct LaidOut {
    pub screen: egui::Rect,
    /// The area under the top bars and above the status bar.
    pub below_bars: egui::Rect,
    /// What no panel covers: the 3D view.
    pub view: egui::Rect,
    /// The side panels drawn, with their rects (the tabbed panel under its active tab).
    pub panels: Vec<(SidePanelKind, egui::Rect)>,
    pub tabs: bool,
    pub steward: Option<egui::Rect>,
}

impl Default for LaidOut {
    fn default() -> Self {
        Self {
            screen: egui::Rect::NOTHING,
            below_bars: egui::Rect::NOTHING,
            view: egui::Rect::NOTHING,
            panels: Vec::new(),
            tabs: false,
            steward: None,
        }
    }
}

/// Layout state kept between frames: one per window.
#[derive(Resource, Clone, Debug, Default)]
pub struct ShellLayout {
    /// Widths the operator dragged the panels to (layers, desk, inspector, tabs).
    preferred: [Option<f32>; 4],
    /// The tab shown when the panels are collapsed into tabs.
    pub tab: Option<SidePanelKind>,
    open_before: Vec<SidePanelKind>,
    pub last: LaidOut,
}

impl ShellLayout {
    /// The width the operator chose for a panel, if any.
    pub fn preferred(&self, kind: SidePanelKind) -> Option<f32> {
        self.preferred[kind.slot()]
    }

    /// Widths for the open panels (in drawing order) in a window `width` points wide.
    pub fn plan(&self, width: f32, open: &[SidePanelKind]) -> Plan {
        let budget = (width * (1.0 - MAP_MIN_SHARE)).max(0.0);
        let mins: f32 = open.iter().map(|k| k.min_width()).sum();
        if open.len() > 1 && mins > budget {
            let min = TABS_MIN.min(budget);
            let width = self.preferred[TABS_SLOT]
                .unwrap_or(TABS_DEFAULT)
                .clamp(min, budget.max(min));
            return Plan::Tabs { width, max: budget };
        }
        let bounds: Vec<(f32, f32)> = open
            .iter()
            .map(|&k| {
                let min = k.min_width().min(budget);
                let cap = (k.max_share() * width).max(k.min_width()).min(budget);
                (min, cap.max(min))
            })
            .collect();
        let mut widths: Vec<f32> = open
            .iter()
            .zip(&bounds)
            .map(|(&k, &(min, cap))| {
                self.preferred[k.slot()]
                    .unwrap_or(k.default_width())
                    .clamp(min, cap)
            })
            .collect();
        let total: f32 = widths.iter().sum();
        if total > budget {
            // Take the excess from each panel in proportion to its room above its minimum.
            let flex: f32 = widths.iter().zip(&bounds).map(|(w, b)| w - b.0).sum();
            let cut = ((total - budget) / flex.max(f32::EPSILON)).min(1.0);
            for (w, b) in widths.iter_mut().zip(&bounds) {
                *w -= (*w - b.0) * cut;
            }
        }
        let slack = (budget - widths.iter().sum::<f32>()).max(0.0);
        Plan::Side(
            open.iter()
                .zip(widths)
                .zip(&bounds)
                .map(|((&k, w), &(_, cap))| (k, w, (w + slack).min(cap).max(w)))
                .collect(),
        )
    }

    /// Brings a panel's tab to the front (a click on the map changed what it shows,
    /// so it must not stay behind another tab).
    pub fn show_first(&mut self, kind: SidePanelKind) {
        self.tab = Some(kind);
    }

    /// The active tab: a panel that just opened, else the one shown before, else the last.
    fn choose_tab(&mut self, open: &[SidePanelKind]) {
        if let Some(&new) = open.iter().rev().find(|k| !self.open_before.contains(k)) {
            self.tab = Some(new);
        }
        if self.tab.is_none_or(|t| !open.contains(&t)) {
            self.tab = open.last().copied();
        }
        self.open_before = open.to_vec();
    }
}

/// What draws one bar, panel or window: called once a frame, with the commands' list.
pub type Bar<'a> = Box<dyn FnOnce(&mut egui::Ui, &mut Vec<UiCommand>) + 'a>;

/// Content of one side panel.
pub struct SidePanel<'a> {
    pub kind: SidePanelKind,
    /// Its tab's label when the panels are collapsed into tabs.
    pub tab: &'static str,
    pub add: Bar<'a>,
}

/// What the shell shows this frame; `None` for what is closed.
pub struct ShellContent<'a> {
    pub top_bar: Bar<'a>,
    pub hall_bar: Option<Bar<'a>>,
    pub kpi_strip: Option<Bar<'a>>,
    /// The timeline (above the status bar), when the window records a history.
    pub timeline: Option<Bar<'a>>,
    pub status_bar: Bar<'a>,
    /// The open side panels, any order.
    pub side: Vec<SidePanel<'a>>,
    pub steward: Option<Bar<'a>>,
}

/// The steward window's title (also its egui id).
pub const STEWARD_TITLE: &str = "Data steward 数据治理";

/// Lays out the whole shell on the window and returns the 3D view's rect (points).
pub fn show_shell(
    ctx: &egui::Context,
    layout: &mut ShellLayout,
    content: ShellContent<'_>,
    out: &mut Vec<UiCommand>,
) -> egui::Rect {
    let screen = ctx.viewport_rect();
    let mut root = egui::Ui::new(
        ctx.clone(),
        "zhongshu-root".into(),
        egui::UiBuilder::new()
            .layer_id(egui::LayerId::background())
            .max_rect(screen),
    );
    let ShellContent {
        top_bar,
        hall_bar,
        kpi_strip,
        timeline,
        status_bar,
        mut side,
        steward,
    } = content;
    egui::Panel::top("top-bar").show(&mut root, |ui| top_bar(ui, out));
    if let Some(hall_bar) = hall_bar {
        egui::Panel::top("hall-bar").show(&mut root, |ui| hall_bar(ui, out));
    }
    if let Some(kpi_strip) = kpi_strip {
        egui::Panel::top("kpi-strip").show(&mut root, |ui| kpi_strip(ui, out));
    }
    egui::Panel::bottom("status-bar").show(&mut root, |ui| status_bar(ui, out));
    if let Some(timeline) = timeline {
        egui::Panel::bottom("timeline").show(&mut root, |ui| timeline(ui, out));
    }
    let below_bars = root.available_rect_before_wrap();

    // Drawing order: the left panel, then the right ones from the edge inwards.
    side.sort_by_key(|p| p.kind.slot());
    let open: Vec<SidePanelKind> = side.iter().map(|p| p.kind).collect();
    layout.choose_tab(&open);
    let mut panels = Vec::new();
    let tabs = match layout.plan(below_bars.width(), &open) {
        Plan::Side(widths) => {
            for (panel, (kind, width, max)) in side.into_iter().zip(widths) {
                let min = kind.min_width().min(width);
                let rect = side_panel(
                    &mut root,
                    layout,
                    kind.id(),
                    kind.right(),
                    kind.slot(),
                    width,
                    min..=max,
                    |ui| (panel.add)(ui, out),
                );
                panels.push((kind, rect));
            }
            false
        }
        Plan::Tabs { width, max } => {
            let active = layout.tab;
            let mut chosen = active;
            let labels: Vec<(SidePanelKind, &'static str)> =
                side.iter().map(|p| (p.kind, p.tab)).collect();
            let panel = side.into_iter().find(|p| Some(p.kind) == active);
            let rect = side_panel(
                &mut root,
                layout,
                "side-tabs",
                false,
                TABS_SLOT,
                width,
                TABS_MIN.min(width)..=max.max(width),
                |ui| {
                    ui.horizontal_wrapped(|ui| {
                        for (kind, label) in &labels {
                            if ui.selectable_label(chosen == Some(*kind), *label).clicked() {
                                chosen = Some(*kind);
                            }
                        }
                    });
                    ui.separator();
                    if let Some(panel) = panel {
                        (panel.add)(ui, out);
                    }
                },
            );
            layout.tab = chosen;
            if let Some(kind) = active {
                panels.push((kind, rect));
            }
            true
        }
    };
    let view = root.available_rect_before_wrap();

    let mut steward_rect = None;
    if let Some(steward) = steward {
        // Below the bars (never over the KPIs or its own toggle), inside the window.
        let area = below_bars.shrink(4.0);
        let mut open = true;
        let shown = egui::Window::new(STEWARD_TITLE)
            .id(egui::Id::new("steward-window"))
            .open(&mut open)
            .constrain_to(area)
            .default_pos(view.left_top() + egui::vec2(8.0, 8.0))
            .default_width((area.width() - 16.0).clamp(0.0, 900.0))
            .default_height(area.height() * 0.8)
            .max_width(area.width())
            .max_height(area.height())
            .scroll([true, true])
            .show(ctx, |ui| steward(ui, out));
        steward_rect = shown.map(|r| r.response.rect);
        if !open {
            out.push(UiCommand::CloseSteward);
        }
    }
    layout.last = LaidOut {
        screen,
        below_bars,
        view,
        panels,
        tabs,
        steward: steward_rect,
    };
    view
}

/// One resizable side panel drawn `width` wide; a width the operator drags it to is
/// kept as the panel's preferred width.
#[allow(clippy::too_many_arguments)]
fn side_panel(
    root: &mut egui::Ui,
    layout: &mut ShellLayout,
    id: &'static str,
    right: bool,
    slot: usize,
    width: f32,
    range: std::ops::RangeInclusive<f32>,
    add: impl FnOnce(&mut egui::Ui),
) -> egui::Rect {
    let egui_id = egui::Id::new(id);
    let ctx = root.ctx().clone();
    // egui keeps the last drawn width (a narrow window's, too): draw ours instead.
    ctx.data_mut(|d| {
        d.insert_persisted(
            egui_id,
            egui::PanelState {
                outer_rect: egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(width, 1.0)),
            },
        )
    });
    let panel = if right {
        egui::Panel::right(id)
    } else {
        egui::Panel::left(id)
    };
    let rect = panel
        .resizable(true)
        .size_range(range)
        .show(root, |ui| {
            // The panel is as wide as planned, neither narrower (short content) nor
            // wider (a row that does not fit is clipped, never widens the panel).
            let inner = ui.max_rect();
            ui.set_min_width(inner.width());
            let mut content = ui.new_child(
                egui::UiBuilder::new()
                    .id_salt(id)
                    .max_rect(inner)
                    .layout(egui::Layout::top_down(egui::Align::Min)),
            );
            content.set_clip_rect(content.clip_rect().intersect(inner));
            add(&mut content);
        })
        .response
        .rect;
    // A different width stored now is the operator's drag (egui stores on release).
    if let Some(state) = egui::PanelState::load(&ctx, egui_id) {
        let stored = state.outer_rect.width();
        if (stored - width).abs() > 1.0 {
            layout.preferred[slot] = Some(stored);
        }
    }
    rect
}

#[cfg(test)]
mod tests {
    use super::SidePanelKind::*;
    use super::*;

    fn widths(plan: &Plan) -> Vec<f32> {
        match plan {
            Plan::Side(w) => w.iter().map(|x| x.1).collect(),
            Plan::Tabs { width, .. } => vec![*width],
        }
    }

    #[test]
    fn panels_leave_the_map_its_share_and_collapse_into_tabs_when_narrow() {
        let layout = ShellLayout::default();
        for width in [640.0, 800.0, 1024.0, 1280.0, 1600.0, 1920.0, 3840.0] {
            for open in [
                vec![Layers],
                vec![Layers, Desk],
                vec![Layers, Inspector],
                vec![Layers, Desk, Inspector],
            ] {
                let plan = layout.plan(width, &open);
                let used: f32 = widths(&plan).iter().sum();
                assert!(
                    used <= width * (1.0 - MAP_MIN_SHARE) + 0.01,
                    "{width}: {open:?} take {used}"
                );
                if let Plan::Side(w) = &plan {
                    for &(kind, w, max) in w {
                        assert!(
                            w >= kind.min_width().min(width * 0.6) - 0.01,
                            "{kind:?} {w}"
                        );
                        assert!(max >= w);
                    }
                }
            }
        }
        assert!(matches!(
            layout.plan(800.0, &[Layers, Desk, Inspector]),
            Plan::Tabs { .. }
        ));
        assert!(matches!(
            layout.plan(1600.0, &[Layers, Desk, Inspector]),
            Plan::Side(_)
        ));
        // On a wide window the defaults stand.
        assert_eq!(
            widths(&layout.plan(3840.0, &[Layers, Desk, Inspector])),
            vec![270.0, 430.0, 340.0]
        );
    }

    #[test]
    fn a_new_panel_takes_the_tab_and_a_closed_one_gives_it_back() {
        let mut layout = ShellLayout::default();
        layout.choose_tab(&[Layers]);
        assert_eq!(layout.tab, Some(Layers));
        // A click on the map that changes a panel behind another brings it forward.
        let mut picked = ShellLayout::default();
        picked.choose_tab(&[Layers, Desk, Inspector]);
        picked.show_first(Desk);
        picked.choose_tab(&[Layers, Desk, Inspector]);
        assert_eq!(picked.tab, Some(Desk));
        picked.show_first(Inspector);
        picked.choose_tab(&[Layers, Desk, Inspector]);
        assert_eq!(picked.tab, Some(Inspector));
        layout.choose_tab(&[Layers, Desk]);
        assert_eq!(layout.tab, Some(Desk));
        layout.tab = Some(Layers);
        layout.choose_tab(&[Layers, Desk]);
        assert_eq!(layout.tab, Some(Layers), "the operator's choice stays");
        layout.choose_tab(&[Layers, Desk, Inspector]);
        assert_eq!(layout.tab, Some(Inspector));
        layout.choose_tab(&[Layers, Desk]);
        assert_eq!(layout.tab, Some(Desk));
    }
}

/// The whole shell at wall and laptop sizes, with the real panels' content.
#[cfg(test)]
mod shell_tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;
    use crate::app::camera::CameraRig;
    use crate::app::desk_ui::{DeskCommand, DeskState, DeskView, desk_ui};
    use crate::app::scene::{LayerVisibility, SceneStats};
    use crate::app::ui::{
        inspector_ui, kpi_strip_ui, kpi_value_size, layer_panel_ui, status_bar_ui, top_bar_ui,
    };
    use crate::app::widgets::panel_header;
    use crate::dispatch::Role;
    use crate::dispatch::book::{Actor, Book, Command, NewIncident, Severity};
    use crate::dispatch::config::DispatchConfig;
    use crate::feeds::Domain;
    use crate::feeds::config::FeedConfig;
    use crate::governance::health::Ingest;
    use crate::governance::reconcile::Reconciliation;
    use crate::map::CityMap;
    use crate::state::kpi::{CityKpis, Excluded};

    const NOW: i64 = 1_795_946_400_000;

    /// The shell's clock in these tests: Shanghai's.
    fn city_time() -> crate::clock::CityTime {
        crate::clock::CityTime::from_flag("Asia/Shanghai").unwrap()
    }
    /// A CAP headline as long as real ones are, with no break a panel could use.
    const HEADLINE: &str = "Severe thunderstorm warning issued for Helsinki centre, Kamppi, Kluuvi, Kruununhaka and Katajanokka until 18:00 local time: hail up to 4 cm, gusts to 30 m/s, flash flooding of underpasses";

    struct Shell {
        map: CityMap,
        layers: LayerVisibility,
        rig: CameraRig,
        kpis: CityKpis,
        layout: ShellLayout,
        building: Option<usize>,
        desk_open: bool,
        steward_open: bool,
        book: Book,
        actor: Actor,
        selected: Option<String>,
        desk: DeskState,
        desk_out: Vec<DeskCommand>,
        feeds: Vec<FeedConfig>,
        ingest: Ingest,
        reconciliation: Reconciliation,
        styled: bool,
    }

    fn shell(desk_open: bool, building: bool, steward_open: bool) -> Shell {
        let map = crate::map::load_default().unwrap();
        let rig = CameraRig::for_bounds(map.local_bounds());
        let building = building.then(|| {
            map.buildings
                .iter()
                .position(|b| b.id == "way/122595241")
                .unwrap()
        });
        let mut book = Book::new(DispatchConfig::default_config());
        let actor = Actor::new("li.wei", Role::Dispatcher, None);
        let new = NewIncident {
            kind: "storm".into(),
            title: HEADLINE.into(),
            domain: Domain::Safety,
            severity: Severity::Severe,
            lon: 24.94,
            lat: 60.17,
            source: "cap".into(),
            key: None,
        };
        let events = book
            .plan(&Command::ReportIncident(new), &actor, NOW)
            .unwrap();
        for e in &events {
            book.apply(e, NOW, &actor.name, actor.role);
        }
        let selected = book.incidents.last().map(|i| i.id.clone());
        let feeds = crate::feeds::sim_source::default_sim_feeds();
        let (_tx, rx) = std::sync::mpsc::channel();
        let ingest = Ingest::new(&feeds, rx);
        Shell {
            map,
            layers: LayerVisibility::default(),
            rig,
            kpis: CityKpis {
                mean_road_speed_kmh: Some(31.4),
                congestion_index: Some(0.22),
                mean_aqi: Some(41.0),
                max_aqi: Some(97.0),
                open_alerts: 12,
                hospital_load: Some(0.81),
                vehicles: 522,
                excluded: Excluded {
                    stale: 3,
                    quarantined: 0,
                    duplicates: 14,
                    implausible: 1,
                },
            },
            layout: ShellLayout::default(),
            building,
            desk_open,
            steward_open,
            book,
            actor,
            selected,
            desk: DeskState::default(),
            desk_out: Vec::new(),
            feeds,
            ingest,
            reconciliation: Reconciliation::default(),
            styled: false,
        }
    }

    /// One frame of the shell as `shell_ui` builds it, and its commands carried out.
    fn draw(ui: &mut egui::Ui, s: &mut Shell) {
        if !s.styled {
            crate::app::ui::install_fonts(ui.ctx());
            crate::app::theme::egui_style(ui.ctx());
            s.styled = true;
        }
        let time = &city_time();
        let mut out = Vec::new();
        let mut side = vec![SidePanel {
            kind: SidePanelKind::Layers,
            tab: "Layers 图层",
            add: Box::new(|ui, out| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    layer_panel_ui(ui, &s.map, &s.layers, &s.rig, None, out)
                });
            }),
        }];
        let desk_shown = s.desk_open;
        let desk_open = &mut s.desk_open;
        if *desk_open {
            let view = DeskView {
                book: &s.book,
                actor: &s.actor,
                now_ms: NOW,
                time,
                selected: s.selected.as_deref(),
                recommendations: &[],
                status_line: None,
                location: None,
                replay: false,
            };
            let (state, desk_out) = (&mut s.desk, &mut s.desk_out);
            side.push(SidePanel {
                kind: SidePanelKind::Desk,
                tab: "Dispatch 调度",
                add: Box::new(move |ui, _| {
                    // As desk_panel_ui draws it.
                    panel_header(
                        ui,
                        egui::RichText::new("Dispatch 指挥调度").heading(),
                        |ui| {
                            if ui.button("×").on_hover_text("Hide the desk").clicked() {
                                *desk_open = false;
                            }
                            let _ = ui.button("Sign out 退出");
                        },
                    );
                    desk_ui(ui, &view, state, desk_out);
                }),
            });
        }
        if let Some(index) = s.building {
            let map = &s.map;
            side.push(SidePanel {
                kind: SidePanelKind::Inspector,
                tab: "Building 建筑",
                add: Box::new(move |ui, out| inspector_ui(ui, map, index, out)),
            });
        }
        let stats = SceneStats {
            chunk_entities: 43,
            triangles: 41_698,
            mesh_ms: 5.0,
        };
        let (map, kpis, steward_open) = (&s.map, &s.kpis, s.steward_open);
        let (feeds, ingest, reconciliation) = (&s.feeds, &s.ingest, &s.reconciliation);
        let content = ShellContent {
            top_bar: Box::new(move |ui, out| {
                top_bar_ui(
                    ui,
                    map,
                    time,
                    &super::super::ui::TopBar {
                        now_ms: NOW,
                        demo: true,
                        steward_open,
                        desk_open: desk_shown,
                        briefing: Some(super::super::briefing_launch::BriefingState::Ready),
                        ..Default::default()
                    },
                    out,
                )
            }),
            hall_bar: None,
            kpi_strip: Some(Box::new(move |ui, _| kpi_strip_ui(ui, kpis))),
            timeline: None,
            status_bar: Box::new(move |ui, _| status_bar_ui(ui, map, &stats, 60.0)),
            side,
            steward: steward_open.then(|| -> Bar<'_> {
                Box::new(move |ui, _| {
                    crate::app::steward::steward_ui(
                        ui,
                        feeds,
                        &ingest.health,
                        &ingest.quality,
                        reconciliation,
                        NOW,
                    )
                })
            }),
        };
        show_shell(&ui.ctx().clone(), &mut s.layout, content, &mut out);
        for command in out {
            match command {
                UiCommand::ClearSelection => s.building = None,
                UiCommand::ToggleSteward => s.steward_open = !s.steward_open,
                UiCommand::CloseSteward => s.steward_open = false,
                UiCommand::ToggleDesk => s.desk_open = !s.desk_open,
                _ => {}
            }
        }
    }

    fn harness(size: (f32, f32), s: Shell) -> Harness<'static, Shell> {
        let mut h = Harness::builder()
            .with_size(egui::vec2(size.0, size.1))
            .build_ui_state(draw, s);
        h.run();
        h
    }

    fn panel(h: &Harness<'_, Shell>, kind: SidePanelKind) -> egui::Rect {
        h.state()
            .layout
            .last
            .panels
            .iter()
            .find(|p| p.0 == kind)
            .unwrap_or_else(|| panic!("{kind:?} is not shown"))
            .1
    }

    fn assert_map_keeps_its_share(h: &Harness<'_, Shell>) {
        let last = &h.state().layout.last;
        let (view, screen) = (last.view, last.screen);
        assert!(
            view.width() >= screen.width() * MAP_MIN_SHARE - 1.0,
            "the map is {view:?} of {screen:?}"
        );
        assert!(
            view.height() >= screen.height() * 0.5,
            "the map is {view:?} of {screen:?}"
        );
        for (kind, rect) in &last.panels {
            assert!(
                screen.contains_rect(*rect),
                "{kind:?} at {rect:?} leaves {screen:?}"
            );
            assert!(
                !rect.intersects(view.shrink(1.0)),
                "{kind:?} covers the map"
            );
        }
    }

    /// The panel's close button (`×`) drawn inside `rect`: the one in its header row
    /// (the desk's incident detail has a `×` of its own further down).
    fn close_in(h: &Harness<'_, Shell>, rect: egui::Rect) -> egui::Pos2 {
        let mut centres: Vec<egui::Pos2> = h
            .get_all_by_label("×")
            .map(|n| n.rect().center())
            .filter(|c| rect.contains(*c))
            .collect();
        centres.sort_by(|a, b| a.y.total_cmp(&b.y));
        let Some(&top) = centres.first() else {
            panic!("no close button in {rect:?}");
        };
        assert!(
            top.y < rect.top() + 80.0,
            "the top close button in {rect:?} is at {top:?}, not in the header"
        );
        top
    }

    fn click_at(h: &mut Harness<'_, Shell>, pos: egui::Pos2) {
        h.hover_at(pos);
        for pressed in [true, false] {
            h.event(egui::Event::PointerButton {
                pos,
                button: egui::PointerButton::Primary,
                pressed,
                modifiers: Default::default(),
            });
        }
        h.run();
    }

    #[test]
    fn at_800x600_the_panels_become_tabs_and_the_map_keeps_its_share() {
        let mut h = harness((800.0, 600.0), shell(true, true, false));
        assert!(
            h.state().layout.last.tabs,
            "three panels side by side at 800 px"
        );
        assert_map_keeps_its_share(&h);
        // The panel just opened is in front; its close button works.
        assert_eq!(h.state().layout.tab, Some(SidePanelKind::Inspector));
        let close = close_in(&h, panel(&h, SidePanelKind::Inspector));
        click_at(&mut h, close);
        assert_eq!(
            h.state().building,
            None,
            "the inspector's × did not close it"
        );
        // The desk's tab is next; its close button works too.
        assert_eq!(h.state().layout.tab, Some(SidePanelKind::Desk));
        assert_map_keeps_its_share(&h);
        let close = close_in(&h, panel(&h, SidePanelKind::Desk));
        click_at(&mut h, close);
        assert!(!h.state().desk_open, "the desk's × did not close it");
        // One panel left: no tabs.
        h.run();
        assert!(!h.state().layout.last.tabs);
        assert_map_keeps_its_share(&h);
    }

    #[test]
    fn the_tabs_switch_panels() {
        let mut h = harness((800.0, 600.0), shell(true, true, false));
        h.get_by_label("Dispatch 调度").click();
        h.run();
        assert_eq!(h.state().layout.tab, Some(SidePanelKind::Desk));
        h.get_by_label("Incidents 事件");
        h.get_by_label("Layers 图层").click();
        h.run();
        assert_eq!(h.state().layout.tab, Some(SidePanelKind::Layers));
        h.get_by_label("Whole city 全城");
        assert_map_keeps_its_share(&h);
    }

    #[test]
    fn on_wide_windows_the_panels_sit_side_by_side_and_no_panel_covers_a_close_button() {
        for (size, ppp) in [
            ((1600.0, 900.0), 1.0),
            ((3840.0, 2160.0), 1.0),
            ((1920.0, 1080.0), 2.0),
        ] {
            let mut h = Harness::builder()
                .with_size(egui::vec2(size.0, size.1))
                .with_pixels_per_point(ppp)
                .build_ui_state(draw, shell(true, true, false));
            h.run();
            assert!(!h.state().layout.last.tabs, "{size:?}");
            assert_map_keeps_its_share(&h);
            let [layers, desk, inspector] = [
                SidePanelKind::Layers,
                SidePanelKind::Desk,
                SidePanelKind::Inspector,
            ]
            .map(|k| panel(&h, k));
            for (a, b) in [(layers, desk), (layers, inspector), (desk, inspector)] {
                assert!(
                    !a.shrink(1.0).intersects(b.shrink(1.0)),
                    "{size:?}: {a:?} and {b:?} overlap"
                );
            }
            // The long headline does not widen the desk past its share.
            assert!(
                desk.width() <= size.0 * SidePanelKind::Desk.max_share() + 1.0,
                "{size:?}: the desk is {desk:?}"
            );
            let close = close_in(&h, inspector);
            click_at(&mut h, close);
            assert_eq!(h.state().building, None, "{size:?}: inspector's ×");
            let close = close_in(&h, panel(&h, SidePanelKind::Desk));
            click_at(&mut h, close);
            assert!(!h.state().desk_open, "{size:?}: desk's ×");
        }
    }

    const ALL: [SidePanelKind; 3] = [
        SidePanelKind::Layers,
        SidePanelKind::Desk,
        SidePanelKind::Inspector,
    ];

    fn drag(h: &mut Harness<'_, Shell>, from: egui::Pos2, by: egui::Vec2) {
        h.hover_at(from);
        h.run();
        let button = |pos, pressed| egui::Event::PointerButton {
            pos,
            button: egui::PointerButton::Primary,
            pressed,
            modifiers: Default::default(),
        };
        h.event(button(from, true));
        h.run();
        for step in 1..=6 {
            h.hover_at(from + by * step as f32 / 6.0);
            h.run();
        }
        h.event(button(from + by, false));
        h.run();
    }

    #[test]
    fn widths_are_bounded_and_come_back_after_the_window_shrinks() {
        let mut h = harness((1600.0, 900.0), shell(true, false, false));
        // The operator drags the desk's inner edge 60 px wider.
        let desk = panel(&h, SidePanelKind::Desk);
        drag(
            &mut h,
            egui::pos2(desk.left(), desk.center().y),
            egui::vec2(-60.0, 0.0),
        );
        let dragged = panel(&h, SidePanelKind::Desk).width();
        assert!(
            (dragged - (desk.width() + 60.0)).abs() <= 2.0,
            "dragged from {} to {dragged}",
            desk.width()
        );
        assert_eq!(
            h.state().layout.preferred(SidePanelKind::Desk),
            Some(dragged)
        );
        // A building is picked: three panels, each within its bounds.
        h.state_mut().building = h
            .state()
            .map
            .buildings
            .iter()
            .position(|b| b.id == "way/122595241");
        h.run();
        let widths = |h: &Harness<'_, Shell>| ALL.map(|k| panel(h, k).width());
        let before = widths(&h);
        for (kind, w) in ALL.iter().zip(before) {
            assert!(
                w <= 1600.0 * kind.max_share() + 1.0 && w >= kind.min_width() - 1.0,
                "{kind:?} is {w} wide"
            );
        }
        // Narrow: tabs. Wide again: the same widths, the dragged one included.
        for size in [(800.0, 600.0), (1100.0, 700.0), (1280.0, 720.0)] {
            h.set_size(egui::vec2(size.0, size.1));
            h.run();
            assert_map_keeps_its_share(&h);
        }
        h.set_size(egui::vec2(1600.0, 900.0));
        h.run();
        assert_map_keeps_its_share(&h);
        let after = widths(&h);
        for (b, a) in before.iter().zip(after) {
            assert!((b - a).abs() <= 1.0, "{before:?} became {after:?}");
        }
        assert_eq!(
            h.state().layout.preferred(SidePanelKind::Desk),
            Some(dragged)
        );
    }

    /// Height of one line of `size`-point proportional text.
    fn line(h: &Harness<'_, Shell>, size: f32) -> f32 {
        h.ctx
            .fonts_mut(|f| f.row_height(&egui::FontId::proportional(size)))
    }

    /// No two of `rects` overlap.
    fn assert_apart(rects: &[egui::Rect]) {
        for (i, a) in rects.iter().enumerate() {
            for b in &rects[i + 1..] {
                assert!(
                    !a.shrink(1.0).intersects(b.shrink(1.0)),
                    "{a:?} overlaps {b:?}"
                );
            }
        }
    }

    #[test]
    fn on_a_narrow_bar_the_demo_warning_and_both_toggles_stay_on_screen() {
        let h = harness((480.0, 600.0), shell(true, true, false));
        let screen = h.state().layout.last.screen;
        let mut top_bar = Vec::new();
        for label in ["治理", "调度", "DEMO 演示"] {
            let r = h.get_all_by_label(label).next().unwrap().rect();
            assert!(screen.contains_rect(r), "{label} is off screen: {r:?}");
            top_bar.push(r);
        }
        assert_apart(&top_bar);
    }

    #[test]
    fn at_800_px_the_clock_and_the_kpis_stay_on_one_line_each() {
        let h = harness((800.0, 600.0), shell(true, true, false));
        let screen = h.state().layout.last.screen;
        let clock = h.get_by_label(&city_time().text(NOW)).rect();
        assert!(
            clock.height() <= line(&h, 17.0) * 1.5,
            "the clock wraps: {clock:?}"
        );
        assert!(
            screen.contains_rect(clock),
            "the clock is off screen: {clock:?}"
        );
        let mut top_bar = vec![clock];
        for label in ["Data steward 数据治理", "Dispatch 指挥调度", "DEMO 演示"] {
            let r = h.get_all_by_label(label).next().unwrap().rect();
            assert!(r.height() <= line(&h, 20.0) * 1.5, "{label} wraps: {r:?}");
            assert!(screen.contains_rect(r), "{label} is off screen: {r:?}");
            top_bar.push(r);
        }
        assert_apart(&top_bar);
        let size = kpi_value_size(600.0);
        for label in [
            "Road speed 路网均速",
            "Congestion 拥堵指数",
            "AQI 空气质量",
            "Open alerts 未结告警",
            "Hospital load 医院负荷",
            "Units 在途车辆",
        ] {
            let r = h.get_by_label(label).rect();
            assert!(r.height() <= line(&h, 13.5) * 1.5, "{label} wraps: {r:?}");
            assert!(screen.contains_rect(r), "{label} is off screen: {r:?}");
        }
        for value in ["31 km/h", "22%", "41 (max 97)", "12", "81%", "522"] {
            let r = h.get_by_label(value).rect();
            assert!(r.height() <= line(&h, size) * 1.5, "{value} wraps: {r:?}");
            assert!(screen.contains_rect(r), "{value} is off screen: {r:?}");
        }
    }

    #[test]
    fn on_a_4k_wall_the_kpi_values_are_a_share_of_the_screen_height() {
        // A 4K screen at scale 1 (3840×2160 points) and at scale 2 (1920×1080 points).
        for (points, ppp) in [((3840.0, 2160.0), 1.0), ((1920.0, 1080.0), 2.0)] {
            let mut h = Harness::builder()
                .with_size(egui::vec2(points.0, points.1))
                .with_pixels_per_point(ppp)
                .build_ui_state(draw, shell(false, false, false));
            h.run();
            let value = h.get_by_label("31 km/h").rect();
            let pixels = value.height() * ppp;
            assert!(
                pixels >= 0.025 * 2160.0,
                "{points:?} at {ppp}×: the KPI value is {pixels} px of 2160"
            );
            let label = h.get_by_label("Road speed 路网均速").rect();
            assert!(label.height() * ppp >= 0.012 * 2160.0, "{label:?}");
        }
    }

    #[test]
    fn the_steward_window_stays_below_the_bars_inside_the_screen_and_closes() {
        for size in [(800.0, 600.0), (3840.0, 2160.0)] {
            let mut h = harness(size, shell(true, true, true));
            let last = h.state().layout.last.clone();
            let window = last.steward.expect("the steward window is shown");
            assert!(
                last.screen.contains_rect(window),
                "{size:?}: {window:?} leaves {:?}",
                last.screen
            );
            assert!(
                window.top() >= last.below_bars.top(),
                "{size:?}: {window:?} covers the bars ending at {}",
                last.below_bars.top()
            );
            // Its toggle in the top bar stays uncovered and shows it open.
            let toggle = h
                .get_all_by_label(STEWARD_TITLE)
                .map(|n| n.rect())
                .find(|r| r.bottom() <= last.below_bars.top())
                .expect("the toggle is in the top bar");
            assert!(
                !toggle.intersects(window),
                "{size:?}: {window:?} covers {toggle:?}"
            );
            // The title bar's close button closes it, and the toggle agrees.
            h.get_by_label("Close window").click();
            h.run();
            assert!(!h.state().steward_open, "{size:?}: not closed");
            assert!(h.state().layout.last.steward.is_none());
            h.get_by_label(STEWARD_TITLE).click();
            h.run();
            assert!(
                h.state().steward_open,
                "{size:?}: the toggle does not reopen it"
            );
            assert!(h.state().layout.last.steward.is_some());
        }
    }
}
