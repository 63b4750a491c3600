//! The pass against the recording [`FakeEngine`], a simulated disk and a recording guard, in
//! paused tokio time: what a user of the node would see (what goes, what stays, that the node is
//! released), with no Docker, no root and no sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::docker::fake::{Answer, Call, FakeEngine};
use crate::docker::{Container, Image};
use crate::usage::FsUsage;

const MIB: u64 = 1 << 20;
const NOW_MS: i64 = 1_000_000_000;

/// A disk of 100 MiB holding `other_mib` besides the engine's images.
struct Disk<'a> {
    engine: &'a FakeEngine,
    other_bytes: u64,
    measured: AtomicUsize,
}

impl<'a> Disk<'a> {
    fn new(engine: &'a FakeEngine, other_mib: u64) -> Self {
        Disk {
            engine,
            other_bytes: other_mib * MIB,
            measured: AtomicUsize::new(0),
        }
    }

    fn measurements(&self) -> usize {
        self.measured.load(Ordering::SeqCst)
    }
}

impl Meter for Disk<'_> {
    async fn measure(&self) -> Result<Measurement, usage::Error> {
        self.measured.fetch_add(1, Ordering::SeqCst);
        let images: u64 = self
            .engine
            .inventory_now()
            .images
            .iter()
            .map(|i| i.size_bytes)
            .sum();
        let total = 100 * MIB;
        let used = (images + self.other_bytes).min(total);
        Ok(Measurement::Relative(vec![FsUsage::from_counts(
            "/var/lib/docker".into(),
            1,
            total,
            total - used,
            0,
            0,
        )]))
    }
}

/// What the guard was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum G {
    Begin,
    Deadline,
    End(Option<&'static str>),
}

struct Recorder {
    calls: Mutex<Vec<G>>,
    answer: PassStart,
}

impl Recorder {
    fn new(answer: PassStart) -> Self {
        Recorder {
            calls: Mutex::new(Vec::new()),
            answer,
        }
    }

    fn calls(&self) -> Vec<G> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, g: G) {
        self.calls.lock().unwrap().push(g);
    }
}

impl Guard for &Recorder {
    fn begin_pass(&mut self) -> impl Future<Output = PassStart> + Send {
        self.record(G::Begin);
        std::future::ready(self.answer)
    }
    fn check_deadline(&mut self) -> impl Future<Output = ()> + Send {
        self.record(G::Deadline);
        std::future::ready(())
    }
    fn end_pass(&mut self, event: Option<NodeEvent>) -> impl Future<Output = ()> + Send {
        self.record(G::End(event.map(|e| e.reason)));
        std::future::ready(())
    }
}

/// Images `a`, `b`, `c`, `d` of 10 MiB each, last used in that order an hour or more ago.
fn four_images() -> (FakeEngine, LastUse) {
    let images = ["a", "b", "c", "d"]
        .iter()
        .map(|id| Image {
            id: (*id).into(),
            parent_id: None,
            tags: vec![format!("{id}:1")],
            created: 0,
            size_bytes: 10 * MIB,
        })
        .collect();
    let mut last_use = LastUse::new();
    for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
        last_use.touch(id, NOW_MS - 10_000_000 + i64::try_from(i).unwrap() * 1000);
    }
    (FakeEngine::new(images, Vec::new()), last_use)
}

/// High 85 %, low 65 %, no delay unless set.
fn config() -> Config {
    Config {
        watermarks: crate::config::Watermarks::Relative {
            high_pct: 85.0,
            low_pct: 65.0,
        },
        delay: Duration::ZERO,
        ..Config::default()
    }
}

async fn pass(
    config: &Config,
    engine: &FakeEngine,
    disk: &Disk<'_>,
    last_use: &mut LastUse,
    guard: &Recorder,
    shutdown: &CancellationToken,
) -> Result<Report, Error> {
    let mut guard = guard;
    Pass {
        config,
        engine,
        meter: disk,
        last_use,
        guard: &mut guard,
        progress: &(),
        shutdown,
        now_ms: NOW_MS,
    }
    .run()
    .await
}

