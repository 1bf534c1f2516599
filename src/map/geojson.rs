//! GeoJSON (RFC 7946) reader for FeatureCollections and single Features.
//!
//! The document's structure is parsed in one pass with each feature's geometry and
//! properties kept as borrowed raw JSON; those are then decoded in parallel. A feature
//! whose geometry or properties cannot be decoded is skipped and counted, never fatal.

use rayon::prelude::*;
use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{MapError, RawFeature, RawGeometry, SkipCounts, SkipReason, Tags};

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow, default)]
    features: Option<Vec<FeatureJson<'a>>>,
    #[serde(borrow, default)]
    geometry: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    /// The 2008 GeoJSON `crs` member (RFC 7946 dropped it; exports still write it).
    #[serde(borrow, default)]
    crs: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FeatureJson<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    geometry: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GeometryJson<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow, default)]
    coordinates: Option<&'a RawValue>,
}

/// A `[lon, lat]` or `[lon, lat, alt]` position, read without allocating.
struct Position([f64; 2]);

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Position;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a position [lon, lat]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Position, A::Error> {
                let lon: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let lat: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Position([lon, lat]))
            }
        }
        d.deserialize_seq(V)
    }
}

fn positions(v: Vec<Position>) -> Vec<[f64; 2]> {
    v.into_iter().map(|p| p.0).collect()
}

fn decode_geometry(raw: Option<&RawValue>) -> Result<RawGeometry, SkipReason> {
    let Some(raw) = raw else {
        return Ok(RawGeometry::Null);
    };
    if raw.get() == "null" {
        return Ok(RawGeometry::Null);
    }
    let g: GeometryJson =
        serde_json::from_str(raw.get()).map_err(|_| SkipReason::UnsupportedGeometry)?;
    let Some(coords) = g.coordinates else {
        return match g.kind {
            "GeometryCollection" => Err(SkipReason::UnsupportedGeometry),
            _ => Ok(RawGeometry::Null),
        };
    };
    let c = coords.get();
    let bad = |_| SkipReason::BadCoordinates;
    Ok(match g.kind {
        "Point" | "MultiPoint" => RawGeometry::Point,
        "LineString" => RawGeometry::Line(positions(serde_json::from_str(c).map_err(bad)?)),
        "MultiLineString" => {
            let lines: Vec<Vec<Position>> = serde_json::from_str(c).map_err(bad)?;
            RawGeometry::MultiLine(lines.into_iter().map(positions).collect())
        }
        "Polygon" => {
            let rings: Vec<Vec<Position>> = serde_json::from_str(c).map_err(bad)?;
            RawGeometry::Polygon(rings.into_iter().map(positions).collect())
        }
        "MultiPolygon" => {
            let polys: Vec<Vec<Vec<Position>>> = serde_json::from_str(c).map_err(bad)?;
            RawGeometry::MultiPolygon(
                polys
                    .into_iter()
                    .map(|p| p.into_iter().map(positions).collect())
                    .collect(),
            )
        }
        _ => return Err(SkipReason::UnsupportedGeometry),
    })
}

/// Properties as string tags: strings as they are, other values as compact JSON.
/// (Esri JSON's attributes are read the same way.)
pub(super) fn decode_properties(raw: Option<&RawValue>) -> Tags {
    let Some(raw) = raw else { return Vec::new() };
    let Ok(map) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(raw.get())
    else {
        return Vec::new();
    };
    tags_of_properties(map)
}

/// A feature's properties as string tags: strings as they are, other values as compact
/// JSON, nulls left out. Every format's attributes end here (a Shapefile's `.dbf`
/// record and a FlatGeobuf's columns as JSON values), so they read alike.
pub(super) fn tags_of_properties(map: serde_json::Map<String, serde_json::Value>) -> Tags {
    map.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect()
}

/// A number as a JSON value, whole numbers as integers (`6`, not `6.0`), as a GeoJSON
/// export writes them; `None` for NaN and infinities.
pub(super) fn json_number(n: f64) -> Option<serde_json::Value> {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Some(serde_json::Value::from(n as i64))
    } else {
        serde_json::Number::from_f64(n).map(serde_json::Value::Number)
    }
}

fn decode_id(raw: Option<&RawValue>, index: usize) -> String {
    match raw.map(|r| r.get()) {
        Some(text) if text != "null" => text.trim_matches('"').to_string(),
        _ => format!("feature/{index}"),
    }
}

