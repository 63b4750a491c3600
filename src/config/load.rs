//! Reading the layers (file, environment, flags) and remembering where each value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::env::{self, CONFIG_ENV, Env, Layer, env_var};
use super::file;
use super::raw::{FILE_ONLY_KEYS, Raw};
use super::render::render;
use super::validate::validate;
use super::{Config, DEFAULT_BAND_PCT, Error, Watermarks};

/// The configuration file read when none is named.
pub const DEFAULT_PATH: &str = "/etc/docker-image-cleaner.toml";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// Not set, and worked out from other keys (what from, in words).
    Derived(&'static str),
    /// The configuration file.
    File(PathBuf),
    /// A variable of the environment file (`/etc/default/docker-image-cleaner`).
    EnvFile {
        /// The environment file.
        path: PathBuf,
        /// The variable.
        var: String,
    },
    /// An environment variable of the process.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Derived(from) => write!(f, "derived: {from}"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::EnvFile { path, var } => write!(f, "file {} ({var})", path.display()),
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
        for (key, value) in render(&self.config) {
            out.push_str(&format!("{key} = {value}  # {}\n", self.source(key)));
        }
        if let Some(v) = &self.config.kubeconfig_env {
            // Not a key of the file: shown as the variable it is, read where kubeconfig is unset.
            out.push_str(&format!(
                "# KUBECONFIG = {:?}  # {}\n",
                v.to_string_lossy(),
                self.source("KUBECONFIG")
            ));
        }
        out
    }
}

/// Loads the configuration: the file (`explicit`, else `DOCKER_IMAGE_CLEANER_CONFIG`, else
/// [`DEFAULT_PATH`], which may be absent), then the environment `env`, then `flags`.
///
/// Every variable of ours (`DOCKER_IMAGE_CLEANER_CONFIG`, the `DOCKER_IMAGE_CLEANER_*` of each
/// key, `DOCKER_HOST`) must be UTF-8, else it is an error naming it; other variables, including
/// unknown `DOCKER_IMAGE_CLEANER_*` ones (warned about), are never read. Each variable is read
/// as one value of its key (see `env::layer`), never as TOML text.
pub fn load(explicit: Option<&Path>, env: &Env, flags: Flags) -> Result<Loaded, Error> {
    // Every key the environment can set, with its variable.
    let env_keys: Vec<(&'static str, String)> = Raw::KEYS
        .iter()
        .filter(|k| !FILE_ONLY_KEYS.contains(k))
        .map(|k| (*k, env_var(k)))
        .collect();
    let mut values = Vec::new();
    for (key, var) in &env_keys {
        if let Some((value, layer)) = env.lookup(var)? {
            let source = match layer {
                Layer::Process => Source::Env(var.clone()),
                Layer::File(path) => Source::EnvFile {
                    path: path.to_path_buf(),
                    var: var.clone(),
                },
            };
            values.push((*key, value, source));
        }
    }
    let named = env.get(CONFIG_ENV)?;
    if explicit.is_none() && named == Some("") {
        return Err(Error::EmptyPath {
            origin: format!("environment variable {CONFIG_ENV}"),
        });
    }
    if explicit.is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(Error::EmptyPath {
            origin: "flag --config".into(),
        });
    }
    let named = explicit.map(Path::to_path_buf).or(named.map(PathBuf::from));
    let (path, required) = match named {
        Some(p) => (p, true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = file::read(&path, required)?;

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

    for (key, value, source) in values {
        let layer = env::layer(key, value, &origin_of(&source, None, key))?;
        for set in raw.overlay(layer) {
            // `env::layer` sets its own key only; crediting anything else would be a lie.
            debug_assert_eq!(set, key);
            sources.insert(set, source.clone());
        }
    }
    let mut warnings: Vec<String> = env
        .ours()
        .filter(|k| k != CONFIG_ENV && !env_keys.iter().any(|(_, var)| var == k))
        .map(|var| format!("ignoring unknown environment variable {var}"))
        .collect();
    warnings.sort();

    if flags.dry_run {
        raw.dry_run = Some(true);
        sources.insert("dry_run", Source::Flag("--dry-run"));
    }

    let origin = |key: &'static str| -> String {
        origin_of(
            sources.get(key).unwrap_or(&Source::Default),
            text.as_deref(),
            key,
        )
    };
    let mut config = validate(&raw, &origin)?;
    config.kubeconfig_env = env.get_os("KUBECONFIG").map(ToOwned::to_owned);
    if let Some(layer) = env.layer_of("KUBECONFIG") {
        sources.insert(
            "KUBECONFIG",
            match layer {
                Layer::Process => Source::Env("KUBECONFIG".into()),
                Layer::File(path) => Source::EnvFile {
                    path: path.to_path_buf(),
                    var: "KUBECONFIG".into(),
                },
            },
        );
    }
    derived(&config, &mut sources);
    Ok(Loaded {
        config,
        file: text.is_some().then_some(path),
        sources,
        warnings,
    })
}

/// Where a value came from, for an error message: the file with line and column, the variable
/// (and the environment file it is in), the flag.
fn origin_of(source: &Source, text: Option<&str>, key: &str) -> String {
    match source {
        Source::File(p) => match text.and_then(|t| file::locate(t, key)) {
            Some((line, column)) => format!(
                "configuration file {}, line {line}, column {column}",
                p.display()
            ),
            None => format!("configuration file {}", p.display()),
        },
        Source::EnvFile { path, var } => {
            format!("environment file {}, variable {var}", path.display())
        }
        Source::Env(v) => format!("environment variable {v}"),
        Source::Flag(f) => format!("flag {f}"),
        Source::Derived(_) | Source::Default => "default".to_string(),
    }
}

/// Credits the keys left unset whose value was worked out from others.
fn derived(config: &Config, sources: &mut BTreeMap<&'static str, Source>) {
    let unset = |sources: &BTreeMap<&'static str, Source>, key| !sources.contains_key(key);
    if unset(sources, "threshold_low") {
        let from = match config.watermarks {
            Watermarks::Relative { high_pct, .. } if high_pct > 2.0 * DEFAULT_BAND_PCT => {
                "4 points below threshold_high"
            }
            Watermarks::Relative { .. } => "half of threshold_high (it is 8 or less)",
            Watermarks::Absolute { .. } => "80% of threshold_high",
        };
        sources.insert("threshold_low", Source::Derived(from));
    }
    if unset(sources, "threshold_critical") && config.critical_pct != Config::default().critical_pct
    {
        sources.insert(
            "threshold_critical",
            Source::Derived("threshold_high, above the default 95"),
        );
    }
    if unset(sources, "engine") {
        sources.insert(
            "engine",
            Source::Derived("one engine from docker_host, path_to_check and floor"),
        );
    } else if unset(sources, "path_to_check") {
        sources.insert("path_to_check", Source::Derived("the [[engine]] paths"));
    }
}
