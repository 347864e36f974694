//! A wanted image's verdict on a node that does not report it: the state, and
//! how it is decided. Shared by the cluster report and the spawner menu.

use serde::Serialize;
use std::sync::Arc;

/// Why a wanted image is missing from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MissingState {
    /// The node is under its cap, so its list is complete: the image is not there.
    Absent,
    /// The node is at its cap: the image may be there but cannot be seen.
    Unverifiable,
    /// The node is at its cap, and its runtime (through the node agent) holds the
    /// image: it is there, hidden from the API by the cap.
    Hidden,
    /// The node is at its cap and the image is smaller than the smallest image the
    /// node reports: the kubelet's size-ordered list can never show it there,
    /// pulled or not, so the prepuller pulls it again on every pass. (With a fresh
    /// agent report, an image the runtime holds is `hidden` instead.)
    Unlistable,
}

impl MissingState {
    pub const ALL: [MissingState; 4] = [
        MissingState::Absent,
        MissingState::Unverifiable,
        MissingState::Hidden,
        MissingState::Unlistable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MissingState::Absent => "absent",
            MissingState::Unverifiable => "unverifiable",
            MissingState::Hidden => "hidden",
            MissingState::Unlistable => "unlistable",
        }
    }

    /// The state of a wanted image a node does not report. Under the cap the list
    /// is complete: `absent`. At it, the runtime's own list decides when there is
    /// a fresh one (`held`); the kubelet's size order decides what it can: an
    /// image larger than the smallest one listed would be listed if it were
    /// there, and one smaller never can be. Equal or unknown sizes prove nothing.
    pub fn decide(
        saturated: bool,
        held: Option<bool>,
        size: Option<u64>,
        smallest_listed: Option<u64>,
    ) -> MissingState {
        if !saturated {
            return MissingState::Absent;
        }
        let by_size = match (size, smallest_listed) {
            (Some(s), Some(m)) if s > m => Some(MissingState::Absent),
            (Some(s), Some(m)) if s < m => Some(MissingState::Unlistable),
            _ => None,
        };
        match (held, by_size) {
            (Some(true), _) => MissingState::Hidden,
            (_, Some(state)) => state,
            (Some(false), None) => MissingState::Absent,
            (None, None) => MissingState::Unverifiable,
        }
    }
}

/// A wanted image's name, made once per analysis and shared by the reports that
/// name it (every node that misses the image, the image's own report).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct WantedName(Arc<str>);

impl WantedName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for WantedName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for WantedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl std::fmt::Display for WantedName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for WantedName {
    fn from(s: &str) -> WantedName {
        WantedName(s.into())
    }
}

impl From<String> for WantedName {
    fn from(s: String) -> WantedName {
        WantedName(s.into())
    }
}

impl PartialEq<str> for WantedName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for WantedName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for WantedName {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

/// A wanted image a node does not report, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingImage {
    pub image: WantedName,
    pub state: MissingState,
}
