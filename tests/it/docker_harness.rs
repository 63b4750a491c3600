//! Smoke tests of the real-engine harness itself (`util::dockerd`, `util::podman`,
//! `util::loopfs`), not of the cleaner: if these fail, every real-engine test would fail for
//! reasons unrelated to the code under test. Run with `--nocapture` to see the timings.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use crate::util::api;
use crate::util::cli::EngineCli;
use crate::util::dockerd::{PrivateDockerd, leftovers};
use crate::util::loopfs::SharedFs;
use crate::util::podman::PrivatePodman;
use crate::util::require::Service;

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
    // 3 × (20 MiB payload + 1.9 MiB busybox) plus overlay2 metadata, once per copy the store
    // keeps (the containerd image store: the blob and the snapshot).
    let copies = d.copies_per_layer() as f64;
    assert!(
        (64.0 * copies..72.0 * copies).contains(&grown),
        "used grew by {grown:.1} MiB ({copies} copies)"
    );
    let pct_grown = after.used_pct() - before.used_pct();
    assert!(
        (12.0 * copies..16.0 * copies).contains(&pct_grown),
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
        // 20.10 and 28 classic: "(must force)"; the containerd store: "(must be forced)".
        String::from_utf8_lossy(&rm.stderr).contains("must"),
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
    assert!(d.layers_dir().is_dir(), "the layers are dockerd's");
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

/// Two daemons on one filesystem: one disk (the same usage seen from either), two inventories.
#[test]
fn two_dockerds_on_one_filesystem() {
    let Some(fs) = SharedFs::new(Service::Dockerd, "shared", 512, None) else {
        return;
    };
    let t0 = Instant::now();
    let (Some(a), Some(b)) = (
        PrivateDockerd::start_on(&fs, "a"),
        PrivateDockerd::start_on(&fs, "b"),
    ) else {
        return;
    };
    eprintln!("two daemons on one fs: {:?}", t0.elapsed());
    assert_eq!(a.data_root(), fs.mount_point().join("a"));
    assert_eq!(b.data_root(), fs.mount_point().join("b"));
    assert_ne!(a.host(), b.host());

    let before = fs.fs_stat();
    a.image("only-a:1", 20);
    b.image("only-b:1", 5);
    assert_eq!(a.tags(), ["only-a:1"]);
    assert_eq!(b.tags(), ["only-b:1"]);
    assert_eq!(a.fs_stat(), b.fs_stat(), "one filesystem");
    let grown = (fs.fs_stat().used_bytes() - before.used_bytes()) as f64 / MIB;
    // 20 + 5 MiB of payload and two busyboxes (1.9 MiB each) plus overlay2 metadata, once per
    // copy the store keeps.
    let copies = a.copies_per_layer() as f64;
    assert!(
        (28.0 * copies..34.0 * copies).contains(&grown),
        "used grew by {grown:.1} MiB ({copies} copies)"
    );

    // Pressure that belongs to neither engine.
    let (pct, _) = fs.used_pct();
    let foreign = fs.foreign_file("pressure", 100);
    assert!(foreign.starts_with(fs.mount_point()));
    assert!(!foreign.starts_with(a.data_root()) && !foreign.starts_with(b.data_root()));
    let (with_foreign, _) = b.used_pct();
    // 100 MiB of a 486 MiB filesystem (less the 5 % reserve, which root may use).
    assert!(
        (20.0..22.5).contains(&(with_foreign - pct)),
        "{pct:.2} % -> {with_foreign:.2} %"
    );
    fs.remove_foreign_file("pressure");
    assert!((a.used_pct().0 - pct).abs() < 0.5);

    // One engine down, the other one up; the images of the one down still take their space.
    let mut a = a;
    a.stop();
    assert!(!api::ping(&a.socket()) && api::ping(&b.socket()));
    assert_eq!(b.tags(), ["only-b:1"]);
    assert_eq!(a.fs().mount_point(), b.mount_point());
    assert!((b.used_pct().0 - pct).abs() < 0.5);
    a.restart();
    assert_eq!(a.tags(), ["only-a:1"]);

    // The filesystem outlives the handle the test holds: the daemons keep it mounted, and it goes
    // when the last of them does, also when they are dropped while a test panics.
    let dirs = [
        fs.dir().to_path_buf(),
        a.dir().to_path_buf(),
        b.dir().to_path_buf(),
    ];
    drop(fs);
    assert!(api::ping(&a.socket()) && api::ping(&b.socket()));
    a.image("still-there:1", 1);
    let result = catch_unwind(AssertUnwindSafe(move || {
        let b = b;
        let _a = a;
        b.docker(&["no-such-command"]);
    }));
    assert!(result.is_err(), "docker no-such-command must panic");
    for dir in &dirs {
        assert_eq!(leftovers(dir), Vec::<String>::new(), "{}", dir.display());
    }
}

/// What podman 4.3 may create on the machine outside its own dirs, and must not.
fn machine_podman_paths() -> Vec<(&'static str, bool)> {
    [
        "/var/lib/containers",
        "/run/containers",
        "/run/libpod",
        "/dev/shm/libpod_lock",
        "/etc/cni/net.d/87-podman-bridge.conflist",
    ]
    .into_iter()
    .map(|p| (p, Path::new(p).exists()))
    .collect()
}

/// The Podman service: it answers, runs containers, survives being stopped and started, and
/// leaves nothing behind: no mount, process, loop device, dir or cgroup, and nothing in the
/// machine's own Podman paths.
#[test]
fn podman_service_and_teardown() {
    let machine = machine_podman_paths();
    let t0 = Instant::now();
    let Some(mut p) = PrivatePodman::start("service", 256) else {
        return;
    };
    eprintln!("podman service start: {:?}", t0.elapsed());
    assert!(api::ping(&p.socket()));
    let dir = p.dir().to_path_buf();
    let before = p.used_pct().0;
    let t1 = Instant::now();
    let image = p.image("app:1", 5);
    eprintln!("podman import of 5 MiB: {:?}", t1.elapsed());
    assert_eq!(p.image_ids(), std::slice::from_ref(&image));
    assert_eq!(p.tags(), ["localhost/app:1"]);
    assert!(
        p.data_root().join("overlay-images").is_dir(),
        "the storage root is podman's"
    );
    assert!(p.data_root().starts_with(p.fs().mount_point()));
    // 5 MiB of payload and busybox on a 256 MiB filesystem, in Podman's storage only once.
    let grown = p.used_pct().0 - before;
    assert!((2.5..4.0).contains(&grown), "used grew by {grown:.2} %");
    assert_eq!(p.fs_stat(), p.fs().fs_stat());
    let stopped = p.stopped_container("app:1");
    let t2 = Instant::now();
    let running = p.running_container(&image);
    eprintln!("podman run: {:?}", t2.elapsed());
    let state = |p: &PrivatePodman, id: &str| {
        let out = p.podman(&["inspect", "--format", "{{.State.Status}}", id]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        (state(&p, &stopped).as_str(), state(&p, &running).as_str()),
        ("exited", "running")
    );
    let mut both = vec![stopped.clone(), running.clone()];
    both.sort();
    assert_eq!(p.container_ids(), both);
    // The Docker CLI talks to the service.
    let out = p.docker(&["ps", "--quiet", "--no-trunc"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), running);

    p.stop();
    assert!(!api::ping(&p.socket()), "a stopped service does not answer");
    assert_eq!(
        state(&p, &running),
        "running",
        "containers outlive the service"
    );
    p.restart();
    assert!(api::ping(&p.socket()));
    let t3 = Instant::now();
    drop(p);
    eprintln!(
        "podman teardown with a running container: {:?}",
        t3.elapsed()
    );
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    let short = &running[..12];
    let cgroups = crate::util::host::cgroups_named(&[running.clone(), stopped.clone()]);
    assert!(cgroups.is_empty(), "{short}: {cgroups:?}");
    assert_eq!(
        machine_podman_paths(),
        machine,
        "the machine's Podman paths are untouched"
    );
}
