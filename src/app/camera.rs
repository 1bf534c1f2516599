//! Camera rig: orbit, pan, zoom and tilt with mouse and keyboard, smooth fly-to and
//! reset to the whole city, clamped so the view never goes under the ground or off
//! into space.

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;
use bevy::window::PrimaryWindow;

use super::layers::markers::LiveMarker;
use super::layers::pick::{Click, Shape, Target, distance_to_line, pick};
use super::layers::traffic::ribbon_width_m;
use super::live::{DomainVisibility, Live};
use super::scene::LayerVisibility;
use super::widgets::UiInput;
use super::{AppSystems, City, Selection, theme};
use crate::feeds::EntityKind;
use crate::map::mesh::{self, MapLayer};
use bevy::math::Affine3A;

pub const FOV_Y: f32 = std::f32::consts::FRAC_PI_4;
const MIN_PITCH: f32 = 0.12;
const MAX_PITCH: f32 = 1.52;
const MIN_DISTANCE_M: f32 = 40.0;
/// Higher is snappier; the pose closes ~1 - e^(-rate·dt) of the gap each frame.
const SMOOTHING_RATE: f32 = 7.0;

/// Where the camera looks from: a point on the ground, a heading, a tilt and a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RigPose {
    /// Point on the ground the camera orbits (world, y = 0).
    pub focus: Vec3,
    /// Heading in radians around the vertical axis.
    pub yaw: f32,
    /// Elevation above the horizon in radians.
    pub pitch: f32,
    pub distance: f32,
}

impl RigPose {
    pub fn eye(&self) -> Vec3 {
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        self.focus + self.distance * Vec3::new(cp * sy, sp, cp * cy)
    }

    fn lerp(&self, goal: &RigPose, t: f32) -> RigPose {
        // Interpolate distance in log space so long flights feel even.
        let log_d = self.distance.ln() + (goal.distance.ln() - self.distance.ln()) * t;
        let mut dyaw = goal.yaw - self.yaw;
        dyaw =
            (dyaw + std::f32::consts::PI).rem_euclid(std::f32::consts::TAU) - std::f32::consts::PI;
        RigPose {
            focus: self.focus.lerp(goal.focus, t),
            yaw: self.yaw + dyaw * t,
            pitch: self.pitch + (goal.pitch - self.pitch) * t,
            distance: log_d.exp(),
        }
    }
}

/// The camera's current pose, the pose it is moving to, and the limits.
#[derive(Resource, Debug, Clone)]
pub struct CameraRig {
    pub pose: RigPose,
    pub goal: RigPose,
    pub home: RigPose,
    /// World-space x/z bounds the focus stays within: [min_x, min_z, max_x, max_z].
    pub bounds: [f32; 4],
    pub max_distance: f32,
    /// Saved views, by name.
    pub bookmarks: Vec<(String, RigPose)>,
    /// The part of the window the map shows (no panel over it) and the window's size,
    /// in logical pixels, as of last frame; `None` until the first frame.
    pub map_view: Option<MapView>,
    /// The city's corners on the ground (world), for framing it.
    city_corners: [Vec3; 4],
}

/// The visible map area: `rect` of a window `window` pixels wide and tall.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapView {
    pub rect: Rect,
    pub window: Vec2,
}

impl MapView {
    /// The map area from what the panels leave (`UiInput::view_rect`, logical pixels),
    /// within the window; `None` when nothing of the map shows.
    pub fn new(free: Rect, window: Vec2) -> Option<Self> {
        let rect = free.intersect(Rect::from_corners(Vec2::ZERO, window));
        (rect.width() >= 1.0 && rect.height() >= 1.0).then_some(MapView { rect, window })
    }
}

/// Where a world point shows in a `window`-sized view from `pose` (logical pixels);
/// `None` when it is behind the camera.
pub fn project(pose: &RigPose, p: Vec3, window: Vec2) -> Option<Vec2> {
    let eye = pose.eye();
    let look = Transform::from_translation(eye).looking_at(pose.focus, Vec3::Y);
    let c = look.rotation.inverse() * (p - eye);
    if c.z > -1e-3 {
        return None;
    }
    let tan = (FOV_Y * 0.5).tan();
    let ndc = Vec2::new(c.x / (-c.z * tan * window.x / window.y), c.y / (-c.z * tan));
    Some(Vec2::new(
        (ndc.x + 1.0) * 0.5 * window.x,
        (1.0 - ndc.y) * 0.5 * window.y,
    ))
}

