//! Images and containers of a [`PrivateDockerd`], through the 20.10 CLI: images imported
//! `FROM scratch` around the static busybox with random payloads (so sizes are known and no two
//! images share a layer), containers in each state, and listings sorted for comparison.

use std::fs::{self, File};
use std::io::Read;
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

use docker_image_cleaner::policy::COMMIT_WINDOW;

use super::{BUSYBOX, PrivateDockerd};
use crate::util::cli::{EngineCli, stdout_line};
use crate::util::loopfs::MIB;
use crate::util::rootfs::{CMD_CHANGE, RootfsTar};

/// Numbers the build contexts of one test process.
static NEXT_BUILD: AtomicU64 = AtomicU64::new(0);

impl EngineCli for PrivateDockerd {
    fn cli(&self, args: &[&str]) -> Output {
        self.docker(args)
    }
}

impl PrivateDockerd {
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

    /// An untagged (dangling) image of `payload_mib` MiB; returns its id once the image is
    /// older than the cleaner's commit window (an untagged image without a parent made less
    /// than 10 s ago may be a classic build's step whose parent Docker has not named yet, and
    /// stays): what a pass finds of an import or a load made a while ago.
    pub fn dangling_image(&self, payload_mib: u64) -> String {
        let id = self.import(None, payload_mib, 0);
        // A second more for `Created`'s whole seconds.
        std::thread::sleep(COMMIT_WINDOW + std::time::Duration::from_secs(1));
        id
    }

    /// Like [`PrivateDockerd::image`], with `labels` (`key=value`) set on the image.
    pub fn image_with_labels(&self, tag: &str, payload_mib: u64, labels: &[&str]) -> String {
        self.import_with(Some(tag), payload_mib, 0, labels)
    }

    /// Builds `tag` with BuildKit (the 20.10 CLI with `DOCKER_BUILDKIT=1`, offline) from a
    /// `FROM scratch` Dockerfile: `/busybox`, a context file of `context_mib` random MiB copied
    /// in, and a `RUN` step writing `run_mib` random MiB (`--network=none`: the daemon has no
    /// bridge). Returns the image's id. The build leaves build-cache records: the context's
    /// (never shared with an image) and one per step (shared with the image while it exists).
    pub fn buildkit_image(&self, tag: &str, context_mib: u64, run_mib: u64) -> String {
        let n = NEXT_BUILD.fetch_add(1, Ordering::Relaxed);
        let ctx = self.dir().join(format!("build-{n}"));
        let fail =
            |what: &str, e: std::io::Error| -> ! { panic!("{what} in {}: {e}", ctx.display()) };
        fs::create_dir_all(&ctx).unwrap_or_else(|e| fail("mkdir", e));
        fs::copy(BUSYBOX, ctx.join("busybox")).unwrap_or_else(|e| fail("copying busybox", e));
        let mut src =
            File::open("/dev/urandom").unwrap_or_else(|e| fail("opening /dev/urandom", e));
        let mut dst =
            File::create(ctx.join("payload")).unwrap_or_else(|e| fail("creating payload", e));
        let copied = std::io::copy(&mut (&mut src).take(context_mib * MIB), &mut dst)
            .unwrap_or_else(|e| fail("writing payload", e));
        assert_eq!(copied, context_mib * MIB, "short read from /dev/urandom");
        let dockerfile = format!(
            "FROM scratch\nCOPY busybox /busybox\nCOPY payload /payload\n\
             RUN [\"/busybox\", \"sh\", \"-c\", \"/busybox head -c {} /dev/urandom > /generated\"]\n",
            run_mib * MIB
        );
        fs::write(ctx.join("Dockerfile"), dockerfile).unwrap_or_else(|e| fail("Dockerfile", e));
        let ctx_path = ctx.display().to_string();
        let args = ["build", "--network=none", "--tag", tag, ctx_path.as_str()];
        let out = self.try_docker_env(&args, &[("DOCKER_BUILDKIT", "1")]);
        assert!(
            out.status.success(),
            "docker build (BuildKit) of {tag} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        fs::remove_dir_all(&ctx).unwrap_or_else(|e| fail("removing the context", e));
        let id = stdout_line(&self.docker(&["image", "inspect", "--format", "{{.Id}}", tag]));
        assert!(
            id.starts_with("sha256:"),
            "docker image inspect printed {id:?}"
        );
        id
    }

    /// The build cache's records as `GET /system/df` lists them: (id, bytes, shared with an
    /// image).
    pub fn build_cache(&self) -> Vec<(String, u64, bool)> {
        let reply = self.api("GET", "/system/df");
        assert_eq!(reply.status, 200, "GET /system/df: {}", reply.text);
        let v = reply.json();
        v["BuildCache"]
            .as_array()
            .map(|records| {
                records
                    .iter()
                    .map(|r| {
                        (
                            r["ID"].as_str().unwrap_or_default().to_string(),
                            r["Size"].as_u64().unwrap_or(0),
                            r["Shared"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Bytes of the build cache not shared with an image (what `docker system df` counts).
    pub fn build_cache_bytes(&self) -> u64 {
        self.build_cache()
            .iter()
            .filter(|(_, _, shared)| !shared)
            .map(|(_, bytes, _)| bytes)
            .sum()
    }

    fn import(&self, tag: Option<&str>, payload_mib: u64, files: u64) -> String {
        self.import_with(tag, payload_mib, files, &[])
    }

    /// [`PrivateDockerd::import`] with `LABEL` changes.
    /// Stages a rootfs tarball (on /tmp, not the loop fs) and `docker import`s it, with a
    /// `LABEL` change for each of `labels`.
    fn import_with(
        &self,
        tag: Option<&str>,
        payload_mib: u64,
        files: u64,
        labels: &[&str],
    ) -> String {
        let tar = RootfsTar::build(self.dir(), payload_mib, files);
        let label_changes: Vec<String> = labels.iter().map(|l| format!("LABEL {l}")).collect();
        let mut args = vec!["import", "--change", CMD_CHANGE];
        for change in &label_changes {
            args.extend(["--change", change.as_str()]);
        }
        args.push(tar.path());
        args.extend(tag);
        let id = stdout_line(&self.docker(&args));
        assert!(id.starts_with("sha256:"), "docker import printed {id:?}");
        id
    }
}
