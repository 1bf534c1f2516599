//! Open data (开放): what of the hall may leave it. A feed, a field and a map layer
//! each carry a [`Classification`]; only `open` ones are published, by
//! `zhongshu serve-open-data` ([`serve`]).
//!
//! Leaving is decided once, here, when an [`OpenSnapshot`] is built from the live
//! state: an entity of a feed that is not open never enters it, and an open entity
//! enters already encoded (NGSI-LD) with every field that is not open taken out of
//! what was encoded — so a typed value the encoder adds (`speed`, `vehicleType`) is
//! held to the same rule as the source's own fields. The endpoints only ever read
//! snapshots: nothing they do can reach what was left out.

pub mod keys;
pub mod serve;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::feeds::config::{FeedConfig, FeedKind, MAP_LAYERS, OpenDataConfig};
use crate::governance::catalog::{ObservedSchema, dcat_catalog, iri_segment};
use crate::map::{AreaKind, CityMap};
use crate::model::{Classification, FeedId};
use crate::state::{LiveEntity, LiveState, Standing};

/// Members of an NGSI-LD entity that always leave with it (the entity would not be
/// one without them).
const ALWAYS_OPEN: [&str; 2] = ["id", "type"];

/// What of one feed may leave.
#[derive(Clone, Debug, Default)]
struct FeedRule {
    open: bool,
    /// Fields withheld (internal or restricted), by name or root.
    withheld: BTreeSet<String>,
    /// When given, the only fields that leave (besides [`ALWAYS_OPEN`]).
    allowed: Option<BTreeSet<String>>,
    /// `id` withheld: the source's id stays in the hall and the entity leaves under a
    /// pseudonym (an id can carry a plate or a person's name).
    pseudonymous: bool,
    /// The feed's name (its pseudonyms' key with the id, so they do not change when
    /// the feeds file is reordered).
    name: String,
}

impl FeedRule {
    fn of(feed: &FeedConfig) -> FeedRule {
        FeedRule {
            open: feed.classification == Classification::Open,
            withheld: feed
                .field_classification
                .iter()
                .filter(|(_, c)| **c != Classification::Open)
                .map(|(f, _)| f.to_lowercase())
                .collect(),
            allowed: feed
                .open_fields
                .as_ref()
                .map(|f| f.iter().map(|f| f.to_lowercase()).collect()),
            pseudonymous: feed
                .field_classification
                .iter()
                .any(|(f, c)| f.eq_ignore_ascii_case("id") && *c != Classification::Open),
            name: feed.name.clone(),
        }
    }

    /// Whether a member (a field, `location`, `dateObserved`) of this feed's entities
    /// may leave.
    fn field_is_open(&self, name: &str) -> bool {
        if !self.open {
            return false;
        }
        if ALWAYS_OPEN.contains(&name) {
            return true;
        }
        // Names are matched whatever their case (sources spell `NO2` and `no2`), and
        // a name covers everything under it at any depth: `notes.internal` covers
        // `notes.internal.ssn`, `contacts[0]` covers `contacts[0].phone`.
        let name = name.to_lowercase();
        let covers = |rule: &String| {
            name == *rule
                || name
                    .strip_prefix(rule.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        };
        if self.withheld.iter().any(covers) {
            return false;
        }
        self.allowed.as_ref().is_none_or(|a| a.iter().any(covers))
    }
}

/// What may leave the hall: the feeds' and the map layers' classifications.
#[derive(Clone, Debug, Default)]
pub struct OpenPolicy {
    /// By [`FeedId`] (the feed's index in the configuration).
    feeds: Vec<FeedRule>,
    layers: BTreeSet<&'static str>,
    /// Keys the pseudonyms of withheld ids: the `[open_data]` table's `id_key`, or
    /// one drawn at start (pseudonyms then change at each start).
    id_key: [u8; 32],
}

impl OpenPolicy {
    pub fn new(feeds: &[FeedConfig], open_data: &OpenDataConfig) -> OpenPolicy {
        OpenPolicy {
            feeds: feeds.iter().map(FeedRule::of).collect(),
            layers: MAP_LAYERS
                .into_iter()
                .filter(|l| open_data.layer(l) == Classification::Open)
                .collect(),
            id_key: match &open_data.id_key {
                Some(key) => crate::http::token_digest(key),
                None => {
                    let mut key = [0u8; 32];
                    // No randomness (never seen on a real system): a key from the
                    // clock, still not the ids themselves.
                    if getrandom::getrandom(&mut key).is_err() {
                        key = crate::http::token_digest(&format!(
                            "{:?}",
                            std::time::SystemTime::now()
                        ));
                    }
                    key
                }
            },
        }
    }