fn decode_feature(index: usize, f: &FeatureJson) -> Result<RawFeature, SkipReason> {
    let mut tags = decode_properties(f.properties);
    let geometry = decode_geometry(f.geometry)?;
    let mut id = decode_id(f.id, index);
    // Exports from OSM tools often carry the OSM id as a property.
    if f.id.is_none()
        && let Some(pos) = tags.iter().position(|(k, _)| k == "@id" || k == "osm_id")
    {
        id = tags[pos].1.clone();
    }
    tags.retain(|(k, _)| !k.starts_with('@'));
    Ok(RawFeature { id, tags, geometry })
}

/// JSON has no NaN or Infinity, but tools (Python's `json.dumps` among them) write them
/// anyway. Rewrites those bare tokens outside strings to `null`, so the features that
/// hold them are skipped as bad coordinates instead of failing the whole file.
fn replace_non_finite_tokens(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &bytes[i..];
        let token = [&b"-Infinity"[..], b"Infinity", b"NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.extend_from_slice(b"null");
            i += t.len();
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

/// Reads a FeatureCollection (or one Feature) as raw features, in the file's
/// coordinates (see [`read_features_and_crs`]).
pub fn read_features(
    bytes: &[u8],
    source_name: &str,
) -> Result<(Vec<RawFeature>, SkipCounts), MapError> {
    read_features_and_crs(bytes, source_name).map(|(features, skipped, _)| (features, skipped))
}

/// Reads a FeatureCollection (or one Feature) as raw features in the file's own
/// coordinates, with the CRS its `crs` member declares (`None` without one).
pub fn read_features_and_crs(
    bytes: &[u8],
    source_name: &str,
) -> Result<(Vec<RawFeature>, SkipCounts, Option<super::crs::Crs>), MapError> {
    let sanitized;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(MapError::GeoJson {
                source_name: source_name.to_string(),
                message: format!("not UTF-8 text ({e})"),
            });
        }
    };
    let doc: Document = match serde_json::from_str(text) {
        Ok(doc) => doc,
        Err(first_error) => {
            sanitized = replace_non_finite_tokens(bytes);
            let retry = std::str::from_utf8(&sanitized)
                .ok()
                .and_then(|t| serde_json::from_str(t).ok());
            retry.ok_or_else(|| MapError::GeoJson {
                source_name: source_name.to_string(),
                message: first_error.to_string(),
            })?
        }
    };
    let crs = match doc.crs.map(|raw| serde_json::from_str(raw.get())) {
        None => Ok(None),
        Some(Ok(member)) => super::crs::from_geojson_member(&member),
        Some(Err(e)) => Err(super::crs::CrsError::Unreadable(e.to_string())),
    }
    .map_err(|error| MapError::Crs {
        source_name: source_name.to_string(),
        error,
    })?;
    let features: Vec<FeatureJson> = match doc.kind.as_str() {
        "FeatureCollection" => doc.features.unwrap_or_default(),
        "Feature" => vec![FeatureJson {
            id: doc.id,
            properties: doc.properties,
            geometry: doc.geometry,
        }],
        other => {
            return Err(MapError::GeoJson {
                source_name: source_name.to_string(),
                message: format!(
                    "expected a FeatureCollection or a Feature, found type \"{other}\""
                ),
            });
        }
    };
    let decoded: Vec<Result<RawFeature, SkipReason>> = features
        .par_iter()
        .enumerate()
        .with_min_len(256)
        .map(|(i, f)| decode_feature(i, f))
        .collect();
    let (out, skipped) = kept_and_skipped(decoded);
    Ok((out, skipped, crs))
}

