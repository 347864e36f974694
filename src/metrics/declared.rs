//! A metric family's declaration: its name, help text and type in one place,
//! used both to register a metric kept for the life of the process and to encode
//! one read at scrape time (from a [`Collector`](prometheus_client::collector::Collector)).

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

/// A metric family: its name as OpenMetrics spells it (a counter's without the
/// `_total` of its samples), its help text (the encoder adds the final period)
/// and its type.
#[derive(Debug)]
pub struct Declared {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
}

impl Declared {
    pub const fn counter(name: &'static str, help: &'static str) -> Declared {
        Declared {
            name,
            help,
            kind: MetricType::Counter,
        }
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Declared {
        Declared {
            name,
            help,
            kind: MetricType::Gauge,
        }
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Declared {
        Declared {
            name,
            help,
            kind: MetricType::Histogram,
        }
    }

    /// The family's name in the Prometheus text format, as the README lists it: a
    /// counter's with `_total`.
    pub fn text_name(&self) -> String {
        match self.kind {
            MetricType::Counter => format!("{}_total", self.name),
            _ => self.name.to_string(),
        }
    }

    /// Registers `metric`, which must be of the declared type, in `registry`.
    pub(crate) fn register(&self, registry: &mut Registry, metric: impl Metric) {
        debug_assert_eq!(metric.metric_type(), self.kind, "{}", self.name);
        registry.register(self.name, self.help, metric);
    }

    /// Encodes `metric`, which must be of the declared type, as this family: from
    /// a collector, at scrape time.
    pub(crate) fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        metric: &impl EncodeMetric,
    ) -> Result<(), std::fmt::Error> {
        debug_assert_eq!(metric.metric_type(), self.kind, "{}", self.name);
        metric.encode(encoder.encode_descriptor(self.name, self.help, None, self.kind)?)
    }

    /// Encodes a gauge family of the given series (labels and value), from a
    /// collector, at scrape time; nothing at all when there is no series, as a
    /// registry leaves out an empty family.
    pub(crate) fn encode_gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
        &self,
        encoder: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (L, V)>,
    ) -> Result<(), std::fmt::Error> {
        debug_assert_eq!(self.kind, MetricType::Gauge, "{}", self.name);
        let mut series = series.into_iter().peekable();
        if series.peek().is_none() {
            return Ok(());
        }
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in series {
            metric.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }
}
