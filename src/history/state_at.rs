//! `zhongshu state-at`: the city as it stood at an instant, as one JSON object.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::Snapshot;
use crate::clock::rfc3339_from_unix_ms;
use crate::dispatch::book::Book;
use crate::geo_frame::GeoFrame;
use crate::state::LiveState;
use crate::state::kpi::CityKpis;

/// The live state a snapshot stands for (for the figures computed from it).
pub fn live_state(snap: &Snapshot, frame: GeoFrame) -> LiveState {
    let mut state = LiveState::new(frame);
    for e in snap.entities.values() {
        state.apply(e.feed, e.update.clone(), e.at_ms);
    }
    state
}

/// The city's figures at each of `instants` the recording covers: an instant before
/// it starts, or a minute or more after it ends, has none (the city was not recorded
/// then). Damaged segments met are returned, once each, to be said.
pub fn kpis_at(
    history: &super::History,
    frame: GeoFrame,
    instants: &[i64],
) -> (Vec<(i64, CityKpis)>, Vec<String>) {
    let mut figures = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    // An instant that cannot be read at all: the first said, the rest counted.
    let (mut unreadable, mut first_error) = (0usize, None);
    for &at_ms in instants {
        if at_ms < history.first_ms() {
            continue;
        }
        let snap = match history.state_at(at_ms) {
            Ok(snap) => snap,
            Err(e) => {
                unreadable += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                continue;
            }
        };
        for p in &snap.problems {
            if !problems.contains(p) {
                problems.push(p.clone());
            }
        }
        if snap.after_the_end().is_some() || snap.data_until_ms.is_none() {
            continue;
        }
        let state = live_state(&snap, frame);
        figures.push((at_ms, CityKpis::compute(&state, &HashMap::new(), at_ms)));
    }
    if let Some(e) = first_error {
        problems.push(if unreadable > 1 {
            format!("{e} (and at {} more instants)", unreadable - 1)
        } else {
            e
        });
    }
    (figures, problems)
}

/// The KPIs as they were (each thing counted from the one snapshot).
pub fn kpis_json(state: &LiveState, at_ms: i64) -> Value {
    let k = CityKpis::compute(state, &HashMap::new(), at_ms);
    json!({
        "mean_road_speed_kmh": k.mean_road_speed_kmh,
        "congestion_index": k.congestion_index,
        "mean_aqi": k.mean_aqi,
        "max_aqi": k.max_aqi,
        "open_alerts": k.open_alerts,
        "hospital_load": k.hospital_load,
        "vehicles": k.vehicles,
    })
}

/// Open incidents and every order by status, from a book rebuilt up to the instant.
pub fn dispatch_json(book: &Book) -> Value {
    let open: Vec<Value> = book
        .incidents
        .iter()
        .filter(|i| i.is_open())
        .map(|i| {
            json!({
                "id": i.id,
                "kind": i.kind,
                "title": i.title,
                "domain": i.domain.as_str(),
                "severity": i.severity,
                "status": i.status,
                "lon": i.lon,
                "lat": i.lat,
                "reported": rfc3339_from_unix_ms(i.reported_ms),
                "orders": i.orders.len(),
            })
        })
        .collect();
    let mut by_status: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for o in &book.orders {
        let status = serde_json::to_value(o.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        by_status.entry(status).or_default().push(json!({
            "id": o.id,
            "incident": o.incident,
            "department": o.department,
            "issued": rfc3339_from_unix_ms(o.issued_ms),
            "deadline": rfc3339_from_unix_ms(o.deadline_ms),
        }));
    }
    json!({
        "incidents_total": book.incidents.len(),
        "open_incidents": open,
        "orders_by_status": by_status,
    })
}

/// The whole answer of `state-at`.
pub fn state_json(snap: &Snapshot, frame: GeoFrame, dispatch: Value) -> Value {
    let mut feeds: Vec<Value> = Vec::new();
    let names: HashMap<u32, (&str, &str)> = snap
        .feeds
        .iter()
        .map(|f| (f.id, (f.name.as_str(), f.domain.as_str())))
        .collect();
    let mut by_feed: BTreeMap<u32, Vec<Value>> = BTreeMap::new();
    for e in snap.entities.values() {
        by_feed.entry(e.feed).or_default().push(json!({
            "id": e.update.id,
            "type": e.update.entity_type,
            "position": e.update.position,
            "observed_at": e.update.observed_at_ms.map(rfc3339_from_unix_ms),
            "taken_in": rfc3339_from_unix_ms(e.at_ms),
            "fields": e.update.fields,
        }));
    }
    let mut ids: Vec<u32> = snap.feeds.iter().map(|f| f.id).collect();
    ids.extend(by_feed.keys().copied());
    ids.extend(snap.health.keys().copied());
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        let (name, domain) = names.get(&id).copied().unwrap_or(("", ""));
        let entities = by_feed.remove(&id).unwrap_or_default();
        feeds.push(json!({
            "feed": name,
            "id": id,
            "domain": domain,
            "entities": entities.len(),
            "health": snap.health.get(&id).map(|h| h["health"].clone()),
            "health_since": snap.health.get(&id).and_then(|h| h["at_ms"].as_i64()).map(rfc3339_from_unix_ms),
            "items": entities,
        }));
    }
    let state = live_state(snap, frame);
    json!({
        "at": rfc3339_from_unix_ms(snap.at_ms),
        "at_ms": snap.at_ms,
        "history": {
            "segment": snap.segment.as_ref().map(|p| p.display().to_string()),
            "keyframe": snap.keyframe_ms.map(rfc3339_from_unix_ms),
            "records_after_keyframe": snap.records,
            "data_until": snap.data_until_ms.map(rfc3339_from_unix_ms),
            "after_the_end": snap.after_the_end(),
            "problems": snap.problems,
        },
        "entities": snap.entities.len(),
        "feeds": feeds,
        "kpis": kpis_json(&state, snap.at_ms),
        "dispatch": dispatch,
    })
}
