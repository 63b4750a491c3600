//! One cleaning pass: measure, take stock, plan, cordon, carry the plan out step by step as the
//! policy's [`Course`](crate::policy::Course) directs, release the node on every path, report.
//! Below the high watermark a pass ends at once, unless `max_unused_age` is set: then it removes
//! what has been unused for longer (uncordoned unless `max_unused_age_cordon`). This module
//! performs the I/O, races the shutdown token and guarantees the release; every rule lives in
//! [`crate::policy`].
//!
//! - `stock`: [`take_stock`], [`replay`], [`apply_event`]: last use brought up to date, the
//!   inventory, the plan.
//! - `execute`: the plan carried out step by step, as the policy's course directs.
//! - `report`: [`Report`] and the Node Event.
//! - `begin`: the guard's start of the removals, and the wait for a fleet slot.
//! - `meter`: measuring where the engines keep their bytes ([`meter_for`], [`Counting`]).

mod begin;
mod execute;
mod meter;
mod report;
mod stock;
#[cfg(test)]
mod tests;

use std::future::Future;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Strategy};
use crate::docker::{self, Engine};
use crate::node::{Cordoner, NodeEvent, PassStart};
use crate::policy::{self, Outcome};
use crate::usage::{self, FsUsage, Measurement, Meter, size};
use execute::{Ended, Execution};

/// How many times one pass may take stock again after removals that freed much less than
/// planned ([`policy::Action::Restock`]); then it goes on with the plan it has.
pub const MAX_RESTOCKS: usize = 3;

pub use begin::{Begun, MAX_RETRY, retry_delay};
pub use meter::{Counting, meter_for, storage_warnings};
pub use report::{Context, Quiet, Report, Tallies, Tally, node_event, outcome_text};
pub use stock::{EngineStock, Member, Purpose, Stock, apply_event, refresh, replay, take_stock};

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
    /// Before the first removal: cordon when we may (with fleet slots, once a slot is had).
    /// `critical`: usage is at or above the critical watermark. [`PassStart::NoSlot`] makes the
    /// pass wait and ask again.
    fn begin_pass(&mut self, critical: bool) -> impl Future<Output = PassStart> + Send;
    /// Between two removals: release early once the cordon is held too long.
    fn check_deadline(&mut self) -> impl Future<Output = ()> + Send;
    /// At the end of the pass, on every path: release, then post `event` if any.
    fn end_pass(&mut self, event: Option<NodeEvent>) -> impl Future<Output = ()> + Send;
}

