//! Integration tests: the `zhongshu` binary as users and scripts run it.

mod cli;
mod dispatch;
mod feeds;
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
