//! A saved event cursor ahead of the clock (the clock was ahead when the state was saved, and
//! has been corrected since): the uses made while the cleaner was down are still replayed.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;

/// Now, unix nanoseconds.
fn now_nanos() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    i64::try_from(since.as_nanos()).expect("nanoseconds fit")
}

/// State written with the cursor 300 s ahead, `app:1` last used two hours ago by that state and
/// used again (a container created and removed) just before `once`, with `min_age_seconds =
/// 600`: the replay finds that use, so `app:1` is too young and stays; `old:1`, used an hour
/// ago, goes. The log says what was done with the cursor.
#[test]
fn a_cursor_ahead_of_the_clock_loses_no_use() {
    let Some(mut d) = PrivateDockerd::start("cursor-ahead", 512, None) else {
        return;
    };
    let app = d.image("app:1", 10);
    let old = d.image("old:1", 10);
    let (used, _) = d.used_pct();
    let high = (used - 1.0).floor();
    let cleaner = Cleaner::new(
        &d,
        &format!("threshold_high = {high}\nthreshold_low = 1\nmin_age_seconds = 600\n"),
    );
    // The table as a cleaner saved it with its clock 300 s ahead.
    cleaner.seed_last_use(&[(&app, 2 * 3600), (&old, 3600)]);
    let path = cleaner.state_dir().join("last-use.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("state")).expect("json");
    let ahead = now_nanos() + 300 * 1_000_000_000;
    state["engines"]["default"]["cursor_nanos"] = serde_json::json!(ahead);
    std::fs::write(&path, serde_json::to_vec(&state).expect("json")).expect("write state");

    // Docker's event buffer is in memory: a restart forgets the imports above, so the replay
    // finds only what follows.
    d.restart();
    // Used while the cleaner was down, 2 s or so before `once`.
    let c = d.docker(&["create", "--network=none", "app:1"]);
    let c = String::from_utf8_lossy(&c.stdout).trim().to_string();
    d.docker(&["rm", &c]);

    let (out, err) = cleaner.run_ok(&["once"]);
    let text = format!("stdout:\n{out}\nstderr:\n{err}");
    let images = d.image_ids();
    assert!(images.contains(&app), "the use of app:1 was lost:\n{text}");
    assert!(!images.contains(&old), "{text}");
    assert!(
        err.lines().any(|l| l.starts_with("WARN")
            && l.contains("event cursor is 29")
            && l.contains("s ahead of the clock")
            && l.contains("replaying")),
        "{text}"
    );
}
