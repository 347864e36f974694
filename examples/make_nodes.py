#!/usr/bin/env python3
"""Regenerate examples/nodes.json, a deterministic `kubectl get nodes -o json` dump.

The six nodes cover what the exporter reports:
  nublado-worker-1  reports exactly 50 images (the kubelet default cap): saturated,
                    so a wanted image it does not show is "unverifiable".
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
for `check --nublado-file`): w_2024_11 known by digest and pending (Nublado, reading
the same capped lists, misses it on nublado-worker-1 and on nublado-worker-4, whose
entry lost its tag), and the GPU node ineligible with Nublado's comment.

With --agents it prints what the node agents on nublado-worker-1 and
nublado-worker-3 would answer on /v1/images (examples/agents.json, for `check
--agents-file`): worker-1's runtime holds its 50 reported images and 13 more,
w_2024_11 among them, so that image is "hidden", not just unverifiable; worker-3's
holds exactly what it reports. The other nodes have no agent answer.

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


def node(name, images, capacity, allocatable, eligible=True, unschedulable=False, extra_labels=None,
         taints=None):
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
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
            "nodeInfo": {"kubeletVersion": "v1.31.4", "containerRuntimeVersion": "containerd://1.7.24"},
        },
    }
    if unschedulable:
        n["spec"]["unschedulable"] = True
        n["spec"]["taints"] = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                                "timeAdded": "2024-03-01T12:00:00Z"}]
    if taints:
        n["spec"]["taints"] = taints
    return n


w08 = lab("w_2024_08", int(8.9 * GiB))
w10 = lab("w_2024_10", 9 * GiB)
w11 = lab("w_2024_11", int(9.2 * GiB))
r27 = lab("r27_0_0", int(8.7 * GiB))
w11_cut = lab("w_2024_11", int(9.2 * GiB), digests=5, with_tag=False)

nodes = [
    # Saturated: 50 entries; w_2024_11 is on the node but fell off the list.
    node("nublado-worker-1", [w10, r27, BUSYBOX] + filler(47, 1), "1073741824Ki", "989560464Ki"),
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



def nublado_image(tag, digest_, nodes_with, missing):
    return {"reference": f"{LAB}:{tag}", "tag": tag, "name": f"Weekly {tag[2:]}" if tag.startswith("w_")
            else f"Release {tag[1:]}", "digest": digest_, "size": None,
            "nodes": nodes_with, "missing": missing}


LAB_NODES = ["nublado-worker-1", "nublado-worker-2", "nublado-worker-3", "nublado-worker-4"]
prepulls = {
    "config": {"source": {"type": "docker", "registry": "ghcr.io", "repository": "lsst-sqre/sciplat-lab"},
               "recommended_tag": "recommended", "num_releases": 1, "num_weeklies": 2, "num_dailies": 0,
               "cycle": None, "pin": [], "alias_tags": []},
    "images": {
        "prepulled": [nublado_image("r27_0_0", None, LAB_NODES, [])],
        "pending": [
            nublado_image("w_2024_10", None, ["nublado-worker-1", "nublado-worker-2", "nublado-worker-4"],
                          ["nublado-worker-3"]),
            nublado_image("w_2024_11", w11["names"][0].split("@")[1], ["nublado-worker-2", "nublado-worker-3"],
                          ["nublado-worker-1", "nublado-worker-4"]),
        ],
    },
    "nodes": [{"name": n, "eligible": True, "comment": None, "cached": []} for n in LAB_NODES] + [
        {"name": "nublado-gpu-1", "eligible": False, "comment": "Node is tainted (dedicated=gpu:NoSchedule)",
         "cached": []},
    ],
}

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
    agent_answer("nublado-worker-1", [w11] + filler(12, 7)),
    agent_answer("nublado-worker-3", []),
]

if sys.argv[1:] == ["--agents"]:
    print(json.dumps(agents, indent=2))
elif sys.argv[1:] == ["--nublado"]:
    print(json.dumps(prepulls, indent=2))
else:
    print(json.dumps({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": nodes},
                     indent=2))
