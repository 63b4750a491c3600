//! A real, private `dockerd` per test, on a small loop-mounted ext4 filesystem of its own or on a
//! [`SharedFs`] with other engines.
//!
//! Owns: one temp dir per daemon (`/tmp/dic-it-<pid>-<n>-<name>`) holding the exec root, the API
//! socket, the CLI config and the daemon log; the daemon, its managed containerd and shims; and
//! their teardown. Must not: touch the machine's default daemon, `/var/lib/docker` or
//! `/var/run/docker.sock`, or depend on the library under test (it has to keep compiling while
//! `src/` does not).
//!
//! Layout of a daemon's dir; with [`PrivateDockerd::start`] it also holds the filesystem
//! (`fs.img`, `fs/`, see [`super::loopfs`]) and the data root is `fs/docker`; with
//! [`PrivateDockerd::start_on`] the data root is `<shared mount>/<name>`:
//! ```text
//! exec/         dockerd --exec-root (containerd socket and state, netns)
//! docker.sock   the API socket; docker.pid; dockerd.log; daemon.json; cli/ (DOCKER_CONFIG)
//! ```
//!
//! Skipping: both constructors go through [`require`]`(Service::Dockerd)`: they return `None`
//! (recorded in the ledger as a skip, with a note on stderr) when this machine cannot run a
//! daemon, and panic instead under CI. What a daemon needs is listed in [`Service::needs`].
//!
//! Split by concern: this file is the daemon process and its dir; [`images`] the images and
//! containers made through the CLI; the filesystem is [`super::loopfs`]'s.
//!
//! Teardown runs in `Drop`, so also when the test panicked: SIGTERM to dockerd (bounded, then
//! SIGKILL), SIGKILL to every process whose command line names this dir (containerd, shims) and
//! their descendants (container processes), unmount what is left under the data root and the
//! dir, remove the dir; the filesystem goes when its last engine has gone ([`SharedFs`]). Dirs
//! left by a test process that was itself killed are swept by the next one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::api::{self, Reply};
use super::bed::{self, DockerKind};
use super::host::{self, FsStat};
pub use super::loopfs::leftovers;
use super::loopfs::{SharedFs, scratch_dir};
use super::require::{Service, require};
use super::wait_until;

pub(in crate::util) mod images;

/// The host's daemon. Debian's docker.io 20.10; it starts a managed containerd of its own.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The 20.10 CLI that ships with that daemon. Not the first `docker` in PATH: on these machines
/// that is a 28.x client whose `docker build` needs the absent buildx; the matching client also
/// speaks API 1.41 natively, so no version negotiation can make a test differ from the daemon.
pub const DOCKER_CLI: &str = "/usr/bin/docker";
/// The bed's daemon, CLI, buildx plugin dir and containerd, as paths inside its root.
const BED_DOCKERD: &str = "/usr/sbin/dockerd";
const BED_DOCKER_CLI: &str = "/usr/bin/docker";
const BED_CLI_PLUGINS: &str = "/usr/libexec/docker/cli-plugins";
const BED_CONTAINERD: &str = "/usr/bin/containerd";
/// Statically linked (Debian busybox-static): it is the only binary in `FROM scratch` images.
pub const BUSYBOX: &str = "/bin/busybox";
/// How long dockerd may take to answer `/_ping` after being started.
const READY_BOUND: Duration = Duration::from_secs(60);
/// How long dockerd may take to stop after SIGTERM before it gets SIGKILL. It stops running
/// containers first (10 s each by default; `running_container` sets 1 s).
const STOP_BOUND: Duration = Duration::from_secs(20);
/// Any single CLI or tool invocation.
const COMMAND_BOUND: Duration = Duration::from_secs(180);

