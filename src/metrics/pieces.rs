//! The report families of the last report rendered, kept as compressed pieces,
//! so that the first scrape after a node changed compresses only what changed.
//!
//! The exposition groups series by family, so each node has a slice in every
//! node family. The nodes (sorted by name) are cut into runs, each ending at a
//! node whose name hashes to a multiple of [`CHUNK_EVERY`] (so that a node that
//! arrives or goes changes one run, not every run after it); each run keeps, for
//! each node family, its series compressed as a raw deflate piece ending in a
//! sync flush. A new report makes again only the runs whose nodes' reports
//! changed; the other families (per image, per source, the cluster, the menu)
//! are small, and made again with each report. The pieces, in exposition order,
//! are the middle of one gzip member; their CRC-32s combine into the text's.

use super::exposition::{Deflated, Encoded, TextFormat, compressor, deflate_with, shared};
use super::families::write_samples;
use super::families::{node_families, report_text, write_header, write_other_families};
use super::to_prometheus_text;
use crate::analysis::report::{NodeReport, Report};
use bytes::Bytes;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// A node whose name hashes to a multiple of this ends a run: runs of 64 nodes
/// on average.
const CHUNK_EVERY: u64 = 64;

/// Most nodes in a run, however the names hash.
const CHUNK_MAX: usize = 512;

/// A run of nodes and its series in each node family.
struct Chunk {
    /// The nodes' places in the report's list.
    range: Range<usize>,
    /// By node family ([`node_families`]): the run's series, compressed; `None`
    /// where the family has none for these nodes.
    pieces: Vec<Option<Deflated>>,
}

/// The report families of one report, shared by every scrape of it: a client
/// that reads slowly holds a reference to these pieces, not a copy.
pub(crate) struct ReportPieces {
    pub(crate) report: Arc<Report>,
    chunks: Vec<Chunk>,
    /// The gzip pieces in exposition order, and the CRC-32 of their text.
    gzip: (Vec<Bytes>, crc32fast::Hasher),
    /// The plain text in each format, built when a scrape asks for it.
    plain: [Option<Bytes>; 2],
}

/// What making a report's pieces cost: runs made again, of how many.
pub(crate) struct Made {
    pub(crate) chunks: usize,
    pub(crate) of: usize,
}

impl ReportPieces {
    /// The pieces of `report`, taking those of `old` for every run whose nodes
    /// and their reports are the same.
    pub(crate) fn new(report: Arc<Report>, old: Option<ReportPieces>) -> (ReportPieces, Made) {
        let mut c = compressor();
        let (old_report, mut old_chunks) = match old {
            Some(o) => (Some(o.report), o.chunks),
            None => (None, Vec::new()),
        };
        // The old runs by their first node.
        let by_first: HashMap<&str, usize> = old_report
            .as_ref()
            .map(|r| {
                old_chunks
                    .iter()
                    .enumerate()
                    .map(|(i, ch)| (r.nodes[ch.range.start].name.as_str(), i))
                    .collect()
            })
            .unwrap_or_default();
        let nodes = &report.nodes;
        let mut made = 0;
        let mut chunks = Vec::new();
        for range in chunk_ranges(nodes) {
            let same = by_first
                .get(nodes[range.start].name.as_str())
                .copied()
                .filter(|&i| {
                    old_report.as_ref().is_some_and(|r| {
                        r.nodes[old_chunks[i].range.clone()] == nodes[range.clone()]
                    })
                });
            let pieces = match same {
                Some(i) => std::mem::take(&mut old_chunks[i].pieces),
                None => {
                    made += 1;
                    render_chunk(&nodes[range.clone()], &mut c)
                }
            };
            chunks.push(Chunk { range, pieces });
        }
        drop(by_first);
        drop(old_chunks);
        let gzip = join(&chunks, &report, &mut c);
        let of = chunks.len();
        let pieces = ReportPieces {
            report,
            chunks,
            gzip,
            plain: [None, None],
        };
        (pieces, Made { chunks: made, of })
    }

    /// The report families in `format`, plain (built at the first scrape that
    /// asks, then kept with the report) or as gzip pieces.
    pub(crate) fn encoded(&mut self, format: TextFormat, gzip: bool) -> Encoded {
        if gzip {
            // The report families are gauges, which both formats write alike.
            return Encoded::Gzip(self.gzip.0.clone(), self.gzip.1.clone());
        }
        let report = &self.report;
        let text = self.plain[format as usize].get_or_insert_with(|| {
            let text = report_text(report);
            shared(match format {
                TextFormat::OpenMetrics => text,
                TextFormat::PrometheusText => to_prometheus_text(&text),
            })
        });
        Encoded::Plain(text.clone())
    }

    /// How many plain texts are kept.
    pub(crate) fn plain_count(&self) -> usize {
        self.plain.iter().filter(|t| t.is_some()).count()
    }
}

