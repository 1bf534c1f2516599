//! The feeds file (`--feeds feeds.toml`): which sources to poll, who owns them, how often.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Domain;
pub use crate::model::Classification;

/// How a feed's payloads are fetched and decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeedKind {
    /// NGSI-LD entities (FIWARE context broker), paged with `limit`/`offset`.
    NgsiLd,
    /// NGSI-v2 entities (`/v2/entities` of an Orion context broker), normalized or
    /// keyValues, paged with `limit`/`offset`.
    NgsiV2,
    /// A GeoJSON FeatureCollection.
    Geojson,
    /// A CAP 1.2 (or 1.1/1.0) alert message: each message raises or updates an incident.
    Cap,
    /// The built-in simulator of this domain on the loaded map.
    Sim,
    /// Messages pushed by an MQTT broker on `topics` (QoS 1): flat JSON objects,
    /// NGSI-LD or NGSI-v2 entities, or GeoJSON (`payload`).
    Mqtt,
    /// CAP messages POSTed by agencies to `http(s)://listen/cap` with a token.
    CapIntake,
    /// NGSI-LD notifications: Zhongshu subscribes with the broker of `url` (an
    /// entities query, `…/ngsi-ld/v1/entities?type=…`), renews the subscription before
    /// it expires and takes in what the broker POSTs to `http(s)://listen/notify`.
    NgsiLdNotify,
}

impl FeedKind {
    /// Whether the source is a context broker answering in pages (`limit`/`offset`).
    pub fn is_paged(self) -> bool {
        matches!(self, FeedKind::NgsiLd | FeedKind::NgsiV2)
    }

    /// Whether the source pushes (MQTT, CAP intake): its "polls" say the connection
    /// is alive, never that an entity is still there.
    pub fn is_push(self) -> bool {
        matches!(
            self,
            FeedKind::Mqtt | FeedKind::CapIntake | FeedKind::NgsiLdNotify
        )
    }

    /// Whether the feed listens for requests (`listen`, `token`, TLS).
    pub fn listens(self) -> bool {
        matches!(self, FeedKind::CapIntake | FeedKind::NgsiLdNotify)
    }
}

