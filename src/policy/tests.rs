//! Table tests of the policy: every rule of ARCHITECTURE.md's invariants, with time passed in.

use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::docker::{Container, ContainerState, Image, Inventory};
use crate::lastuse::LastUse;
use crate::usage::{FsUsage, TreeUsage};

/// Now, in unix seconds (image and container times) and milliseconds (last use, the plan).
const NOW: i64 = 1_000_000;
const NOW_MS: i64 = NOW * 1000;
const HOUR: i64 = 3600;

fn image(id: &str, tags: &[&str], size_mib: u64) -> Image {
    Image {
        id: id.into(),
        parent_id: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        created: NOW - 100 * HOUR,
        size_bytes: size_mib << 20,
        ..Image::default()
    }
}

fn container(id: &str, image_id: &str, running: bool, finished: i64) -> Container {
    let state = if running {
        ContainerState::Running
    } else {
        ContainerState::Exited
    };
    Container {
        id: id.into(),
        name: format!("name-{id}"),
        image_id: image_id.into(),
        state,
        created: finished - 10,
        finished: Some(finished),
        managed: false,
    }
}

/// Config with strategy lru, watermarks 80/60, min_age 1 h and no keep rules: the values these
/// tables were written for, whatever the defaults become.
fn config() -> Config {
    Config {
        strategy: crate::config::Strategy::Lru,
        watermarks: Watermarks::Relative {
            high_pct: 80.0,
            low_pct: 60.0,
        },
        min_age: Duration::from_secs(3600),
        ..Config::default()
    }
}

/// `uses`: (image id, hours ago last used).
fn table(uses: &[(&str, i64)]) -> LastUse {
    let mut t = LastUse::new();
    for (id, hours) in uses {
        t.touch(id, (NOW - hours * HOUR) * 1000);
    }
    t
}

/// The plan for one engine named `default`, no floor, not critical.
fn plan(inv: &Inventory, lu: &LastUse, cfg: &Config, need: Need, now_ms: i64) -> Plan {
    super::plan(
        &[Holding {
            name: "default",
            inventory: inv,
            last_use: lu,
            floor: None,
            build_cache: None,
        }],
        cfg,
        need,
        now_ms,
        false,
    )
}

fn removed_images(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::RemoveImage { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

fn reason_of<'a>(plan: &'a Plan, id: &str) -> Option<&'a Reason> {
    plan.kept.iter().find(|k| k.id == id).map(|k| &k.reason)
}

fn shortfall(bytes: u64) -> Need {
    Need { bytes, inodes: 0 }
}

#[test]
fn lru_order_follows_last_use_with_dangling_first() {
    // Used A, B, C in that order, then A again: B goes before C before A; dangling D first.
    let inv = Inventory {
        images: vec![
            image("a", &["a:1"], 10),
            image("b", &["b:1"], 10),
            image("c", &["c:1"], 10),
            image("d", &[], 10),
        ],
        containers: vec![],
    };
    let lu = table(&[("a", 2), ("b", 4), ("c", 3), ("d", 2)]);
    let p = plan(&inv, &lu, &config(), shortfall(0), NOW_MS);
    assert_eq!(removed_images(&p), vec!["d", "b", "c", "a"]);
}

#[test]
fn protected_images_never_appear_as_steps() {
    let mut cfg = config();
    cfg.keep = vec![regex::Regex::new("^registry/pause:").unwrap()];
    let inv = Inventory {
        images: vec![
            image("used-running", &["web:1"], 10),
            image("used-stopped-young", &["job:1"], 10),
            image("kept", &["registry/pause:3.9"], 10),
            image("fresh", &["new:1"], 10),
            image("old", &["old:1"], 10),
        ],
        containers: vec![
            container("r", "used-running", true, NOW - 10 * HOUR),
            container("s", "used-stopped-young", false, NOW - 60),
        ],
    };
    cfg.container_min_age = Duration::from_secs(600);
    let lu = table(&[
        ("used-running", 50),
        ("used-stopped-young", 50),
        ("kept", 50),
        ("fresh", 0),
        ("old", 50),
    ]);
    let p = plan(&inv, &lu, &cfg, shortfall(u64::MAX), NOW_MS);
    assert_eq!(removed_images(&p), vec!["old"]);
    assert!(matches!(
        reason_of(&p, "used-running"),
        Some(Reason::InUse { .. })
    ));
    assert!(matches!(
        reason_of(&p, "used-stopped-young"),
        Some(Reason::InUse { .. })
    ));
    assert!(matches!(
        reason_of(&p, "kept"),
        Some(Reason::KeepRule { .. })
    ));
    assert!(matches!(
        reason_of(&p, "fresh"),
        Some(Reason::TooYoung { .. })
    ));
    assert!(matches!(
        reason_of(&p, "s"),
        Some(Reason::RecentlyStopped { .. })
    ));
    assert!(
        !p.steps
            .iter()
            .any(|s| matches!(s, Step::RemoveContainer { .. }))
    );
}

