//! Fleet slots, the pure half: what a slot Lease as read means for us, and the Lease we write to
//! take, renew or release it. No I/O and no clock: the caller passes `now` (`slot` does the I/O).
//!
//! Slot `i` (of `fleet_max_cordoned` = N) is the `coordination.k8s.io/v1` Lease
//! `docker-image-cleaner-slot-<i>` in `fleet_namespace`; its `holderIdentity` is the node name of
//! the cleaner that may hold a cleaning cordon. A slot is free when it does not exist, when its
//! `holderIdentity` is empty, or when it has not been renewed for its `leaseDurationSeconds` plus
//! [`skew_margin`]. Expiry is judged by our own clock against the `renewTime` the holder wrote
//! with its clock: nodes are assumed to run NTP, and the margin absorbs what skew is left.
//! Every write carries the `resourceVersion` read, so of two nodes taking one free slot the API
//! server lets exactly one win (the other gets 409 and reads again).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::COMPONENT;
use super::api::ObjectPath;

/// The name of slot `i` is this followed by `i`.
pub const SLOT_PREFIX: &str = "docker-image-cleaner-slot-";

/// Where Leases live in the API.
const LEASES: &str = "/apis/coordination.k8s.io/v1";

/// The name of slot `i`.
pub fn slot_name(i: u32) -> String {
    format!("{SLOT_PREFIX}{i}")
}

/// The path of slot `i` in `namespace`.
pub fn slot_path(namespace: &str, i: u32) -> ObjectPath {
    ObjectPath::namespaced(LEASES, namespace, "leases", &slot_name(i))
}

/// How much longer than its lease another node's slot is left alone before we take it over:
/// a tenth of the lease, at least a second. It covers the clock skew between the holder (who
/// writes `renewTime`) and us (who compare it with our clock), and the time a renewal spends
/// in flight.
pub fn skew_margin(lease: Duration) -> Duration {
    (lease / 10).max(Duration::from_secs(1))
}

/// How often a holder renews its slot: every third of the lease, so two renewals in a row may
/// fail before it expires.
pub fn renew_every(lease: Duration) -> Duration {
    lease / 3
}

/// What a slot, as read (`None`: the API server answered 404), means for node `me` at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No such Lease: create it.
    Missing,
    /// Nobody holds it.
    Free,
    /// We hold it (our renewals, or a slot of ours left by an earlier run).
    Ours,
    /// `holder` has not renewed it in time (a crashed node): it may be taken over.
    Expired {
        /// Who held it.
        holder: String,
        /// How long ago it was last renewed (or acquired), when it says.
        silent: Option<Duration>,
    },
    /// `holder` holds it.
    Held {
        /// Who.
        holder: String,
    },
}

/// The `holderIdentity`, `None` when empty.
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Judges the slot `lease` for `me` at `now`; a holder's lease without a `leaseDurationSeconds`
/// is judged with `ours`.
pub fn judge(lease: Option<&Lease>, me: &str, now: Timestamp, ours: Duration) -> Seen {
    let Some(lease) = lease else {
        return Seen::Missing;
    };
    let Some(who) = holder(lease) else {
        return Seen::Free;
    };
    if who == me {
        return Seen::Ours;
    }
    let spec = lease.spec.as_ref();
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(ours, Duration::from_secs);
    let last = spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()));
    let silent = last.map(|t| now.duration_since(t.0));
    let expired = match silent {
        // Never renewed nor acquired: nothing says the holder is alive.
        None => true,
        Some(silent) => SignedDuration::try_from(duration + skew_margin(duration))
            .is_ok_and(|limit| silent > limit),
    };
    let holder = who.to_string();
    if expired {
        Seen::Expired {
            holder,
            silent: silent.and_then(|s| Duration::try_from(s).ok()),
        }
    } else {
        Seen::Held { holder }
    }
}

