//! Fuzzing every parser that reads outside input (map files, feed payloads, CAP, the
//! configuration files, the status API's report bodies, departments' answers).
//!
//! Each [`Target`] calls the function production calls. Inputs are generated
//! structure-aware from real seed inputs (the project's test data, the README's
//! examples, small OSM extracts): byte flips, splices across seeds, deep nesting,
//! extreme numbers, huge and invalid strings, other encodings, entity expansion,
//! duplicate keys, wrong types, plus plain random bytes. Input `i` of a target under
//! seed `s` is a pure function of `(target, s, i)`, so any finding is reproduced from
//! its number alone and a run can resume after the process died.
//!
//! The runner calls every input under `catch_unwind`, times it (over [`HANG`] is a
//! hang) and watches the peak resident memory; findings are saved as files and the
//! run goes on. [`supervise`] runs a target in a child process so that what no
//! `catch_unwind` can stop (a stack overflow, an abort, an endless loop) is recorded
//! as a finding too.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::stats::SplitMix;

/// An input running longer than this is a hang.
pub const HANG: Duration = Duration::from_secs(1);
/// No input is longer than this (the 10 MB strings with their seed around them).
pub const MAX_INPUT_BYTES: usize = 12 << 20;
/// Growth of the peak resident memory, over the target's start, past which an
/// input is a finding.
pub const DEFAULT_MEMORY_LIMIT_MB: f64 = 512.0;
/// A child that reports no progress this long is stuck on its input: it is killed and
/// the input recorded as a hang.
pub const STALL: Duration = Duration::from_secs(10);

/// One parser under attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `map::load_bytes` of an `.osm.pbf` (OSM reader and city building).
    OsmPbf,
    /// `map::load_bytes` of a GeoJSON map.
    GeojsonMap,
    /// `map::load_bytes` of a FlatGeobuf map (header, index, features, properties).
    FlatgeobufMap,
    /// `feeds::decode::decode_ngsi_ld`.
    NgsiLd,
    /// `feeds::decode::decode_ngsi_v2`.
    NgsiV2,
    /// `feeds::decode::decode_geojson` (GeoJSON feeds).
    GeojsonFeed,
    /// An MQTT message through `MqttPayload::decode`, flat (with and without a
    /// field map).
    MqttPayload,
    /// `feeds::cap::decode_cap`: polled CAP and the CAP intake's POST bodies.
    CapXml,
    /// `xml_text`, `list_kind` and `read_list`: Atom and RSS lists of CAP messages.
    CapList,
    /// `feeds::config::parse_setup`: the feeds file.
    FeedsToml,
    /// `DispatchConfig::parse`: departments and playbooks.
    DispatchToml,
    /// `Users::parse`: the users file.
    UsersToml,
    /// The status API: a report body (`parse_report`) and a request path.
    StatusReport,
    /// A department's answer to a delivered order (`department_ref`).
    DepartmentAnswer,
    /// A broker's paging `Link` header (`link_next`).
    PagingLink,
}

/// How a target's inputs are shaped, for the structure-aware mutations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grammar {
    Pbf,
    Json,
    Xml,
    Toml,
    Header,
}

impl Target {
    pub const ALL: [Target; 15] = [
        Target::OsmPbf,
        Target::GeojsonMap,
        Target::FlatgeobufMap,
        Target::NgsiLd,
        Target::NgsiV2,
        Target::GeojsonFeed,
        Target::MqttPayload,
        Target::CapXml,
        Target::CapList,
        Target::FeedsToml,
        Target::DispatchToml,
        Target::UsersToml,
        Target::StatusReport,
        Target::DepartmentAnswer,
        Target::PagingLink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::OsmPbf => "osm-pbf",
            Target::GeojsonMap => "geojson-map",
            Target::FlatgeobufMap => "flatgeobuf-map",
            Target::NgsiLd => "ngsi-ld",
            Target::NgsiV2 => "ngsi-v2",
            Target::GeojsonFeed => "geojson-feed",
            Target::MqttPayload => "mqtt-payload",
            Target::CapXml => "cap-xml",
            Target::CapList => "cap-list",
            Target::FeedsToml => "feeds-toml",
            Target::DispatchToml => "dispatch-toml",
            Target::UsersToml => "users-toml",
            Target::StatusReport => "status-report",
            Target::DepartmentAnswer => "department-answer",
            Target::PagingLink => "paging-link",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    fn grammar(self) -> Grammar {
        match self {
            // Binary: byte-level mutations.
            Target::OsmPbf | Target::FlatgeobufMap => Grammar::Pbf,
            Target::CapXml | Target::CapList => Grammar::Xml,
            Target::FeedsToml | Target::DispatchToml | Target::UsersToml => Grammar::Toml,
            Target::PagingLink => Grammar::Header,
            _ => Grammar::Json,
        }
    }

    /// Feeds the input to the parser as production does. `Err` is the parser's own
    /// refusal (a clear error), which is no finding.
    pub fn run(self, input: &[u8]) -> Result<(), String> {
        use crate::feeds::decode;
        use crate::map::{MapFormat, load_bytes};
        let text = || std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"));
        match self {
            Target::OsmPbf => load_bytes(input, MapFormat::OsmPbf, "fuzz", "fuzz.osm.pbf")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::GeojsonMap => load_bytes(input, MapFormat::GeoJson, "fuzz", "fuzz.geojson")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::FlatgeobufMap => load_bytes(input, MapFormat::FlatGeobuf, "fuzz", "fuzz.fgb")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::NgsiLd => decoded(decode::decode_ngsi_ld(input)),
            Target::NgsiV2 => decoded(decode::decode_ngsi_v2(input)),
            Target::GeojsonFeed => decoded(decode::decode_geojson(input)),
            Target::MqttPayload => {
                let [plain, mapped] = mqtt_payloads();
                decoded(plain.decode(input))?;
                decoded(mapped.decode(input))
            }
            Target::CapXml => decoded(crate::feeds::cap::decode_cap(input, places())),
            Target::CapList => {
                use crate::feeds::cap_list::{list_kind, read_list};
                let text = crate::feeds::cap::xml_text(input)?;
                list_kind(&text).ok_or("not a list")?;
                read_list(&text, "https://alerts.example.org/feed").map(drop)
            }
            Target::FeedsToml => crate::feeds::config::parse_setup(text()?).map(drop),
            Target::DispatchToml => {
                crate::dispatch::config::DispatchConfig::parse(text()?, "fuzz.toml")
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Target::UsersToml => crate::dispatch::users::Users::parse(text()?, "fuzz.toml")
                .map(drop)
                .map_err(|e| e.to_string()),
            Target::StatusReport => {
                let path = String::from_utf8_lossy(&input[..input.len().min(4096)]);
                let _ = crate::dispatch::delivery::path_segments(&path);
                crate::dispatch::delivery::parse_report(input, "order-1", "fire")
                    .map(drop)
                    .map_err(|(code, message)| format!("{code}: {message}"))
            }
            Target::DepartmentAnswer => {
                crate::dispatch::delivery::department_ref(&String::from_utf8_lossy(input))
                    .map(drop)
                    .ok_or_else(|| "no reference".to_string())
            }
            Target::PagingLink => crate::feeds::poll::link_next(
                &String::from_utf8_lossy(input),
                "http://broker.example:1026/ngsi-ld/v1/entities?type=Vehicle&limit=100",
            )
            .map(drop)
            .ok_or_else(|| "no next link".to_string()),
        }
    }

    /// Real inputs the mutations start from.
    pub fn seeds(self) -> &'static [Vec<u8>] {
        static SEEDS: OnceLock<Vec<Vec<Vec<u8>>>> = OnceLock::new();
        let all = SEEDS.get_or_init(|| Target::ALL.iter().map(|t| t.make_seeds()).collect());
        &all[Target::ALL.iter().position(|t| *t == self).expect("in ALL")]
    }

    fn make_seeds(self) -> Vec<Vec<u8>> {
        let own: Vec<Vec<u8>> = match self {
            Target::OsmPbf => pbf_seeds(),
            Target::GeojsonMap => vec![GEOJSON_MAP.into(), SDM[0].into(), SDM[5].into()],
            Target::FlatgeobufMap => flatgeobuf_seeds(),
            Target::NgsiLd | Target::NgsiV2 | Target::GeojsonFeed => {
                SDM.iter().map(|s| s.to_vec()).collect()
            }
            Target::MqttPayload => MQTT_FLAT.iter().map(|s| s.as_bytes().to_vec()).collect(),
            Target::CapXml => CAP.iter().map(|s| s.to_vec()).collect(),
            Target::CapList => CAP_LISTS
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .chain(CAP.iter().take(3).map(|s| s.to_vec()))
                .collect(),
            Target::FeedsToml => readme_toml(),
            Target::UsersToml => {
                let mut seeds = readme_toml();
                seeds.push(crate::dispatch::users::DEMO_USERS.into());
                seeds
            }
            Target::DispatchToml => {
                let mut seeds = readme_toml();
                seeds.push(DISPATCH_TOML.into());
                seeds
            }
            Target::StatusReport => STATUS_REPORTS.iter().map(|s| s.as_bytes().into()).collect(),
            Target::DepartmentAnswer => DEPARTMENT_ANSWERS
                .iter()
                .map(|s| s.as_bytes().into())
                .collect(),
            Target::PagingLink => LINKS.iter().map(|s| s.as_bytes().into()).collect(),
        };
        own.into_iter()
            .map(|mut s| {
                s.truncate(MAX_INPUT_BYTES);
                s
            })
            .collect()
    }

    /// Input `index` under `seed`: the same numbers, the same bytes.
    pub fn input(self, seed: u64, index: u64) -> Vec<u8> {
        let salt = self.name().bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        let mut mixer = SplitMix(seed ^ salt);
        let start = mixer.next() ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut rng = Rng(SplitMix(start));
        generate(self, &mut rng)
    }
}

/// Small generated cities as FlatGeobuf: WGS84 with an index, and Gauss-Krüger.
fn flatgeobuf_seeds() -> Vec<Vec<u8>> {
    let gk = crate::map::crs::Crs::from_epsg(4549).ok();
    [(12, None), (5, gk.as_ref())]
        .into_iter()
        .map(|(buildings, crs)| {
            let mut out = Vec::new();
            crate::bench::write_city_flatgeobuf(&mut out, buildings, 1, crs)
                .expect("a generated FlatGeobuf");
            out
        })
        .collect()
}

fn decoded<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<(), String> {
    result.map(drop).map_err(|e| e.to_string())
}

fn mqtt_payloads() -> &'static [crate::feeds::mqtt::MqttPayload; 2] {
    static PAYLOADS: OnceLock<[crate::feeds::mqtt::MqttPayload; 2]> = OnceLock::new();
    PAYLOADS.get_or_init(|| {
        let feeds = crate::feeds::config::parse_feeds(
            r#"
[[feed]]
name = "plain"
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["city/+/state"]
domain = "ecology"
entity_type = "AirQualityObserved"

[[feed]]
name = "mapped"
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["city/air/+/state"]
domain = "ecology"
field_map = { id = "deviceId", lon = "lng", lat = "lat", observed_at = "ts" }
"#,
        )
        .expect("the fuzz feeds parse");
        let payload = |i: usize| {
            crate::feeds::mqtt::MqttPayload::from_config(&feeds[i]).expect("a flat payload")
        };
        [payload(0), payload(1)]
    })
}

