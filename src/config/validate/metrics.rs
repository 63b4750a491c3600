//! The metrics keys: `metrics_textfile` (the node_exporter textfile) and `metrics_listen` (the
//! `GET /metrics` address). Checks the text only: creates no file and binds no socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::Invalid;
use crate::config::Error;
use crate::config::raw::Raw;

/// `metrics_textfile`: `None` when unset or empty.
pub(super) fn textfile(raw: &Raw, invalid: &Invalid) -> Result<Option<PathBuf>, Error> {
    Ok(match raw.metrics_textfile.as_deref() {
        None => None,
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => Some(metrics_textfile(p).map_err(|m| {
            invalid(
                "metrics_textfile",
                format!("{:?}", p.display().to_string()),
                m,
            )
        })?),
    })
}

/// `metrics_listen`: `None` when unset or blank.
pub(super) fn listen(raw: &Raw, invalid: &Invalid) -> Result<Option<SocketAddr>, Error> {
    Ok(match raw.metrics_listen.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(addr) => Some(
            metrics_listen(addr).map_err(|m| invalid("metrics_listen", format!("{addr:?}"), m))?,
        ),
    })
}

/// The textfile of the node_exporter's textfile collector: an absolute path to a file whose name
/// ends in `.prom` (the collector reads nothing else).
fn metrics_textfile(p: &Path) -> Result<PathBuf, String> {
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
fn metrics_listen(addr: &str) -> Result<SocketAddr, String> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        "must be an IP address and a port, such as 127.0.0.1:9717 or [::1]:9717 (no host name)"
            .to_string()
    })?;
    if parsed.port() == 0 {
        return Err("the port must be from 1 to 65535".into());
    }
    Ok(parsed)
}
