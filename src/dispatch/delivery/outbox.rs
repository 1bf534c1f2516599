//! The outbox: delivers orders and urges to department endpoints with retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{SplitMix, encode_segment, hash_parts};
use crate::clock::unix_ms_now;

/// Longest response body the outbox reads (department reference, error text).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Longest response text quoted in an error.
const MAX_ERROR_TEXT: usize = 1000;
/// How often an idle worker looks at the stop flag.
const IDLE_TICK: Duration = Duration::from_millis(100);

/// One order (or urge) for the outbox to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingOrder {
    /// The order id, e.g. `ORD-000042`; the idempotency key of the delivery.
    pub order_id: String,
    /// The department id (for errors and logs; routing uses `endpoint`).
    pub department: String,
    /// The department's base URL; orders go to `{endpoint}/orders`, urges to
    /// `{endpoint}/orders/{order_id}/urge`.
    pub endpoint: String,
    /// The JSON body, usually [`super::order_body`] / [`super::urge_body`].
    pub body: Value,
    /// An urge for an order already delivered (or being delivered), not the order.
    pub urge: bool,
    /// The order is withdrawn: `POST {endpoint}/orders/{id}/cancel`.
    pub cancel: bool,
    /// The key every attempt is signed with (the department's token): the
    /// `Zhongshu-Signature` header ([`super::sign`]). `None`: unsigned.
    pub signing_key: Option<String>,
}

/// What the outbox reports.
#[derive(Clone, Debug, PartialEq)]
pub enum DeliveryEvent {
    /// The department has the order (2xx, or 409 Conflict: "already have it").
    Delivered {
        order_id: String,
        /// HTTP attempts it took with this outbox (1 = first try).
        attempts: u32,
        at_ms: i64,
        /// The department's own reference from the response JSON
        /// (`department_ref`, else `reference`, else `ref`), if any.
        department_ref: Option<String>,
    },
    /// An attempt failed. `permanent: false` is informational (the outbox retries);
    /// `permanent: true` means the outbox gave up on the order: a 4xx other than
    /// 408/409/429 (with the department's response text in `error`), an invalid
    /// endpoint, or `max_attempts` used up.
    Failed {
        order_id: String,
        attempts: u32,
        error: String,
        permanent: bool,
    },
    /// The department has the cancellation of an order (or never had the order).
    Withdrawn {
        order_id: String,
        attempts: u32,
        at_ms: i64,
    },
    /// The department has the urge.
    Urged {
        order_id: String,
        urge_seq: u32,
        attempts: u32,
        at_ms: i64,
    },
    /// An urge attempt failed (same meaning of `permanent` as [`DeliveryEvent::Failed`];
    /// the order itself is unaffected).
    UrgeFailed {
        order_id: String,
        urge_seq: u32,
        attempts: u32,
        error: String,
        permanent: bool,
    },
}

/// Timeouts and retry policy of the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxConfig {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, connection to last byte of the response.
    pub request_timeout: Duration,
    /// Wait before the first retry; doubles with each failure...
    pub backoff_initial: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
    /// Share of the wait drawn at random (0 = none, 0.5 = wait 50–100 % of the
    /// backoff), so many orders failing together do not retry in lockstep.
    pub jitter: f64,
    /// Give up (a permanent failure, shown to the dispatcher) after this many
    /// attempts; `None` retries until the department answers. A bound keeps an order
    /// escalated away from a department that was down from arriving there hours later
    /// as stale work (escalation also withdraws what is still queued).
    pub max_attempts: Option<u32>,
    /// What idempotency keys start with: the event log's id, so keys are unique
    /// across logs (a new log's `ORD-000001` is not an old one's). Empty: bare ids.
    pub key_scope: String,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            jitter: 0.5,
            // About 20 minutes at the 30 s cap.
            max_attempts: Some(45),
            key_scope: String::new(),
        }
    }
}

impl OutboxConfig {
    /// The wait before attempt `failures + 1`, `unit` uniform in [0, 1).
    pub(super) fn backoff(&self, failures: u32, unit: f64) -> Duration {
        let doubled = self
            .backoff_initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20));
        let base = doubled.min(self.backoff_max.max(self.backoff_initial));
        base.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * unit)
    }
}

