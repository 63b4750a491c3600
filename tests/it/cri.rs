//! The kubelet's image store as an engine (`kind = "cri"`), against a real containerd with its
//! CRI plugin (1.6 from the host, 2.1 from the test bed: `DIC_TEST_CRI`), pods and containers
//! made through the CRI as the kubelet makes them. What a user sees: which images survive a
//! pass, in which order they went, what `status` says, what the state file keeps.

use std::time::Duration;

use serde_json::Value;

use crate::kube_fake::FakeKube;
use crate::util::cleaner::{Cleaner, plan_steps};
use crate::util::cli::EngineCli;
use crate::util::cri::{CriKind, PrivateCri, SANDBOX_IMAGE};
use crate::util::daemon::Daemon;
use crate::util::dockerd::PrivateDockerd;
use crate::util::loopfs::SharedFs;
use crate::util::require::{Service, not_applicable};
use crate::util::wait_until;

/// Bound of anything a running daemon should do "soon".
const MINUTE: Duration = Duration::from_secs(60);

/// One `[[engine]]` table of kind `cri` for `c`.
fn cri_table(name: &str, c: &PrivateCri, floor: &str) -> String {
    format!(
        "[[engine]]\nname = {name:?}\nkind = \"cri\"\ncri_endpoint = {:?}\npaths = [{:?}]\nfloor = {floor}\n",
        c.endpoint(),
        c.root().display().to_string()
    )
}

/// One `[[engine]]` table of kind `docker` for `d`.
fn docker_table(name: &str, d: &PrivateDockerd) -> String {
    format!(
        "[[engine]]\nname = {name:?}\ndocker_host = {:?}\npaths = [{:?}]\n",
        d.host(),
        d.data_root().display().to_string()
    )
}

/// The tags of the images of the plan's removals, in order (`[a:1] on e` → `a:1`).
fn removal_order(text: &str) -> Vec<String> {
    plan_steps(text)
        .iter()
        .filter(|s| s.starts_with("remove image"))
        .filter_map(|s| Some(s.split('[').nth(1)?.split(']').next()?.to_string()))
        .collect()
}

/// Unix milliseconds now (last use is kept in milliseconds).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// The last use the state file holds for image `id` of engine `engine`, ms.
fn last_used(cleaner: &Cleaner, engine: &str, id: &str) -> Option<i64> {
    cleaner.state()?["engines"][engine]["images"][id]["last_used_ms"].as_i64()
}

/// Starts the daemon on `cleaner` and waits until its first pass is over (it follows the
/// engines' events from then on).
fn following(cleaner: &Cleaner) -> Daemon {
    let mut d = cleaner.spawn(&["run"]);
    d.ready(MINUTE);
    d.wait_status("idle", MINUTE);
    d
}

/// Uses `tag` through the CRI until the running daemon has saved a use of it later than
/// `after_ms` (the first use may come before its event source is open); returns that time.
fn used_and_seen(c: &PrivateCri, cleaner: &Cleaner, engine: &str, tag: &str, after_ms: i64) -> i64 {
    let id = c.image_id(tag).expect("the image");
    for _ in 0..3 {
        c.use_image(tag);
        let mut seen = None;
        if wait_until(Duration::from_secs(20), || {
            seen = last_used(cleaner, engine, &id).filter(|t| *t > after_ms);
            seen.is_some()
        }) {
            return seen.unwrap_or_default();
        }
    }
    panic!(
        "no use of {tag} reached the state file: {:?}",
        cleaner.state()
    );
}

