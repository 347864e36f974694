use super::*;
use crate::analysis::Relevance;
use crate::analysis::eligibility::Eligibility;
use crate::analysis::kubelet_settings::{ImageFs, KubeletSettings};
use crate::analysis::node::{NodeView, summarize};
use crate::analysis::reference::ImageRef;
use crate::analysis::runtime::RuntimeSummary;
use crate::analysis::wanted::tests::wanted;
use serde_json::json;
use std::sync::Arc;

const LAB: &str = "ghcr.io/x/lab";

fn d(seed: u8) -> String {
    format!("sha256:{}", format!("{seed:02x}").repeat(32))
}

fn summary(
    name: &str,
    labels: serde_json::Value,
    images: Vec<Vec<String>>,
    w: &Wanted,
) -> NodeSummary {
    let images: Vec<_> = images
        .into_iter()
        .map(|names| json!({"names": names, "sizeBytes": 1000}))
        .collect();
    let v: NodeView = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"images": images, "capacity": {"ephemeral-storage": "1T"}}
    }))
    .unwrap();
    summarize(&v, &Relevance::new(w, [])).unwrap()
}

fn none() -> BTreeMap<WantSource, SourceState> {
    BTreeMap::new()
}

fn assume(default_max_images: i64) -> Assumptions {
    Assumptions {
        default_max_images,
        agents: false,
        configured_at: None,
    }
}

/// [`assume`], with node agents expected.
fn with_agents(default_max_images: i64) -> Assumptions {
    Assumptions {
        agents: true,
        ..assume(default_max_images)
    }
}

fn filler(n: usize) -> Vec<Vec<String>> {
    (0..n)
        .map(|i| vec![format!("docker.io/library/app{i}:1")])
        .collect()
}

#[test]
fn cap_rules() {
    assert_eq!(cap_in_force(50, None, 50), (50, CapSource::Default));
    assert_eq!(cap_in_force(49, None, 50), (50, CapSource::Default));
    assert_eq!(cap_in_force(51, None, 50), (-1, CapSource::Inferred));
    assert_eq!(cap_in_force(500, None, -1), (-1, CapSource::Default));
    assert_eq!(cap_in_force(100, Some(100), 50), (100, CapSource::Kubelet));
    assert_eq!(cap_in_force(30, Some(-1), 50), (-1, CapSource::Kubelet));
    assert_eq!(recommended_max_images(1_000_000_000_000), 334);
    assert_eq!(recommended_max_images(3_000_000_000), 1);
    assert_eq!(recommended_max_images(3_000_000_001), 2);
    assert_eq!(recommended_max_images(0), 0);
}

