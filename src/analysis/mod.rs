//! Pure analysis: node data in, summaries and reports out. No I/O here.

/// An enum of label values from a fixed set, each variant with its value: the
/// value list, `as_str`, `Display` and prometheus-client's `EncodeLabelValue` all
/// come from the one declaration. (The crate's derive writes the variant's name,
/// which cannot spell values such as `kube-fledged`.)
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder,
            ) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}
pub(crate) use label_values;

pub mod eligibility;
pub mod entry_size;
pub mod held;
pub mod intern;
pub mod kubelet_settings;
pub mod list;
pub mod menu;
pub mod node;
pub mod plan;
pub mod prune;
pub mod reference;
pub mod report;
pub mod runtime;
pub mod selector;
pub mod verdict;
pub mod wanted;
pub mod wants;

pub use node::{InvalidField, NodeSummary, NodeView, summarize};
pub use report::{NodeReport, NodeStatus, Report, analyze};
pub use wanted::{Relevance, WantGroup, WantSource, Wanted};
#[cfg(test)]
mod stream_tests;
