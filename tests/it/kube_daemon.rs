//! The daemon's Kubernetes side as systemd runs it: the built binary with a fake `NOTIFY_SOCKET`,
//! a `WATCHDOG_USEC`, the fake API server and no Docker (a socket nobody listens on keeps it
//! waiting for Docker; the recovery at start and the retry at every tick are its Kubernetes
//! calls). Asserted: exit codes, watchdog pings, the time a SIGTERM takes, and what reaches the
//! log at `info` and at `debug`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use docker_image_cleaner::node::ANNOTATION;
use serde_json::json;

use crate::kube_fake::{FakeKube, exec_user};
use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::host;
use crate::util::notify::NotifySocket;

const NODE: &str = "n1";
const SOON: Duration = Duration::from_secs(20);

/// The binary running `run`, its notify socket and its stderr.
struct Daemon {
    child: Child,
    notify: NotifySocket,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    _cleaner: Cleaner,
}

impl Daemon {
    /// `run` against no Docker, cordoning [`NODE`] through `kubeconfig`, with `extra` TOML lines.
    fn start(fake: &FakeKube, kubeconfig: &Path, extra: &str, watchdog: Duration) -> Daemon {
        let socket = fake.dir().join("no-docker.sock");
        let cleaner = Cleaner::for_host(
            &format!("unix://{}", socket.display()),
            fake.dir(),
            &format!(
                "interval_seconds = 1\nnode_name = {NODE:?}\nkubeconfig = {:?}\n{extra}",
                kubeconfig.display().to_string()
            ),
        );
        Daemon::run(cleaner, watchdog)
    }

