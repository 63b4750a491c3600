//! Stage 2 of a plan: each image's effective last use (a parent counts as used when any child
//! is) and what protects an image (pinned by its runtime, in use, the newest step of a build in
//! progress, a keep rule, a keep label, too young, parent of a protected image). What is left is
//! a candidate.
//!
//! A classic (legacy) build meets a pass in three ways, and each is covered here whatever
//! `min_age` says: while a step runs, its container (created or running) uses the previous
//! step's image (in use); between two steps, and for as long as a `COPY` or `ADD` step copies
//! (it makes no container), the newest step's image is untagged, has the previous step as
//! parent and was created moments ago, and nothing else shows that the next step needs it
//! ([`building`]); the older steps are its parents (kept as parents, and the engine refuses to
//! remove an image with children anyway).

use std::collections::{HashMap, HashSet};

use regex::Regex;

use super::{BUILD_GRACE, COMMIT_WINDOW, Kept, Reason, millis};
use crate::config::KeepLabel;
use crate::docker::{Image, Inventory};
use crate::lastuse::LastUse;

/// The image graph of one inventory: each image's parent, by id. The parent is the image its
/// `ParentId` names when that one is listed; otherwise, when layers are known, the listed image
/// with the most layers that begin this one's (BuildKit and loaded images have no `ParentId`,
/// and a classic build of several steps names a hidden intermediate that the list leaves out);
/// otherwise its `ParentId` as given (which ends the chain).
pub(super) struct Graph<'a> {
    parents: HashMap<&'a str, &'a str>,
}

impl<'a> Graph<'a> {
    pub(super) fn new(inventory: &'a Inventory) -> Self {
        let listed: HashSet<&str> = inventory.images.iter().map(|i| i.id.as_str()).collect();
        // Images by their first layer: an ancestor shares it.
        let mut by_base: HashMap<&str, Vec<&Image>> = HashMap::new();
        for image in &inventory.images {
            if let Some(base) = image.layers.first() {
                by_base.entry(base.as_str()).or_default().push(image);
            }
        }
        let mut parents = HashMap::new();
        for image in &inventory.images {
            let named = image.parent_id.as_deref();
            let parent = match named {
                Some(p) if listed.contains(p) => Some(p),
                _ => image
                    .layers
                    .first()
                    .and_then(|base| by_base.get(base.as_str()))
                    .and_then(|same_base| {
                        same_base
                            .iter()
                            .filter(|o| {
                                o.id != image.id
                                    && o.layers.len() < image.layers.len()
                                    && image.layers.starts_with(&o.layers)
                            })
                            .max_by_key(|o| (o.layers.len(), o.id.as_str()))
                            .map(|o| o.id.as_str())
                    })
                    .or(named),
            };
            if let Some(p) = parent {
                parents.insert(image.id.as_str(), p);
            }
        }
        Graph { parents }
    }

    pub(super) fn parent_of(&self, id: &str) -> Option<&'a str> {
        self.parents.get(id).copied()
    }

    /// The ancestors of `id`, nearest first; stops at a cycle.
    pub(super) fn ancestors(&self, id: &str) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut cur = self.parent_of(id);
        while let Some(p) = cur {
            if !seen.insert(p) {
                break;
            }
            out.push(p);
            cur = self.parent_of(p);
        }
        out
    }
}

/// Each image's last use, unix ms: its own (the table's record, else its build time) or the
/// latest of its descendants', whichever is later.
pub(super) fn effective_last_use<'a>(
    inventory: &'a Inventory,
    graph: &Graph<'a>,
    last_use: &LastUse,
) -> HashMap<&'a str, i64> {
    let mut last_used: HashMap<&str, i64> = HashMap::new();
    for image in &inventory.images {
        let t = last_use
            .get(&image.id)
            .map(|e| e.last_used_ms)
            .unwrap_or(image.created.saturating_mul(1000));
        for id in std::iter::once(image.id.as_str()).chain(graph.ancestors(&image.id)) {
            let e = last_used.entry(id).or_insert(t);
            *e = (*e).max(t);
        }
    }
    last_used
}

