//! The guard's lifecycle: what we know of our own cordon on the node, and every transition in
//! one table ([`Lifecycle::next`]). No I/O; the time comes in as an argument.
//!
//! ```text
//!  Idle ──MayHaveLanded──▶ RecoveryPending ──Clear──▶ Idle
//!   │  ╲                        │
//!   │   ╲Took                   │Took (adopted, or the PATCH was accepted)
//!   │    ▼                      ▼
//!   │   Held ──ReleaseFailed──▶ ReleaseFailed ──Released──▶ Idle
//!   │    │  ◀───────Took────────┘
//!   └────┴──Released──▶ Idle
//! ```

use tokio::time::Instant;

use super::patch::Hold;

/// What we know of a cordon of ours on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Nothing of ours on the node, as far as the last GET showed.
    Idle,
    /// A cordon of ours may be on the node: at start until a GET has looked, and after a cordon
    /// PATCH whose outcome is unknown (no answer, or the call was cut short).
    RecoveryPending,
    /// We hold a cordon (during a pass).
    Held {
        /// What we added.
        hold: Hold,
        /// Since when.
        since: Instant,
        /// The `max_cordon` release was tried in this pass (not again between every removal).
        deadline_tried: bool,
    },
    /// A release failed; retried at every tick until it goes through.
    ReleaseFailed {
        /// What we still hold.
        hold: Hold,
        /// Since when.
        since: Instant,
        /// The last failure, for `describe()`.
        error: String,
    },
}

/// What happened, as far as the lifecycle is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A GET showed no cordon of ours, or a leftover of ours was lifted.
    Clear,
    /// A cordon PATCH is about to go out, or one failed without an answer: it may have landed.
    MayHaveLanded,
    /// We hold `Hold` from now on: our PATCH was accepted, or a cordon of ours was adopted.
    Took(Hold),
    /// A pass begins: its `max_cordon` release may be tried once.
    PassBegins,
    /// The `max_cordon` release of this pass is being tried.
    DeadlineTried,
    /// Our cordon is gone: released, the node deleted, or taken over by someone else.
    Released,
    /// A release failed, with this error.
    ReleaseFailed(String),
}

impl Lifecycle {
    /// The state after `t`, at `now`. A transition that does not apply to a state leaves it as
    /// it is: in particular nothing but a release forgets a cordon we hold.
    pub fn next(self, t: Transition, now: Instant) -> Lifecycle {
        use Lifecycle::*;
        match (self, t) {
            (Idle | RecoveryPending, Transition::Clear) => Idle,
            (Idle | RecoveryPending, Transition::MayHaveLanded) => RecoveryPending,
            (_, Transition::Took(hold)) => Held {
                hold,
                since: now,
                deadline_tried: false,
            },
            (Held { hold, since, .. }, Transition::PassBegins) => Held {
                hold,
                since,
                deadline_tried: false,
            },
            (Held { hold, since, .. }, Transition::DeadlineTried) => Held {
                hold,
                since,
                deadline_tried: true,
            },
            (Held { .. } | ReleaseFailed { .. }, Transition::Released) => Idle,
            (
                Held { hold, since, .. } | ReleaseFailed { hold, since, .. },
                Transition::ReleaseFailed(error),
            ) => ReleaseFailed { hold, since, error },
            (state, _) => state,
        }
    }

    /// Applies `t` in place: `self.next(t, now)`.
    pub fn apply(&mut self, t: Transition, now: Instant) {
        *self = std::mem::replace(self, Lifecycle::Idle).next(t, now);
    }

    /// What we hold, and since when.
    pub fn held(&self) -> Option<(Hold, Instant)> {
        match self {
            Lifecycle::Held { hold, since, .. } | Lifecycle::ReleaseFailed { hold, since, .. } => {
                Some((*hold, *since))
            }
            Lifecycle::Idle | Lifecycle::RecoveryPending => None,
        }
    }

    /// True when the `max_cordon` release may be tried now.
    pub fn deadline_due(&self) -> bool {
        matches!(
            self,
            Lifecycle::Held {
                deadline_tried: false,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle::*;
    use super::*;

    #[test]
    fn the_table() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(5);
        let held = |deadline_tried| Held {
            hold: Hold::Taint,
            since: t0,
            deadline_tried,
        };
        let failed = ReleaseFailed {
            hold: Hold::Taint,
            since: t0,
            error: "503".into(),
        };
        let cases = [
            (RecoveryPending, Transition::Clear, Idle),
            (Idle, Transition::MayHaveLanded, RecoveryPending),
            (RecoveryPending, Transition::Took(Hold::Taint), held(false)),
            (Idle, Transition::Took(Hold::Taint), held(false)),
            (held(false), Transition::DeadlineTried, held(true)),
            (held(true), Transition::PassBegins, held(false)),
            (held(true), Transition::Released, Idle),
            (
                held(true),
                Transition::ReleaseFailed("503".into()),
                failed.clone(),
            ),
            (failed.clone(), Transition::Released, Idle),
            (failed.clone(), Transition::Took(Hold::Taint), held(false)),
            // Nothing but a release forgets a cordon we hold.
            (held(false), Transition::Clear, held(false)),
            (failed.clone(), Transition::MayHaveLanded, failed.clone()),
            (failed.clone(), Transition::PassBegins, failed.clone()),
            (failed.clone(), Transition::DeadlineTried, failed.clone()),
            (Idle, Transition::Released, Idle),
            (Idle, Transition::ReleaseFailed("x".into()), Idle),
        ];
        for (from, t, want) in cases {
            let at = if matches!(t, Transition::Took(_)) {
                t0
            } else {
                t1
            };
            assert_eq!(from.clone().next(t.clone(), at), want, "{from:?} + {t:?}");
        }
    }

    #[test]
    fn only_a_fresh_hold_may_try_its_deadline() {
        let now = Instant::now();
        let held = Idle.next(Transition::Took(Hold::Unschedulable), now);
        assert!(held.deadline_due());
        assert_eq!(held.held(), Some((Hold::Unschedulable, now)));
        let tried = held.next(Transition::DeadlineTried, now);
        assert!(!tried.deadline_due());
        assert!(tried.held().is_some());
        assert!(!RecoveryPending.deadline_due());
        assert_eq!(RecoveryPending.held(), None);
    }
}
