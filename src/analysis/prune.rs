//! Which images the node agent removes to keep its node under the kubelet's
//! `nodeStatusMaxImages` cap, where the cap itself cannot be raised: a pure plan
//! from the runtime's list, the images the exporter wants on the node, and the
//! agent's `prune` settings. No I/O; the agent carries the plan out.
//!
//! Never removed, whatever the settings: an image a container on the node uses
//! (in any state), a pinned image, the runtime's pod sandbox image, an image
//! wanted on the node, and an image a `keep` rule matches. The rest are removed oldest first (the image config's
//! `created` time; images without one follow, in the runtime's own order), only
//! while the node holds more than the target, at most `maxRemovalsPerRun` a run.

pub use super::plan::{Decision, Keep, MAX_BLOCKED_CHARS, Plan, PlanSummary, PlannedImage};
use super::reference::{ImageRef, RefError};
use super::report::Report;
use super::runtime::RuntimeImage;
use super::wanted::{Pattern, WantSource, natural_cmp};
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

/// The default target leaves this many images of room under the cap, for the
/// pulls between two runs.
pub const TARGET_MARGIN: i64 = 5;

/// The `prune` block of the agent's configuration, validated.
#[derive(Debug, Clone)]
pub struct PruneSettings {
    /// Nothing is ever removed unless set.
    pub enabled: bool,
    /// When enabled: plan, log and export, remove nothing.
    pub dry_run: bool,
    /// Keep at most this many images; `None`: the cap in force minus
    /// [`TARGET_MARGIN`].
    pub target: Option<u32>,
    pub interval: Duration,
    /// Time between publishing a plan and making its removals: the plan shows
    /// (metrics, `/v1/images`) before it acts, and an image a container starts
    /// using meanwhile stays.
    pub grace: Duration,
    pub max_removals_per_run: u32,
    /// Tags that stay: every match, or the `newest` greatest in natural order.
    pub keep: Vec<Pattern>,
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            enabled: false,
            dry_run: true,
            target: None,
            interval: Duration::from_secs(600),
            grace: Duration::from_secs(30),
            max_removals_per_run: 10,
            keep: Vec::new(),
        }
    }
}

impl PruneSettings {
    /// Whether a run removes images: enabled and not a dry run.
    pub fn removes(&self) -> bool {
        self.enabled && !self.dry_run
    }

    /// The target for a node whose cap in force is `cap` (-1: unlimited; `None`:
    /// unknown). `None` when there is none: no explicit target and no finite cap.
    pub fn target_for(&self, cap: Option<i64>) -> Option<u32> {
        match (self.target, cap) {
            (Some(t), _) => Some(t),
            (None, Some(cap)) if cap > 0 => {
                Some(u32::try_from((cap - TARGET_MARGIN).max(0)).unwrap_or(u32::MAX))
            }
            _ => None,
        }
    }
}

/// What the plan needs to know of one image besides its CRI listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageFacts {
    pub in_use: bool,
    pub pinned: bool,
    /// The runtime runs its pod sandboxes from it.
    pub sandbox: bool,
    pub created: Option<SystemTime>,
}

