//! The catalog of every feed: owner, domain, licence, cadence, declared required and
//! authoritative fields, plus what was observed (entity types and fields seen), which
//! layers consume it; exported as DCAT JSON-LD for open-data portals.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::feeds::config::{FeedConfig, FeedKind};
use crate::feeds::{Domain, EntityUpdate};

/// Fields per type a schema lists at most.
const MAX_SCHEMA_FIELDS: usize = 256;
/// Unit codes per field a schema lists at most.
const MAX_FIELD_UNITS: usize = 8;

/// Entity types and fields a feed has been seen to carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedSchema {
    /// Entity type → field names; the fields of an array of objects once, as
    /// `key[].member`.
    pub types: BTreeMap<String, BTreeSet<String>>,
    /// Entity type → field → unit codes seen (several when sources differ).
    pub units: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Entity type → fields whose values are lists.
    pub lists: BTreeMap<String, BTreeSet<String>>,
}

impl ObservedSchema {
    pub fn observe(&mut self, update: &EntityUpdate) {
        let fields = self.types.entry(update.entity_type.clone()).or_default();
        if fields.len() >= MAX_SCHEMA_FIELDS {
            return;
        }
        fields.extend(update.fields.keys().map(|k| schema_name(k)));
        if update.position.is_some() {
            fields.insert("location".into());
        }
        let units = self.units.entry(update.entity_type.clone()).or_default();
        for (field, code) in &update.units {
            let codes = units.entry(schema_name(field)).or_default();
            if codes.len() < MAX_FIELD_UNITS {
                codes.insert(code.clone());
            }
        }
        let lists = self.lists.entry(update.entity_type.clone()).or_default();
        lists.extend(
            update
                .fields
                .iter()
                .filter(|(_, v)| v.as_list().is_some())
                .map(|(k, _)| schema_name(k)),
        );
    }
}

/// A field's name in a schema: indices of arrays of objects dropped
/// (`openingHours[3].opens` → `openingHours[].opens`).
fn schema_name(field: &str) -> String {
    let mut name = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                name.push('[');
            }
            ']' => {
                in_index = false;
                name.push(']');
            }
            c if in_index && c.is_ascii_digit() => {}
            c => name.push(c),
        }
    }
    name
}

/// The layers and panels that read a domain's data.
pub fn consumers(domain: Domain) -> &'static [&'static str] {
    match domain {
        Domain::Traffic => &[
            "traffic layer",
            "vehicle markers",
            "KPI: road speed, congestion",
            "inspector",
        ],
        Domain::Safety => &["unit markers", "inspector"],
        Domain::Ecology => &["air heat map", "station markers", "KPI: AQI", "inspector"],
        Domain::Urban => &["alert beacons", "KPI: open alerts", "inspector"],
        Domain::Health => &[
            "ambulance and hospital markers",
            "KPI: hospital load",
            "inspector",
        ],
        Domain::Utilities => &["outage beacons", "KPI: open alerts", "inspector"],
        Domain::Economy => &["choropleth", "district columns", "inspector"],
    }
}

/// ISO 8601 duration of a cadence in seconds (`PT5S`, `PT1M30S`).
pub fn iso_duration(secs: f64) -> String {
    let total = secs.round().max(1.0) as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    let mut out = String::from("PT");
    if h > 0 {
        out += &format!("{h}H");
    }
    if m > 0 {
        out += &format!("{m}M");
    }
    if s > 0 || out == "PT" {
        out += &format!("{s}S");
    }
    out
}

/// A feed name as one IRI path segment: unreserved characters kept, everything else
/// (spaces, slashes, non-ASCII) percent-encoded as UTF-8.
pub fn iri_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The DCMI Collection Description frequency of a cadence (DCAT's recommended
/// `dct:accrualPeriodicity` values); the exact cadence goes in `dcat:temporalResolution`.
pub fn frequency(cadence_s: f64) -> &'static str {
    const DAY_S: f64 = 86_400.0;
    if cadence_s < DAY_S {
        "http://purl.org/cld/freq/continuous"
    } else if cadence_s < 7.0 * DAY_S {
        "http://purl.org/cld/freq/daily"
    } else if cadence_s < 28.0 * DAY_S {
        "http://purl.org/cld/freq/weekly"
    } else {
        "http://purl.org/cld/freq/monthly"
    }
}

