//! The dispatcher's desk: incidents by urgency, one incident in detail (status
//! actions, its orders, unit recommendations, the playbook editor, the timeline), the
//! board of open orders by department, and the form to report an incident.
//!
//! Pure functions over the dispatch book. Nothing here changes the book: every change
//! is pushed as a [`DeskCommand`] for the integrator to run through the durable core.
//! Buttons are enabled by a dry run of the command ([`Book::plan`]), so the reason
//! shown on a disabled button is the core's own; leaders see everything, read-only.

use bevy::prelude::Resource;
use bevy_egui::egui;

use super::theme;
use super::widgets::{age_text, domain_label};
use crate::clock::CityTime;
use crate::dispatch::book::{
    Actor, Book, Command, Incident, NewIncident, NewOrder, Order, Severity,
};
use crate::dispatch::config::{DispatchConfig, Endpoint};
use crate::dispatch::recommend::EMERGENCY_KINDS;
use crate::dispatch::{Action, IncidentStatus, OrderStatus, Role, is_allowed};
use crate::feeds::Domain;

/// What the dispatcher asked for through the desk.
#[derive(Clone, Debug, PartialEq)]
pub enum DeskCommand {
    /// Run through `Dispatcher::execute` with the signed-in actor.
    Execute(Command),
    SelectIncident(Option<String>),
    FlyTo {
        lon: f64,
        lat: f64,
    },
    /// Which unit kind to rank; `None` = the playbook's kinds.
    SetRecommendKind(Option<String>),
    /// Play the incident back from five minutes before it was raised to its closure.
    ReplayIncident(String),
}

/// Everything the desk reads, for one frame.
#[derive(Clone, Copy)]
pub struct DeskView<'a> {
    pub book: &'a Book,
    pub actor: &'a Actor,
    pub now_ms: i64,
    /// The city's time zone, which every time shown is in.
    pub time: &'a CityTime,
    /// The selected incident's id.
    pub selected: Option<&'a str>,
    /// Units ranked for the selected incident.
    pub recommendations: &'a [RecommendationView],
    /// The last error or information to show.
    pub status_line: Option<&'a str>,
    /// Where a new incident is reported (lon, lat): the selected building's
    /// centroid or the map centre; `None` when nothing is picked.
    pub location: Option<(f64, f64)>,
    /// The book is the past's (the timeline's replay): read, never written to.
    pub replay: bool,
}

/// One ranked unit for the selected incident.
#[derive(Clone, Debug, PartialEq)]
pub struct RecommendationView {
    pub unit_id: String,
    pub kind: String,
    pub eta_s: f64,
    pub distance_m: f64,
}

/// Which part of the desk is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeskTab {
    #[default]
    Incidents,
    Orders,
    New,
}

/// Filters of the incident list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IncidentFilter {
    /// Show resolved and closed incidents too (default: open only).
    pub all: bool,
    pub domain: Option<Domain>,
    /// Matched against id, title and kind, ignoring case.
    pub search: String,
}

/// One order of the playbook draft.
#[derive(Clone, Debug, PartialEq)]
pub struct DraftOrder {
    pub department: String,
    pub instruction: String,
    pub deadline_min: f64,
    pub include: bool,
}

/// The orders being prepared for one incident, pre-filled from its playbook.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderDraft {
    pub incident: String,
    /// The playbook's title, when the incident's kind has one.
    pub playbook: Option<String>,
    pub orders: Vec<DraftOrder>,
}

