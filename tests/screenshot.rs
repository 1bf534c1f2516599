//! `zhongshu screenshot` renders the real scene through the GPU pipeline (Mesa's
//! lavapipe under Xvfb in CI) and the PNG shows a city, not a blank frame.

use std::collections::HashSet;

use crate::{audit_verify, scratch_dir, zhongshu};

/// Runs `zhongshu ARGS` under `xvfb-run` unless a display is already there.
fn run_with_display(args: &[&str]) -> std::process::Output {
    run_with_display_env(args, &[])
}

fn run_with_display_env(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let _timed = crate::timed();
    crate::zhongshu_with_display()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot start zhongshu under xvfb-run ({e}); install xvfb and mesa-vulkan-drivers (.ci/run does)")
        })
}

#[test]
fn screenshot_of_the_default_city_shows_buildings() {
    let dir = scratch_dir("screenshot");
    let out = dir.join("city.png");
    let result = run_with_display(&[
        "screenshot",
        "--out",
        out.to_str().unwrap(),
        "--size",
        "960x600",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "screenshot failed: {stderr}");
    let report: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&result.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|_| panic!("no JSON report; stderr: {stderr}"));
    assert_eq!(report["width"], 960);

    let image = image::open(&out).expect("a readable PNG").to_rgb8();
    assert_eq!((image.width(), image.height()), (960, 600));

    // The centre of the frame is the 3D view: most of it must be city, not background.
    let (w, h) = (image.width(), image.height());
    let clear = [3i32, 4, 9]; // theme::CLEAR in sRGB
    let centre: Vec<_> = (h / 4..h * 3 / 4)
        .flat_map(|y| (w / 3..w * 2 / 3).map(move |x| (x, y)))
        .map(|(x, y)| image.get_pixel(x, y).0)
        .collect();
    let non_background = centre
        .iter()
        .filter(|p| {
            (p[0] as i32 - clear[0]).abs()
                + (p[1] as i32 - clear[1]).abs()
                + (p[2] as i32 - clear[2]).abs()
                > 12
        })
        .count();
    let share = non_background as f64 / centre.len() as f64;
    assert!(
        share > 0.5,
        "only {:.0}% of the view is drawn",
        share * 100.0
    );

    // Buildings are drawn by our shader in cool blue-cyan shades that vary with height
    // and face: several distinct shades must be present, in quantity.
    let building_like: Vec<_> = centre
        .iter()
        .filter(|p| p[2] as i32 > p[0] as i32 + 20 && p[2] >= 40)
        .collect();
    assert!(
        building_like.len() > centre.len() / 8,
        "too few building pixels: {} of {}",
        building_like.len(),
        centre.len()
    );
    let shades: HashSet<_> = building_like
        .iter()
        .map(|p| (p[0] / 16, p[1] / 16, p[2] / 16))
        .collect();
    assert!(shades.len() >= 20, "only {} building shades", shades.len());

    // The live layers are on: roads coloured by traffic speed (somewhere on the
    // red–amber–green ramp, whatever the hour), taxis and buses as markers.
    let view: Vec<_> = (h / 8..h - 30)
        .flat_map(|y| (w / 5..w).map(move |x| (x, y)))
        .map(|(x, y)| image.get_pixel(x, y).0)
        .collect();
    let ramp: Vec<[i32; 3]> = [0xB3122A, 0xE8412C, 0xF2A23A, 0x9CD64A, 0x2FBF71]
        .iter()
        .map(|c| [(c >> 16) & 255, (c >> 8) & 255, c & 255])
        .collect();
    let near_ramp = |p: &[u8; 3]| {
        // Within 40 of a stop or of the midpoint of two neighbouring stops.
        let mids = ramp
            .windows(2)
            .map(|w| [0, 1, 2].map(|i| (w[0][i] + w[1][i]) / 2));
        ramp.iter()
            .copied()
            .chain(mids)
            .any(|c| (0..3).map(|i| (p[i] as i32 - c[i]).pow(2)).sum::<i32>() < 40 * 40)
    };
    let traffic_coloured = view.iter().filter(|p| near_ramp(p)).count();
    assert!(
        traffic_coloured > view.len() / 100,
        "no traffic colouring: {traffic_coloured} px of {}",
        view.len()
    );
    let taxi_yellow = view
        .iter()
        .filter(|p| p[0] > 200 && p[1] > 170 && p[2] < 110)
        .count();
    assert!(taxi_yellow > 100, "no vehicle markers: {taxi_yellow} px");

    // The egui chrome is there too: the top bar is not background.
    let top_row: Vec<_> = (0..w).map(|x| image.get_pixel(x, 10).0).collect();
    assert!(top_row.iter().any(|p| p != &top_row[0]) || top_row[0] != [3, 4, 9]);
}

