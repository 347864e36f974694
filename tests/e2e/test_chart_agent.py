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


# --- pruning (agent.prune) ----------------------------------------------------------

PRUNE_KEEP = [{"match": r"^ghcr\.io/lsst-sqre/sciplat-lab:w_", "newest": 4}, r"^registry\.k8s\.io/pause:"]
PRUNE_ON = {"agent": {"enabled": True, "prune": {"enabled": True}}}
EXPORTER_URL = f"http://imagecap-imagecap-exporter.{NAMESPACE}.svc:9754"
PASSWORD_FILE = "/var/run/secrets/imagecap-exporter/password"
EXPORTER_FLAGS = ("--config", "--exporter-url", "--exporter-username", "--exporter-password-file",
                  "--exporter-ca-file", "--exporter-timeout")


def prune_values(prune: dict | None = None, **top) -> dict:
    return {"agent": {"enabled": True, "prune": {"enabled": True, **(prune or {})}}, **top}


def agent_container(docs: list[dict]) -> dict:
    [c] = agent_pod(docs)["spec"]["containers"]
    return c


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, args
    return args[args.index(name) + 1]


def agent_config(docs: list[dict]) -> dict:
    import yaml
    return yaml.safe_load(only(docs, "ConfigMap", AGENT)["data"]["config.yaml"])


@pytest.mark.parametrize("values", [
    ON,
    {"agent": {"enabled": True, "prune": {"dryRun": False, "target": 40, "keep": PRUNE_KEEP}},
     "networkPolicy": {"enabled": True}, "webConfig": {"secretName": "web", "tls": True}},
    # Pruning without the agent: nothing at all.
    {"agent": {"prune": {"enabled": True}}, "networkPolicy": {"enabled": True}},
], ids=["agent", "agent-prune-off-with-values", "prune-without-agent"])
def test_pruning_is_off_by_default_and_renders_nothing(chart, values):
    docs = render(chart, values)
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == AGENT]
    if not values["agent"].get("enabled"):
        assert not [d for d in docs if d["metadata"]["name"] == AGENT]
        return
    c = agent_container(docs)
    assert not [a for a in c["args"] if a.split("=", 1)[0] in EXPORTER_FLAGS]
    assert "config" not in [m["name"] for m in c["volumeMounts"]]
    assert "config" not in [v["name"] for v in agent_pod(docs)["spec"]["volumes"]]
    assert "annotations" not in agent_pod(docs)["metadata"]
    for d in docs:
        if d["kind"] == "NetworkPolicy":
            if d["metadata"]["name"] == AGENT:
                assert "egress" not in d["spec"]
            else:
                assert len(d["spec"]["ingress"]) == 1, "only the scrapes reach the exporter"


def test_prune_renders_the_config_file_the_flags_and_the_mount(chart):
    docs = render(chart, prune_values({"dryRun": False, "target": 45, "interval": "5m", "grace": "0s",
                                       "maxRemovalsPerRun": 3, "keep": PRUNE_KEEP}))
    cm = only(docs, "ConfigMap", AGENT)
    assert cm["metadata"]["namespace"] == NAMESPACE
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "agent"
    assert list(cm["data"]) == ["config.yaml"]
    assert agent_config(docs) == {"prune": {
        "enabled": True, "dryRun": False, "target": 45, "interval": "5m", "grace": "0s",
        "maxRemovalsPerRun": 3, "keep": PRUNE_KEEP}}
    c = agent_container(docs)
    args = c["args"]
    assert flag(args, "--config") == "/etc/imagecap-exporter/config.yaml"
    assert flag(args, "--exporter-url") == EXPORTER_URL
    # The exporter's Service, by name and port, is what the URL names.
    svc = only(docs, "Service", "imagecap-imagecap-exporter")
    assert EXPORTER_URL == f"http://{svc['metadata']['name']}.{NAMESPACE}.svc:{svc['spec']['ports'][0]['port']}"
    assert not {"--exporter-username", "--exporter-password-file", "--exporter-ca-file"} & set(args)
    assert {"name": "config", "mountPath": "/etc/imagecap-exporter", "readOnly": True} in c["volumeMounts"]
    assert {"name": "config", "configMap": {"name": AGENT}} in agent_pod(docs)["spec"]["volumes"]
    # The agent still calls no Kubernetes API.
    assert agent_pod(docs)["spec"]["automountServiceAccountToken"] is False


