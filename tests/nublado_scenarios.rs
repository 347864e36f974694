//! Nublado's own answers, matched: every `PrepullerStatus` body that Nublado's
//! controller code served for a set of real and test nodes is read by `check`, and
//! the exporter's view of eligibility and of the images on each node is compared
//! with Nublado's.
//!
//! The scenarios live outside the repository, in `../shared/data/nublado/scenarios/`
//! (or `$IMAGECAP_SHARED_DATA/nublado/scenarios/` when that variable is set). Each
//! holds `nodes.json` (the NodeList Nublado saw), `status.json` (its answer on
//! `GET /nublado/spawner/v1/prepulls`), `exporter-config.yaml` (Nublado's lab node
//! selector and tolerations as a `prepull` configuration) and
//! `nublado-eligibility.json` (Nublado's per-node verdict). Without that directory
//! these tests say they skip and pass.
//!
//! Where the exporter differs from Nublado on purpose (README, "Where the exporter
//! differs from Nublado, on purpose"), the difference is listed below by scenario and
//! node with its reason, and the test checks that the data really shows that kind of
//! difference there; any other difference fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Why the exporter and Nublado disagree on whether an image is on a node.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Why {
    /// The node carries the wanted digest only under another repository's name.
    /// Nublado matches a node's images by digest string alone and calls the image
    /// present; the kubelet resolves the pod's reference by its own name and pulls,
    /// so the exporter calls it missing.
    DigestUnderAnotherRepository,
    /// The node lists the image as a one-component Docker Hub name
    /// (`nginx@sha256:...`). Nublado's reference parser needs a registry and a
    /// repository, so it ignores the entry and calls the image missing; the
    /// exporter reads `nginx` as `docker.io/library/nginx`, as the runtime does.
    OneComponentDockerHubName,
}

/// One (node, image) pair on which the two views differ, on purpose.
struct ImageDifference {
    scenario: &'static str,
    node: &'static str,
    /// Nublado's `reference` of the image.
    reference: &'static str,
    /// What Nublado says: is the image on the node?
    nublado_says_present: bool,
    why: Why,
}

const IMAGE_DIFFERENCES: &[ImageDifference] = &[
    // kind imports its control-plane images as `docker.io/library/import-<date>@<digest>`
    // plus the tag `registry.k8s.io/kube-apiserver:v1.26.3`: the digest is on the
    // node, but not under registry.k8s.io/kube-apiserver.
    ImageDifference {
        scenario: "real-kind-import-digest",
        node: "kind-control-plane",
        reference: "registry.k8s.io/kube-apiserver:v1.26.3",
        nublado_says_present: true,
        why: Why::DigestUnderAnotherRepository,
    },
    ImageDifference {
        scenario: "real-kind-import-digest",
        node: "kind-worker",
        reference: "registry.k8s.io/kube-apiserver:v1.26.3",
        nublado_says_present: true,
        why: Why::DigestUnderAnotherRepository,
    },
    // minikube lists the image pulled by digest as `nginx@sha256:f798...` only.
    ImageDifference {
        scenario: "real-kubescape-nginx",
        node: "danielg-minikube",
        reference: "docker.io/library/nginx:1.21.6",
        nublado_says_present: false,
        why: Why::OneComponentDockerHubName,
    },
];

/// A node whose eligibility differs on purpose. The only kind documented is a node
/// cordoned (`spec.unschedulable`) without the `node.kubernetes.io/unschedulable`
/// taint: Nublado looks at taints only and calls it eligible; no new pod can be
/// scheduled there, so the exporter does not. None of the scenarios has such a node.
struct EligibilityDifference {
    scenario: &'static str,
    node: &'static str,
}

const ELIGIBILITY_DIFFERENCES: &[EligibilityDifference] = &[];

/// `../shared/data/nublado/scenarios` from the repository root, or under
/// `$IMAGECAP_SHARED_DATA`.
fn scenarios_dir() -> PathBuf {
    let shared = match std::env::var_os("IMAGECAP_SHARED_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
    };
    shared.join("nublado/scenarios")
}

/// Every scenario directory by name, or None (after saying so) when there are none
/// to read.
fn scenarios() -> Option<Vec<(String, PathBuf)>> {
    let dir = scenarios_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "skipping: Nublado scenarios not found at {} (set IMAGECAP_SHARED_DATA to the \
             shared data directory to run these tests)",
            dir.display()
        );
        return None;
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("status.json").is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no scenario in {}", dir.display());
    Some(out)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `check ... --format json`: the parsed report. Exit 0 or 1 (never 2, bad input).