    /// The id `feed`'s entity `id` of type `entity_type` leaves under: its own, or a
    /// pseudonym where the feed withholds ids (`urn:ngsi-ld:TYPE:` and 32 hex digits
    /// of the key, the feed's name and the id: the same for the same entity while the
    /// key and the feed's name stand).
    pub fn open_id(&self, feed: FeedId, entity_type: &str, id: &str) -> String {
        let Some(rule) = self.feeds.get(feed as usize).filter(|r| r.pseudonymous) else {
            return id.to_string();
        };
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.id_key);
        h.update((rule.name.len() as u64).to_le_bytes());
        h.update(rule.name.as_bytes());
        h.update(id.as_bytes());
        let digest = h.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let kind: String = entity_type
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        format!("urn:ngsi-ld:{kind}:{hex}")
    }

    pub fn feed_is_open(&self, feed: FeedId) -> bool {
        self.feeds.get(feed as usize).is_some_and(|r| r.open)
    }

    /// Whether a field of `feed`'s entities may leave (never for a feed not open).
    pub fn field_is_open(&self, feed: FeedId, name: &str) -> bool {
        self.feeds
            .get(feed as usize)
            .is_some_and(|r| r.field_is_open(name))
    }

    pub fn layer_is_open(&self, layer: &str) -> bool {
        self.layers.contains(layer)
    }

    /// The open map layers.
    pub fn open_layers(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.layers.iter().copied()
    }

    /// The entity as it may leave: NGSI-LD (normalized) with only its open members;
    /// `None` when its feed is not open.
    pub fn open_entity(&self, e: &LiveEntity) -> Option<OpenEntity> {
        let rule = self.feeds.get(e.feed as usize).filter(|r| r.open)?;
        let Value::Object(encoded) = crate::sim::serve::to_ngsi_ld(&e.to_update()) else {
            return None;
        };
        let dated = rule.field_is_open("dateObserved");
        let ngsi: Map<String, Value> = encoded
            .into_iter()
            .filter(|(k, _)| rule.field_is_open(k))
            .map(|(k, mut v)| {
                // Each value's own time says what dateObserved would.
                if let (false, Some(p)) = (dated, v.as_object_mut()) {
                    p.remove("observedAt");
                }
                (k, v)
            })
            .collect();
        let bbox = ngsi
            .get("location")
            .and_then(|l| l.get("value"))
            .and_then(geometry_bbox);
        let id = self.open_id(e.feed, &e.entity_type, &e.id);
        let mut ngsi = ngsi;
        if id != e.id {
            ngsi.insert("id".into(), Value::String(id.clone()));
        }
        Some(OpenEntity {
            id,
            entity_type: e.entity_type.clone(),
            bbox,
            ngsi,
        })
    }

    /// An observed schema with only the open fields of `feed`.
    fn open_schema(&self, feed: FeedId, schema: &ObservedSchema) -> ObservedSchema {
        let open = |f: &String| self.field_is_open(feed, f);
        let keep = |m: &BTreeMap<String, BTreeSet<String>>| {
            m.iter()
                .map(|(t, fields)| {
                    (
                        t.clone(),
                        fields.iter().filter(|f| open(f)).cloned().collect(),
                    )
                })
                .collect()
        };
        ObservedSchema {
            types: keep(&schema.types),
            units: schema
                .units
                .iter()
                .map(|(t, fields)| {
                    let fields = fields
                        .iter()
                        .filter(|(f, _)| open(f))
                        .map(|(f, u)| (f.clone(), u.clone()))
                        .collect();
                    (t.clone(), fields)
                })
                .collect(),
            lists: keep(&schema.lists),
        }
    }
}

/// One entity as it may leave.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenEntity {
    pub id: String,
    pub entity_type: String,
    /// `[min_lon, min_lat, max_lon, max_lat]` of its open geometry.
    pub bbox: Option<[f64; 4]>,
    /// Normalized NGSI-LD, open members only.
    pub ngsi: Map<String, Value>,
}

impl OpenEntity {
    /// As a GeoJSON Feature: the open geometry (null when withheld) and the values of
    /// the open properties.
    pub fn feature(&self) -> Value {
        ngsi_feature(&self.id, &self.ngsi)
    }

    fn intersects(&self, area: &[f64; 4]) -> bool {
        self.bbox.is_some_and(|b| {
            b[0] <= area[2] && b[2] >= area[0] && b[1] <= area[3] && b[3] >= area[1]
        })
    }
}

