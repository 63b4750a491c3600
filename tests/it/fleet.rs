//! Fleet slots against the fake API server: the cordon guard takes a slot Lease before it
//! cordons and gives it back after the uncordon, waits when every slot is held, takes over a
//! slot its holder stopped renewing, and says what is missing on a 403. Each test synchronises
//! on what the server stored and logged ([`FakeKube::changes`]).
//!
//! - `sim`: 200 simulated nodes in one process, the real slot, cordon and pass code each, Docker
//!   replaced by the fake engine: at most N cordoned at any instant, every node cleaned, a holder
//!   killed mid-pass loses its slot after the lease;
//! - `daemons`: five real daemons on five private dockerds against one fake API server.

use std::time::Duration;

use docker_image_cleaner::config::{Config, OnCordonFailure};
use docker_image_cleaner::node::{Cordoner, PassStart, slot_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::kube_fake::{Change, FakeKube, Fault, quick_timing};

mod daemons;
mod sim;

const NS: &str = "kube-system";

/// A configuration for `node` with `slots` slots of `lease_s` seconds.
fn fleet_config(fake: &FakeKube, node: &str, slots: u32, lease_s: u64) -> Config {
    Config {
        fleet_max_cordoned: slots,
        fleet_lease: Duration::from_secs(lease_s),
        ..fake.config(node)
    }
}

fn cordoner(config: &Config) -> Cordoner {
    Cordoner::new(config).with_timing(quick_timing())
}

/// `t` as a Lease writes it (MicroTime).
fn micro(t: Timestamp) -> Value {
    serde_json::to_value(MicroTime(t)).expect("MicroTime is JSON")
}

/// Slot `i` held by `holder`, renewed `ago` seconds ago, for `duration` seconds.
fn slot(i: u32, holder: Option<&str>, ago: i64, duration: i64) -> Value {
    let renewed = Timestamp::now() - SignedDuration::from_secs(ago);
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": slot_name(i), "namespace": NS },
        "spec": {
            "leaseDurationSeconds": duration,
            "renewTime": micro(renewed),
            "acquireTime": micro(renewed),
            "leaseTransitions": 4,
        },
    });
    if let Some(h) = holder {
        lease["spec"]["holderIdentity"] = json!(h);
    }
    lease
}

/// A MicroTime field of a Lease's spec.
fn spec_time(lease: &Value, field: &str) -> Timestamp {
    let t: MicroTime = serde_json::from_value(lease["spec"][field].clone()).expect("a MicroTime");
    t.0
}

fn holder(lease: &Value) -> Option<&str> {
    lease
        .pointer("/spec/holderIdentity")
        .and_then(Value::as_str)
}

fn unschedulable(node: &Value) -> bool {
    node.pointer("/spec/unschedulable") == Some(&json!(true))
}

/// Where in the change log something first happened.
fn first(changes: &[Change], what: impl Fn(&Change) -> bool) -> Option<usize> {
    changes.iter().position(what)
}

fn node_cordoned(node: &str) -> impl Fn(&Change) -> bool + '_ {
    move |c| c.kind == "nodes" && c.name == node && unschedulable(&c.object)
}

fn node_uncordoned(node: &str) -> impl Fn(&Change) -> bool + '_ {
    move |c| c.kind == "nodes" && c.name == node && !unschedulable(&c.object)
}

fn slot_held_by<'a>(who: &'a str) -> impl Fn(&Change) -> bool + 'a {
    move |c| c.kind == "leases" && holder(&c.object) == Some(who)
}

fn slot_freed(c: &Change) -> bool {
    c.kind == "leases" && holder(&c.object).is_none()
}

/// Polls the server's change log every 50 ms until `cond` holds (true) or `bound` passes.
async fn wait_for(fake: &FakeKube, bound: Duration, cond: impl Fn(&[Change]) -> bool) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if cond(&fake.changes()) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The requests on Leases since the last clear, as `(method, last path segment)`.
fn lease_calls(fake: &FakeKube) -> Vec<(String, String)> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.contains("/leases"))
        .map(|r| {
            let last = r.path.rsplit('/').next().unwrap_or_default().to_string();
            (r.method, last)
        })
        .collect()
}

