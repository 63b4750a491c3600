//! The decisions, and nothing else: given what is measured, what the engine holds, when each image
//! was last used, the configuration and the time, which containers and images go, in which
//! order ([`plan`]), and, while the plan runs, what to do next and when to stop
//! ([`next::Course`]). Pure: no I/O, no clock (`now_ms` is an argument), so every rule is a
//! table test.
//!
//! A plan is made in stages, each with its own table tests:
//! - `containers`: stopped containers go oldest first; the rest keep their images;
//! - `protect`: effective last use, and what protects an image (in use, keep rule, keep label,
//!   min age, parent of a protected image);
//! - `cache`: the build cache's prunes, after the dangling images and before any tagged image;
//! - `order`: dangling first, then the build cache, then least recently used first, children
//!   before parents, one order across every engine;
//! - `floors`: an engine's most recently used images stay once its footprint would drop below
//!   its floor.
//!
//! Under pressure ([`plan`]) the steps free space down to the low watermark; an image unused for
//! longer than `max_unused_age` is marked `aged` and goes whatever the usage. Below the high
//! watermark [`plan_aged`] makes a plan of those removals alone.
//!
//! `display` prints a plan the same way in the log and for a dry run.

mod cache;
mod containers;
mod display;
mod floors;
pub mod next;
mod order;
mod protect;
mod rank;

use serde::Serialize;

use crate::config::{Config, Strategy, Watermarks};
use crate::docker::{BuildCache, Inventory};
use crate::lastuse::LastUse;
use crate::usage::Measurement;

pub use display::{short, timestamp};
pub use next::{Action, Course, Input, StepResult};

/// At or above the high watermark: a pass must clean.
pub fn above_high(m: &Measurement, w: &Watermarks) -> bool {
    match (m, w) {
        (Measurement::Absolute(t), Watermarks::Absolute { high_bytes, .. }) => {
            t.bytes >= *high_bytes
        }
        (_, Watermarks::Relative { high_pct, .. }) => m.level() >= *high_pct,
        (Measurement::Relative(_), Watermarks::Absolute { .. }) => false,
    }
}

/// Below the low watermark, blocks and inodes both: a pass may stop.
pub fn below_low(m: &Measurement, w: &Watermarks) -> bool {
    match (m, w) {
        (Measurement::Absolute(t), Watermarks::Absolute { low_bytes, .. }) => t.bytes < *low_bytes,
        (_, Watermarks::Relative { low_pct, .. }) => m.level() < *low_pct,
        (Measurement::Relative(_), Watermarks::Absolute { .. }) => true,
    }
}

/// How much must go to get below the low watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Need {
    /// Bytes to free (on the fullest filesystem, or in the trees).
    pub bytes: u64,
    /// Inodes to free (relative mode only; 0 when inodes are not the problem).
    pub inodes: u64,
}

/// The shortfall to the low watermark.
pub fn need(m: &Measurement, w: &Watermarks) -> Need {
    match (m, w) {
        (Measurement::Relative(all), Watermarks::Relative { low_pct, .. }) => Need {
            bytes: all
                .iter()
                .map(|fs| fs.bytes_to_reach(*low_pct))
                .max()
                .unwrap_or(0),
            inodes: all
                .iter()
                .map(|fs| fs.inodes_to_reach(*low_pct))
                .max()
                .unwrap_or(0),
        },
        (Measurement::Absolute(t), Watermarks::Absolute { low_bytes, .. }) => Need {
            bytes: t.bytes.saturating_add(1).saturating_sub(*low_bytes),
            inodes: 0,
        },
        _ => Need::default(),
    }
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Below the high watermark: nothing to do.
    BelowHigh,
    /// Dry run: the plan was printed, nothing removed.
    DryRun,
    /// The cordon failed and `on_cordon_failure = "skip"`.
    Skipped,
    /// Cleaned until below the low watermark.
    ReachedLow,
    /// Below the high watermark: images unused for longer than `max_unused_age` were removed.
    Aged,
    /// Everything eligible is gone and usage is still above the low watermark.
    Exhausted,
    /// Everything above the engines' floors is gone and usage is still above the low
    /// watermark: the rest of the disk is outside the engines (or below their floors).
    FloorsReached,
    /// Shutdown was asked for; stopped between two steps.
    Interrupted,
    /// Every fleet slot stayed held for the whole interval: nothing cordoned, nothing removed;
    /// the next tick tries again.
    NoSlot,
}

