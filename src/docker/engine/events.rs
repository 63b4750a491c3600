//! The engine's event stream ([`DockerEngine::events_since`]): asking for the container and
//! image events of a time range, and mapping each to a [`UseEvent`] or dropping it, with
//! Podman's differences from Docker. Keeps no state: `lastuse` is fed what comes out.

use std::collections::HashMap;

use bollard::models::{EventMessage, EventMessageTypeEnum};
use futures_util::{Stream, StreamExt};

use super::{DockerEngine, canonical_id};
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

/// Keeps the events that say an image was used (or deleted). A container's removal (`destroy`,
/// Podman's `remove`) is not a use: the container's last use was when it stopped (`die`), and
/// the removals a pass makes must not make the images they free look fresh. Podman's compatible
/// API differs (pinned by tests/it/podman/events.rs): an archive is loaded with
/// `loadfromarchive`, image ids come without `sha256:`, some `pull` events carry no image,
/// Podman 5's `build` names the new image in `Attributes.name` with an empty `Actor.ID` (and no
/// `tag` event follows), and `delete` is also sent for a removal that was refused, so there a
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
            if !matches!(verb.as_str(), "create" | "start" | "die") {
                return None;
            }
            (actor.attributes?.remove("image")?, false)
        }
        EventMessageTypeEnum::IMAGE => match verb.as_str() {
            "build" if podman && actor.id.as_deref().is_none_or(str::is_empty) => {
                (actor.attributes?.remove("name")?, false)
            }
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
    let image = if podman { canonical_id(image) } else { image };
    let verb = match verb.as_str() {
        "loadfromarchive" => "load".to_string(),
        _ => verb,
    };
    Some(UseEvent {
        time_nanos,
        image,
        action: verb,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    //! The mapping on event streams recorded from real engines (`src/docker/engine/fixtures/`):
    //! Docker 28.5 (API 1.51) with overlay2 and with the containerd image store, and Podman 5.8,
    //! each running the same script (import, a BuildKit build, a legacy build, a tag, a
    //! container created then started then removed, one run with `--rm`, an untag); Docker 29
    //! (API 1.52) is the 28.5 containerd stream without the `status`, `id` and `from` fields
    //! that 1.52 dropped: not recorded from a live 29.

    use super::*;

    /// Every event of a recorded stream, mapped.
    fn mapped(jsonl: &str, podman: bool) -> Vec<UseEvent> {
        jsonl
            .lines()
            .map(|l| serde_json::from_str::<EventMessage>(l).expect("a recorded event parses"))
            .filter_map(|e| use_event(e, podman))
            .collect()
    }

    fn actions(events: &[UseEvent]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|e| (e.action.as_str(), e.image.as_str()))
            .collect()
    }

    const DOCKER_28: &str = include_str!("fixtures/events-docker-28.5-overlay2.jsonl");
    const DOCKER_28_CONTAINERD: &str = include_str!("fixtures/events-docker-28.5-containerd.jsonl");
    const DOCKER_29: &str = include_str!("fixtures/events-docker-29-api-1.52.jsonl");
    const PODMAN_5: &str = include_str!("fixtures/events-podman-5.8.jsonl");

    #[test]
    fn a_container_removal_is_not_a_use() {
        for (name, stream, podman) in [
            ("docker 28", DOCKER_28, false),
            ("docker 28 containerd", DOCKER_28_CONTAINERD, false),
            ("docker 29", DOCKER_29, false),
            ("podman 5", PODMAN_5, true),
        ] {
            let raw: Vec<EventMessage> = stream
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            let removals = raw
                .iter()
                .filter(|e| matches!(e.action.as_deref(), Some("destroy" | "remove")))
                .count();
            assert!(
                removals >= 2,
                "{name}: the recording has container removals"
            );
            let events = mapped(stream, podman);
            assert!(
                events
                    .iter()
                    .all(|e| e.action != "destroy" && e.action != "remove"),
                "{name}: {:?}",
                actions(&events)
            );
            // Each container still counts: created, started, stopped.
            for verb in ["create", "start", "die"] {
                assert!(
                    events.iter().filter(|e| e.action == verb).count() >= 2,
                    "{name}: {verb}: {:?}",
                    actions(&events)
                );
            }
        }
    }

    #[test]
    fn docker_29_without_the_deprecated_fields_maps_as_28_does() {
        assert_eq!(
            mapped(DOCKER_29, false),
            mapped(DOCKER_28_CONTAINERD, false)
        );
        assert!(!DOCKER_29.contains("\"status\""));
    }

    #[test]
    fn the_tags_and_imports_of_docker_28_name_image_ids() {
        let events = mapped(DOCKER_28, false);
        let images: Vec<&UseEvent> = events
            .iter()
            .filter(|e| matches!(e.action.as_str(), "tag" | "import" | "untag"))
            .collect();
        assert!(images.len() >= 4, "{:?}", actions(&events));
        assert!(images.iter().all(|e| e.image_id().is_some()));
    }

    #[test]
    fn a_podman_5_build_names_the_image_it_made() {
        let raw: Vec<EventMessage> = PODMAN_5
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let build = raw
            .iter()
            .find(|e| e.action.as_deref() == Some("build"))
            .expect("the recording has a build");
        let actor = build.actor.as_ref().expect("an actor");
        assert!(actor.id.as_deref().unwrap_or_default().is_empty());
        let built = actor.attributes.as_ref().expect("attributes")["name"].clone();
        let events = mapped(PODMAN_5, true);
        let mapped_build = events
            .iter()
            .find(|e| e.action == "build")
            .expect("the build is a use");
        assert_eq!(mapped_build.image, format!("sha256:{built}"));
        // Podman sends bare hex: every id comes out prefixed.
        assert!(
            events
                .iter()
                .filter(|e| e.action == "tag" || e.action == "untag")
                .all(|e| e.image.starts_with("sha256:"))
        );
    }
}