/// When `image` may be the newest step of a classic build in progress, its age in seconds:
/// untagged, and either with a parent (only the classic builder and `docker commit` make such
/// images; a pull, an import and a BuildKit build leave the parent empty) and created less than
/// [`BUILD_GRACE`] before `now_ms`, or without one and created less than [`COMMIT_WINDOW`]
/// before it (Docker stores a step's image first and names its parent a moment later: a list
/// between the two shows a step without a parent). A time after `now_ms` (a clock that was
/// wrong) counts as now.
pub(super) fn building(image: &Image, now_ms: i64) -> Option<i64> {
    if !image.tags.is_empty() {
        return None;
    }
    let grace = if image.parent_id.is_some() {
        BUILD_GRACE
    } else {
        COMMIT_WINDOW
    };
    let age_ms = now_ms.saturating_sub(image.created.saturating_mul(1000));
    (age_ms < millis(grace)).then(|| made_secs_ago(image, now_ms))
}

/// How long before `now_ms` `image` was created, whole seconds; a time after `now_ms` (a clock
/// that was wrong) counts as now.
pub(super) fn made_secs_ago(image: &Image, now_ms: i64) -> i64 {
    now_ms
        .saturating_sub(image.created.saturating_mul(1000))
        .max(0)
        .div_euclid(1000)
}

/// What the protection stage decided.
pub(super) struct Protection<'a> {
    /// Images that may go, in inventory order.
    pub candidates: Vec<&'a Image>,
    /// Images that stay, and why.
    pub kept: Vec<Kept>,
}

/// The rules that protect an image.
pub(super) struct Rules<'a> {
    /// The engine's name.
    pub engine: &'a str,
    /// Image id → a container that stays and uses it.
    pub users: &'a super::containers::Users<'a>,
    /// Keep patterns matched against tags.
    pub keep: &'a [Regex],
    /// Keep rules matched against labels.
    pub keep_labels: &'a [KeepLabel],
    /// An image used less than this long ago stays.
    pub min_age_ms: i64,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// Splits the images into candidates and kept ones.
pub(super) fn protect<'a>(
    inventory: &'a Inventory,
    graph: &Graph<'a>,
    last_used: &HashMap<&'a str, i64>,
    rules: &Rules<'_>,
) -> Protection<'a> {
    // In inventory order, so that the child a parent is kept for is always the same.
    let mut protected: Vec<&str> = Vec::new();
    let mut kept = Vec::new();
    let mut unprotected = Vec::new();
    for image in &inventory.images {
        let reason = if let Some(why) = &image.pinned {
            Some(Reason::Pinned { why: why.clone() })
        } else if let Some((container, state)) = rules.users.get(image.id.as_str()) {
            Some(Reason::InUse {
                container: container.to_string(),
                state: *state,
            })
        } else if let Some(age_secs) = building(image, rules.now_ms) {
            Some(Reason::Building { age_secs })
        } else if let Some(pattern) = rules
            .keep
            .iter()
            .find(|re| image.tags.iter().any(|t| re.is_match(t)))
        {
            Some(Reason::KeepRule {
                pattern: pattern.as_str().to_string(),
            })
        } else if let Some((rule, label)) = rules
            .keep_labels
            .iter()
            .find_map(|r| r.matches(&image.labels).map(|l| (r, l)))
        {
            Some(Reason::KeepLabel {
                rule: rule.to_string(),
                label,
            })
        } else {
            let used = last_used
                .get(image.id.as_str())
                .copied()
                .unwrap_or(image.created.saturating_mul(1000));
            let age_ms = rules.now_ms.saturating_sub(used);
            (age_ms < rules.min_age_ms).then_some(Reason::TooYoung {
                age_secs: age_ms.div_euclid(1000),
            })
        };
        match reason {
            Some(reason) => {
                protected.push(&image.id);
                kept.push(Kept {
                    engine: rules.engine.to_string(),
                    id: image.id.clone(),
                    names: image.tags.clone(),
                    reason,
                });
            }
            None => unprotected.push(image),
        }
    }
    // Ancestors of what stays stay too (Docker would refuse them anyway), each with the
    // nearest image it stays for.
    let mut ancestors: HashMap<&str, &str> = HashMap::new();
    for id in &protected {
        for ancestor in graph.ancestors(id) {
            ancestors.entry(ancestor).or_insert(id);
        }
    }
    let mut candidates = Vec::new();
    for image in unprotected {
        if let Some(child) = ancestors.get(image.id.as_str()) {
            kept.push(Kept {
                engine: rules.engine.to_string(),
                id: image.id.clone(),
                names: image.tags.clone(),
                reason: Reason::Parent {
                    child: child.to_string(),
                },
            });
        } else {
            candidates.push(image);
        }
    }
    Protection { candidates, kept }
}
