//! The dispatch desk in the console: sign-in, the durable dispatch service (loaded in
//! the background so a large log never holds up the first frame), alerts from the
//! live feeds raising incidents, unit recommendations re-ranked as traffic changes,
//! and the incidents and routes drawn on the map. Business rules live in
//! `crate::dispatch`; this plugin forwards commands and draws state.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};

use bevy::prelude::*;

use super::camera::{CameraRig, MapPin, MapPins, PinPicked};
use super::desk_ui::{DeskCommand, DeskState, RecommendationView};
use super::live::{Live, LiveChangedSlots};
use super::scene::{FlatMaterial, bevy_mesh_with};
use super::{AppSystems, City};
use crate::dispatch::book::{Actor, Book, Incident, Severity};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::past::{OpenLog, PastBooks};
use crate::dispatch::recommend::{Recommendation, Router, Unit, UnitTracker};
use crate::dispatch::service::{DispatchService, ServiceOptions};
use crate::dispatch::users::Users;
use crate::dispatch::worker::DeskWorker;
use crate::map::graph::RoadGraph;
use crate::map::mesh::{self, MeshData};
use crate::state::sweep::Budget;

/// How the desk starts, from the command line.
#[derive(Resource, Clone)]
pub struct DeskSetup {
    pub db: PathBuf,
    /// The seal key file (`--seal-key`); default beside the log.
    pub seal_key: Option<PathBuf>,
    /// Demo accounts and tokens are active: said on screen at all times.
    pub demo: bool,
    pub config: DispatchConfig,
    pub users: Users,
    /// Sign in at start as this person (passphrase from `ZHONGSHU_PASSPHRASE`).
    pub sign_in: Option<(String, String)>,
    pub service: ServiceOptions,
    /// Show the desk panel at start.
    pub open: bool,
    /// A console of a hall: the log is the hall's stream, not `db`.
    pub hall: Option<HallSetup>,
}

/// Where a console of a hall connects.
#[derive(Clone)]
pub struct HallSetup {
    pub nats: crate::nats::Nats,
    pub hall: String,
    pub replicas: usize,
}

/// What this console says about itself to the hall (presence).
#[derive(Clone, Default, PartialEq)]
struct Presence {
    user: Option<(String, String)>,
    working_on: Option<String>,
}

