//! The link between halls (市 → 区 → 街道): a district hall runs its own
//! `nats-server`, a leaf node of the city's cluster with a JetStream domain of its
//! own, and its own hub. A department of another hall is named in the dispatch file
//! as `endpoint = "hall:NAME"`; orders to it (escalations to a superior in the city
//! included) go to that hall's **inbox**, a stream of its own domain, and the hub of
//! that hall takes them into its log as orders to its department. Progress (signed
//! for, started, done, rejected) comes back the same way; a withdrawal goes forward.
//!
//! The log of each hall is its outbox: what is not yet on record as delivered is
//! sent again until the other hall's stream acknowledges it, so a link that drops
//! loses nothing, and each hall keeps working on its own meanwhile. Nothing is taken
//! in twice: the stream de-duplicates by message id, and the book refuses an order
//! it already carries (`HALL/ORD-…`), so repeats after a restart or a long cut are
//! harmless.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
use crate::dispatch::config::Endpoint;
use crate::dispatch::delivery::{ReportOutcome, StatusReport};
use crate::dispatch::service::DispatchService;
use crate::dispatch::{Action, OrderStatus};
use crate::model::Domain;
use crate::nats::Nats;

/// The version of the messages between halls; another is refused by name.
pub const LINK_VERSION: u32 = 1;

/// How often the hub looks at its book for what to send.
const SCAN_EVERY: Duration = Duration::from_millis(300);
/// How long a message sent but not yet on record waits before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(3);
/// The bound on one send: a link that is down answers at once ("no responders");
/// one that hangs must not stall the hub.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// The most time one scan spends sending (the hub's lease lasts 3 s).
const SCAN_BUDGET: Duration = Duration::from_millis(1500);
/// How long a hall that did not answer is left alone before it is tried again.
const HALL_BACKOFF: Duration = Duration::from_secs(5);
/// A message whose intake failed this many times is set aside (said, acknowledged).
const MAX_DELIVERIES: i64 = 5;
/// Longest text taken from another hall: ids, names, titles, instructions.
const MAX_ID: usize = 64;
const MAX_TEXT: usize = 10_000;
/// Messages taken from the inbox per pump, at most.
const BATCH: usize = 100;

/// The stream that holds what other halls send to `hall`.
pub fn inbox_stream(hall: &str) -> String {
    format!("ZHONGSHU_LINK_{hall}")
}

/// The subject other halls send to `hall` on.
pub fn inbox_subject(hall: &str) -> String {
    format!("zhongshu_link.{hall}")
}

/// What `hall-status` says of the hall's inbox: messages from other halls kept,
/// and how many the hub has not yet taken in.
pub fn inbox_status(nats: &Nats, hall: &str) -> Result<serde_json::Value, String> {
    let js = nats.js.clone();
    let name = inbox_stream(hall);
    nats.call("look at the hall's inbox", async move {
        let mut s = js.get_stream(&name).await.map_err(|e| e.to_string())?;
        let kept = s.info().await.map_err(|e| e.to_string())?.state.messages;
        let mut c: consumer::PullConsumer =
            s.get_consumer("hub").await.map_err(|e| e.to_string())?;
        let info = c.info().await.map_err(|e| e.to_string())?;
        Ok(serde_json::json!({
            "inbox": name,
            "messages": kept,
            "not_taken_in": info.num_pending + info.num_ack_pending as u64,
        }))
    })
}

/// The incident an order between halls is about, as the sending hall has it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkIncident {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub domain: Domain,
    pub severity: Severity,
    pub lon: f64,
    pub lat: f64,
}