/// The places CAP messages may name, as a feeds file's `[[area]]` entries give them.
fn places() -> &'static crate::feeds::gazetteer::Gazetteer {
    static PLACES: OnceLock<crate::feeds::gazetteer::Gazetteer> = OnceLock::new();
    PLACES.get_or_init(|| {
        let areas = crate::feeds::config::parse_areas(
            r#"
[[area]]
name = "Travis County"
scheme = "UGC"
codes = ["TXZ192", "TXC453"]
polygon = [[-98.0, 30.0], [-97.4, 30.0], [-97.4, 30.6], [-98.0, 30.6]]

[[area]]
name = "Kallio"
center = [24.95, 60.184]
"#,
        )
        .expect("the fuzz areas parse");
        let mut places = crate::feeds::gazetteer::Gazetteer::default();
        for area in &areas {
            places.add_area(area);
        }
        places
    })
}

// ---------------------------------------------------------------------------------
// Seeds

const SDM: [&[u8]; 11] = [
    include_bytes!("../tests/data/sdm/air-quality-observed-geojson.json"),
    include_bytes!("../tests/data/sdm/air-quality-observed-ngsi-v2-keyvalues.json"),
    include_bytes!("../tests/data/sdm/air-quality-observed-ngsi-v2-normalized.json"),
    include_bytes!("../tests/data/sdm/air-quality-observed-normalized.jsonld"),
    include_bytes!("../tests/data/sdm/device-ngsi-v2-normalized.json"),
    include_bytes!("../tests/data/sdm/off-street-parking-geojson.json"),
    include_bytes!("../tests/data/sdm/device-normalized.jsonld"),
    include_bytes!("../tests/data/sdm/off-street-parking-normalized.jsonld"),
    include_bytes!("../tests/data/sdm/rejects-mixed.jsonld"),
    include_bytes!("../tests/data/sdm/restricted-traffic-area-normalized.jsonld"),
    include_bytes!("../tests/data/sdm/traffic-flow-observed-normalized.jsonld"),
];

const CAP: [&[u8]; 16] = [
    include_bytes!("../tests/data/cap/helsinki-flood-alert.xml"),
    include_bytes!("../tests/data/cap/kallio-building-fire.xml"),
    include_bytes!("../tests/data/cap/gbk-rainstorm.xml"),
    include_bytes!("../tests/data/cap/area-desc-only.xml"),
    include_bytes!("../tests/data/cap/draft-status.xml"),
    include_bytes!("../tests/data/cap/exercise-status.xml"),
    include_bytes!("../tests/data/cap/gb2312-typhoon.xml"),
    include_bytes!("../tests/data/cap/geocode-district.xml"),
    include_bytes!("../tests/data/cap/helsinki-flood-cancel.xml"),
    include_bytes!("../tests/data/cap/helsinki-flood-update.xml"),
    include_bytes!("../tests/data/cap/iso-8859-1-storm.xml"),
    include_bytes!("../tests/data/cap/malformed.xml"),
    include_bytes!("../tests/data/cap/multi-area-mixed.xml"),
    include_bytes!("../tests/data/cap/nws-flash-flood-watch-ugc.xml"),
    include_bytes!("../tests/data/cap/system-status.xml"),
    include_bytes!("../tests/data/cap/test-status.xml"),
];

const CAP_LISTS: [&str; 2] = [
    include_str!("../tests/data/cap/list-atom.xml"),
    r#"<rss version="2.0"><channel><title>预警</title>
  <item><guid>a1</guid><pubDate>Sun, 29 Nov 2026 08:00:00 GMT</pubDate>
    <link>http://alerts.example.cn/cap/a1.xml</link></item>
  <item><guid>a2</guid><enclosure url="cap/a2.xml" type="application/cap+xml" length="1"/>
    <link>http://alerts.example.cn/page/a2.html</link></item>
</channel></rss>"#,
];

