#!/usr/bin/env python3
"""Regenerate examples/nodes.json, a deterministic `kubectl get nodes -o json` dump.

Every node runs containerd://1.7.13 on amd64 (status.nodeInfo), so an image's size
reported by one node stands for the same image on any other. The six nodes cover
what the exporter reports:
  nublado-worker-1  reports exactly 50 images (the kubelet default cap): saturated.
                    It keeps many old lab images (old weeklies, 8.8 to 11 GiB), so
                    its smallest reported image is r27_0_0 (8.7 GiB). The kubelet
                    lists the largest images first, so w_2024_11 (8.4 GiB, as
                    worker-2 reports it) and busybox:1.36 can never appear in its
                    list, pulled or not: "unlistable".
  nublado-worker-2  reports 137 images: more than the default, so its kubelet runs
                    with a larger or no cap and it is treated as unlimited. An old
                    weekly, w_2024_08, lingers on it: with `newest: 2` in the config
                    it is not wanted, so no other node is told it misses it.
  nublado-worker-3  reports 14 images and lacks a wanted image: "absent".
  nublado-worker-4  reports 46 of 50 (92%): near the cap. One of its images lists
                    five digests and no tag (the kubelet's 5-name cut), so it must be
                    matched by digest. Tainted dedicated=lab:NoSchedule, which the
                    config's tolerations tolerate: still eligible.
  control-plane-1   cordoned and without the prepull label: not eligible.
  nublado-gpu-1     has the prepull label but is tainted dedicated=gpu:NoSchedule,
                    which the lab does not tolerate: not eligible, nothing missing.

With --nublado it prints instead what Nublado's controller would answer on
GET /nublado/spawner/v1/prepulls for these nodes (examples/nublado-prepulls.json,
for `check --nublado-file`), computed as Nublado computes it: the nodes carrying
the lab label, eligible when every NoSchedule/NoExecute taint is tolerated (the GPU
node is not, with Nublado's comment); an image is on a node when the first digest
of one of its status.images entries is the image's digest; it is prepulled when it
is on every eligible node, else pending with the eligible nodes that lack it in
`missing`; its size is what a node reports. r27_0_0 is prepulled; w_2024_10 is
pending (missing on nublado-worker-3); w_2024_11 is pending with only
nublado-worker-1 missing (worker-4's five-digest entry starts with its digest).

With --agents it prints what the node agents on nublado-worker-1 and
nublado-worker-3 would answer on /v1/images (examples/agents.json, for `check
--agents-file`): worker-1's runtime holds its 50 reported images and 13 more, all
smaller than its smallest reported one, w_2024_11 and busybox:1.36 among them, so
those are "hidden"; worker-3's holds exactly what it reports. The other nodes have
no agent answer.

Usage: python3 examples/make_nodes.py > examples/nodes.json
       python3 examples/make_nodes.py --nublado > examples/nublado-prepulls.json
       python3 examples/make_nodes.py --agents > examples/agents.json
"""
import hashlib
import json
import sys


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


LAB = "ghcr.io/lsst-sqre/sciplat-lab"
GiB = 1024**3


def lab(tag, size, digests=1, with_tag=True):
    names = [f"{LAB}@{digest(tag + str(i))}" for i in range(digests)]
    if with_tag:
        names.append(f"{LAB}:{tag}")
    return {"names": names[:5], "sizeBytes": size}


def filler(n, seed):
    """n ordinary images with real-looking names, 20 MB to ~3 GB."""
    repos = [
        "docker.io/library/python", "docker.io/library/postgres", "quay.io/prometheus/node-exporter",
        "registry.k8s.io/kube-proxy", "docker.io/grafana/grafana", "ghcr.io/fluxcd/source-controller",
        "quay.io/jetstack/cert-manager-controller", "docker.io/bitnami/redis", "docker.io/library/nginx",
        "registry.k8s.io/pause", "ghcr.io/lsst-sqre/nublado-controller", "docker.io/library/alpine",
    ]
    out = []
    for i in range(n):
        repo = repos[(i + seed) % len(repos)]
        tag = f"v1.{i}.{seed}"
        h = int(hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:8], 16)
        size = 20_000_000 + h % 3_000_000_000
        out.append({"names": [f"{repo}@{digest(repo + tag)}", f"{repo}:{tag}"], "sizeBytes": size})
    return out


