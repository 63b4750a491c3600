//! The long-running loop (`run`) and the one-shot pass (`once`), with the start-up they share.
//! No cleaning logic here: a pass is `cycle`'s, its decisions `policy`'s.
//!
//! - `preflight`: what the configuration needs of the node, checked before `run` reports ready,
//!   before a reload, and by `check-config`;
//! - `reload`: the inputs read again on SIGHUP, the daemon's answer, and `reload` (the unit's
//!   `ExecReload=`) that checks, signals and waits for it;
//! - `startup`: the single-instance lock, the state, the cordon guard and its recovery, and
//!   their release before exit;
//! - `follow`: connecting to the engines, catching up with their events and following them;
//! - `serve`: the running daemon: the loop that waits for the next thing to happen (a tick, an
//!   engine event, a reload, a save, shutdown) and hands it to one handler each; it feeds the
//!   watchdog, reads the clock and saves the state.

mod follow;
mod preflight;
mod reload;
mod serve;
mod startup;

use std::path::PathBuf;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::cycle::{self, Member, Pass, Quiet, Report};
use crate::docker::{self, AnyEngine, Engine};
use crate::lastuse::{self, Tables};
use crate::metrics::{self, Exporter};
use crate::node;
use crate::notify::Notifier;
use follow::connect_all;
use serve::{Daemon, describe, step_bound};
use startup::Startup;

pub use preflight::{Preflight, preflight};
pub use reload::{Answers, Inputs, RELOAD_BOUND, ReloadError, Reloaded, Reloader, request_reload};

/// Exit code when another instance holds the lock (EX_TEMPFAIL: try again later).
pub const EXIT_LOCKED: u8 = 75;

/// Errors that stop the daemon (or fail `once`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another instance runs.
    #[error("another docker-image-cleaner holds the lock on {path}; only one may clean at a time")]
    Locked {
        /// The directory locked (the state directory, see [`lastuse::lock`]).
        path: PathBuf,
    },
    /// The state directory is unsafe, or cannot be opened or locked.
    #[error(transparent)]
    State(#[from] lastuse::Error),
    /// The Kubernetes side is misconfigured.
    #[error(transparent)]
    Node(#[from] node::Error),
    /// Docker cannot be reached (`once` only; `run` waits).
    #[error(transparent)]
    Docker(#[from] docker::Error),
    /// The pass failed (`once` only; `run` logs and goes on).
    #[error(transparent)]
    Pass(#[from] cycle::Error),
    /// Shutdown was asked for before the pass could start.
    #[error("interrupted before the pass started")]
    Interrupted,
    /// The metrics endpoint cannot listen.
    #[error(transparent)]
    Metrics(#[from] metrics::Error),
    /// The configuration cannot work on this node (see [`preflight`]).
    #[error("cannot work as configured: {}", .0.join("; "))]
    Preflight(Vec<String>),
}

impl Error {
    /// True when the configuration is at fault (exit 78).
    pub fn is_config(&self) -> bool {
        match self {
            Error::Node(e) => e.is_config(),
            Error::State(e) => e.is_config(),
            Error::Preflight(_) => true,
            _ => false,
        }
    }
}

/// Runs `f` unless shutdown comes first.
async fn or_shutdown<T>(shutdown: &CancellationToken, f: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => None,
        v = f => Some(v),
    }
}

/// The members of a pass: each connected engine with its configuration and last-use table.
fn members<'a>(
    config: &'a Config,
    connected: &'a [(usize, AnyEngine)],
    tables: &'a mut Tables,
) -> Vec<Member<'a, AnyEngine>> {
    let names: Vec<&str> = connected
        .iter()
        .map(|(i, _)| config.engines[*i].name.as_str())
        .collect();
    let mut out = Vec::with_capacity(connected.len());
    for (name, last_use) in tables.engines_mut(&names) {
        if let Some((i, engine)) = connected
            .iter()
            .find(|(i, _)| config.engines[*i].name == name)
        {
            out.push(Member {
                config: &config.engines[*i],
                engine,
                last_use,
            });
        }
    }
    out
}

/// One pass and out (`once`): replays the events since the last run so that last use is up
/// to date, cleans, saves the state. Fails when no engine or a watched path can be reached.
pub async fn once(config: &Config, shutdown: &CancellationToken) -> Result<Report, Error> {
    let lock = Startup::lock(config)?;
    // A dry run may run beside the daemon: it leaves the daemon's textfile alone.
    let mut exporter = (!config.dry_run).then(|| Exporter::one_pass(config));
    let clock = exporter.as_ref().map(Exporter::clock).unwrap_or_default();
    let mut s = Startup::begin(config, lock, shutdown, None, clock, true).await?;
    let connected = connect_all(config, shutdown).await?;
    for (i, engine) in &connected {
        let last_use = s.tables.engine_mut(&config.engines[*i].name);
        let replayed = or_shutdown(shutdown, cycle::replay(engine, last_use, now_nanos()))
            .await
            .ok_or(Error::Interrupted)??;
        log::debug!(
            "engine {}: replayed {replayed} events since the last run",
            config.engines[*i].name
        );
    }
    let report = Pass {
        config,
        members: members(config, &connected, &mut s.tables),
        meter: &cycle::meter_for(config, connected.iter().map(|(_, e)| e.storage())),
        guard: &mut s.cordoner,
        progress: &(),
        shutdown,
        now_ms: now_ms(),
        quiet: &mut Quiet::default(),
    }
    .run()
    .await;
    if let Some(e) = &mut exporter {
        e.pass(&report, now_ms());
    }
    s.save(config.dry_run);
    s.release_before_exit().await;
    Ok(report?)
}

/// What the daemon is told from outside while it runs.
pub struct Control {
    /// Cancelled on SIGTERM/SIGINT: no new removal starts; the one in flight finishes.
    pub shutdown: CancellationToken,
    /// A new, valid configuration (SIGHUP).
    pub reload: mpsc::UnboundedReceiver<Config>,
}

/// The daemon: a pass every `interval` until shutdown; Docker being away is waited out.
/// Returns `Ok` on a clean stop.
pub async fn run(config: Config, mut control: Control, notifier: &Notifier) -> Result<(), Error> {
    let lock = Startup::lock(&config)?;
    // Before READY: an address in use fails the start.
    let metrics = Exporter::daemon(&config, &control.shutdown)?;
    // Before READY too: `systemctl start` fails when the service cannot do its job.
    let checked = preflight(&config).await;
    for w in &checked.warnings {
        log::warn!("{w}");
    }
    if !checked.ok() {
        return Err(Error::Preflight(checked.fatal));
    }
    log::info!("starting: {}", describe(&config));
    notifier.set_step_bound(step_bound(&config));
    notifier.alive_for(notifier.watchdog().unwrap_or_default());
    notifier.ready("starting");
    let shutdown = control.shutdown.clone();
    let work = async {
        let start = Startup::begin(
            &config,
            lock,
            &shutdown,
            Some(notifier),
            metrics.clock(),
            false,
        )
        .await?;
        let mut daemon = Daemon::new(config, notifier, shutdown.clone(), start, metrics);
        daemon.serve(&mut control.reload).await;
        Ok::<_, Error>(daemon)
    };
    let started = tokio::select! {
        daemon = work => daemon,
        // The feeder never returns; this branch only keeps it running beside the loop.
        () = notifier.feed_watchdog() => return Ok(()),
    };
    notifier.stopping("stopping: releasing the node and saving the state");
    let daemon = started?;
    log::info!("stopping");
    daemon.stop().await;
    Ok(())
}
