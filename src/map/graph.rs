//! The drivable road graph: junction nodes joined by directed edges along the map's
//! roads, for vehicles in the simulator and travel-time routing.

use std::collections::HashMap;

use super::{CityMap, RoadClass};

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

impl RoadGraph {
    /// Builds the graph of roads vehicles use (not paths or rail). Roads meet where
    /// they share a vertex, as OSM ways do at junctions. Both directions are drivable
    /// (one-way rules are not modelled).
    pub fn from_map(map: &CityMap) -> Self {
        let mut graph = RoadGraph::default();
        let mut node_at: HashMap<(i64, i64), NodeId> = HashMap::new();
        let mut node = |graph: &mut RoadGraph, p: [f64; 2]| -> NodeId {
            // Centimetre keys: OSM junction vertices project to identical coordinates.
            let key = ((p[0] * 100.0).round() as i64, (p[1] * 100.0).round() as i64);
            *node_at.entry(key).or_insert_with(|| {
                graph.nodes.push(p);
                graph.out.push(Vec::new());
                (graph.nodes.len() - 1) as NodeId
            })
        };
        for (road_index, road) in map.roads.iter().enumerate() {
            if matches!(road.class, RoadClass::Path | RoadClass::Rail) {
                continue;
            }
            let speed = free_speed_mps(road.class);
            let pts = &road.line.0;
            for w in pts.windows(2) {
                let a = node(&mut graph, [w[0].x, w[0].y]);
                let b = node(&mut graph, [w[1].x, w[1].y]);
                if a == b {
                    continue;
                }
                let length_m = ((w[1].x - w[0].x).hypot(w[1].y - w[0].y)) as f32;
                for (from, to) in [(a, b), (b, a)] {
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
        graph
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
    use crate::map::load_default;

    #[test]
    fn default_city_has_a_connected_road_network() {
        let map = load_default().unwrap();
        let g = RoadGraph::from_map(&map);
        assert!(g.edges.len() > 3_000, "{}", g.edges.len());
        // Junctions exist: many nodes have more than two ways out.
        let junctions = g.out.iter().filter(|o| o.len() > 2).count();
        assert!(junctions > 150, "{junctions}");
        // Every edge's reverse exists.
        for e in g.edges.iter().take(100) {
            assert!(g.out[e.to as usize].iter().any(|&r| g.edge(r).to == e.from));
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
