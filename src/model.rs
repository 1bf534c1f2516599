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
    /// The sub-brain's name, English and Chinese.
    pub fn label(self) -> &'static str {
        match self {
            Domain::Traffic => "Traffic 交通",
            Domain::Safety => "Public safety 公安",
            Domain::Ecology => "Ecology 生态",
            Domain::Urban => "Urban grid 城管网格",
            Domain::Health => "Health 卫健",
            Domain::Utilities => "Utilities 公用事业",
            Domain::Economy => "Economy 经济",
        }
    }

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

/// Who may see a feed, a field or a map layer (开放 / 内部 / 涉密): `open` data may
/// leave through `serve-open-data`; `internal` stays in the hall (the default);
/// `restricted` stays in the hall and is never published, whatever else says.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Classification {
    Open,
    #[default]
    Internal,
    Restricted,
}

impl Classification {
    pub const ALL: [Classification; 3] = [
        Classification::Open,
        Classification::Internal,
        Classification::Restricted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Open => "open",
            Classification::Internal => "internal",
            Classification::Restricted => "restricted",
        }
    }

    /// From its word in a feeds file.
    pub fn from_word(word: &str) -> Option<Classification> {
        Self::ALL.into_iter().find(|c| c.as_str() == word)
    }
}

/// One attribute value of an entity, flattened from the source's JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Number(f64),
    Text(String),
    Bool(bool),
    /// An array of scalars (or of arrays): `allowedVehicleType`, a Relationship to
    /// several entities. Arrays of objects become `key[i].member` fields instead.
    List(Vec<FieldValue>),
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
    pub fn as_list(&self) -> Option<&[FieldValue]> {
        match self {
            FieldValue::List(items) => Some(items),
            _ => None,
        }
    }
}

/// As an operator reads it: numbers as written, lists in brackets (`[car, bus]`).
impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Number(n) => write!(f, "{n}"),
            FieldValue::Text(t) => f.write_str(t),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The symbol of a UN/CEFACT common code (NGSI `unitCode`): `GQ` → `µg/m³`, `59` →
/// `ppm`. `C62` (the unit one: a plain number or fraction) has the empty symbol;
/// codes not listed here give `None` and are shown as the code.
pub fn unit_symbol(code: &str) -> Option<&'static str> {
    Some(match code {
        "GQ" => "µg/m³",
        "GP" => "mg/m³",
        "59" => "ppm",
        "61" => "ppb",
        "KMH" => "km/h",
        "MTS" => "m/s",
        "HM" => "mph",
        "KNT" => "kn",
        "P1" => "%",
        "C62" => "",
        "CEL" => "°C",
        "FAH" => "°F",
        "KEL" => "K",
        "MTR" => "m",
        "KTM" => "km",
        "CMT" => "cm",
        "MMT" => "mm",
        "SEC" => "s",
        "MIN" => "min",
        "HUR" => "h",
        "DAY" => "d",
        "DD" => "°",
        "A97" => "hPa",
        "PAL" => "Pa",
        "MBR" => "mbar",
        "BAR" => "bar",
        "KGM" => "kg",
        "TNE" => "t",
        "LTR" => "l",
        "MTQ" => "m³",
        "MQH" => "m³/h",
        "WTT" => "W",
        "KWT" => "kW",
        "KWH" => "kWh",
        "AMP" => "A",
        "VLT" => "V",
        "HTZ" => "Hz",
        "LUX" => "lx",
        "2N" => "dB",
        "D52" => "W/m²",
        "E34" => "GB",
        _ => return None,
    })
}

/// A value with its unit as an operator reads it: `22 µg/m³`, `75 %`; an unknown
/// code is shown as the code (`3 XYZ`), no unit as the value alone.
pub fn value_with_unit(value: &FieldValue, unit_code: Option<&str>) -> String {
    match unit_code.map(|code| unit_symbol(code).unwrap_or(code)) {
        Some(symbol) if !symbol.is_empty() => format!("{value} {symbol}"),
        _ => value.to_string(),
    }
}

/// Something the decoder changed or left out to keep an item, so it is counted and
/// shown instead of passing in silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum DecodeNote {
    /// Values beyond the size limits (per attribute, per entity) were left out: `cut`
    /// of them in the item, the first at `path`.
    ValuesCut { path: String, cut: u64 },
    /// The geometry came wrapped in an NGSI-LD `GeoProperty` (as the Smart Data Models
    /// GeoJSON examples write it) and was unwrapped.
    GeometryWrapped { path: String },
    /// An NGSI-LD feed sent NGSI-v2 normalized attributes (`type` + `value` +
    /// `metadata`, `geo:json`); they were read as NGSI-v2.
    NgsiV2InNgsiLdFeed,
}