def test_prune_defaults_write_the_defaults_and_no_target(chart):
    docs = render(chart, PRUNE_ON)
    assert agent_config(docs) == {"prune": {"enabled": True, "dryRun": True, "interval": "10m", "grace": "30s",
                                            "maxRemovalsPerRun": 10, "keep": []}}
    assert agent_config(render(chart, prune_values({"target": 0})))["prune"]["target"] == 0


def test_prune_config_checksum_rolls_the_agents_only_when_the_config_changes(chart):
    import hashlib

    def checksum(values):
        docs = render(chart, values)
        return agent_pod(docs)["metadata"]["annotations"]["checksum/config"], docs

    base, docs = checksum(PRUNE_ON)
    text = only(docs, "ConfigMap", AGENT)["data"]["config.yaml"]
    assert base == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    assert checksum(prune_values({"keep": PRUNE_KEEP}))[0] != base
    assert checksum(prune_values({"dryRun": False}))[0] != base
    assert checksum(prune_values({"target": 45}))[0] != base
    assert checksum({**prune_values(), "networkPolicy": {"enabled": True}})[0] == base
    # Pod annotations of the user's stay next to it.
    annotations = agent_pod(render(chart, {"agent": {"enabled": True, "podAnnotations": {"a": "b"},
                                                     "prune": {"enabled": True}}}))["metadata"]["annotations"]
    assert annotations == {"checksum/config": base, "a": "b"}


def test_prune_network_policies_let_the_agents_reach_the_exporter(chart):
    docs = render(chart, prune_values(networkPolicy={"enabled": True}))
    agent_labels = agent_pod(docs)["metadata"]["labels"]
    exporter_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    # The exporter admits the agent pods on its port.
    exporter_np = only(docs, "NetworkPolicy", "imagecap-imagecap-exporter")
    scrapes, from_agents = exporter_np["spec"]["ingress"]
    assert scrapes["from"] == [PROMETHEUS_PEER]
    assert from_agents["ports"] == [{"protocol": "TCP", "port": 9754}]
    [peer] = from_agents["from"]
    assert peer == {"podSelector": {"matchLabels": only(docs, "Service", AGENT)["spec"]["selector"]}}
    assert peer["podSelector"]["matchLabels"].items() <= agent_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= exporter_labels.items()
    # The agents may leave for the exporter's port, and DNS, and nothing else.
    agent_np = only(docs, "NetworkPolicy", AGENT)
    to_exporter, dns = agent_np["spec"]["egress"]
    assert to_exporter["ports"] == [{"protocol": "TCP", "port": 9754}]
    [peer] = to_exporter["to"]
    assert peer["podSelector"]["matchLabels"].items() <= exporter_labels.items()
    assert not peer["podSelector"]["matchLabels"].items() <= agent_labels.items()
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                          "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    # The ingress of the agents is as without pruning.
    assert agent_np["spec"]["ingress"] == only(render(chart, {**ON, "networkPolicy": {"enabled": True}}),
                                               "NetworkPolicy", AGENT)["spec"]["ingress"]
    # DNS follows networkPolicy.egress.dns.
    agent_np = only(render(chart, prune_values(networkPolicy={"enabled": True, "egress": {"dns": {"enabled": False}}})),
                    "NetworkPolicy", AGENT)
    assert [e["ports"] for e in agent_np["spec"]["egress"]] == [[{"protocol": "TCP", "port": 9754}]]


