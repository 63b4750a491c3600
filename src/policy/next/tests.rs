//! Table tests of the stopping rules: a plan, a script of what happens, the actions expected.

use std::time::Duration;

use super::*;
use crate::policy::{Need, Plan};
use crate::usage::{FsUsage, TreeUsage};

fn image(id: &str, mib: u64) -> Step {
    Step::RemoveImage {
        engine: "default".into(),
        id: id.into(),
        tags: vec![format!("{id}:1")],
        size_bytes: mib << 20,
        last_used_ms: 0,
        aged: false,
    }
}

fn container(id: &str) -> Step {
    Step::RemoveContainer {
        engine: "default".into(),
        id: id.into(),
        name: id.into(),
        stopped: 0,
    }
}

fn plan(steps: Vec<Step>) -> Plan {
    Plan {
        strategy: "lru",
        pressure: true,
        steps,
        kept: Vec::new(),
        need: Need::default(),
        estimated_steps: None,
    }
}

/// How long a removal takes in these tables: Docker answering fast.
const QUICK: Duration = Duration::from_millis(20);

/// A filesystem `pct` percent full.
fn fs(pct: u64) -> Measurement {
    Measurement::Relative(vec![FsUsage::from_counts(
        "/d".into(),
        1,
        100,
        100 - pct,
        0,
        0,
    )])
}

fn tree(mib: u64) -> Measurement {
    Measurement::Absolute(TreeUsage {
        bytes: mib << 20,
        inodes: 1,
        unreadable: 0,
    })
}

/// Watermarks 80/60 and strategy lru, the values these tables were written for.
fn relative(delay_ms: u64) -> Config {
    Config {
        delay: Delay::Fixed(Duration::from_millis(delay_ms)),
        watermarks: Watermarks::Relative {
            high_pct: 80.0,
            low_pct: 60.0,
        },
        strategy: Strategy::Lru,
        ..Config::default()
    }
}

