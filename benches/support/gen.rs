//! A deterministic generator of realistic Kubernetes NodeLists, for the benchmarks.
//!
//! `Cluster::new(nodes, images, seed)` describes a cluster; `node(i, generation)` is
//! node `i` as the API server would return it (the same node for the same arguments,
//! whatever else was generated before), and `generation` moves only the condition
//! heartbeat times, as the kubelet's status update every 5 minutes does.
//!
//! What is realistic about it:
//! - image entries like the kubelet's: 1-2 repo digests (sometimes a mirror's), then
//!   1-3 tags (`v1.2.3`, `v1.2`, `v1`, `latest`...), cut to 5 names, digests first; a
//!   few images were re-pulled through 3-5 digests (their tags are cut off) and a few
//!   are dangling (digests only). Sizes 20 MB to 10 GB (log-uniform within a range per
//!   repository), the list sorted largest first. Nodes share images from a pool.
//! - 12% of the nodes (when `images` >= 50) are at the kubelet's default cap: they hold
//!   60 to 110 images but report exactly the 50 largest. 2% are small infrastructure
//!   nodes with 8-20 images. The rest report `images` images.
//! - ephemeral-storage as kubelets and hand-edited objects write it: `Ki`, `Gi`, plain
//!   bytes and decimal `G` (allocatable: plain bytes, `Ki`, `M`).
//! - labels (GKE-like; `nublado.lsst.io/permitted: "true"` on the lab and GPU pools,
//!   63% of the nodes), annotations, managedFields, conditions, addresses, nodeInfo,
//!   taints; 4% of the nodes are cordoned (`spec.unschedulable` and the taint).
//! - [`Cluster::config_yaml`] is a config with 20 wanted images: 14 exact references
//!   (tags, a short Docker Hub form, a digest, a registry with a port) and 2 patterns
//!   that discover 6 more tags on eligible nodes. Wanted images are on 35-99% of the
//!   lab nodes, so some are missing (absent, or unverifiable on nodes at the cap).

use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{self, Write};

/// xorshift64* seeded through splitmix64: tiny, fast and good enough here.
#[derive(Clone, Debug)]
pub struct Rng(u64);

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(len);
        s
    }

    /// Log-uniform in `[lo, hi]`.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

const MB: f64 = 1e6;
const MIN_SIZE: u64 = 20_000_000;
const MAX_SIZE: u64 = 10_000_000_000;
/// The kubelet reports at most this many names per image.
const MAX_NAMES: usize = 5;
/// The kubelet's default nodeStatusMaxImages.
const DEFAULT_CAP: usize = 50;

pub const LAB: &str = "ghcr.io/lsst-sqre/sciplat-lab";
const LAB_MIRROR: &str =
    "us-central1-docker.pkg.dev/rubin-shared-services-71ec/sciplat/sciplat-lab";
pub const PERMITTED_LABEL: &str = "nublado.lsst.io/permitted";

/// One image as a node reports it.
#[derive(Clone, Debug)]
pub struct PoolImage {
    /// Digests first, then tags, at most 5.
    pub names: Vec<String>,
    pub size_bytes: u64,
}

/// How many of the general images' names nodes share: the knob for name
/// cardinality. The wanted images, the lab images and the system images are the
/// same in every setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Names {
    /// Every node draws from as many general images as it reports: nearly all
    /// names are shared.
    Shared,
    /// Every node draws from a pool twice the size of what it reports (at least
    /// 300 images).
    #[default]
    Pool,
    /// Every node's general images are its own: tags and digests unique to the
    /// node (CI and build nodes, per-commit tags).
    Distinct,
}