#[tokio::test]
async fn a_slot_is_taken_before_the_cordon_and_given_back_after_the_uncordon() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fleet_config(&fake, "n1", 3, 60));
    c.recover().await.expect("recover");
    assert!(!c.holds_slot());
    let since = fake.changes().len();

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(c.holds_cordon() && c.holds_slot(), "{}", c.describe());
    let i = c.slot().expect("a slot");
    let lease = fake.lease(NS, &slot_name(i)).expect("created");
    assert_eq!(holder(&lease), Some("n1"));
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 60);
    assert!(
        c.describe()
            .contains(&format!("cleaning slot {i} of 3 held"))
    );

    c.end_pass(None).await;
    assert!(!c.holds_cordon() && !c.holds_slot());
    let lease = fake.lease(NS, &slot_name(i)).expect("kept");
    assert_eq!(holder(&lease), None, "released: {lease}");

    let changes = fake.changes().split_off(since);
    let took = first(&changes, slot_held_by("n1")).expect("slot taken");
    let cordoned = first(&changes, node_cordoned("n1")).expect("cordoned");
    let uncordoned = first(&changes, node_uncordoned("n1")).expect("uncordoned");
    let freed = first(&changes, slot_freed).expect("slot released");
    assert!(
        took < cordoned && cordoned < uncordoned && uncordoned < freed,
        "slot, cordon, uncordon, slot: {took} {cordoned} {uncordoned} {freed}"
    );
    assert!(
        c.last_slot_wait()
            .is_some_and(|w| w < Duration::from_secs(1)),
        "a slot at once: {:?}",
        c.last_slot_wait()
    );
}

#[tokio::test]
async fn every_slot_held_cordons_nothing_and_says_by_whom() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.put_lease(NS, slot(0, Some("n7"), 1, 60));
    fake.put_lease(NS, slot(1, Some("n8"), 1, 60));
    let mut c = cordoner(&fleet_config(&fake, "n1", 2, 60));

    let start = c.begin_pass().await;
    let PassStart::NoSlot(held) = start else {
        panic!("expected no slot, got {start:?}");
    };
    assert!(held.starts_with("2 of 2 held by "), "{held}");
    assert!(held.contains("n7") && held.contains("n8"), "{held}");
    assert!(!c.holds_cordon() && !c.holds_slot());
    assert!(c.slot_wait().is_some(), "waiting");
    assert!(fake.patches("n1").is_empty(), "no cordon without a slot");
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), Some("n7"));

    // n8 releases: the next try takes its slot.
    let mut freed = fake.lease(NS, &slot_name(1)).unwrap();
    freed["spec"]["holderIdentity"] = Value::Null;
    fake.put_lease(NS, freed);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(c.slot(), Some(1));
    assert!(c.slot_wait().is_none());
    assert!(c.last_slot_wait().is_some());
    c.end_pass(None).await;
}

#[tokio::test]
async fn a_slot_its_holder_stopped_renewing_is_taken_over() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    // Renewed 70 s ago for 60 s: past the lease and the margin (6 s).
    fake.put_lease(NS, slot(0, Some("gone"), 70, 60));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 60));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let lease = fake.lease(NS, &slot_name(0)).unwrap();
    assert_eq!(holder(&lease), Some("n1"));
    assert_eq!(lease["spec"]["leaseTransitions"], 5);
    c.end_pass(None).await;

    // Within the margin it is still the holder's.
    fake.put_lease(NS, slot(0, Some("late"), 63, 60));
    assert!(matches!(c.begin_pass().await, PassStart::NoSlot(_)));
}

#[tokio::test]
async fn of_two_nodes_writing_one_free_slot_the_second_reads_again_and_waits() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 60));

    // The slot does not exist: n2 creates it between our GET (404) and our POST (409).
    fake.fail_next(1, Fault::Pass);
    fake.fail_next(1, Fault::Lease(NS, slot(0, Some("n2"), 0, 60)));
    assert!(matches!(c.begin_pass().await, PassStart::NoSlot(_)));
    assert_eq!(
        lease_calls(&fake),
        [
            ("GET".to_string(), slot_name(0)),
            ("POST".to_string(), "leases".to_string()),
            ("GET".to_string(), slot_name(0)),
        ]
    );

    // The slot is free: n3 takes it between our GET and our PUT (409 on the stale version).
    let mut free = fake.lease(NS, &slot_name(0)).unwrap();
    free["spec"]["holderIdentity"] = Value::Null;
    fake.put_lease(NS, free);
    fake.clear_requests();
    fake.fail_next(1, Fault::Pass);
    fake.fail_next(1, Fault::Lease(NS, slot(0, Some("n3"), 0, 60)));
    let start = c.begin_pass().await;
    assert_eq!(start, PassStart::NoSlot("1 of 1 held by n3".into()));
    assert_eq!(
        lease_calls(&fake),
        [
            ("GET".to_string(), slot_name(0)),
            ("PUT".to_string(), slot_name(0)),
            ("GET".to_string(), slot_name(0)),
        ]
    );
    assert!(fake.patches("n1").is_empty());
    let put = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .and_then(|r| r.body)
        .expect("PUT body");
    assert!(
        put["metadata"]["resourceVersion"].is_string(),
        "written with the version read: {put}"
    );
}