/// An IANA media type as the IRI `dcat:mediaType` expects.
fn media_type(kind: FeedKind) -> Option<&'static str> {
    match kind {
        FeedKind::NgsiLd | FeedKind::NgsiLdNotify => {
            Some("https://www.iana.org/assignments/media-types/application/ld+json")
        }
        FeedKind::NgsiV2 => Some("https://www.iana.org/assignments/media-types/application/json"),
        FeedKind::Geojson => {
            Some("https://www.iana.org/assignments/media-types/application/geo+json")
        }
        FeedKind::Cap | FeedKind::CapIntake => {
            Some("https://www.iana.org/assignments/media-types/application/xml")
        }
        FeedKind::Mqtt => Some("https://www.iana.org/assignments/media-types/application/json"),
        FeedKind::Sim => None,
    }
}

/// The standard a feed's payloads follow.
fn conforms_to(kind: FeedKind) -> Option<&'static str> {
    match kind {
        FeedKind::NgsiLd | FeedKind::NgsiLdNotify => {
            Some("https://www.etsi.org/deliver/etsi_gs/CIM/001_099/009/")
        }
        FeedKind::NgsiV2 => Some("https://fiware.github.io/specifications/ngsiv2/stable/"),
        FeedKind::Geojson => Some("https://www.rfc-editor.org/rfc/rfc7946"),
        FeedKind::Cap | FeedKind::CapIntake => Some("urn:oasis:names:tc:emergency:cap:1.2"),
        FeedKind::Mqtt => {
            Some("http://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html")
        }
        FeedKind::Sim => None,
    }
}

/// A licence as an IRI: a URL as given, an SPDX identifier (`CC-BY-4.0`) as its SPDX
/// IRI; `None` for free text, which goes in a label instead.
fn licence_iri(licence: &str) -> Option<String> {
    let licence = licence.trim();
    if licence.starts_with("http://") || licence.starts_with("https://") {
        return (!licence.contains(char::is_whitespace)).then(|| licence.to_string());
    }
    let spdx = !licence.is_empty()
        && licence
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '+'));
    spdx.then(|| format!("http://spdx.org/licenses/{licence}"))
}

