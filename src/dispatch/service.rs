//! The dispatch service: the durable [`Dispatcher`] joined to its HTTP edges. Orders
//! to departments with an endpoint go out through the [`Outbox`]; departments' status
//! reports come in through the [`StatusApi`] and are answered only once durable;
//! alerts from feeds raise incidents; the clock marks orders overdue, urges and
//! escalates. Every change is written to the log before anything is sent or shown,
//! and nothing taken in is dropped on a storage error: it is kept and tried again.
//! No threads of its own: the owner calls [`DispatchService::pump`] regularly (the
//! console every frame, tests with their own clock).

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;

use super::alerts::{AlertDedup, AlertIn, Decision};
use super::book::{Actor, Command, Event, NewIncident};
use super::config::Endpoint;
use super::delivery::{
    DeliveryEvent, DepartmentAuth, DepartmentSim, OrderSnapshot, Outbox, OutboxConfig,
    OutgoingOrder, ReportIn, ReportOutcome, SimBehaviour, StatusApi, StatusReport, order_body,
    urge_body,
};
use super::dispatcher::{DispatchError, Dispatcher};
use super::{Action, OrderStatus, Role};

/// How the service reaches departments.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Where the status API listens (`127.0.0.1:0` for any free port).
    pub api_addr: String,
    pub outbox: OutboxConfig,
    /// How the simulated departments behave (for departments with
    /// `endpoint = "simulated"`).
    pub sim: SimBehaviour,
    /// The URL departments reach the status API at, when not the listening address.
    pub api_public_url: Option<String>,
    /// HTTPS for the status API: the identity, and its certificate in PEM (which the
    /// in-process simulated departments trust).
    pub api_tls: Option<(crate::http::Tls, Vec<u8>)>,
    /// A console of a hall: the hall's hub talks to departments, runs the clock and
    /// raises incidents from alerts; this service only runs its users' commands and
    /// follows the hall's log (its status API listens on loopback, unannounced).
    pub hall_console: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            api_addr: "127.0.0.1:7878".into(),
            outbox: OutboxConfig::default(),
            sim: SimBehaviour::default(),
            api_public_url: None,
            api_tls: None,
            hall_console: false,
        }
    }
}

/// What a request to a department is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Request {
    Order,
    Urge,
    Cancel,
}

/// How often the clock checks deadlines.
const TICK_EVERY_MS: i64 = 250;

/// At most this many notices are kept for the console.
const MAX_NOTICES: usize = 50;

/// Deliveries held after a storage error, at most (older ones are re-sent from the
/// log after a restart anyway).
const MAX_HELD: usize = 10_000;

/// What became of an alert taken in ([`DispatchService::take_alert`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertTaken {
    /// It raised an incident keyed by the alert's own key.
    Raised,
    /// Another report (or a repeat) of an incident already raised: it joined that
    /// incident, keyed `incident_key`, and raised nothing new.
    Joined { incident_key: String },
    /// Its source's withdrawal, recorded (or remembered for an incident to come).
    Withdrawn,
    /// Nothing raised, and why (the dispatcher refused it, a withdrawal of nothing).
    NotRaised(String),
    /// A hall console: the hall's hub raises incidents from alerts.
    ForTheHub,
}

pub struct DispatchService {
    pub dispatcher: Dispatcher,
    outbox: Outbox,
    deliveries: Receiver<DeliveryEvent>,
    api: StatusApi,
    reports: Receiver<ReportIn>,
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
    /// Delivery results not yet written (a storage error): tried again first.
    held: VecDeque<DeliveryEvent>,
    /// A console of a hall (see [`ServiceOptions::hall_console`]).
    hall_console: bool,
    /// The status API's refusals the dispatcher was last told of, and when.
    refusals_told: (std::collections::BTreeMap<String, u64>, i64),
}

/// How often the dispatcher hears what the status API refused (when it did).
const REFUSALS_EVERY_MS: i64 = 60_000;

/// How far a department's report takes an order, for ordering reports and telling
/// repeats: acknowledged < in progress < done.
fn progress(status: OrderStatus) -> Option<u8> {
    match status {
        OrderStatus::Acknowledged => Some(1),
        OrderStatus::InProgress => Some(2),
        OrderStatus::Done => Some(3),
        _ => None,
    }
}