/// A private dockerd; dropped, it leaves nothing behind (its filesystem goes with the last
/// engine on it).
pub struct PrivateDockerd {
    kind: DockerKind,
    dir: PathBuf,
    data_root: PathBuf,
    /// The root of the containerd the daemon keeps its images in, with the containerd image
    /// store (`<mount>/containerd`, or `<mount>/<name>-containerd` after `start_on`).
    containerd_root: Option<PathBuf>,
    /// Declared after the paths and dropped after `Drop::drop` has stopped the daemon.
    fs: SharedFs,
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
        let dir = scratch_dir(name);
        // A panic from here on drops `fs`, which tears down `dir`.
        let fs = SharedFs::make_in(dir.clone(), fs_mib, inodes);
        let data_root = fs.engine_root("docker");
        let containerd_root = (DockerKind::current() == DockerKind::BedContainerd)
            .then(|| fs.engine_root("containerd"));
        Some(PrivateDockerd::launch(dir, data_root, containerd_root, fs))
    }

    /// Starts a dockerd whose `--data-root` is `<fs mount>/<name>` on a filesystem shared with
    /// other engines; its exec root, socket and log are in a temp dir of its own, as with
    /// [`PrivateDockerd::start`]. `name` must be unique on `fs`. Skips like `start`.
    pub fn start_on(fs: &SharedFs, name: &str) -> Option<PrivateDockerd> {
        if !require(Service::Dockerd) {
            return None;
        }
        let data_root = fs.engine_root(name);
        let containerd_root = (DockerKind::current() == DockerKind::BedContainerd)
            .then(|| fs.engine_root(&format!("{name}-containerd")));
        Some(PrivateDockerd::launch(
            scratch_dir(name),
            data_root,
            containerd_root,
            fs.clone(),
        ))
    }

    fn launch(
        dir: PathBuf,
        data_root: PathBuf,
        containerd_root: Option<PathBuf>,
        fs: SharedFs,
    ) -> PrivateDockerd {
        // From here on, a panic drops `d` and tears down whatever was set up so far.
        let mut d = PrivateDockerd {
            kind: DockerKind::current(),
            dir,
            data_root,
            containerd_root,
            fs,
            child: None,
        };
        fs::create_dir_all(d.dir.join("cli")).unwrap_or_else(|e| panic!("creating cli dir: {e}"));
        // An explicit config keeps /etc/docker/daemon.json (if any) out of the test, and names
        // the image store (Docker 28 defaults to the classic one, 29 to containerd's).
        let daemon_json = match d.kind {
            DockerKind::Host => "{}\n",
            DockerKind::Bed => "{\"features\": {\"containerd-snapshotter\": false}}\n",
            DockerKind::BedContainerd => "{\"features\": {\"containerd-snapshotter\": true}}\n",
        };
        fs::write(d.dir.join("daemon.json"), daemon_json)
            .unwrap_or_else(|e| panic!("writing daemon.json: {e}"));
        if d.kind.is_bed() {
            // The 28 CLI finds buildx in the root.
            let cli_config = format!(
                "{{\"cliPluginsExtraDirs\": [\"{}\"]}}\n",
                bed::in_root(BED_CLI_PLUGINS).display()
            );
            fs::write(d.dir.join("cli").join("config.json"), cli_config)
                .unwrap_or_else(|e| panic!("writing the CLI's config.json: {e}"));
        }
        d.spawn_daemon();
        bed::record_engine(Service::Dockerd, &d.socket());
        d
    }

    /// `unix:///tmp/dic-it-…/docker.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// dockerd's `--data-root` (`<mount>/docker`, or `<mount>/<name>` after `start_on`): what the
    /// cleaner measures as its path to check, in place of `/var/lib/docker`. It is on the loop
    /// filesystem, so `statvfs` of it is the filesystem's.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// Which flavour of the matrix this daemon is.
    pub fn kind(&self) -> DockerKind {
        self.kind
    }

    /// How many times a layer's bytes are on the disk: once with the classic store (the
    /// unpacked layer under the data root); twice with the containerd image store, which keeps
    /// the layer's blob in its content store beside the unpacked snapshot (the test images'
    /// random payloads do not compress).
    pub fn copies_per_layer(&self) -> u64 {
        if self.containerd_root.is_some() { 2 } else { 1 }
    }

    /// With the containerd image store, the root of the containerd that holds the images (on
    /// the same filesystem as the data root); `None` with the classic store.
    pub fn containerd_root(&self) -> Option<&Path> {
        self.containerd_root.as_deref()
    }

    /// Runs containerd's own CLI (`ctr`, from the bed's root, in this daemon's namespace)
    /// against this daemon's containerd; panics unless it succeeds, or when the daemon has no
    /// containerd of the test's own (the classic store). Paths in `args` must be under this
    /// daemon's dir (the namespace sees that and the filesystem, nothing else of /tmp).
    pub fn ctr(&self, args: &[&str]) -> Output {
        assert!(
            self.containerd_root.is_some(),
            "ctr needs the containerd image store's containerd"
        );
        let mut cmd = bed::command_in(&self.dir, "/usr/bin/ctr");
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .args(args);
        let out = host::run(cmd, COMMAND_BOUND);
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// The payload that takes about `disk_mib` MiB of the disk in this daemon's store: the same
    /// with the classic store, half with the containerd image store (its blob and its
    /// snapshot). Tests whose watermarks are fractions of the disk size their images with it, so
    /// that each image is the same share of the disk on every engine.
    pub fn payload_mib(&self, disk_mib: u64) -> u64 {
        disk_mib / self.copies_per_layer()
    }

    /// Every directory holding this daemon's bytes: its data root and, with the containerd
    /// image store, its containerd's root (which holds no other namespace here).
    pub fn storage_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.data_root.clone()];
        dirs.extend(self.containerd_root.clone());
        dirs
    }

    /// The directory that holds the unpacked layers: `overlay2/` under the data root with the
    /// classic store, containerd's overlayfs snapshots under its root with the containerd
    /// image store.
    pub fn layers_dir(&self) -> PathBuf {
        match &self.containerd_root {
            Some(root) => root.join("io.containerd.snapshotter.v1.overlayfs"),
            None => self.data_root.join("overlay2"),
        }
    }

    /// The loop filesystem's mount point (parent of the data root and of the filler).
    pub fn mount_point(&self) -> &Path {
        self.fs.mount_point()
    }

    /// The filesystem the data root is on (shared with other engines after `start_on`).
    pub fn fs(&self) -> &SharedFs {
        &self.fs
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
        let mut out = self.try_docker(args);
        // The containerd image store lists an image being removed, then fails the whole list
        // "NotFound: content digest …" (Docker 28): a listing is asked again.
        let listing = matches!(args.first(), Some(&("images" | "ps")));
        for _ in 0..5 {
            if out.status.success()
                || !listing
                || !String::from_utf8_lossy(&out.stderr).contains("NotFound")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            out = self.try_docker(args);
        }
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
        let mut cmd = Command::new(self.cli_path());
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
    /// it again on the same data root and socket, also after [`PrivateDockerd::stop`]. Returns
    /// once the API answers again.
    pub fn restart(&mut self) {
        self.stop_daemon();
        self.spawn_daemon();
    }

    /// Stops dockerd as [`PrivateDockerd::restart`] does and leaves it down: its images stay on
    /// the disk, its socket refuses connections (an engine that is down). The CLI and
    /// [`PrivateDockerd::api`] fail until `restart`.
    pub fn stop(&mut self) {
        self.stop_daemon();
    }

    /// The API socket (`<dir>/docker.sock`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `method path` on this daemon's API, raw (no version prefix, as bollard 0.21 sends
    /// them); see [`api::request`].
    pub fn api(&self, method: &str, path: &str) -> Reply {
        api::request(&self.socket(), method, path)
    }

    /// `statvfs` of the data root's filesystem.
    pub fn fs_stat(&self) -> FsStat {
        self.fs.fs_stat()
    }

    /// (blocks used %, inodes used %) of the data root's filesystem; see [`FsStat`].
    pub fn used_pct(&self) -> (f64, f64) {
        self.fs.used_pct()
    }

    /// [`SharedFs::fill_to`] on the data root's filesystem.
    pub fn fill_to(&self, pct: f64) {
        self.fs.fill_to(pct);
    }

    /// [`SharedFs::clear_filler`] on the data root's filesystem.
    pub fn clear_filler(&self) {
        self.fs.clear_filler();
    }

    /// The CLI matching the daemon: 20.10 for the host's, 28 (with buildx) for the bed's.
    pub fn cli_path(&self) -> PathBuf {
        if self.kind.is_bed() {
            bed::in_root(BED_DOCKER_CLI)
        } else {
            PathBuf::from(DOCKER_CLI)
        }
    }

    fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The containerd of the containerd image store: from the root, in this daemon's
    /// namespace, its root on the test's filesystem and everything else in this dir. It stays
    /// up across [`PrivateDockerd::restart`], as the system's containerd does when Docker
    /// restarts.
    fn spawn_containerd(&mut self) {
        let root = self
            .containerd_root
            .clone()
            .unwrap_or_else(|| panic!("spawn_containerd without a containerd root"));
        let d = self.dir.display();
        let config = format!(
            "version = 3\nroot = \"{root}\"\nstate = \"{d}/containerd-state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/containerd-opt\"\n",
            root = root.display(),
        );
        let _ = fs::remove_file(self.containerd_socket());
        let config_path = self.dir.join("containerd.toml");
        fs::write(&config_path, config).unwrap_or_else(|e| panic!("writing containerd.toml: {e}"));
        let log = self.dir.join("containerd.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening containerd.log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of containerd.log: {e}"));
        let mut cmd = bed::command_in(&self.dir, BED_CONTAINERD);
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning containerd: {e}")),
        );
        let socket = self.containerd_socket();
        let up = wait_until(READY_BOUND, || {
            api::socket_answers(&socket)
                || matches!(child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
        });
        if !up || !api::socket_answers(&socket) {
            let text = fs::read_to_string(&log).unwrap_or_default();
            panic!("containerd did not open {}:\n{text}", socket.display());
        }
        // Its process is found and stopped by its command line (it names this dir).
        drop(child);
    }

    /// The bed's namespace (and, with the containerd image store, the test's containerd) for
    /// this daemon: made on the first start, and again after a stop, whose sweep of every
    /// process naming this dir ended them.
    fn ensure_bed(&mut self) {
        if !bed::namespace_alive(&self.dir) {
            let mount = self.fs.mount_point().to_path_buf();
            let more: Vec<&Path> = if mount.starts_with(&self.dir) {
                Vec::new()
            } else {
                vec![mount.as_path()]
            };
            bed::namespace(&self.dir, &more);
        }
        if self.containerd_root.is_some() && !api::socket_answers(&self.containerd_socket()) {
            self.spawn_containerd();
        }
    }

    fn spawn_daemon(&mut self) {
        if self.kind.is_bed() {
            self.ensure_bed();
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening dockerd.log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of dockerd.log: {e}"));
        let _ = fs::remove_file(self.socket());
        let mut cmd = if self.kind.is_bed() {
            bed::command_in(&self.dir, BED_DOCKERD)
        } else {
            Command::new(DOCKERD)
        };
        match self.kind {
            // Explicit, so sizes are those of overlay2 and a fallback to vfs cannot hide.
            DockerKind::Host | DockerKind::Bed => {
                cmd.arg("--storage-driver=overlay2");
            }
            // The snapshotter is containerd's overlayfs, its default.
            DockerKind::BedContainerd => {
                cmd.arg(format!(
                    "--containerd={}",
                    self.containerd_socket().display()
                ));
            }
        }
        private_daemon_args(
            &mut cmd,
            &self.data_root,
            &self.dir.join("exec"),
            &self.dir,
            &self.host(),
        );
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning dockerd ({:?}): {e}", self.kind));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let socket = self.socket();
        if let Err(why) = api::wait_for_ping(&mut self.child, &socket, READY_BOUND) {
            panic!("dockerd {why}\n{}", self.log_tail(30));
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
        // A SIGKILLed daemon leaves its overlay mounts; its own filesystem's teardown would
        // catch them, a shared one's only after every engine on it is gone.
        host::unmount_under(&self.data_root);
        if self.dir != self.fs.dir() {
            host::teardown_dir(&self.dir);
        }
        // Then `fs` drops: the filesystem goes if this was its last engine.
    }
}

/// The flags that keep a test's dockerd to itself: its data root, exec root, pidfile (in `dir`),
/// `dir/daemon.json` and socket `host`; no docker0 bridge, no iptables or sysctl changes, so
/// nothing is shared with other daemons.
pub(crate) fn private_daemon_args(
    cmd: &mut Command,
    data_root: &Path,
    exec_root: &Path,
    dir: &Path,
    host: &str,
) {
    cmd.arg(format!("--data-root={}", data_root.display()))
        .arg(format!("--exec-root={}", exec_root.display()))
        .arg(format!("--pidfile={}", dir.join("docker.pid").display()))
        .arg(format!(
            "--config-file={}",
            dir.join("daemon.json").display()
        ))
        .arg(format!("--host={host}"))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
        ]);
}
