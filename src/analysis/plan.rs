//! A node agent's pruning plan as data: what a run removes and why every other
//! image stays, as the agent serves it (`prune` in `/v1/images`), and the counts
//! the exporter keeps of it. The planning itself is [`super::prune`].

use serde::Serialize;

/// Why an image stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// A container on the node uses it (any state).
    InUse,
    /// The runtime pins it (the sandbox image, for one).
    Pinned,
    /// The runtime runs its pod sandboxes from it (the "pause" image).
    Sandbox,
    /// The exporter wants it on this node.
    Wanted(String),
    /// A `keep` rule matches one of its tags.
    Rule(String),
    /// The node reaches the target without removing it.
    NotNeeded,
}

impl Keep {
    /// The `reason` a person reads; also the key of the plan's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Keep::InUse => "in use",
            Keep::Pinned => "pinned",
            Keep::Sandbox => "sandbox",
            Keep::Wanted(_) => "wanted",
            Keep::Rule(_) => "keep rule",
            Keep::NotNeeded => "not needed",
        }
    }

    /// Protected whatever the target.
    pub fn protects(&self) -> bool {
        !matches!(self, Keep::NotNeeded)
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::InUse => f.write_str("a container on the node uses it"),
            Keep::Pinned => f.write_str("the runtime pins it"),
            Keep::Sandbox => f.write_str("the runtime runs its pod sandboxes from it"),
            Keep::Wanted(image) => write!(f, "wanted on this node as {image}"),
            Keep::Rule(rule) => write!(f, "matched by keep rule {rule}"),
            Keep::NotNeeded => f.write_str("the node reaches the target without removing it"),
        }
    }
}

/// What a run does with one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Remove,
    /// Would be removed, but this run has reached `maxRemovalsPerRun`: next run.
    Defer,
    Keep(Keep),
}

impl Default for Decision {
    fn default() -> Self {
        Decision::Keep(Keep::NotNeeded)
    }
}

/// One image of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedImage {
    pub id: String,
    /// Its first tag, else its first digest, else its id.
    pub name: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// A container on the node used it when the plan was made.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_use: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The runtime's pod sandbox image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// Read back as `keep`: what a saved plan offers is its facts, and `check
    /// --prune-plan` decides again.
    #[serde(serialize_with = "action", skip_deserializing, rename = "action")]
    pub decision: Decision,
    /// Why it stays, or why it goes.
    pub reason: String,
}

fn action<S: serde::Serializer>(d: &Decision, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match d {
        Decision::Remove => "remove",
        Decision::Defer => "defer",
        Decision::Keep(_) => "keep",
    })
}

/// The plan for one node: what a run removes, and why everything else stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Images the runtime holds.
    pub held: u32,
    /// At most this many stay; `None` when there is no target (no explicit one and
    /// no finite cap known): nothing is removed.
    pub target: Option<u32>,
    /// Images this run removes, and their bytes.
    pub remove: u32,
    pub remove_bytes: u64,
    /// Images past `maxRemovalsPerRun`, left for the next run.
    pub deferred: u32,
    /// How far the protected images alone keep the node above the target.
    pub short_by: u32,
    /// Why this run removes nothing although the plan has removals (the wanted
    /// images are not known); the removals are then listed as `defer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// Every image, removals first in the order they are made.
    pub images: Vec<PlannedImage>,
}

impl Plan {
    /// The images this run removes, in order.
    pub fn removals(&self) -> impl Iterator<Item = &PlannedImage> {
        self.images
            .iter()
            .filter(|i| i.decision == Decision::Remove)
    }

    /// How many images stay for each reason, in [`Keep::kind`] terms.
    pub fn kept_by_kind(&self) -> std::collections::BTreeMap<&'static str, u32> {
        let mut out = std::collections::BTreeMap::new();
        for i in &self.images {
            if let Decision::Keep(k) = &i.decision {
                *out.entry(k.kind()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// What the exporter keeps of an agent's plan (the counts, not the images): its
/// status page shows it per node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub held: u32,
    #[serde(default)]
    pub target: Option<u32>,
    pub remove: u32,
    #[serde(default)]
    pub remove_bytes: u64,
    #[serde(default)]
    pub deferred: u32,
    #[serde(default)]
    pub short_by: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
}

/// Longest `blocked` reason kept from an agent's answer.
pub const MAX_BLOCKED_CHARS: usize = 300;

impl PlanSummary {
    /// The summary as kept: the reason cut to [`MAX_BLOCKED_CHARS`].
    pub fn bounded(mut self) -> PlanSummary {
        if let Some(b) = &mut self.blocked
            && let Some((cut, _)) = b.char_indices().nth(MAX_BLOCKED_CHARS)
        {
            b.truncate(cut);
            b.push('…');
        }
        self
    }
}

impl From<&Plan> for PlanSummary {
    fn from(p: &Plan) -> PlanSummary {
        PlanSummary {
            held: p.held,
            target: p.target,
            remove: p.remove,
            remove_bytes: p.remove_bytes,
            deferred: p.deferred,
            short_by: p.short_by,
            blocked: p.blocked.clone(),
        }
        .bounded()
    }
}
