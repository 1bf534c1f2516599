//! The HTTP/1.1 server behind every endpoint Zhongshu serves (the department status
//! API, the department simulator, the simulated sub-brains), hardened so one client
//! cannot take it down: header and body size limits checked before anything is
//! buffered (a declared `Content-Length` over the limit is answered 413 and the
//! connection closed, never drained), read timeouts for headers and bodies, a bound
//! on open connections (more are shed with 503 at once), a rate per client (its
//! credential, or its address when it has none or a wrong one: 429 with
//! `Retry-After`, in bounded memory), credentials checked from the headers before
//! the body is read (an endpoint's [`Gate`]), refusals counted by why for the
//! endpoint's health ([`Server::refused`]), and handlers on a bounded pool of
//! threads. It runs on its own small tokio runtime; handlers are plain blocking
//! functions from [`Request`] to [`Response`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};

pub use hyper::Method;

/// What one server accepts.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Request line and headers together (at least 8 KiB).
    pub max_header_bytes: usize,
    /// Request body.
    pub max_body_bytes: usize,
    /// Time to send the headers, and again the body, of one request.
    pub read_timeout: Duration,
    /// Longest a connection may stay open, however busy (clients reconnect).
    pub connection_lifetime: Duration,
    /// Connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Requests being handled at once (threads); more wait their turn.
    pub max_handlers: usize,
    /// Requests one client may make: a credential the endpoint's [`Gate`] knows, else
    /// an address (an IPv6 one by its /64). Over it: 429 with `Retry-After`.
    pub rate: Rate,
    /// Clients tracked for `rate` at once, credentials and addresses each; new ones
    /// beyond it share one allowance, so a flood of distinct addresses or tokens
    /// never grows memory.
    pub max_tracked_clients: usize,
}

/// A token bucket: `burst` requests at once, refilled at `per_s` a second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_s: f64,
    pub burst: u32,
}

impl Rate {
    /// `per_s` a second, bursts of four seconds' worth (at least one request).
    pub fn per_second(per_s: f64) -> Self {
        Self {
            per_s,
            burst: (per_s * 4.0).ceil().clamp(1.0, u32::MAX as f64) as u32,
        }
    }

    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_s: f64::INFINITY,
        burst: u32::MAX,
    };
}

impl Default for Rate {
    /// 50 requests a second, 200 at once: far above what a department or an agency
    /// sends, far below what a flood does.
    fn default() -> Self {
        Rate {
            per_s: 50.0,
            burst: 200,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            read_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
            max_connections: 512,
            max_handlers: 16,
            rate: Rate::default(),
            max_tracked_clients: 4096,
        }
    }
}

/// A request, fully read and within the limits.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// Path and query, as sent.
    pub target: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
    /// Who the endpoint's [`Gate`] found the credentials to be ([`Caller::Known`]).
    pub caller: Option<String>,
}

impl Request {
    /// The path and query, as sent.
    pub fn url(&self) -> &str {
        &self.target
    }

    /// A header's value as text (the first of that name), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string())
    }
}

/// An answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: &Value) -> Self {
        Self::new(status, "application/json", body.to_string())
    }

    /// `{"error": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self::json(status, &json!({"error": code, "message": message.into()}))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A bearer token's SHA-256, the form tokens are kept and compared in.
pub fn token_digest(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without stopping at the first difference.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What serves requests.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Who a request comes from, as its endpoint's [`Gate`] reads the headers.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// A credential the endpoint knows, named (a department, an agency): rated per
    /// name, and passed to the handler as [`Request::caller`].
    Known(String),
    /// [`Caller::Known`] with a rate of its own, which the gate keeps (an open-data
    /// client's, from a keys file read again when it changes) instead of
    /// [`Limits::rate`].
    Rated(String, Rate),
    /// No credential, where none is needed: rated per address.
    Anonymous,
    /// [`Caller::Anonymous`] at this rate per address (the gate's, as above).
    AnonymousRated(Rate),
    /// Answered with this at once, the body never read, the connection closed (a
    /// wrong or missing credential); rated per address, so guessing is slow.
    Refused(Response),
}

/// One request as it was answered, for an access log ([`Server::start_observed`]).
#[derive(Debug)]
pub struct Served<'a> {
    pub method: &'a Method,
    /// Path and query, as sent.
    pub target: &'a str,
    pub peer: SocketAddr,
    /// Who the endpoint's [`Gate`] found the credentials to be; `None` for anonymous
    /// and refused requests.
    pub caller: Option<&'a str>,
    /// The gate refused the credentials (answered with its refusal, or 429 for
    /// guessing too fast).
    pub refused: bool,
    pub status: u16,
    /// Bytes of the answer's body.
    pub bytes: usize,
    /// From the head read to the answer made.
    pub duration: Duration,
}

/// Whom [`answer_one`] answered: the caller the gate found (none for anonymous or
/// a request refused before the gate), or credentials the gate refused.
enum Answered {
    Caller(Option<String>),
    Refused,
}

