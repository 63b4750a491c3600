//! When each image was last used, per engine: a table fed with the engines' events and their
//! inventories, kept in memory and persisted by [`store`] in the state directory, so that "least
//! recently used" survives restarts. The table here is plain data: it deletes nothing and does no
//! engine I/O (the caller resolves the image an event names and passes the id in).
//!
//! - [`store`]: the state file, read and written through the state directory's descriptor;
//! - [`lock`]: the single-instance lock, an `flock` on the state directory;
//! - `dir`: the state directory, checked (owner, modes, symlinks), created 0700, held open;
//! - `error`: their errors ([`Error`]).
//!
//! Times are unix milliseconds: two uses in the same second still have an order.

mod dir;
mod error;
pub mod lock;
pub mod store;

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::docker::{Inventory, UseEvent};

pub use error::Error;
pub use lock::InstanceLock;
pub use store::{Store, Tables};

/// The name of the engine configured without `[[engine]]` tables (`DOCKER_HOST`).
pub const DEFAULT_ENGINE: &str = "default";

/// Half-life of [`Entry::frequency_ms`]: a container start counts half as much six hours
/// later. Chosen with the trace replay (`scripts/replay.sh`): 2 h and 6 h re-pulled 1-4 % less
/// than 12 h, 1 day or 3 days. Stored values assume it: changing it re-weighs the history kept.
pub const FREQUENCY_HALF_LIFE_MS: i64 = 6 * 3600 * 1000;

/// One image's record. The fields after `last_used_ms` are the history the frequency-aware
/// strategies rank by (`policy::rank`); a record written before they existed reads as "no
/// history" (0), and they are written only once there is some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// When it was first seen by us, unix milliseconds.
    pub first_seen_ms: i64,
    /// When it was last used (pulled, tagged, a container created, started or stopped), unix
    /// milliseconds.
    pub last_used_ms: i64,
    /// The latest container start, unix milliseconds; 0: none seen.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub started_ms: i64,
    /// The container start before that one (LRU-2's history), unix milliseconds; 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prev_started_ms: i64,
    /// Every container start, each weighed by 2^(-age / [`FREQUENCY_HALF_LIFE_MS`]), written
    /// as a time: the moment at which one start would weigh as much as all of them together
    /// (one start at t gives t; two at t give t + one half-life). Comparing two images' values
    /// compares their decayed start counts at any moment, so the ranking needs no clock.
    /// 0: none seen.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frequency_ms: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl Entry {
    /// A container of the image started at `at_ms`. Events may come out of order: the two
    /// latest starts are kept whatever the order, and the weighted count does not depend on it.
    pub fn record_start(&mut self, at_ms: i64) {
        if at_ms > self.started_ms {
            self.prev_started_ms = self.started_ms;
            self.started_ms = at_ms;
        } else if at_ms > self.prev_started_ms {
            self.prev_started_ms = at_ms;
        }
        self.frequency_ms = if self.frequency_ms == 0 {
            at_ms
        } else {
            add_weighted(self.frequency_ms, at_ms)
        };
    }
}

/// `h * log2(2^(a/h) + 2^(b/h))` with `h` the half-life, computed without overflow as
/// `max + h * log2(1 + 2^(-|a - b| / h))`. Times are below 2^53 ms, exact in an f64.
fn add_weighted(a: i64, b: i64) -> i64 {
    let h = FREQUENCY_HALF_LIFE_MS as f64;
    let (hi, lo) = (a.max(b), a.min(b));
    // The gap is at least 0, so the term is in [0, h]: the sum stays within i64.
    let gap = (hi - lo) as f64;
    hi + (h * (1.0 + (-gap / h).exp2()).log2()).round() as i64
}

/// The last-use table of one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastUse {
    images: BTreeMap<String, Entry>,
    cursor_nanos: Option<i64>,
    /// Since when the table has covered its engine (its first inventory), unix ms, across
    /// restarts: removals for age wait until it has covered the engine that long.
    covering_since_ms: Option<i64>,
    /// True until the first inventory has been recorded on a machine with no state: images
    /// found then take their build time; images found later take "now".
    fresh: bool,
    dirty: bool,
}

impl Default for LastUse {
    fn default() -> Self {
        LastUse::new()
    }
}

impl LastUse {
    /// An empty table, as on a first start.
    pub fn new() -> Self {
        LastUse {
            images: BTreeMap::new(),
            cursor_nanos: None,
            covering_since_ms: None,
            fresh: true,
            dirty: false,
        }
    }

    /// A table read back from the state file.
    pub(crate) fn restored(images: BTreeMap<String, Entry>, cursor_nanos: Option<i64>) -> Self {
        LastUse {
            images,
            cursor_nanos,
            covering_since_ms: None,
            fresh: false,
            dirty: false,
        }
    }

    /// A table that starts empty although state existed (it could not be read): images found
    /// take "now", not their build time.
    pub(crate) fn not_fresh() -> Self {
        LastUse {
            fresh: false,
            ..LastUse::new()
        }
    }

