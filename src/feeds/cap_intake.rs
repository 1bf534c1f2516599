//! CAP pushed to Zhongshu (`kind = "cap-intake"`): an agency POSTs each CAP message
//! to `http(s)://LISTEN/cap` with `Authorization: Bearer <token>`; it is read like a
//! polled CAP message and answered only once decoded (202 with its identifier, or
//! 400 with why). The endpoint is the project's hardened HTTP server: body and
//! header limits, slow-client timeouts, bounded connections; the token is compared
//! without an early exit; beyond loopback it serves HTTPS only.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::FeedConfig;
use super::gazetteer::Gazetteer;
use super::poll::FeedEvent;
use crate::clock::unix_ms_now;
use crate::http::{Caller, Gate, Handler, Limits, Method, Request, Response, Server, Tls};
use crate::model::FeedId;

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Whether `listen` is a loopback address (plain HTTP is allowed only there).
pub fn is_loopback(listen: &str) -> bool {
    listen
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| listen.starts_with("localhost:"))
}

/// Serves one intake feed until `stop`.
pub fn serve(
    id: FeedId,
    feed: FeedConfig,
    places: Arc<Gazetteer>,
    tx: Sender<FeedEvent>,
    stop: &AtomicBool,
) {
    let fail = |error: String| {
        let _ = tx.send(FeedEvent::PollFailed {
            feed: id,
            at_ms: unix_ms_now(),
            reason: "client",
            error,
            retry_in: Duration::from_secs(60),
        });
    };
    let listen = feed.listen.clone().unwrap_or_default();
    let token = match configured_token(&feed) {
        Ok(Some(t)) => t,
        Ok(None) => return fail("an intake feed needs a token".into()),
        Err(e) => return fail(e),
    };
    let tls = match configured_tls(&feed) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let known = crate::http::token_digest(&token);
    let limit = feed.max_payload_bytes.min(4 * 1024 * 1024);
    let refusals_tx = tx.clone();
    let tx = Mutex::new(tx.clone());
    // The path, the method and the token are read from the headers: a wrong one is
    // answered before a byte of the (up to 4 MiB) body is read.
    let gate: Gate = Arc::new(move |request: &Request| {
        if request.url().split('?').next() != Some("/cap") {
            return Caller::Refused(Response::error(
                404,
                "not_found",
                "POST CAP messages to /cap",
            ));
        }
        if request.method != Method::POST {
            return Caller::Refused(
                Response::error(405, "method_not_allowed", "POST CAP messages to /cap")
                    .with_header("Allow", "POST"),
            );
        }
        if bearer_matches(request, &known) {
            Caller::Known("agency".into())
        } else {
            Caller::Refused(
                Response::error(401, "unauthorized", "Authorization: Bearer <intake token>")
                    .with_header("WWW-Authenticate", "Bearer"),
            )
        }
    });
    let handler: Handler = Arc::new(move |request: Request| {
        if request.caller.is_none() {
            return Response::error(401, "unauthorized", "Authorization: Bearer <intake token>");
        }
        match super::cap::decode_cap(&request.body, &places) {
            Ok(decoded) => {
                let identifiers: Vec<String> =
                    decoded.updates.iter().map(|u| u.id.clone()).collect();
                let withheld = decoded.withheld.len();
                if !hand_on(&tx, id, &request, Ok(decoded), "a message posted") {
                    return Response::error(503, "unavailable", "Zhongshu is stopping");
                }
                Response::json(
                    202,
                    &serde_json::json!({"taken": identifiers, "withheld": withheld}),
                )
            }
            Err(e) => {
                hand_on(&tx, id, &request, Err(e.to_string()), "a message posted");
                Response::error(400, "not_cap", e.to_string())
            }
        }
    });
    let limits = Limits {
        max_body_bytes: limit,
        rate: feed
            .rate_per_s
            .map(crate::http::Rate::per_second)
            .unwrap_or_default(),
        ..Limits::default()
    };
    let server = match Server::start_gated(
        &listen,
        &format!("cap intake {}", feed.name),
        limits,
        Some(gate),
        handler,
        tls,
    ) {
        Ok(s) => s,
        Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
    };
    report_refusals(id, &server, &refusals_tx, stop);
    server.stop();
}

