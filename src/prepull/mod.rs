//! Wanted images from the prepullers themselves: Nublado's status endpoint
//! (polled), kube-fledged `ImageCache`s and prepuller DaemonSets (watched). Each
//! failed read is counted, the source keeps its last good list and shows as down,
//! and it is retried with backoff; the exporter stays ready on node data alone.
//!
//! Each kind of source is one file, holding its `prepull.sources` block, its wire
//! format and its I/O, and one line of [`KINDS`]; [`build`] makes the configured
//! sources for `serve` (which runs them) and `check` (which reads each once).

pub mod daemonsets;
pub mod kube_fledged;
pub mod nublado;
pub mod watch;

use crate::analysis::WantSource;
use crate::analysis::wants::{MAX_IMAGES_PER_SOURCE, Wants};
use crate::client::http::HttpError;
use crate::client::kube_error::{OneLine, WatcherLine};
use crate::config::{Settings, SourceEntry};
use crate::metrics::{Failure, Metrics, SourceErrorKind};
use crate::store::Store;
use futures::future::BoxFuture;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A source of wanted images, as configured: read once by `check`, run until
/// shutdown by `serve`.
pub trait Source: Send + Sync + 'static {
    /// Who wants its images: the `source` label of its metrics.
    fn name(&self) -> WantSource;

    /// Whether it reads the cluster's API server (else it is off without a
    /// Kubernetes client).
    fn needs_cluster(&self) -> bool;

    /// The file a flag gave to read in place of its answer (`--nublado-file`):
    /// `check` takes a failure to read it as bad input.
    fn given_file(&self) -> Option<&Path> {
        None
    }

    /// One read of what it wants (`check`). `client` is the cluster's, when there
    /// is one.
    fn read_once<'a>(
        &'a self,
        client: Option<&'a kube::Client>,
    ) -> BoxFuture<'a, Result<Wants, SourceError>>;

    /// Keeps `sink`'s store current with what it wants until shutdown (`serve`):
    /// each failed read counted and reported through [`Sink::failed`].
    fn run(self: Box<Self>, client: Option<kube::Client>, sink: Sink) -> BoxFuture<'static, ()>;
}

/// A kind of source: its key in `prepull.sources`, its name, and how it is made
/// from its block.
pub struct Kind {
    pub key: &'static str,
    pub name: WantSource,
    /// The source its block configures; a bad block is a [`BlockError`].
    pub from_block: FromBlock,
    /// The source the flags make when the configuration has none of this kind.
    pub unconfigured: fn(&Flags) -> Option<Box<dyn Source>>,
}

/// Makes a kind of source from its block and the flags.
pub type FromBlock = fn(&serde_json::Value, &Flags) -> Result<Box<dyn Source>, BlockError>;

/// Every kind of source of wanted images. A new kind is a file in this directory
/// and a line here.
pub const KINDS: &[Kind] = &[
    Kind {
        key: "nublado",
        name: WantSource::Nublado,
        from_block: nublado::from_block,
        unconfigured: nublado::unconfigured,
    },
    Kind {
        key: "kubeFledged",
        name: WantSource::KubeFledged,
        from_block: kube_fledged::from_block,
        unconfigured: none,
    },
    Kind {
        key: "daemonSets",
        name: WantSource::DaemonSet,
        from_block: daemonsets::from_block,
        unconfigured: none,
    },
];

/// For a kind that only the configuration makes.
fn none(_: &Flags) -> Option<Box<dyn Source>> {
    None
}

/// The `prepull.sources` key of a kind of source.
pub fn key(name: WantSource) -> &'static str {
    KINDS
        .iter()
        .find(|k| k.name == name)
        .map_or(name.as_str(), |k| k.key)
}

/// The flags that stand in for part of the sources' configuration.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flags<'a> {
    /// `--nublado-file`: Nublado's answer read from this file in place of the
    /// configured source's URL, or as that source when the configuration has
    /// none.
    pub nublado_file: Option<&'a Path>,
}

