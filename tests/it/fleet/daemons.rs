//! Five real daemons (the built binary under a fake notify socket), each on its own private
//! dockerd, all above their high watermark at once, against one fake API server with two fleet
//! slots: never more than two nodes cordoned at any instant (from the server's log of changes),
//! the others wait and say so in `STATUS=`, every node is cleaned and uncordoned, every slot is
//! given back, and SIGTERM stops each daemon with exit 0.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::{NS, holder, unschedulable};
use crate::kube_fake::FakeKube;
use crate::util::cleaner::Cleaner;
use crate::util::daemon::Daemon;
use crate::util::dockerd::PrivateDockerd;
use crate::util::wait_until;

const NODES: usize = 5;
const SLOTS: usize = 2;

#[test]
fn five_daemons_with_two_slots_never_cordon_more_than_two_nodes() {
    let fake = FakeKube::start();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let Some(d) = PrivateDockerd::start(&format!("fleet-{i}"), 256, None) else {
            return;
        };
        // Three images of 12 MiB each (about 5 % of the disk each).
        for image in ["a", "b", "c"] {
            d.image(&format!("{image}:{i}"), 12);
        }
        let name = format!("node-{i}");
        fake.add_node(&name, json!({}));
        let (used, _) = d.used_pct();
        // Just under the usage now, and low enough that at least two images must go.
        let high = (used - 1.0).floor();
        let low = high - 8.0;
        let cleaner = Cleaner::new(
            &d,
            &format!(
                "interval_seconds = 1\nthreshold_high = {high}\nthreshold_low = {low}\n\
                 node_name = {name:?}\nkubeconfig = {:?}\n\
                 fleet_max_cordoned = {SLOTS}\nfleet_lease_seconds = 3\n",
                fake.kubeconfig().display().to_string()
            ),
        );
        nodes.push((name, d, cleaner, low));
    }
    let since = fake.changes().len();

    // All at once, as the nodes of one cluster cross the watermark together; a second between
    // two removals, so that passes overlap.
    let mut daemons: Vec<Daemon> = nodes
        .iter()
        .map(|(_, _, cleaner, _)| {
            let mut cmd = cleaner.command(&["run"]);
            cmd.env("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "1");
            Daemon::service(cmd, None)
        })
        .collect();

    let cleaned = |fake: &FakeKube| -> BTreeSet<String> {
        let mut on = BTreeSet::new();
        let mut done = BTreeSet::new();
        for c in fake
            .changes()
            .iter()
            .skip(since)
            .filter(|c| c.kind == "nodes")
        {
            if unschedulable(&c.object) {
                on.insert(c.name.clone());
            } else if on.remove(&c.name) {
                done.insert(c.name.clone());
            }
        }
        done
    };
    let all_done = wait_until(Duration::from_secs(180), || {
        // Read what each daemon tells systemd: a full notify socket would block it.
        for d in daemons.iter_mut() {
            while d.notify.recv(Duration::from_millis(1)).is_some() {}
        }
        cleaned(&fake).len() == NODES && nodes.iter().all(|(_, d, _, low)| d.used_pct().0 < *low)
    });
    assert!(
        all_done,
        "not every node cleaned: {:?}\n{}",
        cleaned(&fake),
        context(&daemons)
    );
    for d in &mut daemons {
        d.terminate(Duration::from_secs(30));
    }

    // The server's log: the most nodes unschedulable at any instant.
    let mut cordoned = BTreeSet::new();
    let mut most = 0;
    for c in fake
        .changes()
        .iter()
        .skip(since)
        .filter(|c| c.kind == "nodes")
    {
        if unschedulable(&c.object) {
            cordoned.insert(c.name.clone());
        } else {
            cordoned.remove(&c.name);
        }
        most = most.max(cordoned.len());
    }
    let waited: Vec<usize> = daemons
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            d.statuses()
                .iter()
                .any(|s| s.starts_with("waiting for a cleaning slot (2 of 2 held by "))
        })
        .map(|(i, _)| i)
        .collect();
    eprintln!(
        "fleet daemons: {NODES} daemons, {SLOTS} slots: at most {most} nodes cordoned at once; daemons {waited:?} waited for a slot"
    );
    assert!(
        most <= SLOTS,
        "{most} nodes cordoned at once\n{}",
        context(&daemons)
    );
    assert_eq!(most, SLOTS, "the slots were used side by side");
    assert!(
        !waited.is_empty(),
        "someone waited for a slot\n{}",
        context(&daemons)
    );
    for (name, _, _, _) in &nodes {
        assert!(!unschedulable(&fake.node(name)), "{name} left cordoned");
    }
    let leases = fake.leases(NS);
    assert!(!leases.is_empty() && leases.len() <= SLOTS, "{leases:?}");
    assert!(
        leases.iter().all(|l| holder(l).is_none()),
        "every slot given back: {leases:?}"
    );
}

/// Every daemon's notify transcript and output, for assertion messages.
fn context(daemons: &[Daemon]) -> String {
    daemons
        .iter()
        .map(|d| d.context())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

#[test]
fn sigterm_mid_pass_uncordons_then_gives_the_slot_back() {
    let fake = FakeKube::start();
    let Some(d) = PrivateDockerd::start("fleet-term", 256, None) else {
        return;
    };
    for image in ["a", "b", "c"] {
        d.image(&format!("{image}:1"), 12);
    }
    fake.add_node("node-t", json!({}));
    let (used, _) = d.used_pct();
    let high = (used - 1.0).floor();
    let cleaner = Cleaner::new(
        &d,
        &format!(
            "interval_seconds = 1\nthreshold_high = {high}\nthreshold_low = {}\n\
             node_name = \"node-t\"\nkubeconfig = {:?}\nfleet_max_cordoned = 1\n",
            high - 8.0,
            fake.kubeconfig().display().to_string()
        ),
    );
    // A minute between two removals: the pass is surely cordoned when SIGTERM comes.
    let mut cmd = cleaner.command(&["run"]);
    cmd.env("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "60");
    let mut daemon = Daemon::service(cmd, None);
    daemon.wait_status("cleaning: step 1 of", Duration::from_secs(60));
    assert!(unschedulable(&fake.node("node-t")));
    let slot = docker_image_cleaner::node::slot_name(0);
    assert_eq!(
        fake.lease(NS, &slot).as_ref().and_then(holder),
        Some("node-t"),
        "holding the slot"
    );
    let took = daemon.terminate(Duration::from_secs(30));
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(!unschedulable(&fake.node("node-t")));
    let lease = fake.lease(NS, &slot).expect("kept");
    assert_eq!(holder(&lease), None, "given back: {lease}");
    let changes = fake.changes();
    let uncordoned = changes
        .iter()
        .rposition(|c| c.kind == "nodes" && !unschedulable(&c.object))
        .expect("uncordoned");
    let released = changes
        .iter()
        .rposition(|c| c.kind == "leases" && holder(&c.object).is_none())
        .expect("released");
    assert!(uncordoned < released, "the uncordon first, then the slot");
}
