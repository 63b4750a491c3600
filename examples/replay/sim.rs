//! The event loop: replays a trace on a [`Node`] in simulated time and tells the cleaner what an
//! engine's events would tell it. A cleaner's pass takes simulated time ([`World::advance`]):
//! uses, container exits and other files go on meanwhile, and what they tell the cleaner waits
//! until the pass is over (the daemon is one sequential loop).
//!
//! A pull that does not fit fails ("found the disk full") and the pod retries it with the
//! kubelet's image pull back-off (10 s, doubling, at most 5 min) for up to ten minutes (a
//! spawner's patience); then the use is lost: the user launches again and lands on another node,
//! which pulls the image there. So a lost use is charged the bytes its pull would have written
//! (`lost_bytes`): a policy that lets pulls fail must not look cheap for it. Nor are the failed
//! attempts free: each downloads what there is room for (at most what the image lacks) before
//! the disk runs out, and throws it away (`wasted_bytes`). (Retrying forever
//! instead would let a stalled node batch hours of waiting uses into one pull.) Pulls take no
//! time: they only move bytes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::node::{Node, Removal, removal_ms};
use crate::trace::{PullModel, Trace};

const BACKOFF_START_MS: i64 = 10_000;
const BACKOFF_MAX_MS: i64 = 300_000;
const GIVE_UP_MS: i64 = 600_000;

/// What happened, as the cleaner hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A container of `image` was created and started.
    Started(usize),
    /// A container of `image` died and was removed.
    Ended(usize),
    /// `image` was pulled.
    Pulled(usize),
    /// The cleaner's interval elapsed.
    Tick,
    /// The cleaner asked to be woken ([`World::wake_at`]).
    Wake,
    /// The cleaner's process restarted.
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Use {
        index: usize,
        attempt: u32,
        first_ms: i64,
    },
    Exit(u64),
    Other(u64),
    Tick,
    Wake,
    Restart,
    Build(usize),
    /// A load of the image is over.
    Loaded(usize),
    /// A load's tmp dir of this many bytes is gone.
    Settled(u64),
}

/// A cleaner under test.
pub trait Cleaner {
    /// Time between two passes, if it runs on an interval.
    fn interval_ms(&self) -> Option<i64>;
    /// Reacts to what happened; may run a pass.
    fn notice(&mut self, world: &mut World<'_>, notice: Notice);
    /// True for the offline optimum: the world evicts for it when a pull does not fit.
    fn is_oracle(&self) -> bool {
        false
    }
}

/// The node, the clock and the queue of what is to come.
pub struct World<'t> {
    /// The node.
    pub node: Node<'t>,
    /// Now, unix ms.
    pub now: i64,
    queue: BinaryHeap<Reverse<(i64, u64, Event)>>,
    seq: u64,
    notices: Vec<Notice>,
    oracle: bool,
    interval: Option<i64>,
    next_container: u64,
    /// Per image, the uses waiting for its load: (use, attempt, first attempt).
    waiting: Vec<Vec<(usize, u32, i64)>>,
    /// Uses not yet started, and containers still running: the replay ends when both are 0.
    outstanding: usize,
}

impl<'t> World<'t> {
    fn new(trace: &'t Trace, oracle: bool, interval: Option<i64>) -> Self {
        let mut w = World {
            node: Node::new(trace),
            now: crate::trace::T0_MS,
            queue: BinaryHeap::new(),
            seq: 0,
            notices: Vec::new(),
            oracle,
            interval,
            next_container: 1,
            waiting: vec![Vec::new(); trace.images.len()],
            outstanding: trace.uses.len(),
        };
        if let Some(iv) = interval {
            w.push(crate::trace::T0_MS + iv, Event::Tick);
        }
        for index in 0..trace.uses.len() {
            let t = trace.uses[index].t_ms;
            w.push(
                t,
                Event::Use {
                    index,
                    attempt: 0,
                    first_ms: t,
                },
            );
        }
        for (t, bytes) in &trace.others {
            w.push(*t, Event::Other(*bytes));
        }
        for t in &trace.restarts {
            w.push(*t, Event::Restart);
        }
        for (i, b) in trace.builds.iter().enumerate() {
            w.push(b.t_ms, Event::Build(i));
        }
        w
    }