    /// `run` of `cleaner`.
    fn run(cleaner: Cleaner, watchdog: Duration) -> Daemon {
        let mut cmd = cleaner.command(&["run"]);
        let notify = NotifySocket::new();
        notify.apply(&mut cmd, Some(watchdog));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn docker-image-cleaner");
        let pipe = child.stderr.take().expect("stderr piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon {
            child,
            notify,
            stderr,
            reader: Some(reader),
            _cleaner: cleaner,
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything written on stderr so far (all of it once the process exited).
    fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn context(&self) -> String {
        format!(
            "notify messages:\n{}\nstderr:\n{}",
            self.notify.transcript(),
            self.log()
        )
    }

    fn ready(&mut self) {
        let first = self.notify.try_wait_for(SOON, |_| true);
        assert!(
            first.is_some_and(|m| m.has("READY=1")),
            "the first message must be READY=1:\n{}",
            self.context()
        );
    }

    /// SIGTERM, then exit 0 within `bound`; returns how long it took.
    fn terminate(&mut self, bound: Duration) -> Duration {
        let sent = Instant::now();
        host::signal("TERM", &[self.child.id()]);
        while self.running() {
            if sent.elapsed() > bound {
                host::signal("KILL", &[self.child.id()]);
                let _ = self.child.wait();
                panic!("still running {bound:?} after SIGTERM:\n{}", self.context());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = sent.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let status = self.child.wait().expect("wait");
        assert_eq!(status.code(), Some(0), "{status}:\n{}", self.context());
        took
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            host::signal("KILL", &[self.child.id()]);
            let _ = self.child.wait();
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `bound` passes.
fn eventually(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(String::from).collect())
        .unwrap_or_default()
}

/// A JWT-shaped secret (header, claims, signature), as a plugin would print.
const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjQyIn0.eyJzdWIiOiJzeXN0ZW06bm9kZTpuMSJ9.c2lnbmF0dXJlLW9mLXRoZS1zZWNyZXQtMTIzNDU2";
const PLAIN: &str = "hunter2-s3cr3t-value-9f8e7d";

/// A kubeconfig whose plugin prints secrets on stdout and stderr, counts its runs, exits 1.
fn leaking_plugin(fake: &FakeKube) -> (PathBuf, PathBuf) {
    let runs = fake.dir().join("runs");
    let plugin = fake.write_script(
        "leaky.sh",
        &format!(
            "echo run >> '{}'\n\
             echo '{{\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{JWT}\"}}}}'\n\
             echo 'Authorization: Bearer {JWT}' >&2\n\
             echo 'token: {PLAIN}' >&2\n\
             echo 'refresh failed for {JWT}' >&2\n\
             exit 1\n",
            runs.display()
        ),
    );
    let kubeconfig = fake.dir().join("leaky.kubeconfig");
    fake.write_kubeconfig_user(&kubeconfig, &exec_user(&plugin));
    (kubeconfig, runs)
}

#[test]
fn a_failing_plugin_neither_stops_the_daemon_nor_leaks_what_it_printed() {
    for level in ["info", "debug"] {
        let fake = FakeKube::start();
        fake.add_node(NODE, json!({}));
        let (kubeconfig, runs) = leaking_plugin(&fake);
        let mut d = Daemon::start(
            &fake,
            &kubeconfig,
            &format!("log_level = {level:?}\n"),
            Duration::from_secs(2),
        );
        d.ready();
        // The recovery at start, then the retry at a later tick: still running in between.
        assert!(
            eventually(SOON, || lines(&runs).len() >= 2),
            "{level}: the plugin is tried again at the next tick:\n{}",
            d.context()
        );
        assert!(
            d.running(),
            "{level}: a credential failure is not fatal:\n{}",
            d.context()
        );
        d.terminate(SOON);
        let log = d.log();
        for secret in [JWT, PLAIN]
            .into_iter()
            .chain(JWT.split('.'))
            .chain([&PLAIN[8..]])
        {
            assert!(
                !log.contains(secret),
                "{level}: {secret:?} reached the log:\n{log}"
            );
        }
        assert!(
            log.contains("leaky.sh") && log.contains("status 1"),
            "{level}: the command and its exit status are logged:\n{log}"
        );
        let stderr_shown = log.lines().any(|l| l.contains("[REDACTED]"));
        assert_eq!(
            stderr_shown,
            level == "debug",
            "{level}: the plugin's stderr, redacted, at debug only:\n{log}"
        );
        assert!(fake.requests().is_empty());
    }
}

#[test]
fn a_hanging_plugin_neither_starves_the_watchdog_nor_delays_sigterm() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let pids = fake.dir().join("pids");
    let plugin = fake.write_script(
        "hanging.sh",
        &format!("echo $$ >> '{}'\nsleep 30\n", pids.display()),
    );
    let kubeconfig = fake.dir().join("hanging.kubeconfig");
    fake.write_kubeconfig_user(&kubeconfig, &exec_user(&plugin));
    // Pings every 500 ms; systemd would kill us after a gap of 1 s.
    let watchdog = Duration::from_secs(1);
    let mut d = Daemon::start(&fake, &kubeconfig, "", watchdog);
    d.ready();
    assert!(
        eventually(SOON, || !lines(&pids).is_empty()),
        "the plugin runs at start:\n{}",
        d.context()
    );
    let window = d.notify.collect_for(Duration::from_secs(3));
    let pings: Vec<Instant> = window
        .iter()
        .filter(|m| m.is_ping())
        .map(|m| m.at)
        .collect();
    let worst = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    assert!(
        pings.len() >= 4 && worst < watchdog,
        "{} pings in 3 s, worst gap {worst:?}, while the plugin hangs:\n{}",
        pings.len(),
        d.context()
    );
    let took = d.terminate(SOON);
    assert!(
        took < Duration::from_secs(4),
        "SIGTERM took {took:?} with the plugin hanging:\n{}",
        d.context()
    );
    let pid: u32 = lines(&pids)[0].parse().expect("pid");
    assert!(
        eventually(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{pid}/cmdline"
        ))
        .exists()
            || std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.is_empty())),
        "the plugin ({pid}) is killed when the daemon stops"
    );
}

#[test]
fn insecure_skip_tls_verify_is_honoured_with_a_warning() {
    let fake = FakeKube::start();
    // A leftover cordon of ours: lifting it shows the connection without a CA worked.
    fake.add_node(
        NODE,
        json!({
            "metadata": { "annotations": { ANNOTATION: "2026-11-27T23:00:00Z" } },
            "spec": { "unschedulable": true },
        }),
    );
    let kubeconfig = fake.dir().join("insecure.kubeconfig");
    fake.write_kubeconfig_raw(
        &kubeconfig,
        "    insecure-skip-tls-verify: true\n",
        &format!("    token: {}\n", fake.token()),
    );
    let mut d = Daemon::start(&fake, &kubeconfig, "", Duration::from_secs(2));
    d.ready();
    assert!(
        eventually(SOON, || fake
            .node(NODE)
            .pointer("/spec/unschedulable")
            .is_none()),
        "the leftover is lifted:\n{}",
        d.context()
    );
    d.terminate(SOON);
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("insecure-skip-tls-verify")
            && l.contains(&kubeconfig.display().to_string())),
        "a warning names the setting and the kubeconfig:\n{log}"
    );
}

/// Pings `WATCHDOG=1` at least four times in 3 s, no gap as long as `watchdog`.
fn keeps_pinging(d: &mut Daemon, watchdog: Duration) {
    let window = d.notify.collect_for(Duration::from_secs(3));
    let pings: Vec<Instant> = window
        .iter()
        .filter(|m| m.is_ping())
        .map(|m| m.at)
        .collect();
    let worst = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    assert!(
        pings.len() >= 4 && worst < watchdog,
        "{} pings in 3 s, worst gap {worst:?}:\n{}",
        pings.len(),
        d.context()
    );
}

