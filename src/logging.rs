//! Log filtering for messages that clients can cause at will.

use imagecap_exporter::serve::conn::RateLimited;
use std::time::Duration;
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
        if *meta.level() == Level::WARN && meta.target().starts_with("rustls::msgs::handshake") {
            return self.sni.check(EVERY).is_some();
        }
        true
    }
}
