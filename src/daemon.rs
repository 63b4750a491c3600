//! The long-running loop (`run`) and the one-shot pass (`once`): the single-instance lock,
//! connecting to Docker, following its events, a pass every interval, reload, the watchdog,
//! saving the state, stopping cleanly. No cleaning logic here.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, Pass, Progress, Report, now_nanos};
use crate::docker::{self, DockerEngine, UseEvent};
use crate::error_chain;
use crate::lastuse::{self, LastUse};
use crate::node::{self, Cordoner};
use crate::notify::Notifier;

/// Exit code when another instance holds the lock (EX_TEMPFAIL: try again later).
pub const EXIT_LOCKED: u8 = 75;

/// Errors that stop the daemon (or fail `once`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another instance runs.
    #[error("another docker-image-cleaner holds {path}; only one may clean at a time")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file cannot be created.
    #[error("cannot create the lock file {path}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file cannot be read.
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
}

impl Error {
    /// True when the configuration is at fault (exit 78).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Node(e) if e.is_config())
    }
}

/// Holds the single-instance lock (an exclusive `flock` on `state_dir/lock`) until dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock or fails at once.
    pub fn take(state_dir: &Path) -> Result<Self, Error> {
        let path = state_dir.join("lock");
        let lock_err = |source| Error::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(lock_err)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(InstanceLock { _file: file }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(Error::Locked { path }),
            Err(e) => Err(lock_err(e.into())),
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

/// One pass and out (`once`): replays the events since the last run so that last use is up
/// to date, cleans, saves the state. Fails when Docker or a watched path cannot be reached.
pub async fn once(config: &Config, shutdown: &CancellationToken) -> Result<Report, Error> {
    // A dry run changes nothing, so it may run beside the daemon.
    let _lock = if config.dry_run {
        None
    } else {
        Some(InstanceLock::take(&config.state_dir)?)
    };
    let mut last_use = LastUse::load(&config.state_dir)?;
    let mut cordoner = Cordoner::new(config);
    let engine = or_shutdown(
        shutdown,
        DockerEngine::connect(config.docker_host.as_deref(), config.timeout),
    )
    .await
    .ok_or(Error::Interrupted)??;
    if !config.dry_run {
        match or_shutdown(shutdown, cordoner.recover()).await {
            Some(Err(e)) if e.is_config() => return Err(e.into()),
            // An API server out of reach must not stop a clean: on_cordon_failure decides.
            Some(Err(e)) => log::warn!(
                "cannot check the node for a leftover cordon: {}",
                error_chain(&e)
            ),
            _ => {}
        }
    }
    let replayed = or_shutdown(shutdown, last_use.replay(&engine, now_nanos()))
        .await
        .ok_or(Error::Interrupted)??;
    log::debug!("replayed {replayed} Docker events since the last run");
    let report = Pass {
        config,
        engine: &engine,
        last_use: &mut last_use,
        cordoner: &mut cordoner,
        progress: &(),
        shutdown,
    }
    .run()
    .await;
    save(&mut last_use, config.dry_run);
    release_before_exit(&mut cordoner).await;
    Ok(report?)
}

/// Saves the last-use table; a failure is logged (the table is rebuilt from events anyway).
/// A dry run writes nothing.
fn save(last_use: &mut LastUse, dry_run: bool) {
    if dry_run {
        return;
    }
    if let Err(e) = last_use.save() {
        log::error!("{}", error_chain(&e));
    }
}

/// Tries, bounded, to release a cordon still held before the process exits.
async fn release_before_exit(cordoner: &mut Cordoner) {
    for _ in 0..3 {
        if !cordoner.holds_cordon() {
            return;
        }
        cordoner.retry_release().await;
    }
    if cordoner.holds_cordon() {
        log::error!("exiting while the node is still cordoned by us; the next start lifts it");
    }
}

/// Follows Docker's events into `tx`, reconnecting with backoff whenever the stream ends
/// (Docker restarted), resuming from the last event seen.
async fn follow(engine: DockerEngine, mut since: i64, tx: mpsc::UnboundedSender<UseEvent>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut stream = std::pin::pin!(engine.use_events(Some(since), None));
        let mut got_any = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    since = since.max(event.time_nanos);
                    got_any = true;
                    if tx.send(event).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("Docker event stream broke: {}", error_chain(&e));
                    break;
                }
            }
        }
        if got_any {
            backoff = Duration::from_secs(1);
        }
        log::info!(
            "reconnecting to Docker's event stream in {}s",
            backoff.as_secs()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// What the daemon is told from outside while it runs.
pub struct Control {
    /// Cancelled on SIGTERM/SIGINT: no new removal starts; the one in flight finishes.
    pub shutdown: CancellationToken,
    /// A new, valid configuration (SIGHUP).
    pub reload: mpsc::UnboundedReceiver<Config>,
}

/// The daemon's connection to Docker and its event follower.
struct Docker {
    engine: DockerEngine,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The daemon: a pass every `interval` until shutdown; Docker being away is waited out.
/// Returns `Ok` on a clean stop.
pub async fn run(
    mut config: Config,
    mut control: Control,
    notifier: &Notifier,
) -> Result<(), Error> {
    let _lock = InstanceLock::take(&config.state_dir)?;
    let mut last_use = LastUse::load(&config.state_dir)?;
    let mut cordoner = Cordoner::new(&config);
    log::info!("starting: {}", describe(&config));
    notifier.set_step_bound(config.timeout + Duration::from_secs(60));
    notifier.alive_for(notifier.watchdog().unwrap_or_default());
    notifier.ready("starting");
    let shutdown = control.shutdown.clone();
    let pinger = async { notifier.feed_watchdog().await };
    let work = async {
        if !config.dry_run {
            // The guard's calls are bounded (credential plugin included): keep pinging meanwhile.
            notifier.alive_for(cordoner.max_call_time());
            match or_shutdown(&shutdown, cordoner.recover()).await {
                Some(Err(e)) if e.is_config() => return Err(e.into()),
                Some(Err(e)) => log::warn!(
                    "cannot check the node for a leftover cordon: {}",
                    error_chain(&e)
                ),
                _ => {}
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut docker: Option<Docker> = None;
        let mut ticker = tokio::time::interval(config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beat = notifier
            .beat_interval()
            .unwrap_or(Duration::from_secs(3600));
        let mut save_due: Option<tokio::time::Instant> = None;
        loop {
            notifier.alive_for(beat * 2);
            let save_at =
                save_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(new) = control.reload.recv() => {
                    notifier.reloading();
                    reload(&mut config, new, &mut cordoner, &mut docker, &mut ticker);
                    notifier.set_step_bound(config.timeout + Duration::from_secs(60));
                    notifier.ready("configuration reloaded");
                }
                Some(event) = rx.recv() => {
                    if let Some(d) = &docker {
                        or_shutdown(&shutdown, last_use.apply(&d.engine, &event)).await;
                        save_due.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                }
                () = tokio::time::sleep_until(save_at), if save_due.is_some() => {
                    save_due = None;
                    save(&mut last_use, config.dry_run);
                }
                () = tokio::time::sleep(beat) => {}
                _ = ticker.tick() => {
                    notifier.update("checking");
                    notifier.alive_for(cordoner.max_call_time());
                    or_shutdown(&shutdown, cordoner.retry_release()).await;
                    if docker.is_none() {
                        match or_shutdown(&shutdown, DockerEngine::connect(config.docker_host.as_deref(), config.timeout)).await {
                            None => break,
                            Some(Ok(engine)) => {
                                log::info!("connected to Docker");
                                let since = last_use.cursor_nanos().unwrap_or_else(now_nanos);
                                let follower = tokio::spawn(follow(engine.clone(), since, tx.clone()));
                                docker = Some(Docker { engine, follower });
                            }
                            Some(Err(e)) => {
                                log::error!("waiting for Docker: {}", error_chain(&e));
                                notifier.status(&format!("waiting for Docker: {e}"));
                                continue;
                            }
                        }
                    }
                    let Some(d) = &docker else { continue };
                    while let Ok(event) = rx.try_recv() {
                        if or_shutdown(&shutdown, last_use.apply(&d.engine, &event)).await.is_none() {
                            break;
                        }
                    }
                    let result = Pass {
                        config: &config,
                        engine: &d.engine,
                        last_use: &mut last_use,
                        cordoner: &mut cordoner,
                        progress: notifier,
                        shutdown: &shutdown,
                    }
                    .run()
                    .await;
                    match result {
                        Ok(report) => {
                            log::info!("{}", report.summary());
                            notifier.status(&format!(
                                "idle: {}; last pass: {}; {}",
                                report.after,
                                report.outcome_text(),
                                cordoner.describe()
                            ));
                        }
                        Err(e) => {
                            log::error!("pass failed: {}", error_chain(&e));
                            notifier.status(&format!("idle; last pass failed: {e}; {}", cordoner.describe()));
                        }
                    }
                    save_due = None;
                    save(&mut last_use, config.dry_run);
                }
            }
        }
        Ok(())
    };
    let result = tokio::select! {
        r = work => r,
        () = pinger => Ok(()),
    };
    notifier.stopping("stopping: releasing the node and saving the state");
    log::info!("stopping");
    release_before_exit(&mut cordoner).await;
    save(&mut last_use, config.dry_run);
    result
}

/// One line describing what the daemon watches.
fn describe(config: &Config) -> String {
    format!(
        "watching {} every {}s ({}, strategy {:?}{})",
        config
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        config.interval.as_secs(),
        config.watermarks,
        config.strategy,
        if config.dry_run { ", dry run" } else { "" }
    )
}

/// Takes a new configuration. What needs a restart to change (the state directory) is kept,
/// with a warning; a new Docker endpoint reconnects; a new node setting rebuilds the cordon
/// guard unless it still holds a cordon.
fn reload(
    config: &mut Config,
    mut new: Config,
    cordoner: &mut Cordoner,
    docker: &mut Option<Docker>,
    ticker: &mut tokio::time::Interval,
) {
    if new.state_dir != config.state_dir {
        log::warn!(
            "state_dir changes only with a restart: keeping {}",
            config.state_dir.display()
        );
        new.state_dir = config.state_dir.clone();
    }
    if new.docker_host != config.docker_host || new.timeout != config.timeout {
        *docker = None;
    }
    if new.interval != config.interval {
        *ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + new.interval, new.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    if cordoner.holds_cordon() {
        log::warn!("keeping the cordon settings until the node is released");
    } else {
        *cordoner = Cordoner::new(&new);
    }
    *config = new;
    log::info!("configuration reloaded: {}", describe(config));
}
