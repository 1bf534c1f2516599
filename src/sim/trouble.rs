//! Trouble the simulated sub-brains play, as real cities' feeds do, so the data
//! steward's tools have something to show: a feed late now and then, a short outage,
//! an implausible reading, a second department's monitors drifting from the
//! authoritative stations. Every schedule is a pure function of the seed, the time
//! the simulator started (`origin_ms`) and the time asked about: the same seed plays
//! the same trouble at the same moments of a run, within minutes of its start.

use crate::model::{EntityKind, EntityUpdate, FieldValue};

use super::hash_unit;

/// A late episode comes once in every this long.
pub const LATE_EVERY_MS: i64 = 6 * 60_000;
/// An outage comes once in every this long.
pub const OUTAGE_EVERY_MS: i64 = 20 * 60_000;
/// How long an outage lasts.
pub const OUTAGE_MS: i64 = 60_000;
/// An implausible reading comes once in every this long, and lasts `GLITCH_MS`.
pub const GLITCH_EVERY_MS: i64 = 3 * 60_000;
pub const GLITCH_MS: i64 = 10_000;
/// The AQI a glitching station reads (the valid range ends at 500).
pub const GLITCH_AQI: f64 = 999.0;
/// The second department's monitors: every `DRIFT_STATIONS_EVERY`th station from 1.
pub const DRIFT_STATIONS_EVERY: usize = 3;
/// How far a monitor stands from its station, metres east.
pub const DRIFT_OFFSET_M: f64 = 15.0;
/// The largest share a monitor reads high, and the period of its drift.
pub const DRIFT_MAX: f64 = 0.30;
pub const DRIFT_PERIOD_MS: i64 = 40 * 60_000;

/// An episode of trouble: `[start_ms, end_ms)`.
pub type Episode = (i64, i64);

/// The `k`th period's episode of a schedule: it starts `offset_ms` plus up to
/// `spread_ms` into the period and lasts `length_ms` plus up to `extra_ms`.
fn episode(
    seed: u64,
    origin_ms: i64,
    salt: u64,
    every_ms: i64,
    k: i64,
    (offset_ms, spread_ms): (i64, i64),
    (length_ms, extra_ms): (i64, i64),
) -> Episode {
    let a = hash_unit(seed ^ salt, 2 * k as u64);
    let b = hash_unit(seed ^ salt, 2 * k as u64 + 1);
    let start = origin_ms + k * every_ms + offset_ms + (a * spread_ms as f64) as i64;
    (start, start + length_ms + (b * extra_ms as f64) as i64)
}

/// Whether `now_ms` falls in the episode of its period.
fn within(now_ms: i64, origin_ms: i64, every_ms: i64, episode: impl Fn(i64) -> Episode) -> bool {
    if now_ms < origin_ms {
        return false;
    }
    let (start, end) = episode((now_ms - origin_ms) / every_ms);
    (start..end).contains(&now_ms)
}

/// The `k`th late episode: 20–40 s, starting 1–3 minutes into its 6-minute period.
pub fn late_episode(seed: u64, origin_ms: i64, k: i64) -> Episode {
    episode(
        seed,
        origin_ms,
        0x1a7e,
        LATE_EVERY_MS,
        k,
        (60_000, 120_000),
        (20_000, 20_000),
    )
}

/// Whether a late feed holds its data back at `now_ms`.
pub fn is_late(seed: u64, origin_ms: i64, now_ms: i64) -> bool {
    within(now_ms, origin_ms, LATE_EVERY_MS, |k| {
        late_episode(seed, origin_ms, k)
    })
}

/// The `k`th outage: 60 s, starting 4–5 minutes into its 20-minute period.
pub fn outage_episode(seed: u64, origin_ms: i64, k: i64) -> Episode {
    episode(
        seed,
        origin_ms,
        0x0a7a,
        OUTAGE_EVERY_MS,
        k,
        (4 * 60_000, 60_000),
        (OUTAGE_MS, 0),
    )
}

/// Whether a feed with outages is dark at `now_ms`.
pub fn is_out(seed: u64, origin_ms: i64, now_ms: i64) -> bool {
    within(now_ms, origin_ms, OUTAGE_EVERY_MS, |k| {
        outage_episode(seed, origin_ms, k)
    })
}