/// The plan for a node holding `images` (in the runtime's order, each with its
/// `facts`), where the exporter wants `wanted` (`None`: unknown, so nothing is
/// removed and the plan says why in `blocked`), under a cap in force of `cap`.
pub fn plan(
    images: &[(RuntimeImage, ImageFacts)],
    wanted: Result<&[ImageRef], &str>,
    cap: Option<i64>,
    settings: &PruneSettings,
) -> Plan {
    let held = u32::try_from(images.len()).unwrap_or(u32::MAX);
    let target = settings.target_for(cap);
    let kept_tags = kept_by_rules(images.iter().map(|(i, _)| i), &settings.keep);
    let wanted_refs = wanted.unwrap_or(&[]);

    let mut protected: Vec<(usize, Keep)> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, (image, facts)) in images.iter().enumerate() {
        match protection(image, facts, wanted_refs, &kept_tags) {
            Some(keep) => protected.push((i, keep)),
            None => candidates.push(i),
        }
    }
    // Oldest first; without a created time after those with one, in the runtime's
    // order (the sort is stable).
    candidates.sort_by_key(|&i| match images[i].1.created {
        Some(t) => (0, t),
        None => (1, SystemTime::UNIX_EPOCH),
    });

    let excess = target.map_or(0, |t| held.saturating_sub(t)) as usize;
    let to_remove = excess.min(candidates.len());
    let this_run = to_remove.min(settings.max_removals_per_run as usize);
    let short_by = u32::try_from(excess - to_remove).unwrap_or(u32::MAX);
    let blocked = match wanted {
        Err(why) if this_run > 0 => Some(why.to_string()),
        _ => None,
    };

    let mut planned = Vec::with_capacity(images.len());
    let mut remove_bytes = 0u64;
    for (n, &i) in candidates.iter().enumerate() {
        let (decision, reason) = if n < this_run && blocked.is_none() {
            remove_bytes = remove_bytes.saturating_add(images[i].0.size);
            (Decision::Remove, removal_reason(target, held))
        } else if n < this_run {
            (
                Decision::Defer,
                format!("would be removed, but {}", blocked.as_deref().unwrap_or("")),
            )
        } else if n < to_remove {
            (
                Decision::Defer,
                format!(
                    "past maxRemovalsPerRun ({}): the next run removes it",
                    settings.max_removals_per_run
                ),
            )
        } else {
            (Decision::Keep(Keep::NotNeeded), Keep::NotNeeded.to_string())
        };
        planned.push(planned_image(&images[i], decision, reason));
    }
    for (i, keep) in protected {
        let reason = keep.to_string();
        planned.push(planned_image(&images[i], Decision::Keep(keep), reason));
    }
    let remove = if blocked.is_some() { 0 } else { this_run };
    Plan {
        held,
        target,
        remove: remove as u32,
        remove_bytes,
        deferred: (to_remove - remove) as u32,
        short_by,
        blocked,
        images: planned,
    }
}

fn removal_reason(target: Option<u32>, held: u32) -> String {
    format!(
        "oldest unprotected image; the node holds {held}, above the target of {}",
        target.unwrap_or(0)
    )
}

fn planned_image(
    (image, facts): &(RuntimeImage, ImageFacts),
    decision: Decision,
    reason: String,
) -> PlannedImage {
    PlannedImage {
        id: image.id.clone(),
        name: display_name(image),
        size: image.size,
        created: facts
            .created
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        in_use: facts.in_use,
        pinned: facts.pinned,
        sandbox: facts.sandbox,
        decision,
        reason,
    }
}

/// An image's name for people: its first tag, else its first digest, else its id.
pub fn display_name(image: &RuntimeImage) -> String {
    image
        .repo_tags
        .first()
        .or(image.repo_digests.first())
        .unwrap_or(&image.id)
        .clone()
}

/// The first protection that applies to an image, in the order listed on [`Keep`].
fn protection(
    image: &RuntimeImage,
    facts: &ImageFacts,
    wanted: &[ImageRef],
    kept_tags: &[(String, HashSet<String>)],
) -> Option<Keep> {
    if facts.in_use {
        return Some(Keep::InUse);
    }
    if facts.pinned {
        return Some(Keep::Pinned);
    }
    if facts.sandbox {
        return Some(Keep::Sandbox);
    }
    let names: Vec<ImageRef> = image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .filter_map(|n| ImageRef::parse(n).ok())
        .collect();
    if let Some(w) = wanted.iter().find(|w| names.iter().any(|n| w.matches(n))) {
        return Some(Keep::Wanted(w.to_string()));
    }
    for (rule, tags) in kept_tags {
        if names
            .iter()
            .filter_map(ImageRef::tagged_name)
            .any(|t| tags.contains(&t))
        {
            return Some(Keep::Rule(rule.clone()));
        }
    }
    None
}

/// For each `keep` rule, how it reads (`keep[i] REGEX`, with `newest N`) and the
/// tagged names (`repo:tag`, normalized) it keeps on the node: every match, or the
/// `newest` greatest in natural order.
fn kept_by_rules<'a>(
    images: impl Iterator<Item = &'a RuntimeImage> + Clone,
    rules: &[Pattern],
) -> Vec<(String, HashSet<String>)> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let mut matching: Vec<String> = images
                .clone()
                .flat_map(|i| &i.repo_tags)
                .filter_map(|t| ImageRef::parse(t).ok()?.tagged_name())
                .filter(|t| rule.regex.is_match(t))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut text = format!("keep[{i}] {}", rule.regex.as_str());
            if let Some(n) = rule.newest {
                matching.sort_by(|a, b| natural_cmp(b, a));
                matching.truncate(n);
                text.push_str(&format!(" (newest {n})"));
            }
            (text, matching.into_iter().collect())
        })
        .collect()
}