/// A token file that is a FIFO (it once stopped the pings and outlived SIGTERM by 30 s and
/// more): each try is refused at once, naming the file; the daemon keeps pinging and stops at
/// once.
#[test]
fn a_token_file_that_is_a_fifo_neither_starves_the_watchdog_nor_delays_sigterm() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let token = fake.dir().join("token.fifo");
    host::run_ok("mkfifo", &[token.to_str().expect("utf-8 temp path")], SOON);
    let kubeconfig = fake.dir().join("fifo-token.kubeconfig");
    fake.write_kubeconfig_user(
        &kubeconfig,
        &format!("    tokenFile: {}\n", token.display()),
    );
    let watchdog = Duration::from_secs(1);
    let mut d = Daemon::start(&fake, &kubeconfig, "", watchdog);
    d.ready();
    keeps_pinging(&mut d, watchdog);
    d.terminate(SOON);
    let log = d.log();
    assert!(
        log.contains(&format!(
            "token file {} is a FIFO, not a regular file",
            token.display()
        )),
        "{log}"
    );
}

/// A kubeconfig that is a FIFO: `run` fails at start with EX_CONFIG, naming it, instead of
/// hanging before `READY=1`.
#[test]
fn a_kubeconfig_that_is_a_fifo_fails_the_start() {
    let fake = FakeKube::start();
    let kubeconfig = fake.dir().join("kubeconfig.fifo");
    host::run_ok(
        "mkfifo",
        &[kubeconfig.to_str().expect("utf-8 temp path")],
        SOON,
    );
    let mut d = Daemon::start(&fake, &kubeconfig, "", Duration::from_secs(2));
    assert!(
        eventually(SOON, || !d.running()),
        "still running with a FIFO for a kubeconfig:\n{}",
        d.context()
    );
    let status = d.child.wait().expect("wait");
    if let Some(reader) = d.reader.take() {
        let _ = reader.join();
    }
    assert_eq!(status.code(), Some(78), "{}", d.context());
    let log = d.log();
    assert!(
        log.contains(&format!("kubeconfig {} is a FIFO", kubeconfig.display())),
        "{log}"
    );
}

/// A plugin that succeeds and also prints its token on stderr, plainly (letters only, which no
/// pattern takes for a secret): the token never reaches the log, at debug level either.
#[test]
fn a_succeeding_plugin_that_prints_its_token_on_stderr_never_gets_it_logged() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let token = "plainlettersonlytokenvalue";
    fake.set_token(token);
    let runs = fake.dir().join("runs");
    let plugin = fake.write_script(
        "chatty.sh",
        &format!(
            "echo run >> '{}'\n\
             echo 'using {token}' >&2\n\
             echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{token}\"}}}}'\n",
            runs.display()
        ),
    );
    let kubeconfig = fake.dir().join("chatty.kubeconfig");
    fake.write_kubeconfig_user(&kubeconfig, &exec_user(&plugin));
    let mut d = Daemon::start(
        &fake,
        &kubeconfig,
        "log_level = \"debug\"\n",
        Duration::from_secs(2),
    );
    d.ready();
    assert!(
        eventually(SOON, || !fake.requests().is_empty()),
        "the plugin's token is used:\n{}",
        d.context()
    );
    d.terminate(SOON);
    let log = d.log();
    assert!(!log.contains(token), "the token reached the log:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("chatty.sh") && l.contains("on stderr (not shown")),
        "{log}"
    );
}

/// With a private dockerd: passes that clean while the credential plugin fails.
mod with_dockerd {
    use super::*;
    use crate::kube_fake::Fault;
    use crate::util::dockerd::PrivateDockerd;

