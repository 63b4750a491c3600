//! Our cleaner, driven by the library itself: `lastuse::LastUse` fed with the events the engine
//! would send, `policy::plan` over the inventory the engine would list, and `policy::Course`
//! stepping through the plan as `cycle::Pass` does (measure, above high?, take stock, plan,
//! cordon when the plan has steps, run the course, release). Only the I/O is simulated.
//!
//! Strategy `prune` through the same path is the original tool. When a removal frees much less
//! than its size (the build cache holds its layers), the course asks to take stock again, and
//! the pass does so at most `cycle::MAX_RESTOCKS` times, as `cycle::Pass` does.

use std::time::Duration;

use docker_image_cleaner::config::{Config, DEFAULT_ENGINE, Strategy, Watermarks};
use docker_image_cleaner::cycle::MAX_RESTOCKS;
use docker_image_cleaner::docker::{BuildCache, Inventory, UseEvent};
use docker_image_cleaner::lastuse::LastUse;
use docker_image_cleaner::policy::headroom;
use docker_image_cleaner::policy::next::EngineView;
use docker_image_cleaner::policy::{self, Action, Course, Holding, Input, Plan, Step, StepResult};
use docker_image_cleaner::usage::Measurement;

use crate::node::{Removal, Sizes};
use crate::sim::{Cleaner, Notice, World};

/// Checks that react at once are at most one a second (the daemon's `CHECK_DEBOUNCE`)...
const DEBOUNCE_MS: i64 = 1000;
/// ... and come a second after the event (its `CHECK_SETTLE`: a load's tarball is gone).
const SETTLE_MS: i64 = 1000;

/// Our cleaner with one configuration.
pub struct Ours {
    config: Config,
    /// The watermarks as configured (`config`'s are the effective ones of the last check).
    configured: Watermarks,
    /// How long after an event a check comes (0: at once, as before the daemon waited).
    settle_ms: i64,
    last_use: LastUse,
    react: bool,
    sizes: Sizes,
    last_check_ms: i64,
    wake_pending: bool,
}

impl Ours {
    /// With `strategy`, watermarks `high`/`low` %, `min_age`; `react`: also check after a pull
    /// that leaves usage at or above high; `sizes`: what the engine reports as image sizes;
    /// `scale`: the trace's time compression (the interval and every age shrink by it).
    pub fn new(
        strategy: Strategy,
        (high, low): (f64, f64),
        min_age: Duration,
        react: bool,
        sizes: Sizes,
        scale: i64,
    ) -> Self {
        let d = Config::default();
        let scale = u32::try_from(scale.max(1)).unwrap_or(1);
        let config = Config {
            strategy,
            watermarks: Watermarks::Relative {
                high_pct: high,
                low_pct: low,
            },
            min_age: min_age / scale,
            interval: d.interval / scale,
            critical_min_age: d.critical_min_age / scale,
            build_cache_min_age: d.build_cache_min_age / scale,
            // Both watermarks given: fixed, as a user who sets them gets.
            low_auto: false,
            high_auto: false,
            ..d
        };
        Ours {
            configured: config.watermarks,
            settle_ms: SETTLE_MS,
            config,
            last_use: LastUse::new(),
            react,
            sizes,
            last_check_ms: i64::MIN / 2,
            wake_pending: false,
        }
    }

    /// Ours at the library's defaults (`Config::default()`, reacting at once to what may add
    /// bytes, as the daemon does in relative mode), on a trace compressed by `scale`.
    pub fn defaults(sizes: Sizes, scale: i64) -> Self {
        let d = Config::default();
        let Watermarks::Relative { high_pct, low_pct } = d.watermarks else {
            unreachable!("the default watermarks are relative")
        };
        let mut o = Ours::new(
            d.strategy,
            (high_pct, low_pct),
            d.min_age,
            true,
            sizes,
            scale,
        );
        o.config.low_auto = d.low_auto;
        o.config.high_auto = d.high_auto;
        o
    }

    /// The watermarks of a check at `w.now`, as the daemon makes them.
    fn effective(&mut self, w: &World<'_>) {
        if self.config.low_auto || self.config.high_auto {
            let configured = Config {
                watermarks: self.configured,
                ..self.config.clone()
            };
            let arrivals = headroom::arrivals([&self.last_use], &configured, w.now);
            self.config.watermarks =
                headroom::effective(&configured, &arrivals, &w.node.measurement(), w.now).0;
        }
    }

    /// With this pause between two removals instead of the default.
    pub fn with_delay(mut self, delay: docker_image_cleaner::config::Delay) -> Self {
        self.config.delay = delay;
        self
    }

    /// Checks at once after an event, as the daemon did before it waited for a load's
    /// tarball to go (the real-binary benchmark's baseline).
    pub fn at_once(mut self) -> Self {
        self.settle_ms = 0;
        self
    }

    /// A check after an event that may have added bytes (a pull, a container create), a
    /// second after it and at most one a second, as the daemon's.
    fn react(&mut self, w: &mut World<'_>) {
        if self.react && !self.wake_pending {
            self.wake_pending = true;
            w.wake_at((w.now + self.settle_ms).max(self.last_check_ms + DEBOUNCE_MS));
        }
    }

    fn event(&mut self, world: &World<'_>, image: usize, action: &str) {
        let id = &world.trace().images[image].id;
        let event = UseEvent {
            time_nanos: world.now.saturating_mul(1_000_000),
            // A container event names the image by reference; the daemon resolves it to the
            // id, which the simulation knows.
            image: id.clone(),
            action: action.to_string(),
            deleted: false,
        };
        self.last_use.apply(&event, Some(id));
    }

