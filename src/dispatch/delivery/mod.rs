//! Delivery of orders to departments over HTTP (outbox with retries, idempotency key),
//! the department status API, and the department simulator.
//!
//! The durable event log stays with the integrator; this module only talks HTTP and
//! hands results back on std mpsc channels:
//!
//! - [`Outbox`]: `send(OutgoingOrder)` POSTs an order (or an urge) to a department,
//!   retrying with exponential backoff and jitter until the department has it, and
//!   reports [`DeliveryEvent`]s. Every request carries `Idempotency-Key: <order id>`
//!   (`<order id>:urge:<n>` for urges), so re-sending after a restart is harmless.
//!   One thread per department endpoint: a hanging department delays only itself.
//! - [`StatusApi`]: the Zhongshu-side HTTP server departments report to
//!   (`POST /api/v1/orders/{id}/status` with a bearer token); accepted reports come
//!   out as [`StatusReport`]s.
//! - [`DepartmentSim`]: a department (or many) over HTTP that de-duplicates by
//!   idempotency key, fails on purpose, and reports acknowledged → in progress → done,
//!   rejects or ignores orders; `zhongshu serve-departments` runs it
//!   ([`run_serve_departments`]).
//!
//! Every request to a department is signed: `Zhongshu-Signature: t=<unix seconds>,
//! v1=<hex HMAC-SHA256(department token, "<t>\n<method>\n<idempotency key>\n<body>")>`
//! ([`sign`], [`verify_signature`]), so a department can tell Zhongshu's orders from
//! forged or replayed ones.
//!
//! HTTP contract in short: orders are `POST {endpoint}/orders` with
//! `Idempotency-Key: <log id>:<order id>` (the log id is random per event log, so a
//! new log's `ORD-000001` is never taken for an old one's); a 2xx answered with a JSON
//! body (or no body), or 409, means delivered; 408/429/5xx, a 2xx with another kind of
//! body (an HTML maintenance page from a proxy) and network errors are retried, up to
//! a bound; 307/308 are followed to the same host and scheme; any other status is a
//! permanent failure, shown to the dispatcher on the incident's timeline. Urges are
//! `POST {endpoint}/orders/{id}/urge` with `Idempotency-Key: <log id>:<order id>:urge:<n>`;
//! an order withdrawn (its incident resolved or closed) is
//! `POST {endpoint}/orders/{id}/cancel` with `Idempotency-Key: <log id>:<order id>:cancel`.
//! Departments report with `POST {status_url}` (`/api/v1/orders/{id}/status`),
//! `Authorization: Bearer <department token>` and
//! `{"status": "acknowledged"|"in_progress"|"done"|"rejected", "by", "note"?, "at"?}`:
//! 202 recorded in the durable log (only then), 200 already recorded (a repeat, or a
//! step a later report already implied), 409 refused by the order's state (with the
//! reason), 401 unknown token, 400 malformed (JSON `{"error", "message"}`), 503 not
//! recorded yet (retry).

use serde_json::{Value, json};

use crate::clock::rfc3339_from_unix_ms;

mod api;
mod outbox;
mod sim;
#[cfg(test)]
mod tests;

pub(crate) use api::parse_report;
pub use api::{
    ACK_TIMEOUT, DepartmentAuth, OrderSnapshot, OrderSnapshots, ReportIn, ReportOutcome, StatusApi,
    StatusApiOptions, StatusReport,
};
pub(crate) use outbox::department_ref;
pub use outbox::{DeliveryEvent, Outbox, OutboxConfig, OutgoingOrder};
pub use sim::{
    DepartmentSim, SimBehaviour, SimFate, SimJob, SimStats, default_token, run_serve_departments,
};

/// The header that carries an order's signature.
pub const SIGNATURE_HEADER: &str = "Zhongshu-Signature";
/// How far a signature's time may be from the receiver's clock.
pub const SIGNATURE_TOLERANCE_S: i64 = 300;

