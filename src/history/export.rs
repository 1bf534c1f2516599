//! `zhongshu export`: a window of the history as GeoJSON lines, for analysts
//! (`duckdb -c "select * from read_json('city.geojsonl')"`, `pandas.read_json(...,
//! lines=True)`, `ogr2ogr`).
//!
//! One Feature a line. First the state at `--from` (`"change": "state"`, every
//! entity then), then every change after it up to `--to`, in order: `"update"`, or
//! `"removed"` (no geometry). Each Feature's `id` is the entity's id, its geometry
//! the entity's position or shape (WGS84), its properties the entity's attributes as
//! NGSI-LD normalizes them (`type` the entity type) plus `feed` (the feed's name),
//! `change`, `taken_in` (when Zhongshu took the change in) and `observed_at` (the
//! source's own time, when it gave one). An attribute whose name is one of those is
//! kept as `attribute:<name>`.

use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use super::codec::Change;
use super::{Entity, History};
use crate::clock::rfc3339_from_unix_ms;
use crate::model::{EntityUpdate, FeedId};

/// What an export wrote.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExportStats {
    pub from: String,
    pub to: String,
    /// Lines written in all.
    pub features: u64,
    /// Entities as they stood at `from`.
    pub state: u64,
    pub updates: u64,
    pub removals: u64,
    /// Damaged or cut-short segments met (read as far as they go).
    pub problems: Vec<String>,
}

/// The properties Zhongshu adds to each Feature.
const OURS: [&str; 4] = ["feed", "change", "taken_in", "observed_at"];

/// One line: `update` as a Feature, `change` one of state, update, removed.
fn feature(
    names: &dyn Fn(FeedId) -> String,
    feed: FeedId,
    at_ms: i64,
    change: &str,
    update: &EntityUpdate,
) -> Value {
    let Value::Object(ngsi) = crate::sim::serve::to_ngsi_ld(update) else {
        unreachable!("an entity is a JSON object")
    };
    let mut feature = crate::governance::open_data::ngsi_feature(&update.id, &ngsi);
    if let Some(Value::Object(props)) = feature.get_mut("properties") {
        let mut ours = Map::new();
        ours.insert("feed".into(), names(feed).into());
        ours.insert("change".into(), change.into());
        ours.insert("taken_in".into(), rfc3339_from_unix_ms(at_ms).into());
        ours.insert(
            "observed_at".into(),
            update
                .observed_at_ms
                .map(rfc3339_from_unix_ms)
                .map_or(Value::Null, Value::from),
        );
        let theirs = std::mem::take(props);
        for (k, v) in theirs {
            // NGSI-LD's own time member is `observed_at` here.
            if k == "observedAt" {
                continue;
            }
            let k = if OURS.contains(&k.as_str()) {
                format!("attribute:{k}")
            } else {
                k
            };
            ours.insert(k, v);
        }
        *props = ours;
    }
    feature
}

/// Writes the history between `from_ms` and `to_ms` to `out` as GeoJSON lines.
pub fn export_geojsonl(
    history: &History,
    from_ms: i64,
    to_ms: i64,
    out: &mut dyn Write,
) -> anyhow::Result<ExportStats> {
    anyhow::ensure!(
        from_ms <= to_ms,
        "--from ({}) is after --to ({})",
        rfc3339_from_unix_ms(from_ms),
        rfc3339_from_unix_ms(to_ms)
    );
    let mut replay = history.replay_from(from_ms)?;
    let start = replay.snapshot();
    let feeds = start.feeds.clone();
    let names = move |feed: FeedId| {
        feeds
            .iter()
            .find(|f| f.id == feed)
            .map_or_else(|| format!("feed {feed}"), |f| f.name.clone())
    };
    let mut stats = ExportStats {
        from: rfc3339_from_unix_ms(from_ms),
        to: rfc3339_from_unix_ms(to_ms),
        ..ExportStats::default()
    };
    let line = |value: &Value, out: &mut dyn Write| -> anyhow::Result<()> {
        serde_json::to_writer(&mut *out, value)?;
        out.write_all(b"\n")?;
        Ok(())
    };
    for Entity {
        feed,
        at_ms,
        update,
    } in start.entities.values()
    {
        line(&feature(&names, *feed, *at_ms, "state", update), out)?;
        stats.state += 1;
    }
    // A second of data at a time, so memory stays bounded on a long window.
    let mut failed = None;
    let mut t = from_ms;
    while t < to_ms && failed.is_none() && !replay.ended() {
        t = (t + 1000).min(to_ms);
        replay.advance(t, |r| {
            if failed.is_some() {
                return;
            }
            let written = match r {
                Change::Upsert {
                    feed,
                    at_ms,
                    update,
                } => {
                    stats.updates += 1;
                    line(&feature(&names, feed, at_ms, "update", update), out)
                }
                Change::Remove { feed, at_ms, id } => {
                    stats.removals += 1;
                    let mut props = Map::new();
                    props.insert("feed".into(), names(feed).into());
                    props.insert("change".into(), "removed".into());
                    props.insert("taken_in".into(), rfc3339_from_unix_ms(at_ms).into());
                    let value = serde_json::json!({
                        "type": "Feature", "id": id, "geometry": null, "properties": props,
                    });
                    line(&value, out)
                }
            };
            if let Err(e) = written {
                failed = Some(e);
            }
        })?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    out.flush()?;
    stats.features = stats.state + stats.updates + stats.removals;
    stats.problems = replay.problems().to_vec();
    Ok(stats)
}
