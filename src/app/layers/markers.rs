//! Markers for everything with a position that is not a road segment: vehicles and
//! emergency units (moving smoothly between updates, turned to their heading), air
//! stations, hospitals, grid events and outages (pulsing beacons by severity), and
//! district indicators (columns). Shapes and colours are shared handles, so bevy draws
//! each kind as one instanced batch.

use std::collections::HashMap;

use bevy::prelude::*;

use super::super::live::{ChangedSlots, DomainVisibility, Live};
use super::super::{AppSystems, City};
use super::pick::Shape;
use crate::feeds::{Domain, EntityKind};
use crate::geo_frame::world_from_local;
use crate::map::mesh::linear_from_srgb;
use crate::state::{LiveEntity, Slot};

/// What a marker draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    Bus,
    Taxi,
    Police,
    FireEngine,
    Ambulance,
    OtherVehicle,
    AirStation,
    WaterStation,
    Hospital,
    Alert,
    District,
    Parking,
    Other,
}

impl MarkerKind {
    pub fn of(e: &LiveEntity) -> Option<MarkerKind> {
        // Areas (closed outlines) are filled by the choropleth, not pinned.
        if e.line
            .as_ref()
            .is_some_and(|l| l.len() >= 4 && l.first() == l.last())
        {
            return None;
        }
        Some(match &e.kind {
            EntityKind::TrafficFlow { .. } => return None,
            EntityKind::Vehicle { vehicle_type, .. } => match vehicle_type.as_deref() {
                Some("bus") => MarkerKind::Bus,
                Some("taxi") => MarkerKind::Taxi,
                Some("police") => MarkerKind::Police,
                Some("fireEngine") => MarkerKind::FireEngine,
                Some("ambulance") => MarkerKind::Ambulance,
                _ => MarkerKind::OtherVehicle,
            },
            EntityKind::AirQuality { .. } => MarkerKind::AirStation,
            EntityKind::Alert { .. } => MarkerKind::Alert,
            EntityKind::Parking { .. } => MarkerKind::Parking,
            EntityKind::Generic => match e.entity_type.as_str() {
                "MedicalFacility" | "Hospital" => MarkerKind::Hospital,
                "WaterQualityObserved" => MarkerKind::WaterStation,
                "DistrictIndicators" => MarkerKind::District,
                _ => MarkerKind::Other,
            },
        })
    }

    /// The drawn shape, centred on the marker's position: picking tests clicks
    /// against the same shape. Sized to read at city scale on a video wall, not to
    /// scale.
    pub fn shape(self) -> Shape {
        match self {
            MarkerKind::Bus => Shape::Box(Vec3::new(3.5, 2.5, 9.0)),
            MarkerKind::FireEngine => Shape::Box(Vec3::new(3.5, 3.0, 8.0)),
            k if k.is_vehicle() => Shape::Box(Vec3::new(3.0, 2.25, 6.0)),
            MarkerKind::AirStation | MarkerKind::WaterStation => Shape::Cylinder {
                radius: 9.0,
                half_height: 30.0,
            },
            MarkerKind::Hospital => Shape::Box(Vec3::new(15.0, 35.0, 15.0)),
            MarkerKind::Alert => Shape::Cylinder {
                radius: 14.0,
                half_height: 45.0,
            },
            MarkerKind::District => Shape::Cylinder {
                radius: 16.0,
                half_height: 0.5,
            },
            MarkerKind::Parking => Shape::Box(Vec3::splat(10.0)),
            _ => Shape::Sphere(8.0),
        }
    }

    fn is_vehicle(self) -> bool {
        matches!(
            self,
            MarkerKind::Bus
                | MarkerKind::Taxi
                | MarkerKind::Police
                | MarkerKind::FireEngine
                | MarkerKind::Ambulance
                | MarkerKind::OtherVehicle
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            MarkerKind::Bus => "Bus 公交",
            MarkerKind::Taxi => "Taxi 出租车",
            MarkerKind::Police => "Police 警车",
            MarkerKind::FireEngine => "Fire engine 消防车",
            MarkerKind::Ambulance => "Ambulance 救护车",
            MarkerKind::OtherVehicle => "Vehicle 车辆",
            MarkerKind::AirStation => "Air station 空气站",
            MarkerKind::WaterStation => "Water station 水质站",
            MarkerKind::Hospital => "Hospital 医院",
            MarkerKind::Alert => "Alert 告警",
            MarkerKind::District => "District 片区",
            MarkerKind::Parking => "Parking 停车场",
            MarkerKind::Other => "Other 其他",
        }
    }

