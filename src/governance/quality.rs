//! Quality rules per feed and entity type: completeness of required fields, validity
//! (ranges, coordinates inside the city, timestamps not in the future, no duplicate
//! ids in a payload) and freshness against the declared cadence, scored with history.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::feeds::config::FeedConfig;
use crate::feeds::{EntityKind, EntityUpdate};

pub use crate::state::MAX_CLOCK_SKEW_MS;
/// Score samples kept per feed (one per payload).
const HISTORY: usize = 120;

/// One thing wrong with one update.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum QualityIssue {
    MissingRequired {
        field: String,
    },
    OutOfRange {
        field: String,
        value: f64,
        min: f64,
        max: f64,
    },
    OutsideCity,
    FutureTimestamp {
        ahead_ms: i64,
    },
    DuplicateId,
}

impl QualityIssue {
    pub fn code(&self) -> &'static str {
        match self {
            QualityIssue::MissingRequired { .. } => "missing_required",
            QualityIssue::OutOfRange { .. } => "out_of_range",
            QualityIssue::OutsideCity => "outside_city",
            QualityIssue::FutureTimestamp { .. } => "future_timestamp",
            QualityIssue::DuplicateId => "duplicate_id",
        }
    }

    /// Completeness issues versus validity issues.
    pub fn is_completeness(&self) -> bool {
        matches!(self, QualityIssue::MissingRequired { .. })
    }
}

/// Plausible range of a typed value (Smart Data Models units).
fn default_range(field: &str) -> Option<(f64, f64)> {
    Some(match field {
        "averageVehicleSpeed" => (0.0, 250.0),
        "intensity" => (0.0, 20_000.0),
        "occupancy" => (0.0, 1.0),
        "airQualityIndex" => (
            *crate::state::kpi::AQI_SCALE.start(),
            *crate::state::kpi::AQI_SCALE.end(),
        ),
        "pm25" | "o3" => (0.0, 1000.0),
        "pm10" | "no2" => (0.0, 2000.0),
        "speed" => (0.0, 300.0),
        "heading" => (0.0, 360.0),
        "availableSpotNumber" | "totalSpotNumber" => (0.0, 100_000.0),
        _ => return None,
    })
}

/// The typed values with their default ranges.
fn typed_values(kind: &EntityKind) -> Vec<(&'static str, Option<f64>, f64, f64)> {
    kind.numbers()
        .into_iter()
        .filter_map(|(name, v)| default_range(name).map(|(min, max)| (name, v, min, max)))
        .collect()
}

/// Fields the Smart Data Models type cannot do without, by default.
fn default_required(kind: &EntityKind) -> &'static [&'static str] {
    match kind {
        EntityKind::TrafficFlow { .. } => &["averageVehicleSpeed"],
        EntityKind::AirQuality { .. } => &["airQualityIndex"],
        EntityKind::Vehicle { .. } => &["location"],
        EntityKind::Alert { .. } => &["severity"],
        EntityKind::Parking { .. } => &["availableSpotNumber"],
        EntityKind::Generic => &[],
    }
}

fn has_field(update: &EntityUpdate, field: &str) -> bool {
    match field {
        "location" => update.position.is_some(),
        "dateObserved" => update.observed_at_ms.is_some(),
        _ => {
            // An empty list says there is nothing: no required value.
            update
                .fields
                .get(field)
                .is_some_and(|v| v.as_list().is_none_or(|items| !items.is_empty()))
                || typed_values(&update.kind)
                    .iter()
                    .any(|(n, v, ..)| *n == field && v.is_some())
                || matches!(
                    (&update.kind, field),
                    (
                        EntityKind::Alert {
                            severity: Some(_),
                            ..
                        },
                        "severity"
                    )
                )
        }
    }
}

/// The rules in force for a city.
#[derive(Clone, Debug)]
pub struct QualityRules {
    /// `[min_lon, min_lat, max_lon, max_lat]` that counts as inside the city.
    pub city_bounds: Option<[f64; 4]>,
    /// Configured ranges (`[[rule]]` in the feeds file), replacing the defaults.
    pub ranges: Vec<crate::feeds::config::RangeRule>,
}