/// A console's link to its hall: whether the server is reachable, and who else is
/// here (kept up to date by a thread of its own, never by the frame).
pub struct HallLink {
    pub nats: crate::nats::Nats,
    pub hall: String,
    /// Since when the server has been out of reach (Unix ms), if it is.
    pub down_since_ms: Option<i64>,
    presence: std::sync::Arc<Mutex<Presence>>,
    /// The hall's members as last listed (other consoles, hubs).
    pub members: std::sync::Arc<Mutex<Vec<crate::hall::Member>>>,
    pub member_id: String,
    /// Another hall watched over the leaf link (its JetStream domain): read-only.
    pub watching: Option<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for HallLink {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Who a person is on a hall watched over the leaf link: their name, read-only.
pub fn watching_actor(actor: &Actor) -> Actor {
    Actor::new(
        &format!("{} (watching)", actor.name),
        crate::dispatch::Role::Leader,
        None,
    )
}

impl HallLink {
    fn start(setup: &HallSetup) -> Self {
        let presence = std::sync::Arc::new(Mutex::new(Presence::default()));
        let members = std::sync::Arc::new(Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let member_id = crate::hall::new_member_id("console");
        {
            let (nats, hall, replicas) = (setup.nats.clone(), setup.hall.clone(), setup.replicas);
            let (presence, members, stop, id) = (
                presence.clone(),
                members.clone(),
                stop.clone(),
                member_id.clone(),
            );
            std::thread::Builder::new()
                .name("hall-presence".into())
                .spawn(move || {
                    let since = crate::clock::unix_ms_now();
                    let mut bucket = None;
                    let mut announced: Option<crate::hall::Member> = None;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if bucket.is_none() {
                            bucket = crate::hall::Members::open(&nats, &hall, replicas).ok();
                        }
                        if let Some(b) = &bucket {
                            let me = presence.lock().map(|p| p.clone()).unwrap_or_default();
                            match me.user {
                                Some((user, role)) => {
                                    let m = crate::hall::Member {
                                        kind: "console".into(),
                                        id: id.clone(),
                                        host: crate::hall::host_name(),
                                        pid: std::process::id(),
                                        state: role,
                                        user: Some(user),
                                        working_on: me.working_on,
                                        api: None,
                                        since_ms: since,
                                        last_seen_ms: crate::clock::unix_ms_now(),
                                    };
                                    let _ = b.announce(&m);
                                    announced = Some(m);
                                }
                                None => {
                                    if let Some(m) = announced.take() {
                                        b.leave(&m);
                                    }
                                }
                            }
                            if let Ok(list) = b.list()
                                && let Ok(mut slot) = members.lock()
                            {
                                *slot = list;
                            }
                        }
                        for _ in 0..20 {
                            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            std::thread::sleep(std::time::Duration::from_millis(100));
                        }
                    }
                    if let (Some(b), Some(m)) = (&bucket, &announced) {
                        b.leave(m);
                    }
                })
                .expect("start the hall presence thread");
        }
        Self {
            nats: setup.nats.clone(),
            hall: setup.hall.clone(),
            down_since_ms: None,
            presence,
            members,
            member_id,
            watching: setup.nats.domain.clone(),
            stop,
        }
    }

    /// Other signed-in consoles working on `incident`: their users.
    pub fn others_on(&self, incident: &str) -> Vec<String> {
        self.members
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|m| {
                        m.kind == "console"
                            && m.id != self.member_id
                            && m.working_on.as_deref() == Some(incident)
                    })
                    .filter_map(|m| m.user.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The sign-in form's state.
#[derive(Default)]
pub struct SignInForm {
    pub name: String,
    pub passphrase: String,
    pub error: Option<String>,
    /// The passphrase being checked on a thread of its own (Argon2 takes a while,
    /// and a frame never waits for it).
    checking: Option<Mutex<Receiver<Result<Actor, String>>>>,
}

impl SignInForm {
    pub fn is_checking(&self) -> bool {
        self.checking.is_some()
    }
}

#[derive(Resource)]
pub struct Desk {
    /// The dispatch service on its writer thread, and the book as committed.
    pub worker: DeskWorker,
    /// What checking the log's chain, seals and witness found (in the background).
    pub integrity: Integrity,
    integrity_rx: Mutex<Option<Receiver<Integrity>>>,
    pub actor: Option<Actor>,
    pub users: Users,
    pub sign_in: SignInForm,
    pub ui: DeskState,
    pub selected: Option<String>,
    pub recommendations: Vec<Recommendation>,
    pub units: Vec<Unit>,
    pub status_line: Option<String>,
    pub pending: Vec<DeskCommand>,
    pub open: bool,
    /// Demo accounts and tokens are active (shown in the top bar).
    pub demo: bool,
    /// Shared with the ranking thread; its speeds are updated when no ranking holds it.
    router: Option<std::sync::Arc<Router>>,
    /// Changed slots whose road speeds wait for the ranking in progress to end.
    pending_speeds: Vec<u32>,
    /// The ranking in progress on its own thread.
    ranking: Option<Ranking>,
    recommended_at_ms: i64,
    recommended_for: Option<(String, u64)>,
    /// What the pins and the routes on the map show, to rebuild them only on change.
    /// A digest of the pins drawn (which incidents, where, how severe, which one is
    /// selected): events that change none of that do not rebuild the pins' mesh.
    pins_for: Option<u64>,
    routes_for: Option<(i64, Option<String>, bool)>,
    /// Alerts already in the live state when the log finished loading were read once.
    alerts_caught_up: bool,
    /// Units in the live state, kept from the changed slots (and road speeds with
    /// them).
    unit_tracker: UnitTracker,
    /// A console of a hall: its link (reachability, presence).
    pub hall: Option<HallLink>,
    /// Commands sent to the writer and not yet answered: the ticket, and what the
    /// desk was on when it was sent (who was signed in, what was selected), so an
    /// answer never lands on the next person's desk or pulls a selection away.
    sent: Vec<(u64, u64, Option<String>)>,
    /// Bumped at every sign-in and sign-out.
    session: u64,
    /// Answers to commands another part of the app sent through this desk's writer
    /// (a drill's dispatcher), kept here for it when `Some`; else let go.
    pub other_answers: Option<Vec<crate::dispatch::worker::Done>>,
    /// The book at the timeline's instant while the past is shown (replay).
    pub past: Option<PastBooks>,
    /// How the past's reader opens the log (read-only), and replays it (also the hub
    /// operations window's reader).
    pub past_log: Option<(OpenLog, DispatchConfig)>,
    past_asked: Option<std::time::Instant>,
}

/// The event log's integrity as the console last checked it.
#[derive(Clone, Debug, PartialEq)]
pub enum Integrity {
    Checking,
    Verified {
        events: u64,
        sealed: bool,
    },
    /// The hall's stream: chained, not sealed.
    HallVerified {
        events: u64,
    },
    Broken(String),
}

impl Desk {
    /// The book as committed, once the log is loaded.
    pub fn book(&self) -> Option<&crate::dispatch::book::Book> {
        self.worker.book()
    }

    /// The book the desk shows: in replay the past's (once read), else now's.
    pub fn shown_book(&self) -> Option<&crate::dispatch::book::Book> {
        shown_book(&self.past, &self.worker)
    }

    pub fn is_loading(&self) -> bool {
        self.worker.is_loading()
    }

    /// A desk on `worker`'s log. `router` ranks units (none: no recommendations).
    pub fn new(worker: DeskWorker, users: Users, router: Option<Router>) -> Self {
        Self {
            worker,
            integrity: Integrity::Checking,
            integrity_rx: Mutex::new(None),
            actor: None,
            users,
            sign_in: SignInForm::default(),
            ui: DeskState::default(),
            selected: None,
            recommendations: Vec::new(),
            units: Vec::new(),
            status_line: None,
            pending: Vec::new(),
            open: true,
            demo: false,
            router: router.map(std::sync::Arc::new),
            pending_speeds: Vec::new(),
            ranking: None,
            recommended_at_ms: 0,
            recommended_for: None,
            pins_for: None,
            routes_for: None,
            alerts_caught_up: false,
            unit_tracker: UnitTracker::default(),
            hall: None,
            sent: Vec::new(),
            session: 0,
            other_answers: None,
            past: None,
            past_log: None,
            past_asked: None,
        }
    }

    /// Starts checking a name and passphrase against the users file on a thread of
    /// its own; [`Desk::poll_sign_in`] takes the answer. The passphrase is wiped
    /// from the form at once and from the thread when checked. The error does not
    /// say whether the name exists.
    pub fn start_sign_in(&mut self, name: &str, passphrase: String) {
        let users = self.users.clone();
        let name = name.trim().to_string();
        let (tx, rx) = channel();
        zeroize::Zeroize::zeroize(&mut self.sign_in.passphrase);
        self.sign_in.error = None;
        // Wiped when dropped: after the check, and also when the thread does not
        // start or the check panics.
        let passphrase = zeroize::Zeroizing::new(passphrase);
        let spawned = std::thread::Builder::new()
            .name("sign-in".into())
            .spawn(move || {
                let result = users
                    .sign_in(&name, &passphrase)
                    .map(|u| Actor::new(&u.name, u.role, u.department.as_deref()))
                    .map_err(|e| e.to_string());
                drop(passphrase);
                let _ = tx.send(result);
            });
        match spawned {
            Ok(_) => self.sign_in.checking = Some(Mutex::new(rx)),
            Err(e) => self.sign_in.error = Some(format!("the sign-in did not start: {e}")),
        }
    }

    /// Takes the sign-in's answer when it has come. Never waits.
    pub fn poll_sign_in(&mut self) {
        let Some(rx) = self.sign_in.checking.as_mut() else {
            return;
        };
        let rx = match rx.get_mut() {
            Ok(rx) => rx,
            Err(poisoned) => poisoned.into_inner(),
        };
        let answer = match rx.try_recv() {
            Ok(answer) => answer,
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Err("the sign-in check stopped".to_string())
            }
        };
        self.sign_in.checking = None;
        match answer {
            Ok(actor) => {
                self.sign_out();
                // Another hall, watched from this one's server: whoever signs in
                // sees it as a leader does, read-only (what it escalates to this
                // hall is acted on in this hall's own log).
                let actor = match self.hall.as_ref().and_then(|h| h.watching.as_ref()) {
                    Some(_) => watching_actor(&actor),
                    None => actor,
                };
                self.actor = Some(actor);
            }
            Err(e) => {
                zeroize::Zeroize::zeroize(&mut self.sign_in.passphrase);
                self.sign_in.error = Some(e);
            }
        }
    }

    /// Sends a command to the writer (one at a time); its answer comes back through
    /// [`Desk::take_answers`].
    pub fn send(&mut self, cmd: crate::dispatch::book::Command) {
        let Some(actor) = self.actor.clone() else {
            self.status_line = Some("refused: sign in first".into());
            return;
        };
        if self.worker.is_loading() {
            self.status_line = Some("error: the dispatch log is not loaded yet".into());
            return;
        }
        // One at a time: a second click before the first is written would
        // be checked against a book without it (a report twice). Only this desk's
        // own commands count: another's (a drill's dispatcher) never holds it up.
        if !self.sent.is_empty() {
            self.status_line = Some("wait: the last command is still being saved 正在保存".into());
            return;
        }
        // Written on the writer thread; the outcome comes back in a later
        // frame, with its events.
        self.status_line = Some(match self.worker.execute(cmd, &actor) {
            Ok(ticket) => {
                self.sent
                    .push((ticket, self.session, self.selected.clone()));
                "saving… 正在保存".into()
            }
            Err(e) => format!("error: {e}"),
        });
    }

    /// Takes the writer's answers to this desk's commands: the status line, and a
    /// newly reported incident selected. Answers to commands the person before
    /// sent, or that would pull the selection away from where the operator moved
    /// on to, change nothing.
    pub fn take_answers(&mut self) {
        for done in self.worker.poll() {
            let Some(k) = self.sent.iter().position(|(t, ..)| *t == done.ticket) else {
                if let Some(others) = &mut self.other_answers {
                    others.push(done);
                }
                continue;
            };
            let (_, session, selected_then) = self.sent.remove(k);
            if session != self.session {
                // Sent by the person before: theirs, not this person's.
                continue;
            }
            self.status_line = Some(match done.result {
                Ok(events) => {
                    // A new incident is selected straight away, unless the operator
                    // moved on meanwhile.
                    if let Some(crate::dispatch::book::Event::IncidentReported { id, .. }) =
                        events.first()
                        && self.selected == selected_then
                    {
                        self.selected = Some(id.clone());
                        self.recommended_for = None;
                    }
                    format!("saved: {} event(s) written", events.len())
                }
                Err(e) => format!("refused: {e}"),
            });
        }
    }

    /// Signs out: the next person starts at a clean desk, without the last one's
    /// selection, drafts, forms, filters or messages.
    pub fn sign_out(&mut self) {
        self.session += 1;
        self.actor = None;
        self.status_line = None;
        self.selected = None;
        self.ui = DeskState::default();
        self.recommendations.clear();
        self.recommended_for = None;
        self.pending.clear();
        zeroize::Zeroize::zeroize(&mut self.sign_in.passphrase);
        self.sign_in = SignInForm::default();
    }

    pub fn recommendation_views(&self) -> Vec<RecommendationView> {
        self.recommendations
            .iter()
            .map(|r| RecommendationView {
                unit_id: r.unit_id.clone(),
                kind: self
                    .units
                    .get(r.unit)
                    .map_or_else(String::new, |u| u.kind.clone()),
                eta_s: r.eta_s,
                distance_m: r.distance_m,
            })
            .collect()
    }
}

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Startup, start_desk).add_systems(
        Update,
        (
            (
                desk_loaded,
                desk_hall,
                desk_pin_picked,
                desk_apply,
                desk_past,
                desk_alerts,
            )
                .chain()
                .in_set(AppSystems::Apply),
            (desk_recommend, desk_pins, desk_routes)
                .chain()
                .in_set(AppSystems::SyncScene),
        ),
    );
}

fn start_desk(mut commands: Commands, setup: Option<ResMut<DeskSetup>>, city: Res<City>) {
    let Some(mut setup) = setup else { return };
    // The passphrase given at start is used once, then wiped.
    let sign_in = setup.sign_in.take();
    let (integrity_tx, integrity_rx) = channel();
    let (db, config, options) = (
        setup.db.clone(),
        setup.config.clone(),
        setup.service.clone(),
    );
    let seal = crate::store::SealOptions::with_key(&db, setup.seal_key.as_deref());
    let hall = setup.hall.clone();
    let past_log = past_log(&db, &seal, hall.as_ref());
    // The log is read, and then written, on the writer thread: a large log never
    // holds up the first frame, and no write ever holds up a frame.
    let worker = DeskWorker::start(move || {
        if let Some(hall) = hall {
            return open_hall(hall, config, options, integrity_tx);
        }
        let d = crate::store::EventLog::open_with(&db, &seal)
            .and_then(|log| Dispatcher::open_store(Box::new(log), config))
            .map_err(|e| e.to_string())?;
        let opened = d.opened.clone();
        let service = DispatchService::start(d, options).map_err(|e| format!("{e:#}"))?;
        info!(
            "dispatch log {}: {} events, {} incidents, {} orders, rebuilt in {:.0} ms; department status API on {}",
            db.display(),
            opened.events,
            opened.incidents,
            opened.orders,
            opened.replay_ms,
            service.api_url()
        );
        // Then the whole chain, seals and witness, on a connection of its own.
        let check = crate::store::SealOptions {
            create_key: false,
            read_only: true,
            ..seal
        };
        spawn_check("dispatch-verify", integrity_tx, move || {
            match crate::store::EventLog::open_with(&db, &check).and_then(|log| log.verify()) {
                Ok(r) if r.chain_ok => Integrity::Verified {
                    events: r.events,
                    sealed: r.sealed,
                },
                Ok(r) => {
                    let text = r.problems.join("; ");
                    error!("dispatch log {}: {text}", db.display());
                    Integrity::Broken(text)
                }
                Err(e) => Integrity::Broken(e.to_string()),
            }
        });
        Ok(service)
    });
    let mut desk = Desk::new(
        worker,
        setup.users.clone(),
        Some(Router::new(&RoadGraph::from_map(&city.map))),
    );
    desk.integrity_rx = Mutex::new(Some(integrity_rx));
    desk.past_log = Some((past_log, setup.config.clone()));
    desk.open = setup.open;
    desk.demo = setup.demo;
    desk.hall = setup.hall.as_ref().map(HallLink::start);
    if let Some((name, passphrase)) = sign_in {
        desk.sign_in.name = name.clone();
        desk.start_sign_in(&name, passphrase);
    }
    commands.insert_resource(desk);
}

/// The book shown: the past's while one is read for the timeline, else now's (fields
/// apart, so the rest of the desk stays free to borrow).
fn shown_book<'a>(
    past: &'a Option<PastBooks>,
    worker: &'a DeskWorker,
) -> Option<&'a crate::dispatch::book::Book> {
    match past {
        Some(past) => past.shown.as_ref().map(|p| &p.book),
        None => worker.book(),
    }
}

