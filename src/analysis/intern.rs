//! Shared copies of what node summaries are made of: the strings of image names,
//! whole image entries and node labels.
//!
//! Thousands of nodes report the same few repositories and tags; a summary keeps
//! them as `Arc<str>` handed out here, so each distinct string is stored once
//! (measured in docs/performance.md). Digests are kept by value
//! ([`Digest`](super::reference::Digest)): a sha256 digest takes fewer bytes than
//! a pointer to shared text and its place in this set. Entries and labels are
//! kept behind thin pointers, 8 bytes on each node that has them.

use super::entry_size::EntrySize;
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
static ENTRIES: LazyLock<Mutex<Table<SharedEntry>>> = LazyLock::new(Default::default);

/// A node label, its key and its value, behind one thin pointer.
pub type SharedLabel = triomphe::Arc<(Arc<str>, Arc<str>)>;

/// Node labels: nodes share most of theirs (zone, pool, instance type, OS), and
/// a node keeps a pointer to the shared pair, 8 bytes where two shared strings
/// took 32.
static LABELS: LazyLock<Mutex<Table<SharedLabel>>> = LazyLock::new(Default::default);

/// Shared values found by content: a table of thin pointers, and its hasher.
struct Table<T> {
    table: hashbrown::HashTable<T>,
    hasher: Hasher,
}

type Hasher = foldhash::fast::RandomState;

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            table: hashbrown::HashTable::new(),
            hasher: Hasher::default(),
        }
    }
}

impl<T: Clone> Table<T> {
    /// The held value of hash `hash` that `is` the one wanted.
    fn find(&self, hash: u64, is: impl Fn(&T) -> bool) -> Option<&T> {
        self.table.find(hash, is)
    }

    /// Holds `value`, of hash `hash`, from now on (`rehash` hashes a held value
    /// as `hash` was); returns it.
    fn insert(&mut self, hash: u64, value: T, rehash: impl Fn(&Hasher, &T) -> u64) -> T {
        let Table { table, hasher } = self;
        table.insert_unique(hash, value.clone(), |held| rehash(hasher, held));
        value
    }

    /// Forgets what only the table holds (`count`: a value's strong count), and
    /// gives back the room of a table that is mostly empty.
    fn collect(&mut self, rehash: impl Fn(&Hasher, &T) -> u64, count: impl Fn(&T) -> usize) {
        let Table { table, hasher } = self;
        table.retain(|held| count(held) > 1);
        if sparse(table.capacity(), table.len()) {
            table.shrink_to_fit(|held| rehash(hasher, held));
        }
    }
}

/// A table keeps the room it grew to: after a huge node list is gone, that is
/// megabytes of empty buckets. Whether to give them back: once it is mostly empty.
fn sparse(capacity: usize, len: usize) -> bool {
    capacity > 4 * len + 1024
}

fn lock<T>(table: &'static LazyLock<Mutex<Table<T>>>) -> std::sync::MutexGuard<'static, Table<T>> {
    // Only ever inserted into or pruned whole, as the strings.
    table.lock().unwrap_or_else(|e| e.into_inner())
}

/// The one hash of an entry, for finding it and for placing it.
fn entry_hash(hasher: &Hasher, size: EntrySize, names: &[ImageRef]) -> u64 {
    hasher.hash_one((size, names))
}

fn held_entry_hash(hasher: &Hasher, e: &SharedEntry) -> u64 {
    entry_hash(hasher, e.header.header, &e.slice)
}

/// Whether a held entry is the one of `size` and `names`.
fn is_entry(size: EntrySize, names: &[ImageRef]) -> impl Fn(&SharedEntry) -> bool + '_ {
    move |e| e.header.header == size && e.slice == *names
}

/// The one hash of a label.
fn label_hash(hasher: &Hasher, key: &str, value: &str) -> u64 {
    hasher.hash_one((key, value))
}

fn held_label_hash(hasher: &Hasher, l: &SharedLabel) -> u64 {
    label_hash(hasher, &l.0, &l.1)
}

