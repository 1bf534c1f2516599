//! The dispatch book as it stood at any past instant, for the timeline: read from the
//! log (the SQLite file or the hall's stream) on a thread of its own, its chain checked
//! each time it is read, and replayed up to the instant exactly as `state-at` and
//! `ops-report` replay it. Playing forwards only takes in the events after the last
//! instant; going back replays from the start. Nothing is ever written.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::book::Book;
use super::config::DispatchConfig;
use super::ops::OpsBuilder;
use crate::store::EventStore;

/// Opens the log read-only, on the reading thread.
pub type OpenLog = Arc<dyn Fn() -> Result<Box<dyn EventStore>, String> + Send + Sync>;

/// The log is read again when an instant after its last reading is asked for, at most
/// this often.
const REREAD_AFTER: Duration = Duration::from_secs(2);

/// The book at an instant.
#[derive(Clone, Debug)]
pub struct PastBook {
    pub at_ms: i64,
    pub book: Book,
    /// Events of the log taken in up to the instant.
    pub events: u64,
    /// Events the log held when it was read, its chain checked.
    pub log_events: u64,
}

/// Asks for the book at instants and takes the answers, never waiting.
pub struct PastBooks {
    tx: Option<Sender<i64>>,
    /// In a mutex only so the reader is `Sync` (a resource's part).
    rx: std::sync::Mutex<Receiver<Result<PastBook, String>>>,
    asked: Option<i64>,
    /// The last book answered.
    pub shown: Option<PastBook>,
    /// Why the log could not be read (a broken chain, the server out of reach).
    pub trouble: Option<String>,
    thread: Option<JoinHandle<()>>,
}

impl PastBooks {
    /// A reader of the log `open` opens, replaying with `config`.
    pub fn start(open: OpenLog, config: DispatchConfig) -> std::io::Result<Self> {
        let (tx, requests) = channel();
        let (answers, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("dispatch-past".into())
            .spawn(move || read(open, config, requests, answers))?;
        Ok(Self {
            tx: Some(tx),
            rx: std::sync::Mutex::new(rx),
            asked: None,
            shown: None,
            trouble: None,
            thread: Some(thread),
        })
    }

    /// Asks for the book at `at_ms` (nothing when that is what was asked last).
    pub fn ask(&mut self, at_ms: i64) {
        if self.asked == Some(at_ms) {
            return;
        }
        self.asked = Some(at_ms);
        if let Some(tx) = &self.tx
            && tx.send(at_ms).is_err()
        {
            self.trouble = Some("the reader of the dispatch log stopped".into());
        }
    }

    /// Takes the answers that arrived; true when the book shown changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        let rx = self
            .rx
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            match rx.try_recv() {
                Ok(Ok(past)) => {
                    self.shown = Some(past);
                    self.trouble = None;
                    changed = true;
                }
                Ok(Err(e)) => {
                    self.trouble = Some(e);
                    changed = true;
                }
                Err(TryRecvError::Empty) => return changed,
                Err(TryRecvError::Disconnected) => {
                    if self.trouble.is_none() {
                        self.trouble = Some("the reader of the dispatch log stopped".into());
                        changed = true;
                    }
                    return changed;
                }
            }
        }
    }

    /// The instant asked for last.
    pub fn asked(&self) -> Option<i64> {
        self.asked
    }

    /// The book shown is not yet the one asked for.
    pub fn reading(&self) -> bool {
        self.trouble.is_none() && self.asked != self.shown.as_ref().map(|p| p.at_ms)
    }
}

impl Drop for PastBooks {
    fn drop(&mut self) {
        self.tx.take();
        // The thread ends with its current reading; it is not waited for.
        self.thread.take();
    }
}

/// One stored event: when, by whom (name, role), what (payload JSON).
struct Stored {
    at_ms: i64,
    operator: String,
    role: String,
    payload: String,
}

/// The log as last read, with its chain checked.
struct Read {
    events: Vec<Stored>,
    /// Every event's time is at or after the one before (a hall's writers may append
    /// a commit stamped a moment before one already written).
    in_time_order: bool,
    shared: bool,
    at: Instant,
    at_ms: i64,
}

