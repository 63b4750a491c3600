//! The Docker Engine, through bollard. This is the only module that names bollard types: the rest
//! of the program sees the plain [`Inventory`] and the narrow [`Engine`] trait. It performs what
//! it is asked to and never decides what to delete.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerSummaryStateEnum, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    PruneContainersOptionsBuilder, PruneImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::{Stream, StreamExt};

/// An image as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    /// `sha256:…`
    pub id: String,
    /// The parent image (classic builder), if any.
    pub parent_id: Option<String>,
    /// `repository:tag` references; empty for a dangling image.
    pub tags: Vec<String>,
    /// Creation (build) time, unix seconds.
    pub created: i64,
    /// Size Docker reports (shared layers included).
    pub size_bytes: u64,
}

impl Image {
    /// True for an image with no tag (what `docker image prune` removes).
    pub fn is_dangling(&self) -> bool {
        self.tags.is_empty()
    }
}

/// A container as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// First name, without the leading slash.
    pub name: String,
    /// The image it was created from, `sha256:…`.
    pub image_id: String,
    /// False for created, exited and dead containers (what `docker container prune` removes).
    pub running: bool,
    /// Creation time, unix seconds.
    pub created: i64,
    /// When it stopped, unix seconds; only filled in when asked for (it costs one request each).
    pub finished: Option<i64>,
}

/// Everything present on the Engine, in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Top-level images (`docker images`).
    pub images: Vec<Image>,
    /// All containers, running or not.
    pub containers: Vec<Container>,
}

/// What a removal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Removed (for an image: every tag and the image).
    Removed,
    /// 409: in use now, or otherwise refused; the message says why.
    Conflict(String),
    /// 404: already gone.
    Gone,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ids of what was deleted.
    pub deleted: Vec<String>,
    /// Bytes Docker says it reclaimed.
    pub reclaimed_bytes: u64,
}

/// A Docker event that tells that an image was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseEvent {
    /// When, unix nanoseconds.
    pub time_nanos: i64,
    /// The image as the event names it: an id (`sha256:…`) or a reference (`app:1`).
    pub image: String,
    /// The action (`start`, `pull`, …).
    pub action: String,
    /// True when the image itself was deleted (forget it).
    pub deleted: bool,
}

/// Errors talking to Docker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint could not be set up (bad address, missing socket).
    #[error("cannot connect to Docker at {host}")]
    Connect {
        /// The endpoint.
        host: String,
        /// Why.
        #[source]
        source: BollardError,
    },
    /// A request failed.
    #[error("Docker request failed: {op}")]
    Request {
        /// What we asked.
        op: String,
        /// Why.
        #[source]
        source: BollardError,
    },
    /// A request got no answer in time.
    #[error("Docker request timed out after {}s: {op}", .after.as_secs())]
    Timeout {
        /// What we asked.
        op: String,
        /// The timeout.
        after: Duration,
    },
}

impl Error {
    /// True when trying again later may help (Docker restarting, a timeout); false for a
    /// request Docker understood and refused.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Connect { .. } => true,
            Error::Request { source, .. } => !matches!(
                source,
                BollardError::DockerResponseServerError { status_code, .. } if *status_code < 500
            ),
        }
    }
}

/// What a cleaning pass needs from the Engine. Implemented over bollard by [`Engine`]'s one
/// implementation, [`DockerEngine`], and by recording fakes in tests.
pub trait Engine {
    /// Lists images and containers; with `finished_times`, inspects stopped containers for
    /// their finish time.
    fn inventory(
        &self,
        finished_times: bool,
    ) -> impl Future<Output = Result<Inventory, Error>> + Send;
    /// Removes a stopped container (and its anonymous volumes), without force.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<Removal, Error>> + Send;
    /// Removes an image by id without force; an image with several tags is untagged tag by tag
    /// first, as Docker refuses to remove it by id otherwise.
    fn remove_image(
        &self,
        id: &str,
        tags: &[String],
    ) -> impl Future<Output = Result<Removal, Error>> + Send;
    /// `docker container prune`.
    fn prune_containers(&self) -> impl Future<Output = Result<Pruned, Error>> + Send;
    /// `docker image prune` (`all = false`: dangling only) or `docker image prune -a`.
    fn prune_images(&self, all: bool) -> impl Future<Output = Result<Pruned, Error>> + Send;
}

