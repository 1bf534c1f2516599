//! The clients of the open-data endpoints: a keys file (TOML) naming each client with
//! the SHA-256 of its key and its rate. Keys themselves are never written down: a
//! new one is printed once by `zhongshu open-data keys add NAME`.
//!
//! ```toml
//! # Access without a key; left out, every request needs one.
//! [anonymous]
//! rate_per_s = 1
//!
//! [[client]]
//! name = "transit-app"
//! key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//! rate_per_s = 10        # requests a second (default 5), bursts of four seconds' worth
//! ```
//!
//! A client sends its key as `Authorization: Bearer KEY` or `X-API-Key: KEY`; a key
//! in the URL is not read (URLs end up in proxies' logs).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::http::{Caller, Gate, Rate, Request, Response, digests_equal, token_digest};

/// A client's rate when its entry gives none.
pub const DEFAULT_CLIENT_RATE_PER_S: f64 = 5.0;

/// The name anonymous requests are logged under.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEntry {
    name: String,
    key_sha256: String,
    #[serde(default)]
    rate_per_s: Option<f64>,
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnonymousEntry {
    rate_per_s: f64,
    #[serde(default)]
    burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    anonymous: Option<AnonymousEntry>,
    #[serde(default)]
    client: Vec<ClientEntry>,
}

/// One client: its name, its key's digest, its rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    pub name: String,
    digest: [u8; 32],
    pub rate: Rate,
}

/// The clients of a running server: a keys file read again when it changes, so a
/// client added with `open-data keys add`, a key withdrawn or a rate changed takes
/// effect without a restart. The file is read every [`KeyRing::CHECK_EVERY`] (its
/// text compared, not its times, which a copy can keep); a new text is taken once it
/// has stood for one check, so an editor's save caught half-way (an emptied file, one
/// cut after a client) is never taken. A text that does not read leaves the clients as
/// they were, said on standard error once.
pub struct KeyRing {
    path: Option<std::path::PathBuf>,
    state: std::sync::Mutex<Ring>,
}

struct Ring {
    clients: Arc<Clients>,
    /// The text the clients were read from.
    applied: Option<String>,
    /// A new text seen at the last check, waiting to stand.
    pending: Option<String>,
    /// The last problem said, so it is said once.
    said: Option<String>,
    checked: std::time::Instant,
}

/// A keys file is a few lines a client: more than this is no keys file.
const MAX_KEYS_FILE_BYTES: u64 = 1 << 20;

impl KeyRing {
    pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// Clients that never change (tests, and a server without a file).
    pub fn fixed(clients: Clients) -> Self {
        Self {
            path: None,
            state: std::sync::Mutex::new(Ring {
                clients: Arc::new(clients),
                applied: None,
                pending: None,
                said: None,
                checked: std::time::Instant::now(),
            }),
        }
    }

