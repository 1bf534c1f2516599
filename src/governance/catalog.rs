//! The catalog of every feed: owner, domain, licence, cadence, declared required and
//! authoritative fields, plus what was observed (entity types and fields seen), which
//! layers consume it; exported as DCAT JSON-LD for open-data portals.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::feeds::config::{FeedConfig, FeedKind};
use crate::feeds::{Domain, EntityUpdate};

/// Entity types and fields a feed has been seen to carry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedSchema {
    /// Entity type → field names.
    pub types: BTreeMap<String, BTreeSet<String>>,
}

impl ObservedSchema {
    pub fn observe(&mut self, update: &EntityUpdate) {
        let fields = self.types.entry(update.entity_type.clone()).or_default();
        if fields.len() < 256 {
            fields.extend(update.fields.keys().cloned());
            if update.position.is_some() {
                fields.insert("location".into());
            }
        }
    }
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

/// The whole catalog as DCAT JSON-LD.
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
                        .map(|(t, fields)| json!({"zs:entityType": t, "zs:fields": fields}))
                        .collect()
                })
                .unwrap_or_default();
            let (access, format) = match f.kind {
                FeedKind::NgsiLd => (f.url.clone(), "application/ld+json (NGSI-LD)"),
                FeedKind::Geojson => (f.url.clone(), "application/geo+json"),
                FeedKind::Cap => (f.url.clone(), "application/cap+xml (CAP 1.2)"),
                FeedKind::Sim => (None, "built-in simulator"),
            };
            json!({
                "@type": "dcat:Dataset",
                "@id": format!("urn:zhongshu:feed:{}", f.name),
                "dct:identifier": f.name,
                "dct:title": f.name,
                "dct:publisher": {"@type": "foaf:Organization", "foaf:name": f.owner},
                "dct:license": f.licence,
                "dct:accrualPeriodicity": iso_duration(f.interval_s),
                "dcat:theme": f.domain.as_str(),
                "dcat:distribution": [{
                    "@type": "dcat:Distribution",
                    "dcat:accessURL": access,
                    "dct:format": format,
                }],
                "zs:requiredFields": f.required_fields,
                "zs:authoritativeFor": f.authoritative_for,
                "zs:consumers": consumers(f.domain),
                "zs:observedSchema": types,
            })
        })
        .collect();
    json!({
        "@context": {
            "dcat": "http://www.w3.org/ns/dcat#",
            "dct": "http://purl.org/dc/terms/",
            "foaf": "http://xmlns.com/foaf/0.1/",
            "zs": "urn:zhongshu:catalog#",
        },
        "@type": "dcat:Catalog",
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
        });
        let cat = dcat_catalog("Helsinki", &feeds, &[schema]);
        let d = &cat["dcat:dataset"][0];
        assert_eq!(cat["@type"], "dcat:Catalog");
        assert_eq!(d["dct:publisher"]["foaf:name"], "Eco Bureau");
        assert_eq!(d["dct:license"], "CC-BY-4.0");
        assert_eq!(d["dct:accrualPeriodicity"], "PT1M");
        assert_eq!(d["dcat:theme"], "ecology");
        assert_eq!(d["dcat:distribution"][0]["dcat:accessURL"], "http://h/e");
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
}
