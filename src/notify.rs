//! systemd notification: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1` and the watchdog. A
//! no-op without `NOTIFY_SOCKET`. A leaf: imports nothing of the crate.
//!
//! The watchdog is fed by a small task, but only while the main loop has promised to be alive:
//! the loop (idle) or the pass (before each bounded step) extends a deadline, and the task pings
//! only before it. A loop stuck past its own bounds stops the pings, and systemd restarts it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The notifier; cheap to share by reference (`Arc` for the ping task).
#[derive(Debug)]
pub struct Notifier {
    watchdog: Option<Duration>,
    origin: Instant,
    /// Milliseconds after `origin` until which the loop promised to be alive.
    alive_until_ms: AtomicU64,
    /// How long one step of a pass may take at most (the Docker timeout plus a margin).
    step_bound: Mutex<Duration>,
    status: Mutex<String>,
}

impl Notifier {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` (for this process only) and `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Notifier {
            watchdog: sd_notify::watchdog_enabled(),
            origin: Instant::now(),
            alive_until_ms: AtomicU64::new(0),
            step_bound: Mutex::new(Duration::from_secs(360)),
            status: Mutex::new(String::new()),
        }
    }

    /// The watchdog interval systemd asked for, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often the main loop must show it is alive while idle: half the watchdog interval.
    pub fn beat_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Sets the longest time one step of a pass may take (Docker's timeout plus a margin).
    pub fn set_step_bound(&self, bound: Duration) {
        if let Ok(mut b) = self.step_bound.lock() {
            *b = bound;
        }
    }

    /// The loop promises to come back within `d`.
    pub fn alive_for(&self, d: Duration) {
        let until = millis(self.origin.elapsed().saturating_add(d));
        self.alive_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether the loop's promise still holds.
    fn alive(&self) -> bool {
        millis(self.origin.elapsed()) < self.alive_until_ms.load(Ordering::Relaxed)
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            log::debug!("sd_notify failed: {e}");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.set_status(status);
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` (with the monotonic time systemd wants alongside it).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.set_status(status);
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    fn set_status(&self, status: &str) {
        if let Ok(mut s) = self.status.lock() {
            status.clone_into(&mut s);
        }
    }

    /// `STATUS=` when it changed.
    pub fn status(&self, status: &str) {
        let changed = match self.status.lock() {
            Ok(mut s) if *s != status => {
                status.clone_into(&mut s);
                true
            }
            _ => false,
        };
        if changed {
            self.send(&[NotifyState::Status(status)]);
        }
    }

    /// A step of a pass begins: promises the watchdog to be back within the step bound, and
    /// shows `status`.
    pub fn step(&self, status: &str) {
        let bound = self
            .step_bound
            .lock()
            .map(|b| *b)
            .unwrap_or(Duration::from_secs(360));
        self.alive_for(bound);
        self.status(status);
    }

    /// Pings `WATCHDOG=1` every half interval while the loop's promise holds; never returns
    /// (pending forever when systemd asked for no watchdog).
    pub async fn feed_watchdog(&self) {
        let Some(interval) = self.beat_interval() else {
            return std::future::pending().await;
        };
        loop {
            if self.alive() {
                self.send(&[NotifyState::Watchdog]);
            } else {
                log::error!("the main loop has not answered in time: no watchdog ping");
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Milliseconds of `d`, saturating (after half a billion years).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