impl Guard for Cordoner {
    fn begin_pass(&mut self, critical: bool) -> impl Future<Output = PassStart> + Send {
        Cordoner::begin(self, critical)
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
    /// The engines that answer (an engine that is down is left out by the caller).
    pub members: Vec<Member<'a, E>>,
    /// Measures the watched paths.
    pub meter: &'a M,
    /// The cordon guard.
    pub guard: &'a mut G,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
    /// Set when the process is asked to stop: no new removal starts after it.
    pub shutdown: &'a CancellationToken,
    /// Now, unix milliseconds, as the caller read the clock.
    pub now_ms: i64,
    /// Warnings posted by earlier passes (a lasting condition is posted once an hour).
    pub quiet: &'a mut Quiet,
}

impl<E: Engine, M: Meter, G: Guard> Pass<'_, E, M, G> {
    /// Runs one pass. The node is released on every path out of it, errors included.
    pub async fn run(mut self) -> Result<Report, Error> {
        let started = Instant::now();
        let config = self.config;
        let engines: Vec<&E> = self.members.iter().map(|m| m.engine).collect();
        let meter = &Counting::new(self.meter, engines);
        let before = meter.measure().await?;
        let report = |outcome, after, plan, tallies| {
            Report::new(
                outcome,
                before.clone(),
                after,
                plan,
                tallies,
                started.elapsed(),
            )
        };
        let pressure = policy::above_high(&before, &config.watermarks);
        let below_high = |quiet: &mut Quiet| {
            log::info!(
                "usage {before}: below the high watermark ({})",
                config.watermarks
            );
            quiet.clear();
            report(Outcome::BelowHigh, before.clone(), None, Tallies::default())
        };
        let ages = !config.max_unused_age.is_zero() && config.strategy != Strategy::Prune;
        if !pressure && !ages {
            // Last use still learns what is there (it changes nothing: a shutdown need not wait).
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {}
                () = refresh(&mut self.members, self.now_ms) => {}
            }
            return Ok(below_high(self.quiet));
        }
        if pressure {
            log::info!(
                "usage {before}: at or above the high watermark ({}), cleaning",
                config.watermarks
            );
            self.progress.update("cleaning: taking stock");
        } else {
            self.progress
                .update("checking for images unused for longer than max_unused_age");
        }
        let purpose = if pressure {
            Purpose::Space
        } else {
            Purpose::Age
        };
        let filesystems = match &before {
            Measurement::Relative(all) => all.clone(),
            Measurement::Absolute(_) => meter.filesystems().await?,
        };
        // Taking stock changes nothing: a shutdown need not wait for it.
        let stock = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => {
                return Ok(report(Outcome::Interrupted, before.clone(), None, Tallies::default()));
            }
            stock = take_stock(&mut self.members, meter, config, &before, &filesystems, self.now_ms, purpose) => stock?,
        };
        if !pressure && stock.plan.steps.is_empty() {
            return Ok(below_high(self.quiet));
        }
        if pressure && stock.critical {
            log::warn!(
                "at or above the critical watermark ({}%): floors are ignored and the min age is {} s for this pass",
                config.critical_pct,
                config.critical_min_age.min(config.min_age).as_secs()
            );
        }
        let plan = stock.plan.clone();
        log::info!("{}", plan.to_string().trim_end());
        if config.dry_run {
            return Ok(report(
                Outcome::DryRun,
                before.clone(),
                Some(plan),
                Tallies::default(),
            ));
        }
        if policy::cordons(&plan, config)
            && let Some(outcome) = self.cordon(stock.critical).await
        {
            return Ok(report(
                outcome,
                before.clone(),
                Some(plan),
                Tallies::default(),
            ));
        }
        let mut tallies = Tallies::default();
        for e in &stock.engines {
            tallies.of(&e.name);
        }
        let executed = self
            .execute(
                meter,
                stock.clone(),
                &before,
                &filesystems,
                &mut tallies,
                started,
            )
            .await;
        // Measure again before releasing, so the Event carries the figures; a failed
        // measurement must not keep the cordon.
        let after = meter.measure().await;
        let event = match (&executed, &after) {
            (Ok(outcome), Ok(after)) => event(
                config,
                &stock,
                &filesystems,
                *outcome,
                &tallies,
                &before,
                after,
            ),
            _ => None,
        };
        let event = self.admit(event);
        self.guard.end_pass(event).await;
        let outcome = executed?;
        Ok(report(outcome, after?, Some(plan), tallies))
    }

    /// Carries out `stock`'s plan; when a removal frees much less than planned, takes stock
    /// again (the build cache re-read, the chain an image left behind listed) and goes on with
    /// the new plan, at most [`MAX_RESTOCKS`] times.
    async fn execute(
        &mut self,
        meter: &impl Meter,
        mut stock: Stock,
        before: &Measurement,
        filesystems: &[FsUsage],
        tallies: &mut Tallies,
        started: Instant,
    ) -> Result<Outcome, Error> {
        let config = self.config;
        let mut from = before.clone();
        let mut restocks = 0;
        // What the pass found at its start: a new plan never takes anything that appeared
        // since (a pull, a build, a container created meanwhile), but the untagged images a
        // removal left behind.
        let there = stock.ids();
        let began_ms = self.now_ms;
        loop {
            let ended = Execution {
                config,
                members: &self.members,
                meter,
                guard: &mut *self.guard,
                progress: self.progress,
                shutdown: self.shutdown,
                restock: restocks < MAX_RESTOCKS,
                now_ms: self.now_ms,
            }
            .run(&stock.plan, &stock.views(), &from, tallies)
            .await?;
            let measured = match ended {
                Ended::Outcome(outcome) => return Ok(outcome),
                Ended::Restock(measured) => measured,
            };
            restocks += 1;
            self.progress.update("cleaning: taking stock again");
            let filesystems = match &measured {
                Measurement::Relative(all) => all.clone(),
                Measurement::Absolute(_) => filesystems.to_vec(),
            };
            let now_ms = self
                .now_ms
                .saturating_add(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX));
            stock = tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Outcome::Interrupted),
                stock = take_stock(&mut self.members, meter, config, &measured, &filesystems, now_ms, Purpose::Restock) => stock?,
            };
            let left = stock.keep_to(&there, began_ms);
            if left > 0 {
                log::info!(
                    "leaving {left} image(s) and container(s) that appeared during this pass"
                );
            }
            log::info!("{}", stock.plan.to_string().trim_end());
            from = measured;
        }
    }

    /// Cordons for the removals (a fleet slot first, with slots); `None` when the pass goes on,
    /// else how it ends, the guard's wait ended.
    async fn cordon(&mut self, critical: bool) -> Option<Outcome> {
        let begun = begin::begin(
            &mut *self.guard,
            self.meter,
            self.progress,
            self.shutdown,
            self.config,
            critical,
        )
        .await;
        let outcome = match begun {
            Begun::Proceed => None,
            Begun::Skip => {
                log::warn!(
                    "skipping this pass: the node could not be cordoned (on_cordon_failure = skip)"
                );
                Some(Outcome::Skipped)
            }
            Begun::NoSlot => Some(Outcome::NoSlot),
            Begun::Interrupted => Some(Outcome::Interrupted),
        };
        if let Some(outcome) = outcome
            && outcome != Outcome::Skipped
        {
            // Nothing is held; this ends the guard's wait.
            self.guard.end_pass(None).await;
        }
        outcome
    }

    /// The Node Event to post, unless the same was posted within the hour (a lasting condition
    /// is posted once an hour); a pass with nothing to say ends the quiet.
    fn admit(&mut self, event: Option<NodeEvent>) -> Option<NodeEvent> {
        match event {
            Some(e) if self.quiet.admit(&e, Instant::now()) => Some(e),
            Some(e) => {
                log::info!("not posting {} again within the hour", e.reason);
                None
            }
            None => {
                self.quiet.clear();
                None
            }
        }
    }
}

/// The Node Event of a pass that ran its plan and measured after it, with what the engines do
/// not hold on each filesystem; a pass stopped at the floors says so in the log too.
fn event(
    config: &Config,
    stock: &Stock,
    filesystems: &[FsUsage],
    outcome: Outcome,
    tallies: &Tallies,
    before: &Measurement,
    after: &Measurement,
) -> Option<NodeEvent> {
    let context = Context {
        critical: stock.critical.then_some(config.critical_pct),
        outside: filesystems
            .iter()
            .enumerate()
            .filter(|_| stock.engines.iter().any(|e| e.footprint_bytes.is_some()))
            .map(|(i, fs)| (fs.path.display().to_string(), stock.outside_bytes(fs, i)))
            .collect(),
    };
    if outcome == Outcome::FloorsReached {
        log::warn!(
            "the engines are at their floors and usage is still above the low watermark: {}",
            context
                .outside
                .iter()
                .map(|(p, b)| format!("{} of {p} is outside the engines", size(*b)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    node_event(
        outcome,
        tallies,
        before,
        after,
        &config.watermarks,
        &context,
    )
}
