//! Picking: which building is under a point, via an R-tree over footprint envelopes.

use geo::{Area, BoundingRect, Contains, Coord, Point};
use rstar::{AABB, RTree, RTreeObject};

use super::CityMap;

struct Footprint {
    index: usize,
    envelope: AABB<[f64; 2]>,
    /// Footprint area (m²): where equal heights overlap, the smaller footprint is the
    /// more specific answer.
    area: f64,
}

impl RTreeObject for Footprint {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// Spatial index of building footprints for picking (local metres). Outlines drawn by
/// their `building:part`s are not in it: picking there returns the part.
pub struct BuildingIndex {
    tree: RTree<Footprint>,
}

impl BuildingIndex {
    pub fn new(map: &CityMap) -> Self {
        let items = map
            .buildings
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_drawn())
            .filter_map(|(index, b)| {
                let r = b.footprint.bounding_rect()?;
                Some(Footprint {
                    index,
                    envelope: AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]),
                    area: b.footprint.unsigned_area(),
                })
            })
            .collect();
        Self {
            tree: RTree::bulk_load(items),
        }
    }

    /// Footprints containing the local point (east, north).
    fn containing<'a>(
        &'a self,
        map: &'a CityMap,
        east: f64,
        north: f64,
    ) -> impl Iterator<Item = &'a Footprint> + 'a {
        let point = Point(Coord { x: east, y: north });
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_point([east, north]))
            .filter(move |f| {
                map.buildings[f.index]
                    .drawn_pieces()
                    .any(|piece| piece.contains(&point))
            })
    }

    /// Index of the building whose footprint contains the local point (east, north);
    /// the tallest one where parts overlap, then the smallest footprint, then the
    /// lowest index, so the answer never depends on the R-tree's order.
    pub fn building_at(&self, map: &CityMap, east: f64, north: f64) -> Option<usize> {
        self.containing(map, east, north)
            .max_by(|a, b| {
                let ha = map.buildings[a.index].extent.height_m;
                let hb = map.buildings[b.index].extent.height_m;
                ha.total_cmp(&hb)
                    .then(b.area.total_cmp(&a.area))
                    .then(b.index.cmp(&a.index))
            })
            .map(|f| f.index)
    }

    /// The first building hit by a ray (origin and direction in local east/north/up
    /// metres), marching along its ground track; `None` when it hits nothing. Every
    /// footprint under the ray is tested against its own vertical extent, so a low
    /// building under an overhang (a part lifted on `min_height`) is found.
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
            let hit = self
                .containing(map, p[0], p[1])
                .filter(|f| {
                    let e = map.buildings[f.index].extent;
                    p[2] <= e.height_m as f64 && p[2] >= e.min_height_m as f64
                })
                .min_by(|a, b| a.area.total_cmp(&b.area).then(a.index.cmp(&b.index)));
            if let Some(f) = hit {
                return Some(f.index);
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

    fn building(id: &str, tags: &[(&str, &str)], lon: f64, lat: f64, d: f64) -> RawFeature {
        let mut t = vec![("building".to_string(), "yes".to_string())];
        t.extend(tags.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        RawFeature {
            id: id.into(),
            tags: t,
            geometry: RawGeometry::Polygon(vec![vec![
                [lon, lat],
                [lon + d, lat],
                [lon + d, lat + d],
                [lon, lat + d],
                [lon, lat],
            ]]),
        }
    }

    #[test]
    fn a_ray_under_an_overhang_finds_the_low_building() {
        let map = build_city(
            "t",
            vec![
                building(
                    "overhang",
                    &[("min_height", "20"), ("height", "40")],
                    24.94,
                    60.17,
                    0.001,
                ),
                building("kiosk", &[("height", "3")], 24.9404, 60.1704, 0.0001),
            ],
            SkipCounts::default(),
        );
        let index = BuildingIndex::new(&map);
        let [e0, n] = map.frame.local_from_wgs84(24.9390, 60.17045);
        // Level, 1.5 m above the ground, heading east under the overhang.
        let hit = index.building_on_ray(&map, [e0, n, 1.5], [1.0, 0.0, 0.0], 500.0);
        assert_eq!(map.buildings[hit.unwrap()].id, "kiosk");
        // From above, the overhang's roof is hit first.
        let [e, n] = map.frame.local_from_wgs84(24.94045, 60.17045);
        let hit = index.building_on_ray(&map, [e, n, 500.0], [0.0, 0.0, -1.0], 1000.0);
        assert_eq!(map.buildings[hit.unwrap()].id, "overhang");
    }

    #[test]
    fn equal_heights_pick_the_smaller_footprint_whatever_the_order() {
        let big = building("big", &[("height", "12")], 24.94, 60.17, 0.001);
        let small = building("small", &[("height", "12")], 24.9404, 60.1704, 0.0001);
        for features in [vec![big.clone(), small.clone()], vec![small, big]] {
            let map = build_city("t", features, SkipCounts::default());
            let index = BuildingIndex::new(&map);
            let [e, n] = map.frame.local_from_wgs84(24.94045, 60.17045);
            let hit = index.building_at(&map, e, n).unwrap();
            assert_eq!(map.buildings[hit].id, "small");
            let ray = index.building_on_ray(&map, [e, n, 500.0], [0.0, 0.0, -1.0], 1000.0);
            assert_eq!(map.buildings[ray.unwrap()].id, "small");
        }
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
