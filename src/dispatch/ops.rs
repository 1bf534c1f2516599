//! The hub's operating figures (运营): how departments answer orders, how fast
//! incidents are handled, what is overdue and which service targets were missed,
//! computed from the dispatch event log alone, so that anyone holding the audit
//! trail can recompute every number. The log is replayed through [`Book::apply`],
//! the path the console rebuilds its state by; nothing here reads a clock.
//!
//! Times are when the log recorded each step (a department's own `at` in its
//! report is not used), in Unix milliseconds. A spread's p50 and p90 are
//! nearest-rank percentiles: the ⌈q·n⌉-th smallest of the n values.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::book::{Book, Event, Order, Severity};
use super::config::{DispatchConfig, ServiceTarget};
use super::dispatcher::{Foreign, taken_in};
use super::{Action, OrderStatus, Role};
use crate::clock::rfc3339_from_unix_ms;
use crate::store::{EventLog, EventStore, StoreError};

/// How many values and their p50 and p90 (nearest rank), in milliseconds; `None`
/// without values.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub p50: Option<i64>,
    pub p90: Option<i64>,
}

impl Spread {
    fn of(mut values: Vec<i64>) -> Self {
        values.sort_unstable();
        Self {
            n: values.len(),
            p50: nearest_rank(&values, 50),
            p90: nearest_rank(&values, 90),
        }
    }
}

/// The ⌈pct·n/100⌉-th smallest of `sorted`.
fn nearest_rank(sorted: &[i64], pct: usize) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

/// One department's orders issued in the window, as they stand at the report's
/// instant.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DepartmentFigures {
    /// The department's name in the dispatch file (`None`: not in it).
    pub name: Option<String>,
    pub orders: u64,
    /// Orders the department signed for (or started or completed without signing).
    pub signed_for: u64,
    pub done: u64,
    /// Done at or before the deadline.
    pub on_time: u64,
    /// Orders whose punctuality is known: done, or past the deadline undone, or
    /// rejected or escalated (which are never done by the department). Orders still
    /// open before their deadline, or withdrawn before it, are not counted.
    pub due: u64,
    /// `on_time` / `due`, in per cent to one decimal; `None` when nothing is due.
    pub on_time_pct: Option<f64>,
    /// Issue → sign-for.
    pub sign_for_ms: Spread,
    /// Issue → done.
    pub done_ms: Spread,
    pub rejected: u64,
    /// Orders urged at least once (by a person, or by the clock at the deadline).
    pub urged: u64,
    /// Urges in all.
    pub urges: u64,
    /// Orders taken away to the superior level.
    pub escalated: u64,
    /// Orders withdrawn (their incident was resolved or closed).
    pub cancelled: u64,
    /// Orders still waiting for the department or the dispatcher.
    pub open: u64,
    /// Entries of [`OpsReport::sla_breaches`] of this department.
    pub sla_breaches: u64,
}

/// Incidents of one kind and severity reported in the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IncidentFigures {
    pub kind: String,
    pub severity: Severity,
    pub count: u64,
    /// Still open (not resolved or closed) at the report's instant.
    pub open: u64,
    /// Reported → first order.
    pub first_order_ms: Spread,
    /// Reported → resolved or closed, whichever came first.
    pub close_ms: Spread,
}

/// An order past its deadline at the report's instant, not done, not withdrawn.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OverdueOrder {
    pub order: String,
    pub incident: String,
    pub department: String,
    pub status: OrderStatus,
    /// Signed for and late, rather than waiting for a sign-for.
    pub signed_for: bool,
    pub deadline: String,
    /// How far past the deadline.
    pub overdue_ms: i64,
}

/// Which service target an order missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    SignFor,
    Done,
}

/// An order that missed its service target ([`ServiceTarget`]). The clock of a
/// target runs from the issue to the step it names, or to the order's end
/// (rejected, escalated, withdrawn), or to the report's instant.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlaBreach {
    pub order: String,
    pub incident: String,
    pub department: String,
    /// The incident's kind.
    pub kind: String,
    pub target: Target,
    pub target_ms: i64,
    pub elapsed_ms: i64,
    /// `elapsed_ms - target_ms`.
    pub over_ms: i64,
    /// The step was reached (late); `false`: not reached at all (see `status`).
    pub reached: bool,
    pub status: OrderStatus,
}

/// Incidents a source raised in the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SourceFigures {
    pub incidents: u64,
    /// Alerts the source itself withdrew.
    pub withdrawn: u64,
}

/// What the log says of feeds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedFigures {
    /// Whether feeds' freshness and validity over time are in the log: they are not.
    pub health_recorded: bool,
    pub note: &'static str,
    /// Incidents by the source that raised them (`map`: a person on the map;
    /// `cap:…`, `ngsi-ld:…`: a feed's alerts), in the window.
    pub incidents_by_source: BTreeMap<String, SourceFigures>,
}

