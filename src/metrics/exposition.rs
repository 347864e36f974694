//! The exposition machinery of `/metrics`, for the exporter and the node agent
//! alike: the two text formats and which one a client asks for, the rewrite of
//! OpenMetrics into the Prometheus text format, and gzip made of pieces
//! compressed apart (so text kept per report is compressed once).

use bytes::Bytes;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::registry::Registry;

/// The exposition formats of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    OpenMetrics,
    /// The Prometheus text format 0.0.4 ([`to_prometheus_text`]).
    PrometheusText,
}

impl TextFormat {
    /// OpenMetrics when the `Accept` header values prefer it (Prometheus does),
    /// else the Prometheus text format, as client_golang negotiates.
    pub fn negotiate<'a>(accept: impl Iterator<Item = &'a str>) -> TextFormat {
        if wants_openmetrics(accept) {
            TextFormat::OpenMetrics
        } else {
            TextFormat::PrometheusText
        }
    }

    /// The `Content-Type` of an exposition in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            TextFormat::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            TextFormat::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// `registry` encoded in `format`; `last` ends the exposition (with `# EOF` in
/// OpenMetrics). A part converts to the Prometheus text format on its own: each
/// family's HELP and TYPE lines are in the same part as its samples.
pub fn encode_part(registry: &Registry, format: TextFormat, last: bool) -> String {
    let mut text = String::with_capacity(4096);
    // Writing to a String cannot fail.
    let _ = encode_registry(&mut text, registry);
    if last {
        let _ = encode_eof(&mut text);
    }
    match format {
        TextFormat::OpenMetrics => text,
        TextFormat::PrometheusText => to_prometheus_text(&text),
    }
}

/// The entries of `Accept`-style header values (`name;param=..;q=0.5, ...`), each
/// lower-cased with its quality (1 when not given, 0 when unreadable).
fn qualities<'a>(values: impl Iterator<Item = &'a str>) -> impl Iterator<Item = (String, f32)> {
    values.flat_map(|v| v.split(',')).map(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
        (name, q)
    })
}

/// Whether the `Accept` header values prefer OpenMetrics to the Prometheus text
/// format: OpenMetrics with a quality above zero and not below that of any range
/// matching `text/plain` (`text/plain`, `text/*`, `*/*`). `q=0` means "not this".
fn wants_openmetrics<'a>(accept: impl Iterator<Item = &'a str>) -> bool {
    let mut openmetrics: Option<f32> = None;
    let mut text: Option<f32> = None;
    for (media, q) in qualities(accept) {
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut openmetrics,
            "text/plain" | "text/*" | "*/*" => &mut text,
            _ => continue,
        };
        // The most favourable range for each format counts.
        *slot = Some(slot.map_or(q, |old: f32| old.max(q)));
    }
    match openmetrics {
        Some(q) if q > 0.0 => text.is_none_or(|t| q >= t),
        _ => false,
    }
}

/// How `/metrics` is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    /// The parts together are one gzip member (RFC 1952), the report families'
    /// deflate blocks compressed once per report (see [`gzip_member`]).
    Gzip,
}

impl Encoding {
    /// Gzip when the `Accept-Encoding` header values accept it: `gzip` (or `*`
    /// when gzip is not named) with a quality above zero.
    pub fn negotiate<'a>(accept_encoding: impl Iterator<Item = &'a str>) -> Encoding {
        let mut gzip: Option<f32> = None;
        let mut any: Option<f32> = None;
        for (name, q) in qualities(accept_encoding) {
            match name.as_str() {
                "gzip" | "x-gzip" => gzip = Some(gzip.map_or(q, |old: f32| old.max(q))),
                "*" => any = Some(any.map_or(q, |old: f32| old.max(q))),
                _ => {}
            }
        }
        if gzip.or(any).is_some_and(|q| q > 0.0) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }
}

/// The report families, as sent plain or as the middle pieces of a gzip member.
#[derive(Clone)]
pub(crate) enum Encoded {
    Plain(Bytes),
    /// Raw deflate pieces, each ending in a sync flush, and the CRC-32 of the text
    /// they hold together.
    Gzip(Vec<Bytes>, crc32fast::Hasher),
}

/// A piece of a gzip body: `data` compressed as raw deflate blocks, at the fastest
/// level (as the compression of the rest of the HTTP side), with the CRC-32 of
/// `data` for the gzip trailer. Pieces compressed on their own are put together
/// into one gzip member ([`gzip_member`]): every piece but the last ends in a sync
/// flush (byte-aligned, not final), so their blocks follow one another as one
/// deflate stream.
#[derive(Clone)]
pub(crate) struct Deflated {
    pub(crate) data: Bytes,
    pub(crate) crc: crc32fast::Hasher,
}

pub(crate) fn deflate(data: &[u8], last: bool) -> Deflated {
    deflate_with(&mut compressor(), data, last)
}

/// A compressor for [`deflate_with`]: raw deflate at the fastest level.
pub(crate) fn compressor() -> flate2::Compress {
    flate2::Compress::new(flate2::Compression::fast(), false)
}

