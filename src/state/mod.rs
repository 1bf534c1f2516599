//! Live state: every entity every feed reports, keyed by (feed, id), versioned, with
//! out-of-order and duplicate updates ignored and an R-tree kept current for picking
//! and nearest queries. Fed in batches; the scene reads what changed since last frame.
//!
//! Ordering uses each entity's `as_of_ms`: the source's observation time when it gives
//! one that is not in the future, otherwise the time we received it. It never goes
//! backwards, so an untimed update cannot open the door to an older reading, and a
//! future-dated reading cannot freeze an entity until that date.
//!
//! Entities leave: a feed's complete snapshot without them, a push feed's delete, or
//! expiry after going unreported too long ([`LiveState::remove`]). Their slot becomes
//! empty (never reused, so nothing that still holds the slot finds another entity)
//! and is reported as changed, so the scene removes what it drew.
//!
//! The R-tree is bulk-loaded again on the first query after positions changed, not
//! patched on every update: moving fleets update far more often than anyone queries,
//! and one bulk load (~10 ms per 100k entities) is much cheaper than 100k removals and
//! insertions.

pub mod kpi;
pub mod numbers;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rstar::primitives::GeomWithData;
use rstar::{AABB, RTree};

use crate::geo_frame::GeoFrame;
use crate::model::{DecodeNote, EntityKind, EntityUpdate, FieldValue};

pub use crate::model::FeedId;
/// A slot in [`LiveState`]'s entity table: stable for the entity's lifetime.
pub type Slot = u32;

/// An observation more than this far ahead of the receiving clock is in the future:
/// flagged by the quality rules and ordered by its receive time instead.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// The time an update's values are taken to be as of: its observation time when given
/// and not in the future, else its receive time.
pub fn as_of_ms(observed_at_ms: Option<i64>, received_at_ms: i64) -> i64 {
    match observed_at_ms {
        Some(t) if t - received_at_ms <= MAX_CLOCK_SKEW_MS => t,
        _ => received_at_ms,
    }
}

/// How far a feed's entities are to be trusted, set by the ingest from the feed's
/// configuration and health.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FeedStanding {
    /// An entity whose values are older than this is stale (greyed, left out of KPIs).
    pub stale_after_ms: Option<i64>,
    /// The feed is quarantined: its entities are held out (greyed, left out of KPIs
    /// and reconciliation).
    pub quarantined: bool,
}

/// Whether one entity's values can be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Current,
    /// Values older than the feed's stale limit.
    Stale,
    /// Its feed is quarantined.
    Quarantined,
}

type IndexPoint = GeomWithData<[f64; 2], Slot>;

/// The current view of one entity.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveEntity {
    pub feed: FeedId,
    pub id: String,
    pub entity_type: String,
    pub kind: EntityKind,
    /// WGS84 `[lon, lat]`.
    pub position: Option<[f64; 2]>,
    /// Local metres (east, north) of `position`.
    pub local: Option<[f64; 2]>,
    pub line: Option<Vec<[f64; 2]>>,
    /// The observation time the source gave (shown as is, even when in the future).
    pub observed_at_ms: Option<i64>,
    pub received_at_ms: i64,
    /// What the values are as of (see [`as_of_ms`]): orders updates and ages the entity.
    pub as_of_ms: i64,
    /// When a feed last reported this entity (changed or not).
    pub seen_at_ms: i64,
    /// Accepted updates so far (1 after the first).
    pub version: u64,
    pub fields: BTreeMap<String, FieldValue>,
    /// Field → UN/CEFACT unit code of its value (see [`EntityUpdate::units`]).
    pub units: BTreeMap<String, String>,
    /// What the decoder changed or left out of the latest update.
    pub notes: Vec<DecodeNote>,
}

