//! One cleaning pass: measure, take stock, plan, cordon, remove step by step while re-measuring,
//! release the cordon on every path, report. The rules live in [`crate::policy`]; this module
//! only sequences them and guarantees the release.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Strategy, Watermarks};
use crate::docker::{self, Engine, Removal};
use crate::lastuse::LastUse;
use crate::node::{Cordoner, NodeEvent, PassStart};
use crate::policy::{self, Measurement, Plan, Step, size};
use crate::usage;

/// Errors that end a pass early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watched path cannot be measured.
    #[error("cannot measure {path}")]
    Measure {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: usage::Error,
    },
    /// A watched path is missing or inaccessible.
    #[error("cannot access watched path {path}")]
    Access {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] docker::Error),
}

impl Error {
    /// True when the next tick may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Measure { .. } | Error::Access { .. } => false,
            Error::Docker(e) => e.is_transient(),
        }
    }
}

/// Receives a one-line summary whenever a pass makes progress (systemd `STATUS=`, and a sign of
/// life for the watchdog).
pub trait Progress: Sync {
    /// The pass moved on.
    fn update(&self, status: &str);
}

impl Progress for () {
    fn update(&self, _status: &str) {}
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
    /// Everything eligible is gone and usage is still above the low watermark.
    Exhausted,
    /// Shutdown was asked for; stopped between two steps.
    Interrupted,
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
    /// Images removed.
    pub removed_images: usize,
    /// Removals Docker refused (409) or found already done (404).
    pub skipped: usize,
    /// Bytes freed, measured (negative when something else wrote meanwhile).
    pub freed_bytes: i64,
    /// Inodes freed, measured (relative mode).
    pub freed_inodes: i64,
    /// How long it took.
    pub duration: Duration,
}

impl Report {
    /// How the pass ended, in words.
    pub fn outcome_text(&self) -> &'static str {
        match self.outcome {
            Outcome::BelowHigh => "below the high watermark, nothing to do",
            Outcome::DryRun => "dry run, nothing removed",
            Outcome::Skipped => "skipped: the node could not be cordoned",
            Outcome::ReachedLow => "below the low watermark",
            Outcome::Exhausted => "nothing left to remove, still above the low watermark",
            Outcome::Interrupted => "interrupted by shutdown",
        }
    }

    /// The one line logged at the end of a pass.
    pub fn summary(&self) -> String {
        format!(
            "{}: removed {} containers and {} images ({} skipped), freed {} and {} inodes in {:.1}s; before {}; after {}",
            self.outcome_text(),
            self.removed_containers,
            self.removed_images,
            self.skipped,
            signed_size(self.freed_bytes),
            self.freed_inodes,
            self.duration.as_secs_f64(),
            self.before,
            self.after
        )
    }
}

fn signed_size(bytes: i64) -> String {
    if bytes < 0 {
        format!("-{}", size(bytes.unsigned_abs()))
    } else {
        size(bytes as u64)
    }
}