/// Where the ray through pixel `px` of a `window`-sized view from `pose` meets the
/// ground (y = 0), if it does.
pub fn ground_at(pose: &RigPose, px: Vec2, window: Vec2) -> Option<Vec3> {
    let eye = pose.eye();
    let look = Transform::from_translation(eye).looking_at(pose.focus, Vec3::Y);
    let tan = (FOV_Y * 0.5).tan();
    let ndc = Vec2::new(px.x / window.x * 2.0 - 1.0, 1.0 - px.y / window.y * 2.0);
    let dir = look.rotation * Vec3::new(ndc.x * tan * window.x / window.y, ndc.y * tan, -1.0);
    if dir.y > -1e-6 {
        return None;
    }
    Some(eye + dir * (-eye.y / dir.y))
}

impl CameraRig {
    /// A rig framing a city whose local bounds are `[min_e, min_n, max_e, max_n]`.
    pub fn for_bounds(local: [f64; 4]) -> Self {
        let [min_e, min_n, max_e, max_n] = local.map(|v| v as f32);
        let centre = Vec3::new((min_e + max_e) * 0.5, 0.0, -(min_n + max_n) * 0.5);
        let extent = (max_e - min_e).max(max_n - min_n).max(200.0);
        // Half a city beyond its edge: with panels over part of the window, the whole
        // city is framed in the rest by a focus off its centre.
        let margin = extent * 0.5;
        let home = RigPose {
            focus: centre,
            yaw: 0.35,
            pitch: 0.85,
            distance: (extent * 0.5 / (FOV_Y * 0.5).tan()) * 0.95,
        };
        CameraRig {
            pose: home,
            goal: home,
            home,
            bounds: [
                min_e - margin,
                -max_n - margin,
                max_e + margin,
                -min_n + margin,
            ],
            max_distance: extent * 3.0,
            bookmarks: Vec::new(),
            map_view: None,
            city_corners: [
                Vec3::new(min_e, 0.0, -min_n),
                Vec3::new(max_e, 0.0, -min_n),
                Vec3::new(max_e, 0.0, -max_n),
                Vec3::new(min_e, 0.0, -max_n),
            ],
        }
    }

    /// The whole city framed in the visible map area: far enough back that it fits the
    /// area's narrower side, and moved so that its centre is the area's centre.
    pub fn home_in(&self, view: &MapView) -> RigPose {
        // Share of the area's half-width and half-height the city may reach.
        const FILL: f32 = 0.95;
        let centre_px = view.rect.center();
        let half = view.rect.half_size() * FILL;
        let mut pose = self.home;
        let centre = |pose: &mut RigPose| {
            // Moving the focus moves the ground under every pixel by the same vector.
            if let Some(under) = ground_at(pose, centre_px, view.window) {
                pose.focus += self.home.focus - under;
                pose.focus.y = 0.0;
            }
        };
        // Perspective: the city's size on screen goes as 1/distance, near enough that
        // a few rounds settle it.
        for _ in 0..6 {
            centre(&mut pose);
            let reach = self.city_corners.iter().try_fold(0.0f32, |reach, &corner| {
                let p = project(&pose, corner, view.window)?;
                let d = (p - centre_px).abs() / half;
                Some(reach.max(d.x).max(d.y))
            });
            let scale = reach.unwrap_or(2.0).clamp(0.25, 4.0);
            pose.distance = (pose.distance * scale).clamp(MIN_DISTANCE_M, self.max_distance);
        }
        centre(&mut pose);
        pose
    }

    /// The ground point at the centre of the visible map area, where the camera is
    /// going: "the view centre" when panels cover part of the window.
    pub fn map_centre(&self) -> Vec3 {
        self.map_view
            .and_then(|v| ground_at(&self.goal, v.rect.center(), v.window))
            .map_or(self.goal.focus, |p| Vec3::new(p.x, 0.0, p.z))
    }

