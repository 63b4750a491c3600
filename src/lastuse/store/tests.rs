use std::os::unix::fs::{MetadataExt, symlink};

use super::format::{AHEAD_CURSOR_REPLAY_NANOS, clamp_cursor, clamp_entry};
use super::*;
use crate::lastuse::Entry;
use crate::lastuse::InstanceLock;

const NOW_MS: i64 = 1_800_000_000_000;
const NOW_NANOS: i64 = NOW_MS * 1_000_000;

/// The writing store of `dir` (the lock held as the daemon holds it).
fn writable(dir: &Path) -> (InstanceLock, Store) {
    let lock = InstanceLock::take(dir).unwrap();
    let store = lock.store();
    (lock, store)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn saved_table(dir: &Path) -> Tables {
    let (_lock, mut store) = writable(dir);
    store.load(NOW_MS, NOW_NANOS)
}

fn one_use() -> Tables {
    let mut t = Tables::default();
    t.default_engine().touch("a", 5);
    t.default_engine().advance_cursor(7);
    t
}

#[test]
fn corrupt_file_is_moved_aside_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().get("a"), None);
    assert_eq!(names(dir.path()), vec![CORRUPT_NAME]);
}

/// A directory where the corrupt file would go: the file goes to a name of its own instead;
/// and when that cannot be had either, it is never overwritten by a save (it once was).
#[test]
fn a_corrupt_file_is_never_overwritten_when_its_usual_place_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "{not json, but someone's data";
    std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
    let corrupt = dir.path().join(CORRUPT_NAME);
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("keep"), "").unwrap();
    let (lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    let unique = format!("{CORRUPT_NAME}.{NOW_MS}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(&unique)).unwrap(),
        bad
    );
    t.default_engine().touch("a", 5);
    store.save(&mut t).unwrap();
    drop((lock, store));

    // Both names taken: left in place, and no save replaces it.
    std::fs::write(dir.path().join(FILE_NAME), bad).unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    t.default_engine().touch("b", 5);
    assert!(store.save(&mut t).is_err());
    store.save_or_warn(&mut t);
    assert_eq!(
        std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
        bad,
        "the bad file was overwritten"
    );
}

#[test]
fn save_is_atomic_leaves_no_temp_file_and_writes_0600() {
    let dir = tempfile::tempdir().unwrap();
    let (_lock, store) = writable(dir.path());
    let mut t = one_use();
    store.save(&mut t).unwrap();
    assert!(!t.is_dirty());
    assert_eq!(names(dir.path()), vec![FILE_NAME]);
    let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    drop((_lock, store));
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().cursor_nanos(), Some(7));
    assert_eq!(t.default_engine().get("a").unwrap().last_used_ms, 5);
}

#[test]
fn version_1_is_migrated_to_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        r#"{"version": 1, "cursor_nanos": 9, "images": {"sha256:a": {"first_seen": 10, "last_used": 20}}}"#,
    )
    .unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    let table = t.default_engine();
    assert_eq!(
        table.get("sha256:a"),
        Some(Entry {
            first_seen_ms: 10_000,
            last_used_ms: 20_000,
            ..Entry::default()
        })
    );
    assert_eq!(table.cursor_nanos(), Some(9));
    store.save(&mut t).unwrap();
    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains("\"version\": 2"), "{text}");
}

#[test]
fn a_newer_version_is_kept_aside_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let newer = r#"{"version": 3, "whatever": {"it": "holds"}}"#;
    std::fs::write(dir.path().join(FILE_NAME), newer).unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    assert_eq!(t.default_engine().get("a"), None);
    assert_eq!(names(dir.path()), vec!["last-use.json.v3"]);
    let mut t = {
        t.default_engine().touch("a", 5);
        t
    };
    store.save(&mut t).unwrap();
    assert_eq!(names(dir.path()), vec![FILE_NAME, "last-use.json.v3"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("last-use.json.v3")).unwrap(),
        newer
    );
}

#[test]
fn a_read_only_store_moves_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["{not json", r#"{"version": 7}"#] {
        std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
        let mut store = Store::read_only(dir.path()).unwrap();
        let mut t = store.load(NOW_MS, NOW_NANOS);
        t.default_engine().touch("a", 5);
        store.save(&mut t).unwrap();
        assert_eq!(names(dir.path()), vec![FILE_NAME]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            text
        );
    }
    let missing = dir.path().join("missing");
    let mut store = Store::read_only(&missing).unwrap();
    let mut t = store.load(NOW_MS, NOW_NANOS);
    t.default_engine().touch("a", 5);
    store.save(&mut t).unwrap();
    assert!(!missing.exists());
}