/// The delivery worker pool: one thread per department endpoint, each with its own
/// HTTP client and queue. Dropping it stops the workers (an attempt in flight
/// finishes in the background); [`Outbox::stop`] also waits for them.
pub struct Outbox {
    config: OutboxConfig,
    events: Sender<DeliveryEvent>,
    stop: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
    state: Mutex<OutboxState>,
}

#[derive(Default)]
struct OutboxState {
    workers: HashMap<String, Worker>,
    /// Highest urge number used per order.
    urge_seq: HashMap<String, u32>,
}

struct Worker {
    tx: Sender<Msg>,
    thread: JoinHandle<()>,
}

/// What a worker is told.
enum Msg {
    Job(Job),
    /// Drop every queued delivery of this order (the order, its urges).
    Withdraw(String),
}

/// One delivery as the worker sees it.
#[derive(Debug)]
struct Job {
    order_id: String,
    department: String,
    url: String,
    key: String,
    body: Vec<u8>,
    urge_seq: Option<u32>,
    cancel: bool,
    signing_key: Option<String>,
}

impl Outbox {
    /// Starts an empty outbox; workers start with the first order for an endpoint.
    pub fn start(config: OutboxConfig) -> (Outbox, Receiver<DeliveryEvent>) {
        let (events, rx) = mpsc::channel();
        let outbox = Outbox {
            config,
            events,
            stop: Arc::new(AtomicBool::new(false)),
            pending: Arc::new(AtomicUsize::new(0)),
            state: Mutex::new(OutboxState::default()),
        };
        (outbox, rx)
    }

    /// Queues an order (or urge) for delivery; never blocks on the network. Sending an
    /// order that is still queued here replaces its body and yields one `Delivered`.
    ///
    /// Urges are numbered per order: `body["urge_seq"]` when given (take it from the
    /// log, so numbers survive restarts), else one more than the last urge this
    /// outbox sent for the order. An urge waits while its order is still queued in
    /// this outbox.
    pub fn send(&self, order: OutgoingOrder) {
        let endpoint = order.endpoint.trim().trim_end_matches('/').to_string();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let urge_seq = order.urge.then(|| {
            let last = state.urge_seq.entry(order.order_id.clone()).or_insert(0);
            let seq = order
                .body
                .get("urge_seq")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(*last + 1);
            *last = (*last).max(seq);
            seq
        });
        let id = order.order_id.clone();
        let refuse = |error: String| {
            let _ = self.events.send(match urge_seq {
                Some(urge_seq) => DeliveryEvent::UrgeFailed {
                    order_id: id.clone(),
                    urge_seq,
                    attempts: 0,
                    error,
                    permanent: true,
                },
                None => DeliveryEvent::Failed {
                    order_id: id.clone(),
                    attempts: 0,
                    error,
                    permanent: true,
                },
            });
        };
        if self.stop.load(Ordering::Relaxed) {
            return refuse("the outbox is stopped".into());
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return refuse(format!(
                "department {}: endpoint {:?} is not an http(s) URL",
                order.department, order.endpoint
            ));
        }
        if order.order_id.is_empty() {
            return refuse("the order has an empty id".into());
        }
        let order_key = if self.config.key_scope.is_empty() {
            order.order_id.clone()
        } else {
            format!("{}:{}", self.config.key_scope, order.order_id)
        };
        let (url, key) = match (urge_seq, order.cancel) {
            (_, true) => (
                format!(
                    "{endpoint}/orders/{}/cancel",
                    encode_segment(&order.order_id)
                ),
                format!("{order_key}:cancel"),
            ),
            (None, false) => (format!("{endpoint}/orders"), order_key),
            (Some(n), false) => (
                format!("{endpoint}/orders/{}/urge", encode_segment(&order.order_id)),
                format!("{order_key}:urge:{n}"),
            ),
        };
        let mut msg = Msg::Job(Job {
            order_id: order.order_id,
            department: order.department,
            url,
            key,
            body: serde_json::to_vec(&order.body).expect("a JSON value serialises"),
            urge_seq: urge_seq.filter(|_| !order.cancel),
            cancel: order.cancel,
            signing_key: order.signing_key,
        });
        self.pending.fetch_add(1, Ordering::Relaxed);
        // A worker only dies by panicking; then a fresh one takes over.
        for _ in 0..2 {
            let worker = state
                .workers
                .entry(endpoint.clone())
                .or_insert_with(|| self.spawn_worker(&endpoint));
            match worker.tx.send(msg) {
                Ok(()) => return,
                Err(mpsc::SendError(back)) => {
                    msg = back;
                    state.workers.remove(&endpoint);
                }
            }
        }
        self.pending.fetch_sub(1, Ordering::Relaxed);
        refuse("cannot start a delivery worker".into());
    }

