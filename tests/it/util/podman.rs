//! A real, private, rootful `podman system service` per test: Podman's Docker-compatible API on a
//! unix socket, with its storage on a loop-mounted ext4 filesystem of its own or on a
//! [`SharedFs`] with other engines.
//!
//! Owns: one temp dir per service (`/tmp/dic-it-<pid>-<n>-<name>`) with Podman's own
//! configuration, run root, tmp dir, socket and log; the service, the conmon monitors and
//! container processes it or the [`PrivatePodman::podman`] CLI starts; and their teardown. Must
//! not: touch the machine's Podman storage (`/var/lib/containers`), its configuration
//! (`/etc/containers`, `/usr/share/containers`), its run dirs (`/run/containers`, `/run/libpod`)
//! or its shared-memory locks (`/dev/shm/libpod_lock`); pull anything; depend on the library
//! under test.
//!
//! Layout of a service's dir; with [`PrivatePodman::start`] it also holds the filesystem and the
//! storage root is `fs/podman`; with [`PrivatePodman::start_on`] it is `<shared mount>/<name>`:
//! ```text
//! containers.conf storage.conf registries.conf   CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, CONTAINERS_REGISTRIES_CONF
//! run/          --runroot (container state, shm mounts)
//! tmp/          the engine's tmp dir: file locks, events/events.log, exit files; also TMPDIR
//! net/          network config dir (CNI; unused: every container has --network=none)
//! home/         HOME and XDG dirs of every podman process
//! podman.sock   the API socket; podman.log; cli/ (DOCKER_CONFIG for the 20.10 Docker CLI)
//! ```
//!
//! Choices, each needed on the machines this was written on (Debian 12, podman 4.3.1, runc
//! 1.1.5, cgroup v1 without a systemd manager, root without `CAP_SYS_RESOURCE`):
//! - storage driver `overlay`: the kernel's overlayfs on ext4 works as root; layers are stored
//!   once and containers get a thin upper dir, as dockerd's overlay2 does, so sizes compare.
//!   `vfs` would copy a whole image per container and per layer, slower and unlike a node.
//! - `lock_type = "file"` (in `tmp/`): the default SHM locks live in `/dev/shm/libpod_lock`,
//!   shared by every rootful Podman on the machine, and a fresh run root frees all of them.
//! - `events_logger = "file"`: the API's `/events` reads it; no journald needed.
//! - `cgroup_manager = "cgroupfs"`: works without systemd; `cgroups = "disabled"` would need crun.
//! - `default_ulimits` at this process's own limits: Podman asks for 1048576 open files and
//!   processes by default, which runc cannot set without `CAP_SYS_RESOURCE`.
//! - `apparmor_profile = "unconfined"`: where AppArmor is on, Podman would load its default
//!   profile with `apparmor_parser`, which a minimal machine lacks.
//! - images are imported in a private mount namespace with a tmpfs on `/var/lib`: podman 4.3
//!   (containers-common 0.50) writes its blob-info cache to `/var/lib/containers/cache` whatever
//!   `--root` says, on every import, load or pull. Do not import through the service either
//!   (`docker import` against the socket): the service would write that cache.
//!
//! Skipping: both constructors go through [`require`]`(Service::Podman)`. Teardown runs in
//! `Drop`, also when the test panicked: SIGTERM to the service (bounded, then SIGKILL), SIGKILL to
//! every process naming this dir (conmon names its exit dir here) and their descendants
//! (containers), and to what is left in our containers' cgroups; remove those cgroups; unmount
//! what is left under the storage root and the dir; remove the dir. The filesystem goes with
//! its last engine ([`SharedFs`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::api::{self, Reply};
use super::bed::{self, PodmanKind};
use super::dockerd::DOCKER_CLI;
use super::host::{self, FsStat};
use super::loopfs::{SharedFs, scratch_dir};
use super::require::{Service, require};
use super::wait_until;

mod config;
mod images;

/// Debian's podman 4.3 on the host; podman 5.8 at the same path inside the bed's root.
pub const PODMAN: &str = "/usr/bin/podman";
/// The Docker CLI inside the bed's root (28), for a Podman from the bed.
const BED_DOCKER_CLI: &str = "/usr/bin/docker";
/// The container monitor podman runs for each container.
pub const CONMON: &str = "/usr/bin/conmon";

