//! The node agent's configuration file (`agent --config`): for now its `prune`
//! block. Parsing is pure; the error names the key.
//!
//! ```yaml
//! prune:
//!   enabled: false          # nothing is ever removed unless true
//!   dryRun: true            # when enabled: plan, log and export, remove nothing
//!   target: 45              # default: the cap in force minus 5
//!   interval: 10m
//!   grace: 30s              # the plan is published this long before it acts
//!   maxRemovalsPerRun: 10
//!   keep:
//!     - {match: '^ghcr\.io/lsst-sqre/sciplat-lab:w_', newest: 4}
//! ```

use super::{
    CONFIG_FILE, ConfigError, InvalidConfig, MAX_CONFIG_BYTES, RawPattern, compile_patterns,
    duration, file_from_yaml, load_file,
};
use crate::analysis::prune::PruneSettings;
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAgentConfig {
    prune: Option<RawPrune>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPrune {
    enabled: Option<bool>,
    dry_run: Option<bool>,
    target: Option<i64>,
    interval: Option<String>,
    grace: Option<String>,
    max_removals_per_run: Option<i64>,
    #[serde(default)]
    keep: Vec<RawPattern>,
}

/// The agent's configuration, validated.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    pub prune: PruneSettings,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        load_file(CONFIG_FILE, path, MAX_CONFIG_BYTES, AgentConfig::parse)
    }

    pub fn parse(text: &str) -> Result<AgentConfig, InvalidConfig> {
        let raw: RawAgentConfig = file_from_yaml(text)?;
        let raw = raw.prune.unwrap_or_default();
        let defaults = PruneSettings::default();
        let target = match raw.target {
            None => None,
            Some(t) => Some(u32::try_from(t).map_err(|_| {
                InvalidConfig::key(
                    "prune.target",
                    format_args!("{t} is not a count of images (0 or more)"),
                )
            })?),
        };
        let max_removals_per_run = match raw.max_removals_per_run {
            None => defaults.max_removals_per_run,
            Some(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
            Some(n) => {
                return Err(InvalidConfig::key(
                    "prune.maxRemovalsPerRun",
                    format_args!("{n}: must be 1 or more"),
                ));
            }
        };
        Ok(AgentConfig {
            prune: PruneSettings {
                enabled: raw.enabled.unwrap_or(defaults.enabled),
                dry_run: raw.dry_run.unwrap_or(defaults.dry_run),
                target,
                interval: duration("prune.interval", raw.interval.as_deref(), defaults.interval)?,
                grace: grace(raw.grace.as_deref(), defaults.grace)?,
                max_removals_per_run,
                keep: compile_patterns("prune.keep", &raw.keep)?,
            },
        })
    }
}

/// `prune.grace`: a duration, zero allowed (remove right after planning).
fn grace(
    text: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration, InvalidConfig> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|source| {
            let e = super::DurationError::NotADuration {
                text: t.to_string(),
                source,
            };
            InvalidConfig::key("prune.grace", e)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_issue_example_reads() {
        let c = AgentConfig::parse(
            "prune:\n  enabled: true\n  dryRun: false\n  target: 45\n  interval: 5m\n  \
             maxRemovalsPerRun: 3\n  keep:\n    - {match: '^ghcr\\.io/lsst-sqre/sciplat-lab:w_', newest: 4}\n    \
             - '^x'\n",
        )
        .unwrap();
        let p = c.prune;
        assert!(p.enabled && !p.dry_run && p.removes());
        assert_eq!(p.target, Some(45));
        assert_eq!(p.interval, Duration::from_secs(300));
        assert_eq!(p.grace, Duration::from_secs(30), "the default");
        assert_eq!(p.max_removals_per_run, 3);
        assert_eq!(p.keep.len(), 2);
        assert_eq!(p.keep[0].newest, Some(4));
        assert_eq!(p.keep[1].newest, None);
    }

    #[test]
    fn safe_defaults() {
        for text in ["", "prune: {}\n", "prune:\n  enabled: true\n"] {
            let p = AgentConfig::parse(text).unwrap().prune;
            assert!(p.dry_run, "{text:?}: a dry run unless told otherwise");
            assert!(!p.removes(), "{text:?}");
            assert_eq!(p.target, None);
            assert_eq!(p.interval, Duration::from_secs(600));
            assert_eq!(p.max_removals_per_run, 10);
        }
        assert!(!AgentConfig::parse("").unwrap().prune.enabled);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, needle) in [
            ("prune:\n  target: -1\n", "prune.target"),
            (
                "prune:\n  maxRemovalsPerRun: 0\n",
                "prune.maxRemovalsPerRun",
            ),
            ("prune:\n  interval: soon\n", "prune.interval"),
            ("prune:\n  interval: 0s\n", "prune.interval"),
            ("prune:\n  grace: later\n", "prune.grace"),
            ("prune:\n  keep: ['(']\n", "prune.keep[0]"),
            (
                "prune:\n  keep: [{match: '^a', newest: 0}]\n",
                "prune.keep[0].newest",
            ),
            ("prune:\n  enabeld: true\n", "enabeld"),
            ("prune:\n  enabled: yes please\n", "enabled"),
            ("prepull: {}\n", "prepull"),
        ] {
            let e = AgentConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = AgentConfig::load(Path::new("/nonexistent/agent.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/agent.yaml"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = AgentConfig::parse(&s);
        }
    }
}
