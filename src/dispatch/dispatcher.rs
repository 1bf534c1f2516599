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

/// An event as this dispatcher took it in, with who wrote it: one another writer of
/// the hall appended, or (in the journal) any event applied to the book.
#[derive(Clone, Debug, PartialEq)]
pub struct Foreign {
    pub event: Event,
    pub at_ms: i64,
    pub operator: String,
    pub role: Role,
}

/// How often a command is checked again after others wrote first, at the least,
/// before the console gives up and says the hall is too busy; it goes on trying
/// for [`RACE_BUDGET`] in all.
const MAX_RACES: usize = 64;

/// How long a command goes on trying while others write first.
const RACE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a desk waits before its next try after losing `race` races in a row: a
/// random time up to 2^race ms, at most 16 ms. Short: it breaks ties between desks,
/// and a desk that waited long would find the others further ahead each time.
fn race_backoff(race: usize) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let most = (1u64 << race.min(4)).min(16);
    // Random enough to break a tie between desks: std's per-process random keys.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_usize(race);
    let micros = h.finish() % (most * 1000 + 1);
    std::time::Duration::from_micros(micros)
}

/// A command's tries while other consoles write first, for a single command and a
/// group alike: at least [`MAX_RACES`], for [`RACE_BUDGET`] in all, with a short
/// wait of random length from the third loss on (no desk starves).
struct Races {
    lost: usize,
    started: std::time::Instant,
}

