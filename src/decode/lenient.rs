//! Deserialization that records a malformed field instead of failing the whole object.
//!
//! Node data comes from the API server or from a file someone edited. One odd field
//! (a string where a number belongs, `images: {}`) must cost that field only, so the
//! fields the exporter reads are wrapped in these types and checked by the analysis.

use serde::Deserialize;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A value that is either well-formed or the reason it is not.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    Ok(T),
    Invalid(String),
}

/// A type that can be read leniently. The default buffers the value (small
/// fields only) into a `serde_json::Value` and then interprets it; the types read
/// once per image name or entry read the expected shape directly and buffer only
/// a malformed value, with the same outcome.
pub trait Tolerant: DeserializeOwned {
    fn tolerant<'de, D: Deserializer<'de>>(d: D) -> Result<Lenient<Self>, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(interpret(v))
    }
}

impl<'de, T: Tolerant> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::tolerant(d)
    }
}

/// Reads `v` as a `T`, or says why not.
pub(crate) fn interpret<T: DeserializeOwned>(v: serde_json::Value) -> Lenient<T> {
    match T::deserialize(&v) {
        Ok(t) => Lenient::Ok(t),
        Err(e) => Lenient::Invalid(format!(
            "{}: {}",
            truncate(&e.to_string(), 100),
            truncate(&v.to_string(), 60)
        )),
    }
}

impl Tolerant for bool {}
impl Tolerant for u8 {}

/// The expected shapes of a type read through [`Fast`]; a value of any other shape
/// is buffered and interpreted as [`Tolerant`]'s default does.
pub trait Shape: DeserializeOwned {
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Lenient<Self>, A::Error> {
        let v = serde_json::Value::deserialize(MapAccessDeserializer::new(map))?;
        Ok(interpret(v))
    }
}

/// Reads a [`Shape`] without buffering it when it has an expected shape.
pub fn fast<'de, T: Shape, D: Deserializer<'de>>(d: D) -> Result<Lenient<T>, D::Error> {
    d.deserialize_any(Fast(PhantomData))
}

struct Fast<T>(PhantomData<T>);

impl<'de, T: Shape> Visitor<'de> for Fast<T> {
    type Value = Lenient<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(interpret(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(T::from_i64(v).map_or_else(|| interpret(v.into()), Lenient::Ok))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(T::from_u64(v).map_or_else(|| interpret(v.into()), Lenient::Ok))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(interpret(v.into()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(T::from_str(v).map_or_else(|| interpret(v.into()), Lenient::Ok))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(interpret(serde_json::Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = serde_json::Value::deserialize(SeqAccessDeserializer::new(seq))?;
        Ok(interpret(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::from_map(map)
    }
}

impl Shape for String {
    fn from_str(v: &str) -> Option<Self> {
        Some(v.to_owned())
    }
}

impl Tolerant for String {
    fn tolerant<'de, D: Deserializer<'de>>(d: D) -> Result<Lenient<Self>, D::Error> {
        fast(d)
    }
}

impl Shape for i64 {
    fn from_i64(v: i64) -> Option<Self> {
        Some(v)
    }
    fn from_u64(v: u64) -> Option<Self> {
        i64::try_from(v).ok()
    }
}

impl Tolerant for i64 {
    fn tolerant<'de, D: Deserializer<'de>>(d: D) -> Result<Lenient<Self>, D::Error> {
        fast(d)
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
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

impl<'de, T: Tolerant> Deserialize<'de> for LenientVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVecVisitor(PhantomData::<Owned<T>>))
    }
}

/// How the elements of a [`LenientVec`] are read.
trait ReadElement<'de> {
    type Item;
    fn read<D: Deserializer<'de>>(d: D) -> Result<Lenient<Self::Item>, D::Error>;
}

/// A [`Tolerant`] element.
struct Owned<T>(PhantomData<T>);

impl<'de, T: Tolerant> ReadElement<'de> for Owned<T> {
    type Item = T;
    fn read<D: Deserializer<'de>>(d: D) -> Result<Lenient<T>, D::Error> {
        T::tolerant(d)
    }
}

/// A string element, borrowed from the input when it can be.
struct Text;

impl<'de> ReadElement<'de> for Text {
    type Item = Cow<'de, str>;
    fn read<D: Deserializer<'de>>(d: D) -> Result<Lenient<Cow<'de, str>>, D::Error> {
        text(d)
    }
}

/// Reads one element with `R`.
struct Element<R>(PhantomData<R>);

impl<'de, R: ReadElement<'de>> de::DeserializeSeed<'de> for Element<R> {
    type Value = Lenient<R::Item>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        R::read(d)
    }
}

/// A string as [`Lenient<String>`] reads it, borrowed from the input when it
/// holds no escape (a malformed value gets the same message).
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Lenient<Cow<'de, str>>, D::Error> {
    d.deserialize_any(TextVisitor)
}

/// A [`LenientVec`] of strings, each as [`text`] reads it.
pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<LenientVec<Cow<'de, str>>, D::Error> {
    d.deserialize_any(LenientVecVisitor(PhantomData::<Text>))
}

struct TextVisitor;

/// What [`Fast`] makes of a value that is not a string, for a string.
fn owned<'de>(v: Lenient<String>) -> Lenient<Cow<'de, str>> {
    match v {
        Lenient::Ok(s) => Lenient::Ok(Cow::Owned(s)),
        Lenient::Invalid(e) => Lenient::Invalid(e),
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Lenient<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Lenient::Ok(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Lenient::Ok(Cow::Owned(v.to_owned())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Fast::<String>(PhantomData).visit_bool(v).map(owned)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Fast::<String>(PhantomData).visit_i64(v).map(owned)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Fast::<String>(PhantomData).visit_u64(v).map(owned)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Fast::<String>(PhantomData).visit_f64(v).map(owned)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Fast::<String>(PhantomData).visit_unit().map(owned)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Fast::<String>(PhantomData).visit_seq(seq).map(owned)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Fast::<String>(PhantomData).visit_map(map).map(owned)
    }
}

struct LenientVecVisitor<T>(PhantomData<T>);

/// Why a value that should be a list is not: `what` it is instead.
pub(crate) fn not_a_list_message(what: &str) -> String {
    format!("expected a list, found {what}")
}

impl<'de, R: ReadElement<'de>> LenientVecVisitor<R> {
    fn not_a_list<E>(what: &str) -> Result<LenientVec<R::Item>, E> {
        Ok(LenientVec {
            items: Vec::new(),
            invalid: Some(not_a_list_message(what)),
            was_null: false,
        })
    }
}

impl<'de, R: ReadElement<'de>> Visitor<'de> for LenientVecVisitor<R> {
    type Value = LenientVec<R::Item>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Element::<R>(PhantomData))? {
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
    T: Tolerant,
{
    LenientVec::deserialize(d).map(Some)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value, small.
    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-zA-Z]{0,9}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The unbuffered paths give what buffering and interpreting gives.
        #[test]
        fn fast_paths_match_buffering(v in json_value()) {
            let text = v.to_string();
            // What the buffering path sees (floats as parsed back from the text).
            let v: Value = serde_json::from_str(&text).unwrap();
            let s: Lenient<String> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(s, interpret::<String>(v.clone()));
            let n: Lenient<i64> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(n, interpret::<i64>(v.clone()));
            // And inside a list, as image names are read.
            let list: LenientVec<String> =
                serde_json::from_str(&format!("[{text}, \"x\"]")).unwrap();
            prop_assert_eq!(&list.items[0], &interpret::<String>(v));
            prop_assert_eq!(&list.items[1], &Lenient::Ok("x".to_string()));
        }
    }

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