    /// Drops every queued delivery of `order_id` (the order itself and its urges):
    /// for an order escalated or withdrawn, what has not reached the department yet
    /// must not arrive later as stale work. An attempt already in flight finishes.
    pub fn withdraw(&self, order_id: &str) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for worker in state.workers.values() {
            let _ = worker.tx.send(Msg::Withdraw(order_id.to_string()));
        }
    }

    /// Orders and urges sent and not yet delivered or given up.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Stops the workers and waits for them (at most about one request timeout).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let workers: Vec<Worker> = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.workers.drain().map(|(_, w)| w).collect()
        };
        for w in workers {
            drop(w.tx);
            w.thread.thread().unpark();
            let _ = w.thread.join();
        }
    }

    fn spawn_worker(&self, endpoint: &str) -> Worker {
        let (tx, rx) = mpsc::channel();
        let context = WorkerContext {
            endpoint: endpoint.to_string(),
            config: self.config.clone(),
            events: self.events.clone(),
            stop: self.stop.clone(),
            pending: self.pending.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("outbox {endpoint}"))
            .spawn(move || context.run(rx))
            .expect("spawn an outbox worker");
        Worker { tx, thread }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the senders and setting the flag ends the workers; do not wait here
        // (the UI thread may be the one dropping).
        state.workers.clear();
    }
}

struct WorkerContext {
    endpoint: String,
    config: OutboxConfig,
    events: Sender<DeliveryEvent>,
    stop: Arc<AtomicBool>,
    pending: Arc<AtomicUsize>,
}

struct Pending {
    job: Job,
    due: Instant,
    attempts: u32,
}

enum Outcome {
    Accepted {
        department_ref: Option<String>,
    },
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Permanent {
        error: String,
    },
}

impl WorkerContext {
    fn run(self, rx: Receiver<Msg>) {
        let client = match crate::http::client_builder()
            .connect_timeout(self.config.connect_timeout)
            .timeout(self.config.request_timeout)
            .redirect(same_origin_redirects())
            .user_agent(concat!("zhongshu/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                while let Ok(msg) = rx.recv() {
                    let Msg::Job(job) = msg else { continue };
                    self.finish(
                        &job,
                        0,
                        Outcome::Permanent {
                            error: format!("cannot build an HTTP client: {e}"),
                        },
                    );
                }
                return;
            }
        };
        let seed = hash_parts(unix_ms_now() as u64, &[&self.endpoint]);
        let mut rng = SplitMix(seed);
        let mut queue: Vec<Pending> = Vec::new();
        let mut connected = true;
        while !self.stop.load(Ordering::Relaxed) {
            while connected {
                match rx.try_recv() {
                    Ok(msg) => self.take(&mut queue, msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => connected = false,
                }
            }
            if !connected && queue.is_empty() {
                return;
            }
            let now = Instant::now();
            let next = next_ready(&queue);
            if let Some(i) = next
                && queue[i].due <= now
            {
                let p = &mut queue[i];
                p.attempts += 1;
                match attempt(&client, &p.job) {
                    Outcome::Retry { error, retry_after }
                        if self.config.max_attempts.is_none_or(|m| p.attempts < m) =>
                    {
                        let mut wait = self.config.backoff(p.attempts, rng.unit());
                        if let Some(after) = retry_after {
                            wait = wait.max(after.min(self.config.backoff_max));
                        }
                        p.due = Instant::now() + wait;
                        let error = format!("{error}; retrying in {} ms", wait.as_millis());
                        self.report_failure(&p.job, p.attempts, error, false);
                    }
                    Outcome::Retry { error, .. } => {
                        let p = queue.remove(i);
                        let error = format!("gave up after {} attempts: {error}", p.attempts);
                        self.finish(&p.job, p.attempts, Outcome::Permanent { error });
                    }
                    outcome => {
                        let p = queue.remove(i);
                        self.finish(&p.job, p.attempts, outcome);
                    }
                }
                continue;
            }
            let wait = next
                .map(|i| queue[i].due.saturating_duration_since(now))
                .unwrap_or(IDLE_TICK)
                .min(IDLE_TICK);
            if connected {
                match rx.recv_timeout(wait) {
                    Ok(msg) => self.take(&mut queue, msg),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => connected = false,
                }
            } else {
                std::thread::park_timeout(wait);
            }
        }
    }

