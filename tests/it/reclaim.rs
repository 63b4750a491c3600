//! The reclaim settings against a real, private dockerd: the BuildKit build cache reclaimed
//! under pressure before any tagged image, images unused for longer than
//! `max_unused_age_seconds` removed below the high watermark once the last-use table has
//! covered the engine that long, and `keep_labels`. What a user sees: which images survive,
//! what the build cache and the filesystem read after, and what `status` says.

use crate::util::cleaner::{Cleaner, plan_steps};
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;

const HOUR: i64 = 3600;
const MIB: u64 = 1 << 20;

fn contains(ids: &[String], id: &str) -> bool {
    ids.iter().any(|i| i == id)
}

#[test]
fn build_cache_is_reclaimed_before_any_tagged_image() {
    let Some(d) = PrivateDockerd::start("build-cache", 512, None) else {
        return;
    };
    let tagged: Vec<String> = (0..3).map(|i| d.image(&format!("app-{i}:1"), 20)).collect();
    // Two BuildKit builds whose images are gone since: their context and layers stay in the
    // build cache, reclaimable.
    for i in 0..2 {
        let tag = format!("built-{i}:1");
        d.buildkit_image(&tag, 30, 20);
        d.docker(&["rmi", &tag]);
    }
    let cache_before = d.build_cache_bytes();
    assert!(
        cache_before > 80 * MIB,
        "setup: the builds left {cache_before} bytes of build cache: {:?}",
        d.build_cache()
    );
    let cleaner = Cleaner::new(&d, "min_age_seconds = 0\nbuild_cache_min_age_seconds = 0\n");
    // The tagged images were used hours ago, long before the cache: least recently used
    // first would take them, were it not for the order.
    let ages: Vec<(&str, i64)> = tagged
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), (10 - i as i64) * HOUR))
        .collect();
    cleaner.seed_last_use(&ages);

    // status shows the cache and what a pass would prune.
    let (status, _) = cleaner.run_ok(&["status"]);
    // Shown with --nocapture: what an operator reads.
    eprintln!("{status}");
    assert!(
        status.contains("BUILD CACHE")
            && status.contains("RECLAIMABLE")
            && status.contains("WOULD GO")
            && status.contains("build cache  "),
        "{status}"
    );

    let (used, _) = d.used_pct();
    let total = d.fs_stat().blocks * d.fs_stat().block_bytes;
    let cache_pct = cache_before as f64 * 100.0 / total as f64;
    // Just under the usage, and a low watermark half the cache's share below it: the cache
    // alone is enough.
    let high = (used - 1.0).floor();
    let low = (used - cache_pct / 2.0).floor();

    // A dry run shows the cache's size and the prunes, and removes nothing.
    let (dry, dry_log) = cleaner.run_ok_at(&["once", "--dry-run"], high, Some(low));
    assert!(
        plan_steps(&dry)
            .iter()
            .any(|s| s.starts_with("prune build cache")),
        "{dry}"
    );
    assert!(
        dry_log.contains("engine default: build cache "),
        "{dry_log}"
    );
    assert_eq!(
        d.build_cache_bytes(),
        cache_before,
        "a dry run prunes nothing"
    );

    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let text = format!("{out}\n{err}");
    let steps = plan_steps(&err);
    let first_cache = steps
        .iter()
        .position(|s| s.starts_with("prune build cache"));
    let first_tagged = steps.iter().position(|s| s.contains("[app-"));
    assert!(
        matches!((first_cache, first_tagged), (Some(c), Some(t)) if c < t),
        "the plan prunes the cache before any tagged image:\n{text}"
    );
    let left = d.image_ids();
    for id in &tagged {
        assert!(
            contains(&left, id),
            "tagged image {id} must survive:\n{text}"
        );
    }
    let cache_after = d.build_cache_bytes();
    assert!(
        cache_after < cache_before,
        "build cache {cache_before} -> {cache_after} bytes:\n{text}"
    );
    let (after, _) = d.used_pct();
    assert!(after < low, "usage {after} not below low {low}:\n{text}");
    assert!(
        out.contains("below the low watermark") && out.contains("build cache records"),
        "the report counts the cache apart:\n{out}"
    );
}

#[test]
fn images_unused_for_longer_than_max_unused_age_go_below_high_once_covered() {
    let Some(d) = PrivateDockerd::start("unused-age", 512, None) else {
        return;
    };
    let stale = d.image("stale:1", 5);
    let fresh = d.image("fresh:1", 5);
    let pinned = d.image_with_labels("pinned:1", 5, &["com.example.pin=true"]);
    let kept = d.image("registry.local/pause:3.9", 5);
    let cleaner = Cleaner::new(
        &d,
        "threshold_high = 99\nthreshold_low = 98\nmax_unused_age_seconds = 3600\n\
         keep = [\"^registry\\\\.local/\"]\nkeep_labels = [\"com.example.pin\"]\n",
    );
    let ages = [
        (stale.as_str(), 5 * HOUR),
        (fresh.as_str(), 60),
        (pinned.as_str(), 5 * HOUR),
        (kept.as_str(), 5 * HOUR),
    ];
    // The state of a cleaner that has just been installed: nothing is stale yet, however old
    // its last use says it is.
    cleaner.seed_last_use(&ages);
    let (out, err) = cleaner.run_ok(&["once"]);
    let all = [&stale, &fresh, &pinned, &kept];
    let left = d.image_ids();
    for id in all {
        assert!(contains(&left, id), "{id}:\n{out}\n{err}");
    }
    assert!(
        out.contains("below the high watermark, nothing to do"),
        "{out}"
    );
    let (status, _) = cleaner.run_ok(&["status"]);
    assert!(status.contains("waits "), "{status}");

    // The same images, the table having covered the engine for two hours.
    cleaner.seed_last_use_covered(&ages, 2 * HOUR);
    let (out, err) = cleaner.run_ok(&["once"]);
    let text = format!("{out}\n{err}");
    let left = d.image_ids();
    assert!(!contains(&left, &stale), "the stale image goes:\n{text}");
    for id in [&fresh, &pinned, &kept] {
        assert!(contains(&left, id), "{id} stays:\n{text}");
    }
    assert!(
        out.contains("removed what was unused for longer than max_unused_age")
            && out.contains("1 of the images unused for longer than max_unused_age"),
        "{out}"
    );
    assert!(
        err.contains("has label com.example.pin=true") && err.contains("matches keep rule"),
        "the plan says why the stale ones stay:\n{err}"
    );
}

