//! `zhongshu hub`: the hall's headless hub. Exactly one is active per hall (the
//! lease); others wait as hot standbys and take over when the active one stops
//! renewing. The active hub runs the dispatch service on the hall's log: the outbox
//! to departments (orders issued at any console), the status API, the deadline
//! clock and alerts. Taking over, it re-sends whatever was not yet delivered;
//! departments de-duplicate by idempotency key, which is the same on every hub of
//! the hall (it is built from the hall log's id).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Lease, Member, Members, host_name, new_member_id};
use crate::dispatch::config::DispatchConfig;
use crate::dispatch::dispatcher::Dispatcher;
use crate::dispatch::service::{DispatchService, ServiceOptions};
use crate::nats::Nats;
use crate::store::jetstream::{HallLogOptions, JetStreamLog};

/// What a hub needs.
#[derive(Clone)]
pub struct HubOptions {
    pub hall: String,
    pub config: DispatchConfig,
    pub service: ServiceOptions,
    pub replicas: usize,
    /// On stop, leave as a crash would: the lease is not released (benchmarks of
    /// failover).
    pub crash_on_stop: bool,
    /// The hall's feeds: the active hub polls them and publishes the live layers.
    pub live: Option<super::live::LiveSetup>,
}

/// What the hub reports as it goes (one line each on the command line).
#[derive(Clone, Debug, PartialEq)]
pub enum HubState {
    Standby {
        id: String,
        active: Option<String>,
    },
    Active {
        id: String,
        api: String,
        events: u64,
        took_ms: f64,
    },
    LostLease {
        id: String,
    },
    /// The active hub serves the hall's open data (`--open-data`) at `addr`, until it
    /// loses the lease.
    OpenData {
        id: String,
        addr: std::net::SocketAddr,
    },
    Problem(String),
}

/// How often the active hub renews its lease and a standby tries to take it.
const LEASE_EVERY: Duration = Duration::from_millis(1000);
/// How often the active hub pumps the dispatch service.
const PUMP_EVERY: Duration = Duration::from_millis(20);
/// How often a member re-announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);
/// How long a hub that could not start waits before trying again.
const START_BACKOFF: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    crate::clock::unix_ms_now()
}

