"""Images hidden by the cap, measured end to end with a real container runtime.

A containerd of the test's own holds 60 images; the node agent reads them over CRI.
The node's `status.images` is what the kubelet would report at the default cap: the
50 largest of the agent's list, digests then tags, at most 5 names each. The fake API
server (the scale benchmark's --hold-fake) serves that node and an EndpointSlice
pointing at the agent, and the central exporter, started with --agents, finds the
agent through it. Four images are wanted: two among the 50 largest (reported), one
small one (on the node, hidden by the cap) and one never imported (absent).

Checked in /metrics, in `check` (JSON and table, from a saved /v1/images answer) and
on the status page as Chromium renders it.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

import containerd as containerd_harness
from harness import BIN, Exporter, Prometheus, hold_fake_apiserver, wait_for
from harness import start_agent
from test_dashboard import DASHBOARD, evaluate_dashboard
from test_status_page import DevTools

NODE = "lab-1"
LAB = "ghcr.io/lsst-sqre/sciplat-lab"
# 57 fillers and three lab images; sizes in bytes of the one layer file.
FILLERS = [(f"imagecap.test/hidden/app-{i:02d}:v1", 20_000 + 1_000 * i) for i in range(57)]
REPORTED = [(f"{LAB}:w_2026_45", 200_000), (f"{LAB}:w_2026_46", 190_000)]
HIDDEN = (f"{LAB}:w_2026_47", 1_000)
ABSENT = f"{LAB}:w_2026_48"
WANTED = [REPORTED[0][0], REPORTED[1][0], HIDDEN[0], ABSENT]


def kubelet_entries(report: dict, cap: int = 50) -> list[dict]:
    """status.images as the kubelet builds it from the runtime's list: largest first,
    cut to `cap` entries, names = digests then tags, cut to 5."""
    images = sorted(report["images"], key=lambda i: int(i["size"]), reverse=True)[:cap]
    return [{"names": (i["repoDigests"] + i["repoTags"])[:5], "sizeBytes": int(i["size"])} for i in images]


def node_object(entries: list[dict]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {},
        "status": {"capacity": {"ephemeral-storage": "200Gi"}, "allocatable": {"ephemeral-storage": "180Gi"},
                   "images": entries},
    }


def endpoint_slice(port: int) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "imagecap-agent-x1", "namespace": "imagecap",
                     "labels": {"kubernetes.io/service-name": "imagecap-agent"}},
        "addressType": "IPv4",
        "ports": [{"name": "http-metrics", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "nodeName": NODE, "conditions": {"ready": True}}],
    }


def sample(text: str, name: str, **labels: str) -> float | None:
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A containerd of this module's own (the session's holds other tests' images)
    with the 60 images."""
    reason = containerd_harness.unavailable_reason()
    if reason:
        pytest.skip(f"no containerd: {reason}")
    d = tmp_path_factory.mktemp("hidden-containerd")
    ctd = containerd_harness.start_containerd(d)
    try:
        containerd_harness.make_images(d, ctd, [*FILLERS, *REPORTED, HIDDEN])
        yield ctd
    finally:
        ctd.stop()


def hold_fake(workdir: Path, objects: list[dict]):
    """The fake API server serving `objects`, and a kubeconfig for it."""
    (workdir / "objects.json").write_text(json.dumps({"items": objects}))
    return hold_fake_apiserver(workdir, ["--objects", str(workdir / "objects.json"), "--hold-secs", "600"])


def bar_segments(url: str, tmp: Path) -> dict:
    """The node row's bar as Chromium lays it out: widths in pixels and opacities."""
    dt = DevTools(tmp / "profile", tmp / "chromium.log")
    try:
        target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        dt.send("Page.enable", session=s)
        dt.send("Page.navigate", {"url": url}, session=s)
        dt.wait_event("Page.loadEventFired", s)
        expr = f"""JSON.stringify((() => {{
            const bar = document.querySelector('tr[data-node="{NODE}"] .bar');
            const [reported, hidden] = bar.querySelectorAll('span');
            const r = e => e.getBoundingClientRect();
            return {{bar: r(bar).width, reported: r(reported).width,
                     hiddenLeft: r(hidden).left - r(bar).left, hidden: r(hidden).width,
                     reportedOpacity: getComputedStyle(reported).opacity,
                     hiddenOpacity: getComputedStyle(hidden).opacity,
                     label: bar.querySelector('b').textContent,
                     states: [...document.querySelectorAll('tr[data-node="{NODE}"] li')].map(li => li.textContent)}};
        }})())"""
        out = dt.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=s)
        return json.loads(out["result"]["value"])
    finally:
        dt.close()


