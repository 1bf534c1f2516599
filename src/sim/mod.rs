//! Simulated sub-brains on the loaded map: road speeds and congestion, vehicles and
//! emergency units driving the real road graph, air-quality stations with pollution
//! episodes, grid-management events, hospital load, utility outages and district
//! indicators. Deterministic for a seed; plausible by time of day; time is passed in.
//!
//! The simulator speaks the same [`EntityUpdate`]s as real feeds, so its data takes
//! the real ingest path into the live state.

pub mod serve;
pub mod trouble;

use std::collections::BTreeMap;

use geo::{BoundingRect, Centroid};

use crate::geo_frame::GeoFrame;
use crate::map::graph::{EdgeId, RoadGraph};
use crate::map::{CityMap, RoadClass};
use crate::model::{Domain, EntityKind, EntityUpdate, FieldValue};

/// Deterministic random numbers (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1A4_F87B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A stable pseudo-random value in [0, 1) for a key (per-road character, etc.).
fn hash_unit(a: u64, b: u64) -> f64 {
    Rng::new(a.wrapping_mul(0x100_0000_01B3) ^ b).unit()
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    /// Vehicles on the roads; `None` scales with the road network (one per ~60 m).
    pub vehicles: Option<usize>,
    pub air_stations: usize,
    /// Hours to add to UTC for the city's local time of day.
    pub utc_offset_hours: f64,
}

impl SimConfig {
    pub fn for_map(map: &CityMap) -> Self {
        SimConfig {
            seed: 1,
            vehicles: None,
            air_stations: 10,
            // Solar time zone of the city; good enough for rush hours and nights.
            utc_offset_hours: (map.frame.origin_lon / 15.0).round(),
        }
    }
}

/// Kinds of simulated vehicle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VehicleType {
    Bus,
    Taxi,
    Police,
    FireEngine,
    Ambulance,
}

impl VehicleType {
    pub fn as_str(self) -> &'static str {
        match self {
            VehicleType::Bus => "bus",
            VehicleType::Taxi => "taxi",
            VehicleType::Police => "police",
            VehicleType::FireEngine => "fireEngine",
            VehicleType::Ambulance => "ambulance",
        }
    }
    /// The sub-brain that owns this kind of unit.
    pub fn domain(self) -> Domain {
        match self {
            VehicleType::Bus | VehicleType::Taxi => Domain::Traffic,
            VehicleType::Police | VehicleType::FireEngine => Domain::Safety,
            VehicleType::Ambulance => Domain::Health,
        }
    }
}

#[derive(Clone, Debug)]
struct Vehicle {
    kind: VehicleType,
    edge: EdgeId,
    /// Metres along the edge.
    along_m: f32,
    speed_mps: f32,
    rng: Rng,
}

#[derive(Clone, Debug)]
struct Station {
    name: String,
    local: [f64; 2],
    /// Local background level and sensitivity to traffic.
    base_aqi: f64,
}

#[derive(Clone, Debug)]
struct Event {
    id: u64,
    category: &'static str,
    sub_category: &'static str,
    severity: &'static str,
    local: [f64; 2],
    opened_ms: i64,
    closes_ms: i64,
    radius_m: f64,
}

#[derive(Clone, Debug)]
struct Hospital {
    name: String,
    local: [f64; 2],
    beds: f64,
}

/// A square of the statistical grid (economy indicators per cell).
#[derive(Clone, Debug)]
struct GridCell {
    id: String,
    min: [f64; 2],
    size: f64,
    /// Buildings in the cell: where people work, shop and live.
    buildings: usize,
}

#[derive(Clone, Debug)]
struct DistrictArea {
    id: String,
    name: String,
    local: [f64; 2],
    size: f64,
}

/// The simulated city.
pub struct Simulator {
    frame: GeoFrame,
    graph: RoadGraph,
    /// WGS84 line of each road, for traffic-flow entities.
    road_lines: Vec<Vec<[f64; 2]>>,
    road_classes: Vec<RoadClass>,
    road_names: Vec<Option<String>>,
    /// Current speed as a share of free flow, per road.
    speed_ratio: Vec<f32>,
    vehicles: Vec<Vehicle>,
    stations: Vec<Station>,
    /// Water-quality stations (`base_aqi` holds the station's character, 0..1).
    water_stations: Vec<Station>,
    hospitals: Vec<Hospital>,
    districts: Vec<DistrictArea>,
    cells: Vec<GridCell>,
    grid_events: Vec<Event>,
    outages: Vec<Event>,
    /// Building centroids: where events happen.
    sites: Vec<[f64; 2]>,
    rng: Rng,
    next_event_id: u64,
    config: SimConfig,
    now_ms: i64,
}