/// Hears of every request answered, refusals (401, 413, 429, ...) included; runs on
/// the server's own threads, so keep it cheap (hand the line to a writer thread).
pub type Observer = Arc<dyn Fn(&Served) + Send + Sync>;

/// Reads a request's head (its body is empty when called) and says who sent it.
/// Runs before the body is read, on the server's own threads: keep it cheap.
pub type Gate = Arc<dyn Fn(&Request) -> Caller + Send + Sync>;

/// Why requests were refused, as [`Server::refused`] counts them.
pub const REFUSALS: [&str; 6] = [
    "unauthorized",
    "rate_limited",
    "too_large",
    "timeout",
    "overloaded",
    "bad_request",
];

/// Refusals by why (an index into [`REFUSALS`]).
#[derive(Default)]
struct Refusals([AtomicU64; REFUSALS.len()]);

impl Refusals {
    fn count(&self, why: &str) {
        if let Some(i) = REFUSALS.iter().position(|w| *w == why) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an answer by its status: the refusals a handler makes count too.
    fn count_status(&self, status: u16) {
        match status {
            401 | 403 => self.count("unauthorized"),
            408 => self.count("timeout"),
            413 | 431 => self.count("too_large"),
            429 => self.count("rate_limited"),
            _ => {}
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        REFUSALS
            .iter()
            .zip(&self.0)
            .map(|(why, n)| (why.to_string(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Who a rate is kept for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Client {
    Caller(String),
    Address(IpAddr),
}

impl Client {
    /// An IPv6 client by its /64 (one machine commonly holds a whole one).
    fn address(ip: IpAddr) -> Client {
        Client::Address(match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut o = v6.octets();
                    o[8..].fill(0);
                    IpAddr::V6(o.into())
                }
            },
            v4 => v4,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate it was last taken from at (a gate may give each caller its own, and
    /// change it): what it refills at when swept.
    rate: Rate,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(rate.burst),
            at: now,
            rate,
        }
    }

    /// Takes one request, or says how long until one is allowed.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.rate = rate;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_s).min(f64::from(rate.burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((1.0 - self.tokens) / rate.per_s).max(0.0),
            ))
        }
    }

    /// Refilled to the brim by `now`: it holds nothing worth keeping.
    fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * rate.per_s >= f64::from(rate.burst)
    }
}

/// Buckets of one kind of client, at most `max` of them; new clients beyond it share
/// `overflow`.
struct Buckets {
    map: HashMap<Client, Bucket>,
    overflow: Bucket,
    last_sweep: Instant,
}

/// A token bucket per client, in bounded memory.
struct RateLimiter {
    rate: Rate,
    max: usize,
    callers: Mutex<Buckets>,
    addresses: Mutex<Buckets>,
}

impl RateLimiter {
    fn new(rate: Rate, max: usize) -> RateLimiter {
        let now = Instant::now();
        let buckets = || {
            Mutex::new(Buckets {
                map: HashMap::new(),
                overflow: Bucket::full(rate, now),
                last_sweep: now,
            })
        };
        RateLimiter {
            rate,
            max: max.max(1),
            callers: buckets(),
            addresses: buckets(),
        }
    }

    fn admit(&self, client: Client, now: Instant) -> Result<(), Duration> {
        self.admit_at(client, self.rate, now)
    }

    /// [`Self::admit`] at a rate the caller gives.
    fn admit_at(&self, client: Client, rate: Rate, now: Instant) -> Result<(), Duration> {
        if !rate.per_s.is_finite() {
            return Ok(());
        }
        if rate.per_s <= 0.0 || rate.burst == 0 {
            return Err(Duration::from_secs(60));
        }
        let table = match client {
            Client::Caller(_) => &self.callers,
            Client::Address(_) => &self.addresses,
        };
        let mut table = table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = table.map.get_mut(&client) {
            return bucket.take(rate, now);
        }
        // Full: forget the clients whose buckets have refilled (at most every 50 ms,
        // so a flood of new clients does not sweep on every request).
        if table.map.len() >= self.max
            && now.saturating_duration_since(table.last_sweep) >= Duration::from_millis(50)
        {
            table.last_sweep = now;
            table.map.retain(|_, b| !b.is_full(b.rate, now));
        }
        if table.map.len() >= self.max {
            return table.overflow.take(rate, now);
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(rate, now);
        table.map.insert(client, bucket);
        taken
    }

    fn tracked(&self) -> usize {
        [&self.callers, &self.addresses]
            .iter()
            .map(|t| t.lock().map_or(0, |t| t.map.len()))
            .sum()
    }
}

/// 429, saying when to come back.
fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    Response::error(
        429,
        "rate_limited",
        format!("too many requests; try again in {secs} s"),
    )
    .with_header("Retry-After", secs.to_string())
}

/// What every connection of one server shares.
struct Shared {
    limits: Limits,
    handler: Handler,
    gate: Option<Gate>,
    observer: Option<Observer>,
    limiter: RateLimiter,
    refused: Refusals,
}

impl Shared {
    /// The answer in hyper's terms, counted if it is a refusal.
    fn answer(&self, response: Response, close: bool) -> hyper::Response<Full<Bytes>> {
        self.refused.count_status(response.status);
        to_hyper(response, close)
    }
}

/// A builder of blocking HTTP clients. TLS is rustls with ring, installed here as the
/// process's provider (the one rustls provider built in), so every client, server
/// and broker connection uses the same one.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    install_tls_provider();
    reqwest::blocking::Client::builder()
}