impl OrderDraft {
    /// The playbook's orders for the incident's kind, all ticked; empty without one.
    pub fn for_incident(config: &DispatchConfig, incident: &Incident) -> Self {
        let playbook = config.playbook(&incident.kind);
        Self {
            incident: incident.id.clone(),
            playbook: playbook.map(|p| p.title.clone()),
            orders: playbook
                .map(|p| {
                    p.orders
                        .iter()
                        .map(|o| DraftOrder {
                            department: o.department.clone(),
                            instruction: o.instruction.clone(),
                            deadline_min: o.deadline_min,
                            include: true,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The ticked orders, with deadlines counted from `now_ms`.
    pub fn new_orders(&self, now_ms: i64) -> Vec<NewOrder> {
        self.orders
            .iter()
            .filter(|o| o.include)
            .map(|o| NewOrder {
                department: o.department.clone(),
                instruction: o.instruction.trim().to_string(),
                deadline_ms: now_ms + (o.deadline_min * 60_000.0).round() as i64,
            })
            .collect()
    }
}

/// The new-incident form.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentForm {
    /// A playbook kind or free text.
    pub kind: String,
    /// Blank: the playbook's title (or the kind) is used.
    pub title: String,
    pub severity: Severity,
    /// Used when the kind has no playbook to take the domain from.
    pub domain: Domain,
}

impl Default for IncidentForm {
    fn default() -> Self {
        Self {
            kind: String::new(),
            title: String::new(),
            severity: Severity::Moderate,
            domain: Domain::Urban,
        }
    }
}

/// UI-only state kept between frames (a bevy resource).
#[derive(Resource, Clone, Debug, Default, PartialEq)]
pub struct DeskState {
    pub tab: DeskTab,
    pub filter: IncidentFilter,
    /// The order board shows finished orders too.
    pub board_all: bool,
    /// The playbook draft of the selected incident; rebuilt when the selection changes.
    pub draft: Option<OrderDraft>,
    pub form: IncidentForm,
    /// The unit kind chosen in the recommendation list (`None` = the playbook's).
    pub recommend_kind: Option<String>,
    /// The incident list for a book revision and filter, most urgent first.
    pub list: Option<((u64, IncidentFilter), Vec<usize>)>,
    /// The order board for a book revision and the Open/All choice.
    pub board: Option<((u64, bool), Vec<BoardGroup>)>,
    /// Heights of order rows as last drawn, so rows out of sight are only counted.
    pub row_heights: std::collections::HashMap<String, f32>,
    /// Each order's department (index into the configuration), for the board.
    pub order_departments: Vec<u16>,
}

/// One department on the order board: the rows shown (indices into the book's
/// orders) and how many orders it has on the board in all.
#[derive(Clone, Debug, PartialEq)]
pub struct BoardGroup {
    /// Index into the configuration's departments.
    pub department: usize,
    pub rows: Vec<usize>,
    pub total: usize,
}

/// The board's rows per department, in configuration order: orders in play by
/// nearest deadline, then (with `all`) finished ones, the latest first. One pass
/// over the orders and a partial sort per department, so a busy day's book is cheap.
pub fn board_groups(book: &Book, all: bool, departments_of: &mut Vec<u16>) -> Vec<BoardGroup> {
    let departments = &book.config.departments;
    // Each order's department as an index, kept between calls: orders are only ever
    // appended, and an order keeps its department.
    if departments_of.len() > book.orders.len() {
        departments_of.clear();
    }
    if departments_of.len() < book.orders.len() {
        let index: std::collections::HashMap<&str, u16> = departments
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i as u16))
            .collect();
        departments_of.extend(book.orders[departments_of.len()..].iter().map(|o| {
            index
                .get(o.department.as_str())
                .copied()
                .unwrap_or(u16::MAX)
        }));
    }
    // Orders in play by nearest deadline, then finished ones, the latest first.
    let mut by: Vec<Vec<(bool, i64, usize)>> = vec![Vec::new(); departments.len()];
    for (i, (o, &d)) in book.orders.iter().zip(departments_of.iter()).enumerate() {
        if d == u16::MAX {
            continue;
        }
        let key = if in_play(o.status) {
            (false, o.deadline_ms, i)
        } else if all {
            let finished = o.steps.last().map_or(o.deadline_ms, |s| s.at_ms);
            (true, -finished, usize::MAX - i)
        } else {
            continue;
        };
        by[d as usize].push(key);
    }
    by.into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .map(|(department, mut rows)| {
            let total = rows.len();
            if rows.len() > BOARD_ROWS_PER_DEPARTMENT {
                rows.select_nth_unstable(BOARD_ROWS_PER_DEPARTMENT - 1);
                rows.truncate(BOARD_ROWS_PER_DEPARTMENT);
            }
            rows.sort_unstable();
            BoardGroup {
                department,
                rows: rows
                    .into_iter()
                    .map(|(finished, _, i)| if finished { usize::MAX - i } else { i })
                    .collect(),
                total,
            }
        })
        .collect()
}

/// Shown on every button a leader cannot press.
pub const READ_ONLY: &str = "Leaders watch read-only 领导只读";
/// Why nothing is issued from the past.
pub const REPLAY_READ_ONLY: &str =
    "Replay: the book as it stood then; commands are disabled until Live 回放只读";

/// The whole desk: who is signed in, the last message, and the three tabs.
pub fn desk_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    ui.horizontal_wrapped(|ui| {
        ui.label(egui::RichText::new("Signed in 登录").color(theme::MUTED));
        ui.label(egui::RichText::new(&view.actor.name).strong());
        chip(ui, role_label(view.actor.role), theme::ACCENT);
        if let Some(d) = &view.actor.department {
            let name = view
                .book
                .config
                .department(d)
                .map_or(d.as_str(), |d| &d.name);
            ui.label(egui::RichText::new(name).color(theme::MUTED));
        }
    });
    if let Some(line) = view.status_line {
        ui.add(egui::Label::new(egui::RichText::new(line).color(status_colour(line))).wrap());
    }
    ui.horizontal(|ui| {
        ui.selectable_value(&mut state.tab, DeskTab::Incidents, "Incidents 事件");
        ui.selectable_value(&mut state.tab, DeskTab::Orders, "Orders 指令");
        ui.selectable_value(&mut state.tab, DeskTab::New, "New 上报");
        let overdue = view
            .book
            .orders
            .iter()
            .filter(|o| is_overdue(o, view.now_ms))
            .count();
        if overdue > 0 {
            ui.label(egui::RichText::new(format!("{overdue} overdue 超时")).color(theme::ALARM));
        }
    });
    ui.separator();
    match state.tab {
        DeskTab::Incidents => {
            incident_list_ui(ui, view, state, out);
            ui.separator();
            egui::ScrollArea::vertical()
                .id_salt("desk-incident-detail")
                .show(ui, |ui| incident_detail_ui(ui, view, state, out));
        }
        DeskTab::Orders => {
            egui::ScrollArea::vertical()
                .id_salt("desk-order-board")
                .show(ui, |ui| order_board_ui(ui, view, state, out));
        }
        DeskTab::New if view.replay => {
            ui.label(egui::RichText::new(REPLAY_READ_ONLY).color(theme::WARN));
        }
        DeskTab::New => new_incident_ui(ui, view, state, out),
    }
}

/// Refusals and errors in amber, anything else (information) in green.
fn status_colour(line: &str) -> egui::Color32 {
    let lower = line.trim_start().to_lowercase();
    if lower.starts_with("refused") || lower.starts_with("error") {
        theme::WARN
    } else {
        theme::GOOD
    }
}

/// Incidents, most urgent first, with filters; a click selects one.
pub fn incident_list_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    let list_height = (ui.available_height() * 0.35).max(120.0);
    let filter = &mut state.filter;
    ui.horizontal_wrapped(|ui| {
        open_all_toggle(ui, &mut filter.all);
        egui::ComboBox::from_id_salt("desk-domain-filter")
            .selected_text(filter.domain.map_or("All domains 全部领域", domain_label))
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut filter.domain, None, "All domains 全部领域");
                for d in Domain::ALL {
                    ui.selectable_value(&mut filter.domain, Some(d), domain_label(d));
                }
            });
        ui.add(
            egui::TextEdit::singleline(&mut filter.search)
                .hint_text("Search 搜索")
                .desired_width(140.0),
        );
    });
    let book = view.book;
    // Sorting thousands of incidents every frame would stall the wall: the list is
    // recomputed only when the book or the filter changes, and only visible rows drawn.
    let key = (book.revision, filter.clone());
    if state.list.as_ref().map(|(k, _)| k) != Some(&key) {
        let rows: Vec<usize> = book
            .by_urgency()
            .iter()
            .copied()
            .filter(|&i| incident_matches(&key.1, &book.incidents[i]))
            .collect();
        state.list = Some((key, rows));
    }
    let rows = state.list.as_ref().map_or(&[][..], |(_, r)| r.as_slice());
    if rows.is_empty() {
        ui.label(egui::RichText::new("No incidents 无事件").color(theme::MUTED));
        return;
    }
    if rows.len() > 8 {
        ui.label(
            egui::RichText::new(format!("{} incidents", rows.len()))
                .small()
                .color(theme::MUTED),
        );
    }
    let row_height = ui.spacing().interact_size.y + ui.spacing().item_spacing.y;
    egui::ScrollArea::vertical()
        .id_salt("desk-incident-list")
        .max_height(list_height)
        .auto_shrink([false, true])
        .show_rows(ui, row_height, rows.len(), |ui, range| {
            for &i in &rows[range] {
                incident_row_ui(ui, view, &book.incidents[i], out);
            }
        });
}

fn incident_matches(filter: &IncidentFilter, inc: &Incident) -> bool {
    let search = filter.search.trim().to_lowercase();
    (filter.all || inc.is_open())
        && filter.domain.is_none_or(|d| d == inc.domain)
        && (search.is_empty()
            || [&inc.id, &inc.title, &inc.kind]
                .iter()
                .any(|s| s.to_lowercase().contains(&search)))
}

fn incident_row_ui(ui: &mut egui::Ui, view: &DeskView, inc: &Incident, out: &mut Vec<DeskCommand>) {
    ui.horizontal(|ui| {
        severity_chip(ui, inc.severity);
        // Status, age and overdue count from the right edge first; the headline is
        // cut to the room left (whole on hover), so a long one never widens the desk.
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let overdue = view
                .book
                .orders_of(inc)
                .filter(|o| is_overdue(o, view.now_ms))
                .count();
            if overdue > 0 {
                ui.label(egui::RichText::new(format!("{overdue} overdue")).color(theme::ALARM));
            }
            let age = (view.now_ms - inc.reported_ms).max(0) as f64 / 1000.0;
            ui.label(egui::RichText::new(age_text(age)).color(theme::MUTED));
            chip(ui, inc.status.label(), incident_status_colour(inc.status));
            ui.with_layout(egui::Layout::left_to_right(egui::Align::Center), |ui| {
                let selected = view.selected == Some(inc.id.as_str());
                let text = format!("{}  {}", inc.id, inc.title);
                if ui
                    .add(egui::Button::selectable(selected, text).truncate())
                    .on_hover_text(&inc.title)
                    .clicked()
                {
                    out.push(DeskCommand::SelectIncident(Some(inc.id.clone())));
                }
            });
        });
    });
}

