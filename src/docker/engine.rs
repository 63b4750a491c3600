//! [`DockerEngine`]: the Docker Engine API through bollard. Every request is bounded by the
//! configured timeout (bollard's own covers only the response headers), and the answers are
//! turned into the plain data of the model. Removals are never forced.
//!
//! The build cache takes two workarounds of bollard 0.21, both through its request modifier on a
//! clone of the client, so that every request still goes through bollard's transport:
//! - `GET /system/df`: bollard models only the API 1.52+ answer (`BuildCacheUsage`), and drops
//!   the `BuildCache` list that Docker 20.10 to 28 send (crates.md G3); the body is read raw
//!   through `ping`, the one call that returns it as text, with the path rewritten.
//! - `POST /build/prune`: bollard knows only the API 1.48+ name of the size to keep,
//!   `reserved-space`; for an older engine (Docker 27 and earlier) the parameter is renamed to
//!   `keep-storage` (API 1.39 to 1.47). Docker reads the name by the request's API version, and
//!   bollard 0.21 sends unversioned paths, which an engine answers at its newest version: the
//!   negotiated version is that one (or bollard's newest, 1.53, above it).

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerSummaryStateEnum, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    PruneBuildOptionsBuilder, PruneContainersOptionsBuilder, PruneImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, BollardRequest, Docker};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;

use super::{
    BuildCache, CacheRecord, Container, Engine, Error, Image, Inventory, Pruned, Removal, UseEvent,
};

/// The build cache's records, whatever the engine's API version: `/system/df` computes only
/// them from API 1.42 on (older engines ignore `type` and compute everything), and lists them
/// from 1.52 on only when verbose.
const DF_BUILD_CACHE: &str = "/system/df?type=build-cache&verbose=1";

