//! Payload decoders for live feeds: NGSI-LD entities (normalized or keyValues) and GeoJSON
//! features, both read through the FIWARE Smart Data Models.
//!
//! A payload is first split into borrowed raw items (serde_json skips over those without a
//! recursion limit), then each item is parsed and decoded on its own, so one malformed or
//! absurdly nested item becomes a [`Reject`] while the rest of the payload still lands.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    DecodeNote, Decoded, EntityKind, EntityUpdate, FieldValue, MAX_PAYLOAD_BYTES, PayloadError,
    Reject, RejectReason,
};

/// Above this many items a payload is decoded on rayon's pool; below it the hand-off costs
/// more than it saves.
const PARALLEL_MIN_ITEMS: usize = 1000;

/// Entity members that never become fields: JSON-LD plumbing, identity, and the geometry
/// (which lands in `position`/`line` instead).
const NGSI_LD_NON_FIELDS: &[&str] = &["@context", "id", "@id", "type", "@type", "location"];
const GEOJSON_NON_FIELDS: &[&str] = &[
    "@context",
    "id",
    "@id",
    "type",
    "@type",
    "entity_type",
    "location",
];

/// Values one attribute keeps at most (list items, nested members and sub-properties
/// together) and one entity over all its attributes; the rest are cut and counted in a
/// [`DecodeNote::ValuesCut`], so a hostile million-element array costs no more than this.
pub const MAX_VALUES_PER_ATTRIBUTE: usize = 1000;
pub const MAX_VALUES_PER_ENTITY: usize = 10_000;

/// How much of a bad value a reject's detail quotes.
const DETAIL_EXCERPT_BYTES: usize = 64;
/// How much of a path a reject or note keeps (attribute names come from the source).
const MAX_PATH_BYTES: usize = 256;

/// Decodes an NGSI-LD payload: a JSON array of entities (or a single entity object), each
/// in normalized, concise or keyValues form. An entity whose attributes are NGSI-v2
/// normalized (`type` + `value` + `metadata`, `geo:json`) is read as NGSI-v2, with a
/// [`DecodeNote::NgsiV2InNgsiLdFeed`], never as garbled `x.type` / `x.value` fields.
pub fn decode_ngsi_ld(body: &[u8]) -> Result<Decoded, PayloadError> {
    decode_ngsi(body, Dialect::Ld)
}

/// Decodes an NGSI-v2 payload, as a context broker serves `GET /v2/entities`: a JSON
/// array of entities (or a single entity), normalized (`{"type": "Number", "value":
/// 0.75, "metadata": {"unitCode": …}}`, `geo:json` / `geo:point` locations) or
/// keyValues.
pub fn decode_ngsi_v2(body: &[u8]) -> Result<Decoded, PayloadError> {
    decode_ngsi(body, Dialect::V2)
}

fn decode_ngsi(body: &[u8], declared: Dialect) -> Result<Decoded, PayloadError> {
    let text = payload_text(body)?;
    let decode_item = |item| decode_ngsi_entity(item, declared);
    match first_token(text) {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(not_json)?;
            Ok(decode_items(&items, decode_item))
        }
        Some(b'{') => {
            let entity: Value = serde_json::from_str(text).map_err(not_json)?;
            Ok(collect_results([decode_item(entity)]))
        }
        _ => Err(shape_error(
            text,
            match declared {
                Dialect::Ld => "an array of NGSI-LD entities or a single entity",
                Dialect::V2 => "an array of NGSI-v2 entities or a single entity",
            },
        )),
    }
}

/// Which members of a flat JSON message (an MQTT device's) hold what.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatFields {
    pub id: String,
    pub entity_type: String,
    pub lon: String,
    pub lat: String,
    pub observed_at: String,
    /// The type of a message that names none.
    pub default_type: String,
}

impl FlatFields {
    /// The usual names: `id`, `type`, `lon`, `lat`, `observedAt`.
    pub fn new(default_type: &str) -> Self {
        Self {
            id: "id".into(),
            entity_type: "type".into(),
            lon: "lon".into(),
            lat: "lat".into(),
            observed_at: "observedAt".into(),
            default_type: default_type.to_string(),
        }
    }
}

/// Decodes flat JSON messages (a device's `{"id": "aq-7", "lon": 24.94, "lat":
/// 60.17, "pm25": 12.5}`, or an array of them): the id, type, position and
/// observation time from the members `fields` names, every other member a field.
/// They are read as NGSI-LD keyValues entities, with the same checks and rejects.
/// A time may be RFC 3339 text or a Unix time in seconds or milliseconds.
pub fn decode_flat(body: &[u8], fields: &FlatFields) -> Result<Decoded, PayloadError> {
    let text = payload_text(body)?;
    let value: Value = match first_token(text) {
        Some(b'{') | Some(b'[') => serde_json::from_str(text).map_err(not_json)?,
        _ => return Err(shape_error(text, "a JSON object (or an array of objects)")),
    };
    let flat = |item: Value| -> Value {
        let Value::Object(mut o) = item else {
            return item;
        };
        let mut entity = serde_json::Map::new();
        match o.remove(&fields.id) {
            Some(Value::Number(n)) => {
                entity.insert("id".into(), Value::String(n.to_string()));
            }
            Some(v) => {
                entity.insert("id".into(), v);
            }
            None => {}
        }
        let kind = o
            .remove(&fields.entity_type)
            .unwrap_or_else(|| Value::String(fields.default_type.clone()));
        entity.insert("type".into(), kind);
        let number = |v: Option<Value>| match v {
            Some(Value::String(s)) => s.trim().parse::<f64>().ok().map(Value::from),
            other => other,
        };
        let (lon, lat) = (number(o.remove(&fields.lon)), number(o.remove(&fields.lat)));
        if let (Some(lon), Some(lat)) = (lon, lat) {
            entity.insert(
                "location".into(),
                serde_json::json!({"type": "Point", "coordinates": [lon, lat]}),
            );
        }
        match o.remove(&fields.observed_at) {
            Some(Value::Number(n)) => {
                if let Some(t) = n.as_f64() {
                    // Seconds or milliseconds since 1970, whichever is plausible.
                    let ms = if t.abs() < 1e11 { t * 1000.0 } else { t };
                    if ms.is_finite() && ms.abs() < 1e15 {
                        entity.insert(
                            "dateObserved".into(),
                            Value::String(crate::clock::rfc3339_from_unix_ms(ms as i64)),
                        );
                    }
                }
            }
            Some(v) => {
                entity.insert("dateObserved".into(), v);
            }
            None => {}
        }
        // Members the mapping did not fill keep their meaning (a GeoJSON
        // `location`, a `dateObserved`); none overrides what it filled.
        for (k, v) in o {
            entity.entry(k).or_insert(v);
        }
        Value::Object(entity)
    };
    let items: Vec<Value> = match value {
        Value::Array(items) => items.into_iter().map(flat).collect(),
        item => vec![flat(item)],
    };
    Ok(collect_results(
        items
            .into_iter()
            .map(|item| decode_ngsi_entity(item, Dialect::Ld)),
    ))
}

/// Decodes a GeoJSON payload: a FeatureCollection or a single Feature. A feature naming a
/// Smart Data Models type in `properties.type` (or `properties.entity_type`) is read like an
/// NGSI-LD entity (keyValues or normalized); others decode as `Generic` with entity type
/// `Feature`. A `geometry` wrapped in an NGSI-LD GeoProperty (as the Smart Data Models
/// GeoJSON examples write it) is unwrapped, with a [`DecodeNote::GeometryWrapped`].
pub fn decode_geojson(body: &[u8]) -> Result<Decoded, PayloadError> {
    let text = payload_text(body)?;
    if first_token(text) != Some(b'{') {
        return Err(shape_error(text, "a GeoJSON FeatureCollection or Feature"));
    }
    let top: GeoJsonTop = serde_json::from_str(text).map_err(not_json)?;
    match top.kind.as_ref().and_then(Value::as_str) {
        Some("FeatureCollection") => {
            let Some(features) = top.features else {
                return Err(PayloadError::WrongShape(
                    "FeatureCollection has no `features` array".to_owned(),
                ));
            };
            let items: Vec<&RawValue> = serde_json::from_str(features.get()).map_err(|_| {
                PayloadError::WrongShape("FeatureCollection `features` is not an array".to_owned())
            })?;
            Ok(decode_items(&items, decode_geojson_feature))
        }
        Some("Feature") => {
            let feature: Value = serde_json::from_str(text).map_err(not_json)?;
            Ok(collect_results([decode_geojson_feature(feature)]))
        }
        Some(other) => Err(PayloadError::WrongShape(format!(
            "GeoJSON type {:?} is not a Feature or FeatureCollection",
            excerpt(other)
        ))),
        None => Err(PayloadError::WrongShape(
            "GeoJSON object has no string `type`".to_owned(),
        )),
    }
}

/// Undoes a feed's GCJ-02 or BD-09 offset (its `coords`): every position and line of
/// `decoded` in WGS84, at the boundary, before the quality rules and the live state see
/// them.
pub fn positions_to_wgs84(decoded: &mut Decoded, coords: crate::map::crs::Coords) {
    if coords == crate::map::crs::Coords::Wgs84 {
        return;
    }
    for u in &mut decoded.updates {
        if let Some([lon, lat]) = u.position {
            u.position = Some(coords.to_wgs84(lon, lat));
        }
        for p in u.line.iter_mut().flatten() {
            *p = coords.to_wgs84(p[0], p[1]);
        }
    }
}

/// Parses an RFC 3339 date-time to Unix milliseconds: `2024-05-01T10:00:00Z`,
/// `2024-05-01T12:00:00.250+02:00`. Lenient where real feeds are: `t`/space separators,
/// lowercase `z`, `±hhmm` offsets, and no offset at all (read as UTC, as Smart Data Models
/// examples often omit it). Fractions beyond milliseconds are truncated. The shape is
/// read here because jiff's own parsers draw the line elsewhere (they take `10:00Z`
/// without seconds and read second 60 as 59); dates and offsets are jiff's.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let year = ascii_digits(bytes, 0, 4)?;
    expect_byte(bytes, 4, b"-")?;
    let month = ascii_digits(bytes, 5, 2)?;
    expect_byte(bytes, 7, b"-")?;
    let day = ascii_digits(bytes, 8, 2)?;
    expect_byte(bytes, 10, b"Tt ")?;
    let hour = ascii_digits(bytes, 11, 2)?;
    expect_byte(bytes, 13, b":")?;
    let minute = ascii_digits(bytes, 14, 2)?;
    expect_byte(bytes, 16, b":")?;
    let second = ascii_digits(bytes, 17, 2)?;

    let mut at = 19;
    let mut millis = 0;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while let Some(digit) = bytes.get(at).filter(|b| b.is_ascii_digit()) {
            if at - start < 3 {
                millis = millis * 10 + i64::from(digit - b'0');
            }
            at += 1;
        }
        let fraction_digits = at - start;
        if fraction_digits == 0 {
            return None;
        }
        for _ in fraction_digits..3 {
            millis *= 10;
        }
    }

    let offset_secs = match bytes.get(at) {
        None => 0,
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let offset_hour = ascii_digits(bytes, at + 1, 2)?;
            at += 3;
            if bytes.get(at) == Some(&b':') {
                at += 1;
            }
            let offset_minute = ascii_digits(bytes, at, 2)?;
            at += 2;
            if offset_hour > 23 || offset_minute > 59 {
                return None;
            }
            let magnitude = offset_hour * 3600 + offset_minute * 60;
            if sign == b'-' { -magnitude } else { magnitude }
        }
        Some(_) => return None,
    };
    if at != bytes.len() {
        return None;
    }

    // The calendar is jiff's (it refuses 2023-02-29 and hour 24). Second 60 is
    // RFC 3339's leap second; it rolls into the next minute.
    let leap_second = second == 60;
    let datetime = jiff::civil::DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        if leap_second {
            59
        } else {
            i8::try_from(second).ok()?
        },
        0,
    )
    .ok()?;
    let offset = jiff::tz::Offset::from_seconds(i32::try_from(offset_secs).ok()?).ok()?;
    // jiff's instants end at 9999-12-30T22:00Z; the last hours of the year 9999 (a
    // common "never expires", 9999-12-31T23:59:59Z) are two days earlier's instant
    // plus two days.
    let at_ms = match offset.to_timestamp(datetime) {
        Ok(at) => at.as_millisecond(),
        Err(_) => {
            let earlier = datetime.checked_sub(jiff::Span::new().days(2)).ok()?;
            offset.to_timestamp(earlier).ok()?.as_millisecond() + 2 * 86_400_000
        }
    };
    Some(at_ms + i64::from(leap_second) * 1000 + millis)
}

/// The top of a GeoJSON document; `features` stays raw so each feature is parsed alone.
#[derive(Deserialize)]
struct GeoJsonTop<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(borrow)]
    features: Option<&'a RawValue>,
}

/// The NGSI an entity's attributes are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// NGSI-LD: `{"type": "Property", "value": …, "unitCode": …, "observedAt": …}` with
    /// sub-properties beside `value`; concise and keyValues alike.
    Ld,
    /// NGSI-v2: `{"type": "Number", "value": …, "metadata": {"unitCode": …}}`.
    V2,
}

/// How an item's attributes are read: their dialect, and where they sit in the item
/// (`properties.` in a GeoJSON feature), for the paths of rejects.
#[derive(Clone, Copy, Debug)]
struct Reading {
    dialect: Dialect,
    prefix: &'static str,
}

/// Members of an NGSI-LD attribute that are its value or metadata; any other member
/// is a sub-property (or sub-relationship) and becomes the field `attribute.member`.
const LD_ATTRIBUTE_MEMBERS: &[&str] = &[
    "type",
    "@type",
    "@context",
    "value",
    "object",
    "languageMap",
    "json",
    "vocab",
    "valueList",
    "objectList",
    "unitCode",
    "observedAt",
    "datasetId",
    "createdAt",
    "modifiedAt",
    "deletedAt",
    "instanceId",
    "lang",
    "objectType",
    "previousValue",
    "previousObject",
    "previousLanguageMap",
    "previousJson",
    "previousVocab",
    "previousValueList",
    "previousObjectList",
    "entity",
    "entityList",
];

/// NGSI-v2 metadata that are the unit or the time of a value, not fields of their own.
const V2_TIME_METADATA: &[&str] = &["TimeInstant", "timestamp"];

/// NGSI-v2 attribute types; with a `value` member they mark an attribute as NGSI-v2.
const V2_ATTRIBUTE_TYPES: &[&str] = &[
    "Number",
    "Integer",
    "Float",
    "Text",
    "Boolean",
    "DateTime",
    "Date",
    "Time",
    "StructuredValue",
    "URL",
    "array",
    "Array",
    "object",
    "None",
];