/// A blocking HTTP client with reqwest's defaults (see [`client_builder`]).
pub fn client() -> reqwest::blocking::Client {
    client_builder()
        .build()
        .expect("an HTTP client with default settings")
}

/// Installs ring as the process's rustls provider, once; later calls do nothing.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is already installed, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TLS for a server: a certificate chain and its private key (PEM files).
#[derive(Clone)]
pub struct Tls(Arc<rustls::ServerConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls(..)")
    }
}

impl Tls {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("certificate {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate {}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "certificate {}: no certificate in it",
                cert.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("private key {}: {e}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key do not make a TLS identity: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(Arc::new(config)))
    }
}

/// A running server; dropping it (or [`Server::stop`]) stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Server {
    /// Listens on `addr` (`127.0.0.1:0` picks a free port: see [`Server::addr`]) and
    /// serves `handler` on a runtime of its own, named `name` in thread lists.
    pub fn start(
        addr: &str,
        name: &str,
        limits: Limits,
        handler: Handler,
    ) -> std::io::Result<Server> {
        Self::start_tls(addr, name, limits, handler, None)
    }

    /// As [`Server::start`], over TLS when `tls` is given (HTTPS only: a plain HTTP
    /// request is refused by the handshake).
    pub fn start_tls(
        addr: &str,
        name: &str,
        limits: Limits,
        handler: Handler,
        tls: Option<Tls>,
    ) -> std::io::Result<Server> {
        Self::start_gated(addr, name, limits, None, handler, tls)
    }

    /// As [`Server::start_tls`], with `gate` reading each request's credentials from
    /// its headers before the body is read (see [`Caller`]).
    pub fn start_gated(
        addr: &str,
        name: &str,
        limits: Limits,
        gate: Option<Gate>,
        handler: Handler,
        tls: Option<Tls>,
    ) -> std::io::Result<Server> {
        Self::start_observed(addr, name, limits, gate, handler, tls, None)
    }