/// An incident's replay starts this long before it was raised.
pub const INCIDENT_REPLAY_LEAD_MS: i64 = 5 * 60_000;

/// How the timeline's reader of the past opens the log: read-only, never creating
/// anything (the SQLite file with its seals checked, or the hall's stream).
/// Opens the log read-only for a reader of its past (or of now, for the wall): the
/// SQLite file, or the hall's stream.
pub fn past_log(
    db: &std::path::Path,
    seal: &crate::store::SealOptions,
    hall: Option<&HallSetup>,
) -> OpenLog {
    use crate::store::EventStore;
    if let Some(hall) = hall.cloned() {
        return std::sync::Arc::new(move || {
            let options = crate::store::jetstream::HallLogOptions {
                replicas: hall.replicas,
                create: false,
            };
            crate::store::jetstream::JetStreamLog::open(&hall.nats, &hall.hall, &options)
                .map(|l| Box::new(l) as Box<dyn EventStore>)
                .map_err(|e| e.to_string())
        });
    }
    let db = db.to_path_buf();
    let seal = crate::store::SealOptions {
        create_key: false,
        read_only: true,
        ..seal.clone()
    };
    std::sync::Arc::new(move || {
        crate::store::EventLog::open_with(&db, &seal)
            .map(|l| Box::new(l) as Box<dyn EventStore>)
            .map_err(|e| e.to_string())
    })
}

/// While the timeline shows the past, the desk shows the book as it stood then: asked
/// of a reader of the log on its own thread (no more than one question at a time while
/// playing, and at least every quarter second); back to now's book at Live.
fn desk_past(desk: Option<ResMut<Desk>>, clock: Option<Res<super::ViewClock>>) {
    let Some(mut desk) = desk else { return };
    let desk = &mut *desk;
    let Some(at_ms) = clock.and_then(|c| c.as_of_ms) else {
        if desk.past.take().is_some() {
            desk.pins_for = None;
        }
        return;
    };
    if desk.past.is_none() {
        let Some((open, config)) = desk.past_log.clone() else {
            return;
        };
        match PastBooks::start(open, config) {
            Ok(past) => desk.past = Some(past),
            Err(e) => {
                desk.status_line = Some(format!("error: cannot read the log's past: {e}"));
                desk.past_log = None;
                return;
            }
        }
    }
    let Some(past) = desk.past.as_mut() else {
        return;
    };
    if past.poll() {
        desk.pins_for = None;
    }
    let due = desk
        .past_asked
        .is_none_or(|t| t.elapsed() >= std::time::Duration::from_millis(250));
    if past.asked() != Some(at_ms) && (!past.reading() || due) {
        past.ask(at_ms);
        desk.past_asked = Some(std::time::Instant::now());
    }
}

/// Runs the log's full check on a thread of its own and sends what it found.
fn spawn_check(
    name: &str,
    to: Sender<Integrity>,
    check: impl FnOnce() -> Integrity + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = to.send(check());
        });
    if let Err(e) = spawned {
        error!("dispatch: the log's check did not start: {e}");
    }
}

/// Opens the hall's log as a console (the hub delivers and runs the clock), then
/// checks the stream's chain on a connection of its own.
fn open_hall(
    hall: HallSetup,
    config: DispatchConfig,
    mut options: ServiceOptions,
    integrity_tx: Sender<Integrity>,
) -> Result<DispatchService, String> {
    use crate::store::EventStore;
    use crate::store::jetstream::{HallLogOptions, JetStreamLog};
    options.hall_console = true;
    // A console never creates a hall (a mistyped name would open an empty one):
    // the hall's hub does.
    let log_options = HallLogOptions {
        replicas: hall.replicas,
        create: false,
    };
    let d = JetStreamLog::open(&hall.nats, &hall.hall, &log_options)
        .and_then(|log| Dispatcher::open_store(Box::new(log), config))
        .map_err(|e| e.to_string())?;
    let opened = d.opened.clone();
    let service = DispatchService::start(d, options).map_err(|e| format!("{e:#}"))?;
    info!(
        "hall {} on {}: {} events, {} incidents, {} orders, rebuilt in {:.0} ms",
        hall.hall, hall.nats.url, opened.events, opened.incidents, opened.orders, opened.replay_ms
    );
    spawn_check(
        "hall-verify",
        integrity_tx,
        move || match JetStreamLog::open(&hall.nats, &hall.hall, &log_options)
            .and_then(|log| log.verify())
        {
            Ok(r) if r.chain_ok => Integrity::HallVerified { events: r.events },
            Ok(r) => Integrity::Broken(r.problems.join("; ")),
            Err(e) => Integrity::Broken(e.to_string()),
        },
    );
    Ok(service)
}

