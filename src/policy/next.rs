//! What a pass does next: the stopping rules of a running plan as a pure state machine. The pass
//! ([`crate::cycle`]) reports what happened (a step's result, a measurement, the end of a pause)
//! and performs the [`Action`] it gets back; every rule lives here: when to measure again, when
//! `prune -a` is not needed, that strategy `prune` never stops early, when absolute mode walks the
//! trees again, which steps are separated by the delay, when an engine has reached its floor or
//! no longer needs cleaning, and how the pass ends. Removals for age (`aged` steps) run whatever
//! the usage: once below the low watermark the course leaves every other step out and runs them
//! without measuring; a plan made below the high watermark holds only those and runs whole.

use std::time::Duration;

use super::{FloorState, Outcome, Plan, Reason, Step, above_high, below_low};
use crate::config::{Config, Delay, Strategy, Watermarks};
use crate::usage::Measurement;

/// One engine as the course sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineView {
    /// Its name, as the steps carry it.
    pub name: String,
    /// The filesystems its data lives on: indexes into a relative [`Measurement`]. Empty when
    /// unknown (then it is never left out for being below low).
    pub filesystems: Vec<usize>,
    /// Its floor this pass, if one applies.
    pub floor: Option<FloorState>,
}

/// Why a step is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// `prune -a`: the dangling images were enough to get below high.
    DanglingSufficed,
    /// The image's engine would drop below its floor.
    Floor,
    /// Every filesystem of the step's engine is below the low watermark already.
    NotNeeded,
}

/// What the pass must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Perform step `i` of the plan, then report [`Input::Ran`].
    Run(usize),
    /// Leave step `i` out, then report [`Input::Skipped`].
    Skip(usize, Why),
    /// Measure, then report [`Input::Measured`].
    Measure,
    /// Pause (between two image removals), then report [`Input::Paused`].
    Pause(Duration),
    /// Take stock again and go on with a new plan (and a new course): an image removal freed
    /// much less than its size, so its bytes are held elsewhere (the build cache, a chain of
    /// parents it left behind, another image) and the plan no longer matches the disk.
    Restock,
    /// The pass is over.
    Stop(Outcome),
}

/// An image removal that frees less than half its reported size, and at least this much less,
/// makes the course ask for [`Action::Restock`] (smaller gaps are the filesystem's own
/// bookkeeping).
pub const SHORTFALL_MIN_BYTES: u64 = 1 << 20;

/// What happened since the last [`Action`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// The pass begins.
    Start,
    /// The step ran, and took this long (an adaptive delay follows Docker's latency).
    Ran(StepResult, Duration),
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
    /// A build-cache prune reclaimed this many bytes, as the engine reports.
    Reclaimed(u64),
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
    Skipping(usize, Why),
    /// Waiting for the measurement after step `i`.
    Checking(usize),
    /// Pausing after step `i`, for as long as [`Delay::after`] said.
    Pausing(usize, Duration),
    /// Waiting for the final measurement.
    Final,
    /// Asked to take stock again: this course is over.
    Restocking,
    /// Over.
    Done(Outcome),
}

/// What the course knows of one engine.
#[derive(Debug, Clone)]
struct Engine {
    view: EngineView,
    /// Its footprint now: at the start, less what its removals freed.
    footprint_bytes: u64,
    /// It reached its floor: its remaining tagged images stay.
    floored: bool,
}

/// The course of one plan: where the pass is, and what it knows.
#[derive(Debug, Clone)]
pub struct Course<'p> {
    plan: &'p Plan,
    engines: Vec<Engine>,
    /// The last measurement (relative mode: which filesystems are below low).
    last: Measurement,
    /// The engine, the size, and whether it is an image's, of the removal in flight, until its
    /// measurement.
    freeing: Option<(usize, u64, bool)>,
    /// An image removal freed much less than its size since the course began.
    short: bool,
    /// A shortfall may end the course with [`Action::Restock`].
    restock: bool,
    /// A floor kept or left out an image: the pass ends as [`Outcome::FloorsReached`].
    floors_held: bool,
    /// The plan frees space (made at or above high); false: removals for age only.
    pressure: bool,
    /// Below the low watermark with removals for age still to come: only those run now.
    low_reached: bool,
    strategy: Strategy,
    watermarks: Watermarks,
    delay: Delay,
    /// How long the last step took to run.
    took: Duration,
    /// Absolute mode: the trees' bytes as of the last walk minus the reported sizes removed.
    estimate_bytes: u64,
    dangling_pruned: usize,
    /// Steps performed or left out so far.
    begun: usize,
    phase: Phase,
}

