//! Units of the configuration: sizes (`"50GiB"`) and durations (a number of seconds, or text
//! with units such as `"2m"` or `"1h30m"`), each converted exactly, with checked arithmetic,
//! into the range the rest of the program relies on. Pure functions of their input; no I/O,
//! and nothing here knows which key a value belongs to.

use std::fmt;
use std::time::Duration;

/// The longest duration any setting takes, exclusive: 10 years of 365 days, in seconds.
/// It fits a `u32`, hence an `f64` exactly and an `i64` with room to add timestamps to it.
pub const MAX_DURATION_SECS: u32 = 10 * 365 * 86_400;

/// [`MAX_DURATION_SECS`] as a [`Duration`]: every duration of a validated
/// [`Config`](super::Config) is below it.
// A widening cast (u32 to u64): `u64::from` is not const.
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_DURATION_SECS as u64);

/// A duration as written: a number of seconds (an integer stays exact, a fraction is a binary
/// float), or text with units read exactly ([`parse_duration`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seconds {
    /// An integer, such as `300`.
    Whole(u64),
    /// A number with a fraction or an exponent, such as `0.5` or `1e3` (finite, not negative).
    Fraction(f64),
    /// Text with units, such as `"2m"` or `"1h30m"`, read to the nanosecond.
    Text(Duration),
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Seconds::Whole(n) => write!(f, "{n}"),
            Seconds::Fraction(x) => write!(f, "{x}"),
            Seconds::Text(d) => write!(f, "\"{}\"", human_duration(*d)),
        }
    }
}

/// A duration the way people write it: `2m`, `1h30m`, `1.5s`, `250ms`; `0s` for zero.
pub fn human_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let mut out = String::new();
    let mut secs = d.as_secs();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    let nanos = d.subsec_nanos();
    match (secs, nanos) {
        (0, 0) => {}
        (s, 0) => out.push_str(&format!("{s}s")),
        (0, n) if n % 1_000_000 == 0 => out.push_str(&format!("{}ms", n / 1_000_000)),
        (s, n) => {
            let frac = format!("{n:09}");
            out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
        }
    }
    out
}

/// The units of a duration, in nanoseconds.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a duration: a number of seconds (`"300"`, `"0.5"`), or one or more numbers each with
/// a unit, `ms`, `s`, `m` or `min`, `h`, `d` (`"2m"`, `"1h30m"`, `"1.5h"`, `"1h 30m"`),
/// exactly (a fraction of a unit is rounded down to the nanosecond). The range is the caller's
/// to check; anything beyond 10 years is an error here already.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let syntax = || {
        format!(
            "{text:?} is not a duration: write a number of seconds, or numbers with units such as \"90s\", \"2m\", \"1h30m\" (ms, s, m, h, d)"
        )
    };
    let too_long = || {
        format!(
            "{text:?} is too long: every duration is below {MAX_DURATION_SECS} seconds (10 years)"
        )
    };
    let s = text.trim();
    if s.is_empty() {
        return Err(syntax());
    }
    let limit = u128::from(MAX_DURATION_SECS) * 1_000_000_000;
    let mut total: u128 = 0;
    let mut parts = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(a) => a.split_at(a.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(syntax());
        }
        let after = after.trim_start();
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let factor = if unit.is_empty() {
            // A bare number: seconds, and only on its own ("1h 30" says nothing).
            if parts > 0 || !after.trim().is_empty() {
                return Err(syntax());
            }
            1_000_000_000
        } else {
            DURATION_UNITS
                .iter()
                .find(|(name, _)| unit.eq_ignore_ascii_case(name))
                .map(|&(_, f)| f)
                .ok_or_else(syntax)?
        };
        let mut whole: u128 = 0;
        for d in int_digits.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .filter(|&w| w <= limit)
                .ok_or_else(too_long)?;
        }
        let mut carry: u128 = 0;
        for d in frac_digits.bytes().rev() {
            carry = (u128::from(d - b'0') * factor + carry) / 10;
        }
        total = whole
            .checked_mul(factor)
            .and_then(|w| w.checked_add(carry))
            .and_then(|w| w.checked_add(total))
            .filter(|&t| t < limit)
            .ok_or_else(too_long)?;
        rest = after.trim_start();
        parts += 1;
    }
    // Below 10 years in nanoseconds: fits a u64 of nanoseconds.
    let nanos = u64::try_from(total).map_err(|_| too_long())?;
    Ok(Duration::from_nanos(nanos))
}

