//! Table tests of the rules the reclaim work added to a plan: the build cache after the
//! dangling images and before any tagged image, removals for age (`max_unused_age`) and the
//! coverage they wait for, and `keep_labels`.

use super::*;
use crate::config::KeepLabel;
use crate::docker::{BuildCache, CacheRecord};

const MIB: u64 = 1 << 20;

/// A reclaimable build-cache record of `mib` MiB last used `hours` ago.
fn record(id: &str, mib: u64, hours: i64) -> CacheRecord {
    CacheRecord {
        id: id.into(),
        kind: "regular".into(),
        in_use: false,
        shared: false,
        size_bytes: mib * MIB,
        last_used: Some(NOW - hours * HOUR),
    }
}

fn cache(records: Vec<CacheRecord>) -> BuildCache {
    BuildCache {
        records,
        keep_supported: true,
        shared_are_copies: false,
    }
}

/// The plan for one engine named `default` with `cache`.
fn plan_with_cache(
    inv: &Inventory,
    lu: &LastUse,
    cfg: &Config,
    need: Need,
    c: &BuildCache,
) -> Plan {
    super::super::plan(
        &[Holding {
            name: "default",
            inventory: inv,
            last_use: lu,
            floor: None,
            build_cache: Some(c),
        }],
        cfg,
        need,
        NOW_MS,
        false,
    )
}

/// Each step in short: `image ID`, `cache KEEP_MIB/SIZE_MIB`, `container ID`.
fn outline(p: &Plan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| match s {
            Step::RemoveImage { id, aged, .. } => {
                format!("image {id}{}", if *aged { " (aged)" } else { "" })
            }
            Step::PruneBuildCache {
                keep_bytes,
                size_bytes,
                ..
            } => format!("cache {}/{}", keep_bytes / MIB, size_bytes / MIB),
            Step::RemoveContainer { id, .. } => format!("container {id}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn two_images_and_a_dangling_one() -> (Inventory, LastUse) {
    let inv = Inventory {
        images: vec![
            image("old", &["old:1"], 10),
            image("new", &["new:1"], 10),
            image("dangling", &[], 10),
        ],
        containers: vec![],
    };
    // The tagged images are older than the cache: the cache goes first all the same.
    let lu = table(&[("old", 50), ("new", 40), ("dangling", 2)]);
    (inv, lu)
}

#[test]
fn build_cache_goes_after_dangling_images_and_before_tagged_ones() {
    let (inv, lu) = two_images_and_a_dangling_one();
    // 30 MiB of cache, 10 of it used within the hour (it stays), one record shared with an
    // image, one in use and one of BuildKit's own: only a and b may go.
    let mut shared = record("shared", 50, 5);
    shared.shared = true;
    let mut busy = record("busy", 50, 5);
    busy.in_use = true;
    let mut frontend = record("frontend", 50, 5);
    frontend.kind = "frontend".into();
    let c = cache(vec![
        record("a", 10, 3),
        record("b", 10, 2),
        record("young", 10, 0),
        shared,
        busy,
        frontend,
    ]);
    // Need 5 MiB: the first prune keeps the cache at its size less 5 MiB; the second takes the
    // rest of what may go.
    let p = plan_with_cache(&inv, &lu, &config(), shortfall(5 * MIB), &c);
    let total = c.total_bytes() / MIB;
    assert_eq!(
        total, 130,
        "shared records are the image's, not the cache's"
    );
    assert_eq!(
        outline(&p),
        vec![
            "image dangling".to_string(),
            format!("cache {}/10", total - 5),
            "cache 0/10".to_string(),
            "image old".to_string(),
            "image new".to_string(),
        ]
    );
    // A shortfall larger than what may go: one prune of all of it.
    let p = plan_with_cache(&inv, &lu, &config(), shortfall(100 * MIB), &c);
    assert_eq!(outline(&p)[1..3], ["cache 0/20", "image old"]);
    // Inodes short: the sizes say nothing, all of it at once.
    let p = plan_with_cache(
        &inv,
        &lu,
        &config(),
        Need {
            bytes: MIB,
            inodes: 10,
        },
        &c,
    );
    assert_eq!(outline(&p)[1..3], ["cache 0/20", "image old"]);
    // The min age of the cache is its own.
    let cfg = Config {
        build_cache_min_age: Duration::from_secs(10 * HOUR as u64),
        ..config()
    };
    let p = plan_with_cache(&inv, &lu, &cfg, shortfall(MIB), &c);
    assert_eq!(
        outline(&p),
        vec!["image dangling", "image old", "image new"]
    );
}

#[test]
fn build_cache_prunes_carry_their_min_age_and_lower_it_at_critical() {
    let (inv, lu) = two_images_and_a_dangling_one();
    // Used 10 minutes ago: too young for the 1 h min age, old enough for critical's 2 min.
    let mut c = cache(vec![record("a", 10, 0)]);
    c.records[0].last_used = Some(NOW - 600);
    let plan_at = |critical| {
        super::super::plan(
            &[Holding {
                name: "default",
                inventory: &inv,
                last_use: &lu,
                floor: None,
                build_cache: Some(&c),
            }],
            &config(),
            shortfall(MIB),
            NOW_MS,
            critical,
        )
    };
    let unused_for = |p: &Plan| {
        p.steps.iter().find_map(|s| match s {
            Step::PruneBuildCache {
                unused_for_secs, ..
            } => Some(*unused_for_secs),
            _ => None,
        })
    };
    assert_eq!(
        unused_for(&plan_at(false)),
        None,
        "used 10 min ago, min age 1 h"
    );
    assert_eq!(unused_for(&plan_at(true)), Some(120), "critical: 2 min");
}

#[test]
fn an_engine_that_cannot_keep_part_of_its_cache_prunes_it_once() {
    let (inv, lu) = two_images_and_a_dangling_one();
    let mut c = cache(vec![record("a", 10, 3), record("b", 10, 2)]);
    c.keep_supported = false;
    let p = plan_with_cache(&inv, &lu, &config(), shortfall(MIB), &c);
    assert_eq!(outline(&p)[1..3], ["cache 0/20", "image old"]);
}

#[test]
fn the_prune_strategy_never_touches_the_build_cache() {
    let (inv, lu) = two_images_and_a_dangling_one();
    let c = cache(vec![record("a", 10, 3)]);
    let cfg = Config {
        strategy: crate::config::Strategy::Prune,
        ..config()
    };
    let p = plan_with_cache(&inv, &lu, &cfg, shortfall(MIB), &c);
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::PruneBuildCache { .. })),
        "{p}"
    );
}

