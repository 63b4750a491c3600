//! The GET-then-PATCH sequences of the guard: cordon, release and recover a node. Each reads the
//! node, lets `patch` decide, sends at most one PATCH, and reads again when the node changed in
//! between (409 on our `resourceVersion`).

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use tokio::time::Instant;

use super::chain;
use super::error::{Error, KubeError};
use super::patch::{self, ANNOTATION, Hold};
use super::{COMPONENT, Cordoner, Held, Status};

/// How many times a GET + PATCH is redone when the node changed in between (409).
const CONFLICT_TRIES: u32 = 3;

impl Cordoner {
    pub(super) async fn try_recover(&mut self, node: &str) -> Result<(), Error> {
        let client = self.connect().await?;
        for attempt in 1..=CONFLICT_TRIES {
            let current = get(&client, node).await?;
            let Some((hold, value)) = patch::recover(&current) else {
                log::info!("node {node} carries no cordon of ours");
                self.recovery_pending = false;
                self.status = Status::Ready;
                return Ok(());
            };
            let (key, since) = patch::annotation(&current).unwrap_or((ANNOTATION, "?"));
            let what = match hold {
                Some(hold) => format!("lifting {hold} left behind"),
                None => "dropping the stale annotation (node schedulable)".to_string(),
            };
            if self.dry_run {
                log::warn!("node {node} carries {key}={since}: dry run, not {what}");
                self.recovery_pending = false;
                return Ok(());
            }
            log::warn!("node {node} carries {key}={since} from an earlier run: {what}");
            let lifted = hold;
            let hold = hold.unwrap_or(Hold::Unschedulable);
            match send_patch(&client, node, value).await {
                Ok(_) => {
                    match lifted {
                        Some(hold) => {
                            log::info!("node {node}: lifted {hold} left by an earlier run")
                        }
                        None => log::info!("node {node}: dropped the stale {key}"),
                    }
                    self.recovery_pending = false;
                    self.status = Status::Ready;
                    return Ok(());
                }
                Err(e) if is_conflict(&e) && attempt < CONFLICT_TRIES => {
                    log::info!("node {node} changed since it was read: reading it again");
                }
                Err(source) => {
                    let node = node.to_string();
                    return Err(Error::Uncordon { node, hold, source });
                }
            }
        }
        unreachable!("the last conflict try returns")
    }

    pub(super) async fn try_cordon(&mut self, node: &str, want: Hold) -> Result<(), Error> {
        let client = self.connect().await?;
        for attempt in 1..=CONFLICT_TRIES {
            let current = get(&client, node).await?;
            self.node_uid = current.metadata.uid.clone();
            self.recovery_pending = false;
            self.status = Status::Ready;
            match patch::begin(&current, want, &stamp()) {
                patch::Begin::Adopt(hold) => {
                    let (key, since) = patch::annotation(&current).unwrap_or((ANNOTATION, "?"));
                    log::warn!(
                        "node {node} already carries our {hold} ({key}={since}): holding it for this pass"
                    );
                    self.held = Some(Held {
                        hold,
                        since: Instant::now(),
                    });
                    return Ok(());
                }
                patch::Begin::Foreign => {
                    log::info!(
                        "node {node} is already cordoned by someone else: cleaning without touching the cordon"
                    );
                    self.held = None;
                    return Ok(());
                }
                patch::Begin::Patch(hold, value) => match send_patch(&client, node, value).await {
                    Ok(_) => {
                        log::info!("cordoned node {node} ({hold}) for this pass");
                        self.held = Some(Held {
                            hold,
                            since: Instant::now(),
                        });
                        return Ok(());
                    }
                    Err(e) if is_conflict(&e) && attempt < CONFLICT_TRIES => {
                        log::info!("node {node} changed since it was read: reading it again");
                    }
                    Err(source) => {
                        // The PATCH may have landed before the failure: look again when settling.
                        self.recovery_pending = source.status().is_none();
                        let node = node.to_string();
                        return Err(Error::Cordon { node, hold, source });
                    }
                },
            }
        }
        unreachable!("the last conflict try returns")
    }

    /// Up to `release_tries` tries with doubling pauses for transient failures.
    pub(super) async fn release(&mut self, node: &str, held: Held) -> Result<(), Error> {
        let mut pause = self.timing.release_backoff;
        let mut attempt = 1;
        loop {
            match self.release_once(node, held).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < self.timing.release_tries => {
                    log::info!(
                        "{} (try {attempt} of {}); trying again in {} ms",
                        chain(&e),
                        self.timing.release_tries,
                        pause.as_millis()
                    );
                    self.client = None;
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn release_once(&mut self, node: &str, held: Held) -> Result<(), Error> {
        let client = self.connect().await?;
        let hold = held.hold;
        for attempt in 1..=CONFLICT_TRIES {
            let current = match get(&client, node).await {
                Err(e) if e.status() == Some(404) => {
                    log::warn!("node {node} is gone: nothing to release");
                    return Ok(());
                }
                other => other?,
            };
            let Some(value) = patch::release(&current, hold) else {
                log::warn!(
                    "node {node} no longer carries {ANNOTATION} (released already, or taken over): leaving it as it is"
                );
                return Ok(());
            };
            match send_patch(&client, node, value).await {
                Ok(_) => {
                    let secs = held.since.elapsed().as_secs();
                    log::info!("uncordoned node {node} ({hold}) after {secs} s");
                    return Ok(());
                }
                Err(e) if is_conflict(&e) && attempt < CONFLICT_TRIES => {
                    log::info!("node {node} changed since it was read: reading it again");
                }
                Err(source) => {
                    let node = node.to_string();
                    return Err(Error::Uncordon { node, hold, source });
                }
            }
        }
        unreachable!("the last conflict try returns")
    }
}

async fn get(client: &kube::Client, node: &str) -> Result<Node, Error> {
    Api::<Node>::all(client.clone())
        .get(node)
        .await
        .map_err(|e| Error::Get {
            node: node.to_string(),
            source: KubeError(e),
        })
}

async fn send_patch(
    client: &kube::Client,
    node: &str,
    value: serde_json::Value,
) -> Result<Node, KubeError> {
    let params = PatchParams {
        field_manager: Some(COMPONENT.to_string()),
        ..PatchParams::default()
    };
    Api::<Node>::all(client.clone())
        .patch(node, &params, &Patch::Strategic(value))
        .await
        .map_err(KubeError)
}

fn is_conflict(e: &KubeError) -> bool {
    e.status() == Some(409)
}

/// The annotation value: now, to the second, RFC 3339 in UTC.
fn stamp() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_is_whole_seconds_utc() {
        let s = stamp();
        assert!(s.ends_with('Z') && !s.contains('.'), "{s}");
    }
}
