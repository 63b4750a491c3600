//! Table tests of what a CRI engine adds to a plan: images its runtime pins (and its sandbox
//! image) never go, and the kubelet's containers are never removed and keep their images
//! whatever their state, under pressure, at the critical watermark and below high.

use super::*;

fn pinned(id: &str, tag: &str, why: &str) -> Image {
    Image {
        pinned: Some(why.to_string()),
        ..image(id, &[tag], 10)
    }
}

fn managed(id: &str, image_id: &str, running: bool, finished: i64) -> Container {
    Container {
        managed: true,
        ..container(id, image_id, running, finished)
    }
}

fn cri_inventory() -> Inventory {
    Inventory {
        images: vec![
            pinned(
                "pause",
                "registry.k8s.io/pause:3.10",
                "the runtime's sandbox image",
            ),
            pinned("pinned", "app:pinned", "pinned by the runtime"),
            image("exited-user", &["job:1"], 10),
            image("created-user", &["init:1"], 10),
            image("free", &["free:1"], 10),
        ],
        containers: vec![
            // Exited long ago: a Docker container this old would go, and free its image.
            managed("e", "exited-user", false, NOW - 90 * HOUR),
            Container {
                state: ContainerState::Created,
                ..managed("c", "created-user", false, NOW - 80 * HOUR)
            },
        ],
    }
}

#[test]
fn pinned_images_and_the_kubelet_s_containers_stay_under_pressure() {
    let inv = cri_inventory();
    let lu = table(&[
        ("pause", 99),
        ("pinned", 98),
        ("exited-user", 90),
        ("created-user", 80),
        ("free", 70),
    ]);
    let cfg = Config {
        container_min_age: Duration::ZERO,
        ..config()
    };
    for critical in [false, true] {
        let p = super::super::plan(
            &[Holding {
                name: "kubelet",
                inventory: &inv,
                last_use: &lu,
                floor: None,
                build_cache: None,
            }],
            &cfg,
            shortfall(1 << 40),
            NOW_MS,
            critical,
        );
        assert_eq!(p.steps.len(), 1, "critical {critical}: {:?}", p.steps);
        assert_eq!(removed_images(&p), vec!["free"], "critical {critical}");
        assert!(
            matches!(reason_of(&p, "pause"), Some(Reason::Pinned { why }) if why.contains("sandbox")),
            "{:?}",
            p.kept
        );
        assert!(matches!(
            reason_of(&p, "pinned"),
            Some(Reason::Pinned { .. })
        ));
        assert!(matches!(
            reason_of(&p, "exited-user"),
            Some(Reason::InUse { container, .. }) if container == "name-e"
        ));
        assert!(matches!(
            reason_of(&p, "created-user"),
            Some(Reason::InUse { .. })
        ));
    }
}

#[test]
fn pinned_images_stay_below_high_however_long_unused() {
    let inv = cri_inventory();
    let mut lu = table(&[
        ("pause", 99),
        ("pinned", 98),
        ("exited-user", 90),
        ("created-user", 80),
        ("free", 70),
    ]);
    lu.set_covering_since(Some((NOW - 200 * HOUR) * 1000));
    let cfg = Config {
        max_unused_age: Duration::from_secs(24 * 3600),
        ..config()
    };
    let p = plan_aged(
        &[Holding {
            name: "kubelet",
            inventory: &inv,
            last_use: &lu,
            floor: None,
            build_cache: None,
        }],
        &cfg,
        NOW_MS,
    );
    assert_eq!(removed_images(&p), vec!["free"]);
    assert!(matches!(
        reason_of(&p, "pause"),
        Some(Reason::Pinned { .. })
    ));
}
