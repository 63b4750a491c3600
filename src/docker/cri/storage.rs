//! Where a CRI runtime keeps its bytes ([`CriEngine::discover_storage`]): the filesystems it
//! reports (`ImageFsInfo`: images, and the containers' writable layers when the runtime splits
//! them) and, when the runtime is containerd, containerd's own roots (its introspection) and the
//! namespace `k8s.io` in it, whose bytes containerd counts ([`CriEngine::namespace_bytes`]): on
//! a node where Docker's containerd image store shares that containerd, no walk could tell the
//! kubelet's bytes from Docker's.

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use super::{CriEngine, K8S_NAMESPACE};
use crate::docker::{ContainerdStore, CriStore, Error, Storage};
use crate::error_chain;

/// containerd's snapshotter when its configuration cannot be read.
const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// The mount points of a list of filesystems.
fn mountpoints(list: &[cri::FilesystemUsage]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for fs in list {
        if let Some(id) = &fs.fs_id
            && !id.mountpoint.is_empty()
        {
            let path = PathBuf::from(&id.mountpoint);
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    out
}

/// The snapshotter among `roots` whose root holds `image_fs` (containerd reports its
/// snapshotter's root as the image filesystem).
fn snapshotter_of(
    roots: &std::collections::BTreeMap<String, PathBuf>,
    image_fs: &[PathBuf],
) -> Option<String> {
    roots
        .iter()
        .find(|(_, root)| image_fs.iter().any(|fs| fs.starts_with(root)))
        .map(|(name, _)| name.clone())
}

impl CriEngine {
    /// Asks the runtime (and containerd, when it is containerd) where its bytes are. Nothing
    /// here fails the connection: what could not be learnt is said in the storage (and by
    /// `status`), and only the configured paths are measured for it.
    pub(super) async fn discover_storage(&self, socket: &Path) -> Storage {
        let mut storage = Storage::default();
        let mut cri = CriStore {
            runtime: self.runtime(),
            ..CriStore::default()
        };
        match self
            .call(
                "ask where the images are (ImageFsInfo)",
                self.image_client()
                    .image_fs_info(cri::ImageFsInfoRequest {}),
            )
            .await
        {
            Ok(info) => {
                cri.image_filesystems = mountpoints(&info.image_filesystems);
                let containers = mountpoints(&info.container_filesystems);
                cri.container_filesystems = containers
                    .into_iter()
                    .filter(|c| !cri.image_filesystems.contains(c))
                    .collect();
            }
            Err(e) => log::warn!(
                "CRI runtime at {}: cannot tell where it keeps its images; only the configured paths are measured: {}",
                self.endpoint,
                error_chain(&e)
            ),
        }
        if self.runtime.is_containerd() {
            let mut store = ContainerdStore {
                address: socket.to_path_buf(),
                namespace: K8S_NAMESPACE.to_string(),
                snapshotter: DEFAULT_SNAPSHOTTER.to_string(),
                ..ContainerdStore::default()
            };
            match &self.containerd {
                None => {
                    store.error =
                        Some("containerd's own API does not answer on the CRI socket".into())
                }
                Some(c) => match c.roots().await {
                    Ok(roots) => {
                        if let Some(name) =
                            snapshotter_of(&roots.snapshotters, &cri.image_filesystems)
                        {
                            store.snapshotter = name;
                        }
                        store.content_root = roots.content;
                        store.snapshots_root = roots.snapshotters.get(&store.snapshotter).cloned();
                        if store.snapshots_root.is_none() {
                            store.error = Some(format!(
                                "containerd at {} has no snapshotter {:?}",
                                socket.display(),
                                store.snapshotter
                            ));
                        }
                    }
                    Err(e) => store.error = Some(error_chain(&e)),
                },
            }
            storage.driver = store.snapshotter.clone();
            storage.containerd = Some(store);
        }
        storage.cri = Some(cri);
        storage
    }

    /// [`crate::docker::Engine::containerd_bytes`]: with containerd, the bytes of `k8s.io`
    /// (its content and its snapshots); `None` with another runtime.
    pub(super) async fn namespace_bytes(&self) -> Result<Option<u64>, Error> {
        let (Some(containerd), Some(store)) = (&self.containerd, &self.storage.containerd) else {
            return Ok(None);
        };
        Ok(Some(containerd.store_bytes(store).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_filesystems_and_the_snapshotter_that_holds_them() {
        let fs = |m: &str| cri::FilesystemUsage {
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: m.into(),
            }),
            ..Default::default()
        };
        let list = [
            fs("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
            fs(""),
            fs("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
        ];
        let image_fs = mountpoints(&list);
        assert_eq!(image_fs.len(), 1);
        let roots = [
            (
                "native".to_string(),
                PathBuf::from("/var/lib/containerd/io.containerd.snapshotter.v1.native"),
            ),
            (
                "overlayfs".to_string(),
                PathBuf::from("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"),
            ),
        ]
        .into();
        assert_eq!(
            snapshotter_of(&roots, &image_fs).as_deref(),
            Some("overlayfs")
        );
        assert_eq!(snapshotter_of(&roots, &[]), None);
    }
}