#[test]
fn keep_labels_keep_images_under_pressure_and_status_names_the_rule() {
    let Some(d) = PrivateDockerd::start("keep-labels", 512, None) else {
        return;
    };
    let pinned = d.image_with_labels("pinned:1", 30, &["com.example.pin=true"]);
    let gold = d.image_with_labels("gold:1", 30, &["tier=gold"]);
    let bronze = d.image_with_labels("bronze:1", 30, &["tier=bronze"]);
    let plain = d.image("plain:1", 30);
    let cleaner = Cleaner::new(&d, "keep_labels = [\"com.example.pin\", \"tier=gold\"]\n");
    // The labelled images are the least recently used: the labels alone keep them.
    cleaner.seed_last_use(&[
        (&pinned, 4 * HOUR),
        (&gold, 3 * HOUR),
        (&bronze, 2 * HOUR),
        (&plain, HOUR),
    ]);
    let (json, _) = cleaner.run_ok(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).expect("status --json");
    let kept = status["plan"]["kept"].as_array().expect("kept");
    let reason = |id: &str| {
        kept.iter()
            .find(|k| k["id"] == id)
            .map(|k| k["reason"].clone())
    };
    assert_eq!(
        reason(&pinned),
        Some(serde_json::json!({
            "reason": "keep_label",
            "rule": "com.example.pin",
            "label": "com.example.pin=true"
        })),
        "{json}"
    );
    let (text, _) = cleaner.run_ok(&["status"]);
    eprintln!("{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("gold:1")
                && l.contains("label tier=gold (keep_labels \"tier=gold\")")),
        "{text}"
    );

    // Above high with a low watermark nothing can reach: everything else goes, not them.
    let (used, _) = d.used_pct();
    let (out, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some(1.0));
    let text = format!("{out}\n{err}");
    let left = d.image_ids();
    assert!(contains(&left, &pinned) && contains(&left, &gold), "{text}");
    assert!(
        !contains(&left, &bronze) && !contains(&left, &plain),
        "{text}"
    );
}

/// The engine's two build-cache calls against Docker 20.10 (API 1.41): the records as the
/// disk-usage endpoint lists them, a prune that keeps part of the cache (`keep-storage`, the
/// name before API 1.48), the age filter, and a prune of everything it may remove.
#[tokio::test]
async fn the_engine_reads_and_prunes_the_build_cache_as_asked() {
    use docker_image_cleaner::docker::{DockerEngine, Engine};
    use std::time::Duration;

    let Some(d) = PrivateDockerd::start("cache-calls", 512, None) else {
        return;
    };
    for i in 0..2 {
        let tag = format!("built-{i}:1");
        d.buildkit_image(&tag, 20, 20);
        d.docker(&["rmi", &tag]);
    }
    let engine = DockerEngine::connect(Some(&d.host()), Duration::from_secs(60))
        .await
        .expect("connect");
    let cache = engine
        .build_cache()
        .await
        .expect("read the build cache")
        .expect("Docker has the endpoint");
    assert_eq!(cache.records.len(), d.build_cache().len());
    assert_eq!(cache.total_bytes(), d.build_cache_bytes());
    assert!(cache.keep_supported, "API 1.41 has keep-storage");
    let total = cache.total_bytes();
    assert!(total > 60 * MIB, "setup: {:?}", cache.records);

    // Every record was used within the hour: an age filter of an hour keeps them all.
    let pruned = engine
        .prune_build_cache(Duration::from_secs(3600), 0, false)
        .await
        .expect("prune")
        .expect("endpoint");
    assert!(pruned.deleted.is_empty(), "{pruned:?}");
    assert_eq!(d.build_cache_bytes(), total);

    // Keeping three quarters: the least recently used go until the rest fits, not all.
    let keep = total / 4 * 3;
    let pruned = engine
        .prune_build_cache(Duration::ZERO, keep, false)
        .await
        .expect("prune")
        .expect("endpoint");
    let left = d.build_cache_bytes();
    assert!(
        left > 0 && left <= keep,
        "kept {left} of {total} bytes, asked to keep {keep}: {pruned:?}"
    );
    assert!(pruned.reclaimed_bytes > 0 && !pruned.deleted.is_empty());

    // Then everything it may remove.
    engine
        .prune_build_cache(Duration::ZERO, 0, false)
        .await
        .expect("prune")
        .expect("endpoint");
    assert_eq!(d.build_cache_bytes(), 0, "{:?}", d.build_cache());
}
