//! City KPIs for the strip across the top of the wall, computed from the live state.
//!
//! Each real-world thing counts once: an entity a more authoritative (or fresher)
//! source also reports is left to that source (the reconciliation's `winner_of`, passed
//! in by the caller). Stale entities and quarantined feeds are left out, and counted in
//! [`Excluded`] so the strip can say so. The definitions, with units, are in the
//! README ("KPIs").

use std::collections::HashMap;

use crate::model::{EntityKind, FieldValue};

use super::sweep::{Budget, Sweep};
use super::{LiveEntity, LiveState, Slot, Standing};

/// A segment moving at under this share of its free-flow speed is congested.
pub const CONGESTED_SPEED_RATIO: f64 = 0.4;
/// Without a flag or a free-flow speed: a detector occupied more than this share of
/// the time marks congestion.
pub const CONGESTED_OCCUPANCY: f64 = 0.3;
/// Without a flag, a free-flow speed or occupancy: traffic slower than this, km/h.
pub const CONGESTED_SPEED_KMH: f64 = 15.0;

/// What the figures leave out, by reason (entities).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Excluded {
    /// Values older than their feed's stale limit.
    pub stale: usize,
    /// From a quarantined feed.
    pub quarantined: usize,
    /// Reported by another, winning source, counted there.
    pub duplicates: usize,
    /// Readings outside their scale (an AQI beyond 0–500: a sensor glitch the quality
    /// rules flag), which would otherwise lead the worst-of figures.
    pub implausible: usize,
}

/// The AQI scale; a reading outside it is left out of the figures.
pub const AQI_SCALE: std::ops::RangeInclusive<f64> = 0.0..=500.0;

impl Excluded {
    pub fn is_empty(&self) -> bool {
        *self == Excluded::default()
    }
}

/// The headline figures, each `None` when no feed reports the data behind it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CityKpis {
    /// Mean reported road speed weighted by segment length, km/h.
    pub mean_road_speed_kmh: Option<f64>,
    /// Share of reported road length congested (0..1).
    pub congestion_index: Option<f64>,
    /// Mean and worst AQI over the stations.
    pub mean_aqi: Option<f64>,
    pub max_aqi: Option<f64>,
    /// Alerts not resolved.
    pub open_alerts: usize,
    /// Occupied share of hospital beds (0..1).
    pub hospital_load: Option<f64>,
    /// Vehicles and units on the map.
    pub vehicles: usize,
    /// What was left out of all the above.
    pub excluded: Excluded,
}

fn mean(sum: f64, n: f64) -> Option<f64> {
    (n > 0.0).then(|| sum / n)
}

/// Great-circle length of a WGS84 line, metres.
pub fn line_length_m(line: &[[f64; 2]]) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_000.0;
    line.windows(2)
        .map(|w| {
            let ([lon1, lat1], [lon2, lat2]) = (w[0], w[1]);
            let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
            let dp = p2 - p1;
            let dl = (lon2 - lon1).to_radians();
            let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
            2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
        })
        .sum()
}

fn number(e: &LiveEntity, field: &str) -> Option<f64> {
    e.fields.get(field).and_then(FieldValue::as_f64)
}

/// Whether a road segment is congested, by the first rule its data allows: the
/// source's `congested` flag; speed under 40 % of free flow (`speedRatio`, or the
/// speed over `freeFlowSpeed`); detector occupancy over 30 %; speed under 15 km/h.
/// `None` when the segment reports none of these.
pub fn is_congested(e: &LiveEntity) -> Option<bool> {
    let EntityKind::TrafficFlow {
        average_speed_kmh,
        occupancy,
        congested,
        ..
    } = &e.kind
    else {
        return None;
    };
    if let Some(c) = congested {
        return Some(*c);
    }
    let free_flow_ratio = number(e, "speedRatio").or_else(|| {
        let free = number(e, "freeFlowSpeed").filter(|f| *f > 0.0)?;
        Some((*average_speed_kmh)? / free)
    });
    if let Some(r) = free_flow_ratio {
        return Some(r < CONGESTED_SPEED_RATIO);
    }
    if let Some(o) = occupancy {
        return Some(*o > CONGESTED_OCCUPANCY);
    }
    average_speed_kmh.map(|v| v < CONGESTED_SPEED_KMH)
}

impl CityKpis {
    /// The figures at `now_ms`, each thing once: `superseded` maps an entity another
    /// source also reports to the winning one (reconciliation's `winner_of`).
    pub fn compute(state: &LiveState, superseded: &HashMap<Slot, Slot>, now_ms: i64) -> Self {
        let mut pass = KpiPass::new(now_ms);
        loop {
            if let Some(kpis) = pass.step(state, superseded, Budget::ALL) {
                return kpis;
            }
        }
    }
}