/// The exporter's answer to `GET /v1/wanted?node=NAME`: the images wanted on a
/// node, which its agent must not remove, and the cap in force there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WantedOnNode {
    pub node: String,
    /// The cap in force on the node (-1: unlimited), for the default target.
    pub max_images: i64,
    /// Every source of wanted images has answered at least once. While one has
    /// not, the list may lack its images, and the agent removes nothing.
    pub complete: bool,
    /// The sources that have not answered yet, when not complete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    /// The wanted images the node is eligible for, present or not.
    pub images: Vec<String>,
}

/// What `/v1/wanted` answers for `node`; `None` when the report has no such node.
pub fn wanted_on_node(report: &Report, node: &str) -> Option<WantedOnNode> {
    let n = report.nodes.iter().find(|n| n.name == node)?;
    let waiting_for: Vec<String> = report
        .sources
        .iter()
        .filter(|s| !matches!(s.source, WantSource::Config | WantSource::Pattern))
        .filter(|s| s.last_success_seconds.is_none())
        .map(|s| s.source.as_str().to_string())
        .collect();
    Some(WantedOnNode {
        node: n.name.clone(),
        max_images: n.cap.max_images,
        complete: waiting_for.is_empty(),
        waiting_for,
        images: n
            .prepull
            .wanted
            .iter()
            .filter_map(|&i| report.images.get(i as usize))
            .map(|i| i.image.to_string())
            .collect(),
    })
}

/// Why an answer of `/v1/wanted` cannot be trusted to protect the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedWanted {
    /// The answer is about another node.
    #[error("the exporter answered for node {answered:?}, not {asked:?}")]
    OtherNode { answered: String, asked: String },
    /// The exporter still waits for these sources.
    #[error("the exporter's wanted images are incomplete: waiting for {}", .0.join(", "))]
    Incomplete(Vec<String>),
    /// A wanted name does not parse.
    #[error("the exporter's wanted image {0}")]
    BadName(#[from] RefError),
}

