//! Integration tests: the `zhongshu` binary as users and scripts run it.

mod cli;
mod dispatch;
mod feeds;
mod hall;
mod map_semantics;
mod screenshot;

use std::path::PathBuf;

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

pub fn zhongshu() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_zhongshu"))
}

/// Runs `zhongshu audit verify --db DB`: whether it succeeded, and its JSON report.
pub fn audit_verify(db: &std::path::Path) -> (bool, serde_json::Value) {
    let out = zhongshu()
        .args(["audit", "verify", "--db"])
        .arg(db)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON report from audit verify: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}
