//! A pass while the node is busy, against a real private dockerd: containers created and not yet
//! started (`docker create` then `start`, as the kubelet drives cri-dockerd), and builds in
//! progress. Each test is a real pass above the high watermark with `min_age_seconds = 0` and
//! asserts what a user sees: the container starts after the pass, the build succeeds, and what
//! was not in use did go (so the pass really ran).

use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::daemon::Daemon;
use crate::util::dockerd::{BUSYBOX, DOCKER_CLI, PrivateDockerd};
use crate::util::interpose::{Interposer, Trap};
use crate::util::wait_until;

/// Numbers the build contexts of this test process.
static NEXT_CONTEXT: AtomicU64 = AtomicU64::new(0);
/// Bound of a daemon's start and stop.
const MINUTE: Duration = Duration::from_secs(60);

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
    assert!(out.contains("default: containers (1 created)"), "{out}");
}

/// A build context in `d`'s temp dir (not on its loop filesystem): `Dockerfile`, `/busybox`, and
/// `payload`, `payload_kib` KiB that differ from every other context's.
fn context(d: &PrivateDockerd, dockerfile: &str, payload_kib: usize) -> PathBuf {
    let n = NEXT_CONTEXT.fetch_add(1, Ordering::Relaxed);
    let dir = d.dir().join(format!("legacy-{n}"));
    fs::create_dir_all(&dir).expect("context dir");
    fs::copy(BUSYBOX, dir.join("busybox")).expect("busybox into the context");
    let mut payload = format!("context {n} of process {}\n", std::process::id()).into_bytes();
    payload.resize(payload_kib * 1024, b'x');
    fs::write(dir.join("payload"), payload).expect("payload");
    fs::write(dir.join("Dockerfile"), dockerfile).expect("Dockerfile");
    dir
}

/// `docker build` with the classic (legacy) builder, `DOCKER_BUILDKIT=0`, and `args` before the
/// context; whatever happened.
fn legacy_build(d: &PrivateDockerd, ctx: &std::path::Path, args: &[&str]) -> Output {
    let ctx = ctx.display().to_string();
    let mut all = vec!["build", "--network=none"];
    all.extend_from_slice(args);
    all.push(&ctx);
    d.try_docker_env(&all, &[("DOCKER_BUILDKIT", "0")])
}