    /// sRGB legend colour.
    pub fn srgb(self) -> u32 {
        match self {
            MarkerKind::Bus => 0x3FA9F5,
            MarkerKind::Taxi => 0xFFD23F,
            MarkerKind::Police => 0x3D6BFF,
            MarkerKind::FireEngine => 0xFF3B30,
            MarkerKind::Ambulance => 0xF5F7FA,
            MarkerKind::OtherVehicle => 0xB0B8C4,
            MarkerKind::AirStation => 0x2FBF71,
            MarkerKind::WaterStation => 0x38D9F5,
            MarkerKind::Hospital => 0xFF6FA8,
            MarkerKind::Alert => 0xFF8A00,
            MarkerKind::District => 0xC08CFF,
            MarkerKind::Parking => 0x4FD1C5,
            MarkerKind::Other => 0xFFFFFF,
        }
    }
}

/// Severity colour of an alert (sRGB).
pub fn severity_srgb(severity: Option<&str>) -> u32 {
    match severity {
        Some("critical") => 0xFF2BD6,
        Some("high") => 0xFF3B30,
        Some("medium") => 0xFF8A00,
        _ => 0xFFD23F,
    }
}

/// AQI band colour (sRGB): good, moderate, sensitive, unhealthy, very unhealthy.
pub fn aqi_srgb(aqi: f64) -> u32 {
    match aqi {
        a if a < 50.0 => 0x2FBF71,
        a if a < 100.0 => 0xF2D22E,
        a if a < 150.0 => 0xFF8A1F,
        a if a < 200.0 => 0xE5202E,
        _ => 0x8E2AA8,
    }
}

/// Marker updates applied per frame at most (a 50 000-unit fleet takes 4 frames).
pub const MARKER_UPDATES_PER_FRAME: usize = 12_500;

/// A drawn live entity.
#[derive(Component)]
pub struct LiveMarker {
    pub slot: Slot,
    pub kind: MarkerKind,
    pub domain: Domain,
    from: Vec3,
    to: Vec3,
    /// Seconds since start, as f64: an f32 has 0.25 s steps after a month of uptime,
    /// and glides and pulses would jump.
    started_s: f64,
    duration_s: f64,
    moving: bool,
}

impl LiveMarker {
    /// A marker resting at `at` (what picking tests build).
    pub fn resting(slot: Slot, kind: MarkerKind, domain: Domain, at: Vec3) -> Self {
        LiveMarker {
            slot,
            kind,
            domain,
            from: at,
            to: at,
            started_s: 0.0,
            duration_s: 0.0,
            moving: false,
        }
    }

    /// Where the glide has got to at `now_s`.
    fn position_at(&self, now_s: f64) -> Vec3 {
        if !self.moving {
            return self.to;
        }
        glide(self.from, self.to, self.started_s, self.duration_s, now_s)
    }
}

/// The point a glide from `from` to `to`, started at `started_s` and lasting
/// `duration_s`, has reached at `now_s` (seconds since start).
pub fn glide(from: Vec3, to: Vec3, started_s: f64, duration_s: f64, now_s: f64) -> Vec3 {
    if duration_s <= 0.0 {
        return to;
    }
    // The difference is taken in f64, so it stays exact however long the app has run.
    let k = ((now_s - started_s) / duration_s).clamp(0.0, 1.0);
    from.lerp(to, k as f32)
}

/// Horizontal scale of an alert beacon at `now_s` (seconds since start): 1 to 1.35,
/// three beats a second. The phase is reduced in f64 before it becomes an f32.
pub fn pulse_scale(now_s: f64) -> f32 {
    // |sin| repeats every π.
    let phase = (now_s * 3.0).rem_euclid(std::f64::consts::PI) as f32;
    1.0 + 0.35 * phase.sin()
}

