"""The shipped alert rules, end to end.

The exporter serves the example data (examples/nodes.json, examples/config.yaml), a
real Prometheus scrapes it every second and evaluates a copy of
alerts/imagecap.rules.yaml whose `for:` durations are shortened (the expressions are
unchanged), and sends alerts to a real Alertmanager. The example data has:

  nublado-worker-1  50/50 images, all larger than w_2024_11 and
                    busybox, which it can never list          -> AtCap, and PrepullLoop
                                                                 for their sources
                                                                 (pattern, config)
  nublado-worker-2  137 images, unlimited, has everything      -> nothing, ever
  nublado-worker-3  14 images, lacks w_2024_10                 -> Missing
  nublado-worker-4  46/50 images                               -> NearCap
  control-plane-1   cordoned, not eligible, 8 images           -> nothing
  nublado-gpu-1     tainted dedicated=gpu, not eligible        -> nothing

A second test reads wanted images from a fake Nublado controller on loopback and
takes it down: ImageCapWantedSourceDown fires, and the last list stays in use.

A third test serves a generated Nublado answer (serve --nublado-file) for generated
nodes at their cap, with no node agent: the sizes alone prove the prepull loop and an
image hidden from the spawner menu, and ImageCapPrepullLoop and
ImageCapMenuImagesHidden fire.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import yaml

from harness import EXAMPLES, ROOT, Alertmanager, Exporter, Prometheus, wait_for

RULES = ROOT / "alerts" / "imagecap.rules.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/lsst-sqre/imagecap-exporter/blob/main/docs/runbook.md#"
SHORT_FOR = "2s"
LAB = "ghcr.io/lsst-sqre/sciplat-lab"

# alert -> (for, severity), as documented in docs/runbook.md.
SPEC = {
    "ImageCapNodeAtCap": ("15m", "warning"),
    "ImageCapNodeNearCap": ("1h", "info"),
    "ImageCapPrepullImageMissing": ("30m", "warning"),
    "ImageCapPrepullImageUnverifiable": ("15m", "warning"),
    "ImageCapExporterDown": ("5m", "critical"),
    "ImageCapExporterStale": ("5m", "warning"),
    "ImageCapExporterNoData": ("15m", "warning"),
    "ImageCapWantedSourceDown": ("15m", "warning"),
    "ImageCapPrepullLoop": ("15m", "warning"),
    "ImageCapMenuImagesHidden": ("30m", "warning"),
    "ImageCapAgentDown": ("15m", "warning"),
    "ImageCapImageFsNearGC": ("30m", "info"),
}

# Alerts that renamed ones replace: their runbook anchors stay, for old links.
RENAMED = {"ImageCapWantedImageHidden": "ImageCapPrepullLoop"}

# (alertname, node, image, source; None where the alert has no such label) ->
# (severity, fragments its description must contain)
EXPECTED = {
    ("ImageCapNodeAtCap", "nublado-worker-1", None, None):
        ("warning", ["nublado-worker-1 reports 50/50 images"]),
    # w_2024_11 (a pattern's) and busybox (the config's) are unlistable on
    # nublado-worker-1: neither Unverifiable nor Missing, but the loop of each source.
    ("ImageCapPrepullLoop", None, None, "pattern"):
        ("warning", ["counts 1 pair of", "source pattern", "(from any source): nublado-worker-1 (2)."]),
    ("ImageCapPrepullLoop", None, None, "config"):
        ("warning", ["counts 1 pair of", "source config", "(from any source): nublado-worker-1 (2)."]),
    ("ImageCapPrepullImageMissing", "nublado-worker-3", f"{LAB}:w_2024_10", None):
        ("warning", [f"{LAB}:w_2024_10", "(14 images reported, cap 50)"]),
    ("ImageCapNodeNearCap", "nublado-worker-4", None, None):
        ("info", ["nublado-worker-4 reports 46/50 images", "(92%"]),
}
UNLIMITED_NODE = "nublado-worker-2"


def alert_rules(doc: dict) -> list[dict]:
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def shortened_rules(workdir: Path) -> Path:
    """A copy of the rule file with every `for:` set to SHORT_FOR, nothing else changed."""
    original = yaml.safe_load(RULES.read_text())
    doc = yaml.safe_load(RULES.read_text())
    for rule in alert_rules(doc):
        if "for" in rule:
            rule["for"] = SHORT_FOR
    out = workdir / "imagecap-short.rules.yaml"
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    copy = yaml.safe_load(out.read_text())
    assert [(r["alert"], r["expr"], r["labels"], r["annotations"]) for r in alert_rules(copy)] == \
        [(r["alert"], r["expr"], r["labels"], r["annotations"]) for r in alert_rules(original)]
    assert {r["for"] for r in alert_rules(copy)} == {SHORT_FOR}
    return out


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub generates for the headings of a Markdown document."""
    anchors = set()
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m and not in_fence:
            text = re.sub(r"[^\w\- ]", "", m.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def key(alert: dict) -> tuple:
    labels = alert["labels"]
    return labels["alertname"], labels.get("node"), labels.get("image"), labels.get("source")


def test_rules_match_the_documented_alerts_and_runbook():
    """Names, `for:`, severities and runbook links are as documented; every link resolves."""
    rules = alert_rules(yaml.safe_load(RULES.read_text()))
    anchors = github_anchors(RUNBOOK.read_text())
    assert {r["alert"] for r in rules} == set(SPEC)
    for rule in rules:
        name = rule["alert"]
        assert (rule["for"], rule["labels"]["severity"]) == SPEC[name], name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert rule["annotations"]["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in anchors, f"docs/runbook.md has no heading for {name}"
    for old, new in RENAMED.items():
        assert old not in SPEC
        assert old.lower() in anchors, f"docs/runbook.md dropped the heading of {old}: old links break"
        section = RUNBOOK.read_text().split(f"## {old}\n", 1)[1].split("\n## ", 1)[0]
        assert f"[{new}](#{new.lower()})" in section, section


def test_alerts_reach_alertmanager(workdir, procs):
    rules = shortened_rules(workdir)
    started = time.time()

    exporter = Exporter(workdir, ["--nodes-file", str(EXAMPLES / "nodes.json"),
                                  "--config", str(EXAMPLES / "config.yaml")])
    procs.append(exporter)
    exporter.wait_ready()
    alertmanager = Alertmanager(workdir)
    procs.append(alertmanager)
    prometheus = Prometheus(workdir, targets=[exporter.addr], rule_files=[rules],
                            alertmanager=f"127.0.0.1:{alertmanager.port}", interval="1s")
    procs.append(prometheus)
    prometheus.wait_scraped()

    # Every expected alert arrives at Alertmanager.
    def arrived():
        active = {key(a): a for a in alertmanager.alerts() if a["status"]["state"] == "active"}
        return active if set(EXPECTED) <= set(active) else None

    try:
        active = wait_for("the expected alerts in Alertmanager", arrived)
    except TimeoutError:
        firing = prometheus.query("ALERTS")
        raise AssertionError(f"alerts in Prometheus: {firing}\nexporter /metrics:\n{exporter.metrics()}")
    arrived_at = time.time()

    for k, (severity, fragments) in EXPECTED.items():
        alert = active[k]
        name, node, image, source = k
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["severity"] == severity, k
        assert labels.get("node") == node, k
        assert labels.get("image") == image, k
        assert labels.get("source") == source, k
        assert annotations["summary"].strip(), k
        assert (node or source) in annotations["summary"], k
        for fragment in fragments:
            assert fragment in annotations["description"], (k, annotations["description"])
        assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), k
        assert annotations["runbook_url"].split("#", 1)[1] in github_anchors(RUNBOOK.read_text())

    # Let every rule group run several more evaluations, then look again.
    n_groups = len(yaml.safe_load(rules.read_text())["groups"])
    assert n_groups >= 4

    def evaluated_since(t):
        groups = requests.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        times = [g.get("lastEvaluation", "") for g in groups]
        return len(groups) == n_groups and all(_rfc3339(ts) >= t for ts in times)

    wait_for("five more evaluations of every rule group", lambda: evaluated_since(arrived_at + 5))

    groups = requests.get(prometheus.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))

    alerts = alertmanager.alerts()
    active = {key(a) for a in alerts if a["status"]["state"] == "active"}
    # Exactly the expected alerts: nothing for the unlimited node, the control-plane node,
    # a node's other (present) images, or the healthy exporter.
    assert active == set(EXPECTED), active ^ set(EXPECTED)
    assert not [a for a in alerts if a["labels"].get("node") == UNLIMITED_NODE]

    # Not even pending at any time since the start: ALERTS has pending and firing series.
    res = prometheus.query_range(f'ALERTS{{node="{UNLIMITED_NODE}"}}', start=started,
                                 end=time.time(), step="1s")
    assert res["status"] == "success", res
    assert res["data"]["result"] == [], res["data"]["result"]
    # ... while the same query does see the at-cap node (so the query itself works).
    res = prometheus.query_range('ALERTS{node="nublado-worker-1"}', start=started,
                                 end=time.time(), step="1s")
    assert res["data"]["result"], res