impl DecodeNote {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeNote::ValuesCut { .. } => "values_cut",
            DecodeNote::GeometryWrapped { .. } => "geometry_wrapped",
            DecodeNote::NgsiV2InNgsiLdFeed => "ngsi_v2_in_ngsi_ld_feed",
        }
    }

    /// A line for the inspector.
    pub fn describe(&self) -> String {
        match self {
            DecodeNote::ValuesCut { path, cut } => {
                format!("{cut} values left out (size limit), the first at {path}")
            }
            DecodeNote::GeometryWrapped { path } => {
                format!("{path} was wrapped in an NGSI-LD GeoProperty (unwrapped)")
            }
            DecodeNote::NgsiV2InNgsiLdFeed => {
                "NGSI-v2 attributes in an NGSI-LD feed, read as NGSI-v2".to_owned()
            }
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
    /// Makes `self` equal to `new`, in place: a kind whose text and flags stand (a
    /// vehicle that moved) takes the new numbers and allocates and frees nothing;
    /// another is cloned.
    pub fn assign_from(&mut self, new: &Self) {
        if self.same_apart_from_numbers(new) {
            self.set_number_values(new.number_values());
        } else {
            *self = new.clone();
        }
    }

    /// The kind's numeric values in [`Self::numbers`]' order, the rest `None`: what
    /// changes as a vehicle moves or a sensor reads, apart from the kind's text.
    pub fn number_values(&self) -> [Option<f64>; 5] {
        match *self {
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                ..
            } => [average_speed_kmh, intensity, occupancy, None, None],
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            } => [aqi, pm25, pm10, no2, o3],
            EntityKind::Vehicle {
                speed_kmh,
                heading_deg,
                ..
            } => [speed_kmh, heading_deg, None, None, None],
            EntityKind::Parking {
                available_spots,
                total_spots,
                ..
            } => [available_spots, total_spots, None, None, None],
            EntityKind::Alert { .. } | EntityKind::Generic => [None; 5],
        }
    }

    /// Writes [`Self::number_values`] back (the kind's text stays).
    pub fn set_number_values(&mut self, v: [Option<f64>; 5]) {
        match self {
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                ..
            } => (*average_speed_kmh, *intensity, *occupancy) = (v[0], v[1], v[2]),
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            } => (*aqi, *pm25, *pm10, *no2, *o3) = (v[0], v[1], v[2], v[3], v[4]),
            EntityKind::Vehicle {
                speed_kmh,
                heading_deg,
                ..
            } => (*speed_kmh, *heading_deg) = (v[0], v[1]),
            EntityKind::Parking {
                available_spots,
                total_spots,
                ..
            } => (*available_spots, *total_spots) = (v[0], v[1]),
            EntityKind::Alert { .. } | EntityKind::Generic => {}
        }
    }

    /// Whether two kinds are the same kind with the same text and flags (their
    /// numbers aside).
    pub fn same_apart_from_numbers(&self, other: &Self) -> bool {
        match (self, other) {
            (
                EntityKind::TrafficFlow { congested: a, .. },
                EntityKind::TrafficFlow { congested: b, .. },
            ) => a == b,
            (EntityKind::AirQuality { .. }, EntityKind::AirQuality { .. }) => true,
            (
                EntityKind::Vehicle {
                    vehicle_type: a,
                    service_status: b,
                    ..
                },
                EntityKind::Vehicle {
                    vehicle_type: c,
                    service_status: d,
                    ..
                },
            ) => a == c && b == d,
            (
                EntityKind::Alert {
                    category: a,
                    sub_category: b,
                    severity: c,
                    description: d,
                },
                EntityKind::Alert {
                    category: e,
                    sub_category: f,
                    severity: g,
                    description: h,
                },
            ) => a == e && b == f && c == g && d == h,
            (EntityKind::Parking { status: a, .. }, EntityKind::Parking { status: b, .. }) => {
                a == b
            }
            (EntityKind::Generic, EntityKind::Generic) => true,
            _ => false,
        }
    }

    /// The typed numeric values under their Smart Data Models attribute names: the one
    /// mapping the quality rules, reconciliation and the NGSI-LD encoder share.
    pub fn numbers(&self) -> Vec<(&'static str, Option<f64>)> {
        let names: &[&'static str] = match self {
            EntityKind::TrafficFlow { .. } => &["averageVehicleSpeed", "intensity", "occupancy"],
            EntityKind::AirQuality { .. } => &["airQualityIndex", "pm25", "pm10", "no2", "o3"],
            EntityKind::Vehicle { .. } => &["speed", "heading"],
            EntityKind::Parking { .. } => &["availableSpotNumber", "totalSpotNumber"],
            EntityKind::Alert { .. } | EntityKind::Generic => &[],
        };
        names.iter().copied().zip(self.number_values()).collect()
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

/// Makes `fields` equal to `new`, in place: fields gone are dropped, and only new or
/// changed values are copied (a vehicle's moved speed allocates nothing).
pub fn copy_changed_fields(
    fields: &mut BTreeMap<String, FieldValue>,
    new: &BTreeMap<String, FieldValue>,
) {
    fields.retain(|k, _| new.contains_key(k));
    for (k, v) in new {
        match fields.get_mut(k) {
            Some(old) if old == v => {}
            Some(old) => *old = v.clone(),
            None => {
                fields.insert(k.clone(), v.clone());
            }
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
    /// Every attribute value, flattened (`pm25`, `name`, `address.streetAddress`,
    /// sub-properties as `no2.accuracy`, arrays as lists).
    pub fields: BTreeMap<String, FieldValue>,
    /// Field → UN/CEFACT unit code of its value (`no2` → `GQ`), as kept: after a
    /// conversion to this project's unit, that unit (`KMH`, `C62`).
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// What the decoder had to change or leave out to keep the item.
    #[serde(default)]
    pub notes: Vec<DecodeNote>,
}

/// Why one item of a payload was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
    /// An entry of a list (Atom/RSS of CAP messages) whose message could not be
    /// fetched or read.
    Unreadable,
    /// An entity of a type the feed did not subscribe to (an NGSI-LD notification).
    NotSubscribed,
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
            RejectReason::Unreadable => "unreadable",
            RejectReason::NotSubscribed => "not_subscribed",
        }
    }
}