    fn push(&mut self, t: i64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, e)));
    }

    /// The trace.
    pub fn trace(&self) -> &'t Trace {
        self.node.trace
    }

    /// Tells the cleaner [`Notice::Wake`] at `t`.
    pub fn wake_at(&mut self, t: i64) {
        self.push(t.max(self.now), Event::Wake);
    }

    /// Lets `ms` of simulated time pass: what happens meanwhile happens.
    pub fn advance(&mut self, ms: i64) {
        let until = self.now + ms.max(0);
        while let Some(Reverse((t, _, _))) = self.queue.peek() {
            if *t > until {
                break;
            }
            let Some(Reverse((t, _, e))) = self.queue.pop() else {
                break;
            };
            self.now = t;
            self.process(e);
        }
        self.now = until;
    }

    /// Removes `image`, taking the time a removal takes.
    pub fn remove(&mut self, image: usize) -> Removal {
        let r = self.node.remove(image, self.now);
        if let Removal::Removed(freed) = r {
            self.advance(self.removal_ms(freed));
        }
        r
    }

    /// How long a removal freeing `freed` takes on this trace's clock.
    pub fn removal_ms(&self, freed: u64) -> i64 {
        removal_ms(freed) / self.trace().scale.max(1)
    }

    fn process(&mut self, e: Event) {
        match e {
            Event::Use {
                index,
                attempt,
                first_ms,
            } => self.use_image(index, attempt, first_ms),
            Event::Exit(id) => {
                self.outstanding -= 1;
                if let Some(image) = self.node.stop(id) {
                    self.notices.push(Notice::Ended(image));
                }
            }
            Event::Other(bytes) => self.node.set_other(bytes, self.now),
            Event::Tick => {
                if let Some(iv) = self.interval {
                    self.push(self.now + iv, Event::Tick);
                }
                self.notices.push(Notice::Tick);
            }
            Event::Wake => self.notices.push(Notice::Wake),
            Event::Restart => self.notices.push(Notice::Restart),
            Event::Build(i) => {
                let b = self.trace().builds[i];
                if self
                    .node
                    .build(b.image, b.built_layers, b.own_bytes, self.now)
                {
                    self.notices.push(Notice::Pulled(b.image));
                }
            }
            Event::Loaded(image) => {
                self.node.loaded(image, self.now);
                self.notices.push(Notice::Pulled(image));
                if let PullModel::Load { settle_ms, .. } = self.trace().pull {
                    let tar = self.trace().image_bytes(image);
                    self.push(self.now + settle_ms, Event::Settled(tar));
                }
                for (index, attempt, first_ms) in std::mem::take(&mut self.waiting[image]) {
                    self.start(index, attempt, first_ms);
                }
            }
            Event::Settled(bytes) => self.node.settled(bytes, self.now),
        }
    }

    /// Pulls `image` as the trace's pull model says: `Ok(true)` when it is there now,
    /// `Ok(false)` when a load has begun, `Err(bytes missing)` when there is no room.
    fn pull(&mut self, image: usize) -> Result<bool, u64> {
        match self.trace().pull {
            PullModel::Instant => self.node.pull(image, self.now).map(|_| true),
            PullModel::Load { mib_per_s, .. } => {
                let tar = self.trace().image_bytes(image);
                let written = self.node.load(image, tar, self.now)?;
                let mib = (tar + written) as f64 / crate::trace::MIB as f64;
                let ms = (mib / mib_per_s * 1000.0) as i64;
                self.push(self.now + ms.max(1), Event::Loaded(image));
                Ok(false)
            }
        }
    }

    /// Bytes a pull of `image` needs free.
    fn pull_needs(&self, image: usize) -> u64 {
        let tar = match self.trace().pull {
            PullModel::Instant => 0,
            PullModel::Load { .. } => self.trace().image_bytes(image),
        };
        self.node.missing(image) + tar
    }

    fn use_image(&mut self, index: usize, attempt: u32, first_ms: i64) {
        let u = self.trace().uses[index];
        if attempt == 0 {
            self.node.stats.uses += 1;
            if self.node.is_present(u.image) {
                self.node.stats.hits += 1;
            }
        }
        if self.node.is_loading(u.image) {
            // The kubelet waits for the pull under way.
            self.waiting[u.image].push((index, attempt, first_ms));
            return;
        }
        if !self.node.is_present(u.image) {
            let mut pulled = self.pull(u.image);
            if pulled.is_err() && self.oracle {
                self.evict_for(u.image);
                pulled = self.pull(u.image);
            }
            if let Ok(false) = pulled {
                self.waiting[u.image].push((index, attempt, first_ms));
                return;
            }
            if let Err(missing) = pulled {
                self.node.stats.full += 1;
                let room = self.node.capacity().saturating_sub(self.node.used());
                self.node.stats.wasted_bytes += room.min(missing);
                let scale = self.trace().scale.max(1);
                let backoff =
                    ((BACKOFF_START_MS / scale) << attempt.min(10)).min(BACKOFF_MAX_MS / scale);
                if self.now + backoff - first_ms > GIVE_UP_MS / scale {
                    self.node.stats.lost += 1;
                    self.node.stats.lost_bytes += self.node.missing(u.image);
                    self.outstanding -= 1;
                } else {
                    self.push(
                        self.now + backoff,
                        Event::Use {
                            index,
                            attempt: attempt + 1,
                            first_ms,
                        },
                    );
                }
                return;
            }
            self.notices.push(Notice::Pulled(u.image));
        }
        self.start(index, attempt, first_ms);
    }

    /// The container of use `index` starts.
    fn start(&mut self, index: usize, attempt: u32, first_ms: i64) {
        let u = self.trace().uses[index];
        if attempt > 0 {
            self.node.stats.waited += 1;
            self.node.stats.wait_ms += self.now - first_ms;
        }
        // Started: it stays outstanding until its container ends.
        let id = self.next_container;
        self.next_container += 1;
        self.node.start(id, u.image, self.now);
        self.push(self.now + u.lifetime_ms, Event::Exit(id));
        self.notices.push(Notice::Started(u.image));
    }

    /// Belady's rule, on demand and by layer: until `image` fits, remove the image whose
    /// freed layers are needed again farthest in the future (a layer is needed at the next use
    /// of any image holding it, present or not: a new version shares its base). Bytes never
    /// needed again go first, most bytes first. Instantaneous, with the whole disk to use: it is
    /// the bound, not a cleaner.
    fn evict_for(&mut self, image: usize) {
        let mut removed_any = false;
        // The build cache's own bytes are never needed again (no build reuses them here).
        if self.node.used() + self.pull_needs(image) > self.node.capacity()
            && self.node.prune_cache(0, i64::MAX, false) > 0
        {
            removed_any = true;
        }
        while self.node.used() + self.pull_needs(image) > self.node.capacity() {
            let victim = self
                .node
                .present_images()
                .filter(|i| *i != image && !self.node.in_use(*i))
                .filter_map(|i| {
                    let (needed, freed) = self.node.exclusive_needed(i, self.now);
                    (freed > 0).then_some((needed.unwrap_or(i64::MAX), freed, i))
                })
                .max();
            let Some((_, _, victim)) = victim else { break };
            if let Removal::Removed(freed) = self.node.remove(victim, self.now) {
                removed_any = true;
                self.node.stats.busy_ms += self.removal_ms(freed);
                // The cache's records of its layers are unshared now: gone too.
                self.node.prune_cache(0, i64::MAX, false);
            }
        }
        if removed_any {
            self.node.stats.cleanings += 1;
        }
    }
}

