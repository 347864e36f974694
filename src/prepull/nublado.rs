//! The Nublado controller's prepuller status (`GET
//! /nublado/spawner/v1/prepulls`, a `PrepullerStatus`), polled: its
//! `prepull.sources[].nublado` block, the decoding of its answer into the images
//! it wants and its spawner menu, and the reading.

use super::{
    BlockError, Flags, PrepullError, Sink, Source, SourceError, decode_block, log_dropped,
};
use crate::analysis::WantSource;
use crate::analysis::eligibility::Eligibility;
use crate::analysis::menu::{Menu, MenuImage};
use crate::analysis::reference::ImageRef;
use crate::analysis::wanted::WantGroup;
use crate::analysis::wants::{ImageSet, MAX_IMAGES_PER_SOURCE, Problems, SourceField, Wants};
use crate::client::http::HttpError;
use crate::config::{positive_duration, read_to_string_limited};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `nublado` block of `prepull.sources`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNublado {
    #[serde(deserialize_with = "super::text")]
    url: String,
    #[serde(default, deserialize_with = "super::optional_text")]
    token_file: Option<String>,
    #[serde(default, deserialize_with = "super::optional_text")]
    interval: Option<String>,
    #[serde(default, deserialize_with = "super::optional_text")]
    timeout: Option<String>,
}

/// Defaults of the `nublado` source.
pub const NUBLADO_INTERVAL: Duration = Duration::from_secs(60);
pub const NUBLADO_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest Nublado status body read; a bigger one is an error.
pub const MAX_NUBLADO_BODY: usize = 32 << 20;

/// Where and how to read Nublado (`prepull.sources[].nublado`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NubladoOptions {
    pub url: String,
    /// A saved answer read in place of the URL (`--nublado-file`), again at
    /// every interval.
    pub file: Option<PathBuf>,
    /// Sent as a bearer token; read again on every request (rotation).
    pub token_file: Option<PathBuf>,
    pub interval: Duration,
    pub timeout: Duration,
}

impl NubladoOptions {
    /// Reads Nublado's answer from `path` in place of the URL.
    fn read_file(&mut self, path: &Path) {
        self.url = path.display().to_string();
        self.file = Some(path.to_path_buf());
        self.token_file = None;
    }
}

/// The options a `nublado` block sets, validated; the error names the field.
fn options(block: &serde_json::Value) -> Result<NubladoOptions, BlockError> {
    let n: RawNublado = decode_block(block)?;
    if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
        return Err(BlockError::field(
            "url",
            format!("{:?} is not an http(s) URL", n.url),
        ));
    }
    let duration = |field: &str, text: Option<&str>, default| {
        positive_duration(text, default).map_err(|e| BlockError::field(field, e.to_string()))
    };
    Ok(NubladoOptions {
        url: n.url,
        file: None,
        token_file: n.token_file.map(PathBuf::from),
        interval: duration("interval", n.interval.as_deref(), NUBLADO_INTERVAL)?,
        timeout: duration("timeout", n.timeout.as_deref(), NUBLADO_TIMEOUT)?,
    })
}

/// The source a `nublado` block configures; with `--nublado-file`, read from
/// that file instead of the URL.
pub fn from_block(block: &serde_json::Value, flags: &Flags) -> Result<Box<dyn Source>, BlockError> {
    let mut opts = options(block)?;
    if let Some(path) = flags.nublado_file {
        opts.read_file(path);
    }
    Ok(Box::new(Nublado { opts }))
}

/// With `--nublado-file` and no `nublado` block: the file, at the default interval.
pub fn unconfigured(flags: &Flags) -> Option<Box<dyn Source>> {
    let path = flags.nublado_file?;
    let mut opts = NubladoOptions {
        url: String::new(),
        file: None,
        token_file: None,
        interval: NUBLADO_INTERVAL,
        timeout: NUBLADO_TIMEOUT,
    };
    opts.read_file(path);
    Some(Box::new(Nublado { opts }))
}

