//! The thresholds: the watermarks (`threshold_type`, `threshold_high`, `threshold_low`), the
//! critical watermark, and the quantities they are written in (a percentage, a byte count).
//! Pure checks of the values; the measurement they are compared with is `usage`'s.

use super::Invalid;
use crate::config::raw::{Quantity, Raw};
use crate::config::units;
use crate::config::{DEFAULT_BAND_PCT, DEFAULT_HIGH_PCT, Error, MIN_ABSOLUTE_HIGH_BYTES};
use crate::config::{ThresholdType, Watermarks};

/// The watermarks, their defaults filled in.
pub(super) fn watermarks(raw: &Raw, invalid: &Invalid) -> Result<Watermarks, Error> {
    match raw.threshold_type.unwrap_or(ThresholdType::Relative) {
        ThresholdType::Relative => {
            let high = match &raw.threshold_high {
                None => DEFAULT_HIGH_PCT,
                Some(q) => relative(q).map_err(|m| invalid("threshold_high", q.to_string(), m))?,
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
                Some(q) => relative(q).map_err(|m| invalid("threshold_low", q.to_string(), m))?,
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

/// `threshold_critical`: at least a relative high watermark, and the default unless set.
pub(super) fn critical_pct(
    raw: &Raw,
    watermarks: Watermarks,
    default: f64,
    invalid: &Invalid,
) -> Result<f64, Error> {
    Ok(match &raw.threshold_critical {
        None => match watermarks {
            // A high watermark above the default critical one makes every pass critical
            // otherwise.
            Watermarks::Relative { high_pct, .. } => default.max(high_pct),
            Watermarks::Absolute { .. } => default,
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
    })
}

/// A percentage as written; the range is checked by the caller.
pub(super) fn percent(q: &Quantity) -> Result<f64, String> {
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

/// A watermark of relative mode: a percentage. A size (`"50GiB"`) or a byte count too large
/// for a percentage is refused naming `threshold_type = "absolute"`, the setting it needs.
fn relative(q: &Quantity) -> Result<f64, String> {
    let needs_absolute = |what: String| {
        format!(
            "{what} needs threshold_type = \"absolute\" (the default, \"relative\", takes a percentage such as 80 or \"80%\")"
        )
    };
    match q {
        Quantity::Integer(n) if *n > 100 => Err(needs_absolute(
            "must be a percentage above 0 and at most 100; a number of bytes".into(),
        )),
        Quantity::Text(s)
            if percent(q).is_err()
                && s.bytes().any(|b| b.is_ascii_alphabetic())
                && units::parse_size(s).is_ok() =>
        {
            Err(needs_absolute("is a size: a size".to_string()))
        }
        _ => percent(q),
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
