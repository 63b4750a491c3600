//! Which engine a real-engine test runs on: the matrix of `scripts/test.sh`.
//!
//! Owns: the choice of Docker and Podman flavour for this test process (`DIC_TEST_DOCKER`,
//! `DIC_TEST_PODMAN`), the engines test bed's root (`tests/engines/bed.sh`, a debootstrapped
//! Debian sid with Docker 28, containerd 2.1 and Podman 5.8) and the commands that run a daemon
//! or a CLI from it. Must not: start a daemon itself (that is [`super::dockerd`] and
//! [`super::podman`]), or decide whether a test may run (that is [`super::require`]).
//!
//! The flavours:
//! - `DIC_TEST_DOCKER`: `host` (default: Debian 12's docker.io 20.10 and its CLI), `bed`
//!   (dockerd 28 from the root, overlay2 through its own managed containerd, the 28 CLI with
//!   buildx) or `bed-containerd` (dockerd 28 with the containerd image store, on a containerd
//!   2.1 of the test's own whose root is on the test's filesystem).
//! - `DIC_TEST_PODMAN`: `host` (default: Debian 12's podman 4.3) or `bed` (podman 5.8 from the
//!   root, with runc).
//!
//! A daemon from the root runs chrooted in a mount namespace of its test's
//! (`bed.sh ns`, `bed.sh run`): the module docs of `tests/engines/bed.sh` say why and how.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::api;
use super::host;
use super::ledger::{Entry, Ledger, Outcome};
use super::require::Service;

/// The bed's script, from the crate root.
pub const BED_SH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/engines/bed.sh");

/// Any call of the script but `ensure`.
const SCRIPT_BOUND: Duration = Duration::from_secs(60);

/// Which Docker Engine the dockerd tests of this process run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerKind {
    /// Debian 12's dockerd 20.10 (`/usr/sbin/dockerd`) with its 20.10 CLI.
    Host,
    /// dockerd 28 from the bed's root, overlay2 (the classic image store).
    Bed,
    /// dockerd 28 from the bed's root with the containerd image store, on a containerd 2.1 of
    /// the test's own.
    BedContainerd,
}

impl DockerKind {
    /// The flavour named by `DIC_TEST_DOCKER`; panics on a value it does not know (a typo must
    /// not quietly run the host's engine).
    pub fn current() -> DockerKind {
        static KIND: OnceLock<DockerKind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("DIC_TEST_DOCKER").ok().as_deref() {
            None | Some("") | Some("host") => DockerKind::Host,
            Some("bed") => DockerKind::Bed,
            Some("bed-containerd") => DockerKind::BedContainerd,
            Some(other) => {
                panic!("DIC_TEST_DOCKER={other:?}: expected host, bed or bed-containerd")
            }
        })
    }

    /// The flavour's name in the ledger.
    pub fn label(self) -> &'static str {
        match self {
            DockerKind::Host => "docker-host",
            DockerKind::Bed => "docker-bed",
            DockerKind::BedContainerd => "docker-bed-containerd",
        }
    }

    /// True for the flavours run from the bed's root.
    pub fn is_bed(self) -> bool {
        self != DockerKind::Host
    }
}

/// Which Podman the podman tests of this process run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodmanKind {
    /// Debian 12's podman 4.3.
    Host,
    /// podman 5.8 from the bed's root.
    Bed,
}

impl PodmanKind {
    /// The flavour named by `DIC_TEST_PODMAN`; panics on a value it does not know.
    pub fn current() -> PodmanKind {
        static KIND: OnceLock<PodmanKind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("DIC_TEST_PODMAN").ok().as_deref() {
            None | Some("") | Some("host") => PodmanKind::Host,
            Some("bed") => PodmanKind::Bed,
            Some(other) => panic!("DIC_TEST_PODMAN={other:?}: expected host or bed"),
        })
    }

    /// The flavour's name in the ledger.
    pub fn label(self) -> &'static str {
        match self {
            PodmanKind::Host => "podman-host",
            PodmanKind::Bed => "podman-bed",
        }
    }
}

/// The bed's root when it is complete (`bed.sh path`), looked up once per process; `None`
/// when it was never made (`bed.sh ensure`, which `scripts/test.sh` runs).
pub fn root() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut cmd = Command::new(BED_SH);
        cmd.arg("path");
        let out = host::run(cmd, SCRIPT_BOUND);
        out.status
            .success()
            .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            .filter(|p| p.is_dir())
    })
    .as_deref()
}

/// The bed's root; panics when there is none (the caller's `require` checked it).
pub fn root_or_panic() -> &'static Path {
    root().unwrap_or_else(|| panic!("no engines root: run `{BED_SH} ensure` (require checks it)"))
}

/// A path inside the root, as the host sees it (`/usr/bin/docker` → `<root>/usr/bin/docker`).
pub fn in_root(path: &str) -> PathBuf {
    root_or_panic().join(path.trim_start_matches('/'))
}

/// Starts the mount namespace for the daemons of `dir` (`bed.sh ns`), with `dir` and `more`
/// bind-mounted at their own paths inside; its holder's command line names them all, so the
/// teardown of `dir` ends it. Make every filesystem under them before: later mounts are not
/// seen inside.
pub fn namespace(dir: &Path, more: &[&Path]) {
    let mut cmd = Command::new(BED_SH);
    cmd.arg("ns").arg(dir).args(more);
    let out = host::run(cmd, SCRIPT_BOUND);
    assert!(
        out.status.success(),
        "bed.sh ns {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// True while the namespace of `dir` is held (its holder, named in `dir/holder.pid`, lives).
pub fn namespace_alive(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("holder.pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        .is_some_and(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("dic-bed-holder"))
        })
}

/// `program` from the root, chrooted in `dir`'s namespace (`bed.sh run`): the process is the
/// program itself (the script `exec`s), so its pid is the daemon's.
pub fn command_in(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(BED_SH);
    cmd.arg("run").arg(dir).arg(program);
    cmd
}

/// Records in the ledger which engine of `service`'s flavour answered on `socket`: its product,
/// version, API version and image store (`GET /version`, `GET /info`), for the matrix's table.
pub fn record_engine(service: Service, socket: &Path) {
    let version = api::request(socket, "GET", "/version").json();
    let info = api::request(socket, "GET", "/info").json();
    let text = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let podman = version["Components"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["Name"] == "Podman Engine"));
    let product = if podman { "Podman" } else { "Docker Engine" };
    let driver = text(&info["Driver"]);
    let snapshotter = info["DriverStatus"].as_array().is_some_and(|status| {
        status
            .iter()
            .any(|pair| pair[0] == "driver-type" && pair[1] == "io.containerd.snapshotter.v1")
    });
    let store = if snapshotter {
        format!("containerd image store ({driver} snapshotter)")
    } else {
        driver
    };
    let line = format!(
        "{product} {}, API {}, {store}",
        text(&version["Version"]),
        text(&version["ApiVersion"])
    );
    Ledger::current().record(&Entry {
        outcome: Outcome::Engine,
        service: service.name().to_string(),
        engine: service.engine().to_string(),
        test: "-".to_string(),
        reason: line,
    });
}
