//! The dispatch service: the durable [`Dispatcher`] joined to its HTTP edges. Orders
//! to departments with an endpoint go out through the [`Outbox`]; departments' status
//! reports come in through the [`StatusApi`]; alerts from feeds raise incidents; the
//! clock marks orders overdue, urges and escalates. Every change is written to the log
//! before anything is sent or shown. No threads of its own: the owner calls
//! [`DispatchService::pump`] regularly (the console every frame, tests with their own
//! clock).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;

use super::alerts::{AlertDedup, AlertIn, Decision};
use super::book::{Actor, Command, Event, NewIncident};
use super::config::Endpoint;
use super::delivery::{
    DeliveryEvent, DepartmentAuth, DepartmentSim, OrderSnapshot, Outbox, OutboxConfig,
    OutgoingOrder, SimBehaviour, StatusApi, StatusReport, order_body, urge_body,
};
use super::dispatcher::{DispatchError, Dispatcher};
use super::{Action, IncidentStatus, OrderStatus, Role};

/// How the service reaches departments.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Where the status API listens (`127.0.0.1:0` for any free port).
    pub api_addr: String,
    pub outbox: OutboxConfig,
    /// How the simulated departments behave (for departments with
    /// `endpoint = "simulated"`).
    pub sim: SimBehaviour,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            api_addr: "127.0.0.1:7878".into(),
            outbox: OutboxConfig::default(),
            sim: SimBehaviour::default(),
        }
    }
}

/// How often the clock checks deadlines.
const TICK_EVERY_MS: i64 = 250;

/// At most this many notices are kept for the console.
const MAX_NOTICES: usize = 50;

pub struct DispatchService {
    pub dispatcher: Dispatcher,
    outbox: Outbox,
    deliveries: Receiver<DeliveryEvent>,
    api: StatusApi,
    reports: Receiver<StatusReport>,
    /// Held so the simulated departments run as long as the service (dropping stops them).
    #[cfg_attr(not(test), allow(dead_code))]
    sim: Option<DepartmentSim>,
    /// Department id → base URL orders are POSTed under.
    endpoints: HashMap<String, String>,
    dedup: AlertDedup,
    /// Recent things the dispatcher should know (refused reports, failed deliveries).
    pub notices: VecDeque<String>,
    /// Bumped whenever the book changes, so views know to redraw.
    pub version: u64,
    /// When the clock last looked at every order.
    last_tick_ms: Option<i64>,
}

impl DispatchService {
    /// Starts the status API, the outbox and (when a department is simulated) the
    /// department simulator, then re-sends every order not yet delivered: after a
    /// restart the outbox carries on where it stopped; idempotency keys make repeats
    /// harmless.
    pub fn start(dispatcher: Dispatcher, options: ServiceOptions) -> anyhow::Result<Self> {
        let config = &dispatcher.book().config;
        let auth: Vec<DepartmentAuth> = config
            .departments
            .iter()
            .filter_map(|d| {
                d.token.as_ref().map(|t| DepartmentAuth {
                    id: d.id.clone(),
                    token: t.clone(),
                })
            })
            .collect();
        let (api, reports) = StatusApi::start(&options.api_addr, auth).map_err(|e| {
            anyhow::anyhow!("cannot start the status API on {}: {e:#}", options.api_addr)
        })?;
        let simulated: Vec<_> = config
            .departments
            .iter()
            .filter(|d| d.endpoint == Endpoint::Simulated)
            .collect();
        let sim = if simulated.is_empty() {
            None
        } else {
            let mut behaviour = options.sim.clone();
            for d in &simulated {
                if let Some(t) = &d.token {
                    behaviour.tokens.insert(d.id.clone(), t.clone());
                }
            }
            Some(DepartmentSim::start("127.0.0.1:0", behaviour)?)
        };
        let mut endpoints = HashMap::new();
        for d in &config.departments {
            match &d.endpoint {
                Endpoint::Url(url) => {
                    endpoints.insert(d.id.clone(), url.clone());
                }
                Endpoint::Simulated => {
                    if let Some(sim) = &sim {
                        endpoints.insert(d.id.clone(), format!("{}/{}", sim.base_url(), d.id));
                    }
                }
                Endpoint::Manual => {}
            }
        }
        let (outbox, deliveries) = Outbox::start(options.outbox.clone());
        let mut dedup = AlertDedup::new();
        for inc in &dispatcher.book().incidents {
            if let Some(key) = &inc.key {
                dedup.remember(key, &inc.kind, inc.lon, inc.lat, inc.reported_ms);
            }
        }
        let mut service = Self {
            dispatcher,
            outbox,
            deliveries,
            api,
            reports,
            sim,
            endpoints,
            dedup,
            notices: VecDeque::new(),
            version: 1,
            last_tick_ms: None,
        };
        let undelivered: Vec<String> = service
            .dispatcher
            .book()
            .undelivered()
            .map(|o| o.id.clone())
            .collect();
        for id in undelivered {
            service.send_order(&id);
        }
        service.publish_all();
        Ok(service)
    }