/// The configured sources of wanted images (`prepull.sources`), in the
/// configuration's order, then those only the flags make. A bad entry is an
/// error naming its key, as the configuration file's other errors do.
pub fn build(s: &Settings, flags: &Flags) -> Result<Vec<Box<dyn Source>>, String> {
    from_entries(&s.sources, flags).map_err(|message| s.config_error(message))
}

/// [`build`]'s work: each entry's kind and block, checked and made a source.
fn from_entries(entries: &[SourceEntry], flags: &Flags) -> Result<Vec<Box<dyn Source>>, String> {
    let mut sources: Vec<Box<dyn Source>> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let (kind, block) = entry_kind(entry).map_err(|e| format!("prepull.sources[{i}]{e}"))?;
        let source = (kind.from_block)(block, flags).map_err(|e| match e.field {
            Some(field) => format!("prepull.sources[{i}].{}.{field}: {}", kind.key, e.message),
            None => format!("prepull.sources[{i}].{}: {}", kind.key, e.message),
        })?;
        if sources.iter().any(|s| s.name() == source.name()) {
            return Err(format!(
                "prepull.sources[{i}]: each kind of source may appear once"
            ));
        }
        sources.push(source);
    }
    for kind in KINDS {
        if !sources.iter().any(|s| s.name() == kind.name)
            && let Some(source) = (kind.unconfigured)(flags)
        {
            sources.push(source);
        }
    }
    Ok(sources)
}

/// The kind of one entry (a map with exactly one of the [`KINDS`]' keys) and its
/// block; the error follows the entry's path.
fn entry_kind(entry: &SourceEntry) -> Result<(&'static Kind, &serde_json::Value), String> {
    let keys = || KINDS.iter().map(|k| k.key).collect::<Vec<_>>().join(", ");
    if let Some(unknown) = entry
        .keys()
        .find(|k| !KINDS.iter().any(|kind| kind.key == *k))
    {
        return Err(format!(
            ".{unknown}: unknown field `{unknown}`, expected one of {}",
            keys()
        ));
    }
    let mut given = KINDS
        .iter()
        .filter_map(|kind| entry.block(kind.key).map(|block| (kind, block)));
    match (given.next(), given.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(format!(
            ".entry: a source is a map with exactly one of {}",
            keys()
        )),
    }
}

/// What is wrong with a source's block: the field (`None`: the block as a whole)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockError {
    pub field: Option<String>,
    pub message: String,
}

impl BlockError {
    pub fn field(field: &str, message: impl Into<String>) -> BlockError {
        BlockError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Decodes a source's block (a map) into its raw form; the error names the
/// field.
pub fn decode_block<T: serde::de::DeserializeOwned>(
    block: &serde_json::Value,
) -> Result<T, BlockError> {
    use serde::de::{Error, Unexpected};
    let found = match block {
        serde_json::Value::Object(_) => None,
        serde_json::Value::Array(_) => Some(Unexpected::Seq),
        serde_json::Value::String(s) => Some(Unexpected::Str(s)),
        _ => Some(Unexpected::Other("a scalar")),
    };
    if let Some(found) = found {
        return Err(BlockError {
            field: None,
            message: serde::de::value::Error::invalid_type(found, &"a map").to_string(),
        });
    }
    serde_path_to_error::deserialize(block).map_err(|e| {
        let field = e.path().to_string();
        BlockError {
            field: (field != ".").then_some(field),
            message: e.into_inner().to_string(),
        }
    })
}

/// A text field of a block, read as YAML reads a plain scalar: `namespace: 2024`
/// is the text "2024", as is `namespace: "2024"`.
pub fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    use serde::de::{Error, Unexpected};
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => Ok(v.to_string()),
        serde_json::Value::Null => Err(D::Error::invalid_type(Unexpected::Unit, &"a string")),
        serde_json::Value::Array(_) => Err(D::Error::invalid_type(Unexpected::Seq, &"a string")),
        serde_json::Value::Object(_) => Err(D::Error::invalid_type(Unexpected::Map, &"a string")),
    }
}