/// A console of a hall: notices the server going out of reach (the banner) and
/// tells the presence thread who is signed in and on which incident.
fn desk_hall(desk: Option<ResMut<Desk>>) {
    let Some(mut desk) = desk else { return };
    let desk = &mut *desk;
    if desk.hall.is_none() {
        return;
    }
    // What the log's readers find wrong later (a forged or garbled commit) shows
    // at once, not only what the check at open found. Once shown it stays, so the
    // log is not asked again every frame.
    if !matches!(desk.integrity, Integrity::Broken(_))
        && let Some(alarm) = &desk.worker.alarm
    {
        desk.integrity = Integrity::Broken(alarm.clone());
    }
    let Some(link) = desk.hall.as_mut() else {
        return;
    };
    if link.nats.connected() {
        link.down_since_ms = None;
    } else if link.down_since_ms.is_none() {
        link.down_since_ms = Some(crate::clock::unix_ms_now());
    }
    // Told to the presence thread only when it changes (no copies every frame).
    let user = desk
        .actor
        .as_ref()
        .map(|a| (a.name.as_str(), a.role.as_str()));
    let working_on = desk.selected.as_deref();
    if let Ok(mut p) = link.presence.lock() {
        let same = p.user.as_ref().map(|(n, r)| (n.as_str(), r.as_str())) == user
            && p.working_on.as_deref() == working_on;
        if !same {
            *p = Presence {
                user: user.map(|(n, r)| (n.to_string(), r.to_string())),
                working_on: working_on.map(str::to_string),
            };
        }
    }
}

/// Takes in what the writer committed (applied to the desk's book) and the outcomes
/// of commands, and what the log's full check found. Never waits.
fn desk_loaded(desk: Option<ResMut<Desk>>) {
    let Some(mut desk) = desk else { return };
    let desk = &mut *desk;
    if let Ok(slot) = desk.integrity_rx.get_mut()
        && let Some(rx) = slot.as_ref()
        && let Ok(found) = rx.try_recv()
    {
        desk.integrity = found;
        *slot = None;
    }
    desk.poll_sign_in();
    let was_loading = desk.worker.is_loading();
    desk.take_answers();
    if let Some(e) = desk.worker.pump_error.take() {
        let text = format!("error: {e}");
        error!("dispatch: {text}");
        desk.status_line = Some(text);
    }
    if was_loading && let Some(e) = &desk.worker.load_error {
        error!("dispatch: {e}");
    }
}

/// Runs what the panels asked for, through the durable core.
fn desk_apply(
    desk: Option<ResMut<Desk>>,
    mut rig: ResMut<CameraRig>,
    city: Res<City>,
    clock: Option<Res<super::ViewClock>>,
    mut replay_request: Option<ResMut<super::ReplayRequest>>,
) {
    let Some(mut desk) = desk else { return };
    let desk = &mut *desk;
    let replay = desk.past.is_some() || clock.is_some_and(|c| c.as_of_ms.is_some());
    for command in std::mem::take(&mut desk.pending) {
        match command {
            DeskCommand::SelectIncident(id) => {
                desk.selected = id;
                desk.recommended_for = None;
            }
            DeskCommand::FlyTo { lon, lat } => {
                let [e, n] = city.map.frame.local_from_wgs84(lon, lat);
                let focus = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
                rig.fly_to(focus, 450.0);
            }
            DeskCommand::SetRecommendKind(_) => desk.recommended_for = None,
            DeskCommand::ReplayIncident(id) => {
                // Its whole life comes from now's book (in the past it may not be
                // closed yet).
                let Some(inc) = desk.worker.book().and_then(|b| b.incident(&id)) else {
                    continue;
                };
                let (from, until) = (inc.reported_ms - INCIDENT_REPLAY_LEAD_MS, inc.finished_ms);
                let [e, n] = city.map.frame.local_from_wgs84(inc.lon, inc.lat);
                let focus = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
                rig.fly_to(focus, 450.0);
                if let Some(request) = replay_request.as_mut() {
                    request.0 = Some((from, until));
                }
                desk.selected = Some(id);
                desk.recommended_for = None;
                desk.open = true;
                desk.ui.tab = super::desk_ui::DeskTab::Incidents;
            }
            // Replay never writes to the log.
            DeskCommand::Execute(_) if replay => {
                desk.status_line = Some(format!("refused: {}", super::desk_ui::REPLAY_READ_ONLY));
            }
            DeskCommand::Execute(cmd) => desk.send(cmd),
        }
    }
}

/// Alerts in the live feeds (NGSI-LD `Alert` entities, CAP feeds) raise incidents,
/// once each. Alerts that arrived while the log was loading are read when it is ready.
fn desk_alerts(
    desk: Option<ResMut<Desk>>,
    live: Option<Res<Live>>,
    changed: Res<LiveChangedSlots>,
) {
    let (Some(mut desk), Some(live)) = (desk, live) else {
        return;
    };
    let desk = &mut *desk;
    let catch_up = !desk.alerts_caught_up;
    if desk.worker.book().is_none() {
        return;
    }
    let slots: Vec<u32> = if catch_up {
        live.state
            .iter()
            .filter(|(_, e)| e.entity_type == "Alert")
            .map(|(slot, _)| slot)
            .collect()
    } else {
        changed.0.clone()
    };
    desk.alerts_caught_up = true;
    for slot in slots {
        let Some(e) = live.state.entity(slot) else {
            continue;
        };
        if e.entity_type != "Alert" {
            continue;
        }
        let alert =
            crate::dispatch::alerts::of_feed(&e.to_update(), live.feeds.get(e.feed as usize));
        if let Some(alert) = alert
            && let Err(err) = desk.worker.take_alert(alert)
        {
            error!("dispatch: alert {}: {err}", e.id);
        }
    }
}

/// The unit kinds to rank for an incident: the desk's choice, else its playbook's.
fn wanted_kinds(desk: &mut Desk, incident: &Incident) -> Vec<String> {
    if let Some(kind) = desk.ui.recommend_kind.clone() {
        return vec![kind];
    }
    let Some(book) = desk.book() else {
        return Vec::new();
    };
    book.config
        .playbook(&incident.kind)
        .map(|p| p.units.clone())
        .unwrap_or_default()
}

/// What a ranking depends on of an incident: its kind, place and status.
fn ranking_version(i: &Incident) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&i.kind, i.lon.to_bits(), i.lat.to_bits(), i.status as u8).hash(&mut h);
    h.finish()
}

/// A ranking of units on its own thread, and what it was asked.
struct Ranking {
    key: (String, u64),
    kinds: Vec<String>,
    units: Vec<Unit>,
    at_ms: i64,
    handle: std::thread::JoinHandle<Vec<Recommendation>>,
}

