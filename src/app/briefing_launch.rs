//! The desk's "Briefing 简报" button and F5: the leaders' briefing of the last shift,
//! presented full screen by a `zhongshu briefing` of its own (the same map, log and
//! time zone), while the desk goes on behind it.

use std::ffi::OsString;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bevy::prelude::*;

/// How to start the briefing, and the one started.
#[derive(Resource)]
pub struct BriefingLauncher {
    /// The program and its arguments.
    command: Vec<OsString>,
    child: Option<Child>,
    looked_at: Instant,
    /// Why the last one did not start or ended in error, for the top bar.
    pub problem: Option<String>,
}

/// What the top bar shows of it.
#[derive(Clone, Debug, PartialEq)]
pub enum BriefingState {
    Ready,
    Running,
    Failed(String),
}

impl BriefingLauncher {
    /// `command`: the program, then its arguments.
    pub fn new(command: Vec<OsString>) -> Self {
        Self {
            command,
            child: None,
            looked_at: Instant::now(),
            problem: None,
        }
    }

    pub fn state(&self) -> BriefingState {
        match (&self.child, &self.problem) {
            (Some(_), _) => BriefingState::Running,
            (None, Some(p)) => BriefingState::Failed(p.clone()),
            (None, None) => BriefingState::Ready,
        }
    }

    /// Starts the briefing; one at a time (a second press while it runs does nothing).
    pub fn start(&mut self) {
        self.poll();
        if self.child.is_some() {
            info!("the briefing is already being presented");
            return;
        }
        let Some((program, args)) = self.command.split_first() else {
            return;
        };
        match Command::new(program).args(args).spawn() {
            Ok(child) => {
                info!("briefing started (process {})", child.id());
                self.problem = None;
                self.child = Some(child);
            }
            Err(e) => {
                let p = format!("the briefing could not start: {e}");
                error!("{p}");
                self.problem = Some(p);
            }
        }
    }

    /// Notes the briefing's end, and whether it failed.
    pub fn poll(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                self.child = None;
                if !status.success() {
                    let p = format!(
                        "the briefing ended in error ({status}); its reason is in the terminal's log"
                    );
                    warn!("{p}");
                    self.problem = Some(p);
                }
            }
            Err(e) => {
                self.child = None;
                self.problem = Some(format!("the briefing's process is lost: {e}"));
            }
        }
    }
}

impl Drop for BriefingLauncher {
    /// The desk closed: its briefing goes with it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn plugin(app: &mut App) {
    app.add_systems(Update, (f5_starts_the_briefing, watch_the_briefing));
}

fn f5_starts_the_briefing(
    keys: Res<ButtonInput<KeyCode>>,
    launcher: Option<ResMut<BriefingLauncher>>,
) {
    if keys.just_pressed(KeyCode::F5)
        && let Some(mut launcher) = launcher
    {
        launcher.start();
    }
}

fn watch_the_briefing(launcher: Option<ResMut<BriefingLauncher>>) {
    let Some(mut launcher) = launcher else { return };
    if launcher.child.is_some() && launcher.looked_at.elapsed() >= Duration::from_millis(500) {
        launcher.looked_at = Instant::now();
        launcher.poll();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> BriefingLauncher {
        BriefingLauncher::new(vec!["sh".into(), "-c".into(), script.into()])
    }

    fn wait_until_ended(launcher: &mut BriefingLauncher) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while launcher.state() == BriefingState::Running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            launcher.poll();
        }
    }

    #[test]
    fn a_briefing_runs_once_at_a_time_and_a_failure_is_said() {
        let dir = std::env::temp_dir().join(format!("zhongshu-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("count");
        let mut launcher = sh(&format!("echo started >> {}; sleep 1", count.display()));
        assert_eq!(launcher.state(), BriefingState::Ready);
        launcher.start();
        assert_eq!(launcher.state(), BriefingState::Running);
        // F5 pressed again while it runs: no second briefing.
        launcher.start();
        wait_until_ended(&mut launcher);
        assert_eq!(launcher.state(), BriefingState::Ready);
        let lines = std::fs::read_to_string(&count).unwrap();
        assert_eq!(lines.lines().count(), 1, "{lines}");
        // Once it ended, another may start.
        launcher.start();
        wait_until_ended(&mut launcher);
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);

        let mut failing = sh("exit 3");
        failing.start();
        wait_until_ended(&mut failing);
        let BriefingState::Failed(why) = failing.state() else {
            panic!("{:?}", failing.state());
        };
        assert!(why.contains("ended in error") && why.contains('3'), "{why}");

        let mut missing = BriefingLauncher::new(vec![dir.join("no-such-program").into()]);
        missing.start();
        let BriefingState::Failed(why) = missing.state() else {
            panic!("{:?}", missing.state());
        };
        assert!(why.contains("could not start"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn closing_the_desk_ends_its_briefing() {
        let mut launcher = sh("sleep 30");
        launcher.start();
        let BriefingLauncher { child, .. } = &launcher;
        let pid = child.as_ref().unwrap().id();
        drop(launcher);
        // The process is gone (reaped): no /proc entry, or a zombie at most.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "{status}"
        );
    }
}
