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
//! Skipping: [`PrivateDockerd::start`] returns `None` (after a loud note on stderr) when this
//! machine cannot run it (not root, or dockerd, the 20.10 CLI, mkfs.ext4, losetup or a static
//! busybox missing). With `CI` set (to anything but `false`/`0`) it panics instead: a missing
//! dockerd in CI is a failure, never a silent skip.
//!
//! Teardown runs in `Drop`, so also when the test panicked: SIGTERM to dockerd (bounded, then
//! SIGKILL), SIGKILL to every process whose command line names this dir (containerd, shims) and
//! their descendants (container processes), unmount everything under the dir innermost first,
//! detach the loop device, remove the dir. Dirs left by a test process that was itself killed are
//! swept by the next `start` in any test process.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::host::{self, FsStat};

/// The daemon. Debian's docker.io 20.10; it starts a managed containerd of its own.
const DOCKERD: &str = "/usr/sbin/dockerd";
/// The 20.10 CLI that ships with that daemon. Not the first `docker` in PATH: on these machines
/// that is a 28.x client whose `docker build` needs the absent buildx; the matching client also
/// speaks API 1.41 natively, so no version negotiation can make a test differ from the daemon.
const DOCKER_CLI: &str = "/usr/bin/docker";
/// Statically linked (Debian busybox-static): it is the only binary in `FROM scratch` images.
const BUSYBOX: &str = "/bin/busybox";
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
    /// Returns `None` when this machine cannot run it, after printing why (see the module docs);
    /// panics instead when `CI` is set. Use as `let Some(d) = PrivateDockerd::start(..) else { return };`.
    pub fn start(name: &str, fs_mib: u64, inodes: Option<u64>) -> Option<PrivateDockerd> {
        if !require_docker() {
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
        let img = d.dir.join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(fs_mib * MIB))
            .unwrap_or_else(|e| panic!("creating {}: {e}", img.display()));
        let mut mkfs = vec!["-q", "-F", "-b", "4096"];
        let inodes = inodes.map(|i| i.to_string());
        if let Some(i) = &inodes {
            mkfs.extend(["-N", i]);
        }
        mkfs.push(path_str(&img));
        host::run_ok("mkfs.ext4", &mkfs, COMMAND_BOUND);
        let out = host::run_ok(
            "losetup",
            &["--find", "--show", path_str(&img)],
            COMMAND_BOUND,
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        fs::create_dir(&d.mount).unwrap_or_else(|e| panic!("creating {}: {e}", d.mount.display()));
        host::run_ok(
            "mount",
            &["-t", "ext4", &dev, path_str(&d.mount)],
            COMMAND_BOUND,
        );
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
        ] {
            cmd.env_remove(var);
        }
        host::run(cmd, COMMAND_BOUND)
    }

    /// Imports an image `FROM scratch` holding `/busybox` (default command `/busybox true`) and
    /// `/payload`, `payload_mib` MiB of random bytes, tagged `tag`; returns its id (`sha256:…`).
    /// Every image gets a unique layer, so images never share disk space.
    pub fn image(&self, tag: &str, payload_mib: u64) -> String {
        self.import(Some(tag), payload_mib, 0)
    }

    /// Like [`PrivateDockerd::image`] with no payload but `files` small files (for the inode case).
    pub fn image_with_files(&self, tag: &str, files: u64) -> String {
        self.import(Some(tag), 0, files)
    }

    /// An untagged (dangling) image of `payload_mib` MiB; returns its id.
    pub fn dangling_image(&self, payload_mib: u64) -> String {
        self.import(None, payload_mib, 0)
    }

    /// A container from `image` that ran `/busybox true` and exited (state `exited`); returns its id.
    pub fn stopped_container(&self, image: &str) -> String {
        let id = self.created_container(image);
        self.docker(&["start", "--attach", &id]);
        id
    }

    /// A container from `image` that was created and never started (state `created`); returns its id.
    pub fn created_container(&self, image: &str) -> String {
        let args = ["create", "--network=none", image, "/busybox", "true"];
        stdout_line(&self.docker(&args))
    }

    /// A running container from `image` (`/busybox sleep 3600`); returns its id. Its stop timeout
    /// is 1 s (busybox as PID 1 ignores SIGTERM), so teardown and `restart` do not wait 10 s.
    /// Running containers work on the machines this was written on (Debian 12, cgroup v1 hybrid,
    /// cgroupfs driver, runc 1.1.5, containerd 1.6.20 managed by dockerd 20.10.24).
    pub fn running_container(&self, image: &str) -> String {
        let args = [
            "run",
            "--detach",
            "--network=none",
            "--stop-timeout=1",
            image,
            "/busybox",
            "sleep",
            "3600",
        ];
        stdout_line(&self.docker(&args))
    }

    /// Ids of all images present (`docker images -a -q --no-trunc`), sorted, without duplicates.
    pub fn image_ids(&self) -> Vec<String> {
        lines(&self.docker(&["images", "--all", "--quiet", "--no-trunc"]))
    }

    /// `repo:tag` of every tagged image, sorted.
    pub fn tags(&self) -> Vec<String> {
        let out = self.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        lines(&out)
            .into_iter()
            .filter(|t| !t.contains("<none>"))
            .collect()
    }

    /// Full ids of all containers, whatever their state, sorted.
    pub fn container_ids(&self) -> Vec<String> {
        lines(&self.docker(&["ps", "--all", "--quiet", "--no-trunc"]))
    }

    /// `statvfs` of the data root's filesystem.
    pub fn fs_stat(&self) -> FsStat {
        host::statfs(&self.mount)
    }

    /// (blocks used %, inodes used %) of the data root's filesystem; see [`FsStat`].
    pub fn used_pct(&self) -> (f64, f64) {
        let s = self.fs_stat();
        (s.used_pct(), s.inodes_used_pct())
    }

    /// Appends zeros to `<mount>/filler` (outside Docker's dirs) until blocks used reach `pct`.
    /// Does nothing when usage is already there. Root may write into the 5 % reserve, so any
    /// `pct` up to 100 can be reached.
    pub fn fill_to(&self, pct: f64) {
        assert!(
            (0.0..=100.0).contains(&pct),
            "fill_to({pct}): not a percentage"
        );
        let path = self.mount.join("filler");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let chunk = vec![0u8; MIB as usize];
        for _ in 0..20 {
            let s = self.fs_stat();
            if s.used_pct() >= pct {
                return;
            }
            // Round up to whole blocks and add one: ext4 also allocates extent blocks.
            let want_blocks = (pct / 100.0 * s.blocks as f64).ceil() as u64;
            let missing =
                (want_blocks.saturating_sub(s.blocks - s.blocks_avail) + 1) * s.block_bytes;
            let mut left = missing;
            while left > 0 {
                let n = left.min(MIB) as usize;
                file.write_all(&chunk[..n])
                    .unwrap_or_else(|e| panic!("filling {} to {pct} %: {e}", path.display()));
                left -= n as u64;
            }
            file.sync_all()
                .unwrap_or_else(|e| panic!("syncing {}: {e}", path.display()));
        }
        panic!(
            "fill_to({pct}): still at {:?} after 20 rounds",
            self.used_pct()
        );
    }

    /// Removes the filler written by [`PrivateDockerd::fill_to`].
    pub fn clear_filler(&self) {
        match fs::remove_file(self.mount.join("filler")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing filler: {e}"),
            _ => {}
        }
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
        let deadline = Instant::now() + READY_BOUND;
        loop {
            if ping(&self.socket()) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "dockerd exited with {status} before answering\n{}",
                    self.log_tail(30)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "dockerd did not answer within {READY_BOUND:?}\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, bounded wait, SIGKILL; then SIGKILL for anything else still running from this dir.
    fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                host::signal("TERM", &[child.id()]);
                let deadline = Instant::now() + STOP_BOUND;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if let Ok(None) = child.try_wait() {
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

    /// Builds a rootfs in a staging dir (on /tmp, not the loop fs) and `docker import`s it.
    fn import(&self, tag: Option<&str>, payload_mib: u64, files: u64) -> String {
        let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let stage = self.dir.join(format!("stage-{n}"));
        let root = stage.join("rootfs");
        let fail =
            |what: &str, e: std::io::Error| -> ! { panic!("{what} in {}: {e}", stage.display()) };
        fs::create_dir_all(root.join("files")).unwrap_or_else(|e| fail("mkdir", e));
        fs::copy(BUSYBOX, root.join("busybox")).unwrap_or_else(|e| fail("copying busybox", e));
        // A nonce makes each layer unique even without payload: identical tarballs would share one.
        let mut nonce = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut nonce))
            .unwrap_or_else(|e| fail("reading /dev/urandom", e));
        fs::write(root.join("nonce"), nonce).unwrap_or_else(|e| fail("writing nonce", e));
        if payload_mib > 0 {
            let mut src =
                File::open("/dev/urandom").unwrap_or_else(|e| fail("opening /dev/urandom", e));
            let mut dst =
                File::create(root.join("payload")).unwrap_or_else(|e| fail("creating payload", e));
            let copied = std::io::copy(&mut (&mut src).take(payload_mib * MIB), &mut dst)
                .unwrap_or_else(|e| fail("writing payload", e));
            assert_eq!(copied, payload_mib * MIB, "short read from /dev/urandom");
        }
        for i in 0..files {
            fs::write(root.join("files").join(i.to_string()), format!("{i}\n"))
                .unwrap_or_else(|e| fail("writing small files", e));
        }
        let tar = stage.join("rootfs.tar");
        host::run_ok(
            "tar",
            &["-C", path_str(&root), "-cf", path_str(&tar), "."],
            COMMAND_BOUND,
        );
        let mut args = vec![
            "import",
            "--change",
            r#"CMD ["/busybox", "true"]"#,
            path_str(&tar),
        ];
        args.extend(tag);
        let id = stdout_line(&self.docker(&args));
        fs::remove_dir_all(&stage).unwrap_or_else(|e| fail("removing stage", e));
        assert!(id.starts_with("sha256:"), "docker import printed {id:?}");
        id
    }
}