/// Feeds `script` to the course and collects the action after each input.
fn run(plan: &Plan, config: &Config, before: &Measurement, script: &[Input<'_>]) -> Vec<Action> {
    let mut course = Course::new(plan, config, before, &[default()]);
    script.iter().map(|input| course.next(*input)).collect()
}

/// The one engine of these tables: on the first filesystem, no floor.
fn default() -> EngineView {
    EngineView {
        name: "default".into(),
        filesystems: vec![0],
        floor: None,
    }
}

use Action::*;
use Input::{Measured, Paused, Ran, Skipped, Start};
use StepResult::{NotRemoved, PrunedDangling, Reclaimed, Removed};

#[test]
fn relative_mode_measures_after_each_removal_and_stops_below_low() {
    let p = plan(vec![container("c"), image("a", 10), image("b", 10)]);
    let (high, mid, low) = (fs(85), fs(70), fs(50));
    let got = run(
        &p,
        &relative(0),
        &high,
        &[
            Start,
            Ran(Removed, QUICK),
            Measured(&high),
            Ran(Removed, QUICK),
            Measured(&mid),
            Ran(Removed, QUICK),
            Measured(&low),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Measure,
            Run(1),
            Measure,
            Run(2),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
}

#[test]
fn early_stop_leaves_the_rest_of_the_plan() {
    let p = plan(vec![image("a", 10), image("b", 10), image("c", 10)]);
    let low = fs(10);
    let got = run(
        &p,
        &relative(0),
        &fs(90),
        &[Start, Ran(Removed, QUICK), Measured(&low)],
    );
    assert_eq!(got, vec![Run(0), Measure, Stop(Outcome::ReachedLow)]);
}

#[test]
fn an_adaptive_delay_pauses_only_after_slow_removals_and_as_long_as_they_took() {
    let p = plan(vec![
        image("a", 1),
        image("b", 1),
        image("c", 1),
        image("d", 1),
        image("e", 1),
    ]);
    let config = Config {
        delay: Delay::Adaptive,
        ..relative(0)
    };
    let high = fs(90);
    let slow = Duration::from_millis(400);
    let got = run(
        &p,
        &config,
        &high,
        &[
            Start,
            // Fast: straight on to the next removal.
            Ran(Removed, QUICK),
            Measured(&high),
            // Just under the threshold: still no pause.
            Ran(Removed, Delay::ADAPTIVE_QUICK - Duration::from_millis(1)),
            Measured(&high),
            // Slow: a pause as long as the removal took.
            Ran(Removed, slow),
            Measured(&high),
            Paused,
            // Very slow: the pause is capped.
            Ran(Removed, Duration::from_secs(60)),
            Measured(&high),
            Paused,
            // The last image: nothing follows it to pause for.
            Ran(Removed, slow),
            Measured(&high),
            Measured(&high),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Measure,
            Run(1),
            Measure,
            Run(2),
            Measure,
            Pause(slow),
            Run(3),
            Measure,
            Pause(Delay::ADAPTIVE_MAX),
            Run(4),
            Measure,
            Measure,
            Stop(Outcome::Exhausted)
        ]
    );
    // A fixed delay ignores how long the removal took.
    let fixed = run(
        &p,
        &relative(1000),
        &high,
        &[
            Start,
            Ran(Removed, Duration::from_secs(60)),
            Measured(&high),
        ],
    );
    assert_eq!(fixed[2], Pause(Duration::from_secs(1)));
}

#[test]
fn the_delay_separates_image_removals_only() {
    // container, image, image, container-less end: a pause only between the two images.
    let p = plan(vec![container("c"), image("a", 1), image("b", 1)]);
    let high = fs(90);
    let got = run(
        &p,
        &relative(1000),
        &high,
        &[
            Start,
            Ran(Removed, QUICK),
            Measured(&high),
            Ran(Removed, QUICK),
            Measured(&high),
            Paused,
            Ran(Removed, QUICK),
            Measured(&high),
            Measured(&high),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Measure,
            Run(1),
            Measure,
            Pause(Duration::from_secs(1)),
            Run(2),
            Measure,
            Measure,
            Stop(Outcome::Exhausted)
        ]
    );
}

#[test]
fn a_refused_removal_is_neither_measured_nor_followed_by_a_pause() {
    let p = plan(vec![image("a", 1), image("b", 1)]);
    let high = fs(90);
    let got = run(
        &p,
        &relative(1000),
        &high,
        &[
            Start,
            Ran(NotRemoved, QUICK),
            Ran(NotRemoved, QUICK),
            Measured(&high),
        ],
    );
    assert_eq!(got, vec![Run(0), Run(1), Measure, Stop(Outcome::Exhausted)]);
}

#[test]
fn an_empty_plan_measures_once_and_reports_the_shortfall() {
    let p = plan(vec![]);
    let (high, low) = (fs(90), fs(10));
    assert_eq!(
        run(&p, &relative(0), &high, &[Start, Measured(&high)]),
        vec![Measure, Stop(Outcome::Exhausted)]
    );
    assert_eq!(
        run(&p, &relative(0), &high, &[Start, Measured(&low)]),
        vec![Measure, Stop(Outcome::ReachedLow)]
    );
}

#[test]
fn absolute_mode_walks_only_when_the_estimate_says_enough() {
    let config = Config {
        watermarks: Watermarks::Absolute {
            high_bytes: 100 << 20,
            low_bytes: 80 << 20,
        },
        delay: Delay::Fixed(Duration::ZERO),
        ..Config::default()
    };
    // 100 MiB used, low at 80: after a, 90 by the estimate (no walk); after b, 75 (walk). The walk
    // finds 85 (shared layers): go on with the walked figure; c brings the estimate to 75: walk.
    let p = plan(vec![image("a", 10), image("b", 15), image("c", 10)]);
    let (walked_85, walked_70) = (tree(85), tree(70));
    let got = run(
        &p,
        &config,
        &tree(100),
        &[
            Start,
            Ran(Removed, QUICK),
            Ran(Removed, QUICK),
            Measured(&walked_85),
            Ran(Removed, QUICK),
            Measured(&walked_70),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Run(1),
            Measure,
            Run(2),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
}

#[test]
fn prune_strategy_never_stops_early_and_skips_prune_all_when_dangling_sufficed() {
    let config = Config {
        strategy: Strategy::Prune,
        ..Config::default()
    };
    let engine = || "default".to_string();
    let p = plan(vec![
        Step::PruneContainers { engine: engine() },
        Step::PruneDanglingImages { engine: engine() },
        Step::PruneAllImages { engine: engine() },
    ]);
    let (high, low) = (fs(90), fs(10));
    // Dangling images were found and usage fell below high: prune -a is left out.
    assert_eq!(
        run(
            &p,
            &config,
            &high,
            &[
                Start,
                Ran(Removed, QUICK),
                Ran(PrunedDangling(2), QUICK),
                Measured(&low),
                Skipped,
                Measured(&low)
            ]
        ),
        vec![
            Run(0),
            Run(1),
            Measure,
            Skip(2, Why::DanglingSufficed),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
    // Still above high: prune -a runs.
    assert_eq!(
        run(
            &p,
            &config,
            &high,
            &[
                Start,
                Ran(Removed, QUICK),
                Ran(PrunedDangling(2), QUICK),
                Measured(&high),
                Ran(Removed, QUICK),
                Measured(&high)
            ]
        ),
        vec![
            Run(0),
            Run(1),
            Measure,
            Run(2),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
    // No dangling image: prune -a without measuring first; the original never reports a shortfall.
    assert_eq!(
        run(
            &p,
            &config,
            &high,
            &[
                Start,
                Ran(Removed, QUICK),
                Ran(PrunedDangling(0), QUICK),
                Ran(Removed, QUICK),
                Measured(&high)
            ]
        ),
        vec![Run(0), Run(1), Run(2), Measure, Stop(Outcome::ReachedLow)]
    );
}

#[test]
fn an_input_out_of_order_ends_the_course() {
    let p = plan(vec![image("a", 1)]);
    let high = fs(90);
    assert_eq!(
        run(
            &p,
            &relative(0),
            &high,
            &[Start, Measured(&high), Ran(Removed, QUICK)]
        ),
        vec![
            Run(0),
            Stop(Outcome::Interrupted),
            Stop(Outcome::Interrupted)
        ]
    );
}

#[test]
fn steps_begun_counts_what_the_pass_reached() {
    let p = plan(vec![image("a", 1), image("b", 1)]);
    let (high, low) = (fs(90), fs(10));
    let mut course = Course::new(&p, &relative(0), &high, &[default()]);
    assert_eq!(course.steps_begun(), 0);
    course.next(Start);
    course.next(Ran(Removed, QUICK));
    course.next(Measured(&low));
    assert_eq!(course.steps_begun(), 1);
}

#[test]
fn an_engine_at_its_floor_keeps_its_remaining_images() {
    // Footprint 30 MiB, floor 15: the first removal frees 10 (measured), the second would take
    // it to 10: it and every later image of that engine are left; the other engine goes on.
    let p = plan(vec![
        image("a", 10),
        image("b", 10),
        Step::RemoveImage {
            engine: "other".into(),
            id: "x".into(),
            tags: vec!["x:1".into()],
            size_bytes: 10 << 20,
            last_used_ms: 0,
            aged: false,
        },
        image("c", 1),
    ]);
    let engines = [
        EngineView {
            name: "default".into(),
            filesystems: vec![0],
            floor: Some(crate::policy::FloorState {
                footprint_bytes: 30 << 20,
                floor_bytes: 15 << 20,
            }),
        },
        EngineView {
            name: "other".into(),
            filesystems: vec![0],
            floor: None,
        },
    ];
    // 100-byte filesystem is too small for MiB sizes: measure in MiB-sized blocks.
    let fs_mib = |used: u64| {
        Measurement::Relative(vec![FsUsage::from_counts(
            "/d".into(),
            1 << 20,
            100,
            100 - used,
            0,
            0,
        )])
    };
    let (m90, m80, m70) = (fs_mib(90), fs_mib(80), fs_mib(70));
    let mut course = Course::new(&p, &relative(0), &m90, &engines);
    let got = vec![
        course.next(Start),
        course.next(Ran(Removed, QUICK)),
        course.next(Measured(&m80)),
        course.next(Skipped),
        course.next(Ran(Removed, QUICK)),
        course.next(Measured(&m70)),
        course.next(Skipped),
        course.next(Measured(&m70)),
    ];
    assert_eq!(
        got,
        vec![
            Run(0),
            Measure,
            Skip(1, Why::Floor),
            Run(2),
            Measure,
            Skip(3, Why::Floor),
            Measure,
            Stop(Outcome::FloorsReached)
        ]
    );
}

#[test]
fn an_engine_whose_filesystems_are_below_low_is_left_out() {
    let p = plan(vec![
        Step::RemoveImage {
            engine: "cold".into(),
            id: "x".into(),
            tags: vec!["x:1".into()],
            size_bytes: 1,
            last_used_ms: 0,
            aged: false,
        },
        image("a", 1),
    ]);
    let engines = [
        EngineView {
            name: "cold".into(),
            filesystems: vec![1],
            floor: None,
        },
        default(),
    ];
    let two = |hot: u64, cold: u64| {
        Measurement::Relative(vec![
            FsUsage::from_counts("/hot".into(), 1, 100, 100 - hot, 0, 0),
            FsUsage::from_counts("/cold".into(), 1, 100, 100 - cold, 0, 0),
        ])
    };
    let (before, after) = (two(90, 10), two(50, 10));
    assert_eq!(
        run_with(
            &p,
            &engines,
            &before,
            &[Start, Skipped, Ran(Removed, QUICK), Measured(&after)]
        ),
        vec![
            Skip(0, Why::NotNeeded),
            Run(1),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
}

fn run_with(
    plan: &Plan,
    engines: &[EngineView],
    before: &Measurement,
    script: &[Input<'_>],
) -> Vec<Action> {
    let mut course = Course::new(plan, &relative(0), before, engines);
    script.iter().map(|input| course.next(*input)).collect()
}

fn aged(id: &str, mib: u64) -> Step {
    match image(id, mib) {
        Step::RemoveImage {
            engine,
            id,
            tags,
            size_bytes,
            last_used_ms,
            ..
        } => Step::RemoveImage {
            engine,
            id,
            tags,
            size_bytes,
            last_used_ms,
            aged: true,
        },
        other => other,
    }
}

fn cache_prune(keep_mib: u64) -> Step {
    Step::PruneBuildCache {
        engine: "default".into(),
        keep_bytes: keep_mib << 20,
        size_bytes: 10 << 20,
        records: 3,
        unused_for_secs: 3600,
        all: false,
    }
}

#[test]
fn below_low_the_rest_of_the_aged_removals_still_run_unmeasured() {
    // The first (aged) removal reaches low: b is not needed and left out, c (aged) still goes,
    // and nothing is measured between until the end.
    let p = plan(vec![aged("a", 10), image("b", 10), aged("c", 10)]);
    let low = fs(10);
    let got = run(
        &p,
        &relative(0),
        &fs(90),
        &[
            Start,
            Ran(Removed, QUICK),
            Measured(&low),
            Skipped,
            Ran(Removed, QUICK),
            Measured(&low),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Measure,
            Skip(1, Why::NotNeeded),
            Run(2),
            Measure,
            Stop(Outcome::ReachedLow)
        ]
    );
}

#[test]
fn a_plan_below_high_runs_whole_without_measuring_between() {
    let mut p = plan(vec![aged("a", 10), aged("b", 10)]);
    p.pressure = false;
    let below = fs(40);
    let got = run(
        &p,
        &relative(1000),
        &below,
        &[
            Start,
            Ran(Removed, QUICK),
            Paused,
            Ran(NotRemoved, QUICK),
            Measured(&below),
        ],
    );
    assert_eq!(
        got,
        vec![
            Run(0),
            Pause(Duration::from_secs(1)),
            Run(1),
            Measure,
            Stop(Outcome::Aged)
        ]
    );
}

#[test]
fn a_build_cache_prune_is_measured_only_when_it_reclaimed_something() {
    let p = plan(vec![cache_prune(50), cache_prune(0), image("a", 10)]);
    let (high, low) = (fs(90), fs(10));
    let got = run(
        &p,
        &relative(0),
        &high,
        &[
            Start,
            Ran(Reclaimed(0), QUICK),
            Ran(Reclaimed(5 << 20), QUICK),
            Measured(&low),
        ],
    );
    assert_eq!(
        got,
        vec![Run(0), Run(1), Measure, Stop(Outcome::ReachedLow)],
        "the second prune reached low: the image stays"
    );
}

/// A filesystem of 100 MiB with `free_mib` free.
fn mib_free(free_mib: u64) -> Measurement {
    Measurement::Relative(vec![FsUsage::from_counts(
        "/d".into(),
        1 << 20,
        100,
        free_mib,
        0,
        0,
    )])
}

#[test]
fn a_removal_that_frees_much_less_than_its_size_asks_to_take_stock_again() {
    let p = plan(vec![image("a", 10), image("b", 10), image("c", 10)]);
    let cfg = relative(0);
    // 85 % used; a frees its 10 MiB, b frees nothing (its layers are held elsewhere).
    let (start, after_a, after_b) = (mib_free(15), mib_free(25), mib_free(25));
    let script = [
        Start,
        Ran(Removed, QUICK),
        Measured(&after_a),
        Ran(Removed, QUICK),
        Measured(&after_b),
    ];
    let mut course = Course::new(&p, &cfg, &start, &[default()]).restocking(true);
    let got: Vec<Action> = script.iter().map(|i| course.next(*i)).collect();
    assert_eq!(got, vec![Run(0), Measure, Run(1), Measure, Restock]);
    // Not allowed (the pass has taken stock again often enough): it goes on with the plan.
    let mut course = Course::new(&p, &cfg, &start, &[default()]);
    let got: Vec<Action> = script.iter().map(|i| course.next(*i)).collect();
    assert_eq!(got, vec![Run(0), Measure, Run(1), Measure, Run(2)]);
    // Below low after the short removal: the pass is done, nothing to take stock for.
    let mut course = Course::new(&p, &cfg, &start, &[default()]).restocking(true);
    let done = mib_free(45);
    let got: Vec<Action> = [Start, Ran(Removed, QUICK), Measured(&done)]
        .iter()
        .map(|i| course.next(*i))
        .collect();
    assert_eq!(got, vec![Run(0), Measure, Stop(Outcome::ReachedLow)]);
    // A shortfall of less than SHORTFALL_MIN_BYTES is the filesystem's bookkeeping.
    let half_mib = |id: &str| match image(id, 1) {
        Step::RemoveImage {
            engine,
            id,
            tags,
            last_used_ms,
            aged,
            ..
        } => Step::RemoveImage {
            engine,
            id,
            tags,
            size_bytes: 1 << 19,
            last_used_ms,
            aged,
        },
        other => other,
    };
    let small = plan(vec![half_mib("a"), half_mib("b")]);
    let mut course = Course::new(&small, &cfg, &start, &[default()]).restocking(true);
    let got: Vec<Action> = [Start, Ran(Removed, QUICK), Measured(&start)]
        .iter()
        .map(|i| course.next(*i))
        .collect();
    assert_eq!(got, vec![Run(0), Measure, Run(1)]);
}