/// The book replayed up to an instant, and how far into the events.
struct Built {
    builder: OpsBuilder,
    next: usize,
    at_ms: i64,
}

fn read_log(open: &OpenLog) -> Result<Read, String> {
    let started_ms = crate::clock::unix_ms_now();
    let log = open()?;
    let report = log
        .verify()
        .map_err(|e| format!("{}: {e}", log.describe()))?;
    if !report.chain_ok {
        return Err(format!(
            "{}: its chain does not hold, so nothing is shown from it: {}",
            log.describe(),
            report.problems.join("; ")
        ));
    }
    let mut events = Vec::new();
    log.scan_replay(&mut |at_ms, operator, role, payload| {
        events.push(Stored {
            at_ms,
            operator: operator.to_string(),
            role: role.to_string(),
            payload: payload.to_string(),
        })
    })
    .map_err(|e| format!("{}: {e}", log.describe()))?;
    Ok(Read {
        in_time_order: events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        events,
        shared: log.shared(),
        at: Instant::now(),
        at_ms: started_ms,
    })
}

fn read(
    open: OpenLog,
    config: DispatchConfig,
    requests: Receiver<i64>,
    answers: Sender<Result<PastBook, String>>,
) {
    let mut log: Option<Read> = None;
    let mut built: Option<Built> = None;
    while let Ok(mut at_ms) = requests.recv() {
        // Only the newest instant asked for matters.
        while let Ok(newer) = requests.try_recv() {
            at_ms = newer;
        }
        let stale = log
            .as_ref()
            .is_none_or(|l| at_ms > l.at_ms && l.at.elapsed() >= REREAD_AFTER);
        if stale {
            match read_log(&open) {
                Ok(read) => {
                    log = Some(read);
                    built = None;
                }
                Err(e) => {
                    if answers.send(Err(e)).is_err() {
                        return;
                    }
                    // A log that reads again later is taken then.
                    log = None;
                    continue;
                }
            }
        }
        let Some(read) = &log else { continue };
        // Back in time, or a log not in time order (every event up to the instant
        // is taken, in the log's order, as state-at takes them): from the start.
        if !read.in_time_order || built.as_ref().is_some_and(|b| b.at_ms > at_ms) {
            built = None;
        }
        let b = built.get_or_insert_with(|| Built {
            builder: OpsBuilder::new(config.clone(), None, None),
            next: 0,
            at_ms: i64::MIN,
        });
        let mut taken = b.next as u64;
        if read.in_time_order {
            while let Some(e) = read.events.get(b.next)
                && e.at_ms <= at_ms
            {
                b.builder
                    .push_stored(read.shared, e.at_ms, &e.operator, &e.role, &e.payload);
                b.next += 1;
            }
            taken = b.next as u64;
        } else {
            for e in read.events.iter().filter(|e| e.at_ms <= at_ms) {
                b.builder
                    .push_stored(read.shared, e.at_ms, &e.operator, &e.role, &e.payload);
                taken += 1;
            }
        }
        b.at_ms = at_ms;
        let past = PastBook {
            at_ms,
            book: b.builder.book().clone(),
            events: taken,
            log_events: read.events.len() as u64,
        };
        if answers.send(Ok(past)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::ops::tests::{MIN, T0, config, shift};
    use crate::store::{EventLog, SealOptions};

    fn opener(db: &std::path::Path) -> OpenLog {
        let db = db.to_path_buf();
        Arc::new(move || {
            let mut seal = SealOptions::beside(&db);
            seal.create_key = false;
            seal.read_only = true;
            EventLog::open_with(&db, &seal)
                .map(|l| Box::new(l) as Box<dyn EventStore>)
                .map_err(|e| e.to_string())
        })
    }

    fn wait(past: &mut PastBooks) {
        let started = Instant::now();
        while past.reading() {
            assert!(started.elapsed() < Duration::from_secs(20), "no answer");
            past.poll();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn shape(book: &Book) -> String {
        format!("{:?}\n{:?}", book.incidents, book.orders)
    }

    /// The book at any instant, asked in random order (forwards, back, the same
    /// instant twice), equals the book rebuilt from the events up to it, as
    /// `state-at` rebuilds it.
    #[test]
    fn the_book_at_any_instant_is_the_log_replayed_up_to_it() {
        let db = shift("past-any-instant");
        let mut seal = SealOptions::beside(&db);
        seal.create_key = false;
        seal.read_only = true;
        let log = EventLog::open_with(&db, &seal).unwrap();
        let mut past = PastBooks::start(opener(&db), config()).unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut seen_orders = 0;
        for step in 0..60 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = match step {
                0 => T0 - MIN,
                1 => T0 + 80 * MIN,
                _ => T0 - MIN + (rng % (83 * MIN as u64)) as i64,
            };
            past.ask(at);
            wait(&mut past);
            assert!(past.trouble.is_none(), "{:?}", past.trouble);
            let got = past.shown.as_ref().unwrap();
            assert_eq!(got.at_ms, at);
            let want = crate::dispatch::ops::book_from_event_log(&log, &config(), at).unwrap();
            assert_eq!(shape(&got.book), shape(&want), "at +{} ms", at - T0);
            seen_orders = seen_orders.max(got.book.orders.len());
        }
        assert_eq!(seen_orders, 8);
    }

    /// A hall's log can hold a commit stamped a moment before one written ahead of
    /// it: the book at an instant still takes every event up to it, as state-at does.
    #[test]
    fn a_log_out_of_time_order_is_replayed_as_state_at_replays_it() {
        use crate::dispatch::book::{Command, NewOrder};
        let db = crate::dispatch::testing::temp_db("past", "out-of-order");
        {
            let mut d = crate::dispatch::dispatcher::Dispatcher::open(&db, config()).unwrap();
            let li = crate::dispatch::book::Actor::new(
                "li.wei",
                crate::dispatch::Role::Dispatcher,
                None,
            );
            d.execute(&crate::dispatch::testing::fire(), &li, T0 + 10 * MIN)
                .unwrap();
            d.execute(&crate::dispatch::testing::fire(), &li, T0 + 5 * MIN)
                .unwrap();
            d.execute(
                &Command::IssueOrders {
                    incident: "INC-000002".into(),
                    orders: vec![NewOrder {
                        department: "fire".into(),
                        instruction: "Go".into(),
                        deadline_ms: T0 + 90 * MIN,
                    }],
                },
                &li,
                T0 + 8 * MIN,
            )
            .unwrap();
        }
        let mut seal = SealOptions::beside(&db);
        seal.create_key = false;
        seal.read_only = true;
        let log = EventLog::open_with(&db, &seal).unwrap();
        let mut past = PastBooks::start(opener(&db), config()).unwrap();
        for minute in [4, 6, 9, 11, 7, 20] {
            let at = T0 + minute * MIN;
            past.ask(at);
            wait(&mut past);
            let got = past.shown.as_ref().unwrap();
            let want = crate::dispatch::ops::book_from_event_log(&log, &config(), at).unwrap();
            assert_eq!(shape(&got.book), shape(&want), "at +{minute} min");
        }
        past.ask(T0 + 6 * MIN);
        wait(&mut past);
        let six = &past.shown.as_ref().unwrap().book;
        assert_eq!(six.incidents.len(), 1, "the one reported at +5 min");
        assert_eq!(six.incidents[0].id, "INC-000002");
    }

    /// A log whose chain was tampered with shows no past: the reader says why.
    #[test]
    fn a_broken_chain_shows_no_past() {
        let db = shift("past-broken");
        {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.execute(
                "UPDATE events SET operator = 'someone.else' WHERE seq = 2",
                [],
            )
            .unwrap();
        }
        let mut past = PastBooks::start(opener(&db), config()).unwrap();
        past.ask(T0 + 30 * MIN);
        let started = Instant::now();
        while past.trouble.is_none() {
            assert!(started.elapsed() < Duration::from_secs(20), "no answer");
            past.poll();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(past.shown.is_none());
        let trouble = past.trouble.clone().unwrap();
        assert!(trouble.contains("chain"), "{trouble}");
    }
}
