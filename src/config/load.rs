//! Reading the layers (file, environment, flags) and remembering where each value came from.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::raw::{LIST_KEYS, Raw};
use super::validate::validate;
use super::{Config, Error};

/// The configuration file read when none is named.
pub const DEFAULT_PATH: &str = "/etc/docker-image-cleaner.toml";

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "DOCKER_IMAGE_CLEANER_CONFIG";

const ENV_PREFIX: &str = "DOCKER_IMAGE_CLEANER_";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Settings given on the command line; `false` means "not given".
#[derive(Debug, Clone, Copy, Default)]
pub struct Flags {
    /// `--dry-run`.
    pub dry_run: bool,
}

/// The outcome of [`load`]: the configuration, where each value came from, and warnings to log
/// once logging is up.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// The source of every key (keys not listed come from the defaults).
    pub sources: BTreeMap<&'static str, Source>,
    /// Things worth a warning (an unknown `DOCKER_IMAGE_CLEANER_*` variable, for instance).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// The source of `key`.
    pub fn source(&self, key: &str) -> &Source {
        self.sources.get(key).unwrap_or(&Source::Default)
    }

    /// The effective configuration as TOML, each line commented with its source (`check-config`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (key, value) in super::validate::render(&self.config) {
            out.push_str(&format!("{key} = {value}  # {}\n", self.source(key)));
        }
        out
    }
}

/// The environment variable that overrides `key`.
pub(crate) fn env_var(key: &str) -> String {
    match key {
        // As Docker's own clients read it.
        "docker_host" => "DOCKER_HOST".to_string(),
        _ => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
    }
}

/// Loads the configuration: the file (`explicit`, else `DOCKER_IMAGE_CLEANER_CONFIG`, else
/// [`DEFAULT_PATH`], which may be absent), then the environment `env`, then `flags`.
pub fn load(
    explicit: Option<&Path>,
    env: &HashMap<String, String>,
    flags: Flags,
) -> Result<Loaded, Error> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.get(CONFIG_ENV).map(PathBuf::from));
    let (path, required) = match named {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(Error::Read { path, source }),
    };

    let mut raw = Raw::default();
    let mut sources = BTreeMap::new();
    if let Some(text) = &text {
        let layer: Raw = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        for key in raw.overlay(layer) {
            sources.insert(key, Source::File(path.clone()));
        }
    }

    let mut warnings = Vec::new();
    for key in Raw::KEYS {
        let var = env_var(key);
        if let Some(value) = env.get(&var) {
            let layer = env_layer(key, &var, value)?;
            for key in raw.overlay(layer) {
                sources.insert(key, Source::Env(var.clone()));
            }
        }
    }
    let known: Vec<String> = Raw::KEYS.iter().map(|k| env_var(k)).collect();
    let mut unknown: Vec<&String> = env
        .keys()
        .filter(|k| k.starts_with(ENV_PREFIX) && *k != CONFIG_ENV && !known.contains(k))
        .collect();
    unknown.sort();
    for var in unknown {
        warnings.push(format!("ignoring unknown environment variable {var}"));
    }

    if flags.dry_run {
        raw.dry_run = Some(true);
        sources.insert("dry_run", Source::Flag("--dry-run"));
    }

    let origin = |key: &'static str| -> String {
        match sources.get(key) {
            Some(Source::File(p)) => match text.as_deref().and_then(|t| locate(t, key)) {
                Some((line, column)) => format!(
                    "configuration file {}, line {line}, column {column}",
                    p.display()
                ),
                None => format!("configuration file {}", p.display()),
            },
            Some(Source::Env(v)) => format!("environment variable {v}"),
            Some(Source::Flag(f)) => format!("flag {f}"),
            Some(Source::Default) | None => "default".to_string(),
        }
    };
    let config = validate(&raw, &origin)?;
    Ok(Loaded {
        config,
        file: text.is_some().then_some(path),
        sources,
        warnings,
    })
}

/// Parses one environment variable into a layer that sets only `key`. The value is read as a
/// TOML value when it is one of the right type (`80`, `true`, `["a", "b"]`), else as a string;
/// list keys also take comma-separated strings.
fn env_layer(key: &'static str, var: &str, value: &str) -> Result<Raw, Error> {
    let as_string = toml_string(value);
    let candidates: Vec<String> =
        if LIST_KEYS.contains(&key) && !value.trim_start().starts_with('[') {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(toml_string)
                .collect();
            vec![format!("[{}]", items.join(", "))]
        } else {
            vec![value.to_string(), as_string]
        };
    let mut last = String::new();
    for candidate in candidates {
        match toml::from_str::<Raw>(&format!("{key} = {candidate}")) {
            Ok(layer) => return Ok(layer),
            Err(e) => last = e.message().to_string(),
        }
    }
    Err(Error::Invalid {
        origin: format!("environment variable {var}"),
        key,
        value: format!("{value:?}"),
        message: last,
    })
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The 1-based line and column of the value assigned to `key` in a flat TOML file.
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let rest = line.trim_start().strip_prefix(key)?;
        let after_key = rest.trim_start().strip_prefix('=')?;
        let value_at = line.len() - after_key.trim_start().len();
        Some((i + 1, value_at + 1))
    })
}
