//! Real HTTP on 127.0.0.1 (port 0): outbox, status API and simulator together.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::dispatch::OrderStatus;

/// An outbox policy for tests: short timeouts, millisecond backoff.
fn fast_config(request_timeout: Duration) -> OutboxConfig {
    OutboxConfig {
        connect_timeout: request_timeout,
        request_timeout,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
        jitter: 0.5,
        max_attempts: None,
        key_scope: String::new(),
    }
}

/// Answers every report as recorded (what the dispatch service does once it is
/// durable) and passes it on.
fn answering(reports: Receiver<ReportIn>) -> Receiver<StatusReport> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for r in reports {
            let status = r.report.status;
            let _ = tx.send(r.report.clone());
            r.answer(ReportOutcome::Recorded { status });
        }
    });
    rx
}

fn order_id(i: usize) -> String {
    format!("ORD-{i:06}")
}

fn outgoing(id: &str, department: &str, endpoint: &str, status_url: &str) -> OutgoingOrder {
    OutgoingOrder {
        order_id: id.to_string(),
        department: department.to_string(),
        endpoint: endpoint.to_string(),
        body: order_body(
            id,
            "INC-000001",
            department,
            "Close the road and stand by",
            1_700_000_600_000,
            1_700_000_000_000,
            status_url,
            json!({"kind": "fire", "position": [116.4, 39.9]}),
        ),
        urge: false,
        cancel: false,
        signing_key: Some(default_token(department)),
    }
}

/// Receives until `done` says so or `within` passes; returns all received.
fn collect<T>(rx: &Receiver<T>, within: Duration, mut done: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let until = Instant::now() + within;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Ok(x) = rx.recv_timeout(left.min(Duration::from_millis(50))) {
            seen.push(x);
        }
    }
    seen
}

fn delivered_ids(events: &[DeliveryEvent]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            DeliveryEvent::Delivered { order_id, .. } => Some(order_id.as_str()),
            _ => None,
        })
        .collect()
}

fn permanent_failures(events: &[DeliveryEvent]) -> Vec<&DeliveryEvent> {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                DeliveryEvent::Failed {
                    permanent: true,
                    ..
                } | DeliveryEvent::UrgeFailed {
                    permanent: true,
                    ..
                }
            )
        })
        .collect()
}

fn assert_unique(ids: &[&str], what: &str) {
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(*id), "{id} {what} twice");
    }
}

fn tiny_header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().trim().to_string())
}

/// A department server answering a fixed script (the last answer repeats) and
/// recording every request.
struct Script {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

#[derive(Clone, Debug)]
struct Seen {
    url: String,
    key: Option<String>,
    content_type: Option<String>,
    body: Value,
}

impl Script {
    fn start(answers: &[(u16, &str)]) -> Script {
        let typed: Vec<(u16, &str, &str)> = answers
            .iter()
            .map(|(s, b)| (*s, "application/json", *b))
            .collect();
        Self::start_typed(&typed)
    }

