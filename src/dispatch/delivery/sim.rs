//! The department simulator: departments over HTTP that take orders (de-duplicated by
//! idempotency key), sometimes fail on purpose, and report status back on their own.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    HttpResponse, error_response, hash_parts, header_value, json_response, path_segments, unit_of,
};
use crate::clock::rfc3339_from_unix_ms;
use crate::clock::unix_ms_now;
use crate::http::{Limits, Request, Server};

/// Largest order body accepted.
const MAX_ORDER_BYTES: usize = 1024 * 1024;
/// Attempts at posting one status report before giving up on the order's reports.
const REPORT_TRIES: u32 = 6;
/// Department used for `POST /orders` when the body names none.
const DEFAULT_DEPARTMENT: &str = "default";
/// Duty officers who sign for orders, picked per department.
const DUTY_OFFICERS: [&str; 8] = [
    "Li Wei 李伟",
    "Wang Fang 王芳",
    "Zhang Min 张敏",
    "Liu Yang 刘洋",
    "Chen Jing 陈静",
    "Zhao Lei 赵磊",
    "Huang Qiang 黄强",
    "Zhou Na 周娜",
];

/// How the simulated departments behave. Delays are in simulated seconds, divided
/// by `speedup`; `slow_s` is real seconds (it is about client timeouts).
#[derive(Clone, Debug, PartialEq)]
pub struct SimBehaviour {
    /// Seeds every decision: an order's fate and timings depend only on the seed, the
    /// department and the order id; failures on the seed, key and try number.
    pub seed: u64,
    /// Share of POSTs answered 500 before anything is recorded.
    pub fail_rate: f64,
    /// Share of POSTs answered only after `slow_s` seconds, after recording (so a
    /// client that times out retries and gets the duplicate answer).
    pub slow_rate: f64,
    pub slow_s: f64,
    /// Share of orders rejected ("no unit available") after `ack_after_s`.
    pub reject_rate: f64,
    /// Share of orders never answered, unless urged.
    pub ignore_rate: f64,
    /// Delay from receipt to `acknowledged` (uniform in min..max).
    pub ack_after_s: (f64, f64),
    /// Delay from `acknowledged` to `in_progress`.
    pub start_after_s: (f64, f64),
    /// Delay from `in_progress` to `done`.
    pub done_after_s: (f64, f64),
    /// Delay from an urge to `acknowledged` for an order that was being ignored.
    pub urged_ack_after_s: (f64, f64),
    /// Simulated seconds per real second.
    pub speedup: f64,
    /// Department id → bearer token for its status reports; departments not listed
    /// use [`default_token`] (the convention of `config/dispatch.toml`). A
    /// department's token also verifies the signature of the orders it takes.
    pub tokens: HashMap<String, String>,
    /// The base URL of the Zhongshu status API the departments report to: the only
    /// place their tokens are ever sent (an order's own `status_url` is not trusted).
    pub report_to: String,
    /// Refuse orders without a valid `Zhongshu-Signature` (401).
    pub require_signature: bool,
    /// A PEM certificate to trust when reporting over HTTPS (a status API with a
    /// certificate of its own, not from a public authority).
    pub report_ca_pem: Option<Vec<u8>>,
}

impl Default for SimBehaviour {
    fn default() -> Self {
        SimBehaviour {
            seed: 1,
            fail_rate: 0.1,
            slow_rate: 0.0,
            slow_s: 15.0,
            reject_rate: 0.1,
            ignore_rate: 0.1,
            ack_after_s: (5.0, 30.0),
            start_after_s: (10.0, 60.0),
            done_after_s: (60.0, 300.0),
            urged_ack_after_s: (2.0, 10.0),
            speedup: 1.0,
            tokens: HashMap::new(),
            report_to: "http://127.0.0.1:7878".into(),
            require_signature: true,
            report_ca_pem: None,
        }
    }
}

