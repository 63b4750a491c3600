//! The environment layer: [`Env`], the variables as the process got them (bytes, not
//! necessarily UTF-8), and the reading of each `DOCKER_IMAGE_CLEANER_*` variable (and
//! `DOCKER_HOST`) as one value of its key's type. A value is never pasted into TOML text, so no
//! variable can set any key but its own. Reads only the [`Env`] it is given.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Deserialize;

use super::Error;
use super::envfile::EnvFile;
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
///
/// It may be layered over an environment file ([`Env::with_file`]): the process's own variables
/// win, and the file gives the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<OsString, OsString>,
    file: Option<EnvFile>,
}

/// Where a variable's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer<'a> {
    /// The process's environment.
    Process,
    /// The environment file at this path.
    File(&'a Path),
}

impl<K: Into<OsString>, V: Into<OsString>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Env {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            file: None,
        }
    }
}

impl Env {
    /// This environment over `file`. A variable the process has with the very value the file
    /// gives it is the file's: the unit's `EnvironmentFile=` put it there. Such variables are
    /// dropped from the process's own, so that a file edited later (read again on reload)
    /// is not hidden by the value the process was started with.
    pub fn with_file(mut self, file: Option<EnvFile>) -> Env {
        if let Some(f) = &file {
            self.vars
                .retain(|k, v| f.get(&k.to_string_lossy()) != Some(v));
        }
        self.file = file;
        self
    }

    /// The process's own variables, without the environment file (to layer a file read
    /// again over them).
    pub fn without_file(&self) -> Env {
        Env {
            vars: self.vars.clone(),
            file: None,
        }
    }

    /// The environment file layered under this environment, if any.
    pub fn file(&self) -> Option<&EnvFile> {
        self.file.as_ref()
    }

    /// The raw value of `var` and where it came from: the process, else the file.
    fn lookup_os(&self, var: &str) -> Option<(&OsString, Layer<'_>)> {
        if let Some(v) = self.vars.get(OsStr::new(var)) {
            return Some((v, Layer::Process));
        }
        let f = self.file.as_ref()?;
        f.get(var).map(|v| (v, Layer::File(&f.path)))
    }

    /// Where the value of `var` comes from, when it is set.
    pub(crate) fn layer_of(&self, var: &str) -> Option<Layer<'_>> {
        self.lookup_os(var).map(|(_, layer)| layer)
    }

    /// The raw value of `var` (bytes, not necessarily UTF-8): the process's, else the file's.
    pub fn get_os(&self, var: &str) -> Option<&OsStr> {
        self.lookup_os(var).map(|(v, _)| v.as_os_str())
    }

    /// The value of `var` as UTF-8 and where it came from: `Ok(None)` when it is unset, an
    /// error naming the variable (and showing the value with `\x` escapes) when it is not
    /// UTF-8.
    pub(crate) fn lookup(&self, var: &str) -> Result<Option<(&str, Layer<'_>)>, Error> {
        match self.lookup_os(var) {
            None => Ok(None),
            Some((value, layer)) => match value.to_str() {
                Some(v) => Ok(Some((v, layer))),
                None => Err(Error::NotUtf8 {
                    var: match layer {
                        Layer::Process => var.to_string(),
                        Layer::File(p) => format!("{var} (from {})", p.display()),
                    },
                    value: escape(value),
                }),
            },
        }
    }

    /// The value of `var` as UTF-8 (see [`Env::lookup`]).
    pub(crate) fn get(&self, var: &str) -> Result<Option<&str>, Error> {
        Ok(self.lookup(var)?.map(|(v, _)| v))
    }

    /// The names that start with [`ENV_PREFIX`], from the process and the file, shown lossily
    /// when they are not UTF-8.
    pub(crate) fn ours(&self) -> impl Iterator<Item = String> + '_ {
        let mut names: Vec<String> = self
            .vars
            .keys()
            .chain(self.file.iter().flat_map(|f| f.vars.iter().map(|(k, _)| k)))
            .filter(|k| k.as_bytes().starts_with(ENV_PREFIX.as_bytes()))
            .map(|k| k.to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names.into_iter()
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

/// Reads `value` (of the variable `origin` names) as the one value of `key`, and returns a
/// layer that sets `key` and nothing else. The interpretations tried, in this order, the first that the key's type
/// accepts winning:
/// - list keys (`path_to_check`, `keep`): only a list, from the comma-separated items (trimmed,
///   empty items dropped);
/// - every other key: an integer, then a float, then a boolean (`true`/`false`), each from the
///   trimmed text when it parses as one, then the text itself as a string.
///
/// When none fits, the error is the one of the first interpretation (the most specific: `-5`
/// for `interval_seconds` is "a negative integer", not "a string").
pub(crate) fn layer(key: &'static str, value: &str, origin: &str) -> Result<Raw, Error> {
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
        origin: origin.to_string(),
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
            hostile,
            "environment variable DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH",
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
                if let Ok(layer) = layer(key, value, &env_var(key)) {
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
