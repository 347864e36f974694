//! Decoding a list page (a NodeList, or any Kubernetes list) one item at a time.
//!
//! A page of 500 nodes with 500 images each is about 45 MB of JSON and several
//! times that once decoded. [`list_items`] delimits the page's `items` (slices of
//! the page, no copy); the caller decodes them one at a time and summarizes each
//! node before the next is decoded (`nodes::Ingest::summarize_items`), so the page
//! never exists as a `Vec` of decoded nodes. An item that cannot be decoded costs
//! only itself; a page that is not a well-formed list (truncated, garbage) is an
//! error as a whole, before any item is decoded.

use serde::Deserialize;
#[cfg(test)]
use serde::de::DeserializeOwned;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// What a list page says besides its items.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageMeta {
    /// `metadata.resourceVersion`: where a watch continues from.
    pub resource_version: Option<String>,
    /// `metadata.continue`: the token for the next page; `None` on the last page.
    pub continue_token: Option<String>,
    /// Items in the page, decodable or not.
    pub items: usize,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// One item of a page: the decoded object, or why it could not be decoded.
#[cfg(test)]
pub type Item<T> = Result<T, serde_json::Error>;

/// Decodes a list page (`{"metadata": {...}, "items": [...]}`), calling `on_item`
/// for each item in order: [`list_items`], then each item decoded on its own, as
/// the node source does it, so tests read pages the way it does. A malformed item
/// is reported to `on_item` as an `Err` and the next one is still read. `Err` means
/// the page as a whole is unusable; no item is passed to `on_item` then.
#[cfg(test)]
pub fn decode_list<T: DeserializeOwned>(
    body: &[u8],
    mut on_item: impl FnMut(Item<T>),
) -> Result<PageMeta, serde_json::Error> {
    let (meta, items) = list_items(body)?;
    for raw in items {
        on_item(serde_json::from_str(raw.get()));
    }
    Ok(meta)
}

/// A list page's metadata and its items, delimited (borrowed slices of `body`,
/// no copy) but not decoded: the items can then be decoded on more than one
/// thread. `Err` means the page as a whole is unusable.
pub fn list_items(body: &[u8]) -> Result<(PageMeta, Vec<&RawValue>), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut items = Vec::new();
    let meta = de.deserialize_map(ListVisitor { items: &mut items })?;
    de.end()?;
    Ok((meta, items))
}

/// Walks `list`, a JSON array, handing each item to `on_item` as soon as it is
/// delimited (a borrowed slice of `list`), with its index; returns how many
/// there were. `null` is an empty list.
pub fn each_item(
    list: &str,
    on_item: impl FnMut(usize, &RawValue),
) -> Result<usize, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(list);
    let n = ItemsSeed { on_raw: on_item }.deserialize(&mut de)?;
    de.end()?;
    Ok(n)
}

struct ListVisitor<'a, 'de> {
    items: &'a mut Vec<&'de RawValue>,
}

