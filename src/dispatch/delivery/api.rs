//! The status API: the Zhongshu-side HTTP server departments report order status to.
//! A report is answered only after the dispatch service has written it to the
//! durable log (or refused it): a 202 is a promise that the report survives a crash.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HttpResponse, error_response, header_value, json_response, path_segments};
use crate::clock::unix_ms_now;
use crate::dispatch::OrderStatus;
use crate::feeds::decode::parse_rfc3339_ms;
use crate::http::{Caller, Limits, Rate, Request, Server};

/// Largest status report body accepted.
const MAX_REPORT_BYTES: usize = 64 * 1024;
/// Longest `by` and `note` accepted, in characters.
const MAX_BY_CHARS: usize = 200;
const MAX_NOTE_CHARS: usize = 4000;
/// How long a report waits for the service to make it durable before the
/// department is told to try again.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// A report's `at` may be at most this far ahead of our clock.
const MAX_AT_AHEAD_MS: i64 = 5 * 60_000;

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

/// What became of a report, as the department is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Written to the durable log: 202.
    Recorded { status: OrderStatus },
    /// Nothing new: the order already has this status or a later one (a retry, or a
    /// report that arrived after the one it precedes): 200.
    AlreadyRecorded { status: OrderStatus },
    /// The order's state does not allow it: 409, with the reason.
    Refused { reason: String },
    /// Not written (the log is unavailable): 503, try again.
    Unavailable { reason: String },
}

/// A report on its way to the dispatch service, which must [`ReportIn::answer`] it
/// once the report is durable (or refused).
#[derive(Debug)]
pub struct ReportIn {
    pub report: StatusReport,
    reply: SyncSender<ReportOutcome>,
}

impl ReportIn {
    /// Tells the waiting department what became of its report.
    pub fn answer(self, outcome: ReportOutcome) {
        let _ = self.reply.try_send(outcome);
    }
}

/// How the status API is reached.
#[derive(Clone, Debug)]
pub struct StatusApiOptions {
    /// How long a report waits for the service to make it durable.
    pub ack_timeout: Duration,
    /// The URL departments reach the API at (`https://zhongshu.city.gov:7878`), when it
    /// is not the address it listens on (a wildcard address, a proxy, a DNS name).
    pub public_url: Option<String>,
    /// HTTPS (the default for anything beyond this machine: tokens never cross a
    /// network in clear).
    pub tls: Option<crate::http::Tls>,
    /// Requests each department's token may make (and each address without a
    /// valid one); over it, 429 with `Retry-After`.
    pub rate: Rate,
}

impl Default for StatusApiOptions {
    fn default() -> Self {
        Self {
            ack_timeout: ACK_TIMEOUT,
            public_url: None,
            tls: None,
            rate: Rate::default(),
        }
    }
}

/// The running status API; dropping it stops the server.
pub struct StatusApi {
    addr: SocketAddr,
    base_url: String,
    /// Held for its drop, which stops the server.
    _server: Server,
    snapshots: OrderSnapshots,
}

struct Shared {
    /// SHA-256 of each token → department id: tokens are compared as digests, in
    /// constant time, so neither their length nor a prefix leaks through timing.
    tokens: Vec<([u8; 32], String)>,
    reports: Sender<ReportIn>,
    snapshots: OrderSnapshots,
    ack_timeout: Duration,
}

use crate::http::token_digest as digest;

impl StatusApi {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port; see [`StatusApi::addr`]).
    /// Fails when it cannot listen, or a token is empty or shared by two departments.
    pub fn start(
        addr: &str,
        departments: Vec<DepartmentAuth>,
    ) -> anyhow::Result<(StatusApi, Receiver<ReportIn>)> {
        Self::start_with(addr, departments, StatusApiOptions::default())
    }

    /// As [`StatusApi::start`], with a public URL, TLS, and how long each report may
    /// wait to be made durable.
    pub fn start_with(
        addr: &str,
        departments: Vec<DepartmentAuth>,
        options: StatusApiOptions,
    ) -> anyhow::Result<(StatusApi, Receiver<ReportIn>)> {
        let ack_timeout = options.ack_timeout;
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
        let (reports, rx) = mpsc::channel();
        let snapshots = OrderSnapshots::default();
        let shared = Arc::new(Shared {
            tokens: tokens
                .into_iter()
                .map(|(token, department)| (digest(&token), department))
                .collect(),
            reports,
            snapshots: snapshots.clone(),
            ack_timeout,
        });
        let limits = Limits {
            max_body_bytes: MAX_REPORT_BYTES,
            rate: options.rate,
            ..Limits::default()
        };
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let gate = {
            let shared = shared.clone();
            Arc::new(move |request: &Request| gate(&shared, request))
        };
        let server = Server::start_gated(
            addr,
            "status api",
            limits,
            Some(gate),
            Arc::new(move |request| respond(&shared, &request)),
            options.tls,
        )
        .map_err(|e| anyhow::anyhow!("status API cannot listen on {addr}: {e}"))?;
        let base_url = options
            .public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("{scheme}://{}", server.addr()));
        Ok((
            StatusApi {
                addr: server.addr(),
                base_url,
                _server: server,
                snapshots,
            },
            rx,
        ))
    }

    /// The address actually bound (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where departments reach the API: the public URL when one was given, else
    /// `http(s)://{addr}`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The URL a department reports `order_id`'s status to, for the order body.
    pub fn status_url(&self, order_id: &str) -> String {
        super::status_url(&self.base_url(), order_id)
    }

    /// Requests refused so far, by why (`unauthorized`, `rate_limited`, `too_large`,
    /// `timeout`, `overloaded`, `bad_request`).
    pub fn refused(&self) -> std::collections::BTreeMap<String, u64> {
        self._server.refused()
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
}

