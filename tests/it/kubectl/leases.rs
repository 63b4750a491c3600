//! The fleet's slot Leases cross-checked with kubectl: kubectl reads the slots we write, a
//! Lease kubectl applies is a slot to us, and the fake refuses a stale update the way the real
//! API server refuses it (kubectl's own message), while kubectl's update of a fresh read goes
//! through as ours does.

use std::time::Duration;

use docker_image_cleaner::config::Config;
use docker_image_cleaner::node::{Cordoner, PassStart, slot_name};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::Kubectl;
use crate::kube_fake::{FakeKube, quick_timing};

const NS: &str = "kube-system";

fn cordoner(fake: &FakeKube, node: &str, slots: u32) -> Cordoner {
    let config = Config {
        fleet_max_cordoned: slots,
        fleet_lease: Duration::from_secs(60),
        ..fake.config(node)
    };
    Cordoner::new(&config).with_timing(quick_timing())
}

fn now() -> String {
    serde_json::to_value(MicroTime(Timestamp::now()))
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .expect("MicroTime is a string")
}

fn write(fake: &FakeKube, file: &str, text: &str) -> String {
    let path = fake.dir().join(file);
    std::fs::write(&path, text).expect("write manifest");
    path.to_str().expect("UTF-8 path").to_string()
}

#[tokio::test]
async fn kubectl_reads_the_slots_we_write() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake, "n1", 2);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let slot = slot_name(c.slot().expect("a slot"));

    let names = kubectl.run(&["get", "leases", "-n", NS, "-o", "name"]);
    assert_eq!(names.trim(), format!("lease.coordination.k8s.io/{slot}"));
    let lease: Value =
        serde_json::from_str(&kubectl.run(&["get", "lease", &slot, "-n", NS, "-o", "json"]))
            .expect("lease JSON");
    assert_eq!(lease["spec"]["holderIdentity"], "n1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 60);
    assert_eq!(
        lease["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "docker-image-cleaner"
    );
    let renewed = lease["spec"]["renewTime"].as_str().expect("renewTime");
    assert!(
        renewed.len() == "2026-11-28T05:00:00.000000Z".len() && renewed.ends_with('Z'),
        "MicroTime as the API server writes it: {renewed}"
    );

    c.end_pass(None).await;
    let holder = kubectl.run(&[
        "get",
        "lease",
        &slot,
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "", "released");

    let out = kubectl.output(&["get", "lease", "docker-image-cleaner-slot-9", "-n", NS]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "Error from server (NotFound): leases.coordination.k8s.io \"docker-image-cleaner-slot-9\" not found"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_lease_kubectl_applies_is_a_slot_to_us() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    let held = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {}\n  namespace: {NS}\nspec:\n  holderIdentity: maintenance\n  leaseDurationSeconds: 3600\n  renewTime: \"{}\"\n",
        slot_name(0),
        now()
    );
    let file = write(&fake, "held.yaml", &held);
    kubectl.run(&["apply", "--validate=false", "-f", &file]);
    let stored = fake.lease(NS, &slot_name(0)).expect("created by kubectl");
    assert_eq!(stored["spec"]["holderIdentity"], "maintenance");

    // An administrator holds the only slot: no cleaning cordon meanwhile.
    let mut c = cordoner(&fake, "n1", 1);
    assert_eq!(
        c.begin_pass().await,
        PassStart::NoSlot("1 of 1 held by maintenance".into())
    );
    assert!(fake.patches("n1").is_empty());

    // kubectl apply again without a holder: the slot is free, and ours at the next try.
    let free = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {}\n  namespace: {NS}\nspec:\n  leaseDurationSeconds: 3600\n  renewTime: \"{}\"\n",
        slot_name(0),
        now()
    );
    let file = write(&fake, "free.yaml", &free);
    kubectl.run(&["apply", "--validate=false", "-f", &file]);
    let stored = fake.lease(NS, &slot_name(0)).expect("kept");
    assert!(
        stored["spec"].get("holderIdentity").is_none(),
        "kubectl's apply removed the holder: {stored}"
    );
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(
        fake.lease(NS, &slot_name(0)).unwrap()["spec"]["holderIdentity"],
        "n1"
    );
    c.end_pass(None).await;
}

#[tokio::test]
async fn a_stale_update_is_refused_as_the_api_server_refuses_it() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake, "n1", 1);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(None).await;

    // kubectl reads the free slot...
    let read = kubectl.run(&["get", "lease", &slot_name(0), "-n", NS, "-o", "json"]);
    let mut stale: Value = serde_json::from_str(&read).expect("lease JSON");
    // ...the daemon takes it meanwhile...
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    // ...and kubectl's update of what it read is refused, as a real API server refuses it.
    stale["spec"]["holderIdentity"] = json!("intruder");
    let file = write(&fake, "stale.json", &stale.to_string());
    let out = kubectl.output(&["replace", "--validate=false", "-f", &file]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Error from server (Conflict): error when replacing \"{file}\": Operation cannot be fulfilled on leases.coordination.k8s.io \"{}\": the object has been modified; please apply your changes to the latest version and try again",
            slot_name(0)
        )),
        "{stderr}"
    );
    assert_eq!(
        fake.lease(NS, &slot_name(0)).unwrap()["spec"]["holderIdentity"],
        "n1",
        "the daemon's slot stands"
    );
    c.end_pass(None).await;

    // Without a resourceVersion kubectl reads the current one first and sends it with its PUT,
    // as we do: the update goes through.
    stale["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("resourceVersion");
    stale["spec"]["holderIdentity"] = json!("maintenance");
    let file = write(&fake, "fresh.json", &stale.to_string());
    fake.clear_requests();
    kubectl.run(&["replace", "--validate=false", "-f", &file]);
    let puts: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .filter_map(|r| r.body)
        .collect();
    assert_eq!(puts.len(), 1);
    assert!(
        puts[0]["metadata"]["resourceVersion"].is_string(),
        "kubectl's PUT carries the version: {}",
        puts[0]
    );
    assert_eq!(
        fake.lease(NS, &slot_name(0)).unwrap()["spec"]["holderIdentity"],
        "maintenance"
    );
    assert!(matches!(c.begin_pass().await, PassStart::NoSlot(_)));
}

#[tokio::test]
async fn kubectl_gets_the_same_403_as_the_daemon() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.forbid_leases(true);
    let out = kubectl.output(&["get", "lease", &slot_name(0), "-n", NS]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "Error from server (Forbidden): leases.coordination.k8s.io \"{}\" is forbidden",
            slot_name(0)
        )),
        "{stderr}"
    );
}