/// Until `stop`, tells the feed's health what `server` refused (wrong tokens, over the
/// rate, too large, too slow) once a second, as the counts grow.
pub(crate) fn report_refusals(
    id: FeedId,
    server: &Server,
    tx: &Sender<FeedEvent>,
    stop: &AtomicBool,
) {
    let mut told = std::collections::BTreeMap::new();
    let mut next = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(100));
        if std::time::Instant::now() < next {
            continue;
        }
        next += Duration::from_secs(1);
        let now = server.refused();
        let counts: std::collections::BTreeMap<String, u64> = now
            .iter()
            .map(|(why, n)| (why.clone(), n - told.get(why).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if !counts.is_empty() {
            let _ = tx.send(FeedEvent::Refused {
                feed: id,
                at_ms: unix_ms_now(),
                counts,
            });
            told = now;
        }
    }
}

/// Hands what a pushed request carried to the ingest: its items with the feed's
/// keep-alive, or, when it could not be read, a reject naming `what` came from where
/// (counted with the feed's items, never the feed's failure). `false` when nobody
/// listens any more (Zhongshu is stopping).
pub(super) fn hand_on(
    tx: &Mutex<Sender<FeedEvent>>,
    id: FeedId,
    request: &Request,
    read: Result<crate::model::Decoded, String>,
    what: &str,
) -> bool {
    let at_ms = unix_ms_now();
    let good = read.is_ok();
    let decoded = read.unwrap_or_else(|e| crate::model::Decoded {
        rejects: vec![crate::model::Reject {
            reason: crate::model::RejectReason::Unreadable,
            item_id: None,
            path: None,
            detail: format!("{what} from {}: {e}", request.peer.ip()),
        }],
        ..Default::default()
    });
    let Ok(tx) = tx.lock() else { return false };
    let sent = tx
        .send(FeedEvent::Batch {
            feed: id,
            decoded,
            received_at_ms: at_ms,
        })
        .is_ok();
    if good {
        let _ = tx.send(FeedEvent::PollOk {
            feed: id,
            at_ms,
            not_modified: false,
            complete: false,
            bytes: request.body.len(),
        });
    }
    sent
}

/// The token a listening feed's requests must carry, as configured, trimmed as the
/// presented one is (a trailing space in the file never locks every sender out);
/// `None` when none is configured.
pub(super) fn configured_token(feed: &FeedConfig) -> Result<Option<String>, String> {
    let Some(token) = feed.token.as_deref() else {
        return Ok(None);
    };
    let token = super::config::header_value(token)
        .map_err(|e| format!("token: {e}"))?
        .trim()
        .to_string();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "the token must be at least {MIN_TOKEN_CHARS} characters"
        ));
    }
    Ok(Some(token))
}

/// A listening feed's TLS identity, when it has one.
pub(super) fn configured_tls(feed: &FeedConfig) -> Result<Option<Tls>, String> {
    match (&feed.tls_cert, &feed.tls_key) {
        (Some(cert), Some(key)) => Tls::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| format!("tls_cert/tls_key: {e}")),
        _ => Ok(None),
    }
}

