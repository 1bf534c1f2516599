//! Whole-city passes spread across frames.
//!
//! The frame thread owns the live state, and at 150,000 entities one pass over it
//! (a copy for reconciliation, the KPIs' sums, expiry, a snapshot's removals) costs
//! tens of milliseconds: a visible hitch. A [`Sweep`] visits the state's slots a
//! step at a time, each step stopping at a slot count or a deadline, and picks up
//! where it stopped on the next frame. Slots are never reused, so a slot visited
//! earlier in the pass still names the same entity (or none) later.

use std::time::{Duration, Instant};

use super::{LiveEntity, LiveState, Slot};

/// What one frame may spend on one pass.
pub const FRAME_BUDGET: Duration = Duration::from_millis(1);

/// How much a step may do: at most `slots` slots, and stop at `until` when given
/// (checked every [`Budget::CHECK_EVERY`] slots).
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub slots: usize,
    pub until: Option<Instant>,
}

impl Budget {
    const CHECK_EVERY: usize = 256;

    /// The whole state in one step (tests, headless tools).
    pub const ALL: Budget = Budget {
        slots: usize::MAX,
        until: None,
    };

    /// A frame's share: [`FRAME_BUDGET`] from now.
    pub fn frame() -> Self {
        Self::for_time(FRAME_BUDGET)
    }

    pub fn for_time(time: Duration) -> Self {
        Self {
            slots: usize::MAX,
            until: Some(Instant::now() + time),
        }
    }

    pub fn slots(slots: usize) -> Self {
        Self { slots, until: None }
    }
}

/// A cursor over the live state's slots. A pass covers the slots there were when it
/// took its first step: an entity that leaves and comes back mid-pass has a new slot
/// past the end and is not counted twice (it is for the next pass, or for the
/// changed slots, to see).
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    next: usize,
    end: Option<usize>,
}

impl Sweep {
    pub fn new() -> Self {
        Self::default()
    }

    /// A pass over the slots below `end` only.
    pub fn up_to(end: usize) -> Self {
        Self {
            next: 0,
            end: Some(end),
        }
    }

    /// Where the pass ends (once it has taken a step).
    pub fn end(&self) -> Option<usize> {
        self.end
    }

    /// Visits slots from where the last step stopped until the budget is spent or the
    /// end of the pass is reached; true at the end.
    pub fn step<'a>(
        &mut self,
        state: &'a LiveState,
        budget: Budget,
        mut visit: impl FnMut(Slot, &'a LiveEntity),
    ) -> bool {
        self.step_while(state, budget, |slot, e| {
            visit(slot, e);
            true
        })
    }

    /// [`Self::step`], also stopping after a slot for which `visit` says false (it
    /// has collected what the caller can handle this frame).
    pub fn step_while<'a>(
        &mut self,
        state: &'a LiveState,
        budget: Budget,
        mut visit: impl FnMut(Slot, &'a LiveEntity) -> bool,
    ) -> bool {
        let total = (*self.end.get_or_insert(state.entities.len())).min(state.entities.len());
        let end = self.next.saturating_add(budget.slots).min(total);
        while self.next < end {
            let stop = (self.next + Budget::CHECK_EVERY).min(end);
            while self.next < stop {
                let slot = self.next;
                self.next += 1;
                if let Some(e) = &state.entities[slot]
                    && !visit(slot as Slot, e)
                {
                    return self.next >= total;
                }
            }
            if budget.until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
        }
        self.next >= total
    }

    /// The next slot to visit.
    pub fn position(&self) -> usize {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo_frame::GeoFrame;
    use crate::model::{EntityKind, EntityUpdate};

    fn state_of(n: usize) -> LiveState {
        let mut state = LiveState::new(GeoFrame::new(24.94, 60.17));
        for i in 0..n {
            state.apply(
                0,
                EntityUpdate {
                    id: format!("v{i}"),
                    entity_type: "Vehicle".into(),
                    kind: EntityKind::Generic,
                    position: Some([24.94, 60.17]),
                    line: None,
                    observed_at_ms: Some(1000),
                    fields: Default::default(),
                    units: Default::default(),
                    notes: Vec::new(),
                },
                1000,
            );
        }
        state
    }

    #[test]
    fn a_sweep_in_steps_visits_every_entity_once_and_skips_the_removed() {
        let mut state = state_of(1000);
        state.remove(0, "v10");
        let mut seen = Vec::new();
        let mut sweep = Sweep::new();
        let mut steps = 0;
        while !sweep.step(&state, Budget::slots(300), |slot, _| seen.push(slot)) {
            steps += 1;
        }
        assert_eq!(steps, 3, "300 + 300 + 300 + 100");
        assert_eq!(seen.len(), 999);
        assert!(!seen.contains(&10));
        seen.dedup();
        assert_eq!(seen.len(), 999);
    }

    #[test]
    fn a_pass_covers_the_slots_there_were_when_it_began() {
        let mut state = state_of(100);
        let mut sweep = Sweep::new();
        let mut seen = 0;
        assert!(!sweep.step(&state, Budget::slots(50), |_, _| seen += 1));
        // v10 leaves and comes back (a new slot, 100), and v100 arrives: neither is
        // this pass's.
        state.remove(0, "v10");
        let again = state.entity(11).unwrap().to_update();
        state.apply(
            0,
            EntityUpdate {
                id: "v10".into(),
                ..again.clone()
            },
            2000,
        );
        state.apply(
            0,
            EntityUpdate {
                id: "v100".into(),
                ..again
            },
            2000,
        );
        assert!(sweep.step(&state, Budget::ALL, |_, _| seen += 1));
        assert_eq!(
            seen, 100,
            "v10 once (its old slot, before it left), v100 not at all"
        );
        assert_eq!(sweep.end(), Some(100));
    }

    #[test]
    fn a_step_stops_where_its_visitor_has_enough() {
        let state = state_of(1000);
        let mut sweep = Sweep::new();
        let mut seen = Vec::new();
        let mut steps = 0;
        loop {
            steps += 1;
            let mut taken = 0;
            let done = sweep.step_while(&state, Budget::ALL, |slot, _| {
                seen.push(slot);
                taken += 1;
                taken < 400
            });
            if done {
                break;
            }
        }
        assert_eq!(steps, 3);
        assert_eq!(seen, (0..1000).collect::<Vec<Slot>>());
    }

    #[test]
    fn a_step_stops_at_its_deadline() {
        let state = state_of(5000);
        let mut sweep = Sweep::new();
        let past = Budget {
            slots: usize::MAX,
            until: Some(Instant::now()),
        };
        let mut visited = 0;
        assert!(!sweep.step(&state, past, |_, _| visited += 1));
        // One check's worth of slots, then the deadline is seen.
        assert_eq!(visited, Budget::CHECK_EVERY);
        assert!(sweep.step(&state, Budget::ALL, |_, _| visited += 1));
        assert_eq!(visited, 5000);
    }
}
