//! The file format: every key optional, unknown keys rejected, values typed just enough that a
//! wrong type is reported by the TOML parser with its line and column.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::units::Seconds;
use super::{CordonMode, LogLevel, OnCordonFailure, Strategy, ThresholdType};

/// Declares [`Raw`] once, with the list of its keys and the overlay of one layer on another, so
/// that a key cannot be added to the struct and forgotten by the overlay or by `check-config`.
macro_rules! raw_config {
    ($($key:ident : $ty:ty),* $(,)?) => {
        /// One layer of configuration (the file, the environment or the flags): what it sets.
        #[derive(Debug, Default, Clone, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Raw {
            $(pub $key: Option<$ty>,)*
        }

        impl Raw {
            /// Every key, in the order `check-config` prints them.
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            /// Takes every key `top` sets; returns the keys it set.
            pub(crate) fn overlay(&mut self, top: Raw) -> Vec<&'static str> {
                let mut set = Vec::new();
                $(
                    if top.$key.is_some() {
                        self.$key = top.$key;
                        set.push(stringify!($key));
                    }
                )*
                set
            }
        }
    };
}

raw_config! {
    node_name: String,
    path_to_check: StringList,
    interval_seconds: Seconds,
    delay_seconds: RawDelay,
    threshold_type: ThresholdType,
    threshold_high: Quantity,
    threshold_low: Quantity,
    timeout_seconds: Seconds,
    strategy: Strategy,
    min_age_seconds: Seconds,
    container_min_age_seconds: Seconds,
    keep: StringList,
    dry_run: bool,
    state_dir: PathBuf,
    docker_host: String,
    kubeconfig: PathBuf,
    cordon_mode: CordonMode,
    max_cordon_seconds: Seconds,
    on_cordon_failure: OnCordonFailure,
    log_level: LogLevel,
    floor: Quantity,
    threshold_critical: Quantity,
    critical_min_age_seconds: Seconds,
    engine: Vec<RawEngine>,
    metrics_textfile: PathBuf,
    metrics_listen: String,
    build_cache_min_age_seconds: Seconds,
    max_unused_age_seconds: Seconds,
    max_unused_age_cordon: bool,
    keep_labels: StringList,
    fleet_max_cordoned: i64,
    fleet_namespace: String,
    fleet_lease_seconds: Seconds,
}

/// Keys whose environment value is a comma-separated list.
pub(crate) const LIST_KEYS: &[&str] = &["path_to_check", "keep", "keep_labels"];

/// Keys only the file can set (tables have no environment form).
pub(crate) const FILE_ONLY_KEYS: &[&str] = &["engine"];

/// One `[[engine]]` table as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngine {
    pub name: String,
    /// `docker` (the default) or `cri`; read as text so that a wrong one is named with the
    /// table it is in.
    pub kind: Option<String>,
    pub docker_host: Option<String>,
    pub cri_endpoint: Option<String>,
    pub paths: Option<StringList>,
    pub floor: Option<Quantity>,
}

impl<'de> Deserialize<'de> for Seconds {
    /// An integer stays exact ([`Seconds::Whole`]); a float must be finite and not negative.
    /// The range is checked during validation, where the error can name the key's origin.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(SecondsVisitor { adaptive: false })? {
            RawDelay::Seconds(s) => Ok(s),
            // Only a visitor asked for `adaptive` returns it.
            RawDelay::Adaptive => Err(de::Error::custom("expected a duration")),
        }
    }
}

/// `delay_seconds` as written: a number of seconds, or the string `"adaptive"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RawDelay {
    Seconds(Seconds),
    Adaptive,
}

impl<'de> Deserialize<'de> for RawDelay {
    /// A number is read as [`Seconds`] are; the only string accepted is `adaptive`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecondsVisitor { adaptive: true })
    }
}

/// Reads a number of seconds and, when `adaptive`, the string `adaptive` too.
struct SecondsVisitor {
    adaptive: bool,
}

impl Visitor<'_> for SecondsVisitor {
    type Value = RawDelay;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative number of seconds or a duration such as \"2m\"")?;
        if self.adaptive {
            f.write_str(" or \"adaptive\"")?;
        }
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDelay, E> {
        u64::try_from(v)
            .map(|n| RawDelay::Seconds(Seconds::Whole(n)))
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDelay, E> {
        Ok(RawDelay::Seconds(Seconds::Whole(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawDelay, E> {
        if !v.is_finite() || v < 0.0 {
            return Err(E::invalid_value(de::Unexpected::Float(v), &self));
        }
        Ok(RawDelay::Seconds(Seconds::Fraction(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDelay, E> {
        if self.adaptive && v == "adaptive" {
            return Ok(RawDelay::Adaptive);
        }
        // "2m", "1h30m", "90s", or a number of seconds in a string: exact.
        super::units::parse_duration(v)
            .map(|d| RawDelay::Seconds(Seconds::Text(d)))
            .map_err(|e| {
                if self.adaptive {
                    E::custom(format!("{e}; or \"adaptive\""))
                } else {
                    E::custom(e)
                }
            })
    }
}

/// A watermark as written: a bare number (percent in relative mode, bytes in absolute mode) or a
/// string (`"80%"`, `"50GiB"`, `"500000000"`). Its meaning depends on `threshold_type`, so it is
/// interpreted during validation. An integer stays exact.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Quantity {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Quantity::Integer(n) => write!(f, "{n}"),
            Quantity::Float(x) => write!(f, "{x}"),
            Quantity::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a percentage such as \"80%\" or a size such as \"50GiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Integer(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                // TOML integers are i64; a larger one can only come from elsewhere.
                i64::try_from(v)
                    .map(Quantity::Integer)
                    .or_else(|_| Ok(Quantity::Text(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One string or a list of strings (`path_to_check = "/var/lib/docker"` or a list).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StringList(pub Vec<String>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StringList, E> {
                Ok(StringList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StringList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringList(out))
            }
        }
        d.deserialize_any(V)
    }
}
