//! Tables of the headroom rule: what counts as arrived, how much room it asks for, and the
//! watermarks that leave it, each bound in turn.

use super::*;
use crate::config::Config;
use crate::usage::{FsUsage, Measurement};

const GIB: u64 = 1 << 30;
const MIN: i64 = 60_000;
const NOW: i64 = 1_800_000_000_000;

/// The default rule at the default interval (5 min): an hour's window, 5-minute spans.
fn rule() -> Rule {
    Rule::for_interval(std::time::Duration::from_secs(300))
}

fn arrival(ago_min: i64, gib: u64) -> Arrival {
    Arrival {
        at_ms: NOW - ago_min * MIN,
        bytes: gib * GIB,
    }
}

fn room(bytes: u64) -> Headroom {
    Headroom {
        room_bytes: bytes,
        ..Headroom::default()
    }
}

fn relative(high_pct: f64, low_pct: f64) -> Watermarks {
    Watermarks::Relative { high_pct, low_pct }
}

#[test]
fn the_room_is_twice_the_largest_arrival_of_the_last_hour_or_the_busiest_interval() {
    let r = rule();
    assert_eq!(r.window_ms, 60 * MIN);
    assert_eq!(r.span_ms, 5 * MIN);
    // Nothing arrived: no room asked for.
    assert_eq!(headroom(&[], NOW, &r), Headroom::default());
    // One of 3 GiB 10 minutes ago; one of 8 GiB 70 minutes ago is too old; one in the future
    // (a clock that moved) does not count.
    let h = headroom(&[arrival(10, 3), arrival(70, 8), arrival(-5, 9)], NOW, &r);
    assert_eq!(h.arrivals, 1);
    assert_eq!(h.largest_bytes, 3 * GIB);
    assert_eq!(h.busiest_bytes, 3 * GIB);
    assert_eq!(h.room_bytes, 6 * GIB);
    // Five of 2 GiB within four minutes (a base image rebuilt, every repository pulled): the
    // busiest interval, 10 GiB, is more than twice the largest.
    let burst: Vec<Arrival> = (0..5).map(|i| arrival(20 + i, 2)).collect();
    let h = headroom(&burst, NOW, &r);
    assert_eq!((h.largest_bytes, h.busiest_bytes), (2 * GIB, 10 * GIB));
    assert_eq!(h.room_bytes, 10 * GIB);
    // The same five spread over the hour: no two within five minutes.
    let spread: Vec<Arrival> = (0..5).map(|i| arrival(5 + 12 * i, 2)).collect();
    let h = headroom(&spread, NOW, &r);
    assert_eq!((h.busiest_bytes, h.room_bytes), (2 * GIB, 4 * GIB));
}

#[test]
fn auto_watermarks_leave_the_room_free_and_stay_below_the_eviction_threshold() {
    let r = rule();
    let disk = 100 * GIB;
    let both = (true, true);
    // (configured, (low auto, high auto), room GiB) -> (high, low)
    type Row = (Watermarks, (bool, bool), u64, (f64, f64));
    let table: &[Row] = &[
        // Small pulls on a large disk: the defaults.
        (relative(82.0, 78.0), both, 4, (82.0, 78.0)),
        // Pulls of 15 GiB (30 GiB of room): a pass starts at 70 % and ends below 66 %.
        (relative(82.0, 78.0), both, 30, (70.0, 66.0)),
        // However large, the low watermark stays at 50 %, the high one the band above.
        (relative(82.0, 78.0), both, 80, (54.0, 50.0)),
        // threshold_high = 90 (set: the original's meaning), low auto: at most 84, below the
        // kubelet's eviction at 85 %.
        (relative(90.0, 86.0), (true, false), 4, (90.0, 84.0)),
        // threshold_high = 82 set, room 30 %: the pass still starts at 82, and leaves the room.
        (relative(82.0, 78.0), (true, false), 30, (82.0, 70.0)),
        // threshold_low = 60 set, high auto: the high one leaves the room.
        (relative(82.0, 60.0), (false, true), 30, (70.0, 60.0)),
        // threshold_low = 75 set, high auto with room 30 %: the high one stays above it.
        (relative(82.0, 75.0), (false, true), 30, (75.5, 75.0)),
        // Both set: as configured, whatever arrives.
        (relative(90.0, 86.0), (false, false), 80, (90.0, 86.0)),
    ];
    for (configured, auto, room_gib, (high, low)) in table {
        let got = watermarks(*configured, *auto, disk, &room(room_gib * GIB), &r);
        assert_eq!(
            got,
            relative(*high, *low),
            "{configured:?} auto {auto:?} room {room_gib} GiB"
        );
    }
    // Absolute mode, and a filesystem of no size, are left as configured.
    let absolute = Watermarks::Absolute {
        high_bytes: 50 * GIB,
        low_bytes: 40 * GIB,
    };
    assert_eq!(
        watermarks(absolute, both, disk, &room(30 * GIB), &r),
        absolute
    );
    assert_eq!(
        watermarks(relative(82.0, 78.0), both, 0, &room(30 * GIB), &r),
        relative(82.0, 78.0)
    );
}

fn fs(path: &str, total_gib: u64, used_gib: u64) -> FsUsage {
    FsUsage::from_counts(
        path.into(),
        4096,
        total_gib * GIB / 4096,
        (total_gib - used_gib) * GIB / 4096,
        0,
        0,
    )
}

#[test]
fn a_pass_sizes_the_room_against_the_fullest_filesystem_and_says_why() {
    let config = Config::default();
    // 12 GiB of room: 12 % of the fuller 100 GiB disk, 6 % of the emptier 200 GiB one.
    let m = Measurement::Relative(vec![fs("/a", 200, 20), fs("/b", 100, 80)]);
    let (w, h) = effective(&config, &[arrival(3, 6)], &m, NOW);
    assert_eq!(w, relative(82.0, 78.0));
    assert_eq!(h.map(|h| h.room_bytes), Some(12 * GIB));
    let (w, _) = effective(&config, &[arrival(3, 10)], &m, NOW);
    assert_eq!(w, relative(80.0, 76.0));
    // Both watermarks set: as configured, and no room shown.
    let fixed = Config {
        low_auto: false,
        high_auto: false,
        ..Config::default()
    };
    assert_eq!(
        effective(&fixed, &[arrival(3, 10)], &m, NOW),
        (fixed.watermarks, None)
    );
    // Absolute mode: as configured.
    let absolute = Measurement::Absolute(crate::usage::TreeUsage {
        bytes: 10,
        inodes: 1,
        unreadable: 0,
    });
    assert_eq!(
        effective(&config, &[arrival(3, 10)], &absolute, NOW),
        (config.watermarks, None)
    );
}
