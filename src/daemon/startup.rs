//! [`Startup`]: what `once` and `run` set up before their first pass, and tear down after the
//! last: the single-instance lock, the state (last-use tables) loaded and saved, the cordon
//! guard with its crash recovery and its release before exit. Runs no pass and follows no
//! engine.

use tokio_util::sync::CancellationToken;

use super::{Error, or_shutdown};
use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::error_chain;
use crate::lastuse::{self, InstanceLock, Store, Tables};
use crate::node::{CordonClock, Cordoner};
use crate::notify::Notifier;

/// What `once` and `run` set up before their first pass.
pub(super) struct Startup {
    /// `None` for a dry run, which changes nothing and may run beside the daemon.
    _lock: Option<InstanceLock>,
    store: Store,
    /// The last-use tables, one per engine.
    pub(super) tables: Tables,
    /// The cordon guard (and the fleet slot).
    pub(super) cordoner: Cordoner,
}

impl Startup {
    /// Takes the lock, unless dry run (before anything else: a second instance must be refused
    /// before it tells systemd anything).
    pub(super) fn lock(config: &Config) -> Result<Option<InstanceLock>, Error> {
        if config.dry_run {
            Ok(None)
        } else {
            match InstanceLock::take(&config.state_dir) {
                Err(lastuse::Error::Locked { path }) => Err(Error::Locked { path }),
                taken => Ok(Some(taken?)),
            }
        }
    }

    /// Loads the state, and lifts a cordon of ours left by a crash. An API server out of reach
    /// is a warning: `on_cordon_failure` decides later. The guard keeps time on `clock`; with
    /// `one_pass` (`once`) no tick follows the pass.
    pub(super) async fn begin(
        config: &Config,
        lock: Option<InstanceLock>,
        shutdown: &CancellationToken,
        notifier: Option<&Notifier>,
        clock: CordonClock,
        one_pass: bool,
    ) -> Result<Self, Error> {
        let mut store = match &lock {
            Some(lock) => lock.store(),
            None => Store::read_only(&config.state_dir)?,
        };
        let tables = store.load(now_ms(), now_nanos());
        let mut cordoner = Cordoner::new(config)
            .with_clock(clock)
            .with_exit(one_pass, shutdown.clone());
        if !config.dry_run {
            // The guard's calls are bounded (credential plugin included): keep pinging meanwhile.
            if let Some(n) = notifier {
                n.alive_for(cordoner.max_call_time());
            }
            match or_shutdown(shutdown, cordoner.recover()).await {
                Some(Err(e)) if e.is_config() => return Err(e.into()),
                Some(Err(e)) => log::warn!(
                    "cannot check the node for a leftover cordon: {}",
                    error_chain(&e)
                ),
                _ => {}
            }
        }
        Ok(Startup {
            _lock: lock,
            store,
            tables,
            cordoner,
        })
    }

    /// Saves the last-use tables; a failure is logged (the tables are rebuilt from events
    /// anyway). A dry run writes nothing.
    pub(super) fn save(&mut self, dry_run: bool) {
        if dry_run {
            return;
        }
        self.store.save_or_warn(&mut self.tables);
    }

    /// Tries, bounded, to release a cordon (and its fleet slot) still held before the process
    /// exits.
    pub(super) async fn release_before_exit(&mut self) {
        for _ in 0..3 {
            if !self.cordoner.holds_cordon() && !self.cordoner.holds_slot() {
                return;
            }
            self.cordoner.retry_release().await;
        }
        if self.cordoner.holds_cordon() {
            log::error!("exiting while the node is still cordoned by us; the next start lifts it");
        }
    }
}
