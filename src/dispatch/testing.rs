//! What the dispatch tests (and the desk's) share: a fresh log's path, a report.

use std::path::PathBuf;

use super::book::{Command, NewIncident, Severity};
use crate::feeds::Domain;

/// A fresh, empty folder for a test's event log; the log's path in it.
pub fn temp_db(area: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zhongshu-{area}-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir.join("events.db")
}

/// A shop-roof fire reported on the map, in Helsinki centre.
pub fn fire() -> Command {
    Command::ReportIncident(NewIncident {
        kind: "building_fire".into(),
        title: "Smoke from a shop roof".into(),
        domain: Domain::Safety,
        severity: Severity::Severe,
        lon: 24.94,
        lat: 60.17,
        source: "map".into(),
        key: None,
    })
}