impl Names {
    pub fn parse(s: &str) -> Option<Names> {
        match s {
            "shared" => Some(Names::Shared),
            "pool" => Some(Names::Pool),
            "distinct" => Some(Names::Distinct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Names::Shared => "shared",
            Names::Pool => "pool",
            Names::Distinct => "distinct",
        }
    }
}

/// A wanted (or pattern-matched) image with how often nodes have it.
#[derive(Clone, Debug)]
struct Special {
    image: PoolImage,
    /// Probability on a lab (permitted) node, and on any other node.
    on_lab: f64,
    on_other: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TagStyle {
    /// v1.2.3 (aliases v1.2, v1)
    V,
    /// 1.2.3 (aliases 1.2, 1)
    Plain,
    /// 3.11-slim
    Python,
    /// 2024-03-11
    Date,
    /// sha-1a2b3c4
    Sha,
    /// 7-stack-lsst_distrib-w_2023_14
    Stack,
}

/// Repositories of the general pool: (repository, tag style, size range in MB).
const REPOS: &[(&str, TagStyle, f64, f64)] = &[
    ("docker.io/library/python", TagStyle::Python, 50.0, 1100.0),
    ("docker.io/library/busybox", TagStyle::Plain, 20.0, 25.0),
    ("docker.io/library/postgres", TagStyle::Plain, 150.0, 450.0),
    ("docker.io/library/redis", TagStyle::Plain, 40.0, 140.0),
    ("docker.io/library/nginx", TagStyle::Plain, 40.0, 190.0),
    ("docker.io/library/alpine", TagStyle::Plain, 20.0, 30.0),
    ("docker.io/library/ubuntu", TagStyle::Date, 30.0, 80.0),
    ("docker.io/library/golang", TagStyle::Plain, 300.0, 900.0),
    ("docker.io/library/node", TagStyle::Plain, 150.0, 1100.0),
    ("docker.io/bitnami/kafka", TagStyle::Plain, 300.0, 600.0),
    (
        "docker.io/bitnami/postgresql",
        TagStyle::Plain,
        250.0,
        350.0,
    ),
    (
        "docker.io/confluentinc/cp-schema-registry",
        TagStyle::Plain,
        800.0,
        1400.0,
    ),
    ("docker.io/grafana/grafana", TagStyle::Plain, 300.0, 450.0),
    ("docker.io/lsstsqre/centos", TagStyle::Stack, 3000.0, 9000.0),
    (
        "ghcr.io/lsst-sqre/gafaelfawr",
        TagStyle::Plain,
        150.0,
        300.0,
    ),
    ("ghcr.io/lsst-sqre/mobu", TagStyle::Plain, 120.0, 250.0),
    ("ghcr.io/lsst-sqre/noteburst", TagStyle::Plain, 120.0, 250.0),
    (
        "ghcr.io/lsst-sqre/times-square",
        TagStyle::Plain,
        150.0,
        300.0,
    ),
    ("ghcr.io/lsst-sqre/squareone", TagStyle::Plain, 150.0, 400.0),
    (
        "ghcr.io/lsst-sqre/vo-cutouts",
        TagStyle::Plain,
        200.0,
        500.0,
    ),
    (
        "ghcr.io/lsst-sqre/nublado-jupyterlab-base",
        TagStyle::Plain,
        600.0,
        1500.0,
    ),
    ("ghcr.io/lsst-sqre/rubin-rag", TagStyle::Sha, 500.0, 3000.0),
    (
        "ghcr.io/lsst-sqre/sasquatch-backpack",
        TagStyle::Sha,
        100.0,
        300.0,
    ),
    (
        "quay.io/jupyter/base-notebook",
        TagStyle::Date,
        900.0,
        1400.0,
    ),
    (
        "quay.io/jupyter/scipy-notebook",
        TagStyle::Date,
        2500.0,
        4500.0,
    ),
    (
        "quay.io/jupyter/datascience-notebook",
        TagStyle::Date,
        4000.0,
        7000.0,
    ),
    (
        "quay.io/jupyter/pytorch-notebook",
        TagStyle::Date,
        5000.0,
        9900.0,
    ),
    ("quay.io/argoproj/argocd", TagStyle::V, 350.0, 500.0),
    (
        "quay.io/jetstack/cert-manager-controller",
        TagStyle::V,
        50.0,
        80.0,
    ),
    ("quay.io/strimzi/kafka", TagStyle::Plain, 500.0, 900.0),
    (
        "registry.k8s.io/ingress-nginx/controller",
        TagStyle::V,
        250.0,
        350.0,
    ),
    (
        "registry.k8s.io/sig-storage/csi-provisioner",
        TagStyle::V,
        50.0,
        80.0,
    ),
    (
        "registry.gitlab.com/gitlab-org/gitlab-runner",
        TagStyle::V,
        200.0,
        400.0,
    ),
    ("nvcr.io/nvidia/cuda", TagStyle::Plain, 1500.0, 9500.0),
    (
        "harbor.lsst.example:5443/rubin/pipeline-runner",
        TagStyle::Sha,
        2000.0,
        8000.0,
    ),
];

fn style_tag(rng: &mut Rng, style: TagStyle) -> String {
    match style {
        TagStyle::V => format!(
            "v{}.{}.{}",
            rng.range(0, 3),
            rng.range(0, 30),
            rng.range(0, 15)
        ),
        TagStyle::Plain => format!(
            "{}.{}.{}",
            rng.range(1, 16),
            rng.range(0, 40),
            rng.range(0, 12)
        ),
        TagStyle::Python => format!(
            "3.{}.{}{}",
            rng.range(8, 13),
            rng.range(0, 12),
            rng.pick(&["", "-slim", "-bookworm", "-alpine", "-slim-bookworm"])
        ),
        TagStyle::Date => format!(
            "{}-{:02}-{:02}",
            rng.range(2022, 2024),
            rng.range(1, 12),
            rng.range(1, 28)
        ),
        TagStyle::Sha => format!("sha-{}", rng.hex(7)),
        TagStyle::Stack => format!("7-stack-lsst_distrib-w_2023_{:02}", rng.range(1, 52)),
    }
}

/// Shorter tags for the same version (`v1.2.3` -> `v1.2`, `v1`; `3.11.4-slim` ->
/// `3.11-slim`), as release pipelines push them.
fn alias_tags(tag: &str) -> Vec<String> {
    let (version, suffix) = match tag.find('-') {
        Some(i) if tag.as_bytes()[0].is_ascii_digit() && tag.matches('.').count() == 2 => {
            (&tag[..i], &tag[i..])
        }
        _ => (tag, ""),
    };
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() != 3 || tag.starts_with("sha-") {
        return Vec::new();
    }
    vec![
        format!("{}.{}{suffix}", parts[0], parts[1]),
        format!("{}{suffix}", parts[0]),
    ]
}

fn digest(rng: &mut Rng, repo: &str) -> String {
    format!("{repo}@sha256:{}", rng.hex(64))
}

fn size(rng: &mut Rng, lo_mb: f64, hi_mb: f64) -> u64 {
    (rng.log_uniform(lo_mb * MB, hi_mb * MB) as u64).clamp(MIN_SIZE, MAX_SIZE)
}

/// An image entry: `digests` digests of `repo` (plus, with `mirror`, one of the
/// mirror), then the tags, cut to 5 names like the kubelet does.
fn entry(
    rng: &mut Rng,
    repo: &str,
    mirror: Option<&str>,
    digests: usize,
    tags: &[String],
    size_bytes: u64,
) -> PoolImage {
    let mut names: Vec<String> = (0..digests).map(|_| digest(rng, repo)).collect();
    if let Some(m) = mirror {
        names.push(digest(rng, m));
    }
    names.extend(tags.iter().map(|t| format!("{repo}:{t}")));
    names.truncate(MAX_NAMES);
    PoolImage { names, size_bytes }
}

/// How many digests an image of the general pools was pulled through: mostly 1 or 2;
/// 3% were pulled through 3-5 (their tags get cut off at 5 names).
fn digest_count(rng: &mut Rng) -> usize {
    if rng.chance(0.03) {
        rng.range(3, 5) as usize
    } else if rng.chance(0.3) {
        2
    } else {
        1
    }
}

/// The pools a node draws its images from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodePool {
    Lab,
    Gpu,
    General,
    Infra,
}

impl NodePool {
    fn name(self) -> &'static str {
        match self {
            NodePool::Lab => "lab",
            NodePool::Gpu => "gpu",
            NodePool::General => "general",
            NodePool::Infra => "infra",
        }
    }
}

