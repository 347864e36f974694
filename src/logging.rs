//! Log filtering for messages that clients can cause at will, and text-format
//! fields that free text from outside cannot forge.

use imagecap_exporter::serve::conn::RateLimited;
use imagecap_exporter::text::escape_controls;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::{Context, Filter};

/// The longest field value of a text log line; a longer one is cut, its size said.
pub const MAX_FIELD: usize = 2048;

/// The fields of text-format log lines (as tracing-subscriber's default: the
/// message, then `name=value`), with every value's control characters escaped and
/// a value longer than [`MAX_FIELD`] cut: a node name, a Nublado comment or an
/// error body with a newline or a terminal sequence can neither forge a log line
/// nor reach the terminal, and a 1 MB name does not make a 1 MB line. (The JSON
/// format needs none of this: its values are JSON strings.)
pub struct SafeFields;

impl<'w> FormatFields<'w> for SafeFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = SafeVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct SafeVisitor<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl Visit for SafeVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"))
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let name = field.name();
        // The `log` crate's metadata, shown by the formatter already.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let text = format!("{value:?}");
        let text = escape_controls(&text, MAX_FIELD);
        let sep = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        self.result = match name {
            "message" => write!(self.writer, "{sep}{text}"),
            name => write!(
                self.writer,
                "{sep}{}={text}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The text lines that `log` produces through [`SafeFields`].
    fn text_log(log: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(SafeFields)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn free_text_cannot_forge_log_lines() {
        let name = "n1\n2026-01-01T00:00:00Z ERROR forged\x1b[31m";
        let huge = "x".repeat(1 << 20);
        let out = text_log(|| {
            tracing::warn!(node = %name, count = 3, "node {name} is odd");
            tracing::info!(node = %huge, "a long name");
            tracing::info!(r#type = "plain", "ok");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(!out.contains('\x1b') && !out.contains('\r'), "{out:?}");
        assert!(
            lines[0].ends_with(
                "node n1\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[31m is odd \
                 node=n1\\n2026-01-01T00:00:00Z ERROR forged\\u{1b}[31m count=3"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[1].len() < MAX_FIELD + 200, "{} bytes", lines[1].len());
        assert!(
            lines[1].ends_with("...(1048576 bytes)"),
            "{}",
            &lines[1][..100]
        );
        assert!(lines[2].ends_with(" ok type=\"plain\""), "{}", lines[2]);
    }
}