#[test]
fn a_floor_does_not_keep_the_build_cache_but_counts_what_it_frees() {
    // Footprint 40 MiB, floor 10: the dangling image and the cache free 20 of it, so only one
    // tagged image may go.
    let (inv, lu) = two_images_and_a_dangling_one();
    let c = cache(vec![record("a", 10, 3)]);
    let p = super::super::plan(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &lu,
            floor: Some(FloorState {
                footprint_bytes: 40 * MIB,
                floor_bytes: 10 * MIB,
            }),
            build_cache: Some(&c),
        }],
        &config(),
        shortfall(u64::MAX),
        NOW_MS,
        false,
    );
    assert_eq!(
        outline(&p),
        vec!["image dangling", "cache 0/10", "image old"]
    );
    assert!(matches!(reason_of(&p, "new"), Some(Reason::Floor { .. })));
}

#[test]
fn keep_labels_keep_an_image_and_say_which_rule() {
    let mut pinned = image("pinned", &["app:1"], 10);
    pinned.labels = [("com.example.pin".to_string(), "true".to_string())].into();
    let mut tier = image("tier", &["tier:1"], 10);
    tier.labels = [("tier".to_string(), "gold".to_string())].into();
    let mut other_tier = image("bronze", &["tier:2"], 10);
    other_tier.labels = [("tier".to_string(), "bronze".to_string())].into();
    let inv = Inventory {
        images: vec![pinned, tier, other_tier, image("plain", &["plain:1"], 10)],
        containers: vec![],
    };
    let lu = table(&[("pinned", 9), ("tier", 9), ("bronze", 9), ("plain", 9)]);
    let cfg = Config {
        keep_labels: vec![
            KeepLabel::parse("com.example.pin").unwrap(),
            KeepLabel::parse("tier=gold").unwrap(),
        ],
        ..config()
    };
    let p = plan(&inv, &lu, &cfg, shortfall(u64::MAX), NOW_MS);
    assert_eq!(removed_images(&p), vec!["bronze", "plain"]);
    assert_eq!(
        reason_of(&p, "pinned"),
        Some(&Reason::KeepLabel {
            rule: "com.example.pin".into(),
            label: "com.example.pin=true".into()
        })
    );
    assert_eq!(
        reason_of(&p, "tier"),
        Some(&Reason::KeepLabel {
            rule: "tier=gold".into(),
            label: "tier=gold".into()
        })
    );
    assert!(
        p.to_string().contains(
            "keep tier [tier:1]: has label tier=gold, matches keep_labels rule \"tier=gold\""
        ),
        "{p}"
    );
    // The parent of a label-kept image stays, and says for which.
    let mut child = image("child", &["child:1"], 1);
    child.parent_id = Some("base".into());
    child.labels = [("com.example.pin".to_string(), String::new())].into();
    let inv = Inventory {
        images: vec![image("base", &["base:1"], 1), child],
        containers: vec![],
    };
    let p = plan(
        &inv,
        &table(&[("base", 9), ("child", 9)]),
        &cfg,
        shortfall(1),
        NOW_MS,
    );
    assert!(removed_images(&p).is_empty());
    assert!(
        p.to_string()
            .contains("keep base [base:1]: parent of child, which stays"),
        "{p}"
    );
}