/// Node `i`'s fixed traits.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    pub pool: NodePool,
    pub zone: &'static str,
    pub permitted: bool,
    pub cordoned: bool,
    /// Reports exactly the default cap (50) of a larger set of images.
    pub at_cap: bool,
}

impl Profile {
    /// Eligible for prepulling under [`Cluster::config_yaml`].
    pub fn eligible(&self) -> bool {
        self.permitted && !self.cordoned
    }
}

const ZONES: &[&str] = &["us-central1-a", "us-central1-b", "us-central1-c"];

/// A generated cluster: `nodes` nodes reporting (mostly) `images` images each.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub nodes: usize,
    pub images: usize,
    pub seed: u64,
    system: Vec<PoolImage>,
    specials: Vec<Special>,
    /// sciplat-lab images nobody asks for any more (older weeklies, dailies,
    /// experimentals, dangling), on lab nodes.
    lab: Vec<PoolImage>,
    general: Vec<PoolImage>,
    exact: Vec<String>,
    patterns: Vec<String>,
    names: Names,
}

impl Cluster {
    /// A cluster whose nodes share their general images from a pool ([`Names::Pool`]).
    pub fn new(nodes: usize, images: usize, seed: u64) -> Cluster {
        Cluster::with_names(nodes, images, seed, Names::Pool)
    }

