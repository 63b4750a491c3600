//! The running daemon ([`Daemon`]): the loop that waits for the next thing to happen (a tick,
//! an engine event, a reload, a save, a check after an event that may have added bytes,
//! shutdown) and its one handler for each. It feeds the watchdog, reads the clock, saves the
//! state and keeps the engines connected; the cleaning is the pass's (`cycle`), the decisions
//! the policy's.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::follow::{Connection, Used, catch_up, connect};
use super::startup::Startup;
use super::{members, or_shutdown};
use crate::clock::{now_ms, now_nanos};
use crate::config::Config;
use crate::cycle::{self, Pass, Progress, Quiet, Report};
use crate::docker::AnyEngine;
use crate::docker::Engine as _;
use crate::error_chain;
use crate::metrics::Exporter;
use crate::node::Cordoner;
use crate::notify::Notifier;
use crate::policy;
use crate::usage::{Meter, PathMeter};

/// At most one measurement a second after events that may add bytes.
const CHECK_DEBOUNCE: Duration = Duration::from_secs(1);
/// A check is made this long after the event, not at once: the engine sends the event of a
/// `docker load` (and of an import) before it removes the tarball it unpacked into its data
/// root's tmp dir, and a measurement taken then counts those bytes, so that a pass removed
/// images to make room for a tarball that was about to go (measured on the real-binary
/// benchmark, `scripts/bench-trace.sh`).
const CHECK_SETTLE: Duration = Duration::from_secs(1);

/// When to measure after an event at `now` that may have added bytes, the last such check
/// having been at `last`: once the engine's own temporary files are gone, and at most once a
/// [`CHECK_DEBOUNCE`].
fn check_at(now: Instant, last: Option<Instant>) -> Instant {
    let settled = now + CHECK_SETTLE;
    last.map_or(settled, |t| (t + CHECK_DEBOUNCE).max(settled))
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
pub(super) struct Daemon<'n> {
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

/// How long one step of a pass may take at most: Docker's timeout plus a margin.
pub(super) fn step_bound(config: &Config) -> Duration {
    config.timeout + Duration::from_secs(60)
}

/// A ticker that first fires at `start` and then every `interval`; a late tick is delayed,
/// never bunched.
fn ticker(interval: Duration, start: Instant) -> Interval {
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

impl<'n> Daemon<'n> {
    /// The daemon after its start-up, no engine connected yet; the first tick is now.
    pub(super) fn new(
        config: Config,
        notifier: &'n Notifier,
        shutdown: CancellationToken,
        start: Startup,
        metrics: Exporter,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let connections = config.engines.iter().map(|_| None).collect();
        Daemon {
            ticker: ticker(config.interval, Instant::now()),
            config,
            notifier,
            shutdown,
            connections,
            start,
            save_due: None,
            events_tx,
            events,
            quiet: Quiet::default(),
            check: None,
            last_check: None,
            metrics,
        }
    }
}

impl Daemon<'_> {
    /// The loop, until shutdown.
    pub(super) async fn serve(&mut self, reload: &mut mpsc::UnboundedReceiver<Config>) {
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
            let at = check_at(Instant::now(), self.last_check);
            self.check = Some((
                at,
                format!(
                    "{} of {} on engine {name}",
                    with_article(&event.action),
                    event.image
                ),
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
        let now = now_ms();
        let arrivals = policy::headroom::arrivals(self.start.tables.all(), &self.config, now);
        match self.meter().measure().await {
            Ok(m)
                if policy::above_high(
                    &m,
                    &policy::headroom::effective(&self.config, &arrivals, &m, now).0,
                ) =>
            {
                log::info!("usage {m} after {trigger}: at or above high, cleaning now");
                self.tick(Some(trigger)).await;
            }
            Ok(m) => log::debug!("usage {m} after {trigger}: below high"),
            Err(e) => log::debug!("cannot measure after {trigger}: {}", error_chain(&e)),
        }
    }

    /// The meter of the configured paths and of the places the connected engines named.
    fn meter(&self) -> PathMeter {
        cycle::meter_for(
            &self.config,
            self.connections
                .iter()
                .flatten()
                .map(|c| c.engine.storage()),
        )
    }

    /// The connection of engine `name`, if connected.
    fn connected(&self, name: &str) -> Option<&AnyEngine> {
        let i = self.config.engines.iter().position(|e| e.name == name)?;
        self.connections.get(i)?.as_ref().map(|c| &c.engine)
    }

    /// A tick (or a check that found usage above high, `trigger` saying what happened): retry a
    /// pending release, connect what is not connected, run a pass over the engines that
    /// answer, show how it went, save.
    async fn tick(&mut self, trigger: Option<String>) {
        if let Some(t) = &trigger {
            log::info!("pass started by {t}");
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
        self.drain_events().await;
        let result = self.pass().await;
        self.metrics.pass(&result, now_ms());
        self.show(&result, &down);
        self.save_due = None;
        // The pass measured: a check pending from before it is moot.
        self.check = None;
        self.start.save(self.config.dry_run);
    }

    /// Applies the events that came before the pass, so that it plans with them.
    async fn drain_events(&mut self) {
        while let Ok(used) = self.events.try_recv() {
            self.used(&used).await;
            if self.shutdown.is_cancelled() {
                break;
            }
        }
    }

    /// One pass over the engines connected now.
    async fn pass(&mut self) -> Result<Report, cycle::Error> {
        let connected: Vec<(usize, AnyEngine)> = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?.engine.clone())))
            .collect();
        let meter = self.meter();
        Pass {
            config: &self.config,
            members: members(&self.config, &connected, &mut self.start.tables),
            meter: &meter,
            guard: &mut self.start.cordoner,
            progress: &Watched(self.notifier),
            shutdown: &self.shutdown,
            now_ms: now_ms(),
            quiet: &mut self.quiet,
        }
        .run()
        .await
    }

    /// How the pass went, in the log and in `STATUS=`, with the engines `down` and the cordon.
    fn show(&self, result: &Result<Report, cycle::Error>, down: &[String]) {
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
    }

    /// Connects every engine not connected yet, catches up with its events and starts following
    /// them; returns the engines still down, each with why.
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
                    let last_use = self.start.tables.engine_mut(&engine.name);
                    if catch_up(&engine.name, &connected, last_use, &self.shutdown)
                        .await
                        .is_none()
                    {
                        break;
                    }
                    let since = last_use.cursor_nanos().unwrap_or_else(now_nanos);
                    self.connections[i] = Some(Connection::follow(
                        engine.name.clone(),
                        connected,
                        since,
                        self.events_tx.clone(),
                        self.metrics.reconnects(&engine.name),
                    ));
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
            self.start.cordoner = Cordoner::new(&new)
                .with_clock(self.start.cordoner.clock())
                .with_exit(false, self.shutdown.clone());
        }
        self.metrics.reload(&new);
        *config = new;
        log::info!("configuration reloaded: {}", describe(config));
        self.notifier.set_step_bound(step_bound(config));
        self.notifier.ready("configuration reloaded");
    }

    /// Releases the node and saves the state, before the process exits.
    pub(super) async fn stop(mut self) {
        self.start.release_before_exit().await;
        self.start.save(self.config.dry_run);
    }
}

