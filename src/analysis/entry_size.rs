//! The size of an image entry, as a node reports it.

use std::fmt;

/// An image entry's `sizeBytes`, or unknown (malformed), in 8 bytes rather than
/// an `Option`'s 16: thousands of nodes keep dozens each. Sizes come from
/// non-negative `int64`s, so `u64::MAX` is free to mean unknown.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntrySize(u64);

impl EntrySize {
    /// `size`; a size of `u64::MAX` bytes (never an `int64`) is kept as one less.
    pub fn new(size: Option<u64>) -> EntrySize {
        EntrySize(size.map_or(u64::MAX, |s| s.min(u64::MAX - 1)))
    }

    pub fn get(self) -> Option<u64> {
        (self.0 != u64::MAX).then_some(self.0)
    }
}

impl fmt::Debug for EntrySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl PartialEq<Option<u64>> for EntrySize {
    fn eq(&self, other: &Option<u64>) -> bool {
        self.get() == *other
    }
}
