//! Alerts in: NGSI-LD `Alert` entities and CAP 1.2 messages become incident reports, de-duplicated.
//!
//! Both inputs become one [`AlertIn`]: where, what kind, how severe, and a
//! de-duplication `key` that stays the same when a source repeats itself (an NGSI-LD
//! alert re-polled, a CAP Update or Cancel of an earlier message). [`AlertDedup`] then
//! says whether each one is a new incident, more about a known one, or its cancellation;
//! alerts from *different* sources about the same thing (same kind, within
//! [`SAME_PLACE_M`] and [`SAME_TIME_MS`]) are one incident.

use std::collections::BTreeMap;

use geo::{Distance, Haversine};
use serde::{Deserialize, Serialize};

pub use crate::feeds::cap::{
    AlertError, decode_cap, domain_for_kind, domain_for_ngsi_category, from_cap, incident_kind,
    to_entity_update,
};
use crate::feeds::{EntityKind, EntityUpdate, FieldValue};
pub use crate::model::{AlertIn, Severity};

/// The alert an NGSI-LD `Alert` entity describes; `None` for other entities and for
/// alerts without a position (nowhere to put the incident). The key is the entity id,
/// so re-polling the same alert gives the same key; `status` `resolved` (or `closed`,
/// `cancelled`) makes it a cancel.
///
/// Alerts are keyed by feed and id (`<feed>|<id>`) and their source is the feed, never
/// a name carried in the payload: a feed can only repeat, update or withdraw its own
/// alerts, and cannot claim another's key first.
pub fn from_ngsi_ld(update: &EntityUpdate, feed: &str) -> Option<AlertIn> {
    from_feed(update, feed, false)
}

/// The alert of a CAP message that came in through the CAP feed `feed` (decoded by
/// [`decode_cap`]): keyed like [`from_ngsi_ld`], with the keys of the messages it
/// updates or cancels scoped to the same feed.
pub fn from_cap_feed(update: &EntityUpdate, feed: &str) -> Option<AlertIn> {
    from_feed(update, feed, true)
}

/// The alert of a live entity that came through `feed` (CAP or NGSI-LD alike): what
/// the desk of the embedded mode and a hall's hub raise incidents from.
pub fn of_feed(
    update: &EntityUpdate,
    feed: Option<&crate::feeds::config::FeedConfig>,
) -> Option<AlertIn> {
    let name = feed.map_or("feed", |f| f.name.as_str());
    match feed {
        Some(f)
            if matches!(
                f.kind,
                crate::feeds::config::FeedKind::Cap | crate::feeds::config::FeedKind::CapIntake
            ) =>
        {
            from_cap_feed(update, name)
        }
        _ => from_ngsi_ld(update, name),
    }
}

fn from_feed(update: &EntityUpdate, feed: &str, cap: bool) -> Option<AlertIn> {
    let EntityKind::Alert {
        category,
        sub_category,
        severity,
        description,
    } = &update.kind
    else {
        return None;
    };
    let text = |name: &str| update.fields.get(name).and_then(FieldValue::as_str);
    // A CAP test, exercise, system message or draft is shown, never raised.
    if cap && text(crate::feeds::cap::STATUS_FIELD).is_some_and(|s| s != "Actual") {
        return None;
    }
    let withdrawn = text("status").is_some_and(|s| {
        matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "resolved" | "closed" | "cancelled" | "canceled" | "inactive"
        )
    });
    // A withdrawal needs no place: it is matched by key.
    let [lon, lat] = match update.position {
        Some(p) => p,
        None if withdrawn => [0.0, 0.0],
        None => return None,
    };
    let kind = incident_kind(
        sub_category
            .as_deref()
            .or(category.as_deref())
            .unwrap_or("alert"),
    );
    let domain = category
        .as_deref()
        .and_then(domain_for_ngsi_category)
        .unwrap_or_else(|| domain_for_kind(&kind));
    let cancel = withdrawn;
    let sent_ms = update
        .observed_at_ms
        .or_else(|| text("openedAt").and_then(crate::feeds::decode::parse_rfc3339_ms))
        .unwrap_or(0);
    let headline = description
        .clone()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or_else(|| kind.replace('_', " "));
    // The source is the feed it came through. A CAP message keeps the keys of the
    // messages it stands for (see `to_entity_update`), within the same feed; an
    // NGSI-LD feed's `capSource` or `capSupersedes` is just a field.
    let scoped = |key: &str| super::clean_text(&format!("{feed}|{key}"));
    let (source, supersedes) = if cap {
        let supersedes = text("capSupersedes")
            .map(|s| s.split_whitespace().map(scoped).collect())
            .unwrap_or_default();
        // One intake may serve several agencies: each is a source of its own, so
        // their reports of one thing are one incident.
        let source = match text("capSource").and_then(|s| s.strip_prefix("cap:")) {
            Some(sender) if !sender.is_empty() => {
                super::clean_text(&format!("cap:{feed}/{sender}"))
            }
            _ => format!("cap:{feed}"),
        };
        (source, supersedes)
    } else {
        (format!("ngsi-ld:{feed}"), Vec::new())
    };
    Some(AlertIn {
        source,
        key: scoped(&update.id),
        kind,
        domain,
        severity: Severity::from_word(severity.as_deref()),
        lon,
        lat,
        headline,
        sent_ms,
        cancel,
        supersedes,
        radius_m: update
            .fields
            .get("radiusM")
            .and_then(FieldValue::as_f64)
            .filter(|r| r.is_finite() && *r >= 0.0),
        area: cap.then(|| text("areaDesc").map(str::to_owned)).flatten(),
        citywide: cap
            && text(crate::feeds::cap::CITYWIDE_FIELD) == Some(crate::feeds::cap::CITYWIDE),
    })
}