fn respond(shared: &Shared, request: &Request) -> HttpResponse {
    use crate::http::Method;
    let Some(segments) = path_segments(request.url()) else {
        return error_response(
            400,
            "bad_path",
            "the path is not valid percent-encoded UTF-8",
        );
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method.clone();
    match (segments.as_slice(), &method) {
        (["api", "v1", "health"], &Method::GET | &Method::HEAD) => {
            json_response(200, &json!({"status": "ok"}))
        }
        (["api", "v1", "orders", order_id, "status"], &Method::POST) => {
            let order_id = order_id.to_string();
            post_status(shared, request, order_id)
        }
        (["api", "v1", "orders", order_id], &Method::GET) => get_order(shared, request, order_id),
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

/// Reads the token from the headers of a request that needs one, before its body.
fn gate(shared: &Shared, request: &Request) -> Caller {
    use crate::http::Method;
    let Some(segments) = path_segments(request.url()) else {
        return Caller::Anonymous;
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (segments.as_slice(), &request.method) {
        (["api", "v1", "orders", _, "status"], &Method::POST)
        | (["api", "v1", "orders", _], &Method::GET) => match authenticate(shared, request) {
            Ok(department) => Caller::Known(department.to_string()),
            Err(refusal) => Caller::Refused(refusal),
        },
        _ => Caller::Anonymous,
    }
}

/// The department the gate found, or the 401 to answer.
fn department_of(request: &Request) -> Result<String, HttpResponse> {
    request.caller.clone().ok_or_else(|| {
        error_response(
            401,
            "unauthorized",
            "missing Authorization: Bearer <department token>",
        )
        .with_header("WWW-Authenticate", "Bearer realm=\"zhongshu\"")
    })
}

/// The department of the bearer token, or the 401 to answer.
fn authenticate<'a>(shared: &'a Shared, request: &Request) -> Result<&'a str, HttpResponse> {
    let unauthorized = |message: &str| {
        error_response(401, "unauthorized", message)
            .with_header("WWW-Authenticate", "Bearer realm=\"zhongshu\"")
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
    // Every known token is compared (no early return), digest against digest.
    let presented = digest(token);
    let mut found = None;
    for (known, department) in &shared.tokens {
        if crate::http::digests_equal(known, &presented) {
            found = Some(department.as_str());
        }
    }
    found.ok_or_else(|| unauthorized("unknown token"))
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

fn post_status(shared: &Shared, request: &Request, order_id: String) -> HttpResponse {
    let department = match department_of(request) {
        Ok(d) => d,
        Err(response) => return response,
    };
    if !valid_order_id(&order_id) {
        return error_response(
            400,
            "bad_order_id",
            format!("{order_id:?} is not an order id"),
        );
    }
    let report = match parse_report(&request.body, &order_id, &department) {
        Ok(r) => r,
        Err((error, message)) => return error_response(400, error, message),
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let unavailable =
        |message: &str| error_response(503, "unavailable", message).with_header("Retry-After", "2");
    if shared.reports.send(ReportIn { report, reply }).is_err() {
        return unavailable("Zhongshu is shutting down; try again");
    }
    let body = |accepted: bool, status: OrderStatus| {
        json!({
            "accepted": accepted,
            "order_id": order_id,
            "department": department,
            "status": status,
        })
    };
    match answer.recv_timeout(shared.ack_timeout) {
        Ok(ReportOutcome::Recorded { status }) => json_response(202, &body(true, status)),
        Ok(ReportOutcome::AlreadyRecorded { status }) => json_response(200, &body(false, status)),
        Ok(ReportOutcome::Refused { reason }) => error_response(409, "refused", reason),
        Ok(ReportOutcome::Unavailable { reason }) => {
            unavailable(&format!("the report is not recorded ({reason}); try again"))
        }
        Err(_) => unavailable("the report is not recorded yet; try again (a repeat is harmless)"),
    }
}

/// The report in a body, or (error code, message) naming the problem.
pub(crate) fn parse_report(
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
    if at_ms > received_at_ms.saturating_add(MAX_AT_AHEAD_MS) {
        return Err((
            "bad_field",
            "`at` is more than 5 minutes ahead of Zhongshu's clock".to_string(),
        ));
    }
    Ok(StatusReport {
        order_id: order_id.to_string(),
        department: department.to_string(),
        status,
        by: crate::dispatch::clean_text(by),
        note: note.map(crate::dispatch::clean_text),
        at_ms,
        received_at_ms,
    })
}

fn get_order(shared: &Shared, request: &Request, order_id: &str) -> HttpResponse {
    let department = match department_of(request) {
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