    /// A cluster whose nodes share as many names as `names` says.
    pub fn with_names(nodes: usize, images: usize, seed: u64, names: Names) -> Cluster {
        let mut rng = Rng::new(seed);
        let mut used: HashSet<String> = HashSet::new();

        // On every node: small system images.
        let system: Vec<PoolImage> = [
            ("registry.k8s.io/pause", "3.9", 20.0, 21.0),
            (
                "registry.k8s.io/kube-proxy",
                "v1.29.1-gke.1589020",
                70.0,
                75.0,
            ),
            ("gke.gcr.io/gke-metrics-agent", "1.10.2-gke.0", 60.0, 70.0),
            ("gke.gcr.io/fluent-bit", "v1.8.12-gke.34", 80.0, 100.0),
            ("gke.gcr.io/netd", "v0.2.9-gke.0", 100.0, 120.0),
            ("quay.io/prometheus/node-exporter", "v1.7.0", 22.0, 25.0),
            ("quay.io/cilium/cilium", "v1.15.1", 400.0, 450.0),
            (
                "registry.k8s.io/sig-storage/csi-node-driver-registrar",
                "v2.9.0",
                20.0,
                30.0,
            ),
        ]
        .iter()
        .map(|&(repo, tag, lo, hi)| {
            used.insert(format!("{repo}:{tag}"));
            let s = size(&mut rng, lo, hi);
            entry(&mut rng, repo, None, 1, &[tag.to_string()], s)
        })
        .collect();

        // Wanted images (exact references or pattern matches), with their spread.
        let lab_image = |rng: &mut Rng, tags: &[&str]| {
            let s = size(rng, 6000.0, 9800.0);
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let mirror = rng.chance(0.5).then_some(LAB_MIRROR);
            entry(rng, LAB, mirror, 1, &tags, s)
        };
        let mut specials = Vec::new();
        let mut special = |image: PoolImage, on_lab: f64, on_other: f64| {
            specials.push(Special {
                image,
                on_lab,
                on_other,
            })
        };
        // Pattern-matched (6): the 4 latest weeklies and 2 releases.
        special(
            lab_image(&mut rng, &["w_2024_10", "recommended"]),
            0.97,
            0.05,
        );
        special(lab_image(&mut rng, &["w_2024_09"]), 0.95, 0.03);
        special(lab_image(&mut rng, &["w_2024_08"]), 0.93, 0.03);
        special(lab_image(&mut rng, &["w_2024_07"]), 0.90, 0.02);
        special(lab_image(&mut rng, &["r27_0_0", "r27_0_0_rc3"]), 0.96, 0.05);
        special(lab_image(&mut rng, &["r28_0_0"]), 0.60, 0.01);
        // Exact (14).
        special(lab_image(&mut rng, &["d_2024_03_12"]), 0.95, 0.02);
        special(lab_image(&mut rng, &["d_2024_03_13"]), 0.90, 0.02);
        special(lab_image(&mut rng, &["d_2024_03_14"]), 0.35, 0.0);
        let experimental = lab_image(&mut rng, &["exp_w_2024_10_mkl"]);
        let experimental_digest = experimental.names[0].clone();
        special(experimental, 0.80, 0.0);
        let mut other = |rng: &mut Rng,
                         repo: &str,
                         tags: &[&str],
                         lo: f64,
                         hi: f64,
                         on_lab: f64,
                         on_other: f64| {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let s = size(rng, lo, hi);
            let digests = if rng.chance(0.3) { 2 } else { 1 };
            special(entry(rng, repo, None, digests, &tags, s), on_lab, on_other);
        };
        let nublado = "ghcr.io/lsst-sqre/nublado";
        for (repo, p) in [
            (format!("{nublado}-jupyterlab-base"), 0.97),
            (format!("{nublado}-inithome"), 0.97),
            (format!("{nublado}-fileserver"), 0.90),
        ] {
            other(&mut rng, &repo, &["8.0.0"], 150.0, 1200.0, p, 0.02);
        }
        other(
            &mut rng,
            "docker.io/library/busybox",
            &["1.36", "1.36.1"],
            20.0,
            22.0,
            0.99,
            0.3,
        );
        other(
            &mut rng,
            "docker.io/library/python",
            &["3.12-slim", "3.12.2-slim"],
            120.0,
            160.0,
            0.90,
            0.2,
        );
        other(
            &mut rng,
            "quay.io/jupyter/base-notebook",
            &["2024-03-11"],
            900.0,
            1300.0,
            0.85,
            0.05,
        );
        other(
            &mut rng,
            "docker.io/lsstsqre/centos",
            &["7-stack-lsst_distrib-w_2024_10"],
            5000.0,
            8000.0,
            0.70,
            0.05,
        );
        other(
            &mut rng,
            "harbor.lsst.example:5443/rubin/obs-env",
            &["v2024.03"],
            2000.0,
            4000.0,
            0.80,
            0.0,
        );
        for s in &specials {
            for n in s.image.names.iter().filter(|n| !n.contains('@')) {
                used.insert(n.clone());
            }
        }
        // registry.k8s.io/pause:3.9 is a system image, on every node.
        let exact: Vec<String> = vec![
            format!("{LAB}:recommended"),
            format!("{LAB}:d_2024_03_12"),
            format!("{LAB}:d_2024_03_13"),
            format!("{LAB}:d_2024_03_14"),
            experimental_digest,
            format!("{nublado}-jupyterlab-base:8.0.0"),
            format!("{nublado}-inithome:8.0.0"),
            format!("{nublado}-fileserver:8.0.0"),
            "busybox:1.36".to_string(),
            "python:3.12-slim".to_string(),
            "quay.io/jupyter/base-notebook:2024-03-11".to_string(),
            "registry.k8s.io/pause:3.9".to_string(),
            "docker.io/lsstsqre/centos:7-stack-lsst_distrib-w_2024_10".to_string(),
            "harbor.lsst.example:5443/rubin/obs-env:v2024.03".to_string(),
        ];
        let patterns = vec![
            format!("^{}:w_2024_[0-9]+$", regex_escape(LAB)),
            format!("^{}:r[0-9]+_[0-9]+_[0-9]+$", regex_escape(LAB)),
        ];

        // Older sciplat-lab images: weeklies of 2023, dailies of January and
        // February, experimentals, and dangling ones (digests only). None matches a
        // pattern, and all are relevant to the exporter (wanted repository).
        let mut lab = Vec::new();
        while lab.len() < 60 {
            let s = size(&mut rng, 5500.0, 9800.0);
            let mirror = rng.chance(0.5).then_some(LAB_MIRROR);
            if rng.chance(0.15) {
                lab.push(entry(&mut rng, LAB, mirror, 1, &[], s));
                continue;
            }
            let tag = match rng.below(3) {
                0 => format!("w_2023_{:02}", rng.range(1, 52)),
                1 => format!("d_2024_{:02}_{:02}", rng.range(1, 2), rng.range(1, 28)),
                _ => format!("exp_w_2023_{:02}_{}", rng.range(1, 52), rng.hex(4)),
            };
            if used.insert(format!("{LAB}:{tag}")) {
                lab.push(entry(&mut rng, LAB, mirror, 1, &[tag], s));
            }
        }

        // The general pool: twice as many images as a node reports, at least 300
        // (as many as it reports when nodes share their names).
        let want = match names {
            Names::Shared => images.max(1),
            Names::Pool | Names::Distinct => (2 * images).max(300),
        };
        let mut general = Vec::with_capacity(want);
        let mut latest_given: HashSet<&str> = HashSet::new();
        while general.len() < want {
            let &(repo, style, lo, hi) = rng.pick(REPOS);
            let s = size(&mut rng, lo, hi);
            let digests = digest_count(&mut rng);
            if rng.chance(0.04) {
                // Dangling: its tags moved to a newer image.
                general.push(entry(&mut rng, repo, None, digests, &[], s));
                continue;
            }
            let first = style_tag(&mut rng, style);
            if !used.insert(format!("{repo}:{first}")) {
                continue;
            }
            let mut tags = vec![first.clone()];
            let extra = rng.range(0, 2) as usize;
            for alias in alias_tags(&first).into_iter().take(extra) {
                if used.insert(format!("{repo}:{alias}")) {
                    tags.push(alias);
                }
            }
            if tags.len() < 3 && rng.chance(0.1) && latest_given.insert(repo) {
                tags.push("latest".to_string());
            }
            general.push(entry(&mut rng, repo, None, digests, &tags, s));
        }

        Cluster {
            nodes,
            images,
            seed,
            system,
            specials,
            lab,
            general,
            exact,
            patterns,
            names,
        }
    }