    /// The status API's base URL (what departments report to).
    pub fn api_url(&self) -> String {
        self.api.base_url()
    }

    fn notice(&mut self, text: String) {
        self.notices.push_back(text);
        while self.notices.len() > MAX_NOTICES {
            self.notices.pop_front();
        }
    }

    /// Runs a command durably, then sends what it implies (orders, urges).
    pub fn execute(
        &mut self,
        command: &Command,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Vec<Event>, DispatchError> {
        let events = self.dispatcher.execute(command, actor, now_ms)?;
        self.after(&events);
        Ok(events)
    }

    fn after(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.version += 1;
        for e in events {
            match e {
                Event::OrderIssued { id, .. } => {
                    self.send_order(id);
                    self.publish(id);
                }
                Event::OrderChanged {
                    id,
                    action: Action::UrgeOrder,
                    note,
                    ..
                } => {
                    self.send_urge(id, note.as_deref());
                    self.publish(id);
                }
                Event::OrderChanged { id, .. } | Event::OrderOverdue { id } => self.publish(id),
                _ => {}
            }
        }
    }

    fn send_order(&mut self, id: &str) {
        let book = self.dispatcher.book();
        let Some(order) = book.order(id) else { return };
        let Some(endpoint) = self.endpoints.get(&order.department) else {
            return;
        };
        let incident = book
            .incident(&order.incident)
            .map_or(serde_json::Value::Null, |i| {
                serde_json::json!({
                    "id": i.id,
                    "kind": i.kind,
                    "title": i.title,
                    "severity": i.severity,
                    "location": {"type": "Point", "coordinates": [i.lon, i.lat]},
                })
            });
        let body = order_body(
            &order.id,
            &order.incident,
            &order.department,
            &order.instruction,
            order.deadline_ms,
            order.issued_ms,
            &self.api.status_url(&order.id),
            incident,
        );
        self.outbox.send(OutgoingOrder {
            order_id: order.id.clone(),
            department: order.department.clone(),
            endpoint: endpoint.clone(),
            body,
            urge: false,
        });
    }

    fn send_urge(&mut self, id: &str, note: Option<&str>) {
        let Some(order) = self.dispatcher.book().order(id) else {
            return;
        };
        let Some(endpoint) = self.endpoints.get(&order.department) else {
            return;
        };
        let by = order
            .steps
            .last()
            .map_or("zhongshu".to_string(), |s| s.who.to_string());
        self.outbox.send(OutgoingOrder {
            order_id: order.id.clone(),
            department: order.department.clone(),
            endpoint: endpoint.clone(),
            body: urge_body(&order.id, order.urges, &by, note),
            urge: true,
        });
    }

    fn publish(&self, id: &str) {
        if let Some(o) = self.dispatcher.book().order(id) {
            self.api.publish(OrderSnapshot {
                order_id: o.id.clone(),
                incident_id: o.incident.clone(),
                department: o.department.clone(),
                status: o.status,
                instruction: o.instruction.clone(),
                deadline_ms: o.deadline_ms,
                issued_at_ms: o.issued_ms,
                updated_at_ms: o.steps.last().map_or(o.issued_ms, |s| s.at_ms),
            });
        }
    }

    fn publish_all(&self) {
        for o in self
            .dispatcher
            .book()
            .orders
            .iter()
            .filter(|o| o.status.is_open() || o.status == OrderStatus::Overdue)
        {
            self.publish(&o.id);
        }
    }

    /// Takes in delivery confirmations and department reports, and runs the clock.
    /// Returns how many events were written.
    pub fn pump(&mut self, now_ms: i64) -> Result<usize, DispatchError> {
        let mut written = 0;
        let system = Actor::system();
        while let Ok(d) = self.deliveries.try_recv() {
            match d {
                // A department may have signed for it before the confirmation of a
                // retried delivery came back: then there is nothing to record.
                DeliveryEvent::Delivered {
                    order_id, attempts, ..
                } if self
                    .dispatcher
                    .book()
                    .order(&order_id)
                    .is_some_and(|o| o.status == OrderStatus::Issued) =>
                {
                    let note = (attempts > 1).then(|| format!("after {attempts} attempts"));
                    let events = self.execute(
                        &Command::Order {
                            id: order_id,
                            action: Action::RecordDelivery,
                            note,
                        },
                        &system,
                        now_ms,
                    )?;
                    written += events.len();
                }
                DeliveryEvent::Failed {
                    order_id,
                    error,
                    permanent: true,
                    ..
                } => {
                    self.notice(format!("{order_id} could not be delivered: {error}"));
                    if let Some(incident) = self
                        .dispatcher
                        .book()
                        .order(&order_id)
                        .map(|o| o.incident.clone())
                    {
                        written += self
                            .execute(
                                &Command::Note {
                                    incident,
                                    text: format!("{order_id} not delivered: {error}"),
                                },
                                &system,
                                now_ms,
                            )?
                            .len();
                    }
                }
                DeliveryEvent::UrgeFailed {
                    order_id,
                    error,
                    permanent: true,
                    ..
                } => self.notice(format!("urging {order_id} failed: {error}")),
                _ => {}
            }
        }
        while let Ok(report) = self.reports.try_recv() {
            written += self.take_report(report, now_ms)?;
        }
        // Deadlines are minutes long: looking at every order four times a second is
        // plenty, and keeps a frame cheap with hundreds of thousands of orders.
        if self
            .last_tick_ms
            .is_none_or(|t| now_ms < t || now_ms - t >= TICK_EVERY_MS)
        {
            self.last_tick_ms = Some(now_ms);
            let events = self.dispatcher.tick(now_ms)?;
            written += events.len();
            self.after(&events);
        }
        Ok(written)
    }

    /// A department's report, checked like any command of its liaison.
    fn take_report(&mut self, report: StatusReport, now_ms: i64) -> Result<usize, DispatchError> {
        let action = match report.status {
            OrderStatus::Acknowledged => Action::AcknowledgeOrder,
            OrderStatus::InProgress => Action::StartOrder,
            OrderStatus::Done => Action::CompleteOrder,
            OrderStatus::Rejected => Action::RejectOrder,
            other => {
                self.notice(format!(
                    "{} reported {other:?} for {}: not a status departments report",
                    report.department, report.order_id
                ));
                return Ok(0);
            }
        };
        let by = if report.by.trim().is_empty() {
            format!("{} liaison", report.department)
        } else {
            report.by.clone()
        };
        let liaison = Actor::new(&by, Role::DepartmentLiaison, Some(&report.department));
        let command = Command::Order {
            id: report.order_id.clone(),
            action,
            note: report.note.clone(),
        };
        match self.execute(&command, &liaison, now_ms) {
            Ok(events) => Ok(events.len()),
            Err(DispatchError::Refused(why)) => {
                // A report that repeats the current status (a department retrying) is
                // not worth a notice.
                let same = self
                    .dispatcher
                    .book()
                    .order(&report.order_id)
                    .is_some_and(|o| o.status == report.status);
                if !same {
                    self.notice(format!(
                        "report from {} on {} refused: {why}",
                        report.department, report.order_id
                    ));
                }
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// An alert from a feed or a CAP message: a new incident, a repeat (nothing), or
    /// the source withdrawing it (noted; closed if nobody has acted on it yet).
    pub fn take_alert(&mut self, alert: &AlertIn, now_ms: i64) -> Result<usize, DispatchError> {
        let system = Actor::system();
        match self.dedup.observe(alert) {
            Decision::New => {
                if alert.cancel {
                    return Ok(0);
                }
                let command = Command::ReportIncident(NewIncident {
                    kind: alert.kind.clone(),
                    title: alert.headline.clone(),
                    domain: alert.domain,
                    severity: alert.severity,
                    lon: alert.lon,
                    lat: alert.lat,
                    source: alert.source.clone(),
                    key: Some(alert.key.clone()),
                });
                match self.execute(&command, &system, now_ms) {
                    Ok(events) => Ok(events.len()),
                    Err(DispatchError::Refused(_)) => Ok(0),
                    Err(e) => Err(e),
                }
            }
            Decision::Duplicate { .. } => Ok(0),
            Decision::Cancel { incident_key } => {
                let Some(inc) = self.dispatcher.book().incident_for_key(&incident_key) else {
                    return Ok(0);
                };
                let (id, status) = (inc.id.clone(), inc.status);
                let mut written = self
                    .execute(
                        &Command::Note {
                            incident: id.clone(),
                            text: format!("{} withdrew the alert", alert.source),
                        },
                        &system,
                        now_ms,
                    )?
                    .len();
                if status == IncidentStatus::Reported {
                    written += self
                        .execute(
                            &Command::Incident {
                                id,
                                action: Action::CloseIncident,
                                note: Some("alert withdrawn before anyone acted".into()),
                            },
                            &system,
                            now_ms,
                        )?
                        .len();
                }
                Ok(written)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::dispatch::book::{NewOrder, Severity};
    use crate::dispatch::config::DispatchConfig;
    use crate::feeds::Domain;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zhongshu-service-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.db")
    }

    fn options(sim: SimBehaviour) -> ServiceOptions {
        ServiceOptions {
            api_addr: "127.0.0.1:0".into(),
            outbox: OutboxConfig {
                backoff_initial: Duration::from_millis(20),
                backoff_max: Duration::from_millis(200),
                request_timeout: Duration::from_secs(2),
                ..Default::default()
            },
            sim,
        }
    }

    fn now() -> i64 {
        crate::feeds::poll::unix_ms_now()
    }

    fn fire() -> Command {
        Command::ReportIncident(NewIncident {
            kind: "building_fire".into(),
            title: "Smoke from a shop roof".into(),
            domain: Domain::Safety,
            severity: Severity::Severe,
            lon: 24.94,
            lat: 60.17,
            source: "map".into(),
            key: None,
        })
    }

    fn orders_to(departments: &[&str], deadline_ms: i64) -> Vec<NewOrder> {
        departments
            .iter()
            .map(|d| NewOrder {
                department: d.to_string(),
                instruction: format!("Go, {d}"),
                deadline_ms,
            })
            .collect()
    }

    /// Pumps until `done` holds or `limit` passes.
    fn pump_until(
        s: &mut DispatchService,
        limit: Duration,
        done: impl Fn(&DispatchService) -> bool,
    ) {
        let started = Instant::now();
        while !done(s) && started.elapsed() < limit {
            s.pump(now()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn orders_go_out_over_http_and_department_reports_come_back_into_the_log() {
        let db = temp_db("e2e");
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let sim = SimBehaviour {
            fail_rate: 0.3,
            reject_rate: 0.0,
            ignore_rate: 0.0,
            speedup: 200.0,
            ..Default::default()
        };
        let mut s = DispatchService::start(dispatcher, options(sim)).unwrap();
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        let t = now();
        s.execute(&fire(), &d, t).unwrap();
        s.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                // Three reachable over HTTP, one recorded by hand.
                orders: orders_to(&["fire", "ems", "power", "central_district"], t + 3_600_000),
            },
            &d,
            t,
        )
        .unwrap();
        let http_done = |s: &DispatchService| {
            s.dispatcher
                .book()
                .orders
                .iter()
                .filter(|o| o.department != "central_district")
                .all(|o| o.status == OrderStatus::Done)
        };
        pump_until(&mut s, Duration::from_secs(20), http_done);
        assert!(http_done(&s), "{:#?}", s.dispatcher.book().orders);
        let book = s.dispatcher.book();
        for o in book
            .orders
            .iter()
            .filter(|o| o.department != "central_district")
        {
            // Every step is in the log with who did it: Zhongshu for delivery, the
            // department's person for the rest.
            let actions: Vec<_> = o.steps.iter().filter_map(|s| s.action).collect();
            assert!(actions.contains(&Action::AcknowledgeOrder), "{o:#?}");
            assert!(
                o.steps
                    .iter()
                    .any(|s| s.role == Role::DepartmentLiaison && &*s.who != "zhongshu")
            );
        }
        // The manual department is waiting for the dispatcher, not the network.
        assert_eq!(
            book.order("ORD-000004").unwrap().status,
            OrderStatus::Issued
        );
        // Delivered exactly once in effect: one job per order at the departments.
        let stats = s.sim.as_ref().unwrap().stats();
        assert_eq!(stats.jobs, 3, "{stats:?}");
        assert!(s.dispatcher.log().verify().unwrap().chain_ok);
    }

    #[test]
    fn a_restart_resends_undelivered_orders_without_duplicating_them() {
        let db = temp_db("restart");
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        let t = now();
        // First run: the departments are down (every POST fails), orders stay issued.
        {
            let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
            let sim = SimBehaviour {
                fail_rate: 1.0,
                ..Default::default()
            };
            let mut s = DispatchService::start(dispatcher, options(sim)).unwrap();
            s.execute(&fire(), &d, t).unwrap();
            s.execute(
                &Command::IssueOrders {
                    incident: "INC-000001".into(),
                    orders: orders_to(&["fire", "ems"], t + 3_600_000),
                },
                &d,
                t,
            )
            .unwrap();
            for _ in 0..20 {
                s.pump(now()).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                s.dispatcher
                    .book()
                    .orders
                    .iter()
                    .all(|o| o.status == OrderStatus::Issued)
            );
        }
        // Restart with the departments back: the outbox picks up where it stopped.
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let sim = SimBehaviour {
            fail_rate: 0.0,
            ignore_rate: 1.0,
            reject_rate: 0.0,
            ..Default::default()
        };
        let mut s = DispatchService::start(dispatcher, options(sim)).unwrap();
        let delivered = |s: &DispatchService| {
            s.dispatcher
                .book()
                .orders
                .iter()
                .all(|o| o.status == OrderStatus::Delivered)
        };
        pump_until(&mut s, Duration::from_secs(10), delivered);
        assert!(delivered(&s), "{:#?}", s.dispatcher.book().orders);
        assert_eq!(s.sim.as_ref().unwrap().stats().jobs, 2);
    }

    #[test]
    fn ignored_orders_go_overdue_are_urged_and_escalate_on_the_clock() {
        let db = temp_db("escalate");
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let sim = SimBehaviour {
            fail_rate: 0.0,
            reject_rate: 0.0,
            ignore_rate: 1.0,
            // Urges are heard but only answered long after the test ends.
            urged_ack_after_s: (3600.0, 3600.0),
            ..Default::default()
        };
        let mut s = DispatchService::start(dispatcher, options(sim)).unwrap();
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        let t = now();
        s.execute(&fire(), &d, t).unwrap();
        s.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: orders_to(&["traffic_police"], t + 10 * 60_000),
            },
            &d,
            t,
        )
        .unwrap();
        pump_until(&mut s, Duration::from_secs(10), |s| {
            s.dispatcher.book().orders[0].status == OrderStatus::Delivered
        });
        // The injected clock: ten minutes on, the deadline has passed.
        s.pump(t + 10 * 60_000).unwrap();
        let o = &s.dispatcher.book().orders[0];
        assert_eq!((o.status, o.urges), (OrderStatus::Overdue, 1));
        // The urge reaches the department over HTTP.
        let sim_urged = |s: &DispatchService| s.sim.as_ref().unwrap().stats().urges >= 1;
        pump_until(&mut s, Duration::from_secs(10), sim_urged);
        assert!(sim_urged(&s));
        // Five minutes' grace, then up the chain to the superior level.
        s.pump(t + 15 * 60_000).unwrap();
        let book = s.dispatcher.book();
        assert_eq!(book.orders[0].status, OrderStatus::Escalated);
        let up = &book.orders[1];
        assert_eq!(
            (up.department.as_str(), up.escalates.as_deref()),
            ("public_security", Some("ORD-000001"))
        );
        // The escalated order is delivered to the superior department too.
        pump_until(&mut s, Duration::from_secs(10), |s| {
            s.dispatcher.book().orders[1].status == OrderStatus::Delivered
        });
        assert_eq!(s.dispatcher.book().orders[1].status, OrderStatus::Delivered);
    }

    #[test]
    fn alerts_raise_one_incident_and_a_withdrawal_closes_an_untouched_one() {
        let db = temp_db("alerts");
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let mut s = DispatchService::start(dispatcher, options(SimBehaviour::default())).unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let t = now();
        for file in ["helsinki-flood-alert.xml", "helsinki-flood-update.xml"] {
            for alert in crate::dispatch::alerts::from_cap(&read(file)).unwrap() {
                s.take_alert(&alert, t).unwrap();
            }
        }
        let book = s.dispatcher.book();
        assert_eq!(book.incidents.len(), 1, "the update is the same incident");
        assert_eq!(book.incidents[0].kind, "waterlogging");
        assert!(book.config.playbook(&book.incidents[0].kind).is_some());
        for alert in crate::dispatch::alerts::from_cap(&read("helsinki-flood-cancel.xml")).unwrap()
        {
            s.take_alert(&alert, t + 1000).unwrap();
        }
        let inc = &s.dispatcher.book().incidents[0];
        assert_eq!(inc.status, IncidentStatus::Closed);
        assert!(inc.timeline.iter().any(|e| e.text.contains("withdrew")));
        // After a restart the same alert is still a duplicate.
        drop(s);
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let mut s = DispatchService::start(dispatcher, options(SimBehaviour::default())).unwrap();
        for alert in crate::dispatch::alerts::from_cap(&read("helsinki-flood-alert.xml")).unwrap() {
            s.take_alert(&alert, t + 2000).unwrap();
        }
        assert_eq!(s.dispatcher.book().incidents.len(), 1);
    }
}
