//! Property tests of the whole load-and-validate path: arbitrary files (text, near-valid TOML,
//! bytes) and arbitrary environments (any bytes) give either a [`Config`] whose invariants hold,
//! or an error that points at the input: the file with line and column, or the variable.
//! Nothing may panic. A few hundred cases per property keep this to a few seconds.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::{Just, ProptestConfig, any, prop, prop_assert, prop_oneof, proptest};
use proptest::strategy::Strategy as _;
use proptest::test_runner::TestCaseError;

use super::env::{CONFIG_ENV, env_var};
use super::raw::Raw;
use super::{
    Config, Delay, Env, Error, Flags, Loaded, MAX_DURATION, MIN_ABSOLUTE_HIGH_BYTES, Watermarks,
    check_docker_host, check_node_name, load,
};

/// Cases per property; failures are not persisted to files (the seed is in the message).
fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// What every validated configuration guarantees to the rest of the program.
fn invariants(c: &Config) -> Result<(), String> {
    if c.interval < Duration::from_secs(1) {
        return Err(format!("interval {:?} below 1 s", c.interval));
    }
    if c.timeout < Duration::from_secs(1) {
        return Err(format!("timeout {:?} below 1 s", c.timeout));
    }
    if c.max_cordon.is_zero() {
        return Err("max_cordon is zero".into());
    }
    for (name, d) in [
        ("interval", c.interval),
        (
            "delay",
            match c.delay {
                Delay::Fixed(d) => d,
                Delay::Adaptive => Duration::ZERO,
            },
        ),
        ("timeout", c.timeout),
        ("min_age", c.min_age),
        ("container_min_age", c.container_min_age),
        ("max_cordon", c.max_cordon),
    ] {
        if d >= MAX_DURATION || i64::try_from(d.as_secs()).is_err() {
            return Err(format!("{name} {d:?} is not below 10 years"));
        }
    }
    match c.watermarks {
        Watermarks::Relative { high_pct, low_pct } => {
            if !(low_pct >= 0.0 && low_pct < high_pct && high_pct > 0.0 && high_pct <= 100.0) {
                return Err(format!("relative watermarks {high_pct} / {low_pct}"));
            }
        }
        Watermarks::Absolute {
            high_bytes,
            low_bytes,
        } => {
            if high_bytes < MIN_ABSOLUTE_HIGH_BYTES || low_bytes >= high_bytes {
                return Err(format!("absolute watermarks {high_bytes} / {low_bytes}"));
            }
        }
    }
    if let Some(n) = &c.node_name {
        check_node_name(n).map_err(|e| format!("node_name {n:?}: {e}"))?;
    }
    if let Some(h) = &c.docker_host
        && check_docker_host(h).as_ref() != Ok(h)
    {
        return Err(format!("docker_host {h:?} is not in its checked form"));
    }
    if c.paths.is_empty() || !c.paths.iter().all(|p| p.is_absolute()) {
        return Err(format!("paths {:?}", c.paths));
    }
    if !c.state_dir.is_absolute() {
        return Err(format!("state_dir {:?}", c.state_dir));
    }
    Ok(())
}

/// Loads `bytes` as the configuration file with an empty environment.
fn load_file(bytes: &[u8]) -> (tempfile::NamedTempFile, Result<Loaded, Error>) {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(bytes).expect("write temp file");
    let r = load(Some(f.path()), &Env::default(), Flags::default());
    (f, r)
}

/// A file's outcome: a sound configuration, or an error from the file with line and column.
fn file_outcome(path: &Path, r: Result<Loaded, Error>, input: &str) -> Result<(), TestCaseError> {
    match r {
        Ok(l) => invariants(&l.config).map_err(|e| TestCaseError::fail(format!("{input:?}: {e}"))),
        Err(e @ (Error::Parse { .. } | Error::Invalid { .. })) => {
            let text = e.to_string();
            let named = format!("configuration file {}", path.display());
            prop_assert!(
                text.starts_with(&named) && text.contains("line ") && text.contains(", column "),
                "{input:?}: the error must name the file, line and column: {text}"
            );
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "{input:?}: not a parse or value error: {e}"
        ))),
    }
}

/// A TOML literal of a random type: what a user might write, right or wrong.
fn literal() -> impl proptest::strategy::Strategy<Value = String> {
    let quoted = |s: String| toml::Value::String(s).to_string();
    let units = prop::sample::select(vec![
        "", "B", "k", "KB", "KiB", "Mi", "MB", "GiB", "gb", "TiB", "PB", "EiB", "E", "xB", "%",
    ]);
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (-5i64..2000).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            0i64,
            1,
            60,
            100,
            101,
            315_359_999,
            315_360_000,
            1 << 30,
            (1 << 30) - 1,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| format!("{x:e}")),
        (0.0f64..200.0).prop_map(|x| format!("{x:?}")),
        prop::sample::select(vec![
            "inf", "-inf", "nan", "1e-10", "1e-9", "0.5", "1e19", "1e300", "-0.0", "0.999",
        ])
        .prop_map(String::from),
        any::<bool>().prop_map(|b| b.to_string()),
        (
            "[0-9]{1,25}(\\.[0-9]{0,6})?",
            units.clone(),
            prop::bool::ANY
        )
            .prop_map(move |(n, u, space)| toml::Value::String(format!(
                "{n}{}{u}",
                if space { " " } else { "" }
            ))
            .to_string()),
        prop::sample::select(vec![
            "lru",
            "prune",
            "cordon",
            "taint",
            "none",
            "clean",
            "skip",
            "relative",
            "absolute",
            "info",
            "debug",
            "",
            "node-1",
            "Node-1",
            "node-1/status",
            "a..b",
            "../x",
            "/var/lib/docker",
            "relative/path",
            "unix:///x.sock",
            "unix://",
            "tcp://h",
            "tcp://h:99999",
            "http://[::1]:1",
            "https://h",
            "(",
            "^pause",
        ])
        .prop_map(|s| toml::Value::String(s.to_string()).to_string()),
        "[a-zA-Z0-9 ./:%_?\\-\\[\\]\n]{0,24}".prop_map(quoted),
        any::<String>().prop_map(quoted),
        prop::collection::vec("[a-z/^.*()]{0,8}", 0..4).prop_map(|v| toml::Value::Array(
            v.into_iter().map(toml::Value::String).collect()
        )
        .to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("[1, 2]".to_string()),
    ]
}