/// Shared meshes and materials, and the slot → marker map.
#[derive(Resource, Default)]
pub struct MarkerLayer {
    by_slot: Vec<Option<Entity>>,
    /// The [`Live::shown_epoch`] drawn.
    epoch: u64,
    /// Changed slots not yet redrawn, and whether a slot is queued: a fleet-wide
    /// update is spread over a few frames instead of stalling one.
    pending: std::collections::VecDeque<Slot>,
    queued: Vec<bool>,
    meshes: HashMap<MarkerKind, Handle<Mesh>>,
    materials: HashMap<u32, Handle<StandardMaterial>>,
    pub counts: HashMap<MarkerKind, usize>,
}

impl MarkerLayer {
    fn material(
        &mut self,
        srgb: u32,
        assets: &mut Assets<StandardMaterial>,
    ) -> Handle<StandardMaterial> {
        self.materials
            .entry(srgb)
            .or_insert_with(|| {
                let [r, g, b, _] = linear_from_srgb(srgb);
                assets.add(StandardMaterial {
                    base_color: Color::linear_rgb(r, g, b),
                    unlit: true,
                    ..default()
                })
            })
            .clone()
    }

    fn mesh(&mut self, kind: MarkerKind, assets: &mut Assets<Mesh>) -> Handle<Mesh> {
        self.meshes
            .entry(kind)
            .or_insert_with(|| assets.add(MarkerKind::shape(kind).mesh()))
            .clone()
    }
}

/// Colour and height of a marker from the entity's values.
fn style(kind: MarkerKind, e: &LiveEntity) -> (u32, f32) {
    match (&e.kind, kind) {
        (EntityKind::AirQuality { aqi, .. }, _) => (aqi_srgb(aqi.unwrap_or(0.0)), 1.0),
        (EntityKind::Alert { severity, .. }, _) => (severity_srgb(severity.as_deref()), 1.0),
        (_, MarkerKind::Hospital) => {
            let load = e
                .fields
                .get("occupancy")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.5);
            (
                if load > 0.9 {
                    0xE5202E
                } else if load > 0.75 {
                    0xFF8A1F
                } else {
                    0x2FBF71
                },
                1.0,
            )
        }
        (_, MarkerKind::District) => {
            let footfall = e
                .fields
                .get("footfallPerHour")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            (kind.srgb(), (footfall / 40.0).clamp(5.0, 400.0) as f32)
        }
        _ => (kind.srgb(), 1.0),
    }
}

/// Open alerts are drawn; resolved ones leave the map.
fn is_shown(e: &LiveEntity) -> bool {
    !matches!(e.kind, EntityKind::Alert { .. })
        || e.fields.get("status").and_then(|v| v.as_str()) != Some("resolved")
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<MarkerLayer>().add_systems(
        Update,
        (
            update_markers,
            move_markers,
            pulse_alerts,
            marker_visibility,
        )
            .chain()
            .in_set(AppSystems::SyncScene),
    );
}