    fn node_rng(&self, i: usize) -> Rng {
        Rng::new(self.seed ^ splitmix((i as u64).wrapping_add(0x5EED)))
    }

    /// The fixed traits of node `i`.
    pub fn profile(&self, i: usize) -> Profile {
        let mut rng = self.node_rng(i);
        let roll = rng.unit();
        let pool = if roll < 0.02 {
            NodePool::Infra
        } else if roll < 0.57 {
            NodePool::Lab
        } else if roll < 0.65 {
            NodePool::Gpu
        } else {
            NodePool::General
        };
        let zone = *rng.pick(ZONES);
        let cordoned = rng.chance(0.04);
        let at_cap = pool != NodePool::Infra && self.images >= DEFAULT_CAP && rng.chance(0.12);
        // Unique: a bijection of i onto 4 base-36 digits (1_234_577 is prime to 36^4).
        let code = (i as u64).wrapping_mul(1_234_577) % 36u64.pow(4);
        let suffix: String = (0..4)
            .map(|k| {
                let d = (code / 36u64.pow(3 - k)) % 36;
                char::from_digit(d as u32, 36).unwrap()
            })
            .collect();
        let zone_letter = u64::from(*zone.as_bytes().last().unwrap_or(&b'a'));
        let group = splitmix(self.seed ^ (pool as u64) << 8 ^ zone_letter) as u32;
        Profile {
            name: format!("gke-rsp-prod-{}-pool-{group:08x}-{suffix}", pool.name()),
            pool,
            zone,
            permitted: matches!(pool, NodePool::Lab | NodePool::Gpu),
            cordoned,
            at_cap,
        }
    }

    pub fn node_name(&self, i: usize) -> String {
        self.profile(i).name
    }

    /// The image entries node `i` reports, largest first.
    pub fn node_images(&self, i: usize) -> Vec<&PoolImage> {
        let p = self.profile(i);
        let mut rng = self.node_rng(i);
        for _ in 0..8 {
            rng.next_u64(); // independent of the profile's draws
        }
        let report = match p.pool {
            NodePool::Infra => rng.range(8, 20) as usize,
            _ if p.at_cap => DEFAULT_CAP,
            _ => self.images,
        };
        let on_disk = if p.at_cap {
            DEFAULT_CAP + rng.range(10, 60) as usize
        } else {
            report
        };
        let lab_node = p.permitted;
        let mut chosen: Vec<&PoolImage> = self.system.iter().collect();
        for s in &self.specials {
            let prob = if lab_node { s.on_lab } else { s.on_other };
            if rng.chance(prob) {
                chosen.push(&s.image);
            }
        }
        if lab_node {
            // 10 to 30 older sciplat-lab images, fewer on small nodes.
            let k = (rng.range(10, 30) as usize).min(on_disk / 4);
            chosen.extend(sample(&mut rng, &self.lab, k));
        }
        let rest = on_disk.saturating_sub(chosen.len());
        chosen.extend(sample(&mut rng, &self.general, rest));
        chosen.sort_by_key(|im| std::cmp::Reverse(im.size_bytes));
        chosen.truncate(report);
        chosen
    }

