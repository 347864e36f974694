//! Kubernetes resource quantities (`102687672Ki`, `95551679124`, `1.5Ti`, `1e12`, `500m`).
//!
//! The grammar, from k8s.io/apimachinery/pkg/api/resource:
//!
//! ```text
//! <quantity>        ::= <signedNumber><suffix>
//! <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
//! <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
//! <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
//! <signedNumber>    ::= <sign><numericValue> | <numericValue>
//! <numericValue>    ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
//! ```

use std::fmt;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("empty quantity")]
    Empty,
    #[error("quantity {0:?} has no digits")]
    NoDigits(String),
    #[error("quantity {0:?} has an unknown suffix {1:?}")]
    BadSuffix(String, String),
    #[error("quantity {0:?} is out of range")]
    OutOfRange(String),
    #[error("quantity {0:?} is negative")]
    Negative(String),
}

/// A parsed quantity, as a float of its value in base units.
///
/// Binary suffixes multiply by a power of two, which is exact in `f64`; the decimal
/// mantissa and exponent are handed to Rust's correctly rounding float parser in one
/// piece, so `1e12`, `1T` and `1000G` give the very same value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity(f64);

impl Quantity {
    pub fn value(self) -> f64 {
        self.0
    }

    /// The value as whole bytes, rounded up as Kubernetes' `Value()` does.
    pub fn to_bytes(self, original: &str) -> Result<u64, QuantityError> {
        if self.0 < 0.0 {
            return Err(QuantityError::Negative(original.to_string()));
        }
        let v = self.0.ceil();
        // 2^64 is exactly representable; anything at or above it does not fit.
        if v >= 18_446_744_073_709_551_616.0 {
            return Err(QuantityError::OutOfRange(original.to_string()));
        }
        Ok(v as u64)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Longest exponent accepted; quantities this large are meaningless and it keeps the
/// decimal string handed to the float parser small.
const MAX_EXPONENT_DIGITS: usize = 6;

pub fn parse_quantity(input: &str) -> Result<Quantity, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes[0] {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_part = &s[int_start..i];
    let mut frac_part = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_part = &s[frac_start..i];
    }
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits(input.to_string()));
    }
    let suffix = &s[i..];
    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        _ => (parse_exponent(input, suffix)?, 0),
    };
    let int_digits = if int_part.is_empty() { "0" } else { int_part };
    let frac_digits = if frac_part.is_empty() { "0" } else { frac_part };
    let literal = format!("{int_digits}.{frac_digits}e{exp10}");
    let mantissa: f64 = literal
        .parse()
        .map_err(|_| QuantityError::OutOfRange(input.to_string()))?;
    let value = mantissa * f64::from(2u32).powi(exp2 as i32);
    if !value.is_finite() {
        return Err(QuantityError::OutOfRange(input.to_string()));
    }
    Ok(Quantity(if negative { -value } else { value }))
}

/// `e3`, `E-2`, `e+6`: a decimal exponent suffix.
fn parse_exponent(input: &str, suffix: &str) -> Result<i64, QuantityError> {
    let bad = || QuantityError::BadSuffix(input.to_string(), suffix.to_string());
    let rest = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
        .ok_or_else(bad)?;
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_EXPONENT_DIGITS {
        return Err(QuantityError::OutOfRange(input.to_string()));
    }
    let n: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    Ok(sign * n)
}

/// Parses a quantity that must be a non-negative number of bytes.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    parse_quantity(input)?.to_bytes(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_forms_nodes_report() {
        assert_eq!(parse_bytes("102687672Ki"), Ok(102_687_672 * 1024));
        assert_eq!(parse_bytes("95551679124"), Ok(95_551_679_124));
        assert_eq!(parse_bytes("100Gi"), Ok(100 * (1 << 30)));
        assert_eq!(parse_bytes("1e12"), Ok(1_000_000_000_000));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("1.5Ti"), Ok(3 * (1 << 39)));
        assert_eq!(parse_bytes("0"), Ok(0));
    }

    #[test]
    fn every_suffix() {
        let cases: &[(&str, f64)] = &[
            ("1Ki", 1024.0),
            ("1Mi", 1_048_576.0),
            ("1Gi", 1_073_741_824.0),
            ("1Ti", 1_099_511_627_776.0),
            ("1Pi", 1_125_899_906_842_624.0),
            ("1Ei", 1_152_921_504_606_846_976.0),
            ("1n", 1e-9),
            ("1u", 1e-6),
            ("1500m", 1.5),
            ("1k", 1e3),
            ("1M", 1e6),
            ("1G", 1e9),
            ("1T", 1e12),
            ("1P", 1e15),
            ("1E", 1e18),
            ("1E3", 1e3),
            ("1e-3", 1e-3),
            ("1e+3", 1e3),
            ("2.5e2", 250.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("+7", 7.0),
            ("-7", -7.0),
            ("0.000", 0.0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_quantity(s).map(Quantity::value), Ok(*want), "{s}");
        }
    }

    #[test]
    fn rounds_fractional_bytes_up() {
        assert_eq!(parse_bytes("1500m"), Ok(2));
        assert_eq!(parse_bytes("0.1"), Ok(1));
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in [
            "",
            " ",
            "Ki",
            "abc",
            "1KiB",
            "1ki",
            "1 Gi",
            "1.2.3",
            "--1",
            "1e",
            "1e1.5",
            "1Gi3",
            "0x10",
            ".",
            "-",
            "1e99999999999",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            parse_bytes("-1Gi"),
            Err(QuantityError::Negative("-1Gi".into()))
        );
        assert!(matches!(
            parse_bytes("20Ei"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_quantity("1e400"),
            Err(QuantityError::OutOfRange(_))
        ));
    }

    #[test]
    fn error_messages_quote_the_input() {
        let e = parse_quantity("12XB").unwrap_err();
        assert_eq!(
            e.to_string(),
            "quantity \"12XB\" has an unknown suffix \"XB\""
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_quantity(&s);
            let _ = parse_bytes(&s);
        }

        #[test]
        fn never_panics_on_quantity_like_strings(s in "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]{0,12})?") {
            let _ = parse_quantity(&s);
        }

        #[test]
        fn integers_round_trip(n in 0u64..(1u64 << 53)) {
            prop_assert_eq!(parse_bytes(&n.to_string()), Ok(n));
        }

        #[test]
        fn binary_suffixes_are_exact(n in 0u64..(1u64 << 20), k in 1u32..=4) {
            let suffix = ["Ki", "Mi", "Gi", "Ti"][(k - 1) as usize];
            let s = format!("{n}{suffix}");
            prop_assert_eq!(parse_bytes(&s), Ok(n << (10 * k)));
        }

        #[test]
        fn decimal_suffix_equals_exponent(n in 0u64..1_000_000, e in 0usize..6) {
            let suffix = ["", "k", "M", "G", "T", "P"][e];
            let a = parse_quantity(&format!("{n}{suffix}")).unwrap();
            let b = parse_quantity(&format!("{n}e{}", 3 * e)).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
