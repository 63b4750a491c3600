//! containerd's own API, for an engine that keeps its images in containerd (Docker's containerd
//! image store, the default of fresh Docker 29 installs, and the kubelet's containerd): where
//! containerd keeps its bytes (its introspection service lists each plugin's `root`, as `ctr
//! plugins ls -d` shows: never assume `/var/lib/containerd`), how many of them belong to one
//! namespace (its content and its snapshots), so that Docker's namespace (`moby`) is told from
//! the kubelet's (`k8s.io`) on a containerd both share; for the kubelet's, the images pinned by
//! label and the task events of a namespace (for a CRI runtime without `GetContainerEvents`).
//! With `cri`, the only modules that name tonic types; every call is bounded (an event stream
//! only in its start: it waits for events as long as it lives).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::introspection_client::IntrospectionClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, UsageRequest};
use containerd_client::services::v1::{
    ListContentRequest, ListImagesRequest, PluginsRequest, SubscribeRequest,
    content_client::ContentClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status, Streaming};
use containerd_client::types::Envelope;
use prost::Message as _;

use super::Error;

/// The plugin type of containerd's content store.
const CONTENT: &str = "io.containerd.content.v1";
/// The plugin type of containerd's snapshotters.
const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
/// At most this many snapshots are sized in one call of [`Containerd::namespace_bytes`] (a
/// runaway namespace must not hold a pass); the rest are counted as unknown.
const MAX_SNAPSHOTS: usize = 100_000;

/// A connection to one containerd.
#[derive(Debug, Clone)]
pub(crate) struct Containerd {
    channel: Channel,
    address: PathBuf,
    timeout: Duration,
}

/// Where containerd keeps the bytes of the plugins an image store uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Roots {
    /// The content store's root (image blobs).
    pub content: Option<PathBuf>,
    /// Each snapshotter's root, by name (`overlayfs`).
    pub snapshotters: BTreeMap<String, PathBuf>,
}

/// The bytes of one namespace, as containerd counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NamespaceBytes {
    /// Its content (blobs: layers compressed, configs, manifests).
    pub content: u64,
    /// Its snapshots (layers unpacked, containers' writable layers) in one snapshotter.
    pub snapshots: u64,
    /// Their inodes.
    pub inodes: u64,
}

/// The label containerd's CRI reads as "pinned" (containerd 1.7 and later report it as CRI
/// `pinned`; 1.6 does not, so it is read here).
pub(crate) const PINNED_LABEL: &str = "io.cri-containerd.pinned";

/// A task or container event of one namespace, as the kubelet's runtime makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskEvent {
    /// When, unix nanoseconds (the process's exit time for an exit).
    pub time_nanos: i64,
    /// The container.
    pub container_id: String,
    /// What happened: `create` (with the image reference it was made from), `start`, `die`.
    pub action: &'static str,
    /// The image reference of a `create`.
    pub image: Option<String>,
}

/// containerd's events of one namespace: container creates, task starts and exits.
pub(crate) struct TaskEvents {
    stream: Streaming<Envelope>,
}

impl TaskEvents {
    /// The next event that tells of a container's use; `None` when containerd ends the stream.
    /// Waits as long as it takes (it is a subscription).
    pub(crate) async fn next(&mut self) -> Result<Option<TaskEvent>, Error> {
        loop {
            let envelope = match self.stream.message().await {
                Ok(Some(envelope)) => envelope,
                Ok(None) => return Ok(None),
                Err(s) => {
                    return Err(Error::Containerd {
                        op: "follow containerd's events".into(),
                        message: format!("{:?}: {}", s.code(), s.message()),
                        not_found: false,
                    });
                }
            };
            if let Some(event) = task_event(&envelope) {
                return Ok(Some(event));
            }
        }
    }
}

/// The use an envelope tells of, if any: `/containers/create`, `/tasks/start`, and
/// `/tasks/exit` of a container's own process (not of an exec in it).
fn task_event(envelope: &Envelope) -> Option<TaskEvent> {
    use containerd_client::events::{ContainerCreate, TaskExit, TaskStart};
    let payload = envelope.event.as_ref()?;
    let stamp = |t: &prost_types::Timestamp| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    };
    let time_nanos = envelope.timestamp.as_ref().map(stamp)?;
    let bytes = payload.value.as_slice();
    match envelope.topic.as_str() {
        "/containers/create" => {
            let e = ContainerCreate::decode(bytes).ok()?;
            Some(TaskEvent {
                time_nanos,
                container_id: e.id,
                action: "create",
                image: Some(e.image).filter(|i| !i.is_empty()),
            })
        }
        "/tasks/start" => {
            let e = TaskStart::decode(bytes).ok()?;
            Some(TaskEvent {
                time_nanos,
                container_id: e.container_id,
                action: "start",
                image: None,
            })
        }
        "/tasks/exit" => {
            let e = TaskExit::decode(bytes).ok()?;
            // An exec's process exiting is not its container stopping.
            (e.id.is_empty() || e.id == e.container_id).then(|| TaskEvent {
                time_nanos: e.exited_at.as_ref().map_or(time_nanos, stamp),
                container_id: e.container_id,
                action: "die",
                image: None,
            })
        }
        _ => None,
    }
}