const FEED_HEALTH_NOTE: &str = "the dispatch event log records incidents and orders, not feed health: freshness and validity over time are not in the audit trail, so they are not reported here (feeds-check and the steward window show them live)";

/// The operating figures of a window of the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpsReport {
    /// The log read (its path, or the hall's stream).
    pub log: Option<String>,
    /// The window, inclusive at both ends; `None`: from the start, to the end.
    pub since: Option<String>,
    pub until: Option<String>,
    /// The instant "overdue" and still-running targets are judged at: `until`, else
    /// when the report was made.
    pub at: String,
    /// Events in the log, those in the window, and those left out after `until`.
    pub events: u64,
    pub events_in_window: u64,
    pub events_after_until: u64,
    /// Events that could not be read, that name something unknown (a damaged log),
    /// or whose role may not write them (a hall's log): none is counted.
    pub unreadable_events: u64,
    pub skipped_events: u64,
    pub not_permitted: u64,
    /// The times of the first and last event of the log.
    pub first_event: Option<String>,
    pub last_event: Option<String>,
    /// Orders issued in the window, by department id.
    pub departments: BTreeMap<String, DepartmentFigures>,
    /// Incidents reported in the window, by kind, then most severe first.
    pub incidents: Vec<IncidentFigures>,
    /// Every order overdue at `at`, furthest past its deadline first.
    pub overdue: Vec<OverdueOrder>,
    /// The service targets of the dispatch file.
    pub sla: Vec<ServiceTarget>,
    /// Orders issued in the window that missed their target, most over first.
    pub sla_breaches: Vec<SlaBreach>,
    pub feeds: FeedFigures,
}