/// Alerts from different sources of the same kind closer than this are one incident…
pub const SAME_PLACE_M: f64 = 150.0;
/// …when sent within this long of the incident's reports.
pub const SAME_TIME_MS: i64 = 30 * 60_000;

/// What to do with one incoming alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// A new incident, keyed by the alert's `key`.
    New,
    /// More about (or a repeat of) a known incident: update its details if kept,
    /// raise nothing new. Also the answer to a repeated cancel.
    Duplicate { incident_key: String },
    /// The source withdrew the incident. For a cancel of an incident never seen, the
    /// key is the alert's own (there is nothing to close).
    Cancel { incident_key: String },
}

/// Remembers incidents raised from alerts, to tell new from repeated. Plain data
/// (serializable); rebuild it after a restart by replaying the stored alerts through
/// [`AlertDedup::observe`] in order, or from stored incidents with
/// [`AlertDedup::remember`] (+ [`AlertDedup::remember_alias`],
/// [`AlertDedup::remember_cancel`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertDedup {
    incidents: BTreeMap<String, Seen>,
    /// Alert key → incident key, for alert keys that are not incident keys.
    aliases: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Seen {
    kind: String,
    lon: f64,
    lat: f64,
    first_ms: i64,
    last_ms: i64,
    /// Sources that reported it (empty when rebuilt with `remember`).
    sources: Vec<String>,
    /// Of them, those that withdrew their report; the incident is cancelled when the
    /// last source still reporting it withdraws.
    #[serde(default)]
    withdrawn: Vec<String>,
    cancelled: bool,
    /// Put at the city as a whole: not a place to merge others by.
    #[serde(default)]
    citywide: bool,
}

impl AlertDedup {
    pub fn new() -> AlertDedup {
        AlertDedup::default()
    }

    /// The decision for `alert`, without remembering it.
    pub fn decide(&self, alert: &AlertIn) -> Decision {
        if let Some(incident_key) = self.known(alert) {
            let seen = self.incidents.get(&incident_key);
            let cancelled = seen.is_some_and(|s| s.cancelled);
            // One of its reporters withdrawing while another still reports it
            // closes nothing. (A cancel from a source that never reported it is
            // still a cancel: the service refuses it and says so.)
            let others_report = seen.is_some_and(|s| {
                s.sources.contains(&alert.source)
                    && s.sources
                        .iter()
                        .any(|x| *x != alert.source && !s.withdrawn.contains(x))
            });
            return if alert.cancel && !cancelled && !others_report {
                Decision::Cancel { incident_key }
            } else {
                Decision::Duplicate { incident_key }
            };
        }
        if alert.cancel {
            return Decision::Cancel {
                incident_key: alert.key.clone(),
            };
        }
        match self.nearby(alert) {
            Some(incident_key) => Decision::Duplicate { incident_key },
            None => Decision::New,
        }
    }

    /// Decides and remembers: [`AlertDedup::decide`], then records the alert so its
    /// repeats, updates and cancel are recognised.
    pub fn observe(&mut self, alert: &AlertIn) -> Decision {
        let decision = self.decide(alert);
        let incident_key = match &decision {
            Decision::New => alert.key.clone(),
            Decision::Duplicate { incident_key } | Decision::Cancel { incident_key } => {
                incident_key.clone()
            }
        };
        let seen = self
            .incidents
            .entry(incident_key.clone())
            .or_insert_with(|| Seen {
                kind: alert.kind.clone(),
                lon: alert.lon,
                lat: alert.lat,
                first_ms: alert.sent_ms,
                last_ms: alert.sent_ms,
                sources: Vec::new(),
                withdrawn: Vec::new(),
                cancelled: false,
                citywide: alert.citywide,
            });
        seen.first_ms = seen.first_ms.min(alert.sent_ms);
        seen.last_ms = seen.last_ms.max(alert.sent_ms);
        if !seen.sources.contains(&alert.source) {
            seen.sources.push(alert.source.clone());
        }
        if alert.cancel {
            if !seen.withdrawn.contains(&alert.source) {
                seen.withdrawn.push(alert.source.clone());
            }
        } else {
            seen.withdrawn.retain(|s| *s != alert.source);
        }
        seen.cancelled |= matches!(decision, Decision::Cancel { .. });
        for key in std::iter::once(&alert.key).chain(&alert.supersedes) {
            self.remember_alias(key, &incident_key);
        }
        decision
    }

