//! The kubeconfig's credentials against the fake API server: token files, inline tokens, TLS
//! settings, node names that are not Node names, and exec credential plugins (failing, hanging,
//! counted). What is asserted is what an operator notices: a clear error instead of a panic, no
//! secret in any log line, a daemon that keeps running and pinging, one plugin run per pass.
//!
//! The tests at the top run the guard in-process; [`daemon`] runs the built binary with a fake
//! notify socket and no Docker (the recovery at start is the daemon's first Kubernetes call).

use std::path::{Path, PathBuf};
use std::time::Duration;

use docker_image_cleaner::config::{Config, OnCordonFailure};
use docker_image_cleaner::node::{Cordoner, NodeEvent, PassStart, chain};
use serde_json::json;

use crate::kube_fake::{FakeKube, exec_user, quick_timing};

const NODE: &str = "n1";

fn cordoner(config: &Config) -> Cordoner {
    Cordoner::new(config).with_timing(quick_timing())
}

/// A configuration for [`NODE`] through the kubeconfig at `path`.
fn config_with(fake: &FakeKube, path: &Path) -> Config {
    Config {
        kubeconfig: Some(path.to_path_buf()),
        ..fake.config(NODE)
    }
}

fn unschedulable(fake: &FakeKube) -> bool {
    fake.node(NODE).pointer("/spec/unschedulable") == Some(&json!(true))
}

/// How many times the plugin counting into `runs` has run.
fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn event() -> NodeEvent {
    NodeEvent {
        warning: false,
        reason: "ImagesRemoved",
        message: "removed 1 image, freed 10 MiB".to_string(),
    }
}

/// A kubeconfig whose user entry is `user`, next to the fake's own.
fn kubeconfig(fake: &FakeKube, name: &str, user: &str) -> PathBuf {
    let path = fake.dir().join(name);
    fake.write_kubeconfig_user(&path, user);
    path
}

#[tokio::test]
async fn a_token_file_ending_in_a_newline_works() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    // What `kubectl create token ... > file` writes.
    let token_file = fake.dir().join("token");
    std::fs::write(&token_file, format!("{}\n", fake.token())).expect("write token");
    let path = kubeconfig(
        &fake,
        "token-file.kubeconfig",
        &format!("    tokenFile: {}\n", token_file.display()),
    );
    let mut c = cordoner(&config_with(&fake, &path));
    c.recover()
        .await
        .expect("a trailing newline is trimmed, as client-go does");
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(c.holds_cordon(), "{}", c.describe());
    c.end_pass(None).await;
    assert!(!unschedulable(&fake));
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_by_the_next_pass() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let token_file = fake.dir().join("token");
    std::fs::write(&token_file, fake.token()).expect("write token");
    let path = kubeconfig(
        &fake,
        "token-file.kubeconfig",
        &format!("    tokenFile: {}\n", token_file.display()),
    );
    let mut c = cordoner(&config_with(&fake, &path));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(None).await;
    assert!(!c.holds_cordon());

    // The token rotates: the server accepts only the new one, which is in the file now.
    let rotated = format!("{}-rotated", fake.token());
    fake.set_token(&rotated);
    std::fs::write(&token_file, &rotated).expect("rotate token");
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(
        c.holds_cordon(),
        "the rotated token is used: {}",
        c.describe()
    );
    c.end_pass(None).await;
    assert!(!unschedulable(&fake));
}

