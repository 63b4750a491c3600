//! Stage 1 of a plan: which stopped containers go (oldest first), which stay because they
//! stopped too recently, and which images the remaining containers use.

use std::collections::HashMap;

use super::{Kept, Reason, Step};
use crate::docker::Inventory;

/// What the containers stage decided.
pub(super) struct Containers<'a> {
    /// Removals of stopped containers, oldest first.
    pub steps: Vec<Step>,
    /// Containers that stay, and why.
    pub kept: Vec<Kept>,
    /// Image id → the name of a container that stays and uses it.
    pub users: HashMap<&'a str, &'a str>,
}

/// Every stopped container that finished at least `min_age_ms` before `now_ms` goes; running
/// and recently stopped ones stay and keep their images. A container the kubelet manages
/// (CRI) never goes and keeps its image, whatever its state.
pub(super) fn containers<'a>(
    engine: &str,
    inventory: &'a Inventory,
    min_age_ms: i64,
    now_ms: i64,
) -> Containers<'a> {
    let mut users: HashMap<&str, &str> = HashMap::new();
    let mut kept = Vec::new();
    let mut stopped = Vec::new();
    for c in &inventory.containers {
        let when = c.finished.unwrap_or(c.created);
        let age_ms = now_ms.saturating_sub(when.saturating_mul(1000));
        if c.running || c.managed {
            users.insert(&c.image_id, &c.name);
        } else if age_ms < min_age_ms {
            users.insert(&c.image_id, &c.name);
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

/// Image id → the name of a container that uses it, for every container (below the high
/// watermark no container is removed, so each keeps its image).
pub(super) fn users(inventory: &Inventory) -> HashMap<&str, &str> {
    inventory
        .containers
        .iter()
        .map(|c| (c.image_id.as_str(), c.name.as_str()))
        .collect()
}
