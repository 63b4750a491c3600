//! The decisions, and nothing else: given what is measured, what the engine holds, when each image
//! was last used, the configuration and the time, which containers and images go, in which
//! order ([`plan`]), and, while the plan runs, what to do next and when to stop
//! ([`next::Course`]). Pure: no I/O, no clock (`now_ms` is an argument), so every rule is a
//! table test.
//!
//! A plan is made in stages, each with its own table tests:
//! - `containers`: stopped containers go oldest first; the rest keep their images;
//! - `protect`: effective last use, and what protects an image (in use, a build in progress,
//!   keep rule, keep label, min age, parent of a protected image);
//! - `cache`: the build cache's prunes, after the dangling images and before any tagged image;
//! - `order`: dangling first, then the build cache, then least recently used first, children
//!   before parents, one order across every engine;
//! - `floors`: an engine's most recently used images stay once its footprint would drop below
//!   its floor.
//!
//! [`headroom`] sizes the watermarks of `threshold_low = "auto"` to what arrives on the node.
//!
//! Under pressure ([`plan`]) the steps free space down to the low watermark; an image unused for
//! longer than `max_unused_age` is marked `aged` and goes whatever the usage. Below the high
//! watermark [`plan_aged`] makes a plan of those removals alone.
//!
//! `types` holds the plain data (steps, reasons, the plan, the outcome, an engine as a plan sees
//! it); `display` prints a plan the same way in the log and for a dry run.

mod cache;
mod containers;
mod display;
mod floors;
pub mod headroom;
pub mod next;
mod order;
mod protect;
mod rank;
mod types;

use crate::config::{Config, Strategy, Watermarks};
use crate::usage::Measurement;

pub use display::{short, timestamp};
pub use headroom::{Arrival, Headroom};
pub use next::{Action, Course, Input, StepResult};
pub use types::{FloorState, Holding, Kept, Need, Outcome, Plan, Reason, Step};

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

/// How long an untagged image with a parent counts as the newest step of a classic build in
/// progress, which its next step is about to use (see `protect`): it covers the moment between
/// two steps and a `COPY` or `ADD` step copying for up to this long. What it keeps beyond
/// builds: an untagged `docker commit`, and a build's untagged result, for this long.
pub const BUILD_GRACE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// How long an untagged image without a parent counts as a step of a classic build in
/// progress: Docker's legacy builder stores a step's image, then names its parent, and a list
/// in between shows it without one (seen on Docker 28: a pass took such a step and the build
/// failed "failed to get digest"). An import or a load of a dangling image waits this long too.
pub const COMMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// True when `image` may be the newest step of a classic build in progress at `now_ms`, which
/// no removal may take (see [`BUILD_GRACE`]); strategy `prune`'s prunes spare it too.
pub fn is_build_step(image: &crate::docker::Image, now_ms: i64) -> bool {
    protect::building(image, now_ms).is_some()
}

/// A duration setting in milliseconds. The configuration keeps every duration below ten years,
/// so this never saturates in practice.
fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
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
        return plan_prune(holdings, need);
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

/// The plan of strategy `prune`, the original tool's: container prune and dangling image prune
/// on every engine, then `image prune -a` on every engine (run only when still needed).
fn plan_prune(holdings: &[Holding<'_>], need: Need) -> Plan {
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
    Plan {
        strategy: "prune",
        pressure: true,
        steps,
        kept: Vec::new(),
        need,
        estimated_steps: None,
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
