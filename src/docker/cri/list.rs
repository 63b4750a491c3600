//! The inventory of a CRI runtime ([`CriEngine::list`]): its images (with the labels and
//! creation time of their config, the pins), its containers of every state and its pod
//! sandboxes, each as a [`Container`] the kubelet manages. What never changes for an id (an
//! image's config, a sandbox's image, an exited container's times) is asked once and cached;
//! the parsing of the runtime's verbose answers is lenient and pure, for the tests.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_cri::v1 as cri;
use serde_json::Value;

use super::{CriEngine, K8S_NAMESPACE, secs};
use crate::docker::containerd::PINNED_LABEL;
use crate::docker::{Container, ContainerState, Error, Image, Inventory};

/// What is cached per id, shared by every clone of the engine.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// Image id → its config's labels and creation time.
    pub(super) images: HashMap<String, Details>,
    /// Sandbox id → the image reference its status names (`None`: it names none).
    pub(super) sandboxes: HashMap<String, Option<String>>,
    /// Container id → its image and times, once it has exited (they no longer change).
    pub(super) containers: HashMap<String, Status>,
}

/// An image's config as the runtime's verbose status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Details {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its creation time, unix seconds (0: not said).
    pub created: i64,
}

/// A container's times, unix nanoseconds (0: not yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Times {
    pub created: i64,
    pub started: i64,
    pub finished: i64,
}

/// A container as the runtime answers `ContainerStatus`: its image and times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Status {
    /// The image it was made from: the runtime's id for it (`image_id`, else `image_ref`: an
    /// id or a digest reference), else the reference it was asked for.
    pub image: String,
    pub times: Times,
    pub exited: bool,
}

impl From<cri::ContainerStatus> for Status {
    fn from(s: cri::ContainerStatus) -> Status {
        let asked = s.image.map(|i| i.image).unwrap_or_default();
        let image = [s.image_id, s.image_ref, asked]
            .into_iter()
            .find(|i| !i.is_empty())
            .unwrap_or_default();
        Status {
            image,
            exited: s.state == cri::ContainerState::ContainerExited as i32,
            times: Times {
                created: s.created_at,
                started: s.started_at,
                finished: s.finished_at,
            },
        }
    }
}

/// The images of one list, to find the one a reference names.
pub(crate) struct Index<'a> {
    images: &'a [cri::Image],
}

impl<'a> Index<'a> {
    pub(crate) fn new(images: &'a [cri::Image]) -> Self {
        Index { images }
    }

    /// The id of the image `reference` names: an id (with or without `sha256:`), a tag or a
    /// digest reference, as written or as the runtime normalises it (`pause:3.10` is
    /// `docker.io/library/pause:3.10`).
    pub(crate) fn resolve(&self, reference: &str) -> Option<&'a str> {
        let normal = normalise(reference);
        self.images
            .iter()
            .find(|i| {
                i.id == reference
                    || i.id.strip_prefix("sha256:") == Some(reference)
                    || i.repo_tags
                        .iter()
                        .chain(&i.repo_digests)
                        .any(|r| r == reference || *r == normal)
            })
            .map(|i| i.id.as_str())
    }
}

