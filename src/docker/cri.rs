//! [`CriEngine`]: the kubelet's runtime (containerd, CRI-O) through the Kubernetes CRI, the
//! same API the kubelet uses: its image service (list, status, remove, `ImageFsInfo`) and its
//! runtime service (containers and pod sandboxes, their status, `GetContainerEvents`). Every
//! call is bounded by the configured timeout; the answers become the plain data of the model.
//!
//! What differs from Docker, and how the model carries it:
//! - the kubelet owns the containers: every one, whatever its state, and every pod sandbox is
//!   listed as [`Container::managed`](super::Container): never removed, its image in use;
//! - the runtime pins images (CRI `pinned`: containerd 1.7+, CRI-O), and containerd 1.6 does not
//!   report it: there the label `io.cri-containerd.pinned=pinned` is read from containerd
//!   itself; the runtime's sandbox (pause) image is pinned too ([`Image::pinned`](super::Image));
//! - the runtime removes an image in use, or pinned, when asked (containerd 1.6 and 2.1 do):
//!   `remove` checks both again just before it asks;
//! - no build cache, no prune endpoints (strategy `prune` removes one image at a time);
//! - last use comes from the runtime's container events, or a poll (`events`).
//!
//! Split by concern: `list` the inventory and what is cached of it, `remove` the guarded
//! removal, `events` the event follower and the poll, `storage` where the bytes are. Decides
//! nothing about what to remove.

mod events;
mod list;
mod remove;
mod storage;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Code, Status};
use futures_util::Stream;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

use super::containerd::Containerd;
use super::{BuildCache, Engine, Error, Image, Inventory, Pruned, Removal, Storage, UseEvent};

/// The namespace containerd's CRI keeps the kubelet's images and containers in.
pub(crate) const K8S_NAMESPACE: &str = "k8s.io";

/// The largest answer read from the runtime: the kubelet's own limit (a node's image or
/// container list stays far below it).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// A CRI runtime (the kubelet's containerd or CRI-O) over its socket.
#[derive(Debug, Clone)]
pub struct CriEngine {
    channel: Channel,
    /// `unix:///…`, as configured.
    endpoint: String,
    timeout: Duration,
    /// The runtime's name (`containerd`, `cri-o`) and version, from `Version`.
    runtime: Runtime,
    /// The sandbox image the runtime's configuration names (containerd 1.6 and 1.7 say it in
    /// `Status`; later ones pin it).
    sandbox_image: Option<String>,
    /// containerd's own API on the same socket, when the runtime is containerd.
    containerd: Option<Containerd>,
    storage: Storage,
    /// What never changes for an id, asked once: shared by every clone (the daemon's follower
    /// and its passes).
    cache: Arc<Mutex<list::Cache>>,
}

/// Which runtime answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Runtime {
    /// `containerd`, `cri-o`.
    pub name: String,
    /// Its version.
    pub version: String,
}

impl Runtime {
    fn is_containerd(&self) -> bool {
        self.name == "containerd"
    }
}

