"""The Helm chart (charts/imagecap-exporter) and the container image definition.

The chart is linted and rendered by Helm's own Go SDK (the helm-python-sdk package
binds libhelm_c, a C ABI over Helm v4's packages), every rendered object is validated
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict mode), the two
Prometheus Operator objects against the fields the operator's CRDs require, and the
rendered arguments and configuration are fed to the real exporter binary.
"""
from __future__ import annotations

import copy
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import requests
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, latest_version

from harness import BIN, EXAMPLES, ROOT, Exporter, Proc, wait_for

CHART = ROOT / "charts" / "imagecap-exporter"
RULES = ROOT / "alerts" / "imagecap.rules.yaml"
DASHBOARD = ROOT / "dashboards" / "imagecap.json"
RELEASE = "imagecap"
NAMESPACE = "monitoring"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), a current one and
# the newest kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", "1.34.0", latest_version())

ALL_ON = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "kubeletConfigz": {"enabled": True},
    "kubeletStats": {"enabled": True},
    "agent": {"enabled": True},
}
TOGGLES = {
    "default": {},
    **{name: {name: {"enabled": True}} for name in ALL_ON},
    "all": ALL_ON,
}
CORE_OBJECTS = {
    ("ServiceAccount", "imagecap-imagecap-exporter"),
    ("ClusterRole", "imagecap-imagecap-exporter"),
    ("ClusterRoleBinding", "imagecap-imagecap-exporter"),
    ("ConfigMap", "imagecap-imagecap-exporter"),
    ("Service", "imagecap-imagecap-exporter"),
    ("Deployment", "imagecap-imagecap-exporter"),
}
OPTIONAL_OBJECTS = {
    "serviceMonitor": {("ServiceMonitor", "imagecap-imagecap-exporter")},
    "prometheusRule": {("PrometheusRule", "imagecap-imagecap-exporter")},
    "grafanaDashboard": {("ConfigMap", "imagecap-imagecap-exporter-dashboard")},
    "networkPolicy": {("NetworkPolicy", "imagecap-imagecap-exporter")},
    "kubeletConfigz": set(),
    "kubeletStats": set(),
    "agent": {("DaemonSet", "imagecap-imagecap-exporter-agent"), ("Service", "imagecap-imagecap-exporter-agent"),
              ("Role", "imagecap-imagecap-exporter-agents"), ("RoleBinding", "imagecap-imagecap-exporter-agents")},
}
NODES_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
PROXY_RULE = {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}
SHA = "0123456789abcdef" * 4

# Wanted image sources (prepull.sources): each toggle, the `sources` list it must write
# to the config file, the rules it adds to the ClusterRole, and the Roles it creates
# as (name, namespace, rule).
NUBLADO_URL = "http://nublado-controller.nublado/nublado/spawner/v1/prepulls"
TOKEN_FILE = "/var/run/secrets/nublado/token"
FLEDGED_RULE = {"apiGroups": ["kubefledged.io"], "resources": ["imagecaches"], "verbs": ["get", "list", "watch"]}
DAEMONSETS_RULE = {"apiGroups": ["apps"], "resources": ["daemonsets"], "verbs": ["get", "list", "watch"]}
LAB_TOLERATION = {"key": "dedicated", "operator": "Equal", "value": "lab", "effect": "NoSchedule"}
PULLER = "component=continuous-image-puller"


def with_sources(**sources) -> dict:
    return {"prepull": {"sources": sources}}


SOURCES_ALL = {"prepull": {
    "tolerations": [LAB_TOLERATION],
    "patterns": [r"^ghcr\.io/lsst-sqre/sciplat-lab:r[0-9]+_[0-9]+_[0-9]+$",
                 {"match": r"^ghcr\.io/lsst-sqre/sciplat-lab:w_", "newest": 2}],
    "sources": {
        "nublado": {"enabled": True, "tokenSecret": {"name": "imagecap-nublado"}},
        "kubeFledged": {"enabled": True, "namespace": "kube-fledged"},
        "daemonSets": {"enabled": True, "namespace": "jhub", "selector": PULLER},
    },
}}
SOURCE_TOGGLES = {
    "nublado": with_sources(nublado={"enabled": True}),
    "nublado-token": with_sources(nublado={"enabled": True, "tokenSecret": {"name": "imagecap-nublado"}}),
    "kube-fledged-all-namespaces": with_sources(kubeFledged={"enabled": True}),
    "kube-fledged-namespace": with_sources(kubeFledged={"enabled": True, "namespace": "kube-fledged"}),
    "daemonsets-all-namespaces": with_sources(daemonSets={"enabled": True}),
    "daemonsets-namespace": with_sources(daemonSets={"enabled": True, "namespace": "jhub", "selector": PULLER}),
    "all-sources": {**ALL_ON, **SOURCES_ALL},
}
SOURCE_EXPECTED = {
    "nublado": ([{"nublado": {"url": NUBLADO_URL, "interval": "60s", "timeout": "10s"}}], [], []),
    "nublado-token": ([{"nublado": {"url": NUBLADO_URL, "interval": "60s", "timeout": "10s",
                                    "tokenFile": TOKEN_FILE}}], [], []),
    "kube-fledged-all-namespaces": ([{"kubeFledged": {}}], [FLEDGED_RULE], []),
    "kube-fledged-namespace": ([{"kubeFledged": {"namespace": "kube-fledged"}}], [],
                               [("imagecap-imagecap-exporter-kube-fledged", "kube-fledged", FLEDGED_RULE)]),
    "daemonsets-all-namespaces": ([{"daemonSets": {}}], [DAEMONSETS_RULE], []),
    "daemonsets-namespace": ([{"daemonSets": {"namespace": "jhub", "selector": PULLER}}], [],
                             [("imagecap-imagecap-exporter-daemonsets", "jhub", DAEMONSETS_RULE)]),
    "all-sources": ([{"nublado": {"url": NUBLADO_URL, "interval": "60s", "timeout": "10s", "tokenFile": TOKEN_FILE}},
                     {"kubeFledged": {"namespace": "kube-fledged"}},
                     {"daemonSets": {"namespace": "jhub", "selector": PULLER}}],
                    [PROXY_RULE],
                    [("imagecap-imagecap-exporter-kube-fledged", "kube-fledged", FLEDGED_RULE),
                     ("imagecap-imagecap-exporter-daemonsets", "jhub", DAEMONSETS_RULE),
                     ("imagecap-imagecap-exporter-agents", NAMESPACE,
                      {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["list", "watch"]})]),
}
# Every key the exporter's config file may hold (anything else is an error there).
CONFIG_KEYS = {"defaultMaxImages", "prepull"}
PREPULL_KEYS = {"images", "patterns", "nodeSelector", "tolerations", "sources"}
SOURCE_KEYS = {"nublado": {"url", "tokenFile", "interval", "timeout"},
               "kubeFledged": {"namespace"},
               "daemonSets": {"namespace", "selector"}}


# --- helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chart():
    c = helm.Chart.load(CHART)
    yield c
    c.close()


def render_files(chart, values=None, namespace=NAMESPACE) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=namespace)


def parse_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(chart, values=None, namespace=NAMESPACE) -> list[dict]:
    docs = []
    for path, text in sorted(render_files(chart, values, namespace).items()):
        if not path.endswith("NOTES.txt"):
            docs.extend(parse_docs(text))
    return docs


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container(docs: list[dict]) -> dict:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["exporter"]
    return pod["containers"][0]


def exporter_config(docs: list[dict]) -> dict:
    cm = only(docs, "ConfigMap", "imagecap-imagecap-exporter")
    return yaml.safe_load(cm["data"]["config.yaml"])


def rules_file_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]


def schema_error(chart, values) -> str:
    with pytest.raises(helm.HelmValuesError) as exc:
        render(chart, values)
    return str(exc.value)


# The fields the Prometheus Operator's CRDs (monitoring.coreos.com/v1) require or
# constrain for what this chart writes; kubernetes-validate has no schema for CRDs.
PROM_DURATION = {"type": "string", "minLength": 1,
                 "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                            r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {"type": "object", "required": ["name", "namespace"],
               "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"},
                              "labels": STRING_MAP, "annotations": STRING_MAP}}
