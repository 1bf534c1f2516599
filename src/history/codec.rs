//! The history's compact encoding of state changes.
//!
//! A message holds records in the order they happened. Each record names its entity
//! by an index the encoder and the decoder both assign (the first record of an
//! entity carries its feed and id), and carries only what changed since that
//! entity's previous record: positions as deltas of 1e-7° steps (about a centimetre),
//! times as deltas, fields that changed, short strings (field names, types, texts
//! such as `onRoute`) once and then by index. A keyframe starts both sides afresh
//! ([`Encoder::reset`], [`Decoder::reset`]) and then lists every entity, so reading
//! can start at any keyframe.
//!
//! Numbers keep their exact value: integers and values with up to three decimals are
//! written as scaled integers, anything else as the 8 bytes of the `f64`.

use std::collections::{BTreeMap, HashMap};

use crate::model::{EntityKind, EntityUpdate, FeedId, FieldValue};

/// Positions are kept to this many steps per degree (1e-7°: about 1 cm).
pub const POSITION_STEPS: f64 = 1e7;

/// A decoded record: the state change it stands for.
// Nearly every one is an upsert: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Upsert {
        feed: FeedId,
        at_ms: i64,
        update: EntityUpdate,
    },
    Remove {
        feed: FeedId,
        at_ms: i64,
        id: String,
    },
}

impl Record {
    pub fn at_ms(&self) -> i64 {
        match self {
            Record::Upsert { at_ms, .. } | Record::Remove { at_ms, .. } => *at_ms,
        }
    }
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecError(pub String);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const OP_NEW: u8 = 0;
const OP_KNOWN: u8 = 1;
const OP_REMOVE: u8 = 2;
const HAS_POSITION: u8 = 1 << 2;
const HAS_OBSERVED: u8 = 1 << 3;
const KIND_CHANGED: u8 = 1 << 4;
const LINE_CHANGED: u8 = 1 << 5;
const UNITS_CHANGED: u8 = 1 << 6;
const NOTES_CHANGED: u8 = 1 << 7;
/// The second flags byte: the type changed; the kind is what the fields say
/// ([`derived_kind`]), so it is not written.
const TYPE_CHANGED: u8 = 1;
const KIND_DERIVED: u8 = 2;

/// The kind the decoders would read from these fields (the same attribute names),
/// a value no field gives kept from `base` (the entity's previous kind): when an
/// update's kind is this, the history writes nothing for it.
pub fn derived_kind(
    entity_type: &str,
    fields: &BTreeMap<String, FieldValue>,
    base: &EntityKind,
) -> EntityKind {
    let number = |k: &str| match fields.get(k) {
        Some(FieldValue::Number(n)) => Some(Some(*n)),
        Some(_) => Some(None),
        None => None,
    };
    let text = |k: &str| match fields.get(k) {
        Some(FieldValue::Text(t)) => Some(Some(t.clone())),
        Some(_) => Some(None),
        None => None,
    };
    let either = |lower: &str, upper: &str| {
        if fields.contains_key(lower) {
            number(lower)
        } else {
            number(upper)
        }
    };
    match (entity_type, base) {
        (
            "TrafficFlowObserved",
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                congested,
            },
        ) => EntityKind::TrafficFlow {
            average_speed_kmh: number("averageVehicleSpeed").unwrap_or(*average_speed_kmh),
            intensity: number("intensity").unwrap_or(*intensity),
            occupancy: number("occupancy").unwrap_or(*occupancy),
            congested: match fields.get("congested") {
                Some(FieldValue::Bool(b)) => Some(*b),
                Some(_) => None,
                None => *congested,
            },
        },
        (
            "AirQualityObserved",
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            },
        ) => EntityKind::AirQuality {
            aqi: number("airQualityIndex").unwrap_or(*aqi),
            pm25: either("pm25", "PM25").unwrap_or(*pm25),
            pm10: either("pm10", "PM10").unwrap_or(*pm10),
            no2: either("no2", "NO2").unwrap_or(*no2),
            o3: either("o3", "O3").unwrap_or(*o3),
        },
        (
            "Vehicle",
            EntityKind::Vehicle {
                vehicle_type,
                speed_kmh,
                heading_deg,
                service_status,
            },
        ) => EntityKind::Vehicle {
            vehicle_type: text("vehicleType").unwrap_or_else(|| vehicle_type.clone()),
            speed_kmh: number("speed").unwrap_or(*speed_kmh),
            heading_deg: number("heading").unwrap_or(*heading_deg),
            service_status: text("serviceStatus").unwrap_or_else(|| service_status.clone()),
        },
        (
            "Alert",
            EntityKind::Alert {
                category,
                sub_category,
                severity,
                description,
            },
        ) => EntityKind::Alert {
            category: text("category").unwrap_or_else(|| category.clone()),
            sub_category: text("subCategory").unwrap_or_else(|| sub_category.clone()),
            severity: text("severity").unwrap_or_else(|| severity.clone()),
            description: text("description").unwrap_or_else(|| description.clone()),
        },
        (
            "OffStreetParking",
            EntityKind::Parking {
                available_spots,
                total_spots,
                status,
            },
        ) => EntityKind::Parking {
            available_spots: number("availableSpotNumber").unwrap_or(*available_spots),
            total_spots: number("totalSpotNumber").unwrap_or(*total_spots),
            status: text("status").unwrap_or_else(|| status.clone()),
        },
        // A new entity, or one whose kind changed: written out.
        _ => base.clone(),
    }
}

