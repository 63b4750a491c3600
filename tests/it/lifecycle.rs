//! The daemon as systemd runs it: the built binary with a fake `NOTIFY_SOCKET` and a
//! `WATCHDOG_USEC`, against the fake Kubernetes API server and (for the passes) a private dockerd.
//! What is asserted is what an operator notices: `READY=1`, `STATUS=`, regular watchdog pings,
//! `STOPPING=1`, exit codes, and a node that is never left cordoned.
//!
//! Every test synchronises on notify messages, on requests the fake API server recorded or on the
//! node's state there; windows of time appear only where an absence is asserted (no `READY=1`
//! after an invalid reload) or a rate is (pings per second).
//!
//! Cost: the tests at the top need no Docker and take a few seconds each. The ones in
//! [`with_dockerd`] start a private dockerd each (a few seconds, plus 5 s for the two that wait out
//! a hanging API request); select them with `lifecycle::with_dockerd`, or skip them with
//! `--skip with_dockerd`.

use std::fs;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use docker_image_cleaner::node::ANNOTATION;
use serde_json::{Value, json};

use crate::kube_fake::FakeKube;
use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::daemon::Daemon;
use crate::util::wait_until;

const NODE: &str = "n1";
/// Watchdog of most tests: pings every 200 ms.
const WATCHDOG: Duration = Duration::from_millis(400);
/// Bound of anything that should happen "soon" (start, a status change, a clean stop).
const SOON: Duration = Duration::from_secs(20);
/// Exit code of an instance refused because another holds the lock (EX_TEMPFAIL).
const EXIT_LOCKED: i32 = 75;

/// `run` of `cleaner` as a service with the default test watchdog.
fn run(cleaner: &Cleaner) -> Daemon {
    Daemon::service(cleaner.command(&["run"]), Some(WATCHDOG))
}

/// The TOML lines that turn cordoning on for [`NODE`] through `fake`.
fn node_toml(fake: &FakeKube) -> String {
    format!(
        "node_name = {NODE:?}\nkubeconfig = {:?}\n",
        fake.kubeconfig().display().to_string()
    )
}

fn cordoned(node: &Value) -> bool {
    node.pointer("/spec/unschedulable") == Some(&json!(true))
}

fn has_our_annotation(node: &Value) -> bool {
    node.pointer("/metadata/annotations")
        .and_then(|a| a.get(ANNOTATION))
        .is_some()
}

/// The node is schedulable and carries no annotation of ours.
fn assert_uncordoned(fake: &FakeKube, context: &str) {
    let node = fake.node(NODE);
    assert!(
        !cordoned(&node) && !has_our_annotation(&node),
        "the node must be left uncordoned: {node}\n{context}"
    );
}

/// PATCHes on the node recorded so far.
fn node_patches(fake: &FakeKube) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.is_node(NODE) && r.method == "PATCH")
        .count()
}

/// A Docker endpoint nobody listens on, and a path to watch, for tests that need no Docker.
fn no_docker(fake: &FakeKube) -> (String, &Path) {
    let socket = fake.dir().join("no-docker.sock");
    (format!("unix://{}", socket.display()), fake.dir())
}

#[test]
fn a_second_instance_is_refused_at_once_while_the_first_runs() {
    let fake = FakeKube::start();
    let (host, path) = no_docker(&fake);
    let cleaner = Cleaner::for_host(&host, path, "");
    let mut first = run(&cleaner);
    first.ready(SOON);
    // The lock is an flock on the state directory itself: no file of its own.
    let locked = cleaner.state_dir();

    for args in [["run"], ["once"]] {
        let started = Instant::now();
        let mut second = Daemon::service(cleaner.command(&args), Some(WATCHDOG));
        let status = second.wait_exit(SOON);
        let took = started.elapsed();
        let err = second.log();
        assert_eq!(
            status.code(),
            Some(EXIT_LOCKED),
            "a second `{}` must exit 75: {err}",
            args[0]
        );
        assert!(
            took < Duration::from_secs(5),
            "refused at once, not after {took:?}"
        );
        assert!(
            err.contains(&format!("holds the lock on {}", locked.display())),
            "the message must name the locked directory {}: {err}",
            locked.display()
        );
        // It has exited: anything it sent is already queued on the socket.
        assert!(
            second.notify.recv(Duration::from_millis(50)).is_none(),
            "the refused instance must not notify systemd: {}",
            second.notify.transcript()
        );
    }

    assert!(
        !locked.join("lock").exists(),
        "taking the lock needs no new file (a full filesystem must not stop the cleaner)"
    );

    // The first one never noticed: it still runs and still pings.
    assert!(first.running(), "{}", first.context());
    first.wait_line("WATCHDOG=1", SOON);
    first.terminate(SOON);
}

