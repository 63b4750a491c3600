//! Configuration: precedence, sources, and errors that point at the input.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs.iter().copied().collect()
}

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Loaded, Error> {
    let f = file(text);
    load(Some(f.path()), &env(vars), Flags::default())
}

fn error_text(text: &str, vars: &[(&str, &str)]) -> String {
    match load_text(text, vars) {
        Ok(l) => panic!("expected an error, got {:?}", l.config),
        Err(e) => crate::error_chain(&e),
    }
}

#[test]
fn shipped_file_sets_nothing_and_shows_every_key_with_its_default_as_a_comment() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/docker-image-cleaner.toml");
    let loaded = load(Some(&path), &env(&[]), Flags::default()).unwrap();
    // It states only what differs from the defaults: nothing, so every key is the default's
    // or derived (threshold_low from threshold_high, as for a user who sets only high).
    for key in raw::Raw::KEYS {
        assert!(
            matches!(loaded.source(key), Source::Default | Source::Derived(_)),
            "conf/docker-image-cleaner.toml sets {key}: it should show it commented out"
        );
    }
    // Each key appears commented out with the default check-config renders.
    let text = std::fs::read_to_string(&path).unwrap();
    let defaults = Loaded {
        config: Config::default(),
        file: None,
        sources: Default::default(),
        warnings: vec![],
    };
    for line in defaults.render().lines() {
        let (assignment, _) = line.split_once("  #").unwrap();
        let key = assignment.split(" = ").next().unwrap();
        if raw::FILE_ONLY_KEYS.contains(&key) {
            assert!(
                text.contains(&format!("# [[{key}]]")),
                "conf/docker-image-cleaner.toml does not show [[{key}]]"
            );
            continue;
        }
        assert!(
            text.lines().any(|l| l == format!("# {assignment}")),
            "conf/docker-image-cleaner.toml lacks the line \"# {assignment}\""
        );
    }
    // Uncommenting only threshold_high moves threshold_low with it (derived stays derived).
    let edited = text.replace("# threshold_high = \"auto\"", "threshold_high = 90");
    let l = load_text(&edited, &[]).unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 90.0,
            low_pct: 86.0
        }
    );
    let edited = text.replace("# threshold_high = \"auto\"", "threshold_high = 75");
    assert!(
        load_text(&edited, &[]).is_ok(),
        "lowering high alone is valid"
    );
}

#[test]
fn original_environment_settings_keep_their_meaning() {
    let l = load(
        None,
        &env(&[("DOCKER_IMAGE_CLEANER_CONFIG", "/nonexistent/never.toml")]),
        Flags::default(),
    );
    assert!(
        l.is_err(),
        "a config file named by the environment must exist"
    );

    let l = load_text(
        "",
        &[
            ("DOCKER_IMAGE_CLEANER_NODE_NAME", "node-7"),
            (
                "DOCKER_IMAGE_CLEANER_PATH_TO_CHECK",
                "/var/lib/docker,/var/lib/containerd",
            ),
            ("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "60"),
            ("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "0.5"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_TYPE", "absolute"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "2147483648"),
            ("DOCKER_IMAGE_CLEANER_TIMEOUT_SECONDS", "30"),
        ],
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(c.node_name.as_deref(), Some("node-7"));
    assert_eq!(c.paths.len(), 2);
    assert_eq!(c.interval, Duration::from_secs(60));
    assert_eq!(c.delay, Delay::Fixed(Duration::from_millis(500)));
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(
        c.watermarks,
        Watermarks::Absolute {
            high_bytes: 2 << 30,
            low_bytes: (2u64 << 30) / 5 * 4
        }
    );
    assert_eq!(
        l.source("interval_seconds"),
        &Source::Env("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS".into())
    );
    assert_eq!(l.source("strategy"), &Source::Default);
}

#[test]
fn precedence_is_default_file_env_flag() {
    let f = file("interval_seconds = 10\ndry_run = false\nthreshold_high = 90\n");
    let vars = env(&[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "20")]);
    let l = load(Some(f.path()), &vars, Flags { dry_run: true }).unwrap();
    assert_eq!(l.config.interval, Duration::from_secs(20));
    assert!(l.config.dry_run);
    assert_eq!(l.source("dry_run"), &Source::Flag("--dry-run"));
    assert_eq!(
        l.source("threshold_high"),
        &Source::File(f.path().to_path_buf())
    );
    let text = l.render();
    assert!(
        text.contains("interval_seconds = 20  # env DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS"),
        "{text}"
    );
    // Left to the headroom rule: four points below the high watermark of the file at most.
    assert!(
        text.contains("threshold_low = \"auto\"  # derived: at most 4 points below threshold_high"),
        "{text}"
    );
}

#[test]
fn sizes_percentages_and_lists() {
    let l = load_text("threshold_type = \"absolute\"\nthreshold_high = \"50GiB\"\nthreshold_low = \"40GB\"\nkeep = [\"^pause\"]\n", &[]).unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Absolute {
            high_bytes: 50 << 30,
            low_bytes: 40_000_000_000
        }
    );
    assert_eq!(l.config.keep[0].as_str(), "^pause");
    let l = load_text(
        "threshold_high = \"85%\"\n",
        &[("DOCKER_IMAGE_CLEANER_KEEP", "^a/, ^b:")],
    )
    .unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 85.0,
            low_pct: 81.0
        }
    );
    assert_eq!(l.config.keep.len(), 2);
    // An original-tool user with a low high watermark still has a valid band; a tiny one too.
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "6")]).unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 6.0,
            low_pct: 3.0
        }
    );
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "40")]).unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 40.0,
            low_pct: 36.0
        }
    );
    let l = load_text("", &[("DOCKER_HOST", "tcp://127.0.0.1:2375")]).unwrap();
    assert_eq!(
        l.config.docker_host.as_deref(),
        Some("tcp://127.0.0.1:2375")
    );
}

