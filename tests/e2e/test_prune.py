"""The node agent's pruning against a real containerd: 60 locally built images,
two used by real containers created through CRI (one running, one only
created), three wanted by a real exporter (`/v1/wanted`), `keep` rules, and the
sandbox image (the oldest image, kept because the runtime runs its sandboxes
from it). Shown: a dry run removes nothing and exports exactly the plan;
enabled, the node ends at the target with every protected image still there and
the oldest unprotected ones gone, `maxRemovalsPerRun` a run; with the exporter
unreachable nothing is removed; an image put into use between the plan and its
removal survives."""
from __future__ import annotations

import json
import re
import time

import pytest

import containerd as containerd_harness
from containerd import ImageRecipe, make_images, pause_image, remove_images
import shutil
import subprocess

from harness import Prometheus, start_agent, start_exporter, wait_for

cri = pytest.importorskip("cri", reason="grpcio and grpcio-tools (requirements-dev.txt) are not installed")

NODE = "prune-node"
REPO = "imagecap.test/prune"
# img-00 .. img-55, created one day apart (img-00 oldest), imported in another
# order so that the runtime's order is not the age order; keep:1 .. keep:4 newest.
AGED = [f"{REPO}/img-{i:02d}:v1" for i in range(56)]
KEEP = [f"{REPO}/keep:{i}" for i in range(1, 5)]
USED = AGED[:2]          # containers: img-00 running, img-01 created
WANTED = AGED[2:5]       # the exporter's prepull.images
KEEP_RULE = {"match": r"^imagecap\.test/prune/keep:", "newest": 2}   # keep:3, keep:4


def created(i: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_577_836_800 + i * 86_400))


@pytest.fixture(scope="module")
def node(containerd, tmp_path_factory):
    """The images, the sandbox and two containers; everything removed afterwards."""
    reason = containerd_harness.pause_unavailable_reason()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("prune-images")
    pause = containerd_harness.build_pause_binary(d)
    # The sandbox image is the oldest: only its protection keeps it.
    recipes = [pause_image(pause, created=created(-100))]
    order = list(range(len(AGED)))
    order = order[1::2] + order[::2]
    for i in order:
        recipes.append(ImageRecipe(AGED[i], 500 + i, files={"/bin/pause": pause},
                                   entrypoint=["/bin/pause"], created=created(i)))
    for j, name in enumerate(KEEP):
        recipes.append(ImageRecipe(name, 400 + j, created=created(1000 + j)))
    built = {b.name: b for b in make_images(d, containerd, recipes)}
    sandbox = cri.run_host_network_sandbox(containerd.socket, "prune")
    config = cri.host_network_sandbox_config("prune")
    cri.create_container(containerd.socket, sandbox, config, built[USED[0]].id, "running", start=True)
    cri.create_container(containerd.socket, sandbox, config, USED[1], "created", start=False)
    yield built
    errors = cri.remove_all_sandboxes(containerd.socket)
    if containerd.alive():
        remove_images(containerd, [b for b in built.values() if held(containerd, b.name)])
    assert not errors, errors


def held(containerd, name: str) -> bool:
    r = containerd.ctr("images", "ls", "-q", check=False)
    return name in r.stdout.split()


def _list_images(containerd):
    pb = cri.messages()
    return cri._call(containerd.socket, "ImageService", "ListImages", pb.ListImagesRequest()).images


def ours(containerd) -> set[str]:
    """Our images the runtime still holds, by tag."""
    return {t for img in _list_images(containerd) for t in img.repo_tags if t.startswith(REPO)}


@pytest.fixture(scope="module")
def exporter(node, tmp_path_factory):
    d = tmp_path_factory.mktemp("prune-exporter")
    nodes = d / "nodes.json"
    nodes.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "status": {"images": [{"names": [n], "sizeBytes": 1000} for n in USED],
                   "capacity": {"ephemeral-storage": "100Gi"}},
    }]}))
    config = d / "config.yaml"
    config.write_text("prepull:\n  images:\n" + "".join(f"    - {w}\n" for w in WANTED))
    ex = start_exporter(d, nodes=nodes, config=config)
    yield ex
    ex.stop()


