//! Cordon, release and recover a node: each is one [`api::update`] with a pure decision from
//! `patch`, and the lifecycle transition its outcome calls for. A release (`settle`) ends with
//! the fleet slot's, once nothing of ours is on the node. Every call here runs under a
//! time limit set by its caller (the cordon's in `pass`); a cordon PATCH that may have landed
//! before the call was cut short leaves the lifecycle at `RecoveryPending`, so the next tick looks.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::api::{self, Decision, ObjectPath, UpdateError, Updated};
use super::describe::Report;
use super::error::{Error, KubeError};
use super::lifecycle::{Lifecycle, Transition};
use super::patch::{self, ANNOTATION, Begin, Hold};
use super::timing::timed_out;
use super::{Cordoner, chain};

/// How many times a GET + PATCH is redone when the node changed in between (409).
const CONFLICT_TRIES: u32 = 3;

/// What a cordon found or did.
enum Cordoned {
    /// A cordon of ours was there already.
    Adopted(Hold),
    /// Someone else's cordon: clean without touching it.
    Foreign,
    /// Our PATCH was accepted.
    Took(Hold),
}

/// What a recovery found or did; the strings are the annotation found, `key=value`.
enum Recovered {
    Nothing,
    DryRun(String),
    Lifted(Option<Hold>, String),
}

/// The annotation of ours the node carries, `key=value`, for log lines.
fn found(node: &Node) -> String {
    let (key, since) = patch::annotation(node).unwrap_or((ANNOTATION, "?"));
    format!("{key}={since}")
}

impl Cordoner {
    /// Cordons `node` the `want` way unless it is cordoned already.
    pub(super) async fn cordon(&mut self, node: &str, want: Hold) -> Result<(), Error> {
        let client = self.client().await?;
        let stamp = stamp();
        let life = &mut self.life;
        let result = api::update(
            &client,
            &ObjectPath::node(node),
            CONFLICT_TRIES,
            |n: &Node| {
                match patch::begin(n, want, &stamp) {
                    Begin::Adopt(hold) => Decision::Keep(Cordoned::Adopted(hold)),
                    Begin::Foreign => Decision::Keep(Cordoned::Foreign),
                    Begin::Patch(hold, value) => {
                        // From here on a cordon of ours may be on the node, whatever becomes of
                        // this call.
                        life.apply(Transition::MayHaveLanded, Instant::now());
                        Decision::Send(value, Cordoned::Took(hold))
                    }
                }
            },
        )
        .await;
        match result {
            Ok(Updated { object, outcome }) => {
                self.pass_uid = object.metadata.uid.clone();
                self.report = Report::Ready;
                match outcome {
                    Cordoned::Adopted(hold) => {
                        log::warn!(
                            "node {node} already carries our {hold} ({}): holding it for this pass",
                            found(&object)
                        );
                        self.apply(Transition::Took(hold));
                    }
                    Cordoned::Foreign => {
                        log::info!(
                            "node {node} is already cordoned by someone else: cleaning without touching the cordon"
                        );
                        self.apply(Transition::Clear);
                    }
                    Cordoned::Took(hold) => {
                        log::info!("cordoned node {node} ({hold}) for this pass");
                        self.apply(Transition::Took(hold));
                    }
                }
                Ok(())
            }
            Err(UpdateError::Read(source)) => Err(get_failed(node, source)),
            Err(UpdateError::Write { intent, source }) => {
                // Answered: the PATCH did not land, and the GET showed nothing of ours. No
                // answer: it may have landed; the next tick looks (RecoveryPending).
                if source.status().is_some() {
                    self.apply(Transition::Clear);
                }
                let hold = match intent {
                    Cordoned::Took(hold) | Cordoned::Adopted(hold) => hold,
                    Cordoned::Foreign => want,
                };
                Err(Error::Cordon {
                    node: node.to_string(),
                    hold,
                    source,
                })
            }
        }
    }

