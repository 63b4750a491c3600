//! What a pass did: the [`Report`] (one line in the log, `STATUS=`, the exit of `once`) and the
//! Event posted on the Node. Formatting only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::Watermarks;
use crate::node::NodeEvent;
use crate::policy::{self, Outcome, Plan};
use crate::usage::{Measurement, signed_size, size};

/// Counts of what the execution did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Containers removed.
    pub containers: usize,
    /// Images removed, for space and for age.
    pub images: usize,
    /// Of `images`, those removed because they were unused for longer than `max_unused_age`
    /// (reason "age"; the others went for space).
    pub aged_images: usize,
    /// Removals refused (409), found done (404) or left because the image changed.
    pub skipped: usize,
    /// Build-cache records removed.
    pub cache_records: usize,
    /// Bytes the build-cache prunes reclaimed, as the engine reports.
    pub cache_bytes: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.containers += other.containers;
        self.images += other.images;
        self.aged_images += other.aged_images;
        self.skipped += other.skipped;
        self.cache_records += other.cache_records;
        self.cache_bytes = self.cache_bytes.saturating_add(other.cache_bytes);
    }
}

/// Counts per engine, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tallies(pub BTreeMap<String, Tally>);

impl Tallies {
    /// The counts of `engine`.
    pub fn of(&mut self, engine: &str) -> &mut Tally {
        self.0.entry(engine.to_string()).or_default()
    }

    /// Every engine's counts added up.
    pub fn total(&self) -> Tally {
        let mut t = Tally::default();
        for e in self.0.values() {
            t.add(e);
        }
        t
    }

    /// `dind 2 containers, 3 images; host 1 image` when more than one engine did something;
    /// empty otherwise.
    pub fn per_engine(&self) -> String {
        let busy: Vec<String> = self
            .0
            .iter()
            .filter(|(_, t)| t.containers + t.images > 0)
            .map(|(name, t)| {
                format!(
                    "{name} {}, {}",
                    count(t.containers, "container"),
                    count(t.images, "image")
                )
            })
            .collect();
        if self.0.len() > 1 && !busy.is_empty() {
            busy.join("; ")
        } else {
            String::new()
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Usage when it started.
    pub before: Measurement,
    /// Usage when it ended (measured again).
    pub after: Measurement,
    /// The plan, when one was made.
    pub plan: Option<Plan>,
    /// Containers removed.
    pub removed_containers: usize,
    /// Images removed, for space and for age.
    pub removed_images: usize,
    /// Of `removed_images`, those removed because they were unused for longer than
    /// `max_unused_age` (reason "age"); the rest went for space.
    pub aged_images: usize,
    /// Removals Docker refused (409), found already done (404), or left alone because the
    /// image changed since the plan.
    pub skipped: usize,
    /// Build-cache records the pass removed.
    pub build_cache_records: usize,
    /// Bytes the build-cache prunes reclaimed, as the engines report.
    pub build_cache_bytes: u64,
    /// Bytes freed, measured (negative when something else wrote meanwhile).
    pub freed_bytes: i64,
    /// Inodes freed, measured (relative mode).
    pub freed_inodes: i64,
    /// How long it took.
    pub duration: Duration,
    /// What each engine did.
    pub engines: Tallies,
}

impl Report {
    /// The report of a pass that went from `before` to `after`.
    pub fn new(
        outcome: Outcome,
        before: Measurement,
        after: Measurement,
        plan: Option<Plan>,
        engines: Tallies,
        duration: Duration,
    ) -> Self {
        let (freed_bytes, freed_inodes) = before.freed_since(&after);
        let tally = engines.total();
        Report {
            outcome,
            before,
            after,
            plan,
            removed_containers: tally.containers,
            removed_images: tally.images,
            aged_images: tally.aged_images,
            skipped: tally.skipped,
            build_cache_records: tally.cache_records,
            build_cache_bytes: tally.cache_bytes,
            freed_bytes,
            freed_inodes,
            duration,
            engines,
        }
    }

    /// How the pass ended, in words.
    pub fn outcome_text(&self) -> &'static str {
        outcome_text(self.outcome)
    }

    /// The one line logged at the end of a pass.
    pub fn summary(&self) -> String {
        let per_engine = self.engines.per_engine();
        format!(
            "{}: removed {} and {} ({} skipped{}){}, freed {} and {} inodes in {:.1}s; before {}; after {}",
            self.outcome_text(),
            count(self.removed_containers, "container"),
            count(self.removed_images, "image"),
            self.skipped,
            if per_engine.is_empty() {
                String::new()
            } else {
                format!("; {per_engine}")
            },
            extras(&self.engines.total()),
            signed_size(self.freed_bytes),
            self.freed_inodes,
            self.duration.as_secs_f64(),
            self.before,
            self.after
        )
    }
}

/// What a pass did besides containers and images for space, as a clause after the counts:
/// `, 2 of the images for age` and `, 5 build cache records (1.2 GiB)`, each when not none.
fn extras(t: &Tally) -> String {
    let mut out = String::new();
    if t.aged_images > 0 {
        out.push_str(&format!(
            ", {} of the images unused for longer than max_unused_age",
            t.aged_images
        ));
    }
    if t.cache_records > 0 || t.cache_bytes > 0 {
        out.push_str(&format!(
            ", {} ({})",
            count(t.cache_records, "build cache record"),
            size(t.cache_bytes)
        ));
    }
    out
}

/// `1 image`, `2 images`: a count and its noun, in the plural unless it is one.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How a pass ended, in words.
pub fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::BelowHigh => "below the high watermark, nothing to do",
        Outcome::Aged => {
            "below the high watermark; removed what was unused for longer than max_unused_age"
        }
        Outcome::DryRun => "dry run, nothing removed",
        Outcome::Skipped => "skipped: the node could not be cordoned",
        Outcome::ReachedLow => "below the low watermark",
        Outcome::Exhausted => "nothing left to remove, still above the low watermark",
        Outcome::FloorsReached => {
            "everything above the engines' floors is gone, still above the low watermark"
        }
        Outcome::Interrupted => "interrupted by shutdown",
        Outcome::NoSlot => {
            "no cleaning slot free for the whole interval, nothing removed; trying again at the next tick"
        }
    }
}

