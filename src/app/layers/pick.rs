//! Picking what the layers draw: a click's ray against each marker's own shape, where
//! it stands (its transform: position, heading, pulse and height scale), so the tall
//! beacon in front is hit and not the low marker behind it. A click that misses every
//! shape by a few pixels still takes the nearest one, so a 6 m vehicle can be clicked
//! from a city-wide view.

use bevy::math::Affine3A;
use bevy::prelude::*;

/// A marker's shape in its own space, centred on the origin, y up.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// An axis-aligned box of these half extents.
    Box(Vec3),
    /// A vertical cylinder.
    Cylinder {
        radius: f32,
        half_height: f32,
    },
    Sphere(f32),
}

impl Shape {
    pub fn mesh(self) -> Mesh {
        match self {
            Shape::Box(half) => Cuboid::new(half.x * 2.0, half.y * 2.0, half.z * 2.0).into(),
            Shape::Cylinder {
                radius,
                half_height,
            } => Cylinder::new(radius, half_height * 2.0).into(),
            Shape::Sphere(radius) => Sphere::new(radius).into(),
        }
    }

    /// The first `t >= 0` where `origin + t·dir` (own space) meets the shape.
    pub fn ray_hit(self, origin: Vec3, dir: Vec3) -> Option<f32> {
        match self {
            Shape::Box(half) => ray_box(origin, dir, -half, half),
            Shape::Cylinder {
                radius,
                half_height,
            } => ray_cylinder(origin, dir, radius, half_height),
            Shape::Sphere(radius) => ray_sphere(origin, dir, radius),
        }
    }

    /// The shape's core as a segment (own space): its vertical axis, or for a long
    /// flat box (a vehicle) its length; the near-miss distance is measured to it.
    fn core(self) -> (Vec3, Vec3) {
        match self {
            Shape::Box(h) if h.z >= h.x && h.z >= h.y => {
                (Vec3::new(0.0, 0.0, -h.z), Vec3::new(0.0, 0.0, h.z))
            }
            Shape::Box(h) if h.x >= h.y => (Vec3::new(-h.x, 0.0, 0.0), Vec3::new(h.x, 0.0, 0.0)),
            Shape::Box(h) => (Vec3::new(0.0, -h.y, 0.0), Vec3::new(0.0, h.y, 0.0)),
            Shape::Cylinder { half_height, .. } => (
                Vec3::new(0.0, -half_height, 0.0),
                Vec3::new(0.0, half_height, 0.0),
            ),
            Shape::Sphere(_) => (Vec3::ZERO, Vec3::ZERO),
        }
    }
}

/// Slab test against an axis-aligned box.
fn ray_box(o: Vec3, d: Vec3, min: Vec3, max: Vec3) -> Option<f32> {
    let (mut t0, mut t1) = (0.0f32, f32::INFINITY);
    for i in 0..3 {
        if d[i].abs() < 1e-12 {
            if o[i] < min[i] || o[i] > max[i] {
                return None;
            }
            continue;
        }
        let (a, b) = ((min[i] - o[i]) / d[i], (max[i] - o[i]) / d[i]);
        t0 = t0.max(a.min(b));
        t1 = t1.min(a.max(b));
        if t0 > t1 {
            return None;
        }
    }
    Some(t0)
}

fn ray_cylinder(o: Vec3, d: Vec3, r: f32, hh: f32) -> Option<f32> {
    let inside = |t: f32| {
        let p = o + d * t;
        (p.x * p.x + p.z * p.z <= r * r * 1.0001 && p.y.abs() <= hh * 1.0001).then_some(t)
    };
    let mut best: Option<f32> = None;
    let mut keep = |t: Option<f32>| {
        if let Some(t) = t.filter(|t| *t >= 0.0) {
            best = Some(best.map_or(t, |b: f32| b.min(t)));
        }
    };
    // The side.
    let (a, b, c) = (
        d.x * d.x + d.z * d.z,
        2.0 * (o.x * d.x + o.z * d.z),
        o.x * o.x + o.z * o.z - r * r,
    );
    if a > 1e-12 {
        let disc = b * b - 4.0 * a * c;
        if disc >= 0.0 {
            let s = disc.sqrt();
            for t in [(-b - s) / (2.0 * a), (-b + s) / (2.0 * a)] {
                let p = o + d * t;
                if p.y.abs() <= hh {
                    keep(Some(t));
                }
            }
        }
    }
    // The caps.
    if d.y.abs() > 1e-12 {
        for y in [-hh, hh] {
            keep(inside((y - o.y) / d.y));
        }
    }
    // A ray starting inside.
    keep(inside(0.0));
    best
}