#[test]
fn sighup_applies_a_valid_file_and_keeps_the_running_configuration_on_an_invalid_one() {
    let fake = FakeKube::start();
    // A cordon of ours left behind: lifting it shows that the node settings took effect.
    fake.add_node(
        NODE,
        json!({
            "metadata": { "annotations": { ANNOTATION: "2026-11-27T23:00:00Z" } },
            "spec": { "unschedulable": true },
        }),
    );
    let (host, path) = no_docker(&fake);
    let cleaner = Cleaner::for_host(&host, path, "interval_seconds = 1\n");
    let original = fs::read_to_string(cleaner.config_path()).expect("config");
    let mut d = run(&cleaner);
    d.ready(SOON);
    d.wait_status("waiting for Docker", SOON);

    // Invalid: cordoning on, but an impossible watermark. Nothing of it may be applied.
    fs::write(
        cleaner.config_path(),
        format!("{original}{}threshold_high = 120\n", node_toml(&fake)),
    )
    .expect("write config");
    d.signal("HUP");
    let after = d.notify.collect_for(Duration::from_secs(2));
    let still_running = d.running();
    let shown = format!("after the invalid SIGHUP:\n{}", d.context());
    assert!(
        !after
            .iter()
            .any(|m| m.has("READY=1") || m.has("RELOADING=1")),
        "no RELOADING=1/READY=1 for an invalid file; {shown}"
    );
    let pings = after.iter().filter(|m| m.is_ping()).count();
    assert!(
        pings >= 4,
        "the watchdog goes on ({pings} pings in 2 s); {shown}"
    );
    assert!(still_running, "{shown}");
    assert!(
        fake.requests().is_empty(),
        "the invalid file's node settings must not be used; {shown}"
    );

    // Valid: the same node settings with sane watermarks.
    fs::write(
        cleaner.config_path(),
        format!("{original}{}", node_toml(&fake)),
    )
    .expect("write config");
    d.signal("HUP");
    let reloading = d.wait_line("RELOADING=1", SOON);
    assert!(
        reloading
            .lines
            .iter()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC=:\n{}",
        d.context()
    );
    let ready = d.wait_line("READY=1", SOON);
    assert_eq!(
        ready.status(),
        Some("configuration reloaded"),
        "{}",
        d.context()
    );
    assert!(
        wait_until(SOON, || !cordoned(&fake.node(NODE))),
        "after the reload the leftover cordon is lifted on the next tick:\n{}",
        d.context()
    );
    assert_uncordoned(&fake, &d.context());
    d.terminate(SOON);
    assert!(
        d.log().contains("threshold_high"),
        "the rejected file's error is logged with the key:\n{}",
        d.log()
    );
}

/// Accepts connections on a unix socket and holds them open without ever answering.
struct SilentSocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl SilentSocket {
    fn start() -> SilentSocket {
        let dir = tempfile::Builder::new()
            .prefix("dic-silent-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held: Vec<UnixStream> = Vec::new();
            for conn in listener.incoming() {
                // `stop` wakes the blocking accept with a connection of its own.
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    held.push(conn);
                }
            }
            held.len()
        });
        SilentSocket {
            _dir: dir,
            path,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting; returns how many connections were held.
    fn finish(mut self) -> usize {
        self.stop_thread().unwrap_or_default()
    }

    fn stop_thread(&mut self) -> Option<usize> {
        let thread = self.thread.take()?;
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        thread.join().ok()
    }
}