impl LiveEntity {
    /// The entity as the update that would set it now (for code that reads updates).
    pub fn to_update(&self) -> EntityUpdate {
        EntityUpdate {
            id: self.id.clone(),
            entity_type: self.entity_type.clone(),
            kind: self.kind.clone(),
            position: self.position,
            line: self.line.clone(),
            observed_at_ms: self.observed_at_ms,
            fields: self.fields.clone(),
            units: self.units.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// What applying one update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    Inserted,
    Updated,
    /// Older than what we have: ignored.
    OutOfOrder,
    /// Same observation again: ignored.
    Duplicate,
}

/// Entities by slot, in chunks of fixed size: a growing city never moves the entities
/// already there (one `Vec` doubling at 131,072 entities moves ~50 MB in one frame).
#[derive(Default)]
struct SlotTable {
    chunks: Vec<Vec<Option<LiveEntity>>>,
    len: usize,
}

impl SlotTable {
    const CHUNK: usize = 4096;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&Option<LiveEntity>> {
        self.chunks.get(i / Self::CHUNK)?.get(i % Self::CHUNK)
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<LiveEntity>> {
        self.chunks
            .get_mut(i / Self::CHUNK)?
            .get_mut(i % Self::CHUNK)
    }

    fn push(&mut self, e: Option<LiveEntity>) {
        if self.len.is_multiple_of(Self::CHUNK) {
            self.chunks.push(Vec::with_capacity(Self::CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(e);
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Option<LiveEntity>> {
        self.chunks.iter().flatten()
    }
}

impl std::ops::Index<usize> for SlotTable {
    type Output = Option<LiveEntity>;

    fn index(&self, i: usize) -> &Self::Output {
        &self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }
}

impl std::ops::IndexMut<usize> for SlotTable {
    fn index_mut(&mut self, i: usize) -> &mut Self::Output {
        &mut self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }
}

/// All live entities.
pub struct LiveState {
    frame: GeoFrame,
    slots_by_feed: HashMap<FeedId, HashMap<String, Slot>>,
    /// `None` where an entity was removed.
    entities: SlotTable,
    live: usize,
    standing: HashMap<FeedId, FeedStanding>,
    index: Mutex<RTree<IndexPoint>>,
    index_stale: AtomicBool,
    changed: Vec<Slot>,
    changed_mark: Vec<bool>,
    /// Each slot's entity's shape tag (see [`numbers`]): 0 unknown.
    shapes: Vec<u64>,
    /// This state among all made in the process (a replay's slots are kept per state).
    uid: u64,
    /// What changed, in order, for the history (only while recording).
    journal: Option<Vec<Journaled>>,
}

/// One change to the live state, as the history records it.
// Nearly every one is an upsert: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Journaled {
    /// An entity inserted or changed: its whole new value.
    Upsert {
        feed: FeedId,
        received_at_ms: i64,
        update: EntityUpdate,
    },
    /// An entity removed (a snapshot without it, expiry, a push feed's delete).
    Remove { feed: FeedId, id: String },
}

/// When an update to `entity` is as of (its observation time, or its arrival when
/// it has none), or why it is no news: older than what is held, or the same values
/// again (`same_values`); the entity is marked seen either way, and an untimed
/// repeat still says its values hold now.
fn timing(
    entity: &mut LiveEntity,
    observed_at_ms: Option<i64>,
    received_at_ms: i64,
    same_values: impl FnOnce(&LiveEntity) -> bool,
) -> Result<i64, ApplyOutcome> {
    let as_of = as_of_ms(observed_at_ms, received_at_ms);
    let timed = observed_at_ms.is_some_and(|t| t == as_of);
    entity.seen_at_ms = entity.seen_at_ms.max(received_at_ms);
    // An untimed update is as of its arrival, which is never before what we hold:
    // the entity's time only moves forward.
    let as_of = if timed {
        as_of
    } else {
        as_of.max(entity.as_of_ms)
    };
    if as_of < entity.as_of_ms {
        return Err(ApplyOutcome::OutOfOrder);
    }
    if same_values(entity) && (!timed || as_of == entity.as_of_ms) {
        if !timed {
            entity.as_of_ms = as_of;
        }
        return Err(ApplyOutcome::Duplicate);
    }
    Ok(as_of)
}

/// The local place of `entity` moved to `position`: projected only when it moved (a
/// sensor's new reading keeps its place).
fn local_after(
    entity: &LiveEntity,
    position: Option<[f64; 2]>,
    project: impl FnOnce() -> Option<[f64; 2]>,
) -> Option<[f64; 2]> {
    if position == entity.position {
        entity.local
    } else {
        project()
    }
}

/// What [`LiveState::check`] found an update to be.
enum Checked {
    Done(ApplyOutcome),
    New {
        local: Option<[f64; 2]>,
        as_of: i64,
    },
    Changed {
        slot: Slot,
        local: Option<[f64; 2]>,
        as_of: i64,
    },
}

impl LiveState {
    /// Empty state; positions are indexed in `frame`'s local metres.
    pub fn new(frame: GeoFrame) -> Self {
        Self {
            frame,
            slots_by_feed: HashMap::new(),
            entities: SlotTable::default(),
            live: 0,
            standing: HashMap::new(),
            index: Mutex::new(RTree::new()),
            index_stale: AtomicBool::new(false),
            changed: Vec::new(),
            changed_mark: Vec::new(),
            shapes: Vec::new(),
            uid: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            journal: None,
        }
    }

    /// This state's number among all made in the process.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The slot of `feed`'s entity `id`.
    pub fn slot_of(&self, feed: FeedId, id: &str) -> Option<Slot> {
        self.slots_by_feed.get(&feed)?.get(id).copied()
    }

    /// Starts (or stops) keeping a journal of every change for [`Self::drain_journal`].
    pub fn keep_journal(&mut self, on: bool) {
        self.journal = on.then(Vec::new);
    }

    /// The changes since the last call, in the order they happened (empty when no
    /// journal is kept).
    pub fn drain_journal(&mut self) -> Vec<Journaled> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The frame positions are indexed in.
    pub fn frame(&self) -> &GeoFrame {
        &self.frame
    }

    /// Entities present now.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Slots handed out so far, live or freed (a slot is never reused): what the
    /// state's tables, and the scene's per-slot tables, are sized by.
    pub fn slot_count(&self) -> usize {
        self.entities.len()
    }

    /// The entity in `slot`; `None` for a slot never used or whose entity was removed.
    pub fn entity(&self, slot: Slot) -> Option<&LiveEntity> {
        self.entities.get(slot as usize)?.as_ref()
    }

    pub fn get(&self, feed: FeedId, id: &str) -> Option<&LiveEntity> {
        let slot = *self.slots_by_feed.get(&feed)?.get(id)?;
        self.entity(slot)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &LiveEntity)> {
        self.entities
            .iter()
            .enumerate()
            .filter_map(|(i, e)| Some((i as Slot, e.as_ref()?)))
    }

    /// Sets how far `feed`'s entities are to be trusted.
    pub fn set_feed_standing(&mut self, feed: FeedId, standing: FeedStanding) {
        self.standing.insert(feed, standing);
    }

    pub fn feed_standing(&self, feed: FeedId) -> FeedStanding {
        self.standing.get(&feed).copied().unwrap_or_default()
    }

    /// Whether `e`'s values can be used at `now_ms`. An alert's time is when it was
    /// raised, not a reading: it stays current while its feed keeps reporting it.
    pub fn standing(&self, e: &LiveEntity, now_ms: i64) -> Standing {
        let feed = self.feed_standing(e.feed);
        let since = match e.kind {
            EntityKind::Alert { .. } => e.seen_at_ms,
            _ => e.as_of_ms,
        };
        if feed.quarantined {
            Standing::Quarantined
        } else if feed
            .stale_after_ms
            .is_some_and(|limit| now_ms - since > limit)
        {
            Standing::Stale
        } else {
            Standing::Current
        }
    }

    /// Entities of one feed.
    pub fn count_for_feed(&self, feed: FeedId) -> usize {
        self.slots_by_feed.get(&feed).map_or(0, HashMap::len)
    }

    /// Applies one update received at `received_at_ms` (the caller's clock).
    pub fn apply(
        &mut self,
        feed: FeedId,
        update: EntityUpdate,
        received_at_ms: i64,
    ) -> ApplyOutcome {
        match self.check(feed, &update, received_at_ms) {
            Checked::Done(outcome) => outcome,
            Checked::New { local, as_of } => {
                self.insert(feed, update, local, received_at_ms, as_of)
            }
            Checked::Changed { slot, local, as_of } => {
                let entity = self.checked(slot);
                entity.entity_type = update.entity_type;
                entity.kind = update.kind;
                entity.line = update.line;
                entity.fields = update.fields;
                entity.units = update.units;
                entity.notes = update.notes;
                self.changed_in_place(
                    feed,
                    slot,
                    local,
                    received_at_ms,
                    as_of,
                    update.position,
                    update.observed_at_ms,
                )
            }
        }
    }

    /// [`Self::apply`] of a borrowed update: what changed is copied into the entity
    /// in place, so an update that moves a vehicle or changes a number allocates and
    /// frees nothing (a replay applying its own records).
    pub fn apply_ref(
        &mut self,
        feed: FeedId,
        update: &EntityUpdate,
        received_at_ms: i64,
    ) -> ApplyOutcome {
        match self.check(feed, update, received_at_ms) {
            Checked::Done(outcome) => outcome,
            Checked::New { local, as_of } => {
                self.insert(feed, update.clone(), local, received_at_ms, as_of)
            }
            Checked::Changed { slot, local, as_of } => {
                let entity = self.checked(slot);
                if entity.entity_type != update.entity_type {
                    entity.entity_type.clone_from(&update.entity_type);
                }
                entity.kind.assign_from(&update.kind);
                if entity.line != update.line {
                    entity.line.clone_from(&update.line);
                }
                crate::model::copy_changed_fields(&mut entity.fields, &update.fields);
                if entity.units != update.units {
                    entity.units.clone_from(&update.units);
                }
                if entity.notes != update.notes {
                    entity.notes.clone_from(&update.notes);
                }
                self.changed_in_place(
                    feed,
                    slot,
                    local,
                    received_at_ms,
                    as_of,
                    update.position,
                    update.observed_at_ms,
                )
            }
        }
    }

    /// The entity in a slot [`Self::check`] found holding one.
    fn checked(&mut self, slot: Slot) -> &mut LiveEntity {
        self.entities[slot as usize]
            .as_mut()
            .expect("a checked slot holds its entity")
    }

    /// Whether an update is news: a new entity, a change to one, or nothing to do.
    fn check(&mut self, feed: FeedId, update: &EntityUpdate, received_at_ms: i64) -> Checked {
        let frame = self.frame;
        let project = || {
            update
                .position
                .map(|[lon, lat]| frame.local_from_wgs84(lon, lat))
        };
        let Some(&slot) = self
            .slots_by_feed
            .get(&feed)
            .and_then(|slots| slots.get(update.id.as_str()))
        else {
            return Checked::New {
                local: project(),
                as_of: as_of_ms(update.observed_at_ms, received_at_ms),
            };
        };
        let Some(entity) = self.entities[slot as usize].as_mut() else {
            return Checked::Done(ApplyOutcome::OutOfOrder);
        };
        // The position first: a moving thing differs there, without reading its
        // fields' strings.
        let as_of = match timing(entity, update.observed_at_ms, received_at_ms, |e| {
            update.position == e.position
                && update.fields == e.fields
                && update.units == e.units
                && update.kind == e.kind
        }) {
            Ok(as_of) => as_of,
            Err(outcome) => return Checked::Done(outcome),
        };
        let local = local_after(entity, update.position, project);
        Checked::Changed { slot, local, as_of }
    }

    /// The rest of a change written into `slot`'s entity: times, position, the
    /// journal, the changed mark.
    #[allow(clippy::too_many_arguments)]
    fn changed_in_place(
        &mut self,
        feed: FeedId,
        slot: Slot,
        local: Option<[f64; 2]>,
        received_at_ms: i64,
        as_of: i64,
        position: Option<[f64; 2]>,
        observed_at_ms: Option<i64>,
    ) -> ApplyOutcome {
        // Fields apart: the index flag and the journal are written beside it.
        let entity = self.entities[slot as usize]
            .as_mut()
            .expect("a checked slot holds its entity");
        if entity.local != local {
            self.index_stale.store(true, Ordering::Relaxed);
        }
        entity.position = position;
        entity.local = local;
        entity.observed_at_ms = observed_at_ms;
        entity.received_at_ms = received_at_ms;
        entity.as_of_ms = as_of;
        entity.version += 1;
        self.shapes[slot as usize] = 0;
        if let Some(journal) = &mut self.journal {
            journal.push(Journaled::Upsert {
                feed,
                received_at_ms,
                update: entity.to_update(),
            });
        }
        self.mark_changed(slot);
        ApplyOutcome::Updated
    }

    /// A new entity.
    fn insert(
        &mut self,
        feed: FeedId,
        update: EntityUpdate,
        local: Option<[f64; 2]>,
        received_at_ms: i64,
        as_of: i64,
    ) -> ApplyOutcome {
        let slots = self.slots_by_feed.entry(feed).or_default();
        let slot = self.entities.len() as Slot;
        slots.insert(update.id.clone(), slot);
        if let Some(journal) = &mut self.journal {
            journal.push(Journaled::Upsert {
                feed,
                received_at_ms,
                update: update.clone(),
            });
        }
        if local.is_some() {
            self.index_stale.store(true, Ordering::Relaxed);
        }
        self.entities.push(Some(LiveEntity {
            feed,
            id: update.id,
            entity_type: update.entity_type,
            kind: update.kind,
            position: update.position,
            local,
            line: update.line,
            observed_at_ms: update.observed_at_ms,
            received_at_ms,
            as_of_ms: as_of,
            seen_at_ms: received_at_ms,
            version: 1,
            fields: update.fields,
            units: update.units,
            notes: update.notes,
        }));
        self.live += 1;
        self.changed_mark.push(false);
        self.shapes.push(0);
        self.mark_changed(slot);
        ApplyOutcome::Inserted
    }

    /// Removes one entity (a push feed's delete, a snapshot without it, expiry).
    /// Returns whether it was there.
    pub fn remove(&mut self, feed: FeedId, id: &str) -> bool {
        let Some(slot) = self
            .slots_by_feed
            .get_mut(&feed)
            .and_then(|slots| slots.remove(id))
        else {
            return false;
        };
        self.shapes[slot as usize] = 0;
        if let Some(e) = self.entities[slot as usize].take() {
            if e.local.is_some() {
                self.index_stale.store(true, Ordering::Relaxed);
            }
            self.live -= 1;
            if let Some(journal) = &mut self.journal {
                journal.push(Journaled::Remove { feed, id: e.id });
            }
        }
        self.mark_changed(slot);
        true
    }

    /// Removes the entity in `slot`, whichever feed reported it.
    pub fn remove_slot(&mut self, slot: Slot) -> bool {
        let Some((feed, id)) = self.entity(slot).map(|e| (e.feed, e.id.clone())) else {
            return false;
        };
        self.remove(feed, &id)
    }

    /// The slots of `feed`'s entities.
    pub fn slots_of(&self, feed: FeedId) -> Vec<Slot> {
        self.slots_by_feed
            .get(&feed)
            .map(|slots| slots.values().copied().collect())
            .unwrap_or_default()
    }

    /// Ids of `feed`'s entities for which `pred` holds.
    pub fn ids_where(&self, feed: FeedId, pred: impl Fn(&LiveEntity) -> bool) -> Vec<String> {
        let Some(slots) = self.slots_by_feed.get(&feed) else {
            return Vec::new();
        };
        slots
            .values()
            .filter_map(|&s| self.entity(s))
            .filter(|e| pred(e))
            .map(|e| e.id.clone())
            .collect()
    }

    /// Marks the entity in `slot` as reported at `at_ms` (a 304: nothing changed).
    pub fn touch_slot(&mut self, slot: Slot, at_ms: i64) {
        if let Some(Some(e)) = self.entities.get_mut(slot as usize) {
            e.seen_at_ms = e.seen_at_ms.max(at_ms);
        }
    }

    /// Marks every entity of `feed` as reported at `at_ms` (a 304: nothing changed).
    pub fn touch_feed(&mut self, feed: FeedId, at_ms: i64) {
        let Some(slots) = self.slots_by_feed.get(&feed) else {
            return;
        };
        for &s in slots.values() {
            if let Some(e) = self.entities[s as usize].as_mut() {
                e.seen_at_ms = e.seen_at_ms.max(at_ms);
            }
        }
    }

    fn mark_changed(&mut self, slot: Slot) {
        let mark = &mut self.changed_mark[slot as usize];
        if !*mark {
            *mark = true;
            self.changed.push(slot);
        }
    }

    /// Slots changed since the last call, each once: what the scene must redraw.
    pub fn drain_changed(&mut self) -> Vec<Slot> {
        for &s in &self.changed {
            self.changed_mark[s as usize] = false;
        }
        std::mem::take(&mut self.changed)
    }

    /// Runs `f` on an up-to-date index.
    fn with_index<T>(&self, f: impl FnOnce(&RTree<IndexPoint>) -> T) -> T {
        let mut index = match self.index.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.index_stale.swap(false, Ordering::Relaxed) {
            let points = self
                .entities
                .iter()
                .enumerate()
                .filter_map(|(slot, e)| e.as_ref()?.local.map(|p| IndexPoint::new(p, slot as Slot)))
                .collect();
            *index = RTree::bulk_load(points);
        }
        f(&index)
    }

    /// Entities with a position (the index's size).
    pub fn indexed_len(&self) -> usize {
        self.with_index(|i| i.size())
    }

    /// The `k` entities nearest a local point (metres), nearest first.
    pub fn nearest(&self, east: f64, north: f64, k: usize) -> Vec<Slot> {
        self.with_index(|i| {
            i.nearest_neighbor_iter(&[east, north])
                .take(k)
                .map(|p| p.data)
                .collect()
        })
    }

    /// Entities within `radius_m` of a local point.
    pub fn within(&self, east: f64, north: f64, radius_m: f64) -> Vec<Slot> {
        self.with_index(|i| {
            i.locate_within_distance([east, north], radius_m * radius_m)
                .map(|p| p.data)
                .collect()
        })
    }

    /// Entities inside a local-metre rectangle.
    pub fn in_rect(&self, min: [f64; 2], max: [f64; 2]) -> Vec<Slot> {
        self.with_index(|i| {
            i.locate_in_envelope(&AABB::from_corners(min, max))
                .map(|p| p.data)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str, lon: f64, observed: Option<i64>, speed: f64) -> EntityUpdate {
        let mut fields = BTreeMap::new();
        fields.insert("speed".to_string(), FieldValue::Number(speed));
        EntityUpdate {
            id: id.into(),
            entity_type: "Vehicle".into(),
            kind: EntityKind::Generic,
            position: Some([lon, 60.17]),
            line: None,
            observed_at_ms: observed,
            fields,
            units: Default::default(),
            notes: Vec::new(),
        }
    }

    fn state() -> LiveState {
        LiveState::new(GeoFrame::new(24.94, 60.17))
    }

    #[test]
    fn insert_update_and_versions() {
        let mut s = state();
        assert_eq!(
            s.apply(0, update("bus-1", 24.94, Some(1000), 30.0), 5),
            ApplyOutcome::Inserted
        );
        assert_eq!(
            s.apply(0, update("bus-1", 24.941, Some(2000), 35.0), 6),
            ApplyOutcome::Updated
        );
        let e = s.get(0, "bus-1").unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(e.received_at_ms, 6);
        assert_eq!(e.fields["speed"], FieldValue::Number(35.0));
        // The same id from another feed is another entity.
        assert_eq!(
            s.apply(1, update("bus-1", 24.94, Some(1000), 30.0), 7),
            ApplyOutcome::Inserted
        );
        assert_eq!(s.len(), 2);
        assert_eq!(s.count_for_feed(0), 1);
    }

    #[test]
    fn a_borrowed_update_applies_exactly_as_one_handed_over() {
        // Field set, changed and gone; units, line, type and kind changed; out of
        // order, duplicate, untimed: both ways give the same outcomes and entities.
        let mut steps = Vec::new();
        for t in 1..=12i64 {
            let mut u = update(
                &format!("v{}", t % 3),
                24.94 + t as f64 * 1e-4,
                Some(t * 1000),
                t as f64,
            );
            if t % 4 == 0 {
                u.fields
                    .insert("note".into(), FieldValue::Text(format!("n{t}")));
                u.units.insert("speed".into(), "KMH".into());
                u.line = Some(vec![[24.9, 60.1], [24.91 + t as f64 * 1e-3, 60.1]]);
            }
            if t % 5 == 0 {
                u.entity_type = "Thing".into();
                u.kind = EntityKind::Generic;
                u.fields.remove("speed");
            }
            if t == 7 {
                u.observed_at_ms = Some(500);
            }
            if t == 9 {
                u.observed_at_ms = None;
            }
            steps.push(u.clone());
            if t % 6 == 0 {
                steps.push(u);
            }
        }
        let (mut moved, mut borrowed) = (state(), state());
        moved.keep_journal(true);
        borrowed.keep_journal(true);
        for (n, u) in steps.iter().enumerate() {
            let a = moved.apply(0, u.clone(), 100 + n as i64);
            let b = borrowed.apply_ref(0, u, 100 + n as i64);
            assert_eq!(a, b, "step {n}");
        }
        let all = |s: &LiveState| -> Vec<String> {
            s.iter().map(|(slot, e)| format!("{slot} {e:?}")).collect()
        };
        assert_eq!(all(&moved), all(&borrowed));
        assert_eq!(moved.drain_changed(), borrowed.drain_changed());
        assert_eq!(moved.drain_journal(), borrowed.drain_journal());
    }

    #[test]
    fn out_of_order_and_duplicates_are_ignored() {
        let mut s = state();
        s.apply(0, update("a", 24.94, Some(2000), 30.0), 1);
        assert_eq!(
            s.apply(0, update("a", 24.95, Some(1000), 99.0), 2),
            ApplyOutcome::OutOfOrder
        );
        assert_eq!(
            s.apply(0, update("a", 24.94, Some(2000), 30.0), 3),
            ApplyOutcome::Duplicate
        );
        let e = s.get(0, "a").unwrap();
        assert_eq!((e.version, e.received_at_ms), (1, 1));
        // Without observation times, identical content is a duplicate, new content an update.
        s.apply(0, update("b", 24.94, None, 1.0), 1);
        assert_eq!(
            s.apply(0, update("b", 24.94, None, 1.0), 2),
            ApplyOutcome::Duplicate
        );
        assert_eq!(
            s.apply(0, update("b", 24.94, None, 2.0), 3),
            ApplyOutcome::Updated
        );
    }

    const MIN: i64 = 60_000;

    fn aqi(s: &LiveState) -> f64 {
        s.get(0, "st").unwrap().fields["speed"].as_f64().unwrap()
    }

    #[test]
    fn an_untimed_update_is_as_of_its_arrival_and_time_never_goes_back() {
        let now = 1_795_946_400_000;
        let mut s = state();
        // A 10-minute-old 40, then 41 without a time, then a 2-hour-old 300.
        s.apply(0, update("st", 24.94, Some(now - 10 * MIN), 40.0), now);
        assert_eq!(
            s.apply(0, update("st", 24.94, None, 41.0), now + 1000),
            ApplyOutcome::Updated
        );
        assert_eq!(s.get(0, "st").unwrap().as_of_ms, now + 1000);
        assert_eq!(
            s.apply(
                0,
                update("st", 24.94, Some(now - 120 * MIN), 300.0),
                now + 2000
            ),
            ApplyOutcome::OutOfOrder
        );
        assert_eq!(aqi(&s), 41.0);
        // A newer timed reading still lands.
        s.apply(0, update("st", 24.94, Some(now + 5000), 42.0), now + 6000);
        assert_eq!(aqi(&s), 42.0);
        // An untimed repeat of the same values keeps them current without a new version.
        let version = s.get(0, "st").unwrap().version;
        assert_eq!(
            s.apply(0, update("st", 24.94, None, 42.0), now + 60_000),
            ApplyOutcome::Duplicate
        );
        let e = s.get(0, "st").unwrap();
        assert_eq!((e.version, e.as_of_ms), (version, now + 60_000));
    }

    #[test]
    fn a_future_dated_reading_does_not_freeze_the_entity() {
        let now = 1_795_946_400_000;
        let mut s = state();
        s.apply(0, update("st", 24.94, Some(now - MIN), 40.0), now);
        // A clock a day ahead: applied, but as of its arrival, not of tomorrow.
        assert_eq!(
            s.apply(
                0,
                update("st", 24.94, Some(now + 24 * 60 * MIN), 99.0),
                now + 1000
            ),
            ApplyOutcome::Updated
        );
        let e = s.get(0, "st").unwrap();
        assert_eq!(e.as_of_ms, now + 1000);
        assert_eq!(
            e.observed_at_ms,
            Some(now + 24 * 60 * MIN),
            "shown as the source says"
        );
        // The next correct reading wins.
        assert_eq!(
            s.apply(0, update("st", 24.94, Some(now + 5000), 41.0), now + 6000),
            ApplyOutcome::Updated
        );
        assert_eq!(aqi(&s), 41.0);
        // Within the allowed clock skew a reading keeps its own time.
        s.apply(
            0,
            update("st", 24.94, Some(now + 3 * MIN), 42.0),
            now + 7000,
        );
        assert_eq!(s.get(0, "st").unwrap().as_of_ms, now + 3 * MIN);
    }

    #[test]
    fn removed_entities_leave_the_index_and_are_reported_changed() {
        let mut s = state();
        for (id, lon) in [("a", 24.94), ("b", 24.9401), ("c", 24.9402)] {
            s.apply(0, update(id, lon, Some(1), 0.0), 0);
        }
        s.drain_changed();
        assert!(s.remove(0, "b"));
        assert!(!s.remove(0, "b"), "already gone");
        assert!(!s.remove(1, "a"), "another feed's id");
        assert_eq!((s.len(), s.count_for_feed(0)), (2, 2));
        assert_eq!(s.drain_changed(), vec![1]);
        assert!(s.entity(1).is_none());
        assert_eq!(
            s.iter().map(|(slot, _)| slot).collect::<Vec<_>>(),
            vec![0, 2]
        );
        let mut near = s.within(0.0, 0.0, 100.0);
        near.sort();
        assert_eq!(near, vec![0, 2]);
        // Coming back is a new entity in a new slot.
        assert_eq!(
            s.apply(0, update("b", 24.9401, Some(2), 0.0), 0),
            ApplyOutcome::Inserted
        );
        assert_eq!(s.get(0, "b").unwrap().version, 1);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn standing_follows_the_feed() {
        let mut s = state();
        s.apply(0, update("a", 24.94, Some(1_000), 0.0), 1_000);
        let e = s.get(0, "a").unwrap().clone();
        assert_eq!(s.standing(&e, 1_000_000), Standing::Current);
        s.set_feed_standing(
            0,
            FeedStanding {
                stale_after_ms: Some(50_000),
                quarantined: false,
            },
        );
        assert_eq!(s.standing(&e, 51_000), Standing::Current);
        assert_eq!(s.standing(&e, 51_001), Standing::Stale);
        s.set_feed_standing(
            0,
            FeedStanding {
                stale_after_ms: Some(50_000),
                quarantined: true,
            },
        );
        assert_eq!(s.standing(&e, 2_000), Standing::Quarantined);
        // An alert raised an hour ago and reported just now is current.
        let alert = EntityUpdate {
            entity_type: "Alert".into(),
            kind: EntityKind::Alert {
                category: None,
                sub_category: None,
                severity: Some("high".into()),
                description: None,
            },
            ..update("al", 24.94, Some(1_000), 0.0)
        };
        s.apply(1, alert.clone(), 3_600_000);
        s.set_feed_standing(
            1,
            FeedStanding {
                stale_after_ms: Some(50_000),
                quarantined: false,
            },
        );
        let a = s.get(1, "al").unwrap().clone();
        assert_eq!(s.standing(&a, 3_600_000 + 50_000), Standing::Current);
        assert_eq!(s.standing(&a, 3_600_000 + 50_001), Standing::Stale);
    }

    #[test]
    fn index_follows_moving_entities() {
        let mut s = state();
        s.apply(0, update("car", 24.94, Some(1), 0.0), 0);
        s.apply(0, update("far", 24.99, Some(1), 0.0), 0);
        assert_eq!(s.within(0.0, 0.0, 50.0), vec![0]);
        // The car drives ~1.1 km east: it leaves the origin and shows up there.
        s.apply(0, update("car", 24.96, Some(2), 0.0), 0);
        assert!(s.within(0.0, 0.0, 50.0).is_empty());
        let [e, n] = GeoFrame::new(24.94, 60.17).local_from_wgs84(24.96, 60.17);
        assert_eq!(s.within(e, n, 50.0), vec![0]);
        assert_eq!(s.nearest(e, n, 2), vec![0, 1]);
        assert_eq!(s.indexed_len(), 2);
    }

    #[test]
    fn drain_changed_reports_each_slot_once() {
        let mut s = state();
        s.apply(0, update("a", 24.94, Some(1), 0.0), 0);
        s.apply(0, update("a", 24.94, Some(2), 1.0), 0);
        s.apply(0, update("b", 24.94, Some(1), 0.0), 0);
        assert_eq!(s.drain_changed(), vec![0, 1]);
        assert!(s.drain_changed().is_empty());
        s.apply(0, update("b", 24.94, Some(3), 5.0), 0);
        assert_eq!(s.drain_changed(), vec![1]);
    }
}
