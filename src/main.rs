//! `zhongshu` command line: the command-centre window and its headless tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use zhongshu::app::{self, AppOptions};
use zhongshu::clock::CityTime;
use zhongshu::{bench, map};

/// The dispatch event log when `--db` is not given.
const DEFAULT_HISTORY: &str = "zhongshu-history";
const DEFAULT_DB: &str = "zhongshu-events.db";

#[derive(Parser)]
#[command(
    name = "zhongshu",
    version,
    about = "Zhongshu (中枢): command centre for a city brain"
)]
struct Cli {
    /// Map to show: an OpenStreetMap .osm.pbf or a GeoJSON FeatureCollection.
    /// Without it, the embedded default city (Helsinki centre).
    #[arg(long, global = true)]
    map: Option<PathBuf>,
    /// The CRS of the map's coordinates when the file does not say (or says wrong):
    /// EPSG:n, e.g. EPSG:4547 (CGCS2000 3-degree Gauss-Krüger CM 114E), EPSG:32650
    /// (UTM 50N), EPSG:3857 (Web Mercator), EPSG:4490 (CGCS2000). Wins over the
    /// file's own `crs` member. Default: what the file says, else WGS84 degrees.
    #[arg(long, global = true, value_name = "EPSG:n")]
    crs: Option<map::crs::Crs>,
    /// The map's longitude/latitude are China's offset GCJ-02 (Amap, Tencent) or BD-09
    /// (Baidu): undone to WGS84 at load.
    #[arg(long, global = true, value_name = "wgs84|gcj02|bd09", default_value_t)]
    coords: map::crs::Coords,
    /// Start looking at LON,LAT (WGS84) from DISTANCE metres away (default 600).
    #[arg(long, global = true, value_name = "LON,LAT[,DISTANCE]")]
    look_at: Option<String>,
    /// Feeds file (TOML) with the sources to show; without it every sub-brain is
    /// simulated on the map.
    #[arg(long, global = true, value_name = "FILE")]
    feeds: Option<PathBuf>,
    /// Open the data-steward window (catalog, quality, conflicts) at start.
    #[arg(long, global = true)]
    steward: bool,
    /// Size of the panels and type: a factor on the monitor's own scale factor
    /// (0.5 to 4; e.g. 2 on a 4K wall that reports 1).
    #[arg(long, global = true, value_name = "FACTOR", default_value_t = 1.0)]
    ui_scale: f32,
    /// The city's time zone, an IANA name (e.g. Asia/Shanghai): the clock and every
    /// time shown are in it. Default: the zone at the map's position (UTC at sea).
    /// Machine output (JSON, logs, audit) stays UTC.
    #[arg(long, global = true, value_name = "NAME")]
    timezone: Option<String>,
    /// How the map's fields are read (TOML: `kind`, `height`, `floors`, `name`,
    /// `kind_field` with `[kinds]`): wins over guessing. Default: `<map>.schema.toml`
    /// beside the map, if there is one.
    #[arg(long, global = true, value_name = "FILE")]
    schema: Option<PathBuf>,
    /// Select the building with this id (e.g. way/123) and fly to it.
    #[arg(long, global = true, value_name = "ID")]
    select: Option<String>,
    /// The dispatch event log (SQLite): incidents, orders and who did what.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = DEFAULT_DB
    )]
    db: PathBuf,
    /// The key that seals the event log (64 hex digits in a file). Keep it where those
    /// who can write the database cannot read it. Default: `<db>.key`, created on
    /// first use.
    #[arg(long, global = true, value_name = "FILE")]
    seal_key: Option<PathBuf>,
    /// Departments and playbooks (TOML); without it the embedded defaults.
    #[arg(long, global = true, value_name = "FILE")]
    dispatch: Option<PathBuf>,
    /// Users file (TOML, hashed passphrases; see `zhongshu users add`); without it the
    /// demo accounts (passphrase `zhongshu`).
    #[arg(long, global = true, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Demo mode: the demo accounts (known passphrase) and the `demo-` department tokens
    /// are accepted, the status API on loopback only, "DEMO" on screen. Implied when
    /// neither --dispatch nor --users is given (the embedded demo city).
    #[arg(long, global = true)]
    demo: bool,
    /// Sign in at start as this user, with the passphrase from ZHONGSHU_PASSPHRASE.
    #[arg(long, global = true, value_name = "NAME")]
    user: Option<String>,
    /// Where the department status API listens.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        default_value = "127.0.0.1:7878"
    )]
    api: String,
    /// The URL departments reach the status API at, when it is not the address it
    /// listens on (needed with a wildcard address such as 0.0.0.0, or behind a proxy).
    #[arg(long, global = true, value_name = "URL")]
    api_public_url: Option<String>,
    /// HTTPS for the status API: the certificate chain (PEM). Required for an address
    /// beyond this machine unless --api-insecure-http.
    #[arg(long, global = true, value_name = "FILE", requires = "api_tls_key")]
    api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
    /// Serve the status API in plain HTTP beyond this machine (department tokens then
    /// cross the network in clear: only behind a TLS-terminating proxy).
    #[arg(long, global = true)]
    api_insecure_http: bool,
    /// The hall's NATS server (`nats://HOST:PORT` or `tls://…`, several separated by
    /// commas): the event log is the hall's shared stream instead of --db.
    #[arg(long, global = true, value_name = "URL")]
    nats: Option<String>,
    /// The hall's name (letters, digits, `-`, `_`): one log per hall on the server.
    #[arg(long, global = true, value_name = "NAME")]
    hall: Option<String>,
    /// NATS credentials (lines `user = …`, `password = …`, `nkey = …`, `creds = PATH`,
    /// `ca = PATH`); also from ZHONGSHU_NATS_USER/_PASSWORD/_NKEY/_CREDS/_CA. Never
    /// on the command line.
    #[arg(long, global = true, value_name = "FILE")]
    nats_auth: Option<PathBuf>,
    /// Copies of the hall's log the server keeps when the hall's stream is created (1
    /// on a single server, 3 on a 3-node cluster).
    #[arg(long, global = true, value_name = "N", default_value_t = 1)]
    nats_replicas: usize,
    /// The JetStream domain of a hall reached over the leaf link from another
    /// hall's server (a district's, from the city): the console watches it
    /// read-only; `hall-status` and `audit verify` read it.
    #[arg(long, global = true, value_name = "DOMAIN")]
    nats_domain: Option<String>,
    /// The city's history (every live change, recorded with its time; MCAP segments):
    /// where the window records, `record` writes and `state-at` reads.
    #[arg(long, global = true, value_name = "DIR", default_value = DEFAULT_HISTORY)]
    history: PathBuf,
    /// Run the window without recording the history.
    #[arg(long, global = true)]
    no_history: bool,
    /// Present the leaders' briefing of the last shift instead of opening the desk
    /// (as `zhongshu briefing` without --out).
    #[arg(long)]
    briefing: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

