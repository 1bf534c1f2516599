//! Esri JSON (what an ArcGIS REST service answers to `query?f=json`, and what ArcGIS
//! exports as "JSON"): `features[].attributes` and `features[].geometry` with `rings`,
//! `paths` or `x`/`y`, in the layer's `spatialReference`.
//!
//! Rings follow Esri's rule: outer rings clockwise, holes counter-clockwise, several
//! outer rings in one polygon when it has several pieces. A feature whose geometry
//! or attributes cannot be decoded is skipped and counted, never fatal.

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{MapError, RawFeature, RawGeometry, SkipCounts, SkipReason};

/// The layer's spatial reference as the file gives it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SpatialReference {
    pub wkid: Option<u32>,
    #[serde(rename = "latestWkid")]
    pub latest_wkid: Option<u32>,
    pub wkt: Option<String>,
}

impl SpatialReference {
    /// The code to read it by: the current one when both are given (e.g. 3857 for
    /// 102100).
    pub fn code(&self) -> Option<u32> {
        self.latest_wkid.or(self.wkid)
    }
}

#[derive(Deserialize)]
struct Document<'a> {
    #[serde(default, rename = "spatialReference")]
    spatial_reference: Option<SpatialReference>,
    #[serde(borrow, default)]
    fields: Vec<Field<'a>>,
    #[serde(borrow, default)]
    features: Option<Vec<FeatureJson<'a>>>,
    /// An error answer from an ArcGIS server (`{"error": {...}}`).
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Field<'a> {
    name: &'a str,
    #[serde(rename = "type", default)]
    kind: Option<&'a str>,
    #[serde(default)]
    alias: Option<String>,
}

#[derive(Deserialize)]
struct FeatureJson<'a> {
    #[serde(borrow, default)]
    attributes: Option<&'a RawValue>,
    #[serde(borrow, default)]
    geometry: Option<&'a RawValue>,
}

/// A vertex: x and y, then z and m if present (null when missing, as ArcGIS writes).
type Vertex = Vec<Option<f64>>;

#[derive(Deserialize)]
struct GeometryJson {
    #[serde(default)]
    rings: Option<Vec<Vec<Vertex>>>,
    #[serde(default)]
    paths: Option<Vec<Vec<Vertex>>>,
    /// True curves (ArcGIS's `curveRings`): their end points are read as a polygon.
    #[serde(default, rename = "curveRings")]
    curve_rings: Option<Vec<Vec<serde_json::Value>>>,
    #[serde(default)]
    x: Option<f64>,
    #[serde(default)]
    points: Option<serde::de::IgnoredAny>,
}

/// Whether `head` (the start of a JSON file) looks like Esri JSON rather than GeoJSON.
pub fn looks_like_esri(head: &[u8]) -> bool {
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    // An ArcGIS server's error answer: `{"error": {"code": …, "message": …}}`.
    let error_answer = head
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .skip(1)
        .skip_while(|b| b.is_ascii_whitespace())
        .take(7)
        .eq(b"\"error\"".iter());
    error_answer
        || !has(b"\"FeatureCollection\"")
            && !has(b"\"Feature\"")
            && (has(b"\"geometryType\"")
                || has(b"\"spatialReference\"")
                || (has(b"\"attributes\"") && has(b"\"features\"")))
}

/// Reads an Esri JSON layer: its features (coordinates as the file has them, in its
/// spatial reference) and what was skipped.
pub fn read_features(
    bytes: &[u8],
    source_name: &str,
) -> Result<(Vec<RawFeature>, SkipCounts, SpatialReference), MapError> {
    let error = |message: String| MapError::EsriJson {
        source_name: source_name.to_string(),
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| error(format!("not UTF-8 text ({e})")))?;
    let doc: Document = serde_json::from_str(text).map_err(|e| error(e.to_string()))?;
    if let Some(e) = doc.error {
        return Err(error(format!("the server answered an error: {}", e.get())));
    }
    let Some(features) = doc.features else {
        return Err(error("no \"features\" array".into()));
    };
    // The feature's id: the layer's object-id field, else OBJECTID or FID.
    let oid = doc
        .fields
        .iter()
        .find(|f| f.kind == Some("esriFieldTypeOID"))
        .map(|f| f.name.to_string());
    let aliases: Vec<(String, String)> = doc
        .fields
        .iter()
        .filter_map(|f| {
            let alias = f.alias.as_ref()?.trim();
            (!alias.is_empty() && alias != f.name).then(|| (f.name.to_string(), alias.into()))
        })
        .collect();
    let decoded: Vec<Result<RawFeature, SkipReason>> = features
        .par_iter()
        .enumerate()
        .with_min_len(256)
        .map(|(i, f)| decode_feature(i, f, oid.as_deref(), &aliases))
        .collect();
    let (out, skipped) = super::geojson::kept_and_skipped(decoded);
    Ok((out, skipped, doc.spatial_reference.unwrap_or_default()))
}