/// Re-ranks units for the selected incident every two seconds (traffic changes) or at
/// once when the selection changes. The ranking runs on its own thread (a search of
/// a big city's road graph is milliseconds); the frame only starts it and takes its
/// answer.
fn desk_recommend(
    desk: Option<ResMut<Desk>>,
    live: Option<Res<Live>>,
    changed: Res<LiveChangedSlots>,
    city: Res<City>,
) {
    let (Some(mut desk), Some(live)) = (desk, live) else {
        return;
    };
    let desk = &mut *desk;
    // Units and road speeds: what is already in the state a step a frame, then only
    // what changed.
    let caught = desk
        .unit_tracker
        .track(&live.state, &changed.0, Budget::frame());
    if desk.router.is_some() {
        desk.pending_speeds.extend(caught);
        desk.pending_speeds.extend(&changed.0);
    }
    if let Some(router) = desk.router.as_mut().and_then(std::sync::Arc::get_mut) {
        desk.pending_speeds.sort_unstable();
        desk.pending_speeds.dedup();
        router.update_speeds_from_slots(&live.state, &desk.pending_speeds);
        desk.pending_speeds.clear();
    }
    let now = crate::clock::unix_ms_now();
    // Another incident's (or another kind's) units are never shown for this one.
    if desk
        .recommended_for
        .as_ref()
        .is_none_or(|k| Some(&k.0) != desk.selected.as_ref())
    {
        desk.recommendations.clear();
    }
    if desk
        .ranking
        .as_ref()
        .is_some_and(|r| r.handle.is_finished())
    {
        let Some(done) = desk.ranking.take() else {
            return;
        };
        let still_wanted = desk.selected.as_ref() == Some(&done.key.0)
            && desk
                .book()
                .and_then(|b| b.incident(&done.key.0).cloned())
                .is_some_and(|i| {
                    ranking_version(&i) == done.key.1 && wanted_kinds(desk, &i) == done.kinds
                });
        if let Ok(recommendations) = done.handle.join()
            && still_wanted
        {
            desk.recommendations = recommendations;
            desk.units = done.units;
            desk.recommended_at_ms = done.at_ms;
            desk.recommended_for = Some(done.key);
        }
    }
    if desk.ranking.is_some() {
        return;
    }
    let Some(selected) = desk.selected.clone() else {
        desk.recommendations.clear();
        return;
    };
    // Re-ranked when what the ranking uses changes (the incident's kind and place),
    // not at every event the book takes in.
    let version = desk
        .book()
        .and_then(|b| b.incident(&selected))
        .map_or(0, ranking_version);
    let key = (selected.clone(), version);
    if desk.recommended_for.as_ref() == Some(&key) && now - desk.recommended_at_ms < 2000 {
        return;
    }
    let Some(incident) = desk.book().and_then(|b| b.incident(&selected).cloned()) else {
        desk.recommendations.clear();
        return;
    };
    let kinds = wanted_kinds(desk, &incident);
    let units = desk.unit_tracker.units();
    let at = city.map.frame.local_from_wgs84(incident.lon, incident.lat);
    let Some(router) = desk.router.clone().filter(|_| !kinds.is_empty()) else {
        desk.units = units;
        desk.recommendations.clear();
        desk.recommended_at_ms = now;
        desk.recommended_for = Some(key);
        return;
    };
    let (for_thread, wanted) = (units.clone(), kinds.clone());
    let spawned = std::thread::Builder::new()
        .name("unit-ranking".into())
        .spawn(move || router.recommend(at, &for_thread, |u| wanted.contains(&u.kind), 5));
    match spawned {
        Ok(handle) => {
            desk.ranking = Some(Ranking {
                key,
                kinds,
                units,
                at_ms: now,
                handle,
            })
        }
        // No thread to spare: rank on the frame this once.
        Err(_) => {
            if let Some(router) = &desk.router {
                desk.recommendations = router.recommend(at, &units, |u| kinds.contains(&u.kind), 5);
            }
            desk.units = units;
            desk.recommended_at_ms = now;
            desk.recommended_for = Some(key);
        }
    }
}

fn severity_colour(s: Severity) -> [f32; 4] {
    let srgb = match s {
        Severity::Extreme => 0xFF2D55,
        Severity::Severe => 0xFF4D4D,
        Severity::Moderate => 0xFFB030,
        Severity::Minor => 0xF2E14C,
    };
    mesh::linear_from_srgb(srgb)
}

/// Incidents drawn as pins at most.
const MAX_PINS: usize = 300;

/// A pin's column height and ring radius in metres (larger when selected).
pub fn pin_size(selected: bool) -> (f32, f32) {
    if selected {
        (140.0, 40.0)
    } else {
        (70.0, 22.0)
    }
}

/// The incidents shown as pins: the most urgent open ones, and the selected one.
/// Picking asks the same list, so a pin on the map is a pin under the cursor.
pub fn pinned_incidents<'a>(book: &'a Book, selected: Option<&str>) -> Vec<&'a Incident> {
    let mut shown: Vec<&Incident> = book
        .by_urgency()
        .iter()
        .map(|&i| &book.incidents[i])
        .take_while(|i| i.is_open())
        .take(MAX_PINS)
        .collect();
    if let Some(sel) = selected.and_then(|id| book.incident(id))
        && !shown.iter().any(|i| i.id == sel.id)
    {
        shown.push(sel);
    }
    shown
}

/// One of the desk's meshes on the map; rebuilt whole when what it shows changes.
#[derive(Component, Clone, Copy, PartialEq, Eq)]
enum DeskOverlay {
    Pins,
    Routes,
}

/// Replaces the overlay entity of `which` with a mesh of `data` (none when empty).
fn replace_overlay(
    commands: &mut Commands,
    existing: &Query<(Entity, &DeskOverlay)>,
    which: DeskOverlay,
    data: MeshData,
    meshes: &mut Assets<Mesh>,
    material: &Handle<StandardMaterial>,
) {
    for (e, o) in existing {
        if *o == which {
            commands.entity(e).despawn();
        }
    }
    if data.positions.is_empty() {
        return;
    }
    commands.spawn((
        Name::new("Dispatch overlay"),
        which,
        Mesh3d(meshes.add(bevy_mesh_with(
            data,
            bevy::asset::RenderAssetUsages::RENDER_WORLD,
        ))),
        MeshMaterial3d(material.clone()),
    ));
}

/// Open incidents as pins (a ring and a column, coloured by severity; the selected one
/// larger): the most urgent ones and the selected one, rebuilt when the book or the
/// selection changes.
/// A pin clicked on the map selects its incident on the desk, opened.
fn desk_pin_picked(mut picked: MessageReader<PinPicked>, desk: Option<ResMut<Desk>>) {
    let Some(mut desk) = desk else {
        picked.clear();
        return;
    };
    for PinPicked(id) in picked.read() {
        desk.pending
            .push(DeskCommand::SelectIncident(Some(id.clone())));
        desk.open = true;
    }
}

fn desk_pins(
    mut commands: Commands,
    desk: Option<ResMut<Desk>>,
    mut pins: ResMut<MapPins>,
    city: Res<City>,
    existing: Query<(Entity, &DeskOverlay)>,
    mut meshes: ResMut<Assets<Mesh>>,
    flat: Res<FlatMaterial>,
) {
    let Some(mut desk) = desk else { return };
    let desk = &mut *desk;
    let selected = desk.selected.clone();
    let Some(book) = shown_book(&desk.past, &desk.worker) else {
        return;
    };
    let shown = pinned_incidents(book, selected.as_deref());
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        selected.hash(&mut h);
        for inc in &shown {
            (&inc.id, inc.severity, inc.lon.to_bits(), inc.lat.to_bits()).hash(&mut h);
        }
        h.finish()
    };
    if desk.pins_for == Some(key) {
        return;
    }
    desk.pins_for = Some(key);
    let mut data = MeshData::default();
    let mut earcut = earcut::Earcut::new();
    pins.0.clear();
    for inc in shown {
        let [e, n] = city.map.frame.local_from_wgs84(inc.lon, inc.lat);
        let colour = severity_colour(inc.severity);
        let is_selected = selected.as_deref() == Some(inc.id.as_str());
        let (height, ring) = pin_size(is_selected);
        // What a click picks is what is drawn.
        pins.0.push(MapPin {
            incident: inc.id.clone(),
            lon: inc.lon,
            lat: inc.lat,
            height,
            ring,
        });
        let circle = |r: f64| {
            geo::Polygon::new(
                (0..24)
                    .map(|k| {
                        let a = k as f64 / 24.0 * std::f64::consts::TAU;
                        (e + r * a.cos(), n + r * a.sin())
                    })
                    .collect::<Vec<_>>()
                    .into(),
                vec![],
            )
        };
        mesh::add_flat_polygon(
            &mut data,
            &mut earcut,
            &circle(ring as f64),
            mesh::DISTRICT_Y + 0.3,
            [colour[0], colour[1], colour[2], 0.9],
        );
        let start = data.positions.len();
        mesh::add_building(&mut data, &mut earcut, &circle(4.0), 0.0, height);
        data.colors
            .extend(std::iter::repeat_n(colour, data.positions.len() - start));
    }
    replace_overlay(
        &mut commands,
        &existing,
        DeskOverlay::Pins,
        data,
        &mut meshes,
        &flat.0,
    );
}

