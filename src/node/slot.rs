//! Fleet slots, the I/O half: take a free slot Lease before cordoning, renew it while the pass
//! (or a release still pending) holds the cordon, release it once the node is uncordoned, and
//! at start release a slot an earlier run of ours left. Every write is an [`api::upsert`] with a
//! pure decision from `lease`; every call is cut short at its limit, as the cordon's are.
//!
//! Renewal runs in a small task of its own (`renew`), since one step of a pass (a removal)
//! may take longer than the lease; when it marks the slot lost, the guard releases its cordon at
//! the next check between two removals.

mod renew;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use super::api::{self, ObjectPath, UpdateError, Updated, Write};
use super::error::{Error, KubeError, Verb};
use super::lease::{self, Seen};
use super::timing::timed_out;
use super::{Cordoner, chain};
use crate::config::{Config, CordonMode};
use renew::Renewer;

/// How many times a GET + write is redone when another node wrote in between (409).
const CONFLICT_TRIES: u32 = 3;

/// The fleet's slots as this node sees them, and the one it holds.
pub(super) struct Fleet {
    /// N: slots 0 .. N-1.
    pub(super) slots: u32,
    namespace: String,
    lease: Duration,
    holding: Option<Holding>,
    /// Since the first pass that found every slot held, until a slot is had or the wait ends.
    waiting_since: Option<Instant>,
    last_wait: Option<Duration>,
    /// The waits that ended, added up (for the metrics).
    waited: Duration,
    /// A slot of ours may be left by an earlier run: looked for until a scan succeeded.
    recovery_pending: bool,
}

struct Holding {
    slot: u32,
    since: Instant,
    renewer: Renewer,
}

/// What a try for a slot found.
pub(super) enum Taken {
    /// We hold a slot.
    Slot,
    /// Every slot is held: `N of N held by …`.
    Full(String),
}

/// What one slot, as read, gave.
enum Claim {
    /// We wrote ourselves in with this verb (create or update), from this state.
    Took(Verb, Seen),
    /// Held by someone else.
    HeldBy(String),
}

impl Claim {
    fn verb(&self) -> Verb {
        match self {
            Claim::Took(verb, _) => *verb,
            Claim::HeldBy(_) => Verb::Get,
        }
    }
}

impl Fleet {
    /// The fleet of `config`, when slots are asked for and this node cordons at all.
    pub(super) fn new(config: &Config, node: Option<&str>) -> Option<Fleet> {
        let cordons = node.is_some_and(super::is_subdomain)
            && config.cordon_mode != CordonMode::None
            && !config.dry_run;
        (cordons && config.fleet_max_cordoned > 0).then(|| Fleet {
            slots: config.fleet_max_cordoned,
            namespace: config.fleet_namespace.clone(),
            lease: config.fleet_lease,
            holding: None,
            waiting_since: None,
            last_wait: None,
            waited: Duration::ZERO,
            recovery_pending: true,
        })
    }

    /// One clause for `describe()`.
    pub(super) fn describe(&self) -> String {
        let n = self.slots;
        match (&self.holding, self.waiting_since) {
            (Some(h), _) => format!(
                "cleaning slot {} of {n} held for {} s",
                h.slot,
                h.since.elapsed().as_secs()
            ),
            (None, Some(since)) => format!(
                "waiting for one of {n} cleaning slots for {} s",
                since.elapsed().as_secs()
            ),
            (None, None) => format!("{n} cleaning slots in namespace {}", self.namespace),
        }
    }

    /// A wait for a slot is over (had one, or the pass goes on or ends without).
    fn finish_wait(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            let waited = since.elapsed();
            self.last_wait = Some(waited);
            self.waited = self.waited.saturating_add(waited);
        }
    }
}

impl Cordoner {
    /// True while we hold a fleet slot: from before the cordon until after the uncordon.
    pub fn holds_slot(&self) -> bool {
        self.slot().is_some()
    }

    /// The fleet slot held, if any.
    pub fn slot(&self) -> Option<u32> {
        self.fleet.as_ref()?.holding.as_ref().map(|h| h.slot)
    }

    /// How long the current wait for a slot has lasted, while every slot is held.
    pub fn slot_wait(&self) -> Option<Duration> {
        let f = self.fleet.as_ref()?;
        match f.holding {
            Some(_) => None,
            None => f.waiting_since.map(|s| s.elapsed()),
        }
    }