/// The selected incident: facts, status actions, its orders, unit recommendations,
/// the playbook editor and the timeline.
pub fn incident_detail_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    let Some(inc) = view.selected.and_then(|id| view.book.incident(id)) else {
        ui.label(
            egui::RichText::new("Select an incident to see it here 请选择事件").color(theme::MUTED),
        );
        return;
    };
    incident_header_ui(ui, view, inc, out);
    incident_actions_ui(ui, view, inc, out);
    ui.separator();
    ui.label(egui::RichText::new("Orders of this incident 本事件指令").strong());
    let mut any = false;
    for order in view.book.orders_of(inc) {
        any = true;
        let department = department_name(&view.book.config, &order.department);
        order_row_ui(ui, view, order, department, out);
    }
    if !any {
        ui.label(egui::RichText::new("No orders yet 暂无指令").color(theme::MUTED));
    }
    ui.separator();
    if view.replay {
        // What was done is the point of a replay: the incident's timeline first;
        // recommending and issuing belong to now.
        timeline_ui(ui, view.time, inc);
        return;
    }
    recommendations_ui(ui, view, inc, state, out);
    ui.separator();
    playbook_editor_ui(ui, view, inc, state, out);
    ui.separator();
    timeline_ui(ui, view.time, inc);
}

fn incident_header_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    inc: &Incident,
    out: &mut Vec<DeskCommand>,
) {
    // The buttons first, so a long headline elides instead of pushing them out.
    let title = egui::RichText::new(&inc.title).heading();
    super::widgets::panel_header(ui, title, |ui| {
        if ui.button("×").clicked() {
            out.push(DeskCommand::SelectIncident(None));
        }
        if ui.button("Fly to 飞至").clicked() {
            out.push(DeskCommand::FlyTo {
                lon: inc.lon,
                lat: inc.lat,
            });
        }
        if ui
            .button("Replay 回放")
            .on_hover_text(
                "Replay this incident: from five minutes before it was raised to its closure, \
                 the map and the book as they stood",
            )
            .clicked()
        {
            out.push(DeskCommand::ReplayIncident(inc.id.clone()));
        }
    });
    let kind = match view.book.config.playbook(&inc.kind) {
        Some(p) => format!("{} ({})", p.title, inc.kind),
        None => inc.kind.clone(),
    };
    egui::Grid::new("desk-incident-facts")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            let muted = |t: &str| egui::RichText::new(t).color(theme::MUTED);
            ui.label(muted("id"));
            ui.label(&inc.id);
            ui.end_row();
            ui.label(muted("kind"));
            ui.label(kind);
            ui.end_row();
            ui.label(muted("severity"));
            severity_chip(ui, inc.severity);
            ui.end_row();
            ui.label(muted("status"));
            chip(ui, inc.status.label(), incident_status_colour(inc.status));
            ui.end_row();
            ui.label(muted("domain"));
            ui.label(domain_label(inc.domain));
            ui.end_row();
            ui.label(muted("source"));
            ui.label(&inc.source);
            ui.end_row();
            ui.label(muted("location"));
            ui.label(format!("{:.5}°N {:.5}°E", inc.lat, inc.lon));
            ui.end_row();
            ui.label(muted("reported"));
            let age = (view.now_ms - inc.reported_ms).max(0) as f64 / 1000.0;
            ui.label(format!(
                "{} ({} ago)",
                view.time.time_of_day(inc.reported_ms),
                age_text(age)
            ));
            ui.end_row();
        });
}

/// Incident status actions, in lifecycle order.
const INCIDENT_ACTIONS: [(Action, &str); 5] = [
    (Action::VerifyIncident, "Verify 核实"),
    (Action::DispatchIncident, "Dispatch 派遣"),
    (Action::MarkOnScene, "On scene 到场"),
    (Action::ResolveIncident, "Resolve 办结"),
    (Action::CloseIncident, "Close 关闭"),
];

fn incident_actions_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    inc: &Incident,
    out: &mut Vec<DeskCommand>,
) {
    ui.horizontal_wrapped(|ui| {
        for (action, label) in INCIDENT_ACTIONS {
            let command = Command::Incident {
                id: inc.id.clone(),
                action,
                note: None,
            };
            command_button(ui, view, label, command, out);
        }
    });
}

/// Hand-recorded acknowledgement and progress, for departments without an endpoint.
const HAND_ACTIONS: [(Action, &str); 4] = [
    (Action::AcknowledgeOrder, "Signed for 已签收"),
    (Action::StartOrder, "Started 已开始"),
    (Action::CompleteOrder, "Done 已完成"),
    (Action::RejectOrder, "Rejected 已拒绝"),
];

/// One order: id, context (incident or department), status, countdown, urges, and the
/// buttons the signed-in person may press.
fn order_row_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    order: &Order,
    context: &str,
    out: &mut Vec<DeskCommand>,
) {
    ui.horizontal_wrapped(|ui| {
        ui.label(egui::RichText::new(&order.id).monospace());
        ui.label(egui::RichText::new(context).color(theme::MUTED));
        chip(ui, order.status.label(), order_status_colour(order.status));
        if let Some((text, colour)) = countdown(order, view.now_ms) {
            ui.label(egui::RichText::new(text).monospace().color(colour));
            // The deadline on the city's clock; the date and zone on hover.
            ui.label(
                egui::RichText::new(format!("due {}", view.time.time_of_day(order.deadline_ms)))
                    .monospace()
                    .color(theme::MUTED),
            )
            .on_hover_text(view.time.text(order.deadline_ms));
        }
        if order.urges > 0 {
            ui.label(egui::RichText::new(format!("urged {}×", order.urges)).color(theme::WARN));
        }
        if let Some(to) = &order.escalated_to {
            ui.label(egui::RichText::new(format!("→ {to}")).color(theme::WARN));
        }
    });
    ui.label(egui::RichText::new(truncate(&order.instruction, 60)).small())
        .on_hover_text(&order.instruction);
    let manual = view
        .book
        .config
        .department(&order.department)
        .is_some_and(|d| d.endpoint == Endpoint::Manual);
    let own = view.actor.role == Role::DepartmentLiaison
        && view.actor.department.as_deref() == Some(order.department.as_str());
    ui.horizontal_wrapped(|ui| {
        let order_command = |action| Command::Order {
            id: order.id.clone(),
            action,
            note: None,
        };
        command_button(ui, view, "Urge 催办", order_command(Action::UrgeOrder), out);
        command_button(
            ui,
            view,
            "Escalate 升级",
            order_command(Action::EscalateOrder),
            out,
        );
        if manual || own {
            for (action, label) in HAND_ACTIONS {
                let command = Command::Order {
                    id: order.id.clone(),
                    action,
                    note: manual.then(|| "recorded by hand".to_string()),
                };
                command_button(ui, view, label, command, out);
            }
        }
    });
    ui.add_space(4.0);
}

fn recommendations_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    inc: &Incident,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    let playbook_units = view
        .book
        .config
        .playbook(&inc.kind)
        .map(|p| p.units.clone())
        .unwrap_or_default();
    ui.horizontal(|ui| {
        ui.label(egui::RichText::new("Nearest units 推荐车辆").strong());
        let before = state.recommend_kind.clone();
        let selected_text = match &state.recommend_kind {
            Some(k) => unit_kind_label(k).to_string(),
            None => "Playbook units 预案车辆".to_string(),
        };
        egui::ComboBox::from_id_salt("desk-recommend-kind")
            .selected_text(selected_text)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut state.recommend_kind, None, "Playbook units 预案车辆");
                for k in EMERGENCY_KINDS {
                    ui.selectable_value(
                        &mut state.recommend_kind,
                        Some(k.to_string()),
                        unit_kind_label(k),
                    );
                }
            });
        if state.recommend_kind != before {
            out.push(DeskCommand::SetRecommendKind(state.recommend_kind.clone()));
        }
    });
    if state.recommend_kind.is_none() && !playbook_units.is_empty() {
        let kinds: Vec<&str> = playbook_units.iter().map(|k| unit_kind_label(k)).collect();
        ui.label(
            egui::RichText::new(kinds.join(", "))
                .small()
                .color(theme::MUTED),
        );
    }
    if view.recommendations.is_empty() {
        ui.label(egui::RichText::new("No units to recommend 暂无可派车辆").color(theme::MUTED));
        return;
    }
    egui::Grid::new("desk-recommendations")
        .num_columns(4)
        .striped(true)
        .show(ui, |ui| {
            for r in view.recommendations {
                ui.label(egui::RichText::new(&r.unit_id).monospace());
                ui.label(unit_kind_label(&r.kind));
                ui.label(eta_text(r.eta_s));
                ui.label(format!("{:.1} km", r.distance_m / 1000.0));
                ui.end_row();
            }
        });
}

