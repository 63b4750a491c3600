//! How long we have held the node cordoned: every hold's time added up, and whether one is held
//! now, shared (cheaply cloned) with a reader in another task (the metrics endpoint). Written only
//! from the guard's one place of transitions; no I/O, no decision.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The time the node has been held cordoned (or tainted) by us, across passes. Clones share one
/// clock; [`super::Cordoner::clock`] hands one out, [`super::Cordoner::with_clock`] keeps it
/// across a rebuilt guard.
#[derive(Debug, Clone, Default)]
pub struct CordonClock(Arc<Mutex<Held>>);

#[derive(Debug, Default)]
struct Held {
    /// The holds that ended, added up.
    done: Duration,
    /// Since when the current hold is held, if any.
    since: Option<Instant>,
    /// With fleet slots: whether one is held now, and the waits for one that ended, added up.
    slot: Option<(bool, Duration)>,
}

impl CordonClock {
    /// Notes, after a transition at `now`, since when the current hold is held (`None`: no
    /// hold). A hold that ended or was taken anew adds its time. The guard calls it at every
    /// transition; tests feed it by hand.
    pub fn note(&self, since: Option<Instant>, now: Instant) {
        let mut held = self.lock();
        if let Some(start) = held.since
            && since != Some(start)
        {
            held.done = held
                .done
                .saturating_add(now.saturating_duration_since(start));
        }
        held.since = since;
    }

    /// Notes the fleet slot's state: `None` without fleet slots, else whether one is held and
    /// the waits for one that ended, added up.
    pub fn note_slot(&self, slot: Option<(bool, Duration)>) {
        self.lock().slot = slot;
    }

    /// The fleet slot's state as last noted.
    pub fn slot(&self) -> Option<(bool, Duration)> {
        self.lock().slot
    }

    /// Whether we hold a cordon now.
    pub fn held(&self) -> bool {
        self.lock().since.is_some()
    }

    /// The time held, the current hold included up to `now`.
    pub fn total_at(&self, now: Instant) -> Duration {
        let held = self.lock();
        let current = held
            .since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        held.done.saturating_add(current)
    }

    /// The time held, the current hold included up to now.
    pub fn total(&self) -> Duration {
        self.total_at(Instant::now())
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Nothing panics while the lock is held (plain arithmetic): a poisoned lock still holds
        // consistent figures.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_add_up_and_the_current_one_counts_until_now() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let clock = CordonClock::default();
        let reader = clock.clone();
        assert!(!reader.held());
        assert_eq!(reader.total_at(at(5)), Duration::ZERO);
        clock.note(Some(at(10)), at(10));
        assert!(reader.held());
        assert_eq!(reader.total_at(at(13)), Duration::from_secs(3));
        // Transitions that keep the hold (a pass begins, the deadline is tried) add nothing.
        clock.note(Some(at(10)), at(14));
        assert_eq!(reader.total_at(at(15)), Duration::from_secs(5));
        clock.note(None, at(20));
        assert!(!reader.held());
        assert_eq!(reader.total_at(at(100)), Duration::from_secs(10));
        // Taken again while held (after a failed release): the first hold's time is kept.
        clock.note(Some(at(100)), at(100));
        clock.note(Some(at(104)), at(104));
        clock.note(None, at(110));
        assert_eq!(reader.total_at(at(200)), Duration::from_secs(20));
    }
}
