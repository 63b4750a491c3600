//! The configuration as an operator meets it: the built binary's `check-config` and `run` with
//! hostile environments and configuration paths. What is asserted is what a user notices: the
//! exit code (78 for a configuration error), a message naming the variable or the file, and a
//! running daemon that survives a reload into a bad value.
//!
//! None of these tests needs Docker: the endpoint is a socket that does not exist.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::host;
use crate::util::notify::NotifySocket;

/// The binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_docker-image-cleaner");
/// Bound of anything that should happen "soon".
const SOON: Duration = Duration::from_secs(20);
/// Exit code for a configuration error.
const EXIT_CONFIG: i32 = 78;
/// A Docker endpoint that is never there.
const NO_DOCKER: &str = "unix:///nonexistent.sock";

/// A temp dir with a valid configuration file in it.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(extra: &str) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("dic-config-")
            .tempdir()
            .expect("temp dir");
        let setup = Setup { dir };
        setup.write(extra);
        setup
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes the base configuration (a private state dir, no Docker) followed by `extra`.
    fn write(&self, extra: &str) {
        let text = format!(
            "path_to_check = {:?}\nstate_dir = {:?}\ndocker_host = {NO_DOCKER:?}\n{extra}",
            self.dir.path().display().to_string(),
            self.dir.path().join("state").display().to_string(),
        );
        fs::write(self.config_path(), text).expect("write config");
    }

    /// The binary with `--config path` and an environment holding only `PATH`: nothing from the
    /// machine (`DOCKER_HOST`, `DOCKER_IMAGE_CLEANER_*`) leaks in.
    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config")
            .arg(config)
            .arg("--log")
            .arg("stderr")
            .arg("--env-file")
            .arg("")
            .args(args);
        cmd
    }
}

/// Runs `cmd` to completion (bounded: a hang is a failure, not a stuck test).
fn run(cmd: Command) -> (Output, String) {
    let out = host::run(cmd, SOON);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    (out, err)
}

fn latin1(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

#[test]
fn a_latin1_variable_of_someone_else_is_ignored() {
    let s = Setup::new("");
    let mut cmd = s.command(&s.config_path(), &["check-config"]);
    // An EnvironmentFile written in Latin-1: "nœud" would be UTF-8; this is "caf\xe9".
    cmd.env("SITE_NOTE", latin1(b"caf\xe9"));
    cmd.env(latin1(b"NOTE_\xe9"), "x");
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("interval_seconds = 300"), "{text}");
}