    /// Node `i` as the API server returns it. `generation` moves the heartbeat
    /// times (a status update).
    pub fn node(&self, i: usize, generation: u64) -> Value {
        self.node_with(i, generation, 0)
    }

    /// Node `i` with its `drop_images` smallest images gone (an image count change).
    pub fn node_with(&self, i: usize, generation: u64, drop_images: usize) -> Value {
        let p = self.profile(i);
        let mut images = self.node_images(i);
        images.truncate(images.len().saturating_sub(drop_images));
        let mut rng = self.node_rng(i);
        for _ in 0..64 {
            rng.next_u64();
        }
        if self.names != Names::Distinct {
            return node_json(&p, i, generation, &images, &mut rng);
        }
        let general = self.general.as_ptr_range();
        let own: Vec<PoolImage> = images
            .iter()
            .map(|&im| {
                if general.contains(&(im as *const PoolImage)) {
                    distinct(im, i)
                } else {
                    im.clone()
                }
            })
            .collect();
        let own: Vec<&PoolImage> = own.iter().collect();
        node_json(&p, i, generation, &own, &mut rng)
    }

    /// The number of entries node `i` reports.
    pub fn image_count(&self, i: usize) -> usize {
        self.node_images(i).len()
    }

    /// Writes the whole NodeList as `kubectl get nodes -o json` does; returns the
    /// bytes written.
    pub fn write_node_list(&self, out: &mut impl Write) -> io::Result<u64> {
        let mut n = 0u64;
        let head = b"{\"apiVersion\":\"v1\",\"items\":[";
        out.write_all(head)?;
        n += head.len() as u64;
        for i in 0..self.nodes {
            if i > 0 {
                out.write_all(b",")?;
                n += 1;
            }
            let s = serde_json::to_string(&self.node(i, 0)).map_err(io::Error::other)?;
            out.write_all(s.as_bytes())?;
            n += s.len() as u64;
        }
        let tail = b"],\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"\"}}\n";
        out.write_all(tail)?;
        Ok(n + tail.len() as u64)
    }

    /// A config wanting 20 images: the 14 exact references and the 2 patterns.
    pub fn config_yaml(&self) -> String {
        let mut s = String::from("defaultMaxImages: 50\nprepull:\n  images:\n");
        for e in &self.exact {
            s.push_str(&format!("    - '{e}'\n"));
        }
        s.push_str("  patterns:\n");
        for p in &self.patterns {
            s.push_str(&format!("    - '{p}'\n"));
        }
        s.push_str(&format!(
            "  nodeSelector:\n    {PERMITTED_LABEL}: \"true\"\n"
        ));
        s
    }

    /// How many images the config wants once the patterns found their tags.
    pub const WANTED: usize = 20;
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// `im` as node `i` alone has it: each tag gets the node's suffix, each digest
/// becomes one derived from it and the node.
fn distinct(im: &PoolImage, i: usize) -> PoolImage {
    let names = im
        .names
        .iter()
        .map(|name| match name.split_once("@sha256:") {
            Some((repo, digest)) => {
                let seed = digest
                    .bytes()
                    .fold(i as u64, |h, b| splitmix(h ^ u64::from(b)));
                let mut rng = Rng::new(seed);
                format!("{repo}@sha256:{}", rng.hex(64))
            }
            None => format!("{name}-n{i:x}"),
        })
        .collect();
    PoolImage {
        names,
        size_bytes: im.size_bytes,
    }
}

/// `k` distinct items of `pool`, in random order (partial Fisher-Yates).
fn sample<'a>(rng: &mut Rng, pool: &'a [PoolImage], k: usize) -> Vec<&'a PoolImage> {
    let k = k.min(pool.len());
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    for j in 0..k {
        let r = j + rng.below((pool.len() - j) as u64) as usize;
        idx.swap(j, r);
    }
    idx[..k].iter().map(|&j| &pool[j]).collect()
}

/// An ephemeral-storage capacity and allocatable, formatted in varied ways.
fn storage(rng: &mut Rng) -> (String, String) {
    let disk_gb = *rng.pick(&[100u64, 200, 375, 500, 1000, 2000, 3000]);
    // The filesystem keeps a little for itself.
    let bytes = disk_gb * 1_000_000_000 / 1000 * rng.range(960, 985);
    let capacity = match rng.below(5) {
        0 | 1 => format!("{}Ki", bytes / 1024),
        2 => format!("{}Gi", bytes >> 30),
        3 => bytes.to_string(),
        _ => format!("{}G", bytes / 1_000_000_000),
    };
    let alloc = bytes / 100 * 91;
    let allocatable = match rng.below(4) {
        0 | 1 => alloc.to_string(),
        2 => format!("{}Ki", alloc / 1024),
        _ => format!("{}M", alloc / 1_000_000),
    };
    (capacity, allocatable)
}

