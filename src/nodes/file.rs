//! Nodes from a `kubectl get nodes -o json` dump.

use super::{About, Ingest, Loudness, report_failure};
use crate::analysis::list::ListDigests;
use crate::analysis::{NodeSummary, NodeView};
use crate::decode::lenient::{not_a_list_message, truncate};
use crate::decode::stream::each_item;
use crate::metrics::{Failure, SourceErrorKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// A NodeList (`kind: List` or `NodeList`) or a single Node; the items are
/// delimited, not decoded, here.
#[derive(Deserialize)]
struct Document<'a> {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, borrow, deserialize_with = "raw")]
    items: Option<&'a RawValue>,
}

/// The value as it is in the text; `null` too (an empty list).
fn raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// One item of a dump: a node, or its index and why it could not be decoded.
pub type Item = Result<NodeView, (usize, String)>;

/// Why a dump is unusable as a whole.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("expected a NodeList or List object (kubectl get nodes -o json); got a JSON array")]
    Array,
    #[error("not a JSON object: {0}")]
    NotAnObject(serde_json::Error),
    /// A single Node (`kind: Node`) that cannot be decoded.
    #[error("{0}")]
    Node(serde_json::Error),
    /// `items` is not a list but this (`"an object"`, `"a string"`...).
    #[error("items: {}", not_a_list_message(.0))]
    ItemsNotAList(&'static str),
    #[error("items: {0}")]
    Items(serde_json::Error),
    #[error(
        "expected a NodeList (kubectl get nodes -o json) with items, found kind {}",
        .0.as_deref().unwrap_or("<none>")
    )]
    NotANodeList(Option<String>),
}

/// Decodes a dump. `Err` when the input is unusable as a whole; nodes that cannot be
/// decoded are returned as `Err((index, reason))` beside the good ones.
pub fn decode(bytes: &[u8]) -> Result<Vec<Item>, DumpError> {
    let mut items = Vec::new();
    decode_each(bytes, |item| items.push(item))?;
    Ok(items)
}

/// [`decode`], handing each item to `on_item` as soon as it is decoded, so that
/// the dump is never held decoded: each node is decoded from its slice of
/// `bytes` (under [`Ingest::decoding`], only what its summary needs is kept)
/// and can be summarized and dropped before the next. `on_item` is only called
/// once the document as a whole is known to be usable.
pub fn decode_each(bytes: &[u8], mut on_item: impl FnMut(Item)) -> Result<(), DumpError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return Err(DumpError::Array);
    }
    let doc: Document = serde_json::from_slice(bytes).map_err(DumpError::NotAnObject)?;
    match (doc.kind.as_deref(), doc.items) {
        (Some("Node"), _) => {
            let node: NodeView = serde_json::from_slice(bytes).map_err(DumpError::Node)?;
            on_item(Ok(node));
            Ok(())
        }
        (_, Some(items)) => {
            let text = items.get();
            let what = match text.as_bytes().first() {
                Some(b'[') => None,
                Some(b'n') => return Ok(()),
                Some(b'{') => Some("an object"),
                Some(b'"') => Some("a string"),
                Some(b't' | b'f') => Some("a boolean"),
                _ => Some("a number"),
            };
            if let Some(what) = what {
                return Err(DumpError::ItemsNotAList(what));
            }
            // Each item decoded from its slice of `bytes` as soon as it is
            // delimited (the document is known to be well-formed by now).
            each_item(text, |i, item| {
                let text = item.get();
                on_item(serde_json::from_str::<NodeView>(text).map_err(|e| {
                    (
                        i,
                        format!("{}: {}", truncate(&e.to_string(), 100), truncate(text, 60)),
                    )
                }));
            })
            .map_err(DumpError::Items)?;
            Ok(())
        }
        (kind, None) => Err(DumpError::NotANodeList(kind.map(str::to_string))),
    }
}

