//! NGSI-LD notifications (`kind = "ngsi-ld-notify"`): instead of polling, Zhongshu
//! subscribes with the context broker (`POST /ngsi-ld/v1/subscriptions`) for the
//! entity types of the feed's `url` (an entities query, `…/entities?type=T&q=…`) and
//! takes in the notifications the broker POSTs to its own endpoint
//! (`http(s)://LISTEN/notify`, on the project's hardened HTTP server).
//!
//! - The subscription asks the broker to send a token in `receiverInfo` as the
//!   `Authorization` header (the feed's `token`, else a new random one each run), and
//!   a notification without it is refused with 401.
//! - It has an id of its own per feed and endpoint, so a restart renews the same
//!   subscription instead of piling up new ones, and it lasts `subscription_s`; every
//!   `interval_s` the feed asks the broker how it stands and renews it when half of
//!   that is left or the broker paused it; one the broker forgot (it restarted) is
//!   made again.
//! - What the broker holds is read once (a paged query of `url`) when the feed
//!   starts and whenever notifications may have been missed (the subscription was
//!   lost, or the broker could not be reached), so the map never waits for the next
//!   change and never keeps a gap.
//! - When the feed stops the subscription is deleted: nobody listens there any more.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::cap_intake::{
    bearer_matches, configured_tls, configured_token, hand_on, report_refusals,
};
use super::config::{FeedConfig, FeedKind};
use super::gazetteer::Gazetteer;
use super::poll::{
    Conditional, FeedEvent, MAX_BACKOFF, NGSI_LD_CORE_CONTEXT, backoff_after,
    describe_reqwest_error, feed_client, nap, poll_once,
};
use crate::clock::{rfc3339_from_unix_ms, unix_ms_now};
use crate::http::{Caller, Gate, Handler, Limits, Method, Request, Response, Server};
use crate::model::{Decoded, FeedId, Reject, RejectReason};

/// The largest notification taken (the feed's `max_payload_bytes`, at most this).
const MAX_NOTIFICATION_BYTES: usize = 16 * 1024 * 1024;

/// Shortest and longest subscription accepted, seconds.
const SUBSCRIPTION_S: std::ops::RangeInclusive<f64> = 5.0..=30.0 * 86_400.0;

/// What a feed subscribes to, read from its settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// The broker's subscriptions (`…/ngsi-ld/v1/subscriptions`).
    pub endpoint: String,
    /// The subscription's id, the same for a feed and its endpoint across restarts.
    pub id: String,
    /// Entity types (from the url's `type`).
    pub types: Vec<String>,
    /// The url's `q` query, if any.
    pub q: Option<String>,
    /// The url's `idPattern`, if any.
    pub id_pattern: Option<String>,
    /// The url's geo-query (`georel`, `geometry`, `coordinates`, `geoproperty`).
    pub geo_q: Option<Value>,
    /// Where the broker posts notifications.
    pub notify_url: String,
    /// The path notifications come to on this machine.
    pub notify_path: String,
}

impl Subscription {
    /// The subscription as the broker is sent it (without `id` for a PATCH).
    fn body(&self, feed: &str, token: &str, expires_ms: i64) -> Value {
        let mut body = json!({
            "type": "Subscription",
            "description": format!("Zhongshu feed {feed}"),
            "entities": self.types.iter().map(|t| match &self.id_pattern {
                Some(p) => json!({"type": t, "idPattern": p}),
                None => json!({"type": t}),
            }).collect::<Vec<_>>(),
            "notification": {
                "format": "normalized",
                "endpoint": {
                    "uri": self.notify_url,
                    "accept": "application/json",
                    "receiverInfo": [{"key": "Authorization", "value": format!("Bearer {token}")}],
                },
            },
            "expiresAt": rfc3339_from_unix_ms(expires_ms),
            "isActive": true,
        });
        if let Some(q) = &self.q {
            body["q"] = json!(q);
        }
        if let Some(geo_q) = &self.geo_q {
            body["geoQ"] = geo_q.clone();
        }
        body
    }
}

/// Checks an `ngsi-ld-notify` feed's settings when the feeds file is read.
pub fn check(feed: &FeedConfig) -> Result<(), String> {
    subscription_of(feed)?;
    if !SUBSCRIPTION_S.contains(&feed.subscription_s) {
        return Err(format!(
            "subscription_s must be between {} and {} seconds, got {}",
            SUBSCRIPTION_S.start(),
            SUBSCRIPTION_S.end(),
            feed.subscription_s
        ));
    }
    Ok(())
}

