//! The execution of one plan ([`Execution`]): the I/O the policy's [`Course`] asks for, step by
//! step (remove, prune, measure, pause), each step's result counted and logged. It follows the
//! course and decides nothing: which step comes next, and when to stop, is the policy's.

use tokio_util::sync::CancellationToken;

use super::{Error, Guard, Member, Progress, Tallies, Tally};
use crate::config::{Config, Strategy};
use crate::docker::{self, Engine, Removal};
use crate::policy::next::{EngineView, Why};
use crate::policy::{self, Action, Course, Input, Outcome, Plan, Step, StepResult};
use crate::usage::{Measurement, Meter, size};

/// The execution of one plan: the I/O the [`Course`] asks for.
pub(super) struct Execution<'a, 'm, E: Engine, M: Meter, G: Guard> {
    pub(super) config: &'a Config,
    pub(super) members: &'a [Member<'m, E>],
    pub(super) meter: &'a M,
    pub(super) guard: &'a mut G,
    pub(super) progress: &'a dyn Progress,
    pub(super) shutdown: &'a CancellationToken,
    /// The course may ask to take stock again ([`Action::Restock`]).
    pub(super) restock: bool,
    /// When the pass began, unix ms.
    pub(super) now_ms: i64,
}

/// How the execution of one plan ended.
pub(super) enum Ended {
    /// The pass is over.
    Outcome(Outcome),
    /// A removal freed much less than planned: take stock again from this measurement.
    Restock(Measurement),
}

impl<E: Engine, M: Meter, G: Guard> Execution<'_, '_, E, M, G> {
    /// Carries `plan` out until the course stops it.
    pub(super) async fn run(
        &mut self,
        plan: &Plan,
        engines: &[EngineView],
        before: &Measurement,
        tallies: &mut Tallies,
    ) -> Result<Ended, Error> {
        let total = plan.steps.len();
        let mut course = Course::new(plan, self.config, before, engines).restocking(self.restock);
        let mut last = before.clone();
        let mut action = course.next(Input::Start);
        loop {
            action = match action {
                Action::Run(i) => {
                    if self.shutdown.is_cancelled() {
                        log::info!("shutdown requested: stopping after {i} of {total} steps");
                        return Ok(Ended::Outcome(Outcome::Interrupted));
                    }
                    self.guard.check_deadline().await;
                    let step = &plan.steps[i];
                    self.progress
                        .update(&format!("cleaning: step {} of {total}: {step}", i + 1));
                    let started = tokio::time::Instant::now();
                    let result = self.step(step, tallies.of(step.engine())).await?;
                    course.next(Input::Ran(result, started.elapsed()))
                }
                Action::Skip(i, why) => {
                    let step = &plan.steps[i];
                    match why {
                        Why::DanglingSufficed => log::info!(
                            "dangling images were enough: not pruning the other images (step {} of {total})",
                            i + 1
                        ),
                        Why::Floor => log::info!("{step}: left, its engine has reached its floor"),
                        Why::NotNeeded => log::debug!(
                            "{step}: left, its engine's filesystems are below the low watermark"
                        ),
                    }
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
                Action::Restock => {
                    log::info!(
                        "a removal freed much less than its size (its layers are held elsewhere): taking stock again after {} of {total} steps",
                        course.steps_begun()
                    );
                    return Ok(Ended::Restock(last));
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
                    return Ok(Ended::Outcome(outcome));
                }
            };
        }
    }

    /// Performs one step on its engine; counts and logs what it did.
    async fn step(&mut self, step: &Step, tally: &mut Tally) -> Result<StepResult, Error> {
        let Some(member) = self.members.iter().find(|m| m.config.name == step.engine()) else {
            // The plan only names engines of the pass.
            log::warn!("{step}: no such engine in this pass, skipping");
            tally.skipped += 1;
            return Ok(StepResult::NotRemoved);
        };
        let engine = member.engine;
        let now_ms = self.now_ms;
        // The prunes of strategy `prune` spare a build's newest step, as every plan does.
        let spare = |image: &docker::Image| policy::is_build_step(image, now_ms);
        Ok(match step {
            Step::RemoveContainer { id, .. } => {
                count(step, &engine.remove_container(id).await?, tally, false)
            }
            Step::RemoveImage { id, tags, .. } => {
                count(step, &engine.remove_image(id, tags).await?, tally, true)
            }
            Step::PruneBuildCache {
                keep_bytes,
                unused_for_secs,
                all,
                ..
            } => {
                let unused_for = std::time::Duration::from_secs(*unused_for_secs);
                match engine
                    .prune_build_cache(unused_for, *keep_bytes, *all)
                    .await?
                {
                    Some(p) => {
                        log::info!(
                            "{step}: removed {} records, {} reclaimed",
                            p.deleted.len(),
                            size(p.reclaimed_bytes)
                        );
                        tally.cache_records += p.deleted.len();
                        tally.cache_bytes = tally.cache_bytes.saturating_add(p.reclaimed_bytes);
                        StepResult::Reclaimed(p.reclaimed_bytes)
                    }
                    None => {
                        log::debug!("{step}: the engine has no build cache endpoint, skipping");
                        StepResult::NotRemoved
                    }
                }
            }
            Step::PruneContainers { .. } => {
                tally.containers += pruned("containers", engine.prune_containers().await?);
                StepResult::Removed
            }
            Step::PruneDanglingImages { .. } => {
                let n = pruned("dangling images", engine.prune_images(false, &spare).await?);
                tally.images += n;
                StepResult::PrunedDangling(n)
            }
            Step::PruneAllImages { .. } => {
                tally.images += pruned("unused images", engine.prune_images(true, &spare).await?);
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
                tally.aged_images += usize::from(step.is_aged());
            } else {
                tally.containers += 1;
            }
            return StepResult::Removed;
        }
        Removal::Gone => log::info!("{step}: already gone"),
        Removal::Conflict(why) => log::warn!("{step}: refused by the engine, skipping: {why}"),
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
