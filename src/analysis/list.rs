//! What a list of nodes (an API server's pages, a nodes file) is summarized
//! into: the summaries, and the image entries held apart by digest alone
//! until the list is whole ([`super::held`]).
//!
//! When the list is whole, [`ListSummaries::finish`] works out the digests the
//! wanted images can be known by, makes entries of the held ones that carry
//! one, in their places, and frees what held them.

use super::held::{HeldBatch, claim};
use super::node::{Entry, NodeSummary};
use super::reference::{Digest, ImageRef};
use super::wanted::{KnownDigests, Relevance};
use std::sync::Arc;

/// The summaries of a list, in the order they were made, with the entries held
/// for them.
#[derive(Default)]
pub struct ListSummaries {
    nodes: Vec<NodeSummary>,
    /// Each batch's held entries, and where its summaries' places start.
    held: Vec<(usize, HeldBatch)>,
    /// The relevances the batches were summarized against (by pointer; one,
    /// unless the wanted images changed while the list was read).
    against: Vec<Arc<Relevance>>,
}

/// The digests the wanted images are known by, as a whole list shows them, and
/// the relevance its summaries were made against ([`Store::replace_list`](crate::store::Store::replace_list)).
#[derive(Debug)]
pub struct ListDigests {
    pub relevance: Arc<Relevance>,
    pub known: KnownDigests,
}

impl ListSummaries {
    /// Adds a summary made on this thread, in a batch run by
    /// [`holding`](super::held::holding): it takes what was held for it.
    pub fn push(&mut self, mut summary: NodeSummary) {
        if let Some(span) = summary.held.take() {
            claim(span, self.nodes.len());
        }
        self.nodes.push(summary);
    }

    /// A batch summarized against `relevance` is done, with `held` entries
    /// ([`holding`](super::held::holding)).
    pub fn batch_done(&mut self, relevance: &Arc<Relevance>, held: Option<HeldBatch>) {
        if !self.against.iter().any(|r| Arc::ptr_eq(r, relevance)) {
            self.against.push(relevance.clone());
        }
        if let Some(held) = held {
            self.held.push((0, held));
        }
    }

    /// Adds `other`'s summaries after these.
    pub fn append(&mut self, other: ListSummaries) {
        let base = self.nodes.len();
        self.nodes.extend(other.nodes);
        self.held
            .extend(other.held.into_iter().map(|(b, h)| (b + base, h)));
        for r in other.against {
            if !self.against.iter().any(|a| Arc::ptr_eq(a, &r)) {
                self.against.push(r);
            }
        }
    }

    /// The summaries made so far.
    pub fn nodes(&self) -> &[NodeSummary] {
        &self.nodes
    }

    /// How many names are held.
    pub fn held_names(&self) -> usize {
        self.held.iter().map(|(_, h)| h.len()).sum()
    }

    /// The summaries, whole: of the held entries, those a wanted image can be
    /// (one of their digests is a wanted reference's, or is carried by an entry
    /// with a kept tag on some node) are made entries, in their places. With
    /// them, the digests the wanted images are known by, when every batch was
    /// summarized against the one relevance, which did not know them: the
    /// store then keeps only such entries from now on.
    pub fn finish(self) -> (Vec<NodeSummary>, Option<ListDigests>) {
        let ListSummaries {
            mut nodes,
            held,
            against,
        } = self;
        if held.is_empty() {
            return (nodes, None);
        }
        let known = known_digests(&nodes, &against);
        let mut found: Vec<(usize, u32, Entry)> = Vec::new();
        for (base, batch) in &held {
            batch.entries(|node, pos, size, names| {
                if names
                    .iter()
                    .any(|(_, d)| known.contains(&Digest::from_sha256(*d)))
                {
                    let refs = names
                        .iter()
                        .map(|&(repo, d)| ImageRef {
                            repo: repo.clone(),
                            tag: None,
                            digest: Some(Digest::from_sha256(d)),
                        })
                        .collect();
                    found.push((base + node as usize, pos, Entry::new(refs, size)));
                }
            });
        }
        drop(held);
        place(&mut nodes, found);
        for node in &mut nodes {
            // The few not held (a digest other than sha256) go the same way.
            node.drop_unknown_digests(&known);
            node.all_digest_entries = false;
        }
        let digests = match &against[..] {
            [one] if one.known_digests().is_none() => Some(ListDigests {
                relevance: one.clone(),
                known,
            }),
            _ => None,
        };
        (nodes, digests)
    }
}