    /// Releases what we hold (bounded retries) or finishes a pending recovery; failures are
    /// recorded for `describe()` and retried at the next tick.
    pub(super) async fn settle(&mut self) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.dry_run {
            return;
        }
        if let Some((hold, since)) = self.life.held() {
            let budget = self.timing.release_budget;
            let result = tokio::time::timeout(budget, self.release(&node, hold, since))
                .await
                .unwrap_or(Err(Error::ReleaseTimeout {
                    node: node.clone(),
                    after: budget,
                }));
            match result {
                Ok(()) => {
                    self.apply(Transition::Released);
                    self.report = Report::Ready;
                }
                Err(e) => {
                    self.record(&e);
                    self.apply(Transition::ReleaseFailed(chain(&e)));
                    if self.ticks_follow() {
                        log::error!("{}; still held, retrying every tick", chain(&e));
                    } else {
                        log::error!("{}; still held", chain(&e));
                    }
                }
            }
        } else if self.life == Lifecycle::RecoveryPending {
            match self.bounded_recover(&node).await {
                Ok(()) => {}
                Err(e @ Error::NoKubeconfig { .. }) => {
                    log::debug!("{}", chain(&e));
                    self.record(&e);
                }
                Err(e) => {
                    self.record(&e);
                    if self.ticks_follow() {
                        log::warn!("{}; retrying every tick", chain(&e));
                    } else {
                        log::warn!("{}", chain(&e));
                    }
                }
            }
        }
        // The fleet slot goes only once nothing of ours is (or may be) on the node.
        if self.life == Lifecycle::Idle {
            self.settle_slots(&node).await;
        }
    }

    /// Up to `release_tries` tries with doubling pauses for transient failures.
    async fn release(&mut self, node: &str, hold: Hold, since: Instant) -> Result<(), Error> {
        let mut pause = self.timing.release_backoff;
        let mut attempt = 1;
        loop {
            match self.release_once(node, hold, since).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && attempt < self.timing.release_tries => {
                    log::info!(
                        "{} (try {attempt} of {}); trying again in {} ms",
                        chain(&e),
                        self.timing.release_tries,
                        pause.as_millis()
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn release_once(&mut self, node: &str, hold: Hold, since: Instant) -> Result<(), Error> {
        let client = self.client().await?;
        let result = api::update(
            &client,
            &ObjectPath::node(node),
            CONFLICT_TRIES,
            |n: &Node| match patch::release(n, hold) {
                Some(value) => Decision::Send(value, true),
                None => Decision::Keep(false),
            },
        )
        .await;
        match result {
            Ok(Updated { outcome: true, .. }) => {
                let secs = since.elapsed().as_secs();
                log::info!("uncordoned node {node} ({hold}) after {secs} s");
                Ok(())
            }
            Ok(Updated { outcome: false, .. }) => {
                log::warn!(
                    "node {node} no longer carries {ANNOTATION} (released already, or taken over): leaving it as it is"
                );
                Ok(())
            }
            Err(UpdateError::Read(e)) if e.status() == Some(404) => {
                log::warn!("node {node} is gone: nothing to release");
                Ok(())
            }
            Err(UpdateError::Read(source)) => Err(get_failed(node, source)),
            Err(UpdateError::Write { source, .. }) => Err(Error::Uncordon {
                node: node.to_string(),
                hold,
                source,
            }),
        }
    }

    /// [`Cordoner::try_recover`] within the call budget.
    pub(super) async fn bounded_recover(&mut self, node: &str) -> Result<(), Error> {
        let budget = self.timing.call_budget;
        tokio::time::timeout(budget, self.try_recover(node))
            .await
            .unwrap_or_else(|_| Err(timed_out("checking for a leftover cordon", node, budget)))
    }

    /// Lifts a cordon of ours left behind, or drops our stale annotation.
    async fn try_recover(&mut self, node: &str) -> Result<(), Error> {
        let client = self.client().await?;
        let dry_run = self.dry_run;
        let result = api::update(
            &client,
            &ObjectPath::node(node),
            CONFLICT_TRIES,
            |n: &Node| match patch::recover(n) {
                None => Decision::Keep(Recovered::Nothing),
                Some(_) if dry_run => Decision::Keep(Recovered::DryRun(found(n))),
                Some((hold, value)) => Decision::Send(value, Recovered::Lifted(hold, found(n))),
            },
        )
        .await;
        match result {
            Ok(Updated { outcome, .. }) => {
                match outcome {
                    Recovered::Nothing => log::info!("node {node} carries no cordon of ours"),
                    Recovered::DryRun(what) => log::warn!(
                        "node {node} carries {what} from an earlier run: dry run, not lifting it"
                    ),
                    Recovered::Lifted(Some(hold), what) => {
                        log::warn!("node {node}: lifted {hold} left by an earlier run ({what})")
                    }
                    Recovered::Lifted(None, what) => log::warn!(
                        "node {node}: dropped the stale {what} (the node was schedulable)"
                    ),
                }
                self.apply(Transition::Clear);
                self.report = Report::Ready;
                Ok(())
            }
            Err(UpdateError::Read(source)) => Err(get_failed(node, source)),
            Err(UpdateError::Write { intent, source }) => {
                let hold = match intent {
                    Recovered::Lifted(Some(hold), _) => hold,
                    _ => Hold::Unschedulable,
                };
                Err(Error::Uncordon {
                    node: node.to_string(),
                    hold,
                    source,
                })
            }
        }
    }
}

fn get_failed(node: &str, source: KubeError) -> Error {
    Error::Get {
        node: node.to_string(),
        source,
    }
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