/// Unix nanoseconds now (Docker's event times and the replay cursor are in nanoseconds).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Measures the watched paths: `statvfs` of each filesystem once (two paths on one filesystem
/// count once), or the trees added up in absolute mode (the walk runs off the async threads).
pub async fn measure(config: &Config) -> Result<Measurement, Error> {
    match config.watermarks {
        Watermarks::Relative { .. } => {
            let mut seen = HashSet::new();
            let mut all = Vec::new();
            for path in &config.paths {
                let dev = std::fs::metadata(path)
                    .map_err(|source| Error::Access {
                        path: path.clone(),
                        source,
                    })?
                    .dev();
                if seen.insert(dev) {
                    all.push(usage::statvfs(path).map_err(|source| Error::Measure {
                        path: path.clone(),
                        source,
                    })?);
                }
            }
            Ok(Measurement::Relative(all))
        }
        Watermarks::Absolute { .. } => {
            let paths = config.paths.clone();
            let first = paths.first().cloned().unwrap_or_default();
            let walked = tokio::task::spawn_blocking(move || usage::tree_usage(&paths)).await;
            match walked {
                Ok(Ok(tree)) => {
                    if tree.unreadable > 0 {
                        log::warn!(
                            "{} entries could not be read while measuring",
                            tree.unreadable
                        );
                    }
                    Ok(Measurement::Absolute(tree))
                }
                Ok(Err(source)) => Err(Error::Measure {
                    path: first,
                    source,
                }),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    }
}

/// Freed bytes and inodes between two measurements.
fn freed(before: &Measurement, after: &Measurement) -> (i64, i64) {
    match (before, after) {
        (Measurement::Relative(b), Measurement::Relative(a)) => {
            b.iter().zip(a).fold((0, 0), |acc, (b, a)| {
                (
                    acc.0 + a.avail_bytes as i64 - b.avail_bytes as i64,
                    acc.1 + a.avail_inodes as i64 - b.avail_inodes as i64,
                )
            })
        }
        (Measurement::Absolute(b), Measurement::Absolute(a)) => (
            b.bytes as i64 - a.bytes as i64,
            b.inodes as i64 - a.inodes as i64,
        ),
        _ => (0, 0),
    }
}

/// Everything a pass works with.
pub struct Pass<'a, E: Engine> {
    /// The configuration.
    pub config: &'a Config,
    /// Docker.
    pub engine: &'a E,
    /// Last-use times; reconciled with the inventory before planning.
    pub last_use: &'a mut LastUse,
    /// The cordon guard.
    pub cordoner: &'a mut Cordoner,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Set when the process is asked to stop: no new removal starts after it.
    pub shutdown: &'a CancellationToken,
}

/// Tallies of the execution.
#[derive(Default)]
struct Tally {
    containers: usize,
    images: usize,
    skipped: usize,
}

impl<E: Engine> Pass<'_, E> {
    /// Runs one pass. The node is released on every path out of it, errors included.
    pub async fn run(mut self) -> Result<Report, Error> {
        let started = Instant::now();
        let config = self.config;
        let before = measure(config).await?;
        if !policy::above_high(&before, &config.watermarks) {
            log::info!(
                "usage {before}: below the high watermark ({})",
                config.watermarks
            );
            return Ok(self.report(
                Outcome::BelowHigh,
                before.clone(),
                before,
                None,
                Tally::default(),
                started,
            ));
        }
        log::info!(
            "usage {before}: at or above the high watermark ({}), cleaning",
            config.watermarks
        );
        self.progress.update("cleaning: taking stock");
        // Taking stock changes nothing: a shutdown need not wait for it.
        let inventory = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                return Ok(self.report(Outcome::Interrupted, before.clone(), before, None, Tally::default(), started));
            }
            inventory = self.engine.inventory(!config.container_min_age.is_zero()) => inventory?,
        };
        let now = now_secs();
        self.last_use.reconcile(&inventory, now);
        let need = policy::need(&before, &config.watermarks);
        let plan = policy::plan(&inventory, self.last_use, config, need, now);
        log::info!("{}", plan.to_string().trim_end());
        if config.dry_run {
            return Ok(self.report(
                Outcome::DryRun,
                before.clone(),
                before,
                Some(plan),
                Tally::default(),
                started,
            ));
        }

        // Nothing eligible: no reason to keep pods off the node; the pass reports the shortfall.
        let removes_something = !plan.steps.is_empty();
        if removes_something && self.cordoner.begin_pass().await == PassStart::Skip {
            log::warn!(
                "skipping this pass: the node could not be cordoned (on_cordon_failure = skip)"
            );
            return Ok(self.report(
                Outcome::Skipped,
                before.clone(),
                before,
                Some(plan),
                Tally::default(),
                started,
            ));
        }
        let mut tally = Tally::default();
        let executed = self.execute(&plan, &before, &mut tally).await;
        // Measure again before releasing, so the Event carries the figures; a failed
        // measurement must not keep the cordon.
        let after = measure(config).await;
        let event = match (&executed, &after) {
            (Ok(outcome), Ok(after)) => event(*outcome, &tally, &before, after, &config.watermarks),
            _ => None,
        };
        self.cordoner.end_pass(event).await;
        let outcome = executed?;
        let after = after?;
        Ok(self.report(outcome, before, after, Some(plan), tally, started))
    }

    fn report(
        &self,
        outcome: Outcome,
        before: Measurement,
        after: Measurement,
        plan: Option<Plan>,
        t: Tally,
        started: Instant,
    ) -> Report {
        let (freed_bytes, freed_inodes) = freed(&before, &after);
        Report {
            outcome,
            before,
            after,
            plan,
            removed_containers: t.containers,
            removed_images: t.images,
            skipped: t.skipped,
            freed_bytes,
            freed_inodes,
            duration: started.elapsed(),
        }
    }

    /// Carries the plan out step by step, stopping once below the low watermark.
    async fn execute(
        &mut self,
        plan: &Plan,
        before: &Measurement,
        tally: &mut Tally,
    ) -> Result<Outcome, Error> {
        let config = self.config;
        let mut estimate = match before {
            Measurement::Absolute(t) => t.bytes,
            Measurement::Relative(_) => 0,
        };
        let mut dangling_pruned = 0;
        let total = plan.steps.len();
        for (i, step) in plan.steps.iter().enumerate() {
            if self.shutdown.is_cancelled() {
                log::info!("shutdown requested: stopping after {i} of {total} steps");
                return Ok(Outcome::Interrupted);
            }
            self.cordoner.check_deadline().await;
            self.progress
                .update(&format!("cleaning: step {} of {total}: {step}", i + 1));
            let removed = match step {
                Step::RemoveContainer { id, .. } => {
                    let r = self.engine.remove_container(id).await?;
                    self.count(step, &r, tally, false)
                }
                Step::RemoveImage {
                    id,
                    tags,
                    size_bytes,
                    ..
                } => {
                    let r = self.engine.remove_image(id, tags).await?;
                    let removed = self.count(step, &r, tally, true);
                    if removed {
                        estimate = estimate.saturating_sub(*size_bytes);
                    }
                    removed
                }
                Step::PruneContainers => {
                    tally.containers += pruned("containers", self.engine.prune_containers().await?);
                    true
                }
                Step::PruneDanglingImages => {
                    dangling_pruned =
                        pruned("dangling images", self.engine.prune_images(false).await?);
                    tally.images += dangling_pruned;
                    true
                }
                Step::PruneAllImages => {
                    // Measuring can be a tree walk: only when dangling images might have sufficed.
                    if dangling_pruned > 0
                        && !policy::above_high(&measure(config).await?, &config.watermarks)
                    {
                        log::info!("dangling images were enough: not pruning the other images");
                        continue;
                    }
                    tally.images += pruned("unused images", self.engine.prune_images(true).await?);
                    true
                }
            };
            if config.strategy == Strategy::Prune || !removed {
                continue;
            }
            let done = match config.watermarks {
                Watermarks::Relative { .. } => {
                    policy::below_low(&measure(config).await?, &config.watermarks)
                }
                // The sizes Docker reports count shared layers in full, so the estimate runs
                // ahead of the disk: when it says "enough", walk the trees to be sure.
                Watermarks::Absolute { low_bytes, .. } if estimate < low_bytes => {
                    let now = measure(config).await?;
                    if let Measurement::Absolute(tree) = &now {
                        estimate = tree.bytes;
                    }
                    policy::below_low(&now, &config.watermarks)
                }
                Watermarks::Absolute { .. } => false,
            };
            if done {
                log::info!("below the low watermark after {} of {total} steps", i + 1);
                return Ok(Outcome::ReachedLow);
            }
            let next_is_image = matches!(plan.steps.get(i + 1), Some(Step::RemoveImage { .. }));
            if matches!(step, Step::RemoveImage { .. }) && next_is_image && !config.delay.is_zero()
            {
                tokio::select! {
                    () = tokio::time::sleep(config.delay) => {}
                    () = self.shutdown.cancelled() => {}
                }
            }
        }
        let after = measure(config).await?;
        if config.strategy == Strategy::Prune || policy::below_low(&after, &config.watermarks) {
            return Ok(Outcome::ReachedLow);
        }
        let need = policy::need(&after, &config.watermarks);
        log::warn!(
            "everything eligible is gone and usage is still above the low watermark: {} and {} inodes short; waiting for the next tick",
            size(need.bytes),
            need.inodes
        );
        Ok(Outcome::Exhausted)
    }

    /// Logs one removal's result; true when something was removed.
    fn count(&self, step: &Step, r: &Removal, tally: &mut Tally, image: bool) -> bool {
        match r {
            Removal::Removed => {
                log::info!("{step}: done");
                if image {
                    tally.images += 1;
                } else {
                    tally.containers += 1;
                }
                true
            }
            Removal::Gone => {
                log::info!("{step}: already gone");
                tally.skipped += 1;
                false
            }
            Removal::Conflict(why) => {
                log::warn!("{step}: refused by Docker, skipping: {why}");
                tally.skipped += 1;
                false
            }
        }
    }
}

