//! The start of a pass's removals: the guard's cordon, and with fleet slots the wait for one.
//! Mechanism only: while the guard answers [`PassStart::NoSlot`], ask again after a jittered
//! pause (racing the shutdown token), show the wait in `STATUS=` before and after each pause so
//! the watchdog promise holds, measure again to learn whether usage has become critical (the
//! guard then cleans without a slot), and give up once the pass's interval has gone by: the next
//! tick plans anew. What "no slot" and "critical" mean is the guard's.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Guard, Progress};
use crate::config::Config;
use crate::node::PassStart;
use crate::policy;
use crate::usage::Meter;

/// The longest pause between two tries: below the shortest step bound the watchdog is
/// promised (Docker's timeout, at least 1 s, plus 60 s).
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// How the removals may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// Go on (cordoned, or not, as the guard decided).
    Proceed,
    /// The guard said skip (`on_cordon_failure = "skip"`).
    Skip,
    /// No slot within the interval.
    NoSlot,
    /// Shutdown came while waiting.
    Interrupted,
}

/// The pause before the next try for a slot: a third of the lease (slots change hands at about
/// the pace holders renew them), spread by `unit` in `[0, 1)` over half to one and a half times
/// that so that waiting nodes do not ask in step, and at most [`MAX_RETRY`].
pub fn retry_delay(lease: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    (lease / 3).mul_f64(0.5 + unit).min(MAX_RETRY)
}

/// A number in `[0, 1)`, different at each call: the standard library's randomly keyed hasher
/// (no random-number crate for one jitter).
fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    f64::from(u32::try_from(bits >> 32).unwrap_or(0)) / 4_294_967_296.0
}

/// Asks `guard` to begin until it lets the pass go on, says skip, or the interval runs out.
pub async fn begin<G: Guard, M: Meter>(
    guard: &mut G,
    meter: &M,
    progress: &dyn Progress,
    shutdown: &CancellationToken,
    config: &Config,
    mut critical: bool,
) -> Begun {
    let started = Instant::now();
    let deadline = started + config.interval;
    let mut shown: Option<String> = None;
    loop {
        let held = match guard.begin_pass(critical).await {
            PassStart::Proceed => {
                if shown.is_some() {
                    log::info!(
                        "done waiting for a cleaning slot after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                return Begun::Proceed;
            }
            PassStart::Skip => return Begun::Skip,
            PassStart::NoSlot(held) => held,
        };
        let status = format!("waiting for a cleaning slot ({held})");
        if shown.as_deref() != Some(status.as_str()) {
            log::info!("{status}: nothing cordoned or removed meanwhile");
        }
        progress.update(&status);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            log::warn!(
                "no cleaning slot came free within the interval ({} s; {held}): trying again at the next tick",
                config.interval.as_secs()
            );
            return Begun::NoSlot;
        }
        shown = Some(status);
        let pause = retry_delay(config.fleet_lease, jitter()).min(left);
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                log::info!("shutdown requested while waiting for a cleaning slot");
                return Begun::Interrupted;
            }
            () = tokio::time::sleep(pause) => {}
        }
        if let Some(status) = &shown {
            progress.update(status);
        }
        match meter.filesystems().await {
            Ok(filesystems) => critical = policy::critical(&filesystems, config),
            Err(e) => log::debug!(
                "cannot measure while waiting for a slot, keeping what was known: {}",
                crate::error_chain(&e)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_is_spread_around_a_third_of_the_lease() {
        let lease = Duration::from_secs(60);
        assert_eq!(retry_delay(lease, 0.0), Duration::from_secs(10));
        assert_eq!(retry_delay(lease, 0.5), Duration::from_secs(20));
        assert!(retry_delay(lease, 0.999_999) > Duration::from_secs(29));
        assert_eq!(retry_delay(Duration::from_secs(3600), 0.0), MAX_RETRY);
        assert_eq!(retry_delay(lease, f64::NAN), Duration::from_secs(20));
        let lease = Duration::from_secs(3);
        let spread: Vec<Duration> = (0..50).map(|_| retry_delay(lease, jitter())).collect();
        assert!(
            spread
                .iter()
                .all(|d| *d >= Duration::from_millis(500) && *d <= Duration::from_millis(1500))
        );
        assert!(
            spread.iter().any(|d| *d != spread[0]),
            "jittered: {spread:?}"
        );
    }
}