impl CriEngine {
    /// Connects to the runtime at `endpoint` (`unix:///absolute/path`), asks what it is and
    /// where it keeps its bytes.
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<CriEngine, Error> {
        let socket = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
        let op = format!("connect to {endpoint}");
        let channel = match tokio::time::timeout(timeout, containerd_client::connect(&socket)).await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(Error::Cri {
                    op,
                    message: crate::error_chain(&e),
                    not_found: false,
                });
            }
            Err(_) => return Err(Error::Timeout { op, after: timeout }),
        };
        let mut engine = CriEngine {
            channel,
            endpoint: endpoint.to_string(),
            timeout,
            runtime: Runtime::default(),
            sandbox_image: None,
            containerd: None,
            storage: Storage::default(),
            cache: Arc::default(),
        };
        engine.runtime = engine.version().await?;
        engine.sandbox_image = engine.configured_sandbox_image().await;
        if engine.runtime.is_containerd() {
            // The same socket serves containerd's own API.
            match Containerd::connect(&socket, timeout).await {
                Ok(c) => engine.containerd = Some(c),
                Err(e) => log::warn!(
                    "CRI runtime at {endpoint}: containerd's own API does not answer: {}",
                    crate::error_chain(&e)
                ),
            }
        }
        engine.storage = engine.discover_storage(&socket).await;
        Ok(engine)
    }

    /// The runtime, as people read it: `containerd 1.6.20`.
    pub fn runtime(&self) -> String {
        format!("{} {}", self.runtime.name, self.runtime.version)
    }

    /// The endpoint, as configured.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn image_client(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn cache(&self) -> MutexGuard<'_, list::Cache> {
        // The cache is plain data; a panic while holding it left nothing half-written that
        // matters (at worst an entry is asked for again).
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one call under the timeout; a gRPC status becomes our error.
    async fn call<T>(
        &self,
        op: impl Into<String>,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Error> {
        let op = op.into();
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.status(op, &s)),
            Err(_) => Err(Error::Timeout {
                op,
                after: self.timeout,
            }),
        }
    }

    fn status(&self, op: String, s: &Status) -> Error {
        Error::Cri {
            op: format!("{op} at {}", self.endpoint),
            message: format!("{:?}: {}", s.code(), s.message()),
            not_found: s.code() == Code::NotFound,
        }
    }

    async fn version(&self) -> Result<Runtime, Error> {
        let request = k8s_cri::v1::VersionRequest {
            version: "v1".into(),
        };
        let v = self
            .call(
                "ask the runtime's version",
                self.runtime_client().version(request),
            )
            .await?;
        Ok(Runtime {
            name: v.runtime_name,
            version: v.runtime_version,
        })
    }

    /// The sandbox image the runtime's configuration names, from `Status` (verbose): containerd
    /// 1.6 and 1.7 say it (`sandboxImage`); later containerd and CRI-O pin it instead. A
    /// failure here is no failure to connect: the sandboxes' own images are in use anyway.
    async fn configured_sandbox_image(&self) -> Option<String> {
        let request = k8s_cri::v1::StatusRequest { verbose: true };
        match self
            .call(
                "ask the runtime's status",
                self.runtime_client().status(request),
            )
            .await
        {
            Ok(status) => status
                .info
                .get("config")
                .and_then(|config| list::sandbox_image_of_config(config)),
            Err(e) => {
                log::debug!("{}", crate::error_chain(&e));
                None
            }
        }
    }
}

/// The timestamp of the CRI (unix nanoseconds) in unix seconds; 0 stays 0 (not set).
fn secs(nanos: i64) -> i64 {
    nanos.div_euclid(1_000_000_000)
}

impl Engine for CriEngine {
    async fn inventory(&self, finished_times: bool) -> Result<Inventory, Error> {
        self.list(finished_times).await
    }

    /// The kubelet's containers are its own to remove: never ours.
    async fn remove_container(&self, id: &str) -> Result<Removal, Error> {
        Ok(Removal::Conflict(format!(
            "container {id} is the kubelet's: it removes its containers itself"
        )))
    }

    async fn remove_image(&self, id: &str, planned: &[String]) -> Result<Removal, Error> {
        self.remove_guarded(id, planned).await
    }

    /// The kubelet's containers are its own: nothing is pruned.
    async fn prune_containers(&self) -> Result<Pruned, Error> {
        Ok(Pruned::default())
    }

    async fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        self.prune_one_by_one(all, spare).await
    }

    async fn build_cache(&self) -> Result<Option<BuildCache>, Error> {
        Ok(None)
    }

    async fn prune_build_cache(
        &self,
        _unused_for: Duration,
        _keep_bytes: u64,
        _all: bool,
    ) -> Result<Option<Pruned>, Error> {
        Ok(None)
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.image_status(name).await?.map(|i| i.id))
    }

    fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The kubelet's bytes are where `ImageFsInfo` and containerd's introspection put them:
    /// with containerd they are counted by containerd for namespace `k8s.io` (content and
    /// snapshots), so a Docker sharing that containerd (`moby`) is not counted as ours; with
    /// another runtime (CRI-O) `None`, and its `ImageFsInfo` places are walked instead.
    async fn containerd_bytes(&self) -> Result<Option<u64>, Error> {
        self.namespace_bytes().await
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
        events::follow(self.clone(), since_nanos, until_nanos)
    }
}
