//! Shared copies of the strings image names are made of.
//!
//! Thousands of nodes report the same few repositories and tags; a summary keeps
//! them as `Arc<str>` handed out here, so each distinct string is stored once
//! (measured in docs/performance.md). Digests are kept by value
//! ([`Digest`](super::reference::Digest)): a sha256 digest takes fewer bytes than
//! a pointer to shared text and its place in this set.

use super::node::EntrySize;
use super::reference::{ImageRef, NameSplit};
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex};
use triomphe::ThinArc;

/// Strings come from the cluster, but the sets are only read by content and
/// pruned whole; a fast hasher, seeded per process.
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

static STRINGS: LazyLock<Mutex<Set<Arc<str>>>> = LazyLock::new(Default::default);

/// An image entry: its size and its names, behind one thin pointer.
pub type SharedEntry = ThinArc<EntrySize, ImageRef>;

/// Whole image entries (the names of one image and its size), which also repeat
/// from node to node: a summary keeps a pointer to the shared copy. A table of
/// thin pointers, found by content: 8 bytes a slot where a set of `Arc<[_]>`
/// takes 16, and on clusters whose images are all their own there is one slot
/// for each entry a node keeps.
static ENTRIES: LazyLock<Mutex<Entries>> = LazyLock::new(Default::default);

#[derive(Default)]
struct Entries {
    table: hashbrown::HashTable<SharedEntry>,
    hasher: foldhash::fast::RandomState,
}

/// The one hash of an entry, for finding it and for placing it.
fn entry_hash(hasher: &foldhash::fast::RandomState, size: EntrySize, names: &[ImageRef]) -> u64 {
    hasher.hash_one((size, names))
}

fn entries() -> std::sync::MutexGuard<'static, Entries> {
    // Only ever inserted into or pruned whole, as the strings.
    ENTRIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared copy of an image entry of `size` with `names` (already interned
/// strings).
pub fn intern_entry(size: EntrySize, names: Vec<ImageRef>) -> SharedEntry {
    let mut set = entries();
    let hash = entry_hash(&set.hasher, size, &names);
    let found = set
        .table
        .find(hash, |e| e.header.header == size && e.slice == names[..]);
    if let Some(shared) = found {
        return shared.clone();
    }
    let shared = ThinArc::from_header_and_iter(size, names.into_iter());
    let Entries { table, hasher } = &mut *set;
    table.insert_unique(hash, shared.clone(), |e| {
        entry_hash(hasher, e.header.header, &e.slice)
    });
    shared
}

impl ImageRef {
    /// The same reference built from shared copies of its strings, for keeping.
    pub fn interned(&self) -> ImageRef {
        ImageRef {
            repo: intern(&self.repo),
            tag: self.tag.as_ref().map(intern),
            digest: self.digest.clone(),
        }
    }
}

impl NameSplit<'_> {
    /// The normalized reference built from shared copies of its strings, given
    /// `repo`, the normalized form of its checked [repository](NameSplit::repository).
    pub fn interned(&self, repo: &str) -> ImageRef {
        ImageRef {
            repo: intern_str(repo),
            tag: self.tag().map(intern_str),
            digest: self.digest(),
        }
    }
}

fn strings() -> std::sync::MutexGuard<'static, Set<Arc<str>>> {
    // The set is only ever inserted into or pruned whole; a panic elsewhere while
    // it was locked cannot leave it inconsistent.
    STRINGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared copy of `s`.
pub fn intern(s: &Arc<str>) -> Arc<str> {
    let mut set = strings();
    match set.get(s.as_ref()) {
        Some(shared) => shared.clone(),
        None => {
            set.insert(s.clone());
            s.clone()
        }
    }
}

/// The shared copy of the string `s`, allocated only the first time it is seen.
pub fn intern_str(s: &str) -> Arc<str> {
    let mut set = strings();
    match set.get(s) {
        Some(shared) => shared.clone(),
        None => {
            let shared: Arc<str> = Arc::from(s);
            set.insert(shared.clone());
            shared
        }
    }
}

