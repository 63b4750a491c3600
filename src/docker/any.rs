//! [`AnyEngine`]: an engine of either kind, so that one pass, one follower and one `status`
//! take Docker engines and the kubelet's CRI runtime together (one order across every engine
//! on a filesystem). Each call goes to the engine's own implementation; a capability one kind
//! lacks answers as that implementation says (a CRI runtime has no build cache: `None`).

use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::{
    BuildCache, CriEngine, DockerEngine, Engine, Error, Image, Inventory, Pruned, Removal, Storage,
    UseEvent,
};
use crate::config::{EngineConfig, EngineKind};

/// A connected engine of either kind.
#[derive(Debug, Clone)]
pub enum AnyEngine {
    /// The Docker Engine API (Docker, Podman).
    Docker(DockerEngine),
    /// The CRI (the kubelet's containerd, CRI-O).
    Cri(CriEngine),
}

impl AnyEngine {
    /// Connects to the engine `config` names, as its kind says.
    pub async fn connect(config: &EngineConfig, timeout: Duration) -> Result<AnyEngine, Error> {
        match (config.kind(), &config.cri_endpoint) {
            (EngineKind::Cri, Some(endpoint)) => CriEngine::connect(endpoint, timeout)
                .await
                .map(AnyEngine::Cri),
            _ => DockerEngine::connect(config.docker_host.as_deref(), timeout)
                .await
                .map(AnyEngine::Docker),
        }
    }

    /// What it is, in a few words: `Podman`, `Docker`, or the CRI runtime and its version.
    pub fn describe(&self) -> String {
        match self {
            AnyEngine::Docker(d) if d.is_podman() => "Podman".to_string(),
            AnyEngine::Docker(_) => "Docker".to_string(),
            AnyEngine::Cri(c) => format!("CRI, {}", c.runtime()),
        }
    }
}

impl Engine for AnyEngine {
    async fn inventory(&self, finished_times: bool) -> Result<Inventory, Error> {
        match self {
            AnyEngine::Docker(e) => e.inventory(finished_times).await,
            AnyEngine::Cri(e) => e.inventory(finished_times).await,
        }
    }

    async fn remove_container(&self, id: &str) -> Result<Removal, Error> {
        match self {
            AnyEngine::Docker(e) => e.remove_container(id).await,
            AnyEngine::Cri(e) => e.remove_container(id).await,
        }
    }

    async fn remove_image(&self, id: &str, tags: &[String]) -> Result<Removal, Error> {
        match self {
            AnyEngine::Docker(e) => e.remove_image(id, tags).await,
            AnyEngine::Cri(e) => e.remove_image(id, tags).await,
        }
    }

    async fn prune_containers(&self) -> Result<Pruned, Error> {
        match self {
            AnyEngine::Docker(e) => e.prune_containers().await,
            AnyEngine::Cri(e) => e.prune_containers().await,
        }
    }

    async fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        match self {
            AnyEngine::Docker(e) => e.prune_images(all, spare).await,
            AnyEngine::Cri(e) => e.prune_images(all, spare).await,
        }
    }

    async fn build_cache(&self) -> Result<Option<BuildCache>, Error> {
        match self {
            AnyEngine::Docker(e) => e.build_cache().await,
            AnyEngine::Cri(e) => e.build_cache().await,
        }
    }

    async fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> Result<Option<Pruned>, Error> {
        match self {
            AnyEngine::Docker(e) => e.prune_build_cache(unused_for, keep_bytes, all).await,
            AnyEngine::Cri(e) => e.prune_build_cache(unused_for, keep_bytes, all).await,
        }
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        match self {
            AnyEngine::Docker(e) => e.resolve_image(name).await,
            AnyEngine::Cri(e) => e.resolve_image(name).await,
        }
    }

    fn storage(&self) -> &Storage {
        match self {
            AnyEngine::Docker(e) => e.storage(),
            AnyEngine::Cri(e) => e.storage(),
        }
    }

    async fn containerd_bytes(&self) -> Result<Option<u64>, Error> {
        match self {
            AnyEngine::Docker(e) => e.containerd_bytes().await,
            AnyEngine::Cri(e) => e.containerd_bytes().await,
        }
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
        match self {
            AnyEngine::Docker(e) => e.use_events(since_nanos, until_nanos).left_stream(),
            AnyEngine::Cri(e) => e.use_events(since_nanos, until_nanos).right_stream(),
        }
    }
}
