//! The durable, append-only event log behind one trait, [`EventStore`]. The embedded
//! store is SQLite in WAL mode with `synchronous=FULL`, so an event is on disk before
//! the caller shows it as done.
//!
//! Tamper evidence has three layers:
//! - each event carries the SHA-256 of the previous one (the chain), so an edit in
//!   place breaks it;
//! - every commit is sealed with an HMAC-SHA256 under a key kept outside the database
//!   ([`SealKey`], a file), so a rewrite with recomputed hashes fails the seals;
//! - the head of the log (last sequence number and hash, sealed) is also written to a
//!   witness file beside the database, so deleting events at the end (truncation),
//!   which leaves a shorter but consistent chain, is caught.
//!
//! [`EventStore::verify`] (`zhongshu audit verify`) checks all three.

pub mod jetstream;
mod seal;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use seal::{Checkpoint, SealKey, write_private};

/// The SQLite log's page cache (`PRAGMA cache_size`; negative: KiB).
const LOG_CACHE_SIZE: i64 = -512;

/// The hash before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    // The reason is in the message and not also a source, which an error chain
    // would print a second time.
    #[error("event log {path}: {error}")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    /// A row the log cannot give back (a damaged page, a value of the wrong type),
    /// named by the event before it.
    #[error("event log {path}: cannot read the event after event {after}: {error}")]
    Row {
        path: PathBuf,
        after: i64,
        error: rusqlite::Error,
    },
    #[error("seal key {path}: {message}")]
    Key { path: PathBuf, message: String },
    /// A store that injects faults in tests, or a remote store that is unreachable.
    #[error("event log {what}: {message}")]
    Unavailable { what: String, message: String },
    /// Another writer appended first: catch up ([`EventStore::follow`]) and check
    /// the command again.
    #[error("event log {what}: another console wrote first")]
    Conflict { what: String },
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub at_ms: i64,
    pub operator: String,
    pub role: String,
    pub kind: String,
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The result of checking the log: the chain, the seals and the witness.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    /// Everything checked holds: links, hashes, seals and the witness.
    pub chain_ok: bool,
    /// Sequence number of the first event that cannot be trusted: whose hash does not
    /// match, or the first after the last good seal when a seal fails.
    pub first_bad_event: Option<i64>,
    /// A seal key was at hand and every seal was checked with it.
    pub sealed: bool,
    /// Seals checked (one per commit).
    pub seals: u64,
    /// Events at the end were removed: the witness names a head the log no longer has.
    pub truncated: bool,
    /// The last checkpoint (sealed head) that still matches the log.
    pub last_good_checkpoint: Option<Checkpoint>,
    /// What the witness file says the head is.
    pub witness: Option<Checkpoint>,
    /// Each thing found wrong, in words.
    pub problems: Vec<String>,
    /// What could not be checked, in words.
    pub notes: Vec<String>,
}

/// One log of events behind a common interface: SQLite in the embedded mode; the
/// hall's stream in a hall. Appends are all-or-nothing and durable on return.
pub trait EventStore: Send {
    /// Where the log lives, for messages.
    fn describe(&self) -> String;
    /// A random id given to the log when it was created: unique across logs, so
    /// idempotency keys built from it never collide with another log's.
    fn log_id(&self) -> &str;
    /// Number of events.
    fn len(&self) -> i64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends events `(kind, payload JSON)` by one operator at one time: all are
    /// durable when this returns, or none is written.
    fn append_all(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: &str,
        events: &[(&str, String)],
    ) -> Result<(), StoreError>;
    /// Streams `(at_ms, operator, role, payload)` of every event in order.
    fn scan_replay(&self, f: &mut dyn FnMut(i64, &str, &str, &str)) -> Result<(), StoreError>;
    /// Passes events other writers appended since this store last read or wrote to
    /// `f`, in order, and returns how many. Without `wait` it takes only what has
    /// already arrived (never waits on the network); with it, it first reads up to
    /// the log's head as it is now (after a [`StoreError::Conflict`]). The embedded
    /// log has one writer, so there is nothing to follow.
    fn follow(
        &mut self,
        wait: bool,
        f: &mut dyn FnMut(i64, &str, &str, &str),
    ) -> Result<u64, StoreError> {
        let _ = (wait, f);
        Ok(0)
    }
    /// Whether others write to this log too (a hall's stream): their events are
    /// checked against the permission matrix before they are taken in.
    fn shared(&self) -> bool {
        false
    }
    /// Checks the chain, the seals and the witness.
    fn verify(&self) -> Result<VerifyReport, StoreError>;
    /// What a quick look at open found wrong with the witness (truncation, a head
    /// that was rewritten); the full check is [`EventStore::verify`].
    fn integrity_alarm(&self) -> Option<String>;
}

/// Events read and hashed as one batch by [`EventLog::verify_prepared`].
const VERIFY_BATCH: usize = 2048;

/// Whether a stored event's hash is the one its contents and the hash it names as
/// the one before give.
fn hash_holds(e: &StoredEvent) -> bool {
    e.hash
        == event_hash(
            &e.prev_hash,
            e.seq,
            e.at_ms,
            &e.operator,
            &e.role,
            &e.kind,
            &e.payload,
        )
}

/// Hash of an event's content chained to the previous hash.
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    at_ms: i64,
    operator: &str,
    role: &str,
    kind: &str,
    payload: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        &seq.to_string(),
        &at_ms.to_string(),
        operator,
        role,
        kind,
        payload,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