/// Whether an engine event may have added bytes to the disk, so that usage is measured at once
/// (between two ticks) rather than at the next tick: a pull, load, import or build, and a
/// container create (its writable layer). Only in relative mode, where measuring is a
/// `statvfs`; absolute mode walks trees and keeps to the interval.
pub fn may_add_bytes(event: &crate::docker::UseEvent, config: &Config) -> bool {
    matches!(config.watermarks, Watermarks::Relative { .. })
        && !event.deleted
        && matches!(
            event.action.as_str(),
            "pull" | "load" | "import" | "build" | "create"
        )
}

/// Whether the node is cordoned for a plan: only when it removes something, and never in a dry
/// run (nothing eligible is no reason to keep pods off the node); a plan below the high
/// watermark (removals for age only) only when `max_unused_age_cordon` asks for it.
pub fn cordons(plan: &Plan, config: &Config) -> bool {
    !config.dry_run && !plan.steps.is_empty() && (plan.pressure || config.max_unused_age_cordon)
}

/// One action of a pass, on one engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Remove a stopped container.
    RemoveContainer {
        /// The engine.
        engine: String,
        /// Container id.
        id: String,
        /// Its name.
        name: String,
        /// When it stopped (or was created, if never started), unix seconds.
        stopped: i64,
    },
    /// Remove an image by id (untagging it first when it has several tags).
    RemoveImage {
        /// The engine.
        engine: String,
        /// Image id.
        id: String,
        /// Its tags (empty: dangling).
        tags: Vec<String>,
        /// Size the engine reports.
        size_bytes: u64,
        /// Last use, unix milliseconds.
        last_used_ms: i64,
        /// Unused for longer than `max_unused_age`: it goes whatever the usage (floors and the
        /// low watermark do not keep it).
        aged: bool,
    },
    /// Prune an engine's build cache, least recently used first (BuildKit's order).
    PruneBuildCache {
        /// The engine.
        engine: String,
        /// Stop once the cache (the records not shared with an image) is at most this large;
        /// 0: remove every record the prune may.
        keep_bytes: u64,
        /// What the records say should go, bytes.
        size_bytes: u64,
        /// How many records should go.
        records: usize,
        /// Records used within this many seconds stay.
        unused_for_secs: u64,
    },
    /// `docker container prune` (strategy `prune`).
    PruneContainers {
        /// The engine.
        engine: String,
    },
    /// `docker image prune` (strategy `prune`).
    PruneDanglingImages {
        /// The engine.
        engine: String,
    },
    /// `docker image prune -a`, run only when no dangling image was found or usage is still
    /// above high (strategy `prune`).
    PruneAllImages {
        /// The engine.
        engine: String,
    },
}

impl Step {
    /// The engine the step acts on.
    pub fn engine(&self) -> &str {
        match self {
            Step::RemoveContainer { engine, .. }
            | Step::RemoveImage { engine, .. }
            | Step::PruneBuildCache { engine, .. }
            | Step::PruneContainers { engine }
            | Step::PruneDanglingImages { engine }
            | Step::PruneAllImages { engine } => engine,
        }
    }

    /// True for an image removal for age (`max_unused_age`).
    pub fn is_aged(&self) -> bool {
        matches!(self, Step::RemoveImage { aged: true, .. })
    }
}

/// Why an image or container stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// A remaining container uses it.
    InUse {
        /// The container's name.
        container: String,
    },
    /// A `keep` pattern matches one of its tags.
    KeepRule {
        /// The pattern.
        pattern: String,
    },
    /// A `keep_labels` rule matches one of its labels.
    KeepLabel {
        /// The rule, as configured (`key` or `key=value`).
        rule: String,
        /// The image's label it matched, `key=value`.
        label: String,
    },
    /// Used (or first seen) less than `min_age` ago.
    TooYoung {
        /// Seconds since last use.
        age_secs: i64,
    },
    /// An image that stays depends on it.
    Parent {
        /// The id of the nearest image that stays for a reason of its own and depends on it.
        child: String,
    },
    /// Removing it would take its engine's footprint below the engine's floor (pressure from
    /// outside the engine does not empty it); the most recently used images stay.
    Floor {
        /// The engine's footprint before the pass, bytes.
        footprint_bytes: u64,
        /// The floor, bytes.
        floor_bytes: u64,
    },
    /// A stopped container that finished less than `container_min_age` ago.
    RecentlyStopped {
        /// Seconds since it stopped.
        age_secs: i64,
    },
}

