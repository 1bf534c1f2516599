//! `zhongshu wall`: a two-screen layout rendered through the real scene, each screen's
//! picture and what its tiles show; a tile whose data stops says so while the others
//! go on; a broken layout is refused before any window opens.

use crate::{scratch_dir, zhongshu};

const LAYOUT: &str = r#"
[[bookmark]]
name = "Centre"
lon = 24.945
lat = 60.170
distance = 1500
yaw = 30
pitch = 45

[[screen]]
name = "city"
columns = 3
rows = 2

[[screen.tile]]
kind = "map"
at = [0, 0]
span = [2, 2]
domains = ["traffic", "safety"]

[[screen.tile]]
kind = "map"
title = "Water 供水"
at = [2, 0]
bookmark = "Centre"
domains = ["utilities"]

[[screen.tile]]
kind = "incidents"
at = [2, 1]

[[screen]]
name = "operations"
columns = 3
rows = 2

[[screen.tile]]
kind = "hotspot"
at = [0, 0]

[[screen.tile]]
kind = "orders"
at = [1, 0]

[[screen.tile]]
kind = "kpi"
at = [0, 1]

[[screen.tile]]
kind = "feeds"
at = [1, 1]

[[screen.tile]]
kind = "trends"
at = [2, 0]
span = [1, 2]
"#;

/// Two sub-brains simulated, and a water-sensor feed whose server is not there.
const FEEDS: &str = r#"
[[feed]]
name = "sim-traffic"
kind = "sim"
domain = "traffic"
interval_s = 1

[[feed]]
name = "sim-safety"
kind = "sim"
domain = "safety"
interval_s = 1

[[feed]]
name = "water-sensors"
kind = "ngsi-ld"
domain = "utilities"
url = "http://127.0.0.1:9/ngsi-ld/v1/entities?type=WaterQualityObserved"
interval_s = 2
"#;

/// A log with three incidents (one closed) and orders, one past its deadline.
/// A recorded history of the 6 hours up to now: three air-quality stations a minute,
/// their mean AQI 30 + the minute's number within the hour. Returns its folder.
fn recorded_air(dir: &std::path::Path) -> std::path::PathBuf {
    use zhongshu::history::{FeedMeta, HistoryOptions, HistoryWriter};
    use zhongshu::model::{EntityKind, EntityUpdate};
    let history = dir.join("history");
    let feeds = vec![FeedMeta {
        id: 0,
        name: "air".into(),
        domain: "ecology".into(),
    }];
    let mut writer = HistoryWriter::create(&history, feeds, HistoryOptions::default()).unwrap();
    let now = zhongshu::clock::unix_ms_now();
    for m in (0..=360i64).rev() {
        let at = now - m * 60_000;
        for station in 0..3i64 {
            let aqi = (20 + station * 10 + (at / 60_000) % 60) as f64;
            let update = EntityUpdate {
                id: format!("urn:ngsi-ld:AirQualityObserved:s{station}"),
                entity_type: "AirQualityObserved".into(),
                kind: EntityKind::AirQuality {
                    aqi: Some(aqi),
                    pm25: None,
                    pm10: None,
                    no2: None,
                    o3: None,
                },
                position: Some([24.93 + station as f64 * 0.01, 60.17]),
                line: None,
                observed_at_ms: Some(at),
                fields: Default::default(),
                units: Default::default(),
                notes: Vec::new(),
            };
            writer.upsert(0, at, &update).unwrap();
        }
    }
    writer.finish().unwrap();
    history
}

