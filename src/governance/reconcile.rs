//! One data, one source: entities that several feeds report are linked, by id within
//! their type, or for things that stay put by position (points within a few metres,
//! lines lying along each other), one to one, closest pair first. For each field the
//! authoritative feed wins and the others are compared with it, within a tolerance
//! per field in the field's unit; disagreements are conflicts, listed with both
//! values, their units, sources and ages. Values in different units (`unitCode`) are
//! a conflict of their own, never compared as numbers. Lists and texts are not
//! compared. Quarantined feeds take no part.

use std::collections::{HashMap, HashSet};

use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{RTree, RTreeObject};
use serde::Serialize;

use crate::feeds::config::FeedConfig;
use crate::feeds::{EntityKind, FieldValue};
use crate::geo_frame::GeoFrame;
use crate::state::sweep::{Budget, Sweep};
use crate::state::{LiveEntity, LiveState, Slot, Standing};

/// Things of the same type closer than this are the same real-world thing (points:
/// apart; lines: every point of each within this of the other).
pub const LINK_DISTANCE_M: f64 = 30.0;
/// Neighbours looked at per entity when linking by position, at most. When this many
/// crowd within [`LINK_DISTANCE_M`] the place is ambiguous (a thousand car parks at
/// one default geocode) and nothing there is linked by position: the cost stays
/// bounded and no arbitrary pairs are made.
pub const MAX_NEIGHBOURS: usize = 32;
/// Candidates from other feeds kept per entity, closest first.
pub const MAX_CANDIDATES: usize = 4;
/// Default relative tolerance (share of the authoritative value).
pub const RELATIVE_TOLERANCE: f64 = 0.10;

/// How far a value may differ from the authoritative one before it is a conflict:
/// the larger of `relative` × |authoritative value| and `absolute` (in `unit`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
    pub unit: &'static str,
}

/// The tolerance of a field (Smart Data Models names and units).
pub fn tolerance(field: &str) -> Tolerance {
    let t = |relative, absolute, unit| Tolerance {
        relative,
        absolute,
        unit,
    };
    match field {
        "airQualityIndex" => t(0.10, 5.0, "index points"),
        "pm25" | "pm10" | "no2" | "o3" | "so2" | "co" => t(0.10, 2.0, "µg/m³"),
        "averageVehicleSpeed" | "speed" => t(0.10, 2.0, "km/h"),
        "intensity" => t(0.10, 10.0, "vehicles/h"),
        "occupancy" => t(0.10, 0.02, "fraction 0..1"),
        "availableSpotNumber" => t(0.05, 2.0, "spaces"),
        "totalSpotNumber" | "bedsTotal" | "bedsOccupied" => t(0.0, 0.5, "count"),
        "heading" => t(0.0, 15.0, "degrees"),
        "temperature" => t(0.0, 1.0, "°C"),
        "relativeHumidity" => t(0.0, 0.05, "fraction 0..1"),
        _ => t(RELATIVE_TOLERANCE, 1e-9, "as reported"),
    }
}

/// Whether `other` disagrees with the authoritative `winner` beyond the field's
/// tolerance.
pub fn disagree(field: &str, winner: f64, other: f64) -> bool {
    let t = tolerance(field);
    (other - winner).abs() > (t.relative * winner.abs()).max(t.absolute)
}

/// One field two sources disagree on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    pub entity_type: String,
    pub field: String,
    /// The winning (authoritative) source: feed name, entity id, value, age in seconds.
    pub winner: SourcedValue,
    pub other: SourcedValue,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourcedValue {
    pub feed: String,
    pub id: String,
    pub value: f64,
    pub age_s: f64,
    /// The value's UN/CEFACT unit code when the source gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl SourcedValue {
    /// The value with its unit, as an operator reads it (`0.02 ppm`).
    pub fn shown(&self) -> String {
        crate::model::value_with_unit(&FieldValue::Number(self.value), self.unit.as_deref())
    }
}

/// Conflicts listed in full at most; beyond that they are only counted.
pub const MAX_LISTED_CONFLICTS: usize = 1000;

