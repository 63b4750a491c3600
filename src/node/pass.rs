//! The guard around one pass: [`Cordoner::begin`] (a fleet slot, then the cordon, and what
//! `on_cordon_failure` says when either cannot be had), [`Cordoner::check_deadline`] between two
//! removals, and [`Cordoner::end_pass`] on every path. The requests are `guard`'s and `slot`'s;
//! this file decides which to make, under which time limit, and what a failure means for the
//! pass.

use super::lease::{self, WithoutSlot};
use super::lifecycle::{Lifecycle, Transition};
use super::patch::Hold;
use super::slot::Taken;
use super::timing::timed_out;
use super::{Cordoner, NodeEvent, PassStart, chain};
use crate::config::{CordonMode, OnCordonFailure};

impl Cordoner {
    /// Before the first removal of a pass that is not critical: [`Cordoner::begin`].
    pub async fn begin_pass(&mut self) -> PassStart {
        self.begin(false).await
    }

    /// Before the first removal of a pass: take a fleet slot (with slots), then cordon, when
    /// we may. Every slot held: [`PassStart::NoSlot`], unless the pass is `critical` (at or above
    /// the critical watermark): then it proceeds without a slot and without cordoning, and a
    /// Warning Event says so. A slot that cannot be had (403, the API server away) is a cordon
    /// failure: `on_cordon_failure` decides, and a pass that goes on is not cordoned.
    pub async fn begin(&mut self, critical: bool) -> PassStart {
        let start = self.begin_unpublished(critical).await;
        self.publish_slot();
        start
    }

    async fn begin_unpublished(&mut self, critical: bool) -> PassStart {
        self.apply(Transition::PassBegins);
        let Some(node) = self.node.clone() else {
            return PassStart::Proceed;
        };
        let want = match self.mode {
            _ if self.dry_run => return PassStart::Proceed,
            CordonMode::None => return PassStart::Proceed,
            CordonMode::Cordon => Hold::Unschedulable,
            CordonMode::Taint => Hold::Taint,
        };
        if self.fleet.is_some()
            && self.life.held().is_none()
            && let Some(start) = self.begin_slot(&node, critical).await
        {
            return start;
        }
        let budget = self.timing.call_budget;
        let result = tokio::time::timeout(budget, self.cordon(&node, want))
            .await
            .unwrap_or_else(|_| Err(timed_out("cordoning", &node, budget)));
        // A slot is held only while our cordon is (or may be) on the node: after someone
        // else's cordon, or a cordon refused, it goes at once.
        if self.life == Lifecycle::Idle {
            self.release_slot(&node).await;
        }
        let Err(e) = result else {
            return PassStart::Proceed;
        };
        self.record(&e);
        let why = chain(&e);
        match self.on_failure {
            OnCordonFailure::Clean => {
                log::warn!("{why}; cleaning uncordoned (on_cordon_failure = clean)");
                PassStart::Proceed
            }
            OnCordonFailure::Skip => {
                log::warn!("{why}; skipping this pass (on_cordon_failure = skip)");
                PassStart::Skip
            }
        }
    }

    /// Between two removals: uncordon early once `max_cordon` has passed, or once the fleet
    /// slot was lost; the pass goes on.
    pub async fn check_deadline(&mut self) {
        let (Some((hold, since)), Some(node)) = (self.life.held(), self.node.clone()) else {
            return;
        };
        if self.slot_lost() && self.life.deadline_due() {
            self.apply(Transition::DeadlineTried);
            log::warn!(
                "node {node}: lost its cleaning slot while holding {hold}: releasing it, the pass goes on uncordoned"
            );
            self.settle().await;
            return self.publish_slot();
        }
        let elapsed = since.elapsed();
        if !self.life.deadline_due() || elapsed < self.max_cordon {
            return;
        }
        self.apply(Transition::DeadlineTried);
        log::warn!(
            "node {node}: {hold} held for {:.1} s, over max_cordon {:.1} s: releasing it, the pass goes on uncordoned",
            elapsed.as_secs_f64(),
            self.max_cordon.as_secs_f64()
        );
        self.settle().await;
        self.publish_slot();
    }

    /// At the end of a pass, on every path: release what we hold (the cordon, then the slot),
    /// then post the Event if any.
    pub async fn end_pass(&mut self, event: Option<NodeEvent>) {
        self.finish_wait();
        self.settle().await;
        if let Some(event) = event {
            self.post(&event).await;
        }
        self.link.end_pass();
        self.pass_uid = None;
        self.publish_slot();
    }

    /// The slot part of [`Cordoner::begin`]: `None` when a slot is held now (go on and
    /// cordon), else how the pass starts without one.
    async fn begin_slot(&mut self, node: &str, critical: bool) -> Option<PassStart> {
        let held = match self.take_slot(node).await {
            Ok(Taken::Slot) => return None,
            Ok(Taken::Full(held)) => held,
            Err(e) => {
                self.finish_wait();
                self.record(&e);
                let why = chain(&e);
                return Some(match self.on_failure {
                    OnCordonFailure::Clean => {
                        log::warn!(
                            "{why}; cleaning without a slot, uncordoned (on_cordon_failure = clean)"
                        );
                        PassStart::Proceed
                    }
                    OnCordonFailure::Skip => {
                        log::warn!("{why}; skipping this pass (on_cordon_failure = skip)");
                        PassStart::Skip
                    }
                });
            }
        };
        Some(match lease::without_slot(critical) {
            WithoutSlot::Wait => PassStart::NoSlot(held),
            WithoutSlot::CleanUncordoned => {
                self.finish_wait();
                log::warn!(
                    "node {node}: usage is at or above the critical watermark and no cleaning slot is free ({held}): cleaning now, without a slot and without cordoning"
                );
                let event = NodeEvent {
                    warning: true,
                    reason: "CleaningWithoutSlot",
                    message: format!(
                        "usage is at or above the critical watermark and every cleaning slot is taken ({held}): cleaning without cordoning the node"
                    ),
                };
                self.post(&event).await;
                PassStart::Proceed
            }
        })
    }
}
