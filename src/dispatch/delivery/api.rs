//! The status API: the Zhongshu-side HTTP server departments report order status to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    HttpResponse, body_error_response, error_response, header_value, json_response, path_segments,
    read_body,
};
use crate::dispatch::OrderStatus;
use crate::feeds::decode::parse_rfc3339_ms;
use crate::feeds::poll::unix_ms_now;

/// Largest status report body accepted.
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Longest `by` and `note` accepted, in characters.
const MAX_BY_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 4000;
/// Request-handling threads.
const WORKERS: usize = 4;

/// A department and the bearer token it reports with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepartmentAuth {
    pub id: String,
    pub token: String,
}

/// A status report a department made, authenticated but not yet checked against the
/// order (the integrator checks the order is that department's and the transition is
/// legal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusReport {
    /// As in the URL path (percent-decoded).
    pub order_id: String,
    /// The department whose token was presented.
    pub department: String,
    /// `Acknowledged`, `InProgress`, `Done` or `Rejected`.
    pub status: OrderStatus,
    /// The person at the department.
    pub by: String,
    pub note: Option<String>,
    /// When it happened, per the department (`at`), else when received.
    pub at_ms: i64,
    /// When Zhongshu received it.
    pub received_at_ms: i64,
}

/// What `GET /api/v1/orders/{id}` answers (to the order's own department only).
/// The integrator publishes these with [`StatusApi::publish`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    pub order_id: String,
    pub incident_id: String,
    pub department: String,
    pub status: OrderStatus,
    pub instruction: String,
    pub deadline_ms: i64,
    pub issued_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Order snapshots by order id, shared between the integrator and the server.
pub type OrderSnapshots = Arc<RwLock<HashMap<String, OrderSnapshot>>>;

/// The running status API; dropping it stops the server.
pub struct StatusApi {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    snapshots: OrderSnapshots,
}

struct Shared {
    /// Token → department id.
    tokens: HashMap<String, String>,
    reports: Sender<StatusReport>,
    snapshots: OrderSnapshots,
}

impl StatusApi {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port; see [`StatusApi::addr`]).
    /// Fails when it cannot listen, or a token is empty or shared by two departments.
    pub fn start(
        addr: &str,
        departments: Vec<DepartmentAuth>,
    ) -> anyhow::Result<(StatusApi, Receiver<StatusReport>)> {
        let mut tokens = HashMap::new();
        for d in departments {
            if d.token.trim().is_empty() {
                anyhow::bail!("department {:?} has an empty status token", d.id);
            }
            if let Some(other) = tokens.insert(d.token.clone(), d.id.clone())
                && other != d.id
            {
                anyhow::bail!(
                    "departments {other:?} and {:?} have the same status token",
                    d.id
                );
            }
        }
        let server = tiny_http::Server::http(addr)
            .map_err(|e| anyhow::anyhow!("status API cannot listen on {addr}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| anyhow::anyhow!("status API on {addr}: not an IP address"))?;
        let (reports, rx) = mpsc::channel();
        let snapshots = OrderSnapshots::default();
        let shared = Arc::new(Shared {
            tokens,
            reports,
            snapshots: snapshots.clone(),
        });
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..WORKERS)
            .map(|i| {
                let (server, shared, stop) = (server.clone(), shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("status api {i}"))
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            match server.recv_timeout(Duration::from_millis(100)) {
                                Ok(Some(request)) => handle(&shared, request),
                                Ok(None) => {}
                                Err(_) => break,
                            }
                        }
                    })
                    .expect("spawn a status API thread")
            })
            .collect();
        Ok((
            StatusApi {
                addr: bound,
                stop,
                threads,
                snapshots,
            },
            rx,
        ))
    }

    /// The address actually bound (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`. When listening on a wildcard address (0.0.0.0), departments
    /// need the machine's public name instead: build URLs with [`super::status_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL a department reports `order_id`'s status to, for the order body.
    pub fn status_url(&self, order_id: &str) -> String {
        super::status_url(&self.base_url(), order_id)
    }

    /// The snapshots `GET /api/v1/orders/{id}` answers from.
    pub fn snapshots(&self) -> OrderSnapshots {
        self.snapshots.clone()
    }

    /// Publishes (or replaces) an order's snapshot.
    pub fn publish(&self, snapshot: OrderSnapshot) {
        self.snapshots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(snapshot.order_id.clone(), snapshot);
    }

    /// Stops the server and waits for its threads.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StatusApi {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn handle(shared: &Shared, mut request: tiny_http::Request) {
    let response = respond(shared, &mut request);
    let _ = request.respond(response);
}

