//! The plain data of the policy: a plan's steps and what stays with its reason ([`Step`],
//! [`Reason`], [`Kept`], [`Plan`]), what must go ([`Need`]), how a pass ended ([`Outcome`]),
//! and one engine as a plan sees it ([`Holding`], [`FloorState`]). Serializable, compared in
//! tests, printed by `display`; no decision is made here.

use serde::Serialize;

use crate::docker::{BuildCache, ContainerState, Inventory};
use crate::lastuse::LastUse;

/// One action of a pass, on one engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Remove a stopped container.
    RemoveContainer {
        /// The engine.
        engine: String,
        /// Container id.
        id: String,
        /// Its name.
        name: String,
        /// When it stopped (or was created, if never started), unix seconds.
        stopped: i64,
    },
    /// Remove an image by id (untagging it first when it has several tags).
    RemoveImage {
        /// The engine.
        engine: String,
        /// Image id.
        id: String,
        /// Its tags (empty: dangling).
        tags: Vec<String>,
        /// Size the engine reports.
        size_bytes: u64,
        /// Last use, unix milliseconds.
        last_used_ms: i64,
        /// Unused for longer than `max_unused_age`: it goes whatever the usage (floors and the
        /// low watermark do not keep it).
        aged: bool,
    },
    /// Prune an engine's build cache, least recently used first (BuildKit's order).
    PruneBuildCache {
        /// The engine.
        engine: String,
        /// Stop once the cache (the records not shared with an image) is at most this large;
        /// 0: remove every record the prune may.
        keep_bytes: u64,
        /// What the records say should go, bytes.
        size_bytes: u64,
        /// How many records should go.
        records: usize,
        /// Records used within this many seconds stay.
        unused_for_secs: u64,
        /// Records shared with an image go too: they hold copies of their own (the containerd
        /// image store).
        all: bool,
    },
    /// `docker container prune` (strategy `prune`).
    PruneContainers {
        /// The engine.
        engine: String,
    },
    /// `docker image prune` (strategy `prune`).
    PruneDanglingImages {
        /// The engine.
        engine: String,
    },
    /// `docker image prune -a`, run only when no dangling image was found or usage is still
    /// above high (strategy `prune`).
    PruneAllImages {
        /// The engine.
        engine: String,
    },
}

impl Step {
    /// The engine the step acts on.
    pub fn engine(&self) -> &str {
        match self {
            Step::RemoveContainer { engine, .. }
            | Step::RemoveImage { engine, .. }
            | Step::PruneBuildCache { engine, .. }
            | Step::PruneContainers { engine }
            | Step::PruneDanglingImages { engine }
            | Step::PruneAllImages { engine } => engine,
        }
    }

    /// True for an image removal for age (`max_unused_age`).
    pub fn is_aged(&self) -> bool {
        matches!(self, Step::RemoveImage { aged: true, .. })
    }
}

/// Why an image or container stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// Its runtime pins it (CRI `pinned`), or it is the runtime's sandbox (pause) image.
    Pinned {
        /// Which, in words.
        why: String,
    },
    /// A remaining container uses it.
    InUse {
        /// The container's name.
        container: String,
        /// Its state (a created container counts: it is about to start).
        state: ContainerState,
    },
    /// A `keep` pattern matches one of its tags.
    KeepRule {
        /// The pattern.
        pattern: String,
    },
    /// A `keep_labels` rule matches one of its labels.
    KeepLabel {
        /// The rule, as configured (`key` or `key=value`).
        rule: String,
        /// The image's label it matched, `key=value`.
        label: String,
    },
    /// Untagged, with a parent, and created less than [`BUILD_GRACE`](super::BUILD_GRACE) ago:
    /// the newest step of a classic (legacy) build, which the build's next step is about to use
    /// (nothing else shows it: between two steps no container uses it).
    Building {
        /// Seconds since it was created.
        age_secs: i64,
    },
    /// Used (or first seen) less than `min_age` ago.
    TooYoung {
        /// Seconds since last use.
        age_secs: i64,
    },
    /// An image that stays depends on it.
    Parent {
        /// The id of the nearest image that stays for a reason of its own and depends on it.
        child: String,
    },
    /// Removing it would take its engine's footprint below the engine's floor (pressure from
    /// outside the engine does not empty it); the most recently used images stay.
    Floor {
        /// The engine's footprint before the pass, bytes.
        footprint_bytes: u64,
        /// The floor, bytes.
        floor_bytes: u64,
    },
    /// A stopped container made from the newest step of a build in progress (see
    /// [`Reason::Building`]): that build's `RUN` step, which the build commits next.
    BuildStep {
        /// Seconds since its image was created.
        image_age_secs: i64,
    },
    /// A stopped container that finished less than `container_min_age` ago.
    RecentlyStopped {
        /// Seconds since it stopped.
        age_secs: i64,
    },
}