fn ray_sphere(o: Vec3, d: Vec3, r: f32) -> Option<f32> {
    let a = d.length_squared();
    let b = 2.0 * o.dot(d);
    let c = o.length_squared() - r * r;
    let disc = b * b - 4.0 * a * c;
    if a < 1e-12 || disc < 0.0 {
        return None;
    }
    let s = disc.sqrt();
    let (t0, t1) = ((-b - s) / (2.0 * a), (-b + s) / (2.0 * a));
    if t1 < 0.0 { None } else { Some(t0.max(0.0)) }
}

/// Distance between a ray (`o`, unit `d`) and the segment `a`–`b`, and the ray's
/// parameter at the closest point.
pub fn ray_segment_distance(o: Vec3, d: Vec3, a: Vec3, b: Vec3) -> (f32, f32) {
    // Closest points of the two lines, the segment's parameter clamped, then the
    // ray's point for it and the segment's point for that.
    let u = b - a;
    let uu = u.dot(u);
    let mut s = 0.0;
    if uu > 1e-12 {
        let w = o - a;
        let ud = u.dot(d);
        let denom = uu - ud * ud;
        if denom > 1e-9 {
            s = ((u.dot(w) - ud * d.dot(w)) / denom).clamp(0.0, 1.0);
        }
    }
    let t = (a + u * s - o).dot(d).max(0.0);
    if uu > 1e-12 {
        s = ((o + d * t - a).dot(u) / uu).clamp(0.0, 1.0);
    }
    let q = a + u * s;
    ((o + d * t).distance(q), t)
}

