//! The analysis kept from one report to the next: each node's report, and what
//! each node adds to the inputs every node's report shares (the tags the
//! configuration's patterns select, the digests wanted tags are found with, the
//! sizes of wanted images by runtime). When a few nodes change and those shared
//! inputs come out the same, only those nodes' reports are made again; when they
//! do not, everything is.

use super::counts::Counts;
use super::images::image_reports;
use super::inputs::{Assumptions, NodeExtra, NodeExtras, SourceState};
use super::node::{NodeReport, NodeTally, node_report};
use super::presence::{SizeBook, node_sizes};
use super::sources::source_reports;
use super::wanted_images::{FastHash, WantedSet, node_pattern_tags, wanted_set};
use super::{Report, menu};
use crate::analysis::node::NodeSummary;
use crate::analysis::reference::{Digest, ImageRef};
use crate::analysis::wanted::{KnownDigests, WantSource, Wanted};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Everything a report is made from besides the node summaries.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub wanted: &'a Wanted,
    pub sources: &'a BTreeMap<WantSource, SourceState>,
    pub assume: Assumptions,
    /// What else is known of the nodes; with [`Analysis::update`], at least of
    /// the nodes that changed.
    pub extras: &'a NodeExtras,
}

/// What one node adds to the inputs all reports share.
struct Shares {
    runtime: Option<Arc<str>>,
    /// The tags each pattern (by its place) matches on the node (none when the
    /// configuration's rule rejects it), shared with the pool.
    patterns: Vec<(usize, Arc<ImageRef>)>,
    /// (wanted image, digest) pairs of its entries that carry a wanted tag,
    /// shared with the pool and every node that has them.
    digests: Vec<DigestPair>,
    /// (wanted image, size) pairs of its entries that are a wanted image.
    sizes: Vec<(usize, Option<u64>)>,
}

/// A wanted tag reference and a digest an entry carrying its tag has. Thousands
/// of nodes hold the same few pairs (and pattern tags): each keeps a pointer to
/// the pool's copy.
type DigestPair = Arc<(usize, Digest)>;

/// A node as the analysis saw it last.
struct Kept {
    name: String,
    shares: Shares,
    /// Its report while no [`Report`] holds it: made since the last report
    /// was, and moved into the next. (Kept once only, in the report.)
    fresh: Option<Box<NodeReport>>,
    tally: NodeTally,
}

/// The shared inputs, as counts over every node's [`Shares`].
#[derive(Default)]
struct Pool {
    /// For each pattern, the nodes each tag it matches is on.
    patterns: Vec<BTreeMap<Arc<ImageRef>, u32>>,
    /// The nodes each (wanted image, digest) pair is on.
    digests: HashMap<DigestPair, u32, FastHash>,
    sizes: SizeBook,
}

/// The items of `items` in a vector of their own size, kept for as long as a
/// node is unchanged. Collecting a vector's `into_iter` would reuse its
/// allocation, sized for the larger items it held: 48 bytes a pair or 80 a tag
/// where a pointer takes 8 or 16.
fn exact<T>(items: impl ExactSizeIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len());
    out.extend(items);
    out
}

/// The value of one shared input, before or after a change.
#[derive(PartialEq)]
enum Seen {
    Present(bool),
    Size(Option<Option<u64>>),
}

impl Pool {
    fn count(&mut self, shares: &Shares, add: bool) {
        self.count_tags(&shares.patterns, add);
        self.count_pairs(&shares.digests, add);
        self.sizes
            .count(shares.runtime.as_ref(), &shares.sizes, add);
    }

    /// Counts (`add`) or takes out one node's pattern tags.
    fn count_tags(&mut self, tags: &[(usize, Arc<ImageRef>)], add: bool) {
        for (p, tag) in tags {
            bump(self.patterns[*p].entry(tag.clone()), add);
        }
    }

