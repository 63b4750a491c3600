//! The keys of the build cache, removals for age and keep labels: defaults, the environment
//! forms, their ranges, and their errors.

use super::*;

#[test]
fn the_reclaim_keys_have_their_defaults_and_environment_forms() {
    let c = load_text("", &[]).unwrap().config;
    assert_eq!(c.build_cache_min_age, Duration::from_secs(3600));
    assert_eq!(c.max_unused_age, Duration::ZERO, "off by default");
    assert!(!c.max_unused_age_cordon);
    assert!(c.keep_labels.is_empty());

    let l = load_text(
        "",
        &[
            ("DOCKER_IMAGE_CLEANER_BUILD_CACHE_MIN_AGE_SECONDS", "600"),
            ("DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_SECONDS", "86400"),
            ("DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_CORDON", "true"),
            (
                "DOCKER_IMAGE_CLEANER_KEEP_LABELS",
                "com.example.pin, tier=gold,url=http://x/?a=b",
            ),
        ],
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.build_cache_min_age, Duration::from_secs(600));
    assert_eq!(c.max_unused_age, Duration::from_secs(86_400));
    assert!(c.max_unused_age_cordon);
    let labels: Vec<String> = c.keep_labels.iter().map(ToString::to_string).collect();
    assert_eq!(
        labels,
        vec!["com.example.pin", "tier=gold", "url=http://x/?a=b"]
    );
    assert_eq!(
        c.keep_labels[2].value.as_deref(),
        Some("http://x/?a=b"),
        "split at the first ="
    );
    let text = l.render();
    for line in [
        "build_cache_min_age_seconds = 600  # env DOCKER_IMAGE_CLEANER_BUILD_CACHE_MIN_AGE_SECONDS",
        "max_unused_age_seconds = 86400  #",
        "max_unused_age_cordon = true  #",
        "keep_labels = [\"com.example.pin\", \"tier=gold\", \"url=http://x/?a=b\"]  #",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    // What check-config prints reads back as the same configuration.
    let again = load_text(
        &text
            .lines()
            .filter(|l| !l.starts_with("engine"))
            .map(|l| format!("{}\n", l.split("  #").next().unwrap()))
            .collect::<String>(),
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(again.keep_labels, c.keep_labels);
    assert_eq!(again.max_unused_age, c.max_unused_age);
}

#[test]
fn bad_reclaim_values_name_the_key_and_the_value() {
    let cases: &[Case] = &[
        (
            "min_age_seconds = 3600\nmax_unused_age_seconds = 600\n",
            &[],
            &[
                "max_unused_age_seconds",
                "600",
                "at least min_age_seconds (3600)",
            ],
        ),
        (
            "min_age_seconds = 7200\n",
            &[("DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_SECONDS", "3600")],
            &[
                "environment variable DOCKER_IMAGE_CLEANER_MAX_UNUSED_AGE_SECONDS",
                "min_age_seconds (7200)",
            ],
        ),
        (
            "build_cache_min_age_seconds = -1\n",
            &[],
            &["build_cache_min_age_seconds", "line 1"],
        ),
        (
            "keep_labels = [\"=gold\"]\n",
            &[],
            &["keep_labels", "\"=gold\"", "key not empty"],
        ),
        (
            "keep_labels = [\" tier=gold\"]\n",
            &[],
            &["keep_labels", "without spaces"],
        ),
        (
            "max_unused_age_cordon = \"yes\"\n",
            &[],
            &["max_unused_age_cordon", "line 1"],
        ),
    ];
    for (text, vars, wanted) in cases {
        let e = error_text(text, vars);
        for w in *wanted {
            assert!(
                e.contains(w),
                "error for {text:?} {vars:?} lacks {w:?}: {e}"
            );
        }
    }
    // Zero is off, whatever min_age.
    let c = load_text("max_unused_age_seconds = 0\nmin_age_seconds = 9000\n", &[])
        .unwrap()
        .config;
    assert!(c.max_unused_age.is_zero());
}
