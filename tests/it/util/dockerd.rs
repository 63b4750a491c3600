//! A real, private `dockerd` per test, on its own small loop-mounted ext4 filesystem.
//!
//! Owns: one temp dir per daemon (`/tmp/dic-it-<pid>-<n>-<name>`) holding the sparse filesystem
//! image, its mount point, the exec root, the API socket, the CLI config and the daemon log; the
//! daemon, its managed containerd and shims; and their teardown. Must not: touch the machine's
//! default daemon, `/var/lib/docker` or `/var/run/docker.sock`, or depend on the library under test
//! (it has to keep compiling while `src/` does not).
//!
//! Layout of a daemon's dir:
//! ```text
//! fs.img        sparse ext4 image, attached to a loop device
//! fs/           its mount point (what `used_pct` and `fill_to` measure)
//! fs/docker/    dockerd --data-root (what the cleaner is pointed at, like /var/lib/docker)
//! fs/filler     written by `fill_to`, outside Docker's dirs
//! exec/         dockerd --exec-root (containerd socket and state, netns)
//! docker.sock   the API socket; docker.pid; dockerd.log; daemon.json; cli/ (DOCKER_CONFIG)
//! ```
//!
//! Skipping: [`PrivateDockerd::start`] goes through [`require`]`(Service::Dockerd)`: it returns
//! `None` (recorded in the ledger as a skip, with a note on stderr) when this machine cannot run a
//! daemon, and panics instead under CI. What a daemon needs is listed in [`Service::needs`].
//!
//! Split by concern: this file is the daemon process and its dir; [`images`] the images and
//! containers made through the CLI; [`filesystem`] the loop filesystem and filling it.
//!
//! Teardown runs in `Drop`, so also when the test panicked: SIGTERM to dockerd (bounded, then
//! SIGKILL), SIGKILL to every process whose command line names this dir (containerd, shims) and
//! their descendants (container processes), unmount everything under the dir innermost first,
//! detach the loop device, remove the dir. Dirs left by a test process that was itself killed are
//! swept by the next `start` in any test process.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::host;
use super::require::{Service, require};
use super::wait_until;

mod filesystem;
mod images;

/// The daemon. Debian's docker.io 20.10; it starts a managed containerd of its own.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The 20.10 CLI that ships with that daemon. Not the first `docker` in PATH: on these machines
/// that is a 28.x client whose `docker build` needs the absent buildx; the matching client also
/// speaks API 1.41 natively, so no version negotiation can make a test differ from the daemon.
pub const DOCKER_CLI: &str = "/usr/bin/docker";
/// Statically linked (Debian busybox-static): it is the only binary in `FROM scratch` images.
pub const BUSYBOX: &str = "/bin/busybox";
/// Temp dirs are `<TMP>/<PREFIX><pid>-<n>-<name>`; short, because the API and containerd
/// socket paths under it must stay below the 108-byte `sun_path` limit.
const TMP: &str = "/tmp";
const PREFIX: &str = "dic-it-";

/// How long dockerd may take to answer `/_ping` after being started.
const READY_BOUND: Duration = Duration::from_secs(60);
/// How long dockerd may take to stop after SIGTERM before it gets SIGKILL. It stops running
/// containers first (10 s each by default; `running_container` sets 1 s).
const STOP_BOUND: Duration = Duration::from_secs(20);
/// Any single CLI or tool invocation.
const COMMAND_BOUND: Duration = Duration::from_secs(180);

const MIB: u64 = 1024 * 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();

/// A private dockerd on a fresh loop-mounted ext4 filesystem; dropped, it leaves nothing behind.
pub struct PrivateDockerd {
    dir: PathBuf,
    mount: PathBuf,
    data_root: PathBuf,
    child: Option<Child>,
}