#[test]
fn screenshot_rejects_a_bad_size() {
    let out = zhongshu()
        .args(["screenshot", "--out", "/tmp/x.png", "--size", "big"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
}

#[test]
fn a_signed_in_dispatcher_sees_the_desk_and_alerts_become_incidents_in_the_log() {
    let dir = scratch_dir("screenshot-desk");
    let out = dir.join("desk.png");
    let db = dir.join("events.db");
    let result = run_with_display_env(
        &[
            "screenshot",
            "--out",
            out.to_str().unwrap(),
            "--size",
            "1280x720",
            "--user",
            "dispatch",
            "--db",
            db.to_str().unwrap(),
            "--api",
            "127.0.0.1:0",
        ],
        &[("ZHONGSHU_PASSPHRASE", "zhongshu")],
    );
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "screenshot failed: {stderr}");

    // The desk is the right-hand panel: mostly the panel colour, with text on it.
    let image = image::open(&out).expect("a readable PNG").to_rgb8();
    let (w, h) = (image.width(), image.height());
    let desk: Vec<_> = (h / 6..h - 40)
        .flat_map(|y| (w - 360..w - 10).map(move |x| (x, y)))
        .map(|(x, y)| image.get_pixel(x, y).0)
        .collect();
    let panel = desk
        .iter()
        .filter(|p| p[0].abs_diff(8) < 6 && p[1].abs_diff(13) < 6 && p[2].abs_diff(24) < 6)
        .count();
    assert!(
        panel > desk.len() / 2,
        "no desk panel: {panel} of {}",
        desk.len()
    );
    let text = desk.iter().filter(|p| p[0] > 150 && p[1] > 150).count();
    assert!(text > 500, "the desk shows nothing: {text} bright px");

    // The simulated sub-brains' open alerts were raised as incidents, durably, by
    // Zhongshu itself, and the chain verifies.
    let (ok, report) = audit_verify(&db);
    assert!(ok, "{report}");
    assert!(report["incidents"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["chain_ok"], true);
}

#[test]
fn a_wrong_or_missing_passphrase_at_start_is_refused_before_any_window() {
    let out = zhongshu()
        .args(["--user", "dispatch"])
        .env("ZHONGSHU_PASSPHRASE", "not-the-passphrase")
        .args(["screenshot", "--out", "/tmp/never.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    let out = zhongshu()
        .args(["--user", "dispatch"])
        .env_remove("ZHONGSHU_PASSPHRASE")
        .args(["screenshot", "--out", "/tmp/never.png"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ZHONGSHU_PASSPHRASE"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines bevy (or anything else) logged at ERROR level.
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("ERROR")).collect()
}

#[test]
fn a_traffic_only_city_renders_without_a_render_error() {
    // Traffic alone: every segment update recolours the road chunks, and closed roads
    // (roundabouts) are outlines no other layer claims. Bevy logged "slab_allocator:
    // Use-after-free" twice per update here when a layer handed it an empty mesh.
    let dir = scratch_dir("screenshot-traffic");
    let feeds = dir.join("feeds.toml");
    std::fs::write(
        &feeds,
        "[[feed]]\nname = \"sim-traffic\"\nkind = \"sim\"\ndomain = \"traffic\"\ninterval_s = 1\n",
    )
    .unwrap();
    let out = dir.join("traffic.png");
    let result = run_with_display(&[
        "--feeds",
        feeds.to_str().unwrap(),
        "screenshot",
        "--out",
        out.to_str().unwrap(),
        "--size",
        "960x600",
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "screenshot failed: {stderr}");
    let errors = error_lines(&stderr);
    assert!(
        errors.is_empty(),
        "render errors logged:\n{}",
        errors.join("\n")
    );

    // The traffic is on screen: roads on the red–amber–green ramp.
    let image = image::open(&out).expect("a readable PNG").to_rgb8();
    let ramp_like = image
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0.map(i32::from);
            (r > 150 && g < 110 && b < 90) || (g > 150 && r < 190 && b < 150 && g > b + 40)
        })
        .count();
    assert!(ramp_like > 500, "no traffic on the roads: {ramp_like} px");
}

#[test]
fn a_surge_in_a_window_is_played_by_the_app_and_loses_nothing() {
    let dir = scratch_dir("surge-window");
    let db = dir.join("surge.db");
    let png = dir.join("surge.png");
    // Six seconds of a hard storm (about 60 events at 12 × 3000 an hour), the real
    // app drawing in software all the while.
    let result = run_with_display(&[
        "--db",
        db.to_str().unwrap(),
        "bench",
        "surge",
        "--window",
        "--minutes",
        "0.1",
        "--scale",
        "3000",
        "--seed",
        "7",
        "--snapshot",
        png.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "the drill failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&result.stdout)
        .unwrap_or_else(|_| panic!("no JSON report; stderr: {stderr}"));
    assert_eq!(report["window"], true, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
    assert_eq!(report["refused"], 0, "{report}");
    assert!(report["events"].as_u64().unwrap() >= 30, "{report}");
    assert!(report["incidents_raised"].as_u64().unwrap() > 0, "{report}");
    // Every alert raised an incident or joined one, as the dispatcher said.
    assert_eq!(
        report["incidents_raised"].as_u64().unwrap() + report["deduplicated"].as_u64().unwrap(),
        report["alerts_in"].as_u64().unwrap(),
        "{report}"
    );
    assert!(report["orders_issued"].as_u64().unwrap() > 0, "{report}");
    assert!(report["frames"].as_u64().unwrap() > 0, "{report}");
    for measure in ["frame_ms", "frame_interval_ms", "frame_main_thread_cpu_ms"] {
        assert!(report[measure]["p99"].as_f64().unwrap() > 0.0, "{report}");
    }
    // The window, half-way through: the city and the desk's panel.
    let image = image::open(&png).expect("a readable PNG").to_rgb8();
    assert!(zhongshu::app::snapshot::city_pixel_share(&image) > 0.2);
    // The incidents are in the log, each one the app raised.
    let (ok, verified) = audit_verify(&db);
    assert!(ok, "{verified}");
    assert!(
        verified["incidents"].as_u64().unwrap() >= report["incidents_raised"].as_u64().unwrap(),
        "{verified} {report}"
    );
}

/// `screenshot --at` renders the city as it was recorded then: a fleet of taxis in
/// the centre at the first instant, gone at the second; the picture says REPLAY.
#[test]
fn a_screenshot_at_a_past_time_shows_the_city_as_it_was_then() {
    use zhongshu::history::{FeedMeta, HistoryOptions, HistoryWriter};
    use zhongshu::model::{EntityKind, EntityUpdate, FieldValue};
    let dir = scratch_dir("screenshot-at");
    let history = dir.join("history");
    let city = zhongshu::map::load_default().unwrap();
    let [w0, s0, e0, n0] = city.bbox_wgs84;
    let (lon0, lat0) = ((w0 + e0) / 2.0, (s0 + n0) / 2.0);
    let t0: i64 = 1_795_946_400_000;
    let feeds = vec![FeedMeta {
        id: 0,
        name: "sim-traffic".into(),
        domain: "traffic".into(),
    }];
    let mut writer = HistoryWriter::create(&history, feeds, HistoryOptions::default()).unwrap();
    let taxi = |i: usize, at: i64| EntityUpdate {
        id: format!("urn:ngsi-ld:Vehicle:taxi-{i}"),
        entity_type: "Vehicle".into(),
        kind: EntityKind::Vehicle {
            vehicle_type: Some("taxi".into()),
            speed_kmh: Some(20.0),
            heading_deg: Some(90.0),
            service_status: Some("onRoute".into()),
        },
        position: Some([
            lon0 + ((i % 12) as f64 - 6.0) * 4e-4,
            lat0 + ((i / 12) as f64 - 6.0) * 2e-4,
        ]),
        line: None,
        observed_at_ms: Some(at),
        fields: [
            ("vehicleType".to_string(), FieldValue::Text("taxi".into())),
            ("speed".to_string(), FieldValue::Number(20.0)),
        ]
        .into_iter()
        .collect(),
        units: Default::default(),
        notes: Vec::new(),
    };
    // 144 taxis for a minute, then every one gone for a minute.
    for s in 0..60i64 {
        for i in 0..144 {
            writer
                .upsert(0, t0 + s * 1000, &taxi(i, t0 + s * 1000))
                .unwrap();
        }
    }
    for i in 0..144 {
        writer
            .remove(0, &format!("urn:ngsi-ld:Vehicle:taxi-{i}"), t0 + 61_000)
            .unwrap();
    }
    writer
        .upsert(0, t0 + 120_000, &taxi(0, t0 + 120_000))
        .unwrap();
    writer
        .remove(0, "urn:ngsi-ld:Vehicle:taxi-0", t0 + 120_000)
        .unwrap();
    writer.finish().unwrap();

    let shoot = |at: i64, name: &str| {
        let out = dir.join(name);
        let result = run_with_display(&[
            "screenshot",
            "--out",
            out.to_str().unwrap(),
            "--size",
            "960x600",
            "--at",
            &at.to_string(),
            "--history",
            history.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&result.stderr).to_string();
        assert!(result.status.success(), "screenshot --at failed: {stderr}");
        image::open(&out).expect("a readable PNG").to_rgb8()
    };
    let yellow = |image: &image::RgbImage| {
        let (w, h) = (image.width(), image.height());
        (h / 8..h - 30)
            .flat_map(|y| (w / 5..w).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = image.get_pixel(x, y).0;
                p[0] > 200 && p[1] > 170 && p[2] < 110
            })
            .count()
    };
    // The REPLAY badge (theme::WARN, #ffb030) in the top bar.
    let badge = |image: &image::RgbImage| {
        (0..28)
            .flat_map(|y| (0..image.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = image.get_pixel(x, y).0;
                p[0] > 240 && p[1].abs_diff(0xb0) < 16 && p[2].abs_diff(0x30) < 24
            })
            .count()
    };
    let with_taxis = shoot(t0 + 30_000, "with.png");
    let without = shoot(t0 + 90_000, "without.png");
    // Gold labels and roads are yellow too: what differs between the two pictures in
    // the map is the taxis, there at the first instant and gone at the second.
    let (w, h) = (with_taxis.width(), with_taxis.height());
    let differing: Vec<(u32, u32)> = (80..h - 30)
        .flat_map(|y| (w / 4..w).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (a, b) = (with_taxis.get_pixel(x, y).0, without.get_pixel(x, y).0);
            (0..3).map(|i| a[i].abs_diff(b[i]) as u32).sum::<u32>() > 60
        })
        .collect();
    let taxi_where_differing = differing
        .iter()
        .filter(|&&(x, y)| {
            let p = with_taxis.get_pixel(x, y).0;
            p[0] > 200 && p[1] > 170 && p[2] < 110
        })
        .count();
    assert!(
        differing.len() > 300,
        "the two instants look alike: {} px differ",
        differing.len()
    );
    assert!(
        taxi_where_differing * 2 >= differing.len(),
        "what differs is not the taxis: {taxi_where_differing} of {} px",
        differing.len()
    );
    assert!(
        yellow(&without) + 300 < yellow(&with_taxis),
        "taxis still shown after they were gone: {} px, {} with them",
        yellow(&without),
        yellow(&with_taxis)
    );
    assert!(
        badge(&with_taxis) > 100,
        "no REPLAY badge: {} px",
        badge(&with_taxis)
    );

    // Before the history starts: a plain error, no window, no file.
    let early = zhongshu()
        .args(["screenshot", "--out"])
        .arg(dir.join("early.png"))
        .args(["--at", &(t0 - 60_000).to_string(), "--history"])
        .arg(&history)
        .output()
        .unwrap();
    assert!(!early.status.success());
    assert!(String::from_utf8_lossy(&early.stderr).contains("starts at"));
    assert!(!dir.join("early.png").exists());
}
