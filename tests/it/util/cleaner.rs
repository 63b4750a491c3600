//! The built `docker-image-cleaner` binary set up against a [`PrivateDockerd`] (or any Docker
//! endpoint), with its own configuration file and state directory; runs go through the one
//! runner, [`Daemon`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::daemon::Daemon;
use super::dockerd::PrivateDockerd;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_docker-image-cleaner");
/// Bound of a run to completion.
const RUN_BOUND: Duration = Duration::from_secs(300);

/// One cleaner set up for one daemon.
pub struct Cleaner {
    dir: tempfile::TempDir,
    host: String,
}

impl Cleaner {
    /// A cleaner watching `d`'s data root, with its state in a temp dir, and `extra` TOML lines
    /// (watermarks, strategy, …) in its configuration file. `min_age_seconds` defaults to 0 here
    /// (the images are all imported seconds before the pass) unless `extra` sets it.
    pub fn new(d: &PrivateDockerd, extra: &str) -> Cleaner {
        Self::for_host(&d.host(), d.data_root(), extra)
    }

    /// Same, for an explicit Docker endpoint and path (for "Docker unreachable" cases).
    pub fn for_host(host: &str, path: &Path, extra: &str) -> Cleaner {
        let dir = tempfile::Builder::new()
            .prefix("dic-cleaner-")
            .tempdir()
            .expect("temp dir");
        let mut text = format!(
            "path_to_check = {:?}\nstate_dir = {:?}\ndocker_host = {:?}\ndelay_seconds = 0\n",
            path.display().to_string(),
            dir.path().join("state").display().to_string(),
            host
        );
        if !extra.contains("min_age_seconds") {
            text.push_str("min_age_seconds = 0\n");
        }
        text.push_str(extra);
        std::fs::write(dir.path().join("config.toml"), text).expect("write config");
        Cleaner {
            dir,
            host: host.to_string(),
        }
    }

    /// A cleaner of several engines, one `[[engine]]` table each: `(name, DOCKER_HOST, data
    /// root, floor as TOML)`, with `extra` top-level TOML lines. `min_age_seconds` is 0 unless
    /// `extra` sets it; no `DOCKER_HOST` is exported (the tables name their endpoints).
    pub fn with_engines(engines: &[(&str, String, &Path, &str)], extra: &str) -> Cleaner {
        let dir = tempfile::Builder::new()
            .prefix("dic-cleaner-")
            .tempdir()
            .expect("temp dir");
        let mut text = format!(
            "state_dir = {:?}\ndelay_seconds = 0\n",
            dir.path().join("state").display().to_string(),
        );
        if !extra.contains("min_age_seconds") {
            text.push_str("min_age_seconds = 0\n");
        }
        text.push_str(extra);
        for (name, host, root, floor) in engines {
            text.push_str(&format!(
                "\n[[engine]]\nname = {name:?}\ndocker_host = {host:?}\npaths = [{:?}]\nfloor = {floor}\n",
                root.display().to_string()
            ));
        }
        std::fs::write(dir.path().join("config.toml"), text).expect("write config");
        Cleaner {
            dir,
            // The tables name the endpoints; a DOCKER_HOST beside them would be refused.
            host: String::new(),
        }
    }

    /// A cleaner whose engines are the `[[engine]]` tables `tables` (TOML, written as given:
    /// any kind, e.g. `kind = "cri"`), with `extra` top-level TOML lines. `delay_seconds` and
    /// `min_age_seconds` are 0 unless `extra` sets them; no `DOCKER_HOST` is exported.
    pub fn with_tables(tables: &str, extra: &str) -> Cleaner {
        let dir = tempfile::Builder::new()
            .prefix("dic-cleaner-")
            .tempdir()
            .expect("temp dir");
        let mut text = format!(
            "state_dir = {:?}\n",
            dir.path().join("state").display().to_string(),
        );
        for (key, default) in [("delay_seconds", 0), ("min_age_seconds", 0)] {
            if !extra.contains(key) {
                text.push_str(&format!("{key} = {default}\n"));
            }
        }
        text.push_str(extra);
        text.push('\n');
        text.push_str(tables);
        std::fs::write(dir.path().join("config.toml"), text).expect("write config");
        Cleaner {
            dir,
            host: String::new(),
        }
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A command for the binary with `--config`, `--log stderr`, no environment file (never
    /// the machine's `/etc/default/docker-image-cleaner`) and a clean environment: no stray
    /// `DOCKER_IMAGE_CLEANER_*`, `DOCKER_HOST` or `RUST_LOG` from the machine, and none of the
    /// variables a service manager may have handed the test process (`NOTIFY_SOCKET`, …; the
    /// runner sets its own). Run it with [`Daemon`].
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("--log")
            .arg("stderr")
            .arg("--env-file")
            .arg("")
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCKER_IMAGE_CLEANER_") || k == "DOCKER_HOST" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        for k in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ] {
            cmd.env_remove(k);
        }
        if !self.host.is_empty() {
            cmd.env("DOCKER_HOST", &self.host);
        }
        cmd
    }

