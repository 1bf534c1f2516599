//! Live feeds end to end over real HTTP on 127.0.0.1: a test server speaks NGSI-LD
//! (paged, with ETags) and GeoJSON, and has a feed that errors, one that hangs and one
//! that returns garbage. `zhongshu feeds-check` must keep the good feeds updating and
//! say why the bad ones fail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{scratch_dir, zhongshu};

const VEHICLES: usize = 250;

fn vehicle(i: usize, poll: u64) -> serde_json::Value {
    serde_json::json!({
        "id": format!("urn:ngsi-ld:Vehicle:bus-{i}"),
        "type": "Vehicle",
        "vehicleType": {"type": "Property", "value": "bus"},
        "speed": {"type": "Property", "value": 20.0 + (i % 30) as f64, "observedAt": format!("2026-11-29T01:{:02}:{:02}Z", poll / 60 % 60, poll % 60)},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [24.93 + (i as f64) * 1e-4, 60.17]}}
    })
}

fn ngsi_page(query: &HashMap<String, String>, poll: u64) -> String {
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let offset: usize = query
        .get("offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Two broken items sit among the vehicles; the rest must still land.
    let mut all: Vec<serde_json::Value> = vec![
        serde_json::json!({"type": "Vehicle", "speed": 3}),
        serde_json::json!({"id": "urn:ngsi-ld:Vehicle:lost", "type": "Vehicle",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [24.9, 95.0]}}}),
    ];
    all.extend((0..VEHICLES).map(|i| vehicle(i, poll)));
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    serde_json::Value::Array(page).to_string()
}

fn stations_geojson() -> String {
    stations_with_offset(0)
}

/// The same stations as another department reports them, `aqi_offset` higher.
fn stations_with_offset(aqi_offset: i32) -> String {
    let features: Vec<_> = (0..20)
        .map(|i| {
            serde_json::json!({"type": "Feature", "id": format!("station-{i}"),
                "properties": {"type": "AirQualityObserved", "airQualityIndex": 40 + i + aqi_offset, "pm25": 12.5},
                "geometry": {"type": "Point", "coordinates": [24.94 + i as f64 * 1e-3, 60.168]}})
        })
        .collect();
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

/// Serves until the process ends; returns its base URL.
fn start_server() -> String {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let polls = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let polls = polls.clone();
            std::thread::spawn(move || handle(request, &polls));
        }
    });
    base
}