/// What one hall tells another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LinkBody {
    /// An order of the sending hall (`order`, its id there) to a department of the
    /// receiving hall.
    Order {
        order: String,
        department: String,
        instruction: String,
        deadline_ms: i64,
        incident: LinkIncident,
        /// Who issued it (or `zhongshu` for an escalation by the clock).
        by: String,
    },
    /// The sending hall withdrew its order `order` (its incident is over, or it was
    /// escalated further).
    Withdraw {
        order: String,
        reason: Option<String>,
    },
    /// Progress on the receiving hall's order `order`, carried out by the sending
    /// hall's department: signed for, in progress, done or rejected.
    Progress {
        order: String,
        status: OrderStatus,
        note: Option<String>,
        at_ms: i64,
        by: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkMessage {
    pub v: u32,
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub body: LinkBody,
}

/// How far progress on an order has gone, for telling repeats.
fn progress(status: OrderStatus) -> Option<u8> {
    match status {
        OrderStatus::Acknowledged => Some(1),
        OrderStatus::InProgress => Some(2),
        OrderStatus::Done => Some(3),
        OrderStatus::Rejected => Some(4),
        _ => None,
    }
}

/// The hub's end of the link: the hall's inbox and what is on its way out.
pub struct HallLink {
    hall: String,
    consumer: consumer::PullConsumer,
    /// Orders sent and acknowledged by the other hall, not yet on record as
    /// delivered (a storage error), or sent and unanswered: when.
    sent: HashMap<String, Instant>,
    /// Withdrawals the other hall has acknowledged.
    withdrawn: HashSet<String>,
    /// Progress the other hall has acknowledged, per order of ours it sent.
    relayed: HashMap<String, u8>,
    /// When the book was last looked at for what is due.
    last_scan: Option<Instant>,
    /// Halls that did not answer, and when they are tried again.
    down_until: HashMap<String, Instant>,
}

impl HallLink {
    /// Opens (or creates) the hall's inbox and the hub's durable consumer on it.
    pub fn open(nats: &Nats, hall: &str, replicas: usize) -> Result<Self, String> {
        crate::nats::check_hall_name(hall)?;
        let js = nats.js.clone();
        let name = inbox_stream(hall);
        let subject = inbox_subject(hall);
        let consumer = nats.call("open the hall's inbox", async move {
            let config = stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                storage: stream::StorageType::File,
                num_replicas: replicas.max(1),
                duplicate_window: Duration::from_secs(120),
                // Kept a month: what a hub has taken in is in its log, and a hall
                // whose hub is down that long has other worries.
                max_age: Duration::from_secs(30 * 24 * 3600),
                description: Some("Zhongshu: what other halls send this hall".into()),
                ..Default::default()
            };
            let s = match js.get_stream(&name).await {
                Ok(s) => s,
                Err(_) => match js.create_stream(config).await {
                    Ok(s) => s,
                    Err(first) => js
                        .get_stream(&name)
                        .await
                        .map_err(|_| format!("cannot create the hall's inbox {name}: {first}"))?,
                },
            };
            s.get_or_create_consumer(
                "hub",
                consumer::pull::Config {
                    durable_name: Some("hub".into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    description: Some("the active hub takes in what other halls send".into()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("cannot open the hub's reader of {name}: {e}"))
        })?;
        Ok(Self {
            hall: hall.to_string(),
            consumer,
            sent: HashMap::new(),
            withdrawn: HashSet::new(),
            relayed: HashMap::new(),
            last_scan: None,
            down_until: HashMap::new(),
        })
    }

    /// Takes in what other halls sent, then (every few hundred milliseconds) sends
    /// what the book says is due to other halls. Never blocks for long: a link that
    /// is down is a problem reported, and what was due is sent at a later pump.
    /// Returns the problems met (each for the hub's output).
    pub fn pump(&mut self, nats: &Nats, service: &mut DispatchService, now_ms: i64) -> Vec<String> {
        let mut out = Vec::new();
        self.take_in(nats, service, now_ms, &mut out);
        if self.last_scan.is_none_or(|t| t.elapsed() >= SCAN_EVERY) {
            self.last_scan = Some(Instant::now());
            self.send_due(nats, service, now_ms, &mut out);
        }
        out
    }

    fn take_in(
        &mut self,
        nats: &Nats,
        service: &mut DispatchService,
        now_ms: i64,
        out: &mut Vec<String>,
    ) {
        let consumer = self.consumer.clone();
        let batch = nats.call("read the hall's inbox", async move {
            let mut batch = consumer
                .fetch()
                .max_messages(BATCH)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = Vec::new();
            while let Some(m) = batch.next().await {
                messages.push(m.map_err(|e| e.to_string())?);
            }
            Ok(messages)
        });
        let messages = match batch {
            Ok(m) => m,
            Err(e) => {
                out.push(format!("the hall's inbox: {e}"));
                return;
            }
        };
        let mut failed = false;
        for m in messages {
            if failed {
                // Left unacknowledged: delivered again after the store recovers.
                continue;
            }
            #[derive(Deserialize)]
            struct Version {
                v: u32,
                #[serde(default)]
                from: String,
            }
            // Another version is left in the inbox (for this hall's hub once it is
            // upgraded), said once a minute; never dropped.
            if let Ok(other) = serde_json::from_slice::<Version>(&m.payload)
                && other.v != LINK_VERSION
            {
                out.push(format!(
                    "a message from hall {} of link version {} waits in the inbox (this hub speaks {LINK_VERSION}: upgrade it)",
                    crate::dispatch::clean_text(&other.from.chars().take(MAX_ID).collect::<String>()),
                    other.v
                ));
                let _ = nats.call("leave a message in the inbox", async move {
                    m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(60))))
                        .await
                        .map_err(|e| e.to_string())
                });
                continue;
            }
            let deliveries = m.info().map(|i| i.delivered).unwrap_or(1);
            let outcome = match serde_json::from_slice::<LinkMessage>(&m.payload) {
                Ok(msg) if too_long(&msg) => Err(format!(
                    "a message from hall {} with an id over {MAX_ID} or a text over {MAX_TEXT} characters: not taken in",
                    crate::dispatch::clean_text(&msg.from.chars().take(MAX_ID).collect::<String>())
                )),
                Ok(msg) if msg.to != self.hall => Err(format!(
                    "a message from hall {} for hall {} arrived here: not taken in",
                    msg.from, msg.to
                )),
                Ok(msg) if crate::nats::check_hall_name(&msg.from).is_err() => {
                    Err(format!("a message from {:?}: not a hall's name", msg.from))
                }
                Ok(msg) => match self.receive(nats, service, &msg, now_ms) {
                    Ok(()) => Ok(()),
                    Err(Fail::Refused(why)) => Err(why),
                    Err(Fail::Storage(why)) if deliveries >= MAX_DELIVERIES => Err(format!(
                        "set aside after {deliveries} failed attempts: {why}"
                    )),
                    Err(Fail::Storage(why)) => {
                        out.push(why);
                        failed = true;
                        continue;
                    }
                },
                Err(e) => Err(format!("a garbled message on the hall's inbox: {e}")),
            };
            if let Err(why) = outcome {
                out.push(why);
            }
            let acked = nats.call("acknowledge a message of the inbox", async move {
                m.ack().await.map_err(|e| e.to_string())
            });
            if let Err(e) = acked {
                out.push(format!("the hall's inbox: {e}"));
            }
        }
    }

    fn receive(
        &mut self,
        nats: &Nats,
        service: &mut DispatchService,
        msg: &LinkMessage,
        now_ms: i64,
    ) -> Result<(), Fail> {
        let system = Actor::system();
        let from = &msg.from;
        match &msg.body {
            LinkBody::Order {
                order,
                department,
                instruction,
                deadline_ms,
                incident,
                by,
            } => {
                let origin = format!("{from}/{order}");
                if service.dispatcher.book().order_from(&origin).is_some() {
                    return Ok(()); // a repeat
                }
                let refuse = |why: String| LinkMessage {
                    v: LINK_VERSION,
                    from: self.hall.clone(),
                    to: from.clone(),
                    body: LinkBody::Progress {
                        order: order.clone(),
                        status: OrderStatus::Rejected,
                        note: Some(why),
                        at_ms: now_ms,
                        by: format!("hall {}", self.hall),
                    },
                };
                if service
                    .dispatcher
                    .book()
                    .config
                    .department(department)
                    .is_none()
                {
                    let why = format!("hall {} has no department {department}", self.hall);
                    send(nats, &refuse(why.clone()), &format!("{origin}/refused"))
                        .map_err(Fail::Storage)?;
                    return Err(Fail::Refused(format!("{origin} refused: {why}")));
                }
                let key = format!("hall:{from}/{}", incident.id);
                let open = service
                    .dispatcher
                    .book()
                    .incident_for_key(&key)
                    .map(|i| (i.id.clone(), i.is_open()));
                let incident_id = match open {
                    Some((id, true)) => id,
                    Some((id, false)) => {
                        let why =
                            format!("its incident is {id} in hall {}, already over", self.hall);
                        send(nats, &refuse(why.clone()), &format!("{origin}/refused"))
                            .map_err(Fail::Storage)?;
                        return Err(Fail::Refused(format!("{origin} refused: {why}")));
                    }
                    None => {
                        let report = Command::ReportIncident(NewIncident {
                            kind: incident.kind.clone(),
                            title: format!("{} (hall {from}, {})", incident.title, incident.id),
                            domain: incident.domain,
                            severity: incident.severity,
                            lon: incident.lon,
                            lat: incident.lat,
                            source: format!("hall {from}"),
                            key: Some(key.clone()),
                        });
                        service
                            .execute(&report, &system, now_ms)
                            .map_err(|e| Fail::from_dispatch(&origin, e))?;
                        service
                            .dispatcher
                            .book()
                            .incident_for_key(&key)
                            .map(|i| i.id.clone())
                            .ok_or_else(|| Fail::Refused(format!("{origin}: no incident")))?
                    }
                };
                let receive = Command::ReceiveOrder {
                    incident: incident_id,
                    order: NewOrder {
                        department: department.clone(),
                        instruction: format!("{instruction} (from hall {from}, by {by})"),
                        deadline_ms: *deadline_ms,
                    },
                    from: origin.clone(),
                };
                match service.execute(&receive, &system, now_ms) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Fail::from_dispatch(&origin, e)),
                }
            }
            LinkBody::Withdraw { order, reason } => {
                let origin = format!("{from}/{order}");
                // Never taken in (withdrawn before it was sent): nothing to withdraw.
                let Some(ours) = service.dispatcher.book().order_from(&origin) else {
                    return Ok(());
                };
                if !ours.status.is_pending() {
                    return Ok(());
                }
                let id = ours.id.clone();
                let note = match reason {
                    Some(r) => format!("withdrawn by hall {from}: {r}"),
                    None => format!("withdrawn by hall {from}"),
                };
                let cancel = Command::Order {
                    id,
                    action: Action::CancelOrder,
                    note: Some(note),
                };
                match service.execute(&cancel, &system, now_ms) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(Fail::from_dispatch(&origin, e)),
                }
            }
            LinkBody::Progress {
                order,
                status,
                note,
                at_ms,
                by,
            } => {
                let book = service.dispatcher.book();
                let Some(ours) = book.order(order) else {
                    return Err(Fail::Refused(format!(
                        "hall {from} reported on {order}, which this hall does not have"
                    )));
                };
                let of_that_hall = book
                    .config
                    .department(&ours.department)
                    .is_some_and(|d| d.endpoint == Endpoint::Hall(from.clone()));
                if !of_that_hall {
                    return Err(Fail::Refused(format!(
                        "hall {from} reported on {order}, an order to {}, which is not its department",
                        ours.department
                    )));
                }
                // Over here already (withdrawn, escalated, finished): the other hall's
                // later word changes nothing.
                if !ours.status.is_pending() {
                    return Ok(());
                }
                let report = StatusReport {
                    order_id: order.clone(),
                    department: ours.department.clone(),
                    status: *status,
                    by: format!("{by} (hall {from})"),
                    note: note.clone(),
                    at_ms: (*at_ms).min(now_ms),
                    received_at_ms: now_ms,
                };
                match service.take_report(&report, now_ms) {
                    Ok((_, ReportOutcome::Refused { reason })) => {
                        Err(Fail::Refused(format!("hall {from} on {order}: {reason}")))
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(Fail::from_dispatch(order, e)),
                }
            }
        }
    }

    /// Sends what the book says other halls are owed: orders to their departments
    /// not yet delivered, withdrawals of orders delivered to them, and progress on
    /// the orders they sent here.
    fn send_due(
        &mut self,
        nats: &Nats,
        service: &mut DispatchService,
        now_ms: i64,
        out: &mut Vec<String>,
    ) {
        let scan_started = Instant::now();
        let now = Instant::now();
        self.down_until.retain(|_, until| *until > now);
        let mut down: HashSet<String> = self.down_until.keys().cloned().collect();
        let mut due: Vec<(String, LinkMessage, String, Due)> = Vec::new();
        {
            let book = service.dispatcher.book();
            // Orders no longer waiting for their delivery need no resend time.
            self.sent
                .retain(|id, _| book.order(id).is_some_and(|o| o.delivered_ms.is_none()));
            // Withdrawals of the last week are sent again by a new hub (the other
            // hall ignores what it already withdrew or never had).
            let recent = now_ms - 7 * 24 * 3_600_000;
            let hall_of = |department: &str| match book.config.department(department) {
                Some(d) => match &d.endpoint {
                    Endpoint::Hall(h) => Some(h.clone()),
                    _ => None,
                },
                None => None,
            };
            for o in book.undelivered() {
                let Some(to) = hall_of(&o.department) else {
                    continue;
                };
                if self
                    .sent
                    .get(&o.id)
                    .is_some_and(|t| t.elapsed() < RESEND_AFTER)
                {
                    continue;
                }
                let Some(inc) = book.incident(&o.incident) else {
                    continue;
                };
                let by = o
                    .steps
                    .first()
                    .map_or("zhongshu".to_string(), |s| s.who.to_string());
                let msg = LinkMessage {
                    v: LINK_VERSION,
                    from: self.hall.clone(),
                    to: to.clone(),
                    body: LinkBody::Order {
                        order: o.id.clone(),
                        department: o.department.clone(),
                        instruction: o.instruction.clone(),
                        deadline_ms: o.deadline_ms,
                        incident: LinkIncident {
                            id: inc.id.clone(),
                            kind: inc.kind.clone(),
                            title: inc.title.clone(),
                            domain: inc.domain,
                            severity: inc.severity,
                            lon: inc.lon,
                            lat: inc.lat,
                        },
                        by,
                    },
                };
                let id = format!("{}/{}/order", self.hall, o.id);
                due.push((to, msg, id, Due::Order(o.id.clone())));
            }
            for o in &book.orders {
                // Withdrawn here: the other hall is told, also when no delivery is
                // on record (it may have had it: a send acknowledged just before).
                if matches!(o.status, OrderStatus::Cancelled | OrderStatus::Escalated)
                    && o.steps.last().is_some_and(|s| s.at_ms >= recent)
                    && !self.withdrawn.contains(&o.id)
                    && let Some(to) = hall_of(&o.department)
                {
                    let reason = o.steps.last().and_then(|s| s.note.clone());
                    let msg = LinkMessage {
                        v: LINK_VERSION,
                        from: self.hall.clone(),
                        to: to.clone(),
                        body: LinkBody::Withdraw {
                            order: o.id.clone(),
                            reason,
                        },
                    };
                    let id = format!("{}/{}/withdraw", self.hall, o.id);
                    due.push((to, msg, id, Due::Withdraw(o.id.clone())));
                }
                // Progress on an order another hall sent: it goes back. Withdrawn or
                // escalated here, it is rejected there, with why.
                let relay = match o.status {
                    OrderStatus::Cancelled | OrderStatus::Escalated => {
                        Some((4, OrderStatus::Rejected))
                    }
                    s => progress(s).map(|level| (level, s)),
                };
                if let Some(origin) = &o.from
                    && let Some((level, status)) = relay
                    && self.relayed.get(&o.id).is_none_or(|&l| l < level)
                    && let Some((to, theirs)) = origin.split_once('/')
                {
                    let step = o.steps.last();
                    let note = step.and_then(|s| s.note.clone());
                    let note = match o.status {
                        OrderStatus::Cancelled | OrderStatus::Escalated => Some(format!(
                            "{:?} in hall {}{}",
                            o.status,
                            self.hall,
                            note.map(|n| format!(": {n}")).unwrap_or_default()
                        )),
                        _ => note,
                    };
                    let msg = LinkMessage {
                        v: LINK_VERSION,
                        from: self.hall.clone(),
                        to: to.to_string(),
                        body: LinkBody::Progress {
                            order: theirs.to_string(),
                            status,
                            note,
                            at_ms: step.map_or(now_ms, |s| s.at_ms),
                            by: step.map_or("zhongshu".to_string(), |s| s.who.to_string()),
                        },
                    };
                    let id = format!("{}/{}/{:?}", self.hall, o.id, o.status);
                    due.push((to.to_string(), msg, id, Due::Progress(o.id.clone(), level)));
                }
            }
        }
        for (to, msg, id, what) in due {
            if down.contains(&to) {
                continue;
            }
            // A scan never holds the hub long: what is left goes at the next one.
            if scan_started.elapsed() >= SCAN_BUDGET {
                break;
            }
            match send(nats, &msg, &id) {
                Ok(()) => match what {
                    Due::Order(order) => {
                        self.sent.insert(order.clone(), Instant::now());
                        let delivered = Command::Order {
                            id: order.clone(),
                            action: Action::RecordDelivery,
                            note: Some(format!("to hall {to}")),
                        };
                        match service.execute(&delivered, &Actor::system(), now_ms) {
                            Ok(_) => {
                                self.sent.remove(&order);
                            }
                            Err(e) if e.is_refusal() => {
                                self.sent.remove(&order);
                            }
                            Err(e) => out.push(format!("{order}: {e}")),
                        }
                    }
                    Due::Withdraw(order) => {
                        self.withdrawn.insert(order);
                    }
                    Due::Progress(order, level) => {
                        self.relayed.insert(order, level);
                    }
                },
                Err(e) => {
                    out.push(format!("the link to hall {to}: {e}"));
                    self.down_until
                        .insert(to.clone(), Instant::now() + HALL_BACKOFF);
                    down.insert(to);
                }
            }
        }
    }
}