    /// Answers with a content type of their own: (status, content type, body).
    fn start_typed(answers: &[(u16, &str, &str)]) -> Script {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1");
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let answers: Vec<(u16, String, String)> = answers
            .iter()
            .map(|(s, t, b)| (*s, t.to_string(), b.to_string()))
            .collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = String::new();
                let _ = request.as_reader().read_to_string(&mut body);
                let mut seen = seen2.lock().unwrap();
                seen.push(Seen {
                    url: request.url().to_string(),
                    key: tiny_header(&request, "Idempotency-Key"),
                    content_type: tiny_header(&request, "Content-Type"),
                    body: serde_json::from_str(&body).unwrap_or(Value::Null),
                });
                let (status, content_type, text) =
                    answers[(seen.len() - 1).min(answers.len() - 1)].clone();
                drop(seen);
                // A redirect's body is where it points.
                let location = (300..400).contains(&status).then(|| text.clone());
                let mut response = tiny_http::Response::from_string(text).with_status_code(status);
                if let Some(l) = location {
                    response.add_header(tiny_http::Header::from_bytes("Location", l).unwrap());
                }
                if !content_type.is_empty() {
                    response.add_header(
                        tiny_http::Header::from_bytes("Content-Type", content_type).unwrap(),
                    );
                }
                let _ = request.respond(response);
            }
        });
        Script { base, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A department that accepts connections and never answers.
struct Hang {
    base: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Hang {
    fn start() -> Hang {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (accepted2, stop2) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted2.fetch_add(1, Ordering::Relaxed);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Hang {
            base,
            accepted,
            stop,
        }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const DEPARTMENTS: [&str; 4] = ["fire", "ems", "traffic_police", "power"];

#[test]
fn helpers_encode_urls_and_bodies() {
    assert_eq!(encode_segment("ORD-000042"), "ORD-000042");
    assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    assert_eq!(decode_segment("a%2Fb%20c").as_deref(), Some("a/b c"));
    assert_eq!(decode_segment("bad%2"), None);
    assert_eq!(
        status_url("http://10.0.0.5:7800/", "ORD-000042"),
        "http://10.0.0.5:7800/api/v1/orders/ORD-000042/status"
    );
    assert_eq!(
        path_segments("/api/v1/orders/a%2Fb/status?x=1"),
        Some(vec![
            "api".into(),
            "v1".into(),
            "orders".into(),
            "a/b".into(),
            "status".into()
        ])
    );
    let body = order_body(
        "ORD-1",
        "INC-1",
        "fire",
        "Go",
        60_000,
        0,
        "http://h/api/v1/orders/ORD-1/status",
        json!({"kind": "fire"}),
    );
    assert_eq!(body["status_url"], "http://h/api/v1/orders/ORD-1/status");
    assert_eq!(body["deadline"], "1970-01-01T00:01:00.000Z");
    assert_eq!(body["incident"]["kind"], "fire");
    assert_eq!(urge_body("ORD-1", 2, "Dispatcher Wu", None)["urge_seq"], 2);
    assert_eq!(default_token("traffic_police"), "demo-traffic-police");
}

#[test]
fn backoff_doubles_up_to_the_cap_with_jitter() {
    let c = OutboxConfig::default();
    assert_eq!(c.backoff(1, 0.0), Duration::from_millis(500));
    assert_eq!(c.backoff(2, 0.0), Duration::from_secs(1));
    assert_eq!(c.backoff(4, 0.0), Duration::from_secs(4));
    assert_eq!(c.backoff(40, 0.0), Duration::from_secs(30));
    // Jitter takes off at most half.
    let j = c.backoff(3, 0.999);
    assert!(
        j > Duration::from_millis(1000) && j < Duration::from_secs(2),
        "{j:?}"
    );
}

/// (a) Exactly once in effect: a flaky department (500s before recording, answers
/// held past the client timeout after recording) and an outbox restarted half way that
/// re-sends every order. Every order becomes exactly one job; every order is reported
/// Delivered by each outbox exactly once.
#[test]
fn flaky_department_and_restart_still_give_one_job_per_order() {
    let sim = DepartmentSim::start(
        "127.0.0.1:0",
        SimBehaviour {
            seed: 7,
            fail_rate: 0.3,
            slow_rate: 0.15,
            slow_s: 0.6,
            reject_rate: 0.0,
            ignore_rate: 1.0, // no status reports: this test is about delivery
            ..SimBehaviour::default()
        },
    )
    .unwrap();
    let departments = &DEPARTMENTS[..3];
    let orders: Vec<OutgoingOrder> = (1..=50)
        .map(|i| {
            let id = order_id(i);
            let d = departments[i % departments.len()];
            outgoing(
                &id,
                d,
                &sim.endpoint(d),
                &status_url("http://127.0.0.1:9", &id),
            )
        })
        .collect();
    let config = fast_config(Duration::from_millis(250));

    // First run: crash (drop the outbox) once some orders are in.
    let (outbox, rx) = Outbox::start(config.clone());
    for o in &orders {
        outbox.send(o.clone());
    }
    let first = collect(&rx, Duration::from_secs(20), |e| {
        delivered_ids(e).len() >= 20
    });
    drop(outbox);
    let first_ids = delivered_ids(&first);
    assert!(
        first_ids.len() >= 20,
        "first run delivered {}",
        first_ids.len()
    );
    assert_unique(&first_ids, "delivered in the first run");

    // Restart: the integrator re-sends every order (here even the delivered ones).
    let (outbox, rx) = Outbox::start(config);
    for o in &orders {
        outbox.send(o.clone());
    }
    let second = collect(&rx, Duration::from_secs(30), |e| {
        delivered_ids(e).len() >= 50
    });
    let second_ids = delivered_ids(&second);
    assert_eq!(second_ids.len(), 50, "second run delivered {second_ids:?}");
    assert_unique(&second_ids, "delivered in the second run");
    assert!(permanent_failures(&first).is_empty() && permanent_failures(&second).is_empty());
    assert!(
        second.iter().any(|e| matches!(
            e,
            DeliveryEvent::Failed {
                permanent: false,
                ..
            }
        )),
        "the flaky department should have made the outbox retry"
    );
    assert_eq!(outbox.pending(), 0);

    let stats = sim.stats();
    assert_eq!(stats.jobs, 50, "{stats:?}");
    assert!(stats.duplicates >= 20, "{stats:?}");
    assert!(
        stats.failed_on_purpose > 0 && stats.slow_on_purpose > 0,
        "{stats:?}"
    );
    let jobs = sim.jobs();
    let job_ids: Vec<&str> = jobs.iter().map(|j| j.order_id.as_str()).collect();
    assert_unique(&job_ids, "became a job");
    let by_id: HashMap<&str, &SimJob> = jobs.iter().map(|j| (j.order_id.as_str(), j)).collect();
    for o in &orders {
        let job = by_id
            .get(o.order_id.as_str())
            .expect("every order is a job");
        assert_eq!(job.department, o.department);
    }
    // A duplicate answers the same department reference as the first delivery.
    for e in &second {
        if let DeliveryEvent::Delivered {
            order_id,
            department_ref,
            attempts,
            ..
        } = e
        {
            assert!(*attempts >= 1);
            assert_eq!(
                department_ref.as_deref(),
                Some(by_id[order_id.as_str()].department_ref.as_str())
            );
        }
    }
}

/// (b) A 4xx other than 408/409/429 is permanent: reported once with the body text,
/// never retried.
#[test]
fn permanent_4xx_is_reported_with_its_text_and_not_retried() {
    let script = Script::start(&[(
        422,
        r#"{"error":"unknown_unit","message":"no such unit type: hovercraft"}"#,
    )]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    let endpoint = format!("{}/fire", script.base);
    let order = outgoing("ORD-000001", "fire", &endpoint, "http://127.0.0.1:9/s");
    outbox.send(order.clone());
    let events = collect(&rx, Duration::from_secs(5), |e| !e.is_empty());
    match events.as_slice() {
        [
            DeliveryEvent::Failed {
                order_id,
                attempts: 1,
                error,
                permanent: true,
            },
        ] => {
            assert_eq!(order_id, "ORD-000001");
            assert!(
                error.contains("422") && error.contains("no such unit type: hovercraft"),
                "{error}"
            );
        }
        other => panic!("expected one permanent failure, got {other:?}"),
    }
    // Backoff is 10 ms: a retry would have happened by now.
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.try_recv().is_err(), "nothing more is reported");
    let seen = script.seen();
    assert_eq!(seen.len(), 1, "not retried: {seen:?}");
    assert_eq!(seen[0].url, "/fire/orders");
    assert_eq!(seen[0].key.as_deref(), Some("ORD-000001"));
    assert!(
        seen[0]
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(seen[0].body, order.body);
    assert_eq!(outbox.pending(), 0);
}

#[test]
fn transient_answers_are_retried_and_409_counts_as_delivered() {
    let script = Script::start(&[
        (503, ""),
        (429, ""),
        (408, ""),
        (500, "database down"),
        (409, r#"{"department_ref":"FIRE-77"}"#),
    ]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    outbox.send(outgoing(
        "ORD-000002",
        "fire",
        &script.base,
        "http://127.0.0.1:9/s",
    ));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        !delivered_ids(e).is_empty()
    });
    let transient: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                DeliveryEvent::Failed {
                    permanent: false,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(transient.len(), 4, "{events:?}");
    assert!(
        matches!(&transient[3], DeliveryEvent::Failed { error, attempts: 4, .. } if error.contains("database down"))
    );
    assert!(matches!(
        events.last(),
        Some(DeliveryEvent::Delivered { attempts: 5, department_ref: Some(r), .. }) if r == "FIRE-77"
    ));
    let seen = script.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.key.as_deref() == Some("ORD-000002")));
}

#[test]
fn max_attempts_and_bad_endpoints_end_in_permanent_failures() {
    let script = Script::start(&[(503, "")]);
    let config = OutboxConfig {
        max_attempts: Some(3),
        ..fast_config(Duration::from_secs(2))
    };
    let (outbox, rx) = Outbox::start(config);
    outbox.send(outgoing(
        "ORD-000003",
        "ems",
        &script.base,
        "http://127.0.0.1:9/s",
    ));
    outbox.send(outgoing(
        "ORD-000004",
        "ems",
        "ftp://nowhere",
        "http://127.0.0.1:9/s",
    ));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        permanent_failures(e).len() >= 2
    });
    let permanent = permanent_failures(&events);
    assert_eq!(permanent.len(), 2, "{events:?}");
    assert!(permanent.iter().any(|e| matches!(e,
        DeliveryEvent::Failed { order_id, attempts: 3, error, .. }
            if order_id == "ORD-000003" && error.contains("gave up after 3 attempts"))));
    assert!(permanent.iter().any(|e| matches!(e,
        DeliveryEvent::Failed { order_id, attempts: 0, error, .. }
            if order_id == "ORD-000004" && error.contains("not an http(s) URL"))));
    assert_eq!(script.seen().len(), 3);
}

#[test]
fn urges_go_to_the_urge_url_with_numbered_keys() {
    let script = Script::start(&[(200, r#"{"department_ref":"EMS-1"}"#)]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    let endpoint = format!("{}/ems/", script.base);
    outbox.send(outgoing(
        "ORD-000005",
        "ems",
        &endpoint,
        "http://127.0.0.1:9/s",
    ));
    for body in [
        urge_body("ORD-000005", 0, "Dispatcher Wu", None),
        json!({"note": "second"}),
        urge_body("ORD-000005", 7, "Leader Sun", Some("now")),
    ] {
        outbox.send(OutgoingOrder {
            body,
            urge: true,
            ..outgoing("ORD-000005", "ems", &endpoint, "")
        });
    }
    let events = collect(&rx, Duration::from_secs(5), |e| e.len() >= 4);
    assert!(
        matches!(&events[0], DeliveryEvent::Delivered { department_ref: Some(r), .. } if r == "EMS-1")
    );
    let urged: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            DeliveryEvent::Urged { urge_seq, .. } => Some(*urge_seq),
            _ => None,
        })
        .collect();
    assert_eq!(urged, [1, 2, 7]);
    let seen = script.seen();
    assert_eq!(seen[0].url, "/ems/orders");
    let urls: Vec<_> = seen[1..].iter().map(|s| s.url.as_str()).collect();
    assert_eq!(urls, ["/ems/orders/ORD-000005/urge"; 3]);
    let keys: Vec<_> = seen[1..].iter().map(|s| s.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "ORD-000005:urge:1",
            "ORD-000005:urge:2",
            "ORD-000005:urge:7"
        ]
    );
}

/// (c) A department that never answers does not hold up another department.
#[test]
fn hanging_department_does_not_delay_others() {
    let hang = Hang::start();
    let sim = DepartmentSim::start(
        "127.0.0.1:0",
        SimBehaviour {
            fail_rate: 0.0,
            ignore_rate: 1.0,
            reject_rate: 0.0,
            ..SimBehaviour::default()
        },
    )
    .unwrap();
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(10)));
    let started = Instant::now();
    for i in 1..=3 {
        outbox.send(outgoing(
            &order_id(i),
            "drainage",
            &hang.base,
            "http://127.0.0.1:9/s",
        ));
    }
    for i in 11..=20 {
        outbox.send(outgoing(
            &order_id(i),
            "fire",
            &sim.endpoint("fire"),
            "http://127.0.0.1:9/s",
        ));
    }
    let events = collect(&rx, Duration::from_secs(3), |e| {
        delivered_ids(e).len() >= 10
    });
    let elapsed = started.elapsed();
    let ids = delivered_ids(&events);
    assert_eq!(ids.len(), 10, "{events:?}");
    assert!(ids.iter().all(|id| *id >= "ORD-000011"));
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    // The hanging department's first order is still in flight, nothing reported.
    let until = Instant::now() + Duration::from_secs(1);
    while hang.accepted.load(Ordering::Relaxed) == 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(hang.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(events.len(), 10, "{events:?}");
    assert_eq!(outbox.pending(), 3);
}

fn post_report(url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let client = crate::http::client();
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// (d) The status API authenticates, validates and passes reports on.
#[test]
fn status_api_accepts_good_reports_and_refuses_bad_ones() {
    let (api, reports) = StatusApi::start(
        "127.0.0.1:0",
        vec![
            DepartmentAuth {
                id: "fire".into(),
                token: "t-fire".into(),
            },
            DepartmentAuth {
                id: "ems".into(),
                token: "t-ems".into(),
            },
        ],
    )
    .unwrap();
    assert_ne!(api.addr().port(), 0);
    let url = api.status_url("ORD-000042");
    assert_eq!(
        url,
        format!("http://{}/api/v1/orders/ORD-000042/status", api.addr())
    );

    // The department is answered only once the report is recorded (here by hand).
    let posting = {
        let url = url.clone();
        std::thread::spawn(move || {
            post_report(
                &url,
                Some("t-ems"),
                r#"{"status":"acknowledged","by":"Wang Fang","note":"two ambulances","at":"2024-05-01T10:00:00Z"}"#,
            )
        })
    };
    let incoming = reports.recv_timeout(Duration::from_secs(2)).unwrap();
    let report = incoming.report.clone();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!posting.is_finished(), "answered before it was recorded");
    incoming.answer(ReportOutcome::Recorded {
        status: OrderStatus::Acknowledged,
    });
    let (status, body) = posting.join().unwrap();
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["department"], "ems");
    assert_eq!(
        report,
        StatusReport {
            order_id: "ORD-000042".into(),
            department: "ems".into(),
            status: OrderStatus::Acknowledged,
            by: "Wang Fang".into(),
            note: Some("two ambulances".into()),
            at_ms: 1_714_557_600_000,
            received_at_ms: report.received_at_ms,
        }
    );
    let posting = {
        let url = url.clone();
        std::thread::spawn(move || {
            post_report(
                &url,
                Some("t-fire"),
                r#"{"status":"in_progress","by":"Li Wei"}"#,
            )
        })
    };
    let incoming = reports.recv_timeout(Duration::from_secs(2)).unwrap();
    let report = incoming.report.clone();
    // A report the log refuses is a 409 with the reason, not a 202.
    incoming.answer(ReportOutcome::Refused {
        reason: "cannot StartOrder an order that is Done".into(),
    });
    let (status, answer) = posting.join().unwrap();
    assert_eq!(status, 409, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("Done"));
    assert_eq!(
        (report.department.as_str(), report.status),
        ("fire", OrderStatus::InProgress)
    );
    assert_eq!(report.note, None);
    assert!((report.at_ms - report.received_at_ms).abs() < 1000);

    let good = r#"{"status":"done","by":"Li Wei"}"#;
    let refused = [
        (None, good, 401, "unauthorized"),
        (Some("t-police"), good, 401, "unauthorized"),
        (Some("t-fire"), "{not json", 400, "bad_json"),
        (Some("t-fire"), "[1,2]", 400, "bad_json"),
        (
            Some("t-fire"),
            r#"{"status":"finished","by":"Li Wei"}"#,
            400,
            "unknown_status",
        ),
        (Some("t-fire"), r#"{"by":"Li Wei"}"#, 400, "missing_field"),
        (Some("t-fire"), r#"{"status":"done"}"#, 400, "missing_field"),
        (
            Some("t-fire"),
            r#"{"status":"done","by":"Li Wei","at":"yesterday"}"#,
            400,
            "bad_field",
        ),
        (
            Some("t-fire"),
            r#"{"status":5,"by":"Li Wei"}"#,
            400,
            "bad_field",
        ),
    ];
    for (token, body, want, error) in refused {
        let (status, answer) = post_report(&url, token, body);
        assert_eq!(
            (status, answer["error"].as_str()),
            (want, Some(error)),
            "{body}: {answer}"
        );
        assert!(answer["message"].is_string());
    }
    let (_, answer) = post_report(&url, Some("t-fire"), r#"{"status":"finished","by":"x"}"#);
    assert!(
        answer["message"].as_str().unwrap().contains("\"finished\""),
        "{answer}"
    );
    assert!(
        reports.try_recv().is_err(),
        "refused reports are not passed on"
    );

    let client = crate::http::client();
    let base = api.base_url();
    let get = |path: &str, token: Option<&str>| {
        let mut r = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(get("/api/v1/health", None), 200);
    assert_eq!(get("/api/v1/nothing", None), 404);
    assert_eq!(get("/api/v1/orders/ORD-000042/status", Some("t-fire")), 405);
    // Snapshots: only the order's own department sees it.
    api.publish(OrderSnapshot {
        order_id: "ORD-000042".into(),
        incident_id: "INC-000001".into(),
        department: "fire".into(),
        status: OrderStatus::Acknowledged,
        instruction: "Put it out".into(),
        deadline_ms: 1,
        issued_at_ms: 0,
        updated_at_ms: 1,
    });
    assert_eq!(get("/api/v1/orders/ORD-000042", None), 401);
    assert_eq!(get("/api/v1/orders/ORD-000042", Some("t-ems")), 404);
    assert_eq!(get("/api/v1/orders/ORD-000099", Some("t-fire")), 404);
    let snapshot: Value = client
        .get(format!("{base}/api/v1/orders/ORD-000042"))
        .bearer_auth("t-fire")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(snapshot["status"], "acknowledged");

    // Starting refuses shared or empty tokens.
    let twin = |id: &str, token: &str| DepartmentAuth {
        id: id.into(),
        token: token.into(),
    };
    assert!(StatusApi::start("127.0.0.1:0", vec![twin("a", "x"), twin("b", "x")]).is_err());
    assert!(StatusApi::start("127.0.0.1:0", vec![twin("a", " ")]).is_err());
}

#[test]
fn simulator_dedupes_by_key_and_validates() {
    let sim = DepartmentSim::start(
        "127.0.0.1:0",
        SimBehaviour {
            fail_rate: 0.0,
            ignore_rate: 1.0,
            reject_rate: 0.0,
            ..SimBehaviour::default()
        },
    )
    .unwrap();
    let client = crate::http::client();
    let body = outgoing("ORD-000001", "fire", "", "http://127.0.0.1:9/s").body;
    let now_s = crate::clock::unix_ms_now() / 1000;
    // Signed with the department named in the URL.
    let post = |url: String, key: Option<&str>, body: &Value| {
        let department = url.split('/').nth(3).unwrap_or("fire").to_string();
        let bytes = serde_json::to_vec(body).unwrap();
        let mut r = client
            .post(url)
            .header("Content-Type", "application/json")
            .header(
                SIGNATURE_HEADER,
                sign(
                    &default_token(&department),
                    now_s,
                    "POST",
                    key.unwrap_or(""),
                    &bytes,
                ),
            )
            .body(bytes);
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let orders = format!("{}/orders", sim.endpoint("fire"));
    let (s1, a1) = post(orders.clone(), Some("ORD-000001"), &body);
    let (s2, a2) = post(orders.clone(), Some("ORD-000001"), &body);
    assert_eq!((s1, s2), (201, 200));
    assert_eq!(a1["department_ref"], "FIRE-000001");
    assert_eq!(a1["department_ref"], a2["department_ref"]);
    // The same order id at another department is another job.
    let (s3, a3) = post(
        format!("{}/orders", sim.endpoint("ems")),
        Some("ORD-000001"),
        &body,
    );
    assert_eq!(
        (s3, a3["department_ref"].as_str()),
        (201, Some("EMS-000001"))
    );
    assert_eq!(post(orders.clone(), None, &body).0, 400);
    assert_eq!(post(orders.clone(), Some("ORD-9"), &body).0, 400);
    // Unsigned, or signed with another key, or signed over another body: refused.
    let bytes = serde_json::to_vec(&body).unwrap();
    for signature in [
        None,
        Some(sign("someone-else", now_s, "POST", "ORD-000077", &bytes)),
        Some(sign(
            &default_token("fire"),
            now_s,
            "POST",
            "ORD-000077",
            b"{}",
        )),
        Some(sign(
            &default_token("fire"),
            now_s - 3600,
            "POST",
            "ORD-000077",
            &bytes,
        )),
        // A signed request replayed under another key.
        Some(sign(
            &default_token("fire"),
            now_s,
            "POST",
            "ORD-000001",
            &bytes,
        )),
    ] {
        let mut r = client
            .post(&orders)
            .header("Idempotency-Key", "ORD-000077")
            .body(bytes.clone());
        if let Some(sig) = signature {
            r = r.header(SIGNATURE_HEADER, sig);
        }
        assert_eq!(r.send().unwrap().status().as_u16(), 401);
    }
    // The signed order replayed as a cancellation of it: refused, its key is an
    // order's, and under a cancellation's key the signature does not match.
    let cancel = format!("{}/orders/ORD-000001/cancel", sim.endpoint("fire"));
    assert_eq!(post(cancel.clone(), Some("ORD-000001"), &body).0, 400);
    let replayed = client
        .post(&cancel)
        .header("Idempotency-Key", "ORD-000001:cancel")
        .header(
            SIGNATURE_HEADER,
            sign(
                &default_token("fire"),
                now_s,
                "POST",
                "ORD-000001",
                &serde_json::to_vec(&body).unwrap(),
            ),
        )
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .unwrap();
    assert_eq!(replayed.status().as_u16(), 401);
    let urge = format!("{}/orders/ORD-000001/urge", sim.endpoint("fire"));
    assert_eq!(
        post(urge.clone(), Some("ORD-000001:urge:1"), &json!({})).0,
        200
    );
    assert_eq!(
        post(urge.clone(), Some("ORD-000001:urge:1"), &json!({})).0,
        200
    );
    let unknown = format!("{}/orders/ORD-404/urge", sim.endpoint("fire"));
    assert_eq!(post(unknown, Some("ORD-404:urge:1"), &json!({})).0, 404);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.jobs,
            stats.duplicates,
            stats.urges,
            stats.failed_on_purpose
        ),
        (2, 2, 1, 0),
        "{stats:?}"
    );
    assert_eq!(sim.jobs()[0].urges, 1);
    assert!(
        SimBehaviour {
            reject_rate: 0.7,
            ignore_rate: 0.7,
            ..SimBehaviour::default()
        }
        .validate()
        .is_err()
    );
}

/// (e) Outbox → simulator → status API: reports arrive in order, rejected and ignored
/// orders occur at about the configured rates, and an urge wakes an ignored order.
#[test]
fn end_to_end_orders_are_reported_back() {
    let tokens: HashMap<String, String> = DEPARTMENTS
        .iter()
        .map(|d| (d.to_string(), format!("token-{d}")))
        .collect();
    let (api, reports) = StatusApi::start(
        "127.0.0.1:0",
        tokens
            .iter()
            .map(|(id, token)| DepartmentAuth {
                id: id.clone(),
                token: token.clone(),
            })
            .collect(),
    )
    .unwrap();
    let reports = answering(reports);
    let sim = DepartmentSim::start(
        "127.0.0.1:0",
        SimBehaviour {
            seed: 11,
            fail_rate: 0.1,
            reject_rate: 0.2,
            ignore_rate: 0.2,
            ack_after_s: (1.0, 5.0),
            start_after_s: (1.0, 5.0),
            done_after_s: (1.0, 5.0),
            urged_ack_after_s: (1.0, 2.0),
            speedup: 20.0,
            tokens: tokens.clone(),
            report_to: api.base_url(),
            ..SimBehaviour::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let (outbox, deliveries) = Outbox::start(fast_config(Duration::from_secs(2)));
    let mut department_of = HashMap::new();
    for i in 1..=40 {
        let id = order_id(i);
        let d = DEPARTMENTS[i % DEPARTMENTS.len()];
        department_of.insert(id.clone(), d);
        outbox.send(OutgoingOrder {
            signing_key: Some(tokens[d].clone()),
            ..outgoing(&id, d, &sim.endpoint(d), &api.status_url(&id))
        });
    }
    let delivered = collect(&deliveries, Duration::from_secs(3), |e| {
        delivered_ids(e).len() >= 40
    });
    assert_eq!(delivered_ids(&delivered).len(), 40);

    let fates: HashMap<String, SimFate> = sim
        .jobs()
        .into_iter()
        .map(|j| (j.order_id, j.fate))
        .collect();
    assert_eq!(fates.len(), 40);
    let count = |f: SimFate| fates.values().filter(|x| **x == f).count();
    let (complete, rejected, ignored) = (
        count(SimFate::Complete),
        count(SimFate::Reject),
        count(SimFate::Ignore),
    );
    // 20 % of 40 is 8; allow for chance.
    assert!((3..=14).contains(&rejected), "rejected {rejected}");
    assert!((3..=14).contains(&ignored), "ignored {ignored}");
    let expected_reports = complete * 3 + rejected;
    let got = collect(&reports, Duration::from_secs(3), |r| {
        r.len() >= expected_reports
    });
    assert_eq!(got.len(), expected_reports, "reports {got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let mut by_order: HashMap<&str, Vec<&StatusReport>> = HashMap::new();
    for r in &got {
        assert_eq!(department_of[&r.order_id], r.department, "{r:?}");
        assert!(!r.by.is_empty());
        by_order.entry(r.order_id.as_str()).or_default().push(r);
    }
    for (id, fate) in &fates {
        let statuses: Vec<OrderStatus> = by_order
            .get(id.as_str())
            .map(|rs| rs.iter().map(|r| r.status).collect())
            .unwrap_or_default();
        match fate {
            SimFate::Complete => assert_eq!(
                statuses,
                [
                    OrderStatus::Acknowledged,
                    OrderStatus::InProgress,
                    OrderStatus::Done
                ],
                "{id}"
            ),
            SimFate::Reject => {
                assert_eq!(statuses, [OrderStatus::Rejected], "{id}");
                assert_eq!(
                    by_order[id.as_str()][0].note.as_deref(),
                    Some("no unit available")
                );
            }
            SimFate::Ignore => assert!(statuses.is_empty(), "{id}: {statuses:?}"),
        }
    }

    // Urging an ignored order gets it acknowledged soon after.
    let (ignored_id, _) = fates.iter().find(|(_, f)| **f == SimFate::Ignore).unwrap();
    let d = department_of[ignored_id];
    outbox.send(OutgoingOrder {
        body: urge_body(ignored_id, 1, "Dispatcher Wu", Some("deadline passed")),
        urge: true,
        signing_key: Some(tokens[d].clone()),
        ..outgoing(ignored_id, d, &sim.endpoint(d), "")
    });
    let urged = collect(&deliveries, Duration::from_secs(3), |e| {
        e.iter().any(|x| matches!(x, DeliveryEvent::Urged { .. }))
    });
    assert!(
        urged.iter().any(|x| matches!(x, DeliveryEvent::Urged { order_id, urge_seq: 1, .. } if order_id == ignored_id)),
        "{urged:?}"
    );
    let woke = collect(&reports, Duration::from_secs(2), |r| r.len() >= 3);
    let statuses: Vec<(&str, OrderStatus)> = woke
        .iter()
        .map(|r| (r.order_id.as_str(), r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            (ignored_id.as_str(), OrderStatus::Acknowledged),
            (ignored_id.as_str(), OrderStatus::InProgress),
            (ignored_id.as_str(), OrderStatus::Done),
        ]
    );
    // The simulator counts a report once it has Zhongshu's answer, just after the
    // report came out of the channel.
    let until = Instant::now() + Duration::from_secs(1);
    while sim.stats().reported as usize != expected_reports + 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = sim.stats();
    assert_eq!(stats.reported as usize, expected_reports + 3, "{stats:?}");
    assert_eq!(stats.report_failures, 0, "{stats:?}");
}

/// A 2xx that is not the department's JSON (a proxy's maintenance page) is not a
/// delivery: the order is tried again.
#[test]
fn a_2xx_html_page_is_not_a_delivery() {
    let script = Script::start_typed(&[
        (
            200,
            "text/html",
            "<html><body>Down for maintenance</body></html>",
        ),
        (201, "application/json", r#"{"department_ref":"FIRE-9"}"#),
    ]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    outbox.send(outgoing(
        "ORD-000010",
        "fire",
        &script.base,
        "http://127.0.0.1:9/s",
    ));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        !delivered_ids(e).is_empty()
    });
    assert!(
        matches!(&events[0], DeliveryEvent::Failed { permanent: false, error, .. } if error.contains("text/html")),
        "{events:?}"
    );
    assert!(
        matches!(
            events.last(),
            Some(DeliveryEvent::Delivered { attempts: 2, .. })
        ),
        "{events:?}"
    );
}

/// 307 and 308 keep the method and body and are followed on the same host; a 301 (which
/// would turn the POST into a GET) is a clear permanent failure naming the new place.
#[test]
fn redirects_are_followed_only_when_they_keep_the_order() {
    let script = Script::start_typed(&[
        (308, "", "/v2/orders"),
        (201, "application/json", r#"{"department_ref":"EMS-3"}"#),
    ]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    outbox.send(outgoing(
        "ORD-000011",
        "ems",
        &script.base,
        "http://127.0.0.1:9/s",
    ));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        !delivered_ids(e).is_empty()
    });
    assert!(
        matches!(
            events.last(),
            Some(DeliveryEvent::Delivered { attempts: 1, .. })
        ),
        "{events:?}"
    );
    let seen = script.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].url, "/v2/orders");
    assert_eq!(seen[1].body["order_id"], "ORD-000011");

    let moved = Script::start_typed(&[(301, "", "http://elsewhere.invalid/orders")]);
    outbox.send(outgoing(
        "ORD-000012",
        "ems",
        &moved.base,
        "http://127.0.0.1:9/s",
    ));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        !permanent_failures(e).is_empty()
    });
    let failure = permanent_failures(&events);
    assert!(
        matches!(failure[0], DeliveryEvent::Failed { error, .. } if error.contains("moved") && error.contains("elsewhere.invalid")),
        "{events:?}"
    );
    assert_eq!(moved.seen().len(), 1, "not retried, not followed");
}

/// An order withdrawn (escalated away, cancelled) is not delivered later: what is
/// queued for it is dropped, however long the department was down.
#[test]
fn withdrawn_orders_never_arrive_later() {
    let script = Script::start(&[(503, "")]);
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    outbox.send(outgoing(
        "ORD-000013",
        "fire",
        &script.base,
        "http://127.0.0.1:9/s",
    ));
    let _ = collect(&rx, Duration::from_secs(5), |e| e.len() >= 2);
    outbox.withdraw("ORD-000013");
    std::thread::sleep(Duration::from_millis(300));
    let attempts = script.seen().len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        script.seen().len(),
        attempts,
        "no attempt after the withdrawal"
    );
    assert_eq!(outbox.pending(), 0);
    // A cancellation of it still goes out.
    let ok = Script::start(&[(200, r#"{"status":"cancelled"}"#)]);
    outbox.send(OutgoingOrder {
        cancel: true,
        ..outgoing("ORD-000013", "fire", &ok.base, "")
    });
    let events = collect(&rx, Duration::from_secs(5), |e| {
        e.iter()
            .any(|x| matches!(x, DeliveryEvent::Withdrawn { .. }))
    });
    // Reported as a withdrawal, never as a delivery of the order.
    assert!(delivered_ids(&events).is_empty(), "{events:?}");
    let seen = ok.seen();
    assert_eq!(seen[0].url, "/orders/ORD-000013/cancel");
    assert_eq!(seen[0].key.as_deref(), Some("ORD-000013:cancel"));
}

/// One request must not take a server down: the status API and the department
/// simulator under huge bodies, huge headers and slow clients.
#[test]
fn the_status_api_and_the_simulator_survive_hostile_clients() {
    let (api, _reports) = StatusApi::start(
        "127.0.0.1:0",
        vec![DepartmentAuth {
            id: "fire".into(),
            token: "t-fire".into(),
        }],
    )
    .unwrap();
    crate::http::attack::survives(
        api.addr(),
        "/api/v1/orders/ORD-000001/status",
        "/api/v1/health",
        200,
    );
    let sim = DepartmentSim::start("127.0.0.1:0", SimBehaviour::default()).unwrap();
    crate::http::attack::survives(sim.addr(), "/fire/orders", "/health", 200);
}

/// A flood of bad requests (wrong and missing tokens, garbage, oversized, slow) from
/// five threads, on the same address as the department: its reports are all
/// answered 202 within a bound and all reach the service; the flood is counted.
#[test]
fn a_departments_reports_land_while_the_status_api_is_flooded() {
    let (api, reports) = StatusApi::start(
        "127.0.0.1:0",
        vec![DepartmentAuth {
            id: "fire".into(),
            token: "fire-token-0123456789".into(),
        }],
    )
    .unwrap();
    let reports = answering(reports);
    let client = crate::http::client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let path = "/api/v1/orders/ORD-000001/status";
    let seen = crate::http::attack::good_requests_land_under_flood(
        api.addr(),
        path,
        &[None],
        &["401"],
        40,
        Duration::from_secs(5),
        |i| {
            let answer = client
                .post(api.status_url(&order_id(i + 1)))
                .bearer_auth("fire-token-0123456789")
                .json(&json!({"status": "acknowledged", "by": "Chen"}))
                .send()
                .map_err(|e| e.to_string())?;
            match answer.status().as_u16() {
                202 => Ok(()),
                s => Err(format!("{s}: {}", answer.text().unwrap_or_default())),
            }
        },
    );
    let landed: HashSet<String> = (0..40)
        .filter_map(|_| reports.recv_timeout(Duration::from_secs(2)).ok())
        .map(|r| r.order_id)
        .collect();
    assert_eq!(landed.len(), 40);
    // Every kind of refusal is counted where the service reads it.
    let refused = api.refused();
    for why in ["unauthorized", "too_large", "bad_request"] {
        assert!(
            refused.get(why).is_some_and(|n| *n > 0),
            "{why}: {refused:?} after {seen:?}"
        );
    }
}

/// One department's token over its rate hears 429 with `Retry-After`; another
/// department's reports, at the same moment, are all taken.
#[test]
fn a_token_over_its_rate_waits_while_another_departments_reports_land() {
    let (api, reports) = StatusApi::start_with(
        "127.0.0.1:0",
        vec![
            DepartmentAuth {
                id: "fire".into(),
                token: "t-fire".into(),
            },
            DepartmentAuth {
                id: "ems".into(),
                token: "t-ems".into(),
            },
        ],
        StatusApiOptions {
            rate: crate::http::Rate {
                per_s: 1.0,
                burst: 10,
            },
            ..Default::default()
        },
    )
    .unwrap();
    let reports = answering(reports);
    let client = crate::http::client();
    let post = |token: &str, i: usize| {
        let answer = client
            .post(api.status_url(&order_id(i)))
            .bearer_auth(token)
            .json(&json!({"status": "acknowledged", "by": "Chen"}))
            .send()
            .unwrap();
        let retry = answer
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        (answer.status().as_u16(), retry)
    };
    let fire: Vec<_> = (1..=30).map(|i| post("t-fire", i)).collect();
    let limited = fire.iter().filter(|(s, _)| *s == 429).count();
    assert!(limited >= 15, "{fire:?}");
    assert!(
        fire.iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, retry)| retry.as_deref() == Some("1")),
        "{fire:?}"
    );
    for i in 100..110 {
        assert_eq!(post("t-ems", i), (202, None));
    }
    let taken: Vec<StatusReport> = reports.try_iter().collect();
    let ems = taken.iter().filter(|r| r.department == "ems").count();
    assert_eq!(ems, 10);
    assert_eq!(taken.len(), 10 + 30 - limited);
    assert_eq!(api.refused().get("rate_limited"), Some(&(limited as u64)));
}

/// The simulator reports to the configured API only: an order naming another
/// `status_url` does not receive the department's token.
#[test]
fn the_simulator_reports_only_to_the_configured_api() {
    let (api, reports) = StatusApi::start(
        "127.0.0.1:0",
        vec![DepartmentAuth {
            id: "fire".into(),
            token: default_token("fire"),
        }],
    )
    .unwrap();
    let reports = answering(reports);
    // A listener standing for an attacker's port.
    let thief = Script::start(&[(202, "{}")]);
    let sim = DepartmentSim::start(
        "127.0.0.1:0",
        SimBehaviour {
            fail_rate: 0.0,
            reject_rate: 0.0,
            ignore_rate: 0.0,
            speedup: 100.0,
            report_to: api.base_url(),
            ..SimBehaviour::default()
        },
    )
    .unwrap();
    let (outbox, deliveries) = Outbox::start(fast_config(Duration::from_secs(2)));
    let stolen_url = format!("{}/api/v1/orders/ORD-000001/status", thief.base);
    outbox.send(outgoing(
        "ORD-000001",
        "fire",
        &sim.endpoint("fire"),
        &stolen_url,
    ));
    let _ = collect(&deliveries, Duration::from_secs(3), |e| {
        !delivered_ids(e).is_empty()
    });
    let got = collect(&reports, Duration::from_secs(5), |r| !r.is_empty());
    assert_eq!(got[0].order_id, "ORD-000001");
    assert!(thief.seen().is_empty(), "{:?}", thief.seen());
}

/// An endpoint's credentials never reach an error (which goes into the log).
#[test]
fn credentials_in_an_endpoint_never_reach_an_error() {
    let script = Script::start(&[(404, r#"{"error":"no such department"}"#)]);
    let endpoint =
        script.base.replacen("http://", "http://user:pa55word@", 1) + "/intake?apikey=s3cret";
    let (outbox, rx) = Outbox::start(fast_config(Duration::from_secs(2)));
    outbox.send(outgoing("ORD-000020", "fire", &endpoint, ""));
    let events = collect(&rx, Duration::from_secs(5), |e| {
        !permanent_failures(e).is_empty()
    });
    let text = format!("{events:?}");
    assert!(text.contains("404"), "{text}");
    assert!(
        !text.contains("pa55word") && !text.contains("s3cret"),
        "{text}"
    );
}