#[test]
fn a_latin1_value_of_ours_is_a_configuration_error_naming_the_variable() {
    let s = Setup::new("");
    for var in [
        "DOCKER_IMAGE_CLEANER_NODE_NAME",
        "DOCKER_IMAGE_CLEANER_CONFIG",
        "DOCKER_HOST",
    ] {
        let mut cmd = s.command(&s.config_path(), &["check-config"]);
        cmd.env(var, latin1(b"n\xe9ud-1"));
        let (out, err) = run(cmd);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{var}: stderr: {err}");
        assert!(err.contains(var), "the error names {var}: {err}");
        assert!(
            err.contains(r"n\xe9ud-1"),
            "the value is shown escaped: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_fifo_or_a_directory_as_the_configuration_file_is_refused_at_once() {
    let s = Setup::new("");
    let fifo = s.dir.path().join("fifo.toml");
    host::run_ok("mkfifo", &[fifo.to_str().expect("utf-8 temp path")], SOON);
    let dir = s.dir.path().join("dir.toml");
    fs::create_dir(&dir).expect("mkdir");
    for (path, what) in [(&fifo, "is a FIFO"), (&dir, "is a directory")] {
        let started = Instant::now();
        let (out, err) = run(s.command(path, &["check-config"]));
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
        assert!(
            err.contains(&path.display().to_string()),
            "names {}: {err}",
            path.display()
        );
        assert!(
            err.contains(&format!("{what}, not a regular file")),
            "says what it is: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    // The same through DOCKER_IMAGE_CLEANER_CONFIG, and a symlink to a regular file is fine.
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("DOCKER_IMAGE_CLEANER_CONFIG", &fifo)
        .arg("check-config");
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");

    let link = s.dir.path().join("link.toml");
    std::os::unix::fs::symlink(s.config_path(), &link).expect("symlink");
    let (out, err) = run(s.command(&link, &["check-config"]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "a symlink to a file is fine: {err}"
    );
}

/// `DOCKER_IMAGE_CLEANER_CONFIG=` set to nothing (a unit's `Environment=` line left blank): a
/// configuration error that says so, not "cannot read configuration file :".
#[test]
fn an_empty_configuration_path_is_a_clear_error() {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("DOCKER_IMAGE_CLEANER_CONFIG", "")
        .arg("check-config");
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
    assert!(
        err.contains("environment variable DOCKER_IMAGE_CLEANER_CONFIG is empty")
            && err.contains("unset it to read /etc/docker-image-cleaner.toml"),
        "{err}"
    );
    // `--config ""` is refused by the command line itself (exit 2), naming the flag.
    let mut cmd = Command::new(BIN);
    cmd.env_clear().args(["--config", "", "check-config"]);
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn an_environment_value_sets_its_own_key_and_nothing_else() {
    let s = Setup::new("interval_seconds = 60\n");
    let mut cmd = s.command(&s.config_path(), &["check-config"]);
    cmd.env(
        "DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH",
        "90\nstate_dir = \"/tmp/x\"",
    );
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG), "stderr: {err}");
    assert!(
        err.contains("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH"),
        "the error names the variable: {err}"
    );

    // The accepted forms, each credited to its own variable.
    let mut cmd = s.command(&s.config_path(), &["check-config"]);
    cmd.env("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "90%")
        .env("DOCKER_IMAGE_CLEANER_DRY_RUN", "true")
        .env("DOCKER_IMAGE_CLEANER_KEEP", "^a,^b")
        .env("DOCKER_IMAGE_CLEANER_NODE_NAME", "node-1");
    let (out, err) = run(cmd);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    let text = String::from_utf8_lossy(&out.stdout);
    let path = s.config_path().display().to_string();
    for line in [
        "threshold_high = 90  # env DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH".to_string(),
        "dry_run = true  # env DOCKER_IMAGE_CLEANER_DRY_RUN".to_string(),
        "keep = [\"^a\", \"^b\"]  # env DOCKER_IMAGE_CLEANER_KEEP".to_string(),
        "node_name = \"node-1\"  # env DOCKER_IMAGE_CLEANER_NODE_NAME".to_string(),
        format!("interval_seconds = 60  # file {path}"),
        format!(
            "state_dir = {:?}  # file {path}",
            s.dir.path().join("state").display().to_string()
        ),
        "threshold_low = 86  # derived: 4 points below threshold_high".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}

#[test]
fn bad_node_names_and_docker_hosts_are_configuration_errors() {
    let s = Setup::new("");
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "DOCKER_IMAGE_CLEANER_NODE_NAME",
            "../../api/v1/namespaces/kube-system/secrets/x",
            &["node_name", "secrets/x"],
        ),
        (
            "DOCKER_IMAGE_CLEANER_NODE_NAME",
            "node-1?dryRun=All",
            &["node_name"],
        ),
        ("DOCKER_IMAGE_CLEANER_NODE_NAME", "node 1", &["node_name"]),
        (
            "DOCKER_IMAGE_CLEANER_NODE_NAME",
            "node-1\nx",
            &["node_name", r"node-1\nx"],
        ),
        (
            "DOCKER_HOST",
            "tcp://127.0.0.1:99999",
            &["docker_host", "99999"],
        ),
        (
            "DOCKER_HOST",
            "https://docker.example:2376",
            &["docker_host", "https://"],
        ),
    ];
    for (var, value, wanted) in cases {
        let mut cmd = s.command(&s.config_path(), &["check-config"]);
        cmd.env(var, value);
        let (out, err) = run(cmd);
        assert_eq!(
            out.status.code(),
            Some(EXIT_CONFIG),
            "{var}={value:?}: stderr: {err}"
        );
        assert!(err.contains(var), "{var}={value:?}: {err}");
        for w in *wanted {
            assert!(err.contains(w), "{var}={value:?}: lacks {w:?}: {err}");
        }
    }
}

/// Lines of a child's stderr, as they come, through a channel (EOF closes it).
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let pipe = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle`; returns everything read so far, and whether
/// it was found (`false` at EOF or after `bound`).
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, bound: Duration, log: &mut String) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(needle) {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

#[test]
fn a_reload_into_an_out_of_range_interval_keeps_the_running_configuration() {
    let s = Setup::new("interval_seconds = 1\n");
    let mut notify = NotifySocket::new();
    let mut cmd = s.command(&s.config_path(), &["run"]);
    notify.apply(&mut cmd, Some(Duration::from_millis(400)));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let lines = stderr_lines(&mut child);
    let mut log = String::new();
    let ready = notify.try_wait_for(SOON, |m| m.has("READY=1"));
    assert!(ready.is_some(), "no READY=1: {}", notify.transcript());

    for bad in ["interval_seconds = 1e-10\n", "min_age_seconds = 1e19\n"] {
        s.write(bad);
        host::signal("HUP", &[child.id()]);
        let kept = wait_line(&lines, "keeping the running configuration", SOON, &mut log);
        let alive = child.try_wait().expect("try_wait").is_none();
        assert!(
            kept && alive,
            "after a reload into {bad:?} the daemon must live on (alive: {alive}) and say so:\n{log}"
        );
        let key = bad.split(' ').next().unwrap_or_default();
        assert!(log.contains(key), "the error names {key}:\n{log}");
        // The loop goes on: two more watchdog pings.
        let mut pings = 0;
        while pings < 2 {
            let ping = notify.try_wait_for(SOON, |m| m.is_ping());
            assert!(ping.is_some(), "no watchdog ping: {}", notify.transcript());
            pings += 1;
        }
    }

    host::signal("TERM", &[child.id()]);
    let stopping = notify.try_wait_for(SOON, |m| m.has("STOPPING=1"));
    assert!(stopping.is_some(), "no STOPPING=1: {}", notify.transcript());
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let Ok(status) = rx.recv_timeout(SOON) else {
        host::signal("KILL", &[pid]);
        panic!("no exit within {SOON:?} after SIGTERM:\n{log}");
    };
    let status = status.expect("wait");
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop:\n{log}");
}
