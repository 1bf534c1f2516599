//! Dispatch on a hall's shared log (NATS JetStream, a real `nats-server` started by
//! the tests): several consoles, one truth.

use std::time::Duration;

use super::book::{Actor, Command, NewIncident, NewOrder, Severity};
use super::config::DispatchConfig;
use super::dispatcher::{DispatchError, Dispatcher};
use super::{Action, IncidentStatus, Role};
use crate::feeds::Domain;
use crate::nats::testing::NatsServer;
use crate::nats::{Nats, NatsOptions};
use crate::store::jetstream::{HallLogOptions, JetStreamLog};

const T0: i64 = 1_795_946_400_000;

fn connect(server: &NatsServer, name: &str) -> Nats {
    server.connect(name)
}

fn console(server: &NatsServer, hall: &str, name: &str) -> Dispatcher {
    let nats = connect(server, name);
    let log = JetStreamLog::open(&nats, hall, &HallLogOptions::default()).expect("open the hall");
    Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).expect("replay")
}

fn incident(title: &str) -> Command {
    Command::ReportIncident(NewIncident {
        kind: "gasLeak".into(),
        title: title.into(),
        domain: Domain::Utilities,
        severity: Severity::Severe,
        lon: 121.47,
        lat: 31.23,
        source: "desk".into(),
        key: None,
    })
}

#[test]
fn an_order_issued_at_one_desk_is_on_the_other_and_a_new_console_rebuilds_it() {
    let server = NatsServer::start("two-desks");
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let mut a = console(&server, "city", "desk-a");
    let mut b = console(&server, "city", "desk-b");
    a.execute(&incident("Gas smell at the market"), &li, T0)
        .unwrap();
    a.execute(
        &Command::IssueOrders {
            incident: "INC-000001".into(),
            orders: vec![NewOrder {
                department: "water".into(),
                instruction: "Isolate the main".into(),
                deadline_ms: T0 + 600_000,
            }],
        },
        &li,
        T0 + 1,
    )
    .unwrap();
    // Desk B follows without waiting on the network: within a moment it has the
    // report, and the order with the verification and dispatch it implies.
    let mut taken = 0;
    for _ in 0..200 {
        taken += b.sync().unwrap();
        if taken >= 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.book().incidents, a.book().incidents);
    assert_eq!(b.book().orders, a.book().orders);
    let foreign = b.take_foreign();
    assert_eq!(foreign.len(), 4, "{foreign:?}");
    assert_eq!(foreign[0].operator, "li.wei");
    // A console joining later builds the same book from the stream, and the chain
    // it reads verifies exactly as the embedded log's does.
    let c = console(&server, "city", "desk-c");
    assert_eq!(c.opened.events, 4);
    assert_eq!(c.book().orders, a.book().orders);
    let report = c.log().verify().unwrap();
    assert!(report.chain_ok, "{report:?}");
    assert_eq!(report.events, 4);
    assert_eq!(c.log().log_id(), a.log().log_id());
    // Another hall on the same server is another log.
    let other = console(&server, "district-1", "desk-d");
    assert_eq!(other.opened.events, 0);
    assert_ne!(other.log().log_id(), a.log().log_id());
}

