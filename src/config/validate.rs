//! From the merged layers to a [`Config`]: every rule in one place, and the way back to text.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::checks::{check_docker_host, check_node_name};
use super::raw::{Quantity, Raw, RawEngine, StringList};
use super::units::{self, Min, Seconds};
use super::{
    Config, DEFAULT_BAND_PCT, DEFAULT_ENGINE, DEFAULT_HIGH_PCT, EngineConfig, Error, Floor,
    KeepLabel, MAX_FLEET_LEASE, MAX_FLEET_SLOTS, MIN_ABSOLUTE_HIGH_BYTES, MIN_FLEET_LEASE,
    MIN_INTERVAL, MIN_TIMEOUT, ThresholdType, Watermarks,
};

/// Checks `raw` (defaults filled in) and builds the [`Config`]. `origin` names where a key's
/// value came from, for the error message.
pub(crate) fn validate(
    raw: &Raw,
    origin: &dyn Fn(&'static str) -> String,
) -> Result<Config, Error> {
    let d = Config::default();
    let invalid = |key: &'static str, value: String, message: String| Error::Invalid {
        origin: origin(key),
        key,
        value,
        message,
    };

    // Surrounding whitespace is dropped (an EnvironmentFile line may end in a space); what is
    // left must be a valid node name, or empty for "cordoning off".
    let node_name = match raw.node_name.as_deref() {
        None => None,
        Some(given) => {
            let name = given.trim();
            if name.is_empty() {
                None
            } else {
                check_node_name(name).map_err(|m| invalid("node_name", format!("{given:?}"), m))?;
                Some(name.to_string())
            }
        }
    };

    let paths = match &raw.path_to_check {
        None => d.paths.clone(),
        Some(list) => {
            absolute_paths(list).map_err(|(value, m)| invalid("path_to_check", value, m))?
        }
    };

    let duration = |key: &'static str, v: Option<Seconds>, default: Duration, min: Min| match v {
        None => Ok(default),
        Some(s) => units::duration(s, min).map_err(|m| invalid(key, s.to_string(), m)),
    };
    let interval = duration(
        "interval_seconds",
        raw.interval_seconds,
        d.interval,
        Min::AtLeast(MIN_INTERVAL),
    )?;
    let delay = duration(
        "delay_seconds",
        raw.delay_seconds,
        d.delay,
        Min::AtLeast(Duration::ZERO),
    )?;
    let timeout = duration(
        "timeout_seconds",
        raw.timeout_seconds,
        d.timeout,
        Min::AtLeast(MIN_TIMEOUT),
    )?;
    let min_age = duration(
        "min_age_seconds",
        raw.min_age_seconds,
        d.min_age,
        Min::AtLeast(Duration::ZERO),
    )?;
    let container_min_age = duration(
        "container_min_age_seconds",
        raw.container_min_age_seconds,
        d.container_min_age,
        Min::AtLeast(Duration::ZERO),
    )?;
    let max_cordon = duration(
        "max_cordon_seconds",
        raw.max_cordon_seconds,
        d.max_cordon,
        Min::AboveZero,
    )?;

    let watermarks = watermarks(raw, &invalid)?;

    let mut keep = Vec::new();
    for pattern in raw
        .keep
        .as_ref()
        .map(|l| l.0.as_slice())
        .unwrap_or_default()
    {
        let re = Regex::new(pattern)
            .map_err(|e| invalid("keep", format!("{pattern:?}"), e.to_string()))?;
        keep.push(re);
    }

    let state_dir = raw.state_dir.clone().unwrap_or(d.state_dir);
    if !state_dir.is_absolute() {
        return Err(invalid(
            "state_dir",
            format!("{:?}", state_dir.display().to_string()),
            "must be an absolute path".into(),
        ));
    }

    let docker_host = match raw.docker_host.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(host) => Some(
            check_docker_host(host).map_err(|m| invalid("docker_host", format!("{host:?}"), m))?,
        ),
    };

    let floor = match &raw.floor {
        None => d.floor,
        Some(q) => floor(q).map_err(|m| invalid("floor", q.to_string(), m))?,
    };
    let critical_pct = match &raw.threshold_critical {
        None => match watermarks {
            // A high watermark above the default critical one makes every pass critical
            // otherwise.
            Watermarks::Relative { high_pct, .. } => d.critical_pct.max(high_pct),
            Watermarks::Absolute { .. } => d.critical_pct,
        },
        Some(q) => {
            let pct = percent(q).map_err(|m| invalid("threshold_critical", q.to_string(), m))?;
            let least = match watermarks {
                Watermarks::Relative { high_pct, .. } => high_pct,
                Watermarks::Absolute { .. } => 0.0,
            };
            if !(pct > 0.0 && pct <= 100.0 && pct >= least) {
                return Err(invalid(
                    "threshold_critical",
                    q.to_string(),
                    format!(
                        "must be a percentage above 0, at most 100 and at least threshold_high ({least})"
                    ),
                ));
            }
            pct
        }
    };
    let critical_min_age = duration(
        "critical_min_age_seconds",
        raw.critical_min_age_seconds,
        d.critical_min_age,
        Min::AtLeast(Duration::ZERO),
    )?;

    let build_cache_min_age = duration(
        "build_cache_min_age_seconds",
        raw.build_cache_min_age_seconds,
        d.build_cache_min_age,
        Min::AtLeast(Duration::ZERO),
    )?;
    let max_unused_age = duration(
        "max_unused_age_seconds",
        raw.max_unused_age_seconds,
        d.max_unused_age,
        Min::AtLeast(Duration::ZERO),
    )?;
    // As the kubelet requires of imageMaximumGCAge: a shorter maximum than the minimum would
    // name images stale that the min age then keeps.
    if !max_unused_age.is_zero() && max_unused_age < min_age {
        return Err(invalid(
            "max_unused_age_seconds",
            raw.max_unused_age_seconds
                .map_or_else(|| max_unused_age.as_secs().to_string(), |s| s.to_string()),
            format!(
                "must be 0 (off) or at least min_age_seconds ({})",
                min_age.as_secs_f64()
            ),
        ));
    }
    let mut keep_labels = Vec::new();
    for rule in raw
        .keep_labels
        .as_ref()
        .map(|l| l.0.as_slice())
        .unwrap_or_default()
    {
        let label = KeepLabel::parse(rule).ok_or_else(|| {
            invalid(
                "keep_labels",
                format!("{rule:?}"),
                "must be a label key or key=value, the key not empty and without spaces around it"
                    .into(),
            )
        })?;
        keep_labels.push(label);
    }

    let engines = match raw.engine.as_deref() {
        None => vec![EngineConfig {
            name: DEFAULT_ENGINE.to_string(),
            docker_host: docker_host.clone(),
            paths: paths.clone(),
            floor,
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
                ("docker_host", docker_host.is_some()),
                ("path_to_check", paths != d.paths),
                ("floor", !floor.is_none()),
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
    };
    // What the trigger measures: every engine's data.
    let paths = if raw.engine.is_some() {
        let mut all: Vec<PathBuf> = Vec::new();
        for p in engines.iter().flat_map(|e| &e.paths) {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    } else {
        paths
    };

    let metrics_textfile = match raw.metrics_textfile.as_deref() {
        None => None,
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(metrics_textfile(p).map_err(|m| {
            invalid(
                "metrics_textfile",
                format!("{:?}", p.display().to_string()),
                m,
            )
        })?),
    };
    let metrics_listen = match raw.metrics_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => Some(
            metrics_listen(addr).map_err(|m| invalid("metrics_listen", format!("{addr:?}"), m))?,
        ),
    };
    let fleet_max_cordoned = match raw.fleet_max_cordoned {
        None => d.fleet_max_cordoned,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_FLEET_SLOTS)
            .ok_or_else(|| {
                invalid(
                    "fleet_max_cordoned",
                    n.to_string(),
                    format!("must be a whole number from 0 (no coordination) to {MAX_FLEET_SLOTS}"),
                )
            })?,
    };
    let fleet_namespace = match raw.fleet_namespace.as_deref().map(str::trim) {
        None => d.fleet_namespace.clone(),
        Some(ns) => {
            namespace_name(ns).map_err(|m| invalid("fleet_namespace", format!("{ns:?}"), m))?;
            ns.to_string()
        }
    };
    let fleet_lease = match raw.fleet_lease_seconds {
        None => d.fleet_lease,
        Some(s) => {
            let whole = match s {
                Seconds::Whole(n) => Some(n),
                Seconds::Fraction(_) => None,
            };
            whole
                .map(Duration::from_secs)
                .filter(|l| (MIN_FLEET_LEASE..=MAX_FLEET_LEASE).contains(l))
                .ok_or_else(|| {
                    invalid(
                        "fleet_lease_seconds",
                        s.to_string(),
                        format!(
                            "must be a whole number of seconds from {} to {} (a Lease counts whole seconds)",
                            MIN_FLEET_LEASE.as_secs(),
                            MAX_FLEET_LEASE.as_secs()
                        ),
                    )
                })?
        }
    };

    Ok(Config {
        node_name,
        paths,
        interval,
        delay,
        watermarks,
        timeout,
        strategy: raw.strategy.unwrap_or(d.strategy),
        min_age,
        container_min_age,
        keep,
        dry_run: raw.dry_run.unwrap_or(d.dry_run),
        state_dir,
        docker_host,
        kubeconfig: raw.kubeconfig.clone().filter(|p| !p.as_os_str().is_empty()),
        cordon_mode: raw.cordon_mode.unwrap_or(d.cordon_mode),
        max_cordon,
        on_cordon_failure: raw.on_cordon_failure.unwrap_or(d.on_cordon_failure),
        log_level: raw.log_level.unwrap_or(d.log_level),
        floor,
        critical_pct,
        critical_min_age,
        engines,
        metrics_textfile,
        metrics_listen,
        build_cache_min_age,
        max_unused_age,
        max_unused_age_cordon: raw.max_unused_age_cordon.unwrap_or(d.max_unused_age_cordon),
        keep_labels,
        fleet_max_cordoned,
        fleet_namespace,
        fleet_lease,
    })
}