    fn take(&self, queue: &mut Vec<Pending>, msg: Msg) {
        match msg {
            Msg::Job(job) => self.enqueue(queue, job),
            Msg::Withdraw(order_id) => {
                let before = queue.len();
                // A cancellation of the order is the one delivery kept.
                queue.retain(|p| p.job.order_id != order_id || p.job.cancel);
                self.pending
                    .fetch_sub(before - queue.len(), Ordering::Relaxed);
            }
        }
    }

    /// Adds a job, or refreshes the body of the same delivery already queued.
    fn enqueue(&self, queue: &mut Vec<Pending>, job: Job) {
        if let Some(p) = queue.iter_mut().find(|p| p.job.key == job.key) {
            p.job = job;
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        queue.push(Pending {
            job,
            due: Instant::now(),
            attempts: 0,
        });
    }

    fn report_failure(&self, job: &Job, attempts: u32, error: String, permanent: bool) {
        let order_id = job.order_id.clone();
        // Errors reach the log and the screen: never with an endpoint's credentials.
        let error = crate::http::redact_in_text(&error);
        let _ = self.events.send(match job.urge_seq {
            Some(urge_seq) => DeliveryEvent::UrgeFailed {
                order_id,
                urge_seq,
                attempts,
                error,
                permanent,
            },
            None => DeliveryEvent::Failed {
                order_id,
                attempts,
                error,
                permanent,
            },
        });
    }

    /// Reports the end of a job (accepted or given up).
    fn finish(&self, job: &Job, attempts: u32, outcome: Outcome) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        let order_id = job.order_id.clone();
        let at_ms = unix_ms_now();
        match outcome {
            Outcome::Accepted { department_ref } => {
                let _ = self.events.send(match job.urge_seq {
                    // A cancellation is not a delivery of the order: reported apart, so
                    // it is never taken for a delivery that landed after a withdrawal.
                    _ if job.cancel => DeliveryEvent::Withdrawn {
                        order_id,
                        attempts,
                        at_ms,
                    },
                    Some(urge_seq) => DeliveryEvent::Urged {
                        order_id,
                        urge_seq,
                        attempts,
                        at_ms,
                    },
                    None => DeliveryEvent::Delivered {
                        order_id,
                        attempts,
                        at_ms,
                        department_ref,
                    },
                });
            }
            Outcome::Permanent { error } | Outcome::Retry { error, .. } => {
                let error = format!("department {}: {error}", job.department);
                self.report_failure(job, attempts, error, true);
            }
        }
    }
}

/// The queued job to attempt next: the earliest due, skipping urges whose order is
/// still queued (the department would not know the order yet).
fn next_ready(queue: &[Pending]) -> Option<usize> {
    queue
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let follow_up = p.job.urge_seq.is_some() || p.job.cancel;
            !follow_up
                || !queue.iter().any(|o| {
                    o.job.urge_seq.is_none() && !o.job.cancel && o.job.order_id == p.job.order_id
                })
        })
        .min_by_key(|(_, p)| p.due)
        .map(|(i, _)| i)
}