fn playbook_editor_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    inc: &Incident,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    if state.draft.as_ref().is_none_or(|d| d.incident != inc.id) {
        state.draft = Some(OrderDraft::for_incident(&view.book.config, inc));
    }
    let Some(draft) = state.draft.as_mut() else {
        return;
    };
    let config = &view.book.config;
    match &draft.playbook {
        Some(title) => ui.label(egui::RichText::new(format!("Playbook 预案: {title}")).strong()),
        None => ui.label(
            egui::RichText::new(format!(
                "No playbook for “{}” — add orders by hand 无预案，请手动添加",
                inc.kind
            ))
            .color(theme::MUTED),
        ),
    };
    // Only those who may issue orders edit the draft; leaders and others just read it.
    let editable = is_allowed(view.actor.role, Action::IssueOrder);
    ui.add_enabled_ui(editable, |ui| {
        let mut remove = None;
        for (i, o) in draft.orders.iter_mut().enumerate() {
            ui.group(|ui| {
                if draft_row_ui(ui, config, i, o) {
                    remove = Some(i);
                }
            });
        }
        if let Some(i) = remove {
            draft.orders.remove(i);
        }
        if ui.button("Add order 添加指令").clicked()
            && let Some(d) = config.departments.first()
        {
            draft.orders.push(DraftOrder {
                department: d.id.clone(),
                instruction: String::new(),
                deadline_min: 30.0,
                include: true,
            });
        }
    });
    let issued = inc.orders.len();
    if issued > 0 {
        ui.label(
            egui::RichText::new(format!("{issued} orders already issued 已下达 {issued} 条"))
                .small()
                .color(theme::WARN),
        );
    }
    let command = Command::IssueOrders {
        incident: inc.id.clone(),
        orders: draft.new_orders(view.now_ms),
    };
    command_button(ui, view, "Issue orders 下达指令", command, out);
}

/// One editable order of the draft (department, deadline, and the instruction on a
/// line of its own); true when its remove button was pressed.
fn draft_row_ui(ui: &mut egui::Ui, config: &DispatchConfig, i: usize, o: &mut DraftOrder) -> bool {
    let mut remove = false;
    ui.horizontal(|ui| {
        ui.checkbox(&mut o.include, "")
            .on_hover_text("Include this order 包含此指令");
        egui::ComboBox::from_id_salt(("desk-draft-department", i))
            .width(220.0)
            .selected_text(department_name(config, &o.department))
            .show_ui(ui, |ui| {
                for d in &config.departments {
                    ui.selectable_value(&mut o.department, d.id.clone(), &d.name);
                }
            });
        ui.add(
            egui::DragValue::new(&mut o.deadline_min)
                .range(1.0..=1440.0)
                .speed(1.0)
                .suffix(" min"),
        )
        .on_hover_text("Deadline after issue 时限");
        remove = ui.small_button("🗑").on_hover_text("Remove 删除").clicked();
    });
    ui.add(
        egui::TextEdit::multiline(&mut o.instruction)
            .hint_text("Instruction 指令内容")
            .desired_rows(1)
            .desired_width(f32::INFINITY),
    );
    remove
}

fn timeline_ui(ui: &mut egui::Ui, time: &CityTime, inc: &Incident) {
    ui.label(egui::RichText::new("Timeline 时间线").strong());
    egui::ScrollArea::vertical()
        .id_salt("desk-timeline")
        .max_height(220.0)
        .stick_to_bottom(true)
        .show(ui, |ui| {
            for t in &inc.timeline {
                ui.horizontal_wrapped(|ui| {
                    ui.label(
                        egui::RichText::new(time.time_of_day(t.at_ms))
                            .monospace()
                            .color(theme::MUTED),
                    );
                    ui.label(
                        egui::RichText::new(format!("{} ({})", t.who, t.role.as_str())).strong(),
                    );
                    ui.label(&t.text);
                });
            }
        });
}

/// Orders still in play (or all), by department (in the order of the configuration).
/// The grouping is kept per book revision, and rows out of sight are only counted,
/// not drawn: a day's 50,000 orders cost a frame what the visible rows cost.
pub fn order_board_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    ui.horizontal(|ui| open_all_toggle(ui, &mut state.board_all));
    if view.actor.role == Role::Leader {
        ui.label(egui::RichText::new(READ_ONLY).small().color(theme::MUTED));
    }
    let book = view.book;
    let key = (book.revision, state.board_all);
    if state.board.as_ref().map(|(k, _)| k) != Some(&key) {
        let groups = board_groups(book, state.board_all, &mut state.order_departments);
        state.board = Some((key, groups));
    }
    if state.row_heights.len() > 4 * BOARD_ROWS_PER_DEPARTMENT * book.config.departments.len() {
        state.row_heights.clear();
    }
    let DeskState {
        board, row_heights, ..
    } = state;
    let groups = board.as_ref().map_or(&[][..], |(_, g)| g.as_slice());
    let spacing = ui.spacing().item_spacing.y;
    let guess = 3.0 * ui.spacing().interact_size.y + 4.0 + 3.0 * spacing;
    for group in groups {
        let d = &book.config.departments[group.department];
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new(&d.name).strong().color(theme::ACCENT));
            if d.endpoint == Endpoint::Manual {
                chip(ui, "manual 人工登记", theme::MUTED);
            }
            if let Endpoint::Hall(hall) = &d.endpoint {
                chip(ui, &format!("hall {hall} 跨级"), theme::MUTED);
            }
            ui.label(egui::RichText::new(group.total.to_string()).color(theme::MUTED));
        });
        for &i in &group.rows {
            let order = &book.orders[i];
            let width = ui.available_width();
            let height = row_heights.get(&order.id).copied().unwrap_or(guess);
            let top = ui.cursor().min.y;
            let rect = egui::Rect::from_min_size(ui.cursor().min, egui::vec2(width, height));
            if !ui.is_rect_visible(rect) {
                ui.allocate_space(egui::vec2(width, (height - spacing).max(0.0)));
                continue;
            }
            ui.push_id(&order.id, |ui| {
                order_row_ui(ui, view, order, &order.incident, out);
            });
            let drawn = ui.cursor().min.y - top;
            if (drawn - height).abs() > 0.5 {
                row_heights.insert(order.id.clone(), drawn);
            }
        }
        if group.total > group.rows.len() {
            let more = group.total - group.rows.len();
            let text = if key.1 {
                format!("… {more} more, later deadlines or finished earlier 更多")
            } else {
                format!("… {more} more, later deadlines 更多")
            };
            ui.label(egui::RichText::new(text).color(theme::MUTED));
        }
    }
    if groups.is_empty() {
        ui.label(egui::RichText::new("No open orders 无待办指令").color(theme::MUTED));
    }
}

/// Rows per department on the board (nearest deadlines first).
pub const BOARD_ROWS_PER_DEPARTMENT: usize = 40;

