//! Numbers apart from the rest: a replay's fast path.
//!
//! A replay hands the frame one second of recorded changes per frame at 60×: tens of
//! thousands of vehicles that moved and whose speed changed, nothing else. Its reading
//! thread tells such a change by the update's [`UpdateShape`] (everything that is not a
//! number, a place or a time) being the same as the entity's previous one, and hands
//! the frame just the [`Numbers`] and the place, already projected. The frame writes
//! them into the entity ([`LiveState::apply_numbers`]) when its state holds the entity
//! with that very shape (a tag set by [`LiveState::set_shape`] after the whole update
//! was applied), and otherwise applies the whole update: the outcome is the same as
//! [`LiveState::apply_ref`]'s either way.

use std::collections::BTreeMap;

use super::{ApplyOutcome, LiveState, Slot, local_after, timing};
use crate::model::{DecodeNote, EntityKind, EntityUpdate, FeedId, FieldValue};

/// The parts of an update that are not numbers, a place or a time: its type, its
/// kind's text and flags, its fields' names and non-numeric values, units, notes and
/// line.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateShape {
    entity_type: String,
    kind: EntityKind,
    /// Each field's name, and its value when it is not a number.
    fields: Vec<(String, Option<FieldValue>)>,
    units: BTreeMap<String, String>,
    notes: Vec<DecodeNote>,
    line: Option<Vec<[f64; 2]>>,
}

impl UpdateShape {
    pub fn of(u: &EntityUpdate) -> Self {
        let mut kind = u.kind.clone();
        kind.set_number_values([None; 5]);
        Self {
            entity_type: u.entity_type.clone(),
            kind,
            fields: u
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::Number(_) => None,
                        other => Some(other.clone()),
                    };
                    (k.clone(), v)
                })
                .collect(),
            units: u.units.clone(),
            notes: u.notes.clone(),
            line: u.line.clone(),
        }
    }

    /// The update of this shape with `id`, place, time and `numbers` ([`Self::of`]
    /// undone: `of(u).rebuild(&u.id, ...)` is `u`).
    pub fn rebuild(&self, id: &str, u: &NumbersUpdate) -> EntityUpdate {
        let mut kind = self.kind.clone();
        kind.set_number_values(u.numbers.kind);
        let mut numbers = u.numbers.fields().iter();
        EntityUpdate {
            id: id.to_string(),
            entity_type: self.entity_type.clone(),
            kind,
            position: u.position,
            line: self.line.clone(),
            observed_at_ms: u.observed_at_ms,
            fields: self
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Some(v) => v.clone(),
                        None => FieldValue::Number(numbers.next().copied().unwrap_or(f64::NAN)),
                    };
                    (k.clone(), v)
                })
                .collect(),
            units: self.units.clone(),
            notes: self.notes.clone(),
        }
    }

    /// Whether `u` has this shape (nothing is copied).
    pub fn matches(&self, u: &EntityUpdate) -> bool {
        self.entity_type == u.entity_type
            && self.kind.same_apart_from_numbers(&u.kind)
            && self.fields.len() == u.fields.len()
            && self.fields.iter().zip(&u.fields).all(|((k, v), (uk, uv))| {
                k == uk
                    && match (v, uv) {
                        (None, FieldValue::Number(_)) => true,
                        (Some(v), uv) => v == uv,
                        (None, _) => false,
                    }
            })
            && self.units == u.units
            && self.notes == u.notes
            && self.line == u.line
    }
}

/// An update's numbers: its kind's ([`EntityKind::number_values`]) and its numeric
/// fields' in field order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Numbers {
    pub kind: [Option<f64>; 5],
    fields: [f64; Numbers::MAX_FIELDS],
    field_count: u8,
}

impl Numbers {
    /// Updates with more numeric fields take the whole path.
    pub const MAX_FIELDS: usize = 8;

    pub fn of(u: &EntityUpdate) -> Option<Self> {
        let mut n = Numbers {
            kind: u.kind.number_values(),
            fields: [0.0; Self::MAX_FIELDS],
            field_count: 0,
        };
        for v in u.fields.values() {
            if let FieldValue::Number(x) = v {
                *n.fields.get_mut(n.field_count as usize)? = *x;
                n.field_count += 1;
            }
        }
        Some(n)
    }

    fn fields(&self) -> &[f64] {
        &self.fields[..self.field_count as usize]
    }
}