/// The references of an answer, or why it cannot be trusted to protect the node:
/// incomplete, about another node, or holding a name that does not parse.
pub fn trusted_wanted(answer: &WantedOnNode, node: &str) -> Result<Vec<ImageRef>, UntrustedWanted> {
    if answer.node != node {
        return Err(UntrustedWanted::OtherNode {
            answered: answer.node.clone(),
            asked: node.to_string(),
        });
    }
    if !answer.complete {
        return Err(UntrustedWanted::Incomplete(answer.waiting_for.clone()));
    }
    answer
        .images
        .iter()
        .map(|i| ImageRef::parse(i).map_err(UntrustedWanted::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    #[test]
    fn an_untrusted_answer_says_why() {
        let answer = |node: &str, complete: bool, images: &[&str]| WantedOnNode {
            node: node.into(),
            max_images: 50,
            complete,
            waiting_for: if complete {
                vec![]
            } else {
                vec!["nublado".into()]
            },
            images: images.iter().map(|i| i.to_string()).collect(),
        };
        let other = trusted_wanted(&answer("n2", true, &[]), "n1").unwrap_err();
        assert_eq!(
            other.to_string(),
            r#"the exporter answered for node "n2", not "n1""#
        );
        let waiting = trusted_wanted(&answer("n1", false, &[]), "n1").unwrap_err();
        assert_eq!(waiting, UntrustedWanted::Incomplete(vec!["nublado".into()]));
        assert_eq!(
            waiting.to_string(),
            "the exporter's wanted images are incomplete: waiting for nublado"
        );
        let bad = trusted_wanted(&answer("n1", true, &["x.test/a:1", " "]), "n1").unwrap_err();
        assert!(matches!(bad, UntrustedWanted::BadName(_)), "{bad:?}");
        assert!(bad.to_string().starts_with("the exporter's wanted image "));
        let good = trusted_wanted(&answer("n1", true, &["x.test/a:1"]), "n1").unwrap();
        assert_eq!(good.len(), 1);
    }

    fn image(tag: &str, size: u64) -> RuntimeImage {
        RuntimeImage {
            id: format!("sha256:{}", tag.replace(['/', ':', '.'], "-")),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![],
            size,
        }
    }

    fn at(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// `n` plain images `x.test/app:<i>`, created at second `i` (oldest first).
    fn node(n: usize) -> Vec<(RuntimeImage, ImageFacts)> {
        (0..n)
            .map(|i| {
                let facts = ImageFacts {
                    created: at(1_000 + i as u64),
                    ..ImageFacts::default()
                };
                (image(&format!("x.test/app:{i}"), 100 + i as u64), facts)
            })
            .collect()
    }

    fn settings(target: Option<u32>, max: u32) -> PruneSettings {
        PruneSettings {
            enabled: true,
            dry_run: false,
            target,
            max_removals_per_run: max,
            ..PruneSettings::default()
        }
    }

    fn removed(p: &Plan) -> Vec<String> {
        p.removals().map(|i| i.name.clone()).collect()
    }

    fn decision_of<'a>(p: &'a Plan, name: &str) -> &'a Decision {
        &p.images.iter().find(|i| i.name == name).unwrap().decision
    }

    #[test]
    fn the_oldest_unprotected_go_until_the_target() {
        let p = plan(&node(10), Ok(&[]), None, &settings(Some(7), 10));
        assert_eq!(
            removed(&p),
            ["x.test/app:0", "x.test/app:1", "x.test/app:2"]
        );
        assert_eq!(
            (p.held, p.target, p.remove, p.deferred),
            (10, Some(7), 3, 0)
        );
        assert_eq!(p.remove_bytes, 100 + 101 + 102);
        assert_eq!(p.short_by, 0);
        assert_eq!(p.images.len(), 10, "every image is in the plan");
        assert_eq!(
            decision_of(&p, "x.test/app:3"),
            &Decision::Keep(Keep::NotNeeded)
        );
    }

    #[test]
    fn created_time_orders_not_the_runtime_order() {
        let mut images = node(4);
        // The runtime lists app:3 first, but app:2 is the oldest; app:0 has no time.
        images[2].1.created = at(10);
        images[0].1.created = None;
        images.rotate_right(1);
        let p = plan(&images, Ok(&[]), None, &settings(Some(1), 10));
        assert_eq!(
            removed(&p),
            ["x.test/app:2", "x.test/app:1", "x.test/app:3"]
        );
        // Without any time: the runtime's own order.
        let mut untimed = node(4);
        for (_, f) in &mut untimed {
            f.created = None;
        }
        untimed.reverse();
        let p = plan(&untimed, Ok(&[]), None, &settings(Some(2), 10));
        assert_eq!(removed(&p), ["x.test/app:3", "x.test/app:2"]);
    }

    #[test]
    fn protected_images_are_never_removed() {
        let mut images = node(10);
        images[0].1.in_use = true;
        images[1].1.pinned = true;
        // Wanted by tag, and by digest through its repo digest.
        images[3].0.repo_digests = vec![format!("x.test/app@sha256:{}", "a".repeat(64))];
        let wanted = [
            ImageRef::parse("x.test/app:2").unwrap(),
            ImageRef::parse(&format!("x.test/app@sha256:{}", "a".repeat(64))).unwrap(),
            // Short names are normalized on both sides.
            ImageRef::parse("busybox:1").unwrap(),
        ];
        images[4].0.repo_tags = vec!["busybox:1".into()];
        let mut s = settings(Some(0), 100);
        s.keep = vec![Pattern {
            regex: Regex::new("^x\\.test/app:[56]$").unwrap(),
            newest: None,
        }];
        let p = plan(&images, Ok(&wanted), None, &s);
        assert_eq!(
            removed(&p),
            ["x.test/app:7", "x.test/app:8", "x.test/app:9"]
        );
        assert_eq!(
            decision_of(&p, "x.test/app:0"),
            &Decision::Keep(Keep::InUse)
        );
        assert_eq!(
            decision_of(&p, "x.test/app:1"),
            &Decision::Keep(Keep::Pinned)
        );
        assert_eq!(
            decision_of(&p, "x.test/app:2"),
            &Decision::Keep(Keep::Wanted("x.test/app:2".into()))
        );
        assert!(
            matches!(decision_of(&p, "x.test/app:3"), Decision::Keep(Keep::Wanted(w)) if w.contains("sha256:aaaa"))
        );
        assert!(matches!(
            decision_of(&p, "busybox:1"),
            Decision::Keep(Keep::Wanted(_))
        ));
        assert_eq!(
            decision_of(&p, "x.test/app:5"),
            &Decision::Keep(Keep::Rule("keep[0] ^x\\.test/app:[56]$".into()))
        );
        // Seven protected images stay above a target of 0.
        assert_eq!(p.short_by, 7);
        let kinds = p.kept_by_kind();
        assert_eq!(kinds["in use"], 1);
        assert_eq!(kinds["pinned"], 1);
        assert_eq!(kinds["wanted"], 3);
        assert_eq!(kinds["keep rule"], 2);
    }

    #[test]
    fn the_sandbox_image_stays() {
        let mut images = node(3);
        images[0].1.sandbox = true;
        let p = plan(&images, Ok(&[]), None, &settings(Some(0), 10));
        assert_eq!(
            decision_of(&p, "x.test/app:0"),
            &Decision::Keep(Keep::Sandbox)
        );
        assert_eq!(removed(&p), ["x.test/app:1", "x.test/app:2"]);
        let json = serde_json::to_value(&p).unwrap();
        let kept = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "x.test/app:0")
            .unwrap();
        assert_eq!(kept["sandbox"], true);
        assert_eq!(kept["reason"], "the runtime runs its pod sandboxes from it");
    }

    #[test]
    fn use_wins_over_every_other_reason() {
        let mut images = node(2);
        images[0].1 = ImageFacts {
            in_use: true,
            pinned: true,
            sandbox: true,
            created: at(1),
        };
        let wanted = [ImageRef::parse("x.test/app:0").unwrap()];
        let p = plan(&images, Ok(&wanted), None, &settings(Some(0), 10));
        assert_eq!(
            decision_of(&p, "x.test/app:0"),
            &Decision::Keep(Keep::InUse)
        );
    }

    #[test]
    fn keep_rules_keep_the_newest_in_natural_order() {
        let tags = [
            "w_2024_9",
            "w_2024_10",
            "w_2024_11",
            "w_2023_52",
            "r27_0_0",
            "r28_0_0",
            "r9_0_0",
        ];
        let images: Vec<_> = tags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let facts = ImageFacts {
                    created: at(i as u64),
                    ..Default::default()
                };
                (
                    image(&format!("ghcr.io/lsst-sqre/sciplat-lab:{t}"), 1),
                    facts,
                )
            })
            .collect();
        let mut s = settings(Some(0), 100);
        s.keep = vec![
            Pattern {
                regex: Regex::new("^ghcr\\.io/lsst-sqre/sciplat-lab:w_").unwrap(),
                newest: Some(2),
            },
            Pattern {
                regex: Regex::new("^ghcr\\.io/lsst-sqre/sciplat-lab:r").unwrap(),
                newest: Some(1),
            },
        ];
        let p = plan(&images, Ok(&[]), None, &s);
        let kept: Vec<&str> = p
            .images
            .iter()
            .filter(|i| matches!(i.decision, Decision::Keep(Keep::Rule(_))))
            .map(|i| i.name.rsplit(':').next().unwrap())
            .collect();
        assert_eq!(kept, ["w_2024_10", "w_2024_11", "r28_0_0"]);
        // Natural order: r9 < r27 < r28, w_2024_9 < w_2024_10.
        assert_eq!(
            removed(&p)
                .iter()
                .map(|n| n.rsplit(':').next().unwrap())
                .collect::<Vec<_>>(),
            ["w_2024_9", "w_2023_52", "r27_0_0", "r9_0_0"]
        );
    }

    #[test]
    fn max_removals_per_run_defers_the_rest() {
        let p = plan(&node(20), Ok(&[]), None, &settings(Some(10), 3));
        assert_eq!(
            removed(&p),
            ["x.test/app:0", "x.test/app:1", "x.test/app:2"]
        );
        assert_eq!((p.remove, p.deferred), (3, 7));
        assert_eq!(decision_of(&p, "x.test/app:3"), &Decision::Defer);
        assert_eq!(decision_of(&p, "x.test/app:9"), &Decision::Defer);
        assert_eq!(
            decision_of(&p, "x.test/app:10"),
            &Decision::Keep(Keep::NotNeeded)
        );
    }

    #[test]
    fn the_default_target_is_the_cap_minus_five() {
        let s = settings(None, 100);
        assert_eq!(s.target_for(Some(50)), Some(45));
        assert_eq!(s.target_for(Some(3)), Some(0));
        assert_eq!(s.target_for(Some(-1)), None, "unlimited: nothing to do");
        assert_eq!(s.target_for(Some(0)), None);
        assert_eq!(s.target_for(None), None);
        assert_eq!(settings(Some(7), 1).target_for(Some(50)), Some(7));
        let p = plan(&node(48), Ok(&[]), Some(50), &s);
        assert_eq!((p.target, p.remove), (Some(45), 3));
        let p = plan(&node(48), Ok(&[]), Some(-1), &s);
        assert_eq!((p.target, p.remove, p.deferred), (None, 0, 0));
        assert!(
            p.images
                .iter()
                .all(|i| i.decision == Decision::Keep(Keep::NotNeeded))
        );
    }

    #[test]
    fn a_node_at_or_under_target_loses_nothing() {
        for n in [0, 5, 10] {
            let p = plan(&node(n), Ok(&[]), None, &settings(Some(10), 10));
            assert_eq!((p.remove, p.deferred, p.short_by), (0, 0, 0), "{n}");
            assert_eq!(p.images.len(), n);
        }
    }

    #[test]
    fn unknown_wanted_images_block_every_removal() {
        let p = plan(
            &node(10),
            Err("the exporter did not answer"),
            None,
            &settings(Some(5), 3),
        );
        assert_eq!(p.remove, 0);
        assert_eq!(p.removals().count(), 0);
        assert_eq!(p.blocked.as_deref(), Some("the exporter did not answer"));
        assert_eq!(p.deferred, 5);
        let first = p.images.iter().find(|i| i.name == "x.test/app:0").unwrap();
        assert!(
            first.reason.contains("the exporter did not answer"),
            "{}",
            first.reason
        );
        // Nothing to remove: nothing is blocked either.
        let p = plan(&node(3), Err("down"), None, &settings(Some(5), 3));
        assert_eq!(p.blocked, None);
    }

    #[test]
    fn the_plan_serializes_for_the_answer() {
        let mut images = node(3);
        images[2].1.pinned = true;
        let p = plan(&images, Ok(&[]), None, &settings(Some(2), 10));
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["held"], 3);
        assert_eq!(json["target"], 2);
        assert_eq!(json["remove"], 1);
        assert_eq!(json["images"][0]["action"], "remove");
        assert_eq!(json["images"][0]["name"], "x.test/app:0");
        assert_eq!(json["images"][0]["created"], "1970-01-01T00:16:40Z");
        assert_eq!(json["images"][2]["action"], "keep");
        assert_eq!(json["images"][2]["reason"], "the runtime pins it");
        assert!(json.get("blocked").is_none());
    }

    proptest::proptest! {
        /// Whatever the images, facts and settings: protected images are never
        /// removed, at most maxRemovalsPerRun go, and never below the target.
        #[test]
        fn the_plan_keeps_its_promises(
            facts in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY, proptest::option::of(0u64..50), proptest::bool::ANY), 0..40),
            target in 0u32..45,
            max in 0u32..20,
        ) {
            let images: Vec<_> = facts
                .iter()
                .enumerate()
                .map(|(i, &(in_use, pinned, created, wanted))| {
                    let tag = if wanted { format!("x.test/wanted:{i}") } else { format!("x.test/app:{i}") };
                    (image(&tag, 1), ImageFacts { in_use, pinned, sandbox: false, created: created.and_then(at) })
                })
                .collect();
            let wanted: Vec<ImageRef> = (0..facts.len())
                .map(|i| ImageRef::parse(&format!("x.test/wanted:{i}")).unwrap())
                .collect();
            let p = plan(&images, Ok(&wanted), None, &settings(Some(target), max));
            let removed: Vec<&PlannedImage> = p.removals().collect();
            proptest::prop_assert!(removed.len() <= max as usize);
            proptest::prop_assert!(images.len() - removed.len() >= target as usize || removed.is_empty());
            proptest::prop_assert!(images.len().saturating_sub(removed.len()) >= (target as usize).min(images.len()));
            for r in removed {
                let (img, f) = images.iter().find(|(i, _)| i.id == r.id).unwrap();
                proptest::prop_assert!(!f.in_use && !f.pinned);
                proptest::prop_assert!(!img.repo_tags[0].contains("wanted"));
            }
            proptest::prop_assert_eq!(p.images.len(), images.len());
        }
    }
}
