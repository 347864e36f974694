//! The exposition machinery: the two text formats, and gzip made of pieces
//! compressed apart (so text kept per report is compressed once).

use crate::analysis::cluster::Report;
use bytes::Bytes;
use std::sync::Arc;

/// The exposition formats of `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4 ([`to_prometheus_text`]).
    PrometheusText,
}

/// How `/metrics` is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    /// The parts together are one gzip member (RFC 1952), the report families'
    /// deflate blocks compressed once per report (see [`gzip_member`]).
    Gzip,
}

/// The encoded report families of one report, shared by every scrape of it: a
/// client that reads slowly holds a reference to this text, not a copy.
pub(crate) struct ReportText {
    pub(crate) report: Arc<Report>,
    /// By format (OpenMetrics, Prometheus text) and encoding (plain, gzip): each
    /// built at the first scrape that asks for it.
    pub(crate) texts: [[Option<Encoded>; 2]; 2],
}

/// The report families, as sent plain or as the middle piece of a gzip member.
#[derive(Clone)]
pub(crate) enum Encoded {
    Plain(Bytes),
    Gzip(Deflated),
}

impl ReportText {
    pub(crate) fn slot(&mut self, format: Format, encoding: Encoding) -> &mut Option<Encoded> {
        &mut self.texts[format as usize][encoding as usize]
    }

    pub(crate) fn get(&self, format: Format, encoding: Encoding) -> Option<&Encoded> {
        self.texts[format as usize][encoding as usize].as_ref()
    }

    /// How many texts are kept (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.texts.iter().flatten().filter(|t| t.is_some()).count()
    }
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
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut c = Compress::new(Compression::fast(), false);
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

/// `head`, `body` and `tail` as one gzip member (RFC 1952): the header, the three
/// deflate pieces, the CRC-32 and length of the whole text. One member, because
/// not every client reads a stream of several (curl and reqwest stop after the
/// first).
pub(crate) fn gzip_member(head: &Deflated, body: &Deflated, tail: &Deflated) -> [Bytes; 3] {
    // No name, no time, no flags; OS unknown.
    const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut crc = head.crc.clone();
    crc.combine(&body.crc);
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
    [first.into(), body.data.clone(), last.into()]
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