fn handle(request: tiny_http::Request, polls: &AtomicU64) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let query: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let json = tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap();
    let response = match path {
        "/ngsi-ld/v1/entities"
            if !request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Link") && h.value.as_str().contains("json-ld#context")) =>
        {
            // A broker cannot expand "Vehicle" without the client's @context.
            tiny_http::Response::from_string("{\"title\":\"missing @context Link header\"}")
                .with_status_code(400)
        }
        "/ngsi-ld/v1/entities" => {
            let poll = if query.get("offset").map(String::as_str) == Some("0") {
                polls.fetch_add(1, Ordering::Relaxed) + 1
            } else {
                polls.load(Ordering::Relaxed)
            };
            let link = tiny_http::Header::from_bytes(
                "Link",
                "<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
            )
            .unwrap();
            tiny_http::Response::from_string(ngsi_page(&query, poll))
                .with_header(json)
                .with_header(link)
        }
        "/stations.geojson" => {
            let etag = "\"stations-v1\"";
            let unchanged = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("If-None-Match") && h.value.as_str() == etag);
            if unchanged {
                tiny_http::Response::from_string("").with_status_code(304)
            } else {
                tiny_http::Response::from_string(stations_geojson())
                    .with_header(json)
                    .with_header(tiny_http::Header::from_bytes("ETag", etag).unwrap())
            }
        }
        "/bad-air.geojson" => {
            // Values that cannot be true and a station in Paris, next to a good one.
            let body = serde_json::json!({"type": "FeatureCollection", "features": [
                {"type": "Feature", "id": "good", "properties": {"type": "AirQualityObserved", "airQualityIndex": 42},
                 "geometry": {"type": "Point", "coordinates": [24.94, 60.17]}},
                {"type": "Feature", "id": "hot", "properties": {"type": "AirQualityObserved", "airQualityIndex": 900},
                 "geometry": {"type": "Point", "coordinates": [24.95, 60.17]}},
                {"type": "Feature", "id": "paris", "properties": {"type": "AirQualityObserved", "airQualityIndex": 30},
                 "geometry": {"type": "Point", "coordinates": [2.35, 48.85]}},
                {"type": "Feature", "id": "blank", "properties": {"type": "AirQualityObserved"},
                 "geometry": {"type": "Point", "coordinates": [24.94, 60.171]}}
            ]});
            tiny_http::Response::from_string(body.to_string()).with_header(json)
        }
        "/stations-b.geojson" => {
            tiny_http::Response::from_string(stations_with_offset(60)).with_header(json)
        }
        "/huge.geojson" => {
            // A flood: 300 kB a poll where the feed is allowed 100 kB.
            let filler = "x".repeat(300_000);
            tiny_http::Response::from_string(format!(
                "{{\"type\":\"FeatureCollection\",\"note\":\"{filler}\",\"features\":[]}}"
            ))
            .with_header(json)
        }
        "/once.geojson" => {
            // Answers once, then goes silent: the feed turns stale.
            static ANSWERED: AtomicU64 = AtomicU64::new(0);
            if ANSWERED.fetch_add(1, Ordering::Relaxed) == 0 {
                let water =
                    stations_with_offset(0).replace("AirQualityObserved", "WaterQualityObserved");
                tiny_http::Response::from_string(water).with_header(json)
            } else {
                tiny_http::Response::from_string("").with_status_code(503)
            }
        }
        "/ambulances" => {
            // Three ambulances on the first poll, then one: two have left the feed.
            static SERVED: AtomicU64 = AtomicU64::new(0);
            let n = if SERVED.fetch_add(1, Ordering::Relaxed) == 0 {
                3
            } else {
                1
            };
            let units: Vec<_> = (0..n)
                .map(|i| {
                    serde_json::json!({"id": format!("urn:ngsi-ld:Vehicle:amb-{i}"), "type": "Vehicle",
                        "vehicleType": {"type": "Property", "value": "ambulance"},
                        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [24.94 + i as f64 * 1e-3, 60.17]}}})
                })
                .collect();
            tiny_http::Response::from_string(serde_json::Value::Array(units).to_string())
                .with_header(json)
        }
        "/error" => tiny_http::Response::from_string("{\"error\":\"boom\"}").with_status_code(500),
        "/hang" => {
            std::thread::sleep(Duration::from_secs(20));
            tiny_http::Response::from_string("[]")
        }
        "/garbage" => {
            tiny_http::Response::from_string("<html>not json at all</html>").with_header(json)
        }
        _ => tiny_http::Response::from_string("not found").with_status_code(404),
    };
    let _ = request.respond(response);
}

/// Writes `feeds_toml` to a scratch feeds file and runs `zhongshu feeds-check` on it
/// for `seconds`.
fn feeds_check(scratch: &str, feeds_toml: &str, seconds: &str) -> std::process::Output {
    let feeds = scratch_dir(scratch).join("feeds.toml");
    std::fs::write(&feeds, feeds_toml).unwrap();
    let _timed = crate::timed();
    zhongshu()
        .args(["feeds-check", "--feeds"])
        .arg(&feeds)
        .args(["--for", seconds])
        .output()
        .unwrap()
}

fn feed_lines(stdout: &str) -> HashMap<String, serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["feed"].as_str().unwrap_or("").to_string(), v))
        .collect()
}

