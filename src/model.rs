//! The vocabulary every part of Zhongshu exchanges: domains, entity updates and their
//! kinds and field values, rejects, feed ids, incoming alerts and their severities.
//! The bottom room: it imports nothing of ours, so feeds, state, governance, dispatch,
//! the hall and the app can all speak it without importing each other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A feed's index in the running configuration.
pub type FeedId = u32;

/// The sub-brains (city domains) a feed belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Traffic,
    Safety,
    Ecology,
    Urban,
    Health,
    Utilities,
    Economy,
}

impl Domain {
    pub const ALL: [Domain; 7] = [
        Domain::Traffic,
        Domain::Safety,
        Domain::Ecology,
        Domain::Urban,
        Domain::Health,
        Domain::Utilities,
        Domain::Economy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Traffic => "traffic",
            Domain::Safety => "safety",
            Domain::Ecology => "ecology",
            Domain::Urban => "urban",
            Domain::Health => "health",
            Domain::Utilities => "utilities",
            Domain::Economy => "economy",
        }
    }
}

/// One attribute value of an entity, flattened from the source's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

impl FieldValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Number(n) => Some(*n),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// What an entity is, with the values each layer draws, decoded from the FIWARE Smart
/// Data Models types (or a generic fallback).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityKind {
    /// `TrafficFlowObserved`: a road segment's flow.
    TrafficFlow {
        average_speed_kmh: Option<f64>,
        intensity: Option<f64>,
        occupancy: Option<f64>,
        congested: Option<bool>,
    },
    /// `AirQualityObserved`: a station's air quality.
    AirQuality {
        aqi: Option<f64>,
        pm25: Option<f64>,
        pm10: Option<f64>,
        no2: Option<f64>,
        o3: Option<f64>,
    },
    /// `Vehicle`: a bus, taxi, police car, fire engine, ambulance...
    Vehicle {
        vehicle_type: Option<String>,
        speed_kmh: Option<f64>,
        heading_deg: Option<f64>,
        service_status: Option<String>,
    },
    /// `Alert`: something that needs attention.
    Alert {
        category: Option<String>,
        sub_category: Option<String>,
        severity: Option<String>,
        description: Option<String>,
    },
    /// `OffStreetParking`: a car park.
    Parking {
        available_spots: Option<f64>,
        total_spots: Option<f64>,
        status: Option<String>,
    },
    /// Any other type: kept with its fields.
    Generic,
}

impl EntityKind {
    /// The typed numeric values under their Smart Data Models attribute names: the one
    /// mapping the quality rules, reconciliation and the NGSI-LD encoder share.
    pub fn numbers(&self) -> Vec<(&'static str, Option<f64>)> {
        match self {
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                ..
            } => vec![
                ("averageVehicleSpeed", *average_speed_kmh),
                ("intensity", *intensity),
                ("occupancy", *occupancy),
            ],
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            } => vec![
                ("airQualityIndex", *aqi),
                ("pm25", *pm25),
                ("pm10", *pm10),
                ("no2", *no2),
                ("o3", *o3),
            ],
            EntityKind::Vehicle {
                speed_kmh,
                heading_deg,
                ..
            } => {
                vec![("speed", *speed_kmh), ("heading", *heading_deg)]
            }
            EntityKind::Parking {
                available_spots,
                total_spots,
                ..
            } => vec![
                ("availableSpotNumber", *available_spots),
                ("totalSpotNumber", *total_spots),
            ],
            EntityKind::Alert { .. } | EntityKind::Generic => Vec::new(),
        }
    }

    /// The typed text and boolean values under their Smart Data Models names.
    pub fn others(&self) -> Vec<(&'static str, Option<FieldValue>)> {
        let text = |v: &Option<String>| v.clone().map(FieldValue::Text);
        match self {
            EntityKind::TrafficFlow { congested, .. } => {
                vec![("congested", congested.map(FieldValue::Bool))]
            }
            EntityKind::Vehicle {
                vehicle_type,
                service_status,
                ..
            } => {
                vec![
                    ("vehicleType", text(vehicle_type)),
                    ("serviceStatus", text(service_status)),
                ]
            }
            EntityKind::Alert {
                category,
                sub_category,
                severity,
                description,
            } => vec![
                ("category", text(category)),
                ("subCategory", text(sub_category)),
                ("severity", text(severity)),
                ("description", text(description)),
            ],
            EntityKind::Parking { status, .. } => vec![("status", text(status))],
            EntityKind::AirQuality { .. } | EntityKind::Generic => Vec::new(),
        }
    }
}

