//! `imagecap-exporter check`: output and exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");

fn check(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagecap-exporter"))
        .arg("check")
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn example_args() -> Vec<String> {
    vec![
        "--config".into(),
        format!("{EXAMPLES}/config.yaml"),
        "--nodes-file".into(),
        format!("{EXAMPLES}/nodes.json"),
    ]
}

#[test]
fn table_for_the_examples_exits_1() {
    let args = example_args();
    let out = check(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for n in [
        "nublado-worker-1",
        "nublado-worker-2",
        "nublado-worker-3",
        "nublado-worker-4",
        "control-plane-1",
        "nublado-gpu-1",
    ] {
        assert!(text.contains(n), "{n} in\n{text}");
    }
    let gpu = text
        .lines()
        .find(|l| l.starts_with("nublado-gpu-1"))
        .unwrap();
    assert!(
        gpu.contains("not eligible (taint dedicated=gpu:NoSchedule)"),
        "{gpu}"
    );
    assert!(
        !text.contains("w_2024_08"),
        "the lingering old weekly is not wanted (newest: 2):\n{text}"
    );
    let w1 = text
        .lines()
        .find(|l| l.starts_with("nublado-worker-1"))
        .unwrap();
    // Everything it lists is larger than w_2024_11 and busybox as other nodes of the
    // same runtime report them: the kubelet's size order can never list them there.
    assert!(
        w1.contains("50/50")
            && w1.contains("AT CAP")
            && w1.ends_with(
                "2 (unlistable): docker.io/library/busybox:1.36, \
                 ghcr.io/lsst-sqre/sciplat-lab:w_2024_11"
            ),
        "{w1}"
    );
}

#[test]
fn json_from_stdin() {
    let mut args = example_args();
    args.truncate(2);
    args.extend([
        "--nodes-file".into(),
        "-".into(),
        "--format".into(),
        "json".into(),
    ]);
    let input = std::fs::read(format!("{EXAMPLES}/nodes.json")).unwrap();
    let out = check(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        Some(&input),
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["eligibleNodes"], 4);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6);
    let gpu = nodes.iter().find(|n| n["name"] == "nublado-gpu-1").unwrap();
    assert_eq!(gpu["eligible"], false);
    assert_eq!(gpu["notEligibleReason"], "taint dedicated=gpu:NoSchedule");
    assert_eq!(gpu["missingImages"], serde_json::json!([]));
    let w4 = nodes
        .iter()
        .find(|n| n["name"] == "nublado-worker-4")
        .unwrap();
    assert_eq!(w4["eligible"], true, "its dedicated=lab taint is tolerated");
    assert!(w4.get("notEligibleReason").is_none());
    let sources: Vec<(&str, u64, bool)> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert!(s["lastSuccessSeconds"].as_f64().unwrap() > 1.7e9);
            (
                s["source"].as_str().unwrap(),
                s["images"].as_u64().unwrap(),
                s["up"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [("config", 2, true), ("pattern", 3, true)]);
    let w1 = nodes
        .iter()
        .find(|n| n["name"] == "nublado-worker-1")
        .unwrap();
    for key in [
        "images",
        "maxImages",
        "capRatio",
        "atCap",
        "imageSizeBytes",
        "ephemeralStorageCapacityBytes",
        "ephemeralStorageAllocatableBytes",
        "recommendedMaxImages",
        "missingImages",
        "missingState",
    ] {
        assert!(w1.get(key).is_some(), "{key}");
    }
    assert_eq!(w1["atCap"], true);
    assert_eq!(w1["missingState"], "unlistable");
    let w2 = nodes
        .iter()
        .find(|n| n["name"] == "nublado-worker-2")
        .unwrap();
    assert_eq!(w2["maxImages"], -1);
    let w3 = nodes
        .iter()
        .find(|n| n["name"] == "nublado-worker-3")
        .unwrap();
    assert_eq!(
        w3["missingImages"],
        serde_json::json!(["ghcr.io/lsst-sqre/sciplat-lab:w_2024_10"])
    );
    assert_eq!(w3["missingState"], "absent");
    let images = v["images"].as_array().unwrap();
    assert!(images.iter().all(|i| i["eligibleNodes"] == 4));
    let on = |name: &str| images.iter().find(|i| i["image"] == name).unwrap()["nodes"].clone();
    assert_eq!(
        on("docker.io/library/busybox:1.36"),
        3,
        "unlistable on worker-1"
    );
    assert_eq!(on("ghcr.io/lsst-sqre/sciplat-lab:r27_0_0"), 4);
    let wanted: Vec<&str> = images
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        wanted,
        [
            "docker.io/library/busybox:1.36",
            "ghcr.io/lsst-sqre/sciplat-lab:r27_0_0",
            "ghcr.io/lsst-sqre/sciplat-lab:w_2024_10",
            "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11"
        ]
    );
}

/// `check --nublado-file` with the saved PrepullerStatus of the example nodes:
/// Nublado alone decides what is wanted and where.
#[test]
fn nublado_file_offline() {
    let out = check(
        &[
            "--nodes-file",
            &format!("{EXAMPLES}/nodes.json"),
            "--nublado-file",
            &format!("{EXAMPLES}/nublado-prepulls.json"),
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(
        (
            &sources[0]["source"],
            &sources[0]["images"],
            &sources[0]["up"]
        ),
        (
            &serde_json::json!("nublado"),
            &serde_json::json!(3),
            &serde_json::json!(true)
        )
    );
    let by = |name: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone()
    };
    let w11 = "ghcr.io/lsst-sqre/sciplat-lab:w_2024_11@sha256:";
    let w1 = by("nublado-worker-1");
    assert_eq!(
        w1["missingState"], "unlistable",
        "pending on the at-cap node, whose smallest listed image is larger"
    );
    assert_eq!(w1["missingImages"].as_array().unwrap().len(), 1);
    assert!(w1["missingImages"][0].as_str().unwrap().starts_with(w11));
    assert_eq!(by("nublado-worker-3")["missingState"], "absent");
    assert_eq!(
        by("nublado-worker-4")["missingImages"],
        serde_json::json!([]),
        "its entry lost the tag but matches by digest"
    );
    let gpu = by("nublado-gpu-1");
    assert_eq!(
        gpu["notEligibleReason"],
        "Node is tainted (NoSchedule, dedicated = gpu)"
    );
    assert_eq!(
        by("control-plane-1")["notEligibleReason"],
        "not listed by the source"
    );

    // With the node agent's answer, worker-1's runtime holds that image: hidden.
    let out = check(
        &[
            "--nodes-file",
            &format!("{EXAMPLES}/nodes.json"),
            "--nublado-file",
            &format!("{EXAMPLES}/nublado-prepulls.json"),
            "--agents-file",
            &format!("{EXAMPLES}/agents.json"),
            "--format",
            "json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w1 = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "nublado-worker-1")
        .unwrap();
    assert_eq!(w1["missing"].as_array().unwrap().len(), 1);
    assert_eq!(w1["missing"][0]["state"], "hidden");

    // A file that is not a PrepullerStatus is bad input.
    let out = check(
        &[
            "--nodes-file",
            &format!("{EXAMPLES}/nodes.json"),
            "--nublado-file",
            &format!("{EXAMPLES}/nodes.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Nublado PrepullerStatus"));
}

/// A Nublado answer of 100,000 images over 200 nodes that hold some of them: the
/// first 10,000 distinct images are wanted, the rest counted as dropped, and the
/// whole check takes time linear in the images (quadratic, this took minutes).
#[test]
fn a_huge_nublado_answer_is_capped_and_fast() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<String> = (0..100_000)
        .map(|i| format!("{{\"reference\":\"r.io/i{i}:1\",\"nodes\":[],\"missing\":[]}}"))
        .collect();
    // Nublado calls 20 of the nodes eligible.
    let eligible: Vec<String> = (0..20)
        .map(|n| format!("{{\"name\":\"node-{n:03}\"}}"))
        .collect();
    let nublado = dir.path().join("nublado.json");
    std::fs::write(
        &nublado,
        format!(
            "{{\"images\":{{\"pending\":[{}]}},\"nodes\":[{}]}}",
            images.join(","),
            eligible.join(",")
        ),
    )
    .unwrap();
    let digest = |n: usize| format!("sha256:{n:064x}");
    let nodes: Vec<serde_json::Value> = (0..200)
        .map(|n| {
            let images: Vec<serde_json::Value> = (0..50)
                .map(|j| {
                    let k = (n * 50 + j) % 12_000;
                    serde_json::json!({"names": [format!("r.io/i{k}@{}", digest(k)),
                                                 format!("r.io/i{k}:1")], "sizeBytes": 1})
                })
                .collect();
            serde_json::json!({"metadata": {"name": format!("node-{n:03}")},
                               "status": {"images": images}})
        })
        .collect();
    let nodes_file = dir.path().join("nodes.json");
    std::fs::write(
        &nodes_file,
        serde_json::json!({"kind": "List", "items": nodes}).to_string(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = check(
        &[
            "--nodes-file",
            nodes_file.to_str().unwrap(),
            "--nublado-file",
            nublado.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    eprintln!("check of 100,000 Nublado images x 200 nodes: {took:?}");
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    assert!(
        stderr.contains("keeping the first 10000, 90000 image references dropped"),
        "{stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nublado = &v["sources"][0];
    assert_eq!(nublado["images"], 10_000);
    assert_eq!(nublado["droppedImages"], 90_000);
    // The kept images are the first in the body's order.
    let wanted = v["images"].as_array().unwrap();
    assert_eq!(wanted.len(), 10_000);
    let image = |name: &str| wanted.iter().find(|i| i["image"] == name).cloned();
    assert!(image("r.io/i9999:1").is_some());
    assert!(image("r.io/i10000:1").is_none());
    // node-000 holds i0 to i49: present there, missing on the 19 other eligible.
    let i0 = image("r.io/i0:1").unwrap();
    assert_eq!(i0["nodes"], 1);
    assert_eq!(i0["eligibleNodes"], 20);
    let node0 = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "node-000")
        .unwrap();
    assert_eq!(
        node0["missingImages"].as_array().unwrap().len(),
        10_000 - 50
    );
}

#[test]
fn clean_cluster_exits_0() {
    let nodes = br#"{"kind":"List","items":[{"metadata":{"name":"a"},"status":{"images":[{"names":["x:1"],"sizeBytes":1}]}}]}"#;
    let out = check(&["--nodes-file", "-"], Some(nodes));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad_cfg = dir.path().join("bad.yaml");
    std::fs::write(&bad_cfg, "prepull:\n  images: ['Not A Ref']\n").unwrap();
    // (arguments, standard input, what the error line must name)
    type Case<'a> = (Vec<&'a str>, Option<&'a [u8]>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--nodes-file", "-"],
            Some(b"not json"),
            "not a JSON object",
        ),
        (
            vec!["--nodes-file", "/nonexistent/nodes.json"],
            None,
            "/nonexistent/nodes.json",
        ),
        (
            vec!["--config", bad_cfg.to_str().unwrap(), "--nodes-file", "-"],
            Some(b"{}"),
            "prepull.images[0]",
        ),
        (
            vec!["--node-selector", "a in (b", "--nodes-file", "-"],
            Some(b"{}"),
            "--node-selector",
        ),
        (vec![], None, "Kubernetes client"),
    ];
    for (args, stdin, needle) in cases {
        let out = check(&args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(last.contains(needle), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn the_example_agent_answers_tell_hidden_from_absent() {
    let mut args = example_args();
    args.extend(["--agents-file".into(), format!("{EXAMPLES}/agents.json")]);
    let out = check(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |n: &str| text.lines().find(|l| l.starts_with(n)).unwrap().to_string();
    let w1 = row("nublado-worker-1");
    assert!(
        w1.contains(" 13 ")
            && w1.ends_with(
                "2 (hidden): docker.io/library/busybox:1.36, \
                 ghcr.io/lsst-sqre/sciplat-lab:w_2024_11"
            ),
        "{w1}"
    );
    let w3 = row("nublado-worker-3");
    assert!(w3.contains("14/50           0 "), "{w3}");
    assert!(
        w3.ends_with("1 (absent): ghcr.io/lsst-sqre/sciplat-lab:w_2024_10"),
        "{w3}"
    );
    assert!(row("nublado-worker-4").contains("46/50           - "));
}

/// A node name and a Nublado comment with a newline and a terminal sequence are
/// shown escaped: the table gets no forged line and no raw control character.
#[test]
fn hostile_names_and_comments_are_escaped_in_the_table() {
    let forged = "nublado-worker-3\nforged-node  0/50  0%  ok\x1b[31m";
    let comment = "tainted\nforged-gpu  0/50  0%  ok\x1b]0;owned\x07";
    let text = |name: &str| std::fs::read_to_string(format!("{EXAMPLES}/{name}")).unwrap();
    let rename = |json: String| {
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        fn walk(v: &mut serde_json::Value, forged: &str, comment: &str) {
            match v {
                serde_json::Value::String(s) if s == "nublado-worker-3" => *s = forged.into(),
                serde_json::Value::String(s) if s.starts_with("Node is tainted") => {
                    *s = comment.into()
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, forged, comment)),
                serde_json::Value::Object(o) => {
                    o.values_mut().for_each(|v| walk(v, forged, comment))
                }
                _ => {}
            }
        }
        walk(&mut v, forged, comment);
        v.to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes = dir.path().join("nodes.json");
    let nublado = dir.path().join("nublado.json");
    std::fs::write(&nodes, rename(text("nodes.json"))).unwrap();
    std::fs::write(&nublado, rename(text("nublado-prepulls.json"))).unwrap();
    let out = check(
        &[
            "--nodes-file",
            nodes.to_str().unwrap(),
            "--nublado-file",
            nublado.to_str().unwrap(),
        ],
        None,
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert!(
        !table.lines().any(|l| l.starts_with("forged")),
        "a forged line:\n{table}"
    );
    assert!(
        table.contains("nublado-worker-3\\nforged-node  0/50  0%  ok\\u{1b}[31m"),
        "{table}"
    );
    assert!(
        table.contains("not eligible (tainted\\nforged-gpu  0/50  0%  ok\\u{1b}]0;owned\\u{7})"),
        "{table}"
    );
}

/// `check --prune-plan`: each saved answer's plan, made again with the cluster's
/// wanted images; an answer without a plan (pruning off) gets none.
#[test]
fn prune_plan_from_saved_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut answers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(format!("{EXAMPLES}/agents.json")).unwrap()).unwrap();
    // The first agent prunes: its plan carries each image's facts. The first
    // image is in use; the rest are not.
    let images = answers[0]["images"].as_array().unwrap().clone();
    let planned: Vec<serde_json::Value> = images
        .iter()
        .enumerate()
        .map(|(i, img)| {
            serde_json::json!({
                "id": img["id"], "name": img["repoTags"][0], "size": img["size"],
                "created": format!("2024-01-{:02}T00:00:00Z", 1 + i % 28),
                "inUse": i == 0, "action": "keep", "reason": "saved"
            })
        })
        .collect();
    answers[0]["prune"] = serde_json::json!({
        "held": images.len(), "target": 45, "remove": 0, "removeBytes": 0,
        "deferred": 0, "shortBy": 0, "images": planned
    });
    let file = dir.path().join("answers.json");
    std::fs::write(&file, serde_json::to_vec(&answers).unwrap()).unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, "prune:\n  target: 50\n  maxRemovalsPerRun: 100\n").unwrap();

    let mut args = example_args();
    args.extend([
        "--agents-file".into(),
        file.display().to_string(),
        "--prune-plan".into(),
        "--prune-config".into(),
        config.display().to_string(),
    ]);
    let out = check(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let held = images.len();
    assert!(
        text.contains(&format!(
            "nublado-worker-1: holds {held} images, target 50: removes {}",
            held - 50
        )),
        "{text}"
    );
    assert!(text.contains("a container on the node uses it"), "{text}");
    // The config's wanted image stays on the node that has it.
    assert!(
        text.contains("wanted on this node as ghcr.io/lsst-sqre/sciplat-lab:w_2024_10"),
        "{text}"
    );
    assert!(
        text.contains("nublado-worker-3: no plan: the answer has no pruning plan"),
        "{text}"
    );

    args.extend(["--format".into(), "json".into()]);
    let out = check(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    let plans: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &plans[0]["plan"];
    assert_eq!(plan["remove"], held - 50);
    let removed: Vec<&serde_json::Value> = plan["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] == "remove")
        .collect();
    assert_eq!(removed.len(), held - 50);
    assert!(removed.iter().all(|i| i["inUse"] != true));
    assert!(plans[1]["plan"].is_null());

    // Without saved answers there is nothing to plan from.
    let out = check(
        &[
            "--nodes-file",
            &format!("{EXAMPLES}/nodes.json"),
            "--prune-plan",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agents-file"));
}