impl Cli {
    /// The hall's log, when --nats and --hall are given.
    fn hall_log(
        &self,
        client_name: &str,
        create: bool,
    ) -> anyhow::Result<Option<zhongshu::store::jetstream::JetStreamLog>> {
        let (url, hall) = match (&self.nats, &self.hall) {
            (Some(url), Some(hall)) => (url, hall),
            (None, None) => return Ok(None),
            _ => bail!("--nats URL and --hall NAME go together"),
        };
        let auth = zhongshu::nats::NatsAuth::load(self.nats_auth.as_deref())
            .map_err(anyhow::Error::msg)?;
        let nats = zhongshu::nats::Nats::connect(&zhongshu::nats::NatsOptions {
            url: url.clone(),
            auth,
            timeout: None,
            name: Some(format!("zhongshu {client_name} ({hall})")),
            domain: self.nats_domain.clone(),
        })
        .map_err(anyhow::Error::msg)?;
        let log = zhongshu::store::jetstream::JetStreamLog::open(
            &nats,
            hall,
            &zhongshu::store::jetstream::HallLogOptions {
                replicas: self.nats_replicas,
                create,
            },
        )?;
        Ok(Some(log))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Open the command-centre window (the default).
    Run,
    /// Render the scene off-screen until the city is drawn, write a PNG and exit.
    Screenshot {
        /// PNG file to write.
        #[arg(long)]
        out: PathBuf,
        /// Image size as WIDTHxHEIGHT.
        #[arg(long, default_value = "1600x900")]
        size: String,
        /// Render the city as it stood at this instant, from the recorded history
        /// (--history): RFC 3339 with an offset or Unix milliseconds. The picture says
        /// REPLAY beside the clock, which shows that instant.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Drive the video wall: a borderless fullscreen window per screen, each a grid of
    /// tiles (map, hotspot, kpi, incidents, orders, trends, feeds, tour), read-only.
    /// Without --layout, a screen per detected monitor. The layout file is read again
    /// when it changes. The boards read the dispatch log (--db, or the hall's stream
    /// with --nats/--hall) without writing to it.
    Wall {
        /// The wall's layout (TOML): `[[screen]]` with `[[screen.tile]]`, `[[bookmark]]`.
        #[arg(long, value_name = "FILE")]
        layout: Option<PathBuf>,
        /// Write one PNG per screen into this folder once the city is drawn and the
        /// data in, then exit (each screen a window of --size).
        #[arg(long, value_name = "DIR")]
        screenshot_dir: Option<PathBuf>,
        /// Each screen's size with --screenshot-dir, as WIDTHxHEIGHT.
        #[arg(long, default_value = "1920x1080")]
        size: String,
    },
    /// The leaders' briefing of a period, from the dispatch log (--db, or
    /// --nats/--hall). With --out: one PNG per slide (rendered through the real
    /// scene; under xvfb-run -a without a display) and briefing.pdf. Without it:
    /// presented full screen (→/PageDown next, ←/PageUp previous, Esc ends), the
    /// presenter's view with the notes on a second monitor.
    Briefing {
        /// The folder to write the slides and the PDF into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The period's start: RFC 3339 with an offset or Unix ms (default: 8 hours
        /// before --until, one shift).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// The period's end (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Each slide's size, WIDTHxHEIGHT (--out, --screenshot-dir).
        #[arg(long, default_value = "1920x1080")]
        size: String,
        /// Presented: the presenter's view even without a second monitor (in a
        /// window).
        #[arg(long, conflicts_with = "out")]
        presenter: bool,
        /// Presented: write the first slide's screens (and the presenter's) as PNG
        /// into this folder, each a window of --size, then exit.
        #[arg(long, value_name = "DIR", conflicts_with = "out")]
        screenshot_dir: Option<PathBuf>,
    },
    /// Load a map without a window and print one JSON object describing it.
    MapInfo {
        /// The map file: .osm.pbf, GeoJSON, Esri JSON, a Shapefile's .shp or FlatGeobuf.
        path: PathBuf,
    },
    /// Run the feeds of a feeds file headless for a while and print one JSON object per
    /// feed: feed, entities, updates, rejected, reasons, last_ok, ...
    FeedsCheck {
        /// How long to run, in seconds.
        #[arg(long = "for", value_name = "SECONDS", default_value_t = 10.0)]
        for_secs: f64,
    },
    /// Print the catalog of every feed in the feeds file as DCAT JSON-LD (owner, domain,
    /// licence, cadence, required and authoritative fields, consumers); with --for,
    /// first run the feeds that long to add the entity types and fields observed.
    Catalog {
        /// Seconds to observe the feeds before writing the catalog.
        #[arg(long = "for", value_name = "SECONDS", default_value_t = 0.0)]
        for_secs: f64,
    },
    /// The durable event log of incidents and orders.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Serve the simulated sub-brains of the map over HTTP as NGSI-LD.
    ServeSim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:1026")]
        addr: String,
        /// Simulator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Simulated departments over HTTP: they take orders (POST /{department}/orders),
    /// sign for, progress, sometimes reject or ignore them, and report back to each
    /// order's status_url.
    ServeDepartments {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7900")]
        addr: String,
        /// Seed of the departments' behaviour.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The Zhongshu status API the departments report to (its base URL): the
        /// only place their tokens are sent, whatever an order's `status_url` says.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7878")]
        report_to: String,
    },
    /// The hall's headless hub (needs --nats URL --hall NAME): runs the dispatch
    /// service on the hall's log (outbox to departments, status API on --api, the
    /// deadline clock). One hub per hall is active; start another on a second
    /// machine as a hot standby. Prints `active …`, `standby …` and `lost-lease …`
    /// lines as its state changes; stops cleanly on SIGINT/SIGTERM. With
    /// --open-data ADDR the active hub also serves the open part of the hall's feeds
    /// and layers there (as serve-open-data does; TLS from --api-tls-cert/-key).
    Hub {
        /// Serve the hall's open data on this address while this hub is the active
        /// one (beyond this machine only with --api-tls-cert/--api-tls-key or
        /// --api-insecure-http).
        #[arg(long = "open-data", value_name = "ADDR", requires = "open_data_keys")]
        open_data: Option<String>,
        /// The open-data clients' keys file (see `zhongshu open-data keys add`).
        #[arg(long, value_name = "FILE", requires = "open_data")]
        open_data_keys: Option<PathBuf>,
        /// Append the open-data access log (one JSON line per request) to this
        /// file; default: standard error.
        #[arg(long, value_name = "FILE", requires = "open_data")]
        open_data_log: Option<PathBuf>,
        /// The URL clients reach the open data at, for the catalog's links.
        #[arg(long, value_name = "URL", requires = "open_data")]
        open_data_url: Option<String>,
        /// Days of the hall's history kept (recorded by the active hub under
        /// --history DIR/hub-HALL and shared with every console through the hall's
        /// object store); --no-history records none.
        #[arg(long, value_name = "DAYS", default_value_t = 7.0)]
        retention_days: f64,
    },
    /// Print the hall's state as one JSON object (needs --nats URL --hall NAME):
    /// the active hub and since when, standby hubs, consoles (user, role, last seen),
    /// events and the chain head.
    HallStatus,
    /// Serve the open data of --feeds (feeds and map layers classified `open`) over
    /// HTTP: GET /catalog (DCAT), /ngsi-ld/v1/entities (type, bbox, limit, offset,
    /// count), /ngsi-ld/v1/entities/{id}, /geojson/{type}, /geojson/layers/{layer},
    /// /health. Runs the feeds continuously; each client needs a key from --keys;
    /// one JSON line per request goes to the access log. Stops cleanly on
    /// SIGINT/SIGTERM.
    ServeOpenData {
        /// Address to listen on (beyond this machine only with --tls-cert/--tls-key
        /// or --insecure-http).
        #[arg(long, default_value = "127.0.0.1:8090")]
        addr: String,
        /// The clients' keys file (TOML; see `zhongshu open-data keys add`).
        #[arg(long, value_name = "FILE")]
        keys: PathBuf,
        /// Append the access log (one JSON line per request) to this file; default:
        /// standard error.
        #[arg(long, value_name = "FILE")]
        access_log: Option<PathBuf>,
        /// The URL clients reach this server at, for the catalog's links (default:
        /// http(s)://ADDR).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// HTTPS: the certificate chain (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Serve plain HTTP beyond this machine (keys then cross the network in
        /// clear: only behind a TLS-terminating proxy).
        #[arg(long)]
        insecure_http: bool,
    },
    /// The hub's operating figures (运营) from the dispatch event log alone, as one
    /// JSON object: per department (orders, on_time_pct, sign_for_ms and done_ms
    /// p50/p90, rejected, urged, escalated, …), per incident kind and severity
    /// (count, first_order_ms, close_ms), orders overdue at --until (or now), the
    /// `[[sla]]` targets of --dispatch and the orders that missed them, and what the
    /// log says of feeds. Reads the log read-only and refuses one whose chain, seals
    /// or witness do not verify. Without --since/--until: the whole log. The log is
    /// --db (default zhongshu-events.db), or with --nats URL --hall NAME the hall's
    /// stream.
    OpsReport {
        /// Count what happened from this time on: RFC 3339 with an offset
        /// (2026-11-29T08:00:00Z, 2026-11-29T16:00:00+08:00) or Unix milliseconds.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Leave out what happened after this time, and judge what is overdue at it
        /// (default: now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
    },
    /// Run the feeds (--feeds, else every sub-brain simulated) headless for a while
    /// and record every change to the live state, and each feed's health, into a
    /// history folder of MCAP segments; prints one JSON object of what was written.
    Record {
        /// How long to record, in seconds.
        #[arg(long = "for", value_name = "SECONDS", default_value_t = 60.0)]
        for_secs: f64,
        /// Days of history kept; older segments are deleted, oldest first.
        #[arg(long, value_name = "DAYS", default_value_t = 7.0)]
        retention_days: f64,
    },
    /// Print the city as it stood at --at, as one JSON object: per feed every entity
    /// with its position, fields and observation time, the feed's health then; the
    /// KPIs; open incidents and orders by status from the event log (--db, or
    /// --nats/--hall) rebuilt up to then, its chain checked.
    StateAt {
        /// The instant: RFC 3339 with an offset (2026-11-30T14:03:21+08:00) or Unix
        /// milliseconds.
        #[arg(long, value_name = "TIME")]
        at: String,
    },
    /// Write a window of the history (--history) as GeoJSON lines for analysts: the
    /// state at --from (every entity then, "change": "state"), then every change up to
    /// --to in order ("update" or "removed"), one Feature a line with the entity's
    /// attributes, its feed, and when it was taken in and observed. Prints one JSON
    /// object of what was written.
    Export {
        /// Start of the window: RFC 3339 with an offset or Unix milliseconds.
        #[arg(long, value_name = "TIME")]
        from: String,
        /// End of the window (inclusive).
        #[arg(long, value_name = "TIME")]
        to: String,
        /// The file to write (`-` for standard output); an existing file is replaced
        /// only when the export succeeds.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The format: GeoJSON lines (one Feature a line).
        #[arg(long, value_name = "FORMAT", default_value = "geojsonl")]
        format: String,
    },
    /// Open-data administration.
    #[command(subcommand)]
    OpenData(OpenDataCommand),
    /// Manage the users file.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum OpenDataCommand {
    /// The clients' keys file.
    #[command(subcommand)]
    Keys(OpenDataKeysCommand),
}

#[derive(Subcommand)]
enum OpenDataKeysCommand {
    /// Add a client with a new key to a keys file (created if missing): the file keeps
    /// the key's SHA-256, and the key is printed once, here.
    Add {
        /// The client's name, as the access log shows it.
        name: String,
        /// The keys file.
        #[arg(long)]
        file: PathBuf,
        /// Requests a second the client may make (default 5), bursts of four
        /// seconds' worth.
        #[arg(long)]
        rate_per_s: Option<f64>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user to a users file (created if missing); the passphrase is read from
    /// standard input and stored as an Argon2id hash.
    Add {
        /// Sign-in name, e.g. li.wei.
        name: String,
        /// The users file.
        #[arg(long)]
        file: PathBuf,
        /// operator, dispatcher, leader or department_liaison.
        #[arg(long)]
        role: String,
        /// The department a department_liaison acts for.
        #[arg(long)]
        department: Option<String>,
        /// Name shown on screen (default: the sign-in name).
        #[arg(long)]
        display: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check an event log's hash chain, its seals (under --seal-key, default
    /// `<db>.key`) and its witness (`<db>.head`), and print one JSON object: events,
    /// incidents, orders, chain_ok, first_bad_event, sealed, seals, truncated,
    /// last_good_checkpoint, witness, problems, notes. Exits non-zero unless chain_ok.
    Verify {
        /// The SQLite event log (or, with --nats URL --hall NAME, the hall's stream).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Seal a log written before sealing existed (it has no seal at all) as it stands,
    /// under --seal-key (default `<db>.key`): for an operator who has checked it by
    /// other means. Prints the seal made.
    Seal {
        /// The SQLite event log.
        #[arg(long)]
        db: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Record moving vehicles into a history (temporary folder), then seek and
    /// replay: prints record_updates_per_s, bytes_per_update, seek_ms,
    /// replay_frame_ms_at_60x.
    History {
        /// Vehicles, each updated every second.
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        /// Seconds of data recorded.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Random instants sought.
        #[arg(long, default_value_t = 50)]
        seeks: usize,
    },
    /// Decode NGSI-LD pages of moving vehicles and apply them to the live state.
    Ingest {
        /// Distinct entities.
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        /// Times each entity is updated.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Reconcile two feeds of this many stations each at shared positions.
    Reconcile {
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        /// Car parks per feed at one default geocode.
        #[arg(long, default_value_t = 4_000)]
        at_one_point: usize,
    },
    /// An emergency on the default city through the real ingest and dispatch paths:
    /// CAP alerts from three agencies at --scale times the normal rate of new events,
    /// every simulated sub-brain at 5x its rate, a dispatcher issuing playbook orders
    /// to slow and failing departments; prints alerts_in, incidents_raised,
    /// deduplicated, dropped, alert_to_incident_ms, commit_ms, frame_ms, peak_rss_mb.
    Surge {
        #[arg(long, default_value_t = 2.0)]
        minutes: f64,
        /// Times the default simulation's busiest rate of new events (12 an hour).
        /// The event log is --db when given (never the default zhongshu-events.db: a
        /// drill is not written into the hall's real log), else a temporary one.
        #[arg(long, default_value_t = 100.0)]
        scale: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Play the frames in the real app, in a window (needs a display: run it
        /// under xvfb-run -a on a machine without one); the app exits by itself at
        /// the end and the report adds frame_interval_ms.
        #[arg(long)]
        window: bool,
        /// With --window: write a PNG of the window when half the storm has passed.
        #[arg(long, requires = "window")]
        snapshot: Option<PathBuf>,
    },
    /// What the frame thread spends on each whole-city job with a live state of N
    /// entities (two feeds reporting the same N/2 air stations, and N/10 ambulances):
    /// ingest of the whole city in one payload, a snapshot's removals, a 304,
    /// reconciliation's copy, the KPIs, units for the recommendation, expiry; per
    /// frame (p50/p99/max) and, where it was one pass before, in one go.
    Frame {
        #[arg(long, default_value_t = 150_000)]
        entities: usize,
    },
    /// Names on the map: placing N candidate names (random sizes and places on a
    /// 1920×1080 view, three priorities) clear of each other, per frame (p50/p99/max
    /// over 300 frames); and finding the default city's names once.
    Labels {
        #[arg(long, default_value_t = 5_000)]
        candidates: usize,
    },
    /// Advance the simulator with this many vehicles on the default city.
    Sim {
        #[arg(long, default_value_t = 10_000)]
        vehicles: usize,
        /// Simulated seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u32,
    },
    /// The default city's sub-brains through the core pipeline at simulated time
    /// (--hours, headless): resident memory and the live collections, sampled, with
    /// their slopes. Or, with --minutes, in real time through the real paths at 10x
    /// load (the surge's drill: sub-brains at 10x their rate, CAP alerts at 10x the
    /// normal rate of new events, the dispatcher and slow departments): memory and
    /// frame cost sampled every --every-min, and their growth after warm-up.
    Soak {
        /// Simulated hours (default 24).
        #[arg(long)]
        hours: Option<f64>,
        /// Real minutes at 10x load instead of simulated hours. The event log is --db
        /// when given (a new file), else a temporary one.
        #[arg(long)]
        minutes: Option<f64>,
        /// A sample every this many minutes: simulated with --hours (default 30),
        /// real with --minutes (default 1, or the whole of a shorter run).
        #[arg(long)]
        every_min: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// With --minutes: play the frames in the real app, in a window (needs a
        /// display: run it under xvfb-run -a on a machine without one).
        #[arg(long, requires = "minutes")]
        window: bool,
        /// With --window: write a PNG of the window when half the run has passed.
        #[arg(long, requires = "window")]
        snapshot: Option<PathBuf>,
    },
    /// Frame-side CPU cost of live markers in a headless bevy app.
    Markers {
        #[arg(long, default_value_t = 50_000)]
        markers: usize,
        /// Simulated seconds (one update of every marker per second, 60 frames each).
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// The video wall's frame cost: a screen of 4 tiles (two maps, the vital signs,
    /// the incidents) over the default city with its live layers, or --layout's, in
    /// windows of --size (under Xvfb here); prints frame CPU time and frame rate.
    Wall {
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value = "1920x1080")]
        size: String,
        #[arg(long, value_name = "FILE")]
        layout: Option<PathBuf>,
    },
    /// The dispatch desk's cost to a frame: the Orders tab ("All") over a busy day's
    /// book, still and with an event a frame, and what frames spend taking in a
    /// clock tick that marks --overdue orders overdue (written on the writer thread).
    Desk {
        /// Orders in the book.
        #[arg(long, default_value_t = 53_000)]
        orders: usize,
        /// Frames timed per case.
        #[arg(long, default_value_t = 300)]
        frames: usize,
        /// Orders past their deadline at the clock tick.
        #[arg(long, default_value_t = 1_000)]
        overdue: usize,
    },
    /// Write a scripted 8-hour shift (incidents raised evenly, orders signed for,
    /// done or refused, incidents closed) into a temporary log, then time
    /// `zhongshu briefing --out` on it, as a user runs it (needs a display: under
    /// xvfb-run -a without one).
    Briefing {
        /// Incidents raised over the shift.
        #[arg(long, default_value_t = 500)]
        incidents: usize,
        /// The slides' size.
        #[arg(long, default_value = "1920x1080")]
        size: String,
        /// Keep the deck here (else a temporary folder, removed after).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write incidents with their playbook's orders through the dispatch core, one
    /// durable commit per command, printing `committed <order-id>` as each is on
    /// disk, then a JSON summary with p50/p99 commit latency.
    Orders {
        /// The SQLite event log to write (created if missing, appended to if not), or
        /// the hall's stream with --nats URL --hall NAME (several may run at once).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Incidents to write (each with several orders).
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// Fill an event log to this many events, then time rebuilding the console's
    /// state from it (and checking the hash chain).
    Restart {
        /// The SQLite event log (filled up to --events if it has fewer).
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// MQTT push intake: devices publish flat JSON at QoS 1 to a local mosquitto
    /// (started for the run) or --broker, through an MQTT feed into the live state;
    /// prints messages/s and what went missing.
    Mqtt {
        /// Messages published, in all.
        #[arg(long, default_value_t = 200_000)]
        messages: usize,
        /// Distinct devices (entities).
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Publishing clients, each on its own thread.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// A broker to use instead (mqtt://HOST:PORT).
        #[arg(long)]
        broker: Option<String>,
    },
    /// The hall's figures on a real nats-server (--nats URL, or one started on
    /// 127.0.0.1 for the run): a command at one console → visible at 4 others
    /// (p50/p99), a console joining a hall of --events events, hub failover, live
    /// layers hub → 4 consoles (updates/s).
    Hub {
        /// Commands whose propagation is timed.
        #[arg(long, default_value_t = 500)]
        commands: usize,
        /// Events in the hall a console joins.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Events per commit when filling that hall (a console's command writes 1
        /// to 6).
        #[arg(long, default_value_t = 4)]
        commit_events: usize,
        /// Entities of the live-layers run (each changes 5 times).
        #[arg(long, default_value_t = 100_000)]
        live_entities: usize,
    },
    /// Rank units by road travel time for random incidents on a generated road graph.
    Recommend {
        #[arg(long, default_value_t = 10_000)]
        units: usize,
        /// Directed edges in the generated road graph.
        #[arg(long, default_value_t = 200_000)]
        edges: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Attack every parser with generated inputs (structure-aware mutations of real
    /// seeds, and random bytes), each target in a child process; prints one JSON
    /// object (per target: inputs, panics, hangs, slowest_ms, inputs_per_s,
    /// peak_rss_mb, the saved findings) and exits non-zero if anything was found.
    Fuzz {
        /// A target (osm-pbf, geojson-map, flatgeobuf-map, ngsi-ld, ngsi-v2, geojson-feed,
        /// mqtt-payload, cap-xml, cap-list, feeds-toml, dispatch-toml, users-toml,
        /// status-report, department-answer, paging-link) or all.
        #[arg(long, default_value = "all")]
        target: String,
        /// Inputs per target.
        #[arg(long, default_value_t = 1_000_000)]
        inputs: u64,
        /// Generator seed: input i of a target under a seed is always the same.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where findings are written (DIR/<target>/<kind>-s<seed>-i<input>.bin).
        #[arg(long, default_value = "fuzz-findings")]
        save: PathBuf,
        /// The first input's number (to replay one: --from I --inputs 1).
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Growth of the peak resident memory (MB) past which an input is a finding.
        #[arg(long, default_value_t = zhongshu::fuzz::DEFAULT_MEMORY_LIMIT_MB)]
        memory_limit_mb: f64,
        /// Write the inputs under --save (DIR/<target>/input-s<seed>-i<input>.bin)
        /// instead of running them: to look at one (--from I --inputs 1 --dump).
        #[arg(long)]
        dump: bool,
        /// Run the inputs in this process, telling progress on stderr (what the
        /// command runs as its child).
        #[arg(long, hide = true)]
        worker: bool,
    },
    /// Time file → GPU-ready chunk meshes on a generated (or given) city.
    Map {
        /// Buildings in the generated city.
        #[arg(long, default_value_t = 1_000_000)]
        buildings: usize,
        /// Use this map file instead of generating one (or keep the generated one here).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The format to generate: geojson, shapefile (CGCS2000 Gauss-Krüger, GBK
        /// attributes; --crs picks the zone, default EPSG:4549) or flatgeobuf.
        #[arg(long, value_enum, default_value_t = BenchMapFormat::Geojson)]
        format: BenchMapFormat,
    },
}

/// What `bench map` generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BenchMapFormat {
    Geojson,
    Shapefile,
    Flatgeobuf,
}

fn parse_size(text: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .with_context(|| format!("--size must look like 1600x900, got {text:?}"))?;
    let (w, h): (u32, u32) = (
        w.trim()
            .parse()
            .with_context(|| format!("bad width in --size {text:?}"))?,
        h.trim()
            .parse()
            .with_context(|| format!("bad height in --size {text:?}"))?,
    );
    if !(64..=8192).contains(&w) || !(64..=8192).contains(&h) {
        bail!("--size {w}x{h} out of range: each side must be 64 to 8192 pixels");
    }
    Ok((w, h))
}

fn parse_look_at(text: &str) -> anyhow::Result<[f64; 3]> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--look-at must be LON,LAT[,DISTANCE], got {text:?}"))?;
    match parts[..] {
        [lon, lat] if zhongshu::geo_frame::is_valid_wgs84(lon, lat) => Ok([lon, lat, 600.0]),
        [lon, lat, d]
            if zhongshu::geo_frame::is_valid_wgs84(lon, lat) && d.is_finite() && d > 0.0 =>
        {
            Ok([lon, lat, d])
        }
        _ => bail!(
            "--look-at must be LON,LAT[,DISTANCE] with a real longitude/latitude, got {text:?}"
        ),
    }
}

/// `--crs` and `--coords`: how to read the map's coordinates.
/// How to read `--map` (and map-info's file): `--crs`, `--coords`, `--schema`.
fn map_load(cli: &Cli) -> map::LoadOptions {
    map::LoadOptions {
        coords: map_coords(cli),
        schema: cli.schema.clone(),
    }
}

fn map_coords(cli: &Cli) -> map::crs::MapCoords {
    map::crs::MapCoords {
        crs: cli.crs,
        coords: cli.coords,
    }
}

/// `--timezone NAME`, checked against the IANA database before anything else runs.
fn timezone_flag(name: Option<&str>) -> anyhow::Result<Option<CityTime>> {
    name.map(|name| CityTime::from_flag(name).context("--timezone"))
        .transpose()
}

fn map_info(
    path: &std::path::Path,
    load: &map::LoadOptions,
    timezone: Option<CityTime>,
) -> anyhow::Result<()> {
    let city = map::load_path_with(path, load)?;
    let time = CityTime::resolve(timezone, city.frame.origin_lon, city.frame.origin_lat);
    let t = Instant::now();
    let meshes = map::mesh::build_city_meshes(&city);
    let mesh_ms = t.elapsed().as_secs_f64() * 1000.0;
    let info = serde_json::json!({
        "name": city.name,
        "format": city.format.map(map::MapFormat::as_str),
        "schema": city.schema.to_json(),
        "buildings": city.buildings.len(),
        "roads": city.roads.len(),
        "water": city.count_areas(map::AreaKind::Water) + city.waterways.len(),
        "green": city.count_areas(map::AreaKind::Green),
        "districts": city.districts.len(),
        "skipped": city.skipped.broken_json(),
        "skipped_total": city.skipped.broken_total(),
        "pieces_dropped": city.pieces_dropped.broken_json(),
        "pieces_dropped_total": city.pieces_dropped.broken_total(),
        "not_drawn": city.skipped.not_drawn_json(),
        "not_drawn_total": city.skipped.not_drawn_total(),
        "bbox": city.bbox_wgs84,
        "origin": [city.frame.origin_lon, city.frame.origin_lat],
        "timezone": time.to_json(),
        "crs": city.crs,
        "load_ms": (city.load_ms * 10.0).round() / 10.0,
        "mesh_ms": (mesh_ms * 10.0).round() / 10.0,
        "chunks": meshes.chunks.len(),
        "triangles": meshes.triangle_count(),
    });
    let mut info = info;
    if city.crs.coords != map::crs::Coords::Wgs84 {
        info["coords"] = city.crs.coords.as_str().into();
    }
    // A Shapefile's attribute text: the encoding read in and whether its .cpg said so.
    if let Some(encoding) = &city.encoding {
        info["encoding"] = serde_json::to_value(encoding)?;
    }
    println!("{info}");
    Ok(())
}

fn bench_map(
    buildings: usize,
    file: Option<PathBuf>,
    seed: u64,
    format: BenchMapFormat,
    coords: &map::crs::MapCoords,
) -> anyhow::Result<()> {
    // A Shapefile is in a city's own projection: Gauss-Krüger CM 120E (Shanghai)
    // unless --crs says another zone.
    let crs = match format {
        BenchMapFormat::Shapefile => Some(coords.crs.unwrap_or(map::crs::Crs::from_epsg(4549)?)),
        _ => coords.crs,
    };
    let (path, generated, generate_ms) = match file {
        Some(p) if p.exists() => (p, false, None),
        other => {
            let path = other.unwrap_or_else(|| {
                let crs = crs.and_then(|c| c.epsg()).map(|c| format!("-epsg{c}"));
                let crs = crs.unwrap_or_default();
                let ext = match format {
                    BenchMapFormat::Geojson => "geojson",
                    BenchMapFormat::Shapefile => "shp",
                    BenchMapFormat::Flatgeobuf => "fgb",
                };
                std::env::temp_dir().join(format!("zhongshu-bench-{buildings}-{seed}{crs}.{ext}"))
            });
            eprintln!(
                "generating {buildings} buildings into {} ...",
                path.display()
            );
            let t = Instant::now();
            match (format, crs.as_ref()) {
                (BenchMapFormat::Geojson, crs) => {
                    bench::generate_city_geojson_in(&path, buildings, seed, crs)
                }
                (BenchMapFormat::Shapefile, Some(crs)) => {
                    bench::generate_city_shapefile(&path, buildings, seed, crs)
                }
                (BenchMapFormat::Shapefile, None) => unreachable!("a Shapefile has a CRS"),
                (BenchMapFormat::Flatgeobuf, crs) => {
                    bench::generate_city_flatgeobuf(&path, buildings, seed, crs)
                }
            }
            .with_context(|| format!("cannot write {}", path.display()))?;
            (path, true, Some(t.elapsed().as_secs_f64() * 1000.0))
        }
    };
    // Measure in a fresh process so the generator's memory does not count as peak.
    if generated {
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe);
        // A Shapefile (its .prj) and a FlatGeobuf (its header) say their CRS themselves.
        if format == BenchMapFormat::Geojson
            && let Some(code) = coords.crs.and_then(|c| c.epsg())
        {
            child.arg(format!("--crs=EPSG:{code}"));
        }
        let status = child
            .args(["bench", "map", "--file"])
            .arg(&path)
            .env(
                "ZHONGSHU_GENERATE_MS",
                format!("{}", generate_ms.unwrap_or(0.0)),
            )
            .status()?;
        if !status.success() {
            bail!("benchmark run failed: {status}");
        }
        return Ok(());
    }
    let generate_ms = std::env::var("ZHONGSHU_GENERATE_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let report = bench::bench_map_file(&path, generate_ms, coords)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The map given with `--map`, else the embedded default city.
fn load_city(
    map_path: Option<&std::path::Path>,
    load: &map::LoadOptions,
) -> anyhow::Result<map::CityMap> {
    Ok(match map_path {
        Some(p) => map::load_path_with(p, load)?,
        None if load.coords != map::crs::MapCoords::default() => {
            bail!("--crs and --coords describe a map given with --map")
        }
        None if load.schema.is_some() => {
            bail!("--schema says how a --map's fields are read: give --map too")
        }
        None => map::load_default()?,
    })
}

/// Runs `feeds` headless for `for_secs` and returns what they delivered.
fn run_feeds_for(
    setup: zhongshu::feeds::config::FeedsSetup,
    city: &map::CityMap,
    for_secs: f64,
) -> (
    zhongshu::state::LiveState,
    zhongshu::governance::health::Ingest,
) {
    use zhongshu::governance::health::Ingest;
    // Positions are indexed and checked around the map the feeds describe.
    let mut state = zhongshu::state::LiveState::new(city.frame);
    let feeds = &setup.feeds;
    let rules = zhongshu::governance::quality::QualityRules::for_city(city.bbox_wgs84)
        .with_ranges(setup.rules);
    if for_secs <= 0.0 {
        let (_tx, rx) = std::sync::mpsc::channel();
        return (state, Ingest::with_rules(feeds, rx, rules));
    }
    let (running, rx) = zhongshu::feeds::start_feeds(feeds, &setup.areas, city, 1);
    let mut ingest = Ingest::with_rules(feeds, rx, rules);
    let until = Instant::now() + std::time::Duration::from_secs_f64(for_secs);
    while Instant::now() < until {
        ingest.pump(&mut state, usize::MAX);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(running);
    ingest.pump(&mut state, usize::MAX);
    (state, ingest)
}

fn catalog(
    feeds_path: &std::path::Path,
    for_secs: f64,
    map_path: Option<&std::path::Path>,
    load: &map::LoadOptions,
) -> anyhow::Result<()> {
    if !(0.0..=86_400.0).contains(&for_secs) {
        bail!("--for must be between 0 and 86400 seconds, got {for_secs}");
    }
    let setup = zhongshu::feeds::config::load_setup(feeds_path)?;
    let city = load_city(map_path, load)?;
    let feeds = setup.feeds.clone();
    let (_, ingest) = run_feeds_for(setup, &city, for_secs);
    let catalog = zhongshu::governance::catalog::dcat_catalog(&city.name, &feeds, &ingest.schemas);
    println!("{}", serde_json::to_string_pretty(&catalog)?);
    Ok(())
}

fn feeds_check(
    feeds_path: &std::path::Path,
    for_secs: f64,
    map_path: Option<&std::path::Path>,
    load: &map::LoadOptions,
) -> anyhow::Result<()> {
    use zhongshu::clock::unix_ms_now;

    if !(0.0..=86_400.0).contains(&for_secs) {
        bail!("--for must be between 0 and 86400 seconds, got {for_secs}");
    }
    let setup = zhongshu::feeds::config::load_setup(feeds_path)?;
    let city = load_city(map_path, load)?;
    let feeds = setup.feeds.clone();
    let (state, ingest) = run_feeds_for(setup, &city, for_secs);
    let now = unix_ms_now();
    let reconciliation = zhongshu::governance::reconcile::reconcile(&state, &feeds, now);
    let mut all_ok = true;
    for (i, (feed, health)) in feeds.iter().zip(&ingest.health).enumerate() {
        all_ok &= health.last_ok_ms.is_some();
        let quality = &ingest.quality[i];
        let (fresh_status, fresh_score) =
            zhongshu::governance::quality::freshness(health.data_as_of_ms, feed.cadence_s(), now);
        let line = serde_json::json!({
            "feed": feed.name,
            "domain": feed.domain.as_str(),
            "entities": state.count_for_feed(i as u32),
            "updates": health.updates,
            "ignored": health.ignored,
            "rejected": health.rejected,
            "reasons": health.reasons,
            "poll_errors": health.poll_errors,
            "refused": health.refused,
            "reject_examples": health.reject_examples,
            "notes": health.notes,
            "values_cut": health.values_cut,
            "last_ok": health.last_ok_ms.map(zhongshu::clock::rfc3339_from_unix_ms),
            "age_s": health.age_s(now),
            "polls_ok": health.polls_ok,
            "polls_failed": health.polls_failed,
            "updates_per_s": health.updates_per_s(now),
            "last_error": health.last_error,
            "freshness": {"status": fresh_status, "score": fresh_score},
            "completeness": (quality.completeness() * 1000.0).round() / 1000.0,
            "validity": (quality.validity() * 1000.0).round() / 1000.0,
            "quality_issues": quality.issues,
            "last_quality_issue": quality.last_issue,
            "conflicts": reconciliation.conflicts_for(&feed.name),
            "conflict_examples": reconciliation
                .conflicts
                .iter()
                .filter(|c| c.winner.feed == feed.name || c.other.feed == feed.name)
                .take(3)
                .collect::<Vec<_>>(),
            "quarantined": health.quarantined.as_ref().map(|q| q.reason.clone()),
            "dropped": health.dropped,
            "withheld": health.withheld,
            "removed": health.removed,
            "expired": health.expired,
        });
        println!("{line}");
    }
    if !all_ok {
        bail!("some feeds never answered successfully (see last_error above)");
    }
    Ok(())
}

fn users_add(
    name: &str,
    file: &std::path::Path,
    role: &str,
    department: Option<&str>,
    display: Option<&str>,
) -> anyhow::Result<()> {
    use zhongshu::dispatch::users::{Users, add_user_line};
    let Some(role) = zhongshu::dispatch::Role::from_name(role) else {
        bail!("--role must be operator, dispatcher, leader or department_liaison, got {role:?}");
    };
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => bail!("cannot read {}: {e}", file.display()),
    };
    eprint!("passphrase for {name}: ");
    let mut passphrase = zeroize::Zeroizing::new(String::new());
    {
        // Not echoed on a terminal; piped input is read as it is.
        let _quiet = NoEcho::on_stdin();
        std::io::stdin().read_line(&mut passphrase)?;
    }
    eprintln!();
    let passphrase = passphrase.trim_end_matches(['\n', '\r']);
    if passphrase.chars().count() < 8 {
        bail!("the passphrase must have at least 8 characters");
    }
    let block = add_user_line(name, display.unwrap_or(name), role, department, passphrase)?;
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&block);
    // The whole file must still load (e.g. no duplicate name) before it is written.
    Users::parse(&text, &file.display().to_string())?;
    // Owner-only, and whole or not at all (written beside it, then renamed).
    zhongshu::store::write_private(file, text.as_bytes())
        .with_context(|| format!("cannot write {}", file.display()))?;
    eprintln!("added {name} ({}) to {}", role.as_str(), file.display());
    Ok(())
}

/// Turns off the terminal's echo on standard input while it lives (when standard input
/// is a terminal), so a passphrase typed is not shown.
struct NoEcho(Option<libc::termios>);

impl NoEcho {
    fn on_stdin() -> NoEcho {
        // SAFETY: plain termios calls on file descriptor 0 with a zeroed struct that
        // tcgetattr fills in; nothing is kept beyond this guard.
        unsafe {
            if libc::isatty(0) != 1 {
                return NoEcho(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut saved) != 0 {
                return NoEcho(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &quiet) != 0 {
                return NoEcho(None);
            }
            NoEcho(Some(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read from the same descriptor.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}

/// Shortest department token accepted outside demo mode.
const MIN_TOKEN_CHARS: usize = 16;

/// The dispatch desk's setup from the command line.
fn desk_setup(cli: &Cli, open: bool) -> anyhow::Result<app::desk::DeskSetup> {
    use zhongshu::dispatch::{config::DispatchConfig, users::Users};
    let implied = cli.dispatch.is_none() && cli.users.is_none();
    let demo = cli.demo || implied;
    if cli.dispatch.is_some() && cli.users.is_none() && !cli.demo {
        bail!(
            "--dispatch needs --users FILE (see `zhongshu users add`): the demo accounts have a published passphrase; add --demo to use them anyway"
        );
    }
    let config = match &cli.dispatch {
        Some(path) => DispatchConfig::load(path)?,
        None => DispatchConfig::default_config(),
    };
    if !demo {
        for d in &config.departments {
            let Some(token) = &d.token else { continue };
            if token.starts_with("demo-") || token.chars().count() < MIN_TOKEN_CHARS {
                bail!(
                    "department \"{}\": its token is a demo token or shorter than {MIN_TOKEN_CHARS} characters; give each department a long random token in {} (or add --demo)",
                    d.id,
                    cli.dispatch
                        .as_deref()
                        .map_or("--dispatch FILE".to_string(), |p| p.display().to_string())
                );
            }
        }
    }
    if demo {
        let loopback = cli
            .api
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip().is_loopback())
            .unwrap_or_else(|_| cli.api.starts_with("localhost:"));
        if !loopback {
            bail!(
                "--api {}: in demo mode (demo accounts and tokens) the status API listens on loopback only; give --users and --dispatch with real tokens to serve other machines",
                cli.api
            );
        }
        eprintln!(
            "zhongshu: DEMO MODE{} — demo accounts with the published passphrase and demo department tokens are active; not for a real deployment (give --users and --dispatch)",
            if implied {
                " (no --dispatch or --users given)"
            } else {
                ""
            }
        );
    }
    let users = match &cli.users {
        Some(path) => Users::load(path)?,
        None => Users::demo(),
    };
    let sign_in = match &cli.user {
        Some(name) => {
            let Ok(passphrase) = std::env::var("ZHONGSHU_PASSPHRASE") else {
                bail!("--user {name} needs the passphrase in ZHONGSHU_PASSPHRASE");
            };
            // Out of the environment at once, so no child process or crash report
            // carries it; the copy here is wiped after sign-in.
            // SAFETY: no other thread runs yet (the app and its runtimes start later).
            unsafe { std::env::remove_var("ZHONGSHU_PASSPHRASE") };
            // Refused here, before any window opens, so scripts see it.
            if let Err(e) = users.sign_in(name, &passphrase) {
                bail!("--user {name}: {e}");
            }
            Some((name.clone(), passphrase))
        }
        None => None,
    };
    if let Some(parent) = cli.db.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        bail!(
            "--db {}: no directory {}",
            cli.db.display(),
            parent.display()
        );
    }
    let (api_tls, api_public_url) = status_api_reach(cli)?;
    Ok(app::desk::DeskSetup {
        db: cli.db.clone(),
        seal_key: cli.seal_key.clone(),
        demo,
        config,
        users,
        sign_in,
        service: zhongshu::dispatch::service::ServiceOptions {
            api_addr: cli.api.clone(),
            api_public_url,
            api_tls,
            ..Default::default()
        },
        open,
        hall: None,
    })
}

/// An existing SQLite log opened to be checked or read, writing nothing and never
/// creating a key: without one (none at --seal-key's default place) its seals are
/// checked against the log, not the key, and the report says so.
fn open_log_to_check(cli: &Cli, db: &Path) -> anyhow::Result<zhongshu::store::EventLog> {
    if !db.exists() {
        bail!("no event log at {}", db.display());
    }
    let mut seal = zhongshu::store::SealOptions::with_key(db, cli.seal_key.as_deref());
    seal.create_key = false;
    seal.read_only = true;
    if seal.key.as_deref().is_some_and(|k| !k.exists()) {
        if let Some(key) = &cli.seal_key {
            bail!("--seal-key {}: no such file", key.display());
        }
        seal.key = None;
    }
    Ok(zhongshu::store::EventLog::open_with(db, &seal)?)
}

/// `zhongshu ops-report`: the figures of a log (SQLite, or the hall's stream),
/// checked first, as one JSON object.
fn ops_report(cli: &Cli, since: Option<String>, until: Option<String>) -> anyhow::Result<()> {
    use zhongshu::dispatch::ops;
    for (given, flag) in [
        (cli.map.is_some(), "--map"),
        (cli.feeds.is_some(), "--feeds"),
        (cli.schema.is_some(), "--schema"),
        (cli.select.is_some(), "--select"),
        (cli.look_at.is_some(), "--look-at"),
        (cli.steward, "--steward"),
        (cli.users.is_some(), "--users"),
        (cli.user.is_some(), "--user"),
        (cli.api_public_url.is_some(), "--api-public-url"),
        (cli.api_tls_cert.is_some(), "--api-tls-cert"),
        (cli.timezone.is_some(), "--timezone"),
    ] {
        if given {
            bail!(
                "{flag}: ops-report reads only the event log (--db, or --nats/--hall), --dispatch for the departments and service targets, and --seal-key; its times are UTC (RFC 3339)"
            );
        }
    }
    let time = |flag: &str, text: Option<String>| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            zhongshu::clock::parse_instant_ms(&t).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
        })
        .transpose()
    };
    let since_ms = time("--since", since)?;
    let until_ms = time("--until", until)?;
    if let (Some(s), Some(u)) = (since_ms, until_ms)
        && s > u
    {
        bail!("--since is after --until: nothing lies between them");
    }
    let config = match &cli.dispatch {
        Some(path) => zhongshu::dispatch::config::DispatchConfig::load(path)?,
        None => zhongshu::dispatch::config::DispatchConfig::default_config(),
    };
    let now_ms = zhongshu::clock::unix_ms_now();
    let report = if cli.nats.is_some() {
        // (A --db named like the default is taken for the default: `drill_db`.)
        if cli.db.file_name() != Some(std::ffi::OsStr::new(DEFAULT_DB)) {
            bail!("--db and --nats: give one log, the SQLite file or the hall's stream");
        }
        let log = cli
            .hall_log("ops-report", false)?
            .context("ops-report needs --nats URL with --hall NAME")?;
        ops::report_from_store(&log, &config, since_ms, until_ms, now_ms)?
    } else {
        let log = open_log_to_check(cli, &cli.db)?;
        ops::report_from_event_log(&log, &config, since_ms, until_ms, now_ms)?
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `zhongshu record`: the feeds run for a while, every change recorded.
fn record(
    cli: &Cli,
    for_secs: f64,
    history: &Path,
    retention_days: f64,
    load: &map::LoadOptions,
) -> anyhow::Result<()> {
    if !(0.0..=86_400.0 * 366.0).contains(&for_secs) {
        bail!("--for must be between 0 and a year of seconds, got {for_secs}");
    }
    if !(retention_days.is_finite() && retention_days > 0.0 && retention_days <= 3660.0) {
        bail!("--retention-days must be more than 0 and at most 3660, got {retention_days}");
    }
    let setup = match &cli.feeds {
        Some(path) => zhongshu::feeds::config::load_setup(path)?,
        None => zhongshu::feeds::config::FeedsSetup {
            feeds: zhongshu::feeds::sim_source::default_sim_feeds(),
            rules: Vec::new(),
            areas: Vec::new(),
            open_data: Default::default(),
        },
    };
    let city = load_city(cli.map.as_deref(), load)?;
    let options = zhongshu::history::HistoryOptions {
        retention_ms: (retention_days * zhongshu::history::DAY_MS as f64) as i64,
        ..Default::default()
    };
    let report = zhongshu::history::record::record_for(&setup, &city, for_secs, history, options)?;
    println!("{}", serde_json::to_string(&report)?);
    if report.writer.errors > 0 {
        bail!(
            "the history could not be written in full: {}",
            report.writer.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// `zhongshu state-at`: the recorded city and the dispatch book at one instant.
fn state_at(cli: &Cli, at: &str, history: &Path, load: &map::LoadOptions) -> anyhow::Result<()> {
    use zhongshu::dispatch::ops;
    let at_ms = zhongshu::clock::parse_instant_ms(at).map_err(|e| anyhow::anyhow!("--at: {e}"))?;
    let opened = zhongshu::history::History::open(history)?;
    let snap = opened.state_at(at_ms)?;
    if let Some(note) = snap.after_the_end() {
        eprintln!("zhongshu: {note}");
    }
    let city = load_city(cli.map.as_deref(), load)?;
    let config = match &cli.dispatch {
        Some(path) => zhongshu::dispatch::config::DispatchConfig::load(path)?,
        None => zhongshu::dispatch::config::DispatchConfig::default_config(),
    };
    let dispatch = if cli.nats.is_some() {
        if cli.db.file_name() != Some(std::ffi::OsStr::new(DEFAULT_DB)) {
            bail!("--db and --nats: give one log, the SQLite file or the hall's stream");
        }
        let log = cli
            .hall_log("state-at", false)?
            .context("state-at needs --nats URL with --hall NAME")?;
        zhongshu::history::state_at::dispatch_json(&ops::book_from_store(&log, &config, at_ms)?)
    } else if cli.db.exists() {
        let log = open_log_to_check(cli, &cli.db)?;
        zhongshu::history::state_at::dispatch_json(&ops::book_from_event_log(&log, &config, at_ms)?)
    } else if cli.db.file_name() == Some(std::ffi::OsStr::new(DEFAULT_DB)) {
        serde_json::json!({"note": format!("no event log at {}", cli.db.display())})
    } else {
        bail!("no event log at {}", cli.db.display());
    };
    let json = zhongshu::history::state_at::state_json(&snap, city.frame, dispatch);
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

/// The history a command reads: `--history`, or with `--nats`/`--hall` the hall's
/// (recorded by its hub), mirrored first into `--history/hall-HALL`.
fn history_dir(cli: &Cli, what: &str) -> anyhow::Result<PathBuf> {
    if cli.nats.is_none() && cli.hall.is_none() {
        return Ok(cli.history.clone());
    }
    let (nats, hall) = hall_nats(cli, what)?;
    let dir = zhongshu::hall::history::mirror_dir(&cli.history, &hall);
    let mut mirror =
        zhongshu::hall::history::Mirror::open(&nats, &hall, &dir).map_err(anyhow::Error::msg)?;
    // What cannot be fetched now is said; what is mirrored already is read.
    match mirror.sync(&nats) {
        Ok(report) => {
            for problem in &report.problems {
                eprintln!("zhongshu: the hall's history: {problem}");
            }
            eprintln!(
                "zhongshu: the hall's history: {} segments ({} fetched) in {}",
                report.segments,
                report.fetched,
                dir.display()
            );
        }
        Err(e) => eprintln!(
            "zhongshu: the hall's history could not be brought up to date ({e}); reading what {} holds",
            dir.display()
        ),
    }
    Ok(dir)
}

/// `zhongshu export`: a window of the history as GeoJSON lines.
fn export(from: &str, to: &str, out: &Path, format: &str, history: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    if !matches!(format, "geojsonl" | "geojsonseq" | "ndjson") {
        bail!("--format {format}: the one format written is geojsonl (GeoJSON lines)");
    }
    let from_ms =
        zhongshu::clock::parse_instant_ms(from).map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let to_ms = zhongshu::clock::parse_instant_ms(to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if from_ms > to_ms {
        bail!("--from {from} is after --to {to}");
    }
    let opened = zhongshu::history::History::open(history)?;
    // Never into the history itself: a file there would be read as a segment, or
    // replace one.
    if let (Some(parent), Ok(folder)) = (
        out.parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .and_then(|p| p.canonicalize().ok()),
        history.canonicalize(),
    ) && parent == folder
    {
        bail!(
            "--out {}: inside the history folder {}; write the export elsewhere",
            out.display(),
            history.display()
        );
    }
    let export = |w: &mut dyn Write| {
        let stats = zhongshu::history::export::export_geojsonl(&opened, from_ms, to_ms, w)?;
        w.flush()?;
        anyhow::Ok(stats)
    };
    let through = std::fs::symlink_metadata(out)
        .ok()
        .is_some_and(|m| !m.file_type().is_file() && !m.is_dir());
    let stats = if out.as_os_str() == "-" {
        export(&mut std::io::BufWriter::new(std::io::stdout().lock()))?
    } else if through {
        // A device, a fifo or a link: written through, never replaced.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        export(&mut std::io::BufWriter::new(file))
            .with_context(|| format!("export to {} failed", out.display()))?
    } else {
        // Written beside the target under a name of its own and moved over it at the
        // end: a failed export leaves no half file, and an earlier one stays whole.
        let name = out
            .file_name()
            .with_context(|| format!("--out {}: not a file name", out.display()))?;
        let mut partial = std::ffi::OsString::from(".");
        partial.push(name);
        partial.push(format!(".{}.partial", std::process::id()));
        let tmp = out.with_file_name(partial);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let written = export(&mut w)
            .and_then(|stats| {
                w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(stats)
            })
            .and_then(|stats| {
                std::fs::rename(&tmp, out)
                    .with_context(|| format!("cannot move the export to {}", out.display()))?;
                Ok(stats)
            });
        match written {
            Ok(stats) => stats,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("export to {} failed", out.display())));
            }
        }
    };
    let mut report = serde_json::to_value(&stats)?;
    report["out"] = out.display().to_string().into();
    report["format"] = "geojsonl".into();
    if out.as_os_str() == "-" {
        eprintln!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A drill's log: --db, never a file named like the hall's own however it is
/// written (else a temporary one).
fn drill_db(cli: &Cli) -> Option<PathBuf> {
    (cli.db.file_name() != Some(std::ffi::OsStr::new(DEFAULT_DB))).then(|| cli.db.clone())
}

/// A drill plays the embedded city, its own feeds, departments and log: options it
/// would not use are refused rather than silently ignored (a user must never think
/// the hall's log, or their own city, was drilled). A snapshot's path is tried now,
/// not when half the storm has passed.
fn drill_uses_only_its_options(cli: &Cli, snapshot: Option<&Path>) -> anyhow::Result<()> {
    for (given, flag) in [
        (cli.nats.is_some(), "--nats"),
        (cli.hall.is_some(), "--hall"),
        (cli.map.is_some(), "--map"),
        (cli.feeds.is_some(), "--feeds"),
        (cli.seal_key.is_some(), "--seal-key"),
        (cli.dispatch.is_some(), "--dispatch"),
        (cli.users.is_some(), "--users"),
        (cli.user.is_some(), "--user"),
        (cli.api_public_url.is_some(), "--api-public-url"),
        (cli.api_tls_cert.is_some(), "--api-tls-cert"),
    ] {
        if given {
            bail!(
                "{flag}: a drill plays the embedded city with its own feeds, departments and log (a new SQLite file, --db), so it does not take {flag}"
            );
        }
    }
    if let Some(path) = snapshot {
        let fresh = !path.exists();
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("--snapshot {}: {e}", path.display()))?;
        if fresh {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM stop a long-running command cleanly (a drill with its report,
/// the hub, the open-data server): the flag they set.
fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    // SAFETY: plain handlers that only store to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_stop_signal as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_stop_signal as *const () as libc::sighandler_t,
        );
    }
    &STOP
}

/// A drill that dropped, was refused or could not write anything failed: after its
/// report, the command exits non-zero saying why.
fn drill_verdict(report: &zhongshu::surge::SurgeReport) -> anyhow::Result<()> {
    if report.interrupted {
        bail!("the drill was interrupted: its figures are of the part that ran");
    }
    match report.failure() {
        Some(why) => bail!("the drill failed: {why}"),
        None => Ok(()),
    }
}

/// A console of a hall, with --nats and --hall.
fn hall_console(cli: &Cli) -> anyhow::Result<Option<app::desk::HallSetup>> {
    if cli.nats.is_none() && cli.hall.is_none() {
        return Ok(None);
    }
    let (nats, hall) = hall_nats(cli, "console")?;
    Ok(Some(app::desk::HallSetup {
        nats,
        hall,
        replicas: cli.nats_replicas,
    }))
}

/// TLS and the public URL of the status API, checked: beyond this machine tokens
/// travel over HTTPS only (unless --api-insecure-http), and a wildcard address needs a
/// public URL departments can reach.
#[allow(clippy::type_complexity)]
fn status_api_reach(
    cli: &Cli,
) -> anyhow::Result<(Option<(zhongshu::http::Tls, Vec<u8>)>, Option<String>)> {
    let tls = match (&cli.api_tls_cert, &cli.api_tls_key) {
        (Some(cert), Some(key)) => {
            let tls = zhongshu::http::Tls::from_pem_files(cert, key)
                .map_err(|e| anyhow::anyhow!("--api-tls-cert/--api-tls-key: {e}"))?;
            let pem =
                std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
            Some((tls, pem))
        }
        _ => None,
    };
    let addr: Option<std::net::SocketAddr> = cli.api.parse().ok();
    let loopback = addr.map_or_else(
        || cli.api.starts_with("localhost:"),
        |a| a.ip().is_loopback(),
    );
    if !loopback && tls.is_none() && !cli.api_insecure_http {
        bail!(
            "--api {}: beyond this machine the status API needs HTTPS (--api-tls-cert and --api-tls-key), or --api-insecure-http behind a TLS proxy: department tokens must not cross a network in clear",
            cli.api
        );
    }
    if let Some(url) = &cli.api_public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        bail!("--api-public-url {url:?}: not an http(s) URL");
    }
    if addr.is_some_and(|a| a.ip().is_unspecified()) && cli.api_public_url.is_none() {
        bail!(
            "--api {}: departments cannot report to a wildcard address; give --api-public-url with the name or address they reach this machine at",
            cli.api
        );
    }
    Ok((tls, cli.api_public_url.clone()))
}

/// The desk's briefing (its top-bar button, F5): this program's `briefing`, on the
/// same map, log and time zone as the desk.
fn briefing_command(cli: &Cli) -> Vec<std::ffi::OsString> {
    let program = std::env::current_exe()
        .map(|p| p.into_os_string())
        .unwrap_or_else(|_| "zhongshu".into());
    let mut args: Vec<std::ffi::OsString> = vec![program, "briefing".into()];
    let mut flag = |name: &str, value: std::ffi::OsString| {
        args.push(format!("--{name}").into());
        args.push(value);
    };
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.clone().into_os_string());
    for (name, value) in [
        ("map", path(&cli.map)),
        ("schema", path(&cli.schema)),
        ("seal-key", path(&cli.seal_key)),
        ("dispatch", path(&cli.dispatch)),
        ("nats-auth", path(&cli.nats_auth)),
        ("db", Some(cli.db.clone().into_os_string())),
        ("history", Some(cli.history.clone().into_os_string())),
        (
            "crs",
            cli.crs
                .as_ref()
                .and_then(|c| c.epsg())
                .map(|c| format!("EPSG:{c}").into()),
        ),
        ("coords", Some(cli.coords.to_string().into())),
        ("timezone", cli.timezone.clone().map(Into::into)),
        ("nats", cli.nats.clone().map(Into::into)),
        ("hall", cli.hall.clone().map(Into::into)),
        ("nats-domain", cli.nats_domain.clone().map(Into::into)),
        ("ui-scale", Some(cli.ui_scale.to_string().into())),
    ] {
        if let Some(value) = value {
            flag(name, value);
        }
    }
    args
}

fn run(mut cli: Cli) -> anyhow::Result<()> {
    let look_at = cli.look_at.as_deref().map(parse_look_at).transpose()?;
    let timezone = timezone_flag(cli.timezone.as_deref())?;
    let map_load = map_load(&cli);
    let command = match cli.command.take() {
        Some(command) => command,
        None if cli.briefing => Command::Briefing {
            out: None,
            since: None,
            until: None,
            size: "1920x1080".into(),
            presenter: false,
            screenshot_dir: None,
        },
        None => Command::Run,
    };
    // (`bench hub` makes halls of its own on the server it is given.)
    if cli.nats.is_some() != cli.hall.is_some()
        && !matches!(command, Command::Bench(BenchCommand::Hub { .. }))
    {
        bail!("--nats URL and --hall NAME go together");
    }
    match command {
        Command::Run => {
            let mut desk = desk_setup(&cli, true)?;
            desk.hall = hall_console(&cli)?;
            let briefing = briefing_command(&cli);
            app::run(AppOptions {
                map: cli.map,
                map_load: map_load.clone(),
                look_at,
                select: cli.select,
                feeds: cli.feeds,
                steward: cli.steward,
                ui_scale: cli.ui_scale,
                timezone,
                screenshot: None,
                briefing: Some(briefing),
                desk: Some(desk),
                drill: None,
                history: (!cli.no_history).then(|| cli.history.clone()),
                past: None,
            })
        }
        Command::Briefing {
            out,
            since,
            until,
            size,
            presenter,
            screenshot_dir,
        } => {
            use zhongshu::dispatch::ops;
            let time = |flag: &str, text: Option<String>| -> anyhow::Result<Option<i64>> {
                text.map(|t| {
                    zhongshu::clock::parse_instant_ms(&t)
                        .map_err(|e| anyhow::anyhow!("{flag}: {e}"))
                })
                .transpose()
            };
            let now_ms = zhongshu::clock::unix_ms_now();
            let until_given = until.is_some();
            let until_ms = time("--until", until)?.unwrap_or(now_ms);
            let since_ms =
                time("--since", since)?.unwrap_or(until_ms.saturating_sub(8 * 3_600_000));
            if since_ms >= until_ms {
                bail!(
                    "--since is {} --until{}: nothing lies between them",
                    if since_ms == until_ms {
                        "the same instant as"
                    } else {
                        "after"
                    },
                    if until_given {
                        ""
                    } else {
                        " (now, when not given)"
                    }
                );
            }
            let size = parse_size(&size)?;
            if size.0 < 640 || size.1 < 360 {
                bail!(
                    "--size {}x{}: a slide is at least 640x360 (its text would not fit)",
                    size.0,
                    size.1
                );
            }
            let config = match &cli.dispatch {
                Some(path) => zhongshu::dispatch::config::DispatchConfig::load(path)?,
                None => zhongshu::dispatch::config::DispatchConfig::default_config(),
            };
            let (report, book) = if cli.nats.is_some() {
                let log = cli
                    .hall_log("briefing", false)?
                    .context("briefing needs --nats URL with --hall NAME")?;
                ops::report_and_book_from_store(
                    &log,
                    &config,
                    Some(since_ms),
                    Some(until_ms),
                    until_ms,
                )?
            } else {
                let log = open_log_to_check(&cli, &cli.db)?;
                ops::report_and_book_from_event_log(
                    &log,
                    &config,
                    Some(since_ms),
                    Some(until_ms),
                    until_ms,
                )?
            };
            let map = app::load_map(cli.map.as_deref(), &map_load)?;
            let zone = zhongshu::clock::CityTime::resolve(
                timezone.clone(),
                map.frame.origin_lon,
                map.frame.origin_lat,
            );
            let mut deck = zhongshu::briefing::deck(&book, &report, since_ms, until_ms, &zone);
            // The vital signs over the period, from the recorded history when there
            // is one (the overview says when there is none).
            let samples = if cli.nats.is_none() && !cli.history.is_dir() {
                eprintln!(
                    "zhongshu: {} (--history): the vital signs are not charted",
                    if cli.history.exists() {
                        format!("{} is not a folder", cli.history.display())
                    } else {
                        format!("no history folder at {}", cli.history.display())
                    }
                );
                Vec::new()
            } else {
                match history_dir(&cli, "briefing")
                    .and_then(|dir| zhongshu::history::History::open(&dir))
                {
                    Ok(history) => {
                        let instants = zhongshu::briefing::chart_instants(
                            since_ms,
                            until_ms,
                            zhongshu::briefing::VITAL_SIGN_INSTANTS,
                        );
                        let (samples, problems) = zhongshu::briefing::vital_signs_from_history(
                            &history, map.frame, &instants,
                        );
                        for p in problems {
                            eprintln!("zhongshu: the history: {p}");
                        }
                        samples
                    }
                    Err(e) => {
                        eprintln!("zhongshu: the vital signs are not charted: {e:#}");
                        Vec::new()
                    }
                }
            };
            deck.add_vital_signs(&samples);
            eprintln!(
                "zhongshu: briefing of {} – {}: {} slides, {} key incidents",
                zhongshu::clock::rfc3339_from_unix_ms(since_ms),
                zhongshu::clock::rfc3339_from_unix_ms(until_ms),
                deck.slides.len(),
                deck.incident_ids().len()
            );
            let (screenshots, mode) = match out {
                Some(out) => (
                    Some((out.clone(), size)),
                    app::wall::BriefingMode::Write { out },
                ),
                None => (
                    screenshot_dir.map(|dir| (dir, size)),
                    app::wall::BriefingMode::Present { presenter },
                ),
            };
            app::wall::run(app::wall::WallRun {
                map: cli.map,
                map_load: map_load.clone(),
                feeds: None,
                timezone,
                layout: None,
                screenshots,
                log: None,
                hall: None,
                ui_scale: cli.ui_scale,
                bench_secs: None,
                briefing: Some(app::wall::BriefingRun { deck, book, mode }),
                history: None,
            })
        }
        Command::Wall {
            layout,
            screenshot_dir,
            size,
        } => {
            // The layout is checked whole before any window opens.
            let layout = layout
                .map(|path| zhongshu::wall::WallLayout::load(&path))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let screenshots = match screenshot_dir {
                Some(dir) => Some((dir, parse_size(&size)?)),
                None => None,
            };
            let config = match &cli.dispatch {
                Some(path) => zhongshu::dispatch::config::DispatchConfig::load(path)?,
                None => zhongshu::dispatch::config::DispatchConfig::default_config(),
            };
            let hall = hall_console(&cli)?;
            let seal = zhongshu::store::SealOptions::with_key(&cli.db, cli.seal_key.as_deref());
            let open = app::desk::past_log(&cli.db, &seal, hall.as_ref());
            // The trends start from the recorded history: this machine's, or in a
            // hall the hall's as last mirrored here.
            let wall_history = match &hall {
                Some(h) => zhongshu::hall::history::mirror_dir(&cli.history, &h.hall),
                None => cli.history.clone(),
            };
            let wall_history = wall_history.is_dir().then_some(wall_history);
            app::wall::run(app::wall::WallRun {
                map: cli.map,
                map_load: map_load.clone(),
                feeds: cli.feeds,
                timezone,
                layout,
                screenshots,
                log: Some((open, config)),
                hall: hall.map(|h| (h.nats, h.hall)),
                ui_scale: cli.ui_scale,
                bench_secs: None,
                briefing: None,
                history: wall_history,
            })
        }
        Command::Screenshot { out, size, at } => {
            let size = parse_size(&size)?;
            // The past, read before any window opens: a time outside the history is
            // a plain error. The desk a --user opens is the live dispatch service (it
            // delivers pending orders, runs the clock, serves the status API): never
            // for a picture of the past.
            if at.is_some() && cli.user.is_some() {
                bail!(
                    "--at shows the recorded city; --user would open the live dispatch desk (it delivers orders and runs the clock): give one"
                );
            }
            // With --nats/--hall: the hall's history, mirrored.
            let history = match at {
                Some(_) => history_dir(&cli, "screenshot")?,
                None => cli.history.clone(),
            };
            let past = match at {
                Some(at) => {
                    let at_ms = zhongshu::clock::parse_instant_ms(&at)
                        .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
                    let snap = zhongshu::history::History::open(&history)?.state_at(at_ms)?;
                    for problem in &snap.problems {
                        eprintln!("zhongshu: history: {problem}");
                    }
                    if let Some(note) = snap.after_the_end() {
                        eprintln!("zhongshu: {note}");
                    }
                    eprintln!(
                        "zhongshu: the city as it stood at {}: {} entities",
                        zhongshu::clock::rfc3339_from_unix_ms(at_ms),
                        snap.entities.len()
                    );
                    Some(std::sync::Arc::new(snap))
                }
                None => None,
            };
            // The dispatch desk is in the picture when someone signs in for it;
            // otherwise a screenshot touches no event log and opens no port.
            let desk = match cli.user {
                Some(_) => {
                    let mut desk = desk_setup(&cli, true)?;
                    desk.hall = hall_console(&cli)?;
                    Some(desk)
                }
                None => None,
            };
            let briefing = briefing_command(&cli);
            app::run(AppOptions {
                map: cli.map,
                map_load: map_load.clone(),
                look_at,
                select: cli.select,
                feeds: cli.feeds,
                steward: cli.steward,
                ui_scale: cli.ui_scale,
                timezone,
                screenshot: Some(app::ScreenshotRequest { out, size }),
                desk,
                drill: None,
                // Read by the timeline, standing at --at; nothing is recorded.
                history: past.as_ref().map(|_| history.clone()),
                past,
                briefing: Some(briefing),
            })
        }
        Command::MapInfo { path } => map_info(&path, &map_load, timezone),
        Command::ServeSim { addr, seed } => {
            let city = load_city(cli.map.as_deref(), &map_load)?;
            let mut config = zhongshu::sim::SimConfig::for_map(&city);
            config.seed = seed;
            let sim = zhongshu::sim::Simulator::new(&city, config, zhongshu::clock::unix_ms_now());
            zhongshu::sim::serve::serve(&addr, sim)
        }
        Command::ServeOpenData {
            addr,
            keys,
            access_log,
            public_url,
            tls_cert,
            tls_key,
            insecure_http,
        } => serve_open_data(
            &cli,
            OpenDataFlags {
                addr,
                keys,
                access_log,
                public_url,
                tls: tls_cert.zip(tls_key),
                insecure_http,
            },
        ),
        Command::OpenData(OpenDataCommand::Keys(OpenDataKeysCommand::Add {
            name,
            file,
            rate_per_s,
        })) => {
            let key = zhongshu::governance::open_data::keys::add_client(&file, &name, rate_per_s)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "added client {name} to {}; its key, shown this once:",
                file.display()
            );
            println!("{key}");
            Ok(())
        }
        Command::Hub {
            open_data,
            open_data_keys,
            open_data_log,
            open_data_url,
            retention_days,
        } => {
            let open_data = match (open_data, open_data_keys) {
                (Some(addr), Some(keys)) => Some(OpenDataFlags {
                    addr,
                    keys,
                    access_log: open_data_log,
                    public_url: open_data_url,
                    tls: cli.api_tls_cert.clone().zip(cli.api_tls_key.clone()),
                    insecure_http: cli.api_insecure_http,
                }),
                _ => None,
            };
            run_hub(&cli, open_data, retention_days)
        }
        Command::HallStatus => hall_status(&cli),
        Command::Audit(AuditCommand::Verify { .. }) if cli.nats.is_some() => {
            let log = cli
                .hall_log("audit", false)?
                .expect("clap requires --db or --nats");
            let mut report = zhongshu::store::EventStore::verify(&log)?;
            let (mut incidents, mut orders, mut not_permitted) = (0u64, 0u64, 0u64);
            let mut not_permitted_examples = Vec::new();
            zhongshu::store::EventStore::scan_replay(&log, &mut |_, operator, role, payload| {
                use zhongshu::dispatch::{Role, book::Event};
                let Ok(event) = serde_json::from_str::<Event>(payload) else {
                    return;
                };
                // What no console takes in (forged past their checks) is named, not
                // counted.
                if !Role::from_name(role).is_some_and(|r| event.permitted_for(r)) {
                    not_permitted += 1;
                    if not_permitted_examples.len() < 10 {
                        not_permitted_examples.push(format!(
                            "{} by {operator} ({role}) is not permitted for that role and is not taken in",
                            event.kind()
                        ));
                    }
                    return;
                }
                match event {
                    Event::IncidentReported { .. } => incidents += 1,
                    Event::OrderIssued { .. } => orders += 1,
                    _ => {}
                }
            })?;
            report.problems.extend(not_permitted_examples);
            let mut json = verify_json(&report, incidents, orders);
            json["log"] = zhongshu::store::EventStore::describe(&log).into();
            json["not_permitted"] = not_permitted.into();
            println!("{json}");
            if !report.chain_ok || not_permitted > 0 {
                bail!(
                    "the hall's log does not verify: {}",
                    report.problems.join("; ")
                );
            }
            Ok(())
        }
        Command::Audit(AuditCommand::Verify { db }) => {
            let Some(db) = db else {
                bail!("audit verify needs --db FILE, or --nats URL --hall NAME");
            };
            let log = open_log_to_check(&cli, &db)?;
            let (mut incidents, mut orders) = (0u64, 0u64);
            let report = log.verify_with(|e| match e.kind.as_str() {
                "incident_reported" => incidents += 1,
                "order_issued" => orders += 1,
                _ => {}
            })?;
            println!("{}", verify_json(&report, incidents, orders));
            if !report.chain_ok {
                bail!(
                    "the event log does not verify: {}",
                    report.problems.join("; ")
                );
            }
            Ok(())
        }
        Command::OpsReport { since, until } => ops_report(&cli, since, until),
        Command::Record {
            for_secs,
            retention_days,
        } => record(&cli, for_secs, &cli.history, retention_days, &map_load),
        Command::StateAt { ref at } => {
            state_at(&cli, at, &history_dir(&cli, "state-at")?, &map_load)
        }
        Command::Export {
            ref from,
            ref to,
            ref out,
            ref format,
        } => export(from, to, out, format, &history_dir(&cli, "export")?),
        Command::Audit(AuditCommand::Seal { db }) => {
            if !db.exists() {
                bail!("no event log at {}", db.display());
            }
            let seal = zhongshu::store::SealOptions::with_key(&db, cli.seal_key.as_deref());
            let mut log = zhongshu::store::EventLog::open_with(&db, &seal)?;
            let made = log.adopt()?;
            println!(
                "{}",
                serde_json::json!({"sealed_from": made.from_seq, "sealed_to": made.seq, "hash": made.hash})
            );
            Ok(())
        }
        Command::Catalog { for_secs } => {
            let Some(feeds) = cli.feeds.as_deref() else {
                bail!("catalog needs --feeds FILE");
            };
            catalog(feeds, for_secs, cli.map.as_deref(), &map_load)
        }
        Command::FeedsCheck { for_secs } => {
            let Some(feeds) = cli.feeds.as_deref() else {
                bail!("feeds-check needs --feeds FILE");
            };
            feeds_check(feeds, for_secs, cli.map.as_deref(), &map_load)
        }
        Command::Bench(BenchCommand::Ingest { entities, rounds }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_ingest(entities, rounds))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::History {
            entities,
            seconds,
            seeks,
        }) => {
            if entities == 0 || seconds < 3 || seeks == 0 {
                bail!("bench history needs --entities ≥ 1, --seconds ≥ 3 and --seeks ≥ 1");
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_history(entities, seconds, seeks)?)?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Labels { candidates }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_labels(candidates)?)?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Frame { entities }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_frame(entities))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Reconcile {
            entities,
            at_one_point,
        }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_reconcile(entities, at_one_point))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Soak {
            hours,
            minutes: Some(minutes),
            every_min,
            seed,
            window,
            snapshot,
        }) => {
            if hours.is_some() {
                bail!(
                    "--hours and --minutes: give one, --hours for simulated time or --minutes for real time"
                );
            }
            drill_uses_only_its_options(&cli, snapshot.as_deref())?;
            let options = zhongshu::surge::LiveSoakOptions {
                minutes,
                db: drill_db(&cli),
                seed,
                // A minute, or the whole of a shorter run.
                sample_every_s: every_min.unwrap_or(minutes.min(1.0)) * 60.0,
                // Headless, SIGINT and SIGTERM end it with its report (set below).
                interrupt: None,
            };
            let report = if window {
                let drill = options.drill()?;
                let outcome = app::drill::run(&drill, cli.ui_scale, timezone, snapshot)?;
                zhongshu::surge::soak_report(&drill, outcome)
            } else {
                let options = zhongshu::surge::LiveSoakOptions {
                    interrupt: Some(stop_on_signals()),
                    ..options
                };
                zhongshu::surge::bench_soak_live(
                    &options,
                    |line| eprintln!("{line}"),
                    |s| eprintln!("{s}"),
                )?
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            drill_verdict(&report.totals)
        }
        Command::Bench(BenchCommand::Soak {
            hours,
            minutes: None,
            every_min,
            seed,
            window: _,
            snapshot: _,
        }) => {
            let hours = hours.unwrap_or(24.0);
            let every_min = every_min.unwrap_or(30.0);
            if !(hours.is_finite() && hours > 0.0 && hours <= 8760.0) {
                anyhow::bail!("--hours {hours}: give simulated hours above 0, at most 8760");
            }
            if !(every_min.is_finite() && every_min > 0.0 && every_min <= hours * 60.0) {
                anyhow::bail!(
                    "--every-min {every_min}: give simulated minutes above 0, at most the run ({} min)",
                    hours * 60.0
                );
            }
            let options = bench::SoakOptions {
                simulated_hours: hours,
                sample_every_min: every_min,
                seed,
            };
            let report = bench::bench_soak(&options, |s| {
                eprintln!(
                    "{:6.2} h simulated, {:7.1} s: {:7.1} MB, {} entities, {} slots",
                    s.simulated_h, s.wall_s, s.rss_mb, s.entities, s.state_slots
                )
            })?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Surge {
            minutes,
            scale,
            seed,
            window,
            snapshot,
        }) => {
            drill_uses_only_its_options(&cli, snapshot.as_deref())?;
            let options = zhongshu::surge::SurgeOptions {
                minutes,
                scale,
                db: drill_db(&cli),
                seed,
                // Headless, SIGINT and SIGTERM end it with its report (set below).
                interrupt: None,
            };
            let report = if window {
                app::drill::run(&options.drill()?, cli.ui_scale, timezone, snapshot)?.report
            } else {
                let options = zhongshu::surge::SurgeOptions {
                    interrupt: Some(stop_on_signals()),
                    ..options
                };
                zhongshu::surge::bench_surge(&options, |line| eprintln!("{line}"))?
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            drill_verdict(&report)
        }
        Command::Bench(BenchCommand::Sim { vehicles, seconds }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bench::bench_sim(vehicles, seconds)?)?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Markers { markers, seconds }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&app::bench_markers::run(markers, seconds))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Wall {
            seconds,
            size,
            layout,
        }) => {
            const FOUR_TILES: &str = "[[screen]]\nname = \"bench\"\ncolumns = 2\nrows = 2\n\n[[screen.tile]]\nkind = \"map\"\nat = [0, 0]\n\n[[screen.tile]]\nkind = \"hotspot\"\nat = [1, 0]\n\n[[screen.tile]]\nkind = \"kpi\"\nat = [0, 1]\n\n[[screen.tile]]\nkind = \"incidents\"\nat = [1, 1]\n";
            let layout = match layout {
                Some(path) => zhongshu::wall::WallLayout::load(&path),
                None => zhongshu::wall::WallLayout::parse(FOUR_TILES, None),
            }
            .map_err(anyhow::Error::msg)?;
            let seal = zhongshu::store::SealOptions::with_key(&cli.db, cli.seal_key.as_deref());
            let open = app::desk::past_log(&cli.db, &seal, None);
            app::wall::run(app::wall::WallRun {
                map: cli.map,
                map_load: map_load.clone(),
                feeds: cli.feeds,
                timezone,
                layout: Some(layout),
                screenshots: Some((PathBuf::new(), parse_size(&size)?)),
                log: Some((
                    open,
                    zhongshu::dispatch::config::DispatchConfig::default_config(),
                )),
                hall: None,
                ui_scale: cli.ui_scale,
                bench_secs: Some(seconds.clamp(1.0, 600.0)),
                briefing: None,
                history: None,
            })
        }
        Command::Bench(BenchCommand::Desk {
            orders,
            frames,
            overdue,
        }) => {
            let report = app::bench_desk::run(orders, frames, overdue)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Briefing {
            incidents,
            size,
            out,
        }) => {
            parse_size(&size)?;
            let scratch = std::env::temp_dir().join(format!(
                "zhongshu-bench-briefing-{}-{}",
                std::process::id(),
                zhongshu::clock::unix_ms_now()
            ));
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("cannot make {}", scratch.display()))?;
            let db = scratch.join("shift.db");
            let until_ms = zhongshu::clock::unix_ms_now();
            let started = Instant::now();
            let shift = zhongshu::dispatch::bench::shift_log(&db, incidents, until_ms)?;
            let log_ms = started.elapsed().as_millis() as u64;
            let deck = out.clone().unwrap_or_else(|| scratch.join("deck"));
            let mut child = std::process::Command::new(std::env::current_exe()?);
            child
                .arg("briefing")
                .arg("--db")
                .arg(&db)
                .arg("--out")
                .arg(&deck)
                .args(["--size", &size])
                .arg("--until")
                .arg(until_ms.to_string())
                .arg("--history")
                .arg(scratch.join("no-history"));
            if let Some(map) = &cli.map {
                child.arg("--map").arg(map);
            }
            let started = Instant::now();
            let run = child
                .stderr(std::process::Stdio::piped())
                .output()
                .context("cannot start zhongshu briefing")?;
            let briefing_ms = started.elapsed().as_millis() as u64;
            let _ = std::fs::remove_dir_all(&scratch);
            if !run.status.success() {
                let stderr = String::from_utf8_lossy(&run.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                bail!(
                    "the briefing failed: {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
            let report: serde_json::Value = String::from_utf8_lossy(&run.stdout)
                .lines()
                .find_map(|l| serde_json::from_str(l).ok())
                .context("the briefing printed no JSON line")?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "shift": shift,
                    "log_ms": log_ms,
                    "size": size,
                    "slides": report["slides"].as_array().map_or(0, Vec::len),
                    "pages": report["pages"],
                    "key_incidents": report["incidents"].as_array().map_or(0, Vec::len),
                    "briefing_ms": briefing_ms,
                    "briefing_reported_ms": report["ms"],
                    "out": out.map(|o| o.display().to_string()),
                }))?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Orders { db, count }) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let summary = match db {
                Some(db) if cli.nats.is_none() => {
                    zhongshu::dispatch::bench::bench_orders(&db, count, &mut out)?
                }
                None if cli.nats.is_none() => {
                    bail!("bench orders needs --db FILE, or --nats URL --hall NAME")
                }
                _ => {
                    let open = Instant::now();
                    let log = cli.hall_log("bench", true)?.expect("--nats is given");
                    let dispatcher = zhongshu::dispatch::dispatcher::Dispatcher::open_store(
                        Box::new(log),
                        zhongshu::dispatch::config::DispatchConfig::default_config(),
                    )?;
                    let operator = format!("bench-{}", std::process::id());
                    zhongshu::dispatch::bench::bench_orders_on(
                        dispatcher,
                        open.elapsed().as_secs_f64() * 1000.0,
                        "NATS JetStream: each commit is acknowledged by the hall's server \
                         (stored with the stream's replicas) before it returns",
                        &operator,
                        count,
                        &mut out,
                    )?
                }
            };
            use std::io::Write;
            writeln!(out, "{summary}")?;
            Ok(())
        }
        Command::Bench(BenchCommand::Mqtt {
            messages,
            devices,
            publishers,
            broker,
        }) => {
            let report =
                zhongshu::bench::bench_mqtt(broker.as_deref(), messages, devices, publishers)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Hub {
            commands,
            events,
            commit_events,
            live_entities,
        }) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&zhongshu::hall::bench::bench_hub(
                    cli.nats.as_deref(),
                    commands,
                    events,
                    commit_events,
                    live_entities,
                )?)?
            );
            Ok(())
        }
        Command::Bench(BenchCommand::Recommend { units, edges, seed }) => {
            let report = zhongshu::dispatch::recommend::bench_recommend(units, edges, seed);
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::ServeDepartments {
            addr,
            seed,
            report_to,
        } => {
            if !(report_to.starts_with("http://") || report_to.starts_with("https://")) {
                bail!("--report-to {report_to:?}: not an http(s) URL");
            }
            let behaviour = zhongshu::dispatch::delivery::SimBehaviour {
                seed,
                report_to,
                ..Default::default()
            };
            zhongshu::dispatch::delivery::run_serve_departments(&addr, behaviour)
        }
        Command::Users(UsersCommand::Add {
            name,
            file,
            role,
            department,
            display,
        }) => users_add(
            &name,
            &file,
            &role,
            department.as_deref(),
            display.as_deref(),
        ),
        Command::Bench(BenchCommand::Restart { db, events }) => {
            let report = zhongshu::dispatch::bench::bench_restart(&db, events)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(BenchCommand::Map {
            buildings,
            file,
            seed,
            format,
        }) => bench_map(buildings, file, seed, format, &map_load.coords),
        Command::Bench(BenchCommand::Fuzz {
            target,
            inputs,
            seed,
            save,
            from,
            memory_limit_mb,
            dump,
            worker,
        }) => {
            let options = zhongshu::fuzz::RunOptions {
                seed,
                from,
                inputs,
                save,
                memory_limit_mb,
            };
            bench_fuzz(&target, &options, dump, worker)
        }
    }
}

/// `bench fuzz`: each target in a child process (or, as that child, in this one).
fn bench_fuzz(
    target: &str,
    options: &zhongshu::fuzz::RunOptions,
    dump: bool,
    worker: bool,
) -> anyhow::Result<()> {
    use zhongshu::fuzz::Target;
    let targets =
        if target == "all" {
            Target::ALL.to_vec()
        } else {
            let names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
            vec![Target::from_name(target).with_context(|| {
                format!("--target {target:?}: one of {} or all", names.join(", "))
            })?]
        };
    if dump {
        for target in targets {
            for index in options.from..options.from + options.inputs {
                let input = target.input(options.seed, index);
                let note = format!(
                    "input {index} of {} under seed {}",
                    target.name(),
                    options.seed
                );
                let path = zhongshu::fuzz::save_finding(
                    &options.save,
                    target,
                    "input",
                    options.seed,
                    index,
                    &input,
                    &note,
                );
                println!("{path}");
            }
        }
        return Ok(());
    }
    if worker {
        let [target] = targets[..] else {
            bail!("a fuzz worker runs one target");
        };
        return Ok(zhongshu::fuzz::work(target, options)?);
    }
    let exe = std::env::current_exe().context("cannot find this program to run its workers")?;
    let mut reports = serde_json::Map::new();
    let mut found = 0;
    for target in targets {
        let report =
            zhongshu::fuzz::supervise(&exe, &["bench", "fuzz", "--worker"], target, options)?;
        eprintln!(
            "fuzz: {}: {} inputs, {} found, {} inputs/s",
            target.name(),
            report.inputs,
            report.found(),
            report.inputs_per_s
        );
        found += report.found();
        reports.insert(target.name().to_string(), serde_json::to_value(&report)?);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "seed": options.seed,
            "from": options.from,
            "inputs_per_target": options.inputs,
            "found": found,
            "targets": reports,
        }))?
    );
    if found > 0 {
        bail!("{found} finding(s), saved under {}", options.save.display());
    }
    Ok(())
}

/// `serve-open-data`'s own options.
struct OpenDataFlags {
    addr: String,
    keys: PathBuf,
    access_log: Option<PathBuf>,
    public_url: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    insecure_http: bool,
}

/// The open-data service `flags` ask for, checked: the keys file read, TLS loaded,
/// an address beyond this machine refused without TLS (or --insecure-http).
fn open_data_service(
    command: &str,
    flags: OpenDataFlags,
    setup: &zhongshu::feeds::config::FeedsSetup,
) -> anyhow::Result<zhongshu::governance::open_data::serve::OpenDataService> {
    use zhongshu::governance::open_data::keys::Clients;
    let clients = Clients::load(&flags.keys).map_err(anyhow::Error::msg)?;
    if clients.clients.is_empty() && clients.anonymous.is_none() {
        eprintln!(
            "zhongshu {command}: {} names no client and no [anonymous] access: every request will be refused (add one with `zhongshu open-data keys add NAME --file {}`)",
            flags.keys.display(),
            flags.keys.display()
        );
    }
    let policy = zhongshu::governance::open_data::OpenPolicy::new(&setup.feeds, &setup.open_data);
    if !setup
        .feeds
        .iter()
        .any(|f| f.classification == zhongshu::model::Classification::Open)
        && policy.open_layers().next().is_none()
    {
        eprintln!(
            "zhongshu {command}: no feed and no map layer is classified open: only an empty catalog is served (feeds and layers are internal unless the feeds file says classification = \"open\")"
        );
    }
    let tls = flags
        .tls
        .as_ref()
        .map(|(cert, key)| zhongshu::http::Tls::from_pem_files(cert, key))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if tls.is_none()
        && !flags.insecure_http
        && !zhongshu::feeds::cap_intake::is_loopback(&flags.addr)
    {
        let (tls_flags, insecure) = if command == "hub" {
            ("--api-tls-cert and --api-tls-key", "--api-insecure-http")
        } else {
            ("--tls-cert and --tls-key", "--insecure-http")
        };
        bail!(
            "the open data's address {} is beyond this machine: give {tls_flags} (keys never cross a network in clear), or {insecure} behind a TLS-terminating proxy",
            flags.addr
        );
    }
    if let Some(path) = &flags.access_log {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the access log {}", path.display()))?;
    }
    Ok(zhongshu::governance::open_data::serve::OpenDataService {
        addr: flags.addr,
        keys: flags.keys,
        access_log: flags.access_log,
        public_url: flags.public_url,
        tls,
        open_data: setup.open_data.clone(),
    })
}

fn serve_open_data(cli: &Cli, flags: OpenDataFlags) -> anyhow::Result<()> {
    use zhongshu::governance::open_data::serve;
    let Some(feeds) = cli.feeds.as_deref() else {
        bail!(
            "serve-open-data needs --feeds FILE: feeds and layers are internal unless a feeds file says classification = \"open\""
        );
    };
    let setup = zhongshu::feeds::config::load_setup(feeds)?;
    let scheme = if flags.tls.is_some() { "https" } else { "http" };
    let service = open_data_service("serve-open-data", flags, &setup)?;
    let city = load_city(cli.map.as_deref(), &map_load(cli))?;
    let feed_names: Vec<String> = setup
        .feeds
        .iter()
        .filter(|f| f.classification == zhongshu::model::Classification::Open)
        .map(|f| f.name.clone())
        .collect();
    let stop = stop_on_signals();
    serve::run(setup, &city, service.options()?, stop, |server, policy| {
        let layers: Vec<&str> = policy.open_layers().collect();
        eprintln!(
            "zhongshu serve-open-data: {scheme}://{}/catalog; open feeds: {}; open layers: {}",
            server.addr(),
            if feed_names.is_empty() {
                "none".into()
            } else {
                feed_names.join(", ")
            },
            if layers.is_empty() {
                "none".into()
            } else {
                layers.join(", ")
            },
        );
    })
}

/// Set by SIGINT/SIGTERM: long-running commands stop cleanly.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Connects to --nats with --nats-auth, naming the client.
fn hall_nats(cli: &Cli, what: &str) -> anyhow::Result<(zhongshu::nats::Nats, String)> {
    let (Some(url), Some(hall)) = (&cli.nats, &cli.hall) else {
        bail!("{what} needs --nats URL --hall NAME");
    };
    zhongshu::nats::check_hall_name(hall).map_err(anyhow::Error::msg)?;
    let auth =
        zhongshu::nats::NatsAuth::load(cli.nats_auth.as_deref()).map_err(anyhow::Error::msg)?;
    let nats = zhongshu::nats::Nats::connect(&zhongshu::nats::NatsOptions {
        url: url.clone(),
        auth,
        timeout: None,
        name: Some(format!("zhongshu {what} ({hall})")),
        domain: cli.nats_domain.clone(),
    })
    .map_err(anyhow::Error::msg)?;
    Ok((nats, hall.clone()))
}

fn run_hub(cli: &Cli, open_data: Option<OpenDataFlags>, retention_days: f64) -> anyhow::Result<()> {
    use zhongshu::hall::hub::{HubOptions, HubState};
    // The server keeps objects a minute at the least.
    if !(retention_days.is_finite()
        && retention_days * 86_400.0 >= 60.0
        && retention_days <= 3660.0)
    {
        bail!(
            "--retention-days must be at least a minute (0.0007) and at most 3660, got {retention_days}"
        );
    }
    if cli.nats_domain.is_some() {
        bail!(
            "a hub runs on its own hall's server: connect it there, without --nats-domain (that is for watching another hall)"
        );
    }
    let (nats, hall) = hall_nats(cli, "hub")?;
    let setup = desk_setup(cli, false)?;
    // A hub runs for weeks: freed memory goes back to the system.
    let _trimmer = zhongshu::memory::Trimmer::start(zhongshu::memory::TRIM_EVERY);
    stop_on_signals();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        })
    };
    // The hall's feeds, on its map; the simulated sub-brains only in demo mode (they
    // would raise made-up incidents in a real hall).
    let city = load_city(cli.map.as_deref(), &map_load(cli))?;
    let live = match &cli.feeds {
        Some(path) => Some(zhongshu::feeds::config::load_setup(path)?),
        None if setup.demo => Some(zhongshu::feeds::config::FeedsSetup {
            feeds: zhongshu::feeds::sim_source::default_sim_feeds(),
            ..Default::default()
        }),
        None => {
            eprintln!(
                "zhongshu hub: no --feeds: this hub publishes no live layers (consoles of the hall show none)"
            );
            None
        }
    };
    let open_data = match (open_data, &live) {
        (None, _) => None,
        (Some(_), None) => {
            bail!("--open-data serves the hall's open feeds: give the hall's feeds (--feeds FILE)")
        }
        (Some(flags), Some(setup)) => Some(open_data_service("hub", flags, setup)?),
    };
    let open_data_tls = open_data.as_ref().is_some_and(|o| o.tls.is_some());
    let city = std::sync::Arc::new(city);
    let options = HubOptions {
        hall: hall.clone(),
        config: setup.config,
        service: setup.service,
        replicas: cli.nats_replicas,
        crash_on_stop: false,
        live: live.map(|f| zhongshu::hall::live::LiveSetup {
            feeds: f.feeds,
            ranges: f.rules,
            areas: f.areas,
            map: city.clone(),
            seed: 1,
            open_data,
            history: (!cli.no_history).then(|| zhongshu::hall::live::HubHistory {
                dir: cli.history.join(format!("hub-{hall}")),
                retention: std::time::Duration::from_secs_f64(retention_days * 86_400.0),
            }),
        }),
    };
    use std::io::Write;
    let result = zhongshu::hall::hub::run(&nats, options, stop, |state| {
        let mut out = std::io::stdout().lock();
        let _ = match state {
            HubState::Active {
                id,
                api,
                events,
                took_ms,
            } => writeln!(
                out,
                "active {id} hall={hall} api={api} events={events} took_ms={took_ms:.0}"
            ),
            HubState::Standby { id, active } => writeln!(
                out,
                "standby {id} hall={hall} active={}",
                active.as_deref().unwrap_or("-")
            ),
            HubState::LostLease { id } => writeln!(out, "lost-lease {id} hall={hall}"),
            HubState::OpenData { id, addr } => writeln!(
                out,
                "open-data {id} hall={hall} url={}://{addr}/catalog",
                if open_data_tls { "https" } else { "http" }
            ),
            HubState::Problem(p) => {
                eprintln!("zhongshu hub: {p}");
                Ok(())
            }
        };
        let _ = out.flush();
    });
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    result
}

fn hall_status(cli: &Cli) -> anyhow::Result<()> {
    use zhongshu::hall::{Lease, Members, new_member_id};
    use zhongshu::store::EventStore;
    let (nats, hall) = hall_nats(cli, "hall-status")?;
    // Only looks: nothing is created for a hall that does not exist.
    let lease = Lease::open_with(
        &nats,
        &hall,
        &new_member_id("status"),
        cli.nats_replicas,
        false,
    )
    .ok();
    let members = Members::open_with(&nats, &hall, cli.nats_replicas, false)
        .ok()
        .map(|m| m.list())
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default();
    let active_id = match &lease {
        Some(l) => l.holder().map_err(anyhow::Error::msg)?,
        None => None,
    };
    let member_json = |m: &zhongshu::hall::Member| {
        serde_json::json!({
            "id": m.id,
            "host": m.host,
            "pid": m.pid,
            "state": m.state,
            "user": m.user,
            "role": (m.kind == "console").then_some(&m.state),
            "working_on": m.working_on,
            "api": m.api,
            "since": zhongshu::clock::rfc3339_from_unix_ms(m.since_ms),
            "last_seen": zhongshu::clock::rfc3339_from_unix_ms(m.last_seen_ms),
        })
    };
    let active = active_id.as_ref().map(|id| {
        members
            .iter()
            .find(|m| &m.id == id)
            .map(member_json)
            .unwrap_or_else(|| serde_json::json!({ "id": id }))
    });
    let standby: Vec<_> = members
        .iter()
        .filter(|m| m.kind == "hub" && Some(&m.id) != active_id.as_ref())
        .map(member_json)
        .collect();
    let consoles: Vec<_> = members
        .iter()
        .filter(|m| m.kind == "console")
        .map(member_json)
        .collect();
    let log = match zhongshu::store::jetstream::JetStreamLog::open(
        &nats,
        &hall,
        &zhongshu::store::jetstream::HallLogOptions {
            replicas: cli.nats_replicas,
            create: false,
        },
    ) {
        Ok(log) => {
            let mut events = 0u64;
            match log.scan_replay(&mut |_, _, _, _| events += 1) {
                Ok(()) => {
                    let head = log.head();
                    serde_json::json!({
                        "events": events,
                        "chain_head": { "seq": head.0, "hash": head.1 },
                        "log_id": log.log_id(),
                        "integrity_alarm": log.integrity_alarm(),
                    })
                }
                Err(e) => serde_json::json!({
                    "events": events,
                    "chain_head": null,
                    "log_id": log.log_id(),
                    "problem": e.to_string(),
                }),
            }
        }
        Err(e) => serde_json::json!({ "events": 0, "chain_head": null, "problem": e.to_string() }),
    };
    // The live layers as the active hub last said (it says so every second).
    let live = match active_id {
        Some(_) => {
            zhongshu::hall::live::read_status(&nats, &hall, std::time::Duration::from_millis(2500))
                .ok()
                .flatten()
        }
        None => None,
    };
    let live = live.map(|status| {
        let mut per_domain = std::collections::BTreeMap::<&str, u64>::new();
        let feeds: Vec<_> = status
            .feeds
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let entities = status.entities.get(i).copied().unwrap_or(0);
                *per_domain.entry(f.domain.as_str()).or_default() += entities;
                let h = status.health.get(i);
                serde_json::json!({
                    "feed": f.name,
                    "domain": f.domain.as_str(),
                    "entities": entities,
                    "polls_ok": h.map(|h| h.polls_ok),
                    "polls_failed": h.map(|h| h.polls_failed),
                    "last_ok": h.and_then(|h| h.last_ok_ms).map(zhongshu::clock::rfc3339_from_unix_ms),
                    "last_error": h.and_then(|h| h.last_error.clone()),
                    "quarantined": h.and_then(|h| h.quarantined.as_ref()).map(|q| q.reason.clone()),
                })
            })
            .collect();
        serde_json::json!({ "entities_per_domain": per_domain, "feeds": feeds })
    });
    println!(
        "{}",
        serde_json::json!({
            "hall": hall,
            "server": nats.url,
            "active_hub": active,
            "standby_hubs": standby,
            "consoles": consoles,
            "log": log,
            "live": live,
            "link": zhongshu::hall::link::inbox_status(&nats, &hall).ok(),
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    // Before any thread: the heap of a process that runs for weeks stays compact.
    zhongshu::memory::few_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zhongshu: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `audit verify` prints for any log.
fn verify_json(
    report: &zhongshu::store::VerifyReport,
    incidents: u64,
    orders: u64,
) -> serde_json::Value {
    serde_json::json!({
        "events": report.events,
        "incidents": incidents,
        "orders": orders,
        "chain_ok": report.chain_ok,
        "first_bad_event": report.first_bad_event,
        "sealed": report.sealed,
        "seals": report.seals,
        "truncated": report.truncated,
        "last_good_checkpoint": report.last_good_checkpoint.as_ref().map(checkpoint_json),
        "witness": report.witness.as_ref().map(checkpoint_json),
        "problems": report.problems,
        "notes": report.notes,
    })
}

/// A checkpoint as `audit verify` prints it.
fn checkpoint_json(c: &zhongshu::store::Checkpoint) -> serde_json::Value {
    serde_json::json!({
        "seq": c.seq,
        "hash": c.hash,
        "at": zhongshu::clock::rfc3339_from_unix_ms(c.at_ms),
    })
}
