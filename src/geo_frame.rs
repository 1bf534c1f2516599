//! The local frame: WGS84 longitude/latitude ⇄ metres east/north of the city origin.
//!
//! Computation stays in `f64`; only the final world positions handed to the GPU are
//! narrowed to `f32`, which keeps millimetre precision within tens of kilometres.

use serde::Serialize;

/// A local tangent-plane frame around `origin`, accurate to well under 0.1 % across a
/// city (tens of kilometres), which is all a city map needs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GeoFrame {
    pub origin_lon: f64,
    pub origin_lat: f64,
    metres_per_deg_lon: f64,
    metres_per_deg_lat: f64,
}

impl GeoFrame {
    pub fn new(origin_lon: f64, origin_lat: f64) -> Self {
        // Series for the WGS84 ellipsoid's meridian and parallel arc lengths per degree.
        let phi = origin_lat.to_radians();
        let metres_per_deg_lat = 111_132.92 - 559.82 * (2.0 * phi).cos()
            + 1.175 * (4.0 * phi).cos()
            - 0.0023 * (6.0 * phi).cos();
        let metres_per_deg_lon =
            111_412.84 * phi.cos() - 93.5 * (3.0 * phi).cos() + 0.118 * (5.0 * phi).cos();
        Self {
            origin_lon,
            origin_lat,
            metres_per_deg_lon,
            metres_per_deg_lat,
        }
    }

    /// Metres (east, north) of the origin.
    #[inline]
    pub fn local_from_wgs84(&self, lon: f64, lat: f64) -> [f64; 2] {
        [
            (lon - self.origin_lon) * self.metres_per_deg_lon,
            (lat - self.origin_lat) * self.metres_per_deg_lat,
        ]
    }

    /// Longitude and latitude of a local point.
    #[inline]
    pub fn wgs84_from_local(&self, east: f64, north: f64) -> [f64; 2] {
        [
            self.origin_lon + east / self.metres_per_deg_lon,
            self.origin_lat + north / self.metres_per_deg_lat,
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
