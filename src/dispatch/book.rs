//! The dispatch book: incidents and orders rebuilt from events. A command is checked
//! (role, department, state machine) and turned into events by [`Book::plan`]; the
//! caller makes the events durable and then applies them with [`Book::apply`] — the
//! same path the log is replayed through at start, so what is on screen is always
//! what is on disk.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{DispatchConfig, Endpoint};
use super::{Action, IncidentStatus, OrderStatus, Role, TransitionError, is_allowed};
use crate::feeds::Domain;

/// The furthest ahead a deadline may be set (30 days): anything later is a typo or an
/// attack on the clock's arithmetic.
pub const MAX_DEADLINE_AHEAD_MS: i64 = 30 * 24 * 3_600_000;

/// The shortest window an escalated order gets at the superior level.
const MIN_ESCALATION_WINDOW_MS: i64 = 60_000;

/// Who issues a command. Every event records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    /// The department a liaison acts for.
    pub department: Option<String>,
}

impl Actor {
    /// Zhongshu itself: the clock, delivery confirmations, alerts from feeds.
    pub fn system() -> Self {
        Self {
            name: "zhongshu".into(),
            role: Role::System,
            department: None,
        }
    }

    pub fn new(name: &str, role: Role, department: Option<&str>) -> Self {
        Self {
            name: super::clean_text(name),
            role,
            department: department.map(str::to_string),
        }
    }
}

pub use super::alerts::Severity;

/// What a report of a new incident carries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewIncident {
    pub kind: String,
    pub title: String,
    pub domain: Domain,
    pub severity: Severity,
    pub lon: f64,
    pub lat: f64,
    /// "map" for an incident created by clicking the map, or the alert's source.
    pub source: String,
    /// De-duplication key of the alert that raised it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One order to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    pub department: String,
    pub instruction: String,
    pub deadline_ms: i64,
}

impl NewOrder {
    /// A playbook's orders issued at `now_ms`, each with its deadline from then.
    pub fn from_playbook(playbook: &super::config::Playbook, now_ms: i64) -> Vec<NewOrder> {
        playbook
            .orders
            .iter()
            .map(|o| NewOrder {
                department: o.department.clone(),
                instruction: o.instruction.clone(),
                deadline_ms: now_ms + (o.deadline_min * 60_000.0) as i64,
            })
            .collect()
    }
}

/// Everything a person (or Zhongshu itself) can ask of the book.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    ReportIncident(NewIncident),
    /// Verify, dispatch, mark on scene, resolve or close.
    Incident {
        id: String,
        action: Action,
        note: Option<String>,
    },
    /// One or more orders (a playbook applied) to departments for an incident.
    IssueOrders {
        incident: String,
        orders: Vec<NewOrder>,
    },
    /// Delivery, sign-for, start, completion, rejection, urging or escalation.
    Order {
        id: String,
        action: Action,
        note: Option<String>,
    },
    /// A department's own report of an order's progress, with when it says it
    /// happened.
    Report {
        id: String,
        action: Action,
        note: Option<String>,
        reported_ms: i64,
    },
    /// The source of an alert withdrew it.
    WithdrawAlert {
        incident: String,
        source: String,
    },
    /// The clock: an open order's deadline has passed.
    MarkOverdue {
        id: String,
    },
    /// A remark on the incident's timeline (e.g. an alert repeated or cancelled).
    Note {
        incident: String,
        text: String,
    },
    /// An order from another hall (an escalation to a superior here, or an order to
    /// one of this hall's departments), taken in by the hub from the link between
    /// halls: `from` is `HALL/ORD-…`, and an order already taken in is refused.
    ReceiveOrder {
        incident: String,
        order: NewOrder,
        from: String,
    },
}

/// What is stored: one entry of the append-only log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    IncidentReported {
        id: String,
        #[serde(flatten)]
        incident: NewIncident,
    },
    IncidentChanged {
        id: String,
        action: Action,
        status: IncidentStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    OrderIssued {
        id: String,
        incident: String,
        department: String,
        instruction: String,
        deadline_ms: i64,
        /// The order this one escalates.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escalates: Option<String>,
        /// The order of another hall this one carries out (`HALL/ORD-…`): it came
        /// over the link between halls, and its progress goes back the same way.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    OrderChanged {
        id: String,
        action: Action,
        status: OrderStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// When the department says it happened (its report's `at`), when that
        /// differs from when the log recorded it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reported_ms: Option<i64>,
    },
    OrderOverdue {
        id: String,
    },
    Note {
        incident: String,
        text: String,
    },
    AlertWithdrawn {
        incident: String,
        source: String,
    },
}

impl Event {
    /// Whether someone of `role` may have written this event, by the permission
    /// matrix ([`super::is_allowed`]): what a hall's hub checks before acting on an
    /// event another writer appended (the book's finer checks — a liaison's own
    /// department, an order's state — are the writer's).
    pub fn permitted_for(&self, role: Role) -> bool {
        use super::is_allowed;
        match self {
            Event::IncidentReported { .. } => is_allowed(role, Action::ReportIncident),
            Event::IncidentChanged { action, .. } | Event::OrderChanged { action, .. } => {
                is_allowed(role, *action)
                    // Issuing an order verifies and dispatches its incident.
                    || (matches!(action, Action::VerifyIncident | Action::DispatchIncident)
                        && is_allowed(role, Action::IssueOrder))
            }
            Event::OrderIssued {
                escalates, from, ..
            } => {
                is_allowed(role, Action::IssueOrder)
                    || (role == Role::System && (escalates.is_some() || from.is_some()))
            }
            Event::Note { .. } => is_allowed(role, Action::AddNote),
            Event::OrderOverdue { .. } | Event::AlertWithdrawn { .. } => role == Role::System,
        }
    }

    /// The event's name in the log's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::IncidentReported { .. } => "incident_reported",
            Event::IncidentChanged { .. } => "incident_changed",
            Event::OrderIssued { .. } => "order_issued",
            Event::OrderChanged { .. } => "order_changed",
            Event::OrderOverdue { .. } => "order_overdue",
            Event::Note { .. } => "note",
            Event::AlertWithdrawn { .. } => "alert_withdrawn",
        }
    }
}

fn shared_str<S: serde::Serializer>(s: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

/// A line of an incident's timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub at_ms: i64,
    /// Shared between every entry of the same person.
    #[serde(serialize_with = "shared_str")]
    pub who: Arc<str>,
    pub role: Role,
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub domain: Domain,
    pub severity: Severity,
    pub lon: f64,
    pub lat: f64,
    pub source: String,
    pub key: Option<String>,
    pub status: IncidentStatus,
    pub reported_ms: i64,
    pub updated_ms: i64,
    pub timeline: Vec<TimelineEntry>,
    /// Indices into [`Book::orders`].
    pub orders: Vec<usize>,
    /// The alert's source withdrew it.
    pub withdrawn: bool,
    /// When it was first resolved or closed.
    pub finished_ms: Option<i64>,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        !matches!(
            self.status,
            IncidentStatus::Resolved | IncidentStatus::Closed
        )
    }
}

/// Who moved an order to a status, and when.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub status: OrderStatus,
    pub action: Option<Action>,
    pub at_ms: i64,
    #[serde(serialize_with = "shared_str")]
    pub who: Arc<str>,
    pub role: Role,
    pub note: Option<String>,
    /// When the department says it happened, if it said and that differs.
    pub reported_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Order {
    pub id: String,
    pub incident: String,
    pub department: String,
    pub instruction: String,
    pub issued_ms: i64,
    pub deadline_ms: i64,
    pub status: OrderStatus,
    pub steps: Vec<Step>,
    pub urges: u32,
    /// Set when the order was delivered to the department's endpoint.
    pub delivered_ms: Option<i64>,
    /// The order this one escalates, and the one that escalated this.
    pub escalates: Option<String>,
    pub escalated_to: Option<String>,
    /// The order of another hall this one carries out (`HALL/ORD-…`).
    pub from: Option<String>,
    /// When the clock found the deadline passed (once per order). An order signed for
    /// keeps its status then; it is urged but never escalated.
    pub overdue_ms: Option<i64>,
}