    /// `once` whose uncordon keeps failing: no tick follows a `once`, so no message promises a
    /// retry at every tick; the log says the node stays cordoned until the next start.
    #[test]
    fn once_that_cannot_uncordon_promises_no_retry_at_every_tick() {
        let Some(dockerd) = PrivateDockerd::start("kd-held", 512, None) else {
            return;
        };
        for i in 0..2 {
            dockerd.image(&format!("img-{i}:1"), 10);
        }
        let fake = FakeKube::start();
        fake.add_node(NODE, json!({}));
        // The recovery's GET, the cordon's GET and PATCH go through; everything after fails.
        fake.fail_next(3, Fault::Pass);
        fake.fail_next(1000, Fault::Status(500));
        let (used, _) = dockerd.used_pct();
        let high = (used - 1.0).floor();
        let cleaner = Cleaner::new(
            &dockerd,
            &format!(
                "threshold_high = {high}\nthreshold_low = 0\nnode_name = {NODE:?}\nkubeconfig = {:?}\n",
                fake.kubeconfig().display().to_string()
            ),
        );
        let out = cleaner.run(&["once"]);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            fake.node(NODE).pointer("/spec/unschedulable") == Some(&json!(true)),
            "setup: the node was cordoned and stays so:\n{log}"
        );
        assert!(!log.contains("every tick"), "{log}");
        assert!(
            log.lines()
                .any(|l| l.starts_with("ERROR") && l.ends_with("; still held")),
            "{log}"
        );
        assert!(
            log.contains("exiting while the node is still cordoned by us; the next start lifts it"),
            "{log}"
        );
    }

    /// `run` whose uncordon keeps failing, stopped by SIGTERM: from then on no message
    /// promises a retry at every tick (there is none).
    #[test]
    fn a_daemon_exiting_while_cordoned_promises_no_retry_at_every_tick() {
        let Some(dockerd) = PrivateDockerd::start("kd-held-run", 512, None) else {
            return;
        };
        for i in 0..2 {
            dockerd.image(&format!("img-{i}:1"), 10);
        }
        let fake = FakeKube::start();
        fake.add_node(NODE, json!({}));
        fake.fail_next(3, Fault::Pass);
        fake.fail_next(1000, Fault::Status(500));
        let (used, _) = dockerd.used_pct();
        let high = (used - 1.0).floor();
        let cleaner = Cleaner::new(
            &dockerd,
            &format!(
                "threshold_high = {high}\nthreshold_low = 0\nnode_name = {NODE:?}\nkubeconfig = {:?}\ninterval_seconds = 3600\n",
                fake.kubeconfig().display().to_string()
            ),
        );
        let mut d = Daemon::run(cleaner, Duration::from_secs(30));
        d.ready();
        d.notify
            .try_wait_for(Duration::from_secs(60), |m| {
                NotifySocket::status_starts(m, "idle: ")
            })
            .unwrap_or_else(|| panic!("no pass ended:\n{}", d.context()));
        d.terminate(Duration::from_secs(60));
        let log = d.log();
        let (before, after) = log
            .split_once("SIGTERM received")
            .unwrap_or_else(|| panic!("{log}"));
        assert!(
            before.contains("still held, retrying every tick"),
            "setup: the release failed while ticks still followed:\n{log}"
        );
        assert!(!after.contains("every tick"), "{log}");
        assert!(
            after.contains("exiting while the node is still cordoned"),
            "{log}"
        );
    }

    #[test]
    fn a_failing_plugin_leaves_passes_to_on_cordon_failure_and_says_so() {
        for (policy, outcome) in [
            ("clean", "last pass: nothing left to remove"),
            ("skip", "last pass: skipped"),
        ] {
            let Some(dockerd) = PrivateDockerd::start(&format!("kd-{policy}"), 512, None) else {
                return;
            };
            for i in 0..2 {
                dockerd.image(&format!("img-{i}:1"), 10);
            }
            let fake = FakeKube::start();
            fake.add_node(NODE, json!({}));
            let runs = fake.dir().join("runs");
            let plugin = fake.write_script(
                "failing.sh",
                &format!("echo run >> '{}'\nexit 3\n", runs.display()),
            );
            let kubeconfig = fake.dir().join("failing.kubeconfig");
            fake.write_kubeconfig_user(&kubeconfig, &exec_user(&plugin));
            let (used, _) = dockerd.used_pct();
            let high = (used - 1.0).floor();
            assert!(high >= 1.0, "setup: usage {used}% too low to start a pass");
            let cleaner = Cleaner::new(
                &dockerd,
                &format!(
                    "threshold_high = {high}\nthreshold_low = 0\nnode_name = {NODE:?}\nkubeconfig = {:?}\non_cordon_failure = {policy:?}\n",
                    kubeconfig.display().to_string()
                ),
            );
            let mut d = Daemon::run(cleaner, Duration::from_secs(2));
            d.ready();
            let idle = d
                .notify
                .try_wait_for(Duration::from_secs(60), |m| {
                    NotifySocket::status_starts(m, "idle: ")
                })
                .unwrap_or_else(|| panic!("{policy}: no pass ended:\n{}", d.context()));
            let status = idle.status().unwrap_or_default().to_string();
            assert!(
                status.contains(outcome)
                    && status.contains("no Kubernetes credential")
                    && status.contains("failing.sh")
                    && status.contains("status 3"),
                "{policy}: STATUS says what the pass did and why it was not cordoned: {status}\n{}",
                d.context()
            );
            assert!(
                lines(&runs).len() >= 2,
                "{policy}: tried at start and again at the pass:\n{}",
                d.context()
            );
            assert!(d.running(), "{policy}:\n{}", d.context());
            d.terminate(SOON);
            let tags = dockerd.tags();
            let ours_left = tags.iter().filter(|t| t.starts_with("img-")).count();
            assert_eq!(
                ours_left,
                if policy == "clean" { 0 } else { 2 },
                "{policy}: images left {tags:?}"
            );
            assert!(
                fake.requests().is_empty(),
                "{policy}: nothing reached the API server"
            );
        }
    }
}