/// Orders the dispatcher still has to watch: not done and not handed up the chain.
fn in_play(status: OrderStatus) -> bool {
    !matches!(
        status,
        OrderStatus::Done | OrderStatus::Escalated | OrderStatus::Cancelled
    )
}

/// The form to report an incident at the picked location.
pub fn new_incident_ui(
    ui: &mut egui::Ui,
    view: &DeskView,
    state: &mut DeskState,
    out: &mut Vec<DeskCommand>,
) {
    let config = &view.book.config;
    let form = &mut state.form;
    ui.heading("Report an incident 上报事件");
    let playbook = config.playbook(&form.kind);
    egui::Grid::new("desk-new-incident")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Kind 类型");
            ui.horizontal(|ui| {
                egui::ComboBox::from_id_salt("desk-new-kind")
                    .selected_text(playbook.map_or("Other 其他", |p| p.title.as_str()))
                    .show_ui(ui, |ui| {
                        for p in &config.playbooks {
                            ui.selectable_value(&mut form.kind, p.kind.clone(), &p.title);
                        }
                    });
                ui.add(
                    egui::TextEdit::singleline(&mut form.kind)
                        .hint_text("or type a kind 或输入类型")
                        .desired_width(160.0),
                );
            });
            ui.end_row();
            ui.label("Title 标题");
            ui.add(
                egui::TextEdit::singleline(&mut form.title)
                    .hint_text(playbook.map_or("What happened 事件描述", |p| p.title.as_str()))
                    .desired_width(300.0),
            );
            ui.end_row();
            ui.label("Severity 等级");
            ui.horizontal_wrapped(|ui| {
                for s in Severity::ALL {
                    ui.selectable_value(&mut form.severity, s, s.label());
                }
            });
            ui.end_row();
            ui.label("Domain 领域");
            match playbook_domain(config, &form.kind) {
                Some(d) => {
                    ui.label(domain_label(d));
                }
                None => {
                    egui::ComboBox::from_id_salt("desk-new-domain")
                        .selected_text(domain_label(form.domain))
                        .show_ui(ui, |ui| {
                            for d in Domain::ALL {
                                ui.selectable_value(&mut form.domain, d, domain_label(d));
                            }
                        });
                }
            }
            ui.end_row();
            ui.label("Location 位置");
            ui.label(match view.location {
                Some((lon, lat)) => format!("{lat:.5}°N {lon:.5}°E"),
                None => "Pick a building or centre the map 请在地图上选择位置".into(),
            });
            ui.end_row();
        });
    let Some((lon, lat)) = view.location else {
        ui.add_enabled(false, egui::Button::new("Report 上报"))
            .on_disabled_hover_text("Pick a place on the map first 请先在地图上选择位置");
        return;
    };
    let kind = form.kind.trim().to_string();
    let title = match form.title.trim() {
        "" => playbook.map_or_else(|| kind.clone(), |p| p.title.clone()),
        t => t.to_string(),
    };
    let command = Command::ReportIncident(NewIncident {
        domain: playbook_domain(config, &kind).unwrap_or(form.domain),
        kind,
        title,
        severity: form.severity,
        lon,
        lat,
        source: "map".into(),
        key: None,
    });
    command_button(ui, view, "Report 上报", command, out);
}

/// The domain of the first department in the kind's playbook.
fn playbook_domain(config: &DispatchConfig, kind: &str) -> Option<Domain> {
    let first = config.playbook(kind)?.orders.first()?;
    config.department(&first.department).map(|d| d.domain)
}

/// A button that emits `command`, disabled with the reason when the core would refuse
/// it (leaders: read-only).
fn command_button(
    ui: &mut egui::Ui,
    view: &DeskView,
    label: &str,
    command: Command,
    out: &mut Vec<DeskCommand>,
) {
    match refusal(view, &command) {
        Some(why) => {
            ui.add_enabled(false, egui::Button::new(label))
                .on_disabled_hover_text(why);
        }
        None => {
            if ui.button(label).clicked() {
                out.push(DeskCommand::Execute(command));
            }
        }
    }
}

/// Why the core would refuse `command` from the signed-in person now, if it would.
fn refusal(view: &DeskView, command: &Command) -> Option<String> {
    if view.replay {
        return Some(REPLAY_READ_ONLY.into());
    }
    if view.actor.role == Role::Leader {
        return Some(READ_ONLY.into());
    }
    view.book
        .plan(command, view.actor, view.now_ms)
        .err()
        .map(|e| e.to_string())
}

fn open_all_toggle(ui: &mut egui::Ui, all: &mut bool) {
    ui.selectable_value(all, false, "Open 未结");
    ui.selectable_value(all, true, "All 全部");
}

/// A small coloured badge with dark text.
fn chip(ui: &mut egui::Ui, text: &str, fill: egui::Color32) {
    egui::Frame::new()
        .fill(fill)
        .corner_radius(3.0)
        .inner_margin(egui::Margin::symmetric(4, 1))
        .show(ui, |ui| {
            ui.label(
                egui::RichText::new(text)
                    .small()
                    .color(egui::Color32::BLACK),
            );
        });
}

fn severity_chip(ui: &mut egui::Ui, s: Severity) {
    chip(ui, s.label(), severity_colour(s));
}

fn severity_colour(s: Severity) -> egui::Color32 {
    match s {
        Severity::Extreme => theme::ALARM,
        Severity::Severe => theme::WARN,
        Severity::Moderate => theme::ACCENT,
        Severity::Minor => theme::MUTED,
    }
}

fn incident_status_colour(s: IncidentStatus) -> egui::Color32 {
    match s {
        IncidentStatus::Reported => theme::WARN,
        IncidentStatus::Verified | IncidentStatus::Dispatched => theme::ACCENT,
        IncidentStatus::OnScene | IncidentStatus::Resolved => theme::GOOD,
        IncidentStatus::Closed => theme::MUTED,
    }
}

fn order_status_colour(s: OrderStatus) -> egui::Color32 {
    match s {
        OrderStatus::Issued => theme::MUTED,
        OrderStatus::Delivered | OrderStatus::Acknowledged => theme::ACCENT,
        OrderStatus::InProgress | OrderStatus::Done => theme::GOOD,
        OrderStatus::Rejected | OrderStatus::Escalated => theme::WARN,
        OrderStatus::Overdue => theme::ALARM,
        OrderStatus::Cancelled => theme::MUTED,
    }
}

pub fn role_label(r: Role) -> &'static str {
    match r {
        Role::Operator => "Operator 值班员",
        Role::Dispatcher => "Dispatcher 调度员",
        Role::Leader => "Leader 领导",
        Role::DepartmentLiaison => "Liaison 部门联络员",
        Role::System => "System 系统",
    }
}

fn unit_kind_label(kind: &str) -> &str {
    match kind {
        "police" => "Police 警车",
        "fireEngine" => "Fire engine 消防车",
        "ambulance" => "Ambulance 救护车",
        other => other,
    }
}

fn department_name<'a>(config: &'a DispatchConfig, id: &'a str) -> &'a str {
    config.department(id).map_or(id, |d| d.name.as_str())
}

/// Past its deadline, whether or not the clock has marked it yet.
fn is_overdue(order: &Order, now_ms: i64) -> bool {
    order.status == OrderStatus::Overdue || (order.status.is_open() && order.deadline_ms <= now_ms)
}

