//! The agent's pruning runs (I/O): every `prune.interval` it reads the runtime
//! (images, containers, its pod sandbox image, each image's created time) and
//! the exporter's
//! `/v1/wanted` for this node, plans with [`crate::analysis::prune::plan`],
//! publishes the plan (`/v1/images`, metrics), and, when enabled and not a dry
//! run, waits `prune.grace` and removes the planned images through CRI
//! `RemoveImage`. Before each removal it asks again whether a container uses
//! the image and whether the image is still there: one that became used or
//! vanished meanwhile is skipped, not an error.

use super::cri::{self, v1};
use super::error::{PruneCall, PruneError, WantedError};
use super::families::AgentMetrics;
use super::{Agent, report};
use crate::analysis::prune::{self, ImageFacts, Plan, PruneSettings, WantedOnNode};
use crate::analysis::reference::ImageRef;
use crate::analysis::runtime::RuntimeImage;
use crate::client::http::{ClientError, HttpError};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Largest `/v1/wanted` answer read.
pub const MAX_WANTED_BYTES: usize = 16 << 20;

/// Where the agent asks which images are wanted on its node.
#[derive(Debug, Clone)]
pub struct ExporterOptions {
    /// The exporter's base URL, e.g. `http://imagecap-exporter.monitoring:9754`.
    pub url: String,
    pub username: Option<String>,
    /// Read again on every request (rotation).
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// What one run found and did.
struct Run {
    plan: Plan,
    removed: u32,
}

/// The state kept from run to run.
pub struct Pruner {
    client: cri::Client,
    http: Option<reqwest::Client>,
    exporter: Option<ExporterOptions>,
    node: String,
    settings: PruneSettings,
    metrics: Arc<AgentMetrics>,
    /// Each image's created time, by id: it never changes for an id.
    created: HashMap<String, Option<SystemTime>>,
    /// The last reason logged for a run that removed nothing, to log it once.
    last_skip: Option<String>,
}

impl Pruner {
    pub fn new(
        client: cri::Client,
        exporter: Option<ExporterOptions>,
        node: String,
        settings: PruneSettings,
        metrics: Arc<AgentMetrics>,
    ) -> Result<Pruner, ClientError> {
        let http = match &exporter {
            Some(opts) => Some(http_client(opts)?),
            None => None,
        };
        Ok(Pruner {
            client,
            http,
            exporter,
            node,
            settings,
            metrics,
            created: HashMap::new(),
            last_skip: None,
        })
    }

    /// Runs every `prune.interval` until `shutdown`.
    pub async fn run(mut self, agent: Agent, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let run = tokio::select! {
                r = self.once(&agent, &shutdown) => r,
                _ = shutdown.cancelled() => return,
            };
            self.metrics.prune_ran(SystemTime::now());
            match run {
                Ok(run) => {
                    let skip = skip_reason(&run.plan, &self.settings, run.removed);
                    self.log_skip(skip);
                }
                Err(why) => self.log_skip(Some(why.to_string())),
            }
        }
    }

    /// Logs why a run removed nothing, once per distinct reason.
    fn log_skip(&mut self, reason: Option<String>) {
        if reason != self.last_skip {
            if let Some(r) = &reason {
                tracing::warn!(node = %self.node, "pruning removed nothing this run: {r}");
            }
            self.last_skip = reason;
        }
    }

