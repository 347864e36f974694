//! Image entries held apart while a list is read.
//!
//! An entry in a wanted repository that carries no kept tag is kept for its
//! digest alone: a wanted tag may be known by that digest on another node
//! (`wanted::Relevance`). Which digests those are is known only once every
//! node of a list is in. Where images are each their own (per-build tags),
//! such entries are most of what the summaries of a list would keep, and
//! nearly all of them are dropped once the digests are known. Made into
//! entries one by one while the list is read, they would sit between what the
//! summaries keep and leave the heap fragmented once dropped
//! (docs/performance.md). So while a list is read against a relevance that
//! does not know the digests yet, each thread holds them in one flat block
//! ([`HeldBatch`], 56 bytes a name, no allocation per entry), until the list
//! settles them (`list::ListSummaries::finish`) and frees the blocks whole.

use super::entry_size::EntrySize;
use super::reference::{Digest, ImageRef};
use hashbrown::HashTable;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

type FastHash = foldhash::fast::RandomState;

/// One name of a held entry.
#[derive(Clone, Copy)]
struct HeldName {
    digest: [u8; 32],
    size: EntrySize,
    /// The summary it belongs to: its place in the list the batch fills
    /// ([`UNCLAIMED`] until the summary is added to it).
    node: u32,
    /// How many of the node's kept entries come before its entry.
    pos: u32,
    /// Its repository's place in the batch's `repos`, with [`FIRST`] set on the
    /// first name of its entry.
    repo: u32,
}

/// Marks the first name of an entry in [`HeldName::repo`].
const FIRST: u32 = 1 << 31;
/// [`HeldName::node`] of a name whose summary is not made yet.
const UNCLAIMED: u32 = u32::MAX;

/// The entries held on one thread during one batch of a list: their names, one
/// after the other, and the few repositories they are in. The block is
/// reserved large enough to be mapped on its own (past the allocator's mmap
/// threshold, `sys::tune_allocator`), so freeing it gives the memory back.
#[derive(Default)]
pub struct HeldBatch {
    repos: Vec<Arc<str>>,
    /// By the address of the interned repository string.
    repo_index: HashMap<usize, u32, FastHash>,
    names: Vec<HeldName>,
    /// The entries held, by the place of their first name, found by content:
    /// an entry a second node of the batch has is no node's own, and is made
    /// an entry shared by them instead ([`hold`]). Only while the batch is read.
    seen: HashTable<u32>,
    hasher: FastHash,
}

/// Names a block is first reserved for (448 KiB).
const BLOCK_NAMES: usize = 8192;

impl HeldBatch {
    /// How many names are held.
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    /// Holds the entry of `names` (each [`held_name`]) and `size`, unless
    /// this batch holds it already: false then.
    fn push(&mut self, names: &[ImageRef], size: EntrySize, pos: u32) -> bool {
        let hash = entry_hash(
            &self.hasher,
            size,
            names
                .iter()
                .filter_map(held_name)
                .map(|(r, d)| (address(r), d)),
        );
        let HeldBatch {
            repos,
            names: held,
            seen,
            hasher,
            repo_index,
        } = self;
        let is = |&first: &u32| {
            let first = first as usize;
            let group = held.get(first..first + names.len());
            group.is_some_and(|group| {
                let given = names.iter().filter_map(held_name);
                group.iter().zip(given).enumerate().all(|(i, (h, (r, d)))| {
                    (h.repo & FIRST != 0) == (i == 0)
                        && h.size == size
                        && h.digest == *d
                        && Arc::ptr_eq(&repos[(h.repo & !FIRST) as usize], r)
                }) && held
                    .get(first + names.len())
                    .is_none_or(|n| n.repo & FIRST != 0)
            })
        };
        if seen.find(hash, is).is_some() {
            return false;
        }
        if held.capacity() == 0 {
            held.reserve_exact(BLOCK_NAMES);
        }
        let first = held.len() as u32;
        for (i, (repo, digest)) in names.iter().filter_map(held_name).enumerate() {
            let next = repos.len() as u32;
            let index = *repo_index.entry(address(repo)).or_insert(next);
            if index == next {
                repos.push(Arc::clone(repo));
            }
            held.push(HeldName {
                digest: *digest,
                size,
                node: UNCLAIMED,
                pos,
                repo: index | if i == 0 { FIRST } else { 0 },
            });
        }
        seen.insert_unique(hash, first, |&f| held_hash(hasher, repos, held, f as usize));
        true
    }

    /// The names of `span` belong to summary `node`.
    fn claim(&mut self, span: HeldSpan, node: u32) {
        let range = span.start as usize..span.end as usize;
        if let Some(names) = self.names.get_mut(range) {
            for n in names {
                n.node = node;
            }
        }
    }
}

/// The address of an interned repository string: who it is, in a batch
/// that holds a copy of it.
fn address(repo: &Arc<str>) -> usize {
    Arc::as_ptr(repo) as *const u8 as usize
}

/// The hash of a held entry by its size and names (repository, digest).
fn entry_hash<'a>(
    hasher: &FastHash,
    size: EntrySize,
    names: impl Iterator<Item = (usize, &'a [u8; 32])>,
) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = hasher.build_hasher();
    size.hash(&mut h);
    for n in names {
        n.hash(&mut h);
    }
    h.finish()
}

