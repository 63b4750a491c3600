//! The pass with the build cache and removals for age, against the fake engine and the
//! simulated disk: what goes and in which order, when the pass stops, and when it cordons.

use super::*;
use crate::docker::CacheRecord;

/// `n` reclaimable build-cache records of 10 MiB, last used `hours_ago` (oldest first).
fn records(n: usize, hours_ago: i64) -> Vec<CacheRecord> {
    (0..n)
        .map(|i| CacheRecord {
            id: format!("r{i}"),
            kind: "regular".into(),
            in_use: false,
            shared: false,
            size_bytes: 10 * MIB,
            last_used: Some(NOW_MS / 1000 - hours_ago * 3600 + i64::try_from(i).unwrap()),
        })
        .collect()
}

/// Every call but the inventory and the reading of the build cache, in order.
fn actions(engine: &FakeEngine) -> Vec<String> {
    engine
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::RemoveImage(id) => Some(format!("image {id}")),
            Call::PruneBuildCache { keep_bytes, .. } => {
                Some(format!("cache keep {}", keep_bytes / MIB))
            }
            Call::RemoveContainer(id) => Some(format!("container {id}")),
            Call::Inventory | Call::BuildCache | Call::Resolve(_) | Call::Events => None,
            other => Some(format!("{other:?}")),
        })
        .collect()
}

/// Two tagged images (a older than b) and a dangling one, 10 MiB each.
fn engine_with_cache(cache: Vec<CacheRecord>) -> (FakeEngine, LastUse) {
    let (engine, last_use) = engine_with(&[("a", 90_000), ("b", 80_000), ("x", 10_000)]);
    let mut images = engine.inventory_now().images;
    images[2].tags.clear();
    let engine = FakeEngine::new(images, Vec::new()).with_build_cache(cache, NOW_MS / 1000);
    (engine, last_use)
}

#[tokio::test(start_paused = true)]
async fn the_build_cache_goes_after_dangling_images_and_before_tagged_ones_and_stops_at_low() {
    // 30 MiB of images and 40 MiB of cache + 20 MiB else: 90 %. The dangling image and 20
    // MiB of cache reach 60 % (< 65): the tagged images stay, and so does the rest of the
    // cache.
    let (engine, mut last_use) = engine_with_cache(records(4, 5));
    let disk = Disk::new(&engine, 20);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::ReachedLow);
    // Need: 90 % to below 65 % of 100 MiB is 26 MiB (rounded up); 10 from the dangling image,
    // so the first prune keeps the cache at 40 - 26 = 14 MiB: it removes 3 records.
    assert_eq!(actions(&engine), vec!["image x", "cache keep 14"]);
    assert_eq!(engine.cache_bytes(), 10 * MIB);
    assert_eq!(report.build_cache_records, 3);
    assert_eq!(report.build_cache_bytes, 30 * MIB);
    assert_eq!(report.removed_images, 1);
    assert!(
        report
            .summary()
            .contains("(0 skipped), 3 build cache records (30.0 MiB), freed"),
        "{}",
        report.summary()
    );
    assert_eq!(
        engine
            .calls()
            .iter()
            .filter(|c| **c == Call::BuildCache)
            .count(),
        1,
        "the disk-usage endpoint is read once a pass"
    );
}