impl SimBehaviour {
    /// Departments that take every order and never report by themselves (nor when
    /// urged, within the hour): for tests and benchmarks of the dispatcher's side.
    pub fn silent() -> Self {
        SimBehaviour {
            fail_rate: 0.0,
            reject_rate: 0.0,
            ignore_rate: 1.0,
            urged_ack_after_s: (3600.0, 3600.0),
            ..Default::default()
        }
    }

    /// Checks rates, ranges and speedup (done by [`DepartmentSim::start`]).
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, rate) in [
            ("fail_rate", self.fail_rate),
            ("slow_rate", self.slow_rate),
            ("reject_rate", self.reject_rate),
            ("ignore_rate", self.ignore_rate),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&rate),
                "{name} must be between 0 and 1, got {rate}"
            );
        }
        anyhow::ensure!(
            self.reject_rate + self.ignore_rate <= 1.0,
            "reject_rate + ignore_rate must be at most 1"
        );
        anyhow::ensure!(
            self.speedup.is_finite() && self.speedup > 0.0,
            "speedup must be > 0, got {}",
            self.speedup
        );
        anyhow::ensure!(
            self.slow_s.is_finite() && self.slow_s >= 0.0,
            "slow_s must be ≥ 0"
        );
        for (name, (lo, hi)) in [
            ("ack_after_s", self.ack_after_s),
            ("start_after_s", self.start_after_s),
            ("done_after_s", self.done_after_s),
            ("urged_ack_after_s", self.urged_ack_after_s),
        ] {
            anyhow::ensure!(
                lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi,
                "{name} must be (min, max) with 0 ≤ min ≤ max, got ({lo}, {hi})"
            );
        }
        Ok(())
    }

    fn token(&self, department: &str) -> String {
        self.tokens
            .get(department)
            .cloned()
            .unwrap_or_else(|| default_token(department))
    }

    /// A delay in `range` (simulated seconds) drawn from `h`, as real time.
    fn delay(&self, range: (f64, f64), h: u64) -> Duration {
        let s = range.0 + (range.1 - range.0) * unit_of(h);
        Duration::from_secs_f64(s / self.speedup)
    }
}

/// The token a simulated department uses when [`SimBehaviour::tokens`] names none:
/// `demo-` and the id with `_` as `-` (`traffic_police` → `demo-traffic-police`), as
/// in `config/dispatch.toml`.
pub fn default_token(department: &str) -> String {
    format!("demo-{}", department.replace('_', "-"))
}

/// What a simulated department does with an order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SimFate {
    /// acknowledged → in_progress → done.
    Complete,
    /// rejected, "no unit available".
    Reject,
    /// Nothing, until urged; then acknowledged → in_progress → done.
    Ignore,
}

/// Counts since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    /// POSTs to an orders or urge endpoint, whatever came of them.
    pub received: u64,
    /// Orders or urges already had (same idempotency key), answered 200 again.
    pub duplicates: u64,
    /// POSTs answered 500 on purpose.
    pub failed_on_purpose: u64,
    /// POSTs answered late on purpose.
    pub slow_on_purpose: u64,
    /// Distinct orders taken.
    pub jobs: u64,
    /// Distinct urges taken.
    pub urges: u64,
    /// Orders Zhongshu withdrew.
    pub cancelled: u64,
    /// Status reports Zhongshu accepted (2xx).
    pub reported: u64,
    /// Reports given up on (refused, or Zhongshu unreachable after retries).
    pub report_failures: u64,
    /// Orders whose fate is to be rejected / ignored.
    pub rejected: u64,
    pub ignored: u64,
}

/// One order a simulated department has taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimJob {
    pub department: String,
    pub order_id: String,
    pub department_ref: String,
    pub fate: SimFate,
    pub status_url: String,
    /// Distinct urges received.
    pub urges: u32,
    /// Statuses reported and accepted, in order.
    pub reported: Vec<String>,
    /// Zhongshu withdrew the order: nothing more is reported.
    pub cancelled: bool,
}

/// A running simulator; dropping it stops it.
pub struct DepartmentSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<Server>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    behaviour: SimBehaviour,
    state: Mutex<SimState>,
    timer: Mutex<Timer>,
    wake: Condvar,
    stop: AtomicBool,
    client: reqwest::blocking::Client,
}

