//! `zhongshu map-info` and error handling, without a window.

use crate::{audit_verify, scratch_dir, zhongshu};

fn map_info(path: &std::path::Path) -> (bool, serde_json::Value, String) {
    map_info_with(path, &[])
}

/// `zhongshu [ARGS] map-info PATH`.
fn map_info_with(path: &std::path::Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = zhongshu()
        .args(args)
        .arg("map-info")
        .arg(path)
        .output()
        .expect("run zhongshu");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, stderr)
}

#[test]
fn map_info_describes_the_default_city_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("maps/helsinki.osm.pbf");
    let (ok, info, stderr) = map_info(&path);
    assert!(ok, "{stderr}");
    for field in [
        "buildings",
        "roads",
        "skipped",
        "bbox",
        "load_ms",
        "mesh_ms",
    ] {
        assert!(info.get(field).is_some(), "missing {field} in {info}");
    }
    assert!(info["buildings"].as_u64().unwrap() > 500);
    assert!(info["roads"].as_u64().unwrap() > 2000);
    assert!(info["triangles"].as_u64().unwrap() > 30_000);
    // Tags the map does not draw and ways cut by the extract's edge are not broken
    // input: they are reported apart from what was skipped.
    let skipped = info["skipped_total"].as_u64().unwrap();
    assert!(skipped < 100, "{info}");
    assert!(info["skipped"].get("unknown_tags").is_none(), "{info}");
    assert!(
        info["not_drawn"]["unknown_tags"].as_u64().unwrap() > 1000,
        "{info}"
    );
    assert!(info["not_drawn"]["missing_references"].as_u64().unwrap() > 100);
    assert!(info["not_drawn_total"].as_u64().unwrap() > 1000);
    let bbox = info["bbox"].as_array().unwrap();
    assert!((24.8..25.1).contains(&bbox[0].as_f64().unwrap()));
    // Helsinki's own time, found from where the map is.
    assert_eq!(
        info["timezone"],
        serde_json::json!({"name": "Europe/Helsinki", "source": "map"})
    );
}

/// A one-building GeoJSON city at `lon`,`lat`.
fn one_building_at(name: &str, lon: f64, lat: f64) -> std::path::PathBuf {
    let dir = scratch_dir(name);
    let path = dir.join("city.geojson");
    let ring: Vec<[f64; 2]> = [
        (0.0, 0.0),
        (2e-4, 0.0),
        (2e-4, 2e-4),
        (0.0, 2e-4),
        (0.0, 0.0),
    ]
    .iter()
    .map(|(dx, dy)| [lon + dx, lat + dy])
    .collect();
    let city = serde_json::json!({
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"building": "yes", "height": "20"},
            "geometry": {"type": "Polygon", "coordinates": [ring]}
        }]
    });
    std::fs::write(&path, city.to_string()).unwrap();
    path
}

#[test]
fn map_info_names_the_city_s_time_zone_and_where_it_came_from() {
    let shanghai = one_building_at("tz-shanghai", 121.4903, 31.24);
    let (ok, info, stderr) = map_info(&shanghai);
    assert!(ok, "{stderr}");
    assert_eq!(
        info["timezone"],
        serde_json::json!({"name": "Asia/Shanghai", "source": "map"})
    );

    // The flag wins over the position, in any letter case.
    let (ok, info, stderr) = map_info_with(&shanghai, &["--timezone", "europe/helsinki"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        info["timezone"],
        serde_json::json!({"name": "Europe/Helsinki", "source": "flag"})
    );

    // At sea the city reads UTC, and says why.
    let pacific = one_building_at("tz-pacific", -140.0, 0.0);
    let (ok, info, stderr) = map_info(&pacific);
    assert!(ok, "{stderr}");
    assert_eq!(info["timezone"]["name"], "UTC");
    assert_eq!(info["timezone"]["source"], "default");
    let note = info["timezone"]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("at sea") && note.contains("--timezone"),
        "{info}"
    );
}