/// Time left to the deadline ("4:59"), or past it ("overdue 2:10", red); `None` for
/// orders that are finished.
fn countdown(order: &Order, now_ms: i64) -> Option<(String, egui::Color32)> {
    if is_overdue(order, now_ms) {
        let late = (now_ms - order.deadline_ms).max(0) / 1000;
        return Some((format!("overdue {}", clock_text(late)), theme::ALARM));
    }
    order.status.is_open().then(|| {
        let left = (order.deadline_ms - now_ms) / 1000;
        let colour = if left < 60 { theme::WARN } else { theme::GOOD };
        (clock_text(left), colour)
    })
}

/// Whole seconds as `m:ss`, or `h:mm:ss` from an hour.
pub fn clock_text(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// A drive time: `45 s`, `3 min 20 s`, `1 h 05 min`.
pub fn eta_text(secs: f64) -> String {
    let secs = secs.max(0.0).round() as i64;
    if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{} min {} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let mut t: String = text.chars().take(max_chars.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod desk_tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::{NodeT, Queryable};

    use super::*;

    const T0: i64 = 1_795_946_400_000;
    const MIN: i64 = 60_000;

    fn dispatcher() -> Actor {
        Actor::new("li.wei", Role::Dispatcher, None)
    }

    fn run(book: &mut Book, command: Command, actor: &Actor, now: i64) {
        let events = book.plan(&command, actor, now).unwrap();
        for e in &events {
            book.apply(e, now, &actor.name, actor.role);
        }
    }

    fn report(book: &mut Book, kind: &str, title: &str, severity: Severity, now: i64) -> String {
        let new = NewIncident {
            kind: kind.into(),
            title: title.into(),
            domain: Domain::Safety,
            severity,
            lon: 24.94,
            lat: 60.17,
            source: "map".into(),
            key: None,
        };
        run(book, Command::ReportIncident(new), &dispatcher(), now);
        book.incidents.last().unwrap().id.clone()
    }

    fn issue(book: &mut Book, incident: &str, orders: &[(&str, i64)], now: i64) {
        let orders = orders
            .iter()
            .map(|&(department, deadline_ms)| NewOrder {
                department: department.into(),
                instruction: format!("Do the {department} part"),
                deadline_ms,
            })
            .collect();
        let command = Command::IssueOrders {
            incident: incident.into(),
            orders,
        };
        run(book, command, &dispatcher(), now);
    }

    /// Runs the clock as the core does: overdue, urge, escalate.
    fn tick(book: &mut Book, now: i64) {
        for c in book.due(now) {
            run(book, c, &Actor::system(), now);
        }
    }

    /// What the desk reads, owned by the test.
    struct World {
        book: Book,
        actor: Actor,
        now_ms: i64,
        time: CityTime,
        selected: Option<String>,
        recommendations: Vec<RecommendationView>,
        status_line: Option<String>,
        location: Option<(f64, f64)>,
        replay: bool,
    }

    impl World {
        fn new(book: Book, now_ms: i64) -> Self {
            Self {
                book,
                actor: dispatcher(),
                now_ms,
                time: CityTime::utc("a test"),
                selected: None,
                recommendations: Vec::new(),
                status_line: None,
                location: None,
                replay: false,
            }
        }

        fn view(&self) -> DeskView<'_> {
            DeskView {
                book: &self.book,
                actor: &self.actor,
                now_ms: self.now_ms,
                time: &self.time,
                selected: self.selected.as_deref(),
                recommendations: &self.recommendations,
                status_line: self.status_line.as_deref(),
                location: self.location,
                replay: self.replay,
            }
        }
    }

    struct Desk {
        world: World,
        state: DeskState,
        out: Vec<DeskCommand>,
    }

    type Panel = fn(&mut egui::Ui, &DeskView, &mut DeskState, &mut Vec<DeskCommand>);

    fn harness(panel: Panel, world: World) -> Harness<'static, Desk> {
        let desk = Desk {
            world,
            state: DeskState::default(),
            out: Vec::new(),
        };
        let mut h = Harness::builder()
            .with_size(egui::vec2(1200.0, 1600.0))
            .build_ui_state(
                move |ui, d: &mut Desk| panel(ui, &d.world.view(), &mut d.state, &mut d.out),
                desk,
            );
        h.run();
        h
    }

    fn is_disabled(node: &egui_kittest::Node<'_>) -> bool {
        node.accesskit_node().is_disabled()
    }

    fn execute<'h>(h: &'h Harness<'_, Desk>) -> Vec<&'h Command> {
        h.state()
            .out
            .iter()
            .filter_map(|c| match c {
                DeskCommand::Execute(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_list_is_in_urgency_order_filters_and_a_click_selects() {
        let mut book = Book::new(DispatchConfig::default_config());
        let minor = report(&mut book, "road_damage", "Pothole", Severity::Minor, T0);
        let extreme = report(
            &mut book,
            "building_fire",
            "Tower fire",
            Severity::Extreme,
            T0,
        );
        let severe = report(&mut book, "gas_leak", "Gas smell", Severity::Severe, T0);
        let closed = report(&mut book, "road_damage", "Old crack", Severity::Extreme, T0);
        run(
            &mut book,
            Command::Incident {
                id: closed.clone(),
                action: Action::CloseIncident,
                note: None,
            },
            &dispatcher(),
            T0,
        );
        let mut h = harness(incident_list_ui, World::new(book, T0 + 12 * MIN));
        let y = |h: &Harness<'_, Desk>, id: &str, title: &str| {
            h.get_by_label(&format!("{id}  {title}")).rect().top()
        };
        let (a, b, c) = (
            y(&h, &extreme, "Tower fire"),
            y(&h, &severe, "Gas smell"),
            y(&h, &minor, "Pothole"),
        );
        assert!(a < b && b < c, "not by urgency: {a} {b} {c}");
        assert!(h.get_all_by_label("12 min").count() >= 3);
        h.get_by_label("extreme 特别重大");
        // Open only by default: the closed incident shows under "All".
        let old = format!("{closed}  Old crack");
        assert!(h.query_by_label(&old).is_none());
        h.get_by_label("All 全部").click();
        h.run();
        h.get_by_label(&old);
        // Text search.
        h.get_by_role(egui::accesskit::Role::TextInput).focus();
        h.run();
        h.get_by_role(egui::accesskit::Role::TextInput)
            .type_text("gas");
        h.run();
        assert!(h.query_by_label(&old).is_none());
        assert!(
            h.query_by_label(&format!("{extreme}  Tower fire"))
                .is_none()
        );
        h.get_by_label(&format!("{severe}  Gas smell")).click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![DeskCommand::SelectIncident(Some(severe))]
        );
    }

    #[test]
    fn the_domain_filter_keeps_only_that_domain() {
        let filter = IncidentFilter {
            all: false,
            domain: Some(Domain::Traffic),
            search: String::new(),
        };
        let mut book = Book::new(DispatchConfig::default_config());
        report(&mut book, "road_damage", "Pothole", Severity::Minor, T0);
        let inc = &book.incidents[0];
        assert!(!incident_matches(&filter, inc), "{:?}", inc.domain);
        let safety = IncidentFilter {
            domain: Some(Domain::Safety),
            ..filter
        };
        assert!(incident_matches(&safety, inc));
    }

    fn fire_world(now: i64) -> (World, String) {
        let mut book = Book::new(DispatchConfig::default_config());
        let id = report(
            &mut book,
            "building_fire",
            "Tower fire",
            Severity::Severe,
            T0,
        );
        let mut world = World::new(book, now);
        world.selected = Some(id.clone());
        (world, id)
    }

    #[test]
    fn issue_orders_sends_the_playbook_and_leaves_out_unticked_orders() {
        let now = T0 + MIN;
        let (world, id) = fire_world(now);
        let mut h = harness(incident_detail_ui, world);
        h.get_by_label("Playbook 预案: Building fire 建筑火灾");
        h.get_by_label("Issue orders 下达指令").click();
        h.run();
        let issued = |h: &Harness<'_, Desk>, n: usize| -> Vec<(String, i64)> {
            match execute(h)[n] {
                Command::IssueOrders { incident, orders } => {
                    assert_eq!(incident, &id[..]);
                    orders
                        .iter()
                        .map(|o| (o.department.clone(), o.deadline_ms))
                        .collect()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            issued(&h, 0),
            vec![
                ("fire".into(), now + 5 * MIN),
                ("ems".into(), now + 10 * MIN),
                ("traffic_police".into(), now + 10 * MIN),
                ("power".into(), now + 20 * MIN),
            ]
        );
        // Untick the ambulance order.
        let boxes: Vec<_> = h.get_all_by_role(egui::accesskit::Role::CheckBox).collect();
        assert_eq!(boxes.len(), 4);
        boxes[1].click();
        h.run();
        h.get_by_label("Issue orders 下达指令").click();
        h.run();
        let departments: Vec<String> = issued(&h, 1).into_iter().map(|(d, _)| d).collect();
        assert_eq!(departments, ["fire", "traffic_police", "power"]);
        // "Add order" adds a row to edit.
        h.get_by_label("Add order 添加指令").click();
        h.run();
        assert_eq!(h.state().state.draft.as_ref().unwrap().orders.len(), 5);
    }

    #[test]
    fn status_actions_follow_role_and_lifecycle() {
        let (world, id) = fire_world(T0 + MIN);
        let mut h = harness(incident_detail_ui, world);
        let on_scene = h.get_by_label("On scene 到场");
        assert!(
            is_disabled(&on_scene),
            "a reported incident is not on scene yet"
        );
        on_scene.click();
        h.run();
        assert!(h.state().out.is_empty());
        h.get_by_label("Verify 核实").click();
        h.run();
        h.get_by_label("Fly to 飞至").click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![
                DeskCommand::Execute(Command::Incident {
                    id,
                    action: Action::VerifyIncident,
                    note: None,
                }),
                DeskCommand::FlyTo {
                    lon: 24.94,
                    lat: 60.17
                },
            ]
        );
    }

    /// Two orders: traffic police overdue by 2:10 (ORD-000001), fire due in 4:59.
    fn overdue_world(actor: Actor) -> World {
        let mut book = Book::new(DispatchConfig::default_config());
        let id = report(
            &mut book,
            "building_fire",
            "Tower fire",
            Severity::Severe,
            T0,
        );
        let now = T0 + MIN + 130_000;
        issue(&mut book, &id, &[("traffic_police", T0 + MIN)], T0);
        tick(&mut book, T0 + MIN);
        issue(&mut book, &id, &[("fire", now + 299_000)], T0 + MIN);
        let mut world = World::new(book, now);
        world.actor = actor;
        world
    }

    #[test]
    fn an_overdue_order_is_on_the_board_and_can_be_urged_and_escalated() {
        let mut h = harness(order_board_ui, overdue_world(dispatcher()));
        h.get_by_label("overdue 2:10");
        h.get_by_label("4:59");
        // Each deadline on the clock (UTC in this world).
        h.get_by_label("due 10:01:00");
        h.get_by_label("due 10:08:09");
        h.get_by_label("urged 1×");
        h.get_by_label("Traffic Police 交警支队");
        // Departments in configuration order: fire (ORD-000002) before traffic police.
        let urge: Vec<_> = h.get_all_by_label("Urge 催办").collect();
        assert_eq!(urge.len(), 2);
        urge[1].click();
        h.run();
        let escalate: Vec<_> = h.get_all_by_label("Escalate 升级").collect();
        assert!(
            is_disabled(&escalate[0]),
            "an order in time is not escalated"
        );
        escalate[0].click();
        h.run();
        h.get_all_by_label("Escalate 升级").nth(1).unwrap().click();
        h.run();
        let order = |action| {
            DeskCommand::Execute(Command::Order {
                id: "ORD-000001".into(),
                action,
                note: None,
            })
        };
        assert_eq!(
            h.state().out,
            vec![order(Action::UrgeOrder), order(Action::EscalateOrder)]
        );
        // No hand-recording buttons: both departments have endpoints.
        assert!(h.query_by_label("Signed for 已签收").is_none());
    }

    #[test]
    fn a_long_headline_never_pushes_the_incident_buttons_off_a_narrow_desk() {
        let mut book = Book::new(DispatchConfig::default_config());
        let headline = "Flash flood warning issued for the low-lying districts along the river: \
            residents of the underpasses, basements and riverside parks should move to higher \
            ground now and follow the instructions of the emergency services on site";
        let id = report(&mut book, "waterlogging", headline, Severity::Severe, T0);
        let mut world = World::new(book, T0 + MIN);
        world.selected = Some(id);
        let mut h = Harness::builder()
            .with_size(egui::vec2(360.0, 900.0))
            .build_ui_state(
                |ui, d: &mut Desk| {
                    incident_list_ui(ui, &d.world.view(), &mut d.state, &mut d.out);
                    incident_detail_ui(ui, &d.world.view(), &mut d.state, &mut d.out);
                },
                Desk {
                    world,
                    state: DeskState::default(),
                    out: Vec::new(),
                },
            );
        h.run();
        for label in ["×", "Fly to 飞至", "reported 已上报"] {
            for node in h.get_all_by_label(label) {
                let r = node.rect();
                assert!(r.max.x <= 360.5, "{label} at {r:?} is off the desk");
            }
        }
        // The row keeps its status chip in view too.
        let chip = h.get_all_by_label("reported 已上报").next();
        assert!(chip.is_some());
    }

    #[test]
    fn all_shows_the_latest_finished_orders_not_the_oldest() {
        let mut book = Book::new(DispatchConfig::default_config());
        let id = report(
            &mut book,
            "building_fire",
            "Warehouse",
            Severity::Severe,
            T0,
        );
        let liaison = Actor::new("fire.liaison", Role::DepartmentLiaison, Some("fire"));
        let n = BOARD_ROWS_PER_DEPARTMENT + 5;
        for i in 0..n {
            let at = T0 + i as i64 * MIN;
            issue(&mut book, &id, &[("fire", at + 10 * MIN)], at);
            let order = book.orders.last().unwrap().id.clone();
            for action in [
                Action::AcknowledgeOrder,
                Action::StartOrder,
                Action::CompleteOrder,
            ] {
                let command = Command::Order {
                    id: order.clone(),
                    action,
                    note: None,
                };
                run(&mut book, command, &liaison, at + 1000);
            }
        }
        let now = T0 + n as i64 * MIN;
        let mut h = harness(order_board_ui, World::new(book, now));
        assert!(h.query_by_label("ORD-000045").is_none(), "Open shows none");
        h.get_by_label("All 全部").click();
        h.run();
        // The board is for watching: the latest finished first, the oldest left out.
        h.get_by_label("ORD-000045");
        h.get_by_label("ORD-000044");
        assert!(h.query_by_label("ORD-000005").is_none());
        assert!(h.query_by_label("ORD-000001").is_none());
        h.get_by_label_contains("5 more");
    }

    #[test]
    fn leaders_see_everything_and_every_button_is_disabled() {
        let leader = Actor::new("mayor", Role::Leader, None);
        let mut h = harness(order_board_ui, overdue_world(leader.clone()));
        h.get_by_label("overdue 2:10");
        let buttons: Vec<_> = h
            .get_all_by_label("Urge 催办")
            .chain(h.get_all_by_label("Escalate 升级"))
            .collect();
        assert_eq!(buttons.len(), 4);
        for b in &buttons {
            assert!(is_disabled(b), "{b:?}");
            b.click();
        }
        h.run();
        assert!(h.state().out.is_empty());

        let (mut world, _) = fire_world(T0 + MIN);
        world.actor = leader;
        let mut h = harness(incident_detail_ui, world);
        for label in ["Issue orders 下达指令", "Verify 核实", "Close 关闭"] {
            let b = h.get_by_label(label);
            assert!(is_disabled(&b), "{label}");
            b.click();
        }
        h.run();
        assert!(h.state().out.is_empty());
        // Why, on hover.
        h.get_by_label("Issue orders 下达指令").hover();
        h.run();
        assert!(
            h.query_all_by_label(READ_ONLY).count() >= 1,
            "no read-only hover text"
        );
    }

    /// In replay the book is the past's: every command is disabled with why, nothing
    /// is issued, the incident's timeline is shown and the playbook is not.
    #[test]
    fn the_past_book_is_read_only() {
        let (mut world, _) = fire_world(T0 + MIN);
        world.replay = true;
        let mut h = harness(incident_detail_ui, world);
        for label in ["Verify 核实", "Close 关闭", "On scene 到场"] {
            let b = h.get_by_label(label);
            assert!(is_disabled(&b), "{label}");
            b.click();
        }
        h.run();
        assert!(h.state().out.is_empty());
        assert!(h.query_by_label("Issue orders 下达指令").is_none());
        h.get_by_label("reported from map: Tower fire");
        h.get_by_label("Verify 核实").hover();
        h.run();
        assert!(h.query_all_by_label(REPLAY_READ_ONLY).count() >= 1);
    }

    #[test]
    fn hand_recorded_buttons_only_for_the_manual_department() {
        let mut book = Book::new(DispatchConfig::default_config());
        let id = report(
            &mut book,
            "crowd_gathering",
            "Crowd",
            Severity::Moderate,
            T0,
        );
        issue(
            &mut book,
            &id,
            &[("fire", T0 + 10 * MIN), ("central_district", T0 + 10 * MIN)],
            T0,
        );
        let mut h = harness(order_board_ui, World::new(book, T0 + MIN));
        assert_eq!(h.get_all_by_label("manual 人工登记").count(), 1);
        assert_eq!(h.get_all_by_label("Signed for 已签收").count(), 1);
        assert_eq!(h.get_all_by_label("Rejected 已拒绝").count(), 1);
        // Started needs a sign-for first.
        assert!(is_disabled(&h.get_by_label("Started 已开始")));
        let signed = h.get_by_label("Signed for 已签收");
        let district = h.get_by_label("Central District Office 中心区街道办");
        assert!(signed.rect().top() > district.rect().top());
        signed.click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![DeskCommand::Execute(Command::Order {
                id: "ORD-000002".into(),
                action: Action::AcknowledgeOrder,
                note: Some("recorded by hand".into()),
            })]
        );
    }

    #[test]
    fn recommendations_show_eta_and_distance_and_the_kind_can_be_chosen() {
        let (mut world, _) = fire_world(T0 + MIN);
        world.recommendations = vec![
            RecommendationView {
                unit_id: "fire-7".into(),
                kind: "fireEngine".into(),
                eta_s: 200.0,
                distance_m: 1234.0,
            },
            RecommendationView {
                unit_id: "amb-2".into(),
                kind: "ambulance".into(),
                eta_s: 45.2,
                distance_m: 380.0,
            },
        ];
        let mut h = harness(incident_detail_ui, world);
        h.get_by_label("fire-7");
        h.get_by_label("3 min 20 s");
        h.get_by_label("1.2 km");
        h.get_by_label("45 s");
        h.get_by_label("0.4 km");
        h.get_by_value("Playbook units 预案车辆").click();
        h.run();
        h.get_by_label("Police 警车").click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![DeskCommand::SetRecommendKind(Some("police".into()))]
        );
        assert_eq!(h.state().state.recommend_kind.as_deref(), Some("police"));
    }

    #[test]
    fn the_timeline_shows_time_who_and_what() {
        let (mut world, _) = fire_world(T0 + MIN);
        // T0 is 2026-11-29 10:00:00 UTC, 18:00 in Shanghai.
        world.time = CityTime::from_flag("Asia/Shanghai").unwrap();
        let h = harness(incident_detail_ui, world);
        h.get_by_label("18:00:00");
        h.get_by_label("li.wei (dispatcher)");
        h.get_by_label("reported from map: Tower fire");
    }

    #[test]
    fn a_new_incident_is_reported_at_the_picked_place() {
        let mut world = World::new(Book::new(DispatchConfig::default_config()), T0);
        world.actor = Actor::new("duty", Role::Operator, None);
        world.location = Some((24.95, 60.16));
        let mut h = harness(new_incident_ui, world);
        h.get_by_value("Other 其他").click();
        h.run();
        h.get_by_label("Gas leak 燃气泄漏").click();
        h.run();
        h.get_by_label("severe 重大").click();
        h.run();
        h.get_by_label("Report 上报").click();
        h.run();
        assert_eq!(
            h.state().out,
            vec![DeskCommand::Execute(Command::ReportIncident(NewIncident {
                kind: "gas_leak".into(),
                title: "Gas leak 燃气泄漏".into(),
                domain: Domain::Utilities,
                severity: Severity::Severe,
                lon: 24.95,
                lat: 60.16,
                source: "map".into(),
                key: None,
            }))]
        );
    }

    #[test]
    fn without_a_place_or_a_kind_nothing_is_reported() {
        let world = World::new(Book::new(DispatchConfig::default_config()), T0);
        let mut h = harness(new_incident_ui, world);
        let report = h.get_by_label("Report 上报");
        assert!(is_disabled(&report));
        report.click();
        h.run();
        assert!(h.state().out.is_empty());

        let mut world = World::new(Book::new(DispatchConfig::default_config()), T0);
        world.location = Some((24.95, 60.16));
        let h = harness(new_incident_ui, world);
        assert!(is_disabled(&h.get_by_label("Report 上报")), "no kind yet");
    }

    #[test]
    fn the_desk_shows_who_is_signed_in_and_switches_tabs() {
        let (mut world, _) = fire_world(T0 + MIN);
        world.status_line = Some("refused: li.wei (dispatcher) may not MarkOverdue".into());
        let mut h = harness(desk_ui, world);
        h.get_by_label("li.wei");
        h.get_by_label("Dispatcher 调度员");
        h.get_by_label("refused: li.wei (dispatcher) may not MarkOverdue");
        h.get_by_label("Issue orders 下达指令");
        h.get_by_label("Orders 指令").click();
        h.run();
        assert_eq!(h.state().state.tab, DeskTab::Orders);
        h.get_by_label("No open orders 无待办指令");
        h.get_by_label("New 上报").click();
        h.run();
        h.get_by_label("Report an incident 上报事件");
        assert_eq!(status_colour("Refused: x"), theme::WARN);
        assert_eq!(status_colour("error writing the log"), theme::WARN);
        assert_eq!(status_colour("INC-000002 reported"), theme::GOOD);
    }

    #[test]
    fn time_texts() {
        assert_eq!(clock_text(299), "4:59");
        assert_eq!(clock_text(130), "2:10");
        assert_eq!(clock_text(3723), "1:02:03");
        assert_eq!(clock_text(-5), "0:00");
        assert_eq!(eta_text(200.0), "3 min 20 s");
        assert_eq!(eta_text(45.4), "45 s");
        assert_eq!(eta_text(3900.0), "1 h 05 min");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
