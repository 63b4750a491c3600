//! Reacting at once: a pull, load, import or build that takes the disk past the high watermark
//! starts a pass within seconds, without waiting for the next tick of a long interval.

use std::time::{Duration, Instant};

use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
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
        log.contains("pass started by an import of"),
        "the log says what started the pass:\n{log}"
    );
    // Well within the hour of the interval; the bound only guards against waiting for a tick.
    assert!(took < MINUTE, "took {took:?}");
    daemon.terminate(MINUTE);
}

/// After a restart, the first pass of `run` plans only once the events Docker buffered while
/// the cleaner was down are applied: the image used during the downtime is not the first to go.
#[test]
fn the_first_pass_after_a_restart_knows_what_happened_while_down() {
    let Some(d) = PrivateDockerd::start("restart", 512, None) else {
        return;
    };
    let used_while_down = d.image("used-while-down:1", 30);
    let idle = d.image("idle:1", 30);
    let cleaner = Cleaner::new(&d, "interval_seconds = 3600\n");
    // A cleaner ran until a moment ago: both images last used hours ago, the older first.
    cleaner.seed_last_use(&[(&used_while_down, 5 * 3600), (&idle, 3600)]);
    // While it was down, the older one was used.
    let id = d.created_container("used-while-down:1");
    d.docker(&["rm", &id]);
    let (used, _) = d.used_pct();
    // One image's worth (about 6 %) to free: only the least recently used goes.
    let mut cmd = cleaner.command(&["run"]);
    cmd.env(
        "DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH",
        (used - 1.0).floor().to_string(),
    )
    .env(
        "DOCKER_IMAGE_CLEANER_THRESHOLD_LOW",
        (used - 3.0).floor().to_string(),
    );
    let mut daemon = crate::util::daemon::Daemon::service(cmd, None);
    daemon.ready(MINUTE);
    daemon.wait_status("idle:", MINUTE);
    let ids = d.image_ids();
    assert!(
        ids.contains(&used_while_down),
        "the image used while the cleaner was down was removed first:\n{}",
        daemon.context()
    );
    assert!(
        !ids.contains(&idle),
        "the image nobody used since is the one that goes:\n{}",
        daemon.context()
    );
    daemon.terminate(MINUTE);
}