/// The recommended units' routes as bright ribbons, rebuilt when they are re-ranked.
fn desk_routes(
    mut commands: Commands,
    desk: Option<ResMut<Desk>>,
    existing: Query<(Entity, &DeskOverlay)>,
    mut meshes: ResMut<Assets<Mesh>>,
    flat: Res<FlatMaterial>,
) {
    let Some(mut desk) = desk else { return };
    // Cleared recommendations (another kind asked for) take their routes with them.
    let key = (
        desk.recommended_at_ms,
        desk.selected.clone(),
        desk.recommendations.is_empty(),
    );
    if desk.routes_for.as_ref() == Some(&key) {
        return;
    }
    desk.routes_for = Some(key);
    let route_colour = mesh::linear_from_srgb(0x3FD0FF);
    let mut data = MeshData::default();
    for r in &desk.recommendations {
        let mut line: Vec<(f64, f64)> = Vec::with_capacity(r.route.len() + 1);
        if let Some(u) = desk.units.get(r.unit) {
            line.push((u.position[0], u.position[1]));
        }
        line.extend(r.route.iter().map(|p| (p[0], p[1])));
        if line.len() >= 2 {
            mesh::add_ribbon(
                &mut data,
                &geo::LineString::from(line),
                9.0,
                mesh::DISTRICT_Y + 0.6,
                route_colour,
            );
        }
    }
    replace_overlay(
        &mut commands,
        &existing,
        DeskOverlay::Routes,
        data,
        &mut meshes,
        &flat.0,
    );
}

/// The desk panel: loading, sign-in, then the dispatcher's desk.
pub fn desk_panel_ui(
    ui: &mut bevy_egui::egui::Ui,
    desk: &mut Desk,
    location: Option<(f64, f64)>,
    now_ms: i64,
    time: &crate::clock::CityTime,
    replay: bool,
) {
    use super::theme;
    use bevy_egui::egui;
    // The close button is laid out first, so a narrow panel never pushes it out.
    let title = egui::RichText::new("Dispatch 指挥调度").heading();
    super::widgets::panel_header(ui, title, |ui| {
        if ui.button("×").on_hover_text("Hide the desk").clicked() {
            desk.open = false;
        }
        if desk.actor.is_some() && ui.button("Sign out 退出").clicked() {
            desk.sign_out();
        }
    });
    if let Some(e) = &desk.worker.load_error {
        ui.label(
            egui::RichText::new(format!("The dispatch log cannot be used: {e}"))
                .color(theme::ALARM),
        );
        return;
    }
    integrity_ui(ui, &desk.integrity);
    if let Some(link) = &desk.hall
        && let Some(since) = link.down_since_ms
    {
        ui.label(
            egui::RichText::new(format!(
                "Hall server unreachable 大厅服务器不可达 for {} s: the last state is shown; commands are refused until it is back",
                (now_ms - since).max(0) / 1000
            ))
            .color(theme::ALARM)
            .strong(),
        );
    }
    if let (Some(link), Some(selected)) = (&desk.hall, &desk.selected) {
        let others = link.others_on(selected);
        if !others.is_empty() {
            ui.label(
                egui::RichText::new(format!(
                    "{selected}: also being worked on by 同时处理 {}",
                    others.join(", ")
                ))
                .color(theme::WARN),
            );
        }
    }
    let Some(actor) = desk.actor.clone() else {
        sign_in_ui(ui, desk);
        return;
    };
    let loading = desk.is_loading();
    let recommendations = if replay {
        Vec::new()
    } else {
        desk.recommendation_views()
    };
    let Desk {
        worker,
        ui: state,
        selected,
        status_line,
        pending,
        past,
        ..
    } = desk;
    let past = past.as_ref().filter(|_| replay);
    if replay {
        // The past is never taken for now: the book as it stood then, read-only.
        let line = match past {
            Some(p) if p.trouble.is_some() => p.trouble.clone().unwrap_or_default(),
            Some(p) => match &p.shown {
                Some(shown) => format!(
                    "Replay 回放: the book as it stood at {} ({} of the log's {} events); commands are disabled until Live.",
                    time.time_of_day(shown.at_ms),
                    shown.events,
                    shown.log_events
                ),
                None => "Replay 回放: reading the log as it stood then…".to_string(),
            },
            None => "Replay 回放: commands are disabled until Live.".to_string(),
        };
        let colour = if past.is_some_and(|p| p.trouble.is_some()) {
            theme::ALARM
        } else {
            theme::WARN
        };
        ui.add(egui::Label::new(egui::RichText::new(line).color(colour)).wrap());
    }
    let book = match past {
        Some(p) => p.shown.as_ref().map(|p| &p.book),
        None if replay => None,
        None => worker.book(),
    };
    let Some(book) = book else {
        if loading || past.is_some_and(|p| p.reading()) {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Loading the dispatch log… 正在载入");
            });
        }
        return;
    };
    let view = super::desk_ui::DeskView {
        book,
        actor: &actor,
        now_ms,
        time,
        selected: selected.as_deref(),
        recommendations: &recommendations,
        status_line: status_line.as_deref(),
        location,
        replay,
    };
    super::desk_ui::desk_ui(ui, &view, state, pending);
    if !worker.notices.is_empty() {
        ui.separator();
        egui::CollapsingHeader::new(format!("Notices 通知 ({})", worker.notices.len()))
            .id_salt("desk-notices")
            .show(ui, |ui| {
                for n in worker.notices.iter().rev().take(8) {
                    ui.add(egui::Label::new(egui::RichText::new(n).color(theme::WARN)).wrap());
                }
            });
    }
}

/// One line on the log's integrity: checking, verified, or what is wrong (in red).
fn integrity_ui(ui: &mut bevy_egui::egui::Ui, integrity: &Integrity) {
    use super::theme;
    use bevy_egui::egui;
    let (text, colour) = match integrity {
        Integrity::Checking => (
            "Log: checking the chain… 正在校验".to_string(),
            theme::MUTED,
        ),
        Integrity::Verified {
            events,
            sealed: true,
        } => (
            format!("Log verified 日志已校验: {events} events, sealed"),
            theme::GOOD,
        ),
        Integrity::Verified {
            events,
            sealed: false,
        } => (
            format!("Log chain verified: {events} events; no seal key, seals not checked"),
            theme::WARN,
        ),
        Integrity::HallVerified { events } => (
            format!(
                "Hall log chain verified 大厅日志已校验: {events} events (the stream is not sealed)"
            ),
            theme::GOOD,
        ),
        Integrity::Broken(why) => (format!("LOG INTEGRITY 日志完整性异常: {why}"), theme::ALARM),
    };
    ui.add(egui::Label::new(egui::RichText::new(text).color(colour)).wrap());
}

fn sign_in_ui(ui: &mut bevy_egui::egui::Ui, desk: &mut Desk) {
    use super::theme;
    use bevy_egui::egui;
    ui.label("Sign in to see and act on incidents. 请登录");
    let mut submit = false;
    egui::Grid::new("sign-in").num_columns(2).show(ui, |ui| {
        ui.label("Name 用户名");
        ui.text_edit_singleline(&mut desk.sign_in.name);
        ui.end_row();
        ui.label("Passphrase 口令");
        let r = ui.add(egui::TextEdit::singleline(&mut desk.sign_in.passphrase).password(true));
        submit |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.end_row();
    });
    if desk.sign_in.is_checking() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Checking… 正在验证");
        });
    } else {
        submit |= ui.button("Sign in 登录").clicked();
        if submit {
            let name = desk.sign_in.name.clone();
            let passphrase = std::mem::take(&mut desk.sign_in.passphrase);
            desk.start_sign_in(&name, passphrase);
        }
    }
    if let Some(e) = &desk.sign_in.error {
        ui.label(egui::RichText::new(e).color(theme::ALARM));
    }
    if desk.users.iter().any(|u| u.name == "dispatch") && desk.users.len() <= 4 {
        ui.label(
            egui::RichText::new(
                "Demo accounts: duty, dispatch, leader, fire.liaison — passphrase zhongshu",
            )
            .small()
            .color(theme::MUTED),
        );
    }
}

