//! The families of the process itself, read at each scrape: the `process_*`
//! families every client_golang exporter exposes, with the same names and
//! meanings (help texts are client_golang's), and the interner's sizes. Reading
//! `/proc` is [`crate::process`]'s.

use super::Declared;
use crate::analysis::label_values;
use crate::process::Sample;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

pub const CPU_SECONDS: Declared = Declared::counter(
    "process_cpu_seconds",
    "Total user and system CPU time spent in seconds",
);
pub const OPEN_FDS: Declared =
    Declared::gauge("process_open_fds", "Number of open file descriptors");
pub const MAX_FDS: Declared =
    Declared::gauge("process_max_fds", "Maximum number of open file descriptors");
pub const VIRTUAL_MEMORY_BYTES: Declared = Declared::gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes",
);
pub const VIRTUAL_MEMORY_MAX_BYTES: Declared = Declared::gauge(
    "process_virtual_memory_max_bytes",
    "Maximum amount of virtual memory available in bytes",
);
pub const RESIDENT_MEMORY_BYTES: Declared = Declared::gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes",
);
pub const START_TIME_SECONDS: Declared = Declared::gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds",
);

/// What the interner holds: strings and image entries shared between node
/// summaries. Under node churn it must follow the live nodes, not grow.
pub const INTERNED: Declared = Declared::gauge(
    "imagecap_interned",
    "Distinct strings, image entries and node labels shared between node summaries",
);

label_values! {
    /// What the interner holds: the `kind` label of `imagecap_interned`.
    pub enum Interned {
        String = "string",
        Entry = "entry",
        Label = "label",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InternedLabels {
    kind: Interned,
}

/// Encodes the `process_*` families of one reading.
fn encode_sample(s: &Sample, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let gauge = |v: f64| ConstGauge::<f64>::new(v);
    CPU_SECONDS.encode(encoder, &ConstCounter::<f64>::new(s.cpu_seconds))?;
    OPEN_FDS.encode(encoder, &gauge(s.open_fds as f64))?;
    MAX_FDS.encode(encoder, &gauge(s.max_fds))?;
    VIRTUAL_MEMORY_BYTES.encode(encoder, &gauge(s.virtual_memory_bytes as f64))?;
    VIRTUAL_MEMORY_MAX_BYTES.encode(encoder, &gauge(s.virtual_memory_max_bytes))?;
    RESIDENT_MEMORY_BYTES.encode(encoder, &gauge(s.resident_memory_bytes as f64))?;
    START_TIME_SECONDS.encode(encoder, &gauge(s.start_time_seconds))
}

/// Encodes `imagecap_interned` from the interner's current sizes.
fn encode_interned(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let (strings, entries, labels) = crate::analysis::intern::len();
    let size = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    INTERNED.encode_gauges(
        encoder,
        [
            (Interned::String, strings),
            (Interned::Entry, entries),
            (Interned::Label, labels),
        ]
        .map(|(kind, n)| (InternedLabels { kind }, size(n))),
    )
}

/// The interner's sizes and the `process_*` families, read at each scrape with
/// `read`. When the process's figures cannot be read (no `/proc`), neither is
/// sent, and the reason is logged at DEBUG.
#[derive(Debug)]
pub(crate) struct ProcessFigures {
    pub(crate) read: fn() -> Result<Sample, String>,
}

impl Collector for ProcessFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        match (self.read)() {
            Ok(sample) => {
                encode_interned(&mut encoder)?;
                encode_sample(&sample, &mut encoder)
            }
            Err(e) => {
                tracing::debug!("no process metrics: {e}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    /// The OpenMetrics text of the process figures read with `read`.
    fn encoded(read: fn() -> Result<Sample, String>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessFigures { read }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode_registry(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn sample_in_metric_units() {
        let text = encoded(|| Ok(crate::process::tests::sample()));
        for line in [
            "# TYPE process_cpu_seconds counter",
            "process_cpu_seconds_total 1.87",
            "process_open_fds 9.0",
            "process_max_fds 1048576.0",
            "process_virtual_memory_bytes 123457536.0",
            "process_virtual_memory_max_bytes -1.0",
            "process_resident_memory_bytes 17375232.0",
            "process_start_time_seconds 1700009876.54",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        for kind in ["string", "entry", "label"] {
            let series = format!("imagecap_interned{{kind=\"{kind}\"}} ");
            assert!(text.contains(&series), "{series:?} in\n{text}");
        }
    }

    #[test]
    fn nothing_without_a_reading() {
        assert_eq!(encoded(|| Err("no /proc".into())), "");
    }
}