/// The slot `i` taken by `me` at `now` for `lease`: a new Lease when `existing` is `None`,
/// else `existing` (its `resourceVersion` kept, so the write is refused if it changed) with us
/// as holder. `acquireTime` and `leaseTransitions` move only when the holder changes, as
/// client-go's leader election does.
pub fn claimed(
    namespace: &str,
    i: u32,
    existing: Option<&Lease>,
    me: &str,
    now: Timestamp,
    lease: Duration,
) -> Lease {
    let mut out = existing.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(slot_name(i)),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    COMPONENT.to_string(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let spec = out.spec.get_or_insert_with(LeaseSpec::default);
    let changes_hands = spec.holder_identity.as_deref() != Some(me);
    if changes_hands {
        spec.acquire_time = Some(MicroTime(now));
        if existing.is_some() {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        } else {
            spec.lease_transitions = Some(0);
        }
    }
    spec.holder_identity = Some(me.to_string());
    spec.lease_duration_seconds = Some(seconds(lease));
    spec.renew_time = Some(MicroTime(now));
    out
}

/// `lease` renewed at `now` (holder and everything else as read).
pub fn renewed(lease: &Lease, now: Timestamp) -> Lease {
    let mut out = lease.clone();
    out.spec.get_or_insert_with(LeaseSpec::default).renew_time = Some(MicroTime(now));
    out
}

/// `lease` released at `now`: no holder, so any node may take it at once.
pub fn released(lease: &Lease, now: Timestamp) -> Lease {
    let mut out = lease.clone();
    let spec = out.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = Some(MicroTime(now));
    out
}

/// `leaseDurationSeconds` for `lease` (validated to whole seconds within an `i32`).
fn seconds(lease: Duration) -> i32 {
    i32::try_from(lease.as_secs()).unwrap_or(i32::MAX)
}

/// The order in which node `me` looks at the `slots` slots: every one once, starting at one
/// derived from its name, so that a fleet spreads over the slots instead of all reading slot 0
/// first.
pub fn scan_order(me: &str, slots: u32) -> impl Iterator<Item = u32> {
    // FNV-1a: stable across runs and builds (the std hasher is neither).
    let hash = me.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let slots = slots.max(1);
    let start = u32::try_from(hash % u64::from(slots)).unwrap_or(0);
    (0..slots).map(move |k| (start + k) % slots)
}

/// What to do when every slot is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithoutSlot {
    /// Wait: nothing is cordoned or removed; the pass tries again.
    Wait,
    /// At or above the critical watermark a full disk is worse than a busy node: clean now,
    /// without a slot and therefore without cordoning, and say so with a Warning Event.
    CleanUncordoned,
}

/// The rule for a pass that finds every slot held.
pub fn without_slot(critical: bool) -> WithoutSlot {
    if critical {
        WithoutSlot::CleanUncordoned
    } else {
        WithoutSlot::Wait
    }
}