const MQTT_FLAT: [&str; 5] = [
    r#"{"deviceId": "aq-7", "lng": 24.94, "lat": 60.17, "pm25": 12.5, "ts": 1795995000}"#,
    r#"[{"deviceId": "aq-7", "lng": 24.94, "lat": 60.17, "pm25": 12.5, "ts": 1795995000123},
        {"deviceId": "aq-8", "lng": 24.95, "lat": 60.18, "no2": 40, "ts": "2026-11-29T10:00:00Z"}]"#,
    r#"{"id": "sensor-1", "type": "NoiseLevelObserved", "lon": 24.93, "lat": 60.16,
        "LAeq": 61.2, "observed_at": "2026-11-29T10:00:00.250+02:00", "name": "Kamppi 噪声"}"#,
    r#"{"id": "bus-12", "type": "Vehicle", "location": {"type": "Point", "coordinates": [24.94, 60.17]},
        "speed": 31.5, "heading": 270, "dateObserved": "2026-11-29T10:00:00Z"}"#,
    r#"{"id": "w-3", "lon": "24.9", "lat": null, "level": [1, 2, {"x": true}]}"#,
];

const GEOJSON_MAP: &str = r#"{"type":"FeatureCollection","features":[
 {"type":"Feature","id":7,"properties":{"building":"office","height":"23.5","name":"中枢大厦","building:levels":3,"min_height":"2"},
  "geometry":{"type":"Polygon","coordinates":[[[24.94,60.17],[24.9402,60.17],[24.9402,60.1702],[24.94,60.1702],[24.94,60.17]],[[24.94005,60.17005],[24.94015,60.17005],[24.94015,60.17015],[24.94005,60.17015],[24.94005,60.17005]]]}},
 {"type":"Feature","properties":{"building":"yes","building:part":"yes"},
  "geometry":{"type":"MultiPolygon","coordinates":[[[[24.95,60.17,5.0],[24.9502,60.17,5.0],[24.9502,60.1702,5.0],[24.95,60.17,5.0]]]]}},
 {"type":"Feature","properties":{"highway":"primary","oneway":"yes","lanes":"2","name":"Mannerheimintie"},"geometry":{"type":"LineString","coordinates":[[24.94,60.17],[24.95,60.18],[24.96,60.18]]}},
 {"type":"Feature","properties":{"waterway":"river"},"geometry":{"type":"MultiLineString","coordinates":[[[24.93,60.17],[24.94,60.175]],[[24.94,60.175],[24.95,60.19]]]}},
 {"type":"Feature","properties":{"natural":"water"},"geometry":{"type":"Polygon","coordinates":[[[24.96,60.17],[24.962,60.17],[24.962,60.172],[24.96,60.17]]]}},
 {"type":"Feature","properties":{"leisure":"park"},"geometry":{"type":"Polygon","coordinates":[[[24.97,60.17],[24.972,60.17],[24.972,60.172],[24.97,60.17]]]}},
 {"type":"Feature","properties":{"boundary":"administrative","admin_level":"9","name":"Kallio"},"geometry":{"type":"Polygon","coordinates":[[[24.93,60.16],[24.98,60.16],[24.98,60.19],[24.93,60.19],[24.93,60.16]]]}},
 {"type":"Feature","properties":{"amenity":"hospital"},"geometry":{"type":"Point","coordinates":[24.945,60.175]}},
 {"type":"Feature","properties":null,"geometry":null}
]}"#;

const STATUS_REPORTS: [&str; 5] = [
    r#"{"status": "acknowledged", "by": "Wang Fang 王芳", "note": "two engines on the way", "at": "2026-11-29T10:00:00+08:00"}"#,
    r#"{"status": "in_progress", "by": "duty officer"}"#,
    r#"{"status": "done", "by": "Li", "note": null, "at": "2026-11-29T02:00:00.125Z"}"#,
    r#"{"status": "rejected", "by": "desk", "note": "no unit free; ask district 3"}"#,
    "/api/v1/orders/ord-2026-11-29%2F7/status",
];

const DEPARTMENT_ANSWERS: [&str; 4] = [
    r#"{"department_ref": "FD-2026-118", "received": true}"#,
    r#"{"reference": 123456789}"#,
    r#"{"ref": "", "reference": "工单-7"}"#,
    "<html><body>502 Bad Gateway</body></html>",
];

const LINKS: [&str; 4] = [
    r#"</ngsi-ld/v1/entities?type=Vehicle&limit=100&offset=100>; rel="next""#,
    r#"<http://broker.example:1026/ngsi-ld/v1/entities?offset=0>; rel="prev", <?offset=200&limit=100>; rel=next"#,
    r#"<https://other.example/page/3>; rel="next"; title="page 3""#,
    r#"<//broker.example:1026/a b/../c?x=%zz>; REL="NEXT""#,
];

const DISPATCH_TOML: &[u8] = include_bytes!("../config/dispatch.toml");

/// The TOML examples of the README (the feeds, dispatch and users files).
fn readme_toml() -> Vec<Vec<u8>> {
    let readme = include_str!("../README.md");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| {
            block
                .split_once("```")
                .map(|(toml, _)| toml.as_bytes().to_vec())
        })
        .collect()
}

/// Small OSM extracts (buildings, roads, water, districts, a turn restriction) and the
/// head of the embedded default city (its header and first compressed block).
fn pbf_seeds() -> Vec<Vec<u8>> {
    use crate::map::pbf_fixture::Osm;
    let mut city = Osm::new();
    for i in 1..=12 {
        city.node(
            i,
            24.94 + (i % 4) as f64 * 0.001,
            60.17 + (i / 4) as f64 * 0.001,
        );
    }
    city.way(
        100,
        &[1, 2, 6, 5, 1],
        &[("building", "yes"), ("height", "12")],
    )
    .way(
        101,
        &[2, 3, 7, 6, 2],
        &[("building:part", "yes"), ("building:levels", "4")],
    )
    .way(
        102,
        &[1, 2, 3, 4],
        &[("highway", "primary"), ("oneway", "yes")],
    )
    .way(
        103,
        &[4, 8, 12],
        &[("highway", "residential"), ("name", "街")],
    )
    .way(104, &[5, 9, 10, 5], &[("natural", "water")])
    .way(105, &[9, 10, 11, 12, 9], &[("leisure", "park")])
    .way(106, &[1, 4, 12, 9, 1], &[])
    .relation(
        200,
        &[('w', 106, "outer")],
        &[
            ("boundary", "administrative"),
            ("admin_level", "9"),
            ("name", "Kallio"),
        ],
    )
    .relation(
        201,
        &[('w', 102, "from"), ('n', 4, "via"), ('w', 103, "to")],
        &[("type", "restriction"), ("restriction", "no_left_turn")],
    )
    .relation(
        202,
        &[('w', 104, "outer"), ('w', 999, "inner"), ('r', 200, "")],
        &[("type", "multipolygon"), ("building", "yes")],
    );
    let mut small = Osm::new();
    small
        .node(1, 24.94, 60.17)
        .node(2, 24.95, 60.17)
        .node(3, 24.95, 60.18)
        .way(10, &[1, 2, 3, 1], &[("building", "yes")]);
    vec![
        city.to_pbf(),
        small.to_pbf(),
        pbf_blobs(crate::map::DEFAULT_MAP_PBF, 2),
    ]
}