#[tokio::test]
async fn an_inline_token_with_a_line_break_is_a_clear_error_not_a_panic() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let secret = fake.token();
    // `token: |` keeps the line break after the token: not a valid HTTP header value.
    let path = kubeconfig(
        &fake,
        "block-token.kubeconfig",
        &format!("    token: |\n      {secret}\n"),
    );
    let mut c = cordoner(&config_with(&fake, &path));
    let err = c.recover().await.expect_err("refused");
    let text = chain(&err);
    assert!(err.is_config(), "{text}");
    assert!(
        text.contains(&path.display().to_string()) && text.contains("user \"fake\""),
        "names the kubeconfig and the user entry: {text}"
    );
    assert!(text.contains("header"), "{text}");
    assert!(!text.contains(&secret), "never the token: {text}");
    assert!(!c.describe().contains(&secret), "{}", c.describe());
    // A pass cleans uncordoned (on_cordon_failure = clean) and touches nothing.
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_ca_with_insecure_skip_tls_verify_is_refused_as_kubectl_refuses_it() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let path = fake.dir().join("ca-and-insecure.kubeconfig");
    fake.write_kubeconfig_raw(
        &path,
        &format!(
            "    certificate-authority: {}\n    insecure-skip-tls-verify: true\n",
            fake.ca_path().display()
        ),
        &format!("    token: {}\n", fake.token()),
    );
    let mut c = cordoner(&config_with(&fake, &path));
    let err = c.recover().await.expect_err("refused");
    let text = chain(&err);
    assert!(err.is_config(), "{text}");
    assert!(
        text.contains("specifying a root certificates file with the insecure flag is not allowed"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn node_names_that_are_not_node_names_reach_no_url() {
    let fake = FakeKube::start();
    fake.add_node("node-1", json!({}));
    for name in [
        "node-1?dryRun=All",
        "node-1/status",
        "../../api/v1/namespaces/kube-system/secrets",
        "node-1#x",
        "Node-1",
    ] {
        let config = Config {
            node_name: Some(name.to_string()),
            ..fake.config("node-1")
        };
        let mut c = cordoner(&config);
        let err = c.recover().await.expect_err(name);
        let text = chain(&err);
        assert!(err.is_config(), "{name}: {text}");
        assert!(text.contains(name) && text.contains("RFC 1123"), "{text}");
        assert_eq!(c.begin_pass().await, PassStart::Proceed, "{name}");
        c.end_pass(Some(event())).await;
        assert!(fake.requests().is_empty(), "{name}: {:?}", fake.requests());
    }
    assert!(
        !fake
            .node("node-1")
            .pointer("/spec/unschedulable")
            .is_some_and(|v| v == &json!(true))
    );
}

#[tokio::test]
async fn a_failing_plugin_is_transient_and_tried_again_at_the_next_pass() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let count = fake.dir().join("runs");
    let plugin = fake.write_script(
        "failing.sh",
        &format!(
            "echo run >> '{}'\necho 'no credential today' >&2\nexit 1\n",
            count.display()
        ),
    );
    let path = kubeconfig(&fake, "failing.kubeconfig", &exec_user(&plugin));
    let mut c = cordoner(&config_with(&fake, &path));
    let err = c.recover().await.expect_err("the plugin fails");
    let text = chain(&err);
    assert!(
        !err.is_config(),
        "a credential failure is transient: {text}"
    );
    assert!(err.is_transient(), "{text}");
    assert!(
        text.contains(&plugin.display().to_string()),
        "names the command: {text}"
    );
    assert!(text.contains("status 1"), "its exit status: {text}");
    assert!(
        !text.contains("no credential today"),
        "not what it printed: {text}"
    );
    assert_eq!(runs(&count), 1);
    // Cleans uncordoned (on_cordon_failure = clean), saying why; tried again at the next pass.
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(runs(&count), 2);
    let status = c.describe();
    assert!(
        status.contains("credential") && status.contains("status 1"),
        "{status}"
    );
    c.end_pass(None).await;

    let mut skipping = cordoner(&Config {
        on_cordon_failure: OnCordonFailure::Skip,
        ..config_with(&fake, &path)
    });
    assert_eq!(skipping.begin_pass().await, PassStart::Skip);
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn the_plugin_runs_once_while_its_credential_is_valid() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let count = fake.dir().join("runs");
    let user = fake.exec_plugin(&count, Some("2099-01-01T00:00:00Z"));
    let path = kubeconfig(&fake, "exec.kubeconfig", &user);
    let mut c = cordoner(&config_with(&fake, &path));
    c.recover().await.expect("recover");
    for _ in 0..2 {
        assert_eq!(c.begin_pass().await, PassStart::Proceed);
        assert!(c.holds_cordon(), "{}", c.describe());
        c.end_pass(Some(event())).await;
        assert!(!c.holds_cordon());
    }
    assert_eq!(fake.events().len(), 2);
    assert_eq!(
        runs(&count),
        1,
        "one credential for the start and two passes"
    );
}

#[tokio::test]
async fn a_credential_without_expiry_is_fetched_once_per_pass() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let count = fake.dir().join("runs");
    let user = fake.exec_plugin(&count, None);
    let path = kubeconfig(&fake, "exec.kubeconfig", &user);
    let mut c = cordoner(&config_with(&fake, &path));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.check_deadline().await;
    c.end_pass(Some(event())).await;
    assert_eq!(
        runs(&count),
        1,
        "cordon, uncordon and Event share one credential"
    );
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(Some(event())).await;
    assert_eq!(runs(&count), 2, "fetched again at the next pass");
    assert!(!unschedulable(&fake));
}

