//! The YAML configuration files: the exporter's (`--config`, here) and the node
//! agent's ([`agent`]).
//!
//! The exporter's:
//!
//! ```yaml
//! defaultMaxImages: 50
//! prepull:
//!   images: [ghcr.io/lsst-sqre/sciplat-lab:w_2024_10]
//!   patterns:
//!     - '^ghcr\.io/lsst-sqre/sciplat-lab:r'
//!     - {match: '^ghcr\.io/lsst-sqre/sciplat-lab:w_', newest: 2}
//!   nodeSelector: {nublado.lsst.io/permitted: "true"}
//!   tolerations: [{key: dedicated, operator: Equal, value: lab, effect: NoSchedule}]
//!   sources:
//!     - nublado: {url: http://nublado-controller.nublado/nublado/spawner/v1/prepulls}
//!     - kubeFledged: {namespace: kube-fledged}
//!     - daemonSets: {namespace: jhub, selector: component=continuous-image-puller}
//! ```
//!
//! Unknown keys are errors, so a typo (`nodeselector`) is caught instead of silently
//! selecting every node.

pub mod agent;

use crate::analysis::Wanted;
use crate::analysis::eligibility::{Eligibility, Toleration};
use crate::analysis::reference::ImageRef;
use crate::analysis::report::KUBELET_DEFAULT_MAX_IMAGES;
use crate::analysis::selector::LabelSelector;
use crate::analysis::wanted::Pattern;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A configuration file that cannot be used; the message names the file (`file`
/// says which: "config file", "web config file") and, when it is invalid, the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file} {path}: {source}")]
    Read {
        file: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Read, but not valid: `source` says why ([`InvalidConfig`] for the
    /// configuration files).
    #[error("{file} {path}: {source}")]
    Invalid {
        file: &'static str,
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Why a configuration text is not valid: it is not YAML of the file's shape,
/// it nests too deep, or a key's value is wrong. The text starts with the path of
/// the key when one is known (`prepull.patterns[0].match: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    /// Not YAML, or not of the file's shape; `key` is where the decoder stopped.
    #[error("{}", keyed(key.as_deref(), message))]
    Yaml {
        key: Option<String>,
        message: String,
    },
    /// Flow collections nest deeper than [`MAX_YAML_NESTING`], from `line` on.
    #[error("line {line}: collections nested deeper than {MAX_YAML_NESTING} levels")]
    Nesting { line: usize },
    /// A key's value is not valid.
    #[error("{key}: {message}")]
    InvalidKey { key: String, message: String },
}

impl InvalidConfig {
    /// The error of `key`, saying `message`.
    pub fn key(key: impl Into<String>, message: impl std::fmt::Display) -> InvalidConfig {
        InvalidConfig::InvalidKey {
            key: key.into(),
            message: message.to_string(),
        }
    }
}

/// `message`, after `key: ` when there is a key.
fn keyed(key: Option<&str>, message: &str) -> String {
    match key {
        Some(key) => format!("{key}: {message}"),
        None => message.to_string(),
    }
}

/// A duration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("must be greater than zero")]
    NotPositive,
    #[error("{text:?} is not a duration: {source}")]
    NotADuration {
        text: String,
        source: humantime::DurationError,
    },
}

/// Reads the `file` at `path` (at most `max` bytes) and parses it with `parse`.
pub fn load_file<T, E: std::error::Error + Send + Sync + 'static>(
    file: &'static str,
    path: &Path,
    max: u64,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ConfigError> {
    let path_text = || path.display().to_string();
    let text = read_to_string_limited(path, max).map_err(|source| ConfigError::Read {
        file,
        path: path_text(),
        source,
    })?;
    parse(&text).map_err(|e| ConfigError::Invalid {
        file,
        path: path_text(),
        source: Box::new(e),
    })
}

/// What the configuration files are called in errors.
pub(crate) const CONFIG_FILE: &str = "config file";

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    default_max_images: Option<i64>,
    prepull: Option<RawPrepull>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrepull {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    patterns: Vec<RawPattern>,
    #[serde(default)]
    node_selector: BTreeMap<String, String>,
    #[serde(default)]
    tolerations: Vec<RawToleration>,
    #[serde(default)]
    sources: Vec<SourceEntry>,
}

/// A regular expression, or `{match: REGEX, newest: N}`.
#[derive(Deserialize, Debug)]
#[serde(
    untagged,
    expecting = "a regular expression, or {match: REGEX, newest: N}"
)]
pub(crate) enum RawPattern {
    Regex(String),
    Newest(RawNewest),
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNewest {
    #[serde(rename = "match")]
    regex: String,
    newest: Option<usize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawToleration {
    key: Option<String>,
    operator: Option<String>,
    value: Option<String>,
    effect: Option<String>,
    /// A toleration with it tolerates nothing here, as in Nublado: a lab pod
    /// would be evicted when the time runs out.
    toleration_seconds: Option<i64>,
}

/// One `prepull.sources` entry, as written: a map whose one key names the kind
/// of source and whose value is that source's block. The sources of wanted
/// images check the keys and read the blocks (each kind its own), when `serve`
/// and `check` start.
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(transparent)]
pub struct SourceEntry(BTreeMap<String, serde_json::Value>);

impl SourceEntry {
    /// The entry's keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The block under `key`; a key without a value (`kubeFledged:`) has none.
    pub fn block(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `defaultMaxImages`, when the file sets it.
    pub default_max_images: Option<i64>,
    pub wanted: Wanted,
    /// `prepull.sources`, each read by its kind of source.
    pub sources: Vec<SourceEntry>,
}

/// Largest `--config` file read: far above any real configuration, and a file
/// this size is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads a text file of at most `max` bytes. The size is checked before anything
/// is read, and the read itself is bounded (for a file that grows meanwhile, or a
/// pipe that reports no size): a huge or endless file costs no memory.
pub fn read_to_string_limited(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let too_large = |size: &str| {
        std::io::Error::other(format!(
            "{size}, above the limit of {} MiB ({max} bytes)",
            max >> 20
        ))
    };
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size > max {
        return Err(too_large(&format!("{size} bytes")));
    }
    let mut text = String::with_capacity(size as usize);
    file.take(max.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(too_large(&format!("more than {max} bytes")));
    }
    Ok(text)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        load_file(CONFIG_FILE, path, MAX_CONFIG_BYTES, Config::parse)
    }

