"""The node agent's part of the Helm chart (agent.*): the DaemonSet, its headless
Service, ServiceMonitor and NetworkPolicy, rendered by Helm's Go SDK, validated
against the Kubernetes schemas, and its arguments fed to the real agent."""
from __future__ import annotations

import re
import subprocess

import pytest

from harness import BIN, Agent, wait_for
from test_chart import NAMESPACE, chart, only, render, validate_object  # noqa: F401 - chart is a fixture

AGENT = "imagecap-imagecap-exporter-agent"
ON = {"agent": {"enabled": True}}
PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}


def agent_pod(docs: list[dict]) -> dict:
    return only(docs, "DaemonSet", AGENT)["spec"]["template"]


def test_disabled_by_default_renders_nothing_for_the_agent(chart):
    docs = render(chart, {"networkPolicy": {"enabled": True},
                          "agent": {"serviceMonitor": {"enabled": True}}})
    assert [d["metadata"]["name"] for d in docs if "agent" in d["metadata"]["name"]] == []
    assert not [d for d in docs if d["kind"] == "DaemonSet"]


def test_daemonset_runs_the_agent_on_every_node_with_the_least_privilege(chart):
    docs = render(chart, ON)
    ds = only(docs, "DaemonSet", AGENT)
    for version in ("1.25.0", "1.34.0"):
        validate_object(ds, version)
    pod = ds["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["args"] == [
        "--log-format", "json", "agent",
        "--node-name=$(NODE_NAME)",
        "--cri-endpoint=unix:///run/containerd/containerd.sock",
        "--listen", "0.0.0.0:9755",
        "--interval", "60s",
        "--cri-timeout", "10s",
    ]
    assert c["env"] == [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    assert c["ports"] == [{"name": "http-metrics", "containerPort": 9755, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-metrics", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-metrics", "scheme": "HTTP"}
    # Every taint tolerated: every node has an agent.
    assert pod["tolerations"] == [{"operator": "Exists"}]
    # No Kubernetes API, no token.
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    # Root for the 0660 root:root socket, and nothing more.
    assert pod["securityContext"] == {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # The socket's directory, read-only, at the same path on the node and in the pod.
    assert c["volumeMounts"] == [{"name": "cri-socket-dir", "mountPath": "/run/containerd", "readOnly": True}]
    assert pod["volumes"] == [{"name": "cri-socket-dir",
                               "hostPath": {"path": "/run/containerd", "type": "Directory"}}]
    assert c["resources"] == {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}}
    assert "priorityClassName" not in pod and "hostNetwork" not in pod and "hostPID" not in pod


def test_daemonset_follows_values(chart):
    docs = render(chart, {"agent": {
        "enabled": True, "criSocket": "/var/run/crio/crio.sock", "interval": "2m", "criTimeout": "5s",
        "priorityClassName": "system-node-critical", "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "podLabels": {"team": "rsp"}, "extraArgs": ["--web.max-connections=16"],
        "resources": {"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"memory": "48Mi"}},
    }, "webConfig": {"secretName": "web", "tls": True}})
    ds = only(docs, "DaemonSet", AGENT)
    validate_object(ds, "1.34.0")
    pod = ds["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert "--cri-endpoint=unix:///var/run/crio/crio.sock" in c["args"]
    assert c["args"][c["args"].index("--interval") + 1] == "2m"
    assert c["args"][c["args"].index("--cri-timeout") + 1] == "5s"
    assert c["args"][-3:] == ["--web.config.file", "/etc/imagecap-exporter/web/web.yml", "--web.max-connections=16"]
    assert {"name": "cri-socket-dir", "mountPath": "/var/run/crio", "readOnly": True} in c["volumeMounts"]
    assert {"name": "cri-socket-dir", "hostPath": {"path": "/var/run/crio", "type": "Directory"}} in pod["volumes"]
    assert {"name": "web-config", "secret": {"secretName": "web"}} in pod["volumes"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert ds["spec"]["template"]["metadata"]["labels"]["team"] == "rsp"
    assert c["resources"]["limits"] == {"memory": "48Mi"}


def test_service_selects_the_agent_pods_and_only_them(chart):
    docs = render(chart, ON)
    svc = only(docs, "Service", AGENT)
    validate_object(svc, "1.34.0")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "http-metrics", "port": 9755, "targetPort": "http-metrics",
                                     "protocol": "TCP"}]
    agent_labels = agent_pod(docs)["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= agent_labels.items()
    assert only(docs, "DaemonSet", AGENT)["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    # The exporter's Service and the agents' select disjoint pods.
    exporter_svc = only(docs, "Service", "imagecap-imagecap-exporter")
    exporter_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not exporter_svc["spec"]["selector"].items() <= agent_labels.items()
    assert not svc["spec"]["selector"].items() <= exporter_labels.items()


def test_service_monitor_for_the_agents(chart):
    docs = render(chart, {"agent": {"enabled": True, "serviceMonitor": {
        "enabled": True, "labels": {"release": "kps"}, "interval": "2m", "namespace": "prometheus"}}})
    sm = only(docs, "ServiceMonitor", AGENT)
    validate_object(sm, "1.34.0")
    svc = only(docs, "Service", AGENT)
    assert sm["metadata"]["namespace"] == "prometheus"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http-metrics" and endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("2m", "10s")
    # Only the agents': the exporter's ServiceMonitor is its own toggle.
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceMonitor"] == [AGENT]


def test_network_policy_admits_only_the_exporter_and_prometheus(chart):
    docs = render(chart, {**ON, "networkPolicy": {"enabled": True}})
    np = only(docs, "NetworkPolicy", AGENT)
    validate_object(np, "1.34.0")
    assert np["spec"]["podSelector"]["matchLabels"].items() <= agent_pod(docs)["metadata"]["labels"].items()
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in np["spec"], "the agent talks to nothing over the network"
    [rule] = np["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9755}]
    exporter, prometheus = rule["from"]
    exporter_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert exporter["podSelector"]["matchLabels"].items() <= exporter_labels.items()
    assert "namespaceSelector" not in exporter, "the exporter in the release namespace"
    assert prometheus == PROMETHEUS_PEER
    # The exporter's own policy does not cover the agents.
    assert not only(docs, "NetworkPolicy", "imagecap-imagecap-exporter")["spec"]["podSelector"][
        "matchLabels"].items() <= agent_pod(docs)["metadata"]["labels"].items()

    peers = [{"podSelector": {"matchLabels": {"app": "vmagent"}}}]
    np = only(render(chart, {"agent": {"enabled": True, "networkPolicy": {"from": peers}},
                             "networkPolicy": {"enabled": True}}), "NetworkPolicy", AGENT)
    assert np["spec"]["ingress"][0]["from"][1:] == peers


def test_long_release_names_keep_agent_names_within_63_characters(chart):
    docs = render(chart, {"agent": {"enabled": True}, "fullnameOverride": "x" * 63})
    names = [d["metadata"]["name"] for d in docs if d["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"]
    assert names and all(len(n) <= 63 and n.endswith("-agent") for n in names)


@pytest.mark.parametrize("values, message", [
    ({"agent": {"criSocket": "run/containerd.sock"}}, "criSocket"),
    ({"agent": {"interval": "0s"}}, "interval"),
    ({"agent": {"securityContext": {"runAsUser": -1, "runAsGroup": 0}}}, "runAsUser"),
    ({"agent": {"unknown": 1}}, "unknown"),
])
def test_bad_agent_values_are_refused(chart, values, message):
    from test_chart import schema_error
    error = schema_error(chart, values)
    assert message in error, error


def test_every_flag_the_daemonset_passes_is_an_agent_flag(chart):
    [c] = agent_pod(render(chart, {"agent": {"enabled": True}, "webConfig": {"secretName": "w"}}))["spec"]["containers"]
    flags = {a.split("=", 1)[0] for a in c["args"] if a.startswith("--")}
    res = subprocess.run([str(BIN), "agent", "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    known = set(re.findall(r"(?<![\w.-])--[a-z][a-z0-9.-]*[a-z0-9]", res.stdout)) | {"--log-format"}
    assert flags - known == set(), res.stdout
    assert {"--node-name", "--cri-endpoint", "--listen", "--interval", "--cri-timeout", "--web.config.file"} <= flags


def test_agent_runs_with_the_daemonset_args(chart, containerd, workdir, procs):
    """The rendered arguments, with the node name the kubelet substitutes, this
    test's socket and a loopback port, make an agent that the readiness probe
    passes against a real containerd."""
    [c] = agent_pod(render(chart, {"agent": {"enabled": True, "interval": "1s"}}))["spec"]["containers"]
    args = c["args"][c["args"].index("agent") + 1:]
    args = [a.replace("$(NODE_NAME)", "chart-node")
             .replace("unix:///run/containerd/containerd.sock", containerd.endpoint) for a in args]
    args[args.index("--listen") + 1] = "127.0.0.1:0"
    node = args.pop(args.index("--node-name=chart-node")).split("=", 1)[1]
    endpoint = args.pop(next(i for i, a in enumerate(args) if a.startswith("--cri-endpoint="))).split("=", 1)[1]
    args.remove("--listen")
    args.remove("127.0.0.1:0")
    a = Agent(workdir, node, endpoint, args)
    procs.append(a)
    readiness = c["readinessProbe"]["httpGet"]["path"]
    wait_for("the readiness probe", lambda: a.get(readiness).status_code == 200)
    assert a.get(c["livenessProbe"]["httpGet"]["path"]).status_code == 200
    assert 'imagecap_runtime_up{node="chart-node"} 1' in a.metrics()


def test_the_exporter_reads_the_agents_behind_their_service(chart):
    docs = render(chart, {**ON, "networkPolicy": {"enabled": True}})
    [exporter] = only(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    args = exporter["args"]
    service = only(docs, "Service", AGENT)
    assert args[args.index("--agents") + 1] == f"{NAMESPACE}/{service['metadata']['name']}"
    assert args[args.index("--agents-interval") + 1] == "60s"
    # The exporter's own NetworkPolicy lets it reach the agents' port, and only theirs.
    policy = only(docs, "NetworkPolicy", "imagecap-imagecap-exporter")
    [to_agents] = [e for e in policy["spec"]["egress"] if e.get("ports") == [{"protocol": "TCP", "port": 9755}]]
    assert to_agents["to"] == [{"podSelector": {"matchLabels": service["spec"]["selector"]}}]
    assert "--agents" not in only(render(chart, {}), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_notes_name_the_agents(chart):
    from test_chart import render_files
    notes = render_files(chart, ON)["imagecap-exporter/templates/NOTES.txt"]
    assert "DaemonSet imagecap-imagecap-exporter-agent" in notes
    assert "/run/containerd/containerd.sock" in notes
    assert "agent" not in render_files(chart, {})["imagecap-exporter/templates/NOTES.txt"]
