//! Decoding what the cluster sends, apart from what it means: JSON read leniently
//! field by field, Kubernetes quantities, and list pages read one item at a time.
//! Nothing here knows a Node or an image; the `analysis` layer
//! builds on it.

pub mod lenient;
pub mod quantity;
pub mod stream;