def test_prune_with_basic_auth_mounts_the_password_key_only(chart):
    docs = render(chart, prune_values({"exporterAuth": {"username": "agent",
                                                        "passwordSecret": {"name": "imagecap-agent", "key": "pw"}}},
                                      webConfig={"secretName": "web"}))
    c = agent_container(docs)
    args = c["args"]
    assert flag(args, "--exporter-url") == EXPORTER_URL, "no TLS: plain HTTP"
    assert flag(args, "--exporter-username") == "agent"
    assert flag(args, "--exporter-password-file") == PASSWORD_FILE
    assert "--exporter-ca-file" not in args
    assert [m for m in c["volumeMounts"] if m["name"] == "exporter-password"] == [
        {"name": "exporter-password", "mountPath": "/var/run/secrets/imagecap-exporter", "readOnly": True}]
    [volume] = [v for v in agent_pod(docs)["spec"]["volumes"] if v["name"] == "exporter-password"]
    assert volume == {"name": "exporter-password", "secret": {
        "secretName": "imagecap-agent", "items": [{"key": "pw", "path": "password"}], "defaultMode": 0o400}}
    for doc in docs:
        validate_object(doc, "1.34.0")


@pytest.mark.parametrize("auth", [{"username": "agent"}, {"passwordSecret": {"name": "imagecap-agent"}}])
def test_prune_basic_auth_needs_both_user_and_password(chart, auth):
    import helm_python as helm
    with pytest.raises(helm.HelmError) as exc:
        render(chart, prune_values({"exporterAuth": auth}))
    assert "agent.prune.exporterAuth" in str(exc.value)


def test_prune_over_tls_verifies_the_exporter(chart):
    tls = {"secretName": "web", "tls": True}
    args = agent_container(render(chart, prune_values(webConfig=tls)))["args"]
    assert flag(args, "--exporter-url") == EXPORTER_URL.replace("http://", "https://")
    assert flag(args, "--exporter-ca-file") == "/etc/imagecap-exporter/web/ca.crt"
    # A CA of its own: only its key, mounted apart.
    docs = render(chart, prune_values({"exporterCA": {"secretName": "exporter-ca", "key": "bundle.pem"}},
                                      webConfig=tls))
    c = agent_container(docs)
    assert flag(c["args"], "--exporter-ca-file") == "/etc/imagecap-exporter/exporter-ca/ca.crt"
    assert {"name": "exporter-ca", "mountPath": "/etc/imagecap-exporter/exporter-ca", "readOnly": True} \
        in c["volumeMounts"]
    assert {"name": "exporter-ca", "secret": {"secretName": "exporter-ca",
                                              "items": [{"key": "bundle.pem", "path": "ca.crt"}]}} \
        in agent_pod(docs)["spec"]["volumes"]
    for doc in docs:
        validate_object(doc, "1.34.0")
    # An empty key: the system's roots only.
    args = agent_container(render(chart, prune_values({"exporterCA": {"key": ""}}, webConfig=tls)))["args"]
    assert "--exporter-ca-file" not in args
    # No TLS, no CA, whatever the values.
    args = agent_container(render(chart, prune_values({"exporterCA": {"secretName": "exporter-ca"}},
                                                      webConfig={"secretName": "web"})))["args"]
    assert "--exporter-ca-file" not in args


@pytest.mark.parametrize("version", ["1.25.0", "1.34.0"])
def test_every_prune_object_validates_against_kubernetes(chart, version):
    values = prune_values({"target": 45, "keep": PRUNE_KEEP,
                           "exporterAuth": {"username": "agent", "passwordSecret": {"name": "imagecap-agent"}},
                           "exporterCA": {"secretName": "exporter-ca"}},
                          networkPolicy={"enabled": True}, webConfig={"secretName": "web", "tls": True})
    docs = render(chart, values)
    assert ("ConfigMap", AGENT) in [(d["kind"], d["metadata"]["name"]) for d in docs]
    for doc in docs:
        validate_object(doc, version)


