//! The agent's failures: reading the runtime for its report, and the pruning
//! runs. A pruning failure names the `reason` it is counted under in
//! `imagecap_prune_errors_total`, so the label comes from the error.

use super::cri::CallError;
use super::families::PruneReason;
use crate::analysis::prune::UntrustedWanted;
use crate::client::http::HttpError;
use std::path::PathBuf;

/// A failed reading of the runtime: the report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// CRI `ListImages` failed: the report has nothing to say.
    #[error("CRI ListImages on {} failed: {source}", socket.display())]
    ListImages { socket: PathBuf, source: CallError },
    /// The report did not serialize.
    #[error("encoding the report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A CRI call of a pruning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneCall {
    ListImages,
    ListContainers,
    ImageStatus,
    /// `Status`, asked for the pod sandbox image.
    SandboxImage,
}

impl std::fmt::Display for PruneCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PruneCall::ListImages => "ListImages",
            PruneCall::ListContainers => "ListContainers",
            PruneCall::ImageStatus => "ImageStatus",
            PruneCall::SandboxImage => "Status (the pod sandbox image)",
        })
    }
}

/// Why a pruning run, or one of its removals, went wrong.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// The images wanted on the node are unknown: the run removes nothing.
    #[error(transparent)]
    Wanted(#[from] WantedError),
    /// A CRI call that reads failed.
    #[error("CRI {call} failed: {source}")]
    Runtime { call: PruneCall, source: CallError },
    /// CRI `RemoveImage` failed.
    #[error("CRI RemoveImage failed: {0}")]
    Remove(CallError),
}

impl PruneError {
    /// The `reason` label it is counted under.
    pub fn reason(&self) -> PruneReason {
        match self {
            PruneError::Wanted(_) => PruneReason::Wanted,
            PruneError::Runtime { .. } => PruneReason::Runtime,
            PruneError::Remove(_) => PruneReason::Remove,
        }
    }

    /// The error of a failed CRI call that reads.
    pub fn runtime(call: PruneCall) -> impl FnOnce(CallError) -> PruneError {
        move |source| PruneError::Runtime { call, source }
    }
}

/// Why the images wanted on the node are unknown: the exporter's
/// `/v1/wanted` could not be asked, did not answer, or answered what cannot be
/// trusted.
#[derive(Debug, thiserror::Error)]
pub enum WantedError {
    #[error("no --exporter-url: the images wanted on this node are unknown")]
    NoExporter,
    #[error("--exporter-url {base:?}: {source}")]
    Url {
        base: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The exchange failed or timed out.
    #[error("{url}: {source}")]
    Exchange { url: String, source: HttpError },
    /// The answer redirects: the error names the URL itself.
    #[error(transparent)]
    Redirect(HttpError),
    /// The answer is larger than `limit` bytes.
    #[error("{url}: answer larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// An answer other than a success; `detail` is the answer's `error`, shown.
    #[error("{url} answered {status} {detail}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
        detail: String,
    },
    #[error("{url}: not a wanted-images answer: {source}")]
    Decode {
        url: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Untrusted(#[from] UntrustedWanted),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_names_its_reason() {
        let wanted = PruneError::from(WantedError::NoExporter);
        assert_eq!(wanted.reason(), PruneReason::Wanted);
        assert_eq!(
            wanted.to_string(),
            "no --exporter-url: the images wanted on this node are unknown"
        );
        let timeout = || CallError::Timeout(std::time::Duration::from_secs(1));
        let runtime = PruneError::runtime(PruneCall::SandboxImage)(timeout());
        assert_eq!(runtime.reason(), PruneReason::Runtime);
        assert!(
            runtime
                .to_string()
                .starts_with("CRI Status (the pod sandbox image) failed: "),
            "{runtime}"
        );
        let remove = PruneError::Remove(timeout());
        assert_eq!(remove.reason(), PruneReason::Remove);
        assert!(remove.to_string().starts_with("CRI RemoveImage failed: "));
    }
}
