//! The wall clock, read in one place: the daemon, `once` and `status` read it and pass the time
//! into the pass and the policy, which never read it themselves. A leaf: imports nothing of the
//! crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix nanoseconds now (the engines' event times and the replay cursor are in nanoseconds);
/// 0 before 1970, and `i64::MAX` after 2262.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix milliseconds now (last use is kept in milliseconds).
pub fn now_ms() -> i64 {
    now_nanos().div_euclid(1_000_000)
}
