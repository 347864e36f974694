"""The node agent against a real containerd: every image the runtime holds, through
CRI, and what happens while the runtime restarts."""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from containerd import ImportedImage, make_images, remove_images
from harness import BIN, ROOT, start_agent, wait_for

NODE = "worker-7"
# Distinct sizes: a layer file of 1000 * (i + 1) bytes for image i.
IMAGES = [(f"imagecap.test/agent/img-{i:02d}:v{i}", 1000 * (i + 1)) for i in range(60)]


@pytest.fixture(scope="module")
def sixty_images(containerd, tmp_path_factory) -> list[ImportedImage]:
    """60 one-layer images in the session's containerd, removed afterwards."""
    images = make_images(tmp_path_factory.mktemp("images"), containerd, IMAGES)
    yield images
    if containerd.alive():
        remove_images(containerd, images)


@pytest.fixture
def agent(containerd, sixty_images, workdir, procs):
    a = start_agent(workdir, NODE, containerd.endpoint, interval="1s")
    procs.append(a)
    return a


def sample(text: str, series: str) -> float | None:
    """The value of one series in a Prometheus text exposition."""
    m = re.search(r"^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else None


def report(agent) -> dict | None:
    r = agent.get("/v1/images")
    return r.json() if r.status_code == 200 else None


def test_lists_every_image_with_tags_digests_and_sizes(agent, sixty_images):
    body = wait_for("the agent's 60 images", lambda: (b := report(agent)) and len(b["images"]) == 60 and b)
    assert body["node"] == NODE
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["collectedAt"])
    by_tag = {img["repoTags"][0]: img for img in body["images"] if img["repoTags"]}
    assert len(by_tag) == 60
    for image in sixty_images:
        got = by_tag[image.name]
        assert got["id"] == image.id
        assert got["repoTags"] == [image.name]
        assert got["repoDigests"] == [image.repo_digest]
        assert got["size"] == image.size, image.name
    assert len({img["size"] for img in body["images"]}) == 60, "distinct sizes"
    # ImageFsInfo answered (the runtime refreshes the figure itself, so it may
    # still be 0 right after start; the metrics test waits for it to grow).
    assert isinstance(body["imageFsUsedBytes"], int)

    # The report is served gzip'd to clients that accept it.
    r = agent.get("/v1/images", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"
    assert r.headers["content-type"] == "application/json"
    assert len(r.json()["images"]) == 60
    assert agent.get("/readyz").status_code == 200


def test_metrics_describe_the_runtime_and_pass_promtool(agent, sixty_images):
    node = f'{{node="{NODE}"}}'
    text = wait_for("imagecap_runtime_images 60",
                    lambda: (t := agent.metrics()) and sample(t, f"imagecap_runtime_images{node}") == 60 and t)
    assert sample(text, f"imagecap_runtime_up{node}") == 1
    assert sample(text, f"imagecap_runtime_image_bytes{node}") == sum(i.size for i in sixty_images)
    # The unpacked files alone take the sum of the layer files' sizes; the runtime
    # refreshes its figure on its own schedule.
    files = sum(size for _, size in IMAGES)
    text = wait_for("a plausible image fs use", lambda: (t := agent.metrics()) and
                    files <= (sample(t, f"imagecap_runtime_image_fs_used_bytes{node}") or 0) < 1 << 30 and t)
    assert sample(text, f'imagecap_runtime_errors_total{{node="{NODE}",call="list_images"}}') == 0
    assert sample(text, f"imagecap_runtime_last_success_timestamp_seconds{node}") > 1.7e9
    assert re.search(r'^imagecap_build_info\{version="[^"]+",revision="[^"]+",rustversion="[^"]+"\} 1$', text, re.MULTILINE)

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (scripts/setup.sh installs it)"
    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "" and res.stderr.strip() == "", res.stdout + res.stderr

    om = agent.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")


def test_keeps_serving_while_containerd_restarts(agent, containerd, sixty_images):
    node = f'{{node="{NODE}"}}'
    wait_for("up 1", lambda: sample(agent.metrics(), f"imagecap_runtime_up{node}") == 1)
    errors = f'imagecap_runtime_errors_total{{node="{NODE}",call="list_images"}}'
    containerd.stop()
    try:
        text = wait_for("imagecap_runtime_up 0 while containerd is stopped",
                        lambda: (t := agent.metrics()) and sample(t, f"imagecap_runtime_up{node}") == 0 and t)
        assert agent.alive()
        # The last answer is still described and served.
        assert sample(text, f"imagecap_runtime_images{node}") == 60
        assert sample(text, errors) >= 1
        assert len(report(agent)["images"]) == 60
        assert agent.get("/readyz").status_code == 200
        wait_for("a second failed reading", lambda: sample(agent.metrics(), errors) >= 2)
        assert agent.alive()
    finally:
        containerd.start()
    text = wait_for("imagecap_runtime_up 1 after the restart",
                    lambda: (t := agent.metrics()) and sample(t, f"imagecap_runtime_up{node}") == 1 and t)
    assert sample(text, f"imagecap_runtime_images{node}") == 60
    failures = sample(text, errors)
    wait_for("a reading after the restart", lambda: len(report(agent)["images"]) == 60)
    assert sample(agent.metrics(), errors) == failures, "no failure once recovered"
    # Failures are logged, not once per tick.
    warnings = [line for line in agent.log().splitlines() if "CRI ListImages on" in line]
    assert 1 <= len(warnings) < failures, agent.log()


def test_before_any_answer_nothing_is_made_up(workdir, procs):
    a = start_agent(workdir, "lonely", f"unix://{workdir}/missing.sock", interval="1s")
    procs.append(a)
    wait_for("a failed reading", lambda: "missing.sock" in a.get("/readyz").text)
    r = a.get("/readyz")
    assert r.status_code == 503 and r.text.startswith("not ready:"), r.text
    r = a.get("/v1/images")
    assert r.status_code == 503
    assert "no image list yet" in r.json()["error"]
    text = a.metrics()
    assert sample(text, 'imagecap_runtime_up{node="lonely"}') == 0
    assert "imagecap_runtime_images{" not in text
    wait_for("counted failures",
             lambda: sample(a.metrics(), 'imagecap_runtime_errors_total{node="lonely",call="list_images"}') >= 1)
    assert a.get("/healthz").status_code == 200
    assert a.alive()
    # Probes and readers refused before the first reading are answers, not
    # failures: no ERROR line for each.
    errors = [l for l in a.log().splitlines() if '"level":"ERROR"' in l]
    assert not errors, errors
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_web_config_protects_the_data_not_the_probes(workdir, procs):
    """The agent's HTTP side is serve's: basic auth from --web.config.file on
    /metrics and /v1/images, the probes open; a bad web config exits 2."""
    import bcrypt
    cfg = workdir / "web.yml"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    cfg.write_text(f"basic_auth_users:\n  exporter: '{hashed}'\n")
    a = start_agent(workdir, "guarded", f"unix://{workdir}/none.sock", extra=["--web.config.file", str(cfg)])
    procs.append(a)
    assert a.get("/metrics").status_code == 401
    assert a.get("/v1/images").status_code == 401
    assert a.get("/v1/images", auth=("exporter", "wrong")).status_code == 401
    assert a.get("/metrics", auth=("exporter", "s3cret")).status_code == 200
    assert a.get("/v1/images", auth=("exporter", "s3cret")).status_code == 503, "authorized, nothing read yet"
    assert a.get("/healthz").status_code == 200
    assert a.get("/readyz").status_code == 503

    # Emptied at runtime: refused, the users stay until the next start.
    cfg.write_text("")
    wait_for("the emptied web config to be refused",
             lambda: "takes effect only at the next start" in a.log(), timeout=30)
    assert a.get("/v1/images").status_code == 401
    assert a.get("/metrics", auth=("exporter", "s3cret")).status_code == 200

    cfg.write_text("basic_auth_users:\n  exporter: plaintext\n")
    res = subprocess.run([str(BIN), "agent", "--node-name", "n", "--listen", "127.0.0.1:0",
                          "--web.config.file", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "basic_auth_users.exporter" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--node-name", "n", "--cri-endpoint", "tcp://127.0.0.1:1"], "unix socket"),
    (["--node-name", ""], "must not be empty"),
])
def test_bad_flags_exit_2(args, message):
    res = subprocess.run([str(BIN), "agent", *args], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 2, res.stderr
    assert message in res.stderr


def readme_agent_table() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label keys), from the README's agent metric table."""
    section = (ROOT / "README.md").read_text().split("\n## Node agent\n")[1].split("\n## ")[0]
    table = section.split("| metric | type | labels | meaning |")[1].split("\n\n")[0]
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.split("|")]
            labels = {label.strip().strip("`") for label in cells[3].split(",") if label.strip()}
            rows[cells[1].strip("`")] = (cells[2], labels)
    return rows


