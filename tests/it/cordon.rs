//! The cordon guard against the fake API server: ownership, recovery, failures, taint mode,
//! max_cordon and Events. Each test synchronises on the requests the server recorded.

use std::time::Duration;

use docker_image_cleaner::config::{Config, CordonMode, OnCordonFailure};
use docker_image_cleaner::node::{
    ANNOTATION, Cordoner, LEGACY_ANNOTATION, NodeEvent, PassStart, TAINT_KEY, chain,
};
use serde_json::{Value, json};

use crate::kube_fake::{FakeKube, Fault, quick_timing};

const SMP: &str = "application/strategic-merge-patch+json";

fn calls(list: &[&str]) -> Vec<(String, Option<String>)> {
    list.iter()
        .map(|m| {
            let ct = (*m == "PATCH").then(|| SMP.to_string());
            (m.to_string(), ct)
        })
        .collect()
}

fn cordoner(config: &Config) -> Cordoner {
    Cordoner::new(config).with_timing(quick_timing())
}

fn unschedulable(node: &Value) -> bool {
    node.pointer("/spec/unschedulable") == Some(&json!(true))
}

fn annotation<'a>(node: &'a Value, key: &str) -> Option<&'a Value> {
    node.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
}

#[tokio::test]
async fn cordons_around_a_pass_and_uncordons_after() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));

    c.recover().await.expect("recover");
    assert_eq!(
        fake.node_calls("n1"),
        calls(&["GET"]),
        "nothing to recover: GET only"
    );
    assert!(!c.holds_cordon());

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(fake.node_calls("n1"), calls(&["GET", "GET", "PATCH"]));
    let node = fake.node("n1");
    assert!(unschedulable(&node));
    let stamp = annotation(&node, ANNOTATION)
        .and_then(Value::as_str)
        .expect("our annotation");
    assert!(
        stamp.ends_with('Z') && stamp.starts_with("20"),
        "a timestamp: {stamp}"
    );
    assert!(c.holds_cordon());
    assert!(c.describe().contains("held"), "{}", c.describe());

    let patch = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .expect("patch");
    assert_eq!(
        patch.query.as_deref(),
        Some("&fieldManager=docker-image-cleaner")
    );
    let body = patch.body.expect("body");
    assert_eq!(body["spec"], json!({ "unschedulable": true }));
    assert_eq!(body["metadata"]["annotations"][ANNOTATION], json!(stamp));
    assert!(
        body["metadata"]["resourceVersion"].is_string(),
        "optimistic concurrency: {body}"
    );

    c.end_pass(None).await;
    assert_eq!(
        fake.node_calls("n1"),
        calls(&["GET", "GET", "PATCH", "GET", "PATCH"])
    );
    let node = fake.node("n1");
    assert!(!unschedulable(&node), "{node}");
    assert_eq!(annotation(&node, ANNOTATION), None);
    assert_eq!(
        annotation(&node, "node.alpha.kubernetes.io/ttl"),
        Some(&json!("0")),
        "other annotations kept"
    );
    assert!(!c.holds_cordon());
    assert_eq!(
        fake.patches("n1")[1]["spec"],
        json!({ "unschedulable": null })
    );
}

#[tokio::test]
async fn node_cordoned_by_someone_else_is_left_cordoned() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({ "spec": { "unschedulable": true } }));
    let mut c = cordoner(&fake.config("n1"));

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(!c.holds_cordon());
    c.check_deadline().await;
    c.end_pass(None).await;
    c.retry_release().await;

    assert_eq!(fake.node_calls("n1"), calls(&["GET"]), "no PATCH ever");
    let node = fake.node("n1");
    assert!(unschedulable(&node));
    assert_eq!(annotation(&node, ANNOTATION), None);
}