/// [`deflate`] with a compressor made by [`compressor`], reset first: many small
/// pieces are compressed without setting up a compressor for each.
pub(crate) fn deflate_with(c: &mut flate2::Compress, data: &[u8], last: bool) -> Deflated {
    use flate2::{FlushCompress, Status};
    c.reset();
    let mut out = Vec::with_capacity(data.len() / 8 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        let status = c.compress_vec(&data[consumed.min(data.len())..], &mut out, flush);
        let input_done = c.total_in() == data.len() as u64;
        match status {
            Ok(Status::StreamEnd) => break,
            // A flush is complete when it returns with output space to spare.
            Ok(_) if !last && input_done && out.len() < out.capacity() => break,
            Ok(_) => out.reserve(out.capacity().max(1024)),
            // Compressing into a Vec with room fails only on misuse; an empty body
            // is a truncated gzip stream the client reports.
            Err(e) => {
                tracing::error!("compressing /metrics failed: {e}");
                break;
            }
        }
    }
    out.shrink_to_fit();
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    Deflated {
        data: Bytes::from(out),
        crc,
    }
}

/// `head`, the pieces of `body` (whose text has the CRC-32 `body_crc`) and `tail`
/// as one gzip member (RFC 1952): the header, the deflate pieces, the CRC-32 and
/// length of the whole text. One member, because not every client reads a stream
/// of several (curl and reqwest stop after the first).
pub(crate) fn gzip_member(
    head: &Deflated,
    body: &[Bytes],
    body_crc: &crc32fast::Hasher,
    tail: &Deflated,
) -> Vec<Bytes> {
    // No name, no time, no flags; OS unknown.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = head.crc.clone();
    crc.combine(body_crc);
    crc.combine(&tail.crc);
    let len = crc.total_len();
    let mut first = Vec::with_capacity(HEADER.len() + head.data.len());
    first.extend_from_slice(&HEADER);
    first.extend_from_slice(&head.data);
    let mut last = Vec::with_capacity(tail.data.len() + 8);
    last.extend_from_slice(&tail.data);
    last.extend_from_slice(&crc.finalize().to_le_bytes());
    // ISIZE: the length modulo 2^32.
    last.extend_from_slice(&(len as u32).to_le_bytes());
    let mut parts = Vec::with_capacity(body.len() + 2);
    parts.push(first.into());
    parts.extend(body.iter().cloned());
    parts.push(last.into());
    parts
}

/// A `String` as `Bytes`, without the spare capacity it was grown with (the text
/// is kept as long as its report).
pub(crate) fn shared(mut text: String) -> Bytes {
    text.shrink_to_fit();
    Bytes::from(text)
}

/// The same exposition in the Prometheus text format 0.0.4, for clients that do not
/// ask for OpenMetrics (curl, promtool). The formats differ, for the families used
/// here, only in that OpenMetrics names a counter family without its `_total`
/// suffix, and in the closing `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + counters.len() * 16);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn om(accept: &[&str]) -> bool {
        wants_openmetrics(accept.iter().copied())
    }

    #[test]
    fn gzip_negotiation() {
        let gz = |v: &[&str]| Encoding::negotiate(v.iter().copied()) == Encoding::Gzip;
        assert!(gz(&["gzip"]), "what Prometheus sends");
        assert!(gz(&["deflate, gzip;q=1.0, *;q=0.5"]));
        assert!(gz(&["*"]));
        assert!(gz(&["GZIP"]));
        assert!(!gz(&[]));
        assert!(!gz(&["identity"]));
        assert!(!gz(&["gzip;q=0"]));
        assert!(!gz(&["gzip;q=0, *"]), "gzip named and refused");
        assert!(!gz(&["br, deflate"]));
    }

    #[test]
    fn negotiation() {
        // What Prometheus sends.
        assert!(om(&[
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
             application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
             escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        ]));
        assert!(om(&["application/openmetrics-text; version=1.0.0"]));
        assert!(!om(&[]));
        assert!(!om(&["*/*"]));
        assert!(!om(&["text/plain"]));
        assert!(!om(&["application/openmetrics-text;q=0, text/plain"]));
        assert!(!om(&["application/openmetrics-text; q=0.0"]));
        assert!(!om(&[
            "application/openmetrics-text;q=0.2",
            "text/plain;q=0.5"
        ]));
        assert!(om(&[
            "text/plain;q=0.5",
            "application/openmetrics-text;Q=0.9"
        ]));
        assert!(!om(&["application/openmetrics-text;q=zero"]));
    }

    #[test]
    fn deflated_pieces_make_one_gzip_member_whatever_their_sizes() {
        use std::io::Read;
        // Text that compresses poorly, so that the output outgrows its first buffer.
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b' ' + (x % 90) as u8
            })
            .collect();
        let texts: [&[u8]; 4] = [b"", b"# HELP a b\n", &noise, &[b'y'; 100_000]];
        for head in texts {
            for body in texts {
                for tail in texts {
                    let middle = deflate(body, false);
                    let parts = gzip_member(
                        &deflate(head, false),
                        std::slice::from_ref(&middle.data),
                        &middle.crc,
                        &deflate(tail, true),
                    );
                    let stream = parts.concat();
                    let mut decoded = Vec::new();
                    flate2::read::GzDecoder::new(stream.as_slice())
                        .read_to_end(&mut decoded)
                        .unwrap();
                    assert_eq!(decoded, [head, body, tail].concat());
                }
            }
        }
    }
}