/// Where the seal key and the witness of a log live.
#[derive(Clone, Debug, PartialEq)]
pub struct SealOptions {
    /// The key file. `None`: the log is not sealed (tests, tools).
    pub key: Option<PathBuf>,
    /// Create the key file (mode 0600) when it does not exist.
    pub create_key: bool,
    /// The witness file of the head.
    pub witness: Option<PathBuf>,
    /// Open for checking only: nothing is created or written (`audit verify`).
    pub read_only: bool,
}

impl SealOptions {
    /// The defaults for a log at `db`: key `<db>.key` (created when missing) and
    /// witness `<db>.head`, both beside the database, never inside it.
    pub fn beside(db: &Path) -> Self {
        Self {
            key: Some(suffixed(db, ".key")),
            create_key: true,
            witness: Some(suffixed(db, ".head")),
            read_only: false,
        }
    }

    /// As [`SealOptions::beside`] with another key file (`--seal-key`).
    pub fn with_key(db: &Path, key: Option<&Path>) -> Self {
        let mut o = Self::beside(db);
        if let Some(k) = key {
            o.key = Some(k.to_path_buf());
            o.create_key = false;
        }
        o
    }
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The append-only log on SQLite.
pub struct EventLog {
    conn: Connection,
    path: PathBuf,
    last: Option<(i64, String)>,
    log_id: String,
    key: Option<SealKey>,
    key_path: Option<PathBuf>,
    witness: Option<PathBuf>,
    /// Set when the witness disagreed with the log at open: the witness is then left
    /// as it is (the evidence), never overwritten.
    alarm: Option<String>,
}

impl EventLog {
    /// Opens (or creates) the log at `path`, sealed with the key and witness beside it
    /// ([`SealOptions::beside`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, &SealOptions::beside(path))
    }

    /// Opens (or creates) the log without seal or witness (tools and tests).
    pub fn open_unsealed(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(
            path,
            &SealOptions {
                key: None,
                create_key: false,
                witness: None,
                read_only: false,
            },
        )
    }

    pub fn open_with(path: &Path, seal: &SealOptions) -> Result<Self, StoreError> {
        let err = |error| StoreError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        if seal.read_only {
            return Self::open_read_only(path, seal);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        // The log is appended to and read from start to end: a small page cache
        // serves both, and a hub's memory does not grow with its log (SQLite's
        // default keeps up to 2 MB of pages per connection).
        conn.pragma_update(None, "cache_size", LOG_CACHE_SIZE)
            .map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY,
                at_ms INTEGER NOT NULL,
                operator TEXT NOT NULL,
                role TEXT NOT NULL,
                kind TEXT NOT NULL,
                payload TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS seals (
                seq INTEGER PRIMARY KEY,
                from_seq INTEGER NOT NULL DEFAULT 0,
                hash TEXT NOT NULL,
                at_ms INTEGER NOT NULL,
                mac TEXT NOT NULL
            );",
        )
        .map_err(err)?;
        let log_id = match conn
            .query_row("SELECT value FROM meta WHERE name = 'log_id'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(err)?
        {
            Some(id) => id,
            None => {
                let id = seal::random_hex(16).map_err(|message| StoreError::Key {
                    path: path.to_path_buf(),
                    message,
                })?;
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('log_id', ?1)",
                    params![id],
                )
                .map_err(err)?;
                id
            }
        };
        let last = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(err)?;
        let sealed: i64 = conn
            .query_row("SELECT count(*) FROM seals", [], |r| r.get(0))
            .map_err(err)?;
        let key = match &seal.key {
            // A log already sealed needs its own key back, never a new one.
            Some(k) if seal.create_key && sealed > 0 && !k.exists() => {
                return Err(StoreError::Key {
                    path: k.clone(),
                    message: format!(
                        "missing, and the log {} has {sealed} seals made with it: restore the key file (or give --seal-key)",
                        path.display()
                    ),
                });
            }
            Some(k) if seal.create_key => Some(SealKey::load_or_create(k)?),
            Some(k) if k.exists() => Some(SealKey::load(k)?),
            Some(k) => {
                return Err(StoreError::Key {
                    path: k.clone(),
                    message: "no such file".into(),
                });
            }
            None => None,
        };
        let mut log = Self {
            conn,
            path: path.to_path_buf(),
            last,
            log_id,
            key,
            key_path: seal.key.clone(),
            witness: seal.witness.clone(),
            alarm: None,
        };
        log.alarm = log.check_witness().err();
        Ok(log)
    }

