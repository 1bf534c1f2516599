//! The "Hub operations 运营" window: the operating figures of the last shift (what
//! `ops-report` prints) as charts, recomputed from the event log on a thread of its
//! own every 30 s while the window is open, so every number can be checked against
//! the audit trail.

use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

use super::theme;
use crate::clock::CityTime;
use crate::dispatch::ops::OpsReport;
use crate::dispatch::past::OpenLog;
use crate::wall::{Chart, ChartKind};

/// The figures cover this long before now.
pub const SHIFT_MS: i64 = 8 * 3_600_000;
/// Recomputed this often while the window is open.
const EVERY: Duration = Duration::from_secs(30);

/// A reading of the log: the figures and their charts, or why there are none.
type Reading = Result<(OpsReport, Vec<Chart>), String>;

/// The window, and its reader of the log.
#[derive(Resource, Default)]
pub struct HubOps {
    pub open: bool,
    rx: Option<std::sync::Mutex<Receiver<Reading>>>,
    asked_at: Option<Instant>,
    pub report: Option<OpsReport>,
    /// The open incidents over the shift, then the departments' figures.
    pub charts: Vec<Chart>,
    pub trouble: Option<String>,
}

impl HubOps {
    /// Starts a reading of the log's last shift when one is due (none in flight).
    fn refresh(&mut self, open: &OpenLog, config: &crate::dispatch::config::DispatchConfig) {
        if self.rx.is_some() || self.asked_at.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.asked_at = Some(Instant::now());
        let (tx, rx) = channel();
        let (open, config) = (open.clone(), config.clone());
        let spawned = std::thread::Builder::new()
            .name("hub-operations".into())
            .spawn(move || {
                let now = crate::clock::unix_ms_now();
                let result = open().and_then(|log| {
                    let (report, book) = crate::dispatch::ops::report_and_book_from_store(
                        &*log,
                        &config,
                        Some(now - SHIFT_MS),
                        None,
                        now,
                    )
                    .map_err(|e| e.to_string())?;
                    let mut charts = vec![crate::briefing::open_incidents_chart(
                        &book,
                        now - SHIFT_MS,
                        now,
                    )];
                    charts.extend(crate::briefing::department_charts(&report));
                    Ok((report, charts))
                });
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => self.rx = Some(std::sync::Mutex::new(rx)),
            Err(e) => self.trouble = Some(format!("cannot start the reader: {e}")),
        }
    }

    fn poll(&mut self) {
        let Some(rx) = self.rx.as_mut() else { return };
        let rx = rx
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match rx.try_recv() {
            Ok(Ok((report, charts))) => {
                self.report = Some(report);
                self.charts = charts;
                self.trouble = None;
                self.rx = None;
            }
            Ok(Err(e)) => {
                self.trouble = Some(e);
                self.rx = None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                self.trouble = Some("the reader of the log stopped".into());
                self.rx = None;
            }
        }
    }
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<HubOps>()
        .add_systems(EguiPrimaryContextPass, operations_window);
}

fn operations_window(
    mut contexts: EguiContexts,
    mut ops: ResMut<HubOps>,
    desk: Option<Res<super::desk::Desk>>,
    time: Res<super::LocalTime>,
) -> Result {
    if !ops.open {
        return Ok(());
    }
    match desk.as_ref().and_then(|d| d.past_log.as_ref()) {
        Some((open, config)) => ops.refresh(open, config),
        None if ops.trouble.is_none() => {
            ops.trouble = Some("no dispatch log is open in this window".into());
        }
        None => {}
    }
    ops.poll();
    let ctx = contexts.ctx_mut()?;
    let mut open = ops.open;
    egui::Window::new("Hub operations 运营")
        .open(&mut open)
        .default_size([620.0, 560.0])
        .show(ctx, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                operations_ui(
                    ui,
                    ops.report.as_ref(),
                    &ops.charts,
                    ops.trouble.as_deref(),
                    &time.0,
                )
            });
        });
    ops.open = open;
    Ok(())
}

