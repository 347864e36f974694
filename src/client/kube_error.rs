//! API errors as one line. kube's own `Display` for an API error appends the whole
//! `Status { .. }` struct in Debug form; operators read logs line by line, so every
//! API error the exporter logs goes through [`OneLine`] (or [`WatcherLine`] for the
//! `kube::runtime` watcher's errors): the status's `reason`, `code` and `message`,
//! or the error and its causes, joined on one line.

use kube::core::Status;
use kube::runtime::watcher;
use std::fmt;

/// `kube::Error`, on one line: `Forbidden (403): nodes is forbidden: ...`.
pub struct OneLine<'a>(pub &'a kube::Error);

/// A `kube::runtime::watcher` error, on one line.
pub struct WatcherLine<'a>(pub &'a watcher::Error);

/// An API status on one line: reason, code and message, whichever are present.
pub struct StatusLine<'a>(pub &'a Status);

impl fmt::Display for StatusLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let reason = if s.reason.is_empty() {
            "error"
        } else {
            s.reason.as_str()
        };
        write!(f, "{reason} ({})", s.code)?;
        if !s.message.is_empty() {
            write!(f, ": {}", s.message)?;
        }
        Ok(())
    }
}

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            kube::Error::Api(s) => StatusLine(s).fmt(f),
            other => chain(other, f),
        }
    }
}

impl fmt::Display for WatcherLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            watcher::Error::InitialListFailed(e) => write!(f, "the list failed: {}", OneLine(e)),
            watcher::Error::WatchStartFailed(e) => {
                write!(f, "starting the watch failed: {}", OneLine(e))
            }
            watcher::Error::WatchError(s) => write!(f, "the watch failed: {}", StatusLine(s)),
            watcher::Error::WatchFailed(e) => write!(f, "the watch failed: {}", OneLine(e)),
            other => chain(other, f),
        }
    }
}

/// An error and its causes on one line ([`crate::text::with_causes`]).
fn chain(e: &(dyn std::error::Error + 'static), f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&crate::text::with_causes(e.to_string(), e.source()))
}

/// The API status of an error, when the API server answered one.
pub fn status(e: &kube::Error) -> Option<&Status> {
    match e {
        kube::Error::Api(s) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> Status {
        Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "nodes is forbidden: User \"system:serviceaccount:monitoring:imagecap\" \
                      cannot watch resource \"nodes\" in API group \"\" at the cluster scope"
                .into(),
            ..Status::default()
        }
    }

    #[test]
    fn api_errors_are_reason_code_and_message_without_a_struct_dump() {
        let e = kube::Error::Api(Box::new(forbidden()));
        let line = OneLine(&e).to_string();
        assert!(
            line.starts_with("Forbidden (403): nodes is forbidden: User"),
            "{line}"
        );
        assert!(!line.contains("Status {"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        // kube's own text would carry the dump.
        assert!(e.to_string().contains("Status {"));
    }

    #[test]
    fn a_status_without_reason_or_message_still_says_its_code() {
        let s = Status {
            code: 500,
            ..Status::default()
        };
        assert_eq!(StatusLine(&s).to_string(), "error (500)");
    }

    #[test]
    fn watcher_errors_name_the_step_and_keep_one_line() {
        let e = watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(forbidden())));
        let line = WatcherLine(&e).to_string();
        assert!(
            line.starts_with("starting the watch failed: Forbidden (403): nodes is forbidden"),
            "{line}"
        );
        assert!(!line.contains("Status {"), "{line}");
        let e = watcher::Error::WatchError(Box::new(Status {
            code: 410,
            reason: "Expired".into(),
            message: "too old resource version: 1 (5)".into(),
            ..Status::default()
        }));
        assert_eq!(
            WatcherLine(&e).to_string(),
            "the watch failed: Expired (410): too old resource version: 1 (5)"
        );
    }

    #[test]
    fn other_errors_carry_their_causes_on_one_line() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset\nby peer");
        let e = kube::Error::ReadEvents(io);
        let line = OneLine(&e).to_string();
        assert_eq!(line, "Error reading events stream: reset by peer");
    }
}
