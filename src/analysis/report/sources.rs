//! One report per source of wanted images: how its last read went, the wanted
//! images it contributes and its loop pairs.

use super::counts::Counts;
use super::inputs::SourceState;
use super::wanted_images::WantedSet;
use crate::analysis::wanted::{WantSource, Wanted};
use serde::Serialize;
use std::collections::BTreeMap;

/// A source of wanted images and how its last read went.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub source: WantSource,
    /// Wanted images it contributes.
    pub images: u32,
    /// Its last read succeeded (always, for the configuration).
    pub up: bool,
    /// Unix time of its last successful read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_seconds: Option<f64>,
    /// Image references its last successful read listed past the cap on the
    /// images one source may contribute (`MAX_IMAGES_PER_SOURCE`), not wanted.
    pub dropped_images: u64,
    /// (eligible node, wanted image) pairs at the node's cap where the image is
    /// `hidden` or `unlistable`: each a pull the prepuller schedules again on every
    /// pass, for nothing.
    pub loop_pairs: u32,
}

/// One report per source of wanted images: the configuration's exact references
/// and its patterns when it has any (read at `configured_at`), then each of
/// `sources`, with the wanted images it contributes and its loop pairs.
pub(super) fn source_reports(
    set: &WantedSet,
    wanted: &Wanted,
    sources: &BTreeMap<WantSource, SourceState>,
    configured_at: Option<f64>,
    counts: &Counts,
) -> Vec<SourceReport> {
    let report = |source: WantSource, up, last_success_seconds, dropped_images| SourceReport {
        source,
        images: set
            .images
            .iter()
            .filter(|w| w.sources.contains(&source))
            .count() as u32,
        up,
        last_success_seconds,
        dropped_images,
        loop_pairs: counts.loop_pairs(source),
    };
    let mut reports = Vec::new();
    if !wanted.exact().is_empty() {
        reports.push(report(WantSource::Config, true, configured_at, 0));
    }
    if !wanted.patterns().is_empty() {
        reports.push(report(WantSource::Pattern, true, configured_at, 0));
    }
    for (&source, state) in sources {
        reports.push(report(
            source,
            state.up,
            state.last_success_seconds,
            state.dropped_images,
        ));
    }
    reports
}
