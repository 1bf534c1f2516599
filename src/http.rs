//! The HTTP/1.1 server behind every endpoint Zhongshu serves (the department status
//! API, the department simulator, the simulated sub-brains), hardened so one client
//! cannot take it down: header and body size limits checked before anything is
//! buffered (a declared `Content-Length` over the limit is answered 413 and the
//! connection closed, never drained), read timeouts for headers and bodies, a bound
//! on open connections (more are shed with 503 at once), and handlers on a bounded
//! pool of threads. It runs on its own small tokio runtime; handlers are plain
//! blocking functions from [`Request`] to [`Response`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
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
        let thread = std::thread::Builder::new()
            .name(format!("{name} accept"))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, limits, handler, tls, flag));
                // Connections still open end with the runtime.
                runtime.shutdown_timeout(Duration::from_millis(200));
            })?;
        Ok(Server {
            addr: bound,
            stop,
            thread: Some(thread),
        })
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
    limits: Limits,
    handler: Handler,
    tls: Option<Tls>,
    stop: Arc<AtomicBool>,
) {
    let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.0));
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let limits = Arc::new(limits);
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
            tokio::spawn(shed(stream));
            continue;
        };
        let (limits, handler, acceptor) = (limits.clone(), handler.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let service_limits = limits.clone();
            let service = hyper::service::service_fn(move |request| {
                serve_one(request, peer, service_limits.clone(), handler.clone())
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .keep_alive(true);
            match acceptor {
                None => {
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
                }
                Some(acceptor) => {
                    // The handshake has the same time as the headers.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.read_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
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
    limits: Arc<Limits>,
    handler: Handler,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Refused before a byte of the body is read or buffered; the connection closes.
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Ok(to_hyper(
            Response::error(
                413,
                "too_large",
                format!("the body is larger than {} bytes", limits.max_body_bytes),
            ),
            true,
        ));
    }
    let collected = tokio::time::timeout(
        limits.read_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(to_hyper(
                Response::error(
                    413,
                    "too_large",
                    format!("the body is larger than {} bytes", limits.max_body_bytes),
                ),
                true,
            ));
        }
        Ok(Err(e)) => {
            return Ok(to_hyper(
                Response::error(400, "bad_body", format!("cannot read the body: {e}")),
                true,
            ));
        }
        Err(_) => {
            return Ok(to_hyper(
                Response::error(
                    408,
                    "timeout",
                    format!(
                        "the body did not arrive within {} s",
                        limits.read_timeout.as_secs()
                    ),
                ),
                true,
            ));
        }
    };
    let request = Request {
        method: parts.method,
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string()),
        headers: parts.headers,
        body,
        peer,
    };
    let response = match tokio::task::spawn_blocking(move || handler(request)).await {
        Ok(r) => r,
        Err(_) => Response::error(500, "internal", "the request could not be handled"),
    };
    Ok(to_hyper(response, false))
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
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::{Duration, Instant};

    pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let Ok(mut s) = TcpStream::connect(addr) else {
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
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpStream;

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
        let client = reqwest::blocking::Client::builder()
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
        let limits = Limits {
            read_timeout: Duration::from_secs(2),
            max_connections: 64,
            ..Limits::default()
        };
        // Within the bound on connections, 300 slow clients cost nothing.
        let roomy = Server::start("127.0.0.1:0", "test", Limits::default(), echo()).unwrap();
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
