//! Stage 3a of a plan: the key each strategy orders the candidates by, lowest first. Pure: it
//! reads the history `lastuse` keeps and the sizes the engine reports; it protects nothing (that
//! is `protect`, before it) and does not sort (that is `order`, after it).
//!
//! Every key is a time (unix ms, then a tie-break), so ranking needs no clock:
//! - `lru`: the effective last use (the image's, or its newest descendant's).
//! - `lru2` (LRU-K with K = 2, O'Neil, O'Neil and Weikum 1993): the second-latest container
//!   start. An image started fewer than twice has an infinite backward 2-distance and goes
//!   first; among those, least recently used first.
//! - `lfu` (LFU with exponential ageing): the decayed count of container starts written as a
//!   time ([`crate::lastuse::Entry::frequency_ms`], half-life
//!   [`crate::lastuse::FREQUENCY_HALF_LIFE_MS`]); an image never started counts as one start at
//!   its last use.
//! - `gdsf` (GreedyDual-Size-Frequency, Cherkasova 1998): priority = frequency x cost / size,
//!   with cost = size + [`PULL_COST_BYTES`] (a pull costs its bytes and a fixed price: a pod
//!   waiting, registry round trips) and the decay above in place of GDSF's inflation value L.
//!   As a time: the `lfu` key plus one half-life x log2((size + cost) / size), so a big image
//!   used rarely goes before a small one used as rarely.
//!
//! A parent's key is the highest of its own and its descendants' (it goes after its children),
//! as effective last use is.

use std::collections::HashMap;

use super::protect::Graph;
use crate::config::Strategy;
use crate::docker::{Image, Inventory};
use crate::lastuse::{Entry, FREQUENCY_HALF_LIFE_MS, LastUse};

/// The fixed cost of a pull in `gdsf`, in bytes: what a miss costs beyond its bytes. In the
/// trace replay 256 MiB and 1 GiB gave the same bytes re-pulled within 1 %.
pub const PULL_COST_BYTES: u64 = 1 << 30;

/// Sizes below this count as this in `gdsf` (an empty image would otherwise weigh nothing).
const MIN_SIZE_BYTES: u64 = 1 << 20;

/// Ordering key: lower goes first.
pub(super) type Key = (i64, i64);

/// The key of every image of `inventory`.
pub(super) fn keys<'a>(
    strategy: Strategy,
    inventory: &'a Inventory,
    graph: &Graph<'a>,
    last_use: &LastUse,
    last_used: &HashMap<&'a str, i64>,
) -> HashMap<&'a str, Key> {
    let mut keys: HashMap<&str, Key> = HashMap::new();
    for image in &inventory.images {
        let used = last_used
            .get(image.id.as_str())
            .copied()
            .unwrap_or(image.created.saturating_mul(1000));
        let key = own_key(strategy, image, last_use.get(&image.id), used);
        for id in std::iter::once(image.id.as_str()).chain(graph.ancestors(&image.id)) {
            let k = keys.entry(id).or_insert(key);
            *k = (*k).max(key);
        }
    }
    keys
}

/// The key of one image from its own record; `used` is its effective last use.
fn own_key(strategy: Strategy, image: &Image, entry: Option<Entry>, used: i64) -> Key {
    let entry = entry.unwrap_or_default();
    let frequency = if entry.frequency_ms == 0 {
        used
    } else {
        entry.frequency_ms
    };
    match strategy {
        Strategy::Lru | Strategy::Prune => (used, 0),
        // 0 (started fewer than twice) is below every real time: those go first.
        Strategy::Lru2 => (entry.prev_started_ms, used),
        Strategy::Lfu => (frequency, used),
        Strategy::Gdsf => (
            frequency.saturating_add(size_bonus_ms(image.size_bytes)),
            used,
        ),
    }
}