    /// Keeps the goal inside the limits.
    pub fn clamp_goal(&mut self) {
        let g = &mut self.goal;
        g.pitch = g.pitch.clamp(MIN_PITCH, MAX_PITCH);
        g.distance = g.distance.clamp(MIN_DISTANCE_M, self.max_distance);
        g.focus.x = g.focus.x.clamp(self.bounds[0], self.bounds[2]);
        g.focus.z = g.focus.z.clamp(self.bounds[1], self.bounds[3]);
        g.focus.y = 0.0;
    }

    pub fn fly_to(&mut self, focus: Vec3, distance: f32) {
        self.goal.focus = Vec3::new(focus.x, 0.0, focus.z);
        self.goal.distance = distance;
        self.goal.pitch = self.goal.pitch.clamp(0.5, 1.1);
        self.clamp_goal();
    }

    /// Back to the whole city, framed in the visible map area.
    pub fn reset(&mut self) {
        self.goal = match &self.map_view {
            Some(view) => self.home_in(view),
            None => self.home,
        };
        self.clamp_goal();
    }

    /// Advances the pose toward the goal.
    pub fn step(&mut self, dt_secs: f32) {
        let t = 1.0 - (-SMOOTHING_RATE * dt_secs).exp();
        self.pose = self.pose.lerp(&self.goal, t);
    }

    /// Pans the goal by a screen-space drag of `delta` pixels in a view `height` pixels tall.
    pub fn pan_pixels(&mut self, delta: Vec2, view_height_px: f32) {
        let metres_per_px =
            2.0 * self.goal.distance * (FOV_Y * 0.5).tan() / view_height_px.max(1.0);
        let (sy, cy) = self.goal.yaw.sin_cos();
        let right = Vec3::new(cy, 0.0, -sy);
        let forward = Vec3::new(-sy, 0.0, -cy);
        let pitch_stretch = 1.0 / self.goal.pitch.sin().max(0.3);
        self.goal.focus += (-delta.x * right + delta.y * forward * pitch_stretch) * metres_per_px;
        self.clamp_goal();
    }

    pub fn zoom(&mut self, steps: f32) {
        self.goal.distance *= 0.85f32.powf(steps);
        self.clamp_goal();
    }

    pub fn orbit(&mut self, dyaw: f32, dpitch: f32) {
        self.goal.yaw += dyaw;
        self.goal.pitch += dpitch;
        self.clamp_goal();
    }
}

#[derive(Component)]
pub struct MainCamera;

/// Mouse state between press and release, to tell a click from a drag.
#[derive(Resource, Default)]
struct DragState {
    pressed_at: Option<Vec2>,
    dragged_px: f32,
    /// Cursor position last frame. Drags follow the cursor, not raw device motion,
    /// which remote desktops and synthetic input (video-wall controllers) do not send.
    last_cursor: Option<Vec2>,
    /// Where a left click (not a drag) landed this frame, for `pick_on_click`.
    click: Option<Vec2>,
}

/// A near miss within this many pixels of a marker or pin still picks it.
const PICK_TOLERANCE_PX: f32 = 6.0;
/// Height of the traffic ribbons above the ground.
const TRAFFIC_Y: f32 = mesh::ROAD_Y + 0.2;

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<DragState>()
        .init_resource::<MapPins>()
        .add_message::<PinPicked>()
        .add_systems(Startup, spawn_camera)
        .add_systems(
            Update,
            (
                (mouse_controls, pick_on_click, keyboard_controls)
                    .chain()
                    .in_set(AppSystems::Input),
                (track_map_view, apply_rig)
                    .chain()
                    .in_set(AppSystems::SyncScene),
            ),
        );
}

fn spawn_camera(mut commands: Commands, rig: Res<CameraRig>) {
    commands.insert_resource(ClearColor(theme::CLEAR));
    commands.spawn((
        MainCamera,
        Camera3d::default(),
        Projection::Perspective(PerspectiveProjection {
            fov: FOV_Y,
            near: 1.0,
            far: 200_000.0,
            ..default()
        }),
        Msaa::Sample4,
        Tonemapping::None,
        Transform::from_translation(rig.pose.eye()).looking_at(rig.pose.focus, Vec3::Y),
    ));
}