/// The first `count` blobs (header and data) of a PBF file.
fn pbf_blobs(pbf: &[u8], count: usize) -> Vec<u8> {
    let mut at = 0usize;
    for _ in 0..count {
        let Some(len) = pbf.get(at..at + 4) else {
            break;
        };
        let header_len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let header = &pbf[at + 4..(at + 4 + header_len).min(pbf.len())];
        // BlobHeader field 3 (datasize) is a varint: tag 0x18.
        let data_len = header
            .iter()
            .position(|&b| b == 0x18)
            .map(|p| {
                let mut value = 0usize;
                for (shift, &b) in header[p + 1..].iter().enumerate().take(5) {
                    value |= usize::from(b & 0x7F) << (7 * shift);
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                value
            })
            .unwrap_or(0);
        at = (at + 4 + header_len + data_len).min(pbf.len());
    }
    pbf[..at].to_vec()
}

// ---------------------------------------------------------------------------------
// Generation

struct Rng(SplitMix);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next()
    }
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.unit() < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn generate(target: Target, rng: &mut Rng) -> Vec<u8> {
    let seeds = target.seeds();
    let grammar = target.grammar();
    let roll = rng.below(1000);
    let mut input = if roll < 30 {
        // Plain random bytes.
        let len = rng.below(4096);
        (0..len).map(|_| rng.next() as u8).collect()
    } else if roll < 50 {
        // Random text in the grammar's alphabet.
        let alphabet = alphabet(grammar);
        let len = rng.below(2048);
        (0..len).map(|_| *rng.pick(alphabet)).collect()
    } else {
        rng.pick(seeds).clone()
    };
    if roll >= 60 {
        let rounds = 1 + (rng.next() % 64).trailing_zeros().min(7) as usize;
        for _ in 0..rounds {
            if rng.chance(0.55) {
                mutate_structure(grammar, &mut input, seeds, rng);
            } else {
                mutate_bytes(&mut input, seeds, rng);
            }
            input.truncate(MAX_INPUT_BYTES);
        }
    }
    input.truncate(MAX_INPUT_BYTES);
    input
}

fn alphabet(grammar: Grammar) -> &'static [u8] {
    match grammar {
        Grammar::Json => b"{}[]:,\"\\ 0123456789.eE+-truefalsn\n\tabcxyz_@",
        Grammar::Xml => b"<>/=\"' ?!-[]&;#xabcdefgalertinfo:\nCDAT1234567890",
        Grammar::Toml => b"[]{}=,.\"'#\n abcdefgxyz0123456789+-:_TZ",
        Grammar::Header => b"<>;,=\"' relnxtprvhtp:/?&%#.0123456789ab",
        Grammar::Pbf => b"\x00\x01\x08\x0a\x10\x12\x18\x1a\x22\x80\xff\x7fOSMHeaderData",
    }
}

/// Varints PBF readers choke on: the longest, over-long, zero.
const VARINTS: [&[u8]; 4] = [
    &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
    &[0xFF; 10],
    &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    &[0x00],
];

/// Numbers parsers choke on.
const NUMBERS: [&str; 24] = [
    "1e999",
    "-1e999",
    "1e-400",
    "-0",
    "-0.0",
    "0",
    "NaN",
    "Infinity",
    "-Infinity",
    "nan",
    "inf",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "340282366920938463463374607431768211456",
    "1.7976931348623157e309",
    "4.9e-325",
    "0x7fffffff",
    "1_000",
    "01",
    "1.",
    ".5",
    "123456789012345678901234567890.123456789e-30",
    "2147483648",
];

/// Values of the wrong type, or awkward ones of the right type.
const JSON_VALUES: [&str; 14] = [
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "[[[]]]",
    "{\"type\":\"Point\",\"coordinates\":[1e999,-0]}",
    "{\"type\":\"Property\",\"value\":{\"@value\":null}}",
    "[1,\"a\",null,{}]",
    "\"2026-02-30T25:61:61Z\"",
    "\"\\ud800\"",
    "{\"@id\":{},\"@type\":[]}",
    "\"urn:ngsi-ld:X:\\u0000\"",
    "{\"value\":[],\"observedAt\":1e999,\"unitCode\":{}}",
];

const TOML_VALUES: [&str; 12] = [
    "[]",
    "{}",
    "true",
    "1979-05-27T07:32:00Z",
    "\"\"",
    "'''\nmulti\n'''",
    "[[], [1, \"a\"], {a = 1}]",
    "{ a = { b = { c = 1 } } }",
    "\"\\uD800\"",
    "inf",
    "-nan",
    "\"env:\"",
];

/// Strings parsers choke on: invalid UTF-8, escapes of nothing, controls, other scripts.
const STRINGS: [&[u8]; 14] = [
    b"",
    b"\xff\xfe\xfd",
    b"\xc0\x80",
    b"\xed\xa0\x80",
    b"\\ud800\\udc00",
    b"\\u0000",
    b"\x00\x01\x1b[31m",
    "中枢 城市大脑 预警".as_bytes(),
    "\u{202e}\u{feff}\u{200b}".as_bytes(),
    b"%00%ff%2F..%2F",
    b"&amp;&lt;&#0;&#x110000;&#xD800;",
    b"${jndi:ldap://x}",
    b"\\",
    b"\"",
];

fn huge_len(rng: &mut Rng) -> usize {
    match rng.below(1000) {
        0 => 1_000_000 + rng.below(9_000_000), // up to 10 MB
        1..=20 => 10_000 + rng.below(100_000),
        _ => 100 + rng.below(2_000),
    }
}

fn filler(rng: &mut Rng, len: usize) -> Vec<u8> {
    let unit: &[u8] = match rng.below(4) {
        0 => b"a",
        1 => "城".as_bytes(),
        2 => b"0",
        _ => b"\\u0041",
    };
    unit.iter().copied().cycle().take(len).collect()
}

fn nesting_depth(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=9 => 100_000,
        10..=39 => 10_000,
        _ => 50 + rng.below(2_000),
    }
}

fn mutate_bytes(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    let len = input.len();
    match rng.below(9) {
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            input[at] = *rng.pick(b"\x00\xff\x7f\x80\"<{[\\&\xc0\xed#=\n");
        }
        2 if len > 0 => {
            let at = rng.below(len);
            let n = (1 + rng.below(64)).min(len - at);
            input.drain(at..at + n);
        }
        3 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            // A chunk of the input again, elsewhere.
            let from = rng.below(len);
            let n = (1 + rng.below(256)).min(len - from);
            let chunk = input[from..from + n].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        5 => {
            // A splice across seeds: our head, another seed's tail.
            let other = rng.pick(seeds);
            let at = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(at);
            input.extend_from_slice(&other[from..]);
        }
        6 if len > 0 => {
            input.truncate(rng.below(len));
        }
        7 if len >= 4 => {
            // A length or count where one is read: big-endian, little-endian, varint.
            let at = rng.below(len - 3);
            let value = *rng.pick(&[0u32, 1, 0x7F, 0x80, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF]);
            let bytes = if rng.chance(0.5) {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            input[at..at + 4].copy_from_slice(&bytes);
        }
        _ if len > 0 => {
            let at = rng.below(len);
            let varint = *rng.pick(&VARINTS);
            let end = (at + varint.len()).min(len);
            input.splice(at..end, varint.iter().copied());
        }
        _ => input.extend((0..1 + rng.below(32)).map(|_| rng.next() as u8)),
    }
}

fn mutate_structure(grammar: Grammar, input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    match rng.below(12) {
        0 => replace_number(input, rng),
        1 => replace_string(grammar, input, rng),
        2 => nest(grammar, input, rng),
        3 => reencode(grammar, input, rng),
        4 => {
            // A string stretched huge.
            let len = huge_len(rng);
            let fill = filler(rng, len);
            match find_string(grammar, input, rng) {
                Some((start, end)) => {
                    input.splice(start..end, fill);
                }
                None => input.extend(fill),
            }
        }
        _ => match grammar {
            Grammar::Json => mutate_json(input, rng),
            Grammar::Xml => mutate_xml(input, rng),
            Grammar::Toml => mutate_toml(input, rng),
            Grammar::Header => mutate_header(input, rng),
            Grammar::Pbf => mutate_bytes(input, seeds, rng),
        },
    }
}