/// Logs what a prune removed; returns how many items.
fn pruned(what: &str, p: docker::Pruned) -> usize {
    log::info!(
        "pruned {} {what}, {} reclaimed",
        p.deleted.len(),
        size(p.reclaimed_bytes)
    );
    p.deleted.len()
}

/// The Node Event for a pass that removed something or could not reach the low watermark.
fn event(
    outcome: Outcome,
    t: &Tally,
    before: &Measurement,
    after: &Measurement,
    w: &Watermarks,
) -> Option<NodeEvent> {
    let (bytes, inodes) = freed(before, after);
    match outcome {
        Outcome::Exhausted => {
            let need = policy::need(after, w);
            Some(NodeEvent {
                warning: true,
                reason: "FreeDiskSpaceFailed",
                message: format!(
                    "removed {} containers and {} images, freed {}, but usage is still above the low watermark ({w}): {} and {} inodes short; now {after}",
                    t.containers,
                    t.images,
                    signed_size(bytes),
                    size(need.bytes),
                    need.inodes
                ),
            })
        }
        _ if t.containers + t.images > 0 => Some(NodeEvent {
            warning: false,
            reason: "ImagesRemoved",
            message: format!(
                "removed {} containers and {} images, freed {} and {inodes} inodes; now {after}",
                t.containers,
                t.images,
                signed_size(bytes)
            ),
        }),
        _ => None,
    }
}