/// One line describing what the daemon watches.
pub(super) fn describe(config: &Config) -> String {
    format!(
        "watching {} every {}s ({}, strategy {}{})",
        config
            .paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        config.interval.as_secs(),
        config.watermarks,
        config.strategy.name(),
        if config.dry_run { ", dry run" } else { "" }
    )
}

/// An engine's action as a noun with its article: `a pull`, `an import`.
fn with_article(action: &str) -> String {
    let vowel = action
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {action}", if vowel { "an" } else { "a" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_waits_for_the_engines_temporary_files_and_comes_at_most_once_a_second() {
        let now = Instant::now();
        // A quiet engine: not at once (a load's tarball is still in the tmp dir), a moment later.
        assert_eq!(check_at(now, None), now + CHECK_SETTLE);
        assert_eq!(
            check_at(now, Some(now - Duration::from_secs(60))),
            now + CHECK_SETTLE
        );
        // Right after a check: no sooner than a second after it, nor than the settling.
        let last = now - Duration::from_millis(200);
        assert_eq!(
            check_at(now, Some(last)),
            (last + CHECK_DEBOUNCE).max(now + CHECK_SETTLE)
        );
        assert!(check_at(now, Some(last)) >= now + CHECK_SETTLE);
    }

    #[test]
    fn actions_take_their_article_and_the_strategy_its_own_name() {
        assert_eq!(with_article("import"), "an import");
        assert_eq!(with_article("pull"), "a pull");
        assert_eq!(with_article("load"), "a load");
        assert_eq!(with_article(""), "a ");
        let line = describe(&Config::default());
        assert!(line.contains("strategy lru2"), "{line}");
    }
}