/// The outcome of one reconciliation pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reconciliation {
    /// Pairs of entities linked across feeds.
    pub links: usize,
    /// The first [`MAX_LISTED_CONFLICTS`] conflicts, in full.
    pub conflicts: Vec<Conflict>,
    /// All conflicts.
    pub conflict_count: usize,
    /// Conflicts per feed (as winner or loser), by feed index.
    #[serde(skip)]
    pub conflicts_by_feed: HashMap<u32, usize>,
    #[serde(skip)]
    feed_index: HashMap<String, u32>,
    /// For each slot reported by more than one feed, the slot whose values win.
    #[serde(skip)]
    pub winner_of: HashMap<Slot, Slot>,
    /// Slots whose values another source contradicts (the losing side of a conflict):
    /// drawn magenta on the map. Worked out with the pass, off the frame.
    #[serde(skip)]
    pub contradicted: HashSet<Slot>,
}

impl Reconciliation {
    /// Conflicts a feed is part of (as winner or loser).
    pub fn conflicts_for(&self, feed: &str) -> usize {
        self.feed_index
            .get(feed)
            .and_then(|i| self.conflicts_by_feed.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// Whether `feed` is the single source of truth for `entity_type` (or `Type.field`).
pub fn is_authoritative(feed: &FeedConfig, entity_type: &str, field: Option<&str>) -> bool {
    feed.authoritative_for.iter().any(|a| {
        a == entity_type || field.is_some_and(|f| a.split_once('.') == Some((entity_type, f)))
    })
}

/// Numeric values of an entity: its fields, then typed values not among them.
fn numbers(e: &LiveEntity) -> Vec<(&str, f64)> {
    let mut out: Vec<(&str, f64)> = e
        .fields
        .iter()
        .filter_map(|(k, v)| match v {
            FieldValue::Number(n) => Some((k.as_str(), *n)),
            _ => None,
        })
        .collect();
    // Moving units are compared by their fields only (speed and heading change by
    // the second and differ between any two sources).
    if !matches!(e.kind, EntityKind::Vehicle { .. }) {
        for (k, v) in e.kind.numbers() {
            if let Some(v) = v
                && !out.iter().any(|(n, _)| *n == k)
            {
                out.push((k, v));
            }
        }
    }
    out
}

/// Fields that tell apart things sharing one place (two lanes at one detector).
const DISTINGUISHING_FIELDS: [&str; 3] = ["laneId", "laneDirection", "level"];

fn distinguishable(a: &LiveEntity, b: &LiveEntity) -> bool {
    DISTINGUISHING_FIELDS
        .iter()
        .any(|f| matches!((a.fields.get(*f), b.fields.get(*f)), (Some(x), Some(y)) if x != y))
}

/// Whether an entity's observation time is its own (not its receive time).
fn timed(e: &LiveEntity) -> bool {
    e.observed_at_ms == Some(e.as_of_ms)
}

/// Whether `a` is fresher than or as fresh as `b`: by observation times when both
/// have them, else by receive times; never one against the other.
fn fresher(a: &LiveEntity, b: &LiveEntity) -> bool {
    if timed(a) && timed(b) {
        a.as_of_ms >= b.as_of_ms
    } else {
        a.received_at_ms >= b.received_at_ms
    }
}

/// Distance from `p` to the segment `a`–`b`, local metres.
fn point_segment_m(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (x, y) = (a[0] + t * dx - p[0], a[1] + t * dy - p[1]);
    (x * x + y * y).sqrt()
}

fn point_line_m(p: [f64; 2], line: &[[f64; 2]]) -> f64 {
    match line {
        [] => f64::INFINITY,
        [only] => point_segment_m(p, *only, *only),
        _ => line
            .windows(2)
            .map(|w| point_segment_m(p, w[0], w[1]))
            .fold(f64::INFINITY, f64::min),
    }
}

/// How far apart two lines lie: the largest distance from a vertex or midpoint of
/// one to the other line, both ways (a discrete Hausdorff distance). Two crossing
/// streets that share a node are far apart by this; one road drawn twice, in either
/// direction, is close.
pub fn line_distance_m(a: &[[f64; 2]], b: &[[f64; 2]]) -> f64 {
    let one_way = |from: &[[f64; 2]], to: &[[f64; 2]]| {
        let mids = from
            .windows(2)
            .map(|w| [(w[0][0] + w[1][0]) / 2.0, (w[0][1] + w[1][1]) / 2.0]);
        from.iter()
            .copied()
            .chain(mids)
            .map(|p| point_line_m(p, to))
            .fold(0.0, f64::max)
    };
    one_way(a, b).max(one_way(b, a))
}

/// A linkable thing's geometry in local metres.
enum Shape {
    Point([f64; 2]),
    Line(Vec<[f64; 2]>),
}

fn envelope(line: &[[f64; 2]], grow: f64) -> Rectangle<[f64; 2]> {
    let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
    for p in line {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    Rectangle::from_corners([lo[0] - grow, lo[1] - grow], [hi[0] + grow, hi[1] + grow])
}

/// What a reconciliation pass needs of the live state: the usable entities of the
/// types more than one feed reports, copied, so the pass can run off the frame thread
/// (slots are never reused, so its answer still points at the right entities).
#[derive(Clone, Debug)]
pub struct ReconcileInput {
    entities: Vec<(Slot, LiveEntity)>,
    frame: GeoFrame,
}

impl ReconcileInput {
    /// Copies what the pass needs at `now_ms`; quarantined feeds take no part. Cheap
    /// where no type is shared (the copy is of shared types only).
    pub fn from_state(state: &LiveState, now_ms: i64) -> Self {
        let mut copy = ReconcileCopy::new(now_ms);
        loop {
            if let Some(input) = copy.step(state, Budget::ALL) {
                return input;
            }
        }
    }

    /// Entities copied.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }
}

/// [`ReconcileInput::from_state`] a frame's share at a time: copying 150,000 shared
/// entities is tens of milliseconds, more than a frame can spare, so the frame takes
/// a step of it each frame (first which types more than one feed reports, then the
/// copy of those) and starts the pass when the copy is whole. Entities changed during
/// the copy are taken as they stood when their slot was reached.
#[derive(Debug)]
pub struct ReconcileCopy {
    now_ms: i64,
    sweep: Sweep,
    /// Which feeds report each type (first phase), or the shared types and the copy
    /// so far (second).
    phase: CopyPhase,
}

#[derive(Debug)]
enum CopyPhase {
    /// Per type: the feeds reporting it, and its usable entities.
    Types(HashMap<String, (Vec<u32>, usize)>),
    Copy(HashSet<String>, Vec<(Slot, LiveEntity)>),
}

impl ReconcileCopy {
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            sweep: Sweep::new(),
            phase: CopyPhase::Types(HashMap::new()),
        }
    }

    /// The time the pass is for.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Goes on within `budget`; the input once the copy is whole.
    pub fn step(&mut self, state: &LiveState, budget: Budget) -> Option<ReconcileInput> {
        let now_ms = self.now_ms;
        let usable = |e: &LiveEntity| state.standing(e, now_ms) != Standing::Quarantined;
        match &mut self.phase {
            CopyPhase::Types(feeds_by_type) => {
                let done = self.sweep.step(state, budget, |_, e| {
                    if !usable(e) {
                        return;
                    }
                    match feeds_by_type.get_mut(e.entity_type.as_str()) {
                        Some((list, n)) => {
                            *n += 1;
                            if !list.contains(&e.feed) {
                                list.push(e.feed);
                            }
                        }
                        None => {
                            feeds_by_type.insert(e.entity_type.clone(), (vec![e.feed], 1));
                        }
                    }
                });
                if !done {
                    return None;
                }
                let mut copies = 0;
                let shared: HashSet<String> = std::mem::take(feeds_by_type)
                    .into_iter()
                    .filter(|(_, (f, _))| f.len() > 1)
                    .map(|(t, (_, n))| {
                        copies += n;
                        t
                    })
                    .collect();
                if shared.is_empty() {
                    return Some(ReconcileInput {
                        entities: Vec::new(),
                        frame: *state.frame(),
                    });
                }
                // The copy covers the slots the count did, so the room is enough.
                self.sweep = Sweep::up_to(self.sweep.end().unwrap_or(0));
                // Room for the whole copy now: growing it later would move what
                // was copied, all in one frame.
                self.phase = CopyPhase::Copy(shared, Vec::with_capacity(copies));
                None
            }
            CopyPhase::Copy(shared, entities) => {
                let done = self.sweep.step(state, budget, |slot, e| {
                    if shared.contains(e.entity_type.as_str()) && usable(e) {
                        entities.push((slot, e.clone()));
                    }
                });
                done.then(|| ReconcileInput {
                    entities: std::mem::take(entities),
                    frame: *state.frame(),
                })
            }
        }
    }
}

/// Links and compares what several feeds report about the same things, as of `now_ms`.
pub fn reconcile(state: &LiveState, feeds: &[FeedConfig], now_ms: i64) -> Reconciliation {
    reconcile_input(&ReconcileInput::from_state(state, now_ms), feeds, now_ms)
}

/// [`reconcile`] on a copy of the state, on any thread.
pub fn reconcile_input(
    input: &ReconcileInput,
    feeds: &[FeedConfig],
    now_ms: i64,
) -> Reconciliation {
    let mut result = Reconciliation {
        feed_index: feeds
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i as u32))
            .collect(),
        ..Default::default()
    };
    if input.entities.is_empty() {
        return result;
    }
    let name = |feed: u32| {
        feeds
            .get(feed as usize)
            .map_or_else(|| format!("feed {feed}"), |f| f.name.clone())
    };
    let age = |e: &LiveEntity| (now_ms - e.as_of_ms).max(0) as f64 / 1000.0;
    let rank = |e: &LiveEntity| {
        feeds
            .get(e.feed as usize)
            .is_some_and(|f| is_authoritative(f, &e.entity_type, None))
    };
    // 2: authoritative for this very field, 1: for the whole type, 0: not at all.
    let field_rank = |e: &LiveEntity, field: &str| {
        let Some(f) = feeds.get(e.feed as usize) else {
            return 0;
        };
        let exact = f
            .authoritative_for
            .iter()
            .any(|a| a.split_once('.') == Some((e.entity_type.as_str(), field)));
        if exact {
            2
        } else if f.authoritative_for.contains(&e.entity_type) {
            1
        } else {
            0
        }
    };
    // The authoritative source wins; without one, the fresher.
    let wins = |a: &LiveEntity, b: &LiveEntity| match (rank(a), rank(b)) {
        (true, false) => true,
        (false, true) => false,
        _ => fresher(a, b),
    };
    let all = &input.entities;
    // Links by id, scoped by type: each other report of the thing points at the best.
    let mut by_id: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, (_, e)) in all.iter().enumerate() {
        by_id
            .entry((e.entity_type.as_str(), e.id.as_str()))
            .or_default()
            .push(i);
    }
    // (winner, loser), as indices into `all`.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut linked: HashSet<usize> = HashSet::new();
    for group in by_id.values().filter(|g| g.len() > 1) {
        let best = group
            .iter()
            .copied()
            .reduce(|a, b| if wins(&all[a].1, &all[b].1) { a } else { b })
            .expect("at least two entities");
        for &other in group {
            if other != best && all[other].1.feed != all[best].1.feed {
                pairs.push((best, other));
                linked.insert(best);
                linked.insert(other);
            }
        }
    }
    // Links by position, for things that stay put (stations, car parks, road
    // segments): moving units pass each other all the time and are linked by id only.
    let stationary: Vec<(usize, Shape)> = all
        .iter()
        .enumerate()
        .filter(|(i, (_, e))| !matches!(e.kind, EntityKind::Vehicle { .. }) && !linked.contains(i))
        .filter_map(|(i, (_, e))| {
            let local = |[lon, lat]: [f64; 2]| input.frame.local_from_wgs84(lon, lat);
            let shape = match (&e.line, e.position) {
                (Some(line), _) if line.len() >= 2 => {
                    Shape::Line(line.iter().copied().map(local).collect())
                }
                (_, Some(p)) => Shape::Point(local(p)),
                _ => return None,
            };
            Some((i, shape))
        })
        .collect();
    let point_index: RTree<GeomWithData<[f64; 2], usize>> = RTree::bulk_load(
        stationary
            .iter()
            .enumerate()
            .filter_map(|(k, (_, shape))| match shape {
                Shape::Point(p) => Some(GeomWithData::new(*p, k)),
                Shape::Line(_) => None,
            })
            .collect(),
    );
    let line_index: RTree<GeomWithData<Rectangle<[f64; 2]>, usize>> = RTree::bulk_load(
        stationary
            .iter()
            .enumerate()
            .filter_map(|(k, (_, shape))| match shape {
                Shape::Line(l) => Some(GeomWithData::new(envelope(l, 0.0), k)),
                Shape::Point(_) => None,
            })
            .collect(),
    );
    let mut near: Vec<(f64, usize, usize)> = Vec::new();
    for (k, (i, shape)) in stationary.iter().enumerate() {
        let e = &all[*i].1;
        let same_kind = |o: &LiveEntity| {
            o.feed != e.feed && o.entity_type == e.entity_type && !distinguishable(e, o)
        };
        let mut found: Vec<(f64, usize)> = Vec::new();
        match shape {
            Shape::Point(p) => {
                let hits: Vec<_> = point_index
                    .nearest_neighbor_iter_with_distance_2(p)
                    .take(MAX_NEIGHBOURS)
                    .take_while(|hit| hit.1.sqrt() <= LINK_DISTANCE_M)
                    .collect();
                if hits.len() == MAX_NEIGHBOURS {
                    continue; // a crowd: ambiguous
                }
                for (hit, d2) in hits {
                    let j = stationary[hit.data].0;
                    if same_kind(&all[j].1) {
                        found.push((d2.sqrt(), j));
                    }
                }
            }
            Shape::Line(line) => {
                let query = envelope(line, LINK_DISTANCE_M).envelope();
                let hits: Vec<_> = line_index
                    .locate_in_envelope_intersecting(&query)
                    .take(MAX_NEIGHBOURS)
                    .collect();
                if hits.len() == MAX_NEIGHBOURS {
                    continue; // a crowd: ambiguous
                }
                for hit in hits {
                    let (j, Shape::Line(other_line)) = &stationary[hit.data] else {
                        continue;
                    };
                    if hit.data == k || !same_kind(&all[*j].1) {
                        continue;
                    }
                    let d = line_distance_m(line, other_line);
                    if d <= LINK_DISTANCE_M {
                        found.push((d, *j));
                    }
                }
            }
        }
        found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        near.extend(
            found
                .into_iter()
                .take(MAX_CANDIDATES)
                .map(|(d, j)| (d, (*i).min(j), (*i).max(j))),
        );
    }
    // One to one, closest pair first: each thing has at most one twin per other feed.
    near.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    near.dedup_by(|a, b| (a.1, a.2) == (b.1, b.2));
    let mut matched: HashSet<(usize, u32)> = HashSet::new();
    for (_, a, b) in near {
        let (ea, eb) = (&all[a].1, &all[b].1);
        if matched.contains(&(a, eb.feed)) || matched.contains(&(b, ea.feed)) {
            continue;
        }
        matched.insert((a, eb.feed));
        matched.insert((b, ea.feed));
        pairs.push(if wins(ea, eb) { (a, b) } else { (b, a) });
    }
    for (w_i, l_i) in pairs {
        let ((win_slot, win), (lose_slot, lose)) = (&all[w_i], &all[l_i]);
        result.links += 1;
        result.winner_of.insert(*lose_slot, *win_slot);
        let theirs = numbers(lose);
        for (field, value) in numbers(win) {
            let Some((_, other)) = theirs.iter().find(|(f, _)| *f == field) else {
                continue;
            };
            // A field-level authority overrides the entity-level choice for that field.
            let (w, l, wv, lv, l_slot) = if field_rank(lose, field) > field_rank(win, field) {
                (lose, win, *other, value, *win_slot)
            } else {
                (win, lose, value, *other, *lose_slot)
            };
            let unit = |e: &LiveEntity| e.units.get(field).cloned();
            let (w_unit, l_unit) = (unit(w), unit(l));
            // Values in different units are never compared as numbers (38.5 µg/m³ and
            // 0.02 ppm may be the same air): the units themselves disagree. A value
            // without a unit is taken to be in the model's unit.
            let units_differ = matches!((&w_unit, &l_unit), (Some(a), Some(b)) if a != b);
            if units_differ || disagree(field, wv, lv) {
                result.conflict_count += 1;
                result.contradicted.insert(l_slot);
                *result.conflicts_by_feed.entry(w.feed).or_default() += 1;
                *result.conflicts_by_feed.entry(l.feed).or_default() += 1;
                if result.conflicts.len() >= MAX_LISTED_CONFLICTS {
                    continue;
                }
                result.conflicts.push(Conflict {
                    entity_type: w.entity_type.clone(),
                    field: field.to_string(),
                    winner: SourcedValue {
                        feed: name(w.feed),
                        id: w.id.clone(),
                        value: wv,
                        age_s: age(w),
                        unit: w_unit,
                    },
                    other: SourcedValue {
                        feed: name(l.feed),
                        id: l.id.clone(),
                        value: lv,
                        age_s: age(l),
                        unit: l_unit,
                    },
                });
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::EntityUpdate;
    use crate::feeds::config::parse_feeds;
    use crate::geo_frame::GeoFrame;

    fn station(id: &str, lon: f64, aqi: f64, pm25: f64) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "AirQualityObserved".into(),
            kind: EntityKind::AirQuality {
                aqi: Some(aqi),
                pm25: Some(pm25),
                pm10: None,
                no2: None,
                o3: None,
            },
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: Some(1000),
            fields: Default::default(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn feeds() -> Vec<FeedConfig> {
        parse_feeds(
            "[[feed]]\nname='eco-bureau'\nkind='sim'\ndomain='ecology'\nauthoritative_for=['AirQualityObserved']\n\
             [[feed]]\nname='district-sensors'\nkind='sim'\ndomain='ecology'\n",
        )
        .unwrap()
    }

    #[test]
    fn the_authoritative_source_wins_and_disagreements_are_listed() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // Same id in both feeds: AQI disagrees, pm25 agrees within tolerance.
        state.apply(0, station("st-1", 24.940, 40.0, 20.0), 0);
        state.apply(1, station("st-1", 24.940, 95.0, 21.0), 0);
        // Different ids 10 m apart: the same station; pm25 disagrees.
        state.apply(0, station("st-2", 24.950, 50.0, 10.0), 0);
        state.apply(1, station("sensor-77", 24.95018, 52.0, 30.0), 0);
        // Far apart: not linked.
        state.apply(1, station("st-9", 24.990, 300.0, 300.0), 0);
        let r = reconcile(&state, &feeds(), 5000);
        assert_eq!(r.links, 2);
        assert_eq!(r.conflicts.len(), 2, "{:#?}", r.conflicts);
        let aqi = r
            .conflicts
            .iter()
            .find(|c| c.field == "airQualityIndex")
            .unwrap();
        assert_eq!(
            (aqi.winner.feed.as_str(), aqi.winner.value),
            ("eco-bureau", 40.0)
        );
        assert_eq!(
            (aqi.other.feed.as_str(), aqi.other.value),
            ("district-sensors", 95.0)
        );
        assert_eq!(aqi.winner.age_s, 4.0);
        let pm = r.conflicts.iter().find(|c| c.field == "pm25").unwrap();
        assert_eq!(pm.other.id, "sensor-77");
        assert_eq!(r.conflicts_for("district-sensors"), 2);
        // The loser's slot points at the winner.
        assert_eq!(r.winner_of.get(&1), Some(&0));
        // The contradicted: st-1 and sensor-77 of the district (slots 1 and 3).
        let mut contradicted: Vec<Slot> = r.contradicted.iter().copied().collect();
        contradicted.sort();
        assert_eq!(contradicted, vec![1, 3]);

        // Copied a few slots a frame, the pass finds the same.
        let mut copy = ReconcileCopy::new(5000);
        let mut steps = 1;
        let input = loop {
            match copy.step(&state, Budget::slots(2)) {
                Some(input) => break input,
                None => steps += 1,
            }
        };
        // Three steps for the types, three for the copy and one to see the end.
        assert!(steps >= 6, "{steps}");
        assert_eq!(input.len(), 5);
        let stepped = reconcile_input(&input, &feeds(), 5000);
        assert_eq!(
            (stepped.links, stepped.conflict_count, &stepped.winner_of),
            (r.links, r.conflict_count, &r.winner_of)
        );
    }

    #[test]
    fn values_in_different_units_are_a_conflict_never_compared() {
        let with_no2 = |id: &str, lon: f64, no2: f64, unit: Option<&str>| {
            let mut update = station(id, lon, 40.0, 10.0);
            update.fields.insert("NO2".into(), FieldValue::Number(no2));
            if let Some(unit) = unit {
                update.units.insert("NO2".into(), unit.into());
            }
            update
        };
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // 38.5 µg/m³ against 0.02 ppm: about the same air, numbers far apart.
        state.apply(0, with_no2("a", 24.940, 38.5, Some("GQ")), 0);
        state.apply(1, with_no2("a", 24.940, 0.02, Some("59")), 0);
        // 38.5 µg/m³ against 38.5 ppm: the same number, not the same air.
        state.apply(0, with_no2("b", 24.950, 38.5, Some("GQ")), 0);
        state.apply(1, with_no2("b", 24.950, 38.5, Some("59")), 0);
        // Same unit, same value; one without a unit is read in the model's unit.
        state.apply(0, with_no2("c", 24.960, 38.5, Some("GQ")), 0);
        state.apply(1, with_no2("c", 24.960, 38.6, None), 0);
        let r = reconcile(&state, &feeds(), 1000);
        let mut found: Vec<_> = r
            .conflicts
            .iter()
            .map(|c| {
                (
                    c.winner.id.as_str(),
                    c.field.as_str(),
                    c.winner.unit.as_deref(),
                    c.other.unit.as_deref(),
                )
            })
            .collect();
        // Pairs linked by id come in no particular order.
        found.sort();
        assert_eq!(
            found,
            [
                ("a", "NO2", Some("GQ"), Some("59")),
                ("b", "NO2", Some("GQ"), Some("59"))
            ]
        );
        let a = r.conflicts.iter().find(|c| c.winner.id == "a").unwrap();
        assert_eq!(a.other.shown(), "0.02 ppm");
        assert_eq!(a.winner.shown(), "38.5 µg/m³");
    }

    #[test]
    fn field_level_authority_overrides() {
        let mut f = feeds();
        f[0].authoritative_for = vec!["AirQualityObserved".into()];
        f[1].authoritative_for = vec!["AirQualityObserved.pm25".into()];
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, station("x", 24.94, 40.0, 10.0), 0);
        state.apply(1, station("x", 24.94, 40.0, 50.0), 0);
        let r = reconcile(&state, &f, 1000);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].winner.feed, "district-sensors");
    }

    fn lane(id: &str, lon: f64, lane: Option<f64>, speed: f64) -> EntityUpdate {
        let mut fields = std::collections::BTreeMap::new();
        if let Some(l) = lane {
            fields.insert("laneId".to_string(), FieldValue::Number(l));
        }
        EntityUpdate {
            id: id.into(),
            entity_type: "TrafficFlowObserved".into(),
            kind: EntityKind::TrafficFlow {
                average_speed_kmh: Some(speed),
                intensity: None,
                occupancy: None,
                congested: None,
            },
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: Some(1000),
            fields,
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn street(id: &str, line: Vec<[f64; 2]>, speed: f64) -> EntityUpdate {
        EntityUpdate {
            position: Some(line[0]),
            line: Some(line),
            ..lane(id, 0.0, None, speed)
        }
    }

    fn twins(r: &Reconciliation, state: &LiveState) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = r
            .winner_of
            .iter()
            .map(|(l, w)| {
                (
                    state.entity(*w).unwrap().id.clone(),
                    state.entity(*l).unwrap().id.clone(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn proximity_links_are_one_to_one_and_lanes_stay_apart() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // Two lanes at one detector, reported by both feeds under their own ids.
        state.apply(0, lane("det-5-l1", 24.94, Some(1.0), 50.0), 0);
        state.apply(0, lane("det-5-l2", 24.94, Some(2.0), 20.0), 0);
        state.apply(1, lane("B:5:2", 24.94, Some(2.0), 21.0), 0);
        state.apply(1, lane("B:5:1", 24.94, Some(1.0), 49.0), 0);
        let r = reconcile(&state, &feeds(), 5000);
        assert_eq!(r.links, 2);
        assert_eq!(
            twins(&r, &state),
            vec![
                ("det-5-l1".to_string(), "B:5:1".to_string()),
                ("det-5-l2".to_string(), "B:5:2".to_string())
            ]
        );
        assert_eq!(r.conflict_count, 0, "{:?}", r.conflicts);
        // Without lane ids, still one twin each: the closest first.
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, lane("a1", 24.94, None, 50.0), 0);
        state.apply(0, lane("a2", 24.94005, None, 20.0), 0);
        state.apply(1, lane("b2", 24.94006, None, 20.0), 0);
        state.apply(1, lane("b1", 24.94001, None, 50.0), 0);
        let r = reconcile(&state, &feeds(), 5000);
        assert_eq!(r.links, 2);
        assert_eq!(
            twins(&r, &state),
            vec![
                ("a1".to_string(), "b1".to_string()),
                ("a2".to_string(), "b2".to_string())
            ]
        );
    }

    #[test]
    fn lines_are_compared_as_lines() {
        let node = [24.94, 60.17];
        let north = vec![node, [24.94, 60.172]];
        let east = vec![node, [24.944, 60.17]];
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // Crossing streets that start at one node are different streets.
        state.apply(0, street("north-st", north.clone(), 30.0), 0);
        state.apply(1, street("east-st", east, 30.0), 0);
        assert_eq!(reconcile(&state, &feeds(), 5000).links, 0);
        // The same street drawn the other way round, a few metres off, is the same.
        let back: Vec<[f64; 2]> = north.iter().rev().map(|[x, y]| [x + 5e-5, *y]).collect();
        state.apply(1, street("north-st-reversed", back, 60.0), 0);
        let r = reconcile(&state, &feeds(), 5000);
        assert_eq!(r.links, 1);
        assert_eq!(r.conflicts[0].field, "averageVehicleSpeed");
        assert!(line_distance_m(&[[0.0, 0.0], [0.0, 200.0]], &[[0.0, 0.0], [200.0, 0.0]]) > 100.0);
    }

    #[test]
    fn many_things_at_one_place_make_a_bounded_number_of_links() {
        // A thousand car parks per feed at one default geocode.
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        for feed in [0, 1] {
            for i in 0..1000 {
                state.apply(
                    feed,
                    EntityUpdate {
                        id: format!("{feed}-park-{i}"),
                        entity_type: "OffStreetParking".into(),
                        kind: EntityKind::Parking {
                            available_spots: Some(i as f64),
                            total_spots: None,
                            status: None,
                        },
                        position: Some([24.94, 60.17]),
                        line: None,
                        observed_at_ms: Some(1000),
                        fields: Default::default(),
                        units: Default::default(),
                        notes: Vec::new(),
                    },
                    0,
                );
            }
        }
        let r = reconcile(&state, &feeds(), 5000);
        assert_eq!(
            r.links, 0,
            "a crowd at one place is no evidence of one thing"
        );
        assert_eq!(r.conflict_count, 0);
        // A few at one place are paired one to one.
        let mut few = LiveState::new(GeoFrame::new(24.94, 60.17));
        for (_, e) in state.iter().filter(|(_, e)| {
            e.id.ends_with("-park-1") || e.id.ends_with("-park-2") || e.id.ends_with("-park-3")
        }) {
            few.apply(e.feed, e.to_update(), 0);
        }
        assert_eq!(few.len(), 6);
        assert_eq!(reconcile(&few, &feeds(), 5000).links, 3);
    }

    #[test]
    fn tolerance_is_per_field_and_relative_to_the_authority() {
        assert!(
            disagree("occupancy", 0.05, 0.50),
            "fractions have their own floor"
        );
        assert!(!disagree("occupancy", 0.50, 0.51));
        assert!(disagree("airQualityIndex", 100.0, 111.0));
        assert!(!disagree("airQualityIndex", 100.0, 109.0));
        // Relative to the authoritative value, not to the larger of the two.
        assert!(disagree("airQualityIndex", 100.0, 89.0));
        assert!(
            !disagree("airQualityIndex", 10.0, 14.0),
            "5 index points at least"
        );
        assert_eq!(tolerance("averageVehicleSpeed").unit, "km/h");
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let mut occ = |feed, v| {
            let mut u = lane("seg", 24.94, None, 30.0);
            u.kind = EntityKind::TrafficFlow {
                average_speed_kmh: Some(30.0),
                intensity: None,
                occupancy: Some(v),
                congested: None,
            };
            state.apply(feed, u, 0);
        };
        occ(0, 0.05);
        occ(1, 0.50);
        let mut f = feeds();
        f[0].authoritative_for = vec!["TrafficFlowObserved".into()];
        let r = reconcile(&state, &f, 5000);
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].field, "occupancy");
    }

    #[test]
    fn fresher_compares_like_with_like_and_quarantine_takes_no_part() {
        let untimed = |id: &str, aqi| EntityUpdate {
            observed_at_ms: None,
            ..station(id, 24.94, aqi, 10.0)
        };
        let t = 1_795_946_400_000;
        let mut f = feeds();
        f[0].authoritative_for.clear();
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // A GeoJSON feed without times, received first; then an NGSI-LD reading
        // observed two seconds before that but received after it.
        state.apply(0, untimed("st", 40.0), t);
        state.apply(
            1,
            EntityUpdate {
                observed_at_ms: Some(t - 2000),
                ..station("st", 24.94, 90.0, 10.0)
            },
            t + 1000,
        );
        let r = reconcile(&state, &f, t + 2000);
        assert_eq!(r.conflicts[0].winner.feed, "district-sensors");
        // A quarantined feed's entities are not reconciled.
        state.set_feed_standing(
            1,
            crate::state::FeedStanding {
                stale_after_ms: None,
                quarantined: true,
            },
        );
        let r = reconcile(&state, &f, t + 2000);
        assert_eq!((r.links, r.conflict_count), (0, 0));
    }

    #[test]
    fn one_source_means_nothing_to_reconcile() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, station("a", 24.94, 40.0, 10.0), 0);
        state.apply(0, station("b", 24.94, 90.0, 10.0), 0);
        let r = reconcile(&state, &feeds(), 0);
        assert_eq!((r.links, r.conflicts.len()), (0, 0));
    }
}