    /// Counts (`add`) or takes out one node's (wanted image, digest) pairs.
    fn count_pairs(&mut self, pairs: &[DigestPair], add: bool) {
        for pair in pairs {
            if add {
                *self.digests.entry(pair.clone()).or_default() += 1;
            } else if let Some(n) = self.digests.get_mut(pair) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.digests.remove(pair);
                }
            }
        }
    }

    /// `tags` (pattern, tag), each tag as the pool's copy when it has one.
    fn share_tags(&self, tags: Vec<(usize, ImageRef)>) -> Vec<(usize, Arc<ImageRef>)> {
        let shared = tags.into_iter().map(|(p, tag)| {
            let shared = self.patterns.get(p).and_then(|m| m.get_key_value(&tag));
            (p, shared.map_or_else(|| Arc::new(tag), |(t, _)| t.clone()))
        });
        exact(shared)
    }

    /// `pairs`, each as the pool's copy when it has one.
    fn share(&self, pairs: Vec<(usize, Digest)>) -> Vec<DigestPair> {
        exact(
            pairs
                .into_iter()
                .map(|pair| match self.digests.get_key_value(&pair) {
                    Some((shared, _)) => shared.clone(),
                    None => Arc::new(pair),
                }),
        )
    }

    /// The shared inputs `shares` touch, as they stand.
    fn seen(&self, shares: &Shares) -> Vec<Seen> {
        let mut out = Vec::new();
        out.extend(
            shares
                .patterns
                .iter()
                .map(|(p, t)| Seen::Present(self.patterns[*p].contains_key(t))),
        );
        out.extend(
            shares
                .digests
                .iter()
                .map(|pair| Seen::Present(self.digests.contains_key(pair))),
        );
        if let Some(runtime) = &shares.runtime {
            out.extend(
                shares
                    .sizes
                    .iter()
                    .map(|&(i, _)| Seen::Size(self.sizes.seen(runtime, i))),
            );
        }
        out
    }
}

/// Adds one to a count, or takes one away (the key goes at 0).
fn bump<K: Ord>(entry: std::collections::btree_map::Entry<'_, K, u32>, add: bool) {
    use std::collections::btree_map::Entry;
    match (entry, add) {
        (Entry::Occupied(mut o), true) => *o.get_mut() += 1,
        (Entry::Vacant(v), true) => {
            v.insert(1);
        }
        (Entry::Occupied(o), false) if *o.get() <= 1 => {
            o.remove();
        }
        (Entry::Occupied(mut o), false) => *o.get_mut() -= 1,
        (Entry::Vacant(_), false) => {}
    }
}

/// The analysis of all nodes, kept to be brought up to date node by node.
pub struct Analysis {
    /// Sorted by name.
    nodes: Vec<Kept>,
    pool: Pool,
    set: WantedSet,
}

impl Analysis {
    /// The digests the wanted images are known by now: a wanted digest
    /// reference's, and those of the entries that carry a wanted tag. An entry
    /// known by none of them, and by no wanted tag, is no wanted image
    /// ([`NodeSummary::drop_unknown_digests`]).
    pub fn known_digests(&self) -> KnownDigests {
        let mut known = KnownDigests::default();
        for w in &self.set.images {
            known.extend(w.reference.digest.iter().cloned());
            known.extend(w.digests.iter().cloned());
        }
        known
    }

    /// The analysis of `nodes`, whole.
    pub fn new(nodes: &[&NodeSummary], inputs: Inputs) -> Analysis {
        let mut nodes = nodes.to_vec();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let wanted = inputs.wanted;
        let mut pool = Pool {
            patterns: vec![BTreeMap::new(); wanted.patterns().len()],
            ..Pool::default()
        };
        let patterns: Vec<Vec<(usize, Arc<ImageRef>)>> = nodes
            .iter()
            .map(|n| {
                let tags = pool.share_tags(node_pattern_tags(wanted, n));
                pool.count_tags(&tags, true);
                tags
            })
            .collect();
        let mut set = wanted_set(wanted, inputs.sources, |p| {
            Box::new(pool.patterns[p].keys().map(|tag| &**tag))
        });
        let digests: Vec<Vec<DigestPair>> = nodes
            .iter()
            .map(|n| {
                let pairs = pool.share(set.node_tag_digests(n));
                pool.count_pairs(&pairs, true);
                pairs
            })
            .collect();
        set.add_digests(pool.digests.keys().map(|pair| (pair.0, &pair.1)));
        let shares: Vec<Shares> = nodes
            .iter()
            .zip(patterns)
            .zip(digests)
            .map(|((node, patterns), digests)| {
                let sizes = node_sizes(&set, node);
                pool.sizes.count(node.runtime.as_ref(), &sizes, true);
                Shares {
                    runtime: node.runtime.clone(),
                    patterns,
                    digests,
                    sizes,
                }
            })
            .collect();
        let mut analysis = Analysis {
            nodes: Vec::with_capacity(nodes.len()),
            pool,
            set,
        };
        for (node, shares) in nodes.iter().zip(shares) {
            let kept = analysis.kept(node, shares, inputs);
            analysis.nodes.push(kept);
        }
        analysis
    }