/// Keeps the rig's idea of the visible map area current (what the panels leave).
fn track_map_view(
    ui: Res<UiInput>,
    window: Query<&Window, With<PrimaryWindow>>,
    mut rig: ResMut<CameraRig>,
) {
    let Ok(window) = window.single() else { return };
    let view = MapView::new(
        Rect::new(
            ui.view_rect.min.x,
            ui.view_rect.min.y,
            ui.view_rect.max.x,
            ui.view_rect.max.y,
        ),
        Vec2::new(window.width(), window.height()),
    );
    if rig.map_view != view {
        rig.map_view = view;
    }
}

fn apply_rig(
    time: Res<Time>,
    mut rig: ResMut<CameraRig>,
    mut camera: Query<&mut Transform, With<MainCamera>>,
) {
    rig.step(time.delta_secs());
    for mut transform in &mut camera {
        *transform =
            Transform::from_translation(rig.pose.eye()).looking_at(rig.pose.focus, Vec3::Y);
    }
}

fn mouse_controls(
    buttons: Res<ButtonInput<MouseButton>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    window: Query<&Window, With<PrimaryWindow>>,
    ui: Res<UiInput>,
    mut rig: ResMut<CameraRig>,
    mut drag: ResMut<DragState>,
) {
    drag.click = None;
    let Ok(window) = window.single() else { return };
    let cursor = window.cursor_position();
    let over_3d = cursor.is_some_and(|p| ui.over_3d_view(p));

    if over_3d && scroll.delta.y != 0.0 {
        let steps = match scroll.unit {
            MouseScrollUnit::Line => scroll.delta.y,
            MouseScrollUnit::Pixel => scroll.delta.y / 100.0,
        };
        rig.zoom(steps);
    }

    let any = [MouseButton::Left, MouseButton::Right, MouseButton::Middle];
    if buttons.any_just_pressed(any) {
        drag.pressed_at = if over_3d { cursor } else { None };
        drag.dragged_px = 0.0;
        drag.last_cursor = cursor;
    }
    if drag.pressed_at.is_none() {
        drag.last_cursor = cursor;
        return;
    }
    let delta = match (cursor, drag.last_cursor) {
        (Some(now), Some(before)) => now - before,
        _ => motion.delta,
    };
    // Distance from the press point, not summed motion: a click whose pointer move
    // lands in the same (slow) frame is still a click.
    if let (Some(start), Some(now)) = (drag.pressed_at, cursor) {
        drag.dragged_px = drag.dragged_px.max(start.distance(now));
    }
    drag.last_cursor = cursor;
    if buttons.pressed(MouseButton::Left) && !buttons.pressed(MouseButton::Right) {
        rig.pan_pixels(delta, window.height());
    } else if buttons.pressed(MouseButton::Right) || buttons.pressed(MouseButton::Middle) {
        rig.orbit(-delta.x * 0.005, delta.y * 0.004);
    }
    if buttons.just_released(MouseButton::Left) {
        let was_click = drag.dragged_px < 4.0;
        drag.pressed_at = None;
        if !was_click {
            return;
        }
        drag.click = cursor;
        return;
    }
    if buttons.any_just_released(any) && !buttons.any_pressed(any) {
        drag.pressed_at = None;
    }
}

