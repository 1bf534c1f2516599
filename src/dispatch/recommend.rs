//! Unit recommendation: nearest suitable units by road travel time on the live road graph.
//!
//! A dispatcher picks an incident; [`Router::recommend`] ranks the available units
//! that suit it by estimated time of arrival over the road network, with the route to
//! draw. Travel times follow the traffic feeds ([`Router::update_speeds_from`]), so
//! asking again after traffic changes re-ranks.
//!
//! How: one Dijkstra from the incident over the *reverse* graph (so every settled cost
//! is a unit→incident drive along directed edges), stopped as soon as the best `k`
//! suitable units are certain. Units are bucketed by their nearest graph node in a
//! [`UnitIndex`], built once per unit-position update and reused across calls; the
//! search arrays live in a reusable, generation-stamped scratch so a call allocates
//! nothing proportional to the graph.
//!
//! Off-road legs (unit → its nearest node, the incident's node → the incident) are
//! straight lines driven at [`OFF_ROAD_SPEED_MPS`].
//!
//! Turn restrictions: on a map with banned turns the search state is the node *and*
//! the edge the route leaves it by (edge-based), and a route may not turn back along
//! the edge it came by (u → v → u) except at a dead end, as a car cannot U-turn in
//! the middle of a street; otherwise a banned turn would be dodged by driving on to
//! the next shape point and coming back. A route that must go round the block to
//! avoid a banned turn, even through the same junction, is found. A map without
//! restrictions searches by node alone: a shortest path then never visits a node
//! twice, so it never turns back either.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use rstar::primitives::{GeomWithData, Line};
use rstar::{PointDistance, RTree};

use crate::feeds::{EntityKind, EntityUpdate, FieldValue};
use crate::geo_frame::GeoFrame;
use crate::map::RoadClass;
use crate::map::graph::{Edge, RoadGraph, free_speed_mps};
use crate::state::{FeedId, LiveEntity, LiveState, Slot};

/// Speed of the straight legs between a point and its nearest road node, m/s.
pub const OFF_ROAD_SPEED_MPS: f64 = 5.0;
/// Slowest speed a live report can set: a jam is slow, not impassable.
pub const MIN_SPEED_MPS: f32 = 1.5;
/// Fastest speed a live report can set (guards against garbage values).
pub const MAX_SPEED_MPS: f32 = 70.0;
/// A traffic segment without a `road-{i}` id is matched to the nearest road edge
/// within this distance of its midpoint, else ignored.
pub const MAX_SEGMENT_MATCH_M: f64 = 50.0;

/// The emergency unit kinds (canonical `vehicleType` names).
pub const EMERGENCY_KINDS: [&str; 3] = ["police", "fireEngine", "ambulance"];

const NONE: u32 = u32::MAX;

/// One dispatchable unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub id: String,
    /// Canonical kind: one of [`EMERGENCY_KINDS`] for units from the live state.
    pub kind: String,
    /// Local metres (east, north).
    pub position: [f64; 2],
    pub available: bool,
}

/// One ranked unit for an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// Index into the `units` slice passed in.
    pub unit: usize,
    pub unit_id: String,
    /// Estimated drive time, seconds, including both off-road legs.
    pub eta_s: f64,
    /// Route length plus both straight off-road legs, metres.
    pub distance_m: f64,
    /// Graph nodes in local metres, from the unit's nearest node to the incident's
    /// nearest node (one point when they coincide). The off-road legs run from
    /// `units[unit].position` to the first point and from the last to the incident.
    pub route: Vec<[f64; 2]>,
}

/// The canonical emergency kind for a `vehicleType`, `None` for any other vehicle
/// (buses, taxis, trams, private cars...). Accepts common aliases.
pub fn emergency_kind(vehicle_type: &str) -> Option<&'static str> {
    let t = normalise(vehicle_type);
    match t.as_str() {
        "police" | "policecar" | "policevehicle" | "patrolcar" => Some("police"),
        "fireengine" | "firetruck" | "firetender" | "firebrigade" | "fire" => Some("fireEngine"),
        "ambulance" | "emergencymedical" | "ems" => Some("ambulance"),
        _ => None,
    }
}

/// Whether a `serviceStatus` leaves the unit free to be dispatched. Unknown or
/// absent statuses count as available; the sim's units report `onRoute` (patrolling).
pub fn status_available(service_status: Option<&str>) -> bool {
    let Some(s) = service_status else {
        return true;
    };
    !matches!(
        normalise(s).as_str(),
        "broken"
            | "outofservice"
            | "busy"
            | "dispatched"
            | "assigned"
            | "onscene"
            | "onmission"
            | "unavailable"
            | "offduty"
            | "maintenance"
    )
}

fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every emergency vehicle with a position in the live state, as units.
pub fn units_from_state(state: &LiveState) -> Vec<Unit> {
    state.iter().filter_map(|(_, e)| unit_of(e)).collect()
}

/// The units in the live state, kept from each frame's changed slots, so the desk
/// never scans the whole city for them: what was already in the state when the
/// tracker started is read a sweep step a frame.
#[derive(Debug)]
pub struct UnitTracker {
    by_slot: std::collections::BTreeMap<Slot, Unit>,
    catch_up: Option<crate::state::sweep::Sweep>,
}

impl Default for UnitTracker {
    fn default() -> Self {
        Self {
            by_slot: Default::default(),
            catch_up: Some(Default::default()),
        }
    }
}

impl UnitTracker {
    /// Slots a catch-up step reads at most.
    pub const CATCH_UP_SLOTS: usize = 4_096;

    /// Takes in this frame's changed slots, and a step of the catch-up within
    /// `budget`; returns the slots the catch-up read (for the router's speeds).
    pub fn track(
        &mut self,
        state: &LiveState,
        changed: &[Slot],
        budget: crate::state::sweep::Budget,
    ) -> Vec<Slot> {
        let mut caught = Vec::new();
        if let Some(sweep) = &mut self.catch_up {
            let budget = crate::state::sweep::Budget {
                slots: budget.slots.min(Self::CATCH_UP_SLOTS),
                ..budget
            };
            if sweep.step(state, budget, |slot, _| caught.push(slot)) {
                self.catch_up = None;
            }
        }
        for &slot in caught.iter().chain(changed) {
            match state.entity(slot).and_then(unit_of) {
                Some(unit) => {
                    self.by_slot.insert(slot, unit);
                }
                None => {
                    self.by_slot.remove(&slot);
                }
            }
        }
        caught
    }

    /// Whether what was in the state at the start has all been read.
    pub fn caught_up(&self) -> bool {
        self.catch_up.is_none()
    }

    /// The units now, in slot order.
    pub fn units(&self) -> Vec<Unit> {
        self.by_slot.values().cloned().collect()
    }
}

/// The unit a live entity is: an emergency vehicle with a position.
pub fn unit_of(e: &LiveEntity) -> Option<Unit> {
    let EntityKind::Vehicle {
        vehicle_type,
        service_status,
        ..
    } = &e.kind
    else {
        return None;
    };
    let kind = emergency_kind(vehicle_type.as_deref()?)?;
    Some(Unit {
        id: e.id.clone(),
        kind: kind.to_string(),
        position: e.local?,
        available: status_available(service_status.as_deref()),
    })
}

type NodePoint = GeomWithData<[f64; 2], u32>;
type RoadSegment = GeomWithData<Line<[f64; 2]>, u32>;

/// Travel-time router over a road graph, with live speeds per road.
pub struct Router {
    nodes: Vec<[f64; 2]>,
    /// Reverse adjacency (CSR by destination): incoming edges of node `v` are
    /// positions `rev_start[v]..rev_start[v + 1]`.
    rev_start: Vec<u32>,
    /// Source node of each incoming edge.
    rev_src: Vec<u32>,
    /// Current travel time of each incoming edge, seconds.
    rev_time: Vec<f32>,
    rev_len: Vec<f32>,
    rev_free: Vec<f32>,
    /// CSR from map road index to the reverse positions of its edges.
    road_start: Vec<u32>,
    road_pos: Vec<u32>,
    /// Turn restrictions (all empty when the graph has none). Search states are the
    /// nodes `0..n`, then one state per edge ("at its source node, about to take
    /// it"): `turn_state[p]` is the state of the edge at reverse position `p`,
    /// `state_pos[s - n]` the position of state `s`.
    turn_state: Vec<u32>,
    state_pos: Vec<u32>,
    /// Banned turns as `(out position << 32) | in position`, sorted.
    banned: Vec<u64>,
    /// With turn restrictions, every edge has a state and a route may not turn back
    /// (u → v → u) at a node with another way on: the destination node of each
    /// reverse position, and per node its only out-neighbour (`NONE` where it has
    /// several: no U-turn there).
    rev_dst: Vec<u32>,
    sole_out: Vec<u32>,
    node_tree: RTree<NodePoint>,
    /// Built on first need: matching traffic segments without a road id.
    segment_tree: Option<RTree<RoadSegment>>,
    segment_cache: HashMap<(FeedId, String), Option<u32>>,
    scratch: Mutex<Scratch>,
}

/// Units bucketed by nearest graph node; build once per unit-position update.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitIndex {
    positions: Vec<[f64; 2]>,
    /// Per unit: nearest node (`u32::MAX` when none) and the off-road distance to it.
    node_of: Vec<u32>,
    off_m: Vec<f64>,
    /// CSR by node: units at node `v` are `members[start[v]..start[v + 1]]`.
    start: Vec<u32>,
    members: Vec<u32>,
}

impl UnitIndex {
    /// Snaps every unit to its nearest node and buckets them.
    pub fn build(router: &Router, units: &[Unit]) -> Self {
        let snaps = snap_all(router, units, |_| None);
        Self::from_snaps(router, units, snaps)
    }

    /// This index brought up to date for `units`: units whose position is unchanged
    /// keep their snap, only moved or new ones are snapped again.
    pub fn update(&mut self, router: &Router, units: &[Unit]) {
        if self.start.len() != router.nodes.len() + 1 {
            *self = Self::build(router, units);
            return;
        }
        let prev = &*self;
        let snaps = snap_all(router, units, |i| {
            (prev.positions.get(i) == Some(&units[i].position))
                .then(|| (prev.node_of[i], prev.off_m[i]))
        });
        *self = Self::from_snaps(router, units, snaps);
    }