/// Largest dump read unless told otherwise (`serve --max-nodes-file-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Why a dump could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is known to be larger than the limit before it is read.
    #[error("{size} bytes, above the limit of {max} (--max-nodes-file-bytes)")]
    AboveLimit { size: u64, max: u64 },
    /// More than the limit was read (a file growing, or standard input).
    #[error("more than {0} bytes, the limit (--max-nodes-file-bytes)")]
    PastLimit(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why `--nodes-file` could not be loaded: counted as a `file` source error.
#[derive(Debug, thiserror::Error)]
pub enum NodesFileError {
    #[error("standard input: {0}")]
    Stdin(ReadError),
    #[error("{path}: {1}", path = .0.display())]
    Read(PathBuf, ReadError),
    #[error("{path}: {1}", path = .0.display())]
    Decode(PathBuf, DumpError),
}

impl Failure for NodesFileError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::File
    }
}

/// Reads at most `max` bytes from `reader`; more is an error, not a truncation.
fn read_bounded(
    reader: impl std::io::Read,
    max: u64,
    size_hint: u64,
) -> Result<Vec<u8>, ReadError> {
    if size_hint > max {
        return Err(ReadError::AboveLimit {
            size: size_hint,
            max,
        });
    }
    let mut buf = Vec::with_capacity(size_hint.min(max) as usize);
    std::io::Read::read_to_end(&mut reader.take(max.saturating_add(1)), &mut buf)?;
    if buf.len() as u64 > max {
        return Err(ReadError::PastLimit(max));
    }
    Ok(buf)
}

/// Reads and decodes a dump (`-` is standard input) and summarizes its nodes.
pub fn load(path: &Path, ingest: &Ingest) -> Result<Loaded, NodesFileError> {
    load_bounded(path, ingest, DEFAULT_MAX_BYTES)
}

/// [`load`], refusing a dump larger than `max_bytes`.
pub fn load_bounded(
    path: &Path,
    ingest: &Ingest,
    max_bytes: u64,
) -> Result<Loaded, NodesFileError> {
    let bytes = if path == Path::new("-") {
        read_bounded(std::io::stdin(), max_bytes, 0).map_err(NodesFileError::Stdin)?
    } else {
        let unreadable = |e| NodesFileError::Read(path.to_path_buf(), e);
        let file = std::fs::File::open(path).map_err(|e| unreadable(ReadError::Io(e)))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        read_bounded(file, max_bytes, size).map_err(unreadable)?
    };
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = false;
    let (decoded, out) = ingest.batch(|batch| {
        decode_each(&bytes, |node| match node {
            Ok(view) => {
                if let Some(name) = batch.add(&view)
                    && !seen.insert(name.to_string())
                {
                    ingest.undecodable(name, "duplicate node name; the last one is kept");
                    duplicates = true;
                }
            }
            Err((i, e)) => ingest.undecodable(&format!("items[{i}]"), &e),
        })
    });
    ingest.list_done();
    decoded.map_err(|e| NodesFileError::Decode(path.to_path_buf(), e))?;
    let (mut nodes, digests) = out.finish();
    if duplicates {
        nodes = last_of_each_name(nodes);
    }
    Ok(Loaded { nodes, digests })
}

/// A nodes file's summaries, and the digests the wanted images are known by
/// in it ([`ListSummaries::finish`](crate::analysis::list::ListSummaries::finish)).
pub struct Loaded {
    pub nodes: Vec<NodeSummary>,
    pub digests: Option<ListDigests>,
}

/// `nodes` with only the last summary of each name, in their order.
fn last_of_each_name(nodes: Vec<NodeSummary>) -> Vec<NodeSummary> {
    let last: std::collections::HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let keep: Vec<bool> = (0..nodes.len())
        .map(|i| last.get(nodes[i].name.as_str()) == Some(&i))
        .collect();
    drop(last);
    nodes
        .into_iter()
        .zip(keep)
        .filter_map(|(n, k)| k.then_some(n))
        .collect()
}