/// [`CityKpis::compute`] a frame's share at a time: a whole-city pass at 150,000
/// entities is several milliseconds, so the frame takes a step of it each frame and
/// shows the figures when the pass is done.
#[derive(Debug)]
pub struct KpiPass {
    now_ms: i64,
    sweep: Sweep,
    kpis: CityKpis,
    /// Road segments: (length when known, speed, congested).
    segments: Vec<(Option<f64>, Option<f64>, Option<bool>)>,
    aqi: (f64, f64, f64),
    beds: (f64, f64),
}

impl KpiPass {
    /// A pass for the figures at `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            sweep: Sweep::new(),
            kpis: CityKpis::default(),
            segments: Vec::new(),
            aqi: (0.0, 0.0, f64::MIN),
            beds: (0.0, 0.0),
        }
    }

    /// When the figures are for.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// Goes on within `budget`; the figures once the whole state has been seen.
    pub fn step(
        &mut self,
        state: &LiveState,
        superseded: &HashMap<Slot, Slot>,
        budget: Budget,
    ) -> Option<CityKpis> {
        let mut sweep = std::mem::take(&mut self.sweep);
        let done = sweep.step(state, budget, |slot, e| {
            self.visit(state, superseded, slot, e)
        });
        self.sweep = sweep;
        done.then(|| self.finish())
    }

    fn visit(
        &mut self,
        state: &LiveState,
        superseded: &HashMap<Slot, Slot>,
        slot: Slot,
        e: &LiveEntity,
    ) {
        let now_ms = self.now_ms;
        let counts = match &e.kind {
            EntityKind::TrafficFlow { .. }
            | EntityKind::AirQuality { aqi: Some(_), .. }
            | EntityKind::Alert { .. }
            | EntityKind::Vehicle { .. } => true,
            EntityKind::Generic => e.entity_type == "MedicalFacility",
            _ => false,
        };
        if !counts {
            return;
        }
        let kpis = &mut self.kpis;
        match state.standing(e, now_ms) {
            Standing::Stale => {
                kpis.excluded.stale += 1;
                return;
            }
            Standing::Quarantined => {
                kpis.excluded.quarantined += 1;
                return;
            }
            Standing::Current => {}
        }
        // Left to the winning source, unless that one cannot be used now.
        if superseded
            .get(&slot)
            .and_then(|&w| state.entity(w))
            .is_some_and(|w| state.standing(w, now_ms) == Standing::Current)
        {
            kpis.excluded.duplicates += 1;
            return;
        }
        match &e.kind {
            EntityKind::TrafficFlow {
                average_speed_kmh, ..
            } => {
                let length = e.line.as_deref().map(line_length_m).filter(|l| *l > 0.0);
                self.segments
                    .push((length, *average_speed_kmh, is_congested(e)));
            }
            EntityKind::AirQuality { aqi: Some(a), .. } if !AQI_SCALE.contains(a) => {
                kpis.excluded.implausible += 1;
            }
            EntityKind::AirQuality { aqi: Some(a), .. } => {
                self.aqi.0 += a;
                self.aqi.1 += 1.0;
                self.aqi.2 = self.aqi.2.max(*a);
            }
            EntityKind::Alert { .. }
                if e.fields.get("status").and_then(|v| v.as_str()) != Some("resolved") =>
            {
                kpis.open_alerts += 1;
            }
            EntityKind::Vehicle { .. } => kpis.vehicles += 1,
            EntityKind::Generic => {
                if let (Some(t), Some(u)) = (number(e, "bedsTotal"), number(e, "bedsOccupied")) {
                    self.beds.0 += t;
                    self.beds.1 += u;
                }
            }
            _ => {}
        }
    }

    fn finish(&mut self) -> CityKpis {
        let mut kpis = std::mem::take(&mut self.kpis);
        let segments = std::mem::take(&mut self.segments);
        // A segment without its line weighs as much as the average one with a line.
        let known: Vec<f64> = segments.iter().filter_map(|s| s.0).collect();
        let typical = mean(known.iter().sum(), known.len() as f64).unwrap_or(1.0);
        let (mut speed_sum, mut speed_len, mut congested_len, mut judged_len) =
            (0.0, 0.0, 0.0, 0.0);
        for (length, speed, congested) in segments {
            let w = length.unwrap_or(typical);
            if let Some(v) = speed {
                speed_sum += v * w;
                speed_len += w;
            }
            if let Some(c) = congested {
                judged_len += w;
                if c {
                    congested_len += w;
                }
            }
        }
        let (aqi_sum, aqi_n, aqi_max) = self.aqi;
        let (beds, occupied) = self.beds;
        kpis.mean_road_speed_kmh = mean(speed_sum, speed_len);
        kpis.congestion_index = mean(congested_len, judged_len);
        kpis.mean_aqi = mean(aqi_sum, aqi_n);
        kpis.max_aqi = (aqi_n > 0.0).then_some(aqi_max);
        kpis.hospital_load = (beds > 0.0).then(|| occupied / beds);
        kpis
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::geo_frame::GeoFrame;
    use crate::map::load_default;
    use crate::model::{Domain, EntityUpdate};
    use crate::sim::{SimConfig, Simulator};
    use crate::state::FeedStanding;

    const NOW: i64 = 1_795_946_400_000;
    /// Metres per degree of latitude on the sphere `line_length_m` uses.
    const M_PER_DEG: f64 = 6_371_000.0 * std::f64::consts::PI / 180.0;

    /// A north-running segment of `length_m` with the given readings.
    fn segment(
        id: &str,
        lon: f64,
        length_m: f64,
        speed: Option<f64>,
        occupancy: Option<f64>,
        congested: Option<bool>,
    ) -> EntityUpdate {
        let line = vec![[lon, 60.17], [lon, 60.17 + length_m / M_PER_DEG]];
        EntityUpdate {
            id: id.into(),
            entity_type: "TrafficFlowObserved".into(),
            kind: EntityKind::TrafficFlow {
                average_speed_kmh: speed,
                intensity: None,
                occupancy,
                congested,
            },
            position: Some(line[0]),
            line: Some(line),
            observed_at_ms: Some(NOW),
            fields: BTreeMap::new(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn station(id: &str, aqi: f64) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "AirQualityObserved".into(),
            kind: EntityKind::AirQuality {
                aqi: Some(aqi),
                pm25: None,
                pm10: None,
                no2: None,
                o3: None,
            },
            position: Some([24.94, 60.17]),
            line: None,
            observed_at_ms: Some(NOW),
            fields: BTreeMap::new(),
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn an_implausible_reading_is_left_out_of_the_figures_and_said_so() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, station("a", 60.0), NOW);
        state.apply(0, station("b", 80.0), NOW);
        // A sensor glitch: far beyond the AQI scale (0–500).
        state.apply(0, station("c", 999.0), NOW);
        let k = CityKpis::compute(&state, &HashMap::new(), NOW);
        assert_eq!(k.max_aqi, Some(80.0));
        assert_eq!(k.mean_aqi, Some(70.0));
        assert_eq!(k.excluded.implausible, 1);
    }

    #[test]
    fn lengths_on_the_sphere() {
        let l = line_length_m(&[[24.94, 60.17], [24.94, 60.17 + 1000.0 / M_PER_DEG]]);
        assert!((l - 1000.0).abs() < 1e-6, "{l}");
        assert_eq!(line_length_m(&[[24.94, 60.17]]), 0.0);
    }

    #[test]
    fn speed_is_length_weighted_and_congestion_is_a_share_of_length() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        // A Smart Data Models feed: no `congested` flag, no free-flow speed.
        // 1000 m at 50 km/h, occupancy 10 %: flowing.
        state.apply(
            0,
            segment("a", 24.940, 1000.0, Some(50.0), Some(0.1), None),
            NOW,
        );
        // 250 m at 10 km/h, occupancy 45 %: congested (occupancy over 30 %).
        state.apply(
            0,
            segment("b", 24.941, 250.0, Some(10.0), Some(0.45), None),
            NOW,
        );
        // 500 m at 12 km/h, no occupancy: congested (under 15 km/h).
        state.apply(0, segment("c", 24.942, 500.0, Some(12.0), None, None), NOW);
        // 250 m flagged congested by its source, no speed.
        state.apply(0, segment("d", 24.943, 250.0, None, None, Some(true)), NOW);
        let k = CityKpis::compute(&state, &HashMap::new(), NOW);
        // (50·1000 + 10·250 + 12·500) / (1000 + 250 + 500) = 58 500 / 1750 km/h.
        let speed = k.mean_road_speed_kmh.unwrap();
        assert!((speed - 58_500.0 / 1750.0).abs() < 1e-6, "{speed}");
        // Congested: 250 + 500 + 250 of 2000 m.
        let congestion = k.congestion_index.unwrap();
        assert!((congestion - 0.5).abs() < 1e-9, "{congestion}");
        // The simulator's speedRatio and a free-flow speed are read too.
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        let mut slow = segment("s", 24.94, 300.0, Some(20.0), Some(0.05), None);
        slow.fields
            .insert("freeFlowSpeed".into(), FieldValue::Number(60.0));
        state.apply(0, slow, NOW);
        let mut fine = segment("f", 24.95, 100.0, Some(45.0), None, None);
        fine.fields
            .insert("speedRatio".into(), FieldValue::Number(0.9));
        state.apply(0, fine, NOW);
        let k = CityKpis::compute(&state, &HashMap::new(), NOW);
        assert!((k.congestion_index.unwrap() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn each_thing_once_from_its_winner_without_stale_or_quarantined_data() {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        state.apply(0, station("st-1", 40.0), NOW);
        state.apply(0, station("st-2", 60.0), NOW);
        // Feed 1 reports st-1 again (it loses to feed 0) and one station of its own.
        state.apply(1, station("st-1", 95.0), NOW);
        state.apply(1, station("st-3", 80.0), NOW);
        // Feed 2 is quarantined; feed 3's station is stale.
        state.apply(2, station("st-q", 400.0), NOW);
        state.apply(3, station("st-old", 300.0), NOW - 3_600_000);
        state.set_feed_standing(
            2,
            FeedStanding {
                stale_after_ms: None,
                quarantined: true,
            },
        );
        state.set_feed_standing(
            3,
            FeedStanding {
                stale_after_ms: Some(60_000),
                quarantined: false,
            },
        );
        let winner = |feed, id| {
            state
                .iter()
                .find(|(_, e)| e.feed == feed && e.id == id)
                .unwrap()
                .0
        };
        let superseded: HashMap<Slot, Slot> = [(winner(1, "st-1"), winner(0, "st-1"))]
            .into_iter()
            .collect();
        let k = CityKpis::compute(&state, &superseded, NOW);
        // (40 + 60 + 80) / 3.
        assert_eq!(k.mean_aqi, Some(60.0));
        assert_eq!(k.max_aqi, Some(80.0));
        assert_eq!(
            k.excluded,
            Excluded {
                stale: 1,
                quarantined: 1,
                duplicates: 1,
                implausible: 0
            }
        );
        // When the winner itself cannot be used, the other source's value counts.
        state.set_feed_standing(
            0,
            FeedStanding {
                stale_after_ms: None,
                quarantined: true,
            },
        );
        let k = CityKpis::compute(&state, &superseded, NOW);
        assert_eq!(k.mean_aqi, Some((95.0 + 80.0) / 2.0));
        assert_eq!(k.excluded.quarantined, 3);
        assert_eq!(k.excluded.duplicates, 0);
    }

    #[test]
    fn kpis_from_the_simulated_city() {
        let map = load_default().unwrap();
        let mut sim = Simulator::new(&map, SimConfig::for_map(&map), NOW);
        sim.advance(NOW + 7 * 3_600_000);
        let mut state = LiveState::new(map.frame);
        for (feed, d) in Domain::ALL.iter().enumerate() {
            for u in sim.snapshot(*d) {
                state.apply(feed as u32, u, NOW + 7 * 3_600_000);
            }
            // As the default feeds file sets them: stale after 10 cadences of 5 s.
            state.set_feed_standing(
                feed as u32,
                FeedStanding {
                    stale_after_ms: Some(50_000),
                    quarantined: false,
                },
            );
        }
        let k = CityKpis::compute(&state, &HashMap::new(), NOW + 7 * 3_600_000);
        let speed = k.mean_road_speed_kmh.unwrap();
        assert!((5.0..60.0).contains(&speed), "{speed}");
        assert!((0.0..=1.0).contains(&k.congestion_index.unwrap()));
        assert!(k.mean_aqi.unwrap() > 0.0 && k.max_aqi.unwrap() >= k.mean_aqi.unwrap());
        assert!((0.3..=1.0).contains(&k.hospital_load.unwrap()));
        assert!(k.vehicles > 200);
        assert!(k.excluded.is_empty(), "{:?}", k.excluded);

        // A frame's share at a time gives the same figures as one whole pass.
        let mut pass = KpiPass::new(NOW + 7 * 3_600_000);
        let mut steps = 1;
        let stepped = loop {
            match pass.step(&state, &HashMap::new(), Budget::slots(97)) {
                Some(k) => break k,
                None => steps += 1,
            }
        };
        assert!(steps > 3, "{steps} steps");
        assert_eq!(stepped, k);
    }

    #[test]
    fn nothing_reported_means_no_figure() {
        let state = LiveState::new(GeoFrame::new(0.0, 0.0));
        assert_eq!(
            CityKpis::compute(&state, &HashMap::new(), 0),
            CityKpis::default()
        );
    }
}