    /// The records, by image id.
    pub(crate) fn images(&self) -> &BTreeMap<String, Entry> {
        &self.images
    }

    /// True when the table changed since it was loaded or saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The table was saved.
    pub(crate) fn mark_saved(&mut self) {
        self.dirty = false;
    }

    /// The table must be written at the next save (it was migrated).
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Since when the table has covered its engine, unix ms: its first inventory, kept across
    /// restarts; `None` before it (and for a table whose state was lost).
    pub fn covering_since_ms(&self) -> Option<i64> {
        self.covering_since_ms
    }

    /// How long the table has covered its engine at `now_ms`, ms (0 before its first
    /// inventory).
    pub fn covered_ms(&self, now_ms: i64) -> i64 {
        self.covering_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since).max(0))
    }

    /// Sets when the table began covering its engine (read back from the state file).
    pub(crate) fn set_covering_since(&mut self, since_ms: Option<i64>) {
        self.covering_since_ms = since_ms;
    }

    /// The event time to replay the engine's events from, unix nanoseconds.
    pub fn cursor_nanos(&self) -> Option<i64> {
        self.cursor_nanos
    }

    /// Moves the replay cursor forward (never back).
    pub fn advance_cursor(&mut self, nanos: i64) {
        if self.cursor_nanos.is_none_or(|c| nanos > c) {
            self.cursor_nanos = Some(nanos);
            self.dirty = true;
        }
    }

    /// The record of image `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.images.get(id).copied()
    }

    /// Image `id` was used at `at_ms` (unix milliseconds).
    pub fn touch(&mut self, id: &str, at_ms: i64) {
        let entry = self.images.entry(id.to_string()).or_insert(Entry {
            first_seen_ms: at_ms,
            last_used_ms: at_ms,
            ..Entry::default()
        });
        if at_ms > entry.last_used_ms {
            entry.last_used_ms = at_ms;
        }
        self.dirty = true;
    }

    /// Image `id` is gone.
    pub fn forget(&mut self, id: &str) {
        if self.images.remove(id).is_some() {
            self.dirty = true;
        }
    }

    /// Applies one event: a deletion forgets the image; any other use touches `id` (the image
    /// the event names, resolved by the caller; `None` when it no longer exists) at the event's
    /// time, and a container start is also counted in its history. The cursor moves to the
    /// event either way.
    pub fn apply(&mut self, event: &UseEvent, id: Option<&str>) {
        if event.deleted {
            self.forget(&event.image);
        } else if let Some(id) = id {
            log::debug!("image {id} used ({} {})", event.action, event.image);
            let at_ms = event.time_nanos.div_euclid(1_000_000);
            self.touch(id, at_ms);
            if event.action == "start"
                && let Some(entry) = self.images.get_mut(id)
            {
                entry.record_start(at_ms);
            }
        }
        self.advance_cursor(event.time_nanos);
    }

    /// Brings the table in line with what the engine has now: images never seen take their
    /// build time on the very first start and `now_ms` afterwards (a pull while we were down is
    /// not old); images a running container uses are used now, and images a stopped container
    /// references were used when it stopped (or was created, when the engine did not say), not
    /// now: a pass that removes the container must not see its image as fresh; records of
    /// deleted images go. With `leftovers`, an image never seen that has no tag is what a
    /// removal of ours left behind (the chain of parents of a legacy build) and takes its
    /// build time, not now.
    /// The first inventory starts the table's coverage of the engine.
    pub fn reconcile(&mut self, inventory: &Inventory, now_ms: i64, leftovers: bool) {
        if self.covering_since_ms.is_none() {
            self.covering_since_ms = Some(now_ms);
            self.dirty = true;
        }
        let present: HashSet<&str> = inventory.images.iter().map(|i| i.id.as_str()).collect();
        let before = self.images.len();
        self.images.retain(|id, _| present.contains(id.as_str()));
        self.dirty |= self.images.len() != before;
        for image in &inventory.images {
            if !self.images.contains_key(&image.id) {
                let seen = if self.fresh || (leftovers && image.is_dangling()) {
                    image.created.saturating_mul(1000).min(now_ms)
                } else {
                    now_ms
                };
                self.images.insert(
                    image.id.clone(),
                    Entry {
                        first_seen_ms: seen,
                        last_used_ms: seen,
                        ..Entry::default()
                    },
                );
                self.dirty = true;
            }
        }
        for container in &inventory.containers {
            if present.contains(container.image_id.as_str()) {
                let at = if !container.is_stopped() {
                    now_ms
                } else {
                    container
                        .finished
                        .unwrap_or(container.created)
                        .saturating_mul(1000)
                        .min(now_ms)
                };
                self.touch(&container.image_id, at);
            }
        }
        self.fresh = false;
    }
}

#[cfg(test)]
mod tests;