class FakeNublado:
    """Answers GET /nublado/spawner/v1/prepulls with a PrepullerStatus, or `code`."""

    def __init__(self, body: bytes):
        self.body = body
        self.code = 200
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path != "/nublado/spawner/v1/prepulls" or fake.code != 200:
                    self.send_response(404 if fake.code == 200 else fake.code)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                self.wfile.write(fake.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/nublado/spawner/v1/prepulls"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_wanted_source_down_fires_and_the_last_list_is_kept(workdir, procs):
    nublado = FakeNublado((EXAMPLES / "nublado-prepulls.json").read_bytes())
    try:
        config = workdir / "nublado.yaml"
        config.write_text(
            f"prepull:\n  sources:\n    - nublado: {{url: '{nublado.url}', interval: 1s, timeout: 1s}}\n")
        exporter = Exporter(workdir, ["--nodes-file", str(EXAMPLES / "nodes.json"), "--config", str(config)])
        procs.append(exporter)
        exporter.wait_ready()
        alertmanager = Alertmanager(workdir)
        procs.append(alertmanager)
        prometheus = Prometheus(workdir, targets=[exporter.addr], rule_files=[shortened_rules(workdir)],
                                alertmanager=f"127.0.0.1:{alertmanager.port}", interval="1s")
        procs.append(prometheus)
        prometheus.wait_scraped()
        wait_for("nublado up in Prometheus",
                 lambda: prometheus.query('imagecap_wanted_source_up{source="nublado"} == 1')["data"]["result"])
        w11 = next(i for i in json.loads(nublado.body)["images"]["pending"] if i["tag"] == "w_2024_11")
        # w_2024_11 is smaller than every image at-cap nublado-worker-1 lists: in the
        # loop, and out of the spawner menu.
        at_cap = {("ImageCapPrepullLoop", None, None, "nublado"),
                  ("ImageCapMenuImagesHidden", None, f"{LAB}:w_2024_11@{w11['digest']}", None)}

        def active():
            return {key(a): a for a in alertmanager.alerts() if a["status"]["state"] == "active"}

        wait_for("Nublado's at-cap findings in Alertmanager", lambda: at_cap <= set(active()))
        assert not [k for k in active() if k[0] == "ImageCapWantedSourceDown"]

        nublado.code = 503
        down = wait_for("ImageCapWantedSourceDown in Alertmanager",
                        lambda: [a for a in active().values()
                                 if a["labels"]["alertname"] == "ImageCapWantedSourceDown"])
        assert down[0]["labels"]["source"] == "nublado"
        assert down[0]["labels"]["severity"] == "warning"
        assert down[0]["annotations"]["runbook_url"] == RUNBOOK_URL + "imagecapwantedsourcedown"
        # The last good list is still what the exporter judges nodes by.
        metrics = exporter.metrics()
        assert 'imagecap_wanted_source_images{source="nublado"} 3' in metrics, metrics
        assert at_cap <= set(active())
        errors = prometheus.query('imagecap_source_errors_total{kind="nublado"} > 0')["data"]["result"]
        assert errors, "failed reads are counted"
    finally:
        nublado.stop()


# The generated cluster of test_menu_and_loop_from_sizes_without_agent: lab-1 and lab-2
# at the default cap of 50, lab-3 under it; every image lab-1 and lab-2 list is at
# least 2 GB.
R27 = (f"{LAB}:r27_0_0", "sha256:" + "27" * 32, 9_000_000_000)
W11 = (f"{LAB}:w_2024_11", "sha256:" + "11" * 32, 1_000_000_000)  # smaller: unlistable at the cap
W12 = (f"{LAB}:w_2024_12", "sha256:" + "12" * 32, 5_000_000_000)  # larger: absent, proven


def _node(name: str, images: list[tuple[list[str], int]]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"ephemeral-storage": "1Ti"},
            "allocatable": {"ephemeral-storage": "900Gi"},
            "nodeInfo": {"containerRuntimeVersion": "containerd://1.7.13", "architecture": "amd64"},
            "images": [{"names": names, "sizeBytes": size} for names, size in images],
        },
    }