impl<'p> Course<'p> {
    /// The course of `plan` from the measurement `before`, for the `engines` its steps name.
    pub fn new(
        plan: &'p Plan,
        config: &Config,
        before: &Measurement,
        engines: &[EngineView],
    ) -> Self {
        Course {
            plan,
            engines: engines
                .iter()
                .map(|v| Engine {
                    view: v.clone(),
                    footprint_bytes: v.floor.map_or(0, |f| f.footprint_bytes),
                    floored: false,
                })
                .collect(),
            last: before.clone(),
            freeing: None,
            short: false,
            restock: false,
            floors_held: plan
                .kept
                .iter()
                .any(|k| matches!(k.reason, Reason::Floor { .. })),
            pressure: plan.pressure,
            low_reached: false,
            strategy: config.strategy,
            watermarks: config.watermarks,
            delay: config.delay,
            took: Duration::ZERO,
            estimate_bytes: match before {
                Measurement::Absolute(t) => t.bytes,
                Measurement::Relative(_) => 0,
            },
            dangling_pruned: 0,
            begun: 0,
            phase: Phase::NotStarted,
        }
    }

    /// Lets a removal that frees much less than its size end the course with
    /// [`Action::Restock`] (the pass bounds how often).
    pub fn restocking(mut self, allowed: bool) -> Self {
        self.restock = allowed;
        self
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
                self.last = m.clone();
                if above_high(m, &self.watermarks) {
                    Phase::Running(i)
                } else {
                    Phase::Skipping(i, Why::DanglingSufficed)
                }
            }
            (Phase::Running(i), Input::Ran(result, took)) => {
                self.took = took;
                self.after(i, result)
            }
            (Phase::Skipping(i, _), Input::Skipped) => self.before(i + 1),
            (Phase::Checking(i), Input::Measured(m)) => {
                if let Measurement::Absolute(t) = m {
                    // Measured because the reported sizes said "enough": they did not free
                    // what they said if usage is still above low.
                    self.short |= !below_low(m, &self.watermarks)
                        && matches!(self.freeing, Some((_, _, true)));
                    self.estimate_bytes = t.bytes;
                }
                self.credit(m);
                self.last = m.clone();
                if !below_low(m, &self.watermarks) {
                    if self.short && self.restock && self.pressure && !self.low_reached {
                        Phase::Restocking
                    } else {
                        self.pause_or_next(i)
                    }
                } else if self.plan.steps.iter().skip(i + 1).any(Step::is_aged) {
                    self.low_reached = true;
                    self.pause_or_next(i)
                } else {
                    Phase::Done(Outcome::ReachedLow)
                }
            }
            (Phase::Pausing(i, _), Input::Paused) => self.before(i + 1),
            (Phase::Final, Input::Measured(m)) => {
                if !self.pressure {
                    Phase::Done(Outcome::Aged)
                } else if self.strategy == Strategy::Prune || below_low(m, &self.watermarks) {
                    Phase::Done(Outcome::ReachedLow)
                } else if self.floors_held {
                    Phase::Done(Outcome::FloorsReached)
                } else {
                    Phase::Done(Outcome::Exhausted)
                }
            }
            (Phase::Done(o), _) => Phase::Done(o),
            _ => Phase::Done(Outcome::Interrupted),
        };
        self.phase = phase;
        if let Phase::Running(i) | Phase::Skipping(i, _) = phase {
            self.begun = i + 1;
        }
        match phase {
            // `before` never goes back to NotStarted: an interrupted course, defensively.
            Phase::NotStarted => Action::Stop(Outcome::Interrupted),
            Phase::PruneAllCheck(_) | Phase::Checking(_) | Phase::Final => Action::Measure,
            Phase::Restocking => Action::Restock,
            Phase::Running(i) => Action::Run(i),
            Phase::Skipping(i, why) => Action::Skip(i, why),
            Phase::Pausing(_, pause) => Action::Pause(pause),
            Phase::Done(o) => Action::Stop(o),
        }
    }

    /// The phase for step `i`: run it, leave it out, check first whether `prune -a` is needed,
    /// or measure a last time when the plan is done.
    fn before(&mut self, i: usize) -> Phase {
        let Some(step) = self.plan.steps.get(i) else {
            return Phase::Final;
        };
        let engine = self
            .engines
            .iter()
            .position(|e| e.view.name == step.engine());
        let aged = step.is_aged();
        if self.low_reached && !aged {
            return Phase::Skipping(i, Why::NotNeeded);
        }
        if let Some(e) = engine
            && !aged
        {
            if self.strategy != Strategy::Prune && self.engine_done(e) {
                return Phase::Skipping(i, Why::NotNeeded);
            }
            if let Step::RemoveImage {
                tags, size_bytes, ..
            } = step
                && !tags.is_empty()
                && self.breaches_floor(e, *size_bytes)
            {
                self.engines[e].floored = true;
                self.floors_held = true;
                return Phase::Skipping(i, Why::Floor);
            }
        }
        match step {
            // Measuring can be a tree walk: only when dangling images might have sufficed.
            Step::PruneAllImages { .. } if self.dangling_pruned > 0 => Phase::PruneAllCheck(i),
            _ => Phase::Running(i),
        }
    }

    /// True when every filesystem of engine `e` is below the low watermark (relative mode).
    fn engine_done(&self, e: usize) -> bool {
        let (Measurement::Relative(all), Watermarks::Relative { low_pct, .. }) =
            (&self.last, &self.watermarks)
        else {
            return false;
        };
        let fs = &self.engines[e].view.filesystems;
        !fs.is_empty()
            && fs
                .iter()
                .all(|&i| all.get(i).is_some_and(|f| f.used_pct() < *low_pct))
    }

    /// True when removing `size_bytes` more would take engine `e` below its floor.
    fn breaches_floor(&self, e: usize, size_bytes: u64) -> bool {
        let engine = &self.engines[e];
        match engine.view.floor {
            None => false,
            Some(f) => {
                engine.floored || engine.footprint_bytes.saturating_sub(size_bytes) < f.floor_bytes
            }
        }
    }

    /// Credits the image removal in flight to its engine's footprint: by the space its
    /// filesystems gained since the last measurement (`m`), else by its reported size.
    fn credit(&mut self, m: &Measurement) {
        let Some((e, size_bytes, image)) = self.freeing.take() else {
            return;
        };
        let measured = matches!(
            (&self.last, m),
            (Measurement::Relative(_), Measurement::Relative(_))
        ) && !self.engines[e].view.filesystems.is_empty();
        let freed = match (&self.last, m) {
            (Measurement::Relative(before), Measurement::Relative(after))
                if !self.engines[e].view.filesystems.is_empty() =>
            {
                self.engines[e]
                    .view
                    .filesystems
                    .iter()
                    .filter_map(|&i| Some((before.get(i)?, after.get(i)?)))
                    .map(|(b, a)| a.avail_bytes.saturating_sub(b.avail_bytes))
                    .sum()
            }
            _ => size_bytes,
        };
        if measured
            && image
            && freed.saturating_mul(2) < size_bytes
            && size_bytes.saturating_sub(freed) >= SHORTFALL_MIN_BYTES
        {
            self.short = true;
        }
        let engine = &mut self.engines[e];
        engine.footprint_bytes = engine.footprint_bytes.saturating_sub(freed);
    }

    fn after(&mut self, i: usize, result: StepResult) -> Phase {
        let removed = match result {
            StepResult::Removed => true,
            StepResult::NotRemoved => false,
            StepResult::PrunedDangling(n) => {
                self.dangling_pruned = n;
                true
            }
            StepResult::Reclaimed(bytes) => bytes > 0,
        };
        let freed = match (self.plan.steps.get(i), result) {
            (Some(Step::RemoveImage { size_bytes, .. }), _) => Some(*size_bytes),
            (Some(Step::PruneBuildCache { .. }), StepResult::Reclaimed(bytes)) => Some(bytes),
            _ => None,
        };
        if removed && let (Some(step), Some(freed)) = (self.plan.steps.get(i), freed) {
            self.estimate_bytes = self.estimate_bytes.saturating_sub(freed);
            if let Some(e) = self
                .engines
                .iter()
                .position(|e| e.view.name == step.engine())
            {
                let image = matches!(step, Step::RemoveImage { .. });
                self.freeing = Some((e, freed, image));
            }
        }
        // Strategy prune runs its three steps whatever they free; nothing freed, nothing to
        // measure.
        if self.strategy == Strategy::Prune || !removed {
            return self.before(i + 1);
        }
        // Removals for age go whatever the usage: nothing to measure between them.
        if !self.pressure || self.low_reached {
            self.credit_reported();
            return self.pause_or_next(i);
        }
        match self.watermarks {
            Watermarks::Relative { .. } => Phase::Checking(i),
            // The sizes Docker reports count shared layers in full, so the estimate runs ahead
            // of the disk: when it says "enough", walk the trees to be sure.
            Watermarks::Absolute { low_bytes, .. } if self.estimate_bytes < low_bytes => {
                Phase::Checking(i)
            }
            Watermarks::Absolute { .. } => {
                // No measurement follows: the reported size is what the engine freed.
                let last = self.last.clone();
                self.credit(&last);
                self.pause_or_next(i)
            }
        }
    }

    /// Credits the removal in flight to its engine's footprint by its reported size (no
    /// measurement follows it).
    fn credit_reported(&mut self) {
        if let Some((e, size_bytes, _)) = self.freeing.take() {
            let engine = &mut self.engines[e];
            engine.footprint_bytes = engine.footprint_bytes.saturating_sub(size_bytes);
        }
    }

    /// The delay separates two image removals, nothing else; an adaptive one follows how long
    /// the removal before it took.
    fn pause_or_next(&mut self, i: usize) -> Phase {
        let this_is_image = matches!(self.plan.steps.get(i), Some(Step::RemoveImage { .. }));
        let next_is_image = matches!(self.plan.steps.get(i + 1), Some(Step::RemoveImage { .. }));
        let pause = self.delay.after(self.took);
        if this_is_image && next_is_image && !pause.is_zero() {
            Phase::Pausing(i, pause)
        } else {
            self.before(i + 1)
        }
    }
}

#[cfg(test)]
mod tests;