/// An optional [`text`] field: absent or null is `None`.
pub fn optional_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match <serde_json::Value as serde::Deserialize>::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v => text(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// A `prepull.sources` string that may be left empty: empty is absent.
pub fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// Why a source of wanted images could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PrepullError {
    /// A file read in place of an answer (`--nublado-file`).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bearer token's file.
    #[error("token file {}: {source}", path.display())]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The answer is not what the source serves.
    #[error("not a {what}: {message}")]
    Decode { what: &'static str, message: String },
    /// The exchange failed: refused, reset, or timed out ("timed out after 10s").
    #[error("{0}")]
    Http(HttpError),
    /// An answer other than success.
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    /// A redirect, never followed.
    #[error("{0}")]
    Redirect(HttpError),
    /// An answer larger than the source may send.
    #[error("the answer is larger than {max} bytes")]
    TooLarge { max: usize },
    /// Decoding off the async workers failed.
    #[error("decoding the answer failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// No HTTP client for the source.
    #[error("cannot build an HTTP client: {0}")]
    Client(String),
    /// A list of the source's objects (`check`).
    #[error("{}", OneLine(.0))]
    List(kube::Error),
    /// The watch of the source's objects, retried with backoff (`serve`).
    #[error("{}{}", WatcherLine(.0), rbac_hint(.0))]
    Watch(kube::runtime::watcher::Error),
    /// An in-cluster source without a Kubernetes client.
    #[error("needs a cluster; not read with --nodes-file")]
    NeedsCluster,
}

/// What to grant when RBAC refused the watch's list or start.
fn rbac_hint(e: &kube::runtime::watcher::Error) -> &'static str {
    use kube::runtime::watcher::Error;
    match e {
        Error::InitialListFailed(kube::Error::Api(s))
        | Error::WatchStartFailed(kube::Error::Api(s))
            if s.code == 403 =>
        {
            " (RBAC: the service account needs get, list and watch on them)"
        }
        _ => "",
    }
}

impl PrepullError {
    /// This error, as `source`'s failure.
    pub fn of(self, source: WantSource) -> SourceError {
        SourceError {
            source,
            error: self,
        }
    }
}

