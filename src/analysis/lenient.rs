//! Deserialization that records a malformed field instead of failing the whole object.
//!
//! Node data comes from the API server or from a file someone edited. One odd field
//! (a string where a number belongs, `images: {}`) must cost that field only, so the
//! fields the exporter reads are wrapped in these types and checked by the analysis.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// A value that is either well-formed or the reason it is not.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    Ok(T),
    Invalid(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Buffer only this (small) field, then interpret it.
        let v = serde_json::Value::deserialize(d)?;
        Ok(match T::deserialize(&v) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Invalid(format!(
                "{}: {}",
                truncate(&e.to_string(), 100),
                truncate(&v.to_string(), 60)
            )),
        })
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A list whose elements are each [`Lenient`]; `null` is an empty list, and any other
/// non-list value is recorded in `invalid` and skipped without buffering it.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientVec<T> {
    pub items: Vec<Lenient<T>>,
    /// Set when the value was not a list (nor null).
    pub invalid: Option<String>,
    /// The value was an explicit `null`.
    pub was_null: bool,
}

impl<T> Default for LenientVec<T> {
    fn default() -> Self {
        LenientVec {
            items: Vec::new(),
            invalid: None,
            was_null: false,
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for LenientVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVecVisitor(PhantomData))
    }
}

struct LenientVecVisitor<T>(PhantomData<T>);

impl<T> LenientVecVisitor<T> {
    fn not_a_list<E>(what: &str) -> Result<LenientVec<T>, E> {
        Ok(LenientVec {
            items: Vec::new(),
            invalid: Some(format!("expected a list, found {what}")),
            was_null: false,
        })
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for LenientVecVisitor<T> {
    type Value = LenientVec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element::<Lenient<T>>()? {
            items.push(item);
        }
        Ok(LenientVec {
            items,
            invalid: None,
            was_null: false,
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LenientVec {
            was_null: true,
            ..LenientVec::default()
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Self::not_a_list("an object")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Self::not_a_list("a boolean")
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Self::not_a_list("a number")
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Self::not_a_list("a number")
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Self::not_a_list("a number")
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Self::not_a_list("a string")
    }
}

/// Nullable-or-malformed helper: `#[serde(default)] field: Option<Lenient<T>>`.
pub type Field<T> = Option<Lenient<T>>;

/// For `#[serde(default, deserialize_with = "present")]`: an absent field stays `None`,
/// while an explicit `null` reaches `LenientVec` and is marked there.
pub fn present<'de, D, T>(d: D) -> Result<Option<LenientVec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    LenientVec::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct Probe {
        #[serde(default)]
        n: Field<i64>,
        #[serde(default, deserialize_with = "present")]
        list: Option<LenientVec<u8>>,
        ok: bool,
    }

    #[test]
    fn a_bad_field_does_not_fail_the_object() {
        let p: Probe = serde_json::from_str(r#"{"n":"x","list":{"a":[1,2]},"ok":true}"#).unwrap();
        assert!(matches!(p.n, Some(Lenient::Invalid(ref m)) if m.contains("\"x\"")));
        let list = p.list.unwrap();
        assert!(list.items.is_empty());
        assert_eq!(
            list.invalid.as_deref(),
            Some("expected a list, found an object")
        );
        assert!(p.ok, "fields after the bad ones are still read");
    }

    #[test]
    fn bad_elements_are_kept_as_invalid() {
        let p: Probe = serde_json::from_str(r#"{"list":[1,"two",300,3],"ok":false}"#).unwrap();
        let list = p.list.unwrap();
        assert_eq!(list.items.len(), 4);
        assert_eq!(list.items[0], Lenient::Ok(1));
        assert!(matches!(list.items[1], Lenient::Invalid(_)));
        assert!(
            matches!(list.items[2], Lenient::Invalid(_)),
            "300 overflows u8"
        );
        assert_eq!(list.items[3], Lenient::Ok(3));
    }

    #[test]
    fn null_and_missing() {
        let p: Probe = serde_json::from_str(r#"{"n":null,"list":null,"ok":true}"#).unwrap();
        assert!(p.n.is_none());
        let list = p
            .list
            .expect("an explicit null is kept apart from an absent field");
        assert!(list.was_null && list.items.is_empty() && list.invalid.is_none());
        let p: Probe = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert!(p.n.is_none() && p.list.is_none());
    }

    #[test]
    fn long_values_are_truncated_in_messages() {
        let long = format!(r#"{{"n":"{}","ok":true}}"#, "é".repeat(200));
        let p: Probe = serde_json::from_str(&long).unwrap();
        match p.n {
            Some(Lenient::Invalid(m)) => assert!(m.len() < 200 && m.ends_with("..."), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
