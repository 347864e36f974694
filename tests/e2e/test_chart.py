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
import json
import re
import shlex
import shutil
import subprocess
import tarfile
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
}
NODES_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
PROXY_RULE = {"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"]}
SHA = "0123456789abcdef" * 4


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


@pytest.mark.parametrize("toggle", TOGGLES)
def test_lint_is_clean(toggle):
    report = helm.lint(CHART, TOGGLES[toggle], strict=True, namespace=NAMESPACE, kube_version="v1.34.0")
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
    assert sorted(got) == sorted(expected)
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "imagecap-exporter"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "imagecap-exporter-0.1.0"
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("toggle", TOGGLES)
def test_every_object_validates_against_kubernetes(chart, toggle, version):
    docs = render(chart, TOGGLES[toggle])
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
    if values.get("kubeletConfigz", {}).get("enabled"):
        expected.append(PROXY_RULE)
    assert role["rules"] == expected
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
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
    assert ("--kubelet-configz" in container(docs)["args"]) == (PROXY_RULE in expected)


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
        "--listen", "0.0.0.0:9754",
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


def test_deployment_args_follow_values(chart):
    docs = render(chart, {
        "mode": "poll", "pollInterval": "5m", "defaultMaxImages": -1,
        "nodeLabelSelector": "pool=lab,!gpu", "logFormat": "text",
        "kubeletConfigz": {"enabled": True, "interval": "30m"}, "extraArgs": ["--page-size", "100"],
    })
    assert container(docs)["args"] == [
        "--log-format", "text", "serve",
        "--listen", "0.0.0.0:9754",
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
    assert json.loads(ours.stdout) == json.loads(theirs.stdout)


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
    argv[argv.index("--listen") + 1] = "127.0.0.1:0"
    argv[argv.index("--config") + 1] = str(config)
    assert argv[argv.index("--config") + 1] != "/etc/imagecap-exporter/config.yaml"
    argv += ["--nodes-file", str(EXAMPLES / "nodes.json")]
    return argv


def test_every_flag_the_chart_passes_is_an_exporter_flag(chart):
    c = container(render(chart, {**ALL_ON, "nodeLabelSelector": "pool=lab"}))
    flags = {a for a in c["args"] if a.startswith("--")}
    assert {"--log-format", "--listen", "--config", "--mode", "--poll-interval", "--default-max-images",
            "--node-selector", "--kubelet-configz", "--kubelet-configz-interval"} == flags
    res = _run([str(BIN), "serve", "--help"])
    assert res.returncode == 0, res.stderr
    known = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", res.stdout))
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
    assert [rest for _, rest in froms] == ["rust:1-bookworm AS build", "gcr.io/distroless/cc-debian12:nonroot"]
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