impl Drop for PrivateDockerd {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds.
        self.stop_daemon();
        host::teardown_dir(&self.dir);
    }
}

/// Whether this machine can run a [`PrivateDockerd`]. When it cannot, prints a loud note and
/// returns false, or panics if `CI` is set. [`PrivateDockerd::start`] calls it.
pub fn require_docker() -> bool {
    let mut missing = Vec::new();
    if !host::is_root() {
        missing.push("root (mount, losetup, dockerd)".to_string());
    }
    for tool in [DOCKERD, DOCKER_CLI, BUSYBOX] {
        if !Path::new(tool).is_file() {
            missing.push(tool.to_string());
        }
    }
    for tool in [
        "mkfs.ext4",
        "losetup",
        "mount",
        "umount",
        "tar",
        "stat",
        "kill",
    ] {
        if !host::in_path(tool) {
            missing.push(tool.to_string());
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "a private dockerd cannot run here; missing: {}",
        missing.join(", ")
    );
    let ci = std::env::var("CI").map(|v| !v.is_empty() && v != "false" && v != "0");
    if ci.unwrap_or(false) {
        panic!("CI is set, so this is a failure: {why}");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("real-Docker test")
        .to_string();
    // Straight to the stderr handle: `eprintln!` would be captured by the test harness.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: {why} (set CI=true to fail instead) ***"
    );
    false
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

impl PrivateDockerd {
    /// This daemon's temp dir (for [`leftovers`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
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

fn stdout_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lines(out: &Output) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    v
}