#[test]
fn a_planted_temp_symlink_is_removed_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("shadow");
    std::fs::write(&target, "root only\n").unwrap();
    symlink(&target, dir.path().join(TMP_NAME)).unwrap();
    let (_lock, store) = writable(dir.path());
    store.save(&mut one_use()).unwrap();
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "root only\n");
    assert_eq!(names(dir.path()), vec![FILE_NAME]);
    drop((_lock, store));
    assert_eq!(
        saved_table(dir.path())
            .default_engine()
            .get("a")
            .unwrap()
            .last_used_ms,
        5
    );
}

#[test]
fn a_stale_temp_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(TMP_NAME), "half a save").unwrap();
    let (_lock, store) = writable(dir.path());
    store.save(&mut one_use()).unwrap();
    assert_eq!(names(dir.path()), vec![FILE_NAME]);
}

#[test]
fn an_odd_state_file_is_not_read_and_left_until_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere.json");
    std::fs::write(
        &target,
        r#"{"version": 2, "engines": {"default": {"cursor_nanos": 1, "images": {"a": {"first_seen_ms": 1, "last_used_ms": 1}}}}}"#,
    )
    .unwrap();
    symlink(&target, dir.path().join(FILE_NAME)).unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    assert_eq!(t.default_engine().get("a"), None, "a symlink is not read");
    assert!(
        std::fs::symlink_metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .file_type()
            .is_symlink(),
        "and left as it is"
    );
    let before = std::fs::read(&target).unwrap();
    t.default_engine().touch("b", 5);
    store.save(&mut t).unwrap();
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "never written through"
    );
    assert!(dir.path().join(FILE_NAME).is_file());
    drop((_lock, store));

    // A FIFO does not hang the start; a directory is left alone.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join(FILE_NAME);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().get("a"), None);
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    t.default_engine().touch("a", 5);
    assert!(store.save(&mut t).is_err(), "a directory is not replaced");
    assert!(fifo.is_dir());
    assert_eq!(names(dir.path()), vec![FILE_NAME]);
}

#[test]
fn a_file_larger_than_the_bound_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join(FILE_NAME)).unwrap();
    file.set_len(MAX_BYTES + 1).unwrap();
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().get("a"), None);
    assert_eq!(names(dir.path()), vec![CORRUPT_NAME]);
}

#[test]
fn a_failing_save_warns_once_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the temporary file goes: every save fails.
    let blocker = dir.path().join(TMP_NAME);
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("x"), "").unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = one_use();
    let e = store.save(&mut t).unwrap_err();
    assert!(e.to_string().contains(TMP_NAME), "{e}");
    assert!(!store.failing);
    store.save_or_warn(&mut t);
    assert!(
        store.failing && t.is_dirty(),
        "kept in memory, still to save"
    );
    store.save_or_warn(&mut t);
    assert!(store.failing);
    std::fs::remove_dir_all(&blocker).unwrap();
    store.save_or_warn(&mut t);
    assert!(!store.failing && !t.is_dirty(), "saved again");
    assert_eq!(names(dir.path()), vec![FILE_NAME]);
}

#[test]
fn times_out_of_range_are_clamped_at_load() {
    let e = |first_seen_ms, last_used_ms| Entry {
        first_seen_ms,
        last_used_ms,
        ..Entry::default()
    };
    // (stored, loaded at NOW_MS)
    let cases = [
        (e(1_000, 2_000), e(1_000, 2_000)),
        (e(NOW_MS, NOW_MS), e(NOW_MS, NOW_MS)),
        (e(i64::MIN, i64::MIN), e(0, 0)),
        (e(i64::MAX, i64::MAX), e(NOW_MS, NOW_MS)),
        (e(i64::MIN, i64::MAX), e(0, NOW_MS)),
        (e(-5, 2_000), e(0, 2_000)),
        (e(1_000, NOW_MS + 1), e(1_000, NOW_MS)),
        (e(NOW_MS + 1, NOW_MS + 2), e(NOW_MS, NOW_MS)),
        (e(3_000, 2_000), e(2_000, 2_000)),
        (e(3_000, -1), e(0, 0)),
    ];
    for (stored, loaded) in cases {
        assert_eq!(clamp_entry(stored, NOW_MS), loaded, "{stored:?}");
    }
    let cursors = [
        (None, None),
        (Some(5), Some(5)),
        (Some(NOW_NANOS), Some(NOW_NANOS)),
        // Ahead of the clock: replayed from a day back, not from now (which would lose every
        // use made since the real last event).
        (
            Some(NOW_NANOS + 1),
            Some(NOW_NANOS - AHEAD_CURSOR_REPLAY_NANOS),
        ),
        (
            Some(NOW_NANOS + 300_000_000_000),
            Some(NOW_NANOS - AHEAD_CURSOR_REPLAY_NANOS),
        ),
        (Some(i64::MAX), Some(NOW_NANOS - AHEAD_CURSOR_REPLAY_NANOS)),
        (Some(-1), Some(0)),
        (Some(i64::MIN), Some(0)),
    ];
    for (stored, loaded) in cursors {
        assert_eq!(clamp_cursor(stored, NOW_NANOS), loaded, "{stored:?}");
    }
}