/// Takes in a log's events one at a time and makes the report at the end.
pub struct OpsBuilder {
    book: Book,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    events: u64,
    in_window: u64,
    after_until: u64,
    unreadable: u64,
    not_permitted: u64,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl OpsBuilder {
    pub fn new(config: DispatchConfig, since_ms: Option<i64>, until_ms: Option<i64>) -> Self {
        Self {
            book: Book::new(config),
            since_ms,
            until_ms,
            events: 0,
            in_window: 0,
            after_until: 0,
            unreadable: 0,
            not_permitted: 0,
            first_ms: None,
            last_ms: None,
        }
    }

    /// One event of the log, with when it was written and by whom.
    pub fn push(&mut self, at_ms: i64, operator: &str, role: Role, event: &Event) {
        self.events += 1;
        self.first_ms = Some(self.first_ms.map_or(at_ms, |t| t.min(at_ms)));
        self.last_ms = Some(self.last_ms.map_or(at_ms, |t| t.max(at_ms)));
        if self.until_ms.is_some_and(|u| at_ms > u) {
            self.after_until += 1;
            return;
        }
        if in_window(self.since_ms, self.until_ms, at_ms) {
            self.in_window += 1;
        }
        self.book.apply(event, at_ms, operator, role);
    }

    /// One stored event (`at`, operator, role's name, payload JSON) of a log that is
    /// `shared` (a hall's) or not, taken in exactly as the console takes it in.
    pub fn push_stored(
        &mut self,
        shared: bool,
        at_ms: i64,
        operator: &str,
        role: &str,
        payload: &str,
    ) {
        self.push_decoded(shared, at_ms, operator, role, Self::decode(payload));
    }

    /// A stored event's payload decoded (`None`: not one this build reads), the part
    /// of [`OpsBuilder::push_stored`] that needs no other event: a log's reader can do
    /// it on another thread.
    pub fn decode(payload: &str) -> Option<Event> {
        serde_json::from_str::<Event>(payload).ok()
    }

    /// As [`OpsBuilder::push_stored`], with the payload decoded by
    /// [`OpsBuilder::decode`].
    pub fn push_decoded(
        &mut self,
        shared: bool,
        at_ms: i64,
        operator: &str,
        role: &str,
        event: Option<Event>,
    ) {
        let Some(event) = event else {
            self.events += 1;
            self.unreadable += 1;
            return;
        };
        let role = Role::from_name(role);
        if !taken_in(shared, &event, role) {
            self.events += 1;
            self.not_permitted += 1;
            return;
        }
        self.push(at_ms, operator, role.unwrap_or(Role::System), &event);
    }

    /// The book as the events taken in so far made it.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// The book as the events taken in made it (the dispatch state at `until`).
    pub fn into_book(self) -> Book {
        self.book
    }

    /// The report, judged at `until` or, without one, at `now_ms`.
    pub fn finish(self, now_ms: i64) -> OpsReport {
        let at_ms = self.until_ms.unwrap_or(now_ms);
        let mut report = OpsReport::from_book(&self.book, self.since_ms, self.until_ms, at_ms);
        report.events = self.events;
        report.events_in_window = self.in_window;
        report.events_after_until = self.after_until;
        report.unreadable_events = self.unreadable;
        report.not_permitted = self.not_permitted;
        report.first_event = self.first_ms.map(rfc3339_from_unix_ms);
        report.last_event = self.last_ms.map(rfc3339_from_unix_ms);
        report
    }
}

/// Whether `at_ms` lies in `since`..=`until` (either open-ended).
fn in_window(since_ms: Option<i64>, until_ms: Option<i64>, at_ms: i64) -> bool {
    since_ms.is_none_or(|s| at_ms >= s) && until_ms.is_none_or(|u| at_ms <= u)
}

impl OpsReport {
    /// The figures of a book as it stands, for the orders issued and incidents
    /// reported in `since`..=`until` (either open-ended), judged at `at_ms`: what the
    /// console's window shows of its own book. The counts of events are left at
    /// zero (the book does not know them; [`OpsBuilder`] fills them in).
    pub fn from_book(
        book: &Book,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        at_ms: i64,
    ) -> OpsReport {
        let counted = |t: i64| in_window(since_ms, until_ms, t);
        let mut departments: BTreeMap<String, DepartmentFigures> = BTreeMap::new();
        let mut sign_for: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut done: HashMap<&str, Vec<i64>> = HashMap::new();
        let mut breaches = Vec::new();
        for o in book.orders.iter().filter(|o| counted(o.issued_ms)) {
            let kind = book.incident(&o.incident).map_or("", |i| i.kind.as_str());
            let life = OrderLife::of(o);
            let f = departments.entry(o.department.clone()).or_default();
            f.orders += 1;
            if let Some(t) = life.signed_for_ms {
                f.signed_for += 1;
                sign_for
                    .entry(o.department.as_str())
                    .or_default()
                    .push(t - o.issued_ms);
            }
            if let Some(t) = life.done_ms {
                f.done += 1;
                done.entry(o.department.as_str())
                    .or_default()
                    .push(t - o.issued_ms);
            }
            if let Some(on_time) = life.on_time(o.deadline_ms, at_ms) {
                f.due += 1;
                f.on_time += u64::from(on_time);
            }
            f.rejected += u64::from(life.rejected_ms.is_some());
            f.escalated += u64::from(life.escalated_ms.is_some());
            f.cancelled += u64::from(life.cancelled_ms.is_some());
            f.urged += u64::from(o.urges > 0);
            f.urges += u64::from(o.urges);
            f.open += u64::from(o.status.is_pending());
            if let Some(t) = book.config.target_for(&o.department, kind) {
                for (target, target_ms, reached_ms) in [
                    (Target::SignFor, t.sign_for_ms(), life.signed_for_ms),
                    (Target::Done, t.done_ms(), life.done_ms),
                ] {
                    let Some(target_ms) = target_ms else { continue };
                    let end_ms = reached_ms.or(life.ended_ms()).unwrap_or(at_ms);
                    let elapsed_ms = end_ms - o.issued_ms;
                    if elapsed_ms > target_ms {
                        f.sla_breaches += 1;
                        breaches.push(SlaBreach {
                            order: o.id.clone(),
                            incident: o.incident.clone(),
                            department: o.department.clone(),
                            kind: kind.to_string(),
                            target,
                            target_ms,
                            elapsed_ms,
                            over_ms: elapsed_ms - target_ms,
                            reached: reached_ms.is_some(),
                            status: o.status,
                        });
                    }
                }
            }
        }
        for (id, f) in &mut departments {
            f.name = book.config.department(id).map(|d| d.name.clone());
            f.sign_for_ms = Spread::of(sign_for.remove(id.as_str()).unwrap_or_default());
            f.done_ms = Spread::of(done.remove(id.as_str()).unwrap_or_default());
            f.on_time_pct =
                (f.due > 0).then(|| (f.on_time as f64 * 1000.0 / f.due as f64).round() / 10.0);
        }
        breaches.sort_by(|a, b| b.over_ms.cmp(&a.over_ms).then(a.order.cmp(&b.order)));

        type Times = (u64, u64, Vec<i64>, Vec<i64>);
        let mut by_kind: BTreeMap<(String, std::cmp::Reverse<Severity>), Times> = BTreeMap::new();
        let mut sources: BTreeMap<String, SourceFigures> = BTreeMap::new();
        for inc in book.incidents.iter().filter(|i| counted(i.reported_ms)) {
            let (count, open, first_order, close) = by_kind
                .entry((inc.kind.clone(), std::cmp::Reverse(inc.severity)))
                .or_default();
            *count += 1;
            *open += u64::from(inc.is_open());
            if let Some(o) = inc.orders.iter().map(|&i| book.orders[i].issued_ms).min() {
                first_order.push(o - inc.reported_ms);
            }
            if let Some(t) = inc.finished_ms {
                close.push(t - inc.reported_ms);
            }
            let s = sources.entry(inc.source.clone()).or_default();
            s.incidents += 1;
            s.withdrawn += u64::from(inc.withdrawn);
        }
        let incidents = by_kind
            .into_iter()
            .map(
                |((kind, severity), (count, open, first_order, close))| IncidentFigures {
                    kind,
                    severity: severity.0,
                    count,
                    open,
                    first_order_ms: Spread::of(first_order),
                    close_ms: Spread::of(close),
                },
            )
            .collect();

        let mut overdue: Vec<OverdueOrder> = book
            .orders
            .iter()
            .filter(|o| {
                o.status.is_pending()
                    && o.deadline_ms < at_ms
                    && book.incident(&o.incident).is_none_or(|i| i.is_open())
            })
            .map(|o| OverdueOrder {
                order: o.id.clone(),
                incident: o.incident.clone(),
                department: o.department.clone(),
                status: o.status,
                signed_for: o.status.is_signed_for(),
                deadline: rfc3339_from_unix_ms(o.deadline_ms),
                overdue_ms: at_ms - o.deadline_ms,
            })
            .collect();
        overdue.sort_by(|a, b| b.overdue_ms.cmp(&a.overdue_ms).then(a.order.cmp(&b.order)));

        OpsReport {
            log: None,
            since: since_ms.map(rfc3339_from_unix_ms),
            until: until_ms.map(rfc3339_from_unix_ms),
            at: rfc3339_from_unix_ms(at_ms),
            events: 0,
            events_in_window: 0,
            events_after_until: 0,
            unreadable_events: 0,
            skipped_events: book.skipped_events,
            not_permitted: 0,
            first_event: None,
            last_event: None,
            departments,
            incidents,
            overdue,
            sla: book.config.sla.clone(),
            sla_breaches: breaches,
            feeds: FeedFigures {
                health_recorded: false,
                note: FEED_HEALTH_NOTE,
                incidents_by_source: sources,
            },
        }
    }
}

/// When an order reached each step, from its steps in the book.
struct OrderLife {
    /// The first step that shows the department has it: a sign-for, or a start or
    /// completion recorded without one.
    signed_for_ms: Option<i64>,
    done_ms: Option<i64>,
    rejected_ms: Option<i64>,
    escalated_ms: Option<i64>,
    cancelled_ms: Option<i64>,
}

impl OrderLife {
    fn of(o: &Order) -> Self {
        let first = |wanted: &[Action]| {
            o.steps
                .iter()
                .find(|s| s.action.is_some_and(|a| wanted.contains(&a)))
                .map(|s| s.at_ms)
        };
        Self {
            signed_for_ms: first(&[
                Action::AcknowledgeOrder,
                Action::StartOrder,
                Action::CompleteOrder,
            ]),
            done_ms: first(&[Action::CompleteOrder]),
            rejected_ms: first(&[Action::RejectOrder]),
            escalated_ms: first(&[Action::EscalateOrder]),
            cancelled_ms: first(&[Action::CancelOrder]),
        }
    }