/// Nublado's prepuller status, as a source of wanted images.
pub struct Nublado {
    pub opts: NubladoOptions,
}

impl Source for Nublado {
    fn name(&self) -> WantSource {
        WantSource::Nublado
    }

    fn needs_cluster(&self) -> bool {
        false
    }

    fn given_file(&self) -> Option<&Path> {
        self.opts.file.as_deref()
    }

    fn read_once<'a>(
        &'a self,
        _: Option<&'a kube::Client>,
    ) -> BoxFuture<'a, Result<Wants, SourceError>> {
        async move {
            let client = http_client()?;
            fetch(&client, &self.opts).await
        }
        .map(|r| r.map_err(|e| e.of(WantSource::Nublado)))
        .boxed()
    }

    fn run(self: Box<Self>, _: Option<kube::Client>, sink: Sink) -> BoxFuture<'static, ()> {
        tracing::info!(url = %self.opts.url, interval = ?self.opts.interval, "reading wanted images from Nublado");
        poll(self.opts, sink).boxed()
    }
}

fn read_token(path: &Path) -> Result<String, PrepullError> {
    let token = std::fs::read_to_string(path).map_err(|source| PrepullError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(token.trim().to_string())
}

/// One read of Nublado's prepuller status: the groups it wants, problems with
/// single images (logged; the rest is kept), and the references past the cap.
/// The body is decoded on a blocking thread, off the async workers.
pub async fn fetch(client: &reqwest::Client, opts: &NubladoOptions) -> Result<Wants, PrepullError> {
    let body = read_body(client, opts).await?;
    tokio::task::spawn_blocking(move || nublado_wants(&body, MAX_IMAGES_PER_SOURCE)).await?
}

/// The body of Nublado's answer, at most [`MAX_NUBLADO_BODY`] bytes.
async fn read_body(
    client: &reqwest::Client,
    opts: &NubladoOptions,
) -> Result<Vec<u8>, PrepullError> {
    if let Some(path) = &opts.file {
        let text = read_to_string_limited(path, MAX_NUBLADO_BODY as u64).map_err(|source| {
            PrepullError::File {
                path: path.clone(),
                source,
            }
        })?;
        return Ok(text.into_bytes());
    }
    let mut request = client.get(&opts.url).timeout(opts.timeout);
    if let Some(path) = &opts.token_file {
        request = request.bearer_auth(read_token(path)?);
    }
    let error = |e: reqwest::Error| PrepullError::Http(HttpError::exchange(e, opts.timeout));
    let mut response = request.send().await.map_err(error)?;
    let status = response.status();
    if status.is_redirection() {
        return Err(PrepullError::Redirect(HttpError::redirect(
            &opts.url,
            status,
            response.headers(),
        )));
    }
    if !status.is_success() {
        return Err(PrepullError::Status {
            url: opts.url.clone(),
            status,
        });
    }
    let too_large = PrepullError::TooLarge {
        max: MAX_NUBLADO_BODY,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_NUBLADO_BODY as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(error)? {
        if body.len() + chunk.len() > MAX_NUBLADO_BODY {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The client for Nublado: rustls with the process's crypto provider; redirects
/// are not followed (an answer that redirects is an error).
pub fn http_client() -> Result<reqwest::Client, PrepullError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| PrepullError::Client(e.to_string()))
}

/// Polls Nublado every `interval` until shutdown; after a failure, sooner, with
/// exponential backoff capped at the interval. Shutdown is honoured while an
/// answer is read or decoded.
async fn poll(opts: NubladoOptions, sink: Sink) {
    let source = WantSource::Nublado;
    sink.store.add_source(source);
    sink.metrics.expect_source_data(source);
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            let e = e.of(source);
            tracing::error!(source = %source, "{e}");
            sink.metrics.source_error(crate::metrics::Failure::kind(&e));
            return;
        }
    };
    let mut backoff = Duration::from_secs(1);
    let mut logged = Logged::default();
    loop {
        let read = tokio::select! {
            r = fetch(&client, &opts) => r,
            _ = sink.shutdown.cancelled() => return,
        };
        let wait = match read {
            Ok(wants) => {
                logged.publish(wants, &sink);
                backoff = Duration::from_secs(1);
                opts.interval
            }
            Err(e) => {
                let wait = backoff.min(opts.interval);
                let heading = "cannot read Nublado's prepuller status, keeping the last list";
                sink.failed(&e.of(source), heading, Some(&opts.url), Some(wait));
                backoff = (backoff * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sink.shutdown.cancelled() => return,
        }
    }
}

/// What the last reads logged: their problems and the references dropped.
#[derive(Default)]
struct Logged {
    problems: Vec<String>,
    dropped: u64,
}

impl Logged {
    /// Logs what changed since the last read (its problems, the references
    /// dropped), counts the malformed fields, and gives the store the read.
    fn publish(&mut self, mut wants: Wants, sink: &Sink) {
        let source = WantSource::Nublado;
        if wants.problems != self.problems {
            for p in &wants.problems {
                tracing::warn!(source = %source, "skipping an image: {p}");
            }
            self.problems = std::mem::take(&mut wants.problems);
        }
        log_dropped(source, wants.dropped, &mut self.dropped);
        for &(field, n) in &wants.invalid {
            sink.metrics.invalid_source_data(source, field, n);
        }
        let images: usize = wants.groups.iter().map(|g| g.images.len()).sum();
        tracing::debug!(source = %source, images, "read Nublado's prepuller status");
        sink.store.source_succeeded(source, wants);
    }
}

/// Most node names kept from Nublado's `missing` lists, over all images of one
/// answer; past it, an image's list is not kept and the exporter's own missing
/// nodes stand in for it.
pub const MAX_MENU_MISSING: usize = 100_000;

/// An image of Nublado's `PrepullerStatus` (`NodeImage`), the fields read here;
/// `nodes` and the rest are skipped unread.
#[derive(Deserialize)]
struct NodeImage {
    reference: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    missing: Vec<String>,
}

/// A node as Nublado sees it (`Node`).
#[derive(Deserialize, Debug, Clone)]
pub struct NubladoNode {
    pub name: String,
    #[serde(default = "yes")]
    pub eligible: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

/// Nublado's wanted images (`GET /nublado/spawner/v1/prepulls`, a
/// `PrepullerStatus`): every image of `images.prepulled` and `images.pending`, in
/// the body's order, matched by digest when Nublado knows it, else by reference;
/// wanted on the nodes Nublado calls eligible. At most `max` distinct images are
/// kept; images whose reference cannot be read are problems.
///
/// Decoded as it is read, one image at a time, without holding the images'
/// other fields: time linear in the body, memory bounded by `max`.
pub fn nublado_wants(body: &[u8], max: usize) -> Result<Wants, PrepullError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut state = NubladoRead {
        images: ImageSet::new(max),
        problems: Problems::default(),
        menu: Vec::new(),
        node_names: HashMap::new(),
        missing_kept: 0,
        odd_digests: 0,
        unreadable: 0,
        prepulled: false,
    };
    let nodes = (&mut state)
        .deserialize(&mut de)
        .and_then(|nodes| de.end().map(|()| nodes))
        .map_err(|e| PrepullError::Decode {
            what: "Nublado PrepullerStatus",
            message: e.to_string(),
        })?;
    let (images, dropped) = state.images.finish();
    let group = WantGroup {
        source: WantSource::Nublado,
        images,
        eligibility: Arc::new(Eligibility::Named(Arc::new(nodes))),
    };
    let invalid = [
        (SourceField::Digest, state.odd_digests),
        (SourceField::Reference, state.unreadable),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    Ok(Wants {
        groups: vec![group],
        problems: state.problems.finish(),
        dropped,
        menu: Some(Arc::new(Menu { images: state.menu })),
        invalid,
    })
}

/// Nublado's verdict for each node: eligible, or why not.
type NubladoNodes = HashMap<String, Result<(), String>>;

fn nublado_nodes(nodes: Vec<NubladoNode>) -> NubladoNodes {
    nodes
        .into_iter()
        .map(|n| {
            let verdict = if n.eligible {
                Ok(())
            } else {
                Err(n
                    .comment
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "not eligible for Nublado".into()))
            };
            (n.name, verdict)
        })
        .collect()
}

/// The state of one read of a `PrepullerStatus`.
struct NubladoRead {
    images: ImageSet,
    problems: Problems,
    /// The menu's images, as many as `images` keeps.
    menu: Vec<MenuImage>,
    /// Node names of the `missing` lists, one shared string each.
    node_names: HashMap<String, Arc<str>>,
    /// Names kept from `missing` lists so far (at most [`MAX_MENU_MISSING`]).
    missing_kept: usize,
    odd_digests: u64,
    unreadable: u64,
    /// Reading `images.prepulled` (else `images.pending`).
    prepulled: bool,
}

impl NubladoRead {
    fn add(&mut self, image: NodeImage) {
        let r = match nublado_ref(&image) {
            Ok(r) => r,
            Err(e) => {
                self.unreadable += 1;
                self.problems.push(|| e);
                return;
            }
        };
        if r.has_odd_digest() {
            self.odd_digests += 1;
        }
        let new = !self.images.contains(&r) && !self.images.is_full();
        self.images.insert(r.clone());
        if !new {
            return;
        }
        let missing = if self.missing_kept + image.missing.len() <= MAX_MENU_MISSING {
            self.missing_kept += image.missing.len();
            let names = &mut self.node_names;
            Some(
                image
                    .missing
                    .into_iter()
                    .map(|n| {
                        names
                            .entry(n)
                            .or_insert_with_key(|k| Arc::from(k.as_str()))
                            .clone()
                    })
                    .collect(),
            )
        } else {
            None
        };
        self.menu.push(MenuImage {
            image: r,
            name: image.name.filter(|n| !n.is_empty()),
            prepulled: self.prepulled,
            size: image.size,
            missing,
        });
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum StatusField {
    Images,
    Nodes,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ImagesField {
    Prepulled,
    Pending,
    #[serde(other)]
    Other,
}

/// The whole `PrepullerStatus`: the images into the state, the nodes returned.
impl<'de> DeserializeSeed<'de> for &mut NubladoRead {
    type Value = NubladoNodes;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<NubladoNodes, D::Error> {
        d.deserialize_map(StatusVisitor(self))
    }
}

struct StatusVisitor<'s>(&'s mut NubladoRead);

impl<'de> Visitor<'de> for StatusVisitor<'_> {
    type Value = NubladoNodes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PrepullerStatus object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NubladoNodes, A::Error> {
        let (mut images, mut nodes) = (false, None);
        while let Some(key) = map.next_key::<StatusField>()? {
            match key {
                StatusField::Images if images => {
                    return Err(serde::de::Error::duplicate_field("images"));
                }
                StatusField::Images => {
                    map.next_value_seed(ImagesSeed(&mut *self.0))?;
                    images = true;
                }
                StatusField::Nodes if nodes.is_some() => {
                    return Err(serde::de::Error::duplicate_field("nodes"));
                }
                StatusField::Nodes => nodes = Some(map.next_value::<Vec<NubladoNode>>()?),
                StatusField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !images {
            return Err(serde::de::Error::missing_field("images"));
        }
        let nodes = nodes.ok_or_else(|| serde::de::Error::missing_field("nodes"))?;
        Ok(nublado_nodes(nodes))
    }
}

/// `images`: `prepulled` and `pending`, each optional.
struct ImagesSeed<'s>(&'s mut NubladoRead);

impl<'de> DeserializeSeed<'de> for ImagesSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ImagesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a PrepullerImageStatus object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<ImagesField>()? {
            match key {
                ImagesField::Prepulled | ImagesField::Pending => {
                    self.0.prepulled = matches!(key, ImagesField::Prepulled);
                    map.next_value_seed(ImageListSeed(&mut *self.0))?
                }
                ImagesField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A list of `NodeImage`s, each added to the state as it is decoded.
struct ImageListSeed<'s>(&'s mut NubladoRead);

impl<'de> DeserializeSeed<'de> for ImageListSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ImageListSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of images")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(image) = seq.next_element::<NodeImage>()? {
            self.0.add(image);
        }
        Ok(())
    }
}

fn nublado_ref(image: &NodeImage) -> Result<ImageRef, String> {
    let mut r = ImageRef::parse(&image.reference)
        .map_err(|e| format!("Nublado image {:?}: {e}", image.reference))?;
    if let Some(d) = image.digest.as_deref().filter(|d| !d.is_empty()) {
        let with_digest = format!("{}@{d}", r.repo);
        let digest = ImageRef::parse(&with_digest)
            .map_err(|e| format!("Nublado image {:?} digest: {e}", image.reference))?
            .digest;
        r.digest = digest;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::eligibility::{NodeFacts, NodeLabels, NotEligible};
    use crate::analysis::wants::MAX_PROBLEMS;
    use crate::prepull::tests::{assert_source_errors, sources};
    use serde_json::json;

    const DIGEST: &str = "sha256:e693782192ecef4f7846ad2b21b1574682e700747f94c5a256b5731331a2eec2";

    #[test]
    fn odd_digests_are_kept_counted_and_wanted() {
        // As in Nublado's own test data.
        let body = json!({
            "images": {"prepulled": [
                {"reference": "lighthouse.ceres/library/sketchbook:w_2077_43", "tag": "w_2077_43",
                 "digest": "sha256:5678", "size": 65537, "nodes": ["node1"], "missing": []}],
                "pending": [
                {"reference": "lighthouse.ceres/library/sketchbook:d_2077_10_23",
                 "digest": "sha256:1234", "size": 69105, "nodes": ["node1"], "missing": ["node2"]}]},
            "nodes": [{"name": "node1", "eligible": true}, {"name": "node2", "eligible": true}]
        });
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let refs: Vec<String> = wants.groups[0]
            .images
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(refs.len(), 2, "none dropped: {refs:?}");
        assert!(
            refs.iter()
                .any(|r| r.ends_with(":d_2077_10_23@sha256:1234")),
            "{refs:?}"
        );
        assert!(wants.problems.is_empty(), "{:?}", wants.problems);
        assert_eq!(wants.invalid, [(SourceField::Digest, 2)]);
    }

    #[test]
    fn missing_lists_past_the_bound_are_not_kept() {
        let missing: Vec<String> = (0..MAX_MENU_MISSING / 2 + 1)
            .map(|i| format!("n{i}"))
            .collect();
        let image =
            |tag: &str| json!({"reference": format!("ghcr.io/x/lab:{tag}"), "missing": missing});
        let body =
            json!({"images": {"pending": [image("a"), image("b"), image("c")]}, "nodes": []});
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let kept: Vec<bool> = wants
            .menu
            .unwrap()
            .images
            .iter()
            .map(|m| m.missing.is_some())
            .collect();
        assert_eq!(kept, [true, false, false]);
    }

    #[test]
    fn nublado_status_as_the_controller_serves_it() {
        let body = json!({
            "config": {"source": {"type": "docker", "registry": "ghcr.io",
                                  "repository": "lsst-sqre/sciplat-lab"},
                       "recommended_tag": "recommended", "num_releases": 1,
                       "num_weeklies": 2, "num_dailies": 3, "cycle": null, "pin": [],
                       "alias_tags": []},
            "images": {
                "prepulled": [{"reference": "ghcr.io/lsst-sqre/sciplat-lab:w_2024_10",
                               "tag": "w_2024_10", "name": "Weekly 2024_10",
                               "digest": DIGEST, "size": 8675309,
                               "nodes": ["n1", "n2"], "missing": []}],
                "pending": [{"reference": "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11",
                             "tag": "w_2024_11", "name": "Weekly 2024_11",
                             "digest": null, "size": null, "nodes": ["n1"], "missing": ["n2"]},
                            {"reference": "Not A Reference", "tag": "x", "name": "x",
                             "nodes": [], "missing": []}]
            },
            "nodes": [{"name": "n1", "eligible": true, "comment": null, "cached": []},
                      {"name": "n2", "eligible": true, "cached": []},
                      {"name": "n3", "eligible": false, "comment": "Cordoned because of disk problems",
                       "cached": []}]
        });
        let Wants {
            groups,
            problems,
            dropped,
            ..
        } = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("Not A Reference"));
        let g = &groups[0];
        assert_eq!(g.source, WantSource::Nublado);
        let refs: Vec<String> = g.images.iter().map(|r| r.to_string()).collect();
        // In the body's order: `json!` sorts keys, so `pending` comes first.
        assert_eq!(
            refs,
            [
                "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11".to_string(),
                format!("ghcr.io/lsst-sqre/sciplat-lab:w_2024_10@{DIGEST}"),
            ]
        );
        let labels = NodeLabels::default();
        let facts = |name| NodeFacts {
            name,
            labels: &labels,
            taints: &[],
            unschedulable: false,
        };
        assert_eq!(g.eligibility.check(&facts("n1")), Ok(()));
        assert_eq!(
            g.eligibility.check(&facts("n3")),
            Err(NotEligible::Nublado(
                "Cordoned because of disk problems".into()
            ))
        );
        // The menu: what is shown, the display names, sizes and missing nodes.
        let wants = nublado_wants(body.to_string().as_bytes(), MAX_IMAGES_PER_SOURCE).unwrap();
        let menu = wants.menu.expect("Nublado's answer describes its menu");
        let shown: Vec<(String, bool, Option<u64>, Vec<String>)> = menu
            .images
            .iter()
            .map(|m| {
                (
                    m.name.clone().unwrap(),
                    m.prepulled,
                    m.size,
                    m.missing.iter().flatten().map(|n| n.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("Weekly 2024_11".into(), false, None, vec!["n2".into()]),
                ("Weekly 2024_10".into(), true, Some(8675309), vec![]),
            ]
        );
        assert_eq!(wants.invalid, [(SourceField::Reference, 1)]);
        let parse = |b: &[u8]| nublado_wants(b, 10);
        assert!(
            parse(b"[]")
                .unwrap_err()
                .to_string()
                .contains("not a Nublado PrepullerStatus")
        );
        assert!(parse(b"{\"images\": {}}").is_err(), "nodes are required");
        assert!(parse(b"{\"nodes\": []}").is_err(), "images are required");
        assert!(parse(b"{\"images\": {\"pending\": null}, \"nodes\": []}").is_err());
        assert!(
            parse(b"{\"images\": {}, \"nodes\": []} x").is_err(),
            "trailing data"
        );
        assert!(parse(b"{\"images\": {\"pending\": [{\"reference\": \"a:1\"}").is_err());
    }

    fn pending(refs: impl IntoIterator<Item = String>) -> Vec<u8> {
        let images: Vec<_> = refs
            .into_iter()
            .map(|r| json!({"reference": r, "nodes": ["n1"], "missing": []}))
            .collect();
        json!({"images": {"pending": images}, "nodes": [{"name": "n1"}]})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn nublado_keeps_the_first_distinct_images_up_to_the_cap() {
        // Repeats of kept images are not dropped; the others past the cap are.
        let refs = [
            "a:1",
            "b:1",
            "a:1",
            "c:1",
            "docker.io/library/b:1",
            "d:1",
            "c:1",
        ];
        let w = nublado_wants(&pending(refs.map(String::from)), 2).unwrap();
        let kept: Vec<String> = w.groups[0].images.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            kept,
            ["docker.io/library/a:1", "docker.io/library/b:1"],
            "the first two, in the body's order"
        );
        assert_eq!(w.dropped, 3, "c:1 twice and d:1");
        // Prepulled and pending in the order the body has them.
        let body = br#"{"nodes": [], "images": {"pending": [{"reference": "p:1"}],
                        "prepulled": [{"reference": "q:1"}, {"reference": "p:1"}]}}"#;
        let w = nublado_wants(body, 10).unwrap();
        let kept: Vec<String> = w.groups[0].images.iter().map(|r| r.to_string()).collect();
        assert_eq!(kept, ["docker.io/library/p:1", "docker.io/library/q:1"]);
    }

    #[test]
    fn nublado_problems_are_bounded() {
        let body = pending((0..1000).map(|i| format!("Bad Ref {i}")));
        let w = nublado_wants(&body, 10).unwrap();
        assert_eq!(w.problems.len(), MAX_PROBLEMS + 1);
        assert_eq!(
            w.problems.last().unwrap(),
            &format!(
                "and {} more images that cannot be read",
                1000 - MAX_PROBLEMS
            )
        );
        assert!(w.groups[0].images.is_empty());
    }

    #[test]
    fn a_large_nublado_answer_is_read_in_linear_time() {
        // 200,000 distinct references: with a quadratic de-duplication this takes
        // minutes; linear, well under a second in a release build.
        let n = 200_000;
        let body = pending((0..n).map(|i| format!("r.io/i{i}:1")));
        let started = std::time::Instant::now();
        let w = nublado_wants(&body, MAX_IMAGES_PER_SOURCE).unwrap();
        assert_eq!(w.groups[0].images.len(), MAX_IMAGES_PER_SOURCE);
        assert_eq!(w.dropped, (n - MAX_IMAGES_PER_SOURCE) as u64);
        assert_eq!(w.groups[0].images[0].to_string(), "r.io/i0:1");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_block_sets_the_options() {
        let block =
            json!({"url": "http://n.example/prepulls", "tokenFile": "/t", "interval": "2m"});
        assert_eq!(
            options(&block).unwrap(),
            NubladoOptions {
                url: "http://n.example/prepulls".into(),
                file: None,
                token_file: Some("/t".into()),
                interval: Duration::from_secs(120),
                timeout: NUBLADO_TIMEOUT,
            }
        );
        let built = sources("prepull:\n  sources:\n    - nublado: {url: 'https://n.example/p'}\n");
        assert_eq!(built.unwrap()[0].name(), WantSource::Nublado);
    }

    #[test]
    fn block_errors_name_the_key() {
        assert_source_errors(&[
            (
                "{nublado: {url: 'ftp://x'}}",
                "prepull.sources[0].nublado.url",
            ),
            (
                "{nublado: {url: 'http://x', interval: soon}}",
                "prepull.sources[0].nublado.interval",
            ),
            (
                "{nublado: {url: 'http://x', timeout: 0s}}",
                "prepull.sources[0].nublado.timeout: must be greater than zero",
            ),
            (
                "{nublado: {url: 'http://x', bogus: 1}}",
                "prepull.sources[0].nublado.bogus: unknown field `bogus`",
            ),
            (
                "{nublado: {}}",
                "prepull.sources[0].nublado: missing field `url`",
            ),
        ]);
    }

    #[test]
    fn a_file_stands_in_for_the_url_or_the_source() {
        let path = Path::new("/saved/prepulls.json");
        let flags = Flags {
            nublado_file: Some(path),
        };
        let block =
            json!({"url": "http://n.example/prepulls", "tokenFile": "/t", "interval": "2m"});
        let mut want = options(&block).unwrap();
        want.url = "/saved/prepulls.json".into();
        want.file = Some(path.to_path_buf());
        want.token_file = None;
        let mut opts = options(&block).unwrap();
        opts.read_file(path);
        assert_eq!(opts, want, "the configured interval stays");
        assert!(from_block(&block, &flags).is_ok());
        assert!(unconfigured(&Flags::default()).is_none());
        assert_eq!(
            unconfigured(&flags).map(|s| s.name()),
            Some(WantSource::Nublado)
        );
    }
}
