//! Table tests of the last-use table: events, inventories, the cursor, the history the
//! frequency-aware strategies read.

use super::*;
use crate::docker::{Container, ContainerState, Image};

fn image(id: &str, created: i64) -> Image {
    Image {
        id: id.into(),
        parent_id: None,
        tags: vec![format!("{id}:latest")],
        created,
        size_bytes: 1,
        ..Image::default()
    }
}

fn container(image_id: &str) -> Container {
    Container {
        id: "c".into(),
        name: "c".into(),
        image_id: image_id.into(),
        state: ContainerState::Exited,
        created: 0,
        finished: None,
        managed: false,
    }
}

#[test]
fn first_start_takes_build_time_later_starts_take_now() {
    let mut t = LastUse::new();
    let inv = Inventory {
        images: vec![image("a", 100)],
        containers: vec![],
    };
    t.reconcile(&inv, 1_000_000, false);
    assert_eq!(t.get("a").unwrap().last_used_ms, 100_000);

    let mut t = LastUse::restored(t.images().clone(), None);
    let mut running = container("a");
    running.state = ContainerState::Running;
    let inv = Inventory {
        images: vec![image("a", 100), image("b", 200)],
        containers: vec![running],
    };
    t.reconcile(&inv, 2_000_000, false);
    assert_eq!(
        t.get("b").unwrap().last_used_ms,
        2_000_000,
        "pulled while we were down"
    );
    assert_eq!(
        t.get("a").unwrap().last_used_ms,
        2_000_000,
        "a running container uses it"
    );
}

#[test]
fn a_stopped_container_counts_when_it_stopped_not_now() {
    let mut t = LastUse::restored(BTreeMap::new(), None);
    let mut stopped = container("a");
    stopped.created = 300;
    stopped.finished = Some(500);
    let mut never_finished = container("b");
    never_finished.created = 400;
    let inv = Inventory {
        images: vec![image("a", 100), image("b", 100)],
        containers: vec![stopped, never_finished],
    };
    t.reconcile(&inv, 2_000_000, false);
    // New to the table: first seen now; the container does not make it newer.
    assert_eq!(t.get("a").unwrap().last_used_ms, 2_000_000);
    let mut t = LastUse::restored(
        BTreeMap::from([
            (
                "a".to_string(),
                Entry {
                    first_seen_ms: 100_000,
                    last_used_ms: 100_000,
                    ..Entry::default()
                },
            ),
            (
                "b".to_string(),
                Entry {
                    first_seen_ms: 100_000,
                    last_used_ms: 100_000,
                    ..Entry::default()
                },
            ),
        ]),
        None,
    );
    t.reconcile(&inv, 2_000_000, false);
    assert_eq!(t.get("a").unwrap().last_used_ms, 500_000, "when it stopped");
    assert_eq!(
        t.get("b").unwrap().last_used_ms,
        400_000,
        "when it was made"
    );
}

#[test]
fn coverage_starts_at_the_first_inventory_and_is_never_moved() {
    let mut t = LastUse::new();
    assert_eq!(t.covering_since_ms(), None);
    assert_eq!(t.covered_ms(5_000), 0);
    t.reconcile(&Inventory::default(), 1_000, false);
    t.reconcile(&Inventory::default(), 9_000, false);
    assert_eq!(t.covering_since_ms(), Some(1_000));
    assert_eq!(t.covered_ms(9_000), 8_000);
    assert_eq!(
        t.covered_ms(500),
        0,
        "a clock that went back covers nothing"
    );
}

#[test]
fn deleted_images_are_forgotten_and_touch_never_goes_back() {
    let mut t = LastUse::new();
    t.touch("a", 50);
    t.touch("a", 40);
    assert_eq!(t.get("a").unwrap().last_used_ms, 50);
    t.reconcile(&Inventory::default(), 60, false);
    assert_eq!(t.get("a"), None);
}