#[cfg(test)]
mod tests {
    use bevy_egui::egui;
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;
    use crate::dispatch::Role;
    use crate::dispatch::book::{Command, NewIncident};
    use crate::feeds::Domain;

    /// A desk on a fresh log holding one incident, with the demo users.
    fn desk_with_an_incident(name: &str) -> Desk {
        desk_on(name).0
    }

    /// The same, and the switch that makes the log's appends wait (a slow disk).
    fn desk_on(name: &str) -> (Desk, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let db = crate::dispatch::testing::temp_db("desk", name);
        {
            let mut d = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
            d.execute(
                &crate::dispatch::testing::fire(),
                &Actor::new("li.wei", Role::Dispatcher, None),
                crate::clock::unix_ms_now(),
            )
            .unwrap();
        }
        let (log, _) = crate::store::testing::FailingLog::open(&db);
        let hold = log.hold();
        let worker = worker_on(move || Ok(Box::new(log)));
        (Desk::new(worker, Users::demo(), None), hold)
    }

    /// A desk's writer on the log `open` gives, with silent departments and the
    /// status API on a free port.
    fn worker_on(
        open: impl FnOnce() -> Result<Box<dyn crate::store::EventStore>, String> + Send + 'static,
    ) -> DeskWorker {
        DeskWorker::start(move || {
            let d = Dispatcher::open_store(open()?, DispatchConfig::default_config())
                .map_err(|e| e.to_string())?;
            let options = ServiceOptions {
                api_addr: "127.0.0.1:0".into(),
                sim: crate::dispatch::delivery::SimBehaviour::silent(),
                ..Default::default()
            };
            DispatchService::start(d, options).map_err(|e| e.to_string())
        })
    }

