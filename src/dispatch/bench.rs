//! Dispatch benchmarks: durable order commits (`zhongshu bench orders`) and restart
//! from a large log (`zhongshu bench restart`). Both go through the same core path as
//! the console: [`Dispatcher::execute`] and [`Dispatcher::open`].

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::book::{Actor, Book, Command, NewIncident, NewOrder, Severity};
use super::config::DispatchConfig;
use super::dispatcher::Dispatcher;
use super::{Action, Role};
use crate::feeds::Domain;
use crate::store::EventLog;

use crate::stats::{SplitMix as Rng, percentile};

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A generated incident (cycling through the playbooks) with its playbook's orders.
fn generated(
    config: &DispatchConfig,
    rng: &mut Rng,
    n: usize,
    now_ms: i64,
) -> (NewIncident, Vec<NewOrder>) {
    let playbook = &config.playbooks[n % config.playbooks.len()];
    let incident = NewIncident {
        kind: playbook.kind.clone(),
        title: format!("{} #{n}", playbook.title),
        domain: config
            .department(&playbook.orders[0].department)
            .map_or(Domain::Urban, |d| d.domain),
        severity: Severity::ALL[rng.next() as usize % 4],
        lon: 24.93 + 0.03 * rng.unit(),
        lat: 60.16 + 0.02 * rng.unit(),
        source: "bench".into(),
        key: None,
    };
    (incident, NewOrder::from_playbook(playbook, now_ms))
}

fn now_ms() -> i64 {
    crate::clock::unix_ms_now()
}

/// Writes `count` incidents, each with its playbook's orders, one durable commit per
/// command, printing `committed <order-id>` (flushed) as each order is on disk.
/// Returns the JSON summary.
pub fn bench_orders(
    db: &Path,
    count: usize,
    out: &mut impl Write,
) -> anyhow::Result<serde_json::Value> {
    let open = Instant::now();
    let dispatcher = Dispatcher::open(db, DispatchConfig::default_config())?;
    let open_ms = open.elapsed().as_secs_f64() * 1000.0;
    bench_orders_on(
        dispatcher,
        open_ms,
        "SQLite WAL, synchronous=FULL: each commit is fsync'd before it returns",
        "bench",
        count,
        out,
    )
}

/// [`bench_orders`] on any store (the hall's stream: the path a console writes
/// through; several may run at once on one hall).
pub fn bench_orders_on(
    mut dispatcher: Dispatcher,
    open_ms: f64,
    durability: &str,
    operator: &str,
    count: usize,
    out: &mut impl Write,
) -> anyhow::Result<serde_json::Value> {
    let actor = Actor::new(operator, Role::Dispatcher, None);
    let config = dispatcher.book().config.clone();
    let mut rng = Rng(dispatcher.book().incidents.len() as u64 + 1);
    let mut latencies = Vec::with_capacity(count * 2);
    let mut orders = 0usize;
    let started = Instant::now();
    for n in 0..count {
        let now = now_ms();
        let (incident, new_orders) = generated(&config, &mut rng, n, now);
        let t = Instant::now();
        let events = dispatcher.execute(&Command::ReportIncident(incident), &actor, now)?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let id = match &events[0] {
            super::book::Event::IncidentReported { id, .. } => id.clone(),
            _ => unreachable!("a report makes an IncidentReported event"),
        };
        let t = Instant::now();
        let events = dispatcher.execute(
            &Command::IssueOrders {
                incident: id,
                orders: new_orders,
            },
            &actor,
            now,
        )?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        for e in &events {
            if let super::book::Event::OrderIssued { id, .. } = e {
                writeln!(out, "committed {id}")?;
                orders += 1;
            }
        }
        out.flush()?;
    }
    let total_s = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    Ok(serde_json::json!({
        "log": dispatcher.log().describe(),
        "incidents": count,
        "orders": orders,
        "commits": latencies.len(),
        "events_in_log": dispatcher.log().len(),
        "open_ms": round2(open_ms),
        "commit_ms": {
            "p50": round2(percentile(&latencies, 0.5)),
            "p99": round2(percentile(&latencies, 0.99)),
            "max": round2(latencies.last().copied().unwrap_or(0.0)),
            "mean": round2(mean),
        },
        "commits_per_s": round2(latencies.len() as f64 / total_s.max(1e-9)),
        "durability": durability,
    }))
}

