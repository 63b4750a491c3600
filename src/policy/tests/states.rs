//! Which containers a pass may remove, by state, and what keeps a build's images.

use super::*;

fn in_state(id: &str, image_id: &str, state: ContainerState, stopped: i64) -> Container {
    Container {
        state,
        ..container(id, image_id, false, stopped)
    }
}

fn removed_containers(plan: &Plan) -> Vec<&str> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::RemoveContainer { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// Only exited and dead containers go, and only once stopped for `container_min_age`; a created
/// container (a `docker create` waiting for its `start`, a kubelet's pod) and every other state
/// stay and keep their images, whatever their age.
#[test]
fn only_exited_and_dead_containers_go_and_every_other_state_keeps_its_image() {
    use ContainerState::*;
    let long_ago = NOW - 100 * HOUR;
    let states = [
        ("created", Created),
        ("running", Running),
        ("paused", Paused),
        ("restarting", Restarting),
        ("removing", Removing),
        ("stopping", Stopping),
        ("unknown", Unknown),
        ("exited", Exited),
        ("dead", Dead),
        ("exited-young", Exited),
    ];
    let images = states
        .iter()
        .map(|(name, _)| image(&format!("img-{name}"), &[&format!("{name}:1")], 10))
        .collect();
    let containers = states
        .iter()
        .map(|(name, state)| {
            let stopped = if *name == "exited-young" {
                NOW - 60
            } else {
                long_ago
            };
            in_state(name, &format!("img-{name}"), *state, stopped)
        })
        .collect();
    let inv = Inventory { images, containers };
    let mut cfg = config();
    cfg.min_age = Duration::ZERO;
    cfg.container_min_age = Duration::from_secs(600);
    let lu = table(&[]);
    let p = plan(&inv, &lu, &cfg, shortfall(u64::MAX), NOW_MS);

    // Same stop time: by id.
    assert_eq!(removed_containers(&p), vec!["dead", "exited"]);
    let mut images = removed_images(&p);
    images.sort_unstable();
    assert_eq!(images, vec!["img-dead", "img-exited"]);
    for (name, state) in &states[..7] {
        assert_eq!(
            reason_of(&p, &format!("img-{name}")),
            Some(&Reason::InUse {
                container: format!("name-{name}"),
                state: *state,
            }),
            "{name}"
        );
    }
    assert_eq!(
        reason_of(&p, "exited-young"),
        Some(&Reason::RecentlyStopped { age_secs: 60 })
    );
    assert!(
        p.to_string()
            .contains("in use by container name-created (created)"),
        "{p}"
    );

    // Below the high watermark (removals for age) every container keeps its image.
    let mut cfg = cfg;
    cfg.max_unused_age = Duration::from_secs(HOUR as u64);
    let mut lu = table(&[]);
    lu.reconcile(&Inventory::default(), NOW_MS - 1000 * 1000 * HOUR, false);
    let aged = plan_aged(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &lu,
            floor: None,
            build_cache: None,
        }],
        &cfg,
        NOW_MS,
    );
    assert_eq!(removed_images(&aged), Vec::<&str>::new(), "{aged}");
}

/// A created container that never started has no finish time: its age is its creation's, and
/// it still never goes.
#[test]
fn a_created_container_never_goes_however_old() {
    let mut created = in_state("pod1", "x", ContainerState::Created, NOW - 100 * HOUR);
    created.finished = None;
    let inv = Inventory {
        images: vec![image("x", &["x:1"], 10)],
        containers: vec![created],
    };
    let mut cfg = config();
    cfg.min_age = Duration::ZERO;
    let p = plan(&inv, &table(&[]), &cfg, shortfall(u64::MAX), NOW_MS);
    assert!(p.steps.is_empty(), "{p}");
}

fn made(id: &str, tags: &[&str], parent: Option<&str>, secs_ago: i64) -> Image {
    Image {
        parent_id: parent.map(String::from),
        created: NOW - secs_ago,
        ..image(id, tags, 10)
    }
}