/// What the Node Event of a pass says beyond the counts.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// At or above the critical watermark.
    pub critical: Option<f64>,
    /// Bytes of each watched filesystem outside the engines, by path (when measured).
    pub outside: Vec<(String, u64)>,
}

/// The Node Event for a pass that removed something or could not reach the low watermark.
pub fn node_event(
    outcome: Outcome,
    engines: &Tallies,
    before: &Measurement,
    after: &Measurement,
    w: &Watermarks,
    context: &Context,
) -> Option<NodeEvent> {
    let (bytes, inodes) = before.freed_since(after);
    let t = engines.total();
    let per_engine = engines.per_engine();
    let per_engine = if per_engine.is_empty() {
        String::new()
    } else {
        format!(" ({per_engine})")
    };
    let critical = context.critical.map_or(String::new(), |pct| {
        format!("; at or above the critical watermark ({pct}%): floors ignored, min age lowered")
    });
    let need = policy::need(after, w);
    match outcome {
        Outcome::Exhausted => Some(NodeEvent {
            warning: true,
            reason: "FreeDiskSpaceFailed",
            message: format!(
                "removed {} and {}{per_engine}{}, freed {}, but usage is still above the low watermark ({w}): {} and {} inodes short; now {after}{critical}",
                count(t.containers, "container"),
                count(t.images, "image"),
                extras(&t),
                signed_size(bytes),
                size(need.bytes),
                need.inodes
            ),
        }),
        Outcome::FloorsReached => {
            let outside: Vec<String> = context
                .outside
                .iter()
                .map(|(path, b)| format!("{} on {path}", size(*b)))
                .collect();
            Some(NodeEvent {
                warning: true,
                reason: "DiskPressureElsewhere",
                message: format!(
                    "removed {} and {}{per_engine}{}, freed {}; what is left of the engines is at their floors and usage is still above the low watermark ({w}), {} short: {} outside the engines; now {after}",
                    count(t.containers, "container"),
                    count(t.images, "image"),
                    extras(&t),
                    signed_size(bytes),
                    size(need.bytes),
                    if outside.is_empty() {
                        "the rest is".to_string()
                    } else {
                        outside.join(", ")
                    }
                ),
            })
        }
        _ if t.containers + t.images + t.cache_records > 0 => Some(NodeEvent {
            warning: false,
            reason: "ImagesRemoved",
            message: format!(
                "removed {} and {}{per_engine}{}, freed {} and {inodes} inodes; now {after}{critical}",
                count(t.containers, "container"),
                count(t.images, "image"),
                extras(&t),
                signed_size(bytes)
            ),
        }),
        _ => None,
    }
}

/// Remembers the warnings posted, so that a condition that lasts (a disk full of somebody
/// else's files) is posted once an hour, not at every tick.
#[derive(Debug, Default)]
pub struct Quiet {
    last: Option<(&'static str, Instant)>,
}

impl Quiet {
    /// How long the same warning stays quiet.
    pub const PERIOD: Duration = Duration::from_secs(3600);

    /// Whether `event` is posted now: always for a normal one, for a warning unless the same
    /// reason was posted less than [`Quiet::PERIOD`] ago by the previous pass to post one.
    pub fn admit(&mut self, event: &NodeEvent, now: Instant) -> bool {
        if !event.warning {
            self.last = None;
            return true;
        }
        match self.last {
            Some((reason, at))
                if reason == event.reason && now.saturating_duration_since(at) < Self::PERIOD =>
            {
                false
            }
            _ => {
                self.last = Some((event.reason, now));
                true
            }
        }
    }

    /// A pass ended without a warning: the next one is posted at once.
    pub fn clear(&mut self) {
        self.last = None;
    }
}