    fn from_snaps(router: &Router, units: &[Unit], snaps: Vec<(u32, f64)>) -> Self {
        let n = router.nodes.len();
        let mut count = vec![0u32; n + 1];
        for &(node, _) in &snaps {
            if node != NONE {
                count[node as usize + 1] += 1;
            }
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let start = count;
        let mut fill = start.clone();
        let mut members = vec![0u32; start[n] as usize];
        for (i, &(node, _)) in snaps.iter().enumerate() {
            if node != NONE {
                let slot = &mut fill[node as usize];
                members[*slot as usize] = i as u32;
                *slot += 1;
            }
        }
        UnitIndex {
            positions: units.iter().map(|u| u.position).collect(),
            node_of: snaps.iter().map(|s| s.0).collect(),
            off_m: snaps.iter().map(|s| s.1).collect(),
            start,
            members,
        }
    }

    pub fn len(&self) -> usize {
        self.node_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.node_of.is_empty()
    }

    /// Whether this index was built for exactly these unit positions.
    pub fn matches(&self, units: &[Unit]) -> bool {
        self.positions.len() == units.len()
            && self
                .positions
                .iter()
                .zip(units)
                .all(|(p, u)| *p == u.position)
    }

    /// The node unit `i` snapped to, if any.
    pub fn node_of(&self, i: usize) -> Option<u32> {
        self.node_of.get(i).copied().filter(|&n| n != NONE)
    }
}

/// Above this many units, snapping runs on rayon's pool.
const PARALLEL_SNAP: usize = 2048;

/// Nearest node and off-road distance per unit (`(u32::MAX, inf)` when none), taking
/// `known(i)` where it has one.
fn snap_all(
    router: &Router,
    units: &[Unit],
    known: impl Fn(usize) -> Option<(u32, f64)> + Sync,
) -> Vec<(u32, f64)> {
    let one = |i: usize| {
        known(i).unwrap_or_else(|| {
            router
                .snap(units[i].position)
                .unwrap_or((NONE, f64::INFINITY))
        })
    };
    if units.len() >= PARALLEL_SNAP {
        use rayon::prelude::*;
        (0..units.len()).into_par_iter().map(one).collect()
    } else {
        (0..units.len()).map(one).collect()
    }
}

/// Reusable search buffers, per search state (see [`Router`]). `dist`, `next` and
/// `via` are valid for state `s` only where `stamp[s] == generation`, and a node's
/// units are done where `seen[v] == generation`, so a call never clears graph-sized
/// arrays.
#[derive(Default)]
struct Scratch {
    generation: u32,
    stamp: Vec<u32>,
    seen: Vec<u32>,
    dist: Vec<f64>,
    /// Next state toward the incident and the reverse position of that edge.
    next: Vec<u32>,
    via: Vec<u32>,
    heap: BinaryHeap<Reverse<(u64, u32)>>,
    /// The best `k` candidates so far: max-heap of (key bits, unit, state).
    best: BinaryHeap<(u64, u32, u32)>,
    /// Unit index of the last `recommend` call, reused while positions are unchanged.
    units: Option<UnitIndex>,
}

impl Scratch {
    fn begin(&mut self, states: usize, nodes: usize) {
        if self.stamp.len() != states || self.seen.len() != nodes {
            self.stamp = vec![0; states];
            self.seen = vec![0; nodes];
            self.dist = vec![0.0; states];
            self.next = vec![NONE; states];
            self.via = vec![NONE; states];
            self.generation = 0;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.seen.fill(0);
            self.generation = 1;
        }
        self.heap.clear();
        self.best.clear();
    }