/// The newest step of a classic build (untagged, with a parent, made moments ago) stays with
/// `min_age` 0, and so do its parents; so does an untagged image without a parent made within
/// the commit window (Docker names a step's parent a moment after storing it); an untagged
/// image without a parent made before that window (an import, a pull that lost its tag) or
/// made longer ago than the grace, and a tagged one, do not.
#[test]
fn the_newest_step_of_a_build_stays_whatever_the_min_age() {
    let grace = BUILD_GRACE.as_secs() as i64;
    let commit = COMMIT_WINDOW.as_secs() as i64;
    let inv = Inventory {
        images: vec![
            made("base", &["base:1"], None, 100 * HOUR),
            made("step", &[], Some("base"), 2),
            made("other-step", &[], Some("base"), 3),
            made("future", &[], Some("elsewhere"), -30),
            made("imported", &[], None, commit + 1),
            made("mid-commit", &[], None, 2),
            made("finished", &[], Some("base"), grace + 1),
            made("tagged", &["app:1"], Some("base"), 2),
            // A cached step reused by a later build: on the containerd image store an `ENV`
            // step's image shows no parent, and it was made long before.
            made("cached-env", &[], None, commit + 5),
        ],
        containers: vec![
            // A `RUN` step that just exited, about to be committed by its build.
            in_state("run-step", "step", ContainerState::Exited, NOW - 1),
            // One run on the cached step: committed next too (seen on Docker 28's containerd
            // store: a pass removed it mid-commit and the build failed "snapshot … does not
            // exist").
            in_state("cached-run", "cached-env", ContainerState::Exited, NOW - 1),
            in_state("ran", "imported", ContainerState::Exited, NOW - commit - 1),
        ],
    };
    let mut cfg = config();
    cfg.min_age = Duration::ZERO;
    let p = plan(&inv, &table(&[]), &cfg, shortfall(u64::MAX), NOW_MS);
    assert_eq!(
        reason_of(&p, "other-step"),
        Some(&Reason::Building { age_secs: 3 }),
        "{p}"
    );
    assert_eq!(
        reason_of(&p, "step"),
        Some(&Reason::InUse {
            container: "name-run-step".into(),
            state: ContainerState::Exited
        }),
        "{p}"
    );
    assert_eq!(
        reason_of(&p, "future"),
        Some(&Reason::Building { age_secs: 0 })
    );
    assert_eq!(
        reason_of(&p, "mid-commit"),
        Some(&Reason::Building { age_secs: 2 }),
        "{p}"
    );
    assert!(
        matches!(reason_of(&p, "base"), Some(Reason::Parent { .. })),
        "{:?}\n{p}",
        reason_of(&p, "base")
    );
    let mut gone = removed_images(&p);
    gone.sort_unstable();
    assert_eq!(gone, vec!["finished", "imported", "tagged"]);
    assert_eq!(removed_containers(&p), vec!["ran"]);
    assert_eq!(
        reason_of(&p, "run-step"),
        Some(&Reason::BuildStep { image_age_secs: 2 })
    );
    assert_eq!(
        reason_of(&p, "cached-run"),
        Some(&Reason::BuildStep {
            image_age_secs: commit + 5
        }),
        "{p}"
    );
    assert!(
        matches!(reason_of(&p, "cached-env"), Some(Reason::InUse { .. })),
        "{p}"
    );
    assert!(
        p.to_string()
            .contains("untagged step image made 3 s ago: a build in progress may use it next"),
        "{p}"
    );
    assert!(is_build_step(&inv.images[1], NOW_MS));
    assert!(!is_build_step(&inv.images[4], NOW_MS), "imported");

    // At the critical watermark too: a full disk does not make a build's step disposable.
    let critical = super::super::plan(
        &[Holding {
            name: "default",
            inventory: &inv,
            last_use: &table(&[]),
            floor: None,
            build_cache: None,
        }],
        &cfg,
        shortfall(u64::MAX),
        NOW_MS,
        true,
    );
    assert!(!removed_images(&critical).contains(&"step"), "{critical}");
}