/// `3 of 3 held by n1, n2, n7`, for the log and `STATUS=`.
pub fn held_by(slots: u32, holders: &[String]) -> String {
    format!(
        "{} of {slots} held by {}",
        holders.len(),
        holders.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid")
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(slot_name(0)),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                renew_time: renewed.map(|s| MicroTime(at(s))),
                lease_duration_seconds: duration,
                lease_transitions: Some(2),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn judging_a_slot() {
        let me = "n1";
        let now = at(100);
        let cases = [
            (None, Seen::Missing),
            (Some(lease(None, Some(0), Some(60))), Seen::Free),
            (Some(lease(Some(""), Some(99), Some(60))), Seen::Free),
            (Some(lease(Some("n1"), Some(0), Some(60))), Seen::Ours),
            (
                Some(lease(Some("n2"), Some(90), Some(60))),
                Seen::Held {
                    holder: "n2".into(),
                },
            ),
            // 66 s after the renewal: the lease (60) plus the margin (6) is not yet over.
            (
                Some(lease(Some("n2"), Some(34), Some(60))),
                Seen::Held {
                    holder: "n2".into(),
                },
            ),
            (
                Some(lease(Some("n2"), Some(33), Some(60))),
                Seen::Expired {
                    holder: "n2".into(),
                    silent: Some(Duration::from_secs(67)),
                },
            ),
            // The holder's own duration counts, not ours.
            (
                Some(lease(Some("n2"), Some(0), Some(600))),
                Seen::Held {
                    holder: "n2".into(),
                },
            ),
            (
                Some(lease(Some("n2"), Some(90), Some(5))),
                Seen::Expired {
                    holder: "n2".into(),
                    silent: Some(Duration::from_secs(10)),
                },
            ),
            // No duration: ours.
            (
                Some(lease(Some("n2"), Some(50), None)),
                Seen::Held {
                    holder: "n2".into(),
                },
            ),
            // Never renewed: nothing says n2 is alive.
            (
                Some(lease(Some("n2"), None, Some(60))),
                Seen::Expired {
                    holder: "n2".into(),
                    silent: None,
                },
            ),
            // A renewal in the future (the holder's clock is ahead): held.
            (
                Some(lease(Some("n2"), Some(130), Some(60))),
                Seen::Held {
                    holder: "n2".into(),
                },
            ),
        ];
        for (l, want) in cases {
            assert_eq!(judge(l.as_ref(), me, now, LEASE), want, "{l:?}");
        }
    }

    #[test]
    fn taking_keeps_the_version_and_counts_transitions() {
        let now = at(100);
        let old = lease(Some("n2"), Some(0), Some(60));
        let took = claimed("kube-system", 0, Some(&old), "n1", now, LEASE);
        assert_eq!(took.metadata.resource_version.as_deref(), Some("7"));
        let spec = took.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        assert_eq!(spec.lease_duration_seconds, Some(60));
        assert_eq!(spec.lease_transitions, Some(3));

        // Taking back a slot already ours changes neither acquireTime nor the transitions.
        let again = claimed("kube-system", 0, Some(&took), "n1", at(130), LEASE);
        let spec = again.spec.expect("spec");
        assert_eq!(spec.acquire_time, Some(MicroTime(now)));
        assert_eq!(spec.renew_time, Some(MicroTime(at(130))));
        assert_eq!(spec.lease_transitions, Some(3));

        let new = claimed("ops", 4, None, "n1", now, LEASE);
        let value = serde_json::to_value(&new).expect("json");
        assert_eq!(value["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(value["kind"], "Lease");
        assert_eq!(value["metadata"]["name"], "docker-image-cleaner-slot-4");
        assert_eq!(value["metadata"]["namespace"], "ops");
        assert_eq!(value["spec"]["leaseTransitions"], 0);
        assert_eq!(
            value["spec"]["renewTime"], "2027-01-15T08:01:40.000000Z",
            "MicroTime, as the API server writes it"
        );
        assert!(value["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn renewing_and_releasing() {
        let held = lease(Some("n1"), Some(0), Some(60));
        let r = renewed(&held, at(20));
        assert_eq!(holder(&r), Some("n1"));
        assert_eq!(
            r.spec.as_ref().and_then(|s| s.renew_time.clone()),
            Some(MicroTime(at(20)))
        );
        let free = released(&held, at(30));
        assert_eq!(holder(&free), None);
        assert_eq!(free.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(judge(Some(&free), "n2", at(31), LEASE), Seen::Free);
        let value = serde_json::to_value(&free).expect("json");
        assert!(value["spec"].get("holderIdentity").is_none(), "{value}");
    }

    #[test]
    fn nodes_start_their_scan_at_different_slots() {
        let order: Vec<u32> = scan_order("node-a", 5).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3, 4], "every slot once");
        let starts: std::collections::BTreeSet<u32> = (0..50)
            .filter_map(|n| scan_order(&format!("node-{n}"), 5).next())
            .collect();
        assert_eq!(starts.len(), 5, "50 nodes start at every one of 5 slots");
        assert_eq!(scan_order("x", 1).collect::<Vec<_>>(), [0]);
        assert_eq!(
            scan_order("node-a", 5).collect::<Vec<_>>(),
            order,
            "the same order every time"
        );
    }

    #[test]
    fn the_rules() {
        assert_eq!(without_slot(false), WithoutSlot::Wait);
        assert_eq!(without_slot(true), WithoutSlot::CleanUncordoned);
        assert_eq!(skew_margin(LEASE), Duration::from_secs(6));
        assert_eq!(skew_margin(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(renew_every(LEASE), Duration::from_secs(20));
        assert_eq!(
            held_by(2, &["n1".into(), "n7".into()]),
            "2 of 2 held by n1, n7"
        );
        assert_eq!(
            slot_path("kube-system", 3).url(),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/docker-image-cleaner-slot-3"
        );
    }
}
