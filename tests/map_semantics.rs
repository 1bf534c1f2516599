//! The map as OpenStreetMap means it, seen from what uses it: routing and ETAs honour
//! one-way streets (issue 16).

use zhongshu::dispatch::recommend::{Router, Unit};
use zhongshu::map::graph::RoadGraph;
use zhongshu::map::{MapFormat, OneWay, load_bytes, load_default};

fn unit(id: &str, position: [f64; 2]) -> Unit {
    Unit {
        id: id.into(),
        kind: "police".into(),
        position,
        available: true,
    }
}

/// A one-way street west → east (1 km), and a two-way detour north of it (3 km).
fn one_way_city() -> zhongshu::map::CityMap {
    let text = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","id":"main","properties":{"highway":"primary","oneway":"yes"},
       "geometry":{"type":"LineString","coordinates":[[24.94,60.17],[24.958,60.17]]}},
      {"type":"Feature","id":"detour","properties":{"highway":"primary"},
       "geometry":{"type":"LineString","coordinates":[[24.94,60.17],[24.94,60.179],[24.958,60.179],[24.958,60.17]]}}
    ]}"#;
    load_bytes(text.as_bytes(), MapFormat::GeoJson, "t", "t.geojson").unwrap()
}

#[test]
fn etas_respect_one_way_streets() {
    let map = one_way_city();
    let router = Router::new(&RoadGraph::from_map(&map));
    let west = map.frame.local_from_wgs84(24.94, 60.17);
    let east = map.frame.local_from_wgs84(24.958, 60.17);
    // With the flow: the short way.
    let with = router.recommend(east, &[unit("w", west)], |_| true, 1);
    assert_eq!(with.len(), 1);
    assert!(with[0].distance_m < 1_100.0, "{}", with[0].distance_m);
    // Against the flow: round by the detour, three times as far.
    let against = router.recommend(west, &[unit("e", east)], |_| true, 1);
    assert_eq!(against.len(), 1);
    assert!(against[0].distance_m > 2_900.0, "{}", against[0].distance_m);
    assert!(against[0].eta_s > with[0].eta_s * 2.5);
}

#[test]
fn default_city_routes_never_drive_a_one_way_street_backwards() {
    let map = load_default().unwrap();
    let graph = RoadGraph::from_map(&map);
    let router = Router::new(&graph);
    let bounds = map.local_bounds();
    let mut units = Vec::new();
    for i in 0..40 {
        let t = i as f64 / 40.0;
        let e = bounds[0] + (bounds[2] - bounds[0]) * (0.1 + 0.8 * t);
        let n = bounds[1] + (bounds[3] - bounds[1]) * (0.1 + 0.8 * ((t * 7.0) % 1.0));
        units.push(unit(&format!("u{i}"), [e, n]));
    }
    let centre = [(bounds[0] + bounds[2]) / 2.0, (bounds[1] + bounds[3]) / 2.0];
    let recs = router.recommend(centre, &units, |_| true, units.len());
    assert!(recs.len() > 10, "{} reachable units", recs.len());
    // Every step of every route is allowed by a road's own one-way tagging.
    let same =
        |a: [f64; 2], c: &geo::Coord<f64>| (a[0] - c.x).abs() < 0.01 && (a[1] - c.y).abs() < 0.01;
    let mut steps = 0;
    let mut one_way_steps = 0;
    for r in &recs {
        for w in r.route.windows(2) {
            let (a, b) = (w[0], w[1]);
            let mut allowed = false;
            for road in &map.roads {
                for seg in road.line.0.windows(2) {
                    let forward = same(a, &seg[0]) && same(b, &seg[1]);
                    let backward = same(b, &seg[0]) && same(a, &seg[1]);
                    if (forward && road.oneway != OneWay::Backward)
                        || (backward && road.oneway != OneWay::Forward)
                    {
                        allowed = true;
                        if road.oneway != OneWay::No {
                            one_way_steps += 1;
                        }
                    }
                }
            }
            assert!(
                allowed,
                "route of {} drives {a:?} → {b:?} against the flow",
                r.unit_id
            );
            steps += 1;
        }
    }
    assert!(
        one_way_steps > 10,
        "{one_way_steps} steps along one-way streets"
    );
    assert!(steps > 100, "{steps}");
}
