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
use crate::config::{Config, EngineConfig};
use crate::cycle::{self, Member, Pass, Progress, Quiet, Report};
use crate::docker::{self, DockerEngine, Engine, UseEvent};
use crate::error_chain;
use crate::lastuse::{self, InstanceLock, Store, Tables};
use crate::metrics::{self, Exporter, Reconnects};
use crate::node::{self, CordonClock, Cordoner};
use crate::notify::Notifier;
use crate::policy;
use crate::usage::{Meter, PathMeter};

/// Exit code when another instance holds the lock (EX_TEMPFAIL: try again later).
pub const EXIT_LOCKED: u8 = 75;

/// At most one measurement a second after events that may add bytes.
const CHECK_DEBOUNCE: Duration = Duration::from_secs(1);

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
    /// is a warning: `on_cordon_failure` decides later. The guard keeps time on `clock`.
    async fn begin(
        config: &Config,
        lock: Option<InstanceLock>,
        shutdown: &CancellationToken,
        notifier: Option<&Notifier>,
        clock: CordonClock,
    ) -> Result<Self, Error> {
        let mut store = match &lock {
            Some(lock) => lock.store(),
            None => Store::read_only(&config.state_dir)?,
        };
        let tables = store.load(now_ms(), now_nanos());
        let mut cordoner = Cordoner::new(config).with_clock(clock);
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
    fn save(&mut self, dry_run: bool) {
        if dry_run {
            return;
        }
        self.store.save_or_warn(&mut self.tables);
    }

    /// Tries, bounded, to release a cordon (and its fleet slot) still held before the process
    /// exits.
    async fn release_before_exit(&mut self) {
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

/// Connects to `engine`, with its name in the error.
async fn connect(engine: &EngineConfig, timeout: Duration) -> Result<DockerEngine, docker::Error> {
    let connected = DockerEngine::connect(engine.docker_host.as_deref(), timeout).await;
    if let Ok(e) = &connected
        && e.is_podman()
    {
        log::debug!("engine {}: Podman's Docker-compatible API", engine.name);
    }
    connected
}

/// The members of a pass: each connected engine with its configuration and last-use table.
fn members<'a>(
    config: &'a Config,
    connected: &'a [(usize, DockerEngine)],
    tables: &'a mut Tables,
) -> Vec<Member<'a, DockerEngine>> {
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
    let mut s = Startup::begin(config, lock, shutdown, None, clock).await?;
    let mut connected = Vec::new();
    let mut first_error = None;
    for (i, engine) in config.engines.iter().enumerate() {
        match or_shutdown(shutdown, connect(engine, config.timeout))
            .await
            .ok_or(Error::Interrupted)?
        {
            Ok(e) => connected.push((i, e)),
            Err(e) => {
                log::error!("engine {}: {}", engine.name, error_chain(&e));
                first_error.get_or_insert(e);
            }
        }
    }
    if connected.is_empty()
        && let Some(e) = first_error
    {
        return Err(e.into());
    }
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
        meter: &PathMeter::new(config),
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

/// An engine's event, with the engine's name.
type Used = (String, UseEvent);

/// Follows the engine's events into `tx`, reconnecting with backoff whenever the stream ends
/// (Docker restarted), resuming from the last event seen.
async fn follow(
    name: String,
    engine: DockerEngine,
    mut since: i64,
    tx: mpsc::UnboundedSender<Used>,
    reconnects: Reconnects,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut stream = std::pin::pin!(engine.use_events(Some(since), None));
        let mut got_any = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    since = since.max(event.time_nanos);
                    got_any = true;
                    if tx.send((name.clone(), event)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    log::warn!("engine {name}: event stream broke: {}", error_chain(&e));
                    break;
                }
            }
        }
        if got_any {
            backoff = Duration::from_secs(1);
        }
        log::info!(
            "engine {name}: reconnecting to its event stream in {}s",
            backoff.as_secs()
        );
        tokio::time::sleep(backoff).await;
        reconnects.inc();
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
    Used(Used),
    Save,
    Beat,
    Tick,
    /// An event may have added bytes: measure, and clean at once if above high.
    Check,
}

