//! What the engines hold and report, as plain data: images, containers, the inventory of one
//! engine, the build cache, the results of removals and prunes, and the events that mean
//! "used". No I/O here.

use std::collections::BTreeMap;

use serde::Serialize;

/// An image as the policy needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Image {
    /// `sha256:…`
    pub id: String,
    /// The parent image (classic builder), if any. Docker Engine 27 and later (API 1.47+) omit
    /// it, and so does the containerd image store: then every image has none.
    pub parent_id: Option<String>,
    /// `repository:tag` references; empty for a dangling image.
    pub tags: Vec<String>,
    /// Creation (build) time, unix seconds.
    pub created: i64,
    /// Size Docker reports (shared layers included).
    pub size_bytes: u64,
    /// Its labels (`LABEL` in the Dockerfile, `--label` of `docker build`; with the CRI, the
    /// image config's labels).
    pub labels: BTreeMap<String, String>,
    /// Why the runtime holds on to it, when it does: an image the runtime pins (CRI `pinned`,
    /// containerd's `io.cri-containerd.pinned` label) or its sandbox (pause) image. Never
    /// removed. Docker pins nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Its layers, bottom first (`RootFS.Layers`: diff ids); empty when unknown. An image
    /// whose layers begin another's is that one's ancestor even without a `ParentId`
    /// (BuildKit, loaded images, the containerd store, or a parent hidden between them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

impl Image {
    /// True for an image with no tag (what `docker image prune` removes).
    pub fn is_dangling(&self) -> bool {
        self.tags.is_empty()
    }
}

/// A container as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// First name, without the leading slash.
    pub name: String,
    /// The image it was created from, `sha256:…`.
    pub image_id: String,
    /// What it is doing, as the engine says.
    pub state: ContainerState,
    /// Creation time, unix seconds.
    pub created: i64,
    /// When it stopped, unix seconds; only filled in when asked for (it costs one request each).
    pub finished: Option<i64>,
    /// The kubelet's, through the CRI: never removed by a pass (the kubelet removes its
    /// containers), and its image is in use whatever the container's state (an exited
    /// container of a pod restarts from it).
    pub managed: bool,
}

impl Container {
    /// True when it has stopped for good: the only containers a pass may remove.
    pub fn is_stopped(&self) -> bool {
        self.state.is_stopped()
    }
}

/// A container's state (`State` in the engine's container list). Only [`ContainerState::Exited`]
/// and [`ContainerState::Dead`] are stopped: a created container is about to be started (the
/// kubelet, through cri-dockerd, and `docker run` create first and start next), and a state
/// this program does not know is taken as not stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Created, not started yet.
    Created,
    /// Running.
    Running,
    /// Paused (frozen).
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Being stopped (Podman).
    Stopping,
    /// Stopped: its process exited.
    Exited,
    /// Stopped, and could not be cleaned up fully.
    Dead,
    /// A state this program does not know (or none): never removed.
    Unknown,
}

impl ContainerState {
    /// The state the engine names `state` (Docker's and Podman's spellings, any case; Podman
    /// says `configured` for created and `stopped` for exited).
    pub fn parse(state: &str) -> ContainerState {
        match state.to_ascii_lowercase().as_str() {
            "created" | "configured" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "stopping" => ContainerState::Stopping,
            "exited" | "stopped" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }

    /// True for a stopped container (exited or dead), which a pass may remove.
    pub fn is_stopped(self) -> bool {
        matches!(self, ContainerState::Exited | ContainerState::Dead)
    }

    /// The state as the engine names it.
    pub fn name(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Stopping => "stopping",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything present on one engine, in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Top-level images (`docker images`).
    pub images: Vec<Image>,
    /// All containers, running or not.
    pub containers: Vec<Container>,
}

/// What a removal found. Only [`Removal::Removed`] changed anything: every other answer leaves
/// the image (or container) with every tag it had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Removed (for an image: every tag and the image).
    Removed,
    /// 409: in use now, or otherwise refused; the message says why.
    Conflict(String),
    /// 404: already gone.
    Gone,
    /// The image is no longer what was planned (a tag was moved to another image or added since
    /// the plan was made): left alone; the message says what changed.
    Changed(String),
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Ids of what was deleted.
    pub deleted: Vec<String>,
    /// Bytes Docker says it reclaimed.
    pub reclaimed_bytes: u64,
}

/// One build-cache record of BuildKit, as the engine's disk-usage endpoint lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheRecord {
    /// Its id.
    pub id: String,
    /// Its type: `regular`, `source.local`, `exec.cachemount`, `internal`, `frontend`, …
    pub kind: String,
    /// A build is using it now.
    pub in_use: bool,
    /// Its data is shared with an image. With the classic store removing the record frees
    /// nothing while the image exists (BuildKit's prune leaves it); with the containerd image
    /// store the record holds a copy of its own ([`BuildCache::shared_are_copies`]).
    pub shared: bool,
    /// Bytes it holds.
    pub size_bytes: u64,
    /// When it was last used, unix seconds (its creation when never used since).
    pub last_used: Option<i64>,
}

/// An engine's build cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildCache {
    /// Every record.
    pub records: Vec<CacheRecord>,
    /// The prune can keep part of the cache (`keep-storage`, API 1.39 and later): the
    /// least recently used records go first until the rest fits. Without it a prune removes
    /// every record it may.
    pub keep_supported: bool,
    /// Records shared with an image hold bytes of their own, which a prune with `all` frees
    /// while the image stays: true with Docker's containerd image store, where BuildKit's
    /// snapshots are not the image's (measured on Docker 28.5: pruning them freed their size,
    /// and removing the image afterwards freed the image's). With the classic store they are
    /// the image's layers: removing them frees nothing until the image goes.
    pub shared_are_copies: bool,
}

impl BuildCache {
    /// The bytes the cache holds of its own: the records not shared with an image (what
    /// `docker system df` counts), and the shared ones too where they are copies.
    pub fn total_bytes(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| !r.shared || self.shared_are_copies)
            .map(|r| r.size_bytes)
            .fold(0, u64::saturating_add)
    }

    /// True for a record whose removal frees its bytes now and that a prune may remove:
    /// not in use, not BuildKit's `internal` or `frontend` records, and not shared with an
    /// image unless it holds a copy of its own (then a prune with `all` removes it).
    pub fn may_go(&self, r: &CacheRecord) -> bool {
        !r.in_use
            && r.kind != "internal"
            && r.kind != "frontend"
            && (!r.shared || self.shared_are_copies)
    }

    /// Bytes of the records a prune may remove.
    pub fn reclaimable_bytes(&self) -> u64 {
        self.records
            .iter()
            .filter(|r| self.may_go(r))
            .map(|r| r.size_bytes)
            .fold(0, u64::saturating_add)
    }
}

/// An engine's event that tells that an image was used: Docker's, or the CRI runtime's
/// container events (or what a poll of its containers found) in Docker's words.
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

impl UseEvent {
    /// The image's id when the event names it by id (no lookup needed).
    pub fn image_id(&self) -> Option<&str> {
        self.image
            .starts_with("sha256:")
            .then_some(self.image.as_str())
    }
}
