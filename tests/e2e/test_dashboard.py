"""The Grafana dashboard: its structure, and every panel query run against real data.

The structure tests read dashboards/imagecap.json only. The live test starts the exporter on
the example data and a real Prometheus scraping it, substitutes the template variables as
Grafana would with every variable set to "All", and evaluates every panel target through
Prometheus' HTTP API.

The exporter serves the node agent and kubelet stats families (runtime images, hidden
images, agent up, image filesystem, GC thresholds) only when it runs with node agents and
kubelet stats, which the example data has no way to feed. Until it does, the same
Prometheus job also scrapes AGENT_SERIES, a static OpenMetrics text with those families for
the example nodes, from a loopback HTTP server, so the queries of the "Runtime vs reported"
and "Image disk vs GC threshold" rows over those families are proven on it. No other panel
reads those families, and the static text has no other family. The same two rows are
also evaluated against the exporter's own series, from a real node agent on a real
containerd and the fake API server's kubelets, by tests/e2e/test_hidden_images.py.

The "Spawner menu" row needs a Nublado source: without one its series are absent, and
its panels must be empty. A second live run serves the example Nublado answer
(serve --nublado-file examples/nublado-prepulls.json), where every panel shows data.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import ROOT, Prometheus, start_exporter, wait_for

DASHBOARD = ROOT / "dashboards" / "imagecap.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

# What Grafana substitutes with every variable on "All" (allValue ".*") and the built-ins.
SUBSTITUTIONS = {
    "node": ".*",
    "job": ".*",
    "cluster": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
}
VAR_RE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")

# Panels that must show data for the example nodes.
CORE_PANELS = {
    "Nodes at cap",
    "Nodes known",
    "Images reported / cap per node",
    "Nodes",
    "Eligible nodes reporting each wanted image",
    "Wanted images",
    "Wanted image sources up",
    "Images per source",
    "Time since last successful source read",
    "Wanted images by source",
    "Images in the runtime, reported and cap",
    "Images hidden by the cap per node",
    "Nodes with an agent report",
    "Nodes without an agent report",
    "Image filesystem use and GC thresholds",
    "Headroom to the image GC threshold",
    "Prepull loop pairs by source",
    "Prepull loop pairs over time",
    "Pairs in the prepull loop",
}
# Panels over Nublado's spawner menu: no data without a Nublado source, data with one.
MENU_PANELS = {
    "Spawner menu images",
    "Spawner menu images over time",
    "Images left out of the spawner menu",
}
# Every value each per-state family's `state` label takes.
STATES = {
    "imagecap_node_prepull_image_missing": {"absent", "unlistable", "hidden", "unverifiable"},
    "imagecap_node_prepull_missing_images": {"absent", "unlistable", "hidden", "unverifiable"},
    "imagecap_menu_images": {"shown", "hidden_by_cap", "maybe_hidden_by_cap", "pulling"},
    "imagecap_menu_image_hidden": {"hidden_by_cap", "maybe_hidden_by_cap"},
}
# Panels over counters that have series only once something has gone wrong (or, for the
# source errors, once such a source is configured); they must still evaluate successfully.
MAY_BE_EMPTY = {"Source errors", "Malformed node data", "Wanted image source errors"}


# The node agent and kubelet stats families for the example nodes (see the module docstring).
# nublado-worker-1 is at its cap (50/50) and holds 13 more images; nublado-gpu-1 has no fresh
# agent report (so no runtime or hidden images) and its image filesystem is above the GC
# threshold. Image filesystems are 500 GiB.
GIB = 1024**3
RUNTIME_IMAGES = {"nublado-worker-1": 63, "nublado-worker-2": 137, "nublado-worker-3": 14,
                  "nublado-worker-4": 46, "control-plane-1": 8}
IMAGE_FS_USED = {"nublado-worker-1": 0.82, "nublado-worker-2": 0.5, "nublado-worker-3": 0.2,
                 "nublado-worker-4": 0.6, "control-plane-1": 0.3, "nublado-gpu-1": 0.9}
REPORTED = {"nublado-worker-1": 50, "nublado-worker-2": 137, "nublado-worker-3": 14,
            "nublado-worker-4": 46, "control-plane-1": 8, "nublado-gpu-1": 21}


def agent_series() -> str:
    lines = ["# TYPE imagecap_node_runtime_images gauge",
             "# HELP imagecap_node_runtime_images Images the container runtime holds on the node."]
    lines += [f'imagecap_node_runtime_images{{node="{n}"}} {v}' for n, v in RUNTIME_IMAGES.items()]
    lines += ["# TYPE imagecap_node_hidden_images gauge",
              "# HELP imagecap_node_hidden_images Runtime images the node does not report."]
    lines += [f'imagecap_node_hidden_images{{node="{n}"}} {v - REPORTED[n] if v > REPORTED[n] else 0}'
              for n, v in RUNTIME_IMAGES.items()]
    lines += ["# TYPE imagecap_node_agent_up gauge",
              "# HELP imagecap_node_agent_up 1 when the node has a fresh node agent report."]
    lines += [f'imagecap_node_agent_up{{node="{n}"}} {int(n in RUNTIME_IMAGES)}' for n in REPORTED]
    for name, value in (("image_fs_used_bytes", lambda n: int(IMAGE_FS_USED[n] * 500 * GIB)),
                        ("image_fs_capacity_bytes", lambda n: 500 * GIB),
                        ("image_gc_high_threshold_ratio", lambda n: 0.85),
                        ("image_gc_low_threshold_ratio", lambda n: 0.8)):
        lines += [f"# TYPE imagecap_node_{name} gauge", f"# HELP imagecap_node_{name} {name}."]
        lines += [f'imagecap_node_{name}{{node="{n}"}} {value(n)}' for n in REPORTED]
    return "\n".join(lines) + "\n# EOF\n"


class AgentSeriesServer:
    """Serves agent_series() as OpenMetrics on an ephemeral loopback port."""

    def __init__(self):
        body = agent_series().encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    """Every panel, including those nested in collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def query_panels(dash: dict) -> list[dict]:
    return [p for p in all_panels(dash) if p.get("type") != "row"]


