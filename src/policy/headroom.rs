//! Headroom sized to what arrives: the watermarks a pass uses when `threshold_high` and
//! `threshold_low` are left at `"auto"` (the default, relative mode). Keep the image cache as large as the disk allows while
//! never letting a pull find the disk full: after a pass the filesystem must have room for the
//! pulls the node has seen lately, so the low watermark sits that far below full, and a pass
//! starts early enough that the next pull still fits, so the high watermark does too. Both stay
//! at or below where they would be with the configured high watermark, and at or below the
//! kubelet's image-filesystem eviction threshold (`imagefs.available` 15 % by default), so our
//! cache never makes the kubelet evict pods.
//!
//! What arrived: the images each engine holds that were first seen within [`Rule::window_ms`]
//! (pulled, loaded, built), with the sizes the engine reports. Pure: the arrivals and the time
//! are arguments, so every rule is a table test.

use serde::Serialize;

use crate::config::Watermarks;

/// One image that arrived on an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// When it was first seen, unix ms.
    pub at_ms: i64,
    /// Its size as the engine reports it (shared layers counted: what a pull may write).
    pub bytes: u64,
}

/// How the room for arrivals is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// Arrivals first seen within this long before now count.
    pub window_ms: i64,
    /// Arrivals within this long of each other may be under way at once (a pass's reach: the
    /// interval between two checks); their sum must fit.
    pub span_ms: i64,
    /// Room a pull needs, as a multiple of the image's size: a pull writes its compressed
    /// layers before it unpacks them, and `docker load` its whole tarball before the layers.
    pub factor: f64,
    /// The kubelet's image-filesystem eviction threshold, percent used: neither watermark goes
    /// above it, less one point.
    pub eviction_pct: f64,
    /// The lowest the low watermark goes, percent: however large what arrives, a pass never
    /// empties more of the disk than this leaves.
    pub floor_pct: f64,
}

/// Arrivals count for this many intervals (an hour at the default 300 s).
pub const WINDOW_INTERVALS: u32 = 12;
/// Room a pull needs, as a multiple of the largest arrival ([`Rule::factor`]). Measured: a
/// `docker load` grows the filesystem by twice the image at its peak on Docker 20.10 and 28.5
/// (`scripts/bench-load-room.sh`); a registry pull holds its compressed layers, less.
pub const PULL_FACTOR: f64 = 2.0;
/// However large what arrives, the low watermark stays at or above this, percent.
pub const FLOOR_PCT: f64 = 50.0;

impl Rule {
    /// The rule of `threshold_low = "auto"` for a daemon that checks every `interval`.
    pub fn for_interval(interval: std::time::Duration) -> Rule {
        let ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        Rule {
            window_ms: ms.saturating_mul(i64::from(WINDOW_INTERVALS)),
            span_ms: ms,
            factor: PULL_FACTOR,
            eviction_pct: KUBELET_EVICTION_PCT,
            floor_pct: FLOOR_PCT,
        }
    }
}

/// The kubelet's default hard eviction threshold on the image filesystem is
/// `imagefs.available<15%`: usage above 85 %.
pub const KUBELET_EVICTION_PCT: f64 = 85.0;

/// The room a pass leaves, and why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Headroom {
    /// Arrivals counted (first seen within the window).
    pub arrivals: usize,
    /// The largest of them, bytes.
    pub largest_bytes: u64,
    /// The most bytes that arrived within one span.
    pub busiest_bytes: u64,
    /// The room kept free: the larger of `factor` times the largest, and the busiest span.
    pub room_bytes: u64,
}

/// The room for what arrived within `rule.window_ms` before `now_ms`.
pub fn headroom(arrivals: &[Arrival], now_ms: i64, rule: &Rule) -> Headroom {
    let since = now_ms.saturating_sub(rule.window_ms);
    let mut recent: Vec<Arrival> = arrivals
        .iter()
        .copied()
        .filter(|a| a.at_ms >= since && a.at_ms <= now_ms)
        .collect();
    recent.sort_by_key(|a| a.at_ms);
    let largest_bytes = recent.iter().map(|a| a.bytes).max().unwrap_or(0);
    // The busiest span: for each arrival, it and those within `span_ms` after it.
    let mut busiest_bytes = 0u64;
    let mut end = 0;
    let mut sum = 0u64;
    for (start, a) in recent.iter().enumerate() {
        while end < recent.len() && recent[end].at_ms - a.at_ms < rule.span_ms.max(1) {
            sum = sum.saturating_add(recent[end].bytes);
            end += 1;
        }
        busiest_bytes = busiest_bytes.max(sum);
        sum = sum.saturating_sub(recent[start].bytes);
    }
    // The product is a few times the largest image: far below f64's exact range.
    let scaled = (largest_bytes as f64 * rule.factor.max(0.0)) as u64;
    Headroom {
        arrivals: recent.len(),
        largest_bytes,
        busiest_bytes,
        room_bytes: scaled.max(busiest_bytes),
    }
}

