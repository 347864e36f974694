//! Shared copies of the strings image names are made of.
//!
//! Thousands of nodes report the same few repositories and tags; a summary keeps
//! them as `Arc<str>` handed out here, so each distinct string is stored once
//! (measured in docs/performance.md). Digests are kept by value
//! ([`Digest`](super::reference::Digest)): a sha256 digest takes fewer bytes than
//! a pointer to shared text and its place in this set.

use super::reference::{ImageRef, NameSplit};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};

/// Strings come from the cluster, but the sets are only read by content and
/// pruned whole; a fast hasher, seeded per process.
type Set<T> = HashSet<T, foldhash::fast::RandomState>;

static STRINGS: LazyLock<Mutex<Set<Arc<str>>>> = LazyLock::new(Default::default);
/// Whole image entries (the names of one image), which also repeat from node to
/// node: a summary keeps a pointer to the shared copy.
static ENTRIES: LazyLock<Mutex<Set<Arc<[ImageRef]>>>> = LazyLock::new(Default::default);

/// The shared copy of an image entry's names (already interned strings).
pub fn intern_entry(names: Vec<ImageRef>) -> Arc<[ImageRef]> {
    let mut set = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(shared) = set.get(names.as_slice()) {
        return shared.clone();
    }
    let shared: Arc<[ImageRef]> = names.into();
    set.insert(shared.clone());
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
    let entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner()).len();
    (strings().len(), entries)
}

/// Forgets strings nothing uses any more (only the set holds them).
pub fn collect_garbage() {
    // Entries first: a dropped entry releases its strings.
    let mut entries = ENTRIES.lock().unwrap_or_else(|e| e.into_inner());
    entries.retain(|e| Arc::strong_count(e) > 1);
    shrink_if_sparse(&mut entries);
    drop(entries);
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
}