#[test]
fn at_cap_near_and_unlimited_nodes() {
    let w = wanted(&[], &[], &[]);
    let s = [
        summary("full", json!({}), filler(50), &w),
        summary("near", json!({}), filler(49), &w),
        summary("big", json!({}), filler(120), &w),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
    let full = by("full");
    assert!(full.cap.at_cap);
    assert_eq!(full.status(), NodeStatus::AtCap);
    assert_eq!(by("near").status(), NodeStatus::NearCap);
    assert_eq!(
        by("big").status(),
        NodeStatus::Ok,
        "unlimited is never near"
    );
    assert_eq!((full.cap.max_images, full.cap.cap_ratio), (50, 1.0));
    let near = by("near");
    assert!(!near.cap.at_cap);
    assert_eq!(near.cap.cap_ratio, 0.98);
    let big = by("big");
    assert!(!big.cap.at_cap);
    assert_eq!((big.cap.max_images, big.cap.cap_ratio), (-1, 0.0));
    assert_eq!(big.cap.max_images_source, CapSource::Inferred);
    assert_eq!(full.storage.recommended_max_images, Some(334));
    assert_eq!(full.cap.image_size_bytes, 50_000);
    assert!(r.has_findings());
    assert_eq!(
        r.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["big", "full", "near"]
    );
}

#[test]
fn missing_is_absent_under_the_cap_and_unverifiable_at_it() {
    let w = wanted(&["busybox:1.36"], &[], &[("pool", "lab")]);
    let lab = json!({"pool": "lab"});
    let s = [
        summary("under", lab.clone(), filler(10), &w),
        summary("full", lab.clone(), filler(50), &w),
        summary(
            "has",
            lab.clone(),
            vec![vec!["docker.io/library/busybox:1.36".into()]],
            &w,
        ),
        summary("other-pool", json!({"pool": "gpu"}), filler(3), &w),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
    assert_eq!(
        by("under").prepull.missing_images,
        ["docker.io/library/busybox:1.36"]
    );
    assert_eq!(
        by("under").prepull.missing_state,
        Some(MissingState::Absent)
    );
    assert_eq!(
        by("full").prepull.missing_state,
        Some(MissingState::Unverifiable)
    );
    assert!(
        by("has").prepull.missing_images.is_empty() && by("has").prepull.missing_state.is_none()
    );
    assert!(
        by("other-pool").prepull.missing_images.is_empty(),
        "not eligible, nothing wanted"
    );
    assert_eq!(r.eligible_nodes, 3);
    assert_eq!(
        r.images,
        [ImageReport {
            image: "docker.io/library/busybox:1.36".into(),
            sources: vec![WantSource::Config],
            nodes: 1,
            eligible_nodes: 3
        }]
    );
}

#[test]
fn patterns_discover_images_on_eligible_nodes_only() {
    let w = wanted(&[], &["^ghcr\\.io/x/lab:w_"], &[("pool", "lab")]);
    let lab = json!({"pool": "lab"});
    let s = [
        summary("a", lab.clone(), vec![vec![format!("{LAB}:w_1")]], &w),
        summary(
            "b",
            lab.clone(),
            vec![vec![format!("{LAB}:w_2")], vec![format!("{LAB}:r_1")]],
            &w,
        ),
        summary(
            "gpu",
            json!({"pool": "gpu"}),
            vec![vec![format!("{LAB}:w_3")]],
            &w,
        ),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let images: Vec<_> = r
        .images
        .iter()
        .map(|i| (i.image.as_str(), i.nodes))
        .collect();
    assert_eq!(images, [("ghcr.io/x/lab:w_1", 1), ("ghcr.io/x/lab:w_2", 1)]);
    assert_eq!(r.nodes[0].prepull.missing_images, ["ghcr.io/x/lab:w_2"]);
    assert_eq!(r.nodes[1].prepull.missing_images, ["ghcr.io/x/lab:w_1"]);
}

#[test]
fn the_configuration_was_last_read_when_it_was_read() {
    let w = wanted(&["busybox:1.36"], &["^ghcr\\.io/x/lab:w_"], &[]);
    let s = [summary("a", json!({}), filler(1), &w)];
    let read_at = Assumptions {
        configured_at: Some(1_700_000_000.0),
        ..assume(50)
    };
    let r = analyze(&s, &w, &none(), read_at, &NodeExtras::new());
    let last: Vec<(WantSource, Option<f64>)> = r
        .sources
        .iter()
        .map(|s| (s.source, s.last_success_seconds))
        .collect();
    assert_eq!(
        last,
        [
            (WantSource::Config, Some(1_700_000_000.0)),
            (WantSource::Pattern, Some(1_700_000_000.0)),
        ]
    );
}

#[test]
fn an_entry_cut_to_five_digests_matches_by_digest() {
    let w = wanted(&[&format!("{LAB}:w_1")], &[], &[]);
    let full_entry = vec![format!("{LAB}@{}", d(1)), format!("{LAB}:w_1")];
    // The kubelet keeps 5 names, digests first: here the tag was cut.
    let cut_entry: Vec<String> = (1..=5).map(|i| format!("{LAB}@{}", d(i))).collect();
    let s = [
        summary("tagged", json!({}), vec![full_entry], &w),
        summary("cut", json!({}), vec![cut_entry], &w),
        summary(
            "other-digest",
            json!({}),
            vec![vec![format!("{LAB}@{}", d(9))]],
            &w,
        ),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
    assert!(by("tagged").prepull.missing_images.is_empty());
    assert!(
        by("cut").prepull.missing_images.is_empty(),
        "found through the shared digest"
    );
    assert_eq!(
        by("other-digest").prepull.missing_images,
        [format!("{LAB}:w_1")]
    );
    assert_eq!(r.images[0].nodes, 2);
}

#[test]
fn digest_references_match_by_digest_only() {
    let both = format!("{LAB}:w_1@{}", d(1));
    let w = wanted(&[&both], &[], &[]);
    let s = [
        summary(
            "digest",
            json!({}),
            vec![vec![format!("{LAB}@{}", d(1))]],
            &w,
        ),
        summary("tag-only", json!({}), vec![vec![format!("{LAB}:w_1")]], &w),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    assert!(r.nodes[0].prepull.missing_images.is_empty());
    assert_eq!(r.nodes[1].prepull.missing_images, [both]);
}

#[test]
fn a_known_kubelet_cap_wins_over_the_default_and_the_inference() {
    let w = wanted(&[], &[], &[]);
    let s = [
        summary("raised", json!({}), filler(100), &w),
        summary("lowered", json!({}), filler(20), &w),
    ];
    let settings = |cap| NodeExtra {
        kubelet: Some(KubeletSettings {
            max_images: cap,
            image_gc_high_ratio: Some(0.85),
            image_gc_low_ratio: Some(0.8),
        }),
        ..NodeExtra::default()
    };
    let extras = NodeExtras::from([
        ("raised".to_string(), settings(100)),
        ("lowered".to_string(), settings(20)),
    ]);
    let r = analyze(&s, &w, &none(), assume(50), &extras);
    assert_eq!(r.nodes[0].kubelet.image_gc_high_threshold_ratio, Some(0.85));
    assert_eq!(r.nodes[0].kubelet.image_gc_low_threshold_ratio, Some(0.8));
    let lowered = &r.nodes[0];
    assert_eq!(
        (
            lowered.cap.max_images,
            lowered.cap.at_cap,
            lowered.cap.max_images_source
        ),
        (20, true, CapSource::Kubelet)
    );
    let raised = &r.nodes[1];
    assert_eq!(
        (
            raised.cap.max_images,
            raised.cap.at_cap,
            raised.cap.cap_ratio
        ),
        (100, true, 1.0)
    );
}

#[test]
fn cordoned_nodes_are_not_counted() {
    let w = wanted(&["busybox:1"], &[], &[]);
    let mut s = summary("cordoned", json!({}), filler(1), &w);
    s.unschedulable = true;
    let r = analyze([&s], &w, &none(), assume(50), &NodeExtras::new());
    assert_eq!(r.eligible_nodes, 0);
    assert!(r.nodes[0].prepull.missing_images.is_empty());
    assert!(!r.has_findings());
    assert_eq!(r.nodes[0].status(), NodeStatus::NotEligible);
}

#[test]
fn a_zero_cap_makes_everything_unverifiable() {
    let w = wanted(&["busybox:1"], &[], &[]);
    let s = summary("zero", json!({}), vec![], &w);
    let r = analyze([&s], &w, &none(), assume(0), &NodeExtras::new());
    assert_eq!(r.nodes[0].cap.max_images, 0);
    assert!(!r.nodes[0].cap.at_cap);
    assert_eq!(
        r.nodes[0].prepull.missing_state,
        Some(MissingState::Unverifiable)
    );
}

fn runtime(w: &Wanted, count: u32, tagged: &[&str]) -> Arc<RuntimeSummary> {
    use crate::analysis::runtime::{AgentReport, RuntimeImage, summarize};
    let mut images: Vec<RuntimeImage> = tagged
        .iter()
        .map(|t| RuntimeImage {
            id: format!("sha256:{t}"),
            repo_tags: vec![t.to_string()],
            repo_digests: vec![],
            size: 1,
        })
        .collect();
    images.resize_with(count as usize, || RuntimeImage {
        id: "sha256:other".into(),
        repo_tags: vec!["docker.io/library/other:1".into()],
        repo_digests: vec![],
        size: 1,
    });
    let report = AgentReport {
        node: "n".into(),
        collected_at: "t".into(),
        images,
        image_fs_used_bytes: Some(99),
        prune: None,
    };
    Arc::new(summarize(&report, &Relevance::new(w, [])).0)
}

#[test]
fn an_agent_report_tells_hidden_from_absent_at_the_cap() {
    let hidden = format!("{LAB}:w_1");
    let absent = format!("{LAB}:w_2");
    let w = wanted(&[&hidden, &absent], &[], &[]);
    let s = [
        summary("full-agent", json!({}), filler(50), &w),
        summary("full-blind", json!({}), filler(50), &w),
        summary("roomy-agent", json!({}), filler(10), &w),
    ];
    let extras = NodeExtras::from([
        (
            "full-agent".to_string(),
            NodeExtra {
                runtime: Some(runtime(&w, 60, &[&hidden])),
                image_fs: Some(ImageFs {
                    used_bytes: Some(5),
                    capacity_bytes: Some(10),
                    available_bytes: None,
                }),
                ..NodeExtra::default()
            },
        ),
        (
            "roomy-agent".to_string(),
            NodeExtra {
                runtime: Some(runtime(&w, 10, &[])),
                ..NodeExtra::default()
            },
        ),
    ]);
    let r = analyze(&s, &w, &none(), with_agents(50), &extras);
    let by = |n: &str| r.nodes.iter().find(|x| x.name == n).unwrap().clone();
    let states = |n: &NodeReport| -> Vec<(String, MissingState)> {
        n.prepull
            .missing
            .iter()
            .map(|m| (m.image.to_string(), m.state))
            .collect()
    };

    let full = by("full-agent");
    assert_eq!(
        states(&full),
        [
            (hidden.clone(), MissingState::Hidden),
            (absent.clone(), MissingState::Absent)
        ]
    );
    assert_eq!(
        full.prepull.missing_state,
        Some(MissingState::Absent),
        "absent first"
    );
    assert_eq!(
        full.prepull.missing_images,
        [hidden.clone(), absent.clone()]
    );
    assert_eq!(
        (
            full.runtime.runtime_images,
            full.runtime.hidden_images,
            full.runtime.agent_up
        ),
        (Some(60), Some(10), Some(true))
    );
    assert_eq!(full.runtime.runtime_image_bytes, Some(60));
    assert_eq!(
        (
            full.kubelet.image_fs_used_bytes,
            full.kubelet.image_fs_capacity_bytes
        ),
        (Some(5), Some(10))
    );

    let blind = by("full-blind");
    assert!(
        states(&blind)
            .iter()
            .all(|(_, s)| *s == MissingState::Unverifiable)
    );
    assert_eq!(
        (blind.runtime.hidden_images, blind.runtime.agent_up),
        (None, Some(false))
    );

    let roomy = by("roomy-agent");
    assert_eq!(
        roomy.runtime.hidden_images,
        Some(0),
        "nothing is hidden under the cap"
    );
    assert!(
        states(&roomy)
            .iter()
            .all(|(_, s)| *s == MissingState::Absent)
    );

    // Only hidden images missing: the node's state is hidden.
    let w1 = wanted(&[&hidden], &[], &[]);
    let r = analyze(&s[..1], &w1, &none(), with_agents(50), &extras);
    assert_eq!(r.nodes[0].prepull.missing_state, Some(MissingState::Hidden));
    // Without agents configured, nothing says so.
    let r = analyze(&s[1..2], &w1, &none(), self::assume(50), &NodeExtras::new());
    assert_eq!(r.nodes[0].runtime.agent_up, None);
}

/// A node of `runtime` reporting `entries` (names, sizeBytes).
fn sized(name: &str, runtime: &str, entries: &[(Vec<String>, i64)], w: &Wanted) -> NodeSummary {
    let (version, arch) = runtime.split_once(' ').unwrap();
    let images: Vec<_> = entries
        .iter()
        .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
        .collect();
    let v: NodeView = serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {"images": images,
                   "nodeInfo": {"containerRuntimeVersion": version, "architecture": arch}}
    }))
    .unwrap();
    summarize(&v, &Relevance::new(w, [])).unwrap()
}

/// `n` filler entries of `size` bytes each.
fn sized_filler(n: usize, size: i64) -> Vec<(Vec<String>, i64)> {
    filler(n).into_iter().map(|names| (names, size)).collect()
}

const CONTAINERD: &str = "containerd://1.7.2 amd64";

#[test]
fn the_size_order_proves_absent_and_unlistable_at_the_cap() {
    let [big, small, tie, unknown] = [1, 2, 3, 4].map(|i| format!("{LAB}@{}", d(i)));
    let w = wanted(&[&big, &small, &tie, &unknown], &[], &[]);
    // A node under its cap that holds three of them tells their sizes.
    let mut reference = sized_filler(5, 100);
    reference.push((vec![big.clone()], 5_000));
    reference.push((vec![small.clone()], 500));
    reference.push((vec![tie.clone()], 1_000));
    let s = [
        sized("reference", CONTAINERD, &reference, &w),
        sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
        sized(
            "full-crio",
            "cri-o://1.28.1 amd64",
            &sized_filler(50, 1_000),
            &w,
        ),
        sized(
            "full-arm",
            "containerd://1.7.2 arm64",
            &sized_filler(50, 1_000),
            &w,
        ),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let states = |n: &str| -> Vec<MissingState> {
        let node = r.nodes.iter().find(|x| x.name == n).unwrap();
        node.prepull.missing.iter().map(|m| m.state).collect()
    };
    assert_eq!(
        states("full"),
        [
            MissingState::Absent,       // 5,000 > 1,000: it would be listed
            MissingState::Unlistable,   // 500 < 1,000: it never can be
            MissingState::Unverifiable, // a tie proves nothing
            MissingState::Unverifiable, // no size known
        ]
    );
    let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
    assert_eq!(full.prepull.missing_state, Some(MissingState::Absent));
    // Sizes from another runtime or architecture prove nothing.
    for other in ["full-crio", "full-arm"] {
        assert!(
            states(other)
                .iter()
                .all(|s| *s == MissingState::Unverifiable),
            "{other}: {:?}",
            states(other)
        );
    }
    // Under its cap the node's list is complete: the one it lacks is absent.
    assert_eq!(states("reference"), [MissingState::Absent]);
}

#[test]
fn sizes_that_disagree_or_an_unplaceable_cut_prove_nothing() {
    let image = format!("{LAB}:w_1");
    let w = wanted(&[&image], &[], &[]);
    let s = [
        // The tag moved: two nodes hold images of different sizes under it.
        sized("a", CONTAINERD, &[(vec![image.clone()], 500)], &w),
        sized("b", CONTAINERD, &[(vec![image.clone()], 700)], &w),
        sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
    ];
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
    assert_eq!(full.prepull.missing_state, Some(MissingState::Unverifiable));

    // One entry without a size: where the kubelet cut the list is unknown.
    let mut entries = sized_filler(49, 1_000);
    entries.push((vec!["docker.io/library/odd:1".into()], -1));
    let s = [
        sized("a", CONTAINERD, &[(vec![image.clone()], 500)], &w),
        sized("full", CONTAINERD, &entries, &w),
    ];
    assert_eq!(s[1].smallest_image_bytes, None);
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
    assert_eq!(full.prepull.missing_state, Some(MissingState::Unverifiable));
}

#[test]
fn an_agent_report_turns_unlistable_into_hidden_only_when_the_runtime_holds_it() {
    let small = format!("{LAB}:w_1");
    let small_too = format!("{LAB}:w_2");
    let w = wanted(&[&small, &small_too], &[], &[]);
    let s = [
        sized(
            "reference",
            CONTAINERD,
            &[(vec![small.clone()], 500), (vec![small_too.clone()], 400)],
            &w,
        ),
        sized("full", CONTAINERD, &sized_filler(50, 1_000), &w),
    ];
    let extras = NodeExtras::from([(
        "full".to_string(),
        NodeExtra {
            runtime: Some(runtime(&w, 60, &[&small])),
            ..NodeExtra::default()
        },
    )]);
    let r = analyze(&s, &w, &none(), with_agents(50), &extras);
    let full = r.nodes.iter().find(|x| x.name == "full").unwrap();
    let states: Vec<_> = full.prepull.missing.iter().map(|m| m.state).collect();
    assert_eq!(states, [MissingState::Hidden, MissingState::Unlistable]);
    assert_eq!(full.prepull.missing_state, Some(MissingState::Unlistable));
}

#[test]
fn an_odd_digest_is_found_by_its_string_or_its_tag_as_nublado_finds_it() {
    use crate::analysis::wanted::WantGroup;
    let odd = ImageRef::parse(&format!("{LAB}:d_1@sha256:1234")).unwrap();
    let w = wanted(&[], &[], &[]);
    let group = WantGroup {
        source: WantSource::Nublado,
        images: vec![odd.clone()],
        eligibility: w.eligibility().clone(),
    };
    let relevance = Relevance::new(&w, [&group]);
    let sources = BTreeMap::from([(
        WantSource::Nublado,
        SourceState {
            groups: vec![group],
            up: true,
            last_success_seconds: None,
            dropped_images: 0,
            menu: None,
        },
    )]);
    let node = |name: &str, names: &[&str]| {
        let v: NodeView = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"images": [{"names": names, "sizeBytes": 1}]}
        }))
        .unwrap();
        summarize(&v, &relevance).unwrap()
    };
    let s = [
        node("by-string", &[&format!("{LAB}@sha256:1234")]),
        node("by-tag", &[&format!("{LAB}:d_1")]),
        node("neither", &[&format!("{LAB}:d_2")]),
    ];
    let r = analyze(&s, &w, &sources, assume(50), &NodeExtras::new());
    let lacking: Vec<&str> = r
        .nodes
        .iter()
        .filter(|n| !n.prepull.missing.is_empty())
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(lacking, ["neither"]);
    assert_eq!(r.images[0].nodes, 2);
    assert!(s.iter().all(|n| n.problems.is_empty()), "no invalid name");
}