def _entry(image: tuple[str, str, int]) -> tuple[list[str], int]:
    ref, digest, size = image
    repo = ref.rsplit(":", 1)[0]
    return [f"{repo}@{digest}", ref], size


def _nublado_image(image: tuple[str, str, int], nodes: list[str], missing: list[str]) -> dict:
    ref, digest, size = image
    tag = ref.rsplit(":", 1)[1]
    return {"reference": ref, "tag": tag, "name": f"Lab {tag}", "digest": digest, "size": size,
            "nodes": nodes, "missing": missing}


def generated_cluster(workdir: Path) -> tuple[Path, Path]:
    """nodes.json and Nublado's answer for them: R27 everywhere (shown in the menu), W11
    on lab-3 only (lab-1 and lab-2 can never list it: hidden by the cap), W12 on lab-3
    only (lab-1 and lab-2 would list it: pulling)."""
    def filler(node: str) -> list[tuple[list[str], int]]:
        return [([f"registry.example.com/{node}/app{i}:v{i}"], 2_000_000_000 + i * 10_000_000) for i in range(49)]

    nodes = {"apiVersion": "v1", "kind": "NodeList", "items": [
        _node("lab-1", [_entry(R27), *filler("lab-1")]),
        _node("lab-2", [_entry(R27), *filler("lab-2")]),
        _node("lab-3", [_entry(R27), _entry(W11), _entry(W12)]),
    ]}
    body = {
        "config": {"refresh_interval": 60},
        "images": {
            "prepulled": [_nublado_image(R27, ["lab-1", "lab-2", "lab-3"], [])],
            "pending": [_nublado_image(W11, ["lab-3"], ["lab-1", "lab-2"]),
                        _nublado_image(W12, ["lab-3"], ["lab-1", "lab-2"])],
        },
        "nodes": [{"name": n, "eligible": True, "comment": None, "cached": []}
                  for n in ("lab-1", "lab-2", "lab-3")],
    }
    nodes_file, nublado_file = workdir / "nodes.json", workdir / "nublado.json"
    nodes_file.write_text(json.dumps(nodes))
    nublado_file.write_text(json.dumps(body))
    return nodes_file, nublado_file