async fn leftover_is_lifted_at_start(key: &str) {
    let fake = FakeKube::start();
    fake.add_node(
        "n1",
        json!({
            "metadata": { "annotations": { key: "true", "keep": "me" } },
            "spec": { "unschedulable": true },
        }),
    );
    let mut c = cordoner(&fake.config("n1"));
    c.recover().await.expect("recover");
    assert_eq!(fake.node_calls("n1"), calls(&["GET", "PATCH"]));
    let node = fake.node("n1");
    assert!(!unschedulable(&node), "{node}");
    assert_eq!(annotation(&node, key), None);
    assert_eq!(annotation(&node, "keep"), Some(&json!("me")));
    assert!(!c.holds_cordon());

    // Recovery is done: later ticks send nothing.
    fake.clear_requests();
    c.retry_release().await;
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn leftover_cordon_of_ours_is_lifted_at_start() {
    leftover_is_lifted_at_start(ANNOTATION).await;
}

#[tokio::test]
async fn leftover_cordon_of_the_original_tool_is_lifted_at_start() {
    leftover_is_lifted_at_start(LEGACY_ANNOTATION).await;
}

#[tokio::test]
async fn dry_run_reports_a_leftover_but_changes_nothing() {
    let fake = FakeKube::start();
    fake.add_node(
        "n1",
        json!({ "metadata": { "annotations": { ANNOTATION: "x" } }, "spec": { "unschedulable": true } }),
    );
    let mut config = fake.config("n1");
    config.dry_run = true;
    let mut c = cordoner(&config);
    c.recover().await.expect("recover");
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(Some(event(false))).await;
    assert_eq!(fake.node_calls("n1"), calls(&["GET"]));
    assert!(fake.events().is_empty());
    assert!(unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn api_down_when_cordoning_cleans_anyway() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    c.recover().await.expect("recover");

    fake.fail_next(1, Fault::Status(503));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(fake.faults_left(), 0);
    assert!(!c.holds_cordon());
    assert!(c.describe().contains("503"), "{}", c.describe());
    c.end_pass(None).await;
    assert!(fake.patches("n1").is_empty());
    assert!(!unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn api_down_when_cordoning_skips_the_pass() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut config = fake.config("n1");
    config.on_cordon_failure = OnCordonFailure::Skip;
    let mut c = cordoner(&config);
    c.recover().await.expect("recover");

    fake.fail_next(1, Fault::Status(500));
    assert_eq!(c.begin_pass().await, PassStart::Skip);
    assert_eq!(fake.faults_left(), 0);
    assert!(!c.holds_cordon());
    assert!(fake.patches("n1").is_empty());

    // The next tick, with the API server back, cordons.
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(c.holds_cordon());
    c.end_pass(None).await;
    assert!(!unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn api_down_when_uncordoning_is_retried_on_a_later_tick() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    fake.clear_requests();

    // More failures than one release tries: the pass ends still cordoned.
    fake.fail_next(4, Fault::Status(503));
    c.end_pass(None).await;
    assert_eq!(
        fake.node_calls("n1"),
        calls(&["GET", "GET", "GET"]),
        "3 bounded tries"
    );
    assert_eq!(fake.faults_left(), 1);
    assert!(c.holds_cordon());
    assert!(unschedulable(&fake.node("n1")));
    assert!(c.describe().contains("retrying"), "{}", c.describe());

    // A later tick: the first try fails on the last fault, the second uncordons.
    c.retry_release().await;
    assert!(!c.holds_cordon());
    let node = fake.node("n1");
    assert!(!unschedulable(&node));
    assert_eq!(annotation(&node, ANNOTATION), None);
}

#[tokio::test]
async fn hanging_api_server_bounds_the_release() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    fake.clear_requests();

    fake.fail_next(3, Fault::Hang);
    let started = std::time::Instant::now();
    c.end_pass(None).await;
    let took = started.elapsed();
    assert!(
        took < quick_timing().release_budget + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(
        fake.faults_left(),
        0,
        "each try timed out and another was made"
    );
    assert!(c.holds_cordon());

    c.retry_release().await;
    assert!(!c.holds_cordon());
    assert!(!unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn unauthorized_release_is_left_to_later_ticks() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    fake.clear_requests();

    // 401 is not transient: no retry within the pass, but the next tick tries again.
    fake.fail_next(1, Fault::Unauthorized);
    c.end_pass(None).await;
    assert_eq!(fake.node_calls("n1"), calls(&["GET"]));
    assert!(c.holds_cordon());
    assert!(
        c.describe().contains("401 Unauthorized"),
        "{}",
        c.describe()
    );

    c.retry_release().await;
    assert!(!c.holds_cordon());
    assert!(!unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn pending_release_is_held_by_the_next_pass() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    fake.fail_next(3, Fault::Status(503));
    c.end_pass(None).await;
    assert!(c.holds_cordon());

    fake.clear_requests();
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(
        fake.node_calls("n1"),
        calls(&["GET"]),
        "ours already: no second PATCH"
    );
    c.end_pass(None).await;
    assert!(!c.holds_cordon());
    assert!(!unschedulable(&fake.node("n1")));
}

#[tokio::test]
async fn cordon_taken_over_by_an_admin_is_not_lifted() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    // The admin keeps the node cordoned by removing our annotation.
    fake.edit_node(
        "n1",
        json!({ "metadata": { "annotations": { ANNOTATION: null } } }),
    );
    fake.clear_requests();

    c.end_pass(None).await;
    assert_eq!(fake.node_calls("n1"), calls(&["GET"]));
    assert!(unschedulable(&fake.node("n1")));
    assert!(!c.holds_cordon());
}

#[tokio::test]
async fn cordon_racing_an_admin_cordon_is_not_claimed() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("n1"));
    // GET passes; the admin cordons just before our PATCH, which then carries a stale
    // resourceVersion and gets 409; the second GET shows someone else's cordon.
    fake.fail_next(1, Fault::Pass);
    fake.fail_next(
        1,
        Fault::Edit("n1", json!({ "spec": { "unschedulable": true } })),
    );
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(fake.node_calls("n1"), calls(&["GET", "PATCH", "GET"]));
    assert!(!c.holds_cordon());
    let node = fake.node("n1");
    assert!(unschedulable(&node));
    assert_eq!(annotation(&node, ANNOTATION), None);
    c.end_pass(None).await;
    assert!(unschedulable(&fake.node("n1")), "the admin's cordon stays");
}

#[tokio::test]
async fn unauthorized_gives_a_clear_error() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let bad = fake.dir().join("bad-kubeconfig");
    fake.write_kubeconfig(&bad, "not-the-token");
    let mut config = fake.config("n1");
    config.kubeconfig = Some(bad);
    let mut c = cordoner(&config);

    let err = c.recover().await.expect_err("401");
    let text = chain(&err);
    assert_eq!(err.status(), Some(401));
    assert!(!err.is_config() && !err.is_transient());
    assert_eq!(
        text,
        "failed to read node n1: the API server answered 401 Unauthorized: Unauthorized"
    );
    assert!(!text.contains("not-the-token"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed, "clean by default");
    assert!(
        c.describe().contains("401 Unauthorized"),
        "{}",
        c.describe()
    );
}

#[tokio::test]
async fn taint_mode_keeps_other_taints_and_removes_only_ours() {
    let fake = FakeKube::start();
    let others = json!([
        { "key": "dedicated", "value": "gpu", "effect": "NoSchedule" },
        { "key": "example.com/maintenance", "effect": "NoExecute", "timeAdded": "2026-11-01T00:00:00Z" },
    ]);
    fake.add_node("n1", json!({ "spec": { "taints": others } }));
    let mut config = fake.config("n1");
    config.cordon_mode = CordonMode::Taint;
    let mut c = cordoner(&config);

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    let node = fake.node("n1");
    let mut with_ours = others.as_array().expect("list").clone();
    with_ours.push(json!({ "key": TAINT_KEY, "effect": "NoSchedule" }));
    assert_eq!(node["spec"]["taints"], json!(with_ours));
    assert!(
        !unschedulable(&node),
        "taint mode leaves spec.unschedulable alone"
    );
    assert!(annotation(&node, ANNOTATION).is_some());

    c.end_pass(None).await;
    let node = fake.node("n1");
    assert_eq!(node["spec"]["taints"], others, "exactly as they were");
    assert_eq!(annotation(&node, ANNOTATION), None);
    assert_eq!(
        fake.node_calls("n1"),
        calls(&["GET", "PATCH", "GET", "PATCH"])
    );
}

#[tokio::test]
async fn taint_mode_on_an_untainted_node_drops_the_list_again() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut config = fake.config("n1");
    config.cordon_mode = CordonMode::Taint;
    let mut c = cordoner(&config);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert_eq!(
        fake.node("n1")["spec"]["taints"][0]["key"],
        json!(TAINT_KEY)
    );
    c.end_pass(None).await;
    assert_eq!(fake.node("n1")["spec"].get("taints"), None);
}

#[tokio::test]
async fn max_cordon_releases_during_the_pass() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut config = fake.config("n1");
    config.max_cordon = Duration::from_millis(800);
    let mut c = cordoner(&config);
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    fake.clear_requests();

    c.check_deadline().await;
    assert!(
        fake.requests().is_empty(),
        "within max_cordon: nothing sent"
    );
    assert!(c.holds_cordon());

    // The behaviour under test is time itself: move tokio's clock past the limit instead of
    // waiting for it. Resumed before any request, so no client timeout sees paused time.
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(900)).await;
    tokio::time::resume();
    c.check_deadline().await;
    assert_eq!(fake.node_calls("n1"), calls(&["GET", "PATCH"]));
    assert!(!c.holds_cordon());
    assert!(!unschedulable(&fake.node("n1")));

    // The pass goes on uncordoned: nothing more to release.
    c.check_deadline().await;
    c.end_pass(None).await;
    assert_eq!(fake.node_calls("n1").len(), 2);
}

