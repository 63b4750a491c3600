//! docker-image-cleaner: keeps a Kubernetes node's Docker storage below a high watermark by removing
//! stopped containers and the least recently used images, cordoning the node while it works.
//!
//! # Layout
//! In import order: a module uses only those listed above it (and the leaves).
//! - [`config`]: the TOML file, `DOCKER_IMAGE_CLEANER_*` overrides and flags, validated into [`config::Config`].
//! - [`usage`]: native measurement: [`usage::Measurement`], `statvfs` percentages and a `du -sx` walk.
//! - [`docker`]: the only module that names bollard and tonic types; the [`docker::Engine`]
//!   trait, its implementations (the Docker Engine API through bollard, the kubelet's CRI
//!   runtime through k8s-cri, either as [`docker::AnyEngine`]) and an in-memory fake.
//! - [`lastuse`]: when each image was last used, per engine, fed with events; the state file.
//! - [`policy`]: the pure decisions: the plan (what goes, in which order, what stays and why) and
//!   the course of a running plan (what next, when to stop).
//! - [`node`]: the Kubernetes Node cordon guard.
//! - [`cycle`]: one cleaning pass: take stock, cordon, execute the course, release, report.
//! - [`metrics`]: the metric families, fed from each pass's report, the configuration and the
//!   cordon clock; the node_exporter textfile and the `GET /metrics` endpoint. Decides nothing.
//! - [`daemon`]: the loop around passes (`run`), the one-shot pass (`once`), shutdown.
//! - [`status`]: usage against the watermarks and the eviction order, deleting nothing.
//! - [`docs`]: the reference of every key and exit code, for the README and the man page.
//!
//! Leaves, imported by anyone, importing nothing of the crate:
//! - [`clock`]: the wall clock, read only by `daemon` and `status`.
//! - [`bounded`]: the one way a file or a stream from outside is read: type-checked, bounded in
//!   size and in time.
//! - [`notify`]: systemd `READY`/`STATUS`/`STOPPING` and the watchdog.
//! - [`logging`]: the `log` backend chosen at start (journal, syslog or stderr).

pub mod bounded;
pub mod clock;
pub mod config;
pub mod cycle;
pub mod daemon;
pub mod docker;
pub mod docs;
pub mod lastuse;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod policy;
pub mod status;
pub mod usage;

/// An error with its causes on one line, `what: because: because`, skipping a cause whose text
/// its parent already printed (hyper and tower repeat themselves).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}