impl DispatchService {
    /// Starts the status API, the outbox and (when a department is simulated) the
    /// department simulator, then re-sends every order not yet delivered, and the
    /// last urge of every order still waiting: after a restart the outbox carries on
    /// where it stopped; idempotency keys make repeats harmless.
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
        let api_options = super::delivery::StatusApiOptions {
            public_url: options.api_public_url.clone(),
            tls: options.api_tls.as_ref().map(|(tls, _)| tls.clone()),
            ..Default::default()
        };
        let api_addr = if options.hall_console {
            "127.0.0.1:0"
        } else {
            options.api_addr.as_str()
        };
        let (api, reports) = StatusApi::start_with(api_addr, auth, api_options)
            .map_err(|e| anyhow::anyhow!("cannot start the status API on {api_addr}: {e:#}"))?;
        let simulated: Vec<_> = config
            .departments
            .iter()
            .filter(|d| d.endpoint == Endpoint::Simulated && !options.hall_console)
            .collect();
        let sim = if simulated.is_empty() {
            None
        } else {
            let mut behaviour = options.sim.clone();
            // The simulated departments report to this API and nowhere else, over
            // loopback (a public URL may not be reachable from inside).
            let scheme = if options.api_tls.is_some() {
                "https"
            } else {
                "http"
            };
            behaviour.report_to = format!("{scheme}://127.0.0.1:{}", api.addr().port());
            behaviour.report_ca_pem = options.api_tls.as_ref().map(|(_, pem)| pem.clone());
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
                // The hall's hub sends these over the link between halls.
                Endpoint::Manual | Endpoint::Hall(_) => {}
            }
        }
        if options.hall_console {
            // The hub delivers; a console never does.
            endpoints.clear();
        }
        let mut outbox_config = options.outbox.clone();
        if outbox_config.key_scope.is_empty() {
            outbox_config.key_scope = dispatcher.log().log_id().to_string();
        }
        let (outbox, deliveries) = Outbox::start(outbox_config);
        let dedup = Self::rebuild_dedup(&dispatcher);
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
            refusals_told: (Default::default(), i64::MIN / 2),
            held: VecDeque::new(),
            hall_console: options.hall_console,
        };
        let book = service.dispatcher.book();
        let undelivered: Vec<String> = book.undelivered().map(|o| o.id.clone()).collect();
        let urged: Vec<String> = book
            .orders
            .iter()
            // An urge waits in the outbox until its order is delivered.
            .filter(|o| o.urges > 0 && o.status.is_pending())
            .map(|o| o.id.clone())
            .collect();
        for id in undelivered {
            service.send_order(&id);
        }
        for id in urged {
            service.send_urge(&id, Some("repeated after a restart"));
        }
        // Cancellations of the last day may not have gone out before the stop; the
        // department de-duplicates them by key.
        let since = crate::clock::unix_ms_now() - 24 * 3_600_000;
        let cancelled: Vec<String> = service
            .dispatcher
            .book()
            .orders
            .iter()
            .filter(|o| {
                matches!(o.status, OrderStatus::Cancelled | OrderStatus::Escalated)
                    && o.steps.last().is_some_and(|s| s.at_ms >= since)
            })
            .map(|o| o.id.clone())
            .collect();
        for id in cancelled {
            service.send_cancel(&id, Some("withdrawn (repeated after a restart)"));
        }
        service.publish_all();
        Ok(service)
    }

    /// The alert de-duplication as the log left it: every incident raised from an
    /// alert, with its source and whether its source withdrew it.
    fn rebuild_dedup(dispatcher: &Dispatcher) -> AlertDedup {
        let mut dedup = AlertDedup::new();
        for inc in &dispatcher.book().incidents {
            if let Some(key) = &inc.key {
                dedup.remember(key, &inc.kind, inc.lon, inc.lat, inc.reported_ms);
                dedup.remember_source(key, &inc.source);
                if inc.withdrawn {
                    dedup.remember_cancel(key);
                }
            }
        }
        dedup
    }

    /// Whether this is a console of a hall.
    pub fn is_hall_console(&self) -> bool {
        self.hall_console
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

    /// Tells the dispatcher, at most once a minute, what the status API refused
    /// since (wrong tokens, too fast, too large, too slow): someone is guessing, or
    /// a department is misconfigured.
    fn tell_refusals(&mut self, now_ms: i64) {
        if now_ms - self.refusals_told.1 < REFUSALS_EVERY_MS {
            return;
        }
        let refused = self.api.refused();
        let grown: Vec<(String, u64)> = refused
            .iter()
            .map(|(why, n)| {
                (
                    why.clone(),
                    n - self.refusals_told.0.get(why).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        self.refusals_told = (refused, now_ms);
        if !grown.is_empty() {
            let total: u64 = grown.iter().map(|(_, n)| n).sum();
            let list: Vec<String> = grown.iter().map(|(why, n)| format!("{why} {n}")).collect();
            self.notice(format!(
                "the status API refused {total} requests ({})",
                list.join(", ")
            ));
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
                Event::OrderChanged {
                    id,
                    action: Action::CancelOrder,
                    note,
                    ..
                } => {
                    // Nothing queued for it reaches the department any more; the
                    // department is told the order is withdrawn.
                    self.outbox.withdraw(id);
                    self.send_cancel(id, note.as_deref());
                    self.publish(id);
                }
                Event::OrderChanged {
                    id,
                    action: Action::EscalateOrder,
                    ..
                } => {
                    // Taken away: what is still queued for it is dropped, and the
                    // department is told, so a late sign-for does not meet a refusal
                    // it cannot explain.
                    self.outbox.withdraw(id);
                    self.send_cancel(id, Some("escalated to the superior level"));
                    self.publish(id);
                }
                Event::OrderChanged {
                    id,
                    action: Action::CompleteOrder | Action::RejectOrder,
                    ..
                } => {
                    // Finished: queued urges for it are pointless.
                    self.outbox.withdraw(id);
                    self.publish(id);
                }
                Event::OrderChanged { id, .. } | Event::OrderOverdue { id } => self.publish(id),
                _ => {}
            }
        }
    }

    /// Queues a request about an order to its department (if it has an endpoint),
    /// signed with the department's token; `body` makes the JSON from the order.
    fn send(
        &self,
        id: &str,
        kind: Request,
        body: impl FnOnce(&super::book::Order) -> serde_json::Value,
    ) {
        let book = self.dispatcher.book();
        let Some(order) = book.order(id) else { return };
        let Some(endpoint) = self.endpoints.get(&order.department) else {
            return;
        };
        self.outbox.send(OutgoingOrder {
            order_id: order.id.clone(),
            department: order.department.clone(),
            endpoint: endpoint.clone(),
            body: body(order),
            urge: kind == Request::Urge,
            cancel: kind == Request::Cancel,
            signing_key: book
                .config
                .department(&order.department)
                .and_then(|d| d.token.clone()),
        });
    }

    fn send_order(&mut self, id: &str) {
        let book = self.dispatcher.book();
        let status_url = self.api.status_url(id);
        self.send(id, Request::Order, |order| {
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
            order_body(
                &order.id,
                &order.incident,
                &order.department,
                &order.instruction,
                order.deadline_ms,
                order.issued_ms,
                &status_url,
                incident,
            )
        });
    }

    fn send_urge(&mut self, id: &str, note: Option<&str>) {
        self.send(id, Request::Urge, |order| {
            let by = order
                .steps
                .last()
                .map_or("zhongshu".to_string(), |s| s.who.to_string());
            urge_body(&order.id, order.urges, &by, note)
        });
    }

    /// Tells the department an order is withdrawn. Sent even when no delivery is on
    /// record: an attempt may have reached the department before it timed out; one
    /// that never had it answers 404, which the outbox takes as done.
    fn send_cancel(&mut self, id: &str, note: Option<&str>) {
        self.send(id, Request::Cancel, |order| {
            serde_json::json!({
                "order_id": order.id,
                "status": "cancelled",
                "reason": note,
            })
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
            .filter(|o| o.status.is_pending())
        {
            self.publish(&o.id);
        }
    }

    /// Takes in delivery confirmations and department reports, and runs the clock.
    /// Returns how many events were written. On a storage error, what was committed
    /// before it is still sent, deliveries not yet written are kept for the next
    /// pump, and reports are answered "not recorded, try again".
    pub fn pump(&mut self, now_ms: i64) -> Result<usize, DispatchError> {
        let mut written = 0;
        self.tell_refusals(now_ms);
        // In a hall, what other consoles wrote (orders to send, cancellations) is
        // taken in first, so this service acts on it like on its own commands.
        self.dispatcher.sync()?;
        let mut foreign: Vec<Event> = Vec::new();
        for f in self.dispatcher.take_foreign() {
            if f.event.permitted_for(f.role) {
                foreign.push(f.event);
            } else {
                // Written past the consoles' checks (a forged commit): shown in the
                // log for the audit, never acted on.
                self.notice(format!(
                    "not acted on: {} by {} ({}) is not permitted for that role",
                    f.event.kind(),
                    f.operator,
                    f.role.as_str()
                ));
            }
        }
        self.after(&foreign);
        while let Ok(d) = self.deliveries.try_recv() {
            self.held.push_back(d);
        }
        while let Some(d) = self.held.pop_front() {
            match self.take_delivery(&d, now_ms) {
                Ok(n) => written += n,
                Err(e) => {
                    self.held.push_front(d);
                    self.held.truncate(MAX_HELD);
                    return Err(e);
                }
            }
        }
        // Reports taken together are applied in the order they happened per order.
        let mut reports: Vec<ReportIn> = self.reports.try_iter().collect();
        if self.hall_console {
            // Departments report to the hall's hub, never to a console.
            for r in reports.drain(..) {
                r.answer(ReportOutcome::Refused {
                    reason: "this is a console of a hall: report to the hall's hub".into(),
                });
            }
        }
        reports.sort_by(|a, b| {
            let key = |r: &StatusReport| (r.order_id.clone(), r.at_ms, progress(r.status));
            key(&a.report).cmp(&key(&b.report))
        });
        let mut failure = None;
        for r in reports {
            if let Some(e) = &failure {
                r.answer(ReportOutcome::Unavailable {
                    reason: format!("{e}"),
                });
                continue;
            }
            match self.take_report(&r.report, now_ms) {
                Ok((n, outcome)) => {
                    written += n;
                    r.answer(outcome);
                }
                Err(e) => {
                    r.answer(ReportOutcome::Unavailable {
                        reason: "the event log is unavailable".into(),
                    });
                    failure = Some(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // Deadlines are minutes long: looking at every order four times a second is
        // plenty, and keeps a frame cheap with hundreds of thousands of orders.
        if !self.hall_console
            && self
                .last_tick_ms
                .is_none_or(|t| now_ms < t || now_ms - t >= TICK_EVERY_MS)
        {
            self.last_tick_ms = Some(now_ms);
            let mut events = Vec::new();
            let ticked = self.dispatcher.tick(now_ms, &mut events);
            written += events.len();
            self.after(&events);
            ticked?;
        }
        Ok(written)
    }

    /// One result from the outbox.
    fn take_delivery(&mut self, d: &DeliveryEvent, now_ms: i64) -> Result<usize, DispatchError> {
        let system = Actor::system();
        match d {
            DeliveryEvent::Delivered {
                order_id, attempts, ..
            } => {
                // Record it for an order still waiting for its delivery, also one that
                // went overdue meanwhile (the department has it; it stays overdue
                // until signed for). One signed for already needs nothing.
                let Some(order) = self.dispatcher.book().order(order_id) else {
                    return Ok(0);
                };
                // Withdrawn while the delivery was on its way: the department is told.
                if matches!(
                    order.status,
                    OrderStatus::Cancelled | OrderStatus::Escalated
                ) {
                    let id = order_id.clone();
                    self.send_cancel(&id, Some("withdrawn while it was being delivered"));
                    return Ok(0);
                }
                let wanted = order.delivered_ms.is_none()
                    && matches!(order.status, OrderStatus::Issued | OrderStatus::Overdue);
                if !wanted {
                    return Ok(0);
                }
                let note = (*attempts > 1).then(|| format!("after {attempts} attempts"));
                let command = Command::Order {
                    id: order_id.clone(),
                    action: Action::RecordDelivery,
                    note,
                };
                match self.execute(&command, &system, now_ms) {
                    Ok(events) => Ok(events.len()),
                    Err(e) if e.is_refusal() => Ok(0),
                    Err(e) => Err(e),
                }
            }
            DeliveryEvent::Failed {
                order_id,
                error,
                permanent: true,
                ..
            } => {
                let Some(incident) = self
                    .dispatcher
                    .book()
                    .order(order_id)
                    .filter(|o| o.status.is_pending())
                    .map(|o| o.incident.clone())
                else {
                    // A cancellation that could not be delivered: said, not dropped.
                    self.notice(format!("{order_id}: {error}"));
                    return Ok(0);
                };
                let command = Command::Note {
                    incident,
                    text: format!("{order_id} not delivered: {error}"),
                };
                let n = self.execute(&command, &system, now_ms)?.len();
                self.notice(format!("{order_id} could not be delivered: {error}"));
                Ok(n)
            }
            DeliveryEvent::UrgeFailed {
                order_id,
                error,
                permanent: true,
                ..
            } => {
                self.notice(format!("urging {order_id} failed: {error}"));
                Ok(0)
            }
            _ => Ok(0),
        }
    }

    /// A department's report, checked like any command of its liaison. A report of a
    /// later step implies the earlier ones (in progress implies signed for); a report
    /// of a step the order is already past is a repeat, answered as such.
    pub fn take_report(
        &mut self,
        report: &StatusReport,
        now_ms: i64,
    ) -> Result<(usize, ReportOutcome), DispatchError> {
        let refused = |reason: String| Ok((0, ReportOutcome::Refused { reason }));
        let Some(order) = self.dispatcher.book().order(&report.order_id) else {
            return refused(format!("no order {}", report.order_id));
        };
        if order.department != report.department {
            return refused(format!(
                "{} is an order to {}, not {}",
                report.order_id, order.department, report.department
            ));
        }
        let current = order.status;
        let already = match (progress(current), progress(report.status)) {
            (Some(now), Some(wanted)) => wanted <= now,
            _ => current == report.status,
        };
        if already {
            return Ok((0, ReportOutcome::AlreadyRecorded { status: current }));
        }
        // One command; the book adds the sign-for a later step implies, in the same
        // commit.
        let action = match report.status {
            OrderStatus::Acknowledged => Action::AcknowledgeOrder,
            OrderStatus::InProgress => Action::StartOrder,
            OrderStatus::Done => Action::CompleteOrder,
            OrderStatus::Rejected => Action::RejectOrder,
            other => {
                return refused(format!("{other:?} is not a status departments report"));
            }
        };
        let by = if report.by.trim().is_empty() {
            format!("{} liaison", report.department)
        } else {
            report.by.clone()
        };
        let liaison = Actor::new(&by, Role::DepartmentLiaison, Some(&report.department));
        let command = Command::Report {
            id: report.order_id.clone(),
            action,
            note: report.note.clone(),
            reported_ms: report.at_ms,
        };
        let written = match self.execute(&command, &liaison, now_ms) {
            Ok(events) => events.len(),
            Err(why) if why.is_refusal() => {
                let text = format!(
                    "report from {} on {} refused: {why}",
                    report.department, report.order_id
                );
                self.notice(text);
                return Ok((
                    0,
                    ReportOutcome::Refused {
                        reason: why.to_string(),
                    },
                ));
            }
            Err(e) => return Err(e),
        };
        let status = self
            .dispatcher
            .book()
            .order(&report.order_id)
            .map_or(report.status, |o| o.status);
        Ok((written, ReportOutcome::Recorded { status }))
    }

    /// An alert from a feed or a CAP message: a new incident, a repeat (joins the
    /// incident it repeats, raising nothing), or
    /// the source withdrawing it (recorded; closed if nobody has acted on it yet).
    /// The alert is remembered only once what it caused is durable, so an alert whose
    /// write failed is new again at the next poll.
    pub fn take_alert(
        &mut self,
        alert: &AlertIn,
        now_ms: i64,
    ) -> Result<AlertTaken, DispatchError> {
        if self.hall_console {
            // The hall's hub raises incidents from alerts, once for every console.
            return Ok(AlertTaken::ForTheHub);
        }
        let system = Actor::system();
        let taken = match self.dedup.decide(alert) {
            Decision::New => {
                if alert.cancel {
                    AlertTaken::NotRaised("a withdrawal of nothing raised".into())
                } else {
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
                        Ok(_) => AlertTaken::Raised,
                        Err(e) if e.is_refusal() => AlertTaken::NotRaised(e.to_string()),
                        Err(e) => return Err(e),
                    }
                }
            }
            Decision::Duplicate { incident_key } => AlertTaken::Joined { incident_key },
            Decision::Cancel { incident_key } => {
                match self.dispatcher.book().incident_for_key(&incident_key) {
                    None => AlertTaken::Withdrawn,
                    Some(inc) => {
                        // The last of several reporters withdrawing: the source that
                        // raised it withdrew first, and its withdrawal takes effect now.
                        let source = if inc.source != alert.source
                            && self.dedup.reported_by(&incident_key, &alert.source)
                            && self.dedup.has_withdrawn(&incident_key, &inc.source)
                        {
                            inc.source.clone()
                        } else {
                            alert.source.clone()
                        };
                        let command = Command::WithdrawAlert {
                            incident: inc.id.clone(),
                            source,
                        };
                        match self.execute(&command, &system, now_ms) {
                            Ok(_) => AlertTaken::Withdrawn,
                            Err(why) if why.is_refusal() => {
                                // Not remembered either: a foreign source's cancel
                                // changes nothing about the incident.
                                self.notice(format!("withdrawal refused: {why}"));
                                return Ok(AlertTaken::NotRaised(format!(
                                    "withdrawal refused: {why}"
                                )));
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
        };
        self.dedup.observe(alert);
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::dispatch::IncidentStatus;
    use crate::dispatch::book::NewOrder;
    use crate::dispatch::config::DispatchConfig;

    fn temp_db(name: &str) -> std::path::PathBuf {
        crate::dispatch::testing::temp_db("service", name)
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
            ..Default::default()
        }
    }

    /// A service on a fresh log named `name`, its departments behaving as `sim`.
    fn service(name: &str, sim: SimBehaviour) -> (std::path::PathBuf, DispatchService) {
        let db = temp_db(name);
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        (
            db,
            DispatchService::start(dispatcher, options(sim)).unwrap(),
        )
    }

    fn now() -> i64 {
        crate::clock::unix_ms_now()
    }

    use crate::dispatch::testing::fire;

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
    fn the_dispatcher_hears_what_the_status_api_refused() {
        let (_db, mut s) = service("refusals", SimBehaviour::default());
        s.pump(now()).unwrap();
        let client = crate::http::client();
        for i in 0..3 {
            let answer = client
                .post(format!("{}/api/v1/orders/ORD-000001/status", s.api_url()))
                .bearer_auth(format!("guess-{i}"))
                .body(r#"{"status":"done","by":"x"}"#)
                .send()
                .unwrap();
            assert_eq!(answer.status().as_u16(), 401);
        }
        // Told once the minute has passed, with why.
        s.pump(now()).unwrap();
        assert!(
            !s.notices.iter().any(|n| n.contains("refused")),
            "{:?}",
            s.notices
        );
        s.pump(now() + REFUSALS_EVERY_MS).unwrap();
        assert!(
            s.notices
                .iter()
                .any(|n| n.contains("refused 3 requests (unauthorized 3)")),
            "{:?}",
            s.notices
        );
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
        let (db, mut s) = service("alerts", SimBehaviour::default());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let t = now();
        let mut taken = Vec::new();
        for file in ["helsinki-flood-alert.xml", "helsinki-flood-update.xml"] {
            for alert in crate::dispatch::alerts::from_cap(&read(file)).unwrap() {
                taken.push(s.take_alert(&alert, t).unwrap());
            }
        }
        let book = s.dispatcher.book();
        assert_eq!(book.incidents.len(), 1, "the update is the same incident");
        // Each alert says what became of it: the first raised the incident, the
        // update joined it.
        let key = book.incidents[0].key.clone().unwrap();
        assert_eq!(
            taken,
            vec![AlertTaken::Raised, AlertTaken::Joined { incident_key: key }]
        );
        assert_eq!(book.incidents[0].kind, "waterlogging");
        assert!(book.config.playbook(&book.incidents[0].kind).is_some());
        for alert in crate::dispatch::alerts::from_cap(&read("helsinki-flood-cancel.xml")).unwrap()
        {
            assert_eq!(
                s.take_alert(&alert, t + 1000).unwrap(),
                AlertTaken::Withdrawn
            );
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

    fn post(url: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
        let r = crate::http::client()
            .post(url)
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(serde_json::Value::Null))
    }

    /// Departments that take orders and never report by themselves.
    fn silent() -> SimBehaviour {
        SimBehaviour::silent()
    }

    fn one_order(s: &mut DispatchService, department: &str, deadline_ms: i64) {
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        let t = now();
        s.execute(&fire(), &d, t).unwrap();
        s.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: orders_to(&[department], deadline_ms),
            },
            &d,
            t,
        )
        .unwrap();
    }

    #[test]
    fn a_report_is_acknowledged_only_once_it_is_in_the_log() {
        let (db, mut s) = service("durable-report", silent());
        one_order(&mut s, "fire", now() + 3_600_000);
        let url = s.api.status_url("ORD-000001");
        let posting = {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &url,
                    "demo-fire",
                    r#"{"status":"acknowledged","by":"Wang Fang"}"#,
                )
            })
        };
        // Not pumped: not written, so not answered.
        std::thread::sleep(Duration::from_millis(300));
        assert!(!posting.is_finished(), "answered before the write");
        let started = Instant::now();
        while !posting.is_finished() && started.elapsed() < Duration::from_secs(5) {
            s.pump(now()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let (status, body) = posting.join().unwrap();
        assert_eq!(status, 202, "{body}");
        // It is on disk: another reader of the file sees it.
        let on_disk = crate::store::EventLog::open_unsealed(&db)
            .unwrap()
            .events()
            .unwrap();
        assert!(
            on_disk
                .iter()
                .any(|e| e.operator == "Wang Fang" && e.payload.contains("acknowledge_order")),
            "{on_disk:#?}"
        );
        // A repeat is harmless and says so.
        let repeat = {
            let url = url.clone();
            std::thread::spawn(move || {
                post(
                    &url,
                    "demo-fire",
                    r#"{"status":"acknowledged","by":"Wang Fang"}"#,
                )
            })
        };
        while !repeat.is_finished() {
            s.pump(now()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(repeat.join().unwrap().0, 200);
        // The service gone (a crash): a report is refused with 503, never a 202.
        let url2 = s.api.status_url("ORD-000001");
        let lost = std::thread::spawn(move || {
            post(&url2, "demo-fire", r#"{"status":"done","by":"Wang Fang"}"#)
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(s);
        let (status, _) = lost.join().unwrap_or((503, serde_json::Value::Null));
        assert_ne!(status, 202);
    }

    #[test]
    fn reports_out_of_order_are_applied_in_order_and_none_is_refused() {
        let (_db, mut s) = service("report-order", silent());
        one_order(&mut s, "fire", now() + 3_600_000);
        let url = s.api.status_url("ORD-000001");
        let at = |secs: i64| crate::clock::rfc3339_from_unix_ms(now() - 60_000 + secs * 1000);
        // "in progress" overtakes "acknowledged" on the way.
        let bodies = [
            format!(
                r#"{{"status":"in_progress","by":"Wang Fang","at":"{}"}}"#,
                at(2)
            ),
            format!(
                r#"{{"status":"acknowledged","by":"Wang Fang","at":"{}"}}"#,
                at(1)
            ),
        ];
        for body in bodies {
            let url = url.clone();
            let t = std::thread::spawn(move || post(&url, "demo-fire", &body));
            while !t.is_finished() {
                s.pump(now()).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            let (status, answer) = t.join().unwrap();
            assert!(status == 202 || status == 200, "{status} {answer}");
        }
        let o = s.dispatcher.book().order("ORD-000001").unwrap().clone();
        assert_eq!(o.status, OrderStatus::InProgress);
        let actions: Vec<_> = o
            .steps
            .iter()
            .filter_map(|x| x.action)
            .filter(|a| *a != Action::RecordDelivery)
            .collect();
        assert_eq!(
            actions,
            [
                Action::IssueOrder,
                Action::AcknowledgeOrder,
                Action::StartOrder
            ]
        );
        // The department's own time is kept with the step.
        let start = o
            .steps
            .iter()
            .find(|x| x.action == Some(Action::StartOrder))
            .unwrap();
        assert!(start.reported_ms.is_some());
        assert!(s.notices.is_empty(), "{:?}", s.notices);
    }

    #[test]
    fn closing_an_incident_withdraws_its_orders_at_the_department() {
        let (_db, mut s) = service("cancel", silent());
        one_order(&mut s, "fire", now() + 3_600_000);
        pump_until(&mut s, Duration::from_secs(10), |s| {
            s.dispatcher.book().orders[0].status == OrderStatus::Delivered
        });
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        s.execute(
            &Command::Incident {
                id: "INC-000001".into(),
                action: Action::ResolveIncident,
                note: Some("false alarm".into()),
            },
            &d,
            now(),
        )
        .unwrap();
        assert_eq!(s.dispatcher.book().orders[0].status, OrderStatus::Cancelled);
        let cancelled = |s: &DispatchService| s.sim.as_ref().unwrap().stats().cancelled == 1;
        pump_until(&mut s, Duration::from_secs(10), cancelled);
        assert!(cancelled(&s));
        // The cancellation's own confirmation sends nothing more.
        let before = s.sim.as_ref().unwrap().stats().received;
        for _ in 0..50 {
            s.pump(now()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.sim.as_ref().unwrap().stats().received, before);
        assert!(s.sim.as_ref().unwrap().jobs()[0].cancelled);
        // Past the deadline nothing is urged or escalated.
        s.pump(now() + 2 * 3_600_000).unwrap();
        assert_eq!(s.dispatcher.book().orders.len(), 1);
        assert_eq!(s.dispatcher.book().orders[0].urges, 0);
    }

    #[test]
    fn a_restart_resends_overdue_undelivered_orders_and_urges() {
        let db = temp_db("restart-overdue");
        let t = now();
        {
            let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
            let down = SimBehaviour {
                fail_rate: 1.0,
                ..silent()
            };
            let mut s = DispatchService::start(dispatcher, options(down)).unwrap();
            one_order(&mut s, "fire", t + 60_000);
            s.pump(t + 60_000).unwrap();
            let o = &s.dispatcher.book().orders[0];
            assert_eq!(
                (o.status, o.urges, o.delivered_ms),
                (OrderStatus::Overdue, 1, None)
            );
        }
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let mut s = DispatchService::start(dispatcher, options(silent())).unwrap();
        let delivered = |s: &DispatchService| {
            s.dispatcher.book().orders[0].delivered_ms.is_some()
                && s.sim.as_ref().unwrap().stats().urges >= 1
        };
        pump_until(&mut s, Duration::from_secs(10), delivered);
        assert!(delivered(&s), "{:#?}", s.dispatcher.book().orders[0]);
        // Delivered late: still overdue (not signed for), now with its delivery.
        assert_eq!(s.dispatcher.book().orders[0].status, OrderStatus::Overdue);
    }

    #[test]
    fn idempotency_keys_are_unique_across_logs() {
        // One department system, two event logs that both start at ORD-000001.
        let mut tokens = std::collections::HashMap::new();
        tokens.insert("fire".to_string(), "fire-token-0123456789".to_string());
        let department =
            DepartmentSim::start("127.0.0.1:0", SimBehaviour { tokens, ..silent() }).unwrap();
        let config = DispatchConfig::parse(
            &format!(
                "[[department]]\nid='fire'\nname='Fire'\ndomain='safety'\nlevel='city'\nendpoint='{}'\ntoken='fire-token-0123456789'\n[[playbook]]\nkind='building_fire'\ntitle='Fire'\norders=[{{department='fire', instruction='Go', deadline_min=30}}]",
                department.endpoint("fire")
            ),
            "test",
        )
        .unwrap();
        for name in ["log-a", "log-b"] {
            let dispatcher = Dispatcher::open(&temp_db(name), config.clone()).unwrap();
            let mut s = DispatchService::start(dispatcher, options(silent())).unwrap();
            one_order(&mut s, "fire", now() + 3_600_000);
            pump_until(&mut s, Duration::from_secs(10), |s| {
                s.dispatcher.book().orders[0].status == OrderStatus::Delivered
            });
            assert_eq!(s.dispatcher.book().orders[0].id, "ORD-000001");
        }
        let stats = department.stats();
        assert_eq!((stats.jobs, stats.duplicates), (2, 0), "{stats:?}");
    }

    #[test]
    fn an_alert_whose_write_failed_is_new_again_and_withdrawals_survive_a_restart() {
        let db = temp_db("alert-fail");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let alert = crate::dispatch::alerts::from_cap(&read("helsinki-flood-alert.xml"))
            .unwrap()
            .remove(0);
        let t = now();
        {
            let (log, fail_from) = crate::store::testing::FailingLog::open(&db);
            let dispatcher =
                Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
            let mut s =
                DispatchService::start(dispatcher, options(SimBehaviour::default())).unwrap();
            fail_from.store(1, std::sync::atomic::Ordering::Relaxed);
            assert!(s.take_alert(&alert, t).is_err());
            assert!(s.dispatcher.book().incidents.is_empty());
            fail_from.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
            // The next poll brings the same alert: it is not a "duplicate".
            s.take_alert(&alert, t + 1000).unwrap();
            assert_eq!(s.dispatcher.book().incidents.len(), 1);
            for file in ["helsinki-flood-update.xml", "helsinki-flood-cancel.xml"] {
                for a in crate::dispatch::alerts::from_cap(&read(file)).unwrap() {
                    s.take_alert(&a, t + 2000).unwrap();
                }
            }
            assert!(
                s.dispatcher.book().incidents[0].withdrawn,
                "{:?} {:#?}",
                s.notices,
                s.dispatcher.book().incidents[0].timeline
            );
        }
        // After a restart the cancel, polled again, adds nothing.
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let events = dispatcher.log().len();
        let mut s = DispatchService::start(dispatcher, options(SimBehaviour::default())).unwrap();
        for file in [
            "helsinki-flood-alert.xml",
            "helsinki-flood-update.xml",
            "helsinki-flood-cancel.xml",
        ] {
            for a in crate::dispatch::alerts::from_cap(&read(file)).unwrap() {
                s.take_alert(&a, t + 3000).unwrap();
            }
        }
        assert_eq!(s.dispatcher.log().len(), events);
    }

    #[test]
    fn an_incident_two_sources_report_is_withdrawn_when_both_have_withdrawn() {
        let (_db, mut s) = service("merged-withdraw", SimBehaviour::default());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        let one = |f: &str| {
            crate::dispatch::alerts::from_cap(&read(f))
                .unwrap()
                .remove(0)
        };
        let flood = one("helsinki-flood-alert.xml");
        // A water sensor reports the same waterlogging: one incident.
        let sensor = |cancel: bool| AlertIn {
            key: "urn:ngsi-ld:Alert:waterlogging-9".into(),
            source: "ngsi-ld:sim-urban".into(),
            supersedes: Vec::new(),
            cancel,
            ..flood.clone()
        };
        let t = now();
        s.take_alert(&flood, t).unwrap();
        s.take_alert(&sensor(false), t).unwrap();
        assert_eq!(s.dispatcher.book().incidents.len(), 1);
        // The agency cancels its warning: the sensor still reports the water.
        for f in ["helsinki-flood-update.xml", "helsinki-flood-cancel.xml"] {
            s.take_alert(&one(f), t + 1000).unwrap();
        }
        assert!(!s.dispatcher.book().incidents[0].withdrawn);
        // A feed that never reported it cannot end it, even now.
        s.take_alert(
            &AlertIn {
                source: "ngsi-ld:someone-else".into(),
                ..sensor(true)
            },
            t + 1500,
        )
        .unwrap();
        assert!(!s.dispatcher.book().incidents[0].withdrawn);
        s.notices.clear();
        // The sensor clears too: withdrawn, by its source, and nothing refused.
        s.take_alert(&sensor(true), t + 2000).unwrap();
        let inc = &s.dispatcher.book().incidents[0];
        assert!(inc.withdrawn, "{:?} {:#?}", s.notices, inc.timeline);
        assert!(
            !s.notices.iter().any(|n| n.contains("refused")),
            "{:?}",
            s.notices
        );
    }

    #[test]
    fn only_the_source_of_an_alert_may_withdraw_it() {
        let (_db, mut s) = service("foreign-cancel", SimBehaviour::default());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let xml = std::fs::read_to_string(dir.join("kallio-building-fire.xml")).unwrap();
        let fire = crate::dispatch::alerts::from_cap(&xml).unwrap().remove(0);
        s.take_alert(&fire, now()).unwrap();
        // Another feed claims the same key and says it is over.
        let forged = AlertIn {
            source: "ngsi-ld:someone-else".into(),
            cancel: true,
            ..fire.clone()
        };
        s.take_alert(&forged, now()).unwrap();
        let inc = &s.dispatcher.book().incidents[0];
        assert_eq!(inc.status, IncidentStatus::Reported);
        assert!(!inc.withdrawn);
        assert!(s.notices.iter().any(|n| n.contains("cannot withdraw")));
    }

    #[test]
    fn over_https_departments_report_and_the_status_url_is_the_public_one() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        let tls =
            crate::http::Tls::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
        let pem = std::fs::read(dir.join("cert.pem")).unwrap();
        let db = temp_db("https");
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        let sim = SimBehaviour {
            fail_rate: 0.0,
            reject_rate: 0.0,
            ignore_rate: 0.0,
            speedup: 200.0,
            ..Default::default()
        };
        let mut s = DispatchService::start(
            dispatcher,
            ServiceOptions {
                api_public_url: Some("https://zhongshu.example.org:7878/".into()),
                api_tls: Some((tls, pem)),
                ..options(sim)
            },
        )
        .unwrap();
        assert_eq!(s.api_url(), "https://zhongshu.example.org:7878");
        assert_eq!(
            s.api.status_url("ORD-000001"),
            "https://zhongshu.example.org:7878/api/v1/orders/ORD-000001/status"
        );
        one_order(&mut s, "fire", now() + 3_600_000);
        let done = |s: &DispatchService| s.dispatcher.book().orders[0].status == OrderStatus::Done;
        pump_until(&mut s, Duration::from_secs(20), done);
        assert!(done(&s), "{:#?}", s.dispatcher.book().orders[0]);
    }

    #[test]
    fn a_report_on_an_overdue_order_records_the_sign_for_too() {
        let (_db, mut s) = service("overdue-report", silent());
        let t = now();
        one_order(&mut s, "fire", t + 60_000);
        s.pump(t + 60_000).unwrap();
        assert_eq!(s.dispatcher.book().orders[0].status, OrderStatus::Overdue);
        let url = s.api.status_url("ORD-000001");
        let posting = std::thread::spawn(move || {
            post(
                &url,
                "demo-fire",
                r#"{"status":"in_progress","by":"Wang Fang"}"#,
            )
        });
        while !posting.is_finished() {
            s.pump(t + 61_000).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(posting.join().unwrap().0, 202);
        let o = &s.dispatcher.book().orders[0];
        assert_eq!(o.status, OrderStatus::InProgress);
        assert!(
            o.steps
                .iter()
                .any(|x| x.action == Some(Action::AcknowledgeOrder))
        );
    }

    #[test]
    fn an_escalated_order_is_withdrawn_at_its_first_department() {
        let (_db, mut s) = service("escalate-cancel", silent());
        let t = now();
        one_order(&mut s, "traffic_police", t + 60_000);
        pump_until(&mut s, Duration::from_secs(10), |s| {
            s.dispatcher.book().orders[0].status == OrderStatus::Delivered
        });
        s.pump(t + 60_000).unwrap();
        s.pump(t + 6 * 60_000).unwrap();
        assert_eq!(s.dispatcher.book().orders[0].status, OrderStatus::Escalated);
        let withdrawn = |s: &DispatchService| {
            s.sim
                .as_ref()
                .unwrap()
                .jobs()
                .iter()
                .any(|j| j.department == "traffic_police" && j.cancelled)
        };
        pump_until(&mut s, Duration::from_secs(10), withdrawn);
        assert!(withdrawn(&s));
    }
}