/// What a feed subscribes to: the broker and the query from its `url`, where
/// notifications go from `notify_url` or `listen`.
pub fn subscription_of(feed: &FeedConfig) -> Result<Subscription, String> {
    const EXAMPLE: &str = "http://HOST:1026/ngsi-ld/v1/entities?type=AirQualityObserved";
    let Some(url) = feed.url.as_deref() else {
        return Err(format!(
            "kind ngsi-ld-notify needs a url: the broker's entities query ({EXAMPLE})"
        ));
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url must start with http:// or https://, got {url:?}"
        ));
    }
    let path = parsed.path().trim_end_matches('/');
    let Some(root) = path.strip_suffix("/entities") else {
        return Err(format!(
            "url must be the broker's entities query, ending in /entities ({EXAMPLE}), got {url:?}"
        ));
    };
    let mut types = Vec::new();
    let mut q = None;
    let mut id_pattern = None;
    let mut geo = serde_json::Map::new();
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "type" => types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            ),
            "q" => q = Some(value.into_owned()),
            "idPattern" => id_pattern = Some(value.into_owned()),
            "georel" | "geometry" | "coordinates" | "geoproperty" => {
                let value = match key.as_ref() {
                    // Coordinates are JSON in a subscription, text in a query.
                    "coordinates" => serde_json::from_str(&value)
                        .map_err(|e| format!("url's coordinates= is not a JSON array: {e}"))?,
                    _ => Value::String(value.into_owned()),
                };
                geo.insert(key.into_owned(), value);
            }
            // How a query pages and answers: nothing to subscribe to.
            "limit" | "offset" | "count" | "options" | "format" | "local" => {}
            other => {
                return Err(format!(
                    "url's {other}= cannot be put in a subscription (type, q, idPattern and a geo-query can); leave it out, or poll with kind = \"ngsi-ld\""
                ));
            }
        }
    }
    let geo_q = match geo.len() {
        0 => None,
        _ if geo.contains_key("georel")
            && geo.contains_key("geometry")
            && geo.contains_key("coordinates") =>
        {
            Some(Value::Object(geo))
        }
        _ => {
            return Err("url's geo-query needs georel, geometry and coordinates together".into());
        }
    };
    if types.is_empty() {
        return Err(format!(
            "url must name the entity types to subscribe to with type= ({EXAMPLE}), got {url:?}"
        ));
    }
    let mut endpoint = parsed.clone();
    endpoint.set_query(None);
    endpoint.set_fragment(None);
    endpoint.set_path(&format!("{root}/subscriptions"));
    let listen = feed.listen.as_deref().unwrap_or_default().trim();
    let notify_url = match &feed.notify_url {
        Some(given) => {
            let u = reqwest::Url::parse(given).map_err(|e| format!("notify_url {given:?}: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!(
                    "notify_url must start with http:// or https://, got {given:?}"
                ));
            }
            let loopback = u.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            });
            if u.scheme() == "http" && !loopback {
                return Err(format!(
                    "notify_url {given:?} is plain http beyond this machine: the broker would send the token in clear; give an https address"
                ));
            }
            given.clone()
        }
        None => {
            if listen
                .parse::<SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified())
            {
                return Err(format!(
                    "listen {listen} is every address of this machine: give notify_url, the address the broker reaches it by"
                ));
            }
            let scheme = if feed.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}/notify")
        }
    };
    let notify_path = reqwest::Url::parse(&notify_url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "/notify".into());
    // One id per feed and endpoint: a restart renews its subscription, and two
    // consoles listening at different addresses never take over each other's.
    let digest = crate::http::token_digest(&format!("{}\n{notify_url}", feed.name));
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let name: String = feed
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    Ok(Subscription {
        endpoint: endpoint.to_string().trim_end_matches('/').to_string(),
        id: format!("urn:ngsi-ld:Subscription:zhongshu-{name}-{hex}"),
        types,
        q,
        id_pattern,
        geo_q,
        notify_url,
        notify_path,
    })
}

/// Reads one NGSI-LD notification (`{"type": "Notification", "subscriptionId": …,
/// "data": [entities]}`) into the entities it carries.
pub fn decode_notification(body: &[u8]) -> Result<Decoded, String> {
    #[derive(serde::Deserialize)]
    struct Notification<'a> {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    let notification: Notification =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON notification: {e}"))?;
    if let Some(kind) = notification.kind.as_deref()
        && kind != "Notification"
    {
        return Err(format!("its type is {kind:?}, not \"Notification\""));
    }
    let Some(data) = notification.data else {
        return Err("it has no data member (a notification carries its entities in data)".into());
    };
    super::decode::decode_ngsi_ld(data.get().as_bytes()).map_err(|e| e.to_string())
}

/// A random token, 32 hex digits.
fn random_token() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What the endpoint lets through, read from the headers before the body: the path,
/// the method and the token.
fn notification_gate(path: String, known: [u8; 32]) -> Gate {
    Arc::new(move |request: &Request| {
        if request.url().split('?').next() != Some(path.as_str()) {
            return Caller::Refused(Response::error(
                404,
                "not_found",
                format!("POST notifications to {path}"),
            ));
        }
        if request.method != Method::POST {
            return Caller::Refused(
                Response::error(
                    405,
                    "method_not_allowed",
                    format!("POST notifications to {path}"),
                )
                .with_header("Allow", "POST"),
            );
        }
        if bearer_matches(request, &known) {
            Caller::Known("broker".into())
        } else {
            Caller::Refused(
                Response::error(
                    401,
                    "unauthorized",
                    "the token this subscription was made with is missing or wrong",
                )
                .with_header("WWW-Authenticate", "Bearer"),
            )
        }
    })
}