#[tokio::test(start_paused = true)]
async fn when_the_cache_is_not_enough_the_rest_of_it_goes_then_tagged_images() {
    // 30 MiB of images, 20 of cache, 45 else: 95 % (critical moved up). The dangling image
    // and the whole cache reach 65 %, not below: then the oldest tagged image goes.
    let (engine, mut last_use) = engine_with_cache(records(2, 5));
    let disk = Disk::new(&engine, 45);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        critical_pct: 99.0,
        ..config()
    };
    let report = pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(actions(&engine), vec!["image x", "cache keep 0", "image a"]);
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(engine.cache_bytes(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_engine_without_a_build_cache_endpoint_is_skipped() {
    // No endpoint (as Podman): the cache is asked for once, nothing is pruned, images go.
    let (engine, mut last_use) = four_images();
    let disk = Disk::new(&engine, 50);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(&config(), &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(actions(&engine), vec!["image a", "image b", "image c"]);
    assert!(engine.calls().contains(&Call::BuildCache));
    assert_eq!(report.build_cache_records, 0);
}

#[tokio::test(start_paused = true)]
async fn the_prune_strategy_never_reads_nor_prunes_the_build_cache() {
    let (engine, mut last_use) = engine_with_cache(records(2, 5));
    let disk = Disk::new(&engine, 55);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let config = Config {
        strategy: crate::config::Strategy::Prune,
        ..config()
    };
    pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert!(
        !engine
            .calls()
            .iter()
            .any(|c| matches!(c, Call::BuildCache | Call::PruneBuildCache { .. })),
        "{:?}",
        engine.calls()
    );
    assert_eq!(engine.cache_bytes(), 20 * MIB);
}

/// High 85 %, low 65 %, max_unused_age 24 h; a table that has covered the engine `hours`.
fn aged_config() -> Config {
    Config {
        max_unused_age: Duration::from_secs(24 * 3600),
        ..config()
    }
}

fn covered(mut last_use: LastUse, hours: i64) -> LastUse {
    last_use.set_covering_since(Some(NOW_MS - hours * 3_600_000));
    last_use
}

#[tokio::test(start_paused = true)]
async fn below_high_images_unused_for_longer_than_max_go_uncordoned() {
    // 40 MiB of images, 10 else: 50 %, far below high. a and b were last used 3 and 2 days
    // ago; c and d within the day.
    let (engine, last_use) =
        engine_with(&[("a", 3 * 86_400), ("b", 2 * 86_400), ("c", 3600), ("d", 60)]);
    let mut last_use = covered(last_use, 48);
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(
        &aged_config(),
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &token,
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::Aged);
    assert_eq!(actions(&engine), vec!["image a", "image b"]);
    assert_eq!(report.removed_images, 2);
    assert_eq!(report.aged_images, 2, "counted as removals for age");
    assert!(
        !engine.calls().contains(&Call::BuildCache),
        "below high the disk-usage endpoint is not read"
    );
    assert!(
        !guard.calls().contains(&G::Begin),
        "no cordon for removals for age below high: {:?}",
        guard.calls()
    );
    assert_eq!(guard.calls().last(), Some(&G::End(Some("ImagesRemoved"))));

    // Asked for, the cordon is taken.
    let (engine, last_use) = engine_with(&[("a", 3 * 86_400), ("d", 60)]);
    let mut last_use = covered(last_use, 48);
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let config = Config {
        max_unused_age_cordon: true,
        ..aged_config()
    };
    pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(guard.calls().first(), Some(&G::Begin));
    assert_eq!(actions(&engine), vec!["image a"]);
}

#[tokio::test(start_paused = true)]
async fn below_high_nothing_goes_before_the_table_has_covered_max_unused_age() {
    let (engine, last_use) = engine_with(&[("a", 3 * 86_400), ("b", 2 * 86_400)]);
    let mut last_use = covered(last_use, 23);
    let disk = Disk::new(&engine, 10);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(
        &aged_config(),
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &token,
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, Outcome::BelowHigh);
    assert!(actions(&engine).is_empty());
    assert!(guard.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn above_high_aged_images_go_even_after_low_is_reached() {
    // 40 MiB of images + 50 else = 90 %; a (3 days) and b (2 days) are stale, c and d are
    // not. a and b reach 70 %, c reaches 60 %: below low; d stays. Then the pass removes no
    // more: nothing stale is left.
    let (engine, last_use) = engine_with(&[
        ("a", 3 * 86_400),
        ("b", 2 * 86_400),
        ("c", 7200),
        ("d", 3600),
    ]);
    let mut last_use = covered(last_use, 96);
    let disk = Disk::new(&engine, 50);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let report = pass(
        &aged_config(),
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &token,
    )
    .await
    .unwrap();
    assert_eq!(actions(&engine), vec!["image a", "image b", "image c"]);
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!((report.removed_images, report.aged_images), (3, 2));
    assert_eq!(
        guard.calls().first(),
        Some(&G::Begin),
        "under pressure: cordoned"
    );

    // a is 30 MiB: 60 MiB of images + 30 else = 90 %, and without a 60 %, below low already:
    // b, stale too, goes all the same; c and d stay.
    let (_, last_use) = engine_with(&[
        ("a", 3 * 86_400),
        ("b", 2 * 86_400),
        ("c", 7200),
        ("d", 3600),
    ]);
    let images = ["a", "b", "c", "d"]
        .iter()
        .map(|id| image(id, if *id == "a" { 30 } else { 10 }))
        .collect();
    let engine = FakeEngine::new(images, Vec::new());
    let mut last_use = covered(last_use, 96);
    let disk = Disk::new(&engine, 30);
    let guard = Recorder::new(PassStart::Proceed);
    let report = pass(
        &aged_config(),
        &engine,
        &disk,
        &mut last_use,
        &guard,
        &token,
    )
    .await
    .unwrap();
    assert_eq!(actions(&engine), vec!["image a", "image b"]);
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(report.aged_images, 2);
}

#[tokio::test(start_paused = true)]
async fn every_strategy_but_prune_reclaims_the_build_cache_and_ages_images() {
    use crate::config::Strategy;
    for strategy in [Strategy::Lru, Strategy::Lru2, Strategy::Lfu, Strategy::Gdsf] {
        let (engine, mut last_use) = engine_with_cache(records(4, 5));
        let disk = Disk::new(&engine, 20);
        let guard = Recorder::new(PassStart::Proceed);
        let token = CancellationToken::new();
        let config = Config {
            strategy,
            ..config()
        };
        pass(&config, &engine, &disk, &mut last_use, &guard, &token)
            .await
            .unwrap();
        assert_eq!(
            actions(&engine),
            vec!["image x", "cache keep 14"],
            "{strategy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_image_whose_layers_the_build_cache_holds_frees_nothing_and_the_pass_takes_stock_again()
{
    // Three BuildKit images of 10 MiB, their layers held by shared build-cache records, and
    // 56 MiB else: 86 %, high 85, low 80. The first removal frees nothing (the record keeps
    // the layers); the pass takes stock again, finds the record unshared and prunes it: below
    // low after one image, where a pass that trusts the sizes removes all three and ends
    // above low.
    let (engine, mut last_use) = engine_with(&[("a", 90_000), ("b", 80_000), ("c", 70_000)]);
    let mut cache = records(3, 5);
    for r in &mut cache {
        r.shared = true;
    }
    let engine = FakeEngine::new(engine.inventory_now().images, Vec::new())
        .with_build_cache(cache, NOW_MS / 1000);
    for (image, record) in [("a", "r0"), ("b", "r1"), ("c", "r2")] {
        engine.hold_layers(image, record);
    }
    let disk = Disk::new(&engine, 56);
    let guard = Recorder::new(PassStart::Proceed);
    let token = CancellationToken::new();
    let mut config = config();
    config.watermarks = crate::config::Watermarks::Relative {
        high_pct: 85.0,
        low_pct: 80.0,
    };
    config.min_age = std::time::Duration::ZERO;
    config.build_cache_min_age = std::time::Duration::ZERO;
    let report = pass(&config, &engine, &disk, &mut last_use, &guard, &token)
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::ReachedLow);
    assert_eq!(actions(&engine), vec!["image a", "cache keep 0"]);
    let left: Vec<String> = engine
        .inventory_now()
        .images
        .iter()
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(left, vec!["b", "c"]);
    // The build cache was read again after the removal that freed nothing.
    let reads = engine
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::BuildCache))
        .count();
    assert_eq!(reads, 2);
}
