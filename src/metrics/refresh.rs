//! `imagecap_last_update_timestamp_seconds`: when the node data of the report
//! being sent was last refreshed, set by each scrape before it is encoded.

use super::Declared;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub const LAST_UPDATE: Declared = Declared::gauge(
    "imagecap_last_update_timestamp_seconds",
    "Unix time at which node data was last refreshed successfully",
);

/// The refresh time of the report being encoded; no series before the first
/// data: 0 would read as "stale since 1970".
#[derive(Debug, Default)]
pub(crate) struct RefreshTime(Mutex<Option<SystemTime>>);

impl RefreshTime {
    pub(crate) fn set(&self, at: Option<SystemTime>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Collector for RefreshTime {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let at = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(t) = at else {
            return Ok(());
        };
        let seconds = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        LAST_UPDATE.encode(&mut encoder, &ConstGauge::<f64>::new(seconds))
    }
}