fn respond(shared: &Shared, request: &mut tiny_http::Request) -> HttpResponse {
    use tiny_http::Method;
    let Some(segments) = path_segments(request.url()) else {
        return error_response(
            400,
            "bad_path",
            "the path is not valid percent-encoded UTF-8",
        );
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (segments.as_slice(), &method) {
        (["api", "v1", "health"], Method::Get | Method::Head) => {
            json_response(200, &json!({"status": "ok"}))
        }
        (["api", "v1", "orders", order_id, "status"], Method::Post) => {
            let order_id = order_id.to_string();
            post_status(shared, request, order_id)
        }
        (["api", "v1", "orders", order_id], Method::Get) => get_order(shared, request, order_id),
        (["api", "v1", "health"], _)
        | (["api", "v1", "orders", _, "status"], _)
        | (["api", "v1", "orders", _], _) => error_response(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {}", request.url()),
        ),
        _ => error_response(
            404,
            "not_found",
            format!("no such resource: {}", request.url()),
        ),
    }
}

/// The department of the bearer token, or the 401 to answer.
fn authenticate<'a>(
    shared: &'a Shared,
    request: &tiny_http::Request,
) -> Result<&'a str, HttpResponse> {
    let unauthorized = |message: &str| {
        error_response(401, "unauthorized", message).with_header(
            tiny_http::Header::from_bytes("WWW-Authenticate", "Bearer realm=\"zhongshu\"")
                .expect("static header"),
        )
    };
    let Some(value) = header_value(request, "Authorization") else {
        return Err(unauthorized(
            "missing Authorization: Bearer <department token>",
        ));
    };
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(unauthorized(
                "the Authorization header is not a Bearer token",
            ));
        }
    };
    shared
        .tokens
        .iter()
        .find(|(known, _)| constant_time_eq(known.as_bytes(), token.as_bytes()))
        .map(|(_, department)| department.as_str())
        .ok_or_else(|| unauthorized("unknown token"))
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_order_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)
}

/// Parses a status word as the API spells it.
fn parse_status(word: &str) -> Option<OrderStatus> {
    Some(match word {
        "acknowledged" => OrderStatus::Acknowledged,
        "in_progress" => OrderStatus::InProgress,
        "done" => OrderStatus::Done,
        "rejected" => OrderStatus::Rejected,
        _ => return None,
    })
}

fn post_status(
    shared: &Shared,
    request: &mut tiny_http::Request,
    order_id: String,
) -> HttpResponse {
    let department = match authenticate(shared, request) {
        Ok(d) => d.to_string(),
        Err(response) => return response,
    };
    if !valid_order_id(&order_id) {
        return error_response(
            400,
            "bad_order_id",
            format!("{order_id:?} is not an order id"),
        );
    }
    let body = match read_body(request, MAX_REPORT_BYTES) {
        Ok(b) => b,
        Err(e) => return body_error_response(e),
    };
    let report = match parse_report(&body, &order_id, &department) {
        Ok(r) => r,
        Err((error, message)) => return error_response(400, error, message),
    };
    let status = report.status;
    if shared.reports.send(report).is_err() {
        return error_response(503, "unavailable", "Zhongshu is shutting down; try again");
    }
    json_response(
        202,
        &json!({
            "accepted": true,
            "order_id": order_id,
            "department": department,
            "status": status,
        }),
    )
}

/// The report in a body, or (error code, message) naming the problem.
fn parse_report(
    body: &[u8],
    order_id: &str,
    department: &str,
) -> Result<StatusReport, (&'static str, String)> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ("bad_json", format!("the body is not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(("bad_json", "the body is not a JSON object".into()));
    };
    let text = |name: &str| -> Result<Option<&str>, (&'static str, String)> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err((
                "bad_field",
                format!("`{name}` must be a string, not {other}"),
            )),
        }
    };
    let word = text("status")?.ok_or(("missing_field", "`status` is required".to_string()))?;
    let status = parse_status(word).ok_or_else(|| {
        (
            "unknown_status",
            format!(
                "status {word:?} is not one of \"acknowledged\", \"in_progress\", \"done\", \"rejected\""
            ),
        )
    })?;
    let by = text("by")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or((
            "missing_field",
            "`by` (the person reporting) is required".to_string(),
        ))?;
    if by.chars().count() > MAX_BY_CHARS {
        return Err((
            "bad_field",
            format!("`by` is longer than {MAX_BY_CHARS} characters"),
        ));
    }
    let note = text("note")?.map(str::trim).filter(|s| !s.is_empty());
    if note.is_some_and(|n| n.chars().count() > MAX_NOTE_CHARS) {
        return Err((
            "bad_field",
            format!("`note` is longer than {MAX_NOTE_CHARS} characters"),
        ));
    }
    let received_at_ms = unix_ms_now();
    let at_ms = match text("at")? {
        None => received_at_ms,
        Some(at) => parse_rfc3339_ms(at).ok_or_else(|| {
            (
                "bad_field",
                format!("`at` = {at:?} is not an RFC 3339 time"),
            )
        })?,
    };
    Ok(StatusReport {
        order_id: order_id.to_string(),
        department: department.to_string(),
        status,
        by: by.to_string(),
        note: note.map(str::to_string),
        at_ms,
        received_at_ms,
    })
}

fn get_order(shared: &Shared, request: &tiny_http::Request, order_id: &str) -> HttpResponse {
    let department = match authenticate(shared, request) {
        Ok(d) => d,
        Err(response) => return response,
    };
    let snapshots = shared.snapshots.read().unwrap_or_else(|e| e.into_inner());
    match snapshots.get(order_id) {
        // Another department's order reads as unknown: nothing leaks across.
        Some(s) if s.department == department => json_response(
            200,
            &serde_json::to_value(s).expect("a snapshot serialises"),
        ),
        _ => error_response(
            404,
            "not_found",
            format!("no order {order_id:?} for {department}"),
        ),
    }
}
