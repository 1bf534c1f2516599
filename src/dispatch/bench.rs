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
    let t = Instant::now();
    let mut decoded = 0u64;
    raw.scan(|e| {
        decoded += serde_json::from_str::<super::book::Event>(&e.payload).is_ok() as u64;
    })?;
    let decode_ms = t.elapsed().as_secs_f64() * 1000.0 - scan_ms;
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