    /// Opens an existing log for checking, writing nothing: no tables, no id, no key.
    fn open_read_only(path: &Path, seal: &SealOptions) -> Result<Self, StoreError> {
        let err = |error| StoreError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        let has = |table: &str| {
            conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                params![table],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        };
        if !has("events").map_err(err)? {
            return Err(StoreError::Unavailable {
                what: path.display().to_string(),
                message: "not a Zhongshu event log (no events table)".into(),
            });
        }
        if !has("seals").map_err(err)? || !has("meta").map_err(err)? {
            return Err(StoreError::Unavailable {
                what: path.display().to_string(),
                message: "an event log without seals (written before sealing): open it with this version's console, which says so, or adopt it with `zhongshu audit seal`".into(),
            });
        }
        let log_id = conn
            .query_row("SELECT value FROM meta WHERE name = 'log_id'", [], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map_err(err)?
            .unwrap_or_default();
        let last = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(err)?;
        let key = match &seal.key {
            Some(k) if k.exists() => Some(SealKey::load(k)?),
            _ => None,
        };
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            last,
            log_id,
            key,
            key_path: seal.key.clone(),
            witness: seal.witness.clone(),
            alarm: None,
        })
    }

    /// Seals a log written before sealing (no seal at all) as it stands: one seal over
    /// every event, and a witness. For an operator who has checked the log by other
    /// means; refused for a log that has seals.
    pub fn adopt(&mut self) -> Result<Checkpoint, StoreError> {
        let path = self.path.clone();
        let unavailable = |message: String| StoreError::Unavailable {
            what: path.display().to_string(),
            message,
        };
        let Some(key) = self.key.clone() else {
            return Err(unavailable("no seal key".into()));
        };
        let sealed: i64 = self
            .conn
            .query_row("SELECT count(*) FROM seals", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if sealed > 0 {
            return Err(unavailable(format!("the log already has {sealed} seals")));
        }
        let Some((seq, hash)) = self.last.clone() else {
            return Err(unavailable("the log is empty".into()));
        };
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let seal = Checkpoint::seal(&key, &self.log_id, 1, seq, &hash, at_ms);
        self.conn
            .execute(
                "INSERT INTO seals (seq, from_seq, hash, at_ms, mac) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![seal.seq, seal.from_seq, seal.hash, seal.at_ms, seal.mac],
            )
            .map_err(|e| self.err(e))?;
        if let Some(w) = &self.witness {
            Checkpoint::witness(&key, &self.log_id, seq, &hash, at_ms)
                .write(w)
                .map_err(|e| unavailable(format!("cannot write the witness: {e}")))?;
        }
        self.alarm = None;
        Ok(seal)
    }

    fn err(&self, error: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    /// The witness against the log's current head, quickly: `Err` names what is
    /// wrong. A missing witness is fine for an empty log.
    fn check_witness(&self) -> Result<(), String> {
        let Some(path) = &self.witness else {
            return Ok(());
        };
        let witness = match Checkpoint::read(path) {
            Ok(Some(w)) => w,
            Ok(None) if self.last.is_none() => return Ok(()),
            Ok(None) => {
                let sealed: i64 = self
                    .conn
                    .query_row("SELECT count(*) FROM seals", [], |r| r.get(0))
                    .unwrap_or(0);
                return if sealed > 0 {
                    Err(format!("the witness {} is missing", path.display()))
                } else {
                    Err("the log carries no seal (written before sealing, or its seals were removed); `zhongshu audit seal` adopts a log checked by other means".into())
                };
            }
            Err(e) => return Err(e),
        };
        if witness.log_id != self.log_id {
            return Err(format!(
                "the witness {} is of another log ({})",
                path.display(),
                witness.log_id
            ));
        }
        let len = self.last.as_ref().map_or(0, |(s, _)| *s);
        if witness.seq > len {
            return Err(format!(
                "truncated: the witness says {} events, the log has {len}",
                witness.seq
            ));
        }
        let hash: Option<String> = self
            .conn
            .query_row(
                "SELECT hash FROM events WHERE seq = ?1",
                params![witness.seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| e.to_string())?;
        if hash.as_deref() != Some(witness.hash.as_str()) {
            return Err(format!(
                "event {} is not the one the witness saw: the log was rewritten",
                witness.seq
            ));
        }
        Ok(())
    }

    /// Appends one event; when this returns, the event is durable.
    pub fn append(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: &str,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<StoredEvent, StoreError> {
        let payload = payload.to_string();
        let prev_hash = self.last_hash();
        self.append_all(at_ms, operator, role, &[(kind, payload.clone())])?;
        let (seq, hash) = self.last.clone().expect("an event was just appended");
        Ok(StoredEvent {
            seq,
            at_ms,
            operator: operator.into(),
            role: role.into(),
            kind: kind.into(),
            payload,
            prev_hash,
            hash,
        })
    }

    fn last_hash(&self) -> String {
        self.last
            .as_ref()
            .map_or_else(|| GENESIS_HASH.to_string(), |(_, h)| h.clone())
    }

    /// Appends events `(kind, payload JSON)` in one transaction, sealed: all are
    /// durable when this returns, or none is written.
    pub fn append_all(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: &str,
        events: &[(&str, String)],
    ) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let err = |error| StoreError::Sqlite {
            path: path.clone(),
            error,
        };
        let (mut seq, mut prev_hash) = self.last.clone().unwrap_or((0, GENESIS_HASH.to_string()));
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (seq, at_ms, operator, role, kind, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(err)?;
            for (kind, payload) in events {
                seq += 1;
                let hash = event_hash(&prev_hash, seq, at_ms, operator, role, kind, payload);
                insert
                    .execute(params![
                        seq, at_ms, operator, role, kind, payload, prev_hash, hash
                    ])
                    .map_err(err)?;
                prev_hash = hash;
            }
        }
        let from_seq = self.last.as_ref().map_or(1, |(s, _)| s + 1);
        let checkpoint = self
            .key
            .as_ref()
            .map(|key| Checkpoint::seal(key, &self.log_id, from_seq, seq, &prev_hash, at_ms));
        if let Some(c) = &checkpoint {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO seals (seq, from_seq, hash, at_ms, mac) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| s.execute(params![c.seq, c.from_seq, c.hash, c.at_ms, c.mac]))
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.last = Some((seq, prev_hash));
        // The witness follows the head; a witness that lags (a crash between the
        // commit and this write) is harmless: it still names an event the log has.
        // After an alarm it is left alone as evidence.
        if let (Some(key), Some(path), None) = (&self.key, &self.witness, &self.alarm) {
            let (seq, hash) = self.last.clone().expect("just appended");
            let _ = Checkpoint::witness(key, &self.log_id, seq, &hash, at_ms).write(path);
        }
        Ok(())
    }

    /// Number of events in the log.
    pub fn len(&self) -> i64 {
        self.last.as_ref().map_or(0, |(seq, _)| *seq)
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The random id of this log (see [`EventStore::log_id`]).
    pub fn log_id(&self) -> &str {
        &self.log_id
    }

    /// The seal key file in use, if any.
    pub fn key_path(&self) -> Option<&Path> {
        self.key_path.as_deref()
    }

    /// What the witness check at open found wrong, if anything.
    pub fn integrity_alarm(&self) -> Option<&str> {
        self.alarm.as_deref()
    }

    /// Streams `(at_ms, operator, role, payload)` of every event in order, reading
    /// only what rebuilding state needs (no hashes), borrowing the text.
    pub fn scan_replay(&self, mut f: impl FnMut(i64, &str, &str, &str)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, operator, role, payload FROM events ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let text = |i: usize| -> rusqlite::Result<&str> {
                r.get_ref(i)?.as_str().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })
            };
            let (at_ms, operator, role, payload) =
                (|| Ok::<_, rusqlite::Error>((r.get::<_, i64>(0)?, text(1)?, text(2)?, text(3)?)))(
                )
                .map_err(|e| self.err(e))?;
            f(at_ms, operator, role, payload);
        }
        Ok(())
    }

    /// Streams every event in order to `f` without holding them all in memory.
    pub fn scan(&self, mut f: impl FnMut(StoredEvent)) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at_ms, operator, role, kind, payload, prev_hash, hash FROM events ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut after = 0;
        let row_err = |after: i64, error| StoreError::Row {
            path: self.path.clone(),
            after,
            error,
        };
        while let Some(r) = rows.next().map_err(|e| row_err(after, e))? {
            let event = (|| -> rusqlite::Result<StoredEvent> {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    operator: r.get(2)?,
                    role: r.get(3)?,
                    kind: r.get(4)?,
                    payload: r.get(5)?,
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                })
            })()
            .map_err(|e| row_err(after, e))?;
            after = event.seq;
            f(event);
        }
        Ok(())
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let mut all = Vec::new();
        self.scan(|e| all.push(e))?;
        Ok(all)
    }

    /// Every seal, in order of sequence.
    fn seals(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, from_seq, hash, at_ms, mac FROM seals ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    log_id: self.log_id.clone(),
                    seq: r.get(0)?,
                    from_seq: r.get(1)?,
                    hash: r.get(2)?,
                    at_ms: r.get(3)?,
                    mac: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Checks the chain from the first event, every seal, and the witness.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_with(|_| {})
    }

    /// As [`EventLog::verify`], showing each event to `f` on the way, so a caller that
    /// also wants to count or index the events reads the log once.
    pub fn verify_with(&self, mut f: impl FnMut(&StoredEvent)) -> Result<VerifyReport, StoreError> {
        self.verify_prepared(|_| (), |e, ()| f(e))
    }

    /// As [`EventLog::verify_with`], with the work on each event that needs no other
    /// (`prepare`: decoding its payload, say) done on a second thread with the
    /// hashes, a batch at a time, while this one reads the next rows; `apply` then
    /// takes each event with what was prepared of it, in the log's order.
    pub fn verify_prepared<T: Send>(
        &self,
        prepare: impl Fn(&StoredEvent) -> T + Sync,
        mut apply: impl FnMut(&StoredEvent, T),
    ) -> Result<VerifyReport, StoreError> {
        let seals = self.seals()?;
        let witness = match &self.witness {
            Some(path) => Checkpoint::read(path).unwrap_or(None),
            None => None,
        };
        // Hashes the seals and the witness name, looked up as the chain goes by.
        let mut wanted: std::collections::HashMap<i64, Option<String>> = seals
            .iter()
            .map(|c| (c.seq, None))
            .chain(witness.iter().map(|w| (w.seq, None)))
            .collect();
        let mut prev = GENESIS_HASH.to_string();
        let mut count = 0u64;
        // The first event out of sequence or not linked to the one before (checked
        // here, in order), and the first whose hash is not its own (on the helper).
        let mut link_bad = None;
        let hash_bad = std::thread::scope(|scope| -> Result<Option<i64>, StoreError> {
            type Done<T> = (Vec<StoredEvent>, Vec<T>, Option<i64>);
            let (to_helper, batches) = std::sync::mpsc::sync_channel::<Vec<StoredEvent>>(2);
            let (to_reader, done) = std::sync::mpsc::sync_channel::<Done<T>>(2);
            let prepare = &prepare;
            let helper = scope.spawn(move || {
                for batch in batches {
                    let bad = batch.iter().find(|e| !hash_holds(e)).map(|e| e.seq);
                    let prepared = batch.iter().map(prepare).collect();
                    if to_reader.send((batch, prepared, bad)).is_err() {
                        return;
                    }
                }
            });
            let mut hash_bad: Option<i64> = None;
            let mut in_flight = 0usize;
            let mut take = |(batch, prepared, bad): Done<T>| {
                if hash_bad.is_none() {
                    hash_bad = bad;
                }
                for (e, p) in batch.iter().zip(prepared) {
                    apply(e, p);
                }
            };
            let mut batch = Vec::with_capacity(VERIFY_BATCH);
            let mut helper_gone = false;
            let scanned = self.scan(|e| {
                if helper_gone {
                    return;
                }
                count += 1;
                if let Some(slot) = wanted.get_mut(&e.seq) {
                    *slot = Some(e.hash.clone());
                }
                if link_bad.is_none() && (e.seq != count as i64 || e.prev_hash != prev) {
                    link_bad = Some(e.seq);
                }
                prev.clone_from(&e.hash);
                batch.push(e);
                if batch.len() < VERIFY_BATCH {
                    return;
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(VERIFY_BATCH));
                if to_helper.send(full).is_err() {
                    helper_gone = true;
                    return;
                }
                in_flight += 1;
                // One batch on the helper while this thread reads the next.
                while in_flight > 1 {
                    match done.recv() {
                        Ok(d) => take(d),
                        Err(_) => helper_gone = true,
                    }
                    in_flight -= 1;
                }
            });
            if !batch.is_empty() && !helper_gone && to_helper.send(batch).is_ok() {
                in_flight += 1;
            }
            drop(to_helper);
            for d in done.iter().take(in_flight) {
                take(d);
            }
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
            scanned.map(|()| hash_bad)
        })?;
        let first_bad = link_bad.into_iter().chain(hash_bad).min();
        let mut report = VerifyReport {
            events: count,
            first_bad_event: first_bad,
            sealed: self.key.is_some(),
            seals: seals.len() as u64,
            witness: witness.clone(),
            ..Default::default()
        };
        if let Some(bad) = first_bad {
            report
                .problems
                .push(format!("event {bad} does not match its hash or link"));
        }
        // Seals: each must verify under the key and name the hash the log has at its
        // sequence number. The last good one is the trusted prefix.
        let chain_good_until = first_bad.map_or(i64::MAX, |b| b - 1);
        let mut seal_failed = false;
        // Seals must cover the log without a gap, from the first event on: a stretch
        // without one was written without the key, or its seals were removed.
        let mut expected_from = 1i64;
        for c in &seals {
            if !seal_failed && c.from_seq != expected_from {
                seal_failed = true;
                let after = report.last_good_checkpoint.as_ref().map_or(0, |g| g.seq);
                report.first_bad_event = Some(
                    report
                        .first_bad_event
                        .map_or(after + 1, |b| b.min(after + 1)),
                );
                report.problems.push(format!(
                    "events {expected_from}..{} carry no seal: written without the key, or their seals were removed",
                    (c.from_seq - 1).max(expected_from)
                ));
            }
            expected_from = c.seq + 1;
            let mac_ok = self.key.as_ref().is_none_or(|k| c.verify_seal(k));
            let matches = wanted.get(&c.seq).and_then(|h| h.as_deref()) == Some(c.hash.as_str());
            if mac_ok && matches && !seal_failed && c.seq <= chain_good_until {
                report.last_good_checkpoint = Some(c.clone());
                continue;
            }
            if !seal_failed {
                seal_failed = true;
                let after = report.last_good_checkpoint.as_ref().map_or(0, |g| g.seq);
                report.first_bad_event = Some(
                    report
                        .first_bad_event
                        .map_or(after + 1, |b| b.min(after + 1)),
                );
                report.problems.push(if !mac_ok {
                    format!(
                        "the seal of event {} does not verify under the key: the log was rewritten",
                        c.seq
                    )
                } else if c.seq > count as i64 {
                    format!(
                        "the seal of event {} names an event the log no longer has",
                        c.seq
                    )
                } else {
                    format!(
                        "event {} is not the one that was sealed: the log was rewritten",
                        c.seq
                    )
                });
            }
        }
        if seals.last().is_some_and(|c| c.seq > count as i64) {
            report.truncated = true;
        }
        if self.key.is_none() && !seals.is_empty() {
            report.notes.push(
                "no seal key at hand: seals and witness were checked against the log, not the key"
                    .into(),
            );
        }
        // Events after the last seal (or any event, with no seal at all) were written
        // without the key, or their seals were removed.
        if !seal_failed && (count as i64) >= expected_from {
            report.problems.push(if seals.is_empty() {
                "the log carries no seal (written before sealing, or its seals were removed); `zhongshu audit seal` adopts a log checked by other means".to_string()
            } else {
                format!("events {expected_from}..{count} carry no seal")
            });
            report.first_bad_event.get_or_insert(expected_from);
        }
        match (&witness, &self.witness) {
            (Some(w), _) => {
                let mac_ok = self.key.as_ref().is_none_or(|k| w.verify_witness(k));
                if w.log_id != self.log_id {
                    report
                        .problems
                        .push(format!("the witness is of another log ({})", w.log_id));
                } else if !mac_ok {
                    report
                        .problems
                        .push("the witness does not verify under the key".into());
                } else if w.seq > count as i64 {
                    report.truncated = true;
                    report.problems.push(format!(
                        "truncated: the witness says {} events, the log has {count}",
                        w.seq
                    ));
                } else if wanted.get(&w.seq).and_then(|h| h.as_deref()) != Some(w.hash.as_str()) {
                    report.problems.push(format!(
                        "event {} is not the one the witness saw: the log was rewritten",
                        w.seq
                    ));
                }
            }
            (None, Some(path)) if count > 0 => {
                report
                    .problems
                    .push(format!("the witness {} is missing", path.display()));
            }
            _ => {}
        }
        report.chain_ok = report.problems.is_empty();
        Ok(report)
    }
}