/// The endpoint's handler: notifications the gate let through, decoded and sent on.
fn notification_handler(
    id: FeedId,
    types: Vec<String>,
    coords: crate::map::crs::Coords,
    tx: Sender<FeedEvent>,
) -> Handler {
    let tx = Mutex::new(tx);
    // A type matches by name, or by the end of an expanded one (`…/AirQualityObserved`).
    let subscribed = move |t: &str| {
        types.iter().any(|s| {
            s == t
                || t.strip_suffix(s.as_str())
                    .is_some_and(|p| p.ends_with(['/', '#', ':']))
                || s.strip_suffix(t)
                    .is_some_and(|p| p.ends_with(['/', '#', ':']))
        })
    };
    Arc::new(move |request: Request| {
        if request.caller.is_none() {
            return Response::error(401, "unauthorized", "no token");
        }
        match decode_notification(&request.body) {
            Ok(mut decoded) => {
                super::decode::positions_to_wgs84(&mut decoded, coords);
                // Only what the feed subscribed to: a notification carrying another
                // type (an Alert would raise incidents) is refused item by item.
                let (kept, other): (Vec<_>, Vec<_>) = std::mem::take(&mut decoded.updates)
                    .into_iter()
                    .partition(|u| subscribed(&u.entity_type));
                decoded.updates = kept;
                decoded.rejects.extend(other.into_iter().map(|u| Reject {
                    reason: RejectReason::NotSubscribed,
                    detail: format!("type {} is not what this feed subscribed to", u.entity_type),
                    item_id: Some(u.id),
                    path: None,
                }));
                let answer =
                    json!({"taken": decoded.updates.len(), "rejected": decoded.rejects.len()});
                if !hand_on(&tx, id, &request, Ok(decoded), "a notification") {
                    return Response::error(503, "unavailable", "Zhongshu is stopping");
                }
                Response::json(200, &answer)
            }
            Err(e) => {
                hand_on(&tx, id, &request, Err(e.clone()), "a notification");
                Response::error(400, "not_a_notification", e)
            }
        }
    })
}

/// Why a step failed: a machine-readable cause and the text.
type Failure = (&'static str, String);

/// How the broker says the subscription stands.
struct Standing {
    active: bool,
    expires_ms: Option<i64>,
}

/// The feed's side of the subscription.
struct Subscriber<'a> {
    feed: &'a FeedConfig,
    sub: Subscription,
    client: reqwest::blocking::Client,
    token: String,
    /// The id the broker knows the subscription by: ours, unless it gave its own
    /// (`Location` of its 201).
    id: std::cell::RefCell<String>,
}