#[tokio::test]
async fn concurrent_nodes_never_share_a_slot() {
    let fake = FakeKube::start();
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    for n in &names {
        fake.add_node(n, json!({}));
    }
    let mut guards: Vec<Cordoner> = names
        .iter()
        .map(|n| cordoner(&fleet_config(&fake, n, 2, 60)))
        .collect();
    let starts = futures_util::future::join_all(guards.iter_mut().map(|c| c.begin_pass())).await;
    let proceeded = starts.iter().filter(|s| **s == PassStart::Proceed).count();
    assert_eq!(proceeded, 2, "{starts:?}");
    let cordoned = names
        .iter()
        .filter(|n| unschedulable(&fake.node(n)))
        .count();
    assert_eq!(cordoned, 2);
    let holders: Vec<String> = fake
        .leases(NS)
        .iter()
        .filter_map(|l| holder(l).map(String::from))
        .collect();
    assert_eq!(holders.len(), 2);
    assert_ne!(holders[0], holders[1]);
    for c in &mut guards {
        c.end_pass(None).await;
    }
}

#[tokio::test]
async fn the_holder_renews_while_it_holds_and_stops_when_it_releases() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.add_node("n2", json!({}));
    // 3 s slots: renewed every second, taken over after 4 s without renewal.
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 3));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let renewals = |fake: &FakeKube| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with(&slot_name(0)))
            .count()
    };
    // A removal that takes longer than the lease: the slot stays ours all along.
    let other = tokio::spawn({
        let config = fleet_config(&fake, "n2", 1, 3);
        async move {
            let mut n2 = cordoner(&config);
            let mut answers = Vec::new();
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                answers.push(n2.begin_pass().await);
            }
            answers
        }
    });
    let answers = other.await.expect("n2");
    assert!(
        answers.iter().all(|a| matches!(a, PassStart::NoSlot(_))),
        "n2 never gets the slot while n1 renews it: {answers:?}"
    );
    assert!(
        renewals(&fake) >= 4,
        "renewed every second: {}",
        renewals(&fake)
    );
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), Some("n1"));

    c.end_pass(None).await;
    let after = renewals(&fake);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(renewals(&fake), after, "no renewal after the release");
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), None);
}

#[tokio::test]
async fn a_dropped_guard_stops_renewing_and_its_slot_expires() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.add_node("n2", json!({}));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 3));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    // The process dies with the slot and the cordon held.
    drop(c);
    let dropped = std::time::Instant::now();
    let mut n2 = cordoner(&fleet_config(&fake, "n2", 1, 3));
    let took = loop {
        match n2.begin_pass().await {
            PassStart::Proceed => break dropped.elapsed(),
            PassStart::NoSlot(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("{other:?}"),
        }
        assert!(dropped.elapsed() < Duration::from_secs(15), "never expired");
    };
    let lease = fake.lease(NS, &slot_name(0)).unwrap();
    assert_eq!(holder(&lease), Some("n2"));
    // n1's last renewal came at most 1 s before the drop; its slot is taken over after the
    // lease (3 s) and the margin (1 s).
    assert!(took >= Duration::from_secs(3), "taken over after {took:?}");
    let last_renewal = fake
        .changes()
        .into_iter()
        .rev()
        .find(slot_held_by("n1"))
        .expect("n1 held it");
    let taken = first(&fake.changes(), slot_held_by("n2")).expect("n2 took it");
    let gap = spec_time(&fake.changes()[taken].object, "acquireTime")
        .duration_since(spec_time(&last_renewal.object, "renewTime"));
    assert!(
        gap > SignedDuration::from_secs(4),
        "not before lease + margin since the last renewal: {gap:?}"
    );
    n2.end_pass(None).await;
}

