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
    Decoded, EntityKind, EntityUpdate, FieldValue, MAX_PAYLOAD_BYTES, PayloadError, Reject,
    RejectReason,
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

/// How much of a bad value a reject's detail quotes.
const DETAIL_EXCERPT_BYTES: usize = 64;

/// Decodes an NGSI-LD payload: a JSON array of entities (or a single entity object), each
/// in normalized or keyValues form.
pub fn decode_ngsi_ld(body: &[u8]) -> Result<Decoded, PayloadError> {
    let text = payload_text(body)?;
    match first_token(text) {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(not_json)?;
            Ok(decode_items(&items, decode_ngsi_ld_entity))
        }
        Some(b'{') => {
            let entity: Value = serde_json::from_str(text).map_err(not_json)?;
            Ok(collect_results([decode_ngsi_ld_entity(entity)]))
        }
        _ => Err(shape_error(
            text,
            "an array of NGSI-LD entities or a single entity",
        )),
    }
}

/// Decodes a GeoJSON payload: a FeatureCollection or a single Feature. A feature naming a
/// Smart Data Models type in `properties.type` (or `properties.entity_type`) is read like a
/// keyValues NGSI-LD entity; others decode as `Generic` with entity type `Feature`.
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

/// Parses an RFC 3339 date-time to Unix milliseconds: `2024-05-01T10:00:00Z`,
/// `2024-05-01T12:00:00.250+02:00`. Lenient where real feeds are: `t`/space separators,
/// lowercase `z`, `±hhmm` offsets, and no offset at all (read as UTC, as Smart Data Models
/// examples often omit it). Fractions beyond milliseconds are truncated.
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

    // Second 60 is RFC 3339's leap second; it rolls into the next minute.
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 60;
    if !valid {
        return None;
    }
    let local_secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((local_secs - offset_secs) * 1000 + millis)
}

/// The top of a GeoJSON document; `features` stays raw so each feature is parsed alone.
#[derive(Deserialize)]
struct GeoJsonTop<'a> {
    #[serde(rename = "type")]
    kind: Option<Value>,
    #[serde(borrow)]
    features: Option<&'a RawValue>,
}

/// Why one item failed, before the item's id is attached.
struct ItemError {
    reason: RejectReason,
    detail: String,
}

impl ItemError {
    fn new(reason: RejectReason, detail: String) -> Self {
        Self { reason, detail }
    }

    fn into_reject(self, item_id: Option<String>) -> Reject {
        Reject {
            reason: self.reason,
            item_id,
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
    decode_item: fn(Value) -> Result<EntityUpdate, Reject>,
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

fn decode_ngsi_ld_entity(item: Value) -> Result<EntityUpdate, Reject> {
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
            return Err(ItemError::new(RejectReason::MissingId, detail).into_reject(None));
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
        );
        return Err(error.into_reject(Some(id)));
    };
    let shape = match entity.get("location").and_then(attribute_value) {
        Some(geometry) => decode_geometry(geometry, "location"),
        None => Ok(Shape::default()),
    };
    decode_entity(id, entity_type, entity, shape, NGSI_LD_NON_FIELDS)
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
        );
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
            return Err(ItemError::new(RejectReason::WrongValueType, detail).into_reject(Some(id)));
        }
    };
    let entity_type = ["type", "entity_type"]
        .iter()
        .find_map(|key| properties.get(*key)?.as_str())
        .map(short_type_name)
        .filter(|name| !name.is_empty())
        .unwrap_or("Feature")
        .to_owned();
    let shape = match feature.get("geometry") {
        None | Some(Value::Null) => Ok(Shape::default()),
        Some(geometry) => decode_geometry(geometry, "geometry"),
    };
    decode_entity(id, entity_type, properties, shape, GEOJSON_NON_FIELDS)
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

fn decode_entity(
    id: String,
    entity_type: String,
    attributes: Map<String, Value>,
    shape: Result<Shape, ItemError>,
    non_fields: &[&str],
) -> Result<EntityUpdate, Reject> {
    match entity_parts(&entity_type, attributes, shape, non_fields) {
        Ok(parts) => Ok(EntityUpdate {
            id,
            entity_type,
            kind: parts.kind,
            position: parts.shape.position,
            line: parts.shape.line,
            observed_at_ms: parts.observed_at_ms,
            fields: parts.fields,
        }),
        Err(error) => Err(error.into_reject(Some(id))),
    }
}