RELABEL_CONFIG = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"}, "targetLabel": {"type": "string"},
        "regex": {"type": "string"}, "modulus": {"type": "integer"},
        "replacement": {"type": "string"},
        "action": {"enum": ["replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep",
                            "lowercase", "uppercase", "keepequal", "dropequal",
                            "Replace", "Keep", "Drop", "HashMod", "LabelMap", "LabelDrop", "LabelKeep",
                            "Lowercase", "Uppercase", "KeepEqual", "DropEqual"]},
    },
}

# Prometheus Operator's SecretKeySelector, SecretOrConfigMap and TLSConfig.
SECRET_KEY_SELECTOR = {"type": "object", "required": ["key"], "additionalProperties": False,
                       "properties": {"name": {"type": "string"}, "key": {"type": "string"},
                                      "optional": {"type": "boolean"}}}
SECRET_OR_CONFIGMAP = {"type": "object", "additionalProperties": False, "maxProperties": 1,
                       "properties": {"secret": SECRET_KEY_SELECTOR, "configMap": SECRET_KEY_SELECTOR}}
TLS_CONFIG = {"type": "object", "additionalProperties": False,
              "properties": {"ca": SECRET_OR_CONFIGMAP, "cert": SECRET_OR_CONFIGMAP,
                             "keySecret": SECRET_KEY_SELECTOR, "serverName": {"type": "string"},
                             "insecureSkipVerify": {"type": "boolean"}, "caFile": {"type": "string"},
                             "certFile": {"type": "string"}, "keyFile": {"type": "string"}}}

SERVICEMONITOR_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {"type": "object", "additionalProperties": False, "minProperties": 1,
                             "properties": {"matchLabels": STRING_MAP,
                                            "matchExpressions": {"type": "array", "items": {"type": "object"}}}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port", "interval"], "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": PROM_DURATION, "scrapeTimeout": PROM_DURATION,
                            "relabelings": {"type": "array", "items": RELABEL_CONFIG},
                            "metricRelabelings": {"type": "array", "items": RELABEL_CONFIG},
                            "tlsConfig": TLS_CONFIG,
                            "basicAuth": {"type": "object", "additionalProperties": False,
                                          "properties": {"username": SECRET_KEY_SELECTOR,
                                                         "password": SECRET_KEY_SELECTOR}},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUSRULE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": OBJECT_META,
        "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": PROM_DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                            "properties": {
                                "alert": {"type": "string", "minLength": 1},
                                "record": {"type": "string", "minLength": 1},
                                "expr": {"type": ["string", "integer"], "minLength": 1},
                                "for": PROM_DURATION, "keep_firing_for": PROM_DURATION,
                                "labels": STRING_MAP, "annotations": STRING_MAP,
                            },
                        }},
                    },
                },
            }},
        },
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICEMONITOR_SCHEMA, "PrometheusRule": PROMETHEUSRULE_SCHEMA}


def validate_object(doc: dict, version: str):
    """Validates one rendered object against Kubernetes `version` (or a CRD schema)."""
    if doc["kind"] in CRD_SCHEMAS:
        with pytest.raises(SchemaNotFoundError):  # no built-in schema: checked here instead
            kubernetes_validate.validate(doc, version, strict=True)
        jsonschema.Draft202012Validator(CRD_SCHEMAS[doc["kind"]]).validate(doc)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


# --- lint and render ---------------------------------------------------------------


@pytest.mark.parametrize("toggle", {**TOGGLES, **SOURCE_TOGGLES})
def test_lint_is_clean(toggle):
    values = {**TOGGLES, **SOURCE_TOGGLES}[toggle]
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.34.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); nothing worse is allowed.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_bad_values():
    report = helm.lint(CHART, {"mode": "push"}, namespace=NAMESPACE)
    assert report["errors"], report
    assert any("/mode" in e and "'push'" in e for e in report["errors"]), report["errors"]


@pytest.mark.parametrize("toggle", TOGGLES)
def test_renders_the_expected_objects(chart, toggle):
    values = TOGGLES[toggle]
    expected = set(CORE_OBJECTS)
    for name in values:
        expected |= OPTIONAL_OBJECTS[name]
    docs = render(chart, values)
    got = [(d["kind"], d["metadata"]["name"]) for d in docs]
    if "agent" in values and "networkPolicy" in values:
        expected.add(("NetworkPolicy", "imagecap-imagecap-exporter-agent"))
    assert sorted(got) == sorted(expected)
    for d in docs:
        labels = d["metadata"]["labels"]
        agent = d["metadata"]["name"].endswith("-agent")
        assert labels["app.kubernetes.io/name"] == ("imagecap-exporter-agent" if agent else "imagecap-exporter")
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "imagecap-exporter-0.1.0"
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("toggle", {**TOGGLES, **SOURCE_TOGGLES})
def test_every_object_validates_against_kubernetes(chart, toggle, version):
    docs = render(chart, {**TOGGLES, **SOURCE_TOGGLES}[toggle])
    assert len(docs) >= len(CORE_OBJECTS)
    for doc in docs:
        validate_object(doc, version)


def test_the_validation_catches_mistakes(chart):
    """Strict validation rejects an unknown field and a wrong type, so the tests above
    would catch a template typo; the CRD schemas reject what the operator rejects."""
    docs = render(chart, ALL_ON)
    deploy = copy.deepcopy(only(docs, "Deployment"))
    deploy["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deploy, "1.34.0")
    deploy = copy.deepcopy(only(docs, "Deployment"))
    deploy["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deploy, "1.34.0")
    sm = copy.deepcopy(only(docs, "ServiceMonitor"))
    sm["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(sm, "1.34.0")
    rule = copy.deepcopy(only(docs, "PrometheusRule"))
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError):
        validate_object(rule, "1.34.0")


def test_client_dry_run_install_renders_the_same_objects(chart):
    """helm install --dry-run=client (what `helm template` runs): checks Chart.yaml's
    kubeVersion against Helm's default capabilities, orders the objects for applying,
    and contacts no cluster."""
    kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
    with helm.Config(kubeconfig_content=kubeconfig, namespace=NAMESPACE, storage_driver="memory") as cfg:
        release = cfg.install(CHART, RELEASE, ALL_ON, namespace=NAMESPACE, dry_run="client")
    docs = parse_docs(release["manifest"])
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in render(chart, ALL_ON))
    # RBAC and the ServiceAccount come before the Deployment that uses them.
    kinds = [d["kind"] for d in docs]
    assert kinds.index("ServiceAccount") < kinds.index("Deployment")
    assert kinds.index("ClusterRoleBinding") < kinds.index("Deployment")
    assert "port-forward svc/imagecap-imagecap-exporter 9754:9754" in release["notes"]
    assert chart.metadata["kubeVersion"] == ">=1.25.0-0"


# --- RBAC ---------------------------------------------------------------------------


@pytest.mark.parametrize("toggle", TOGGLES)
def test_rbac_grants_only_what_the_toggles_need(chart, toggle):
    values = TOGGLES[toggle]
    docs = render(chart, values)
    role = only(docs, "ClusterRole")
    expected = [NODES_RULE]
    if values.get("kubeletConfigz", {}).get("enabled") or values.get("kubeletStats", {}).get("enabled"):
        expected.append(PROXY_RULE)
    assert role["rules"] == expected
    roles = [d for d in docs if d["kind"] == "Role"]
    if values.get("agent", {}).get("enabled"):
        # The agents' EndpointSlices, read in the release namespace only.
        [r] = roles
        assert r["metadata"]["namespace"] == NAMESPACE
        assert r["rules"] == [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                               "verbs": ["list", "watch"]}]
    else:
        assert not roles and not [d for d in docs if d["kind"] == "RoleBinding"]
    binding = only(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    sa = only(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert sa["automountServiceAccountToken"] is True
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is True
    args = container(docs)["args"]
    assert ("--kubelet-configz" in args or "--kubelet-stats" in args) == (PROXY_RULE in expected)


@pytest.mark.parametrize("release, values, name", [
    ("imagecap-exporter", {}, "imagecap-exporter"),
    ("prod-imagecap-exporter", {}, "prod-imagecap-exporter"),
    ("imagecap", {"nameOverride": "icx"}, "imagecap-icx"),
    ("imagecap", {"fullnameOverride": "node-images"}, "node-images"),
    ("x" * 53, {}, ("x" * 53 + "-imagecap-exporter")[:63].rstrip("-")),
])
def test_object_names(chart, release, values, name):
    docs = []
    for path, text in chart.render(values, name=release, namespace=NAMESPACE).items():
        if not path.endswith("NOTES.txt"):
            docs.extend(parse_docs(text))
    assert {d["metadata"]["name"] for d in docs} == {name}
    role = only(docs, "ClusterRole")
    assert only(docs, "ClusterRoleBinding")["roleRef"]["name"] == role["metadata"]["name"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["configMap"]["name"] == name


def test_rbac_and_service_account_can_be_left_out(chart):
    docs = render(chart, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "nodes-reader"}})
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "ServiceAccount")]
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "nodes-reader"