impl Drop for SilentSocket {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[test]
fn a_docker_that_never_answers_neither_stops_the_watchdog_nor_hangs_shutdown() {
    let silent = SilentSocket::start();
    let watched = tempfile::tempdir().expect("temp dir");
    let cleaner = Cleaner::for_host(
        &format!("unix://{}", silent.path.display()),
        watched.path(),
        "timeout_seconds = 2\ninterval_seconds = 1\n",
    );
    // A watchdog of 1 s: pings every 500 ms; systemd would kill us after a 1 s gap.
    let watchdog = Duration::from_secs(1);
    let mut d = Daemon::service(cleaner.command(&["run"]), Some(watchdog));
    d.ready(SOON);
    // Three ticks whose Docker calls timed out.
    for _ in 0..3 {
        d.wait_status("waiting for Docker", Duration::from_secs(30));
    }
    let pings: Vec<Instant> = d
        .notify
        .received()
        .iter()
        .filter(|m| m.is_ping())
        .map(|m| m.at)
        .collect();
    assert!(pings.len() >= 8, "too few pings:\n{}", d.context());
    let worst = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        worst < watchdog,
        "a gap of {worst:?} between pings exceeds the watchdog interval:\n{}",
        d.context()
    );
    // Stop while a call to the silent socket is in flight.
    d.wait_status("checking", Duration::from_secs(30));
    let took = d.terminate(SOON);
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with a Docker call hanging:\n{}",
        d.context()
    );
    let held = silent.finish();
    assert!(
        held >= 3,
        "the daemon must have tried Docker: {held} connections"
    );
}

/// Scenarios with a cleaning pass against a private dockerd.
mod with_dockerd {
    use super::*;
    use crate::util::dockerd::PrivateDockerd;

    /// Watermarks that make a pass start now and never stop early: high just under the current
    /// usage, low 0.
    fn must_clean(d: &PrivateDockerd) -> String {
        let (used, _) = d.used_pct();
        let high = (used - 1.0).floor();
        assert!(high >= 1.0, "setup: usage {used}% too low to start a pass");
        format!("threshold_high = {high}\nthreshold_low = 0\n")
    }

    /// A fake API server with a schedulable [`NODE`].
    fn fake_with_node() -> FakeKube {
        let fake = FakeKube::start();
        fake.add_node(NODE, json!({}));
        fake
    }

    /// A fake API server with [`NODE`] and a cleaner whose next pass must clean, cordoning it.
    fn cleaner_that_must_cordon(d: &PrivateDockerd) -> (FakeKube, Cleaner) {
        let fake = fake_with_node();
        let cleaner = Cleaner::new(d, &format!("{}{}", must_clean(d), node_toml(&fake)));
        (fake, cleaner)
    }

    /// `img-0:1` … `img-{n-1}:1`, `mib` MiB each.
    fn images(d: &PrivateDockerd, n: usize, mib: u64) -> Vec<String> {
        (0..n)
            .map(|i| d.image(&format!("img-{i}:1"), mib))
            .collect()
    }

    /// The `[tag]` a `remove image … [tag], …` status names.
    fn tag_in(status: &str) -> String {
        let start = status.find('[').expect("a tag in the step");
        let end = status[start..].find(']').expect("closing bracket") + start;
        status[start + 1..end].to_string()
    }

