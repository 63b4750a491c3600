//! containerd's own API, for an engine that keeps its images in containerd (Docker's containerd
//! image store, the default of fresh Docker 29 installs): where containerd keeps its bytes (its
//! introspection service lists each plugin's `root`, as `ctr plugins ls -d` shows: never assume
//! `/var/lib/containerd`), and how many of them belong to one namespace (its content and its
//! snapshots), so that Docker's namespace (`moby`) is told from the kubelet's (`k8s.io`) on a
//! containerd both share. The only module that names tonic types; every call is bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::introspection_client::IntrospectionClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, UsageRequest};
use containerd_client::services::v1::{
    ListContentRequest, PluginsRequest, content_client::ContentClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};

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
