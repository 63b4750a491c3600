//! Configuration: precedence, sources, and errors that point at the input.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
fn shipped_file_lists_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/docker-image-cleaner.toml");
    let loaded = load(Some(&path), &env(&[]), Flags::default()).unwrap();
    for key in raw::Raw::KEYS {
        assert!(
            matches!(loaded.source(key), Source::File(_)),
            "conf/docker-image-cleaner.toml does not set {key}"
        );
    }
    // Same values as the built-in defaults.
    let defaults = Loaded {
        config: Config::default(),
        file: None,
        sources: Default::default(),
        warnings: vec![],
    };
    let strip = |s: String| {
        s.lines()
            .map(|l| l.split("  #").next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(loaded.render()), strip(defaults.render()));
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
    assert_eq!(c.delay, Duration::from_millis(500));
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
    assert!(text.contains("threshold_low = 60  # default"), "{text}");
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
            low_pct: 60.0
        }
    );
    assert_eq!(l.config.keep.len(), 2);
    // An original-tool user with a low high watermark still has a valid band.
    let l = load_text("", &[("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "40")]).unwrap();
    assert_eq!(
        l.config.watermarks,
        Watermarks::Relative {
            high_pct: 40.0,
            low_pct: 30.0
        }
    );
    let l = load_text("", &[("DOCKER_HOST", "tcp://127.0.0.1:2375")]).unwrap();
    assert_eq!(
        l.config.docker_host.as_deref(),
        Some("tcp://127.0.0.1:2375")
    );
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
            &["interval_seconds", "greater than 0"],
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