def test_hidden_and_absent_wanted_images(runtime, workdir, procs, monkeypatch):
    agent = start_agent(workdir, NODE, runtime.endpoint, interval="1s")
    procs.append(agent)
    report = wait_for("the agent's 60 images",
                      lambda: (r := agent.get("/v1/images")).ok and len(r.json()["images"]) == 60 and r.json())
    entries = kubelet_entries(report)
    assert len(entries) == 50
    reported_names = {n for e in entries for n in e["names"]}
    assert HIDDEN[0] not in reported_names and REPORTED[0][0] in reported_names

    fake, kubeconfig = hold_fake(workdir, [node_object(entries), endpoint_slice(int(agent.addr.rsplit(":", 1)[1]))])
    procs.append(fake)
    config = workdir / "config.yaml"
    config.write_text("prepull:\n  images:\n" + "".join(f"    - {w}\n" for w in WANTED))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    ex = Exporter(workdir, ["--config", str(config), "--agents", "imagecap/imagecap-agent",
                            "--agents-interval", "1s", "--kubelet-configz", "--kubelet-stats"])
    procs.append(ex)
    ex._started(ex.wait_ready)

    m = wait_for("the exporter to read the agent",
                 lambda: (t := ex.metrics()) and sample(t, "imagecap_node_hidden_images", node=NODE) == 10 and t)
    assert sample(m, "imagecap_node_images", node=NODE) == 50
    assert sample(m, "imagecap_node_at_cap", node=NODE) == 1
    assert sample(m, "imagecap_node_runtime_images", node=NODE) == 60
    assert sample(m, "imagecap_node_agent_up", node=NODE) == 1
    assert sample(m, "imagecap_node_prepull_image_missing", node=NODE, image=HIDDEN[0], state="hidden") == 1
    assert sample(m, "imagecap_node_prepull_image_missing", node=NODE, image=ABSENT, state="absent") == 1
    for state, n in (("hidden", 1), ("absent", 1), ("unverifiable", 0)):
        assert sample(m, "imagecap_node_prepull_missing_images", node=NODE, state=state) == n, state
    for image, _ in REPORTED:
        assert f'image="{image}"' not in "\n".join(
            l for l in m.splitlines() if l.startswith("imagecap_node_prepull_image_missing"))
        assert sample(m, "imagecap_prepull_image_nodes", image=image) == 1

    # The dashboard's rows over these families, on real Prometheus scraping them.
    prom = Prometheus(workdir, targets=[ex.addr], interval="1s")
    procs.append(prom)
    prom.wait_scraped()
    wait_for("two scrapes", lambda: prom.query("count_over_time(imagecap_node_hidden_images[1m]) >= 2")["data"]["result"])
    dash = json.loads(DASHBOARD.read_text())
    rows = {"Runtime vs reported", "Image disk vs GC threshold"}
    row_of, current = {}, None
    for p in dash["panels"]:
        if p["type"] == "row":
            current = p["title"]
        else:
            row_of[p["title"]] = current
    results = evaluate_dashboard({**dash, "panels": [p for p in dash["panels"] if row_of.get(p["title"]) in rows]}, prom)
    assert {title for title, _ in results} == {t for t, r in row_of.items() if r in rows}
    values = {}
    for (title, ref), data in results.items():
        assert data["result"], f"{title!r}/{ref} shows nothing for real agent and kubelet data"
        values[(title, ref)] = data["result"]
    hidden = values[("Images hidden by the cap per node", "A")]
    assert [(r["metric"]["node"], float(r["value"][1])) for r in hidden] == [(NODE, 10.0)]
    headroom = values[("Headroom to the image GC threshold", "A")]
    # The fake kubelet: 40 of 100 GB used, GC at 85%.
    assert float(headroom[0]["value"][1]) == pytest.approx(0.45)

    # check, offline: the node list and the agent's saved answer.
    (workdir / "nodes.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                                    "items": [node_object(entries)]}))
    (workdir / "agents.json").write_text(json.dumps([agent.get("/v1/images").json()]))
    base = [str(BIN), "check", "--config", str(config), "--nodes-file", str(workdir / "nodes.json"),
            "--agents-file", str(workdir / "agents.json")]
    out = subprocess.run([*base, "--format", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    node = json.loads(out.stdout)["nodes"][0]
    assert (node["hiddenImages"], node["runtimeImages"]) == (10, 60)
    assert {m["image"]: m["state"] for m in node["missing"]} == {HIDDEN[0]: "hidden", ABSENT: "absent"}
    table = subprocess.run([*base, "--format", "table"], capture_output=True, text=True, timeout=60).stdout
    row = next(line for line in table.splitlines() if line.startswith(NODE))
    assert row.split()[1:3] == ["50/50", "10"], row
    assert f"{HIDDEN[0]} (hidden)" in row and f"{ABSENT} (absent)" in row, row

    # The status page, as a person sees it: the hidden 10 after the 50 reported, fainter.
    bar = bar_segments(ex.url + "/", workdir)
    assert bar["label"].replace("\u00b7", "|") == "50 / 50 | 10 hidden", bar
    assert abs(bar["reported"] / bar["bar"] - 50 / 60) < 0.02, bar
    assert abs(bar["hidden"] / bar["bar"] - 10 / 60) < 0.02, bar
    assert abs(bar["hiddenLeft"] - bar["reported"]) < 1.5, "the hidden part starts where the reported ends"
    assert float(bar["hiddenOpacity"]) < float(bar["reportedOpacity"]), bar
    assert any(s.endswith("hidden") and HIDDEN[0] in s for s in bar["states"]), bar

    # The runtime goes away: the agent's list goes stale, and the exporter stops
    # claiming to know (after --agents-max-age); here the agent simply stops.
    agent.stop()
    wait_for("the node to fall back to unverifiable",
             lambda: sample(t := ex.metrics(), "imagecap_node_agent_up", node=NODE) == 0
             and sample(t, "imagecap_node_prepull_missing_images", node=NODE, state="unverifiable") == 2)
    assert requests.get(ex.url + "/readyz", timeout=5).ok, "node data alone keeps the exporter ready"
