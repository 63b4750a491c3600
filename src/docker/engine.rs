//! [`DockerEngine`]: the Docker Engine API through bollard. Every request is bounded by the
//! configured timeout (bollard's own covers only the response headers), and the answers are
//! turned into the plain data of the model. Removals are never forced.
//!
//! This file owns connecting, the bounded call and its error mapping, the inventory, and the
//! [`Engine`] implementation, which hands the larger concerns to:
//! - `transport`: the connections, ours rather than bollard's: each answer bounded in size, each
//!   failure naming the endpoint (and, for a permission denied, who may connect);
//! - `remove`: the all-or-nothing image removal (untag, remove, put the tags back) and the image
//!   prunes, one image at a time;
//! - `events`: the event stream and which events mean "used", with Podman's quirks; `stream`:
//!   reading it, each line bounded;
//! - `cache`: the build cache's `/system/df` and `/build/prune`, through bollard's request hooks;
//! - `images`: the image list, read as text and parsed leniently (bollard's model refuses an
//!   answer that leaves out a field it requires); `containers`: the container list likewise,
//!   each container with the state its engine names;
//! - `storage`: where the engine keeps its bytes (`/info`, and containerd's roots for the
//!   containerd image store), and the bytes of its containerd namespace.
//!
//! None of them decides what to delete.

mod cache;
mod containers;
mod events;
mod images;
mod remove;
mod storage;
mod stream;
mod transport;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use bollard::{BollardRequest, Docker};
use futures_util::Stream;

use super::containerd::Containerd;
use super::{BuildCache, Engine, Error, Image, Inventory, Pruned, Removal, Storage, UseEvent};
use transport::Endpoint;

/// The Docker Engine (or a compatible one, such as `podman system service`) over its HTTP API.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// Where the engine is; every request goes through it.
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    /// Podman's Docker-compatible service rather than Docker (it has no build cache endpoint,
    /// and names images in its events differently).
    podman: bool,
    /// Where it keeps its bytes, as found when connecting.
    storage: Storage,
    /// The layers of each image id seen (they never change for an id), so that a pass
    /// inspects only the images it has not seen before.
    layers: Arc<Mutex<HashMap<String, Vec<String>>>>,
    /// The containerd of its image store, once connected (at discovery, or again after a
    /// failure): kept, so that each measurement does not connect anew.
    containerd: Arc<Mutex<Option<Containerd>>>,
}

impl DockerEngine {
    /// Connects to `host` (`unix://`, `tcp://`, `http://`; `None` for the local socket) and
    /// negotiates the API version (bollard 0.21 needs it, see crates.md G1).
    pub async fn connect(host: Option<&str>, timeout: Duration) -> Result<Self, Error> {
        let host = host.unwrap_or("unix:///var/run/docker.sock").to_string();
        // bollard counts whole seconds; never let a sub-second setting become "no timeout".
        let secs = timeout.as_secs().max(1);
        let endpoint = Endpoint::parse(&host).map_err(|uri| Error::Connect {
            host: host.clone(),
            source: BollardError::UnsupportedURISchemeError { uri },
        })?;
        let endpoint = Arc::new(endpoint);
        let docker = endpoint.client(secs).map_err(|source| Error::Connect {
            host: host.clone(),
            source,
        })?;
        let engine = DockerEngine {
            docker,
            endpoint,
            timeout,
            podman: false,
            storage: Storage::default(),
            layers: Arc::default(),
            containerd: Arc::default(),
        };
        let docker = engine
            .call(
                "negotiate API version",
                engine.docker.clone().negotiate_version(),
            )
            .await?;
        let engine = DockerEngine { docker, ..engine };
        let version = engine.call("version", engine.docker.version()).await?;
        let podman = version
            .components
            .unwrap_or_default()
            .iter()
            .any(|c| c.name.to_ascii_lowercase().contains("podman"));
        let engine = DockerEngine { podman, ..engine };
        let storage = match engine.discover_storage().await {
            Ok(storage) => storage,
            Err(e) => {
                log::warn!(
                    "engine at {host}: cannot tell where it keeps its bytes; only the configured paths are measured: {}",
                    crate::error_chain(&e)
                );
                Storage::default()
            }
        };
        Ok(DockerEngine { storage, ..engine })
    }