/// Whether a message carries an id or a text longer than a hall ever writes.
fn too_long(msg: &LinkMessage) -> bool {
    let id = |s: &str| s.chars().count() > MAX_ID;
    let text = |s: &str| s.chars().count() > MAX_TEXT;
    id(&msg.from)
        || id(&msg.to)
        || match &msg.body {
            LinkBody::Order {
                order,
                department,
                instruction,
                incident,
                by,
                ..
            } => {
                id(order)
                    || id(department)
                    || id(&incident.id)
                    || id(&incident.kind)
                    || text(instruction)
                    || text(&incident.title)
                    || text(by)
            }
            LinkBody::Withdraw { order, reason } => {
                id(order) || reason.as_deref().is_some_and(text)
            }
            LinkBody::Progress {
                order, note, by, ..
            } => id(order) || note.as_deref().is_some_and(text) || text(by),
        }
}

enum Due {
    Order(String),
    Withdraw(String),
    Progress(String, u8),
}

enum Fail {
    /// Not taken in, for a reason that a retry does not change (said, then dropped).
    Refused(String),
    /// The log is unavailable: the message stays in the inbox for the next pump.
    Storage(String),
}

impl Fail {
    fn from_dispatch(what: &str, e: crate::dispatch::dispatcher::DispatchError) -> Fail {
        if e.is_refusal() {
            Fail::Refused(format!("{what}: {e}"))
        } else {
            Fail::Storage(format!("{what}: {e}"))
        }
    }
}