impl Races {
    fn new() -> Races {
        Races {
            lost: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Another console wrote first: whether to try again (having waited).
    fn lost_one(&mut self) -> bool {
        self.lost += 1;
        if self.lost > MAX_RACES && self.started.elapsed() >= RACE_BUDGET {
            return false;
        }
        if self.lost >= 3 {
            std::thread::sleep(race_backoff(self.lost - 1));
        }
        true
    }

    /// The hall was too busy for this command.
    fn given_up(&self, log: String) -> DispatchError {
        StoreError::Unavailable {
            what: log,
            message: format!(
                "other consoles wrote first {} times in a row over {} s; try again",
                self.lost,
                self.started.elapsed().as_secs()
            ),
        }
        .into()
    }
}

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
pub(crate) fn taken_in(shared: bool, event: &Event, role: Option<Role>) -> bool {
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
    /// Every event applied to the book since the last [`Dispatcher::take_journal`],
    /// own and foreign, when kept: a view elsewhere (the console's frame) applies
    /// them to its own copy of the book and shows exactly this state.
    journal: Option<Vec<Foreign>>,
}

/// Most foreign events kept uncollected (a console that never collects them).
const MAX_FOREIGN: usize = 100_000;

/// Most events in one commit of a group (a clock tick with many overdue orders):
/// many events, one fsync.
pub const GROUP_MAX_EVENTS: usize = 512;
/// Most bytes of payload in one commit of a group: a hall's commit is one message,
/// well under the server's default payload limit (1 MiB).
pub const GROUP_MAX_BYTES: usize = 256 * 1024;

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
            journal: None,
        })
    }

    /// Keeps every event applied from now on for [`Dispatcher::take_journal`].
    pub fn keep_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The events applied since the last call, in order, with who wrote them.
    pub fn take_journal(&mut self) -> Vec<Foreign> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn journal_events(&mut self, events: &[Event], at_ms: i64, actor: &Actor) {
        let shared = self.log.shared();
        if let Some(journal) = &mut self.journal {
            journal.extend(
                events
                    .iter()
                    .filter(|e| taken_in(shared, e, Some(actor.role)))
                    .map(|e| Foreign {
                        event: e.clone(),
                        at_ms,
                        operator: actor.name.clone(),
                        role: actor.role,
                    }),
            );
        }
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
        let mut races = Races::new();
        loop {
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
                    self.journal_events(&events, now_ms, actor);
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
                    if !races.lost_one() {
                        return Err(races.given_up(self.log.describe()));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
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
            journal,
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
                    if let Some(journal) = journal {
                        journal.push(Foreign {
                            event: event.clone(),
                            at_ms,
                            operator: operator.to_string(),
                            role,
                        });
                    }
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
        let due = self.book.due(now_ms);
        self.execute_group(&due, &Actor::system(), now_ms, written)
    }

    /// Runs many commands by one actor with group commit: each is checked against
    /// the state the ones before it leave, and their events go to the log in one
    /// all-or-nothing append, one fsync, before any of them is applied; a commit
    /// closes once it holds [`GROUP_MAX_EVENTS`] events or [`GROUP_MAX_BYTES`]
    /// (so it may pass either by one command's events). Refused commands are skipped (the state
    /// moved on since they were chosen). A storage error stops the group; what was
    /// committed before it is applied and in `written`, and the rest is not.
    pub fn execute_group(
        &mut self,
        commands: &[Command],
        actor: &Actor,
        now_ms: i64,
        written: &mut Vec<Event>,
    ) -> Result<(), DispatchError> {
        if let [command] = commands {
            return match self.execute(command, actor, now_ms) {
                Ok(events) => {
                    written.extend(events);
                    Ok(())
                }
                Err(e) if e.is_refusal() => Ok(()),
                Err(e) => Err(e),
            };
        }
        let shared = self.log.shared();
        let mut next = 0;
        let mut races = Races::new();
        while next < commands.len() {
            // The commit's commands are planned on a copy, so a failed append
            // leaves the book as the log is.
            let mut scratch = self.book.clone();
            let mut events: Vec<Event> = Vec::new();
            let mut rows: Vec<(&str, String)> = Vec::new();
            let mut bytes = 0;
            let mut not_permitted = 0;
            let mut end = next;
            while end < commands.len() && rows.len() < GROUP_MAX_EVENTS && bytes < GROUP_MAX_BYTES {
                if let Ok(planned) = scratch.plan(&commands[end], actor, now_ms) {
                    for e in planned {
                        let json = serde_json::to_string(&e).expect("events serialize");
                        bytes += json.len();
                        rows.push((e.kind(), json));
                        if taken_in(shared, &e, Some(actor.role)) {
                            scratch.apply(&e, now_ms, &actor.name, actor.role);
                        } else {
                            not_permitted += 1;
                        }
                        events.push(e);
                    }
                }
                end += 1;
            }
            match self
                .log
                .append_all(now_ms, &actor.name, actor.role.as_str(), &rows)
            {
                Ok(()) => {
                    self.book = scratch;
                    if not_permitted > 0 {
                        self.opened.not_permitted += not_permitted;
                        let first = events
                            .iter()
                            .find(|e| !taken_in(shared, e, Some(actor.role)));
                        if let Some(e) = first {
                            self.opened.integrity_alarm.get_or_insert_with(|| {
                                not_taken_in_text(e, &actor.name, actor.role.as_str())
                            });
                        }
                    }
                    self.journal_events(&events, now_ms, actor);
                    written.extend(events);
                    next = end;
                    races = Races::new();
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another writer of the hall got there first: take its events
                    // in and plan this commit again on the new state.
                    self.follow(true)?;
                    if !races.lost_one() {
                        return Err(races.given_up(self.log.describe()));
                    }
                }
                Err(e) => return Err(e.into()),
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
        crate::dispatch::testing::temp_db("dispatcher", name)
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

    /// One incident with `n` orders, all due at `T0 + 60_000`.
    fn many_orders(x: &mut Dispatcher, n: usize) {
        let d = Actor::new("li.wei", Role::Dispatcher, None);
        x.execute(
            &Command::ReportIncident(NewIncident {
                kind: "flood".into(),
                title: "Flooded underpass".into(),
                domain: Domain::Urban,
                severity: Severity::Severe,
                lon: 24.94,
                lat: 60.17,
                source: "map".into(),
                key: None,
            }),
            &d,
            T0,
        )
        .unwrap();
        let departments = ["water", "power", "fire"];
        for batch in (0..n).collect::<Vec<_>>().chunks(50) {
            x.execute(
                &Command::IssueOrders {
                    incident: "INC-000001".into(),
                    orders: batch
                        .iter()
                        .map(|&i| NewOrder {
                            department: departments[i % 3].to_string(),
                            instruction: format!("Pump station {i}"),
                            deadline_ms: T0 + 60_000,
                        })
                        .collect(),
                },
                &d,
                T0,
            )
            .unwrap();
        }
    }

    #[test]
    fn a_clock_tick_writes_many_overdue_orders_in_a_few_durable_commits() {
        let path = temp_db("group");
        let (log, _) = crate::store::testing::FailingLog::open(&path);
        let appends = log.counter();
        let mut x =
            Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
        many_orders(&mut x, 600);
        let before = appends.load(std::sync::atomic::Ordering::Relaxed);
        let mut written = Vec::new();
        x.tick(T0 + 60_000, &mut written).unwrap();
        let commits = appends.load(std::sync::atomic::Ordering::Relaxed) - before;
        // 600 overdue marks with their urges: 1,200 events in a handful of
        // transactions (one fsync each), not 600.
        assert_eq!(written.len(), 1200);
        assert!(commits <= 4, "{commits} commits for one tick");
        assert!(
            x.book()
                .orders
                .iter()
                .all(|o| o.status == OrderStatus::Overdue && o.urges == 1)
        );
        let book = x.book().clone();
        drop(x);
        // Durable and chained exactly as if written one by one.
        let again = Dispatcher::open(&path, DispatchConfig::default_config()).unwrap();
        assert_eq!(again.book().orders, book.orders);
        assert_eq!(again.book().incidents, book.incidents);
        assert!(again.log().verify().unwrap().chain_ok);
    }

    #[test]
    fn a_store_error_mid_group_keeps_the_commits_before_it() {
        let path = temp_db("midgroup");
        let (log, fail_from) = crate::store::testing::FailingLog::open(&path);
        let appends = log.counter();
        let mut x =
            Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
        many_orders(&mut x, 600);
        // The tick's first commit is written, the second fails.
        let first = appends.load(std::sync::atomic::Ordering::Relaxed) + 1;
        fail_from.store(first + 1, std::sync::atomic::Ordering::Relaxed);
        let mut written = Vec::new();
        let err = x.tick(T0 + 60_000, &mut written).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert!(
            !written.is_empty() && written.len() < 1200,
            "{}",
            written.len()
        );
        // The book holds exactly what was committed: marks with their urges.
        let marked = x
            .book()
            .orders
            .iter()
            .filter(|o| o.status == OrderStatus::Overdue)
            .count();
        assert_eq!(marked * 2, written.len());
        assert!(
            x.book()
                .orders
                .iter()
                .all(|o| (o.status == OrderStatus::Overdue) == (o.urges == 1))
        );
        fail_from.store(usize::MAX, std::sync::atomic::Ordering::Relaxed);
        let mut rest = Vec::new();
        x.tick(T0 + 60_250, &mut rest).unwrap();
        assert_eq!(
            written.len() + rest.len(),
            1200,
            "nothing twice, nothing lost"
        );
        let book = x.book().clone();
        drop(x);
        let again = Dispatcher::open(&path, DispatchConfig::default_config()).unwrap();
        assert_eq!(again.book().orders, book.orders);
    }
}