/// The features decoded, and the reasons of those that were not, counted.
pub(super) fn kept_and_skipped(
    decoded: Vec<Result<RawFeature, SkipReason>>,
) -> (Vec<RawFeature>, SkipCounts) {
    let mut skipped = SkipCounts::default();
    let mut out = Vec::with_capacity(decoded.len());
    for d in decoded {
        match d {
            Ok(f) => out.push(f),
            Err(reason) => skipped.add(reason),
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{AreaKind, MapFormat, SkipReason, load_bytes};

    fn load(text: &str) -> Result<crate::map::CityMap, MapError> {
        load_bytes(text.as_bytes(), MapFormat::GeoJson, "test", "test.geojson")
    }

    const SQUARE: &str =
        "[[24.94,60.17],[24.9402,60.17],[24.9402,60.1702],[24.94,60.1702],[24.94,60.17]]";

    #[test]
    fn reads_polygons_multipolygons_holes_and_properties() {
        let text = format!(
            r#"{{"type":"FeatureCollection","features":[
              {{"type":"Feature","id":7,"properties":{{"building":"office","height":"23.5","name":"中枢大厦","levels":3,"extra":{{"a":1}}}},
                "geometry":{{"type":"Polygon","coordinates":[{SQUARE},[[24.94005,60.17005],[24.94015,60.17005],[24.94015,60.17015],[24.94005,60.17015],[24.94005,60.17005]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes","building:levels":"4"}},
                "geometry":{{"type":"MultiPolygon","coordinates":[[{SQUARE}],[[[24.95,60.17,5.0],[24.9502,60.17,5.0],[24.9502,60.1702,5.0],[24.95,60.17,5.0]]]]}}}},
              {{"type":"Feature","properties":{{"highway":"primary"}},"geometry":{{"type":"LineString","coordinates":[[24.94,60.17],[24.95,60.18]]}}}},
              {{"type":"Feature","properties":{{"natural":"water"}},"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}}
            ]}}"#
        );
        let map = load(&text).unwrap();
        // A MultiPolygon building is one building: one id, one entry, counted once.
        assert_eq!(map.buildings.len(), 2);
        let two_parts = map.buildings.iter().find(|b| b.id == "feature/1").unwrap();
        assert_eq!(two_parts.footprint.0.len(), 2);
        let office = map.buildings.iter().find(|b| b.id == "7").unwrap();
        assert_eq!(office.extent.height_m, 23.5);
        assert_eq!(office.name.as_deref(), Some("中枢大厦"));
        assert_eq!(office.footprint.0[0].interiors().len(), 1);
        assert!(
            office
                .tags
                .iter()
                .any(|(k, v)| k == "extra" && v == r#"{"a":1}"#)
        );
        assert!(
            map.buildings
                .iter()
                .filter(|b| b.id == "feature/1")
                .all(|b| (b.extent.height_m - 12.8).abs() < 1e-4)
        );
        assert_eq!(map.roads.len(), 1);
        assert_eq!(map.count_areas(AreaKind::Water), 1);
        assert_eq!(map.skipped.total(), 0);
        assert_eq!(
            map.attribution, None,
            "the user's own data carries no OSM notice"
        );
    }

    #[test]
    fn broken_features_are_skipped_and_counted() {
        let text = format!(
            r#"{{"type":"FeatureCollection","features":[
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":null}},
              {{"type":"Feature","properties":{{"building":"yes"}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":"nope"}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[["a","b"]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[[24.94,NaN],[24.95,60.17],[24.95,60.18],[24.94,NaN]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[[1e300,60.17],[24.95,60.17],[24.95,60.18],[1e300,60.17]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[[24.94,95.0],[24.95,60.17],[24.95,60.18],[24.94,95.0]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Point","coordinates":[24.94,60.17]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Hexagon","coordinates":[]}}}},
              {{"type":"Feature","properties":{{"shop":"bakery"}},"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}},
              {{"type":"Feature","properties":{{"building":false}},"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}},
              {{"type":"Feature","properties":null,"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[[24.94,60.17],[24.941,60.171],[24.941,60.17],[24.94,60.171],[24.94,60.17]]]}}}},
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[[[24.94,60.17],[24.941,60.171]]]}}}}
            ]}}"#
        );
        let map = load(&text).unwrap();
        assert_eq!(map.buildings.len(), 1);
        let s = &map.skipped;
        assert_eq!(s.get(SkipReason::NullGeometry), 2);
        assert_eq!(s.get(SkipReason::BadCoordinates), 5, "{s:?}");
        assert_eq!(s.get(SkipReason::UnsupportedGeometry), 1);
        assert_eq!(s.get(SkipReason::PointFeature), 1, "a point is not drawn");
        assert_eq!(
            s.get(SkipReason::UnknownTags),
            3,
            "\"building\": false is no building"
        );
        assert_eq!(s.get(SkipReason::SelfIntersecting), 1);
        assert_eq!(s.get(SkipReason::TooFewPoints), 1);
    }

    #[test]
    fn empty_geometries_are_skipped_and_every_multiline_part_is_kept() {
        let text = format!(
            r#"{{"type":"FeatureCollection","features":[
              {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[{SQUARE}]}}}},
              {{"type":"Feature","properties":{{"highway":"primary"}},"geometry":{{"type":"MultiLineString","coordinates":[]}}}},
              {{"type":"Feature","properties":{{"waterway":"river"}},"geometry":{{"type":"Polygon","coordinates":[]}}}},
              {{"type":"Feature","properties":{{"natural":"water"}},"geometry":{{"type":"MultiPolygon","coordinates":[]}}}},
              {{"type":"Feature","properties":{{"boundary":"administrative"}},"geometry":{{"type":"MultiLineString","coordinates":[[]]}}}},
              {{"type":"Feature","id":"mr","properties":{{"highway":"secondary"}},"geometry":{{"type":"MultiLineString","coordinates":[
                [[24.94,60.17],[24.95,60.17]],
                [[24.94,60.18],[24.95,60.18],[24.96,60.18]],
                [[24.97,60.18]]]}}}},
              {{"type":"Feature","id":"mw","properties":{{"waterway":"canal"}},"geometry":{{"type":"MultiLineString","coordinates":[
                [[24.94,60.17],[24.95,60.17]],
                [[24.94,60.18],[24.95,60.18]]]}}}}
            ]}}"#
        );
        let map = load(&text).unwrap();
        assert_eq!(map.buildings.len(), 1);
        let parts: Vec<usize> = map
            .roads
            .iter()
            .filter(|r| r.id == "mr")
            .map(|r| r.line.0.len())
            .collect();
        assert_eq!(parts, vec![2, 3], "both drawable parts of the road");
        assert_eq!(map.waterways.iter().filter(|w| w.id == "mw").count(), 2);
        assert_eq!(
            map.skipped.get(SkipReason::NullGeometry),
            3,
            "{:?}",
            map.skipped
        );
        assert_eq!(
            map.skipped.get(SkipReason::TooFewPoints),
            1,
            "one empty part"
        );
        assert_eq!(map.skipped.total(), 4);
    }

    #[test]
    fn not_geojson_is_a_clear_error() {
        let err = load("{\"type\":\"Topology\"}").unwrap_err().to_string();
        assert!(
            err.contains("FeatureCollection") && err.contains("test.geojson"),
            "{err}"
        );
        let err = load("{\"type\": \"FeatureCollection\", \"features\": [")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid GeoJSON"), "{err}");
        let err = load("{\"type\":\"FeatureCollection\",\"features\":[]}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no drawable features"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = format!(
            "{{\"type\":\"FeatureCollection\",\"features\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(load(&text).is_err());
    }

    #[test]
    fn a_building_part_with_thousands_of_holes_loads_at_once() {
        // Finding a point inside such a part took seconds (found by `bench fuzz`).
        let ring = "[[24.95,60.17],[24.9502,60.17],[24.9502,60.1702],[24.95,60.17]]";
        let hole =
            "[[24.95001,60.17001],[24.95002,60.17001],[24.95002,60.17002],[24.95001,60.17001]]";
        for holes in [ring, hole] {
            let rings = format!("{ring},{}", [holes; 3000].join(","));
            let text = format!(
                r#"{{"type":"FeatureCollection","features":[
                  {{"type":"Feature","properties":{{"building":"yes"}},"geometry":{{"type":"Polygon","coordinates":[{ring}]}}}},
                  {{"type":"Feature","properties":{{"building:part":"yes"}},"geometry":{{"type":"Polygon","coordinates":[{rings}]}}}}]}}"#
            );
            let started = std::time::Instant::now();
            let map = load(&text).unwrap();
            assert!(
                started.elapsed() < std::time::Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(map.buildings.len(), 2);
            let part = map.buildings.iter().find(|b| b.is_part).unwrap();
            assert!(part.outline.is_some(), "the part belongs to its building");
        }
    }

    #[test]
    fn non_finite_tokens_inside_strings_are_left_alone() {
        let out = replace_non_finite_tokens(br#"{"name":"NaN Infinity","v":NaN,"w":-Infinity}"#);
        assert_eq!(out, br#"{"name":"NaN Infinity","v":null,"w":null}"#);
    }
}
