//! The environment layer: [`Env`], the variables as the process got them (bytes, not
//! necessarily UTF-8), and the reading of each `DOCKER_IMAGE_CLEANER_*` variable (and
//! `DOCKER_HOST`) as one value of its key's type. A value is never pasted into TOML text, so no
//! variable can set any key but its own. Reads only the [`Env`] it is given.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use serde::Deserialize;

use super::Error;
use super::raw::{LIST_KEYS, Raw};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "DOCKER_IMAGE_CLEANER_CONFIG";

/// The prefix of every variable of ours but `DOCKER_HOST`.
pub const ENV_PREFIX: &str = "DOCKER_IMAGE_CLEANER_";

/// A set of environment variables, names and values as bytes. Build it from the process with
/// `std::env::vars_os().collect::<Env>()`, or from any pairs in a test:
/// `[("DOCKER_IMAGE_CLEANER_NODE_NAME", "n1")].into_iter().collect::<Env>()`.
///
/// A variable that is not UTF-8 is an error only when it is one of ours (see [`load`](super::load));
/// anyone else's is never looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<OsString, OsString>,
}

impl<K: Into<OsString>, V: Into<OsString>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Env {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl Env {
    /// The value of `var` as UTF-8: `Ok(None)` when it is unset, an error naming the variable
    /// (and showing the value with `\x` escapes) when it is not UTF-8.
    pub(crate) fn get(&self, var: &str) -> Result<Option<&str>, Error> {
        match self.vars.get(OsStr::new(var)) {
            None => Ok(None),
            Some(value) => value.to_str().map(Some).ok_or_else(|| Error::NotUtf8 {
                var: var.to_string(),
                value: escape(value),
            }),
        }
    }

    /// The names that start with [`ENV_PREFIX`], shown lossily when they are not UTF-8.
    pub(crate) fn ours(&self) -> impl Iterator<Item = String> + '_ {
        self.vars
            .keys()
            .filter(|k| k.as_bytes().starts_with(ENV_PREFIX.as_bytes()))
            .map(|k| k.to_string_lossy().into_owned())
    }
}

/// `value` in double quotes, with everything but printable ASCII as `\xNN` (or `\n`, `\t`, …).
fn escape(value: &OsStr) -> String {
    format!("\"{}\"", value.as_bytes().escape_ascii())
}

/// The environment variable that overrides `key`.
pub(crate) fn env_var(key: &str) -> String {
    match key {
        // As Docker's own clients read it.
        "docker_host" => "DOCKER_HOST".to_string(),
        _ => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
    }
}

/// Reads the value of `var` as the one value of `key`, and returns a layer that sets `key` and
/// nothing else. The interpretations tried, in this order, the first that the key's type
/// accepts winning:
/// - list keys (`path_to_check`, `keep`): only a list, from the comma-separated items (trimmed,
///   empty items dropped);
/// - every other key: an integer, then a float, then a boolean (`true`/`false`), each from the
///   trimmed text when it parses as one, then the text itself as a string.
///
/// When none fits, the error is the one of the first interpretation (the most specific: `-5`
/// for `interval_seconds` is "a negative integer", not "a string").
pub(crate) fn layer(key: &'static str, var: &str, value: &str) -> Result<Raw, Error> {
    let mut first_error = None;
    for candidate in candidates(key, value) {
        let mut table = toml::Table::new();
        table.insert(key.to_string(), candidate);
        match Raw::deserialize(toml::Value::Table(table)) {
            Ok(layer) => return Ok(layer),
            Err(e) => {
                first_error.get_or_insert_with(|| e.message().trim_end().to_string());
            }
        }
    }
    Err(Error::Invalid {
        origin: format!("environment variable {var}"),
        key,
        value: format!("{value:?}"),
        message: first_error.unwrap_or_else(|| "not a value for this key".into()),
    })
}

/// The interpretations of `value` for `key`, most specific first (see [`layer`]).
fn candidates(key: &str, value: &str) -> Vec<toml::Value> {
    if LIST_KEYS.contains(&key) {
        let items = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| toml::Value::String(s.to_string()))
            .collect();
        return vec![toml::Value::Array(items)];
    }
    let t = value.trim();
    let mut out = Vec::with_capacity(4);
    if let Ok(n) = t.parse::<i64>() {
        out.push(toml::Value::Integer(n));
    }
    if let Ok(x) = t.parse::<f64>() {
        out.push(toml::Value::Float(x));
    }
    match t {
        "true" => out.push(toml::Value::Boolean(true)),
        "false" => out.push(toml::Value::Boolean(false)),
        _ => {}
    }
    out.push(toml::Value::String(value.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_sets_its_own_key_and_nothing_else() {
        let hostile = "90\nstate_dir = \"/tmp/x\"";
        // Read as the string it is; the key's validation then refuses it.
        let raw = layer(
            "threshold_high",
            "DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH",
            hostile,
        )
        .unwrap();
        assert!(raw.state_dir.is_none());
        let mut base = Raw::default();
        assert_eq!(base.overlay(raw), vec!["threshold_high"]);

        for key in Raw::KEYS {
            for value in [
                hostile,
                "1\nnode_name = \"x\"",
                "[1]\n[x]\ny = 1",
                "\"a\", state_dir = \"/x\"",
                "a,b\ndry_run = true",
            ] {
                if let Ok(layer) = layer(key, &env_var(key), value) {
                    let mut base = Raw::default();
                    assert_eq!(base.overlay(layer), vec![*key], "{key} = {value:?}");
                }
            }
        }
    }

    #[test]
    fn non_utf8_values_name_the_variable_and_show_the_bytes() {
        let env: Env = [(
            OsString::from("DOCKER_IMAGE_CLEANER_NODE_NAME"),
            OsString::from(OsStr::from_bytes(b"n\xe9ud\n")),
        )]
        .into_iter()
        .collect();
        let e = env.get("DOCKER_IMAGE_CLEANER_NODE_NAME").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"environment variable DOCKER_IMAGE_CLEANER_NODE_NAME = "n\xe9ud\n": not valid UTF-8 (bytes shown as \x escapes)"#
        );
        assert_eq!(env.get("DOCKER_HOST").unwrap(), None);
    }
}