#[test]
fn stopped_containers_go_first_oldest_first_and_free_their_images() {
    let inv = Inventory {
        images: vec![image("x", &["x:1"], 10)],
        containers: vec![
            container("new", "x", false, NOW - HOUR),
            container("old", "x", false, NOW - 5 * HOUR),
            container("up", "other", true, NOW_MS),
        ],
    };
    let lu = table(&[("x", 10)]);
    let p = plan(&inv, &lu, &config(), shortfall(1), NOW_MS);
    let ids: Vec<String> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::RemoveContainer { id, .. } => format!("container {id}"),
            Step::RemoveImage { id, .. } => format!("image {id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec!["container old", "container new", "image x"]);
}

#[test]
fn min_age_boundary_and_parents() {
    // Exactly min_age old may go; one second younger may not.
    let mut cfg = config();
    cfg.min_age = Duration::from_secs(HOUR as u64);
    let mut child = image("child", &["child:1"], 5);
    child.parent_id = Some("parent".into());
    let mut busy_child = image("busy", &["busy:1"], 5);
    busy_child.parent_id = Some("base".into());
    let inv = Inventory {
        images: vec![
            image("edge", &["edge:1"], 1),
            image("young", &["young:1"], 1),
            image("parent", &["parent:1"], 1),
            child,
            image("base", &["base:1"], 1),
            busy_child,
        ],
        containers: vec![container("c", "busy", true, NOW_MS)],
    };
    let mut lu = table(&[
        ("edge", 1),
        ("parent", 30),
        ("child", 20),
        ("base", 40),
        ("busy", 40),
    ]);
    lu.touch("young", (NOW - HOUR + 1) * 1000);
    let p = plan(&inv, &lu, &cfg, shortfall(u64::MAX), NOW_MS);
    // The parent counts as used when its child was (20 h ago), and a child goes before its
    // parent; "base" stays because "busy", which is in use, depends on it.
    assert_eq!(removed_images(&p), vec!["child", "parent", "edge"]);
    assert!(matches!(
        reason_of(&p, "young"),
        Some(Reason::TooYoung { age_secs: 3599 })
    ));
    assert_eq!(
        reason_of(&p, "base"),
        Some(&Reason::Parent {
            child: "busy".into()
        })
    );
}

/// An image with `layers` (diff ids, bottom first) and no `ParentId`.
fn layered(id: &str, tags: &[&str], layers: &[&str]) -> Image {
    Image {
        layers: layers.iter().map(|l| l.to_string()).collect(),
        ..image(id, tags, 10)
    }
}

#[test]
fn layers_make_parents_where_parent_id_says_nothing_or_names_a_hidden_image() {
    let cfg = config();
    // BuildKit: no ParentId; "app" is built on "base" (its layers begin app's), "other" on a
    // base that is not listed. A classic build of several steps: "svc" names a hidden
    // intermediate, and "base" is still its nearest listed ancestor (the longest prefix: not
    // "root", which base itself is built on).
    let mut svc = layered("svc", &["svc:1"], &["l0", "l1", "l4", "l5"]);
    svc.parent_id = Some("hidden".into());
    let inv = Inventory {
        images: vec![
            layered("root", &["root:1"], &["l0"]),
            layered("base", &["base:1"], &["l0", "l1"]),
            layered("app", &["app:1"], &["l0", "l1", "l2"]),
            layered("other", &["other:1"], &["x0", "x1"]),
            svc,
        ],
        containers: vec![container("c", "app", true, NOW_MS)],
    };
    let lu = table(&[
        ("root", 50),
        ("base", 40),
        ("app", 30),
        ("other", 20),
        ("svc", 10),
    ]);
    let p = plan(&inv, &lu, &cfg, shortfall(u64::MAX), NOW_MS);
    // app runs: base and root stay for it (removing them would free nothing and lose their
    // tags); svc and other may go.
    assert_eq!(
        reason_of(&p, "base"),
        Some(&Reason::Parent {
            child: "app".into()
        })
    );
    assert!(matches!(reason_of(&p, "root"), Some(Reason::Parent { .. })));
    let mut gone = removed_images(&p);
    gone.sort_unstable();
    assert_eq!(gone, vec!["other", "svc"]);
    // Without layers (an engine that did not say) only ParentId counts, as before.
    let bare = Inventory {
        images: inv
            .images
            .iter()
            .map(|i| Image {
                layers: Vec::new(),
                ..i.clone()
            })
            .collect(),
        containers: inv.containers.clone(),
    };
    let p = plan(&bare, &lu, &cfg, shortfall(u64::MAX), NOW_MS);
    assert_eq!(reason_of(&p, "base"), None);
}

#[test]
fn estimate_counts_reported_sizes_and_gives_up_on_inodes() {
    let inv = Inventory {
        images: vec![
            image("a", &["a:1"], 10),
            image("b", &["b:1"], 10),
            image("c", &["c:1"], 10),
        ],
        containers: vec![],
    };
    let lu = table(&[("a", 3), ("b", 2), ("c", 1)]);
    let cases = [
        (shortfall(0), Some(0)),
        (shortfall(1), Some(1)),
        (shortfall(10 << 20), Some(1)),
        (shortfall((10 << 20) + 1), Some(2)),
        (shortfall(31 << 20), None),
        (
            Need {
                bytes: 0,
                inodes: 5,
            },
            None,
        ),
    ];
    for (n, want) in cases {
        assert_eq!(
            plan(&inv, &lu, &config(), n, NOW_MS).estimated_steps,
            want,
            "need {n:?}"
        );
    }
}

#[test]
fn prune_strategy_is_the_original_sequence() {
    let mut cfg = config();
    cfg.strategy = crate::config::Strategy::Prune;
    let p = plan(
        &Inventory::default(),
        &table(&[]),
        &cfg,
        shortfall(1),
        NOW_MS,
    );
    assert_eq!(
        p.steps,
        vec![
            Step::PruneContainers {
                engine: "default".into()
            },
            Step::PruneDanglingImages {
                engine: "default".into()
            },
            Step::PruneAllImages {
                engine: "default".into()
            }
        ]
    );
}

fn fs(blocks_pct: f64, inodes_pct: f64) -> Measurement {
    // 1000 blocks of 4 KiB and 1000 inodes.
    let bavail = (1000.0 * (1.0 - blocks_pct / 100.0)).round() as u64;
    let favail = (1000.0 * (1.0 - inodes_pct / 100.0)).round() as u64;
    Measurement::Relative(vec![FsUsage::from_counts(
        "/var/lib/docker".into(),
        4096,
        1000,
        bavail,
        1000,
        favail,
    )])
}

#[test]
fn watermarks_trigger_on_the_fuller_of_blocks_and_inodes() {
    let w = Watermarks::Relative {
        high_pct: 80.0,
        low_pct: 60.0,
    };
    // (blocks %, inodes %, above high, below low)
    let cases = [
        (79.9, 10.0, false, false),
        (80.0, 10.0, true, false),
        (10.0, 85.0, true, false),
        (59.9, 59.9, false, true),
        (60.0, 10.0, false, false),
        (10.0, 60.0, false, false),
    ];
    for (b, i, high, low) in cases {
        let m = fs(b, i);
        assert_eq!(above_high(&m, &w), high, "blocks {b} inodes {i}");
        assert_eq!(below_low(&m, &w), low, "blocks {b} inodes {i}");
    }
    let n = need(&fs(90.0, 70.0), &w);
    assert!(n.bytes >= 300 * 4096 && n.bytes <= 301 * 4096, "{n:?}");
    assert!(n.inodes >= 100 && n.inodes <= 101, "{n:?}");
}

#[test]
fn absolute_watermarks_compare_bytes() {
    let w = Watermarks::Absolute {
        high_bytes: 100,
        low_bytes: 80,
    };
    let m = |bytes| {
        Measurement::Absolute(TreeUsage {
            bytes,
            inodes: 1,
            unreadable: 0,
        })
    };
    assert!(above_high(&m(100), &w));
    assert!(!above_high(&m(99), &w));
    assert!(below_low(&m(79), &w));
    assert!(!below_low(&m(80), &w));
    assert_eq!(need(&m(100), &w).bytes, 21);
}

#[test]
fn plan_prints_every_step_and_why_things_stay() {
    let inv = Inventory {
        images: vec![
            image("sha256:0123456789abcdef", &["a:1"], 10),
            image("b", &["b:1"], 1),
        ],
        containers: vec![container("c", "b", true, NOW_MS)],
    };
    let text = plan(
        &inv,
        &table(&[("sha256:0123456789abcdef", 5)]),
        &config(),
        shortfall(1),
        NOW_MS,
    )
    .to_string();
    assert!(
        text.contains("1. remove image 0123456789ab [a:1], 10.0 MiB, last used 1970-01-12T"),
        "{text}"
    );
    assert!(
        text.contains("keep b [b:1]: in use by container name-c"),
        "{text}"
    );
}

#[test]
fn one_order_across_engines_with_each_engines_protections() {
    // a and b on one disk; a container of b uses "shared" on b: the same id on a may go.
    let inv_a = Inventory {
        images: vec![image("a1", &["a1:1"], 10), image("shared", &["s:1"], 10)],
        containers: vec![],
    };
    let inv_b = Inventory {
        images: vec![image("b1", &["b1:1"], 10), image("shared", &["s:1"], 10)],
        containers: vec![container("c", "shared", true, NOW)],
    };
    let lu_a = table(&[("a1", 10), ("shared", 5)]);
    let lu_b = table(&[("b1", 8), ("shared", 1)]);
    let holdings = [
        Holding {
            name: "a",
            inventory: &inv_a,
            last_use: &lu_a,
            floor: None,
            build_cache: None,
        },
        Holding {
            name: "b",
            inventory: &inv_b,
            last_use: &lu_b,
            floor: None,
            build_cache: None,
        },
    ];
    let p = super::plan(&holdings, &config(), shortfall(u64::MAX), NOW_MS, false);
    let order: Vec<String> = p
        .steps
        .iter()
        .map(|s| match s {
            Step::RemoveImage { engine, id, .. } => format!("{engine}/{id}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(order, vec!["a/a1", "b/b1", "a/shared"]);
    assert!(
        p.kept.iter().any(|k| k.engine == "b"
            && k.id == "shared"
            && matches!(k.reason, Reason::InUse { .. }))
    );
}

#[test]
fn floors_keep_the_most_recently_used_and_spare_no_dangling_image() {
    // Footprint 40 MiB, floor 25: the dangling image (5) and the oldest tagged (10) go; then
    // 25 left, and the next would take it to 15: it and everything newer stay.
    let inv = Inventory {
        images: vec![
            image("old", &["old:1"], 10),
            image("mid", &["mid:1"], 10),
            image("new", &["new:1"], 5),
            image("dangling", &[], 5),
            image("newest", &["newest:1"], 10),
        ],
        containers: vec![],
    };
    let lu = table(&[
        ("old", 10),
        ("mid", 9),
        ("new", 8),
        ("dangling", 9),
        ("newest", 7),
    ]);
    let floor = |floor_mib: u64| FloorState {
        footprint_bytes: 40 << 20,
        floor_bytes: floor_mib << 20,
    };
    let plan_with = |f: Option<FloorState>| {
        super::plan(
            &[Holding {
                name: "default",
                inventory: &inv,
                last_use: &lu,
                floor: f,
                build_cache: None,
            }],
            &config(),
            shortfall(u64::MAX),
            NOW_MS,
            false,
        )
    };
    let p = plan_with(Some(floor(25)));
    assert_eq!(removed_images(&p), vec!["dangling", "old"]);
    for id in ["mid", "new", "newest"] {
        assert!(
            matches!(reason_of(&p, id), Some(Reason::Floor { .. })),
            "{id}: {:?}",
            reason_of(&p, id)
        );
    }
    // Exactly at the floor after a removal is allowed; no floor, everything goes.
    assert_eq!(
        removed_images(&plan_with(Some(floor(15)))),
        vec!["dangling", "old", "mid"]
    );
    assert_eq!(removed_images(&plan_with(None)).len(), 5);
}

#[test]
fn critical_lowers_the_min_age_to_critical_min_age() {
    let inv = Inventory {
        images: vec![image("a", &["a:1"], 1), image("b", &["b:1"], 1)],
        containers: vec![],
    };
    let mut lu = LastUse::new();
    lu.touch("a", NOW_MS - 600_000);
    lu.touch("b", NOW_MS - 60_000);
    let holdings = [Holding {
        name: "default",
        inventory: &inv,
        last_use: &lu,
        floor: None,
        build_cache: None,
    }];
    let p = super::plan(&holdings, &config(), shortfall(1), NOW_MS, false);
    assert!(removed_images(&p).is_empty(), "both younger than an hour");
    let p = super::plan(&holdings, &config(), shortfall(1), NOW_MS, true);
    assert_eq!(removed_images(&p), vec!["a"], "b is younger than 120 s");
}

mod cri;
mod reclaim;
mod states;