#[tokio::test]
async fn a_hanging_plugin_is_killed_within_the_bound_of_the_call() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    let pids = fake.dir().join("pids");
    let plugin = fake.write_script(
        "hanging.sh",
        &format!("echo $$ >> '{}'\nsleep 30\n", pids.display()),
    );
    let path = kubeconfig(&fake, "hanging.kubeconfig", &exec_user(&plugin));
    let mut c = cordoner(&config_with(&fake, &path));
    let started = std::time::Instant::now();
    let err = c.recover().await.expect_err("timed out");
    let took = started.elapsed();
    assert!(
        took <= c.max_call_time(),
        "{took:?} > {:?}",
        c.max_call_time()
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(!err.is_config(), "{}", chain(&err));
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));
    let pid = std::fs::read_to_string(&pids).expect("the plugin ran");
    let pid: u32 = pid.trim().parse().expect("pid");
    assert!(
        group_gone(pid, Duration::from_secs(5)),
        "the plugin ({pid}) and its process group are killed"
    );
}

/// Whether process `pid` and every process of the group it leads are gone within `bound`.
fn group_gone(pid: u32, bound: Duration) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        let alive = std::fs::read_dir("/proc")
            .map(|entries| {
                entries.flatten().any(|e| {
                    let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                        return false;
                    };
                    // Fields after the command: state, ppid, pgrp.
                    let Some((_, rest)) = stat.rsplit_once(')') else {
                        return false;
                    };
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let me = e.file_name().to_string_lossy() == pid.to_string();
                    let zombie = fields.first() == Some(&"Z");
                    !zombie && (me || fields.get(2) == Some(&pid.to_string().as_str()))
                })
            })
            .unwrap_or(false);
        if !alive {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn client_certificate_files_not_written_yet_are_waited_for() {
    let fake = FakeKube::start();
    fake.add_node(NODE, json!({}));
    // The kubelet's kubeconfig names its client certificate before TLS bootstrap writes it.
    let cert = fake.dir().join("pki/kubelet-client-current.pem");
    let path = kubeconfig(
        &fake,
        "kubelet.conf",
        &format!(
            "    client-certificate: {}\n    client-key: {}\n    token: {}\n",
            cert.display(),
            cert.display(),
            fake.token()
        ),
    );
    let mut c = cordoner(&config_with(&fake, &path));
    let err = c.recover().await.expect_err("no certificate yet");
    let text = chain(&err);
    assert!(!err.is_config() && err.is_transient(), "{text}");
    assert!(text.contains(&cert.display().to_string()), "{text}");
    assert!(
        c.describe().contains("no Kubernetes credential"),
        "{}",
        c.describe()
    );
    assert!(fake.requests().is_empty());

    // Bootstrap writes certificate and key into one file, as the kubelet does.
    let issued = rcgen::generate_simple_self_signed(vec!["system:node:n1".to_string()])
        .expect("certificate");
    std::fs::create_dir_all(cert.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &cert,
        format!(
            "{}{}",
            issued.cert.pem(),
            issued.signing_key.serialize_pem()
        ),
    )
    .expect("write certificate");
    c.retry_release().await;
    assert_eq!(fake.node_calls(NODE).len(), 1, "the recovery GET went out");
    assert!(c.describe().contains("cordon ready"), "{}", c.describe());
}
