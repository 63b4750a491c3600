//! `packaging/kubernetes/` checked with kubectl: the RBAC it grants, and the kubeconfig
//! `make-kubeconfig.sh` writes.

use std::path::PathBuf;

use docker_image_cleaner::node::{Cordoner, PassStart};
use serde_json::{Value, json};

use super::Kubectl;
use crate::kube_fake::{FakeKube, quick_timing};

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
            "RoleBinding",
            "Role",
            "RoleBinding"
        ]
    );
    let named = |kind: &str, name: &str| {
        items
            .iter()
            .find(|i| i["kind"] == kind && i["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name} present"))
    };
    let rules = |kind: &str| match kind {
        "ClusterRole" => named(kind, "docker-image-cleaner")["rules"].clone(),
        _ => named(kind, "docker-image-cleaner-events")["rules"].clone(),
    };
    assert_eq!(
        rules("ClusterRole"),
        json!([{ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"] }])
    );
    assert_eq!(
        rules("Role"),
        json!([{ "apiGroups": [""], "resources": ["events"], "verbs": ["create"] }])
    );
    let role = named("Role", "docker-image-cleaner-events");
    assert_eq!(
        role["metadata"]["namespace"],
        docker_image_cleaner::node::EVENT_NAMESPACE
    );
    // Fleet slots: leases in the default fleet_namespace only, and only the verbs used.
    let slots = named("Role", "docker-image-cleaner-slots");
    assert_eq!(
        slots["metadata"]["namespace"],
        docker_image_cleaner::config::Config::default().fleet_namespace
    );
    assert_eq!(
        slots["rules"],
        json!([{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"] }])
    );
    assert_eq!(
        named("RoleBinding", "docker-image-cleaner-slots")["roleRef"]["name"],
        "docker-image-cleaner-slots"
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

        // The daemon takes a fleet slot, cordons and uncordons with it.
        let mut config = fake.config("n1");
        config.kubeconfig = Some(output);
        config.fleet_max_cordoned = 2;
        let mut c = Cordoner::new(&config).with_timing(quick_timing());
        assert_eq!(c.begin_pass().await, PassStart::Proceed);
        assert!(c.holds_cordon(), "{mode}: {}", c.describe());
        assert!(c.holds_slot(), "{mode}: {}", c.describe());
        c.end_pass(None).await;
        assert!(!c.holds_cordon() && !c.holds_slot());
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