    #[inline]
    fn dist(&self, v: usize) -> f64 {
        if self.stamp[v] == self.generation {
            self.dist[v]
        } else {
            f64::INFINITY
        }
    }
}

/// Non-negative f64 as order-preserving bits.
#[inline]
fn key(x: f64) -> u64 {
    debug_assert!(x >= 0.0);
    x.to_bits()
}

fn edge_time(len: f32, speed: f32) -> f32 {
    len.max(0.0) / speed.clamp(MIN_SPEED_MPS, MAX_SPEED_MPS)
}

impl Router {
    /// Builds the router at free-flow speeds.
    pub fn new(graph: &RoadGraph) -> Self {
        let n = graph.nodes.len();
        let mut rev_start = vec![0u32; n + 1];
        for e in &graph.edges {
            rev_start[e.to as usize + 1] += 1;
        }
        for i in 0..n {
            rev_start[i + 1] += rev_start[i];
        }
        let m = graph.edges.len();
        let mut fill = rev_start.clone();
        let mut rev_src = vec![0u32; m];
        let mut rev_time = vec![0f32; m];
        let mut rev_len = vec![0f32; m];
        let mut rev_free = vec![0f32; m];
        let mut rev_road = vec![0u32; m];
        let mut pos_of_edge = vec![0u32; m];
        for (id, e) in graph.edges.iter().enumerate() {
            let p = fill[e.to as usize] as usize;
            fill[e.to as usize] += 1;
            pos_of_edge[id] = p as u32;
            rev_src[p] = e.from;
            rev_len[p] = e.length_m;
            rev_free[p] = e.free_speed_mps;
            rev_time[p] = edge_time(e.length_m, e.free_speed_mps);
            rev_road[p] = e.road;
        }
        let roads = graph
            .edges
            .iter()
            .map(|e| e.road as usize + 1)
            .max()
            .unwrap_or(0);
        let mut road_start = vec![0u32; roads + 1];
        for &r in &rev_road {
            road_start[r as usize + 1] += 1;
        }
        for i in 0..roads {
            road_start[i + 1] += road_start[i];
        }
        let mut fill = road_start.clone();
        let mut road_pos = vec![0u32; m];
        for (p, &r) in rev_road.iter().enumerate() {
            road_pos[fill[r as usize] as usize] = p as u32;
            fill[r as usize] += 1;
        }
        let (mut turn_state, mut state_pos, mut banned) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rev_dst, mut sole_out) = (Vec::new(), Vec::new());
        if !graph.banned_turns.is_empty() {
            // Edge-based everywhere: were U-turns free anywhere, a route facing a
            // banned turn could drive on to the next shape point, turn round and come
            // back. (Without restrictions a shortest path never visits a node twice,
            // so it never turns back and the node-based search is exact.)
            turn_state = (n as u32..(n + m) as u32).collect();
            state_pos = (0..m as u32).collect();
            rev_dst = vec![NONE; m];
            for v in 0..n {
                for p in rev_start[v]..rev_start[v + 1] {
                    rev_dst[p as usize] = v as u32;
                }
            }
            sole_out = vec![NONE; n];
            let mut several = vec![false; n];
            for e in &graph.edges {
                let (u, w) = (e.from as usize, e.to);
                if sole_out[u] == NONE && !several[u] {
                    sole_out[u] = w;
                } else if sole_out[u] != w {
                    several[u] = true;
                    sole_out[u] = NONE;
                }
            }
            banned = graph
                .banned_turns
                .iter()
                .map(|&(i, o)| {
                    (u64::from(pos_of_edge[o as usize]) << 32) | u64::from(pos_of_edge[i as usize])
                })
                .collect();
            banned.sort_unstable();
        }
        // Only nodes a vehicle can drive from or to are snapping targets.
        let mut connected = vec![false; n];
        for e in &graph.edges {
            connected[e.from as usize] = true;
            connected[e.to as usize] = true;
        }
        let points = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, p)| connected[*i] && p[0].is_finite() && p[1].is_finite())
            .map(|(i, p)| NodePoint::new(*p, i as u32))
            .collect();
        Router {
            nodes: graph.nodes.clone(),
            rev_start,
            rev_src,
            rev_time,
            rev_len,
            rev_free,
            road_start,
            road_pos,
            turn_state,
            state_pos,
            banned,
            rev_dst,
            sole_out,
            node_tree: RTree::bulk_load(points),
            segment_tree: None,
            segment_cache: HashMap::new(),
            scratch: Mutex::new(Scratch::default()),
        }
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn edge_count(&self) -> usize {
        self.rev_src.len()
    }

    /// Number of map road indices the graph covers (one past the largest).
    pub fn road_count(&self) -> usize {
        self.road_start.len().saturating_sub(1)
    }

    /// Local position of a node.
    pub fn node(&self, id: u32) -> [f64; 2] {
        self.nodes[id as usize]
    }

    /// The nearest drivable node to a local point and the distance to it.
    pub fn snap(&self, p: [f64; 2]) -> Option<(u32, f64)> {
        if !(p[0].is_finite() && p[1].is_finite()) {
            return None;
        }
        let hit = self.node_tree.nearest_neighbor(&p)?;
        Some((hit.data, hit.distance_2(&p).sqrt()))
    }

    fn road_positions(&self, road: usize) -> &[u32] {
        if road + 1 >= self.road_start.len() {
            return &[];
        }
        &self.road_pos[self.road_start[road] as usize..self.road_start[road + 1] as usize]
    }

    /// Sets the live speed (m/s, clamped to [`MIN_SPEED_MPS`]..[`MAX_SPEED_MPS`]) of
    /// every edge of map road `road`. Returns whether the graph has that road.
    pub fn set_road_speed(&mut self, road: usize, speed_mps: f32) -> bool {
        speed_mps.is_finite() && self.set_road_edges(road, |_| speed_mps)
    }

    /// Sets a road's speed as a share of each of its edges' free-flow speed.
    pub fn set_road_speed_ratio(&mut self, road: usize, ratio: f32) -> bool {
        ratio.is_finite() && self.set_road_edges(road, |free| free * ratio)
    }

    /// Sets the travel time of every edge of map road `road` from its speed, given the
    /// edge's free-flow speed. Returns whether the graph has that road.
    fn set_road_edges(&mut self, road: usize, speed_of: impl Fn(f32) -> f32) -> bool {
        if road + 1 >= self.road_start.len() {
            return false;
        }
        let (a, b) = (
            self.road_start[road] as usize,
            self.road_start[road + 1] as usize,
        );
        for i in a..b {
            let p = self.road_pos[i] as usize;
            self.rev_time[p] = edge_time(self.rev_len[p], speed_of(self.rev_free[p]));
        }
        a < b
    }

    /// Back to free flow everywhere.
    pub fn reset_speeds(&mut self) {
        for p in 0..self.rev_time.len() {
            self.rev_time[p] = edge_time(self.rev_len[p], self.rev_free[p]);
        }
    }

    /// Current travel time of map road `road`'s edges, seconds (for inspection).
    pub fn road_travel_time_s(&self, road: usize) -> Vec<f32> {
        self.road_positions(road)
            .iter()
            .map(|&p| self.rev_time[p as usize])
            .collect()
    }

    /// Reads every `TrafficFlowObserved` entity of the live state. Returns how many
    /// set a road's speed.
    pub fn update_speeds_from(&mut self, state: &LiveState) -> usize {
        let mut applied = 0;
        for (_, e) in state.iter() {
            applied += usize::from(self.apply_traffic(e));
        }
        applied
    }

    /// As [`Router::update_speeds_from`], for only the given slots (what changed).
    pub fn update_speeds_from_slots(&mut self, state: &LiveState, slots: &[Slot]) -> usize {
        let mut applied = 0;
        for &s in slots {
            if let Some(e) = state.entity(s) {
                applied += usize::from(self.apply_traffic(e));
            }
        }
        applied
    }

    fn apply_traffic(&mut self, e: &LiveEntity) -> bool {
        let EntityKind::TrafficFlow {
            average_speed_kmh, ..
        } = e.kind
        else {
            return false;
        };
        let ratio = e.fields.get("speedRatio").and_then(FieldValue::as_f64);
        if average_speed_kmh.is_none() && ratio.is_none() {
            return false;
        }
        let Some(road) = self.road_for(e) else {
            return false;
        };
        match (average_speed_kmh, ratio) {
            (Some(kmh), _) => self.set_road_speed(road, (kmh / 3.6) as f32),
            (None, Some(r)) => self.set_road_speed_ratio(road, r as f32),
            (None, None) => false,
        }
    }

    /// The map road a traffic entity reports on: its `road-{i}` id suffix, else its
    /// line's midpoint matched to the nearest edge (cached per entity).
    fn road_for(&mut self, e: &LiveEntity) -> Option<usize> {
        if let Some(i) =
            e.id.rsplit_once("road-")
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .filter(|&i| !self.road_positions(i).is_empty())
        {
            return Some(i);
        }
        let cache_key = (e.feed, e.id.clone());
        if let Some(hit) = self.segment_cache.get(&cache_key) {
            return hit.map(|r| r as usize);
        }
        let road = self.match_segment(e);
        self.segment_cache.insert(cache_key, road);
        road.map(|r| r as usize)
    }

    fn match_segment(&mut self, e: &LiveEntity) -> Option<u32> {
        let origin_wgs = e.position?;
        let origin_local = e.local?;
        // Offsets from the entity's own (already projected) first point: accurate to
        // centimetres over a road's length without needing the state's frame.
        let frame = GeoFrame::new(origin_wgs[0], origin_wgs[1]);
        let local: Vec<[f64; 2]> = match &e.line {
            Some(line) if !line.is_empty() => line
                .iter()
                .map(|&[lon, lat]| {
                    let [x, y] = frame.local_from_wgs84(lon, lat);
                    [origin_local[0] + x, origin_local[1] + y]
                })
                .collect(),
            _ => vec![origin_local],
        };
        let mid = midpoint(&local)?;
        let tree = self.segment_tree.get_or_insert_with(|| {
            let mut road_of = vec![0u32; self.rev_src.len()];
            for r in 0..self.road_start.len().saturating_sub(1) {
                for i in self.road_start[r] as usize..self.road_start[r + 1] as usize {
                    road_of[self.road_pos[i] as usize] = r as u32;
                }
            }
            let mut segments = Vec::with_capacity(self.rev_src.len());
            for (v, w) in self.rev_start.windows(2).enumerate() {
                let (a, b) = (w[0] as usize, w[1] as usize);
                for (&u, &road) in self.rev_src[a..b].iter().zip(&road_of[a..b]) {
                    segments.push(RoadSegment::new(
                        Line::new(self.nodes[u as usize], self.nodes[v]),
                        road,
                    ));
                }
            }
            RTree::bulk_load(segments)
        });
        let hit = tree.nearest_neighbor(&mid)?;
        (hit.distance_2(&mid) <= MAX_SEGMENT_MATCH_M * MAX_SEGMENT_MATCH_M).then_some(hit.data)
    }

    /// The `k` best available units that are `suitable` for an incident at a local
    /// point, by ETA (ties by unit index). Units that cannot reach it by road, and
    /// units not `available`, are left out. The unit index is cached between calls
    /// while the unit positions are unchanged.
    pub fn recommend(
        &self,
        incident: [f64; 2],
        units: &[Unit],
        suitable: impl Fn(&Unit) -> bool,
        k: usize,
    ) -> Vec<Recommendation> {
        let mut fresh;
        let mut guard = self.scratch.try_lock().ok();
        let scratch: &mut Scratch = match guard.as_deref_mut() {
            Some(s) => s,
            None => {
                // Another thread is searching: use a private buffer.
                fresh = Scratch::default();
                &mut fresh
            }
        };
        let index = match scratch.units.take() {
            Some(ix) if ix.matches(units) => ix,
            Some(mut ix) => {
                ix.update(self, units);
                ix
            }
            None => UnitIndex::build(self, units),
        };
        let out = self.search(scratch, incident, &index, units, &suitable, k);
        scratch.units = Some(index);
        out
    }

    /// As [`Router::recommend`] with a prebuilt [`UnitIndex`] for `units`. An index
    /// built for other positions is rebuilt for this call.
    pub fn recommend_indexed(
        &self,
        incident: [f64; 2],
        units: &[Unit],
        index: &UnitIndex,
        suitable: impl Fn(&Unit) -> bool,
        k: usize,
    ) -> Vec<Recommendation> {
        let rebuilt;
        let index = if index.len() == units.len() && index.start.len() == self.nodes.len() + 1 {
            index
        } else {
            rebuilt = UnitIndex::build(self, units);
            &rebuilt
        };
        let mut fresh;
        let mut guard = self.scratch.try_lock().ok();
        let scratch: &mut Scratch = match guard.as_deref_mut() {
            Some(s) => s,
            None => {
                fresh = Scratch::default();
                &mut fresh
            }
        };
        self.search(scratch, incident, index, units, &suitable, k)
    }

    fn search(
        &self,
        s: &mut Scratch,
        incident: [f64; 2],
        index: &UnitIndex,
        units: &[Unit],
        suitable: &dyn Fn(&Unit) -> bool,
        k: usize,
    ) -> Vec<Recommendation> {
        if k == 0 || units.is_empty() {
            return Vec::new();
        }
        let Some((target, incident_off_m)) = self.snap(incident) else {
            return Vec::new();
        };
        let n = self.nodes.len();
        s.begin(n + self.state_pos.len(), n);
        let generation = s.generation;
        // State `s`: its node, and the reverse position of the edge the route leaves
        // it by where that matters (`NONE`: a node state).
        let state = |s: usize| -> (usize, u32) {
            if s < n {
                (s, NONE)
            } else {
                let p = self.state_pos[s - n];
                (self.rev_src[p as usize] as usize, p)
            }
        };
        let t = target as usize;
        s.stamp[t] = generation;
        s.dist[t] = 0.0;
        s.next[t] = NONE;
        s.via[t] = NONE;
        s.heap.push(Reverse((key(0.0), target)));
        while let Some(Reverse((d_bits, st))) = s.heap.pop() {
            let d = f64::from_bits(d_bits);
            let si = st as usize;
            if d > s.dist(si) {
                continue; // stale entry
            }
            // Every unit still to come costs at least `d`: stop once the k-th best
            // is strictly better.
            if s.best.len() >= k && s.best.peek().is_some_and(|b| b.0 < d_bits) {
                break;
            }
            let (vi, leave) = state(si);
            // A node's units are ranked at its first (cheapest) state; without turn
            // restrictions there is one state per node.
            if self.state_pos.is_empty()
                || std::mem::replace(&mut s.seen[vi], generation) != generation
            {
                for &ui in &index.members[index.start[vi] as usize..index.start[vi + 1] as usize] {
                    let unit = &units[ui as usize];
                    if !unit.available || !suitable(unit) {
                        continue;
                    }
                    let cost = d + index.off_m[ui as usize] / OFF_ROAD_SPEED_MPS;
                    let entry = (key(cost), ui, st);
                    if s.best.len() < k {
                        s.best.push(entry);
                    } else if s.best.peek().is_some_and(|worst| entry < *worst) {
                        s.best.pop();
                        s.best.push(entry);
                    }
                }
            }
            for p in self.rev_start[vi] as usize..self.rev_start[vi + 1] as usize {
                let u = self.rev_src[p];
                if leave != NONE
                    && (self.turn_banned(p as u32, leave)
                        || (u == self.rev_dst[leave as usize] && self.sole_out[vi] == NONE))
                {
                    continue;
                }
                let su = match self.turn_state.get(p) {
                    Some(&x) if x != NONE => x as usize,
                    _ => u as usize,
                };
                let nd = d + self.rev_time[p] as f64;
                if nd < s.dist(su) {
                    s.stamp[su] = generation;
                    s.dist[su] = nd;
                    s.next[su] = st;
                    s.via[su] = p as u32;
                    s.heap.push(Reverse((key(nd), su as u32)));
                }
            }
        }
        let incident_leg_s = incident_off_m / OFF_ROAD_SPEED_MPS;
        let best = std::mem::take(&mut s.best).into_sorted_vec();
        let out = best
            .iter()
            .map(|&(cost_bits, ui, start)| {
                let mut route = vec![self.nodes[state(start as usize).0]];
                let mut length = 0.0f64;
                let mut at = start;
                while at != target {
                    let p = s.via[at as usize];
                    length += self.rev_len[p as usize] as f64;
                    at = s.next[at as usize];
                    route.push(self.nodes[state(at as usize).0]);
                }
                let unit = &units[ui as usize];
                Recommendation {
                    unit: ui as usize,
                    unit_id: unit.id.clone(),
                    eta_s: f64::from_bits(cost_bits) + incident_leg_s,
                    distance_m: length + index.off_m[ui as usize] + incident_off_m,
                    route,
                }
            })
            .collect();
        let mut reuse = best;
        reuse.clear();
        s.best = BinaryHeap::from(reuse);
        out
    }
}

