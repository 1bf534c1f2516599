//! The drivable road graph: junction nodes joined by directed edges along the map's
//! roads, for vehicles in the simulator and travel-time routing.

use std::collections::HashMap;

use super::{CityMap, OneWay, Road, RoadClass, TurnRestriction, TurnRule};

pub type NodeId = u32;
pub type EdgeId = u32;

/// One directed stretch of road between two consecutive road vertices.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub from: NodeId,
    pub to: NodeId,
    pub length_m: f32,
    /// Index into `CityMap::roads`.
    pub road: u32,
    pub class: RoadClass,
    /// Free-flow speed (m/s) for the road class.
    pub free_speed_mps: f32,
}

/// Directed road graph in local metres.
#[derive(Clone, Debug, Default)]
pub struct RoadGraph {
    pub nodes: Vec<[f64; 2]>,
    pub edges: Vec<Edge>,
    /// Outgoing edges per node.
    pub out: Vec<Vec<EdgeId>>,
    /// Turns that may not be made, from the map's turn restrictions: `(in, out)`
    /// with `edge(in).to == edge(out).from`, sorted, no duplicates.
    pub banned_turns: Vec<(EdgeId, EdgeId)>,
}

/// Centimetre key of a local point: OSM junction vertices project to identical
/// coordinates, so the roads meeting at a node share one graph node.
fn node_key(p: [f64; 2]) -> (i64, i64) {
    ((p[0] * 100.0).round() as i64, (p[1] * 100.0).round() as i64)
}

/// Typical free-flow speed of a road class in a city centre, m/s.
pub fn free_speed_mps(class: RoadClass) -> f32 {
    let kmh = match class {
        RoadClass::Motorway => 80.0,
        RoadClass::Trunk => 60.0,
        RoadClass::Primary => 50.0,
        RoadClass::Secondary => 40.0,
        RoadClass::Tertiary => 40.0,
        RoadClass::Residential => 30.0,
        RoadClass::Service => 20.0,
        RoadClass::Path => 5.0,
        RoadClass::Rail => 40.0,
    };
    kmh / 3.6
}

/// Free-flow speed of one road, m/s: its class's, or lower for a `*_link` (a slip
/// road is not driven at the main road's speed).
pub fn road_free_speed_mps(road: &Road) -> f32 {
    let main = free_speed_mps(road.class);
    if !road.link {
        return main;
    }
    let link_kmh: f32 = match road.class {
        RoadClass::Motorway => 45.0,
        RoadClass::Trunk => 40.0,
        RoadClass::Primary => 30.0,
        RoadClass::Secondary => 25.0,
        _ => 20.0,
    };
    main.min(link_kmh / 3.6)
}

impl RoadGraph {
    /// Builds the graph of roads vehicles use (not paths or rail). Roads meet where
    /// they share a vertex, as OSM ways do at junctions. A one-way road has edges in
    /// its allowed direction only; links (slip roads) run at their own lower speed.
    /// Turn restrictions become banned turns between the edges at their via node.
    pub fn from_map(map: &CityMap) -> Self {
        let mut graph = RoadGraph::default();
        let mut node_at: HashMap<(i64, i64), NodeId> = HashMap::new();
        let mut node = |graph: &mut RoadGraph, p: [f64; 2]| -> NodeId {
            *node_at.entry(node_key(p)).or_insert_with(|| {
                graph.nodes.push(p);
                graph.out.push(Vec::new());
                (graph.nodes.len() - 1) as NodeId
            })
        };
        for (road_index, road) in map.roads.iter().enumerate() {
            if matches!(road.class, RoadClass::Path | RoadClass::Rail) {
                continue;
            }
            let speed = road_free_speed_mps(road);
            let directions: &[bool] = match road.oneway {
                OneWay::No => &[true, false],
                OneWay::Forward => &[true],
                OneWay::Backward => &[false],
            };
            let pts = &road.line.0;
            for w in pts.windows(2) {
                let a = node(&mut graph, [w[0].x, w[0].y]);
                let b = node(&mut graph, [w[1].x, w[1].y]);
                if a == b {
                    continue;
                }
                let length_m = ((w[1].x - w[0].x).hypot(w[1].y - w[0].y)) as f32;
                for &forward in directions {
                    let (from, to) = if forward { (a, b) } else { (b, a) };
                    let id = graph.edges.len() as EdgeId;
                    graph.edges.push(Edge {
                        from,
                        to,
                        length_m,
                        road: road_index as u32,
                        class: road.class,
                        free_speed_mps: speed,
                    });
                    graph.out[from as usize].push(id);
                }
            }
        }
        graph.banned_turns = graph.resolve_restrictions(map, &node_at);
        graph
    }

