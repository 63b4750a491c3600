//! [`EngineCli`]: what a test does to an engine through its own command-line client, written
//! once for the `docker` and the `podman` CLI (they take the same arguments for these): the
//! containers in each state and the listings, sorted for comparison. Importing images is each
//! harness's own (the CLIs differ there).

use std::process::Output;

/// An engine a test drives through its CLI.
pub trait EngineCli {
    /// Runs the engine's CLI with `args`, panicking (with its output) when it fails.
    fn cli(&self, args: &[&str]) -> Output;

    /// A container from `image` that ran `/busybox true` and exited (state `exited`); returns
    /// its id.
    fn stopped_container(&self, image: &str) -> String {
        let id = self.created_container(image);
        self.cli(&["start", "--attach", &id]);
        // The attach ends with the process; the engine records the container as exited a
        // moment later (seen on Docker 28 under load: a pass listed it as running).
        self.cli(&["wait", &id]);
        id
    }

    /// A container from `image` that was created and never started (state `created`); returns
    /// its id.
    fn created_container(&self, image: &str) -> String {
        stdout_line(&self.cli(&["create", "--network=none", image, "/busybox", "true"]))
    }

    /// A running container from `image` (`/busybox sleep 3600`); returns its id. Its stop
    /// timeout is 1 s (busybox as PID 1 ignores SIGTERM), so teardown and `restart` do not wait
    /// 10 s.
    fn running_container(&self, image: &str) -> String {
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
        stdout_line(&self.cli(&args))
    }

    /// Ids (`sha256:…`) of all images present, sorted, without duplicates.
    fn image_ids(&self) -> Vec<String> {
        lines(&self.cli(&["images", "--all", "--quiet", "--no-trunc"]))
    }

    /// `repo:tag` of every tagged image, sorted.
    fn tags(&self) -> Vec<String> {
        let out = self.cli(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
        lines(&out)
            .into_iter()
            .filter(|t| !t.contains("<none>"))
            .collect()
    }

    /// Full ids of all containers, whatever their state, sorted.
    fn container_ids(&self) -> Vec<String> {
        lines(&self.cli(&["ps", "--all", "--quiet", "--no-trunc"]))
    }
}

/// The first line of a command's stdout, trimmed.
pub(in crate::util) fn stdout_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The non-empty lines of a command's stdout, trimmed, sorted, without duplicates.
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