impl Router {
    /// Whether the turn from the edge at reverse position `into` (arriving at a
    /// node) onto the edge at `leave` (leaving it) is banned.
    #[inline]
    fn turn_banned(&self, into: u32, leave: u32) -> bool {
        self.banned
            .binary_search(&((u64::from(leave) << 32) | u64::from(into)))
            .is_ok()
    }
}

/// The point half-way along a polyline.
fn midpoint(line: &[[f64; 2]]) -> Option<[f64; 2]> {
    let first = *line.first()?;
    let total: f64 = line
        .windows(2)
        .map(|w| (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]))
        .sum();
    if !total.is_finite() {
        return None;
    }
    let mut left = total / 2.0;
    for w in line.windows(2) {
        let l = (w[1][0] - w[0][0]).hypot(w[1][1] - w[0][1]);
        if l >= left && l > 0.0 {
            let t = left / l;
            return Some([
                w[0][0] + (w[1][0] - w[0][0]) * t,
                w[0][1] + (w[1][1] - w[0][1]) * t,
            ]);
        }
        left -= l;
    }
    Some(first)
}

/// A synthetic city road graph of about `target_edges` directed edges: a jittered
/// grid (~120 m blocks) with some links missing, a few diagonals, arterials every
/// eighth row and column, and roads that run for up to eight blocks.
pub fn synthetic_city_graph(target_edges: usize, seed: u64) -> RoadGraph {
    const SPACING: f64 = 120.0;
    const JITTER: f64 = 25.0;
    const KEEP: f64 = 0.93;
    const DIAGONAL: f64 = 0.08;
    let mut rng = crate::sim::Rng::new(seed);
    // Directed edges per node ≈ 2 × (2 × KEEP + DIAGONAL).
    let per_node = 2.0 * (2.0 * KEEP + DIAGONAL);
    let side = ((target_edges as f64 / per_node).sqrt().ceil() as usize).max(2);
    let id = |i: usize, j: usize| (j * side + i) as u32;
    let mut g = RoadGraph::default();
    for j in 0..side {
        for i in 0..side {
            g.nodes.push([
                i as f64 * SPACING + (rng.unit() - 0.5) * 2.0 * JITTER,
                j as f64 * SPACING + (rng.unit() - 0.5) * 2.0 * JITTER,
            ]);
            g.out.push(Vec::new());
        }
    }
    let link = |g: &mut RoadGraph, a: u32, b: u32, road: u32, class: RoadClass| {
        let (pa, pb) = (g.nodes[a as usize], g.nodes[b as usize]);
        let length_m = (pb[0] - pa[0]).hypot(pb[1] - pa[1]) as f32;
        for (from, to) in [(a, b), (b, a)] {
            g.out[from as usize].push(g.edges.len() as u32);
            g.edges.push(Edge {
                from,
                to,
                length_m,
                road,
                class,
                free_speed_mps: free_speed_mps(class),
            });
        }
    };
    let mut road = 0u32;
    // Rows (east-west) then columns (north-south): a new road every eight blocks.
    for horizontal in [true, false] {
        for j in 0..side {
            let class = if j % 8 == 0 {
                if horizontal {
                    RoadClass::Primary
                } else {
                    RoadClass::Secondary
                }
            } else {
                RoadClass::Residential
            };
            for i in 0..side - 1 {
                if i % 8 == 0 {
                    road += 1;
                }
                if rng.unit() < KEEP {
                    let (a, b) = if horizontal {
                        (id(i, j), id(i + 1, j))
                    } else {
                        (id(j, i), id(j, i + 1))
                    };
                    link(&mut g, a, b, road - 1, class);
                }
            }
        }
    }
    for j in 0..side - 1 {
        for i in 0..side - 1 {
            if rng.unit() < DIAGONAL {
                let (a, b) = if rng.unit() < 0.5 {
                    (id(i, j), id(i + 1, j + 1))
                } else {
                    (id(i + 1, j), id(i, j + 1))
                };
                link(&mut g, a, b, road, RoadClass::Tertiary);
                road += 1;
            }
        }
    }
    g
}

fn summary_ms(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    serde_json::json!({
        "samples": ms.len(),
        "p50_ms": crate::stats::percentile(&ms, 0.5),
        "p99_ms": crate::stats::percentile(&ms, 0.99),
        "mean_ms": mean,
        "max_ms": ms.last().copied().unwrap_or(0.0),
    })
}