/// A normalized NGSI-LD entity as a GeoJSON Feature: its `location` the geometry (null
/// when it has none), every other property's value a property (`type` the entity
/// type).
pub fn ngsi_feature(id: &str, ngsi: &Map<String, Value>) -> Value {
    let geometry = ngsi
        .get("location")
        .and_then(|l| l.get("value"))
        .cloned()
        .unwrap_or(Value::Null);
    let properties: Map<String, Value> = ngsi
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "location"))
        .map(|(k, v)| {
            let value = v.get("value").cloned().unwrap_or_else(|| v.clone());
            (k.clone(), value)
        })
        .collect();
    json!({"type": "Feature", "id": id, "geometry": geometry, "properties": properties})
}

/// The bounding box of a GeoJSON geometry's coordinates.
fn geometry_bbox(geometry: &Value) -> Option<[f64; 4]> {
    fn walk(v: &Value, b: &mut Option<[f64; 4]>) {
        let Some(items) = v.as_array() else {
            return;
        };
        if let [Some(lon), Some(lat), ..] = [
            items.first().and_then(Value::as_f64),
            items.get(1).and_then(Value::as_f64),
        ] {
            let r = b.get_or_insert([lon, lat, lon, lat]);
            *r = [r[0].min(lon), r[1].min(lat), r[2].max(lon), r[3].max(lat)];
            return;
        }
        for item in items {
            walk(item, b);
        }
    }
    let mut b = None;
    walk(geometry.get("coordinates")?, &mut b);
    b
}

/// A `bbox=minLon,minLat,maxLon,maxLat` value.
pub fn parse_bbox(text: &str) -> Result<[f64; 4], String> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bbox {text:?}: give minLon,minLat,maxLon,maxLat in degrees"))?;
    let [a, b, c, d] = parts[..] else {
        return Err(format!(
            "bbox {text:?}: give four numbers, minLon,minLat,maxLon,maxLat"
        ));
    };
    let valid = crate::geo_frame::is_valid_wgs84(a, b) && crate::geo_frame::is_valid_wgs84(c, d);
    if !valid || a > c || b > d {
        return Err(format!(
            "bbox {text:?}: minLon,minLat,maxLon,maxLat in WGS84 degrees, minima first"
        ));
    }
    Ok([a, b, c, d])
}

/// Which open entities a request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityQuery {
    /// Any of these types (all when empty).
    pub types: Vec<String>,
    /// Whose open geometry's bounding box meets this one.
    pub bbox: Option<[f64; 4]>,
}

/// Everything open at one moment, ready to serve: the only thing the endpoints read.
#[derive(Clone, Debug, Default)]
pub struct OpenSnapshot {
    /// Sorted by type, then id: pages are stable between snapshots.
    entities: Vec<OpenEntity>,
    by_id: HashMap<String, usize>,
    /// The DCAT catalog of the open datasets.
    pub catalog: Value,
    /// When the snapshot was taken (Unix ms).
    pub taken_at_ms: i64,
}

