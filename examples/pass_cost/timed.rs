//! The instruments around a real [`Pass`](docker_image_cleaner::cycle::Pass): an [`Engine`]
//! that times every call it forwards, a [`Meter`] that times every measurement, a [`Guard`] that
//! records when it is asked to cordon and to release, all on one [`Timeline`].
//! Must not: change what a call does or returns.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use docker_image_cleaner::cycle::Guard;
use docker_image_cleaner::docker::{self, Engine, Inventory, Pruned, Removal, UseEvent};
use docker_image_cleaner::node::{NodeEvent, PassStart};
use docker_image_cleaner::usage::{self, FsUsage, Measurement, Meter};
use futures_util::Stream;

/// What a timed span was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Engine::inventory`: list images, list containers (and inspect stopped ones).
    Inventory,
    /// `Engine::remove_image` or `remove_container`: for an image, one inspect and one DELETE
    /// (more requests only for an image with several tags).
    Removal,
    /// `Engine::prune_*` (strategy `prune` only).
    Prune,
    /// `Engine::resolve_image` (an inspect).
    Lookup,
    /// `Meter::measure`, `filesystems` or `footprint`.
    Measure,
}

/// A point the guard was called at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `begin_pass`: the node would be cordoned now.
    Cordon,
    /// `check_deadline`: called just before each step.
    Step,
    /// `end_pass`: the node would be released now.
    Release,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    Span {
        kind: Kind,
        start: Instant,
        end: Instant,
    },
    Mark(Mark, Instant),
}

impl Event {
    fn at(&self) -> Instant {
        match *self {
            Event::Span { end, .. } => end,
            Event::Mark(_, at) => at,
        }
    }
}

/// Every timed call and guard call of one pass, in order.
#[derive(Debug, Default)]
pub struct Timeline {
    events: Mutex<Vec<Event>>,
}

impl Timeline {
    fn push(&self, event: Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    /// Records a span of `kind` from `start` to now.
    fn span(&self, kind: Kind, start: Instant) -> Duration {
        let end = Instant::now();
        self.push(Event::Span { kind, start, end });
        end - start
    }

    fn mark(&self, mark: Mark) {
        self.push(Event::Mark(mark, Instant::now()));
    }

    /// Where the time of the pass went.
    pub fn breakdown(&self) -> Breakdown {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        events.sort_by_key(Event::at);
        let mut b = Breakdown::default();
        let mut cordon = None;
        // The end of the measurement that follows a removal: the Course's pause (if any) runs
        // from there to the next step.
        let mut after_removal = false;
        let mut measured_at = None;
        for e in &events {
            match *e {
                Event::Span { kind, start, end } => {
                    let d = end - start;
                    match kind {
                        Kind::Removal => {
                            b.removal_each.push(d);
                            after_removal = true;
                            measured_at = None;
                        }
                        Kind::Measure => {
                            b.measure += d;
                            if after_removal {
                                measured_at = Some(end);
                            }
                        }
                        Kind::Inventory => b.inventory += d,
                        Kind::Prune => b.removal_each.push(d),
                        Kind::Lookup => b.lookups += d,
                    }
                }
                Event::Mark(Mark::Cordon, at) => cordon = Some(at),
                Event::Mark(Mark::Step, at) => {
                    if let Some(m) = measured_at.take() {
                        b.course_pauses += at - m;
                    }
                    after_removal = false;
                }
                Event::Mark(Mark::Release, at) => {
                    b.cordoned = cordon.map(|c| at - c);
                }
            }
        }
        b
    }
}

/// Where the time of one pass went, by the timeline.
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    /// Each removal call, in order.
    pub removal_each: Vec<Duration>,
    /// From the measurement after a removal to the next step: the Course's `Pause` (for
    /// `delay_seconds = 0`, only the few microseconds of deciding).
    pub course_pauses: Duration,
    /// Every measurement (statvfs in relative mode).
    pub measure: Duration,
    /// Every inventory.
    pub inventory: Duration,
    /// Every image lookup.
    pub lookups: Duration,
    /// From `begin_pass` to `end_pass`; `None` when the pass never cordoned.
    pub cordoned: Option<Duration>,
}

impl Breakdown {
    /// The removal calls added up.
    pub fn removal(&self) -> Duration {
        self.removal_each.iter().sum()
    }

    /// Every pause the Course made.
    pub fn pauses(&self) -> Duration {
        self.course_pauses
    }
}

/// An engine that times every call it forwards to `inner`.
pub struct TimedEngine<'t, E> {
    inner: E,
    timeline: &'t Timeline,
}