impl NamespaceBytes {
    /// Content and snapshots together.
    pub fn total(&self) -> u64 {
        self.content.saturating_add(self.snapshots)
    }
}

impl Containerd {
    /// Connects to containerd's socket at `address` (a unix socket path).
    pub(crate) async fn connect(address: &Path, timeout: Duration) -> Result<Containerd, Error> {
        let op = "connect to containerd";
        let channel = match tokio::time::timeout(timeout, containerd_client::connect(address)).await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(failed(op, address, &e.to_string())),
            Err(_) => return Err(timed_out(op, timeout)),
        };
        Ok(Containerd {
            channel,
            address: address.to_path_buf(),
            timeout,
        })
    }

    /// The roots of the content store and the snapshotters, from the introspection service.
    pub(crate) async fn roots(&self) -> Result<Roots, Error> {
        let op = "list containerd's plugins";
        let mut client = IntrospectionClient::new(self.channel.clone());
        let request = PluginsRequest {
            filters: vec![format!("type=={CONTENT}"), format!("type=={SNAPSHOTTER}")],
        };
        let plugins = self
            .bounded(op, client.plugins(request))
            .await?
            .into_inner()
            .plugins;
        let mut roots = Roots::default();
        for p in plugins {
            // A plugin that failed to load (btrfs on ext4, say) exports nothing.
            let Some(root) = p.exports.get("root").filter(|r| !r.is_empty()) else {
                continue;
            };
            match p.r#type.as_str() {
                CONTENT => roots.content = Some(PathBuf::from(root)),
                SNAPSHOTTER => {
                    roots.snapshotters.insert(p.id, PathBuf::from(root));
                }
                _ => {}
            }
        }
        Ok(roots)
    }

    /// The bytes an image store's namespace holds (content and snapshots), as
    /// [`crate::docker::Engine::containerd_bytes`] counts them.
    pub(crate) async fn store_bytes(
        &self,
        store: &crate::docker::storage::ContainerdStore,
    ) -> Result<u64, Error> {
        Ok(self
            .namespace_bytes(&store.namespace, &store.snapshotter)
            .await?
            .total())
    }

    /// The bytes `namespace` holds: its content, and its snapshots in `snapshotter`. A blob
    /// that two namespaces hold is stored once but counted in each (it belongs to both).
    pub(crate) async fn namespace_bytes(
        &self,
        namespace: &str,
        snapshotter: &str,
    ) -> Result<NamespaceBytes, Error> {
        let mut bytes = NamespaceBytes::default();
        let op = "list containerd's content";
        let mut content = ContentClient::new(self.channel.clone());
        let request = namespaced(ListContentRequest { filters: vec![] }, namespace)?;
        let mut stream = self.bounded(op, content.list(request)).await?.into_inner();
        while let Some(item) = self.bounded(op, stream.message()).await? {
            for info in item.info {
                bytes.content = bytes
                    .content
                    .saturating_add(u64::try_from(info.size).unwrap_or(0));
            }
        }
        let op = "list containerd's snapshots";
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let request = namespaced(
            ListSnapshotsRequest {
                snapshotter: snapshotter.to_string(),
                filters: vec![],
            },
            namespace,
        )?;
        let mut stream = self
            .bounded(op, snapshots.list(request))
            .await?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(item) = self.bounded(op, stream.message()).await? {
            keys.extend(item.info.into_iter().map(|i| i.name));
            if keys.len() > MAX_SNAPSHOTS {
                log::warn!(
                    "containerd at {}: namespace {namespace} has more than {MAX_SNAPSHOTS} snapshots: sizing the first {MAX_SNAPSHOTS}",
                    self.address.display()
                );
                keys.truncate(MAX_SNAPSHOTS);
                break;
            }
        }
        let op = "size a containerd snapshot";
        for key in keys {
            let request = namespaced(
                UsageRequest {
                    snapshotter: snapshotter.to_string(),
                    key,
                },
                namespace,
            )?;
            match self.bounded(op, snapshots.usage(request)).await {
                Ok(usage) => {
                    let usage = usage.into_inner();
                    bytes.snapshots = bytes
                        .snapshots
                        .saturating_add(u64::try_from(usage.size).unwrap_or(0));
                    bytes.inodes = bytes
                        .inodes
                        .saturating_add(u64::try_from(usage.inodes).unwrap_or(0));
                }
                // Removed since the list: it no longer counts.
                Err(Error::Containerd {
                    not_found: true, ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(bytes)
    }

    /// The names of the images of `namespace` labelled [`PINNED_LABEL`]`=pinned`.
    pub(crate) async fn pinned_names(&self, namespace: &str) -> Result<Vec<String>, Error> {
        let op = "list containerd's pinned images";
        let mut images = ImagesClient::new(self.channel.clone());
        let request = namespaced(
            ListImagesRequest {
                filters: vec![format!("labels.\"{PINNED_LABEL}\"==pinned")],
            },
            namespace,
        )?;
        let list = self.bounded(op, images.list(request)).await?.into_inner();
        Ok(list.images.into_iter().map(|i| i.name).collect())
    }

    /// Subscribes to the container creates, task starts and task exits of `namespace`.
    pub(crate) async fn task_events(&self, namespace: &str) -> Result<TaskEvents, Error> {
        let op = "subscribe to containerd's events";
        let mut events = EventsClient::new(self.channel.clone());
        let selector = |topic: &str| format!("namespace=={namespace:?},topic=={topic:?}");
        let request = SubscribeRequest {
            filters: vec![
                selector("/containers/create"),
                selector("/tasks/start"),
                selector("/tasks/exit"),
            ],
        };
        let stream = self
            .bounded(op, events.subscribe(request))
            .await?
            .into_inner();
        Ok(TaskEvents { stream })
    }

    /// Runs one call under the timeout; a gRPC status becomes our error.
    async fn bounded<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Error>
    where
        T: Sized,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(s)) => Err(status_at(op, &self.address, &s)),
            Err(_) => Err(timed_out(op, self.timeout)),
        }
    }
}