    /// As [`Server::start_gated`], telling `observer` of every request answered.
    pub fn start_observed(
        addr: &str,
        name: &str,
        limits: Limits,
        gate: Option<Gate>,
        handler: Handler,
        tls: Option<Tls>,
        observer: Option<Observer>,
    ) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let bound = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(limits.max_handlers.max(1))
            .thread_name(format!("{name} http"))
            .enable_io()
            .enable_time()
            .build()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let shared = Arc::new(Shared {
            limiter: RateLimiter::new(limits.rate, limits.max_tracked_clients),
            limits,
            handler,
            gate,
            observer,
            refused: Refusals::default(),
        });
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name} accept"))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, serving, tls, flag));
                // Connections still open end with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
            shared,
        })
    }

    /// Requests refused so far, by why (one of [`REFUSALS`]; only those that
    /// happened): wrong credentials, over the rate, too large, too slow, over the
    /// bound on connections, not HTTP.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.shared.refused.snapshot()
    }

    /// Clients whose rates are being tracked.
    pub fn tracked_clients(&self) -> usize {
        self.shared.limiter.tracked()
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process ends (for the command-line servers).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops accepting, ends open connections and waits for the server's threads.
    pub fn stop(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<Tls>,
    stop: Arc<AtomicBool>,
) {
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.0));
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(
        shared.limits.max_connections.max(1),
    ));
    while !stop.load(Ordering::Relaxed) {
        let accepted =
            match tokio::time::timeout(Duration::from_millis(100), listener.accept()).await {
                Ok(Ok((stream, peer))) => (stream, peer),
                // Out of file descriptors and the like: breathe, then go on.
                Ok(Err(_)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => continue,
            };
        let (stream, peer) = accepted;
        let _ = stream.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            shared.refused.count("overloaded");
            tokio::spawn(shed(stream));
            continue;
        };
        let (shared, acceptor) = (shared.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let limits = &shared.limits;
            let service_shared = shared.clone();
            let service = hyper::service::service_fn(move |request| {
                serve_one(request, peer, service_shared.clone())
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            let served = match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::time::timeout(limits.connection_lifetime, connection).await
                }
                Some(acceptor) => {
                    // The handshake has the same time as the headers.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.read_timeout, acceptor.accept(stream)).await
                    else {
                        shared.refused.count("bad_request");
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::time::timeout(limits.connection_lifetime, connection).await
                }
            };
            // What hyper refused on its own: slow or oversized headers, not HTTP.
            if let Ok(Err(e)) = served {
                if e.is_timeout() {
                    shared.refused.count("timeout");
                } else if e.is_parse_too_large() {
                    shared.refused.count("too_large");
                } else if e.is_parse() {
                    shared.refused.count("bad_request");
                }
            }
        });
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn shed(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"overloaded","message":"too many connections; try again"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_one(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let Some(observer) = shared.observer.clone() else {
        let (response, close, _) = answer_one(request, peer, &shared).await;
        return Ok(shared.answer(response, close));
    };
    let started = Instant::now();
    let method = request.method().clone();
    let target = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let (response, close, who) = answer_one(request, peer, &shared).await;
    observer(&Served {
        method: &method,
        target: &target,
        peer,
        caller: match &who {
            Answered::Caller(caller) => caller.as_deref(),
            Answered::Refused => None,
        },
        refused: matches!(who, Answered::Refused),
        status: response.status,
        bytes: response.body.len(),
        duration: started.elapsed(),
    });
    Ok(shared.answer(response, close))
}

/// The answer to one request, whether to close the connection after it, and who the
/// gate found the caller to be.
async fn answer_one(
    request: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> (Response, bool, Answered) {
    let limits = &shared.limits;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        Response::error(
            413,
            "too_large",
            format!("the body is larger than {} bytes", limits.max_body_bytes),
        )
    };
    // Refused before a byte of the body is read or buffered; the connection closes.
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return (too_large(), true, Answered::Caller(None));
    }
    let mut request = Request {
        method: parts.method,
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        headers: parts.headers,
        body: Bytes::new(),
        peer,
        caller: None,
    };
    // Credentials from the headers, before the body: a wrong one costs one bucket of
    // the sender's address and no buffering.
    let now = Instant::now();
    let (client, rate) = match shared.gate.as_ref().map(|gate| gate(&request)) {
        None | Some(Caller::Anonymous) => (Client::address(peer.ip()), None),
        Some(Caller::AnonymousRated(rate)) => (Client::address(peer.ip()), Some(rate)),
        Some(Caller::Known(name)) => {
            request.caller = Some(name.clone());
            (Client::Caller(name), None)
        }
        Some(Caller::Rated(name, rate)) => {
            request.caller = Some(name.clone());
            (Client::Caller(name), Some(rate))
        }
        Some(Caller::Refused(refusal)) => {
            let answer = match shared.limiter.admit(Client::address(peer.ip()), now) {
                Ok(()) => refusal,
                Err(wait) => too_many(wait),
            };
            return (answer, true, Answered::Refused);
        }
    };
    let rate = rate.unwrap_or(shared.limiter.rate);
    if let Err(wait) = shared.limiter.admit_at(client, rate, now) {
        return (too_many(wait), true, Answered::Caller(request.caller));
    }
    // The whole body within the read timeout: a client trickling it is cut off.
    let collected = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    request.body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return (too_large(), true, Answered::Caller(None));
        }
        Ok(Err(e)) => {
            shared.refused.count("bad_request");
            return (
                Response::error(400, "bad_body", format!("cannot read the body: {e}")),
                true,
                Answered::Caller(request.caller),
            );
        }
        Err(_) => {
            let timeout = Response::error(
                408,
                "timeout",
                format!(
                    "the body did not arrive within {} s",
                    limits.read_timeout.as_secs()
                ),
            );
            return (timeout, true, Answered::Caller(request.caller));
        }
    };
    let handler = shared.handler.clone();
    let caller = request.caller.clone();
    let response = match tokio::task::spawn_blocking(move || handler(request)).await {
        Ok(r) => r,
        Err(_) => Response::error(500, "internal", "the request could not be handled"),
    };
    (response, false, Answered::Caller(caller))
}

fn to_hyper(response: Response, close: bool) -> hyper::Response<Full<Bytes>> {
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if close {
        builder = builder.header(hyper::header::CONNECTION, "close");
    }
    builder
        .body(Full::new(Bytes::from(response.body)))
        .unwrap_or_else(|_| {
            let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"")));
            *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

/// Query parameters whose values are secrets (compared without case).
const SECRET_PARAMS: [&str; 14] = [
    "apikey",
    "api_key",
    "api-key",
    "key",
    "token",
    "access_token",
    "auth",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "x-api-key",
];

/// Whether a query parameter carries a secret: a known name, or one that says so
/// (`…token…`, `…secret…`, `…signature…`, `…password…`, `…key…`, `…session…`),
/// percent-encoded or not.
fn is_secret_param(name: &str) -> bool {
    let mut decoded = String::with_capacity(name.len());
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = name
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            decoded.push(b as char);
            i += 3;
            continue;
        }
        decoded.push(bytes[i] as char);
        i += 1;
    }
    let name = decoded.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| *s == name)
        || [
            "token",
            "secret",
            "signature",
            "password",
            "passwd",
            "key",
            "session",
            "credential",
        ]
        .iter()
        .any(|w| name.contains(w))
}

/// A URL fit to show, log or publish: credentials (`user:pass@`) and the values of
/// secret query parameters (`apikey`, `token`, ...) are replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    // The authority ends at the first of / ? #.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
    };
    match scheme {
        Some(s) => format!("{s}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

/// `text` with every http(s) URL in it passed through [`redact_url`] (error messages
/// quote the URL they failed on).
pub fn redact_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = ["http://", "https://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..start]);
        let url_len = rest[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | '<'))
            .unwrap_or(rest.len() - start);
        out.push_str(&redact_url(&rest[start..start + url_len]));
        rest = &rest[start + url_len..];
    }
    out.push_str(rest);
    out
}