    /// How long the last finished wait for a slot took (zero when one was free at once), if
    /// a slot was ever asked for.
    pub fn last_slot_wait(&self) -> Option<Duration> {
        self.fleet.as_ref()?.last_wait
    }

    /// True when the slot held was lost (taken over, or not renewed for a whole lease).
    pub(super) fn slot_lost(&self) -> bool {
        self.fleet
            .as_ref()
            .and_then(|f| f.holding.as_ref())
            .is_some_and(|h| h.renewer.lost())
    }

    /// Shows the slot's state to the metrics (through the cordon clock).
    pub(super) fn publish_slot(&self) {
        let slot = self.fleet.as_ref().map(|f| (f.holding.is_some(), f.waited));
        self.clock.note_slot(slot);
    }

    /// Ends the wait for a slot, if one was on.
    pub(super) fn finish_wait(&mut self) {
        if let Some(f) = &mut self.fleet {
            f.finish_wait();
        }
    }

    /// Takes a free slot within the call budget (or keeps the one held).
    pub(super) async fn take_slot(&mut self, node: &str) -> Result<Taken, Error> {
        if self.holds_slot() {
            return Ok(Taken::Slot);
        }
        let budget = self.timing.call_budget;
        let result = tokio::time::timeout(budget, self.try_take_slot(node))
            .await
            .unwrap_or_else(|_| Err(timed_out("taking a cleaning slot", node, budget)));
        if let Some(f) = &mut self.fleet {
            match &result {
                Ok(Taken::Slot) => {
                    f.waiting_since.get_or_insert_with(Instant::now);
                    f.finish_wait();
                }
                Ok(Taken::Full(_)) => {
                    f.waiting_since.get_or_insert_with(Instant::now);
                }
                Err(_) => {}
            }
        }
        result
    }

    async fn try_take_slot(&mut self, node: &str) -> Result<Taken, Error> {
        let client = self.client().await?;
        let Some(f) = &self.fleet else {
            return Ok(Taken::Slot);
        };
        let (slots, namespace, length) = (f.slots, f.namespace.clone(), f.lease);
        let mut holders = Vec::new();
        for i in lease::scan_order(node, slots) {
            let path = lease::slot_path(&namespace, i);
            let result = api::upsert(&client, &path, CONFLICT_TRIES, |l: Option<&Lease>| {
                let now = Timestamp::now();
                let claim = |verb, seen| {
                    let mine = lease::claimed(&namespace, i, l, node, now, length);
                    (mine, Claim::Took(verb, seen))
                };
                match lease::judge(l, node, now, length) {
                    Seen::Held { holder } => Write::Keep(Claim::HeldBy(holder)),
                    seen @ Seen::Missing => {
                        let (mine, c) = claim(Verb::Create, seen);
                        Write::Create(mine, c)
                    }
                    seen => {
                        let (mine, c) = claim(Verb::Update, seen);
                        Write::Replace(mine, c)
                    }
                }
            })
            .await;
            match result {
                Ok(Updated {
                    outcome: Claim::Took(_, seen),
                    ..
                }) => {
                    match seen {
                        Seen::Expired { holder, silent } => log::warn!(
                            "took over cleaning slot {i} from {holder}, who has not renewed it {}: crashed or cut off?",
                            silent
                                .map_or("at all".to_string(), |s| format!("for {} s", s.as_secs()))
                        ),
                        Seen::Ours => log::info!("took back cleaning slot {i}, still ours"),
                        _ => log::info!("took cleaning slot {i} of {slots}"),
                    }
                    self.hold(client, path, node, i);
                    return Ok(Taken::Slot);
                }
                Ok(Updated {
                    outcome: Claim::HeldBy(holder),
                    ..
                }) => holders.push(holder),
                // Another node won this slot every time it was read: held, for this try.
                Err(UpdateError::Write { source, .. }) if source.status() == Some(409) => {
                    holders.push("another node".to_string());
                }
                Err(UpdateError::Read(source)) => {
                    return Err(slot_error(Verb::Get, &namespace, i, source));
                }
                Err(UpdateError::Write { intent, source }) => {
                    return Err(slot_error(intent.verb(), &namespace, i, source));
                }
            }
        }
        Ok(Taken::Full(lease::held_by(slots, &holders)))
    }