/// The figures as charts and lines: per department, on time and time to sign for;
/// incidents by kind; what is overdue and which service targets were missed.
pub fn operations_ui(
    ui: &mut egui::Ui,
    report: Option<&OpsReport>,
    charts: &[Chart],
    trouble: Option<&str>,
    time: &CityTime,
) {
    if let Some(t) = trouble {
        ui.colored_label(
            theme::ALARM,
            format!("Cannot read the log 无法读取日志: {t}"),
        );
    }
    let Some(r) = report else {
        ui.label(egui::RichText::new("Reading the log… 正在读取").color(theme::MUTED));
        return;
    };
    ui.label(
        egui::RichText::new(format!(
            "Last 8 h 最近8小时 · {} events · as of {}",
            r.events_in_window, r.at
        ))
        .color(theme::MUTED),
    );
    let orders: u64 = r.departments.values().map(|d| d.orders).sum();
    let (due, on_time) = r
        .departments
        .values()
        .fold((0, 0), |(d, t), f| (d + f.due, t + f.on_time));
    ui.horizontal_wrapped(|ui| {
        let figure = |ui: &mut egui::Ui, label: &str, value: String, colour| {
            ui.vertical(|ui| {
                ui.label(egui::RichText::new(label).small().color(theme::MUTED));
                ui.label(egui::RichText::new(value).size(22.0).strong().color(colour));
            });
            ui.add_space(14.0);
        };
        figure(ui, "Orders 指令", orders.to_string(), theme::ACCENT);
        figure(
            ui,
            "On time 按时",
            if due > 0 {
                format!("{:.0}%", on_time as f64 * 100.0 / due as f64)
            } else {
                "—".into()
            },
            theme::GOOD,
        );
        figure(
            ui,
            "Overdue now 当前超时",
            r.overdue.len().to_string(),
            if r.overdue.is_empty() {
                theme::GOOD
            } else {
                theme::ALARM
            },
        );
        figure(
            ui,
            "Target breaches 超时限",
            r.sla_breaches.len().to_string(),
            if r.sla_breaches.is_empty() {
                theme::GOOD
            } else {
                theme::WARN
            },
        );
    });
    ui.separator();
    // Each chart in a band of its own: a line over the shift, a bar a department.
    for (k, chart) in charts.iter().enumerate() {
        let height = match &chart.kind {
            ChartKind::Line { .. } => 150.0,
            ChartKind::Bars(bars) => 30.0 + 24.0 * bars.len() as f32,
        };
        ui.allocate_ui(egui::vec2(ui.available_width(), height), |ui| {
            super::charts::charts_ui(ui, ("ops-chart", k), std::slice::from_ref(chart), time)
        });
    }
    let departments: Vec<(&String, &crate::dispatch::ops::DepartmentFigures)> =
        r.departments.iter().collect();
    if departments.is_empty() {
        ui.label(egui::RichText::new("No order in the last 8 h 无指令").color(theme::MUTED));
    } else {
        egui::Grid::new("ops-departments")
            .striped(true)
            .show(ui, |ui| {
                for h in [
                    "Department 部门",
                    "orders",
                    "on time",
                    "rejected",
                    "urged",
                    "escalated",
                ] {
                    ui.label(egui::RichText::new(h).small().color(theme::MUTED));
                }
                ui.end_row();
                for (id, f) in &departments {
                    ui.label(f.name.clone().unwrap_or_else(|| (*id).clone()));
                    ui.label(f.orders.to_string());
                    ui.label(f.on_time_pct.map_or("—".into(), |p| format!("{p:.0}%")));
                    ui.label(f.rejected.to_string());
                    ui.label(f.urged.to_string());
                    ui.label(f.escalated.to_string());
                    ui.end_row();
                }
            });
    }
    ui.separator();
    ui.label(egui::RichText::new("Incidents by kind 事件类型").strong());
    if r.incidents.is_empty() {
        ui.label(egui::RichText::new("No incident in the last 8 h 无事件").color(theme::MUTED));
    }
    for f in &r.incidents {
        ui.label(format!(
            "{} ({}): {} raised, {} open · first order p50 {} · closed p50 {}",
            f.kind,
            f.severity.label(),
            f.count,
            f.open,
            f.first_order_ms
                .p50
                .map_or("—".into(), |ms| crate::clock::age_words(
                    ms as f64 / 1000.0
                )),
            f.close_ms
                .p50
                .map_or("—".into(), |ms| crate::clock::age_words(
                    ms as f64 / 1000.0
                )),
        ));
    }
    if !r.overdue.is_empty() {
        ui.separator();
        ui.label(
            egui::RichText::new("Overdue now 当前超时")
                .strong()
                .color(theme::ALARM),
        );
        for o in r.overdue.iter().take(10) {
            ui.label(format!(
                "{} → {} ({}): {} past its deadline",
                o.order,
                o.department,
                o.incident,
                crate::clock::age_words(o.overdue_ms as f64 / 1000.0)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    #[test]
    fn the_operations_window_shows_the_departments_and_what_is_overdue() {
        use crate::dispatch::ops::tests::{ops, shift};
        let report = ops(&shift("operations-window"), None, None);
        let charts = crate::briefing::department_charts(&report);
        assert_eq!(charts.len(), 2);
        let time = CityTime::utc("test");
        let mut h = Harness::builder()
            .with_size(egui::vec2(620.0, 900.0))
            .build_ui_state(
                |ui, r: &mut Option<OpsReport>| operations_ui(ui, r.as_ref(), &charts, None, &time),
                Some(report),
            );
        h.run();
        for label in [
            "On time 按时率",
            "Time to sign for, p50 签收用时",
            "Incidents by kind 事件类型",
            "Overdue now 当前超时",
        ] {
            assert!(h.query_all_by_label(label).next().is_some(), "{label}");
        }
        // No report yet, or the log unreadable: said, no panic.
        let mut empty = Harness::builder()
            .with_size(egui::vec2(400.0, 300.0))
            .build_ui(|ui| {
                operations_ui(
                    ui,
                    None,
                    &[],
                    Some("chain does not hold"),
                    &CityTime::utc("test"),
                )
            });
        empty.run();
        assert!(
            empty
                .query_by_label_contains("chain does not hold")
                .is_some()
        );
    }
}
