//! `threshold_high` and `threshold_low` as `"auto"` (the default): which watermark the headroom
//! rule may lower, and the original's settings, which keep their meaning.

use super::*;

fn auto(c: &Config) -> (bool, bool) {
    (c.low_auto, c.high_auto)
}

#[test]
fn both_watermarks_are_auto_by_default_and_a_number_fixes_each() {
    let c = load_text("", &[]).unwrap().config;
    assert_eq!(auto(&c), (true, true));
    assert_eq!(
        c.watermarks,
        Watermarks::Relative {
            high_pct: 82.0,
            low_pct: 78.0
        }
    );
    // "auto" written out is the same as unset.
    let c = load_text(
        "threshold_high = \"auto\"\nthreshold_low = \" auto \"\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(auto(&c), (true, true));
    // The original's settings: DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH alone fixes the high
    // watermark (cleaning starts there) and leaves the low one to the rule, at most 4 below.
    let c = load_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "80")])
        .unwrap()
        .config;
    assert_eq!(auto(&c), (true, false));
    assert_eq!(
        c.watermarks,
        Watermarks::Relative {
            high_pct: 80.0,
            low_pct: 76.0
        }
    );
    // DOCKER_IMAGE_CLEANER_THRESHOLD_LOW fixes the low one.
    let l = load_text(
        "",
        &[
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "80"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", "60"),
        ],
    )
    .unwrap();
    assert_eq!(auto(&l.config), (false, false));
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 80.0,
            low_pct: 60.0
        }
    );
    let text = l.render();
    assert!(text.contains("threshold_low = 60  # env"), "{text}");
    let text = load_text("", &[]).unwrap().render();
    assert!(
        text.contains("threshold_high = \"auto\"  # default"),
        "{text}"
    );
    assert!(
        text.contains("threshold_low = \"auto\"  # derived: at most 4 points below threshold_high"),
        "{text}"
    );
}

#[test]
fn absolute_mode_has_no_auto_and_still_needs_a_size() {
    let c = load_text(
        "threshold_type = \"absolute\"\nthreshold_high = \"50GiB\"\nthreshold_low = \"auto\"\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(auto(&c), (false, false));
    assert_eq!(
        c.watermarks,
        Watermarks::Absolute {
            high_bytes: 50 << 30,
            low_bytes: (50u64 << 30) / 5 * 4
        }
    );
    let e = error_text(
        "threshold_type = \"absolute\"\nthreshold_high = \"auto\"\n",
        &[],
    );
    assert!(e.contains("needs threshold_high as a size"), "{e}");
    // Any other word is still an error naming the key.
    let e = error_text("threshold_low = \"automatic\"\n", &[]);
    assert!(e.contains("threshold_low"), "{e}");
}
