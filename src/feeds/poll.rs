//! Polling HTTP feeds on background threads. Each feed has its own thread, client,
//! timeouts and backoff, so one hanging or broken feed never slows another; results
//! reach the app through a channel and the frame never waits on the network.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::{FeedConfig, FeedKind};
use super::decode::{decode_geojson, decode_ngsi_ld, decode_ngsi_v2};
use super::gazetteer::Gazetteer;
use super::{Decoded, MAX_PAYLOAD_BYTES, PayloadError};
use crate::clock::unix_ms_now;
use crate::model::FeedId;

/// The NGSI-LD core @context, sent when a feed names no other.
pub const NGSI_LD_CORE_CONTEXT: &str =
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld";

/// Longest wait between retries of a failing feed.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a feed thread reports.
#[derive(Debug)]
pub enum FeedEvent {
    /// A decoded page (or the whole payload) of updates and rejects.
    Batch {
        feed: FeedId,
        decoded: Decoded,
        received_at_ms: i64,
    },
    /// One poll finished: every page fetched (or nothing changed, `not_modified`).
    PollOk {
        feed: FeedId,
        at_ms: i64,
        not_modified: bool,
        /// Every page came as a `Batch` (none answered 304): the batches of this poll
        /// hold everything the source has, so what they lack has gone.
        complete: bool,
        bytes: usize,
    },
    /// One poll failed; the thread backs off and retries.
    PollFailed {
        feed: FeedId,
        at_ms: i64,
        /// Short machine-readable cause: `timeout`, `connect`, `http_status`,
        /// `too_large`, `not_json`, `wrong_shape`, `read_error`, `client`, `paging`
        /// (a broker that repeats pages or miscounts), `over_budget` (the poll's
        /// pages, items or bytes ran out); after the last two, what came before the
        /// stop was taken in.
        reason: &'static str,
        error: String,
        retry_in: Duration,
    },
    /// Requests a push endpoint refused since its last such report, by why
    /// (`unauthorized`, `rate_limited`, `too_large`, `timeout`, `overloaded`,
    /// `bad_request`): never the feed's failure, shown with its health.
    Refused {
        feed: FeedId,
        at_ms: i64,
        counts: std::collections::BTreeMap<String, u64>,
    },
}

/// The running pollers; dropping it stops them.
pub struct Pollers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pollers {
    /// Starts one thread per HTTP feed (`sim` feeds are driven elsewhere). Feed ids are
    /// positions in `feeds`.
    /// CAP feeds locate alerts that name their area by code or name in `places`.
    pub fn start(feeds: &[FeedConfig], places: Arc<Gazetteer>, tx: Sender<FeedEvent>) -> Pollers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = feeds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.kind != FeedKind::Sim)
            .map(|(i, f)| {
                let (feed, tx, stop) = (f.clone(), tx.clone(), stop.clone());
                let places = places.clone();
                std::thread::Builder::new()
                    .name(format!("feed {}", f.name))
                    .spawn(move || match feed.kind {
                        FeedKind::Mqtt => super::mqtt::listen_loop(i as FeedId, feed, tx, &stop),
                        FeedKind::CapIntake => {
                            super::cap_intake::serve(i as FeedId, feed, places, tx, &stop)
                        }
                        FeedKind::NgsiLdNotify => {
                            super::ngsi_notify::run(i as FeedId, feed, &places, tx, &stop)
                        }
                        _ => poll_loop(i as FeedId, feed, &places, tx, stop),
                    })
                    .expect("spawn a feed thread")
            })
            .collect();
        Pollers { stop, threads }
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long a feed waits after `failures` failures in a row: its interval doubled
/// each time, at most a minute (or the interval, when longer).
pub(super) fn backoff_after(interval: Duration, failures: u32) -> Duration {
    interval
        .saturating_mul(1u32 << failures.min(6))
        .clamp(interval, MAX_BACKOFF.max(interval))
}

/// Sleeps up to `d`, waking early when asked to stop.
pub(super) fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::park_timeout((until - now).min(Duration::from_millis(100)));
    }
}

/// The validators of each page of a feed (by offset), from the last poll in which
/// every page decoded. Each page is asked for conditionally on its own: a 304 for one
/// page says nothing about the pages after it.
#[derive(Default)]
pub(super) struct Conditional {
    pages: std::collections::HashMap<u64, PageValidators>,
    /// The page size the broker took, when it refused the configured one (400).
    limit: Option<u32>,
    /// The result count the broker gave at the last poll (for pages it answers 304).
    total: Option<u64>,
    /// A CAP list's entries read: id → (updated, what its message decoded to).
    cap_entries: std::collections::HashMap<String, (String, Decoded)>,
    /// The last poll left entries of a CAP list unread (its budget ran out): the
    /// list is fetched whole next time, not answered by a 304.
    cap_pending: bool,
}

#[derive(Clone, Debug, Default)]
struct PageValidators {
    etag: Option<String>,
    last_modified: Option<String>,
    /// Items the page held, to know where the next page starts after a 304.
    items: usize,
    /// The page's `rel="next"` link, to follow after a 304.
    next: Option<String>,
}

fn poll_loop(
    id: FeedId,
    feed: FeedConfig,
    places: &Gazetteer,
    tx: Sender<FeedEvent>,
    stop: Arc<AtomicBool>,
) {
    let client = match feed_client(&feed) {
        Ok(c) => c,
        Err(error) => {
            let _ = tx.send(FeedEvent::PollFailed {
                feed: id,
                at_ms: unix_ms_now(),
                reason: "client",
                error,
                retry_in: MAX_BACKOFF,
            });
            return;
        }
    };
    let interval = Duration::from_secs_f64(feed.interval_s);
    let mut failures = 0u32;
    let mut conditional = Conditional::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let wait = match poll_once(id, &feed, places, &client, &tx, &mut conditional, &stop) {
            Ok(()) => {
                failures = 0;
                interval.saturating_sub(started.elapsed())
            }
            Err((reason, error)) => {
                // Shown, logged and printed by feeds-check: never with credentials.
                let error = crate::http::redact_in_text(&error);
                failures = failures.saturating_add(1);
                let backoff = backoff_after(interval, failures);
                if tx
                    .send(FeedEvent::PollFailed {
                        feed: id,
                        at_ms: unix_ms_now(),
                        reason,
                        error,
                        retry_in: backoff,
                    })
                    .is_err()
                {
                    return; // nobody listens any more
                }
                backoff
            }
        };
        nap(wait, &stop);
    }
}

