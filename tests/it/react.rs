//! Reacting at once: a pull, load, import or build that takes the disk past the high watermark
//! starts a pass within seconds, without waiting for the next tick of a long interval.

use std::time::{Duration, Instant};

use crate::util::cleaner::Cleaner;
use crate::util::dockerd::PrivateDockerd;
use crate::util::wait_until;

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn images_imported_past_high_between_two_ticks_are_cleaned_within_seconds() {
    let Some(d) = PrivateDockerd::start("react", 512, None) else {
        return;
    };
    let old_a = d.image("old-a:1", 30);
    let old_b = d.image("old-b:1", 30);
    let (used, _) = d.used_pct();
    // About 6 % a 30 MiB image on 512 MiB: two new ones cross high; removing the two old ones
    // gets back below low.
    let high = (used + 9.0).floor();
    let low = (used + 3.0).floor();
    let cleaner = Cleaner::new(
        &d,
        &format!("interval_seconds = 3600\nthreshold_high = {high}\nthreshold_low = {low}\n"),
    );
    let mut daemon = cleaner.spawn(&["run"]);
    daemon.ready(MINUTE);
    // The first tick: below high, nothing to do; the next one is an hour away.
    daemon.wait_status("idle:", MINUTE);
    let started = Instant::now();
    let new_c = d.image("new-c:1", 30);
    let new_d = d.image("new-d:1", 30);
    let cleaned = wait_until(MINUTE, || {
        let ids = d.image_ids();
        !ids.contains(&old_a) && !ids.contains(&old_b)
    });
    let took = started.elapsed();
    assert!(
        cleaned,
        "the old images were not removed between ticks:\n{}",
        daemon.context()
    );
    let ids = d.image_ids();
    assert!(
        ids.contains(&new_c) && ids.contains(&new_d),
        "the new images stay: {ids:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("pass started by a import of"),
        "the log says what started the pass:\n{log}"
    );
    // Well within the hour of the interval; the bound only guards against waiting for a tick.
    assert!(took < MINUTE, "took {took:?}");
    daemon.terminate(MINUTE);
}