/// Appends realistic incident and order traffic (reports, playbook orders, most
/// signed for, started and finished) to `log` until it holds `events` events, in
/// commits of `batch` events, continuing the numbering of `book` (the log replayed).
pub fn fill_log(
    log: &mut dyn crate::store::EventStore,
    mut book: Book,
    events: u64,
    batch_size: usize,
) -> anyhow::Result<()> {
    let mut rng = Rng(log.len() as u64 + 7);
    let base = now_ms() - 86_400_000;
    let mut n = book.incidents.len();
    let mut batch: Vec<(String, String)> = Vec::new();
    let mut written = log.len() as u64;
    while written < events {
        let now = base + n as i64 * 1000;
        traffic(&mut book, &mut rng, n, now, true, &mut |e| {
            batch.push((e.kind().to_string(), serde_json::to_string(e)?));
            Ok(())
        })?;
        n += 1;
        if batch.len() >= batch_size || written + batch.len() as u64 >= events {
            let take = ((events - written) as usize).min(batch.len());
            let rows: Vec<(&str, String)> = batch[..take]
                .iter()
                .map(|(k, p)| (k.as_str(), p.clone()))
                .collect();
            log.append_all(now, "bench", Role::Dispatcher.as_str(), &rows)?;
            written += take as u64;
            batch.clear();
        }
    }
    Ok(())
}

