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

/// A sealed head of a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: String,
    pub seq: i64,
    pub hash: String,
    pub at_ms: i64,
    /// HMAC-SHA256 over the log id, sequence number, hash and time, in hex.
    pub mac: String,
}

impl Checkpoint {
    fn message(log_id: &str, seq: i64, hash: &str, at_ms: i64) -> String {
        format!("zhongshu-seal-v1\n{log_id}\n{seq}\n{hash}\n{at_ms}")
    }

    pub fn sealed(key: &SealKey, log_id: &str, seq: i64, hash: &str, at_ms: i64) -> Checkpoint {
        let mut mac = key.mac();
        mac.update(Self::message(log_id, seq, hash, at_ms).as_bytes());
        Checkpoint {
            log_id: log_id.to_string(),
            seq,
            hash: hash.to_string(),
            at_ms,
            mac: hex(&mac.finalize().into_bytes()),
        }
    }

    /// Whether the seal was made with `key` (compared in constant time).
    pub fn verify(&self, key: &SealKey) -> bool {
        let Some(tag) = unhex(&self.mac) else {
            return false;
        };
        let mut mac = key.mac();
        mac.update(Self::message(&self.log_id, self.seq, &self.hash, self.at_ms).as_bytes());
        mac.verify_slice(&tag).is_ok()
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

    /// Replaces the witness file with this checkpoint (atomically; not fsync'd: a
    /// witness that lags behind the log after a crash still names an event it has).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = {
            let mut s = path.as_os_str().to_os_string();
            s.push(".tmp");
            PathBuf::from(s)
        };
        std::fs::write(
            &tmp,
            serde_json::to_vec(self).expect("a checkpoint serialises"),
        )?;
        std::fs::rename(&tmp, path)
    }
}