impl Order {
    /// When the order went past its deadline, if it did.
    pub fn overdue_since(&self) -> Option<i64> {
        self.overdue_ms
    }

    /// Past its deadline while signed for: late, urged, still the department's.
    pub fn is_late(&self) -> bool {
        self.overdue_ms.is_some() && self.status.is_signed_for()
    }
}

/// Why a command was refused. Nothing is written when a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("{who} ({role}) may not {action:?}", role = role.as_str())]
    Denied {
        who: String,
        role: Role,
        action: Action,
    },
    #[error("{who} acts for {own} and may not act on an order to {department}")]
    OtherDepartment {
        who: String,
        own: String,
        department: String,
    },
    #[error("{department} has an endpoint: its liaison reports this, not the dispatcher by hand")]
    NotManual { department: String },
    #[error("{who} acts for {own}, which has no order on incident {incident}")]
    NotInvolved {
        who: String,
        own: String,
        incident: String,
    },
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("no incident {0}")]
    NoIncident(String),
    #[error("no order {0}")]
    NoOrder(String),
    #[error("no department {0}")]
    NoDepartment(String),
    #[error("incident {id} is {status:?}: no new orders")]
    IncidentFinished { id: String, status: IncidentStatus },
    #[error("an alert with key {key} is already incident {incident}")]
    DuplicateAlert { key: String, incident: String },
    #[error("{0}")]
    Invalid(String),
}

/// Incidents and orders as the log says they are.
#[derive(Clone, Debug)]
pub struct Book {
    pub config: DispatchConfig,
    pub incidents: Vec<Incident>,
    pub orders: Vec<Order>,
    incident_index: HashMap<String, usize>,
    order_index: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
    /// Orders taken in from another hall, by their `HALL/ORD-…`.
    by_origin: HashMap<String, usize>,
    next_incident: u64,
    next_order: u64,
    /// Events in the log that refer to something unknown (a damaged log).
    pub skipped_events: u64,
    /// One shared name per person, so a million events do not hold a million copies.
    names: HashMap<String, Arc<str>>,
    /// Bumped by every applied event, so views can cache what they derive.
    pub revision: u64,
    urgency: UrgencyCache,
}

/// [`Book::by_urgency`] for the revision it was computed at: the desk's list and the
/// map's pins share one sort per change of the book.
#[derive(Default)]
struct UrgencyCache(std::sync::Mutex<Option<(u64, Arc<[usize]>)>>);

impl Clone for UrgencyCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for UrgencyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrgencyCache")
    }
}

fn number_after(id: &str, prefix: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.parse().ok()
}

impl Book {
    pub fn new(config: DispatchConfig) -> Self {
        Self {
            config,
            incidents: Vec::new(),
            orders: Vec::new(),
            incident_index: HashMap::new(),
            order_index: HashMap::new(),
            by_key: HashMap::new(),
            by_origin: HashMap::new(),
            next_incident: 1,
            next_order: 1,
            skipped_events: 0,
            names: HashMap::new(),
            revision: 0,
            urgency: UrgencyCache::default(),
        }
    }

    pub fn incident(&self, id: &str) -> Option<&Incident> {
        self.incident_index.get(id).map(|&i| &self.incidents[i])
    }

    pub fn order(&self, id: &str) -> Option<&Order> {
        self.order_index.get(id).map(|&i| &self.orders[i])
    }

    /// The order taken in from another hall's order `from` (`HALL/ORD-…`).
    pub fn order_from(&self, from: &str) -> Option<&Order> {
        self.by_origin.get(from).map(|&i| &self.orders[i])
    }

    /// The incident raised by the alert with this de-duplication key.
    pub fn incident_for_key(&self, key: &str) -> Option<&Incident> {
        self.by_key.get(key).map(|&i| &self.incidents[i])
    }

    pub fn orders_of<'a>(&'a self, incident: &'a Incident) -> impl Iterator<Item = &'a Order> {
        incident.orders.iter().map(|&i| &self.orders[i])
    }

    fn check_role(actor: &Actor, action: Action) -> Result<(), CommandError> {
        if is_allowed(actor.role, action) {
            Ok(())
        } else {
            Err(CommandError::Denied {
                who: actor.name.clone(),
                role: actor.role,
                action,
            })
        }
    }

    /// Refuses, with `why`, anyone but Zhongshu itself.
    fn check_system(actor: &Actor, why: &str) -> Result<(), CommandError> {
        if actor.role == Role::System {
            Ok(())
        } else {
            Err(CommandError::Invalid(why.into()))
        }
    }