/// A reference as containerd and CRI-O store it: a registry host first (`docker.io` when the
/// first part is not one), `library/` for a single name on Docker Hub, `:latest` without a
/// tag or digest.
fn normalise(reference: &str) -> String {
    let (name, suffix) = match reference.find('@') {
        Some(at) => (&reference[..at], &reference[at..]),
        None => {
            let slash = reference.rfind('/').map_or(0, |i| i + 1);
            match reference[slash..].rfind(':') {
                Some(colon) => reference.split_at(slash + colon),
                None => (reference, ":latest"),
            }
        }
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    format!("{name}{suffix}")
}

/// The sandbox image a runtime's configuration (`Status` verbose, `config`) names: containerd
/// 1.x's `sandboxImage`.
pub(crate) fn sandbox_image_of_config(config: &str) -> Option<String> {
    let v: Value = serde_json::from_str(config).ok()?;
    v.get("sandboxImage")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The image a pod sandbox's verbose status names (containerd: `info` → `image`).
fn sandbox_image_of_info(info: &HashMap<String, String>) -> Option<String> {
    info.values()
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .find_map(|v| {
            v.get("image")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
}

/// An image's config from its verbose status (containerd and CRI-O: `info` → `imageSpec`,
/// an OCI image config): its labels and creation time. Missing parts are empty.
fn details_of_info(info: &HashMap<String, String>) -> Details {
    let Some(spec) = info
        .values()
        .filter_map(|text| serde_json::from_str::<Value>(text).ok())
        .find_map(|v| v.get("imageSpec").cloned())
    else {
        return Details::default();
    };
    let labels = spec
        .pointer("/config/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let created = spec
        .get("created")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_second().max(0));
    Details { labels, created }
}

/// A container's name for people: `namespace/pod/container` from the kubelet's labels, else
/// the runtime's name for it.
fn container_name(labels: &HashMap<String, String>, fallback: &str) -> String {
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    match (
        label("io.kubernetes.pod.namespace"),
        label("io.kubernetes.pod.name"),
        label("io.kubernetes.container.name"),
    ) {
        (Some(ns), Some(pod), Some(c)) => format!("{ns}/{pod}/{c}"),
        _ => fallback.to_string(),
    }
}

/// What the runtime holds, as the model sees it.
pub(crate) struct Listing<'a> {
    pub images: &'a [cri::Image],
    pub containers: &'a [cri::Container],
    pub sandboxes: &'a [cri::PodSandbox],
    /// Image id → its details.
    pub details: &'a HashMap<String, Details>,
    /// Sandbox id → the image reference it runs.
    pub sandbox_images: &'a HashMap<String, Option<String>>,
    /// Container id → its status, where asked for.
    pub times: &'a HashMap<String, Status>,
    /// The sandbox image the runtime's configuration names.
    pub sandbox_image: Option<&'a str>,
    /// Names (tags, ids) of images pinned by containerd's label.
    pub pinned_names: &'a [String],
}

impl Listing<'_> {
    /// The inventory: images with their pins, containers and sandboxes the kubelet manages.
    pub(crate) fn inventory(&self) -> Inventory {
        let index = Index::new(self.images);
        // The configured sandbox image, and whatever image a sandbox runs (containerd 2.x and
        // CRI-O do not say which they are configured with, but pin it).
        let sandbox_ids: HashSet<&str> = self
            .sandbox_image
            .into_iter()
            .chain(self.sandbox_images.values().flatten().map(String::as_str))
            .filter_map(|r| index.resolve(r))
            .collect();
        let label_pinned: HashSet<&str> = self
            .pinned_names
            .iter()
            .filter_map(|n| index.resolve(n))
            .collect();
        let images = self
            .images
            .iter()
            .map(|i| {
                let details = self.details.get(&i.id).cloned().unwrap_or_default();
                let mut why: Vec<String> = Vec::new();
                if sandbox_ids.contains(i.id.as_str()) {
                    why.push("the runtime's sandbox (pause) image".into());
                }
                if i.pinned {
                    why.push("pinned by the runtime".into());
                } else if label_pinned.contains(i.id.as_str()) {
                    why.push(format!("pinned (label {PINNED_LABEL}=pinned)"));
                }
                Image {
                    id: i.id.clone(),
                    parent_id: None,
                    tags: if i.repo_tags.is_empty() {
                        i.repo_digests.clone()
                    } else {
                        i.repo_tags.clone()
                    },
                    created: details.created,
                    size_bytes: i.size,
                    labels: details.labels,
                    pinned: (!why.is_empty()).then(|| why.join(", ")),
                    // The CRI names no layers; parents are nothing to it either.
                    layers: Vec::new(),
                }
            })
            .collect();
        let mut containers: Vec<Container> = self
            .containers
            .iter()
            .map(|c| {
                let asked = c.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
                let image_id = [c.image_id.as_str(), c.image_ref.as_str(), asked]
                    .into_iter()
                    .filter(|r| !r.is_empty())
                    .find_map(|r| index.resolve(r))
                    .map(str::to_string)
                    // An image no longer listed: nothing to protect, but keep what it said.
                    .unwrap_or_else(|| c.image_ref.clone());
                let fallback = c
                    .metadata
                    .as_ref()
                    .map_or(c.id.as_str(), |m| m.name.as_str());
                Container {
                    id: c.id.clone(),
                    name: container_name(&c.labels, fallback),
                    image_id,
                    state: container_state(c.state),
                    created: secs(c.created_at),
                    finished: self
                        .times
                        .get(&c.id)
                        .map(|s| secs(s.times.finished))
                        .filter(|f| *f > 0),
                    managed: true,
                }
            })
            .collect();
        for s in self.sandboxes {
            let reference = self
                .sandbox_images
                .get(&s.id)
                .cloned()
                .flatten()
                .or_else(|| self.sandbox_image.map(str::to_string));
            let Some(image_id) = reference.as_deref().and_then(|r| index.resolve(r)) else {
                continue;
            };
            let pod = s
                .metadata
                .as_ref()
                .map_or(s.id.clone(), |m| format!("{}/{}", m.namespace, m.name));
            containers.push(Container {
                id: s.id.clone(),
                name: format!("sandbox {pod}"),
                image_id: image_id.to_string(),
                state: sandbox_state(s.state),
                created: secs(s.created_at),
                finished: None,
                managed: true,
            });
        }
        Inventory { images, containers }
    }
}

/// A CRI container's state as the engines' states say it (the kubelet's containers are never
/// removed here whatever their state: it shows in `status`).
fn container_state(state: i32) -> ContainerState {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
        Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
        Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
        Ok(cri::ContainerState::ContainerUnknown) | Err(_) => ContainerState::Unknown,
    }
}

/// A pod sandbox's state: ready is running, not ready has stopped (its containers are gone or
/// going).
fn sandbox_state(state: i32) -> ContainerState {
    match cri::PodSandboxState::try_from(state) {
        Ok(cri::PodSandboxState::SandboxReady) => ContainerState::Running,
        Ok(cri::PodSandboxState::SandboxNotready) => ContainerState::Exited,
        Err(_) => ContainerState::Unknown,
    }
}

impl CriEngine {
    /// [`crate::docker::Engine::inventory`]: every image, container and pod sandbox; with
    /// `finished_times`, the exited containers' finish times.
    pub(super) async fn list(&self, finished_times: bool) -> Result<Inventory, Error> {
        let images = self.list_images().await?;
        let containers = self.list_containers().await?;
        self.forget_containers(&containers.iter().map(|c| c.id.as_str()).collect());
        let sandboxes = self.list_sandboxes().await?;
        let pinned_names = self.pinned_names().await;
        self.fill_details(&images).await?;
        self.fill_sandbox_images(&sandboxes).await?;
        if finished_times {
            for c in &containers {
                if c.state == cri::ContainerState::ContainerExited as i32 {
                    // Removed since the list: its time no longer matters.
                    let _ = self.container_status(&c.id).await?;
                }
            }
        }
        let cache = self.cache();
        Ok(Listing {
            images: &images,
            containers: &containers,
            sandboxes: &sandboxes,
            details: &cache.images,
            sandbox_images: &cache.sandboxes,
            times: &cache.containers,
            sandbox_image: self.sandbox_image.as_deref(),
            pinned_names: &pinned_names,
        }
        .inventory())
    }

    pub(super) async fn list_images(&self) -> Result<Vec<cri::Image>, Error> {
        let request = cri::ListImagesRequest { filter: None };
        Ok(self
            .call("list images", self.image_client().list_images(request))
            .await?
            .images)
    }

    pub(super) async fn list_containers(&self) -> Result<Vec<cri::Container>, Error> {
        let request = cri::ListContainersRequest { filter: None };
        Ok(self
            .call(
                "list containers",
                self.runtime_client().list_containers(request),
            )
            .await?
            .containers)
    }

    pub(super) async fn list_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, Error> {
        let request = cri::ListPodSandboxRequest { filter: None };
        Ok(self
            .call(
                "list pod sandboxes",
                self.runtime_client().list_pod_sandbox(request),
            )
            .await?
            .items)
    }

    /// The image `reference` names, as the runtime resolves it; `None` when there is none.
    pub(super) async fn image_status(&self, reference: &str) -> Result<Option<cri::Image>, Error> {
        let request = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        match self
            .call(
                format!("ask for image {reference}"),
                self.image_client().image_status(request),
            )
            .await
        {
            Ok(status) => Ok(status.image),
            Err(Error::Cri {
                not_found: true, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A container's image and times (cached once it has exited); `None` when it is gone.
    pub(super) async fn container_status(&self, id: &str) -> Result<Option<Status>, Error> {
        if let Some(status) = self.cache().containers.get(id) {
            return Ok(Some(status.clone()));
        }
        let request = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let status = match self
            .call(
                format!("ask for container {id}"),
                self.runtime_client().container_status(request),
            )
            .await
        {
            Ok(r) => r.status,
            Err(Error::Cri {
                not_found: true, ..
            }) => None,
            Err(e) => return Err(e),
        };
        let Some(status) = status.map(Status::from) else {
            return Ok(None);
        };
        if status.exited {
            self.cache()
                .containers
                .insert(id.to_string(), status.clone());
        }
        Ok(Some(status))
    }

    /// Asks for the config of each image not asked for yet; forgets the images gone.
    async fn fill_details(&self, images: &[cri::Image]) -> Result<(), Error> {
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        let missing: Vec<String> = {
            let mut cache = self.cache();
            cache.images.retain(|id, _| present.contains(id.as_str()));
            present
                .iter()
                .filter(|id| !cache.images.contains_key(**id))
                .map(|id| id.to_string())
                .collect()
        };
        for id in missing {
            let request = cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
                verbose: true,
            };
            let details = match self
                .call(
                    format!("ask for image {id}"),
                    self.image_client().image_status(request),
                )
                .await
            {
                Ok(status) => details_of_info(&status.info),
                // Removed since the list.
                Err(Error::Cri {
                    not_found: true, ..
                }) => continue,
                Err(e) => return Err(e),
            };
            self.cache().images.insert(id, details);
        }
        Ok(())
    }

    /// Asks for the image of each sandbox not asked for yet; forgets the sandboxes gone.
    pub(super) async fn fill_sandbox_images(
        &self,
        sandboxes: &[cri::PodSandbox],
    ) -> Result<(), Error> {
        let present: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
        let missing: Vec<String> = {
            let mut cache = self.cache();
            cache
                .sandboxes
                .retain(|id, _| present.contains(id.as_str()));
            present
                .iter()
                .filter(|id| !cache.sandboxes.contains_key(**id))
                .map(|id| id.to_string())
                .collect()
        };
        for id in missing {
            let request = cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            };
            let image = match self
                .call(
                    format!("ask for pod sandbox {id}"),
                    self.runtime_client().pod_sandbox_status(request),
                )
                .await
            {
                Ok(status) => sandbox_image_of_info(&status.info),
                Err(Error::Cri {
                    not_found: true, ..
                }) => continue,
                Err(e) => return Err(e),
            };
            self.cache().sandboxes.insert(id, image);
        }
        Ok(())
    }

    /// The names of the images containerd's label pins (containerd 1.6 does not report them
    /// as pinned through the CRI); empty for other runtimes. A failure is a warning: the CRI's
    /// own `pinned` still holds on later runtimes.
    pub(super) async fn pinned_names(&self) -> Vec<String> {
        let Some(containerd) = &self.containerd else {
            return Vec::new();
        };
        match containerd.pinned_names(K8S_NAMESPACE).await {
            Ok(names) => names,
            Err(e) => {
                log::warn!(
                    "CRI runtime at {}: cannot read containerd's pinned images: {}",
                    self.endpoint,
                    crate::error_chain(&e)
                );
                Vec::new()
            }
        }
    }

    /// Forgets the exited containers no longer listed.
    pub(super) fn forget_containers(&self, present: &HashSet<&str>) {
        self.cache()
            .containers
            .retain(|id, _| present.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests;
