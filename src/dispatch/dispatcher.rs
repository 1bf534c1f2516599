//! The dispatch book made durable: every command is checked, written to the event
//! log (fsync'd) and only then applied, so nothing is shown as done that is not on
//! disk. At start the book is rebuilt by replaying the log.

use std::path::Path;
use std::time::Instant;

use super::Role;
use super::book::{Actor, Book, Command, CommandError, Event};
use super::config::DispatchConfig;
use crate::store::{EventLog, EventStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Refused(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Refused because someone else acted first (another console of the hall got
    /// there between this console's look and its write).
    #[error("{error} ({by} acted first)")]
    Overtaken { error: CommandError, by: String },
}

impl DispatchError {
    /// The command was refused (as it stands, or because someone acted first):
    /// nothing was written, and trying again will not change that.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::Overtaken { .. })
    }
}

/// An event another writer of the hall appended, as this dispatcher took it in.
#[derive(Clone, Debug, PartialEq)]
pub struct Foreign {
    pub event: Event,
    pub at_ms: i64,
    pub operator: String,
    pub role: Role,
}

/// How often a command is checked again after others wrote first, before the
/// console gives up and says the hall is too busy.
const MAX_RACES: usize = 64;

/// What opening the log found.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct OpenReport {
    pub events: u64,
    pub incidents: usize,
    pub orders: usize,
    /// Stored events that could not be read as dispatch events.
    pub unreadable_events: u64,
    pub replay_ms: f64,
    /// What the quick look at the log's witness found wrong (truncation, a rewritten
    /// head), if anything. The full check runs in the background (`audit verify`).
    pub integrity_alarm: Option<String>,
    /// Events of a shared log (a hall's) not taken in because their role may not
    /// write them, or is no role at all (forged past the consoles' checks).
    pub not_permitted: u64,
}

/// Whether an event of a shared log is taken in: its role exists and may write it.
/// Every reader of a hall (and each writer, for its own events) decides the same
/// way, so every console shows the same book.
fn taken_in(shared: bool, event: &Event, role: Option<Role>) -> bool {
    match role {
        None => false,
        Some(role) => !shared || event.permitted_for(role),
    }
}

fn not_taken_in_text(event: &Event, operator: &str, role: &str) -> String {
    format!(
        "an event not permitted for its role was not taken in: {} by {operator} ({role})",
        event.kind()
    )
}

pub struct Dispatcher {
    book: Book,
    log: Box<dyn EventStore>,
    pub opened: OpenReport,
    /// Events other writers appended, taken in but not yet collected by
    /// [`Dispatcher::take_foreign`].
    foreign: Vec<Foreign>,
}

/// Most foreign events kept uncollected (a console that never collects them).
const MAX_FOREIGN: usize = 100_000;

impl Dispatcher {
    /// Opens (or creates) the log at `path` and rebuilds the book from it. Reading and
    /// decoding run on a second thread while the book applies what is decoded.
    pub fn open(path: &Path, config: DispatchConfig) -> Result<Self, StoreError> {
        Self::open_store(Box::new(EventLog::open(path)?), config)
    }