    /// The banned `(in, out)` edge pairs of the map's turn restrictions. `no_*` bans
    /// every turn from a `from` road's edge arriving at the via node into a `to`
    /// road's edge leaving it; `only_*` bans, from such an edge, every turn but those.
    /// Where a road is both `from` and `to`, the turn meant is turning back along it
    /// for `*_u_turn` and going on along it otherwise. Restrictions on roads the graph
    /// does not drive (paths, highway areas) resolve to nothing.
    fn resolve_restrictions(
        &self,
        map: &CityMap,
        node_at: &HashMap<(i64, i64), NodeId>,
    ) -> Vec<(EdgeId, EdgeId)> {
        if map.turn_restrictions.is_empty() {
            return Vec::new();
        }
        let via_of = |r: &TurnRestriction| node_at.get(&node_key(r.via)).copied();
        let mut incoming: HashMap<NodeId, Vec<EdgeId>> = map
            .turn_restrictions
            .iter()
            .filter_map(via_of)
            .map(|v| (v, Vec::new()))
            .collect();
        for (id, e) in self.edges.iter().enumerate() {
            if let Some(list) = incoming.get_mut(&e.to) {
                list.push(id as EdgeId);
            }
        }
        let road_id = |e: EdgeId| map.roads[self.edge(e).road as usize].id.as_str();
        let mut banned = Vec::new();
        for r in &map.turn_restrictions {
            let Some(v) = via_of(r) else { continue };
            let names = |ids: &[String], e: EdgeId| ids.iter().any(|id| id == road_id(e));
            for &i in incoming[&v].iter().filter(|&&i| names(&r.from, i)) {
                for &o in &self.out[v as usize] {
                    let back = self.edge(o).to == self.edge(i).from;
                    let along = road_id(o) == road_id(i);
                    let named = names(&r.to, o) && (!along || back == r.u_turn);
                    if named == (r.rule == TurnRule::No) {
                        banned.push((i, o));
                    }
                }
            }
        }
        banned.sort_unstable();
        banned.dedup();
        banned
    }

    /// Whether the turn from edge `from` into edge `to` (at the node between them) is
    /// banned.
    pub fn turn_banned(&self, from: EdgeId, to: EdgeId) -> bool {
        self.banned_turns.binary_search(&(from, to)).is_ok()
    }

    pub fn edge(&self, id: EdgeId) -> &Edge {
        &self.edges[id as usize]
    }

