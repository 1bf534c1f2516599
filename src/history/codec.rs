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

/// A record as the decoder hands it over: borrowed from the decoder's own state, so
/// nothing is copied unless the caller keeps it ([`Change::to_record`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change<'a> {
    Upsert {
        feed: FeedId,
        at_ms: i64,
        update: &'a EntityUpdate,
    },
    Remove {
        feed: FeedId,
        at_ms: i64,
        id: &'a str,
    },
}

impl Change<'_> {
    pub fn at_ms(&self) -> i64 {
        match self {
            Change::Upsert { at_ms, .. } | Change::Remove { at_ms, .. } => *at_ms,
        }
    }

    /// The record, owned.
    pub fn to_record(&self) -> Record {
        match *self {
            Change::Upsert {
                feed,
                at_ms,
                update,
            } => Record::Upsert {
                feed,
                at_ms,
                update: update.clone(),
            },
            Change::Remove { feed, at_ms, id } => Record::Remove {
                feed,
                at_ms,
                id: id.to_string(),
            },
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
/// ([`derive_kind`]), so it is not written.
const TYPE_CHANGED: u8 = 1;
const KIND_DERIVED: u8 = 2;

/// The kind the decoders would read from these fields (the same attribute names),
/// worked out in place from `kind`, the entity's previous kind, which keeps any value
/// no field gives; nothing is allocated for a text that did not change. When an
/// update's kind is this, the history writes nothing for it.
pub fn derive_kind(
    entity_type: &str,
    fields: &BTreeMap<String, FieldValue>,
    kind: &mut EntityKind,
) {
    let number = |k: &str, slot: &mut Option<f64>| match fields.get(k) {
        Some(FieldValue::Number(n)) => *slot = Some(*n),
        Some(_) => *slot = None,
        None => {}
    };
    let text = |k: &str, slot: &mut Option<String>| match fields.get(k) {
        Some(FieldValue::Text(t)) if slot.as_deref() == Some(t.as_str()) => {}
        Some(FieldValue::Text(t)) => *slot = Some(t.clone()),
        Some(_) => *slot = None,
        None => {}
    };
    let either = |lower: &str, upper: &str, slot: &mut Option<f64>| {
        if fields.contains_key(lower) {
            number(lower, slot)
        } else {
            number(upper, slot)
        }
    };
    match (entity_type, kind) {
        (
            "TrafficFlowObserved",
            EntityKind::TrafficFlow {
                average_speed_kmh,
                intensity,
                occupancy,
                congested,
            },
        ) => {
            number("averageVehicleSpeed", average_speed_kmh);
            number("intensity", intensity);
            number("occupancy", occupancy);
            match fields.get("congested") {
                Some(FieldValue::Bool(b)) => *congested = Some(*b),
                Some(_) => *congested = None,
                None => {}
            }
        }
        (
            "AirQualityObserved",
            EntityKind::AirQuality {
                aqi,
                pm25,
                pm10,
                no2,
                o3,
            },
        ) => {
            number("airQualityIndex", aqi);
            either("pm25", "PM25", pm25);
            either("pm10", "PM10", pm10);
            either("no2", "NO2", no2);
            either("o3", "O3", o3);
        }
        (
            "Vehicle",
            EntityKind::Vehicle {
                vehicle_type,
                speed_kmh,
                heading_deg,
                service_status,
            },
        ) => {
            text("vehicleType", vehicle_type);
            number("speed", speed_kmh);
            number("heading", heading_deg);
            text("serviceStatus", service_status);
        }
        (
            "Alert",
            EntityKind::Alert {
                category,
                sub_category,
                severity,
                description,
            },
        ) => {
            text("category", category);
            text("subCategory", sub_category);
            text("severity", severity);
            text("description", description);
        }
        (
            "OffStreetParking",
            EntityKind::Parking {
                available_spots,
                total_spots,
                status,
            },
        ) => {
            number("availableSpotNumber", available_spots);
            number("totalSpotNumber", total_spots);
            text("status", status);
        }
        // A new entity, or one whose kind changed: written out.
        _ => {}
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

/// An entity with nothing known of it (what a new entity is written against).
static EMPTY: EntityUpdate = EntityUpdate {
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

/// Encodes state changes into messages; one per recording, fed every change in order.
#[derive(Default)]
pub struct Encoder {
    /// Entity indexes by feed, then id (looked up without copying the id).
    ids: HashMap<FeedId, HashMap<String, u32>>,
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

    /// Encodes that `update` of `feed` was taken in at `at_ms`.
    pub fn upsert(
        &mut self,
        base_ms: i64,
        feed: FeedId,
        at_ms: i64,
        update: &EntityUpdate,
        out: &mut Vec<u8>,
    ) {
        let Encoder {
            ids,
            bases,
            strings,
        } = self;
        let known = ids
            .get(&feed)
            .and_then(|m| m.get(update.id.as_str()))
            .copied()
            .filter(|&i| bases[i as usize].alive);
        let mut flags = if known.is_some() { OP_KNOWN } else { OP_NEW };
        if update.position.is_some() {
            flags |= HAS_POSITION;
        }
        if update.observed_at_ms.is_some() {
            flags |= HAS_OBSERVED;
        }
        // A new entity's kind is always written; a known one's only when the fields
        // do not say it. The kind the fields give is worked out in the entity's own
        // state (taken out for that), so nothing is copied when it is unchanged.
        let derived = match known {
            Some(i) => {
                let base = &mut bases[i as usize].update;
                let mut kind = std::mem::replace(&mut base.kind, EntityKind::Generic);
                let before_matches = kind == update.kind;
                derive_kind(&update.entity_type, &update.fields, &mut kind);
                let derived = kind == update.kind;
                if !derived && !before_matches {
                    flags |= KIND_CHANGED;
                }
                // Put back; the entity's state takes the update's kind at the end
                // (with nothing to copy when it was derived).
                base.kind = kind;
                derived
            }
            None => {
                flags |= KIND_CHANGED;
                false
            }
        };
        let (base_q, base_update): (Option<[i64; 2]>, &EntityUpdate) = match known {
            Some(i) => {
                let b = &bases[i as usize];
                (b.q, &b.update)
            }
            None => (None, &EMPTY),
        };
        let line_changed = !same_line(&update.line, &base_update.line);
        if line_changed {
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
        match known {
            Some(index) => {
                put_varint(out, u64::from(index));
                if type_changed {
                    strings.put_string(out, &update.entity_type);
                }
            }
            None => {
                put_varint(out, u64::from(feed));
                put_bytes(out, update.id.as_bytes());
                strings.put_string(out, &update.entity_type);
            }
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
            strings.put_kind(out, &update.kind);
        }
        if line_changed {
            put_line(out, &update.line);
        }
        // Fields: those gone, then those new or changed.
        let gone = base_update
            .fields
            .keys()
            .filter(|k| !update.fields.contains_key(*k));
        put_varint(out, gone.clone().count() as u64);
        for k in gone {
            strings.put_string(out, k);
        }
        let set = update
            .fields
            .iter()
            .filter(|(k, v)| base_update.fields.get(*k) != Some(*v));
        put_varint(out, set.clone().count() as u64);
        for (k, v) in set {
            strings.put_string(out, k);
            strings.put_value(out, v);
        }
        if flags & UNITS_CHANGED != 0 {
            put_varint(out, update.units.len() as u64);
            for (k, v) in &update.units {
                strings.put_string(out, k);
                strings.put_string(out, v);
            }
        }
        if flags & NOTES_CHANGED != 0 {
            let notes = serde_json::to_vec(&update.notes).unwrap_or_default();
            put_bytes(out, &notes);
        }
        let kept_line = |line: &Option<Vec<[f64; 2]>>| {
            line.as_ref()
                .map(|l| l.iter().map(|p| kept_position(*p)).collect())
        };
        match known {
            Some(i) => {
                // The entity's state takes what changed, in place.
                let b = &mut bases[i as usize];
                b.q = q;
                b.at_ms = at_ms;
                let kept = &mut b.update;
                if type_changed {
                    kept.entity_type.clone_from(&update.entity_type);
                }
                if kept.kind != update.kind {
                    kept.kind = update.kind.clone();
                }
                kept.position = q.map(unquantize);
                kept.observed_at_ms = update.observed_at_ms;
                if line_changed {
                    kept.line = kept_line(&update.line);
                }
                crate::model::copy_changed_fields(&mut kept.fields, &update.fields);
                if flags & UNITS_CHANGED != 0 {
                    kept.units.clone_from(&update.units);
                }
                if flags & NOTES_CHANGED != 0 {
                    kept.notes.clone_from(&update.notes);
                }
            }
            None => {
                let mut kept = update.clone();
                kept.position = q.map(unquantize);
                kept.line = kept_line(&update.line);
                let i = bases.len() as u32;
                bases.push(Base {
                    feed,
                    at_ms,
                    q,
                    update: kept,
                    alive: true,
                });
                ids.entry(feed).or_default().insert(update.id.clone(), i);
            }
        }
    }

    /// Encodes that `id` of `feed` went at `at_ms` (nothing when it was not known).
    pub fn remove(&mut self, base_ms: i64, feed: FeedId, id: &str, at_ms: i64, out: &mut Vec<u8>) {
        let Some(&i) = self.ids.get(&feed).and_then(|m| m.get(id)) else {
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

/// A line as the history keeps it equals `kept` (the one kept before).
fn same_line(line: &Option<Vec<[f64; 2]>>, kept: &Option<Vec<[f64; 2]>>) -> bool {
    match (line, kept) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(p, k)| kept_position(*p) == *k)
        }
        _ => false,
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

fn put_opt_number(out: &mut Vec<u8>, v: Option<f64>) {
    match v {
        Some(n) => put_number(out, n),
        None => out.push(V_NONE),
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

impl Strings {
    fn put_string(&mut self, out: &mut Vec<u8>, s: &str) {
        if let Some(&i) = self.index.get(s) {
            put_varint(out, u64::from(i) + 1);
        } else {
            put_varint(out, 0);
            put_bytes(out, s.as_bytes());
            let i = self.list.len() as u32;
            self.list.push(s.to_string());
            self.index.insert(s.to_string(), i);
        }
    }

    fn put_value(&mut self, out: &mut Vec<u8>, v: &FieldValue) {
        match v {
            FieldValue::Number(n) => put_number(out, *n),
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
                put_opt_number(out, *average_speed_kmh);
                put_opt_number(out, *intensity);
                put_opt_number(out, *occupancy);
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
                    put_opt_number(out, *v);
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
                put_opt_number(out, *speed_kmh);
                put_opt_number(out, *heading_deg);
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
                put_opt_number(out, *available_spots);
                put_opt_number(out, *total_spots);
                self.put_opt_text(out, status);
            }
            EntityKind::Generic => out.push(5),
        }
    }
}

/// Reads messages written by an [`Encoder`], in the same order. Each record is
/// applied in place to the decoder's own state of its entity, which is what it hands
/// over (borrowed): reading copies nothing.
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

    /// The entities alive as decoded so far: feed, time of the last record, state.
    pub fn alive(&self) -> impl Iterator<Item = (FeedId, i64, &EntityUpdate)> {
        self.bases
            .iter()
            .filter(|b| b.alive)
            .map(|b| (b.feed, b.at_ms, &b.update))
    }

    /// Decodes one message from byte `from` (0, or where an earlier call stopped),
    /// applying each record to the decoder's state and handing it to `each`, in
    /// order. Stops before the first record after `until_ms`, leaving it unread and
    /// returning its offset to go on from; `None` when the message is done.
    pub fn decode(
        &mut self,
        base_ms: i64,
        message: &[u8],
        from: usize,
        until_ms: i64,
        mut each: impl FnMut(Change<'_>),
    ) -> Result<Option<usize>, CodecError> {
        let Decoder { bases, strings } = self;
        let mut r = Reader {
            buf: message,
            at: from,
        };
        while r.at < message.len() {
            let start = r.at;
            let strings_before = strings.len();
            let flags = r.byte()?;
            let op = flags & 3;
            if op == OP_REMOVE {
                let i = r.varint()? as usize;
                let at_ms = base_ms.saturating_add(r.signed()?);
                let base = bases
                    .get_mut(i)
                    .ok_or_else(|| CodecError(format!("unknown entity {i}")))?;
                if at_ms > until_ms {
                    return Ok(Some(start));
                }
                base.alive = false;
                each(Change::Remove {
                    feed: base.feed,
                    at_ms,
                    id: &base.update.id,
                });
                continue;
            }
            if op != OP_KNOWN && op != OP_NEW {
                return Err(r.err("unknown record"));
            }
            let more = r.byte()?;
            let index = if op == OP_KNOWN {
                let i = r.varint()? as usize;
                if i >= bases.len() {
                    return Err(r.err("unknown entity"));
                }
                let new_type = if more & TYPE_CHANGED != 0 {
                    Some(read_string(strings, &mut r)?)
                } else {
                    None
                };
                let at_ms = base_ms.saturating_add(r.signed()?);
                if at_ms > until_ms {
                    strings.truncate(strings_before);
                    return Ok(Some(start));
                }
                let b = &mut bases[i];
                if let Some(t) = new_type {
                    b.update.entity_type.clone_from(&strings[t]);
                }
                b.at_ms = at_ms;
                i
            } else {
                let feed = FeedId::try_from(r.varint()?).map_err(|_| r.err("feed too large"))?;
                let id = r.bytes()?;
                let entity_type = read_string(strings, &mut r)?;
                let at_ms = base_ms.saturating_add(r.signed()?);
                if at_ms > until_ms {
                    strings.truncate(strings_before);
                    return Ok(Some(start));
                }
                let id = std::str::from_utf8(id).map_err(|_| r.err("text not UTF-8"))?;
                bases.push(Base {
                    feed,
                    at_ms,
                    q: None,
                    update: EntityUpdate {
                        id: id.to_string(),
                        entity_type: strings[entity_type].clone(),
                        ..EMPTY.clone()
                    },
                    // Alive once wholly read: a record cut short by damage is no
                    // entity anyone was handed.
                    alive: false,
                });
                bases.len() - 1
            };
            let b = &mut bases[index];
            let at_ms = b.at_ms;
            let update = &mut b.update;
            update.observed_at_ms = if flags & HAS_OBSERVED != 0 {
                Some(at_ms.saturating_add(r.signed()?))
            } else {
                None
            };
            b.q = if flags & HAS_POSITION != 0 {
                let base_q = if op == OP_KNOWN { b.q } else { None };
                let q = base_q.unwrap_or([0, 0]);
                Some([
                    q[0].saturating_add(r.signed()?),
                    q[1].saturating_add(r.signed()?),
                ])
            } else {
                None
            };
            update.position = b.q.map(unquantize);
            if flags & KIND_CHANGED != 0 {
                update.kind = read_kind(strings, &mut r)?;
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
                let k = read_string(strings, &mut r)?;
                update.fields.remove(strings[k].as_str());
            }
            let set = r.varint()?;
            for _ in 0..set {
                let k = read_string(strings, &mut r)?;
                let v = read_value(strings, &mut r, 0)?
                    .ok_or_else(|| r.err("a field without a value"))?;
                match update.fields.get_mut(strings[k].as_str()) {
                    Some(slot) => *slot = v,
                    None => {
                        update.fields.insert(strings[k].clone(), v);
                    }
                }
            }
            if flags & UNITS_CHANGED != 0 {
                let n = r.varint()?;
                update.units.clear();
                for _ in 0..n {
                    let k = read_string(strings, &mut r)?;
                    let v = read_string(strings, &mut r)?;
                    update.units.insert(strings[k].clone(), strings[v].clone());
                }
            }
            if more & KIND_DERIVED != 0 {
                derive_kind(&update.entity_type, &update.fields, &mut update.kind);
            }
            if flags & NOTES_CHANGED != 0 {
                let b = r.bytes()?;
                update.notes =
                    serde_json::from_slice(b).map_err(|e| CodecError(format!("notes: {e}")))?;
            }
            let b = &mut bases[index];
            b.alive = true;
            let b = &bases[index];
            each(Change::Upsert {
                feed: b.feed,
                at_ms,
                update: &b.update,
            });
        }
        Ok(None)
    }
}

/// Reads a string (new, or by index) and returns its index in `strings`.
fn read_string(strings: &mut Vec<String>, r: &mut Reader) -> Result<usize, CodecError> {
    let i = r.varint()?;
    if i == 0 {
        let s = r.text()?;
        strings.push(s);
        Ok(strings.len() - 1)
    } else if (i as usize) <= strings.len() {
        Ok(i as usize - 1)
    } else {
        Err(r.err("unknown string index"))
    }
}

fn read_number(r: &mut Reader, tag: u8) -> Result<f64, CodecError> {
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

fn read_value(
    strings: &mut Vec<String>,
    r: &mut Reader,
    depth: u32,
) -> Result<Option<FieldValue>, CodecError> {
    if depth > 32 {
        return Err(r.err("lists nested too deep"));
    }
    let tag = r.byte()?;
    Ok(Some(match tag {
        V_NONE => return Ok(None),
        V_FALSE => FieldValue::Bool(false),
        V_TRUE => FieldValue::Bool(true),
        V_TEXT => {
            let i = read_string(strings, r)?;
            FieldValue::Text(strings[i].clone())
        }
        V_LONG_TEXT => FieldValue::Text(r.text()?),
        V_LIST => {
            let n = r.varint()? as usize;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let item = read_value(strings, r, depth + 1)?
                    .ok_or_else(|| r.err("a list item is none"))?;
                items.push(item);
            }
            FieldValue::List(items)
        }
        tag => FieldValue::Number(read_number(r, tag)?),
    }))
}

fn read_opt_number(strings: &mut Vec<String>, r: &mut Reader) -> Result<Option<f64>, CodecError> {
    match read_value(strings, r, 0)? {
        None => Ok(None),
        Some(FieldValue::Number(n)) => Ok(Some(n)),
        Some(_) => Err(r.err("expected a number")),
    }
}

fn read_opt_text(strings: &mut Vec<String>, r: &mut Reader) -> Result<Option<String>, CodecError> {
    match read_value(strings, r, 0)? {
        None => Ok(None),
        Some(FieldValue::Text(t)) => Ok(Some(t)),
        Some(_) => Err(r.err("expected a text")),
    }
}

fn read_kind(strings: &mut Vec<String>, r: &mut Reader) -> Result<EntityKind, CodecError> {
    let n = read_opt_number;
    let t = read_opt_text;
    Ok(match r.byte()? {
        0 => EntityKind::TrafficFlow {
            average_speed_kmh: n(strings, r)?,
            intensity: n(strings, r)?,
            occupancy: n(strings, r)?,
            congested: match r.byte()? {
                V_NONE => None,
                V_FALSE => Some(false),
                V_TRUE => Some(true),
                _ => return Err(r.err("expected a bool")),
            },
        },
        1 => EntityKind::AirQuality {
            aqi: n(strings, r)?,
            pm25: n(strings, r)?,
            pm10: n(strings, r)?,
            no2: n(strings, r)?,
            o3: n(strings, r)?,
        },
        2 => EntityKind::Vehicle {
            vehicle_type: t(strings, r)?,
            speed_kmh: n(strings, r)?,
            heading_deg: n(strings, r)?,
            service_status: t(strings, r)?,
        },
        3 => EntityKind::Alert {
            category: t(strings, r)?,
            sub_category: t(strings, r)?,
            severity: t(strings, r)?,
            description: t(strings, r)?,
        },
        4 => EntityKind::Parking {
            available_spots: n(strings, r)?,
            total_spots: n(strings, r)?,
            status: t(strings, r)?,
        },
        5 => EntityKind::Generic,
        _ => return Err(r.err("unknown kind")),
    })
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
        assert_eq!(
            dec.decode(1000, &buf, 0, i64::MAX, |c| out.push(c.to_record()))
                .unwrap(),
            None
        );
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
        dec.decode(100, &key, 0, i64::MAX, |c| seen.push(c.to_record()))
            .unwrap();
        dec.decode(100, &tail, 0, i64::MAX, |c| seen.push(c.to_record()))
            .unwrap();
        assert_eq!(seen.len(), 2);
        let Record::Upsert { update, .. } = &seen[1] else {
            panic!()
        };
        assert_eq!(update.id, "b");
        assert_eq!(update.position, Some([1.5, 2.0]));
    }

    #[test]
    fn stopping_at_an_instant_and_going_on_reads_every_record_once() {
        // New entities, a new type string and removals inside one message, stopped
        // at every instant and resumed where it stopped.
        let mut enc = Encoder::new();
        let mut buf = Vec::new();
        let mut written = Vec::new();
        for t in 1..=40i64 {
            let id = format!("v{}", t % 7);
            let mut v = vehicle(&id, 1.0 + t as f64 * 1e-4, 2.0, t as f64, t);
            if t % 5 == 0 {
                v.entity_type = format!("Type{t}");
                v.kind = EntityKind::Generic;
            }
            enc.upsert(0, 1, t, &v, &mut buf);
            written.push(t);
            if t % 9 == 0 {
                enc.remove(0, 1, "v3", t, &mut buf);
                written.push(t);
            }
        }
        let mut whole = Vec::new();
        Decoder::new()
            .decode(0, &buf, 0, i64::MAX, |c| whole.push(c.to_record()))
            .unwrap();
        assert_eq!(whole.len(), written.len());
        for step in [1, 3, 7] {
            let mut dec = Decoder::new();
            let mut seen = Vec::new();
            let mut from = 0;
            let mut until = 0;
            while let Some(stopped) = dec
                .decode(0, &buf, from, until, |c| {
                    assert!(c.at_ms() <= until);
                    seen.push(c.to_record())
                })
                .unwrap()
            {
                from = stopped;
                until += step;
            }
            assert_eq!(seen, whole, "in steps of {step} ms");
        }
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
            let _ = dec.decode(0, &bytes, 0, i64::MAX, |_| {});
        }
    }
}