    /// True for Podman's Docker-compatible service.
    pub fn is_podman(&self) -> bool {
        self.podman
    }

    /// The body of `GET path_and_query` as text, for an answer bollard's models would drop or
    /// refuse. bollard 0.21 has no raw request; `ping` is the one call that returns its body as
    /// text, so its request goes out with the path rewritten, still through bollard's
    /// transport, timeout and error mapping.
    async fn get_text(&self, op: &str, path_and_query: &'static str) -> Result<String, Error> {
        let docker = self.docker.clone().with_request_modifier(move |req| {
            rewrite_uri(req, |uri| {
                let (path, _) = uri.split_once('?').unwrap_or((uri, ""));
                // Keeps whatever bollard puts before the path (a version prefix in 0.22).
                path.strip_suffix("/_ping")
                    .map(|base| format!("{base}{path_and_query}"))
            })
        });
        self.call(op, docker.ping()).await
    }

    /// [`DockerEngine::get_text`] for a list: the containerd image store fails a whole list
    /// with 404 "NotFound: content digest …" when an image in it is being removed (seen on
    /// Docker 28 while a pass and builds ran), so a 404 asks the list again, up to
    /// [`LIST_ATTEMPTS`] times.
    async fn get_list(&self, op: &str, path_and_query: &'static str) -> Result<String, Error> {
        let mut attempt = 1;
        loop {
            match self.get_text(op, path_and_query).await {
                Err(Error::Status { status: 404, .. }) if attempt < LIST_ATTEMPTS => {
                    attempt += 1;
                    tokio::time::sleep(LIST_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Runs one request under the timeout (bollard's covers only the response headers).
    async fn call<T>(
        &self,
        op: impl Into<String>,
        request: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, Error> {
        let op = op.into();
        // A little more than bollard's own timeout, so that its error wins when it fires.
        let bound = self.timeout + Duration::from_secs(5);
        match tokio::time::timeout(bound, request).await {
            Err(_) | Ok(Err(BollardError::RequestTimeoutError)) => Err(Error::Timeout {
                op,
                after: self.timeout,
            }),
            Ok(Err(source)) => Err(error(op, source)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The image `name` refers to: its id and its tags, or `None` when there is no such image.
    async fn inspect_image(&self, name: &str) -> Result<Option<(String, Vec<String>)>, Error> {
        match self
            .call(
                format!("inspect image {name}"),
                self.docker.inspect_image(name),
            )
            .await
        {
            Ok(inspect) => Ok(inspect.id.map(|id| (id, tags(inspect.repo_tags)))),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The API version negotiated at connect time, as (major, minor).
    fn api_version(&self) -> (usize, usize) {
        let v = self.docker.client_version();
        (v.major_version, v.minor_version)
    }
}

/// Turns bollard's error into ours: an answer with a status keeps its status and message.
/// How many times a list that failed with 404 is asked (see `DockerEngine::get_list`).
const LIST_ATTEMPTS: u32 = 4;
/// The pause before a list is asked again.
const LIST_RETRY_PAUSE: Duration = Duration::from_millis(200);

fn error(op: String, source: BollardError) -> Error {
    match source {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Error::Status {
            op,
            status: status_code,
            message,
        },
        source => Error::Request { op, source },
    }
}

/// An image id as the rest of the program spells it (`sha256:<hex>`). Podman sends some ids as
/// bare hex: event actors, and from Podman 5 the image list's `ParentId` while its `Id` has the
/// prefix, so a parent would never match the image it names. Anything else is kept as sent.
fn canonical_id(id: String) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{id}")
    } else {
        id
    }
}

/// Tags without Docker's `<none>:<none>` placeholder.
fn tags(repo_tags: Option<Vec<String>>) -> Vec<String> {
    repo_tags
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t != "<none>:<none>")
        .collect()
}

/// Replaces the URI of `req` by what `f` makes of it, when it makes something that parses;
/// otherwise the request goes out as it was.
fn rewrite_uri(mut req: BollardRequest, f: impl Fn(&str) -> Option<String>) -> BollardRequest {
    let uri = req.uri().to_string();
    if let Some(Ok(new)) = f(&uri).map(|u| u.parse()) {
        *req.uri_mut() = new;
    }
    req
}

/// Maps 404 and 409 to what they mean for a removal.
fn removal(result: Result<(), Error>) -> Result<Removal, Error> {
    match result {
        Ok(()) => Ok(Removal::Removed),
        Err(Error::Status { status: 404, .. }) => Ok(Removal::Gone),
        Err(Error::Status {
            status: 409,
            message,
            ..
        }) => Ok(Removal::Conflict(message)),
        Err(e) => Err(e),
    }
}

fn rfc3339_secs(s: &str) -> Option<i64> {
    let t = s.parse::<jiff::Timestamp>().ok()?.as_second();
    // Docker writes the zero time ("0001-01-01T00:00:00Z") for a container never started.
    (t > 0).then_some(t)
}

impl Engine for DockerEngine {
    async fn inventory(&self, finished_times: bool) -> Result<Inventory, Error> {
        let images = self.list_images().await?;

        // `containers` in the image list is -1 (crates.md G2): "in use" comes from here.
        let mut containers = Vec::new();
        for mut c in self.list_containers().await? {
            if finished_times && c.is_stopped() {
                match self
                    .call(
                        format!("inspect container {}", c.id),
                        self.docker.inspect_container(&c.id, None),
                    )
                    .await
                {
                    Ok(inspect) => {
                        c.finished = inspect
                            .state
                            .and_then(|s| s.finished_at)
                            .and_then(|s| rfc3339_secs(&s));
                    }
                    // Removed since the list: it no longer matters.
                    Err(e) if e.status() == Some(404) => continue,
                    Err(e) => return Err(e),
                }
            }
            containers.push(c);
        }
        Ok(Inventory { images, containers })
    }

    async fn remove_container(&self, id: &str) -> Result<Removal, Error> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(false)
            .v(true)
            .build();
        removal(
            self.call(
                format!("remove container {id}"),
                self.docker.remove_container(id, Some(options)),
            )
            .await,
        )
    }

    async fn remove_image(&self, id: &str, planned: &[String]) -> Result<Removal, Error> {
        self.remove_all_or_nothing(id, planned).await
    }

    async fn prune_containers(&self) -> Result<Pruned, Error> {
        self.prune_stopped_containers().await
    }

    async fn prune_images(
        &self,
        all: bool,
        spare: &(dyn Fn(&Image) -> bool + Sync),
    ) -> Result<Pruned, Error> {
        self.prune_one_by_one(all, spare).await
    }

    async fn build_cache(&self) -> Result<Option<BuildCache>, Error> {
        self.read_build_cache().await
    }

    async fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
        all: bool,
    ) -> Result<Option<Pruned>, Error> {
        self.prune_cache(unused_for, keep_bytes, all).await
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.inspect_image(name).await?.map(|(id, _)| id))
    }

    fn storage(&self) -> &Storage {
        &self.storage
    }

    async fn containerd_bytes(&self) -> Result<Option<u64>, Error> {
        self.namespace_bytes().await
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
        self.events_since(since_nanos, until_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_is_no_time() {
        assert_eq!(rfc3339_secs("0001-01-01T00:00:00Z"), None);
        assert_eq!(
            rfc3339_secs("2026-11-28T05:00:00.123456789Z"),
            Some(1_795_842_000)
        );
    }
}