impl OpenSnapshot {
    /// The open part of `state` at `now_ms` (entities of quarantined feeds are left
    /// out: their data is not fit to publish) and the catalog of what is open.
    pub fn build(
        policy: &OpenPolicy,
        state: &LiveState,
        catalog: Value,
        now_ms: i64,
    ) -> OpenSnapshot {
        let mut entities: Vec<OpenEntity> = state
            .iter()
            .filter(|(_, e)| policy.feed_is_open(e.feed))
            .filter(|(_, e)| state.standing(e, now_ms) != Standing::Quarantined)
            .filter_map(|(_, e)| policy.open_entity(e))
            .collect();
        entities.sort_by(|a, b| (&a.entity_type, &a.id).cmp(&(&b.entity_type, &b.id)));
        let mut by_id = HashMap::with_capacity(entities.len());
        for (i, e) in entities.iter().enumerate() {
            by_id.entry(e.id.clone()).or_insert(i);
        }
        OpenSnapshot {
            entities,
            by_id,
            catalog,
            taken_at_ms: now_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The open entity of this id.
    pub fn entity(&self, id: &str) -> Option<&OpenEntity> {
        self.entities.get(*self.by_id.get(id)?)
    }

    /// The entities `query` asks for, in order.
    pub fn select<'a>(&'a self, query: &'a EntityQuery) -> impl Iterator<Item = &'a OpenEntity> {
        self.entities.iter().filter(move |e| {
            (query.types.is_empty() || query.types.contains(&e.entity_type))
                && query.bbox.is_none_or(|b| e.intersects(&b))
        })
    }

    /// The entity types present.
    pub fn types(&self) -> BTreeSet<&str> {
        self.entities
            .iter()
            .map(|e| e.entity_type.as_str())
            .collect()
    }
}

/// The open DCAT catalog: only open feeds (with only their open fields) and open map
/// layers; each dataset's distributions are this server's endpoints under `base_url`,
/// never the source's own address.
pub fn open_catalog(
    title: &str,
    feeds: &[FeedConfig],
    observed: &[ObservedSchema],
    policy: &OpenPolicy,
    layers_licence: Option<&str>,
    base_url: &str,
) -> Value {
    let base = base_url.trim_end_matches('/');
    let mut open_feeds = Vec::new();
    let mut open_schemas = Vec::new();
    for (i, feed) in feeds.iter().enumerate() {
        let id = i as FeedId;
        if !policy.feed_is_open(id) {
            continue;
        }
        let open_field = |claim: &String| match claim.split_once('.') {
            Some((_, field)) => policy.field_is_open(id, field),
            None => true,
        };
        open_feeds.push(FeedConfig {
            url: None,
            required_fields: feed
                .required_fields
                .iter()
                .filter(|f| policy.field_is_open(id, f))
                .cloned()
                .collect(),
            authoritative_for: feed
                .authoritative_for
                .iter()
                .filter(|c| open_field(c))
                .cloned()
                .collect(),
            ..feed.clone()
        });
        open_schemas.push(
            observed
                .get(i)
                .map(|s| policy.open_schema(id, s))
                .unwrap_or_default(),
        );
    }
    let mut catalog = dcat_catalog(title, &open_feeds, &open_schemas);
    let Some(datasets) = catalog
        .get_mut("dcat:dataset")
        .and_then(Value::as_array_mut)
    else {
        return catalog;
    };
    for (d, (feed, schema)) in datasets
        .iter_mut()
        .zip(open_feeds.iter().zip(&open_schemas))
    {
        let Some(d) = d.as_object_mut() else {
            continue;
        };
        // The hall's own layers and panels are not the public's business.
        d.remove("zs:consumers");
        if feed.kind != FeedKind::Sim {
            d.remove("zs:simulated");
        }
        let distributions: Vec<Value> = schema
            .types
            .keys()
            .flat_map(|t| entity_distributions(base, t))
            .collect();
        d.insert("dcat:distribution".into(), Value::Array(distributions));
    }
    for layer in policy.open_layers() {
        let mut d = json!({
            "@type": "dcat:Dataset",
            "@id": format!("urn:zhongshu:layer:{layer}"),
            "dct:identifier": format!("layer:{layer}"),
            "dct:title": format!("{title}: {layer}"),
            "dcat:keyword": ["map", layer],
            "dcat:distribution": [{
                "@type": "dcat:Distribution",
                "dcat:accessURL": {"@id": format!("{base}/geojson/layers/{layer}")},
                "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/application/geo+json"},
                "dct:conformsTo": {"@id": "https://www.rfc-editor.org/rfc/rfc7946"},
            }],
        });
        if let Some(licence) = layers_licence {
            d["dct:license"] = json!({"@type": "dct:LicenseDocument", "rdfs:label": licence});
        }
        datasets.push(d);
    }
    catalog
}

/// The NGSI-LD and GeoJSON endpoints of one open entity type.
fn entity_distributions(base: &str, entity_type: &str) -> [Value; 2] {
    let t = iri_segment(entity_type);
    [
        json!({
            "@type": "dcat:Distribution",
            "dcat:accessURL": {"@id": format!("{base}/ngsi-ld/v1/entities?type={t}")},
            "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/application/ld+json"},
            "dct:conformsTo": {"@id": "https://www.etsi.org/deliver/etsi_gs/CIM/001_099/009/"},
        }),
        json!({
            "@type": "dcat:Distribution",
            "dcat:accessURL": {"@id": format!("{base}/geojson/{t}")},
            "dcat:mediaType": {"@id": "https://www.iana.org/assignments/media-types/application/geo+json"},
            "dct:conformsTo": {"@id": "https://www.rfc-editor.org/rfc/rfc7946"},
        }),
    ]
}

/// Coordinates rounded to 7 decimals (about 1 cm): what a position is worth, in
/// fewer bytes.
fn round7(v: f64) -> f64 {
    (v * 1e7).round() / 1e7
}