    /// Takes stock as `cycle::take_stock` does: the inventory, last use brought up to date, the
    /// build cache, and the plan for the shortfall of `m`.
    fn stock(&mut self, w: &World<'_>, m: &Measurement) -> (Inventory, Option<BuildCache>, Plan) {
        let inventory = w.node.inventory(self.sizes);
        self.last_use.reconcile(&inventory, w.now, false);
        let cache = w.node.has_build_cache().then(|| w.node.build_cache());
        let need = policy::need(m, &self.config.watermarks);
        let holding = Holding {
            name: DEFAULT_ENGINE,
            inventory: &inventory,
            last_use: &self.last_use,
            floor: None,
            build_cache: cache.as_ref(),
        };
        let critical = policy::critical(m.filesystems(), &self.config);
        let plan = policy::plan(&[holding], &self.config, need, w.now, critical);
        (inventory, cache, plan)
    }

    /// One pass, as `cycle::Pass::run` makes it.
    fn pass(&mut self, w: &mut World<'_>) {
        self.last_check_ms = w.now;
        w.node.stats.checks += 1;
        // Every tick lists the engines (last use and sizes brought up to date).
        if self.config.low_auto || self.config.high_auto {
            let inventory = w.node.inventory(self.sizes);
            self.last_use.reconcile(&inventory, w.now, false);
        }
        self.effective(w);
        let before = w.node.measurement();
        if !policy::above_high(&before, &self.config.watermarks) {
            return;
        }
        let (_, _, mut plan) = self.stock(w, &before);
        if !policy::cordons(&plan, &self.config) {
            return;
        }
        let cordoned_at = w.now;
        w.node.stats.cordons += 1;
        let removed_before = w.node.stats.removed;
        let engines = [EngineView {
            name: DEFAULT_ENGINE.to_string(),
            filesystems: vec![0],
            floor: None,
        }];
        let mut from = before;
        let mut restocks = 0;
        'plans: loop {
            let mut course = Course::new(&plan, &self.config, &from, &engines)
                .restocking(restocks < MAX_RESTOCKS);
            let mut action = course.next(Input::Start);
            loop {
                action = match action {
                    Action::Run(i) => {
                        let started = w.now;
                        let result = self.step(w, &plan.steps[i]);
                        // The simulated removal's time, for an adaptive delay.
                        let took = u64::try_from(w.now - started).unwrap_or(0);
                        course.next(Input::Ran(result, Duration::from_millis(took)))
                    }
                    Action::Skip(..) => course.next(Input::Skipped),
                    Action::Measure => {
                        let m = w.node.measurement();
                        course.next(Input::Measured(&m))
                    }
                    Action::Pause(d) => {
                        w.advance(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                        course.next(Input::Paused)
                    }
                    Action::Restock => {
                        restocks += 1;
                        from = w.node.measurement();
                        plan = self.stock(w, &from).2;
                        continue 'plans;
                    }
                    Action::Stop(_) => break 'plans,
                };
            }
        }
        w.node.stats.busy_ms += w.now - cordoned_at;
        if w.node.stats.removed > removed_before {
            w.node.stats.cleanings += 1;
        }
    }

    fn step(&mut self, w: &mut World<'_>, step: &Step) -> StepResult {
        match step {
            Step::RemoveImage { id, .. } => match w.trace().by_id.get(id) {
                Some(image) => match w.remove(*image) {
                    Removal::Removed(_) => StepResult::Removed,
                    Removal::InUse | Removal::Gone => StepResult::NotRemoved,
                },
                None => StepResult::NotRemoved,
            },
            // The kubelet removes containers as they end: none is ever stopped and left.
            Step::RemoveContainer { .. } | Step::PruneContainers { .. } => StepResult::Removed,
            // Every image has a tag.
            Step::PruneDanglingImages { .. } => StepResult::PrunedDangling(0),
            Step::PruneBuildCache {
                keep_bytes,
                unused_for_secs,
                all,
                ..
            } => {
                let unused_ms = i64::try_from(unused_for_secs.saturating_mul(1000)).unwrap_or(0);
                let freed = w.node.prune_cache(*keep_bytes, w.now - unused_ms, *all);
                w.node.stats.cache_pruned_bytes += freed;
                w.advance(w.removal_ms(freed));
                StepResult::Reclaimed(freed)
            }
            Step::PruneAllImages { .. } => {
                let unused: Vec<usize> = w
                    .node
                    .present_images()
                    .filter(|i| !w.node.in_use(*i))
                    .collect();
                for image in unused {
                    w.remove(image);
                }
                StepResult::Removed
            }
        }
    }
}

impl Cleaner for Ours {
    fn interval_ms(&self) -> Option<i64> {
        Some(i64::try_from(self.config.interval.as_millis()).unwrap_or(i64::MAX))
    }

    fn notice(&mut self, w: &mut World<'_>, notice: Notice) {
        match notice {
            // The engine's events, as `lastuse` is fed them.
            Notice::Started(image) => {
                self.event(w, image, "create");
                self.event(w, image, "start");
                self.react(w);
            }
            Notice::Ended(image) => {
                self.event(w, image, "die");
                self.event(w, image, "destroy");
            }
            Notice::Pulled(image) => {
                self.event(w, image, "pull");
                self.react(w);
            }
            Notice::Tick => self.pass(w),
            Notice::Wake => {
                self.wake_pending = false;
                self.effective(w);
                if policy::above_high(&w.node.measurement(), &self.config.watermarks) {
                    self.pass(w);
                }
            }
            // Our state is on disk: a restart loses nothing.
            Notice::Restart => {}
        }
    }
}
