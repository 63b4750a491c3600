//! Where an engine keeps its bytes, as plain data: what the engine says of itself (`GET /info`,
//! or a CRI runtime's `ImageFsInfo`) and, for containerd (Docker's containerd image store, or
//! the kubelet's containerd), what containerd says of its roots. The pass measures these places;
//! `status` and `check-config` show them with what each holds.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Where an engine keeps its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Storage {
    /// The engine's own root: Docker's `DockerRootDir`, Podman's graph root. `None` when the
    /// engine did not say.
    pub root: Option<PathBuf>,
    /// The storage driver (`overlay2`, Podman's `overlay`) or, with the containerd image store,
    /// the snapshotter (`overlayfs`).
    pub driver: String,
    /// With Docker's containerd image store, or a CRI engine whose runtime is containerd: where
    /// in containerd the images are.
    pub containerd: Option<ContainerdStore>,
    /// A CRI engine: its runtime and the filesystems it reports (`ImageFsInfo`).
    pub cri: Option<CriStore>,
}

/// What a CRI runtime says of where it keeps its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CriStore {
    /// The runtime and its version (`containerd 1.6.20`, `cri-o 1.31.0`).
    pub runtime: String,
    /// Where its images are (`ImageFsInfo`'s image filesystems' mount points).
    pub image_filesystems: Vec<PathBuf>,
    /// Where its containers' writable layers are, when the runtime keeps them apart from the
    /// images (a split image filesystem); empty otherwise.
    pub container_filesystems: Vec<PathBuf>,
}

/// Images kept in containerd, in one namespace: Docker's containerd image store (`moby`) or
/// the kubelet's (`k8s.io`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerdStore {
    /// containerd's socket, as the engine names it.
    pub address: PathBuf,
    /// The engine's namespace (`moby`); the kubelet's is `k8s.io`.
    pub namespace: String,
    /// The snapshotter the engine unpacks into.
    pub snapshotter: String,
    /// The content store's root (blobs), from containerd's introspection.
    pub content_root: Option<PathBuf>,
    /// The snapshotter's root (unpacked layers, containers' writable layers).
    pub snapshots_root: Option<PathBuf>,
    /// Why containerd's roots are unknown (it could not be asked).
    pub error: Option<String>,
}

/// One directory an engine keeps bytes in, and what they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The directory.
    pub path: PathBuf,
    /// What it holds, for people: "DockerRootDir (overlay2 layers, containers)".
    pub holds: String,
    /// Counted by walking it (`du`); false for containerd's roots, whose bytes are counted per
    /// namespace by containerd (another namespace, the kubelet's, may share them).
    pub walked: bool,
}

impl Storage {
    /// True with Docker's containerd image store.
    pub fn is_containerd(&self) -> bool {
        self.containerd.is_some()
    }

    /// The directories the engine keeps bytes in, each with what it holds.
    pub fn places(&self) -> Vec<Place> {
        let mut places = self.containerd_places();
        if let Some(cri) = &self.cri {
            let named = cri.image_filesystems.iter().map(|p| (p, "images")).chain(
                cri.container_filesystems
                    .iter()
                    .map(|p| (p, "containers' writable layers")),
            );
            for (path, what) in named {
                // containerd's own roots are named already, counted per namespace.
                if places.iter().any(|p| path.starts_with(&p.path)) {
                    continue;
                }
                places.push(Place {
                    path: path.clone(),
                    holds: format!("the runtime's {what} ({}, ImageFsInfo)", cri.runtime),
                    walked: true,
                });
            }
        }
        places
    }

    /// The root and containerd's roots.
    fn containerd_places(&self) -> Vec<Place> {
        let mut places = Vec::new();
        if let Some(root) = &self.root {
            let holds = match &self.containerd {
                None => format!(
                    "the engine's root ({} layers, containers, build cache)",
                    self.driver
                ),
                Some(_) => "the engine's root (container configs, logs, volumes; no image layers)"
                    .to_string(),
            };
            places.push(Place {
                path: root.clone(),
                holds,
                walked: true,
            });
        }
        if let Some(c) = &self.containerd {
            if let Some(content) = &c.content_root {
                places.push(Place {
                    path: content.clone(),
                    holds: format!("its content store (image blobs; namespace {})", c.namespace),
                    walked: false,
                });
            }
            if let Some(snapshots) = &c.snapshots_root {
                places.push(Place {
                    path: snapshots.clone(),
                    holds: format!(
                        "its {} snapshots (unpacked and writable layers; namespace {})",
                        c.snapshotter, c.namespace
                    ),
                    walked: false,
                });
            }
        }
        places
    }

    /// The directories whose bytes containerd counts per namespace: never walked, even when a
    /// watched path holds them.
    pub fn not_walked(&self) -> Vec<PathBuf> {
        self.places()
            .into_iter()
            .filter(|p| !p.walked)
            .map(|p| p.path)
            .collect()
    }