fn event(warning: bool) -> NodeEvent {
    if warning {
        NodeEvent {
            warning: true,
            reason: "FreeDiskSpaceFailed",
            message: "91% used after the pass, 3.2 GiB short of the low watermark".to_string(),
        }
    } else {
        NodeEvent {
            warning: false,
            reason: "ImagesRemoved",
            message: "removed 3 images and 2 containers, freed 1.2 GiB in 40 s".to_string(),
        }
    }
}

#[tokio::test]
async fn events_are_posted_after_the_release() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let uid = fake.node("n1")["metadata"]["uid"].clone();
    let mut c = cordoner(&fake.config("n1"));
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(Some(event(false))).await;
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(Some(event(true))).await;

    let requests = fake.requests();
    let posts: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    for &i in &posts {
        assert_eq!(requests[i].path, "/api/v1/namespaces/default/events");
        assert_eq!(requests[i - 1].method, "PATCH", "posted after the uncordon");
    }
    let events = fake.events();
    assert_eq!(events.len(), 2);
    let normal = &events[0];
    assert_eq!(normal["involvedObject"]["kind"], "Node");
    assert_eq!(normal["involvedObject"]["name"], "n1");
    assert_eq!(normal["involvedObject"]["uid"], uid);
    assert_eq!(normal["reason"], "ImagesRemoved");
    assert_eq!(normal["type"], "Normal");
    assert_eq!(normal["message"], json!(event(false).message));
    assert_eq!(
        normal["source"],
        json!({ "component": "docker-image-cleaner", "host": "n1" })
    );
    assert_eq!(normal["count"], 1);
    assert_eq!(events[1]["type"], "Warning");
    assert_eq!(events[1]["reason"], "FreeDiskSpaceFailed");
}