    /// Parses and validates a configuration; the error names the offending key.
    pub fn parse(text: &str) -> Result<Config, InvalidConfig> {
        let raw: RawConfig = file_from_yaml(text)?;
        if let Some(n) = raw.default_max_images {
            validate_max_images(n).map_err(|e| InvalidConfig::key("defaultMaxImages", e))?;
        }
        let prepull = raw.prepull.unwrap_or_default();
        let mut exact = Vec::with_capacity(prepull.images.len());
        for (i, s) in prepull.images.iter().enumerate() {
            let key = || format!("prepull.images[{i}]");
            let image = ImageRef::parse(s).map_err(|e| InvalidConfig::key(key(), e))?;
            if image.has_odd_digest() {
                return Err(InvalidConfig::key(
                    key(),
                    format_args!(
                        "{s:?}: the digest is not sha256 with 64 hex digits (or sha512 with 128)"
                    ),
                ));
            }
            exact.push(image);
        }
        let patterns = compile_patterns("prepull.patterns", &prepull.patterns)?;
        let selector = LabelSelector::from_map(&prepull.node_selector)
            .map_err(|e| InvalidConfig::key("prepull.nodeSelector", e))?;
        let mut tolerations = Vec::with_capacity(prepull.tolerations.len());
        for (i, t) in prepull.tolerations.iter().enumerate() {
            tolerations.push(
                Toleration::new(
                    t.key.as_deref(),
                    t.operator.as_deref(),
                    t.value.as_deref(),
                    t.effect.as_deref(),
                )
                .map(|tol| tol.with_seconds(t.toleration_seconds))
                .map_err(|e| InvalidConfig::key(format!("prepull.tolerations[{i}]"), e))?,
            );
        }
        Ok(Config {
            default_max_images: raw.default_max_images,
            wanted: Wanted::new(exact, patterns, Eligibility::config(selector, tolerations)),
            sources: prepull.sources,
        })
    }
}

/// Compiles `key`'s list of patterns (`REGEX` or `{match: REGEX, newest: N}`);
/// the error names the entry.
pub(crate) fn compile_patterns(
    key: &str,
    raw: &[RawPattern],
) -> Result<Vec<Pattern>, InvalidConfig> {
    let mut patterns = Vec::with_capacity(raw.len());
    for (i, p) in raw.iter().enumerate() {
        let (text, newest) = match p {
            RawPattern::Regex(r) => (r, None),
            RawPattern::Newest(n) => (&n.regex, n.newest),
        };
        if newest == Some(0) {
            return Err(InvalidConfig::key(
                format!("{key}[{i}].newest"),
                "must be 1 or more",
            ));
        }
        let regex = regex::Regex::new(text).map_err(|e| {
            InvalidConfig::key(
                format!("{key}[{i}]"),
                format_args!(
                    "invalid regular expression {text:?}: {}",
                    one_line_regex_error(&e)
                ),
            )
        })?;
        patterns.push(Pattern { regex, newest });
    }
    Ok(patterns)
}

/// `key`'s duration: [`positive_duration`], the error naming the key.
pub(crate) fn duration(
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, InvalidConfig> {
    positive_duration(text, default).map_err(|e| InvalidConfig::key(key, e))
}

/// A duration greater than zero (`90s`, `2m`), or `default` when not given.
pub fn positive_duration(text: Option<&str>, default: Duration) -> Result<Duration, DurationError> {
    let Some(text) = text else {
        return Ok(default);
    };
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(DurationError::NotPositive),
        Err(source) => Err(DurationError::NotADuration {
            text: text.to_string(),
            source,
        }),
    }
}

/// A regex error on one line: the parser's message and where, without the
/// multi-line drawing of the pattern with a caret under the error.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let Some(message) = lines
        .iter()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    else {
        return lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
    };
    // The pattern is drawn on the line after "regex parse error:" and the caret
    // (or caret span) under it, both indented alike.
    let column = match (lines.get(1), lines.get(2)) {
        (Some(pattern), Some(carets)) if carets.trim_start().starts_with('^') => {
            let indent = pattern.len() - pattern.trim_start().len();
            let at = carets.len() - carets.trim_start().len();
            at.checked_sub(indent).map(|c| c + 1)
        }
        _ => None,
    };
    match column {
        Some(c) => format!("{message} (at character {c})"),
        None => message.to_string(),
    }
}