/// Nublado wanting `images` (all eligible nodes: `nodes`), with its menu.
fn nublado(
    images: &[(&str, bool, Option<u64>, &[&str])],
    nodes: &[&str],
) -> BTreeMap<WantSource, SourceState> {
    use crate::analysis::menu::{Menu, MenuImage};
    use crate::analysis::wanted::WantGroup;
    let refs: Vec<ImageRef> = images
        .iter()
        .map(|(r, ..)| ImageRef::parse(r).unwrap())
        .collect();
    let named = nodes.iter().map(|n| (n.to_string(), Ok(()))).collect();
    let menu = Menu {
        images: images
            .iter()
            .zip(&refs)
            .map(|((_, prepulled, size, missing), r)| MenuImage {
                image: r.clone(),
                name: Some(format!("Lab {}", r.tag.as_deref().unwrap_or("?"))),
                prepulled: *prepulled,
                size: *size,
                missing: Some(missing.iter().map(|n| Arc::from(*n)).collect()),
            })
            .collect(),
    };
    BTreeMap::from([(
        WantSource::Nublado,
        SourceState {
            groups: vec![WantGroup {
                source: WantSource::Nublado,
                images: refs,
                eligibility: Arc::new(Eligibility::Named(Arc::new(named))),
            }],
            up: true,
            last_success_seconds: None,
            dropped_images: 0,
            menu: Some(Arc::new(menu)),
        },
    )])
}