/// One observation of one entity, as decoded from a feed payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityUpdate {
    /// The entity's id in its source (NGSI-LD URN, GeoJSON feature id, ...).
    pub id: String,
    /// The source's type name (`AirQualityObserved`, ...), `Feature` for untyped GeoJSON.
    pub entity_type: String,
    pub kind: EntityKind,
    /// WGS84 `[lon, lat]`; lines and polygons give their first point.
    pub position: Option<[f64; 2]>,
    /// For line entities (road segments) the whole line; for areas (polygons) the
    /// closed outer ring. WGS84.
    pub line: Option<Vec<[f64; 2]>>,
    /// When the source says the observation was made (Unix ms).
    pub observed_at_ms: Option<i64>,
    /// Every scalar attribute, flattened (`pm25`, `name`, `address.streetAddress`, ...).
    pub fields: BTreeMap<String, FieldValue>,
}

/// Why one item of a payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    MissingId,
    MissingType,
    NotAnObject,
    BadCoordinates,
    BadGeometry,
    WrongValueType,
    BadTimestamp,
    TooDeep,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MissingId => "missing_id",
            RejectReason::MissingType => "missing_type",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::BadCoordinates => "bad_coordinates",
            RejectReason::BadGeometry => "bad_geometry",
            RejectReason::WrongValueType => "wrong_value_type",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::TooDeep => "too_deep",
        }
    }
}

/// One rejected item, with enough context for an operator to find it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reject {
    pub reason: RejectReason,
    /// The item's id when it had one.
    pub item_id: Option<String>,
    /// Human-readable detail (`"location.coordinates[1] = 95 is not a latitude"`).
    pub detail: String,
}

/// The decoded part of a payload and what was rejected from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub updates: Vec<EntityUpdate>,
    pub rejects: Vec<Reject>,
    /// Messages read and kept out of incidents: (why, the message's key). Why is a
    /// CAP `test`, `exercise`, `system` or `draft` status, or an `ack` or `error`
    /// message type; the key (`sender,identifier`) tells a new message from a re-poll.
    pub withheld: Vec<(String, String)>,
}

impl Decoded {
    /// Rejects counted by reason.
    pub fn reject_counts(&self) -> BTreeMap<RejectReason, u64> {
        let mut counts = BTreeMap::new();
        for r in &self.rejects {
            *counts.entry(r.reason).or_default() += 1;
        }
        counts
    }
}

/// A payload that could not be decoded at all (the feed reports it; other feeds go on).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PayloadError {
    #[error("payload of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload has the wrong shape: {0}")]
    WrongShape(String),
}

/// How severe an alert says it is; ordered, so `Extreme` sorts above `Minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Minor,
    Moderate,
    Severe,
    Extreme,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Minor,
        Severity::Moderate,
        Severity::Severe,
        Severity::Extreme,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Moderate => "moderate",
            Severity::Severe => "severe",
            Severity::Extreme => "extreme",
        }
    }

    /// From NGSI-LD / Smart Data Models (`informational`, `low`, `medium`, `high`,
    /// `critical`) or CAP (`Minor` … `Extreme`) words, any case. Unknown or missing
    /// severities count as `Moderate`: not buried, not shouted.
    pub fn from_word(word: Option<&str>) -> Severity {
        match word.map(|w| w.trim().to_ascii_lowercase()).as_deref() {
            Some("informational" | "info" | "low" | "minor") => Severity::Minor,
            Some("high" | "severe" | "major") => Severity::Severe,
            Some("critical" | "extreme") => Severity::Extreme,
            _ => Severity::Moderate,
        }
    }
}

/// One incoming alert, whatever its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertIn {
    /// `ngsi-ld:<feed>` or `cap:<sender>`.
    pub source: String,
    /// De-duplication key: the NGSI-LD entity id; for CAP `sender,identifier` of the
    /// message, or of the *original* message an Update/Cancel refers to.
    pub key: String,
    /// Incident kind, from [`incident_kind`]: `waterlogging`, `building_fire`,
    /// `traffic_accident`, or the event text in snake case (`power_outage`).
    pub kind: String,
    pub domain: Domain,
    pub severity: Severity,
    /// WGS84. For a CAP Cancel without any area: 0, 0 (a cancel is matched by key only).
    pub lon: f64,
    pub lat: f64,
    pub headline: String,
    /// When the source sent or observed it (Unix ms; 0 when it did not say).
    pub sent_ms: i64,
    /// The source withdrew it: an NGSI-LD alert `resolved`, a CAP Cancel.
    pub cancel: bool,
    /// Other keys this alert stands for: for a CAP Update/Cancel, its own
    /// `sender,identifier` and every referenced message but the original. The
    /// de-duplicator maps them all to the incident, so a later message referring only
    /// to an update still finds the original.
    #[serde(default)]
    pub supersedes: Vec<String>,
    /// Affected radius when the source gives one (NGSI-LD `radiusM`, CAP circle).
    #[serde(default)]
    pub radius_m: Option<f64>,
    /// Where the source says it applies, in words (a CAP `<areaDesc>`).
    #[serde(default)]
    pub area: Option<String>,
    /// Located at the city as a whole: the source named its area only in words or
    /// codes nobody here knows. Never merged with other alerts by place.
    #[serde(default)]
    pub citywide: bool,
}