fn ring_wgs84(map: &CityMap, points: impl Iterator<Item = [f64; 2]>) -> Vec<[f64; 2]> {
    points
        .map(|[e, n]| {
            let [lon, lat] = map.frame.wgs84_from_local(e, n);
            [round7(lon), round7(lat)]
        })
        .collect()
}

fn closed(mut ring: Vec<[f64; 2]>) -> Vec<[f64; 2]> {
    if ring.len() >= 3 && ring.first() != ring.last() {
        ring.push(ring[0]);
    }
    ring
}

fn line_coords(map: &CityMap, line: &geo::LineString<f64>) -> Vec<[f64; 2]> {
    ring_wgs84(map, line.0.iter().map(|c| [c.x, c.y]))
}

fn polygon_coords(map: &CityMap, polygon: &geo::Polygon<f64>) -> Vec<Vec<[f64; 2]>> {
    std::iter::once(polygon.exterior())
        .chain(polygon.interiors())
        .map(|r| closed(line_coords(map, r)))
        .collect()
}

/// One map layer ([`MAP_LAYERS`]) as a GeoJSON FeatureCollection in WGS84, with the
/// properties a reader needs (id, name, kind, heights) and none of the source's other
/// tags. `None` for a name that is no layer.
pub fn layer_geojson(map: &CityMap, layer: &str) -> Option<Value> {
    let feature = |id: &str, geometry: Value, properties: Value| json!({"type": "Feature", "id": id, "geometry": geometry, "properties": properties});
    let features: Vec<Value> = match layer {
        "buildings" => map
            .buildings
            .iter()
            .filter(|b| b.is_drawn())
            .map(|b| {
                let polygons: Vec<_> = b
                    .footprint
                    .0
                    .iter()
                    .map(|p| polygon_coords(map, p))
                    .collect();
                feature(
                    &b.id,
                    json!({"type": "MultiPolygon", "coordinates": polygons}),
                    json!({
                        "kind": b.kind,
                        "name": b.name,
                        "height": b.extent.height_m,
                        "min_height": b.extent.min_height_m,
                    }),
                )
            })
            .collect(),
        "roads" => map
            .roads
            .iter()
            .map(|r| {
                feature(
                    &r.id,
                    json!({"type": "LineString", "coordinates": line_coords(map, &r.line)}),
                    json!({"kind": r.class.as_str(), "name": r.name, "oneway": r.oneway}),
                )
            })
            .collect(),
        "water" | "green" => {
            let kind = if layer == "water" {
                AreaKind::Water
            } else {
                AreaKind::Green
            };
            let areas = map.areas.iter().filter(|a| a.kind == kind).map(|a| {
                feature(
                    &a.id,
                    json!({"type": "Polygon", "coordinates": polygon_coords(map, &a.polygon)}),
                    json!({"kind": layer, "name": a.name}),
                )
            });
            let waterways = map
                .waterways
                .iter()
                .filter(|_| kind == AreaKind::Water)
                .map(|w| {
                    feature(
                        &w.id,
                        json!({"type": "LineString", "coordinates": line_coords(map, &w.line)}),
                        json!({"kind": "waterway", "width": w.width_m}),
                    )
                });
            areas.chain(waterways).collect()
        }
        "districts" => map
            .districts
            .iter()
            .map(|d| {
                let lines: Vec<_> = d.boundary.iter().map(|l| line_coords(map, l)).collect();
                feature(
                    &d.id,
                    json!({"type": "MultiLineString", "coordinates": lines}),
                    json!({"name": d.name, "admin_level": d.admin_level}),
                )
            })
            .collect(),
        _ => return None,
    };
    Some(json!({"type": "FeatureCollection", "features": features}))
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn a_withheld_name_covers_everything_under_it_whatever_its_case() {
        let feeds = crate::feeds::config::parse_feeds(
            r#"
            [[feed]]
            name = "buses"
            kind = "sim"
            domain = "traffic"
            classification = "open"
            field_classification = { plate = "restricted", "notes.internal" = "restricted", "contacts[0]" = "internal" }
            "#,
        )
        .unwrap();
        let rule = FeedRule::of(&feeds[0]);
        for withheld in [
            "plate",
            "Plate",
            "PLATE",
            "plate.raw",
            "notes.internal",
            "notes.internal.ssn",
            "notes.internal[2]",
            "contacts[0]",
            "contacts[0].phone",
        ] {
            assert!(!rule.field_is_open(withheld), "{withheld} left");
        }
        for open in [
            "plates",
            "notes",
            "notes.public",
            "contacts[1].phone",
            "speed",
            "id",
        ] {
            assert!(rule.field_is_open(open), "{open} withheld");
        }
    }
}