/// One `[[feed]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Unique name, used in logs, panels and `feeds-check` output.
    pub name: String,
    pub kind: FeedKind,
    /// Required for every kind but `sim`.
    #[serde(default)]
    pub url: Option<String>,
    pub domain: Domain,
    /// Owner department, shown in the catalog and inspector.
    #[serde(default)]
    pub owner: Option<String>,
    /// Polling interval in seconds.
    #[serde(default = "default_interval_s")]
    pub interval_s: f64,
    /// Data licence, for the catalog.
    #[serde(default)]
    pub licence: Option<String>,
    /// Entities per page for NGSI-LD and NGSI-v2 pagination.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The most pages one poll fetches (a broker that never ends is stopped).
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
    /// The most items one poll takes in, over all its pages.
    #[serde(default = "default_max_poll_items")]
    pub max_poll_items: u64,
    /// The most bytes one poll reads, over all its pages.
    #[serde(default = "default_max_poll_bytes")]
    pub max_poll_bytes: u64,
    /// Total time allowed for one request, seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// JSON-LD @context sent in the `Link` header of NGSI-LD requests, so the broker
    /// expands short type and attribute names (e.g. the Smart Data Models context).
    #[serde(default)]
    pub context: Option<String>,
    /// Fields every entity of this feed must carry (checked by the quality rules).
    #[serde(default)]
    pub required_fields: Vec<String>,
    /// Entity types (`AirQualityObserved`) or fields (`AirQualityObserved.pm25`) this
    /// feed is the single source of truth for.
    #[serde(default)]
    pub authoritative_for: Vec<String>,
    /// Largest response accepted from this feed, bytes (at most 64 MiB).
    #[serde(default = "default_max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// How often the source renews its data, seconds, when that differs from how
    /// often it is polled (`interval_s`). Freshness and expiry count in cadences.
    #[serde(default)]
    pub cadence_s: Option<f64>,
    /// An entity whose values are older than this many cadences is stale: greyed on
    /// the map and left out of the KPIs.
    #[serde(default = "default_stale_after_cadences")]
    pub stale_after_cadences: f64,
    /// An entity the feed has not reported for this many cadences is removed; 0 keeps
    /// entities until the feed leaves them out of a complete snapshot.
    #[serde(default = "default_expire_after_cadences")]
    pub expire_after_cadences: f64,
    /// Whether each successful poll is a complete snapshot, so that an entity missing
    /// from it has gone (default: yes, except for CAP feeds, one message per poll).
    #[serde(default)]
    pub remove_missing: Option<bool>,
    /// The entity type given to GeoJSON features that carry none (default: the feed's
    /// name), so that ids of different feeds' untyped features never meet.
    #[serde(default)]
    pub entity_type: Option<String>,
    /// Request headers, e.g. credentials: `{ Authorization = "env:BROKER_AUTH" }`. A
    /// value `env:NAME` is read from the environment and `file:PATH` from a file (its
    /// first line) at every poll, so secrets stay out of the feeds file, URLs, logs and
    /// the catalog; any other value is sent as written.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Other hosts the feed may redirect to (a CDN). Redirects from https to http are
    /// never followed.
    #[serde(default)]
    pub redirect_hosts: Vec<String>,
    /// MQTT: the topic filters subscribed to (`city/air/+/state`, `sensors/#`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// MQTT: what a message holds: `flat` (the default: a JSON object, or an array of
    /// them, with an id, a type, a longitude and a latitude, see `field_map`),
    /// `ngsi-ld`, `ngsi-v2` or `geojson`.
    #[serde(default)]
    pub payload: Option<String>,
    /// MQTT `flat` messages: the members holding `id`, `type`, `lon`, `lat` and
    /// `observed_at` when they are named otherwise (`{ id = "deviceId", lon = "lng" }`).
    #[serde(default)]
    pub field_map: std::collections::BTreeMap<String, String>,
    /// MQTT: user name and password, each as written, `env:NAME` or `file:PATH`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT: the client id (default: one per host and process). A stable id keeps the
    /// broker's queue of QoS 1 messages across restarts.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT over TLS (`mqtts://`): the broker's CA certificate (PEM) when it is not
    /// one the system trusts.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// CAP intake and NGSI-LD notifications: where the endpoint listens
    /// (`127.0.0.1:7879`; beyond loopback only with `tls_cert` and `tls_key`).
    #[serde(default)]
    pub listen: Option<String>,
    /// CAP intake: the Bearer token agencies send; NGSI-LD notifications: the one the
    /// broker is asked to send (default: a new random one each run). As written,
    /// `env:NAME` or `file:PATH`; at least 16 characters.
    #[serde(default)]
    pub token: Option<String>,
    /// CAP intake and NGSI-LD notifications: requests a second one caller (a token,
    /// else an address) may make, bursts of four seconds' worth allowed (default 50
    /// for an intake, 5,000 for notifications: the broker is one caller).
    #[serde(default)]
    pub rate_per_s: Option<f64>,
    /// NGSI-LD notifications: the address the broker posts to, when it reaches this
    /// machine by another name than `listen` (a proxy, NAT; default
    /// `http(s)://LISTEN/notify`).
    #[serde(default)]
    pub notify_url: Option<String>,
    /// NGSI-LD notifications: how long a subscription lasts, seconds; it is renewed
    /// when half of that is left.
    #[serde(default = "default_subscription_s")]
    pub subscription_s: f64,
    /// CAP intake and NGSI-LD notifications over HTTPS: certificate chain and
    /// private key (PEM).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Simulator: the trouble this feed plays (see [`SimTrouble`]), so the steward's
    /// tools have something to show.
    #[serde(default)]
    pub trouble: Option<SimTrouble>,
    /// Which longitude/latitude the feed's positions are in: `wgs84` (the default),
    /// or China's offset `gcj02` (Amap, Tencent) or `bd09` (Baidu), undone to WGS84
    /// as each payload is decoded.
    #[serde(default)]
    pub coords: crate::map::crs::Coords,
    /// Who may see the feed's data: `open` (served to others by `serve-open-data`),
    /// `internal` (the default: the hall only) or `restricted` (never published).
    #[serde(default)]
    pub classification: Classification,
    /// Fields of an open feed that must not leave with it:
    /// `{ plate = "restricted", driverPhone = "internal" }`. A name covers its
    /// sub-fields (`address` covers `address.streetAddress`, `openingHours` covers
    /// `openingHours[0].opens`); `location` withholds the geometry.
    #[serde(default)]
    pub field_classification: std::collections::BTreeMap<String, Classification>,
    /// An open feed's only fields that leave, when given: an allow-list, so a field the
    /// source adds later stays in the hall until a steward opens it. `id` and `type`
    /// always leave; `location` and `dateObserved` only when listed.
    #[serde(default)]
    pub open_fields: Option<Vec<String>>,
}

/// Trouble a `sim` feed plays, as real cities' feeds do; deterministic for a seed,
/// timed from when the simulator starts (see `crate::sim::trouble`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimTrouble {
    /// Goes late now and then: nothing for 20–40 s once in every 6 minutes.
    Late,
    /// A short outage: nothing for 60 s once in every 20 minutes (stale, then back).
    Outage,
    /// Ecology: an air-quality station reads an implausible AQI of 999 for 10 s
    /// once in every 3 minutes.
    Glitch,
    /// Ecology: a second department's monitors at every third air-quality station,
    /// 15 m away under ids of their own, reading up to 30 % high, drifting.
    Drift,
}