    /// Records slot `i` as held and starts renewing it.
    fn hold(&mut self, client: kube::Client, path: ObjectPath, node: &str, i: u32) {
        let budget = self.timing.call_budget;
        let Some(f) = &mut self.fleet else {
            return;
        };
        let renewer = Renewer::start(client, path, node, f.lease, budget);
        f.holding = Some(Holding {
            slot: i,
            since: Instant::now(),
            renewer,
        });
    }

    /// Releases the slot held (its renewal stops first), within the release budget. A failure is
    /// logged: the slot then expires by itself within a lease.
    pub(super) async fn release_slot(&mut self, node: &str) {
        let Some(f) = &mut self.fleet else {
            return;
        };
        let Some(holding) = f.holding.take() else {
            return;
        };
        let (namespace, length) = (f.namespace.clone(), f.lease);
        let Holding {
            slot,
            since,
            renewer,
            ..
        } = holding;
        drop(renewer);
        let budget = self.timing.release_budget;
        let result = tokio::time::timeout(budget, self.try_release(node, &namespace, slot))
            .await
            .unwrap_or_else(|_| Err(timed_out("releasing a cleaning slot", node, budget)));
        match result {
            Ok(true) => log::info!(
                "released cleaning slot {slot} after {} s",
                since.elapsed().as_secs()
            ),
            Ok(false) => log::warn!(
                "cleaning slot {slot} was no longer ours (taken over after a lapse in renewals): nothing to release"
            ),
            Err(e) => log::warn!(
                "{}; the slot expires by itself within {} s",
                chain(&e),
                length.as_secs()
            ),
        }
    }

    /// Clears our name from slot `i`; false when it was not ours (or is gone).
    async fn try_release(&mut self, node: &str, namespace: &str, i: u32) -> Result<bool, Error> {
        let client = self.client().await?;
        let path = lease::slot_path(namespace, i);
        let result = api::upsert(
            &client,
            &path,
            CONFLICT_TRIES,
            |l: Option<&Lease>| match l {
                Some(l) if lease::holder(l) == Some(node) => {
                    Write::Replace(lease::released(l, Timestamp::now()), true)
                }
                _ => Write::Keep(false),
            },
        )
        .await;
        match result {
            Ok(Updated { outcome, .. }) => Ok(outcome),
            Err(UpdateError::Read(source)) => Err(slot_error(Verb::Get, namespace, i, source)),
            Err(UpdateError::Write { source, .. }) => {
                Err(slot_error(Verb::Update, namespace, i, source))
            }
        }
    }

    /// While our node carries nothing of ours: release the slot held, or, once, any slot an
    /// earlier run of ours left (within the call budget; retried at the next call on failure).
    pub(super) async fn settle_slots(&mut self, node: &str) {
        if self.holds_slot() {
            return self.release_slot(node).await;
        }
        if !self.fleet.as_ref().is_some_and(|f| f.recovery_pending) {
            return;
        }
        let budget = self.timing.call_budget;
        let result = tokio::time::timeout(budget, self.try_recover_slots(node))
            .await
            .unwrap_or_else(|_| {
                Err(timed_out(
                    "looking for cleaning slots of ours",
                    node,
                    budget,
                ))
            });
        match result {
            Ok(()) => {
                if let Some(f) = &mut self.fleet {
                    f.recovery_pending = false;
                }
            }
            Err(e) => {
                self.record(&e);
                log::warn!("{}; looking again at the next tick", chain(&e));
            }
        }
    }

    /// Releases every slot that names us (left by a crash: we hold nothing now).
    async fn try_recover_slots(&mut self, node: &str) -> Result<(), Error> {
        let Some(f) = &self.fleet else {
            return Ok(());
        };
        let (slots, namespace) = (f.slots, f.namespace.clone());
        for i in 0..slots {
            if self.try_release(node, &namespace, i).await? {
                log::warn!("released cleaning slot {i}, left held by an earlier run of ours");
            }
        }
        Ok(())
    }
}

/// The error of a request on slot `i`; a 403 names the missing permission.
fn slot_error(verb: Verb, namespace: &str, i: u32, source: KubeError) -> Error {
    let lease = format!("{namespace}/{}", lease::slot_name(i));
    if source.status() == Some(403) {
        Error::SlotForbidden {
            verb,
            lease,
            source,
        }
    } else {
        Error::Slot {
            verb,
            lease,
            source,
        }
    }
}