/// A whole configuration file: empty (or blank) is the defaults; otherwise its
/// nesting is checked first, then it is decoded as [`from_yaml`] does.
pub fn file_from_yaml<T: serde::de::DeserializeOwned + Default>(
    text: &str,
) -> Result<T, InvalidConfig> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    check_yaml_nesting(text)?;
    from_yaml(text)
}

/// Decodes a YAML document into `T`. The error is one line: the parser's
/// message with the line and column, without a drawing of the input. The parser
/// also refuses collections nested deeper than [`MAX_YAML_NESTING`], block ones
/// included.
///
/// The message starts with the path of the offending key (`prepull.images[1]: `),
/// as serde_path_to_error tracks it, and says what kind of node stood where a
/// mapping or sequence was expected.
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, InvalidConfig> {
    let options = serde_saphyr::options! {
        with_snippet: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_NESTING,
            flow_nesting_limit: MAX_YAML_NESTING,
        },
    };
    let mut path = String::new();
    let decoded = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    decoded.map_err(|e| {
        let mut message = e.to_string();
        if let Some(loc) = e.location()
            && let Some(found) = node_kind_at(text, loc.line(), loc.column())
            && (message.starts_with("expected mapping start")
                || message.starts_with("expected sequence start"))
        {
            message = format!("{message}: found {found}");
        }
        let key = match path.as_str() {
            "" | "." => None,
            path => Some(path.to_string()),
        };
        InvalidConfig::Yaml { key, message }
    })
}