    /// Runs the binary to completion, as from a shell (bounded: SIGKILL and a panic after 5 min).
    pub fn run(&self, args: &[&str]) -> Output {
        Daemon::plain(self.command(args)).output(RUN_BOUND)
    }

    /// Runs the binary and asserts exit 0; returns (stdout, stderr).
    pub fn run_ok(&self, args: &[&str]) -> (String, String) {
        succeeded(args, self.run(args))
    }

    /// Runs `args` with the watermarks set through the environment (as the original tool's users
    /// set them) and asserts exit 0; returns (stdout, stderr).
    pub fn run_ok_at(&self, args: &[&str], high: f64, low: Option<f64>) -> (String, String) {
        let mut cmd = self.command(args);
        cmd.env("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", high.to_string());
        if let Some(low) = low {
            cmd.env("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", low.to_string());
        }
        succeeded(args, Daemon::plain(cmd).output(RUN_BOUND))
    }

    /// Runs `args` with `env` set (`("DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS", "0")`: a setting
    /// for this run only, over the file) and asserts exit 0; returns (stdout, stderr).
    pub fn run_ok_with(&self, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        succeeded(args, Daemon::plain(cmd).output(RUN_BOUND))
    }

    /// Starts the binary in the background as a systemd service without a watchdog (see
    /// [`Daemon::service`]); it is killed when the [`Daemon`] is dropped.
    pub fn spawn(&self, args: &[&str]) -> Daemon {
        Daemon::service(self.command(args), None)
    }

    /// The state file as saved (version 2: `/engines/default/images/<id>/last_used_ms`), or
    /// `None` before the first save.
    pub fn state(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.state_dir().join("last-use.json")).ok()?;
        Some(serde_json::from_str(&text).expect("state file is JSON"))
    }

    /// Writes a last-use table in the current format (version 2, the default engine): each
    /// image last used `ago` seconds before now, and the event cursor at now (as if a cleaner
    /// had been running). The state directory is made 0700, as the packages make it.
    pub fn seed_last_use(&self, entries: &[(&str, i64)]) {
        self.seed_state(entries, None);
    }

    /// [`Cleaner::seed_last_use`], the table having covered the engine since `covered` seconds
    /// ago (as if a cleaner had been running that long: `max_unused_age_seconds` may act).
    pub fn seed_last_use_covered(&self, entries: &[(&str, i64)], covered: i64) {
        self.seed_state(entries, Some(covered));
    }

    fn seed_state(&self, entries: &[(&str, i64)], covered: Option<i64>) {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock");
        let now_ms = i64::try_from(since_epoch.as_millis()).expect("milliseconds fit");
        // To the nanosecond: events of the setup earlier in this second must not be replayed.
        let cursor = i64::try_from(since_epoch.as_nanos()).expect("nanoseconds fit");
        let images: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(id, ago)| {
                let at = now_ms - ago * 1000;
                (
                    id.to_string(),
                    serde_json::json!({"first_seen_ms": at, "last_used_ms": at}),
                )
            })
            .collect();
        let mut engine = serde_json::json!({ "cursor_nanos": cursor, "images": images });
        if let Some(covered) = covered {
            engine["covering_since_ms"] = serde_json::json!(now_ms - covered * 1000);
        }
        let state = serde_json::json!({
            "version": 2,
            "engines": { "default": engine },
        });
        let dir = self.state_dir();
        std::fs::create_dir_all(&dir).expect("state dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod state dir");
        std::fs::write(
            dir.join("last-use.json"),
            serde_json::to_vec_pretty(&state).expect("json"),
        )
        .expect("write state");
    }
}

/// Asserts exit 0, showing everything the binary printed otherwise; returns (stdout, stderr).
fn succeeded(args: &[&str], out: Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "docker-image-cleaner {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// The numbered step lines of a printed or logged plan (`  1. remove image …`), in order.
pub fn plan_steps(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            // The plan is one multi-line log message: its step lines carry no level prefix.
            let (n, rest) = l.trim_start().split_once(". ")?;
            n.trim().parse::<u32>().ok()?;
            Some(rest.to_string())
        })
        .collect()
}
