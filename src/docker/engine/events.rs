//! The engine's event stream ([`DockerEngine::events_since`]): asking for the container and
//! image events of a time range, and mapping each to a [`UseEvent`] or dropping it, with
//! Podman's differences from Docker. Keeps no state: `lastuse` is fed what comes out.

use std::collections::HashMap;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use futures_util::{Stream, StreamExt};

use super::DockerEngine;
use crate::docker::{Error, UseEvent};

impl DockerEngine {
    /// [`crate::docker::Engine::use_events`]: see the trait.
    pub(super) fn events_since(
        &self,
        since_nanos: Option<i64>,
        until_nanos: Option<i64>,
    ) -> impl Stream<Item = Result<UseEvent, Error>> + Send + 'static {
        let filters = HashMap::from([(
            "type".to_string(),
            vec!["container".to_string(), "image".to_string()],
        )]);
        let stamp = |n: i64| {
            format!(
                "{}.{:09}",
                n.div_euclid(1_000_000_000),
                n.rem_euclid(1_000_000_000)
            )
        };
        let filters = serde_json::to_string(&filters).unwrap_or_default();
        let mut query = vec![("filters", filters)];
        if let Some(s) = since_nanos {
            query.push(("since", stamp(s)));
        }
        if let Some(u) = until_nanos {
            // Podman answers an `until` in the past with (almost) nothing; one a second ahead
            // gives the history, a second later. Events past `u` come again at the next replay:
            // applying an event twice changes nothing.
            let u = if self.podman {
                u.max(crate::clock::now_nanos().saturating_add(1_000_000_000))
            } else {
                u
            };
            query.push(("until", stamp(u)));
        }
        let podman = self.podman;
        // Read by us, each line bounded (`stream`), not by bollard.
        self.event_messages(&query)
            .filter_map(move |event| async move {
                match event {
                    Err(e) => Some(Err(e)),
                    Ok(e) => use_event(e, podman).map(Ok),
                }
            })
    }
}

/// Keeps the events that say an image was used (or deleted). Podman's compatible API differs
/// (pinned by tests/it/podman.rs): a container goes with `remove` rather than `destroy`, an
/// archive is loaded with `loadfromarchive`, image ids come without `sha256:`, some `pull`
/// events carry no image, and `delete` is also sent for a removal that was refused, so there a
/// deletion is left to the next inventory instead.
fn use_event(e: EventMessage, podman: bool) -> Option<UseEvent> {
    let action = e.action?;
    let actor = e.actor?;
    let time_nanos = e
        .time_nano
        .or(e.time.map(|s| s.saturating_mul(1_000_000_000)))?;
    // Actions may carry a suffix (`exec_start: sh`); the verb is what counts.
    let verb = action
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let (image, deleted) = match e.typ? {
        EventMessageTypeEnum::CONTAINER => {
            if !matches!(
                verb.as_str(),
                "create" | "start" | "die" | "destroy" | "remove"
            ) {
                return None;
            }
            (actor.attributes?.remove("image")?, false)
        }
        EventMessageTypeEnum::IMAGE => match verb.as_str() {
            "pull" | "tag" | "load" | "loadfromarchive" | "import" | "build" | "untag" => {
                (actor.id?, false)
            }
            "delete" if !podman => (actor.id?, true),
            _ => return None,
        },
        _ => return None,
    };
    if image.is_empty() {
        return None;
    }
    // Podman names images by bare hex: the id, as the rest of the program spells it.
    let image = if podman && image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("sha256:{image}")
    } else {
        image
    };
    let verb = match verb.as_str() {
        "loadfromarchive" => "load".to_string(),
        "remove" => "destroy".to_string(),
        _ => verb,
    };
    Some(UseEvent {
        time_nanos,
        image,
        action: verb,
        deleted,
    })
}
