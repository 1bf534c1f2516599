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