/// What a click picks: the nearest thing drawn under it, by each thing's own shape —
/// a live marker of a shown sub-brain, a dispatch pin, or a building.
#[allow(clippy::too_many_arguments)]
fn pick_on_click(
    drag: Res<DragState>,
    camera: Query<(&Camera, &GlobalTransform), With<MainCamera>>,
    markers: Query<(&LiveMarker, &GlobalTransform, &Visibility)>,
    domains: Res<DomainVisibility>,
    layers: Res<LayerVisibility>,
    city: Res<City>,
    rig: Res<CameraRig>,
    mut selection: ResMut<Selection>,
    pins: Res<MapPins>,
    mut pin_picked: MessageWriter<PinPicked>,
    live: Option<Res<Live>>,
    mut layout: Option<ResMut<super::layout::ShellLayout>>,
) {
    let Some(cursor) = drag.click else { return };
    let Ok((cam, cam_tf)) = camera.single() else {
        return;
    };
    let Ok(ray) = cam.viewport_to_world(cam_tf, cursor) else {
        return;
    };
    let Some(view) = cam.logical_viewport_size() else {
        return;
    };
    let click = Click {
        origin: ray.origin,
        dir: *ray.direction,
        metres_per_px_per_m: 2.0 * (FOV_Y * 0.5).tan() / view.y.max(1.0),
        tolerance_px: PICK_TOLERANCE_PX,
    };
    let mut targets: Vec<Target<Picks>> = markers
        .iter()
        .filter(|(m, _, v)| **v != Visibility::Hidden && domains.is_visible(m.domain))
        .map(|(m, global, _)| Target {
            what: Picks::Entity(m.slot),
            shape: m.kind.shape(),
            world_from_local: global.affine(),
        })
        .collect();
    targets.extend(pin_targets(&pins, &city));
    let picked = pick(&click, &targets);
    // A building in front of what was picked (or under an empty click) wins.
    let building_reach = picked.as_ref().map_or(rig.pose.distance * 3.0, |p| p.t);
    let building = if layers.is_visible(MapLayer::Buildings) {
        let (o, d) = (click.origin, click.dir);
        // World (x, y up, z south) → local (east, north, up).
        city.index.building_on_ray(
            &city.map,
            [o.x as f64, -o.z as f64, o.y as f64],
            [d.x as f64, -d.z as f64, d.y as f64],
            building_reach as f64,
        )
    } else {
        None
    };
    // Nothing drawn above the ground: a road segment a traffic feed reports, under
    // the click (within its half width and the tolerance).
    let picked = picked.map(|p| p.what).or_else(|| {
        if building.is_some() {
            return None;
        }
        let live = live.as_deref()?;
        let t = ray.intersect_plane(Vec3::Y * TRAFFIC_Y, InfinitePlane3d::new(Vec3::Y))?;
        let ground = ray.get_point(t);
        let [e, n] = crate::geo_frame::local_from_world(ground.x, ground.z);
        let slack_m = (PICK_TOLERANCE_PX * click.metres_per_px_per_m * t) as f64;
        road_segment_at(live, &domains, &city, [e, n], slack_m).map(Picks::Entity)
    });
    use super::layout::SidePanelKind;
    // What the click changed comes to the front when the panels are tabs.
    let front = match (building, picked) {
        (None, Some(Picks::Entity(slot))) => {
            selection.entity = Some(slot);
            selection.building = None;
            Some(SidePanelKind::Inspector)
        }
        (None, Some(Picks::Incident(id))) => {
            selection.building = None;
            selection.entity = None;
            pin_picked.write(PinPicked(id));
            Some(SidePanelKind::Desk)
        }
        (building, _) => {
            selection.building = building;
            selection.entity = None;
            building.map(|_| SidePanelKind::Inspector)
        }
    };
    if let (Some(kind), Some(layout)) = (front, layout.as_deref_mut()) {
        layout.show_first(kind);
    }
}