/// What identifies a version of the file: its modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads the file, then reloads it whenever it changes, until shutdown. A file that
/// cannot be read or decoded (or is larger than `max_bytes`) is counted and logged,
/// and the last good data is kept. After every load, good or bad, freed heap
/// memory is returned to the system: a huge file must not leave the process at
/// its peak size.
pub async fn run(
    path: PathBuf,
    check_every: Duration,
    max_bytes: u64,
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) {
    let mut last: Option<(SystemTime, u64)> = None;
    let mut failed_stamp: Option<Option<(SystemTime, u64)>> = None;
    let mut tick = tokio::time::interval(check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resyncs = ingest.store.resyncs();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = resyncs.requested() => {
                // Summarize the nodes again for the wanted images' repositories.
                last = None;
                failed_stamp = None;
            }
            _ = shutdown.cancelled() => return,
        }
        let now = stamp(&path);
        if now.is_some() && now == last {
            // Unchanged and still readable: the data is current.
            ingest.store.touch();
            continue;
        }
        // Do not log the same broken version of the file every tick.
        if failed_stamp == Some(now) {
            continue;
        }
        let p = path.clone();
        let result = tokio::task::block_in_place(|| load_bounded(&p, &ingest, max_bytes));
        match result {
            Ok(loaded) => {
                let nodes = loaded.nodes.len();
                tracing::info!(path = %path.display(), nodes, "loaded nodes file");
                tokio::task::block_in_place(|| {
                    ingest.store.replace_list(loaded.nodes, loaded.digests);
                    crate::sys::release_free_memory();
                });
                last = now;
                failed_stamp = None;
            }
            Err(e) => {
                let what = "cannot load nodes file, keeping the last good data";
                let failed = || failed_stamp = Some(now);
                report_failure(
                    &ingest.metrics,
                    &e,
                    failed,
                    Loudness::Error,
                    About::File(&path),
                    what,
                );
                tokio::task::block_in_place(crate::sys::release_free_memory);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_shipped_example() {
        let nodes = decode(include_bytes!("../../examples/nodes.json")).unwrap();
        assert_eq!(nodes.len(), 6);
        assert!(nodes.iter().all(|n| n.is_ok()));
    }

    #[test]
    fn a_bad_item_does_not_lose_the_others() {
        let text = br#"{"kind":"List","items":[{"metadata":{"name":"a"}}, 42, {"metadata":"x"}, {"metadata":{"name":"b"}}]}"#;
        let nodes = decode(text).unwrap();
        assert_eq!(nodes.len(), 4);
        assert!(nodes[0].is_ok() && nodes[3].is_ok());
        assert!(matches!(nodes[1], Err((1, _))));
        assert!(matches!(nodes[2], Err((2, _))));
    }

    #[test]
    fn single_node_and_unusable_documents() {
        let one = decode(br#"{"kind":"Node","metadata":{"name":"solo"}}"#).unwrap();
        assert_eq!(
            one[0].as_ref().unwrap().metadata.name.as_deref(),
            Some("solo")
        );
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{\"kind\":\"Pod\"}",
            b"{\"items\":{}}",
            b"",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let e = decode(b"{\"kind\":\"PodList\"}").unwrap_err().to_string();
        assert!(e.contains("PodList"), "{e}");
        let e = decode(b" [{\"metadata\":{\"name\":\"a\"}}]")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "expected a NodeList or List object (kubectl get nodes -o json); got a JSON array"
        );
    }

    /// Arbitrary JSON, nested a few levels.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            "[0-9]{1,4}(Ki|Gi|e3|m)?".prop_map(serde_json::Value::from),
            "[a-z./:@]{1,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-zA-Z-]{1,10}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn decode_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        /// Random values where a node's fields go: every item is decoded or
        /// reported, and summarizing never panics.
        #[test]
        fn decode_and_summarize_never_panic(
            status in json_value(),
            images in json_value(),
            names in json_value(),
            size in json_value(),
            storage in json_value(),
            spec in json_value(),
            extra in json_value(),
        ) {
            let items = serde_json::json!([
                {"metadata": {"name": "a"}, "status": status, "spec": spec},
                {"metadata": {"name": "b"}, "status": {"images": images, "capacity": {"ephemeral-storage": storage}}},
                {"metadata": {"name": "c"}, "status": {"images": [{"names": names, "sizeBytes": size}],
                    "allocatable": storage}},
                extra,
            ]);
            let doc = serde_json::json!({"kind": "List", "items": items});
            let decoded = decode(doc.to_string().as_bytes()).unwrap();
            prop_assert_eq!(decoded.len(), 4);
            let wanted = crate::analysis::Relevance::new(
                &crate::analysis::wanted::tests::wanted(&["busybox:1"], &["^x"], &[]),
                [],
            );
            for n in decoded.iter().flatten() {
                let _ = crate::analysis::summarize(n, &wanted);
            }
            prop_assert!(decoded[1].is_ok() && decoded[2].is_ok(), "fields are lenient");
        }
    }

    #[test]
    fn reads_are_bounded() {
        assert_eq!(read_bounded(&b"abcd"[..], 4, 4).unwrap(), b"abcd");
        assert_eq!(read_bounded(&b"abcd"[..], 4, 0).unwrap(), b"abcd");
        let e = read_bounded(&b"abcde"[..], 4, 0).unwrap_err().to_string();
        assert!(e.contains("more than 4 bytes"), "{e}");
        let e = read_bounded(&b""[..], 4, 5).unwrap_err().to_string();
        assert!(e.contains("5 bytes, above the limit of 4"), "{e}");
    }

    /// A nodes file naming a node twice keeps its last item, with the
    /// entries held for it, and counts the other.
    #[test]
    fn a_node_named_twice_keeps_its_last_item() {
        use crate::analysis::wanted::tests::wanted;
        let d = |c: char| format!("ghcr.io/x/app@sha256:{}", c.to_string().repeat(64));
        let node = |name: &str, images: serde_json::Value| serde_json::json!({"metadata": {"name": name}, "status": {"images": images}});
        let items = [
            node(
                "a",
                serde_json::json!([{"names": [d('1')], "sizeBytes": 1}]),
            ),
            node(
                "b",
                serde_json::json!([{"names": ["ghcr.io/x/app:1", d('1')], "sizeBytes": 1}]),
            ),
            node(
                "a",
                serde_json::json!([{"names": [d('2')], "sizeBytes": 2}, {"names": [d('1')], "sizeBytes": 1}]),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes.json");
        std::fs::write(
            &path,
            serde_json::json!({"kind": "List", "items": items}).to_string(),
        )
        .unwrap();
        let wanted = Arc::new(wanted(&["ghcr.io/x/app:1"], &[], &[]));
        let metrics = Arc::new(crate::metrics::Metrics::new("x"));
        let ingest = Ingest {
            node_selector: Default::default(),
            metrics: metrics.clone(),
            store: Arc::new(crate::store::Store::new(wanted, 50)),
        };
        let loaded = load(&path, &ingest).unwrap();
        let names: Vec<&str> = loaded.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        let a = &loaded.nodes[1];
        assert_eq!(a.image_count, 2, "the last item");
        assert_eq!(
            a.relevant_images.len(),
            1,
            "its entry known by a wanted tag's digest"
        );
        assert_eq!(a.relevant_images[0].size().get(), Some(1));
        assert!(loaded.digests.is_some());
    }

    #[test]
    fn empty_list_is_fine() {
        assert!(decode(br#"{"kind":"List","items":[]}"#).unwrap().is_empty());
        assert!(
            decode(br#"{"kind":"NodeList","items":null}"#)
                .unwrap()
                .is_empty()
        );
    }
}
