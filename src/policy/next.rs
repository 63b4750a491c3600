//! What a pass does next: the stopping rules of a running plan as a pure state machine. The pass
//! ([`crate::cycle`]) reports what happened (a step's result, a measurement, the end of a pause)
//! and performs the [`Action`] it gets back; every rule lives here: when to measure again, when
//! `prune -a` is not needed, that strategy `prune` never stops early, when absolute mode walks the
//! trees again, which steps are separated by the delay, and how the pass ends.

use std::time::Duration;

use super::{Outcome, Plan, Step, above_high, below_low};
use crate::config::{Config, Strategy, Watermarks};
use crate::usage::Measurement;

/// What the pass must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Perform step `i` of the plan, then report [`Input::Ran`].
    Run(usize),
    /// Leave step `i` out (`prune -a` after dangling images were enough), then report
    /// [`Input::Skipped`].
    Skip(usize),
    /// Measure, then report [`Input::Measured`].
    Measure,
    /// Pause (between two image removals), then report [`Input::Paused`].
    Pause(Duration),
    /// The pass is over.
    Stop(Outcome),
}

/// What happened since the last [`Action`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// The pass begins.
    Start,
    /// The step ran.
    Ran(StepResult),
    /// The step was left out.
    Skipped,
    /// A measurement was taken.
    Measured(&'a Measurement),
    /// The pause is over (or was cut short).
    Paused,
}

/// The result of one step, as far as the stopping rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepResult {
    /// Something was removed (a prune counts, whatever it found).
    Removed,
    /// Nothing was removed: refused, already gone, or changed since the plan.
    NotRemoved,
    /// A dangling-image prune removed this many images.
    PrunedDangling(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before [`Input::Start`].
    NotStarted,
    /// Waiting for the measurement that decides whether `prune -a` (step `i`) is needed.
    PruneAllCheck(usize),
    /// Step `i` was sent.
    Running(usize),
    /// Step `i` was left out.
    Skipping(usize),
    /// Waiting for the measurement after step `i`.
    Checking(usize),
    /// Pausing after step `i`.
    Pausing(usize),
    /// Waiting for the final measurement.
    Final,
    /// Over.
    Done(Outcome),
}

/// The course of one plan: where the pass is, and what it knows.
#[derive(Debug, Clone)]
pub struct Course<'p> {
    plan: &'p Plan,
    strategy: Strategy,
    watermarks: Watermarks,
    delay: Duration,
    /// Absolute mode: the trees' bytes as of the last walk minus the reported sizes removed.
    estimate_bytes: u64,
    dangling_pruned: usize,
    /// Steps performed or left out so far.
    begun: usize,
    phase: Phase,
}

impl<'p> Course<'p> {
    /// The course of `plan` from the measurement `before`.
    pub fn new(plan: &'p Plan, config: &Config, before: &Measurement) -> Self {
        Course {
            plan,
            strategy: config.strategy,
            watermarks: config.watermarks,
            delay: config.delay,
            estimate_bytes: match before {
                Measurement::Absolute(t) => t.bytes,
                Measurement::Relative(_) => 0,
            },
            dangling_pruned: 0,
            begun: 0,
            phase: Phase::NotStarted,
        }
    }

    /// Steps begun so far (performed or left out).
    pub fn steps_begun(&self) -> usize {
        self.begun
    }

    /// Takes what happened and says what to do now. An input that does not fit the last action
    /// (a bug in the caller) ends the pass as interrupted rather than guessing.
    pub fn next(&mut self, input: Input<'_>) -> Action {
        let phase = match (self.phase, input) {
            (Phase::NotStarted, Input::Start) => self.before(0),
            (Phase::PruneAllCheck(i), Input::Measured(m)) => {
                if above_high(m, &self.watermarks) {
                    Phase::Running(i)
                } else {
                    Phase::Skipping(i)
                }
            }
            (Phase::Running(i), Input::Ran(result)) => self.after(i, result),
            (Phase::Skipping(i), Input::Skipped) => self.before(i + 1),
            (Phase::Checking(i), Input::Measured(m)) => {
                if let Measurement::Absolute(t) = m {
                    self.estimate_bytes = t.bytes;
                }
                if below_low(m, &self.watermarks) {
                    Phase::Done(Outcome::ReachedLow)
                } else {
                    self.pause_or_next(i)
                }
            }
            (Phase::Pausing(i), Input::Paused) => self.before(i + 1),
            (Phase::Final, Input::Measured(m)) => {
                if self.strategy == Strategy::Prune || below_low(m, &self.watermarks) {
                    Phase::Done(Outcome::ReachedLow)
                } else {
                    Phase::Done(Outcome::Exhausted)
                }
            }
            (Phase::Done(o), _) => Phase::Done(o),
            _ => Phase::Done(Outcome::Interrupted),
        };
        self.phase = phase;
        if let Phase::Running(i) | Phase::Skipping(i) = phase {
            self.begun = i + 1;
        }
        match phase {
            // `before` never goes back to NotStarted: an interrupted course, defensively.
            Phase::NotStarted => Action::Stop(Outcome::Interrupted),
            Phase::PruneAllCheck(_) | Phase::Checking(_) | Phase::Final => Action::Measure,
            Phase::Running(i) => Action::Run(i),
            Phase::Skipping(i) => Action::Skip(i),
            Phase::Pausing(_) => Action::Pause(self.delay),
            Phase::Done(o) => Action::Stop(o),
        }
    }

    /// The phase for step `i`: run it, check first whether `prune -a` is needed, or measure a
    /// last time when the plan is done.
    fn before(&self, i: usize) -> Phase {
        match self.plan.steps.get(i) {
            None => Phase::Final,
            // Measuring can be a tree walk: only when dangling images might have sufficed.
            Some(Step::PruneAllImages) if self.dangling_pruned > 0 => Phase::PruneAllCheck(i),
            Some(_) => Phase::Running(i),
        }
    }

    fn after(&mut self, i: usize, result: StepResult) -> Phase {
        let removed = match result {
            StepResult::Removed => true,
            StepResult::NotRemoved => false,
            StepResult::PrunedDangling(n) => {
                self.dangling_pruned = n;
                true
            }
        };
        if removed && let Some(Step::RemoveImage { size_bytes, .. }) = self.plan.steps.get(i) {
            self.estimate_bytes = self.estimate_bytes.saturating_sub(*size_bytes);
        }
        // Strategy prune runs its three steps whatever they free; nothing freed, nothing to
        // measure.
        if self.strategy == Strategy::Prune || !removed {
            return self.before(i + 1);
        }
        match self.watermarks {
            Watermarks::Relative { .. } => Phase::Checking(i),
            // The sizes Docker reports count shared layers in full, so the estimate runs ahead
            // of the disk: when it says "enough", walk the trees to be sure.
            Watermarks::Absolute { low_bytes, .. } if self.estimate_bytes < low_bytes => {
                Phase::Checking(i)
            }
            Watermarks::Absolute { .. } => self.pause_or_next(i),
        }
    }

    /// The delay separates two image removals, nothing else.
    fn pause_or_next(&self, i: usize) -> Phase {
        let this_is_image = matches!(self.plan.steps.get(i), Some(Step::RemoveImage { .. }));
        let next_is_image = matches!(self.plan.steps.get(i + 1), Some(Step::RemoveImage { .. }));
        if this_is_image && next_is_image && !self.delay.is_zero() {
            Phase::Pausing(i)
        } else {
            self.before(i + 1)
        }
    }
}

#[cfg(test)]
mod tests;