impl QualityRules {
    /// Rules for a city whose map covers `bbox` (WGS84); positions up to ~5 km outside
    /// still count as the city (feeds cover more than the map extract).
    pub fn for_city(bbox: [f64; 4]) -> Self {
        let margin = 0.05;
        QualityRules {
            city_bounds: Some([
                bbox[0] - margin,
                bbox[1] - margin,
                bbox[2] + margin,
                bbox[3] + margin,
            ]),
            ranges: Vec::new(),
        }
    }

    /// The same rules with configured ranges.
    pub fn with_ranges(mut self, ranges: Vec<crate::feeds::config::RangeRule>) -> Self {
        self.ranges = ranges;
        self
    }

    /// Every issue of one update received at `now_ms`.
    pub fn check(
        &self,
        feed: &FeedConfig,
        update: &EntityUpdate,
        now_ms: i64,
    ) -> Vec<QualityIssue> {
        let mut issues = Vec::new();
        let required = default_required(&update.kind)
            .iter()
            .copied()
            .chain(feed.required_fields.iter().map(String::as_str));
        for field in required {
            if !has_field(update, field) {
                issues.push(QualityIssue::MissingRequired {
                    field: field.to_string(),
                });
            }
        }
        let configured = |field: &str| {
            self.ranges
                .iter()
                .any(|r| r.entity_type == update.entity_type && r.field == field)
        };
        for (field, value, min, max) in typed_values(&update.kind) {
            if let Some(v) = value
                && !configured(field)
                && !(min..=max).contains(&v)
            {
                issues.push(QualityIssue::OutOfRange {
                    field: field.to_string(),
                    value: v,
                    min,
                    max,
                });
            }
        }
        for rule in self
            .ranges
            .iter()
            .filter(|r| r.entity_type == update.entity_type)
        {
            let typed = typed_values(&update.kind)
                .into_iter()
                .find(|(n, ..)| *n == rule.field)
                .and_then(|(_, v, ..)| v);
            let value = typed.or_else(|| update.fields.get(&rule.field).and_then(|v| v.as_f64()));
            let (min, max) = (
                rule.min.unwrap_or(f64::NEG_INFINITY),
                rule.max.unwrap_or(f64::INFINITY),
            );
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                issues.push(QualityIssue::OutOfRange {
                    field: rule.field.clone(),
                    value: v,
                    min,
                    max,
                });
            }
        }
        if let (Some([lon, lat]), Some([a, b, c, d])) = (update.position, self.city_bounds)
            && !(lon >= a && lon <= c && lat >= b && lat <= d)
        {
            issues.push(QualityIssue::OutsideCity);
        }
        if let Some(t) = update.observed_at_ms
            && t - now_ms > MAX_CLOCK_SKEW_MS
        {
            issues.push(QualityIssue::FutureTimestamp {
                ahead_ms: t - now_ms,
            });
        }
        issues
    }
}

/// How fresh a feed's data is against its declared cadence: the age of its newest
/// observation (receive time for untimed data; a 304 brings nothing new), not of the
/// last answer of its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Data within two cadences old.
    Fresh,
    /// Within ten cadences.
    Late,
    Stale,
    /// No data yet.
    Never,
}

/// Freshness status and score (1 fresh … 0 stale) from the time the newest data is as
/// of (`FeedHealth::data_as_of_ms`).
pub fn freshness(data_as_of_ms: Option<i64>, cadence_s: f64, now_ms: i64) -> (Freshness, f64) {
    let Some(t) = data_as_of_ms else {
        return (Freshness::Never, 0.0);
    };
    let cadences = (now_ms - t).max(0) as f64 / 1000.0 / cadence_s.max(0.1);
    let score = if cadences <= 2.0 {
        1.0
    } else {
        ((10.0 - cadences) / 8.0).clamp(0.0, 1.0)
    };
    let status = if cadences <= 2.0 {
        Freshness::Fresh
    } else if cadences <= 10.0 {
        Freshness::Late
    } else {
        Freshness::Stale
    };
    (status, score)
}