/// Sends one message to its hall's inbox and waits for that stream's
/// acknowledgement (its message id makes a repeat within two minutes a no-op).
fn send(nats: &Nats, msg: &LinkMessage, id: &str) -> Result<(), String> {
    let js = nats.js.clone();
    let subject = inbox_subject(&msg.to);
    let payload = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
    let id = id.to_string();
    let to = msg.to.clone();
    nats.call("send to another hall", async move {
        let sent = async {
            let ack = js
                .send_publish(
                    subject,
                    jetstream::message::PublishMessage::build()
                        .payload(payload.into())
                        .message_id(id),
                )
                .await
                .map_err(|e| e.to_string())?;
            ack.await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(SEND_TIMEOUT, sent).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("hall {to} did not take it: {e}")),
            Err(_) => Err(format!("hall {to} did not answer in {SEND_TIMEOUT:?}")),
        }
    })
}

#[cfg(test)]
mod tests {
    //! Two halls on two real `nats-server`s, the district's a leaf node of the
    //! city's with a JetStream domain of its own, the leaf link through a proxy the
    //! test can cut.

    use std::io::ErrorKind;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{Receiver, channel};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::inbox_subject;
    use crate::clock::unix_ms_now;
    use crate::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
    use crate::dispatch::config::DispatchConfig;
    use crate::dispatch::dispatcher::Dispatcher;
    use crate::dispatch::service::ServiceOptions;
    use crate::dispatch::{Action, OrderStatus, Role};
    use crate::hall::hub::{HubOptions, HubState, run};
    use crate::model::Domain;
    use crate::nats::testing::{NatsServer, free_port};
    use crate::nats::{Nats, NatsOptions};
    use crate::store::jetstream::{HallLogOptions, JetStreamLog};