    /// Position `t` (0..=1) along an edge.
    pub fn point_on(&self, id: EdgeId, t: f32) -> [f64; 2] {
        let e = self.edge(id);
        let a = self.nodes[e.from as usize];
        let b = self.nodes[e.to as usize];
        let t = t.clamp(0.0, 1.0) as f64;
        [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
    }

    /// Heading of an edge in degrees clockwise from north.
    pub fn heading_deg(&self, id: EdgeId) -> f32 {
        let e = self.edge(id);
        let a = self.nodes[e.from as usize];
        let b = self.nodes[e.to as usize];
        ((b[0] - a[0]).atan2(b[1] - a[1]).to_degrees() as f32).rem_euclid(360.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::pbf_fixture::Osm;
    use crate::map::{MapFormat, load_bytes, load_default};

    #[test]
    fn default_city_has_a_connected_road_network() {
        let map = load_default().unwrap();
        let g = RoadGraph::from_map(&map);
        assert!(g.edges.len() > 3_000, "{}", g.edges.len());
        // Junctions exist: many nodes meet more than two neighbours (in or out).
        let mut neighbours = vec![std::collections::BTreeSet::new(); g.nodes.len()];
        for e in &g.edges {
            neighbours[e.from as usize].insert(e.to);
            neighbours[e.to as usize].insert(e.from);
        }
        let junctions = neighbours.iter().filter(|n| n.len() > 2).count();
        assert!(junctions > 150, "{junctions}");
        // Every edge of a two-way road has its reverse.
        for e in g
            .edges
            .iter()
            .filter(|e| map.roads[e.road as usize].oneway == OneWay::No)
        {
            assert!(g.out[e.to as usize].iter().any(|&r| g.edge(r).to == e.from));
        }
    }

    fn edges_of(g: &RoadGraph, map: &CityMap, id: &str) -> Vec<([f64; 2], [f64; 2])> {
        g.edges
            .iter()
            .filter(|e| map.roads[e.road as usize].id == id)
            .map(|e| (g.nodes[e.from as usize], g.nodes[e.to as usize]))
            .collect()
    }

    #[test]
    fn one_way_streets_have_edges_in_their_direction_only() {
        let mut osm = Osm::new();
        for i in 1..=4 {
            osm.node(i, 24.94 + i as f64 * 0.001, 60.17);
        }
        osm.node(5, 24.945, 60.171)
            .way(
                10,
                &[1, 2],
                &[("highway", "residential"), ("oneway", "yes")],
            )
            .way(11, &[2, 3], &[("highway", "residential"), ("oneway", "-1")])
            .way(12, &[3, 4], &[("highway", "residential")])
            .way(
                13,
                &[4, 5, 3, 4],
                &[("highway", "tertiary"), ("junction", "roundabout")],
            )
            .way(14, &[1, 5], &[("highway", "motorway")])
            .way(
                15,
                &[2, 5],
                &[
                    ("highway", "primary"),
                    ("junction", "roundabout"),
                    ("oneway", "no"),
                ],
            )
            .way(16, &[4, 5], &[("highway", "primary_link")])
            .way(
                17,
                &[3, 5],
                &[
                    ("highway", "secondary"),
                    ("oneway", "yes"),
                    ("oneway:motor_vehicle", "no"),
                ],
            );
        let map = load_bytes(&osm.to_pbf(), MapFormat::OsmPbf, "t", "t.pbf").unwrap();
        let g = RoadGraph::from_map(&map);
        let p = |lon: f64, lat: f64| map.frame.local_from_wgs84(lon, lat);
        let close = |a: [f64; 2], b: [f64; 2]| (a[0] - b[0]).hypot(a[1] - b[1]) < 0.01;
        let only = |id: &str, from: [f64; 2], to: [f64; 2]| {
            let e = edges_of(&g, &map, id);
            assert_eq!(e.len(), 1, "{id}: {e:?}");
            assert!(close(e[0].0, from) && close(e[0].1, to), "{id}");
        };
        only("way/10", p(24.941, 60.17), p(24.942, 60.17));
        only("way/11", p(24.943, 60.17), p(24.942, 60.17));
        only("way/14", p(24.941, 60.17), p(24.945, 60.171));
        assert_eq!(edges_of(&g, &map, "way/12").len(), 2);
        assert_eq!(
            edges_of(&g, &map, "way/13").len(),
            3,
            "roundabout: one way round"
        );
        assert_eq!(edges_of(&g, &map, "way/15").len(), 2, "oneway=no wins");
        assert_eq!(
            edges_of(&g, &map, "way/17").len(),
            2,
            "motor vehicles both ways"
        );
        // The link is slower than its main road.
        let link = g
            .edges
            .iter()
            .find(|e| map.roads[e.road as usize].id == "way/16")
            .unwrap();
        assert!(link.free_speed_mps < free_speed_mps(RoadClass::Primary) * 0.7);
        let main = g
            .edges
            .iter()
            .find(|e| map.roads[e.road as usize].id == "way/15")
            .unwrap();
        assert_eq!(main.free_speed_mps, free_speed_mps(RoadClass::Primary));
    }

    #[test]
    fn default_city_one_way_streets_are_driven_one_way() {
        let map = load_default().unwrap();
        let g = RoadGraph::from_map(&map);
        let drivable = |r: &&Road| !matches!(r.class, RoadClass::Path | RoadClass::Rail);
        let one_way = map
            .roads
            .iter()
            .filter(drivable)
            .filter(|r| r.oneway != OneWay::No)
            .count();
        assert!(one_way > 300, "{one_way} one-way roads");
        for e in &g.edges {
            let road = &map.roads[e.road as usize];
            let line = &road.line.0;
            let forward = line.windows(2).any(|w| {
                let (a, b) = (g.nodes[e.from as usize], g.nodes[e.to as usize]);
                (w[0].x - a[0]).abs() < 0.01
                    && (w[0].y - a[1]).abs() < 0.01
                    && (w[1].x - b[0]).abs() < 0.01
                    && (w[1].y - b[1]).abs() < 0.01
            });
            match road.oneway {
                OneWay::Forward => assert!(forward, "{} driven backwards", road.id),
                OneWay::Backward => assert!(!forward, "{} driven forwards", road.id),
                OneWay::No => {}
            }
        }
    }

    #[test]
    fn headings_are_compass_degrees() {
        let mut g = RoadGraph {
            nodes: vec![[0.0, 0.0], [0.0, 10.0], [10.0, 0.0]],
            out: vec![vec![], vec![], vec![]],
            ..Default::default()
        };
        for to in [1, 2] {
            g.edges.push(Edge {
                from: 0,
                to,
                length_m: 10.0,
                road: 0,
                class: RoadClass::Primary,
                free_speed_mps: 10.0,
            });
        }
        assert!((g.heading_deg(0) - 0.0).abs() < 1e-3);
        assert!((g.heading_deg(1) - 90.0).abs() < 1e-3);
        assert_eq!(g.point_on(1, 0.5), [5.0, 0.0]);
    }
}