/// Whether a request carries `Authorization: Bearer <token>` whose digest is
/// `known` (compared without an early exit).
pub(super) fn bearer_matches(request: &Request, known: &[u8; 32]) -> bool {
    request
        .header("authorization")
        .and_then(|v| {
            let (scheme, t) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| crate::http::token_digest(t.trim()))
        })
        .is_some_and(|p| crate::http::digests_equal(&p, known))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::poll::Pollers;

    /// An intake feed (`kind = 'cap-intake'` on a free loopback port, the test token,
    /// and `extra` lines) started and listening: its pollers, events and address.
    fn start_intake(
        name: &str,
        extra: &str,
    ) -> (
        Pollers,
        std::sync::mpsc::Receiver<FeedEvent>,
        std::net::SocketAddr,
    ) {
        let port = crate::nats::testing::free_port();
        let feeds = parse_feeds(&format!(
            "[[feed]]\nname='{name}'\nkind='cap-intake'\nlisten='127.0.0.1:{port}'\ntoken='intake-token-0123456789'\n{extra}domain='safety'\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        (pollers, rx, addr)
    }

    #[test]
    fn agencies_post_cap_with_their_token_and_hear_what_became_of_it() {
        let port = crate::nats::testing::free_port();
        let feeds = parse_feeds(&format!(
            "[[feed]]\nname='agency-push'\nkind='cap-intake'\nlisten='127.0.0.1:{port}'\ntoken='intake-token-0123456789 '\ndomain='safety'\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let url = format!("http://127.0.0.1:{port}/cap");
        let client = crate::http::client();
        let fire = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/cap/kallio-building-fire.xml"),
        )
        .unwrap();
        let post = |token: &str, body: Vec<u8>| {
            let until = Instant::now() + Duration::from_secs(10);
            loop {
                match client
                    .post(&url)
                    .bearer_auth(token)
                    .header("Content-Type", "application/cap+xml")
                    .body(body.clone())
                    .send()
                {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        return (status, r.text().unwrap_or_default());
                    }
                    // Still starting.
                    Err(_) if Instant::now() < until => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let (status, body) = post("intake-token-0123456789", fire.clone());
        assert_eq!(status, 202, "{body}");
        assert!(body.contains("HEL-2026-1129-FIRE-0417"), "{body}");
        // The wrong token: 401, nothing taken.
        let (status, _) = post("intake-token-9999999999", fire.clone());
        assert_eq!(status, 401);
        // Not CAP: 400 saying why, and the feed's health says so too.
        let (status, body) = post("intake-token-0123456789", b"<html>hi</html>".to_vec());
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("not_cap"), "{body}");
        let get = client.get(&url).send().unwrap().status().as_u16();
        assert_eq!(get, 405);
        let mut alerts = 0;
        let mut rejects = Vec::new();
        let mut failures = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && (alerts == 0 || rejects.is_empty()) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => {
                    alerts += decoded.updates.len();
                    rejects.extend(decoded.rejects.into_iter().map(|r| r.detail));
                }
                Ok(FeedEvent::PollFailed { error, .. }) => failures.push(error),
                _ => {}
            }
        }
        assert_eq!(alerts, 1, "one alert from the one good message");
        // The bad message is a reject saying where it came from, not a failure of
        // the intake (a sloppy sender never makes the feed look broken).
        assert!(rejects.iter().any(|r| r.contains("posted")), "{rejects:?}");
        assert!(failures.is_empty(), "{failures:?}");
        pollers.stop();

        // An intake given its own rate: a burst beyond four seconds' worth is refused
        // with 429, and said in the feed's health.
        let (pollers, rx, addr) = start_intake("slow", "rate_per_s = 2\n");
        let url = format!("http://{addr}/cap");
        let answers: Vec<u16> = (0..12)
            .map(|_| {
                client
                    .post(&url)
                    .bearer_auth("intake-token-0123456789")
                    .body(fire.clone())
                    .send()
                    .map(|a| a.status().as_u16())
                    .unwrap_or(0)
            })
            .collect();
        assert!(answers[..8].iter().all(|s| *s == 202), "{answers:?}");
        assert!(answers[8..].contains(&429), "{answers:?}");
        let until = Instant::now() + Duration::from_secs(5);
        let mut limited = false;
        while Instant::now() < until && !limited {
            if let Ok(FeedEvent::Refused { counts, .. }) =
                rx.recv_timeout(Duration::from_millis(100))
            {
                limited = counts.iter().any(|(why, n)| why.contains("rate") && *n > 0);
            }
        }
        assert!(limited, "the refusals are reported");
        pollers.stop();
        let e = parse_feeds("[[feed]]\nname='x'\nkind='sim'\ndomain='safety'\nrate_per_s = 5\n")
            .unwrap_err();
        assert!(e.contains("rate_per_s"), "{e}");
    }

    /// Agencies' messages all land while five threads flood the intake with wrong
    /// tokens, garbage, oversized and slow requests; the flood shows in the feed's
    /// health as requests refused, never as the feed's failure.
    #[test]
    fn agencies_messages_land_while_the_intake_is_flooded() {
        let (pollers, rx, addr) = start_intake("agency-push", "");
        let fire = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/cap/kallio-building-fire.xml"),
        )
        .unwrap();
        let client = crate::http::client_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let url = format!("http://{addr}/cap");
        let seen = crate::http::attack::good_requests_land_under_flood(
            addr,
            "/cap",
            &[None],
            &["401"],
            30,
            Duration::from_secs(5),
            |_| {
                let answer = client
                    .post(&url)
                    .bearer_auth("intake-token-0123456789")
                    .body(fire.clone())
                    .send()
                    .map_err(|e| e.to_string())?;
                match answer.status().as_u16() {
                    202 => Ok(()),
                    s => Err(format!("{s}: {}", answer.text().unwrap_or_default())),
                }
            },
        );
        let mut alerts = 0;
        let mut refused = std::collections::BTreeMap::<String, u64>::new();
        let mut failures = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until && (alerts < 30 || !refused.contains_key("unauthorized")) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => alerts += decoded.updates.len(),
                Ok(FeedEvent::Refused { counts, .. }) => {
                    for (why, n) in counts {
                        *refused.entry(why).or_default() += n;
                    }
                }
                Ok(FeedEvent::PollFailed { error, .. }) => failures.push(error),
                _ => {}
            }
        }
        assert_eq!(alerts, 30, "every good message taken in");
        assert!(
            refused.get("unauthorized").is_some_and(|n| *n > 0),
            "{refused:?} after {seen:?}"
        );
        assert!(failures.is_empty(), "{failures:?}");
        pollers.stop();
    }

    #[test]
    fn an_intake_beyond_this_machine_needs_tls_and_a_real_token() {
        let e = parse_feeds(
            "[[feed]]\nname='x'\nkind='cap-intake'\nlisten='0.0.0.0:7879'\ntoken='intake-token-0123456789'\ndomain='safety'\n",
        )
        .unwrap_err();
        assert!(e.contains("tls_cert"), "{e}");
        let e = parse_feeds(
            "[[feed]]\nname='x'\nkind='cap-intake'\nlisten='127.0.0.1:7879'\ndomain='safety'\n",
        )
        .unwrap_err();
        assert!(e.contains("token"), "{e}");
        let e = parse_feeds(
            "[[feed]]\nname='a'\nkind='cap-intake'\nlisten='127.0.0.1:7879'\ntoken='intake-token-0123456789'\ndomain='safety'\n[[feed]]\nname='b'\nkind='cap-intake'\nlisten='127.0.0.1:7879'\ntoken='intake-token-0123456789'\ndomain='safety'\n",
        )
        .unwrap_err();
        assert!(e.contains("already listens"), "{e}");
        // A listen address without a port, and a short token in the file, are
        // refused when the file is read.
        let e = parse_feeds(
            "[[feed]]\nname='x'\nkind='cap-intake'\nlisten='127.0.0.1'\ntoken='intake-token-0123456789'\ndomain='safety'\n",
        )
        .unwrap_err();
        assert!(e.contains("needs a port"), "{e}");
        let e = parse_feeds(
            "[[feed]]\nname='x'\nkind='cap-intake'\nlisten='127.0.0.1:7879'\ntoken='short'\ndomain='safety'\n",
        )
        .unwrap_err();
        assert!(e.contains("at least 16"), "{e}");
        // One from the environment is refused when the feed starts, and said.
        let port = crate::nats::testing::free_port();
        // SAFETY: set before the feed's thread starts; no other test reads this name.
        unsafe { std::env::set_var("ZHONGSHU_TEST_SHORT_INTAKE_TOKEN", "short") };
        let feeds = parse_feeds(&format!(
            "[[feed]]\nname='x'\nkind='cap-intake'\nlisten='127.0.0.1:{port}'\ntoken='env:ZHONGSHU_TEST_SHORT_INTAKE_TOKEN'\ndomain='safety'\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(FeedEvent::PollFailed { error, .. }) => assert!(error.contains("16"), "{error}"),
            other => panic!("{other:?}"),
        }
        pollers.stop();
    }
}