/// Spans `(start, end)` of digit runs that stand alone (numbers).
fn numbers(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let starts = (input[i].is_ascii_digit() || input[i] == b'-')
            && (i == 0 || !input[i - 1].is_ascii_alphanumeric());
        if starts {
            let start = i;
            i += 1;
            while i < input.len()
                && (input[i].is_ascii_digit()
                    || matches!(input[i], b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn replace_number(input: &mut Vec<u8>, rng: &mut Rng) {
    let spans = numbers(input);
    let number = rng.pick(&NUMBERS).as_bytes();
    if spans.is_empty() {
        let at = rng.below(input.len() + 1);
        input.splice(at..at, number.iter().copied());
    } else {
        let (start, end) = *rng.pick(&spans);
        input.splice(start..end, number.iter().copied());
    }
}

/// The inside of a quoted string (JSON, TOML, header) or of an XML text node.
fn find_string(grammar: Grammar, input: &[u8], rng: &mut Rng) -> Option<(usize, usize)> {
    let (open, close) = match grammar {
        Grammar::Xml => (b'>', b'<'),
        Grammar::Pbf => return None,
        _ => (b'"', b'"'),
    };
    let opens: Vec<usize> = input
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == open)
        .map(|(i, _)| i + 1)
        .collect();
    if opens.is_empty() {
        return None;
    }
    let start = *rng.pick(&opens);
    let end = input[start..].iter().position(|b| *b == close)? + start;
    Some((start, end))
}

fn replace_string(grammar: Grammar, input: &mut Vec<u8>, rng: &mut Rng) {
    let text = *rng.pick(&STRINGS);
    let text: Vec<u8> = if rng.chance(0.2) {
        text.repeat(1 + rng.below(500))
    } else {
        text.to_vec()
    };
    match find_string(grammar, input, rng) {
        Some((start, end)) => {
            input.splice(start..end, text);
        }
        None => {
            let at = rng.below(input.len() + 1);
            input.splice(at..at, text);
        }
    }
}

/// Deep nesting, up to 100,000 levels, around the whole input or inside it.
fn nest(grammar: Grammar, input: &mut Vec<u8>, rng: &mut Rng) {
    let depth = nesting_depth(rng);
    let (open, close): (&[u8], &[u8]) = match (grammar, rng.below(3)) {
        (Grammar::Json, 0) => (b"[", b"]"),
        (Grammar::Json, 1) => (b"{\"a\":", b"}"),
        (Grammar::Json, _) => (b"{\"value\":[", b"]}"),
        (Grammar::Xml, 0) => (b"<a>", b"</a>"),
        (Grammar::Xml, 1) => (b"<info><area>", b"</area></info>"),
        (Grammar::Xml, _) => (b"<![CDATA[<x>", b"]]>"),
        (Grammar::Toml, 0) => (b"[", b"]"),
        (Grammar::Toml, 1) => (b"{a=", b"}"),
        (Grammar::Toml, _) => (b"a.", b""),
        (Grammar::Header, _) => (b"<", b">"),
        (Grammar::Pbf, _) => (b"\x0a\xff\xff\x03", b""),
    };
    let mut nested = Vec::with_capacity(depth * (open.len() + close.len()) + input.len() + 8);
    let inner: &[u8] = match grammar {
        Grammar::Toml if close.is_empty() => b"b = 1",
        Grammar::Toml => b"1",
        Grammar::Json => b"1",
        _ => b"x",
    };
    for _ in 0..depth {
        nested.extend_from_slice(open);
    }
    nested.extend_from_slice(inner);
    for _ in 0..depth {
        nested.extend_from_slice(close);
    }
    if grammar == Grammar::Toml {
        let prefix: &[u8] = if open == b"a." { b"\n" } else { b"\nx = " };
        nested.splice(0..0, prefix.iter().copied());
    }
    // Inside the input, at a place a value could start, or around all of it.
    let at = match grammar {
        Grammar::Json => input.iter().rposition(|b| *b == b':').map(|p| p + 1),
        Grammar::Xml => input.iter().rposition(|b| *b == b'>').map(|p| p + 1),
        _ => None,
    };
    match at {
        Some(at) if rng.chance(0.7) => {
            input.splice(at..at, nested);
        }
        _ => input.extend(nested),
    }
}

/// Other encodings: UTF-16 with or without a BOM, a UTF-8 BOM, a declaration that lies.
fn reencode(grammar: Grammar, input: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(5) {
        0 | 1 => {
            let text = String::from_utf8_lossy(input).into_owned();
            let big_endian = rng.chance(0.5);
            let mut out = Vec::with_capacity(text.len() * 2 + 2);
            if rng.chance(0.7) {
                out.extend_from_slice(if big_endian { b"\xfe\xff" } else { b"\xff\xfe" });
            }
            for unit in text.encode_utf16() {
                out.extend_from_slice(&if big_endian {
                    unit.to_be_bytes()
                } else {
                    unit.to_le_bytes()
                });
            }
            *input = out;
        }
        2 => {
            input.splice(0..0, b"\xef\xbb\xbf".iter().copied());
        }
        3 if grammar == Grammar::Xml => {
            let declaration = *rng.pick(&[
                "<?xml version=\"1.0\" encoding=\"UTF-16\"?>",
                "<?xml version=\"1.0\" encoding=\"GBK\"?>",
                "<?xml version=\"1.0\" encoding=\"x-no-such\"?>",
                "<?xml version=\"1.1\" encoding=\"ISO-8859-1\" standalone=\"no\"?>",
                "<?xml encoding=\"UTF-8\"",
                "<?xml version=\"1.0\" encoding=\"GB18030\"?>\u{0}",
            ]);
            let end = if input.starts_with(b"<?xml") {
                input
                    .windows(2)
                    .position(|w| w == b"?>")
                    .map_or(0, |p| p + 2)
            } else {
                0
            };
            input.splice(0..end, declaration.bytes());
        }
        _ => {
            // Bytes invalid in UTF-8 (and GBK lead bytes without their trail).
            let at = rng.below(input.len() + 1);
            let bytes = *rng.pick(&[&b"\x81"[..], b"\xa1\xff", b"\xfe\xfe\xfe", b"\x80\x80"]);
            input.splice(at..at, bytes.iter().copied());
        }
    }
}

/// Positions just after `needle`.
fn positions_after(input: &[u8], needle: &[u8]) -> Vec<usize> {
    input
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i + needle.len())
        .collect()
}

fn mutate_json(input: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(4) {
        0 => {
            // A value of the wrong type.
            let colons = positions_after(input, b":");
            if colons.is_empty() {
                return;
            }
            let at = *rng.pick(&colons);
            let end = value_end(input, at);
            let value = rng.pick(&JSON_VALUES).as_bytes();
            input.splice(at..end, value.iter().copied());
        }
        1 => {
            // A member twice: `"k": v` copied next to itself.
            let colons = positions_after(input, b"\":");
            if colons.is_empty() {
                return;
            }
            let colon = *rng.pick(&colons);
            let Some(key_start) = input[..colon - 2].iter().rposition(|b| *b == b'"') else {
                return;
            };
            let end = value_end(input, colon);
            let mut member = input[key_start..end].to_vec();
            member.push(b',');
            input.splice(key_start..key_start, member);
        }
        2 => {
            // A member removed.
            let colons = positions_after(input, b"\":");
            if colons.is_empty() {
                return;
            }
            let colon = *rng.pick(&colons);
            if let Some(key_start) = input[..colon - 2].iter().rposition(|b| *b == b'"') {
                let end = value_end(input, colon);
                input.drain(key_start..end);
            }
        }
        _ => {
            // An array repeated many times (many items, each cheap).
            let opens = positions_after(input, b"[");
            if opens.is_empty() {
                return;
            }
            let at = *rng.pick(&opens);
            let end = value_end(input, at);
            let item = input[at..end].to_vec();
            let most = if rng.chance(0.05) { 5_000 } else { 50 };
            let times = (1 + rng.below(most)).min(MAX_INPUT_BYTES / (item.len() + 1));
            let mut items = Vec::with_capacity((item.len() + 1) * times);
            for _ in 0..times {
                items.push(b',');
                items.extend_from_slice(&item);
            }
            input.splice(end..end, items);
        }
    }
}

/// Where the JSON value starting at `at` ends (a rough scan: balanced brackets,
/// strings skipped), or the end of the input.
fn value_end(input: &[u8], at: usize) -> usize {
    let mut depth = 0i64;
    let mut in_string = false;
    let mut i = at;
    while i < input.len() {
        let b = input[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => depth += 1,
                b']' | b'}' if depth == 0 => return i,
                b']' | b'}' => depth -= 1,
                b',' if depth == 0 => return i,
                _ => {}
            }
        }
        i += 1;
        if !in_string && depth == 0 && i > at && matches!(input[i - 1], b']' | b'}' | b'"') {
            return i;
        }
    }
    input.len()
}

fn mutate_xml(input: &mut Vec<u8>, rng: &mut Rng) {
    let root = input
        .windows(6)
        .position(|w| w == b"<alert" || w == b"<feed " || w == b"<rss v")
        .unwrap_or(0);
    match rng.below(5) {
        0 => {
            // Entity expansion: billion laughs, an external entity, a parameter entity.
            let doctype = match rng.below(3) {
                0 => {
                    let mut d = String::from("<!DOCTYPE alert [<!ENTITY l0 \"lol\">");
                    for i in 1..10 {
                        d.push_str(&format!("<!ENTITY l{i} \""));
                        for _ in 0..10 {
                            d.push_str(&format!("&l{};", i - 1));
                        }
                        d.push_str("\">");
                    }
                    d.push_str("]>");
                    d
                }
                1 => "<!DOCTYPE alert [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>".into(),
                _ => {
                    "<!DOCTYPE alert [<!ENTITY % p SYSTEM \"http://127.0.0.1/x.dtd\"> %p;]>".into()
                }
            };
            input.splice(root..root, doctype.into_bytes());
            let refs = positions_after(input, b"<headline>");
            let at = refs.last().copied().unwrap_or(input.len());
            input.splice(at..at, b"&l9;&x;".iter().copied());
        }
        1 => {
            // An element twice.
            let opens = positions_after(input, b"<");
            let Some(&start) = opens.get(rng.below(opens.len())) else {
                return;
            };
            let name_end = input[start..]
                .iter()
                .position(|b| matches!(b, b'>' | b' ' | b'/'))
                .map_or(input.len(), |p| p + start);
            let name = input[start..name_end].to_vec();
            let mut close = b"</".to_vec();
            close.extend_from_slice(&name);
            close.push(b'>');
            let end = input[start..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(name_end, |p| start + p + close.len());
            let element = input[start - 1..end].to_vec();
            input.splice(start - 1..start - 1, element);
        }
        2 => {
            // An attribute twice, or one with odd quoting.
            let at = positions_after(input, b"<");
            if let Some(&at) = at.get(rng.below(at.len())) {
                let name_end = input[at..]
                    .iter()
                    .position(|b| matches!(b, b'>' | b' ' | b'/'))
                    .map_or(input.len(), |p| p + at);
                let attribute = *rng.pick(&[
                    &b" xmlns=\"urn:oasis:names:tc:emergency:cap:1.2\" xmlns=\"x\""[..],
                    b" a='1' a='2'",
                    b" xmlns:cap=\"\"",
                    b" href=\"javascript:alert(1)\"",
                    b" a=\"<\"",
                ]);
                input.splice(name_end..name_end, attribute.iter().copied());
            }
        }
        3 => {
            // Comments, processing instructions, CDATA, character references.
            let at = positions_after(input, b">");
            let at = at.get(rng.below(at.len())).copied().unwrap_or(0);
            let insert = *rng.pick(&[
                &b"<!-- -- -->"[..],
                b"<?pi x?>",
                b"<![CDATA[]]]]><![CDATA[>]]>",
                b"&#0;&#x110000;&#xD800;&#65;&#x4E2D;",
                b"&unknown;",
                b"</alert>",
                b"<alert>",
                b"\x00",
            ]);
            input.splice(at..at, insert.iter().copied());
        }
        _ => {
            // Coordinates and polygons: where CAP carries numbers.
            let at = positions_after(input, b"<polygon>")
                .into_iter()
                .chain(positions_after(input, b"<circle>"))
                .collect::<Vec<_>>();
            let Some(&at) = at.get(rng.below(at.len())) else {
                return;
            };
            let end = input[at..]
                .iter()
                .position(|b| *b == b'<')
                .map_or(input.len(), |p| p + at);
            let value = *rng.pick(&[
                "1e999,NaN 0,0 1e999,NaN",
                "60.17,24.94",
                "90.0001,180.0001 -90,-180 90,180 -90,-180",
                "60.17,24.94 60.18,24.95 60.17,24.94 0",
                "60.17,24.94 1e-400",
                ",,,, ,,",
                "60.17,24.94 -1e999",
            ]);
            let repeated = if rng.chance(0.05) {
                value.repeat(1 + rng.below(20_000))
            } else {
                value.to_string()
            };
            input.splice(at..end, repeated.into_bytes());
        }
    }
}

fn mutate_toml(input: &mut Vec<u8>, rng: &mut Rng) {
    let lines: Vec<(usize, usize)> = {
        let mut spans = Vec::new();
        let mut start = 0;
        for (i, b) in input.iter().enumerate() {
            if *b == b'\n' {
                spans.push((start, i + 1));
                start = i + 1;
            }
        }
        spans.push((start, input.len()));
        spans
    };
    let (start, end) = *rng.pick(&lines);
    match rng.below(5) {
        0 => {
            // A line (a key or a table header) twice.
            let line = input[start..end].to_vec();
            input.splice(end..end, line);
        }
        1 => {
            input.drain(start..end);
        }
        2 => {
            // A value of the wrong type.
            if let Some(eq) = input[start..end].iter().position(|b| *b == b'=') {
                let value = rng.pick(&TOML_VALUES).as_bytes();
                let line_end = if input[end - 1] == b'\n' {
                    end - 1
                } else {
                    end
                };
                input.splice(start + eq + 1..line_end, value.iter().copied());
            }
        }
        3 => {
            // Many tables (each cheap).
            let header = *rng.pick(&[
                &b"\n[[feed]]\nname = \"x\"\n"[..],
                b"\n[[department]]\nid = \"d\"\nname = \"D\"\n",
                b"\n[[user]]\nname = \"u\"\n",
                b"\n[[playbook]]\nkind = \"k\"\norders = []\n",
            ]);
            let most = if rng.chance(0.05) { 20_000 } else { 20 };
            let times = 1 + rng.below(most);
            input.extend(header.repeat(times));
        }
        _ => {
            let text = *rng.pick(&[
                &b"a.b.c.d = 1\na.b = 2\n"[..],
                b"[a]\n[a]\n",
                b"[[a]]\n[a]\n",
                b"x = 1979-05-27T07:32:00.999999999999+99:99\n",
                b"\"\xff\" = 1\n",
                b"k = \"\\u{0}\"\n",
                b"key = \"\"\"\\\n\"\"\"\"\n",
                b"= 1\n",
                b"[feed.x]\n",
            ]);
            input.splice(start..start, text.iter().copied());
        }
    }
}

fn mutate_header(input: &mut Vec<u8>, rng: &mut Rng) {
    let part = *rng.pick(&[
        &b", <http://[::1]:99999/x>; rel=next"[..],
        b"; rel=\"next\"",
        b", <>; rel=next",
        b"<http://\xe4\xb8\xad.example/%zz>;rel=next",
        b", <javascript:alert(1)>; rel=\"next\"",
        b", <file:///etc/passwd>; rel=next",
        b";;;,,,<<>>",
        b", <http://a/?x=",
    ]);
    let at = rng.below(input.len() + 1);
    input.splice(at..at, part.iter().copied());
}

// ---------------------------------------------------------------------------------
// Running

/// A run of one target: inputs `from..from + inputs` under `seed`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    pub from: u64,
    pub inputs: u64,
    /// Findings are written under `<save>/<target>/`.
    pub save: PathBuf,
    pub memory_limit_mb: f64,
}

/// What a target's run found.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetReport {
    pub inputs: u64,
    /// Inputs the parser refused with an error (no finding: the refusals one expects).
    pub refused: u64,
    pub panics: u64,
    /// Inputs over [`HANG`] (and ones a child never finished).
    pub hangs: u64,
    /// Inputs after which the peak resident memory grew past the limit.
    pub over_memory: u64,
    /// Inputs that killed the process (stack overflow, abort).
    pub crashes: u64,
    pub slowest_ms: f64,
    /// Which input was slowest, and its size.
    pub slowest_input: u64,
    pub slowest_bytes: u64,
    pub largest_input_bytes: u64,
    pub wall_s: f64,
    pub inputs_per_s: f64,
    pub peak_rss_mb: f64,
    /// The saved findings.
    pub findings: Vec<String>,
}