impl EventStore for EventLog {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn len(&self) -> i64 {
        EventLog::len(self)
    }

    fn append_all(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: &str,
        events: &[(&str, String)],
    ) -> Result<(), StoreError> {
        EventLog::append_all(self, at_ms, operator, role, events)
    }

    fn scan_replay(&self, f: &mut dyn FnMut(i64, &str, &str, &str)) -> Result<(), StoreError> {
        EventLog::scan_replay(self, f)
    }

    fn verify(&self) -> Result<VerifyReport, StoreError> {
        EventLog::verify(self)
    }

    fn integrity_alarm(&self) -> Option<String> {
        self.alarm.clone()
    }
}

/// A store for tests of failure handling: the real SQLite log, failing every append
/// from a set number on (a full disk, a lost volume).
#[cfg(test)]
pub mod testing {
    use std::path::Path;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    pub struct FailingLog {
        inner: EventLog,
        appends: usize,
        fail_from: Arc<AtomicUsize>,
        /// Appends made so far, readable after the log is handed to a dispatcher.
        count: Arc<AtomicUsize>,
        /// While set, appends wait (a slow disk), up to a minute.
        hold: Arc<std::sync::atomic::AtomicBool>,
    }

    impl FailingLog {
        /// The log at `path`, and the switch: appends numbered from it on fail
        /// (`usize::MAX`: none).
        pub fn open(path: &Path) -> (FailingLog, Arc<AtomicUsize>) {
            let fail_from = Arc::new(AtomicUsize::new(usize::MAX));
            let log = FailingLog {
                inner: EventLog::open(path).expect("open the log"),
                appends: 0,
                fail_from: fail_from.clone(),
                count: Arc::new(AtomicUsize::new(0)),
                hold: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            };
            (log, fail_from)
        }