impl PrivateDockerd {
    /// Starts a dockerd whose `--data-root` is on a fresh loop-mounted ext4 filesystem of
    /// `fs_mib` MiB (4 KiB blocks, 5 % reserved as mkfs does by default; exactly `inodes` inodes
    /// when `Some`, rounded up by mkfs to whole block groups), and waits until its API answers.
    ///
    /// Returns `None` when this machine cannot run it, recorded as a skip (see the module docs);
    /// panics instead under CI. Use as `let Some(d) = PrivateDockerd::start(..) else { return };`.
    pub fn start(name: &str, fs_mib: u64, inodes: Option<u64>) -> Option<PrivateDockerd> {
        if !require(Service::Dockerd) {
            return None;
        }
        SWEEP.call_once(sweep_stale);
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(16)
            .collect();
        let dir = PathBuf::from(TMP).join(format!("{PREFIX}{}-{n}-{name}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // From here on, a panic drops `d` and tears down whatever was set up so far.
        let mut d = PrivateDockerd {
            mount: dir.join("fs"),
            data_root: dir.join("fs").join("docker"),
            dir,
            child: None,
        };
        d.make_filesystem(fs_mib, inodes);
        fs::create_dir_all(d.dir.join("cli")).unwrap_or_else(|e| panic!("creating cli dir: {e}"));
        // An explicit empty config keeps /etc/docker/daemon.json (if any) out of the test.
        fs::write(d.dir.join("daemon.json"), "{}\n")
            .unwrap_or_else(|e| panic!("writing daemon.json: {e}"));
        d.spawn_daemon();
        Some(d)
    }

    /// `unix:///tmp/dic-it-…/docker.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// dockerd's `--data-root` (`<mount>/docker`): what the cleaner measures as its path to
    /// check, in place of `/var/lib/docker`. It is on the loop filesystem, so `statvfs` of it is
    /// the filesystem's.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The loop filesystem's mount point (parent of the data root and of the filler).
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// This daemon's temp dir (for [`leftovers`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// Runs the 20.10 CLI against this daemon; panics with the command, its stderr and the tail
    /// of the daemon log unless it succeeds.
    pub fn docker(&self, args: &[&str]) -> Output {
        let out = self.try_docker(args);
        if !out.status.success() {
            panic!(
                "docker {} failed ({}):\nstdout: {}\nstderr: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(15),
            );
        }
        out
    }

    /// Runs the CLI against this daemon and returns whatever happened (bounded in time).
    pub fn try_docker(&self, args: &[&str]) -> Output {
        self.try_docker_env(args, &[])
    }

    /// [`PrivateDockerd::try_docker`] with `env` set for the CLI (`DOCKER_BUILDKIT=1`).
    pub fn try_docker_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(DOCKER_CLI);
        cmd.arg("--config")
            .arg(self.dir.join("cli"))
            .arg("--host")
            .arg(self.host())
            .args(args);
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
            "DOCKER_BUILDKIT",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        host::run(cmd, COMMAND_BOUND)
    }

    /// Stops dockerd (SIGTERM, SIGKILL after a bound; its containerd and shims too) and starts
    /// it again on the same data root and socket. Returns once the API answers again.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn_daemon();
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn spawn_daemon(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening dockerd.log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of dockerd.log: {e}"));
        let _ = fs::remove_file(self.socket());
        let child = Command::new(DOCKERD)
            .arg(format!("--data-root={}", self.data_root.display()))
            .arg(format!("--exec-root={}", self.dir.join("exec").display()))
            .arg(format!(
                "--pidfile={}",
                self.dir.join("docker.pid").display()
            ))
            .arg(format!(
                "--config-file={}",
                self.dir.join("daemon.json").display()
            ))
            .arg(format!("--host={}", self.host()))
            // No docker0 bridge, no iptables or sysctl changes: nothing shared with other daemons.
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
            ])
            // Explicit, so sizes are those of overlay2 and a fallback to vfs cannot hide.
            .arg("--storage-driver=overlay2")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {DOCKERD}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let socket = self.socket();
        let mut exited = None;
        let child = &mut self.child;
        let answered = wait_until(READY_BOUND, || {
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                exited = Some(status);
                return true;
            }
            ping(&socket)
        });
        if let Some(status) = exited {
            panic!(
                "dockerd exited with {status} before answering\n{}",
                self.log_tail(30)
            );
        }
        if !answered {
            panic!(
                "dockerd did not answer within {READY_BOUND:?}\n{}",
                self.log_tail(30)
            );
        }
    }

    /// SIGTERM, bounded wait, SIGKILL; then SIGKILL for anything else still running from this dir.
    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                host::signal("TERM", &[child.id()]);
                let stopped = wait_until(STOP_BOUND, || !matches!(child.try_wait(), Ok(None)));
                if !stopped {
                    eprintln!(
                        "dockerd in {} ignored SIGTERM for {STOP_BOUND:?}: SIGKILL",
                        self.dir.display()
                    );
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        host::kill_processes_under(&self.dir);
    }

    fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_path().display())
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds.
        self.stop_daemon();
        host::teardown_dir(&self.dir);
    }
}

/// What a daemon left behind under `dir`: mounts, processes, loop devices, the dir itself.
/// Empty after a clean teardown; used by the harness's own tests.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = host::mounts_under(dir)
        .into_iter()
        .map(|m| format!("mount {m}"))
        .collect();
    found.extend(
        host::processes_under(dir)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    found.extend(
        host::loop_devices_of(&dir.join("fs.img"))
            .into_iter()
            .map(|l| format!("loop {l}")),
    );
    if dir.exists() {
        found.push(format!("dir {}", dir.display()));
    }
    found
}

/// Tears down dirs of earlier test processes that died without running `Drop` (SIGKILL, abort).
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(TMP) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
            continue;
        };
        // A dir named after our own pid predates this process (pid reuse): we have made none yet.
        let ours = pid == std::process::id().to_string();
        if pid.parse::<u32>().is_ok() && (ours || !Path::new("/proc").join(pid).exists()) {
            eprintln!(
                "sweeping {} left by dead test process {pid}",
                entry.path().display()
            );
            host::kill_processes_under(&entry.path());
            host::teardown_dir(&entry.path());
        }
    }
}

/// `GET path` over the unix socket (HTTP/1.0, std only): the body of a `200 OK`, or what went
/// wrong.
fn get(socket: &Path, path: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    let bound = Some(COMMAND_BOUND);
    s.set_read_timeout(bound)
        .and_then(|()| s.set_write_timeout(bound))
        .map_err(|e| format!("timeouts: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_string())
        }
        _ => Err(format!("answer: {reply}")),
    }
}

/// `GET /_ping` over the unix socket, std only; true on `200 OK`.
fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200")
}

fn path_str(p: &Path) -> &str {
    // Our paths are built from ASCII only (see `start`), so this cannot fail.
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}
