//! The data-steward window: the catalog with live quality, conflicts, supply and
//! demand, drawn from the governance state (app/governance.rs).

use bevy_egui::egui;

use super::theme;
use super::widgets::{age_text, domain_label};
use crate::feeds::Domain;
use crate::feeds::config::FeedConfig;
use crate::governance::catalog::consumers;
use crate::governance::health::FeedHealth;
use crate::governance::quality::{FeedQuality, freshness};
use crate::governance::reconcile::Reconciliation;

fn score_colour(score: f64) -> egui::Color32 {
    if score >= 0.95 {
        theme::GOOD
    } else if score >= 0.7 {
        theme::WARN
    } else {
        theme::ALARM
    }
}

/// Validity of the last payloads as a small line (1.0 at the top).
fn history_ui(ui: &mut egui::Ui, q: &FeedQuality) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(60.0, 14.0), egui::Sense::hover());
    let n = q.history.len();
    if n < 2 {
        return;
    }
    let points: Vec<egui::Pos2> = q
        .history
        .iter()
        .enumerate()
        .map(|(i, (_, validity))| {
            egui::pos2(
                rect.left() + rect.width() * i as f32 / (n - 1) as f32,
                rect.bottom() - rect.height() * *validity as f32,
            )
        })
        .collect();
    ui.painter().add(egui::Shape::line(
        points,
        egui::Stroke::new(1.5, theme::ACCENT),
    ));
}

/// The data steward's view: every feed as a catalog entry with live quality, the
/// conflicts between sources, and which data the panels need but nobody supplies.
pub fn steward_ui(
    ui: &mut egui::Ui,
    feeds: &[FeedConfig],
    health: &[FeedHealth],
    quality: &[FeedQuality],
    reconciliation: &Reconciliation,
    now_ms: i64,
) {
    ui.heading("Catalog 数据目录");
    egui::Grid::new("catalog")
        .striped(true)
        .num_columns(9)
        .show(ui, |ui| {
            for h in [
                "feed",
                "owner",
                "domain",
                "every",
                "freshness",
                "complete",
                "valid",
                "conflicts",
                "status",
            ] {
                ui.label(egui::RichText::new(h).color(theme::MUTED).small());
            }
            ui.end_row();
            for (i, f) in feeds.iter().enumerate() {
                let (Some(h), Some(q)) = (health.get(i), quality.get(i)) else {
                    continue;
                };
                let (status, score) = freshness(h.data_as_of_ms, f.cadence_s(), now_ms);
                ui.label(&f.name);
                ui.label(f.owner.as_deref().unwrap_or("—"));
                ui.label(domain_label(f.domain));
                ui.label(format!("{} s", f.interval_s));
                let age = h
                    .data_age_s(now_ms)
                    .map_or_else(|| "no data".to_string(), age_text);
                ui.label(
                    egui::RichText::new(format!("{status:?} ({age})")).color(score_colour(score)),
                );
                ui.label(
                    egui::RichText::new(format!("{:.0}%", q.completeness() * 100.0))
                        .color(score_colour(q.completeness())),
                );
                ui.horizontal(|ui| {
                    ui.label(
                        egui::RichText::new(format!("{:.0}%", q.validity() * 100.0))
                            .color(score_colour(q.validity())),
                    )
                    .on_hover_text(q.last_issue.clone().unwrap_or_else(|| "no issues".into()));
                    history_ui(ui, q);
                });
                let conflicts = reconciliation.conflicts_for(&f.name);
                ui.label(conflicts.to_string());
                match &h.quarantined {
                    Some(q) => ui.label(
                        egui::RichText::new(format!(
                            "quarantined, held out of map and KPIs: {}",
                            q.reason
                        ))
                        .color(theme::ALARM),
                    ),
                    None if h.last_error.is_some() && h.last_ok_ms.is_none() => {
                        ui.label(egui::RichText::new("failing").color(theme::ALARM))
                    }
                    None if h.removed + h.expired > 0 => ui.label(
                        egui::RichText::new(format!(
                            "ok · {} gone from the feed, {} expired",
                            h.removed, h.expired
                        ))
                        .color(theme::GOOD),
                    ),
                    None => ui.label(egui::RichText::new("ok").color(theme::GOOD)),
                };
                ui.end_row();
            }
        });
    ui.separator();
    ui.heading(format!(
        "Conflicts 冲突 ({})",
        reconciliation.conflict_count
    ));
    if reconciliation.conflicts.is_empty() {
        ui.label(egui::RichText::new("No two sources disagree.").color(theme::MUTED));
    }
    egui::Grid::new("conflicts")
        .striped(true)
        .num_columns(4)
        .show(ui, |ui| {
            for c in reconciliation.conflicts.iter().take(15) {
                ui.label(format!("{}.{}", c.entity_type, c.field));
                ui.label(
                    egui::RichText::new(format!(
                        "{} = {} ({} ago) wins",
                        c.winner.feed,
                        c.winner.shown(),
                        age_text(c.winner.age_s)
                    ))
                    .color(theme::GOOD),
                );
                ui.label(
                    egui::RichText::new(format!(
                        "{} says {} ({} ago)",
                        c.other.feed,
                        c.other.shown(),
                        age_text(c.other.age_s)
                    ))
                    .color(theme::WARN),
                );
                ui.label(
                    egui::RichText::new(&c.winner.id)
                        .small()
                        .color(theme::MUTED),
                );
                ui.end_row();
            }
        });
    ui.separator();
    ui.heading("Supply and demand 供需");
    egui::Grid::new("supply")
        .striped(true)
        .num_columns(3)
        .show(ui, |ui| {
            for d in Domain::ALL {
                let suppliers: Vec<&str> = feeds
                    .iter()
                    .filter(|f| f.domain == d)
                    .map(|f| f.name.as_str())
                    .collect();
                ui.label(domain_label(d));
                ui.label(egui::RichText::new(consumers(d).join(", ")).small());
                if suppliers.is_empty() {
                    ui.label(
                        egui::RichText::new("missing: no feed supplies it").color(theme::ALARM),
                    );
                } else {
                    ui.label(suppliers.join(", "));
                }
                ui.end_row();
            }
        });
}