#[test]
fn starts_are_counted_with_decay_and_the_two_latest_kept() {
    const H: i64 = FREQUENCY_HALF_LIFE_MS;
    let event = |ms: i64, action: &str| UseEvent {
        time_nanos: ms * 1_000_000,
        image: "sha256:a".into(),
        action: action.into(),
        deleted: false,
    };
    let mut t = LastUse::new();
    let t0 = 1_700_000_000_000;
    // A pull and a die are uses, not starts.
    t.apply(&event(t0, "pull"), Some("sha256:a"));
    t.apply(&event(t0 + 5, "die"), Some("sha256:a"));
    let e = t.get("sha256:a").unwrap();
    assert_eq!((e.started_ms, e.prev_started_ms, e.frequency_ms), (0, 0, 0));
    // One start at t weighs like a start at t; two at t like one a half-life later.
    t.apply(&event(t0 + 10, "start"), Some("sha256:a"));
    assert_eq!(t.get("sha256:a").unwrap().frequency_ms, t0 + 10);
    t.apply(&event(t0 + 10, "start"), Some("sha256:a"));
    assert_eq!(t.get("sha256:a").unwrap().frequency_ms, t0 + 10 + H);
    // A start a half-life later than two: 2 * 1/2 + 1 = 2 starts' weight then.
    t.apply(&event(t0 + 10 + H, "start"), Some("sha256:a"));
    let e = t.get("sha256:a").unwrap();
    assert_eq!(e.frequency_ms, t0 + 10 + 2 * H);
    assert_eq!((e.started_ms, e.prev_started_ms), (t0 + 10 + H, t0 + 10));
    // A late event of an older start: the latest two stay, the count grows.
    t.apply(&event(t0 + 20, "start"), Some("sha256:a"));
    let e = t.get("sha256:a").unwrap();
    assert_eq!((e.started_ms, e.prev_started_ms), (t0 + 10 + H, t0 + 20));
    assert!(e.frequency_ms > t0 + 10 + 2 * H);
}

#[test]
fn records_without_history_read_and_write_as_before() {
    let old: Entry = serde_json::from_str(r#"{"first_seen_ms": 1, "last_used_ms": 2}"#).unwrap();
    assert_eq!(
        old,
        Entry {
            first_seen_ms: 1,
            last_used_ms: 2,
            ..Entry::default()
        }
    );
    assert_eq!(
        serde_json::to_string(&old).unwrap(),
        r#"{"first_seen_ms":1,"last_used_ms":2}"#
    );
    let mut new = old;
    new.record_start(3);
    let text = serde_json::to_string(&new).unwrap();
    assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), new);
    assert!(text.contains(r#""frequency_ms":3"#), "{text}");
}

#[test]
fn events_in_one_second_keep_their_order() {
    let mut t = LastUse::new();
    let event = |nanos: i64| UseEvent {
        time_nanos: nanos,
        image: "app:1".into(),
        action: "start".into(),
        deleted: false,
    };
    t.apply(&event(5_000_100_000_000), Some("sha256:a"));
    t.apply(&event(5_000_900_000_000), Some("sha256:b"));
    assert!(t.get("sha256:a").unwrap().last_used_ms < t.get("sha256:b").unwrap().last_used_ms);
    assert_eq!(t.cursor_nanos(), Some(5_000_900_000_000));
}

#[test]
fn arrivals_are_the_images_first_seen_lately_with_their_last_listed_size() {
    let sized = |id: &str, created: i64, size_bytes: u64| Image {
        size_bytes,
        ..image(id, created)
    };
    let mut t = LastUse::new();
    // The first inventory: images found take their build time; an old one is no arrival, one
    // built a minute ago is.
    let old = sized("sha256:old", 1_000, 500);
    let fresh = sized("sha256:fresh", 1_799_999_940, 700);
    t.reconcile(
        &Inventory {
            images: vec![old.clone(), fresh.clone()],
            containers: vec![],
        },
        1_800_000_000_000,
        false,
    );
    let hour_ago = 1_800_000_000_000 - 3_600_000;
    assert_eq!(
        t.arrivals(hour_ago),
        vec![crate::policy::Arrival {
            at_ms: 1_799_999_940_000,
            bytes: 700
        }]
    );
    // A pull: first seen at its event; its size is known from the next inventory on.
    t.apply(
        &UseEvent {
            time_nanos: 1_800_000_060_000 * 1_000_000,
            image: "sha256:new".into(),
            action: "pull".into(),
            deleted: false,
        },
        Some("sha256:new"),
    );
    assert_eq!(t.arrivals(hour_ago).len(), 1, "not sized yet");
    t.reconcile(
        &Inventory {
            images: vec![old, fresh, sized("sha256:new", 1_700_000_000, 900)],
            containers: vec![],
        },
        1_800_000_120_000,
        false,
    );
    let mut bytes: Vec<u64> = t.arrivals(hour_ago).iter().map(|a| a.bytes).collect();
    bytes.sort_unstable();
    assert_eq!(bytes, vec![700, 900]);
    // Removed: no longer an arrival (its record and size are gone).
    t.forget("sha256:new");
    assert_eq!(t.arrivals(hour_ago).len(), 1);
}
