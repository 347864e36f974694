//! Pure analysis: node data in, summaries and reports out. No I/O here.

/// An enum of label values from a fixed set. Each variant is encoded as its own
/// name, which is the label value (hence the lower-case variants), and `ALL` lists
/// them so that every series can be created at zero.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[allow(non_camel_case_types)]
        #[derive(
            Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord,
            prometheus_client::encoding::EncodeLabelValue,
        )]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant)),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use label_values;

pub mod cluster;
pub mod intern;
pub mod kubelet;
pub mod lenient;
pub mod node;
pub mod quantity;
pub mod reference;
pub mod selector;
pub mod wanted;

pub use cluster::{NodeReport, NodeStatus, Report, analyze};
pub use node::{InvalidField, NodeSummary, NodeView, summarize};
pub use wanted::Wanted;
