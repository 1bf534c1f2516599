//! `zhongshu serve-sim`: the simulated sub-brains served over HTTP as NGSI-LD, so the
//! real ingest path (HTTP, paging, decoding) can be run end to end on one machine.
//!
//! `GET /ngsi-ld/v1/entities?type=T&limit=N&offset=K` answers normalized NGSI-LD
//! entities of type T (all types when omitted) with the core @context in a Link
//! header; `count=true` adds the `NGSILD-Results-Count` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use super::Simulator;
use crate::clock::rfc3339_from_unix_ms;
use crate::http::{Limits, Method, Request, Response, Server};
use crate::model::{Domain, EntityUpdate, FieldValue};

pub const CORE_CONTEXT_LINK: &str = "<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"";

fn property(value: Value, observed: Option<&str>) -> Value {
    let mut p = Map::new();
    p.insert("type".into(), "Property".into());
    p.insert("value".into(), value);
    if let Some(t) = observed {
        p.insert("observedAt".into(), t.into());
    }
    Value::Object(p)
}

/// A field's value as JSON (a number that is not finite, as null).
fn field_json(v: &FieldValue) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// One update as a normalized NGSI-LD entity.
pub fn to_ngsi_ld(update: &EntityUpdate) -> Value {
    let observed = update.observed_at_ms.map(rfc3339_from_unix_ms);
    let obs = observed.as_deref();
    let mut e = Map::new();
    e.insert("id".into(), update.id.clone().into());
    e.insert("type".into(), update.entity_type.clone().into());
    if let Some(line) = &update.line {
        let closed = line.len() >= 4 && line.first() == line.last();
        let value = if closed {
            json!({"type": "Polygon", "coordinates": [line]})
        } else {
            json!({"type": "LineString", "coordinates": line})
        };
        e.insert(
            "location".into(),
            json!({"type": "GeoProperty", "value": value}),
        );
    } else if let Some(p) = update.position {
        e.insert(
            "location".into(),
            json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": p}}),
        );
    }
    if let Some(t) = obs {
        e.insert("dateObserved".into(), property(t.into(), None));
    }
    for (k, v) in &update.fields {
        let mut p = property(field_json(v), obs);
        if let (Some(unit), Value::Object(p)) = (update.units.get(k), &mut p) {
            p.insert("unitCode".into(), unit.clone().into());
        }
        e.insert(k.clone(), p);
    }
    // Typed values the fields do not already carry, under their SDM names.
    let typed = update
        .kind
        .numbers()
        .into_iter()
        .map(|(k, v)| (k, v.map(FieldValue::Number)));
    for (k, v) in typed.chain(update.kind.others()) {
        // A value the source wrote in upper case (`NO2`) is already there.
        if e.contains_key(&k.to_ascii_uppercase()) {
            continue;
        }
        if let Some(v) = v {
            e.entry(k.to_string())
                .or_insert_with(|| property(field_json(&v), obs));
        }
    }
    Value::Object(e)
}