/// The HTTP client of a feed: its timeouts and redirect policy.
pub(super) fn feed_client(feed: &FeedConfig) -> Result<reqwest::blocking::Client, String> {
    crate::http::client_builder()
        .connect_timeout(Duration::from_secs_f64(feed.timeout_s.min(5.0)))
        .timeout(Duration::from_secs_f64(feed.timeout_s))
        .redirect(feed_redirects(feed))
        .user_agent(concat!("zhongshu/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// Redirects a feed follows: at most five, on the feed's own host or one named in
/// `redirect_hosts`, never from https to http (credentials would travel in clear).
fn feed_redirects(feed: &FeedConfig) -> reqwest::redirect::Policy {
    let allowed = feed.redirect_hosts.clone();
    reqwest::redirect::Policy::custom(move |attempt| {
        let Some(first) = attempt.previous().first() else {
            return attempt.stop();
        };
        let next = attempt.url();
        let refusal = if first.scheme() == "https" && next.scheme() != "https" {
            Some(format!(
                "refused a redirect from https to {}",
                next.scheme()
            ))
        } else if first.host_str() != next.host_str()
            && !allowed.iter().any(|h| Some(h.as_str()) == next.host_str())
        {
            Some(format!(
                "refused a redirect to another host ({}); name it in redirect_hosts to allow it",
                next.host_str().unwrap_or("")
            ))
        } else if attempt.previous().len() > 5 {
            Some("more than five redirects".to_string())
        } else {
            None
        };
        match refusal {
            Some(why) => attempt.error(why),
            None => attempt.follow(),
        }
    })
}

/// The URL of page `offset` of an NGSI-LD or NGSI-v2 query, asking for the count of
/// all results (`count=true`; NGSI-v2: `options=count`), so a broker that serves
/// fewer items per page than asked is paged to the end.
pub fn page_url(base: &str, kind: FeedKind, limit: u32, offset: u64) -> String {
    // The feed's own paging parameters give way to these.
    let (path, query) = base.split_once('?').unwrap_or((base, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| {
            let key = p.split_once('=').map_or(*p, |(k, _)| k);
            let paging =
                matches!(key, "limit" | "offset") || (kind != FeedKind::NgsiV2 && key == "count");
            !paging
        })
        .map(str::to_string)
        .collect();
    params.push(format!("limit={limit}"));
    params.push(format!("offset={offset}"));
    match kind {
        FeedKind::NgsiV2 => {
            // One `options` parameter: count joins what the feed asked for.
            match params.iter_mut().find(|p| p.starts_with("options=")) {
                Some(options) => {
                    if !options["options=".len()..].split(',').any(|o| o == "count") {
                        options.push_str(",count");
                    }
                }
                None => params.push("options=count".into()),
            }
        }
        _ => params.push("count=true".into()),
    }
    format!("{path}?{}", params.join("&"))
}

/// A URL's origin (scheme, host, port): where a feed's credentials may go.
fn url_origin(url: &str) -> Option<(String, Option<String>, Option<u16>)> {
    reqwest::Url::parse(url).ok().map(|u| {
        (
            u.scheme().to_string(),
            u.host_str().map(str::to_string),
            u.port_or_known_default(),
        )
    })
}

/// The `rel="next"` target of a `Link` header, resolved against `current`.
pub(crate) fn link_next(header: &str, current: &str) -> Option<String> {
    for part in header.split(',') {
        let (target, params) = part.split_once(';').unwrap_or((part, ""));
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=next" || p == "rel=\"next\""
        });
        if is_next {
            let base = reqwest::Url::parse(current).ok()?;
            return base.join(target).ok().map(|u| u.to_string());
        }
    }
    None
}

/// The ids of a page's items, to tell a page that repeats the one before it.
fn page_ids(decoded: &Decoded) -> Vec<String> {
    let mut ids: Vec<String> = decoded
        .updates
        .iter()
        .map(|u| u.id.clone())
        .chain(decoded.rejects.iter().filter_map(|r| r.item_id.clone()))
        .collect();
    ids.sort_unstable();
    ids
}

/// How many times one page is asked again with a smaller `limit` after a 400.
const MAX_LIMIT_RETRIES: u32 = 12;

pub(super) fn poll_once(
    id: FeedId,
    feed: &FeedConfig,
    places: &Gazetteer,
    client: &reqwest::blocking::Client,
    tx: &Sender<FeedEvent>,
    conditional: &mut Conditional,
    stop: &AtomicBool,
) -> Result<(), (&'static str, String)> {
    let Some(base) = feed.url.as_deref() else {
        return Err(("client", "no url configured".into()));
    };
    let mut total_bytes = 0usize;
    let mut offset = 0u64;
    // Validators of this poll, kept only once every page decoded: a payload that
    // failed (too large, not JSON) must be fetched again, not answered by a 304.
    let mut seen_pages = std::collections::HashMap::new();
    let mut all_not_modified = true;
    let mut any_not_modified = false;
    let paged = feed.kind.is_paged();
    // A page size the broker refused before is tried one step larger again, so a
    // passing 400 does not shrink pages for good.
    let mut limit = conditional
        .limit
        .map_or(feed.page_size, |l| l.saturating_mul(2).min(feed.page_size))
        .max(1);
    let mut limit_retries = 0u32;
    // Where the broker said the next page is (`Link: <…>; rel="next"`).
    let mut next_url: Option<String> = None;
    let mut followed_links = false;
    let mut visited: std::collections::HashSet<String> = std::collections::HashSet::new();
    // All results, as the broker counts them (`NGSILD-Results-Count`).
    let mut total: Option<u64> = None;
    let mut previous_ids: Option<Vec<String>> = None;
    let mut items_in_poll = 0u64;
    let mut pages = 0u32;
    // Next links are followed on the feed's own origin only (scheme, host and
    // port), so its credentials never go elsewhere.
    let base_origin = url_origin(base);
    // Why the poll stopped before the end (what it took in so far stays).
    let stopped: Option<(&'static str, String)> = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        pages += 1;
        let url = match (&next_url, paged) {
            (Some(next), _) => next.clone(),
            (None, true) => page_url(base, feed.kind, limit, offset),
            (None, false) => base.to_string(),
        };
        let mut request = client.get(&url);
        for (name, value) in &feed.headers {
            let value = super::config::header_value(value)
                .map_err(|e| ("client", format!("header {name}: {e}")))?;
            request = request.header(name.as_str(), value);
        }
        request = match feed.kind {
            // NGSI-LD brokers answer plain JSON with the @context in a Link header.
            FeedKind::NgsiLd => request.header("Accept", "application/json").header(
                "Link",
                format!(
                    "<{}>; rel=\"http://www.w3.org/ns/json-ld#context\"; type=\"application/ld+json\"",
                    feed.context.as_deref().unwrap_or(NGSI_LD_CORE_CONTEXT)
                ),
            ),
            // NGSI-v2 knows no @context; tenants go in `headers` (Fiware-Service).
            FeedKind::NgsiV2 => request.header("Accept", "application/json"),
            FeedKind::Cap => request.header("Accept", "application/cap+xml, application/xml"),
            _ => request.header("Accept", "application/geo+json, application/json"),
        };
        // Conditional request for this page: a 304 means this page is unchanged.
        let known = conditional
            .pages
            .get(&offset)
            .filter(|_| !conditional.cap_pending);
        if let Some(v) = known {
            if let Some(etag) = &v.etag {
                request = request.header("If-None-Match", etag);
            }
            if let Some(lm) = &v.last_modified {
                request = request.header("If-Modified-Since", lm);
            }
        }
        let response = request.send().map_err(|e| describe_reqwest_error(&e))?;
        let status = response.status();
        // A broker that caps `limit` with a 400 is asked again, smaller.
        if status == reqwest::StatusCode::BAD_REQUEST
            && paged
            && next_url.is_none()
            && limit > 1
            && limit_retries < MAX_LIMIT_RETRIES
        {
            limit_retries += 1;
            limit = (limit / 2).max(1);
            pages -= 1;
            continue;
        }
        // The smaller page size is kept only once the broker took it.
        if paged && next_url.is_none() && (status.is_success() || status.as_u16() == 304) {
            conditional.limit = (limit != feed.page_size).then_some(limit);
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if let Some(count) = header("NGSILD-Results-Count")
            .or_else(|| header("Fiware-Total-Count"))
            .and_then(|c| c.trim().parse::<u64>().ok())
        {
            total = Some(count);
        }
        let mut next = match header("link").and_then(|l| link_next(&l, &url)) {
            Some(next) => {
                if url_origin(&next) != base_origin {
                    return Err((
                        "paging",
                        format!(
                            "the next page is elsewhere ({}): only links on the feed's own scheme, host and port are followed",
                            crate::http::redact_url(&next)
                        ),
                    ));
                }
                Some(next)
            }
            None => None,
        };
        let items = if status == reqwest::StatusCode::NOT_MODIFIED {
            // Unchanged: the pages after it may not be, so go on where it ended.
            let Some(v) = known.cloned() else {
                return Err((
                    "http_status",
                    format!("HTTP 304 from {url} for a request that was not conditional"),
                ));
            };
            total = total.or(conditional.total);
            let items = v.items;
            // A cursor-paged broker's next page is where it said last time.
            let remembered_next = v.next.clone();
            seen_pages.insert(offset, v);
            any_not_modified = true;
            previous_ids = None;
            if next.is_none() {
                next = remembered_next;
            }
            items
        } else {
            if !status.is_success() {
                return Err(("http_status", format!("HTTP {status} from {url}")));
            }
            all_not_modified = false;
            let (etag, last_modified) = (header("etag"), header("last-modified"));
            if let Some(len) = response.content_length()
                && len as usize > feed.max_payload_bytes
            {
                return Err((
                    "too_large",
                    PayloadError::TooLarge {
                        size: len as usize,
                        limit: feed.max_payload_bytes,
                    }
                    .to_string(),
                ));
            }
            let body = read_limited(response, feed.max_payload_bytes.min(MAX_PAYLOAD_BYTES))?;
            total_bytes += body.len();
            let mut decoded = match feed.kind {
                FeedKind::NgsiLd => decode_ngsi_ld(&body),
                FeedKind::NgsiV2 => decode_ngsi_v2(&body),
                FeedKind::Cap => {
                    match cap_list(&body, &url, feed, client, places, conditional, stop)? {
                        Some(d) => Ok(d),
                        None => super::cap::decode_cap(&body, places),
                    }
                }
                _ => decode_geojson(&body),
            }
            .map_err(|e| {
                let reason = match e {
                    PayloadError::TooLarge { .. } => "too_large",
                    PayloadError::NotJson(_) => "not_json",
                    PayloadError::WrongShape(_) => "wrong_shape",
                };
                (reason, e.to_string())
            })?;
            super::decode::positions_to_wgs84(&mut decoded, feed.coords);
            let items = decoded.updates.len() + decoded.rejects.len();
            // A broker that ignores `offset` answers every page alike: the poll
            // would never end, and never be complete.
            if paged {
                let ids = page_ids(&decoded);
                if !ids.is_empty() && previous_ids.as_ref() == Some(&ids) {
                    break Some((
                        "paging",
                        format!(
                            "page {pages} (offset {offset}) repeats the {} ids of the page before it: the broker ignores offset; the poll stopped there",
                            ids.len()
                        ),
                    ));
                }
                previous_ids = Some(ids);
            }
            if etag.is_some() || last_modified.is_some() {
                seen_pages.insert(
                    offset,
                    PageValidators {
                        etag,
                        last_modified,
                        items,
                        next: next.clone(),
                    },
                );
            }
            let _ = tx.send(FeedEvent::Batch {
                feed: id,
                decoded,
                received_at_ms: unix_ms_now(),
            });
            items
        };
        items_in_poll += items as u64;
        offset += items as u64;
        // Where the next page is: the broker's link, else its count, else a full
        // page says there may be more.
        let more = if !paged {
            false
        } else if let Some(next) = next {
            visited.insert(url.clone());
            if visited.contains(&next) {
                break Some((
                    "paging",
                    format!(
                        "the broker's next page link leads back to a page of this poll ({}); the poll stopped there",
                        crate::http::redact_url(&next)
                    ),
                ));
            }
            next_url = Some(next);
            followed_links = true;
            true
        } else if followed_links {
            false
        } else if let Some(t) = total {
            if offset < t && items == 0 {
                break Some((
                    "paging",
                    format!(
                        "the broker counts {t} results but the page at offset {offset} is empty; the poll stopped there"
                    ),
                ));
            }
            // A full page past the count: the count is behind, read on.
            (offset < t && items > 0) || items >= limit as usize
        } else {
            items >= limit as usize
        };
        if !more {
            break None;
        }
        // The poll's budget: a broker that never ends is stopped, with a reason.
        if pages >= feed.max_pages {
            break Some((
                "over_budget",
                format!(
                    "the poll stopped after {pages} pages (max_pages = {})",
                    feed.max_pages
                ),
            ));
        }
        if items_in_poll >= feed.max_poll_items {
            break Some((
                "over_budget",
                format!(
                    "the poll stopped after {items_in_poll} items (max_poll_items = {})",
                    feed.max_poll_items
                ),
            ));
        }
        if total_bytes as u64 >= feed.max_poll_bytes {
            break Some((
                "over_budget",
                format!(
                    "the poll stopped after {total_bytes} bytes (max_poll_bytes = {})",
                    feed.max_poll_bytes
                ),
            ));
        }
    };
    conditional.pages = seen_pages;
    conditional.total = total;
    if let Some(why) = stopped {
        // What came so far is taken in; the poll is no complete snapshot, so
        // nothing is removed for lacking from it.
        return Err(why);
    }
    let _ = tx.send(FeedEvent::PollOk {
        feed: id,
        at_ms: unix_ms_now(),
        not_modified: all_not_modified,
        complete: !any_not_modified,
        bytes: total_bytes,
    });
    Ok(())
}

/// A CAP feed's list (Atom or RSS) of messages: the messages of new or updated
/// entries are fetched (on the list's own origin, or a host in `redirect_hosts`), the
/// others taken as last read; at most `max_pages` messages a poll. `None`: the
/// payload is one CAP message, not a list.
fn cap_list(
    body: &[u8],
    list_url: &str,
    feed: &FeedConfig,
    client: &reqwest::blocking::Client,
    places: &Gazetteer,
    conditional: &mut Conditional,
    stop: &AtomicBool,
) -> Result<Option<Decoded>, (&'static str, String)> {
    use super::cap_list::{list_kind, read_list};
    use crate::model::{Reject, RejectReason};
    let Ok(text) = super::cap::xml_text(body) else {
        return Ok(None);
    };
    if list_kind(&text).is_none() {
        return Ok(None);
    }
    let entries = read_list(&text, list_url).map_err(|e| ("wrong_shape", e))?;
    let list_origin = url_origin(list_url);
    let mut out = Decoded::default();
    let mut kept = std::collections::HashMap::new();
    let mut fetched = 0u32;
    let mut pending = false;
    let mut seen = std::collections::HashSet::new();
    // Messages are read one after another: a poll spends at most this long on them,
    // and the rest are read at the next poll.
    let budget = Duration::from_secs_f64((feed.timeout_s * 3.0).max(30.0));
    let started = Instant::now();
    for entry in entries {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // The same entry twice, or the list linking to itself: read once, or not.
        if !seen.insert(entry.id.clone()) || entry.link == list_url {
            continue;
        }
        let unreadable = |detail: String| Reject {
            reason: RejectReason::Unreadable,
            item_id: Some(entry.id.clone()),
            path: None,
            detail: crate::http::redact_in_text(&detail),
        };
        if let Some((updated, decoded)) = conditional.cap_entries.remove(&entry.id)
            && updated == entry.updated
        {
            out.updates.extend(decoded.updates.iter().cloned());
            out.withheld.extend(decoded.withheld.iter().cloned());
            kept.insert(entry.id.clone(), (updated, decoded));
            continue;
        }
        let here = url_origin(&entry.link);
        let allowed = here == list_origin
            || here.as_ref().is_some_and(|(scheme, host, _)| {
                (scheme == "https" || list_origin.as_ref().is_some_and(|o| o.0 == "http"))
                    && host
                        .as_ref()
                        .is_some_and(|h| feed.redirect_hosts.iter().any(|r| r == h))
            });
        if !allowed {
            out.rejects.push(unreadable(format!(
                "the message {} is on another host: name it in redirect_hosts to read it",
                crate::http::redact_url(&entry.link)
            )));
            continue;
        }
        if fetched >= feed.max_pages || started.elapsed() >= budget {
            // Read at the next poll (not a fault of the entry).
            pending = true;
            continue;
        }
        fetched += 1;
        let mut request = client
            .get(&entry.link)
            .header("Accept", "application/cap+xml, application/xml");
        for (name, value) in &feed.headers {
            let value = super::config::header_value(value)
                .map_err(|e| ("client", format!("header {name}: {e}")))?;
            request = request.header(name.as_str(), value);
        }
        let message = request
            .send()
            .map_err(|e| describe_reqwest_error(&e).1)
            .and_then(|r| {
                if r.status().is_success() {
                    read_limited(r, feed.max_payload_bytes.min(MAX_PAYLOAD_BYTES)).map_err(|e| e.1)
                } else {
                    Err(format!("HTTP {}", r.status()))
                }
            })
            .and_then(|bytes| super::cap::decode_cap(&bytes, places).map_err(|e| e.to_string()));
        match message {
            Ok(decoded) => {
                out.updates.extend(decoded.updates.iter().cloned());
                out.rejects.extend(decoded.rejects.iter().cloned());
                out.withheld.extend(decoded.withheld.iter().cloned());
                kept.insert(entry.id.clone(), (entry.updated.clone(), decoded));
            }
            Err(e) => out.rejects.push(unreadable(format!(
                "{}: {e}",
                crate::http::redact_url(&entry.link)
            ))),
        }
    }
    conditional.cap_entries = kept;
    conditional.cap_pending = pending;
    Ok(Some(out))
}

fn read_limited(
    response: reqwest::blocking::Response,
    limit: usize,
) -> Result<Vec<u8>, (&'static str, String)> {
    use std::io::Read;
    let mut body = Vec::new();
    let mut limited = response.take(limit as u64 + 1);
    limited.read_to_end(&mut body).map_err(|e| {
        let timeout =
            e.to_string().contains("timed out") || e.kind() == std::io::ErrorKind::TimedOut;
        let reason = if timeout { "timeout" } else { "read_error" };
        (reason, format!("reading the response failed: {e}"))
    })?;
    if body.len() > limit {
        return Err((
            "too_large",
            PayloadError::TooLarge {
                size: body.len(),
                limit,
            }
            .to_string(),
        ));
    }
    Ok(body)
}

pub(super) fn describe_reqwest_error(e: &reqwest::Error) -> (&'static str, String) {
    if e.is_timeout() {
        ("timeout", format!("timed out: {e}"))
    } else if e.is_connect() {
        ("connect", format!("cannot connect: {e}"))
    } else {
        // With its causes: a refused redirect says why only there.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        ("read_error", text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_append_limit_and_offset() {
        assert_eq!(
            page_url(
                "http://h/ngsi-ld/v1/entities?type=Vehicle",
                FeedKind::NgsiLd,
                100,
                200
            ),
            "http://h/ngsi-ld/v1/entities?type=Vehicle&limit=100&offset=200&count=true"
        );
        assert_eq!(
            page_url("http://h/e", FeedKind::NgsiLd, 5, 0),
            "http://h/e?limit=5&offset=0&count=true"
        );
        assert_eq!(
            page_url("http://h/v2/entities", FeedKind::NgsiV2, 5, 0),
            "http://h/v2/entities?limit=5&offset=0&options=count"
        );
        // The feed's own paging parameters give way; a filter mentioning
        // `options=` is left alone.
        assert_eq!(
            page_url(
                "http://h/e?limit=7&count=false&q=options==1",
                FeedKind::NgsiLd,
                5,
                0
            ),
            "http://h/e?q=options==1&limit=5&offset=0&count=true"
        );
        assert_eq!(
            page_url(
                "http://h/v2/entities?options=keyValues&type=T",
                FeedKind::NgsiV2,
                5,
                0
            ),
            "http://h/v2/entities?options=keyValues,count&type=T&limit=5&offset=0"
        );
        assert_eq!(
            link_next(
                r#"<https://x/ld#ctx>; rel="http://www.w3.org/ns/json-ld#context", </ngsi-ld/v1/entities?cursor=b2>; rel="next""#,
                "http://h:1/ngsi-ld/v1/entities?limit=5"
            )
            .as_deref(),
            Some("http://h:1/ngsi-ld/v1/entities?cursor=b2")
        );
    }

    /// How a test broker pages: what real brokers do that a naive client gets wrong.
    #[derive(Clone, Copy, Debug)]
    enum Broker {
        /// Serves at most this many per page whatever `limit` asks, with the count.
        Caps(usize),
        /// Answers every page with the same first items (ignores `offset`).
        IgnoresOffset,
        /// 400 for a `limit` above this.
        RefusesLimitAbove(usize),
        /// Pages by cursor in `Link: <…>; rel="next"`, 10 a page, ignoring offset.
        LinkNext,
        /// Never ends: full pages of new ids, a huge count.
        Endless,
        /// Two pages whose `rel="next"` links point at each other.
        LinkCycle,
        /// Counts fewer results than it serves.
        Undercounts(usize),
        /// A next link to another port of the same host.
        LinkElsewhere,
    }

    fn broker(kind: Broker, total: usize) -> (String, Arc<AtomicBool>) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!(
            "http://{}/ngsi-ld/v1/entities",
            server.server_addr().to_ip().unwrap()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let query = request
                    .url()
                    .split_once('?')
                    .map_or("", |(_, q)| q)
                    .to_string();
                let param = |name: &str| -> Option<usize> {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .and_then(|v| v.parse().ok())
                };
                let (offset, limit) = (param("offset").unwrap_or(0), param("limit").unwrap_or(20));
                let counted = query.split('&').any(|kv| kv == "count=true");
                let (range, count, link) = match kind {
                    Broker::Caps(cap) => {
                        (offset..(offset + limit.min(cap)).min(total), total, None)
                    }
                    Broker::IgnoresOffset => (0..limit.min(total), total, None),
                    Broker::RefusesLimitAbove(max) if limit > max => {
                        let _ = request.respond(
                            tiny_http::Response::from_string(
                                r#"{"type":"https://uri.etsi.org/ngsi-ld/errors/BadRequestData","title":"limit too large"}"#,
                            )
                            .with_status_code(400),
                        );
                        continue;
                    }
                    Broker::RefusesLimitAbove(_) => {
                        (offset..(offset + limit).min(total), total, None)
                    }
                    Broker::LinkNext => {
                        let page = param("cursor").unwrap_or(0);
                        let start = page * 10;
                        let next = (start + 10 < total).then(|| {
                            format!("</ngsi-ld/v1/entities?cursor={}>; rel=\"next\"", page + 1)
                        });
                        (start..(start + 10).min(total), total, next)
                    }
                    Broker::Endless => (offset..offset + limit, usize::MAX / 2, None),
                    Broker::Undercounts(said) => (offset..(offset + limit).min(total), said, None),
                    Broker::LinkElsewhere => (
                        0..10,
                        total,
                        Some("<http://127.0.0.1:9/steal>; rel=\"next\"".to_string()),
                    ),
                    Broker::LinkCycle => {
                        let page = param("cursor").unwrap_or(0);
                        let next = format!(
                            "</ngsi-ld/v1/entities?cursor={}>; rel=\"next\"",
                            1 - page.min(1)
                        );
                        (page * 10..page * 10 + 10, total, Some(next))
                    }
                };
                let entities: Vec<String> = range
                    .map(|i| {
                        format!(
                            r#"{{"id":"urn:ngsi-ld:Sensor:{i}","type":"Sensor","location":{{"type":"GeoProperty","value":{{"type":"Point","coordinates":[24.94,60.17]}}}},"reading":{{"type":"Property","value":{i}}}}}"#
                        )
                    })
                    .collect();
                let mut response =
                    tiny_http::Response::from_string(format!("[{}]", entities.join(",")))
                        .with_header(
                            tiny_http::Header::from_bytes("Content-Type", "application/json")
                                .unwrap(),
                        );
                if counted {
                    response = response.with_header(
                        tiny_http::Header::from_bytes("NGSILD-Results-Count", count.to_string())
                            .unwrap(),
                    );
                }
                if let Some(link) = link {
                    response =
                        response.with_header(tiny_http::Header::from_bytes("Link", link).unwrap());
                }
                let _ = request.respond(response);
            }
        });
        (base, stop)
    }

    /// One poll of a feed on a broker that pages as `kind` does, stopped after.
    fn poll_broker(
        kind: Broker,
        total: usize,
        extra: &str,
    ) -> (
        std::collections::HashSet<String>,
        Result<bool, (String, String)>,
    ) {
        let (base, stop) = broker(kind, total);
        let polled = one_poll(&base, extra);
        stop.store(true, Ordering::Relaxed);
        polled
    }

    /// One poll of a feed on `base`: the ids it took in, and how it ended.
    fn one_poll(
        base: &str,
        extra: &str,
    ) -> (
        std::collections::HashSet<String>,
        Result<bool, (String, String)>,
    ) {
        let feeds = super::super::config::parse_feeds(&format!(
            "[[feed]]\nname='sensors'\nkind='ngsi-ld'\nurl='{base}'\ndomain='ecology'\ninterval_s=30\n{extra}"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let mut ids = std::collections::HashSet::new();
        let until = Instant::now() + Duration::from_secs(20);
        let end = loop {
            assert!(Instant::now() < until, "the poll never ended");
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => {
                    ids.extend(decoded.updates.into_iter().map(|u| u.id));
                }
                Ok(FeedEvent::PollOk { complete, .. }) => break Ok(complete),
                Ok(FeedEvent::PollFailed { reason, error, .. }) => {
                    break Err((reason.to_string(), error));
                }
                Ok(FeedEvent::Refused { .. }) | Err(_) => {}
            }
        };
        pollers.stop();
        (ids, end)
    }

    #[test]
    fn a_broker_that_serves_fewer_per_page_than_asked_loses_nothing() {
        let (ids, end) = poll_broker(Broker::Caps(30), 250, "page_size=100\n");
        assert_eq!(end, Ok(true));
        assert_eq!(ids.len(), 250, "every entity, not the first short page");
    }

    #[test]
    fn a_broker_that_ignores_offset_ends_the_poll_with_a_reason() {
        let (ids, end) = poll_broker(Broker::IgnoresOffset, 100_000, "page_size=100\n");
        let (reason, error) = end.unwrap_err();
        assert_eq!(reason, "paging");
        assert!(error.contains("ignores offset"), "{error}");
        // The first page was taken in, once.
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn a_broker_that_refuses_a_large_limit_is_asked_again_smaller() {
        let (ids, end) = poll_broker(Broker::RefusesLimitAbove(50), 120, "page_size=1000\n");
        assert_eq!(end, Ok(true));
        assert_eq!(ids.len(), 120);
    }

    #[test]
    fn a_broker_that_pages_by_link_next_is_followed_to_the_end() {
        let (ids, end) = poll_broker(Broker::LinkNext, 35, "page_size=10\n");
        assert_eq!(end, Ok(true));
        assert_eq!(ids.len(), 35);
    }

    #[test]
    fn a_broker_that_counts_fewer_than_it_serves_is_read_to_the_end() {
        let (ids, end) = poll_broker(Broker::Undercounts(20), 50, "page_size=10\n");
        assert_eq!(end, Ok(true));
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn a_next_link_to_another_port_is_not_followed() {
        let (ids, end) = poll_broker(
            Broker::LinkElsewhere,
            100,
            "page_size=10\nheaders = { Authorization = 'Bearer s3cret' }\n",
        );
        let (reason, error) = end.unwrap_err();
        assert_eq!(reason, "paging");
        assert!(error.contains("elsewhere"), "{error}");
        assert!(ids.is_empty() || ids.len() == 10);
    }

    #[test]
    fn next_links_that_go_round_in_a_circle_end_the_poll() {
        let (ids, end) = poll_broker(Broker::LinkCycle, 1000, "page_size=10\n");
        let (reason, error) = end.unwrap_err();
        assert_eq!(reason, "paging");
        assert!(error.contains("leads back"), "{error}");
        assert_eq!(ids.len(), 20);
    }

    #[test]
    fn a_poll_stops_at_its_budget_with_a_reason() {
        let (base, stop) = broker(Broker::Endless, 0);
        let (ids, end) = one_poll(&base, "page_size=100\nmax_poll_items=500\n");
        let (pages_ids, pages_end) = one_poll(&base, "page_size=100\nmax_pages=3\n");
        stop.store(true, Ordering::Relaxed);
        let (reason, error) = end.unwrap_err();
        assert_eq!(reason, "over_budget");
        assert!(error.contains("max_poll_items = 500"), "{error}");
        assert_eq!(ids.len(), 500);
        let (reason, error) = pages_end.unwrap_err();
        assert_eq!(reason, "over_budget");
        assert!(error.contains("max_pages = 3"), "{error}");
        assert_eq!(pages_ids.len(), 300);
    }

    /// A feed with `coords = "gcj02"` hands on WGS84 positions: GCJ-02 points of the
    /// published pairs in googollee/eviltransform's tests land within a metre of their
    /// WGS84 positions, before anything downstream sees them.
    #[test]
    fn a_gcj02_feed_is_decoded_to_wgs84_positions() {
        // (wgs lat, wgs lon, gcj lat, gcj lon): Shanghai, Shenzhen, Beijing.
        let pairs: [(f64, f64, f64, f64); 3] = [
            (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),
            (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),
            (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),
        ];
        let features: Vec<String> = pairs
            .iter()
            .enumerate()
            .map(|(i, (_, _, lat, lon))| {
                format!(
                    r#"{{"type":"Feature","id":"p{i}","properties":{{"name":"p{i}"}},"geometry":{{"type":"Point","coordinates":[{lon},{lat}]}}}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"type":"FeatureCollection","features":[{}]}}"#,
            features.join(",")
        );
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                    let _ = request.respond(tiny_http::Response::from_string(body.clone()));
                }
            }
        });
        let feeds = super::super::config::parse_feeds(&format!(
            "[[feed]]\nname='amap'\nkind='geojson'\nurl='{base}/points'\ndomain='urban'\ncoords='gcj02'\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let until = Instant::now() + Duration::from_secs(10);
        let decoded = loop {
            assert!(Instant::now() < until, "no batch");
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => break decoded,
                Ok(FeedEvent::PollFailed { error, .. }) => panic!("{error}"),
                _ => {}
            }
        };
        pollers.stop();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(decoded.updates.len(), 3);
        for (i, &(lat, lon, _, _)) in pairs.iter().enumerate() {
            let u = decoded
                .updates
                .iter()
                .find(|u| u.id == format!("p{i}"))
                .unwrap();
            let [got_lon, got_lat] = u.position.unwrap();
            let dx = (got_lon - lon).to_radians() * 6_378_137.0 * lat.to_radians().cos();
            let dy = (got_lat - lat).to_radians() * 6_378_137.0;
            assert!(
                dx.hypot(dy) < 1.0,
                "p{i}: {got_lon},{got_lat} vs {lon},{lat}"
            );
        }
    }

    /// An Atom list of CAP messages: each linked message is read once until its
    /// entry changes, every poll brings every alert, a link to another host is not
    /// followed.
    #[test]
    fn a_cap_feed_reads_the_messages_an_atom_list_links_to_once_each() {
        use std::sync::Mutex;
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let flood = std::fs::read_to_string(data.join("helsinki-flood-alert.xml")).unwrap();
        let fire = std::fs::read_to_string(data.join("kallio-building-fire.xml")).unwrap();
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!("http://{}", server.server_addr().to_ip().unwrap());
        let fetched: Arc<Mutex<Vec<String>>> = Arc::default();
        let updated = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (f2, u2, s2) = (fetched.clone(), updated.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let url = request.url().to_string();
                let body = match url.as_str() {
                    "/alerts.atom" => format!(
                        r#"<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">
<entry><id>flood</id><updated>v{}</updated><link href="/cap/flood.xml" type="application/cap+xml"/></entry>
<entry><id>fire</id><updated>v1</updated><link href="/cap/fire.xml" type="application/cap+xml"/></entry>
<entry><id>elsewhere</id><updated>v1</updated><link href="http://198.51.100.7/x.xml" type="application/cap+xml"/></entry>
</feed>"#,
                        u2.load(Ordering::Relaxed)
                    ),
                    "/cap/flood.xml" => flood.clone(),
                    "/cap/fire.xml" => fire.clone(),
                    _ => String::new(),
                };
                if url.starts_with("/cap/") {
                    f2.lock().unwrap().push(url);
                }
                let _ = request.respond(tiny_http::Response::from_string(body));
            }
        });
        let feeds = super::super::config::parse_feeds(&format!(
            "[[feed]]\nname='warnings'\nkind='cap'\nurl='{base}/alerts.atom'\ndomain='safety'\ninterval_s=0.2\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let mut polls: Vec<(usize, Vec<String>)> = Vec::new();
        let mut current = (0usize, Vec::new());
        let until = Instant::now() + Duration::from_secs(10);
        while polls.len() < 5 && Instant::now() < until {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => {
                    current.0 += decoded.updates.len();
                    current
                        .1
                        .extend(decoded.rejects.iter().map(|r| r.detail.clone()));
                }
                Ok(FeedEvent::PollOk { .. }) => {
                    polls.push(std::mem::take(&mut current));
                    if polls.len() == 3 {
                        // The flood warning is updated.
                        updated.store(2, Ordering::Relaxed);
                    }
                }
                Ok(FeedEvent::PollFailed { error, .. }) => panic!("{error}"),
                Ok(FeedEvent::Refused { .. }) | Err(_) => {}
            }
        }
        pollers.stop();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(polls.len(), 5, "{polls:?}");
        for (alerts, rejects) in &polls {
            assert!(*alerts >= 2, "every poll brings both alerts: {polls:?}");
            assert_eq!(rejects.len(), 1, "{rejects:?}");
            assert!(rejects[0].contains("another host"), "{rejects:?}");
        }
        let fetched = fetched.lock().unwrap().clone();
        let count = |path: &str| fetched.iter().filter(|f| *f == path).count();
        assert_eq!(count("/cap/fire.xml"), 1, "{fetched:?}");
        assert_eq!(
            count("/cap/flood.xml"),
            2,
            "read again once updated: {fetched:?}"
        );
    }

    /// 25 entities in pages of 10: the first page never changes (and answers 304
    /// once its ETag is known), the entities on the later pages change every poll.
    #[test]
    fn a_304_on_the_first_page_does_not_freeze_the_later_pages() {
        use std::sync::atomic::AtomicU64;
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let base = format!(
            "http://{}/ngsi-ld/v1/entities",
            server.server_addr().to_ip().unwrap()
        );
        let polls = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (polls2, stop2) = (polls.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let query = request
                    .url()
                    .split_once('?')
                    .map_or("", |(_, q)| q)
                    .to_string();
                let offset: usize = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("offset="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if offset == 0 {
                    polls2.fetch_add(1, Ordering::Relaxed);
                }
                let round = polls2.load(Ordering::Relaxed);
                let entities: Vec<String> = (offset..(offset + 10).min(25))
                    .map(|i| {
                        // Page 0 is fixed; later pages carry the poll number.
                        let value = if i < 10 { 1 } else { round };
                        format!(
                            r#"{{"id":"urn:ngsi-ld:Sensor:{i}","type":"Sensor","location":{{"type":"GeoProperty","value":{{"type":"Point","coordinates":[24.94,60.17]}}}},"reading":{{"type":"Property","value":{value}}}}}"#
                        )
                    })
                    .collect();
                let body = format!("[{}]", entities.join(","));
                let etag = format!("\"{offset}-{}\"", if offset == 0 { 1 } else { round });
                let fresh = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("If-None-Match"))
                    .is_none_or(|h| h.value.as_str() != etag);
                let response = if fresh {
                    tiny_http::Response::from_string(body)
                        .with_header(tiny_http::Header::from_bytes("ETag", etag.as_str()).unwrap())
                        .with_header(
                            tiny_http::Header::from_bytes("Content-Type", "application/json")
                                .unwrap(),
                        )
                } else {
                    tiny_http::Response::from_string("").with_status_code(304)
                };
                let _ = request.respond(response);
            }
        });
        let feeds = super::super::config::parse_feeds(&format!(
            "[[feed]]\nname='sensors'\nkind='ngsi-ld'\nurl='{base}'\ndomain='ecology'\ninterval_s=0.1\npage_size=10\n"
        ))
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let pollers = Pollers::start(&feeds, Default::default(), tx);
        let mut latest_20 = None;
        let mut oks = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && oks.len() < 4 {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(FeedEvent::Batch { decoded, .. }) => {
                    for u in &decoded.updates {
                        if u.id == "urn:ngsi-ld:Sensor:20" {
                            latest_20 = u.fields.get("reading").cloned();
                        }
                    }
                }
                Ok(FeedEvent::PollOk { not_modified, .. }) => oks.push(not_modified),
                Ok(FeedEvent::PollFailed { error, .. }) => panic!("{error}"),
                Ok(FeedEvent::Refused { .. }) | Err(_) => {}
            }
        }
        pollers.stop();
        stop.store(true, Ordering::Relaxed);
        assert!(oks.len() >= 4, "{oks:?}");
        // Later polls saw page 0 unchanged but still read the changed pages.
        assert!(
            oks.iter().all(|n| !n),
            "pages changed in every poll: {oks:?}"
        );
        let seen = latest_20.expect("entity 20 was read");
        // Read in the fourth poll, before its end was reported.
        assert_eq!(
            seen,
            crate::feeds::FieldValue::Number(oks.len() as f64),
            "entity 20 follows the polls ({} served)",
            polls.load(Ordering::Relaxed)
        );
    }

    /// Credentials from a secrets file in a header, and redirects only where allowed.
    #[test]
    fn headers_come_from_secrets_and_redirects_stay_on_the_feed_host() {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let auth = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().to_string());
                let response = if request.url().starts_with("/moved") {
                    tiny_http::Response::from_string("")
                        .with_status_code(307)
                        .with_header(
                            tiny_http::Header::from_bytes(
                                "Location",
                                format!("http://localhost:{port}/public"),
                            )
                            .unwrap(),
                        )
                } else if !request.url().starts_with("/public")
                    && auth.as_deref() != Some("Bearer s3cret-from-file")
                {
                    tiny_http::Response::from_string("{}").with_status_code(401)
                } else {
                    tiny_http::Response::from_string(
                        r#"{"type":"FeatureCollection","features":[{"type":"Feature","id":"h1","geometry":{"type":"Point","coordinates":[24.94,60.17]},"properties":{"type":"FireHydrant"}}]}"#,
                    )
                };
                let _ = request.respond(response);
            }
        });
        let dir = std::env::temp_dir().join(format!("zhongshu-feed-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("auth");
        std::fs::write(&secret, "Bearer s3cret-from-file\n").unwrap();
        let run = |path: &str, extra: &str| -> Vec<Result<usize, String>> {
            let feeds = super::super::config::parse_feeds(&format!(
                "[[feed]]\nname='hydrants'\nkind='geojson'\nurl='http://127.0.0.1:{port}{path}'\ndomain='urban'\ninterval_s=0.2\nheaders={{ Authorization = 'file:{}' }}\n{extra}",
                secret.display()
            ))
            .unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let pollers = Pollers::start(&feeds, Default::default(), tx);
            let mut seen = Vec::new();
            let until = Instant::now() + Duration::from_secs(5);
            while seen.is_empty() && Instant::now() < until {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(FeedEvent::Batch { decoded, .. }) => seen.push(Ok(decoded.updates.len())),
                    Ok(FeedEvent::PollFailed { error, .. }) => seen.push(Err(error)),
                    _ => {}
                }
            }
            pollers.stop();
            seen
        };
        assert_eq!(run("/data", ""), vec![Ok(1)]);
        let refused = run("/moved", "");
        assert!(
            matches!(&refused[0], Err(e) if e.contains("another host")),
            "{refused:?}"
        );
        // Allowed to a named host (which, being another host, does not get the
        // credentials: the client drops them on the way).
        assert_eq!(run("/moved", "redirect_hosts = ['localhost']"), vec![Ok(1)]);
        stop.store(true, Ordering::Relaxed);
    }
}