fn prepared_log(db: &std::path::Path) {
    use zhongshu::dispatch::Action;
    use zhongshu::dispatch::book::{Actor, Command, NewIncident, NewOrder, Severity};
    let now = zhongshu::clock::unix_ms_now();
    let min = 60_000;
    let mut d = zhongshu::dispatch::dispatcher::Dispatcher::open(
        db,
        zhongshu::dispatch::config::DispatchConfig::default_config(),
    )
    .unwrap();
    let li = Actor::new("li.wei", zhongshu::dispatch::Role::Dispatcher, None);
    let raise =
        |d: &mut zhongshu::dispatch::dispatcher::Dispatcher, title: &str, severity, at: i64| {
            d.execute(
                &Command::ReportIncident(NewIncident {
                    kind: "building_fire".into(),
                    title: title.into(),
                    domain: zhongshu::feeds::Domain::Safety,
                    severity,
                    lon: 24.94,
                    lat: 60.17,
                    source: "map".into(),
                    key: None,
                }),
                &li,
                at,
            )
            .unwrap();
        };
    raise(&mut d, "Warehouse fire", Severity::Moderate, now - 40 * min);
    raise(
        &mut d,
        "Chemical plant fire",
        Severity::Extreme,
        now - 30 * min,
    );
    raise(&mut d, "Car fire", Severity::Minor, now - 20 * min);
    d.execute(
        &Command::IssueOrders {
            incident: "INC-000002".into(),
            orders: vec![
                NewOrder {
                    department: "fire".into(),
                    instruction: "Two engines".into(),
                    deadline_ms: now - 10 * min,
                },
                NewOrder {
                    department: "traffic_police".into(),
                    instruction: "Close the road".into(),
                    deadline_ms: now + 30 * min,
                },
            ],
        },
        &li,
        now - 29 * min,
    )
    .unwrap();
    d.execute(
        &Command::Incident {
            id: "INC-000003".into(),
            action: Action::CloseIncident,
            note: None,
        },
        &li,
        now - 10 * min,
    )
    .unwrap();
}