/// A header value as configured: `env:NAME`, `file:PATH` or the text itself.
pub fn header_value(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("env:") {
        return std::env::var(name)
            .map(|v| v.trim().to_string())
            .map_err(|_| format!("the environment variable {name} is not set"));
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read_to_string(path)
            .map(|t| t.lines().next().unwrap_or("").trim().to_string())
            .map_err(|e| format!("cannot read the secret file {path}: {e}"));
    }
    Ok(value.to_string())
}

impl FeedConfig {
    /// Seconds between renewals of the source's data.
    pub fn cadence_s(&self) -> f64 {
        self.cadence_s.unwrap_or(self.interval_s)
    }

    /// Whether a successful poll without an entity removes it.
    pub fn removes_missing(&self) -> bool {
        self.remove_missing.unwrap_or(!matches!(
            self.kind,
            FeedKind::Cap | FeedKind::Mqtt | FeedKind::CapIntake | FeedKind::NgsiLdNotify
        ))
    }

    /// Values older than this are stale.
    pub fn stale_after_ms(&self) -> i64 {
        (self.stale_after_cadences * self.cadence_s() * 1000.0) as i64
    }

    /// Entities unreported this long are removed; `None`: never.
    pub fn expire_after_ms(&self) -> Option<i64> {
        (self.expire_after_cadences > 0.0)
            .then(|| (self.expire_after_cadences * self.cadence_s() * 1000.0) as i64)
    }

    /// The type for an untyped GeoJSON feature of this feed.
    pub fn untyped_entity_type(&self) -> &str {
        self.entity_type.as_deref().unwrap_or(&self.name)
    }
}

fn default_stale_after_cadences() -> f64 {
    10.0
}

fn default_expire_after_cadences() -> f64 {
    30.0
}

fn default_max_payload_bytes() -> usize {
    super::MAX_PAYLOAD_BYTES
}

fn default_subscription_s() -> f64 {
    3600.0
}