/// Something that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The engine.
    pub engine: String,
    /// Image or container id.
    pub id: String,
    /// Tags, or the container's name.
    pub names: Vec<String>,
    /// Why.
    pub reason: Reason,
}

/// What a pass would do, in order; plain data, logged before it runs and printed by dry-run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The strategy that made it.
    pub strategy: &'static str,
    /// Made at or above the high watermark: it frees space down to the low watermark. A plan
    /// made below it ([`plan_aged`]) holds only removals for age and runs whole, uncordoned
    /// unless `max_unused_age_cordon`.
    pub pressure: bool,
    /// What to remove, in order; the pass stops early once below the low watermark.
    pub steps: Vec<Step>,
    /// What stays, and why.
    pub kept: Vec<Kept>,
    /// How much must go.
    pub need: Need,
    /// How many steps should be enough, by the sizes Docker reports; `None` when that cannot be
    /// estimated (inodes are short, or the strategy prunes).
    pub estimated_steps: Option<usize>,
}

/// A duration setting in milliseconds. The configuration keeps every duration below ten years,
/// so this never saturates in practice.
fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One engine as a plan sees it: what it holds, when its images were last used, and its floor.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// The engine's name.
    pub name: &'a str,
    /// What it holds.
    pub inventory: &'a Inventory,
    /// When its images were last used.
    pub last_use: &'a LastUse,
    /// Its floor against its footprint, when one applies this pass (none set, or critical:
    /// `None`).
    pub floor: Option<FloorState>,
    /// Its build cache, when read this pass (`None`: not read, or no build cache endpoint).
    pub build_cache: Option<&'a BuildCache>,
}

/// An engine's footprint at the start of the pass and its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FloorState {
    /// Its data, `du -sx`, at the start of the pass.
    pub footprint_bytes: u64,
    /// Pressure from outside never takes the footprint below this.
    pub floor_bytes: u64,
}

/// Whether usage is at or above the critical watermark on any of `filesystems`: floors are
/// ignored and the min age falls to `critical_min_age` for the pass.
pub fn critical(filesystems: &[crate::usage::FsUsage], config: &Config) -> bool {
    filesystems
        .iter()
        .any(|fs| fs.used_pct() >= config.critical_pct)
}

/// The last use before which an image of `h` counts as unused for longer than
/// `max_unused_age`, unix ms; `None` when that rule is off, or its last-use table has not yet
/// covered the engine that long (a fresh install takes nothing for stale).
fn aged_before(h: &Holding<'_>, config: &Config, now_ms: i64) -> Option<i64> {
    let max = millis(config.max_unused_age);
    (config.strategy != Strategy::Prune && max > 0 && h.last_use.covered_ms(now_ms) >= max)
        .then(|| now_ms.saturating_sub(max))
}

