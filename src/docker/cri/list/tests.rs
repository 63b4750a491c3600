//! The inventory made of a runtime's answers (recorded from containerd 1.6.20 and 2.1.9 here:
//! the verbose infos are excerpts of theirs), and the parsing of its verbose answers.

use super::*;

const A: &str = "sha256:8d618b3f3f7b2b4a9aa0491b96548e5930f20583e297780009ba7106a04be9c6";
const PAUSE: &str = "sha256:37dff1abff20201b2c56d569338c08b89a7609e52385e72bc60660e83e18aa71";

fn image(id: &str, tags: &[&str], digests: &[&str], pinned: bool) -> cri::Image {
    cri::Image {
        id: id.into(),
        repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        repo_digests: digests.iter().map(|t| t.to_string()).collect(),
        size: 7_230_137,
        pinned,
        ..Default::default()
    }
}

fn container(id: &str, state: cri::ContainerState, image_ref: &str, asked: &str) -> cri::Container {
    cri::Container {
        id: id.into(),
        pod_sandbox_id: "sb".into(),
        metadata: Some(cri::ContainerMetadata {
            name: format!("c-{id}"),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: asked.into(),
            ..Default::default()
        }),
        image_ref: image_ref.into(),
        state: state as i32,
        created_at: 1_700_000_000_123_456_789,
        ..Default::default()
    }
}

/// containerd 1.6.20's verbose image status (`crictl inspecti`), an excerpt.
const IMAGE_INFO: &str = r#"{"chainID":"sha256:cad8ec13","imageSpec":{"created":"2026-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Cmd":["/busybox","sleep","1000000"],"Labels":{"tier":"gold"}},"rootfs":{"type":"layers","diff_ids":["sha256:cad8ec13"]}}}"#;
/// containerd 2.1.9's verbose pod sandbox status, an excerpt.
const SANDBOX_INFO: &str = r#"{"pid":3269,"processStatus":"running","netNamespaceClosed":false,"image":"dic.test/pause:1","snapshotKey":"bea11a05","snapshotter":"overlayfs","runtimeType":"io.containerd.runc.v2"}"#;
/// containerd 1.6.20's verbose status `config`, an excerpt.
const CONFIG: &str = r#"{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc"},"streamServerPort":"0","sandboxImage":"registry.k8s.io/pause:3.6","statsCollectPeriod":10}"#;