impl<'t, E: Engine> TimedEngine<'t, E> {
    /// `inner`, timed on `timeline`.
    pub fn new(inner: E, timeline: &'t Timeline) -> Self {
        TimedEngine { inner, timeline }
    }
}

impl<E: Engine> Engine for TimedEngine<'_, E> {
    async fn inventory(&self, finished_times: bool) -> Result<Inventory, docker::Error> {
        let start = Instant::now();
        let r = self.inner.inventory(finished_times).await;
        self.timeline.span(Kind::Inventory, start);
        r
    }

    async fn remove_container(&self, id: &str) -> Result<Removal, docker::Error> {
        let start = Instant::now();
        let r = self.inner.remove_container(id).await;
        self.timeline.span(Kind::Removal, start);
        r
    }

    async fn remove_image(&self, id: &str, tags: &[String]) -> Result<Removal, docker::Error> {
        let start = Instant::now();
        let r = self.inner.remove_image(id, tags).await;
        self.timeline.span(Kind::Removal, start);
        r
    }

    async fn prune_containers(&self) -> Result<Pruned, docker::Error> {
        let start = Instant::now();
        let r = self.inner.prune_containers().await;
        self.timeline.span(Kind::Prune, start);
        r
    }

    async fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&docker::Image) -> bool + Sync),
    ) -> Result<Pruned, docker::Error> {
        let start = Instant::now();
        let r = self.inner.prune_images(all, spare).await;
        self.timeline.span(Kind::Prune, start);
        r
    }

    async fn build_cache(&self) -> Result<Option<docker::BuildCache>, docker::Error> {
        let start = Instant::now();
        let r = self.inner.build_cache().await;
        self.timeline.span(Kind::Lookup, start);
        r
    }

    async fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> Result<Option<Pruned>, docker::Error> {
        let start = Instant::now();
        let r = self
            .inner
            .prune_build_cache(unused_for, keep_bytes, all)
            .await;
        self.timeline.span(Kind::Prune, start);
        r
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, docker::Error> {
        let start = Instant::now();
        let r = self.inner.resolve_image(name).await;
        self.timeline.span(Kind::Lookup, start);
        r
    }

    fn storage(&self) -> &docker::Storage {
        self.inner.storage()
    }

    async fn containerd_bytes(&self) -> Result<Option<u64>, docker::Error> {
        let start = Instant::now();
        let r = self.inner.containerd_bytes().await;
        self.timeline.span(Kind::Measure, start);
        r
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, docker::Error>> + Send + 'static {
        self.inner.use_events(since_nanos, until_nanos)
    }
}

/// A meter that times every measurement of `inner`.
pub struct TimedMeter<'t, M> {
    inner: M,
    timeline: &'t Timeline,
}

impl<'t, M: Meter> TimedMeter<'t, M> {
    /// `inner`, timed on `timeline`.
    pub fn new(inner: M, timeline: &'t Timeline) -> Self {
        TimedMeter { inner, timeline }
    }
}

impl<M: Meter> Meter for TimedMeter<'_, M> {
    async fn measure(&self) -> Result<Measurement, usage::Error> {
        let start = Instant::now();
        let r = self.inner.measure().await;
        self.timeline.span(Kind::Measure, start);
        r
    }

    async fn filesystems(&self) -> Result<Vec<FsUsage>, usage::Error> {
        let start = Instant::now();
        let r = self.inner.filesystems().await;
        self.timeline.span(Kind::Measure, start);
        r
    }

    async fn footprint(&self, paths: &[PathBuf], skip: &[PathBuf]) -> Result<u64, usage::Error> {
        let start = Instant::now();
        let r = self.inner.footprint(paths, skip).await;
        self.timeline.span(Kind::Measure, start);
        r
    }

    fn device(&self, path: &Path) -> Option<u64> {
        self.inner.device(path)
    }
}

/// A guard that cordons nothing and records when it was asked to.
pub struct Recorder<'t> {
    timeline: &'t Timeline,
}

impl<'t> Recorder<'t> {
    /// Records on `timeline`.
    pub fn new(timeline: &'t Timeline) -> Self {
        Recorder { timeline }
    }
}

impl Guard for Recorder<'_> {
    async fn begin_pass(&mut self, _critical: bool) -> PassStart {
        self.timeline.mark(Mark::Cordon);
        PassStart::Proceed
    }

    async fn check_deadline(&mut self) {
        self.timeline.mark(Mark::Step);
    }

    async fn end_pass(&mut self, _event: Option<NodeEvent>) {
        self.timeline.mark(Mark::Release);
    }
}