const STEP_MS: i64 = 1000;

impl Simulator {
    /// A simulator on `map` whose clock starts at `start_ms` (Unix ms).
    pub fn new(map: &CityMap, config: SimConfig, start_ms: i64) -> Self {
        let graph = RoadGraph::from_map(map);
        let mut rng = Rng::new(config.seed);
        let frame = map.frame;
        let road_lines = map
            .roads
            .iter()
            .map(|r| {
                r.line
                    .0
                    .iter()
                    .map(|c| frame.wgs84_from_local(c.x, c.y))
                    .collect()
            })
            .collect();
        let sites: Vec<[f64; 2]> = map
            .buildings
            .iter()
            .filter_map(|b| b.footprint.centroid().map(|c| [c.x(), c.y()]))
            .collect();

        let drivable_m: f64 = graph.edges.iter().map(|e| e.length_m as f64).sum::<f64>() / 2.0;
        let n_vehicles = config
            .vehicles
            .unwrap_or((drivable_m / 60.0) as usize)
            .min(1_000_000);
        let mut vehicles = Vec::with_capacity(n_vehicles);
        if !graph.edges.is_empty() {
            for i in 0..n_vehicles {
                let r = rng.unit();
                let kind = match r {
                    r if r < 0.30 => VehicleType::Bus,
                    r if r < 0.75 => VehicleType::Taxi,
                    r if r < 0.87 => VehicleType::Police,
                    r if r < 0.92 => VehicleType::FireEngine,
                    _ => VehicleType::Ambulance,
                };
                let edge = rng.below(graph.edges.len()) as EdgeId;
                let along_m = (rng.unit() as f32) * graph.edge(edge).length_m;
                vehicles.push(Vehicle {
                    kind,
                    edge,
                    along_m,
                    speed_mps: 0.0,
                    rng: Rng::new(config.seed.wrapping_add(i as u64 * 7919)),
                });
            }
        }

        let mut stations = Vec::new();
        // Water quality: a station on each of the largest water bodies and rivers.
        let mut waters: Vec<(f64, [f64; 2], Option<String>)> = map
            .areas
            .iter()
            .filter(|a| a.kind == crate::map::AreaKind::Water)
            .filter_map(|a| {
                let r = a.polygon.bounding_rect()?;
                let c = a.polygon.centroid()?;
                Some((r.width() * r.height(), [c.x(), c.y()], a.name.clone()))
            })
            .chain(map.waterways.iter().filter_map(|w| {
                let mid = w.line.0.get(w.line.0.len() / 2)?;
                Some((w.width_m as f64 * 100.0, [mid.x, mid.y], None))
            }))
            .collect();
        waters.sort_by(|a, b| b.0.total_cmp(&a.0));
        let water_stations: Vec<Station> = waters
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, (_, local, name))| Station {
                name: name
                    .clone()
                    .unwrap_or_else(|| format!("Water station {}", i + 1)),
                local: *local,
                base_aqi: hash_unit(config.seed, 700 + i as u64),
            })
            .collect();
        if !sites.is_empty() {
            for i in 0..config.air_stations {
                let site = sites[(i * sites.len()) / config.air_stations.max(1) % sites.len()];
                stations.push(Station {
                    name: format!("Air station {}", i + 1),
                    local: site,
                    base_aqi: 25.0 + 20.0 * hash_unit(config.seed, i as u64),
                });
            }
        }

        // Hospitals: tagged ones, else the largest buildings stand in.
        let mut hospitals: Vec<Hospital> = map
            .buildings
            .iter()
            .filter(|b| {
                b.tags
                    .iter()
                    .any(|(k, v)| k == "amenity" && (v == "hospital" || v == "clinic"))
            })
            .filter_map(|b| {
                let c = b.footprint.centroid()?;
                Some(Hospital {
                    name: b.name.clone().unwrap_or_else(|| "Hospital".into()),
                    local: [c.x(), c.y()],
                    beds: 150.0,
                })
            })
            .collect();
        if hospitals.is_empty() {
            let mut by_area: Vec<_> = map
                .buildings
                .iter()
                .filter_map(|b| {
                    let r = b.footprint.bounding_rect()?;
                    let c = b.footprint.centroid()?;
                    Some((r.width() * r.height(), [c.x(), c.y()]))
                })
                .collect();
            by_area.sort_by(|a, b| b.0.total_cmp(&a.0));
            hospitals = by_area
                .iter()
                .step_by(7)
                .take(3)
                .enumerate()
                .map(|(i, (_, local))| Hospital {
                    name: format!("City Hospital {}", i + 1),
                    local: *local,
                    beds: 300.0 + 150.0 * i as f64,
                })
                .collect();
        }

        let mut districts: Vec<DistrictArea> = map
            .districts
            .iter()
            .filter_map(|d| {
                let first = d.boundary.first()?;
                let r = first.bounding_rect()?;
                Some(DistrictArea {
                    id: d.id.clone(),
                    name: d.name.clone().unwrap_or_else(|| d.id.clone()),
                    local: [r.center().x, r.center().y],
                    size: (r.width() * r.height()).sqrt(),
                })
            })
            .collect();
        if districts.is_empty() {
            // No boundaries in the map: report per 1 km grid cell.
            let [a, b, c, d] = map.local_bounds();
            let mut y = b;
            while y < d {
                let mut x = a;
                while x < c {
                    districts.push(DistrictArea {
                        id: format!("cell-{:.0}-{:.0}", x, y),
                        name: format!("Grid cell {:.0},{:.0}", x / 1000.0, y / 1000.0),
                        local: [x + 500.0, y + 500.0],
                        size: 1000.0,
                    });
                    x += 1000.0;
                }
                y += 1000.0;
            }
        }

        // The statistical grid: 250 m cells in a city centre, coarser for big cities
        // (at most ~1600 cells).
        let [min_e, min_n, max_e, max_n] = map.local_bounds();
        let extent = (max_e - min_e).max(max_n - min_n);
        let cell = (extent / 40.0).max(250.0);
        let (cols, rows) = (
            ((max_e - min_e) / cell).ceil() as usize,
            ((max_n - min_n) / cell).ceil() as usize,
        );
        let mut counts = vec![0usize; cols * rows];
        for [x, y] in &sites {
            let (c, r) = (((x - min_e) / cell) as usize, ((y - min_n) / cell) as usize);
            if c < cols && r < rows {
                counts[r * cols + c] += 1;
            }
        }
        let cells = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .filter(|&(r, c)| counts[r * cols + c] > 0)
            .map(|(r, c)| GridCell {
                id: format!("cell-{c}-{r}"),
                min: [min_e + c as f64 * cell, min_n + r as f64 * cell],
                size: cell,
                buildings: counts[r * cols + c],
            })
            .collect();

        let road_classes = map.roads.iter().map(|r| r.class).collect();
        let road_names = map.roads.iter().map(|r| r.name.clone()).collect();
        let mut sim = Simulator {
            frame,
            speed_ratio: vec![1.0; map.roads.len()],
            graph,
            road_lines,
            road_classes,
            road_names,
            vehicles,
            stations,
            water_stations,
            hospitals,
            districts,
            cells,
            grid_events: Vec::new(),
            outages: Vec::new(),
            sites,
            rng,
            next_event_id: 1,
            config,
            now_ms: start_ms,
        };
        sim.update_road_speeds();
        // Two hours of event history, so a fresh start shows a city already at work.
        for minutes_ago in (1..=120).rev() {
            sim.now_ms = start_ms - minutes_ago * 60_000;
            sim.minute_tick();
        }
        sim.now_ms = start_ms;
        sim
    }

    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    pub fn vehicle_count(&self) -> usize {
        self.vehicles.len()
    }

    pub fn graph(&self) -> &RoadGraph {
        &self.graph
    }

    /// Local hour of day (0..24) at `ms`.
    pub fn local_hour(&self, ms: i64) -> f64 {
        let h = ms as f64 / 3_600_000.0 + self.config.utc_offset_hours;
        h.rem_euclid(24.0)
    }

    /// Traffic demand by time of day: 0 at night, ~1 in the rush hours.
    pub fn demand(hour: f64) -> f64 {
        let bump = |centre: f64, width: f64| (-((hour - centre) / width).powi(2)).exp();
        (0.15 + 0.85 * bump(8.0, 1.3) + 0.95 * bump(17.0, 1.6) + 0.35 * bump(12.5, 2.5)).min(1.0)
    }

    /// Advances the simulation to `to_ms` in one-second steps.
    /// Advances to `to_ms`, simulating at most `max_gap_ms` of it: a longer gap (a
    /// server whose machine slept, a simulator started long ago) is skipped, the
    /// city standing still across it, so one request never pays for hours of steps.
    pub fn catch_up(&mut self, to_ms: i64, max_gap_ms: i64) {
        let gap = to_ms - self.now_ms;
        if gap > max_gap_ms {
            let skipped = (gap - max_gap_ms) / STEP_MS * STEP_MS;
            self.now_ms += skipped;
        }
        self.advance(to_ms);
    }

    pub fn advance(&mut self, to_ms: i64) {
        while self.now_ms + STEP_MS <= to_ms {
            self.now_ms += STEP_MS;
            self.step(STEP_MS as f32 / 1000.0);
        }
    }

    fn update_road_speeds(&mut self) {
        let demand = Self::demand(self.local_hour(self.now_ms));
        // Slow drift: each road's character plus a wave moving through the day.
        let minute = (self.now_ms / 60_000) as f64;
        for (i, ratio) in self.speed_ratio.iter_mut().enumerate() {
            let class = self.road_classes[i];
            let sensitivity = match class {
                RoadClass::Motorway | RoadClass::Trunk | RoadClass::Primary => 0.85,
                RoadClass::Secondary | RoadClass::Tertiary => 0.7,
                _ => 0.45,
            };
            let character = hash_unit(self.config.seed, i as u64);
            let wave = 0.5 + 0.5 * ((minute / 7.0) + character * std::f64::consts::TAU).sin();
            let congestion = demand * sensitivity * (0.6 + 0.4 * character) * (0.75 + 0.25 * wave);
            *ratio = (1.0 - congestion).clamp(0.08, 1.0) as f32;
        }
    }

    fn step(&mut self, dt_s: f32) {
        if self.now_ms % 10_000 == 0 {
            self.update_road_speeds();
        }
        let graph = &self.graph;
        let ratios = &self.speed_ratio;
        for v in &mut self.vehicles {
            let mut remaining = dt_s;
            let mut guard = 0;
            while remaining > 0.0 && guard < 8 {
                guard += 1;
                let edge = graph.edge(v.edge);
                let factor = match v.kind {
                    VehicleType::Bus => 0.8,
                    VehicleType::Police | VehicleType::FireEngine | VehicleType::Ambulance => 1.15,
                    VehicleType::Taxi => 1.0,
                };
                v.speed_mps = (edge.free_speed_mps * ratios[edge.road as usize] * factor).max(0.5);
                let left_m = edge.length_m - v.along_m;
                let step_m = v.speed_mps * remaining;
                if step_m < left_m {
                    v.along_m += step_m;
                    remaining = 0.0;
                } else {
                    remaining -= left_m / v.speed_mps;
                    // Next edge at the junction; a U-turn only at dead ends.
                    let out = &graph.out[edge.to as usize];
                    let forward: Vec<EdgeId> = out
                        .iter()
                        .copied()
                        .filter(|&e| graph.edge(e).to != edge.from)
                        .collect();
                    let choices = if forward.is_empty() {
                        out.clone()
                    } else {
                        forward
                    };
                    v.edge = if choices.is_empty() {
                        // A one-way street out of the map: re-enter somewhere else.
                        v.rng.below(graph.edges.len()) as EdgeId
                    } else {
                        choices[v.rng.below(choices.len())]
                    };
                    v.along_m = 0.0;
                }
            }
        }
        if self.now_ms % 60_000 == 0 {
            self.minute_tick();
        }
    }

    /// Events appear and resolve, once a simulated minute.
    fn minute_tick(&mut self) {
        let hour = self.local_hour(self.now_ms);
        let activity = 0.3 + 0.7 * Self::demand(hour);
        let now = self.now_ms;
        self.grid_events.retain(|e| e.closes_ms > now - 3_600_000);
        self.outages.retain(|e| e.closes_ms > now - 3_600_000);
        if self.sites.is_empty() {
            return;
        }
        // About twelve grid events an hour at peak, two outages a day.
        if self.rng.unit() < 0.2 * activity {
            let (category, sub, severity) = [
                ("urban", "illegalParking", "low"),
                ("urban", "garbageOverflow", "low"),
                ("urban", "roadDamage", "medium"),
                ("urban", "streetLightFailure", "low"),
                ("urban", "illegalConstruction", "medium"),
                ("security", "crowdGathering", "high"),
            ][self.rng.below(6)];
            let minutes = 20 + self.rng.below(70) as i64;
            let event = self.new_event(category, sub, severity, 20.0, minutes);
            self.grid_events.push(event);
        }
        if self.rng.unit() < 0.004 + 0.008 * activity {
            let (sub, severity) = [
                ("powerOutage", "high"),
                ("waterOutage", "medium"),
                ("gasLeak", "critical"),
            ][self.rng.below(3)];
            let radius = 100.0 + 300.0 * self.rng.unit();
            let minutes = 30 + self.rng.below(150) as i64;
            let event = self.new_event("utilities", sub, severity, radius, minutes);
            self.outages.push(event);
        }
    }

    fn new_event(
        &mut self,
        category: &'static str,
        sub: &'static str,
        severity: &'static str,
        radius_m: f64,
        minutes: i64,
    ) -> Event {
        let site = self.sites[self.rng.below(self.sites.len())];
        let id = self.next_event_id;
        self.next_event_id += 1;
        Event {
            id,
            category,
            sub_category: sub,
            severity,
            local: site,
            opened_ms: self.now_ms,
            closes_ms: self.now_ms + minutes * 60_000,
            radius_m,
        }
    }

    fn wgs(&self, local: [f64; 2]) -> [f64; 2] {
        self.frame.wgs84_from_local(local[0], local[1])
    }

    /// Current state of one domain's sub-brain as updates.
    pub fn snapshot(&self, domain: Domain) -> Vec<EntityUpdate> {
        let now = self.now_ms;
        let mut out = Vec::new();
        let field = |pairs: &[(&str, FieldValue)]| -> BTreeMap<String, FieldValue> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        match domain {
            Domain::Traffic => {
                for (i, line) in self.road_lines.iter().enumerate() {
                    let class = self.road_classes[i];
                    if matches!(class, RoadClass::Path | RoadClass::Rail) {
                        continue;
                    }
                    let free_kmh = crate::map::graph::free_speed_mps(class) as f64 * 3.6;
                    let ratio = self.speed_ratio[i] as f64;
                    let speed = (free_kmh * ratio * 10.0).round() / 10.0;
                    let occupancy =
                        (((1.0 - ratio) * 0.9).clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
                    let mut fields = field(&[
                        ("averageVehicleSpeed", FieldValue::Number(speed)),
                        (
                            "speedRatio",
                            FieldValue::Number((ratio * 1000.0).round() / 1000.0),
                        ),
                        (
                            "occupancy",
                            FieldValue::Number((occupancy * 1000.0).round() / 1000.0),
                        ),
                        ("roadClass", FieldValue::Text(class.as_str().into())),
                    ]);
                    if let Some(name) = &self.road_names[i] {
                        fields.insert("name".into(), FieldValue::Text(name.clone()));
                    }
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:TrafficFlowObserved:road-{i}"),
                        entity_type: "TrafficFlowObserved".into(),
                        kind: EntityKind::TrafficFlow {
                            average_speed_kmh: Some(speed),
                            intensity: Some(((1.0 - ratio) * 1800.0).round()),
                            occupancy: Some(occupancy),
                            congested: Some(ratio < 0.4),
                        },
                        position: line.first().copied(),
                        line: Some(line.clone()),
                        observed_at_ms: Some(now),
                        fields,
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
                self.vehicle_updates(Domain::Traffic, &mut out);
            }
            Domain::Safety => self.vehicle_updates(Domain::Safety, &mut out),
            Domain::Health => {
                self.vehicle_updates(Domain::Health, &mut out);
                let hour = self.local_hour(now);
                for (i, h) in self.hospitals.iter().enumerate() {
                    let load = (0.62
                        + 0.25 * Self::demand(hour)
                        + 0.08 * ((now / 600_000) as f64 * 0.7 + i as f64).sin())
                    .clamp(0.0, 1.0);
                    let occupied = (h.beds * load).round();
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:MedicalFacility:hospital-{i}"),
                        entity_type: "MedicalFacility".into(),
                        kind: EntityKind::Generic,
                        position: Some(self.wgs(h.local)),
                        line: None,
                        observed_at_ms: Some(now),
                        fields: field(&[
                            ("name", FieldValue::Text(h.name.clone())),
                            ("bedsTotal", FieldValue::Number(h.beds)),
                            ("bedsOccupied", FieldValue::Number(occupied)),
                            (
                                "occupancy",
                                FieldValue::Number((load * 1000.0).round() / 1000.0),
                            ),
                        ]),
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
            }
            Domain::Ecology => {
                let hour = self.local_hour(now);
                let traffic = Self::demand(hour);
                for (i, s) in self.stations.iter().enumerate() {
                    // An episode (a smog event) passes one station each afternoon.
                    let day = now.div_euclid(86_400_000) as u64;
                    let episode_station = (hash_unit(self.config.seed ^ day, 99)
                        * self.stations.len() as f64)
                        as usize;
                    let episode = if i == episode_station {
                        90.0 * (-((hour - 15.0) / 2.0).powi(2)).exp()
                    } else {
                        0.0
                    };
                    let wobble = 5.0 * ((now / 300_000) as f64 * 0.9 + i as f64 * 1.7).sin();
                    let aqi = (s.base_aqi + 30.0 * traffic + episode + wobble)
                        .max(5.0)
                        .round();
                    let pm25 = (aqi * 0.42).round();
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:AirQualityObserved:station-{i}"),
                        entity_type: "AirQualityObserved".into(),
                        kind: EntityKind::AirQuality {
                            aqi: Some(aqi),
                            pm25: Some(pm25),
                            pm10: Some((aqi * 0.7).round()),
                            no2: Some((15.0 + 40.0 * traffic).round()),
                            o3: Some((30.0 + 20.0 * (1.0 - traffic)).round()),
                        },
                        position: Some(self.wgs(s.local)),
                        line: None,
                        observed_at_ms: Some(now),
                        fields: field(&[
                            ("name", FieldValue::Text(s.name.clone())),
                            ("airQualityIndex", FieldValue::Number(aqi)),
                            ("pm25", FieldValue::Number(pm25)),
                        ]),
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
                // Water: turbidity rises after the (simulated) afternoon rain and
                // dissolved oxygen dips with it.
                let rain = (-((hour - 16.0) / 1.5).powi(2)).exp();
                for (i, w) in self.water_stations.iter().enumerate() {
                    let c = w.base_aqi;
                    let turbidity =
                        ((2.0 + 3.0 * c + 35.0 * rain * (0.5 + c)) * 10.0).round() / 10.0;
                    let oxygen = ((9.5 - 1.5 * c - 2.5 * rain) * 10.0).round() / 10.0;
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:WaterQualityObserved:station-{i}"),
                        entity_type: "WaterQualityObserved".into(),
                        kind: EntityKind::Generic,
                        position: Some(self.wgs(w.local)),
                        line: None,
                        observed_at_ms: Some(now),
                        fields: field(&[
                            ("name", FieldValue::Text(w.name.clone())),
                            ("turbidity", FieldValue::Number(turbidity)),
                            ("O2", FieldValue::Number(oxygen)),
                            (
                                "pH",
                                FieldValue::Number(
                                    ((7.2 + 0.4 * c - 0.3 * rain) * 100.0).round() / 100.0,
                                ),
                            ),
                            (
                                "temperature",
                                FieldValue::Number(((4.0 + 2.0 * c) * 10.0).round() / 10.0),
                            ),
                        ]),
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
            }
            Domain::Urban => self.event_updates(&self.grid_events, &mut out),
            Domain::Utilities => self.event_updates(&self.outages, &mut out),
            Domain::Economy => {
                let hour = self.local_hour(now);
                for (i, d) in self.districts.iter().enumerate() {
                    let c = hash_unit(self.config.seed, 1000 + i as u64);
                    let footfall = ((2000.0 + 8000.0 * c) * (0.2 + Self::demand(hour))).round();
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:DistrictIndicators:{}", d.id.replace('/', "-")),
                        entity_type: "DistrictIndicators".into(),
                        kind: EntityKind::Generic,
                        position: Some(self.wgs(d.local)),
                        line: None,
                        observed_at_ms: Some(now),
                        fields: field(&[
                            ("name", FieldValue::Text(d.name.clone())),
                            ("footfallPerHour", FieldValue::Number(footfall)),
                            ("retailIndex", FieldValue::Number((80.0 + 40.0 * c).round())),
                            (
                                "employmentRate",
                                FieldValue::Number(((0.88 + 0.08 * c) * 1000.0).round() / 1000.0),
                            ),
                            (
                                "areaKm2",
                                FieldValue::Number(
                                    ((d.size * d.size) / 1e6 * 100.0).round() / 100.0,
                                ),
                            ),
                        ]),
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
                let demand = Self::demand(hour);
                for (i, c) in self.cells.iter().enumerate() {
                    let character = hash_unit(self.config.seed, 5000 + i as u64);
                    let footfall =
                        (c.buildings as f64 * (120.0 + 80.0 * character) * (0.15 + demand)).round();
                    let [x, y] = c.min;
                    let ring: Vec<[f64; 2]> = [
                        [x, y],
                        [x + c.size, y],
                        [x + c.size, y + c.size],
                        [x, y + c.size],
                        [x, y],
                    ]
                    .iter()
                    .map(|&p| self.wgs(p))
                    .collect();
                    out.push(EntityUpdate {
                        id: format!("urn:ngsi-ld:StatisticalGridCell:{}", c.id),
                        entity_type: "StatisticalGridCell".into(),
                        kind: EntityKind::Generic,
                        position: ring.first().copied(),
                        line: Some(ring),
                        observed_at_ms: Some(now),
                        fields: field(&[
                            ("footfallPerHour", FieldValue::Number(footfall)),
                            ("buildings", FieldValue::Number(c.buildings as f64)),
                            ("cellSizeM", FieldValue::Number(c.size.round())),
                        ]),
                        units: Default::default(),
                        notes: Vec::new(),
                    });
                }
            }
        }
        out
    }

    fn vehicle_updates(&self, domain: Domain, out: &mut Vec<EntityUpdate>) {
        for (i, v) in self.vehicles.iter().enumerate() {
            if v.kind.domain() != domain {
                continue;
            }
            let edge = self.graph.edge(v.edge);
            let t = v.along_m / edge.length_m.max(0.01);
            let local = self.graph.point_on(v.edge, t);
            let speed_kmh = (v.speed_mps as f64 * 3.6 * 10.0).round() / 10.0;
            let heading = self.graph.heading_deg(v.edge) as f64;
            out.push(EntityUpdate {
                id: format!("urn:ngsi-ld:Vehicle:{}-{i}", v.kind.as_str()),
                entity_type: "Vehicle".into(),
                kind: EntityKind::Vehicle {
                    vehicle_type: Some(v.kind.as_str().into()),
                    speed_kmh: Some(speed_kmh),
                    heading_deg: Some(heading.round()),
                    service_status: Some("onRoute".into()),
                },
                position: Some(self.wgs(local)),
                line: None,
                observed_at_ms: Some(self.now_ms),
                fields: [
                    (
                        "vehicleType".to_string(),
                        FieldValue::Text(v.kind.as_str().into()),
                    ),
                    ("speed".to_string(), FieldValue::Number(speed_kmh)),
                    ("heading".to_string(), FieldValue::Number(heading.round())),
                ]
                .into_iter()
                .collect(),
                units: Default::default(),
                notes: Vec::new(),
            });
        }
    }

    fn event_updates(&self, events: &[Event], out: &mut Vec<EntityUpdate>) {
        for e in events {
            let open = self.now_ms < e.closes_ms;
            let status = if open { "open" } else { "resolved" };
            let mut fields: BTreeMap<String, FieldValue> = BTreeMap::new();
            fields.insert("status".into(), FieldValue::Text(status.into()));
            fields.insert("radiusM".into(), FieldValue::Number(e.radius_m.round()));
            fields.insert(
                "openedAt".into(),
                FieldValue::Text(crate::clock::rfc3339_from_unix_ms(e.opened_ms)),
            );
            out.push(EntityUpdate {
                id: format!("urn:ngsi-ld:Alert:{}-{}", e.sub_category, e.id),
                entity_type: "Alert".into(),
                kind: EntityKind::Alert {
                    category: Some(e.category.into()),
                    sub_category: Some(e.sub_category.into()),
                    severity: Some(e.severity.into()),
                    description: Some(format!("{} ({status})", e.sub_category)),
                },
                position: Some(self.wgs(e.local)),
                line: None,
                // Resolution is observed when it happens.
                observed_at_ms: Some(if open { e.opened_ms } else { e.closes_ms }),
                fields,
                units: Default::default(),
                notes: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::load_default;

    const MIDNIGHT_UTC: i64 = 1_795_910_400_000; // 2026-11-29T00:00:00Z
    const NOON_UTC: i64 = MIDNIGHT_UTC + 10 * 3_600_000; // 12:00 in Helsinki (UTC+2)

    fn sim(seed: u64) -> Simulator {
        let map = load_default().unwrap();
        let mut config = SimConfig::for_map(&map);
        config.seed = seed;
        Simulator::new(&map, config, NOON_UTC)
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (mut a, mut b, mut c) = (sim(7), sim(7), sim(8));
        for s in [&mut a, &mut b, &mut c] {
            s.advance(NOON_UTC + 600_000);
        }
        let snap = |s: &Simulator| s.snapshot(Domain::Traffic);
        assert_eq!(snap(&a), snap(&b));
        assert_ne!(snap(&a), snap(&c));
    }

    #[test]
    fn every_sub_brain_reports() {
        let mut s = sim(1);
        s.advance(NOON_UTC + 3 * 3_600_000);
        for domain in Domain::ALL {
            let updates = s.snapshot(domain);
            assert!(
                !updates.is_empty() || domain == Domain::Utilities,
                "{domain:?} is silent"
            );
            for u in &updates {
                let [lon, lat] = u.position.unwrap();
                assert!(
                    (24.9..25.0).contains(&lon) && (60.1..60.2).contains(&lat),
                    "{u:?}"
                );
            }
        }
        assert!(s.vehicle_count() > 200);
        let ecology = s.snapshot(Domain::Ecology);
        assert!(
            ecology
                .iter()
                .any(|u| u.entity_type == "AirQualityObserved")
        );
        assert!(
            ecology
                .iter()
                .any(|u| u.entity_type == "WaterQualityObserved"),
            "water stations on the harbour"
        );
        let economy = s.snapshot(Domain::Economy);
        assert!(
            economy
                .iter()
                .any(|u| u.entity_type == "StatisticalGridCell"
                    && u.line.as_ref().is_some_and(|l| l.len() == 5))
        );
    }

    #[test]
    fn vehicles_drive_along_roads() {
        let mut s = sim(3);
        let before = s.snapshot(Domain::Safety);
        s.advance(NOON_UTC + 60_000);
        let after = s.snapshot(Domain::Safety);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a.position != b.position)
            .count();
        assert!(
            moved as f64 > before.len() as f64 * 0.9,
            "{moved} of {}",
            before.len()
        );
    }

    #[test]
    fn rush_hour_is_slower_than_night() {
        let mean_speed = |hour_utc: i64| {
            let mut s = sim(1);
            let t = MIDNIGHT_UTC + hour_utc * 3_600_000;
            s.now_ms = t;
            s.update_road_speeds();
            let speeds: Vec<f64> = s
                .snapshot(Domain::Traffic)
                .iter()
                .filter_map(|u| match u.kind {
                    EntityKind::TrafficFlow {
                        average_speed_kmh, ..
                    } => average_speed_kmh,
                    _ => None,
                })
                .collect();
            speeds.iter().sum::<f64>() / speeds.len() as f64
        };
        // 15:00 UTC = 17:00 in Helsinki, 01:00 UTC = 03:00.
        assert!(
            mean_speed(15) < mean_speed(1) * 0.85,
            "{} vs {}",
            mean_speed(15),
            mean_speed(1)
        );
    }

    #[test]
    fn grid_events_open_and_resolve() {
        let mut s = sim(5);
        s.advance(NOON_UTC + 6 * 3_600_000);
        let events = s.snapshot(Domain::Urban);
        assert!(events.len() > 5, "{}", events.len());
        let status = |u: &EntityUpdate| u.fields["status"].as_str().unwrap().to_string();
        assert!(events.iter().any(|u| status(u) == "open"));
        assert!(events.iter().any(|u| status(u) == "resolved"));
    }
}