def test_prune_lint_is_clean():
    import helm_python as helm
    from test_chart import CHART
    values = prune_values({"keep": PRUNE_KEEP, "exporterAuth": {"username": "agent",
                                                                "passwordSecret": {"name": "imagecap-agent"}}},
                          networkPolicy={"enabled": True}, webConfig={"secretName": "web", "tls": True})
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.34.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("prune, message", [
    ({"target": -1}, "/agent/prune/target"),
    ({"target": "45"}, "/agent/prune/target"),
    ({"maxRemovalsPerRun": 0}, "/agent/prune/maxRemovalsPerRun"),
    ({"interval": "0s"}, "/agent/prune/interval"),
    ({"grace": "soon"}, "/agent/prune/grace"),
    ({"keep": [{"match": "^x", "newest": 0}]}, "/agent/prune/keep/0"),
    ({"keep": [""]}, "/agent/prune/keep/0"),
    ({"dryRun": "no"}, "/agent/prune/dryRun"),
    ({"removeAll": True}, "removeAll"),
    ({"exporterAuth": {"password": "x"}}, "/agent/prune/exporterAuth"),
])
def test_bad_prune_values_are_refused(chart, prune, message):
    from test_chart import schema_error
    error = schema_error(chart, prune_values(prune))
    assert message in error, error


def test_every_flag_the_daemonset_passes_for_pruning_is_an_agent_flag(chart):
    values = prune_values({"exporterAuth": {"username": "agent", "passwordSecret": {"name": "imagecap-agent"}}},
                          webConfig={"secretName": "web", "tls": True})
    flags = {a.split("=", 1)[0] for a in agent_container(render(chart, values))["args"] if a.startswith("--")}
    res = subprocess.run([str(BIN), "agent", "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    known = set(re.findall(r"(?<![\w.-])--[a-z][a-z0-9.-]*[a-z0-9]", res.stdout)) | {"--log-format"}
    assert flags - known == set(), res.stdout
    assert {"--config", "--exporter-url", "--exporter-username", "--exporter-password-file",
            "--exporter-ca-file"} <= flags


def test_agent_reads_the_rendered_prune_config(chart, workdir, procs):
    """The rendered config file and pruning flags, with the mounted paths replaced by
    this test's files, make an agent that starts, reads them, and exports that
    pruning is on and a dry run; no runtime is needed for that."""
    docs = render(chart, prune_values({"target": 45, "keep": PRUNE_KEEP, "exporterAuth": {
        "username": "agent", "passwordSecret": {"name": "imagecap-agent"}}}))
    config = workdir / "config.yaml"
    config.write_text(only(docs, "ConfigMap", AGENT)["data"]["config.yaml"])
    password = workdir / "password"
    password.write_text("secret\n")
    c = agent_container(docs)
    args = c["args"][c["args"].index("agent") + 1:]
    keep = []
    for name in ("--interval", "--config", "--exporter-url", "--exporter-username", "--exporter-password-file"):
        keep += [name, flag(args, name)]
    keep[keep.index("--config") + 1] = str(config)
    keep[keep.index("--exporter-password-file") + 1] = str(password)
    # Nothing answers there: the runs remove nothing and say why.
    keep[keep.index("--exporter-url") + 1] = "http://127.0.0.1:9"
    a = Agent(workdir, "chart-node", f"unix://{workdir}/no-runtime.sock", keep)
    procs.append(a)
    text = wait_for("the prune metrics", lambda: (t := a.metrics()) and "imagecap_prune_enabled" in t and t)
    assert 'imagecap_prune_enabled{node="chart-node"} 1' in text
    assert 'imagecap_prune_dry_run{node="chart-node"} 1' in text


def test_notes_say_whether_pruning_removes(chart):
    from test_chart import render_files
    path = "imagecap-exporter/templates/NOTES.txt"
    assert "Pruning" not in render_files(chart, ON)[path]
    assert "Pruning is on as a dry run" in render_files(chart, PRUNE_ON)[path]
    notes = render_files(chart, prune_values({"dryRun": False, "target": 45}))[path]
    assert "down to\n45 images, at most 10 per run every 10m." in notes
    assert "the cap in force minus 5" in render_files(chart, prune_values({"dryRun": False}))[path]
