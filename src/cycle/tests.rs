//! The pass against the recording [`FakeEngine`], a simulated disk and a recording guard, in
//! paused tokio time: what a user of the node would see (what goes, what stays, that the node is
//! released), with no Docker, no root and no sleeping.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;
use crate::config::{Delay, EngineConfig, Floor};
use crate::docker::fake::{Answer, Call, FakeEngine};
use crate::docker::{Container, ContainerState, Image};
use crate::lastuse::LastUse;
use crate::policy::Step;
use crate::usage::FsUsage;

const MIB: u64 = 1 << 20;
const NOW_MS: i64 = 1_000_000_000;

/// A simulated node: one or more filesystems of 100 MiB each, engines on them (each at a path),
/// and bytes on each that belong to no engine.
struct Disk<'a> {
    engines: Vec<(&'a FakeEngine, &'static str, usize)>,
    other_bytes: Vec<u64>,
    measured: AtomicUsize,
}

const TOTAL: u64 = 100 * MIB;

impl<'a> Disk<'a> {
    /// One filesystem holding `engine` at `/var/lib/docker` and `other_mib` besides.
    fn new(engine: &'a FakeEngine, other_mib: u64) -> Self {
        Disk::shared(&[(engine, "/var/lib/docker")], other_mib)
    }

    /// One filesystem holding every engine (each at its path) and `other_mib` besides.
    fn shared(engines: &[(&'a FakeEngine, &'static str)], other_mib: u64) -> Self {
        Disk {
            engines: engines.iter().map(|(e, p)| (*e, *p, 0)).collect(),
            other_bytes: vec![other_mib * MIB],
            measured: AtomicUsize::new(0),
        }
    }

    fn measurements(&self) -> usize {
        self.measured.load(Ordering::SeqCst)
    }

    /// What the engine holds on disk: its images and its build cache.
    fn image_bytes(engine: &FakeEngine) -> u64 {
        engine.disk_bytes()
    }

    fn usage(&self) -> Vec<FsUsage> {
        self.other_bytes
            .iter()
            .enumerate()
            .map(|(i, other)| {
                let engines: u64 = self
                    .engines
                    .iter()
                    .filter(|(_, _, fs)| *fs == i)
                    .map(|(e, _, _)| Self::image_bytes(e))
                    .sum();
                let used = (engines + other).min(TOTAL);
                let mut fs =
                    FsUsage::from_counts(format!("/fs{i}").into(), 1, TOTAL, TOTAL - used, 0, 0);
                fs.dev = u64::try_from(i).unwrap() + 1;
                fs
            })
            .collect()
    }
}