    /// The request that hangs is the `n`th, a PATCH of the node, and nothing followed it.
    fn assert_hangs_on_last(fake: &FakeKube, n: usize, d: &Daemon) {
        let requests = fake.requests();
        let calls: Vec<String> = requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            requests.len() == n
                && requests[n - 1].is_node(NODE)
                && requests[n - 1].method == "PATCH",
            "request {n} must be the PATCH that hangs: {calls:?}\n{}",
            d.context()
        );
        assert_eq!(fake.faults_left(), 0);
    }

    /// The pass ended interrupted: its last status says so.
    fn expect_interrupted(d: &Daemon) {
        assert!(
            d.statuses()
                .iter()
                .any(|s| s.contains("interrupted by shutdown")),
            "the pass must stop at the next step boundary:\n{}",
            d.context()
        );
    }

    #[test]
    fn ready_status_watchdog_and_a_clean_stop_when_idle() {
        let Some(dockerd) = PrivateDockerd::start("lc-idle", 512, None) else {
            return;
        };
        let fake = fake_with_node();
        let cleaner = Cleaner::new(
            &dockerd,
            &format!(
                "threshold_high = 99\nthreshold_low = 98\n{}",
                node_toml(&fake)
            ),
        );
        let mut d = run(&cleaner);
        let first = d.ready(SOON);
        assert_eq!(first.status(), Some("starting"), "{}", d.context());

        let idle = d.wait_status("idle: ", SOON);
        let idle = idle.status().unwrap_or_default().to_string();
        assert!(
            idle.contains(&dockerd.data_root().display().to_string())
                && idle.contains("last pass: below the high watermark"),
            "idle with usage figures and the last result: {idle}"
        );
        let statuses = d.statuses();
        let checking = statuses.iter().position(|s| s == "checking");
        let last = statuses.iter().position(|s| *s == idle);
        assert!(
            checking.is_some() && checking < last,
            "the status moves starting → checking → idle: {statuses:?}"
        );

        let window = d.notify.collect_for(Duration::from_secs(3));
        let pings = window.iter().filter(|m| m.is_ping()).count();
        assert!(
            pings >= 5,
            "{pings} watchdog pings in 3 s with WATCHDOG_USEC=400000:\n{}",
            d.context()
        );

        d.terminate(SOON);
        assert_uncordoned(&fake, &d.context());
        assert_eq!(
            node_patches(&fake),
            0,
            "idle: the node is never touched:\n{}",
            d.context()
        );
    }

    #[test]
    fn sigterm_while_removing_containers_finishes_that_removal_and_uncordons() {
        let Some(dockerd) = PrivateDockerd::start("lc-containers", 512, None) else {
            return;
        };
        dockerd.image("base:1", 1);
        let containers: Vec<String> = (0..2)
            .map(|_| dockerd.stopped_container("base:1"))
            .collect();
        images(&dockerd, 3, 10);
        let (fake, cleaner) = cleaner_that_must_cordon(&dockerd);
        let mut d = run(&cleaner);
        d.ready(SOON);
        let step = d.wait_for("a container removal", SOON, |m| {
            m.status().is_some_and(|s| {
                s.starts_with("cleaning: step 1 of") && s.contains("remove container")
            })
        });
        d.terminate(SOON);

        let context = d.context();
        expect_interrupted(&d);
        assert_uncordoned(&fake, &context);
        assert!(
            node_patches(&fake) >= 2,
            "cordoned, then released:\n{context}"
        );
        // The removal in flight finished.
        let status = step.status().unwrap_or_default();
        let left = dockerd.container_ids();
        let removed: Vec<&String> = containers
            .iter()
            .filter(|c| status.contains(&c[..12]))
            .collect();
        assert_eq!(
            removed.len(),
            1,
            "step 1 names one of {containers:?}: {status}"
        );
        assert!(
            !left.contains(removed[0]),
            "{status}: still there\n{context}"
        );
        // No new removal started after the signal; with three more image steps queued, a
        // finished pass would have taken them all.
        let tags = dockerd.tags();
        assert!(
            (0..3).any(|i| tags.contains(&format!("img-{i}:1"))),
            "images survive a stop during the container steps: {tags:?}\n{context}"
        );
    }

    #[test]
    fn sigterm_while_removing_images_finishes_that_removal_and_uncordons() {
        let Some(dockerd) = PrivateDockerd::start("lc-images", 512, None) else {
            return;
        };
        images(&dockerd, 4, 10);
        let (fake, cleaner) = cleaner_that_must_cordon(&dockerd);
        let mut cmd = cleaner.command(&["run"]);
        // A long pause between image removals: the stop must cut it short.
        cmd.env("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "60");
        let mut d = Daemon::service(cmd, Some(WATCHDOG));
        d.ready(SOON);
        let step = d.wait_for("an image removal", SOON, |m| {
            m.status()
                .is_some_and(|s| s.starts_with("cleaning: step 1 of") && s.contains("remove image"))
        });
        assert!(
            cordoned(&fake.node(NODE)),
            "cordoned during the pass:\n{}",
            d.context()
        );
        let took = d.terminate(SOON);

        let context = d.context();
        expect_interrupted(&d);
        assert_uncordoned(&fake, &context);
        let gone = tag_in(step.status().unwrap_or_default());
        let mut expected: Vec<String> = (0..4)
            .map(|i| format!("img-{i}:1"))
            .filter(|t| *t != gone)
            .collect();
        expected.sort();
        assert_eq!(
            dockerd.tags(),
            expected,
            "exactly the image in flight ({gone}) is removed, no other:\n{context}"
        );
        assert!(
            took < Duration::from_secs(15),
            "the pause was not cut short: {took:?}"
        );
    }

    #[test]
    fn sigterm_while_the_cordon_patch_hangs_stops_cleanly_without_removing() {
        let Some(dockerd) = PrivateDockerd::start("lc-cordoning", 512, None) else {
            return;
        };
        let ids = images(&dockerd, 2, 10);
        let (fake, cleaner) = cleaner_that_must_cordon(&dockerd);
        // The node requests are: the recovery GET at start, then the pass's GET and PATCH.
        fake.fail_next(2, crate::kube_fake::Fault::Pass);
        fake.fail_next(1, crate::kube_fake::Fault::Hang);
        let mut d = run(&cleaner);
        d.ready(SOON);
        assert!(
            wait_until(SOON, || node_patches(&fake) == 1),
            "the cordon PATCH must arrive:\n{}",
            d.context()
        );
        assert_hangs_on_last(&fake, 3, &d);
        // The client's request timeout (5 s) ends the hanging PATCH.
        d.terminate(Duration::from_secs(30));

        let context = d.context();
        assert_uncordoned(&fake, &context);
        let left = dockerd.image_ids();
        assert!(
            ids.iter().all(|id| left.contains(id)),
            "a stop asked for before the first removal removes nothing:\n{context}"
        );
    }

    #[test]
    fn sigterm_while_the_uncordon_patch_hangs_still_uncordons() {
        let Some(dockerd) = PrivateDockerd::start("lc-uncordoning", 512, None) else {
            return;
        };
        images(&dockerd, 2, 10);
        let (fake, cleaner) = cleaner_that_must_cordon(&dockerd);
        // Recovery GET; the pass's GET and PATCH; the release's GET; its PATCH hangs.
        fake.fail_next(4, crate::kube_fake::Fault::Pass);
        fake.fail_next(1, crate::kube_fake::Fault::Hang);
        let mut d = run(&cleaner);
        d.ready(SOON);
        assert!(
            wait_until(SOON, || node_patches(&fake) == 2),
            "the release PATCH must arrive:\n{}",
            d.context()
        );
        assert_hangs_on_last(&fake, 5, &d);
        assert!(cordoned(&fake.node(NODE)), "still cordoned while it hangs");
        d.terminate(Duration::from_secs(30));

        assert_uncordoned(&fake, &d.context());
    }

    #[test]
    fn sigkill_mid_pass_leaves_a_cordon_that_the_next_start_lifts() {
        let Some(dockerd) = PrivateDockerd::start("lc-sigkill", 512, None) else {
            return;
        };
        images(&dockerd, 3, 10);
        let (fake, cleaner) = cleaner_that_must_cordon(&dockerd);
        let mut cmd = cleaner.command(&["run"]);
        // The pass pauses after its first removal, cordoned: that is where it dies.
        cmd.env("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "60");
        let mut first = Daemon::service(cmd, Some(WATCHDOG));
        first.ready(SOON);
        first.wait_status("cleaning: step 1 of", SOON);
        let node = fake.node(NODE);
        assert!(
            cordoned(&node) && has_our_annotation(&node),
            "cordoned by us mid-pass: {node}\n{}",
            first.context()
        );
        first.signal("KILL");
        let status = first.wait_exit(SOON);
        assert_eq!(status.signal(), Some(9), "{}", first.context());
        assert!(
            cordoned(&fake.node(NODE)),
            "SIGKILL leaves the cordon behind"
        );

        // Restarted with watermarks that need no pass, so only the recovery touches the node.
        let seen = fake.requests().len();
        let mut cmd = cleaner.command(&["run"]);
        cmd.env("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "99");
        cmd.env("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", "98");
        let mut second = Daemon::service(cmd, Some(WATCHDOG));
        second.ready(SOON);
        second.wait_status("idle: ", SOON);
        let context = second.context();
        assert_uncordoned(&fake, &context);
        let after: Vec<_> = fake.requests()[seen..]
            .iter()
            .filter(|r| r.is_node(NODE))
            .map(|r| (r.method.clone(), r.body.clone()))
            .collect();
        assert_eq!(
            after.first().map(|r| r.0.as_str()),
            Some("GET"),
            "{after:?}"
        );
        let lift = after
            .iter()
            .find(|r| r.0 == "PATCH")
            .and_then(|r| r.1.clone())
            .expect("a PATCH lifting the cordon");
        assert_eq!(lift["spec"], json!({ "unschedulable": null }), "{lift}");
        second.terminate(SOON);
    }
}
