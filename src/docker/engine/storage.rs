//! Where the engine keeps its bytes ([`DockerEngine::discover_storage`]): `GET /info` (root,
//! driver, the containerd image store and its namespace), read as text and parsed leniently as
//! the image list is, and, with the containerd image store, containerd's own introspection for
//! the roots of its content store and snapshotter. Also the bytes of the engine's namespace in
//! containerd ([`DockerEngine::namespace_bytes`]).

use std::path::PathBuf;
use std::sync::PoisonError;

use serde::Deserialize;

use super::DockerEngine;
use crate::docker::Error;
use crate::docker::containerd::Containerd;
use crate::docker::storage::{ContainerdStore, Storage};
use crate::error_chain;

/// What the cleaner reads of `GET /info`, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Info {
    docker_root_dir: Option<String>,
    driver: Option<String>,
    driver_status: Option<Vec<Vec<String>>>,
    containerd: Option<ContainerdInfo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct ContainerdInfo {
    address: Option<String>,
    namespaces: Option<Namespaces>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Namespaces {
    containers: Option<String>,
}

/// containerd's default socket, for an engine on the containerd store that does not say which
/// (API before 1.46).
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// The storage an `/info` body describes; with the containerd image store, containerd's roots
/// are still to be asked for.
fn parse_info(body: &str) -> Result<Storage, serde_json::Error> {
    let info: Info = serde_json::from_str(body)?;
    let driver = info.driver.unwrap_or_default();
    let snapshotter_store = info.driver_status.unwrap_or_default().iter().any(|pair| {
        pair.first().map(String::as_str) == Some("driver-type")
            && pair.get(1).map(String::as_str) == Some("io.containerd.snapshotter.v1")
    });
    let containerd = snapshotter_store.then(|| {
        let c = info.containerd.unwrap_or_default();
        ContainerdStore {
            address: PathBuf::from(
                c.address
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| CONTAINERD_SOCKET.to_string()),
            ),
            namespace: c
                .namespaces
                .and_then(|n| n.containers)
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "moby".to_string()),
            snapshotter: driver.clone(),
            ..ContainerdStore::default()
        }
    });
    Ok(Storage {
        root: info
            .docker_root_dir
            .filter(|r| !r.is_empty())
            .map(PathBuf::from),
        driver,
        containerd,
        cri: None,
    })
}

impl DockerEngine {
    /// Asks the engine (and containerd, for its image store) where its bytes are. An engine
    /// whose `/info` cannot be read is an error; containerd out of reach is not: the storage
    /// then says why its roots are unknown (and `status` shows it).
    pub(super) async fn discover_storage(&self) -> Result<Storage, Error> {
        let body = self.get_text("read the engine's storage", "/info").await?;
        let mut storage = parse_info(&body).map_err(|err| Error::Request {
            op: "read the engine's storage (GET /info)".into(),
            source: bollard::errors::Error::JsonSerdeError { err },
        })?;
        if let Some(store) = &mut storage.containerd {
            match self.containerd_roots(store).await {
                Ok(()) => {}
                Err(e) => store.error = Some(error_chain(&e)),
            }
        }
        Ok(storage)
    }

    /// Fills in containerd's roots for `store`.
    async fn containerd_roots(&self, store: &mut ContainerdStore) -> Result<(), Error> {
        let containerd = self.containerd_client(store).await?;
        let roots = containerd.roots().await?;
        store.content_root = roots.content;
        store.snapshots_root = roots.snapshotters.get(&store.snapshotter).cloned();
        if store.snapshots_root.is_none() {
            store.error = Some(format!(
                "containerd at {} has no snapshotter {:?}",
                store.address.display(),
                store.snapshotter
            ));
        }
        Ok(())
    }

    /// [`crate::docker::Engine::containerd_bytes`]: see the trait.
    pub(super) async fn namespace_bytes(&self) -> Result<Option<u64>, Error> {
        let Some(store) = &self.storage.containerd else {
            return Ok(None);
        };
        let containerd = self.containerd_client(store).await?;
        match containerd.store_bytes(store).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => {
                // A client that failed is dropped: the next call connects anew.
                *self
                    .containerd
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                Err(e)
            }
        }
    }

    /// The client of `store`'s containerd: the one kept, or a new connection, then kept.
    async fn containerd_client(&self, store: &ContainerdStore) -> Result<Containerd, Error> {
        let kept = self
            .containerd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(containerd) = kept {
            return Ok(containerd);
        }
        let containerd = Containerd::connect(&store.address, self.timeout).await?;
        *self
            .containerd
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(containerd.clone());
        Ok(containerd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_of_each_store() {
        // Docker 20.10: no Containerd field.
        let s = parse_info(
            r#"{"Driver":"overlay2","DriverStatus":[["Backing Filesystem","extfs"]],
            "DockerRootDir":"/var/lib/docker"}"#,
        )
        .unwrap();
        assert_eq!(s.root, Some(PathBuf::from("/var/lib/docker")));
        assert_eq!(s.driver, "overlay2");
        assert!(s.containerd.is_none());

        // Docker 28.5 with the containerd image store (recorded), and a namespace of its own.
        let s = parse_info(
            r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]],
            "DockerRootDir":"/tmp/x2/fs/docker","Containerd":{"Address":"/tmp/x2/containerd.sock",
            "Namespaces":{"Containers":"moby.1000.1000","Plugins":"plugins.moby"}}}"#,
        )
        .unwrap();
        let c = s.containerd.expect("the containerd store");
        assert_eq!(c.address, PathBuf::from("/tmp/x2/containerd.sock"));
        assert_eq!(
            (c.namespace.as_str(), c.snapshotter.as_str()),
            ("moby.1000.1000", "overlayfs")
        );

        // The containerd store without the Containerd field (before API 1.46): the defaults.
        let s = parse_info(
            r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#,
        )
        .unwrap();
        let c = s.containerd.expect("the containerd store");
        assert_eq!(c.address, PathBuf::from(CONTAINERD_SOCKET));
        assert_eq!(c.namespace, "moby");
        assert!(s.root.is_none());

        // Podman: its graph root and driver.
        let s = parse_info(r#"{"Driver":"overlay","DockerRootDir":"/var/lib/containers/storage"}"#)
            .unwrap();
        assert_eq!(s.driver, "overlay");
        assert!(parse_info("OK").is_err());
    }
}
