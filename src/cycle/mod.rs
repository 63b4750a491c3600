//! One cleaning pass: measure, take stock, plan, cordon, carry the plan out step by step as the
//! policy's [`Course`] directs, release the node on every path, report. This module performs the
//! I/O, races the shutdown token and guarantees the release; every rule lives in
//! [`crate::policy`].
//!
//! - `stock`: [`take_stock`], [`replay`], [`apply_event`]: last use brought up to date, the
//!   inventory, the plan.
//! - `report`: [`Report`] and the Node Event.

mod report;
mod stock;
#[cfg(test)]
mod tests;

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Strategy};
use crate::docker::{self, Engine, Removal};
use crate::lastuse::LastUse;
use crate::node::{Cordoner, NodeEvent, PassStart};
use crate::policy::{self, Action, Course, Input, Outcome, Plan, Step, StepResult};
use crate::usage::{self, Measurement, Meter, size};

pub use report::{Report, Tally, node_event, outcome_text};
pub use stock::{Stock, apply_event, replay, take_stock};

/// Errors that end a pass early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A watched path cannot be measured.
    #[error(transparent)]
    Measure(#[from] usage::Error),
    /// Docker failed.
    #[error(transparent)]
    Docker(#[from] docker::Error),
}

impl Error {
    /// True when the next tick may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Measure(e) => e.is_transient(),
            Error::Docker(e) => e.is_transient(),
        }
    }
}

/// Receives a one-line summary whenever a pass makes progress (systemd `STATUS=`, and a sign of
/// life for the watchdog). Owned here because the pass is what reports.
pub trait Progress: Sync {
    /// The pass moved on.
    fn update(&self, status: &str);
}

impl Progress for () {
    fn update(&self, _status: &str) {}
}

/// What a pass needs of the node: the cordon around the removals. [`Cordoner`] is the real one;
/// the tests record the calls.
pub trait Guard {
    /// Before the first removal: cordon when we may.
    fn begin_pass(&mut self) -> impl Future<Output = PassStart> + Send;
    /// Between two removals: release early once the cordon is held too long.
    fn check_deadline(&mut self) -> impl Future<Output = ()> + Send;
    /// At the end of the pass, on every path: release, then post `event` if any.
    fn end_pass(&mut self, event: Option<NodeEvent>) -> impl Future<Output = ()> + Send;
}

impl Guard for Cordoner {
    fn begin_pass(&mut self) -> impl Future<Output = PassStart> + Send {
        Cordoner::begin_pass(self)
    }
    fn check_deadline(&mut self) -> impl Future<Output = ()> + Send {
        Cordoner::check_deadline(self)
    }
    fn end_pass(&mut self, event: Option<NodeEvent>) -> impl Future<Output = ()> + Send {
        Cordoner::end_pass(self, event)
    }
}

/// Everything a pass works with.
pub struct Pass<'a, E: Engine, M: Meter, G: Guard> {
    /// The configuration.
    pub config: &'a Config,
    /// The engine.
    pub engine: &'a E,
    /// Measures the watched paths.
    pub meter: &'a M,
    /// Last-use times; reconciled with the inventory before planning.
    pub last_use: &'a mut LastUse,
    /// The cordon guard.
    pub guard: &'a mut G,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Set when the process is asked to stop: no new removal starts after it.
    pub shutdown: &'a CancellationToken,
    /// Now, unix milliseconds, as the caller read the clock.
    pub now_ms: i64,
}

impl<E: Engine, M: Meter, G: Guard> Pass<'_, E, M, G> {
    /// Runs one pass. The node is released on every path out of it, errors included.
    pub async fn run(self) -> Result<Report, Error> {
        let started = Instant::now();
        let config = self.config;
        let before = self.meter.measure().await?;
        let report = |outcome, after, plan, tally| {
            Report::new(
                outcome,
                before.clone(),
                after,
                plan,
                tally,
                started.elapsed(),
            )
        };
        if !policy::above_high(&before, &config.watermarks) {
            log::info!(
                "usage {before}: below the high watermark ({})",
                config.watermarks
            );
            return Ok(report(
                Outcome::BelowHigh,
                before.clone(),
                None,
                Tally::default(),
            ));
        }
        log::info!(
            "usage {before}: at or above the high watermark ({}), cleaning",
            config.watermarks
        );
        self.progress.update("cleaning: taking stock");
        // Taking stock changes nothing: a shutdown need not wait for it.
        let stock = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                return Ok(report(Outcome::Interrupted, before.clone(), None, Tally::default()));
            }
            stock = take_stock(self.engine, self.last_use, config, &before, self.now_ms) => stock?,
        };
        let plan = stock.plan;
        log::info!("{}", plan.to_string().trim_end());
        if config.dry_run {
            return Ok(report(
                Outcome::DryRun,
                before.clone(),
                Some(plan),
                Tally::default(),
            ));
        }
        if policy::cordons(&plan, config) && self.guard.begin_pass().await == PassStart::Skip {
            log::warn!(
                "skipping this pass: the node could not be cordoned (on_cordon_failure = skip)"
            );
            return Ok(report(
                Outcome::Skipped,
                before.clone(),
                Some(plan),
                Tally::default(),
            ));
        }
        let mut tally = Tally::default();
        let executed = Execution {
            config,
            engine: self.engine,
            meter: self.meter,
            guard: &mut *self.guard,
            progress: self.progress,
            shutdown: self.shutdown,
        }
        .run(&plan, &before, &mut tally)
        .await;
        // Measure again before releasing, so the Event carries the figures; a failed
        // measurement must not keep the cordon.
        let after = self.meter.measure().await;
        let event = match (&executed, &after) {
            (Ok(outcome), Ok(after)) => {
                node_event(*outcome, &tally, &before, after, &config.watermarks)
            }
            _ => None,
        };
        self.guard.end_pass(event).await;
        let outcome = executed?;
        Ok(report(outcome, after?, Some(plan), tally))
    }
}