#[test]
fn the_verbose_answers_of_containerd() {
    let info = HashMap::from([("info".to_string(), IMAGE_INFO.to_string())]);
    let d = details_of_info(&info);
    assert_eq!(d.labels, BTreeMap::from([("tier".into(), "gold".into())]));
    assert_eq!(d.created, 1_767_225_600);
    assert_eq!(details_of_info(&HashMap::new()), Details::default());
    let garbage = HashMap::from([("info".to_string(), "{not json".to_string())]);
    assert_eq!(details_of_info(&garbage), Details::default());

    let info = HashMap::from([("info".to_string(), SANDBOX_INFO.to_string())]);
    assert_eq!(
        sandbox_image_of_info(&info).as_deref(),
        Some("dic.test/pause:1")
    );
    assert_eq!(sandbox_image_of_info(&HashMap::new()), None);

    assert_eq!(
        sandbox_image_of_config(CONFIG).as_deref(),
        Some("registry.k8s.io/pause:3.6")
    );
    // containerd 2.x says no sandbox image there (it pins it instead).
    assert_eq!(sandbox_image_of_config(r#"{"containerd":{}}"#), None);
}

#[test]
fn references_resolve_as_the_runtime_stores_them() {
    let images = [
        image(A, &["docker.io/library/busybox:1.36"], &[], false),
        image(
            PAUSE,
            &["registry.k8s.io/pause:3.6"],
            &["registry.k8s.io/pause@sha256:3d38"],
            true,
        ),
    ];
    let index = Index::new(&images);
    for (reference, want) in [
        (A, Some(A)),
        (&A[7..], Some(A)),
        ("busybox:1.36", Some(A)),
        ("library/busybox:1.36", Some(A)),
        ("docker.io/library/busybox:1.36", Some(A)),
        ("registry.k8s.io/pause:3.6", Some(PAUSE)),
        ("registry.k8s.io/pause@sha256:3d38", Some(PAUSE)),
        ("busybox", None),
        ("registry.k8s.io/pause:3.10", None),
    ] {
        assert_eq!(index.resolve(reference), want, "{reference}");
    }
    assert_eq!(normalise("localhost:5000/app"), "localhost:5000/app:latest");
    assert_eq!(
        normalise("team/app@sha256:ab"),
        "docker.io/team/app@sha256:ab"
    );
}

#[test]
fn every_container_and_sandbox_is_the_kubelet_s_and_the_pins_are_kept() {
    let images = [
        image(A, &["dic.test/a:1"], &[], false),
        image(PAUSE, &["registry.k8s.io/pause:3.6"], &[], false),
        image("sha256:bb", &[], &["dic.test/b@sha256:0b"], false),
        image("sha256:cc", &["dic.test/c:1"], &[], true),
        image("sha256:dd", &["dic.test/d:1"], &[], false),
        image("sha256:ee", &[], &[], false),
    ];
    let mut labels = HashMap::new();
    labels.insert("io.kubernetes.pod.namespace".to_string(), "ci".to_string());
    labels.insert("io.kubernetes.pod.name".to_string(), "job-1".to_string());
    labels.insert(
        "io.kubernetes.container.name".to_string(),
        "build".to_string(),
    );
    let containers = [
        cri::Container {
            labels,
            ..container(
                "r",
                cri::ContainerState::ContainerRunning,
                A,
                "dic.test/a:1",
            )
        },
        // CRI-O names the image by a digest reference.
        container(
            "x",
            cri::ContainerState::ContainerExited,
            "dic.test/b@sha256:0b",
            "dic.test/b@sha256:0b",
        ),
        // An image removed under it: what it said is kept, nothing matches it.
        container(
            "g",
            cri::ContainerState::ContainerCreated,
            "sha256:gone",
            "",
        ),
    ];
    let sandboxes = [cri::PodSandbox {
        id: "sb".into(),
        metadata: Some(cri::PodSandboxMetadata {
            name: "job-1".into(),
            namespace: "ci".into(),
            ..Default::default()
        }),
        state: cri::PodSandboxState::SandboxNotready as i32,
        created_at: 1_700_000_000_000_000_000,
        ..Default::default()
    }];
    let details = HashMap::from([(
        A.to_string(),
        Details {
            labels: BTreeMap::from([("tier".into(), "gold".into())]),
            created: 1_767_225_600,
        },
    )]);
    let exited = Status {
        image: "dic.test/b@sha256:0b".into(),
        times: Times {
            created: 1,
            started: 2,
            finished: 1_700_000_100_000_000_000,
        },
        exited: true,
    };
    let inventory = Listing {
        images: &images,
        containers: &containers,
        sandboxes: &sandboxes,
        details: &details,
        // The sandbox's status named no image: the configured one is assumed.
        sandbox_images: &HashMap::from([("sb".to_string(), None)]),
        times: &HashMap::from([("x".to_string(), exited)]),
        sandbox_image: Some("registry.k8s.io/pause:3.6"),
        pinned_names: &["dic.test/d:1".to_string()],
    }
    .inventory();

    let by_id = |id: &str| inventory.images.iter().find(|i| i.id == id).expect(id);
    assert_eq!(by_id(A).labels["tier"], "gold");
    assert_eq!(by_id(A).created, 1_767_225_600);
    assert_eq!(by_id(A).pinned, None);
    assert!(
        by_id(PAUSE)
            .pinned
            .as_deref()
            .is_some_and(|w| w.contains("sandbox"))
    );
    assert_eq!(
        by_id("sha256:cc").pinned.as_deref(),
        Some("pinned by the runtime")
    );
    assert!(
        by_id("sha256:dd")
            .pinned
            .as_deref()
            .is_some_and(|w| w.contains("label"))
    );
    // Pulled by digest only: named by its digest, not dangling.
    assert_eq!(by_id("sha256:bb").tags, vec!["dic.test/b@sha256:0b"]);
    assert!(!by_id("sha256:bb").is_dangling());
    assert!(by_id("sha256:ee").is_dangling());

    let c = |id: &str| inventory.containers.iter().find(|c| c.id == id).expect(id);
    assert!(inventory.containers.iter().all(|c| c.managed));
    assert_eq!(c("r").image_id, A);
    assert_eq!(c("r").name, "ci/job-1/build");
    assert_eq!(c("r").state, ContainerState::Running);
    assert_eq!(c("r").created, 1_700_000_000);
    assert_eq!(c("x").image_id, "sha256:bb");
    assert_eq!(c("x").state, ContainerState::Exited);
    assert_eq!(c("x").finished, Some(1_700_000_100));
    assert_eq!(c("g").image_id, "sha256:gone");
    assert_eq!(c("sb").image_id, PAUSE);
    assert_eq!(c("sb").name, "sandbox ci/job-1");
    assert_eq!(c("sb").state, ContainerState::Exited);
}