fn default_interval_s() -> f64 {
    5.0
}
fn default_page_size() -> u32 {
    1000
}
fn default_max_pages() -> u32 {
    1000
}
fn default_max_poll_items() -> u64 {
    2_000_000
}
fn default_max_poll_bytes() -> u64 {
    1 << 30
}
fn default_timeout_s() -> f64 {
    10.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedsFile {
    #[serde(default)]
    feed: Vec<FeedConfig>,
    #[serde(default)]
    rule: Vec<RangeRule>,
    #[serde(default)]
    area: Vec<AreaConfig>,
    #[serde(default)]
    open_data: OpenDataConfig,
}

/// The map layers `serve-open-data` can publish, by their names in `[open_data]`.
pub const MAP_LAYERS: [&str; 5] = ["buildings", "roads", "water", "green", "districts"];

/// The `[open_data]` table: what `serve-open-data` publishes besides open feeds.
///
/// ```toml
/// [open_data]
/// title = "Helsinki open city data"       # the catalog's title (default: the map's name)
/// licence = "ODbL-1.0"                    # of the map layers (default: the map's attribution)
/// layers = { buildings = "open", roads = "open", districts = "open" }   # default internal
/// ```
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDataConfig {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub licence: Option<String>,
    /// Map layer ([`MAP_LAYERS`]) → classification; a layer left out is internal.
    #[serde(default)]
    pub layers: std::collections::BTreeMap<String, Classification>,
    /// Keys the pseudonyms of the ids a feed withholds (`field_classification = { id
    /// = "internal" }`), so they stay the same from start to start; left out, one is
    /// drawn at each start.
    #[serde(default)]
    pub id_key: Option<String>,
}

impl OpenDataConfig {
    /// A map layer's classification (internal unless the file says otherwise).
    pub fn layer(&self, layer: &str) -> Classification {
        self.layers.get(layer).copied().unwrap_or_default()
    }
}

/// Checks the classification words of a feeds file before it is read into types, so
/// a wrong one is named with its feed (serde would only say "unknown variant").
fn check_classification_words(table: &toml::Table) -> Result<(), String> {
    let words = || {
        Classification::ALL
            .iter()
            .map(|c| format!("\"{}\"", c.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let word_ok = |v: &toml::Value| v.as_str().and_then(Classification::from_word).is_some();
    let feeds = table.get("feed").and_then(|f| f.as_array());
    for (i, feed) in feeds.into_iter().flatten().enumerate() {
        let Some(feed) = feed.as_table() else {
            continue;
        };
        let name = feed
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("#{}", i + 1), |n| format!("\"{n}\""));
        if let Some(v) = feed.get("classification")
            && !word_ok(v)
        {
            return Err(format!(
                "feed {name}: classification = {v} is not one of {}",
                words()
            ));
        }
        if let Some(fields) = feed.get("field_classification") {
            let Some(fields) = fields.as_table() else {
                return Err(format!(
                    "feed {name}: field_classification is a table of field = classification, e.g. {{ plate = \"restricted\" }}"
                ));
            };
            if let Some((field, v)) = fields.iter().find(|(_, v)| !word_ok(v)) {
                return Err(format!(
                    "feed {name}: field_classification.{field} = {v} is not one of {}",
                    words()
                ));
            }
        }
    }
    let layers = table
        .get("open_data")
        .and_then(|o| o.as_table())
        .and_then(|o| o.get("layers"));
    if let Some(layers) = layers {
        let Some(layers) = layers.as_table() else {
            return Err("open_data.layers is a table of layer = classification".into());
        };
        for (layer, v) in layers {
            if !MAP_LAYERS.contains(&layer.as_str()) {
                return Err(format!(
                    "open_data.layers: no map layer \"{layer}\"; the layers are {}",
                    MAP_LAYERS.join(", ")
                ));
            }
            if !word_ok(v) {
                return Err(format!(
                    "open_data.layers.{layer} = {v} is not one of {}",
                    words()
                ));
            }
        }
    }
    Ok(())
}

/// An `[[area]]`: a place alerts may name by code or by name instead of a shape (a
/// CAP `<geocode>` or `<areaDesc>`), and where it is. The gazetteer of CAP feeds,
/// beside the map's own districts.
///
/// ```toml
/// [[area]]
/// name = "Travis County"          # matched against <areaDesc> parts, any case
/// scheme = "UGC"                  # the <geocode> valueName; any scheme when left out
/// codes = ["TXZ192", "TXC453"]    # the <geocode> values
/// polygon = [[-97.9, 30.1], [-97.5, 30.1], [-97.5, 30.5], [-97.9, 30.5]]  # lon, lat
/// # or: center = [-97.74, 30.27]
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub codes: Vec<String>,
    /// Outer ring, WGS84 `[lon, lat]`; the place is its centroid and outline.
    #[serde(default)]
    pub polygon: Option<Vec<[f64; 2]>>,
    /// The place as a point, WGS84 `[lon, lat]`, when no polygon is given.
    #[serde(default)]
    pub center: Option<[f64; 2]>,
}

/// The `[[area]]` entries of a feeds file.
pub fn load_areas(path: &Path) -> Result<Vec<AreaConfig>, ConfigError> {
    load(path, parse_areas)
}

/// Parses the `[[area]]` entries: each needs a name or codes, and a polygon (3 points
/// or more) or a center, all valid WGS84.
pub fn parse_areas(text: &str) -> Result<Vec<AreaConfig>, String> {
    check_areas(parse_file(text)?.area)
}

fn check_areas(area: Vec<AreaConfig>) -> Result<Vec<AreaConfig>, String> {
    for (i, a) in area.iter().enumerate() {
        let label = a
            .name
            .clone()
            .or_else(|| a.codes.first().cloned())
            .unwrap_or_else(|| format!("#{}", i + 1));
        if a.name.as_deref().is_none_or(|n| n.trim().is_empty())
            && a.codes.iter().all(|c| c.trim().is_empty())
        {
            return Err(format!("area {label}: needs a name or codes"));
        }
        let points: Vec<[f64; 2]> = match (&a.polygon, a.center) {
            (Some(ring), None) if ring.len() >= 3 => ring.clone(),
            (Some(_), None) => {
                return Err(format!("area {label}: a polygon needs at least 3 points"));
            }
            (None, Some(center)) => vec![center],
            (None, None) => return Err(format!("area {label}: needs a polygon or a center")),
            (Some(_), Some(_)) => {
                return Err(format!(
                    "area {label}: give a polygon or a center, not both"
                ));
            }
        };
        if let Some([lon, lat]) = points
            .iter()
            .find(|[lon, lat]| !crate::geo_frame::is_valid_wgs84(*lon, *lat))
        {
            return Err(format!(
                "area {label}: [{lon}, {lat}] is not a WGS84 [lon, lat]"
            ));
        }
    }
    Ok(area)
}

/// A `[[rule]]`: the plausible range of one field of one entity type, replacing the
/// built-in default for that field.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRule {
    #[serde(rename = "type")]
    pub entity_type: String,
    pub field: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// The `[[rule]]` entries of a feeds file.
pub fn load_rules(path: &Path) -> Result<Vec<RangeRule>, ConfigError> {
    load(path, parse_rules)
}

/// Parses the `[[rule]]` entries; a rule needs a min or a max, and min ≤ max.
pub fn parse_rules(text: &str) -> Result<Vec<RangeRule>, String> {
    check_rules(parse_file(text)?.rule)
}

fn check_rules(rule: Vec<RangeRule>) -> Result<Vec<RangeRule>, String> {
    for r in &rule {
        match (r.min, r.max) {
            (None, None) => {
                return Err(format!(
                    "rule for {}.{} needs min or max",
                    r.entity_type, r.field
                ));
            }
            (Some(a), Some(b)) if a > b => {
                return Err(format!(
                    "rule for {}.{}: min {a} is above max {b}",
                    r.entity_type, r.field
                ));
            }
            _ => {}
        }
    }
    Ok(rule)
}

/// A feeds file that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is in the message, not also a source (a chain would say it twice).
    #[error("cannot read feeds file {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Everything a feeds file says, read and parsed once: the feeds, the `[[rule]]`
/// ranges and the `[[area]]` gazetteer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedsSetup {
    pub feeds: Vec<FeedConfig>,
    pub rules: Vec<RangeRule>,
    pub areas: Vec<AreaConfig>,
    /// What `serve-open-data` publishes besides open feeds.
    pub open_data: OpenDataConfig,
}

/// Reads and validates a whole feeds file.
pub fn load_setup(path: &Path) -> Result<FeedsSetup, ConfigError> {
    load(path, parse_setup)
}

/// Parses and validates a whole feeds file.
pub fn parse_setup(text: &str) -> Result<FeedsSetup, String> {
    let file = parse_file(text)?;
    Ok(FeedsSetup {
        feeds: check_feeds(file.feed)?,
        rules: check_rules(file.rule)?,
        areas: check_areas(file.area)?,
        open_data: file.open_data,
    })
}

fn parse_file(text: &str) -> Result<FeedsFile, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    check_classification_words(&table)?;
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Reads `path` and parses it with `parse`; errors name the file.
fn load<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

/// Reads and validates a feeds file.
pub fn load_feeds(path: &Path) -> Result<Vec<FeedConfig>, ConfigError> {
    load(path, parse_feeds)
}

/// Parses and validates feeds TOML; the error names the feed and the problem.
pub fn parse_feeds(text: &str) -> Result<Vec<FeedConfig>, String> {
    check_feeds(parse_file(text)?.feed)
}

fn check_feeds(feed: Vec<FeedConfig>) -> Result<Vec<FeedConfig>, String> {
    let mut names = HashSet::new();
    let mut listens = HashSet::new();
    for feed in &feed {
        let name = feed.name.trim();
        if name.is_empty() {
            return Err("a feed has an empty name".into());
        }
        if !names.insert(name.to_string()) {
            return Err(format!(
                "feed name \"{name}\" is used twice; names must be unique"
            ));
        }
        match feed.kind {
            FeedKind::NgsiLd | FeedKind::NgsiV2 | FeedKind::Geojson | FeedKind::Cap => {
                let Some(url) = &feed.url else {
                    return Err(format!("feed \"{name}\": kind {:?} needs a url", feed.kind));
                };
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "feed \"{name}\": url must start with http:// or https://, got {url:?}"
                    ));
                }
            }
            FeedKind::Mqtt => {
                let Some(url) = &feed.url else {
                    return Err(format!(
                        "feed \"{name}\": kind mqtt needs a url (mqtt://HOST:PORT or mqtts://HOST:PORT)"
                    ));
                };
                super::mqtt::broker_address(url).map_err(|e| format!("feed \"{name}\": {e}"))?;
                if feed.topics.is_empty() {
                    return Err(format!(
                        "feed \"{name}\": kind mqtt needs topics = [\"…\"] to subscribe to"
                    ));
                }
                for t in &feed.topics {
                    if !rumqttc::valid_filter(t) {
                        return Err(format!(
                            "feed \"{name}\": {t:?} is not an MQTT topic filter"
                        ));
                    }
                }
                super::mqtt::MqttPayload::from_config(feed)
                    .map_err(|e| format!("feed \"{name}\": {e}"))?;
            }
            FeedKind::CapIntake | FeedKind::NgsiLdNotify => {
                let kind = if feed.kind == FeedKind::CapIntake {
                    "cap-intake"
                } else {
                    "ngsi-ld-notify"
                };
                let Some(listen) = &feed.listen else {
                    return Err(format!(
                        "feed \"{name}\": kind {kind} needs listen = \"ADDR:PORT\""
                    ));
                };
                let port = listen
                    .trim()
                    .rsplit_once(':')
                    .map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(_))) {
                    return Err(format!(
                        "feed \"{name}\": listen = \"{listen}\" needs a port: \"ADDR:PORT\", e.g. \"127.0.0.1:7879\""
                    ));
                }
                // A token written in the file is checked now; one from env: or file:
                // when the feed starts.
                if let Some(token) = &feed.token
                    && !token.starts_with("env:")
                    && !token.starts_with("file:")
                    && token.trim().chars().count() < super::cap_intake::MIN_TOKEN_CHARS
                {
                    return Err(format!(
                        "feed \"{name}\": the token must be at least {} characters",
                        super::cap_intake::MIN_TOKEN_CHARS
                    ));
                }
                if feed.kind == FeedKind::CapIntake && feed.token.is_none() {
                    return Err(format!(
                        "feed \"{name}\": kind cap-intake needs a token (env:NAME or file:PATH)"
                    ));
                }
                if feed.kind == FeedKind::NgsiLdNotify {
                    super::ngsi_notify::check(feed).map_err(|e| format!("feed \"{name}\": {e}"))?;
                }
                if feed.tls_cert.is_some() != feed.tls_key.is_some() {
                    return Err(format!("feed \"{name}\": tls_cert and tls_key go together"));
                }
                if !super::cap_intake::is_loopback(listen) && feed.tls_cert.is_none() {
                    return Err(format!(
                        "feed \"{name}\": listen {listen} is beyond this machine: give tls_cert and tls_key (tokens never cross a network in clear)"
                    ));
                }
                if feed.kind == FeedKind::CapIntake && feed.url.is_some() {
                    return Err(format!(
                        "feed \"{name}\": kind cap-intake listens; it has no url"
                    ));
                }
                if !listens.insert(listen.trim().to_string()) {
                    return Err(format!(
                        "feed \"{name}\": another intake feed already listens on {listen}"
                    ));
                }
            }
            FeedKind::Sim => {
                if matches!(feed.trouble, Some(SimTrouble::Glitch | SimTrouble::Drift))
                    && feed.domain != Domain::Ecology
                {
                    return Err(format!(
                        "feed \"{name}\": trouble = glitch and drift are for domain ecology"
                    ));
                }
            }
        }
        if feed.coords != crate::map::crs::Coords::Wgs84
            && matches!(
                feed.kind,
                FeedKind::Sim | FeedKind::Cap | FeedKind::CapIntake
            )
        {
            return Err(format!(
                "feed \"{name}\": coords = \"{}\" is for feeds whose payloads carry positions (ngsi-ld, ngsi-v2, geojson, mqtt, ngsi-ld-notify); simulated feeds are on the map and CAP areas are WGS84 by the standard",
                feed.coords
            ));
        }
        if feed.kind != FeedKind::Sim && feed.trouble.is_some() {
            return Err(format!("feed \"{name}\": trouble is for kind sim"));
        }
        if !feed.kind.listens()
            && (feed.listen.is_some()
                || feed.token.is_some()
                || feed.tls_cert.is_some()
                || feed.tls_key.is_some()
                || feed.rate_per_s.is_some())
        {
            return Err(format!(
                "feed \"{name}\": listen, token, rate_per_s, tls_cert and tls_key are for kinds cap-intake and ngsi-ld-notify"
            ));
        }
        if let Some(rate) = feed.rate_per_s
            && !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0)
        {
            return Err(format!(
                "feed \"{name}\": rate_per_s = {rate}: give requests a second above 0, at most 1000000"
            ));
        }
        check_field_classification(feed).map_err(|e| format!("feed \"{name}\": {e}"))?;
        if feed.kind != FeedKind::NgsiLdNotify
            && (feed.notify_url.is_some() || feed.subscription_s != default_subscription_s())
        {
            return Err(format!(
                "feed \"{name}\": notify_url and subscription_s are for kind ngsi-ld-notify"
            ));
        }
        if feed.kind != FeedKind::Mqtt
            && (!feed.topics.is_empty()
                || feed.payload.is_some()
                || !feed.field_map.is_empty()
                || feed.username.is_some()
                || feed.password.is_some()
                || feed.client_id.is_some()
                || feed.ca.is_some())
        {
            return Err(format!(
                "feed \"{name}\": topics, payload, field_map, username, password, client_id and ca are for kind mqtt"
            ));
        }
        if !(0.1..=86_400.0).contains(&feed.interval_s) {
            return Err(format!(
                "feed \"{name}\": interval_s must be between 0.1 and 86400, got {}",
                feed.interval_s
            ));
        }
        if !(0.1..=600.0).contains(&feed.timeout_s) {
            return Err(format!(
                "feed \"{name}\": timeout_s must be between 0.1 and 600"
            ));
        }
        if feed.max_payload_bytes == 0 || feed.max_payload_bytes > super::MAX_PAYLOAD_BYTES {
            return Err(format!(
                "feed \"{name}\": max_payload_bytes must be between 1 and {}",
                super::MAX_PAYLOAD_BYTES
            ));
        }
        if feed.page_size == 0 {
            return Err(format!("feed \"{name}\": page_size must be at least 1"));
        }
        if feed.max_pages == 0 || feed.max_poll_items == 0 || feed.max_poll_bytes == 0 {
            return Err(format!(
                "feed \"{name}\": max_pages, max_poll_items and max_poll_bytes must be at least 1"
            ));
        }
        if let Some(c) = feed.cadence_s
            && !(0.1..=30.0 * 86_400.0).contains(&c)
        {
            return Err(format!(
                "feed \"{name}\": cadence_s must be between 0.1 and 2592000, got {c}"
            ));
        }
        if !(feed.stale_after_cadences >= 1.0 && feed.stale_after_cadences <= 1e6) {
            return Err(format!(
                "feed \"{name}\": stale_after_cadences must be between 1 and 1000000"
            ));
        }
        if !(feed.expire_after_cadences == 0.0
            || (feed.expire_after_cadences >= feed.stale_after_cadences
                && feed.expire_after_cadences <= 1e6))
        {
            return Err(format!(
                "feed \"{name}\": expire_after_cadences must be 0 (never) or between \
                 stale_after_cadences ({}) and 1000000",
                feed.stale_after_cadences
            ));
        }
    }
    check_single_authority(&feed)?;
    Ok(feed)
}

