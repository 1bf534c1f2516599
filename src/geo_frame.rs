//! The local frame: WGS84 longitude/latitude ⇄ metres east/north of the city origin.
//!
//! Computation stays in `f64`; only the final world positions handed to the GPU are
//! narrowed to `f32`, which keeps millimetre precision within tens of kilometres.

use serde::Serialize;

/// WGS84 ellipsoid.
const WGS84_A: f64 = 6_378_137.0;
const WGS84_F: f64 = 1.0 / 298.257_223_563;
/// Farther than this in longitude from the origin, a point is no part of any city and
/// the projection is not used there (it diverges at 90°).
const MAX_LON_OFFSET_DEG: f64 = 80.0;
/// Where such a point is placed: far outside any city, but finite.
const FAR_AWAY_M: f64 = 1.0e9;

/// Local metres east/north of `origin` on a transverse Mercator projection whose
/// central meridian passes through the origin (scale 1 there), with Krüger's series
/// to the fourth order of the ellipsoid's third flattening: sub-millimetre exact,
/// and lengths true to 0.05 % up to 200 km east or west of the origin, any distance
/// north or south. Longitudes are taken relative to the origin across the
/// antimeridian, so a city on both sides of it (Fiji) is one city.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GeoFrame {
    pub origin_lon: f64,
    pub origin_lat: f64,
    /// Northing of the origin on the projection, subtracted to put it at (0, 0).
    origin_northing: f64,
}

/// Krüger series coefficients (n = third flattening).
struct Series {
    /// Rectifying radius A.
    radius: f64,
    alpha: [f64; 4],
    beta: [f64; 4],
    delta: [f64; 4],
}

/// Third flattening of the WGS84 ellipsoid.
const N: f64 = WGS84_F / (2.0 - WGS84_F);

const SERIES: Series = {
    let n = N;
    let (n2, n3, n4) = (n * n, n * n * n, n * n * n * n);
    Series {
        radius: WGS84_A / (1.0 + n) * (1.0 + n2 / 4.0 + n4 / 64.0),
        alpha: [
            n / 2.0 - 2.0 * n2 / 3.0 + 5.0 * n3 / 16.0 + 41.0 * n4 / 180.0,
            13.0 * n2 / 48.0 - 3.0 * n3 / 5.0 + 557.0 * n4 / 1440.0,
            61.0 * n3 / 240.0 - 103.0 * n4 / 140.0,
            49561.0 * n4 / 161280.0,
        ],
        beta: [
            n / 2.0 - 2.0 * n2 / 3.0 + 37.0 * n3 / 96.0 - n4 / 360.0,
            n2 / 48.0 + n3 / 15.0 - 437.0 * n4 / 1440.0,
            17.0 * n3 / 480.0 - 37.0 * n4 / 840.0,
            4397.0 * n4 / 161280.0,
        ],
        delta: [
            2.0 * n - 2.0 * n2 / 3.0 - 2.0 * n3 + 116.0 * n4 / 45.0,
            7.0 * n2 / 3.0 - 8.0 * n3 / 5.0 - 227.0 * n4 / 45.0,
            56.0 * n3 / 15.0 - 136.0 * n4 / 35.0,
            4279.0 * n4 / 630.0,
        ],
    }
};

/// Longitude difference wrapped to [-180, 180).
fn wrap_deg(d: f64) -> f64 {
    (d + 180.0).rem_euclid(360.0) - 180.0
}

/// `Σ a[j-1]·sin(2jζ)` for the complex `ζ = ξ + iη`, summed by Clenshaw's
/// recurrence: `(Σ a·sin(2jξ)·cosh(2jη), Σ a·cos(2jξ)·sinh(2jη))`. Four
/// transcendental functions whatever the series' length (a term-by-term sum takes
/// four a term), for the projection of every live update.
fn sin_series(a: &[f64], xi: f64, eta: f64) -> (f64, f64) {
    let (s, c) = (2.0 * xi).sin_cos();
    let (sh, ch) = ((2.0 * eta).sinh(), (2.0 * eta).cosh());
    // w = 2·cos(2ζ)
    let (wr, wi) = (2.0 * c * ch, -2.0 * s * sh);
    let (mut y1r, mut y1i, mut y2r, mut y2i) = (0.0, 0.0, 0.0, 0.0);
    for &ak in a.iter().rev() {
        let yr = ak + wr * y1r - wi * y1i - y2r;
        let yi = wr * y1i + wi * y1r - y2i;
        (y2r, y2i, y1r, y1i) = (y1r, y1i, yr, yi);
    }
    // sin(2ζ)·y1
    let (zr, zi) = (s * ch, c * sh);
    (zr * y1r - zi * y1i, zr * y1i + zi * y1r)
}