/// One incident of generated traffic: reported with its playbook's orders by a
/// dispatcher at `now`; with `finish`, the departments sign for, start and finish
/// each order. Every event is applied to `book` and passed to `each`.
fn traffic(
    book: &mut Book,
    rng: &mut Rng,
    n: usize,
    now: i64,
    finish: bool,
    each: &mut dyn FnMut(&super::book::Event) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dispatcher = Actor::new("bench", Role::Dispatcher, None);
    let (incident, orders) = generated(&book.config, rng, n, now);
    let id = format!("INC-{:06}", book.incidents.len() + 1);
    let commands = [
        Command::ReportIncident(incident),
        Command::IssueOrders {
            incident: id.clone(),
            orders,
        },
    ];
    for command in commands {
        for e in book.plan(&command, &dispatcher, now)? {
            book.apply(&e, now, &dispatcher.name, dispatcher.role);
            each(&e)?;
        }
    }
    if !finish {
        return Ok(());
    }
    // Departments sign for and finish most orders.
    let liaison_steps: Vec<(String, String)> = book
        .incident(&id)
        .map(|inc| {
            book.orders_of(inc)
                .map(|o| (o.id.clone(), o.department.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (order, department) in liaison_steps {
        let liaison = Actor::new("liaison", Role::DepartmentLiaison, Some(&department));
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
            if let Ok(evs) = book.plan(&command, &liaison, now) {
                for e in evs {
                    book.apply(&e, now, &liaison.name, liaison.role);
                    each(&e)?;
                }
            }
        }
    }
    Ok(())
}

/// A book of about `orders` orders of generated traffic, built in memory for
/// benchmarks of what views do with it: incidents a second apart over the day up to
/// `now_ms`, the first nine tenths finished, the rest still in play, and the
/// clock run at `now_ms` (orders past their deadline overdue and urged).
pub fn busy_book(config: DispatchConfig, orders: usize, now_ms: i64) -> anyhow::Result<Book> {
    let mut book = Book::new(config);
    let mut rng = Rng(11);
    let mut n = 0;
    let per_incident = book
        .config
        .playbooks
        .iter()
        .map(|p| p.orders.len())
        .sum::<usize>()
        .max(1) as f64
        / book.config.playbooks.len().max(1) as f64;
    let incidents = (orders as f64 / per_incident).ceil() as usize;
    let base = now_ms - incidents as i64 * 1000;
    while book.orders.len() < orders {
        let finish = n < incidents * 9 / 10;
        traffic(
            &mut book,
            &mut rng,
            n,
            base + n as i64 * 1000,
            finish,
            &mut |_| Ok(()),
        )?;
        n += 1;
    }
    let system = Actor::system();
    for command in book.due(now_ms) {
        if let Ok(events) = book.plan(&command, &system, now_ms) {
            for e in events {
                book.apply(&e, now_ms, &system.name, system.role);
            }
        }
    }
    Ok(book)
}

/// Writes incidents with their playbook's orders to `log` until it has `orders`
/// orders, all issued a day before `now_ms` and none signed for: every one is past
/// its deadline at `now_ms`, for the clock's first tick to mark and urge.
pub fn overdue_log(
    log: &mut dyn crate::store::EventStore,
    orders: usize,
    now_ms: i64,
) -> anyhow::Result<()> {
    let at = now_ms - 86_400_000;
    let mut book = Book::new(DispatchConfig::default_config());
    let mut rng = Rng(3);
    let mut n = 0;
    while book.orders.len() < orders {
        let mut rows: Vec<(String, String)> = Vec::new();
        traffic(&mut book, &mut rng, n, at, false, &mut |e| {
            rows.push((e.kind().to_string(), serde_json::to_string(e)?));
            Ok(())
        })?;
        let rows: Vec<(&str, String)> = rows.iter().map(|(k, p)| (k.as_str(), p.clone())).collect();
        log.append_all(at, "bench", Role::Dispatcher.as_str(), &rows)?;
        n += 1;
    }
    Ok(())
}

/// Fills `db` up to `events` events of realistic incident/order traffic (in large
/// transactions, to build the log quickly), then times rebuilding the console's state
/// from it and, separately, checking the hash chain.
pub fn bench_restart(db: &Path, events: u64) -> anyhow::Result<serde_json::Value> {
    let fill = Instant::now();
    let mut log = EventLog::open(db)?;
    let config = DispatchConfig::default_config();
    if (log.len() as u64) < events {
        // Replay what is there so the numbering continues.
        drop(log);
        let existing = Dispatcher::open(db, config.clone())?;
        let book: Book = existing.book().clone();
        drop(existing);
        log = EventLog::open(db)?;
        fill_log(&mut log, book, events, 20_000)?;
    }
    let fill_s = fill.elapsed().as_secs_f64();
    drop(log);
    let t = Instant::now();
    let dispatcher = Dispatcher::open(db, config)?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let report = dispatcher.log().verify()?;
    let verify_ms = t.elapsed().as_secs_f64() * 1000.0;
    // Where restart time goes: reading the rows alone, and decoding them too.
    let raw = EventLog::open_unsealed(db)?;
    let t = Instant::now();
    let mut rows = 0u64;
    raw.scan(|_| rows += 1)?;
    let scan_ms = t.elapsed().as_secs_f64() * 1000.0;
    // The decoding alone, timed around each (the difference of two whole scans
    // came out below zero on a short log).
    let mut decoded = 0u64;
    let mut decoding = std::time::Duration::ZERO;
    raw.scan(|e| {
        let t = Instant::now();
        decoded += serde_json::from_str::<super::book::Event>(&e.payload).is_ok() as u64;
        decoding += t.elapsed();
    })?;
    let decode_ms = decoding.as_secs_f64() * 1000.0;
    Ok(serde_json::json!({
        "db": db.display().to_string(),
        "events": dispatcher.opened.events,
        "incidents": dispatcher.opened.incidents,
        "orders": dispatcher.opened.orders,
        "unreadable_events": dispatcher.opened.unreadable_events,
        "fill_s": round2(fill_s),
        "restart_ms": round2(open_ms),
        "read_rows_ms": round2(scan_ms),
        "decode_ms": round2(decode_ms),
        "decoded": decoded,
        "verify_chain_ms": round2(verify_ms),
        "chain_ok": report.chain_ok,
    }))
}

/// One step of a scripted shift, in time order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ShiftStep {
    Report(usize),
    Issue(String, usize),
    Acknowledge(String, String),
    Reject(String, String),
    Start(String, String),
    Complete(String, String),
    Close(String),
}

/// What [`shift_log`] wrote.
#[derive(Debug, Default, serde::Serialize)]
pub struct ShiftSummary {
    pub incidents: usize,
    pub orders: usize,
    pub closed: usize,
    pub events: u64,
    /// Commands the dispatch core refused (none expected).
    pub refused: usize,
    pub first_refusal: Option<String>,
}

/// Writes a shift to `db` as a hub would have lived it: `incidents` raised evenly over
/// the 8 hours before `until_ms`, each given its playbook's orders a few minutes
/// later; departments sign for most within a quarter of an hour (some refuse), start
/// and finish them within an hour and a half; an incident whose orders are all done
/// is closed. Only what happens by `until_ms` is written, in time order, through the
/// dispatch core (so the log is what a real shift leaves).
pub fn shift_log(db: &Path, incidents: usize, until_ms: i64) -> anyhow::Result<ShiftSummary> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    const MIN: i64 = 60_000;
    let since_ms = until_ms - 8 * 60 * MIN;
    let mut dispatcher = Dispatcher::open(db, DispatchConfig::default_config())?;
    let config = dispatcher.book().config.clone();
    let actor = Actor::new("shift", Role::Dispatcher, None);
    let mut rng = Rng(42);
    let mut queue: BinaryHeap<Reverse<(i64, u64, ShiftStep)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |queue: &mut BinaryHeap<_>, at: i64, step: ShiftStep| {
        seq += 1;
        queue.push(Reverse((at, seq, step)));
    };
    let span = (until_ms - 10 * MIN - since_ms).max(1);
    for n in 0..incidents {
        let at = since_ms + span * n as i64 / incidents.max(1) as i64;
        push(&mut queue, at, ShiftStep::Report(n));
    }
    let mut summary = ShiftSummary::default();
    let mut left: HashMap<String, usize> = HashMap::new();
    let minutes =
        |rng: &mut Rng, lo: i64, hi: i64| (lo + (rng.next() % (hi - lo + 1) as u64) as i64) * MIN;
    while let Some(Reverse((at, _, step))) = queue.pop() {
        if at > until_ms {
            break;
        }
        // Closing: on scene and resolved first, where the incident is not yet.
        if let ShiftStep::Close(id) = &step {
            let mut last = Ok(Vec::new());
            for action in [
                Action::MarkOnScene,
                Action::ResolveIncident,
                Action::CloseIncident,
            ] {
                let status = dispatcher.book().incident(id).map(|i| i.status);
                if action != Action::CloseIncident
                    && status.is_some_and(|s| {
                        matches!(
                            (action, s),
                            (Action::MarkOnScene, super::IncidentStatus::OnScene)
                                | (_, super::IncidentStatus::Resolved)
                        )
                    })
                {
                    continue;
                }
                let command = Command::Incident {
                    id: id.clone(),
                    action,
                    note: None,
                };
                last = dispatcher.execute(&command, &actor, at);
                if last.is_err() {
                    break;
                }
            }
            match last {
                Ok(_) => summary.closed += 1,
                Err(e) => {
                    summary.refused += 1;
                    summary
                        .first_refusal
                        .get_or_insert_with(|| format!("{step:?}: {e}"));
                }
            }
            continue;
        }
        let command = match &step {
            ShiftStep::Report(n) => {
                let (incident, _) = generated(&config, &mut rng, *n, at);
                Command::ReportIncident(incident)
            }
            ShiftStep::Issue(id, n) => {
                let playbook = &config.playbooks[n % config.playbooks.len()];
                Command::IssueOrders {
                    incident: id.clone(),
                    orders: NewOrder::from_playbook(playbook, at),
                }
            }
            ShiftStep::Acknowledge(_, o)
            | ShiftStep::Start(_, o)
            | ShiftStep::Complete(_, o)
            | ShiftStep::Reject(_, o) => Command::Order {
                id: o.clone(),
                action: match step {
                    ShiftStep::Acknowledge(..) => Action::AcknowledgeOrder,
                    ShiftStep::Start(..) => Action::StartOrder,
                    ShiftStep::Complete(..) => Action::CompleteOrder,
                    _ => Action::RejectOrder,
                },
                note: matches!(step, ShiftStep::Reject(..)).then(|| "not ours".to_string()),
            },
            ShiftStep::Close(id) => Command::Incident {
                id: id.clone(),
                action: Action::CloseIncident,
                note: None,
            },
        };
        // Orders are signed for, refused and done by their department's liaison.
        let liaison = match &command {
            Command::Order { id, .. } => dispatcher
                .book()
                .orders
                .iter()
                .find(|o| &o.id == id)
                .map(|o| Actor::new("liaison", Role::DepartmentLiaison, Some(&o.department))),
            _ => None,
        };
        let events = match dispatcher.execute(&command, liaison.as_ref().unwrap_or(&actor), at) {
            Ok(events) => events,
            Err(e) => {
                summary.refused += 1;
                summary
                    .first_refusal
                    .get_or_insert_with(|| format!("{step:?}: {e}"));
                continue;
            }
        };
        match step {
            ShiftStep::Report(n) => {
                summary.incidents += 1;
                if let Some(super::book::Event::IncidentReported { id, .. }) = events.first() {
                    push(
                        &mut queue,
                        at + minutes(&mut rng, 1, 5),
                        ShiftStep::Issue(id.clone(), n),
                    );
                }
            }
            ShiftStep::Issue(incident, _) => {
                for e in &events {
                    if let super::book::Event::OrderIssued { id, .. } = e {
                        summary.orders += 1;
                        *left.entry(incident.clone()).or_default() += 1;
                        let next = if rng.next().is_multiple_of(20) {
                            ShiftStep::Reject(incident.clone(), id.clone())
                        } else {
                            ShiftStep::Acknowledge(incident.clone(), id.clone())
                        };
                        push(&mut queue, at + minutes(&mut rng, 1, 15), next);
                    }
                }
            }
            ShiftStep::Acknowledge(incident, o) => {
                push(
                    &mut queue,
                    at + minutes(&mut rng, 1, 5),
                    ShiftStep::Start(incident, o),
                );
            }
            ShiftStep::Start(incident, o) => {
                push(
                    &mut queue,
                    at + minutes(&mut rng, 10, 80),
                    ShiftStep::Complete(incident, o),
                );
            }
            ShiftStep::Complete(incident, _) | ShiftStep::Reject(incident, _) => {
                let n = left.entry(incident.clone()).or_default();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    push(
                        &mut queue,
                        at + minutes(&mut rng, 2, 10),
                        ShiftStep::Close(incident),
                    );
                }
            }
            ShiftStep::Close(_) => {}
        }
    }
    summary.events = dispatcher.log().len() as u64;
    Ok(summary)
}

#[cfg(test)]
mod shift_tests {
    use super::*;

    /// A scripted shift goes through the dispatch core without a refusal: incidents
    /// over the 8 hours, orders signed for, done or refused, incidents closed, and
    /// nothing after its end.
    #[test]
    fn a_scripted_shift_is_what_a_hub_would_have_written() {
        let db = super::super::testing::temp_db("bench", "shift");
        let until = 1_795_946_400_000 + 8 * 3_600_000;
        let summary = shift_log(&db, 60, until).unwrap();
        assert_eq!(summary.refused, 0, "{:?}", summary.first_refusal);
        assert_eq!(summary.incidents, 60);
        assert!(summary.orders >= 60, "{summary:?}");
        assert!(summary.closed > 20 && summary.closed < 60, "{summary:?}");
        let log = EventLog::open(&db).unwrap();
        let mut last = 0;
        log.verify_with(|e| {
            assert!(
                e.at_ms <= until && e.at_ms >= last,
                "out of order at {}",
                e.at_ms
            );
            last = e.at_ms;
        })
        .unwrap();
    }
}