impl Meter for Disk<'_> {
    async fn measure(&self) -> Result<Measurement, usage::Error> {
        self.measured.fetch_add(1, Ordering::SeqCst);
        Ok(Measurement::Relative(self.usage()))
    }

    async fn filesystems(&self) -> Result<Vec<FsUsage>, usage::Error> {
        Ok(self.usage())
    }

    async fn footprint(
        &self,
        paths: &[std::path::PathBuf],
        _skip: &[std::path::PathBuf],
    ) -> Result<u64, usage::Error> {
        Ok(self
            .engines
            .iter()
            .filter(|(_, p, _)| paths.iter().any(|q| q.as_os_str() == *p))
            .map(|(e, _, _)| Self::image_bytes(e))
            .sum())
    }

    fn device(&self, path: &std::path::Path) -> Option<u64> {
        let (_, _, fs) = self
            .engines
            .iter()
            .find(|(_, p, _)| path.as_os_str() == *p)?;
        u64::try_from(*fs).ok().map(|d| d + 1)
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
    fn begin_pass(&mut self, _critical: bool) -> impl Future<Output = PassStart> + Send {
        self.record(G::Begin);
        std::future::ready(self.answer.clone())
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

fn image(id: &str, mib: u64) -> Image {
    Image {
        id: id.into(),
        parent_id: None,
        tags: vec![format!("{id}:1")],
        created: 0,
        size_bytes: mib * MIB,
        ..Image::default()
    }
}

/// An engine holding `ids` (10 MiB each), with last uses `ago_s` seconds before now.
fn engine_with(uses: &[(&str, i64)]) -> (FakeEngine, LastUse) {
    let mut last_use = LastUse::new();
    for (id, ago_s) in uses {
        last_use.touch(id, NOW_MS - ago_s * 1000);
    }
    let images = uses.iter().map(|(id, _)| image(id, 10)).collect();
    (FakeEngine::new(images, Vec::new()), last_use)
}

/// Images `a`, `b`, `c`, `d` of 10 MiB each, last used in that order three hours ago and on.
fn four_images() -> (FakeEngine, LastUse) {
    engine_with(&[("a", 10_000), ("b", 9_999), ("c", 9_998), ("d", 9_997)])
}

fn engine_config(name: &str, path: &str, floor: Floor) -> EngineConfig {
    EngineConfig {
        name: name.into(),
        docker_host: None,
        cri_endpoint: None,
        paths: vec![path.into()],
        floor,
    }
}

/// High 85 %, low 65 % (both set: no headroom rule), no delay unless set, strategy lru, min
/// age 1 h.
fn config() -> Config {
    Config {
        watermarks: crate::config::Watermarks::Relative {
            high_pct: 85.0,
            low_pct: 65.0,
        },
        low_auto: false,
        high_auto: false,
        delay: Delay::Fixed(Duration::ZERO),
        strategy: crate::config::Strategy::Lru,
        min_age: Duration::from_secs(3600),
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
    let default = engine_config("default", "/var/lib/docker", Floor::NONE);
    run_pass(
        config,
        vec![Member {
            config: &default,
            engine,
            last_use,
        }],
        disk,
        guard,
        shutdown,
        &mut Quiet::default(),
    )
    .await
}

async fn run_pass(
    config: &Config,
    members: Vec<Member<'_, FakeEngine>>,
    disk: &Disk<'_>,
    guard: &Recorder,
    shutdown: &CancellationToken,
    quiet: &mut Quiet,
) -> Result<Report, Error> {
    let mut guard = guard;
    Pass {
        config,
        members,
        meter: disk,
        guard: &mut guard,
        progress: &(),
        shutdown,
        now_ms: NOW_MS,
        quiet,
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
async fn below_high_only_lists_and_touches_no_node() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::BelowHigh);
    assert_eq!(engine.calls(), vec![Call::Inventory]);
    assert!(removed(&engine).is_empty());
    assert!(guard.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_first_pass_below_high_records_every_image_and_starts_coverage() {
    // A fresh table, as on a first start: a pass below high must still learn the images, at
    // their build time, so that a later pass sorts an image never used by it, never as "now".
    let (engine, _) = four_images();
    let mut last_use = LastUse::new();
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::BelowHigh);
    assert_eq!(last_use.covering_since_ms(), Some(NOW_MS));
    for image in engine.inventory_now().images {
        let entry = last_use
            .get(&image.id)
            .unwrap_or_else(|| panic!("{} not recorded", image.id));
        assert_eq!(entry.last_used_ms, image.created * 1000, "{}", image.id);
        assert!(entry.last_used_ms < NOW_MS);
    }
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
            // Inventory and build cache take 2 s each, the first removal 2 s more: stop in
            // the middle of it.
            tokio::time::sleep(Duration::from_secs(5)).await;
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
        state: ContainerState::Exited,
        created: 0,
        finished: None,
        managed: false,
    });
    let disk = Disk::new(&engine, 59);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        delay: Delay::Fixed(Duration::from_secs(7)),
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
async fn an_adaptive_delay_follows_how_long_docker_takes_to_remove() {
    // The pass's time with `delay`, when every Docker call takes `latency`.
    async fn time(delay: Delay, latency: Duration) -> Duration {
        let (engine, mut last_use) = four_images();
        let engine = engine.with_latency(latency);
        let disk = Disk::new(&engine, 59);
        let guard = Recorder::new(PassStart::Proceed);
        let token = CancellationToken::new();
        let config = Config { delay, ..config() };
        let started = tokio::time::Instant::now();
        pass(&config, &engine, &disk, &mut last_use, &guard, &token)
            .await
            .unwrap();
        assert_eq!(removed(&engine), vec!["a", "b", "c", "d"]);
        started.elapsed()
    }
    let none = Delay::Fixed(Duration::ZERO);
    // Docker answers fast: no pause at all.
    let fast = Duration::from_millis(100);
    assert_eq!(time(Delay::Adaptive, fast).await, time(none, fast).await);
    // Docker is slow: after each of the first three removals, a pause as long as it took.
    let slow = Duration::from_millis(400);
    assert_eq!(
        time(Delay::Adaptive, slow).await,
        time(none, slow).await + 3 * slow
    );
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

/// The engine and image of each removal step of a plan, in order.
fn plan_order(report: &Report) -> Vec<(String, String)> {
    report
        .plan
        .iter()
        .flat_map(|p| &p.steps)
        .filter_map(|s| match s {
            Step::RemoveImage { engine, id, .. } => Some((engine.clone(), id.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn one_order_across_two_engines_on_one_disk() {
    // Uses interleaved a1, b1, a2, b2: removals follow that order, whichever engine.
    let (a, mut lu_a) = engine_with(&[("a1", 40_000), ("a2", 20_000)]);
    let (b, mut lu_b) = engine_with(&[("b1", 30_000), ("b2", 10_000)]);
    let disk = Disk::shared(&[(&a, "/a"), (&b, "/b")], 54);
    let (ca, cb) = (
        engine_config("a", "/a", Floor::NONE),
        engine_config("b", "/b", Floor::NONE),
    );
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = run_pass(
        &config(),
        vec![
            Member {
                config: &ca,
                engine: &a,
                last_use: &mut lu_a,
            },
            Member {
                config: &cb,
                engine: &b,
                last_use: &mut lu_b,
            },
        ],
        &disk,
        &guard,
        &token,
        &mut Quiet::default(),
    )
    .await
    .unwrap();
    let order: Vec<String> = plan_order(&report)
        .into_iter()
        .map(|(e, id)| format!("{e}/{id}"))
        .collect();
    assert_eq!(order, vec!["a/a1", "b/b1", "a/a2", "b/b2"]);
    // 94 % to below 65 %: three removals; b2, the most recent, stays.
    assert_eq!(removed(&a), vec!["a1", "a2"]);
    assert_eq!(removed(&b), vec!["b1"]);
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(report.engines.0["a"].images, 2);
    assert_eq!(report.engines.0["b"].images, 1);
    assert!(
        report
            .summary()
            .contains("a 0 containers, 2 images; b 0 containers, 1 image")
    );
}

#[tokio::test(start_paused = true)]
async fn a_floor_keeps_the_newest_images_against_pressure_from_outside() {
    // 4 images (40 MiB) and 56 MiB of somebody else's files: 96 % (critical moved to 99). A
    // floor of 30 MiB lets only the oldest go; usage stays at 86 %, above high, and the pass
    // says why.
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 56);
    let cfg = engine_config("default", "/var/lib/docker", Floor::Bytes(30 * MIB));
    let config = Config {
        critical_pct: 99.0,
        ..config()
    };
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let mut quiet = Quiet::default();
    fn members<'a>(
        cfg: &'a EngineConfig,
        engine: &'a FakeEngine,
        lu: &'a mut LastUse,
    ) -> Vec<Member<'a, FakeEngine>> {
        vec![Member {
            config: cfg,
            engine,
            last_use: lu,
        }]
    }
    let report = run_pass(
        &config,
        members(&cfg, &engine, &mut last_use),
        &disk,
        &guard,
        &token,
        &mut quiet,
    )
    .await
    .unwrap();
    assert_eq!(removed(&engine), vec!["a"]);
    assert_eq!(report.outcome, Outcome::FloorsReached);
    let kept: Vec<&str> = report
        .plan
        .iter()
        .flat_map(|p| &p.kept)
        .filter(|k| matches!(k.reason, policy::Reason::Floor { .. }))
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(kept, vec!["b", "c", "d"], "the most recently used stay");
    assert_eq!(
        guard.calls().last(),
        Some(&G::End(Some("DiskPressureElsewhere")))
    );
    // The next tick: nothing left above the floor, no cordon, and no second Event within the
    // hour.
    let report = run_pass(
        &config,
        members(&cfg, &engine, &mut last_use),
        &disk,
        &guard,
        &token,
        &mut quiet,
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::FloorsReached);
    assert_eq!(guard.calls().last(), Some(&G::End(None)));
    assert_eq!(
        guard.calls().iter().filter(|g| **g == G::Begin).count(),
        1,
        "no cordon for a pass that removes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn the_critical_watermark_overrides_the_floor() {
    // 40 MiB of images and 57 MiB else: 97 %, above critical 95: the floor is ignored, and the
    // pass goes down to 57 %.
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 57);
    let cfg = engine_config("default", "/var/lib/docker", Floor::Bytes(30 * MIB));
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = run_pass(
        &config(),
        vec![Member {
            config: &cfg,
            engine: &engine,
            last_use: &mut last_use,
        }],
        &disk,
        &guard,
        &token,
        &mut Quiet::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(removed(&engine), vec!["a", "b", "c", "d"]);
}

#[tokio::test(start_paused = true)]
async fn the_critical_watermark_lowers_the_min_age() {
    // Every image used within the hour; at 97 % the min age falls to 2 minutes.
    let (engine, mut last_use) = engine_with(&[("old", 600), ("fresh", 60)]);
    let disk = Disk::new(&engine, 77);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(removed(&engine), vec!["old"], "fresh is younger than 120 s");
    assert_eq!(report.outcome, Outcome::Exhausted);
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_is_down_is_left_out_and_the_other_is_cleaned() {
    let (a, mut lu_a) = engine_with(&[("a1", 40_000), ("a2", 20_000)]);
    let (b, mut lu_b) = engine_with(&[("b1", 30_000), ("b2", 10_000)]);
    b.set_down(true);
    let disk = Disk::shared(&[(&a, "/a"), (&b, "/b")], 50);
    let (ca, cb) = (
        engine_config("a", "/a", Floor::NONE),
        engine_config("b", "/b", Floor::NONE),
    );
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = run_pass(
        &config(),
        vec![
            Member {
                config: &ca,
                engine: &a,
                last_use: &mut lu_a,
            },
            Member {
                config: &cb,
                engine: &b,
                last_use: &mut lu_b,
            },
        ],
        &disk,
        &guard,
        &token,
        &mut Quiet::default(),
    )
    .await
    .unwrap();
    assert_eq!(removed(&a), vec!["a1", "a2"]);
    assert!(removed(&b).is_empty());
    assert_eq!(report.outcome, Outcome::Exhausted);
}

#[tokio::test(start_paused = true)]
async fn an_engine_on_a_filesystem_below_low_is_not_cleaned() {
    // a on a full filesystem, b on one that is nearly empty: only a's images go, although b's
    // are older.
    let (a, mut lu_a) = engine_with(&[("a1", 20_000), ("a2", 10_000)]);
    let (b, mut lu_b) = engine_with(&[("b1", 90_000)]);
    let disk = Disk {
        engines: vec![(&a, "/a", 0), (&b, "/b", 1)],
        other_bytes: vec![70 * MIB, 0],
        measured: AtomicUsize::new(0),
    };
    let (ca, cb) = (
        engine_config("a", "/a", Floor::NONE),
        engine_config("b", "/b", Floor::NONE),
    );
    let config = Config {
        paths: vec!["/a".into(), "/b".into()],
        ..config()
    };
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = run_pass(
        &config,
        vec![
            Member {
                config: &ca,
                engine: &a,
                last_use: &mut lu_a,
            },
            Member {
                config: &cb,
                engine: &b,
                last_use: &mut lu_b,
            },
        ],
        &disk,
        &guard,
        &token,
        &mut Quiet::default(),
    )
    .await
    .unwrap();
    assert!(removed(&b).is_empty(), "b's filesystem needs nothing");
    assert_eq!(removed(&a), vec!["a1", "a2"]);
    assert_eq!(report.outcome, Outcome::Exhausted);
}

/// A guard that answers from a script (then `Proceed`), recording each begin with its
/// `critical` flag and when it came.
struct Slots {
    answers: Mutex<std::collections::VecDeque<PassStart>>,
    calls: Mutex<Vec<(G, bool, tokio::time::Instant)>>,
}

impl Slots {
    fn new(answers: impl IntoIterator<Item = PassStart>) -> Self {
        Slots {
            answers: Mutex::new(answers.into_iter().collect()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Always every slot held.
    fn never() -> Self {
        Slots::new(std::iter::repeat_n(
            PassStart::NoSlot("2 of 2 held by n2, n3".into()),
            100_000,
        ))
    }

    fn calls(&self) -> Vec<G> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }

    fn begins(&self) -> Vec<(bool, tokio::time::Instant)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == G::Begin)
            .map(|c| (c.1, c.2))
            .collect()
    }

    fn record(&self, g: G, critical: bool) {
        self.calls
            .lock()
            .unwrap()
            .push((g, critical, tokio::time::Instant::now()));
    }
}

impl Guard for &Slots {
    fn begin_pass(&mut self, critical: bool) -> impl Future<Output = PassStart> + Send {
        self.record(G::Begin, critical);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(PassStart::Proceed);
        std::future::ready(answer)
    }
    fn check_deadline(&mut self) -> impl Future<Output = ()> + Send {
        self.record(G::Deadline, false);
        std::future::ready(())
    }
    fn end_pass(&mut self, event: Option<NodeEvent>) -> impl Future<Output = ()> + Send {
        self.record(G::End(event.map(|e| e.reason)), false);
        std::future::ready(())
    }
}

/// The `STATUS=` lines a pass showed.
#[derive(Default)]
struct Shown(Mutex<Vec<String>>);

impl Progress for Shown {
    fn update(&self, status: &str) {
        self.0.lock().unwrap().push(status.to_string());
    }
}

/// A pass of `engine` on `disk` with the scripted `guard`, showing progress in `shown`.
async fn slot_pass(
    config: &Config,
    engine: &FakeEngine,
    disk: &Disk<'_>,
    last_use: &mut LastUse,
    guard: &Slots,
    shown: &Shown,
    shutdown: &CancellationToken,
) -> Report {
    let default = engine_config("default", "/var/lib/docker", Floor::NONE);
    let mut guard = guard;
    Pass {
        config,
        members: vec![Member {
            config: &default,
            engine,
            last_use,
        }],
        meter: disk,
        guard: &mut guard,
        progress: shown,
        shutdown,
        now_ms: NOW_MS,
        quiet: &mut Quiet::default(),
    }
    .run()
    .await
    .unwrap()
}

/// Slots of 3 s: a try every 0.5 to 1.5 s.
fn fleet_config() -> Config {
    Config {
        fleet_max_cordoned: 2,
        fleet_lease: Duration::from_secs(3),
        interval: Duration::from_secs(60),
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pass_waits_for_a_slot_and_removes_nothing_meanwhile() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let held = PassStart::NoSlot("2 of 2 held by n2, n3".into());
    let guard = Slots::new([held.clone(), held]);
    let shown = Shown::default();
    let token = CancellationToken::new();
    let report = slot_pass(
        &fleet_config(),
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &shown,
        &token,
    )
    .await;
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(removed(&engine), vec!["a", "b", "c"]);
    let calls = guard.calls();
    assert_eq!(&calls[..4], &[G::Begin, G::Begin, G::Begin, G::Deadline]);
    assert_eq!(calls.last(), Some(&G::End(Some("ImagesRemoved"))));
    let begins = guard.begins();
    for pair in begins.windows(2) {
        let pause = pair[1].1 - pair[0].1;
        assert!(
            pause >= Duration::from_millis(500) && pause <= Duration::from_millis(1500),
            "a jittered pause around a third of the lease: {pause:?}"
        );
    }
    assert!(
        shown
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|s| s == "waiting for a cleaning slot (2 of 2 held by n2, n3)"),
        "{:?}",
        shown.0.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn no_slot_within_the_interval_ends_the_pass_with_nothing_removed() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let guard = Slots::never();
    let shown = Shown::default();
    let token = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let config = fleet_config();
    let report = slot_pass(
        &config,
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &shown,
        &token,
    )
    .await;
    assert_eq!(report.outcome, Outcome::NoSlot);
    assert!(
        report
            .outcome_text()
            .contains("trying again at the next tick"),
        "{}",
        report.outcome_text()
    );
    assert!(removed(&engine).is_empty());
    assert_eq!(report.removed_images, 0);
    let waited = started.elapsed();
    assert!(
        waited >= config.interval && waited < config.interval + Duration::from_secs(2),
        "gives up at the interval: {waited:?}"
    );
    let calls = guard.calls();
    assert!(
        calls.iter().filter(|c| **c == G::Begin).count() >= 40,
        "{calls:?}"
    );
    assert!(!calls.contains(&G::Deadline));
    assert_eq!(calls.last(), Some(&G::End(None)), "the wait is ended");
}

#[tokio::test(start_paused = true)]
async fn usage_turning_critical_while_waiting_is_told_to_the_guard() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let held = PassStart::NoSlot("1 of 1 held by n2".into());
    let guard = Slots::new([held.clone(), held.clone(), held]);
    let shown = Shown::default();
    let token = CancellationToken::new();
    let config = fleet_config();
    // 90 % now; a pull during the wait brings it to 96 %, above critical (95).
    let pull = async {
        tokio::time::sleep(Duration::from_millis(1600)).await;
        engine.add_image(image("pulled", 6));
    };
    let (report, ()) = tokio::join!(
        slot_pass(
            &config,
            &engine,
            &disk,
            &mut last_use,
            &guard,
            &shown,
            &token
        ),
        pull
    );
    let critical: Vec<bool> = guard.begins().iter().map(|b| b.0).collect();
    assert_eq!(critical.first(), Some(&false));
    assert_eq!(
        critical.last(),
        Some(&true),
        "measured again at each try: {critical:?}"
    );
    assert_ne!(report.outcome, Outcome::NoSlot);
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_waiting_for_a_slot_removes_nothing() {
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let guard = Slots::never();
    let shown = Shown::default();
    let token = CancellationToken::new();
    let stop = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        token.cancel();
    };
    let started = tokio::time::Instant::now();
    let config = fleet_config();
    let (report, ()) = tokio::join!(
        slot_pass(
            &config,
            &engine,
            &disk,
            &mut last_use,
            &guard,
            &shown,
            &token
        ),
        stop
    );
    assert_eq!(report.outcome, Outcome::Interrupted);
    assert_eq!(started.elapsed(), Duration::from_secs(5), "at once");
    assert!(removed(&engine).is_empty());
    assert_eq!(guard.calls().last(), Some(&G::End(None)));
}

mod reclaim;

/// Strategy `prune` spares the newest step of a build in progress, as a plan does, and prunes
/// everything else it would.
#[tokio::test(start_paused = true)]
async fn prune_strategy_spares_a_build_in_progress() {
    let now_secs = NOW_MS / 1000;
    let step = Image {
        tags: Vec::new(),
        parent_id: Some("base".into()),
        created: now_secs - 5,
        ..image("step", 10)
    };
    // An import made a minute ago (within the commit window it could be a step whose parent
    // Docker has not named yet, and would stay too).
    let dangling = Image {
        tags: Vec::new(),
        created: now_secs - 60,
        ..image("dangling", 10)
    };
    let engine = FakeEngine::new(vec![image("base", 10), step, dangling], Vec::new());
    let mut last_use = LastUse::new();
    let disk = Disk::new(&engine, 99);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        strategy: crate::config::Strategy::Prune,
        ..config()
    };
    pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    let left: Vec<String> = engine
        .inventory_now()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, vec!["step".to_string()]);
}
