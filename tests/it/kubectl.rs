//! Cross-checks with the real `kubectl` against the fake API server: the fake answers kubectl
//! the way a cluster does, our requests on the Node have the shape of `kubectl cordon/uncordon`,
//! and kubectl reads back the state we wrote.
//!
//! With `CI=true` a missing kubectl fails these tests; elsewhere they are skipped with a note.

use std::path::PathBuf;
use std::process::Output;

use docker_image_cleaner::config::CordonMode;
use docker_image_cleaner::node::{ANNOTATION, Cordoner, NodeEvent, PassStart, TAINT_KEY, chain};
use serde_json::{Value, json};

use crate::kube_fake::{FakeKube, quick_timing};

/// The kubectl binary, or `None` (after a loud note) when it is missing outside CI.
fn kubectl_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("kubectl"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "kubectl is not on PATH: the kubectl cross-checks cannot run in CI without it"
        );
        eprintln!("SKIPPED: kubectl is not on PATH; the kubectl cross-checks did not run");
    }
    found
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Kubectl {
    fn new(fake: &FakeKube) -> Option<Self> {
        let home = fake.dir().join("home");
        std::fs::create_dir_all(&home).expect("kubectl home");
        Some(Self {
            binary: kubectl_binary()?,
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

/// Kubeconfig variants where kubectl's behaviour is the reference: what kubectl accepts we
/// accept, and what it refuses we refuse (with its words where it has them).
#[tokio::test]
async fn kubectl_and_we_agree_on_tokens_tls_settings_and_exec_plugins() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    let token = fake.token();
    let ca = format!("    certificate-authority: {}\n", fake.ca_path().display());
    let token_file = fake.dir().join("token");
    // What `kubectl create token ... > file` writes.
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let runs = fake.dir().join("plugin-runs");
    let cases: [(&str, String, String, Result<(), &str>); 5] = [
        (
            "tokenFile ending in a newline",
            ca.clone(),
            format!("    tokenFile: {}\n", token_file.display()),
            Ok(()),
        ),
        (
            "exec plugin",
            ca.clone(),
            fake.exec_plugin(&runs, Some("2099-01-01T00:00:00Z")),
            Ok(()),
        ),
        (
            "insecure-skip-tls-verify without a CA",
            "    insecure-skip-tls-verify: true\n".to_string(),
            format!("    token: {token}\n"),
            Ok(()),
        ),
        (
            "token: | (a line break after the token)",
            ca.clone(),
            format!("    token: |\n      {token}\n"),
            Err("invalid header field value"),
        ),
        (
            "a CA and insecure-skip-tls-verify",
            format!("{ca}    insecure-skip-tls-verify: true\n"),
            format!("    token: {token}\n"),
            Err("specifying a root certificates file with the insecure flag is not allowed"),
        ),
    ];
    for (i, (what, cluster, user, expected)) in cases.into_iter().enumerate() {
        let path = fake.dir().join(format!("variant-{i}.kubeconfig"));
        fake.write_kubeconfig_raw(&path, &cluster, &user);
        let theirs = kubectl.with_kubeconfig(&path).output(&["get", "node", "n1"]);
        let stderr = String::from_utf8_lossy(&theirs.stderr);
        let mut config = fake.config("n1");
        config.kubeconfig = Some(path);
        let mut c = Cordoner::new(&config).with_timing(quick_timing());
        let ours = c.recover().await;
        match expected {
            Ok(()) => {
                assert!(theirs.status.success(), "{what}: kubectl: {stderr}");
                assert!(ours.is_ok(), "{what}: {}", c.describe());
            }
            Err(words) => {
                assert!(
                    !theirs.status.success() && stderr.contains(words),
                    "{what}: kubectl refuses it: {stderr}"
                );
                let err = ours.expect_err(what);
                assert!(err.is_config(), "{what}: {}", chain(&err));
                assert!(!chain(&err).contains(&token), "{what}: never the token");
                if what.contains("CA") {
                    assert!(chain(&err).contains(words), "{what}: {}", chain(&err));
                }
            }
        }
    }
}

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("packaging/kubernetes")
        .join(file)
}

#[test]
fn shipped_rbac_grants_only_what_the_daemon_uses() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    let rbac = packaging("rbac.yaml");
    let rbac = rbac.to_str().expect("UTF-8 path");
    let printed = kubectl.run(&[
        "create",
        "--dry-run=client",
        "--validate=false",
        "-o",
        "json",
        "-f",
        rbac,
    ]);
    let items: Vec<Value> = serde_json::Deserializer::from_str(&printed)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .expect("kubectl prints each object as JSON");
    let kinds: Vec<&str> = items.iter().filter_map(|i| i["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let rules = |kind: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind)
            .map(|i| i["rules"].clone())
            .expect("present")
    };
    assert_eq!(
        rules("ClusterRole"),
        json!([{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"] }])
    );
    assert_eq!(
        rules("Role"),
        json!([{ "apiGroups": [""], "resources": ["events"], "verbs": ["create"] }])
    );
    let role = items.iter().find(|i| i["kind"] == "Role").expect("Role");
    assert_eq!(
        role["metadata"]["namespace"],
        docker_image_cleaner::node::EVENT_NAMESPACE
    );
    for binding in items
        .iter()
        .filter(|i| i["kind"].as_str().is_some_and(|k| k.ends_with("Binding")))
    {
        assert_eq!(
            binding["subjects"],
            json!([{ "kind": "ServiceAccount", "name": "docker-image-cleaner", "namespace": "kube-system" }])
        );
    }
}

#[tokio::test]
async fn make_kubeconfig_gives_the_daemon_a_working_kubeconfig() {
    let fake = FakeKube::start();
    let Some(kubectl) = Kubectl::new(&fake) else {
        return;
    };
    fake.add_node("n1", json!({}));
    fake.add_service_account("kube-system", "docker-image-cleaner");

    for (mode, args) in [("bound", &[][..]), ("secret", &["--secret"][..])] {
        let output = fake.dir().join(format!("{mode}.kubeconfig"));
        let run = std::process::Command::new("bash")
            .arg(packaging("make-kubeconfig.sh"))
            .arg("--output")
            .arg(&output)
            .args(args)
            .env("KUBECONFIG", fake.kubeconfig())
            .env("HOME", &kubectl.home)
            .env("PATH", path_with(&kubectl.binary))
            .output()
            .expect("run make-kubeconfig.sh");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{mode}: {stderr}");
        assert!(run.stdout.is_empty(), "the token never goes to stdout");
        assert!(stderr.contains("wrote"), "{stderr}");

        let issued = fake.issued_tokens();
        let (account, token) = issued.last().expect("a token was issued");
        assert_eq!(account, "kube-system/docker-image-cleaner");
        let text = std::fs::read_to_string(&output).expect("kubeconfig");
        assert!(
            text.contains(token.as_str()) && !text.contains(&fake.token()),
            "{mode}"
        );
        assert!(!stderr.contains(token.as_str()));
        use std::os::unix::fs::PermissionsExt;
        let mode_bits = std::fs::metadata(&output)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode_bits & 0o777, 0o600);

        // The daemon cordons and uncordons with it.
        let mut config = fake.config("n1");
        config.kubeconfig = Some(output);
        let mut c = Cordoner::new(&config).with_timing(quick_timing());
        assert_eq!(c.begin_pass().await, PassStart::Proceed);
        assert!(c.holds_cordon(), "{mode}: {}", c.describe());
        c.end_pass(None).await;
        assert!(!c.holds_cordon());
    }

    // Run again in secret mode: the Secret is reused, no new token.
    let before = fake.issued_tokens().len();
    let again = std::process::Command::new("bash")
        .arg(packaging("make-kubeconfig.sh"))
        .args(["--secret", "--output"])
        .arg(fake.dir().join("again.kubeconfig"))
        .env("KUBECONFIG", fake.kubeconfig())
        .env("HOME", &kubectl.home)
        .env("PATH", path_with(&kubectl.binary))
        .output()
        .expect("run make-kubeconfig.sh");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(fake.issued_tokens().len(), before);
}

/// PATH with the directory of `binary` first.
fn path_with(binary: &std::path::Path) -> std::ffi::OsString {
    let dir = binary
        .parent()
        .expect("kubectl has a directory")
        .to_path_buf();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&rest))).expect("PATH")
}
