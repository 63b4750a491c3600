//! Cross-checks with the real `kubectl` against the fake API server: the fake answers kubectl
//! the way a cluster does, our requests on the Node have the shape of `kubectl cordon/uncordon`,
//! and kubectl reads back the state we wrote.
//!
//! `kubeconfigs` checks kubeconfig variants against kubectl's verdicts; `leases` the fleet's slot
//! Leases; `packaging` checks `packaging/kubernetes/` with it.
//!
//! Each test requires `Service::Kubectl` (`util::require`): without kubectl it is recorded as
//! skipped, or fails under CI.

use std::path::PathBuf;
use std::process::Output;

use docker_image_cleaner::config::CordonMode;
use docker_image_cleaner::node::{ANNOTATION, Cordoner, NodeEvent, PassStart, TAINT_KEY};
use serde_json::{Value, json};

use crate::kube_fake::{FakeKube, quick_timing};
use crate::util::host;
use crate::util::require::{Service, require};

mod kubeconfigs;
mod leases;
mod packaging;

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    /// kubectl against `fake`, or `None` when this machine has none (recorded as a skip; a
    /// failure under CI): the test returns at once.
    fn new(fake: &FakeKube) -> Option<Self> {
        if !require(Service::Kubectl) {
            return None;
        }
        let binary = host::find_in_path("kubectl").expect("require checked that kubectl is there");
        let home = fake.dir().join("home");
        std::fs::create_dir_all(&home).expect("kubectl home");
        Some(Self {
            binary,
            kubeconfig: fake.kubeconfig().to_path_buf(),
            home,
        })
    }

    /// The same kubectl with another kubeconfig.
    fn with_kubeconfig(&self, kubeconfig: &std::path::Path) -> Kubectl {
        Kubectl {
            binary: self.binary.clone(),
            kubeconfig: kubeconfig.to_path_buf(),
            home: self.home.clone(),
        }
    }

    fn output(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.home.join("cache"))
            .arg("--request-timeout=20s")
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &self.home)
            .output()
            .expect("run kubectl")
    }

    /// Runs kubectl and returns its stdout; fails the test when it fails.
    fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn node(&self, name: &str) -> Value {
        serde_json::from_str(&self.run(&["get", "node", name, "-o", "json"])).expect("node JSON")
    }
}

fn cordoner(fake: &FakeKube, mode: CordonMode) -> Cordoner {
    let mut config = fake.config("n1");
    config.cordon_mode = mode;
    Cordoner::new(&config).with_timing(quick_timing())
}

/// The spec part of each PATCH on n1 since the last clear.
fn patched_specs(fake: &FakeKube) -> Vec<Value> {
    fake.patches("n1")
        .into_iter()
        .map(|p| p["spec"].clone())
        .collect()
}

#[tokio::test]
async fn our_node_requests_have_the_shape_of_kubectls() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));

    // What kubectl sends.
    let mut theirs = Vec::new();
    for args in [
        ["cordon", "n1"],
        ["cordon", "n1"],
        ["uncordon", "n1"],
        ["uncordon", "n1"],
    ] {
        fake.clear_requests();
        kubectl.run(&args);
        theirs.push((fake.node_calls("n1"), patched_specs(&fake)));
    }
    let (cordon, again, uncordon, again_un) = (&theirs[0], &theirs[1], &theirs[2], &theirs[3]);
    let smp = Some("application/strategic-merge-patch+json".to_string());
    assert_eq!(
        cordon.0,
        [
            ("GET".to_string(), None),
            ("PATCH".to_string(), smp.clone())
        ]
    );
    assert_eq!(cordon.1, [json!({ "unschedulable": true })]);
    assert_eq!(
        again.0,
        [("GET".to_string(), None)],
        "kubectl: no PATCH when already cordoned"
    );
    assert_eq!(uncordon.1, [json!({ "unschedulable": null })]);
    assert_eq!(again_un.0, [("GET".to_string(), None)]);

    // What we send for the same transitions.
    let mut c = cordoner(&fake, CordonMode::Cordon);
    fake.clear_requests();
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(fake.node_calls("n1"), cordon.0);
    assert_eq!(patched_specs(&fake), cordon.1);

    fake.clear_requests();
    c.end_pass(None).await;
    assert_eq!(fake.node_calls("n1"), uncordon.0);
    assert_eq!(patched_specs(&fake), uncordon.1);

    // Already cordoned (by kubectl, so not ours): a GET and nothing else, as kubectl does.
    kubectl.run(&["cordon", "n1"]);
    fake.clear_requests();
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(None).await;
    assert_eq!(fake.node_calls("n1"), again.0);
    assert_eq!(kubectl.node("n1")["spec"]["unschedulable"], json!(true));
}