#[test]
fn good_feeds_keep_updating_while_bad_ones_report_why() {
    let base = start_server();
    let out = feeds_check(
        "feeds-check",
        &format!(
            r#"
[[feed]]
name = "buses"
kind = "ngsi-ld"
url = "{base}/ngsi-ld/v1/entities?type=Vehicle"
domain = "traffic"
owner = "Transport Bureau"
interval_s = 0.5
page_size = 100

[[feed]]
name = "air-stations"
kind = "geojson"
url = "{base}/stations.geojson"
domain = "ecology"
interval_s = 0.5
authoritative_for = ["AirQualityObserved"]

[[feed]]
name = "district-air"
kind = "geojson"
url = "{base}/stations-b.geojson"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "flood"
kind = "geojson"
url = "{base}/huge.geojson"
domain = "urban"
interval_s = 0.2
max_payload_bytes = 100000

[[feed]]
name = "goes-quiet"
kind = "geojson"
url = "{base}/once.geojson"
domain = "health"
interval_s = 0.3

[[feed]]
name = "bad-air"
kind = "geojson"
url = "{base}/bad-air.geojson"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "broken"
kind = "geojson"
url = "{base}/error"
domain = "urban"
interval_s = 0.5

[[feed]]
name = "hanging"
kind = "ngsi-ld"
url = "{base}/hang"
domain = "health"
interval_s = 0.5
timeout_s = 1

[[feed]]
name = "garbage"
kind = "geojson"
url = "{base}/garbage"
domain = "utilities"
interval_s = 0.5
"#
        ),
        // Long enough for the flood's second oversized poll (after a 0.4 s backoff)
        // on a machine busy with the other tests: a debug build's HTTP clients take
        // seconds to start there (6 s once saw the flood polled only once).
        "12",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = feed_lines(&stdout);
    assert_eq!(lines.len(), 9, "one JSON line per feed: {stdout}\n{stderr}");
    // Broken feeds make the check fail for scripts, after reporting every feed.
    assert!(!out.status.success());

    let buses = &lines["buses"];
    assert_eq!(buses["entities"], VEHICLES, "{buses}");
    assert_eq!(
        buses["rejected"].as_u64().unwrap() % 2,
        0,
        "two bad items per poll: {buses}"
    );
    assert!(buses["rejected"].as_u64().unwrap() >= 2);
    assert!(
        buses["reasons"]["missing_id"].as_u64().unwrap() >= 1,
        "{buses}"
    );
    assert!(
        buses["reasons"]["bad_coordinates"].as_u64().unwrap() >= 1,
        "{buses}"
    );
    // Polled every half second for four seconds, paged by 100: still polling at the end
    // (at least three polls even on a busy two-core machine running other tests).
    assert!(buses["polls_ok"].as_u64().unwrap() >= 3, "{buses}");
    assert!(
        buses["updates"].as_u64().unwrap() >= 2 * VEHICLES as u64,
        "{buses}"
    );
    assert!(buses["last_ok"].is_string());

    let air = &lines["air-stations"];
    assert_eq!(air["entities"], 20);
    // The ETag makes later polls 304s: nothing re-applied, but the feed is healthy.
    assert_eq!(air["updates"], 20, "{air}");
    assert!(air["polls_ok"].as_u64().unwrap() >= 3, "{air}");

    // Quality is reported per feed: a clean feed scores 1, a bad one says what is wrong.
    assert_eq!(air["validity"], 1.0, "{air}");
    // Its stations carry no time and every later poll is a 304: nothing new arrived
    // after the first poll, so by the end (three polls or more later) the data has
    // aged (a 304 is no fresh data) ...
    let score = |v: &serde_json::Value| v["freshness"]["score"].as_f64().unwrap();
    assert_ne!(air["freshness"]["status"], "fresh", "{air}");
    // ... while the same stations served in full every poll stay (nearly) fresh.
    let district = &lines["district-air"];
    assert!(score(district) > 0.8, "{district}");
    assert!(score(air) < score(district), "{air} {district}");
    let bad = &lines["bad-air"];
    assert_eq!(
        bad["entities"], 4,
        "bad values are reported, not dropped: {bad}"
    );
    assert_eq!(bad["validity"], 0.5, "{bad}");
    assert_eq!(bad["completeness"], 0.75, "{bad}");
    assert!(
        bad["quality_issues"]["out_of_range"].as_u64().unwrap() >= 1,
        "{bad}"
    );
    assert!(
        bad["quality_issues"]["outside_city"].as_u64().unwrap() >= 1,
        "{bad}"
    );
    assert!(
        bad["quality_issues"]["missing_required"].as_u64().unwrap() >= 1,
        "{bad}"
    );

    // One data, one source: the bureau's stations win; the district's readings, 60
    // higher, are listed as conflicts with both values.
    let district = &lines["district-air"];
    assert_eq!(district["conflicts"], 20, "{district}");
    let example = &district["conflict_examples"][0];
    assert_eq!(example["winner"]["feed"], "air-stations");
    assert_eq!(example["other"]["feed"], "district-air");
    assert_eq!(
        example["other"]["value"].as_f64().unwrap() - example["winner"]["value"].as_f64().unwrap(),
        60.0
    );

    // A feed that floods oversized payloads is quarantined with the reason.
    let flood = &lines["flood"];
    assert!(
        flood["quarantined"]
            .as_str()
            .is_some_and(|q| q.contains("oversized")),
        "{flood}"
    );
    assert!(
        flood["poll_errors"]["too_large"].as_u64().unwrap() >= 2,
        "{flood}"
    );

    // A feed that answered once and then went quiet is no longer fresh.
    let quiet = &lines["goes-quiet"];
    assert_eq!(quiet["entities"], 20, "{quiet}");
    assert_ne!(quiet["freshness"]["status"], "fresh", "{quiet}");
    assert!(
        quiet["freshness"]["score"].as_f64().unwrap() < 1.0,
        "{quiet}"
    );

    let broken = &lines["broken"];
    assert!(broken["last_ok"].is_null());
    assert!(
        broken["poll_errors"]["http_status"].as_u64().unwrap() >= 1,
        "{broken}"
    );
    assert!(
        broken["last_error"].as_str().unwrap().contains("500"),
        "{broken}"
    );

    let hanging = &lines["hanging"];
    assert!(hanging["last_ok"].is_null());
    assert!(
        hanging["poll_errors"]["timeout"].as_u64().unwrap() >= 1,
        "{hanging}"
    );

    let garbage = &lines["garbage"];
    assert!(
        garbage["poll_errors"]["not_json"].as_u64().unwrap() >= 1,
        "{garbage}"
    );
    assert_eq!(garbage["entities"], 0);
}

#[test]
fn entities_that_leave_a_feed_leave_the_live_state() {
    let base = start_server();
    let out = feeds_check(
        "feeds-removed",
        &format!(
            "[[feed]]\nname = \"ambulances\"\nkind = \"ngsi-ld\"\nurl = \"{base}/ambulances\"\n\
             domain = \"health\"\ninterval_s = 0.3\n"
        ),
        "2",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = feed_lines(&stdout);
    let ambulances = &lines["ambulances"];
    assert_eq!(ambulances["entities"], 1, "{ambulances}");
    assert_eq!(ambulances["removed"], 2, "{ambulances}");
}

#[test]
fn feeds_check_rejects_a_bad_feeds_file() {
    let dir = scratch_dir("feeds-bad");
    let feeds = dir.join("feeds.toml");
    std::fs::write(
        &feeds,
        "[[feed]]\nname = \"x\"\nkind = \"ngsi-ld\"\ndomain = \"traffic\"\n",
    )
    .unwrap();
    let out = zhongshu()
        .args(["feeds-check", "--feeds"])
        .arg(&feeds)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs a url") && stderr.contains("feeds.toml"),
        "{stderr}"
    );
    let out = zhongshu()
        .args(["feeds-check", "--feeds", "/nope/feeds.toml"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nope/feeds.toml"));
}

#[test]
fn serve_sim_feeds_the_real_ingest_path_end_to_end() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = zhongshu()
        .args(["serve-sim", "--addr", &addr])
        .spawn()
        .unwrap();
    // Wait until it answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "serve-sim did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = feeds_check(
        "serve-sim",
        &format!(
            r#"
[[feed]]
name = "vehicles"
kind = "ngsi-ld"
url = "http://{addr}/ngsi-ld/v1/entities?type=Vehicle"
domain = "safety"
interval_s = 1
page_size = 200

[[feed]]
name = "air"
kind = "ngsi-ld"
url = "http://{addr}/ngsi-ld/v1/entities?type=AirQualityObserved"
domain = "ecology"
interval_s = 1
"#
        ),
        "3",
    );
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = feed_lines(&stdout);
    let vehicles = &lines["vehicles"];
    assert!(
        vehicles["entities"].as_u64().unwrap() > 200,
        "paged past the first page: {vehicles}"
    );
    assert_eq!(vehicles["rejected"], 0, "{vehicles}");
    assert_eq!(lines["air"]["entities"], 10, "{}", lines["air"]);
}

#[test]
fn a_cap_feed_brings_alerts_in_like_any_other_feed() {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let cap_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let file = match request.url() {
                "/flood.xml" => "helsinki-flood-alert.xml",
                "/fire.xml" => "kallio-building-fire.xml",
                "/nws.xml" => "nws-flash-flood-watch-ugc.xml",
                "/drill.xml" => "exercise-status.xml",
                "/heartbeat.xml" => "system-status.xml",
                "/gbk.xml" => "gbk-rainstorm.xml",
                _ => "malformed.xml",
            };
            let body = std::fs::read(cap_dir.join(file)).unwrap();
            let _ = request.respond(tiny_http::Response::from_data(body));
        }
    });
    let out = feeds_check(
        "cap-feed",
        &format!(
            r#"
[[feed]]
name = "flood-warnings"
kind = "cap"
url = "{base}/flood.xml"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "fire-alerts"
kind = "cap"
url = "{base}/fire.xml"
domain = "safety"
interval_s = 0.5

[[feed]]
name = "broken-cap"
kind = "cap"
url = "{base}/broken.xml"
domain = "safety"
interval_s = 0.5

[[feed]]
name = "nws"
kind = "cap"
url = "{base}/nws.xml"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "drill"
kind = "cap"
url = "{base}/drill.xml"
domain = "safety"
interval_s = 0.5

[[feed]]
name = "heartbeat"
kind = "cap"
url = "{base}/heartbeat.xml"
domain = "safety"
interval_s = 0.5

[[feed]]
name = "cma"
kind = "cap"
url = "{base}/gbk.xml"
domain = "ecology"
interval_s = 0.5
"#
        ),
        // Long enough for a few polls of each of the seven feeds: in a debug build
        // their HTTP clients take seconds to start (each loads the TLS roots), up to
        // 9 s on a machine busy with other tests, and more on a slower one (14 s once
        // saw a single poll of one feed there).
        "20",
    );
    let lines = feed_lines(&String::from_utf8_lossy(&out.stdout));
    // Named by zone codes only: taken (city-wide), never a failed poll.
    let nws = &lines["nws"];
    assert_eq!(nws["entities"], 1, "{nws}");
    assert!(nws["last_error"].is_null(), "{nws}");
    assert!(nws["polls_ok"].as_u64().unwrap() >= 2, "{nws}");
    // An exercise is shown and counted (once however often it is polled: a unit test
    // of the health ledger); a system heartbeat is counted.
    let drill = &lines["drill"];
    assert_eq!(drill["entities"], 1, "{drill}");
    assert_eq!(
        drill["withheld"],
        serde_json::json!({"exercise": 1}),
        "{drill}"
    );
    assert!(drill["polls_ok"].as_u64().unwrap() >= 1, "{drill}");
    let heartbeat = &lines["heartbeat"];
    assert_eq!(
        heartbeat["withheld"],
        serde_json::json!({"system": 1}),
        "{heartbeat}"
    );
    assert!(heartbeat["last_error"].is_null(), "{heartbeat}");
    // GBK bytes under a GBK declaration.
    assert_eq!(lines["cma"]["entities"], 1, "{}", lines["cma"]);
    assert_eq!(lines["fire-alerts"]["withheld"], serde_json::json!({}));
    assert_eq!(lines["flood-warnings"]["entities"], 1, "{lines:?}");
    assert_eq!(lines["fire-alerts"]["entities"], 1, "{lines:?}");
    // Polled again and again, still one alert each.
    assert!(
        lines["flood-warnings"]["polls_ok"].as_u64().unwrap() >= 2,
        "{}",
        lines["flood-warnings"]
    );
    let broken = &lines["broken-cap"];
    assert!(broken["last_ok"].is_null(), "{broken}");
    assert!(
        broken["poll_errors"]["wrong_shape"].as_u64().unwrap() >= 1,
        "a malformed CAP message is reported with its reason: {broken}"
    );
}