fn check_json(scenario: &str, args: &[(&str, &Path)]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagecap-exporter"));
    cmd.arg("check");
    for (flag, path) in args {
        cmd.arg(flag).arg(path);
    }
    let out = cmd
        .args(["--format", "json"])
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{scenario}: check exited {:?}:\n{stderr}",
        out.status.code()
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{scenario}: check's JSON: {e}\n{stderr}"))
}

/// A configuration without images of its own: Nublado alone says what is wanted.
fn empty_config() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "prepull: {}\n").unwrap();
    file
}

/// Nublado's images (prepulled, then pending).
fn nublado_images(status: &Value) -> Vec<&Value> {
    ["prepulled", "pending"]
        .iter()
        .flat_map(|k| status["images"][*k].as_array().unwrap())
        .collect()
}

/// The name the exporter gives a Nublado image: its reference with Docker Hub's
/// short forms spelled out, then `@digest` when Nublado knows the digest.
fn wanted_name(image: &Value) -> String {
    let reference = image["reference"].as_str().unwrap();
    let first = reference.split('/').next().unwrap();
    let has_registry = reference.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut name = match (has_registry, reference.contains('/')) {
        (true, _) => reference.to_string(),
        (false, true) => format!("docker.io/{reference}"),
        (false, false) => format!("docker.io/library/{reference}"),
    };
    if let Some(digest) = image["digest"].as_str()
        && !name.contains('@')
    {
        name = format!("{name}@{digest}");
    }
    name
}

fn by_name<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name || n["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the list"))
}

