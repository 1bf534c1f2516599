//! The dispatch service on a thread of its own, so a console's frame never waits on
//! the log: commands, alerts, deliveries, department reports and the clock are
//! written there (many events of a clock tick in one commit, one fsync), and the
//! frame only applies what was committed to its own copy of the book. Nothing is
//! shown before it is durable, and a tick with a thousand overdue orders, a slow
//! disk or a hall server far away never holds up a frame.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::alerts::AlertIn;
use super::book::{Actor, Book, Command, Event};
use super::dispatcher::{Foreign, OpenReport};
use super::service::{AlertTaken, DispatchService};

/// How long the writer waits for a request before it pumps anyway (deliveries,
/// department reports, the clock).
const PUMP_EVERY: Duration = Duration::from_millis(20);

/// How long dropping the worker waits for the writer to finish what was sent.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Most committed events the frame applies to its copy of the book in one call to
/// [`DeskWorker::poll`]; the rest wait for the next frame.
pub const APPLY_PER_POLL: usize = 500;

/// What the frame asks the writer to do.
enum Request {
    Execute {
        ticket: u64,
        command: Box<Command>,
        actor: Actor,
    },
    Alert(Box<AlertIn>),
}

/// What the writer tells the frame.
enum Update {
    Loaded {
        book: Box<Book>,
        opened: OpenReport,
        api_url: String,
    },
    Failed(String),
    /// Events applied to the writer's book (committed), in order.
    Applied(Vec<Foreign>),
    Done {
        ticket: u64,
        result: Result<Vec<Event>, String>,
    },
    /// What became of an alert handed to the writer (after its events).
    Alert {
        key: String,
        taken: Result<AlertTaken, String>,
    },
    Notices(VecDeque<String>),
    Alarm(String),
    /// A storage error while pumping (shown on the desk's status line).
    PumpError(String),
}

/// A command's outcome, once the writer has run it (its events are applied to
/// [`DeskWorker::book`] before this is returned).
#[derive(Debug)]
pub struct Done {
    pub ticket: u64,
    pub result: Result<Vec<Event>, String>,
}

/// What became of an alert handed to the writer ([`DeskWorker::take_alert`]), kept
/// for whoever asked with [`DeskWorker::track_alerts`].
#[derive(Clone, Debug, PartialEq)]
pub struct AlertDone {
    /// The alert's key.
    pub key: String,
    /// Raised, joined, withdrawn, not raised; an error when it could not be written.
    pub taken: Result<AlertTaken, String>,
}

/// The frame's side of the writer thread.
pub struct DeskWorker {
    requests: Option<Sender<Request>>,
    /// Behind a mutex only so the worker can be shared with the frame's systems
    /// (taken with `get_mut`, never waited on).
    updates: std::sync::Mutex<Receiver<Update>>,
    /// The book as committed, as far as applied; `None` while loading.
    book: Option<Book>,
    /// Committed events not yet applied (more than one poll's share), and the
    /// outcomes of commands, each after its events.
    backlog: VecDeque<Backlog>,
    pub opened: Option<OpenReport>,
    pub api_url: Option<String>,
    pub load_error: Option<String>,
    /// Recent things the dispatcher should know (refused reports, failed deliveries).
    pub notices: VecDeque<String>,
    /// What the writer found wrong with the log (a forged commit), if anything.
    pub alarm: Option<String>,
    /// The last storage error while pumping, taken by the caller.
    pub pump_error: Option<String>,
    /// Outcomes of alerts, kept only when tracked (see [`DeskWorker::track_alerts`]).
    alert_outcomes: Option<Vec<AlertDone>>,
    next_ticket: u64,
    /// Commands sent and not yet answered, oldest first.
    unanswered: VecDeque<u64>,
    thread: Option<JoinHandle<()>>,
}