/// The execution of one plan: the I/O the [`Course`] asks for.
struct Execution<'a, E: Engine, M: Meter, G: Guard> {
    config: &'a Config,
    engine: &'a E,
    meter: &'a M,
    guard: &'a mut G,
    progress: &'a dyn Progress,
    shutdown: &'a CancellationToken,
}

impl<E: Engine, M: Meter, G: Guard> Execution<'_, E, M, G> {
    /// Carries `plan` out until the course stops it.
    async fn run(
        &mut self,
        plan: &Plan,
        before: &Measurement,
        tally: &mut Tally,
    ) -> Result<Outcome, Error> {
        let total = plan.steps.len();
        let mut course = Course::new(plan, self.config, before);
        let mut last = before.clone();
        let mut action = course.next(Input::Start);
        loop {
            action = match action {
                Action::Run(i) => {
                    if self.shutdown.is_cancelled() {
                        log::info!("shutdown requested: stopping after {i} of {total} steps");
                        return Ok(Outcome::Interrupted);
                    }
                    self.guard.check_deadline().await;
                    let step = &plan.steps[i];
                    self.progress
                        .update(&format!("cleaning: step {} of {total}: {step}", i + 1));
                    let result = self.step(step, tally).await?;
                    course.next(Input::Ran(result))
                }
                Action::Skip(i) => {
                    log::info!(
                        "dangling images were enough: not pruning the other images (step {} of {total})",
                        i + 1
                    );
                    course.next(Input::Skipped)
                }
                Action::Measure => {
                    last = self.meter.measure().await?;
                    course.next(Input::Measured(&last))
                }
                Action::Pause(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                    course.next(Input::Paused)
                }
                Action::Stop(outcome) => {
                    match outcome {
                        Outcome::ReachedLow if self.config.strategy != Strategy::Prune => {
                            log::info!(
                                "below the low watermark after {} of {total} steps",
                                course.steps_begun()
                            )
                        }
                        Outcome::Exhausted => {
                            let need = policy::need(&last, &self.config.watermarks);
                            log::warn!(
                                "everything eligible is gone and usage is still above the low watermark: {} and {} inodes short; waiting for the next tick",
                                size(need.bytes),
                                need.inodes
                            );
                        }
                        _ => {}
                    }
                    return Ok(outcome);
                }
            };
        }
    }

    /// Performs one step; counts and logs what it did.
    async fn step(&mut self, step: &Step, tally: &mut Tally) -> Result<StepResult, Error> {
        let engine = self.engine;
        Ok(match step {
            Step::RemoveContainer { id, .. } => {
                count(step, &engine.remove_container(id).await?, tally, false)
            }
            Step::RemoveImage { id, tags, .. } => {
                count(step, &engine.remove_image(id, tags).await?, tally, true)
            }
            Step::PruneContainers => {
                tally.containers += pruned("containers", engine.prune_containers().await?);
                StepResult::Removed
            }
            Step::PruneDanglingImages => {
                let n = pruned("dangling images", engine.prune_images(false).await?);
                tally.images += n;
                StepResult::PrunedDangling(n)
            }
            Step::PruneAllImages => {
                tally.images += pruned("unused images", engine.prune_images(true).await?);
                StepResult::Removed
            }
        })
    }
}

/// Logs one removal's result and counts it.
fn count(step: &Step, r: &Removal, tally: &mut Tally, image: bool) -> StepResult {
    match r {
        Removal::Removed => {
            log::info!("{step}: done");
            if image {
                tally.images += 1;
            } else {
                tally.containers += 1;
            }
            return StepResult::Removed;
        }
        Removal::Gone => log::info!("{step}: already gone"),
        Removal::Conflict(why) => log::warn!("{step}: refused by Docker, skipping: {why}"),
        Removal::Changed(why) => log::warn!("{step}: changed since the plan, skipping: {why}"),
    }
    tally.skipped += 1;
    StepResult::NotRemoved
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