/// How long the service may take to answer `/_ping` (it takes about 0.3 s).
const READY_BOUND: Duration = Duration::from_secs(30);
/// How long the service may take to stop after SIGTERM (it does not stop containers).
const STOP_BOUND: Duration = Duration::from_secs(10);
/// Any single CLI invocation.
const COMMAND_BOUND: Duration = Duration::from_secs(180);

/// A private Podman API service; dropped, it leaves nothing behind (its filesystem goes with the
/// last engine on it).
pub struct PrivatePodman {
    kind: PodmanKind,
    dir: PathBuf,
    root: PathBuf,
    /// Dropped after `Drop::drop` has stopped everything.
    fs: SharedFs,
    child: Option<Child>,
}

impl PrivatePodman {
    /// Starts a service whose storage root is on a fresh loop-mounted ext4 filesystem of
    /// `fs_mib` MiB, and waits until its API answers. Returns `None` when this machine cannot
    /// run it, recorded as a skip; panics instead under CI.
    pub fn start(name: &str, fs_mib: u64) -> Option<PrivatePodman> {
        if !require(Service::Podman) {
            return None;
        }
        let dir = scratch_dir(name);
        // A panic from here on drops `fs`, which tears down `dir`.
        let fs = SharedFs::make_in(dir.clone(), fs_mib, None);
        let root = fs.engine_root("podman");
        Some(PrivatePodman::launch(dir, root, fs))
    }

    /// Starts a service whose storage root (`--root`) is `<fs mount>/<name>` on a filesystem
    /// shared with other engines; everything else is in a temp dir of its own. `name` must be
    /// unique on `fs`. Skips like [`PrivatePodman::start`].
    pub fn start_on(fs: &SharedFs, name: &str) -> Option<PrivatePodman> {
        if !require(Service::Podman) {
            return None;
        }
        let root = fs.engine_root(name);
        Some(PrivatePodman::launch(scratch_dir(name), root, fs.clone()))
    }

    fn launch(dir: PathBuf, root: PathBuf, fs: SharedFs) -> PrivatePodman {
        // From here on, a panic drops `p` and tears down whatever was set up so far.
        let mut p = PrivatePodman {
            kind: PodmanKind::current(),
            dir,
            root,
            fs,
            child: None,
        };
        config::write(&p.dir, &p.root, p.kind);
        if p.kind == PodmanKind::Bed {
            let mount = p.fs.mount_point().to_path_buf();
            let more: Vec<&Path> = if mount.starts_with(&p.dir) {
                Vec::new()
            } else {
                vec![mount.as_path()]
            };
            bed::namespace(&p.dir, &more);
        }
        p.spawn_service();
        bed::record_engine(Service::Podman, &p.socket());
        p
    }

    /// Which flavour of the matrix this service is.
    pub fn kind(&self) -> PodmanKind {
        self.kind
    }

