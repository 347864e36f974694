//! Kubernetes resource quantities (`102687672Ki`, `95551679124`, `1.5Ti`, `1e12`, `500m`),
//! parsed exactly, with no float, and rounded up to whole bytes as Kubernetes does.
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

/// A parsed quantity, exactly, as Kubernetes' `resource.Quantity` keeps it:
/// `±digits × 10^-scale × 2^exp2`. `digits` are decimal digits without leading or
/// trailing zeros (none for zero), so equal decimal quantities (`1e12`, `1T`,
/// `1000G`) compare equal. No float is involved anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    digits: Vec<u8>,
    scale: i64,
    exp2: u32,
}

impl Quantity {
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The value as whole bytes, rounded up as Kubernetes' `Value()` does.
    pub fn to_bytes(&self, original: &str) -> Result<u64, QuantityError> {
        let out_of_range = || QuantityError::OutOfRange(original.to_string());
        if self.is_zero() {
            return Ok(0);
        }
        if self.negative {
            return Err(QuantityError::Negative(original.to_string()));
        }
        let len = self.digits.len() as i64;
        if self.scale <= 0 {
            // A whole number: digits followed by -scale zeros. 10^20 > 2^64.
            if len - self.scale > 20 {
                return Err(out_of_range());
            }
            let mut v: u128 = 0;
            for &d in &self.digits {
                v = v * 10 + u128::from(d);
            }
            for _ in 0..-self.scale {
                v *= 10;
            }
            // v < 10^20 < 2^67 and exp2 <= 60: the shift stays inside u128.
            return u64::try_from(v << self.exp2).map_err(|_| out_of_range());
        }
        // Fractional digits: multiply by 2^exp2 in decimal, then split at the point.
        let mut digits = self.digits.clone();
        for _ in 0..self.exp2 {
            double(&mut digits);
        }
        let int_len = digits.len() as i64 - self.scale;
        if int_len > 20 {
            return Err(out_of_range());
        }
        let (int, frac) = digits.split_at(int_len.max(0) as usize);
        let mut v: u128 = 0;
        for &d in int {
            v = v * 10 + u128::from(d);
        }
        // The digits have no trailing zeros, and doubling keeps a non-zero last
        // digit non-zero, so any fractional digit means a fraction: round up.
        if frac.iter().any(|&d| d != 0) {
            v += 1;
        }
        u64::try_from(v).map_err(|_| out_of_range())
    }
}

/// Multiplies a big-endian decimal digit string by two in place.
fn double(digits: &mut Vec<u8>) {
    let mut carry = 0;
    for d in digits.iter_mut().rev() {
        let x = *d * 2 + carry;
        *d = x % 10;
        carry = x / 10;
    }
    if carry > 0 {
        digits.insert(0, carry);
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.negative {
            f.write_str("-")?;
        }
        if self.digits.is_empty() {
            f.write_str("0")?;
        }
        for d in &self.digits {
            write!(f, "{d}")?;
        }
        write!(f, "e{}", -self.scale)?;
        if self.exp2 > 0 {
            write!(f, "*2^{}", self.exp2)?;
        }
        Ok(())
    }
}

/// Longest exponent accepted; quantities this large are meaningless.
const MAX_EXPONENT_DIGITS: usize = 6;

/// Longest quantity accepted. The grammar has no bound, but nothing a kubelet
/// reports comes near, and it bounds the work of the exact arithmetic.
const MAX_LEN: usize = 128;

/// Parses a quantity of the grammar above, exactly: its sign, its digits and
/// the exponents its suffix stands for.
pub fn parse_quantity(input: &str) -> Result<Quantity, QuantityError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    if s.len() > MAX_LEN {
        return Err(QuantityError::OutOfRange(input.to_string()));
    }
    let number = Number::split(s);
    if number.int_part.is_empty() && number.frac_part.is_empty() {
        return Err(QuantityError::NoDigits(input.to_string()));
    }
    let (exp10, exp2) = suffix_exponents(input, number.suffix)?;
    Ok(number.quantity(exp10, exp2))
}

/// A quantity string cut into its parts, not yet checked.
struct Number<'a> {
    negative: bool,
    /// The digits before the point (possibly none).
    int_part: &'a str,
    /// The digits after the point (none without a point).
    frac_part: &'a str,
    /// Whatever follows the number.
    suffix: &'a str,
}