#[cfg(test)]
mod tests {
    use egui_kittest::Harness;
    use egui_kittest::kittest::Queryable;

    use super::*;
    use crate::feeds::config::parse_feeds;
    use crate::feeds::{EntityKind, EntityUpdate};
    use crate::geo_frame::GeoFrame;
    use crate::governance::reconcile::reconcile;
    use crate::state::LiveState;

    #[test]
    fn steward_sees_catalog_conflicts_and_missing_supply() {
        let feeds = parse_feeds(
            "[[feed]]\nname='eco-bureau'\nkind='sim'\ndomain='ecology'\nowner='Ecology Bureau'\nauthoritative_for=['AirQualityObserved']\n\
             [[feed]]\nname='district-sensors'\nkind='sim'\ndomain='ecology'\n",
        )
        .unwrap();
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        for (feed, aqi) in [(0, 40.0), (1, 95.0)] {
            state.apply(
                feed,
                EntityUpdate {
                    id: "st-1".into(),
                    entity_type: "AirQualityObserved".into(),
                    kind: EntityKind::AirQuality {
                        aqi: Some(aqi),
                        pm25: None,
                        pm10: None,
                        no2: None,
                        o3: None,
                    },
                    position: Some([24.94, 60.17]),
                    line: None,
                    observed_at_ms: Some(0),
                    fields: Default::default(),
                    units: Default::default(),
                    notes: Vec::new(),
                },
                0,
            );
        }
        let reconciliation = reconcile(&state, &feeds, 1000);
        let (_tx, rx) = std::sync::mpsc::channel();
        let ingest = crate::governance::health::Ingest::new(&feeds, rx);
        let harness = Harness::new_ui(|ui| {
            steward_ui(
                ui,
                &feeds,
                &ingest.health,
                &ingest.quality,
                &reconciliation,
                1000,
            );
        });
        harness.get_by_label("Conflicts 冲突 (1)");
        harness.get_by_label("eco-bureau = 40 (1.0 s ago) wins");
        harness.get_by_label("district-sensors says 95 (1.0 s ago)");
        harness.get_by_label("Ecology Bureau");
        drop(harness);

        // Values in different units are shown with them.
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        for (feed, no2, unit) in [(0, 38.5, "GQ"), (1, 0.02, "59")] {
            let mut update = EntityUpdate {
                id: "st-2".into(),
                entity_type: "AirQualityObserved".into(),
                kind: EntityKind::Generic,
                position: Some([24.95, 60.17]),
                line: None,
                observed_at_ms: Some(0),
                fields: Default::default(),
                units: Default::default(),
                notes: Vec::new(),
            };
            update
                .fields
                .insert("NO2".into(), crate::feeds::FieldValue::Number(no2));
            update.units.insert("NO2".into(), unit.into());
            state.apply(feed, update, 0);
        }
        let reconciliation = reconcile(&state, &feeds, 1000);
        let harness = Harness::new_ui(|ui| {
            steward_ui(
                ui,
                &feeds,
                &ingest.health,
                &ingest.quality,
                &reconciliation,
                1000,
            );
        });
        harness.get_by_label("eco-bureau = 38.5 µg/m³ (1.0 s ago) wins");
        harness.get_by_label("district-sensors says 0.02 ppm (1.0 s ago)");
        // Nothing supplies traffic: the steward knows whom to ask.
        assert!(
            harness
                .get_all_by_label("missing: no feed supplies it")
                .count()
                >= 6
        );
    }
}