/// A file's text, the environment, the delay wanted and how `check-config` shows it.
type DelayCase<'a> = (&'a str, &'a [(&'a str, &'a str)], Delay, &'a str);

#[test]
fn delay_is_seconds_or_adaptive_from_file_and_environment_and_rendered_back() {
    const VAR: &str = "DOCKER_IMAGE_CLEANER_DELAY_SECONDS";
    let cases: &[DelayCase] = &[
        ("", &[], Delay::Adaptive, "\"adaptive\""),
        ("", &[(VAR, "1")], Delay::Fixed(Duration::from_secs(1)), "1"),
        (
            "delay_seconds = 0\n",
            &[],
            Delay::Fixed(Duration::ZERO),
            "0",
        ),
        (
            "delay_seconds = 2.5\n",
            &[],
            Delay::Fixed(Duration::from_millis(2500)),
            "2.5",
        ),
        (
            "delay_seconds = \"adaptive\"\n",
            &[],
            Delay::Adaptive,
            "\"adaptive\"",
        ),
        ("", &[(VAR, "adaptive")], Delay::Adaptive, "\"adaptive\""),
        (
            "delay_seconds = \"adaptive\"\n",
            &[(VAR, " 3 ")],
            Delay::Fixed(Duration::from_secs(3)),
            "3",
        ),
    ];
    for (text, vars, want, rendered) in cases {
        let l = load_text(text, vars).unwrap();
        assert_eq!(l.config.delay, *want, "{text:?} {vars:?}");
        let line = format!("delay_seconds = {rendered}");
        assert!(
            l.render().lines().any(|l| l.starts_with(&line)),
            "{line}: {}",
            l.render()
        );
        // What check-config prints loads back to the same delay.
        let again = load_text(&format!("{line}\n"), &[]).unwrap();
        assert_eq!(again.config.delay, *want, "{line}");
    }
    for (text, vars, wanted) in [
        (
            "delay_seconds = \"fast\"\n",
            &[][..],
            &["delay_seconds", "line 1, column 17", "\"adaptive\""][..],
        ),
        (
            "delay_seconds = -1\n",
            &[],
            &["delay_seconds", "line 1", "\"adaptive\""],
        ),
        (
            "delay_seconds = true\n",
            &[],
            &["delay_seconds", "\"adaptive\""],
        ),
        (
            "",
            &[(VAR, "Adaptive")],
            &[VAR, "\"Adaptive\"", "\"adaptive\""],
        ),
        ("", &[(VAR, "-0.5")], &[VAR, "-0.5"]),
        ("", &[(VAR, "1e300")], &[VAR, "10 years"]),
    ] {
        let e = error_text(text, vars);
        for w in wanted {
            assert!(e.contains(w), "{text:?} {vars:?}: error lacks {w:?}: {e}");
        }
    }
}

