//! Camera rig: orbit, pan, zoom and tilt with mouse and keyboard, smooth fly-to and
//! reset to the whole city, clamped so the view never goes under the ground or off
//! into space.

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;
use bevy::window::PrimaryWindow;

use super::desk::Desk;
use super::desk_ui::DeskCommand;
use super::layers::markers::LiveMarker;
use super::layers::pick::{Click, Shape, Target, pick};
use super::live::DomainVisibility;
use super::scene::LayerVisibility;
use super::ui::UiInput;
use super::{AppSystems, City, Selection, theme};
use crate::dispatch::book::Incident;
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
}

impl CameraRig {
    /// A rig framing a city whose local bounds are `[min_e, min_n, max_e, max_n]`.
    pub fn for_bounds(local: [f64; 4]) -> Self {
        let [min_e, min_n, max_e, max_n] = local.map(|v| v as f32);
        let centre = Vec3::new((min_e + max_e) * 0.5, 0.0, -(min_n + max_n) * 0.5);
        let extent = (max_e - min_e).max(max_n - min_n).max(200.0);
        let margin = extent * 0.25;
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
        }
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

    pub fn reset(&mut self) {
        self.goal = self.home;
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
/// Incidents drawn as pins at most (as `desk_pins` draws them).
const MAX_PINS: usize = 300;

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<DragState>()
        .add_systems(Startup, spawn_camera)
        .add_systems(
            Update,
            (
                (mouse_controls, pick_on_click, keyboard_controls)
                    .chain()
                    .in_set(AppSystems::Input),
                apply_rig.in_set(AppSystems::SyncScene),
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
    mut desk: Option<ResMut<Desk>>,
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
    if let Some(desk) = desk.as_deref_mut() {
        targets.extend(pin_targets(desk, &city));
    }
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
    match (building, picked.map(|p| p.what)) {
        (None, Some(Picks::Entity(slot))) => {
            selection.entity = Some(slot);
            selection.building = None;
        }
        (None, Some(Picks::Incident(id))) => {
            if let Some(desk) = desk.as_deref_mut() {
                desk.pending.push(DeskCommand::SelectIncident(Some(id)));
                desk.open = true;
            }
            selection.building = None;
            selection.entity = None;
        }
        (building, _) => {
            selection.building = building;
            selection.entity = None;
        }
    }
}

/// What a click can pick besides a building.
#[derive(Clone, Debug, PartialEq)]
enum Picks {
    /// A live marker's slot.
    Entity(u32),
    /// A dispatch pin's incident id.
    Incident(String),
}

/// The dispatch pins as `desk_pins` draws them: the most urgent open incidents and the
/// selected one, each a column (70 m, 140 m when selected) on a ring.
fn pin_targets(desk: &mut Desk, city: &City) -> Vec<Target<Picks>> {
    let selected = desk.selected.clone();
    let Some(service) = desk.service() else {
        return Vec::new();
    };
    let book = service.dispatcher.book();
    let order = book.by_urgency();
    let mut shown: Vec<&Incident> = order
        .iter()
        .map(|&i| &book.incidents[i])
        .take_while(|i| i.is_open())
        .take(MAX_PINS)
        .collect();
    if let Some(sel) = selected.as_deref().and_then(|id| book.incident(id))
        && !shown.iter().any(|i| i.id == sel.id)
    {
        shown.push(sel);
    }
    let mut targets = Vec::with_capacity(shown.len() * 2);
    for inc in shown {
        let [e, n] = city.map.frame.local_from_wgs84(inc.lon, inc.lat);
        let ground = Vec3::from_array(crate::geo_frame::world_from_local(e, n, 0.0));
        let is_selected = selected.as_deref() == Some(inc.id.as_str());
        let (height, ring) = if is_selected {
            (140.0, 40.0)
        } else {
            (70.0, 22.0)
        };
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
                what: Picks::Incident(inc.id.clone()),
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
        assert!(max_x <= 2000.0 * 1.5, "bounds stay near the city");
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
}