fn decode_feature(
    index: usize,
    f: &FeatureJson,
    oid: Option<&str>,
    aliases: &[(String, String)],
) -> Result<RawFeature, SkipReason> {
    let mut tags = super::geojson::decode_properties(f.attributes);
    let geometry = decode_geometry(f.geometry)?;
    let id = super::object_id(&tags, oid, index);
    // A field's alias (often its name in the agency's language) names it too.
    for (name, alias) in aliases {
        if let Some(value) = tags.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            && !tags.iter().any(|(k, _)| k == alias)
        {
            tags.push((alias.clone(), value));
        }
    }
    Ok(RawFeature { id, tags, geometry })
}

fn xy(points: Vec<Vertex>) -> Result<Vec<[f64; 2]>, SkipReason> {
    points
        .into_iter()
        .map(|p| match p.as_slice() {
            [Some(x), Some(y), ..] => Ok([*x, *y]),
            _ => Err(SkipReason::BadCoordinates),
        })
        .collect()
}

/// A curve ring's vertices: plain `[x, y]` points and the end points of its arcs and
/// Béziers (`{"c": [[x, y], …]}`, `{"a": [[x, y], …]}`, `{"b": [[x, y], …]}`).
fn curve_xy(points: Vec<serde_json::Value>) -> Result<Vec<[f64; 2]>, SkipReason> {
    points
        .into_iter()
        .map(|p| {
            let end = match &p {
                serde_json::Value::Array(_) => &p,
                serde_json::Value::Object(o) => o
                    .values()
                    .next()
                    .and_then(|v| v.get(0))
                    .ok_or(SkipReason::BadCoordinates)?,
                _ => return Err(SkipReason::BadCoordinates),
            };
            match (
                end.get(0).and_then(|v| v.as_f64()),
                end.get(1).and_then(|v| v.as_f64()),
            ) {
                (Some(x), Some(y)) => Ok([x, y]),
                _ => Err(SkipReason::BadCoordinates),
            }
        })
        .collect()
}

fn decode_geometry(raw: Option<&RawValue>) -> Result<RawGeometry, SkipReason> {
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(RawGeometry::Null);
    };
    let g: GeometryJson =
        serde_json::from_str(raw.get()).map_err(|_| SkipReason::BadCoordinates)?;
    if let Some(rings) = g.rings {
        let rings = rings.into_iter().map(xy).collect::<Result<Vec<_>, _>>()?;
        return Ok(polygon_of_rings(rings));
    }
    if let Some(rings) = g.curve_rings {
        let rings = rings
            .into_iter()
            .map(curve_xy)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(polygon_of_rings(rings));
    }
    if let Some(paths) = g.paths {
        let mut lines = paths.into_iter().map(xy).collect::<Result<Vec<_>, _>>()?;
        return Ok(match lines.len() {
            0 => RawGeometry::Null,
            1 => RawGeometry::Line(lines.remove(0)),
            _ => RawGeometry::MultiLine(lines),
        });
    }
    if g.x.is_some() || g.points.is_some() {
        return Ok(RawGeometry::Point);
    }
    Ok(RawGeometry::Null)
}

/// Twice the signed area (positive counter-clockwise, x right and y up).
fn signed_area2(ring: &[[f64; 2]]) -> f64 {
    ring.iter()
        .zip(ring.iter().cycle().skip(1))
        .map(|(a, b)| a[0] * b[1] - b[0] * a[1])
        .sum()
}

fn bbox(ring: &[[f64; 2]]) -> [f64; 4] {
    ring.iter().fold(
        [f64::MAX, f64::MAX, f64::MIN, f64::MIN],
        |[a, b, c, d], p| [a.min(p[0]), b.min(p[1]), c.max(p[0]), d.max(p[1])],
    )
}

/// Even-odd test of a point against a ring.
fn inside(p: [f64; 2], ring: &[[f64; 2]]) -> bool {
    let mut inside = false;
    let n = ring.len();
    for i in 0..n {
        let (a, b) = (ring[i], ring[(i + 1) % n]);
        if (a[1] > p[1]) != (b[1] > p[1]) {
            let x = a[0] + (p[1] - a[1]) / (b[1] - a[1]) * (b[0] - a[0]);
            if p[0] < x {
                inside = !inside;
            }
        }
    }
    inside
}