/// One HTTP attempt, classified.
fn attempt(client: &reqwest::blocking::Client, job: &Job) -> Outcome {
    let mut request = client
        .post(&job.url)
        .header("Idempotency-Key", &job.key)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json");
    if let Some(key) = &job.signing_key {
        // Signed at each attempt, so a retry hours later is not refused as stale.
        let t = unix_ms_now().div_euclid(1000);
        request = request.header(
            super::SIGNATURE_HEADER,
            super::sign(key, t, "POST", &job.key, &job.body),
        );
    }
    let response = request.body(job.body.clone()).send();
    let response = match response {
        Ok(r) => r,
        Err(e) if e.is_builder() => {
            return Outcome::Permanent {
                error: format!(
                    "cannot build the request to {}: {}",
                    job.url,
                    error_chain(&e)
                ),
            };
        }
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            return Outcome::Retry {
                error: format!("POST {}: {what}: {}", job.url, error_chain(&e)),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let code = status.as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = read_text(response);
    let is_json = content_type.starts_with("application/json")
        || (content_type.starts_with("application/") && content_type.contains("+json"));
    // A cancellation of an order the department never had: nothing to cancel.
    if job.cancel && matches!(code, 404 | 410) {
        return Outcome::Accepted {
            department_ref: None,
        };
    }
    if code == 409 || (status.is_success() && (is_json || text.trim().is_empty())) {
        return Outcome::Accepted {
            department_ref: department_ref(&text),
        };
    }
    if status.is_success() {
        // A 2xx that is not the department's JSON answer: a proxy's maintenance or
        // login page, not the department. It does not have the order.
        let what = if content_type.is_empty() {
            "no content type".to_string()
        } else {
            content_type.clone()
        };
        return Outcome::Retry {
            error: format!(
                "HTTP {status} from POST {} with {what}, not the department's JSON answer (a proxy or maintenance page?): {}",
                job.url,
                clip(text.trim())
            ),
            retry_after: None,
        };
    }
    if status.is_redirection() {
        return Outcome::Permanent {
            error: format!(
                "HTTP {status} from POST {}: the department's endpoint moved{}; only 307/308 to the same host and scheme are followed: correct the endpoint in the dispatch config",
                job.url,
                location.map_or_else(String::new, |l| format!(" to {l}"))
            ),
        };
    }
    let error = if text.trim().is_empty() {
        format!("HTTP {status} from POST {}", job.url)
    } else {
        format!("HTTP {status} from POST {}: {}", job.url, clip(text.trim()))
    };
    if matches!(code, 408 | 429) || status.is_server_error() {
        Outcome::Retry { error, retry_after }
    } else {
        Outcome::Permanent { error }
    }
}

/// Follows 307 and 308 (which keep the method and body) up to three times, to the same
/// host, never from https to http; anything else is returned to [`attempt`] as is.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let code = attempt.status().as_u16();
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let next = attempt.url();
        let same_host = first.host_str() == next.host_str()
            && first.port_or_known_default() == next.port_or_known_default();
        let no_downgrade = first.scheme() == next.scheme() || next.scheme() == "https";
        if matches!(code, 307 | 308) && same_host && no_downgrade && attempt.previous().len() <= 3 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// The response body as text, at most [`MAX_RESPONSE_BYTES`]; a body that cannot be
/// read in time reads as what arrived.
fn read_text(response: reqwest::blocking::Response) -> String {
    use std::io::Read;
    let mut body = Vec::new();
    let _ = response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body);
    String::from_utf8_lossy(&body).into_owned()
}

pub(crate) fn department_ref(text: &str) -> Option<String> {
    let value: Value = serde_json::from_str(text).ok()?;
    ["department_ref", "reference", "ref"]
        .iter()
        .find_map(|k| match value.get(k)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_ERROR_TEXT {
        return text.to_string();
    }
    let mut end = MAX_ERROR_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error with its causes (reqwest's own message omits them).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