/// How many distinct strings and entries are held.
pub fn len() -> (usize, usize) {
    let entries = entries().table.len();
    (strings().len(), entries)
}

/// Forgets strings nothing uses any more (only the set holds them).
pub fn collect_garbage() {
    // Entries first: a dropped entry releases its strings.
    let mut set = entries();
    let Entries { table, hasher } = &mut *set;
    table.retain(|e| ThinArc::strong_count(e) > 1);
    if table.capacity() > 4 * table.len() + 1024 {
        table.shrink_to_fit(|e| entry_hash(hasher, e.header.header, &e.slice));
    }
    drop(set);
    let mut strings = strings();
    strings.retain(|s| Arc::strong_count(s) > 1);
    shrink_if_sparse(&mut strings);
}

/// A set keeps the table it grew to: after a huge node list is gone, that is
/// megabytes of empty buckets. Give them back once the set is mostly empty.
fn shrink_if_sparse<T: std::hash::Hash + Eq>(set: &mut Set<T>) {
    if set.capacity() > 4 * set.len() + 1024 {
        set.shrink_to_fit();
    }
}

/// Whether the set holds `s` (for tests of who cleans up).
#[cfg(test)]
pub fn contains(s: &str) -> bool {
    strings().contains(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a: Arc<str> = Arc::from("intern-test/one");
        let b: Arc<str> = Arc::from("intern-test/one");
        assert!(!Arc::ptr_eq(&a, &b));
        let (ia, ib) = (intern(&a), intern(&b));
        assert!(Arc::ptr_eq(&ia, &ib));
        assert_eq!(&*ia, "intern-test/one");
    }

    #[test]
    fn strings_are_shared_by_content() {
        let a = intern_str("intern-test/by-content");
        let b = intern(&Arc::from("intern-test/by-content"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &intern_str("intern-test/by-content")));
    }

    #[test]
    fn unused_strings_are_collected() {
        let kept = intern(&Arc::from("intern-test/kept"));
        drop(intern(&Arc::from("intern-test/dropped")));
        collect_garbage();
        let set = strings();
        assert!(set.contains("intern-test/kept"));
        assert!(!set.contains("intern-test/dropped"));
        drop(set);
        drop(kept);
    }

    /// Whether the table holds the entry of `names` and `size`.
    fn entry_held(size: EntrySize, names: &[ImageRef]) -> bool {
        let set = entries();
        let hash = entry_hash(&set.hasher, size, names);
        set.table
            .find(hash, |e| e.header.header == size && e.slice == *names)
            .is_some()
    }

    #[test]
    fn entries_are_shared_by_names_and_size() {
        use crate::analysis::node::Entry;
        let names = || {
            vec![
                ImageRef::parse("ghcr.io/intern-test/entry:1")
                    .unwrap()
                    .interned(),
            ]
        };
        let (ten, twenty) = (EntrySize::new(Some(10)), EntrySize::new(Some(20)));
        let a = Entry::new(names(), ten);
        let b = Entry::new(names(), ten);
        assert!(Entry::ptr_eq(&a, &b), "one copy of the same entry");
        assert_eq!((a.size(), a.names()), (ten, &names()[..]));
        let c = Entry::new(names(), twenty);
        assert!(!Entry::ptr_eq(&a, &c), "another size, another entry");
        assert_ne!(a, c);
        assert_eq!(c.size().get(), Some(20));
        let unknown = Entry::new(names(), EntrySize::new(None));
        assert_eq!(unknown.size().get(), None);
        assert_ne!(unknown, a);
        // A node keeps one thin pointer per entry.
        assert_eq!(std::mem::size_of::<Entry>(), 8);

        // Collected once no summary holds them; the others stay.
        drop((c, unknown));
        collect_garbage();
        assert!(entry_held(ten, &names()));
        assert!(!entry_held(twenty, &names()));
        assert!(!entry_held(EntrySize::new(None), &names()));
        drop((a, b));
        collect_garbage();
        assert!(!entry_held(ten, &names()));
    }
}