/// Rings past which their nesting is not worked out (it costs the square of their
/// number): Esri's orientation rule alone decides.
const MAX_RINGS_FOR_NESTING: usize = 64;

/// Esri's rings as polygons. A ring inside an even number of others (none, or an
/// island in a courtyard) is an outer, one inside an odd number a hole of the
/// smallest ring around it: right whatever way a tool wound them. Past
/// [`MAX_RINGS_FOR_NESTING`] rings, Esri's rule: clockwise outers, counter-clockwise
/// holes (in the smallest outer they lie in; a hole in none is an outer).
pub(super) fn polygon_of_rings(rings: Vec<Vec<[f64; 2]>>) -> RawGeometry {
    let rings: Vec<Vec<[f64; 2]>> = rings.into_iter().filter(|r| r.len() >= 3).collect();
    let areas: Vec<f64> = rings.iter().map(|r| signed_area2(r).abs()).collect();
    let boxes: Vec<[f64; 4]> = rings.iter().map(|r| bbox(r)).collect();
    let within = |inner: usize, outer: usize| {
        let (i, o) = (boxes[inner], boxes[outer]);
        inner != outer
            && areas[outer] > areas[inner]
            && o[0] <= i[0]
            && o[1] <= i[1]
            && o[2] >= i[2]
            && o[3] >= i[3]
            && inside(rings[inner][0], &rings[outer])
    };
    let n = rings.len();
    let is_hole: Vec<bool> = if n <= MAX_RINGS_FOR_NESTING {
        (0..n)
            .map(|i| (0..n).filter(|&o| within(i, o)).count() % 2 == 1)
            .collect()
    } else {
        rings.iter().map(|r| signed_area2(r) > 0.0).collect()
    };
    // Each hole's owner: the smallest outer it lies in. Past the nesting limit the
    // outers are looked up by their boxes, so a dissolved layer (one shape of many
    // thousand parts) costs n log n, not n².
    let mut owner_of: Vec<Option<usize>> = vec![None; n];
    let smallest = |a: &usize, b: &usize| areas[*a].total_cmp(&areas[*b]);
    if n <= MAX_RINGS_FOR_NESTING {
        for h in (0..n).filter(|&h| is_hole[h]) {
            owner_of[h] = (0..n)
                .filter(|&o| !is_hole[o] && within(h, o))
                .min_by(smallest);
        }
    } else {
        use rstar::primitives::{GeomWithData, Rectangle};
        let corners = |b: [f64; 4]| ([b[0], b[1]], [b[2], b[3]]);
        let outers = rstar::RTree::bulk_load(
            (0..n)
                .filter(|&o| !is_hole[o])
                .map(|o| {
                    let (lower, upper) = corners(boxes[o]);
                    GeomWithData::new(Rectangle::from_corners(lower, upper), o)
                })
                .collect(),
        );
        for h in (0..n).filter(|&h| is_hole[h]) {
            let (lower, upper) = corners(boxes[h]);
            owner_of[h] = outers
                .locate_in_envelope_intersecting(&rstar::AABB::from_corners(lower, upper))
                .map(|g| g.data)
                .filter(|&o| within(h, o))
                .min_by(smallest);
        }
    }
    let mut holes_of: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (h, owner) in owner_of.iter().enumerate() {
        if let Some(o) = *owner {
            holes_of[o].push(h);
        }
    }
    let outers: Vec<usize> = (0..n)
        .filter(|&i| !is_hole[i] || owner_of[i].is_none())
        .collect();
    let mut polygons: Vec<Vec<Vec<[f64; 2]>>> = outers
        .iter()
        .map(|&o| {
            let mut p = vec![rings[o].clone()];
            p.extend(holes_of[o].iter().map(|&h| rings[h].clone()));
            p
        })
        .collect();
    match polygons.len() {
        0 => RawGeometry::Null,
        1 => RawGeometry::Polygon(polygons.remove(0)),
        _ => RawGeometry::MultiPolygon(polygons),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A square at (x, y) of side s, clockwise (an Esri outer) or not (a hole).
    fn square(x: f64, y: f64, s: f64, clockwise: bool) -> String {
        let mut pts = vec![[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]];
        if clockwise {
            pts.reverse();
        }
        serde_json::to_string(&pts).unwrap()
    }

    #[test]
    fn rings_attributes_aliases_and_ids_are_read() {
        let text = format!(
            r#"{{"displayFieldName":"NAME","geometryType":"esriGeometryPolygon",
              "spatialReference":{{"wkid":102100,"latestWkid":3857}},
              "fields":[{{"name":"OBJECTID","type":"esriFieldTypeOID","alias":"OBJECTID"}},
                        {{"name":"JZGD","type":"esriFieldTypeDouble","alias":"高度"}},
                        {{"name":"NAME","type":"esriFieldTypeString","alias":"名称"}}],
              "features":[
                {{"attributes":{{"OBJECTID":17,"JZGD":24.5,"NAME":"图书馆"}},
                  "geometry":{{"rings":[{},{}]}}}},
                {{"attributes":{{"OBJECTID":18,"JZGD":null}},
                  "geometry":{{"rings":[{},{}]}}}},
                {{"attributes":{{"OBJECTID":19}},"geometry":{{"paths":[[[0,0],[10,10]]]}}}},
                {{"attributes":{{"OBJECTID":20}},"geometry":{{"x":1,"y":2}}}},
                {{"attributes":{{"OBJECTID":21}},"geometry":{{"rings":[[[0,"a"]]]}}}}
              ]}}"#,
            square(0.0, 0.0, 100.0, true),
            square(10.0, 10.0, 20.0, false),
            square(0.0, 0.0, 10.0, true),
            square(50.0, 50.0, 10.0, true),
        );
        assert!(looks_like_esri(text.as_bytes()));
        let (features, skipped, sr) = read_features(text.as_bytes(), "t.json").unwrap();
        assert_eq!(sr.code(), Some(3857));
        assert_eq!(skipped.get(SkipReason::BadCoordinates), 1);
        assert_eq!(features.len(), 4);
        let library = &features[0];
        assert_eq!(library.id, "feature/17");
        let tag = |f: &RawFeature, k: &str| {
            f.tags
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(tag(library, "JZGD").as_deref(), Some("24.5"));
        assert_eq!(
            tag(library, "高度").as_deref(),
            Some("24.5"),
            "by its alias"
        );
        assert_eq!(tag(library, "名称").as_deref(), Some("图书馆"));
        // One outer with its hole.
        match &library.geometry {
            RawGeometry::Polygon(rings) => assert_eq!(rings.len(), 2),
            other => panic!("{other:?}"),
        }
        // Two clockwise rings: one polygon in two pieces.
        match &features[1].geometry {
            RawGeometry::MultiPolygon(ps) => assert_eq!(ps.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(matches!(features[2].geometry, RawGeometry::Line(_)));
        assert_eq!(features[3].geometry, RawGeometry::Point);
    }

    #[test]
    fn rings_wound_either_way_nest_as_they_lie_and_null_z_is_no_matter() {
        let courtyard = |outer_cw: bool, hole_cw: bool| {
            let text = format!(
                r#"{{"features":[{{"attributes":{{}},"geometry":{{"rings":[{},{}]}}}}]}}"#,
                square(0.0, 0.0, 100.0, outer_cw),
                square(10.0, 10.0, 20.0, hole_cw)
            );
            read_features(text.as_bytes(), "t.json")
                .unwrap()
                .0
                .remove(0)
                .geometry
        };
        for (outer_cw, hole_cw) in [(true, false), (false, true), (true, true), (false, false)] {
            match courtyard(outer_cw, hole_cw) {
                RawGeometry::Polygon(rings) => {
                    assert_eq!(rings.len(), 2, "{outer_cw} {hole_cw}");
                    assert_eq!(rings[0].len(), 5, "the outer first");
                }
                other => panic!("{outer_cw} {hole_cw}: {other:?}"),
            }
        }
        let text = r#"{"features":[{"attributes":{},"geometry":{"hasZ":true,"hasM":true,
            "rings":[[[0,0,null,null],[0,10,1.5,null],[10,10,null,2],[10,0,null,null],[0,0,null,null]]]}}]}"#;
        let (features, skipped, _) = read_features(text.as_bytes(), "t.json").unwrap();
        assert_eq!(skipped.total(), 0);
        assert!(matches!(features[0].geometry, RawGeometry::Polygon(_)));
    }

    #[test]
    fn a_server_error_and_a_geojson_file_are_told_apart() {
        let err = read_features(
            br#"{"error":{"code":400,"message":"Invalid query"}}"#,
            "q.json",
        )
        .unwrap_err();
        assert!(err.to_string().contains("Invalid query"), "{err}");
        assert!(looks_like_esri(
            br#" {"error":{"code":400,"message":"Invalid query"}}"#
        ));
        assert!(!looks_like_esri(
            br#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"attributes":1}}]}"#
        ));
    }
}