    /// Rebuilds the book from any event store (SQLite, the hall's stream).
    pub fn open_store(
        log: Box<dyn EventStore>,
        config: DispatchConfig,
    ) -> Result<Self, StoreError> {
        /// Events handed from the reader to the book at a time.
        const CHUNK: usize = 4096;
        type Decoded = (i64, String, Role, Option<Event>);
        let started = Instant::now();
        let mut book = Book::new(config);
        let mut events = 0u64;
        let mut unreadable = 0u64;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Decoded>>(8);
        let shared = log.shared();
        let mut refused: Vec<String> = Vec::new();
        let refused_ref = &mut refused;
        let (log, scanned) = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let refused = refused_ref;
                let mut chunk: Vec<Decoded> = Vec::with_capacity(CHUNK);
                let scanned = log.scan_replay(&mut |at_ms, operator, role, payload| {
                    // An event under a role no writer uses, or one its role may not
                    // write on a shared log (forged past the consoles' checks), is
                    // not taken in, as when following.
                    let role_of = Role::from_name(role);
                    let event = serde_json::from_str::<Event>(payload).ok();
                    let event = match event {
                        Some(e) if !taken_in(shared, &e, role_of) => {
                            refused.push(not_taken_in_text(&e, operator, role));
                            None
                        }
                        other => other,
                    };
                    chunk.push((
                        at_ms,
                        operator.to_string(),
                        role_of.unwrap_or(Role::System),
                        event,
                    ));
                    if chunk.len() == CHUNK {
                        let _ = tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                    }
                });
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
                (log, scanned)
            });
            for chunk in rx {
                for (at_ms, operator, role, event) in chunk {
                    events += 1;
                    match event {
                        Some(event) => book.apply(&event, at_ms, &operator, role),
                        None => unreadable += 1,
                    }
                }
            }
            reader.join().expect("the log reader thread does not panic")
        });
        scanned?;
        let opened = OpenReport {
            events,
            incidents: book.incidents.len(),
            orders: book.orders.len(),
            unreadable_events: unreadable + book.skipped_events - refused.len() as u64,
            replay_ms: started.elapsed().as_secs_f64() * 1000.0,
            integrity_alarm: log.integrity_alarm().or_else(|| refused.first().cloned()),
            not_permitted: refused.len() as u64,
        };
        Ok(Self {
            book,
            log,
            opened,
            foreign: Vec::new(),
        })
    }

    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn log(&self) -> &dyn EventStore {
        &*self.log
    }

    /// What is wrong with the log as read so far, if anything: the store's alarm
    /// (a commit that does not link, a rewritten head) or events not taken in.
    pub fn alarm(&self) -> Option<String> {
        self.log
            .integrity_alarm()
            .or_else(|| self.opened.integrity_alarm.clone())
    }

    /// Checks `command`, makes its events durable, then applies them. On a refusal or
    /// a storage error nothing changes. When another writer of the hall wrote first,
    /// the dispatcher catches up and checks the command again against the new state:
    /// it is then written, or refused naming who acted first.
    pub fn execute(
        &mut self,
        command: &Command,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Vec<Event>, DispatchError> {
        let mut overtaken_by: Vec<String> = Vec::new();
        for _ in 0..MAX_RACES {
            let events = match self.book.plan(command, actor, now_ms) {
                Ok(events) => events,
                Err(error) if !overtaken_by.is_empty() => {
                    return Err(DispatchError::Overtaken {
                        error,
                        by: overtaken_by.join(", "),
                    });
                }
                Err(error) => return Err(self.name_who_acted(command, actor, error)),
            };
            let rows: Vec<(&str, String)> = events
                .iter()
                .map(|e| {
                    (
                        e.kind(),
                        serde_json::to_string(e).expect("events serialize"),
                    )
                })
                .collect();
            match self
                .log
                .append_all(now_ms, &actor.name, actor.role.as_str(), &rows)
            {
                Ok(()) => {
                    let shared = self.log.shared();
                    for e in &events {
                        // Taken in exactly as every other reader of the log will.
                        if taken_in(shared, e, Some(actor.role)) {
                            self.book.apply(e, now_ms, &actor.name, actor.role);
                        } else {
                            self.opened.not_permitted += 1;
                            self.opened.integrity_alarm.get_or_insert_with(|| {
                                not_taken_in_text(e, &actor.name, actor.role.as_str())
                            });
                        }
                    }
                    return Ok(events);
                }
                Err(StoreError::Conflict { .. }) => {
                    let before = self.foreign.len();
                    self.follow(true)?;
                    for f in &self.foreign[before.min(self.foreign.len())..] {
                        if !overtaken_by.contains(&f.operator) {
                            overtaken_by.push(f.operator.clone());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable {
            what: self.log.describe(),
            message: format!("other consoles wrote first {MAX_RACES} times in a row; try again"),
        }
        .into())
    }

    /// A refusal because the incident or order is no longer where the command expects
    /// it names who moved it there (when that was someone else).
    fn name_who_acted(
        &self,
        command: &Command,
        actor: &Actor,
        error: CommandError,
    ) -> DispatchError {
        if !matches!(error, CommandError::Transition(_)) {
            return error.into();
        }
        let who: Option<&str> = match command {
            Command::Order { id, .. } | Command::Report { id, .. } => self
                .book
                .order(id)
                .and_then(|o| o.steps.last())
                .map(|s| &*s.who),
            Command::Incident { id, .. } => self.book.incident(id).and_then(|inc| {
                inc.timeline
                    .iter()
                    .rev()
                    .find(|t| t.text.contains('→'))
                    .map(|t| &*t.who)
            }),
            _ => None,
        };
        match who {
            Some(who) if who != actor.name => DispatchError::Overtaken {
                error,
                by: who.to_string(),
            },
            _ => error.into(),
        }
    }

    /// Takes in what other writers of the hall appended and has already arrived,
    /// without waiting. Returns how many events were applied.
    pub fn sync(&mut self) -> Result<u64, StoreError> {
        self.follow(false)
    }

    /// Events other writers appended since the last call, oldest first (the hub
    /// sends the orders consoles issue; views redraw).
    pub fn take_foreign(&mut self) -> Vec<Foreign> {
        std::mem::take(&mut self.foreign)
    }

    fn follow(&mut self, wait: bool) -> Result<u64, StoreError> {
        let Self {
            book,
            log,
            foreign,
            opened,
        } = self;
        let shared = log.shared();
        log.follow(
            wait,
            &mut |at_ms, operator, role_name, payload| match serde_json::from_str::<Event>(payload)
            {
                Ok(event) => {
                    let role_of = Role::from_name(role_name);
                    if !taken_in(shared, &event, role_of) {
                        opened.not_permitted += 1;
                        opened
                            .integrity_alarm
                            .get_or_insert_with(|| not_taken_in_text(&event, operator, role_name));
                        return;
                    }
                    let role = role_of.unwrap_or(Role::System);
                    book.apply(&event, at_ms, operator, role);
                    if foreign.len() < MAX_FOREIGN {
                        foreign.push(Foreign {
                            event,
                            at_ms,
                            operator: operator.to_string(),
                            role,
                        });
                    }
                }
                Err(_) => opened.unreadable_events += 1,
            },
        )
    }

    /// Runs what the clock says is due (overdue with its urge, escalation) as
    /// Zhongshu itself, adding the events written to `written`. A storage error stops
    /// the tick; what was committed before it is in `written` all the same (so the
    /// caller still sends it), and what was not is due again at the next tick.
    pub fn tick(&mut self, now_ms: i64, written: &mut Vec<Event>) -> Result<(), DispatchError> {
        let system = Actor::system();
        for command in self.book.due(now_ms) {
            match self.execute(&command, &system, now_ms) {
                Ok(events) => written.extend(events),
                // The state moved on since `due` looked (e.g. signed for meanwhile).
                Err(e) if e.is_refusal() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::book::{NewIncident, NewOrder, Severity};
    use crate::dispatch::{Action, OrderStatus};
    use crate::feeds::Domain;

    const T0: i64 = 1_795_946_400_000;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zhongshu-dispatcher-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.db")
    }

    #[test]
    fn the_book_is_rebuilt_exactly_from_the_log() {
        let path = temp_db("rebuild");
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        let before = {
            let mut x = Dispatcher::open(&path, DispatchConfig::default_config()).unwrap();
            x.execute(
                &Command::ReportIncident(NewIncident {
                    kind: "gasLeak".into(),
                    title: "Gas smell".into(),
                    domain: Domain::Utilities,
                    severity: Severity::Extreme,
                    lon: 24.94,
                    lat: 60.17,
                    source: "map".into(),
                    key: None,
                }),
                &d,
                T0,
            )
            .unwrap();
            x.execute(
                &Command::IssueOrders {
                    incident: "INC-000001".into(),
                    orders: vec![NewOrder {
                        department: "water".into(),
                        instruction: "Isolate the main".into(),
                        deadline_ms: T0 + 60_000,
                    }],
                },
                &d,
                T0 + 1,
            )
            .unwrap();
            // A refused command writes nothing.
            let n = x.log().len();
            assert!(
                x.execute(
                    &Command::Order {
                        id: "ORD-000001".into(),
                        action: Action::CompleteOrder,
                        note: None,
                    },
                    &Actor::new("mayor", Role::Leader, None),
                    T0 + 2,
                )
                .is_err()
            );
            assert_eq!(x.log().len(), n);
            let mut events = Vec::new();
            x.tick(T0 + 60_000, &mut events).unwrap();
            assert_eq!(events.len(), 2, "overdue and urged");
            x.book().clone()
        };
        let again = Dispatcher::open(&path, DispatchConfig::default_config()).unwrap();
        assert_eq!(again.opened.events, 6);
        assert_eq!(again.opened.unreadable_events, 0);
        assert_eq!(again.book().incidents, before.incidents);
        assert_eq!(again.book().orders, before.orders);
        assert_eq!(again.book().orders[0].status, OrderStatus::Overdue);
        assert!(again.log().verify().unwrap().chain_ok);
        // Numbering continues after a restart.
        let mut again = again;
        again
            .execute(
                &Command::ReportIncident(NewIncident {
                    kind: "roadDamage".into(),
                    title: "Pothole".into(),
                    domain: Domain::Urban,
                    severity: Severity::Minor,
                    lon: 24.95,
                    lat: 60.16,
                    source: "map".into(),
                    key: None,
                }),
                &d,
                T0 + 70_000,
            )
            .unwrap();
        assert_eq!(again.book().incidents[1].id, "INC-000002");
    }

    #[test]
    fn a_store_error_mid_tick_keeps_what_was_committed_and_retries_the_rest() {
        let path = temp_db("midtick");
        let (log, fail_from) = crate::store::testing::FailingLog::open(&path);
        let mut x =
            Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        x.execute(
            &Command::ReportIncident(NewIncident {
                kind: "gasLeak".into(),
                title: "Gas smell".into(),
                domain: Domain::Utilities,
                severity: Severity::Extreme,
                lon: 24.94,
                lat: 60.17,
                source: "map".into(),
                key: None,
            }),
            &d,
            T0,
        )
        .unwrap();
        x.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: ["water", "power", "fire"]
                    .iter()
                    .map(|dep| NewOrder {
                        department: dep.to_string(),
                        instruction: "Go".into(),
                        deadline_ms: T0 + 60_000,
                    })
                    .collect(),
            },
            &d,
            T0,
        )
        .unwrap();
        // The disk fills after the first order's overdue mark is written.
        fail_from.store(4, std::sync::atomic::Ordering::Relaxed);
        // (appends so far: the report and the orders; the 3rd append is the first
        // overdue mark, the 4th fails.)
        let mut written = Vec::new();
        let err = x.tick(T0 + 60_000, &mut written).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        // What was committed comes back to be sent: the mark and its urge, together.
        assert_eq!(written.len(), 2, "{written:?}");
        let urged: Vec<_> = x.book().orders.iter().map(|o| o.urges).collect();
        assert_eq!(
            urged,
            vec![1, 0, 0],
            "marked and urged together or not at all"
        );
        // The disk is back: the next tick does the rest, nothing twice.
        fail_from.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
        let mut written = Vec::new();
        x.tick(T0 + 60_250, &mut written).unwrap();
        assert_eq!(written.len(), 4);
        assert!(
            x.book()
                .orders
                .iter()
                .all(|o| o.urges == 1 && o.status == OrderStatus::Overdue)
        );
    }
}
