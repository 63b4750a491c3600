//! The guard's time limits: [`Timing`], the timeouts and retry bounds of its API calls (tests
//! shorten them), and the error of a call cut short at one of them. No I/O.

use std::time::Duration;

use super::error::Error;

/// Timeouts and retry bounds of the API calls. Every public call of
/// [`Cordoner`](super::Cordoner) is cut short at its limit, whatever the API server or a
/// credential plugin does: see [`Cordoner::max_call_time`](super::Cordoner::max_call_time).
/// Tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// TCP and TLS connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of each request (sending it and reading the answer).
    pub request_timeout: Duration,
    /// Tries of one release before it is left to later ticks.
    pub release_tries: u32,
    /// Pause after the first failed try; doubled after each further one.
    pub release_backoff: Duration,
    /// Time limit of one release, all tries and the credential included.
    pub release_budget: Duration,
    /// Time limit of an exec credential plugin; it is killed then.
    pub exec_timeout: Duration,
    /// Time limit of one cordon, recovery or Event post, the credential included.
    pub call_budget: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            release_tries: 3,
            release_backoff: Duration::from_millis(500),
            release_budget: Duration::from_secs(12),
            exec_timeout: Duration::from_secs(10),
            call_budget: Duration::from_secs(15),
        }
    }
}

/// The error of a call cut short at its limit.
pub(super) fn timed_out(what: &'static str, node: &str, after: Duration) -> Error {
    Error::Timeout {
        what,
        node: node.to_string(),
        after,
    }
}