/// The textfile of the node_exporter's textfile collector: an absolute path to a file whose name
/// ends in `.prom` (the collector reads nothing else).
fn metrics_textfile(p: &std::path::Path) -> Result<PathBuf, String> {
    if !p.is_absolute() {
        return Err("must be an absolute path".into());
    }
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let text = p.as_os_str().to_string_lossy();
    if text.ends_with('/') || !name.ends_with(".prom") || name == ".prom" {
        return Err(
            "must name a file ending in .prom in the textfile collector's directory, e.g. /var/lib/prometheus/node-exporter/docker-image-cleaner.prom".into(),
        );
    }
    Ok(p.to_path_buf())
}

/// The metrics endpoint's address: an IP address and a port (`127.0.0.1:9717`, `[::1]:9717`).
fn metrics_listen(addr: &str) -> Result<std::net::SocketAddr, String> {
    let parsed: std::net::SocketAddr = addr.parse().map_err(|_| {
        "must be an IP address and a port, such as 127.0.0.1:9717 or [::1]:9717 (no host name)"
            .to_string()
    })?;
    if parsed.port() == 0 {
        return Err("the port must be from 1 to 65535".into());
    }
    Ok(parsed)
}

/// A Kubernetes namespace name: an RFC 1123 label (at most 63 lower-case letters, digits and
/// `-`, starting and ending with a letter or a digit).
fn namespace_name(ns: &str) -> Result<(), String> {
    let b = ns.as_bytes();
    let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter().all(|c| edge(c) || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err("must be a namespace name: 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or a digit".into())
    }
}

