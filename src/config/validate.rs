//! From the merged layers to a [`Config`]: every rule, applied key by key in one order (the
//! first bad key is the one reported). This file owns that order and the keys of a pass
//! (names, paths, durations, protections); the larger groups of keys have their own files.
//! Reads nothing but the merged layers; the way back to text is `render`'s.
//!
//! - `thresholds`: the watermarks, the critical watermark, percentages and byte counts;
//! - `engines`: the `[[engine]]` tables, their paths and floors;
//! - `metrics`: the textfile and the `/metrics` address;
//! - `fleet`: the fleet slots' count, namespace and Lease duration.

mod engines;
mod fleet;
mod metrics;
mod thresholds;

use std::time::Duration;

use regex::Regex;

use super::checks::{check_docker_host, check_node_name};
use super::raw::{Raw, RawDelay, StringList};
use super::units::{self, Min, Seconds};
use super::{Config, Delay, Error, KeepLabel, MIN_INTERVAL, MIN_TIMEOUT};
use engines::TopLevel;

/// How a rule reports a bad value: the key, the value as written, why.
type Invalid<'a> = dyn Fn(&'static str, String, String) -> Error + 'a;

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

    let node_name = node_name(raw, &invalid)?;

    let paths = match &raw.path_to_check {
        None => d.paths.clone(),
        Some(list) => engines::absolute_paths(list)
            .map_err(|(value, m)| invalid("path_to_check", value, m))?,
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
    let delay = match raw.delay_seconds {
        None => d.delay,
        Some(RawDelay::Adaptive) => Delay::Adaptive,
        Some(RawDelay::Seconds(s)) => Delay::Fixed(
            units::duration(s, Min::AtLeast(Duration::ZERO))
                .map_err(|m| invalid("delay_seconds", s.to_string(), m))?,
        ),
    };
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

    let watermarks = thresholds::watermarks(raw, &invalid)?;

    let keep = keep(raw, &invalid)?;

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
        Some(q) => engines::floor(q).map_err(|m| invalid("floor", q.to_string(), m))?,
    };
    let critical_pct = thresholds::critical_pct(raw, watermarks, d.critical_pct, &invalid)?;
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
    let keep_labels = keep_labels(raw, &invalid)?;

    let engines = engines::engines(
        raw,
        &TopLevel {
            docker_host: docker_host.as_deref(),
            paths: &paths,
            default_paths: &d.paths,
            floor,
        },
        &invalid,
    )?;
    let paths = engines::measured_paths(raw, &engines, paths);

    let metrics_textfile = metrics::textfile(raw, &invalid)?;
    let metrics_listen = metrics::listen(raw, &invalid)?;
    let fleet_max_cordoned = fleet::max_cordoned(raw, d.fleet_max_cordoned, &invalid)?;
    let fleet_namespace = fleet::namespace(raw, &d.fleet_namespace, &invalid)?;
    let fleet_lease = fleet::lease(raw, d.fleet_lease, &invalid)?;

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
        // Filled in by `load`, which has the environment.
        kubeconfig_env: None,
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

/// `node_name`: surrounding whitespace is dropped (an EnvironmentFile line may end in a space);
/// what is left must be a valid node name, or empty for "cordoning off".
fn node_name(raw: &Raw, invalid: &Invalid) -> Result<Option<String>, Error> {
    Ok(match raw.node_name.as_deref() {
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
    })
}

/// `keep`: the patterns of image names never removed, each a regex that compiles.
fn keep(raw: &Raw, invalid: &Invalid) -> Result<Vec<Regex>, Error> {
    let mut keep = Vec::new();
    for pattern in items(raw.keep.as_ref()) {
        let re = Regex::new(pattern)
            .map_err(|e| invalid("keep", format!("{pattern:?}"), e.to_string()))?;
        keep.push(re);
    }
    Ok(keep)
}

/// `keep_labels`: the labels that protect an image, each `key` or `key=value`.
fn keep_labels(raw: &Raw, invalid: &Invalid) -> Result<Vec<KeepLabel>, Error> {
    let mut keep_labels = Vec::new();
    for rule in items(raw.keep_labels.as_ref()) {
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
    Ok(keep_labels)
}

/// The items of a list key; none when it is unset.
fn items(list: Option<&StringList>) -> &[String] {
    list.map(|l| l.0.as_slice()).unwrap_or_default()
}