/// Why one item failed, before the item's id is attached.
struct ItemError {
    reason: RejectReason,
    path: Option<String>,
    detail: String,
}

impl ItemError {
    fn new(reason: RejectReason, detail: String) -> Self {
        Self {
            reason,
            path: None,
            detail,
        }
    }

    /// The same error, located at `path` in the item.
    fn at(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    fn into_reject(self, item_id: Option<String>) -> Reject {
        Reject {
            reason: self.reason,
            item_id,
            // Attribute names come from the source: a path never quotes a megabyte.
            path: self.path.map(|p| excerpt_to(&p, MAX_PATH_BYTES).to_owned()),
            detail: self.detail,
        }
    }
}

/// Where an entity is: a point, plus the whole line for line geometries.
#[derive(Debug, Default, PartialEq)]
struct Shape {
    position: Option<[f64; 2]>,
    line: Option<Vec<[f64; 2]>>,
}

/// The decoded parts of an entity besides its identity.
struct EntityParts {
    kind: EntityKind,
    shape: Shape,
    observed_at_ms: Option<i64>,
    fields: BTreeMap<String, FieldValue>,
    units: BTreeMap<String, String>,
    notes: Vec<DecodeNote>,
}

fn payload_text(body: &[u8]) -> Result<&str, PayloadError> {
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            size: body.len(),
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    let text = std::str::from_utf8(body)
        .map_err(|error| PayloadError::NotJson(format!("not UTF-8: {error}")))?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

fn first_token(text: &str) -> Option<u8> {
    text.bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn not_json(error: serde_json::Error) -> PayloadError {
    PayloadError::NotJson(error.to_string())
}

/// A payload whose top level is not what the format expects: wrong shape if it is JSON at
/// all (a full parse, so nesting past the recursion limit counts as not JSON).
fn shape_error(text: &str, expected: &str) -> PayloadError {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => {
            PayloadError::WrongShape(format!("expected {expected}, found {}", json_kind(&value)))
        }
        Err(error) => not_json(error),
    }
}

fn decode_items(
    items: &[&RawValue],
    decode_item: impl Fn(Value) -> Result<EntityUpdate, Reject> + Sync,
) -> Decoded {
    let decode_raw = |raw: &&RawValue| match serde_json::from_str::<Value>(raw.get()) {
        Ok(item) => decode_item(item),
        Err(error) => Err(unparsable_item(&error)),
    };
    if items.len() > PARALLEL_MIN_ITEMS {
        collect_results(items.par_iter().map(decode_raw).collect::<Vec<_>>())
    } else {
        collect_results(items.iter().map(decode_raw))
    }
}

fn collect_results(results: impl IntoIterator<Item = Result<EntityUpdate, Reject>>) -> Decoded {
    let results = results.into_iter();
    let mut decoded = Decoded {
        updates: Vec::with_capacity(results.size_hint().0),
        rejects: Vec::new(),
        withheld: Default::default(),
    };
    for result in results {
        match result {
            Ok(update) => decoded.updates.push(update),
            Err(reject) => decoded.rejects.push(reject),
        }
    }
    decoded
}

/// An item that was valid JSON to skip over but not to parse: too deep, or a number
/// outside f64's range.
fn unparsable_item(error: &serde_json::Error) -> Reject {
    let message = error.to_string();
    let reason = if message.starts_with("recursion limit exceeded") {
        RejectReason::TooDeep
    } else {
        RejectReason::WrongValueType
    };
    ItemError::new(reason, format!("item could not be parsed: {message}")).into_reject(None)
}

fn into_object(item: Value) -> Result<Map<String, Value>, Reject> {
    match item {
        Value::Object(object) => Ok(object),
        other => Err(ItemError::new(
            RejectReason::NotAnObject,
            format!("item is {}, not an object", json_kind(&other)),
        )
        .into_reject(None)),
    }
}

fn decode_ngsi_entity(item: Value, declared: Dialect) -> Result<EntityUpdate, Reject> {
    let mut entity = into_object(item)?;
    let id = match entity.remove("id").or_else(|| entity.remove("@id")) {
        Some(Value::String(id)) if !id.is_empty() => id,
        other => {
            let detail = match other {
                None => "entity has no `id`".to_owned(),
                Some(value) => format!(
                    "entity `id` is {}, not a non-empty string",
                    json_kind(&value)
                ),
            };
            let error = ItemError::new(RejectReason::MissingId, detail).at("id");
            return Err(error.into_reject(None));
        }
    };
    let entity_type = entity
        .remove("type")
        .or_else(|| entity.remove("@type"))
        .and_then(entity_type_name);
    let Some(entity_type) = entity_type else {
        let error = ItemError::new(
            RejectReason::MissingType,
            "entity has no string `type`".to_owned(),
        )
        .at("type");
        return Err(error.into_reject(Some(id)));
    };
    let mut notes = Vec::new();
    let dialect = match declared {
        Dialect::Ld if looks_ngsi_v2(&entity) => {
            notes.push(DecodeNote::NgsiV2InNgsiLdFeed);
            Dialect::V2
        }
        declared => declared,
    };
    let reading = Reading {
        dialect,
        prefix: "",
    };
    let shape = location_shape(entity.get("location"), reading);
    decode_entity(
        id,
        entity_type,
        entity,
        shape,
        NGSI_LD_NON_FIELDS,
        reading,
        notes,
    )
}

/// Whether an entity's attributes are NGSI-v2 normalized: an attribute with `value`
/// and `metadata`, a `geo:` type, an NGSI-v2 type (`Number`, `Text`, `DateTime`,
/// `StructuredValue`, …) with a `value`, or a Relationship with a `value` and no
/// `object`. None of these is valid NGSI-LD.
fn looks_ngsi_v2(entity: &Map<String, Value>) -> bool {
    entity.values().any(|attribute| {
        let Some(attribute) = attribute.as_object() else {
            return false;
        };
        let kind = attribute.get("type").and_then(Value::as_str);
        let has_value = attribute.contains_key("value");
        (has_value && attribute.get("metadata").is_some_and(Value::is_object))
            || kind.is_some_and(|k| k.starts_with("geo:"))
            || (has_value && kind.is_some_and(|k| V2_ATTRIBUTE_TYPES.contains(&k)))
            || (kind == Some("Relationship") && has_value && !attribute.contains_key("object"))
    })
}

fn decode_geojson_feature(item: Value) -> Result<EntityUpdate, Reject> {
    let mut feature = into_object(item)?;
    let properties = feature.remove("properties");
    let id = geojson_id(feature.get("id"))
        .or_else(|| geojson_id(properties.as_ref().and_then(|p| p.get("id"))));
    let Some(id) = id else {
        let error = ItemError::new(
            RejectReason::MissingId,
            "feature has no `id` (nor `properties.id`)".to_owned(),
        )
        .at("id");
        return Err(error.into_reject(None));
    };
    let properties = match properties {
        Some(Value::Object(properties)) => properties,
        None | Some(Value::Null) => Map::new(),
        Some(other) => {
            let detail = format!(
                "feature `properties` is {}, not an object",
                json_kind(&other)
            );
            let error = ItemError::new(RejectReason::WrongValueType, detail).at("properties");
            return Err(error.into_reject(Some(id)));
        }
    };
    let entity_type = ["type", "entity_type"]
        .iter()
        .find_map(|key| properties.get(*key)?.as_str())
        .map(short_type_name)
        .filter(|name| !name.is_empty())
        .unwrap_or("Feature")
        .to_owned();
    let mut notes = Vec::new();
    let shape = match feature.get("geometry") {
        None | Some(Value::Null) => Ok(Shape::default()),
        // The Smart Data Models GeoJSON examples wrap the geometry as NGSI-LD does its
        // `location`. Accepted for every type, and said: a GeoJSON reader elsewhere
        // would not understand the file.
        Some(Value::Object(wrapper))
            if wrapper.get("type").and_then(Value::as_str) == Some("GeoProperty") =>
        {
            notes.push(DecodeNote::GeometryWrapped {
                path: "geometry".to_owned(),
            });
            match wrapper.get("value") {
                None | Some(Value::Null) => Ok(Shape::default()),
                Some(geometry) => decode_geometry(geometry, "geometry.value"),
            }
        }
        Some(geometry) => decode_geometry(geometry, "geometry"),
    };
    let reading = Reading {
        dialect: Dialect::Ld,
        prefix: "properties.",
    };
    decode_entity(
        id,
        entity_type,
        properties,
        shape,
        GEOJSON_NON_FIELDS,
        reading,
        notes,
    )
}

/// GeoJSON (RFC 7946) allows string or number ids.
fn geojson_id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// The entity's type as a Smart Data Models name: the last segment of a URI
/// (`https://smartdatamodels.org/dataModel.Transportation/Vehicle` → `Vehicle`), or the
/// first of several types.
fn entity_type_name(value: Value) -> Option<String> {
    let full = match value {
        Value::String(name) => name,
        Value::Array(names) => names.into_iter().find_map(|name| match name {
            Value::String(name) => Some(name),
            _ => None,
        })?,
        _ => return None,
    };
    let short = short_type_name(&full);
    if short.is_empty() {
        None
    } else if short.len() == full.len() {
        Some(full)
    } else {
        Some(short.to_owned())
    }
}

fn short_type_name(full: &str) -> &str {
    let trimmed = full.trim_end_matches(['/', '#']);
    trimmed.rsplit(['/', '#', ':']).next().unwrap_or(trimmed)
}

#[allow(clippy::too_many_arguments)]
fn decode_entity(
    id: String,
    entity_type: String,
    attributes: Map<String, Value>,
    shape: Result<Shape, ItemError>,
    non_fields: &[&str],
    reading: Reading,
    notes: Vec<DecodeNote>,
) -> Result<EntityUpdate, Reject> {
    match entity_parts(&entity_type, attributes, shape, non_fields, reading) {
        Ok(mut parts) => {
            let mut all_notes = notes;
            all_notes.append(&mut parts.notes);
            Ok(EntityUpdate {
                id,
                entity_type,
                kind: parts.kind,
                position: parts.shape.position,
                line: parts.shape.line,
                observed_at_ms: parts.observed_at_ms,
                fields: parts.fields,
                units: parts.units,
                notes: all_notes,
            })
        }
        Err(error) => Err(error.into_reject(Some(id))),
    }
}

fn entity_parts(
    entity_type: &str,
    attributes: Map<String, Value>,
    shape: Result<Shape, ItemError>,
    non_fields: &[&str],
    reading: Reading,
) -> Result<EntityParts, ItemError> {
    let dialect = reading.dialect;
    let kind = interpret(entity_type, &attributes, reading)?;
    let shape = shape?;
    let date_observed = time_attribute(&attributes, "dateObserved", reading)?;
    // NGSI-v2 IoT agents date a whole entity with a `TimeInstant` attribute.
    let time_instant = match dialect {
        Dialect::V2 => time_attribute(&attributes, "TimeInstant", reading)?,
        Dialect::Ld => None,
    };

    let mut flat = Flattener::default();
    let mut latest_observed_at = None;
    for (name, attribute) in attributes {
        let path = format!("{}{name}", reading.prefix);
        if let Some((observed_at, path)) = observed_at(&attribute, path, dialect) {
            let observed_at_ms = timestamp_ms(observed_at, &path)?;
            latest_observed_at = latest_observed_at.max(Some(observed_at_ms));
        }
        if !non_fields.contains(&name.as_str()) {
            flat.attribute(name, attribute, dialect);
        }
    }
    let Flattener {
        mut fields,
        mut units,
        cut,
        first_cut,
        ..
    } = flat;
    // The typed values are in this project's units (`unitCode` applied): the fields
    // under the same names say the same, and so do their units.
    for (name, value) in kind.numbers() {
        let Some(v) = value else { continue };
        if let Some(FieldValue::Number(field)) = fields.get_mut(name) {
            *field = v;
        }
        if let Some(code) = units.get_mut(name)
            && let Some(own) = converted_unit(name, code)
        {
            own.clone_into(code);
        }
    }
    let mut notes = Vec::new();
    if let Some(path) = first_cut {
        notes.push(DecodeNote::ValuesCut { path, cut });
    }
    Ok(EntityParts {
        kind,
        shape,
        observed_at_ms: date_observed.or(latest_observed_at).or(time_instant),
        fields,
        units,
        notes,
    })
}

/// A time-valued attribute (`dateObserved`) as Unix ms; absent or null is `None`.
fn time_attribute(
    attributes: &Map<String, Value>,
    name: &str,
    reading: Reading,
) -> Result<Option<i64>, ItemError> {
    let Some(attribute) = attributes.get(name) else {
        return Ok(None);
    };
    match attribute_value(attribute, reading.dialect) {
        Some(value) => Ok(Some(timestamp_ms(
            value,
            &value_path(name, attribute, reading),
        )?)),
        None => Ok(None),
    }
}

/// Reads the typed values of the Smart Data Models this project draws.
fn interpret(
    entity_type: &str,
    attributes: &Map<String, Value>,
    reading: Reading,
) -> Result<EntityKind, ItemError> {
    let number = |name| number_attribute(attributes, name, reading);
    let text = |name| text_attribute(attributes, name, reading);
    let kind = match entity_type {
        "TrafficFlowObserved" => EntityKind::TrafficFlow {
            average_speed_kmh: number("averageVehicleSpeed")?,
            intensity: number("intensity")?,
            occupancy: number("occupancy")?,
            congested: typed_attribute(attributes, "congested", "a boolean", reading, |v| {
                v.as_bool()
            })?,
        },
        // Older Smart Data Models versions (and many deployments) name the
        // pollutants in upper case: `NO2`, `PM10`, `PM25`, `O3`.
        "AirQualityObserved" => {
            let either = |lower: &'static str, upper: &'static str| {
                if attributes.contains_key(lower) {
                    number(lower)
                } else {
                    number(upper)
                }
            };
            EntityKind::AirQuality {
                aqi: number("airQualityIndex")?,
                pm25: either("pm25", "PM25")?,
                pm10: either("pm10", "PM10")?,
                no2: either("no2", "NO2")?,
                o3: either("o3", "O3")?,
            }
        }
        "Vehicle" => EntityKind::Vehicle {
            vehicle_type: text("vehicleType")?,
            speed_kmh: number("speed")?,
            heading_deg: number("heading")?,
            service_status: text("serviceStatus")?,
        },
        "Alert" => EntityKind::Alert {
            category: text("category")?,
            sub_category: text("subCategory")?,
            severity: text("severity")?,
            description: text("description")?,
        },
        "OffStreetParking" => EntityKind::Parking {
            available_spots: number("availableSpotNumber")?,
            total_spots: number("totalSpotNumber")?,
            // Smart Data Models make parking `status` a list (`["open"]`); some feeds send
            // a plain string.
            status: typed_attribute(
                attributes,
                "status",
                "a string or list of strings",
                reading,
                |v| match v {
                    Value::String(status) => Some(status.clone()),
                    Value::Array(items) => items
                        .iter()
                        .map(Value::as_str)
                        .collect::<Option<Vec<_>>>()
                        .map(|parts| parts.join(",")),
                    _ => None,
                },
            )?,
        },
        _ => EntityKind::Generic,
    };
    Ok(kind)
}

/// A number in this project's unit for the field, converted from the attribute's
/// `unitCode` where it gives a known one.
fn number_attribute(
    attributes: &Map<String, Value>,
    name: &str,
    reading: Reading,
) -> Result<Option<f64>, ItemError> {
    let value = typed_attribute(attributes, name, "a number", reading, Value::as_f64)?;
    let code = attributes
        .get(name)
        .and_then(|a| unit_code(a, reading.dialect));
    Ok(value.map(|v| code.map_or(v, |code| in_own_unit(name, code, v))))
}

fn text_attribute(
    attributes: &Map<String, Value>,
    name: &str,
    reading: Reading,
) -> Result<Option<String>, ItemError> {
    typed_attribute(attributes, name, "a string", reading, |v| {
        v.as_str().map(str::to_owned)
    })
}

/// An attribute's value read as `T`; absent or null is `None`, any other JSON type is a
/// `WrongValueType` naming the attribute, at the path of its value.
fn typed_attribute<T>(
    attributes: &Map<String, Value>,
    name: &str,
    expected: &str,
    reading: Reading,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, ItemError> {
    let Some(attribute) = attributes.get(name) else {
        return Ok(None);
    };
    let Some(value) = attribute_value(attribute, reading.dialect) else {
        return Ok(None);
    };
    match read(value) {
        Some(typed) => Ok(Some(typed)),
        None => Err(ItemError::new(
            RejectReason::WrongValueType,
            format!(
                "attribute `{name}` should be {expected}, found {}",
                json_kind(value)
            ),
        )
        .at(value_path(name, attribute, reading))),
    }
}

/// Where an attribute's value sits in the item: `speed` (keyValues), `speed.value`
/// (normalized), `speed[1].value` (the instance read of a multi-attribute),
/// `dateObserved.value.@value` (a JSON-LD typed literal).
fn value_path(name: &str, attribute: &Value, reading: Reading) -> String {
    let mut path = format!("{}{name}", reading.prefix);
    let mut at = attribute;
    if reading.dialect == Dialect::Ld
        && let Value::Array(instances) = attribute
        && let Some(index) = default_instance(instances)
    {
        path.push_str(&format!("[{index}]"));
        at = &instances[index];
    }
    if let Value::Object(object) = at
        && let Some(member) = value_member(object, reading.dialect)
    {
        path.push('.');
        path.push_str(member);
        at = object.get(member).unwrap_or(&Value::Null);
    }
    if at.get("@value").is_some() {
        path.push_str(".@value");
    }
    path
}

/// The member holding a normalized attribute's value; `None` when the object is a
/// keyValues value itself (a GeoJSON geometry, an address...).
fn value_member(attribute: &Map<String, Value>, dialect: Dialect) -> Option<&'static str> {
    if dialect == Dialect::V2 {
        return attribute.contains_key("value").then_some("value");
    }
    match attribute.get("type").and_then(Value::as_str) {
        Some("Property" | "GeoProperty") => Some("value"),
        Some("Relationship") => Some("object"),
        Some("LanguageProperty") => Some("languageMap"),
        Some("JsonProperty") => Some("json"),
        Some("VocabProperty") => Some("vocab"),
        Some("ListProperty") => Some("valueList"),
        Some("ListRelationship") => Some("objectList"),
        Some(_) => None,
        // Concise NGSI-LD drops `type` and keeps `value`.
        None => attribute.contains_key("value").then_some("value"),
    }
}

/// Whether `instances` is an NGSI-LD multi-attribute: an array of normalized attribute
/// instances.
fn are_instances(instances: &[Value]) -> bool {
    instances.first().is_some_and(|first| {
        first
            .as_object()
            .and_then(|o| value_member(o, Dialect::Ld))
            .is_some()
    })
}

/// For a multi-attribute (several normalized instances told apart by `datasetId`), the
/// instance to read: the default one without a `datasetId`; without one, the newest
/// observation, then the smallest `datasetId` — never whichever the broker lists first.
fn default_instance(instances: &[Value]) -> Option<usize> {
    if !are_instances(instances) {
        return None;
    }
    if let Some(default) = instances
        .iter()
        .position(|instance| instance.get("datasetId").is_none())
    {
        return Some(default);
    }
    let key = |instance: &Value| {
        let observed = instance
            .get("observedAt")
            .and_then(|t| timestamp_ms(t, "").ok());
        let dataset = instance
            .get("datasetId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (observed, std::cmp::Reverse(dataset))
    };
    (0..instances.len()).max_by_key(|&i| key(&instances[i]))
}

/// Several instances, none of which names a dataset: no multi-attribute (which has one
/// default instance at most) but a list, as some Smart Data Models examples write a
/// Relationship to several entities.
fn is_list_of_instances(instances: &[Value]) -> bool {
    are_instances(instances)
        && instances
            .iter()
            .filter(|instance| instance.get("datasetId").is_none())
            .count()
            > 1
}

/// The unit code (UN/CEFACT) of an attribute: NGSI-LD `unitCode`, NGSI-v2
/// `metadata.unitCode` (of the instance that is read).
fn unit_code(attribute: &Value, dialect: Dialect) -> Option<&str> {
    match attribute {
        Value::Object(object) => attribute_unit(object, dialect),
        Value::Array(instances) if dialect == Dialect::Ld => {
            unit_code(&instances[default_instance(instances)?], dialect)
        }
        _ => None,
    }
}

fn attribute_unit(attribute: &Map<String, Value>, dialect: Dialect) -> Option<&str> {
    match dialect {
        Dialect::Ld => attribute.get("unitCode").and_then(Value::as_str),
        Dialect::V2 => v2_metadatum(attribute, "unitCode")
            .map(|(value, _)| value)
            .and_then(Value::as_str),
    }
}

/// An NGSI-v2 metadatum's value (`{"type": "Text", "value": "GQ"}`, or the value
/// alone), with the path below the attribute.
fn v2_metadatum<'a>(attribute: &'a Map<String, Value>, name: &str) -> Option<(&'a Value, String)> {
    let datum = attribute.get("metadata")?.get(name)?;
    let (value, path) = match datum.get("value") {
        Some(value) => (value, format!("metadata.{name}.value")),
        None => (datum, format!("metadata.{name}")),
    };
    (!value.is_null()).then_some((value, path))
}

/// `value` in `code` (UN/CEFACT) converted to the unit this project keeps a field in
/// (km/h for speeds, a 0..1 fraction for occupancy); unchanged for a unit it does not
/// convert.
fn in_own_unit(field: &str, code: &str, value: f64) -> f64 {
    match (field, code) {
        ("averageVehicleSpeed" | "speed", "MTS") => value * 3.6,
        ("averageVehicleSpeed" | "speed", "HM") => value * 1.609_344,
        ("averageVehicleSpeed" | "speed", "KNT") => value * 1.852,
        ("occupancy", "P1") => value / 100.0,
        _ => value,
    }
}

/// The unit a value of `field` in `code` is in after [`in_own_unit`]: `KMH` for
/// converted speeds, `C62` (a plain fraction) for converted occupancy; `None` when it
/// is not converted.
fn converted_unit(field: &str, code: &str) -> Option<&'static str> {
    match (field, code) {
        ("averageVehicleSpeed" | "speed", "MTS" | "HM" | "KNT") => Some("KMH"),
        ("occupancy", "P1") => Some("C62"),
        _ => None,
    }
}

/// What an attribute holds in either representation; `None` for null.
fn attribute_value(attribute: &Value, dialect: Dialect) -> Option<&Value> {
    let value = match attribute {
        Value::Object(object) => match value_member(object, dialect) {
            Some(member) => object.get(member)?,
            None => attribute,
        },
        Value::Array(instances) if dialect == Dialect::Ld => match default_instance(instances) {
            Some(index) => return attribute_value(&instances[index], dialect),
            None => attribute,
        },
        _ => attribute,
    };
    // A JSON-LD typed literal: `{"@type": "DateTime", "@value": "2024-..."}`.
    let value = value.get("@value").unwrap_or(value);
    (!value.is_null()).then_some(value)
}

/// When an attribute's value was observed, with its path: NGSI-LD `observedAt`,
/// NGSI-v2 `metadata.TimeInstant` (or `metadata.timestamp`).
fn observed_at(attribute: &Value, path: String, dialect: Dialect) -> Option<(&Value, String)> {
    match attribute {
        Value::Object(object) if value_member(object, dialect).is_some() => match dialect {
            Dialect::Ld => object
                .get("observedAt")
                .filter(|time| !time.is_null())
                .map(|time| (time, format!("{path}.observedAt"))),
            Dialect::V2 => V2_TIME_METADATA.iter().find_map(|name| {
                v2_metadatum(object, name).map(|(time, below)| (time, format!("{path}.{below}")))
            }),
        },
        Value::Array(instances) if dialect == Dialect::Ld => {
            let index = default_instance(instances)?;
            observed_at(&instances[index], format!("{path}[{index}]"), dialect)
        }
        _ => None,
    }
}

/// Turns attributes into fields within the size limits: scalars as they are, nested
/// objects as `key.member`, arrays of scalars as lists, arrays of objects as
/// `key[i].member`, sub-properties (NGSI-LD) and metadata (NGSI-v2) as `key.name`, and
/// each attribute's unit code into `units`.
struct Flattener {
    fields: BTreeMap<String, FieldValue>,
    units: BTreeMap<String, String>,
    /// Values the entity may still keep.
    entity_room: usize,
    /// Values the attribute being read may still keep.
    attribute_room: usize,
    /// Values left out, and the first place one was.
    cut: u64,
    first_cut: Option<String>,
}

impl Default for Flattener {
    fn default() -> Self {
        Self {
            fields: BTreeMap::new(),
            units: BTreeMap::new(),
            entity_room: MAX_VALUES_PER_ENTITY,
            attribute_room: MAX_VALUES_PER_ATTRIBUTE,
            cut: 0,
            first_cut: None,
        }
    }
}

impl Flattener {
    /// One top-level attribute, with a fresh per-attribute allowance.
    fn attribute(&mut self, name: String, attribute: Value, dialect: Dialect) {
        self.attribute_room = MAX_VALUES_PER_ATTRIBUTE;
        self.read_attribute(name, attribute, dialect);
    }