def substitute(expr: str) -> str:
    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in SUBSTITUTIONS:
            raise AssertionError(f"unknown template variable ${name} in {expr!r}")
        return SUBSTITUTIONS[name]
    return VAR_RE.sub(repl, expr)


# ---------------------------------------------------------------- structure, no server


def test_identity(dashboard):
    assert dashboard["uid"] == "imagecap-exporter"
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"] == "Image cap (nodeStatusMaxImages)"
    assert dashboard.get("id") is None, "an importable dashboard carries no database id"


def test_panel_ids_unique(dashboard):
    ids = [p.get("id") for p in all_panels(dashboard)]
    assert all(isinstance(i, int) for i in ids), ids
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"


def _check_layout(panels: list[dict]):
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p.get("gridPos")
        assert g is not None, f"panel {p.get('title')!r} has no gridPos"
        for k in ("x", "y", "w", "h"):
            assert isinstance(g.get(k), int) and g[k] >= 0, f"{p.get('title')!r}: gridPos.{k}={g.get(k)!r}"
        assert g["w"] >= 1 and g["h"] >= 1, p.get("title")
        assert g["x"] + g["w"] <= GRID_WIDTH, f"{p.get('title')!r} is wider than the grid: {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p.get("title"))
                assert other == p.get("title"), f"{p.get('title')!r} overlaps {other!r} at ({x},{y})"


def test_grid_positions(dashboard):
    _check_layout(dashboard["panels"])
    for row in dashboard["panels"]:
        if row.get("type") == "row" and row.get("panels"):
            assert row.get("collapsed"), f"row {row['title']!r} nests panels but is not collapsed"
            _check_layout(row["panels"])


def test_every_query_uses_the_datasource_variable(dashboard):
    panels = query_panels(dashboard)
    assert panels
    for p in panels:
        assert p.get("datasource") == DS, f"{p['title']!r}: datasource {p.get('datasource')!r}"
        assert p.get("targets"), f"{p['title']!r} has no targets"
        for t in p["targets"]:
            assert t.get("datasource") == DS, f"{p['title']!r}/{t.get('refId')}: {t.get('datasource')!r}"


