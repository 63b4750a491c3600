//! The container list, `GET /containers/json?all=true`, read as text and parsed leniently like
//! the image list: an entry's state is kept as the engine names it ([`ContainerState::parse`]),
//! so a state bollard's model does not know (Podman's `stopping`, a newer engine's) neither
//! fails the whole list nor reads as stopped. Only an entry without an `Id` is left out.
//!
//! Also the prune of strategy `prune`: Docker's `POST /containers/prune` removes every container
//! that is not running, created ones included (a `docker create` waiting for its `start`, a
//! kubelet's pod about to start), so it is done here instead: the exited and dead containers,
//! removed one by one without force.

use bollard::errors::Error as BollardError;
use serde::Deserialize;

use super::{DockerEngine, canonical_id};
use crate::docker::{Container, ContainerState, Engine, Error, Pruned, Removal};

/// Every container, whatever its state (`docker ps -a`).
const CONTAINERS: &str = "/containers/json?all=true";
/// The exited and dead containers with their sizes: `all=true&size=true` and the filter
/// `{"status":["exited","dead"]}`, percent-encoded.
const STOPPED_WITH_SIZES: &str = "/containers/json?all=true&size=true&filters=%7B%22status%22%3A%5B%22exited%22%2C%22dead%22%5D%7D";

/// One entry of the container list, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct Entry {
    id: String,
    names: Option<Vec<String>>,
    #[serde(rename = "ImageID")]
    image_id: Option<String>,
    state: Option<String>,
    created: i64,
    size_rw: Option<i64>,
}

impl DockerEngine {
    /// The engine's containers, their finish time not filled in yet.
    pub(super) async fn list_containers(&self) -> Result<Vec<Container>, Error> {
        let body = self.get_list("list containers", CONTAINERS).await?;
        Ok(parse_containers(&body)
            .map_err(list_error)?
            .into_iter()
            .map(|(c, _)| c)
            .collect())
    }

    /// [`crate::docker::Engine::prune_containers`]: every exited or dead container, removed
    /// without force; a created, running or paused one is never listed, and one started since
    /// the list is refused by the engine (409) and stays.
    pub(super) async fn prune_stopped_containers(&self) -> Result<Pruned, Error> {
        let body = self
            .get_list("list stopped containers", STOPPED_WITH_SIZES)
            .await?;
        let mut pruned = Pruned::default();
        for (c, size) in parse_containers(&body).map_err(list_error)? {
            // The filter is the engine's: check the state again, never trust it alone.
            if !c.is_stopped() {
                continue;
            }
            match self.remove_container(&c.id).await? {
                Removal::Removed => {
                    pruned.reclaimed_bytes = pruned.reclaimed_bytes.saturating_add(size);
                    pruned.deleted.push(c.id);
                }
                Removal::Conflict(why) => {
                    log::info!("container {} ({}) not pruned: {why}", c.name, c.id);
                }
                Removal::Gone | Removal::Changed(_) => {}
            }
        }
        Ok(pruned)
    }
}

fn list_error(err: serde_json::Error) -> Error {
    Error::Request {
        op: "list containers (GET /containers/json)".into(),
        source: BollardError::JsonSerdeError { err },
    }
}

/// The containers of a `GET /containers/json` body, each with the size of its writable layer
/// when the list has it (0 otherwise).
fn parse_containers(body: &str) -> Result<Vec<(Container, u64)>, serde_json::Error> {
    let entries: Option<Vec<Entry>> = serde_json::from_str(body)?;
    let mut containers = Vec::new();
    let mut without_id = 0usize;
    for e in entries.unwrap_or_default() {
        if e.id.is_empty() {
            without_id += 1;
            continue;
        }
        let state = ContainerState::parse(e.state.as_deref().unwrap_or_default());
        if state == ContainerState::Unknown {
            log::debug!(
                "container {}: state {:?} unknown, taken as not stopped",
                e.id,
                e.state.as_deref().unwrap_or_default()
            );
        }
        let size = e.size_rw.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
        let container = Container {
            name: e
                .names
                .and_then(|n| n.into_iter().next())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image_id: canonical_id(e.image_id.unwrap_or_default()),
            state,
            created: e.created,
            finished: None,
            managed: false,
            id: e.id,
        };
        containers.push((container, size));
    }
    if without_id > 0 {
        log::warn!("the container list has {without_id} entries without an Id: leaving them out");
    }
    Ok(containers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_is_kept_as_the_engine_names_it() {
        let body = r#"[
            {"Id":"c1","Names":["/pod1"],"ImageID":"sha256:aa","State":"created","Created":10},
            {"Id":"c2","Names":["/web"],"ImageID":"sha256:aa","State":"running","Created":11},
            {"Id":"c3","Names":["/old"],"ImageID":"sha256:bb","State":"exited","Created":12},
            {"Id":"c4","ImageID":"sha256:bb","State":"dead"},
            {"Id":"c5","ImageID":"sha256:bb","State":"paused"},
            {"Id":"c6","ImageID":"sha256:bb","State":"restarting"},
            {"Id":"c7","ImageID":"sha256:bb","State":"configured"},
            {"Id":"c8","ImageID":"sha256:bb","State":"hibernating"},
            {"Id":"c9","ImageID":"sha256:bb"},
            {"Names":["/ghost"],"State":"exited"}
        ]"#;
        let containers: Vec<Container> = parse_containers(body)
            .unwrap()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let states: Vec<(&str, ContainerState)> = containers
            .iter()
            .map(|c| (c.id.as_str(), c.state))
            .collect();
        use ContainerState::*;
        assert_eq!(
            states,
            vec![
                ("c1", Created),
                ("c2", Running),
                ("c3", Exited),
                ("c4", Dead),
                ("c5", Paused),
                ("c6", Restarting),
                ("c7", Created),
                ("c8", Unknown),
                ("c9", Unknown),
            ]
        );
        let stopped: Vec<&str> = containers
            .iter()
            .filter(|c| c.is_stopped())
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(
            stopped,
            vec!["c3", "c4"],
            "only exited and dead are stopped"
        );
        assert_eq!(
            (containers[0].name.as_str(), containers[0].created),
            ("pod1", 10)
        );
        assert_eq!(containers[0].image_id, "sha256:aa");
        let sized = parse_containers(r#"[{"Id":"c1","State":"exited","SizeRw":42}]"#).unwrap();
        assert_eq!(sized[0].1, 42);
        assert!(parse_containers("null").unwrap().is_empty());
        assert!(parse_containers(r#"{"message":"oops"}"#).is_err());
    }
}