impl<'a> Number<'a> {
    /// Cuts non-empty `s` after its sign, its integer digits, and its point and
    /// fractional digits, if any.
    fn split(s: &'a str) -> Number<'a> {
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
        Number {
            negative,
            int_part,
            frac_part,
            suffix: &s[i..],
        }
    }

    /// The quantity `self × 10^exp10 × 2^exp2`, with its digits stripped of
    /// leading and trailing zeros (and zero never negative).
    fn quantity(&self, exp10: i64, exp2: u32) -> Quantity {
        let mut digits: Vec<u8> = self
            .int_part
            .bytes()
            .chain(self.frac_part.bytes())
            .map(|b| b - b'0')
            .skip_while(|&d| d == 0)
            .collect();
        let mut scale = self.frac_part.len() as i64 - exp10;
        while digits.last() == Some(&0) {
            digits.pop();
            scale -= 1;
        }
        if digits.is_empty() {
            return Quantity {
                negative: false,
                digits,
                scale: 0,
                exp2: 0,
            };
        }
        Quantity {
            negative: self.negative,
            digits,
            scale,
            exp2,
        }
    }
}

/// The decimal and binary exponents `suffix` stands for: an SI suffix or a
/// decimal exponent ([`parse_exponent`]).
fn suffix_exponents(input: &str, suffix: &str) -> Result<(i64, u32), QuantityError> {
    Ok(match suffix {
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
    })
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
        let cases: &[(&str, u64)] = &[
            ("1Ki", 1024),
            ("1Mi", 1_048_576),
            ("1Gi", 1_073_741_824),
            ("1Ti", 1_099_511_627_776),
            ("1Pi", 1_125_899_906_842_624),
            ("1Ei", 1_152_921_504_606_846_976),
            ("1n", 1),
            ("1u", 1),
            ("1500m", 2),
            ("1k", 1_000),
            ("1M", 1_000_000),
            ("1G", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1E3", 1_000),
            ("1e-3", 1),
            ("1e+3", 1_000),
            ("2.5e2", 250),
            (".5", 1),
            ("5.", 5),
            ("+7", 7),
            ("0.000", 0),
            ("-0", 0),
            ("000123.4500e1", 1235),
        ];
        for (s, want) in cases {
            assert_eq!(parse_bytes(s), Ok(*want), "{s}");
        }
        assert_eq!(parse_quantity("1e12"), parse_quantity("1T"));
        assert_eq!(parse_quantity("1000G"), parse_quantity("1T"));
        assert_eq!(parse_quantity("1500m"), parse_quantity("1.5"));
    }

    /// Where a float would round, Kubernetes is exact and rounds up.
    #[test]
    fn exact_where_a_float_is_not() {
        assert_eq!(parse_bytes("1.0000000000000001Ki"), Ok(1025));
        assert_eq!(parse_bytes("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_bytes("17361141759.0000001"), Ok(17_361_141_760));
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
        assert!(matches!(
            parse_bytes("18446744073709551616"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_bytes("18446744073709551615.1"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert_eq!(parse_bytes("15Ei"), Ok(15 << 60));
        assert_eq!(parse_bytes("0.5Ki"), Ok(512));
        assert_eq!(parse_bytes("0.0001Ki"), Ok(1), "0.1024 rounds up");
        assert_eq!(parse_bytes("1e-999999"), Ok(1));
        assert!(matches!(
            parse_bytes(&"9".repeat(200)),
            Err(QuantityError::OutOfRange(_))
        ));
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
        // A valid quantity (exact, no float to overflow), but no byte count.
        assert!(parse_quantity("1e400").is_ok());
        assert!(matches!(
            parse_bytes("1e400"),
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
        fn integers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_bytes(&n.to_string()), Ok(n));
        }

        /// `i.f`: the integer, plus one when any fractional digit is not zero.
        #[test]
        fn decimals_round_up(i in 0u64..u64::MAX, f in "[0-9]{1,40}") {
            let want = if f.bytes().any(|b| b != b'0') { i + 1 } else { i };
            prop_assert_eq!(parse_bytes(&format!("{i}.{f}")), Ok(want));
        }

        /// `i.f` with a binary suffix, against u128 arithmetic on a short fraction.
        #[test]
        fn binary_fractions_are_exact(i in 0u64..(1 << 20), f in 0u32..1000, k in 1u32..=4) {
            let suffix = ["Ki", "Mi", "Gi", "Ti"][(k - 1) as usize];
            let scaled = (u128::from(i) * 1000 + u128::from(f)) << (10 * k);
            let want = scaled.div_ceil(1000) as u64;
            prop_assert_eq!(parse_bytes(&format!("{i}.{f:03}{suffix}")), Ok(want));
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