#[tokio::test]
async fn event_without_a_cordon_and_failing_event_are_not_fatal() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut config = fake.config("n1");
    config.cordon_mode = CordonMode::None;
    let mut c = cordoner(&config);
    c.recover().await.expect("recover");
    fake.clear_requests();

    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    assert!(fake.requests().is_empty(), "cordon_mode = none: no cordon");
    c.end_pass(Some(event(true))).await;
    let events = fake.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["involvedObject"]["uid"], "n1",
        "kubelet convention without a GET"
    );

    fake.fail_next(1, Fault::Status(500));
    c.end_pass(Some(event(false))).await;
    assert_eq!(fake.faults_left(), 0);
    assert_eq!(fake.events().len(), 1);
}

#[tokio::test]
async fn missing_kubeconfig_is_not_fatal_and_is_picked_up_later() {
    let fake = FakeKube::start();
    fake.add_node(
        "n1",
        json!({ "metadata": { "annotations": { ANNOTATION: "x" } }, "spec": { "unschedulable": true } }),
    );
    let later = fake.dir().join("later/kubeconfig");
    let mut config = fake.config("n1");
    config.kubeconfig = Some(later.clone());
    let mut c = cordoner(&config);

    c.recover()
        .await
        .expect("a missing kubeconfig is not an error");
    let status = c.describe();
    assert!(status.contains("waiting for kubeconfig"), "{status}");
    assert!(status.contains(&later.display().to_string()), "{status}");
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.end_pass(Some(event(false))).await;
    c.retry_release().await;
    assert!(fake.requests().is_empty());

    config.on_cordon_failure = OnCordonFailure::Skip;
    let mut skipping = cordoner(&config);
    assert_eq!(skipping.begin_pass().await, PassStart::Skip);

    // The node joins: the kubeconfig appears, the next tick recovers the leftover.
    std::fs::create_dir_all(later.parent().expect("parent")).expect("mkdir");
    fake.write_kubeconfig(&later, &fake.token());
    c.retry_release().await;
    assert_eq!(fake.node_calls("n1"), calls(&["GET", "PATCH"]));
    assert!(!unschedulable(&fake.node("n1")));
    assert_eq!(
        c.describe(),
        format!("node n1: cordon ready (kubeconfig {})", later.display())
    );
}