/// What kind of YAML node begins at a 1-based line and column: `a sequence`, `a
/// mapping` or `a scalar`; None past the end of the text.
fn node_kind_at(text: &str, line: u64, column: u64) -> Option<&'static str> {
    let line = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let rest: String = line
        .chars()
        .skip(usize::try_from(column).ok()?.checked_sub(1)?)
        .collect();
    let rest = rest.trim_start();
    Some(
        if rest.starts_with('[') || rest == "-" || rest.starts_with("- ") {
            "a sequence"
        } else if rest.starts_with('{') || rest.contains(": ") || rest.ends_with(':') {
            "a mapping"
        } else {
            "a scalar"
        },
    )
}

/// Deepest nesting of YAML flow collections (`[`, `{`) accepted. The YAML parser
/// takes time quadratic in the depth; real configurations nest a few levels.
const MAX_YAML_NESTING: usize = 64;

/// Rejects YAML whose flow collections nest deeper than [`MAX_YAML_NESTING`]
/// before it reaches the parser. Brackets in quoted strings and comments do not
/// count.
pub fn check_yaml_nesting(text: &str) -> Result<(), InvalidConfig> {
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '\'' | '"' => {
                // Skip the quoted scalar: '' escapes a single quote, \ escapes in
                // double quotes.
                while let Some(q) = chars.next() {
                    match q {
                        '\n' => line += 1,
                        '\\' if c == '"' => {
                            chars.next();
                        }
                        q if q == c => {
                            if c == '\'' && chars.peek() == Some(&'\'') {
                                chars.next();
                            } else {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_YAML_NESTING {
                    return Err(InvalidConfig::Nesting { line });
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    Ok(())
}

/// Why the configuration file and the flags do not make [`Settings`].
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--node-selector: {0}")]
    NodeSelector(crate::analysis::selector::SelectorError),
}

/// What `serve` and `check` share: the configuration file and the flags, validated.
pub struct Settings {
    /// `--config`, when given.
    pub config_file: Option<PathBuf>,
    pub wanted: Arc<Wanted>,
    /// `prepull.sources`, each read by its kind of source.
    pub sources: Vec<SourceEntry>,
    pub default_max_images: i64,
    /// `--node-selector`.
    pub node_selector: LabelSelector,
    pub page_size: u32,
    pub request_timeout: Duration,
}

impl Settings {
    pub fn new(common: &SettingsFlags) -> Result<Settings, SettingsError> {
        let config = match common.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let node_selector = match common.node_selector {
            Some(s) => s.parse().map_err(SettingsError::NodeSelector)?,
            None => LabelSelector::default(),
        };
        Ok(Settings {
            config_file: common.config.map(Path::to_path_buf),
            wanted: Arc::new(config.wanted),
            sources: config.sources,
            default_max_images: common
                .default_max_images
                .or(config.default_max_images)
                .unwrap_or(KUBELET_DEFAULT_MAX_IMAGES),
            node_selector,
            page_size: common.page_size,
            request_timeout: common.request_timeout,
        })
    }

    /// An error found in the configuration file after it was read (in a
    /// source's block), worded as the file's other errors.
    pub fn config_error(&self, message: String) -> String {
        match &self.config_file {
            Some(path) => ConfigError::Invalid {
                file: CONFIG_FILE,
                path: path.display().to_string(),
                source: message.into(),
            }
            .to_string(),
            None => message,
        }
    }

    /// How nodes are listed from the API server.
    pub fn list_options(&self) -> ListOptions {
        ListOptions {
            label_selector: (!self.node_selector.is_empty())
                .then(|| self.node_selector.to_string()),
            page_size: self.page_size,
            request_timeout: self.request_timeout,
        }
    }
}

/// How the nodes are listed from the API server.
#[derive(Clone, Debug)]
pub struct ListOptions {
    pub label_selector: Option<String>,
    pub page_size: u32,
    /// Limit for one page request.
    pub request_timeout: Duration,
}

/// The flags the settings are made from (`serve` and `check` share them).
#[derive(Debug, Clone, Copy)]
pub struct SettingsFlags<'a> {
    pub config: Option<&'a Path>,
    pub default_max_images: Option<i64>,
    pub node_selector: Option<&'a str>,
    pub page_size: u32,
    pub request_timeout: Duration,
}

/// A cap below -1.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid cap (use -1 for unlimited, or 0 or more)")]
pub struct InvalidCap(pub i64);

/// A cap is -1 (unlimited), 0 (report none) or positive.
pub fn validate_max_images(n: i64) -> Result<i64, InvalidCap> {
    if n < -1 { Err(InvalidCap(n)) } else { Ok(n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let c = Config::parse(include_str!("../../examples/config.yaml")).unwrap();
        assert_eq!(c.default_max_images, Some(50));
        assert_eq!(c.wanted.exact().len(), 2);
        assert_eq!(
            c.wanted.exact()[1].to_string(),
            "docker.io/library/busybox:1.36"
        );
        assert!(!c.wanted.patterns().is_empty());
    }

    #[test]
    fn empty_means_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.default_max_images, None);
        assert!(c.wanted.is_empty());
        assert!(Config::parse("prepull: {}\n").unwrap().wanted.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("defaultMaxImage: 3", "defaultMaxImage"),
            ("prepull:\n  nodeselector: {}\n", "nodeselector"),
            ("defaultMaxImages: -2", "defaultMaxImages"),
            ("defaultMaxImages: lots", "defaultMaxImages"),
            (
                "prepull:\n  images: ['busybox@sha256:1234']\n",
                "prepull.images[0]: \"busybox@sha256:1234\": the digest is not sha256",
            ),
            (
                "prepull:\n  images: [ok:1, 'Not A Ref']\n",
                "prepull.images[1]",
            ),
            (
                "prepull:\n  patterns: ['(unclosed']\n",
                "prepull.patterns[0]",
            ),
            (
                "prepull:\n  nodeSelector: {'bad key': x}\n",
                "prepull.nodeSelector",
            ),
            ("prepull: [1, 2]", "prepull"),
            ("- just\n- a list\n", "sequence"),
        ];
        for (text, key) in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e:?} should name {key}");
        }
    }

    #[test]
    fn sources_patterns_and_tolerations() {
        let c = Config::parse(
            "prepull:\n  patterns:\n    - '^a'\n    - {match: '^ghcr\\.io/x/lab:w_', newest: 2}\n  \
             tolerations:\n    - {key: dedicated, operator: Equal, value: lab, effect: NoSchedule}\n  \
             sources:\n    - nublado: {url: 'http://n.example/prepulls', tokenFile: /t, interval: 2m}\n    \
             - kubeFledged: {}\n    - daemonSets: {namespace: jhub, selector: 'component=continuous-image-puller'}\n",
        )
        .unwrap();
        assert_eq!(c.wanted.patterns().len(), 2);
        assert_eq!(c.wanted.patterns()[1].newest, Some(2));
        let kinds: Vec<Vec<&str>> = c.sources.iter().map(|e| e.keys().collect()).collect();
        assert_eq!(kinds, [["nublado"], ["kubeFledged"], ["daemonSets"]]);
        let block = c.sources[0].block("nublado").unwrap();
        assert_eq!(block["interval"], "2m");
        assert_eq!(block["tokenFile"], "/t");
    }

    #[test]
    fn a_regex_error_is_one_line() {
        let e = Config::parse("prepull:\n  patterns: ['^ok', 'a(b']\n").unwrap_err();
        assert!(
            matches!(&e, InvalidConfig::InvalidKey { key, .. } if key == "prepull.patterns[1]"),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(
            e,
            "prepull.patterns[1]: invalid regular expression \"a(b\": unclosed group (at character 2)"
        );
    }

    #[test]
    fn prepull_errors_name_the_key() {
        let cases = [
            ("prepull:\n  sources: [kubeFledged]\n", "prepull.sources[0]"),
            (
                "prepull:\n  patterns: [{match: '^a', newest: 0}]\n",
                "prepull.patterns[0].newest",
            ),
            (
                "prepull:\n  patterns: [{regex: '^a'}]\n",
                "{match: REGEX, newest: N}",
            ),
            (
                "prepull:\n  tolerations: [{operator: Equal, value: x}]\n",
                "prepull.tolerations[0]",
            ),
            (
                "prepull:\n  tolerations: [{key: k, effect: Sometimes}]\n",
                "prepull.tolerations[0]",
            ),
        ];
        for (text, key) in cases {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e:?} should name {key}");
        }
    }

    #[test]
    fn yaml_errors_name_the_key_path_and_line() {
        for (text, want) in [
            (
                "prepull:\n  images: [1, {a: b}]\n",
                "prepull.images[1]: expected string scalar at line 2, column 15",
            ),
            (
                "prepull:\n  tolerations:\n    - {key: a, bogus: 1}\n",
                "prepull.tolerations[0].bogus: unknown field `bogus`",
            ),
            (
                "prepull: [1, 2]",
                "prepull: expected mapping start at line 1, column 10: found a sequence",
            ),
            ("- just\n- a list\n", "found a sequence"),
            ("prepull: 3\n", "found a scalar"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e:?} should contain {want:?}");
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn block_nesting_is_limited_too() {
        let nested = |levels: usize| {
            (0..levels)
                .map(|d| format!("{}k{d}:\n", "  ".repeat(d)))
                .collect::<String>()
        };
        from_yaml::<serde::de::IgnoredAny>(&nested(MAX_YAML_NESTING - 1)).unwrap();
        let e = from_yaml::<serde::de::IgnoredAny>(&nested(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("depth"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn node_kind_at_never_panics(text in "\\PC{0,80}", line in 0u64..6, column in 0u64..90) {
            let _ = node_kind_at(&text, line, column);
        }
    }

    #[test]
    fn deep_nesting_fails_fast() {
        let text = format!("prepull:\n  images: {}", "[".repeat(100_000));
        let start = std::time::Instant::now();
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("nested deeper than 64"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(1));
        // Brackets in quotes and comments are not nesting.
        let fine = format!(
            "prepull:  # {}\n  patterns: ['{}', \"{}\"]\n",
            "[".repeat(100),
            "\\[".repeat(100),
            "\\\\{".repeat(100)
        );
        Config::parse(&fine).unwrap();
        let e = Config::parse(&format!(
            "prepull: {{images: {}{}}}\n",
            "[".repeat(10),
            "]".repeat(10)
        ))
        .unwrap_err()
        .to_string();
        assert!(!e.contains("nested"), "ten levels are parsed: {e}");
    }

    #[test]
    fn files_above_the_limit_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, "x".repeat(101)).unwrap();
        let e = read_to_string_limited(&path, 100).unwrap_err().to_string();
        assert!(e.contains("101 bytes, above the limit"), "{e}");
        std::fs::write(&path, "x".repeat(100)).unwrap();
        assert_eq!(read_to_string_limited(&path, 100).unwrap().len(), 100);
        // A sparse file the size of a disk is refused at once, unread.
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1 << 40).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("big.yaml") && e.contains("limit of 16 MiB"),
            "{e}"
        );
        // What reports no size is bounded all the same.
        let e = read_to_string_limited(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("more than 100 bytes"), "{e}");
    }

    #[test]
    fn load_reports_the_path() {
        let e = Config::load(Path::new("/nonexistent/imagecap.yaml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config file /nonexistent/imagecap.yaml:"),
            "{e}"
        );
    }
}
