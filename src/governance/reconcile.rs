//! One data, one source: entities that several feeds report (the same id, or the same
//! type within a few metres) are linked; for each field the authoritative feed wins and
//! the others are compared with it; disagreements beyond a tolerance are conflicts,
//! listed with both values, their sources and ages.

use std::collections::HashMap;

use serde::Serialize;

use crate::feeds::config::FeedConfig;
use crate::feeds::{EntityKind, FieldValue};
use crate::state::{LiveEntity, LiveState, Slot};

/// Entities of the same type closer than this are the same real-world thing.
pub const LINK_DISTANCE_M: f64 = 30.0;
/// Values disagree when they differ by more than this share (or 0.5 absolute, for small
/// values).
pub const RELATIVE_TOLERANCE: f64 = 0.10;

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

fn disagree(a: f64, b: f64) -> bool {
    (a - b).abs() > (RELATIVE_TOLERANCE * a.abs().max(b.abs())).max(0.5)
}

/// Links and compares what several feeds report about the same things, as of `now_ms`.
pub fn reconcile(state: &LiveState, feeds: &[FeedConfig], now_ms: i64) -> Reconciliation {
    let mut result = Reconciliation {
        feed_index: feeds
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i as u32))
            .collect(),
        ..Default::default()
    };
    // Only types that more than one feed reports can conflict.
    let mut feeds_by_type: HashMap<&str, Vec<u32>> = HashMap::new();
    for (_, e) in state.iter() {
        let list = feeds_by_type.entry(e.entity_type.as_str()).or_default();
        if !list.contains(&e.feed) {
            list.push(e.feed);
        }
    }
    let shared: std::collections::HashSet<&str> = feeds_by_type
        .iter()
        .filter(|(_, f)| f.len() > 1)
        .map(|(t, _)| *t)
        .collect();
    if shared.is_empty() {
        return result;
    }
    let name = |feed: u32| {
        feeds
            .get(feed as usize)
            .map_or_else(|| format!("feed {feed}"), |f| f.name.clone())
    };
    let age = |e: &LiveEntity| {
        (now_ms - e.observed_at_ms.unwrap_or(e.received_at_ms)).max(0) as f64 / 1000.0
    };
    let rank = |e: &LiveEntity, field: Option<&str>| {
        feeds
            .get(e.feed as usize)
            .is_some_and(|f| is_authoritative(f, &e.entity_type, field))
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
    let mut by_id: HashMap<(&str, &str), Vec<Slot>> = HashMap::new();
    for (slot, e) in state.iter() {
        if shared.contains(e.entity_type.as_str()) {
            by_id
                .entry((e.entity_type.as_str(), e.id.as_str()))
                .or_default()
                .push(slot);
        }
    }
    let mut pairs: Vec<(Slot, Slot)> = Vec::new();
    for slots in by_id.values() {
        for (i, &a) in slots.iter().enumerate() {
            for &b in &slots[i + 1..] {
                pairs.push((a, b));
            }
        }
    }
    // Proximity links: same type, different feed, different id, within LINK_DISTANCE_M.
    // Only for things that stay put (stations, car parks, facilities): moving units
    // pass each other all the time and are linked by id alone.
    for (slot, e) in state.iter() {
        if !shared.contains(e.entity_type.as_str()) || matches!(e.kind, EntityKind::Vehicle { .. })
        {
            continue;
        }
        let Some([x, y]) = e.local else { continue };
        for other in state.within(x, y, LINK_DISTANCE_M) {
            if other <= slot {
                continue;
            }
            let Some(o) = state.entity(other) else {
                continue;
            };
            if o.feed != e.feed && o.entity_type == e.entity_type && o.id != e.id {
                pairs.push((slot, other));
            }
        }
    }
    for (a, b) in pairs {
        let (Some(ea), Some(eb)) = (state.entity(a), state.entity(b)) else {
            continue;
        };
        if ea.feed == eb.feed {
            continue;
        }
        result.links += 1;
        // The authoritative source wins; without one, the fresher observation.
        let a_wins = match (rank(ea, None), rank(eb, None)) {
            (true, false) => true,
            (false, true) => false,
            _ => age(ea) <= age(eb),
        };
        let (win, lose, win_slot, lose_slot) = if a_wins {
            (ea, eb, a, b)
        } else {
            (eb, ea, b, a)
        };
        result.winner_of.insert(lose_slot, win_slot);
        let theirs = numbers(lose);
        for (field, value) in numbers(win) {
            let Some((_, other)) = theirs.iter().find(|(f, _)| *f == field) else {
                continue;
            };
            // A field-level authority overrides the entity-level choice for that field.
            let (w, l, wv, lv) = if field_rank(lose, field) > field_rank(win, field) {
                (lose, win, *other, value)
            } else {
                (win, lose, value, *other)
            };
            if disagree(wv, lv) {
                result.conflict_count += 1;
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
                    },
                    other: SourcedValue {
                        feed: name(l.feed),
                        id: l.id.clone(),
                        value: lv,
                        age_s: age(l),
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

    #[test]
    fn one_source_means_nothing_to_reconcile() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, station("a", 24.94, 40.0, 10.0), 0);
        state.apply(0, station("b", 24.94, 90.0, 10.0), 0);
        let r = reconcile(&state, &feeds(), 0);
        assert_eq!((r.links, r.conflicts.len()), (0, 0));
    }
}