/// A feed's fields are never more open than the feed, and are named.
fn check_field_classification(feed: &FeedConfig) -> Result<(), String> {
    let named = feed
        .field_classification
        .keys()
        .chain(feed.open_fields.iter().flatten());
    for field in named {
        if field.trim().is_empty() || field.trim() != field {
            return Err(format!(
                "{field:?} is not a field name (field_classification, open_fields)"
            ));
        }
    }
    if feed.classification == Classification::Open {
        return Ok(());
    }
    let opened = feed
        .field_classification
        .iter()
        .find(|(_, c)| **c == Classification::Open);
    if let Some((field, _)) = opened {
        return Err(format!(
            "field {field} is marked open but the feed is {}: a field is never more open than its feed",
            feed.classification.as_str()
        ));
    }
    if feed.open_fields.is_some() {
        return Err(format!(
            "open_fields lists what an open feed publishes, but the feed is {}",
            feed.classification.as_str()
        ));
    }
    Ok(())
}

/// Refuses two feeds authoritative for the same type or field: the winner would flip
/// between reconciliation passes. A type on one feed and one of its fields on another
/// is fine (the field-level authority wins for that field).
fn check_single_authority(feeds: &[FeedConfig]) -> Result<(), String> {
    let mut owner: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for feed in feeds {
        for claim in &feed.authoritative_for {
            let claim = claim.trim();
            if claim.is_empty() || claim.starts_with('.') || claim.ends_with('.') {
                return Err(format!(
                    "feed \"{}\": authoritative_for entry {claim:?} must be a type or Type.field",
                    feed.name
                ));
            }
            if let Some(other) = owner.insert(claim, &feed.name)
                && other != feed.name
            {
                return Err(format!(
                    "feeds \"{other}\" and \"{}\" are both authoritative for {claim}; \
                     one data needs one source",
                    feed.name
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_authorities_for_one_type_or_field_are_refused() {
        let two = |a: &str, b: &str| {
            parse_feeds(&format!(
                "[[feed]]\nname='eco'\nkind='sim'\ndomain='ecology'\nauthoritative_for=['{a}']\n\
                 [[feed]]\nname='district'\nkind='sim'\ndomain='ecology'\nauthoritative_for=['{b}']\n"
            ))
        };
        let err = two("AirQualityObserved", "AirQualityObserved").unwrap_err();
        assert!(err.contains("\"eco\" and \"district\""), "{err}");
        assert!(err.contains("AirQualityObserved"), "{err}");
        assert!(two("AirQualityObserved.pm25", "AirQualityObserved.pm25").is_err());
        // A type here and one of its fields there: the field's authority is clear.
        assert!(two("AirQualityObserved", "AirQualityObserved.pm25").is_ok());
        assert!(two("AirQualityObserved", "TrafficFlowObserved").is_ok());
    }

    #[test]
    fn lifecycle_settings_and_their_limits() {
        let f = parse_feeds(
            "[[feed]]\nname='cars'\nkind='sim'\ndomain='traffic'\ninterval_s=2\n\
             [[feed]]\nname='aq'\nkind='sim'\ndomain='ecology'\ninterval_s=5\ncadence_s=60\n\
             stale_after_cadences=3\nexpire_after_cadences=0\nremove_missing=false\n\
             [[feed]]\nname='cap'\nkind='cap'\nurl='http://h/cap'\ndomain='urban'\n",
        )
        .unwrap();
        assert_eq!(f[0].stale_after_ms(), 20_000);
        assert_eq!(f[0].expire_after_ms(), Some(60_000));
        assert!(f[0].removes_missing());
        assert_eq!(f[1].stale_after_ms(), 180_000);
        assert_eq!(f[1].expire_after_ms(), None);
        assert!(!f[1].removes_missing());
        assert!(
            !f[2].removes_missing(),
            "a CAP poll is one message, not a snapshot"
        );
        assert_eq!(f[0].untyped_entity_type(), "cars");
        for bad in [
            "cadence_s=0",
            "stale_after_cadences=0.5",
            "stale_after_cadences=10\nexpire_after_cadences=5",
        ] {
            let text = format!("[[feed]]\nname='x'\nkind='sim'\ndomain='urban'\n{bad}\n");
            assert!(parse_feeds(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_simulated_feed_may_ask_for_trouble_that_fits_it() {
        let sim = |domain: &str, trouble: &str| {
            parse_feeds(&format!(
                "[[feed]]\nname='x'\nkind='sim'\ndomain='{domain}'\ntrouble='{trouble}'\n"
            ))
        };
        assert_eq!(
            sim("urban", "late").unwrap()[0].trouble,
            Some(SimTrouble::Late)
        );
        assert_eq!(
            sim("ecology", "drift").unwrap()[0].trouble,
            Some(SimTrouble::Drift)
        );
        let e = sim("traffic", "glitch").unwrap_err();
        assert!(e.contains("ecology"), "{e}");
        assert!(sim("urban", "meltdown").is_err());
        let e = parse_feeds(
            "[[feed]]\nname='x'\nkind='geojson'\nurl='http://h/x'\ndomain='urban'\ntrouble='late'\n",
        )
        .unwrap_err();
        assert!(e.contains("kind sim"), "{e}");
    }

    #[test]
    fn parses_the_documented_example() {
        let feeds = parse_feeds(
            r#"
            [[feed]]
            name = "air-stations"       # unique
            kind = "ngsi-ld"
            url = "http://127.0.0.1:1026/ngsi-ld/v1/entities?type=AirQualityObserved"
            domain = "ecology"
            owner = "Ecology and Environment Bureau"
            interval_s = 5
            context = "https://smartdatamodels.org/context.jsonld"

            [[feed]]
            name = "traffic-sim"
            kind = "sim"
            domain = "traffic"
            "#,
        )
        .unwrap();
        assert_eq!(feeds.len(), 2);
        assert_eq!(feeds[0].kind, FeedKind::NgsiLd);
        assert_eq!(feeds[0].domain, Domain::Ecology);
        assert_eq!(feeds[0].interval_s, 5.0);
        assert_eq!(
            feeds[0].context.as_deref(),
            Some("https://smartdatamodels.org/context.jsonld")
        );
        assert_eq!(feeds[1].kind, FeedKind::Sim);
        assert_eq!(feeds[1].page_size, 1000);
    }

    #[test]
    fn a_feed_says_which_coordinates_its_positions_are_in() {
        use crate::map::crs::Coords;
        let feeds = parse_feeds(
            "[[feed]]\nname='amap'\nkind='geojson'\nurl='http://x'\ndomain='urban'\ncoords='gcj02'\n\
             [[feed]]\nname='baidu'\nkind='mqtt'\nurl='mqtt://127.0.0.1:1883'\ntopics=['a/#']\ndomain='traffic'\ncoords='bd09'\n\
             [[feed]]\nname='gps'\nkind='ngsi-ld'\nurl='http://x'\ndomain='traffic'\n",
        )
        .unwrap();
        let coords: Vec<Coords> = feeds.iter().map(|f| f.coords).collect();
        assert_eq!(coords, [Coords::Gcj02, Coords::Bd09, Coords::Wgs84]);
    }

    #[test]
    fn rejects_bad_files_with_the_reason() {
        let cases = [
            (
                "[[feed]]\nname='a'\nkind='ngsi-ld'\ndomain='ecology'",
                "needs a url",
            ),
            (
                "[[feed]]\nname='a'\nkind='geojson'\nurl='ftp://x'\ndomain='ecology'",
                "http://",
            ),
            (
                "[[feed]]\nname='a'\nkind='sim'\ndomain='weather'",
                "unknown variant",
            ),
            (
                "[[feed]]\nname='a'\nkind='sim'\ndomain='traffic'\n[[feed]]\nname='a'\nkind='sim'\ndomain='health'",
                "used twice",
            ),
            (
                "[[feed]]\nname='a'\nkind='sim'\ndomain='traffic'\ninterval_s=0",
                "interval_s",
            ),
            (
                "[[feed]]\nname='a'\nkind='sim'\ndomain='traffic'\nspeed=3",
                "unknown field",
            ),
            ("[[feed]\n", "expected"),
            (
                "[[feed]]\nname='a'\nkind='geojson'\nurl='http://x'\ndomain='urban'\ncoords='mars'",
                "unknown coordinates \"mars\": one of wgs84, gcj02, bd09",
            ),
            (
                "[[feed]]\nname='a'\nkind='sim'\ndomain='traffic'\ncoords='gcj02'",
                "feed \"a\": coords = \"gcj02\" is for feeds whose payloads carry positions",
            ),
            (
                "[[feed]]\nname='a'\nkind='cap'\nurl='http://x'\ndomain='safety'\ncoords='bd09'",
                "CAP areas are WGS84",
            ),
        ];
        for (text, needle) in cases {
            let err = parse_feeds(text).unwrap_err();
            assert!(err.contains(needle), "{text:?} → {err}");
        }
    }

    #[test]
    fn ngsi_v2_feeds_are_polled_like_ngsi_ld_ones() {
        let feeds = parse_feeds(
            "[[feed]]\nname='orion'\nkind='ngsi-v2'\nurl='http://h:1026/v2/entities?type=Device'\ndomain='urban'\n",
        )
        .unwrap();
        assert_eq!(feeds[0].kind, FeedKind::NgsiV2);
        assert!(feeds[0].kind.is_paged());
        assert!(feeds[0].removes_missing());
        let err =
            parse_feeds("[[feed]]\nname='orion'\nkind='ngsi-v2'\ndomain='urban'\n").unwrap_err();
        assert!(err.contains("needs a url"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = load_feeds(Path::new("/no/feeds.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/feeds.toml"), "{err}");
    }
}