#[test]
fn a_console_behind_the_hall_catches_up_and_is_refused_naming_who_acted_first() {
    let server = NatsServer::start("behind");
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let wang = Actor::new("wang.fang", Role::Dispatcher, None);
    let mut a = console(&server, "city", "desk-a");
    a.execute(&incident("Burst main"), &li, T0).unwrap();
    let mut b = console(&server, "city", "desk-b");
    let verify = Command::Incident {
        id: "INC-000001".into(),
        action: Action::VerifyIncident,
        note: None,
    };
    // A verifies; B, which has not looked since, tries the same.
    a.execute(&verify, &li, T0 + 10).unwrap();
    let err = b.execute(&verify, &wang, T0 + 11).unwrap_err();
    match &err {
        DispatchError::Overtaken { by, .. } => assert_eq!(by, "li.wei"),
        other => panic!("expected a refusal naming li.wei, got {other:?}"),
    }
    assert!(err.to_string().contains("li.wei acted first"), "{err}");
    // B caught up on the way: it shows A's verification, and its own next command
    // (one that is still valid) goes through on the first try.
    assert_eq!(
        b.book().incidents[0].status,
        IncidentStatus::Verified,
        "B shows the state it lost to"
    );
    b.execute(&incident("Second report"), &wang, T0 + 12)
        .unwrap();
    // A command that is still valid after catching up is written, not refused:
    // A is now behind (B reported an incident) and its note goes in after it.
    a.execute(
        &Command::Note {
            incident: "INC-000001".into(),
            text: "crew on the way".into(),
        },
        &li,
        T0 + 13,
    )
    .unwrap();
    assert_eq!(a.book().incidents.len(), 2, "A caught up on B's incident");
    assert_eq!(a.book().incidents[1].id, "INC-000002");
    assert!(a.log().verify().unwrap().chain_ok);
    assert_eq!(a.log().len(), 4);
}