#[allow(clippy::too_many_arguments)]
pub fn update_markers(
    mut commands: Commands,
    changed: Res<ChangedSlots>,
    live: Option<Res<Live>>,
    city: Res<City>,
    time: Res<Time>,
    domains: Res<DomainVisibility>,
    mut layer: ResMut<MarkerLayer>,
    mut markers: Query<(
        &mut LiveMarker,
        &mut Transform,
        &mut MeshMaterial3d<StandardMaterial>,
    )>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    let Some(live) = live else { return };
    let now = time.elapsed_secs_f64();
    let mut all = Vec::new();
    if layer.epoch != live.shown_epoch {
        // Another state shown (the timeline's past, or now again): every marker goes
        // and the new state's are drawn, a budget a frame.
        layer.epoch = live.shown_epoch;
        for entity in layer.by_slot.drain(..).flatten() {
            commands.entity(entity).despawn();
        }
        layer.counts.clear();
        layer.pending.clear();
        layer.queued.clear();
        all = live.shown().iter().map(|(slot, _)| slot).collect();
    }
    for &slot in changed.0.iter().chain(&all) {
        let i = slot as usize;
        if layer.queued.len() <= i {
            layer.queued.resize(i + 1, false);
        }
        if !layer.queued[i] {
            layer.queued[i] = true;
            layer.pending.push_back(slot);
        }
    }
    let budget = layer.pending.len().min(MARKER_UPDATES_PER_FRAME);
    let batch: Vec<Slot> = layer.pending.drain(..budget).collect();
    for slot in batch {
        layer.queued[slot as usize] = false;
        let Some(e) = live.shown().entity(slot) else {
            // The entity has gone (left its feed, or expired): so does its marker.
            if let Some(Some(entity)) = layer.by_slot.get(slot as usize).copied() {
                if let Ok((marker, ..)) = markers.get(entity) {
                    *layer.counts.entry(marker.kind).or_default() -= 1;
                }
                commands.entity(entity).despawn();
                layer.by_slot[slot as usize] = None;
            }
            continue;
        };
        let Some(kind) = MarkerKind::of(e) else {
            continue;
        };
        let Some([east, north]) = e.local else {
            continue;
        };
        let existing = layer.by_slot.get(slot as usize).copied().flatten();
        if !is_shown(e) {
            if let Some(entity) = existing {
                commands.entity(entity).despawn();
                layer.by_slot[slot as usize] = None;
                *layer.counts.entry(kind).or_default() -= 1;
            }
            continue;
        }
        let (colour, height_scale) = style(kind, e);
        let base_y = match kind {
            k if k.is_vehicle() => 3.0,
            MarkerKind::AirStation | MarkerKind::WaterStation => 30.0,
            MarkerKind::Hospital => 35.0,
            MarkerKind::Alert => 45.0,
            MarkerKind::District => height_scale * 0.5 + 2.0,
            _ => 10.0,
        };
        let target = Vec3::from_array(world_from_local(east, north, base_y));
        let heading = match e.kind {
            EntityKind::Vehicle {
                heading_deg: Some(h),
                ..
            } => Some(h as f32),
            _ => None,
        };
        let rotation = heading.map_or(Quat::IDENTITY, |h| Quat::from_rotation_y(-h.to_radians()));
        let material = layer.material(colour, &mut materials);
        if let Some(entity) = existing
            && let Ok((mut marker, mut transform, mut mat)) = markers.get_mut(entity)
        {
            let here = marker.position_at(now);
            marker.from = here;
            marker.to = target;
            // Transform is only written here, once an update; between updates the glide
            // writes GlobalTransform directly (see `move_markers`).
            transform.translation = here;
            marker.started_s = now;
            // Arrive by the time the next update is due (~1 s for vehicles).
            marker.duration_s = if kind.is_vehicle() { 1.0 } else { 0.3 };
            marker.moving = true;
            transform.rotation = rotation;
            if kind == MarkerKind::District {
                transform.scale = Vec3::new(1.0, height_scale, 1.0);
            }
            if mat.0 != material {
                mat.0 = material;
            }
            continue;
        }
        let mesh = layer.mesh(kind, &mut meshes);
        let domain = live.domain_of(e.feed).unwrap_or(Domain::Urban);
        let mut transform = Transform::from_translation(target).with_rotation(rotation);
        if kind == MarkerKind::District {
            transform.scale = Vec3::new(1.0, height_scale, 1.0);
        }
        let entity = commands
            .spawn((
                LiveMarker {
                    slot,
                    kind,
                    domain,
                    from: target,
                    to: target,
                    started_s: now,
                    duration_s: 0.0,
                    moving: false,
                },
                Mesh3d(mesh),
                MeshMaterial3d(material),
                transform,
                // A marker of a hidden sub-brain stays hidden from its first frame.
                domain_visibility(&domains, domain),
            ))
            .id();
        if layer.by_slot.len() <= slot as usize {
            layer.by_slot.resize(slot as usize + 1, None);
        }
        layer.by_slot[slot as usize] = Some(entity);
        *layer.counts.entry(kind).or_default() += 1;
    }
    let _ = &city;
}

/// Glides markers from their last position to the new one. It writes GlobalTransform
/// straight from the glide: markers are root entities with no children, so this is
/// what transform propagation would compute, without propagating 50 000 changed
/// Transforms every frame.
pub fn move_markers(
    time: Res<Time>,
    mut markers: Query<(&mut LiveMarker, &Transform, &mut GlobalTransform)>,
) {
    let now = time.elapsed_secs_f64();
    markers.par_iter_mut().for_each(|(mut m, t, mut global)| {
        if !m.moving {
            return;
        }
        let position = m.position_at(now);
        *global = GlobalTransform::from(Transform {
            translation: position,
            rotation: t.rotation,
            scale: t.scale,
        });
        if (now - m.started_s) >= m.duration_s {
            m.moving = false;
        }
    });
}

