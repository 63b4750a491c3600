//! The container engines: the only module that names bollard and tonic types. The rest of the
//! program sees the plain data of [`model`] and the [`Engine`] trait, implemented over the
//! Docker Engine API by [`DockerEngine`] (Docker, docker-in-docker, and Podman's
//! Docker-compatible service), over the Kubernetes CRI by [`CriEngine`] (the kubelet's
//! containerd or CRI-O), for either by [`AnyEngine`] (what the daemon, a pass and `status` hold),
//! and in memory by [`fake::FakeEngine`] for tests and simulations. It performs what it is asked
//! to and never decides what to delete.
//!
//! - `model`: images, containers, inventories, the build cache, removal results, use events.
//! - `engine`: [`DockerEngine`], the Engine API through bollard over a transport of our own
//!   (`engine/transport`: each answer bounded, failures naming the endpoint), every call bounded
//!   in time; with `engine/remove` (the all-or-nothing image removal and the prunes),
//!   `engine/containers` (the container list, each with its state), `engine/events` (which
//!   events mean "used") read by `engine/stream` (each line bounded), `engine/cache` (the
//!   build cache's df and prune) and `engine/storage` (where the engine keeps its bytes).
//! - `storage`: where an engine keeps its bytes ([`Storage`], [`Place`]), as plain data;
//! - `containerd`: containerd's own API (introspection, a namespace's content and snapshots,
//!   pinned labels, task events), for Docker's containerd image store and the kubelet's
//!   containerd;
//! - `cri`: [`CriEngine`], the CRI through k8s-cri (`cri/list`, `cri/remove`, `cri/events`,
//!   `cri/storage`); with `containerd`, the only files that name tonic types;
//! - `any`: [`AnyEngine`], an engine of either kind, so that one pass holds both.
//! - [`fake`]: a recording in-memory engine with scripted answers.

mod any;
mod containerd;
mod cri;
mod engine;
pub mod fake;
mod model;
mod storage;

use std::future::Future;
use std::time::Duration;

use futures_util::Stream;

pub use any::AnyEngine;
pub use cri::CriEngine;
pub use engine::DockerEngine;
pub use model::{
    BuildCache, CacheRecord, Container, ContainerState, Image, Inventory, Pruned, Removal, UseEvent,
};
pub use storage::{ContainerdStore, CriStore, Place, Storage};

/// Errors talking to an engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint could not be set up (bad address, missing socket).
    #[error("cannot connect to Docker at {host}")]
    Connect {
        /// The endpoint.
        host: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine answered with an error status.
    #[error("Docker refused: {op}: {status} {message}")]
    Status {
        /// What we asked.
        op: String,
        /// The HTTP status.
        status: u16,
        /// The engine's message.
        message: String,
    },
    /// The request did not get an answer (connection refused or broken, bad response).
    #[error("Docker request failed: {op}")]
    Request {
        /// What we asked.
        op: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// containerd (the containerd image store's) refused or failed a call.
    #[error("containerd: {op}: {message}")]
    Containerd {
        /// What we asked, and where.
        op: String,
        /// Its status and message.
        message: String,
        /// It answered "not found".
        not_found: bool,
    },
    /// The CRI runtime (the kubelet's containerd or CRI-O) refused or failed a call.
    #[error("CRI runtime: {op}: {message}")]
    Cri {
        /// What we asked, and where.
        op: String,
        /// Its status and message.
        message: String,
        /// It answered "not found".
        not_found: bool,
    },
    /// A request got no answer in time.
    #[error("request timed out after {}s: {op}", .after.as_secs())]
    Timeout {
        /// What we asked.
        op: String,
        /// The timeout.
        after: Duration,
    },
}

impl Error {
    /// True when trying again later may help (Docker restarting, a timeout, a 5xx); false for a
    /// request the engine understood and refused.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. }
            | Error::Connect { .. }
            | Error::Request { .. }
            | Error::Containerd { .. }
            | Error::Cri { .. } => true,
            Error::Status { status, .. } => *status >= 500,
        }
    }

    /// The HTTP status the engine answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// What the program needs from a container engine. One pass, the daemon's event follower and
/// `status` all go through it; every call is bounded by the engine's timeout.
pub trait Engine: Sync {
    /// Lists images and containers; with `finished_times`, inspects stopped containers for
    /// their finish time.
    fn inventory(
        &self,
        finished_times: bool,
    ) -> impl Future<Output = Result<Inventory, Error>> + Send;

    /// Removes a stopped container (and its anonymous volumes), without force.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<Removal, Error>> + Send;

    /// Removes image `id`, planned with `tags`, all or nothing as a user sees it: a tag is
    /// removed only while it still names `id` (otherwise [`Removal::Changed`], nothing touched);
    /// when the final removal by id is refused, the tags this call removed are put back (those
    /// that still name nothing). Never forced.
    fn remove_image(
        &self,
        id: &str,
        tags: &[String],
    ) -> impl Future<Output = Result<Removal, Error>> + Send;

    /// What `docker container prune` is meant for, safely: every exited or dead container,
    /// removed without force (never a created one, which Docker's own prune removes).
    fn prune_containers(&self) -> impl Future<Output = Result<Pruned, Error>> + Send;

    /// `docker image prune` (`all = false`: dangling only) or `docker image prune -a`, the
    /// images for which `spare` holds excepted (the newest step of a build in progress): every
    /// such image that no container uses, removed one by one without force as
    /// [`Engine::remove_image`] does.
    fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> impl Future<Output = Result<Pruned, Error>> + Send;

    /// The build cache's records (`GET /system/df`, which can be slow on a large node: call it
    /// once a pass, and only when the cache may be reclaimed or shown); `None` when the engine
    /// has no build cache endpoint (Podman).
    fn build_cache(&self) -> impl Future<Output = Result<Option<BuildCache>, Error>> + Send;

    /// Prunes the build cache (`POST /build/prune`, BuildKit's least recently used first):
    /// records used within `unused_for` stay, and with `keep_bytes` above 0 the prune stops
    /// once the cache is at most that large (where the engine supports it); records in use and
    /// BuildKit's internal and frontend records always stay, and so do records shared with an
    /// image unless `all` (for a store whose shared records are copies,
    /// [`BuildCache::shared_are_copies`]). `None` when the engine has no build cache endpoint
    /// (Podman).
    fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> impl Future<Output = Result<Option<Pruned>, Error>> + Send;

    /// The id of the image `name` refers to, or `None` when there is no such image.
    fn resolve_image(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// Where the engine keeps its bytes, as found when it was connected (empty when it did not
    /// say).
    fn storage(&self) -> &Storage;

    /// With Docker's containerd image store: the bytes of the engine's namespace in containerd
    /// (its content and snapshots), which no walk of containerd's directories can tell from
    /// another namespace's (the kubelet's); `None` with any other store.
    fn containerd_bytes(&self) -> impl Future<Output = Result<Option<u64>, Error>> + Send;

    /// The engine's events that mean "used" (or "deleted"), from `since_nanos` (replayed from
    /// the engine's small buffer) and, with `until_nanos`, ending there; otherwise endless until
    /// the engine goes away.
    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static;
}
