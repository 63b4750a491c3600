//! The way back from a [`Config`] to text: every key with its effective value as TOML, for
//! `check-config` (which adds where each value came from). Reads the validated configuration
//! only; checks nothing, since a [`Config`] is valid by construction.

use std::time::Duration;

use super::raw::Raw;
use super::{Config, Delay, Floor, Watermarks};

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
        (
            "delay_seconds",
            match c.delay {
                Delay::Fixed(d) => secs(d),
                Delay::Adaptive => string("adaptive"),
            },
        ),
        ("threshold_type", string(kind)),
        (
            "threshold_high",
            if c.high_auto { string("auto") } else { high },
        ),
        (
            "threshold_low",
            if c.low_auto { string("auto") } else { low },
        ),
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
                        "{{ name = {}, {}, paths = {}, floor = {} }}",
                        string(&e.name),
                        match &e.cri_endpoint {
                            Some(endpoint) =>
                                format!("kind = \"cri\", cri_endpoint = {}", string(endpoint)),
                            None => format!(
                                "docker_host = {}",
                                string(e.docker_host.as_deref().unwrap_or(""))
                            ),
                        },
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