/// The digests the wanted images can be known by in `nodes`: those the
/// wanted references of `against` name, and every digest of an entry that
/// carries a kept tag (a wanted tag, or one a pattern matches). A superset of
/// what the analysis finds (`Analysis::known_digests`), which takes only the
/// entries carrying a wanted tag, and only their digests in its repository.
fn known_digests(nodes: &[NodeSummary], against: &[Arc<Relevance>]) -> KnownDigests {
    let mut known = KnownDigests::default();
    for r in against {
        known.extend(r.wanted_digests().iter().cloned());
    }
    for entry in nodes.iter().flat_map(|n| &n.relevant_images) {
        if entry.iter().any(|name| name.tag.is_some()) {
            known.extend(entry.iter().filter_map(|name| name.digest.clone()));
        }
    }
    known
}

/// Puts each found entry (summary's place, place among its kept entries,
/// entry) back among its summary's kept entries. `found` is in the order the
/// entries were held: by summary, then place, within each batch.
fn place(nodes: &mut [NodeSummary], mut found: Vec<(usize, u32, Entry)>) {
    // Stable: entries held at one place keep their order.
    found.sort_by_key(|&(node, pos, _)| (node, pos));
    let mut found = found.into_iter().peekable();
    while let Some(&(i, _, _)) = found.peek() {
        let Some(node) = nodes.get_mut(i) else {
            found.next();
            continue;
        };
        let old = std::mem::take(&mut node.relevant_images);
        let mut merged = Vec::with_capacity(old.len() + 1);
        let mut old = old.into_iter().enumerate().peekable();
        while let Some(&(_, pos, _)) = found.peek().filter(|f| f.0 == i) {
            while let Some((_, e)) = old.next_if(|(j, _)| (*j as u64) < u64::from(pos)) {
                merged.push(e);
            }
            if let Some((_, _, e)) = found.next() {
                merged.push(e);
            }
        }
        merged.extend(old.map(|(_, e)| e));
        merged.shrink_to_fit();
        node.relevant_images = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::held::holding;
    use crate::analysis::node::{NodeView, decoding_for, summarize};
    use crate::analysis::wanted::tests::wanted;
    use proptest::prelude::*;
    use serde_json::json;

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    /// A node whose entries each have the names given (`digest(n)` for `@n`).
    fn node(name: &str, entries: &[&[&str]]) -> serde_json::Value {
        let images: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, names)| {
                let names: Vec<String> = names
                    .iter()
                    .map(
                        |n| match n.split_once('@').map(|(r, d)| (r, d.parse::<u8>())) {
                            Some((repo, Ok(d))) => format!("{repo}@{}", digest(d)),
                            _ => n.to_string(),
                        },
                    )
                    .collect();
                json!({"names": names, "sizeBytes": 1000 - i})
            })
            .collect();
        json!({"metadata": {"name": name}, "status": {"images": images}})
    }

    fn relevance() -> Arc<Relevance> {
        Arc::new(Relevance::new(&wanted(&["ghcr.io/x/lab:w1"], &[], &[]), []))
    }

    /// The summaries of `nodes` made as a list batch is (folded while decoded
    /// when `folding`), leaving out those of `skip` after they were made.
    fn list_of(
        relevance: &Arc<Relevance>,
        nodes: &[serde_json::Value],
        skip: &[usize],
        folding: bool,
    ) -> ListSummaries {
        let mut out = ListSummaries::default();
        let mut batch = || {
            holding(relevance.known_digests().is_none(), || {
                for (i, n) in nodes.iter().enumerate() {
                    let view: NodeView = if folding {
                        decoding_for(relevance.clone(), || serde_json::from_value(n.clone()))
                    } else {
                        serde_json::from_value(n.clone())
                    }
                    .unwrap();
                    let s = summarize(&view, relevance).unwrap();
                    if !skip.contains(&i) {
                        out.push(s);
                    }
                }
            })
        };
        let ((), held) = batch();
        out.batch_done(relevance, held);
        out
    }

    /// The summaries of `nodes` made one by one, nothing held.
    fn one_by_one(relevance: &Relevance, nodes: &[serde_json::Value]) -> Vec<NodeSummary> {
        nodes
            .iter()
            .map(|n| summarize(&serde_json::from_value(n.clone()).unwrap(), relevance).unwrap())
            .collect()
    }

    fn names(s: &NodeSummary) -> Vec<String> {
        s.relevant_images
            .iter()
            .map(|e| {
                e.iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn held_entries_a_wanted_tag_is_known_by_come_back_in_their_places() {
        let r = relevance();
        let lab = "ghcr.io/x/lab";
        let nodes = [
            // The wanted tag, known by digest 1.
            node("a", &[&["ghcr.io/x/lab:w1", "ghcr.io/x/lab@1"]]),
            // Digest 1 by digest alone, between digest 2 alone and a kept tag.
            node(
                "b",
                &[
                    &["ghcr.io/x/lab:b7", "ghcr.io/x/lab@2"],
                    &["ghcr.io/x/lab@1"],
                    &["ghcr.io/x/lab:w1"],
                    &["ghcr.io/x/lab@3"],
                ],
            ),
        ];
        for folding in [true, false] {
            let list = list_of(&r, &nodes, &[], folding);
            assert_eq!(list.held_names(), 3, "digests 2, 1 and 3 of b are held");
            assert_eq!(names(&list.nodes()[1]), vec![format!("{lab}:w1")]);
            let (out, digests) = list.finish();
            assert_eq!(
                names(&out[1]),
                vec![format!("{lab}@{}", digest(1)), format!("{lab}:w1")],
                "folding: {folding}"
            );
            let digests = digests.expect("one relevance, which did not know them");
            assert!(Arc::ptr_eq(&digests.relevance, &r));
            let want: KnownDigests = [Digest::new(&digest(1))].into_iter().collect();
            assert_eq!(digests.known, want);
            assert!(
                out.iter()
                    .all(|n| !n.all_digest_entries && n.held.is_none())
            );
        }
    }

    #[test]
    fn an_entry_another_node_of_the_batch_has_is_shared_not_held() {
        let r = relevance();
        let shared: &[&str] = &["ghcr.io/x/lab@1"];
        let other: &[&str] = &["ghcr.io/x/lab@2"];
        let nodes = [
            node("a", &[&["ghcr.io/x/lab:w1", "ghcr.io/x/lab@1"]]),
            // Sizes go by place: b's and c's first entries are one image.
            node("b", &[shared, other]),
            node("c", &[shared]),
            node("d", &[other]),
        ];
        for folding in [true, false] {
            let list = list_of(&r, &nodes, &[], folding);
            assert_eq!(list.held_names(), 3, "b's two, and d's of another size");
            let (out, _) = list.finish();
            for n in &out[1..3] {
                assert_eq!(names(n), vec![format!("ghcr.io/x/lab@{}", digest(1))]);
            }
            assert!(Entry::ptr_eq(
                &out[1].relevant_images[0],
                &out[2].relevant_images[0]
            ));
            assert!(out[3].relevant_images.is_empty());
        }
    }

    #[test]
    fn a_node_left_out_does_not_give_its_entries_to_the_next() {
        let r = relevance();
        let nodes = [
            node("a", &[&["ghcr.io/x/lab:w1", "ghcr.io/x/lab@1"]]),
            // Left out (outside the node selector, say) after being read.
            node("skipped", &[&["ghcr.io/x/lab@1"]]),
            node("c", &[]),
        ];
        for folding in [true, false] {
            let (out, _) = list_of(&r, &nodes, &[1], folding).finish();
            assert_eq!(out.len(), 2);
            assert_eq!(out[1].name, "c");
            assert!(out[1].relevant_images.is_empty(), "{:?}", names(&out[1]));
        }
    }

    #[test]
    fn batches_are_appended_in_order_and_wanted_digests_count() {
        let r = Arc::new(Relevance::new(
            &wanted(&[&format!("ghcr.io/x/pinned@{}", digest(9))], &[], &[]),
            [],
        ));
        let mut list = list_of(&r, &[node("a", &[&["ghcr.io/x/pinned@8"]])], &[], true);
        list.append(list_of(
            &r,
            &[node(
                "b",
                &[&["ghcr.io/x/pinned@8"], &["ghcr.io/x/pinned@9"]],
            )],
            &[],
            true,
        ));
        let (out, digests) = list.finish();
        assert_eq!(
            out.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(out[0].relevant_images.is_empty());
        assert_eq!(
            names(&out[1]),
            vec![format!("ghcr.io/x/pinned@{}", digest(9))]
        );
        assert!(digests.is_some());
    }

    #[test]
    fn nothing_is_held_once_the_digests_are_known_and_several_relevances_tell_none() {
        let r = relevance();
        let known: KnownDigests = [Digest::new(&digest(1))].into_iter().collect();
        let told = Arc::new(r.with_known_digests(Some(Arc::new(known))));
        let nodes = [node("b", &[&["ghcr.io/x/lab@1"], &["ghcr.io/x/lab@2"]])];
        let list = list_of(&told, &nodes, &[], true);
        assert_eq!(list.held_names(), 0);
        let (out, digests) = list.finish();
        assert_eq!(
            names(&out[0]).len(),
            1,
            "the known digest is an entry at once"
        );
        assert!(digests.is_none());

        // A list read across a change of the wanted images tells nothing, but
        // still gives back what it held.
        let mut list = list_of(
            &r,
            &[node("a", &[&["ghcr.io/x/lab:w1", "ghcr.io/x/lab@1"]])],
            &[],
            true,
        );
        let other = relevance();
        list.append(list_of(&other, &nodes, &[], true));
        let (out, digests) = list.finish();
        assert!(digests.is_none());
        assert_eq!(names(&out[1]).len(), 1);
    }

    fn arb_nodes() -> impl Strategy<Value = Vec<serde_json::Value>> {
        let name = prop::sample::select(vec![
            "ghcr.io/x/lab:w1",
            "ghcr.io/x/lab:b1",
            "ghcr.io/x/lab:b2",
            "ghcr.io/x/lab@1",
            "ghcr.io/x/lab@2",
            "ghcr.io/x/lab@3",
            "ghcr.io/x/lab@4",
            "ghcr.io/x/other:w1",
            "ghcr.io/x/other@1",
            "ghcr.io/x/pinned@9",
            "ghcr.io/x/pinned@5",
            "ghcr.io/x/lab@sha512:0",
        ]);
        let entry = prop::collection::vec(name, 1..4);
        let entries = prop::collection::vec(entry, 0..8);
        prop::collection::vec(entries, 1..6).prop_map(|nodes| {
            nodes
                .iter()
                .enumerate()
                .map(|(i, entries)| {
                    let entries: Vec<Vec<String>> = entries
                        .iter()
                        .map(|e| {
                            e.iter()
                                .map(|n| match n.split_once("@sha512:") {
                                    Some((repo, _)) => format!("{repo}@sha512:{}", "ab".repeat(64)),
                                    None => n.to_string(),
                                })
                                .collect()
                        })
                        .collect();
                    let entries: Vec<Vec<&str>> = entries
                        .iter()
                        .map(|e| e.iter().map(String::as_str).collect())
                        .collect();
                    let entries: Vec<&[&str]> = entries.iter().map(Vec::as_slice).collect();
                    node(&format!("n{i}"), &entries)
                })
                .collect()
        })
    }

    proptest! {
        /// Holding changes nothing but which entries are kept for a digest
        /// alone: the summaries are those made one by one with the entries
        /// known by none of the digests told dropped, in the same order.
        #[test]
        fn a_held_list_is_the_list_made_whole_then_compacted(nodes in arb_nodes(), folding in any::<bool>()) {
            let r = Arc::new(Relevance::new(
                &wanted(&["ghcr.io/x/lab:w1", &format!("ghcr.io/x/pinned@{}", digest(9))], &[], &[]),
                [],
            ));
            let (held, digests) = list_of(&r, &nodes, &[], folding).finish();
            let digests = digests.expect("told");
            let mut whole = one_by_one(&r, &nodes);
            for n in &mut whole {
                n.drop_unknown_digests(&digests.known);
                n.all_digest_entries = false;
            }
            prop_assert_eq!(held, whole);
        }
    }
}