/// `message` as a request to `namespace` (containerd reads it from the metadata).
fn namespaced<T>(message: T, namespace: &str) -> Result<Request<T>, Error> {
    let mut request = Request::new(message);
    let value = namespace.parse().map_err(|_| Error::Containerd {
        op: format!("name the namespace {namespace:?}"),
        message: "not a valid gRPC metadata value".into(),
        not_found: false,
    })?;
    request.metadata_mut().insert("containerd-namespace", value);
    Ok(request)
}

fn failed(op: &str, address: &Path, message: &str) -> Error {
    Error::Containerd {
        op: format!("{op} at {}", address.display()),
        message: message.to_string(),
        not_found: false,
    }
}

fn status_at(op: &str, address: &Path, s: &Status) -> Error {
    Error::Containerd {
        op: format!("{op} at {}", address.display()),
        message: format!("{:?}: {}", s.code(), s.message()),
        not_found: s.code() == containerd_client::tonic::Code::NotFound,
    }
}

fn timed_out(op: &str, after: Duration) -> Error {
    Error::Timeout {
        op: op.to_string(),
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_client::events::{ContainerCreate, TaskExit, TaskStart};

    fn envelope(topic: &str, event: &impl prost::Message, secs: i64) -> Envelope {
        Envelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 5,
            }),
            namespace: "k8s.io".into(),
            topic: topic.into(),
            event: Some(prost_types::Any {
                type_url: String::new(),
                value: event.encode_to_vec(),
            }),
        }
    }

    #[test]
    fn the_envelopes_that_tell_of_a_use() {
        let create = ContainerCreate {
            id: "c1".into(),
            image: "app:1".into(),
            runtime: None,
        };
        assert_eq!(
            task_event(&envelope("/containers/create", &create, 10)),
            Some(TaskEvent {
                time_nanos: 10_000_000_005,
                container_id: "c1".into(),
                action: "create",
                image: Some("app:1".into()),
            })
        );
        let start = TaskStart {
            container_id: "c1".into(),
            pid: 7,
        };
        let e = task_event(&envelope("/tasks/start", &start, 11)).expect("a start");
        assert_eq!((e.action, e.container_id.as_str()), ("start", "c1"));
        // The process's exit time, not the envelope's.
        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 7,
            exit_status: 0,
            exited_at: Some(prost_types::Timestamp {
                seconds: 12,
                nanos: 0,
            }),
        };
        let e = task_event(&envelope("/tasks/exit", &exit, 13)).expect("an exit");
        assert_eq!((e.action, e.time_nanos), ("die", 12_000_000_000));
        // An exec's exit is no stop; other topics and garbage say nothing.
        let exec = TaskExit {
            id: "exec-1".into(),
            ..exit
        };
        assert_eq!(task_event(&envelope("/tasks/exit", &exec, 13)), None);
        assert_eq!(task_event(&envelope("/snapshot/prepare", &start, 13)), None);
        let mut garbage = envelope("/tasks/start", &start, 13);
        garbage.event = Some(prost_types::Any {
            type_url: String::new(),
            value: vec![0xff, 0xff, 0xff],
        });
        assert_eq!(task_event(&garbage), None);
    }
}