impl TargetReport {
    pub fn found(&self) -> u64 {
        self.panics + self.hangs + self.over_memory + self.crashes
    }

    fn merge(&mut self, other: TargetReport) {
        self.inputs += other.inputs;
        self.refused += other.refused;
        self.panics += other.panics;
        self.hangs += other.hangs;
        self.over_memory += other.over_memory;
        self.crashes += other.crashes;
        if other.slowest_ms > self.slowest_ms {
            self.slowest_ms = other.slowest_ms;
            self.slowest_input = other.slowest_input;
            self.slowest_bytes = other.slowest_bytes;
        }
        self.largest_input_bytes = self.largest_input_bytes.max(other.largest_input_bytes);
        self.wall_s += other.wall_s;
        self.peak_rss_mb = self.peak_rss_mb.max(other.peak_rss_mb);
        self.findings.extend(other.findings);
        self.inputs_per_s = if self.wall_s > 0.0 {
            (self.inputs as f64 / self.wall_s).round()
        } else {
            0.0
        };
    }
}

thread_local! {
    /// Set while this thread fuzzes: its panics are findings, not noise on stderr.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Keeps the panic messages of fuzzing threads (for the finding) off stderr; other
/// threads' panics go to the hook that was there.
fn install_panic_hook() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                LAST_PANIC.with(|m| *m.borrow_mut() = info.to_string());
            } else {
                previous(info);
            }
        }));
    });
}

