//! City KPIs for the strip across the top of the wall, computed from the live state.

use crate::feeds::EntityKind;

use super::LiveState;

/// The headline figures, each `None` when no feed reports the data behind it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CityKpis {
    /// Mean reported road speed, km/h.
    pub mean_road_speed_kmh: Option<f64>,
    /// Share of reported road segments congested (0..1).
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
}

fn mean(sum: f64, n: usize) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl CityKpis {
    pub fn compute(state: &LiveState) -> Self {
        let (mut speed_sum, mut speed_n, mut congested, mut segments) = (0.0, 0, 0, 0);
        let (mut aqi_sum, mut aqi_n, mut aqi_max) = (0.0, 0, f64::MIN);
        let (mut beds, mut occupied) = (0.0, 0.0);
        let mut kpis = CityKpis::default();
        for (_, e) in state.iter() {
            match &e.kind {
                EntityKind::TrafficFlow {
                    average_speed_kmh,
                    congested: c,
                    ..
                } => {
                    segments += 1;
                    if let Some(v) = average_speed_kmh {
                        speed_sum += v;
                        speed_n += 1;
                    }
                    let ratio = e.fields.get("speedRatio").and_then(|v| v.as_f64());
                    if *c == Some(true) || ratio.is_some_and(|r| r < 0.4) {
                        congested += 1;
                    }
                }
                EntityKind::AirQuality { aqi: Some(a), .. } => {
                    aqi_sum += a;
                    aqi_n += 1;
                    aqi_max = aqi_max.max(*a);
                }
                EntityKind::Alert { .. }
                    if e.fields.get("status").and_then(|v| v.as_str()) != Some("resolved") =>
                {
                    kpis.open_alerts += 1;
                }
                EntityKind::Vehicle { .. } => kpis.vehicles += 1,
                EntityKind::Generic if e.entity_type == "MedicalFacility" => {
                    let total = e.fields.get("bedsTotal").and_then(|v| v.as_f64());
                    let used = e.fields.get("bedsOccupied").and_then(|v| v.as_f64());
                    if let (Some(t), Some(u)) = (total, used) {
                        beds += t;
                        occupied += u;
                    }
                }
                _ => {}
            }
        }
        kpis.mean_road_speed_kmh = mean(speed_sum, speed_n);
        kpis.congestion_index = (segments > 0).then(|| congested as f64 / segments as f64);
        kpis.mean_aqi = mean(aqi_sum, aqi_n);
        kpis.max_aqi = (aqi_n > 0).then_some(aqi_max);
        kpis.hospital_load = (beds > 0.0).then(|| occupied / beds);
        kpis
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::Domain;
    use crate::map::load_default;
    use crate::sim::{SimConfig, Simulator};

    #[test]
    fn kpis_from_the_simulated_city() {
        let map = load_default().unwrap();
        let mut sim = Simulator::new(&map, SimConfig::for_map(&map), 1_795_946_400_000);
        sim.advance(1_795_946_400_000 + 7 * 3_600_000);
        let mut state = LiveState::new(map.frame);
        for (feed, d) in Domain::ALL.iter().enumerate() {
            for u in sim.snapshot(*d) {
                state.apply(feed as u32, u, 0);
            }
        }
        let k = CityKpis::compute(&state);
        let speed = k.mean_road_speed_kmh.unwrap();
        assert!((5.0..60.0).contains(&speed), "{speed}");
        assert!((0.0..=1.0).contains(&k.congestion_index.unwrap()));
        assert!(k.mean_aqi.unwrap() > 0.0 && k.max_aqi.unwrap() >= k.mean_aqi.unwrap());
        assert!((0.3..=1.0).contains(&k.hospital_load.unwrap()));
        assert!(k.vehicles > 200);
    }

    #[test]
    fn nothing_reported_means_no_figure() {
        let state = LiveState::new(crate::geo_frame::GeoFrame::new(0.0, 0.0));
        assert_eq!(CityKpis::compute(&state), CityKpis::default());
    }
}