/// Whether a held label is `key`=`value`.
fn is_label<'a>(key: &'a str, value: &'a str) -> impl Fn(&SharedLabel) -> bool + 'a {
    move |l| &*l.0 == key && &*l.1 == value
}

/// The shared copy of an image entry of `size` with `names` (already interned
/// strings), made of `names` the first time.
pub fn intern_entry(size: EntrySize, names: Vec<ImageRef>) -> SharedEntry {
    let mut entries = lock(&ENTRIES);
    let hash = entry_hash(&entries.hasher, size, &names);
    if let Some(shared) = entries.find(hash, is_entry(size, &names)) {
        return shared.clone();
    }
    let shared = ThinArc::from_header_and_iter(size, names.into_iter());
    entries.insert(hash, shared, held_entry_hash)
}

/// The shared copy of the label `key`=`value`, its strings shared too.
pub fn intern_label(key: &str, value: &str) -> SharedLabel {
    let mut labels = lock(&LABELS);
    let hash = label_hash(&labels.hasher, key, value);
    if let Some(shared) = labels.find(hash, is_label(key, value)) {
        return shared.clone();
    }
    let shared = triomphe::Arc::new((intern_str(key), intern_str(value)));
    labels.insert(hash, shared, held_label_hash)
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

/// How many distinct strings, entries and labels are held.
pub fn len() -> (usize, usize, usize) {
    let entries = lock(&ENTRIES).table.len();
    let labels = lock(&LABELS).table.len();
    (strings().len(), entries, labels)
}

/// Forgets strings nothing uses any more (only the set holds them).
pub fn collect_garbage() {
    // Entries and labels first: a dropped one releases its strings.
    lock(&ENTRIES).collect(held_entry_hash, ThinArc::strong_count);
    lock(&LABELS).collect(held_label_hash, triomphe::Arc::strong_count);
    let mut strings = strings();
    strings.retain(|s| Arc::strong_count(s) > 1);
    shrink_if_sparse(&mut strings);
}

/// Gives back the room of a set that is mostly empty ([`sparse`]).
fn shrink_if_sparse<T: std::hash::Hash + Eq>(set: &mut Set<T>) {
    if sparse(set.capacity(), set.len()) {
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
        let set = lock(&ENTRIES);
        let hash = entry_hash(&set.hasher, size, names);
        set.find(hash, is_entry(size, names)).is_some()
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

    fn label_held(key: &str, value: &str) -> bool {
        let set = lock(&LABELS);
        let hash = label_hash(&set.hasher, key, value);
        set.find(hash, is_label(key, value)).is_some()
    }

    #[test]
    fn labels_are_shared_by_key_and_value() {
        use crate::analysis::eligibility::NodeLabels;
        let a = intern_label("intern-test/zone", "a");
        let b = intern_label("intern-test/zone", "a");
        assert!(triomphe::Arc::ptr_eq(&a, &b), "one copy of the same label");
        let c = intern_label("intern-test/zone", "b");
        assert!(!triomphe::Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&a.0, &c.0), "their key is one shared string");
        assert_eq!((&*c.0, &*c.1), ("intern-test/zone", "b"));
        // A node's labels hold the shared pairs, sorted; a key given twice keeps
        // its first value in order.
        let labels = NodeLabels::from_strs([
            ("intern-test/zone", "b"),
            ("intern-test/pool", "lab"),
            ("intern-test/zone", "a"),
        ]);
        assert_eq!(labels.get("intern-test/zone"), Some("a"));
        assert_eq!(labels.get("intern-test/pool"), Some("lab"));
        assert_eq!(labels.get("intern-test/other"), None);
        drop(labels);
        // Collected once no node holds them; the others stay.
        drop(c);
        collect_garbage();
        assert!(label_held("intern-test/zone", "a"));
        assert!(!label_held("intern-test/zone", "b"));
        assert!(!label_held("intern-test/pool", "lab"));
        drop((a, b));
        collect_garbage();
        assert!(!label_held("intern-test/zone", "a"));
    }
}
