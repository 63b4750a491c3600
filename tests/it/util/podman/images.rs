//! Images and containers of a [`PrivatePodman`], through the podman CLI: images imported
//! `FROM scratch` around the static busybox with random payloads (the same tarballs as the
//! dockerd harness's), containers in each state, and listings sorted for comparison.
//!
//! Names: `podman import x tag` stores `localhost/<tag>` (a short name is local to Podman),
//! while a tag made through the Docker-compatible API is normalised to `docker.io/library/<tag>`.

use std::process::{Command, Output};

use super::{COMMAND_BOUND, PODMAN, PrivatePodman, config};
use crate::util::bed::PodmanKind;
use crate::util::cli::{EngineCli, stdout_line};
use crate::util::host;
use crate::util::rootfs::{CMD_CHANGE, RootfsTar};

/// Mounts a private tmpfs on `/var/lib` in a new mount namespace, then runs its arguments: the
/// import's blob-info cache goes there instead of the machine's `/var/lib/containers/cache`.
const PRIVATE_VAR_LIB: &str =
    r#"mount -t tmpfs -o size=4m,mode=0755 dic-it-var-lib /var/lib && exec "$@""#;

impl EngineCli for PrivatePodman {
    fn cli(&self, args: &[&str]) -> Output {
        self.podman(args)
    }
}

impl PrivatePodman {
    /// Imports an image `FROM scratch` holding `/busybox` (default command `/busybox true`) and
    /// `/payload`, `payload_mib` MiB of random bytes, tagged `tag` (stored as
    /// `localhost/<tag>`); returns its id (`sha256:…`). No two images share a layer.
    pub fn image(&self, tag: &str, payload_mib: u64) -> String {
        self.import(Some(tag), payload_mib, 0)
    }

    /// An image without a name (dangling) of `payload_mib` MiB; returns its id.
    pub fn dangling_image(&self, payload_mib: u64) -> String {
        self.import(None, payload_mib, 0)
    }

    /// Runs `podman <args>` like [`PrivatePodman::podman`], in a private mount namespace with a
    /// tmpfs on `/var/lib` (see [`PRIVATE_VAR_LIB`]): for the commands that copy images
    /// (`import`, `load`, `save`), which would write the machine's blob-info cache.
    pub fn podman_copying(&self, args: &[&str]) -> Output {
        if self.kind() == PodmanKind::Bed {
            // The bed's namespace has a tmpfs of its own on the root's /var/lib.
            return self.podman(args);
        }
        let mut cmd = Command::new("unshare");
        config::apply_env(&mut cmd, self.dir());
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            PRIVATE_VAR_LIB,
        ])
        .args(["sh", PODMAN, "--root"])
        .arg(self.data_root())
        .arg("--runroot")
        .arg(self.dir().join("run"))
        .args(["--storage-driver", "overlay"])
        .args(args);
        let out = host::run(cmd, COMMAND_BOUND);
        self.check("podman (private /var/lib)", args, &out);
        out
    }

    /// Stages a rootfs tarball in this service's dir and `podman import`s it.
    fn import(&self, tag: Option<&str>, payload_mib: u64, files: u64) -> String {
        let tar = RootfsTar::build(self.dir(), payload_mib, files);
        let mut args = vec!["import", "--quiet", "--change", CMD_CHANGE, tar.path()];
        args.extend(tag);
        let id = stdout_line(&self.podman_copying(&args));
        assert!(id.starts_with("sha256:"), "podman import printed {id:?}");
        id
    }
}