/// (easting, northing) on the transverse Mercator of central meridian 0, for a
/// longitude offset and latitude in radians.
fn tm_forward(s: &Series, lam: f64, phi: f64) -> (f64, f64) {
    let sin_phi = phi.sin();
    let c = 2.0 * N.sqrt() / (1.0 + N);
    let t = (sin_phi.atanh() - c * (c * sin_phi).atanh()).sinh();
    let (sin_lam, cos_lam) = lam.sin_cos();
    let xi = t.atan2(cos_lam);
    let eta = (sin_lam / (1.0 + t * t).sqrt()).atanh();
    let (dn, de) = sin_series(&s.alpha, xi, eta);
    (s.radius * (eta + de), s.radius * (xi + dn))
}

/// Inverse of [`tm_forward`]: (longitude offset, latitude) in radians.
fn tm_inverse(s: &Series, e: f64, n: f64) -> (f64, f64) {
    let (xi, eta) = (n / s.radius, e / s.radius);
    let (dxi, deta) = sin_series(&s.beta, xi, eta);
    let (xi1, eta1) = (xi - dxi, eta - deta);
    let chi = (xi1.sin() / eta1.cosh()).asin();
    let (dphi, _) = sin_series(&s.delta, chi, 0.0);
    (eta1.sinh().atan2(xi1.cos()), chi + dphi)
}

impl GeoFrame {
    pub fn new(origin_lon: f64, origin_lat: f64) -> Self {
        let (_, origin_northing) = tm_forward(&SERIES, 0.0, origin_lat.to_radians());
        Self {
            origin_lon,
            origin_lat,
            origin_northing,
        }
    }

    /// Metres (east, north) of the origin. Points more than 80° of longitude away
    /// (no part of any city) come back 10⁹ m away, never as NaN.
    #[inline]
    pub fn local_from_wgs84(&self, lon: f64, lat: f64) -> [f64; 2] {
        let d = wrap_deg(lon - self.origin_lon);
        if d.abs() > MAX_LON_OFFSET_DEG || !lat.is_finite() {
            return [FAR_AWAY_M.copysign(d), FAR_AWAY_M];
        }
        let (e, n) = tm_forward(&SERIES, d.to_radians(), lat.to_radians());
        [e, n - self.origin_northing]
    }

    /// Longitude and latitude of a local point.
    #[inline]
    pub fn wgs84_from_local(&self, east: f64, north: f64) -> [f64; 2] {
        let (lam, phi) = tm_inverse(&SERIES, east, north + self.origin_northing);
        [
            wrap_deg(self.origin_lon + lam.to_degrees()),
            phi.to_degrees(),
        ]
    }
}

/// Render-world position (x east, y up, z south: bevy's right-handed Y-up frame) of a
/// local point at `height_m` above the ground.
#[inline]
pub fn world_from_local(east: f64, north: f64, height_m: f32) -> [f32; 3] {
    [east as f32, height_m, -(north as f32)]
}

/// Local (east, north) of a render-world position.
#[inline]
pub fn local_from_world(x: f32, z: f32) -> [f64; 2] {
    [x as f64, -(z as f64)]
}