def test_template_variables(dashboard):
    vs = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "job", "cluster", "node"]
    assert vs["datasource"]["type"] == "datasource"
    assert vs["datasource"]["query"] == "prometheus"
    for name in ("job", "cluster", "node"):
        v = vs[name]
        assert v["type"] == "query", name
        assert v["datasource"] == DS, name
        assert v["includeAll"] is True, name
        assert v["allValue"] == ".*", name
    assert vs["job"]["multi"] is True and vs["node"]["multi"] is True

    def q(v):
        return v["query"]["query"] if isinstance(v["query"], dict) else v["query"]

    assert q(vs["job"]) == "label_values(imagecap_build_info, job)"
    assert q(vs["cluster"]) == "label_values(imagecap_build_info, cluster)"
    assert re.fullmatch(r'label_values\(imagecap_node_images\{job=~"\$job"(, cluster=~"\$cluster")?\}, node\)',
                        q(vs["node"])), q(vs["node"])


def test_every_query_is_filtered(dashboard):
    for p in query_panels(dashboard):
        for t in p["targets"]:
            expr = t["expr"]
            selectors = re.findall(r"(imagecap_\w+)(\{[^}]*\})?", expr)
            assert selectors, f"{p['title']!r}/{t['refId']} queries no imagecap metric: {expr}"
            for metric, sel in selectors:
                assert 'job=~"$job"' in sel and 'cluster=~"$cluster"' in sel, \
                    f"{p['title']!r}/{t['refId']}: {metric} is not filtered by job and cluster: {expr}"
                if metric.startswith("imagecap_node_"):
                    assert 'node=~"$node"' in sel, \
                        f"{p['title']!r}/{t['refId']}: {metric} is not filtered by node: {expr}"


def test_query_modes(dashboard):
    """Time series panels query ranges; stats, bar gauges and tables take instant values."""
    for p in query_panels(dashboard):
        for t in p["targets"]:
            if p["type"] == "timeseries":
                assert t.get("range") is True and not t.get("instant"), (p["title"], t["refId"])
            else:
                assert t.get("instant") is True and not t.get("range"), (p["title"], t["refId"])
            if p["type"] == "table":
                assert t.get("format") == "table", (p["title"], t["refId"])


def test_multi_query_tables_are_merged(dashboard):
    for p in query_panels(dashboard):
        if p["type"] == "table" and len(p["targets"]) > 1:
            ids = [tr["id"] for tr in p.get("transformations", [])]
            assert "merge" in ids or "joinByField" in ids, f"{p['title']!r} does not join its queries"


def expected_unit(expr: str) -> str | None:
    """The unit a target's values are in, judged from the metrics it reads."""
    if re.search(r"\bbool\b", expr):
        return None  # sums of 0/1 comparisons: a count of nodes
    if "time()" in expr and "timestamp_seconds" in expr:
        return "s"
    if re.search(r"imagecap_\w+_bytes\{[^}]*\}\s*/\s*\(?imagecap_\w+_bytes\b", expr) or "_threshold_ratio" in expr:
        return "percentunit"  # a share of a size, or a share the kubelet is configured with
    if re.search(r"imagecap_\w+_bytes\b", expr):
        return "bytes"
    if "_cap_ratio" in expr or re.search(r"imagecap_prepull_image_nodes\{[^}]*\}\s*/", expr):
        return "percentunit"
    return None


def unit_of(panel: dict, target: dict) -> str | None:
    """The unit Grafana shows for a target: an override for its field or frame, else the default."""
    names = {f"Value #{target['refId']}"}
    if len(panel["targets"]) == 1:
        names.add("Value")
    for ov in panel.get("fieldConfig", {}).get("overrides", []):
        m = ov["matcher"]
        if (m["id"] == "byName" and m["options"] in names) or \
                (m["id"] == "byFrameRefID" and m["options"] == target["refId"]):
            for prop in ov["properties"]:
                if prop["id"] == "unit":
                    return prop["value"]
    return panel.get("fieldConfig", {}).get("defaults", {}).get("unit")


def test_units(dashboard):
    checked = 0
    for p in query_panels(dashboard):
        for t in p["targets"]:
            want = expected_unit(t["expr"])
            if want is None:
                continue
            if p["type"] in ("stat", "table", "bargauge", "timeseries"):
                assert unit_of(p, t) == want, f"{p['title']!r}/{t['refId']}: unit {unit_of(p, t)!r}, want {want!r}"
                checked += 1
    # Ratio, bytes and age panels exist and were all checked.
    assert checked >= 8, checked


