//! A hall on NATS JetStream as operators' scripts use it: `bench orders` from several
//! processes at once, `audit verify` of the hall's stream, a writer killed mid-run.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use zhongshu::nats::testing::NatsServer;

use crate::zhongshu;

fn verify_hall(url: &str, hall: &str) -> (bool, serde_json::Value, String) {
    let out = zhongshu()
        .args(["audit", "verify", "--nats", url, "--hall", hall])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn several_bench_writers_on_one_hall_then_audit_verify() {
    let server = NatsServer::start("cli-bench");
    let url = server.url();
    let writers: Vec<_> = (0..3)
        .map(|_| {
            zhongshu()
                .args([
                    "bench", "orders", "--count", "15", "--nats", &url, "--hall", "city",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut committed: Vec<String> = Vec::new();
    let mut orders_reported = 0u64;
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        committed.extend(
            stdout
                .lines()
                .filter_map(|l| l.strip_prefix("committed "))
                .map(str::to_string),
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(summary["incidents"], 15);
        orders_reported += summary["orders"].as_u64().unwrap();
        assert!(
            summary["durability"]
                .as_str()
                .unwrap()
                .contains("JetStream")
        );
    }
    // Every acknowledged order is one order of the hall: no id given twice.
    let mut ids = committed.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), committed.len(), "an order id was given twice");
    assert_eq!(committed.len() as u64, orders_reported);
    let (ok, report, stderr) = verify_hall(&url, "city");
    assert!(ok, "{stderr}");
    assert_eq!(report["chain_ok"], true);
    assert_eq!(report["incidents"], 45);
    assert_eq!(report["orders"].as_u64().unwrap(), orders_reported);
    assert!(report["events"].as_u64().unwrap() > orders_reported);

    // The operating figures of the hall's stream count the same orders and incidents.
    let out = zhongshu()
        .args(["ops-report", "--nats", &url, "--hall", "city"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ops: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum = |list: &serde_json::Value, field: &str| -> u64 {
        let values: Vec<&serde_json::Value> = match list {
            serde_json::Value::Object(m) => m.values().collect(),
            serde_json::Value::Array(a) => a.iter().collect(),
            _ => Vec::new(),
        };
        values.iter().map(|v| v[field].as_u64().unwrap()).sum()
    };
    assert_eq!(sum(&ops["departments"], "orders"), orders_reported, "{ops}");
    assert_eq!(sum(&ops["incidents"], "count"), 45, "{ops}");
    assert_eq!(ops["events"], report["events"], "{ops}");
    assert_eq!(ops["not_permitted"], 0, "{ops}");
    assert!(ops["log"].as_str().unwrap().contains("city"), "{ops}");
    // One log at a time.
    let out = zhongshu()
        .args([
            "ops-report",
            "--nats",
            &url,
            "--hall",
            "city",
            "--db",
            "x.db",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give one log"));
}

#[test]
fn a_writer_killed_mid_run_loses_nothing_it_was_told_was_committed() {
    let server = NatsServer::start("cli-kill");
    let url = server.url();
    let mut child = zhongshu()
        .args([
            "bench", "orders", "--count", "100000", "--nats", &url, "--hall", "city",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut committed = Vec::new();
    let started = Instant::now();
    let mut line = String::new();
    while committed.len() < 60 && started.elapsed() < Duration::from_secs(60) {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(id) = line.trim().strip_prefix("committed ") {
            committed.push(id.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        committed.len() >= 60,
        "the writer committed {}",
        committed.len()
    );
    let (ok, report, stderr) = verify_hall(&url, "city");
    assert!(ok, "{stderr}");
    assert!(
        report["orders"].as_u64().unwrap() >= committed.len() as u64,
        "{report}: {} were acknowledged",
        committed.len()
    );
    // A new writer carries on after the killed one's last commit.
    let out = zhongshu()
        .args([
            "bench", "orders", "--count", "2", "--nats", &url, "--hall", "city",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, _, stderr) = verify_hall(&url, "city");
    assert!(ok, "{stderr}");
}

#[test]
fn wrong_hall_and_unreachable_server_are_clear_errors() {
    let server = NatsServer::start("cli-errors");
    let (ok, _, stderr) = verify_hall(&server.url(), "nowhere");
    assert!(!ok);
    assert!(stderr.contains("has no log"), "{stderr}");
    let (ok, _, stderr) = verify_hall(&server.url(), "bad.name");
    assert!(!ok);
    assert!(stderr.contains("hall name"), "{stderr}");
    // --hall without --nats is not quietly the local SQLite log.
    let dir = crate::scratch_dir("hall-without-nats");
    let out = zhongshu()
        .current_dir(&dir)
        .args(["bench", "orders", "--count", "1", "--hall", "city"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("go together"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("zhongshu-events.db").exists());
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let (ok, _, stderr) = verify_hall(&format!("nats://127.0.0.1:{free}"), "city");
    assert!(!ok);
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails promptly"
    );
}

/// Every POST a department received: (path, Idempotency-Key).
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A department's order intake over HTTP that records every POST.
fn department() -> (String, Received) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1");
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let key = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Idempotency-Key"))
                .map(|h| h.value.to_string())
                .unwrap_or_default();
            record
                .lock()
                .unwrap()
                .push((request.url().to_string(), key));
            let json = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
            let _ = request
                .respond(tiny_http::Response::from_string("{\"accepted\":true}").with_header(json));
        }
    });
    (base, seen)
}

/// A hub process whose stdout lines arrive on a channel.
fn hub(
    url: &str,
    api: &str,
    dispatch: &std::path::Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = zhongshu()
        .args([
            "hub",
            "--demo",
            "--nats",
            url,
            "--hall",
            "city",
            "--api",
            api,
            "--dispatch",
        ])
        .arg(dispatch)
        .arg("--history")
        .arg(dispatch.parent().unwrap().join("history"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, prefix: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(_) => panic!("no `{prefix}` line within {within:?}"),
        }
    }
}

#[test]
fn the_standby_hub_takes_over_and_every_order_reaches_the_department_once() {
    use zhongshu::dispatch::Role;
    use zhongshu::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
    use zhongshu::dispatch::config::DispatchConfig;
    use zhongshu::dispatch::dispatcher::Dispatcher;
    use zhongshu::store::jetstream::{HallLogOptions, JetStreamLog};

    let dir = crate::scratch_dir("hub-failover");
    let server = NatsServer::start("hub-failover");
    let url = server.url();
    let (dept, seen) = department();
    let config = format!(
        "[[department]]\nid = \"water\"\nname = \"Water\"\ndomain = \"utilities\"\nlevel = \"city\"\nendpoint = \"{dept}/water\"\ntoken = \"demo-water-token\"\n"
    );
    let dispatch = dir.join("dispatch.toml");
    std::fs::write(&dispatch, &config).unwrap();
    let api = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (mut a, a_lines) = hub(&url, &api, &dispatch);
    wait_line(&a_lines, "active ", Duration::from_secs(30));
    let (mut b, b_lines) = hub(&url, &api, &dispatch);
    wait_line(&b_lines, "standby ", Duration::from_secs(30));

    // A console of the hall issues orders; only the hub talks to departments.
    let nats = zhongshu::nats::Nats::connect(&zhongshu::nats::NatsOptions {
        url: url.clone(),
        ..Default::default()
    })
    .unwrap();
    let log = JetStreamLog::open(&nats, "city", &HallLogOptions::default()).unwrap();
    let config = DispatchConfig::parse(&config, "test").unwrap();
    let mut desk = Dispatcher::open_store(Box::new(log), config).unwrap();
    let li = Actor::new("li.wei", Role::Dispatcher, None);
    let now = || zhongshu::clock::unix_ms_now();
    let issue = |desk: &mut Dispatcher, n: usize| {
        let events = desk
            .execute(
                &Command::ReportIncident(NewIncident {
                    kind: "pipeBurst".into(),
                    title: format!("Burst main #{n}"),
                    domain: zhongshu::feeds::Domain::Utilities,
                    severity: Severity::Severe,
                    lon: 121.47,
                    lat: 31.23,
                    source: "desk".into(),
                    key: None,
                }),
                &li,
                now(),
            )
            .unwrap();
        let id = match &events[0] {
            zhongshu::dispatch::book::Event::IncidentReported { id, .. } => id.clone(),
            _ => unreachable!(),
        };
        desk.execute(
            &Command::IssueOrders {
                incident: id,
                orders: (0..2)
                    .map(|k| NewOrder {
                        department: "water".into(),
                        instruction: format!("Isolate section {k}"),
                        deadline_ms: now() + 3_600_000,
                    })
                    .collect(),
            },
            &li,
            now(),
        )
        .unwrap();
    };
    for n in 0..5 {
        issue(&mut desk, n);
    }
    // The active hub delivers them.
    let started = Instant::now();
    while seen.lock().unwrap().len() < 10 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.lock().unwrap().len() >= 10,
        "{:?}",
        seen.lock().unwrap()
    );
    // More orders, and the active hub dies at once.
    for n in 5..10 {
        issue(&mut desk, n);
    }
    a.kill().unwrap();
    a.wait().unwrap();
    let killed = Instant::now();
    wait_line(&b_lines, "active ", Duration::from_secs(15));
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "failover took {took:?}");
    for n in 10..12 {
        issue(&mut desk, n);
    }
    // Every order reaches the department, each under one idempotency key.
    let started = Instant::now();
    let orders = 24;
    loop {
        let seen = seen.lock().unwrap().clone();
        let mut keys: Vec<&String> = seen.iter().map(|(_, k)| k).collect();
        keys.sort();
        keys.dedup();
        if keys.len() >= orders || started.elapsed() > Duration::from_secs(30) {
            assert_eq!(keys.len(), orders, "every order delivered: {seen:?}");
            for (path, key) in &seen {
                let order = key.rsplit(':').next().unwrap();
                assert!(path.ends_with("/water/orders"), "{path}");
                assert!(
                    key.starts_with(desk.log().log_id()),
                    "one key per order across hubs: {key}"
                );
                assert!(order.starts_with("ORD-"), "{key}");
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The log records each delivery once.
    let started = Instant::now();
    while desk.book().orders.iter().any(|o| o.delivered_ms.is_none())
        && started.elapsed() < Duration::from_secs(20)
    {
        desk.sync().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(desk.book().orders.iter().all(|o| o.delivered_ms.is_some()));
    let mut deliveries = 0;
    desk.log()
        .scan_replay(&mut |_, _, _, p| {
            if p.contains("\"record_delivery\"") {
                deliveries += 1;
            }
        })
        .unwrap();
    assert_eq!(deliveries, orders, "one delivery recorded per order");
    assert!(desk.log().verify().unwrap().chain_ok);
    b.kill().unwrap();
    b.wait().unwrap();
}

/// `zhongshu hub --feeds F` polls the hall's feeds once, raises incidents from their
/// alerts on the hall's log, and `hall-status` shows its live layers.
#[test]
fn the_hub_polls_the_halls_feeds_and_hall_status_shows_its_live_layers() {
    let dir = crate::scratch_dir("hub-live");
    let server = NatsServer::start("hub-live");
    let url = server.url();
    let agency = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", agency.server_addr().to_ip().unwrap());
    let cap = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
    std::thread::spawn(move || {
        for request in agency.incoming_requests() {
            let file = if request.url().contains("nws") {
                "nws-flash-flood-watch-ugc.xml"
            } else {
                "kallio-building-fire.xml"
            };
            let body = std::fs::read(cap.join(file)).unwrap();
            let _ = request.respond(tiny_http::Response::from_data(body));
        }
    });
    let feeds = dir.join("feeds.toml");
    std::fs::write(
        &feeds,
        format!(
            "[[feed]]\nname = 'fire-alerts'\nkind = 'cap'\nurl = '{base}/fire.xml'\n\
             domain = 'safety'\ninterval_s = 0.5\n\n\
             [[feed]]\nname = 'nws'\nkind = 'cap'\nurl = '{base}/nws.xml'\n\
             domain = 'ecology'\ninterval_s = 0.5\n"
        ),
    )
    .unwrap();
    let mut hub = zhongshu()
        .args([
            "hub",
            "--demo",
            "--nats",
            &url,
            "--hall",
            "city",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--feeds")
        .arg(&feeds)
        .arg("--history")
        .arg(dir.join("hub-history"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = hub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    wait_line(&lines, "active ", Duration::from_secs(30));

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let out = zhongshu()
            .args(["hall-status", "--nats", &url, "--hall", "city"])
            .output()
            .unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let live = &status["live"];
        if live["entities_per_domain"]["safety"] == 1 && live["entities_per_domain"]["ecology"] == 1
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no live layers in hall-status: {status}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let feeds = status["live"]["feeds"].as_array().unwrap();
    let names: Vec<&str> = feeds.iter().map(|f| f["feed"].as_str().unwrap()).collect();
    assert_eq!(names, ["fire-alerts", "nws"]);
    assert!(feeds[0]["polls_ok"].as_u64().unwrap() >= 1, "{status}");
    assert!(feeds[0]["quarantined"].is_null(), "{status}");

    // Both alerts raised an incident in the hall's log, once each; the hub is the
    // only one polling.
    let nats = zhongshu::nats::Nats::connect(&zhongshu::nats::NatsOptions {
        url: url.clone(),
        ..Default::default()
    })
    .unwrap();
    let log = zhongshu::store::jetstream::JetStreamLog::open(
        &nats,
        "city",
        &zhongshu::store::jetstream::HallLogOptions::default(),
    )
    .unwrap();
    let mut book = zhongshu::dispatch::dispatcher::Dispatcher::open_store(
        Box::new(log),
        zhongshu::dispatch::config::DispatchConfig::default_config(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        book.sync().unwrap();
        let kinds: Vec<&str> = book
            .book()
            .incidents
            .iter()
            .map(|i| i.kind.as_str())
            .collect();
        if kinds.contains(&"building_fire") && kinds.contains(&"waterlogging") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "incidents in the hall: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    book.sync().unwrap();
    let fires = book
        .book()
        .incidents
        .iter()
        .filter(|i| i.kind == "building_fire")
        .count();
    assert_eq!(fires, 1);
    let flood = book
        .book()
        .incidents
        .iter()
        .find(|i| i.kind == "waterlogging")
        .unwrap();
    assert!(flood.title.contains("city-wide"), "{}", flood.title);

    // The hall's history, recorded by the hub: state-at on the hall (a machine that
    // never saw it live) gives both alerts and both incidents.
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        let out = zhongshu()
            .args(["state-at", "--nats", &url, "--hall", "city", "--at"])
            .arg(zhongshu::clock::unix_ms_now().to_string())
            .arg("--history")
            .arg(dir.join("console-history"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let state: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if state["entities"] == 2 {
            assert!(stderr.contains("the hall's history"), "{stderr}");
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the hall's history: {stderr} {state}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let names: Vec<&str> = state["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["feed"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fire-alerts", "nws"], "{state}");
    assert_eq!(
        state["dispatch"]["open_incidents"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{}",
        state["dispatch"]
    );
    assert!(
        dir.join("console-history/hall-city")
            .read_dir()
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".mcap"))
    );
    unsafe { libc::kill(hub.id() as i32, libc::SIGTERM) };
    let _ = hub.wait();
}

/// A hub's stdout lines on a channel.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn the_active_hub_serves_the_halls_open_data_and_the_standby_takes_it_over() {
    let dir = crate::scratch_dir("hub-open-data");
    let server = NatsServer::start("hub-open-data");
    let url = server.url();
    let agency = std::sync::Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", agency.server_addr().to_ip().unwrap());
    let cap = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
    std::thread::spawn(move || {
        for request in agency.incoming_requests() {
            let file = if request.url().contains("nws") {
                "nws-flash-flood-watch-ugc.xml"
            } else {
                "kallio-building-fire.xml"
            };
            let body = std::fs::read(cap.join(file)).unwrap();
            let _ = request.respond(tiny_http::Response::from_data(body));
        }
    });
    // The fire alerts are open, the weather service's restricted.
    let feeds = dir.join("feeds.toml");
    std::fs::write(
        &feeds,
        format!(
            "[[feed]]\nname = 'fire-alerts'\nkind = 'cap'\nurl = '{base}/fire.xml'\n\
             domain = 'safety'\ninterval_s = 0.5\nclassification = 'open'\n\n\
             [[feed]]\nname = 'nws'\nkind = 'cap'\nurl = '{base}/nws.xml'\n\
             domain = 'ecology'\ninterval_s = 0.5\nclassification = 'restricted'\n\n\
             [open_data]\ntitle = 'The hall open data'\n"
        ),
    )
    .unwrap();
    let keys = dir.join("keys.toml");
    let key = zhongshu::governance::open_data::keys::add_client(&keys, "press", None).unwrap();
    let log = dir.join("access.log");
    let start_hub = || {
        let mut child = zhongshu()
            .args([
                "hub",
                "--demo",
                "--nats",
                &url,
                "--hall",
                "city",
                "--api",
                "127.0.0.1:0",
                "--open-data",
                "127.0.0.1:0",
            ])
            .arg("--open-data-keys")
            .arg(&keys)
            .arg("--open-data-log")
            .arg(&log)
            .arg("--feeds")
            .arg(&feeds)
            .arg("--history")
            .arg(dir.join("history"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut child);
        (child, lines)
    };
    let client = zhongshu::http::client();
    // The open alerts as a client sees them, once the feeds have answered.
    let open_alerts = |catalog_url: &str| {
        let base = catalog_url.trim_end_matches("/catalog").to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got: serde_json::Value = client
                .get(format!("{base}/ngsi-ld/v1/entities?type=Alert"))
                .bearer_auth(&key)
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.json())
                .unwrap_or(serde_json::Value::Null);
            if got.as_array().is_some_and(|a| !a.is_empty()) {
                return (base, got);
            }
            assert!(Instant::now() < deadline, "no open alerts at {base}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    let (mut first, first_lines) = start_hub();
    wait_line(&first_lines, "active ", Duration::from_secs(30));
    let line = wait_line(&first_lines, "open-data ", Duration::from_secs(10));
    let catalog_url = line.split("url=").nth(1).unwrap().to_string();
    let (base, alerts) = open_alerts(&catalog_url);
    let text = alerts.to_string();
    assert!(text.contains("Kallio") || text.contains("fire"), "{text}");
    assert!(!text.to_lowercase().contains("flash flood"), "{text}");
    // The catalog lists the open feed only; no key, no data.
    let catalog: serde_json::Value = client
        .get(&catalog_url)
        .bearer_auth(&key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let catalog_text = catalog.to_string();
    assert!(catalog_text.contains("fire-alerts"), "{catalog_text}");
    assert!(!catalog_text.contains("\"nws\""), "{catalog_text}");
    assert!(
        catalog_text.contains("The hall open data"),
        "{catalog_text}"
    );
    let refused = client
        .get(format!("{base}/ngsi-ld/v1/entities?type=Alert"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);

    // A standby waits without serving; when the active hub is killed, it takes the
    // lease and serves the open data itself.
    let (mut second, second_lines) = start_hub();
    wait_line(&second_lines, "standby ", Duration::from_secs(30));
    assert!(
        second_lines
            .try_iter()
            .all(|l| !l.starts_with("open-data ")),
        "a standby serves nothing"
    );
    first.kill().unwrap();
    let _ = first.wait();
    assert!(
        client
            .get(format!("{base}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .is_err(),
        "the killed hub's open data is gone"
    );
    wait_line(&second_lines, "active ", Duration::from_secs(30));
    let line = wait_line(&second_lines, "open-data ", Duration::from_secs(10));
    let (_, alerts) = open_alerts(line.split("url=").nth(1).unwrap());
    assert!(!alerts.to_string().to_lowercase().contains("flash flood"));
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let _ = second.wait();
    // Every request is in the access log, under the client's name, the key never.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"client\":\"press\""), "{logged}");
    assert!(!logged.contains(&key), "{logged}");
}