/// The Docker Engine (or a compatible one, such as `podman system service`) over its HTTP API.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    timeout: Duration,
    /// Podman's Docker-compatible service rather than Docker (it has no build cache endpoint,
    /// and names images in its events differently).
    podman: bool,
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
        let engine = DockerEngine {
            docker,
            timeout,
            podman: false,
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
        Ok(DockerEngine { podman, ..engine })
    }

    /// True for Podman's Docker-compatible service.
    pub fn is_podman(&self) -> bool {
        self.podman
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

    /// `DELETE /images/{name}` without force: how it ended and, when it did, the ids of the
    /// images Docker deleted with it (none for an untag that left the image other references;
    /// the image and its dangling parents otherwise).
    async fn delete_image(&self, name: &str, op: String) -> Result<(Removal, Vec<String>), Error> {
        let options = RemoveImageOptionsBuilder::default()
            .force(false)
            .noprune(false)
            .build();
        match self
            .call(op, self.docker.remove_image(name, Some(options), None))
            .await
        {
            Ok(items) => Ok((
                Removal::Removed,
                items.into_iter().filter_map(|i| i.deleted).collect(),
            )),
            Err(e) => removal(Err(e)).map(|r| (r, Vec::new())),
        }
    }

    /// Puts back the tags of `untagged` on image `id`, each only if it names nothing now (a tag
    /// pulled for another image meanwhile stays where it is). Failures are logged: the image then
    /// lost that tag, which the log says loudly.
    async fn restore_tags(&self, id: &str, untagged: &[&String]) {
        for tag in untagged {
            match self.inspect_image(tag).await {
                Ok(None) => {}
                Ok(Some((other, _))) => {
                    log::warn!(
                        "not putting back tag {tag} on {id}: it names {other} now (moved meanwhile)"
                    );
                    continue;
                }
                Err(e) => {
                    log::error!(
                        "cannot check tag {tag} to put it back on {id}: {}; the image lost it",
                        crate::error_chain(&e)
                    );
                    continue;
                }
            }
            let (repo, name) = split_tag(tag);
            let options = TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(name)
                .build();
            match self
                .call(
                    format!("tag {id} as {tag}"),
                    self.docker.tag_image(id, Some(options)),
                )
                .await
            {
                Ok(()) => log::info!("put tag {tag} back on {id}"),
                Err(e) => log::error!(
                    "cannot put tag {tag} back on {id}: {}; the image lost it",
                    crate::error_chain(&e)
                ),
            }
        }
    }

    /// The API version negotiated at connect time, as (major, minor).
    fn api_version(&self) -> (usize, usize) {
        let v = self.docker.client_version();
        (v.major_version, v.minor_version)
    }

    /// The body of `GET` [`DF_BUILD_CACHE`] as text (see the module docs for why through
    /// `ping`).
    async fn system_df(&self) -> Result<String, Error> {
        let docker = self.docker.clone().with_request_modifier(|req| {
            rewrite_uri(req, |uri| {
                let (path, _) = uri.split_once('?').unwrap_or((uri, ""));
                // Keeps whatever bollard puts before the path (a version prefix in 0.22).
                path.strip_suffix("/_ping")
                    .map(|base| format!("{base}{DF_BUILD_CACHE}"))
            })
        });
        self.call("read the build cache (GET /system/df)", docker.ping())
            .await
    }
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

/// A build-cache record as `/system/df` lists it (both shapes: the `BuildCache` list before API
/// 1.52, `BuildCacheUsage.Items` from 1.52 on).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct DfRecord {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Type")]
    kind: String,
    in_use: bool,
    shared: bool,
    size: i64,
    created_at: Option<String>,
    last_used_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DfUsage {
    #[serde(rename = "Items")]
    items: Option<Vec<DfRecord>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DfAnswer {
    #[serde(rename = "BuildCache")]
    build_cache: Option<Vec<DfRecord>>,
    #[serde(rename = "BuildCacheUsage")]
    build_cache_usage: Option<DfUsage>,
}

/// The build cache in a `/system/df` answer.
fn parse_build_cache(body: &str, keep_supported: bool) -> Result<BuildCache, serde_json::Error> {
    let answer: DfAnswer = serde_json::from_str(body)?;
    let records = answer
        .build_cache
        .or(answer.build_cache_usage.and_then(|u| u.items))
        .unwrap_or_default()
        .into_iter()
        .map(|r| CacheRecord {
            last_used: r
                .last_used_at
                .as_deref()
                .and_then(rfc3339_secs)
                .or(r.created_at.as_deref().and_then(rfc3339_secs)),
            id: r.id,
            kind: r.kind,
            in_use: r.in_use,
            shared: r.shared,
            size_bytes: u64::try_from(r.size).unwrap_or(0),
        })
        .collect();
    Ok(BuildCache {
        records,
        keep_supported,
    })
}

impl DockerEngine {
    /// `docker image prune -a` for Podman, whose compatible API refuses `dangling=false` (500):
    /// every image no container uses, removed one by one as any planned removal.
    async fn prune_all_one_by_one(&self) -> Result<Pruned, Error> {
        let inventory = self.inventory(false).await?;
        let mut pruned = Pruned::default();
        for image in &inventory.images {
            if inventory.containers.iter().any(|c| c.image_id == image.id) {
                continue;
            }
            if self.remove_image(&image.id, &image.tags).await? == Removal::Removed {
                pruned.deleted.push(image.id.clone());
                pruned.reclaimed_bytes = pruned.reclaimed_bytes.saturating_add(image.size_bytes);
            }
        }
        Ok(pruned)
    }
}

/// Turns bollard's error into ours: an answer with a status keeps its status and message.
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

/// Tags without Docker's `<none>:<none>` placeholder.
fn tags(repo_tags: Option<Vec<String>>) -> Vec<String> {
    repo_tags
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t != "<none>:<none>")
        .collect()
}

/// `registry:5000/app:1` → (`registry:5000/app`, `1`); a reference without a tag is `latest`.
fn split_tag(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Keeps the events that say an image was used (or deleted). Podman's compatible API differs
/// (pinned by tests/it/podman.rs): a container goes with `remove` rather than `destroy`, an
/// archive is loaded with `loadfromarchive`, image ids come without `sha256:`, some `pull`
/// events carry no image, and `delete` is also sent for a removal that was refused, so there a
/// deletion is left to the next inventory instead.
fn use_event(e: EventMessage, podman: bool) -> Option<UseEvent> {
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
            if !matches!(
                verb.as_str(),
                "create" | "start" | "die" | "destroy" | "remove"
            ) {
                return None;
            }
            (actor.attributes?.remove("image")?, false)
        }
        EventMessageTypeEnum::IMAGE => match verb.as_str() {
            "pull" | "tag" | "load" | "loadfromarchive" | "import" | "build" | "untag" => {
                (actor.id?, false)
            }
            "delete" if !podman => (actor.id?, true),
            _ => return None,
        },
        _ => return None,
    };
    if image.is_empty() {
        return None;
    }
    // Podman names images by bare hex: the id, as the rest of the program spells it.
    let image = if podman && image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{image}")
    } else {
        image
    };
    let verb = match verb.as_str() {
        "loadfromarchive" => "load".to_string(),
        "remove" => "destroy".to_string(),
        _ => verb,
    };
    Some(UseEvent {
        time_nanos,
        image,
        action: verb,
        deleted,
    })
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
                tags: tags(Some(s.repo_tags)),
                created: s.created,
                size_bytes: u64::try_from(s.size).unwrap_or(0),
                labels: s.labels.into_iter().collect(),
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
                    Err(e) if e.status() == Some(404) => continue,
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

    async fn remove_image(&self, id: &str, planned: &[String]) -> Result<Removal, Error> {
        // What the image is now: a tag added since the plan (a `docker tag` during the pass)
        // means somebody wants it.
        let current = match self.inspect_image(id).await? {
            None => return Ok(Removal::Gone),
            Some((_, current)) => current,
        };
        if let Some(extra) = current.iter().find(|t| !planned.contains(t)) {
            return Ok(Removal::Changed(format!(
                "tagged {extra} since the plan was made"
            )));
        }
        // Docker removes by id only an image with at most one tag, and checks every conflict
        // (containers, children) before it touches that tag: all or nothing. With several tags
        // the others go first, each only while it still names this image, and come back when
        // the final removal is refused.
        //
        // The one window the API leaves open: between the inspect that finds `tag` naming this
        // image and the DELETE of `tag` (Docker has no "untag only if it names this id"). It is
        // one round trip on the socket, from the daemon answering the inspect to it receiving
        // the DELETE: well under a millisecond on a local socket, at most the request timeout
        // when the cleaner stalls in between. A pull that moves `tag` to another image inside
        // it has that image untagged instead: removed when `tag` was its only reference and no
        // container uses it (Docker's answer then names it, and the log says so); otherwise
        // nothing tells the two untags apart, and a refused final removal would put `tag` back
        // on this image. The same width applies to `restore_tags`, between finding a tag free
        // and tagging it: a pull of that tag inside it is moved back onto this image.
        let mut untagged: Vec<&String> = Vec::new();
        let extra_tags = current.len().saturating_sub(1);
        for tag in current.iter().take(extra_tags) {
            let changed = match self.inspect_image(tag).await {
                Ok(Some((now, _))) if now == id => None,
                Ok(Some((now, _))) => Some(format!("tag {tag} names {now} now")),
                Ok(None) => Some(format!("tag {tag} is gone")),
                Err(e) => {
                    self.restore_tags(id, &untagged).await;
                    return Err(e);
                }
            };
            if let Some(why) = changed {
                self.restore_tags(id, &untagged).await;
                return Ok(Removal::Changed(why));
            }
            match self.delete_image(tag, format!("untag {tag}")).await {
                // Its other tags were moved or removed since the plan: `tag` was its last
                // reference, and Docker removed the image with it (nothing used it).
                Ok((Removal::Removed, deleted)) if deleted.iter().any(|d| d == id) => {
                    log::info!(
                        "untagging {tag} removed {id}: its other tags were moved or removed since the plan"
                    );
                    return Ok(Removal::Removed);
                }
                // The window above: `tag` was moved meanwhile, and the image it named went.
                // That tag is not ours to put back on this image.
                Ok((Removal::Removed, deleted)) if !deleted.is_empty() => log::error!(
                    "untag {tag} removed image {} instead of untagging {id}: the tag was moved to it between the check and the untag",
                    deleted.join(", ")
                ),
                Ok((Removal::Removed, _)) => untagged.push(tag),
                // Gone between the check and the untag: nothing of ours to put back.
                Ok((Removal::Gone, _)) => {}
                Ok((refused, _)) => {
                    self.restore_tags(id, &untagged).await;
                    return Ok(refused);
                }
                Err(e) => {
                    self.restore_tags(id, &untagged).await;
                    return Err(e);
                }
            }
        }
        match self.delete_image(id, format!("remove image {id}")).await {
            Ok((Removal::Removed, _)) => Ok(Removal::Removed),
            // Removed by somebody else meanwhile: there is nothing to put tags back on.
            Ok((Removal::Gone, _)) => Ok(Removal::Gone),
            Ok((refused, _)) => {
                self.restore_tags(id, &untagged).await;
                Ok(refused)
            }
            Err(e) => {
                // Unknown outcome (a timeout): put back what is missing if the image is there.
                if let Ok(Some(_)) = self.inspect_image(id).await {
                    self.restore_tags(id, &untagged).await;
                }
                Err(e)
            }
        }
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
        if all && self.podman {
            return self.prune_all_one_by_one().await;
        }
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

    async fn build_cache(&self) -> Result<Option<BuildCache>, Error> {
        if self.podman {
            return Ok(None);
        }
        let body = match self.system_df().await {
            Ok(body) => body,
            Err(e) if e.status() == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        parse_build_cache(&body, self.api_version() >= (1, 39))
            .map(Some)
            .map_err(|err| Error::Request {
                op: "read the build cache (GET /system/df)".into(),
                source: BollardError::JsonSerdeError { err },
            })
    }

    async fn prune_build_cache(
        &self,
        unused_for: Duration,
        keep_bytes: u64,
    ) -> Result<Option<Pruned>, Error> {
        if self.podman {
            return Ok(None);
        }
        let until = HashMap::from([(
            "until".to_string(),
            vec![format!("{}s", unused_for.as_secs())],
        )]);
        let mut options = PruneBuildOptionsBuilder::default();
        if !unused_for.is_zero() {
            options = options.filters(&until);
        }
        let version = self.api_version();
        let mut docker = self.docker.clone();
        if keep_bytes > 0 && version >= (1, 39) {
            options = options.reserved_space(i64::try_from(keep_bytes).unwrap_or(i64::MAX));
            if version < (1, 48) {
                docker = docker.with_request_modifier(|req| {
                    rewrite_uri(req, |uri| {
                        uri.contains("reserved-space=")
                            .then(|| uri.replace("reserved-space=", "keep-storage="))
                    })
                });
            }
        } else if keep_bytes > 0 {
            log::debug!(
                "API {}.{} has no keep-storage: the build-cache prune removes every record it may",
                version.0,
                version.1
            );
        }
        let op = format!(
            "prune the build cache (unused for {} s, keeping {keep_bytes} bytes)",
            unused_for.as_secs()
        );
        match self
            .call(op, docker.prune_build(Some(options.build())))
            .await
        {
            Ok(r) => Ok(Some(Pruned {
                deleted: r.caches_deleted.unwrap_or_default(),
                reclaimed_bytes: r
                    .space_reclaimed
                    .and_then(|b| u64::try_from(b).ok())
                    .unwrap_or(0),
            })),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn resolve_image(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self.inspect_image(name).await?.map(|(id, _)| id))
    }

    fn use_events(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
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
            // Podman answers an `until` in the past with (almost) nothing; one a second ahead
            // gives the history, a second later. Events past `u` come again at the next replay:
            // applying an event twice changes nothing.
            let u = if self.podman {
                u.max(crate::clock::now_nanos().saturating_add(1_000_000_000))
            } else {
                u
            };
            options = options.until(&stamp(u));
        }
        let podman = self.podman;
        self.docker
            .events(Some(options.build()))
            .filter_map(move |event| async move {
                match event {
                    Err(source) => Some(Err(error("follow events".into(), source))),
                    Ok(e) => use_event(e, podman).map(Ok),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_handles_registries_with_ports() {
        assert_eq!(split_tag("app:1"), ("app", "1"));
        assert_eq!(
            split_tag("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(
            split_tag("registry:5000/app"),
            ("registry:5000/app", "latest")
        );
    }

    #[test]
    fn build_cache_is_read_from_either_answer_shape() {
        // Docker 20.10 to 28: a `BuildCache` list beside the rest.
        let old = r#"{"LayersSize": 1, "Images": [], "BuildCache": [
            {"ID": "a", "Parent": "", "Type": "source.local", "InUse": false, "Shared": false,
             "Size": 134, "CreatedAt": "2026-12-01T23:38:08Z", "LastUsedAt": "2026-12-01T23:38:09Z"},
            {"ID": "b", "Type": "regular", "InUse": false, "Shared": true, "Size": 3000000,
             "CreatedAt": "2026-12-01T23:38:07Z", "LastUsedAt": null}
        ], "BuilderSize": 3000134}"#;
        let cache = parse_build_cache(old, true).unwrap();
        assert_eq!(cache.records.len(), 2);
        assert_eq!(cache.records[0].last_used, Some(1_796_168_289));
        assert_eq!(
            cache.records[1].last_used,
            Some(1_796_168_287),
            "never used since: created"
        );
        assert_eq!(cache.total_bytes(), 134, "shared records are the image's");
        assert_eq!(cache.reclaimable_bytes(), 134);

        // API 1.52+: `BuildCacheUsage` with its items (verbose).
        let new = r#"{"BuildCacheUsage": {"ActiveCount": 1, "TotalCount": 2, "Reclaimable": 5,
            "TotalSize": 12, "Items": [
            {"ID": "c", "Type": "exec.cachemount", "InUse": true, "Shared": false, "Size": 7},
            {"ID": "d", "Type": "regular", "InUse": false, "Shared": false, "Size": 5}
        ]}}"#;
        let cache = parse_build_cache(new, true).unwrap();
        assert_eq!(cache.total_bytes(), 12);
        assert_eq!(cache.reclaimable_bytes(), 5, "a record in use stays");

        // No build cache at all (BuildKit never ran, or `null`).
        let none = parse_build_cache(r#"{"BuildCache": null}"#, false).unwrap();
        assert!(none.records.is_empty());
        assert!(parse_build_cache("OK", true).is_err());
    }

    #[test]
    fn zero_time_is_no_time() {
        assert_eq!(rfc3339_secs("0001-01-01T00:00:00Z"), None);
        assert_eq!(
            rfc3339_secs("2026-11-28T05:00:00.123456789Z"),
            Some(1_795_842_000)
        );
    }
}