#[test]
fn every_strategy_is_accepted_by_file_and_environment_and_rendered_back() {
    let all = [
        ("lru", Strategy::Lru),
        ("lru2", Strategy::Lru2),
        ("lfu", Strategy::Lfu),
        ("gdsf", Strategy::Gdsf),
        ("prune", Strategy::Prune),
    ];
    for (name, strategy) in all {
        assert_eq!(strategy.name(), name);
        let from_file = load_text(&format!("strategy = \"{name}\"\n"), &[]).unwrap();
        assert_eq!(from_file.config.strategy, strategy);
        let from_env = load_text("", &[("DOCKER_IMAGE_CLEANER_STRATEGY", name)]).unwrap();
        assert_eq!(from_env.config.strategy, strategy);
        assert!(
            from_env
                .render()
                .lines()
                .any(|l| l.starts_with(&format!("strategy = \"{name}\""))),
            "{}",
            from_env.render()
        );
    }
    // An unknown name lists the valid ones.
    let e = error_text("strategy = \"lfru\"\n", &[]);
    for name in ["lru", "lru2", "lfu", "gdsf", "prune"] {
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn file_errors_name_the_file_line_and_column() {
    let cases = [
        (
            "interval_seconds = 10\nbogus_key = 1\n",
            &["line 2", "bogus_key"][..],
        ),
        ("interval_seconds = \"soon\"\n", &["line 1", "column"][..]),
        ("strategy = \"random\"\n", &["line 1", "random", "lru"][..]),
        ("threshold_high = [\n", &["line"][..]),
        ("interval_seconds = -5\n", &["line 1"][..]),
    ];
    for (text, wanted) in cases {
        let e = error_text(text, &[]);
        assert!(e.contains("configuration file"), "{e}");
        for w in wanted {
            assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
        }
    }
}

/// (file text, environment, fragments the error must contain)
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

#[test]
fn bad_values_name_the_key_value_and_origin() {
    let cases: [Case; 9] = [
        (
            "threshold_high = 80\nthreshold_low = 80\n",
            &[],
            &[
                "line 2, column 17",
                "threshold_low",
                "80",
                "below threshold_high",
            ],
        ),
        ("threshold_high = 120\n", &[], &["threshold_high", "120"]),
        (
            "interval_seconds = 0\n",
            &[],
            &["interval_seconds", "at least 1 second"],
        ),
        ("keep = [\"(\"]\n", &[], &["keep", "\"(\""]),
        (
            "threshold_type = \"absolute\"\nthreshold_high = \"1MiB\"\n",
            &[],
            &["threshold_high", "1 GiB"],
        ),
        (
            "path_to_check = \"relative/path\"\n",
            &[],
            &["path_to_check", "absolute"],
        ),
        (
            "",
            &[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "soon")],
            &[
                "environment variable DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS",
                "\"soon\"",
            ],
        ),
        (
            "",
            &[("DOCKER_IMAGE_CLEANER_STRATEGY", "random")],
            &["DOCKER_IMAGE_CLEANER_STRATEGY", "random"],
        ),
        (
            "",
            &[("DOCKER_HOST", "ssh://host")],
            &["DOCKER_HOST", "ssh://host"],
        ),
    ];
    for (text, vars, wanted) in cases {
        let e = error_text(text, vars);
        for w in wanted {
            assert!(
                e.contains(w),
                "error for {text:?} {vars:?} lacks {w:?}: {e}"
            );
        }
    }
}

#[test]
fn missing_files_default_path_optional_named_path_required() {
    let e = load(
        Some(Path::new("/nonexistent/x.toml")),
        &env(&[]),
        Flags::default(),
    )
    .unwrap_err();
    assert!(crate::error_chain(&e).contains("/nonexistent/x.toml"));
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_TYPO", "1")]).unwrap();
    assert_eq!(
        l.warnings,
        vec!["ignoring unknown environment variable DOCKER_IMAGE_CLEANER_TYPO"]
    );
}

fn load_env(vars: &Env) -> Result<Loaded, Error> {
    let f = file("");
    load(Some(f.path()), vars, Flags::default())
}

/// A file's text, the field it sets, and the value wanted.
type DurationCase = (&'static str, fn(&Config) -> Duration, Duration);

#[test]
fn durations_have_ranges_and_integers_stay_exact() {
    let ok: &[DurationCase] = &[
        (
            "interval_seconds = 1\n",
            |c| c.interval,
            Duration::from_secs(1),
        ),
        (
            "interval_seconds = 1.5\n",
            |c| c.interval,
            Duration::from_millis(1500),
        ),
        (
            "interval_seconds = 315359999\n",
            |c| c.interval,
            Duration::from_secs(315_359_999),
        ),
        ("min_age_seconds = 0\n", |c| c.min_age, Duration::ZERO),
        (
            "container_min_age_seconds = 0.0\n",
            |c| c.container_min_age,
            Duration::ZERO,
        ),
        (
            "timeout_seconds = 1\n",
            |c| c.timeout,
            Duration::from_secs(1),
        ),
        (
            "max_cordon_seconds = 0.001\n",
            |c| c.max_cordon,
            Duration::from_millis(1),
        ),
    ];
    for (text, field, want) in ok {
        let l = load_text(text, &[]).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(field(&l.config), *want, "{text:?}");
    }

    let bad: &[(&str, &str)] = &[
        ("interval_seconds = 1e-10\n", "at least 1 second"),
        ("interval_seconds = 1e-9\n", "at least 1 second"),
        ("interval_seconds = 0.999\n", "at least 1 second"),
        ("interval_seconds = 0\n", "at least 1 second"),
        ("interval_seconds = 315360000\n", "10 years"),
        ("min_age_seconds = 1e19\n", "10 years"),
        ("min_age_seconds = 9223372036854775807\n", "10 years"),
        ("container_min_age_seconds = 4e8\n", "10 years"),
        ("delay_seconds = 1e300\n", "10 years"),
        ("timeout_seconds = 0.5\n", "at least 1 second"),
        ("timeout_seconds = 315360000\n", "10 years"),
        ("max_cordon_seconds = 0\n", "more than 0"),
        ("max_cordon_seconds = 1e-10\n", "more than 0"),
        ("max_cordon_seconds = 1e10\n", "10 years"),
    ];
    for (text, wanted) in bad {
        let key = text.split(' ').next().unwrap();
        let e = error_text(text, &[]);
        for w in [key, "line 1, column", wanted] {
            assert!(e.contains(w), "error for {text:?} lacks {w:?}: {e}");
        }
        // The same value through the environment names the variable.
        let var = format!("DOCKER_IMAGE_CLEANER_{}", key.to_ascii_uppercase());
        let value = text.split(" = ").nth(1).unwrap().trim();
        let e = error_text("", &[(&var, value)]);
        assert!(
            e.contains(&format!("environment variable {var}")) && e.contains(wanted),
            "{var}={value}: {e}"
        );
    }
}

#[test]
fn sizes_never_saturate_and_integers_stay_exact() {
    let absolute = |high: &str| format!("threshold_type = \"absolute\"\nthreshold_high = {high}\n");
    for high in [
        "\"17EiB\"",
        "\"16EiB\"",
        "\"99999999999999999999999GiB\"",
        "1e20",
    ] {
        let e = error_text(&absolute(high), &[]);
        assert!(
            e.contains("threshold_high")
                && e.contains("line 2, column 18")
                && e.contains("too large"),
            "{high}: {e}"
        );
    }
    let e = error_text(
        "threshold_type = \"absolute\"\n",
        &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "17EiB")],
    );
    assert!(
        e.contains("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH") && e.contains("\"17EiB\" is too large"),
        "{e}"
    );
    for (high, bytes) in [
        ("9007199254740993", 9_007_199_254_740_993u64),
        ("\"9007199254740993\"", 9_007_199_254_740_993),
        ("2147483648.0", 2 << 30),
        ("1.5e9", 1_500_000_000),
        ("\"15.5EiB\"", (15 << 60) + (1 << 59)),
        ("\"1.5GiB\"", 3 << 29),
    ] {
        let l = load_text(&absolute(high), &[]).unwrap_or_else(|e| panic!("{high}: {e}"));
        let Watermarks::Absolute { high_bytes, .. } = l.config.watermarks else {
            panic!("{high}: {:?}", l.config.watermarks)
        };
        assert_eq!(high_bytes, bytes, "{high}");
    }
    for (high, wanted) in [
        ("1073741824.5", "whole number of bytes"),
        ("\"1073741824.5\"", "whole number of bytes"),
        ("-1", "negative"),
        ("\"5 gibibytes\"", "unknown unit"),
        ("\"80%\"", "relative"),
    ] {
        let e = error_text(&absolute(high), &[]);
        assert!(e.contains(wanted), "{high}: {e}");
    }
    // Absolute mode without a size points at the setting that needs it.
    let e = error_text("threshold_type = \"absolute\"\n", &[]);
    assert!(
        e.contains("line 1, column 18") && e.contains("needs threshold_high"),
        "{e}"
    );
}