    fn harness(desk: Desk) -> Harness<'static, Desk> {
        Harness::builder()
            .with_size(egui::vec2(480.0, 900.0))
            .build_ui_state(
                |ui, desk: &mut Desk| {
                    // What the frame's systems do around the panel.
                    desk.poll_sign_in();
                    desk.take_answers();
                    for c in std::mem::take(&mut desk.pending) {
                        if let DeskCommand::SelectIncident(id) = c {
                            desk.selected = id;
                        }
                    }
                    let now = crate::clock::unix_ms_now();
                    let time = crate::clock::CityTime::utc("a test");
                    desk_panel_ui(ui, desk, Some((24.94, 60.17)), now, &time, false);
                },
                desk,
            )
    }

    /// Runs frames (as a console would, every 10 ms) until `done` holds, at most 30 s.
    fn frames_until(h: &mut Harness<'static, Desk>, done: impl Fn(&Desk) -> bool) {
        let started = std::time::Instant::now();
        while !done(h.state()) {
            assert!(started.elapsed().as_secs() < 30, "gave up waiting");
            h.step();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        h.run_steps(2);
    }

    fn sign_in(h: &mut Harness<'static, Desk>, name: &str) {
        h.state_mut().sign_in.name = name.into();
        h.state_mut().sign_in.passphrase = "zhongshu".into();
        h.run_steps(2);
        h.get_by_label("Sign in 登录").click();
        h.run_steps(2);
        // The passphrase is checked off the frame: frames go on meanwhile.
        frames_until(h, |d| d.actor.is_some() || d.sign_in.error.is_some());
        assert!(h.state().actor.is_some(), "{:?}", h.state().sign_in.error);
        assert!(h.state().sign_in.passphrase.is_empty());
    }

    #[test]
    fn units_are_ranked_off_the_frame_and_shown_for_the_selected_incident_only() {
        use crate::app::live::{Live, LiveChangedSlots};
        let map = crate::map::load_default().unwrap();
        let router = Router::new(&crate::map::graph::RoadGraph::from_map(&map));
        let mut desk = desk_with_an_incident("ranking");
        desk.router = Some(std::sync::Arc::new(router));
        let started = std::time::Instant::now();
        while desk.book().is_none() {
            desk.take_answers();
            assert!(started.elapsed().as_secs() < 30, "the log did not load");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Fire engines around the incident, already in the state when the desk starts.
        let (running, rx) = crate::feeds::start_feeds(&[], &[], &map, 1);
        let mut state = crate::state::LiveState::new(map.frame);
        for (i, (dlon, dlat)) in [(0.002, 0.0), (-0.004, 0.001), (0.0, -0.006)]
            .into_iter()
            .enumerate()
        {
            state.apply(
                0,
                crate::feeds::EntityUpdate {
                    id: format!("engine-{i}"),
                    entity_type: "Vehicle".into(),
                    kind: crate::feeds::EntityKind::Vehicle {
                        vehicle_type: Some("fireEngine".into()),
                        speed_kmh: None,
                        heading_deg: None,
                        service_status: None,
                    },
                    position: Some([24.94 + dlon, 60.17 + dlat]),
                    line: None,
                    observed_at_ms: None,
                    fields: Default::default(),
                    units: Default::default(),
                    notes: Vec::new(),
                },
                1,
            );
        }
        state.drain_changed();
        let live = Live::new(
            Vec::new(),
            state,
            crate::governance::health::Ingest::new(&[], rx),
            running,
        );
        let index = crate::map::pick::BuildingIndex::new(&map);
        let mut app = App::new();
        app.insert_resource(crate::app::City { map, index })
            .insert_resource(live)
            .insert_resource(LiveChangedSlots::default())
            .insert_resource(desk)
            .add_systems(Update, desk_recommend);
        let ranked = |app: &App| app.world().resource::<Desk>().recommendations.len();
        // Nothing selected: nothing ranked.
        app.update();
        assert_eq!(ranked(&app), 0);
        app.world_mut().resource_mut::<Desk>().selected = Some("INC-000001".into());
        let started = std::time::Instant::now();
        let mut frames = 0;
        while ranked(&app) == 0 {
            app.update();
            frames += 1;
            assert!(
                started.elapsed().as_secs() < 10,
                "no ranking in {frames} frames"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let desk = app.world().resource::<Desk>();
        // The three engines, nearest by road first, ranked for the incident selected.
        let views = desk.recommendation_views();
        let mut ids: Vec<&str> = views.iter().map(|v| v.unit_id.as_str()).collect();
        assert!(
            views.windows(2).all(|w| w[0].eta_s <= w[1].eta_s),
            "{views:?}"
        );
        ids.sort();
        assert_eq!(ids, ["engine-0", "engine-1", "engine-2"]);
        assert_eq!(
            desk.recommended_for.as_ref().map(|k| k.0.as_str()),
            Some("INC-000001")
        );
        // Another selection: the last one's units are gone at once, before any
        // ranking of the new one is back.
        app.world_mut().resource_mut::<Desk>().selected = Some("INC-999999".into());
        app.update();
        assert_eq!(ranked(&app), 0);
    }

    #[test]
    fn the_next_person_starts_at_a_clean_desk() {
        let mut h = harness(desk_with_an_incident("sign-out"));
        frames_until(&mut h, |d| d.book().is_some());
        sign_in(&mut h, "dispatch");
        // The dispatcher picks the incident: its detail and playbook draft show.
        h.get_by_label_contains("Smoke from a shop roof").click();
        h.run_steps(2);
        assert_eq!(h.state().selected.as_deref(), Some("INC-000001"));
        assert!(
            h.state().ui.draft.is_some(),
            "the playbook's orders are drafted"
        );
        h.state_mut().ui.filter.search = "roof".into();
        h.state_mut().ui.form.title = "Half-typed report".into();
        h.state_mut().status_line = Some("saved: 1 event(s) written".into());
        h.get_by_label("Sign out 退出").click();
        h.run_steps(2);
        assert!(h.state().actor.is_none());
        sign_in(&mut h, "leader");
        let desk = h.state();
        assert_eq!(desk.actor.as_ref().map(|a| a.role), Some(Role::Leader));
        assert!(desk.selected.is_none(), "the last person's selection");
        assert!(desk.ui.draft.is_none(), "the last person's draft orders");
        assert_eq!(desk.ui.filter, DeskState::default().filter);
        assert_eq!(desk.ui.form, DeskState::default().form);
        assert!(desk.status_line.is_none(), "the last person's messages");
    }

    #[test]
    fn an_answer_that_comes_after_sign_out_never_lands_on_the_next_persons_desk() {
        let (desk, hold) = desk_on("late-answer");
        let mut h = harness(desk);
        frames_until(&mut h, |d| d.book().is_some());
        sign_in(&mut h, "dispatch");
        // The disk stalls while a report is being saved, and the dispatcher leaves.
        hold.store(true, std::sync::atomic::Ordering::Relaxed);
        h.state_mut().send(Command::ReportIncident(NewIncident {
            kind: "waterlogging".into(),
            title: "Underpass flooded".into(),
            domain: Domain::Urban,
            severity: Severity::Severe,
            lon: 24.94,
            lat: 60.17,
            source: "map".into(),
            key: None,
        }));
        assert_eq!(h.state().worker.in_flight(), 1);
        h.get_by_label("Sign out 退出").click();
        h.run_steps(2);
        sign_in(&mut h, "leader");
        hold.store(false, std::sync::atomic::Ordering::Relaxed);
        frames_until(&mut h, |d| d.worker.in_flight() == 0);
        let desk = h.state();
        // The report was saved (the log has it) ...
        assert_eq!(desk.book().unwrap().incidents.len(), 2);
        // ... but the leader's desk shows nothing of the dispatcher's command.
        assert!(desk.selected.is_none());
        assert!(desk.status_line.is_none(), "{:?}", desk.status_line);
    }

    #[test]
    fn a_wrong_passphrase_is_refused_without_holding_up_a_frame() {
        let mut h = harness(desk_with_an_incident("wrong-pass"));
        h.state_mut().sign_in.name = "dispatch".into();
        h.state_mut().sign_in.passphrase = "wrong".into();
        h.run_steps(2);
        h.get_by_label("Sign in 登录").click();
        h.run_steps(2);
        assert!(h.state().sign_in.is_checking());
        frames_until(&mut h, |d| !d.sign_in.is_checking());
        assert!(h.state().actor.is_none());
        assert!(h.state().sign_in.error.is_some());
        assert!(h.state().sign_in.passphrase.is_empty());
    }

    /// The console in replay: the desk shows the book as it stood at the timeline's
    /// instant (read from the log on a thread), writes nothing, and "Replay" on an
    /// incident asks the timeline for its span and flies the camera to it.
    #[test]
    fn in_replay_the_desk_shows_the_book_as_it_stood_and_writes_nothing() {
        use crate::dispatch::book::NewOrder;
        use crate::dispatch::{Action, IncidentStatus};
        let db = crate::dispatch::testing::temp_db("desk", "replay");
        let now = crate::clock::unix_ms_now();
        let t1 = now - 20 * 60_000;
        let li = Actor::new("li.wei", Role::Dispatcher, None);
        {
            let mut d = Dispatcher::open(&db, DispatchConfig::default_config()).unwrap();
            d.execute(&crate::dispatch::testing::fire(), &li, t1)
                .unwrap();
            d.execute(
                &Command::IssueOrders {
                    incident: "INC-000001".into(),
                    orders: vec![NewOrder {
                        department: "fire".into(),
                        instruction: "Two engines".into(),
                        deadline_ms: t1 + 3_600_000,
                    }],
                },
                &li,
                t1 + 120_000,
            )
            .unwrap();
            for (action, at) in [
                (Action::MarkOnScene, t1 + 240_000),
                (Action::ResolveIncident, t1 + 600_000),
            ] {
                let cmd = Command::Incident {
                    id: "INC-000001".into(),
                    action,
                    note: None,
                };
                d.execute(&cmd, &li, at).unwrap();
            }
        }
        let seal = crate::store::SealOptions::beside(&db);
        let open = past_log(&db, &seal, None);
        let worker = {
            let (db, seal) = (db.clone(), seal.clone());
            worker_on(move || {
                crate::store::EventLog::open_with(&db, &seal)
                    .map(|log| Box::new(log) as Box<dyn crate::store::EventStore>)
                    .map_err(|e| e.to_string())
            })
        };
        let mut desk = Desk::new(worker, Users::demo(), None);
        desk.past_log = Some((open, DispatchConfig::default_config()));
        desk.actor = Some(li.clone());
        let map = crate::map::load_default().unwrap();
        let rig = CameraRig::for_bounds(map.local_bounds());
        let index = crate::map::pick::BuildingIndex::new(&map);
        let mut app = App::new();
        app.insert_resource(City { map, index })
            .insert_resource(rig)
            .insert_resource(desk)
            .insert_resource(super::super::ViewClock::default())
            .init_resource::<super::super::ReplayRequest>()
            .add_systems(Update, (desk_loaded, desk_apply, desk_past).chain());
        let frames_until = |app: &mut App, what: &str, done: &dyn Fn(&Desk) -> bool| {
            let started = std::time::Instant::now();
            while !done(app.world().resource::<Desk>()) {
                app.update();
                assert!(started.elapsed().as_secs() < 20, "never: {what}");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        frames_until(&mut app, "the log loaded", &|d| d.book().is_some());
        let now_book = app.world().resource::<Desk>().book().unwrap().clone();
        assert!(!now_book.incidents[0].is_open());

        // "Replay" on the incident: its span asked of the timeline, the camera on it.
        let goal = app.world().resource::<CameraRig>().goal.focus;
        app.world_mut()
            .resource_mut::<Desk>()
            .pending
            .push(DeskCommand::ReplayIncident("INC-000001".into()));
        app.update();
        assert_eq!(
            app.world().resource::<super::super::ReplayRequest>().0,
            Some((t1 - INCIDENT_REPLAY_LEAD_MS, Some(t1 + 600_000)))
        );
        assert_ne!(app.world().resource::<CameraRig>().goal.focus, goal);
        assert_eq!(
            app.world().resource::<Desk>().selected.as_deref(),
            Some("INC-000001")
        );

        // A minute after it was raised: open, no orders yet.
        let at = |app: &mut App, t: i64| {
            app.world_mut()
                .resource_mut::<super::super::ViewClock>()
                .as_of_ms = Some(t);
            frames_until(app, "the past read", &|d| {
                d.past
                    .as_ref()
                    .and_then(|p| p.shown.as_ref())
                    .is_some_and(|p| p.at_ms == t)
            });
            app.world().resource::<Desk>().shown_book().unwrap().clone()
        };
        let then = at(&mut app, t1 + 60_000);
        assert!(then.incidents[0].is_open());
        assert!(then.orders.is_empty());
        // Forwards: the order issued, on scene.
        let later = at(&mut app, t1 + 300_000);
        assert_eq!(later.orders.len(), 1);
        assert_eq!(later.incidents[0].status, IncidentStatus::OnScene);
        // Back before it: nothing.
        assert!(at(&mut app, t1 - 1).incidents.is_empty());

        // A command from the past is refused; the log is unchanged.
        let events = crate::store::EventLog::open_unsealed(&db).unwrap().len();
        app.world_mut()
            .resource_mut::<Desk>()
            .pending
            .push(DeskCommand::Execute(crate::dispatch::testing::fire()));
        app.update();
        let line = app.world().resource::<Desk>().status_line.clone();
        assert!(
            line.as_deref().is_some_and(|l| l.starts_with("refused")),
            "{line:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            crate::store::EventLog::open_unsealed(&db).unwrap().len(),
            events
        );

        // Live: now's book again.
        app.world_mut()
            .resource_mut::<super::super::ViewClock>()
            .as_of_ms = None;
        app.update();
        let desk = app.world().resource::<Desk>();
        assert!(desk.past.is_none());
        assert_eq!(desk.shown_book().unwrap().revision, now_book.revision);
    }
}