        /// Appends made so far (failed ones included).
        pub fn appends(&self) -> usize {
            self.appends
        }

        /// A counter of the appends (each one transaction, one fsync) that stays
        /// readable after the log is boxed into a dispatcher.
        pub fn counter(&self) -> Arc<AtomicUsize> {
            self.count.clone()
        }

        /// The switch that makes appends wait while it is set.
        pub fn hold(&self) -> Arc<std::sync::atomic::AtomicBool> {
            self.hold.clone()
        }
    }

    impl EventStore for FailingLog {
        fn describe(&self) -> String {
            EventStore::describe(&self.inner)
        }
        fn log_id(&self) -> &str {
            EventStore::log_id(&self.inner)
        }
        fn len(&self) -> i64 {
            self.inner.len()
        }
        fn append_all(
            &mut self,
            at_ms: i64,
            operator: &str,
            role: &str,
            events: &[(&str, String)],
        ) -> Result<(), StoreError> {
            let started = std::time::Instant::now();
            while self.hold.load(Ordering::Relaxed)
                && started.elapsed() < std::time::Duration::from_secs(60)
            {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            self.appends += 1;
            self.count.store(self.appends, Ordering::Relaxed);
            if self.appends >= self.fail_from.load(Ordering::Relaxed) {
                return Err(StoreError::Unavailable {
                    what: EventStore::describe(&self.inner),
                    message: "disk full".into(),
                });
            }
            self.inner.append_all(at_ms, operator, role, events)
        }
        fn scan_replay(&self, f: &mut dyn FnMut(i64, &str, &str, &str)) -> Result<(), StoreError> {
            self.inner.scan_replay(f)
        }
        fn verify(&self) -> Result<VerifyReport, StoreError> {
            self.inner.verify()
        }
        fn integrity_alarm(&self) -> Option<String> {
            EventStore::integrity_alarm(&self.inner)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zhongshu-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("events.db")
    }

    #[test]
    fn appends_survive_reopening_and_chain() {
        let path = temp_db("reopen");
        {
            let mut log = EventLog::open(&path).unwrap();
            log.append(
                1,
                "li.wei",
                "dispatcher",
                "report_incident",
                &serde_json::json!({"kind": "fire"}),
            )
            .unwrap();
            log.append(
                2,
                "li.wei",
                "dispatcher",
                "issue_order",
                &serde_json::json!({"to": "fire"}),
            )
            .unwrap();
        }
        let mut log = EventLog::open(&path).unwrap();
        let e = log
            .append(
                3,
                "chen",
                "department_liaison",
                "acknowledge_order",
                &serde_json::json!({}),
            )
            .unwrap();
        assert_eq!(e.seq, 3);
        let events = log.events().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].prev_hash, events[1].hash);
        assert_eq!(events[0].role, "dispatcher");
        let report = log.verify().unwrap();
        assert_eq!(
            (report.events, report.chain_ok, report.first_bad_event),
            (3, true, None),
            "{report:?}"
        );
        assert!(report.sealed && report.seals == 3, "{report:?}");
        assert_eq!(report.last_good_checkpoint.unwrap().seq, 3);
        let mode: String = log
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn tampering_is_detected_at_the_changed_event() {
        let path = temp_db("tamper");
        let mut log = EventLog::open(&path).unwrap();
        for i in 1..=5 {
            log.append(
                i,
                "op",
                "operator",
                "report_incident",
                &serde_json::json!({"n": i}),
            )
            .unwrap();
        }
        // Someone edits event 3 in place with any SQLite tool.
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE events SET payload = '{\"n\":99}' WHERE seq = 3", [])
            .unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert_eq!(
            (report.events, report.chain_ok, report.first_bad_event),
            (5, false, Some(3)),
            "{report:?}"
        );
        // Deleting an event breaks the chain too.
        raw.execute("UPDATE events SET payload = '{\"n\":3}' WHERE seq = 3", [])
            .unwrap();
        raw.execute("DELETE FROM events WHERE seq = 2", []).unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        // The seal of event 2 names an event the log no longer has.
        assert_eq!((report.chain_ok, report.first_bad_event), (false, Some(2)));
    }

