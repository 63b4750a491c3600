//! A pass while the node is busy, against a real private dockerd: containers created and not yet
//! started (`docker create` then `start`, as the kubelet drives cri-dockerd), and builds in
//! progress. Each test is a real pass above the high watermark with `min_age_seconds = 0` and
//! asserts what a user sees: the container starts after the pass, the build succeeds, and what
//! was not in use did go (so the pass really ran).

use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;

/// A cleaner for `d` whose high watermark is under the current usage (so a pass cleans) and whose
/// low one is out of reach (so it tries everything it may), with `extra` TOML lines.
fn cleaner_above_high(d: &PrivateDockerd, extra: &str) -> Cleaner {
    let (used, _) = d.used_pct();
    let high = (used - 1.0).floor();
    assert!(high > 1.0, "setup: usage {used} %");
    Cleaner::new(
        d,
        &format!("threshold_high = {high}\nthreshold_low = 1\n{extra}"),
    )
}

/// `docker create --name pod1 app:1` then a pass, then `docker start pod1`: the container and
/// its image are still there and it starts. An exited container and an unused image did go.
fn created_container_survives(strategy: &str) {
    let Some(d) = PrivateDockerd::start(&format!("created-{strategy}"), 512, None) else {
        return;
    };
    let app = d.image("app:1", 10);
    let old = d.image("old:1", 10);
    let out = d.docker(&[
        "create",
        "--name",
        "pod1",
        "--network=none",
        "app:1",
        "/busybox",
        "true",
    ]);
    let pod1 = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let exited = d.stopped_container("old:1");
    let cleaner = cleaner_above_high(&d, &format!("strategy = {strategy:?}\n"));
    let (out, err) = cleaner.run_ok(&["once"]);
    let text = format!("stdout:\n{out}\nstderr:\n{err}");

    let containers = d.container_ids();
    assert!(containers.contains(&pod1), "pod1 is gone:\n{text}");
    assert!(d.image_ids().contains(&app), "app:1 is gone:\n{text}");
    let started = d.try_docker(&["start", "--attach", "pod1"]);
    assert!(
        started.status.success(),
        "docker start pod1 after the pass: {}\n{text}",
        String::from_utf8_lossy(&started.stderr)
    );
    // The pass did clean what nothing uses.
    assert!(!containers.contains(&exited), "{text}");
    assert!(!d.image_ids().contains(&old), "{text}");
}

#[test]
fn a_created_container_is_not_removed_and_starts_after_the_pass() {
    created_container_survives("lru");
}

/// Strategy `prune` does what `docker container prune` is for, without its removal of created
/// containers.
#[test]
fn the_prune_strategy_leaves_a_created_container_too() {
    created_container_survives("prune");
}

/// `status` says why the image of a created container stays.
#[test]
fn status_names_the_created_container_that_keeps_an_image() {
    let Some(d) = PrivateDockerd::start("created-status", 512, None) else {
        return;
    };
    d.image("app:1", 10);
    d.docker(&["create", "--name", "pod1", "--network=none", "app:1"]);
    let cleaner = cleaner_above_high(&d, "");
    let (out, _) = cleaner.run_ok(&["status"]);
    assert!(
        out.lines()
            .any(|l| l.contains("app:1") && l.contains("in use by container pod1 (created)")),
        "{out}"
    );
}