/// The `k`th glitch: 10 s, starting 30 s to 2.5 minutes into its 3-minute period.
pub fn glitch_episode(seed: u64, origin_ms: i64, k: i64) -> Episode {
    episode(
        seed,
        origin_ms,
        0x6117,
        GLITCH_EVERY_MS,
        k,
        (30_000, 120_000),
        (GLITCH_MS, 0),
    )
}

/// Whether station `i` is one the second department also watches.
pub fn is_drift_station(i: usize) -> bool {
    i % DRIFT_STATIONS_EVERY == 1
}

/// The station (by index, among `stations`) that glitches at `now_ms`, if one does:
/// never one the second department watches, so each story stays its own.
pub fn glitching_station(seed: u64, origin_ms: i64, now_ms: i64, stations: usize) -> Option<usize> {
    let own: Vec<usize> = (0..stations).filter(|&i| !is_drift_station(i)).collect();
    if own.is_empty()
        || !within(now_ms, origin_ms, GLITCH_EVERY_MS, |k| {
            glitch_episode(seed, origin_ms, k)
        })
    {
        return None;
    }
    let k = (now_ms - origin_ms) / GLITCH_EVERY_MS;
    let pick = (hash_unit(seed ^ 0x57a7, k as u64) * own.len() as f64) as usize;
    own.get(pick).copied()
}

/// The index of a simulated air-quality station from its id.
fn station_index(id: &str) -> Option<usize> {
    id.strip_prefix("urn:ngsi-ld:AirQualityObserved:station-")?
        .parse()
        .ok()
}

/// `updates` (an ecology snapshot) with the glitching station, if any, reading an
/// AQI of [`GLITCH_AQI`].
pub fn glitch(
    mut updates: Vec<EntityUpdate>,
    seed: u64,
    origin_ms: i64,
    now_ms: i64,
) -> Vec<EntityUpdate> {
    let stations = updates
        .iter()
        .filter(|u| station_index(&u.id).is_some())
        .count();
    let Some(bad) = glitching_station(seed, origin_ms, now_ms, stations) else {
        return updates;
    };
    for u in &mut updates {
        if station_index(&u.id) == Some(bad)
            && let EntityKind::AirQuality { aqi, .. } = &mut u.kind
        {
            *aqi = Some(GLITCH_AQI);
            u.fields
                .insert("airQualityIndex".into(), FieldValue::Number(GLITCH_AQI));
        }
    }
    updates
}

/// How high station `i`'s second monitor reads at `now_ms`, as a share (0 to
/// [`DRIFT_MAX`]): a slow swing, each monitor at its own phase.
pub fn drift(i: usize, origin_ms: i64, now_ms: i64) -> f64 {
    let turn = (now_ms - origin_ms) as f64 / DRIFT_PERIOD_MS as f64;
    let phase = i as f64 * 1.3;
    DRIFT_MAX * (0.5 + 0.5 * (std::f64::consts::TAU * turn + phase).sin())
}

/// The second department's view of an ecology snapshot: its monitors at every third
/// air-quality station, [`DRIFT_OFFSET_M`] east of it under an id of its own, reading
/// the station's values raised by [`drift`].
pub fn second_department(
    snapshot: &[EntityUpdate],
    origin_ms: i64,
    now_ms: i64,
) -> Vec<EntityUpdate> {
    snapshot
        .iter()
        .filter_map(|u| {
            let i = station_index(&u.id).filter(|&i| is_drift_station(i))?;
            let factor = 1.0 + drift(i, origin_ms, now_ms);
            let raise = |v: Option<f64>| v.map(|v| (v * factor).round());
            let mut m = u.clone();
            m.id = format!("urn:ngsi-ld:AirQualityObserved:district-monitor-{i}");
            if let Some([lon, lat]) = m.position {
                let east_deg = DRIFT_OFFSET_M / (111_320.0 * lat.to_radians().cos());
                m.position = Some([lon + east_deg, lat]);
            }
            if let EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            } = &mut m.kind
            {
                (*aqi, *pm25, *pm10, *no2, *o3) = (
                    raise(*aqi),
                    raise(*pm25),
                    raise(*pm10),
                    raise(*no2),
                    raise(*o3),
                );
            }
            for (field, value) in &mut m.fields {
                match (field.as_str(), value) {
                    ("airQualityIndex" | "pm25", FieldValue::Number(n)) => {
                        *n = (*n * factor).round()
                    }
                    ("name", FieldValue::Text(name)) => {
                        *name = format!("{name} (district monitor)")
                    }
                    _ => {}
                }
            }
            Some(m)
        })
        .collect()
}
