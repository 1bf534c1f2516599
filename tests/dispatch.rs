//! Dispatch durability as a user depends on it: orders that were reported committed
//! survive a SIGKILL at any moment, and the audit chain catches tampering.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use zhongshu::dispatch::config::DispatchConfig;
use zhongshu::dispatch::dispatcher::Dispatcher;

use crate::{audit_verify, scratch_dir, zhongshu};

/// Tiny deterministic generator for kill moments.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn committed_orders_survive_sigkill_at_random_moments() {
    let dir = scratch_dir("crash");
    let db = dir.join("events.db");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut committed: Vec<String> = Vec::new();
    let mut runs_with_commits = 0;
    const RUNS: usize = 30;
    for run in 0..RUNS {
        let mut child = zhongshu()
            .args(["bench", "orders", "--count", "1000000", "--db"])
            .arg(&db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start zhongshu bench orders");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut ids = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(id) = line.strip_prefix("committed ") {
                    ids.push(id.to_string());
                }
            }
            ids
        });
        // Anywhere from before the first commit to well into the run.
        let wait = Duration::from_millis(20 + next(&mut seed) % 400);
        let started = Instant::now();
        while started.elapsed() < wait {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the writer"); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert!(!status.success(), "run {run} was not killed");
        let ids = reader.join().unwrap();
        if !ids.is_empty() {
            runs_with_commits += 1;
        }
        committed.extend(ids);

        // After each crash, the log opens, the chain verifies and every order the
        // writer said was committed is there.
        let dispatcher = Dispatcher::open(&db, DispatchConfig::default_config())
            .unwrap_or_else(|e| panic!("run {run}: the log does not open after SIGKILL: {e}"));
        let report = dispatcher.log().verify().unwrap();
        assert!(report.chain_ok, "run {run}: {report:?}");
        assert_eq!(dispatcher.opened.unreadable_events, 0, "run {run}");
        let present: HashSet<&str> = dispatcher
            .book()
            .orders
            .iter()
            .map(|o| o.id.as_str())
            .collect();
        for id in &committed {
            assert!(
                present.contains(id.as_str()),
                "run {run}: {id} was committed but is gone"
            );
        }
        // Nothing half-written: every incident has its whole playbook or nothing.
        for incident in &dispatcher.book().incidents {
            let playbook = dispatcher.book().config.playbook(&incident.kind).unwrap();
            let n = incident.orders.len();
            assert!(
                n == 0 || n == playbook.orders.len(),
                "run {run}: {} has {n} of {} orders",
                incident.id,
                playbook.orders.len()
            );
        }
    }
    assert!(
        runs_with_commits >= RUNS / 2,
        "only {runs_with_commits} of {RUNS} runs committed anything before the kill"
    );
    assert!(
        committed.len() >= 100,
        "{} orders committed in all",
        committed.len()
    );
}

#[test]
fn bench_orders_prints_each_commit_then_a_summary() {
    let dir = scratch_dir("bench-orders");
    let db = dir.join("events.db");
    let out = zhongshu()
        .args(["bench", "orders", "--count", "12", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let committed: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("committed "))
        .collect();
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(summary["incidents"], 12);
    assert_eq!(
        summary["orders"].as_u64().unwrap() as usize,
        committed.len()
    );
    assert!(summary["commit_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(committed[0], "ORD-000001");

    // audit verify agrees with what was written.
    let (_, report) = audit_verify(&db);
    assert_eq!(report["incidents"], 12);
    assert_eq!(report["orders"].as_u64().unwrap() as usize, committed.len());
    assert_eq!(report["chain_ok"], true);
}

#[test]
fn serve_departments_takes_orders_once_per_idempotency_key() {
    let mut child = zhongshu()
        .args(["serve-departments", "--addr", "127.0.0.1:0", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no base URL in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    let client = zhongshu::http::client();
    let body = serde_json::json!({
        "order_id": "ORD-000001",
        "incident_id": "INC-000001",
        "department": "fire",
        "instruction": "Go",
        "deadline_ms": 4_000_000_000_000i64,
        "issued_at_ms": 1_795_946_400_000i64,
        "status_url": "http://127.0.0.1:9/api/v1/orders/ORD-000001/status",
        "incident": null,
    });
    let bytes = serde_json::to_vec(&body).unwrap();
    let token = zhongshu::dispatch::delivery::default_token("fire");
    let now_s = || zhongshu::clock::unix_ms_now() / 1000;
    // Orders are signed with the department's token; an unsigned one is refused.
    let unsigned = client
        .post(format!("{base}/fire/orders"))
        .header("Idempotency-Key", "ORD-000001")
        .header("Content-Type", "application/json")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    // The simulator fails some POSTs on purpose: retry like the outbox does.
    let post = || loop {
        let r = client
            .post(format!("{base}/fire/orders"))
            .header("Idempotency-Key", "ORD-000001")
            .header("Content-Type", "application/json")
            .header(
                zhongshu::dispatch::delivery::SIGNATURE_HEADER,
                zhongshu::dispatch::delivery::sign(&token, now_s(), "POST", "ORD-000001", &bytes),
            )
            .body(bytes.clone())
            .send()
            .unwrap();
        if !r.status().is_server_error() {
            break r;
        }
    };
    let first = post();
    assert!(first.status().is_success(), "{}", first.status());
    let first: serde_json::Value = first.json().unwrap();
    let again = post();
    assert!(again.status().is_success() || again.status().as_u16() == 409);
    let again: serde_json::Value = again.json().unwrap_or_default();
    if let Some(r) = again.get("department_ref") {
        assert_eq!(r, &first["department_ref"], "a repeat is the same job");
    }
    let _ = child.kill();
    let _ = child.wait();
}