#[derive(Default)]
struct SimState {
    /// (department, the order's idempotency key) → job. Keyed by the key, not the
    /// order id: two event logs may both have an `ORD-000001`.
    jobs: HashMap<(String, String), SimJob>,
    /// Insertion order of `jobs`.
    order: Vec<(String, String)>,
    /// (department, urge key) → order's department reference.
    urges: HashMap<(String, String), String>,
    /// (department, idempotency key) → POSTs seen (numbers the failure dice).
    tries: HashMap<(String, String), u32>,
    /// Department → orders taken (numbers the references).
    counters: HashMap<String, u64>,
    stats: SimStats,
    /// Ignored orders with an acknowledgement already scheduled by an urge.
    urged_awake: std::collections::HashSet<(String, String)>,
}

#[derive(Default)]
struct Timer {
    heap: BinaryHeap<Due>,
    seq: u64,
}

/// A chain of reports for one order, the first due at `at`.
struct Due {
    at: Instant,
    seq: u64,
    chain: Chain,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Step {
    status: &'static str,
    note: Option<String>,
    /// Wait before this step, after the previous one was reported.
    after: Duration,
}

struct Chain {
    department: String,
    /// The order's idempotency key (which job this is).
    key: String,
    order_id: String,
    status_url: String,
    steps: VecDeque<Step>,
    tries: u32,
}

impl DepartmentSim {
    /// Listens on `addr` (port 0 picks a free one). One process plays any number of
    /// departments: `http://{addr}/{department}` is a department's endpoint.
    pub fn start(addr: &str, behaviour: SimBehaviour) -> anyhow::Result<DepartmentSim> {
        behaviour.validate()?;
        let mut client = crate::http::client_builder();
        if let Some(pem) = &behaviour.report_ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| anyhow::anyhow!("the certificate to trust is not PEM: {e}"))?;
            client = client.tls_certs_merge([ca]);
        }
        let client = client
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!(
                "zhongshu-department-sim/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        let shared = Arc::new(Shared {
            behaviour,
            state: Mutex::default(),
            timer: Mutex::default(),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            client,
        });
        let limits = Limits {
            max_body_bytes: MAX_ORDER_BYTES,
            // Answers held back on purpose (slow_s) each hold a handler.
            max_handlers: 64,
            // Every order comes from the one outbox: the surge bench measures
            // Zhongshu, not a simulated department's patience.
            rate: crate::http::Rate::UNLIMITED,
            ..Limits::default()
        };
        let server = {
            let shared = shared.clone();
            Server::start(
                addr,
                "department sim",
                limits,
                Arc::new(move |request| handle(&shared, &request)),
            )
            .map_err(|e| anyhow::anyhow!("department simulator cannot listen on {addr}: {e}"))?
        };
        let timer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("department sim timer".into())
                .spawn(move || timer_loop(&shared))?
        };
        Ok(DepartmentSim {
            addr: server.addr(),
            shared,
            server: Some(server),
            threads: vec![timer],
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The endpoint of one department: `http://{addr}/{department}`.
    pub fn endpoint(&self, department: &str) -> String {
        format!("{}/{}", self.base_url(), super::encode_segment(department))
    }

    pub fn stats(&self) -> SimStats {
        self.shared.lock_state().stats
    }

    /// Every order taken, in the order taken.
    pub fn jobs(&self) -> Vec<SimJob> {
        let state = self.shared.lock_state();
        state.order.iter().map(|k| state.jobs[k].clone()).collect()
    }

    /// Blocks until the simulator stops (it does not stop by itself).
    pub fn wait(mut self) {
        if let Some(server) = self.server.take() {
            server.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stops serving and reporting, and waits for the threads.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake.notify_all();
        drop(self.server.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DepartmentSim {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `zhongshu serve-departments`: serves simulated departments on `addr`, prints one
/// line with the base URL and blocks.
pub fn run_serve_departments(addr: &str, behaviour: SimBehaviour) -> anyhow::Result<()> {
    let seed = behaviour.seed;
    let sim = DepartmentSim::start(addr, behaviour)?;
    println!(
        "zhongshu serve-departments: {} (a department's endpoint is {}/<department>, seed {seed})",
        sim.base_url(),
        sim.base_url()
    );
    sim.wait();
    Ok(())
}

impl Shared {
    /// Counts a POST and rolls its dice: a simulated failure (the 500 to answer, before
    /// anything is recorded), or how long to hold the answer back (slow on purpose).
    fn receive(
        &self,
        state: &mut SimState,
        department: &str,
        key: &str,
    ) -> Result<Option<Duration>, HttpResponse> {
        state.stats.received += 1;
        let (fail, slow) = self.dice(state, department, key);
        if fail {
            state.stats.failed_on_purpose += 1;
            return Err(error_response(
                500,
                "simulated_failure",
                "the department's system is down (simulated)",
            ));
        }
        Ok(slow.then(|| {
            state.stats.slow_on_purpose += 1;
            Duration::from_secs_f64(self.behaviour.slow_s)
        }))
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, chain: Chain) {
        let Some(first) = chain.steps.front() else {
            return;
        };
        let at = Instant::now() + first.after;
        self.schedule_at(at, chain);
    }

    fn schedule_at(&self, at: Instant, chain: Chain) {
        let mut timer = self.timer.lock().unwrap_or_else(|e| e.into_inner());
        timer.seq += 1;
        let seq = timer.seq;
        timer.heap.push(Due { at, seq, chain });
        self.wake.notify_all();
    }

    fn hash(&self, parts: &[&str]) -> u64 {
        hash_parts(self.behaviour.seed, parts)
    }

    /// The failure and slowness dice for one POST with `key`.
    fn dice(&self, state: &mut SimState, department: &str, key: &str) -> (bool, bool) {
        let tries = state
            .tries
            .entry((department.to_string(), key.to_string()))
            .or_insert(0);
        *tries += 1;
        let n = tries.to_string();
        let fail = unit_of(self.hash(&[department, key, "fail", &n])) < self.behaviour.fail_rate;
        let slow = unit_of(self.hash(&[department, key, "slow", &n])) < self.behaviour.slow_rate;
        (fail, slow)
    }

    /// The steps an order goes through once it is answered, starting `first` after.
    fn complete_steps(&self, department: &str, order_id: &str, first: Duration) -> VecDeque<Step> {
        let b = &self.behaviour;
        VecDeque::from([
            Step {
                status: "acknowledged",
                note: None,
                after: first,
            },
            Step {
                status: "in_progress",
                note: Some("unit en route".into()),
                after: b.delay(b.start_after_s, self.hash(&[department, order_id, "start"])),
            },
            Step {
                status: "done",
                note: Some("completed".into()),
                after: b.delay(b.done_after_s, self.hash(&[department, order_id, "done"])),
            },
        ])
    }
}

fn handle(shared: &Shared, request: &Request) -> HttpResponse {
    let (response, delay) = respond(shared, request);
    if let Some(d) = delay {
        std::thread::sleep(d);
    }
    response
}

/// Whether the request carries Zhongshu's signature under the department's key.
fn check_signature(
    shared: &Shared,
    request: &Request,
    department: &str,
) -> Result<(), HttpResponse> {
    if !shared.behaviour.require_signature {
        return Ok(());
    }
    let unsigned = |message: String| Err(error_response(401, "bad_signature", message));
    let Some(header) = header_value(request, super::SIGNATURE_HEADER) else {
        return unsigned(format!("missing {} header", super::SIGNATURE_HEADER));
    };
    let key = shared.behaviour.token(department);
    let idempotency_key = header_value(request, "Idempotency-Key").unwrap_or_default();
    match super::verify_signature(
        &header,
        &key,
        request.method.as_str(),
        &idempotency_key,
        &request.body,
        unix_ms_now().div_euclid(1000),
    ) {
        Ok(()) => Ok(()),
        Err(why) => unsigned(why),
    }
}

/// The order an idempotency key belongs to: `<log id>:<order id>` for an order,
/// with `:urge:<n>` or `:cancel` after it for an urge or a cancellation.
fn order_key(key: &str) -> &str {
    if let Some((order, _)) = key.rsplit_once(":urge:") {
        return order;
    }
    key.strip_suffix(":cancel").unwrap_or(key)
}

/// The answer, and how long to hold it back.
fn respond(shared: &Shared, request: &Request) -> (HttpResponse, Option<Duration>) {
    use crate::http::Method;
    let Some(segments) = path_segments(request.url()) else {
        return (
            error_response(
                400,
                "bad_path",
                "the path is not valid percent-encoded UTF-8",
            ),
            None,
        );
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method.clone();
    match (segments.as_slice(), &method) {
        (["health"] | [], &Method::GET | &Method::HEAD) => {
            (json_response(200, &json!({"status": "ok"})), None)
        }
        (["orders"], &Method::POST) => post_order(shared, request, None),
        ([department, "orders"], &Method::POST) => {
            let department = department.to_string();
            post_order(shared, request, Some(department))
        }
        (["orders", order_id, action @ ("urge" | "cancel")], &Method::POST) => {
            let order_id = order_id.to_string();
            post_follow_up(shared, request, DEFAULT_DEPARTMENT, &order_id, action)
        }
        ([department, "orders", order_id, action @ ("urge" | "cancel")], &Method::POST) => {
            let (department, order_id) = (department.to_string(), order_id.to_string());
            post_follow_up(shared, request, &department, &order_id, action)
        }
        ([department, "orders", order_id], &Method::GET) => {
            let state = shared.lock_state();
            // The latest order of that id (several logs may share ids).
            let job = state
                .order
                .iter()
                .rev()
                .filter(|(d, _)| d == department)
                .filter_map(|k| state.jobs.get(k))
                .find(|j| j.order_id == *order_id);
            let response = match job {
                Some(job) => json_response(200, &serde_json::to_value(job).expect("serialises")),
                None => error_response(404, "unknown_order", format!("no order {order_id:?}")),
            };
            (response, None)
        }
        _ => (
            error_response(
                404,
                "not_found",
                format!("no such resource: {}", request.url()),
            ),
            None,
        ),
    }
}

fn post_order(
    shared: &Shared,
    request: &Request,
    department: Option<String>,
) -> (HttpResponse, Option<Duration>) {
    let bad = |message: String| (error_response(400, "bad_request", message), None);
    let key = header_value(request, "Idempotency-Key").unwrap_or_default();
    let department = department.or_else(|| {
        serde_json::from_slice::<Value>(&request.body)
            .ok()
            .and_then(|v| v.get("department")?.as_str().map(str::to_string))
    });
    if let Err(refused) = check_signature(
        shared,
        request,
        department.as_deref().unwrap_or(DEFAULT_DEPARTMENT),
    ) {
        return (refused, None);
    }
    let order: Value = match serde_json::from_slice(&request.body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return bad("the order is not a JSON object".into()),
        Err(e) => return bad(format!("the order is not JSON: {e}")),
    };
    let Some(order_id) = order.get("order_id").and_then(Value::as_str) else {
        return bad("the order has no string `order_id`".into());
    };
    if key.is_empty() {
        return bad("missing Idempotency-Key header".into());
    }
    if key != order_id && !key.ends_with(&format!(":{order_id}")) {
        return bad(format!(
            "Idempotency-Key {key:?} is not the order id {order_id:?} (with its log id before it)"
        ));
    }
    // Reports go to the configured API only: an order naming another place would
    // otherwise receive the department's bearer token.
    let status_url = super::status_url(&shared.behaviour.report_to, order_id);
    let status_url = status_url.as_str();
    let department = department.unwrap_or_else(|| DEFAULT_DEPARTMENT.to_string());

    let b = &shared.behaviour;
    let mut state = shared.lock_state();
    let delay = match shared.receive(&mut state, &department, &key) {
        Ok(delay) => delay,
        Err(failed) => return (failed, None),
    };
    let job_key = (department.clone(), key.clone());
    if let Some(job) = state.jobs.get(&job_key) {
        let reference = job.department_ref.clone();
        state.stats.duplicates += 1;
        let body = json!({"department_ref": reference, "status": "duplicate"});
        return (json_response(200, &body), delay);
    }
    let counter = state.counters.entry(department.clone()).or_insert(0);
    *counter += 1;
    let department_ref = format!(
        "{}-{:06}",
        department
            .to_uppercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), ""),
        *counter
    );
    let roll = unit_of(shared.hash(&[&department, order_id, "fate"]));
    let fate = if roll < b.reject_rate {
        SimFate::Reject
    } else if roll < b.reject_rate + b.ignore_rate {
        SimFate::Ignore
    } else {
        SimFate::Complete
    };
    state.stats.jobs += 1;
    match fate {
        SimFate::Reject => state.stats.rejected += 1,
        SimFate::Ignore => state.stats.ignored += 1,
        SimFate::Complete => {}
    }
    state.jobs.insert(
        job_key.clone(),
        SimJob {
            department: department.clone(),
            order_id: order_id.to_string(),
            department_ref: department_ref.clone(),
            fate,
            status_url: status_url.to_string(),
            urges: 0,
            reported: Vec::new(),
            cancelled: false,
        },
    );
    state.order.push(job_key);
    drop(state);
    let ack = b.delay(b.ack_after_s, shared.hash(&[&department, order_id, "ack"]));
    let steps = match fate {
        SimFate::Complete => shared.complete_steps(&department, order_id, ack),
        SimFate::Reject => VecDeque::from([Step {
            status: "rejected",
            note: Some("no unit available".into()),
            after: ack,
        }]),
        SimFate::Ignore => VecDeque::new(),
    };
    shared.schedule(Chain {
        department,
        key: key.clone(),
        order_id: order_id.to_string(),
        status_url: status_url.to_string(),
        steps,
        tries: 0,
    });
    let body = json!({"department_ref": department_ref, "status": "received"});
    (json_response(201, &body), delay)
}

/// An urge or a cancellation of an order the department has.
fn post_follow_up(
    shared: &Shared,
    request: &Request,
    department: &str,
    order_id: &str,
    action: &str,
) -> (HttpResponse, Option<Duration>) {
    if let Err(refused) = check_signature(shared, request, department) {
        return (refused, None);
    }
    let Some(key) = header_value(request, "Idempotency-Key").filter(|k| !k.is_empty()) else {
        return (
            error_response(400, "bad_request", "missing Idempotency-Key header"),
            None,
        );
    };
    let b = &shared.behaviour;
    let mut guard = shared.lock_state();
    let state = &mut *guard;
    let delay = match shared.receive(state, department, &key) {
        Ok(delay) => delay,
        Err(failed) => return (failed, None),
    };
    // The key says what the request is: an urge or a cancellation of that order.
    let fits = match action {
        "cancel" => key.ends_with(":cancel"),
        _ => key.contains(":urge:"),
    };
    if !fits {
        return (
            error_response(
                400,
                "bad_request",
                format!("Idempotency-Key {key:?} is not the key of a {action}"),
            ),
            None,
        );
    }
    let job_key = (department.to_string(), order_key(&key).to_string());
    let Some(job) = state
        .jobs
        .get_mut(&job_key)
        .filter(|j| j.order_id == order_id)
    else {
        return (
            error_response(
                404,
                "unknown_order",
                format!("{department} has no order {order_id:?} under key {key:?}"),
            ),
            None,
        );
    };
    let reference = job.department_ref.clone();
    let urge_key = (department.to_string(), key);
    if state.urges.contains_key(&urge_key) {
        state.stats.duplicates += 1;
        let body = json!({"department_ref": reference, "status": "duplicate"});
        return (json_response(200, &body), delay);
    }
    if action == "cancel" {
        job.cancelled = true;
        state.urges.insert(urge_key, reference.clone());
        state.stats.cancelled += 1;
        let body = json!({"department_ref": reference, "status": "cancelled"});
        return (json_response(200, &body), delay);
    }
    job.urges += 1;
    let (fate, status_url) = (job.fate, job.status_url.clone());
    state.urges.insert(urge_key, reference.clone());
    state.stats.urges += 1;
    // Being urged wakes up an order that was being ignored.
    if fate == SimFate::Ignore && state.urged_awake.insert(job_key.clone()) {
        drop(guard);
        let ack = b.delay(
            b.urged_ack_after_s,
            shared.hash(&[department, order_id, "urged"]),
        );
        shared.schedule(Chain {
            department: department.to_string(),
            key: job_key.1.clone(),
            order_id: order_id.to_string(),
            status_url,
            steps: shared.complete_steps(department, order_id, ack),
            tries: 0,
        });
    }
    let body = json!({"department_ref": reference, "status": "urged"});
    (json_response(200, &body), delay)
}

/// Pops due report chains and posts their next step, each on its own thread.
fn timer_loop(shared: &Arc<Shared>) {
    let mut timer = shared.timer.lock().unwrap_or_else(|e| e.into_inner());
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = match timer.heap.peek() {
            Some(top) if top.at <= now => {
                let due = timer.heap.pop().expect("peeked");
                let poster = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("department sim report".into())
                    .spawn(move || post_step(&poster, due.chain));
                if spawned.is_err() {
                    shared.lock_state().stats.report_failures += 1;
                }
                continue;
            }
            Some(top) => top.at - now,
            None => Duration::from_millis(200),
        };
        timer = shared
            .wake
            .wait_timeout(timer, wait.min(Duration::from_millis(200)))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Posts the first step of `chain` to Zhongshu, then schedules the rest (or a retry).
fn post_step(shared: &Shared, mut chain: Chain) {
    let Some(step) = chain.steps.front() else {
        return;
    };
    // A withdrawn order is not reported on any more.
    let job_key = (chain.department.clone(), chain.key.clone());
    if shared
        .lock_state()
        .jobs
        .get(&job_key)
        .is_some_and(|j| j.cancelled)
    {
        return;
    }
    let token = shared.behaviour.token(&chain.department);
    let by = DUTY_OFFICERS
        [(shared.hash(&[&chain.department, "duty officer"]) as usize) % DUTY_OFFICERS.len()];
    let body = json!({
        "status": step.status,
        "by": by,
        "note": step.note,
        "at": rfc3339_from_unix_ms(unix_ms_now()),
    });
    let result = shared
        .client
        .post(&chain.status_url)
        .bearer_auth(token)
        .json(&body)
        .send();
    let (retry, error) = match result {
        Ok(r) if r.status().is_success() => {
            let step = chain.steps.pop_front().expect("has a front");
            {
                let mut state = shared.lock_state();
                state.stats.reported += 1;
                if let Some(job) = state.jobs.get_mut(&job_key) {
                    job.reported.push(step.status.to_string());
                }
            }
            chain.tries = 0;
            shared.schedule(chain);
            return;
        }
        Ok(r) => {
            let status = r.status();
            let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
            let text = r.text().unwrap_or_default();
            (retry, format!("HTTP {status}: {}", text.trim()))
        }
        Err(e) => (true, e.to_string()),
    };
    chain.tries += 1;
    if retry && chain.tries < REPORT_TRIES && !shared.stop.load(Ordering::Relaxed) {
        let backoff = Duration::from_millis(200)
            .saturating_mul(1 << chain.tries)
            .min(Duration::from_secs(5))
            .div_f64(shared.behaviour.speedup)
            .max(Duration::from_millis(10));
        shared.schedule_at(Instant::now() + backoff, chain);
        return;
    }
    shared.lock_state().stats.report_failures += 1;
    eprintln!(
        "department sim: {} gave up reporting {} of {} to {}: {error}",
        chain.department, step.status, chain.order_id, chain.status_url
    );
}