/// Distance from a point to a polyline (local metres).
pub fn distance_to_line(p: [f64; 2], line: &[[f64; 2]]) -> f64 {
    let point = |a: [f64; 2]| (p[0] - a[0]).hypot(p[1] - a[1]);
    match line {
        [] => f64::INFINITY,
        [a] => point(*a),
        _ => line
            .windows(2)
            .map(|w| {
                let ([ax, ay], [bx, by]) = (w[0], w[1]);
                let (ux, uy) = (bx - ax, by - ay);
                let len2 = ux * ux + uy * uy;
                let s = if len2 > 0.0 {
                    (((p[0] - ax) * ux + (p[1] - ay) * uy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (p[0] - (ax + ux * s)).hypot(p[1] - (ay + uy * s))
            })
            .fold(f64::INFINITY, f64::min),
    }
}

/// Something drawn that a click may pick.
#[derive(Clone, Debug)]
pub struct Target<T> {
    pub what: T,
    pub shape: Shape,
    /// Where and how it is drawn: its global transform.
    pub world_from_local: Affine3A,
}

/// The click's ray, and how many metres one pixel spans one metre in front of the
/// camera (`2·tan(fov/2) / viewport height`), for the near-miss tolerance.
#[derive(Clone, Copy, Debug)]
pub struct Click {
    pub origin: Vec3,
    /// Unit direction.
    pub dir: Vec3,
    pub metres_per_px_per_m: f32,
    /// A near miss within this many pixels still picks.
    pub tolerance_px: f32,
}

/// What a click picks and how far along its ray.
#[derive(Clone, Debug, PartialEq)]
pub struct Picked<T> {
    pub what: T,
    pub t: f32,
    /// Hit the shape itself, not a near miss.
    pub exact: bool,
}

/// The nearest shape the ray hits; failing that, the shape it passes closest to (in
/// pixels) within the tolerance.
pub fn pick<T: Clone>(click: &Click, targets: &[Target<T>]) -> Option<Picked<T>> {
    let mut exact: Option<(f32, &Target<T>)> = None;
    let mut near: Option<(f32, f32, &Target<T>)> = None;
    for target in targets {
        // A shape at a non-finite place would "hit" every ray (NaN comparisons).
        if !target.world_from_local.is_finite() {
            continue;
        }
        let local_from_world = target.world_from_local.inverse();
        // Not normalised: `t` along the local ray is `t` along the world ray.
        let o = local_from_world.transform_point3(click.origin);
        let d = local_from_world.transform_vector3(click.dir);
        // A camera inside a shape (zoomed in next to a tall marker) does not pick it
        // on every click: only shapes in front of the eye count.
        if let Some(t) = target.shape.ray_hit(o, d).filter(|&t| t > 1e-4) {
            if exact.is_none_or(|(best, _)| t < best) {
                exact = Some((t, target));
            }
            continue;
        }
        if exact.is_some() {
            continue;
        }
        let (a, b) = target.shape.core();
        let (a, b) = (
            target.world_from_local.transform_point3(a),
            target.world_from_local.transform_point3(b),
        );
        let (miss_m, t) = ray_segment_distance(click.origin, click.dir, a, b);
        let px = miss_m / (click.metres_per_px_per_m * t.max(1.0));
        if px <= click.tolerance_px && near.is_none_or(|(best, _, _)| px < best) {
            near = Some((px, t, target));
        }
    }
    if let Some((t, target)) = exact {
        return Some(Picked {
            what: target.what.clone(),
            t,
            exact: true,
        });
    }
    near.map(|(_, t, target)| Picked {
        what: target.what.clone(),
        t,
        exact: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: Vec3) -> Affine3A {
        Affine3A::from_translation(p)
    }

    fn click_towards(from: Vec3, to: Vec3) -> Click {
        Click {
            origin: from,
            dir: (to - from).normalize(),
            metres_per_px_per_m: 2.0 * (std::f32::consts::FRAC_PI_8).tan() / 900.0,
            tolerance_px: 8.0,
        }
    }

    const BEACON: Shape = Shape::Cylinder {
        radius: 14.0,
        half_height: 45.0,
    };
    const CAR: Shape = Shape::Box(Vec3::new(3.0, 2.25, 6.0));

    #[test]
    fn a_tall_beacon_in_front_wins_over_a_low_marker_behind_it() {
        // Looking down at 30°, aimed at the upper part of a 90 m beacon. The ray meets
        // street level well behind it, where a low-severity alert's car stands: the
        // old plane-at-3-m pick chose that one.
        let eye = Vec3::new(0.0, 600.0, 1200.0);
        let beacon_top = Vec3::new(0.0, 80.0, 0.0);
        let c = click_towards(eye, beacon_top);
        let t_street = (eye.y - 3.0) / -c.dir.y;
        let behind = eye + c.dir * t_street;
        assert!(behind.z < -100.0, "the ray lands far behind: {behind}");
        let targets = vec![
            Target {
                what: "low alert behind",
                shape: CAR,
                world_from_local: at(behind),
            },
            Target {
                what: "high beacon",
                shape: BEACON,
                world_from_local: at(Vec3::new(0.0, 45.0, 0.0)),
            },
        ];
        let p = pick(&c, &targets).expect("a hit");
        assert_eq!(p.what, "high beacon");
        assert!(p.exact);
    }

    #[test]
    fn a_shape_at_no_real_place_or_around_the_eye_is_never_picked() {
        let eye = Vec3::new(0.0, 600.0, 1200.0);
        let c = click_towards(eye, Vec3::new(0.0, 45.0, 0.0));
        let targets = vec![
            Target {
                what: "nowhere",
                shape: CAR,
                world_from_local: at(Vec3::new(f32::NAN, 0.0, 0.0)),
            },
            Target {
                what: "around the eye",
                shape: BEACON,
                world_from_local: at(eye),
            },
            Target {
                what: "high beacon",
                shape: BEACON,
                world_from_local: at(Vec3::new(0.0, 45.0, 0.0)),
            },
        ];
        assert_eq!(pick(&c, &targets).expect("a hit").what, "high beacon");
    }

    #[test]
    fn a_click_over_a_beacon_top_misses_once_the_pulse_is_accounted_for() {
        // The pulse widens the beacon: a ray 18 m off its axis hits it scaled by 1.35
        // and misses it at rest (tolerance off).
        let eye = Vec3::new(18.0, 2000.0, 0.0);
        let mut c = click_towards(eye, Vec3::new(18.0, 0.0, 0.0));
        c.tolerance_px = 0.0;
        let rest = Target {
            what: (),
            shape: BEACON,
            world_from_local: at(Vec3::new(0.0, 45.0, 0.0)),
        };
        assert!(pick(&c, std::slice::from_ref(&rest)).is_none());
        let pulsed = Target {
            world_from_local: Affine3A::from_scale_rotation_translation(
                Vec3::new(1.35, 1.0, 1.35),
                Quat::IDENTITY,
                Vec3::new(0.0, 45.0, 0.0),
            ),
            ..rest
        };
        let p = pick(&c, &[pulsed]).expect("hits the widened beacon");
        assert!(
            (p.t - (2000.0 - 90.0)).abs() < 0.5,
            "hits the top cap: {}",
            p.t
        );
    }

    #[test]
    fn a_vehicle_is_hit_along_its_heading() {
        // A 12 m car turned 90°: it lies along x. A click 5 m along x hits it; 5 m along
        // z misses it (tolerance off).
        let car = Target {
            what: (),
            shape: CAR,
            world_from_local: Affine3A::from_rotation_translation(
                Quat::from_rotation_y(std::f32::consts::FRAC_PI_2),
                Vec3::new(0.0, 3.0, 0.0),
            ),
        };
        let mut along = click_towards(Vec3::new(5.0, 500.0, 0.0), Vec3::new(5.0, 0.0, 0.0));
        along.tolerance_px = 0.0;
        assert!(pick(&along, std::slice::from_ref(&car)).is_some());
        let mut across = click_towards(Vec3::new(0.0, 500.0, 5.0), Vec3::new(0.0, 0.0, 5.0));
        across.tolerance_px = 0.0;
        assert!(pick(&across, &[car]).is_none());
    }

    #[test]
    fn from_a_city_wide_view_a_click_a_few_pixels_off_a_vehicle_picks_it() {
        // 3 km away a car is ~2 px long: a click 4 px beside it takes it, one 30 px
        // away takes nothing, and the nearer of two near misses wins.
        let eye = Vec3::new(0.0, 2500.0, 1700.0);
        let car_at = Vec3::new(0.0, 3.0, 0.0);
        let c0 = click_towards(eye, car_at);
        let m_per_px = c0.metres_per_px_per_m * eye.distance(car_at);
        let beside = |px: f32| click_towards(eye, car_at + Vec3::X * px * m_per_px);
        let cars = vec![
            Target {
                what: 1,
                shape: CAR,
                world_from_local: at(car_at),
            },
            Target {
                what: 2,
                shape: CAR,
                world_from_local: at(car_at + Vec3::X * 14.0 * m_per_px),
            },
        ];
        let p = pick(&beside(4.5), &cars).expect("a near miss picks");
        assert_eq!((p.what, p.exact), (1, false));
        assert_eq!(pick(&beside(9.5), &cars).map(|p| p.what), Some(2));
        assert!(pick(&beside(30.0), &cars[..1]).is_none());
    }

    #[test]
    fn a_click_on_a_long_road_segment_is_near_it_far_from_its_ends() {
        let road = [[0.0, 0.0], [400.0, 0.0], [400.0, 300.0]];
        assert!((distance_to_line([200.0, 3.0], &road) - 3.0).abs() < 1e-9);
        assert!((distance_to_line([404.0, 150.0], &road) - 4.0).abs() < 1e-9);
        assert!((distance_to_line([-30.0, 40.0], &road) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn shapes_hit_where_their_meshes_are() {
        // Straight down onto each shape's centre: the top face at its half height.
        for (shape, top) in [
            (Shape::Box(Vec3::new(3.0, 2.0, 6.0)), 2.0),
            (BEACON, 45.0),
            (Shape::Sphere(8.0), 8.0),
        ] {
            let t = shape
                .ray_hit(Vec3::new(0.0, 100.0, 0.0), Vec3::NEG_Y)
                .expect("hit");
            assert!((t - (100.0 - top)).abs() < 1e-3, "{shape:?}: {t}");
            // And the mesh's own bounds agree.
            let aabb =
                bevy::camera::primitives::MeshAabb::compute_aabb(&shape.mesh()).expect("bounds");
            assert!((aabb.max().y - top).abs() < 1e-3, "{shape:?}");
        }
        // Beside a cylinder, inside its bounding box: a miss.
        assert!(
            BEACON
                .ray_hit(Vec3::new(13.0, 100.0, 13.0), Vec3::NEG_Y)
                .is_none()
        );
    }
}