    /// When the order ended without being done: rejected, escalated or withdrawn.
    fn ended_ms(&self) -> Option<i64> {
        [self.rejected_ms, self.escalated_ms, self.cancelled_ms]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the order was on time, judged at `at_ms`: done by the deadline (yes);
    /// rejected or escalated, or past the deadline undone (no); still open before
    /// its deadline, or withdrawn before it (not known: `None`).
    fn on_time(&self, deadline_ms: i64, at_ms: i64) -> Option<bool> {
        if let Some(done) = self.done_ms {
            return Some(done <= deadline_ms);
        }
        if self.rejected_ms.is_some() || self.escalated_ms.is_some() {
            return Some(false);
        }
        let judged_at = self.cancelled_ms.unwrap_or(at_ms).min(at_ms);
        (judged_at > deadline_ms).then_some(false)
    }
}

impl OpsReport {
    /// The figures of the events `since`..=`until` (either open-ended) of a log's
    /// events in order, judged at `until` or, without one, at `now_ms`. Events before
    /// `since` are replayed (they make the state) but not counted; events after
    /// `until` are left out.
    pub fn from_events<'a>(
        events: impl IntoIterator<Item = &'a Foreign>,
        config: &DispatchConfig,
        since_ms: Option<i64>,
        until_ms: Option<i64>,
        now_ms: i64,
    ) -> Self {
        let mut builder = OpsBuilder::new(config.clone(), since_ms, until_ms);
        for e in events {
            builder.push(e.at_ms, &e.operator, e.role, &e.event);
        }
        builder.finish(now_ms)
    }
}

/// Why no report was made from a log.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The log does not verify: no figure is made from a log that is not the audit
    /// trail it claims to be.
    #[error(
        "the event log {log} does not verify{at}: {problems}; no figures are made from it (`zhongshu audit verify` says more)",
        at = .first_bad_event.map(|e| format!(" from event {e} on")).unwrap_or_default()
    )]
    Broken {
        log: String,
        first_bad_event: Option<i64>,
        problems: String,
    },
}

fn check(report: &crate::store::VerifyReport, log: String) -> Result<(), OpsError> {
    if report.chain_ok {
        return Ok(());
    }
    Err(OpsError::Broken {
        log,
        first_bad_event: report.first_bad_event,
        problems: report.problems.join("; "),
    })
}