#[test]
fn every_body_is_accepted_and_every_image_is_wanted() {
    let Some(scenarios) = scenarios() else { return };
    let config = empty_config();
    for (scenario, dir) in &scenarios {
        let status = read_json(&dir.join("status.json"));
        let report = check_json(
            scenario,
            &[
                ("--config", config.path()),
                ("--nodes-file", &dir.join("nodes.json")),
                ("--nublado-file", &dir.join("status.json")),
            ],
        );
        let wanted: BTreeSet<&str> = report["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["image"].as_str().unwrap())
            .collect();
        let images = nublado_images(&status);
        assert!(!images.is_empty(), "{scenario}: Nublado lists no image");
        for image in images {
            let name = wanted_name(image);
            assert!(
                wanted.contains(name.as_str()),
                "{scenario}: Nublado's {name} is not wanted; wanted: {wanted:#?}"
            );
        }
        let source = &report["sources"][0];
        assert_eq!(source["source"], "nublado", "{scenario}");
        assert_eq!(source["up"], true, "{scenario}");
        assert!(
            source.get("droppedImages").is_none_or(|d| d == 0),
            "{scenario}: {source}"
        );
    }
}

#[test]
fn eligibility_matches_nublados_except_where_documented() {
    let Some(scenarios) = scenarios() else { return };
    let mut seen = BTreeSet::new();
    for (scenario, dir) in &scenarios {
        let verdicts = read_json(&dir.join("nublado-eligibility.json"));
        let nodes = read_json(&dir.join("nodes.json"));
        // No Nublado source and nothing wanted: `eligible` is the configuration's rule.
        let report = check_json(
            scenario,
            &[
                ("--config", &dir.join("exporter-config.yaml")),
                ("--nodes-file", &dir.join("nodes.json")),
            ],
        );
        let verdicts = verdicts.as_object().unwrap();
        assert_eq!(
            verdicts.len(),
            report["nodes"].as_array().unwrap().len(),
            "{scenario}: one verdict per node"
        );
        for (node, verdict) in verdicts {
            let nublado = verdict["selected"] == true && verdict["tolerated"] == true;
            let ours = by_name(&report["nodes"], node)["eligible"] == true;
            if nublado == ours {
                continue;
            }
            let documented = ELIGIBILITY_DIFFERENCES
                .iter()
                .any(|d| d.scenario == scenario && d.node == node);
            assert!(
                documented,
                "{scenario}/{node}: Nublado says eligible={nublado} ({}), the exporter \
                 {ours} ({}), and this difference is not documented",
                verdict["comment"],
                by_name(&report["nodes"], node)["notEligibleReason"]
            );
            // The one documented kind: cordoned without the unschedulable taint.
            let spec = &by_name(&nodes["items"], node)["spec"];
            assert_eq!(spec["unschedulable"], true, "{scenario}/{node}");
            assert!(
                !spec["taints"].as_array().is_some_and(|t| t
                    .iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unschedulable")),
                "{scenario}/{node}"
            );
            assert!(nublado && !ours, "{scenario}/{node}");
            seen.insert((scenario.clone(), node.clone()));
        }
    }
    for d in ELIGIBILITY_DIFFERENCES {
        assert!(
            seen.contains(&(d.scenario.to_string(), d.node.to_string())),
            "{}/{}: listed as a difference, but both agree",
            d.scenario,
            d.node
        );
    }
}

/// Does the node's `status.images` show the kind of difference `why` names for this
/// image?
fn data_shows(why: Why, node: &Value, image: &Value) -> bool {
    let digest = image["digest"].as_str().unwrap();
    let reference = image["reference"].as_str().unwrap();
    let repository = reference.rsplit_once(':').unwrap().0;
    let names: Vec<&str> = node["status"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["names"].as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    let with_digest: Vec<&&str> = names
        .iter()
        .filter(|n| n.ends_with(&format!("@{digest}")))
        .collect();
    match why {
        Why::DigestUnderAnotherRepository => {
            !with_digest.is_empty()
                && with_digest
                    .iter()
                    .all(|n| !n.starts_with(&format!("{repository}@")))
        }
        Why::OneComponentDockerHubName => {
            !with_digest.is_empty() && with_digest.iter().all(|n| !n.contains('/'))
        }
    }
}

#[test]
fn images_on_each_node_match_nublados_except_where_documented() {
    let Some(scenarios) = scenarios() else { return };
    let config = empty_config();
    let mut seen = BTreeSet::new();
    let mut compared = 0;
    for (scenario, dir) in &scenarios {
        let status = read_json(&dir.join("status.json"));
        let nodes = read_json(&dir.join("nodes.json"));
        let report = check_json(
            scenario,
            &[
                ("--config", config.path()),
                ("--nodes-file", &dir.join("nodes.json")),
                ("--nublado-file", &dir.join("status.json")),
            ],
        );
        // The nodes Nublado calls eligible are the ones the exporter checks.
        let nublado_eligible: BTreeSet<&str> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["eligible"] == true)
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        let our_eligible: BTreeSet<&str> = report["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["eligible"] == true)
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        assert_eq!(nublado_eligible, our_eligible, "{scenario}");
        for node in &our_eligible {
            let missing: BTreeMap<&str, &str> = by_name(&report["nodes"], node)["missing"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| (m["image"].as_str().unwrap(), m["state"].as_str().unwrap()))
                .collect();
            for image in nublado_images(&status) {
                compared += 1;
                let reference = image["reference"].as_str().unwrap();
                let nublado_present = image["nodes"].as_array().unwrap().iter().any(|n| n == node);
                let name = wanted_name(image);
                let ours_present = !missing.contains_key(name.as_str());
                if nublado_present == ours_present {
                    continue;
                }
                let documented = IMAGE_DIFFERENCES.iter().find(|d| {
                    d.scenario == scenario && d.node == *node && d.reference == reference
                });
                let Some(documented) = documented else {
                    panic!(
                        "{scenario}/{node}: {name}: Nublado says present={nublado_present}, \
                         the exporter {ours_present} ({:?}); not a documented difference",
                        missing.get(name.as_str())
                    )
                };
                assert_eq!(
                    documented.nublado_says_present, nublado_present,
                    "{scenario}/{node}: {reference}"
                );
                assert!(
                    data_shows(documented.why, by_name(&nodes["items"], node), image),
                    "{scenario}/{node}: {reference}: the node's images do not show {:?}",
                    documented.why
                );
                seen.insert((scenario.clone(), node.to_string(), reference.to_string()));
            }
        }
    }
    assert!(compared > 0);
    for d in IMAGE_DIFFERENCES {
        assert!(
            seen.contains(&(
                d.scenario.to_string(),
                d.node.to_string(),
                d.reference.to_string()
            )),
            "{}/{}: {}: listed as a difference ({:?}), but both agree",
            d.scenario,
            d.node,
            d.reference,
            d.why
        );
    }
}
