//! The durable, append-only event log: SQLite in WAL mode with `synchronous=FULL`, so an
//! event is on disk before the caller shows it as done. Each event carries the SHA-256
//! of the previous one, so any later change to a stored event breaks the chain and is
//! detected by [`EventLog::verify`] (`zhongshu audit verify`).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::dispatch::Role;

/// The hash before the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event log {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
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

/// The result of checking the chain.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyReport {
    pub events: u64,
    pub chain_ok: bool,
    /// Sequence number of the first event whose hash does not match.
    pub first_bad_event: Option<i64>,
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

/// The append-only log.
pub struct EventLog {
    conn: Connection,
    path: PathBuf,
    last: Option<(i64, String)>,
}

impl EventLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
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
            );",
        )
        .map_err(err)?;
        let last = conn
            .query_row(
                "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(err)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            last,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one event; when this returns, the event is durable.
    pub fn append(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: Role,
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
            role: role.as_str().into(),
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

    /// Appends events `(kind, payload JSON)` in one transaction: all are durable when
    /// this returns, or none is written.
    pub fn append_all(
        &mut self,
        at_ms: i64,
        operator: &str,
        role: Role,
        events: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let role = role.as_str();
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
        tx.commit().map_err(err)?;
        self.last = Some((seq, prev_hash));
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
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
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
            .map_err(|e| self.err(e))?;
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

    /// Recomputes the chain from the first event; the first mismatch is reported.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        self.verify_with(|_| {})
    }

    /// As [`EventLog::verify`], showing each event to `f` on the way, so a caller that
    /// also wants to count or index the events reads the log once.
    pub fn verify_with(&self, mut f: impl FnMut(&StoredEvent)) -> Result<VerifyReport, StoreError> {
        let mut prev = GENESIS_HASH.to_string();
        let mut count = 0u64;
        let mut first_bad = None;
        self.scan(|e| {
            count += 1;
            f(&e);
            if first_bad.is_some() {
                return;
            }
            let recomputed = event_hash(
                &prev,
                e.seq,
                e.at_ms,
                &e.operator,
                &e.role,
                &e.kind,
                &e.payload,
            );
            if e.seq != count as i64 || e.prev_hash != prev || e.hash != recomputed {
                first_bad = Some(e.seq);
            }
            prev = e.hash;
        })?;
        Ok(VerifyReport {
            events: count,
            chain_ok: first_bad.is_none(),
            first_bad_event: first_bad,
        })
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
                Role::Dispatcher,
                "report_incident",
                &serde_json::json!({"kind": "fire"}),
            )
            .unwrap();
            log.append(
                2,
                "li.wei",
                Role::Dispatcher,
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
                Role::DepartmentLiaison,
                "acknowledge_order",
                &serde_json::json!({}),
            )
            .unwrap();
        assert_eq!(e.seq, 3);
        let events = log.events().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2].prev_hash, events[1].hash);
        assert_eq!(events[0].role, "dispatcher");
        assert_eq!(
            log.verify().unwrap(),
            VerifyReport {
                events: 3,
                chain_ok: true,
                first_bad_event: None
            }
        );
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
                Role::Operator,
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
            report,
            VerifyReport {
                events: 5,
                chain_ok: false,
                first_bad_event: Some(3)
            }
        );
        // Deleting an event breaks the chain too.
        raw.execute("UPDATE events SET payload = '{\"n\":3}' WHERE seq = 3", [])
            .unwrap();
        raw.execute("DELETE FROM events WHERE seq = 2", []).unwrap();
        let report = EventLog::open(&path).unwrap().verify().unwrap();
        assert_eq!((report.chain_ok, report.first_bad_event), (false, Some(3)));
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
}