impl Subscriber<'_> {
    fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::blocking::RequestBuilder, Failure> {
        let mut request = self.client.request(method, url).header(
            "Link",
            format!(
                "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                self.feed.context.as_deref().unwrap_or(NGSI_LD_CORE_CONTEXT)
            ),
        );
        for (name, value) in &self.feed.headers {
            let value = super::config::header_value(value)
                .map_err(|e| ("client", format!("header {name}: {e}")))?;
            request = request.header(name.as_str(), value);
        }
        Ok(request)
    }

    /// Sends a request: its status and (the start of) its body.
    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<(u16, String), Failure> {
        use std::io::Read;
        let response = request.send().map_err(|e| describe_reqwest_error(&e))?;
        let status = response.status().as_u16();
        // A broker that names subscriptions itself says which it made.
        if status == 201
            && let Some(made) = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
                .filter(|id| !id.is_empty())
        {
            *self.id.borrow_mut() = made.to_string();
        }
        let mut body = String::new();
        let _ = response.take(256 * 1024).read_to_string(&mut body);
        Ok((status, body))
    }

    fn refused(&self, what: &str, status: u16, body: &str) -> Failure {
        // NGSI-LD errors are problem details: a title and a detail.
        let detail = serde_json::from_str::<Value>(body)
            .ok()
            .map(|v| {
                [v.get("title"), v.get("detail")]
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| body.chars().take(200).collect());
        (
            "http_status",
            format!("the broker answered {what} with HTTP {status}: {detail}"),
        )
    }

    fn at(&self) -> String {
        format!("{}/{}", self.sub.endpoint, self.id.borrow())
    }

    /// Makes the subscription (or, when the broker already has it, updates it).
    fn subscribe(&self, expires_ms: i64) -> Result<(), Failure> {
        let mut body = self.sub.body(&self.feed.name, &self.token, expires_ms);
        body["id"] = json!(self.sub.id);
        *self.id.borrow_mut() = self.sub.id.clone();
        let request = self
            .request(reqwest::Method::POST, &self.sub.endpoint)?
            .header("Content-Type", "application/json")
            .body(body.to_string());
        match self.send(request)? {
            (200..=299, _) => Ok(()),
            // Made before (by this feed, before a restart): bring it up to date.
            (409, _) => match self.renew(expires_ms)? {
                true => Ok(()),
                false => Err((
                    "http_status",
                    "the broker says the subscription both exists and does not".into(),
                )),
            },
            (status, body) => Err(self.refused("the subscription", status, &body)),
        }
    }

    /// Renews the subscription; `false` when the broker does not have it.
    fn renew(&self, expires_ms: i64) -> Result<bool, Failure> {
        let body = self.sub.body(&self.feed.name, &self.token, expires_ms);
        let request = self
            .request(reqwest::Method::PATCH, &self.at())?
            .header("Content-Type", "application/json")
            .body(body.to_string());
        match self.send(request)? {
            (200..=299, _) => Ok(true),
            (404, _) => Ok(false),
            (status, body) => Err(self.refused("the renewal", status, &body)),
        }
    }

    /// How the subscription stands at the broker; `None` when it has none.
    fn standing(&self) -> Result<Option<Standing>, Failure> {
        let request = self
            .request(reqwest::Method::GET, &self.at())?
            .header("Accept", "application/json");
        match self.send(request)? {
            (200, body) => {
                let v: Value = serde_json::from_str(&body).map_err(|e| {
                    (
                        "not_json",
                        format!("the subscription, as the broker shows it: {e}"),
                    )
                })?;
                let status = v.get("status").and_then(Value::as_str);
                let active = v.get("isActive").and_then(Value::as_bool) != Some(false)
                    && status.is_none_or(|s| s == "active");
                let expires_ms = v
                    .get("expiresAt")
                    .and_then(Value::as_str)
                    .and_then(super::decode::parse_rfc3339_ms);
                Ok(Some(Standing { active, expires_ms }))
            }
            (404, _) => Ok(None),
            (status, body) => Err(self.refused("the subscription's status", status, &body)),
        }
    }

    fn delete(&self) {
        if let Ok(request) = self.request(reqwest::Method::DELETE, &self.at()) {
            let _ = request.timeout(Duration::from_secs(2)).send();
        }
    }
}