#[test]
fn lru_order_comes_from_container_events_and_survives_restarts() {
    let Some(mut c) = PrivateCri::start("cri-lru", 512) else {
        return;
    };
    for tag in ["dic.test/a:1", "dic.test/b:1", "dic.test/c:1"] {
        c.image(tag, 30);
    }
    let cleaner = Cleaner::with_tables(&cri_table("kubelet", &c, "0"), "");
    let mut daemon = following(&cleaner);
    // Each use is a pod whose container runs and exits, then both are removed: only the
    // runtime's events tell of it (GetContainerEvents on 2.1, containerd's events on 1.6).
    let mut t = used_and_seen(&c, &cleaner, "kubelet", "dic.test/a:1", now_ms());
    for tag in ["dic.test/b:1", "dic.test/c:1", "dic.test/a:1"] {
        t = used_and_seen(&c, &cleaner, "kubelet", tag, t);
    }
    // The runtime restarts under the running daemon: its events are followed again.
    c.restart();
    used_and_seen(&c, &cleaner, "kubelet", "dic.test/b:1", t);
    daemon.terminate(MINUTE);

    // A new cleaner process on a restarted runtime: the containers are gone, the order is
    // what the state file kept.
    c.restart();
    let (used, _) = c.fs().used_pct();
    let (high, low) = ((used - 1.0).floor(), (used - 2.0).floor());
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    assert_eq!(
        removal_order(&err),
        vec!["dic.test/c:1", "dic.test/a:1", "dic.test/b:1"],
        "least recently used first, the sandbox image never:\n{err}"
    );
    let tags = c.tags();
    assert!(
        !tags.contains(&"dic.test/c:1".to_string()),
        "c was used least recently:\n{err}"
    );
    for kept in ["dic.test/a:1", "dic.test/b:1", SANDBOX_IMAGE] {
        assert!(
            tags.contains(&kept.to_string()),
            "{kept} must stay: {tags:?}\n{out}\n{err}"
        );
    }
}