#[test]
fn a_file_with_nonsense_times_loads_clamped_and_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"{{"version": 2, "engines": {{"default": {{"cursor_nanos": {}, "images": {{
            "sha256:future": {{"first_seen_ms": {}, "last_used_ms": {}}},
            "sha256:extreme": {{"first_seen_ms": {}, "last_used_ms": {}}},
            "sha256:fine": {{"first_seen_ms": 1000, "last_used_ms": 2000}}}}}}}}}}"#,
        i64::MAX,
        NOW_MS + 10,
        NOW_MS + 20,
        i64::MIN,
        i64::MAX
    );
    std::fs::write(dir.path().join(FILE_NAME), text).unwrap();
    let (_lock, mut store) = writable(dir.path());
    let mut t = store.load(NOW_MS, NOW_NANOS);
    let table = t.default_engine();
    assert_eq!(
        table.cursor_nanos(),
        Some(NOW_NANOS - AHEAD_CURSOR_REPLAY_NANOS)
    );
    assert_eq!(
        table.get("sha256:future"),
        Some(Entry {
            first_seen_ms: NOW_MS,
            last_used_ms: NOW_MS,
            ..Entry::default()
        })
    );
    assert_eq!(
        table.get("sha256:extreme"),
        Some(Entry {
            first_seen_ms: 0,
            last_used_ms: NOW_MS,
            ..Entry::default()
        })
    );
    assert_eq!(
        table.get("sha256:fine"),
        Some(Entry {
            first_seen_ms: 1000,
            last_used_ms: 2000,
            ..Entry::default()
        })
    );
    assert!(t.is_dirty(), "the clamped values are saved");
    // A version 1 file in seconds saturates, then clamps, the same way.
    std::fs::write(
        dir.path().join(FILE_NAME),
        format!(
            r#"{{"version": 1, "cursor_nanos": -3, "images": {{"a": {{"first_seen": {}, "last_used": {}}}}}}}"#,
            i64::MIN,
            i64::MAX
        ),
    )
    .unwrap();
    let mut t = store.load(NOW_MS, NOW_NANOS);
    let table = t.default_engine();
    assert_eq!(table.cursor_nanos(), Some(0));
    assert_eq!(
        table.get("a"),
        Some(Entry {
            first_seen_ms: 0,
            last_used_ms: NOW_MS,
            ..Entry::default()
        })
    );
}

#[test]
fn coverage_survives_a_restart_and_files_without_it_start_it_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (lock, store) = writable(dir.path());
    let mut t = Tables::default();
    t.default_engine()
        .reconcile(&crate::docker::Inventory::default(), 1_000, false);
    store.save(&mut t).unwrap();
    drop((lock, store));
    let mut t = saved_table(dir.path());
    assert_eq!(
        t.default_engine().covering_since_ms(),
        Some(1_000),
        "a restart keeps the coverage"
    );
    // A file written before coverage was kept: it starts at the next inventory, not earlier.
    std::fs::write(
        dir.path().join(FILE_NAME),
        r#"{"version": 2, "engines": {"default": {"cursor_nanos": 1, "images": {}}}}"#,
    )
    .unwrap();
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().covering_since_ms(), None);
    t.default_engine()
        .reconcile(&crate::docker::Inventory::default(), NOW_MS, false);
    assert_eq!(t.default_engine().covering_since_ms(), Some(NOW_MS));
    // One in the future (a clock that was wrong) is clamped to now.
    std::fs::write(
        dir.path().join(FILE_NAME),
        format!(
            r#"{{"version": 2, "engines": {{"default": {{"cursor_nanos": 1, "covering_since_ms": {}, "images": {{}}}}}}}}"#,
            NOW_MS + 5
        ),
    )
    .unwrap();
    let mut t = saved_table(dir.path());
    assert_eq!(t.default_engine().covering_since_ms(), Some(NOW_MS));
    assert!(t.default_engine().is_dirty(), "the clamped value is saved");
}