fn timestamp(secs: u64) -> String {
    // 2024-03-01T00:00:00Z plus `secs`, in the format the API server uses.
    const DAYS: [u64; 10] = [31, 30, 31, 30, 31, 31, 30, 31, 30, 31]; // March..December
    let mut day = secs / 86_400;
    let mut month = 3;
    for d in DAYS {
        if day < d {
            break;
        }
        day -= d;
        month += 1;
    }
    let rem = secs % 86_400;
    format!(
        "2024-{month:02}-{:02}T{:02}:{:02}:{:02}Z",
        day + 1,
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn node_json(
    p: &Profile,
    i: usize,
    generation: u64,
    images: &[&PoolImage],
    rng: &mut Rng,
) -> Value {
    let (capacity, allocatable) = storage(rng);
    let machine = match p.pool {
        NodePool::Lab => (
            "n2-highmem-16",
            "16",
            "15890m",
            "131896860Ki",
            "123164700Ki",
        ),
        NodePool::Gpu => ("a2-highgpu-1g", "12", "11900m", "87531456Ki", "80147392Ki"),
        NodePool::General => ("e2-standard-8", "8", "7910m", "32880784Ki", "29094544Ki"),
        NodePool::Infra => ("e2-standard-4", "4", "3920m", "16393340Ki", "13265532Ki"),
    };
    let (instance_type, cpu, cpu_alloc, memory, memory_alloc) = machine;
    let name = &p.name;
    let mut labels = serde_json::Map::new();
    for (k, v) in [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/instance-type", instance_type),
        ("beta.kubernetes.io/os", "linux"),
        ("cloud.google.com/gke-boot-disk", "pd-balanced"),
        ("cloud.google.com/gke-container-runtime", "containerd"),
        ("cloud.google.com/gke-cpu-scaling-level", cpu),
        ("cloud.google.com/gke-logging-variant", "DEFAULT"),
        ("cloud.google.com/gke-max-pods-per-node", "110"),
        ("cloud.google.com/gke-nodepool", p.pool.name()),
        ("cloud.google.com/gke-os-distribution", "cos"),
        ("cloud.google.com/machine-family", &instance_type[..2]),
        ("cloud.google.com/private-node", "false"),
        ("failure-domain.beta.kubernetes.io/region", "us-central1"),
        ("failure-domain.beta.kubernetes.io/zone", p.zone),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("node.kubernetes.io/instance-type", instance_type),
        ("topology.gke.io/zone", p.zone),
        ("topology.kubernetes.io/region", "us-central1"),
        ("topology.kubernetes.io/zone", p.zone),
    ] {
        labels.insert(k.to_string(), json!(v));
    }
    if p.permitted {
        labels.insert(PERMITTED_LABEL.to_string(), json!("true"));
    }
    if p.pool == NodePool::Gpu {
        labels.insert(
            "cloud.google.com/gke-accelerator".into(),
            json!("nvidia-tesla-a100"),
        );
    }
    let uid = format!(
        "{}-{}-{}-{}-{}",
        rng.hex(8),
        rng.hex(4),
        rng.hex(4),
        rng.hex(4),
        rng.hex(12)
    );
    let created = timestamp(rng.range(0, 86_400 * 5));
    // Every node posts its status every 5 minutes, at its own phase.
    let heartbeat = timestamp(86_400 * 10 + (i as u64 % 300) + generation * 300);
    let transition = timestamp(rng.range(86_400 * 5, 86_400 * 6));
    let ip = format!("10.128.{}.{}", (i / 250) % 256, 2 + i % 250);
    let images: Vec<Value> = images
        .iter()
        .map(|im| json!({"names": im.names, "sizeBytes": im.size_bytes}))
        .collect();
    let mut conditions = Vec::new();
    for (t, reason, message) in [
        (
            "FrequentUnregisterNetDevice",
            "NoFrequentUnregisterNetDevice",
            "node is functioning properly",
        ),
        (
            "FrequentKubeletRestart",
            "NoFrequentKubeletRestart",
            "kubelet is functioning properly",
        ),
        (
            "FrequentDockerRestart",
            "NoFrequentDockerRestart",
            "docker is functioning properly",
        ),
        (
            "FrequentContainerdRestart",
            "NoFrequentContainerdRestart",
            "containerd is functioning properly",
        ),
        (
            "KernelDeadlock",
            "KernelHasNoDeadlock",
            "kernel has no deadlock",
        ),
        (
            "ReadonlyFilesystem",
            "FilesystemIsNotReadOnly",
            "Filesystem is not read-only",
        ),
        (
            "CorruptDockerOverlay2",
            "NoCorruptDockerOverlay2",
            "docker overlay2 is functioning properly",
        ),
        (
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        (
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        (
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
    ] {
        conditions.push(json!({
            "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition,
            "message": message, "reason": reason, "status": "False", "type": t
        }));
    }
    conditions.push(json!({
        "lastHeartbeatTime": heartbeat, "lastTransitionTime": transition,
        "message": "kubelet is posting ready status. AppArmor enabled",
        "reason": "KubeletReady", "status": "True", "type": "Ready"
    }));
    let mut taints = Vec::new();
    if p.pool == NodePool::Gpu {
        taints.push(json!({"effect": "NoSchedule", "key": "nvidia.com/gpu", "value": "present"}));
    }
    if p.cordoned {
        taints.push(json!({
            "effect": "NoSchedule", "key": "node.kubernetes.io/unschedulable",
            "timeAdded": transition
        }));
    }
    let mut spec = json!({
        "podCIDR": format!("10.{}.{}.0/24", 64 + (i / 256) % 64, i % 256),
        "podCIDRs": [format!("10.{}.{}.0/24", 64 + (i / 256) % 64, i % 256)],
        "providerID": format!("gce://rsp-prod/{}/{name}", p.zone),
    });
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    if p.cordoned {
        spec["unschedulable"] = json!(true);
    }
    let managed_fields = json!([
        {
            "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kubelet",
            "operation": "Update", "time": created,
            "fieldsV1": {"f:metadata": {
                "f:annotations": {".": {}, "f:container.googleapis.com/instance_id": {},
                    "f:csi.volume.kubernetes.io/nodeid": {}, "f:node.alpha.kubernetes.io/ttl": {},
                    "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
                "f:labels": {".": {}, "f:beta.kubernetes.io/arch": {}, "f:beta.kubernetes.io/os": {},
                    "f:cloud.google.com/gke-nodepool": {}, "f:kubernetes.io/arch": {},
                    "f:kubernetes.io/hostname": {}, "f:kubernetes.io/os": {},
                    "f:node.kubernetes.io/instance-type": {}, "f:topology.kubernetes.io/region": {},
                    "f:topology.kubernetes.io/zone": {}}},
                "f:spec": {"f:providerID": {}}}
        },
        {
            "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kube-controller-manager",
            "operation": "Update", "time": created,
            "fieldsV1": {"f:spec": {"f:podCIDR": {}, "f:podCIDRs": {".": {}, "v:\"10.64.0.0/24\"": {}}}}
        },
        {
            "apiVersion": "v1", "fieldsType": "FieldsV1", "manager": "kubelet",
            "operation": "Update", "subresource": "status", "time": heartbeat,
            "fieldsV1": {"f:status": {
                "f:allocatable": {"f:ephemeral-storage": {}, "f:memory": {}},
                "f:capacity": {"f:ephemeral-storage": {}, "f:memory": {}},
                "f:conditions": {"k:{\"type\":\"DiskPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"MemoryPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"PIDPressure\"}": {"f:lastHeartbeatTime": {}},
                    "k:{\"type\":\"Ready\"}": {"f:lastHeartbeatTime": {}, "f:message": {}}},
                "f:images": {}, "f:nodeInfo": {"f:bootID": {}, "f:kernelVersion": {}}}}
        }
    ]);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "annotations": {
                "container.googleapis.com/instance_id": rng.range(1_000_000_000_000_000_000, 9_000_000_000_000_000_000).to_string(),
                "csi.volume.kubernetes.io/nodeid": format!(
                    "{{\"pd.csi.storage.gke.io\":\"projects/rsp-prod/zones/{}/instances/{name}\"}}", p.zone),
                "node.alpha.kubernetes.io/ttl": "0",
                "node.gke.io/last-applied-node-labels": format!(
                    "cloud.google.com/gke-boot-disk=pd-balanced,cloud.google.com/gke-nodepool={}", p.pool.name()),
                "volumes.kubernetes.io/controller-managed-attach-detach": "true"
            },
            "creationTimestamp": created,
            "labels": labels,
            "managedFields": managed_fields,
            "name": name,
            "uid": uid
        },
        "spec": spec,
        "status": {
            "addresses": [
                {"address": ip, "type": "InternalIP"},
                {"address": "", "type": "ExternalIP"},
                {"address": name, "type": "Hostname"}
            ],
            "allocatable": {
                "cpu": cpu_alloc, "ephemeral-storage": allocatable, "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": memory_alloc, "pods": "110"
            },
            "capacity": {
                "cpu": cpu, "ephemeral-storage": capacity, "hugepages-1Gi": "0",
                "hugepages-2Mi": "0", "memory": memory, "pods": "110"
            },
            "conditions": conditions,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": images,
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": format!("{}-{}-{}-{}-{}", rng.hex(8), rng.hex(4), rng.hex(4), rng.hex(4), rng.hex(12)),
                "containerRuntimeVersion": "containerd://1.7.10",
                "kernelVersion": "6.1.58+",
                "kubeProxyVersion": "v1.29.1-gke.1589020",
                "kubeletVersion": "v1.29.1-gke.1589020",
                "machineID": rng.hex(32),
                "operatingSystem": "linux",
                "osImage": "Container-Optimized OS from Google",
                "systemUUID": format!("{}-{}-{}-{}-{}", rng.hex(8), rng.hex(4), rng.hex(4), rng.hex(4), rng.hex(12))
            }
        }
    })
}