#[test]
fn a_two_screen_wall_renders_each_screen_with_its_tiles() {
    let dir = scratch_dir("wall");
    let db = dir.join("events.db");
    prepared_log(&db);
    let history = recorded_air(&dir);
    std::fs::write(dir.join("wall.toml"), LAYOUT).unwrap();
    std::fs::write(dir.join("feeds.toml"), FEEDS).unwrap();
    let shots = dir.join("shots");
    let _timed = crate::timed();
    let mut cmd = crate::zhongshu_with_display();
    let out = cmd
        .current_dir(&dir)
        .args([
            "wall",
            "--layout",
            "wall.toml",
            "--feeds",
            "feeds.toml",
            "--db",
        ])
        .arg(&db)
        .arg("--history")
        .arg(&history)
        .args(["--screenshot-dir", "shots", "--size", "960x540"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wall failed: {stderr}");
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}\n{stderr}");
    // In screen order, whichever was captured first.
    assert_eq!(
        (&reports[0]["screen"], &reports[1]["screen"]),
        (&"city".into(), &"operations".into())
    );
    let screen = |name: &str| {
        reports
            .iter()
            .find(|r| r["screen"] == name)
            .unwrap_or_else(|| panic!("no screen {name}: {reports:?}"))
    };
    let (city, ops) = (screen("city"), screen("operations"));
    for (report, file, tiles) in [
        (city, "screen-1-city.png", 3),
        (ops, "screen-2-operations.png", 5),
    ] {
        let png = shots.join(file);
        let image = image::open(&png)
            .unwrap_or_else(|e| panic!("{}: {e}", png.display()))
            .to_rgb8();
        assert_eq!((image.width(), image.height()), (960, 540));
        assert_eq!(report["tiles"].as_array().unwrap().len(), tiles);
    }
    let tile = |r: &serde_json::Value, i: usize| r["tiles"][i].clone();
    // The boards read the log: open incidents most urgent first, the closed one gone;
    // the overdue order first.
    assert_eq!(
        tile(city, 2)["shows"],
        serde_json::json!(["INC-000002", "INC-000001"])
    );
    assert_eq!(
        tile(ops, 1)["shows"],
        serde_json::json!(["ORD-000001", "ORD-000002"])
    );
    // The hotspot is on the most urgent open incident.
    let hotspot = tile(ops, 0)["shows"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(hotspot.contains("INC-000002"), "{hotspot}");
    // The water tile's feed is down: it says so; the others go on.
    let banner = tile(city, 1)["banner"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        banner.contains("NO DATA") && banner.contains("water-sensors"),
        "{banner}"
    );
    for (r, i) in [
        (city, 0),
        (city, 2),
        (ops, 0),
        (ops, 1),
        (ops, 2),
        (ops, 3),
        (ops, 4),
    ] {
        assert!(tile(r, i)["banner"].is_null(), "{:?}", tile(r, i));
    }
    assert!(tile(ops, 2)["shows"]["vehicles"].as_u64().unwrap() > 0);
    // The trends start from the recorded history: every 5 minutes over the 4 hours
    // before the wall started (the history covers them all).
    assert_eq!(tile(ops, 4)["shows"]["recorded"], 48, "{:?}", tile(ops, 4));

    // The pictures: the map tiles show the city, the water tile its red banner (and no
    // other tile one), the incidents tile the extreme incident's red bar.
    let city_png = image::open(shots.join("screen-1-city.png"))
        .unwrap()
        .to_rgb8();
    let count = |x0: u32, y0: u32, x1: u32, y1: u32, f: &dyn Fn(&[u8; 3]) -> bool| {
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| f(&city_png.get_pixel(x, y).0))
            .count()
    };
    let banner_red = |p: &[u8; 3]| (130..=160).contains(&p[0]) && p[1] < 35 && p[2] < 35;
    assert!(
        count(640, 0, 960, 270, &banner_red) > 3000,
        "no banner on the water tile"
    );
    assert!(
        count(0, 0, 640, 540, &banner_red) < 300,
        "a banner on the traffic map"
    );
    assert!(
        count(640, 270, 960, 540, &banner_red) < 300,
        "a banner on the incidents"
    );
    let alarm = |p: &[u8; 3]| p[0] > 230 && (60..100).contains(&p[1]) && (60..100).contains(&p[2]);
    assert!(
        count(640, 270, 700, 540, &alarm) > 50,
        "no extreme incident's bar"
    );
    assert!(city["city_pixel_share"].as_f64().unwrap() > 0.15, "{city}");
}

#[test]
fn a_broken_wall_layout_names_the_file_the_screen_and_the_tile() {
    let dir = scratch_dir("wall-layout");
    let cases = [
        (
            LAYOUT.replacen("kind = \"kpi\"", "kind = \"kpis\"", 1),
            vec!["screen \"operations\"", "tile 3", "unknown kind \"kpis\""],
        ),
        (
            LAYOUT.replacen("at = [2, 1]", "at = [1, 1]", 1),
            vec![
                "screen \"city\"",
                "tile 3 (incidents at [1, 1])",
                "overlaps tile 1",
            ],
        ),
        (
            LAYOUT.replacen("bookmark = \"Centre\"", "bookmark = \"Center\"", 1),
            vec!["screen \"city\"", "tile 2", "unknown bookmark \"Center\""],
        ),
        (
            LAYOUT.replacen(
                "kind = \"feeds\"\nat = [1, 1]",
                "kind = \"feeds\"\nat = [3, 1]",
                1,
            ),
            vec!["screen \"operations\"", "tile 4", "off the grid"],
        ),
    ];
    for (text, wanted) in cases {
        let path = dir.join("wall.toml");
        std::fs::write(&path, text).unwrap();
        let out = zhongshu()
            .args(["wall", "--layout"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(path.to_str().unwrap()), "{stderr}");
        for w in wanted {
            assert!(stderr.contains(w), "{stderr}\n(wanted {w})");
        }
    }
    // Without a display: one line saying so, not a panic.
    let out = zhongshu()
        .arg("wall")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs a display") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = zhongshu()
        .args(["wall", "--layout", "/nowhere/wall.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nowhere/wall.toml"));
}

#[test]
fn a_briefing_writes_a_slide_each_and_a_pdf_of_them() {
    let dir = scratch_dir("briefing");
    let db = dir.join("events.db");
    prepared_log(&db);
    let history = recorded_air(&dir);
    let _timed = crate::timed();
    let mut cmd = crate::zhongshu_with_display();
    let out = cmd
        .current_dir(&dir)
        .args(["briefing", "--db"])
        .arg(&db)
        .arg("--history")
        .arg(&history)
        .args(["--out", "deck", "--size", "960x540"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "briefing failed: {stderr}");
    let report: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report: {stderr}"));
    // The overview, incidents by sub-brain, the three incidents of the shift in the
    // order they were raised (fewer than five: all of them), departments, sources.
    assert_eq!(
        report["incidents"],
        serde_json::json!(["INC-000001", "INC-000002", "INC-000003"])
    );
    let slides = report["slides"].as_array().unwrap();
    assert_eq!(slides.len(), 7, "{report}");
    // The overview charts the vital signs the history holds over the shift (the 6
    // hours recorded of the 8: 13 of the 17 instants) and the open incidents at 49 instants; the incidents slide
    // counts them by sub-brain and severity; the departments slide has the two that
    // had orders.
    let charts = &report["charts"];
    assert_eq!(charts[0]["AQI 空气质量"], 13, "{charts}");
    assert_eq!(charts[0]["Open incidents 未结事件"], 49, "{charts}");
    assert!(charts[0].get("Congestion % 拥堵").is_none(), "{charts}");
    assert_eq!(charts[1]["By sub-brain 按领域"], 1, "{charts}");
    assert_eq!(charts[1]["By severity 按等级"], 4, "{charts}");
    assert_eq!(charts[5]["On time 按时率"], 2, "{charts}");
    assert_eq!(charts[6], serde_json::json!({}), "{charts}");
    assert_eq!(report["pages"], 7);
    let mut previous: Option<image::RgbImage> = None;
    for (i, slide) in slides.iter().enumerate() {
        let path = dir.join(slide.as_str().unwrap());
        assert!(
            path.ends_with(format!("slide-{:02}.png", i + 1)),
            "{path:?}"
        );
        let image = image::open(&path).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (960, 540));
        // Each slide carries its own text (white type), never a blank or half-drawn
        // frame between two slides.
        let white = image
            .pixels()
            .filter(|p| p.0.iter().all(|c| *c > 200))
            .count();
        assert!(white > 300, "slide {} has no text: {white} px", i + 1);
        // Each picture is its own slide's, never the one before it again (the next
        // slide is drawn while a picture is written).
        if let Some(before) = &previous {
            assert_ne!(before, &image, "slide {} repeats slide {}", i + 1, i);
        }
        previous = Some(image);
    }
    let pdf = std::fs::read(dir.join("deck/briefing.pdf")).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(zhongshu::briefing::pdf_page_count(&pdf), Some(7));
    // The extreme incident's slide: the map flown to it, its pin ringed in red.
    let fire = image::open(dir.join("deck/slide-04.png"))
        .unwrap()
        .to_rgb8();
    let red = (0..540)
        .flat_map(|y| (0..640).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = fire.get_pixel(x, y).0;
            p[0] > 230 && (60..100).contains(&p[1]) && (60..100).contains(&p[2])
        })
        .count();
    assert!(red > 100, "no pin on the incident's slide: {red} px");

    // Wrong inputs: said before any window.
    for (args, wanted) in [
        (
            vec!["briefing", "--out", "x", "--db", "/nowhere/events.db"],
            "no event log",
        ),
        (
            vec![
                "briefing",
                "--out",
                "x",
                "--since",
                "2026-11-30T10:00:00Z",
                "--until",
                "2026-11-30T09:00:00Z",
            ],
            "--since is after --until",
        ),
        (
            vec!["briefing", "--out", "x", "--until=-9223372036854775808"],
            "--until",
        ),
        (
            vec!["briefing", "--out", "x", "--size", "320x200"],
            "at least 640x360",
        ),
    ] {
        let out = zhongshu().current_dir(&dir).args(&args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(wanted) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn a_presented_briefing_shows_the_slide_to_the_room_and_the_notes_to_the_presenter() {
    let dir = scratch_dir("presented");
    let db = dir.join("events.db");
    prepared_log(&db);
    let _timed = crate::timed();
    let mut cmd = crate::zhongshu_with_display();
    let out = cmd
        .current_dir(&dir)
        .args(["briefing", "--db"])
        .arg(&db)
        .args([
            "--presenter",
            "--screenshot-dir",
            "shots",
            "--size",
            "960x540",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "briefing failed: {stderr}");
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(reports.len(), 2, "{reports:?}\n{stderr}");
    // The room sees the first slide: the city and the overview, without the notes.
    let slide = &reports[0];
    assert_eq!(slide["tiles"][0]["kind"], "map", "{slide}");
    assert_eq!(slide["tiles"][1]["kind"], "slide", "{slide}");
    let lines = slide["tiles"][1]["shows"].to_string();
    assert!(lines.contains("3 incidents raised"), "{lines}");
    // The presenter sees where the talk is, the notes and the next slide.
    let presenter = &reports[1]["tiles"][0];
    assert_eq!(presenter["kind"], "presenter", "{presenter}");
    assert_eq!(presenter["shows"]["slide"], 1);
    assert_eq!(presenter["shows"]["slides"], 7);
    assert!(
        !presenter["shows"]["notes"].as_array().unwrap().is_empty(),
        "{presenter}"
    );
    assert!(
        presenter["shows"]["next"]
            .as_str()
            .is_some_and(|t| t.contains("Incidents")),
        "{presenter}"
    );
    for file in ["screen-1-slide-1.png", "screen-2-presenter.png"] {
        let image = image::open(dir.join("shots").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .to_rgb8();
        assert_eq!((image.width(), image.height()), (960, 540));
        let white = image
            .pixels()
            .filter(|p| p.0.iter().all(|c| *c > 200))
            .count();
        assert!(white > 300, "{file} has no text: {white} px");
    }
    // `zhongshu --briefing` is the same briefing (here: its log is missing).
    let out = zhongshu()
        .current_dir(&dir)
        .args(["--briefing", "--db", "/nowhere/events.db"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no event log"), "{stderr}");
    // A presented briefing writes no deck: --out and --presenter do not go together.
    let out = zhongshu()
        .args(["briefing", "--out", "x", "--presenter"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An X server whose monitors can be plugged in and out: Xorg with the dummy video
/// driver, whose outputs `DUMMY0`…`DUMMY15` RandR turns on and off as a real panel's
/// connector would. Stopped when dropped.
struct PluggableX {
    display: String,
    server: std::process::Child,
}

impl PluggableX {
    /// Starts one on a free display, `DUMMY0` on at `mode`.
    fn start(dir: &std::path::Path, mode: &str) -> PluggableX {
        let conf = dir.join("xorg-dummy.conf");
        std::fs::write(
            &conf,
            "Section \"Device\"\n  Identifier \"d\"\n  Driver \"dummy\"\n  VideoRam 64000\nEndSection\n\
             Section \"Monitor\"\n  Identifier \"m\"\n  HorizSync 5.0-1000.0\n  VertRefresh 5.0-200.0\nEndSection\n\
             Section \"Screen\"\n  Identifier \"s\"\n  Device \"d\"\n  Monitor \"m\"\n  DefaultDepth 24\n\
             \x20 SubSection \"Display\"\n    Depth 24\n    Virtual 3840 1080\n  EndSubSection\nEndSection\n",
        )
        .unwrap();
        let empty = dir.join("xorg.conf.d");
        std::fs::create_dir_all(&empty).unwrap();
        let n = (90..400)
            .find(|n| {
                !std::path::Path::new(&format!("/tmp/.X{n}-lock")).exists()
                    && !std::path::Path::new(&format!("/tmp/.X11-unix/X{n}")).exists()
            })
            .expect("a free X display");
        let display = format!(":{n}");
        let server = std::process::Command::new("Xorg")
            .arg(&display)
            .arg("-config")
            .arg(&conf)
            .arg("-configdir")
            .arg(&empty)
            .args(["-noreset", "-nolisten", "tcp", "-logfile"])
            .arg(dir.join("xorg.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("Xorg (xserver-xorg-core and xserver-xorg-video-dummy) runs");
        let x = PluggableX { display, server };
        let start = std::time::Instant::now();
        while !x.xrandr(&["--listmonitors"]) {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "Xorg with the dummy driver did not start: see {}",
                dir.join("xorg.log").display()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert!(x.xrandr(&["--output", "DUMMY0", "--mode", mode]));
        x
    }

    fn xrandr(&self, args: &[&str]) -> bool {
        std::process::Command::new("xrandr")
            .arg("-display")
            .arg(&self.display)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Plugs `output` in at `mode` right of `DUMMY0`.
    fn plug(&self, output: &str, mode: &str) {
        self.xrandr(&["--addmode", output, mode]);
        assert!(self.xrandr(&["--output", output, "--mode", mode, "--right-of", "DUMMY0"]));
    }

    fn unplug(&self, output: &str) {
        assert!(self.xrandr(&["--output", output, "--off"]));
    }

    /// The top-level window whose title ends with `title_end`: its position on the
    /// X screen and its size, as the X server has it.
    fn window(&self, title_end: &str) -> Option<(i32, i32, u32, u32)> {
        let out = std::process::Command::new("xwininfo")
            .args(["-display", &self.display, "-root", "-children"])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("xwininfo (x11-utils) runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Zhongshu wall") && l.contains(&format!("{title_end}\"")))?;
        // ... "title": ("class" "Class")  1280x720+0+0  +0+0
        let mut words = line.split_whitespace().rev();
        let absolute = words.next()?;
        let geometry = words.next()?;
        let (size, _) = geometry.split_once(['+', '-'])?;
        let (w, h) = size.split_once('x')?;
        let absolute = absolute.strip_prefix('+')?;
        let (x, y) = absolute.split_once('+')?;
        Some((
            x.parse().ok()?,
            y.parse().ok()?,
            w.parse().ok()?,
            h.parse().ok()?,
        ))
    }
}

/// A wall process, killed when dropped.
struct WallRun(std::process::Child);

impl Drop for WallRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl WallRun {
    /// Fails the test, with the wall's log, when the wall has stopped.
    fn assert_running(&mut self, dir: &std::path::Path) {
        assert!(
            self.0.try_wait().unwrap().is_none(),
            "the wall stopped: {}",
            std::fs::read_to_string(dir.join("wall.log")).unwrap_or_default()
        );
    }
}

/// Fails the test when the wall's log has an error or a panic in it.
fn assert_nothing_wrong(dir: &std::path::Path) {
    let said = std::fs::read_to_string(dir.join("wall.log")).unwrap_or_default();
    assert!(
        !said.contains("ERROR") && !said.contains("panicked"),
        "{said}"
    );
}

impl PluggableX {
    /// `zhongshu wall ARGS --db DB` on this server, run in `dir`, its log in
    /// `dir/wall.log`.
    fn wall(&self, dir: &std::path::Path, args: &[&str], db: &std::path::Path) -> WallRun {
        let log = std::fs::File::create(dir.join("wall.log")).unwrap();
        WallRun(
            zhongshu()
                .current_dir(dir)
                .env("DISPLAY", &self.display)
                .env_remove("WAYLAND_DISPLAY")
                .env(
                    "WGPU_BACKEND",
                    std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "vulkan".into()),
                )
                .arg("wall")
                .args(args)
                .arg("--db")
                .arg(db)
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// The whole X screen as the monitors show it (`xwd -root`), as RGB.
    fn picture(&self) -> image::RgbImage {
        let out = std::process::Command::new("xwd")
            .args(["-display", &self.display, "-root", "-silent"])
            .output()
            .expect("xwd (x11-apps) runs");
        assert!(out.status.success(), "xwd failed");
        let b = out.stdout;
        let word = |i: usize| u32::from_be_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        // XWD: a header of 25 big-endian words (its size first), the window's name,
        // then the colour map (12 bytes an entry) and the pixels, 32 bits each here.
        let (header, width, height) = (word(0) as usize, word(4), word(5));
        let (bits, line, colours) = (word(11), word(12) as usize, word(19) as usize);
        assert_eq!(bits, 32, "a 24-bit X screen stores 32 bits a pixel");
        let little = word(7) == 0; // byte_order: LSBFirst
        let pixels = &b[header + colours * 12..];
        image::RgbImage::from_fn(width, height, |x, y| {
            let i = y as usize * line + x as usize * 4;
            let p = &pixels[i..i + 4];
            if little {
                image::Rgb([p[2], p[1], p[0]])
            } else {
                image::Rgb([p[1], p[2], p[3]])
            }
        })
    }
}

/// Pixels of an extreme incident's red bar in the rectangle.
fn alarm_pixels(img: &image::RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> usize {
    (y0..y1.min(img.height()))
        .flat_map(|y| (x0..x1.min(img.width())).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let p = img.get_pixel(x, y).0;
            p[0] > 230 && (60..100).contains(&p[1]) && (60..100).contains(&p[2])
        })
        .count()
}

impl Drop for PluggableX {
    /// Asks the server to stop (so that it removes its lock file and socket), and
    /// kills it if it has not within 5 s.
    fn drop(&mut self) {
        // SAFETY: a signal to our own child, whose pid is not reused before we wait.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(5) {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Waits up to `secs` for `ok`, saying `what` and the last thing seen when it fails.
fn wait_for<T: std::fmt::Debug>(
    secs: u64,
    what: &str,
    mut look: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let seen = look();
        if ok(&seen) {
            return seen;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "{what}: last seen {seen:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn a_wall_screen_survives_its_monitor_unplugged_and_plugged_back() {
    let dir = scratch_dir("wall-hotplug");
    let db = dir.join("events.db");
    prepared_log(&db);
    std::fs::write(
        dir.join("wall.toml"),
        r#"
[[screen]]
name = "left"
monitor = 0
columns = 1
rows = 1

[[screen.tile]]
kind = "kpi"
at = [0, 0]

[[screen]]
name = "right"
monitor = "DUMMY1"
columns = 1
rows = 1

[[screen.tile]]
kind = "incidents"
at = [0, 0]
"#,
    )
    .unwrap();
    let _timed = crate::timed();
    let x = PluggableX::start(&dir, "1280x720");
    x.plug("DUMMY1", "1280x720");
    let mut wall = x.wall(&dir, &["--layout", "wall.toml"], &db);
    let said = || std::fs::read_to_string(dir.join("wall.log")).unwrap_or_default();

    // Each screen fills its own monitor.
    wait_for(
        90,
        "the screens on their monitors",
        || (x.window("left"), x.window("right")),
        |s| *s == (Some((0, 0, 1280, 720)), Some((1280, 0, 1280, 720))),
    );

    // The right-hand monitor is unplugged: its screen goes on in a window on the one
    // that is left, where it can be seen; the left screen stays where it was.
    x.unplug("DUMMY1");
    let (left, right) = wait_for(
        30,
        "the right screen in a window on DUMMY0",
        || (x.window("left"), x.window("right")),
        |(_, r)| {
            r.is_some_and(|(x0, y0, w, h)| {
                x0 >= 0
                    && y0 >= 0
                    && x0 + (w as i32) <= 1280
                    && y0 + (h as i32) <= 720 + 64
                    && x0 < 1280 - 100
            })
        },
    );
    assert_eq!(left, Some((0, 0, 1280, 720)));
    let (rx, ry, rw, rh) = right.unwrap();
    assert!(said().contains("went away"), "{}", said());
    // Its window shows its board (the extreme incident's red bar) over the left
    // screen, a frame or two after it moved.
    let (rx, ry) = (rx as u32, ry as u32);
    wait_for(
        20,
        "the right screen's board in its window",
        || alarm_pixels(&x.picture(), rx, ry, rx + rw, ry + rh),
        |n| *n > 10,
    );
    wall.assert_running(&dir);

    // Plugged back: the screen is fullscreen on it again, without a restart.
    x.plug("DUMMY1", "1280x720");
    wait_for(
        30,
        "the right screen back on DUMMY1",
        || (x.window("left"), x.window("right")),
        |s| *s == (Some((0, 0, 1280, 720)), Some((1280, 0, 1280, 720))),
    );
    assert!(said().contains("its monitor is back"), "{}", said());
    // Drawn there again, and still drawing: its clock (at its foot, right) moves on.
    wait_for(
        20,
        "the right screen's board on DUMMY1",
        || alarm_pixels(&x.picture(), 1280, 0, 2560, 720),
        |n| *n > 10,
    );
    let clock =
        |img: &image::RgbImage| image::imageops::crop_imm(img, 2440, 696, 120, 24).to_image();
    let first = clock(&x.picture());
    wait_for(
        10,
        "the right screen's clock moving on",
        || clock(&x.picture()) != first,
        |moved| *moved,
    );

    // The monitor given another mode: the screen takes its new size.
    x.xrandr(&["--addmode", "DUMMY1", "1024x768"]);
    assert!(x.xrandr(&["--output", "DUMMY1", "--mode", "1024x768"]));
    wait_for(
        30,
        "the right screen at DUMMY1's new size",
        || x.window("right"),
        |r| *r == Some((1280, 0, 1024, 768)),
    );

    // The layout edited while a window changes size: the right screen unplugged, then
    // given a place and size of its own; then its monitor again.
    x.unplug("DUMMY1");
    wait_for(
        30,
        "the right screen in a window again",
        || x.window("right"),
        |r| r.is_some_and(|(x0, _, w, _)| x0 < 1280 && w == 640),
    );
    let layout = std::fs::read_to_string(dir.join("wall.toml")).unwrap();
    let area = layout.replace(
        "monitor = \"DUMMY1\"",
        "position = [100, 50]\nsize = [800, 400]",
    );
    std::fs::write(dir.join("wall.toml"), &area).unwrap();
    wait_for(
        30,
        "the right screen at its own place and size",
        || x.window("right"),
        |r| *r == Some((100, 50, 800, 400)),
    );
    std::fs::write(dir.join("wall.toml"), &layout).unwrap();
    x.plug("DUMMY1", "1280x720");
    wait_for(
        30,
        "the right screen back on DUMMY1 after the edits",
        || x.window("right"),
        |r| *r == Some((1280, 0, 1280, 720)),
    );

    // The first monitor unplugged (the one the windows were made on): no window
    // closes; DUMMY1 is now the first monitor, so the left screen (monitor 0) goes
    // fullscreen on it, wherever the X server has put it, beside the right screen.
    x.unplug("DUMMY0");
    wait_for(
        30,
        "the left screen on DUMMY1, now the first monitor",
        || (x.window("left"), x.window("right")),
        |(l, r)| matches!(r, Some((_, 0, 1280, 720))) && l == r,
    );
    assert!(
        said().contains("\"left\": now on monitor \"DUMMY1\""),
        "{}",
        said()
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    wall.assert_running(&dir);
    // Nothing went wrong on the way (no rendering error, no panic).
    assert_nothing_wrong(&dir);
}

#[test]
fn the_default_wall_gives_a_monitor_plugged_in_later_its_screen() {
    let dir = scratch_dir("wall-default-plug");
    let db = dir.join("events.db");
    prepared_log(&db);
    let _timed = crate::timed();
    let x = PluggableX::start(&dir, "1280x720");
    let mut wall = x.wall(&dir, &[], &db);
    let said = || std::fs::read_to_string(dir.join("wall.log")).unwrap_or_default();

    // One monitor: one screen on it, and no other.
    wait_for(
        90,
        "the main screen on the one monitor",
        || x.window("main"),
        |m| *m == Some((0, 0, 1280, 720)),
    );
    assert_eq!(x.window("operations"), None);

    // A second monitor plugged in: the default layout's second screen comes up on it,
    // and the first stays where it was.
    x.plug("DUMMY1", "1280x720");
    wait_for(
        30,
        "the operations screen on the new monitor",
        || (x.window("main"), x.window("operations")),
        |s| *s == (Some((0, 0, 1280, 720)), Some((1280, 0, 1280, 720))),
    );
    assert!(said().contains("2 screens now"), "{}", said());
    // It draws its boards (the orders board's overdue red, the feeds).
    wait_for(
        20,
        "the operations screen drawn",
        || alarm_pixels(&x.picture(), 1280, 0, 2560, 720),
        |n| *n > 10,
    );

    // A clone of the first monitor (the same picture): no screen of its own, and the
    // screens counted by index stay where they are.
    x.xrandr(&["--addmode", "DUMMY2", "1280x720"]);
    assert!(x.xrandr(&[
        "--output",
        "DUMMY2",
        "--mode",
        "1280x720",
        "--same-as",
        "DUMMY0"
    ]));
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(
        (x.window("main"), x.window("operations"), x.window("tour 1")),
        (Some((0, 0, 1280, 720)), Some((1280, 0, 1280, 720)), None),
        "{}",
        said()
    );
    assert!(!said().contains("3 screens now"), "{}", said());
    // The clone turned off again: nothing changes.
    x.unplug("DUMMY2");

    // The second monitor unplugged: its screen goes on in a window for a few
    // seconds, then the layout is the one monitor's again.
    x.unplug("DUMMY1");
    wait_for(
        40,
        "the operations screen gone with its monitor",
        || (x.window("main"), x.window("operations")),
        |s| *s == (Some((0, 0, 1280, 720)), None),
    );
    assert!(
        said().contains("a monitor went away: 1 screen now"),
        "{}",
        said()
    );

    // A monitor plugged in left of the first: the main screen (monitor 0) goes onto
    // it, and says so; the new second screen onto the one it was on.
    assert!(x.xrandr(&[
        "--output",
        "DUMMY1",
        "--mode",
        "1280x720",
        "--left-of",
        "DUMMY0"
    ]));
    wait_for(
        30,
        "main on the new leftmost monitor, operations beside it",
        || (x.window("main"), x.window("operations")),
        |s| *s == (Some((0, 0, 1280, 720)), Some((1280, 0, 1280, 720))),
    );
    wait_for(10, "the move said", said, |s| {
        s.contains("\"main\": now on monitor \"DUMMY1\"")
    });

    // A third monitor, then the middle one unplugged: its screen waits in a window,
    // the screen on the right stays on its monitor; then the layout is made for the
    // two monitors left.
    x.plug("DUMMY3", "1280x720");
    wait_for(
        30,
        "three screens on three monitors",
        || (x.window("main"), x.window("operations"), x.window("tour 1")),
        |s| {
            *s == (
                Some((0, 0, 1280, 720)),
                Some((1280, 0, 1280, 720)),
                Some((2560, 0, 1280, 720)),
            )
        },
    );
    x.unplug("DUMMY0");
    wait_for(
        10,
        "the middle screen in a window",
        || x.window("operations"),
        |o| o.is_some_and(|(_, _, w, _)| w == 640),
    );
    assert_eq!(
        (x.window("main"), x.window("tour 1")),
        (Some((0, 0, 1280, 720)), Some((2560, 0, 1280, 720))),
        "{}",
        said()
    );
    wait_for(
        30,
        "two screens on the two monitors left",
        || (x.window("main"), x.window("operations"), x.window("tour 1")),
        |s| *s == (Some((0, 0, 1280, 720)), Some((2560, 0, 1280, 720)), None),
    );
    wall.assert_running(&dir);
    assert_nothing_wrong(&dir);
}