#[test]
fn the_menu_and_the_prepull_loop_from_sizes_alone() {
    let shown = format!("{LAB}:w_1");
    let small = format!("{LAB}:w_2");
    let big = format!("{LAB}:w_3");
    let only_nublado_knows = format!("{LAB}:w_4");
    let sources = nublado(
        &[
            (&shown, true, Some(900), &[]),
            (&small, false, Some(1), &["full"]),
            (&big, false, Some(9_000), &["full"]),
            (&only_nublado_knows, false, Some(10), &["full"]),
        ],
        &["full", "roomy"],
    );
    // The configuration wants the small image too: its pair counts for both.
    let w = wanted(&[&small], &[], &[]);
    let group_relevance: Vec<_> = sources.values().flat_map(|s| &s.groups).collect();
    let relevance = Relevance::new(&w, group_relevance);
    let node = |name: &str, entries: Vec<(Vec<String>, i64)>| {
        let images: Vec<_> = entries
            .iter()
            .map(|(names, size)| json!({"names": names, "sizeBytes": size}))
            .collect();
        let v: NodeView = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"images": images, "nodeInfo":
                {"containerRuntimeVersion": "containerd://1.7.2", "architecture": "amd64"}}
        }))
        .unwrap();
        summarize(&v, &relevance).unwrap()
    };
    let mut full = sized_filler(49, 1_000);
    full.push((vec![shown.clone()], 1_500));
    let s = [
        node("full", full),
        node(
            "roomy",
            vec![
                (vec![shown.clone()], 1_500),
                (vec![small.clone()], 400),
                (vec![big.clone()], 5_000),
                (vec![only_nublado_knows.clone()], 5_000),
            ],
        ),
    ];
    // Another runtime's sizes would not count; here roomy shares full's.
    let r = analyze(&s, &w, &sources, assume(50), &NodeExtras::new());
    let full = r.nodes.iter().find(|n| n.name == "full").unwrap();
    let states: Vec<(&str, MissingState)> = full
        .prepull
        .missing
        .iter()
        .map(|m| (m.image.as_str(), m.state))
        .collect();
    assert_eq!(
        states,
        [
            (small.as_str(), MissingState::Unlistable),
            (big.as_str(), MissingState::Absent),
            (only_nublado_knows.as_str(), MissingState::Absent),
        ],
        "sizes from the node of the same runtime, not Nublado's"
    );
    let pairs: Vec<(WantSource, u32)> =
        r.sources.iter().map(|s| (s.source, s.loop_pairs)).collect();
    assert_eq!(pairs, [(WantSource::Config, 1), (WantSource::Nublado, 1)]);
    let menu = r.menu.as_ref().expect("a Nublado source with a menu");
    assert_eq!(
        (
            menu.shown,
            menu.hidden_by_cap,
            menu.maybe_hidden_by_cap,
            menu.pulling
        ),
        (1, 1, 0, 2)
    );
    assert_eq!(menu.hidden[0].name, "Lab w_2");
    assert_eq!(menu.hidden[0].nodes, ["full"]);

    // Without nodeInfo, Nublado's size stands in.
    let bare: Vec<NodeSummary> = s
        .iter()
        .map(|n| NodeSummary {
            runtime: None,
            ..n.clone()
        })
        .collect();
    let r = analyze(&bare, &w, &sources, assume(50), &NodeExtras::new());
    let full = r.nodes.iter().find(|n| n.name == "full").unwrap();
    let states: Vec<MissingState> = full.prepull.missing.iter().map(|m| m.state).collect();
    assert_eq!(
        states,
        [
            MissingState::Unlistable,
            MissingState::Absent,
            MissingState::Unlistable
        ]
    );
    // No Nublado source: no menu.
    let r = analyze(&s, &w, &none(), assume(50), &NodeExtras::new());
    assert!(r.menu.is_none());
    assert!(!serde_json::to_string(&r).unwrap().contains("\"menu\""));
}