    /// Checks a command and returns the events it makes, or why not. Nothing changes.
    pub fn plan(
        &self,
        command: &Command,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Vec<Event>, CommandError> {
        match command {
            Command::ReportIncident(new) => {
                Self::check_role(actor, Action::ReportIncident)?;
                if !(new.lon.is_finite()
                    && new.lat.is_finite()
                    && (-180.0..=180.0).contains(&new.lon)
                    && (-90.0..=90.0).contains(&new.lat))
                {
                    return Err(CommandError::Invalid(format!(
                        "incident location {}, {} is not a WGS84 longitude, latitude",
                        new.lon, new.lat
                    )));
                }
                if new.kind.trim().is_empty() {
                    return Err(CommandError::Invalid("an incident needs a kind".into()));
                }
                if let Some(key) = &new.key
                    && let Some(existing) = self.incident_for_key(key)
                {
                    return Err(CommandError::DuplicateAlert {
                        key: key.clone(),
                        incident: existing.id.clone(),
                    });
                }
                let mut incident = new.clone();
                incident.kind = super::clean_text(&incident.kind);
                incident.title = super::clean_text(&incident.title);
                incident.source = super::clean_text(&incident.source);
                Ok(vec![Event::IncidentReported {
                    id: format!("INC-{:06}", self.next_incident),
                    incident,
                }])
            }
            Command::Incident { id, action, note } => {
                Self::check_role(actor, *action)?;
                let incident = self
                    .incident(id)
                    .ok_or_else(|| CommandError::NoIncident(id.clone()))?;
                self.check_involved(actor, incident)?;
                let status = incident.status.after(*action)?;
                let mut events = vec![Event::IncidentChanged {
                    id: id.clone(),
                    action: *action,
                    status,
                    note: note.as_deref().map(super::clean_text),
                }];
                // An incident that is over takes its orders with it: every order still
                // waiting for a department is withdrawn (and the department told), so
                // the clock never urges or escalates work nobody needs any more.
                if !matches!(status, IncidentStatus::Resolved | IncidentStatus::Closed) {
                    return Ok(events);
                }
                let why = match status {
                    IncidentStatus::Resolved => format!("incident {id} resolved"),
                    _ => format!("incident {id} closed"),
                };
                for order in self.orders_of(incident) {
                    if let Ok(next) = order.status.after(Action::CancelOrder) {
                        events.push(Event::OrderChanged {
                            id: order.id.clone(),
                            action: Action::CancelOrder,
                            status: next,
                            note: Some(why.clone()),
                            reported_ms: None,
                        });
                    }
                }
                Ok(events)
            }
            Command::IssueOrders { incident, orders } => {
                Self::check_role(actor, Action::IssueOrder)?;
                let inc = self
                    .incident(incident)
                    .ok_or_else(|| CommandError::NoIncident(incident.clone()))?;
                if !inc.is_open() {
                    return Err(CommandError::IncidentFinished {
                        id: incident.clone(),
                        status: inc.status,
                    });
                }
                if orders.is_empty() {
                    return Err(CommandError::Invalid("no orders to issue".into()));
                }
                let mut events = Vec::new();
                // Issuing orders dispatches the incident: verify and dispatch it first.
                let mut status = inc.status;
                for action in [Action::VerifyIncident, Action::DispatchIncident] {
                    if let Ok(next) = status.after(action) {
                        Self::check_role(actor, action)?;
                        events.push(Event::IncidentChanged {
                            id: incident.clone(),
                            action,
                            status: next,
                            note: None,
                        });
                        status = next;
                    }
                }
                for (n, o) in orders.iter().enumerate() {
                    if self.config.department(&o.department).is_none() {
                        return Err(CommandError::NoDepartment(o.department.clone()));
                    }
                    if o.instruction.trim().is_empty() {
                        return Err(CommandError::Invalid(format!(
                            "the order to {} has no instruction",
                            o.department
                        )));
                    }
                    if o.deadline_ms <= now_ms {
                        return Err(CommandError::Invalid(format!(
                            "the deadline of the order to {} is not in the future",
                            o.department
                        )));
                    }
                    if o.deadline_ms > now_ms.saturating_add(MAX_DEADLINE_AHEAD_MS) {
                        return Err(CommandError::Invalid(format!(
                            "the deadline of the order to {} is more than 30 days ahead",
                            o.department
                        )));
                    }
                    events.push(Event::OrderIssued {
                        id: format!("ORD-{:06}", self.next_order + n as u64),
                        incident: incident.clone(),
                        department: o.department.clone(),
                        instruction: super::clean_text(&o.instruction),
                        deadline_ms: o.deadline_ms,
                        escalates: None,
                        from: None,
                    });
                }
                Ok(events)
            }
            Command::Report {
                id,
                action,
                note,
                reported_ms,
            } => {
                let order = self
                    .order(id)
                    .ok_or_else(|| CommandError::NoOrder(id.clone()))?;
                // Started or done on an order not yet signed for: the sign-for is
                // implied, and written in the same commit, so the report is recorded
                // whole or not at all.
                let implied = matches!(action, Action::StartOrder | Action::CompleteOrder)
                    && matches!(
                        order.status,
                        OrderStatus::Issued | OrderStatus::Delivered | OrderStatus::Overdue
                    );
                let reported = (*reported_ms != now_ms).then_some(*reported_ms);
                let mut events = Vec::new();
                if implied {
                    events.extend(self.plan(
                        &Command::Order {
                            id: id.clone(),
                            action: Action::AcknowledgeOrder,
                            note: Some("implied by a later report".into()),
                        },
                        actor,
                        now_ms,
                    )?);
                    Self::check_role(actor, *action)?;
                    events.push(Event::OrderChanged {
                        id: id.clone(),
                        action: *action,
                        status: OrderStatus::Acknowledged.after(*action)?,
                        note: note.as_deref().map(super::clean_text),
                        reported_ms: None,
                    });
                } else {
                    events.extend(self.plan(
                        &Command::Order {
                            id: id.clone(),
                            action: *action,
                            note: note.clone(),
                        },
                        actor,
                        now_ms,
                    )?);
                }
                for e in &mut events {
                    if let Event::OrderChanged { reported_ms: r, .. } = e {
                        *r = reported;
                    }
                }
                Ok(events)
            }
            Command::WithdrawAlert { incident, source } => {
                Self::check_system(actor, "only Zhongshu records an alert's withdrawal")?;
                let inc = self
                    .incident(incident)
                    .ok_or_else(|| CommandError::NoIncident(incident.clone()))?;
                // Only the source that raised an alert may withdraw it.
                if inc.source != *source {
                    return Err(CommandError::Invalid(format!(
                        "{source} cannot withdraw {incident}: it was raised by {}",
                        inc.source
                    )));
                }
                if inc.withdrawn {
                    return Err(CommandError::Invalid(format!(
                        "{incident} was already withdrawn"
                    )));
                }
                let mut events = vec![Event::AlertWithdrawn {
                    incident: incident.clone(),
                    source: source.clone(),
                }];
                if inc.status == IncidentStatus::Reported {
                    events.push(Event::IncidentChanged {
                        id: incident.clone(),
                        action: Action::CloseIncident,
                        status: IncidentStatus::Closed,
                        note: Some("alert withdrawn before anyone acted".into()),
                    });
                }
                Ok(events)
            }
            Command::Order { id, action, note } => {
                Self::check_role(actor, *action)?;
                let order = self
                    .order(id)
                    .ok_or_else(|| CommandError::NoOrder(id.clone()))?;
                let department = self
                    .config
                    .department(&order.department)
                    .ok_or_else(|| CommandError::NoDepartment(order.department.clone()))?;
                match actor.role {
                    Role::DepartmentLiaison
                        if actor.department.as_deref() != Some(&order.department) =>
                    {
                        return Err(CommandError::OtherDepartment {
                            who: actor.name.clone(),
                            own: actor
                                .department
                                .clone()
                                .unwrap_or_else(|| "no department".into()),
                            department: order.department.clone(),
                        });
                    }
                    // By hand only for departments nobody can reach over HTTP.
                    Role::Dispatcher
                        if matches!(
                            action,
                            Action::RecordDelivery
                                | Action::AcknowledgeOrder
                                | Action::StartOrder
                                | Action::CompleteOrder
                                | Action::RejectOrder
                        ) && department.endpoint != Endpoint::Manual =>
                    {
                        return Err(CommandError::NotManual {
                            department: order.department.clone(),
                        });
                    }
                    _ => {}
                }
                if *action == Action::RecordDelivery && order.delivered_ms.is_some() {
                    return Err(CommandError::Invalid(format!(
                        "{id} is already recorded as delivered"
                    )));
                }
                if *action == Action::EscalateOrder
                    && self.incident(&order.incident).is_some_and(|i| !i.is_open())
                {
                    return Err(CommandError::IncidentFinished {
                        id: order.incident.clone(),
                        status: self
                            .incident(&order.incident)
                            .map_or(IncidentStatus::Closed, |i| i.status),
                    });
                }
                let status = order.status.after(*action)?;
                let mut events = vec![Event::OrderChanged {
                    id: id.clone(),
                    action: *action,
                    status,
                    note: note.as_deref().map(super::clean_text),
                    reported_ms: None,
                }];
                if *action == Action::EscalateOrder {
                    // The order goes to the superior level with a fresh window; at the
                    // top of the chain it goes to the city's leaders on the timeline.
                    let window = order
                        .deadline_ms
                        .saturating_sub(order.issued_ms)
                        .clamp(MIN_ESCALATION_WINDOW_MS, MAX_DEADLINE_AHEAD_MS);
                    match &department.superior {
                        Some(superior) => events.push(Event::OrderIssued {
                            id: format!("ORD-{:06}", self.next_order),
                            incident: order.incident.clone(),
                            department: superior.clone(),
                            instruction: format!(
                                "Escalated from {}: {}",
                                department.name, order.instruction
                            ),
                            deadline_ms: now_ms.saturating_add(window),
                            escalates: Some(order.id.clone()),
                            from: None,
                        }),
                        None => events.push(Event::Note {
                            incident: order.incident.clone(),
                            text: format!(
                                "{} escalated to the city leadership: {} has no superior",
                                order.id, department.name
                            ),
                        }),
                    }
                }
                Ok(events)
            }
            Command::MarkOverdue { id } => {
                Self::check_system(actor, "only the clock marks orders overdue")?;
                let order = self
                    .order(id)
                    .ok_or_else(|| CommandError::NoOrder(id.clone()))?;
                if order.status.on_deadline().is_none() {
                    return Err(CommandError::Invalid(format!(
                        "{id} is {:?}: it cannot be overdue",
                        order.status
                    )));
                }
                if order.overdue_ms.is_some() {
                    return Err(CommandError::Invalid(format!(
                        "{id} is already past its deadline"
                    )));
                }
                if order.deadline_ms > now_ms {
                    return Err(CommandError::Invalid(format!(
                        "{id} is not past its deadline"
                    )));
                }
                if let Some(inc) = self.incident(&order.incident)
                    && !inc.is_open()
                {
                    return Err(CommandError::IncidentFinished {
                        id: inc.id.clone(),
                        status: inc.status,
                    });
                }
                // Marked and urged in one write: a failure leaves both undone, and the
                // next tick tries again.
                Ok(vec![
                    Event::OrderOverdue { id: id.clone() },
                    Event::OrderChanged {
                        id: id.clone(),
                        action: Action::UrgeOrder,
                        status: order.status.on_deadline().unwrap_or(order.status),
                        note: Some("deadline passed".into()),
                        reported_ms: None,
                    },
                ])
            }
            Command::Note { incident, text } => {
                Self::check_role(actor, Action::AddNote)?;
                let inc = self
                    .incident(incident)
                    .ok_or_else(|| CommandError::NoIncident(incident.clone()))?;
                self.check_involved(actor, inc)?;
                if text.trim().is_empty() {
                    return Err(CommandError::Invalid("an empty note".into()));
                }
                Ok(vec![Event::Note {
                    incident: incident.clone(),
                    text: super::clean_text(text),
                }])
            }
            Command::ReceiveOrder {
                incident,
                order,
                from,
            } => {
                Self::check_system(actor, "only the hall's hub takes in orders of other halls")?;
                if let Some(known) = self.order_from(from) {
                    return Err(CommandError::Invalid(format!(
                        "{from} was already taken in as {}",
                        known.id
                    )));
                }
                let valid_origin = from.split_once('/').is_some_and(|(hall, id)| {
                    crate::nats::check_hall_name(hall).is_ok() && !id.trim().is_empty()
                });
                if !valid_origin {
                    return Err(CommandError::Invalid(format!(
                        "{from:?} does not name an order of another hall (HALL/ORD-…)"
                    )));
                }
                let inc = self
                    .incident(incident)
                    .ok_or_else(|| CommandError::NoIncident(incident.clone()))?;
                if !inc.is_open() {
                    return Err(CommandError::IncidentFinished {
                        id: incident.clone(),
                        status: inc.status,
                    });
                }
                if self.config.department(&order.department).is_none() {
                    return Err(CommandError::NoDepartment(order.department.clone()));
                }
                if order.instruction.trim().is_empty() {
                    return Err(CommandError::Invalid(format!(
                        "the order from {from} has no instruction"
                    )));
                }
                // The other hall's deadline stands; one that passed while the link
                // was down still leaves the department the shortest window.
                let deadline_ms = order.deadline_ms.clamp(
                    now_ms.saturating_add(MIN_ESCALATION_WINDOW_MS),
                    now_ms.saturating_add(MAX_DEADLINE_AHEAD_MS),
                );
                Ok(vec![Event::OrderIssued {
                    id: format!("ORD-{:06}", self.next_order),
                    incident: incident.clone(),
                    department: order.department.clone(),
                    instruction: super::clean_text(&order.instruction),
                    deadline_ms,
                    escalates: None,
                    from: Some(super::clean_text(from)),
                }])
            }
        }
    }

    /// A department liaison acts on an incident only where their department has an
    /// order: a water-company liaison cannot mark a fire "on scene".
    fn check_involved(&self, actor: &Actor, incident: &Incident) -> Result<(), CommandError> {
        if actor.role != Role::DepartmentLiaison {
            return Ok(());
        }
        let own = actor.department.as_deref().unwrap_or("");
        if !own.is_empty() && self.orders_of(incident).any(|o| o.department == own) {
            return Ok(());
        }
        Err(CommandError::NotInvolved {
            who: actor.name.clone(),
            own: if own.is_empty() {
                "no department".into()
            } else {
                own.to_string()
            },
            incident: incident.id.clone(),
        })
    }

    /// What the clock has to do at `now_ms`: orders whose deadline passed to mark (and
    /// urge), and orders still unsigned `escalate_after_min` after that to escalate.
    /// Orders signed for are urged at their deadline and never escalated; orders of a
    /// finished incident are left alone.
    pub fn due(&self, now_ms: i64) -> Vec<Command> {
        let escalate_after = self.config.escalate_after_ms();
        let mut due = Vec::new();
        for o in &self.orders {
            if !(o.status.is_pending()) {
                continue;
            }
            if self
                .incident_index
                .get(&o.incident)
                .is_some_and(|&i| !self.incidents[i].is_open())
            {
                continue;
            }
            if o.status.is_open() && o.overdue_ms.is_none() && o.deadline_ms <= now_ms {
                due.push(Command::MarkOverdue { id: o.id.clone() });
            } else if o.status == OrderStatus::Overdue
                && o.overdue_ms
                    .is_some_and(|t| t.saturating_add(escalate_after) <= now_ms)
            {
                due.push(Command::Order {
                    id: o.id.clone(),
                    action: Action::EscalateOrder,
                    note: Some(format!(
                        "not signed for {} min after the deadline",
                        self.config.escalate_after_min
                    )),
                });
            }
        }
        due
    }

    /// Whether an event names only incidents and orders the book has, and creates
    /// none twice. A damaged log's other events are counted and skipped.
    fn fits(&self, event: &Event) -> bool {
        match event {
            Event::IncidentReported { id, .. } => !self.incident_index.contains_key(id),
            Event::IncidentChanged { id, .. } => self.incident_index.contains_key(id),
            Event::OrderIssued { id, incident, .. } => {
                self.incident_index.contains_key(incident) && !self.order_index.contains_key(id)
            }
            Event::OrderChanged { id, .. } | Event::OrderOverdue { id } => {
                self.order_index.contains_key(id)
            }
            Event::Note { incident, .. } | Event::AlertWithdrawn { incident, .. } => {
                self.incident_index.contains_key(incident)
            }
        }
    }

    /// Applies one stored event. Replay at start and live commands both come here.
    pub fn apply(&mut self, event: &Event, at_ms: i64, who: &str, role: Role) {
        if !self.fits(event) {
            self.skipped_events += 1;
            return;
        }
        self.revision += 1;
        let who: Arc<str> = match self.names.get(who) {
            Some(name) => name.clone(),
            None => {
                let name: Arc<str> = Arc::from(who);
                self.names.insert(who.to_string(), name.clone());
                name
            }
        };
        let entry = |text: String| TimelineEntry {
            at_ms,
            who: who.clone(),
            role,
            text,
        };
        match event {
            Event::IncidentReported { id, incident } => {
                let index = self.incidents.len();
                self.incident_index.insert(id.clone(), index);
                if let Some(key) = &incident.key {
                    self.by_key.insert(key.clone(), index);
                }
                if let Some(n) = number_after(id, "INC-") {
                    self.next_incident = self.next_incident.max(n + 1);
                }
                self.incidents.push(Incident {
                    id: id.clone(),
                    kind: incident.kind.clone(),
                    title: incident.title.clone(),
                    domain: incident.domain,
                    severity: incident.severity,
                    lon: incident.lon,
                    lat: incident.lat,
                    source: incident.source.clone(),
                    key: incident.key.clone(),
                    status: IncidentStatus::Reported,
                    reported_ms: at_ms,
                    updated_ms: at_ms,
                    timeline: vec![entry(format!(
                        "reported from {}: {}",
                        incident.source, incident.title
                    ))],
                    orders: Vec::new(),
                    withdrawn: false,
                    finished_ms: None,
                });
            }
            Event::IncidentChanged {
                id,
                action,
                status,
                note,
            } => {
                let i = self.incident_index[id];
                let inc = &mut self.incidents[i];
                inc.status = *status;
                inc.updated_ms = at_ms;
                if !inc.is_open() {
                    inc.finished_ms.get_or_insert(at_ms);
                }
                let mut text = format!("{:?} → {:?}", action, status);
                if let Some(n) = note {
                    text.push_str(&format!(" ({n})"));
                }
                inc.timeline.push(entry(text));
            }
            Event::OrderIssued {
                id,
                incident,
                department,
                instruction,
                deadline_ms,
                escalates,
                from,
            } => {
                let i = self.incident_index[incident];
                if let Some(from) = from {
                    self.by_origin.insert(from.clone(), self.orders.len());
                }
                let index = self.orders.len();
                self.order_index.insert(id.clone(), index);
                if let Some(n) = number_after(id, "ORD-") {
                    self.next_order = self.next_order.max(n + 1);
                }
                if let Some(from) = escalates
                    && let Some(&j) = self.order_index.get(from)
                {
                    self.orders[j].escalated_to = Some(id.clone());
                }
                self.orders.push(Order {
                    id: id.clone(),
                    incident: incident.clone(),
                    department: department.clone(),
                    instruction: instruction.clone(),
                    issued_ms: at_ms,
                    deadline_ms: *deadline_ms,
                    status: OrderStatus::Issued,
                    steps: vec![Step {
                        status: OrderStatus::Issued,
                        action: Some(Action::IssueOrder),
                        at_ms,
                        who: who.clone(),
                        role,
                        note: None,
                        reported_ms: None,
                    }],
                    urges: 0,
                    delivered_ms: None,
                    escalates: escalates.clone(),
                    escalated_to: None,
                    overdue_ms: None,
                    from: from.clone(),
                });
                let inc = &mut self.incidents[i];
                inc.orders.push(index);
                inc.updated_ms = at_ms;
                inc.timeline
                    .push(entry(format!("order {id} to {department}: {instruction}")));
            }
            Event::OrderChanged {
                id,
                action,
                status,
                note,
                reported_ms,
            } => {
                let o = self.order_index[id];
                let order = &mut self.orders[o];
                order.status = *status;
                if *action == Action::UrgeOrder {
                    order.urges += 1;
                }
                if *action == Action::RecordDelivery {
                    order.delivered_ms = Some(at_ms);
                }
                order.steps.push(Step {
                    status: *status,
                    action: Some(*action),
                    at_ms,
                    who: who.clone(),
                    role,
                    note: note.clone(),
                    reported_ms: *reported_ms,
                });
                let mut text = format!("{id} ({}): {action:?} → {status:?}", order.department);
                if let Some(n) = note {
                    text.push_str(&format!(" ({n})"));
                }
                let incident = order.incident.clone();
                if let Some(&i) = self.incident_index.get(&incident) {
                    self.incidents[i].updated_ms = at_ms;
                    self.incidents[i].timeline.push(entry(text));
                }
            }
            Event::OrderOverdue { id } => {
                let o = self.order_index[id];
                let order = &mut self.orders[o];
                // Only an order nobody signed for becomes overdue; a signed-for order
                // stays with its department, late.
                let Some(status) = order.status.on_deadline() else {
                    return;
                };
                order.status = status;
                order.overdue_ms.get_or_insert(at_ms);
                order.steps.push(Step {
                    status,
                    action: None,
                    at_ms,
                    who: who.clone(),
                    role,
                    note: None,
                    reported_ms: None,
                });
                let text = if status == OrderStatus::Overdue {
                    format!("{id} ({}) is overdue", order.department)
                } else {
                    format!(
                        "{id} ({}) is past its deadline; signed for, so urged, not escalated",
                        order.department
                    )
                };
                let incident = order.incident.clone();
                if let Some(&i) = self.incident_index.get(&incident) {
                    self.incidents[i].timeline.push(entry(text));
                }
            }
            Event::Note { incident, text } => {
                let i = self.incident_index[incident];
                // Logs written before withdrawals had an event of their own.
                if text.ends_with(" withdrew the alert") {
                    self.incidents[i].withdrawn = true;
                }
                self.incidents[i].timeline.push(entry(text.clone()));
            }
            Event::AlertWithdrawn { incident, source } => {
                let i = self.incident_index[incident];
                self.incidents[i].withdrawn = true;
                self.incidents[i]
                    .timeline
                    .push(entry(format!("{source} withdrew the alert")));
            }
        }
    }

    /// Orders still waiting to reach a department with an endpoint (the outbox):
    /// issued, or overdue without a delivery on record.
    pub fn undelivered(&self) -> impl Iterator<Item = &Order> {
        self.orders.iter().filter(|o| {
            (o.status == OrderStatus::Issued
                || (o.status == OrderStatus::Overdue && o.delivered_ms.is_none()))
                && self
                    .config
                    .department(&o.department)
                    .is_some_and(|d| d.endpoint != Endpoint::Manual)
        })
    }

    /// Every incident, most urgent first: open before finished, then severity, then
    /// orders overdue, then the oldest. Computed once per revision of the book.
    pub fn by_urgency(&self) -> Arc<[usize]> {
        let mut cache = self.urgency.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((revision, ids)) = cache.as_ref()
            && *revision == self.revision
        {
            return ids.clone();
        }
        let ids: Arc<[usize]> = self.sort_by_urgency().into();
        *cache = Some((self.revision, ids.clone()));
        ids
    }

    /// One pass over the orders, then one sort.
    fn sort_by_urgency(&self) -> Vec<usize> {
        let mut overdue = vec![0u32; self.incidents.len()];
        for o in self
            .orders
            .iter()
            .filter(|o| o.status == OrderStatus::Overdue)
        {
            if let Some(&i) = self.incident_index.get(&o.incident) {
                overdue[i] += 1;
            }
        }
        let mut ids: Vec<usize> = (0..self.incidents.len()).collect();
        ids.sort_unstable_by_key(|&i| {
            let x = &self.incidents[i];
            (
                !x.is_open(),
                std::cmp::Reverse(x.severity),
                std::cmp::Reverse(overdue[i]),
                x.reported_ms,
                i,
            )
        });
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_946_400_000;

    fn book() -> Book {
        Book::new(DispatchConfig::default_config())
    }

    fn dispatcher() -> Actor {
        Actor::new("li.wei", Role::Dispatcher, None)
    }

    fn run(
        book: &mut Book,
        command: Command,
        actor: &Actor,
        now: i64,
    ) -> Result<Vec<Event>, CommandError> {
        let events = book.plan(&command, actor, now)?;
        for e in &events {
            book.apply(e, now, &actor.name, actor.role);
        }
        Ok(events)
    }

    fn fire(key: Option<&str>) -> NewIncident {
        NewIncident {
            kind: "building_fire".into(),
            title: "Smoke from a shop roof".into(),
            domain: Domain::Safety,
            severity: Severity::Severe,
            lon: 24.94,
            lat: 60.17,
            source: "map".into(),
            key: key.map(str::to_string),
        }
    }

    fn playbook_orders(book: &Book, kind: &str, now: i64) -> Vec<NewOrder> {
        book.config
            .playbook(kind)
            .unwrap()
            .orders
            .iter()
            .map(|o| NewOrder {
                department: o.department.clone(),
                instruction: o.instruction.clone(),
                deadline_ms: now + (o.deadline_min * 60_000.0) as i64,
            })
            .collect()
    }

    #[test]
    fn an_incident_goes_from_report_to_orders_to_closure() {
        let mut b = book();
        let d = dispatcher();
        run(&mut b, Command::ReportIncident(fire(None)), &d, T0).unwrap();
        let id = b.incidents[0].id.clone();
        assert_eq!(id, "INC-000001");
        let orders = playbook_orders(&b, "building_fire", T0);
        let events = run(
            &mut b,
            Command::IssueOrders {
                incident: id.clone(),
                orders,
            },
            &d,
            T0 + 1000,
        )
        .unwrap();
        // Verify, dispatch, and four orders, in one command.
        assert_eq!(events.len(), 6);
        assert_eq!(b.incident(&id).unwrap().status, IncidentStatus::Dispatched);
        assert_eq!(b.orders.len(), 4);
        assert_eq!(b.orders[0].id, "ORD-000001");
        assert_eq!(b.orders[3].department, "power");

        // The fire liaison signs for and carries out its order; not another's.
        let liaison = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        for action in [
            Action::AcknowledgeOrder,
            Action::StartOrder,
            Action::CompleteOrder,
        ] {
            run(
                &mut b,
                Command::Order {
                    id: "ORD-000001".into(),
                    action,
                    note: None,
                },
                &liaison,
                T0 + 2000,
            )
            .unwrap();
        }
        assert_eq!(b.order("ORD-000001").unwrap().status, OrderStatus::Done);
        let err = run(
            &mut b,
            Command::Order {
                id: "ORD-000002".into(),
                action: Action::AcknowledgeOrder,
                note: None,
            },
            &liaison,
            T0 + 2000,
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::OtherDepartment { .. }), "{err}");
        // Completing twice is an illegal transition, named.
        let err = run(
            &mut b,
            Command::Order {
                id: "ORD-000001".into(),
                action: Action::CompleteOrder,
                note: None,
            },
            &liaison,
            T0 + 2000,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot CompleteOrder an order that is Done"
        );

        for action in [
            Action::MarkOnScene,
            Action::ResolveIncident,
            Action::CloseIncident,
        ] {
            run(
                &mut b,
                Command::Incident {
                    id: id.clone(),
                    action,
                    note: None,
                },
                &d,
                T0 + 3000,
            )
            .unwrap();
        }
        let inc = b.incident(&id).unwrap();
        assert_eq!(inc.status, IncidentStatus::Closed);
        // Every step is on the timeline with who did it.
        assert!(inc.timeline.iter().any(|t| &*t.who == "wang.fang"
            && t.text.contains("ORD-000001")
            && t.text.contains("Done")));
        // A closed incident takes no new orders.
        let orders = playbook_orders(&b, "building_fire", T0 + 4000);
        let err = run(
            &mut b,
            Command::IssueOrders {
                incident: id,
                orders,
            },
            &d,
            T0 + 4000,
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::IncidentFinished { .. }));
    }

