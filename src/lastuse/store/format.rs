//! The state file's format and what is accepted on load: version 2, version 1 migrated, a newer
//! version recognised, times clamped to what can be true. Pure: bytes in, tables out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::MAX_BYTES;
use crate::lastuse::{DEFAULT_ENGINE, Entry, LastUse};

/// The format written.
pub(super) const VERSION: u64 = 2;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EngineState {
    /// The time of the last event applied, unix nanoseconds: the next start replays the
    /// engine's buffer from there.
    pub(super) cursor_nanos: Option<i64>,
    pub(super) images: BTreeMap<String, Entry>,
    /// Since when the table has covered the engine, unix ms (for `max_unused_age_seconds`).
    /// Absent in files written before it existed: coverage then starts at the next inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) covering_since_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateFile {
    pub(super) version: u64,
    pub(super) engines: BTreeMap<String, EngineState>,
}

/// Version 1: one engine, times in seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFileV1 {
    #[allow(dead_code)]
    version: u64,
    cursor_nanos: Option<i64>,
    images: BTreeMap<String, EntryV1>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    first_seen: i64,
    last_used: i64,
}

#[derive(Debug, Deserialize)]
struct Versioned {
    version: u64,
}

/// Why a state file is not used.
#[derive(Debug, PartialEq)]
pub(super) enum Unusable {
    /// Written by a newer version, in this format.
    Newer(u64),
    /// Not JSON, not of a known format, or too large.
    Corrupt(String),
}

/// What loading a state file changed in it besides the format: how many times were out of
/// range and clamped, and the engines whose event cursor was ahead of the clock, each with by
/// how much (nanoseconds).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Clamped {
    pub(super) times: usize,
    pub(super) cursors_ahead: Vec<(String, i64)>,
}

/// The tables in `bytes`, migrating version 1 and clamping times (see [`clamp_entry`] and
/// [`clamp_cursor`]); with what was clamped.
pub(super) fn parse(
    bytes: &[u8],
    now_ms: i64,
    now_nanos: i64,
) -> Result<(BTreeMap<String, LastUse>, Clamped), Unusable> {
    if u64::try_from(bytes.len()).is_ok_and(|n| n > MAX_BYTES) {
        return Err(Unusable::Corrupt(format!("larger than {MAX_BYTES} bytes")));
    }
    let corrupt = |e: serde_json::Error| Unusable::Corrupt(e.to_string());
    let versioned: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
    let (tables, migrated) = match versioned.version {
        1 => {
            let v1: StateFileV1 = serde_json::from_slice(bytes).map_err(corrupt)?;
            let images = v1
                .images
                .into_iter()
                .map(|(id, e)| {
                    let entry = Entry {
                        first_seen_ms: e.first_seen.saturating_mul(1000),
                        last_used_ms: e.last_used.saturating_mul(1000),
                        ..Entry::default()
                    };
                    (id, entry)
                })
                .collect();
            let engine = EngineState {
                cursor_nanos: v1.cursor_nanos,
                images,
                covering_since_ms: None,
            };
            (BTreeMap::from([(DEFAULT_ENGINE.to_string(), engine)]), true)
        }
        VERSION => {
            let state: StateFile = serde_json::from_slice(bytes).map_err(corrupt)?;
            (state.engines, false)
        }
        newer if newer > VERSION => return Err(Unusable::Newer(newer)),
        other => return Err(Unusable::Corrupt(format!("unknown format {other}"))),
    };
    let mut clamped = Clamped::default();
    let tables = tables
        .into_iter()
        .map(|(name, e)| {
            let mut changed = 0;
            let images = e
                .images
                .into_iter()
                .map(|(id, entry)| {
                    let fixed = clamp_entry(entry, now_ms);
                    changed += usize::from(fixed.first_seen_ms != entry.first_seen_ms)
                        + usize::from(fixed.last_used_ms != entry.last_used_ms);
                    (id, fixed)
                })
                .collect();
            let cursor = clamp_cursor(e.cursor_nanos, now_nanos);
            match e.cursor_nanos {
                Some(c) if c > now_nanos => {
                    clamped
                        .cursors_ahead
                        .push((name.clone(), c.saturating_sub(now_nanos)));
                }
                c => changed += usize::from(cursor != c),
            }
            let moved = cursor != e.cursor_nanos;
            // Not after now: a clock that was wrong must not postpone removals for age.
            let covering = e.covering_since_ms.map(|t| t.clamp(0, now_ms.max(0)));
            changed += usize::from(covering != e.covering_since_ms);
            let mut table = LastUse::restored(images, cursor);
            table.set_covering_since(covering);
            if migrated || changed > 0 || moved {
                // Written in the current format, with sane times, at the next save.
                table.mark_dirty();
            }
            clamped.times += changed;
            (name, table)
        })
        .collect();
    Ok((tables, clamped))
}

/// A record as it can be true at `now_ms`: last used between 1970 and now, first seen between
/// 1970 and the last use. A time in the future (a clock that was wrong) becomes now.
pub(super) fn clamp_entry(entry: Entry, now_ms: i64) -> Entry {
    let last_used_ms = entry.last_used_ms.clamp(0, now_ms.max(0));
    Entry {
        first_seen_ms: entry.first_seen_ms.clamp(0, last_used_ms),
        last_used_ms,
        // The start history only ranks; a start in the future is ranked as now.
        started_ms: entry.started_ms.clamp(0, now_ms.max(0)),
        prev_started_ms: entry.prev_started_ms.clamp(0, now_ms.max(0)),
        ..entry
    }
}

/// How far back the events are replayed when the saved cursor is ahead of the clock (24 h).
pub const AHEAD_CURSOR_REPLAY_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// The replay cursor as it can be used at `now_nanos`: not before 1970, and one ahead of the
/// clock moved back to [`AHEAD_CURSOR_REPLAY_NANOS`] before now. A cursor ahead was saved while
/// the clock was ahead (and has been corrected since): when the last event was really applied
/// is unknown, only that the cleaner has been down for less than the clock's error. Replaying
/// from now would skip every use made meanwhile; replaying from a day back covers any clock
/// error up to a day (a clock in the wrong time zone included) and costs little: an event
/// applied twice changes nothing, and Docker keeps only its last events anyway.
pub(super) fn clamp_cursor(cursor: Option<i64>, now_nanos: i64) -> Option<i64> {
    let now = now_nanos.max(0);
    cursor.map(|c| {
        if c > now {
            now.saturating_sub(AHEAD_CURSOR_REPLAY_NANOS).max(0)
        } else {
            c.max(0)
        }
    })
}