/// The runs of `nodes`: each ends at a node whose name hashes to a multiple of
/// [`CHUNK_EVERY`], or after [`CHUNK_MAX`] nodes, or at the end.
fn chunk_ranges(nodes: &[NodeReport]) -> Vec<Range<usize>> {
    let mut ranges = Vec::with_capacity(nodes.len() / CHUNK_EVERY as usize + 1);
    let mut start = 0;
    for (i, node) in nodes.iter().enumerate() {
        if name_hash(&node.name).is_multiple_of(CHUNK_EVERY) || i + 1 - start >= CHUNK_MAX {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < nodes.len() {
        ranges.push(start..nodes.len());
    }
    ranges
}

/// FNV-1a of a node's name: the same in every process, so runs end at the same
/// nodes from one report to the next.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The series of `nodes` in each node family, each family's compressed.
fn render_chunk(nodes: &[NodeReport], c: &mut flate2::Compress) -> Vec<Option<Deflated>> {
    let mut text = String::new();
    node_families()
        .map(|spec| {
            text.clear();
            for node in nodes {
                write_samples(&mut text, spec, node);
            }
            (!text.is_empty()).then(|| deflate_with(c, text.as_bytes(), false))
        })
        .collect()
}

/// The HELP and TYPE lines of each node family, compressed (once per process).
fn node_headers() -> &'static [Deflated] {
    static HEADERS: OnceLock<Vec<Deflated>> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let mut c = compressor();
        node_families()
            .map(|spec| {
                let mut text = String::new();
                write_header(&mut text, spec);
                deflate_with(&mut c, text.as_bytes(), false)
            })
            .collect()
    })
}

/// The gzip pieces of the report families in exposition order: each node family
/// that has series (its HELP and TYPE lines, then each run's piece), then the
/// other families; and the CRC-32 of their text.
fn join(
    chunks: &[Chunk],
    report: &Report,
    c: &mut flate2::Compress,
) -> (Vec<Bytes>, crc32fast::Hasher) {
    let mut pieces = Vec::new();
    let mut crc = crc32fast::Hasher::new();
    let mut add = |d: &Deflated| {
        pieces.push(d.data.clone());
        crc.combine(&d.crc);
    };
    for (f, header) in node_headers().iter().enumerate() {
        let mut family = chunks
            .iter()
            .filter_map(|ch| ch.pieces[f].as_ref())
            .peekable();
        if family.peek().is_some() {
            add(header);
            family.for_each(&mut add);
        }
    }
    let mut other = String::new();
    write_other_families(&mut other, report);
    if !other.is_empty() {
        add(&deflate_with(c, other.as_bytes(), false));
    }
    (pieces, crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::report::MissingState;
    use crate::analysis::report::fixtures;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// A node from a few numbers: its name, images, and which wanted images it
    /// misses (in which state), agents' figures on some.
    fn node(n: u16, images: u8, missing: u8) -> NodeReport {
        let wanted = ["a:1", "b:2", "c@sha256:x"];
        let lacks: Vec<&str> = wanted
            .iter()
            .enumerate()
            .filter(|(i, _)| missing & (1 << i) != 0)
            .map(|(_, w)| *w)
            .collect();
        let state = [MissingState::Absent, MissingState::Hidden][usize::from(missing >> 7)];
        let mut r = fixtures::node(&format!("node-{n}"), u32::from(images), 50)
            .missing(&lacks, state)
            .build();
        if images.is_multiple_of(5) {
            r.runtime.runtime_images = Some(u32::from(images) + 3);
            r.kubelet.image_gc_high_threshold_ratio = Some(0.85);
        }
        r
    }

    fn report(nodes: &BTreeMap<u16, (u8, u8)>) -> Arc<Report> {
        let nodes = nodes.iter().map(|(&n, &(i, m))| node(n, i, m)).collect();
        Arc::new(fixtures::report(nodes, vec![]))
    }

    /// The text the gzip pieces hold.
    fn gunzip(pieces: &ReportPieces) -> String {
        let Encoded::Gzip(parts, crc) = pieces.gzip_encoded() else {
            unreachable!()
        };
        let end = crate::metrics::exposition::deflate(b"", true);
        let head = crate::metrics::exposition::deflate(b"", false);
        let member = crate::metrics::exposition::gzip_member(&head, &parts, &crc, &end);
        let mut text = String::new();
        flate2::read::GzDecoder::new(member.concat().as_slice())
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    impl ReportPieces {
        fn gzip_encoded(&self) -> Encoded {
            Encoded::Gzip(self.gzip.0.clone(), self.gzip.1.clone())
        }
    }

    #[test]
    fn one_changed_node_makes_one_run_again() {
        let mut nodes: BTreeMap<u16, (u8, u8)> = (0..2000).map(|n| (n, (10, 1))).collect();
        let first = report(&nodes);
        let (kept, made) = ReportPieces::new(first.clone(), None);
        assert_eq!(made.chunks, made.of);
        assert!(made.of > 10, "{} runs", made.of);
        assert_eq!(gunzip(&kept), report_text(&first));

        nodes.insert(777, (50, 3));
        let second = report(&nodes);
        let (kept, made) = ReportPieces::new(second.clone(), Some(kept));
        assert_eq!(made.chunks, 1);
        assert_eq!(gunzip(&kept), report_text(&second));

        nodes.remove(&5);
        nodes.insert(20_000, (1, 0));
        let third = report(&nodes);
        let (kept, made) = ReportPieces::new(third.clone(), Some(kept));
        assert!(made.chunks <= 2, "{} runs", made.of);
        assert_eq!(gunzip(&kept), report_text(&third));
    }

    proptest! {
        /// Whatever nodes come, change and go, the kept pieces hold the text of
        /// the report whole, byte for byte.
        #[test]
        fn the_pieces_hold_the_whole_text(
            reports in proptest::collection::vec(
                proptest::collection::btree_map(0u16..300, (any::<u8>(), any::<u8>()), 0..300),
                1..5,
            ),
        ) {
            let mut kept = None;
            for nodes in reports {
                let r = report(&nodes);
                let (pieces, _) = ReportPieces::new(r.clone(), kept.take());
                prop_assert_eq!(gunzip(&pieces), report_text(&r));
                kept = Some(pieces);
            }
        }
    }
}