/// The plan below the high watermark: every image unused for longer than `max_unused_age`, on
/// each engine whose last-use table has covered it that long, with every protection (in use by
/// any container, keep rules and labels, min age, parents of what stays); no container, no
/// build cache, no floor (nothing presses). Empty when the rule is off.
pub fn plan_aged(holdings: &[Holding<'_>], config: &Config, now_ms: i64) -> Plan {
    let mut kept = Vec::new();
    let mut ranked = Vec::new();
    for h in holdings {
        let Some(cutoff) = aged_before(h, config, now_ms) else {
            continue;
        };
        // No container is removed below high: every one keeps its image.
        let users = containers::users(h.inventory);
        let graph = protect::Graph::new(h.inventory);
        let last_used = protect::effective_last_use(h.inventory, &graph, h.last_use);
        let rules = protect::Rules {
            engine: h.name,
            users: &users,
            keep: &config.keep,
            keep_labels: &config.keep_labels,
            min_age_ms: millis(config.min_age),
            now_ms,
        };
        let protection = protect::protect(h.inventory, &graph, &last_used, &rules);
        let stale = |id: &str| last_used.get(id).is_some_and(|&t| t < cutoff);
        kept.extend(protection.kept.into_iter().filter(|k| stale(&k.id)));
        let candidates = protection
            .candidates
            .into_iter()
            .filter(|i| stale(&i.id))
            .collect();
        let keys = rank::keys(config.strategy, h.inventory, &graph, h.last_use, &last_used);
        ranked.extend(order::rank(
            h.name,
            candidates,
            h.inventory,
            &graph,
            &last_used,
            &keys,
            Some(cutoff),
        ));
    }
    Plan {
        strategy: config.strategy.name(),
        pressure: false,
        steps: order::order(ranked),
        kept,
        need: Need::default(),
        estimated_steps: None,
    }
}

/// Makes the plan for the `holdings` given the shortfall `need`, at `now_ms` (unix ms): one
/// order across every engine. `critical`: at or above the critical watermark (the min age is
/// `critical_min_age`; floors have already been left out of `holdings` by the caller).
pub fn plan(
    holdings: &[Holding<'_>],
    config: &Config,
    need: Need,
    now_ms: i64,
    critical: bool,
) -> Plan {
    if config.strategy == Strategy::Prune {
        let mut steps = Vec::new();
        for h in holdings {
            let engine = h.name.to_string();
            steps.push(Step::PruneContainers {
                engine: engine.clone(),
            });
            steps.push(Step::PruneDanglingImages {
                engine: engine.clone(),
            });
        }
        for h in holdings {
            steps.push(Step::PruneAllImages {
                engine: h.name.to_string(),
            });
        }
        return Plan {
            strategy: "prune",
            pressure: true,
            steps,
            kept: Vec::new(),
            need,
            estimated_steps: None,
        };
    }
    let min_age = if critical {
        config.critical_min_age.min(config.min_age)
    } else {
        config.min_age
    };
    let mut container_steps = Vec::new();
    let mut kept = Vec::new();
    let mut ranked = Vec::new();
    for h in holdings {
        let containers = containers::containers(
            h.name,
            h.inventory,
            millis(config.container_min_age),
            now_ms,
        );
        let graph = protect::Graph::new(h.inventory);
        let last_used = protect::effective_last_use(h.inventory, &graph, h.last_use);
        let rules = protect::Rules {
            engine: h.name,
            users: &containers.users,
            keep: &config.keep,
            keep_labels: &config.keep_labels,
            min_age_ms: millis(min_age),
            now_ms,
        };
        let protection = protect::protect(h.inventory, &graph, &last_used, &rules);
        container_steps.extend(containers.steps);
        kept.extend(containers.kept);
        kept.extend(protection.kept);
        let keys = rank::keys(config.strategy, h.inventory, &graph, h.last_use, &last_used);
        ranked.extend(order::rank(
            h.name,
            protection.candidates,
            h.inventory,
            &graph,
            &last_used,
            &keys,
            aged_before(h, config, now_ms),
        ));
        if let Some(build_cache) = h.build_cache {
            let rules = cache::Rules {
                min_age_ms: millis(if critical {
                    config.critical_min_age.min(config.build_cache_min_age)
                } else {
                    config.build_cache_min_age
                }),
                now_ms,
                need,
            };
            ranked.extend(order::rank_cache(cache::steps(h.name, build_cache, &rules)));
        }
    }
    // Stopped containers first, oldest first, whichever engine.
    container_steps.sort_by_key(|s| match s {
        Step::RemoveContainer { stopped, id, .. } => (*stopped, id.clone()),
        _ => (i64::MAX, String::new()),
    });
    let (image_steps, floor_kept) = floors::apply(order::order(ranked), holdings);
    let mut steps = container_steps;
    steps.extend(image_steps);
    kept.extend(floor_kept);
    let estimated_steps = estimate(&steps, need);
    Plan {
        strategy: config.strategy.name(),
        pressure: true,
        steps,
        kept,
        need,
        estimated_steps,
    }
}

/// How many steps the reported sizes say are enough (shared layers make it optimistic; the
/// pass itself re-measures).
fn estimate(steps: &[Step], need: Need) -> Option<usize> {
    if need.inodes > 0 {
        return None;
    }
    let mut freed = 0u64;
    for (i, step) in steps.iter().enumerate() {
        if freed >= need.bytes {
            return Some(i);
        }
        if let Step::RemoveImage { size_bytes, .. } | Step::PruneBuildCache { size_bytes, .. } =
            step
        {
            freed = freed.saturating_add(*size_bytes);
        }
    }
    (freed >= need.bytes).then_some(steps.len())
}

#[cfg(test)]
mod tests;