/// True for a longitude/latitude pair that can be a place on Earth.
#[inline]
pub fn is_valid_wgs84(lon: f64, lat: f64) -> bool {
    lon.is_finite()
        && lat.is_finite()
        && (-180.0..=180.0).contains(&lon)
        && (-90.0..=90.0).contains(&lat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series summed term by term, as written in the literature.
    fn tm_forward_by_terms(s: &Series, lam: f64, phi: f64) -> (f64, f64) {
        let sin_phi = phi.sin();
        let c = 2.0 * N.sqrt() / (1.0 + N);
        let t = (sin_phi.atanh() - c * (c * sin_phi).atanh()).sinh();
        let xi = t.atan2(lam.cos());
        let eta = (lam.sin() / (1.0 + t * t).sqrt()).atanh();
        let (mut e, mut n) = (eta, xi);
        for (j, a) in s.alpha.iter().enumerate() {
            let k = 2.0 * (j + 1) as f64;
            e += a * (k * xi).cos() * (k * eta).sinh();
            n += a * (k * xi).sin() * (k * eta).cosh();
        }
        (s.radius * e, s.radius * n)
    }

    /// Clenshaw's sum is the series: within a micrometre of the term-by-term sum
    /// anywhere a city's frame reaches (±9° from its meridian, pole to pole).
    #[test]
    fn the_projection_summed_by_recurrence_is_the_series() {
        let mut worst = 0.0f64;
        for i in 0..=80 {
            for j in 0..=36 {
                let lat = (-80.0 + 2.0 * i as f64).to_radians();
                let lam = (-9.0 + 0.5 * j as f64).to_radians();
                let (e, n) = tm_forward(&SERIES, lam, lat);
                let (e0, n0) = tm_forward_by_terms(&SERIES, lam, lat);
                worst = worst.max((e - e0).abs()).max((n - n0).abs());
            }
        }
        assert!(worst < 1e-6, "{worst} m");
    }

    #[test]
    fn round_trip_is_exact_to_the_millimetre() {
        let frame = GeoFrame::new(24.94, 60.17);
        let [e, n] = frame.local_from_wgs84(24.95, 60.18);
        let [lon, lat] = frame.wgs84_from_local(e, n);
        assert!((lon - 24.95).abs() < 1e-9 && (lat - 60.18).abs() < 1e-9);
    }

    #[test]
    fn one_degree_of_latitude_is_about_111_km() {
        let frame = GeoFrame::new(24.94, 60.17);
        let [_, n] = frame.local_from_wgs84(24.94, 60.18);
        // 0.01° of latitude at 60°N is about 1 113 m.
        assert!((n - 1113.0).abs() < 5.0, "{n}");
        let [e, _] = frame.local_from_wgs84(24.96, 60.17);
        // 0.02° of longitude at 60°N is about 1 115 m (cos 60° halves it).
        assert!((e - 1115.0).abs() < 10.0, "{e}");
    }

    /// Length of 0.1° of longitude along the parallel at `lat` on the ellipsoid.
    fn parallel_arc_m(lat: f64) -> f64 {
        let e2 = WGS84_F * (2.0 - WGS84_F);
        let phi = lat.to_radians();
        WGS84_A * phi.cos() / (1.0 - e2 * phi.sin().powi(2)).sqrt() * 0.1f64.to_radians()
    }

    #[test]
    fn lengths_stay_true_far_from_the_origin() {
        let frame = GeoFrame::new(24.94, 60.17);
        // 199 km north of the origin, one east–west scale would err 5.8 %.
        let lat = 61.96;
        let [e1, n1] = frame.local_from_wgs84(24.90, lat);
        let [e2, n2] = frame.local_from_wgs84(25.00, lat);
        let along = (e2 - e1).hypot(n2 - n1);
        assert!((along / parallel_arc_m(lat) - 1.0).abs() < 1e-4, "{along}");
        // 10 km north: one scale erred 0.27 %.
        let lat = 60.26;
        let [e1, n1] = frame.local_from_wgs84(24.90, lat);
        let [e2, n2] = frame.local_from_wgs84(25.00, lat);
        let along = (e2 - e1).hypot(n2 - n1);
        assert!((along / parallel_arc_m(lat) - 1.0).abs() < 1e-4, "{along}");
        // And the round trip holds out there.
        let [lon, lat] = frame.wgs84_from_local(150_000.0, 180_000.0);
        let [e, n] = frame.local_from_wgs84(lon, lat);
        assert!((e - 150_000.0).abs() < 1e-4 && (n - 180_000.0).abs() < 1e-4);
    }

    #[test]
    fn a_city_across_the_antimeridian_is_one_city() {
        let frame = GeoFrame::new(179.95, -17.8);
        let [e, n] = frame.local_from_wgs84(-179.95, -17.8);
        // 0.1° of longitude east, about 10.6 km, not 40 000 km west.
        assert!((e - 10_600.0).abs() < 100.0 && n.abs() < 50.0, "{e} {n}");
        let [lon, lat] = frame.wgs84_from_local(e, n);
        assert!(
            (lon + 179.95).abs() < 1e-9 && (lat + 17.8).abs() < 1e-9,
            "{lon}"
        );
        // The other side of the world is far away, and a number.
        let [e, n] = frame.local_from_wgs84(0.0, 0.0);
        assert!(e.abs() >= 1e9 && n.is_finite());
    }

    #[test]
    fn world_axes_are_east_up_south() {
        assert_eq!(world_from_local(10.0, 20.0, 3.0), [10.0, 3.0, -20.0]);
        assert_eq!(local_from_world(10.0, -20.0), [10.0, 20.0]);
    }

    #[test]
    fn rejects_impossible_coordinates() {
        assert!(!is_valid_wgs84(f64::NAN, 0.0));
        assert!(!is_valid_wgs84(181.0, 0.0));
        assert!(!is_valid_wgs84(0.0, 91.0));
        assert!(!is_valid_wgs84(1e300, 0.0));
        assert!(is_valid_wgs84(24.9, 60.1));
    }
}