/// The watermarks of a pass from the configured ones and the room on the fullest watched
/// filesystem, of `total_bytes`, with `free_pct` = 100 - the room's share of it:
/// - `threshold_high = "auto"` (`high_auto`): the configured high watermark (the default),
///   lowered to `free_pct` so that the next pull fits when a pass starts, and never above a
///   point under the eviction threshold; a number is kept as set (the original's meaning:
///   cleaning starts there);
/// - `threshold_low = "auto"` (`low_auto`): the configured band below that high watermark,
///   lowered to `free_pct` so that the room is free after a pass, and never above a point
///   under the eviction threshold; a number is kept as set.
///
/// However large what arrives, an auto low watermark stays at or above [`Rule::floor_pct`] and an
/// auto high one at or above that (the band above it when the low one is auto too); the low
/// stays below the high. Absolute mode is left as configured.
pub fn watermarks(
    configured: Watermarks,
    (low_auto, high_auto): (bool, bool),
    total_bytes: u64,
    room: &Headroom,
    rule: &Rule,
) -> Watermarks {
    let Watermarks::Relative { high_pct, low_pct } = configured else {
        return configured;
    };
    if total_bytes == 0 || !(low_auto || high_auto) {
        return configured;
    }
    let band = (high_pct - low_pct).max(0.5);
    let free_pct = 100.0 - 100.0 * room.room_bytes as f64 / total_bytes as f64;
    let ceiling = rule.eviction_pct - 1.0;
    let mut high = high_pct;
    if high_auto {
        // An auto low watermark a band below must stay at its floor.
        let floor = rule.floor_pct + if low_auto { band } else { 0.0 };
        high = high.min(ceiling).min(free_pct).max(floor).min(high_pct);
    }
    let mut low = low_pct;
    if low_auto {
        low = (high - band)
            .min(free_pct)
            .min(ceiling)
            .max(rule.floor_pct.min(high - band));
    }
    // A fixed low watermark above a lowered high one: the high one stays above it.
    let high = high.max(low + 0.5).min(100.0);
    Watermarks::Relative {
        high_pct: round(high),
        low_pct: round(low.clamp(0.0, high - 0.5)),
    }
}

/// Two decimals: what `status` and the log show, and no noise from the division.
fn round(pct: f64) -> f64 {
    (pct * 100.0).round() / 100.0
}

/// The watermarks of a pass (or a check) at `now_ms` after the measurement `m`: as configured,
/// or with `threshold_low = "auto"` sized to the `arrivals` of every engine on the fullest
/// watched filesystem, with the room it leaves (for the log and `status`).
pub fn effective(
    config: &crate::config::Config,
    arrivals: &[Arrival],
    m: &crate::usage::Measurement,
    now_ms: i64,
) -> (Watermarks, Option<Headroom>) {
    let crate::usage::Measurement::Relative(all) = m else {
        return (config.watermarks, None);
    };
    if !(config.low_auto || config.high_auto) {
        return (config.watermarks, None);
    }
    let Some(fullest) = all
        .iter()
        .max_by(|a, b| a.used_pct().total_cmp(&b.used_pct()))
    else {
        return (config.watermarks, None);
    };
    let rule = Rule::for_interval(config.interval);
    let room = headroom(arrivals, now_ms, &rule);
    (
        watermarks(
            config.watermarks,
            (config.low_auto, config.high_auto),
            fullest.total_bytes,
            &room,
            &rule,
        ),
        Some(room),
    )
}

/// The arrivals `tables` know of within the window of `config` before `now_ms`.
pub fn arrivals<'a>(
    tables: impl IntoIterator<Item = &'a crate::lastuse::LastUse>,
    config: &crate::config::Config,
    now_ms: i64,
) -> Vec<Arrival> {
    let since = now_ms.saturating_sub(Rule::for_interval(config.interval).window_ms);
    tables.into_iter().flat_map(|t| t.arrivals(since)).collect()
}

#[cfg(test)]
mod tests;