    /// Records an incident (for rebuilding): its key, kind, place and time.
    pub fn remember(&mut self, key: &str, kind: &str, lon: f64, lat: f64, at_ms: i64) {
        let seen = self
            .incidents
            .entry(key.to_owned())
            .or_insert_with(|| Seen {
                kind: kind.to_owned(),
                lon,
                lat,
                first_ms: at_ms,
                last_ms: at_ms,
                sources: Vec::new(),
                withdrawn: Vec::new(),
                cancelled: false,
                citywide: false,
            });
        seen.first_ms = seen.first_ms.min(at_ms);
        seen.last_ms = seen.last_ms.max(at_ms);
        self.aliases.remove(key);
    }

    /// Records that alerts keyed `alert_key` belong to incident `incident_key`.
    pub fn remember_alias(&mut self, alert_key: &str, incident_key: &str) {
        if alert_key != incident_key && !self.incidents.contains_key(alert_key) {
            self.aliases
                .insert(alert_key.to_owned(), incident_key.to_owned());
        }
    }

    /// Records a source that reported incident `incident_key` (for rebuilding).
    pub fn remember_source(&mut self, incident_key: &str, source: &str) {
        if let Some(seen) = self.incidents.get_mut(incident_key)
            && !seen.sources.iter().any(|s| s == source)
        {
            seen.sources.push(source.to_owned());
        }
    }

    /// Records that incident `incident_key` was cancelled by its source.
    pub fn remember_cancel(&mut self, incident_key: &str) {
        if let Some(seen) = self.incidents.get_mut(incident_key) {
            seen.cancelled = true;
        }
    }

    /// Forgets cancelled incidents last reported before `before_ms`, and their aliases,
    /// to bound memory on a long run.
    pub fn prune(&mut self, before_ms: i64) {
        self.incidents
            .retain(|_, s| !(s.cancelled && s.last_ms < before_ms));
        let incidents = &self.incidents;
        self.aliases.retain(|_, to| incidents.contains_key(to));
    }

    /// Whether `source` reported incident `incident_key`.
    pub fn reported_by(&self, incident_key: &str, source: &str) -> bool {
        self.incidents
            .get(incident_key)
            .is_some_and(|s| s.sources.iter().any(|w| w == source))
    }

    /// Whether `source` reported incident `incident_key` and has withdrawn its report.
    pub fn has_withdrawn(&self, incident_key: &str, source: &str) -> bool {
        self.incidents
            .get(incident_key)
            .is_some_and(|s| s.withdrawn.iter().any(|w| w == source))
    }

    /// Number of incidents remembered.
    pub fn len(&self) -> usize {
        self.incidents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty()
    }

    /// The incident an alert key belongs to, if known.
    pub fn incident_of(&self, alert_key: &str) -> Option<&str> {
        if let Some((key, _)) = self.incidents.get_key_value(alert_key) {
            return Some(key);
        }
        self.aliases.get(alert_key).map(String::as_str)
    }

    fn known(&self, alert: &AlertIn) -> Option<String> {
        std::iter::once(&alert.key)
            .chain(&alert.supersedes)
            .find_map(|k| self.incident_of(k))
            .map(str::to_owned)
    }