    /// The clients in the keys file at `path`, read now (an error names the file)
    /// and again whenever it changes.
    pub fn watch(path: &Path) -> Result<Self, String> {
        let text = read_keys_text(path)?;
        let clients = Clients::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            state: std::sync::Mutex::new(Ring {
                clients: Arc::new(clients),
                applied: Some(text),
                pending: None,
                said: None,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The clients now.
    pub fn current(&self) -> Arc<Clients> {
        let mut ring = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(path) = &self.path
            && ring.checked.elapsed() >= Self::CHECK_EVERY
        {
            ring.checked = std::time::Instant::now();
            let problem = match read_keys_text(path) {
                Err(e) => Some(e),
                Ok(text) if ring.applied.as_deref() == Some(text.as_str()) => {
                    ring.pending = None;
                    None
                }
                // Seen at the last check too: it stands.
                Ok(text) if ring.pending.as_deref() == Some(text.as_str()) => {
                    ring.pending = None;
                    match Clients::parse(&text) {
                        Ok(clients) => {
                            eprintln!(
                                "zhongshu open data: {} read again: {} clients{}",
                                path.display(),
                                clients.clients.len(),
                                if clients.anonymous.is_some() {
                                    ", anonymous access"
                                } else {
                                    ""
                                }
                            );
                            ring.clients = Arc::new(clients);
                            ring.applied = Some(text);
                            None
                        }
                        Err(e) => Some(format!("{}: {e}", path.display())),
                    }
                }
                Ok(text) => {
                    ring.pending = Some(text);
                    None
                }
            };
            match problem {
                Some(p) if ring.said.as_ref() != Some(&p) => {
                    eprintln!(
                        "zhongshu open data: the keys file does not read, the clients stay as they were: {p}"
                    );
                    ring.said = Some(p);
                }
                Some(_) => {}
                None => ring.said = None,
            }
        }
        ring.clients.clone()
    }

    /// [`Clients::gate`] of the clients at each request.
    pub fn gate(self: Arc<Self>) -> Gate {
        Arc::new(move |request: &Request| self.current().admit(request))
    }
}

/// A keys file's text, refused when it is far larger than one can be.
fn read_keys_text(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read the keys file {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut text = String::new();
    use std::io::Read;
    file.take(MAX_KEYS_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_KEYS_FILE_BYTES {
        return Err(format!(
            "the keys file {} is over {} MiB: no keys file is",
            path.display(),
            MAX_KEYS_FILE_BYTES >> 20
        ));
    }
    Ok(text)
}

/// Who may use the open-data endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clients {
    pub clients: Vec<Client>,
    /// The rate of requests without a key (per address); `None`: a key is needed.
    pub anonymous: Option<Rate>,
}

fn rate(per_s: f64, burst: Option<u32>, who: &str) -> Result<Rate, String> {
    if !(per_s.is_finite() && per_s > 0.0 && per_s <= 1_000_000.0) {
        return Err(format!(
            "{who}: rate_per_s = {per_s}: give requests a second above 0, at most 1000000"
        ));
    }
    let mut rate = Rate::per_second(per_s);
    if let Some(b) = burst {
        if b == 0 {
            return Err(format!("{who}: burst must be at least 1"));
        }
        rate.burst = b;
    }
    Ok(rate)
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Clients {
    /// Parses a keys file; errors name the client and the problem.
    pub fn parse(text: &str) -> Result<Clients, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut clients: Vec<Client> = Vec::new();
        for entry in file.client {
            let name = entry.name.trim();
            if name.is_empty() || name == ANONYMOUS || name != entry.name {
                return Err(format!(
                    "client {:?}: give a name of its own (not empty, not \"{ANONYMOUS}\", no spaces around it)",
                    entry.name
                ));
            }
            if clients.iter().any(|c| c.name == name) {
                return Err(format!("client \"{name}\" is listed twice"));
            }
            let Some(digest) = parse_digest(&entry.key_sha256) else {
                return Err(format!(
                    "client \"{name}\": key_sha256 must be 64 hex digits (the SHA-256 of the key; never the key itself)"
                ));
            };
            if clients.iter().any(|c| c.digest == digest) {
                return Err(format!("client \"{name}\" has another client's key"));
            }
            let rate = rate(
                entry.rate_per_s.unwrap_or(DEFAULT_CLIENT_RATE_PER_S),
                entry.burst,
                &format!("client \"{name}\""),
            )?;
            clients.push(Client {
                name: name.to_string(),
                digest,
                rate,
            });
        }
        let anonymous = file
            .anonymous
            .map(|a| rate(a.rate_per_s, a.burst, "anonymous"))
            .transpose()?;
        Ok(Clients { clients, anonymous })
    }

    /// Reads a keys file; errors name the file.
    pub fn load(path: &Path) -> Result<Clients, String> {
        let text = read_keys_text(path)?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The client whose key this is.
    pub fn find(&self, key: &str) -> Option<&Client> {
        let digest = token_digest(key);
        // Every entry compared, in constant time each: no early exit to time.
        let mut found = None;
        for c in &self.clients {
            if digests_equal(&c.digest, &digest) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// Reads a request's key: a known one names its client; none is anonymous where
    /// that is allowed; anything else is refused with 401 (the same answer for a
    /// wrong key and a missing one).
    pub fn gate(self: Arc<Self>) -> Gate {
        Arc::new(move |request: &Request| self.admit(request))
    }

    /// [`Self::gate`] for one request: a known client comes with its rate.
    fn admit(&self, request: &Request) -> Caller {
        {
            let key = request
                .header("authorization")
                .and_then(|a| {
                    a.strip_prefix("Bearer ")
                        .or_else(|| a.strip_prefix("bearer "))
                        .map(|k| k.trim().to_string())
                })
                .or_else(|| request.header("x-api-key"));
            // An empty or blank key is no key, never a match for a stored hash of "".
            let key = key.map(|k| k.trim().to_string());
            match key {
                Some(key) if key.is_empty() => {
                    Caller::Refused(unauthorized("an empty API key is no key"))
                }
                Some(key) => match self.find(&key) {
                    Some(c) => Caller::Rated(c.name.clone(), c.rate),
                    None => Caller::Refused(unauthorized("this key is not known")),
                },
                None => match self.anonymous {
                    Some(rate) => Caller::AnonymousRated(rate),
                    None => Caller::Refused(unauthorized(
                        "an API key is needed: send it as Authorization: Bearer KEY or X-API-Key: KEY",
                    )),
                },
            }
        }
    }
}

fn unauthorized(message: &str) -> Response {
    Response::error(401, "unauthorized", message).with_header("WWW-Authenticate", "Bearer")
}

/// A new key: 32 random bytes, hex, with a prefix that says what it is.
pub fn new_key() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
    Ok(format!("zsk_{}", hex(&bytes)))
}

/// Adds a client to the keys file at `path` (made if missing) with a new key, and
/// returns the key: the only time it is seen.
pub fn add_client(path: &Path, name: &str, rate_per_s: Option<f64>) -> Result<String, String> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read the keys file {}: {e}", path.display())),
    };
    let key = new_key()?;
    let mut entry = format!(
        "\n[[client]]\nname = {}\nkey_sha256 = \"{}\"\n",
        toml::Value::String(name.to_string()),
        hex(&token_digest(&key))
    );
    if let Some(r) = rate_per_s {
        entry += &format!("rate_per_s = {r:?}\n");
    }
    // The file as it would be, checked whole before a byte is written.
    let mut whole = existing.clone();
    if whole.is_empty() {
        whole = "# Open-data clients: the SHA-256 of each key, never the key itself.\n".into();
    }
    whole += &entry;
    Clients::parse(&whole).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot write the keys file {}: {e}", path.display()))?;
    let written = whole.get(existing.len()..).unwrap_or(&entry);
    file.write_all(written.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write the keys file {}: {e}", path.display()))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_file_holds_digests_and_rates_and_refuses_mistakes() {
        let dir = std::env::temp_dir().join(format!("zhongshu-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keys.toml");
        let _ = std::fs::remove_file(&path);
        let a = add_client(&path, "transit-app", Some(10.0)).unwrap();
        let b = add_client(&path, "school", None).unwrap();
        assert!(a.starts_with("zsk_") && a.len() == 68, "{a}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&a) && !text.contains(&b[4..]), "{text}");
        let clients = Clients::load(&path).unwrap();
        assert_eq!(clients.find(&a).unwrap().name, "transit-app");
        assert_eq!(clients.find(&a).unwrap().rate, Rate::per_second(10.0));
        assert_eq!(
            clients.find(&b).unwrap().rate,
            Rate::per_second(DEFAULT_CLIENT_RATE_PER_S)
        );
        assert!(clients.find("zsk_guess").is_none());
        assert_eq!(clients.anonymous, None);
        let again = add_client(&path, "school", None).unwrap_err();
        assert!(again.contains("listed twice"), "{again}");
        for (bad, needle) in [
            ("[[client]]\nname='x'\nkey_sha256='abc'\n", "64 hex digits"),
            ("[[client]]\nname='x'\nkey='zsk_1'\n", "unknown field"),
            ("[anonymous]\nrate_per_s=0\n", "rate_per_s"),
        ] {
            let err = Clients::parse(bad).unwrap_err();
            assert!(err.contains(needle), "{bad:?} → {err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