/// The running daemon's state.
struct Daemon<'n> {
    config: Config,
    notifier: &'n Notifier,
    shutdown: CancellationToken,
    start: Startup,
    /// One slot per configured engine, `None` while it is not connected.
    connections: Vec<Option<Connection>>,
    ticker: Interval,
    save_due: Option<Instant>,
    events_tx: mpsc::UnboundedSender<Used>,
    events: mpsc::UnboundedReceiver<Used>,
    quiet: Quiet,
    /// When to measure after an event that may have added bytes (debounced), and what it was.
    check: Option<(Instant, String)>,
    /// When the last such measurement was taken.
    last_check: Option<Instant>,
    metrics: Exporter,
}

/// The daemon: a pass every `interval` until shutdown; Docker being away is waited out.
/// Returns `Ok` on a clean stop.
pub async fn run(config: Config, mut control: Control, notifier: &Notifier) -> Result<(), Error> {
    let lock = Startup::lock(&config)?;
    // Before READY: an address in use fails the start.
    let metrics = Exporter::daemon(&config, &control.shutdown)?;
    log::info!("starting: {}", describe(&config));
    notifier.set_step_bound(step_bound(&config));
    notifier.alive_for(notifier.watchdog().unwrap_or_default());
    notifier.ready("starting");
    let shutdown = control.shutdown.clone();
    let work = async {
        let start =
            Startup::begin(&config, lock, &shutdown, Some(notifier), metrics.clock()).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let connections = config.engines.iter().map(|_| None).collect();
        let mut daemon = Daemon {
            ticker: ticker(config.interval, Instant::now()),
            config,
            notifier,
            shutdown: shutdown.clone(),
            connections,
            start,
            save_due: None,
            events_tx,
            events,
            quiet: Quiet::default(),
            check: None,
            last_check: None,
            metrics,
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
                Wake::Tick => self.tick(None).await,
                Wake::Check => self.check().await,
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
        let far = Instant::now() + Duration::from_secs(3600);
        let save_at = self.save_due.unwrap_or(far);
        let check_at = self.check.as_ref().map_or(far, |(at, _)| *at);
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => Wake::Stop,
            Some(new) = reload.recv() => Wake::Reload(Box::new(new)),
            Some(event) = self.events.recv() => Wake::Used(event),
            () = tokio::time::sleep_until(save_at), if self.save_due.is_some() => Wake::Save,
            () = tokio::time::sleep_until(check_at), if self.check.is_some() => Wake::Check,
            () = tokio::time::sleep(beat) => Wake::Beat,
            _ = self.ticker.tick() => Wake::Tick,
        }
    }

    /// An engine event: last use moves on; the state is saved a moment later (events come in
    /// bursts).
    async fn used(&mut self, (name, event): &Used) {
        let Some(engine) = self.connected(name).cloned() else {
            return;
        };
        let last_use = self.start.tables.engine_mut(name);
        or_shutdown(&self.shutdown, cycle::apply_event(&engine, last_use, event)).await;
        self.save_due
            .get_or_insert(Instant::now() + Duration::from_secs(2));
        if policy::may_add_bytes(event, &self.config) && self.check.is_none() {
            // At most one check a second: a burst of pulls is one measurement.
            let at = self
                .last_check
                .map_or_else(Instant::now, |t| t + CHECK_DEBOUNCE)
                .max(Instant::now());
            self.check = Some((
                at,
                format!("{} of {} on engine {name}", event.action, event.image),
            ));
        }
    }

    /// After an event that may have added bytes: measure (cheap in relative mode), and run a
    /// pass at once when usage is at or above the high watermark.
    async fn check(&mut self) {
        let Some((_, trigger)) = self.check.take() else {
            return;
        };
        self.last_check = Some(Instant::now());
        match PathMeter::new(&self.config).measure().await {
            Ok(m) if policy::above_high(&m, &self.config.watermarks) => {
                log::info!("usage {m} after a {trigger}: at or above high, cleaning now");
                self.tick(Some(trigger)).await;
            }
            Ok(m) => log::debug!("usage {m} after a {trigger}: below high"),
            Err(e) => log::debug!("cannot measure after a {trigger}: {}", error_chain(&e)),
        }
    }

    /// The connection of engine `name`, if connected.
    fn connected(&self, name: &str) -> Option<&DockerEngine> {
        let i = self.config.engines.iter().position(|e| e.name == name)?;
        self.connections.get(i)?.as_ref().map(|c| &c.engine)
    }

    /// A tick (or a check that found usage above high, `trigger` saying what happened): retry a
    /// pending release, connect what is not connected, run a pass over the engines that
    /// answer, save.
    async fn tick(&mut self, trigger: Option<String>) {
        if let Some(t) = &trigger {
            log::info!("pass started by a {t}");
        }
        self.notifier.step("checking");
        self.notifier.alive_for(self.start.cordoner.max_call_time());
        or_shutdown(&self.shutdown, self.start.cordoner.retry_release()).await;
        let down = self.connect().await;
        if self.connections.iter().all(Option::is_none) {
            self.notifier
                .status(&format!("waiting for Docker: {}", down.join("; ")));
            return;
        }
        while let Ok(used) = self.events.try_recv() {
            self.used(&used).await;
            if self.shutdown.is_cancelled() {
                break;
            }
        }
        let connected: Vec<(usize, DockerEngine)> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?.engine.clone())))
            .collect();
        let result = Pass {
            config: &self.config,
            members: members(&self.config, &connected, &mut self.start.tables),
            meter: &PathMeter::new(&self.config),
            guard: &mut self.start.cordoner,
            progress: &Watched(self.notifier),
            shutdown: &self.shutdown,
            now_ms: now_ms(),
            quiet: &mut self.quiet,
        }
        .run()
        .await;
        self.metrics.pass(&result, now_ms());
        let cordon = self.start.cordoner.describe();
        let down = if down.is_empty() {
            String::new()
        } else {
            format!("; down: {}", down.join("; "))
        };
        match result {
            Ok(report) => {
                log::info!("{}", report.summary());
                self.notifier.status(&format!(
                    "idle: {}; last pass: {}{down}; {cordon}",
                    report.after,
                    report.outcome_text(),
                ));
            }
            Err(e) => {
                log::error!("pass failed: {}", error_chain(&e));
                self.notifier
                    .status(&format!("idle; last pass failed: {e}{down}; {cordon}"));
            }
        }
        self.save_due = None;
        // The pass measured: a check pending from before it is moot.
        self.check = None;
        self.start.save(self.config.dry_run);
    }

    /// Connects every engine not connected yet and starts following its events; returns the
    /// engines still down, each with why.
    async fn connect(&mut self) -> Vec<String> {
        let mut down = Vec::new();
        for i in 0..self.config.engines.len() {
            if self.connections[i].is_some() {
                continue;
            }
            let engine = &self.config.engines[i];
            match or_shutdown(&self.shutdown, connect(engine, self.config.timeout)).await {
                None => break,
                Some(Ok(connected)) => {
                    log::info!("engine {}: connected", engine.name);
                    // What the engine did while we were away is applied before the first plan:
                    // the image used during the downtime must not look the oldest.
                    let last_use = self.start.tables.engine_mut(&engine.name);
                    match or_shutdown(
                        &self.shutdown,
                        cycle::replay(&connected, last_use, now_nanos()),
                    )
                    .await
                    {
                        None => break,
                        Some(Ok(n)) => log::debug!(
                            "engine {}: replayed {n} events since the last run",
                            engine.name
                        ),
                        Some(Err(e)) => log::warn!(
                            "engine {}: cannot replay its events since the last run: {}",
                            engine.name,
                            error_chain(&e)
                        ),
                    }
                    let since = last_use.cursor_nanos().unwrap_or_else(now_nanos);
                    let follower = tokio::spawn(follow(
                        engine.name.clone(),
                        connected.clone(),
                        since,
                        self.events_tx.clone(),
                        self.metrics.reconnects(&engine.name),
                    ));
                    self.connections[i] = Some(Connection {
                        engine: connected,
                        follower,
                    });
                }
                Some(Err(e)) => {
                    log::error!(
                        "engine {}: waiting for it: {}",
                        engine.name,
                        error_chain(&e)
                    );
                    down.push(format!("{}: {e}", engine.name));
                }
            }
        }
        down
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
        if new.engines != config.engines || new.timeout != config.timeout {
            self.connections = new.engines.iter().map(|_| None).collect();
        }
        if new.interval != config.interval {
            self.ticker = ticker(new.interval, Instant::now() + new.interval);
        }
        if self.start.cordoner.holds_cordon() || self.start.cordoner.holds_slot() {
            log::warn!("keeping the cordon settings until the node is released");
        } else {
            self.start.cordoner = Cordoner::new(&new).with_clock(self.start.cordoner.clock());
        }
        self.metrics.reload(&new);
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