    /// The nearest open incident of the same kind, from another source, within
    /// [`SAME_PLACE_M`] and [`SAME_TIME_MS`].
    fn nearby(&self, alert: &AlertIn) -> Option<String> {
        if alert.citywide {
            return None;
        }
        let here = geo::Point::new(alert.lon, alert.lat);
        self.incidents
            .iter()
            .filter(|(_, s)| {
                !s.cancelled
                    && !s.citywide
                    && s.kind == alert.kind
                    && !s.sources.contains(&alert.source)
                    && alert.sent_ms >= s.first_ms.saturating_sub(SAME_TIME_MS)
                    && alert.sent_ms <= s.last_ms.saturating_add(SAME_TIME_MS)
            })
            .map(|(key, s)| (Haversine.distance(here, geo::Point::new(s.lon, s.lat)), key))
            .filter(|(d, _)| *d <= SAME_PLACE_M)
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, key)| key.clone())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_agencies_posting_to_one_intake_about_one_thing_make_one_incident() {
        let message = |sender: &str, id: &str, lat: f64| {
            format!(
                r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>{id}</identifier><sender>{sender}</sender><sent>2026-11-30T02:00:00Z</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope><info><category>Met</category><event>Waterlogging</event><urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty><area><areaDesc>Underpass</areaDesc><circle>{lat},24.94 0.05</circle></area></info></alert>"#
            )
        };
        let alert = |xml: String| {
            let u = decode_cap(xml.as_bytes(), &Default::default())
                .unwrap()
                .updates
                .remove(0);
            from_cap_feed(&u, "intake").unwrap()
        };
        let mut dedup = AlertDedup::new();
        let hotline = alert(message("hotline@12345.example", "H-1", 60.1700));
        let sensors = alert(message("iot@water.example", "W-9", 60.1702));
        assert_ne!(hotline.source, sensors.source);
        assert_eq!(dedup.observe(&hotline), Decision::New);
        assert!(matches!(
            dedup.observe(&sensors),
            Decision::Duplicate { .. }
        ));
        // One agency's two messages about two nearby things stay two.
        let hotline_again = alert(message("hotline@12345.example", "H-2", 60.1703));
        assert_eq!(dedup.observe(&hotline_again), Decision::New);
    }

    #[test]
    fn cap_pushed_to_an_intake_is_read_as_cap_as_polled_cap_is() {
        let read = |file: &str| {
            let xml = std::fs::read(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/data/cap")
                    .join(file),
            )
            .unwrap();
            decode_cap(&xml, &Default::default()).unwrap().updates
        };
        let feeds = crate::feeds::config::parse_feeds(
            "[[feed]]\nname='push'\nkind='cap-intake'\nlisten='127.0.0.1:7879'\ntoken='intake-token-0123456789'\ndomain='safety'\n",
        )
        .unwrap();
        // A test message is shown, never raised, however it came.
        for u in read("test-status.xml") {
            assert_eq!(of_feed(&u, feeds.first()), None);
        }
        // An update names the message it stands for, within the feed.
        let update = read("helsinki-flood-update.xml").remove(0);
        let alert = of_feed(&update, feeds.first()).unwrap();
        assert!(alert.source.starts_with("cap:push/"), "{}", alert.source);
        assert!(!alert.supersedes.is_empty(), "{alert:?}");
    }

    use super::*;
    use crate::feeds::cap::domain_for_cap_category;
    use crate::model::Domain;
    use oasiscap::v1dot2;

    const FLOOD: &str = include_str!("../../tests/data/cap/helsinki-flood-alert.xml");
    const FLOOD_UPDATE: &str = include_str!("../../tests/data/cap/helsinki-flood-update.xml");
    const FLOOD_CANCEL: &str = include_str!("../../tests/data/cap/helsinki-flood-cancel.xml");
    const FIRE: &str = include_str!("../../tests/data/cap/kallio-building-fire.xml");
    const MALFORMED: &str = include_str!("../../tests/data/cap/malformed.xml");

    const FLOOD_KEY: &str = "varoitukset@pelastus.hel.fi,HEL-2026-1129-FLOOD-0001";
    /// 2026-11-29T11:00:00+02:00.
    const FLOOD_SENT_MS: i64 = 1_795_942_800_000;

    fn one(xml: &str) -> AlertIn {
        let mut alerts = from_cap(xml).unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        alerts.remove(0)
    }

    fn ngsi_alert(
        id: &str,
        sub: &str,
        lon: f64,
        lat: f64,
        at_ms: i64,
        status: &str,
    ) -> EntityUpdate {
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), FieldValue::Text(status.to_owned()));
        fields.insert("radiusM".to_owned(), FieldValue::Number(20.0));
        EntityUpdate {
            id: id.to_owned(),
            entity_type: "Alert".to_owned(),
            kind: EntityKind::Alert {
                category: Some("weather".to_owned()),
                sub_category: Some(sub.to_owned()),
                severity: Some("high".to_owned()),
                description: Some(format!("{sub} ({status})")),
            },
            position: Some([lon, lat]),
            line: None,
            observed_at_ms: Some(at_ms),
            fields,
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    /// A point `metres` north of (lon, lat).
    fn north(lon: f64, lat: f64, metres: f64) -> (f64, f64) {
        (lon, lat + metres / 111_195.0)
    }

    #[test]
    fn flood_alert_parses() {
        let a = one(FLOOD);
        assert_eq!(a.source, "cap:varoitukset@pelastus.hel.fi");
        assert_eq!(a.key, FLOOD_KEY);
        assert_eq!(a.kind, "waterlogging");
        assert_eq!(a.domain, Domain::Ecology);
        assert_eq!(a.severity, Severity::Severe);
        assert_eq!((a.lat, a.lon), (60.1675, 24.9525));
        assert_eq!(a.radius_m, Some(400.0));
        // The English info block gives the headline.
        assert_eq!(
            a.headline,
            "Surface-water flooding around Market Square and the Esplanade"
        );
        assert_eq!(a.sent_ms, FLOOD_SENT_MS);
        assert!(!a.cancel);
        assert!(a.supersedes.is_empty());
    }

    #[test]
    fn update_and_cancel_map_to_the_original_key() {
        let update = one(FLOOD_UPDATE);
        assert_eq!(update.key, FLOOD_KEY);
        assert_eq!(
            update.supersedes,
            ["varoitukset@pelastus.hel.fi,HEL-2026-1129-FLOOD-0002"]
        );
        assert_eq!(update.severity, Severity::Extreme);
        assert!(!update.cancel);
        // Polygon centroid.
        assert!((update.lat - 60.169).abs() < 1e-9 && (update.lon - 24.95).abs() < 1e-9);

        // The cancel references only the update; on its own it has that key...
        let cancel = one(FLOOD_CANCEL);
        assert!(cancel.cancel);
        assert_eq!(
            cancel.key,
            "varoitukset@pelastus.hel.fi,HEL-2026-1129-FLOOD-0002"
        );
        assert!(cancel.headline.starts_with("Water has receded"));

        // ...and the de-duplicator maps it back to the original incident.
        let mut dedup = AlertDedup::new();
        assert_eq!(dedup.observe(&one(FLOOD)), Decision::New);
        let flood = Decision::Duplicate {
            incident_key: FLOOD_KEY.to_owned(),
        };
        assert_eq!(dedup.observe(&update), flood);
        assert_eq!(
            dedup.observe(&cancel),
            Decision::Cancel {
                incident_key: FLOOD_KEY.to_owned()
            }
        );
        // The same cancel again changes nothing.
        assert_eq!(dedup.observe(&cancel), flood);
        assert_eq!(dedup.len(), 1);

        // A cancel naming the original directly maps there too, without any state.
        let direct = FLOOD_CANCEL.replace(
            "HEL-2026-1129-FLOOD-0002,2026-11-29T11:40:00+02:00",
            "HEL-2026-1129-FLOOD-0001,2026-11-29T11:00:00+02:00 \
             varoitukset@pelastus.hel.fi,HEL-2026-1129-FLOOD-0002,2026-11-29T11:40:00+02:00",
        );
        let direct = one(&direct);
        assert_eq!(direct.key, FLOOD_KEY);
        assert_eq!(direct.supersedes.len(), 2);
    }

    #[test]
    fn building_fire_parses() {
        let a = one(FIRE);
        assert_eq!(a.key, "hatakeskus@112.fi,HEL-2026-1129-FIRE-0417");
        assert_eq!(a.source, "cap:hatakeskus@112.fi");
        assert_eq!(a.kind, "building_fire");
        assert_eq!(a.domain, Domain::Safety);
        assert_eq!(a.severity, Severity::Severe);
        assert!((a.lat - 60.1875).abs() < 1e-9 && (a.lon - 24.95).abs() < 1e-9);
        assert_eq!(a.radius_m, None);
        assert_eq!(
            a.sent_ms,
            FLOOD_SENT_MS + 3 * 3_600_000 + 5 * 60_000 + 30_000
        );
    }

    #[test]
    fn malformed_and_non_cap_documents_are_clear_errors() {
        let err = from_cap(MALFORMED).unwrap_err();
        assert!(matches!(err, AlertError::Malformed(_)), "{err:?}");
        assert!(err.to_string().starts_with("malformed CAP XML"), "{err}");

        let rss = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>News</title></channel></rss>"#;
        let err = from_cap(rss).unwrap_err();
        assert_eq!(
            err,
            AlertError::NotCap {
                root: "rss".into(),
                namespace: " without a namespace".into()
            }
        );
        assert!(err.to_string().contains("not a CAP alert"), "{err}");

        let atom =
            r#"<alert xmlns="http://example.org/not-cap"><identifier>x</identifier></alert>"#;
        let err = from_cap(atom).unwrap_err();
        assert!(
            err.to_string().contains("http://example.org/not-cap"),
            "{err}"
        );

        for junk in [
            "",
            "{\"type\": \"Alert\"}",
            "<!-- only a comment -->",
            "<alert",
        ] {
            assert!(
                matches!(from_cap(junk), Err(AlertError::Malformed(_))),
                "{junk:?}: {:?}",
                from_cap(junk)
            );
        }
    }

    #[test]
    fn no_location_exercises_and_acks() {
        let no_area = FIRE.replace(
            "<area>\n      <areaDesc>Helsinginkatu between Fleminginkatu and Kaarlenkatu</areaDesc>\n      <polygon>60.1870,24.9480 60.1880,24.9480 60.1880,24.9520 60.1870,24.9520 60.1870,24.9480</polygon>\n    </area>",
            "",
        );
        assert_ne!(no_area, FIRE);
        let err = from_cap(&no_area).unwrap_err();
        assert_eq!(
            err,
            AlertError::NoLocation {
                key: "hatakeskus@112.fi,HEL-2026-1129-FIRE-0417".into()
            }
        );
        assert!(err.to_string().contains("no location"), "{err}");

        let exercise = FIRE.replace("<status>Actual</status>", "<status>Exercise</status>");
        assert_eq!(from_cap(&exercise), Ok(Vec::new()));
        let ack = FIRE.replace("<msgType>Alert</msgType>", "<msgType>Ack</msgType>");
        assert_eq!(from_cap(&ack), Ok(Vec::new()));
    }

    #[test]
    fn one_source_withdrawing_leaves_an_incident_others_still_report_open() {
        let mut dedup = AlertDedup::new();
        let cap = one(FLOOD);
        assert_eq!(dedup.observe(&cap), Decision::New);
        // The sim's sensor reports the same waterlogging 50 m away.
        let (lon, lat) = north(cap.lon, cap.lat, 50.0);
        let sensor = |status: &str| {
            from_ngsi_ld(
                &ngsi_alert(
                    "urn:ngsi-ld:Alert:waterlogging-9",
                    "waterlogging",
                    lon,
                    lat,
                    FLOOD_SENT_MS + 60_000,
                    status,
                ),
                "sim-urban",
            )
            .unwrap()
        };
        let same = Decision::Duplicate {
            incident_key: FLOOD_KEY.into(),
        };
        assert_eq!(dedup.observe(&sensor("open")), same);
        // The sensor withdraws its report: the agency still reports the flood.
        assert_eq!(dedup.observe(&sensor("resolved")), same);
        // The agency updates its warning, then cancels it: now nobody reports the
        // flood, and it is cancelled.
        assert_eq!(dedup.observe(&one(FLOOD_UPDATE)), same);
        let cancel = one(FLOOD_CANCEL);
        assert_eq!(
            dedup.observe(&cancel),
            Decision::Cancel {
                incident_key: FLOOD_KEY.into()
            }
        );

        // The first reporter cancelling first leaves it open for the other.
        let mut dedup = AlertDedup::new();
        dedup.observe(&cap);
        dedup.observe(&one(FLOOD_UPDATE));
        dedup.observe(&sensor("open"));
        assert_eq!(dedup.observe(&cancel), same);
        // Then the sensor withdraws as well: nobody reports it any more.
        assert_eq!(
            dedup.observe(&sensor("resolved")),
            Decision::Cancel {
                incident_key: FLOOD_KEY.into()
            }
        );
    }

    #[test]
    fn different_sources_same_place_and_time_are_one_incident() {
        let mut dedup = AlertDedup::new();
        let cap = one(FLOOD);
        assert_eq!(dedup.observe(&cap), Decision::New);

        // The sim's sensor reports waterlogging 100 m away, 10 minutes later.
        let (lon, lat) = north(cap.lon, cap.lat, 100.0);
        let near = ngsi_alert(
            "urn:ngsi-ld:Alert:waterlogging-7",
            "waterlogging",
            lon,
            lat,
            FLOOD_SENT_MS + 10 * 60_000,
            "open",
        );
        let near = from_ngsi_ld(&near, "sim-urban").unwrap();
        let same = Decision::Duplicate {
            incident_key: FLOOD_KEY.into(),
        };
        assert_eq!(dedup.decide(&near), same);
        assert_eq!(dedup.observe(&near), same);
        // Its re-poll is found by key.
        assert_eq!(dedup.observe(&near), same);

        // Too far, too late, another kind: new incidents.
        let (lon, lat) = north(cap.lon, cap.lat, 200.0);
        let far = ngsi_alert(
            "urn:ngsi-ld:Alert:w-far",
            "flooding",
            lon,
            lat,
            FLOOD_SENT_MS,
            "open",
        );
        assert_eq!(
            dedup.decide(&from_ngsi_ld(&far, "other").unwrap()),
            Decision::New
        );
        let late = ngsi_alert(
            "urn:ngsi-ld:Alert:w-late",
            "waterlogging",
            cap.lon,
            cap.lat,
            FLOOD_SENT_MS + 10 * 60_000 + SAME_TIME_MS + 60_000,
            "open",
        );
        assert_eq!(
            dedup.decide(&from_ngsi_ld(&late, "other").unwrap()),
            Decision::New
        );
        let fire = ngsi_alert(
            "urn:ngsi-ld:Alert:f",
            "fire",
            cap.lon,
            cap.lat,
            FLOOD_SENT_MS,
            "open",
        );
        let fire = from_ngsi_ld(&fire, "other").unwrap();
        assert_eq!(fire.kind, "building_fire");
        assert_eq!(dedup.observe(&fire), Decision::New);
        // A second distinct alert from a source already on the incident is its own
        // (the source itself says they differ).
        let again = ngsi_alert(
            "urn:ngsi-ld:Alert:waterlogging-8",
            "waterlogging",
            cap.lon,
            cap.lat,
            FLOOD_SENT_MS + 12 * 60_000,
            "open",
        );
        assert_eq!(
            dedup.decide(&from_ngsi_ld(&again, "sim-urban").unwrap()),
            Decision::New
        );

        // A cancelled incident attracts no more duplicates.
        dedup.remember_cancel(FLOOD_KEY);
        let other = from_ngsi_ld(&again, "third").unwrap();
        assert_eq!(dedup.decide(&other), Decision::New);
    }

    #[test]
    fn ngsi_ld_alert_repolled_is_a_duplicate_and_resolved_cancels() {
        let at = FLOOD_SENT_MS;
        let open = ngsi_alert(
            "urn:ngsi-ld:Alert:gasLeak-3",
            "gasLeak",
            24.93,
            60.17,
            at,
            "open",
        );
        let mut dedup = AlertDedup::new();
        let alert = from_ngsi_ld(&open, "sim-utilities").unwrap();
        // Keyed by the feed it came through, and the id.
        assert_eq!(alert.key, "sim-utilities|urn:ngsi-ld:Alert:gasLeak-3");
        assert_eq!(alert.kind, "gas_leak");
        assert_eq!(alert.source, "ngsi-ld:sim-utilities");
        assert_eq!(alert.severity, Severity::Severe);
        assert_eq!(alert.radius_m, Some(20.0));
        assert_eq!(dedup.observe(&alert), Decision::New);
        let same = Decision::Duplicate {
            incident_key: alert.key.clone(),
        };
        assert_eq!(dedup.observe(&alert), same);

        let resolved = ngsi_alert(
            "urn:ngsi-ld:Alert:gasLeak-3",
            "gasLeak",
            24.93,
            60.17,
            at + 3_600_000,
            "resolved",
        );
        let resolved = from_ngsi_ld(&resolved, "sim-utilities").unwrap();
        assert!(resolved.cancel);
        let cancel = Decision::Cancel {
            incident_key: alert.key.clone(),
        };
        assert_eq!(dedup.observe(&resolved), cancel);
        // Resolved alerts keep being served for a while: repeats are duplicates.
        assert_eq!(dedup.observe(&resolved), same);

        // Other entities are not alerts.
        let mut parking = open.clone();
        parking.kind = EntityKind::Parking {
            available_spots: Some(3.0),
            total_spots: Some(10.0),
            status: None,
        };
        assert_eq!(from_ngsi_ld(&parking, "x"), None);
        let mut nowhere = open;
        nowhere.position = None;
        assert_eq!(from_ngsi_ld(&nowhere, "x"), None);
    }

    #[test]
    fn rebuilt_by_replay_and_by_remember() {
        let alerts = [one(FLOOD), one(FLOOD_UPDATE), one(FIRE), one(FLOOD_CANCEL)];
        let mut live = AlertDedup::new();
        let decisions: Vec<_> = alerts.iter().map(|a| live.observe(a)).collect();
        let mut replayed = AlertDedup::new();
        let again: Vec<_> = alerts.iter().map(|a| replayed.observe(a)).collect();
        assert_eq!(decisions, again);
        assert_eq!(live, replayed);
        // It is plain data.
        let json = serde_json::to_string(&live).unwrap();
        assert_eq!(serde_json::from_str::<AlertDedup>(&json).unwrap(), live);

        let fire = one(FIRE);
        let mut rebuilt = AlertDedup::new();
        rebuilt.remember(&fire.key, &fire.kind, fire.lon, fire.lat, fire.sent_ms);
        assert_eq!(
            rebuilt.decide(&fire),
            Decision::Duplicate {
                incident_key: fire.key.clone()
            }
        );
        // A report of the same fire by a sensor next door is the same incident.
        let sensor = ngsi_alert(
            "urn:ngsi-ld:Alert:smoke-2",
            "fire",
            fire.lon + 0.0005,
            fire.lat,
            fire.sent_ms + 60_000,
            "open",
        );
        assert_eq!(
            rebuilt.decide(&from_ngsi_ld(&sensor, "sim").unwrap()),
            Decision::Duplicate {
                incident_key: fire.key.clone()
            }
        );
        // Pruning drops cancelled incidents only.
        live.prune(i64::MAX);
        assert_eq!(live.len(), 1);
        assert_eq!(live.incident_of(&fire.key), Some(fire.key.as_str()));
        assert_eq!(live.incident_of(FLOOD_KEY), None);
    }

    #[test]
    fn kinds_severities_and_domains() {
        for (text, kind) in [
            ("carAccident", "traffic_accident"),
            ("Traffic accident", "traffic_accident"),
            ("Road crash", "traffic_accident"),
            ("Flood warning", "waterlogging"),
            ("waterlogging", "waterlogging"),
            ("城市内涝", "waterlogging"),
            ("fire", "building_fire"),
            ("Building fire", "building_fire"),
            ("Forest fire warning", "wildfire"),
            ("illegalParking", "illegal_parking"),
            ("powerOutage", "power_outage"),
            ("  ", "alert"),
        ] {
            assert_eq!(incident_kind(text), kind, "{text:?}");
        }
        assert!(Severity::Extreme > Severity::Severe);
        assert!(Severity::Severe > Severity::Moderate && Severity::Moderate > Severity::Minor);
        assert_eq!(
            serde_json::to_string(&Severity::Extreme).unwrap(),
            "\"extreme\""
        );
        assert_eq!(Severity::from_word(Some("critical")), Severity::Extreme);
        assert_eq!(Severity::from_word(Some("low")), Severity::Minor);
        assert_eq!(Severity::from_word(None), Severity::Moderate);
        assert_eq!(domain_for_ngsi_category("security"), Some(Domain::Safety));
        assert_eq!(domain_for_ngsi_category("traffic"), Some(Domain::Traffic));
        assert_eq!(
            domain_for_ngsi_category("utilities"),
            Some(Domain::Utilities)
        );
        assert_eq!(domain_for_ngsi_category("urban"), Some(Domain::Urban));
        assert_eq!(
            domain_for_cap_category(v1dot2::Category::Transport),
            Domain::Traffic
        );
        assert_eq!(
            domain_for_cap_category(v1dot2::Category::Health),
            Domain::Health
        );
        assert_eq!(
            domain_for_cap_category(v1dot2::Category::Infra),
            Domain::Utilities
        );
        assert_eq!(
            domain_for_cap_category(v1dot2::Category::Other),
            Domain::Urban
        );
    }

    #[test]
    fn a_cap_alert_through_a_feed_comes_back_as_the_same_alert() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        for file in [
            "helsinki-flood-alert.xml",
            "helsinki-flood-update.xml",
            "helsinki-flood-cancel.xml",
            "kallio-building-fire.xml",
        ] {
            let xml = std::fs::read(dir.join(file)).unwrap();
            let direct = from_cap(std::str::from_utf8(&xml).unwrap()).unwrap();
            let decoded = decode_cap(&xml, &Default::default()).unwrap();
            assert_eq!(decoded.updates.len(), direct.len(), "{file}");
            for (u, a) in decoded.updates.iter().zip(&direct) {
                let back = from_cap_feed(u, "cap-feed").unwrap_or_else(|| panic!("{file}"));
                assert_eq!(back.key, format!("cap-feed|{}", a.key), "{file}");
                // The feed it came through, and the agency that sent it.
                assert_eq!(
                    back.source,
                    format!("cap:cap-feed/{}", a.source.trim_start_matches("cap:")),
                    "{file}"
                );
                assert_eq!(back.cancel, a.cancel, "{file}");
                if !a.cancel {
                    // A withdrawal is matched by key; it carries no kind of its own.
                    assert_eq!(back.kind, a.kind, "{file}");
                }
                let scoped: Vec<String> = a
                    .supersedes
                    .iter()
                    .map(|k| format!("cap-feed|{k}"))
                    .collect();
                assert_eq!(back.supersedes, scoped, "{file}");
                assert_eq!(back.severity, a.severity, "{file}");
            }
        }
        assert!(decode_cap(b"<feed/>", &Default::default()).is_err());
    }

    /// An NGSI-LD feed cannot pass for a CAP source, nor claim another feed's key.
    #[test]
    fn alerts_belong_to_the_feed_they_came_through() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cap");
        let xml = std::fs::read(dir.join("kallio-building-fire.xml")).unwrap();
        let update = decode_cap(&xml, &Default::default())
            .unwrap()
            .updates
            .remove(0);
        let real = from_cap_feed(&update, "rescue-cap").unwrap();
        // The same entity, id and capSource included, published by an NGSI-LD feed,
        // withdrawn.
        let mut forged = update.clone();
        forged
            .fields
            .insert("status".into(), FieldValue::Text("resolved".into()));
        let fake = from_ngsi_ld(&forged, "open-data").unwrap();
        assert_ne!(fake.key, real.key);
        assert_eq!(fake.source, "ngsi-ld:open-data");
        let mut dedup = AlertDedup::new();
        assert_eq!(dedup.observe(&real), Decision::New);
        // Its withdrawal is about a key it never raised: nothing to close.
        assert_eq!(
            dedup.decide(&fake),
            Decision::Cancel {
                incident_key: fake.key.clone()
            }
        );
    }
}
