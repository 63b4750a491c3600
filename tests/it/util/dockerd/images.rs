//! Images and containers of a [`PrivateDockerd`], through the 20.10 CLI: images imported
//! `FROM scratch` around the static busybox with random payloads (so sizes are known and no two
//! images share a layer), containers in each state, and listings sorted for comparison.

use std::process::Output;

use super::PrivateDockerd;
use crate::util::rootfs::{CMD_CHANGE, RootfsTar};

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

    /// Stages a rootfs tarball (on /tmp, not the loop fs) and `docker import`s it.
    fn import(&self, tag: Option<&str>, payload_mib: u64, files: u64) -> String {
        let tar = RootfsTar::build(self.dir(), payload_mib, files);
        let mut args = vec!["import", "--change", CMD_CHANGE, tar.path()];
        args.extend(tag);
        let id = stdout_line(&self.docker(&args));
        assert!(id.starts_with("sha256:"), "docker import printed {id:?}");
        id
    }
}

pub(in crate::util) fn stdout_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(in crate::util) fn lines(out: &Output) -> Vec<String> {
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