/// Runs the hub until `stop` is set. Reports each change of state to `report`.
pub fn run(
    nats: &Nats,
    options: HubOptions,
    stop: Arc<AtomicBool>,
    mut report: impl FnMut(HubState),
) -> anyhow::Result<()> {
    crate::nats::check_hall_name(&options.hall).map_err(anyhow::Error::msg)?;
    let id = new_member_id("hub");
    let mut lease =
        Lease::open(nats, &options.hall, &id, options.replicas).map_err(anyhow::Error::msg)?;
    let members =
        Members::open(nats, &options.hall, options.replicas).map_err(anyhow::Error::msg)?;
    let mut me = Member {
        kind: "hub".into(),
        id: id.clone(),
        host: host_name(),
        pid: std::process::id(),
        state: "standby".into(),
        user: None,
        working_on: None,
        api: None,
        since_ms: now_ms(),
        last_seen_ms: now_ms(),
    };
    let mut service: Option<DispatchService> = None;
    let mut live: Option<super::live::HubLive> = None;
    let mut link: Option<super::link::HallLink> = None;
    let mut last_lease = Instant::now() - LEASE_EVERY;
    let mut last_announce = Instant::now() - ANNOUNCE_EVERY;
    let mut said_standby = false;
    let mut last_problem: Option<String> = None;
    let mut last_alarm: Option<String> = None;
    let mut retry_at = Instant::now();
    let mut last_renewed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // The active hub renews every second; a standby looks four times as often,
        // so it takes over within a quarter second of the lease expiring.
        let every = if service.is_some() {
            LEASE_EVERY
        } else {
            LEASE_EVERY / 4
        };
        if last_lease.elapsed() >= every {
            last_lease = Instant::now();
            let was_active = service.is_some();
            let acquired = if was_active || Instant::now() >= retry_at {
                lease.try_acquire()
            } else {
                Ok(false)
            };
            match acquired {
                Ok(true) if !was_active => {
                    let started = Instant::now();
                    // Replaying a large log takes a while: the lease is renewed
                    // meanwhile, so no standby takes over a hub that is starting.
                    let starting = AtomicBool::new(true);
                    let (started_service, renewals) = std::thread::scope(|scope| {
                        let renewer = scope.spawn(|| {
                            let mut ok = true;
                            while starting.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed)
                            {
                                std::thread::sleep(Duration::from_millis(100));
                                if last_lease.elapsed() >= LEASE_EVERY {
                                    last_lease = Instant::now();
                                    // Unreachable counts as lost: the start is given up
                                    // rather than risk two active hubs.
                                    ok &= lease.renew().unwrap_or(false);
                                }
                            }
                            ok
                        });
                        // Whatever happens while starting (a panic included), the
                        // renewer stops, so a hub that cannot start lets the lease go.
                        struct Done<'a>(&'a AtomicBool);
                        impl Drop for Done<'_> {
                            fn drop(&mut self) {
                                self.0.store(false, Ordering::Relaxed);
                            }
                        }
                        let done = Done(&starting);
                        let s = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            start_service(nats, &options)
                        }))
                        .unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Err(anyhow::anyhow!("starting failed: {what}"))
                        });
                        drop(done);
                        (s, renewer.join().unwrap_or(false))
                    });
                    let started_service = if renewals {
                        started_service
                    } else {
                        Err(anyhow::anyhow!("the lease was lost while starting"))
                    };
                    match started_service {
                        Ok(s) => {
                            match super::link::HallLink::open(nats, &options.hall, options.replicas)
                            {
                                Ok(l) => link = Some(l),
                                Err(e) => report(HubState::Problem(format!(
                                    "the link to other halls did not start: {e}"
                                ))),
                            }
                            if let Some(setup) = options.live.clone() {
                                match super::live::HubLive::start(nats, &options.hall, &id, setup) {
                                    Ok(mut l) => {
                                        if let Some(p) = l.open_data_problem.take() {
                                            report(HubState::Problem(p));
                                        }
                                        if let Some(p) = l.history_problem.take() {
                                            report(HubState::Problem(p));
                                        }
                                        live = Some(l);
                                    }
                                    Err(e) => report(HubState::Problem(format!(
                                        "the live layers did not start: {e}"
                                    ))),
                                }
                            }
                            let events = s.dispatcher.opened.events;
                            me.state = "active".into();
                            me.api = Some(s.api_url());
                            me.since_ms = now_ms();
                            report(HubState::Active {
                                id: id.clone(),
                                api: s.api_url(),
                                events,
                                took_ms: started.elapsed().as_secs_f64() * 1000.0,
                            });
                            // After `active`: a script that waits for it reads where
                            // the open data is next.
                            if let Some(addr) = live.as_ref().and_then(|l| l.open_data_addr()) {
                                report(HubState::OpenData {
                                    id: id.clone(),
                                    addr,
                                });
                            }
                            service = Some(s);
                            last_renewed = Instant::now();
                            last_announce = Instant::now() - ANNOUNCE_EVERY;
                        }
                        Err(e) => {
                            // Let another hub try, and wait before trying again (a
                            // start replays the whole log).
                            lease.release();
                            let text = format!("cannot start the service: {e:#}");
                            if last_problem.as_deref() != Some(text.as_str()) {
                                report(HubState::Problem(text.clone()));
                                last_problem = Some(text);
                            }
                            retry_at = Instant::now() + START_BACKOFF;
                        }
                    }
                }
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    if was_active {
                        service = None;
                        live = None;
                        link = None;
                        me.state = "standby".into();
                        me.api = None;
                        me.since_ms = now_ms();
                        report(HubState::LostLease { id: id.clone() });
                        said_standby = false;
                    }
                    if !said_standby {
                        said_standby = true;
                        report(HubState::Standby {
                            id: id.clone(),
                            active: lease.holder().ok().flatten(),
                        });
                    }
                }
                Err(e) => {
                    if last_problem.as_deref() != Some(e.as_str()) {
                        report(HubState::Problem(e.clone()));
                        last_problem = Some(e);
                    }
                    // Out of reach of the server for as long as the lease lasts: a
                    // standby may hold it by now, so this hub stops acting.
                    if was_active && last_renewed.elapsed() >= super::LEASE_TTL {
                        service = None;
                        live = None;
                        link = None;
                        lease.forget();
                        me.state = "standby".into();
                        me.api = None;
                        me.since_ms = now_ms();
                        report(HubState::LostLease { id: id.clone() });
                        said_standby = false;
                    }
                }
            }
        }
        if last_announce.elapsed() >= ANNOUNCE_EVERY {
            last_announce = Instant::now();
            me.last_seen_ms = now_ms();
            let _ = members.announce(&me);
        }
        if let Some(s) = service.as_ref() {
            // What the log's reader found wrong (a forged or garbled commit) is said
            // on the hub's output too, once.
            let alarm = s.dispatcher.alarm();
            if alarm.is_some() && alarm != last_alarm {
                report(HubState::Problem(format!(
                    "integrity alarm: {}",
                    alarm.as_deref().unwrap_or_default()
                )));
            }
            last_alarm = alarm;
        }
        if let Some(s) = service.as_mut() {
            while let Some(n) = s.notices.pop_front() {
                report(HubState::Problem(n));
            }
        }
        if let (Some(s), Some(l)) = (service.as_mut(), live.as_mut()) {
            let now = now_ms();
            let (alerts, problem) = l.pump(now);
            for alert in alerts {
                if let Err(e) = s.take_alert(&alert, now) {
                    report(HubState::Problem(format!("alert {}: {e}", alert.key)));
                }
            }
            if let Some(e) = problem.or_else(|| l.history_trouble())
                && last_problem.as_deref() != Some(e.as_str())
            {
                report(HubState::Problem(e.clone()));
                last_problem = Some(e);
            }
        }
        if let Some(s) = service.as_mut()
            && let Err(e) = s.pump(now_ms())
        {
            let text = format!("{e}");
            if last_problem.as_deref() != Some(text.as_str()) {
                report(HubState::Problem(text.clone()));
                last_problem = Some(text);
            }
        }
        // After the service's pump, so the link sees the book as the log has it
        // (an order cancelled at a desk a moment ago is not sent as new).
        if let (Some(s), Some(l)) = (service.as_mut(), link.as_mut()) {
            for problem in l.pump(nats, s, now_ms()) {
                if last_problem.as_deref() != Some(problem.as_str()) {
                    report(HubState::Problem(problem.clone()));
                    last_problem = Some(problem);
                }
            }
        }
        std::thread::sleep(PUMP_EVERY);
    }
    drop(link);
    drop(live);
    drop(service);
    if !options.crash_on_stop {
        lease.release();
        members.leave(&me);
    }
    Ok(())
}

fn start_service(nats: &Nats, options: &HubOptions) -> anyhow::Result<DispatchService> {
    let log = JetStreamLog::open(
        nats,
        &options.hall,
        &HallLogOptions {
            replicas: options.replicas,
            create: true,
        },
    )?;
    let dispatcher = Dispatcher::open_store(Box::new(log), options.config.clone())?;
    DispatchService::start(dispatcher, options.service.clone())
}