/// A classic build stopped between two of its steps, as a pass finds it: the last step's image
/// is untagged, has the previous step as its parent, was made a moment ago, and no container
/// uses it yet (the next step's is about to be created from it). Built here as a build of one
/// step without a tag, then a pass with `min_age_seconds = 0`: the image stays and the next
/// step's container can be created from it; an imported dangling image and an unused image go.
fn build_step_survives(strategy: &str) {
    let Some(d) = PrivateDockerd::start(&format!("build-step-{strategy}"), 512, None) else {
        return;
    };
    d.image("base:1", 1);
    let ctx = context(
        &d,
        "FROM base:1\nRUN [\"/busybox\", \"sh\", \"-c\", \"echo 1 > /step\"]\n",
        1,
    );
    let iid = ctx.join("iid");
    let iid_arg = iid.display().to_string();
    let out = legacy_build(&d, &ctx, &["--iidfile", &iid_arg]);
    assert!(
        out.status.success(),
        "legacy build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step = fs::read_to_string(&iid)
        .expect("iidfile")
        .trim()
        .to_string();
    assert!(step.starts_with("sha256:"), "{step}");
    // Small enough that pruning it leaves usage above high (on the containerd store its
    // bytes count twice, blob and snapshot): strategy `prune` then goes on to `old:1`.
    let imported = d.dangling_image(0);
    let old = d.image("old:1", 10);
    let cleaner = cleaner_above_high(&d, &format!("strategy = {strategy:?}\n"));
    let (out, err) = cleaner.run_ok(&["once"]);
    let text = format!("stdout:\n{out}\nstderr:\n{err}");

    assert!(
        d.image_ids().contains(&step),
        "the build's step is gone:\n{text}"
    );
    let next = d.try_docker(&["create", "--network=none", &step, "/busybox", "true"]);
    assert!(
        next.status.success(),
        "the next step's container: {}\n{text}",
        String::from_utf8_lossy(&next.stderr)
    );
    let left = d.image_ids();
    assert!(!left.contains(&imported) && !left.contains(&old), "{text}");
}

#[test]
fn the_newest_step_of_a_build_in_progress_survives_a_pass() {
    build_step_survives("lru");
}

#[test]
fn the_prune_strategy_spares_a_build_in_progress_too() {
    build_step_survives("prune");
}

/// A burst of classic builds (`DOCKER_BUILDKIT=0`) on a disk above the high watermark, with the
/// daemon running (`min_age_seconds = 0`, a pass at every tick and at every build and container
/// create): no build fails, and the passes kept removing what nothing uses meanwhile (the
/// unused images at once, each finished build's image afterwards).
#[test]
fn a_burst_of_legacy_builds_above_high_all_succeed() {
    const BUILDERS: usize = 6;
    const ROUNDS: usize = 3;
    let Some(d) = PrivateDockerd::start("build-burst", 2048, None) else {
        return;
    };
    d.image("base:1", 1);
    let unused: Vec<String> = (0..6)
        .map(|i| d.image(&format!("unused-{i}:1"), 5))
        .collect();
    // Well above high for the whole burst: every pass removes all it may.
    d.fill_to(55.0);
    let cleaner = Cleaner::new(
        &d,
        // The builds' base is kept by a rule: a pass may remove it before a build starts.
        "threshold_high = 50\nthreshold_low = 1\ninterval_seconds = 1\nkeep = [\"^base:\"]\n",
    );
    // As from a shell: a notify socket nobody reads while the builds run would fill up.
    let mut daemon = Daemon::plain(cleaner.command(&["run"]));
    let gone = |ids: &[String]| {
        let left = d.image_ids();
        ids.iter().all(|u| !left.contains(u))
    };
    assert!(
        wait_until(MINUTE, || gone(&unused)),
        "the first pass did not remove the unused images:\n{}",
        daemon.context()
    );

    let dockerfile = "FROM base:1\nENV STEP=1\n\
        RUN [\"/busybox\", \"sh\", \"-c\", \"echo a > /a\"]\n\
        COPY payload /payload\n\
        LABEL step=4\n\
        RUN [\"/busybox\", \"sh\", \"-c\", \"echo b > /b\"]\n\
        COPY Dockerfile /Dockerfile\n\
        RUN [\"/busybox\", \"true\"]\n";
    let results: Vec<(String, Result<String, String>)> = std::thread::scope(|s| {
        let builders: Vec<_> = (0..BUILDERS)
            .map(|b| {
                let d = &d;
                s.spawn(move || {
                    let mut results = Vec::new();
                    for r in 0..ROUNDS {
                        let ctx = context(d, dockerfile, 32 * 1024);
                        let iid = ctx.join("iid");
                        let iid_arg = iid.display().to_string();
                        let tag = format!("built-{b}-{r}:1");
                        let out = legacy_build(d, &ctx, &["--tag", &tag, "--iidfile", &iid_arg]);
                        let result = if out.status.success() {
                            Ok(fs::read_to_string(&iid)
                                .unwrap_or_default()
                                .trim()
                                .to_string())
                        } else {
                            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
                        };
                        results.push((tag, result));
                        let _ = fs::remove_dir_all(&ctx);
                    }
                    results
                })
            })
            .collect();
        builders
            .into_iter()
            .flat_map(|b| b.join().expect("a builder thread panicked"))
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(tag, r)| r.as_ref().err().map(|e| format!("{tag}: {e}")))
        .collect();
    let built: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    // Nothing uses the finished builds' images: the passes go on removing them.
    let cleaned = wait_until(MINUTE, || gone(&built));
    daemon.signal("TERM");
    let status = daemon.wait_exit(MINUTE);
    assert!(
        failures.is_empty(),
        "{} of {} builds failed:\n{}\n{}",
        failures.len(),
        BUILDERS * ROUNDS,
        failures.join("\n"),
        daemon.context()
    );
    assert!(cleaned, "the built images stayed:\n{}", daemon.context());
    assert_eq!(status.code(), Some(0), "{}", daemon.context());
}

/// A classic build takes a step from the build cache, an untagged image whose only child is
/// the last build's result (tagged `app:1`), and copies a large file on top of it. A pass
/// removes `app:1` meanwhile: the cached step must stay (Docker would delete it with `app:1`
/// as a parent left without children), and the build succeeds. The removal is made to happen
/// while the copy runs: the interposer holds the cleaner's `DELETE` of `app:1` until the
/// build has said it is at that step.
#[test]
fn a_cached_step_in_use_by_a_build_survives_the_removal_of_its_child() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    let Some(d) = PrivateDockerd::start("build-cache-hit", 1024, None) else {
        return;
    };
    d.image("base:1", 1);
    let first =
        "FROM base:1\nRUN [\"/busybox\", \"sh\", \"-c\", \"echo a > /a\"]\nCOPY payload /payload\n";
    let ctx = context(&d, first, 1);
    let out = legacy_build(&d, &ctx, &["--tag", "app:1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = String::from_utf8_lossy(
        &d.docker(&["image", "inspect", "--format", "{{.Id}}", "app:1"])
            .stdout,
    )
    .trim()
    .to_string();
    // The same first steps (taken from the cache), then a copy that takes a moment.
    let second =
        "FROM base:1\nRUN [\"/busybox\", \"sh\", \"-c\", \"echo a > /a\"]\nCOPY payload /big\n";
    let big = context(&d, second, 192 * 1024);

    let proxy = Interposer::new(&d);
    let (used, _) = d.used_pct();
    let high = (used - 1.0).floor();
    let cleaner = Cleaner::for_host(
        &proxy.host(),
        d.data_root(),
        &format!("threshold_high = {high}\nthreshold_low = 1\nkeep = [\"^base:\"]\n"),
    );
    let build = Mutex::new(None);
    let served = proxy
        .trap(Trap::new(
            "build at its copy",
            |r| r.image_delete().as_deref() == Some(app.as_str()),
            |d| {
                let mut child = Command::new(DOCKER_CLI)
                    .arg("--config")
                    .arg(d.dir().join("cli"))
                    .arg("--host")
                    .arg(d.host())
                    .args(["build", "--network=none", "--tag", "app:2"])
                    .arg(&big)
                    .env("DOCKER_BUILDKIT", "0")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("docker build");
                let stdout = child.stdout.take().expect("stdout");
                let mut lines = BufReader::new(stdout).lines();
                let mut seen = Vec::new();
                for line in lines.by_ref() {
                    let line = line.expect("build output");
                    let at_copy = line.starts_with("Step 3/3 : COPY");
                    seen.push(line);
                    if at_copy {
                        break;
                    }
                }
                assert!(
                    seen.iter().any(|l| l.contains("Using cache")),
                    "the second build took its step from the cache: {seen:?}"
                );
                *build.lock().expect("lock") = Some((child, lines, seen));
            },
        ))
        .serve(|| cleaner.run_ok(&["once"]));
    served.assert_fired("build at its copy");
    let (mut child, lines, mut seen) = build.into_inner().expect("lock").expect("the build ran");
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().expect("wait for the build");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let (out, log) = &served.value;
    // Docker 28's containerd image store has a race of its own: a classic build's cache probe
    // reads every child of the cached step, and fails "unable to find image" when one of them
    // (here app:1) is removed meanwhile, whoever removes it. The step itself must have stayed.
    let cached_step = seen
        .iter()
        .skip_while(|l| !l.contains("Using cache"))
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("---> "))
        .map(|short| format!("sha256:{short}"));
    let step_stayed = cached_step
        .is_some_and(|step| d.image_ids().iter().any(|id| id.starts_with(step.as_str())));
    let sibling_race = d.containerd_root().is_some()
        && err.contains(&format!("unable to find image \"{app}\""))
        && step_stayed;
    assert!(
        status.success() || sibling_race,
        "the build failed: {err}\n{}\nstdout:\n{out}\nstderr:\n{log}",
        seen.join("\n")
    );
    assert!(!d.image_ids().contains(&app), "app:1 was removed:\n{log}");
}
