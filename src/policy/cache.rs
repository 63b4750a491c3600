//! The build-cache stage of a plan: each engine's BuildKit build cache is pruned after the
//! dangling images and before any tagged image (a cache is cheaper to lose than an image a pod
//! may need), least recently used first, which is BuildKit's own order. The first prune asks
//! BuildKit to keep what the shortfall leaves of the cache; should usage still be above the low
//! watermark, a second removes every record it may. Records used within the build cache's min
//! age stay, and so do those a prune never removes (in use, BuildKit's internal and frontend
//! records) and those shared with an image whose bytes are the image's (the classic store:
//! they free nothing while the image exists); with the containerd image store shared records
//! hold copies of their own, and the prune takes them too (`all`).

use super::{Need, Step};
use crate::docker::{BuildCache, CacheRecord};

/// What decides a cache's steps.
pub(super) struct Rules {
    /// A record used less than this long ago stays.
    pub min_age_ms: i64,
    /// Now, unix ms.
    pub now_ms: i64,
    /// The shortfall to the low watermark.
    pub need: Need,
}

/// One build-cache step with its place in the order.
pub(super) struct CacheStep {
    /// The step.
    pub step: Step,
    /// The last use of the oldest record it removes, unix ms (the order across engines).
    pub oldest_ms: i64,
    /// False for the prune that keeps part of the cache, true for the one that removes the rest.
    pub rest: bool,
}

/// True when a prune with the min age of `rules` may remove `r` of `cache` and free its bytes.
/// BuildKit keeps a record whose last use is after the cutoff, and removes one without a time.
fn eligible(cache: &BuildCache, r: &CacheRecord, rules: &Rules) -> bool {
    let cutoff = rules.now_ms.saturating_sub(rules.min_age_ms);
    cache.may_go(r) && r.last_used.is_none_or(|t| t.saturating_mul(1000) <= cutoff)
}

/// The steps of `engine`'s `cache`: none when nothing in it may go; one prune of every eligible
/// record when the shortfall needs all of them (or inodes are short, or the engine cannot keep
/// part of its cache); otherwise a prune down to what the shortfall leaves, then one of the
/// rest.
pub(super) fn steps(engine: &str, cache: &BuildCache, rules: &Rules) -> Vec<CacheStep> {
    let mut records: Vec<&CacheRecord> = cache
        .records
        .iter()
        .filter(|r| eligible(cache, r, rules))
        .collect();
    if records.is_empty() {
        return Vec::new();
    }
    records.sort_by_key(|r| (r.last_used, r.id.as_str()));
    let oldest_ms = records
        .first()
        .and_then(|r| r.last_used)
        .map_or(0, |t| t.saturating_mul(1000));
    let eligible_bytes = records
        .iter()
        .map(|r| r.size_bytes)
        .fold(0, u64::saturating_add);
    let unused_for_secs = u64::try_from(rules.min_age_ms.div_euclid(1000)).unwrap_or(0);
    // Shared records that hold copies go only with `all`.
    let all = records.iter().any(|r| r.shared);
    let prune = |keep_bytes, size_bytes, records| Step::PruneBuildCache {
        engine: engine.to_string(),
        keep_bytes,
        size_bytes,
        records,
        unused_for_secs,
        all,
    };
    let to_free = rules.need.bytes;
    let partial =
        cache.keep_supported && rules.need.inodes == 0 && to_free > 0 && to_free < eligible_bytes;
    if !partial {
        return vec![CacheStep {
            step: prune(0, eligible_bytes, records.len()),
            oldest_ms,
            rest: false,
        }];
    }
    // The least recently used records that should be enough, as BuildKit goes.
    let mut freed = 0u64;
    let mut first = 0usize;
    for r in &records {
        if freed >= to_free {
            break;
        }
        freed = freed.saturating_add(r.size_bytes);
        first += 1;
    }
    if first == records.len() {
        // The oldest records that should be enough are all of them.
        return vec![CacheStep {
            step: prune(0, eligible_bytes, records.len()),
            oldest_ms,
            rest: false,
        }];
    }
    // At least one byte kept, so that BuildKit reads it as a size to keep and not as "none".
    let keep_bytes = cache.total_bytes().saturating_sub(to_free).max(1);
    let rest_oldest = records
        .get(first)
        .and_then(|r| r.last_used)
        .map_or(oldest_ms, |t| t.saturating_mul(1000));
    vec![
        CacheStep {
            step: prune(keep_bytes, freed, first),
            oldest_ms,
            rest: false,
        },
        CacheStep {
            step: prune(
                0,
                eligible_bytes.saturating_sub(freed),
                records.len() - first,
            ),
            oldest_ms: rest_oldest,
            rest: true,
        },
    ]
}