/// Runs one notification feed until `stop`: its endpoint, its subscription, and a
/// read of the broker when notifications may have been missed.
pub fn run(
    id: FeedId,
    feed: FeedConfig,
    places: &Gazetteer,
    tx: Sender<FeedEvent>,
    stop: &AtomicBool,
) {
    let fail = |error: String| {
        let _ = tx.send(FeedEvent::PollFailed {
            feed: id,
            at_ms: unix_ms_now(),
            reason: "client",
            error,
            retry_in: MAX_BACKOFF,
        });
    };
    let sub = match subscription_of(&feed) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let token = match configured_token(&feed) {
        Ok(Some(t)) => t,
        Ok(None) => match random_token() {
            Ok(t) => t,
            Err(e) => return fail(e),
        },
        Err(e) => return fail(e),
    };
    let tls = match configured_tls(&feed) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let client = match feed_client(&feed) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let listen = feed.listen.clone().unwrap_or_default();
    let limits = Limits {
        max_body_bytes: feed.max_payload_bytes.min(MAX_NOTIFICATION_BYTES),
        // A city's broker sends a notification per change: far more than a person
        // or an agency. What is refused anyway is read back (below).
        rate: crate::http::Rate::per_second(feed.rate_per_s.unwrap_or(5_000.0)),
        ..Limits::default()
    };
    let gate = notification_gate(sub.notify_path.clone(), crate::http::token_digest(&token));
    let server = match Server::start_gated(
        &listen,
        &format!("notifications {}", feed.name),
        limits,
        Some(gate),
        notification_handler(id, sub.types.clone(), feed.coords, tx.clone()),
        tls,
    ) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
    };
    let subscriber = Subscriber {
        feed: &feed,
        id: std::cell::RefCell::new(sub.id.clone()),
        sub,
        client: client.clone(),
        token,
    };
    // What the broker holds is read through the paged query of an NGSI-LD feed.
    let reader = FeedConfig {
        kind: FeedKind::NgsiLd,
        ..feed.clone()
    };
    let life_ms = (feed.subscription_s * 1000.0) as i64;
    let interval = Duration::from_secs_f64(feed.interval_s.min(feed.subscription_s / 4.0));
    let mut conditional = Conditional::default();
    // The expiry last set; `None`: (re)subscribe at the next step.
    let mut expires_ms: Option<i64> = None;
    let mut read_broker = true;
    let mut failures = 0u32;
    // Notifications the endpoint could not take (over the rate, too large, too
    // many at once): what they carried is read back from the broker.
    let lost = |server: &Server| -> u64 {
        let refused = server.refused();
        ["rate_limited", "too_large", "overloaded", "timeout"]
            .iter()
            .filter_map(|why| refused.get(*why))
            .sum()
    };
    let mut lost_before = 0u64;
    std::thread::scope(|scope| {
        // What the endpoint refused (wrong tokens, over the rate, too large) goes to the
        // feed's health.
        scope.spawn(|| report_refusals(id, &server, &tx, stop));
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let lost_now = lost(&server);
            if lost_now > lost_before {
                lost_before = lost_now;
                read_broker = true;
            }
            let step = (|| -> Result<(), Failure> {
                let now = unix_ms_now();
                match expires_ms {
                    None => {
                        subscriber.subscribe(now + life_ms)?;
                        expires_ms = Some(now + life_ms);
                    }
                    Some(ours) => match subscriber.standing()? {
                        // The broker forgot it (restarted, or someone deleted it): made
                        // again, and what changed meanwhile read.
                        None => {
                            subscriber.subscribe(now + life_ms)?;
                            expires_ms = Some(now + life_ms);
                            read_broker = true;
                        }
                        Some(standing) => {
                            let left = standing.expires_ms.unwrap_or(ours) - now;
                            if !standing.active || left < life_ms / 2 {
                                if !subscriber.renew(now + life_ms)? {
                                    subscriber.subscribe(now + life_ms)?;
                                }
                                expires_ms = Some(now + life_ms);
                                // A paused subscription sent nothing meanwhile.
                                read_broker |= !standing.active;
                            }
                        }
                    },
                }
                if read_broker {
                    poll_once(id, &reader, places, &client, &tx, &mut conditional, stop)?;
                    read_broker = false;
                } else {
                    // The keep-alive: the broker answers and the subscription stands.
                    let _ = tx.send(FeedEvent::PollOk {
                        feed: id,
                        at_ms: unix_ms_now(),
                        not_modified: false,
                        complete: false,
                        bytes: 0,
                    });
                }
                Ok(())
            })();
            let wait = match step {
                Ok(()) => {
                    failures = 0;
                    interval.saturating_sub(started.elapsed())
                }
                Err((reason, error)) => {
                    // Whatever failed, the next step subscribes again and reads what the
                    // broker holds: notifications may have been missed meanwhile.
                    expires_ms = None;
                    read_broker = true;
                    failures = failures.saturating_add(1);
                    let backoff = backoff_after(interval, failures);
                    if tx
                        .send(FeedEvent::PollFailed {
                            feed: id,
                            at_ms: unix_ms_now(),
                            reason,
                            error: crate::http::redact_in_text(&error),
                            retry_in: backoff,
                        })
                        .is_err()
                    {
                        break;
                    }
                    backoff
                }
            };
            nap(wait, stop);
        }
    });
    // Nobody listens at the endpoint any more.
    subscriber.delete();
    server.stop();
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::poll::Pollers;

    /// A context broker's subscriptions and entities, as the test's broker keeps them.
    #[derive(Default)]
    struct Broker {
        subscriptions: BTreeMap<String, Value>,
        entities: Vec<Value>,
        /// Requests seen: "POST subscriptions", "PATCH", "GET entities", …
        seen: Vec<String>,
        /// Names subscriptions itself, as some brokers do.
        own_ids: bool,
    }

    fn air(id: &str, pm25: f64) -> Value {
        json!({
            "id": format!("urn:ngsi-ld:AirQualityObserved:{id}"),
            "type": "AirQualityObserved",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [24.94, 60.17]}},
            "pm25": {"type": "Property", "value": pm25},
        })
    }

    /// A loopback NGSI-LD broker speaking the subscription API as the spec has it.
    fn broker() -> (Server, Arc<Mutex<Broker>>) {
        let state = Arc::new(Mutex::new(Broker::default()));
        let shared = state.clone();
        let handler: Handler = Arc::new(move |r: Request| {
            let mut b = shared.lock().unwrap();
            let path = r.url().split('?').next().unwrap_or("").to_string();
            let prefix = "/ngsi-ld/v1/subscriptions";
            if path == "/ngsi-ld/v1/entities" && r.method == Method::GET {
                b.seen.push("GET entities".into());
                let all = b.entities.clone();
                return Response::json(200, &Value::Array(all))
                    .with_header("NGSILD-Results-Count", b.entities.len().to_string());
            }
            if path == prefix && r.method == Method::POST {
                b.seen.push("POST subscriptions".into());
                let Ok(sub) = serde_json::from_slice::<Value>(&r.body) else {
                    return Response::error(400, "BadRequestData", "not JSON");
                };
                let id = if b.own_ids {
                    format!("urn:ngsi-ld:Subscription:broker-{}", b.seen.len())
                } else {
                    sub["id"].as_str().unwrap_or("urn:x").to_string()
                };
                if b.subscriptions.contains_key(&id) {
                    return Response::error(409, "AlreadyExists", id);
                }
                b.subscriptions.insert(id.clone(), sub);
                return Response::new(201, "application/json", "")
                    .with_header("Location", format!("{prefix}/{id}"));
            }
            if let Some(id) = path.strip_prefix(&format!("{prefix}/")) {
                let id = id.to_string();
                let method = r.method.to_string();
                b.seen.push(method.clone());
                return match (method.as_str(), b.subscriptions.get_mut(&id)) {
                    (_, None) => Response::error(404, "ResourceNotFound", id),
                    ("GET", Some(sub)) => {
                        let mut shown = sub.clone();
                        shown["status"] = json!("active");
                        Response::json(200, &shown)
                    }
                    ("PATCH", Some(sub)) => {
                        let patch: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                        for (k, v) in patch.as_object().into_iter().flatten() {
                            sub[k] = v.clone();
                        }
                        Response::new(204, "application/json", "")
                    }
                    ("DELETE", Some(_)) => {
                        b.subscriptions.remove(&id);
                        Response::new(204, "application/json", "")
                    }
                    _ => Response::error(405, "MethodNotAllowed", method),
                };
            }
            Response::error(404, "ResourceNotFound", path)
        });
        let server =
            Server::start("127.0.0.1:0", "test broker", Limits::default(), handler).unwrap();
        (server, state)
    }

    /// Posts a notification of `data` to every subscriber, as the broker does: to the
    /// endpoint's uri, with its receiverInfo as headers. The statuses answered.
    fn notify(state: &Mutex<Broker>, data: Value) -> Vec<u16> {
        let subs: Vec<Value> = state
            .lock()
            .unwrap()
            .subscriptions
            .values()
            .cloned()
            .collect();
        let client = crate::http::client();
        subs.iter()
            .map(|sub| {
                let endpoint = &sub["notification"]["endpoint"];
                let mut request = client
                    .post(endpoint["uri"].as_str().unwrap())
                    .header("Content-Type", "application/json");
                for info in endpoint["receiverInfo"].as_array().into_iter().flatten() {
                    request = request.header(
                        info["key"].as_str().unwrap(),
                        info["value"].as_str().unwrap(),
                    );
                }
                let body = json!({
                    "id": "urn:ngsi-ld:Notification:1",
                    "type": "Notification",
                    "subscriptionId": sub["id"],
                    "notifiedAt": rfc3339_from_unix_ms(unix_ms_now()),
                    "data": data,
                });
                request
                    .body(body.to_string())
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
            .collect()
    }

    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(15);
        while !done() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// pm25 of each entity taken in, in order, and the rejects' details.
    fn drain(
        rx: &std::sync::mpsc::Receiver<FeedEvent>,
        taken: &mut Vec<(String, f64)>,
        rejects: &mut Vec<String>,
    ) {
        while let Ok(event) = rx.try_recv() {
            if let FeedEvent::Refused { counts, .. } = &event {
                rejects.extend(counts.keys().map(|why| format!("refused: {why}")));
            }
            if let FeedEvent::Batch { decoded, .. } = event {
                for u in decoded.updates {
                    let pm25 = u
                        .fields
                        .get("pm25")
                        .and_then(|v| v.as_f64())
                        .unwrap_or(f64::NAN);
                    taken.push((u.id, pm25));
                }
                rejects.extend(decoded.rejects.into_iter().map(|r| r.detail));
            }
        }
    }

    #[test]
    fn a_notify_feed_subscribes_takes_in_notifications_renews_and_comes_back_after_a_broker_restart()
     {
        let (server, state) = broker();
        state.lock().unwrap().entities = vec![air("kallio", 10.0)];
        let port = crate::nats::testing::free_port();
        let feeds = parse_feeds(&format!(
            "[[feed]]\nname='air push'\nkind='ngsi-ld-notify'\nurl='http://{}/ngsi-ld/v1/entities?type=AirQualityObserved'\nlisten='127.0.0.1:{port}'\ninterval_s=0.3\nsubscription_s=6\ndomain='ecology'\n",
            server.addr()
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let (mut taken, mut rejects) = (Vec::new(), Vec::new());

        // It subscribes for the feed's type, to its own endpoint, with a token, and
        // reads what the broker already holds.
        wait_for("the subscription", || {
            !state.lock().unwrap().subscriptions.is_empty()
        });
        let sub = state
            .lock()
            .unwrap()
            .subscriptions
            .values()
            .next()
            .unwrap()
            .clone();
        assert_eq!(sub["entities"], json!([{"type": "AirQualityObserved"}]));
        let endpoint = &sub["notification"]["endpoint"];
        assert_eq!(
            endpoint["uri"],
            json!(format!("http://127.0.0.1:{port}/notify"))
        );
        let bearer = endpoint["receiverInfo"][0]["value"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            bearer.starts_with("Bearer ") && bearer.len() > 30,
            "{bearer}"
        );
        let expires =
            crate::feeds::decode::parse_rfc3339_ms(sub["expiresAt"].as_str().unwrap()).unwrap();
        assert!(expires > unix_ms_now() + 3_000, "{sub}");
        wait_for("the broker's entities", || {
            drain(&rx, &mut taken, &mut rejects);
            taken
                .iter()
                .any(|(id, v)| id.ends_with("kallio") && *v == 10.0)
        });

        // A notification lands, every entity in it; one of a type not subscribed to
        // (an Alert would raise incidents) is refused.
        let mut alert = air("forged-alert", 1.0);
        alert["type"] = json!("Alert");
        assert_eq!(
            notify(
                &state,
                json!([air("kallio", 50.0), air("vallila", 7.0), alert])
            ),
            vec![200]
        );
        wait_for("the notified entities", || {
            drain(&rx, &mut taken, &mut rejects);
            assert!(
                !taken.iter().any(|(id, _)| id.contains("forged-alert")),
                "an unsubscribed type was taken in"
            );
            taken
                .iter()
                .any(|(id, v)| id.ends_with("kallio") && *v == 50.0)
                && taken.iter().any(|(id, _)| id.ends_with("vallila"))
        });

        // Without the token, or with another, nothing is taken in.
        let client = crate::http::client();
        let url = format!("http://127.0.0.1:{port}/notify");
        let forged = json!({"type": "Notification", "data": [air("kallio", 999.0)]}).to_string();
        for auth in [None, Some("Bearer not-the-token-0123456789")] {
            let mut r = client.post(&url).body(forged.clone());
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            assert_eq!(r.send().unwrap().status().as_u16(), 401);
        }
        // Garbage with the token: 400, and a reject naming the sender.
        let garbage = client
            .post(&url)
            .header("Authorization", &bearer)
            .body("{\"type\": \"Notification\"")
            .send()
            .unwrap();
        assert_eq!(garbage.status().as_u16(), 400);
        wait_for("the garbage's reject, and the refusals counted", || {
            drain(&rx, &mut taken, &mut rejects);
            rejects.iter().any(|r| r.contains("127.0.0.1"))
                && rejects.iter().any(|r| r == "refused: unauthorized")
        });
        assert!(
            !taken.iter().any(|(_, v)| *v == 999.0),
            "a forged notification was taken in"
        );

        // Renewed before it expires (6 s: renewed with under 3 s left).
        wait_for("a renewal", || {
            let b = state.lock().unwrap();
            b.seen.iter().any(|s| s == "PATCH")
                && b.subscriptions
                    .values()
                    .next()
                    .and_then(|s| s["expiresAt"].as_str())
                    .and_then(crate::feeds::decode::parse_rfc3339_ms)
                    .is_some_and(|e| e > expires)
        });

        // The broker restarts and forgets its subscriptions; an entity changed
        // meanwhile. The feed subscribes again and reads what it missed.
        {
            let mut b = state.lock().unwrap();
            b.subscriptions.clear();
            b.entities = vec![air("kallio", 80.0)];
        }
        wait_for("the subscription made again", || {
            !state.lock().unwrap().subscriptions.is_empty()
        });
        wait_for("what changed meanwhile", || {
            drain(&rx, &mut taken, &mut rejects);
            taken
                .iter()
                .any(|(id, v)| id.ends_with("kallio") && *v == 80.0)
        });
        assert_eq!(notify(&state, json!([air("vallila", 9.0)])), vec![200]);
        wait_for("a notification after the restart", || {
            drain(&rx, &mut taken, &mut rejects);
            taken
                .iter()
                .any(|(id, v)| id.ends_with("vallila") && *v == 9.0)
        });
        // Still one subscription: the feed's own id, never a pile of them.
        assert_eq!(state.lock().unwrap().subscriptions.len(), 1);

        // Stopped: the subscription is deleted.
        pollers.stop();
        assert!(
            state.lock().unwrap().subscriptions.is_empty(),
            "the subscription outlived the feed"
        );
    }

    #[test]
    fn a_broker_that_names_subscriptions_itself_is_followed_by_its_name() {
        let (server, state) = broker();
        state.lock().unwrap().own_ids = true;
        let port = crate::nats::testing::free_port();
        let feeds = parse_feeds(&format!(
            "[[feed]]\nname='own'\nkind='ngsi-ld-notify'\nurl='http://{}/ngsi-ld/v1/entities?type=AirQualityObserved'\nlisten='127.0.0.1:{port}'\ninterval_s=0.2\ndomain='ecology'\n",
            server.addr()
        ))
        .unwrap();
        let (tx, _rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        wait_for("its standing asked by the broker's name", || {
            state
                .lock()
                .unwrap()
                .seen
                .iter()
                .filter(|s| *s == "GET")
                .count()
                >= 3
        });
        {
            let b = state.lock().unwrap();
            let posts = b.seen.iter().filter(|s| *s == "POST subscriptions").count();
            assert_eq!(posts, 1, "{:?}", b.seen);
            assert_eq!(b.subscriptions.len(), 1);
        }
        pollers.stop();
        assert!(
            state.lock().unwrap().subscriptions.is_empty(),
            "not deleted"
        );
    }

    #[test]
    fn a_notify_feed_says_what_is_wrong_with_its_settings() {
        let feed = |extra: &str| {
            parse_feeds(&format!(
                "[[feed]]\nname='n'\nkind='ngsi-ld-notify'\ndomain='ecology'\n{extra}"
            ))
        };
        let url = "url='http://b:1026/ngsi-ld/v1/entities?type=AirQualityObserved'\n";
        assert!(feed(&format!("{url}listen='127.0.0.1:7880'\n")).is_ok());
        let e = feed("listen='127.0.0.1:7880'\n").unwrap_err();
        assert!(e.contains("entities query"), "{e}");
        let e =
            feed("url='http://b:1026/ngsi-ld/v1/entities'\nlisten='127.0.0.1:7880'\n").unwrap_err();
        assert!(e.contains("type="), "{e}");
        let e = feed("url='http://b:1026/ngsi-ld/v1/types?type=A'\nlisten='127.0.0.1:7880'\n")
            .unwrap_err();
        assert!(e.contains("/entities"), "{e}");
        let e = feed(url).unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = feed(&format!("{url}listen='0.0.0.0:7880'\n")).unwrap_err();
        assert!(e.contains("notify_url"), "{e}");
        let e = feed(&format!(
            "{url}listen='0.0.0.0:7880'\nnotify_url='https://hub.example:7880/notify'\n"
        ))
        .unwrap_err();
        assert!(e.contains("tls_cert"), "{e}");
        let e = feed(&format!("{url}listen='127.0.0.1:7880'\nsubscription_s=1\n")).unwrap_err();
        assert!(e.contains("subscription_s"), "{e}");
        let e = feed(&format!(
            "{url}listen='127.0.0.1:7880'\nnotify_url='http://hub.example.org/n'\n"
        ))
        .unwrap_err();
        assert!(e.contains("https"), "{e}");
        let e =
            feed("url='http://b/ngsi-ld/v1/entities?type=A&attrs=x'\nlisten='127.0.0.1:7880'\n")
                .unwrap_err();
        assert!(e.contains("attrs="), "{e}");
        let f = feed("url='http://b/ngsi-ld/v1/entities?type=A&idPattern=urn:a.*&georel=near;maxDistance==500&geometry=Point&coordinates=[24.9,60.1]&limit=50'\nlisten='127.0.0.1:7880'\n").unwrap();
        let body = subscription_of(&f[0]).unwrap().body("n", "t", 0);
        assert_eq!(body["entities"][0]["idPattern"], json!("urn:a.*"));
        assert_eq!(body["geoQ"]["coordinates"], json!([24.9, 60.1]));
        let e = feed(
            "url='http://b/ngsi-ld/v1/entities?type=A&georel=near'\nlisten='127.0.0.1:7880'\n",
        )
        .unwrap_err();
        assert!(e.contains("together"), "{e}");
        let e = feed(&format!(
            "{url}listen='127.0.0.1:7880'\nnotify_url='ftp://x/'\n"
        ))
        .unwrap_err();
        assert!(e.contains("notify_url"), "{e}");
        // notify_url belongs to this kind only.
        let e = parse_feeds("[[feed]]\nname='p'\nkind='ngsi-ld'\nurl='http://b/ngsi-ld/v1/entities'\nnotify_url='http://x/n'\ndomain='ecology'\n").unwrap_err();
        assert!(e.contains("ngsi-ld-notify"), "{e}");
        // The subscription's id is the feed's, the same across runs.
        let f = feed(&format!("{url}listen='127.0.0.1:7880'\n")).unwrap();
        let (a, b) = (
            subscription_of(&f[0]).unwrap(),
            subscription_of(&f[0]).unwrap(),
        );
        assert_eq!(a.id, b.id);
        assert_eq!(a.endpoint, "http://b:1026/ngsi-ld/v1/subscriptions");
        assert_eq!(a.notify_url, "http://127.0.0.1:7880/notify");
    }

    #[test]
    fn notifications_are_read_as_the_spec_has_them() {
        let d = decode_notification(
            json!({"id": "urn:n:1", "type": "Notification", "subscriptionId": "urn:s", "notifiedAt": "2026-11-30T10:00:00Z", "data": [air("a", 1.0)]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(d.updates.len(), 1);
        assert!(decode_notification(b"[]").is_err());
        assert!(
            decode_notification(br#"{"type": "Subscription", "data": []}"#)
                .unwrap_err()
                .contains("Notification")
        );
        assert!(
            decode_notification(br#"{"type": "Notification"}"#)
                .unwrap_err()
                .contains("data")
        );
    }
}
