//! Kubernetes label selectors in their string form (`a=b,c!=d,e,!f,g in (x,y),h notin (z)`).
//!
//! The same selector is sent to the API server and applied to nodes read from a file,
//! so both sources select the same nodes.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {input:?}: {reason}")]
pub struct SelectorError {
    pub input: String,
    pub reason: SelectorReason,
}

/// What is wrong in a label selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorReason {
    #[error("nested parentheses")]
    NestedParentheses,
    #[error("unbalanced ')'")]
    UnbalancedClose,
    #[error("unbalanced '('")]
    UnbalancedOpen,
    #[error("empty requirement")]
    EmptyRequirement,
    /// A key followed by something other than a set.
    #[error("expected `in (...)` or `notin (...)` after {0:?}")]
    ExpectedSet(String),
    #[error("missing ')'")]
    MissingClose,
    #[error("unknown operator {0:?}")]
    UnknownOperator(String),
    #[error("invalid label key prefix {0:?}")]
    KeyPrefix(String),
    #[error("invalid label key {0:?}")]
    Key(String),
    #[error("invalid label value {0:?}")]
    Value(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches<'a>(&self, get: &impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
        }
    }
}

/// A conjunction of requirements; the empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let mut requirements = Vec::with_capacity(map.len());
        for (k, v) in map {
            let err = |reason: SelectorReason| SelectorError {
                input: format!("{k}={v}"),
                reason,
            };
            validate_key(k).map_err(err)?;
            validate_value(v).map_err(err)?;
            requirements.push(Requirement::Equals(k.clone(), v.clone()));
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_by(|k| labels.get(k).map(String::as_str))
    }

    /// Whether labels read through `get` (the value of a key, if set) match.
    pub fn matches_by<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(&get))
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: SelectorReason| SelectorError {
            input: input.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        for clause in split_clauses(input).map_err(err)? {
            let clause = clause.trim();
            if clause.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(err(SelectorReason::EmptyRequirement));
            }
            requirements.push(parse_requirement(clause).map_err(err)?);
        }
        Ok(LabelSelector { requirements })
    }
}

/// Splits at commas that are not inside parentheses.
fn split_clauses(input: &str) -> Result<Vec<&str>, SelectorReason> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => {
                if depth > 0 {
                    return Err(SelectorReason::NestedParentheses);
                }
                depth += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or(SelectorReason::UnbalancedClose)?
            }
            ',' if depth == 0 => {
                out.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorReason::UnbalancedOpen);
    }
    out.push(&input[start..]);
    Ok(out)
}

fn parse_requirement(clause: &str) -> Result<Requirement, SelectorReason> {
    if let Some(key) = clause.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement::NotExists(key.to_string()));
    }
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = clause.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            validate_key(k)?;
            validate_value(v)?;
            return Ok(ctor(k.to_string(), v.to_string()));
        }
    }
    let mut words = clause.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    if rest.is_empty() {
        validate_key(key)?;
        return Ok(Requirement::Exists(key.to_string()));
    }
    let (op, values) = rest
        .split_once('(')
        .ok_or_else(|| SelectorReason::ExpectedSet(key.to_string()))?;
    let values = values
        .strip_suffix(')')
        .ok_or(SelectorReason::MissingClose)?;
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        validate_value(v)?;
    }
    validate_key(key)?;
    match op.trim() {
        "in" => Ok(Requirement::In(key.to_string(), values)),
        "notin" => Ok(Requirement::NotIn(key.to_string(), values)),
        other => Err(SelectorReason::UnknownOperator(other.to_string())),
    }
}

/// `[prefix/]name`: prefix a DNS subdomain, name 1-63 of `[A-Za-z0-9_.-]` starting and
/// ending alphanumeric.
fn validate_key(key: &str) -> Result<(), SelectorReason> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(SelectorReason::KeyPrefix(p.to_string()));
        }
    }
    if name.is_empty() || !is_label_name(name) {
        return Err(SelectorReason::Key(key.to_string()));
    }
    Ok(())
}

fn validate_value(v: &str) -> Result<(), SelectorReason> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(SelectorReason::Value(v.to_string()))
    }
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

impl fmt::Display for LabelSelector {
    /// The canonical string form, as the API server's `labelSelector` parameter takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
                Requirement::In(k, vs) => write!(f, "{k} in ({})", vs.join(","))?,
                Requirement::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(","))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sel(s: &str) -> LabelSelector {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_operator() {
        let l = labels(&[("pool", "lab"), ("nublado.lsst.io/permitted", "true")]);
        assert!(sel("").matches(&l));
        assert!(sel("pool=lab").matches(&l));
        assert!(sel("pool==lab").matches(&l));
        assert!(!sel("pool!=lab").matches(&l));
        assert!(sel("pool").matches(&l));
        assert!(!sel("!pool").matches(&l));
        assert!(sel("!gpu").matches(&l));
        assert!(sel("pool in (lab, other)").matches(&l));
        assert!(!sel("pool notin (lab,other)").matches(&l));
        assert!(sel("gpu notin (yes)").matches(&l));
        assert!(!sel("gpu in (yes)").matches(&l));
        assert!(sel("nublado.lsst.io/permitted=true,pool in (lab)").matches(&l));
        assert!(!sel("nublado.lsst.io/permitted=true,pool in (x)").matches(&l));
    }

    #[test]
    fn display_round_trips() {
        let s = sel("a=b, c!=d,e,!f,g in (x,y),h notin (z)");
        assert_eq!(s.to_string(), "a=b,c!=d,e,!f,g in (x,y),h notin (z)");
        assert_eq!(sel(&s.to_string()), s);
    }

    #[test]
    fn rejects_malformed_selectors() {
        for bad in [
            "a=b,",
            ",",
            "a in (x",
            "a in x)",
            "a foo (x)",
            "a=b=c",
            "A_/b=c",
            "-a=b",
            "a=-b",
            "a in ((x))",
            "a=b c",
        ] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?}");
        }
        let e = "a=b,,c".parse::<LabelSelector>().unwrap_err();
        assert!(e.to_string().contains("a=b,,c"), "{e}");
        assert_eq!(e.reason, SelectorReason::EmptyRequirement);
        let e = "a in ((x))".parse::<LabelSelector>().unwrap_err();
        assert_eq!(e.reason, SelectorReason::NestedParentheses);
        assert_eq!(
            e.to_string(),
            r#"label selector "a in ((x))": nested parentheses"#
        );
    }

    #[test]
    fn from_map_is_equality() {
        let m = labels(&[("nublado.lsst.io/permitted", "true")]);
        let s = LabelSelector::from_map(&m).unwrap();
        assert!(s.matches(&m));
        assert!(!s.matches(&labels(&[])));
        assert!(LabelSelector::from_map(&labels(&[("bad key", "x")])).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,60}") {
            let _ = s.parse::<LabelSelector>();
        }

        #[test]
        fn parse_display_parse_is_stable(s in "[a-z!=, ()]{0,30}") {
            if let Ok(parsed) = s.parse::<LabelSelector>() {
                let again: LabelSelector = parsed.to_string().parse().unwrap();
                prop_assert_eq!(parsed, again);
            }
        }
    }
}