fn entity_parts(
    entity_type: &str,
    attributes: Map<String, Value>,
    shape: Result<Shape, ItemError>,
    non_fields: &[&str],
) -> Result<EntityParts, ItemError> {
    let kind = interpret(entity_type, &attributes)?;
    let shape = shape?;
    let date_observed = match attributes.get("dateObserved").and_then(attribute_value) {
        Some(value) => Some(timestamp_ms(value, "dateObserved", "")?),
        None => None,
    };

    let mut fields = BTreeMap::new();
    let mut latest_observed_at = None;
    for (name, attribute) in attributes {
        if let Some(observed_at) = attribute_observed_at(&attribute) {
            let observed_at_ms = timestamp_ms(observed_at, &name, ".observedAt")?;
            latest_observed_at = latest_observed_at.max(Some(observed_at_ms));
        }
        if !non_fields.contains(&name.as_str()) {
            flatten_value(name, into_attribute_value(attribute), &mut fields);
        }
    }
    // The typed values are in this project's units (`unitCode` applied): the fields
    // under the same names say the same.
    for (name, value) in kind.numbers() {
        if let (Some(v), Some(FieldValue::Number(field))) = (value, fields.get_mut(name)) {
            *field = v;
        }
    }
    Ok(EntityParts {
        kind,
        shape,
        observed_at_ms: date_observed.or(latest_observed_at),
        fields,
    })
}

