//! `zhongshu serve-open-data`: the open part of the hall over HTTP, on Zhongshu's
//! hardened server, for anyone holding a key (and, where configured, anyone at all).
//!
//! - `GET /catalog`: the DCAT-AP catalog (JSON-LD) of the open datasets.
//! - `GET /ngsi-ld/v1/entities?type=T[,U]&bbox=minLon,minLat,maxLon,maxLat&limit=N&offset=K&count=true`:
//!   normalized NGSI-LD entities, `NGSILD-Results-Count` with `count=true`, a
//!   `Link: <…>; rel="next"` while there is more.
//! - `GET /ngsi-ld/v1/entities/{id}`: one entity; 404 for one that is not open,
//!   exactly as for one that does not exist.
//! - `GET /geojson/{type}[?bbox=…]`: a type's entities as a FeatureCollection.
//! - `GET /geojson/layers/{layer}`: an open map layer as a FeatureCollection.
//! - `GET /health`: whether it serves, how many entities, as of when.
//!
//! Every request, refused ones too, is one JSON line in the access log: `time` (UTC,
//! RFC 3339), `client` (the key's name, `anonymous`, or `-` when refused), `method`,
//! `path` (secret query values redacted), `status`, `bytes`, `duration_ms`. Keys are
//! never logged.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::keys::{ANONYMOUS, KeyRing};
use super::{EntityQuery, OpenPolicy, OpenSnapshot, layer_geojson, open_catalog, parse_bbox};
use crate::clock::{rfc3339_from_unix_ms, unix_ms_now};
use crate::feeds::config::{FeedConfig, FeedsSetup, OpenDataConfig};
use crate::governance::catalog::ObservedSchema;
use crate::http::{Limits, Method, Observer, Rate, Request, Response, Served, Server, Tls};
use crate::map::CityMap;
use crate::sim::serve::CORE_CONTEXT_LINK;
use crate::state::LiveState;

/// Entities one page holds unless asked otherwise (NGSI-LD's default), and at most.
pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 1000;

/// How often the served snapshot is taken again from the live state.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// The rate per address of requests without a known key, when anonymous access is
/// off: guessing keys is slow.
const GUESSING_RATE: Rate = Rate {
    per_s: 1.0,
    burst: 10,
};

/// Access-log lines waiting for the writer at most; beyond, lines are dropped and
/// counted (a flood never holds the server up on a slow disk).
const LOG_QUEUE: usize = 10_000;

/// What the endpoints read.
struct Published {
    snapshot: RwLock<Arc<OpenSnapshot>>,
    /// Open map layers, encoded once.
    layers: BTreeMap<String, Arc<Vec<u8>>>,
}

/// The open-data endpoints, serving the latest [`OpenSnapshot`] published to them.
pub struct OpenDataServer {
    server: Option<Server>,
    published: Arc<Published>,
    log_writer: Option<JoinHandle<()>>,
}

impl OpenDataServer {
    /// Listens on `addr` for `clients`, serving `layers` (name → FeatureCollection)
    /// and whatever snapshot is published; one line per request goes to `access_log`.
    pub fn start(
        addr: &str,
        keys: KeyRing,
        layers: BTreeMap<String, Value>,
        access_log: Box<dyn Write + Send>,
        tls: Option<Tls>,
    ) -> anyhow::Result<OpenDataServer> {
        let keys = Arc::new(keys);
        let published = Arc::new(Published {
            snapshot: RwLock::new(Arc::new(OpenSnapshot::default())),
            layers: layers
                .into_iter()
                .map(|(name, v)| (name, Arc::new(v.to_string().into_bytes())))
                .collect(),
        });
        let limits = Limits {
            // Only GETs: no body is needed.
            max_body_bytes: 1024,
            // Refused guesses, by address; the gate gives each client's and the
            // anonymous rate as the keys file says at the time.
            rate: GUESSING_RATE,
            ..Limits::default()
        };
        let (lines, queue) = std::sync::mpsc::sync_channel(LOG_QUEUE);
        let log_writer = std::thread::Builder::new()
            .name("open-data access log".into())
            .spawn(move || write_access_log(queue, access_log))?;
        let gate = keys.clone().gate();
        let serving = published.clone();
        let server = Server::start_observed(
            addr,
            "open-data",
            limits,
            Some(gate),
            Arc::new(move |request: Request| respond(&serving, &request)),
            tls,
            Some(access_logger(lines, keys)),
        )
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Ok(OpenDataServer {
            server: Some(server),
            published,
            log_writer: Some(log_writer),
        })
    }

    /// Serves `snapshot` from now on.
    pub fn publish(&self, snapshot: OpenSnapshot) {
        let mut current = self
            .published
            .snapshot
            .write()
            .unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(snapshot);
    }

    pub fn addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), Server::addr)
    }

    /// Requests refused so far, by why.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.server
            .as_ref()
            .map(Server::refused)
            .unwrap_or_default()
    }
}

impl Drop for OpenDataServer {
    /// Stops serving, then writes the access log's last lines.
    fn drop(&mut self) {
        drop(self.server.take());
        if let Some(writer) = self.log_writer.take() {
            let _ = writer.join();
        }
    }
}