/// Something that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    /// The engine.
    pub engine: String,
    /// Image or container id.
    pub id: String,
    /// Tags, or the container's name.
    pub names: Vec<String>,
    /// Why.
    pub reason: Reason,
}

/// What a pass would do, in order; plain data, logged before it runs and printed by dry-run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The strategy that made it.
    pub strategy: &'static str,
    /// Made at or above the high watermark: it frees space down to the low watermark. A plan
    /// made below it ([`plan_aged`](super::plan_aged)) holds only removals for age and runs
    /// whole, uncordoned unless `max_unused_age_cordon`.
    pub pressure: bool,
    /// What to remove, in order; the pass stops early once below the low watermark.
    pub steps: Vec<Step>,
    /// What stays, and why.
    pub kept: Vec<Kept>,
    /// How much must go.
    pub need: Need,
    /// How many steps should be enough, by the sizes Docker reports; `None` when that cannot be
    /// estimated (inodes are short, or the strategy prunes).
    pub estimated_steps: Option<usize>,
}

/// How much must go to get below the low watermark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Need {
    /// Bytes to free (on the fullest filesystem, or in the trees).
    pub bytes: u64,
    /// Inodes to free (relative mode only; 0 when inodes are not the problem).
    pub inodes: u64,
}

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Below the high watermark: nothing to do.
    BelowHigh,
    /// Dry run: the plan was printed, nothing removed.
    DryRun,
    /// The cordon failed and `on_cordon_failure = "skip"`.
    Skipped,
    /// Cleaned until below the low watermark.
    ReachedLow,
    /// Below the high watermark: images unused for longer than `max_unused_age` were removed.
    Aged,
    /// Everything eligible is gone and usage is still above the low watermark.
    Exhausted,
    /// Everything above the engines' floors is gone and usage is still above the low
    /// watermark: the rest of the disk is outside the engines (or below their floors).
    FloorsReached,
    /// Shutdown was asked for; stopped between two steps.
    Interrupted,
    /// Every fleet slot stayed held for the whole interval: nothing cordoned, nothing removed;
    /// the next tick tries again.
    NoSlot,
}

/// One engine as a plan sees it: what it holds, when its images were last used, and its floor.
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    /// The engine's name.
    pub name: &'a str,
    /// What it holds.
    pub inventory: &'a Inventory,
    /// When its images were last used.
    pub last_use: &'a LastUse,
    /// Its floor against its footprint, when one applies this pass (none set, or critical:
    /// `None`).
    pub floor: Option<FloorState>,
    /// Its build cache, when read this pass (`None`: not read, or no build cache endpoint).
    pub build_cache: Option<&'a BuildCache>,
}

/// An engine's footprint at the start of the pass and its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FloorState {
    /// Its data, `du -sx`, at the start of the pass.
    pub footprint_bytes: u64,
    /// Pressure from outside never takes the footprint below this.
    pub floor_bytes: u64,
}
