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
    /// deleted images go.
    /// The first inventory starts the table's coverage of the engine.
    pub fn reconcile(&mut self, inventory: &Inventory, now_ms: i64) {
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
                let seen = if self.fresh {
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
                let at = if container.running {
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
mod tests {
    use super::*;
    use crate::docker::{Container, Image};

    fn image(id: &str, created: i64) -> Image {
        Image {
            id: id.into(),
            parent_id: None,
            tags: vec![format!("{id}:latest")],
            created,
            size_bytes: 1,
            ..Image::default()
        }
    }

    fn container(image_id: &str) -> Container {
        Container {
            id: "c".into(),
            name: "c".into(),
            image_id: image_id.into(),
            running: false,
            created: 0,
            finished: None,
        }
    }

    #[test]
    fn first_start_takes_build_time_later_starts_take_now() {
        let mut t = LastUse::new();
        let inv = Inventory {
            images: vec![image("a", 100)],
            containers: vec![],
        };
        t.reconcile(&inv, 1_000_000);
        assert_eq!(t.get("a").unwrap().last_used_ms, 100_000);

        let mut t = LastUse::restored(t.images().clone(), None);
        let mut running = container("a");
        running.running = true;
        let inv = Inventory {
            images: vec![image("a", 100), image("b", 200)],
            containers: vec![running],
        };
        t.reconcile(&inv, 2_000_000);
        assert_eq!(
            t.get("b").unwrap().last_used_ms,
            2_000_000,
            "pulled while we were down"
        );
        assert_eq!(
            t.get("a").unwrap().last_used_ms,
            2_000_000,
            "a running container uses it"
        );
    }

    #[test]
    fn a_stopped_container_counts_when_it_stopped_not_now() {
        let mut t = LastUse::restored(BTreeMap::new(), None);
        let mut stopped = container("a");
        stopped.created = 300;
        stopped.finished = Some(500);
        let mut never_finished = container("b");
        never_finished.created = 400;
        let inv = Inventory {
            images: vec![image("a", 100), image("b", 100)],
            containers: vec![stopped, never_finished],
        };
        t.reconcile(&inv, 2_000_000);
        // New to the table: first seen now; the container does not make it newer.
        assert_eq!(t.get("a").unwrap().last_used_ms, 2_000_000);
        let mut t = LastUse::restored(
            BTreeMap::from([
                (
                    "a".to_string(),
                    Entry {
                        first_seen_ms: 100_000,
                        last_used_ms: 100_000,
                        ..Entry::default()
                    },
                ),
                (
                    "b".to_string(),
                    Entry {
                        first_seen_ms: 100_000,
                        last_used_ms: 100_000,
                        ..Entry::default()
                    },
                ),
            ]),
            None,
        );
        t.reconcile(&inv, 2_000_000);
        assert_eq!(t.get("a").unwrap().last_used_ms, 500_000, "when it stopped");
        assert_eq!(
            t.get("b").unwrap().last_used_ms,
            400_000,
            "when it was made"
        );
    }

    #[test]
    fn coverage_starts_at_the_first_inventory_and_is_never_moved() {
        let mut t = LastUse::new();
        assert_eq!(t.covering_since_ms(), None);
        assert_eq!(t.covered_ms(5_000), 0);
        t.reconcile(&Inventory::default(), 1_000);
        t.reconcile(&Inventory::default(), 9_000);
        assert_eq!(t.covering_since_ms(), Some(1_000));
        assert_eq!(t.covered_ms(9_000), 8_000);
        assert_eq!(
            t.covered_ms(500),
            0,
            "a clock that went back covers nothing"
        );
    }

    #[test]
    fn deleted_images_are_forgotten_and_touch_never_goes_back() {
        let mut t = LastUse::new();
        t.touch("a", 50);
        t.touch("a", 40);
        assert_eq!(t.get("a").unwrap().last_used_ms, 50);
        t.reconcile(&Inventory::default(), 60);
        assert_eq!(t.get("a"), None);
    }

    #[test]
    fn starts_are_counted_with_decay_and_the_two_latest_kept() {
        const H: i64 = FREQUENCY_HALF_LIFE_MS;
        let event = |ms: i64, action: &str| UseEvent {
            time_nanos: ms * 1_000_000,
            image: "sha256:a".into(),
            action: action.into(),
            deleted: false,
        };
        let mut t = LastUse::new();
        let t0 = 1_700_000_000_000;
        // A pull and a die are uses, not starts.
        t.apply(&event(t0, "pull"), Some("sha256:a"));
        t.apply(&event(t0 + 5, "die"), Some("sha256:a"));
        let e = t.get("sha256:a").unwrap();
        assert_eq!((e.started_ms, e.prev_started_ms, e.frequency_ms), (0, 0, 0));
        // One start at t weighs like a start at t; two at t like one a half-life later.
        t.apply(&event(t0 + 10, "start"), Some("sha256:a"));
        assert_eq!(t.get("sha256:a").unwrap().frequency_ms, t0 + 10);
        t.apply(&event(t0 + 10, "start"), Some("sha256:a"));
        assert_eq!(t.get("sha256:a").unwrap().frequency_ms, t0 + 10 + H);
        // A start a half-life later than two: 2 * 1/2 + 1 = 2 starts' weight then.
        t.apply(&event(t0 + 10 + H, "start"), Some("sha256:a"));
        let e = t.get("sha256:a").unwrap();
        assert_eq!(e.frequency_ms, t0 + 10 + 2 * H);
        assert_eq!((e.started_ms, e.prev_started_ms), (t0 + 10 + H, t0 + 10));
        // A late event of an older start: the latest two stay, the count grows.
        t.apply(&event(t0 + 20, "start"), Some("sha256:a"));
        let e = t.get("sha256:a").unwrap();
        assert_eq!((e.started_ms, e.prev_started_ms), (t0 + 10 + H, t0 + 20));
        assert!(e.frequency_ms > t0 + 10 + 2 * H);
    }

    #[test]
    fn records_without_history_read_and_write_as_before() {
        let old: Entry =
            serde_json::from_str(r#"{"first_seen_ms": 1, "last_used_ms": 2}"#).unwrap();
        assert_eq!(
            old,
            Entry {
                first_seen_ms: 1,
                last_used_ms: 2,
                ..Entry::default()
            }
        );
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"first_seen_ms":1,"last_used_ms":2}"#
        );
        let mut new = old;
        new.record_start(3);
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), new);
        assert!(text.contains(r#""frequency_ms":3"#), "{text}");
    }

    #[test]
    fn events_in_one_second_keep_their_order() {
        let mut t = LastUse::new();
        let event = |nanos: i64| UseEvent {
            time_nanos: nanos,
            image: "app:1".into(),
            action: "start".into(),
            deleted: false,
        };
        t.apply(&event(5_000_100_000_000), Some("sha256:a"));
        t.apply(&event(5_000_900_000_000), Some("sha256:b"));
        assert!(t.get("sha256:a").unwrap().last_used_ms < t.get("sha256:b").unwrap().last_used_ms);
        assert_eq!(t.cursor_nanos(), Some(5_000_900_000_000));
    }
}
