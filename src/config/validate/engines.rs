//! The engines: the `[[engine]]` tables (or the one default engine the top-level keys describe),
//! their names, data paths and floors, and the paths the trigger measures. Checks the values
//! only: connects to no engine and reads no path.

use std::path::PathBuf;

use super::Invalid;
use super::thresholds::percent;
use crate::config::checks::{DEFAULT_CRI_ENDPOINT, check_cri_endpoint, check_docker_host};
use crate::config::raw::{Quantity, Raw, RawEngine, StringList};
use crate::config::units;
use crate::config::{DEFAULT_ENGINE, EngineConfig, Error, Floor};

/// The top-level engine keys, validated: the default engine when there are no tables.
pub(super) struct TopLevel<'a> {
    /// `docker_host`.
    pub docker_host: Option<&'a str>,
    /// `path_to_check`.
    pub paths: &'a [PathBuf],
    /// `path_to_check`'s default.
    pub default_paths: &'a [PathBuf],
    /// `floor`.
    pub floor: Floor,
}

/// The engines: the `[[engine]]` tables, or without them the one engine of the top-level keys.
pub(super) fn engines(
    raw: &Raw,
    top: &TopLevel,
    invalid: &Invalid,
) -> Result<Vec<EngineConfig>, Error> {
    Ok(match raw.engine.as_deref() {
        None => vec![EngineConfig {
            name: DEFAULT_ENGINE.to_string(),
            docker_host: top.docker_host.map(str::to_string),
            cri_endpoint: None,
            paths: top.paths.to_vec(),
            floor: top.floor,
        }],
        Some([]) => {
            return Err(invalid(
                "engine",
                "[]".into(),
                "name at least one engine, or leave the [[engine]] tables out".into(),
            ));
        }
        Some(tables) => {
            // With tables, the top-level engine keys would be ignored: say so, unless they
            // hold their defaults (as the shipped file does).
            for (key, set) in [
                ("docker_host", top.docker_host.is_some()),
                ("path_to_check", top.paths != top.default_paths),
                ("floor", !top.floor.is_none()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "(set)".into(),
                        format!(
                            "conflicts with the [[engine]] tables: set {key} in each table instead"
                        ),
                    ));
                }
            }
            let mut engines: Vec<EngineConfig> = Vec::new();
            for (i, table) in tables.iter().enumerate() {
                let engine = engine(table).map_err(|(field, value, m)| {
                    invalid(
                        "engine",
                        value,
                        format!(
                            "[[engine]] number {} ({:?}), {field}: {m}",
                            i + 1,
                            table.name
                        ),
                    )
                })?;
                if engines.iter().any(|e| e.name == engine.name) {
                    return Err(invalid(
                        "engine",
                        format!("{:?}", engine.name),
                        format!("[[engine]] number {}: the name is used twice", i + 1),
                    ));
                }
                engines.push(engine);
            }
            engines
        }
    })
}

/// What the trigger measures: with tables, every engine's data paths, each once; without, the
/// top-level `path_to_check`.
pub(super) fn measured_paths(
    raw: &Raw,
    engines: &[EngineConfig],
    paths: Vec<PathBuf>,
) -> Vec<PathBuf> {
    if raw.engine.is_some() {
        let mut all: Vec<PathBuf> = Vec::new();
        for p in engines.iter().flat_map(|e| &e.paths) {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    } else {
        paths
    }
}

/// A list of absolute paths, at least one; on error the offending value and why.
pub(super) fn absolute_paths(list: &StringList) -> Result<Vec<PathBuf>, (String, String)> {
    if list.0.is_empty() {
        return Err(("[]".into(), "name at least one path".into()));
    }
    let mut paths = Vec::new();
    for p in &list.0 {
        let path = PathBuf::from(p);
        if !path.is_absolute() {
            return Err((format!("{p:?}"), "must be an absolute path".into()));
        }
        paths.push(path);
    }
    Ok(paths)
}

/// An engine name: what the state file, metrics labels and logs can carry unquoted.
fn engine_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 63 lowercase letters, digits, '-', '_' or '.'".into())
    }
}

/// One `[[engine]]` table; on error the field, its value and why.
fn engine(t: &RawEngine) -> Result<EngineConfig, (&'static str, String, String)> {
    engine_name(&t.name).map_err(|m| ("name", format!("{:?}", t.name), m))?;
    let cri = match t.kind.as_deref().map(str::trim) {
        None | Some("docker") => false,
        Some("cri") => true,
        Some(other) => {
            return Err((
                "kind",
                format!("{other:?}"),
                "must be \"docker\" (the Docker Engine API: Docker, Podman) or \"cri\" (the kubelet's runtime: containerd, CRI-O)".into(),
            ));
        }
    };
    let docker_host = match t.docker_host.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(host) if cri => {
            return Err((
                "docker_host",
                format!("{host:?}"),
                "is for kind = \"docker\": a CRI engine's socket is cri_endpoint".into(),
            ));
        }
        Some(host) => {
            Some(check_docker_host(host).map_err(|m| ("docker_host", format!("{host:?}"), m))?)
        }
    };
    let cri_endpoint = match t.cri_endpoint.as_deref().map(str::trim) {
        Some(endpoint) if !cri => {
            return Err((
                "cri_endpoint",
                format!("{endpoint:?}"),
                "needs kind = \"cri\" in the same table".into(),
            ));
        }
        None | Some("") if cri => Some(DEFAULT_CRI_ENDPOINT.to_string()),
        None | Some("") => None,
        Some(endpoint) => Some(
            check_cri_endpoint(endpoint)
                .map_err(|m| ("cri_endpoint", format!("{endpoint:?}"), m))?,
        ),
    };
    let paths = match &t.paths {
        None if cri => {
            return Err((
                "paths",
                "(missing)".into(),
                "name the runtime's data root, e.g. paths = [\"/var/lib/containerd\"] (CRI-O: \"/var/lib/containers\")".into(),
            ));
        }
        None => {
            return Err((
                "paths",
                "(missing)".into(),
                "name the engine's data root, e.g. paths = [\"/var/lib/docker\"]".into(),
            ));
        }
        Some(list) => absolute_paths(list).map_err(|(v, m)| ("paths", v, m))?,
    };
    let floor = match &t.floor {
        None => Floor::NONE,
        Some(q) => floor(q).map_err(|m| ("floor", q.to_string(), m))?,
    };
    Ok(EngineConfig {
        name: t.name.clone(),
        docker_host,
        cri_endpoint,
        paths,
        floor,
    })
}

/// A floor: a bare number is a percentage of the filesystem (like the relative watermarks),
/// `"15%"` too, and a value with a unit is a size.
pub(super) fn floor(q: &Quantity) -> Result<Floor, String> {
    let pct = match q {
        Quantity::Text(s) if !s.trim().ends_with('%') => {
            return units::parse_size(s)
                .map(Floor::Bytes)
                .map_err(|e| e.to_string());
        }
        other => percent(other)?,
    };
    if (0.0..=100.0).contains(&pct) {
        Ok(Floor::Percent(pct))
    } else {
        Err("must be a percentage from 0 to 100, or a size such as \"20GiB\"".into())
    }
}