/// The Docker Engine over its HTTP API.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    timeout: Duration,
}

impl DockerEngine {
    /// Connects to `host` (`unix://`, `tcp://`, `http://`; `None` for the local socket) and
    /// negotiates the API version (bollard 0.21 needs it, see crates.md G1).
    pub async fn connect(host: Option<&str>, timeout: Duration) -> Result<Self, Error> {
        let host = host.unwrap_or("unix:///var/run/docker.sock").to_string();
        // bollard counts whole seconds; never let a sub-second setting become "no timeout".
        let secs = timeout.as_secs().max(1);
        let connected = if host.starts_with("unix://") {
            Docker::connect_with_unix(&host, secs, API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_http(&host, secs, API_DEFAULT_VERSION)
        };
        let docker = connected.map_err(|source| Error::Connect {
            host: host.clone(),
            source,
        })?;
        let engine = DockerEngine { docker, timeout };
        let docker = engine
            .call(
                "negotiate API version",
                engine.docker.clone().negotiate_version(),
            )
            .await?;
        Ok(DockerEngine { docker, timeout })
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
            Ok(Err(source)) => Err(Error::Request { op, source }),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The id of the image `name` refers to, or `None` when there is no such image.
    pub async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        match self
            .call(
                format!("inspect image {name}"),
                self.docker.inspect_image(name),
            )
            .await
        {
            Ok(inspect) => Ok(inspect.id),
            Err(Error::Request {
                source:
                    BollardError::DockerResponseServerError {
                        status_code: 404, ..
                    },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Docker's event stream of container and image events that mean "used", from
    /// `since_nanos` (replayed from Docker's small buffer) and, with `until_nanos`, ending
    /// there; otherwise endless until Docker goes away.
    pub fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + use<> {
        let filters = HashMap::from([(
            "type".to_string(),
            vec!["container".to_string(), "image".to_string()],
        )]);
        let stamp = |n: i64| {
            format!(
                "{}.{:09}",
                n.div_euclid(1_000_000_000),
                n.rem_euclid(1_000_000_000)
            )
        };
        let mut options = EventsOptionsBuilder::default().filters(&filters);
        if let Some(s) = since_nanos {
            options = options.since(&stamp(s));
        }
        if let Some(u) = until_nanos {
            options = options.until(&stamp(u));
        }
        self.docker
            .events(Some(options.build()))
            .filter_map(|event| async move {
                match event {
                    Err(source) => Some(Err(Error::Request {
                        op: "follow events".into(),
                        source,
                    })),
                    Ok(e) => use_event(e).map(Ok),
                }
            })
    }
}

/// Keeps the events that say an image was used (or deleted).
fn use_event(e: bollard::models::EventMessage) -> Option<UseEvent> {
    let action = e.action?;
    let actor = e.actor?;
    let time_nanos = e
        .time_nano
        .or(e.time.map(|s| s.saturating_mul(1_000_000_000)))?;
    // Actions may carry a suffix (`exec_start: sh`); the verb is what counts.
    let verb = action
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let (image, deleted) = match e.typ? {
        EventMessageTypeEnum::CONTAINER => {
            if !matches!(verb.as_str(), "create" | "start" | "die" | "destroy") {
                return None;
            }
            (actor.attributes?.remove("image")?, false)
        }
        EventMessageTypeEnum::IMAGE => match verb.as_str() {
            "pull" | "tag" | "load" | "import" | "build" | "untag" => (actor.id?, false),
            "delete" => (actor.id?, true),
            _ => return None,
        },
        _ => return None,
    };
    Some(UseEvent {
        time_nanos,
        image,
        action: verb,
        deleted,
    })
}

fn status_of(e: &Error) -> Option<u16> {
    match e {
        Error::Request {
            source: BollardError::DockerResponseServerError { status_code, .. },
            ..
        } => Some(*status_code),
        _ => None,
    }
}

fn message_of(e: &Error) -> String {
    match e {
        Error::Request {
            source: BollardError::DockerResponseServerError { message, .. },
            ..
        } => message.clone(),
        other => other.to_string(),
    }
}

/// Maps 404 and 409 to what they mean for a removal.
fn removal(result: Result<(), Error>) -> Result<Removal, Error> {
    match result {
        Ok(()) => Ok(Removal::Removed),
        Err(e) => match status_of(&e) {
            Some(404) => Ok(Removal::Gone),
            Some(409) => Ok(Removal::Conflict(message_of(&e))),
            _ => Err(e),
        },
    }
}

fn rfc3339_secs(s: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?.timestamp();
    // Docker writes the zero time ("0001-01-01T00:00:00Z") for a container never started.
    (t > 0).then_some(t)
}

impl Engine for DockerEngine {
    async fn inventory(&self, finished_times: bool) -> Result<Inventory, Error> {
        let summaries = self
            .call(
                "list images",
                self.docker
                    .list_images(Some(ListImagesOptionsBuilder::default().all(false).build())),
            )
            .await?;
        let images = summaries
            .into_iter()
            .map(|s| Image {
                id: s.id,
                parent_id: Some(s.parent_id).filter(|p| !p.is_empty()),
                tags: s
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                created: s.created,
                size_bytes: u64::try_from(s.size).unwrap_or(0),
            })
            .collect();

        // `containers` in the image list is -1 (crates.md G2): "in use" comes from here.
        let list = self
            .call(
                "list containers",
                self.docker.list_containers(Some(
                    ListContainersOptionsBuilder::default().all(true).build(),
                )),
            )
            .await?;
        let mut containers = Vec::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            let running = !matches!(
                c.state,
                Some(
                    ContainerSummaryStateEnum::CREATED
                        | ContainerSummaryStateEnum::EXITED
                        | ContainerSummaryStateEnum::DEAD
                )
            );
            let mut finished = None;
            if finished_times && !running {
                match self
                    .call(
                        format!("inspect container {id}"),
                        self.docker.inspect_container(&id, None),
                    )
                    .await
                {
                    Ok(inspect) => {
                        finished = inspect
                            .state
                            .and_then(|s| s.finished_at)
                            .and_then(|s| rfc3339_secs(&s));
                    }
                    // Removed since the list: it no longer matters.
                    Err(e) if status_of(&e) == Some(404) => continue,
                    Err(e) => return Err(e),
                }
            }
            containers.push(Container {
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                image_id: c.image_id.unwrap_or_default(),
                running,
                created: c.created.unwrap_or_default(),
                finished,
                id,
            });
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

    async fn remove_image(&self, id: &str, tags: &[String]) -> Result<Removal, Error> {
        let options = || {
            RemoveImageOptionsBuilder::default()
                .force(false)
                .noprune(false)
                .build()
        };
        // Docker refuses to remove by id an image referenced by several tags without force,
        // and force would also untag an image a stopped container uses. Untag first.
        if tags.len() > 1 {
            for tag in tags {
                let untag = self
                    .call(
                        format!("untag {tag}"),
                        self.docker.remove_image(tag, Some(options()), None),
                    )
                    .await
                    .map(|_| ());
                match removal(untag)? {
                    Removal::Removed | Removal::Gone => {}
                    conflict => return Ok(conflict),
                }
            }
        }
        removal(
            self.call(
                format!("remove image {id}"),
                self.docker.remove_image(id, Some(options()), None),
            )
            .await
            .map(|_| ()),
        )
    }

    async fn prune_containers(&self) -> Result<Pruned, Error> {
        let r = self
            .call(
                "prune containers",
                self.docker
                    .prune_containers(Some(PruneContainersOptionsBuilder::default().build())),
            )
            .await?;
        Ok(Pruned {
            deleted: r.containers_deleted.unwrap_or_default(),
            reclaimed_bytes: r
                .space_reclaimed
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(0),
        })
    }

    async fn prune_images(&self, all: bool) -> Result<Pruned, Error> {
        let filters = HashMap::from([(
            "dangling".to_string(),
            vec![if all { "false" } else { "true" }.to_string()],
        )]);
        let r = self
            .call(
                if all {
                    "prune all unused images"
                } else {
                    "prune dangling images"
                },
                self.docker.prune_images(Some(
                    PruneImagesOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                )),
            )
            .await?;
        Ok(Pruned {
            deleted: r
                .images_deleted
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| i.deleted)
                .collect(),
            reclaimed_bytes: r
                .space_reclaimed
                .and_then(|b| u64::try_from(b).ok())
                .unwrap_or(0),
        })
    }
}