    /// `unix:///tmp/dic-it-…/podman.sock`, for `DOCKER_HOST` and the cleaner's engine list.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("podman.sock")
    }

    /// Podman's storage root (`--root`, like `/var/lib/containers/storage`): what the cleaner
    /// measures for this engine.
    pub fn data_root(&self) -> &Path {
        &self.root
    }

    /// The filesystem the storage root is on.
    pub fn fs(&self) -> &SharedFs {
        &self.fs
    }

    /// This service's temp dir (for [`super::loopfs::leftovers`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The service's log (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("podman.log")
    }

    /// `statvfs` of the storage root's filesystem.
    pub fn fs_stat(&self) -> FsStat {
        self.fs.fs_stat()
    }

    /// (blocks used %, inodes used %) of the storage root's filesystem.
    pub fn used_pct(&self) -> (f64, f64) {
        self.fs.used_pct()
    }

    /// `method path` on the service's Docker-compatible API, unversioned as bollard 0.21 sends
    /// it; see [`api::request`].
    pub fn api(&self, method: &str, path: &str) -> Reply {
        api::request(&self.socket(), method, path)
    }

    /// Runs `podman <args>` bound to this service's storage, run root and configuration (a
    /// separate process, as on a node where CI jobs use the CLI next to the service); panics
    /// with its output and the tail of the service log unless it succeeds.
    pub fn podman(&self, args: &[&str]) -> Output {
        let out = self.try_podman(args);
        self.check("podman", args, &out);
        out
    }

    /// [`PrivatePodman::podman`] that returns whatever happened (bounded in time).
    pub fn try_podman(&self, args: &[&str]) -> Output {
        host::run(self.podman_command(args), COMMAND_BOUND)
    }

    /// Runs a Docker CLI against this service's socket (Debian 12's 20.10 for the host's
    /// Podman, the bed's 28 for the bed's); panics unless it succeeds. `create`, `start`, `ps`,
    /// `images`, `tag`, `rmi` work; use [`PrivatePodman::image`] rather than `docker import`
    /// (see the module docs).
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = match self.kind {
            PodmanKind::Host => Command::new(DOCKER_CLI),
            PodmanKind::Bed => Command::new(bed::in_root(BED_DOCKER_CLI)),
        };
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
        let out = host::run(cmd, COMMAND_BOUND);
        self.check("docker", args, &out);
        out
    }

    /// Stops the service (SIGTERM, SIGKILL after a bound) and starts it again on the same
    /// storage and socket, also after [`PrivatePodman::stop`]. Containers keep running across
    /// it (conmon watches them, not the service). Returns once the API answers again.
    pub fn restart(&mut self) {
        self.stop_service();
        self.spawn_service();
    }

    /// Stops the service and leaves it down: the socket refuses connections, images stay on
    /// the disk, containers keep running. The CLI still works (it needs no service).
    pub fn stop(&mut self) {
        self.stop_service();
    }

    /// `podman` with the global flags and environment every podman process of this service gets
    /// (from the bed's root in this service's namespace, for the bed's flavour).
    fn podman_command(&self, args: &[&str]) -> Command {
        let mut cmd = match self.kind {
            PodmanKind::Host => Command::new(PODMAN),
            PodmanKind::Bed => bed::command_in(&self.dir, PODMAN),
        };
        config::apply_env(&mut cmd, &self.dir);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(self.dir.join("run"))
            .args(["--storage-driver", "overlay"])
            .args(args);
        cmd
    }

    fn check(&self, program: &str, args: &[&str], out: &Output) {
        if !out.status.success() {
            panic!(
                "{program} {} failed ({}):\nstdout: {}\nstderr: {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(15),
            );
        }
    }

    fn spawn_service(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening podman.log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of podman.log: {e}"));
        let _ = fs::remove_file(self.socket());
        let listen = self.host();
        let mut cmd = self.podman_command(&["system", "service", "--time=0", &listen]);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning podman ({:?}): {e}", self.kind));
        self.child = Some(child);
        let socket = self.socket();
        if let Err(why) = api::wait_for_ping(&mut self.child, &socket, READY_BOUND) {
            panic!("podman system service {why}\n{}", self.log_tail(30));
        }
    }

    fn stop_service(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                host::signal("TERM", &[child.id()]);
                if !wait_until(STOP_BOUND, || !matches!(child.try_wait(), Ok(None))) {
                    eprintln!("podman in {} ignored SIGTERM: SIGKILL", self.dir.display());
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_path().display())
    }

    /// Ids of every container in this storage, from its directory (no podman needed).
    fn container_dirs(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("overlay-containers")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.len() == 64 && n.chars().all(|c| c.is_ascii_hexdigit()))
            .collect()
    }
}

impl Drop for PrivatePodman {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds.
        self.stop_service();
        host::kill_processes_under(&self.dir);
        let ids = self.container_dirs();
        // Containers whose conmon died before us were reparented away from it: their cgroups
        // still name them.
        let cgroups = host::cgroups_named(&ids);
        let gone = wait_until(Duration::from_secs(5), || {
            let pids: Vec<u32> = cgroups.iter().flat_map(|c| host::cgroup_pids(c)).collect();
            host::signal("KILL", &pids);
            pids.is_empty()
        });
        if !gone {
            eprintln!(
                "container processes of {} survive SIGKILL",
                self.dir.display()
            );
        }
        host::remove_cgroups(&cgroups);
        host::unmount_under(&self.root);
        if self.dir != self.fs.dir() {
            host::teardown_dir(&self.dir);
        }
        // Then `fs` drops: the filesystem goes if this was its last engine.
    }
}