impl<'de> Visitor<'de> for ListVisitor<'_, 'de> {
    type Value = PageMeta;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a NodeList object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PageMeta, A::Error> {
        let mut meta = PageMeta::default();
        let mut seen_items = false;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Metadata => {
                    let m: Option<ListMeta> = map.next_value()?;
                    let m = m.unwrap_or_default();
                    meta.resource_version = m.resource_version;
                    meta.continue_token = m.continue_token.filter(|t| !t.is_empty());
                }
                Key::Items => {
                    seen_items = true;
                    meta.items += map.next_value_seed(ItemsSeed {
                        on_raw: Keep(&mut *self.items),
                    })?;
                }
                Key::Kind => {
                    let kind: Option<String> = map.next_value()?;
                    // A Status in a 200 answer, or any other object: not a list.
                    if let Some(k) = kind.filter(|k| !k.ends_with("List")) {
                        return Err(de::Error::custom(format!("expected a NodeList, got {k}")));
                    }
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen_items {
            return Err(de::Error::missing_field("items"));
        }
        Ok(meta)
    }
}

enum Key {
    Metadata,
    Items,
    Kind,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "metadata" => Key::Metadata,
                    "items" => Key::Items,
                    "kind" => Key::Kind,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Delimits the items of a list (borrowed slices of the input, no copy) and
/// hands each to `on_raw` with its index.
struct ItemsSeed<F> {
    on_raw: F,
}

/// What an item, delimited, is handed to.
trait OnRaw<'de> {
    fn raw(&mut self, index: usize, raw: &'de RawValue);
}

impl<F: FnMut(usize, &RawValue)> OnRaw<'_> for F {
    fn raw(&mut self, index: usize, raw: &RawValue) {
        self(index, raw)
    }
}

/// Keeps each item's slice.
struct Keep<'a, 'de>(&'a mut Vec<&'de RawValue>);

impl<'de> OnRaw<'de> for Keep<'_, 'de> {
    fn raw(&mut self, _: usize, raw: &'de RawValue) {
        self.0.push(raw);
    }
}

impl<'de, F: OnRaw<'de>> DeserializeSeed<'de> for ItemsSeed<F> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: OnRaw<'de>> Visitor<'de> for ItemsSeed<F> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<usize, A::Error> {
        let mut n = 0;
        // Each item is first delimited, then decoded: a node the projection
        // cannot read fails alone.
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            self.on_raw.raw(n, raw);
            n += 1;
        }
        Ok(n)
    }

    /// `"items": null` is an empty page.
    fn visit_unit<E: de::Error>(self) -> Result<usize, E> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The part of a node these tests read.
    #[derive(Deserialize)]
    struct Named {
        metadata: Meta,
    }

    #[derive(Deserialize)]
    struct Meta {
        name: Option<String>,
    }

    fn names(body: &str) -> Result<(PageMeta, Vec<Result<String, String>>), String> {
        let mut out = Vec::new();
        let meta = decode_list(body.as_bytes(), |item: Item<Named>| {
            out.push(
                item.map(|n| n.metadata.name.unwrap_or_default())
                    .map_err(|e| e.to_string()),
            )
        })
        .map_err(|e| e.to_string())?;
        Ok((meta, out))
    }

    #[test]
    fn reads_items_and_list_metadata_in_any_order() {
        let body = r#"{"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}],
            "kind":"NodeList","apiVersion":"v1",
            "metadata":{"resourceVersion":"42","continue":"tok","remainingItemCount":3}}"#;
        let (meta, items) = names(body).unwrap();
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.continue_token.as_deref(), Some("tok"));
        assert_eq!(meta.items, 2);
        assert_eq!(items, [Ok("a".to_string()), Ok("b".to_string())]);
    }

    #[test]
    fn each_item_is_handed_over_delimited_with_its_index() {
        let mut seen = Vec::new();
        let n = each_item(r#"[1, {"a": [2, "]"]}, null ]"#, |i, raw| {
            seen.push((i, raw.get().to_string()))
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            seen,
            [
                (0, "1".to_string()),
                (1, r#"{"a": [2, "]"]}"#.to_string()),
                (2, "null".to_string())
            ]
        );
        assert_eq!(each_item("null", |_, _| panic!("no item")).unwrap(), 0);
        for bad in ["", "[1,", "{}", "[1] 2"] {
            assert!(each_item(bad, |_, _| {}).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_empty_continue_token_is_the_last_page() {
        let (meta, items) = names(r#"{"metadata":{"continue":""},"items":null}"#).unwrap();
        assert_eq!(meta.continue_token, None);
        assert!(items.is_empty());
    }

    #[test]
    fn a_malformed_item_fails_alone() {
        let body = r#"{"metadata":{},"items":[
            {"metadata":{"name":"a"}},
            {"metadata":"not an object"},
            7,
            {"metadata":{"name":"c"},"status":{"images":[{"names":["x:1"],"sizeBytes":"big"}]}}
        ]}"#;
        let (meta, items) = names(body).unwrap();
        assert_eq!(meta.items, 4);
        assert_eq!(items[0], Ok("a".into()));
        assert!(items[1].is_err(), "{:?}", items[1]);
        assert!(items[2].is_err(), "{:?}", items[2]);
        assert_eq!(items[3], Ok("c".into()), "a bad field costs only the field");
    }

    #[test]
    fn truncated_or_foreign_pages_are_errors() {
        let whole =
            r#"{"metadata":{},"items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b"}}]}"#;
        for cut in 1..whole.len() {
            assert!(names(&whole[..cut]).is_err(), "cut at {cut}");
        }
        assert!(names(whole).is_ok());
        for bad in [
            "",
            "[]",
            "null",
            r#"{"metadata":{}}"#,
            r#"{"kind":"Status","status":"Failure","code":500,"items":[]}"#,
            r#"{"items":{"a":1}}"#,
            r#"{"items":[]} trailing"#,
            "<html>502 Bad Gateway</html>",
        ] {
            assert!(names(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_list(&bytes, |_: Item<Named>| {});
        }

        #[test]
        fn never_panics_on_cut_pages(items in prop::collection::vec(crate::decode::lenient::tests::json_value(), 0..4), cut in any::<prop::sample::Index>()) {
            let body = json!({"metadata": {}, "items": items}).to_string();
            let cut = cut.index(body.len());
            let mut n = 0;
            let r = decode_list(&body.as_bytes()[..cut], |_: Item<Named>| n += 1);
            // A cut page never decodes (only the whole of it is an object).
            prop_assert!(r.is_err() || cut == body.len());
            prop_assert!(n <= items.len());
        }
    }
}
