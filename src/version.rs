//! What this binary is: the crate version, the git revision it was built from and
//! the compiler that built it (set by build.rs), for `--version` and
//! `imagecap_build_info`.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The User-Agent of the exporter's own HTTP requests (to the node agents).
pub const USER_AGENT: &str = concat!("imagecap-exporter/", env!("CARGO_PKG_VERSION"));

/// The git commit built (12 hex digits), `unknown` when not built from a git
/// checkout, or the `IMAGECAP_REVISION` given at build time.
pub const REVISION: &str = env!("IMAGECAP_REVISION");

/// `rustc --version` of the compiler that built this binary.
pub const RUSTC_VERSION: &str = env!("IMAGECAP_RUSTC_VERSION");

/// What `--version` prints after the program name, in the shape of the
/// exporter-toolkit's version line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision: ",
    env!("IMAGECAP_REVISION"),
    ")\n  rust version: ",
    env!("IMAGECAP_RUSTC_VERSION"),
);

/// The compiler's version number, as `imagecap_build_info`'s `rustversion` label:
/// `1.89.0` from `rustc 1.89.0 (29483883e 2025-08-04)`; the whole text when it is
/// not in that shape.
pub fn rust_version(rustc_version: &str) -> &str {
    let mut words = rustc_version.split_whitespace();
    match (words.next(), words.next()) {
        (Some("rustc"), Some(v)) if v.starts_with(|c: char| c.is_ascii_digit()) => v,
        _ => rustc_version.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_version_is_the_number() {
        assert_eq!(
            rust_version("rustc 1.89.0 (29483883e 2025-08-04)"),
            "1.89.0"
        );
        assert_eq!(
            rust_version("rustc 1.92.0-nightly (abc 2025-10-01)"),
            "1.92.0-nightly"
        );
        assert_eq!(rust_version("unknown"), "unknown");
        assert_eq!(rust_version(" something else "), "something else");
    }

    #[test]
    fn build_facts_are_set() {
        assert!(!REVISION.is_empty());
        assert!(!REVISION.contains(char::is_whitespace), "{REVISION:?}");
        assert!(RUSTC_VERSION.starts_with("rustc "), "{RUSTC_VERSION}");
        assert!(LONG_VERSION.starts_with(VERSION));
        assert!(LONG_VERSION.contains(REVISION));
    }
}