#[tokio::test]
async fn a_restart_gives_back_a_slot_left_by_a_crash() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.put_lease(NS, slot(1, Some("n1"), 1, 60));
    fake.put_lease(NS, slot(0, Some("n9"), 1, 60));
    let mut c = cordoner(&fleet_config(&fake, "n1", 2, 60));
    c.recover().await.expect("recover");
    assert_eq!(holder(&fake.lease(NS, &slot_name(1)).unwrap()), None);
    assert_eq!(
        holder(&fake.lease(NS, &slot_name(0)).unwrap()),
        Some("n9"),
        "someone else's is left alone"
    );
}

#[tokio::test]
async fn a_forbidden_slot_names_the_permission_and_follows_on_cordon_failure() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.forbid_leases(true);

    let mut c = cordoner(&fleet_config(&fake, "n1", 2, 60));
    assert_eq!(
        c.begin_pass().await,
        PassStart::Proceed,
        "clean, uncordoned"
    );
    assert!(!c.holds_cordon() && !c.holds_slot());
    assert!(
        fake.patches("n1").is_empty(),
        "never cordoned without a slot"
    );
    let said = c.describe();
    for needed in [
        "may not get Lease kube-system/docker-image-cleaner-slot-",
        "get, create and update on leases (coordination.k8s.io) in namespace kube-system",
        "Node authorizer",
        "Option B: a ServiceAccount",
        "403",
    ] {
        assert!(said.contains(needed), "{needed:?} in {said}");
    }
    c.end_pass(None).await;

    let mut skip = fleet_config(&fake, "n1", 2, 60);
    skip.on_cordon_failure = OnCordonFailure::Skip;
    let mut c = cordoner(&skip);
    assert_eq!(c.begin_pass().await, PassStart::Skip);
    assert!(fake.patches("n1").is_empty());
}

#[tokio::test]
async fn at_the_critical_watermark_a_node_without_a_slot_cleans_uncordoned_and_says_so() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    fake.put_lease(NS, slot(0, Some("n2"), 1, 60));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 60));
    assert_eq!(c.begin(true).await, PassStart::Proceed);
    assert!(!c.holds_cordon() && !c.holds_slot());
    assert!(fake.patches("n1").is_empty(), "not cordoned");
    let events = fake.events();
    let event = events
        .iter()
        .find(|e| e["reason"] == "CleaningWithoutSlot")
        .expect("a Warning Event");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("critical") && m.contains("1 of 1 held by n2")),
        "{event}"
    );
    c.end_pass(None).await;
}

#[tokio::test]
async fn a_lost_slot_uncordons_at_the_next_step() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 3));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    // Someone overwrites the slot (n1's renewals were cut off, say).
    fake.put_lease(NS, slot(0, Some("n5"), 0, 3));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.holds_cordon() {
        assert!(std::time::Instant::now() < deadline, "{}", c.describe());
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.check_deadline().await;
    }
    assert!(!unschedulable(&fake.node("n1")));
    assert!(!c.holds_slot());
    assert_eq!(
        holder(&fake.lease(NS, &slot_name(0)).unwrap()),
        Some("n5"),
        "someone else's slot is not cleared"
    );
    c.end_pass(None).await;
}

#[tokio::test]
async fn someone_elses_cordon_needs_no_slot() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({ "spec": { "unschedulable": true } }));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 60));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(!c.holds_cordon());
    assert!(
        !c.holds_slot(),
        "released at once: the node is not ours to hold"
    );
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), None);
    c.end_pass(None).await;
}

#[tokio::test]
async fn a_failed_uncordon_keeps_the_slot_until_the_retry_lifts_it() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fleet_config(&fake, "n1", 1, 60));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    // Every try of the release fails.
    fake.fail_next(20, Fault::Status(503));
    c.end_pass(None).await;
    assert!(c.holds_cordon(), "release failed");
    assert!(c.holds_slot(), "the slot stays while the cordon does");
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), Some("n1"));
    for _ in 0..10 {
        if !c.holds_cordon() {
            break;
        }
        c.retry_release().await;
    }
    assert!(!c.holds_cordon() && !c.holds_slot());
    assert!(!unschedulable(&fake.node("n1")));
    assert_eq!(holder(&fake.lease(NS, &slot_name(0)).unwrap()), None);
}