/// The lower end of a duration's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Min {
    /// At least this long (zero allows zero).
    AtLeast(Duration),
    /// More than zero (after conversion: a fraction too small for a nanosecond is refused).
    AboveZero,
}

/// Converts `value` to a [`Duration`] in `[min, MAX_DURATION)`. An integer is taken exactly; a
/// fraction is rounded to the nanosecond by [`Duration::try_from_secs_f64`] and the range is
/// checked on the result, so `1e-10` is zero and not "positive".
pub fn duration(value: Seconds, min: Min) -> Result<Duration, String> {
    let too_long = || {
        format!("must be below {MAX_DURATION_SECS} seconds (10 years); write a number of seconds")
    };
    let d = match value {
        Seconds::Whole(n) if n < u64::from(MAX_DURATION_SECS) => Duration::from_secs(n),
        Seconds::Whole(_) => return Err(too_long()),
        Seconds::Fraction(x) if x.is_finite() && x >= 0.0 => {
            if x >= f64::from(MAX_DURATION_SECS) {
                return Err(too_long());
            }
            Duration::try_from_secs_f64(x).map_err(|e| e.to_string())?
        }
        Seconds::Fraction(_) => return Err("must be a finite number of seconds, at least 0".into()),
        Seconds::Text(d) => d,
    };
    if d >= MAX_DURATION {
        return Err(too_long());
    }
    match min {
        Min::AtLeast(floor) if d < floor => Err(format!(
            "must be at least {} second{}",
            floor.as_secs_f64(),
            if floor == Duration::from_secs(1) {
                ""
            } else {
                "s"
            }
        )),
        Min::AboveZero if d.is_zero() => {
            Err("must be more than 0 seconds (at least a nanosecond)".into())
        }
        _ => Ok(d),
    }
}

/// Why a size was refused. Each variant names the text as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number followed by an optional unit.
    #[error(
        "{0:?} is not a size: write a number of bytes, or a number and a unit, such as \"50GiB\" or \"40GB\""
    )]
    Syntax(String),
    /// A unit that is not one of the known ones.
    #[error(
        "{text:?} has an unknown unit {unit:?}: use B, K or KB, KiB, M or MB, MiB, G or GB, GiB, T or TB, TiB, P or PB, PiB, E or EB, EiB"
    )]
    Unit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More bytes than a `u64` holds.
    #[error(
        "{0:?} is too large: the largest size is 18446744073709551615 bytes (16 EiB less one byte)"
    )]
    TooLarge(String),
    /// A fractional number of bytes.
    #[error("{0:?} is not a whole number of bytes")]
    Fraction(String),
}