    #[test]
    fn a_long_log_is_checked_whole_and_shown_in_order_across_batches() {
        let path = temp_db("long");
        let mut log = EventLog::open(&path).unwrap();
        let n = VERIFY_BATCH as i64 * 3 + 17;
        let events: Vec<(&str, String)> = (1..=n)
            .map(|i| ("note", serde_json::json!({"n": i}).to_string()))
            .collect();
        for chunk in events.chunks(100) {
            log.append_all(1, "op", "operator", chunk).unwrap();
        }
        // Every event reaches `apply` once, in order, with what `prepare` made of it.
        let mut seen = Vec::new();
        let report = log
            .verify_prepared(
                |e| e.payload.len(),
                |e, len| {
                    assert_eq!(len, e.payload.len());
                    seen.push(e.seq);
                },
            )
            .unwrap();
        assert_eq!(seen, (1..=n).collect::<Vec<_>>());
        assert_eq!((report.events, report.first_bad_event), (n as u64, None));
        // A payload edited in the third batch, and a link broken later: the first
        // wrong event is named, whichever check finds it.
        let edited = VERIFY_BATCH as i64 * 2 + 5;
        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE events SET payload = '{\"n\":0}' WHERE seq = ?1",
            [edited],
        )
        .unwrap();
        raw.execute(
            "UPDATE events SET prev_hash = 'x' WHERE seq = ?1",
            [edited + VERIFY_BATCH as i64],
        )
        .unwrap();
        let chain_problem = |report: &VerifyReport| {
            report
                .problems
                .iter()
                .find(|p| p.contains("does not match its hash or link"))
                .cloned()
        };
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert_eq!(
            (report.events, report.chain_ok, report.first_bad_event),
            (n as u64, false, Some(edited)),
            "{report:?}"
        );
        assert_eq!(
            chain_problem(&report),
            Some(format!("event {edited} does not match its hash or link"))
        );
        // A broken link before it is named instead.
        raw.execute("UPDATE events SET prev_hash = 'x' WHERE seq = 7", [])
            .unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert_eq!(
            chain_problem(&report),
            Some("event 7 does not match its hash or link".into()),
            "{report:?}"
        );
    }