    fn read_attribute(&mut self, key: String, attribute: Value, dialect: Dialect) {
        match attribute {
            Value::Object(mut object) => {
                let Some(member) = value_member(&object, dialect) else {
                    return self.value(key, Value::Object(object));
                };
                if let Some(code) = attribute_unit(&object, dialect) {
                    self.units.insert(key.clone(), code.to_owned());
                }
                let value = object.remove(member).unwrap_or(Value::Null);
                let value = if member == "objectList" {
                    relationship_objects(value)
                } else {
                    value
                };
                self.value(key.clone(), value);
                match dialect {
                    Dialect::Ld => {
                        for (name, sub) in object {
                            if !LD_ATTRIBUTE_MEMBERS.contains(&name.as_str()) {
                                self.read_attribute(format!("{key}.{name}"), sub, dialect);
                            }
                        }
                    }
                    Dialect::V2 => {
                        if let Some(Value::Object(metadata)) = object.remove("metadata") {
                            for (name, datum) in metadata {
                                if name != "unitCode" && !V2_TIME_METADATA.contains(&name.as_str())
                                {
                                    self.read_attribute(format!("{key}.{name}"), datum, dialect);
                                }
                            }
                        }
                    }
                }
            }
            Value::Array(instances)
                if dialect == Dialect::Ld && is_list_of_instances(&instances) =>
            {
                let values = instances
                    .into_iter()
                    .map(|instance| match instance {
                        Value::Object(mut object) => value_member(&object, dialect)
                            .and_then(|member| object.remove(member))
                            .unwrap_or(Value::Null),
                        other => other,
                    })
                    .collect();
                self.value(key, Value::Array(values));
            }
            Value::Array(mut instances) if dialect == Dialect::Ld => {
                match default_instance(&instances) {
                    Some(index) => self.read_attribute(key, instances.swap_remove(index), dialect),
                    None => self.value(key, Value::Array(instances)),
                }
            }
            other => self.value(key, other),
        }
    }

    /// Adds what `value` holds under `key`.
    fn value(&mut self, key: String, value: Value) {
        match value {
            Value::Null => {}
            Value::Object(mut object) => {
                if let Some(literal) = object.remove("@value") {
                    return self.value(key, literal);
                }
                for (member, value) in object {
                    self.value(format!("{key}.{member}"), value);
                }
            }
            Value::Array(items) if items.iter().any(is_structured) => {
                for (index, item) in items.into_iter().enumerate() {
                    if self.room() == 0 {
                        self.note_cut(&key, leaves(&item));
                    } else {
                        self.value(format!("{key}[{index}]"), item);
                    }
                }
            }
            Value::Array(items) => {
                let list = self.list(items, &key);
                self.fields.insert(key, FieldValue::List(list));
            }
            scalar => {
                if let Some(field) = scalar_field(scalar) {
                    if self.take() {
                        self.fields.insert(key, field);
                    } else {
                        self.note_cut(&key, 1);
                    }
                }
            }
        }
    }

    /// An array of scalars (and arrays) as a list, as far as the allowance goes.
    fn list(&mut self, items: Vec<Value>, key: &str) -> Vec<FieldValue> {
        let mut list = Vec::with_capacity(items.len().min(self.room()));
        for item in items {
            if self.room() == 0 {
                self.note_cut(key, leaves(&item));
                continue;
            }
            match item {
                Value::Null => {}
                Value::Array(inner) => {
                    let inner = self.list(inner, key);
                    list.push(FieldValue::List(inner));
                }
                Value::Object(mut object) => {
                    // A typed literal is a scalar; another object inside a nested
                    // array is kept as its JSON text.
                    let field = match object.remove("@value") {
                        Some(literal) => scalar_field(literal),
                        None => Some(FieldValue::Text(Value::Object(object).to_string())),
                    };
                    if let Some(field) = field
                        && self.take()
                    {
                        list.push(field);
                    }
                }
                scalar => {
                    if let Some(field) = scalar_field(scalar)
                        && self.take()
                    {
                        list.push(field);
                    }
                }
            }
        }
        list
    }

    fn room(&self) -> usize {
        self.entity_room.min(self.attribute_room)
    }

