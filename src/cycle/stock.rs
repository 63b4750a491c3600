//! Taking stock, the one way `once`, the daemon's passes and `status` do it: bring last use up
//! to date from the engine's events, list what the engine holds, reconcile, and plan.

use futures_util::StreamExt;

use crate::config::Config;
use crate::docker::{self, Engine, Inventory, UseEvent};
use crate::lastuse::LastUse;
use crate::policy::{self, Plan};
use crate::usage::Measurement;

/// What an engine holds now, and the plan for it.
#[derive(Debug, Clone)]
pub struct Stock {
    /// The engine's images and containers.
    pub inventory: Inventory,
    /// What a pass would remove, in order, and what stays.
    pub plan: Plan,
}

/// Lists what `engine` holds, reconciles `last_use` with it and plans against the shortfall of
/// `usage`, at `now_ms`.
pub async fn take_stock<E: Engine>(
    engine: &E,
    last_use: &mut LastUse,
    config: &Config,
    usage: &Measurement,
    now_ms: i64,
) -> Result<Stock, docker::Error> {
    let inventory = engine
        .inventory(!config.container_min_age.is_zero())
        .await?;
    last_use.reconcile(&inventory, now_ms);
    let need = policy::need(usage, &config.watermarks);
    let plan = policy::plan(&inventory, last_use, config, need, now_ms);
    Ok(Stock { inventory, plan })
}

/// Applies one event to `last_use`, resolving the image it names when the event names it by
/// reference (`app:1`); an image that no longer exists is ignored.
pub async fn apply_event<E: Engine>(engine: &E, last_use: &mut LastUse, event: &UseEvent) {
    let resolved = if event.deleted {
        None
    } else if let Some(id) = event.image_id() {
        Some(id.to_string())
    } else {
        match engine.resolve_image(&event.image).await {
            Ok(id) => id,
            Err(e) => {
                log::debug!(
                    "cannot resolve image {} of a {} event: {}",
                    event.image,
                    event.action,
                    crate::error_chain(&e)
                );
                None
            }
        }
    };
    last_use.apply(event, resolved.as_deref());
}

/// Replays the engine's buffered events from the table's cursor up to `until_nanos` (what
/// happened since the last run), then moves the cursor there. On a first start there is nothing
/// to replay: the cursor starts at `until_nanos`. Returns how many events were applied.
pub async fn replay<E: Engine>(
    engine: &E,
    last_use: &mut LastUse,
    until_nanos: i64,
) -> Result<usize, docker::Error> {
    let mut applied = 0;
    // Docker refuses a `since` after `until` (a clock step back, or a cursor saved by a run a
    // moment ago): then there is nothing to replay.
    if let Some(since) = last_use.cursor_nanos().filter(|since| *since < until_nanos) {
        let events: Vec<_> = engine
            .use_events(Some(since), Some(until_nanos))
            .collect()
            .await;
        for event in events {
            apply_event(engine, last_use, &event?).await;
            applied += 1;
        }
    }
    last_use.advance_cursor(until_nanos);
    Ok(applied)
}