/// The whole catalog as DCAT JSON-LD: every link an IRI (`@id`), no nulls (what a feed
/// lacks is left out), cadence as a frequency term plus an `xsd:duration`.
pub fn dcat_catalog(title: &str, feeds: &[FeedConfig], observed: &[ObservedSchema]) -> Value {
    let datasets: Vec<Value> = feeds
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let schema = observed.get(i);
            let types: Vec<Value> = schema
                .map(|s| {
                    s.types
                        .iter()
                        .map(|(t, fields)| {
                            let mut entry = json!({"zs:entityType": t, "zs:fields": fields});
                            if let Some(units) = s.units.get(t).filter(|u| !u.is_empty()) {
                                entry["zs:units"] = json!(units);
                            }
                            if let Some(lists) = s.lists.get(t).filter(|l| !l.is_empty()) {
                                entry["zs:lists"] = json!(lists);
                            }
                            entry
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut d = serde_json::Map::new();
            let mut put = |k: &str, v: Value| {
                d.insert(k.to_string(), v);
            };
            put("@type", json!("dcat:Dataset"));
            put(
                "@id",
                json!(format!("urn:zhongshu:feed:{}", iri_segment(&f.name))),
            );
            put("dct:identifier", json!(f.name));
            put("dct:title", json!(f.name));
            if let Some(owner) = &f.owner {
                put(
                    "dct:publisher",
                    json!({"@type": "foaf:Organization", "foaf:name": owner}),
                );
            }
            match f.licence.as_deref().map(|l| (l, licence_iri(l))) {
                Some((_, Some(iri))) => put("dct:license", json!({"@id": iri})),
                Some((text, None)) => put(
                    "dct:license",
                    json!({"@type": "dct:LicenseDocument", "rdfs:label": text}),
                ),
                None => {}
            }
            put(
                "dct:accrualPeriodicity",
                json!({"@id": frequency(f.cadence_s())}),
            );
            put(
                "dcat:temporalResolution",
                json!({"@value": iso_duration(f.cadence_s()), "@type": "xsd:duration"}),
            );
            put(
                "dcat:theme",
                json!({"@id": format!("urn:zhongshu:domain:{}", f.domain.as_str())}),
            );
            put("dcat:keyword", json!(f.domain.as_str()));
            if let Some(url) = &f.url {
                let mut dist = serde_json::Map::new();
                dist.insert("@type".into(), json!("dcat:Distribution"));
                // Published to open-data portals: never with credentials.
                dist.insert(
                    "dcat:accessURL".into(),
                    json!({"@id": crate::http::redact_url(url)}),
                );
                if let Some(m) = media_type(f.kind) {
                    dist.insert("dcat:mediaType".into(), json!({"@id": m}));
                }
                if let Some(c) = conforms_to(f.kind) {
                    dist.insert("dct:conformsTo".into(), json!({"@id": c}));
                }
                put("dcat:distribution", json!([Value::Object(dist)]));
            } else {
                put("zs:simulated", json!(true));
            }
            put("zs:requiredFields", json!(f.required_fields));
            put("zs:authoritativeFor", json!(f.authoritative_for));
            put("zs:consumers", json!(consumers(f.domain)));
            put("zs:observedSchema", json!(types));
            Value::Object(d)
        })
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "zs": "urn:zhongshu:catalog#",
        },
        "@type": "dcat:Catalog",
        "@id": "urn:zhongshu:catalog",
        "dct:title": title,
        "dcat:dataset": datasets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::{EntityKind, FieldValue};

    #[test]
    fn the_schema_names_lists_and_units_once() {
        let feeds = parse_feeds(
            "[[feed]]\nname='air'\nkind='ngsi-ld'\nurl='http://h/e'\ndomain='ecology'\n",
        )
        .unwrap();
        let mut schema = ObservedSchema::default();
        let stations = crate::feeds::decode::decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-normalized.jsonld"
        ))
        .unwrap()
        .updates;
        for station in &stations {
            schema.observe(station);
        }
        let mut hours = stations[0].clone();
        for day in 0..7 {
            hours.fields.insert(
                format!("openingHours[{day}].opens"),
                FieldValue::Text("08:00".into()),
            );
        }
        // The same field in another unit from another report: both are listed.
        hours.units.insert("no2".into(), "59".into());
        schema.observe(&hours);
        let cat = dcat_catalog("Helsinki", &feeds, &[schema]);
        let observed = &cat["dcat:dataset"][0]["zs:observedSchema"][0];
        let fields = observed["zs:fields"].as_array().unwrap();
        // One entry for a list of objects, not one per index.
        assert!(
            fields.contains(&json!("openingHours[].opens")),
            "{fields:?}"
        );
        assert!(!fields.iter().any(|f| f.as_str().unwrap().contains("[0]")));
        assert!(fields.contains(&json!("no2.accuracy")), "{fields:?}");
        assert_eq!(observed["zs:units"]["no2"], json!(["59", "GQ"]));
        assert_eq!(observed["zs:units"]["CO"], json!(["59"]));
        assert_eq!(observed["zs:units"]["temperature"], json!(["CEL"]));
        assert_eq!(observed["zs:lists"], json!(["category", "refDevice"]));
    }

    #[test]
    fn durations() {
        assert_eq!(iso_duration(5.0), "PT5S");
        assert_eq!(iso_duration(90.0), "PT1M30S");
        assert_eq!(iso_duration(3600.0), "PT1H");
        assert_eq!(iso_duration(0.2), "PT1S");
    }

    #[test]
    fn catalog_carries_config_and_observed_schema() {
        let feeds = parse_feeds(
            "[[feed]]\nname='air'\nkind='ngsi-ld'\nurl='http://h/e'\ndomain='ecology'\nowner='Eco Bureau'\nlicence='CC-BY-4.0'\ninterval_s=60\nrequired_fields=['pm25']\nauthoritative_for=['AirQualityObserved']\n",
        )
        .unwrap();
        let mut schema = ObservedSchema::default();
        schema.observe(&EntityUpdate {
            id: "a".into(),
            entity_type: "AirQualityObserved".into(),
            kind: EntityKind::Generic,
            position: Some([24.9, 60.1]),
            line: None,
            observed_at_ms: None,
            fields: [("pm25".to_string(), FieldValue::Number(3.0))]
                .into_iter()
                .collect(),
            units: Default::default(),
            notes: Vec::new(),
        });
        let cat = dcat_catalog("Helsinki", &feeds, &[schema]);
        let d = &cat["dcat:dataset"][0];
        assert_eq!(cat["@type"], "dcat:Catalog");
        assert_eq!(d["dct:publisher"]["foaf:name"], "Eco Bureau");
        assert_eq!(
            d["dct:license"]["@id"],
            "http://spdx.org/licenses/CC-BY-4.0"
        );
        assert_eq!(
            d["dct:accrualPeriodicity"]["@id"],
            "http://purl.org/cld/freq/continuous"
        );
        assert_eq!(d["dcat:temporalResolution"]["@value"], "PT1M");
        assert_eq!(d["dcat:temporalResolution"]["@type"], "xsd:duration");
        assert_eq!(d["dcat:keyword"], "ecology");
        assert_eq!(
            d["dcat:distribution"][0]["dcat:accessURL"]["@id"],
            "http://h/e"
        );
        assert_eq!(d["zs:authoritativeFor"][0], "AirQualityObserved");
        assert_eq!(
            d["zs:observedSchema"][0]["zs:fields"],
            json!(["location", "pm25"])
        );
        assert!(
            d["zs:consumers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "air heat map")
        );
    }

    /// Every node id and every link is an absolute IRI without spaces; nothing is null.
    fn check_json_ld(v: &Value, path: &str, problems: &mut Vec<String>) {
        match v {
            Value::Null => problems.push(format!("{path} is null")),
            Value::Object(map) => {
                if let Some(id) = map.get("@id") {
                    let ok = id.as_str().is_some_and(|s| {
                        !s.contains(char::is_whitespace)
                            && s.split_once(':').is_some_and(|(scheme, rest)| {
                                !rest.is_empty()
                                    && scheme
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                            })
                    });
                    if !ok {
                        problems.push(format!("{path}.@id = {id} is no IRI"));
                    }
                }
                for (k, child) in map {
                    check_json_ld(child, &format!("{path}.{k}"), problems);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    check_json_ld(child, &format!("{path}[{i}]"), problems);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_catalog_is_valid_dcat_for_awkward_feeds() {
        let feeds = parse_feeds(
            "[[feed]]\nname='Air stations (east) 东区'\nkind='geojson'\nurl='http://h/a.geojson'\ndomain='ecology'\nlicence='Open data, ask the bureau'\n\
             [[feed]]\nname='sim traffic'\nkind='sim'\ndomain='traffic'\ninterval_s=2\n\
             [[feed]]\nname='alerts'\nkind='cap'\nurl='https://h/cap.xml'\ndomain='urban'\ninterval_s=86400\nlicence='https://example.org/licence'\n",
        )
        .unwrap();
        let cat = dcat_catalog("Helsinki", &feeds, &[]);
        let mut problems = Vec::new();
        check_json_ld(&cat, "catalog", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        let d = &cat["dcat:dataset"];
        assert_eq!(
            d[0]["@id"],
            "urn:zhongshu:feed:Air%20stations%20%28east%29%20%E4%B8%9C%E5%8C%BA"
        );
        assert_eq!(
            d[0]["dcat:distribution"][0]["dcat:mediaType"]["@id"],
            "https://www.iana.org/assignments/media-types/application/geo+json"
        );
        assert_eq!(
            d[0]["dct:license"]["rdfs:label"],
            "Open data, ask the bureau"
        );
        // A simulated feed has no distribution rather than null links.
        assert!(d[1].get("dcat:distribution").is_none());
        assert!(d[1].get("dct:license").is_none());
        assert_eq!(d[1]["zs:simulated"], true);
        assert_eq!(d[1]["dcat:temporalResolution"]["@value"], "PT2S");
        assert_eq!(
            d[2]["dct:accrualPeriodicity"]["@id"],
            "http://purl.org/cld/freq/daily"
        );
        assert_eq!(d[2]["dct:license"]["@id"], "https://example.org/licence");
        assert_eq!(
            d[2]["dcat:distribution"][0]["dct:conformsTo"]["@id"],
            "urn:oasis:names:tc:emergency:cap:1.2"
        );
    }

    /// Runs a future that never waits (a JSON-LD processor without a document loader).
    #[cfg(feature = "jsonld-check")]
    fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    #[cfg(feature = "jsonld-check")]
    fn a_json_ld_processor_reads_the_catalog_as_dcat_triples() {
        use json_ld::syntax::Parse;
        use json_ld::{JsonLdProcessor, NoLoader, RemoteDocument};
        let feeds = parse_feeds(
            "[[feed]]\nname='Air stations (east)'\nkind='ngsi-ld'\nurl='http://h/e?type=AirQualityObserved'\ndomain='ecology'\nlicence='CC-BY-4.0'\ninterval_s=60\n\
             [[feed]]\nname='sim traffic'\nkind='sim'\ndomain='traffic'\n",
        )
        .unwrap();
        let text = dcat_catalog("Helsinki", &feeds, &[]).to_string();
        let document = RemoteDocument::new(
            None,
            None,
            json_ld::syntax::Value::parse_str(&text).unwrap().0,
        );
        let mut generator = rdf_types::generator::Blank::new();
        let mut rdf = ready(document.to_rdf(&mut generator, &NoLoader)).unwrap();
        let triples: Vec<String> = rdf.cloned_quads().map(|q| q.to_string()).collect();
        let has = |needle: &str| triples.iter().any(|t| t.contains(needle));
        let dataset = "<urn:zhongshu:feed:Air%20stations%20%28east%29>";
        for expected in [
            format!("{dataset} <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <http://www.w3.org/ns/dcat#Dataset>"),
            format!("<urn:zhongshu:catalog> <http://www.w3.org/ns/dcat#dataset> {dataset}"),
            format!("{dataset} <http://purl.org/dc/terms/accrualPeriodicity> <http://purl.org/cld/freq/continuous>"),
            format!("{dataset} <http://purl.org/dc/terms/license> <http://spdx.org/licenses/CC-BY-4.0>"),
            "<http://www.w3.org/ns/dcat#accessURL> <http://h/e?type=AirQualityObserved>".to_string(),
            "<http://www.w3.org/ns/dcat#mediaType> <https://www.iana.org/assignments/media-types/application/ld+json>".to_string(),
            "\"PT1M\"^^<http://www.w3.org/2001/XMLSchema#duration>".to_string(),
            "<urn:zhongshu:feed:sim%20traffic> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <http://www.w3.org/ns/dcat#Dataset>".to_string(),
        ] {
            assert!(has(&expected), "missing {expected} in {triples:#?}");
        }
    }
}