def test_ratio_thresholds(dashboard):
    bg = next(p for p in query_panels(dashboard) if p["title"] == "Images reported / cap per node")
    assert bg["type"] == "bargauge"
    steps = bg["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [("green", None), ("orange", 0.9), ("red", 1)]
    assert "sort_desc(" in bg["targets"][0]["expr"]


def test_cap_series_is_dashed(dashboard):
    ts = next(p for p in query_panels(dashboard) if p["title"] == "Images reported and cap")
    cap = next(t for t in ts["targets"] if "imagecap_node_max_images" in t["expr"])
    assert re.search(r"imagecap_node_max_images\{[^}]*\}\s*>\s*0", cap["expr"]), cap["expr"]
    dashed = [ov for ov in ts["fieldConfig"]["overrides"]
              if ov["matcher"] == {"id": "byFrameRefID", "options": cap["refId"]}
              and any(pr["id"] == "custom.lineStyle" and pr["value"].get("fill") == "dash"
                      for pr in ov["properties"])]
    assert dashed, "the cap series has no dashed-line override"


def test_per_image_queries_use_per_image_eligibility(dashboard):
    """Each source decides where its images are wanted, so an image's coverage is out of
    the nodes eligible for that image, never out of all eligible nodes."""
    checked = 0
    for p in query_panels(dashboard):
        for t in p["targets"]:
            if "imagecap_prepull_image_nodes" in t["expr"]:
                assert "imagecap_prepull_eligible_nodes" not in t["expr"], (p["title"], t["refId"], t["expr"])
                checked += 1
    assert checked >= 5, checked
    images_row = next(p for p in dashboard["panels"] if p.get("type") == "row" and p["title"] == "Wanted image sources")
    assert not images_row["collapsed"]


def _states_shown(expr: str) -> set[str]:
    """The states a target can return: its family's, narrowed by a state=~ matcher;
    none when it sums them away."""
    if re.search(r"without \(state\)", expr):
        return set()
    states = set()
    for metric, sel in re.findall(r"(imagecap_\w+)(\{[^}]*\})?", expr):
        if metric in STATES:
            m = re.search(r'state=~"([^"]*)"', sel or "")
            states |= STATES[metric] & set(m.group(1).split("|")) if m else STATES[metric]
    return states


def test_every_state_is_shown(dashboard):
    """Wherever a panel shows states, every state it can get (unlistable included) has
    its own text and color (tables) or color (stats, time series), and its description
    explains each one."""
    checked = set()
    for p in query_panels(dashboard):
        states = set().union(*(_states_shown(t["expr"]) for t in p["targets"]))
        if not states:
            continue
        for state in states:
            assert state in p["description"], f"{p['title']!r} does not explain {state}"
        overrides = p["fieldConfig"]["overrides"]
        if p["type"] == "table":
            column = next(ov for ov in overrides if ov["matcher"] == {"id": "byName", "options": "state"})
            mapping = next(pr["value"][0]["options"] for pr in column["properties"] if pr["id"] == "mappings")
            assert set(mapping) == states, (p["title"], set(mapping) ^ states)
            assert all(m.get("text") and m.get("color") for m in mapping.values()), (p["title"], mapping)
        elif any(t.get("legendFormat") == "{{state}}" for t in p["targets"]) and p["title"] in MENU_PANELS:
            colored = {ov["matcher"]["options"] for ov in overrides
                       if any(pr["id"] == "color" for pr in ov["properties"])}
            assert colored == states, (p["title"], colored ^ states)
        checked.add(p["title"])
    assert {"Wanted images missing", "Wanted images missing per node", "Spawner menu images",
            "Spawner menu images over time", "Images left out of the spawner menu",
            "Pairs in the prepull loop"} <= checked, checked


def test_substitution_covers_every_variable(dashboard):
    for p in query_panels(dashboard):
        for t in p["targets"]:
            assert "$" not in substitute(t["expr"]), t["expr"]


# ---------------------------------------------------------------- live, real Prometheus


def evaluate_dashboard(dash: dict, prom: Prometheus) -> dict[tuple[str, str], dict]:
    """Evaluates every panel target; returns {(panel title, refId): Prometheus response data}."""
    results = {}
    now = time.time()
    for p in query_panels(dash):
        for t in p["targets"]:
            expr = substitute(t["expr"])
            if t.get("range"):
                res = prom.query_range(expr, now - 30, now, step="1s")
            else:
                res = prom.query(expr, now)
            assert res.get("status") == "success", f"{p['title']!r}/{t['refId']}: {expr}: {res}"
            results[(p["title"], t["refId"])] = res["data"]
    return results


def grafana_merge(frames: dict[str, list[dict]]) -> list[dict]:
    """Grafana's "merge" transformation over Prometheus table-format results.

    `frames` maps refId to that query's instant vector. Grafana turns each into one frame with
    a Time field, a field per label (the metric name included, as __name__) and a
    "Value #<refId>" field; merge joins rows on the fields every frame has and keeps rows apart
    when any shared field differs.
    """
    fields = {}
    for ref, result in frames.items():
        labels = sorted({k for r in result for k in r["metric"]})
        fields[ref] = ["Time", *labels, f"Value #{ref}"]
    key_fields = [f for f in next(iter(fields.values())) if all(f in fs for fs in fields.values())]
    by_key: dict[tuple, list[dict]] = {}
    order: list[tuple[tuple, int]] = []
    for ref, result in frames.items():
        for r in result:
            row = {"Time": r["value"][0], **{k: r["metric"].get(k, "") for k in fields[ref][1:-1]},
                   f"Value #{ref}": float(r["value"][1])}
            key = tuple(row[f] for f in key_fields)
            rows = by_key.setdefault(key, [])
            for existing in rows:
                if all(existing.get(k) in (None, v) for k, v in row.items()):
                    existing.update(row)
                    break
            else:
                rows.append(row)
                order.append((key, len(rows) - 1))
    return [by_key[k][i] for k, i in order]


def _by_label(data: dict, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in data["result"]}


def _scalar(data: dict) -> float:
    assert len(data["result"]) == 1, data
    return float(data["result"][0]["value"][1])


def test_every_panel_query_against_prometheus(dashboard, workdir, procs):
    ex = start_exporter(workdir)
    procs.append(ex)
    agent = AgentSeriesServer()
    procs.append(agent)
    prom = Prometheus(workdir, targets=[ex.addr, agent.addr], interval="1s")
    procs.append(prom)
    prom.wait_scraped()
    # Both the gauge data and the range queries need a couple of samples in the TSDB.
    wait_for("imagecap_nodes in prometheus",
             lambda: prom.query("count_over_time(imagecap_nodes[1m]) >= 2")["data"]["result"])
    wait_for("the agent series in prometheus",
             lambda: prom.query("count_over_time(imagecap_node_agent_up[1m]) >= 2")["data"]["result"])

    check_dashboard_data(dashboard, prom)


def test_menu_and_loop_panels_with_nublado(dashboard, workdir, procs):
    """With Nublado's answer for the example nodes every panel shows data, and the
    "Spawner menu" and "Prepull loop" rows show its menu and loop."""
    ex = start_exporter(workdir, extra=["--nublado-file", str(ROOT / "examples" / "nublado-prepulls.json")])
    procs.append(ex)
    agent = AgentSeriesServer()
    procs.append(agent)
    prom = Prometheus(workdir, targets=[ex.addr, agent.addr], interval="1s")
    procs.append(prom)
    prom.wait_scraped()
    wait_for("the menu in prometheus",
             lambda: prom.query("count_over_time(imagecap_menu_images[1m]) >= 2")["data"]["result"])
    wait_for("the agent series in prometheus",
             lambda: prom.query("count_over_time(imagecap_node_agent_up[1m]) >= 2")["data"]["result"])

    results = evaluate_dashboard(dashboard, prom)
    for (title, ref), data in results.items():
        if title not in MAY_BE_EMPTY:
            assert data["result"], f"{title!r}/{ref} returned no data"

    lab = "ghcr.io/lsst-sqre/sciplat-lab"
    w11 = f"{lab}:w_2024_11@sha256:9eb2b2844817e5c19132b064c90d7d1d3ea32aac7e4ce3362791d2c3a217199f"
    # r27_0_0 is on every node; w_2024_11 only lacks at-cap nublado-worker-1, which can
    # never list it; w_2024_10 lacks nublado-worker-3, under its cap.
    assert _by_label(results[("Spawner menu images", "A")], "state") == {
        "shown": 1, "hidden_by_cap": 1, "maybe_hidden_by_cap": 0, "pulling": 1}
    over_time = {r["metric"]["state"]: float(r["values"][-1][1])
                 for r in results[("Spawner menu images over time", "A")]["result"]}
    assert over_time == {"shown": 1, "hidden_by_cap": 1, "maybe_hidden_by_cap": 0, "pulling": 1}
    left_out = {(r["metric"]["image"], r["metric"]["state"]): float(r["value"][1])
                for r in results[("Images left out of the spawner menu", "A")]["result"]}
    assert left_out == {(w11, "hidden_by_cap"): 1}, left_out

    assert _by_label(results[("Prepull loop pairs by source", "A")], "source") == {
        "config": 1, "pattern": 1, "nublado": 1}
    looping = {(r["metric"]["node"], r["metric"]["image"]): r["metric"]["state"]
               for r in results[("Pairs in the prepull loop", "A")]["result"]}
    assert looping == {("nublado-worker-1", f"{lab}:w_2024_11"): "unlistable",
                       ("nublado-worker-1", "docker.io/library/busybox:1.36"): "unlistable",
                       ("nublado-worker-1", w11): "unlistable"}, looping


def check_dashboard_data(dashboard: dict, prom: Prometheus):
    """Every panel target evaluates, shows data, and shows the example data's values."""
    results = evaluate_dashboard(dashboard, prom)
    empty = sorted(k for k, d in results.items() if not d["result"])
    print(f"\nevaluated {len(results)} panel targets, {len(results) - len(empty)} non-empty; "
          f"empty: {empty}")

    titles = {p["title"] for p in query_panels(dashboard)}
    assert CORE_PANELS <= titles, CORE_PANELS - titles
    assert MENU_PANELS <= titles, MENU_PANELS - titles
    for (title, ref), data in results.items():
        if title in MENU_PANELS:
            # No Nublado source: no menu series at all, not zeros.
            assert not data["result"], f"{title!r}/{ref} shows data without a Nublado source"
        elif title not in MAY_BE_EMPTY:
            assert data["result"], f"{title!r}/{ref} returned no data"

    # Tables joined with "merge" get one row per node or image, as Grafana would show them.
    merged = {}
    for p in query_panels(dashboard):
        if p["type"] == "table" and any(tr["id"] == "merge" for tr in p.get("transformations", [])):
            frames = {t["refId"]: results[(p["title"], t["refId"])]["result"] for t in p["targets"]}
            merged[p["title"]] = rows = grafana_merge(frames)
            widest = max(len(f) for f in frames.values())
            assert len(rows) == widest, f"{p['title']!r}: merge gives {len(rows)} rows for {widest} series"
    assert len(merged["Nodes"]) == 6
    for row in merged["Nodes"]:
        assert all(f"Value #{ref}" in row for ref in "ABCDEFG"), row
    worker3 = next(r for r in merged["Nodes"] if r["node"] == "nublado-worker-3")
    assert (worker3["Value #A"], worker3["Value #B"], worker3["Value #H"]) == (14, 50, 1), worker3
    assert len(merged["Wanted images"]) == 4
    for row in merged["Wanted images"]:
        assert all(f"Value #{ref}" in row for ref in "ABC"), row

    # Real values from examples/nodes.json.
    assert _scalar(results[("Nodes at cap", "A")]) == 1
    assert _scalar(results[("Nodes known", "A")]) == 6
    assert _scalar(results[("Nodes near cap", "A")]) == 1  # nublado-worker-4, 46/50
    assert _scalar(results[("Eligible nodes", "A")]) == 4
    assert _by_label(results[("Wanted images missing", "A")], "state") == {
        "absent": 1, "unverifiable": 0, "hidden": 0, "unlistable": 2}
    age = _scalar(results[("Exporter data age", "A")])
    assert 0 <= age < 60, age

    bars = results[("Images reported / cap per node", "A")]["result"]
    order = [(r["metric"]["node"], float(r["value"][1])) for r in bars]
    assert len(order) == 6, order
    assert [v for _, v in order] == sorted((v for _, v in order), reverse=True), order
    assert order[0] == ("nublado-worker-1", 1.0), order
    assert dict(order)["nublado-worker-4"] == pytest.approx(0.92)
    assert dict(order)["nublado-worker-2"] == 0  # unlimited

    images = {r["metric"]["node"]: float(r["values"][-1][1])
              for r in results[("Images reported and cap", "A")]["result"]}
    assert images == {"nublado-worker-1": 50, "nublado-worker-2": 137, "nublado-worker-3": 14,
                      "nublado-worker-4": 46, "control-plane-1": 8, "nublado-gpu-1": 21}
    cap_nodes = {r["metric"]["node"] for r in results[("Images reported and cap", "B")]["result"]}
    assert "nublado-worker-2" not in cap_nodes and "nublado-worker-1" in cap_nodes, cap_nodes

    # Node table: each column has a row per node it applies to.
    table = {ref: _by_label(d, "node") for (title, ref), d in results.items() if title == "Nodes"}
    assert sorted(table) == list("ABCDEFGH")
    for ref in "ABCDEFG":
        assert len(table[ref]) == 6, (ref, table[ref])
    assert table["B"]["nublado-worker-2"] == -1
    assert table["B"]["nublado-worker-1"] == 50
    assert table["D"]["nublado-worker-1"] > 0
    assert table["E"]["nublado-worker-3"] == 500 * 1024**3
    assert table["F"]["nublado-worker-4"] == 184 * 10**9
    # Missing wanted images only for eligible nodes; control-plane-1 is cordoned and
    # nublado-gpu-1 tainted.
    assert table["H"] == {"nublado-worker-1": 2, "nublado-worker-2": 0, "nublado-worker-3": 1,
                          "nublado-worker-4": 0}

    # Wanted images: w_2024_10 is absent on nublado-worker-3; w_2024_11 and busybox are
    # smaller than everything at-cap nublado-worker-1 lists, so never listed there.
    lab = "ghcr.io/lsst-sqre/sciplat-lab"
    cover = _by_label(results[("Eligible nodes reporting each wanted image", "A")], "image")
    assert cover[f"{lab}:w_2024_10"] == pytest.approx(0.75)
    assert cover[f"{lab}:w_2024_11"] == pytest.approx(0.75)
    assert cover["docker.io/library/busybox:1.36"] == pytest.approx(0.75)
    first = results[("Eligible nodes reporting each wanted image", "A")]["result"][0]
    assert float(first["value"][1]) == min(cover.values()), "not sorted lowest first"
    wanted = {ref: _by_label(d, "image") for (title, ref), d in results.items() if title == "Wanted images"}
    assert wanted["A"][f"{lab}:w_2024_10"] == 3
    assert set(wanted["B"].values()) == {4}
    assert wanted["C"] == cover
    missing = {(r["metric"]["node"], r["metric"]["image"]): r["metric"]["state"]
               for r in results[("Wanted images missing per node", "A")]["result"]}
    assert missing == {("nublado-worker-3", f"{lab}:w_2024_10"): "absent",  # at cap, no agent:
                       ("nublado-worker-1", f"{lab}:w_2024_11"): "unlistable",  # proven by size
                       ("nublado-worker-1", "docker.io/library/busybox:1.36"): "unlistable"}

    # The prepull loop: the two unlistable pairs, one per source.
    assert _by_label(results[("Prepull loop pairs by source", "A")], "source") == {"config": 1, "pattern": 1}
    loop = {r["metric"]["source"]: float(r["values"][-1][1])
            for r in results[("Prepull loop pairs over time", "A")]["result"]}
    assert loop == {"config": 1, "pattern": 1}, loop
    looping = {(r["metric"]["node"], r["metric"]["image"]): r["metric"]["state"]
               for r in results[("Pairs in the prepull loop", "A")]["result"]}
    assert looping == {k: v for k, v in missing.items() if v == "unlistable"}, looping

    # Wanted image sources: the example config has images (source "config") and a
    # pattern (source "pattern"), both always up; no other source is configured.
    assert _by_label(results[("Wanted image sources up", "A")], "source") == {"config": 1, "pattern": 1}
    per_source = _by_label(results[("Images per source", "A")], "source")
    assert per_source["config"] == 2  # w_2024_10 and busybox:1.36
    assert set(per_source) == {"config", "pattern"}
    ages = {r["metric"]["source"]: float(r["values"][-1][1])
            for r in results[("Time since last successful source read", "A")]["result"]}
    assert set(ages) == {"config", "pattern"}, ages
    assert all(0 <= a < 600 for a in ages.values()), ages
    by_source = merged["Wanted images by source"]
    pairs = {(r["image"], r["source"]) for r in by_source}
    assert {("docker.io/library/busybox:1.36", "config"), (f"{lab}:w_2024_10", "config"),
            (f"{lab}:r27_0_0", "pattern"), (f"{lab}:w_2024_11", "pattern")} <= pairs, pairs
    # One row per (image, source); each image's numbers are the per-image ones.
    assert len(pairs) == len(by_source)
    assert {image for image, _ in pairs} == set(wanted["A"])
    for source, n in per_source.items():
        assert n == sum(1 for _, s in pairs if s == source), (source, n, pairs)
    for row in by_source:
        assert (row["Value #A"], row["Value #B"], row["Value #C"]) == (
            wanted["A"][row["image"]], wanted["B"][row["image"]], wanted["C"][row["image"]]), row
    assert {r["metric"]["kind"] for r in results[("Wanted image source errors", "A")]["result"]} <= \
        {"nublado", "kube-fledged", "daemonsets"}

    # Runtime vs reported, and image disk vs GC threshold (on AGENT_SERIES).
    runtime = {r["metric"]["node"]: float(r["values"][-1][1])
               for r in results[("Images in the runtime, reported and cap", "A")]["result"]}
    assert runtime == RUNTIME_IMAGES
    reported = {r["metric"]["node"]: float(r["values"][-1][1])
                for r in results[("Images in the runtime, reported and cap", "B")]["result"]}
    assert reported == REPORTED
    cap_nodes = {r["metric"]["node"] for r in results[("Images in the runtime, reported and cap", "C")]["result"]}
    assert "nublado-worker-2" not in cap_nodes and "nublado-worker-1" in cap_nodes, cap_nodes
    hidden = [(r["metric"]["node"], float(r["value"][1]))
              for r in results[("Images hidden by the cap per node", "A")]["result"]]
    assert hidden[0] == ("nublado-worker-1", 13), hidden
    assert dict(hidden) == {n: (13 if n == "nublado-worker-1" else 0) for n in RUNTIME_IMAGES}
    assert _scalar(results[("Nodes with an agent report", "A")]) == 5
    assert _scalar(results[("Nodes without an agent report", "A")]) == 1
    used = {r["metric"]["node"]: float(r["values"][-1][1])
            for r in results[("Image filesystem use and GC thresholds", "A")]["result"]}
    assert used == pytest.approx(IMAGE_FS_USED)
    for ref, want in (("B", 0.85), ("C", 0.8)):
        series = results[("Image filesystem use and GC thresholds", ref)]["result"]
        assert {r["metric"]["node"]: float(r["values"][-1][1]) for r in series} == {n: want for n in REPORTED}
    headroom = [(r["metric"]["node"], float(r["value"][1]))
                for r in results[("Headroom to the image GC threshold", "A")]["result"]]
    assert [v for _, v in headroom] == sorted(v for _, v in headroom), "not sorted lowest first"
    assert headroom[0][0] == "nublado-gpu-1" and headroom[0][1] == pytest.approx(-0.05), headroom
    assert dict(headroom)["nublado-worker-1"] == pytest.approx(0.03)

    # Template variable queries resolve too.
    job_values = prom.query("group by (job) (imagecap_build_info)")["data"]["result"]
    assert [r["metric"]["job"] for r in job_values] == ["imagecap-exporter"]
    nodes = prom.query('group by (node) (imagecap_node_images{job=~".*", cluster=~".*"})')["data"]["result"]
    assert len(nodes) == 6
