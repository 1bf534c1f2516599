//! Camera rig: orbit, pan, zoom and tilt with mouse and keyboard, smooth fly-to and
//! reset to the whole city, clamped so the view never goes under the ground or off
//! into space.

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;
use bevy::window::PrimaryWindow;

use super::ui::UiInput;
use super::{AppSystems, City, Selection, theme};

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
}

pub(super) fn plugin(app: &mut App) {
    app.init_resource::<DragState>()
        .add_systems(Startup, spawn_camera)
        .add_systems(
            Update,
            (
                (mouse_controls, keyboard_controls).in_set(AppSystems::Input),
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

#[allow(clippy::too_many_arguments)]
fn mouse_controls(
    buttons: Res<ButtonInput<MouseButton>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    window: Query<&Window, With<PrimaryWindow>>,
    camera: Query<(&Camera, &GlobalTransform), With<MainCamera>>,
    ui: Res<UiInput>,
    city: Res<City>,
    mut rig: ResMut<CameraRig>,
    mut drag: ResMut<DragState>,
    mut selection: ResMut<Selection>,
    live: Option<Res<super::live::Live>>,
) {
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
        let (Some(cursor), Ok((cam, cam_tf))) = (cursor, camera.single()) else {
            return;
        };
        let Ok(ray) = cam.viewport_to_world(cam_tf, cursor) else {
            return;
        };
        let o = ray.origin;
        let d = *ray.direction;
        // A live marker near where the ray meets street level wins over the building.
        if let Some(live) = &live
            && let Some(t) =
                ray.intersect_plane(Vec3::new(0.0, 3.0, 0.0), InfinitePlane3d::new(Vec3::Y))
        {
            let p = ray.get_point(t);
            let tolerance = (rig.pose.distance * 0.025).max(12.0) as f64;
            let [e, n] = crate::geo_frame::local_from_world(p.x, p.z);
            let hit = live.state.nearest(e, n, 1).into_iter().find(|&slot| {
                live.state
                    .entity(slot)
                    .and_then(|x| x.local)
                    .is_some_and(|[x, y]| (x - e).hypot(y - n) <= tolerance)
            });
            if let Some(slot) = hit {
                selection.entity = Some(slot);
                selection.building = None;
                return;
            }
        }
        // World (x, y up, z south) → local (east, north, up).
        let hit = city.index.building_on_ray(
            &city.map,
            [o.x as f64, -o.z as f64, o.y as f64],
            [d.x as f64, -d.z as f64, d.y as f64],
            (rig.pose.distance * 3.0) as f64,
        );
        selection.building = hit;
        selection.entity = None;
    }
    if buttons.any_just_released(any) && !buttons.any_pressed(any) {
        drag.pressed_at = None;
    }
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
