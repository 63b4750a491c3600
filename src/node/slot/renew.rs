//! The renewal of a held slot: a small task of its own ([`Renewer`]), since one step of a pass
//! (a removal) may take longer than the lease. It holds a clone of the client, renews every
//! third of the lease, and stops when the slot is released or the guard is dropped (the
//! [`Renewer`] with it). When it finds the slot taken by someone else, or cannot renew it for a
//! whole lease, it marks the slot lost; what then becomes of the cordon is the guard's call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::CONFLICT_TRIES;
use crate::node::api::{self, ObjectPath, UpdateError, Updated, Write};
use crate::node::lease;

/// The renewal task of the slot held; aborted when dropped.
pub(super) struct Renewer {
    task: JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl Drop for Renewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Renewer {
    /// Starts renewing slot `path` for `node`, a Lease of `length`, each try cut short at
    /// `budget`.
    pub(super) fn start(
        client: kube::Client,
        path: ObjectPath,
        node: &str,
        length: Duration,
        budget: Duration,
    ) -> Renewer {
        let lost = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(renew(
            client,
            path,
            node.to_string(),
            length,
            budget,
            Arc::clone(&lost),
        ));
        Renewer { task, lost }
    }

    /// True once the slot was lost (taken over, or not renewed for a whole lease).
    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// What a renewal found.
enum Renewal {
    Renewed,
    Lost(String),
}

/// Renews slot `path` for `me` every third of `length`, each try cut short at `budget` (and
/// at the renewal period); stops when the slot is no longer ours, or was not renewed for a
/// whole lease, after marking it `lost`.
async fn renew(
    client: kube::Client,
    path: ObjectPath,
    me: String,
    length: Duration,
    budget: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = lease::renew_every(length);
    let limit = budget.min(every);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let tried = api::upsert(
            &client,
            &path,
            CONFLICT_TRIES,
            |l: Option<&Lease>| match l {
                Some(l) if lease::holder(l) == Some(me.as_str()) => {
                    Write::Replace(lease::renewed(l, Timestamp::now()), Renewal::Renewed)
                }
                Some(l) => Write::Keep(Renewal::Lost(
                    lease::holder(l).unwrap_or("nobody").to_string(),
                )),
                None => Write::Keep(Renewal::Lost("nobody (the Lease was deleted)".to_string())),
            },
        );
        let why = match tokio::time::timeout(limit, tried).await {
            Ok(Ok(Updated {
                outcome: Renewal::Renewed,
                ..
            })) => {
                renewed = Instant::now();
                log::debug!("renewed cleaning slot {path}");
                continue;
            }
            Ok(Ok(Updated {
                outcome: Renewal::Lost(holder),
                ..
            })) => {
                lost.store(true, Ordering::SeqCst);
                log::error!(
                    "cleaning slot {path} is held by {holder} now: lost it; the cordon goes at the next step"
                );
                return;
            }
            Ok(Err(UpdateError::Read(e) | UpdateError::Write { source: e, .. })) => {
                crate::error_chain(&e)
            }
            Err(_) => format!("no answer within {} s", limit.as_secs_f32()),
        };
        if renewed.elapsed() >= length {
            lost.store(true, Ordering::SeqCst);
            log::error!(
                "cleaning slot {path} not renewed for {} s ({why}): another node may take it; the cordon goes at the next step",
                length.as_secs()
            );
            return;
        }
        log::warn!(
            "renewing cleaning slot {path} failed: {why}; trying again in {} s",
            every.as_secs_f32()
        );
    }
}