/// One JSON line per request, handed to the writer thread.
fn access_logger(lines: SyncSender<String>, keys: Arc<KeyRing>) -> Observer {
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Arc::new(move |served: &Served| {
        let client = match served.caller {
            Some(name) => name,
            None if !served.refused
                && !matches!(served.status, 401 | 403)
                && keys.current().anonymous.is_some() =>
            {
                ANONYMOUS
            }
            None => "-",
        };
        let mut line = json!({
            "time": rfc3339_from_unix_ms(unix_ms_now()),
            "client": client,
            "method": served.method.as_str(),
            "path": mask_keys(&crate::http::redact_url(served.target)),
            "status": served.status,
            "bytes": served.bytes,
            "duration_ms": (served.duration.as_secs_f64() * 1e4).round() / 10.0,
        });
        let missed = dropped.swap(0, Ordering::Relaxed);
        if missed > 0 {
            line["lines_dropped_before"] = json!(missed);
        }
        match lines.try_send(line.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                dropped.fetch_add(missed + 1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    })
}

fn write_access_log(queue: Receiver<String>, mut out: Box<dyn Write + Send>) {
    while let Ok(line) = queue.recv() {
        let _ = writeln!(out, "{line}");
        // Flushed whenever the queue runs dry: lines are on disk within moments.
        while let Ok(line) = queue.try_recv() {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// `%XX` and `+` decoded (query values and path segments).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let byte = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(b) = byte {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An NGSI-LD problem answer.
fn problem(status: u16, kind: &str, title: &str, detail: impl Into<String>) -> Response {
    Response::json(
        status,
        &json!({
            "type": format!("https://uri.etsi.org/ngsi-ld/errors/{kind}"),
            "title": title,
            "detail": detail.into(),
        }),
    )
}

fn not_found(what: &str) -> Response {
    problem(404, "ResourceNotFound", "Not found", what)
}

fn bad_request(detail: impl Into<String>) -> Response {
    problem(400, "BadRequestData", "Bad request", detail)
}

fn respond(published: &Published, request: &Request) -> Response {
    if request.method != Method::GET && request.method != Method::HEAD {
        return problem(
            405,
            "OperationNotSupported",
            "Only GET",
            request.method.as_str(),
        )
        .with_header("Allow", "GET, HEAD");
    }
    let url = request.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query: Vec<(String, String)> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let snapshot = published
        .snapshot
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if path == "/health" {
        return Response::json(
            200,
            &json!({
                "status": "ok",
                "entities": snapshot.len(),
                "as_of": rfc3339_from_unix_ms(snapshot.taken_at_ms),
            }),
        );
    }
    if path == "/catalog" {
        return Response::new(200, "application/ld+json", snapshot.catalog.to_string());
    }
    if path == "/ngsi-ld/v1/entities" {
        return entities(&snapshot, &query, &param);
    }
    if let Some(id) = path.strip_prefix("/ngsi-ld/v1/entities/") {
        let id = percent_decode(id);
        let members = match Members::of(&query) {
            Ok(m) => m,
            Err(e) => return bad_request(e),
        };
        return match snapshot.entity(&id) {
            Some(e) if members.wanted(&e.ngsi) => {
                Response::json(200, &Value::Object(members.select(&e.ngsi)))
                    .with_header("Link", CORE_CONTEXT_LINK)
            }
            Some(_) => not_found(&format!("open entity {id} has none of the attrs asked for")),
            None => not_found(&format!("no open entity {id}")),
        };
    }
    if let Some(layer) = path.strip_prefix("/geojson/layers/") {
        return match published.layers.get(&percent_decode(layer)) {
            Some(bytes) => Response::new(200, "application/geo+json", bytes.as_slice()),
            None => not_found(&format!("no open map layer {layer}")),
        };
    }
    if let Some(entity_type) = path.strip_prefix("/geojson/") {
        let entity_type = percent_decode(entity_type);
        let bbox = match param("bbox").map(parse_bbox).transpose() {
            Ok(b) => b,
            Err(e) => return bad_request(e),
        };
        if !snapshot.types().contains(entity_type.as_str()) {
            return not_found(&format!("no open entities of type {entity_type}"));
        }
        let query = EntityQuery {
            types: vec![entity_type],
            bbox,
        };
        let features: Vec<Value> = snapshot.select(&query).map(|e| e.feature()).collect();
        return Response::new(
            200,
            "application/geo+json",
            json!({"type": "FeatureCollection", "features": features}).to_string(),
        );
    }
    not_found(path)
}

/// `GET /ngsi-ld/v1/entities`.
fn entities<'a>(
    snapshot: &OpenSnapshot,
    query: &[(String, String)],
    param: &dyn Fn(&str) -> Option<&'a str>,
) -> Response {
    if ["georel", "geometry", "coords"]
        .iter()
        .any(|p| param(p).is_some())
    {
        return bad_request(
            "geo-queries are bbox=minLon,minLat,maxLon,maxLat here (georel/geometry/coords are not supported)",
        );
    }
    let number = |name: &str, default: usize| match param(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("{name}={v:?}: give a whole number")),
    };
    let (limit, offset) = match (number("limit", DEFAULT_LIMIT), number("offset", 0)) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    let count = param("count") == Some("true");
    if limit > MAX_LIMIT || (limit == 0 && !count) {
        return bad_request(format!(
            "limit={limit}: between 1 and {MAX_LIMIT} (0 only with count=true)"
        ));
    }
    let bbox = match param("bbox").map(parse_bbox).transpose() {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    let types = param("type")
        .map(|t| {
            t.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let members = match Members::of(query) {
        Ok(m) => m,
        Err(e) => return bad_request(e),
    };
    let wanted = EntityQuery { types, bbox };
    let mut total = 0usize;
    let mut page = Vec::new();
    for e in snapshot.select(&wanted).filter(|e| members.wanted(&e.ngsi)) {
        if total >= offset && page.len() < limit {
            page.push(Value::Object(members.select(&e.ngsi)));
        }
        total += 1;
    }
    let mut response =
        Response::json(200, &Value::Array(page)).with_header("Link", CORE_CONTEXT_LINK);
    if count {
        response = response.with_header("NGSILD-Results-Count", total.to_string());
    }
    if limit > 0 && offset.saturating_add(limit) < total {
        let mut next: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "offset")
            .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
            .collect();
        next.push(format!("offset={}", offset + limit));
        response = response.with_header(
            "Link",
            format!("</ngsi-ld/v1/entities?{}>; rel=\"next\"", next.join("&")),
        );
    }
    response
}

/// Which members of an entity an NGSI-LD query asks for: `attrs` (the entities
/// holding at least one of these attributes, with their id, type and these alone),
/// `pick` (these members alone, `id` and `type` among them if named) and `omit`
/// (all members but these). Only what is open is ever there to pick.
#[derive(Default)]
struct Members {
    attrs: Option<Vec<String>>,
    pick: Option<Vec<String>>,
    omit: Option<Vec<String>>,
}

impl Members {
    /// From the query; a list given twice (`omit=a&omit=b`) is both.
    fn of(query: &[(String, String)]) -> Result<Self, String> {
        let list = |name: &str| {
            let mut given = query.iter().filter(|(k, _)| k == name).peekable();
            given.peek()?;
            Some(
                given
                    .flat_map(|(_, v)| v.split(','))
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect::<Vec<_>>(),
            )
        };
        let members = Members {
            attrs: list("attrs"),
            pick: list("pick"),
            omit: list("omit"),
        };
        if members.pick.is_some() && (members.omit.is_some() || members.attrs.is_some()) {
            return Err(format!(
                "pick and {} together: give one of them",
                if members.omit.is_some() {
                    "omit"
                } else {
                    "attrs"
                }
            ));
        }
        for (name, l) in [
            ("attrs", &members.attrs),
            ("pick", &members.pick),
            ("omit", &members.omit),
        ] {
            if l.as_ref().is_some_and(Vec::is_empty) {
                return Err(format!(
                    "{name}= names no member: give a comma-separated list"
                ));
            }
        }
        Ok(members)
    }

    /// Whether the entity is one asked for: with `attrs`, it holds one of them (an
    /// attribute: `id` and `type` are not).
    fn wanted(&self, e: &serde_json::Map<String, Value>) -> bool {
        self.attrs.as_ref().is_none_or(|attrs| {
            attrs
                .iter()
                .any(|a| !matches!(a.as_str(), "id" | "type" | "@context") && e.contains_key(a))
        })
    }

    fn select(&self, e: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
        let named = |l: &Option<Vec<String>>, k: &str| l.as_ref().map(|l| l.iter().any(|a| a == k));
        e.iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                let by_attrs = named(&self.attrs, k)
                    .is_none_or(|listed| listed || matches!(k, "id" | "type" | "@context"));
                let by_pick = named(&self.pick, k).is_none_or(|listed| listed);
                let by_omit = named(&self.omit, k).is_none_or(|listed| !listed);
                by_attrs && by_pick && by_omit
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A query name or value percent-encoded again (`,` kept: lists and bboxes).
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// What `serve-open-data` is told on the command line.
pub struct ServeOptions {
    pub addr: String,
    pub keys: KeyRing,
    pub access_log: Box<dyn Write + Send>,
    /// The address clients reach the server at, for the catalog's links (default
    /// `http(s)://ADDR`).
    pub public_url: Option<String>,
    pub tls: Option<Tls>,
}

/// What `serve-open-data` or `hub --open-data` is told, kept to start a server again
/// (a hub serves while it is the hall's active one): the keys file is read and the
/// access log opened at each start.
#[derive(Clone, Debug)]
pub struct OpenDataService {
    pub addr: String,
    pub keys: PathBuf,
    /// Appended to; standard error when `None`.
    pub access_log: Option<PathBuf>,
    pub public_url: Option<String>,
    pub tls: Option<Tls>,
    /// The feeds file's `[open_data]` table.
    pub open_data: OpenDataConfig,
}

impl OpenDataService {
    /// The server's options now: the clients in the keys file, the access log opened.
    pub fn options(&self) -> anyhow::Result<ServeOptions> {
        let keys = KeyRing::watch(&self.keys).map_err(anyhow::Error::msg)?;
        let access_log: Box<dyn Write + Send> = match &self.access_log {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open the access log {}: {e}", path.display())
                    })?,
            ),
            None => Box::new(std::io::stderr()),
        };
        Ok(ServeOptions {
            addr: self.addr.clone(),
            keys,
            access_log,
            public_url: self.public_url.clone(),
            tls: self.tls.clone(),
        })
    }

    /// Starts serving the open part of `feeds` and of `city`'s layers.
    pub fn start(&self, feeds: &[FeedConfig], city: &CityMap) -> anyhow::Result<OpenDataPublisher> {
        OpenDataPublisher::start(feeds, &self.open_data, city, self.options()?)
    }
}

/// The open map layers of `city`, as GeoJSON.
pub fn open_layers(policy: &OpenPolicy, city: &CityMap) -> BTreeMap<String, Value> {
    policy
        .open_layers()
        .filter_map(|l| Some((l.to_string(), layer_geojson(city, l)?)))
        .collect()
}

/// The open-data server and what it publishes from a live state: the catalog and the
/// open entities, taken again at most every [`SNAPSHOT_EVERY`]. `serve-open-data`
/// and the active hub of a hall (`hub --open-data`) both run one.
pub struct OpenDataPublisher {
    server: OpenDataServer,
    policy: OpenPolicy,
    feeds: Vec<FeedConfig>,
    title: String,
    layers_licence: Option<String>,
    base_url: String,
    last: Option<Instant>,
}

impl OpenDataPublisher {
    /// Listens as `options` say, serving the open part of `feeds`, `open_data`'s open
    /// layers of `city`, and a catalog from the first request on, before any feed has
    /// answered.
    pub fn start(
        feeds: &[FeedConfig],
        open_data: &OpenDataConfig,
        city: &CityMap,
        options: ServeOptions,
    ) -> anyhow::Result<OpenDataPublisher> {
        let policy = OpenPolicy::new(feeds, open_data);
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = OpenDataServer::start(
            &options.addr,
            options.keys,
            open_layers(&policy, city),
            options.access_log,
            options.tls,
        )?;
        let base_url = options
            .public_url
            .unwrap_or_else(|| format!("{scheme}://{}", server.addr()));
        let publisher = OpenDataPublisher {
            server,
            policy,
            feeds: feeds.to_vec(),
            title: open_data.title.clone().unwrap_or(city.name.clone()),
            layers_licence: open_data.licence.clone().or(city.attribution.clone()),
            base_url,
            last: None,
        };
        let empty = vec![ObservedSchema::default(); feeds.len()];
        let state = LiveState::new(city.frame);
        publisher.publish(&state, &empty, unix_ms_now());
        Ok(publisher)
    }

    pub fn server(&self) -> &OpenDataServer {
        &self.server
    }

    pub fn policy(&self) -> &OpenPolicy {
        &self.policy
    }

    /// Publishes `state` (and the catalog with the fields each feed was seen to
    /// carry, `observed`) unless it did less than [`SNAPSHOT_EVERY`] ago.
    pub fn tick(&mut self, state: &LiveState, observed: &[ObservedSchema], now_ms: i64) {
        if self.last.is_some_and(|at| at.elapsed() < SNAPSHOT_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        self.publish(state, observed, now_ms);
    }

    fn publish(&self, state: &LiveState, observed: &[ObservedSchema], now_ms: i64) {
        let catalog = open_catalog(
            &self.title,
            &self.feeds,
            observed,
            &self.policy,
            self.layers_licence.as_deref(),
            &self.base_url,
        );
        self.server
            .publish(OpenSnapshot::build(&self.policy, state, catalog, now_ms));
    }
}

/// Runs the feeds of `setup` continuously and serves their open part until `stop`;
/// `started` hears the address served once it listens.
pub fn run(
    setup: FeedsSetup,
    city: &CityMap,
    options: ServeOptions,
    stop: &AtomicBool,
    started: impl FnOnce(&OpenDataServer, &OpenPolicy),
) -> anyhow::Result<()> {
    use crate::governance::health::Ingest;
    use crate::governance::quality::QualityRules;
    let mut publisher = OpenDataPublisher::start(&setup.feeds, &setup.open_data, city, options)?;
    started(publisher.server(), publisher.policy());
    let mut state = LiveState::new(city.frame);
    let (running, rx) = crate::feeds::start_feeds(&setup.feeds, &setup.areas, city, 1);
    let rules = QualityRules::for_city(city.bbox_wgs84).with_ranges(setup.rules);
    let mut ingest = Ingest::with_rules(&setup.feeds, rx, rules);
    while !stop.load(Ordering::Relaxed) {
        let now_ms = unix_ms_now();
        ingest.pump(&mut state, usize::MAX);
        ingest.expire(&mut state, now_ms);
        // Nothing here draws: what changed is not kept.
        state.drain_changed();
        publisher.tick(&state, &ingest.schemas, now_ms);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(running);
    drop(publisher);
    Ok(())
}

/// Anything that looks like one of our keys (`zsk_…`), wherever a client put it (a
/// path, a query value under any name), is logged as `zsk_***`.
fn mask_keys(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find("zsk_") {
        out.push_str(&rest[..at]);
        out.push_str("zsk_***");
        rest = &rest[at + 4..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::feeds::config::parse_setup;
    use crate::model::{EntityKind, EntityUpdate, FieldValue};

    const NOW: i64 = 1_795_946_400_000;

    /// Three feeds: open buses with a restricted `plate` and an internal
    /// `driverPhone`; restricted police cars; internal (by default) air stations.
    const FEEDS: &str = r#"
        [[feed]]
        name = "buses"
        kind = "sim"
        domain = "traffic"
        classification = "open"
        licence = "CC-BY-4.0"
        field_classification = { plate = "restricted", driverPhone = "internal" }
        required_fields = ["plate", "route"]

        [[feed]]
        name = "police"
        kind = "sim"
        domain = "safety"
        classification = "restricted"

        [[feed]]
        name = "air"
        kind = "sim"
        domain = "ecology"

        [open_data]
        title = "Test city open data"
        layers = { districts = "open", buildings = "restricted" }
    "#;

    fn vehicle(id: &str, entity_type: &str, lon: f64, lat: f64) -> EntityUpdate {
        let mut fields = BTreeMap::new();
        fields.insert("plate".into(), FieldValue::Text("粤B-SECRET".into()));
        fields.insert(
            "driverPhone".into(),
            FieldValue::Text("+86-555-0100".into()),
        );
        fields.insert("route".into(), FieldValue::Text("42".into()));
        EntityUpdate {
            id: id.into(),
            entity_type: entity_type.into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("bus".into()),
                speed_kmh: Some(30.0),
                heading_deg: None,
                service_status: None,
            },
            position: Some([lon, lat]),
            line: None,
            observed_at_ms: Some(NOW),
            fields,
            units: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// A city state: 30 buses on a line of longitudes (24.90 + i/1000), 5 police cars
    /// and 3 air stations at the same places.
    fn city_state() -> (FeedsSetup, LiveState, Vec<ObservedSchema>) {
        let setup = parse_setup(FEEDS).unwrap();
        let mut state = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        let mut schemas = vec![ObservedSchema::default(); 3];
        for i in 0..30 {
            let bus = vehicle(
                &format!("urn:bus:{i:02}"),
                "Bus",
                24.90 + i as f64 / 1000.0,
                60.17,
            );
            schemas[0].observe(&bus);
            state.apply(0, bus, NOW);
        }
        for i in 0..5 {
            let car = vehicle(&format!("urn:police:{i}"), "PoliceCar", 24.90, 60.17);
            schemas[1].observe(&car);
            state.apply(1, car, NOW);
        }
        for i in 0..3 {
            let mut station = vehicle(&format!("urn:air:{i}"), "AirQualityObserved", 24.90, 60.17);
            station.kind = EntityKind::Generic;
            schemas[2].observe(&station);
            state.apply(2, station, NOW);
        }
        (setup, state, schemas)
    }

    fn test_city() -> CityMap {
        crate::map::load_default().unwrap()
    }

    struct Running {
        server: OpenDataServer,
        log: PathBuf,
        client: reqwest::blocking::Client,
    }

    impl Running {
        fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.server.addr())
        }

        fn get(&self, key: Option<&str>, path: &str) -> (u16, BTreeMap<String, String>, String) {
            let mut request = self.client.get(self.url(path));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let answer = request.send().unwrap();
            let status = answer.status().as_u16();
            let mut headers = BTreeMap::new();
            for (name, value) in answer.headers() {
                let value = value.to_str().unwrap_or("").to_string();
                headers
                    .entry(name.as_str().to_string())
                    .and_modify(|v: &mut String| *v = format!("{v}, {value}"))
                    .or_insert(value);
            }
            (status, headers, answer.text().unwrap())
        }

        /// Stops the server and returns the access log.
        fn stop(self) -> String {
            drop(self.server);
            std::fs::read_to_string(&self.log).unwrap()
        }
    }

    /// A served city with one client, `app`, holding `key` at `rate`; anonymous
    /// access as given.
    fn serve(name: &str, rate: Rate, anonymous: Option<Rate>) -> (Running, String) {
        let (setup, state, schemas) = city_state();
        let city = test_city();
        let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
        let key = super::super::keys::new_key().unwrap();
        let digest: String = crate::http::token_digest(&key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut keys = format!(
            "[[client]]\nname='app'\nkey_sha256='{digest}'\nrate_per_s={}\nburst={}\n",
            rate.per_s, rate.burst
        );
        if let Some(a) = anonymous {
            keys += &format!("[anonymous]\nrate_per_s={}\nburst={}\n", a.per_s, a.burst);
        }
        let clients = KeyRing::fixed(super::super::keys::Clients::parse(&keys).unwrap());
        let dir =
            std::env::temp_dir().join(format!("zhongshu-open-data-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("access.log");
        let file = std::fs::File::create(&log).unwrap();
        let server = OpenDataServer::start(
            "127.0.0.1:0",
            clients,
            open_layers(&policy, &city),
            Box::new(file),
            None,
        )
        .unwrap();
        let base = format!("http://{}", server.addr());
        let catalog = open_catalog(
            "Test city open data",
            &setup.feeds,
            &schemas,
            &policy,
            Some("ODbL-1.0"),
            &base,
        );
        server.publish(OpenSnapshot::build(&policy, &state, catalog, NOW));
        let client = crate::http::client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        (
            Running {
                server,
                log,
                client,
            },
            key,
        )
    }

    const PLENTY: Rate = Rate {
        per_s: 1000.0,
        burst: 1000,
    };

    /// What must never leave, in any answer.
    fn assert_nothing_withheld(what: &str, body: &str) {
        for secret in [
            "PoliceCar",
            "urn:police",
            "police",
            "AirQualityObserved",
            "urn:air",
            "plate",
            "粤B-SECRET",
            "driverPhone",
            "+86-555-0100",
            "layer:buildings",
        ] {
            assert!(!body.contains(secret), "{what} holds {secret:?}: {body}");
        }
    }

    #[test]
    fn restricted_feeds_and_withheld_fields_are_absent_from_every_open_endpoint() {
        let (running, key) = serve("absent", PLENTY, None);
        let key = Some(key.as_str());
        let mut bodies = Vec::new();
        for path in [
            "/catalog",
            "/ngsi-ld/v1/entities?limit=1000",
            "/ngsi-ld/v1/entities?type=PoliceCar&count=true",
            "/ngsi-ld/v1/entities?type=AirQualityObserved",
            "/ngsi-ld/v1/entities?type=Bus,PoliceCar&limit=1000",
            "/ngsi-ld/v1/entities/urn:bus:03",
            "/geojson/Bus",
            "/geojson/layers/districts",
            "/health",
        ] {
            let (status, headers, body) = running.get(key, path);
            assert_eq!(status, 200, "{path}: {body}");
            assert_nothing_withheld(path, &body);
            assert_nothing_withheld(path, &format!("{headers:?}"));
            bodies.push((path, body));
        }
        // The open part is there: buses, their route, speed and position.
        let (_, _, list) = running.get(key, "/ngsi-ld/v1/entities?type=Bus&limit=1000");
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list.as_array().unwrap().len(), 30);
        assert_eq!(list[3]["route"]["value"], "42");
        assert_eq!(list[3]["speed"]["value"], 30.0);
        assert_eq!(list[3]["location"]["value"]["type"], "Point");
        let (_, _, geo) = running.get(key, "/geojson/Bus");
        let geo: Value = serde_json::from_str(&geo).unwrap();
        assert_eq!(geo["features"].as_array().unwrap().len(), 30);
        assert_eq!(geo["features"][0]["properties"]["route"], "42");
        // A restricted entity is not found, exactly as one that never was.
        let (status, _, police) = running.get(key, "/ngsi-ld/v1/entities/urn:police:1");
        let (_, _, nothing) = running.get(key, "/ngsi-ld/v1/entities/urn:nobody");
        assert_eq!(status, 404);
        assert_eq!(
            police.replace("urn:police:1", "X"),
            nothing.replace("urn:nobody", "X")
        );
        for path in [
            "/ngsi-ld/v1/entities/urn:air:0",
            "/geojson/PoliceCar",
            "/geojson/AirQualityObserved",
            "/geojson/layers/buildings",
            "/geojson/layers/roads",
        ] {
            let (status, _, body) = running.get(key, path);
            assert_eq!(status, 404, "{path}: {body}");
        }
        let (_, headers, _) = running.get(key, "/ngsi-ld/v1/entities?type=PoliceCar&count=true");
        assert_eq!(headers["ngsild-results-count"], "0");
        running.stop();
    }

    #[test]
    fn the_catalog_lists_only_open_datasets() {
        let (running, key) = serve("catalog", PLENTY, None);
        let (status, headers, body) = running.get(Some(&key), "/catalog");
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/ld+json");
        let catalog: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = catalog["dcat:dataset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            ["urn:zhongshu:feed:buses", "urn:zhongshu:layer:districts"]
        );
        let buses = &catalog["dcat:dataset"][0];
        assert_eq!(buses["zs:requiredFields"], json!(["route"]));
        assert_eq!(
            buses["zs:observedSchema"][0]["zs:fields"],
            json!(["location", "route"])
        );
        // Its distributions are this server's endpoints.
        let base = format!("http://{}", running.server.addr());
        let urls: Vec<&str> = buses["dcat:distribution"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["dcat:accessURL"]["@id"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                format!("{base}/ngsi-ld/v1/entities?type=Bus"),
                format!("{base}/geojson/Bus")
            ]
        );
        assert_nothing_withheld("catalog", &body);
        running.stop();
    }

    #[test]
    fn paging_count_and_bbox() {
        let (running, key) = serve("paging", PLENTY, None);
        let key = Some(key.as_str());
        let (status, headers, body) = running.get(
            key,
            "/ngsi-ld/v1/entities?type=Bus&limit=10&offset=5&count=true",
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["ngsild-results-count"], "30");
        let page: Value = serde_json::from_str(&body).unwrap();
        let ids: Vec<&str> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), 10);
        assert_eq!(ids[0], "urn:bus:05");
        assert_eq!(ids[9], "urn:bus:14");
        assert!(
            headers["link"].contains(
                "</ngsi-ld/v1/entities?type=Bus&limit=10&count=true&offset=15>; rel=\"next\""
            ),
            "{headers:?}"
        );
        // The last page has no next.
        let (_, headers, body) =
            running.get(key, "/ngsi-ld/v1/entities?type=Bus&limit=10&offset=20");
        assert_eq!(
            serde_json::from_str::<Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            10
        );
        assert!(!headers["link"].contains("rel=\"next\""), "{headers:?}");
        // count only.
        let (status, headers, body) = running.get(key, "/ngsi-ld/v1/entities?limit=0&count=true");
        assert_eq!((status, body.as_str()), (200, "[]"));
        assert_eq!(headers["ngsild-results-count"], "30");
        // Buses 10..=19 lie in this box (longitudes 24.910 to 24.919).
        let bbox = "bbox=24.9095,60.16,24.9195,60.18";
        let (_, headers, body) = running.get(
            key,
            &format!("/ngsi-ld/v1/entities?{bbox}&count=true&limit=100"),
        );
        assert_eq!(headers["ngsild-results-count"], "10", "{body}");
        let (_, _, body) = running.get(key, &format!("/geojson/Bus?{bbox}"));
        let geo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(geo["features"].as_array().unwrap().len(), 10);
        assert_eq!(geo["features"][0]["id"], "urn:bus:10");
        for bad in [
            "/ngsi-ld/v1/entities?bbox=1,2,3",
            "/ngsi-ld/v1/entities?bbox=10,10,5,5",
            "/ngsi-ld/v1/entities?limit=5000",
            "/ngsi-ld/v1/entities?offset=-1",
            "/ngsi-ld/v1/entities?georel=near",
        ] {
            let (status, _, body) = running.get(key, bad);
            assert_eq!(status, 400, "{bad}: {body}");
        }
        running.stop();
    }

    #[test]
    fn attrs_pick_and_omit_choose_members_and_never_reach_withheld_ones() {
        let (running, key) = serve("members", PLENTY, None);
        let key = Some(key.as_str());
        let list = |path: &str| -> (BTreeMap<String, String>, Vec<Value>) {
            let (status, headers, body) = running.get(key, path);
            assert_eq!(status, 200, "{path}: {body}");
            assert_nothing_withheld(path, &body);
            let v: Value = serde_json::from_str(&body).unwrap();
            (headers, v.as_array().unwrap().clone())
        };
        let keys = |e: &Value| -> Vec<String> { e.as_object().unwrap().keys().cloned().collect() };
        let (_, all) = list("/ngsi-ld/v1/entities?type=Bus&limit=1000");
        assert!(keys(&all[0]).contains(&"speed".to_string()), "{:?}", all[0]);
        // attrs: id, type and the attributes named.
        let (headers, buses) =
            list("/ngsi-ld/v1/entities?type=Bus&attrs=route&count=true&limit=1000");
        assert_eq!(buses.len(), 30);
        assert_eq!(headers["ngsild-results-count"], "30");
        assert_eq!(keys(&buses[3]), ["id", "route", "type"]);
        assert_eq!(buses[3]["route"]["value"], "42");
        // ... and only entities that hold one of them (a withheld field is held by none).
        let (headers, none) =
            list("/ngsi-ld/v1/entities?attrs=plate,driverPhone&count=true&limit=1000");
        assert!(none.is_empty());
        assert_eq!(headers["ngsild-results-count"], "0");
        // pick: these members alone; omit: all but these.
        let (_, picked) = list("/ngsi-ld/v1/entities?type=Bus&pick=id,speed,plate&limit=2");
        assert_eq!(keys(&picked[0]), ["id", "speed"]);
        let (_, omitted) = list("/ngsi-ld/v1/entities?type=Bus&omit=location,speed&limit=2");
        let k = keys(&omitted[0]);
        assert!(k.contains(&"route".to_string()) && !k.contains(&"location".to_string()));
        assert!(!k.contains(&"speed".to_string()));
        // One entity, the same.
        let (status, _, body) = running.get(key, "/ngsi-ld/v1/entities/urn:bus:03?pick=route");
        assert_eq!(status, 200, "{body}");
        let one: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(keys(&one), ["route"]);
        let (status, _, _) = running.get(key, "/ngsi-ld/v1/entities/urn:bus:03?attrs=plate");
        assert_eq!(status, 404);
        // A list given twice is both; id and type are no attributes to hold.
        let (_, twice) = list("/ngsi-ld/v1/entities?type=Bus&omit=location&omit=speed&limit=2");
        let k = keys(&twice[0]);
        assert!(!k.contains(&"location".to_string()) && !k.contains(&"speed".to_string()));
        let (_, none) = list("/ngsi-ld/v1/entities?attrs=id,type&limit=1000");
        assert!(none.is_empty());
        for bad in [
            "/ngsi-ld/v1/entities?pick=id&omit=speed",
            "/ngsi-ld/v1/entities?pick=location&attrs=route",
            "/ngsi-ld/v1/entities?attrs=",
            "/ngsi-ld/v1/entities/urn:bus:03?pick=,",
        ] {
            let (status, _, body) = running.get(key, bad);
            assert_eq!(status, 400, "{bad}: {body}");
        }
        running.stop();
    }

    /// A client added, a key withdrawn, a rate changed or anonymous access opened in
    /// the keys file take effect on a running server; a file that no longer reads
    /// leaves the clients as they were.
    #[test]
    fn the_keys_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("zhongshu-open-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        let key = |_: ()| super::super::keys::new_key().unwrap();
        let (a, b) = (key(()), key(()));
        let entry = |name: &str, key: &str, rate: &str| {
            let digest: String = crate::http::token_digest(key)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("[[client]]\nname='{name}'\nkey_sha256='{digest}'\n{rate}\n")
        };
        std::fs::write(&path, entry("a", &a, "rate_per_s=100")).unwrap();
        let server = OpenDataServer::start(
            "127.0.0.1:0",
            KeyRing::watch(&path).unwrap(),
            BTreeMap::new(),
            Box::new(std::io::sink()),
            None,
        )
        .unwrap();
        let client = crate::http::client_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let status = |key: Option<&str>| {
            let mut r = client.get(format!("http://{}/health", server.addr()));
            if let Some(key) = key {
                r = r.bearer_auth(key);
            }
            r.send().unwrap().status().as_u16()
        };
        // Asks until the answer is `want` (the file is looked at every second).
        let until = |key: Option<&str>, want: u16| {
            let t = std::time::Instant::now();
            loop {
                let got = status(key);
                if got == want {
                    return;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "{got}, not {want}");
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        assert_eq!(status(Some(&a)), 200);
        assert_eq!(status(Some(&b)), 401);
        std::fs::write(
            &path,
            entry("a", &a, "rate_per_s=100") + &entry("b", &b, "rate_per_s=0.01\nburst=2"),
        )
        .unwrap();
        until(Some(&b), 200);
        // b's own rate: two at once, then 429.
        let mut answers = vec![200];
        answers.extend((0..3).map(|_| status(Some(&b))));
        assert!(answers.contains(&429), "{answers:?}");
        assert_eq!(status(Some(&a)), 200);
        // A half-saved file: everyone stays as they were.
        std::fs::write(&path, "[[client]]\nname='a'\nkey_sha").unwrap();
        std::thread::sleep(KeyRing::CHECK_EVERY * 3);
        assert_eq!(status(Some(&a)), 200);
        assert_eq!(status(None), 401);
        // An editor's save caught emptied for a moment locks no one out.
        let whole = entry("a", &a, "rate_per_s=100") + &entry("b", &b, "rate_per_s=0.01\nburst=2");
        std::fs::write(&path, &whole).unwrap();
        std::thread::sleep(KeyRing::CHECK_EVERY * 3);
        for _ in 0..5 {
            std::fs::write(&path, "").unwrap();
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&path, &whole).unwrap();
            assert_eq!(status(Some(&a)), 200);
            std::thread::sleep(Duration::from_millis(400));
        }
        // A key swapped for another of the same length, the file's times kept (a
        // copy with its times): read by its text.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        let c = key(());
        std::fs::write(
            &path,
            entry("a", &c, "rate_per_s=100") + &entry("b", &b, "rate_per_s=0.01\nburst=2"),
        )
        .unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        until(Some(&a), 401);
        until(Some(&c), 200);
        // a withdrawn, anonymous access opened.
        std::fs::write(
            &path,
            entry("b", &b, "rate_per_s=0.01\nburst=2") + "[anonymous]\nrate_per_s=100\n",
        )
        .unwrap();
        until(Some(&a), 401);
        until(None, 200);
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_are_needed_rated_and_never_logged() {
        let rate = Rate {
            per_s: 0.2,
            burst: 5,
        };
        let (running, key) = serve("keys", rate, None);
        // No key, a wrong key: 401, the same answer for both.
        let (status, headers, none) = running.get(None, "/health");
        assert_eq!(status, 401, "{none}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        let (status, _, _) = running.get(Some("zsk_guess"), "/health");
        assert_eq!(status, 401);
        // A key in the URL is not read.
        let (status, _, _) = running.get(None, &format!("/health?apikey={key}"));
        assert_eq!(status, 401);
        // X-API-Key works as well as Bearer.
        let answer = running
            .client
            .get(running.url("/health"))
            .header("X-API-Key", &key)
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        // The rest of the burst of 5, then 429 with Retry-After.
        let statuses: Vec<u16> = (0..6)
            .map(|_| running.get(Some(&key), "/ngsi-ld/v1/entities?type=Bus").0)
            .collect();
        assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
        let (status, headers, _) = running.get(Some(&key), "/catalog");
        assert_eq!(status, 429);
        assert!(headers.contains_key("retry-after"), "{headers:?}");
        let refused = running.server.refused();
        assert_eq!(refused.get("rate_limited"), Some(&3), "{refused:?}");
        let log = running.stop();
        assert!(!log.contains(&key) && !log.contains(&key[4..]), "{log}");
        assert!(!log.contains("zsk_guess"), "{log}");
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 11, "{log}");
        for line in &lines {
            let time = line["time"].as_str().unwrap();
            assert!(time.ends_with('Z') && time.len() == 24, "{line}");
            assert!(line["bytes"].as_u64().is_some() && line["duration_ms"].as_f64().is_some());
        }
        assert_eq!(lines[0]["client"], "-");
        assert_eq!(lines[0]["status"], 401);
        assert_eq!(lines[0]["path"], "/health");
        assert_eq!(lines[2]["path"], "/health?apikey=***");
        assert_eq!(
            mask_keys("/geojson/zsk_AbC-9_x?type=zsk_q1&x=1"),
            "/geojson/zsk_***?type=zsk_***&x=1"
        );
        assert_eq!(lines[3]["client"], "app");
        assert_eq!(lines[3]["status"], 200);
        assert_eq!(lines[8]["client"], "app");
        assert_eq!(lines[8]["status"], 429);
        assert_eq!(lines[4]["path"], "/ngsi-ld/v1/entities?type=Bus");
    }

    #[test]
    fn anonymous_access_when_configured_has_its_own_rate_per_address() {
        let anonymous = Rate {
            per_s: 0.2,
            burst: 2,
        };
        let (running, key) = serve("anonymous", PLENTY, Some(anonymous));
        let statuses: Vec<u16> = (0..3).map(|_| running.get(None, "/health").0).collect();
        assert_eq!(statuses, [200, 200, 429]);
        // A client with a key is not held back by the anonymous allowance.
        assert_eq!(running.get(Some(&key), "/health").0, 200);
        // A wrong key is refused, not taken as anonymous.
        assert_eq!(running.get(Some("zsk_guess"), "/health").0, 429);
        let log = running.stop();
        let lines: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["client"], "anonymous");
        // ... and logged as refused ("-"), though its answer was a 429.
        let last = lines.last().unwrap();
        assert_eq!(
            (last["status"].as_u64(), last["client"].as_str()),
            (Some(429), Some("-"))
        );
    }

    #[test]
    fn a_bad_classification_is_a_clear_error_naming_the_feed() {
        let feed = |extra: &str| {
            parse_setup(&format!(
                "[[feed]]\nname='buses'\nkind='sim'\ndomain='traffic'\n{extra}\n"
            ))
        };
        let err = feed("classification = 'secret'").unwrap_err();
        assert!(err.contains("feed \"buses\""), "{err}");
        assert!(err.contains("\"secret\""), "{err}");
        assert!(
            err.contains("\"open\", \"internal\", \"restricted\""),
            "{err}"
        );
        let err = feed("classification = 'open'\nfield_classification = { plate = 'hidden' }")
            .unwrap_err();
        assert!(
            err.contains("feed \"buses\"") && err.contains("plate"),
            "{err}"
        );
        let err = feed("field_classification = { plate = 'open' }").unwrap_err();
        assert!(err.contains("never more open than its feed"), "{err}");
        let err = feed("open_fields = ['route']").unwrap_err();
        assert!(err.contains("buses") && err.contains("internal"), "{err}");
        let err = parse_setup("[open_data]\nlayers = { metro = 'open' }\n").unwrap_err();
        assert!(err.contains("metro") && err.contains("buildings"), "{err}");
        let err = parse_setup("[open_data]\nlayers = { roads = 'public' }\n").unwrap_err();
        assert!(err.contains("open_data.layers.roads"), "{err}");
        // The default is internal, for feeds and layers alike.
        let setup = feed("").unwrap();
        assert_eq!(
            setup.feeds[0].classification,
            crate::model::Classification::Internal
        );
        let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
        assert!(!policy.feed_is_open(0));
        assert_eq!(policy.open_layers().count(), 0);
    }

    /// A feed that withholds `id` (a plate in a vehicle's id) publishes its entities
    /// under pseudonyms: the same for an entity under the same `id_key`, another under
    /// another key, and never the source's id anywhere.
    #[test]
    fn a_withheld_id_leaves_as_a_pseudonym() {
        let feeds = |key: &str| {
            parse_setup(&format!(
                "[open_data]\nid_key='{key}'\n[[feed]]\nname='taxis'\nkind='sim'\ndomain='traffic'\nclassification='open'\nfield_classification={{ ID = 'restricted', plate = 'restricted', driverPhone = 'internal' }}\n"
            ))
            .unwrap()
        };
        let mut state = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        state.apply(
            0,
            vehicle("urn:ngsi-ld:Taxi:粤B-12345", "Taxi", 24.9, 60.17),
            NOW,
        );
        state.apply(
            0,
            vehicle("urn:ngsi-ld:Taxi:粤B-67890", "Taxi", 24.91, 60.17),
            NOW,
        );
        let snapshot = |key: &str| {
            let setup = feeds(key);
            let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
            OpenSnapshot::build(&policy, &state, Value::Null, NOW)
        };
        let (a, again, other) = (snapshot("k1"), snapshot("k1"), snapshot("k2"));
        let ids = |s: &OpenSnapshot| {
            s.select(&EntityQuery::default())
                .map(|e| e.id.clone())
                .collect::<Vec<_>>()
        };
        let a_ids = ids(&a);
        assert_eq!(a_ids.len(), 2);
        assert_ne!(a_ids[0], a_ids[1]);
        for id in &a_ids {
            let hex = id.strip_prefix("urn:ngsi-ld:Taxi:").unwrap();
            assert!(
                hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
                "{id}"
            );
            let e = a.entity(id).unwrap();
            assert_eq!(e.ngsi["id"], id.as_str());
            assert_eq!(e.feature()["id"], id.as_str());
            let all = format!("{:?} {}", e.ngsi, e.feature());
            assert!(!all.contains("12345") && !all.contains("67890"), "{all}");
        }
        let mut sorted = a_ids.clone();
        sorted.sort();
        let mut again_ids = ids(&again);
        again_ids.sort();
        assert_eq!(sorted, again_ids);
        assert!(ids(&other).iter().all(|id| !a_ids.contains(id)));
        assert!(a.entity("urn:ngsi-ld:Taxi:粤B-12345").is_none());
        // The same feed after another added before it in the file: the same ids.
        let setup = parse_setup(
            "[open_data]\nid_key='k1'\n[[feed]]\nname='cameras'\nkind='sim'\ndomain='safety'\n[[feed]]\nname='taxis'\nkind='sim'\ndomain='traffic'\nclassification='open'\nfield_classification={ ID = 'restricted', plate = 'restricted', driverPhone = 'internal' }\n",
        )
        .unwrap();
        let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
        let mut moved = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        moved.apply(
            1,
            vehicle("urn:ngsi-ld:Taxi:粤B-12345", "Taxi", 24.9, 60.17),
            NOW,
        );
        moved.apply(
            1,
            vehicle("urn:ngsi-ld:Taxi:粤B-67890", "Taxi", 24.91, 60.17),
            NOW,
        );
        let mut moved_ids = ids(&OpenSnapshot::build(&policy, &moved, Value::Null, NOW));
        moved_ids.sort();
        assert_eq!(moved_ids, sorted);
    }

    #[test]
    fn an_allow_list_opens_only_the_fields_it_names() {
        let setup = parse_setup(
            "[[feed]]\nname='buses'\nkind='sim'\ndomain='traffic'\nclassification='open'\nopen_fields=['route', 'location']\n",
        )
        .unwrap();
        let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
        let mut state = LiveState::new(crate::geo_frame::GeoFrame::new(24.94, 60.17));
        state.apply(0, vehicle("urn:bus:1", "Bus", 24.9, 60.17), NOW);
        let (_, e) = state.iter().next().unwrap();
        let open = policy.open_entity(e).unwrap();
        let keys: Vec<&str> = open.ngsi.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "location", "route", "type"]);
        // No observation time on its values either, as dateObserved is not open.
        assert!(open.ngsi["route"].get("observedAt").is_none());
        // Withholding the location leaves the entity out of every bbox.
        let setup = parse_setup(
            "[[feed]]\nname='buses'\nkind='sim'\ndomain='traffic'\nclassification='open'\nfield_classification={ location = 'internal' }\n",
        )
        .unwrap();
        let policy = OpenPolicy::new(&setup.feeds, &setup.open_data);
        let open = policy.open_entity(e).unwrap();
        assert!(!open.ngsi.contains_key("location") && open.bbox.is_none());
        assert_eq!(open.feature()["geometry"], Value::Null);
    }

    #[test]
    fn open_map_layers_are_geojson_in_wgs84() {
        let city = test_city();
        for layer in MAP_LAYERS_FOR_TEST {
            let geo = layer_geojson(&city, layer).unwrap();
            let features = geo["features"].as_array().unwrap();
            assert!(!features.is_empty(), "{layer}");
            let bbox = super::super::geometry_bbox(&features[0]["geometry"]).unwrap();
            let [w, s, e, n] = city.bbox_wgs84;
            let margin = 0.05;
            assert!(
                bbox[0] > w - margin
                    && bbox[2] < e + margin
                    && bbox[1] > s - margin
                    && bbox[3] < n + margin,
                "{layer}: {bbox:?} outside {:?}",
                city.bbox_wgs84
            );
        }
        assert!(layer_geojson(&city, "metro").is_none());
    }

    const MAP_LAYERS_FOR_TEST: [&str; 5] = crate::feeds::config::MAP_LAYERS;
}