def test_menu_and_loop_from_sizes_without_agent(workdir, procs):
    nodes, body = generated_cluster(workdir)
    exporter = Exporter(workdir, ["--nodes-file", str(nodes), "--nublado-file", str(body)])
    procs.append(exporter)
    exporter.wait_ready()
    alertmanager = Alertmanager(workdir)
    procs.append(alertmanager)
    prometheus = Prometheus(workdir, targets=[exporter.addr], rule_files=[shortened_rules(workdir)],
                            alertmanager=f"127.0.0.1:{alertmanager.port}", interval="1s")
    procs.append(prometheus)
    prometheus.wait_scraped()

    w11 = f"{W11[0]}@{W11[1]}"
    w12 = f"{W12[0]}@{W12[1]}"
    expected = {
        ("ImageCapNodeAtCap", "lab-1", None, None),
        ("ImageCapNodeAtCap", "lab-2", None, None),
        ("ImageCapMenuImagesHidden", None, w11, None),
        ("ImageCapPrepullLoop", None, None, "nublado"),
        # W12 is larger than the smallest image lab-1 and lab-2 list: proven absent.
        ("ImageCapPrepullImageMissing", "lab-1", w12, None),
        ("ImageCapPrepullImageMissing", "lab-2", w12, None),
    }

    def active():
        return {key(a): a for a in alertmanager.alerts() if a["status"]["state"] == "active"}

    try:
        got = wait_for("the menu and loop alerts in Alertmanager",
                       lambda: (lambda a: a if expected <= set(a) else None)(active()))
    except TimeoutError:
        raise AssertionError(f"alerts in Prometheus: {prometheus.query('ALERTS')}\n"
                             f"exporter /metrics:\n{exporter.metrics()}")

    # No node agent anywhere: the sizes alone decided.
    metrics = exporter.metrics()
    assert "imagecap_node_agent_up" not in metrics
    assert f'imagecap_node_prepull_image_missing{{node="lab-1",image="{w11}",state="unlistable"}} 1' in metrics
    assert f'imagecap_node_prepull_image_missing{{node="lab-1",image="{w12}",state="absent"}} 1' in metrics

    menu = got[("ImageCapMenuImagesHidden", None, w11, None)]
    assert menu["labels"]["state"] == "hidden_by_cap"
    assert menu["labels"]["severity"] == "warning"
    assert w11 in menu["annotations"]["summary"]
    assert "The cap keeps 1 of Nublado's images out of the menu, which shows 1." in \
        menu["annotations"]["description"], menu["annotations"]["description"]
    assert menu["annotations"]["runbook_url"] == RUNBOOK_URL + "imagecapmenuimageshidden"

    loop = got[("ImageCapPrepullLoop", None, None, "nublado")]
    assert loop["labels"]["severity"] == "warning"
    description = loop["annotations"]["description"]
    assert "counts 2 pairs of an eligible node and a wanted image of source nublado" in description, description
    assert "(from any source): lab-1 (1) lab-2 (1)." in description, description
    assert loop["annotations"]["runbook_url"] == RUNBOOK_URL + "imagecapprepullloop"

    missing = got[("ImageCapPrepullImageMissing", "lab-1", w12, None)]
    assert "It is at its image-list cap (50/50 images), but the image is larger than the smallest" in \
        missing["annotations"]["description"], missing["annotations"]["description"]

    # Let the rules run a few more evaluations: exactly these, nothing unverifiable, and
    # no loop for sources without pairs.
    time.sleep(5)
    assert set(active()) == expected, set(active()) ^ expected
    res = prometheus.query('ALERTS{alertname="ImageCapPrepullImageUnverifiable"}')
    assert res["status"] == "success" and res["data"]["result"] == [], res


def _rfc3339(ts: str) -> float:
    """Seconds since the epoch of a Prometheus API timestamp (nanosecond RFC 3339)."""
    from datetime import datetime

    if not ts or ts.startswith("0001-"):
        return 0.0
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", ts)
    assert m, ts
    base, frac, tz = m.groups()
    tz = "+00:00" if tz == "Z" else tz
    return datetime.fromisoformat(base + tz).timestamp() + float(frac or 0)