def exposed(text: str) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label keys), from a Prometheus text exposition."""
    families: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            families[name] = (kind, set())
        elif line and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? ", line)
            families[m.group(1)][1].update(re.findall(r'(\w+)="', m.group(2) or ""))
    return families


# Families the agent serves only with pruning enabled (agent --config, prune.enabled).
WITH_PRUNING = {"imagecap_prune_candidates", "imagecap_prune_last_run_timestamp_seconds"}


def test_the_readme_agent_metric_table_matches_what_is_served(agent):
    text = wait_for("every agent family with samples", lambda: (t := agent.metrics()) and
                    "imagecap_runtime_image_fs_used_bytes{" in t and t)
    documented = readme_agent_table()
    assert len(documented) >= 14
    assert WITH_PRUNING <= set(documented)
    assert exposed(text) == {name: shape for name, shape in documented.items() if name not in WITH_PRUNING}


def test_with_pruning_the_agent_serves_the_whole_readme_table(containerd, sixty_images, workdir, procs):
    """A dry run with no exporter: it plans, removes nothing, and serves every family."""
    config = workdir / "agent.yaml"
    config.write_text("prune:\n  enabled: true\n  dryRun: true\n")
    a = start_agent(workdir, "prune-table", containerd.endpoint, interval="1s", extra=["--config", str(config)])
    procs.append(a)
    text = wait_for("a pruning run and the image families", lambda: (t := a.metrics()) and
                    "imagecap_prune_last_run_timestamp_seconds{" in t and
                    "imagecap_runtime_image_fs_used_bytes{" in t and t)
    assert exposed(text) == readme_agent_table()
    assert 'imagecap_prune_removed_images_total{node="prune-table"} 0' in text


def test_an_unchanged_list_answers_304_and_a_new_image_changes_the_tag(agent, containerd, sixty_images,
                                                                        tmp_path):
    """The exporter's conditional read against the runtime's real list: a later
    reading of the same images keeps the tag (a 304, no body, a newer reading
    time in its header); an image more changes it."""
    def conditional():
        r = agent.get("/v1/images")
        if r.status_code != 200 or len(r.json()["images"]) != 60:
            return None
        assert r.headers["imagecap-collected-at"] == r.json()["collectedAt"]
        time.sleep(2.2)  # a reading of the runtime a second later at least (--interval 1s)
        again = agent.get("/v1/images", headers={"If-None-Match": r.headers["etag"]})
        return again.status_code == 304 and (r, again)

    first, again = wait_for("a 304 to the current tag", conditional)
    tag = first.headers["etag"]
    assert again.content == b""
    assert again.headers["etag"] == tag
    assert again.headers["imagecap-collected-at"] > first.headers["imagecap-collected-at"]
    assert "content-encoding" not in again.headers

    extra = make_images(tmp_path, containerd, [("imagecap.test/agent/extra:v1", 500)])
    try:
        changed = wait_for("the image more, under a new tag", lambda: (
            (r := agent.get("/v1/images", headers={"If-None-Match": tag})).status_code == 200
            and len(r.json()["images"]) == 61 and r))
        assert changed.headers["etag"] != tag
    finally:
        remove_images(containerd, extra)