/// A variable's value: arbitrary bytes (often not UTF-8), or near-valid text.
fn env_value() -> impl proptest::strategy::Strategy<Value = OsString> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| OsStr::from_bytes(&b).to_owned()),
        any::<String>().prop_map(OsString::from),
        literal().prop_map(OsString::from),
        // The literal as a user would type it in an EnvironmentFile: without TOML quotes.
        literal().prop_map(|l| OsString::from(l.trim_matches('"'))),
        "[a-z0-9/^,. ]{0,20}".prop_map(OsString::from),
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_text_as_the_file(text in prop_oneof![
        any::<String>(),
        "[a-z_ =\"'\\[\\]{}.,0-9#\n\\\\-]{0,80}",
    ]) {
        let (f, r) = load_file(text.as_bytes());
        file_outcome(f.path(), r, &text)?;
    }

    #[test]
    fn near_valid_toml_as_the_file(
        lines in prop::collection::vec(
            (
                prop_oneof![
                    9 => prop::sample::select(Raw::KEYS).prop_map(String::from),
                    1 => Just("bogus_key".to_string()),
                ],
                literal(),
                prop::bool::ANY,
            ),
            0..8,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(k, v, quote)| if *quote { format!("\"{k}\" = {v}\n") } else { format!("{k} = {v}\n") })
            .collect();
        let (f, r) = load_file(text.as_bytes());
        file_outcome(f.path(), r, &text)?;
    }

    #[test]
    fn any_bytes_as_the_file(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            (prop::collection::vec(any::<u8>(), 1..4), 0usize..40).prop_map(|(junk, at)| {
                let mut b = b"interval_seconds = 60\nnode_name = \"n1\"\n".to_vec();
                let at = at.min(b.len());
                b.splice(at..at, junk);
                b
            }),
        ]
    ) {
        let (f, r) = load_file(&bytes);
        file_outcome(f.path(), r, &String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn any_environment(
        ours in prop::collection::vec(
            (prop::sample::select(Raw::KEYS), env_value()),
            0..5,
        ),
        others in prop::collection::vec(
            (
                prop_oneof![
                    Just(OsString::from("DOCKER_IMAGE_CLEANER_TYPO")),
                    Just(OsString::from("LANG")),
                    prop::collection::vec(any::<u8>(), 1..8)
                        .prop_map(|b| OsStr::from_bytes(&b).to_owned()),
                ],
                prop::collection::vec(any::<u8>(), 0..8)
                    .prop_map(|b| OsStr::from_bytes(&b).to_owned()),
            ),
            0..3,
        ),
    ) {
        let mut pairs: Vec<(OsString, OsString)> = others
            .into_iter()
            .filter(|(k, _)| {
                // Names that a real environment cannot hold, and ours, are left to `ours`.
                !k.is_empty()
                    && !k.as_bytes().contains(&b'=')
                    && !k.as_bytes().contains(&0)
                    && k != CONFIG_ENV
                    && !Raw::KEYS.iter().any(|key| k.as_os_str() == OsStr::new(&env_var(key)))
            })
            .collect();
        let set: Vec<String> = ours.iter().map(|(k, _)| env_var(k)).collect();
        pairs.extend(ours.into_iter().map(|(k, v)| (OsString::from(env_var(k)), v)));
        let shown = format!("{pairs:?}");
        let env: Env = pairs.into_iter().collect();
        let f = tempfile::NamedTempFile::new().expect("temp file");
        match load(Some(f.path()), &env, Flags::default()) {
            Ok(l) => invariants(&l.config).map_err(|e| TestCaseError::fail(format!("{shown}: {e}")))?,
            Err(Error::NotUtf8 { var, .. }) => {
                prop_assert!(set.contains(&var), "{shown}: NotUtf8 for {var}, not set");
            }
            Err(e @ Error::Invalid { .. }) => {
                let text = e.to_string();
                prop_assert!(
                    set.iter().any(|v| text.starts_with(&format!("environment variable {v}: "))),
                    "{shown}: the error must name one of the variables set: {text}"
                );
            }
            Err(e) => return Err(TestCaseError::fail(format!("{shown}: unexpected error: {e}"))),
        }
    }
}
