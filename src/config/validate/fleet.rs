//! The fleet keys: `fleet_max_cordoned`, `fleet_namespace` and `fleet_lease_seconds`, each in the
//! range a Lease can carry. Checks the values only: talks to no API server.

use std::time::Duration;

use super::Invalid;
use crate::config::raw::Raw;
use crate::config::units::Seconds;
use crate::config::{Error, MAX_FLEET_LEASE, MAX_FLEET_SLOTS, MIN_FLEET_LEASE};

/// `fleet_max_cordoned`: how many nodes may hold a cleaning cordon at once (0: no coordination).
pub(super) fn max_cordoned(raw: &Raw, default: u32, invalid: &Invalid) -> Result<u32, Error> {
    Ok(match raw.fleet_max_cordoned {
        None => default,
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
    })
}

/// `fleet_namespace`: where the slots' Leases live.
pub(super) fn namespace(raw: &Raw, default: &str, invalid: &Invalid) -> Result<String, Error> {
    Ok(match raw.fleet_namespace.as_deref().map(str::trim) {
        None => default.to_string(),
        Some(ns) => {
            namespace_name(ns).map_err(|m| invalid("fleet_namespace", format!("{ns:?}"), m))?;
            ns.to_string()
        }
    })
}

/// `fleet_lease_seconds`: a whole number of seconds, as a Lease counts them.
pub(super) fn lease(raw: &Raw, default: Duration, invalid: &Invalid) -> Result<Duration, Error> {
    Ok(match raw.fleet_lease_seconds {
        None => default,
        Some(s) => {
            let whole = match s {
                Seconds::Whole(n) => Some(n),
                Seconds::Text(d) if d.subsec_nanos() == 0 => Some(d.as_secs()),
                Seconds::Fraction(_) | Seconds::Text(_) => None,
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
    })
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