    /// One run: plan, publish, and remove when allowed.
    async fn once(
        &mut self,
        agent: &Agent,
        shutdown: &CancellationToken,
    ) -> Result<Run, PruneError> {
        let images = self.images().await.map_err(|e| self.counted(e))?;
        let wanted = self.wanted().await.map_err(|e| {
            let e = self.counted(e.into());
            tracing::debug!("wanted images unknown: {e}");
            e.to_string()
        });
        let (refs, cap) = match &wanted {
            Ok((refs, cap)) => (Ok(refs.as_slice()), Some(*cap)),
            Err(e) => (Err(e.as_str()), None),
        };
        let plan = prune::plan(&images, refs, cap, &self.settings);
        self.metrics.prune_candidates(plan.remove);
        agent.set_plan(plan.clone());
        if !self.settings.removes() || plan.remove == 0 {
            return Ok(Run { plan, removed: 0 });
        }
        if !self.settings.grace.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.grace) => {}
                _ = shutdown.cancelled() => return Ok(Run { plan, removed: 0 }),
            }
        }
        let mut removed = 0;
        for image in plan.removals() {
            if self.remove(&image.id, &image.name, image.size).await {
                removed += 1;
            }
        }
        Ok(Run { plan, removed })
    }

    /// Counts a failure under its reason, and gives it back.
    fn counted(&self, e: PruneError) -> PruneError {
        self.metrics.prune_error(e.reason());
        e
    }

    /// Removes one planned image unless it became used or vanished; `true` when
    /// removed.
    async fn remove(&mut self, id: &str, name: &str, size: u64) -> bool {
        let used = match self.client.list_containers().await {
            Ok(containers) => used_by(&containers),
            Err(e) => {
                let e = self.counted(PruneError::runtime(PruneCall::ListContainers)(e));
                tracing::warn!(image = %name, %id, "not removed: {e}");
                return false;
            }
        };
        match self.client.image_status(id).await {
            Ok(Some(details)) => {
                let image = report::runtime_image(details.image);
                if is_used(&image, &used) {
                    tracing::info!(image = %name, %id, "not removed: a container started using it after the plan");
                    return false;
                }
            }
            Ok(None) => {
                tracing::info!(image = %name, %id, "not removed: it is gone already");
                return false;
            }
            Err(e) => {
                let e = self.counted(PruneError::runtime(PruneCall::ImageStatus)(e));
                tracing::warn!(image = %name, %id, "not removed: {e}");
                return false;
            }
        }
        match self.client.remove_image(id).await {
            Ok(()) => {
                self.metrics.prune_removed(size);
                self.created.remove(id);
                tracing::info!(image = %name, %id, size, "removed image to keep the node under its cap");
                true
            }
            Err(e) => {
                let e = self.counted(PruneError::Remove(e));
                tracing::warn!(image = %name, %id, "{e}");
                false
            }
        }
    }

    /// The runtime's images with the facts the plan needs. Without the containers
    /// the plan cannot know what is in use: an error, and nothing is planned.
    async fn images(&mut self) -> Result<Vec<(RuntimeImage, ImageFacts)>, PruneError> {
        let (images, containers) =
            tokio::join!(self.client.list_images(), self.client.list_containers());
        let images = images.map_err(PruneError::runtime(PruneCall::ListImages))?;
        let containers = containers.map_err(PruneError::runtime(PruneCall::ListContainers))?;
        let sandbox = self
            .client
            .sandbox_image()
            .await
            .map_err(PruneError::runtime(PruneCall::SandboxImage))?
            .and_then(|s| ImageRef::parse(&s).ok());
        let used = used_by(&containers);
        let ids: HashSet<&str> = images.images.iter().map(|i| i.id.as_str()).collect();
        self.created.retain(|id, _| ids.contains(id.as_str()));
        let mut out = Vec::with_capacity(images.images.len());
        for image in images.images {
            let pinned = image.pinned;
            let image = report::runtime_image(image);
            let created = self.created_time(&image.id).await;
            let in_use = is_used(&image, &used);
            let sandbox = sandbox.as_ref().is_some_and(|s| names_match(s, &image));
            out.push((
                image,
                ImageFacts {
                    in_use,
                    pinned,
                    sandbox,
                    created,
                },
            ));
        }
        Ok(out)
    }

    /// An image's created time, asked once per id (a failure is asked again next
    /// run, and meanwhile the image sorts after those with a time).
    async fn created_time(&mut self, id: &str) -> Option<SystemTime> {
        if let Some(c) = self.created.get(id) {
            return *c;
        }
        match self.client.image_status(id).await {
            Ok(details) => {
                let created = details.and_then(|d| d.created);
                self.created.insert(id.to_string(), created);
                created
            }
            Err(e) => {
                let e = self.counted(PruneError::runtime(PruneCall::ImageStatus)(e));
                tracing::debug!(%id, "{e}");
                None
            }
        }
    }

    /// The images wanted on this node and its cap in force, or why they are unknown.
    async fn wanted(&self) -> Result<(Vec<ImageRef>, i64), WantedError> {
        let (Some(opts), Some(http)) = (&self.exporter, &self.http) else {
            return Err(WantedError::NoExporter);
        };
        let answer = fetch_wanted(http, opts, &self.node).await?;
        let refs = prune::trusted_wanted(&answer, &self.node)?;
        Ok((refs, answer.max_images))
    }
}

/// Why a run with this plan removed nothing, when it is worth a line (runs
/// happen only with pruning enabled).
fn skip_reason(plan: &Plan, settings: &PruneSettings, removed: u32) -> Option<String> {
    if let Some(b) = &plan.blocked {
        return Some(b.clone());
    }
    if plan.remove > 0 && settings.dry_run {
        let names: Vec<&str> = plan.removals().map(|i| i.name.as_str()).collect();
        return Some(format!(
            "dry run; would remove {} image(s): {}",
            names.len(),
            names.join(", ")
        ));
    }
    if plan.remove > 0 && removed == 0 {
        return Some("every planned removal was skipped".into());
    }
    if plan.short_by > 0 && plan.remove == 0 {
        return Some(format!(
            "the node holds {} images, and {} more than the target of {} are protected",
            plan.held,
            plan.short_by,
            plan.target.unwrap_or(0)
        ));
    }
    None
}

