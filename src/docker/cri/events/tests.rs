//! The mapping of the runtime's container events, and which of a poll's findings are sent.

use super::*;
use crate::docker::cri::list;

fn status(id: &str, image_ref: &str, image_id: &str) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: id.into(),
        image_ref: image_ref.into(),
        image_id: image_id.into(),
        image: Some(cri::ImageSpec {
            image: "dic.test/a:1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn event(
    id: &str,
    kind: ContainerEventType,
    statuses: Vec<cri::ContainerStatus>,
) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: id.into(),
        container_event_type: kind as i32,
        created_at: 1_000,
        pod_sandbox_status: None,
        containers_statuses: statuses,
    }
}

#[test]
fn container_events_become_docker_s_create_start_and_die() {
    // containerd 2.1, as recorded: the id in image_ref, image_id empty.
    let id = "sha256:8d618b3f3f7b2b4a9aa0491b96548e5930f20583e297780009ba7106a04be9c6";
    for (kind, action) in [
        (ContainerEventType::ContainerCreatedEvent, "create"),
        (ContainerEventType::ContainerStartedEvent, "start"),
        (ContainerEventType::ContainerStoppedEvent, "die"),
    ] {
        let seen = cri_event(event("c1", kind, vec![status("c1", id, "")])).expect("a use");
        assert_eq!(
            seen,
            Seen {
                container_id: "c1".into(),
                action,
                time_nanos: 1_000,
                image: id.into(),
            }
        );
        assert_eq!(seen.event().image_id(), Some(id));
    }
    // A deletion is no use; a sandbox's event carries no container status.
    assert_eq!(
        cri_event(event(
            "c1",
            ContainerEventType::ContainerDeletedEvent,
            vec![status("c1", id, "")]
        )),
        None
    );
    assert_eq!(
        cri_event(event(
            "sb",
            ContainerEventType::ContainerStartedEvent,
            vec![]
        )),
        None
    );
    // Another container's status does not name this one's image.
    assert_eq!(
        cri_event(event(
            "c2",
            ContainerEventType::ContainerStartedEvent,
            vec![status("c1", id, "")]
        )),
        None
    );
    // CRI-O: image_ref a digest reference, image_id the image's id: the id wins.
    let seen = cri_event(event(
        "c1",
        ContainerEventType::ContainerStartedEvent,
        vec![status("c1", "quay.io/a@sha256:0123", "sha256:abcd")],
    ))
    .expect("a use");
    assert_eq!(seen.image, "sha256:abcd");
}

fn seen(id: &str, action: &'static str, t: i64) -> Seen {
    Seen {
        container_id: id.into(),
        action,
        time_nanos: t,
        image: format!("img-{id}"),
    }
}

#[test]
fn a_use_is_sent_once_in_time_order_and_only_after_since() {
    let mut sent = HashSet::new();
    let found = vec![
        seen("b", "start", 30),
        seen("a", "create", 5),
        seen("a", "start", 20),
        seen("b", "create", 25),
    ];
    // Since 10: a's create was applied by an earlier run.
    let out = admit(&mut sent, found.clone(), 10, None);
    let order: Vec<(&str, &str)> = out
        .iter()
        .map(|s| (s.container_id.as_str(), s.action))
        .collect();
    assert_eq!(order, vec![("a", "start"), ("b", "create"), ("b", "start")]);
    // The next poll finds the same containers, and an event source reports b's start again:
    // nothing is sent twice; b's stop is new.
    let mut again = found;
    again.push(seen("b", "die", 40));
    let out = admit(&mut sent, again, 10, None);
    assert_eq!(out, vec![seen("b", "die", 40)]);
    // A replay stops at until; what lies after it comes with the next replay.
    let mut sent = HashSet::new();
    let out = admit(
        &mut sent,
        vec![seen("a", "start", 20), seen("a", "die", 50)],
        10,
        Some(30),
    );
    assert_eq!(out, vec![seen("a", "start", 20)]);
    // A use whose image is unknown is no use.
    let mut nameless = seen("c", "start", 60);
    nameless.image.clear();
    assert!(admit(&mut HashSet::new(), vec![nameless], 0, None).is_empty());
}

#[test]
fn a_poll_reads_a_start_and_a_stop_from_the_status() {
    let exited = Status {
        image: "sha256:ab".into(),
        times: list::Times {
            created: 1,
            started: 2,
            finished: 3,
        },
        exited: true,
    };
    let found = poll_times("c", "asked", &exited);
    assert_eq!(
        found
            .iter()
            .map(|s| (s.action, s.time_nanos, s.image.as_str()))
            .collect::<Vec<_>>(),
        vec![("start", 2, "sha256:ab"), ("die", 3, "sha256:ab")]
    );
    let running = Status {
        image: String::new(),
        times: list::Times {
            created: 1,
            started: 2,
            finished: 0,
        },
        exited: false,
    };
    let found = poll_times("c", "asked", &running);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].image, "asked");
}