def agent_config(workdir, **prune) -> str:
    path = workdir / "agent.yaml"
    settings = {"enabled": True, "interval": "1s", "grace": "0s", "keep": [KEEP_RULE], **prune}
    path.write_text(json.dumps({"prune": settings}))
    return str(path)


def sample(text: str, series: str) -> float | None:
    m = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def plan_of(agent) -> dict | None:
    r = agent.get("/v1/images")
    return r.json().get("prune") if r.status_code == 200 else None


def test_a_dry_run_removes_nothing_and_exports_the_plan(containerd, node, exporter, workdir, procs):
    before = ours(containerd)
    assert len(before) == 60
    target = len(_list_images(containerd)) - 7
    cfg = agent_config(workdir, dryRun=True, target=target, maxRemovalsPerRun=10)
    agent = start_agent(workdir, NODE, containerd.endpoint, extra=["--config", cfg, "--exporter-url", exporter.url])
    procs.append(agent)
    plan = wait_for("a plan in /v1/images", lambda: plan_of(agent))
    removals = [i["name"] for i in plan["images"] if i["action"] == "remove"]
    # The seven oldest unprotected images, oldest first.
    assert removals == AGED[5:12], plan
    assert plan["remove"] == 7 and plan["target"] == target
    by_name = {i["name"]: i for i in plan["images"]}
    for name in USED:
        assert by_name[name]["action"] == "keep" and by_name[name]["inUse"], by_name[name]
    for name in WANTED:
        assert by_name[name]["reason"].startswith("wanted on this node"), by_name[name]
    for name in KEEP[2:]:
        assert "keep rule" in by_name[name]["reason"], by_name[name]
    for name in KEEP[:2]:
        assert by_name[name]["action"] == "keep" and "target" in by_name[name]["reason"]
    # The sandbox image, the oldest of all: pinned where the runtime pins it
    # (containerd 1.7+), and the runtime's sandbox image (CRI Status) either way.
    pause = by_name[containerd_harness.PAUSE_IMAGE]
    pinned = [i.pinned for i in _list_images(containerd) if containerd_harness.PAUSE_IMAGE in i.repo_tags]
    assert pause["action"] == "keep", pause
    assert pause.get("pinned", False) == pinned[0], (pause, pinned)
    assert pause["sandbox"] is True, pause
    if not pinned[0]:
        assert pause["reason"] == "the runtime runs its pod sandboxes from it", pause
    m = agent.metrics()
    assert sample(m, f'imagecap_prune_candidates{{node="{NODE}"}}') == 7
    assert sample(m, f'imagecap_prune_dry_run{{node="{NODE}"}}') == 1
    assert sample(m, f'imagecap_prune_enabled{{node="{NODE}"}}') == 1
    assert sample(m, f'imagecap_prune_removed_images_total{{node="{NODE}"}}') == 0
    res = subprocess.run([shutil.which("promtool") or "promtool", "check", "metrics"], input=m,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
    # A real Prometheus scrapes the plan.
    prom_dir = workdir / "prometheus"
    prom_dir.mkdir()
    prom = Prometheus(prom_dir, [agent.addr], job="imagecap-agent")
    procs.append(prom)
    prom.wait_scraped("imagecap-agent")
    for expr, want in [(f'imagecap_prune_candidates{{node="{NODE}"}}', "7"),
                       (f'imagecap_prune_dry_run{{node="{NODE}"}}', "1"),
                       (f'imagecap_prune_removed_images_total{{node="{NODE}"}}', "0"),
                       (f'time() - imagecap_prune_last_run_timestamp_seconds{{node="{NODE}"}} < 60', None)]:
        result = wait_for(expr, lambda: prom.query(expr)["data"]["result"])
        if want is not None:
            assert result[0]["value"][1] == want, (expr, result)
    time.sleep(2.5)   # more runs: still nothing removed
    assert ours(containerd) == before
    assert "dry run; would remove 7 image(s)" in agent.log()


def test_the_exporter_unreachable_means_nothing_removed(containerd, node, workdir, procs):
    before = ours(containerd)
    cfg = agent_config(workdir, dryRun=False, target=0, maxRemovalsPerRun=50)
    agent = start_agent(workdir, NODE, containerd.endpoint,
                        extra=["--config", cfg, "--exporter-url", "http://127.0.0.1:9"])
    procs.append(agent)
    wait_for("a counted failure to read the wanted images", lambda: (sample(
        agent.metrics(), f'imagecap_prune_errors_total{{node="{NODE}",reason="wanted"}}') or 0) >= 2)
    plan = plan_of(agent)
    assert plan["remove"] == 0 and plan["blocked"], plan
    assert ours(containerd) == before
    assert sample(agent.metrics(), f'imagecap_prune_removed_images_total{{node="{NODE}"}}') == 0
    assert "pruning removed nothing this run" in agent.log()


def test_an_image_put_into_use_before_removal_stays(containerd, node, exporter, workdir, procs):
    target = len(_list_images(containerd)) - 1
    victim = AGED[5]
    cfg = agent_config(workdir, dryRun=False, target=target, maxRemovalsPerRun=1, grace="4s", interval="1h")
    agent = start_agent(workdir, NODE, containerd.endpoint, extra=["--config", cfg, "--exporter-url", exporter.url])
    procs.append(agent)
    plan = wait_for("the plan to remove one image", lambda: plan_of(agent))
    assert [i["name"] for i in plan["images"] if i["action"] == "remove"] == [victim]
    sandbox = cri.run_host_network_sandbox(containerd.socket, "late-user")
    cri.create_container(containerd.socket, sandbox, cri.host_network_sandbox_config("late-user"),
                         victim, "late", start=False)
    wait_for("the run to end", lambda: "a container started using it after the plan" in agent.log(), timeout=20)
    assert victim in ours(containerd)
    assert sample(agent.metrics(), f'imagecap_prune_removed_images_total{{node="{NODE}"}}') == 0
    cri.remove_sandbox(containerd.socket, sandbox)


def test_enabled_it_prunes_to_the_target_keeping_every_protected_image(
        containerd, node, exporter, workdir, procs):
    before = ours(containerd)
    held_now = len(_list_images(containerd))
    target = held_now - 8
    cfg = agent_config(workdir, dryRun=False, target=target, maxRemovalsPerRun=5, interval="3s")
    agent = start_agent(workdir, NODE, containerd.endpoint, extra=["--config", cfg, "--exporter-url", exporter.url])
    procs.append(agent)
    removed = lambda: sample(agent.metrics(), f'imagecap_prune_removed_images_total{{node="{NODE}"}}') or 0
    wait_for("the first run's removals", lambda: removed() >= 5)
    assert removed() == 5, "maxRemovalsPerRun holds"
    wait_for("the node at its target", lambda: len(_list_images(containerd)) == target, timeout=30)
    time.sleep(3.5)   # one more run: already at the target
    assert removed() == 8
    gone = before - ours(containerd)
    assert gone == set(AGED[5:13]), sorted(gone)
    for name in [*USED, *WANTED, *KEEP[2:]]:
        assert name in ours(containerd), name
    assert held(containerd, containerd_harness.PAUSE_IMAGE)
    m = agent.metrics()
    assert sample(m, f'imagecap_prune_removed_bytes_total{{node="{NODE}"}}') > 0
    assert sample(m, f'imagecap_prune_candidates{{node="{NODE}"}}') == 0
    assert sample(m, f'imagecap_prune_errors_total{{node="{NODE}",reason="remove"}}') == 0
    assert len(re.findall(r"removed image to keep the node under its cap", agent.log())) == 8


def test_the_exporter_answers_what_is_wanted_on_a_node(exporter):
    r = exporter.get(f"/v1/wanted?node={NODE}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == {"node": NODE, "maxImages": 50, "complete": True,
                    "images": sorted(WANTED)}, body
    r = exporter.get("/v1/wanted?node=nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = exporter.get("/v1/wanted")
    assert r.status_code == 400 and "node=NAME" in r.json()["error"]
