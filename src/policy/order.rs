//! Stage 3 of a plan: the order in which candidate images go. Dangling images first (unless a
//! child must go before them), then by the strategy's key (`rank`: least recently used first
//! for `lru`), children before their parents.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::Step;
use super::protect::Graph;
use super::rank::Key;
use crate::docker::{Image, Inventory};

/// The removal steps of `candidates`, in order.
pub(super) fn order(
    candidates: Vec<&Image>,
    inventory: &Inventory,
    graph: &Graph<'_>,
    last_used: &HashMap<&str, i64>,
    keys: &HashMap<&str, Key>,
) -> Vec<Step> {
    let has_children: HashSet<&str> = inventory
        .images
        .iter()
        .filter_map(|i| i.parent_id.as_deref())
        .collect();
    let mut ordered: Vec<_> = candidates
        .into_iter()
        .map(|image| {
            let group = u8::from(!image.is_dangling() || has_children.contains(image.id.as_str()));
            let used = last_used
                .get(image.id.as_str())
                .copied()
                .unwrap_or(image.created.saturating_mul(1000));
            let key = keys.get(image.id.as_str()).copied().unwrap_or((used, 0));
            let depth = graph.ancestors(&image.id).len();
            (group, key, Reverse(depth), used, image)
        })
        .collect();
    ordered.sort_by(|a, b| {
        (a.0, a.1, a.2)
            .cmp(&(b.0, b.1, b.2))
            .then_with(|| a.4.id.cmp(&b.4.id))
    });
    ordered
        .into_iter()
        .map(|(_, _, _, used, image)| Step::RemoveImage {
            id: image.id.clone(),
            tags: image.tags.clone(),
            size_bytes: image.size_bytes,
            last_used_ms: used,
        })
        .collect()
}
