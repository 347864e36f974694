//! Free text from outside (node names, Nublado comments, image references, error
//! bodies) made safe to show on a terminal or in a text log line.

use std::borrow::Cow;
use std::fmt::Write;

/// The longest free text shown whole: a longer one is cut, with its size said.
pub const MAX_SHOWN: usize = 1024;

/// Characters that could forge or hide what a terminal or a log shows: the C0 and
/// C1 controls and DEL (newlines, ESC for terminal sequences), the Unicode line
/// and paragraph separators, and the bidirectional overrides and isolates that
/// reorder what is displayed.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` with every character of [`needs_escape`] written as a Rust escape (`\n`,
/// `\u{1b}`), and cut once the result would pass `max` bytes, with
/// `...(N bytes)` (N the size of the whole `text`) in place of the rest. The
/// result holds no control character and at most `max` + 32 bytes; text that
/// needs neither is returned as it is.
pub fn escape_controls(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for c in text.chars() {
        let before = out.len();
        if needs_escape(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            let _ = write!(out, "...({} bytes)", text.len());
            break;
        }
    }
    Cow::Owned(out)
}

/// An error message on one line: `text`, then each cause from `first` on whose
/// text it does not already carry, joined with ": ", every line break folded
/// into a space.
pub fn with_causes(mut text: String, first: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut cause = first;
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    if !text.contains(['\n', '\r']) {
        return text;
    }
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

/// [`escape_controls`] at [`MAX_SHOWN`].
pub fn shown(text: &str) -> Cow<'_, str> {
    escape_controls(text, MAX_SHOWN)
}

#[cfg(test)]
mod tests {

    #[test]
    fn causes_are_added_once_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Wrap(String, #[source] std::io::Error);
        let reset = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset\nby peer");
        let e = Wrap("request failed".into(), reset());
        assert_eq!(
            with_causes(e.to_string(), std::error::Error::source(&e)),
            "request failed: reset by peer"
        );
        // A cause the text already carries is not repeated.
        let e = Wrap("request failed: reset\nby peer".into(), reset());
        assert_eq!(
            with_causes(e.to_string(), std::error::Error::source(&e)),
            "request failed: reset by peer"
        );
        assert_eq!(with_causes("plain".into(), None), "plain");
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn controls_are_escaped_and_long_text_cut() {
        assert!(matches!(shown("node-1"), Cow::Borrowed("node-1")));
        assert_eq!(
            shown("evil\n2026-01-01 ERROR forged\x1b[31m"),
            "evil\\n2026-01-01 ERROR forged\\u{1b}[31m"
        );
        assert_eq!(shown("a\r\tb\u{7f}\u{9b}"), "a\\r\\tb\\u{7f}\\u{9b}");
        assert_eq!(shown("abc\u{202E}fed"), "abc\\u{202e}fed");
        assert_eq!(shown("grüße, ノード"), "grüße, ノード");
        let big = "x".repeat(1 << 20);
        let cut = shown(&big);
        assert_eq!(cut, format!("{}...(1048576 bytes)", "x".repeat(MAX_SHOWN)));
        // Cut between characters, never inside one or inside an escape.
        assert_eq!(escape_controls("ééé", 3), "é...(6 bytes)");
        assert_eq!(escape_controls("ab\ncd", 3), "ab...(5 bytes)");
    }

    proptest! {
        #[test]
        fn the_result_has_no_control_and_is_bounded(text in any::<String>(), max in 0usize..64) {
            let out = escape_controls(&text, max);
            prop_assert!(!out.chars().any(needs_escape), "{out:?}");
            prop_assert!(out.len() <= max + 32, "{} > {max} + 32", out.len());
            if text.len() <= max && !text.chars().any(needs_escape) {
                prop_assert_eq!(out.as_ref(), text.as_str());
            }
        }
    }
}