#[test]
fn an_unknown_timezone_is_a_clear_error_naming_the_flag() {
    let shanghai = one_building_at("tz-unknown", 121.4903, 31.24);
    let (ok, _, stderr) = map_info_with(&shanghai, &["--timezone", "Mars/Olympus_Mons"]);
    assert!(!ok);
    assert!(
        stderr.contains("--timezone") && stderr.contains("Mars/Olympus_Mons"),
        "{stderr}"
    );
    assert!(stderr.contains("IANA"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The window refuses the same way, before any map is loaded or window opened.
    let out = zhongshu()
        .args(["--timezone", "CST", "--map", "/nonexistent/city.geojson"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--timezone: \"CST\""), "{stderr}");
}

/// A square footprint at (lon, lat), `d` degrees a side, as GeoJSON coordinates.
fn square_ring(lon: f64, lat: f64, d: f64) -> String {
    format!(
        "[[{lon},{lat}],[{},{lat}],[{},{}],[{lon},{}],[{lon},{lat}]]",
        lon + d,
        lon + d,
        lat + d,
        lat + d
    )
}

#[test]
fn a_vector_tile_style_city_loads_and_map_info_says_how_it_was_read() {
    // Shanghai's centre as vector tiles describe it: kind = building, not building=yes.
    let dir = scratch_dir("vector-tile-map");
    let path = dir.join("shanghai.geojson");
    let mut features = Vec::new();
    for i in 0..20 {
        let lon = 121.47 + f64::from(i % 5) * 0.0005;
        let lat = 31.23 + f64::from(i / 5) * 0.0005;
        features.push(format!(
            r#"{{"type":"Feature","properties":{{"kind":"building","height":{},"name":"楼{i}"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}}"#,
            20 + i,
            square_ring(lon, lat, 0.0002)
        ));
    }
    features.push(r#"{"type":"Feature","properties":{"kind":"major_road","kind_detail":"primary","name":"南京东路"},"geometry":{"type":"LineString","coordinates":[[121.469,31.229],[121.474,31.233]]}}"#.to_string());
    features.push(format!(
        r#"{{"type":"Feature","properties":{{"kind":"water","name":"黄浦江"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}}"#,
        square_ring(121.48, 31.23, 0.002)
    ));
    std::fs::write(
        &path,
        format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        ),
    )
    .unwrap();
    let (ok, info, stderr) = map_info(&path);
    assert!(ok, "{stderr}");
    assert_eq!(info["buildings"], 20, "{info}");
    assert_eq!(info["roads"], 1, "{info}");
    assert_eq!(info["water"], 1, "{info}");
    assert_eq!(info["format"], "geojson");
    assert_eq!(info["schema"]["detected"], "vector_tile", "{info}");
    assert_eq!(info["schema"]["features"]["vector_tile"], 22, "{info}");
    assert!(
        info["schema"]["fields"]["height"]
            .as_array()
            .unwrap()
            .contains(&"height".into()),
        "{info}"
    );
}

#[test]
fn an_agency_export_is_read_by_its_own_field_names_or_a_mapping_beside_it() {
    let dir = scratch_dir("agency-map");
    // An ArcGIS REST answer (Esri JSON) in Web Mercator, heights in 高度 by alias.
    let path = dir.join("buildings.json");
    let merc = |lon: f64, lat: f64| {
        let r = 6_378_137.0f64;
        (
            r * lon.to_radians(),
            r * (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
                .tan()
                .ln(),
        )
    };
    let ring = |lon: f64, lat: f64| {
        // Clockwise: Esri's outer ring.
        let pts = [
            (lon, lat),
            (lon, lat + 0.0002),
            (lon + 0.0002, lat + 0.0002),
            (lon + 0.0002, lat),
            (lon, lat),
        ];
        let pts: Vec<String> = pts
            .iter()
            .map(|&(a, b)| {
                let (x, y) = merc(a, b);
                format!("[{x},{y}]")
            })
            .collect();
        format!("[{}]", pts.join(","))
    };
    std::fs::write(
        &path,
        format!(
            r#"{{"geometryType":"esriGeometryPolygon","spatialReference":{{"wkid":102100,"latestWkid":3857}},
              "fields":[{{"name":"OBJECTID","type":"esriFieldTypeOID"}},{{"name":"JZGD","type":"esriFieldTypeDouble","alias":"高度"}}],
              "features":[
                {{"attributes":{{"OBJECTID":1,"JZGD":36}},"geometry":{{"rings":[{}]}}}},
                {{"attributes":{{"OBJECTID":2,"JZGD":12}},"geometry":{{"rings":[{}]}}}}
              ]}}"#,
            ring(116.39, 39.9),
            ring(116.391, 39.9)
        ),
    )
    .unwrap();
    let (ok, info, stderr) = map_info(&path);
    assert!(ok, "{stderr}");
    assert_eq!(info["format"], "esri_json", "{info}");
    assert_eq!(info["buildings"], 2, "{info}");
    assert_eq!(info["schema"]["detected"], "agency", "{info}");
    assert_eq!(info["schema"]["fields"]["height"][0], "高度", "{info}");
    // Unprojected from Web Mercator: in Beijing.
    let bbox = info["bbox"].as_array().unwrap();
    assert!((bbox[0].as_f64().unwrap() - 116.39).abs() < 1e-6, "{info}");
    assert!((bbox[1].as_f64().unwrap() - 39.9).abs() < 1e-6, "{info}");

    // Field names nobody could guess, with the mapping beside the file.
    let plain = dir.join("plan.geojson");
    std::fs::write(
        &plain,
        format!(
            r#"{{"type":"FeatureCollection","features":[
              {{"type":"Feature","properties":{{"LX":"房屋","G":"27","MC":"档案馆"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}},
              {{"type":"Feature","properties":{{"LX":"绿地"}},"geometry":{{"type":"Polygon","coordinates":[{}]}}}}
            ]}}"#,
            square_ring(116.39, 39.9, 0.0002),
            square_ring(116.392, 39.9, 0.001)
        ),
    )
    .unwrap();
    let (ok, _, stderr) = map_info(&plain);
    assert!(!ok, "nothing drawable without the mapping: {stderr}");
    std::fs::write(
        dir.join("plan.schema.toml"),
        "kind_field = \"LX\"\nheight = \"G\"\nname = \"MC\"\n[kinds]\n\"房屋\" = \"building\"\n\"绿地\" = \"green\"\n",
    )
    .unwrap();
    let (ok, info, stderr) = map_info(&plain);
    assert!(ok, "{stderr}");
    assert_eq!(
        (info["buildings"].as_u64(), info["green"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(info["schema"]["detected"], "explicit", "{info}");
    assert!(
        info["schema"]["file"]
            .as_str()
            .unwrap()
            .ends_with("plan.schema.toml"),
        "{info}"
    );
    // A mistake in the mapping is said, naming the file.
    std::fs::write(dir.join("plan.schema.toml"), "kind = \"house\"\n").unwrap();
    let (ok, _, stderr) = map_info(&plain);
    assert!(!ok);
    assert!(
        stderr.contains("plan.schema.toml") && stderr.contains("kind = \"house\""),
        "{stderr}"
    );
}

#[test]
fn map_info_says_how_a_shapefile_and_a_flatgeobuf_were_read() {
    let dir = scratch_dir("shapefile-map");
    // A surveying bureau's export: Gauss-Krüger CM 120E (.prj), GBK text (.cpg),
    // floors in 层数, names in 名称.
    let gk = zhongshu::map::crs::Crs::from_epsg(4549).unwrap();
    let shp = dir.join("上海建筑.shp");
    zhongshu::bench::generate_city_shapefile(&shp, 400, 3, &gk).unwrap();
    let (ok, info, stderr) = map_info(&shp);
    assert!(ok, "{stderr}");
    assert_eq!(info["format"], "shapefile", "{info}");
    assert_eq!(info["name"], "上海建筑", "{info}");
    assert_eq!(info["buildings"], 400, "{info}");
    assert_eq!(info["encoding"]["name"], "gbk", "{info}");
    assert_eq!(info["encoding"]["source"], "cpg", "{info}");
    assert_eq!(
        info["crs"]["name"], "EPSG:4549 (CGCS2000 / 3-degree Gauss-Kruger CM 120E)",
        "{info}"
    );
    assert_eq!(info["crs"]["source"], "file", "{info}");
    assert_eq!(info["schema"]["detected"], "agency", "{info}");
    assert_eq!(info["schema"]["fields"]["floors"][0], "层数", "{info}");
    assert_eq!(info["schema"]["fields"]["name"][0], "名称", "{info}");
    // In Shanghai, where the generator put it.
    let bbox = info["bbox"].as_array().unwrap();
    assert!((bbox[0].as_f64().unwrap() - 121.47).abs() < 0.01, "{info}");
    assert!((bbox[1].as_f64().unwrap() - 31.23).abs() < 0.01, "{info}");

    // Without its attribute table: the missing file is named.
    std::fs::remove_file(dir.join("上海建筑.dbf")).unwrap();
    let (ok, _, stderr) = map_info(&shp);
    assert!(!ok);
    assert!(
        stderr.contains("上海建筑.dbf") && stderr.contains("missing"),
        "{stderr}"
    );

    let fgb = dir.join("city.fgb");
    zhongshu::bench::generate_city_flatgeobuf(&fgb, 400, 3, Some(&gk)).unwrap();
    let (ok, info, stderr) = map_info(&fgb);
    assert!(ok, "{stderr}");
    assert_eq!(info["format"], "flatgeobuf", "{info}");
    assert_eq!(info["buildings"], 400, "{info}");
    assert_eq!(info["crs"]["source"], "file", "{info}");
    assert!(info.get("encoding").is_none(), "{info}");
    let e = map_info(&dir.join("nothing.fgb")).2;
    assert!(e.contains("nothing.fgb"), "{e}");
}

#[test]
fn map_info_counts_broken_geojson_features_by_reason() {
    let dir = scratch_dir("broken-geojson");
    let path = dir.join("city.geojson");
    std::fs::write(
        &path,
        r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","properties":{"building":"yes","height":"20"},"geometry":{"type":"Polygon","coordinates":[[[24.94,60.17],[24.9402,60.17],[24.9402,60.1702],[24.94,60.1702],[24.94,60.17]]]}},
          {"type":"Feature","properties":{"building":"yes"},"geometry":null},
          {"type":"Feature","properties":{"building":"yes"},"geometry":{"type":"Polygon","coordinates":[[[24.94,NaN],[24.95,60.17],[24.95,60.18],[24.94,NaN]]]}},
          {"type":"Feature","properties":{"building":"yes"},"geometry":{"type":"Polygon","coordinates":[[[24.94,60.17],[24.941,60.171],[24.941,60.17],[24.94,60.171],[24.94,60.17]]]}}
        ]}"#,
    )
    .unwrap();
    let (ok, info, stderr) = map_info(&path);
    assert!(ok, "{stderr}");
    assert_eq!(info["buildings"], 1);
    assert_eq!(info["skipped"]["null_geometry"], 1);
    assert_eq!(info["skipped"]["bad_coordinates"], 1);
    assert_eq!(info["skipped"]["self_intersecting"], 1);
}

#[test]
fn a_wrong_path_is_a_clear_error_not_a_crash() {
    let (ok, _, stderr) = map_info(std::path::Path::new("/nonexistent/city.osm.pbf"));
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/city.osm.pbf"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The reason once, not once per link of the error's chain.
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
    // The window command refuses the same way, before opening any window.
    let out = zhongshu()
        .args(["--map", "/nonexistent/city.geojson"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/city.geojson"), "{stderr}");
}

#[test]
fn a_dispatch_file_or_event_log_that_cannot_be_read_says_why_once() {
    let dir = scratch_dir("unreadable-dispatch");
    let not_a_log = dir.join("notes.db");
    std::fs::write(&not_a_log, "shift notes, not an event log\n".repeat(200)).unwrap();
    let out = zhongshu()
        .args(["ops-report", "--db"])
        .arg(&not_a_log)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("notes.db"), "{stderr}");
    assert_eq!(stderr.matches("not a database").count(), 1, "{stderr}");

    let log = dir.join("events.db");
    drop(
        zhongshu::dispatch::dispatcher::Dispatcher::open(
            &log,
            zhongshu::dispatch::config::DispatchConfig::default_config(),
        )
        .unwrap(),
    );
    let out = zhongshu()
        .args(["ops-report", "--db"])
        .arg(&log)
        .args(["--dispatch", "/nonexistent/dispatch.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("/nonexistent/dispatch.toml"), "{stderr}");
    assert_eq!(stderr.matches("(os error 2)").count(), 1, "{stderr}");
}

#[test]
fn garbage_files_are_rejected_with_the_reason() {
    let dir = scratch_dir("garbage");
    let pbf = dir.join("junk.osm.pbf");
    std::fs::write(&pbf, b"\x00\x00\x00\x0dthis is not a pbf").unwrap();
    let (ok, _, stderr) = map_info(&pbf);
    assert!(!ok && stderr.contains("invalid OSM PBF"), "{stderr}");
    let json = dir.join("junk.geojson");
    std::fs::write(
        &json,
        b"{\"type\": \"FeatureCollection\", \"features\": [ {",
    )
    .unwrap();
    let (ok, _, stderr) = map_info(&json);
    assert!(!ok && stderr.contains("invalid GeoJSON"), "{stderr}");
    let txt = dir.join("notes.txt");
    std::fs::write(&txt, b"hello").unwrap();
    let (ok, _, stderr) = map_info(&txt);
    assert!(!ok && stderr.contains("not an OpenStreetMap"), "{stderr}");
}

#[test]
fn audit_verify_reports_the_chain_and_catches_tampering() {
    let dir = scratch_dir("audit");
    let db = dir.join("events.db");
    {
        use zhongshu::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
        let mut dispatcher = zhongshu::dispatch::dispatcher::Dispatcher::open(
            &db,
            zhongshu::dispatch::config::DispatchConfig::default_config(),
        )
        .unwrap();
        let li = Actor::new("li.wei", zhongshu::dispatch::Role::Dispatcher, None);
        let t0 = 1_795_946_400_000;
        dispatcher
            .execute(
                &Command::ReportIncident(NewIncident {
                    kind: "waterlogging".into(),
                    title: "Underpass flooded".into(),
                    domain: zhongshu::feeds::Domain::Urban,
                    severity: Severity::Severe,
                    lon: 24.94,
                    lat: 60.17,
                    source: "map".into(),
                    key: None,
                }),
                &li,
                t0,
            )
            .unwrap();
        let order = |department: &str| NewOrder {
            department: department.into(),
            instruction: "Go".into(),
            deadline_ms: t0 + 600_000,
        };
        dispatcher
            .execute(
                &Command::IssueOrders {
                    incident: "INC-000001".into(),
                    orders: vec![order("drainage"), order("traffic_police")],
                },
                &li,
                t0 + 1000,
            )
            .unwrap();
    }
    let (ok, report) = audit_verify(&db);
    assert!(ok, "{report}");
    for (field, want) in [
        ("events", serde_json::json!(5)),
        ("incidents", serde_json::json!(1)),
        ("orders", serde_json::json!(2)),
        ("chain_ok", serde_json::json!(true)),
        ("first_bad_event", serde_json::Value::Null),
        ("sealed", serde_json::json!(true)),
        ("truncated", serde_json::json!(false)),
    ] {
        assert_eq!(report[field], want, "{field}: {report}");
    }
    assert_eq!(report["last_good_checkpoint"]["seq"], 5, "{report}");
    assert_eq!(report["witness"]["seq"], 5, "{report}");

    // Cut the last event off, its seal too: the witness outside the file knows.
    let copy = dir.join("truncated.db");
    std::fs::copy(&db, &copy).unwrap();
    for suffix in [".key", ".head"] {
        std::fs::copy(
            format!("{}{suffix}", db.display()),
            format!("{}{suffix}", copy.display()),
        )
        .unwrap();
    }
    let raw = rusqlite::Connection::open(&copy).unwrap();
    raw.execute("DELETE FROM events WHERE seq = 5", []).unwrap();
    raw.execute("DELETE FROM seals WHERE seq = 5", []).unwrap();
    drop(raw);
    let (ok, report) = audit_verify(&copy);
    assert!(!ok, "{report}");
    assert_eq!(report["truncated"], true, "{report}");
    // Seals are per commit: the last whole commit is the first command's.
    assert_eq!(report["last_good_checkpoint"]["seq"], 1, "{report}");
    // Checked under another key, every seal fails.
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, "ab".repeat(32)).unwrap();
    let out = zhongshu()
        .args(["audit", "verify", "--db"])
        .arg(&db)
        .arg("--seal-key")
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["chain_ok"], false, "{report}");
    assert_eq!(report["first_bad_event"], 1, "{report}");

    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute(
        "UPDATE events SET operator = 'someone.else' WHERE seq = 2",
        [],
    )
    .unwrap();
    let (ok, report) = audit_verify(&db);
    assert!(!ok);
    assert_eq!(report["chain_ok"], false);
    assert_eq!(report["first_bad_event"], 2);

    let out = zhongshu()
        .args(["audit", "verify", "--db", "/nowhere/events.db"])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("/nowhere/events.db")
    );
}

#[test]
fn users_add_writes_a_hash_that_signs_in_and_refuses_mistakes() {
    use std::io::Write;
    let dir = scratch_dir("users");
    let file = dir.join("users.toml");
    let add = |args: &[&str], passphrase: &str| {
        let mut child = zhongshu()
            .args(["users", "add"])
            .args(args)
            .arg("--file")
            .arg(&file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{passphrase}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = add(
        &["li.wei", "--role", "dispatcher", "--display", "Li Wei 李伟"],
        "correct horse",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = add(
        &[
            "wang.fang",
            "--role",
            "department_liaison",
            "--department",
            "fire",
        ],
        "battery staple",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Stored as Argon2id hashes, never as the passphrase.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("$argon2id$"), "{text}");
    assert!(!text.contains("correct horse"));
    let users = zhongshu::dispatch::users::Users::load(&file).unwrap();
    let li = users.sign_in("li.wei", "correct horse").unwrap();
    assert_eq!(li.role, zhongshu::dispatch::Role::Dispatcher);
    assert!(users.sign_in("li.wei", "Correct horse").is_err());
    assert_eq!(
        users
            .sign_in("wang.fang", "battery staple")
            .unwrap()
            .department
            .as_deref(),
        Some("fire")
    );

    // Mistakes are refused and the file is left as it was.
    for (args, passphrase, expected) in [
        (
            vec!["li.wei", "--role", "operator"],
            "another one",
            "li.wei",
        ),
        (vec!["chen", "--role", "mayor"], "long enough", "--role"),
        (
            vec!["chen", "--role", "department_liaison"],
            "long enough",
            "department",
        ),
        (vec!["chen", "--role", "operator"], "short", "8 characters"),
    ] {
        let out = add(&args, passphrase);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }
}

#[test]
fn demo_accounts_and_tokens_are_refused_outside_demo_mode() {
    use std::io::Write;
    let dir = scratch_dir("demo-mode");
    let users = dir.join("users.toml");
    let mut child = zhongshu()
        .args(["users", "add", "li.wei", "--role", "dispatcher", "--file"])
        .arg(&users)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "correct horse").unwrap();
    assert!(child.wait().unwrap().success());
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dispatch.toml");
    let refused = |args: &[&std::ffi::OsStr], expected: &str| {
        let out = zhongshu()
            .args(args)
            .arg("--db")
            .arg(dir.join("events.db"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    // A real departments file without a users file would leave the demo accounts on.
    refused(
        &["--dispatch".as_ref(), shipped.as_os_str()],
        "--dispatch needs --users",
    );
    // A config copied from the shipped one keeps its demo tokens: refused.
    refused(
        &[
            "--dispatch".as_ref(),
            shipped.as_os_str(),
            "--users".as_ref(),
            users.as_os_str(),
        ],
        "demo token",
    );
    // Real tokens: beyond this machine only over HTTPS, and a wildcard address needs
    // the URL departments reach it at.
    let real = dir.join("dispatch.toml");
    std::fs::write(
        &real,
        "[[department]]\nid='fire'\nname='Fire'\ndomain='safety'\nlevel='city'\nendpoint='simulated'\ntoken='k3Jx9qLw2Vb7Rt5Yp8Zm'\n",
    )
    .unwrap();
    let real_args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--dispatch".into(),
            real.clone().into(),
            "--users".into(),
            users.clone().into(),
        ];
        args.extend(extra.iter().map(|a| a.into()));
        args
    };
    let args = real_args(&["--api", "192.0.2.10:7999"]);
    refused(
        &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        "needs HTTPS",
    );
    let args = real_args(&["--api", "0.0.0.0:7999", "--api-insecure-http"]);
    refused(
        &args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>(),
        "--api-public-url",
    );
    // The demo never listens beyond this machine.
    refused(
        &["--demo".as_ref(), "--api".as_ref(), "0.0.0.0:7999".as_ref()],
        "loopback only",
    );
}

#[test]
fn bench_soak_refuses_durations_it_cannot_run() {
    for args in [
        ["--hours", "NaN"],
        ["--hours=-1", "--every-min=30"],
        ["--hours", "1e300"],
        ["--every-min", "1e300"],
    ] {
        let out = crate::zhongshu()
            .args(["bench", "soak"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--hours") || err.contains("--every-min"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn bench_soak_takes_simulated_hours_or_real_minutes_not_both() {
    for (args, said) in [
        (&["--hours", "1", "--minutes", "1"][..], "give one"),
        (&["--minutes", "NaN"][..], "--minutes"),
        (&["--minutes", "1", "--every-min", "2"][..], "--every-min"),
        (&["--window"][..], "--minutes"),
    ] {
        let out = crate::zhongshu()
            .args(["bench", "soak"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    }
}

#[test]
fn a_drill_in_a_window_without_a_display_says_so_at_once() {
    for command in ["surge", "soak"] {
        let started = std::time::Instant::now();
        let out = crate::zhongshu()
            .args(["bench", command, "--window", "--minutes", "0.1"])
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("needs a display") && err.contains("xvfb-run"),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn a_drill_refuses_what_it_would_not_use_and_a_log_it_would_share() {
    let dir = scratch_dir("drill-refusals");
    let refused = |args: &[&str], said: &str| {
        let out = zhongshu().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    };
    // The hall's log or the user's city are never drilled by mistake.
    refused(
        &[
            "--nats",
            "nats://127.0.0.1:1",
            "--hall",
            "x",
            "bench",
            "surge",
        ],
        "does not take --nats",
    );
    refused(
        &["--map", "city.pbf", "bench", "soak", "--minutes", "1"],
        "--map",
    );
    // Planned storms are bounded: minutes and scale together.
    refused(
        &["bench", "surge", "--minutes", "240", "--scale", "100000"],
        "at most 100000",
    );
    // What an earlier log left beside --db would be taken as this one's.
    let db = dir.join("drill.db");
    std::fs::write(dir.join("drill.db.key"), "00").unwrap();
    let db_arg = db.to_str().unwrap();
    refused(
        &["--db", db_arg, "bench", "surge"],
        "left by an earlier log",
    );
    std::fs::remove_file(dir.join("drill.db.key")).unwrap();
    std::fs::write(&db, "").unwrap();
    refused(&["--db", db_arg, "bench", "surge"], "the file exists");
    // A snapshot that cannot be written is said before the storm.
    refused(
        &[
            "bench",
            "surge",
            "--window",
            "--snapshot",
            "/nonexistent-dir/shot.png",
        ],
        "--snapshot /nonexistent-dir/shot.png",
    );
}

#[test]
fn an_interrupted_drill_reports_what_ran_and_leaves_no_temporary_log() {
    let tmp = scratch_dir("drill-interrupt");
    let child = zhongshu()
        .args(["bench", "surge", "--minutes", "2"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the storm is under way (its temporary log is there), SIGINT.
    let started = std::time::Instant::now();
    while std::fs::read_dir(&tmp).unwrap().next().is_none() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a report");
    assert_eq!(report["interrupted"], true, "{report}");
    assert!(report["minutes"].as_f64().unwrap() == 2.0);
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the temporary log is removed"
    );
}

#[test]
fn bench_fuzz_reports_each_target_and_replays_an_input() {
    let save = scratch_dir("bench-fuzz");
    let out = zhongshu()
        .args([
            "bench",
            "fuzz",
            "--target",
            "paging-link",
            "--inputs",
            "300",
        ])
        .arg("--save")
        .arg(&save)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = &report["targets"]["paging-link"];
    assert_eq!(link["inputs"], 300, "{report}");
    for found in ["panics", "hangs", "crashes", "over_memory"] {
        assert_eq!(link[found], 0, "{found}: {report}");
    }
    assert!(link["inputs_per_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(link["peak_rss_mb"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["found"], 0);

    // Input 17 written out is the input 17 that ran: the same bytes every time.
    let dump = |dir: &str| {
        let out = zhongshu()
            .args(["bench", "fuzz", "--target", "cap-xml", "--from", "17"])
            .args(["--inputs", "1", "--dump", "--save"])
            .arg(save.join(dir))
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::read(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    };
    assert_eq!(dump("a"), dump("b"));

    let out = zhongshu()
        .args(["bench", "fuzz", "--target", "yaml", "--inputs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("osm-pbf"));
}

/// A one-building GeoJSON in Shenzhen with its coordinates in `crs` (EPSG code), and
/// a `crs` member naming it when `member`.
fn one_building_in(name: &str, code: u32, member: bool) -> std::path::PathBuf {
    use zhongshu::map::crs::{Crs, project_from_wgs84};
    let dir = scratch_dir(name);
    let path = dir.join("city.geojson");
    let (lon, lat) = (114.0579, 22.5431);
    let mut ring: Vec<[f64; 2]> = [
        (0.0, 0.0),
        (2e-4, 0.0),
        (2e-4, 2e-4),
        (0.0, 2e-4),
        (0.0, 0.0),
    ]
    .iter()
    .map(|(dx, dy)| [lon + dx, lat + dy])
    .collect();
    project_from_wgs84(&mut ring, &Crs::from_epsg(code).unwrap()).unwrap();
    let mut city = serde_json::json!({
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {"building": "yes", "height": "20"},
            "geometry": {"type": "Polygon", "coordinates": [ring]}
        }]
    });
    if member {
        city["crs"] = serde_json::json!({
            "type": "name",
            "properties": {"name": format!("urn:ogc:def:crs:EPSG::{code}")}
        });
    }
    std::fs::write(&path, city.to_string()).unwrap();
    path
}

#[test]
fn a_gauss_kruger_map_is_read_in_its_crs_from_the_file_or_the_flag() {
    let gk = "EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E)";
    let with_member = one_building_in("crs-member", 4547, true);
    let (ok, info, stderr) = map_info(&with_member);
    assert!(ok, "{stderr}");
    assert_eq!(
        info["crs"],
        serde_json::json!({"name": gk, "source": "file"})
    );
    assert_eq!(info["buildings"], 1);
    let origin = info["origin"].as_array().unwrap();
    assert!(
        (origin[0].as_f64().unwrap() - 114.058).abs() < 0.001,
        "{info}"
    );
    assert!(
        (origin[1].as_f64().unwrap() - 22.5432).abs() < 0.001,
        "{info}"
    );
    assert!(info.get("coords").is_none(), "{info}");

    let bare = one_building_in("crs-flag", 4547, false);
    let (ok, info, stderr) = map_info_with(&bare, &["--crs", "EPSG:4547"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        info["crs"],
        serde_json::json!({"name": gk, "source": "flag"})
    );
    assert_eq!(info["timezone"]["name"], "Asia/Shanghai");

    // A plain WGS84 map says where its CRS came from too.
    let (ok, info, _) = map_info(&one_building_at("crs-default", 121.4903, 31.24));
    assert!(ok);
    assert_eq!(
        info["crs"],
        serde_json::json!({"name": "EPSG:4326 (WGS 84)", "source": "default"})
    );
}

#[test]
fn a_projected_map_read_as_degrees_is_refused_naming_the_problem() {
    let bare = one_building_in("crs-refused", 4547, false);
    let (ok, info, stderr) = map_info(&bare);
    assert!(!ok, "{info}");
    assert!(
        stderr.contains("coordinates look projected (e.g. 505955.")
            && stderr.contains("not degrees: give the CRS with --crs EPSG:n or a crs member"),
        "{stderr}"
    );
    assert!(stderr.contains("city.geojson"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unknown_crs_or_coords_is_a_clear_error_naming_it() {
    let bare = one_building_in("crs-unknown", 4547, false);
    let (ok, _, stderr) = map_info_with(&bare, &["--crs", "EPSG:2385"]);
    assert!(!ok);
    assert!(
        stderr.contains("--crs") && stderr.contains("unknown CRS EPSG:2385"),
        "{stderr}"
    );
    let (ok, _, stderr) = map_info_with(&bare, &["--coords", "mars"]);
    assert!(!ok);
    assert!(
        stderr.contains("--coords") && stderr.contains("\"mars\""),
        "{stderr}"
    );
}

#[test]
fn a_gcj02_map_is_moved_to_wgs84_and_map_info_says_so() {
    let path = one_building_at("coords-gcj", 114.0579, 22.5431);
    let (ok, plain, _) = map_info(&path);
    assert!(ok);
    let (ok, info, stderr) = map_info_with(&path, &["--coords", "gcj02"]);
    assert!(ok, "{stderr}");
    assert_eq!(info["coords"], "gcj02");
    // GCJ-02 is hundreds of metres off WGS84 in Shenzhen: the map moved north-west.
    let (a, b) = (
        plain["origin"].as_array().unwrap(),
        info["origin"].as_array().unwrap(),
    );
    let d_lon = b[0].as_f64().unwrap() - a[0].as_f64().unwrap();
    let d_lat = b[1].as_f64().unwrap() - a[1].as_f64().unwrap();
    assert!(d_lon < -0.004 && d_lat > 0.002, "{d_lon} {d_lat}");
}

#[test]
fn ops_report_gives_the_figures_of_a_log_written_by_the_dispatcher() {
    use zhongshu::dispatch::Action;
    use zhongshu::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
    let dir = scratch_dir("ops-report");
    let db = dir.join("events.db");
    let dispatch = dir.join("dispatch.toml");
    std::fs::write(
        &dispatch,
        format!(
            "{}\n[[sla]]\ndepartment = \"central_district\"\nsign_for_min = 5\n",
            zhongshu::dispatch::config::DEFAULT_DISPATCH_TOML
        ),
    )
    .unwrap();
    // 2026-11-29T10:00:00Z.
    let t0: i64 = 1_795_946_400_000;
    let min = 60_000;
    {
        let mut d = zhongshu::dispatch::dispatcher::Dispatcher::open(
            &db,
            zhongshu::dispatch::config::DispatchConfig::load(&dispatch).unwrap(),
        )
        .unwrap();
        let li = Actor::new("li.wei", zhongshu::dispatch::Role::Dispatcher, None);
        d.execute(
            &Command::ReportIncident(NewIncident {
                kind: "waterlogging".into(),
                title: "Underpass flooded".into(),
                domain: zhongshu::feeds::Domain::Urban,
                severity: Severity::Severe,
                lon: 24.94,
                lat: 60.17,
                source: "map".into(),
                key: None,
            }),
            &li,
            t0,
        )
        .unwrap();
        let order = NewOrder {
            department: "central_district".into(),
            instruction: "Send staff with pumps".into(),
            deadline_ms: t0 + 30 * min,
        };
        d.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![order.clone(), order],
            },
            &li,
            t0 + min,
        )
        .unwrap();
        // Signed for by phone after 3 and 8 minutes; the first done after 20.
        for (id, action, at) in [
            ("ORD-000001", Action::AcknowledgeOrder, 4),
            ("ORD-000002", Action::AcknowledgeOrder, 9),
            ("ORD-000001", Action::CompleteOrder, 21),
        ] {
            d.execute(
                &Command::Order {
                    id: id.into(),
                    action,
                    note: None,
                },
                &li,
                t0 + at * min,
            )
            .unwrap();
        }
    }
    let before = std::fs::read(&db).unwrap();
    let run = |args: &[&str]| {
        let out = zhongshu()
            .arg("ops-report")
            .args(args)
            .arg("--db")
            .arg(&db)
            .arg("--dispatch")
            .arg(&dispatch)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
        report
    };
    // Judged at +40 min, in RFC 3339 with an offset.
    let r = run(&["--until", "2026-11-29T18:40:00+08:00"]);
    assert_eq!(r["at"], "2026-11-29T10:40:00.000Z", "{r}");
    let district = &r["departments"]["central_district"];
    assert_eq!(district["orders"], 2, "{r}");
    assert_eq!(district["sign_for_ms"]["p50"], 3 * min, "{r}");
    assert_eq!(district["sign_for_ms"]["p90"], 8 * min, "{r}");
    assert_eq!(district["done_ms"]["n"], 1, "{r}");
    assert_eq!(district["done_ms"]["p50"], 20 * min, "{r}");
    // One done in time, one past its deadline (+30) undone.
    assert_eq!(district["on_time_pct"], 50.0, "{r}");
    assert_eq!(r["overdue"][0]["order"], "ORD-000002", "{r}");
    assert_eq!(r["overdue"][0]["overdue_ms"], 10 * min, "{r}");
    assert_eq!(r["sla_breaches"][0]["order"], "ORD-000002", "{r}");
    assert_eq!(r["sla_breaches"][0]["target"], "sign_for", "{r}");
    assert_eq!(r["sla_breaches"][0]["over_ms"], 3 * min, "{r}");
    assert_eq!(r["incidents"][0]["first_order_ms"]["p50"], min, "{r}");
    assert_eq!(r["feeds"]["health_recorded"], false, "{r}");
    // In Unix milliseconds, before the second sign-for: one signed for.
    let until = (t0 + 5 * min).to_string();
    let r = run(&["--until", &until]);
    assert_eq!(
        r["departments"]["central_district"]["sign_for_ms"]["n"], 1,
        "{r}"
    );
    // Reading changed nothing: the log, its key and witness are as they were.
    assert_eq!(std::fs::read(&db).unwrap(), before);
    let (ok, _) = audit_verify(&db);
    assert!(ok);

    // Mistakes are named, and exit non-zero.
    for (args, expected) in [
        (
            vec!["ops-report", "--since", "2026-11-29T10:00:00"],
            "--since: \"2026-11-29T10:00:00\" has no offset",
        ),
        (vec!["ops-report", "--until", "yesterday"], "--until"),
        (
            vec![
                "ops-report",
                "--since",
                "1795950000000",
                "--until",
                "1795946400000",
            ],
            "--since is after --until",
        ),
        (
            vec!["ops-report", "--feeds", "f.toml"],
            "--feeds: ops-report reads only",
        ),
    ] {
        let out = zhongshu()
            .args(&args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = zhongshu()
        .args(["ops-report", "--db", "/nowhere/events.db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event log at /nowhere/events.db"));

    // A log edited in place is refused, naming where.
    let raw = rusqlite::Connection::open(&db).unwrap();
    raw.execute(
        "UPDATE events SET payload = replace(payload, 'pumps', 'buckets') WHERE seq = 4",
        [],
    )
    .unwrap();
    drop(raw);
    let out = zhongshu()
        .args(["ops-report", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(stderr.contains("does not verify from event"), "{stderr}");
    assert!(stderr.contains("event 4 does not match"), "{stderr}");
}

/// A picture of the past never opens the live dispatch desk (it would deliver
/// pending orders and run the clock on the real log): `--at` with `--user` is
/// refused before anything is opened.
#[test]
fn a_screenshot_of_the_past_refuses_the_live_desk() {
    let dir = scratch_dir("screenshot-at-user");
    let db = dir.join("events.db");
    let out = zhongshu()
        .args([
            "screenshot",
            "--at",
            "1795946400000",
            "--user",
            "dispatch",
            "--db",
        ])
        .arg(&db)
        .arg("--history")
        .arg(dir.join("history"))
        .arg("--out")
        .arg(dir.join("past.png"))
        .env("ZHONGSHU_PASSPHRASE", "zhongshu")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("live dispatch desk"), "{stderr}");
    assert!(!db.exists(), "the log was opened");
    assert!(!dir.join("past.png").exists());
}

#[test]
fn record_then_state_at_gives_the_city_and_the_book_as_they_stood() {
    use zhongshu::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
    let dir = scratch_dir("record-state-at");
    let history = dir.join("history");
    let started = zhongshu::clock::unix_ms_now();
    let out = zhongshu()
        .args(["record", "--for", "4", "--history"])
        .arg(&history)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert!(report["changes"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let ended = zhongshu::clock::unix_ms_now();

    // The dispatch log: an incident reported during the recording, an order for it.
    let db = dir.join("events.db");
    {
        let mut d = zhongshu::dispatch::dispatcher::Dispatcher::open(
            &db,
            zhongshu::dispatch::config::DispatchConfig::default_config(),
        )
        .unwrap();
        let li = Actor::new("li.wei", zhongshu::dispatch::Role::Dispatcher, None);
        d.execute(
            &Command::ReportIncident(NewIncident {
                kind: "waterlogging".into(),
                title: "Underpass flooded".into(),
                domain: zhongshu::feeds::Domain::Urban,
                severity: Severity::Severe,
                lon: 24.94,
                lat: 60.17,
                source: "map".into(),
                key: None,
            }),
            &li,
            started + 1_000,
        )
        .unwrap();
        d.execute(
            &Command::IssueOrders {
                incident: "INC-000001".into(),
                orders: vec![NewOrder {
                    department: "central_district".into(),
                    instruction: "Send staff with pumps".into(),
                    deadline_ms: started + 3_600_000,
                }],
            },
            &li,
            started + 3_000,
        )
        .unwrap();
    }
    let state_at = |at: i64| {
        zhongshu()
            .args(["state-at", "--at", &at.to_string(), "--history"])
            .arg(&history)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    let out = state_at(ended);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let end: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        end["entities"], report["entities_at_end"],
        "{}",
        end["history"]
    );
    assert!(
        end["kpis"]["vehicles"].as_u64().unwrap() > 0,
        "{}",
        end["kpis"]
    );
    let traffic = end["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feed"] == "sim-traffic")
        .expect("the traffic feed");
    let bus = &traffic["items"][0];
    assert!(bus["position"][0].as_f64().is_some(), "{bus}");
    assert!(bus["observed_at"].as_str().is_some(), "{bus}");
    assert_eq!(end["dispatch"]["open_incidents"][0]["id"], "INC-000001");
    assert_eq!(
        end["dispatch"]["orders_by_status"]["issued"][0]["id"], "ORD-000001",
        "{}",
        end["dispatch"]
    );
    // Between the report and the order: the incident without its order.
    let out = state_at(started + 2_000);
    assert!(out.status.success());
    let mid: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mid["dispatch"]["open_incidents"][0]["orders"], 0);
    assert_eq!(mid["dispatch"]["orders_by_status"], serde_json::json!({}));
    // Well after the end: the city as it stood at the end, said.
    let out = state_at(ended + 600_000);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the recording ends at"), "{stderr}");
    let late: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(late["entities"], end["entities"]);
    assert!(
        late["history"]["after_the_end"].is_string(),
        "{}",
        late["history"]
    );
    assert!(
        end["history"]["after_the_end"].is_null(),
        "{}",
        end["history"]
    );
    // Before the history: said, with when it starts.
    let out = state_at(started - 60_000);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("starts at"), "{stderr}");
    // A folder with no history: said, naming it.
    let out = zhongshu()
        .args(["state-at", "--at", "2026-11-30T10:00:00Z", "--history"])
        .arg(dir.join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nowhere"), "{stderr}");

    // Export: the state at --from, then every change up to --to, a Feature a line.
    let from = started + 2_000;
    let export = |from: i64, to: i64, file: &std::path::Path| {
        zhongshu()
            .args([
                "export",
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
            ])
            .arg("--out")
            .arg(file)
            .arg("--history")
            .arg(&history)
            .output()
            .unwrap()
    };
    let file = dir.join("window.geojsonl");
    let out = export(from, ended, &file);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(
        lines.len() as u64,
        stats["features"].as_u64().unwrap(),
        "{stats}"
    );
    let at_from: serde_json::Value = serde_json::from_slice(&state_at(from).stdout).unwrap();
    assert_eq!(stats["state"], at_from["entities"], "{stats}");
    assert!(stats["updates"].as_u64().unwrap() > 0, "{stats}");
    let changes: Vec<&str> = lines
        .iter()
        .map(|l| l["properties"]["change"].as_str().unwrap())
        .collect();
    // Every state line comes first, then the changes in time order.
    let first_change = changes.iter().position(|c| *c != "state").unwrap();
    assert!(changes[first_change..].iter().all(|c| *c != "state"));
    let taken: Vec<&str> = lines[first_change..]
        .iter()
        .map(|l| l["properties"]["taken_in"].as_str().unwrap())
        .collect();
    assert!(
        taken.windows(2).all(|w| w[0] <= w[1]),
        "changes out of order"
    );
    let bus = lines
        .iter()
        .find(|l| l["properties"]["type"] == "Vehicle" && l["properties"]["change"] == "update")
        .expect("a vehicle's update");
    assert_eq!(bus["geometry"]["type"], "Point", "{bus}");
    assert_eq!(bus["properties"]["feed"], "sim-traffic", "{bus}");
    assert!(bus["properties"]["speed"].is_number(), "{bus}");
    assert!(bus["properties"]["observed_at"].is_string(), "{bus}");
    // The last state of each entity in the export is the state at --to.
    let mut last: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    for l in &lines {
        let id = l["id"].as_str().unwrap().to_string();
        if l["properties"]["change"] == "removed" {
            last.remove(&id);
        } else {
            last.insert(id, l["geometry"].clone());
        }
    }
    assert_eq!(last.len() as u64, end["entities"].as_u64().unwrap());
    // A window backwards is refused, and an earlier export is left whole.
    let out = export(ended, from, &file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("after --to"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // Before the history starts: said, and no file.
    let early = dir.join("early.geojsonl");
    let out = export(started - 60_000, started - 30_000, &early);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("starts at"));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains("early"))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Never into the history folder, where it would be read as a segment.
    let inside = history.join("zhongshu-1.mcap");
    let out = export(from, ended, &inside);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inside the history folder"));
    assert!(!inside.exists());
    // A second recorder into a folder being recorded is refused (once the first has
    // written its first segment, it holds the folder).
    let segments = || {
        std::fs::read_dir(&history)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".mcap"))
            })
            .count()
    };
    let before = segments();
    let mut first = zhongshu()
        .args(["record", "--for", "10", "--history"])
        .arg(&history)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waited = std::time::Instant::now();
    while segments() == before && waited.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let second = zhongshu()
        .args(["record", "--for", "1", "--history"])
        .arg(&history)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another recorder"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Killed (kill -9) a few seconds in: what it took in up to about a second before
    // is there to read, though its segment was never finished.
    while waited.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    first.kill().unwrap();
    let _ = first.wait();
    let killed = zhongshu::clock::unix_ms_now();
    let out = zhongshu()
        .args(["state-at", "--at", &killed.to_string(), "--history"])
        .arg(&history)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(after["entities"].as_u64().unwrap() > 0, "{after}");
    let until = after["history"]["data_until"].as_str().unwrap();
    let until_ms = zhongshu::clock::parse_instant_ms(until).unwrap();
    assert!(
        killed - until_ms < 3_000,
        "the last {} ms before the kill were lost: {}",
        killed - until_ms,
        after["history"]
    );
}
