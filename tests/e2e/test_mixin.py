"""The monitoring mixin (mixin/, jsonnet) and the files it generates.

alerts/imagecap.rules.yaml and dashboards/imagecap.json are the mixin's output, committed.
These tests run the generator (real jsonnet) into a temporary directory and require the
same bytes, render the mixin with a non-default _config and check every setting took
effect, and run promtool on both renderings.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import ROOT

GENERATE = ROOT / "mixin" / "generate.sh"
RULES = ROOT / "alerts" / "imagecap.rules.yaml"
DASHBOARD = ROOT / "dashboards" / "imagecap.json"
DEFAULT_RUNBOOK = "https://github.com/lsst-sqre/imagecap-exporter/blob/main/docs/runbook.md#"

# A customized mixin, as an operator would write it.
CUSTOM = """
(import 'mixin.libsonnet') + {
  _config+:: {
    imagecapSelector: 'job="monitoring/imagecap"',
    imagecapAgentSelector: 'job="monitoring/imagecap-agent"',
    imageFsGCMargin: 0.1,
    clusterLabel: 'k8s_cluster',
    nearCapRatio: 0.8,
    steadyWindow: '10m',
    staleAfterSeconds: 1200,
    alertFor+: { ImageCapNodeAtCap: '45m', ImageCapWantedSourceDown: '1h', ImageCapExporterNoData: '30m' },
    runbookURLPattern: 'https://runbooks.example.org/imagecap/%s.html',
    dashboardUID: 'imagecap-custom',
    dashboardTitle: 'Image cap (custom)',
    dashboardTags: ['custom'],
    dashboardRefresh: '5m',
    dashboardTimezone: 'utc',
  },
}
"""


@pytest.fixture(scope="module", autouse=True)
def _jsonnet():
    if shutil.which("jsonnet") is None:
        pytest.fail("jsonnet is missing: scripts/setup.sh installs it (Debian package jsonnet)")


def generate(out: Path, mixin: Path | None = None) -> tuple[Path, Path]:
    argv = [str(GENERATE), "--out", str(out)] + (["--mixin", str(mixin)] if mixin else [])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return out / "alerts" / "imagecap.rules.yaml", out / "dashboards" / "imagecap.json"


def promtool_check(path: Path) -> str:
    res = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def alerts(doc: dict) -> dict[str, dict]:
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def exprs(dashboard: dict) -> list[str]:
    panels = [q for p in dashboard["panels"] for q in [p, *p.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def default(tmp_path_factory) -> tuple[Path, Path]:
    return generate(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> tuple[dict, dict, Path]:
    d = tmp_path_factory.mktemp("custom")
    src = d / "custom.jsonnet"
    src.write_text(CUSTOM)
    rules, dash = generate(d / "out", src)
    return yaml.safe_load(rules.read_text()), json.loads(dash.read_text()), rules


def test_committed_files_are_the_generated_ones(default):
    rules, dash = default
    # Byte for byte: jsonnet sorts keys and the generator fixes indentation and number
    # format, so equal bytes also prove the generation is deterministic.
    assert rules.read_bytes() == RULES.read_bytes(), "alerts/imagecap.rules.yaml differs: run make mixin"
    assert dash.read_bytes() == DASHBOARD.read_bytes(), "dashboards/imagecap.json differs: run make mixin"


def test_generated_files_say_so(default):
    rules, _ = default
    assert rules.read_text().startswith("# Generated from mixin/")


def test_default_rules_pass_promtool(default):
    out = promtool_check(default[0])
    assert f"SUCCESS: {len(alerts(yaml.safe_load(default[0].read_text())))} rules found" in out


def test_default_runbook_urls(default):
    for name, rule in alerts(yaml.safe_load(default[0].read_text())).items():
        assert rule["annotations"]["runbook_url"] == DEFAULT_RUNBOOK + name.lower()


def test_custom_config_takes_effect(custom):
    doc, dash, path = custom
    promtool_check(path)
    rules = alerts(doc)
    for name, rule in rules.items():
        assert rule["annotations"]["runbook_url"] == f"https://runbooks.example.org/imagecap/{name.lower()}.html"
        # The steady window replaced the default everywhere, templates included.
        text = rule["expr"] + json.dumps(rule["annotations"])
        assert "[5m]" not in text, name
    assert rules["ImageCapNodeAtCap"]["for"] == "45m"
    assert rules["ImageCapNodeNearCap"]["for"] == "1h"  # not overridden: the default
    assert rules["ImageCapWantedSourceDown"]["for"] == "1h"
    assert "for 1 hour." in rules["ImageCapWantedSourceDown"]["annotations"]["description"]
    assert "for 30 minutes," in rules["ImageCapExporterNoData"]["annotations"]["description"]
    assert "min_over_time(imagecap_node_at_cap[10m])" in rules["ImageCapNodeAtCap"]["expr"]
    near = rules["ImageCapNodeNearCap"]
    assert ">= 0.8)" in near["expr"] and "80%" in near["annotations"]["summary"]
    down = rules["ImageCapExporterDown"]["expr"]
    assert down.split() == ['up{job="monitoring/imagecap"}', "==", "0", "or", 'absent(up{job="monitoring/imagecap"})']
    assert re.search(r"> 1200\s*$", rules["ImageCapExporterStale"]["expr"])
    agent_down = rules["ImageCapAgentDown"]["expr"]
    assert 'last_over_time(imagecap_runtime_up{job="monitoring/imagecap-agent"}[10m]) == 0' in agent_down
    assert "last_over_time(imagecap_node_agent_up[10m]) == 0" in agent_down
    assert re.search(r"imagecap_node_image_gc_high_threshold_ratio\[10m\]\) - 0\.1\)", rules["ImageCapImageFsNearGC"]["expr"])
    assert "(more than 20 minutes)" in rules["ImageCapExporterStale"]["annotations"]["description"]

    assert (dash["uid"], dash["title"], dash["tags"], dash["refresh"], dash["timezone"]) == \
        ("imagecap-custom", "Image cap (custom)", ["custom"], "5m", "utc")
    vs = {v["name"]: v for v in dash["templating"]["list"]}
    assert vs["cluster"]["query"]["query"] == "label_values(imagecap_build_info, k8s_cluster)"
    for expr in exprs(dash):
        assert 'k8s_cluster=~"$cluster"' in expr and 'cluster=~"$cluster"' not in expr.replace("k8s_cluster", ""), expr
    assert any("bool 0.8)" in e for e in exprs(dash))
    headroom = next(q for p in dash["panels"] for q in [p, *p.get("panels", [])]
                    if q["title"] == "Headroom to the image GC threshold")
    assert "Below 10% the alert ImageCapImageFsNearGC fires" in headroom["description"]
    assert headroom["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "green", "value": 0.1}


def test_custom_config_changes_only_what_it_sets(default, custom):
    """Everything not configured renders as in the default: same alerts, groups and severities."""
    base = yaml.safe_load(default[0].read_text())
    doc = custom[0]
    assert [g["name"] for g in doc["groups"]] == [g["name"] for g in base["groups"]]
    assert {n: r["labels"] for n, r in alerts(doc).items()} == {n: r["labels"] for n, r in alerts(base).items()}
    base_dash = json.loads(default[1].read_text())
    assert [(p["id"], p["title"], p["gridPos"]) for p in custom[1]["panels"]] == \
        [(p["id"], p["title"], p["gridPos"]) for p in base_dash["panels"]]


def test_mixin_sources_are_formatted():
    """jsonnetfmt (Debian's jsonnet package) leaves every mixin source as it is."""
    sources = sorted((ROOT / "mixin").rglob("*.libsonnet"))
    assert len(sources) >= 5, sources
    res = subprocess.run(["jsonnetfmt", "--test", *map(str, sources)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"run jsonnetfmt -i on: {res.stdout}{res.stderr}"


def test_generator_rejects_a_broken_mixin(tmp_path):
    bad = tmp_path / "bad.jsonnet"
    bad.write_text("(import 'mixin.libsonnet') + { _config+:: { alertFor: {} } }")
    out = tmp_path / "out"
    res = subprocess.run([str(GENERATE), "--mixin", str(bad), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "ImageCapNodeAtCap" in res.stderr, res.stderr
    # Nothing half-written.
    assert not (out / "alerts" / "imagecap.rules.yaml").exists()
    assert not (out / "dashboards" / "imagecap.json").exists()
