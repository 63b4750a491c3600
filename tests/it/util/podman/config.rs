//! The configuration and environment of every podman process of a [`super::PrivatePodman`]:
//! its own `containers.conf`, `storage.conf` and `registries.conf`, and an environment that
//! names them and keeps HOME, XDG dirs and TMPDIR inside the service's dir. The reasons for each
//! setting are in the parent module's docs.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::util::bed::PodmanKind;
use crate::util::host;

/// Writes the three configuration files and makes the dirs they name.
pub(super) fn write(dir: &Path, root: &Path, kind: PodmanKind) {
    for sub in ["run", "tmp", "net", "home", "cli"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    }
    // The bed's Podman runs chrooted in its root: its own runc (crun, Podman 5's default,
    // refuses this host's hybrid cgroups), and netavark (Podman 5 has no CNI backend).
    let (runc, network_backend) = match kind {
        PodmanKind::Host => (
            host::find_in_path("runc")
                .unwrap_or_else(|| panic!("no runc (require(Service::Podman) checks for it)")),
            "cni",
        ),
        PodmanKind::Bed => (std::path::PathBuf::from("/usr/bin/runc"), "netavark"),
    };
    let (nofile, nproc) = (
        own_hard_limit("Max open files"),
        own_hard_limit("Max processes"),
    );
    // Podman lowers its own process limit to 32768 when it may (conmon and the container
    // inherit that), so a container may not ask for more.
    let nproc = nproc.min(32768);
    let d = dir.display();
    let containers = format!(
        r#"# Written by the test harness (tests/it/util/podman/config.rs); the only file read.
[containers]
netns = "none"
log_driver = "k8s-file"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]
# With AppArmor on and no apparmor_parser, loading Podman's default profile fails every start.
apparmor_profile = "unconfined"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
lock_type = "file"
tmp_dir = "{d}/tmp"
image_copy_tmp_dir = "{d}/tmp"
runtime = "runc"

[engine.runtimes]
runc = ["{runc}"]

[network]
network_backend = "{network_backend}"
network_config_dir = "{d}/net"
"#,
        runc = runc.display(),
    );
    let storage = format!(
        r#"[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{d}/run"
"#,
        root = root.display(),
    );
    // No registries: nothing can be pulled, short names stay local.
    let registries = "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n";
    for (name, text) in [
        ("containers.conf", containers.as_str()),
        ("storage.conf", storage.as_str()),
        ("registries.conf", registries),
    ] {
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// Points `cmd` at the configuration written by [`write`] and at nothing of the machine's.
pub(super) fn apply_env(cmd: &mut Command, dir: &Path) {
    let home = dir.join("home");
    cmd.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .env("CONTAINERS_STORAGE_CONF", dir.join("storage.conf"))
        .env("CONTAINERS_REGISTRIES_CONF", dir.join("registries.conf"))
        .env("TMPDIR", dir.join("tmp"))
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("CONTAINER_HOST")
        .env_remove("CONTAINER_CONNECTION")
        .env_remove("DOCKER_HOST");
}

/// This process's hard limit on the line of `/proc/self/limits` starting with `label`; a
/// generous 1048576 when it is "unlimited" or unreadable (Podman's own default).
fn own_hard_limit(label: &str) -> u64 {
    const PODMAN_DEFAULT: u64 = 1_048_576;
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix(label))
        // Soft, hard, unit.
        .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
        .map_or(PODMAN_DEFAULT, |hard: u64| hard.min(PODMAN_DEFAULT))
}
