//! kubectl as the reference for kubeconfig variants: what it accepts the daemon accepts, what it
//! refuses the daemon refuses.

use docker_image_cleaner::node::{Cordoner, chain};
use serde_json::json;

use super::Kubectl;
use crate::kube_fake::{FakeKube, quick_timing};

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
        let theirs = kubectl
            .with_kubeconfig(&path)
            .output(&["get", "node", "n1"]);
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