#[tokio::test]
async fn kubectl_reads_back_what_we_wrote() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake, CordonMode::Cordon);

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let node = kubectl.node("n1");
    assert_eq!(node["spec"]["unschedulable"], json!(true));
    let stamp = node["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .expect("annotation");
    assert!(stamp.ends_with('Z'), "{stamp}");
    // kubectl's own view agrees: cordoning again is a no-op for it.
    assert!(kubectl.run(&["cordon", "n1"]).contains("already cordoned"));

    let event = NodeEvent {
        warning: false,
        reason: "ImagesRemoved",
        message: "removed 3 images, freed 1.2 GiB".to_string(),
    };
    c.end_pass(Some(event)).await;
    let node = kubectl.node("n1");
    assert_eq!(node["spec"].get("unschedulable"), None, "{node}");
    assert_eq!(
        node["metadata"]["annotations"].get(ANNOTATION),
        None,
        "{node}"
    );

    // kubectl finds the Event we posted where it looks for node events, with the fields it shows.
    let columns = "custom-columns=TYPE:.type,REASON:.reason,KIND:.involvedObject.kind,\
                   NAME:.involvedObject.name,SOURCE:.source.component,MESSAGE:.message";
    let table = kubectl.run(&["get", "events", "-n", "default", "-o", columns]);
    let expected_row = [
        "Normal",
        "ImagesRemoved",
        "Node",
        "n1",
        "docker-image-cleaner",
        "removed",
    ];
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(6).eq(expected_row)),
        "{table}"
    );
    // Named like the kubelet's events, and aged from the server's creationTimestamp.
    let table = kubectl.run(&["get", "events", "-n", "default"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("n1.") && !row.contains("<unknown>"),
        "{table}"
    );
}

#[tokio::test]
async fn taint_mode_round_trips_through_kubectl() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    kubectl.run(&["taint", "nodes", "n1", "dedicated=gpu:NoSchedule"]);
    // kubectl sends the whole taint list in its strategic merge patch, as we do (it is atomic).
    assert_eq!(
        patched_specs(&fake),
        [json!({ "taints": [{ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" }] })]
    );

    let mut c = cordoner(&fake, CordonMode::Taint);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let taints = kubectl.run(&["get", "node", "n1", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert_eq!(taints, format!("dedicated {TAINT_KEY}"));

    // An admin adds a taint meanwhile; our release keeps it.
    kubectl.run(&["taint", "nodes", "n1", "example.com/maint=yes:NoExecute"]);
    c.end_pass(None).await;
    let taints = kubectl.run(&["get", "node", "n1", "-o", "jsonpath={.spec.taints[*].key}"]);
    let mut keys: Vec<&str> = taints.split_whitespace().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["dedicated", "example.com/maint"]);
}

#[tokio::test]
async fn kubectl_understands_the_fakes_errors() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));

    let out = kubectl.output(&["get", "node", "ghost"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Error from server (NotFound): nodes \"ghost\" not found"),
        "{stderr}"
    );

    let bad = fake.dir().join("bad-kubeconfig");
    fake.write_kubeconfig(&bad, "wrong-token");
    let unauthorized = Kubectl {
        kubeconfig: bad,
        ..kubectl
    };
    let out = unauthorized.output(&["get", "node", "n1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("You must be logged in to the server (Unauthorized)"),
        "{stderr}"
    );
    assert!(
        fake.requests().iter().any(|r| r
            .user_agent
            .as_deref()
            .is_some_and(|a| a.starts_with("kubectl"))),
        "kubectl talked to the fake"
    );
}