/// The units, lower case, with their factors: decimal (`KB` = 1000, also `K`) and binary
/// (`KiB` = 1024, also `Ki`), as the `bytesize` crate and Docker's own tools read them.
const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("ki", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("mi", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("gi", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("ti", 1 << 40),
    ("tib", 1 << 40),
    ("p", 1_000_000_000_000_000),
    ("pb", 1_000_000_000_000_000),
    ("pi", 1 << 50),
    ("pib", 1 << 50),
    ("e", 1_000_000_000_000_000_000),
    ("eb", 1_000_000_000_000_000_000),
    ("ei", 1 << 60),
    ("eib", 1 << 60),
];

/// Parses a size: a decimal number with an optional fraction (`50`, `1.5`, `.5`), optionally
/// followed by spaces and a unit (case-insensitive): `B`; `K`/`KB`, `M`/`MB`, `G`/`GB`,
/// `T`/`TB`, `P`/`PB`, `E`/`EB` (powers of 1000); `Ki`/`KiB` … `Ei`/`EiB` (powers of 1024).
/// Without a unit, or with `B`, the number is bytes and must be whole; with a larger unit the
/// result is rounded down to a whole byte (`"0.3GiB"` is 322122547 bytes). Anything that does not fit a `u64` is an error,
/// never a saturated or wrapped value. Surrounding whitespace is ignored.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let s = text.trim();
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let (int_digits, rest) = s.split_at(int_len);
    let (frac_digits, rest) = match rest.strip_prefix('.') {
        Some(after) => {
            let n = after.bytes().take_while(u8::is_ascii_digit).count();
            after.split_at(n)
        }
        None => ("", rest),
    };
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(SizeError::Syntax(text.to_string()));
    }
    let unit = rest.trim_start();
    if !unit.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(SizeError::Syntax(text.to_string()));
    }
    let factor = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(name, _)| unit.eq_ignore_ascii_case(name))
            .map(|&(_, factor)| factor)
            .ok_or_else(|| SizeError::Unit {
                text: text.to_string(),
                unit: unit.to_string(),
            })?
    };

    let too_large = || SizeError::TooLarge(text.to_string());
    // The integer part, times the factor: u128 holds any u64 times any factor.
    let mut whole: u128 = 0;
    for d in int_digits.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u128::from(d - b'0')))
            .filter(|&w| w <= u128::from(u64::MAX))
            .ok_or_else(too_large)?;
    }
    let whole = whole
        .checked_mul(u128::from(factor))
        .ok_or_else(too_large)?;

    // The fraction: floor(factor * 0.d1d2…dn), exactly, by long multiplication from the last
    // digit: after the n digits the carry is the integer part of the product.
    let frac_digits = frac_digits.trim_end_matches('0');
    if factor == 1 && !frac_digits.is_empty() {
        return Err(SizeError::Fraction(text.to_string()));
    }
    let mut carry: u128 = 0;
    for d in frac_digits.bytes().rev() {
        // Below 10 × factor ≤ 10 × 2^60: no overflow.
        carry = (u128::from(d - b'0') * u128::from(factor) + carry) / 10;
    }

    let total = whole.checked_add(carry).ok_or_else(too_large)?;
    u64::try_from(total).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_exactly_or_name_the_value() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1024", 1024),
            (" 1024 ", 1024),
            ("1.0", 1),
            ("1B", 1),
            ("1b", 1),
            ("1K", 1000),
            ("1kb", 1000),
            ("1KiB", 1024),
            ("1ki", 1024),
            ("50GiB", 50 << 30),
            ("50 GiB", 50 << 30),
            ("50Gi", 50 << 30),
            ("40GB", 40_000_000_000),
            ("40g", 40_000_000_000),
            ("1.5KiB", 1536),
            (".5KiB", 512),
            ("5.KiB", 5 * 1024),
            ("0.3GiB", 322_122_547),
            ("1.5GB", 1_500_000_000),
            ("2TiB", 2 << 40),
            ("1PB", 1_000_000_000_000_000),
            ("1PiB", 1 << 50),
            ("15EiB", 15 << 60),
            ("15.999999999999999999EiB", 18_446_744_073_709_551_614),
            ("18EB", 18_000_000_000_000_000_000),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615B", u64::MAX),
            // Beyond what a u64 holds in its digits, the fraction still rounds down exactly.
            ("0.00000000000000000000000000001EiB", 0),
            ("9007199254740993", 9_007_199_254_740_993),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(*bytes), "{text:?}");
        }

        let too_large = [
            "16EiB",
            "17EiB",
            "16.0000000001EiB",
            "19EB",
            "18446744073709551616",
            "99999999999999999999999GiB",
            "99999999999999999999999999999999999999999999",
            "16384PiB",
        ];
        for text in too_large {
            assert_eq!(
                parse_size(text),
                Err(SizeError::TooLarge(text.into())),
                "{text:?}"
            );
            let message = parse_size(text).unwrap_err().to_string();
            assert!(message.contains(text), "{message}");
        }

        for text in ["1.5", "0.5B", "1.000001"] {
            assert_eq!(parse_size(text), Err(SizeError::Fraction(text.into())));
        }
        for text in [
            "", " ", "GiB", "-5GiB", "+5", "1e9", "5 0GiB", "5GiB!", "1,5GiB", "½GiB",
        ] {
            assert!(
                matches!(
                    parse_size(text),
                    Err(SizeError::Syntax(_) | SizeError::Unit { .. })
                ),
                "{text:?}: {:?}",
                parse_size(text)
            );
        }
        assert_eq!(
            parse_size("5 gibibytes"),
            Err(SizeError::Unit {
                text: "5 gibibytes".into(),
                unit: "gibibytes".into()
            })
        );
    }

    #[test]
    fn durations_with_units_are_exact() {
        let ok: &[(&str, Duration)] = &[
            ("300", Duration::from_secs(300)),
            (" 0.5 ", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("2min", Duration::from_secs(120)),
            ("90s", Duration::from_secs(90)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("1d", Duration::from_secs(86_400)),
            ("0s", Duration::ZERO),
            ("0.000000001s", Duration::from_nanos(1)),
            ("0.0000000001s", Duration::ZERO),
            ("2M", Duration::from_secs(120)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(*want), "{text:?}");
        }
        for text in [
            "",
            "m",
            "2 minutes",
            "1h30",
            "-5s",
            "5s!",
            "1e3s",
            "3650d",
            "99999999999999999999999h",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains(&format!("{text:?}")), "{text:?}: {e}");
        }
        for d in [
            Duration::ZERO,
            Duration::from_secs(120),
            Duration::from_secs(5400),
            Duration::from_millis(250),
            Duration::from_millis(1500),
            Duration::from_secs(86_400 + 1),
        ] {
            assert_eq!(parse_duration(&human_duration(d)), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn durations_are_exact_and_in_range() {
        let zero = Min::AtLeast(Duration::ZERO);
        let second = Min::AtLeast(Duration::from_secs(1));
        assert_eq!(duration(Seconds::Whole(0), zero), Ok(Duration::ZERO));
        assert_eq!(
            duration(Seconds::Whole(315_359_999), zero),
            Ok(Duration::from_secs(315_359_999))
        );
        assert_eq!(
            duration(Seconds::Fraction(0.5), zero),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            duration(Seconds::Fraction(1.0), second),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(
            duration(Seconds::Whole(1), Min::AboveZero),
            Ok(Duration::from_secs(1))
        );
        for (value, min) in [
            (Seconds::Whole(315_360_000), zero),
            (Seconds::Whole(u64::MAX), zero),
            (Seconds::Fraction(1e19), zero),
            (Seconds::Fraction(315_360_000.0), zero),
            (Seconds::Fraction(f64::INFINITY), zero),
            (Seconds::Fraction(f64::NAN), zero),
            (Seconds::Fraction(-1.0), zero),
            (Seconds::Whole(0), second),
            (Seconds::Fraction(0.999), second),
            (Seconds::Fraction(1e-9), second),
            (Seconds::Fraction(1e-10), second),
            (Seconds::Whole(0), Min::AboveZero),
            (Seconds::Fraction(1e-10), Min::AboveZero),
        ] {
            assert!(
                duration(value, min).is_err(),
                "{value:?} {min:?}: {:?}",
                duration(value, min)
            );
        }
        // The guarantee the rest of the program relies on.
        assert!(i64::try_from(MAX_DURATION.as_secs()).is_ok());
    }
}