#[test]
fn environment_values_are_values_never_toml_text() {
    let hostile = "90\nstate_dir = \"/tmp/x\"";
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", hostile)]);
    assert!(
        e.starts_with(
            "environment variable DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH: threshold_high = "
        ),
        "{e}"
    );
    // A string key takes the whole text as its value: nothing else is set.
    let l = load_text(
        "",
        &[(
            "DOCKER_IMAGE_CLEANER_KUBECONFIG",
            "/etc/k.conf\"\nstate_dir = \"/tmp/x",
        )],
    )
    .unwrap();
    assert_eq!(
        l.config.state_dir,
        std::path::PathBuf::from("/var/lib/docker-image-cleaner")
    );
    assert_eq!(l.source("state_dir"), &Source::Default);
    assert_eq!(
        l.source("kubeconfig"),
        &Source::Env("DOCKER_IMAGE_CLEANER_KUBECONFIG".into())
    );

    // Every accepted form, each credited to its own variable.
    let f = file("interval_seconds = 60\n");
    let l = load(
        Some(f.path()),
        &env(&[
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "90%"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", " 70 "),
            ("DOCKER_IMAGE_CLEANER_DRY_RUN", "true"),
            ("DOCKER_IMAGE_CLEANER_KEEP", "^a,^b , [a-z]+"),
            ("DOCKER_IMAGE_CLEANER_PATH_TO_CHECK", "/a,/b"),
            ("DOCKER_IMAGE_CLEANER_DELAY_SECONDS", "0.5"),
            ("DOCKER_IMAGE_CLEANER_NODE_NAME", "123"),
            ("DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS", "7200"),
        ]),
        Flags::default(),
    )
    .unwrap();
    let c = &l.config;
    assert_eq!(
        c.watermarks,
        Watermarks::Relative {
            high_pct: 90.0,
            low_pct: 70.0
        }
    );
    assert!(c.dry_run);
    let keep: Vec<&str> = c.keep.iter().map(Regex::as_str).collect();
    assert_eq!(keep, ["^a", "^b", "[a-z]+"]);
    assert_eq!(c.paths, [Path::new("/a"), Path::new("/b")]);
    assert_eq!(c.delay, Delay::Fixed(Duration::from_millis(500)));
    assert_eq!(c.node_name.as_deref(), Some("123"));
    assert_eq!(c.min_age, Duration::from_secs(7200));
    let text = l.render();
    for (key, source) in [
        (
            "threshold_high",
            "env DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH".to_string(),
        ),
        (
            "threshold_low",
            "env DOCKER_IMAGE_CLEANER_THRESHOLD_LOW".to_string(),
        ),
        ("dry_run", "env DOCKER_IMAGE_CLEANER_DRY_RUN".to_string()),
        ("keep", "env DOCKER_IMAGE_CLEANER_KEEP".to_string()),
        (
            "path_to_check",
            "env DOCKER_IMAGE_CLEANER_PATH_TO_CHECK".to_string(),
        ),
        (
            "delay_seconds",
            "env DOCKER_IMAGE_CLEANER_DELAY_SECONDS".to_string(),
        ),
        (
            "node_name",
            "env DOCKER_IMAGE_CLEANER_NODE_NAME".to_string(),
        ),
        (
            "min_age_seconds",
            "env DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS".to_string(),
        ),
        ("interval_seconds", format!("file {}", f.path().display())),
        ("state_dir", "default".to_string()),
        ("strategy", "default".to_string()),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        assert!(line.ends_with(&format!("  # {source}")), "{line}");
    }

    // Typed forms that are wrong are errors naming the variable, with the first reading's reason.
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "-5")]);
    assert!(
        e.contains("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS") && e.contains("-5"),
        "{e}"
    );
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_DRY_RUN", "yes")]);
    assert!(
        e.contains("DOCKER_IMAGE_CLEANER_DRY_RUN") && e.contains("boolean"),
        "{e}"
    );
}