    /// Uses up one value of the allowance; false when there is none left.
    fn take(&mut self) -> bool {
        if self.room() == 0 {
            return false;
        }
        self.entity_room -= 1;
        self.attribute_room -= 1;
        true
    }

    fn note_cut(&mut self, key: &str, values: u64) {
        if values == 0 {
            return;
        }
        self.cut += values;
        if self.first_cut.is_none() {
            self.first_cut = Some(excerpt_to(key, MAX_PATH_BYTES).to_owned());
        }
    }
}

/// An object that is not a JSON-LD typed literal.
fn is_structured(value: &Value) -> bool {
    value.is_object() && value.get("@value").is_none()
}

/// The scalar values in `value` (what keeping it would have cost).
fn leaves(value: &Value) -> u64 {
    match value {
        Value::Null => 0,
        Value::Array(items) => items.iter().map(leaves).sum(),
        Value::Object(object) if object.contains_key("@value") => 1,
        Value::Object(object) => object.values().map(leaves).sum(),
        _ => 1,
    }
}

fn scalar_field(value: Value) -> Option<FieldValue> {
    match value {
        Value::Number(number) => number.as_f64().map(FieldValue::Number),
        Value::String(text) => Some(FieldValue::Text(text)),
        Value::Bool(flag) => Some(FieldValue::Bool(flag)),
        _ => None,
    }
}

/// The targets of an NGSI-LD `objectList`: `[{"object": "urn:…"}, …]` (normalized) or
/// the ids themselves (concise).
fn relationship_objects(list: Value) -> Value {
    match list {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(mut object) if object.contains_key("object") => {
                        object.remove("object").unwrap_or(Value::Null)
                    }
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

/// A time attribute as Unix ms. An ISO 8601 interval (`start/end`, as some
/// TrafficFlowObserved sources send) dates the observation by its end.
fn timestamp_ms(value: &Value, path: &str) -> Result<i64, ItemError> {
    let Some(text) = value.as_str() else {
        return Err(ItemError::new(
            RejectReason::BadTimestamp,
            format!("{path} is {}, not an RFC 3339 string", json_kind(value)),
        )
        .at(path));
    };
    let end = text.rsplit('/').next().unwrap_or(text);
    parse_rfc3339_ms(end).ok_or_else(|| {
        ItemError::new(
            RejectReason::BadTimestamp,
            format!("{path} = {:?} is not an RFC 3339 time", excerpt(text)),
        )
        .at(path)
    })
}

/// Where an entity's `location` puts it: a GeoJSON geometry (keyValues, an NGSI-LD
/// GeoProperty, NGSI-v2 `geo:json`) or an NGSI-v2 `geo:point` / `geo:line` /
/// `geo:polygon` / `geo:box` of `"lat, lon"` texts.
fn location_shape(location: Option<&Value>, reading: Reading) -> Result<Shape, ItemError> {
    let Some(attribute) = location else {
        return Ok(Shape::default());
    };
    let Some(geometry) = attribute_value(attribute, reading.dialect) else {
        return Ok(Shape::default());
    };
    let path = value_path("location", attribute, reading);
    let v2_kind = match reading.dialect {
        Dialect::V2 => attribute.get("type").and_then(Value::as_str),
        Dialect::Ld => None,
    };
    match v2_kind {
        Some(kind @ ("geo:point" | "geo:line" | "geo:polygon" | "geo:box")) => {
            v2_shape(kind, geometry, &path)
        }
        _ => decode_geometry(geometry, &path),
    }
}

/// An NGSI-v2 simple location: `geo:point` `"lat, lon"`, `geo:line` and `geo:polygon`
/// arrays of them, `geo:box` two opposite corners (drawn as its outline).
fn v2_shape(kind: &str, value: &Value, path: &str) -> Result<Shape, ItemError> {
    if kind == "geo:point" {
        let position = v2_position(value, path)?;
        return Ok(Shape {
            position: Some(position),
            line: None,
        });
    }
    let Value::Array(texts) = value else {
        return Err(bad_geometry(format!(
            "{path} is {}, not an array of \"lat, lon\" texts for {kind}",
            json_kind(value)
        ))
        .at(path));
    };
    let mut points = texts
        .iter()
        .enumerate()
        .map(|(index, text)| v2_position(text, &format!("{path}[{index}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if kind == "geo:box" {
        let &[[west, south], [east, north]] = points.as_slice() else {
            return Err(
                bad_geometry(format!("{path} should hold two corners for geo:box")).at(path),
            );
        };
        points = vec![
            [west, south],
            [east, south],
            [east, north],
            [west, north],
            [west, south],
        ];
    }
    let Some(&first) = points.first() else {
        return Err(bad_geometry(format!("{path} has no positions")).at(path));
    };
    Ok(Shape {
        position: Some(first),
        line: Some(points),
    })
}

/// An NGSI-v2 `"lat, lon"` text as WGS84 `[lon, lat]`.
fn v2_position(value: &Value, path: &str) -> Result<[f64; 2], ItemError> {
    let parsed = value.as_str().and_then(|text| {
        let (lat, lon) = text.split_once(',')?;
        Some((
            lat.trim().parse::<f64>().ok()?,
            lon.trim().parse::<f64>().ok()?,
        ))
    });
    let Some((lat, lon)) = parsed else {
        return Err(bad_coordinates(format!(
            "{path} is {}, not a \"lat, lon\" text",
            match value.as_str() {
                Some(text) => format!("{:?}", excerpt(text)),
                None => json_kind(value).to_owned(),
            }
        ))
        .at(path));
    };
    for (degrees, limit, what) in [(lat, 90.0, "latitude"), (lon, 180.0, "longitude")] {
        if !(degrees.is_finite() && degrees.abs() <= limit) {
            return Err(bad_coordinates(format!("{path}: {degrees} is not a {what}")).at(path));
        }
    }
    Ok([lon, lat])
}

/// Reads a GeoJSON geometry (Point, LineString, Polygon, Multi*, GeometryCollection):
/// every position is checked, the first one becomes the position, line strings keep
/// their whole line (a MultiLineString its first part) and polygons their outer ring.
fn decode_geometry(geometry: &Value, path: &str) -> Result<Shape, ItemError> {
    let Some(kind) = geometry.get("type").and_then(Value::as_str) else {
        return Err(bad_geometry(format!(
            "{path} is {}, not a GeoJSON geometry with a string `type`",
            json_kind(geometry)
        ))
        .at(path));
    };
    if kind == "GeometryCollection" {
        let Some(Value::Array(members)) = geometry.get("geometries") else {
            return Err(bad_geometry(format!("{path} has no `geometries` array")).at(path));
        };
        let mut shape = Shape::default();
        for (index, member) in members.iter().enumerate() {
            let member_shape = decode_geometry(member, &format!("{path}.geometries[{index}]"))?;
            if shape.position.is_none() {
                shape = member_shape;
            }
        }
        if shape.position.is_none() {
            return Err(bad_geometry(format!("{path} has no positions")).at(path));
        }
        return Ok(shape);
    }

    let depth = match kind {
        "Point" => 0,
        "LineString" | "MultiPoint" => 1,
        "Polygon" | "MultiLineString" => 2,
        "MultiPolygon" => 3,
        other => {
            return Err(bad_geometry(format!(
                "{path} has unknown geometry type {:?}",
                excerpt(other)
            ))
            .at(format!("{path}.type")));
        }
    };
    let Some(coordinates) = geometry.get("coordinates") else {
        return Err(bad_geometry(format!("{path} has no `coordinates`")).at(path));
    };
    let coordinates_path = || format!("{path}.coordinates");
    let mut first = None;
    let mut line = (kind == "LineString").then(Vec::new);
    visit_positions(coordinates, depth, &coordinates_path, &mut |position| {
        first.get_or_insert(position);
        if let Some(line) = &mut line {
            line.push(position);
        }
    })?;
    let Some(position) = first else {
        return Err(bad_geometry(format!("{path} has no positions")).at(coordinates_path()));
    };
    if kind == "MultiLineString"
        && let Some(first_part) = coordinates.get(0)
    {
        let mut part = Vec::new();
        visit_positions(first_part, 1, &coordinates_path, &mut |p| part.push(p))?;
        line = Some(part);
    }
    // A polygon keeps its outer ring (closed), for areas drawn filled.
    if kind == "Polygon"
        && let Some(outer) = coordinates.get(0)
    {
        let mut ring = Vec::new();
        visit_positions(outer, 1, &coordinates_path, &mut |p| ring.push(p))?;
        line = Some(ring);
    }
    Ok(Shape {
        position: Some(position),
        line,
    })
}

/// Walks `depth` levels of nested arrays down to positions (0: `value` is a position).
/// Paths are built only when something is wrong.
fn visit_positions(
    value: &Value,
    depth: u8,
    path: &dyn Fn() -> String,
    visit: &mut dyn FnMut([f64; 2]),
) -> Result<(), ItemError> {
    if depth == 0 {
        visit(position(value, path)?);
        return Ok(());
    }
    let Value::Array(items) = value else {
        let path = path();
        return Err(bad_geometry(format!("{path} is {}, not an array", json_kind(value))).at(path));
    };
    for (index, item) in items.iter().enumerate() {
        visit_positions(item, depth - 1, &|| format!("{}[{index}]", path()), visit)?;
    }
    Ok(())
}

/// A WGS84 `[lon, lat]` (altitude ignored).
fn position(value: &Value, path: &dyn Fn() -> String) -> Result<[f64; 2], ItemError> {
    let Some([lon, lat, ..]) = value.as_array().map(Vec::as_slice) else {
        let path = path();
        return Err(bad_coordinates(format!(
            "{path} is {}, not a [lon, lat] position",
            json_kind(value)
        ))
        .at(path));
    };
    Ok([
        coordinate(lon, 0, 180.0, "longitude", path)?,
        coordinate(lat, 1, 90.0, "latitude", path)?,
    ])
}

fn coordinate(
    value: &Value,
    index: usize,
    limit: f64,
    what: &str,
    path: &dyn Fn() -> String,
) -> Result<f64, ItemError> {
    let at = || format!("{}[{index}]", path());
    match value.as_f64() {
        Some(degrees) if degrees.is_finite() && degrees.abs() <= limit => Ok(degrees),
        Some(degrees) => {
            Err(bad_coordinates(format!("{} = {degrees} is not a {what}", at())).at(at()))
        }
        None => {
            Err(bad_coordinates(format!("{} is {}, not a number", at(), json_kind(value))).at(at()))
        }
    }
}

fn bad_geometry(detail: String) -> ItemError {
    ItemError::new(RejectReason::BadGeometry, detail)
}

fn bad_coordinates(detail: String) -> ItemError {
    ItemError::new(RejectReason::BadCoordinates, detail)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The start of `text`, so a reject never quotes a whole megabyte back.
fn excerpt(text: &str) -> &str {
    excerpt_to(text, DETAIL_EXCERPT_BYTES)
}

fn excerpt_to(text: &str, bytes: usize) -> &str {
    &text[..text.floor_char_boundary(bytes)]
}

fn ascii_digits(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    bytes.get(at..at + count)?.iter().try_fold(0, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn expect_byte(bytes: &[u8], at: usize, allowed: &[u8]) -> Option<()> {
    allowed.contains(bytes.get(at)?).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-01T10:00:00Z.
    const MAY_FIRST_10H_MS: i64 = 1_714_557_600_000;

    const GOOD_BEFORE: &str =
        r#"{"id": "urn:ngsi-ld:Vehicle:before", "type": "Vehicle", "speed": 30}"#;
    const GOOD_AFTER: &str =
        r#"{"id": "urn:ngsi-ld:Vehicle:after", "type": "Vehicle", "speed": 31}"#;

    fn decode_one(body: &str) -> EntityUpdate {
        let decoded = decode_ngsi_ld(body.as_bytes()).expect("payload decodes");
        assert_eq!(decoded.rejects, vec![], "unexpected rejects");
        let [update] = <[EntityUpdate; 1]>::try_from(decoded.updates).expect("one update");
        update
    }

    /// Decodes `items` between two good vehicles, checks both vehicles still land, and
    /// returns the rejects.
    fn rejects_between_good(items: &[&str]) -> Vec<Reject> {
        let body = format!("[{GOOD_BEFORE},{},{GOOD_AFTER}]", items.join(","));
        let decoded = decode_ngsi_ld(body.as_bytes()).expect("payload decodes");
        let ids: Vec<&str> = decoded.updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(
            ids,
            ["urn:ngsi-ld:Vehicle:before", "urn:ngsi-ld:Vehicle:after"]
        );
        decoded.rejects
    }

    fn reasons_and_ids(rejects: &[Reject]) -> Vec<(RejectReason, Option<&str>)> {
        rejects
            .iter()
            .map(|r| (r.reason, r.item_id.as_deref()))
            .collect()
    }

    fn field<'a>(update: &'a EntityUpdate, name: &str) -> &'a FieldValue {
        update
            .fields
            .get(name)
            .unwrap_or_else(|| panic!("field {name} missing from {:?}", update.fields))
    }

    #[test]
    fn rfc3339_parses_known_values() {
        let cases = [
            ("2024-05-01T10:00:00Z", MAY_FIRST_10H_MS),
            ("2024-05-01T12:00:00+02:00", MAY_FIRST_10H_MS),
            ("2024-05-01T05:30:00-04:30", MAY_FIRST_10H_MS),
            ("2024-05-01T18:00:00+0800", MAY_FIRST_10H_MS),
            ("2024-05-01t10:00:00z", MAY_FIRST_10H_MS),
            ("2024-05-01 10:00:00Z", MAY_FIRST_10H_MS),
            ("2024-05-01T10:00:00", MAY_FIRST_10H_MS),
            ("2024-05-01T10:00:00.5Z", MAY_FIRST_10H_MS + 500),
            ("2024-05-01T10:00:00.25Z", MAY_FIRST_10H_MS + 250),
            ("2024-05-01T10:00:00.123456789Z", MAY_FIRST_10H_MS + 123),
            // "Never expires": past jiff's last instant, still read.
            ("9999-12-31T23:59:59Z", 253_402_300_799_000),
            (
                "9999-12-31T23:59:59+08:00",
                253_402_300_799_000 - 8 * 3_600_000,
            ),
            ("2024-05-01T12:00:00.999+02:00", MAY_FIRST_10H_MS + 999),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1000),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
            // Helsinki's clocks either side of the spring change, as a feed there
            // writes them: the same second apart.
            ("2026-03-29T02:59:59+02:00", 1_774_745_999_000),
            ("2026-03-29T04:00:00+03:00", 1_774_746_000_000),
            ("2026-11-30T00:00:00.5+08:00", 1_795_968_000_500),
            ("2026-11-29T11:30:00-1230", 1_795_996_800_000),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_rfc3339_ms(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn rfc3339_rejects_malformed_times() {
        let cases = [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T10:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:60:00Z",
            "2024-05-01T10:00:61Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00+2:00",
            "2024-05-01T10:00:00+24:00",
            "2024-05-01T10:00:00Zjunk",
            "2024-05-01X10:00:00Z",
            "２０２４-05-01T10:00:00Z",
            "+2024-05-01T10:00:00Z",
        ];
        for text in cases {
            assert_eq!(parse_rfc3339_ms(text), None, "{text}");
        }
    }

    #[test]
    fn type_uris_map_to_their_last_segment() {
        let cases = [
            (
                "https://smartdatamodels.org/dataModel.Transportation/Vehicle",
                "Vehicle",
            ),
            (
                "https://uri.fiware.org/ns/data-models#AirQualityObserved",
                "AirQualityObserved",
            ),
            ("https://example.org/types/Alert/", "Alert"),
            ("sdm:OffStreetParking", "OffStreetParking"),
            ("TrafficFlowObserved", "TrafficFlowObserved"),
        ];
        for (full, short) in cases {
            assert_eq!(short_type_name(full), short, "{full}");
        }
    }

    #[test]
    fn traffic_flow_normalized() {
        let update = decode_one(
            r#"{
                "@context": ["https://smartdatamodels.org/context.jsonld"],
                "id": "urn:ngsi-ld:TrafficFlowObserved:ring-road-7",
                "type": "TrafficFlowObserved",
                "averageVehicleSpeed": {"type": "Property", "value": 42.5, "unitCode": "KMH"},
                "intensity": {"type": "Property", "value": 320},
                "occupancy": {"type": "Property", "value": 0.42},
                "congested": {"type": "Property", "value": false},
                "laneId": {"type": "Property", "value": 2},
                "dateObserved": {"type": "Property",
                    "value": {"@type": "DateTime", "@value": "2024-05-01T10:00:00Z"}},
                "location": {"type": "GeoProperty", "value": {"type": "LineString",
                    "coordinates": [[116.39, 39.91], [116.40, 39.915], [116.41, 39.92]]}},
                "refRoadSegment": {"type": "Relationship", "object": "urn:ngsi-ld:RoadSegment:7"}
            }"#,
        );
        assert_eq!(update.id, "urn:ngsi-ld:TrafficFlowObserved:ring-road-7");
        assert_eq!(update.entity_type, "TrafficFlowObserved");
        assert_eq!(
            update.kind,
            EntityKind::TrafficFlow {
                average_speed_kmh: Some(42.5),
                intensity: Some(320.0),
                occupancy: Some(0.42),
                congested: Some(false),
            }
        );
        assert_eq!(update.position, Some([116.39, 39.91]));
        assert_eq!(
            update.line,
            Some(vec![[116.39, 39.91], [116.40, 39.915], [116.41, 39.92]])
        );
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(
            field(&update, "averageVehicleSpeed"),
            &FieldValue::Number(42.5)
        );
        assert_eq!(field(&update, "laneId"), &FieldValue::Number(2.0));
        assert_eq!(field(&update, "congested"), &FieldValue::Bool(false));
        assert_eq!(
            field(&update, "refRoadSegment"),
            &FieldValue::Text("urn:ngsi-ld:RoadSegment:7".to_owned())
        );
        assert_eq!(
            field(&update, "dateObserved"),
            &FieldValue::Text("2024-05-01T10:00:00Z".to_owned())
        );
        for skipped in ["@context", "id", "type", "location", "location.type"] {
            assert!(
                !update.fields.contains_key(skipped),
                "{skipped} became a field"
            );
        }
    }

    #[test]
    fn traffic_flow_key_values() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:TrafficFlowObserved:ring-road-7",
                "type": "https://smartdatamodels.org/dataModel.Transportation/TrafficFlowObserved",
                "averageVehicleSpeed": 12,
                "intensity": 900.5,
                "occupancy": 0.91,
                "congested": true,
                "dateObserved": "2024-05-01T09:55:00Z/2024-05-01T10:00:00Z",
                "location": {"type": "LineString", "coordinates": [[116.39, 39.91], [116.40, 39.915]]}
            }]"#,
        );
        assert_eq!(update.entity_type, "TrafficFlowObserved");
        assert_eq!(
            update.kind,
            EntityKind::TrafficFlow {
                average_speed_kmh: Some(12.0),
                intensity: Some(900.5),
                occupancy: Some(0.91),
                congested: Some(true),
            }
        );
        assert_eq!(update.position, Some([116.39, 39.91]));
        assert_eq!(update.line, Some(vec![[116.39, 39.91], [116.40, 39.915]]));
        // An interval dates the observation by its end.
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(field(&update, "intensity"), &FieldValue::Number(900.5));
    }

    #[test]
    fn air_quality_normalized_takes_latest_observed_at() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:AirQualityObserved:dongsi",
                "type": "AirQualityObserved",
                "airQualityIndex": {"type": "Property", "value": 153, "observedAt": "2024-05-01T09:00:00Z"},
                "pm25": {"type": "Property", "value": 112.5, "unitCode": "GQ", "observedAt": "2024-05-01T10:00:00Z"},
                "pm10": {"type": "Property", "value": 160, "observedAt": "2024-05-01T12:00:00+02:00"},
                "no2": {"type": "Property", "value": 48},
                "o3": {"type": "Property", "value": 12.25},
                "address": {"type": "Property", "value": {"streetAddress": "Dongsi", "addressLocality": "Beijing"}},
                "name": {"type": "LanguageProperty", "languageMap": {"en": "Dongsi", "zh": "东四"}},
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [116.417, 39.929]}}
            }]"#,
        );
        assert_eq!(
            update.kind,
            EntityKind::AirQuality {
                aqi: Some(153.0),
                pm25: Some(112.5),
                pm10: Some(160.0),
                no2: Some(48.0),
                o3: Some(12.25),
            }
        );
        assert_eq!(update.position, Some([116.417, 39.929]));
        assert_eq!(update.line, None);
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(
            field(&update, "address.streetAddress"),
            &FieldValue::Text("Dongsi".to_owned())
        );
        assert_eq!(
            field(&update, "name.zh"),
            &FieldValue::Text("东四".to_owned())
        );
        assert_eq!(field(&update, "pm25"), &FieldValue::Number(112.5));
    }

    #[test]
    fn air_quality_key_values() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:AirQualityObserved:dongsi",
                "type": "https://uri.fiware.org/ns/data-models#AirQualityObserved",
                "airQualityIndex": 88,
                "pm25": 35.5,
                "pm10": 61,
                "no2": 20.5,
                "dateObserved": "2024-05-01T18:00:00+08:00",
                "location": {"type": "Point", "coordinates": [116.417, 39.929]}
            }]"#,
        );
        assert_eq!(update.entity_type, "AirQualityObserved");
        assert_eq!(
            update.kind,
            EntityKind::AirQuality {
                aqi: Some(88.0),
                pm25: Some(35.5),
                pm10: Some(61.0),
                no2: Some(20.5),
                o3: None,
            }
        );
        assert_eq!(update.position, Some([116.417, 39.929]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
    }

    #[test]
    fn vehicle_normalized() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:Vehicle:bus-52",
                "type": "https://smartdatamodels.org/dataModel.Transportation/Vehicle",
                "vehicleType": {"type": "Property", "value": "bus"},
                "speed": {"type": "Property", "value": 38.2, "observedAt": "2024-05-01T10:00:00.250Z"},
                "heading": {"type": "Property", "value": 270},
                "serviceStatus": {"type": "Property", "value": "onRoute"},
                "location": {"type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [116.3, 39.9, 45.0]},
                    "observedAt": "2024-05-01T09:59:59Z"}
            }]"#,
        );
        assert_eq!(update.entity_type, "Vehicle");
        assert_eq!(
            update.kind,
            EntityKind::Vehicle {
                vehicle_type: Some("bus".to_owned()),
                speed_kmh: Some(38.2),
                heading_deg: Some(270.0),
                service_status: Some("onRoute".to_owned()),
            }
        );
        assert_eq!(update.position, Some([116.3, 39.9]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS + 250));
        assert_eq!(
            field(&update, "vehicleType"),
            &FieldValue::Text("bus".to_owned())
        );
    }

    #[test]
    fn vehicle_key_values() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:Vehicle:ambulance-3",
                "type": "Vehicle",
                "vehicleType": "ambulance",
                "speed": 0,
                "heading": 90.5,
                "serviceStatus": "parked",
                "dateObserved": "2024-05-01T10:00:00Z",
                "location": {"type": "Point", "coordinates": [-0.1276, 51.5072]}
            }]"#,
        );
        assert_eq!(
            update.kind,
            EntityKind::Vehicle {
                vehicle_type: Some("ambulance".to_owned()),
                speed_kmh: Some(0.0),
                heading_deg: Some(90.5),
                service_status: Some("parked".to_owned()),
            }
        );
        assert_eq!(update.position, Some([-0.1276, 51.5072]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
    }

    #[test]
    fn alert_normalized() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:Alert:crash-1",
                "type": "Alert",
                "category": {"type": "Property", "value": "traffic"},
                "subCategory": {"type": "Property", "value": "carAccident"},
                "severity": {"type": "Property", "value": "high"},
                "description": {"type": "Property", "value": "Two cars collided"},
                "alertSource": {"type": "Relationship", "object": "urn:ngsi-ld:Device:cam-9"},
                "dateObserved": {"type": "Property", "value": "2024-05-01T10:00:00Z"},
                "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [116.45, 39.95]}}
            }]"#,
        );
        assert_eq!(
            update.kind,
            EntityKind::Alert {
                category: Some("traffic".to_owned()),
                sub_category: Some("carAccident".to_owned()),
                severity: Some("high".to_owned()),
                description: Some("Two cars collided".to_owned()),
            }
        );
        assert_eq!(update.position, Some([116.45, 39.95]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(
            field(&update, "alertSource"),
            &FieldValue::Text("urn:ngsi-ld:Device:cam-9".to_owned())
        );
    }

    #[test]
    fn alert_key_values() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:Alert:smoke-2",
                "type": "https://uri.fiware.org/ns/data-models#Alert",
                "category": "security",
                "subCategory": "fire",
                "severity": "critical",
                "dateObserved": "2024-05-01T11:00:00+01:00",
                "location": {"type": "Point", "coordinates": [116.46, 39.96]}
            }]"#,
        );
        assert_eq!(update.entity_type, "Alert");
        assert_eq!(
            update.kind,
            EntityKind::Alert {
                category: Some("security".to_owned()),
                sub_category: Some("fire".to_owned()),
                severity: Some("critical".to_owned()),
                description: None,
            }
        );
        assert_eq!(update.position, Some([116.46, 39.96]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
    }

    #[test]
    fn parking_normalized() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:OffStreetParking:mall",
                "type": "OffStreetParking",
                "availableSpotNumber": {"type": "Property", "value": 120, "observedAt": "2024-05-01T10:00:00Z"},
                "totalSpotNumber": {"type": "Property", "value": 400},
                "status": {"type": "Property", "value": ["open", "almostFull"]},
                "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [
                    [[116.30, 39.90], [116.31, 39.90], [116.31, 39.91], [116.30, 39.90]],
                    [[116.302, 39.902], [116.303, 39.902], [116.303, 39.903], [116.302, 39.902]]
                ]}}
            }]"#,
        );
        assert_eq!(
            update.kind,
            EntityKind::Parking {
                available_spots: Some(120.0),
                total_spots: Some(400.0),
                status: Some("open,almostFull".to_owned()),
            }
        );
        assert_eq!(update.position, Some([116.30, 39.90]));
        // The car park's outline is kept for drawing it filled.
        assert_eq!(
            update.line,
            Some(vec![
                [116.3, 39.9],
                [116.31, 39.9],
                [116.31, 39.91],
                [116.3, 39.9]
            ])
        );
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
    }

    #[test]
    fn parking_key_values() {
        let update = decode_one(
            r#"[{
                "id": "urn:ngsi-ld:OffStreetParking:station",
                "type": "OffStreetParking",
                "availableSpotNumber": 0,
                "totalSpotNumber": 80,
                "status": "full",
                "dateObserved": "2024-05-01T10:00:00Z",
                "location": {"type": "Polygon", "coordinates": [[[2.35, 48.85], [2.36, 48.85], [2.36, 48.86], [2.35, 48.85]]]}
            }]"#,
        );
        assert_eq!(
            update.kind,
            EntityKind::Parking {
                available_spots: Some(0.0),
                total_spots: Some(80.0),
                status: Some("full".to_owned()),
            }
        );
        assert_eq!(update.position, Some([2.35, 48.85]));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
    }

    #[test]
    fn generic_type_keeps_flattened_fields() {
        let decoded = decode_ngsi_ld(
            br#"[
                {"id": "urn:ngsi-ld:WeatherObserved:hq", "type": "WeatherObserved",
                 "temperature": 21.5, "weatherType": "sunny", "isRaining": false,
                 "address": {"streetAddress": "Chang'an Ave 1", "postal": {"code": "100000"}},
                 "tags": ["a", "b"], "comment": null},
                {"id": "urn:ngsi-ld:Sensor:s1", "type": "Sensor",
                 "reading": {"type": "Property", "value": 7, "observedAt": "2024-05-01T10:00:00Z"},
                 "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [116.4, 39.9]}}}
            ]"#,
        )
        .expect("payload decodes");
        assert_eq!(decoded.rejects, vec![]);
        let [weather, sensor] =
            <[EntityUpdate; 2]>::try_from(decoded.updates).expect("two updates");

        assert_eq!(weather.kind, EntityKind::Generic);
        assert_eq!(weather.entity_type, "WeatherObserved");
        assert_eq!(weather.position, None);
        assert_eq!(weather.observed_at_ms, None);
        let expected: BTreeMap<String, FieldValue> = [
            ("address.postal.code", FieldValue::Text("100000".to_owned())),
            (
                "address.streetAddress",
                FieldValue::Text("Chang'an Ave 1".to_owned()),
            ),
            ("isRaining", FieldValue::Bool(false)),
            (
                "tags",
                FieldValue::List(vec![
                    FieldValue::Text("a".to_owned()),
                    FieldValue::Text("b".to_owned()),
                ]),
            ),
            ("temperature", FieldValue::Number(21.5)),
            ("weatherType", FieldValue::Text("sunny".to_owned())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(weather.fields, expected);

        assert_eq!(sensor.kind, EntityKind::Generic);
        assert_eq!(sensor.position, Some([116.4, 39.9]));
        assert_eq!(sensor.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(field(&sensor, "reading"), &FieldValue::Number(7.0));
    }

    #[test]
    fn multi_attribute_reads_the_default_instance() {
        let update = decode_one(
            r#"[{"id": "urn:ngsi-ld:Vehicle:taxi-1", "type": "Vehicle", "speed": [
                {"type": "Property", "value": 10, "datasetId": "urn:ngsi-ld:Dataset:gps"},
                {"type": "Property", "value": 12, "observedAt": "2024-05-01T10:00:00Z"}
            ]}]"#,
        );
        let EntityKind::Vehicle { speed_kmh, .. } = update.kind else {
            panic!("not a vehicle: {:?}", update.kind);
        };
        assert_eq!(speed_kmh, Some(12.0));
        assert_eq!(update.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(field(&update, "speed"), &FieldValue::Number(12.0));
    }

    #[test]
    fn without_a_default_instance_the_choice_does_not_follow_broker_order() {
        let a = r#"{"type": "Property", "value": 10, "datasetId": "urn:ngsi-ld:Dataset:gps", "observedAt": "2024-05-01T10:00:00Z"}"#;
        let b = r#"{"type": "Property", "value": 14, "datasetId": "urn:ngsi-ld:Dataset:can", "observedAt": "2024-05-01T09:59:00Z"}"#;
        let c = r#"{"type": "Property", "value": 20, "datasetId": "urn:ngsi-ld:Dataset:aaa", "observedAt": "2024-05-01T10:00:00Z"}"#;
        let speed = |instances: &[&str]| {
            let update = decode_one(&format!(
                r#"[{{"id": "urn:ngsi-ld:Vehicle:taxi-1", "type": "Vehicle", "speed": [{}]}}]"#,
                instances.join(",")
            ));
            let EntityKind::Vehicle { speed_kmh, .. } = update.kind else {
                panic!("not a vehicle: {:?}", update.kind);
            };
            speed_kmh
        };
        // The newest observation; between equally new ones the smallest datasetId.
        assert_eq!(speed(&[a, b]), Some(10.0));
        assert_eq!(speed(&[b, a]), Some(10.0));
        assert_eq!(speed(&[a, b, c]), Some(20.0));
        assert_eq!(speed(&[c, b, a]), Some(20.0));
    }

    #[test]
    fn unit_codes_are_applied() {
        let update = decode_one(
            r#"[{"id": "urn:ngsi-ld:TrafficFlowObserved:s1", "type": "TrafficFlowObserved",
                "averageVehicleSpeed": {"type": "Property", "value": 10, "unitCode": "MTS"},
                "occupancy": {"type": "Property", "value": 35, "unitCode": "P1"},
                "intensity": {"type": "Property", "value": 300}}]"#,
        );
        let EntityKind::TrafficFlow {
            average_speed_kmh,
            occupancy,
            intensity,
            ..
        } = update.kind
        else {
            panic!("not a flow: {:?}", update.kind);
        };
        assert_eq!(average_speed_kmh, Some(36.0));
        assert_eq!(occupancy, Some(0.35));
        assert_eq!(intensity, Some(300.0));
        assert_eq!(
            field(&update, "averageVehicleSpeed"),
            &FieldValue::Number(36.0)
        );
        let vehicle = decode_one(
            r#"[{"id": "urn:ngsi-ld:Vehicle:v", "type": "Vehicle",
                "speed": {"type": "Property", "value": 50, "unitCode": "KMH"}}]"#,
        );
        assert!(matches!(
            vehicle.kind,
            EntityKind::Vehicle {
                speed_kmh: Some(50.0),
                ..
            }
        ));
    }

    #[test]
    fn missing_ids_and_types_are_rejected() {
        let rejects = rejects_between_good(&[
            r#"{"type": "Vehicle", "speed": 10}"#,
            r#"{"id": 42, "type": "Vehicle"}"#,
            r#"{"id": "", "type": "Vehicle"}"#,
            r#"{"id": "urn:x:untyped", "speed": 10}"#,
            r#"{"id": "urn:x:numeric-type", "type": 7}"#,
        ]);
        assert_eq!(
            reasons_and_ids(&rejects),
            [
                (RejectReason::MissingId, None),
                (RejectReason::MissingId, None),
                (RejectReason::MissingId, None),
                (RejectReason::MissingType, Some("urn:x:untyped")),
                (RejectReason::MissingType, Some("urn:x:numeric-type")),
            ]
        );
        assert!(
            rejects[1].detail.contains("a number"),
            "{}",
            rejects[1].detail
        );
    }

    #[test]
    fn wrong_value_types_are_rejected_naming_the_attribute() {
        let rejects = rejects_between_good(&[
            r#"{"id": "urn:x:slow", "type": "Vehicle", "speed": "fast"}"#,
            r#"{"id": "urn:x:aq", "type": "AirQualityObserved",
                "airQualityIndex": {"type": "Property", "value": [1, 2]}}"#,
            r#"{"id": "urn:x:jam", "type": "TrafficFlowObserved", "congested": "yes"}"#,
            r#"{"id": "urn:x:bus", "type": "Vehicle", "vehicleType": {"type": "Property", "value": 5}}"#,
            r#"{"id": "urn:x:lot", "type": "OffStreetParking", "status": ["open", 3]}"#,
            r#"{"id": "urn:x:huge", "type": "Vehicle", "speed": 1e400}"#,
        ]);
        assert_eq!(
            reasons_and_ids(&rejects),
            [
                (RejectReason::WrongValueType, Some("urn:x:slow")),
                (RejectReason::WrongValueType, Some("urn:x:aq")),
                (RejectReason::WrongValueType, Some("urn:x:jam")),
                (RejectReason::WrongValueType, Some("urn:x:bus")),
                (RejectReason::WrongValueType, Some("urn:x:lot")),
                // Out of f64's range: only the whole item's parse fails, so no id.
                (RejectReason::WrongValueType, None),
            ]
        );
        let named = [
            "speed",
            "airQualityIndex",
            "congested",
            "vehicleType",
            "status",
        ];
        for (reject, attribute) in rejects.iter().zip(named) {
            assert!(reject.detail.contains(attribute), "{}", reject.detail);
        }
    }

    #[test]
    fn bad_coordinates_and_geometry_are_rejected() {
        let rejects = rejects_between_good(&[
            r#"{"id": "urn:x:lat", "type": "Vehicle", "location": {"type": "Point", "coordinates": [116.4, 95]}}"#,
            r#"{"id": "urn:x:lon", "type": "Vehicle", "location": {"type": "GeoProperty",
                "value": {"type": "Point", "coordinates": [200, 39.9]}}}"#,
            r#"{"id": "urn:x:text", "type": "Vehicle", "location": {"type": "Point", "coordinates": ["116.4", 39.9]}}"#,
            r#"{"id": "urn:x:short", "type": "Vehicle", "location": {"type": "Point", "coordinates": [116.4]}}"#,
            r#"{"id": "urn:x:line", "type": "TrafficFlowObserved", "location": {"type": "LineString",
                "coordinates": [[116.4, 39.9], [116.5, -91]]}}"#,
            r#"{"id": "urn:x:ring", "type": "OffStreetParking", "location": {"type": "Polygon",
                "coordinates": [[[116.4, 39.9], [116.5, 39.9]], [[-181, 0]]]}}"#,
            r#"{"id": "urn:x:hexagon", "type": "Vehicle", "location": {"type": "Hexagon", "coordinates": [1, 2]}}"#,
            r#"{"id": "urn:x:named", "type": "Vehicle", "location": "Tiananmen"}"#,
            r#"{"id": "urn:x:empty", "type": "TrafficFlowObserved", "location": {"type": "LineString", "coordinates": []}}"#,
            r#"{"id": "urn:x:flat", "type": "OffStreetParking", "location": {"type": "Polygon", "coordinates": 5}}"#,
        ]);
        assert_eq!(
            reasons_and_ids(&rejects),
            [
                (RejectReason::BadCoordinates, Some("urn:x:lat")),
                (RejectReason::BadCoordinates, Some("urn:x:lon")),
                (RejectReason::BadCoordinates, Some("urn:x:text")),
                (RejectReason::BadCoordinates, Some("urn:x:short")),
                (RejectReason::BadCoordinates, Some("urn:x:line")),
                (RejectReason::BadCoordinates, Some("urn:x:ring")),
                (RejectReason::BadGeometry, Some("urn:x:hexagon")),
                (RejectReason::BadGeometry, Some("urn:x:named")),
                (RejectReason::BadGeometry, Some("urn:x:empty")),
                (RejectReason::BadGeometry, Some("urn:x:flat")),
            ]
        );
        assert_eq!(
            rejects[0].detail,
            "location.coordinates[1] = 95 is not a latitude"
        );
        assert_eq!(
            rejects[1].detail,
            "location.value.coordinates[0] = 200 is not a longitude"
        );
        assert_eq!(
            rejects[4].detail,
            "location.coordinates[1][1] = -91 is not a latitude"
        );
        assert_eq!(
            rejects[5].detail,
            "location.coordinates[1][0][0] = -181 is not a longitude"
        );
    }

    #[test]
    fn bad_timestamps_are_rejected() {
        let rejects = rejects_between_good(&[
            r#"{"id": "urn:x:when", "type": "Vehicle", "dateObserved": "yesterday"}"#,
            r#"{"id": "urn:x:month", "type": "Vehicle",
                "speed": {"type": "Property", "value": 3, "observedAt": "2024-13-01T00:00:00Z"}}"#,
            r#"{"id": "urn:x:epoch", "type": "Vehicle", "dateObserved": 1714557600000}"#,
            r#"{"id": "urn:x:normalized", "type": "AirQualityObserved",
                "dateObserved": {"type": "Property", "value": "2024-02-30T10:00:00Z"}}"#,
        ]);
        assert_eq!(
            reasons_and_ids(&rejects),
            [
                (RejectReason::BadTimestamp, Some("urn:x:when")),
                (RejectReason::BadTimestamp, Some("urn:x:month")),
                (RejectReason::BadTimestamp, Some("urn:x:epoch")),
                (RejectReason::BadTimestamp, Some("urn:x:normalized")),
            ]
        );
        assert!(
            rejects[1].detail.contains("speed.observedAt"),
            "{}",
            rejects[1].detail
        );
    }

    #[test]
    fn non_object_items_are_rejected() {
        let rejects = rejects_between_good(&["17", r#""vehicle""#, "null", "[]", "true"]);
        assert_eq!(rejects.len(), 5);
        assert!(
            rejects
                .iter()
                .all(|r| r.reason == RejectReason::NotAnObject && r.item_id.is_none())
        );
        assert_eq!(rejects[0].detail, "item is a number, not an object");
    }

    #[test]
    fn deeply_nested_items_are_rejected_and_the_rest_lands() {
        let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_member =
            format!(r#"{{"id": "urn:x:deep", "type": "Vehicle", "x": {deep_array}}}"#);
        let rejects = rejects_between_good(&[&deep_array, &deep_member]);
        assert_eq!(
            reasons_and_ids(&rejects),
            [(RejectReason::TooDeep, None), (RejectReason::TooDeep, None)]
        );
    }

    #[test]
    fn payload_level_failures() {
        let oversized = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let too_large = || PayloadError::TooLarge {
            size: MAX_PAYLOAD_BYTES + 1,
            limit: MAX_PAYLOAD_BYTES,
        };
        assert_eq!(decode_ngsi_ld(&oversized), Err(too_large()));
        assert_eq!(decode_geojson(&oversized), Err(too_large()));

        let deep_entity = format!(
            r#"{{"id": "urn:x:deep", "type": "Vehicle", "x": {}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let not_json: [&[u8]; 6] = [
            b"not json",
            b"",
            b"   ",
            b"[1,",
            b"\xff[]",
            deep_entity.as_bytes(),
        ];
        for body in not_json {
            let result = decode_ngsi_ld(body);
            assert!(
                matches!(result, Err(PayloadError::NotJson(_))),
                "{:?} → {result:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }

        for body in ["42", r#""text""#, "null", "true"] {
            let result = decode_ngsi_ld(body.as_bytes());
            assert!(
                matches!(result, Err(PayloadError::WrongShape(_))),
                "{body} → {result:?}"
            );
        }

        assert_eq!(decode_ngsi_ld(b" [ ] "), Ok(Decoded::default()));
    }

    #[test]
    fn large_payloads_decode_in_order() {
        let items: Vec<String> = (0..2500)
            .map(|i| {
                if i % 100 == 7 {
                    "0".to_owned()
                } else {
                    format!(
                        r#"{{"id": "urn:ngsi-ld:Vehicle:{i}", "type": "Vehicle", "speed": {i}}}"#
                    )
                }
            })
            .collect();
        let body = format!("[{}]", items.join(","));
        let decoded = decode_ngsi_ld(body.as_bytes()).expect("payload decodes");
        assert_eq!(decoded.rejects.len(), 25);
        assert_eq!(decoded.updates.len(), 2475);
        let expected_ids = (0..2500)
            .filter(|i| i % 100 != 7)
            .map(|i| format!("urn:ngsi-ld:Vehicle:{i}"));
        assert!(
            decoded
                .updates
                .iter()
                .map(|u| u.id.clone())
                .eq(expected_ids)
        );
    }

    #[test]
    fn geojson_feature_collection() {
        let decoded = decode_geojson(
            br#"{"type": "FeatureCollection", "features": [
                {"type": "Feature", "id": "aq-1",
                 "geometry": {"type": "Point", "coordinates": [116.417, 39.929]},
                 "properties": {"type": "AirQualityObserved", "airQualityIndex": 88, "pm25": 35.5,
                                "dateObserved": "2024-05-01T10:00:00Z", "name": "Dongsi"}},
                {"type": "Feature",
                 "geometry": {"type": "LineString", "coordinates": [[116.39, 39.91], [116.40, 39.915]]},
                 "properties": {"id": "road-7", "entity_type": "TrafficFlowObserved",
                                "averageVehicleSpeed": 18.0, "congested": true}},
                {"type": "Feature", "id": 1234,
                 "geometry": {"type": "Polygon", "coordinates": [[[116.3, 39.9], [116.31, 39.9], [116.31, 39.91], [116.3, 39.9]]]},
                 "properties": {"landuse": "park", "name": "Ritan"}},
                {"type": "Feature", "id": "lot-9",
                 "geometry": {"type": "MultiPolygon", "coordinates": [[[[116.5, 39.8], [116.51, 39.8], [116.51, 39.81], [116.5, 39.8]]]]},
                 "properties": {"type": "OffStreetParking", "availableSpotNumber": 12, "totalSpotNumber": 50, "status": ["open"]}},
                {"type": "Feature", "id": "nowhere", "geometry": null, "properties": {"note": "no geometry"}},
                {"type": "Feature", "geometry": {"type": "Point", "coordinates": [116.4, 39.9]}, "properties": {"name": "anonymous"}},
                {"type": "Feature", "id": "off-map", "geometry": {"type": "Point", "coordinates": [200, 39.9]}, "properties": {}},
                {"type": "Feature", "id": "bus-1", "geometry": {"type": "Point", "coordinates": [116.4, 39.9]},
                 "properties": {"type": "Vehicle", "speed": "fast"}},
                "not a feature"
            ]}"#,
        )
        .expect("payload decodes");

        let ids: Vec<&str> = decoded.updates.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["aq-1", "road-7", "1234", "lot-9", "nowhere"]);
        assert_eq!(
            reasons_and_ids(&decoded.rejects),
            [
                (RejectReason::MissingId, None),
                (RejectReason::BadCoordinates, Some("off-map")),
                (RejectReason::WrongValueType, Some("bus-1")),
                (RejectReason::NotAnObject, None),
            ]
        );

        let [air, road, park, lot, nowhere] =
            <[EntityUpdate; 5]>::try_from(decoded.updates).expect("five updates");
        assert_eq!(air.entity_type, "AirQualityObserved");
        assert_eq!(
            air.kind,
            EntityKind::AirQuality {
                aqi: Some(88.0),
                pm25: Some(35.5),
                pm10: None,
                no2: None,
                o3: None,
            }
        );
        assert_eq!(air.position, Some([116.417, 39.929]));
        assert_eq!(air.observed_at_ms, Some(MAY_FIRST_10H_MS));
        assert_eq!(field(&air, "name"), &FieldValue::Text("Dongsi".to_owned()));
        assert!(!air.fields.contains_key("type"));

        assert_eq!(road.entity_type, "TrafficFlowObserved");
        assert_eq!(
            road.kind,
            EntityKind::TrafficFlow {
                average_speed_kmh: Some(18.0),
                intensity: None,
                occupancy: None,
                congested: Some(true),
            }
        );
        assert_eq!(road.line, Some(vec![[116.39, 39.91], [116.40, 39.915]]));
        assert!(!road.fields.contains_key("id") && !road.fields.contains_key("entity_type"));

        assert_eq!(park.entity_type, "Feature");
        assert_eq!(park.kind, EntityKind::Generic);
        assert_eq!(park.position, Some([116.3, 39.9]));
        assert_eq!(
            field(&park, "landuse"),
            &FieldValue::Text("park".to_owned())
        );

        assert_eq!(
            lot.kind,
            EntityKind::Parking {
                available_spots: Some(12.0),
                total_spots: Some(50.0),
                status: Some("open".to_owned()),
            }
        );
        assert_eq!(lot.position, Some([116.5, 39.8]));

        assert_eq!(nowhere.position, None);
        assert_eq!(nowhere.observed_at_ms, None);
    }

    #[test]
    fn geojson_single_feature_and_other_geometries() {
        let decoded = decode_geojson(
            br#"{"type": "Feature", "id": "ring-road",
                 "geometry": {"type": "MultiLineString", "coordinates": [
                    [[116.1, 39.1], [116.2, 39.2]], [[116.3, 39.3], [116.4, 39.4]]]},
                 "properties": {"type": "TrafficFlowObserved", "intensity": 5}}"#,
        )
        .expect("payload decodes");
        assert_eq!(decoded.rejects, vec![]);
        assert_eq!(decoded.updates[0].position, Some([116.1, 39.1]));
        assert_eq!(
            decoded.updates[0].line,
            Some(vec![[116.1, 39.1], [116.2, 39.2]])
        );

        let deep_feature = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = format!(
            r#"{{"type": "FeatureCollection", "features": [
                {{"type": "Feature", "id": "stops", "geometry": {{"type": "MultiPoint", "coordinates": [[1, 2], [3, 4]]}}}},
                {{"type": "Feature", "id": "mixed", "geometry": {{"type": "GeometryCollection", "geometries": [
                    {{"type": "Point", "coordinates": [5, 6]}}, {{"type": "LineString", "coordinates": [[7, 8], [9, 10]]}}]}}}},
                {{"type": "Feature", "id": "bad-member", "geometry": {{"type": "GeometryCollection", "geometries": [
                    {{"type": "Point", "coordinates": [5, 6]}}, {{"type": "Point", "coordinates": [5, 96]}}]}}}},
                {{"type": "Feature", "id": "bad-properties", "geometry": null, "properties": 3}},
                {deep_feature}
            ]}}"#
        );
        let decoded = decode_geojson(body.as_bytes()).expect("payload decodes");
        let positions: Vec<_> = decoded
            .updates
            .iter()
            .map(|u| (u.id.as_str(), u.position))
            .collect();
        assert_eq!(
            positions,
            [("stops", Some([1.0, 2.0])), ("mixed", Some([5.0, 6.0]))]
        );
        assert_eq!(
            reasons_and_ids(&decoded.rejects),
            [
                (RejectReason::BadCoordinates, Some("bad-member")),
                (RejectReason::WrongValueType, Some("bad-properties")),
                (RejectReason::TooDeep, None),
            ]
        );
        assert_eq!(
            decoded.rejects[0].detail,
            "geometry.geometries[1].coordinates[1] = 96 is not a latitude"
        );
    }

    #[test]
    fn geojson_payload_level_failures() {
        for body in [
            r#"{"features": []}"#,
            r#"{"type": "Point", "coordinates": [1, 2]}"#,
            r#"{"type": "FeatureCollection"}"#,
            r#"{"type": "FeatureCollection", "features": {}}"#,
            r#"{"type": 7, "features": []}"#,
            "[]",
            "42",
        ] {
            let result = decode_geojson(body.as_bytes());
            assert!(
                matches!(result, Err(PayloadError::WrongShape(_))),
                "{body} → {result:?}"
            );
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for body in [
            "nope",
            r#"{"type": "FeatureCollection", "features": ["#,
            &deep,
        ] {
            let result = decode_geojson(body.as_bytes());
            assert!(
                matches!(result, Err(PayloadError::NotJson(_))),
                "{} → {result:?}",
                &body[..body.len().min(40)]
            );
        }
        assert_eq!(
            decode_geojson(br#"{"type": "FeatureCollection", "features": []}"#),
            Ok(Decoded::default())
        );
    }

    /// 2026-11-29T10:00:00Z, when the Smart Data Models fixtures were observed.
    const FIXTURE_HOUR_MS: i64 = 1_795_946_400_000;

    fn decode_all(decoded: Result<Decoded, PayloadError>) -> Vec<EntityUpdate> {
        let decoded = decoded.expect("payload decodes");
        assert_eq!(decoded.rejects, vec![], "unexpected rejects");
        decoded.updates
    }

    fn texts(items: &[&str]) -> FieldValue {
        FieldValue::List(
            items
                .iter()
                .map(|t| FieldValue::Text((*t).to_owned()))
                .collect(),
        )
    }

    fn unit<'a>(update: &'a EntityUpdate, name: &str) -> Option<&'a str> {
        update.units.get(name).map(String::as_str)
    }

    #[test]
    fn array_attributes_are_kept_as_lists() {
        let parking = decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/off-street-parking-normalized.jsonld"
        )));
        let kluuvi = &parking[0];
        assert_eq!(
            field(kluuvi, "allowedVehicleType"),
            &texts(&["car", "motorcycle"])
        );
        assert_eq!(
            field(kluuvi, "category"),
            &texts(&[
                "underground",
                "public",
                "feeCharged",
                "shortTerm",
                "barrierAccess"
            ])
        );
        // A Relationship to several entities is a list of their ids.
        assert_eq!(
            field(kluuvi, "refParkingSpot"),
            &texts(&[
                "urn:ngsi-ld:ParkingSpot:Helsinki-Kluuvi-P1-A001",
                "urn:ngsi-ld:ParkingSpot:Helsinki-Kluuvi-P1-A002"
            ])
        );
        assert_eq!(field(kluuvi, "status"), &texts(&["open"]));
        // An empty list is what the source said: kept, not lost.
        assert_eq!(field(kluuvi, "requiredPermit"), &FieldValue::List(vec![]));
        assert!(matches!(
            kluuvi.kind,
            EntityKind::Parking {
                available_spots: Some(132.0),
                ..
            }
        ));

        let [area] = <[EntityUpdate; 1]>::try_from(decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/restricted-traffic-area-normalized.jsonld"
        ))))
        .expect("one area");
        assert_eq!(area.kind, EntityKind::Generic);
        assert!(area.line.as_ref().is_some_and(|ring| ring.len() >= 4));
        for (name, len) in [
            ("allowedVehicleType", 4),
            ("notAllowedVehicleType", 3),
            ("category", 2),
            ("refRoadSegment", 2),
            ("seeAlso", 2),
        ] {
            let items = field(&area, name)
                .as_list()
                .unwrap_or_else(|| panic!("{name} is not a list: {:?}", area.fields.get(name)));
            assert_eq!(items.len(), len, "{name}");
        }

        let devices = decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/device-normalized.jsonld"
        )));
        assert_eq!(
            field(&devices[0], "controlledProperty"),
            &texts(&["airPollution", "temperature"])
        );
        assert_eq!(
            field(&devices[1], "controlledAsset")
                .as_list()
                .map(<[_]>::len),
            Some(2)
        );
    }

    #[test]
    fn arrays_of_objects_and_list_attributes() {
        let update = decode_one(
            r#"{"id": "urn:ngsi-ld:Thing:1", "type": "Thing",
                "openingHours": {"type": "Property", "value": [
                    {"day": "Mo", "opens": "08:00"}, {"day": "Tu", "opens": "09:00"}]},
                "readings": {"type": "ListProperty", "valueList": [1, 2.5, [3, 4]]},
                "members": {"type": "ListRelationship", "objectList": [
                    {"object": "urn:ngsi-ld:Person:a"}, {"object": "urn:ngsi-ld:Person:b"}]},
                "refSeeAlso": [
                    {"type": "Relationship", "object": "urn:ngsi-ld:Doc:1"},
                    {"type": "Relationship", "object": "urn:ngsi-ld:Doc:2"}],
                "dates": [{"@type": "DateTime", "@value": "2026-11-29T10:00:00Z"}],
                "tags": ["a", null, "b"]}"#,
        );
        // An array of objects: one field per member, numbered.
        assert_eq!(
            field(&update, "openingHours[1].opens"),
            &FieldValue::Text("09:00".to_owned())
        );
        assert_eq!(
            field(&update, "openingHours[0].day"),
            &FieldValue::Text("Mo".to_owned())
        );
        assert_eq!(
            field(&update, "readings"),
            &FieldValue::List(vec![
                FieldValue::Number(1.0),
                FieldValue::Number(2.5),
                FieldValue::List(vec![FieldValue::Number(3.0), FieldValue::Number(4.0)]),
            ])
        );
        assert_eq!(
            field(&update, "members"),
            &texts(&["urn:ngsi-ld:Person:a", "urn:ngsi-ld:Person:b"])
        );
        // Several instances none of which names a dataset: a list (as Smart Data
        // Models examples write a Relationship to several entities), not one of them.
        assert_eq!(
            field(&update, "refSeeAlso"),
            &texts(&["urn:ngsi-ld:Doc:1", "urn:ngsi-ld:Doc:2"])
        );
        assert_eq!(field(&update, "dates"), &texts(&["2026-11-29T10:00:00Z"]));
        assert_eq!(field(&update, "tags"), &texts(&["a", "b"]));
        assert_eq!(update.notes, vec![]);
    }

    #[test]
    fn hostile_arrays_are_cut_and_counted() {
        let million = format!("[{}0]", "0,".repeat(999_999));
        let nested = format!("[{}[]]", "[0,0],".repeat(5_000));
        let body = format!(
            r#"[{{"id": "urn:ngsi-ld:Thing:big", "type": "Thing", "speed": 3,
                "refSeeAlso": {{"type": "Relationship", "object": {million}}},
                "pairs": {nested}}}, {GOOD_AFTER}]"#
        );
        let decoded = decode_ngsi_ld(body.as_bytes()).expect("payload decodes");
        assert_eq!(decoded.rejects, vec![]);
        let big = &decoded.updates[0];
        let kept = field(big, "refSeeAlso").as_list().expect("a list").len();
        assert_eq!(kept, MAX_VALUES_PER_ATTRIBUTE);
        let pairs = field(big, "pairs").as_list().expect("a list");
        let kept_pairs: usize = pairs
            .iter()
            .map(|p| p.as_list().map_or(1, <[_]>::len))
            .sum();
        assert_eq!(kept_pairs, MAX_VALUES_PER_ATTRIBUTE);
        assert_eq!(
            big.notes,
            // Attributes are read in name order: `pairs` is cut first.
            vec![DecodeNote::ValuesCut {
                path: "pairs".to_owned(),
                cut: (1_000_000 - MAX_VALUES_PER_ATTRIBUTE + 10_000 - MAX_VALUES_PER_ATTRIBUTE)
                    as u64,
            }]
        );
        assert_eq!(field(big, "speed"), &FieldValue::Number(3.0));
        assert_eq!(decoded.updates[1].id, "urn:ngsi-ld:Vehicle:after");

        // An entity keeps at most MAX_VALUES_PER_ENTITY values over all attributes.
        let many: Vec<String> = (0..20)
            .map(|i| format!(r#""a{i:02}": [{}0]"#, "1,".repeat(999)))
            .collect();
        let wide = decode_one(&format!(
            r#"{{"id": "urn:ngsi-ld:Thing:wide", "type": "Thing", {}}}"#,
            many.join(",")
        ));
        let total: usize = wide
            .fields
            .values()
            .map(|v| v.as_list().map_or(1, <[_]>::len))
            .sum();
        assert_eq!(total, MAX_VALUES_PER_ENTITY);
        assert_eq!(
            wide.notes,
            vec![DecodeNote::ValuesCut {
                path: format!("a{:02}", MAX_VALUES_PER_ENTITY / 1000),
                cut: (20_000 - MAX_VALUES_PER_ENTITY) as u64,
            }]
        );
    }

    #[test]
    fn sub_properties_and_units_are_kept() {
        let stations = decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-normalized.jsonld"
        )));
        let [mannerheimintie, kaisaniemi] =
            <[EntityUpdate; 2]>::try_from(stations).expect("two stations");
        assert_eq!(field(&mannerheimintie, "no2"), &FieldValue::Number(38.5));
        // Upper-case pollutant names feed the typed values too.
        let typed_no2 = |e: &EntityUpdate| match e.kind {
            EntityKind::AirQuality { no2, .. } => no2,
            _ => None,
        };
        assert_eq!(typed_no2(&mannerheimintie), Some(38.5));
        assert_eq!(typed_no2(&kaisaniemi), Some(22.0));
        assert_eq!(unit(&mannerheimintie, "no2"), Some("GQ"));
        assert_eq!(
            field(&mannerheimintie, "no2.accuracy"),
            &FieldValue::Number(0.95)
        );
        assert_eq!(
            field(&mannerheimintie, "no2.observedBy"),
            &FieldValue::Text(
                "urn:ngsi-ld:Device:Helsinki-Mannerheimintie-NO2-analyser".to_owned()
            )
        );
        // observedAt is when, not a sub-property.
        assert!(!mannerheimintie.fields.contains_key("no2.observedAt"));
        assert!(!mannerheimintie.fields.contains_key("no2.unitCode"));
        assert_eq!(unit(&mannerheimintie, "co"), Some("GP"));
        assert_eq!(unit(&mannerheimintie, "temperature"), Some("CEL"));
        assert_eq!(unit(&mannerheimintie, "airQualityIndex"), None);
        assert_eq!(
            field(&mannerheimintie, "refDevice")
                .as_list()
                .map(<[_]>::len),
            Some(2)
        );
        assert_eq!(
            field(&mannerheimintie, "category"),
            &texts(&["urban", "traffic"])
        );
        assert_eq!(mannerheimintie.observed_at_ms, Some(FIXTURE_HOUR_MS));
        assert_eq!(
            crate::model::value_with_unit(
                field(&mannerheimintie, "no2"),
                unit(&mannerheimintie, "no2")
            ),
            "38.5 µg/m³"
        );
        assert_eq!(
            crate::model::value_with_unit(
                field(&mannerheimintie, "co"),
                unit(&mannerheimintie, "co")
            ),
            "0.3 mg/m³"
        );

        assert_eq!(field(&kaisaniemi, "NO2"), &FieldValue::Number(22.0));
        assert_eq!(unit(&kaisaniemi, "NO2"), Some("GQ"));
        assert_eq!(
            field(&kaisaniemi, "NO2.accuracy"),
            &FieldValue::Number(0.95)
        );
        assert_eq!(unit(&kaisaniemi, "CO"), Some("59"));
        assert_eq!(
            crate::model::value_with_unit(field(&kaisaniemi, "CO"), unit(&kaisaniemi, "CO")),
            "0.2 ppm"
        );
        assert_eq!(kaisaniemi.observed_at_ms, Some(FIXTURE_HOUR_MS));
    }

    #[test]
    fn a_converted_value_keeps_the_unit_it_was_converted_to() {
        let update = decode_one(
            r#"[{"id": "urn:ngsi-ld:TrafficFlowObserved:s1", "type": "TrafficFlowObserved",
                "averageVehicleSpeed": {"type": "Property", "value": 10, "unitCode": "MTS"},
                "occupancy": {"type": "Property", "value": 35, "unitCode": "P1"},
                "averageHeadwayTime": {"type": "Property", "value": 2.5, "unitCode": "SEC"}}]"#,
        );
        assert_eq!(
            field(&update, "averageVehicleSpeed"),
            &FieldValue::Number(36.0)
        );
        assert_eq!(unit(&update, "averageVehicleSpeed"), Some("KMH"));
        assert_eq!(field(&update, "occupancy"), &FieldValue::Number(0.35));
        assert_eq!(unit(&update, "occupancy"), Some("C62"));
        assert_eq!(unit(&update, "averageHeadwayTime"), Some("SEC"));

        let flows = decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/traffic-flow-observed-normalized.jsonld"
        )));
        assert_eq!(flows.len(), 3);
        assert_eq!(unit(&flows[0], "averageVehicleSpeed"), Some("KMH"));
        assert_eq!(
            field(&flows[0], "averageVehicleSpeed"),
            &FieldValue::Number(34.5)
        );
        assert!(flows.iter().all(|f| f.line.is_some()));

        // A generic value is kept as sent, told apart by its unit: 75 % is not 0.62.
        let devices = decode_all(decode_ngsi_ld(include_bytes!(
            "../../tests/data/sdm/device-normalized.jsonld"
        )));
        assert_eq!(
            field(&devices[0], "batteryLevel"),
            &FieldValue::Number(75.0)
        );
        assert_eq!(unit(&devices[0], "batteryLevel"), Some("P1"));
        assert_eq!(
            field(&devices[1], "batteryLevel"),
            &FieldValue::Number(0.62)
        );
        assert_eq!(unit(&devices[1], "batteryLevel"), None);
    }

    #[test]
    fn geojson_with_a_geoproperty_wrapper_in_geometry_lands_with_a_note() {
        let stations = decode_all(decode_geojson(include_bytes!(
            "../../tests/data/sdm/air-quality-observed-geojson.json"
        )));
        let positions: Vec<_> = stations.iter().map(|s| s.position).collect();
        assert_eq!(
            positions,
            [Some([24.9405, 60.1697]), Some([24.9446, 60.1752])]
        );
        for station in &stations {
            assert_eq!(station.entity_type, "AirQualityObserved");
            assert_eq!(
                station.notes,
                vec![DecodeNote::GeometryWrapped {
                    path: "geometry".to_owned()
                }]
            );
        }
        // The properties are normalized NGSI-LD: read like an NGSI-LD entity.
        assert_eq!(field(&stations[0], "no2"), &FieldValue::Number(38.5));
        assert_eq!(unit(&stations[0], "no2"), Some("GQ"));
        assert_eq!(
            field(&stations[0], "no2.accuracy"),
            &FieldValue::Number(0.95)
        );
        assert_eq!(stations[0].observed_at_ms, Some(FIXTURE_HOUR_MS));

        let [lot] = <[EntityUpdate; 1]>::try_from(decode_all(decode_geojson(include_bytes!(
            "../../tests/data/sdm/off-street-parking-geojson.json"
        ))))
        .expect("one car park");
        assert_eq!(lot.position, Some([24.947, 60.1712]));
        assert!(matches!(lot.kind, EntityKind::Parking { .. }));
        assert_eq!(
            lot.notes,
            vec![DecodeNote::GeometryWrapped {
                path: "geometry".to_owned()
            }]
        );
        assert_eq!(
            field(&lot, "allowedVehicleType"),
            &texts(&["car", "motorcycle"])
        );

        // A wrapped geometry that is wrong says where.
        let decoded = decode_geojson(
            br#"{"type": "Feature", "id": "x", "properties": {},
                 "geometry": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [24.9, 95]}}}"#,
        )
        .expect("payload decodes");
        assert_eq!(
            decoded.rejects[0].path.as_deref(),
            Some("geometry.value.coordinates[1]")
        );
    }

    #[test]
    fn ngsi_v2_normalized_is_read_as_ngsi_v2() {
        let body =
            include_bytes!("../../tests/data/sdm/air-quality-observed-ngsi-v2-normalized.json");
        for (decoded, note) in [
            (decode_ngsi_v2(body), vec![]),
            // An NGSI-LD feed that gets NGSI-v2 reads it right and says so.
            (decode_ngsi_ld(body), vec![DecodeNote::NgsiV2InNgsiLdFeed]),
        ] {
            let [mannerheimintie, kaisaniemi] =
                <[EntityUpdate; 2]>::try_from(decode_all(decoded)).expect("two stations");
            for station in [&mannerheimintie, &kaisaniemi] {
                assert_eq!(station.notes, note);
                assert_eq!(station.observed_at_ms, Some(FIXTURE_HOUR_MS));
                let garbled: Vec<_> = station
                    .fields
                    .keys()
                    .filter(|k| {
                        k.ends_with(".type") && !k.starts_with("address")
                            || k.ends_with(".value")
                            || k.contains("metadata")
                    })
                    .collect();
                assert_eq!(garbled, Vec::<&String>::new());
            }
            assert_eq!(field(&mannerheimintie, "no2"), &FieldValue::Number(38.5));
            assert_eq!(unit(&mannerheimintie, "no2"), Some("GQ"));
            assert_eq!(unit(&mannerheimintie, "co"), Some("GP"));
            assert!(matches!(
                mannerheimintie.kind,
                EntityKind::AirQuality {
                    aqi: Some(42.0),
                    no2: Some(38.5),
                    ..
                }
            ));
            assert_eq!(mannerheimintie.position, Some([24.9405, 60.1697]));
            assert_eq!(
                field(&mannerheimintie, "refDevice")
                    .as_list()
                    .map(<[_]>::len),
                Some(2)
            );
            assert_eq!(
                field(&mannerheimintie, "refPointOfInterest"),
                &FieldValue::Text(
                    "urn:ngsi-ld:PointOfInterest:AirQualityStation-Helsinki-Mannerheimintie"
                        .to_owned()
                )
            );
            assert_eq!(
                field(&mannerheimintie, "category"),
                &texts(&["urban", "traffic"])
            );
            assert_eq!(
                field(&mannerheimintie, "address.streetAddress"),
                &FieldValue::Text("Mannerheimintie 5".to_owned())
            );
            assert_eq!(field(&kaisaniemi, "no2"), &FieldValue::Number(22.0));
            assert_eq!(kaisaniemi.position, Some([24.9446, 60.1752]));
        }

        let devices = decode_all(decode_ngsi_v2(include_bytes!(
            "../../tests/data/sdm/device-ngsi-v2-normalized.json"
        )));
        assert_eq!(
            field(&devices[0], "batteryLevel"),
            &FieldValue::Number(0.75)
        );
        assert_eq!(
            field(&devices[1], "batteryLevel"),
            &FieldValue::Number(0.62)
        );
        assert!(!devices[0].fields.contains_key("batteryLevel.value"));
        assert_eq!(
            field(&devices[0], "controlledAsset")
                .as_list()
                .map(<[_]>::len),
            Some(2)
        );

        let key_values =
            include_bytes!("../../tests/data/sdm/air-quality-observed-ngsi-v2-keyvalues.json");
        for decoded in [decode_ngsi_v2(key_values), decode_ngsi_ld(key_values)] {
            let stations = decode_all(decoded);
            assert_eq!(field(&stations[0], "no2"), &FieldValue::Number(38.5));
            assert_eq!(field(&stations[1], "no2"), &FieldValue::Number(22.0));
            assert_eq!(stations[0].position, Some([24.9405, 60.1697]));
            assert_eq!(stations[0].observed_at_ms, Some(FIXTURE_HOUR_MS));
            assert_eq!(
                field(&stations[0], "category"),
                &texts(&["urban", "traffic"])
            );
            assert_eq!(stations[0].notes, vec![]);
        }
    }

    #[test]
    fn ngsi_v2_geometry_types_metadata_and_bad_values() {
        let decoded = decode_ngsi_v2(
            br#"[
              {"id": "pump-1", "type": "WaterPump",
               "location": {"type": "geo:point", "value": "60.1699, 24.9384", "metadata": {}},
               "pressure": {"type": "Number", "value": 3.1, "metadata": {
                   "unitCode": {"type": "Text", "value": "BAR"},
                   "TimeInstant": {"type": "DateTime", "value": "2026-11-29T10:00:00Z"},
                   "accuracy": {"type": "Number", "value": 0.1}}}},
              {"id": "pipe-1", "type": "Pipe",
               "location": {"type": "geo:line", "value": ["60.1699, 24.9384", "60.17, 24.94"]},
               "TimeInstant": {"type": "DateTime", "value": "2026-11-29T10:00:00Z"}},
              {"id": "pump-2", "type": "WaterPump",
               "location": {"type": "geo:point", "value": "95, 24.9"}},
              {"id": "pump-3", "type": "WaterPump",
               "pressure": {"type": "Number", "value": 3.1, "metadata": {
                   "TimeInstant": {"type": "DateTime", "value": "yesterday"}}}}
            ]"#,
        )
        .expect("payload decodes");
        let [pump, pipe] = <[EntityUpdate; 2]>::try_from(decoded.updates).expect("two land");
        assert_eq!(pump.position, Some([24.9384, 60.1699]));
        assert_eq!(field(&pump, "pressure"), &FieldValue::Number(3.1));
        assert_eq!(unit(&pump, "pressure"), Some("BAR"));
        assert_eq!(field(&pump, "pressure.accuracy"), &FieldValue::Number(0.1));
        assert_eq!(pump.observed_at_ms, Some(FIXTURE_HOUR_MS));
        assert!(!pump.fields.contains_key("pressure.TimeInstant"));
        assert_eq!(pipe.line, Some(vec![[24.9384, 60.1699], [24.94, 60.17]]));
        assert_eq!(pipe.observed_at_ms, Some(FIXTURE_HOUR_MS));
        let paths: Vec<_> = decoded
            .rejects
            .iter()
            .map(|r| (r.reason, r.item_id.as_deref(), r.path.as_deref()))
            .collect();
        assert_eq!(
            paths,
            [
                (
                    RejectReason::BadCoordinates,
                    Some("pump-2"),
                    Some("location.value")
                ),
                (
                    RejectReason::BadTimestamp,
                    Some("pump-3"),
                    Some("pressure.metadata.TimeInstant.value")
                ),
            ]
        );
    }

    #[test]
    fn every_reject_names_the_item_and_the_path() {
        let decoded = decode_ngsi_ld(include_bytes!("../../tests/data/sdm/rejects-mixed.jsonld"))
            .expect("payload decodes");
        assert_eq!(decoded.updates, vec![]);
        let found: Vec<_> = decoded
            .rejects
            .iter()
            .map(|r| (r.reason, r.item_id.as_deref(), r.path.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (RejectReason::MissingId, None, Some("id")),
                (
                    RejectReason::MissingType,
                    Some("urn:ngsi-ld:AirQualityObserved:Helsinki-Kaisaniemi-no-type"),
                    Some("type")
                ),
                (
                    RejectReason::BadCoordinates,
                    Some("urn:ngsi-ld:AirQualityObserved:Helsinki-centre-projected-metres"),
                    Some("location.value.coordinates[0]")
                ),
                (
                    RejectReason::WrongValueType,
                    Some(
                        "urn:ngsi-ld:TrafficFlowObserved:Helsinki-Mannerheimintie-N-lane2-speed-in-words"
                    ),
                    Some("averageVehicleSpeed.value")
                ),
                (
                    RejectReason::BadTimestamp,
                    Some("urn:ngsi-ld:AirQualityObserved:Helsinki-Kaisaniemi-local-date"),
                    Some("dateObserved.value")
                ),
            ]
        );
        // GeoJSON paths start at the feature.
        let decoded = decode_geojson(
            br#"{"type": "FeatureCollection", "features": [
                {"type": "Feature", "id": "bus-1", "geometry": null,
                 "properties": {"type": "Vehicle", "speed": {"type": "Property", "value": "fast"}}},
                {"type": "Feature", "id": "bus-2", "properties": {"type": "Vehicle", "speed": [
                    {"type": "Property", "value": 3, "datasetId": "urn:a"},
                    {"type": "Property", "value": 4, "observedAt": "soon"}]}}
            ]}"#,
        )
        .expect("payload decodes");
        let paths: Vec<_> = decoded.rejects.iter().map(|r| r.path.as_deref()).collect();
        assert_eq!(
            paths,
            [
                Some("properties.speed.value"),
                Some("properties.speed[1].observedAt")
            ]
        );
    }
}