/// Peak resident memory, MB (`VmHWM`).
fn peak_rss_mb() -> f64 {
    crate::bench::peak_rss_bytes().map_or(0.0, |b| b as f64 / 1_048_576.0)
}

/// Resets the peak to the memory resident now (Linux `clear_refs`); false where the
/// kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Calls the target on one input: its time, and the panic message if it panicked.
pub fn call(target: Target, input: &[u8]) -> (Duration, Result<Result<(), String>, String>) {
    call_with(|| target.run(input))
}

fn call_with(
    parse: impl FnOnce() -> Result<(), String>,
) -> (Duration, Result<Result<(), String>, String>) {
    install_panic_hook();
    FUZZING.with(|f| f.set(true));
    let start = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(parse));
    let elapsed = start.elapsed();
    FUZZING.with(|f| f.set(false));
    let outcome = outcome.map_err(|_| LAST_PANIC.with(|m| std::mem::take(&mut *m.borrow_mut())));
    (elapsed, outcome)
}

/// Writes a finding's input (and what happened, beside it); its path.
pub fn save_finding(
    save: &Path,
    target: Target,
    kind: &str,
    seed: u64,
    index: u64,
    input: &[u8],
    note: &str,
) -> String {
    let dir = save.join(target.name());
    let path = dir.join(format!("{kind}-s{seed}-i{index}.bin"));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&path, input))
        .and_then(|()| std::fs::write(path.with_extension("txt"), note));
    match written {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("{} (not saved: {e})", path.display()),
    }
}

/// Runs a target's inputs in this process. `progress` hears each input's number before
/// it runs, and each finding's (kind, number, path) line.
pub fn run_target(
    target: Target,
    options: &RunOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> TargetReport {
    let mut report = TargetReport::default();
    let can_reset = reset_peak_rss();
    let baseline_mb = peak_rss_mb();
    let started = Instant::now();
    let mut last_check = options.from;
    for index in options.from..options.from + options.inputs {
        progress(Progress::Running(index));
        let input = target.input(options.seed, index);
        let (elapsed, outcome) = call(target, &input);
        report.inputs += 1;
        report.largest_input_bytes = report.largest_input_bytes.max(input.len() as u64);
        let ms = elapsed.as_secs_f64() * 1000.0;
        if ms > report.slowest_ms {
            report.slowest_ms = ms;
            report.slowest_input = index;
            report.slowest_bytes = input.len() as u64;
        }
        let mut finding = |report: &mut TargetReport, kind: &str, note: String| {
            let path = save_finding(
                &options.save,
                target,
                kind,
                options.seed,
                index,
                &input,
                &note,
            );
            progress(Progress::Found {
                kind,
                index,
                path: &path,
            });
            report.findings.push(path);
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => report.refused += 1,
            Err(message) => {
                report.panics += 1;
                finding(&mut report, "panic", message);
            }
        }
        if elapsed > HANG {
            report.hangs += 1;
            finding(
                &mut report,
                "hang",
                format!("{ms:.0} ms on {} bytes", input.len()),
            );
        }
        // The peak is read every few inputs (and after every large one); an input
        // that pushed it past the limit is found again by replaying those few alone.
        if index + 1 - last_check >= 16 || input.len() > 1 << 20 {
            if peak_rss_mb() - baseline_mb > options.memory_limit_mb {
                let culprit = (last_check..=index).find(|&i| {
                    reset_peak_rss();
                    let before = peak_rss_mb();
                    let _ = call(target, &target.input(options.seed, i));
                    peak_rss_mb() - before > options.memory_limit_mb
                });
                if let Some(i) = culprit {
                    let input = target.input(options.seed, i);
                    report.over_memory += 1;
                    let path = save_finding(
                        &options.save,
                        target,
                        "memory",
                        options.seed,
                        i,
                        &input,
                        &format!(
                            "peak resident memory grew over {} MB",
                            options.memory_limit_mb
                        ),
                    );
                    progress(Progress::Found {
                        kind: "memory",
                        index: i,
                        path: &path,
                    });
                    report.findings.push(path);
                }
                report.peak_rss_mb = report.peak_rss_mb.max(peak_rss_mb());
                if can_reset {
                    reset_peak_rss();
                }
            }
            last_check = index + 1;
        }
    }
    report.wall_s = started.elapsed().as_secs_f64();
    report.peak_rss_mb = (report.peak_rss_mb.max(peak_rss_mb()) * 10.0).round() / 10.0;
    report.slowest_ms = (report.slowest_ms * 1000.0).round() / 1000.0;
    report.inputs_per_s = if report.wall_s > 0.0 {
        (report.inputs as f64 / report.wall_s).round()
    } else {
        0.0
    };
    report
}

/// What a run tells as it goes.
pub enum Progress<'a> {
    Running(u64),
    Found {
        kind: &'a str,
        index: u64,
        path: &'a str,
    },
}

