//! The seal: an HMAC-SHA256 key kept outside the database, and checkpoints (a log's
//! head — sequence number and hash — sealed with it). Without the key nobody can make
//! a checkpoint that verifies, so a log rewritten with recomputed hashes, or cut
//! short, is caught.

use std::io::Write;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::StoreError;

type HmacSha256 = Hmac<Sha256>;

/// The secret that seals a log. Keep its file away from the database's backups and
/// from anyone who may write the database but must not rewrite history.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// `n` random bytes from the operating system, as lowercase hex.
pub(super) fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl SealKey {
    /// A new random key.
    pub fn generate() -> Result<SealKey, String> {
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).map_err(|e| format!("no randomness from the OS: {e}"))?;
        Ok(SealKey(key))
    }

    /// Reads a key file: 64 hex digits (one line).
    pub fn load(path: &Path) -> Result<SealKey, StoreError> {
        let bad = |message: String| StoreError::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let bytes = unhex(&text)
            .filter(|b| b.len() == 32)
            .ok_or_else(|| bad("not a seal key (64 hex digits expected)".into()))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(SealKey(key))
    }

    /// Reads the key file, or creates it (owner-only, written and renamed into place)
    /// when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<SealKey, StoreError> {
        if path.exists() {
            return Self::load(path);
        }
        let bad = |message: String| StoreError::Key {
            path: path.to_path_buf(),
            message,
        };
        let key = Self::generate().map_err(bad)?;
        write_private(path, format!("{}\n", hex(&key.0)).as_bytes())
            .map_err(|e| bad(format!("cannot create: {e}")))?;
        Ok(key)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// Writes `bytes` to `path` readable by the owner only, atomically (a temporary file
/// renamed into place), and fsyncs it.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = {
        let mut s = path.as_os_str().to_os_string();
        s.push(format!(".tmp{}", std::process::id()));
        PathBuf::from(s)
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// A sealed stretch of a log: a commit's seal (events `from_seq..=seq`) in the
/// database, or the witness of the head kept outside it. Seals and witnesses are
/// sealed under different labels, so one cannot be made from the other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: String,
    /// The first event the seal covers (0 in a witness).
    #[serde(default)]
    pub from_seq: i64,
    pub seq: i64,
    pub hash: String,
    pub at_ms: i64,
    /// HMAC-SHA256 over the label, log id, sequence numbers, hash and time, in hex.
    pub mac: String,
}

const SEAL_LABEL: &str = "zhongshu-seal-v2";
const WITNESS_LABEL: &str = "zhongshu-witness-v2";

impl Checkpoint {
    fn message(&self, label: &str) -> String {
        format!(
            "{label}\n{}\n{}\n{}\n{}\n{}",
            self.log_id, self.from_seq, self.seq, self.hash, self.at_ms
        )
    }

    fn make(
        key: &SealKey,
        label: &str,
        log_id: &str,
        from_seq: i64,
        seq: i64,
        hash: &str,
        at_ms: i64,
    ) -> Checkpoint {
        let mut c = Checkpoint {
            log_id: log_id.to_string(),
            from_seq,
            seq,
            hash: hash.to_string(),
            at_ms,
            mac: String::new(),
        };
        let mut mac = key.mac();
        mac.update(c.message(label).as_bytes());
        c.mac = hex(&mac.finalize().into_bytes());
        c
    }

    /// The seal of one commit: events `from_seq..=seq`, the last with `hash`.
    pub fn seal(
        key: &SealKey,
        log_id: &str,
        from_seq: i64,
        seq: i64,
        hash: &str,
        at_ms: i64,
    ) -> Checkpoint {
        Self::make(key, SEAL_LABEL, log_id, from_seq, seq, hash, at_ms)
    }

    /// The witness of a log's head.
    pub fn witness(key: &SealKey, log_id: &str, seq: i64, hash: &str, at_ms: i64) -> Checkpoint {
        Self::make(key, WITNESS_LABEL, log_id, 0, seq, hash, at_ms)
    }

    fn verify_as(&self, key: &SealKey, label: &str) -> bool {
        let Some(tag) = unhex(&self.mac) else {
            return false;
        };
        let mut mac = key.mac();
        mac.update(self.message(label).as_bytes());
        mac.verify_slice(&tag).is_ok()
    }

    /// Whether this is a seal made with `key` (compared in constant time).
    pub fn verify_seal(&self, key: &SealKey) -> bool {
        self.verify_as(key, SEAL_LABEL)
    }

    /// Whether this is a witness made with `key`.
    pub fn verify_witness(&self, key: &SealKey) -> bool {
        self.verify_as(key, WITNESS_LABEL)
    }

    /// Reads a witness file: `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Checkpoint>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("the witness {} is unreadable: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("the witness {}: {e}", path.display())),
        }
    }

    /// Replaces the witness file with this checkpoint, owner-only and atomically; not
    /// fsync'd: a witness that lags behind the log after a crash still names an
    /// event it has.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = {
            let mut s = path.as_os_str().to_os_string();
            s.push(".tmp");
            PathBuf::from(s)
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(&tmp)?
            .write_all(&serde_json::to_vec(self).expect("a checkpoint serialises"))?;
        std::fs::rename(&tmp, path)
    }
}