/// A list of absolute paths, at least one; on error the offending value and why.
fn absolute_paths(list: &StringList) -> Result<Vec<PathBuf>, (String, String)> {
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
    let docker_host = match t.docker_host.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(host) => {
            Some(check_docker_host(host).map_err(|m| ("docker_host", format!("{host:?}"), m))?)
        }
    };
    let paths = match &t.paths {
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
        Some(q) => super::validate::floor(q).map_err(|m| ("floor", q.to_string(), m))?,
    };
    Ok(EngineConfig {
        name: t.name.clone(),
        docker_host,
        paths,
        floor,
    })
}

/// A floor: a bare number is a percentage of the filesystem (like the relative watermarks),
/// `"15%"` too, and a value with a unit is a size.
fn floor(q: &Quantity) -> Result<Floor, String> {
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

type Invalid<'a> = dyn Fn(&'static str, String, String) -> Error + 'a;

fn watermarks(raw: &Raw, invalid: &Invalid) -> Result<Watermarks, Error> {
    match raw.threshold_type.unwrap_or(ThresholdType::Relative) {
        ThresholdType::Relative => {
            let high = match &raw.threshold_high {
                None => DEFAULT_HIGH_PCT,
                Some(q) => percent(q).map_err(|m| invalid("threshold_high", q.to_string(), m))?,
            };
            if !(high > 0.0 && high <= 100.0) {
                return Err(invalid(
                    "threshold_high",
                    high.to_string(),
                    "must be a percentage above 0 and at most 100".into(),
                ));
            }
            let low = match &raw.threshold_low {
                // A narrow band below high (the original tool had none: it pruned everything);
                // a tiny high keeps half of itself.
                None if high > 2.0 * DEFAULT_BAND_PCT => high - DEFAULT_BAND_PCT,
                None => high / 2.0,
                Some(q) => percent(q).map_err(|m| invalid("threshold_low", q.to_string(), m))?,
            };
            if !(low >= 0.0 && low < high) {
                return Err(invalid(
                    "threshold_low",
                    low.to_string(),
                    format!("must be at least 0 and below threshold_high ({high})"),
                ));
            }
            Ok(Watermarks::Relative {
                high_pct: high,
                low_pct: low,
            })
        }
        ThresholdType::Absolute => {
            let high = match &raw.threshold_high {
                // Reported against threshold_type: that is the setting that needs the size.
                None => {
                    return Err(invalid(
                        "threshold_type",
                        "\"absolute\"".into(),
                        "threshold_type = \"absolute\" needs threshold_high as a size, e.g. \"50GiB\"".into(),
                    ));
                }
                Some(q) => bytes(q).map_err(|m| invalid("threshold_high", q.to_string(), m))?,
            };
            if high < MIN_ABSOLUTE_HIGH_BYTES {
                return Err(invalid(
                    "threshold_high",
                    high.to_string(),
                    "must be at least 1 GiB in absolute mode".into(),
                ));
            }
            let low = match &raw.threshold_low {
                None => high / 5 * 4,
                Some(q) => bytes(q).map_err(|m| invalid("threshold_low", q.to_string(), m))?,
            };
            if low >= high {
                return Err(invalid(
                    "threshold_low",
                    low.to_string(),
                    format!("must be below threshold_high ({high} bytes)"),
                ));
            }
            Ok(Watermarks::Absolute {
                high_bytes: high,
                low_bytes: low,
            })
        }
    }
}