fn removed(engine: &FakeEngine) -> Vec<String> {
    engine
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::RemoveImage(id) => Some(id),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn stops_at_the_low_watermark_and_releases() {
    // 40 MiB of images + 50 MiB else = 90 %: two removals reach 70 %, three 60 % (< 65).
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(removed(&engine), vec!["a", "b", "c"]);
    assert_eq!(report.removed_images, 3);
    assert_eq!(report.freed_bytes, i64::try_from(30 * MIB).unwrap());
    assert_eq!(
        guard.calls(),
        vec![
            G::Begin,
            G::Deadline,
            G::Deadline,
            G::Deadline,
            G::End(Some("ImagesRemoved"))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn below_high_takes_no_stock_and_touches_no_node() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::BelowHigh);
    assert!(engine.calls().is_empty());
    assert!(guard.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_between_two_steps_finishes_the_removal_in_flight_and_releases() {
    let (engine, mut last_use) = four_images();
    let engine = engine.with_latency(Duration::from_secs(2));
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let stopper = {
        let token = token.clone();
        async move {
            // Inventory takes 2 s, the first removal 2 s more: stop in the middle of it.
            tokio::time::sleep(Duration::from_secs(3)).await;
            token.cancel();
        }
    };
    let config = config();
    let (report, ()) = tokio::join!(
        pass(&config, &engine, &disk, &mut last_use, &guard, &token),
        stopper
    );
    let report = report.unwrap();
    assert_eq!(report.outcome, Outcome::Interrupted);
    assert_eq!(
        removed(&engine),
        vec!["a"],
        "the removal in flight finishes"
    );
    assert_eq!(
        engine.inventory_now().images.len(),
        3,
        "a is gone, b c d stay"
    );
    assert_eq!(
        guard.calls().last(),
        Some(&G::End(Some("ImagesRemoved"))),
        "released, with what was removed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_removal_still_releases_the_node() {
    let (engine, mut last_use) = four_images();
    engine.script("b", Answer::Fail(500));
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let err = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Docker(_)), "{err:?}");
    assert_eq!(removed(&engine), vec!["a", "b"]);
    assert_eq!(guard.calls().first(), Some(&G::Begin));
    assert_eq!(guard.calls().last(), Some(&G::End(None)));
}

#[tokio::test(start_paused = true)]
async fn refused_and_vanished_images_are_skipped_without_a_measurement() {
    let (engine, mut last_use) = four_images();
    engine.script("a", Answer::Conflict("image is being used".into()));
    engine.script("b", Answer::Gone);
    engine.script("c", Answer::Changed("tag c:1 names e now".into()));
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(removed(&engine), vec!["a", "b", "c", "d"]);
    assert_eq!(report.skipped, 3);
    assert_eq!(report.removed_images, 1);
    assert_eq!(report.outcome, Outcome::Exhausted);
    // Before, after d, the final one of the course, and the report's.
    assert_eq!(disk.measurements(), 4);
    assert_eq!(
        guard.calls().last(),
        Some(&G::End(Some("FreeDiskSpaceFailed")))
    );
}

#[tokio::test(start_paused = true)]
async fn the_delay_separates_image_removals_only() {
    let (engine, mut last_use) = four_images();
    engine.add_container(Container {
        id: "old".into(),
        name: "old".into(),
        image_id: "gone".into(),
        running: false,
        created: 0,
        finished: None,
    });
    let disk = Disk::new(&engine, 59);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        delay: Duration::from_secs(7),
        ..config()
    };
    let started = tokio::time::Instant::now();
    let report = pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    // container, then a, b, c, d: pauses between the four images only.
    assert_eq!(report.removed_containers, 1);
    assert_eq!(removed(&engine), vec!["a", "b", "c", "d"]);
    assert_eq!(started.elapsed(), Duration::from_secs(21));
}

#[tokio::test(start_paused = true)]
async fn nothing_eligible_cordons_nothing() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        keep: vec![regex::Regex::new(".").unwrap()],
        ..config()
    };
    let report = pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Exhausted);
    assert!(removed(&engine).is_empty());
    assert_eq!(
        guard.calls(),
        vec![G::End(Some("FreeDiskSpaceFailed"))],
        "no cordon, but the shortfall is posted"
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_and_a_skipped_cordon_remove_nothing() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 55);
    let token = CancellationToken::new();

    let guard = Recorder::new(PassStart::Proceed);
    let dry = Config {
        dry_run: true,
        ..config()
    };
    let report = pass(&dry, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::DryRun);
    assert_eq!(report.plan.map(|p| p.steps.len()), Some(4));
    assert!(guard.calls().is_empty());

    let guard = Recorder::new(PassStart::Skip);
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Skipped);
    assert_eq!(guard.calls(), vec![G::Begin]);
    assert!(removed(&engine).is_empty());
}

#[tokio::test(start_paused = true)]
async fn prune_strategy_runs_the_originals_three_prunes() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        strategy: crate::config::Strategy::Prune,
        ..config()
    };
    let report = pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(
        engine
            .calls()
            .into_iter()
            .filter(|c| *c != Call::Inventory)
            .collect::<Vec<_>>(),
        vec![
            Call::PruneContainers,
            Call::PruneImages { all: false },
            Call::PruneImages { all: true }
        ]
    );
    assert!(engine.inventory_now().images.is_empty());
}