@pytest.mark.parametrize("toggle", SOURCE_TOGGLES)
def test_rbac_follows_the_sources(chart, toggle):
    """A source that reads every namespace adds a ClusterRole rule; one restricted to a
    namespace gets a Role and RoleBinding there instead. Only get, list and watch."""
    _, cluster_rules, roles = SOURCE_EXPECTED[toggle]
    docs = render(chart, SOURCE_TOGGLES[toggle])
    assert only(docs, "ClusterRole")["rules"] == [NODES_RULE, *cluster_rules]
    sa = only(docs, "ServiceAccount")["metadata"]["name"]
    got_roles = [d for d in docs if d["kind"] == "Role"]
    got_bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    assert sorted((r["metadata"]["name"], r["metadata"]["namespace"]) for r in got_roles) == \
        sorted((name, ns) for name, ns, _ in roles)
    assert len(got_bindings) == len(roles)
    for name, ns, rule in roles:
        role = only(docs, "Role", name)
        assert role["metadata"]["namespace"] == ns
        assert role["rules"] == [rule]
        binding = only(docs, "RoleBinding", name)
        assert binding["metadata"]["namespace"] == ns
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        # The exporter's ServiceAccount lives in the release namespace, not the source's.
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    # Nothing broader than reading, whatever the toggle.
    for d in docs:
        for rule in d.get("rules", []):
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
            assert "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule


def test_disabled_sources_grant_nothing(chart):
    """Namespaces and selectors of a disabled source are ignored: no rule, no Role."""
    docs = render(chart, with_sources(kubeFledged={"enabled": False, "namespace": "kube-fledged"},
                                      daemonSets={"enabled": False, "selector": PULLER}))
    assert only(docs, "ClusterRole")["rules"] == [NODES_RULE]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    assert "sources" not in exporter_config(docs)["prepull"]


def test_source_rbac_can_be_left_out(chart):
    docs = render(chart, {**SOURCES_ALL, "rbac": {"create": False}})
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")]


def test_source_roles_are_named_within_63_characters(chart):
    """Both sources in one namespace: two Roles with distinct names of at most 63 characters."""
    docs = render(chart, {"fullnameOverride": "x" * 60, **with_sources(
        kubeFledged={"enabled": True, "namespace": "jhub"}, daemonSets={"enabled": True, "namespace": "jhub"})})
    for kind in ("Role", "RoleBinding"):
        names = [d["metadata"]["name"] for d in docs if d["kind"] == kind]
        assert len(names) == len(set(names)) == 2, names
        assert all(len(n) <= 63 and not n.endswith("-") for n in names), names
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert only(docs, "Role", binding["roleRef"]["name"])["metadata"]["namespace"] == "jhub"


# --- Deployment ---------------------------------------------------------------------