/// Times unit recommendation: `units` units of mixed kinds on a synthetic city graph
/// of about `target_edges` directed edges with live speeds on 30 % of roads.
/// (a) top-5 ambulances for 200 random incidents; (b) the worst case, every unit
/// wanted so the whole graph is searched; (c) a speed update of 10 % of roads (set
/// directly, and read from a live state) followed by a re-rank.
pub fn bench_recommend(units: usize, target_edges: usize, seed: u64) -> serde_json::Value {
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let graph = synthetic_city_graph(target_edges, seed);
    let graph_ms = ms(t);
    let t = Instant::now();
    let mut router = Router::new(&graph);
    let router_ms = ms(t);
    let mut rng = crate::sim::Rng::new(seed ^ 0xD15_7A7C);
    let roads = router.road_count();
    for r in 0..roads {
        if rng.unit() < 0.3 {
            router.set_road_speed_ratio(r, (0.1 + 0.9 * rng.unit()) as f32);
        }
    }
    let kinds = [
        ("police", 0.35),
        ("ambulance", 0.25),
        ("fireEngine", 0.2),
        ("bus", 0.1),
        ("taxi", 0.1),
    ];
    let fleet: Vec<Unit> = (0..units)
        .map(|i| {
            let e = rng.below(graph.edges.len()) as u32;
            let position = graph.point_on(e, rng.unit() as f32);
            let mut x = rng.unit();
            let kind = kinds
                .iter()
                .find(|(_, w)| {
                    x -= w;
                    x < 0.0
                })
                .map_or("police", |(k, _)| k);
            Unit {
                id: format!("{kind}-{i}"),
                kind: kind.to_string(),
                position,
                available: rng.unit() < 0.9,
            }
        })
        .collect();
    let (min, max) = graph.nodes.iter().fold(
        ([f64::MAX, f64::MAX], [f64::MIN, f64::MIN]),
        |(lo, hi), p| {
            (
                [lo[0].min(p[0]), lo[1].min(p[1])],
                [hi[0].max(p[0]), hi[1].max(p[1])],
            )
        },
    );
    let incident = |rng: &mut crate::sim::Rng| {
        [
            min[0] + (max[0] - min[0]) * rng.unit(),
            min[1] + (max[1] - min[1]) * rng.unit(),
        ]
    };
    let t = Instant::now();
    let index = UnitIndex::build(&router, &fleet);
    let unit_index_ms = ms(t);
    let ambulance = |u: &Unit| u.kind == "ambulance";
    // Warm the scratch and the cached unit index.
    let _ = router.recommend(incident(&mut rng), &fleet, ambulance, 5);

    let mut top5 = Vec::new();
    let mut found = 0usize;
    for _ in 0..200 {
        let p = incident(&mut rng);
        let t = Instant::now();
        let r = router.recommend(p, &fleet, ambulance, 5);
        top5.push(ms(t));
        found += r.len();
    }
    let mut full = Vec::new();
    let mut reachable = 0usize;
    for _ in 0..20 {
        let p = incident(&mut rng);
        let t = Instant::now();
        let r = router.recommend_indexed(p, &fleet, &index, |_| true, usize::MAX);
        full.push(ms(t));
        reachable = reachable.max(r.len());
    }
    // The search alone: nothing suits, so every reachable node is settled.
    let mut exhaustive = Vec::new();
    for _ in 0..20 {
        let p = incident(&mut rng);
        let t = Instant::now();
        let r = router.recommend_indexed(p, &fleet, &index, |_| false, usize::MAX);
        exhaustive.push(ms(t));
        assert!(r.is_empty());
    }
    // Units move between calls: the cached index re-snaps only the moved ones.
    let mut moved = fleet.clone();
    let mut moved_ms = Vec::new();
    for share in [0.1, 1.0] {
        for u in moved.iter_mut() {
            if rng.unit() < share {
                u.position[0] += 5.0;
            }
        }
        let p = incident(&mut rng);
        let t = Instant::now();
        let _ = router.recommend(p, &moved, ambulance, 5);
        moved_ms.push(ms(t));
    }

    let p = incident(&mut rng);
    let before = router.recommend(p, &fleet, ambulance, 5);
    let changed_roads: Vec<usize> = (0..roads).filter(|_| rng.unit() < 0.1).collect();
    let speeds: Vec<f32> = changed_roads
        .iter()
        .map(|_| (1.0 + 14.0 * rng.unit()) as f32)
        .collect();
    let t = Instant::now();
    for (&r, &v) in changed_roads.iter().zip(&speeds) {
        router.set_road_speed(r, v);
    }
    let update_ms = ms(t);
    let t = Instant::now();
    let after = router.recommend(p, &fleet, ambulance, 5);
    let rerank_ms = ms(t);

    // The same update as traffic entities in a live state.
    let frame = GeoFrame::new(24.94, 60.17);
    let mut state = LiveState::new(frame);
    for (&r, &v) in changed_roads.iter().zip(&speeds) {
        let Some(&p) = router.road_positions(r).first() else {
            continue;
        };
        let [x, y] = router.nodes[router.rev_src[p as usize] as usize];
        state.apply(
            0,
            EntityUpdate {
                id: format!("urn:ngsi-ld:TrafficFlowObserved:road-{r}"),
                entity_type: "TrafficFlowObserved".into(),
                kind: EntityKind::TrafficFlow {
                    average_speed_kmh: Some(v as f64 * 3.6 * 0.9),
                    intensity: None,
                    occupancy: None,
                    congested: None,
                },
                position: Some(frame.wgs84_from_local(x, y)),
                line: None,
                observed_at_ms: Some(1),
                fields: Default::default(),
                units: Default::default(),
                notes: Vec::new(),
            },
            0,
        );
    }
    let t = Instant::now();
    let applied = router.update_speeds_from(&state);
    let state_update_ms = ms(t);
    let t = Instant::now();
    let _ = router.recommend(p, &fleet, ambulance, 5);
    let state_rerank_ms = ms(t);

    // The same city with banned turns (a quarter of the turns at a tenth of the
    // nodes): the search is then edge-based and U-turns are allowed at dead ends only.
    let mut restricted = graph.clone();
    let mut incoming = vec![Vec::new(); graph.nodes.len()];
    for (i, e) in graph.edges.iter().enumerate() {
        incoming[e.to as usize].push(i as u32);
    }
    for (outs, ins) in graph.out.iter().zip(&incoming) {
        if rng.unit() < 0.1 {
            for &i in ins {
                for &o in outs {
                    if graph.edge(o).to != graph.edge(i).from && rng.unit() < 0.25 {
                        restricted.banned_turns.push((i, o));
                    }
                }
            }
        }
    }
    restricted.banned_turns.sort_unstable();
    let t = Instant::now();
    let turn_router = Router::new(&restricted);
    let turn_router_ms = ms(t);
    let _ = turn_router.recommend(incident(&mut rng), &fleet, ambulance, 5);
    let (mut turn_top5, mut turn_exhaustive) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let p = incident(&mut rng);
        let t = Instant::now();
        let _ = turn_router.recommend(p, &fleet, ambulance, 5);
        turn_top5.push(ms(t));
    }
    let turn_index = UnitIndex::build(&turn_router, &fleet);
    for _ in 0..20 {
        let p = incident(&mut rng);
        let t = Instant::now();
        let _ = turn_router.recommend_indexed(p, &fleet, &turn_index, |_| false, usize::MAX);
        turn_exhaustive.push(ms(t));
    }

    let ids = |r: &[Recommendation]| r.iter().map(|x| x.unit).collect::<Vec<_>>();
    serde_json::json!({
        "turn_restricted": {
            "note": "free-flow speeds, banned turns at a tenth of the nodes: edge-based search",
            "banned_turns": restricted.banned_turns.len(),
            "router_build_ms": turn_router_ms,
            "top5_ambulance": summary_ms(turn_top5),
            "full_search_no_match": summary_ms(turn_exhaustive),
        },
        "edges": graph.edges.len(),
        "nodes": graph.nodes.len(),
        "roads": roads,
        "units": units,
        "graph_build_ms": graph_ms,
        "router_build_ms": router_ms,
        "unit_index_build_ms": unit_index_ms,
        "top5_ambulance": {
            "timing": summary_ms(top5),
            "mean_found": found as f64 / 200.0,
        },
        "full_search": {
            "note": "every unit suits and k exceeds them: all reachable units ranked, with routes",
            "timing": summary_ms(full),
            "units_reachable": reachable,
        },
        "full_search_no_match": {
            "note": "nothing suits: the whole reachable graph is searched, no routes built",
            "timing": summary_ms(exhaustive),
        },
        "top5_after_units_moved": {
            "ten_percent_moved_ms": moved_ms[0],
            "all_moved_ms": moved_ms[1],
        },
        "speed_update": {
            "roads_changed": changed_roads.len(),
            "update_ms": update_ms,
            "rerank_ms": rerank_ms,
            "ranking_changed": ids(&before) != ids(&after),
            "from_live_state": {
                "entities": state.len(),
                "applied": applied,
                "update_ms": state_update_ms,
                "rerank_ms": state_rerank_ms,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::CityMap;
    use std::collections::BTreeMap;

    /// Undirected links `(a, b, road)` at 10 m/s free flow.
    fn graph(nodes: &[[f64; 2]], links: &[(u32, u32, u32)]) -> RoadGraph {
        let mut g = RoadGraph {
            nodes: nodes.to_vec(),
            out: vec![Vec::new(); nodes.len()],
            ..Default::default()
        };
        for &(a, b, road) in links {
            for (from, to) in [(a, b), (b, a)] {
                one_way(&mut g, from, to, road);
            }
        }
        g
    }

    fn one_way(g: &mut RoadGraph, from: u32, to: u32, road: u32) {
        let (p, q) = (g.nodes[from as usize], g.nodes[to as usize]);
        g.out[from as usize].push(g.edges.len() as u32);
        g.edges.push(Edge {
            from,
            to,
            length_m: (q[0] - p[0]).hypot(q[1] - p[1]) as f32,
            road,
            class: RoadClass::Residential,
            free_speed_mps: 10.0,
        });
    }

    fn unit(id: &str, kind: &str, position: [f64; 2]) -> Unit {
        Unit {
            id: id.into(),
            kind: kind.into(),
            position,
            available: true,
        }
    }

    fn ids(r: &[Recommendation]) -> Vec<&str> {
        r.iter().map(|x| x.unit_id.as_str()).collect()
    }

    fn is(kind: &'static str) -> impl Fn(&Unit) -> bool {
        move |u: &Unit| u.kind == kind
    }

    /// Incident node 0 at the origin; A 500 m east on road 0, B 800 m north on road
    /// 1; an island (nodes 3–4, road 2) right next to the incident.
    fn cross() -> (RoadGraph, Vec<Unit>) {
        let g = graph(
            &[
                [0.0, 0.0],
                [500.0, 0.0],
                [0.0, 800.0],
                [60.0, 60.0],
                [60.0, 200.0],
            ],
            &[(0, 1, 0), (0, 2, 1), (3, 4, 2)],
        );
        let units = vec![
            unit("A", "ambulance", [500.0, 0.0]),
            unit("B", "ambulance", [0.0, 800.0]),
            unit("C", "police", [0.0, 10.0]),
            unit("D", "ambulance", [60.0, 60.0]),
        ];
        (g, units)
    }

    #[test]
    fn jammed_road_makes_the_farther_unit_faster() {
        let (g, units) = cross();
        let mut router = Router::new(&g);
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["A", "B"]);
        assert!((r[0].eta_s - 50.0).abs() < 1e-6, "{}", r[0].eta_s);
        assert!((r[1].eta_s - 80.0).abs() < 1e-6);
        assert!((r[0].distance_m - 500.0).abs() < 1e-3);
        // Jam A's road: B is now first although A is nearer.
        assert!(router.set_road_speed(0, 0.1)); // clamped to MIN_SPEED_MPS
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["B", "A"]);
        assert!((r[1].eta_s - 500.0 / MIN_SPEED_MPS as f64).abs() < 1e-3);
        // Back to free flow, back to A.
        router.reset_speeds();
        assert_eq!(
            ids(&router.recommend([0.0, 0.0], &units, is("ambulance"), 5)),
            ["A", "B"]
        );
    }

    #[test]
    fn filter_availability_and_islands() {
        let (g, mut units) = cross();
        let router = Router::new(&g);
        // The police car 10 m away is the wrong kind; D on the island cannot drive there.
        let r = router.recommend([0.0, 0.0], &units, is("police"), 5);
        assert_eq!(ids(&r), ["C"]);
        assert!((r[0].eta_s - 10.0 / OFF_ROAD_SPEED_MPS).abs() < 1e-9);
        let all = router.recommend([0.0, 0.0], &units, |_| true, 10);
        assert_eq!(ids(&all), ["C", "A", "B"]);
        // Busy units are left out.
        units[0].available = false;
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["B"]);
        // An incident on the island reaches only D.
        let r = router.recommend([60.0, 190.0], &units, |_| true, 5);
        assert_eq!(ids(&r), ["D"]);
        assert!((r[0].eta_s - (140.0 / 10.0 + 10.0 / OFF_ROAD_SPEED_MPS)).abs() < 1e-4);
        assert_eq!(r[0].route, vec![[60.0, 60.0], [60.0, 200.0]]);
        // k = 0 and no units give nothing.
        assert!(router.recommend([0.0, 0.0], &units, |_| true, 0).is_empty());
        assert!(router.recommend([0.0, 0.0], &[], |_| true, 3).is_empty());
    }

    #[test]
    fn costs_follow_directed_edges_toward_the_incident() {
        // 1 → 0 only, and 0 → 2 only: the unit at 1 can come, the one at 2 cannot.
        let mut g = graph(&[[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], &[]);
        one_way(&mut g, 1, 0, 0);
        one_way(&mut g, 0, 2, 1);
        let router = Router::new(&g);
        let units = [
            unit("in", "police", [100.0, 0.0]),
            unit("out", "police", [0.0, 100.0]),
        ];
        let r = router.recommend([0.0, 0.0], &units, |_| true, 5);
        assert_eq!(ids(&r), ["in"]);
        assert_eq!(r[0].route, vec![[100.0, 0.0], [0.0, 0.0]]);
        // From the other side, only "out"'s node is a source... of nothing: 2 has no
        // way out, so an incident at 2 is reached from 0 (and 1 via 0).
        let r = router.recommend([0.0, 100.0], &units, |_| true, 5);
        assert_eq!(ids(&r), ["out", "in"]);
        assert_eq!(r[1].route, vec![[100.0, 0.0], [0.0, 0.0], [0.0, 100.0]]);
    }

    fn fleet(g: &RoadGraph, n: usize, seed: u64) -> Vec<Unit> {
        let mut rng = crate::sim::Rng::new(seed);
        (0..n)
            .map(|i| {
                let e = rng.below(g.edges.len()) as u32;
                let kind = ["police", "ambulance", "fireEngine"][rng.below(3)];
                Unit {
                    id: format!("u{i}"),
                    kind: kind.into(),
                    position: g.point_on(e, rng.unit() as f32),
                    available: rng.unit() < 0.85,
                }
            })
            .collect()
    }

    #[test]
    fn routes_run_along_edges_from_unit_node_to_incident_node() {
        let g = synthetic_city_graph(4000, 7);
        let router = Router::new(&g);
        let units = fleet(&g, 150, 3);
        let index = UnitIndex::build(&router, &units);
        let mut rng = crate::sim::Rng::new(11);
        let mut checked = 0;
        for _ in 0..20 {
            let p = [rng.unit() * 3000.0, rng.unit() * 3000.0];
            let (target, off_i) = router.snap(p).unwrap();
            let r = router.recommend(p, &units, |_| true, 8);
            assert_eq!(r.len(), 8);
            for rec in &r {
                let from = index.node_of(rec.unit).unwrap();
                assert_eq!(rec.route[0], router.node(from));
                assert_eq!(*rec.route.last().unwrap(), router.node(target));
                let mut length = 0.0;
                for w in rec.route.windows(2) {
                    let e = g
                        .edges
                        .iter()
                        .find(|e| {
                            g.nodes[e.from as usize] == w[0] && g.nodes[e.to as usize] == w[1]
                        })
                        .unwrap_or_else(|| panic!("no edge {:?} → {:?}", w[0], w[1]));
                    length += e.length_m as f64;
                }
                let off_u = index.off_m[rec.unit];
                assert!((rec.distance_m - (length + off_u + off_i)).abs() < 1e-3);
                checked += 1;
            }
            // Sorted by ETA, k respected.
            assert!(r.windows(2).all(|w| w[0].eta_s <= w[1].eta_s));
            assert_eq!(router.recommend(p, &units, |_| true, 3).len(), 3);
        }
        assert_eq!(checked, 160);
    }

    /// Forward Dijkstra from one node over the graph with the given road speeds.
    fn forward_times(g: &RoadGraph, speed: &[Option<f32>], source: u32) -> Vec<f64> {
        let mut dist = vec![f64::INFINITY; g.nodes.len()];
        let mut heap = BinaryHeap::new();
        dist[source as usize] = 0.0;
        heap.push(Reverse((0u64, source)));
        while let Some(Reverse((bits, v))) = heap.pop() {
            let d = f64::from_bits(bits);
            if d > dist[v as usize] {
                continue;
            }
            for &e in &g.out[v as usize] {
                let e = g.edge(e);
                let v = speed[e.road as usize]
                    .unwrap_or(e.free_speed_mps)
                    .clamp(MIN_SPEED_MPS, MAX_SPEED_MPS);
                let nd = d + e.length_m as f64 / v as f64;
                if nd < dist[e.to as usize] {
                    dist[e.to as usize] = nd;
                    heap.push(Reverse((nd.to_bits(), e.to)));
                }
            }
        }
        dist
    }

    fn nearest_node_brute(g: &RoadGraph, p: [f64; 2]) -> (u32, f64) {
        let mut used = vec![false; g.nodes.len()];
        for e in &g.edges {
            used[e.from as usize] = true;
            used[e.to as usize] = true;
        }
        (0..g.nodes.len())
            .filter(|&i| used[i])
            .map(|i| {
                let q = g.nodes[i];
                (i as u32, (q[0] - p[0]).hypot(q[1] - p[1]))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
    }

    #[test]
    fn early_termination_matches_brute_force_and_full_search() {
        let g = synthetic_city_graph(3000, 5);
        let mut router = Router::new(&g);
        let mut rng = crate::sim::Rng::new(99);
        let mut speed = vec![None; router.road_count()];
        for (r, s) in speed.iter_mut().enumerate() {
            if rng.unit() < 0.4 {
                let v = (rng.unit() * 15.0) as f32; // some below the clamp
                router.set_road_speed(r, v);
                *s = Some(v);
            }
        }
        let units = fleet(&g, 250, 8);
        let snapped: Vec<(u32, f64)> = units
            .iter()
            .map(|u| nearest_node_brute(&g, u.position))
            .collect();
        // Unit → every node, forward.
        let from_unit: Vec<Vec<f64>> = snapped
            .iter()
            .map(|&(n, _)| forward_times(&g, &speed, n))
            .collect();
        let index = UnitIndex::build(&router, &units);
        let mut compared = 0;
        for round in 0..25 {
            let p = [rng.unit() * 2600.0, rng.unit() * 2600.0];
            let kind = ["police", "ambulance", "fireEngine"][round % 3];
            let k = 1 + round % 6;
            let (target, off_i) = nearest_node_brute(&g, p);
            let mut brute: Vec<(f64, usize)> = units
                .iter()
                .enumerate()
                .filter(|(_, u)| u.available && u.kind == kind)
                .map(|(i, _)| {
                    let d = from_unit[i][target as usize];
                    (
                        d + snapped[i].1 / OFF_ROAD_SPEED_MPS + off_i / OFF_ROAD_SPEED_MPS,
                        i,
                    )
                })
                .filter(|(d, _)| d.is_finite())
                .collect();
            brute.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            brute.truncate(k);
            let fast = router.recommend(p, &units, is(kind), k);
            let full: Vec<Recommendation> = router
                .recommend_indexed(p, &units, &index, is(kind), usize::MAX)
                .into_iter()
                .take(k)
                .collect();
            assert_eq!(fast, full, "round {round}");
            assert_eq!(fast.len(), brute.len(), "round {round}");
            for (f, (eta, i)) in fast.iter().zip(&brute) {
                assert!(
                    (f.eta_s - eta).abs() < 1e-2,
                    "round {round}: {} vs {eta}",
                    f.eta_s
                );
                let near_tie = brute.iter().any(|(e, j)| j != i && (e - eta).abs() < 1e-2);
                if !near_tie {
                    assert_eq!(f.unit, *i, "round {round}");
                }
                compared += 1;
            }
        }
        assert!(compared > 40, "{compared}");
    }

    fn flow(id: &str, kmh: f64, line: Vec<[f64; 2]>) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "TrafficFlowObserved".into(),
            kind: EntityKind::TrafficFlow {
                average_speed_kmh: Some(kmh),
                intensity: None,
                occupancy: None,
                congested: None,
            },
            position: line.first().copied(),
            line: Some(line),
            observed_at_ms: Some(1),
            fields: BTreeMap::new(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn live_traffic_re_ranks() {
        let (g, units) = cross();
        let mut router = Router::new(&g);
        let frame = GeoFrame::new(24.94, 60.17);
        let wgs = |i: usize| frame.wgs84_from_local(g.nodes[i][0], g.nodes[i][1]);
        let mut state = LiveState::new(frame);
        // Road 0 by its id: 5.4 km/h = 1.5 m/s.
        state.apply(
            0,
            flow(
                "urn:ngsi-ld:TrafficFlowObserved:road-0",
                5.4,
                vec![wgs(0), wgs(1)],
            ),
            0,
        );
        assert_eq!(router.update_speeds_from(&state), 1);
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["B", "A"]);
        // Road 1 by geometry only (no road id): matched by its midpoint.
        state.apply(0, flow("urn:x:sensor-7", 0.0, vec![wgs(2), wgs(0)]), 0);
        // A segment nowhere near a road is ignored.
        let far = frame.wgs84_from_local(5000.0, 5000.0);
        state.apply(0, flow("urn:x:sensor-far", 1.0, vec![far, far]), 0);
        assert_eq!(router.update_speeds_from(&state), 2);
        let t = router.road_travel_time_s(1);
        assert_eq!(t.len(), 2);
        assert!(
            t.iter().all(|&t| (t - 800.0 / MIN_SPEED_MPS).abs() < 0.5),
            "{t:?}"
        );
        assert_eq!(router.segment_cache.len(), 2);
        assert_eq!(
            router.segment_cache[&(0, "urn:x:sensor-7".to_string())],
            Some(1)
        );
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["A", "B"]);
        // Only the changed slots: road 0 clears.
        state.drain_changed();
        let mut clear = flow(
            "urn:ngsi-ld:TrafficFlowObserved:road-0",
            36.0,
            vec![wgs(0), wgs(1)],
        );
        clear.observed_at_ms = Some(2);
        state.apply(0, clear, 0);
        let changed = state.drain_changed();
        assert_eq!(router.update_speeds_from_slots(&state, &changed), 1);
        assert_eq!(router.road_travel_time_s(0), vec![50.0, 50.0]);
    }

    fn vehicle(
        id: &str,
        vehicle_type: Option<&str>,
        status: Option<&str>,
        lon: f64,
    ) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: vehicle_type.map(Into::into),
                speed_kmh: Some(20.0),
                heading_deg: None,
                service_status: status.map(Into::into),
            },
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: Some(1),
            fields: BTreeMap::new(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn units_from_live_state() {
        let frame = GeoFrame::new(24.94, 60.17);
        let mut state = LiveState::new(frame);
        let updates = [
            vehicle(
                "urn:ngsi-ld:Vehicle:police-1",
                Some("police"),
                Some("onRoute"),
                24.941,
            ),
            vehicle(
                "urn:ngsi-ld:Vehicle:ambulance-2",
                Some("ambulance"),
                Some("outOfService"),
                24.942,
            ),
            vehicle("urn:x:ft-3", Some("fireTruck"), None, 24.943),
            vehicle(
                "urn:ngsi-ld:Vehicle:bus-4",
                Some("bus"),
                Some("onRoute"),
                24.944,
            ),
            vehicle("urn:ngsi-ld:Vehicle:taxi-5", Some("taxi"), None, 24.945),
            vehicle("urn:x:unknown-6", None, None, 24.946),
            flow(
                "urn:ngsi-ld:TrafficFlowObserved:road-0",
                30.0,
                vec![[24.94, 60.17]],
            ),
        ];
        for u in updates {
            state.apply(0, u, 0);
        }
        let mut nowhere = vehicle("urn:x:ambulance-7", Some("ambulance"), None, 0.0);
        nowhere.position = None;
        state.apply(0, nowhere, 0);
        let units = units_from_state(&state);
        let got: Vec<(&str, &str, bool)> = units
            .iter()
            .map(|u| (u.id.as_str(), u.kind.as_str(), u.available))
            .collect();
        assert_eq!(
            got,
            [
                ("urn:ngsi-ld:Vehicle:police-1", "police", true),
                ("urn:ngsi-ld:Vehicle:ambulance-2", "ambulance", false),
                ("urn:x:ft-3", "fireEngine", true),
            ]
        );
        let east = frame.local_from_wgs84(24.941, 60.17);
        assert!((units[0].position[0] - east[0]).abs() < 1e-6 && east[0] > 50.0);
        assert!(status_available(Some("parked")) && !status_available(Some("on_scene")));
        assert_eq!(emergency_kind("Fire-Engine"), Some("fireEngine"));
    }

    #[test]
    fn scratch_is_reused_and_unit_index_follows_positions() {
        let (g, mut units) = cross();
        let router = Router::new(&g);
        for _ in 0..3 {
            assert_eq!(
                ids(&router.recommend([0.0, 0.0], &units, is("ambulance"), 5)),
                ["A", "B"]
            );
        }
        // A moves 30 m north of the incident: the cached index is rebuilt.
        units[0].position = [0.0, 30.0];
        let r = router.recommend([0.0, 0.0], &units, is("ambulance"), 5);
        assert_eq!(ids(&r), ["A", "B"]);
        assert!((r[0].eta_s - 30.0 / OFF_ROAD_SPEED_MPS).abs() < 1e-9); // snapped to node 0
        // Updating re-snaps moved units only and equals a fresh build.
        let mut index = UnitIndex::build(&router, &units);
        units[1].position = [0.0, 300.0];
        units.push(unit("E", "fireEngine", [400.0, 5.0]));
        assert!(!index.matches(&units));
        index.update(&router, &units);
        assert!(index.matches(&units));
        assert_eq!(index, UnitIndex::build(&router, &units));
        assert_eq!(index.node_of(4), Some(1));
        // A stale prebuilt index of the wrong size is rebuilt, not trusted.
        let stale = UnitIndex::build(&router, &units[..2]);
        let r = router.recommend_indexed([0.0, 0.0], &units, &stale, is("police"), 5);
        assert_eq!(ids(&r), ["C"]);
    }

    /// Grid point (x, y) of the turn-restriction fixtures: steps of 0.0005° east and
    /// 0.00025° north (about 28 m each) from (24.94, 60.17).
    fn lon_lat(x: i32, y: i32) -> [f64; 2] {
        [24.94 + x as f64 * 0.0005, 60.17 + y as f64 * 0.00025]
    }

    /// A relation of a fixture: id, members, tags.
    type Relation<'a> = (i64, Vec<(char, i64, &'a str)>, Vec<(&'a str, &'a str)>);

    /// A crossing C with four arms of about 55 m, and two diagonal streets (78 m)
    /// from N to W and to E; nothing else joins S to W or E:
    ///
    /// ```text
    ///             N(3)
    ///           /  │  \
    ///      NW(6)   │   NE(7)
    ///       /      │      \
    ///   W(4) ──── C(2) ──── E(5)
    ///              │
    ///             S(1)
    /// ```
    ///
    /// Ways: 100 S–C, 101 C–N, 102 C–W, 103 C–E, 104 N–NW–W, 105 N–NE–E, all
    /// two-way residential streets; plus the given relations. Going round by a
    /// diagonal (189 m from S to W) is shorter than turning back at the next junction
    /// (222 m), so a detour has one answer.
    fn crossing(relations: &[Relation]) -> CityMap {
        crossing_with(relations, false, true)
    }

    /// [`crossing`], with a shape point MID (node 8, half-way) on the northern arm
    /// 101 where `mid`, and without the diagonals 104 and 105 unless `diagonals`
    /// (then N is a dead end).
    fn crossing_with(relations: &[Relation], mid: bool, diagonals: bool) -> CityMap {
        use crate::map::pbf_fixture::Osm;
        let mut osm = Osm::new();
        let points = [
            (1, S),
            (2, C),
            (3, N),
            (4, W),
            (5, E),
            (6, NW),
            (7, NE),
            (8, MID),
        ];
        for (id, (x, y)) in points {
            let [lon, lat] = lon_lat(x, y);
            osm.node(id, lon, lat);
        }
        let street = [("highway", "residential")];
        let north: &[i64] = if mid { &[2, 8, 3] } else { &[2, 3] };
        osm.way(100, &[1, 2], &street)
            .way(101, north, &street)
            .way(102, &[2, 4], &street)
            .way(103, &[2, 5], &street);
        if diagonals {
            osm.way(104, &[3, 6, 4], &street)
                .way(105, &[3, 7, 5], &street);
        }
        for (id, members, tags) in relations {
            osm.relation(*id, members, tags);
        }
        crate::map::load_bytes(&osm.to_pbf(), crate::map::MapFormat::OsmPbf, "t", "t.pbf").unwrap()
    }

    /// The fastest route (as grid points) and its ETA for one unit at grid point
    /// `from` to an incident at grid point `to`.
    fn drive(map: &CityMap, from: (i32, i32), to: (i32, i32)) -> (Vec<(i32, i32)>, f64) {
        let router = Router::new(&RoadGraph::from_map(map));
        let at = |(x, y): (i32, i32)| {
            let [lon, lat] = lon_lat(x, y);
            map.frame.local_from_wgs84(lon, lat)
        };
        let units = [unit("u", "ambulance", at(from))];
        let r = router.recommend(at(to), &units, |_| true, 1);
        assert_eq!(r.len(), 1, "{from:?} cannot reach {to:?}");
        let grid: Vec<(i32, i32)> = r[0]
            .route
            .iter()
            .map(|p| {
                let near = [S, C, N, W, E, NW, NE, MID].into_iter().find(|&g| {
                    let q = at(g);
                    (q[0] - p[0]).hypot(q[1] - p[1]) < 0.05
                });
                near.unwrap_or_else(|| panic!("route point {p:?} is no fixture node"))
            })
            .collect();
        (grid, r[0].eta_s)
    }

    const S: (i32, i32) = (2, 0);
    const C: (i32, i32) = (2, 2);
    const N: (i32, i32) = (2, 4);
    const W: (i32, i32) = (0, 2);
    const E: (i32, i32) = (4, 2);
    const NW: (i32, i32) = (1, 3);
    const NE: (i32, i32) = (3, 3);
    const MID: (i32, i32) = (2, 3);

    fn restriction<'a>(id: i64, from: i64, to: i64, tags: &[(&'a str, &'a str)]) -> Relation<'a> {
        let mut all = vec![("type", "restriction")];
        all.extend_from_slice(tags);
        (
            id,
            vec![('w', from, "from"), ('n', 2, "via"), ('w', to, "to")],
            all,
        )
    }

    #[test]
    fn a_no_left_turn_sends_the_route_round_the_block() {
        // Without the relation, S → W turns left at C: two arms, 111 m.
        let (route, eta_direct) = drive(&crossing(&[]), S, W);
        assert_eq!(route, [S, C, W]);
        // No left turn from the southern arm into the western one: straight on to N,
        // then down the diagonal, 189 m.
        let map = crossing(&[restriction(
            900,
            100,
            102,
            &[("restriction", "no_left_turn")],
        )]);
        let (route, eta) = drive(&map, S, W);
        assert_eq!(route, [S, C, N, NW, W]);
        let longer = (2.0 + 2f64.sqrt()) / 2.0;
        assert!(
            (eta / eta_direct - longer).abs() < 0.02,
            "{eta} s vs {eta_direct} s"
        );
        // The other turns at C, and the same turn from elsewhere, are untouched.
        assert_eq!(drive(&map, S, E).0, [S, C, E]);
        assert_eq!(drive(&map, E, W).0, [E, C, W]);
        assert_eq!(drive(&map, C, W).0, [C, W]);
        // The restriction is read from the motorcar key as well.
        let map = crossing(&[restriction(
            900,
            100,
            102,
            &[("restriction:motorcar", "no_left_turn")],
        )]);
        assert_eq!(drive(&map, S, W).0, [S, C, N, NW, W]);
    }

    #[test]
    fn a_banned_turn_is_not_dodged_by_turning_back_mid_street() {
        // A shape point MID half-way up the northern arm: S → C → MID → C → W
        // (166 m) would beat going round by the diagonal (189 m), but a car cannot
        // turn round in the street there.
        let no_left = [restriction(
            900,
            100,
            102,
            &[("restriction", "no_left_turn")],
        )];
        let (direct, eta_direct) = drive(&crossing_with(&[], true, true), S, W);
        assert_eq!(direct, [S, C, W]);
        let (route, eta) = drive(&crossing_with(&no_left, true, true), S, W);
        assert_eq!(route, [S, C, MID, N, NW, W]);
        let longer = (2.0 + 2f64.sqrt()) / 2.0;
        assert!(
            (eta / eta_direct - longer).abs() < 0.02,
            "{eta} s vs {eta_direct} s"
        );
        // Without the diagonals N is a dead end, and the east arm is banned too: the
        // one way left is to turn round at N (a car can, there).
        let map = crossing_with(
            &[
                restriction(900, 100, 102, &[("restriction", "no_left_turn")]),
                restriction(901, 100, 103, &[("restriction", "no_right_turn")]),
            ],
            true,
            false,
        );
        let (route, _) = drive(&map, S, W);
        assert_eq!(route, [S, C, MID, N, MID, C, W]);
    }

    #[test]
    fn an_only_straight_on_forbids_both_turns() {
        let map = crossing(&[restriction(
            901,
            100,
            101,
            &[("restriction", "only_straight_on")],
        )]);
        assert_eq!(drive(&map, S, W).0, [S, C, N, NW, W]);
        assert_eq!(drive(&map, S, E).0, [S, C, N, NE, E]);
        assert_eq!(drive(&map, S, N).0, [S, C, N]);
        // Only traffic coming from the south is bound.
        assert_eq!(drive(&map, E, W).0, [E, C, W]);
        assert_eq!(drive(&map, W, E).0, [W, C, E]);
        assert_eq!(drive(&map, N, S).0, [N, C, S]);
        // An only_left_turn from the south: W directly, N round by the diagonal.
        let map = crossing(&[restriction(
            902,
            100,
            102,
            &[("restriction", "only_left_turn")],
        )]);
        assert_eq!(drive(&map, S, W).0, [S, C, W]);
        assert_eq!(drive(&map, S, N).0, [S, C, W, NW, N]);
    }

    #[test]
    fn a_restriction_that_excepts_emergency_vehicles_does_not_bind_responders() {
        for except in ["emergency", "psv;emergency", "bicycle; emergency"] {
            let map = crossing(&[restriction(
                900,
                100,
                102,
                &[("restriction", "no_left_turn"), ("except", except)],
            )]);
            assert_eq!(drive(&map, S, W).0, [S, C, W], "except={except}");
        }
        // Exceptions for others leave it binding; a restriction for lorries only
        // does not bind responders' cars.
        let map = crossing(&[restriction(
            900,
            100,
            102,
            &[("restriction", "no_left_turn"), ("except", "psv;bicycle")],
        )]);
        assert_eq!(drive(&map, S, W).0, [S, C, N, NW, W]);
        let map = crossing(&[restriction(
            900,
            100,
            102,
            &[("restriction:hgv", "no_left_turn")],
        )]);
        assert_eq!(drive(&map, S, W).0, [S, C, W]);
    }

    #[test]
    fn a_no_u_turn_on_one_way_through_its_via_node_still_lets_it_go_straight_on() {
        // From = to = way 104, which runs on through NW: no U-turn at NW, but
        // N → NW → W is still the way along it. No right turn from N into W at C, so
        // anything that also forbade going on along 104 would make N → W 222 m.
        // And a no-entry into the eastern arm from two ways at once.
        let map = crossing(&[
            (
                903,
                vec![('w', 104, "from"), ('n', 6, "via"), ('w', 104, "to")],
                vec![("type", "restriction"), ("restriction", "no_u_turn")],
            ),
            restriction(905, 101, 102, &[("restriction", "no_right_turn")]),
            (
                904,
                vec![
                    ('w', 100, "from"),
                    ('w', 101, "from"),
                    ('n', 2, "via"),
                    ('w', 103, "to"),
                ],
                vec![("type", "restriction"), ("restriction", "no_entry")],
            ),
        ]);
        assert_eq!(drive(&map, N, W).0, [N, NW, W]);
        assert_eq!(drive(&map, W, N).0, [W, NW, N]);
        assert_eq!(drive(&map, N, S).0, [N, C, S]);
        assert_eq!(drive(&map, S, E).0, [S, C, N, NE, E]);
        assert_eq!(drive(&map, W, E).0, [W, C, E]);
        assert_eq!(drive(&map, S, W).0, [S, C, W]);
    }

    /// Forward edge-based Dijkstra from one node at free flow: the time to reach every
    /// node without making a banned turn or turning back along the edge just driven
    /// where the node has another way on (the state is the edge just driven).
    fn forward_times_with_turns(g: &RoadGraph, source: u32) -> Vec<f64> {
        let time = |e: u32| {
            let e = g.edge(e);
            edge_time(e.length_m, e.free_speed_mps) as f64
        };
        let mut at_edge = vec![f64::INFINITY; g.edges.len()];
        let mut heap = BinaryHeap::new();
        for &e in &g.out[source as usize] {
            if time(e) < at_edge[e as usize] {
                at_edge[e as usize] = time(e);
                heap.push(Reverse((time(e).to_bits(), e)));
            }
        }
        while let Some(Reverse((bits, e))) = heap.pop() {
            let d = f64::from_bits(bits);
            if d > at_edge[e as usize] {
                continue;
            }
            let v = g.edge(e).to as usize;
            let dead_end = g.out[v].iter().all(|&o| g.edge(o).to == g.edge(e).from);
            for &o in &g.out[v] {
                let nd = d + time(o);
                let u_turn = g.edge(o).to == g.edge(e).from && !dead_end;
                if !g.turn_banned(e, o) && !u_turn && nd < at_edge[o as usize] {
                    at_edge[o as usize] = nd;
                    heap.push(Reverse((nd.to_bits(), o)));
                }
            }
        }
        let mut at_node = vec![f64::INFINITY; g.nodes.len()];
        at_node[source as usize] = 0.0;
        for (e, &d) in at_edge.iter().enumerate() {
            let to = g.edges[e].to as usize;
            at_node[to] = at_node[to].min(d);
        }
        at_node
    }

    #[test]
    fn turn_restricted_search_matches_an_edge_based_brute_force() {
        let mut g = synthetic_city_graph(3000, 5);
        let free = Router::new(&g);
        // Ban 40 % of the turns (U-turns included) at a third of the nodes.
        let mut rng = crate::sim::Rng::new(21);
        let mut incoming = vec![Vec::new(); g.nodes.len()];
        for (id, e) in g.edges.iter().enumerate() {
            incoming[e.to as usize].push(id as u32);
        }
        for (v, ins) in incoming.iter().enumerate() {
            if rng.unit() < 0.33 {
                for &i in ins {
                    for &o in &g.out[v] {
                        if rng.unit() < 0.4 {
                            g.banned_turns.push((i, o));
                        }
                    }
                }
            }
        }
        g.banned_turns.sort_unstable();
        assert!(g.banned_turns.len() > 500, "{}", g.banned_turns.len());
        let router = Router::new(&g);
        let units = fleet(&g, 200, 4);
        let snapped: Vec<(u32, f64)> = units
            .iter()
            .map(|u| nearest_node_brute(&g, u.position))
            .collect();
        let from_unit: Vec<Vec<f64>> = snapped
            .iter()
            .map(|&(n, _)| forward_times_with_turns(&g, n))
            .collect();
        let (mut compared, mut detoured) = (0, 0);
        for round in 0..30 {
            let p = [rng.unit() * 2600.0, rng.unit() * 2600.0];
            let (target, off_i) = nearest_node_brute(&g, p);
            let all = router.recommend(p, &units, |_| true, usize::MAX);
            let mut brute: Vec<(f64, usize)> = units
                .iter()
                .enumerate()
                .filter(|(i, u)| u.available && from_unit[*i][target as usize].is_finite())
                .map(|(i, _)| {
                    let d = from_unit[i][target as usize];
                    (d + (snapped[i].1 + off_i) / OFF_ROAD_SPEED_MPS, i)
                })
                .collect();
            brute.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            assert_eq!(all.len(), brute.len(), "round {round}");
            let without = free.recommend(p, &units, |_| true, usize::MAX);
            for r in &all {
                let eta = brute.iter().find(|b| b.1 == r.unit).unwrap().0;
                assert!(
                    (r.eta_s - eta).abs() < 1e-6,
                    "round {round}: {} vs {eta}",
                    r.eta_s
                );
                // The route drives edges in turn without a banned turn, in the ETA's time.
                let edges: Vec<Vec<u32>> = r
                    .route
                    .windows(2)
                    .map(|w| {
                        (0..g.edges.len() as u32)
                            .filter(|&e| {
                                let e = g.edge(e);
                                g.nodes[e.from as usize] == w[0] && g.nodes[e.to as usize] == w[1]
                            })
                            .collect()
                    })
                    .collect();
                assert!(edges.iter().all(|e| !e.is_empty()), "round {round}");
                assert!(
                    edges.windows(2).all(|w| w[0]
                        .iter()
                        .any(|&i| w[1].iter().any(|&o| !g.turn_banned(i, o)))),
                    "round {round}: a banned turn on {:?}",
                    r.route
                );
                let fastest = without.iter().find(|x| x.unit == r.unit);
                if fastest.is_none_or(|x| x.eta_s < r.eta_s - 1e-6) {
                    detoured += 1;
                }
                compared += 1;
            }
            // Stopping early gives the same first units.
            let k = 1 + round % 6;
            let fast = router.recommend(p, &units, |_| true, k);
            assert_eq!(fast[..], all[..k.min(all.len())], "round {round}");
        }
        assert!(compared > 3000, "{compared}");
        assert!(detoured > compared / 10, "{detoured} of {compared}");
    }

    #[test]
    fn default_city_routes_obey_its_turn_restrictions() {
        let map = crate::map::load_default().unwrap();
        assert!(
            map.turn_restrictions.len() >= 40,
            "{}",
            map.turn_restrictions.len()
        );
        let g = RoadGraph::from_map(&map);
        assert!(g.banned_turns.len() >= 40, "{}", g.banned_turns.len());
        let router = Router::new(&g);
        let free = Router::new(&RoadGraph {
            banned_turns: Vec::new(),
            ..g.clone()
        });
        // From just before each banned turn to just after it: the route never makes
        // it, and often takes longer than it would if the turn were allowed.
        let (mut checked, mut longer) = (0, 0);
        for &(i, o) in &g.banned_turns {
            let (a, b) = (g.edge(i).from, g.edge(o).to);
            if a == b {
                continue; // a U-turn: there already
            }
            let (a, v, b) = (
                g.nodes[a as usize],
                g.nodes[g.edge(i).to as usize],
                g.nodes[b as usize],
            );
            let units = [unit("u", "ambulance", a)];
            let with = router.recommend(b, &units, |_| true, 1);
            let without = free.recommend(b, &units, |_| true, 1);
            assert!(
                with.first()
                    .is_none_or(|r| !r.route.windows(3).any(|w| w == [a, v, b])),
                "a banned turn driven at {v:?}"
            );
            let eta = |r: &[Recommendation]| r.first().map_or(f64::INFINITY, |r| r.eta_s);
            assert!(eta(&with) >= eta(&without) - 1e-9);
            longer += usize::from(eta(&with) > eta(&without) + 1.0);
            checked += 1;
        }
        assert!(checked >= 30, "{checked}");
        assert!(longer >= checked / 2, "{longer} of {checked}");
    }

    #[test]
    fn bench_reports_its_figures() {
        let v = bench_recommend(300, 4000, 2);
        assert!(v["edges"].as_u64().unwrap() > 3000, "{v}");
        assert_eq!(v["units"], 300);
        assert!(
            v["top5_ambulance"]["mean_found"].as_f64().unwrap() > 4.0,
            "{v}"
        );
        assert!(
            v["full_search"]["units_reachable"].as_u64().unwrap() > 200,
            "{v}"
        );
        assert!(
            v["turn_restricted"]["banned_turns"].as_u64().unwrap() > 100,
            "{v}"
        );
        assert_eq!(v["turn_restricted"]["top5_ambulance"]["samples"], 200);
        assert!(
            v["speed_update"]["from_live_state"]["applied"]
                .as_u64()
                .unwrap()
                > 0
        );
    }

    /// `cargo test --release --lib dispatch::recommend -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_recommend_10k_units_200k_edges() {
        let v = bench_recommend(10_000, 200_000, 1);
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    }
}