/// A failed read of one source of wanted images: counted under its kind in
/// `imagecap_source_errors_total`.
#[derive(Debug)]
pub struct SourceError {
    pub source: WantSource,
    pub error: PrepullError,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Failure for SourceError {
    fn kind(&self) -> SourceErrorKind {
        SourceErrorKind::Prepull(self.source)
    }
}

/// Where a running source reports: the store its wants go to, the counters, and
/// what stops it.
#[derive(Clone)]
pub struct Sink {
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Sink {
    /// A failed read: counted under its kind, the source shown as down with its
    /// last list kept, and logged at WARN as `heading: error`, with the URL read
    /// and the wait before the next try when there are.
    pub fn failed(
        &self,
        e: &SourceError,
        heading: &str,
        url: Option<&str>,
        retry_in: Option<Duration>,
    ) {
        self.metrics.source_error(e.kind());
        self.store.source_failed(e.source);
        tracing::warn!(
            source = %e.source,
            url,
            retry_in = retry_in.map(tracing::field::debug),
            "{heading}: {e}"
        );
    }
}

/// Logs, once per change, that a source listed more images than it may
/// contribute.
pub fn log_dropped(source: WantSource, dropped: u64, logged: &mut u64) {
    if dropped == *logged {
        return;
    }
    if dropped > 0 {
        tracing::warn!(
            source = %source,
            dropped,
            "the source lists more than {MAX_IMAGES_PER_SOURCE} distinct images; keeping the \
             first {MAX_IMAGES_PER_SOURCE}, {dropped} image references dropped"
        );
    } else {
        tracing::info!(source = %source, "the source lists no more images than the cap again");
    }
    *logged = dropped;
}

/// The cluster's client for an in-cluster source, or why there is none.
pub fn cluster(client: Option<&kube::Client>) -> Result<&kube::Client, PrepullError> {
    client.ok_or(PrepullError::NeedsCluster)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Config;

    /// The sources a configuration makes, or the error `serve` and `check`
    /// report.
    pub(crate) fn sources(text: &str) -> Result<Vec<Box<dyn Source>>, String> {
        let config = Config::parse(text).map_err(|e| e.to_string())?;
        from_entries(&config.sources, &Flags::default())
    }

    /// Checks that a configuration with each `(entries, error)` case's entries
    /// in `prepull.sources` is refused with an error containing `error`.
    pub(crate) fn assert_source_errors(cases: &[(&str, &str)]) {
        for (entries, want) in cases {
            match sources(&format!("prepull:\n  sources: [{entries}]\n")) {
                Ok(_) => panic!("{entries} is accepted"),
                Err(e) => assert!(e.contains(want), "{entries}: {e:?} should contain {want:?}"),
            }
        }
    }

    #[test]
    fn each_entry_is_one_known_kind_once() {
        assert_source_errors(&[
            (
                "{kubeFledged: {}, daemonSets: {}}",
                "prepull.sources[0].entry: a source is a map with exactly one of nublado, \
                 kubeFledged, daemonSets",
            ),
            ("{}", "exactly one"),
            ("{kubeFledged: }", "exactly one"),
            (
                "{puller: {}}",
                "prepull.sources[0].puller: unknown field `puller`, expected one of \
                 nublado, kubeFledged, daemonSets",
            ),
            (
                "{kubeFledged: {}}, {kubeFledged: {namespace: x}}",
                "prepull.sources[1]: each kind of source may appear once",
            ),
            (
                "{kubeFledged: []}",
                "prepull.sources[0].kubeFledged: invalid",
            ),
        ]);
    }

    #[test]
    fn the_table_names_each_kind_once() {
        for (i, kind) in KINDS.iter().enumerate() {
            assert!(
                KINDS[..i]
                    .iter()
                    .all(|k| k.key != kind.key && k.name != kind.name)
            );
            assert_eq!(key(kind.name), kind.key);
        }
    }

    #[test]
    fn every_kind_is_built_in_the_configurations_order() {
        let built = sources(
            "prepull:\n  sources:\n    - daemonSets: {namespace: jhub}\n    \
             - nublado: {url: 'http://n.example/prepulls'}\n    - kubeFledged: {}\n",
        )
        .unwrap();
        let names: Vec<WantSource> = built.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                WantSource::DaemonSet,
                WantSource::Nublado,
                WantSource::KubeFledged
            ]
        );
        let cluster: Vec<bool> = built.iter().map(|s| s.needs_cluster()).collect();
        assert_eq!(cluster, [true, false, true]);
    }

    #[test]
    fn text_fields_read_plain_scalars_as_text() {
        #[derive(serde::Deserialize)]
        struct Block {
            #[serde(deserialize_with = "text")]
            name: String,
            #[serde(default, deserialize_with = "optional_text")]
            other: Option<String>,
        }
        let block: Block = decode_block(&serde_json::json!({"name": 2024, "other": true})).unwrap();
        assert_eq!(
            (block.name.as_str(), block.other.as_deref()),
            ("2024", Some("true"))
        );
        let block: Block = decode_block(&serde_json::json!({"name": "x", "other": null})).unwrap();
        assert_eq!(block.other, None);
        let e = decode_block::<Block>(&serde_json::json!({"name": [1]}))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "name: invalid type: sequence, expected a string"
        );
    }

    #[test]
    fn a_source_failure_names_its_kind() {
        let e = PrepullError::NeedsCluster.of(WantSource::DaemonSet);
        assert_eq!(e.kind(), SourceErrorKind::Prepull(WantSource::DaemonSet));
        assert_eq!(e.to_string(), "needs a cluster; not read with --nodes-file");
    }
}