/// One rejected item, with enough context for an operator to find it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reject {
    pub reason: RejectReason,
    /// The item's id when it had one.
    pub item_id: Option<String>,
    /// Where in the item the problem is (`location.value.coordinates[1]`,
    /// `averageVehicleSpeed.value`); `None` for the item as a whole.
    #[serde(default)]
    pub path: Option<String>,
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
    /// The severity in words, English and Chinese.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Minor => "minor 一般",
            Severity::Moderate => "moderate 较大",
            Severity::Severe => "severe 重大",
            Severity::Extreme => "extreme 特别重大",
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_assigned_in_place_equals_what_it_was_given() {
        let text = |s: &str| Some(s.to_string());
        let kinds = [
            EntityKind::TrafficFlow {
                average_speed_kmh: Some(31.5),
                intensity: None,
                occupancy: Some(0.4),
                congested: Some(true),
            },
            EntityKind::AirQuality {
                aqi: Some(80.0),
                pm25: Some(35.0),
                pm10: None,
                no2: Some(20.0),
                o3: Some(1.0),
            },
            EntityKind::Vehicle {
                vehicle_type: text("taxi"),
                speed_kmh: Some(42.0),
                heading_deg: Some(90.0),
                service_status: text("onRoute"),
            },
            EntityKind::Vehicle {
                vehicle_type: text("ambulance"),
                speed_kmh: None,
                heading_deg: Some(180.0),
                service_status: None,
            },
            EntityKind::Alert {
                category: text("fire"),
                sub_category: None,
                severity: text("high"),
                description: text("smoke"),
            },
            EntityKind::Parking {
                available_spots: Some(3.0),
                total_spots: Some(40.0),
                status: text("open"),
            },
            EntityKind::Generic,
        ];
        for old in &kinds {
            for new in &kinds {
                let mut k = old.clone();
                k.assign_from(new);
                assert_eq!(&k, new, "{old:?} <- {new:?}");
            }
        }
    }

    #[test]
    fn values_read_with_their_units() {
        let n = |x| FieldValue::Number(x);
        assert_eq!(value_with_unit(&n(22.0), Some("GQ")), "22 µg/m³");
        assert_eq!(value_with_unit(&n(0.3), Some("GP")), "0.3 mg/m³");
        assert_eq!(value_with_unit(&n(0.2), Some("59")), "0.2 ppm");
        assert_eq!(value_with_unit(&n(42.5), Some("KMH")), "42.5 km/h");
        assert_eq!(value_with_unit(&n(75.0), Some("P1")), "75 %");
        assert_eq!(value_with_unit(&n(2.1), Some("CEL")), "2.1 °C");
        // The unit one is a plain number; an unknown code is shown as it came.
        assert_eq!(value_with_unit(&n(0.35), Some("C62")), "0.35");
        assert_eq!(value_with_unit(&n(3.0), Some("XYZ")), "3 XYZ");
        assert_eq!(value_with_unit(&n(3.0), None), "3");
        let list = FieldValue::List(vec![
            FieldValue::Text("car".into()),
            FieldValue::List(vec![n(1.0), n(2.5)]),
            FieldValue::Bool(true),
        ]);
        assert_eq!(list.to_string(), "[car, [1, 2.5], true]");
        assert_eq!(FieldValue::List(vec![]).to_string(), "[]");
        assert_eq!(
            value_with_unit(&FieldValue::List(vec![n(1.0), n(2.0)]), Some("MTR")),
            "[1, 2] m"
        );
    }

    #[test]
    fn lists_serialize_as_json_arrays() {
        let list = FieldValue::List(vec![FieldValue::Text("a".into()), FieldValue::Number(1.5)]);
        assert_eq!(serde_json::to_string(&list).unwrap(), r#"["a",1.5]"#);
    }
}