#[test]
fn node_names_must_be_kubernetes_names() {
    for name in [
        "../../api/v1/namespaces/kube-system/secrets/x",
        "node-1?dryRun=All",
        "node-1/status",
        "node 1",
        "Node-1",
    ] {
        let e = error_text(&format!("node_name = {name:?}\n"), &[]);
        assert!(
            e.contains("line 1, column 13") && e.contains(&format!("node_name = {name:?}")),
            "{name:?}: {e}"
        );
        let e = error_text("", &[("DOCKER_IMAGE_CLEANER_NODE_NAME", name)]);
        assert!(
            e.contains("DOCKER_IMAGE_CLEANER_NODE_NAME"),
            "{name:?}: {e}"
        );
    }
    // A newline is shown escaped, not as a line break in the log.
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_NODE_NAME", "node-1\nnode-2")]);
    assert!(
        e.contains(r#""node-1\nnode-2""#) && !e.contains('\n'),
        "{e}"
    );
    // Surrounding whitespace is dropped; empty (or blank) turns cordoning off.
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_NODE_NAME", " node-1\n")]).unwrap();
    assert_eq!(l.config.node_name.as_deref(), Some("node-1"));
    let l = load_text("node_name = \"  \"\n", &[]).unwrap();
    assert_eq!(l.config.node_name, None);
}

#[test]
fn docker_host_is_checked_and_completed() {
    for (host, wanted) in [
        ("tcp://127.0.0.1:99999", "99999"),
        ("tcp://", "needs a host"),
        ("unix://", "path"),
        ("unix://docker.sock", "absolute"),
        ("https://h:2376", "not supported by this build"),
        ("ssh://me@h", "not supported by this build"),
    ] {
        let e = error_text("", &[("DOCKER_HOST", host)]);
        assert!(
            e.starts_with("environment variable DOCKER_HOST: docker_host = ") && e.contains(wanted),
            "{host}: {e}"
        );
        let e = error_text(&format!("docker_host = {host:?}\n"), &[]);
        assert!(
            e.contains("line 1, column 15") && e.contains(wanted),
            "{host}: {e}"
        );
    }
    let l = load_text("", &[("DOCKER_HOST", "tcp://docker.internal")]).unwrap();
    assert_eq!(
        l.config.docker_host.as_deref(),
        Some("tcp://docker.internal:2375")
    );
    assert!(
        l.render()
            .contains("docker_host = \"tcp://docker.internal:2375\"  # env DOCKER_HOST")
    );
}

#[test]
fn only_our_variables_must_be_utf8() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let latin1 = |b: &[u8]| OsString::from(OsStr::from_bytes(b));
    let vars: Env = [
        (OsString::from("SITE_NOTE"), latin1(b"caf\xe9")),
        (latin1(b"NOTE_\xe9"), OsString::from("x")),
        (
            OsString::from("DOCKER_IMAGE_CLEANER_NODE_NAME"),
            OsString::from("n1"),
        ),
    ]
    .into_iter()
    .collect();
    let l = load_env(&vars).unwrap();
    assert_eq!(l.config.node_name.as_deref(), Some("n1"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    for var in [
        "DOCKER_IMAGE_CLEANER_NODE_NAME",
        "DOCKER_IMAGE_CLEANER_CONFIG",
        "DOCKER_IMAGE_CLEANER_STATE_DIR",
        "DOCKER_HOST",
    ] {
        let vars: Env = [(OsString::from(var), latin1(b"n\xe9ud"))]
            .into_iter()
            .collect();
        let e = load_env(&vars).unwrap_err();
        assert!(matches!(e, Error::NotUtf8 { .. }), "{var}: {e}");
        assert!(
            e.to_string()
                .starts_with(&format!(r#"environment variable {var} = "n\xe9ud": "#)),
            "{e}"
        );
    }
    // An unknown variable of our prefix is warned about, whatever its bytes.
    let vars: Env = [(latin1(b"DOCKER_IMAGE_CLEANER_\xe9"), latin1(b"\xff"))]
        .into_iter()
        .collect();
    let l = load_env(&vars).unwrap();
    assert_eq!(
        l.warnings,
        ["ignoring unknown environment variable DOCKER_IMAGE_CLEANER_\u{FFFD}"]
    );
}

#[test]
fn engine_tables_give_one_engine_each_and_the_union_of_their_paths() {
    let c = load_text(
        r#"
[[engine]]
name = "host"
paths = ["/var/lib/docker"]
floor = "20GiB"

[[engine]]
name = "dind"
docker_host = "unix:///run/dind/docker.sock"
paths = ["/var/lib/dind", "/var/lib/docker"]
floor = 15
"#,
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(c.engines.len(), 2);
    assert_eq!(c.engines[0].name, "host");
    assert_eq!(c.engines[0].docker_host, None);
    assert_eq!(c.engines[0].floor, Floor::Bytes(20 << 30));
    assert_eq!(c.engines[1].floor, Floor::Percent(15.0));
    assert_eq!(
        c.engines[1].docker_host.as_deref(),
        Some("unix:///run/dind/docker.sock")
    );
    assert_eq!(
        c.paths,
        vec![
            std::path::PathBuf::from("/var/lib/docker"),
            "/var/lib/dind".into()
        ]
    );
}

#[test]
fn without_tables_the_original_settings_make_the_default_engine() {
    let c = load_text(
        "",
        &[
            ("DOCKER_IMAGE_CLEANER_PATH_TO_CHECK", "/data/docker"),
            ("DOCKER_HOST", "unix:///run/d.sock"),
            ("DOCKER_IMAGE_CLEANER_FLOOR", "10GiB"),
            ("DOCKER_IMAGE_CLEANER_THRESHOLD_CRITICAL", "97"),
            ("DOCKER_IMAGE_CLEANER_CRITICAL_MIN_AGE_SECONDS", "60"),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.engines.len(), 1);
    let e = &c.engines[0];
    assert_eq!(e.name, DEFAULT_ENGINE);
    assert_eq!(e.paths, vec![std::path::PathBuf::from("/data/docker")]);
    assert_eq!(e.docker_host.as_deref(), Some("unix:///run/d.sock"));
    assert_eq!(e.floor, Floor::Bytes(10 << 30));
    assert_eq!(c.critical_pct, 97.0);
    assert_eq!(c.critical_min_age, Duration::from_secs(60));
}

#[test]
fn bad_engine_tables_name_the_table_and_the_field() {
    let cases = [
        (
            "[[engine]]\nname = \"Host\"\npaths = [\"/a\"]\n",
            "[[engine]] number 1 (\"Host\"), name",
        ),
        (
            "[[engine]]\nname = \"a\"\n",
            "[[engine]] number 1 (\"a\"), paths",
        ),
        (
            "[[engine]]\nname = \"a\"\npaths = [\"rel\"]\n",
            "must be an absolute path",
        ),
        (
            "[[engine]]\nname = \"a\"\npaths = [\"/a\"]\n[[engine]]\nname = \"a\"\npaths = [\"/b\"]\n",
            "[[engine]] number 2: the name is used twice",
        ),
        (
            "[[engine]]\nname = \"a\"\npaths = [\"/a\"]\nfloor = 101\n",
            "floor: must be a percentage from 0 to 100",
        ),
        (
            "[[engine]]\nname = \"a\"\npaths = [\"/a\"]\nfloor = \"17EiB\"\n",
            "floor",
        ),
        (
            "path_to_check = [\"/x\"]\n[[engine]]\nname = \"a\"\npaths = [\"/a\"]\n",
            "path_to_check = (set): conflicts with the [[engine]] tables",
        ),
        (
            "[[engine]]\nname = \"a\"\npaths = [\"/a\"]\nkeep = []\n",
            "unknown field `keep`",
        ),
        ("threshold_critical = 70\n", "at least threshold_high (82)"),
        ("threshold_critical = 101\n", "at most 100"),
    ];
    for (text, want) in cases {
        let e = error_text(text, &[]);
        assert!(e.contains(want), "{text:?}: {e}");
    }
    // An environment variable cannot set tables: it is an unknown one.
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_ENGINE", "x")]).unwrap();
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("DOCKER_IMAGE_CLEANER_ENGINE")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn critical_defaults_to_95_or_the_high_watermark() {
    assert_eq!(load_text("", &[]).unwrap().config.critical_pct, 95.0);
    assert_eq!(
        load_text("threshold_high = 97\n", &[])
            .unwrap()
            .config
            .critical_pct,
        97.0
    );
}

#[test]
fn metrics_outputs_are_off_by_default_and_checked_when_set() {
    let c = load_text("", &[]).unwrap().config;
    assert_eq!((c.metrics_textfile, c.metrics_listen), (None, None));

    let l = load_text(
        "metrics_textfile = \"/var/lib/prometheus/node-exporter/dic.prom\"\nmetrics_listen = \"127.0.0.1:9717\"\n",
        &[("DOCKER_IMAGE_CLEANER_METRICS_LISTEN", " [::1]:9718 ")],
    )
    .unwrap();
    assert_eq!(
        l.config.metrics_textfile.as_deref(),
        Some(Path::new("/var/lib/prometheus/node-exporter/dic.prom"))
    );
    assert_eq!(l.config.metrics_listen, Some("[::1]:9718".parse().unwrap()));
    assert_eq!(
        l.source("metrics_listen"),
        &Source::Env("DOCKER_IMAGE_CLEANER_METRICS_LISTEN".into())
    );
    assert!(
        l.render().contains("metrics_listen = \"[::1]:9718\""),
        "{}",
        l.render()
    );
    // Empty turns them off again (the shipped file's way of saying "none").
    let c = load_text(
        "metrics_textfile = \"/x/a.prom\"\n",
        &[
            ("DOCKER_IMAGE_CLEANER_METRICS_TEXTFILE", ""),
            ("DOCKER_IMAGE_CLEANER_METRICS_LISTEN", ""),
        ],
    )
    .unwrap()
    .config;
    assert_eq!((c.metrics_textfile, c.metrics_listen), (None, None));

    for (text, key, want) in [
        (
            "metrics_textfile = \"dic.prom\"",
            "metrics_textfile",
            "absolute path",
        ),
        (
            "metrics_textfile = \"/var/lib/node-exporter/\"",
            "metrics_textfile",
            ".prom",
        ),
        (
            "metrics_textfile = \"/var/lib/node-exporter/dic.txt\"",
            "metrics_textfile",
            ".prom",
        ),
        (
            "metrics_listen = \"localhost:9717\"",
            "metrics_listen",
            "no host name",
        ),
        ("metrics_listen = \"127.0.0.1\"", "metrics_listen", "a port"),
        (
            "metrics_listen = \"127.0.0.1:0\"",
            "metrics_listen",
            "1 to 65535",
        ),
        (
            "metrics_listen = \"127.0.0.1:65536\"",
            "metrics_listen",
            "a port",
        ),
    ] {
        let e = error_text(text, &[]);
        assert!(
            e.contains(key) && e.contains(want) && e.contains("line 1"),
            "{text}: {e}"
        );
    }
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_METRICS_LISTEN", "9717")]);
    assert!(
        e.contains("environment variable DOCKER_IMAGE_CLEANER_METRICS_LISTEN")
            && e.contains("\"9717\""),
        "{e}"
    );
}

#[test]
fn fleet_keys_from_the_file_and_the_environment() {
    let c = load_text("", &[]).unwrap().config;
    assert_eq!(c.fleet_max_cordoned, 0, "no coordination unless asked");
    assert_eq!(c.fleet_namespace, "kube-system");
    assert_eq!(c.fleet_lease, Duration::from_secs(60));

    let c = load_text(
        "fleet_max_cordoned = 5\nfleet_namespace = \"cleaners\"\nfleet_lease_seconds = 30\n",
        &[],
    )
    .unwrap()
    .config;
    assert_eq!(
        (
            c.fleet_max_cordoned,
            c.fleet_namespace.as_str(),
            c.fleet_lease
        ),
        (5, "cleaners", Duration::from_secs(30))
    );

    let l = load_text(
        "fleet_max_cordoned = 5\n",
        &[
            ("DOCKER_IMAGE_CLEANER_FLEET_MAX_CORDONED", "2"),
            ("DOCKER_IMAGE_CLEANER_FLEET_NAMESPACE", "ops"),
            ("DOCKER_IMAGE_CLEANER_FLEET_LEASE_SECONDS", "10"),
        ],
    )
    .unwrap();
    assert_eq!(l.config.fleet_max_cordoned, 2, "the environment wins");
    assert_eq!(l.config.fleet_namespace, "ops");
    assert_eq!(l.config.fleet_lease, Duration::from_secs(10));
    assert!(matches!(l.source("fleet_max_cordoned"), Source::Env(_)));
}

#[test]
fn bad_fleet_values_name_the_key() {
    let cases = [
        (
            "fleet_max_cordoned = -1\n",
            "fleet_max_cordoned = -1: must be a whole number from 0",
        ),
        ("fleet_max_cordoned = 101\n", "to 100"),
        ("fleet_max_cordoned = 1.5\n", "fleet_max_cordoned"),
        (
            "fleet_namespace = \"Kube-System\"\n",
            "must be a namespace name",
        ),
        ("fleet_namespace = \"a/b\"\n", "must be a namespace name"),
        ("fleet_namespace = \"\"\n", "must be a namespace name"),
        ("fleet_lease_seconds = 2\n", "from 3 to 3600"),
        ("fleet_lease_seconds = 3601\n", "from 3 to 3600"),
        (
            "fleet_lease_seconds = 10.5\n",
            "a Lease counts whole seconds",
        ),
    ];
    for (text, want) in cases {
        let e = error_text(text, &[]);
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let e = match load_text("", &[("DOCKER_IMAGE_CLEANER_FLEET_LEASE_SECONDS", "1")]) {
        Ok(l) => panic!("expected an error, got {:?}", l.config),
        Err(e) => crate::error_chain(&e),
    };
    assert!(
        e.contains("environment variable DOCKER_IMAGE_CLEANER_FLEET_LEASE_SECONDS"),
        "{e}"
    );
}

mod cri;
mod headroom;
mod reclaim;

#[test]
fn the_environment_file_is_read_under_the_process_environment_and_credited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default");
    std::fs::write(
        &path,
        "DOCKER_IMAGE_CLEANER_NODE_NAME=nc-node\nDOCKER_IMAGE_CLEANER_INTERVAL_SECONDS=60\nKUBECONFIG=/etc/k.conf\n",
    )
    .unwrap();
    let file = || EnvFile::read(&path).unwrap();
    // A shell: the process has none of them; the file gives them.
    let l = load(None, &env(&[]).with_file(file()), Flags::default());
    let l = l.unwrap();
    assert_eq!(l.config.node_name.as_deref(), Some("nc-node"));
    assert_eq!(
        l.source("node_name"),
        &Source::EnvFile {
            path: path.clone(),
            var: "DOCKER_IMAGE_CLEANER_NODE_NAME".into()
        }
    );
    assert_eq!(
        l.config.kubeconfig_env.as_deref(),
        Some(std::ffi::OsStr::new("/etc/k.conf"))
    );
    assert!(
        l.render().contains(&format!(
            "node_name = \"nc-node\"  # file {} (DOCKER_IMAGE_CLEANER_NODE_NAME)",
            path.display()
        )),
        "{}",
        l.render()
    );
    // The process's own value wins over the file's.
    let l = load(
        None,
        &env(&[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "30")]).with_file(file()),
        Flags::default(),
    )
    .unwrap();
    assert_eq!(l.config.interval, Duration::from_secs(30));
    // Under systemd the unit put the file's values into the process: the same value is the
    // file's, and a file edited since (a reload) is not hidden by the value the process started
    // with.
    let started = env(&[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "60")])
        .with_file(file())
        .without_file();
    std::fs::write(&path, "DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS=90\n").unwrap();
    let l = load(None, &started.with_file(file()), Flags::default()).unwrap();
    assert_eq!(l.config.interval, Duration::from_secs(90));
    assert!(matches!(
        l.source("interval_seconds"),
        Source::EnvFile { .. }
    ));
    // A bad value there names the file and the variable.
    std::fs::write(&path, "DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS=soon\n").unwrap();
    let e = load(None, &env(&[]).with_file(file()), Flags::default()).unwrap_err();
    let text = crate::error_chain(&e);
    assert!(
        text.contains(&format!("environment file {}", path.display()))
            && text.contains("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS"),
        "{text}"
    );
}

#[test]
fn derived_values_are_credited_to_what_they_come_from() {
    let l = load_text("threshold_high = 97\n", &[]).unwrap();
    assert_eq!(l.config.critical_pct, 97.0);
    assert!(matches!(l.source("threshold_critical"), Source::Derived(_)));
    assert!(matches!(l.source("threshold_low"), Source::Derived(_)));
    assert!(matches!(l.source("engine"), Source::Derived(_)));
    let l = load_text("threshold_high = 90\nthreshold_low = 70\n", &[]).unwrap();
    assert_eq!(l.source("threshold_critical"), &Source::Default);
    assert!(matches!(l.source("threshold_low"), Source::File(_)));
}

#[test]
fn durations_take_units_and_sizes_in_relative_mode_name_the_setting_they_need() {
    let l = load_text(
        "interval_seconds = \"2m\"\nmax_cordon_seconds = \"1h30m\"\ndelay_seconds = \"250ms\"\n",
        &[("DOCKER_IMAGE_CLEANER_MIN_AGE_SECONDS", "10m")],
    )
    .unwrap();
    assert_eq!(l.config.interval, Duration::from_secs(120));
    assert_eq!(l.config.max_cordon, Duration::from_secs(5400));
    assert_eq!(l.config.delay, Delay::Fixed(Duration::from_millis(250)));
    assert_eq!(l.config.min_age, Duration::from_secs(600));
    // The original's plain numbers keep their meaning.
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_INTERVAL_SECONDS", "60")]).unwrap();
    assert_eq!(l.config.interval, Duration::from_secs(60));
    let e = error_text("interval_seconds = \"2 fortnights\"\n", &[]);
    assert!(
        e.contains("interval_seconds") && e.contains("\"2m\""),
        "{e}"
    );
    let e = error_text("fleet_lease_seconds = \"1.5s\"\n", &[]);
    assert!(e.contains("whole number of seconds"), "{e}");

    for text in [
        "threshold_high = \"50GiB\"\n",
        "threshold_high = 53687091200\n",
    ] {
        let e = error_text(text, &[]);
        assert!(
            e.contains("threshold_high") && e.contains("threshold_type = \"absolute\""),
            "{text}: {e}"
        );
    }
    let e = error_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "50GiB")]);
    assert!(e.contains("threshold_type = \"absolute\""), "{e}");
}