    /// What the analysis keeps of `node`, whose shares are `shares`.
    fn kept(&self, node: &NodeSummary, shares: Shares, inputs: Inputs) -> Kept {
        let no_extra = NodeExtra::default();
        let extra = inputs.extras.get(&node.name).unwrap_or(&no_extra);
        let (report, tally) = node_report(node, &self.set, extra, inputs.assume, &self.pool.sizes);
        Kept {
            name: node.name.clone(),
            shares,
            fresh: Some(Box::new(report)),
            tally,
        }
    }

    /// Brings the analysis up to date after the nodes named in `changed` changed
    /// (arrived, went, or changed their summary or what else is known of them).
    /// `nodes` is every node now, sorted by name, each name once. The wanted
    /// images, the sources' groups and menu and the assumptions must be those the
    /// analysis was made with; `inputs.extras` must hold what is known of the
    /// changed nodes. `None` when an input every node's report shares changed:
    /// then the analysis must be made whole ([`Analysis::new`]).
    pub fn update(
        mut self,
        nodes: &[&NodeSummary],
        changed: &BTreeSet<String>,
        inputs: Inputs,
    ) -> Option<Analysis> {
        let fresh: Vec<(&String, Option<(&NodeSummary, Shares)>)> = changed
            .iter()
            .map(|name| {
                let node = nodes
                    .binary_search_by(|n| n.name.as_str().cmp(name))
                    .ok()
                    .map(|i| nodes[i]);
                (name, node.map(|n| (n, self.shares(n, inputs.wanted))))
            })
            .collect();
        if !self.count_changes(&fresh) {
            return None;
        }
        for (name, now) in fresh {
            let at = self.nodes.binary_search_by(|k| k.name.cmp(name));
            match (at, now) {
                (Ok(i), Some((node, shares))) => self.nodes[i] = self.kept(node, shares, inputs),
                (Err(i), Some((node, shares))) => {
                    let kept = self.kept(node, shares, inputs);
                    self.nodes.insert(i, kept)
                }
                (Ok(i), None) => {
                    self.nodes.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        Some(self)
    }

    /// What `node` adds to the shared inputs, against the current wanted images.
    fn shares(&self, node: &NodeSummary, wanted: &Wanted) -> Shares {
        Shares {
            runtime: node.runtime.clone(),
            patterns: self.pool.share_tags(node_pattern_tags(wanted, node)),
            digests: self.pool.share(self.set.node_tag_digests(node)),
            sizes: node_sizes(&self.set, node),
        }
    }

    /// Takes the old shares of the changed nodes out of the counts and puts their
    /// new ones (`fresh`) in; true when every shared input came out as it was.
    fn count_changes(&mut self, fresh: &[(&String, Option<(&NodeSummary, Shares)>)]) -> bool {
        let old: Vec<&Shares> = fresh
            .iter()
            .filter_map(|(name, _)| {
                let i = self.nodes.binary_search_by(|k| k.name.cmp(name)).ok()?;
                Some(&self.nodes[i].shares)
            })
            .collect();
        let new: Vec<&Shares> = fresh
            .iter()
            .filter_map(|(_, now)| now.as_ref().map(|(_, s)| s))
            .collect();
        let touched = || old.iter().chain(&new);
        let before: Vec<Seen> = touched().flat_map(|s| self.pool.seen(s)).collect();
        let mut pool = std::mem::take(&mut self.pool);
        for s in &old {
            pool.count(s, false);
        }
        for s in &new {
            pool.count(s, true);
        }
        let after: Vec<Seen> = touched().flat_map(|s| pool.seen(s)).collect();
        self.pool = pool;
        before == after
    }

    /// The report as the analysis stands: the node reports made since the last
    /// report moved into it, the others copied from `last`, the report made
    /// before (which must be given whenever the analysis was brought up to date
    /// rather than made whole).
    pub fn report(&mut self, last: Option<&Report>, inputs: Inputs) -> Report {
        let mut counts = Counts::new(self.set.images.len());
        let mut before = last.map_or(&[][..], |r| &r.nodes[..]).iter().peekable();
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for k in &mut self.nodes {
            let report = match k.fresh.take() {
                Some(fresh) => *fresh,
                None => {
                    // Both lists are sorted by name.
                    while before.next_if(|r| r.name < k.name).is_some() {}
                    before
                        .next_if(|r| r.name == k.name)
                        .cloned()
                        .unwrap_or_default()
                }
            };
            counts.add(&report, &k.tally);
            nodes.push(report);
        }
        Analysis::finish_with(&self.set, nodes, &counts, inputs)
    }

    /// The report of `nodes`: with the image and source reports made from
    /// `counts`, and Nublado's menu.
    fn finish_with(
        set: &WantedSet,
        nodes: Vec<NodeReport>,
        counts: &Counts,
        inputs: Inputs,
    ) -> Report {
        Report {
            images: image_reports(set, counts),
            eligible_nodes: counts.eligible_nodes,
            sources: source_reports(
                set,
                inputs.wanted,
                inputs.sources,
                inputs.assume.configured_at,
                counts,
            ),
            menu: menu(inputs.sources, &nodes),
            nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Relevance;
    use crate::analysis::node::{NodeView, summarize};
    use crate::analysis::wanted::tests::wanted;
    use proptest::prelude::*;
    use serde_json::json;

    /// A node from a few numbers: which of a handful of repositories, tags and
    /// digests it reports, their sizes, its runtime, a label the configuration's
    /// rule looks at, and how many images it reports against the cap.
    fn node(name: usize, images: &[(u8, u8, u8, u16)], runtime: u8, labelled: bool) -> NodeSummary {
        let images: Vec<_> = images
            .iter()
            .map(|&(repo, tag, digest, size)| {
                let repo = format!("ghcr.io/x/r{}", repo % 3);
                let digest = format!("sha256:{}", format!("{:02x}", digest % 4).repeat(32));
                json!({
                    "names": [format!("{repo}:v{}", tag % 4), format!("{repo}@{digest}")],
                    "sizeBytes": 1000 + u64::from(size % 3),
                })
            })
            .collect();
        let labels = if labelled {
            json!({"pool": "lab"})
        } else {
            json!({})
        };
        let v: NodeView = serde_json::from_value(json!({
            "metadata": {"name": format!("n{name}"), "labels": labels},
            "status": {
                "images": images,
                "nodeInfo": {
                    "containerRuntimeVersion": format!("containerd://1.{}", runtime % 2),
                    "architecture": "amd64",
                },
            }
        }))
        .unwrap();
        summarize(&v, &Relevance::new(&config(), [])).unwrap()
    }

    fn config() -> Wanted {
        wanted(
            &[
                "ghcr.io/x/r0:v1",
                "ghcr.io/x/r1:v2",
                "ghcr.io/x/r2@sha256:0101010101010101010101010101010101010101010101010101010101010101",
            ],
            &["^ghcr.io/x/r2:v[0-3]$"],
            &[("pool", "lab")],
        )
    }

    fn extra(cap: u8) -> NodeExtra {
        NodeExtra {
            kubelet: Some(crate::analysis::kubelet_settings::KubeletSettings {
                max_images: i64::from(cap % 4),
                image_gc_high_ratio: None,
                image_gc_low_ratio: None,
            }),
            ..NodeExtra::default()
        }
    }

    /// One change: a node (by number) arrives or changes, or goes; or its
    /// kubelet's cap is learnt.
    #[derive(Clone, Debug)]
    enum Change {
        Upsert(usize, Vec<(u8, u8, u8, u16)>, u8, bool),
        Remove(usize),
        Cap(usize, u8),
    }

    fn change() -> impl Strategy<Value = Change> {
        let images = proptest::collection::vec(any::<(u8, u8, u8, u16)>(), 0..5);
        prop_oneof![
            3 => (0usize..8, images, any::<u8>(), any::<bool>())
                .prop_map(|(n, i, r, l)| Change::Upsert(n, i, r, l)),
            1 => (0usize..8).prop_map(Change::Remove),
            1 => (0usize..8, any::<u8>()).prop_map(|(n, c)| Change::Cap(n, c)),
        ]
    }

    /// The inputs of the tests' analyses: a default cap of 2, no agents.
    fn inputs<'a>(
        w: &'a Wanted,
        sources: &'a BTreeMap<WantSource, SourceState>,
        extras: &'a NodeExtras,
    ) -> Inputs<'a> {
        let assume = Assumptions {
            default_max_images: 2,
            agents: false,
            configured_at: None,
        };
        Inputs {
            wanted: w,
            sources,
            assume,
            extras,
        }
    }

    #[test]
    fn nodes_share_the_pools_copies_of_their_digest_pairs_and_pattern_tags() {
        let w = config();
        let sources = BTreeMap::new();
        let extras = NodeExtras::new();
        let inputs = inputs(&w, &sources, &extras);
        // r0:v1 is wanted by tag, and r2:v3 once the pattern selects it on
        // labelled nodes: their entries' digests are pairs on each node.
        let images = [(0, 1, 2, 0), (2, 3, 3, 0)];
        let (a, b) = (node(1, &images, 0, true), node(2, &images, 0, true));
        let mut analysis = Analysis::new(&[&a, &b], inputs);
        let shares = |an: &Analysis, i: usize| {
            let s = &an.nodes[i].shares;
            (s.digests.clone(), s.patterns.clone())
        };
        let ((da, ta), (db, tb)) = (shares(&analysis, 0), shares(&analysis, 1));
        assert_eq!((da.len(), ta.len()), (2, 1), "{da:?} {ta:?}");
        assert_eq!(db.len(), da.len());
        assert!(da.iter().zip(&db).all(|(x, y)| Arc::ptr_eq(x, y)));
        assert!(Arc::ptr_eq(&ta[0].1, &tb[0].1));
        assert_eq!(analysis.pool.digests.get(&da[0]), Some(&2));
        assert_eq!(analysis.pool.patterns[0].get(&ta[0].1), Some(&2));
        // Kept for as long as the node is unchanged: no room for more.
        let spare = |an: &Analysis, i: usize| {
            let s = &an.nodes[i].shares;
            (
                s.digests.capacity() - s.digests.len(),
                s.patterns.capacity() - s.patterns.len(),
            )
        };
        assert_eq!(spare(&analysis, 0), (0, 0));
        // A node that arrives with the same ones takes the pool's copies too.
        let c = node(3, &images, 0, true);
        let changed = BTreeSet::from(["n3".to_string()]);
        analysis = analysis
            .update(&[&a, &b, &c], &changed, inputs)
            .expect("nothing shared changed");
        let (dc, tc) = shares(&analysis, 2);
        assert_eq!(dc.len(), da.len());
        assert!(dc.iter().zip(&da).all(|(x, y)| Arc::ptr_eq(x, y)));
        assert!(Arc::ptr_eq(&tc[0].1, &ta[0].1));
        assert_eq!(analysis.pool.digests.get(&da[0]), Some(&3));
        assert_eq!(analysis.pool.patterns[0].get(&ta[0].1), Some(&3));
        assert_eq!(spare(&analysis, 2), (0, 0));
    }

    proptest! {
        /// After any sequence of changes, each applied node by node, the kept
        /// analysis reports what a whole analysis of the same nodes reports.
        #[test]
        fn updated_node_by_node_it_equals_the_whole_analysis(
            batches in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..12),
        ) {
            let w = config();
            let sources = BTreeMap::new();
            let mut nodes: BTreeMap<String, NodeSummary> = BTreeMap::new();
            let mut extras = NodeExtras::new();
            let mut kept = Analysis::new(&[], inputs(&w, &sources, &extras));
            let mut last = None;
            for batch in batches {
                let mut changed = BTreeSet::new();
                for c in batch {
                    match c {
                        Change::Upsert(n, images, runtime, labelled) => {
                            let s = node(n, &images, runtime, labelled);
                            changed.insert(s.name.clone());
                            nodes.insert(s.name.clone(), s);
                        }
                        Change::Remove(n) => {
                            let name = format!("n{n}");
                            nodes.remove(&name);
                            extras.remove(&name);
                            changed.insert(name);
                        }
                        Change::Cap(n, cap) => {
                            let name = format!("n{n}");
                            if nodes.contains_key(&name) {
                                extras.insert(name.clone(), extra(cap));
                                changed.insert(name);
                            }
                        }
                    }
                }
                // Only what is known of the changed nodes goes to the update.
                let known: NodeExtras = changed
                    .iter()
                    .filter_map(|n| Some((n.clone(), extras.get(n)?.clone())))
                    .collect();
                let refs: Vec<&NodeSummary> = nodes.values().collect();
                // Made whole when a shared input changed, as the store does.
                kept = kept
                    .update(&refs, &changed, inputs(&w, &sources, &known))
                    .unwrap_or_else(|| Analysis::new(&refs, inputs(&w, &sources, &extras)));
                let whole = Analysis::new(&refs, inputs(&w, &sources, &extras)).report(None, inputs(&w, &sources, &extras));
                let now = kept.report(last.as_ref(), inputs(&w, &sources, &extras));
                prop_assert_eq!(&now, &whole);
                last = Some(now);
            }
        }
    }
}