/// The attacks every server of ours must shrug off, for each server's own tests.
#[cfg(test)]
pub(crate) mod attack {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
        raw_from(None, addr, request)
    }

    /// A connection to `addr` from `from` (any 127.x.y.z reaches loopback), so one
    /// machine can play many clients.
    pub fn connect_from(from: Option<IpAddr>, addr: SocketAddr) -> Option<TcpStream> {
        let Some(from) = from else {
            return TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok();
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .ok()?;
        runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().ok()?;
            socket.bind(SocketAddr::new(from, 0)).ok()?;
            let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr))
                .await
                .ok()?
                .ok()?;
            let stream = stream.into_std().ok()?;
            stream.set_nonblocking(false).ok()?;
            Some(stream)
        })
    }

    /// Sends `request` from `from` and reads the answer to the end.
    pub fn raw_from(from: Option<IpAddr>, addr: SocketAddr, request: &[u8]) -> String {
        let Some(mut s) = connect_from(from, addr) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// How long `GET good_path` takes, asserting it is answered with `want`.
    pub fn timed_get(addr: SocketAddr, good_path: &str, want: u16) -> Duration {
        let t = Instant::now();
        let answer = raw(
            addr,
            format!("GET {good_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with(&format!("HTTP/1.1 {want}")), "{answer}");
        t.elapsed()
    }

    /// A huge declared body without credentials, a huge header, and 300 half-sent
    /// requests held open, on `post_path`; meanwhile and after, `GET good_path`
    /// answers `want` within a second.
    pub fn survives(addr: SocketAddr, post_path: &str, good_path: &str, want: u16) {
        let answer = raw(
            addr,
            format!(
                "POST {post_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let mut big = format!("POST {post_path} HTTP/1.1\r\nHost: x\r\nX-Big: ").into_bytes();
        big.extend(std::iter::repeat_n(b'a', 2_000_000));
        big.extend_from_slice(b"\r\n\r\n");
        let answer = raw(addr, &big);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        let mut held = Vec::new();
        for i in 0..300 {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let half = if i % 2 == 0 {
                    format!("POST {post_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{{")
                } else {
                    format!("POST {post_path} HTTP/1.1\r\nHost")
                };
                let _ = s.write_all(half.as_bytes());
                held.push(s);
            }
        }
        // Well under the 10 s a held connection may take to send its request: the
        // good request is not queued behind them (a generous bound, so a loaded
        // machine does not fail it).
        assert!(timed_get(addr, good_path, want) < Duration::from_secs(5));
        drop(held);
        assert!(timed_get(addr, good_path, want) < Duration::from_secs(5));
    }

    /// Floods `addr` (see [`flood`]: 5 threads, from `from`) while a well-behaved
    /// client makes `good_requests` calls of `good`, each of which must succeed
    /// within `bound`; then checks the flood was refused (a bad or missing token
    /// answered with one of `token_refusals`) and returns its answers.
    pub fn good_requests_land_under_flood(
        addr: SocketAddr,
        post_path: &str,
        from: &[Option<IpAddr>],
        token_refusals: &[&str],
        good_requests: usize,
        bound: Duration,
        mut good: impl FnMut(usize) -> Result<(), String>,
    ) -> BTreeMap<String, BTreeMap<String, u64>> {
        let stop = Arc::new(AtomicBool::new(false));
        let flood = flood(addr, post_path, from, 5, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        let mut slowest = Duration::ZERO;
        for i in 0..good_requests {
            // Spread over a few seconds, so the flood runs all along.
            std::thread::sleep(Duration::from_millis(75));
            let t = Instant::now();
            let result = good(i);
            slowest = slowest.max(t.elapsed());
            if let Err(e) = result {
                stop.store(true, Ordering::Relaxed);
                panic!("good request {i} failed under the flood: {e}");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let seen = flood.join().unwrap();
        assert!(
            slowest < bound,
            "a good request took {slowest:?} under {seen:?}"
        );
        assert_refused(&seen, 100, token_refusals);
        seen
    }

    /// The status line's code of an answer ("" when none came).
    fn status_of(answer: &str) -> String {
        answer
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .unwrap_or("none")
            .to_string()
    }

    /// A flood of bad requests on `post_path` from `threads` threads, each sending as
    /// `from[i % from.len()]`, until `stop`: wrong bearer tokens, no token, garbage
    /// bytes, a huge declared body, a huge header, and clients trickling their headers
    /// or their body a byte at a time. Returns the answers' status codes by kind of
    /// attack ("none" when the server closed without one).
    pub fn flood(
        addr: SocketAddr,
        post_path: &str,
        from: &[Option<IpAddr>],
        threads: usize,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<BTreeMap<String, BTreeMap<String, u64>>> {
        let post_path = post_path.to_string();
        let from = from.to_vec();
        std::thread::spawn(move || {
            let seen = Arc::new(Mutex::new(BTreeMap::<String, BTreeMap<String, u64>>::new()));
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let (stop, seen, post_path) = (stop.clone(), seen.clone(), post_path.clone());
                    let from = from[t % from.len().max(1)];
                    std::thread::spawn(move || {
                        let mut i = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            i += 1;
                            let (kind, answer) =
                                one_attack(addr, from, &post_path, (t, threads), i);
                            let mut seen = seen.lock().unwrap();
                            *seen
                                .entry(kind.to_string())
                                .or_default()
                                .entry(status_of(&answer))
                                .or_default() += 1;
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.join();
            }
            Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
        })
    }

    fn one_attack(
        addr: SocketAddr,
        from: Option<IpAddr>,
        post_path: &str,
        (thread, threads): (usize, usize),
        i: u64,
    ) -> (&'static str, String) {
        let body = r#"{"status":"done","by":"mallory"}"#;
        // The last thread trickles; the others send the quick attacks in turn.
        let kind = if thread + 1 == threads {
            6
        } else {
            (thread as u64 + i) % 6
        };
        match kind {
            0 | 1 => (
                "wrong_token",
                raw_from(
                    from,
                    addr,
                    format!(
                        "POST {post_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess-{thread}-{i}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                ),
            ),
            2 => (
                "no_token",
                raw_from(
                    from,
                    addr,
                    format!(
                        "POST {post_path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                ),
            ),
            3 => {
                let garbage: Vec<u8> = (0..512u64)
                    .map(|k| ((k * 7919 + i * 31) % 251) as u8)
                    .collect();
                ("garbage", raw_from(from, addr, &garbage))
            }
            4 => (
                "oversized",
                raw_from(
                    from,
                    addr,
                    format!(
                        "POST {post_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess\r\nContent-Length: 1000000000000\r\n\r\n"
                    )
                    .as_bytes(),
                ),
            ),
            5 => {
                let mut big = format!("POST {post_path} HTTP/1.1\r\nHost: x\r\nX-Big: ").into_bytes();
                big.extend(std::iter::repeat_n(b'a', 100_000));
                big.extend_from_slice(b"\r\n\r\n");
                ("huge_header", raw_from(from, addr, &big))
            }
            _ => ("slow", trickle(addr, from, post_path, i.is_multiple_of(2))),
        }
    }

    /// Sends a request a byte every 100 ms (its headers, or its body) and gives up
    /// after 3 s: what the server answered by then, if anything.
    fn trickle(addr: SocketAddr, from: Option<IpAddr>, post_path: &str, headers: bool) -> String {
        let Some(mut s) = connect_from(from, addr) else {
            return String::new();
        };
        let rest: Vec<u8> = if headers {
            format!(
                "GET {post_path} HTTP/1.1\r\nHost: x\r\nX-Slow: {}",
                "s".repeat(40)
            )
            .into_bytes()
        } else {
            let _ = s.write_all(
                format!("POST {post_path} HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n")
                    .as_bytes(),
            );
            vec![b'{'; 30]
        };
        let until = Instant::now() + Duration::from_secs(3);
        for b in rest {
            if Instant::now() > until || s.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Checks a flood's answers: a bad token or none was answered with one of
    /// `token_refusals` (or 429, or 503 from a full server), nothing else was ever
    /// served (no 2xx, no 500), and it really was a flood.
    pub fn assert_refused(
        seen: &BTreeMap<String, BTreeMap<String, u64>>,
        min_requests: u64,
        token_refusals: &[&str],
    ) {
        let total: u64 = seen.values().flat_map(|m| m.values()).sum();
        assert!(total >= min_requests, "only {total} bad requests: {seen:?}");
        for (kind, statuses) in seen {
            for status in statuses.keys() {
                let fine = match kind.as_str() {
                    "wrong_token" | "no_token" => {
                        token_refusals.contains(&status.as_str())
                            || ["429", "503", "none"].contains(&status.as_str())
                    }
                    "oversized" | "huge_header" => {
                        ["413", "431", "503", "none"].contains(&status.as_str())
                    }
                    _ => !status.starts_with('2') && !["500", "502"].contains(&status.as_str()),
                };
                assert!(fine, "{kind} answered {status}: {seen:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;

    fn echo() -> Handler {
        Arc::new(|r: Request| {
            Response::json(
                200,
                &json!({"path": r.url(), "bytes": r.body.len(), "method": r.method.as_str()}),
            )
        })
    }

    use super::attack::raw;

    fn health(addr: SocketAddr) -> Duration {
        super::attack::timed_get(addr, "/health", 200)
    }

    #[test]
    fn https_serves_and_plain_http_is_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls");
        let tls = Tls::from_pem_files(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
        let server =
            Server::start_tls("127.0.0.1:0", "test", Limits::default(), echo(), Some(tls)).unwrap();
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(dir.join("cert.pem")).unwrap()).unwrap();
        let client = crate::http::client_builder()
            .tls_certs_merge([ca])
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/x", server.addr().port());
        let answer = client.get(&url).send().unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        // Plain HTTP on the TLS port gets no answer.
        let plain = raw(
            server.addr(),
            b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
        // A bad key file is a clear error.
        let err = Tls::from_pem_files(&dir.join("cert.pem"), &dir.join("README.md")).unwrap_err();
        assert!(err.contains("private key"), "{err}");
    }

    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(
            redact_url(
                "https://user:pa55@feeds.example.org/v2/entities?type=A&apikey=s3cret&limit=5"
            ),
            "https://***@feeds.example.org/v2/entities?type=A&apikey=***&limit=5"
        );
        assert_eq!(
            redact_url("http://h:1026/e?Token=abc#top"),
            "http://h:1026/e?Token=***#top"
        );
        assert_eq!(redact_url("http://h/e?type=B"), "http://h/e?type=B");
        // Names that say what they are, percent-encoded ones too.
        assert_eq!(
            redact_url(
                "https://h/e?X-Amz-Signature=a&private_token=b&access-token=c&api%5Fkey=d&sessionid=e&limit=5"
            ),
            "https://h/e?X-Amz-Signature=***&private_token=***&access-token=***&api%5Fkey=***&sessionid=***&limit=5"
        );
        assert_eq!(
            redact_in_text(
                "GET https://a:b@h/x?key=1 failed: error sending request for url (https://a:b@h/x?key=1)"
            ),
            "GET https://***@h/x?key=*** failed: error sending request for url (https://***@h/x?key=***)"
        );
    }

    #[test]
    fn a_huge_declared_body_is_refused_without_reading_it() {
        let server = Server::start("127.0.0.1:0", "test", Limits::default(), echo()).unwrap();
        let answer = raw(
            server.addr(),
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        // A body sent in full over the limit without a length is cut off too.
        let mut chunked =
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..20 {
            chunked.extend_from_slice(b"2000\r\n");
            chunked.extend_from_slice(&[b'a'; 0x2000]);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let answer = raw(server.addr(), &chunked);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(health(server.addr()) < Duration::from_secs(1));
    }

    #[test]
    fn a_huge_header_is_refused() {
        let server = Server::start("127.0.0.1:0", "test", Limits::default(), echo()).unwrap();
        let mut request = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 1_000_000));
        request.extend_from_slice(b"\r\n\r\n");
        let answer = raw(server.addr(), &request);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        assert!(health(server.addr()) < Duration::from_secs(1));
    }

    #[test]
    fn half_sent_requests_and_a_flood_do_not_stop_good_requests() {
        // Every client here is 127.0.0.1: the rate per address (tested on its own
        // below) is lifted, or 300 requests would spend the health check's share.
        let unrated = Rate {
            per_s: f64::INFINITY,
            burst: 1,
        };
        let limits = Limits {
            read_timeout: Duration::from_secs(2),
            max_connections: 64,
            rate: unrated,
            ..Limits::default()
        };
        // Within the bound on connections, 300 slow clients cost nothing.
        let roomy = Limits {
            rate: unrated,
            ..Limits::default()
        };
        let roomy = Server::start("127.0.0.1:0", "test", roomy, echo()).unwrap();
        let mut slow = Vec::new();
        for _ in 0..300 {
            if let Ok(mut s) = TcpStream::connect(roomy.addr()) {
                let _ =
                    s.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab");
                slow.push(s);
            }
        }
        assert!(health(roomy.addr()) < Duration::from_secs(1));
        drop(slow);
        let server = Server::start("127.0.0.1:0", "test", limits, echo()).unwrap();
        // 300 connections that send half a request and wait.
        let mut held = Vec::new();
        for i in 0..300 {
            if let Ok(mut s) = TcpStream::connect(server.addr()) {
                let half: &[u8] = if i % 2 == 0 {
                    b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
                } else {
                    b"GET /x HTTP/1.1\r\nHost"
                };
                let _ = s.write_all(half);
                held.push(s);
            }
        }
        // Over the bound, connections are shed at once; within it, the half-sent
        // ones time out. Either way a good request is answered within a second once
        // the read timeout has passed.
        std::thread::sleep(Duration::from_millis(2500));
        assert!(health(server.addr()) < Duration::from_secs(1));
        drop(held);
        assert!(health(server.addr()) < Duration::from_secs(1));
    }

    /// A gate knowing two tokens, `token-a` and `token-b`.
    fn two_tokens() -> Gate {
        Arc::new(|r: &Request| match r.header("authorization").as_deref() {
            Some("Bearer token-a") => Caller::Known("a".into()),
            Some("Bearer token-b") => Caller::Known("b".into()),
            _ => Caller::Refused(Response::error(401, "unauthorized", "who are you?")),
        })
    }

    fn post_as(addr: SocketAddr, token: &str) -> String {
        raw(
            addr,
            format!("POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").as_bytes(),
        )
    }

    #[test]
    fn a_token_over_its_rate_is_told_to_wait_while_another_is_not() {
        let limits = Limits {
            rate: Rate {
                per_s: 0.5,
                burst: 5,
            },
            ..Limits::default()
        };
        let server = Server::start_gated(
            "127.0.0.1:0",
            "test",
            limits,
            Some(two_tokens()),
            echo(),
            None,
        )
        .unwrap();
        let answers: Vec<String> = (0..8).map(|_| post_as(server.addr(), "token-a")).collect();
        for a in &answers[..5] {
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        }
        for a in &answers[5..] {
            assert!(a.starts_with("HTTP/1.1 429"), "{a}");
            assert!(a.to_ascii_lowercase().contains("retry-after: 2"), "{a}");
        }
        // The other token, from the same address, is not held back.
        for _ in 0..5 {
            let a = post_as(server.addr(), "token-b");
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
        }
        // Guessing is rated by address: after the burst, a wrong token hears 429.
        let guesses: Vec<String> = (0..7)
            .map(|i| post_as(server.addr(), &format!("guess-{i}")))
            .collect();
        assert!(guesses[0].starts_with("HTTP/1.1 401"), "{}", guesses[0]);
        assert!(guesses[6].starts_with("HTTP/1.1 429"), "{}", guesses[6]);
        let refused = server.refused();
        assert_eq!(refused.get("rate_limited"), Some(&5), "{refused:?}");
        assert_eq!(refused.get("unauthorized"), Some(&5), "{refused:?}");
    }

    #[test]
    fn credentials_are_checked_before_the_body_is_read() {
        let server = Server::start_gated(
            "127.0.0.1:0",
            "test",
            Limits::default(),
            Some(two_tokens()),
            echo(),
            None,
        )
        .unwrap();
        // A wrong token with a body declared and never sent: answered at once, not
        // after the 10 s the body would be waited for.
        let t = Instant::now();
        let answer = raw(
            server.addr(),
            b"POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nContent-Length: 60000\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // The handler hears who the gate found.
        let gated = Server::start_gated(
            "127.0.0.1:0",
            "test",
            Limits::default(),
            Some(two_tokens()),
            Arc::new(|r: Request| Response::new(200, "text/plain", r.caller.unwrap_or_default())),
            None,
        )
        .unwrap();
        let answer = post_as(gated.addr(), "token-b");
        assert!(answer.ends_with("\r\n\r\nb"), "{answer}");
    }

    #[test]
    fn clients_trickling_headers_or_a_body_are_cut_by_the_read_timeout() {
        let limits = Limits {
            read_timeout: Duration::from_secs(1),
            ..Limits::default()
        };
        let server = Server::start("127.0.0.1:0", "test", limits, echo()).unwrap();
        let trickle = |start: &[u8], then: u8| {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.write_all(start).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let t = Instant::now();
            let mut answer = Vec::new();
            // A byte every 100 ms, never finishing, for up to 6 s.
            while t.elapsed() < Duration::from_secs(6) {
                if s.write_all(&[then]).is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
                if !answer.is_empty() {
                    break;
                }
            }
            (t.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        };
        let (took, answer) = trickle(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ", b's');
        assert!(
            took < Duration::from_secs(4),
            "headers trickled for {took:?}"
        );
        assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
        let (took, answer) = trickle(
            b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n",
            b'a',
        );
        assert!(took < Duration::from_secs(4), "body trickled for {took:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(health(server.addr()) < Duration::from_secs(1));
        let until = Instant::now() + Duration::from_secs(2);
        while server.refused().get("timeout") < Some(&2) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            server.refused().get("timeout"),
            Some(&2),
            "{:?}",
            server.refused()
        );
    }

    #[test]
    fn a_flood_of_distinct_clients_is_rated_in_bounded_memory() {
        let limits = Limits {
            rate: Rate {
                per_s: 1.0,
                burst: 2,
            },
            max_tracked_clients: 16,
            ..Limits::default()
        };
        let limiter = RateLimiter::new(limits.rate, limits.max_tracked_clients);
        let now = Instant::now();
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.admit(Client::address(ip), now);
            let _ = limiter.admit(Client::Caller(format!("token {i}")), now);
        }
        assert_eq!(limiter.tracked(), 32);
        // Over real connections from 200 addresses too: the newcomers beyond the
        // bound share one allowance, so the flood as a whole is held back.
        let server = Server::start("127.0.0.1:0", "test", limits, echo()).unwrap();
        let mut limited = 0;
        for i in 0..200u8 {
            let from = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, i));
            let answer = super::attack::raw_from(
                Some(from),
                server.addr(),
                b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            limited += usize::from(answer.starts_with("HTTP/1.1 429"));
        }
        assert!(
            server.tracked_clients() <= 16,
            "{}",
            server.tracked_clients()
        );
        assert!(limited >= 50, "only {limited} of 200 newcomers held back");
    }

    #[test]
    fn an_ipv6_client_is_rated_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::address(a), Client::address(b));
        assert_ne!(Client::address(a), Client::address(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            Client::address(mapped),
            Client::address("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn requests_within_the_limits_reach_the_handler() {
        let server = Server::start("127.0.0.1:0", "test", Limits::default(), echo()).unwrap();
        let answer = raw(
            server.addr(),
            b"POST /a/b?c=d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""path":"/a/b?c=d""#), "{answer}");
        assert!(answer.contains(r#""bytes":5"#), "{answer}");
    }
}
