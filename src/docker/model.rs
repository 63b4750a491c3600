//! What the engines hold and report, as plain data: images, containers, the inventory of one
//! engine, the results of removals and prunes, and the events that mean "used". No I/O here.

use serde::Serialize;

/// An image as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// False for created, exited and dead containers (what `docker container prune` removes).
    pub running: bool,
    /// Creation time, unix seconds.
    pub created: i64,
    /// When it stopped, unix seconds; only filled in when asked for (it costs one request each).
    pub finished: Option<i64>,
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

impl UseEvent {
    /// The image's id when the event names it by id (no lookup needed).
    pub fn image_id(&self) -> Option<&str> {
        self.image
            .starts_with("sha256:")
            .then_some(self.image.as_str())
    }
}
