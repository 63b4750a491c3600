//! The long-running loop (`run`) and the one-shot pass (`once`), with the start-up they share:
//! the single-instance lock, the state, the cordon guard and its recovery. The loop waits for
//! the next thing to happen (a tick, an engine event, a reload, a save, shutdown) and hands it
//! to one handler each; it feeds the watchdog, reads the clock and saves the state. No cleaning
//! logic here.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::cycle::{self, Pass, Progress, Report};
use crate::docker::{self, DockerEngine, Engine, UseEvent};
use crate::error_chain;
use crate::lastuse::{self, InstanceLock, LastUse, Store, Tables};
use crate::node::{self, Cordoner};
use crate::notify::Notifier;
use crate::usage::PathMeter;

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
}

impl Error {
    /// True when the configuration is at fault (exit 78).
    pub fn is_config(&self) -> bool {
        match self {
            Error::Node(e) => e.is_config(),
            Error::State(e) => e.is_config(),
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

/// What `once` and `run` set up before their first pass.
struct Startup {
    /// `None` for a dry run, which changes nothing and may run beside the daemon.
    _lock: Option<InstanceLock>,
    store: Store,
    tables: Tables,
    cordoner: Cordoner,
}

impl Startup {
    /// Takes the lock, unless dry run (before anything else: a second instance must be refused
    /// before it tells systemd anything).
    fn lock(config: &Config) -> Result<Option<InstanceLock>, Error> {
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
    /// is a warning: `on_cordon_failure` decides later.
    async fn begin(
        config: &Config,
        lock: Option<InstanceLock>,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        let mut store = match &lock {
            Some(lock) => lock.store(),
            None => Store::read_only(&config.state_dir)?,
        };
        let tables = store.load(now_ms(), now_nanos());
        let mut cordoner = Cordoner::new(config);
        if !config.dry_run {
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
    fn save(&mut self, dry_run: bool) {
        if dry_run {
            return;
        }
        self.store.save_or_warn(&mut self.tables);
    }

    /// Tries, bounded, to release a cordon still held before the process exits.
    async fn release_before_exit(&mut self) {
        for _ in 0..3 {
            if !self.cordoner.holds_cordon() {
                return;
            }
            self.cordoner.retry_release().await;
        }
        if self.cordoner.holds_cordon() {
            log::error!("exiting while the node is still cordoned by us; the next start lifts it");
        }
    }
}

/// One pass and out (`once`): replays the events since the last run so that last use is up
/// to date, cleans, saves the state. Fails when Docker or a watched path cannot be reached.
pub async fn once(config: &Config, shutdown: &CancellationToken) -> Result<Report, Error> {
    let lock = Startup::lock(config)?;
    let mut s = Startup::begin(config, lock, shutdown).await?;
    let engine = or_shutdown(
        shutdown,
        DockerEngine::connect(config.docker_host.as_deref(), config.timeout),
    )
    .await
    .ok_or(Error::Interrupted)??;
    let last_use = s.tables.default_engine();
    let replayed = or_shutdown(shutdown, cycle::replay(&engine, last_use, now_nanos()))
        .await
        .ok_or(Error::Interrupted)??;
    log::debug!("replayed {replayed} Docker events since the last run");
    let report = Pass {
        config,
        engine: &engine,
        meter: &PathMeter::new(config),
        last_use,
        guard: &mut s.cordoner,
        progress: &(),
        shutdown,
        now_ms: now_ms(),
    }
    .run()
    .await;
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

/// The daemon's connection to Docker and its event follower.
struct Connection {
    engine: DockerEngine,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// Follows the engine's events into `tx`, reconnecting with backoff whenever the stream ends
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

/// The pass's progress as the notifier shows it: `STATUS=`, and the promise to the watchdog
/// that the next step comes within its bound.
struct Watched<'a>(&'a Notifier);

impl Progress for Watched<'_> {
    fn update(&self, status: &str) {
        self.0.step(status);
    }
}

/// What woke the loop.
enum Wake {
    Stop,
    Reload(Box<Config>),
    Used(UseEvent),
    Save,
    Beat,
    Tick,
}

/// The running daemon's state.
struct Daemon<'n> {
    config: Config,
    notifier: &'n Notifier,
    shutdown: CancellationToken,
    start: Startup,
    connection: Option<Connection>,
    ticker: Interval,
    save_due: Option<Instant>,
    events_tx: mpsc::UnboundedSender<UseEvent>,
    events: mpsc::UnboundedReceiver<UseEvent>,
}

/// The daemon: a pass every `interval` until shutdown; Docker being away is waited out.
/// Returns `Ok` on a clean stop.
pub async fn run(config: Config, mut control: Control, notifier: &Notifier) -> Result<(), Error> {
    let lock = Startup::lock(&config)?;
    log::info!("starting: {}", describe(&config));
    notifier.set_step_bound(step_bound(&config));
    notifier.alive_for(notifier.watchdog().unwrap_or_default());
    notifier.ready("starting");
    let shutdown = control.shutdown.clone();
    let work = async {
        let start = Startup::begin(&config, lock, &shutdown).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut daemon = Daemon {
            ticker: ticker(config.interval, Instant::now()),
            config,
            notifier,
            shutdown: shutdown.clone(),
            start,
            connection: None,
            save_due: None,
            events_tx,
            events,
        };
        daemon.serve(&mut control.reload).await;
        Ok::<_, Error>(daemon)
    };
    let started = tokio::select! {
        daemon = work => daemon,
        // The feeder never returns; this branch only keeps it running beside the loop.
        () = notifier.feed_watchdog() => return Ok(()),
    };
    notifier.stopping("stopping: releasing the node and saving the state");
    let mut daemon = started?;
    log::info!("stopping");
    daemon.start.release_before_exit().await;
    daemon.start.save(daemon.config.dry_run);
    Ok(())
}

/// How long one step of a pass may take at most: Docker's timeout plus a margin.
fn step_bound(config: &Config) -> Duration {
    config.timeout + Duration::from_secs(60)
}

/// A ticker that first fires at `start` and then every `interval`; a late tick is delayed,
/// never bunched.
fn ticker(interval: Duration, start: Instant) -> Interval {
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

impl Daemon<'_> {
    /// The loop, until shutdown.
    async fn serve(&mut self, reload: &mut mpsc::UnboundedReceiver<Config>) {
        loop {
            match self.wake(reload).await {
                Wake::Stop => return,
                Wake::Reload(new) => self.reload(*new),
                Wake::Used(event) => self.used(&event).await,
                Wake::Save => {
                    self.save_due = None;
                    self.start.save(self.config.dry_run);
                }
                Wake::Beat => {}
                Wake::Tick => self.tick().await,
            }
        }
    }

    /// Waits for the next thing to do, promising the watchdog to be back within two beats.
    async fn wake(&mut self, reload: &mut mpsc::UnboundedReceiver<Config>) -> Wake {
        let beat = self
            .notifier
            .beat_interval()
            .unwrap_or(Duration::from_secs(3600));
        self.notifier.alive_for(beat * 2);
        let save_at = self
            .save_due
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Wake::Stop,
            Some(new) = reload.recv() => Wake::Reload(Box::new(new)),
            Some(event) = self.events.recv() => Wake::Used(event),
            () = tokio::time::sleep_until(save_at), if self.save_due.is_some() => Wake::Save,
            () = tokio::time::sleep(beat) => Wake::Beat,
            _ = self.ticker.tick() => Wake::Tick,
        }
    }

    /// An engine event: last use moves on; the state is saved a moment later (events come in
    /// bursts).
    async fn used(&mut self, event: &UseEvent) {
        let Some(c) = &self.connection else { return };
        let last_use = self.start.tables.default_engine();
        or_shutdown(
            &self.shutdown,
            cycle::apply_event(&c.engine, last_use, event),
        )
        .await;
        self.save_due
            .get_or_insert(Instant::now() + Duration::from_secs(2));
    }

    /// A tick: retry a pending release, connect if needed, run a pass, save.
    async fn tick(&mut self) {
        self.notifier.step("checking");
        or_shutdown(&self.shutdown, self.start.cordoner.retry_release()).await;
        if self.connection.is_none() && !self.connect().await {
            return;
        }
        let Some(c) = &self.connection else { return };
        let last_use = self.start.tables.default_engine();
        while let Ok(event) = self.events.try_recv() {
            if or_shutdown(
                &self.shutdown,
                cycle::apply_event(&c.engine, last_use, &event),
            )
            .await
            .is_none()
            {
                break;
            }
        }
        let result = Pass {
            config: &self.config,
            engine: &c.engine,
            meter: &PathMeter::new(&self.config),
            last_use,
            guard: &mut self.start.cordoner,
            progress: &Watched(self.notifier),
            shutdown: &self.shutdown,
            now_ms: now_ms(),
        }
        .run()
        .await;
        let cordon = self.start.cordoner.describe();
        match result {
            Ok(report) => {
                log::info!("{}", report.summary());
                self.notifier.status(&format!(
                    "idle: {}; last pass: {}; {cordon}",
                    report.after,
                    report.outcome_text(),
                ));
            }
            Err(e) => {
                log::error!("pass failed: {}", error_chain(&e));
                self.notifier
                    .status(&format!("idle; last pass failed: {e}; {cordon}"));
            }
        }
        self.save_due = None;
        self.start.save(self.config.dry_run);
    }

    /// Connects to Docker and starts following its events; false when Docker is not there (or
    /// shutdown came first).
    async fn connect(&mut self) -> bool {
        let connecting =
            DockerEngine::connect(self.config.docker_host.as_deref(), self.config.timeout);
        match or_shutdown(&self.shutdown, connecting).await {
            None => false,
            Some(Ok(engine)) => {
                log::info!("connected to Docker");
                let last_use: &LastUse = self.start.tables.default_engine();
                let since = last_use.cursor_nanos().unwrap_or_else(now_nanos);
                let follower = tokio::spawn(follow(engine.clone(), since, self.events_tx.clone()));
                self.connection = Some(Connection { engine, follower });
                true
            }
            Some(Err(e)) => {
                log::error!("waiting for Docker: {}", error_chain(&e));
                self.notifier.status(&format!("waiting for Docker: {e}"));
                false
            }
        }
    }

    /// Takes a new configuration. What needs a restart to change (the state directory) is
    /// kept, with a warning; a new Docker endpoint reconnects; a new node setting rebuilds the
    /// cordon guard unless it still holds a cordon.
    fn reload(&mut self, mut new: Config) {
        self.notifier.reloading();
        let config = &mut self.config;
        if new.state_dir != config.state_dir {
            log::warn!(
                "state_dir changes only with a restart: keeping {}",
                config.state_dir.display()
            );
            new.state_dir = config.state_dir.clone();
        }
        if new.docker_host != config.docker_host || new.timeout != config.timeout {
            self.connection = None;
        }
        if new.interval != config.interval {
            self.ticker = ticker(new.interval, Instant::now() + new.interval);
        }
        if self.start.cordoner.holds_cordon() {
            log::warn!("keeping the cordon settings until the node is released");
        } else {
            self.start.cordoner = Cordoner::new(&new);
        }
        *config = new;
        log::info!("configuration reloaded: {}", describe(config));
        self.notifier.set_step_bound(step_bound(config));
        self.notifier.ready("configuration reloaded");
    }
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