/// Running quality of one feed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedQuality {
    pub checked: u64,
    /// Updates with every required field.
    pub complete: u64,
    /// Updates with no validity issue.
    pub valid: u64,
    /// Items the decoder rejected: neither complete nor valid.
    #[serde(default)]
    pub rejected: u64,
    /// Issue code → count.
    pub issues: BTreeMap<String, u64>,
    /// The most recent issue, for the inspector and the steward.
    pub last_issue: Option<String>,
    /// (completeness, validity) per payload, oldest first.
    #[serde(skip)]
    pub history: VecDeque<(f64, f64)>,
}

impl FeedQuality {
    /// Items received: updates checked and items the decoder rejected.
    pub fn items(&self) -> u64 {
        self.checked + self.rejected
    }

    /// Share of items received with every required field; a rejected item has none
    /// (1.0 before any data).
    pub fn completeness(&self) -> f64 {
        share(self.complete, self.items())
    }

    /// Share of items received with no validity issue; a rejected item is not valid.
    pub fn validity(&self) -> f64 {
        share(self.valid, self.items())
    }

    /// Checks one payload's updates, counting `rejected` items the decoder could not
    /// read against both scores; returns each update's issues, in order.
    pub fn check_batch(
        &mut self,
        rules: &QualityRules,
        feed: &FeedConfig,
        updates: &[EntityUpdate],
        rejected: usize,
        now_ms: i64,
    ) -> Vec<Vec<QualityIssue>> {
        let mut check = BatchCheck::with_capacity(updates.len());
        let all = self.check_part(rules, feed, updates, now_ms, &mut check);
        self.finish_batch(check, rejected);
        all
    }

    /// Scores a part of a payload; a large payload is scored a part a frame, and
    /// counts as one payload when [`Self::finish_batch`] closes it.
    pub fn check_part(
        &mut self,
        rules: &QualityRules,
        feed: &FeedConfig,
        updates: &[EntityUpdate],
        now_ms: i64,
        check: &mut BatchCheck,
    ) -> Vec<Vec<QualityIssue>> {
        let all: Vec<Vec<QualityIssue>> = updates
            .iter()
            .map(|u| {
                let mut issues = rules.check(feed, u, now_ms);
                if !check.seen.insert(u.id.clone()) {
                    issues.push(QualityIssue::DuplicateId);
                }
                if !issues.iter().any(QualityIssue::is_completeness) {
                    check.complete += 1;
                }
                if !issues.iter().any(|i| !i.is_completeness()) {
                    check.valid += 1;
                }
                for issue in &issues {
                    *self.issues.entry(issue.code().to_string()).or_default() += 1;
                }
                if let Some(last) = issues.last() {
                    self.last_issue = Some(format!("{}: {}", u.id, describe(last)));
                }
                issues
            })
            .collect();
        check.updates += updates.len();
        self.checked += updates.len() as u64;
        all
    }

    /// Closes a payload scored in parts, with the items its decoder rejected.
    pub fn finish_batch(&mut self, check: BatchCheck, rejected: usize) {
        self.rejected += rejected as u64;
        self.complete += check.complete;
        self.valid += check.valid;
        let items = check.updates + rejected;
        if items > 0 {
            let n = items as f64;
            self.history
                .push_back((check.complete as f64 / n, check.valid as f64 / n));
            while self.history.len() > HISTORY {
                self.history.pop_front();
            }
        }
    }
}

/// A payload being scored in parts: ids seen so far (a repeated id is an issue) and
/// the tallies.
#[derive(Debug, Default)]
pub struct BatchCheck {
    seen: HashSet<String>,
    complete: u64,
    valid: u64,
    updates: usize,
}

impl BatchCheck {
    /// For a payload of `updates` updates: room for all their ids up front, so no part
    /// pays for re-hashing the ones before it.
    pub fn with_capacity(updates: usize) -> Self {
        Self {
            seen: HashSet::with_capacity(updates),
            ..Default::default()
        }
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        1.0
    } else {
        part as f64 / whole as f64
    }
}