    #[test]
    fn a_row_that_cannot_be_read_is_named_by_the_event_before_it() {
        let path = five_events("bad-row");
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE events SET payload = x'00ff' WHERE seq = 3", [])
            .unwrap();
        let err = EventLog::open(&path).unwrap().verify().unwrap_err();
        let said = err.to_string();
        assert!(
            said.contains("cannot read the event after event 2") && said.contains("payload"),
            "{said}"
        );
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let err = EventLog::open(Path::new("/nonexistent/dir/events.db"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/nonexistent/dir/events.db"),
            "{err}"
        );
    }

    fn five_events(name: &str) -> PathBuf {
        let path = temp_db(name);
        let mut log = EventLog::open(&path).unwrap();
        for i in 1..=5 {
            log.append(i, "op", "operator", "note", &serde_json::json!({"n": i}))
                .unwrap();
        }
        path
    }

    #[test]
    fn truncation_at_the_end_is_caught_by_the_witness_and_seals() {
        for keep in [4, 1, 0] {
            let path = five_events(&format!("truncate{keep}"));
            let raw = Connection::open(&path).unwrap();
            raw.execute("DELETE FROM events WHERE seq > ?1", params![keep])
                .unwrap();
            // The seals of the deleted events go too: only the witness remains.
            raw.execute("DELETE FROM seals WHERE seq > ?1", params![keep])
                .unwrap();
            let log = EventLog::open(&path).unwrap();
            assert!(log.integrity_alarm().unwrap().contains("truncated"));
            let report = log.verify().unwrap();
            assert!(!report.chain_ok, "keep {keep}: {report:?}");
            assert!(report.truncated, "keep {keep}: {report:?}");
            assert_eq!(report.witness.as_ref().unwrap().seq, 5);
            assert_eq!(
                report.last_good_checkpoint.as_ref().map(|c| c.seq),
                (keep > 0).then_some(keep)
            );
        }
    }

    #[test]
    fn reopening_a_truncated_log_does_not_reseal_it() {
        let path = five_events("reseal");
        let raw = Connection::open(&path).unwrap();
        raw.execute("DELETE FROM events WHERE seq > 2", []).unwrap();
        raw.execute("DELETE FROM seals WHERE seq > 2", []).unwrap();
        {
            let mut log = EventLog::open(&path).unwrap();
            for i in 0..5 {
                log.append(10 + i, "op", "operator", "note", &serde_json::json!({}))
                    .unwrap();
            }
        }
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert!(!report.chain_ok, "{report:?}");
        assert!(
            report.problems.iter().any(|p| p.contains("witness")),
            "{report:?}"
        );
    }

    #[test]
    fn a_rewrite_with_recomputed_hashes_fails_the_seals() {
        let path = five_events("rewrite");
        // Someone with the database but not the key rewrites event 3 and recomputes
        // every hash after it, seals' hashes included.
        let raw = Connection::open(&path).unwrap();
        let events = EventLog::open_unsealed(&path).unwrap().events().unwrap();
        let mut prev = events[1].hash.clone();
        for e in &events[2..] {
            let payload = if e.seq == 3 {
                "{\"n\":99}".to_string()
            } else {
                e.payload.clone()
            };
            let hash = event_hash(
                &prev,
                e.seq,
                e.at_ms,
                &e.operator,
                &e.role,
                &e.kind,
                &payload,
            );
            raw.execute(
                "UPDATE events SET payload = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                params![payload, prev, hash, e.seq],
            )
            .unwrap();
            raw.execute(
                "UPDATE seals SET hash = ?1 WHERE seq = ?2",
                params![hash, e.seq],
            )
            .unwrap();
            prev = hash;
        }
        // The chain alone is consistent again...
        let unsealed = EventLog::open_unsealed(&path).unwrap();
        let events_after = unsealed.events().unwrap();
        assert_eq!(events_after[4].prev_hash, events_after[3].hash);
        // ...but the seals and the witness are not.
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert!(!report.chain_ok, "{report:?}");
        assert_eq!(report.first_bad_event, Some(3), "{report:?}");
        assert_eq!(report.last_good_checkpoint.unwrap().seq, 2);
        // A forged witness without the key does not verify either.
        let witness = suffixed(&path, ".head");
        let mut forged = Checkpoint::read(&witness).unwrap().unwrap();
        forged.hash = prev;
        forged.write(&witness).unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("witness")),
            "{report:?}"
        );
    }

    #[test]
    fn logs_have_distinct_ids_and_the_key_lives_outside_the_database() {
        let a = five_events("id-a");
        let b = five_events("id-b");
        let (la, lb) = (EventLog::open(&a).unwrap(), EventLog::open(&b).unwrap());
        assert_ne!(la.log_id(), lb.log_id());
        assert_eq!(la.log_id().len(), 32);
        let key = std::fs::read_to_string(suffixed(&a, ".key")).unwrap();
        let raw = Connection::open(&a).unwrap();
        let dump: Vec<String> = raw
            .prepare("SELECT mac FROM seals")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(dump.iter().all(|m| !m.contains(key.trim())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(suffixed(&a, ".key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn stripping_every_seal_and_the_witness_is_caught() {
        let path = five_events("strip");
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE events SET payload = '{\"n\":99}' WHERE seq = 4", [])
            .unwrap();
        // Recompute the chain from event 4 on, then remove every seal and the witness.
        let events = EventLog::open_unsealed(&path).unwrap().events().unwrap();
        let mut prev = events[2].hash.clone();
        for e in &events[3..] {
            let hash = event_hash(
                &prev,
                e.seq,
                e.at_ms,
                &e.operator,
                &e.role,
                &e.kind,
                &e.payload,
            );
            raw.execute(
                "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
                params![prev, hash, e.seq],
            )
            .unwrap();
            prev = hash;
        }
        raw.execute("DELETE FROM seals", []).unwrap();
        std::fs::remove_file(suffixed(&path, ".head")).unwrap();
        let log = EventLog::open(&path).unwrap();
        assert!(log.integrity_alarm().unwrap().contains("no seal"));
        let report = log.verify().unwrap();
        assert!(!report.chain_ok, "{report:?}");
        assert_eq!(report.first_bad_event, Some(1), "{report:?}");
        // New commits do not launder what came before: the gap stays.
        let mut log = log;
        log.append(9, "op", "operator", "note", &serde_json::json!({}))
            .unwrap();
        let report = log.verify().unwrap();
        assert!(!report.chain_ok, "{report:?}");
    }

    #[test]
    fn a_witness_cannot_be_made_from_a_seal_row() {
        let path = five_events("forge-witness");
        let raw = Connection::open(&path).unwrap();
        raw.execute("DELETE FROM events WHERE seq > 3", []).unwrap();
        raw.execute("DELETE FROM seals WHERE seq > 3", []).unwrap();
        let (seq, from_seq, hash, at_ms, mac): (i64, i64, String, i64, String) = raw
            .query_row(
                "SELECT seq, from_seq, hash, at_ms, mac FROM seals WHERE seq = 3",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        let log_id: String = raw
            .query_row("SELECT value FROM meta WHERE name = 'log_id'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let forged = Checkpoint {
            log_id,
            from_seq,
            seq,
            hash,
            at_ms,
            mac,
        };
        forged.write(&suffixed(&path, ".head")).unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert!(!report.chain_ok, "{report:?}");
        assert!(
            report.problems.iter().any(|p| p.contains("witness")),
            "{report:?}"
        );
    }

    #[test]
    fn a_sealed_log_without_its_key_is_not_given_a_new_one() {
        let path = five_events("lost-key");
        std::fs::remove_file(suffixed(&path, ".key")).unwrap();
        let err = EventLog::open(&path).err().unwrap().to_string();
        assert!(err.contains("restore the key"), "{err}");
        assert!(!suffixed(&path, ".key").exists());
    }

    #[test]
    fn checking_writes_nothing_and_refuses_what_is_not_a_log() {
        let dir = temp_db("readonly").parent().unwrap().to_path_buf();
        let other = dir.join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE foo (x)")
            .unwrap();
        let before = std::fs::read(&other).unwrap();
        let options = SealOptions {
            read_only: true,
            create_key: false,
            ..SealOptions::beside(&other)
        };
        let err = EventLog::open_with(&other, &options)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a Zhongshu event log"), "{err}");
        assert_eq!(std::fs::read(&other).unwrap(), before);
        assert!(!suffixed(&other, ".key").exists());
        // A real log checks out read-only.
        let path = five_events("readonly-log");
        let options = SealOptions {
            read_only: true,
            create_key: false,
            ..SealOptions::beside(&path)
        };
        assert!(
            EventLog::open_with(&path, &options)
                .unwrap()
                .verify()
                .unwrap()
                .chain_ok
        );
    }

    #[test]
    fn a_log_from_before_sealing_is_adopted_on_purpose() {
        let path = temp_db("adopt");
        {
            let mut log = EventLog::open_unsealed(&path).unwrap();
            for i in 1..=3 {
                log.append(i, "op", "operator", "note", &serde_json::json!({"n": i}))
                    .unwrap();
            }
        }
        let mut log = EventLog::open(&path).unwrap();
        assert!(log.integrity_alarm().is_some());
        assert!(!log.verify().unwrap().chain_ok);
        let seal = log.adopt().unwrap();
        assert_eq!((seal.from_seq, seal.seq), (1, 3));
        log.append(4, "op", "operator", "note", &serde_json::json!({}))
            .unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert!(report.chain_ok, "{report:?}");
        assert!(log.adopt().is_err(), "only once");
    }
}