#[test]
fn four_consoles_racing_500_commands_each_end_with_one_truth() {
    const CONSOLES: usize = 4;
    const COMMANDS: usize = 500;
    const SHARED: usize = COMMANDS / 4 + 1;
    // Incidents 1..=SHARED take notes and orders (orders verify and dispatch their
    // incident); the next SHARED are raced on for verification.
    let server = NatsServer::start("race");
    let names = ["li.wei", "wang.fang", "zhao.min", "chen.jun"];
    {
        // The shared incidents everyone will race on.
        let mut setup = console(&server, "city", "setup");
        let duty = Actor::new("duty", Role::Dispatcher, None);
        for n in 0..2 * SHARED {
            setup
                .execute(&incident(&format!("shared #{n}")), &duty, T0)
                .unwrap();
        }
    }
    #[derive(Default, Debug)]
    struct Outcome {
        acked: Vec<String>,
        /// (incident, who the refusal says acted first; empty for a plain refusal)
        refused: Vec<(String, String)>,
        book: Option<(Vec<super::book::Incident>, Vec<super::book::Order>)>,
    }
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|&name| {
                let server = &server;
                scope.spawn(move || {
                    let mut d = console(server, "city", name);
                    let me = Actor::new(name, Role::Dispatcher, None);
                    let mut out = Outcome::default();
                    for k in 0..COMMANDS {
                        let shared = if k % 4 == 3 {
                            format!("INC-{:06}", SHARED + k / 4 + 1)
                        } else {
                            format!("INC-{:06}", k / 4 + 1)
                        };
                        let marker = format!("{name}#{k}");
                        let cmd = match k % 4 {
                            0 => incident(&marker),
                            1 => Command::Note {
                                incident: shared.clone(),
                                text: marker.clone(),
                            },
                            2 => Command::IssueOrders {
                                incident: shared.clone(),
                                orders: vec![NewOrder {
                                    department: "water".into(),
                                    instruction: marker.clone(),
                                    deadline_ms: T0 + 3_600_000,
                                }],
                            },
                            _ => Command::Incident {
                                id: shared.clone(),
                                action: Action::VerifyIncident,
                                note: Some(marker.clone()),
                            },
                        };
                        match d.execute(&cmd, &me, T0 + k as i64) {
                            Ok(_) => out.acked.push(marker),
                            Err(DispatchError::Overtaken { by, .. }) => {
                                assert_eq!(k % 4, 3, "only a verification can lose a race");
                                out.refused.push((shared, by))
                            }
                            Err(DispatchError::Refused(e)) => {
                                panic!("{marker}: a refusal that names nobody: {e}")
                            }
                            Err(e) => panic!("{marker}: {e}"),
                        }
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Everyone catches up with the hall, then all show the same state.
    let mut consoles: Vec<Dispatcher> = names
        .iter()
        .map(|n| console(&server, "city", &format!("{n}-after")))
        .collect();
    let mut outcomes = outcomes;
    for (o, d) in outcomes.iter_mut().zip(consoles.iter_mut()) {
        o.book = Some((d.book().incidents.clone(), d.book().orders.clone()));
    }
    let first = outcomes[0].book.clone().unwrap();
    for o in &outcomes[1..] {
        assert!(
            o.book.as_ref().unwrap() == &first,
            "every console shows the same book"
        );
    }
    let (incidents, orders) = first;
    // Every acknowledged command is in the log exactly once.
    let log = &consoles[0];
    let mut payloads: Vec<String> = Vec::new();
    log.log()
        .scan_replay(&mut |_, _, _, p| payloads.push(p.to_string()))
        .unwrap();
    let acked: usize = outcomes.iter().map(|o| o.acked.len()).sum();
    assert!(
        acked >= CONSOLES * COMMANDS * 3 / 4,
        "reports, notes and orders all land"
    );
    for o in &outcomes {
        for marker in &o.acked {
            let needle = format!("\"{marker}\"");
            let n = payloads.iter().filter(|p| p.contains(&needle)).count();
            assert_eq!(n, 1, "{marker} is in the log {n} times");
        }
    }
    // Nothing is in the log that was not acknowledged.
    let step = |m: &String| m.split('#').nth(1).unwrap().parse::<usize>().unwrap() % 4;
    let acked_reports = outcomes
        .iter()
        .flat_map(|o| o.acked.iter())
        .filter(|m| step(m) == 0)
        .count();
    assert_eq!(incidents.len(), 2 * SHARED + acked_reports);
    assert_eq!(
        orders.len(),
        outcomes
            .iter()
            .flat_map(|o| o.acked.iter())
            .filter(|m| step(m) == 2)
            .count()
    );
    // Each shared incident was verified exactly once; every refusal names the one
    // who verified it (or the console already showed it verified).
    for inc in incidents.iter().take(2 * SHARED) {
        let verifications: Vec<_> = inc
            .timeline
            .iter()
            .filter(|t| t.text.to_lowercase().contains("verif"))
            .collect();
        assert!(verifications.len() <= 1, "{}: {verifications:?}", inc.id);
    }
    let mut refusals = 0;
    for o in &outcomes {
        for (id, by) in &o.refused {
            refusals += 1;
            let inc = incidents.iter().find(|i| &i.id == id).unwrap();
            assert_ne!(
                inc.status,
                IncidentStatus::Reported,
                "{id} was verified by someone"
            );
            if !by.is_empty() {
                let verifier = inc
                    .timeline
                    .iter()
                    .find(|t| t.text.to_lowercase().contains("verif"))
                    .map(|t| t.who.to_string())
                    .unwrap_or_default();
                assert!(
                    by.split(", ").any(|b| b == verifier),
                    "{id}: refusal says {by:?} acted first; {verifier} verified it"
                );
            }
        }
    }
    assert_eq!(
        refusals + acked,
        CONSOLES * COMMANDS,
        "every command was either written or refused"
    );
    eprintln!("{acked} written, {refusals} refused naming who acted first");
    assert!(refusals > 0, "the consoles did race");
    let report = log.log().verify().unwrap();
    assert!(report.chain_ok, "{report:?}");
    assert_eq!(report.events as usize, payloads.len());
}

#[test]
fn with_the_server_down_commands_are_refused_clearly_and_work_resumes_after() {
    let mut server = NatsServer::start("restart");
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let mut a = console(&server, "city", "desk-a");
    let mut b = console(&server, "city", "desk-b");
    a.execute(&incident("one"), &li, T0).unwrap();
    server.kill();
    let started = std::time::Instant::now();
    // The client notices the connection is gone; nothing is written meanwhile.
    let err = a
        .execute(&incident("two"), &li, T0 + 1)
        .expect_err("written with the server down");
    assert!(matches!(err, DispatchError::Store(_)), "{err:?}");
    assert!(err.to_string().contains("hall city"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "refused promptly"
    );
    assert_eq!(
        a.book().incidents.len(),
        1,
        "nothing is shown that is not stored"
    );
    server.restart();
    // Once reconnected, commands go through again.
    let started = std::time::Instant::now();
    loop {
        match a.execute(&incident("three"), &li, T0 + 2) {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("still failing after the restart: {e}"),
        }
    }
    // B's follower picks up after the restart.
    let started = std::time::Instant::now();
    while b.book().incidents.len() < 2 && started.elapsed() < Duration::from_secs(30) {
        b.sync().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(b.book().incidents.len(), 2);
    // The refused command was not queued: it never lands later.
    std::thread::sleep(Duration::from_millis(500));
    let c = console(&server, "city", "desk-c");
    let titles: Vec<_> = c.book().incidents.iter().map(|i| i.title.clone()).collect();
    assert_eq!(titles, ["one", "three"]);
    assert!(c.log().verify().unwrap().chain_ok);
}

#[test]
fn a_node_of_a_3_node_cluster_dies_and_no_acknowledged_event_is_lost() {
    use crate::nats::testing::NatsCluster;
    let mut cluster = NatsCluster::start("trio");
    let url = cluster.url();
    let open = || {
        let nats = Nats::connect(&NatsOptions {
            url: url.clone(),
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        })
        .expect("connect to the cluster");
        // The cluster elects its JetStream leader first: the hall's stream can be
        // created (with 3 replicas) once it has.
        let started = std::time::Instant::now();
        loop {
            match JetStreamLog::open(
                &nats,
                "city",
                &HallLogOptions {
                    replicas: 3,
                    create: true,
                },
            ) {
                Ok(log) => {
                    break Dispatcher::open_store(Box::new(log), DispatchConfig::default_config())
                        .unwrap();
                }
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => panic!("no hall on the cluster: {e}"),
            }
        }
    };
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let mut desk = open();
    let mut acked: Vec<String> = Vec::new();
    let mut unsure: Vec<String> = Vec::new();
    let write =
        |desk: &mut Dispatcher, k: usize, acked: &mut Vec<String>, unsure: &mut Vec<String>| {
            // A failed command is tried again as a new one, as a dispatcher would.
            for attempt in 0..100 {
                let marker = format!("cmd {k} try {attempt}");
                match desk.execute(&incident(&marker), &li, T0 + k as i64) {
                    Ok(_) => {
                        acked.push(marker);
                        return;
                    }
                    Err(_) => {
                        unsure.push(marker);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            panic!("command {k} never went through");
        };
    for k in 0..40 {
        write(&mut desk, k, &mut acked, &mut unsure);
    }
    // One node dies as a crash would; the two left keep a majority.
    cluster.nodes[0].kill();
    for k in 40..80 {
        write(&mut desk, k, &mut acked, &mut unsure);
    }
    // A console that joins now (through the nodes still up) has everything that was
    // acknowledged, once.
    let joined = open();
    let titles: Vec<String> = joined
        .book()
        .incidents
        .iter()
        .map(|i| i.title.clone())
        .collect();
    for m in &acked {
        assert_eq!(titles.iter().filter(|t| *t == m).count(), 1, "{m}");
    }
    for m in &unsure {
        assert!(titles.iter().filter(|t| *t == m).count() <= 1, "{m}");
    }
    assert_eq!(acked.len(), 80);
    assert!(joined.log().verify().unwrap().chain_ok);
}

#[test]
fn a_console_of_a_hall_never_delivers_or_runs_the_clock_the_hub_does() {
    use super::service::{DispatchService, ServiceOptions};
    let server = NatsServer::start("console-mode");
    // A department that records every POST it gets.
    let dept = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", dept.server_addr().to_ip().unwrap());
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let posts = posts.clone();
        std::thread::spawn(move || {
            for r in dept.incoming_requests() {
                posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let json =
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
                let _ = r.respond(tiny_http::Response::from_string("{}").with_header(json));
            }
        });
    }
    let config = DispatchConfig::parse(
        &format!(
            "[[department]]\nid = \"water\"\nname = \"Water\"\ndomain = \"utilities\"\nlevel = \"city\"\nendpoint = \"{base}/water\"\ntoken = \"demo-water-token\"\n"
        ),
        "test",
    )
    .unwrap();
    let open = |hall_console: bool| {
        let nats = connect(&server, "svc");
        let log = JetStreamLog::open(&nats, "city", &HallLogOptions::default()).unwrap();
        let d = Dispatcher::open_store(Box::new(log), config.clone()).unwrap();
        DispatchService::start(
            d,
            ServiceOptions {
                api_addr: "127.0.0.1:0".into(),
                hall_console,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let mut console = open(true);
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    console.execute(&incident("Burst main"), &li, T0).unwrap();
    console
        .execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![NewOrder {
                    department: "water".into(),
                    instruction: "Isolate".into(),
                    // Long past: a clock would mark it overdue at once.
                    deadline_ms: T0 + 1,
                }],
            },
            &li,
            T0,
        )
        .unwrap();
    let now = crate::clock::unix_ms_now();
    for _ in 0..20 {
        console.pump(now).unwrap();
        std::thread::sleep(Duration::from_millis(25));
    }
    assert_eq!(
        posts.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a console never delivers"
    );
    // Nor takes a department's report: the hub does.
    let url = super::delivery::status_url(&console.api_url(), "ORD-000001");
    let posting = std::thread::spawn(move || {
        crate::http::client()
            .post(url)
            .bearer_auth("demo-water-token")
            .header("Content-Type", "application/json")
            .body(r#"{"status":"acknowledged","by":"Wang Fang"}"#)
            .timeout(Duration::from_secs(10))
            .send()
            .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    });
    while !posting.is_finished() {
        console.pump(now).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, body) = posting.join().unwrap().unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("hub"), "{body}");
    assert_eq!(
        console.dispatcher.log().len(),
        4,
        "nor marks anything overdue"
    );
    // The hub delivers it, runs the clock, and the console follows both.
    let mut hub = open(false);
    let started = std::time::Instant::now();
    while (posts.load(std::sync::atomic::Ordering::SeqCst) == 0
        || console.dispatcher.book().orders[0].delivered_ms.is_none()
        || console.dispatcher.book().orders[0].overdue_ms.is_none())
        && started.elapsed() < Duration::from_secs(20)
    {
        let now = crate::clock::unix_ms_now();
        hub.pump(now).unwrap();
        console.pump(now).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(posts.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let order = &console.dispatcher.book().orders[0];
    assert!(order.delivered_ms.is_some(), "{order:?}");
    assert!(order.overdue_ms.is_some(), "the hub's clock: {order:?}");
}

/// Publishes straight onto the hall's subject, past every console's checks, a commit
/// by "mallory" under `role` that links to the log's head (a forger who read the log).
fn publish_chained(nats: &Nats, role: &str, kind: &str, payload: String, at_ms: i64) {
    use crate::store::jetstream::{WireCommit, WireEvent, subject};
    let probe = JetStreamLog::open(nats, "city", &HallLogOptions::default()).unwrap();
    crate::store::EventStore::scan_replay(&probe, &mut |_, _, _, _| {}).unwrap();
    let (events, head) = probe.head();
    let commit = WireCommit {
        v: 1,
        at_ms,
        operator: "mallory".into(),
        role: role.into(),
        first_seq: events + 1,
        prev_hash: head.clone(),
        events: vec![WireEvent {
            kind: kind.into(),
            hash: crate::store::event_hash(
                &head,
                events + 1,
                at_ms,
                "mallory",
                role,
                kind,
                &payload,
            ),
            payload,
        }],
    };
    let client = nats.client.clone();
    nats.rt
        .block_on(async {
            client
                .publish(subject("city"), serde_json::to_vec(&commit).unwrap().into())
                .await
                .unwrap();
            client.flush().await
        })
        .unwrap();
}

#[test]
fn a_forged_or_garbled_message_on_the_hall_log_is_not_taken_in_and_is_reported() {
    use crate::store::jetstream::{WireCommit, WireEvent, subject};
    let server = NatsServer::start("forged");
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let mut a = console(&server, "city", "desk-a");
    a.execute(&incident("one"), &li, T0).unwrap();
    // Someone with publish rights on the subject writes past the writers.
    let nats = connect(&server, "intruder");
    let forged = WireCommit {
        v: 1,
        at_ms: T0 + 5,
        operator: "mayor".into(),
        role: "leader".into(),
        first_seq: 2,
        // Characters of several bytes where a message cuts a hash short.
        prev_hash: "é".repeat(40),
        events: vec![WireEvent {
            kind: "incident_reported".into(),
            payload: serde_json::to_string(&super::book::Event::IncidentReported {
                id: "INC-000002".into(),
                incident: match incident("forged") {
                    Command::ReportIncident(n) => n,
                    _ => unreachable!(),
                },
            })
            .unwrap(),
            hash: "0".repeat(64),
        }],
    };
    let client = nats.client.clone();
    nats.rt
        .block_on(async {
            client
                .publish(subject("city"), b"not a commit".to_vec().into())
                .await
                .unwrap();
            client
                .publish(subject("city"), serde_json::to_vec(&forged).unwrap().into())
                .await
                .unwrap();
            client.flush().await
        })
        .unwrap();
    // A commit that links, under a role no console writes as.
    let payload = forged.events[0].payload.replace("forged", "forged too");
    publish_chained(&nats, "nobody", "incident_reported", payload, T0 + 6);
    // And one under a real role that may not write it: a liaison issuing an order
    // already past its deadline (a hub would deliver, urge and escalate it).
    let order = serde_json::to_string(&super::book::Event::OrderIssued {
        id: "ORD-000666".into(),
        incident: "INC-000001".into(),
        department: "fire".into(),
        instruction: "forged".into(),
        deadline_ms: T0,
        escalates: None,
        from: None,
    })
    .unwrap();
    publish_chained(&nats, "department_liaison", "order_issued", order, T0 + 7);
    // A console joining now shows none of them, and says the log has something wrong.
    let b = console(&server, "city", "desk-b");
    let titles: Vec<_> = b.book().incidents.iter().map(|i| i.title.clone()).collect();
    assert_eq!(titles, ["one"]);
    assert!(
        b.book().orders.is_empty(),
        "the forged order is not taken in"
    );
    assert_eq!(b.opened.not_permitted, 2);
    // A console that was there all along follows the same way.
    let mut followed = 0;
    for _ in 0..100 {
        followed += a.sync().unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = followed;
    assert!(a.book().orders.is_empty());
    assert!(a.alarm().is_some());
    let alarm = b.log().integrity_alarm().expect("an alarm");
    assert!(
        alarm.contains("unreadable") || alarm.contains("does not link"),
        "{alarm}"
    );
    // The hall goes on: the next command links to the last good event.
    a.execute(&incident("two"), &li, T0 + 10).unwrap();
    let c = console(&server, "city", "desk-c");
    let titles: Vec<_> = c.book().incidents.iter().map(|i| i.title.clone()).collect();
    assert_eq!(titles, ["one", "two"]);
    assert_eq!(c.book().incidents[1].id, "INC-000002");
    // The audit names the two that do not link.
    let report = c.log().verify().unwrap();
    assert!(!report.chain_ok);
    assert_eq!(report.events, 4);
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
}

#[test]
fn the_hub_acts_only_on_events_their_role_may_write() {
    use super::book::Event;
    let order = Event::OrderIssued {
        id: "ORD-000001".into(),
        incident: "INC-000001".into(),
        department: "water".into(),
        instruction: "Go".into(),
        deadline_ms: T0,
        escalates: None,
        from: None,
    };
    assert!(order.permitted_for(Role::Dispatcher));
    assert!(!order.permitted_for(Role::DepartmentLiaison));
    assert!(!order.permitted_for(Role::Leader));
    assert!(!order.permitted_for(Role::System), "only as an escalation");
    let escalation = Event::OrderIssued {
        id: "ORD-000002".into(),
        incident: "INC-000001".into(),
        department: "emergency".into(),
        instruction: "Go".into(),
        deadline_ms: T0,
        escalates: Some("ORD-000001".into()),
        from: None,
    };
    assert!(escalation.permitted_for(Role::System));
    let overdue = Event::OrderOverdue {
        id: "ORD-000001".into(),
    };
    assert!(overdue.permitted_for(Role::System));
    assert!(!overdue.permitted_for(Role::Dispatcher));
    let verified_by_order = Event::IncidentChanged {
        id: "INC-000001".into(),
        action: Action::VerifyIncident,
        status: IncidentStatus::Verified,
        note: None,
    };
    assert!(verified_by_order.permitted_for(Role::Dispatcher));
    assert!(!verified_by_order.permitted_for(Role::Leader));
}

#[test]
fn a_hall_over_tls_with_passwords_lets_each_server_user_do_only_what_it_may() {
    use crate::nats::NatsAuth;
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
    // TLS for clients; a desk user, and a wall user who may read the hall but not
    // publish to its log.
    let server = NatsServer::start_with(
        "tls-auth",
        &format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\nauthorization {{\n  users = [\n    {{ user: desk, password: \"desk#pass\" }}\n    {{ user: wall, password: \"wall-pass\", permissions: {{ publish: {{ deny: [\"zhongshu.*.log\"] }} }} }}\n  ]\n}}\n",
            tls.join("cert.pem"),
            tls.join("key.pem")
        ),
    );
    let url = format!("tls://127.0.0.1:{}", server.port);
    let dir = server.dir.clone();
    let auth = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        NatsAuth::load(Some(&path)).unwrap()
    };
    let ca = tls.join("cert.pem");
    let connect = |auth: NatsAuth| {
        Nats::connect(&NatsOptions {
            url: url.clone(),
            auth,
            name: Some("tls-test".into()),
            timeout: Some(Duration::from_secs(3)),
            ..Default::default()
        })
    };
    // The desk, with its password and the hall's CA from its credentials file.
    let desk = connect(auth(
        "desk.auth",
        format!("user = desk\npassword = desk#pass\nca = {}\n", ca.display()),
    ))
    .expect("the desk connects over TLS");
    let log = JetStreamLog::open(&desk, "secure", &HallLogOptions::default()).unwrap();
    let mut d = Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    d.execute(&incident("Gas smell at the depot"), &li, T0)
        .unwrap();

    // Without the CA the server's certificate is not trusted; a wrong password
    // is refused by the server; neither connects.
    let e = connect(auth(
        "no-ca.auth",
        "user = desk\npassword = desk#pass\n".into(),
    ))
    .err()
    .expect("an untrusted certificate is refused");
    assert!(e.contains(&url), "{e}");
    let e = connect(auth(
        "wrong.auth",
        format!("user = desk\npassword = guess\nca = {}\n", ca.display()),
    ))
    .err()
    .expect("a wrong password is refused");
    assert!(e.to_lowercase().contains("authori"), "{e}");

    // The wall reads the hall, but the server refuses its writes: the command
    // fails, and nothing is written.
    let wall = connect(auth(
        "wall.auth",
        format!("user = wall\npassword = wall-pass\nca = {}\n", ca.display()),
    ))
    .expect("the wall connects");
    let log = JetStreamLog::open(&wall, "secure", &HallLogOptions::default()).unwrap();
    let mut w = Dispatcher::open_store(Box::new(log), DispatchConfig::default_config()).unwrap();
    assert_eq!(w.book().incidents.len(), 1);
    let asked = std::time::Instant::now();
    let refused = w.execute(&incident("Forged report"), &li, T0 + 1);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the server's refusal ends the wait"
    );
    let why = refused.unwrap_err().to_string();
    assert!(
        why.contains("Permissions Violation") && why.contains("nothing was written"),
        "{why}"
    );
    std::thread::sleep(Duration::from_millis(300));
    d.sync().unwrap();
    assert_eq!(d.book().incidents.len(), 1);
    let report = d.log().verify().unwrap();
    assert!(report.chain_ok && report.events == 1, "{report:?}");
}
