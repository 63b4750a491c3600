//! Stage 1 of a plan: which stopped containers go (oldest first), which stay because they
//! stopped too recently, and which images the remaining containers use. Stopped means exited or
//! dead: a created container is about to be started (`docker create` then `start`, the kubelet
//! through cri-dockerd), and a running, paused, restarting or unknown one is in use. A stopped
//! container whose image is the newest step of a build in progress is that build's `RUN` step,
//! about to be committed: it stays too, and so does any container of an untagged image for its
//! first `COMMIT_WINDOW` stopped (a `RUN` on a cached step made long ago).

use std::collections::HashMap;

use super::protect::{building, made_secs_ago};
use super::{COMMIT_WINDOW, Kept, Reason, Step, millis};
use crate::docker::{ContainerState, Image, Inventory};

/// Image id → a container that stays and uses it: its name and its state.
pub(super) type Users<'a> = HashMap<&'a str, (&'a str, ContainerState)>;

/// What the containers stage decided.
pub(super) struct Containers<'a> {
    /// Removals of stopped containers, oldest first.
    pub steps: Vec<Step>,
    /// Containers that stay, and why.
    pub kept: Vec<Kept>,
    /// Image id → a container that stays and uses it.
    pub users: Users<'a>,
}

/// Every stopped (exited or dead) container that finished at least `min_age_ms` before `now_ms`
/// goes; every other container and the recently stopped ones stay and keep their images.
/// A container the kubelet manages (CRI) never goes and keeps its image, whatever its state.
pub(super) fn containers<'a>(
    engine: &str,
    inventory: &'a Inventory,
    min_age_ms: i64,
    now_ms: i64,
) -> Containers<'a> {
    let mut users = Users::new();
    let mut kept = Vec::new();
    let mut stopped = Vec::new();
    let images: HashMap<&str, &Image> = inventory
        .images
        .iter()
        .map(|i| (i.id.as_str(), i))
        .collect();
    for c in &inventory.containers {
        // Stopped for as long as the engine says; one that never said when is as old as its
        // creation.
        let when = c.finished.unwrap_or(c.created);
        let age_ms = now_ms.saturating_sub(when.saturating_mul(1000));
        let image = images.get(c.image_id.as_str());
        // A classic build commits its `RUN` container right after it exits, also when the step
        // before it was a cached one made long ago (on the containerd image store an `ENV`
        // step's image shows no parent): a container of an untagged image stays its first
        // COMMIT_WINDOW stopped.
        let committing = age_ms < millis(COMMIT_WINDOW) && image.is_none_or(|i| i.tags.is_empty());
        let build_step = image
            .and_then(|i| building(i, now_ms))
            .or_else(|| committing.then(|| image.map_or(0, |i| made_secs_ago(i, now_ms))));
        if !c.is_stopped() || c.managed {
            users.insert(&c.image_id, (&c.name, c.state));
        } else if let Some(image_age_secs) = build_step {
            users.insert(&c.image_id, (&c.name, c.state));
            kept.push(Kept {
                engine: engine.to_string(),
                id: c.id.clone(),
                names: vec![c.name.clone()],
                reason: Reason::BuildStep { image_age_secs },
            });
        } else if age_ms < min_age_ms {
            users.insert(&c.image_id, (&c.name, c.state));
            kept.push(Kept {
                engine: engine.to_string(),
                id: c.id.clone(),
                names: vec![c.name.clone()],
                reason: Reason::RecentlyStopped {
                    age_secs: age_ms.div_euclid(1000),
                },
            });
        } else {
            stopped.push((when, c));
        }
    }
    stopped.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    let steps = stopped
        .into_iter()
        .map(|(when, c)| Step::RemoveContainer {
            engine: engine.to_string(),
            id: c.id.clone(),
            name: c.name.clone(),
            stopped: when,
        })
        .collect();
    Containers { steps, kept, users }
}

/// Image id → a container that uses it, for every container (below the high watermark no
/// container is removed, so each keeps its image).
pub(super) fn users(inventory: &Inventory) -> Users<'_> {
    inventory
        .containers
        .iter()
        .map(|c| (c.image_id.as_str(), (c.name.as_str(), c.state)))
        .collect()
}
