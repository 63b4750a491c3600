//! Our cleaner, driven by the library itself: `lastuse::LastUse` fed with the events the engine
//! would send, `policy::plan` over the inventory the engine would list, and `policy::Course`
//! stepping through the plan as `cycle::Pass` does (measure, above high?, take stock, plan,
//! cordon when the plan has steps, run the course, release). Only the I/O is simulated.
//!
//! Strategy `prune` through the same path is the original tool.

use std::time::Duration;

use docker_image_cleaner::config::{Config, DEFAULT_ENGINE, Strategy, Watermarks};
use docker_image_cleaner::docker::UseEvent;
use docker_image_cleaner::lastuse::LastUse;
use docker_image_cleaner::policy::next::EngineView;
use docker_image_cleaner::policy::{self, Action, Course, Holding, Input, Step, StepResult};

use crate::node::{Removal, Sizes};
use crate::sim::{Cleaner, Notice, World};

/// Checks that react at once are at most one a second.
const DEBOUNCE_MS: i64 = 1000;

/// Our cleaner with one configuration.
pub struct Ours {
    config: Config,
    last_use: LastUse,
    react: bool,
    sizes: Sizes,
    last_check_ms: i64,
    wake_pending: bool,
}

impl Ours {
    /// With `strategy`, watermarks `high`/`low` %, `min_age`; `react`: also check after a pull
    /// that leaves usage at or above high; `sizes`: what the engine reports as image sizes.
    pub fn new(
        strategy: Strategy,
        (high, low): (f64, f64),
        min_age: Duration,
        react: bool,
        sizes: Sizes,
    ) -> Self {
        let config = Config {
            strategy,
            watermarks: Watermarks::Relative {
                high_pct: high,
                low_pct: low,
            },
            min_age,
            ..Config::default()
        };
        Ours {
            config,
            last_use: LastUse::new(),
            react,
            sizes,
            last_check_ms: i64::MIN / 2,
            wake_pending: false,
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

    /// One pass, as `cycle::Pass::run` makes it.
    fn pass(&mut self, w: &mut World<'_>) {
        self.last_check_ms = w.now;
        w.node.stats.checks += 1;
        let before = w.node.measurement();
        if !policy::above_high(&before, &self.config.watermarks) {
            return;
        }
        let inventory = w.node.inventory(self.sizes);
        self.last_use.reconcile(&inventory, w.now, false);
        let need = policy::need(&before, &self.config.watermarks);
        let holding = Holding {
            name: DEFAULT_ENGINE,
            inventory: &inventory,
            last_use: &self.last_use,
            floor: None,
            build_cache: None,
        };
        let critical = policy::critical(before.filesystems(), &self.config);
        let plan = policy::plan(&[holding], &self.config, need, w.now, critical);
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
        let mut course = Course::new(&plan, &self.config, &before, &engines);
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
                // Not asked for: the course here is made without restocking (the simulated
                // node's removals free what they say).
                Action::Restock | Action::Stop(_) => break,
            };
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
            // The simulated node keeps no build cache.
            Step::PruneBuildCache { .. } => StepResult::NotRemoved,
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
            }
            Notice::Ended(image) => {
                self.event(w, image, "die");
                self.event(w, image, "destroy");
            }
            Notice::Pulled(image) => {
                self.event(w, image, "pull");
                if self.react && policy::above_high(&w.node.measurement(), &self.config.watermarks)
                {
                    if w.now - self.last_check_ms >= DEBOUNCE_MS {
                        self.pass(w);
                    } else if !self.wake_pending {
                        self.wake_pending = true;
                        w.wake_at(self.last_check_ms + DEBOUNCE_MS);
                    }
                }
            }
            Notice::Tick => self.pass(w),
            Notice::Wake => {
                self.wake_pending = false;
                self.pass(w);
            }
            // Our state is on disk: a restart loses nothing.
            Notice::Restart => {}
        }
    }
}