fn pulse_alerts(time: Res<Time>, mut markers: Query<(&LiveMarker, &mut Transform)>) {
    let s = pulse_scale(time.elapsed_secs_f64());
    for (m, mut t) in &mut markers {
        if m.kind == MarkerKind::Alert {
            t.scale = Vec3::new(s, 1.0, s);
        }
    }
}

fn domain_visibility(domains: &DomainVisibility, domain: Domain) -> Visibility {
    if domains.is_visible(domain) {
        Visibility::Inherited
    } else {
        Visibility::Hidden
    }
}

fn marker_visibility(
    visibility: Res<DomainVisibility>,
    mut markers: Query<(&LiveMarker, &mut Visibility)>,
) {
    if !visibility.is_changed() {
        return;
    }
    for (m, mut v) in &mut markers {
        *v = domain_visibility(&visibility, m.domain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::bench_markers::{apply_updates, headless_live_app, vehicle};

    fn marker_app() -> App {
        let mut app = headless_live_app();
        app.init_resource::<MarkerLayer>().add_systems(
            Update,
            (update_markers, marker_visibility)
                .chain()
                .in_set(AppSystems::SyncScene),
        );
        app
    }

    fn visibilities(app: &mut App) -> Vec<Visibility> {
        let mut q = app.world_mut().query::<(&LiveMarker, &Visibility)>();
        q.iter(app.world()).map(|(_, v)| *v).collect()
    }

    #[test]
    fn units_arriving_while_their_sub_brain_is_unticked_stay_hidden() {
        let mut app = marker_app();
        let frame = app.world().resource::<City>().map.frame;
        let safety = Domain::ALL
            .iter()
            .position(|&d| d == Domain::Safety)
            .unwrap() as u32;
        app.update();
        // Public safety is unticked before any of its units has reported.
        app.world_mut()
            .resource_mut::<DomainVisibility>()
            .0
            .insert(Domain::Safety, false);
        app.update();
        apply_updates(&mut app, safety, (0..20).map(|i| vehicle(i, 0, &frame)));
        app.update();
        let v = visibilities(&mut app);
        assert_eq!(v.len(), 20);
        assert!(v.iter().all(|v| *v == Visibility::Hidden), "{v:?}");
        // Ticked again: they show.
        app.world_mut()
            .resource_mut::<DomainVisibility>()
            .0
            .insert(Domain::Safety, true);
        app.update();
        let v = visibilities(&mut app);
        assert!(v.iter().all(|v| *v == Visibility::Inherited), "{v:?}");
    }

    const MONTH_S: f64 = 30.0 * 86_400.0;
    const FRAME_S: f64 = 1.0 / 60.0;

    #[test]
    fn a_glide_after_thirty_days_of_uptime_moves_every_frame() {
        // A unit gliding 60 m in one second moves about 1 m each frame, not 15 m every
        // fifteenth frame (an f32 of seconds has 0.25 s steps after a month).
        let (from, to) = (Vec3::ZERO, Vec3::new(60.0, 0.0, 0.0));
        let started = MONTH_S + 0.37;
        let mut last = glide(from, to, started, 1.0, started);
        for k in 1..=60 {
            let p = glide(from, to, started, 1.0, started + k as f64 * FRAME_S);
            let step = p.x - last.x;
            assert!((0.9..1.1).contains(&step), "frame {k}: moved {step} m");
            last = p;
        }
        assert!((last.x - 60.0).abs() < 1e-3);
    }

    #[test]
    fn an_alert_pulse_after_thirty_days_of_uptime_changes_every_frame_smoothly() {
        // The pulse's fastest change is 0.35 × 3 per second.
        let max_step = (0.35 * 3.0 * FRAME_S) as f32 * 1.05;
        let mut last = pulse_scale(MONTH_S);
        let mut changed = 0;
        for k in 1..=120 {
            let s = pulse_scale(MONTH_S + k as f64 * FRAME_S);
            assert!((1.0..=1.35).contains(&s));
            assert!((s - last).abs() <= max_step, "frame {k}: {last} → {s}");
            if (s - last).abs() > 1e-5 {
                changed += 1;
            }
            last = s;
        }
        assert!(
            changed >= 110,
            "the pulse stood still in {} frames",
            120 - changed
        );
    }
}