/// A short human description of an issue.
pub fn describe(issue: &QualityIssue) -> String {
    match issue {
        QualityIssue::MissingRequired { field } => format!("required field {field} missing"),
        QualityIssue::OutOfRange {
            field,
            value,
            min,
            max,
        } => {
            format!("{field} = {value} outside {min}..{max}")
        }
        QualityIssue::OutsideCity => "position outside the city".into(),
        QualityIssue::FutureTimestamp { ahead_ms } => {
            format!("observed {} s in the future", ahead_ms / 1000)
        }
        QualityIssue::DuplicateId => "id repeated in one payload".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::FieldValue;
    use crate::feeds::config::parse_feeds;

    fn feed() -> FeedConfig {
        parse_feeds(
            "[[feed]]\nname='air'\nkind='sim'\ndomain='ecology'\nrequired_fields=['pm25']\n",
        )
        .unwrap()
        .remove(0)
    }

    fn air(
        id: &str,
        aqi: Option<f64>,
        pm25: Option<f64>,
        pos: [f64; 2],
        observed: i64,
    ) -> EntityUpdate {
        let mut fields = BTreeMap::new();
        if let Some(p) = pm25 {
            fields.insert("pm25".to_string(), FieldValue::Number(p));
        }
        EntityUpdate {
            id: id.into(),
            entity_type: "AirQualityObserved".into(),
            kind: EntityKind::AirQuality {
                aqi,
                pm25,
                pm10: None,
                no2: None,
                o3: None,
            },
            position: Some(pos),
            line: None,
            observed_at_ms: Some(observed),
            fields,
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    const NOW: i64 = 1_795_946_400_000;
    const IN_CITY: [f64; 2] = [24.94, 60.17];

    #[test]
    fn each_rule_finds_its_issue() {
        let rules = QualityRules::for_city([24.93, 60.16, 24.96, 60.18]);
        let f = feed();
        assert!(
            rules
                .check(&f, &air("ok", Some(40.0), Some(12.0), IN_CITY, NOW), NOW)
                .is_empty()
        );
        let codes = |u: EntityUpdate| {
            rules
                .check(&f, &u, NOW)
                .iter()
                .map(|i| i.code())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            codes(air("a", None, Some(1.0), IN_CITY, NOW)),
            vec!["missing_required"]
        );
        assert_eq!(
            codes(air("b", Some(40.0), None, IN_CITY, NOW)),
            vec!["missing_required"]
        );
        assert_eq!(
            codes(air("c", Some(-5.0), Some(1.0), IN_CITY, NOW)),
            vec!["out_of_range"]
        );
        assert_eq!(
            codes(air("d", Some(40.0), Some(1.0), [2.35, 48.85], NOW)),
            vec!["outside_city"]
        );
        assert_eq!(
            codes(air("e", Some(40.0), Some(1.0), IN_CITY, NOW + 3_600_000)),
            vec!["future_timestamp"]
        );
    }

    #[test]
    fn configured_ranges_replace_defaults_and_reach_generic_fields() {
        let rules = QualityRules::for_city([24.93, 60.16, 24.96, 60.18]).with_ranges(
            crate::feeds::config::parse_rules(
                "[[rule]]\ntype='AirQualityObserved'\nfield='airQualityIndex'\nmax=100\n\
                 [[rule]]\ntype='AirQualityObserved'\nfield='pm25'\nmin=0\nmax=5\n",
            )
            .unwrap(),
        );
        let f = feed();
        let issues = rules.check(&f, &air("x", Some(150.0), Some(12.0), IN_CITY, NOW), NOW);
        let fields: Vec<_> = issues
            .iter()
            .filter_map(|i| match i {
                QualityIssue::OutOfRange { field, .. } => Some(field.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(fields, vec!["airQualityIndex", "pm25"]);
        assert!(crate::feeds::config::parse_rules("[[rule]]\ntype='A'\nfield='b'\n").is_err());
        assert!(
            crate::feeds::config::parse_rules("[[rule]]\ntype='A'\nfield='b'\nmin=5\nmax=1\n")
                .is_err()
        );
    }

    #[test]
    fn scores_and_duplicates_per_payload() {
        let rules = QualityRules::for_city([24.93, 60.16, 24.96, 60.18]);
        let f = feed();
        let mut q = FeedQuality::default();
        let batch = vec![
            air("s1", Some(40.0), Some(10.0), IN_CITY, NOW),
            air("s2", Some(900.0), Some(10.0), IN_CITY, NOW),
            air("s3", Some(40.0), None, IN_CITY, NOW),
            air("s1", Some(41.0), Some(10.0), IN_CITY, NOW),
        ];
        let issues = q.check_batch(&rules, &f, &batch, 0, NOW);
        assert_eq!(issues[3], vec![QualityIssue::DuplicateId]);
        assert_eq!(q.checked, 4);
        assert_eq!(q.completeness(), 0.75);
        assert_eq!(q.validity(), 0.5);
        assert_eq!(q.issues["out_of_range"], 1);
        assert_eq!(q.history.len(), 1);
        assert!(q.last_issue.as_deref().unwrap().contains("s1"));
    }

    #[test]
    fn rejected_items_count_against_completeness_and_validity() {
        let rules = QualityRules::for_city([24.93, 60.16, 24.96, 60.18]);
        let f = feed();
        let mut q = FeedQuality::default();
        // Every item rejected: nothing is complete or valid.
        q.check_batch(&rules, &f, &[], 5, NOW);
        assert_eq!(q.checked, 0);
        assert_eq!(q.rejected, 5);
        assert_eq!(q.completeness(), 0.0);
        assert_eq!(q.validity(), 0.0);
        assert_eq!(q.history.back(), Some(&(0.0, 0.0)));
        // Three good updates and one rejected item: three of four.
        let mut q = FeedQuality::default();
        let good = vec![
            air("s1", Some(40.0), Some(10.0), IN_CITY, NOW),
            air("s2", Some(41.0), Some(10.0), IN_CITY, NOW),
            air("s3", Some(42.0), Some(10.0), IN_CITY, NOW),
        ];
        q.check_batch(&rules, &f, &good, 1, NOW);
        assert_eq!(q.completeness(), 0.75);
        assert_eq!(q.validity(), 0.75);
        // Nothing seen yet: nothing to hold against the feed.
        assert_eq!(FeedQuality::default().validity(), 1.0);
    }

    #[test]
    fn an_empty_list_is_no_required_value() {
        let f = parse_feeds(
            "[[feed]]\nname='parking'\nkind='sim'\ndomain='traffic'\nrequired_fields=['allowedVehicleType']\n",
        )
        .unwrap()
        .remove(0);
        let rules = QualityRules::for_city([24.93, 60.16, 24.96, 60.18]);
        let lot = |types: Vec<FieldValue>| {
            let mut update = air("lot", Some(40.0), Some(1.0), IN_CITY, NOW);
            update
                .fields
                .insert("allowedVehicleType".into(), FieldValue::List(types));
            update
        };
        assert_eq!(
            rules.check(&f, &lot(vec![]), NOW),
            vec![QualityIssue::MissingRequired {
                field: "allowedVehicleType".into()
            }]
        );
        assert_eq!(
            rules.check(&f, &lot(vec![FieldValue::Text("car".into())]), NOW),
            vec![]
        );
    }

    #[test]
    fn freshness_against_cadence() {
        assert_eq!(freshness(None, 5.0, NOW), (Freshness::Never, 0.0));
        assert_eq!(
            freshness(Some(NOW - 8_000), 5.0, NOW),
            (Freshness::Fresh, 1.0)
        );
        let (status, score) = freshness(Some(NOW - 30_000), 5.0, NOW);
        assert_eq!(status, Freshness::Late);
        assert!((score - 0.5).abs() < 1e-9);
        assert_eq!(freshness(Some(NOW - 120_000), 5.0, NOW).0, Freshness::Stale);
    }
}