/// The traffic segment (of a shown sub-brain) whose ribbon is under a ground point,
/// within `slack_m` beyond its half width; the nearest one.
fn road_segment_at(
    live: &Live,
    domains: &DomainVisibility,
    city: &City,
    at: [f64; 2],
    slack_m: f64,
) -> Option<u32> {
    // Segments are indexed by their first point: take enough neighbours that a long
    // segment passing under the click is among them.
    live.shown()
        .nearest(at[0], at[1], 48)
        .into_iter()
        .filter_map(|slot| {
            let e = live.shown().entity(slot)?;
            let line = e.line.as_ref()?;
            if !matches!(e.kind, EntityKind::TrafficFlow { .. })
                || !domains.is_visible(live.domain_of(e.feed)?)
            {
                return None;
            }
            let local: Vec<[f64; 2]> = line
                .iter()
                .map(|&[lon, lat]| city.map.frame.local_from_wgs84(lon, lat))
                .collect();
            let d = distance_to_line(at, &local);
            let half_width = ribbon_width_m(e, &city.map) as f64 * 0.5;
            (d <= half_width + slack_m).then_some((slot, d))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(slot, _)| slot)
}

/// What a click can pick besides a building.
#[derive(Clone, Debug, PartialEq)]
enum Picks {
    /// A live marker's slot.
    Entity(u32),
    /// A dispatch pin's incident id.
    Incident(String),
}

/// A dispatch pin as drawn on the map: a column `height` metres tall on a ring.
#[derive(Clone, Debug, PartialEq)]
pub struct MapPin {
    pub incident: String,
    pub lon: f64,
    pub lat: f64,
    pub height: f32,
    pub ring: f32,
}

/// The dispatch pins drawn now; whoever draws them (the desk) keeps this to what it
/// draws, so a pin on the map is a pin under the cursor.
#[derive(Resource, Default, Debug)]
pub struct MapPins(pub Vec<MapPin>);

/// A dispatch pin clicked on the map (its incident's id), for the desk to select.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct PinPicked(pub String);

/// The pins as drawn: a column on a ring each.
fn pin_targets(pins: &MapPins, city: &City) -> Vec<Target<Picks>> {
    let mut targets = Vec::with_capacity(pins.0.len() * 2);
    for pin in &pins.0 {
        let [e, n] = city.map.frame.local_from_wgs84(pin.lon, pin.lat);
        let ground = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
        let (height, ring) = (pin.height, pin.ring);
        for (shape, y) in [
            (
                Shape::Cylinder {
                    radius: 4.0,
                    half_height: height * 0.5,
                },
                height * 0.5,
            ),
            (
                Shape::Cylinder {
                    radius: ring,
                    half_height: 0.3,
                },
                mesh::DISTRICT_Y + 0.3,
            ),
        ] {
            targets.push(Target {
                what: Picks::Incident(pin.incident.clone()),
                shape,
                world_from_local: Affine3A::from_translation(ground + Vec3::Y * y),
            });
        }
    }
    targets
}

fn keyboard_controls(
    keys: Res<ButtonInput<KeyCode>>,
    time: Res<Time>,
    ui: Res<UiInput>,
    city: Res<City>,
    selection: Res<Selection>,
    mut rig: ResMut<CameraRig>,
) {
    if ui.wants_keyboard {
        return;
    }
    let dt = time.delta_secs();
    let mut pan = Vec2::ZERO;
    if keys.any_pressed([KeyCode::KeyW, KeyCode::ArrowUp]) {
        pan.y += 1.0;
    }
    if keys.any_pressed([KeyCode::KeyS, KeyCode::ArrowDown]) {
        pan.y -= 1.0;
    }
    if keys.any_pressed([KeyCode::KeyA, KeyCode::ArrowLeft]) {
        pan.x += 1.0;
    }
    if keys.any_pressed([KeyCode::KeyD, KeyCode::ArrowRight]) {
        pan.x -= 1.0;
    }
    if pan != Vec2::ZERO {
        // Half a screen height per second.
        rig.pan_pixels(pan * 500.0 * dt, 1000.0);
    }
    let mut yaw = 0.0;
    if keys.pressed(KeyCode::KeyQ) {
        yaw += 1.2 * dt;
    }
    if keys.pressed(KeyCode::KeyE) {
        yaw -= 1.2 * dt;
    }
    let mut pitch = 0.0;
    if keys.pressed(KeyCode::KeyR) {
        pitch += 0.8 * dt;
    }
    if keys.pressed(KeyCode::KeyF) {
        pitch -= 0.8 * dt;
    }
    if yaw != 0.0 || pitch != 0.0 {
        rig.orbit(yaw, pitch);
    }
    if keys.any_pressed([KeyCode::Equal, KeyCode::NumpadAdd, KeyCode::PageUp]) {
        rig.zoom(3.0 * dt);
    }
    if keys.any_pressed([KeyCode::Minus, KeyCode::NumpadSubtract, KeyCode::PageDown]) {
        rig.zoom(-3.0 * dt);
    }
    if keys.just_pressed(KeyCode::Home) || keys.just_pressed(KeyCode::Digit0) {
        rig.reset();
    }
    if keys.just_pressed(KeyCode::KeyG)
        && let Some(i) = selection.building
    {
        super::fly_to_building(&mut rig, &city, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rig() -> CameraRig {
        CameraRig::for_bounds([-2000.0, -1500.0, 2000.0, 1500.0])
    }

    #[test]
    fn home_frames_the_whole_city_from_above() {
        let r = rig();
        assert!(r.home.eye().y > 1000.0);
        assert_eq!(r.home.focus, Vec3::ZERO);
    }

    #[test]
    fn never_under_the_ground_nor_lost_in_space() {
        let mut r = rig();
        r.orbit(0.0, -10.0);
        r.zoom(100.0);
        for _ in 0..200 {
            r.step(0.05);
        }
        assert!(r.pose.eye().y > 4.0, "eye {:?}", r.pose.eye());
        r.zoom(-1000.0);
        r.pan_pixels(Vec2::new(1e9, 1e9), 100.0);
        for _ in 0..200 {
            r.step(0.05);
        }
        assert!(r.pose.distance <= r.max_distance + 1.0);
        let [min_x, min_z, max_x, max_z] = r.bounds;
        let f = r.pose.focus;
        assert!(
            f.x >= min_x - 1.0 && f.x <= max_x + 1.0 && f.z >= min_z - 1.0 && f.z <= max_z + 1.0,
            "{f:?}"
        );
        // Half a city of margin (framing the city beside panels needs that), no more.
        assert!(max_x <= 2000.0 + 4000.0 * 0.5, "bounds stay near the city");
    }

    #[test]
    fn fly_to_arrives_smoothly() {
        let mut r = rig();
        r.fly_to(Vec3::new(500.0, 0.0, -300.0), 200.0);
        r.step(0.016);
        let first = r.pose.focus;
        assert!(
            first.distance(Vec3::ZERO) < 100.0,
            "moves gradually, not a jump"
        );
        for _ in 0..300 {
            r.step(0.016);
        }
        assert!(r.pose.focus.distance(Vec3::new(500.0, 0.0, -300.0)) < 1.0);
        assert!((r.pose.distance - 200.0).abs() < 1.0);
        r.reset();
        for _ in 0..300 {
            r.step(0.016);
        }
        assert!(r.pose.focus.distance(Vec3::ZERO) < 1.0);
    }

    /// 1600×900 with the layer panel on the left, desk and inspector on the right,
    /// top bars and the status bar: a 560 × 765 px map area left of centre.
    fn covered() -> MapView {
        MapView::new(
            Rect::new(270.0, 110.0, 830.0, 875.0),
            Vec2::new(1600.0, 900.0),
        )
        .unwrap()
    }

    #[test]
    fn whole_city_is_framed_in_the_map_area_the_panels_leave() {
        let mut r = rig();
        let view = covered();
        r.map_view = Some(view);
        r.reset();
        let pose = r.goal;
        // The city's centre shows at the map area's centre, not behind the desk.
        let centre = project(&pose, Vec3::ZERO, view.window).unwrap();
        assert!(
            centre.distance(view.rect.center()) < 2.0,
            "city centre at {centre}, area centre {}",
            view.rect.center()
        );
        // Every corner of the city is inside the area, and the city fills it.
        let mut reach = 0.0f32;
        for &corner in &r.city_corners {
            let p = project(&pose, corner, view.window).unwrap();
            assert!(
                view.rect.contains(p),
                "corner {corner} at {p}, area {:?}",
                view.rect
            );
            let d = (p - view.rect.center()).abs() / view.rect.half_size();
            reach = reach.max(d.x).max(d.y);
        }
        assert!(
            reach > 0.9,
            "the city fills only {:.0}% of the area",
            reach * 100.0
        );
        // The old reset framed it in the whole window: centred behind the panels.
        let old = project(&r.home, Vec3::ZERO, view.window).unwrap();
        assert!(!view.rect.contains(old) || old.distance(view.rect.center()) > 100.0);
    }

    #[test]
    fn the_view_centre_is_the_ground_under_the_map_area_centre() {
        let mut r = rig();
        // Without panels it is the focus.
        assert!(r.map_centre().distance(r.goal.focus) < 1e-3);
        let view = covered();
        r.map_view = Some(view);
        let c = r.map_centre();
        let p = project(&r.goal, c, view.window).unwrap();
        assert!(p.distance(view.rect.center()) < 1.0, "{p}");
        assert!(c.distance(r.goal.focus) > 100.0, "not the window's centre");
    }

    #[test]
    fn ground_at_and_project_agree() {
        let r = rig();
        let window = Vec2::new(1600.0, 900.0);
        let focus_px = project(&r.home, r.home.focus, window).unwrap();
        assert!(focus_px.distance(window / 2.0) < 0.5, "{focus_px}");
        for px in [Vec2::new(100.0, 800.0), Vec2::new(1500.0, 300.0)] {
            let g = ground_at(&r.home, px, window).unwrap();
            let back = project(&r.home, g, window).unwrap();
            assert!(back.distance(px) < 0.5, "{px} → {g} → {back}");
        }
    }
}
