//! Images and containers of a [`PrivatePodman`], through the podman CLI: images imported
//! `FROM scratch` around the static busybox with random payloads (the same tarballs as the
//! dockerd harness's), containers in each state, and listings sorted for comparison.
//!
//! Names: `podman import x tag` stores `localhost/<tag>` (a short name is local to Podman),
//! while a tag made through the Docker-compatible API is normalised to `docker.io/library/<tag>`.

use std::fs;
use std::process::{Command, Output};

use super::{BED_DOCKER_CLI, COMMAND_BOUND, PODMAN, PrivatePodman, config};
use crate::util::bed::{self, PodmanKind};
use crate::util::cli::{EngineCli, stdout_line};
use crate::util::dockerd::{BUSYBOX, DOCKER_CLI};
use crate::util::host;
use crate::util::loopfs::next_id;
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

impl PrivatePodman {
    /// Builds `tag` through the service's Docker-compatible `POST /build` with the classic
    /// builder (the Docker CLI of this flavour, `DOCKER_BUILDKIT=0`, `--network=none`), from
    /// `dockerfile` with the static busybox in the context as `busybox`; returns the image's id
    /// (`sha256:…`). The build runs in Podman's service, as a `docker build` on a node does,
    /// and logs its `build` event there.
    pub fn build_through_service(&self, tag: &str, dockerfile: &str) -> String {
        let ctx = self.dir().join(format!("build-{}", next_id()));
        let fail =
            |what: &str, e: std::io::Error| -> ! { panic!("{what} in {}: {e}", ctx.display()) };
        fs::create_dir_all(&ctx).unwrap_or_else(|e| fail("mkdir", e));
        fs::copy(BUSYBOX, ctx.join("busybox")).unwrap_or_else(|e| fail("copying busybox", e));
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap_or_else(|e| fail("Dockerfile", e));
        let mut cmd = match self.kind() {
            PodmanKind::Host => Command::new(DOCKER_CLI),
            PodmanKind::Bed => Command::new(bed::in_root(BED_DOCKER_CLI)),
        };
        cmd.arg("--config")
            .arg(self.dir().join("cli"))
            .arg("--host")
            .arg(self.host())
            .args(["build", "--network=none", "--tag", tag])
            .arg(&ctx)
            .env("DOCKER_BUILDKIT", "0");
        for var in [
            "DOCKER_HOST",
            "DOCKER_CONTEXT",
            "DOCKER_TLS_VERIFY",
            "DOCKER_CERT_PATH",
        ] {
            cmd.env_remove(var);
        }
        let out = host::run(cmd, COMMAND_BOUND);
        self.check(
            "docker (classic build through the service)",
            &["build", tag],
            &out,
        );
        fs::remove_dir_all(&ctx).unwrap_or_else(|e| fail("removing the context", e));
        let r = self.api("GET", &format!("/images/{tag}/json"));
        assert_eq!(r.status, 200, "inspect {tag} after its build: {}", r.text);
        let id = r.json()["Id"].as_str().unwrap_or_default().to_string();
        assert!(id.starts_with("sha256:"), "{tag}: {}", r.text);
        id
    }
}
