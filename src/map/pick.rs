//! Picking: which building is under a point, via an R-tree over footprint envelopes.

use geo::{BoundingRect, Contains, Coord, Point};
use rstar::{AABB, RTree, RTreeObject};

use super::CityMap;

struct Footprint {
    index: usize,
    envelope: AABB<[f64; 2]>,
}

impl RTreeObject for Footprint {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// Spatial index of building footprints for picking (local metres).
pub struct BuildingIndex {
    tree: RTree<Footprint>,
}

impl BuildingIndex {
    pub fn new(map: &CityMap) -> Self {
        let items = map
            .buildings
            .iter()
            .enumerate()
            .filter_map(|(index, b)| {
                let r = b.footprint.bounding_rect()?;
                Some(Footprint {
                    index,
                    envelope: AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]),
                })
            })
            .collect();
        Self {
            tree: RTree::bulk_load(items),
        }
    }

    /// Index of the building whose footprint contains the local point (east, north);
    /// the tallest one where parts overlap.
    pub fn building_at(&self, map: &CityMap, east: f64, north: f64) -> Option<usize> {
        let point = Point(Coord { x: east, y: north });
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_point([east, north]))
            .filter(|f| map.buildings[f.index].footprint.contains(&point))
            .max_by(|a, b| {
                let ha = map.buildings[a.index].extent.height_m;
                let hb = map.buildings[b.index].extent.height_m;
                ha.total_cmp(&hb)
            })
            .map(|f| f.index)
    }

    /// The first building hit by a ray (origin and direction in local east/north/up
    /// metres), marching along its ground track; `None` when it hits nothing.
    pub fn building_on_ray(
        &self,
        map: &CityMap,
        origin: [f64; 3],
        dir: [f64; 3],
        max_dist: f64,
    ) -> Option<usize> {
        let step = 2.0;
        let mut t = 0.0;
        while t < max_dist {
            let p = [
                origin[0] + dir[0] * t,
                origin[1] + dir[1] * t,
                origin[2] + dir[2] * t,
            ];
            if p[2] < 0.0 {
                // Below ground: whatever footprint is here is the hit.
                return self.building_at(map, p[0], p[1]);
            }
            if let Some(i) = self.building_at(map, p[0], p[1]) {
                let e = map.buildings[i].extent;
                if p[2] <= e.height_m as f64 && p[2] >= e.min_height_m as f64 {
                    return Some(i);
                }
            }
            t += step;
        }
        None
    }

    pub fn len(&self) -> usize {
        self.tree.size()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.size() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{RawFeature, RawGeometry, SkipCounts, build_city};

    fn city() -> CityMap {
        let sq = |lon: f64, lat: f64, d: f64| {
            vec![
                [lon, lat],
                [lon + d, lat],
                [lon + d, lat + d],
                [lon, lat + d],
                [lon, lat],
            ]
        };
        let f = |id: &str, h: &str, ring| RawFeature {
            id: id.into(),
            tags: vec![
                ("building".into(), "yes".into()),
                ("height".into(), h.into()),
            ],
            geometry: RawGeometry::Polygon(vec![ring]),
        };
        build_city(
            "t",
            vec![
                f("low", "10", sq(24.94, 60.17, 0.001)),
                f("tower", "80", sq(24.9404, 60.1704, 0.0002)),
            ],
            SkipCounts::default(),
        )
    }

    #[test]
    fn picks_the_building_under_a_point() {
        let map = city();
        let index = BuildingIndex::new(&map);
        let [e, n] = map.frame.local_from_wgs84(24.9401, 60.1701);
        assert_eq!(
            map.buildings[index.building_at(&map, e, n).unwrap()].id,
            "low"
        );
        let [e, n] = map.frame.local_from_wgs84(24.9405, 60.1705);
        assert_eq!(
            map.buildings[index.building_at(&map, e, n).unwrap()].id,
            "tower"
        );
        let [e, n] = map.frame.local_from_wgs84(24.95, 60.18);
        assert_eq!(index.building_at(&map, e, n), None);
    }

    #[test]
    fn a_ray_from_above_hits_the_roof() {
        let map = city();
        let index = BuildingIndex::new(&map);
        let [e, n] = map.frame.local_from_wgs84(24.9405, 60.1705);
        let hit = index.building_on_ray(&map, [e, n, 500.0], [0.0, 0.0, -1.0], 1000.0);
        assert_eq!(map.buildings[hit.unwrap()].id, "tower");
    }
}