BUSYBOX = {"names": [f"docker.io/library/busybox@{digest('busybox')}", "docker.io/library/busybox:1.36"],
           "sizeBytes": 4_261_550}


def node_info(name):
    """status.nodeInfo as a real node reports it; ids derived from the name."""
    h = hashlib.sha256(name.encode()).hexdigest()
    return {"architecture": "amd64", "bootID": f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
            "containerRuntimeVersion": "containerd://1.7.13", "kernelVersion": "6.1.0-18-amd64",
            "kubeProxyVersion": "v1.31.4", "kubeletVersion": "v1.31.4", "machineID": h[32:64],
            "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
            "systemUUID": f"{h[32:40]}-{h[40:44]}-{h[44:48]}-{h[48:52]}-{h[52:64]}"}


def node(name, images, capacity, allocatable, eligible=True, unschedulable=False, extra_labels=None,
         taints=None):
    labels = {"kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if eligible:
        labels["nublado.lsst.io/permitted"] = "true"
    labels.update(extra_labels or {})
    images = sorted(images, key=lambda im: im["sizeBytes"], reverse=True)
    n = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "resourceVersion": "1000"},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {
            "capacity": {"cpu": "16", "memory": "65842580Ki", "ephemeral-storage": capacity, "pods": "110"},
            "allocatable": {"cpu": "15800m", "memory": "63647636Ki", "ephemeral-storage": allocatable, "pods": "110"},
            "images": images,
            "nodeInfo": node_info(name),
        },
    }
    if unschedulable:
        n["spec"]["unschedulable"] = True
        n["spec"]["taints"] = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                                "timeAdded": "2024-03-01T12:00:00Z"}]
    if taints:
        n["spec"]["taints"] = taints
    return n


def old_weeklies(n):
    """n old lab weeklies of 2023, 8.8 to 11 GiB: what a long-lived lab node keeps."""
    out = []
    for week in range(1, n + 1):
        h = int(hashlib.sha256(f"w_2023_{week:02d}".encode()).hexdigest()[:8], 16)
        out.append(lab(f"w_2023_{week:02d}", int(8.8 * GiB) + h % int(2.2 * GiB)))
    return out


w08 = lab("w_2024_08", int(8.9 * GiB))
w10 = lab("w_2024_10", 9 * GiB)
w11 = lab("w_2024_11", int(8.4 * GiB))
r27 = lab("r27_0_0", int(8.7 * GiB))
w11_cut = lab("w_2024_11", int(8.4 * GiB), digests=5, with_tag=False)