/// One half-life x log2((size + cost) / size), in ms: about 0.2 half-lives for a 6 GiB image,
/// 0.6 for 2 GiB, 2.1 for 300 MiB and 10 for 1 MiB.
fn size_bonus_ms(size_bytes: u64) -> i64 {
    let size = size_bytes.max(MIN_SIZE_BYTES) as f64;
    let ratio = (size + PULL_COST_BYTES as f64) / size;
    // ratio is in (1, 1025], so the product is below 11 half-lives: no overflow.
    (FREQUENCY_HALF_LIFE_MS as f64 * ratio.log2()).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::Inventory;

    const H: i64 = FREQUENCY_HALF_LIFE_MS;
    const NOW_MS: i64 = 1_000_000_000_000;
    const MIB: u64 = 1 << 20;

    fn image(id: &str, size_mib: u64, parent: Option<&str>) -> Image {
        Image {
            id: id.into(),
            parent_id: parent.map(Into::into),
            tags: vec![format!("{id}:1")],
            created: NOW_MS / 1000 - 100 * 24 * 3600,
            size_bytes: size_mib * MIB,
            ..Image::default()
        }
    }

    /// (id, size MiB, container starts as hours ago).
    fn rank(strategy: Strategy, images: &[(&str, u64, &[i64])]) -> Vec<String> {
        let inventory = Inventory {
            images: images
                .iter()
                .map(|(id, mib, _)| image(id, *mib, None))
                .collect(),
            containers: vec![],
        };
        let mut last_use = LastUse::new();
        for (id, _, starts) in images {
            last_use.touch(id, NOW_MS - 200 * 3_600_000);
            for hours in *starts {
                let at = NOW_MS - hours * 3_600_000;
                last_use.touch(id, at);
                last_use.apply(
                    &crate::docker::UseEvent {
                        time_nanos: at * 1_000_000,
                        image: id.to_string(),
                        action: "start".into(),
                        deleted: false,
                    },
                    Some(id),
                );
            }
        }
        let graph = Graph::new(&inventory);
        let last_used: HashMap<&str, i64> = inventory
            .images
            .iter()
            .map(|i| {
                (
                    i.id.as_str(),
                    last_use.get(&i.id).map_or(0, |e| e.last_used_ms),
                )
            })
            .collect();
        let keys = keys(strategy, &inventory, &graph, &last_use, &last_used);
        let mut ids: Vec<&str> = keys.keys().copied().collect();
        ids.sort_by_key(|id| (keys[id], *id));
        ids.into_iter().map(String::from).collect()
    }

    #[test]
    fn each_strategy_orders_the_same_history_its_own_way() {
        // "popular": 2 GiB, started every 3 h for two days, last 5 h ago.
        // "once": 2 GiB, started once, 1 h ago.
        // "twice-old": 2 GiB, started twice, 60 and 50 h ago.
        // "rare-6g" (6 GiB) and "rare-300m" (300 MiB): started twice, 40 and 30 h ago.
        // Decayed start counts now (half-life 6 h): popular 1.91, once 0.89, the rare ones
        // 0.041, twice-old 0.0041.
        let popular: Vec<i64> = (0..16).map(|k| 5 + 3 * k).collect();
        let cases: [(&str, u64, &[i64]); 5] = [
            ("popular", 2048, &popular),
            ("once", 2048, &[1]),
            ("twice-old", 2048, &[60, 50]),
            ("rare-6g", 6144, &[40, 30]),
            ("rare-300m", 300, &[40, 30]),
        ];
        let table: [(Strategy, &[&str]); 4] = [
            // Last use only: two days of use count for nothing against one start 1 h ago.
            (
                Strategy::Lru,
                &["twice-old", "rare-300m", "rare-6g", "popular", "once"],
            ),
            // Started once: goes first, however recent; then by the second-latest start.
            (
                Strategy::Lru2,
                &["once", "twice-old", "rare-300m", "rare-6g", "popular"],
            ),
            // Decayed counts, lowest first: popular outweighs once.
            (
                Strategy::Lfu,
                &["twice-old", "rare-300m", "rare-6g", "once", "popular"],
            ),
            // Counts x (size + 1 GiB) / size: of the two rare ones, the 6 GiB image goes first.
            (
                Strategy::Gdsf,
                &["twice-old", "rare-6g", "rare-300m", "once", "popular"],
            ),
        ];
        for (strategy, want) in table {
            assert_eq!(rank(strategy, &cases), want, "{strategy:?}");
        }
    }

    #[test]
    fn no_history_falls_back_to_last_use() {
        // Records from before the history existed: lfu and gdsf (same sizes) order as lru.
        let cases: [(&str, u64, &[i64]); 3] = [("a", 100, &[]), ("b", 100, &[]), ("c", 100, &[])];
        let lru = rank(Strategy::Lru, &cases);
        assert_eq!(rank(Strategy::Lfu, &cases), lru);
        assert_eq!(rank(Strategy::Gdsf, &cases), lru);
        assert_eq!(rank(Strategy::Lru2, &cases), lru);
    }

    #[test]
    fn a_parent_ranks_after_its_children() {
        let inventory = Inventory {
            images: vec![image("base", 100, None), image("app", 100, Some("base"))],
            containers: vec![],
        };
        let mut last_use = LastUse::new();
        last_use.touch("base", NOW_MS - 100);
        last_use.touch("app", NOW_MS);
        for _ in 0..5 {
            last_use.apply(
                &crate::docker::UseEvent {
                    time_nanos: NOW_MS * 1_000_000,
                    image: "app".into(),
                    action: "start".into(),
                    deleted: false,
                },
                Some("app"),
            );
        }
        let graph = Graph::new(&inventory);
        let last_used = HashMap::from([("base", NOW_MS), ("app", NOW_MS)]);
        for s in [Strategy::Lru, Strategy::Lru2, Strategy::Lfu, Strategy::Gdsf] {
            let k = keys(s, &inventory, &graph, &last_use, &last_used);
            assert!(k["base"] >= k["app"], "{s:?}: {k:?}");
        }
    }

    #[test]
    fn size_bonus_is_larger_for_smaller_images() {
        assert!(size_bonus_ms(300 * MIB) > size_bonus_ms(6144 * MIB));
        assert_eq!(size_bonus_ms(0), size_bonus_ms(MIB));
        // 1 GiB: log2(2) = one half-life.
        assert_eq!(size_bonus_ms(1024 * MIB), H);
    }
}