/// A percentage as written; the range is checked by the caller.
fn percent(q: &Quantity) -> Result<f64, String> {
    let not_a_percentage =
        || "must be a percentage such as 80 or \"80%\" in relative mode".to_string();
    match q {
        // Any integer a percentage can be fits an i32, hence an f64 exactly.
        Quantity::Integer(n) => i32::try_from(*n)
            .map(f64::from)
            .map_err(|_| "must be a percentage above 0 and at most 100".to_string()),
        Quantity::Float(x) => Ok(*x),
        Quantity::Text(s) => {
            let t = s.trim();
            t.strip_suffix('%')
                .unwrap_or(t)
                .trim()
                .parse::<f64>()
                .map_err(|_| not_a_percentage())
        }
    }
}

/// A byte count as written, through [`units::parse_size`]: exact, never saturated.
fn bytes(q: &Quantity) -> Result<u64, String> {
    match q {
        Quantity::Integer(n) => u64::try_from(*n).map_err(|_| "must not be negative".to_string()),
        Quantity::Float(x) if !x.is_finite() || *x < 0.0 => {
            Err("must be a whole number of bytes, at least 0".into())
        }
        // `{}` writes every digit of a float (never an exponent), so the size parser sees the
        // exact value and rejects a fraction or an overflow like any other text.
        Quantity::Float(x) => units::parse_size(&format!("{x}")).map_err(|e| e.to_string()),
        Quantity::Text(s) if s.trim().ends_with('%') => {
            Err("a percentage needs threshold_type = \"relative\"".into())
        }
        Quantity::Text(s) => units::parse_size(s).map_err(|e| e.to_string()),
    }
}