/// Reads the typed values of the Smart Data Models this project draws.
fn interpret(entity_type: &str, attributes: &Map<String, Value>) -> Result<EntityKind, ItemError> {
    let kind = match entity_type {
        "TrafficFlowObserved" => EntityKind::TrafficFlow {
            average_speed_kmh: number_attribute(attributes, "averageVehicleSpeed")?,
            intensity: number_attribute(attributes, "intensity")?,
            occupancy: number_attribute(attributes, "occupancy")?,
            congested: bool_attribute(attributes, "congested")?,
        },
        "AirQualityObserved" => EntityKind::AirQuality {
            aqi: number_attribute(attributes, "airQualityIndex")?,
            pm25: number_attribute(attributes, "pm25")?,
            pm10: number_attribute(attributes, "pm10")?,
            no2: number_attribute(attributes, "no2")?,
            o3: number_attribute(attributes, "o3")?,
        },
        "Vehicle" => EntityKind::Vehicle {
            vehicle_type: text_attribute(attributes, "vehicleType")?,
            speed_kmh: number_attribute(attributes, "speed")?,
            heading_deg: number_attribute(attributes, "heading")?,
            service_status: text_attribute(attributes, "serviceStatus")?,
        },
        "Alert" => EntityKind::Alert {
            category: text_attribute(attributes, "category")?,
            sub_category: text_attribute(attributes, "subCategory")?,
            severity: text_attribute(attributes, "severity")?,
            description: text_attribute(attributes, "description")?,
        },
        "OffStreetParking" => EntityKind::Parking {
            available_spots: number_attribute(attributes, "availableSpotNumber")?,
            total_spots: number_attribute(attributes, "totalSpotNumber")?,
            // Smart Data Models make parking `status` a list (`["open"]`); some feeds send
            // a plain string.
            status: typed_attribute(
                attributes,
                "status",
                "a string or list of strings",
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
fn number_attribute(attributes: &Map<String, Value>, name: &str) -> Result<Option<f64>, ItemError> {
    let value = typed_attribute(attributes, name, "a number", Value::as_f64)?;
    let code = attributes.get(name).and_then(unit_code);
    Ok(value.map(|v| code.map_or(v, |code| in_own_unit(name, code, v))))
}

fn bool_attribute(attributes: &Map<String, Value>, name: &str) -> Result<Option<bool>, ItemError> {
    typed_attribute(attributes, name, "a boolean", Value::as_bool)
}

fn text_attribute(
    attributes: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ItemError> {
    typed_attribute(attributes, name, "a string", |v| {
        v.as_str().map(str::to_owned)
    })
}

/// An attribute's value read as `T`; absent or null is `None`, any other JSON type is a
/// `WrongValueType` naming the attribute.
fn typed_attribute<T>(
    attributes: &Map<String, Value>,
    name: &str,
    expected: &str,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Result<Option<T>, ItemError> {
    let Some(value) = attributes.get(name).and_then(attribute_value) else {
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
        )),
    }
}

/// The member holding a normalized attribute's value, by its NGSI-LD `type`; `None` when
/// the object is a keyValues value itself (a GeoJSON geometry, an address...).
fn value_member(attribute: &Map<String, Value>) -> Option<&'static str> {
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

/// For a multi-attribute (several normalized instances told apart by `datasetId`), the
/// instance to read: the default one without a `datasetId`; without one, the newest
/// observation, then the smallest `datasetId` — never whichever the broker lists first.
fn default_instance(instances: &[Value]) -> Option<usize> {
    instances.first()?.as_object().and_then(value_member)?;
    if let Some(default) = instances
        .iter()
        .position(|instance| instance.get("datasetId").is_none())
    {
        return Some(default);
    }
    let key = |instance: &Value| {
        let observed = instance
            .get("observedAt")
            .and_then(|t| timestamp_ms(t, "", "").ok());
        let dataset = instance
            .get("datasetId")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        (observed, std::cmp::Reverse(dataset))
    };
    (0..instances.len()).max_by_key(|&i| key(&instances[i]))
}

/// The `unitCode` (UN/CEFACT) of an attribute's instance that is read.
fn unit_code(attribute: &Value) -> Option<&str> {
    match attribute {
        Value::Object(object) => object.get("unitCode").and_then(Value::as_str),
        Value::Array(instances) => unit_code(&instances[default_instance(instances)?]),
        _ => None,
    }
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

/// What an attribute holds in either representation; `None` for null.
fn attribute_value(attribute: &Value) -> Option<&Value> {
    let value = match attribute {
        Value::Object(object) => match value_member(object) {
            Some(member) => object.get(member)?,
            None => attribute,
        },
        Value::Array(instances) => match default_instance(instances) {
            Some(index) => return attribute_value(&instances[index]),
            None => attribute,
        },
        _ => attribute,
    };
    // A JSON-LD typed literal: `{"@type": "DateTime", "@value": "2024-..."}`.
    let value = value.get("@value").unwrap_or(value);
    (!value.is_null()).then_some(value)
}

/// [`attribute_value`], taking ownership so strings move into fields uncopied.
fn into_attribute_value(attribute: Value) -> Value {
    match attribute {
        Value::Object(mut object) => match value_member(&object) {
            Some(member) => object.remove(member).unwrap_or(Value::Null),
            None => Value::Object(object),
        },
        Value::Array(mut instances) => match default_instance(&instances) {
            Some(index) => into_attribute_value(instances.swap_remove(index)),
            None => Value::Array(instances),
        },
        other => other,
    }
}

fn attribute_observed_at(attribute: &Value) -> Option<&Value> {
    match attribute {
        Value::Object(object) if value_member(object).is_some() => {
            object.get("observedAt").filter(|time| !time.is_null())
        }
        Value::Array(instances) => {
            default_instance(instances).and_then(|index| attribute_observed_at(&instances[index]))
        }
        _ => None,
    }
}

/// Adds the scalars of `value` under `key`, nested objects as `key.member`; arrays and
/// nulls carry nothing a field can show.
fn flatten_value(key: String, value: Value, fields: &mut BTreeMap<String, FieldValue>) {
    match value {
        Value::Number(number) => {
            if let Some(number) = number.as_f64() {
                fields.insert(key, FieldValue::Number(number));
            }
        }
        Value::String(text) => {
            fields.insert(key, FieldValue::Text(text));
        }
        Value::Bool(flag) => {
            fields.insert(key, FieldValue::Bool(flag));
        }
        Value::Object(mut object) => {
            if let Some(literal) = object.remove("@value") {
                return flatten_value(key, literal, fields);
            }
            for (member, value) in object {
                flatten_value(format!("{key}.{member}"), value, fields);
            }
        }
        Value::Array(_) | Value::Null => {}
    }
}

/// A time attribute as Unix ms. An ISO 8601 interval (`start/end`, as some
/// TrafficFlowObserved sources send) dates the observation by its end.
fn timestamp_ms(value: &Value, attribute: &str, member: &str) -> Result<i64, ItemError> {
    let Some(text) = value.as_str() else {
        return Err(ItemError::new(
            RejectReason::BadTimestamp,
            format!(
                "{attribute}{member} is {}, not an RFC 3339 string",
                json_kind(value)
            ),
        ));
    };
    let end = text.rsplit('/').next().unwrap_or(text);
    parse_rfc3339_ms(end).ok_or_else(|| {
        ItemError::new(
            RejectReason::BadTimestamp,
            format!(
                "{attribute}{member} = {:?} is not an RFC 3339 time",
                excerpt(text)
            ),
        )
    })
}

/// Reads a GeoJSON geometry (Point, LineString, Polygon, Multi*, GeometryCollection):
/// every position is checked, the first one becomes the position, line strings keep
/// their whole line (a MultiLineString its first part) and polygons their outer ring.
fn decode_geometry(geometry: &Value, path: &str) -> Result<Shape, ItemError> {
    let Some(kind) = geometry.get("type").and_then(Value::as_str) else {
        return Err(bad_geometry(format!(
            "{path} is {}, not a GeoJSON geometry with a string `type`",
            json_kind(geometry)
        )));
    };
    if kind == "GeometryCollection" {
        let Some(Value::Array(members)) = geometry.get("geometries") else {
            return Err(bad_geometry(format!("{path} has no `geometries` array")));
        };
        let mut shape = Shape::default();
        for (index, member) in members.iter().enumerate() {
            let member_shape = decode_geometry(member, &format!("{path}.geometries[{index}]"))?;
            if shape.position.is_none() {
                shape = member_shape;
            }
        }
        if shape.position.is_none() {
            return Err(bad_geometry(format!("{path} has no positions")));
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
            )));
        }
    };
    let Some(coordinates) = geometry.get("coordinates") else {
        return Err(bad_geometry(format!("{path} has no `coordinates`")));
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
        return Err(bad_geometry(format!("{path} has no positions")));
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
        return Err(bad_geometry(format!(
            "{} is {}, not an array",
            path(),
            json_kind(value)
        )));
    };
    for (index, item) in items.iter().enumerate() {
        visit_positions(item, depth - 1, &|| format!("{}[{index}]", path()), visit)?;
    }
    Ok(())
}

/// A WGS84 `[lon, lat]` (altitude ignored).
fn position(value: &Value, path: &dyn Fn() -> String) -> Result<[f64; 2], ItemError> {
    let Some([lon, lat, ..]) = value.as_array().map(Vec::as_slice) else {
        return Err(bad_coordinates(format!(
            "{} is {}, not a [lon, lat] position",
            path(),
            json_kind(value)
        )));
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
    match value.as_f64() {
        Some(degrees) if degrees.is_finite() && degrees.abs() <= limit => Ok(degrees),
        Some(degrees) => Err(bad_coordinates(format!(
            "{}[{index}] = {degrees} is not a {what}",
            path()
        ))),
        None => Err(bad_coordinates(format!(
            "{}[{index}] is {}, not a number",
            path(),
            json_kind(value)
        ))),
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
    &text[..text.floor_char_boundary(DETAIL_EXCERPT_BYTES)]
}

fn ascii_digits(bytes: &[u8], at: usize, count: usize) -> Option<i64> {
    bytes.get(at..at + count)?.iter().try_fold(0, |acc, b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn expect_byte(bytes: &[u8], at: usize, allowed: &[u8]) -> Option<()> {
    allowed.contains(bytes.get(at)?).then_some(())
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
            ("2024-05-01T12:00:00.999+02:00", MAY_FIRST_10H_MS + 999),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59Z", -1000),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
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
            "location.coordinates[0] = 200 is not a longitude"
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
}