    const CITY: &str = r#"
[[department]]
id = "city_fire"
name = "City Fire Command 市消防指挥中心"
domain = "safety"
level = "city"
"#;

    const DISTRICT: &str = r#"
[[department]]
id = "city_fire"
name = "City Fire Command 市消防指挥中心"
domain = "safety"
level = "city"
endpoint = "hall:city"

[[department]]
id = "district_fire"
name = "Riverside District Fire Brigade 滨江区消防大队"
domain = "safety"
level = "district"
superior = "city_fire"
"#;

    /// A TCP proxy for the leaf link: `cut` drops every connection and refuses new
    /// ones until `restore`.
    struct Proxy {
        port: u16,
        cut: Arc<AtomicBool>,
        open: Arc<Mutex<Vec<TcpStream>>>,
        stop: Arc<AtomicBool>,
    }

    impl Proxy {
        fn start(upstream: u16) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let cut = Arc::new(AtomicBool::new(false));
            let open = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (c, o, s) = (cut.clone(), open.clone(), stop.clone());
            std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((down, _)) => {
                            if c.load(Ordering::Relaxed) {
                                drop(down);
                                continue;
                            }
                            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                                continue;
                            };
                            down.set_nonblocking(false).unwrap();
                            let mut list = o.lock().unwrap();
                            list.push(down.try_clone().unwrap());
                            list.push(up.try_clone().unwrap());
                            for (mut a, mut b) in [
                                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                                (up, down),
                            ] {
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut a, &mut b);
                                    let _ = a.shutdown(Shutdown::Both);
                                    let _ = b.shutdown(Shutdown::Both);
                                });
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            });
            Self {
                port,
                cut,
                open,
                stop,
            }
        }

        fn cut(&self) {
            self.cut.store(true, Ordering::Relaxed);
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }

        fn restore(&self) {
            self.cut.store(false, Ordering::Relaxed);
        }
    }

    impl Drop for Proxy {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            self.cut();
        }
    }

    fn connect(server: &NatsServer, name: &str) -> Nats {
        server.connect(name)
    }

    fn console(server: &NatsServer, hall: &str, config: &str) -> Dispatcher {
        let nats = connect(server, &format!("{hall}-desk"));
        let log = JetStreamLog::open(&nats, hall, &HallLogOptions::default()).expect("open");
        let config = DispatchConfig::parse(config, hall).expect("config");
        Dispatcher::open_store(Box::new(log), config).expect("replay")
    }

    struct Hub {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
        states: Receiver<HubState>,
    }

    impl Hub {
        fn start(server: &NatsServer, hall: &str, config: &str) -> Hub {
            let nats = connect(server, &format!("{hall}-hub"));
            let options = HubOptions {
                hall: hall.to_string(),
                config: DispatchConfig::parse(config, hall).expect("config"),
                service: ServiceOptions {
                    api_addr: "127.0.0.1:0".into(),
                    ..Default::default()
                },
                replicas: 1,
                crash_on_stop: false,
                live: None,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, states) = channel();
            let s = stop.clone();
            let thread = std::thread::spawn(move || {
                run(&nats, options, s, |state| {
                    let _ = tx.send(state);
                })
                .unwrap();
            });
            let hub = Hub {
                stop,
                thread: Some(thread),
                states,
            };
            hub.wait_active();
            hub
        }

        fn wait_active(&self) {
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until {
                if let Ok(HubState::Active { .. }) =
                    self.states.recv_timeout(Duration::from_millis(200))
                {
                    return;
                }
            }
            panic!("the hub did not become active");
        }

        /// Waits (10 s at most) for the hub to report a problem saying `what`.
        fn wait_problem(&self, what: &str) {
            let until = Instant::now() + Duration::from_secs(10);
            let mut said = Vec::new();
            while Instant::now() < until {
                if let Ok(HubState::Problem(p)) =
                    self.states.recv_timeout(Duration::from_millis(100))
                {
                    if p.contains(what) {
                        return;
                    }
                    said.push(p);
                }
            }
            panic!("the hub never said {what:?}: {said:?}");
        }
    }

    /// Publishes `body` on the city's inbox as any client of the server could.
    fn publish(raw: &Nats, body: &'static str) {
        let js = raw.js.clone();
        raw.call("publish", async move {
            js.publish(inbox_subject("city"), body.into())
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        })
        .unwrap();
    }

    impl Drop for Hub {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Syncs `desk` until `done` holds of its book, at most `within`.
    fn wait_for(
        desk: &mut Dispatcher,
        within: Duration,
        what: &str,
        done: impl Fn(&crate::dispatch::book::Book) -> bool,
    ) {
        let until = Instant::now() + within;
        loop {
            desk.sync().unwrap();
            if done(desk.book()) {
                return;
            }
            assert!(Instant::now() < until, "not within {within:?}: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A district incident whose order to the district's brigade is rejected, then
    /// escalated to its superior, the city's fire command, in the city's hall.
    fn escalate_in_district(desk: &mut Dispatcher, title: &str) -> (String, String) {
        let li = Actor::new("li.wei", Role::Dispatcher, None);
        let now = unix_ms_now();
        let events = desk
            .execute(
                &Command::ReportIncident(NewIncident {
                    kind: "fire".into(),
                    title: title.into(),
                    domain: Domain::Safety,
                    severity: Severity::Extreme,
                    lon: 121.48,
                    lat: 31.22,
                    source: "desk".into(),
                    key: None,
                }),
                &li,
                now,
            )
            .unwrap();
        let crate::dispatch::book::Event::IncidentReported { id: incident, .. } = &events[0] else {
            panic!("{events:?}")
        };
        let events = desk
            .execute(
                &Command::IssueOrders {
                    incident: incident.clone(),
                    orders: vec![NewOrder {
                        department: "district_fire".into(),
                        instruction: "Contain the warehouse fire".into(),
                        deadline_ms: now + 600_000,
                    }],
                },
                &li,
                now + 1,
            )
            .unwrap();
        let order = events
            .iter()
            .find_map(|e| match e {
                crate::dispatch::book::Event::OrderIssued { id, .. } => Some(id.clone()),
                _ => None,
            })
            .unwrap();
        for action in [Action::RejectOrder, Action::EscalateOrder] {
            desk.execute(
                &Command::Order {
                    id: order.clone(),
                    action,
                    note: Some("beyond the brigade's means".into()),
                },
                &li,
                now + 2,
            )
            .unwrap();
        }
        let up = desk
            .book()
            .order(&order)
            .unwrap()
            .escalated_to
            .clone()
            .unwrap();
        (incident.clone(), up)
    }

    #[test]
    fn an_escalation_to_the_city_arrives_once_and_both_halls_work_through_a_cut_link() {
        let leaf_port = free_port();
        let city = NatsServer::start_full(
            "link-city",
            "domain: city",
            &format!(
                "server_name: city\nleafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  no_advertise: true\n}}\n"
            ),
        );
        // (`no_advertise`: the district reconnects through the proxy only, never to
        // the address the city's server would advertise.)
        let proxy = Proxy::start(leaf_port);
        let district = NatsServer::start_full(
            "link-d1",
            "domain: d1",
            &format!(
                "server_name: d1\nleafnodes {{\n  remotes: [ {{ urls: [\"nats-leaf://127.0.0.1:{}\"] }} ]\n}}\n",
                proxy.port
            ),
        );
        let city_hub = Hub::start(&city, "city", CITY);
        let d1_hub = Hub::start(&district, "d1", DISTRICT);
        let mut d1 = console(&district, "d1", DISTRICT);
        let mut town = console(&city, "city", CITY);

        // Escalated in the district: the city's log takes it in as an order to its
        // fire command, with the district's incident, and the district records the
        // delivery.
        let (_, up) = escalate_in_district(&mut d1, "Warehouse fire on Binjiang Road");
        let origin = format!("d1/{up}");
        wait_for(
            &mut town,
            Duration::from_secs(30),
            "the escalation in the city",
            |b| b.order_from(&origin).is_some(),
        );
        let city_order = town.book().order_from(&origin).unwrap().clone();
        assert_eq!(city_order.department, "city_fire");
        assert_eq!(city_order.status, OrderStatus::Issued);
        let inc = town.book().incident(&city_order.incident).unwrap();
        assert!(
            inc.title.contains("Warehouse fire") && inc.title.contains("hall d1"),
            "{}",
            inc.title
        );
        assert_eq!(inc.source, "hall d1");
        wait_for(
            &mut d1,
            Duration::from_secs(10),
            "the delivery on record",
            |b| b.order(&up).unwrap().delivered_ms.is_some(),
        );

        // The city's dispatcher signs for it (the fire command has no endpoint):
        // the district sees it signed for, by whom, in which hall.
        let wang = Actor::new("wang.fang", Role::Dispatcher, None);
        town.execute(
            &Command::Order {
                id: city_order.id.clone(),
                action: Action::AcknowledgeOrder,
                note: None,
            },
            &wang,
            unix_ms_now(),
        )
        .unwrap();
        wait_for(
            &mut d1,
            Duration::from_secs(15),
            "the sign-for back in the district",
            |b| b.order(&up).unwrap().status == OrderStatus::Acknowledged,
        );
        let step = d1.book().order(&up).unwrap().steps.last().unwrap().clone();
        assert!(
            step.who.contains("wang.fang") && step.who.contains("hall city"),
            "{step:?}"
        );

        // The link is cut: each hall goes on working on its own.
        proxy.cut();
        std::thread::sleep(Duration::from_millis(1500));
        let (second_incident, second) = escalate_in_district(&mut d1, "Flooded underpass");
        town.execute(
            &Command::Order {
                id: city_order.id.clone(),
                action: Action::CompleteOrder,
                note: Some("fire out".into()),
            },
            &wang,
            unix_ms_now(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_secs(3));
        town.sync().unwrap();
        d1.sync().unwrap();
        assert!(town.book().order_from(&format!("d1/{second}")).is_none());
        assert_eq!(
            d1.book().order(&up).unwrap().status,
            OrderStatus::Acknowledged
        );
        assert!(d1.book().order(&second).unwrap().delivered_ms.is_none());

        // The link returns: both sides catch up.
        proxy.restore();
        let second_origin = format!("d1/{second}");
        wait_for(
            &mut town,
            Duration::from_secs(40),
            "the second escalation",
            |b| b.order_from(&second_origin).is_some(),
        );
        wait_for(
            &mut d1,
            Duration::from_secs(30),
            "done, and the second delivered",
            |b| {
                b.order(&up).unwrap().status == OrderStatus::Done
                    && b.order(&second).unwrap().delivered_ms.is_some()
            },
        );

        // The city watches the district's log over the link (its JetStream
        // domain, from the city's own server): the same book, read-only.
        let watcher = Nats::connect(&NatsOptions {
            url: city.url(),
            domain: Some("d1".into()),
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .unwrap();
        let log = JetStreamLog::open(
            &watcher,
            "d1",
            &HallLogOptions {
                replicas: 1,
                create: false,
            },
        )
        .expect("the district's log, read from the city");
        let watch = Dispatcher::open_store(
            Box::new(log),
            DispatchConfig::parse(DISTRICT, "d1").unwrap(),
        )
        .unwrap();
        d1.sync().unwrap();
        assert_eq!(watch.book().incidents, d1.book().incidents);
        assert_eq!(watch.book().orders, d1.book().orders);

        // Hubs restarted send again what they cannot know was taken: nothing is
        // taken twice.
        drop(city_hub);
        drop(d1_hub);
        let city_hub = Hub::start(&city, "city", CITY);
        let d1_hub = Hub::start(&district, "d1", DISTRICT);
        std::thread::sleep(Duration::from_secs(3));
        town.sync().unwrap();
        d1.sync().unwrap();
        let received: Vec<_> = town
            .book()
            .orders
            .iter()
            .filter(|o| o.from.is_some())
            .collect();
        assert_eq!(received.len(), 2, "{received:?}");
        assert_eq!(town.book().orders.len(), 2);
        let done_steps = d1
            .book()
            .order(&up)
            .unwrap()
            .steps
            .iter()
            .filter(|s| s.status == OrderStatus::Done)
            .count();
        assert_eq!(done_steps, 1);

        // The district resolves its second incident: the city's order for it is
        // withdrawn.
        let li = Actor::new("li.wei", Role::Dispatcher, None);
        d1.execute(
            &Command::Incident {
                id: second_incident,
                action: Action::ResolveIncident,
                note: Some("pumped dry".into()),
            },
            &li,
            unix_ms_now(),
        )
        .unwrap();
        wait_for(
            &mut town,
            Duration::from_secs(15),
            "the withdrawal in the city",
            |b| b.order_from(&second_origin).unwrap().status == OrderStatus::Cancelled,
        );

        // The city withdraws the order it took in: the district's order is
        // rejected, saying so, and its dispatcher can take it further.
        let (_, third) = escalate_in_district(&mut d1, "Gas main rupture");
        let third_origin = format!("d1/{third}");
        wait_for(
            &mut town,
            Duration::from_secs(15),
            "the third escalation",
            |b| b.order_from(&third_origin).is_some(),
        );
        let theirs = town.book().order_from(&third_origin).unwrap().id.clone();
        town.execute(
            &Command::Order {
                id: theirs,
                action: Action::CancelOrder,
                note: Some("handled by the gas company directly".into()),
            },
            &wang,
            unix_ms_now(),
        )
        .unwrap();
        wait_for(
            &mut d1,
            Duration::from_secs(15),
            "the withdrawal back in the district",
            |b| b.order(&third).unwrap().status == OrderStatus::Rejected,
        );
        let step = d1
            .book()
            .order(&third)
            .unwrap()
            .steps
            .last()
            .unwrap()
            .clone();
        let note = step.note.clone().unwrap_or_default();
        assert!(
            note.contains("Cancelled in hall city") && note.contains("gas company"),
            "{step:?}"
        );

        // Garbage on the city's inbox is said and dropped; the hub goes on.
        let raw = connect(&city, "intruder");
        publish(&raw, "{not json");
        city_hub.wait_problem("garbled");

        // Everything sent to the city was taken in (what hall-status says).
        let status = super::inbox_status(&raw, "city").unwrap();
        assert_eq!(status["not_taken_in"], 0, "{status}");
        assert!(status["messages"].as_u64().unwrap() >= 3, "{status}");

        // A message of a newer link version waits in the inbox for an upgraded hub,
        // said, never dropped.
        publish(&raw, r#"{"v":2,"from":"d1","to":"city","kind":"order_v2"}"#);
        city_hub.wait_problem("version 2 waits in the inbox");
        let status = super::inbox_status(&raw, "city").unwrap();
        assert_eq!(status["not_taken_in"], 1, "{status}");

        // Both logs are whole and both chains verify.
        for desk in [&town, &d1] {
            let report = desk.log().verify().unwrap();
            assert!(report.chain_ok, "{report:?}");
        }
        drop(d1_hub);
    }
}