/// The configuration as `(key, TOML value)` pairs, in the order of the keys.
pub(crate) fn render(c: &Config) -> Vec<(&'static str, String)> {
    let secs = |d: Duration| {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{}", d.as_secs())
        } else {
            format!("{s}")
        }
    };
    let string = |s: &str| format!("{s:?}");
    let list = |items: Vec<String>| {
        format!(
            "[{}]",
            items
                .iter()
                .map(|s| string(s))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let lower = |v: &dyn std::fmt::Debug| format!("{:?}", format!("{v:?}").to_lowercase());
    let (kind, high, low) = match c.watermarks {
        Watermarks::Relative { high_pct, low_pct } => {
            ("relative", high_pct.to_string(), low_pct.to_string())
        }
        Watermarks::Absolute {
            high_bytes,
            low_bytes,
        } => ("absolute", high_bytes.to_string(), low_bytes.to_string()),
    };
    let path = |p: &std::path::Path| string(&p.display().to_string());
    let keys: Vec<(&'static str, String)> = vec![
        (
            "node_name",
            c.node_name
                .as_deref()
                .map(string)
                .unwrap_or_else(|| "\"\"".into()),
        ),
        (
            "path_to_check",
            list(c.paths.iter().map(|p| p.display().to_string()).collect()),
        ),
        ("interval_seconds", secs(c.interval)),
        ("delay_seconds", secs(c.delay)),
        ("threshold_type", string(kind)),
        ("threshold_high", high),
        ("threshold_low", low),
        ("timeout_seconds", secs(c.timeout)),
        ("strategy", lower(&c.strategy)),
        ("min_age_seconds", secs(c.min_age)),
        ("container_min_age_seconds", secs(c.container_min_age)),
        (
            "keep",
            list(c.keep.iter().map(|r| r.as_str().to_string()).collect()),
        ),
        ("dry_run", c.dry_run.to_string()),
        ("state_dir", path(&c.state_dir)),
        (
            "docker_host",
            c.docker_host
                .as_deref()
                .map(string)
                .unwrap_or_else(|| "\"\"".into()),
        ),
        (
            "kubeconfig",
            c.kubeconfig
                .as_deref()
                .map(path)
                .unwrap_or_else(|| "\"\"".into()),
        ),
        ("cordon_mode", lower(&c.cordon_mode)),
        ("max_cordon_seconds", secs(c.max_cordon)),
        ("on_cordon_failure", lower(&c.on_cordon_failure)),
        ("log_level", lower(&c.log_level)),
        ("floor", floor_value(c.floor)),
        ("threshold_critical", c.critical_pct.to_string()),
        ("critical_min_age_seconds", secs(c.critical_min_age)),
        (
            "engine",
            format!(
                "[{}]",
                c.engines
                    .iter()
                    .map(|e| format!(
                        "{{ name = {}, docker_host = {}, paths = {}, floor = {} }}",
                        string(&e.name),
                        string(e.docker_host.as_deref().unwrap_or("")),
                        list(e.paths.iter().map(|p| p.display().to_string()).collect()),
                        floor_value(e.floor)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "metrics_textfile",
            c.metrics_textfile
                .as_deref()
                .map(path)
                .unwrap_or_else(|| "\"\"".into()),
        ),
        (
            "metrics_listen",
            c.metrics_listen
                .map(|a| string(&a.to_string()))
                .unwrap_or_else(|| "\"\"".into()),
        ),
        ("build_cache_min_age_seconds", secs(c.build_cache_min_age)),
        ("max_unused_age_seconds", secs(c.max_unused_age)),
        ("max_unused_age_cordon", c.max_unused_age_cordon.to_string()),
        (
            "keep_labels",
            list(c.keep_labels.iter().map(ToString::to_string).collect()),
        ),
        ("fleet_max_cordoned", c.fleet_max_cordoned.to_string()),
        ("fleet_namespace", string(&c.fleet_namespace)),
        ("fleet_lease_seconds", secs(c.fleet_lease)),
    ];
    debug_assert_eq!(keys.len(), Raw::KEYS.len());
    keys
}

/// A floor as TOML: a percentage as a bare number, a size as its byte count in a string.
fn floor_value(f: Floor) -> String {
    match f {
        Floor::Percent(p) => p.to_string(),
        Floor::Bytes(b) => format!("\"{b}B\""),
    }
}