/// The signature of a request sent at Unix second `t` under a department's key (its
/// token): `t=<t>,v1=<hex HMAC-SHA256(key, "<t>\n<method>\n<idempotency key>\n<body>")>`.
/// The idempotency key names the order and the kind of request (`…:urge:<n>`,
/// `…:cancel`), so a signed request cannot be replayed as another.
pub fn sign(key: &str, t: i64, method: &str, idempotency_key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{t}\n{method}\n{idempotency_key}\n").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// Checks a signature header against the body and key, at Unix second `now_s`:
/// `Err` says what is wrong (missing parts, too old or too new, not matching).
pub fn verify_signature(
    header: &str,
    key: &str,
    method: &str,
    idempotency_key: &str,
    body: &[u8],
    now_s: i64,
) -> Result<(), String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = Some(value.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(format!(
            "{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex>"
        ));
    };
    if (now_s - t).abs() > SIGNATURE_TOLERANCE_S {
        return Err(format!(
            "the signature's time is {} s away from ours (at most {SIGNATURE_TOLERANCE_S})",
            now_s - t
        ));
    }
    let expected = sign(key, t, method, idempotency_key, body);
    let given = format!("t={t},v1={v1}");
    // Compared as digests, without stopping at the first difference (nor at a
    // difference in length).
    let same = crate::http::digests_equal(
        &crate::http::token_digest(&expected),
        &crate::http::token_digest(&given),
    );
    if same {
        Ok(())
    } else {
        Err("the signature does not match the body".into())
    }
}

/// The JSON body of an order as delivered to a department (`POST {endpoint}/orders`).
/// `status_url` is written verbatim: pass [`StatusApi::status_url`] (or
/// [`status_url`] with the public base URL of the status API), the exact URL the
/// department reports this order's status to. Times are given both as Unix
/// milliseconds and as RFC 3339.
#[allow(clippy::too_many_arguments)]
pub fn order_body(
    order_id: &str,
    incident_id: &str,
    department: &str,
    instruction: &str,
    deadline_ms: i64,
    issued_at_ms: i64,
    status_url: &str,
    incident: Value,
) -> Value {
    json!({
        "order_id": order_id,
        "incident_id": incident_id,
        "department": department,
        "instruction": instruction,
        "deadline_ms": deadline_ms,
        "deadline": rfc3339_from_unix_ms(deadline_ms),
        "issued_at_ms": issued_at_ms,
        "issued_at": rfc3339_from_unix_ms(issued_at_ms),
        "status_url": status_url,
        "incident": incident,
    })
}

/// The JSON body of an urge (`POST {endpoint}/orders/{id}/urge`). `urge_seq` is the
/// number of this urge for the order (1, 2, ...); the outbox uses it in the
/// idempotency key, so take it from the log to keep it stable across restarts.
pub fn urge_body(order_id: &str, urge_seq: u32, by: &str, note: Option<&str>) -> Value {
    json!({
        "order_id": order_id,
        "urge_seq": urge_seq,
        "by": by,
        "note": note,
    })
}

/// The status URL of one order under a status API reachable at `base_url`
/// (`http://host:port`, no trailing slash needed):
/// `{base_url}/api/v1/orders/{order_id}/status`.
pub fn status_url(base_url: &str, order_id: &str) -> String {
    format!(
        "{}/api/v1/orders/{}/status",
        base_url.trim_end_matches('/'),
        encode_segment(order_id)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters (one path segment).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes one percent-encoded path segment; `None` if malformed or not UTF-8.
fn decode_segment(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path of a request URL split into decoded segments (query string dropped).
pub(crate) fn path_segments(url: &str) -> Option<Vec<String>> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect()
}

/// A small deterministic generator (SplitMix64): jitter and the simulator's dice.
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A well-mixed hash of a seed and some strings (FNV-1a, then SplitMix's finaliser).
fn hash_parts(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64 ^ mix(seed);
    for p in parts {
        for b in p.bytes().chain([0xFF]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01B3);
        }
    }
    mix(h)
}

/// Uniform in [0, 1) from a hash.
fn unit_of(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

type HttpResponse = crate::http::Response;

fn json_response(status: u16, body: &Value) -> HttpResponse {
    crate::http::Response::json(status, body)
}

fn error_response(status: u16, error: &str, message: impl Into<String>) -> HttpResponse {
    crate::http::Response::error(status, error, message)
}

/// A request header's value (first of that name, case-insensitive).
fn header_value(request: &crate::http::Request, name: &str) -> Option<String> {
    request.header(name)
}