impl DeskWorker {
    /// Starts the writer thread: it opens the service with `open` (replaying the
    /// log), then serves requests and pumps until the worker is dropped.
    pub fn start(open: impl FnOnce() -> Result<DispatchService, String> + Send + 'static) -> Self {
        let (requests, requests_rx) = channel();
        let (updates_tx, updates) = channel();
        let thread = std::thread::Builder::new()
            .name("dispatch-writer".into())
            .spawn(move || {
                let updates = updates_tx.clone();
                let run = std::panic::AssertUnwindSafe(|| writer(open, requests_rx, updates_tx));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    let _ = updates.send(Update::Failed(format!(
                        "the dispatch writer stopped: {why}"
                    )));
                }
            })
            .expect("start the dispatch writer thread");
        Self {
            requests: Some(requests),
            updates: std::sync::Mutex::new(updates),
            book: None,
            backlog: VecDeque::new(),
            opened: None,
            api_url: None,
            load_error: None,
            notices: VecDeque::new(),
            alarm: None,
            pump_error: None,
            alert_outcomes: None,
            next_ticket: 0,
            unanswered: VecDeque::new(),
            thread: Some(thread),
        }
    }

    /// The book as committed (what the desk shows); `None` while the log loads.
    pub fn book(&self) -> Option<&Book> {
        self.book.as_ref()
    }

    pub fn is_loading(&self) -> bool {
        self.book.is_none() && self.load_error.is_none()
    }

    /// Bumped by every applied event: views cache what they derive per version.
    pub fn version(&self) -> u64 {
        self.book.as_ref().map_or(0, |b| b.revision)
    }

    /// Commands sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.unanswered.len()
    }

    /// Sends a command to the writer; its outcome comes back from a later
    /// [`DeskWorker::poll`] with this ticket. Never waits.
    pub fn execute(&mut self, command: Command, actor: &Actor) -> Result<u64, String> {
        if let Some(e) = &self.load_error {
            return Err(format!("the dispatch log cannot be used: {e}"));
        }
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.send(Request::Execute {
            ticket,
            command: Box::new(command),
            actor: actor.clone(),
        })?;
        self.unanswered.push_back(ticket);
        Ok(ticket)
    }

    /// Hands an alert to the writer (an incident is raised once per alert).
    pub fn take_alert(&mut self, alert: AlertIn) -> Result<(), String> {
        self.send(Request::Alert(Box::new(alert)))
    }

    /// From now on, keep what becomes of each alert (after its events are applied to
    /// the book) until [`DeskWorker::take_alert_outcomes`]: for whoever accounts for
    /// every alert, such as a drill. Untracked, outcomes are not kept.
    pub fn track_alerts(&mut self) {
        self.alert_outcomes.get_or_insert_with(Vec::new);
    }

    /// The alert outcomes kept since the last call.
    pub fn take_alert_outcomes(&mut self) -> Vec<AlertDone> {
        self.alert_outcomes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn send(&mut self, request: Request) -> Result<(), String> {
        self.requests
            .as_ref()
            .ok_or_else(|| "the dispatch writer has stopped".to_string())?
            .send(request)
            .map_err(|_| "the dispatch writer has stopped".to_string())
    }

    /// Takes in what the writer sent, without waiting: applies up to
    /// [`APPLY_PER_POLL`] committed events to the book and returns the outcomes of
    /// commands whose events are all applied.
    pub fn poll(&mut self) -> Vec<Done> {
        let mut received = Vec::new();
        let mut disconnected = false;
        {
            let updates = match self.updates.get_mut() {
                Ok(u) => u,
                Err(poisoned) => poisoned.into_inner(),
            };
            loop {
                match updates.try_recv() {
                    Ok(u) => received.push(u),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
        }
        for update in received {
            match update {
                Update::Loaded {
                    book,
                    opened,
                    api_url,
                } => {
                    self.book = Some(*book);
                    self.opened = Some(opened);
                    self.api_url = Some(api_url);
                }
                Update::Failed(e) => self.stopped(e),
                Update::Applied(events) => {
                    self.backlog.extend(events.into_iter().map(Backlog::Event));
                }
                Update::Done { ticket, result } => {
                    self.backlog
                        .push_back(Backlog::Done(Done { ticket, result }));
                }
                Update::Alert { key, taken } => {
                    if self.alert_outcomes.is_some() {
                        self.backlog
                            .push_back(Backlog::Alert(AlertDone { key, taken }));
                    }
                }
                Update::Notices(n) => self.notices = n,
                Update::Alarm(a) => self.alarm = Some(a),
                Update::PumpError(e) => self.pump_error = Some(e),
            }
        }
        if disconnected && self.load_error.is_none() {
            self.stopped("the dispatch writer stopped".into());
        }
        let mut out = Vec::new();
        let mut applied = 0;
        while applied < APPLY_PER_POLL {
            match self.backlog.pop_front() {
                None => break,
                Some(Backlog::Done(d)) => {
                    self.unanswered.retain(|&t| t != d.ticket);
                    out.push(d);
                }
                Some(Backlog::Alert(a)) => {
                    if let Some(kept) = &mut self.alert_outcomes {
                        kept.push(a);
                    }
                }
                Some(Backlog::Event(f)) => {
                    if let Some(book) = &mut self.book {
                        book.apply(&f.event, f.at_ms, &f.operator, f.role);
                    }
                    applied += 1;
                }
            }
        }
        out
    }

    /// The writer cannot be used (the log did not open, or the writer stopped):
    /// said once, and every command still waiting is answered with it.
    fn stopped(&mut self, error: String) {
        for ticket in self.unanswered.drain(..) {
            self.backlog.push_back(Backlog::Done(Done {
                ticket,
                result: Err(format!("not written: {error}")),
            }));
        }
        self.load_error = Some(error);
    }

    /// Committed events the frame has not applied yet.
    pub fn backlog(&self) -> usize {
        self.backlog
            .iter()
            .filter(|b| matches!(b, Backlog::Event(_)))
            .count()
    }
}

/// What waits to be taken in by the frame, in the order the writer committed it.
enum Backlog {
    Event(Foreign),
    /// Answered once the events before it are applied.
    Done(Done),
    /// An alert's outcome, likewise.
    Alert(AlertDone),
}

impl Drop for DeskWorker {
    /// Stops the writer after what it is writing now (nothing half-written: every
    /// append is all-or-nothing), and waits for it.
    fn drop(&mut self) {
        self.requests = None;
        let Some(t) = self.thread.take() else { return };
        // Still replaying the log: nothing of this console's is being written, so
        // the app does not wait for the replay to finish.
        if self.book.is_none() {
            return;
        }
        // Otherwise what was sent is written first, for a few seconds at most (a
        // hall server that does not answer is not waited on for ever).
        let started = std::time::Instant::now();
        while !t.is_finished() && started.elapsed() < STOP_WITHIN {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

fn writer(
    open: impl FnOnce() -> Result<DispatchService, String>,
    requests: Receiver<Request>,
    updates: Sender<Update>,
) {
    let mut service = match open() {
        Ok(s) => s,
        Err(e) => {
            let _ = updates.send(Update::Failed(e));
            return;
        }
    };
    service.dispatcher.keep_journal();
    let _ = service.dispatcher.take_journal();
    let loaded = Update::Loaded {
        book: Box::new(service.dispatcher.book().clone()),
        opened: service.dispatcher.opened.clone(),
        api_url: service.api_url(),
    };
    if updates.send(loaded).is_err() {
        return;
    }
    let mut notices = service.notices.clone();
    let mut alarm: Option<String> = None;
    loop {
        let first = match requests.recv_timeout(PUMP_EVERY) {
            Ok(r) => Some(r),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let now = crate::clock::unix_ms_now();
        for request in first.into_iter().chain(requests.try_iter()) {
            match request {
                Request::Execute {
                    ticket,
                    command,
                    actor,
                } => {
                    let result = service
                        .execute(&command, &actor, now)
                        .map_err(|e| e.to_string());
                    send_applied(&mut service, &updates);
                    let _ = updates.send(Update::Done { ticket, result });
                }
                Request::Alert(alert) => {
                    // Not the operator's doing: a notice, not the status line.
                    let taken = service.take_alert(&alert, now).map_err(|e| e.to_string());
                    if let Err(e) = &taken {
                        service
                            .notices
                            .push_back(format!("alert {} not taken in: {e}", alert.key));
                        while service.notices.len() > 50 {
                            service.notices.pop_front();
                        }
                    }
                    send_applied(&mut service, &updates);
                    let _ = updates.send(Update::Alert {
                        key: alert.key,
                        taken,
                    });
                }
            }
        }
        if let Err(e) = service.pump(now) {
            let _ = updates.send(Update::PumpError(e.to_string()));
        }
        send_applied(&mut service, &updates);
        if service.notices != notices {
            notices = service.notices.clone();
            let _ = updates.send(Update::Notices(notices.clone()));
        }
        let now_alarm = service.dispatcher.alarm();
        if now_alarm.is_some() && now_alarm != alarm {
            alarm = now_alarm.clone();
            let _ = updates.send(Update::Alarm(now_alarm.unwrap_or_default()));
        }
    }
}

fn send_applied(service: &mut DispatchService, updates: &Sender<Update>) {
    let journal = service.dispatcher.take_journal();
    if !journal.is_empty() {
        let _ = updates.send(Update::Applied(journal));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::*;
    use crate::clock::unix_ms_now;
    use crate::dispatch::Role;
    use crate::dispatch::book::NewOrder;
    use crate::dispatch::config::DispatchConfig;
    use crate::dispatch::delivery::SimBehaviour;
    use crate::dispatch::dispatcher::Dispatcher;
    use crate::dispatch::service::ServiceOptions;

    fn temp_db(name: &str) -> std::path::PathBuf {
        crate::dispatch::testing::temp_db("worker", name)
    }

    fn options() -> ServiceOptions {
        ServiceOptions {
            api_addr: "127.0.0.1:0".into(),
            sim: SimBehaviour::silent(),
            ..Default::default()
        }
    }

    fn dispatcher_actor() -> Actor {
        Actor::new("li.wei", Role::Dispatcher, None)
    }

    use crate::dispatch::testing::fire;

    /// Polls like a frame would (every 5 ms) until `done` holds, at most 20 s.
    fn frames_until(w: &mut DeskWorker, mut done: impl FnMut(&mut DeskWorker, Vec<Done>) -> bool) {
        let started = Instant::now();
        loop {
            let out = w.poll();
            if done(w, out) {
                return;
            }
            assert!(started.elapsed().as_secs() < 20, "gave up waiting");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_frame_never_waits_for_the_log_and_shows_only_what_is_durable() {
        let db = temp_db("slow-disk");
        let (log, _) = crate::store::testing::FailingLog::open(&db);
        let hold = log.hold();
        let mut w = DeskWorker::start(move || {
            let d = Dispatcher::open_store(Box::new(log), DispatchConfig::default_config())
                .map_err(|e| e.to_string())?;
            DispatchService::start(d, options()).map_err(|e| e.to_string())
        });
        frames_until(&mut w, |w, _| w.book().is_some());
        // The disk stalls: the command is sent, and frames go on meanwhile.
        hold.store(true, Ordering::Relaxed);
        let ticket = w.execute(fire(), &dispatcher_actor()).unwrap();
        for _ in 0..20 {
            assert!(w.poll().is_empty());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            hold.load(Ordering::Relaxed),
            "every poll returned while the append was still waiting"
        );
        assert!(
            w.book().unwrap().incidents.is_empty(),
            "nothing is shown before it is durable"
        );
        assert_eq!(w.in_flight(), 1);
        hold.store(false, Ordering::Relaxed);
        let mut answer = None;
        frames_until(&mut w, |_, out| {
            answer = out.into_iter().next();
            answer.is_some()
        });
        let answer = answer.unwrap();
        assert_eq!(answer.ticket, ticket);
        let events = answer.result.unwrap();
        assert_eq!(events.len(), 1);
        // The answer comes with its events applied.
        assert_eq!(w.book().unwrap().incidents.len(), 1);
        assert_eq!(w.in_flight(), 0);
        // A refusal comes back as one too, and changes nothing.
        let leader = Actor::new("mayor", Role::Leader, None);
        w.execute(fire(), &leader).unwrap();
        let mut refused = None;
        frames_until(&mut w, |_, out| {
            refused = out.into_iter().next();
            refused.is_some()
        });
        assert!(refused.unwrap().result.is_err());
        assert_eq!(w.book().unwrap().incidents.len(), 1);
    }

    #[test]
    fn a_thousand_overdue_orders_reach_the_frame_in_shares_and_match_the_log() {
        let db = temp_db("thousand");
        let now = unix_ms_now();
        {
            // Orders issued ten minutes ago, due five minutes ago.
            let mut d = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
            let issued = now - 600_000;
            d.execute(&fire(), &dispatcher_actor(), issued).unwrap();
            let departments = ["water", "power", "fire", "ems"];
            for batch in (0..1000).collect::<Vec<usize>>().chunks(50) {
                d.execute(
                    &Command::IssueOrders {
                        incident: "INC-000001".into(),
                        orders: batch
                            .iter()
                            .map(|&i| NewOrder {
                                department: departments[i % 4].to_string(),
                                instruction: format!("Sandbags to street {i}"),
                                deadline_ms: now - 300_000,
                            })
                            .collect(),
                    },
                    &dispatcher_actor(),
                    issued,
                )
                .unwrap();
            }
        }
        let path = db.clone();
        let mut w = DeskWorker::start(move || {
            let d = Dispatcher::open(&path, DispatchConfig::default_config())
                .map_err(|e| e.to_string())?;
            DispatchService::start(d, options()).map_err(|e| e.to_string())
        });
        let mut largest_share = 0;
        let mut last = 0;
        frames_until(&mut w, |w, _| {
            let v = w.version();
            if last > 0 {
                largest_share = largest_share.max(v - last);
            }
            last = v;
            w.book().is_some_and(|b| {
                b.orders
                    .iter()
                    .all(|o| o.overdue_ms.is_some() && o.urges == 1 && o.delivered_ms.is_some())
            }) && w.backlog() == 0
        });
        // Then nothing more to write (the departments never answer).
        let mut quiet_since = Instant::now();
        let mut version = w.version();
        while quiet_since.elapsed() < Duration::from_millis(300) {
            w.poll();
            if w.version() != version {
                version = w.version();
                quiet_since = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // 2,000 events (a mark and an urge each) over several frames.
        assert!(largest_share as usize <= APPLY_PER_POLL, "{largest_share}");
        assert!(largest_share > 0);
        let shown = w.book().unwrap().clone();
        drop(w);
        let again = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
        assert_eq!(shown.orders, again.book().orders);
        assert_eq!(shown.incidents, again.book().incidents);
    }

    #[test]
    fn closing_while_the_log_still_loads_does_not_wait_for_the_replay() {
        let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = finished.clone();
        let w = DeskWorker::start(move || {
            std::thread::sleep(Duration::from_secs(3));
            flag.store(true, Ordering::Relaxed);
            Err("replayed".to_string())
        });
        drop(w);
        assert!(
            !finished.load(Ordering::Relaxed),
            "dropping the desk waited for the replay"
        );
    }

    #[test]
    fn a_writer_that_panics_says_so_and_answers_what_was_sent() {
        let mut w = DeskWorker::start(|| panic!("the disk controller fell over"));
        frames_until(&mut w, |w, _| !w.is_loading());
        let e = w.load_error.clone().unwrap();
        assert!(e.contains("the disk controller fell over"), "{e}");
        assert!(w.execute(fire(), &dispatcher_actor()).is_err());
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_log_that_cannot_open_is_said_and_commands_are_refused() {
        let mut w = DeskWorker::start(|| Err("no such hall".to_string()));
        frames_until(&mut w, |w, _| !w.is_loading());
        assert_eq!(w.load_error.as_deref(), Some("no such hall"));
        let e = w.execute(fire(), &dispatcher_actor()).unwrap_err();
        assert!(e.contains("no such hall"), "{e}");
    }
}