const V_NONE: u8 = 0;
const V_FALSE: u8 = 1;
const V_TRUE: u8 = 2;
const V_INT: u8 = 3;
const V_DEC1: u8 = 4;
const V_DEC2: u8 = 5;
const V_DEC3: u8 = 6;
const V_F64: u8 = 7;
const V_TEXT: u8 = 8;
const V_LIST: u8 = 9;
const V_LONG_TEXT: u8 = 10;

/// Texts longer than this are written in full each time, not kept by index.
const SHORT_TEXT: usize = 48;

/// What both sides remember of one entity.
#[derive(Clone, Debug)]
struct Base {
    feed: FeedId,
    /// The time of the entity's last record.
    at_ms: i64,
    q: Option<[i64; 2]>,
    update: EntityUpdate,
    alive: bool,
}

/// Strings seen, by index (both sides assign the same indexes).
#[derive(Default)]
struct Strings {
    index: HashMap<String, u32>,
    list: Vec<String>,
}

fn quantize(p: [f64; 2]) -> [i64; 2] {
    [
        (p[0] * POSITION_STEPS).round() as i64,
        (p[1] * POSITION_STEPS).round() as i64,
    ]
}

fn unquantize(q: [i64; 2]) -> [f64; 2] {
    [q[0] as f64 / POSITION_STEPS, q[1] as f64 / POSITION_STEPS]
}