/// Replays `trace` with `cleaner` until every use has been served or lost and every container
/// has ended; returns the node.
pub fn run<'t>(trace: &'t Trace, cleaner: &mut dyn Cleaner) -> Node<'t> {
    let mut w = World::new(trace, cleaner.is_oracle(), cleaner.interval_ms());
    while w.outstanding > 0 {
        let Some(Reverse((t, _, e))) = w.queue.pop() else {
            break;
        };
        w.now = t;
        w.process(e);
        while !w.notices.is_empty() {
            for n in std::mem::take(&mut w.notices) {
                cleaner.notice(&mut w, n);
            }
        }
    }
    w.node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{MIB, tiny};

    /// Does nothing at all.
    struct Idle;
    impl Cleaner for Idle {
        fn interval_ms(&self) -> Option<i64> {
            None
        }
        fn notice(&mut self, _: &mut World<'_>, _: Notice) {}
    }

    const MIN: i64 = 60_000;

    #[test]
    fn a_use_that_never_fits_is_retried_for_ten_minutes_then_lost_and_charged() {
        // Image 1 cannot fit while image 0 is there, and nobody removes anything.
        let t = tiny(
            vec![600 * MIB, 600 * MIB],
            vec![vec![0], vec![1]],
            &[(0, 0, MIN), (5 * MIN, 1, MIN)],
            1000 * MIB,
        );
        let n = run(&t, &mut Idle);
        assert_eq!(n.stats.uses, 2);
        assert_eq!(n.stats.lost, 1);
        assert_eq!(n.stats.lost_bytes, 600 * MIB);
        // Attempts at 0, 10, 30, 70, 150, 310 s; the next (at 610 s) would be past ten minutes.
        assert_eq!(n.stats.full, 6);
        // Each attempt downloads the 400 MiB there is room for, then fails.
        assert_eq!(n.stats.wasted_bytes, 6 * 400 * MIB);
        assert_eq!(n.stats.repulled(), 600 * MIB + 6 * 400 * MIB);
    }

    #[test]
    fn belady_evicts_what_is_needed_farthest_and_keeps_what_comes_back() {
        // Room for two of the three images. Uses: 0, 1, 2, then 0 again, then 1 much later.
        let t = tiny(
            vec![400 * MIB, 400 * MIB, 400 * MIB],
            vec![vec![0], vec![1], vec![2]],
            &[
                (0, 0, MIN),
                (2 * MIN, 1, MIN),
                (4 * MIN, 2, MIN),
                (6 * MIN, 0, MIN),
                (60 * MIN, 1, MIN),
            ],
            1000 * MIB,
        );
        let n = run(&t, &mut crate::peers::Belady);
        // At the pull of 2, image 1 (next use at 60 min) goes, not 0 (at 6 min): 0 hits, and
        // only image 1 is pulled again.
        assert_eq!(n.stats.hits, 1);
        assert_eq!(n.stats.again_bytes, 400 * MIB);
        assert_eq!(n.stats.full, 0);
    }

    #[test]
    fn a_pass_of_ours_that_frees_nothing_takes_stock_again_and_prunes_the_build_cache() {
        // Five images built on the node two hours before, one base of 100 MiB and a layer each
        // of 150 MiB that the build cache holds too (older than the cache's min age, an hour):
        // 850 MiB of 1000, above 82 %. A last use at 400 s keeps the replay going past the
        // pass at 300 s.
        let mut layers = vec![100 * MIB];
        layers.extend([150 * MIB; 5]);
        let mut t = tiny(
            layers,
            (1..=5).map(|l| vec![0, l]).collect(),
            &[(400_000, 4, 1000)],
            1000 * MIB,
        );
        t.builds = (0..5)
            .map(|i| crate::trace::Build {
                t_ms: crate::trace::T0_MS - 7_200_000 + 1000 * i as i64,
                image: i,
                built_layers: 1,
                own_bytes: 0,
            })
            .collect();
        let mut ours = crate::ours::Ours::new(
            docker_image_cleaner::config::Strategy::Lru,
            (82.0, 78.0),
            std::time::Duration::ZERO,
            false,
            crate::node::Sizes::Reported,
            1,
        );
        let n = run(&t, &mut ours);
        assert_eq!(n.stats.builds, 5);
        // The first removal freed nothing (the cache holds its layer); the pass took stock
        // again, found the record unshared and pruned it: 150 MiB, below low with one image.
        assert_eq!(n.stats.removed, 1, "{:?}", n.stats);
        assert_eq!(n.stats.removed_nothing, 1);
        assert_eq!(n.stats.cache_pruned_bytes, 150 * MIB);
        assert_eq!(n.used(), 700 * MIB);
        assert_eq!(n.stats.cordons, 1);
    }

    #[test]
    fn a_pass_of_ours_removes_least_recently_used_first_down_to_low() {
        // Ten images of 100 MiB on a 1000 MiB disk, used in order: after the pulls the disk is
        // full; the 5-minute pass (min age 0) removes the oldest until below 60 %. A last use
        // at 400 s keeps the replay going past the pass.
        let mut uses: Vec<(i64, usize, i64)> =
            (0..10).map(|i| (i * 1000, i as usize, 200_000)).collect();
        uses.push((400_000, 9, 1000));
        let t = tiny(
            vec![100 * MIB; 10],
            (0..10).map(|i| vec![i]).collect(),
            &uses,
            1000 * MIB,
        );
        let mut ours = crate::ours::Ours::new(
            docker_image_cleaner::config::Strategy::Lru,
            (80.0, 60.0),
            std::time::Duration::ZERO,
            false,
            crate::node::Sizes::Reported,
            1,
        );
        let n = run(&t, &mut ours);
        assert_eq!(n.stats.cordons, 1);
        assert_eq!(
            n.stats.removed, 5,
            "100 % down to 50 %: below 60 % takes five"
        );
        assert!((0..5).all(|i| !n.is_present(i)) && (5..10).all(|i| n.is_present(i)));
        // Five removals of 100 MiB (1.1 s each) and four pauses between them: with the default
        // `delay_seconds = "adaptive"`, each as long as the removal before it took (over 250 ms).
        assert_eq!(n.stats.busy_ms, 9 * removal_ms(100 * MIB));
    }
}