/// One update's place, time and numbers, for [`LiveState::apply_numbers`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumbersUpdate {
    pub feed: FeedId,
    pub received_at_ms: i64,
    pub observed_at_ms: Option<i64>,
    pub position: Option<[f64; 2]>,
    /// `position` in the state's frame, projected by the caller.
    pub local: Option<[f64; 2]>,
    pub numbers: Numbers,
}

impl LiveState {
    /// Marks the entity in `slot` as holding an update of the shape tagged `tag` (a
    /// replay's, after applying the whole update); 0 marks it as unknown.
    pub fn set_shape(&mut self, slot: Slot, tag: u64) {
        if let Some(t) = self.shapes.get_mut(slot as usize) {
            *t = tag;
        }
    }

    /// Applies an update whose shape (tagged `tag`) is the one the entity in `slot`
    /// holds: only its place, times and numbers are written. `None` when the entity
    /// is not there with that shape (apply the whole update instead); else what
    /// [`Self::apply_ref`] of the whole update would have done.
    pub fn apply_numbers(
        &mut self,
        slot: Slot,
        tag: u64,
        u: &NumbersUpdate,
    ) -> Option<ApplyOutcome> {
        if tag == 0 || self.shapes.get(slot as usize) != Some(&tag) {
            return None;
        }
        let entity = self.entities.get_mut(slot as usize)?.as_mut()?;
        if entity.feed != u.feed {
            return None;
        }
        // As `check`, for an update equal to the entity but for its numbers.
        let numbers = u.numbers.fields();
        let as_of = match timing(entity, u.observed_at_ms, u.received_at_ms, |e| {
            u.position == e.position
                && e.kind.number_values() == u.numbers.kind
                && e.fields
                    .values()
                    .filter_map(FieldValue::as_f64)
                    .eq(numbers.iter().copied())
        }) {
            Ok(as_of) => as_of,
            Err(outcome) => return Some(outcome),
        };
        entity.kind.set_number_values(u.numbers.kind);
        let mut next = numbers.iter();
        for v in entity.fields.values_mut() {
            // As `copy_changed_fields`: a value equal to the one there (0 and -0)
            // leaves it.
            if let FieldValue::Number(x) = v
                && let Some(n) = next.next()
                && *x != *n
            {
                *x = *n;
            }
        }
        let local = local_after(entity, u.position, || u.local);
        let outcome = self.changed_in_place(
            u.feed,
            slot,
            local,
            u.received_at_ms,
            as_of,
            u.position,
            u.observed_at_ms,
        );
        // changed_in_place forgets the shape (as every other change does): it stands.
        self.shapes[slot as usize] = tag;
        Some(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo_frame::GeoFrame;

    fn bus(lon: f64, speed: f64, status: &str, observed: Option<i64>) -> EntityUpdate {
        EntityUpdate {
            id: "bus-1".into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Vehicle {
                vehicle_type: Some("bus".into()),
                speed_kmh: Some(speed),
                heading_deg: Some(90.0),
                service_status: Some(status.into()),
            },
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: observed,
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

    fn numbers(state: &LiveState, u: &EntityUpdate, at: i64) -> NumbersUpdate {
        NumbersUpdate {
            feed: 0,
            received_at_ms: at,
            observed_at_ms: u.observed_at_ms,
            position: u.position,
            local: u
                .position
                .map(|[lon, lat]| state.frame().local_from_wgs84(lon, lat)),
            numbers: Numbers::of(u).unwrap(),
        }
    }

    /// Each odd path of `check` gives the same outcome and the same entity written from
    /// numbers as from the whole update: moved, the same again, older, untimed.
    #[test]
    fn numbers_apply_as_the_whole_update_does() {
        let frame = GeoFrame::new(24.94, 60.17);
        let (mut fast, mut whole) = (LiveState::new(frame), LiveState::new(frame));
        let first = bus(24.94, 30.0, "onRoute", Some(1_000));
        fast.apply_ref(0, &first, 1_100);
        whole.apply_ref(0, &first, 1_100);
        let slot = fast.slot_of(0, "bus-1").unwrap();
        let tag = 7 << 32 | 1;
        let shape = UpdateShape::of(&first);
        // Not tagged yet: the whole update is needed.
        assert_eq!(
            fast.apply_numbers(slot, tag, &numbers(&fast, &first, 1_200)),
            None
        );
        fast.set_shape(slot, tag);
        for (u, at, outcome) in [
            (
                bus(24.941, 32.5, "onRoute", Some(2_000)),
                2_100,
                ApplyOutcome::Updated,
            ),
            (
                bus(24.941, 32.5, "onRoute", Some(2_000)),
                2_200,
                ApplyOutcome::Duplicate,
            ),
            (
                bus(24.945, 10.0, "onRoute", Some(1_500)),
                2_300,
                ApplyOutcome::OutOfOrder,
            ),
            (
                bus(24.941, 32.5, "onRoute", None),
                3_000,
                ApplyOutcome::Duplicate,
            ),
            (
                bus(24.942, 33.0, "onRoute", None),
                4_000,
                ApplyOutcome::Updated,
            ),
            (
                bus(24.942, 33.0, "onRoute", Some(5_000)),
                5_100,
                ApplyOutcome::Updated,
            ),
        ] {
            assert!(shape.matches(&u));
            let got = fast.apply_numbers(slot, tag, &numbers(&fast, &u, at));
            assert_eq!(got, Some(outcome), "{u:?}");
            assert_eq!(whole.apply_ref(0, &u, at), outcome);
            assert_eq!(fast.get(0, "bus-1"), whole.get(0, "bus-1"), "{u:?}");
        }
        let mut a = fast.drain_changed();
        a.sort_unstable();
        assert_eq!(a, whole.drain_changed());
        // A number equal to the one there (0 and -0) leaves it, bit for bit, as the
        // whole update's field copy does.
        for (u, at) in [
            (bus(24.9425, 0.0, "onRoute", Some(5_500)), 5_600),
            (bus(24.943, -0.0, "onRoute", Some(5_800)), 5_900),
        ] {
            fast.apply_numbers(slot, tag, &numbers(&fast, &u, at))
                .unwrap();
            whole.apply_ref(0, &u, at);
        }
        let speed = |s: &LiveState| match s.get(0, "bus-1").unwrap().fields["speed"] {
            FieldValue::Number(x) => x.to_bits(),
            _ => unreachable!(),
        };
        assert_eq!(speed(&fast), speed(&whole));
        // Another shape (the text changed) is not this one; a wrong tag is refused;
        // a change made another way forgets the tag.
        assert!(!shape.matches(&bus(24.942, 33.0, "parked", None)));
        let u = bus(24.944, 34.0, "onRoute", Some(6_000));
        assert_eq!(
            fast.apply_numbers(slot, tag + 1, &numbers(&fast, &u, 6_100)),
            None
        );
        fast.apply_ref(0, &bus(24.943, 34.0, "parked", Some(6_000)), 6_100);
        assert_eq!(
            fast.apply_numbers(slot, tag, &numbers(&fast, &u, 7_000)),
            None
        );
        // A removed entity is not written.
        fast.set_shape(slot, tag);
        fast.remove(0, "bus-1");
        assert_eq!(
            fast.apply_numbers(slot, tag, &numbers(&fast, &u, 8_000)),
            None
        );
    }

    #[test]
    fn an_update_rebuilt_from_its_shape_and_numbers_is_itself() {
        let mut u = bus(24.94, 30.0, "onRoute", Some(1_000));
        u.fields.insert("congestion".into(), FieldValue::Bool(true));
        u.fields.insert(
            "allowed".into(),
            FieldValue::List(vec![FieldValue::Number(1.0), FieldValue::Text("x".into())]),
        );
        u.fields.insert("zz".into(), FieldValue::Number(-0.0));
        u.units.insert("speed".into(), "KMH".into());
        u.line = Some(vec![[24.9, 60.1], [24.91, 60.11]]);
        let mut traffic = u.clone();
        traffic.kind = EntityKind::TrafficFlow {
            average_speed_kmh: Some(40.0),
            intensity: None,
            occupancy: Some(0.3),
            congested: Some(false),
        };
        for u in [u, traffic, bus(24.95, f64::NAN, "parked", None)] {
            let shape = UpdateShape::of(&u);
            let state = LiveState::new(GeoFrame::new(24.94, 60.17));
            let n = numbers(&state, &u, 5);
            let back = shape.rebuild(&u.id, &n);
            // Debug output compares NaN and -0 exactly.
            assert_eq!(format!("{back:?}"), format!("{u:?}"));
            assert!(shape.matches(&back));
        }
    }

    #[test]
    fn more_numeric_fields_than_kept_take_the_whole_path() {
        let mut u = bus(24.94, 30.0, "onRoute", Some(1_000));
        for i in 0..Numbers::MAX_FIELDS {
            u.fields
                .insert(format!("n{i}"), FieldValue::Number(i as f64));
        }
        assert_eq!(Numbers::of(&u), None);
    }
}