#[test]
fn a_bad_area_entry_is_refused_by_name() {
    let out = feeds_check(
        "bad-area",
        "[[feed]]\nname = 'w'\nkind = 'sim'\ndomain = 'ecology'\n\n\
         [[area]]\nname = 'Travis County'\ncodes = ['TXZ192']\n",
        "0",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("area Travis County: needs a polygon or a center"),
        "{err}"
    );
}

/// Credentials in a feed's URL never reach feeds-check's errors or the catalog.
#[test]
fn credentials_in_feed_urls_are_never_shown() {
    let toml = r#"
[[feed]]
name = "secret-broker"
kind = "ngsi-ld"
url = "http://user:pa55word@127.0.0.1:9/ngsi-ld/v1/entities?type=Vehicle&apikey=s3cret"
domain = "traffic"
interval_s = 0.5
timeout_s = 1
"#;
    let out = feeds_check("feeds-secret", toml, "1.5");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("secret-broker"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("pa55word") && !text.contains("s3cret"),
            "{text}"
        );
    }
    let feeds = scratch_dir("feeds-secret-catalog").join("feeds.toml");
    std::fs::write(&feeds, toml).unwrap();
    let catalog = zhongshu()
        .args(["catalog", "--feeds"])
        .arg(&feeds)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&catalog.stdout);
    assert!(text.contains("apikey=***"), "{text}");
    assert!(
        !text.contains("pa55word") && !text.contains("s3cret"),
        "{text}"
    );
}

