//! Integration tests: the `zhongshu` binary as users and scripts run it.

mod cli;
mod dispatch;
mod feeds;
mod hall;
mod map_semantics;
mod screenshot;
mod wall;

use std::path::PathBuf;

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Taken by the tests whose results depend on wall time (feeds polled every half
/// second for a few seconds) and by the tests that render in software (which load
/// both cores for seconds), so that no rendering starves a timed feed test on a
/// two-core machine. Everything else runs beside them.
pub fn timed() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `zhongshu` under `xvfb-run` unless a display is already there, rendering through
/// Vulkan (lavapipe in CI) unless WGPU_BACKEND says otherwise.
pub fn zhongshu_with_display() -> std::process::Command {
    let mut cmd = if std::env::var_os("DISPLAY").is_some() {
        zhongshu()
    } else {
        let mut c = std::process::Command::new("xvfb-run");
        c.args(["-a", "-s", "-screen 0 1920x1080x24"])
            .arg(env!("CARGO_BIN_EXE_zhongshu"));
        c
    };
    cmd.env(
        "WGPU_BACKEND",
        std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "vulkan".into()),
    );
    cmd
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
