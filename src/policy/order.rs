//! Stage 3 of a plan: the order in which candidate images go, one order across every engine.
//! Dangling images first (unless a child must go before them), then least recently used first,
//! whichever engine holds the image, children before their parents.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use super::Step;
use super::protect::Graph;
use crate::docker::{Image, Inventory};

/// A candidate with its sort key.
pub(super) struct Ranked {
    /// 0 for a dangling image without children, 1 otherwise.
    group: u8,
    last_used_ms: i64,
    depth: Reverse<usize>,
    engine: String,
    step: Step,
}

impl Ranked {
    fn key(&self) -> (u8, i64, Reverse<usize>, &str, &str) {
        let id = match &self.step {
            Step::RemoveImage { id, .. } => id.as_str(),
            _ => "",
        };
        (
            self.group,
            self.last_used_ms,
            self.depth,
            self.engine.as_str(),
            id,
        )
    }
}

/// The candidates of one engine with their sort keys.
pub(super) fn rank(
    engine: &str,
    candidates: Vec<&Image>,
    inventory: &Inventory,
    graph: &Graph<'_>,
    last_used: &HashMap<&str, i64>,
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
            Ranked {
                group: u8::from(!image.is_dangling() || has_children.contains(image.id.as_str())),
                last_used_ms: used,
                depth: Reverse(graph.ancestors(&image.id).len()),
                engine: engine.to_string(),
                step: Step::RemoveImage {
                    engine: engine.to_string(),
                    id: image.id.clone(),
                    tags: image.tags.clone(),
                    size_bytes: image.size_bytes,
                    last_used_ms: used,
                },
            }
        })
        .collect()
}

/// The removal steps of every engine's candidates, in one order.
pub(super) fn order(mut ranked: Vec<Ranked>) -> Vec<Step> {
    ranked.sort_by(|a, b| a.key().cmp(&b.key()));
    ranked.into_iter().map(|r| r.step).collect()
}