/// [`entry_hash`] of the entry held from `names[first]`.
fn held_hash(hasher: &FastHash, repos: &[Arc<str>], names: &[HeldName], first: usize) -> u64 {
    let group = names[first..]
        .iter()
        .enumerate()
        .take_while(|(i, n)| *i == 0 || n.repo & FIRST == 0)
        .map(|(_, n)| (address(&repos[(n.repo & !FIRST) as usize]), &n.digest));
    entry_hash(hasher, names[first].size, group)
}

/// The names held for one node's images, on the thread that read them: its
/// summary carries them until it is added to its list
/// (`list::ListSummaries::push`).
/// The names of a node that is not summarized (outside the node selector,
/// malformed) are never claimed, and left out when the list is whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldSpan {
    start: u32,
    end: u32,
}

thread_local! {
    /// Set while this thread holds entries ([`holding`]).
    static HOLDING: RefCell<Option<HeldBatch>> = const { RefCell::new(None) };
}

/// Runs `f`, a batch of a list summarized on this thread, holding the entries
/// kept for a digest alone apart when `hold` (the relevance does not know the
/// digests the wanted images are known by yet); returns what was held then.
/// Summaries made in `f` claim what was held for them when added to their
/// list (`list::ListSummaries::push`) on this thread, in `f`.
pub fn holding<R>(hold: bool, f: impl FnOnce() -> R) -> (R, Option<HeldBatch>) {
    if !hold {
        return (f(), None);
    }
    struct Restore(Option<HeldBatch>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            HOLDING.with_borrow_mut(|h| *h = previous);
        }
    }
    let restore = Restore(HOLDING.with_borrow_mut(|h| h.replace(HeldBatch::default())));
    let out = f();
    let mut held = HOLDING.with_borrow_mut(Option::take).unwrap_or_default();
    drop(restore);
    held.seen = HashTable::new();
    (out, Some(held))
}

/// How many names this thread holds, when it holds entries ([`holding`]).
fn held_len() -> Option<usize> {
    HOLDING.with(|h| h.try_borrow().ok()?.as_ref().map(HeldBatch::len))
}

/// Runs `f`, which reads one node's images: the span of the names it held.
pub(super) fn holding_for_node(f: impl FnOnce()) -> Option<HeldSpan> {
    let start = held_len();
    f();
    let (start, end) = (start?, held_len()?);
    (end > start).then(|| HeldSpan {
        start: u32::try_from(start).unwrap_or(u32::MAX),
        end: u32::try_from(end).unwrap_or(u32::MAX),
    })
}

/// A name as it is held: its repository and its sha256 digest, when it has
/// no tag and such a digest.
fn held_name(n: &ImageRef) -> Option<(&Arc<str>, &[u8; 32])> {
    match (&n.tag, n.digest.as_ref().and_then(Digest::sha256)) {
        (None, Some(d)) => Some((&n.repo, d)),
        _ => None,
    }
}

/// Holds an entry kept for its digests alone (`names`, of `size`, after `pos`
/// kept entries of the node being summarized) when this thread holds such
/// entries ([`holding`]): true when it is held, false when it must be made an
/// entry now: no batch holds, a name has a tag or a digest other than sha256,
/// or another node of the batch has the entry (an image shared by nodes is
/// one entry for all of them, 8 bytes a node, where holding it would take 56
/// bytes a name on each).
pub(super) fn hold(names: &[ImageRef], size: EntrySize, pos: usize) -> bool {
    let Ok(pos) = u32::try_from(pos) else {
        return false;
    };
    if !names.iter().all(|n| held_name(n).is_some()) {
        return false;
    }
    HOLDING.with(|h| match h.try_borrow_mut() {
        Ok(mut h) => match h.as_mut() {
            Some(batch) => batch.push(names, size, pos),
            None => false,
        },
        Err(_) => false,
    })
}

/// The names of `span` belong to summary `node` of its list.
pub(super) fn claim(span: HeldSpan, node: usize) {
    HOLDING.with(|h| {
        if let Ok(mut h) = h.try_borrow_mut()
            && let Some(batch) = h.as_mut()
        {
            batch.claim(span, u32::try_from(node).unwrap_or(UNCLAIMED));
        }
    });
}

impl HeldBatch {
    /// Calls `f` with each held entry its summary claimed: the summary's
    /// place, the entry's place among that summary's kept entries, its size,
    /// and its names (repository, digest).
    pub(super) fn entries(&self, mut f: impl FnMut(u32, u32, EntrySize, &[(&Arc<str>, [u8; 32])])) {
        let mut names: Vec<(&Arc<str>, [u8; 32])> = Vec::new();
        let mut current: Option<&HeldName> = None;
        for n in &self.names {
            if n.node == UNCLAIMED {
                continue;
            }
            if n.repo & FIRST != 0 {
                if let Some(c) = current.take() {
                    f(c.node, c.pos, c.size, &names);
                }
                names.clear();
                current = Some(n);
            }
            names.push((&self.repos[(n.repo & !FIRST) as usize], n.digest));
        }
        if let Some(c) = current {
            f(c.node, c.pos, c.size, &names);
        }
    }
}
