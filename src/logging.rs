//! Log filtering for messages that clients can cause at will.

use imagecap_exporter::serve::conn::RateLimited;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// At most one a minute of each kind of warning a client can trigger at will:
/// rustls's for an IP address sent as SNI (and other malformed SNI), which every
/// scrape by address would otherwise log.
#[derive(Default)]
pub struct ClientNoise {
    sni: RateLimited,
}

const EVERY: Duration = Duration::from_secs(60);

impl<S> Filter<S> for ClientNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN {
            return true;
        }
        // rustls logs through the `log` crate: such events carry their real target
        // in the `log.target` field.
        let mut target = LogTarget(None);
        event.record(&mut target);
        let target = target.0.as_deref().unwrap_or(meta.target());
        if target.starts_with("rustls::msgs::handshake") {
            return self.sni.check(EVERY).is_some();
        }
        true
    }
}

/// The `log.target` field of an event bridged from the `log` crate.
struct LogTarget(Option<String>);

impl Visit for LogTarget {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "log.target" {
            self.0 = Some(value.to_string());
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}