    /// The image store in a few words: the driver, the containerd image store with its
    /// namespace and socket, or a CRI runtime (with its containerd namespace when it is
    /// containerd).
    pub fn describe(&self) -> String {
        if let Some(cri) = &self.cri {
            return match &self.containerd {
                Some(c) => format!(
                    "CRI runtime {}, namespace {}, at {}",
                    cri.runtime,
                    c.namespace,
                    c.address.display()
                ),
                None => format!("CRI runtime {}", cri.runtime),
            };
        }
        match &self.containerd {
            Some(c) => format!(
                "containerd image store, namespace {}, at {}",
                c.namespace,
                c.address.display()
            ),
            None if self.driver.is_empty() => "unknown".to_string(),
            None => self.driver.clone(),
        }
    }

    /// Where an engine configured with `configured` paths has its bytes counted: each
    /// configured path (walked), then each place the engine named that no configured path
    /// holds.
    pub fn counted_in(&self, configured: &[PathBuf]) -> Vec<Place> {
        let named = self.places();
        let mut out: Vec<Place> = configured
            .iter()
            .map(|path| {
                let counted_below = named
                    .iter()
                    .any(|p| !p.walked && p.path.starts_with(path));
                let holds = named
                    .iter()
                    .filter(|p| p.walked && p.path.starts_with(path))
                    .map(|p| p.holds.clone())
                    .next()
                    .unwrap_or_else(|| {
                        if counted_below {
                            "configured; walked but for containerd's roots below, which containerd counts per namespace".to_string()
                        } else {
                            "configured; the engine names no data here".to_string()
                        }
                    });
                Place {
                    path: path.clone(),
                    holds,
                    walked: true,
                }
            })
            .collect();
        out.extend(
            named
                .into_iter()
                .filter(|p| !p.walked || !Storage::covered_by(&p.path, configured)),
        );
        out
    }

    /// Whether `paths` (an engine's configured paths) hold the place `place`.
    pub fn covered_by(place: &Path, paths: &[PathBuf]) -> bool {
        paths.iter().any(|p| place.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_places_of_each_store() {
        let classic = Storage {
            root: Some("/var/lib/docker".into()),
            driver: "overlay2".into(),
            containerd: None,
            cri: None,
        };
        let places = classic.places();
        assert_eq!(places.len(), 1);
        assert!(places[0].walked && places[0].holds.contains("overlay2"));
        assert!(classic.not_walked().is_empty());

        let containerd = Storage {
            root: Some("/var/lib/docker".into()),
            driver: "overlayfs".into(),
            containerd: Some(ContainerdStore {
                address: "/run/containerd/containerd.sock".into(),
                namespace: "moby".into(),
                snapshotter: "overlayfs".into(),
                content_root: Some("/data/containerd/io.containerd.content.v1.content".into()),
                snapshots_root: Some(
                    "/data/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                ),
                error: None,
            }),
            cri: None,
        };
        let paths: Vec<PathBuf> = containerd.places().into_iter().map(|p| p.path).collect();
        assert_eq!(paths.len(), 3);
        assert_eq!(containerd.not_walked(), paths[1..].to_vec());
        assert!(Storage::covered_by(&paths[1], &["/data".into()]));
        assert!(!Storage::covered_by(&paths[1], &["/var/lib/docker".into()]));
    }

    #[test]
    fn the_places_of_a_cri_runtime() {
        // The kubelet's containerd: its image filesystem is the snapshotter's root, which
        // containerd counts per namespace; nothing is walked.
        let containerd = Storage {
            root: None,
            driver: "overlayfs".into(),
            containerd: Some(ContainerdStore {
                address: "/run/containerd/containerd.sock".into(),
                namespace: "k8s.io".into(),
                snapshotter: "overlayfs".into(),
                content_root: Some("/var/lib/containerd/io.containerd.content.v1.content".into()),
                snapshots_root: Some(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                ),
                error: None,
            }),
            cri: Some(CriStore {
                runtime: "containerd 2.1.9".into(),
                image_filesystems: vec![
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs".into(),
                ],
                container_filesystems: vec![],
            }),
        };
        let places = containerd.places();
        assert_eq!(places.len(), 2, "{places:?}");
        assert!(
            places
                .iter()
                .all(|p| !p.walked && p.holds.contains("k8s.io"))
        );

        // CRI-O: its image store is walked, and a split container filesystem is named too.
        let crio = Storage {
            root: None,
            driver: String::new(),
            containerd: None,
            cri: Some(CriStore {
                runtime: "cri-o 1.31.0".into(),
                image_filesystems: vec!["/var/lib/containers/storage/overlay-images".into()],
                container_filesystems: vec![
                    "/var/lib/containers/storage/overlay-containers".into(),
                ],
            }),
        };
        let places = crio.places();
        assert_eq!(places.len(), 2, "{places:?}");
        assert!(places.iter().all(|p| p.walked));
        assert!(places[1].holds.contains("writable layers"));
        assert!(crio.not_walked().is_empty());
    }
}