#[tokio::test]
async fn invalid_kubeconfig_names_the_file() {
    let fake = FakeKube::start();
    let path = fake.dir().join("broken-kubeconfig");
    std::fs::write(&path, "clusters: [ {name: \n").expect("write");
    let mut config = fake.config("n1");
    config.kubeconfig = Some(path.clone());
    let mut c = cordoner(&config);

    let err = c.recover().await.expect_err("invalid");
    assert!(err.is_config());
    let text = chain(&err);
    assert!(
        text.starts_with(&format!("invalid kubeconfig {}: ", path.display())),
        "{text}"
    );

    // A kubeconfig whose CA file is missing is a configuration error too.
    let no_ca = fake.dir().join("no-ca-kubeconfig");
    fake.write_kubeconfig(&no_ca, "t");
    let text = std::fs::read_to_string(&no_ca).expect("read");
    std::fs::write(&no_ca, text.replace("ca.crt", "missing-ca.crt")).expect("write");
    config.kubeconfig = Some(no_ca.clone());
    let err = cordoner(&config).recover().await.expect_err("no CA");
    assert!(err.is_config(), "{}", chain(&err));
    assert!(
        chain(&err).contains(&no_ca.display().to_string()),
        "{}",
        chain(&err)
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn no_node_name_touches_nothing() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({ "spec": { "unschedulable": true } }));
    let mut config = fake.config("n1");
    config.node_name = None;
    let mut c = cordoner(&config);
    c.recover().await.expect("recover");
    assert_eq!(c.begin_pass().await, PassStart::Proceed);
    c.check_deadline().await;
    c.end_pass(Some(event(false))).await;
    c.retry_release().await;
    assert!(fake.requests().is_empty());
    assert!(!c.holds_cordon());
    assert_eq!(c.describe(), "cordoning off (no node_name)");
}

#[tokio::test]
async fn unknown_node_is_named_in_the_error() {
    let fake = FakeKube::start();
    fake.add_node("n1", json!({}));
    let mut c = cordoner(&fake.config("ghost"));
    let err = c.recover().await.expect_err("404");
    assert_eq!(err.status(), Some(404));
    assert_eq!(
        chain(&err),
        "failed to read node ghost: the API server answered 404 NotFound: nodes \"ghost\" not found"
    );
}
