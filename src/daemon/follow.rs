//! The daemon's engines: connecting to each (and, for `once`, to all of them at once), catching
//! up with what an engine did while nobody listened, and following its events from there in a
//! task of its own ([`Connection`]), reconnecting with backoff. Applies no event itself: the
//! events go to the loop.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Error, or_shutdown};
use crate::clock::now_nanos;
use crate::config::{Config, EngineConfig};
use crate::cycle;
use crate::docker::{self, AnyEngine, Engine, UseEvent};
use crate::error_chain;
use crate::lastuse::LastUse;
use crate::metrics::Reconnects;

/// An engine's event, with the engine's name.
pub(super) type Used = (String, UseEvent);

/// The daemon's connection to Docker and its event follower.
pub(super) struct Connection {
    /// The engine, connected.
    pub(super) engine: AnyEngine,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl Connection {
    /// Starts following `engine`'s events from `since` into `tx` (see [`follow`]).
    pub(super) fn follow(
        name: String,
        engine: AnyEngine,
        since: i64,
        tx: mpsc::UnboundedSender<Used>,
        reconnects: Reconnects,
    ) -> Connection {
        let follower = tokio::spawn(follow(name, engine.clone(), since, tx, reconnects));
        Connection { engine, follower }
    }
}

/// Connects to `engine`, with its name in the error.
pub(super) async fn connect(
    engine: &EngineConfig,
    timeout: Duration,
) -> Result<AnyEngine, docker::Error> {
    let connected = AnyEngine::connect(engine, timeout).await;
    if let Ok(e) = &connected {
        log::debug!("engine {}: {}", engine.name, e.describe());
        for warning in cycle::storage_warnings(engine, e.storage()) {
            log::warn!("{warning}");
        }
    }
    connected
}

/// Connects every configured engine for one pass (`once`), each in the configured order, with
/// their index in the configuration; an engine that cannot be reached is logged and left out.
/// Fails when none can be reached, or on shutdown.
pub(super) async fn connect_all(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Vec<(usize, AnyEngine)>, Error> {
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
    Ok(connected)
}

/// Applies what the engine `name` did while we were away, before the first plan: the image used
/// during the downtime must not look the oldest. A failure is a warning (the events come later
/// anyway); `None` on shutdown.
pub(super) async fn catch_up(
    name: &str,
    engine: &AnyEngine,
    last_use: &mut LastUse,
    shutdown: &CancellationToken,
) -> Option<()> {
    match or_shutdown(shutdown, cycle::replay(engine, last_use, now_nanos())).await {
        None => return None,
        Some(Ok(n)) => log::debug!("engine {name}: replayed {n} events since the last run"),
        Some(Err(e)) => log::warn!(
            "engine {name}: cannot replay its events since the last run: {}",
            error_chain(&e)
        ),
    }
    Some(())
}

/// Follows the engine's events into `tx`, reconnecting with backoff whenever the stream ends
/// (Docker restarted), resuming from the last event seen.
async fn follow(
    name: String,
    engine: AnyEngine,
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