#[test]
fn the_state_ladder() {
    use MissingState::*;
    for (saturated, held, size, smallest, want) in [
        (false, None, Some(1), Some(9), Absent),
        (false, Some(true), None, None, Absent),
        (true, None, Some(10), Some(5), Absent),
        (true, None, Some(1), Some(5), Unlistable),
        (true, None, Some(5), Some(5), Unverifiable),
        (true, None, None, Some(5), Unverifiable),
        (true, None, Some(5), None, Unverifiable),
        (true, Some(true), Some(1), Some(5), Hidden),
        (true, Some(true), Some(10), Some(5), Hidden),
        (true, Some(false), Some(1), Some(5), Unlistable),
        (true, Some(false), Some(10), Some(5), Absent),
        (true, Some(false), None, Some(5), Absent),
    ] {
        assert_eq!(
            MissingState::decide(saturated, held, size, smallest),
            want,
            "{saturated} {held:?} {size:?} {smallest:?}"
        );
    }
}

proptest::proptest! {
    /// Under the cap nothing but `absent`; at it, a size on either side of the
    /// cut decides unless the runtime holds the image.
    #[test]
    fn the_size_rule_holds_for_any_sizes(
        saturated: bool,
        held in proptest::option::of(proptest::bool::ANY),
        size in proptest::option::of(0u64..2_000),
        smallest in proptest::option::of(0u64..2_000),
    ) {
        let state = MissingState::decide(saturated, held, size, smallest);
        if !saturated {
            proptest::prop_assert_eq!(state, MissingState::Absent);
        } else if held == Some(true) {
            proptest::prop_assert_eq!(state, MissingState::Hidden);
        } else if let (Some(s), Some(m)) = (size, smallest) {
            if s > m {
                proptest::prop_assert_eq!(state, MissingState::Absent);
            } else if s < m {
                proptest::prop_assert_eq!(state, MissingState::Unlistable);
            }
        }
        if state == MissingState::Unverifiable {
            proptest::prop_assert!(saturated && held.is_none());
        }
    }
}

#[test]
fn the_runtime_matches_by_digest_as_well_as_by_tag() {
    use crate::analysis::runtime::{AgentReport, RuntimeImage, summarize};
    let pinned = format!("{LAB}@{}", d(7));
    let w = wanted(&[&pinned], &[], &[]);
    let s = [summary("full", json!({}), filler(50), &w)];
    let report = AgentReport {
        node: "full".into(),
        collected_at: "t".into(),
        images: vec![RuntimeImage {
            id: "sha256:x".into(),
            repo_tags: vec![],
            repo_digests: vec![pinned.clone()],
            size: 1,
        }],
        image_fs_used_bytes: None,
        prune: None,
    };
    let rt = Arc::new(summarize(&report, &Relevance::new(&w, [])).0);
    let extras = NodeExtras::from([(
        "full".to_string(),
        NodeExtra {
            runtime: Some(rt),
            ..NodeExtra::default()
        },
    )]);
    let r = analyze(&s, &w, &none(), assume(50), &extras);
    assert_eq!(r.nodes[0].prepull.missing[0].state, MissingState::Hidden);
    // 1 runtime image against 50 reported: the lists disagree, nothing negative.
    assert_eq!(r.nodes[0].runtime.hidden_images, Some(0));
}