/// A table that has covered its engine since `hours` ago, with `uses` (id, hours ago).
fn covered_table(hours: i64, uses: &[(&str, i64)]) -> LastUse {
    let mut t = table(uses);
    t.set_covering_since(Some((NOW - hours * HOUR) * 1000));
    t
}

fn aged_config() -> Config {
    Config {
        max_unused_age: Duration::from_secs(24 * HOUR as u64),
        keep: vec![regex::Regex::new("^keep:").unwrap()],
        keep_labels: vec![KeepLabel::parse("pin").unwrap()],
        ..config()
    }
}

fn stale_inventory() -> Inventory {
    let mut pinned = image("pinned", &["pinned:1"], 1);
    pinned.labels = [("pin".to_string(), "yes".to_string())].into();
    Inventory {
        images: vec![
            image("stale", &["stale:1"], 1),
            image("stale-dangling", &[], 1),
            image("recent", &["recent:1"], 1),
            image("kept", &["keep:1"], 1),
            pinned,
            image("stopped", &["stopped:1"], 1),
        ],
        containers: vec![container("old-exit", "stopped", false, NOW - 90 * HOUR)],
    }
}

fn stale_uses() -> Vec<(&'static str, i64)> {
    vec![
        ("stale", 30),
        ("stale-dangling", 48),
        ("recent", 2),
        ("kept", 50),
        ("pinned", 50),
        ("stopped", 90),
    ]
}

#[test]
fn below_high_only_images_unused_for_longer_than_max_go_with_every_protection() {
    let inv = stale_inventory();
    let lu = covered_table(25, &stale_uses());
    let p = plan_aged(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &lu,
            floor: None,
            build_cache: None,
        }],
        &aged_config(),
        NOW_MS,
    );
    assert!(!p.pressure);
    // No container goes below high, so the stopped one keeps its image.
    assert_eq!(
        outline(&p),
        vec!["image stale-dangling (aged)", "image stale (aged)"]
    );
    let reasons: Vec<(&str, &Reason)> = p.kept.iter().map(|k| (k.id.as_str(), &k.reason)).collect();
    assert!(
        matches!(
            reasons[..],
            [
                ("kept", Reason::KeepRule { .. }),
                ("pinned", Reason::KeepLabel { .. }),
                ("stopped", Reason::InUse { .. }),
            ]
        ),
        "only stale images are listed as kept: {reasons:?}"
    );
    assert!(!cordons(&p, &aged_config()), "no cordon below high");
    assert!(cordons(
        &p,
        &Config {
            max_unused_age_cordon: true,
            ..aged_config()
        }
    ));
}

#[test]
fn max_unused_age_waits_until_the_table_has_covered_that_long() {
    let inv = stale_inventory();
    let holding = |lu: &LastUse| {
        plan_aged(
            &[Holding {
                name: "default",
                inventory: &inv,
                last_use: lu,
                floor: None,
                build_cache: None,
            }],
            &aged_config(),
            NOW_MS,
        )
    };
    // A fresh install: every image carries its build time, and none is taken for stale.
    assert!(holding(&table(&stale_uses())).steps.is_empty());
    assert!(holding(&covered_table(23, &stale_uses())).steps.is_empty());
    assert_eq!(holding(&covered_table(24, &stale_uses())).steps.len(), 2);
    // Off: nothing, whatever the coverage.
    let off = plan_aged(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &covered_table(100, &stale_uses()),
            floor: None,
            build_cache: None,
        }],
        &config(),
        NOW_MS,
    );
    assert!(off.steps.is_empty());
}

#[test]
fn under_pressure_aged_images_are_marked_and_no_floor_keeps_them() {
    let inv = Inventory {
        images: vec![
            image("stale", &["stale:1"], 10),
            image("new", &["new:1"], 10),
        ],
        containers: vec![],
    };
    let lu = covered_table(48, &[("stale", 30), ("new", 2)]);
    let p = super::super::plan(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &lu,
            // A floor that keeps everything from pressure.
            floor: Some(FloorState {
                footprint_bytes: 20 * MIB,
                floor_bytes: 20 * MIB,
            }),
            build_cache: None,
        }],
        &aged_config(),
        shortfall(u64::MAX),
        NOW_MS,
        false,
    );
    assert!(p.pressure);
    assert_eq!(outline(&p), vec!["image stale (aged)"]);
    assert!(matches!(reason_of(&p, "new"), Some(Reason::Floor { .. })));
    assert!(
        p.to_string()
            .contains("[stale:1], 10.0 MiB, last used 1970-01-11T07:46:40Z, unused for longer than max_unused_age"),
        "{p}"
    );
}
