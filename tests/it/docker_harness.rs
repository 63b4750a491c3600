//! Smoke tests of the private-dockerd harness itself (`util::dockerd`), not of the cleaner:
//! if these fail, every real-Docker test would fail for reasons unrelated to the code under test.
//! Run with `--nocapture` to see the start and teardown timings.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::util::dockerd::{PrivateDockerd, leftovers};

const MIB: f64 = 1024.0 * 1024.0;

fn state(d: &PrivateDockerd, container: &str) -> String {
    let out = d.docker(&["inspect", "--format", "{{.State.Status}}", container]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn images_containers_and_disk_usage() {
    let t0 = Instant::now();
    let Some(d) = PrivateDockerd::start("images", 512, None) else {
        return;
    };
    eprintln!("start: {:?}", t0.elapsed());
    let dir = d.dir().to_path_buf();
    let before = d.fs_stat();
    let size_mib = (before.blocks * before.block_bytes) as f64 / MIB;
    assert!((480.0..512.0).contains(&size_mib), "{before:?}");

    let ids: Vec<String> = ["app-a:1", "app-b:1", "app-c:1"]
        .iter()
        .map(|t| d.image(t, 20))
        .collect();
    let after = d.fs_stat();
    let grown = (after.used_bytes() - before.used_bytes()) as f64 / MIB;
    // 3 × (20 MiB payload + 1.9 MiB busybox) plus overlay2 metadata.
    assert!((64.0..72.0).contains(&grown), "used grew by {grown:.1} MiB");
    let pct_grown = after.used_pct() - before.used_pct();
    assert!(
        (12.0..16.0).contains(&pct_grown),
        "used grew by {pct_grown:.2} %"
    );
    assert_eq!(d.tags(), ["app-a:1", "app-b:1", "app-c:1"]);

    let dangling = d.dangling_image(1);
    assert!(!ids.contains(&dangling));
    let out = d.docker(&[
        "images",
        "--quiet",
        "--no-trunc",
        "--filter",
        "dangling=true",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), dangling);
    let mut all = ids.clone();
    all.push(dangling);
    all.sort();
    assert_eq!(d.image_ids(), all);
    assert_eq!(d.tags().len(), 3, "the dangling image has no tag");

    let stopped = d.stopped_container("app-a:1");
    let created = d.created_container("app-b:1");
    let running = d.running_container("app-c:1");
    assert_eq!(state(&d, &stopped), "exited");
    assert_eq!(state(&d, &created), "created");
    assert_eq!(state(&d, &running), "running");
    let mut containers = vec![stopped.clone(), created, running];
    containers.sort();
    assert_eq!(d.container_ids(), containers);
    // What the cleaner will meet: an image of a stopped container cannot be removed unforced.
    let rm = d.try_docker(&["rmi", "app-a:1"]);
    assert!(!rm.status.success());
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("must force"),
        "{rm:?}"
    );
    d.docker(&["rm", &stopped]);
    d.docker(&["rmi", "app-a:1"]);
    assert!(!d.image_ids().contains(&ids[0]));

    let t1 = Instant::now();
    drop(d);
    eprintln!("teardown with a running container: {:?}", t1.elapsed());
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn small_inode_filesystem() {
    let t0 = Instant::now();
    let Some(d) = PrivateDockerd::start("inodes", 512, Some(4096)) else {
        return;
    };
    eprintln!("start with -N 4096: {:?}", t0.elapsed());
    let before = d.fs_stat();
    assert_eq!(before.files, 4096);
    let (_, inodes_before) = d.used_pct();
    let id = d.image_with_files("many-files:1", 1000);
    let (_, inodes_after) = d.used_pct();
    // 1000 files and their dir, in the layer's diff dir; a few more for overlay2's bookkeeping.
    let grown = inodes_after - inodes_before;
    assert!(
        (24.4..26.0).contains(&grown),
        "inodes used grew by {grown:.2} %"
    );
    let c = d.stopped_container(&id);
    assert!(d.container_ids().contains(&c));
    let dir = d.dir().to_path_buf();
    let t1 = Instant::now();
    drop(d);
    eprintln!("teardown without running containers: {:?}", t1.elapsed());
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn filler_and_restart() {
    let Some(mut d) = PrivateDockerd::start("restart", 256, None) else {
        return;
    };
    let image = d.image("keep:1", 5);
    let container = d.running_container(&image);

    d.fill_to(80.0);
    let (used, _) = d.used_pct();
    assert!((80.0..81.0).contains(&used), "used {used:.2} %");
    assert!(d.mount_point().join("filler").is_file());
    assert!(
        d.data_root().join("overlay2").is_dir(),
        "the data root is dockerd's"
    );
    assert!(
        !d.data_root().join("filler").exists(),
        "the filler is outside Docker's dirs"
    );
    d.fill_to(50.0);
    assert!(d.used_pct().0 < 81.0, "fill_to never shrinks");
    d.clear_filler();
    assert!(d.used_pct().0 < 20.0);

    let t = Instant::now();
    d.restart();
    eprintln!("restart with a running container: {:?}", t.elapsed());
    assert!(d.log_path().is_file());
    assert_eq!(d.image_ids(), [image]);
    assert_eq!(
        state(&d, &container),
        "exited",
        "dockerd stops containers on SIGTERM"
    );
    d.docker(&["start", &container]);
    assert_eq!(state(&d, &container), "running");
    assert!(d.host().starts_with("unix:///tmp/dic-it-"));
}

#[test]
fn teardown_after_a_panic_leaves_nothing() {
    let Some(d) = PrivateDockerd::start("panics", 128, None) else {
        return;
    };
    let dir = d.dir().to_path_buf();
    // `d` moves into the closure: the panic drops it while unwinding, as in a failing test.
    let result = catch_unwind(AssertUnwindSafe(move || {
        let image = d.image("doomed:1", 1);
        d.running_container(&image);
        d.docker(&["no-such-command"]);
    }));
    let message = result.expect_err("docker no-such-command must panic");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("docker no-such-command failed"),
        "{message}"
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}