#[test]
fn a_node_without_docker_is_cleaned_by_lru_and_every_protection_holds() {
    let Some(c) = PrivateCri::start("cri-node", 512) else {
        return;
    };
    // Never used since the cleaner came: each counts from its build time, old-0 the oldest.
    let old: Vec<String> = (0..4)
        .map(|i| {
            c.image_at(
                &format!("dic.test/old-{i}:1"),
                15,
                1_600_000_000 + i * 3600,
                &[],
            )
        })
        .collect();
    let pinned = c.image_at("dic.test/pinned:1", 15, 1_500_000_000, &[]);
    c.pin("dic.test/pinned:1");
    let running = c.image_at("dic.test/running:1", 15, 1_500_000_000, &[]);
    let exited = c.image_at("dic.test/exited:1", 15, 1_500_000_000, &[]);
    let kept = c.image_at("registry.local/kept:1", 15, 1_500_000_000, &[]);
    let labelled = c.image_at(
        "dic.test/labelled:1",
        15,
        1_500_000_000,
        &[("tier", "gold")],
    );
    let pod = c.pod("web");
    c.run(
        &pod,
        "web",
        "dic.test/running:1",
        &["/busybox", "sleep", "100000"],
    );
    let job = c.pod("job");
    let done = c.run(&job, "job", "dic.test/exited:1", &["/busybox", "true"]);
    c.wait_exited(&done);
    // The node is cordoned while the pass removes, and the metrics count per engine.
    let fake = FakeKube::start();
    fake.add_node("node-1", serde_json::json!({}));
    let textfile = c.fs().dir().join("metrics.prom");
    let cleaner = Cleaner::with_tables(
        &cri_table("kubelet", &c, "0"),
        &format!(
            "keep = [\"^registry\\\\.local/\"]\nkeep_labels = [\"tier=gold\"]\nnode_name = \"node-1\"\nkubeconfig = {:?}\nmetrics_textfile = {:?}\n",
            fake.kubeconfig().display().to_string(),
            textfile.display().to_string()
        ),
    );

    // status: every image that stays says why.
    let (status, _) = cleaner.run_ok(&["status"]);
    for (what, why) in [
        ("dic.test/pinned:1", "pinned"),
        ("dic.test/running:1", "in use by"),
        ("dic.test/exited:1", "in use by"),
        (SANDBOX_IMAGE, "sandbox"),
        ("registry.local/kept:1", "keep rule"),
        ("dic.test/labelled:1", "label tier=gold"),
    ] {
        assert!(
            status.lines().any(|l| l.contains(what) && l.contains(why)),
            "{what} stays ({why}):\n{status}"
        );
    }

    // Far above high, low out of reach: everything eligible goes, oldest first, nothing else.
    let before = c.fs().used_pct().0;
    let (high, low) = ((before - 1.0).floor(), 1.0);
    let (_, dry) = cleaner.run_ok_at(&["once", "--dry-run"], high, Some(low));
    assert_eq!(c.image_ids().len(), 10, "a dry run removes nothing:\n{dry}");
    let (out, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    let want: Vec<String> = (0..4).map(|i| format!("dic.test/old-{i}:1")).collect();
    assert_eq!(removal_order(&err), want, "{err}");
    let ids = c.image_ids();
    for id in &old {
        assert!(!ids.contains(id), "{id} must go:\n{err}");
    }
    for id in [&pinned, &running, &exited, &kept, &labelled] {
        assert!(ids.contains(id), "{id} must stay:\n{err}");
    }
    assert!(
        c.image_id(SANDBOX_IMAGE).is_some(),
        "the sandbox image stays"
    );
    let after = c.fs().used_pct().0;
    assert!(
        after < before - 5.0,
        "four images of 15 MiB (30 on the disk) freed their bytes: {before} → {after}\n{out}"
    );
    assert!(out.contains("removed 0 containers and 4 images"), "{out}");
    let cordons: Vec<Value> = fake
        .patches("node-1")
        .iter()
        .map(|p| p["spec"]["unschedulable"].clone())
        .collect();
    assert_eq!(
        cordons,
        vec![Value::Bool(true), Value::Null],
        "cordoned for the removals, then released:\n{err}"
    );
    let metrics = std::fs::read_to_string(&textfile).expect("the textfile");
    assert!(
        metrics.contains(
            "docker_image_cleaner_removals_total{engine=\"kubelet\",kind=\"image\",reason=\"space\"} 4"
        ),
        "{metrics}"
    );
}

/// A cleaner run with `extra` and the `status --json` it prints.
fn status_json(cleaner: &Cleaner, env: &[(&str, &str)]) -> Value {
    let (out, _) = cleaner.run_ok_with(&["status", "--json"], env);
    serde_json::from_str(&out).expect("status --json is JSON")
}

#[test]
fn a_docker_engine_and_the_kubelet_s_runtime_are_cleaned_in_one_order() {
    let Some(fs) = SharedFs::new(Service::Cri, "mixed", 768, None) else {
        return;
    };
    let Some(d) = PrivateDockerd::start_on(&fs, "docker") else {
        return;
    };
    let c = PrivateCri::start_on(&fs, "kubelet").expect("containerd");
    for tag in ["d1:1", "d2:1"] {
        d.image(tag, d.payload_mib(30));
    }
    for tag in ["dic.test/k1:1", "dic.test/k2:1"] {
        c.image(tag, 30);
    }
    let cleaner = Cleaner::with_tables(
        &format!(
            "{}\n{}",
            docker_table("docker", &d),
            cri_table("kubelet", &c, "0")
        ),
        "",
    );
    let mut daemon = following(&cleaner);
    // Used interleaved: d1, k1, d2, k2 (each seen by the daemon before the next).
    let d_id = |tag: &str| {
        let out = d.docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut t = now_ms();
    for (engine, tag) in [
        ("docker", "d1:1"),
        ("kubelet", "dic.test/k1:1"),
        ("docker", "d2:1"),
        ("kubelet", "dic.test/k2:1"),
    ] {
        if engine == "docker" {
            let id = d_id(tag);
            let created = d.created_container(tag);
            d.docker(&["rm", &created]);
            let mut seen = None;
            assert!(
                wait_until(MINUTE, || {
                    seen = last_used(&cleaner, engine, &id).filter(|s| *s > t);
                    seen.is_some()
                }),
                "the daemon saw no use of {tag}: {:?}",
                cleaner.state()
            );
            t = seen.unwrap_or_default();
        } else {
            t = used_and_seen(&c, &cleaner, engine, tag, t);
        }
    }
    daemon.terminate(MINUTE);

    // status shows both engines, what each is, and one order.
    let status = status_json(&cleaner, &[]);
    let kinds: Vec<(&str, &str)> = status["engines"]
        .as_array()
        .expect("engines")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or(""),
                e["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("docker", "docker"), ("kubelet", "cri")],
        "{status}"
    );

    let (used, _) = fs.used_pct();
    let (high, low) = ((used - 1.0).floor(), (used - 2.0).floor());
    let (_, err) = cleaner.run_ok_at(&["once"], high, Some(low));
    assert_eq!(
        removal_order(&err),
        vec!["d1:1", "dic.test/k1:1", "d2:1", "dic.test/k2:1"],
        "one least-recently-used order across both engines:\n{err}"
    );
    assert!(!d.tags().contains(&"d1:1".to_string()), "{err}");
    assert!(c.tags().contains(&"dic.test/k1:1".to_string()), "{err}");
}

#[test]
fn a_shared_containerd_tells_the_kubelet_s_namespace_from_docker_s() {
    let Some(c) = PrivateCri::start("cri-shared", 1024) else {
        return;
    };
    const MIB: u64 = 1 << 20;
    // Never used: k1, built first, is the least recently used.
    c.image_at("dic.test/k1:1", 40, 1_600_000_000, &[]);
    c.image_at("dic.test/k2:1", 40, 1_600_003_600, &[]);
    // Docker's containerd image store keeps its images in namespace `moby` of the same
    // containerd: 240 MiB there, which the kubelet's engine must neither count nor touch.
    c.import_into("moby", "docker.io/library/m1:1", 60);
    c.import_into("moby", "docker.io/library/m2:1", 60);
    // A floor of 100 MiB: the kubelet's namespace holds about 165 MiB (each image twice: its
    // blob and its unpacked snapshot, of which the CRI reports the blob, about 40 MiB), so the
    // second removal would cross it; with Docker's 240 MiB counted as the kubelet's, both
    // would go.
    let floored = Cleaner::with_tables(
        &cri_table("kubelet", &c, "\"100MiB\""),
        "threshold_critical = 100\n",
    );
    let status = status_json(&floored, &[]);
    let footprint = status["engines"][0]["footprint_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("a footprint: {status}"));
    assert!(
        (2 * 2 * 40 * MIB..(2 * 2 * 40 + 60) * MIB).contains(&footprint),
        "the kubelet's namespace alone ({} MiB), not Docker's: {status}",
        footprint / MIB
    );
    let places = status["engines"][0]["places"].to_string();
    assert!(places.contains("k8s.io"), "{status}");

    let (used, _) = c.fs().used_pct();
    let (high, low) = ((used - 1.0).floor(), 1.0);
    let (out, err) = floored.run_ok_at(&["once"], high, Some(low));
    assert_eq!(
        c.tags(),
        vec!["dic.test/k2:1".to_string(), SANDBOX_IMAGE.to_string()],
        "the floor, counted in the kubelet's namespace, keeps the newest image:\n{out}\n{err}"
    );
    assert!(out.contains("floors"), "{out}");

    let unfloored = Cleaner::with_tables(&cri_table("kubelet", &c, "0"), "");
    let (used, _) = c.fs().used_pct();
    let high = (used - 1.0).floor();
    let (out, err) = unfloored.run_ok_at(&["once"], high, Some(low));
    assert_eq!(c.tags(), vec![SANDBOX_IMAGE.to_string()], "{out}\n{err}");
    assert_eq!(
        c.names_in("moby"),
        vec!["docker.io/library/m1:1", "docker.io/library/m2:1"],
        "Docker's namespace is untouched:\n{err}"
    );
    let after = status_json(&unfloored, &[]);
    let left = after["engines"][0]["footprint_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(left < 20 * MIB, "only the sandbox image is left: {after}");
}

#[test]
fn the_flavour_is_the_one_asked_for() {
    let Some(c) = PrivateCri::start("cri-flavour", 256) else {
        return;
    };
    let cleaner = Cleaner::with_tables(&cri_table("kubelet", &c, "0"), "");
    let (status, _) = cleaner.run_ok(&["status"]);
    let want = match c.kind() {
        CriKind::Host => "CRI runtime containerd 1.6",
        CriKind::Bed => "CRI runtime containerd 2.1",
    };
    assert!(status.contains(want), "{status}");
}

#[test]
fn an_image_a_container_takes_up_during_the_pass_stays() {
    let Some(c) = PrivateCri::start("cri-race", 512) else {
        return;
    };
    // first goes first; second is planned too, and a pod starts from it meanwhile.
    let first = c.image_at("dic.test/first:1", 15, 1_600_000_000, &[]);
    let second = c.image_at("dic.test/second:1", 15, 1_600_003_600, &[]);
    // The pass waits 20 s between two removals: the kubelet starts a pod in that window.
    let cleaner = Cleaner::with_tables(&cri_table("kubelet", &c, "0"), "delay_seconds = 20\n");
    let (used, _) = c.fs().used_pct();
    let mut cmd = cleaner.command(&["once"]);
    cmd.env(
        "DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH",
        (used - 1.0).floor().to_string(),
    )
    .env("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", "1");
    let pass = Daemon::plain(cmd);
    assert!(
        wait_until(MINUTE, || !c.image_ids().contains(&first)),
        "the first removal did not happen:\n{}",
        pass.log()
    );
    let pod = c.pod("late");
    let container = c.run(
        &pod,
        "late",
        "dic.test/second:1",
        &["/busybox", "sleep", "100000"],
    );
    let out = pass.output(Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        removal_order(&err),
        vec!["dic.test/first:1", "dic.test/second:1"],
        "both were planned:\n{err}"
    );
    assert!(
        c.image_ids().contains(&second),
        "the runtime would have removed an image in use: the pass must not ask it to:\n{err}"
    );
    assert!(err.contains("in use by"), "the refusal says why:\n{err}");
    assert_eq!(
        c.container_state(&container),
        Some(k8s_cri::v1::ContainerState::ContainerRunning)
    );
}

/// Docker 29's default, the containerd image store, on the kubelet's own containerd: one
/// containerd, Docker's images in `moby`, the kubelet's in `k8s.io`, both engines of one
/// cleaner.
#[test]
fn docker_s_containerd_store_and_the_kubelet_share_one_containerd_told_apart() {
    if CriKind::current() != CriKind::Bed {
        not_applicable(
            Service::Cri,
            "Docker 28's containerd image store needs containerd 2.x; this flavour's is 1.6",
        );
        return;
    }
    let Some(c) = PrivateCri::start("cri-moby", 1024) else {
        return;
    };
    const MIB: u64 = 1 << 20;
    let d = c.dockerd("docker");
    // Never used: they go in the order they were built, whichever engine holds them.
    d.image_at("d1:1", 40, 1_600_000_000);
    c.image_at("dic.test/k1:1", 40, 1_600_001_000, &[]);
    d.image_at("d2:1", 40, 1_600_002_000);
    c.image_at("dic.test/k2:1", 40, 1_600_003_000, &[]);
    let tables = format!(
        "[[engine]]\nname = \"docker\"\ndocker_host = {:?}\npaths = [{:?}]\n\n{}",
        d.host(),
        d.data_root().display().to_string(),
        cri_table("kubelet", &c, "0")
    );
    let cleaner = Cleaner::with_tables(&tables, "");
    let status = status_json(&cleaner, &[]);
    let engine = |name: &str| {
        status["engines"]
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("engine {name}: {status}"))
    };
    // Each image is on the disk twice (blob and snapshot): 160 MiB in each namespace.
    for name in ["docker", "kubelet"] {
        let footprint = engine(name)["footprint_bytes"].as_u64().unwrap_or(0);
        assert!(
            (160 * MIB..230 * MIB).contains(&footprint),
            "{name} counts its own namespace only ({} MiB): {status}",
            footprint / MIB
        );
    }
    assert!(
        engine("docker")["store"]
            .as_str()
            .is_some_and(|s| s.contains("namespace moby")),
        "{status}"
    );
    assert!(
        engine("kubelet")["store"]
            .as_str()
            .is_some_and(|s| s.contains("namespace k8s.io")),
        "{status}"
    );

    let (used, _) = c.fs().used_pct();
    let (out, err) = cleaner.run_ok_at(&["once"], (used - 1.0).floor(), Some(1.0));
    assert_eq!(
        removal_order(&err),
        vec!["d1:1", "dic.test/k1:1", "d2:1", "dic.test/k2:1"],
        "one order across both namespaces:\n{err}"
    );
    assert_eq!(d.tags(), Vec::<String>::new(), "{out}\n{err}");
    assert_eq!(c.tags(), vec![SANDBOX_IMAGE.to_string()], "{out}\n{err}");
}