/// A SQLite log replayed into a builder, read once: its chain, seals and witness are
/// checked as the events go by ([`EventLog::verify_with`]), and nothing comes back
/// unless all hold. With the log's description.
fn replay_event_log(
    log: &EventLog,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<(OpsBuilder, String), OpsError> {
    let mut builder = OpsBuilder::new(config.clone(), since_ms, until_ms);
    let verified = log.verify_prepared(
        |e| OpsBuilder::decode(&e.payload),
        |e, event| builder.push_decoded(false, e.at_ms, &e.operator, &e.role, event),
    )?;
    let describe = log.path().display().to_string();
    check(&verified, describe.clone())?;
    Ok((builder, describe))
}

/// Any event store (a hall's stream) replayed into a builder: its chain checked
/// first, then its events replayed as a console replays them.
fn replay_store(
    log: &dyn EventStore,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<(OpsBuilder, String), OpsError> {
    check(&log.verify()?, log.describe())?;
    let mut builder = OpsBuilder::new(config.clone(), since_ms, until_ms);
    let shared = log.shared();
    log.scan_replay(&mut |at_ms, operator, role, payload| {
        builder.push_stored(shared, at_ms, operator, role, payload);
    })?;
    Ok((builder, log.describe()))
}

/// The finished report of a replayed log, naming the log.
fn finish(builder: OpsBuilder, describe: String, now_ms: i64) -> OpsReport {
    let mut report = builder.finish(now_ms);
    report.log = Some(describe);
    report
}

/// The report of a SQLite log, read once, nothing reported unless its chain, seals
/// and witness hold. Open the log read-only ([`crate::store::SealOptions::read_only`]).
pub fn report_from_event_log(
    log: &EventLog,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<OpsReport, OpsError> {
    let (builder, describe) = replay_event_log(log, config, since_ms, until_ms)?;
    Ok(finish(builder, describe, now_ms))
}

/// [`report_from_event_log`] and the book as it stood at `until_ms`, in one reading
/// (the briefing's).
pub fn report_and_book_from_event_log(
    log: &EventLog,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<(OpsReport, Book), OpsError> {
    let (builder, describe) = replay_event_log(log, config, since_ms, until_ms)?;
    let book = builder.book().clone();
    Ok((finish(builder, describe, now_ms), book))
}

/// [`report_and_book_from_event_log`] for any event store (a hall's stream).
pub fn report_and_book_from_store(
    log: &dyn EventStore,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<(OpsReport, Book), OpsError> {
    let (builder, describe) = replay_store(log, config, since_ms, until_ms)?;
    let book = builder.book().clone();
    Ok((finish(builder, describe, now_ms), book))
}

/// The report of any event store (a hall's stream), as [`report_from_event_log`].
pub fn report_from_store(
    log: &dyn EventStore,
    config: &DispatchConfig,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    now_ms: i64,
) -> Result<OpsReport, OpsError> {
    let (builder, describe) = replay_store(log, config, since_ms, until_ms)?;
    Ok(finish(builder, describe, now_ms))
}

/// The book as it stood at `until_ms`, rebuilt from a SQLite log's events up to then,
/// its chain, seals and witness checked as they go by (refused when they fail).
pub fn book_from_event_log(
    log: &EventLog,
    config: &DispatchConfig,
    until_ms: i64,
) -> Result<Book, OpsError> {
    Ok(replay_event_log(log, config, None, Some(until_ms))?
        .0
        .into_book())
}

/// [`book_from_event_log`] for any event store (a hall's stream).
pub fn book_from_store(
    log: &dyn EventStore,
    config: &DispatchConfig,
    until_ms: i64,
) -> Result<Book, OpsError> {
    Ok(replay_store(log, config, None, Some(until_ms))?
        .0
        .into_book())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dispatch::book::{Actor, Command, NewIncident, NewOrder};
    use crate::dispatch::dispatcher::Dispatcher;
    use crate::dispatch::testing::temp_db;
    use crate::feeds::Domain;
    use crate::store::SealOptions;

    /// 2026-11-29T10:00:00Z.
    pub(crate) const T0: i64 = 1_795_946_400_000;
    pub(crate) const MIN: i64 = 60_000;

    pub(crate) fn config() -> DispatchConfig {
        let text = format!(
            "{}\n[[sla]]\ndepartment = \"fire\"\nsign_for_min = 5\ndone_min = 60\n\n[[sla]]\ndepartment = \"traffic_police\"\nsign_for_min = 5\n",
            super::super::config::DEFAULT_DISPATCH_TOML
        );
        DispatchConfig::parse(&text, "ops-test.toml").unwrap()
    }

    fn report(kind: &str, severity: Severity) -> Command {
        Command::ReportIncident(NewIncident {
            kind: kind.into(),
            title: format!("A {kind}"),
            domain: Domain::Safety,
            severity,
            lon: 24.94,
            lat: 60.17,
            source: "map".into(),
            key: None,
        })
    }

    fn orders(incident: &str, department: &str, n: usize, deadline_ms: i64) -> Command {
        Command::IssueOrders {
            incident: incident.into(),
            orders: (0..n)
                .map(|_| NewOrder {
                    department: department.into(),
                    instruction: format!("Go, {department}"),
                    deadline_ms,
                })
                .collect(),
        }
    }

    fn order(id: &str, action: Action) -> Command {
        Command::Order {
            id: id.into(),
            action,
            note: None,
        }
    }

    fn incident(id: &str, action: Action) -> Command {
        Command::Incident {
            id: id.into(),
            action,
            note: None,
        }
    }

    /// A scripted shift written through the real dispatcher to a real (sealed)
    /// SQLite log, the clock ticking every minute, each command at a known time.
    ///
    /// - INC-000001, building fire (severe), reported at T0; at +1 min five orders to
    ///   the fire brigade (ORD-000001..5, due at +61 min), signed for 1, 2, 3, 4 and
    ///   10 min after issue and done 20, 30, 40, 50 and 70 min after: the fifth is
    ///   late (urged by the clock at its deadline). Resolved at +75 min.
    /// - INC-000002, waterlogging (minor), reported at +2 min, closed at +12 min as a
    ///   false alarm, without orders.
    /// - INC-000003, traffic accident (moderate), reported at +5 min; at +7 min an
    ///   order to the traffic police (ORD-000006, due +17) that is urged by hand at
    ///   +10, never signed for, overdue at +17 and escalated at +22 to public
    ///   security (ORD-000007), which rejects it at +25. At +70 min an order to
    ///   drainage (ORD-000008, due +78): overdue from +78, still at +80.
    pub(crate) fn shift(name: &str) -> std::path::PathBuf {
        let db = temp_db("ops", name);
        let mut d = Dispatcher::open(&db, config()).unwrap();
        let li = Actor::new("li.wei", Role::Dispatcher, None);
        let duty = Actor::new("duty", Role::Operator, None);
        let fire = Actor::new("wang.fang", Role::DepartmentLiaison, Some("fire"));
        let police = Actor::new("zhao", Role::DepartmentLiaison, Some("public_security"));
        let mut script: Vec<(i64, Command, Actor)> = vec![
            (0, report("building_fire", Severity::Severe), li.clone()),
            (
                1,
                orders("INC-000001", "fire", 5, T0 + 61 * MIN),
                li.clone(),
            ),
            (2, report("waterlogging", Severity::Minor), duty.clone()),
            (
                5,
                report("traffic_accident", Severity::Moderate),
                li.clone(),
            ),
            (
                7,
                orders("INC-000003", "traffic_police", 1, T0 + 17 * MIN),
                li.clone(),
            ),
            (8, incident("INC-000001", Action::MarkOnScene), fire.clone()),
            (10, order("ORD-000006", Action::UrgeOrder), li.clone()),
            (
                12,
                incident("INC-000002", Action::CloseIncident),
                li.clone(),
            ),
            (25, order("ORD-000007", Action::RejectOrder), police.clone()),
            (
                70,
                orders("INC-000003", "drainage", 1, T0 + 78 * MIN),
                li.clone(),
            ),
            (
                75,
                incident("INC-000001", Action::ResolveIncident),
                li.clone(),
            ),
        ];
        for (n, (signed, finished)) in [(1, 20), (2, 30), (3, 40), (4, 50), (10, 70)]
            .into_iter()
            .enumerate()
        {
            let id = format!("ORD-{:06}", n + 1);
            script.push((
                1 + signed,
                order(&id, Action::AcknowledgeOrder),
                fire.clone(),
            ));
            script.push((
                1 + finished,
                order(&id, Action::CompleteOrder),
                fire.clone(),
            ));
        }
        // In time order; at the same minute, in the order written above.
        script.sort_by_key(|(minute, _, _)| *minute);
        let mut script = script.into_iter().peekable();
        for minute in 0..=80 {
            while let Some((_, command, actor)) = script.next_if(|(m, _, _)| *m == minute) {
                d.execute(&command, &actor, T0 + minute * MIN)
                    .unwrap_or_else(|e| panic!("at +{minute} min: {command:?}: {e}"));
            }
            d.tick(T0 + minute * MIN, &mut Vec::new()).unwrap();
        }
        assert!(script.next().is_none());
        db
    }

    /// The report of the log at `db` as `zhongshu ops-report` makes it: opened
    /// read-only, checked, replayed.
    pub(crate) fn ops(db: &std::path::Path, since: Option<i64>, until: Option<i64>) -> OpsReport {
        let mut seal = SealOptions::beside(db);
        seal.create_key = false;
        seal.read_only = true;
        let log = EventLog::open_with(db, &seal).unwrap();
        report_from_event_log(&log, &config(), since, until, T0 + 80 * MIN).unwrap()
    }

    fn spread(n: usize, p50_min: f64, p90_min: f64) -> Spread {
        Spread {
            n,
            p50: Some((p50_min * MIN as f64) as i64),
            p90: Some((p90_min * MIN as f64) as i64),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(Spread::of(vec![]), Spread::default());
        assert_eq!(
            Spread::of(vec![10]),
            Spread {
                n: 1,
                p50: Some(10),
                p90: Some(10)
            }
        );
        // ⌈0.5·4⌉ = 2nd, ⌈0.9·4⌉ = 4th; ⌈0.5·10⌉ = 5th, ⌈0.9·10⌉ = 9th.
        assert_eq!(Spread::of(vec![4, 1, 3, 2]).p50, Some(2));
        assert_eq!(Spread::of(vec![4, 1, 3, 2]).p90, Some(4));
        let ten: Vec<i64> = (1..=10).rev().collect();
        assert_eq!(
            (Spread::of(ten.clone()).p50, Spread::of(ten).p90),
            (Some(5), Some(9))
        );
    }

    #[test]
    fn a_scripted_shift_gives_exactly_the_expected_figures() {
        let db = shift("figures");
        let r = ops(&db, None, None);
        assert_eq!(r.at, "2026-11-29T11:20:00.000Z");
        assert_eq!(
            (r.unreadable_events, r.skipped_events, r.not_permitted),
            (0, 0, 0)
        );
        assert_eq!(r.events, r.events_in_window);

        let fire = &r.departments["fire"];
        assert_eq!(fire.name.as_deref(), Some("Fire and Rescue 消防救援支队"));
        assert_eq!((fire.orders, fire.signed_for, fire.done), (5, 5, 5));
        // Signed for after 1, 2, 3, 4, 10 min; done after 20, 30, 40, 50, 70 min.
        assert_eq!(fire.sign_for_ms, spread(5, 3.0, 10.0));
        assert_eq!(fire.done_ms, spread(5, 40.0, 70.0));
        // Four of five done by the deadline (60 min after issue).
        assert_eq!(
            (fire.on_time, fire.due, fire.on_time_pct),
            (4, 5, Some(80.0))
        );
        // The late one was urged by the clock at its deadline, never escalated.
        assert_eq!((fire.urged, fire.urges, fire.escalated), (1, 1, 0));
        assert_eq!((fire.rejected, fire.cancelled, fire.open), (0, 0, 0));
        assert_eq!(fire.sla_breaches, 2);

        let traffic = &r.departments["traffic_police"];
        assert_eq!(
            (traffic.orders, traffic.signed_for, traffic.done),
            (1, 0, 0)
        );
        // Urged by hand at +10 and by the clock at +17; escalated at +22.
        assert_eq!((traffic.urged, traffic.urges, traffic.escalated), (1, 2, 1));
        assert_eq!(
            (traffic.on_time, traffic.due, traffic.on_time_pct),
            (0, 1, Some(0.0))
        );
        assert_eq!(traffic.sign_for_ms, Spread::default());

        let police = &r.departments["public_security"];
        assert_eq!((police.orders, police.rejected, police.open), (1, 1, 0));
        assert_eq!(police.on_time_pct, Some(0.0));

        let drainage = &r.departments["drainage"];
        assert_eq!((drainage.orders, drainage.open, drainage.urges), (1, 1, 1));
        assert_eq!(r.departments.len(), 4);

        // Incidents by kind, then most severe first.
        let kinds: Vec<_> = r
            .incidents
            .iter()
            .map(|i| (i.kind.as_str(), i.severity, i.count, i.open))
            .collect();
        assert_eq!(
            kinds,
            [
                ("building_fire", Severity::Severe, 1, 0),
                ("traffic_accident", Severity::Moderate, 1, 1),
                ("waterlogging", Severity::Minor, 1, 0),
            ]
        );
        assert_eq!(r.incidents[0].first_order_ms, spread(1, 1.0, 1.0));
        assert_eq!(r.incidents[0].close_ms, spread(1, 75.0, 75.0));
        assert_eq!(r.incidents[1].first_order_ms, spread(1, 2.0, 2.0));
        assert_eq!(r.incidents[1].close_ms, Spread::default());
        assert_eq!(r.incidents[2].first_order_ms, Spread::default());
        assert_eq!(r.incidents[2].close_ms, spread(1, 10.0, 10.0));

        // Overdue at +80: drainage's order, 2 min past its deadline, marked by the
        // clock at +78 and not yet escalated.
        assert_eq!(
            r.overdue,
            [OverdueOrder {
                order: "ORD-000008".into(),
                incident: "INC-000003".into(),
                department: "drainage".into(),
                status: OrderStatus::Overdue,
                signed_for: false,
                deadline: "2026-11-29T11:18:00.000Z".into(),
                overdue_ms: 2 * MIN,
            }]
        );

        // Breaches, most over first: traffic police never signed for (the clock
        // stopped at the escalation, 15 min after issue: 10 over); fire's fifth
        // order done after 70 min (10 over) and signed for after 10 (5 over).
        let breaches: Vec<_> = r
            .sla_breaches
            .iter()
            .map(|b| {
                (
                    b.order.as_str(),
                    b.target,
                    b.elapsed_ms,
                    b.over_ms,
                    b.reached,
                )
            })
            .collect();
        assert_eq!(
            breaches,
            [
                ("ORD-000005", Target::Done, 70 * MIN, 10 * MIN, true),
                ("ORD-000006", Target::SignFor, 15 * MIN, 10 * MIN, false),
                ("ORD-000005", Target::SignFor, 10 * MIN, 5 * MIN, true),
            ]
        );
        assert_eq!(r.sla_breaches[1].status, OrderStatus::Escalated);
        assert_eq!(r.sla_breaches[0].kind, "building_fire");

        // Feed health is not in the log, and the report says so.
        assert!(!r.feeds.health_recorded);
        assert!(r.feeds.note.contains("not feed health"));
        assert_eq!(r.feeds.incidents_by_source["map"].incidents, 3);
    }

    #[test]
    fn the_window_leaves_out_what_is_outside_it() {
        let db = shift("window");
        // Until +30 min: the fire brigade had done one order (20 min after issue;
        // the next was done at +31), and drainage had none.
        let r = ops(&db, None, Some(T0 + 30 * MIN));
        assert_eq!(r.at, "2026-11-29T10:30:00.000Z");
        assert!(r.events_after_until > 0);
        let fire = &r.departments["fire"];
        assert_eq!((fire.orders, fire.signed_for, fire.done), (5, 5, 1));
        assert_eq!(fire.done_ms, spread(1, 20.0, 20.0));
        // Nothing due yet at +30: four open before their deadline.
        assert_eq!((fire.due, fire.on_time_pct, fire.open), (1, Some(100.0), 4));
        assert!(!r.departments.contains_key("drainage"));
        // The fire was not resolved by then; nothing was overdue (the traffic
        // police's order was escalated, public security's rejected).
        assert_eq!(r.incidents[0].close_ms, Spread::default());
        assert!(r.overdue.is_empty(), "{:?}", r.overdue);

        // Since +4 min: only what was issued and reported from then on.
        let r = ops(&db, Some(T0 + 4 * MIN), None);
        assert!(!r.departments.contains_key("fire"));
        assert_eq!(r.departments["traffic_police"].orders, 1);
        let kinds: Vec<_> = r.incidents.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["traffic_accident"]);
        // Events before the window made the state but are not counted in it.
        assert!(r.events_in_window < r.events);
        assert_eq!(r.sla_breaches.len(), 1);
        // The overdue order is overdue whenever it was issued.
        assert_eq!(r.overdue.len(), 1);
    }

    #[test]
    fn from_events_and_the_log_agree() {
        let db = temp_db("ops", "journal");
        let mut d = Dispatcher::open(&db, config()).unwrap();
        d.keep_journal();
        let li = Actor::new("li.wei", Role::Dispatcher, None);
        d.execute(&report("gas_leak", Severity::Extreme), &li, T0)
            .unwrap();
        d.execute(
            &orders("INC-000001", "central_district", 2, T0 + 10 * MIN),
            &li,
            T0 + MIN,
        )
        .unwrap();
        d.execute(
            &order("ORD-000001", Action::AcknowledgeOrder),
            &li,
            T0 + 3 * MIN,
        )
        .unwrap();
        let journal = d.take_journal();
        let pure = OpsReport::from_events(&journal, &config(), None, None, T0 + 20 * MIN);
        let mut read = ops(&db, None, Some(T0 + 20 * MIN));
        read.log = None;
        read.until = None;
        assert_eq!(pure, read);
        let district = &pure.departments["central_district"];
        assert_eq!(district.sign_for_ms, spread(1, 2.0, 2.0));
        // Past the deadline at +20: the unsigned one overdue, the signed one late.
        assert_eq!(pure.overdue.len(), 2);
        assert!(pure.overdue.iter().any(|o| o.signed_for));
        assert_eq!((district.due, district.on_time), (2, 0));
    }

    #[test]
    fn a_broken_chain_is_refused_naming_where() {
        let db = shift("broken");
        let raw = rusqlite::Connection::open(&db).unwrap();
        raw.execute(
            "UPDATE events SET operator = 'someone.else' WHERE seq = 2",
            [],
        )
        .unwrap();
        drop(raw);
        let mut seal = SealOptions::beside(&db);
        seal.create_key = false;
        seal.read_only = true;
        let log = EventLog::open_with(&db, &seal).unwrap();
        let err = report_from_event_log(&log, &config(), None, None, T0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("from event 2 on"), "{text}");
        assert!(text.contains("event 2 does not match"), "{text}");
        assert!(text.contains(&db.display().to_string()), "{text}");
    }
}