/// Every name and id the containers use: `image_ref` and `image_id` (the image
/// id), and the image as the container spec names it.
fn used_by(containers: &[v1::Container]) -> HashSet<String> {
    let mut used = HashSet::new();
    for c in containers {
        for s in [&c.image_ref, &c.image_id] {
            if !s.is_empty() {
                used.insert(s.clone());
            }
        }
        if let Some(spec) = &c.image
            && !spec.image.is_empty()
        {
            used.insert(spec.image.clone());
        }
    }
    used
}

/// Whether one of the image's names is `reference`.
fn names_match(reference: &ImageRef, image: &RuntimeImage) -> bool {
    image
        .repo_tags
        .iter()
        .chain(&image.repo_digests)
        .filter_map(|n| ImageRef::parse(n).ok())
        .any(|n| reference.matches(&n))
}

fn is_used(image: &RuntimeImage, used: &HashSet<String>) -> bool {
    used.contains(&image.id)
        || image
            .repo_tags
            .iter()
            .chain(&image.repo_digests)
            .any(|n| used.contains(n))
}

/// The HTTP client for the exporter: rustls, the CA when given, no redirects.
fn http_client(opts: &ExporterOptions) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder()
        .connect_timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::none());
    crate::client::http::build_with_ca(builder, opts.ca_file.as_deref())
}

/// One `GET /v1/wanted?node=NODE`, bounded in time and size.
async fn fetch_wanted(
    http: &reqwest::Client,
    opts: &ExporterOptions,
    node: &str,
) -> Result<WantedOnNode, WantedError> {
    let base = opts.url.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(&format!("{base}/v1/wanted"), [("node", node)])
        .map_err(|e| WantedError::Url {
            base: base.to_string(),
            source: Box::new(e),
        })?;
    let mut request = http.get(url.clone());
    if let Some(user) = &opts.username {
        let password = match &opts.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|source| WantedError::PasswordFile {
                    path: p.clone(),
                    source,
                })?
                .trim()
                .to_string(),
            None => String::new(),
        };
        request = request.basic_auth(user, Some(password));
    }
    let url = url.to_string();
    let work = async {
        let failed = |e| WantedError::Exchange {
            url: url.clone(),
            source: HttpError::exchange(e, opts.timeout),
        };
        let mut response = request.send().await.map_err(failed)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(WantedError::Redirect(HttpError::redirect(
                &url,
                status,
                response.headers(),
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_WANTED_BYTES {
                return Err(WantedError::TooLarge {
                    url: url.clone(),
                    limit: MAX_WANTED_BYTES,
                });
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(WantedError::Status {
                url: url.clone(),
                status,
                detail: crate::text::shown(&detail).to_string(),
            });
        }
        serde_json::from_slice::<WantedOnNode>(&body).map_err(|source| WantedError::Decode {
            url: url.clone(),
            source,
        })
    };
    match tokio::time::timeout(opts.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(WantedError::Exchange {
            url: url.clone(),
            source: HttpError::Timeout(opts.timeout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(image_ref: &str, spec: &str, image_id: &str) -> v1::Container {
        v1::Container {
            image_ref: image_ref.into(),
            image_id: image_id.into(),
            image: Some(v1::ImageSpec { image: spec.into() }),
            ..Default::default()
        }
    }

    fn image(id: &str, tags: &[&str]) -> RuntimeImage {
        RuntimeImage {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            size: 1,
        }
    }

    #[test]
    fn use_is_found_by_id_or_by_name() {
        let used = used_by(&[
            container("sha256:aaa", "", ""),
            container("", "x.test/b:1", ""),
            container("", "", "sha256:ccc"),
        ]);
        assert!(is_used(&image("sha256:aaa", &["x.test/a:1"]), &used));
        assert!(is_used(&image("sha256:bbb", &["x.test/b:1"]), &used));
        assert!(is_used(&image("sha256:ccc", &[]), &used));
        assert!(!is_used(&image("sha256:ddd", &["x.test/d:1"]), &used));
        assert!(!used.contains(""), "empty fields are no name");
    }

    #[test]
    fn a_skipped_run_says_why() {
        let settings = PruneSettings {
            enabled: true,
            dry_run: true,
            target: Some(0),
            ..PruneSettings::default()
        };
        let images: Vec<_> = (0..2)
            .map(|i| {
                (
                    image(&format!("sha256:{i}"), &[&format!("x.test/a:{i}")]),
                    ImageFacts::default(),
                )
            })
            .collect();
        let plan = prune::plan(&images, Ok(&[]), None, &settings);
        let why = skip_reason(&plan, &settings, 0).unwrap();
        assert!(
            why.contains("dry run; would remove 2 image(s): x.test/a:0, x.test/a:1"),
            "{why}"
        );
        let blocked = prune::plan(&images, Err("the exporter did not answer"), None, &settings);
        assert_eq!(
            skip_reason(&blocked, &settings, 0).as_deref(),
            Some("the exporter did not answer")
        );
        let removing = PruneSettings {
            dry_run: false,
            ..settings
        };
        assert_eq!(skip_reason(&plan, &removing, 2), None);
        assert!(skip_reason(&plan, &removing, 0).is_some());
    }
}
