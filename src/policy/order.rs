//! Stage 3 of a plan: the order in which candidate images and build-cache prunes go, one order
//! across every engine. Dangling images first (unless a child must go before them), then the
//! build caches (each engine's partial prune, then the rest), then least recently used first,
//! whichever engine holds the image, children before their parents.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::Step;
use super::cache::CacheStep;
use super::protect::Graph;
use super::rank::Key;
use crate::docker::{Image, Inventory};

/// The groups of the order, first first.
const DANGLING: u8 = 0;
const CACHE_PARTIAL: u8 = 1;
const CACHE_REST: u8 = 2;
const OTHER: u8 = 3;

/// A candidate with its sort key.
pub(super) struct Ranked {
    /// [`DANGLING`] for a dangling image without children, the cache groups for build-cache
    /// prunes, [`OTHER`] otherwise.
    group: u8,
    /// The strategy's key (`rank`): time-like, so engines compare.
    key: Key,
    depth: Reverse<usize>,
    engine: String,
    step: Step,
}

impl Ranked {
    fn key(&self) -> (u8, Key, Reverse<usize>, &str, &str) {
        let id = match &self.step {
            Step::RemoveImage { id, .. } => id.as_str(),
            _ => "",
        };
        (self.group, self.key, self.depth, self.engine.as_str(), id)
    }
}

/// The candidates of one engine with their sort keys; those last used before `aged_before`
/// (unix ms) are marked as removals for age.
pub(super) fn rank(
    engine: &str,
    candidates: Vec<&Image>,
    inventory: &Inventory,
    graph: &Graph<'_>,
    last_used: &HashMap<&str, i64>,
    keys: &HashMap<&str, Key>,
    aged_before: Option<i64>,
) -> Vec<Ranked> {
    let has_children: HashSet<&str> = inventory
        .images
        .iter()
        .filter_map(|i| i.parent_id.as_deref())
        .collect();
    candidates
        .into_iter()
        .map(|image| {
            let used = last_used
                .get(image.id.as_str())
                .copied()
                .unwrap_or(image.created.saturating_mul(1000));
            let dangling = image.is_dangling() && !has_children.contains(image.id.as_str());
            Ranked {
                group: if dangling { DANGLING } else { OTHER },
                key: keys.get(image.id.as_str()).copied().unwrap_or((used, 0)),
                depth: Reverse(graph.ancestors(&image.id).len()),
                engine: engine.to_string(),
                step: Step::RemoveImage {
                    engine: engine.to_string(),
                    id: image.id.clone(),
                    tags: image.tags.clone(),
                    size_bytes: image.size_bytes,
                    last_used_ms: used,
                    aged: aged_before.is_some_and(|cutoff| used < cutoff),
                },
            }
        })
        .collect()
}

/// One engine's build-cache steps with their sort keys: between the dangling images and the
/// rest, the partial prunes of every engine before any prune of the rest, oldest cache first.
pub(super) fn rank_cache(steps: Vec<CacheStep>) -> Vec<Ranked> {
    steps
        .into_iter()
        .map(|c| Ranked {
            group: if c.rest { CACHE_REST } else { CACHE_PARTIAL },
            key: (c.oldest_ms, 0),
            depth: Reverse(0),
            engine: c.step.engine().to_string(),
            step: c.step,
        })
        .collect()
}

/// The removal steps of every engine's candidates, in one order.
pub(super) fn order(mut ranked: Vec<Ranked>) -> Vec<Step> {
    ranked.sort_by(|a, b| a.key().cmp(&b.key()));
    ranked.into_iter().map(|r| r.step).collect()
}