def test_deployment_security_context(chart):
    docs = render(chart)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert (sc["runAsUser"], sc["runAsGroup"]) == (65532, 65532)
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_deployment_defaults(chart):
    docs = render(chart)
    deploy = only(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    c = container(docs)
    assert c["image"] == "ghcr.io/lsst-sqre/imagecap-exporter:0.1.0"
    assert c["ports"] == [{"name": "metrics", "containerPort": 9754, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTP"}
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    assert c["args"] == [
        "--log-format", "json", "serve",
        "--web.listen-address", "0.0.0.0:9754",
        "--config", "/etc/imagecap-exporter/config.yaml",
        "--mode", "watch",
        "--poll-interval", "60s",
        "--default-max-images", "50",
    ]
    assert c["volumeMounts"] == [{"name": "config", "mountPath": "/etc/imagecap-exporter", "readOnly": True}]
    pod = deploy["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "imagecap-imagecap-exporter"}}]
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "imagePullSecrets"):
        assert key not in pod


def test_web_config_secret(chart):
    values = {
        "webConfig": {"secretName": "imagecap-web", "tls": True},
        "serviceMonitor": {
            "enabled": True,
            "tlsConfig": {"ca": {"secret": {"name": "imagecap-web", "key": "ca.crt"}}, "serverName": "imagecap"},
            "basicAuth": {"username": {"name": "scrape", "key": "user"},
                          "password": {"name": "scrape", "key": "password"}},
        },
    }
    docs = render(chart, values)
    c = container(docs)
    i = c["args"].index("--web.config.file")
    assert c["args"][i + 1] == "/etc/imagecap-exporter/web/web.yml"
    assert {"name": "web-config", "mountPath": "/etc/imagecap-exporter/web", "readOnly": True} in c["volumeMounts"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "web-config", "secret": {"secretName": "imagecap-web"}} in pod["volumes"]
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    endpoint = only(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == values["serviceMonitor"]["tlsConfig"]
    assert endpoint["basicAuth"] == values["serviceMonitor"]["basicAuth"]
    for doc in docs:
        validate_object(doc, "1.34.0")
    # Without TLS the scrape stays plain even with basic auth.
    plain = render(chart, {"webConfig": {"secretName": "imagecap-web"}, "serviceMonitor": {"enabled": True}})
    assert only(plain, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"
    assert container(plain)["livenessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_nublado_token_secret_is_mounted_key_only_and_read_only(chart):
    values = with_sources(nublado={"enabled": True, "tokenSecret": {"name": "imagecap-nublado", "key": "bearer"}})
    docs = render(chart, values)
    c = container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = [m for m in c["volumeMounts"] if m["name"] == "nublado-token"]
    assert mounts == [{"name": "nublado-token", "mountPath": "/var/run/secrets/nublado", "readOnly": True}]
    volumes = [v for v in pod["volumes"] if v["name"] == "nublado-token"]
    # Only the one key, as the file "token", readable by owner and group (fsGroup) only.
    assert volumes == [{"name": "nublado-token", "secret": {
        "secretName": "imagecap-nublado", "items": [{"key": "bearer", "path": "token"}], "defaultMode": 0o440}}]
    token_file = exporter_config(docs)["prepull"]["sources"][0]["nublado"]["tokenFile"]
    assert token_file == f"{mounts[0]['mountPath']}/{volumes[0]['secret']['items'][0]['path']}" == TOKEN_FILE
    assert pod["securityContext"]["fsGroup"] == 65532
    for doc in docs:
        validate_object(doc, "1.34.0")
    # The token is mounted in a directory of its own, not over the config or web config.
    assert len({m["mountPath"] for m in c["volumeMounts"]}) == len(c["volumeMounts"])


@pytest.mark.parametrize("values", [
    with_sources(nublado={"enabled": True}),
    with_sources(nublado={"enabled": True, "tokenSecret": {"name": ""}}),
    with_sources(nublado={"enabled": False, "tokenSecret": {"name": "imagecap-nublado"}}),
], ids=["no-secret", "empty-name", "source-off"])
def test_no_token_without_a_secret_or_without_the_source(chart, values):
    docs = render(chart, values)
    c = container(docs)
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert c["volumeMounts"] == [{"name": "config", "mountPath": "/etc/imagecap-exporter", "readOnly": True}]
    assert pod["volumes"] == [{"name": "config", "configMap": {"name": "imagecap-imagecap-exporter"}}]
    for source in exporter_config(docs)["prepull"].get("sources", []):
        assert "tokenFile" not in source["nublado"]


def test_deployment_args_follow_values(chart):
    docs = render(chart, {
        "mode": "poll", "pollInterval": "5m", "defaultMaxImages": -1,
        "nodeLabelSelector": "pool=lab,!gpu", "logFormat": "text",
        "kubeletConfigz": {"enabled": True, "interval": "30m"}, "extraArgs": ["--page-size", "100"],
    })
    assert container(docs)["args"] == [
        "--log-format", "text", "serve",
        "--web.listen-address", "0.0.0.0:9754",
        "--config", "/etc/imagecap-exporter/config.yaml",
        "--mode", "poll",
        "--poll-interval", "5m",
        "--default-max-images", "-1",
        "--node-selector", "pool=lab,!gpu",
        "--kubelet-configz",
        "--kubelet-configz-interval", "30m",
        "--page-size", "100",
    ]


def test_deployment_scheduling_and_metadata_values(chart):
    values = {
        "image": {"repository": "registry.example.com:5000/ops/imagecap-exporter", "digest": f"sha256:{SHA}",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infra"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "100m", "memory": "96Mi"}, "limits": {"cpu": 1, "memory": "256Mi"}},
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001},
    }
    docs = render(chart, values)
    tpl = only(docs, "Deployment")["spec"]["template"]
    pod = tpl["spec"]
    c = container(docs)
    assert c["image"] == f"registry.example.com:5000/ops/imagecap-exporter@sha256:{SHA}"
    assert c["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert tpl["metadata"]["annotations"]["example.com/team"] == "platform"
    assert tpl["metadata"]["labels"]["team"] == "platform"
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]
    assert pod["affinity"] == values["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert c["resources"] == values["resources"]
    assert (pod["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]) == (10001, 10001)
    # The Service still selects the pod whatever extra labels it carries.
    selector = only(docs, "Service")["spec"]["selector"]
    assert selector.items() <= tpl["metadata"]["labels"].items()


def test_config_checksum_rolls_the_pod_only_when_the_config_changes(chart):
    def checksum(values):
        docs = render(chart, values)
        return only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"], docs

    base, docs = checksum({})
    cfg_text = only(docs, "ConfigMap", "imagecap-imagecap-exporter")["data"]["config.yaml"]
    assert base == hashlib.sha256(cfg_text.rstrip("\n").encode()).hexdigest()
    assert checksum({"podAnnotations": {"a": "b"}, "mode": "poll"})[0] == base
    assert checksum({"prepull": {"images": ["busybox:1.36"]}})[0] != base
    assert checksum({"defaultMaxImages": 110})[0] != base
    assert checksum(with_sources(daemonSets={"enabled": True}))[0] != base
    assert checksum({"prepull": {"tolerations": [LAB_TOLERATION]}})[0] != base
    # Sources that are off, and the NetworkPolicy values, are not part of the config.
    assert checksum(with_sources(nublado={"enabled": False, "url": "https://elsewhere.example/x"}))[0] == base
    assert checksum({"networkPolicy": {"enabled": True, "egress": {"nublado": {"ports": [80]}}}})[0] == base


# --- ConfigMap ----------------------------------------------------------------------


def test_configmap_holds_the_exporter_config(chart):
    assert exporter_config(render(chart)) == {
        "defaultMaxImages": 50, "prepull": {"images": [], "patterns": [], "nodeSelector": {}}}
    values = {
        "defaultMaxImages": -1,
        "prepull": {
            "images": ["ghcr.io/lsst-sqre/sciplat-lab:w_2024_10", "busybox:1.36",
                       f"registry.example.com:5000/team/app:v1@sha256:{SHA}"],
            "patterns": [r"^ghcr\.io/lsst-sqre/sciplat-lab:(w_2024_1[0-9]|r[0-9]+_[0-9]+_[0-9]+)$",
                         "'quoted' #not-a-comment: {x}"],
            "nodeSelector": {"nublado.lsst.io/permitted": "true", "pool": "lab"},
        },
    }
    assert exporter_config(render(chart, values)) == values
    # A null (which Helm turns into "unset") still writes the keys the exporter expects.
    nulls = {"prepull": {"images": None, "patterns": None, "nodeSelector": None}}
    assert exporter_config(render(chart, nulls)) == {
        "defaultMaxImages": 50, "prepull": {"images": [], "patterns": [], "nodeSelector": {}}}


def test_configmap_matches_the_example_config(chart):
    """The example config, given as values, renders to the same config file content."""
    example = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    assert exporter_config(render(chart, example)) == example


def test_defaults_write_neither_tolerations_nor_sources(chart):
    """An exporter that predates them still reads the default config, and the config
    checksum of existing installs does not change."""
    prepull = exporter_config(render(chart))["prepull"]
    assert set(prepull) == {"images", "patterns", "nodeSelector"}
    nulls = {"prepull": {"tolerations": None, "sources": None}}
    assert exporter_config(render(chart, nulls)) == exporter_config(render(chart))
    nulls = with_sources(nublado=None, kubeFledged=None, daemonSets=None)
    assert exporter_config(render(chart, nulls)) == exporter_config(render(chart))


@pytest.mark.parametrize("toggle", SOURCE_TOGGLES)
def test_sources_render_exactly_the_config_keys(chart, toggle):
    """The rendered config parses, holds the sources in order (Nublado, kube-fledged,
    DaemonSets) as one-key maps, and no key the exporter does not know."""
    sources, _, _ = SOURCE_EXPECTED[toggle]
    cm = only(render(chart, SOURCE_TOGGLES[toggle]), "ConfigMap", "imagecap-imagecap-exporter")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert set(cfg) <= CONFIG_KEYS
    assert set(cfg["prepull"]) <= PREPULL_KEYS
    assert cfg["prepull"]["sources"] == sources
    for source in cfg["prepull"]["sources"]:
        (kind, settings), = source.items()
        assert set(settings) <= SOURCE_KEYS[kind], (kind, settings)
        assert all(isinstance(v, str) and v for v in settings.values()), settings


def test_tolerations_and_newest_patterns_are_written_as_given(chart):
    cfg = exporter_config(render(chart, SOURCES_ALL))
    assert cfg["prepull"]["tolerations"] == [LAB_TOLERATION]
    assert cfg["prepull"]["patterns"] == SOURCES_ALL["prepull"]["patterns"]
    assert cfg["prepull"]["patterns"][1] == {"match": r"^ghcr\.io/lsst-sqre/sciplat-lab:w_", "newest": 2}
    tolerations = [LAB_TOLERATION, {"operator": "Exists"},
                   {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                    "tolerationSeconds": 300}]
    assert exporter_config(render(chart, {"prepull": {"tolerations": tolerations}}))["prepull"]["tolerations"] \
        == tolerations


def test_nublado_optional_settings_follow_values(chart):
    values = with_sources(nublado={"enabled": True, "url": "https://data.example.org/nublado/spawner/v1/prepulls",
                                   "interval": "5m", "timeout": "30s"})
    assert exporter_config(render(chart, values))["prepull"]["sources"] == [{"nublado": {
        "url": "https://data.example.org/nublado/spawner/v1/prepulls", "interval": "5m", "timeout": "30s"}}]
    # A null removes the default: the key is left out and the exporter's default applies.
    values = with_sources(nublado={"enabled": True, "interval": None, "timeout": None})
    assert exporter_config(render(chart, values))["prepull"]["sources"] == [{"nublado": {"url": NUBLADO_URL}}]


# --- invalid values -----------------------------------------------------------------


@pytest.mark.parametrize("values, expected", [
    ({"defaultMaxImages": -2}, ["'/defaultMaxImages'", "got -2, want -1"]),
    ({"defaultMaxImages": 1.5}, ["'/defaultMaxImages'", "want integer"]),
    ({"defaultMaxImages": "50"}, ["'/defaultMaxImages'", "got string, want integer"]),
    ({"defaultMaxImages": None}, ["missing property 'defaultMaxImages'"]),
    ({"prepull": {"images": ["busybox:1.36", "Not A Ref"]}}, ["'/prepull/images/1'", "'Not A Ref' does not match"]),
    ({"mode": "push"}, ["'/mode'", "'push' does not match pattern '^(watch|poll)$'"]),
    ({"pollInterval": "5 minutes"}, ["'/pollInterval'", "'5 minutes' does not match"]),
    ({"pollInterval": "0s"}, ["'/pollInterval'", "'0s' does not match"]),
    ({"logFormat": "xml"}, ["'/logFormat'", "'xml' does not match"]),
    ({"kubeletConfigz": {"enabled": True, "interval": "soon"}},
     ["'/kubeletConfigz/interval'", "'soon' does not match"]),
    ({"prepull": {"nodeSelector": {"pool": 1}}}, ["'/prepull/nodeSelector/pool'", "want string"]),
    ({"prepull": {"patterns": [""]}}, ["'/prepull/patterns/0'"]),
    ({"prepull": {"image": ["busybox"]}}, ["'/prepull'", "'image' not allowed"]),
    ({"replicas": 2}, ["'replicas' not allowed"]),
    ({"resources": {"requests": {"cpu": "lots"}}}, ["'/resources/requests/cpu'", "'lots' does not match"]),
    ({"securityContext": {"runAsUser": 0}}, ["'/securityContext/runAsUser'", "got 0, want 1"]),
    ({"serviceMonitor": {"interval": "30 s"}}, ["'/serviceMonitor/interval'", "'30 s' does not match"]),
    ({"image": {"digest": "sha256:abc"}}, ["'/image/digest'", "'sha256:abc' does not match"]),
    ({"networkPolicy": {"egress": {"apiServer": {"ports": [70000]}}}},
     ["'/networkPolicy/egress/apiServer/ports/0'", "got 70,000, want 65,535"]),
    # Wanted image sources.
    (with_sources(nublado={"enabled": True, "interval": 60}),
     ["'/prepull/sources/nublado/interval'", "got number, want string"]),
    (with_sources(nublado={"enabled": True, "timeout": "ten seconds"}),
     ["'/prepull/sources/nublado/timeout'", "'ten seconds' does not match"]),
    (with_sources(nublado={"enabled": True, "interval": "0s"}),
     ["'/prepull/sources/nublado/interval'", "'0s' does not match"]),
    (with_sources(nublado={"enabled": "yes"}), ["'/prepull/sources/nublado/enabled'", "want boolean"]),
    (with_sources(nublado={"enabled": True, "url": "nublado-controller.nublado/prepulls"}),
     ["'/prepull/sources/nublado/url'", "does not match"]),
    (with_sources(nublado={"enabled": True, "url": ""}), ["'/prepull/sources/nublado/url'", "does not match"]),
    (with_sources(nublado={"enabled": True, "tokenFile": "/token"}),
     ["'/prepull/sources/nublado'", "'tokenFile' not allowed"]),
    (with_sources(nublado={"tokenSecret": {"name": "Bad_Name"}}),
     ["'/prepull/sources/nublado/tokenSecret/name'", "'Bad_Name' does not match"]),
    (with_sources(nublado={"tokenSecret": {"key": "a/b"}}),
     ["'/prepull/sources/nublado/tokenSecret/key'", "'a/b' does not match"]),
    (with_sources(nublado={"tokenSecret": {"name": "s", "namespace": "other"}}),
     ["'/prepull/sources/nublado/tokenSecret'", "'namespace' not allowed"]),
    (with_sources(kubeFledged={"enabled": True, "namespace": "Kube_Fledged"}),
     ["'/prepull/sources/kubeFledged/namespace'", "'Kube_Fledged' does not match"]),
    (with_sources(kubeFledged={"enabled": True, "selector": "a=b"}),
     ["'/prepull/sources/kubeFledged'", "'selector' not allowed"]),
    (with_sources(daemonSets={"enabled": True, "selector": ["component=continuous-image-puller"]}),
     ["'/prepull/sources/daemonSets/selector'", "got array, want string"]),
    (with_sources(daemonsets={"enabled": True}), ["'/prepull/sources'", "'daemonsets' not allowed"]),
    (with_sources(registry={"enabled": True}), ["'/prepull/sources'", "'registry' not allowed"]),
    ({"prepull": {"sources": [{"kubeFledged": {}}]}}, ["'/prepull/sources'", "got array, want object"]),
    ({"prepull": {"tolerations": [{"key": "dedicated", "operator": "In"}]}},
     ["'/prepull/tolerations/0/operator'"]),
    ({"prepull": {"tolerations": [{"key": "dedicated", "effect": "NoPull"}]}},
     ["'/prepull/tolerations/0/effect'"]),
    ({"prepull": {"tolerations": [{"key": "dedicated", "tolerance": 1}]}},
     ["'/prepull/tolerations/0'", "'tolerance' not allowed"]),
    ({"prepull": {"tolerations": {"key": "dedicated"}}}, ["'/prepull/tolerations'", "got object, want array"]),
    ({"prepull": {"patterns": [{"match": "^x$", "newest": 0}]}}, ["'/prepull/patterns/0'"]),
    ({"prepull": {"patterns": [{"match": "^x$"}]}}, ["'/prepull/patterns/0'"]),
    ({"prepull": {"patterns": [{"match": "^x$", "newest": 2, "oldest": 1}]}}, ["'/prepull/patterns/0'"]),
    ({"networkPolicy": {"egress": {"nublado": {"ports": []}}}},
     ["'/networkPolicy/egress/nublado/ports'", "minItems"]),
    ({"networkPolicy": {"egress": {"nublado": {"port": 8080}}}},
     ["'/networkPolicy/egress/nublado'", "'port' not allowed"]),
])
def test_invalid_values_fail_with_a_message_naming_them(chart, values, expected):
    message = schema_error(chart, values)
    assert "values don't meet the specifications of the schema" in message
    for fragment in expected:
        assert fragment in message, message


VALID_REFS = [
    "busybox", "busybox:1.36", "library/busybox:1.36", "docker.io/library/busybox:1.36",
    "ghcr.io/lsst-sqre/sciplat-lab:w_2024_10", "localhost:5000/app", "localhost/app", "registry:5000/app",
    "Registry.Example.com:5000/a/b/c:V1.2-rc_3",
    f"busybox@sha256:{SHA}", f"ghcr.io/org/app:tag@sha256:{SHA}", "a.b__c-d---e/f:latest",
]
INVALID_REFS = [
    "Not A Ref", "UPPER/case:tag", "Busybox:1.36", "busybox:", "busybox:1.36:extra", "busybox@sha256:abc",
    f"busybox@sha512:{SHA}", "-leading/dash", "ghcr.io//double", "trailing/", "http://ghcr.io/app",
    "busybox:" + "t" * 129, f"busybox@sha256:{SHA.upper()}",
]


@pytest.mark.parametrize("ref", VALID_REFS)
def test_image_reference_pattern_accepts(chart, ref):
    assert exporter_config(render(chart, {"prepull": {"images": [ref]}}))["prepull"]["images"] == [ref]


@pytest.mark.parametrize("ref", INVALID_REFS)
def test_image_reference_pattern_rejects(chart, ref):
    message = schema_error(chart, {"prepull": {"images": ["busybox:1.36", ref]}})
    assert "'/prepull/images/1'" in message
    assert f"'{ref}' does not match pattern" in message


def test_values_schema_is_valid_draft_07_and_accepts_the_defaults(chart):
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(defaults)
    assert chart.schema == schema
    assert schema["additionalProperties"] is False
    # Every default key is declared by the schema (nothing slips past additionalProperties).
    assert set(defaults) <= set(schema["properties"])


# --- Service and ServiceMonitor -----------------------------------------------------


def test_service_targets_the_metrics_port(chart):
    docs = render(chart)
    svc = only(docs, "Service")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9754, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"] and svc["spec"]["selector"].items() <= pod_labels.items()
    assert only(docs, "Deployment")["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def test_service_monitor(chart):
    values = {"serviceMonitor": {
        "enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "1m", "scrapeTimeout": "20s",
        "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "exporter_node"}],
        "metricRelabelings": [{"sourceLabels": ["__name__"], "regex": "imagecap_build_info", "action": "drop"}],
    }}
    docs = render(chart, values)
    sm = only(docs, "ServiceMonitor")
    validate_object(sm, "1.34.0")
    svc = only(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [svc["metadata"]["namespace"]]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in svc["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("1m", "20s")
    assert endpoint["relabelings"] == values["serviceMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    # Defaults, and another namespace for the ServiceMonitor itself.
    sm = only(render(chart, {"serviceMonitor": {"enabled": True, "namespace": "prometheus"}}), "ServiceMonitor")
    [endpoint] = sm["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")
    assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint
    assert sm["metadata"]["namespace"] == "prometheus"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_service_monitor_job_name_is_the_one_the_alerts_expect(chart):
    """Prometheus Operator names the job after the Service label that jobLabel names
    (else after the Service); the exporter-down alert selects `up` by that job."""
    docs = render(chart, {"serviceMonitor": {"enabled": True}}, namespace="other")
    sm, svc = only(docs, "ServiceMonitor"), only(docs, "Service")
    job = svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])
    assert job == "imagecap-exporter"
    selectors = re.findall(r'\bup\{[^}]*\bjob\s*(=~|=)\s*"([^"]+)"', RULES.read_text(encoding="utf-8"))
    assert selectors, "no alert selects the exporter's `up` series by job"
    for op, pattern in selectors:
        assert (re.fullmatch(pattern, job) if op == "=~" else pattern == job), (op, pattern, job)


# --- PrometheusRule and dashboard: one copy, at the repository root -------------------


def test_chart_files_link_to_the_repository_copies():
    """The chart holds no copy of the rules or the dashboard: its files are symbolic
    links to alerts/ and dashboards/, which Helm follows when loading and packaging."""
    for link, target in ((CHART / "files" / "imagecap.rules.yaml", RULES),
                         (CHART / "files" / "imagecap.json", DASHBOARD)):
        assert link.is_symlink(), f"{link} must be a symbolic link to {target}"
        assert not Path(link.readlink()).is_absolute()
        assert link.resolve() == target.resolve()
        assert target.is_file()


def test_prometheus_rule_holds_the_alert_file_rules(chart):
    docs = render(chart, {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}}})
    rule = only(docs, "PrometheusRule")
    validate_object(rule, "1.34.0")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = rules_file_groups()
    assert rule["spec"]["groups"] == groups
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    assert alerts and all(r["expr"] for g in groups for r in g["rules"])
    ns = only(render(chart, {"prometheusRule": {"enabled": True, "namespace": "rules"}}), "PrometheusRule")
    assert ns["metadata"]["namespace"] == "rules"


def test_prometheus_rule_groups_pass_promtool(chart, workdir):
    """The groups as Helm writes them (after its YAML round trip) are valid rules."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (scripts/setup.sh installs it)"
    rule = only(render(chart, {"prometheusRule": {"enabled": True}}), "PrometheusRule")
    path = workdir / "chart.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    n = sum(len(g["rules"]) for g in rules_file_groups())
    assert f"SUCCESS: {n} rules found" in res.stdout


def test_dashboard_configmap_holds_the_dashboard_file(chart):
    values = {"grafanaDashboard": {"enabled": True, "namespace": "grafana", "labels": {"team": "platform"},
                                   "annotations": {"grafana_folder": "Kubernetes"}}}
    cm = only(render(chart, values), "ConfigMap", "imagecap-imagecap-exporter-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["team"] == "platform"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Kubernetes"}
    assert cm["metadata"]["namespace"] == "grafana"
    assert list(cm["data"]) == ["imagecap.json"]
    source = DASHBOARD.read_text(encoding="utf-8")
    assert cm["data"]["imagecap.json"] == source  # byte for byte
    dashboard = json.loads(cm["data"]["imagecap.json"])
    assert dashboard == json.loads(source)
    assert dashboard.get("panels") or dashboard.get("rows")


def test_packaged_chart_carries_the_linked_files(tmp_path):
    """helm package stores the linked files' contents, so the archive is self-contained."""
    archive = Path(helm.package(CHART, destination=tmp_path))
    assert archive.name == "imagecap-exporter-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name, source in (("imagecap-exporter/files/imagecap.rules.yaml", RULES),
                             ("imagecap-exporter/files/imagecap.json", DASHBOARD)):
            assert members[name].isfile(), f"{name} is not a regular file in the archive"
            assert tar.extractfile(members[name]).read() == source.read_bytes()
        assert "imagecap-exporter/values.schema.json" in members
    with helm.Chart.load(archive) as packaged:
        docs = render(packaged, {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}})
    assert only(docs, "PrometheusRule")["spec"]["groups"] == rules_file_groups()
    cm = only(docs, "ConfigMap", "imagecap-imagecap-exporter-dashboard")
    assert cm["data"]["imagecap.json"] == DASHBOARD.read_text(encoding="utf-8")


# --- NetworkPolicy ------------------------------------------------------------------


def test_network_policy_defaults(chart):
    docs = render(chart, {"networkPolicy": {"enabled": True}})
    np = only(docs, "NetworkPolicy")
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert np["spec"]["ingress"] == [{
        "ports": [{"protocol": "TCP", "port": 9754}],
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                  "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
    }]
    api, dns = np["spec"]["egress"]
    assert api == {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
    assert dns == {
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    }


def test_network_policy_follows_values(chart):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}},
             {"podSelector": {"matchLabels": {"app": "vmagent"}}}]
    np = only(render(chart, {"networkPolicy": {
        "enabled": True, "ingress": {"from": peers},
        "egress": {"apiServer": {"cidrs": ["10.0.0.1/32", "fd00::1/128"], "ports": [443]},
                   "dns": {"enabled": False}},
    }}), "NetworkPolicy")
    validate_object(np, "1.34.0")
    assert np["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9754}], "from": peers}]
    assert np["spec"]["egress"] == [{
        "ports": [{"protocol": "TCP", "port": 443}],
        "to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}, {"ipBlock": {"cidr": "fd00::1/128"}}],
    }]
    # An empty peer list leaves the port open to every source.
    np = only(render(chart, {"networkPolicy": {"enabled": True, "ingress": {"from": []}}}), "NetworkPolicy")
    assert np["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 9754}]}]


def test_network_policy_allows_the_nublado_controller_only_with_that_source(chart):
    np = only(render(chart, {"networkPolicy": {"enabled": True}, **with_sources(kubeFledged={"enabled": True})}),
              "NetworkPolicy")
    assert len(np["spec"]["egress"]) == 2  # API server and DNS only
    docs = render(chart, {"networkPolicy": {"enabled": True}, **with_sources(nublado={"enabled": True})})
    np = only(docs, "NetworkPolicy")
    validate_object(np, "1.34.0")
    api, nublado, dns = np["spec"]["egress"]
    assert nublado == {
        "ports": [{"protocol": "TCP", "port": 8080}],
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nublado"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "nublado"}}}],
    }
    assert api["ports"][0] == {"protocol": "TCP", "port": 443} and dns["ports"][0]["port"] == 53
    # The default URL's host is the Service in the namespace the policy allows.
    host = exporter_config(docs)["prepull"]["sources"][0]["nublado"]["url"].split("/")[2]
    assert host.split(".")[1] == nublado["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]


def test_network_policy_nublado_egress_follows_values(chart):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rsp"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "nublado"}}}]
    values = {"networkPolicy": {"enabled": True, "egress": {"nublado": {"to": peers, "ports": [8080, 8443]},
                                                            "dns": {"enabled": False}}},
              **with_sources(nublado={"enabled": True})}
    np = only(render(chart, values), "NetworkPolicy")
    validate_object(np, "1.34.0")
    assert np["spec"]["egress"][1:] == [{"ports": [{"protocol": "TCP", "port": 8080},
                                                   {"protocol": "TCP", "port": 8443}], "to": peers}]
    # An empty peer list allows any destination on those ports (an external URL, say).
    values["networkPolicy"]["egress"]["nublado"] = {"to": [], "ports": [443]}
    np = only(render(chart, values), "NetworkPolicy")
    assert np["spec"]["egress"][1:] == [{"ports": [{"protocol": "TCP", "port": 443}]}]
    # Without the NetworkPolicy, the Nublado values change nothing.
    assert not [d for d in render(chart, with_sources(nublado={"enabled": True})) if d["kind"] == "NetworkPolicy"]


# --- documentation ------------------------------------------------------------------


def _leaf_paths(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaf_paths(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def test_readme_documents_every_value():
    readme = (CHART / "README.md").read_text()
    documented = re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE)
    assert len(documented) == len(set(documented)), "a value is documented twice"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    leaves = set(_leaf_paths(values))

    def covered(leaf):  # documented itself, or as a whole object (e.g. resources)
        parts = leaf.split(".")
        return any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))

    assert sorted(leaf for leaf in leaves if not covered(leaf)) == []
    stale = [d for d in documented if not any(leaf == d or leaf.startswith(d + ".") for leaf in leaves)]
    assert stale == [], "README documents values the chart does not have"


def test_notes_tell_how_to_reach_the_exporter(chart):
    notes = render_files(chart, ALL_ON)["imagecap-exporter/templates/NOTES.txt"]
    assert "kubectl -n monitoring port-forward svc/imagecap-imagecap-exporter 9754:9754" in notes
    assert "nodes/proxy" in notes and "PrometheusRule imagecap-imagecap-exporter" in notes
    assert "grafana_dashboard" in notes
    assert "Wanted images are also read from" not in notes


def test_notes_name_the_enabled_sources(chart):
    notes = render_files(chart, SOURCES_ALL)["imagecap-exporter/templates/NOTES.txt"]
    assert f"Nublado ({NUBLADO_URL})" in notes
    assert "kube-fledged ImageCaches (kube-fledged)" in notes
    assert f"DaemonSets (jhub, {PULLER})" in notes
    assert "ImageCapWantedSourceDown" in notes
    notes = render_files(chart, with_sources(daemonSets={"enabled": True}))["imagecap-exporter/templates/NOTES.txt"]
    assert "DaemonSets (all namespaces)." in notes and "Nublado" not in notes


def test_readme_sources_example_is_what_the_chart_renders(chart):
    """The two YAML blocks of the README's "Wanted image sources" section: the values,
    and the config file they render to."""
    section = (CHART / "README.md").read_text().split("### Wanted image sources", 1)[1].split("\n## ", 1)[0]
    values_block, config_block = re.findall(r"```yaml\n(.*?)```", section, re.S)[:2]
    values = yaml.safe_load(values_block)
    assert exporter_config(render(chart, values)) == {"defaultMaxImages": 50, **yaml.safe_load(config_block)}


# --- the real exporter with what the chart renders ----------------------------------


def _run(argv, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


def test_exporter_reads_the_rendered_config(chart, workdir):
    """The config the chart renders from the example values is read by the exporter
    exactly like examples/config.yaml."""
    example = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    cm = only(render(chart, example), "ConfigMap", "imagecap-imagecap-exporter")
    rendered = workdir / "config.yaml"
    rendered.write_text(cm["data"]["config.yaml"])
    nodes = str(EXAMPLES / "nodes.json")
    ours = _run([str(BIN), "check", "--config", str(rendered), "--nodes-file", nodes, "--format", "json"])
    theirs = _run([str(BIN), "check", "--config", str(EXAMPLES / "config.yaml"), "--nodes-file", nodes,
                   "--format", "json"])
    # nublado-worker-1 is at its cap in the example data: exit 1.
    assert ours.returncode == theirs.returncode == 1, ours.stderr
    ours, theirs = json.loads(ours.stdout), json.loads(theirs.stdout)
    # When each run read its configuration differs; everything else must not.
    for report in (ours, theirs):
        for source in report["sources"]:
            assert source.pop("lastSuccessSeconds") > 0
    assert ours == theirs


class ChartArgsExporter(Exporter):
    """The exporter started with the Deployment's arguments (listen address, config
    path and node source adapted to run here)."""

    def __init__(self, workdir: Path, argv: list[str]):
        Proc.__init__(self, "exporter-chart-args", [str(BIN), *argv], workdir, cwd=ROOT)
        self.addr = wait_for("the exporter to log its listen address", self._addr_or_exit, timeout=30)
        if not self.alive():
            pytest.fail(f"the exporter rejected the Deployment's arguments {shlex.join(argv)}:\n{self.log()}")
        self.url = f"http://{self.addr}"
        self.verify, self.auth = True, None

    def _addr_or_exit(self):
        # An exited process ends the wait at once (Exporter._addr raises, which wait_for retries).
        return self._addr() if self.alive() else "exited"


def _local_argv(args: list[str], config: Path) -> list[str]:
    argv = list(args)
    argv[argv.index("--web.listen-address") + 1] = "127.0.0.1:0"
    argv[argv.index("--config") + 1] = str(config)
    assert argv[argv.index("--config") + 1] != "/etc/imagecap-exporter/config.yaml"
    argv += ["--nodes-file", str(EXAMPLES / "nodes.json")]
    return argv


def test_every_flag_the_chart_passes_is_an_exporter_flag(chart):
    c = container(render(chart, {**ALL_ON, "nodeLabelSelector": "pool=lab"}))
    flags = {a for a in c["args"] if a.startswith("--")}
    assert {"--log-format", "--web.listen-address", "--config", "--mode", "--poll-interval", "--default-max-images",
            "--node-selector", "--kubelet-configz", "--kubelet-configz-interval", "--kubelet-stats",
            "--kubelet-stats-interval", "--agents", "--agents-interval"} == flags
    res = _run([str(BIN), "serve", "--help"])
    assert res.returncode == 0, res.stderr
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*", res.stdout))
    assert flags - known == set(), res.stdout


@pytest.mark.parametrize("values", [
    {},
    {"mode": "poll", "pollInterval": "1h30m", "defaultMaxImages": -1, "nodeLabelSelector": "kubernetes.io/os=linux"},
    ALL_ON,
], ids=["default", "poll", "all"])
def test_exporter_runs_with_the_deployment_args(chart, workdir, procs, values):
    example = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    docs = render(chart, {**example, **values})
    c = container(docs)
    config = workdir / "config.yaml"
    config.write_text(only(docs, "ConfigMap", "imagecap-imagecap-exporter")["data"]["config.yaml"])
    argv = _local_argv(c["args"], config)
    ex = ChartArgsExporter(workdir, argv)
    procs.append(ex)
    readiness, liveness = c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]
    wait_for(f"the readiness probe {readiness}", lambda: requests.get(ex.url + readiness, timeout=5).status_code == 200)
    assert requests.get(ex.url + liveness, timeout=5).status_code == 200, shlex.join(argv)
    metrics = ex.metrics()
    assert re.search(r"^imagecap_node_images\{[^}]*node=\"nublado-worker-1\"[^}]*\} 50(\.0)?$", metrics, re.M), metrics
    assert ex.alive()


# The same, with the wanted image sources on. An exporter built before they existed
# rejects the config (exit 2, "unknown field `sources`"): these tests then skip and say
# so, and run for real against an exporter that reads them.

LAB = "ghcr.io/lsst-sqre/sciplat-lab"
# What Nublado's controller answers on GET /nublado/spawner/v1/prepulls
# (PrepullerStatus, snake_case), for the example nodes: r27_0_0 is on every eligible
# node, w_2024_11 is pending (nublado-worker-1 is at its cap and does not show it).
NUBLADO_STATUS = {
    "config": {"source": {"type": "docker", "registry": "ghcr.io", "repository": "lsst-sqre/sciplat-lab"},
               "recommended_tag": "recommended", "num_releases": 1, "num_weeklies": 1, "num_dailies": 0,
               "cycle": None, "pin": [], "alias_tags": []},
    "images": {
        "prepulled": [{"reference": f"{LAB}:r27_0_0", "tag": "r27_0_0", "name": "Release r27.0.0",
                       "digest": None, "size": None,
                       "nodes": ["nublado-worker-1", "nublado-worker-2", "nublado-worker-3", "nublado-worker-4"],
                       "missing": []}],
        "pending": [{"reference": f"{LAB}:w_2024_11", "tag": "w_2024_11", "name": "Weekly 2024_11",
                     "digest": None, "size": None,
                     "nodes": ["nublado-worker-2", "nublado-worker-3", "nublado-worker-4"],
                     "missing": ["nublado-worker-1"]}],
    },
    "nodes": [
        *({"name": f"nublado-worker-{i}", "eligible": True, "comment": None, "cached": []} for i in range(1, 5)),
        {"name": "control-plane-1", "eligible": False, "comment": "Cordoned", "cached": []},
    ],
}


class FakeNublado:
    """Serves NUBLADO_STATUS on 127.0.0.1 and records the Authorization headers it gets."""

    def __init__(self):
        self.authorizations: list[str | None] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                fake.authorizations.append(self.headers.get("Authorization"))
                if self.path.split("?")[0] != "/nublado/spawner/v1/prepulls":
                    self.send_error(404)
                    return
                body = json.dumps(NUBLADO_STATUS).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/nublado/spawner/v1/prepulls"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def _sources_values() -> dict:
    """The example config with every source on, as chart values."""
    example = yaml.safe_load((EXAMPLES / "config.yaml").read_text())
    prepull = {**example["prepull"], **copy.deepcopy(SOURCES_ALL["prepull"])}
    prepull["patterns"] = [*example["prepull"]["patterns"], SOURCES_ALL["prepull"]["patterns"][1]]
    return {**example, "prepull": prepull}


def _local_sources_config(docs: list[dict], path: Path, url: str, token: Path | None):
    """Writes the rendered config with the Nublado URL and token file made local."""
    cfg = exporter_config(docs)
    for source in cfg["prepull"]["sources"]:
        if "nublado" in source:
            source["nublado"]["url"] = url
            if token is not None:
                assert source["nublado"]["tokenFile"] == TOKEN_FILE
                source["nublado"]["tokenFile"] = str(token)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


# How an exporter that predates the wanted-image sources rejects its config keys: an unknown
# prepull.sources or prepull.tolerations, or a {match, newest} pattern.
PRE_SOURCES_ERRORS = (r"unknown field `(sources|tolerations)`",
                      r"prepull\.patterns\[\d+\]: invalid type: map, expected a string")


def _skip_unless_the_exporter_reads_sources(config: Path):
    """Skips when the exporter at BIN predates the wanted image sources."""
    res = _run([str(BIN), "check", "--config", str(config), "--nodes-file", str(EXAMPLES / "nodes.json")],
               timeout=120)
    if res.returncode == 2 and any(re.search(e, res.stderr) for e in PRE_SOURCES_ERRORS):
        pytest.skip(f"{BIN} predates prepull.sources, prepull.tolerations and {{match, newest}} patterns "
                    f": `check` exits 2 with {res.stderr.strip()!r}")
    return res


def test_exporter_accepts_the_rendered_sources_config(chart, workdir):
    """Every key the chart writes for the sources is one the exporter knows: `check`
    reports no error in the config file (the sources themselves may fail here, with
    no cluster and no Nublado to read)."""
    docs = render(chart, _sources_values())
    config = workdir / "config.yaml"
    token = workdir / "token"
    token.write_text("s3cret\n")
    _local_sources_config(docs, config, "http://127.0.0.1:9/nublado/spawner/v1/prepulls", token)
    res = _skip_unless_the_exporter_reads_sources(config)
    assert f"config file {config}" not in res.stderr, res.stderr
    assert "unknown field" not in res.stderr and "unknown variant" not in res.stderr, res.stderr


def test_exporter_reads_nublado_with_the_deployment_args_and_token(chart, workdir, procs):
    """The Deployment's arguments, the rendered config with the Nublado source (pointed
    at a fake controller here) and the token file: the exporter sends the token, reads
    the status and exports the source's images next to the config's and patterns'."""
    values = _sources_values()
    values["prepull"]["sources"] = {"nublado": {"enabled": True, "interval": "1s", "timeout": "5s",
                                                "tokenSecret": {"name": "imagecap-nublado"}}}
    docs = render(chart, values)
    nublado = FakeNublado()
    try:
        config = workdir / "config.yaml"
        token = workdir / "token"
        token.write_text("s3cret\n")
        _local_sources_config(docs, config, nublado.url, token)
        _skip_unless_the_exporter_reads_sources(config)
        ex = ChartArgsExporter(workdir, _local_argv(container(docs)["args"], config))
        procs.append(ex)
        ex.wait_ready()
        wait_for("the exporter to read the fake Nublado", lambda: nublado.authorizations)
        assert set(nublado.authorizations) == {"Bearer s3cret"}, nublado.authorizations

        def sample(name, **labels):
            sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            for line in ex.metrics().splitlines():
                m = re.fullmatch(rf"{name}\{{([^}}]*)\}} (\S+)", line)
                if m and all(f'{k}="{v}"' in m.group(1).split(",") for k, v in labels.items()):
                    return float(m.group(2))
            raise AssertionError(f"no {name}{{{sel}}}")

        wait_for("the Nublado source to be up", lambda: sample("imagecap_wanted_source_up", source="nublado") == 1)
        assert sample("imagecap_wanted_source_images", source="nublado") == 2
        assert sample("imagecap_wanted_source_last_success_timestamp_seconds", source="nublado") > 0
        for image in (f"{LAB}:r27_0_0", f"{LAB}:w_2024_11"):
            assert sample("imagecap_wanted_image_info", image=image, source="nublado") == 1
        for source in ("config", "pattern"):
            assert sample("imagecap_wanted_source_up", source=source) == 1
        assert sample("imagecap_source_errors_total", kind="nublado") == 0
        assert ex.alive()
    finally:
        nublado.stop()


# --- container image ----------------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "a continued line never ends"
    return out


def test_dockerfile():
    instructions = _dockerfile_instructions((ROOT / "Dockerfile").read_text())
    froms = [(i, rest) for i, (word, rest) in enumerate(instructions) if word == "FROM"]
    assert [rest for _, rest in froms] == ["${BUILD_IMAGE} AS build", "${RUNTIME_IMAGE}"]
    # The bases are build arguments declared before the first stage, defaulting to
    # the upstream images (test_container.py replaces them with local ones).
    global_args = dict(rest.split("=", 1) for word, rest in instructions[:froms[0][0]] if word == "ARG")
    assert global_args == {"BUILD_IMAGE": "rust:1-bookworm",
                           "RUNTIME_IMAGE": "gcr.io/distroless/cc-debian12:nonroot"}
    build = instructions[froms[0][0]:froms[1][0]]
    final = instructions[froms[1][0]:]
    assert any(word == "RUN" and "cargo build --release --locked" in rest for word, rest in build)
    copies = [rest.split() for word, rest in build if word == "COPY"]
    sources = [src for parts in copies for src in parts[:-1] if not src.startswith("--")]
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
    for needed in ("Cargo.toml", "Cargo.lock", "src"):
        assert needed in sources
    if (ROOT / "build.rs").exists():
        assert "build.rs" in sources
    # Files the crate embeds at compile time must be in the build context too (unit
    # test modules, which by convention close a file after #[cfg(test)], are not built).
    for rs in (ROOT / "src").rglob("*.rs"):
        code = rs.read_text().split("#[cfg(test)]")[0]
        for rel in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', code):
            target = (rs.parent / rel).resolve()
            assert any(target.is_relative_to((ROOT / s).resolve()) for s in sources), f"{rs}: {rel}"

    final_words = {word: rest for word, rest in final}
    assert final_words["COPY"].split() == ["--from=build", "/out/imagecap-exporter", "/usr/local/bin/imagecap-exporter"]
    assert final_words["USER"] == "65532:65532"
    assert json.loads(final_words["ENTRYPOINT"]) == ["/usr/local/bin/imagecap-exporter"]
    assert json.loads(final_words["CMD"]) == ["serve"]
    assert final_words["EXPOSE"] == "9754"
    labels = dict(re.findall(r'(org\.opencontainers\.image\.[a-z.]+)="([^"]*)"', final_words["LABEL"]))
    for key in ("title", "description", "version", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key

    # The image, the crate and the chart agree.
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    license_ = re.search(r'^license = "([^"]+)"', cargo, re.M).group(1)
    assert labels["org.opencontainers.image.licenses"] == license_
    assert final_words["ARG"] == f"VERSION={version}"
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_meta["appVersion"] == version
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"{values['securityContext']['runAsUser']}:{values['securityContext']['runAsGroup']}" == final_words["USER"]


def test_the_build_stage_has_every_file_cargo_needs(tmp_path):
    """Cargo refuses a manifest whose declared targets (benchmarks, say) are missing:
    copy exactly what the build stage COPYs and let cargo parse it."""
    instructions = _dockerfile_instructions((ROOT / "Dockerfile").read_text())
    froms = [i for i, (word, _) in enumerate(instructions) if word == "FROM"]
    for word, rest in instructions[froms[0]:froms[1]]:
        if word != "COPY":
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        for src in parts[:-1]:
            dst = tmp_path / (src if parts[-1] in ("./", ".") else parts[-1])
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, dst)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / src, dst)
    # `cargo metadata --no-deps` reads the manifest without resolving or fetching a
    # crate (so it works on a fresh machine), and lists only the targets whose files
    # exist: a file the build stage does not copy shows as a missing target.
    assert _cargo_targets(tmp_path) == _cargo_targets(ROOT)


def _cargo_targets(directory):
    out = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1"],
                         cwd=directory, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    (package,) = json.loads(out.stdout)["packages"]
    # Integration tests are not built in the image; what the manifest declares is.
    targets = {(kind, t["name"]) for t in package["targets"] for kind in t["kind"]
               if kind in ("lib", "bin", "bench")}
    assert ("bench", "scale") in targets or directory != ROOT, targets
    return targets


def test_dockerignore_keeps_build_output_out_of_the_context():
    entries = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {"target/", ".venv/", ".git"} <= entries
    for needed in ("Cargo.toml", "Cargo.lock", "src"):
        assert needed not in entries and f"{needed}/" not in entries