/// The worker's side of [`supervise`]: runs in this process, telling each input's
/// number and each finding on stderr, and prints the report as JSON on stdout.
pub fn work(target: Target, options: &RunOptions) -> std::io::Result<()> {
    // An input that makes a parser allocate without bound fails an allocation here
    // (an abort, recorded as a crash with its input) before it starves the machine.
    let most = (options.memory_limit_mb * 8.0).max(4096.0) * 1_048_576.0;
    let limit = libc::rlimit {
        rlim_cur: most as libc::rlim_t,
        rlim_max: most as libc::rlim_t,
    };
    // SAFETY: setrlimit only reads the struct given.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
    let mut err = std::io::stderr().lock();
    let report = run_target(target, options, &mut |p| {
        let line = match p {
            Progress::Running(i) => format!("{i}\n"),
            Progress::Found { kind, index, path } => format!("found {kind} {index} {path}\n"),
        };
        let _ = err.write_all(line.as_bytes());
    });
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs a target in child processes (`exe` with `worker_args` and the range), so an
/// input that kills the process (a stack overflow, an abort) or never ends is recorded
/// as a finding and the run goes on with the next input.
pub fn supervise(
    exe: &Path,
    worker_args: &[&str],
    target: Target,
    options: &RunOptions,
) -> std::io::Result<TargetReport> {
    use std::process::{Command, Stdio};
    let end = options.from + options.inputs;
    let mut next = options.from;
    let mut report = TargetReport::default();
    while next < end {
        let mut child = Command::new(exe)
            .args(worker_args)
            .args([
                "--target",
                target.name(),
                "--seed",
                &options.seed.to_string(),
                "--from",
                &next.to_string(),
                "--inputs",
                &(end - next).to_string(),
                "--save",
                &options.save.display().to_string(),
                "--memory-limit-mb",
                &options.memory_limit_mb.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let started = Instant::now();
        let stderr = child.stderr.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let mut running = None;
        let mut found = TargetReport::default();
        let mut last_words = Vec::new();
        let mut stalled = false;
        loop {
            match rx.recv_timeout(STALL) {
                Ok(line) => {
                    if let Ok(i) = line.parse::<u64>() {
                        running = Some(i);
                    } else if let Some(rest) = line.strip_prefix("found ") {
                        let mut parts = rest.splitn(3, ' ');
                        match parts.next() {
                            Some("panic") => found.panics += 1,
                            Some("hang") => found.hangs += 1,
                            Some("memory") => found.over_memory += 1,
                            _ => {}
                        }
                        found.findings.push(parts.nth(1).unwrap_or("").to_string());
                    } else {
                        last_words.push(line);
                        if last_words.len() > 20 {
                            last_words.remove(0);
                        }
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    stalled = true;
                    let _ = child.kill();
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait()?;
        let text = out.join().unwrap_or_default();
        if let Ok(done) = serde_json::from_str::<TargetReport>(text.trim())
            && status.success()
        {
            report.merge(done);
            break;
        }
        // The child died on input `running` (or never started one).
        let Some(dead_on) = running else {
            return Err(std::io::Error::other(format!(
                "the fuzz worker did not start: {status}: {}",
                last_words.join("\n")
            )));
        };
        let input = target.input(options.seed, dead_on);
        let kind = if stalled { "hang" } else { "crash" };
        let note = if stalled {
            format!("no end after {} s", STALL.as_secs())
        } else {
            format!("the process died ({status}):\n{}", last_words.join("\n"))
        };
        let path = save_finding(
            &options.save,
            target,
            kind,
            options.seed,
            dead_on,
            &input,
            &note,
        );
        found.inputs = dead_on + 1 - next;
        found.wall_s = started.elapsed().as_secs_f64();
        if stalled {
            found.hangs += 1;
        } else {
            found.crashes += 1;
        }
        found.findings.push(path);
        report.merge(found);
        next = dead_on + 1;
    }
    Ok(report)
}

/// The regression fixtures of a target: `dir/<target>/*` (findings once, fixed since).
pub fn fixtures(dir: &Path, target: Target) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(target.name())) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "txt" && e != "md"))
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_reproducible_from_their_number() {
        for target in Target::ALL {
            assert!(!target.seeds().is_empty(), "{} has no seeds", target.name());
            for i in [0, 1, 999_999] {
                assert_eq!(target.input(7, i), target.input(7, i), "{}", target.name());
            }
            let distinct: std::collections::HashSet<Vec<u8>> =
                (0..50).map(|i| target.input(7, i)).collect();
            assert!(distinct.len() > 25, "{} repeats itself", target.name());
        }
    }

    #[test]
    fn every_seed_is_read_by_its_parser() {
        // The seeds are real inputs: most are accepted, so mutations start deep.
        for target in Target::ALL {
            let accepted = target
                .seeds()
                .iter()
                .filter(|s| target.run(s).is_ok())
                .count();
            assert!(
                accepted > 0,
                "no seed of {} is accepted: {:?}",
                target.name(),
                target
                    .seeds()
                    .iter()
                    .map(|s| target.run(s))
                    .collect::<Vec<_>>()
            );
        }
    }

    /// Inputs per target in the CI smoke run (debug build).
    const SMOKE_INPUTS: u64 = 3_000;

    #[test]
    fn every_parser_survives_a_short_fuzz_run() {
        let save = std::env::temp_dir().join(format!("zhongshu-fuzz-smoke-{}", std::process::id()));
        let mut found = Vec::new();
        for target in Target::ALL {
            let options = RunOptions {
                seed: 1,
                from: 0,
                inputs: SMOKE_INPUTS,
                save: save.clone(),
                memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            };
            let report = run_target(target, &options, &mut |_| {});
            eprintln!(
                "{}: {} inputs/s, slowest {} ms, {} refused",
                target.name(),
                report.inputs_per_s,
                report.slowest_ms,
                report.refused
            );
            assert_eq!(report.inputs, SMOKE_INPUTS);
            if report.found() > 0 {
                found.push((target.name(), report.findings));
            }
        }
        assert!(found.is_empty(), "findings: {found:#?}");
        let _ = std::fs::remove_dir_all(save);
    }

    #[test]
    fn the_regression_fixtures_are_refused_or_read_quickly() {
        // Inputs that once crashed or hung a parser (tests/data/fuzz/<target>/).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz");
        let limit = if cfg!(debug_assertions) {
            10 * HANG
        } else {
            HANG
        };
        let mut replayed = 0;
        for target in Target::ALL {
            for path in fixtures(&dir, target) {
                let input = std::fs::read(&path).unwrap();
                let (elapsed, outcome) = call(target, &input);
                let outcome =
                    outcome.unwrap_or_else(|m| panic!("{}: panicked: {m}", path.display()));
                if let Err(message) = outcome {
                    assert!(!message.trim().is_empty(), "{}", path.display());
                }
                assert!(elapsed < limit, "{}: {elapsed:?}", path.display());
                replayed += 1;
            }
        }
        assert!(replayed > 0, "no fixtures under {}", dir.display());
    }

    #[test]
    fn a_panic_is_a_finding_saved_with_its_input_and_the_run_goes_on() {
        let dir = std::env::temp_dir().join(format!("zhongshu-fuzz-{}", std::process::id()));
        let path = save_finding(&dir, Target::NgsiLd, "panic", 1, 42, b"{}", "boom");
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let (_, outcome) = call(Target::NgsiLd, b"{");
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
        let (_, outcome) = call_with(|| {
            let items: Vec<u8> = Vec::new();
            Err(format!("{}", items[3]))
        });
        let message = outcome.unwrap_err();
        assert!(message.contains("index out of bounds"), "{message}");
        // The next input runs as if nothing happened.
        let (_, outcome) = call(Target::NgsiLd, b"[]");
        assert!(outcome.is_ok(), "{outcome:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