/// A position as the history keeps it (to 1e-7°).
pub fn kept_position(p: [f64; 2]) -> [f64; 2] {
    unquantize(quantize(p))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_signed(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Encodes state changes into messages; one per recording, fed every change in order.
#[derive(Default)]
pub struct Encoder {
    ids: HashMap<(FeedId, String), u32>,
    bases: Vec<Base>,
    strings: Strings,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (the start of a keyframe).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Entities alive as the encoder knows them (what a keyframe lists).
    pub fn alive(&self) -> impl Iterator<Item = (FeedId, &EntityUpdate)> {
        self.bases
            .iter()
            .filter(|b| b.alive)
            .map(|b| (b.feed, &b.update))
    }

    /// How many entities are alive.
    pub fn alive_count(&self) -> usize {
        self.bases.iter().filter(|b| b.alive).count()
    }

    /// A keyframe message: every alive entity as new, at the time of its last record;
    /// the encoder starts afresh with them. Returns how many entities it lists.
    pub fn keyframe(&mut self, base_ms: i64, out: &mut Vec<u8>) -> usize {
        let entities: Vec<(FeedId, i64, EntityUpdate)> = std::mem::take(&mut self.bases)
            .into_iter()
            .filter(|b| b.alive)
            .map(|b| (b.feed, b.at_ms, b.update))
            .collect();
        self.reset();
        let n = entities.len();
        for (feed, at_ms, update) in entities {
            self.upsert(base_ms, feed, at_ms, &update, out);
        }
        n
    }

    fn put_string(&mut self, out: &mut Vec<u8>, s: &str) {
        if let Some(&i) = self.strings.index.get(s) {
            put_varint(out, u64::from(i) + 1);
        } else {
            put_varint(out, 0);
            put_bytes(out, s.as_bytes());
            let i = self.strings.list.len() as u32;
            self.strings.list.push(s.to_string());
            self.strings.index.insert(s.to_string(), i);
        }
    }

    fn put_number(out: &mut Vec<u8>, v: f64) {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        let negative_zero = v == 0.0 && v.is_sign_negative();
        if v.is_finite() && !negative_zero && v.fract() == 0.0 && v.abs() < EXACT {
            out.push(V_INT);
            put_signed(out, v as i64);
            return;
        }
        if v.is_finite() && !negative_zero {
            for (tag, scale) in [(V_DEC1, 10.0), (V_DEC2, 100.0), (V_DEC3, 1000.0)] {
                let m = (v * scale).round();
                if m.abs() < EXACT && m / scale == v {
                    out.push(tag);
                    put_signed(out, m as i64);
                    return;
                }
            }
        }
        out.push(V_F64);
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn put_value(&mut self, out: &mut Vec<u8>, v: &FieldValue) {
        match v {
            FieldValue::Number(n) => Self::put_number(out, *n),
            FieldValue::Bool(b) => out.push(if *b { V_TRUE } else { V_FALSE }),
            FieldValue::Text(t) => self.put_text(out, t),
            FieldValue::List(items) => {
                out.push(V_LIST);
                put_varint(out, items.len() as u64);
                for item in items {
                    self.put_value(out, item);
                }
            }
        }
    }

    fn put_text(&mut self, out: &mut Vec<u8>, t: &str) {
        if t.len() <= SHORT_TEXT {
            out.push(V_TEXT);
            self.put_string(out, t);
        } else {
            out.push(V_LONG_TEXT);
            put_bytes(out, t.as_bytes());
        }
    }

    fn put_opt_number(out: &mut Vec<u8>, v: Option<f64>) {
        match v {
            Some(n) => Self::put_number(out, n),
            None => out.push(V_NONE),
        }
    }

    fn put_opt_text(&mut self, out: &mut Vec<u8>, v: &Option<String>) {
        match v {
            Some(t) => self.put_text(out, t),
            None => out.push(V_NONE),
        }
    }

    fn put_kind(&mut self, out: &mut Vec<u8>, kind: &EntityKind) {
        match kind {
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                congested,
            } => {
                out.push(0);
                Self::put_opt_number(out, *average_speed_kmh);
                Self::put_opt_number(out, *intensity);
                Self::put_opt_number(out, *occupancy);
                out.push(match congested {
                    None => V_NONE,
                    Some(false) => V_FALSE,
                    Some(true) => V_TRUE,
                });
            }
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            } => {
                out.push(1);
                for v in [aqi, pm25, pm10, no2, o3] {
                    Self::put_opt_number(out, *v);
                }
            }
            EntityKind::Vehicle {
                vehicle_type,
                speed_kmh,
                heading_deg,
                service_status,
            } => {
                out.push(2);
                self.put_opt_text(out, vehicle_type);
                Self::put_opt_number(out, *speed_kmh);
                Self::put_opt_number(out, *heading_deg);
                self.put_opt_text(out, service_status);
            }
            EntityKind::Alert {
                category,
                sub_category,
                severity,
                description,
            } => {
                out.push(3);
                for v in [category, sub_category, severity, description] {
                    self.put_opt_text(out, v);
                }
            }
            EntityKind::Parking {
                available_spots,
                total_spots,
                status,
            } => {
                out.push(4);
                Self::put_opt_number(out, *available_spots);
                Self::put_opt_number(out, *total_spots);
                self.put_opt_text(out, status);
            }
            EntityKind::Generic => out.push(5),
        }
    }

    fn put_line(out: &mut Vec<u8>, line: &Option<Vec<[f64; 2]>>) {
        match line {
            None => put_varint(out, 0),
            Some(points) => {
                put_varint(out, points.len() as u64 + 1);
                let mut last = [0i64; 2];
                for p in points {
                    let q = quantize(*p);
                    put_signed(out, q[0] - last[0]);
                    put_signed(out, q[1] - last[1]);
                    last = q;
                }
            }
        }
    }

    /// Encodes that `update` of `feed` was taken in at `at_ms`.
    pub fn upsert(
        &mut self,
        base_ms: i64,
        feed: FeedId,
        at_ms: i64,
        update: &EntityUpdate,
        out: &mut Vec<u8>,
    ) {
        let key = (feed, update.id.clone());
        let known = self
            .ids
            .get(&key)
            .copied()
            .filter(|&i| self.bases[i as usize].alive);
        let empty = EntityUpdate {
            id: String::new(),
            entity_type: String::new(),
            kind: EntityKind::Generic,
            position: None,
            line: None,
            observed_at_ms: None,
            fields: BTreeMap::new(),
            units: BTreeMap::new(),
            notes: Vec::new(),
        };
        let (index, base_q, base_update) = match known {
            Some(i) => {
                let b = &self.bases[i as usize];
                (i, b.q, b.update.clone())
            }
            None => (u32::MAX, None, empty),
        };
        let mut flags = if known.is_some() { OP_KNOWN } else { OP_NEW };
        if update.position.is_some() {
            flags |= HAS_POSITION;
        }
        if update.observed_at_ms.is_some() {
            flags |= HAS_OBSERVED;
        }
        // A new entity's kind is always written; a known one's only when the fields
        // do not say it.
        let derived = known.is_some()
            && derived_kind(&update.entity_type, &update.fields, &base_update.kind) == update.kind;
        if !derived && (known.is_none() || update.kind != base_update.kind) {
            flags |= KIND_CHANGED;
        }
        if update.line != base_update.line {
            flags |= LINE_CHANGED;
        }
        if update.units != base_update.units {
            flags |= UNITS_CHANGED;
        }
        if update.notes != base_update.notes {
            flags |= NOTES_CHANGED;
        }
        let type_changed = known.is_some() && update.entity_type != base_update.entity_type;
        out.push(flags);
        let mut more = if type_changed { TYPE_CHANGED } else { 0 };
        if derived {
            more |= KIND_DERIVED;
        }
        out.push(more);
        if known.is_some() {
            put_varint(out, u64::from(index));
            if type_changed {
                self.put_string(out, &update.entity_type);
            }
        } else {
            put_varint(out, u64::from(feed));
            put_bytes(out, update.id.as_bytes());
            self.put_string(out, &update.entity_type);
        }
        put_signed(out, at_ms - base_ms);
        if let Some(t) = update.observed_at_ms {
            put_signed(out, t - at_ms);
        }
        let q = update.position.map(quantize);
        if let Some(q) = q {
            let b = base_q.unwrap_or([0, 0]);
            put_signed(out, q[0] - b[0]);
            put_signed(out, q[1] - b[1]);
        }
        if flags & KIND_CHANGED != 0 {
            self.put_kind(out, &update.kind);
        }
        if flags & LINE_CHANGED != 0 {
            Self::put_line(out, &update.line);
        }
        // Fields: those gone, then those new or changed.
        let gone: Vec<&String> = base_update
            .fields
            .keys()
            .filter(|k| !update.fields.contains_key(*k))
            .collect();
        put_varint(out, gone.len() as u64);
        for k in gone {
            self.put_string(out, k);
        }
        let set: Vec<(&String, &FieldValue)> = update
            .fields
            .iter()
            .filter(|(k, v)| base_update.fields.get(*k) != Some(*v))
            .collect();
        put_varint(out, set.len() as u64);
        for (k, v) in set {
            self.put_string(out, k);
            self.put_value(out, v);
        }
        if flags & UNITS_CHANGED != 0 {
            put_varint(out, update.units.len() as u64);
            for (k, v) in &update.units {
                self.put_string(out, k);
                self.put_string(out, v);
            }
        }
        if flags & NOTES_CHANGED != 0 {
            let notes = serde_json::to_vec(&update.notes).unwrap_or_default();
            put_bytes(out, &notes);
        }
        let mut kept = update.clone();
        kept.position = q.map(unquantize);
        kept.line = update
            .line
            .as_ref()
            .map(|l| l.iter().map(|p| kept_position(*p)).collect());
        match known {
            Some(i) => {
                let b = &mut self.bases[i as usize];
                b.q = q;
                b.at_ms = at_ms;
                b.update = kept;
            }
            None => {
                let i = self.bases.len() as u32;
                self.bases.push(Base {
                    feed,
                    at_ms,
                    q,
                    update: kept,
                    alive: true,
                });
                self.ids.insert(key, i);
            }
        }
    }

    /// Encodes that `id` of `feed` went at `at_ms` (nothing when it was not known).
    pub fn remove(&mut self, base_ms: i64, feed: FeedId, id: &str, at_ms: i64, out: &mut Vec<u8>) {
        let Some(&i) = self.ids.get(&(feed, id.to_string())) else {
            return;
        };
        if !self.bases[i as usize].alive {
            return;
        }
        out.push(OP_REMOVE);
        put_varint(out, u64::from(i));
        put_signed(out, at_ms - base_ms);
        self.bases[i as usize].alive = false;
    }
}

/// Reads messages written by an [`Encoder`], in the same order.
#[derive(Default)]
pub struct Decoder {
    bases: Vec<Base>,
    strings: Vec<String>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> CodecError {
        CodecError(format!("{what} at byte {}", self.at))
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.at).ok_or_else(|| self.err("cut short"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    fn signed(&mut self) -> Result<i64, CodecError> {
        Ok(unzigzag(self.varint()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.varint()? as usize;
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("length past the end"))?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn text(&mut self) -> Result<String, CodecError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("text not UTF-8"))
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything (the start of a keyframe).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn string(&mut self, r: &mut Reader) -> Result<String, CodecError> {
        let i = r.varint()?;
        if i == 0 {
            let s = r.text()?;
            self.strings.push(s.clone());
            Ok(s)
        } else {
            self.strings
                .get(i as usize - 1)
                .cloned()
                .ok_or_else(|| r.err("unknown string index"))
        }
    }

    fn number(r: &mut Reader, tag: u8) -> Result<f64, CodecError> {
        Ok(match tag {
            V_INT => r.signed()? as f64,
            V_DEC1 => r.signed()? as f64 / 10.0,
            V_DEC2 => r.signed()? as f64 / 100.0,
            V_DEC3 => r.signed()? as f64 / 1000.0,
            V_F64 => {
                let end = r.at + 8;
                let b = r.buf.get(r.at..end).ok_or_else(|| r.err("cut short"))?;
                r.at = end;
                f64::from_le_bytes(b.try_into().expect("8 bytes"))
            }
            _ => return Err(r.err("not a number")),
        })
    }

    fn value(&mut self, r: &mut Reader, depth: u32) -> Result<Option<FieldValue>, CodecError> {
        if depth > 32 {
            return Err(r.err("lists nested too deep"));
        }
        let tag = r.byte()?;
        Ok(Some(match tag {
            V_NONE => return Ok(None),
            V_FALSE => FieldValue::Bool(false),
            V_TRUE => FieldValue::Bool(true),
            V_TEXT => FieldValue::Text(self.string(r)?),
            V_LONG_TEXT => FieldValue::Text(r.text()?),
            V_LIST => {
                let n = r.varint()? as usize;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let item = self
                        .value(r, depth + 1)?
                        .ok_or_else(|| r.err("a list item is none"))?;
                    items.push(item);
                }
                FieldValue::List(items)
            }
            tag => FieldValue::Number(Self::number(r, tag)?),
        }))
    }

    fn opt_number(&mut self, r: &mut Reader) -> Result<Option<f64>, CodecError> {
        match self.value(r, 0)? {
            None => Ok(None),
            Some(FieldValue::Number(n)) => Ok(Some(n)),
            Some(_) => Err(r.err("expected a number")),
        }
    }

    fn opt_text(&mut self, r: &mut Reader) -> Result<Option<String>, CodecError> {
        match self.value(r, 0)? {
            None => Ok(None),
            Some(FieldValue::Text(t)) => Ok(Some(t)),
            Some(_) => Err(r.err("expected a text")),
        }
    }

    fn kind(&mut self, r: &mut Reader) -> Result<EntityKind, CodecError> {
        Ok(match r.byte()? {
            0 => EntityKind::TrafficFlow {
                average_speed_kmh: self.opt_number(r)?,
                intensity: self.opt_number(r)?,
                occupancy: self.opt_number(r)?,
                congested: match r.byte()? {
                    V_NONE => None,
                    V_FALSE => Some(false),
                    V_TRUE => Some(true),
                    _ => return Err(r.err("expected a bool")),
                },
            },
            1 => EntityKind::AirQuality {
                aqi: self.opt_number(r)?,
                pm25: self.opt_number(r)?,
                pm10: self.opt_number(r)?,
                no2: self.opt_number(r)?,
                o3: self.opt_number(r)?,
            },
            2 => EntityKind::Vehicle {
                vehicle_type: self.opt_text(r)?,
                speed_kmh: self.opt_number(r)?,
                heading_deg: self.opt_number(r)?,
                service_status: self.opt_text(r)?,
            },
            3 => EntityKind::Alert {
                category: self.opt_text(r)?,
                sub_category: self.opt_text(r)?,
                severity: self.opt_text(r)?,
                description: self.opt_text(r)?,
            },
            4 => EntityKind::Parking {
                available_spots: self.opt_number(r)?,
                total_spots: self.opt_number(r)?,
                status: self.opt_text(r)?,
            },
            5 => EntityKind::Generic,
            _ => return Err(r.err("unknown kind")),
        })
    }

    /// Decodes one message, calling `each` with every record in order. Stops (without
    /// applying it) at the first record after `until_ms`, returning false then.
    pub fn decode(
        &mut self,
        base_ms: i64,
        message: &[u8],
        until_ms: i64,
        mut each: impl FnMut(Record),
    ) -> Result<bool, CodecError> {
        let mut r = Reader {
            buf: message,
            at: 0,
        };
        while r.at < message.len() {
            let flags = r.byte()?;
            let op = flags & 3;
            if op == OP_REMOVE {
                let i = r.varint()? as usize;
                let at_ms = base_ms.saturating_add(r.signed()?);
                let base = self
                    .bases
                    .get_mut(i)
                    .ok_or_else(|| CodecError(format!("unknown entity {i}")))?;
                if at_ms > until_ms {
                    return Ok(false);
                }
                base.alive = false;
                each(Record::Remove {
                    feed: base.feed,
                    at_ms,
                    id: base.update.id.clone(),
                });
                continue;
            }
            let more = if op == OP_KNOWN || op == OP_NEW {
                r.byte()?
            } else {
                0
            };
            let (index, feed, mut update, base_q) = if op == OP_KNOWN {
                let i = r.varint()? as usize;
                let base = self.bases.get(i).ok_or_else(|| r.err("unknown entity"))?;
                let (feed, mut update, q) = (base.feed, base.update.clone(), base.q);
                if more & TYPE_CHANGED != 0 {
                    update.entity_type = self.string(&mut r)?;
                }
                (Some(i), feed, update, q)
            } else if op == OP_NEW {
                let feed = FeedId::try_from(r.varint()?).map_err(|_| r.err("feed too large"))?;
                let id = r.text()?;
                let entity_type = self.string(&mut r)?;
                let update = EntityUpdate {
                    id,
                    entity_type,
                    kind: EntityKind::Generic,
                    position: None,
                    line: None,
                    observed_at_ms: None,
                    fields: BTreeMap::new(),
                    units: BTreeMap::new(),
                    notes: Vec::new(),
                };
                (None, feed, update, None)
            } else {
                return Err(r.err("unknown record"));
            };
            let at_ms = base_ms.saturating_add(r.signed()?);
            update.observed_at_ms = if flags & HAS_OBSERVED != 0 {
                Some(at_ms.saturating_add(r.signed()?))
            } else {
                None
            };
            let q = if flags & HAS_POSITION != 0 {
                let b = base_q.unwrap_or([0, 0]);
                Some([
                    b[0].saturating_add(r.signed()?),
                    b[1].saturating_add(r.signed()?),
                ])
            } else {
                None
            };
            update.position = q.map(unquantize);
            if flags & KIND_CHANGED != 0 {
                update.kind = self.kind(&mut r)?;
            }
            if flags & LINE_CHANGED != 0 {
                let n = r.varint()?;
                update.line = if n == 0 {
                    None
                } else {
                    let mut last = [0i64; 2];
                    let mut points = Vec::with_capacity((n as usize - 1).min(4096));
                    for _ in 1..n {
                        last = [
                            last[0].saturating_add(r.signed()?),
                            last[1].saturating_add(r.signed()?),
                        ];
                        points.push(unquantize(last));
                    }
                    Some(points)
                };
            }
            let gone = r.varint()?;
            for _ in 0..gone {
                let k = self.string(&mut r)?;
                update.fields.remove(&k);
            }
            let set = r.varint()?;
            for _ in 0..set {
                let k = self.string(&mut r)?;
                let v = self
                    .value(&mut r, 0)?
                    .ok_or_else(|| r.err("a field without a value"))?;
                update.fields.insert(k, v);
            }
            if flags & UNITS_CHANGED != 0 {
                let n = r.varint()?;
                update.units.clear();
                for _ in 0..n {
                    let k = self.string(&mut r)?;
                    let v = self.string(&mut r)?;
                    update.units.insert(k, v);
                }
            }
            if more & KIND_DERIVED != 0 {
                update.kind = derived_kind(&update.entity_type, &update.fields, &update.kind);
            }
            if flags & NOTES_CHANGED != 0 {
                let b = r.bytes()?;
                update.notes =
                    serde_json::from_slice(b).map_err(|e| CodecError(format!("notes: {e}")))?;
            }
            if at_ms > until_ms {
                return Ok(false);
            }
            match index {
                Some(i) => {
                    let b = &mut self.bases[i];
                    b.q = q;
                    b.at_ms = at_ms;
                    b.update = update.clone();
                    b.alive = true;
                }
                None => self.bases.push(Base {
                    feed,
                    at_ms,
                    q,
                    update: update.clone(),
                    alive: true,
                }),
            }
            each(Record::Upsert {
                feed,
                at_ms,
                update,
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vehicle(id: &str, lon: f64, lat: f64, speed: f64, at: i64) -> EntityUpdate {
        EntityUpdate {
            id: id.into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("bus".into()),
                speed_kmh: Some(speed),
                heading_deg: Some(90.0),
                service_status: Some("onRoute".into()),
            },
            position: Some([lon, lat]),
            line: None,
            observed_at_ms: Some(at),
            fields: [
                ("speed".to_string(), FieldValue::Number(speed)),
                ("vehicleType".to_string(), FieldValue::Text("bus".into())),
            ]
            .into_iter()
            .collect(),
            units: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    fn round_trip(records: &[Record]) -> Vec<Record> {
        let mut enc = Encoder::new();
        let mut buf = Vec::new();
        for r in records {
            match r {
                Record::Upsert {
                    feed,
                    at_ms,
                    update,
                } => enc.upsert(1000, *feed, *at_ms, update, &mut buf),
                Record::Remove { feed, at_ms, id } => enc.remove(1000, *feed, id, *at_ms, &mut buf),
            }
        }
        let mut out = Vec::new();
        let mut dec = Decoder::new();
        assert!(dec.decode(1000, &buf, i64::MAX, |r| out.push(r)).unwrap());
        out
    }

    #[test]
    fn every_kind_of_value_comes_back_exactly() {
        let mut a = vehicle("urn:bus:1", 24.9384123, 60.1698765, 32.4, 5_000);
        a.fields
            .insert("pi".into(), FieldValue::Number(std::f64::consts::PI));
        a.fields.insert("neg".into(), FieldValue::Number(-0.0));
        a.fields
            .insert("nan_free".into(), FieldValue::Number(-12.125));
        a.fields.insert("huge".into(), FieldValue::Number(1e300));
        a.fields.insert("ok".into(), FieldValue::Bool(true));
        a.fields.insert(
            "tags".into(),
            FieldValue::List(vec![
                FieldValue::Text("a".into()),
                FieldValue::List(vec![FieldValue::Number(1.5)]),
            ]),
        );
        a.fields
            .insert("long".into(), FieldValue::Text("长".repeat(100)));
        a.units.insert("speed".into(), "KMH".into());
        a.line = Some(vec![[24.9, 60.1], [24.91, 60.11], [24.9, 60.1]]);
        let mut b = a.clone();
        b.position = Some([24.9385, 60.1699]);
        b.fields.remove("pi");
        b.fields.insert("speed".into(), FieldValue::Number(40.0));
        b.entity_type = "Bus".into();
        b.kind = EntityKind::Generic;
        b.line = None;
        b.units.clear();
        let records = vec![
            Record::Upsert {
                feed: 3,
                at_ms: 1000,
                update: a.clone(),
            },
            Record::Upsert {
                feed: 3,
                at_ms: 2000,
                update: b.clone(),
            },
            Record::Remove {
                feed: 3,
                at_ms: 2500,
                id: "urn:bus:1".into(),
            },
            Record::Upsert {
                feed: 3,
                at_ms: 3000,
                update: a.clone(),
            },
        ];
        let out = round_trip(&records);
        assert_eq!(out.len(), 4);
        let kept = |mut u: EntityUpdate| {
            u.position = u.position.map(kept_position);
            u.line = u.line.map(|l| l.into_iter().map(kept_position).collect());
            u
        };
        for (got, want) in out.iter().zip(&records) {
            match (got, want) {
                (
                    Record::Upsert { update: g, .. },
                    Record::Upsert {
                        update: w, at_ms, ..
                    },
                ) => {
                    assert_eq!(g, &kept(w.clone()));
                    assert_eq!(got.at_ms(), *at_ms);
                }
                (g, w) => assert_eq!(g, w),
            }
        }
        // -0.0 stays negative, the hundred Chinese characters whole.
        let Record::Upsert { update, .. } = &out[0] else {
            panic!()
        };
        let FieldValue::Number(n) = update.fields["neg"] else {
            panic!()
        };
        assert!(n.is_sign_negative());
        assert!((update.position.unwrap()[0] - 24.9384123).abs() < 1e-9);
    }

    #[test]
    fn a_moving_vehicle_costs_a_few_bytes_an_update() {
        let mut enc = Encoder::new();
        let mut buf = Vec::new();
        enc.upsert(
            0,
            0,
            0,
            &vehicle("urn:bus:1", 24.9, 60.1, 30.0, 0),
            &mut buf,
        );
        let first = buf.len();
        for i in 1..=100 {
            let t = i * 1000;
            let v = vehicle(
                "urn:bus:1",
                24.9 + i as f64 * 0.00011,
                60.1 + i as f64 * 0.00007,
                30.0 + (i % 7) as f64 * 0.1,
                t,
            );
            enc.upsert(0, 0, t, &v, &mut buf);
        }
        let per_update = (buf.len() - first) as f64 / 100.0;
        assert!(per_update < 24.0, "{per_update} bytes an update");
    }

    #[test]
    fn a_keyframe_lets_a_fresh_decoder_start_there() {
        let mut enc = Encoder::new();
        let mut head = Vec::new();
        enc.upsert(0, 1, 10, &vehicle("a", 1.0, 2.0, 3.0, 10), &mut head);
        enc.upsert(0, 1, 20, &vehicle("b", 1.0, 2.0, 3.0, 20), &mut head);
        enc.remove(0, 1, "a", 30, &mut head);
        let mut key = Vec::new();
        assert_eq!(enc.keyframe(100, &mut key), 1);
        let mut tail = Vec::new();
        enc.upsert(100, 1, 120, &vehicle("b", 1.5, 2.0, 4.0, 120), &mut tail);
        let mut dec = Decoder::new();
        let mut seen = Vec::new();
        dec.decode(100, &key, i64::MAX, |r| seen.push(r)).unwrap();
        dec.decode(100, &tail, i64::MAX, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 2);
        let Record::Upsert { update, .. } = &seen[1] else {
            panic!()
        };
        assert_eq!(update.id, "b");
        assert_eq!(update.position, Some([1.5, 2.0]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut state = 0x1234_5678_u64;
        for n in 0..20_000 {
            let len = n % 64;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let mut dec = Decoder::new();
            let _ = dec.decode(0, &bytes, i64::MAX, |_| {});
        }
    }
}
