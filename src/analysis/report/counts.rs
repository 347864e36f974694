//! What the nodes add up to, per wanted image and per source: the counts the
//! image and source reports are made of.

use super::node::{NodeReport, NodeTally};
use crate::analysis::wanted::WantSource;
use std::collections::BTreeMap;

/// The counts over all nodes, per wanted image and per source.
pub(super) struct Counts {
    /// Eligible nodes that report each wanted image.
    pub(super) present_on: Vec<u32>,
    /// Nodes eligible for each wanted image.
    pub(super) eligible_on: Vec<u32>,
    /// Nodes eligible for at least one wanted image.
    pub(super) eligible_nodes: u32,
    /// (eligible node, wanted image) pairs of the prepull loop, by source.
    pub(super) loop_pairs: BTreeMap<WantSource, u32>,
}

impl Counts {
    pub(super) fn new(images: usize) -> Counts {
        Counts {
            present_on: vec![0; images],
            eligible_on: vec![0; images],
            eligible_nodes: 0,
            loop_pairs: BTreeMap::new(),
        }
    }

    /// Adds one node: its report and what was tallied on it.
    pub(super) fn add(&mut self, report: &NodeReport, tally: &NodeTally) {
        for &i in &report.prepull.wanted {
            self.eligible_on[i as usize] += 1;
        }
        for &i in &tally.present {
            self.present_on[i] += 1;
        }
        for (&source, &pairs) in &tally.loop_pairs {
            *self.loop_pairs.entry(source).or_default() += pairs;
        }
        self.eligible_nodes += u32::from(report.prepull.eligible);
    }

    /// The loop pairs counted for `source`.
    pub(super) fn loop_pairs(&self, source: WantSource) -> u32 {
        self.loop_pairs.get(&source).copied().unwrap_or(0)
    }
}