nodes = [
    # Saturated: 50 entries, all at least r27_0_0's 8.7 GiB; w_2024_11 and busybox are
    # in its runtime (see --agents) but smaller than everything listed.
    node("nublado-worker-1", [w10, r27] + old_weeklies(48), "1073741824Ki", "989560464Ki"),
    node("nublado-worker-2", [w08, w10, w11, r27, BUSYBOX] + filler(132, 2), "1953125000Ki", "1800000000Ki"),
    node("nublado-worker-3", [w11, r27, BUSYBOX] + filler(11, 3), "500Gi", "460Gi"),
    node("nublado-worker-4", [w10, w11_cut, r27, BUSYBOX] + filler(42, 4), "200G", "184G",
         taints=[{"key": "dedicated", "value": "lab", "effect": "NoSchedule"}]),
    node("control-plane-1", filler(8, 5), "100Gi", "95551679124", eligible=False, unschedulable=True,
         extra_labels={"node-role.kubernetes.io/control-plane": ""}),
    node("nublado-gpu-1", [BUSYBOX] + filler(20, 6), "2Ti", "1900Gi",
         extra_labels={"nvidia.com/gpu.present": "true"},
         taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
]

# The five-digest entry shares w_2024_11's first digest with nublado-worker-2's entry,
# as the same image pulled through one repo digest would.
assert w11_cut["names"][0] == w11["names"][0]
# nublado-worker-1's list is what the kubelet keeps of its runtime: everything listed
# is larger than what falls off (w_2024_11, busybox).
assert min(e["sizeBytes"] for e in nodes[0]["status"]["images"]) > w11["sizeBytes"] > BUSYBOX["sizeBytes"]
assert len(nodes[0]["status"]["images"]) == 50


# What Nublado's controller serves for these nodes (controller/services/image.py
# prepull_status, storage/kubernetes/node.py is_tolerated).
LAB_SELECTOR = {"nublado.lsst.io/permitted": "true"}
LAB_TOLERATIONS = [{"key": "dedicated", "operator": "Equal", "value": "lab", "effect": "NoSchedule"}]


def nublado_toleration(n):
    """(eligible, comment) as Nublado's is_tolerated gives them."""
    for taint in n["spec"].get("taints", []):
        if taint["effect"] == "PreferNoSchedule":
            continue
        if not any(t.get("effect") in (None, taint["effect"]) and t["key"] == taint["key"]
                   and (t["operator"] == "Exists" or t.get("value") == taint.get("value"))
                   for t in LAB_TOLERATIONS):
            what = f"{taint['key']} = {taint['value']}" if taint.get("value") else taint["key"]
            return False, f"Node is tainted ({taint['effect']}, {what})"
    return True, None


def first_digest(entry):
    """The digest Nublado reads from a status.images entry: the first one only."""
    return next((n.split("@", 1)[1] for n in entry["names"] if "@" in n), None)


def display_name(tag):
    if tag.startswith("w_"):
        return f"Weekly {tag[2:]}"
    major, minor, patch = tag[1:].split("_")
    return f"Release r{major}.{minor}.{patch}"


lab_nodes = [n for n in nodes if all(n["metadata"]["labels"].get(k) == v for k, v in LAB_SELECTOR.items())]
verdicts = {n["metadata"]["name"]: nublado_toleration(n) for n in lab_nodes}
eligible = sorted(name for name, (ok, _) in verdicts.items() if ok)
prepulls = {
    "config": {"source": {"type": "docker", "registry": "ghcr.io", "repository": "lsst-sqre/sciplat-lab"},
               "refresh_interval": 300.0, "prepull_timeout": 600.0, "recommended_tag": "recommended",
               "num_releases": 1, "num_weeklies": 2, "num_dailies": 0, "cycle": None, "pin": [],
               "alias_tags": []},
    "images": {"prepulled": [], "pending": []},
    "nodes": [{"name": name, "eligible": ok, "comment": comment, "cached": []}
              for name, (ok, comment) in verdicts.items()],
}
# Nublado's order: the newest weeklies, then the release.
for tag, entry in (("w_2024_11", w11), ("w_2024_10", w10), ("r27_0_0", r27)):
    digest_ = first_digest(entry)
    on = sorted(n["metadata"]["name"] for n in lab_nodes
                if any(first_digest(e) == digest_ for e in n["status"]["images"]))
    image = {"reference": f"{LAB}:{tag}", "tag": tag, "name": display_name(tag), "digest": digest_,
             "size": entry["sizeBytes"], "nodes": on, "missing": []}
    missing = [n for n in eligible if n not in on]
    if missing:
        image["missing"] = missing
        prepulls["images"]["pending"].append(image)
    else:
        prepulls["images"]["prepulled"].append(image)
    for n in prepulls["nodes"]:
        if n["name"] in on:
            n["cached"].append(image["reference"])

# What the example promises: w_2024_11 pending on the at-cap node alone.
assert [(i["tag"], i["missing"]) for i in prepulls["images"]["pending"]] == [
    ("w_2024_11", ["nublado-worker-1"]), ("w_2024_10", ["nublado-worker-3"])]
assert [i["tag"] for i in prepulls["images"]["prepulled"]] == ["r27_0_0"]


def runtime_image(entry):
    """An image as CRI ListImages lists it, from a status.images entry."""
    return {"id": digest("id" + entry["names"][0]),
            "repoTags": [n for n in entry["names"] if "@" not in n],
            "repoDigests": [n for n in entry["names"] if "@" in n],
            "size": entry["sizeBytes"]}


def agent_answer(node_name, extra):
    n = next(n for n in nodes if n["metadata"]["name"] == node_name)
    images = n["status"]["images"] + extra
    return {"node": node_name, "collectedAt": "2024-03-18T09:00:00Z",
            "images": [runtime_image(e) for e in images],
            "imageFsUsedBytes": sum(e["sizeBytes"] for e in images)}


agents = [
    agent_answer("nublado-worker-1", [w11, BUSYBOX] + filler(11, 7)),
    agent_answer("nublado-worker-3", []),
]

if sys.argv[1:] == ["--agents"]:
    print(json.dumps(agents, indent=2))
elif sys.argv[1:] == ["--nublado"]:
    print(json.dumps(prepulls, indent=2))
else:
    print(json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": nodes},
                     indent=2))
