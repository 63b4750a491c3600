//! The long-running loop (`run`) and the one-shot pass (`once`): connect to Docker, follow its
//! events, tick every interval, run a pass, keep the state, stop cleanly. No cleaning logic here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, Pass, Progress, Report};
use crate::docker::{self, DockerEngine, UseEvent};
use crate::lastuse::{self, LastUse};
use crate::error_chain;
use crate::node::{self, Cordoner};

/// Errors that stop the daemon (or fail `once`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
}

impl Error {
    /// True when the configuration is at fault (exit 78).
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Node(e) if e.is_config())
    }
}

/// Unix nanoseconds now.
fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One pass and out (`once`): replays the events since the last run so that last use is up
/// to date, cleans, saves the state. Fails when Docker or a watched path cannot be reached.
pub async fn once(config: &Config, shutdown: &CancellationToken) -> Result<Report, Error> {
    let mut last_use = LastUse::load(&config.state_dir)?;
    let mut cordoner = Cordoner::new(config);
    let engine = DockerEngine::connect(config.docker_host.as_deref(), config.timeout).await?;
    if !config.dry_run {
        cordoner.recover().await?;
    }
    let replayed = last_use.replay(&engine, now_nanos()).await?;
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
        log::info!("reconnecting to Docker's event stream in {}s", backoff.as_secs());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The daemon: a pass every `interval` until `shutdown`; Docker being away is waited out. Returns
/// `Ok` on a clean stop.
pub async fn run(config: &Config, shutdown: &CancellationToken, progress: &dyn Progress) -> Result<(), Error> {
    let mut last_use = LastUse::load(&config.state_dir)?;
    let mut cordoner = Cordoner::new(config);
    log::info!(
        "starting: watching {} every {}s ({}, strategy {:?}{})",
        config.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        config.interval.as_secs(),
        config.watermarks,
        config.strategy,
        if config.dry_run { ", dry run" } else { "" }
    );
    log::info!("{}", cordoner.describe());
    if !config.dry_run {
        if let Err(e) = cordoner.recover().await {
            if e.is_config() {
                return Err(e.into());
            }
            log::warn!("cannot check the node for a leftover cordon: {}", error_chain(&e));
        }
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut engine: Option<DockerEngine> = None;
    let mut follower: Option<tokio::task::JoinHandle<()>> = None;
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut save_due: Option<tokio::time::Instant> = None;
    progress.update("starting");

    loop {
        let save_at = save_due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(event) = rx.recv() => {
                if let Some(engine) = &engine {
                    last_use.apply(engine, &event).await;
                    save_due.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(2));
                }
            }
            () = tokio::time::sleep_until(save_at), if save_due.is_some() => {
                save_due = None;
                save(&mut last_use, config.dry_run);
            }
            _ = ticker.tick() => {
                cordoner.retry_release().await;
                if engine.is_none() {
                    match DockerEngine::connect(config.docker_host.as_deref(), config.timeout).await {
                        Ok(connected) => {
                            log::info!("connected to Docker");
                            let since = last_use.cursor_nanos().unwrap_or_else(now_nanos);
                            follower = Some(tokio::spawn(follow(connected.clone(), since, tx.clone())));
                            engine = Some(connected);
                        }
                        Err(e) => {
                            log::error!("waiting for Docker: {}", error_chain(&e));
                            progress.update("waiting for Docker");
                            continue;
                        }
                    }
                }
                let Some(engine) = &engine else { continue };
                while let Ok(event) = rx.try_recv() {
                    last_use.apply(engine, &event).await;
                }
                let result = Pass {
                    config,
                    engine,
                    last_use: &mut last_use,
                    cordoner: &mut cordoner,
                    progress,
                    shutdown,
                }
                .run()
                .await;
                match result {
                    Ok(report) => {
                        log::info!("{}", report.summary());
                        progress.update(&format!("idle: {}", report.after));
                    }
                    Err(e) => {
                        log::error!("pass failed: {}", error_chain(&e));
                        progress.update(&format!("last pass failed: {e}"));
                    }
                }
                save_due = None;
                save(&mut last_use, config.dry_run);
            }
        }
    }

    log::info!("stopping");
    progress.update("stopping");
    if let Some(f) = follower {
        f.abort();
    }
    release_before_exit(&mut cordoner).await;
    save(&mut last_use, config.dry_run);
    Ok(())
}