/// Starts serving the simulator on `addr` (port 0 picks a free one) on Zhongshu's
/// hardened HTTP server. `sim` is advanced to wall-clock time on every request.
pub fn start(addr: &str, sim: Simulator) -> anyhow::Result<Server> {
    let sim = Arc::new(Mutex::new(sim));
    let limits = Limits {
        // Only GETs: no body is needed.
        max_body_bytes: 1024,
        ..Limits::default()
    };
    Server::start(
        addr,
        "serve-sim",
        limits,
        Arc::new(move |request: Request| respond(&sim, &request)),
    )
    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves the simulator until the process ends.
pub fn serve(addr: &str, sim: Simulator) -> anyhow::Result<()> {
    let server = start(addr, sim)?;
    eprintln!(
        "zhongshu serve-sim: NGSI-LD on http://{}/ngsi-ld/v1/entities",
        server.addr()
    );
    server.wait();
    Ok(())
}

/// The most simulated time one request steps through; a longer gap is skipped.
const MAX_CATCH_UP_MS: i64 = 60_000;

fn respond(sim: &Mutex<Simulator>, request: &Request) -> Response {
    let url = request.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query: HashMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if path != "/ngsi-ld/v1/entities" {
        let body = json!({"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound", "title": "Not found", "detail": path});
        return Response::json(404, &body);
    }
    if request.method != Method::GET && request.method != Method::HEAD {
        let body = json!({"type": "https://uri.etsi.org/ngsi-ld/errors/OperationNotSupported", "title": "Only GET", "detail": request.method.as_str()});
        return Response::json(405, &body);
    }
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 10_000);
    let offset: usize = query
        .get("offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let wanted = query.get("type").copied();
    let (page, total) = {
        let Ok(mut sim) = sim.lock() else {
            return Response::json(500, &json!({}));
        };
        sim.catch_up(crate::clock::unix_ms_now(), MAX_CATCH_UP_MS);
        let all: Vec<EntityUpdate> = Domain::ALL
            .iter()
            .flat_map(|&d| sim.snapshot(d))
            .filter(|u| wanted.is_none_or(|t| u.entity_type == t))
            .collect();
        let total = all.len();
        let page: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(to_ngsi_ld)
            .collect();
        (page, total)
    };
    let mut response =
        Response::json(200, &Value::Array(page)).with_header("Link", CORE_CONTEXT_LINK);
    if query.get("count") == Some(&"true") {
        response = response.with_header("NGSILD-Results-Count", total.to_string());
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::feeds::decode::decode_ngsi_ld;
    use crate::map::load_default;
    use crate::sim::SimConfig;

    #[test]
    fn every_simulated_entity_round_trips_through_ngsi_ld() {
        let map = load_default().unwrap();
        let mut sim = Simulator::new(&map, SimConfig::for_map(&map), 1_795_946_400_000);
        sim.advance(1_795_946_400_000 + 4 * 3_600_000);
        for domain in Domain::ALL {
            let updates = sim.snapshot(domain);
            let body = Value::Array(updates.iter().map(to_ngsi_ld).collect()).to_string();
            let decoded = decode_ngsi_ld(body.as_bytes()).unwrap();
            assert!(
                decoded.rejects.is_empty(),
                "{domain:?}: {:?}",
                decoded.rejects.first()
            );
            assert_eq!(decoded.updates.len(), updates.len());
            for (a, b) in updates.iter().zip(&decoded.updates) {
                assert_eq!(a.id, b.id);
                assert_eq!(a.kind, b.kind, "{}", a.id);
                let (pa, pb) = (a.position.unwrap(), b.position.unwrap());
                assert!((pa[0] - pb[0]).abs() < 1e-9 && (pa[1] - pb[1]).abs() < 1e-9);
                assert_eq!(a.observed_at_ms, b.observed_at_ms);
            }
        }
    }

    #[test]
    fn units_lists_and_nested_fields_survive_the_encoder() {
        let stations = decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-normalized.jsonld"
        ))
        .unwrap()
        .updates;
        let body = Value::Array(stations.iter().map(to_ngsi_ld).collect()).to_string();
        let again = decode_ngsi_ld(body.as_bytes()).unwrap();
        assert_eq!(again.rejects, vec![]);
        for (a, b) in stations.iter().zip(&again.updates) {
            assert_eq!(a.fields, b.fields, "{}", a.id);
            assert_eq!(a.units, b.units, "{}", a.id);
            assert_eq!(a.kind, b.kind, "{}", a.id);
        }
        let encoded = to_ngsi_ld(&stations[0]);
        assert_eq!(encoded["no2"]["unitCode"], "GQ");
        assert_eq!(encoded["category"]["value"], json!(["urban", "traffic"]));
    }

    /// A poller's pages keep coming while other addresses flood the simulator with
    /// bad requests; the flood is held to its own addresses' allowance.
    #[test]
    fn pages_are_served_while_other_addresses_flood_the_simulator() {
        let map = load_default().unwrap();
        let sim = Simulator::new(&map, SimConfig::for_map(&map), crate::clock::unix_ms_now());
        let server = start("127.0.0.1:0", sim).unwrap();
        let client = crate::http::client_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("http://{}/ngsi-ld/v1/entities?limit=20", server.addr());
        let from: Vec<_> = (2..5)
            .map(|i| Some(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, i))))
            .collect();
        crate::http::attack::good_requests_land_under_flood(
            server.addr(),
            "/ngsi-ld/v1/entities",
            &from,
            &["405"],
            40,
            Duration::from_secs(5),
            |_| {
                // The whole chain (a timeout, a reset, a refused connection).
                let answer = client.get(&url).send().map_err(|e| format!("{e:?}"))?;
                let status = answer.status().as_u16();
                let page: Value = answer.json().map_err(|e| e.to_string())?;
                match (status, page.as_array().map(Vec::len)) {
                    (200, Some(20)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        );
        let refused = server.refused();
        assert!(
            refused.get("rate_limited").is_some_and(|n| *n > 0),
            "{refused:?}"
        );
    }

    /// A simulator started long ago (a month: a machine that slept, a server left
    /// running) answers its next request at once, not after stepping through the gap.
    #[test]
    fn a_simulator_started_long_ago_answers_its_next_request() {
        let map = load_default().unwrap();
        let month_ago = crate::clock::unix_ms_now() - 30 * 86_400_000;
        let sim = Simulator::new(&map, SimConfig::for_map(&map), month_ago);
        let server = start("127.0.0.1:0", sim).unwrap();
        let client = crate::http::client_builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let url = format!("http://{}/ngsi-ld/v1/entities?limit=5", server.addr());
        let page: Value = client.get(&url).send().unwrap().json().unwrap();
        assert_eq!(page.as_array().map(Vec::len), Some(5));
    }

    #[test]
    fn serve_sim_survives_hostile_clients() {
        let map = load_default().unwrap();
        let sim = Simulator::new(&map, SimConfig::for_map(&map), crate::clock::unix_ms_now());
        let server = start("127.0.0.1:0", sim).unwrap();
        crate::http::attack::survives(
            server.addr(),
            "/ngsi-ld/v1/entities",
            "/ngsi-ld/v1/entities?limit=1",
            200,
        );
    }
}