/// Smart Data Models payloads as agencies and brokers publish them, through the real
/// poller and `feeds-check`: a feed whose every item is broken is 0 % valid and shows
/// its first rejects with id and path; NGSI-v2 (declared, or sent to an NGSI-LD feed)
/// and GeoJSON with a wrapped geometry land and are reported with their notes; poll
/// failures are counted apart from item reasons.
#[test]
fn feeds_check_tells_the_truth_about_real_payloads() {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let sdm = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sdm");
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let url = request.url().to_string();
            let path = url.split_once('?').map_or(url.as_str(), |(p, _)| p);
            let response = match path.strip_prefix("/sdm/") {
                // Served whole to any page request: each file is shorter than a page.
                Some(file) if !file.contains('/') && !file.contains("..") => {
                    match std::fs::read(sdm.join(file)) {
                        Ok(body) => tiny_http::Response::from_data(body).with_header(
                            tiny_http::Header::from_bytes("Content-Type", "application/json")
                                .unwrap(),
                        ),
                        Err(_) => tiny_http::Response::from_data(b"not found".to_vec())
                            .with_status_code(404),
                    }
                }
                _ => tiny_http::Response::from_data(b"{\"error\":\"boom\"}".to_vec())
                    .with_status_code(500),
            };
            let _ = request.respond(response);
        }
    });
    let out = feeds_check(
        "feeds-truth",
        &format!(
            r#"
[[feed]]
name = "all-broken"
kind = "ngsi-ld"
url = "{base}/sdm/rejects-mixed.jsonld"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "orion-air"
kind = "ngsi-v2"
url = "{base}/sdm/air-quality-observed-ngsi-v2-normalized.json"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "v2-sent-to-ld"
kind = "ngsi-ld"
url = "{base}/sdm/device-ngsi-v2-normalized.json"
domain = "urban"
interval_s = 0.5

[[feed]]
name = "sdm-geojson"
kind = "geojson"
url = "{base}/sdm/air-quality-observed-geojson.json"
domain = "ecology"
interval_s = 0.5

[[feed]]
name = "broken"
kind = "ngsi-ld"
url = "{base}/error"
domain = "urban"
interval_s = 0.5
"#
        ),
        "1.5",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = feed_lines(&stdout);
    assert_eq!(
        lines.len(),
        5,
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken_items = &lines["all-broken"];
    assert_eq!(broken_items["entities"], 0, "{broken_items}");
    let rejected = broken_items["rejected"].as_u64().unwrap();
    assert!(
        rejected >= 5 && rejected.is_multiple_of(5),
        "{broken_items}"
    );
    // Not 100 % valid: none of its items was.
    assert_eq!(broken_items["validity"], 0.0, "{broken_items}");
    assert_eq!(broken_items["completeness"], 0.0, "{broken_items}");
    assert_eq!(
        broken_items["poll_errors"],
        serde_json::json!({}),
        "{broken_items}"
    );
    let examples = broken_items["reject_examples"].as_array().unwrap();
    let found: Vec<(String, String, String)> = examples
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_owned(),
                e["item_id"].as_str().unwrap_or("-").to_owned(),
                e["path"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("missing_id", "-", "id"),
        (
            "missing_type",
            "urn:ngsi-ld:AirQualityObserved:Helsinki-Kaisaniemi-no-type",
            "type",
        ),
        (
            "bad_coordinates",
            "urn:ngsi-ld:AirQualityObserved:Helsinki-centre-projected-metres",
            "location.value.coordinates[0]",
        ),
        (
            "wrong_value_type",
            "urn:ngsi-ld:TrafficFlowObserved:Helsinki-Mannerheimintie-N-lane2-speed-in-words",
            "averageVehicleSpeed.value",
        ),
        (
            "bad_timestamp",
            "urn:ngsi-ld:AirQualityObserved:Helsinki-Kaisaniemi-local-date",
            "dateObserved.value",
        ),
    ];
    assert_eq!(
        found,
        expected
            .iter()
            .map(|(r, i, p)| (r.to_string(), i.to_string(), p.to_string()))
            .collect::<Vec<_>>()
    );
    assert!(examples.iter().all(|e| e["detail"].is_string()));

    let orion = &lines["orion-air"];
    assert_eq!(orion["entities"], 2, "{orion}");
    assert_eq!(orion["rejected"], 0, "{orion}");
    assert_eq!(orion["validity"], 1.0, "{orion}");
    assert_eq!(orion["notes"], serde_json::json!({}), "{orion}");

    let v2_in_ld = &lines["v2-sent-to-ld"];
    assert_eq!(v2_in_ld["entities"], 2, "{v2_in_ld}");
    assert!(
        v2_in_ld["notes"]["ngsi_v2_in_ngsi_ld_feed"]
            .as_u64()
            .unwrap()
            >= 2,
        "{v2_in_ld}"
    );

    let geojson = &lines["sdm-geojson"];
    assert_eq!(geojson["entities"], 2, "{geojson}");
    assert_eq!(geojson["rejected"], 0, "{geojson}");
    assert!(
        geojson["notes"]["geometry_wrapped"].as_u64().unwrap() >= 2,
        "{geojson}"
    );

    // A poll failure is no rejected item.
    let broken = &lines["broken"];
    assert!(
        broken["poll_errors"]["http_status"].as_u64().unwrap() >= 1,
        "{broken}"
    );
    assert_eq!(broken["reasons"], serde_json::json!({}), "{broken}");
    assert_eq!(broken["reject_examples"], serde_json::json!([]), "{broken}");
}