    #[test]
    fn roles_are_checked_on_every_command_and_refusals_change_nothing() {
        let mut b = book();
        let leader = Actor::new("mayor", Role::Leader, None);
        let err = run(&mut b, Command::ReportIncident(fire(None)), &leader, T0).unwrap_err();
        assert_eq!(err.to_string(), "mayor (leader) may not ReportIncident");
        assert!(b.incidents.is_empty());

        let operator = Actor::new("duty", Role::Operator, None);
        run(&mut b, Command::ReportIncident(fire(None)), &operator, T0).unwrap();
        let orders = playbook_orders(&b, "building_fire", T0);
        let err = run(
            &mut b,
            Command::IssueOrders {
                incident: "INC-000001".into(),
                orders,
            },
            &operator,
            T0,
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::Denied { .. }));
        assert!(b.orders.is_empty());

        // The dispatcher records sign-for by hand only where there is no endpoint.
        let d = dispatcher();
        run(
            &mut b,
            Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![
                    NewOrder {
                        department: "fire".into(),
                        instruction: "Go".into(),
                        deadline_ms: T0 + 60_000,
                    },
                    NewOrder {
                        department: "central_district".into(),
                        instruction: "Send staff".into(),
                        deadline_ms: T0 + 60_000,
                    },
                ],
            },
            &d,
            T0,
        )
        .unwrap();
        let ack = |id: &str| Command::Order {
            id: id.into(),
            action: Action::AcknowledgeOrder,
            note: Some("by phone".into()),
        };
        let err = run(&mut b, ack("ORD-000001"), &d, T0).unwrap_err();
        assert!(matches!(err, CommandError::NotManual { .. }), "{err}");
        run(&mut b, ack("ORD-000002"), &d, T0).unwrap();
        assert_eq!(
            b.order("ORD-000002").unwrap().status,
            OrderStatus::Acknowledged
        );
        // Only the clock marks orders overdue.
        let err = run(
            &mut b,
            Command::MarkOverdue {
                id: "ORD-000001".into(),
            },
            &d,
            T0 + 120_000,
        )
        .unwrap_err();
        assert!(err.to_string().contains("clock"));
    }

    #[test]
    fn an_order_of_another_hall_is_taken_in_once_by_the_hub_only() {
        let mut b = book();
        let system = Actor::system();
        run(
            &mut b,
            Command::ReportIncident(fire(Some("hall:d1/INC-000004"))),
            &system,
            T0,
        )
        .unwrap();
        let receive = |from: &str, deadline_ms: i64| Command::ReceiveOrder {
            incident: "INC-000001".into(),
            order: NewOrder {
                department: "fire".into(),
                instruction: "Escalated from the district brigade: contain it".into(),
                deadline_ms,
            },
            from: from.into(),
        };
        // Only the hub (Zhongshu itself) takes in another hall's orders.
        let err = run(
            &mut b,
            receive("d1/ORD-000007", T0 + 600_000),
            &dispatcher(),
            T0,
        );
        assert!(err.is_err());
        let events = run(&mut b, receive("d1/ORD-000007", T0 + 600_000), &system, T0).unwrap();
        assert_eq!(events.len(), 1);
        assert!(events[0].permitted_for(Role::System));
        let o = b.order_from("d1/ORD-000007").unwrap();
        assert_eq!((o.id.as_str(), o.deadline_ms), ("ORD-000001", T0 + 600_000));
        assert_eq!(o.from.as_deref(), Some("d1/ORD-000007"));
        // The same order again (a restarted hub, a long cut) is refused, naming it.
        let err = run(&mut b, receive("d1/ORD-000007", T0 + 600_000), &system, T0).unwrap_err();
        assert!(
            err.to_string().contains("already taken in as ORD-000001"),
            "{err}"
        );
        // A deadline that passed on the way still leaves a minute; nonsense origins
        // are refused.
        run(&mut b, receive("d1/ORD-000008", T0 - 5), &system, T0).unwrap();
        assert_eq!(
            b.order_from("d1/ORD-000008").unwrap().deadline_ms,
            T0 + 60_000
        );
        for bad in ["ORD-000009", "bad hall/ORD-1", "d1/"] {
            assert!(
                run(&mut b, receive(bad, T0 + 1), &system, T0).is_err(),
                "{bad}"
            );
        }
        // The order survives a replay: the log says where it came from.
        let json = serde_json::to_string(&events[0]).unwrap();
        assert!(json.contains("\"from\":\"d1/ORD-000007\""), "{json}");
        // An order of this hall's own is written exactly as before (the chain of an
        // old log is unchanged).
        let own = Event::OrderIssued {
            id: "ORD-1".into(),
            incident: "INC-1".into(),
            department: "fire".into(),
            instruction: "Go".into(),
            deadline_ms: 1,
            escalates: None,
            from: None,
        };
        assert!(!serde_json::to_string(&own).unwrap().contains("from"));
    }

    #[test]
    fn the_clock_marks_overdue_then_escalates_up_the_chain() {
        let mut b = book();
        let d = dispatcher();
        run(&mut b, Command::ReportIncident(fire(None)), &d, T0).unwrap();
        run(
            &mut b,
            Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![NewOrder {
                    department: "traffic_police".into(),
                    instruction: "Close the street".into(),
                    deadline_ms: T0 + 10 * 60_000,
                }],
            },
            &d,
            T0,
        )
        .unwrap();
        let system = Actor::system();
        let tick = |b: &mut Book, now: i64| {
            for c in b.due(now) {
                run(b, c, &system, now).unwrap();
            }
        };
        tick(&mut b, T0 + 9 * 60_000);
        assert_eq!(b.orders[0].status, OrderStatus::Issued);
        tick(&mut b, T0 + 10 * 60_000);
        assert_eq!(b.orders[0].status, OrderStatus::Overdue);
        assert_eq!(b.orders[0].urges, 1, "the department is urged");
        // Not yet escalated: five minutes' grace after the deadline.
        tick(&mut b, T0 + 14 * 60_000);
        assert_eq!(b.orders.len(), 1);
        tick(&mut b, T0 + 15 * 60_000);
        assert_eq!(b.orders[0].status, OrderStatus::Escalated);
        let up = &b.orders[1];
        assert_eq!(up.department, "public_security");
        assert_eq!(up.escalates.as_deref(), Some("ORD-000001"));
        assert_eq!(b.orders[0].escalated_to.as_deref(), Some("ORD-000002"));
        assert_eq!(up.deadline_ms, T0 + 25 * 60_000);
        // And again, up to the emergency bureau, then to the leadership.
        tick(&mut b, T0 + 25 * 60_000);
        tick(&mut b, T0 + 30 * 60_000);
        assert_eq!(b.orders[2].department, "emergency");
        tick(&mut b, T0 + 40 * 60_000);
        tick(&mut b, T0 + 45 * 60_000);
        assert_eq!(b.orders.len(), 3);
        assert_eq!(b.orders[2].status, OrderStatus::Escalated);
        let inc = b.incident("INC-000001").unwrap();
        assert!(
            inc.timeline
                .iter()
                .any(|t| t.text.contains("city leadership"))
        );
        // Nothing is due twice.
        assert!(b.due(T0 + 60 * 60_000).is_empty());
    }

    fn order_cmd(id: &str, action: Action) -> Command {
        Command::Order {
            id: id.into(),
            action,
            note: None,
        }
    }

    fn tick(b: &mut Book, now: i64) {
        let system = Actor::system();
        for c in b.due(now) {
            run(b, c, &system, now).unwrap();
        }
    }

    /// One incident with one order to the fire brigade, due at T0 + 10 min.
    fn one_fire_order(b: &mut Book) {
        let d = dispatcher();
        run(b, Command::ReportIncident(fire(None)), &d, T0).unwrap();
        run(
            b,
            Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![NewOrder {
                    department: "fire".into(),
                    instruction: "Send two engines".into(),
                    deadline_ms: T0 + 10 * 60_000,
                }],
            },
            &d,
            T0,
        )
        .unwrap();
    }

    #[test]
    fn a_signed_for_order_past_its_deadline_is_urged_never_taken_away() {
        let mut b = book();
        one_fire_order(&mut b);
        let liaison = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        run(
            &mut b,
            order_cmd("ORD-000001", Action::AcknowledgeOrder),
            &liaison,
            T0 + 60_000,
        )
        .unwrap();
        run(
            &mut b,
            order_cmd("ORD-000001", Action::StartOrder),
            &liaison,
            T0 + 120_000,
        )
        .unwrap();
        for minute in 10..=60 {
            tick(&mut b, T0 + minute * 60_000);
        }
        let o = b.order("ORD-000001").unwrap();
        assert_eq!(o.status, OrderStatus::InProgress, "{o:#?}");
        assert_eq!(o.urges, 1, "urged once at the deadline");
        assert!(o.is_late());
        assert_eq!(b.orders.len(), 1, "nothing escalated");
        run(
            &mut b,
            order_cmd("ORD-000001", Action::CompleteOrder),
            &liaison,
            T0 + 61 * 60_000,
        )
        .unwrap();
        assert_eq!(b.order("ORD-000001").unwrap().status, OrderStatus::Done);
    }

    #[test]
    fn a_late_sign_for_stops_the_escalation() {
        let mut b = book();
        one_fire_order(&mut b);
        tick(&mut b, T0 + 10 * 60_000);
        assert_eq!(b.orders[0].status, OrderStatus::Overdue);
        let liaison = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        run(
            &mut b,
            order_cmd("ORD-000001", Action::AcknowledgeOrder),
            &liaison,
            T0 + 11 * 60_000,
        )
        .unwrap();
        // The clock looks four times a second: the sign-for stands.
        for ms in (11 * 60_000..40 * 60_000).step_by(250) {
            tick(&mut b, T0 + ms);
        }
        let o = b.order("ORD-000001").unwrap();
        assert_eq!(o.status, OrderStatus::Acknowledged);
        assert_eq!((o.urges, b.orders.len()), (1, 1));
    }

    #[test]
    fn closing_an_incident_cancels_its_orders_and_the_clock_leaves_them_alone() {
        let mut b = book();
        one_fire_order(&mut b);
        let d = dispatcher();
        // A second, already signed-for order, and a third that is done.
        run(
            &mut b,
            Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![
                    NewOrder {
                        department: "ems".into(),
                        instruction: "Stand by".into(),
                        deadline_ms: T0 + 10 * 60_000,
                    },
                    NewOrder {
                        department: "power".into(),
                        instruction: "Cut the supply".into(),
                        deadline_ms: T0 + 10 * 60_000,
                    },
                ],
            },
            &d,
            T0,
        )
        .unwrap();
        let ems = Actor::new("chen", Role::DepartmentLiaison, Some("ems"));
        run(
            &mut b,
            order_cmd("ORD-000002", Action::AcknowledgeOrder),
            &ems,
            T0 + 1000,
        )
        .unwrap();
        let power = Actor::new("zhao", Role::DepartmentLiaison, Some("power"));
        run(
            &mut b,
            order_cmd("ORD-000003", Action::AcknowledgeOrder),
            &power,
            T0 + 1000,
        )
        .unwrap();
        run(
            &mut b,
            order_cmd("ORD-000003", Action::CompleteOrder),
            &power,
            T0 + 1000,
        )
        .unwrap();
        for action in [Action::MarkOnScene, Action::ResolveIncident] {
            run(
                &mut b,
                Command::Incident {
                    id: "INC-000001".into(),
                    action,
                    note: None,
                },
                &d,
                T0 + 2000,
            )
            .unwrap();
        }
        assert_eq!(
            b.order("ORD-000001").unwrap().status,
            OrderStatus::Cancelled
        );
        assert_eq!(
            b.order("ORD-000002").unwrap().status,
            OrderStatus::Cancelled
        );
        assert_eq!(b.order("ORD-000003").unwrap().status, OrderStatus::Done);
        // Past every deadline: nothing to urge, mark or escalate.
        assert!(b.due(T0 + 3_600_000).is_empty());
        // An order escalated by hand for a finished incident is refused.
        let err = run(
            &mut b,
            order_cmd("ORD-000001", Action::EscalateOrder),
            &d,
            T0 + 3000,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("Cancelled")
                || matches!(err, CommandError::IncidentFinished { .. }),
            "{err}"
        );
    }

    #[test]
    fn orders_of_a_closed_incident_in_an_old_log_are_never_escalated() {
        // A log written before closing cancelled orders: the order is still open.
        let mut b = book();
        one_fire_order(&mut b);
        b.apply(
            &Event::IncidentChanged {
                id: "INC-000001".into(),
                action: Action::CloseIncident,
                status: IncidentStatus::Closed,
                note: None,
            },
            T0 + 1000,
            "li.wei",
            Role::Dispatcher,
        );
        assert!(b.due(T0 + 3_600_000).is_empty());
    }

    #[test]
    fn deadlines_and_escalation_windows_never_overflow() {
        let mut b = book();
        let d = dispatcher();
        run(&mut b, Command::ReportIncident(fire(None)), &d, T0).unwrap();
        let far = |deadline_ms| Command::IssueOrders {
            incident: "INC-000001".into(),
            orders: vec![NewOrder {
                department: "traffic_police".into(),
                instruction: "Close the street".into(),
                deadline_ms,
            }],
        };
        let err = run(&mut b, far(i64::MAX - 1), &d, T0).unwrap_err();
        assert!(err.to_string().contains("30 days"), "{err}");
        run(&mut b, far(T0 + MAX_DEADLINE_AHEAD_MS), &d, T0).unwrap();
        // Overdue thirty days on, escalated minutes later: the new deadline is ahead.
        let overdue_at = T0 + MAX_DEADLINE_AHEAD_MS;
        tick(&mut b, overdue_at);
        tick(&mut b, overdue_at + 5 * 60_000);
        let up = &b.orders[1];
        assert!(up.deadline_ms > overdue_at, "{up:#?}");
        // A huge escalate_after set in code waits (clamped), never "at once".
        let mut b = book();
        b.config.escalate_after_min = 1e300;
        one_fire_order(&mut b);
        tick(&mut b, T0 + 10 * 60_000);
        tick(&mut b, T0 + 11 * 60_000);
        assert_eq!(b.orders[0].status, OrderStatus::Overdue);
        assert_eq!(b.orders.len(), 1);
    }

    #[test]
    fn liaisons_act_only_on_incidents_of_their_department_and_notes_are_checked() {
        let mut b = book();
        one_fire_order(&mut b);
        let water = Actor::new("sun", Role::DepartmentLiaison, Some("water"));
        let on_scene = Command::Incident {
            id: "INC-000001".into(),
            action: Action::MarkOnScene,
            note: None,
        };
        let err = run(&mut b, on_scene.clone(), &water, T0).unwrap_err();
        assert!(matches!(err, CommandError::NotInvolved { .. }), "{err}");
        let note = |text: &str| Command::Note {
            incident: "INC-000001".into(),
            text: text.into(),
        };
        let err = run(&mut b, note("all clear"), &water, T0).unwrap_err();
        assert!(matches!(err, CommandError::NotInvolved { .. }), "{err}");
        let leader = Actor::new("mayor", Role::Leader, None);
        let err = run(&mut b, note("hurry"), &leader, T0).unwrap_err();
        assert!(matches!(err, CommandError::Denied { .. }), "{err}");
        // The fire brigade, which has an order there, may.
        let fire_liaison = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        run(&mut b, on_scene, &fire_liaison, T0).unwrap();
        run(&mut b, note("two engines on scene"), &fire_liaison, T0).unwrap();
        assert_eq!(b.incidents[0].status, IncidentStatus::OnScene);
    }

    #[test]
    fn a_report_of_a_later_step_carries_the_implied_sign_for_in_one_commit() {
        let mut b = book();
        one_fire_order(&mut b);
        let liaison = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        let report = |action| Command::Report {
            id: "ORD-000001".into(),
            action,
            note: Some("two engines".into()),
            reported_ms: T0 + 500,
        };
        // One plan, so one write: the sign-for and the start together.
        let events = b
            .plan(&report(Action::StartOrder), &liaison, T0 + 1000)
            .unwrap();
        let actions: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::OrderChanged {
                    action,
                    reported_ms,
                    ..
                } => Some((*action, *reported_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(
            actions,
            [
                (Action::AcknowledgeOrder, Some(T0 + 500)),
                (Action::StartOrder, Some(T0 + 500))
            ]
        );
        // Past the deadline too (overdue, not signed for).
        tick(&mut b, T0 + 10 * 60_000);
        run(
            &mut b,
            report(Action::CompleteOrder),
            &liaison,
            T0 + 11 * 60_000,
        )
        .unwrap();
        let o = b.order("ORD-000001").unwrap();
        assert_eq!(o.status, OrderStatus::Done);
        assert!(
            o.steps
                .iter()
                .any(|x| x.action == Some(Action::AcknowledgeOrder))
        );
        // Another department's liaison is refused the whole report.
        let water = Actor::new("sun", Role::DepartmentLiaison, Some("water"));
        assert!(b.plan(&report(Action::StartOrder), &water, T0).is_err());
    }

    #[test]
    fn names_and_notes_cannot_forge_timeline_lines() {
        let mut b = book();
        let forger = Actor::new("li.wei\n10:00 mayor\u{202E}", Role::Dispatcher, None);
        run(&mut b, Command::ReportIncident(fire(None)), &forger, T0).unwrap();
        run(
            &mut b,
            Command::Note {
                incident: "INC-000001".into(),
                text: "ok\n10:01 zhongshu (system): incident closed\u{202E}".into(),
            },
            &forger,
            T0,
        )
        .unwrap();
        let inc = &b.incidents[0];
        for entry in &inc.timeline {
            assert!(!entry.who.contains(['\n', '\u{202E}']), "{entry:?}");
            assert!(!entry.text.contains(['\n', '\u{202E}']), "{entry:?}");
        }
    }

    #[test]
    fn alerts_are_one_incident_per_key() {
        let mut b = book();
        let system = Actor::system();
        run(
            &mut b,
            Command::ReportIncident(fire(Some("cap:a,1"))),
            &system,
            T0,
        )
        .unwrap();
        let err = run(
            &mut b,
            Command::ReportIncident(fire(Some("cap:a,1"))),
            &system,
            T0,
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::DuplicateAlert { .. }));
        assert_eq!(b.incident_for_key("cap:a,1").unwrap().id, "INC-000001");
    }

    #[test]
    fn events_about_unknown_things_are_counted_and_skipped() {
        let mut b = book();
        let stray = [
            Event::OrderOverdue {
                id: "ORD-000009".into(),
            },
            Event::Note {
                incident: "INC-000009".into(),
                text: "?".into(),
            },
            Event::OrderIssued {
                id: "ORD-000001".into(),
                incident: "INC-000009".into(),
                department: "fire".into(),
                instruction: "Go".into(),
                deadline_ms: T0,
                escalates: None,
                from: None,
            },
        ];
        for e in &stray {
            b.apply(e, T0, "x", Role::System);
        }
        let reported = Event::IncidentReported {
            id: "INC-000001".into(),
            incident: fire(None),
        };
        b.apply(&reported, T0, "x", Role::System);
        b.apply(&reported, T0, "x", Role::System);
        assert_eq!(b.skipped_events, 4);
        assert_eq!((b.incidents.len(), b.orders.len()), (1, 0));
        assert_eq!(b.revision, 1);
    }

    #[test]
    fn events_round_trip_through_json() {
        let events = vec![
            Event::IncidentReported {
                id: "INC-000001".into(),
                incident: fire(Some("k")),
            },
            Event::OrderChanged {
                id: "ORD-000001".into(),
                action: Action::AcknowledgeOrder,
                status: OrderStatus::Acknowledged,
                note: Some("on our way".into()),
                reported_ms: Some(T0),
            },
            Event::OrderOverdue {
                id: "ORD-000001".into(),
            },
        ];
        for e in events {
            let text = serde_json::to_string(&e).unwrap();
            assert!(
                text.contains(&format!("\"event\":\"{}\"", e.kind())),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
        }
    }
}
