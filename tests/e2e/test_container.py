"""The container image, built from the Dockerfile and run as the chart runs it.

Debian's podman builds and runs it (vfs storage, chroot isolation, in a storage
root of the test's own). No registry is reachable, so the Dockerfile's base images
are replaced through its build arguments by images made here: a build base holding
the binary built on the host at /out/imagecap-exporter and a shell (the build
stage then uses that binary instead of running cargo), and a runtime base holding only the shared libraries `ldd` lists and the CA
certificates (in place of distroless/cc). The container then runs with the
securityContext and the arguments the chart renders (helm SDK), on the host
network, against the fake API server (held by the scale benchmark's --hold-fake),
and must answer /readyz and /metrics with the cluster's nodes.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import helm_python as helm
import pytest
import requests
import yaml

from harness import BIN, ROOT, free_port, hold_fake_apiserver, wait_for

CHART = ROOT / "charts" / "imagecap-exporter"
IMAGE = "localhost/imagecap-exporter:test"
NODES = 12
# The rendered container securityContext keys and how each becomes a podman flag;
# a key the chart adds that is not here fails the test until it is mapped.
KNOWN_CONTAINER_KEYS = {"runAsNonRoot", "runAsUser", "runAsGroup", "readOnlyRootFilesystem",
                        "allowPrivilegeEscalation", "privileged", "capabilities", "seccompProfile"}


def _run(argv, timeout=300, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


class Podman:
    """podman with its own storage and configuration under `home`."""

    def __init__(self, home: Path):
        self.home = home
        conf = home / "containers.conf"
        # runc cannot set RLIMIT_NOFILE here: no default ulimits.
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.base = ["podman", "--root", str(home / "root"), "--runroot", str(home / "runroot"),
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
        # crun refuses hybrid cgroup hierarchies (as on this kind of machine); runc
        # runs there.
        if shutil.which("runc"):
            self.base += ["--runtime", "runc"]

    def __call__(self, *args, timeout=300, check=True):
        res = _run([*self.base, *args], timeout=timeout, env=self.env)
        if check and res.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}")
        return res


def _tar_of(files: dict[str, Path], dirs=()) -> bytes:
    """A root filesystem tar: `files` maps paths in the image to host files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for dest, src in files.items():
            tar.add(os.path.realpath(src), arcname=dest.lstrip("/"), recursive=False)
    return buf.getvalue()


def _shared_libraries(binary: Path) -> list[str]:
    out = _run(["ldd", str(binary)]).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
            libs.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])  # the dynamic loader
    assert any("libc.so" in lib for lib in libs), out
    return libs


def _chart_pod():
    with helm.Chart.load(CHART) as chart:
        files = chart.render({}, name="imagecap", namespace="monitoring")
    docs = [d for path, text in files.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    (deploy,) = [d for d in docs if d["kind"] == "Deployment"]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yaml" in d.get("data", {})]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container, config_map["data"]["config.yaml"]


def _podman_security_flags(pod: dict, container: dict) -> list[str]:
    sc = container["securityContext"]
    unknown = set(sc) - KNOWN_CONTAINER_KEYS
    assert not unknown, f"securityContext keys this test does not map to podman flags: {unknown}"
    uid = sc.get("runAsUser", pod["securityContext"].get("runAsUser"))
    gid = sc.get("runAsGroup", pod["securityContext"].get("runAsGroup"))
    assert sc["runAsNonRoot"] and uid != 0
    flags = ["--user", f"{uid}:{gid}"]
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    flags += [f"--cap-drop={c}" for c in sc.get("capabilities", {}).get("drop", [])]
    flags += [f"--cap-add={c}" for c in sc.get("capabilities", {}).get("add", [])]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert not sc.get("privileged")
    # RuntimeDefault is podman's default seccomp profile.
    assert sc.get("seccompProfile", {}).get("type", "RuntimeDefault") == "RuntimeDefault"
    return flags


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in /proc/{pid}/status")


@pytest.fixture
def podman():
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (scripts/setup.sh installs Debian's podman and runc)")
    # podman wants its run root path short (50 characters at most).
    home = Path(tempfile.mkdtemp(prefix="icpm-", dir="/tmp"))
    p = Podman(home)
    info = p("info", check=False, timeout=120)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: `podman info` failed: {info.stderr.strip()[-500:]}")
    yield p
    p("rm", "--all", "--force", "--time", "0", check=False, timeout=120)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def fake_apiserver(tmp_path):
    """The fake API server with NODES generated nodes, and a kubeconfig for it."""
    proc, kubeconfig = hold_fake_apiserver(Path(tmp_path), ["--nodes", str(NODES), "--images", "20",
                                                           "--hold-secs", "600"])
    try:
        yield kubeconfig
    finally:
        proc.stop()


def test_the_image_runs_as_the_chart_runs_it(podman, fake_apiserver, tmp_path):
    tmp = Path(tmp_path)
    binary = BIN.resolve()
    # Bases made here in place of the upstream ones.
    runtime_files = {lib: Path(lib) for lib in _shared_libraries(binary)}
    runtime_files["/etc/ssl/certs/ca-certificates.crt"] = Path("/etc/ssl/certs/ca-certificates.crt")
    (tmp / "runtime.tar").write_bytes(_tar_of(runtime_files, dirs=["/tmp", "/etc", "/etc/ssl", "/etc/ssl/certs"]))
    # The build stage's RUN needs a shell: the host's, with its libraries.
    shell = Path(os.path.realpath("/bin/sh"))
    build_files = {lib: Path(lib) for lib in _shared_libraries(shell)}
    build_files["/bin/sh"] = shell
    build_files["/out/imagecap-exporter"] = binary
    (tmp / "binary.tar").write_bytes(_tar_of(build_files, dirs=["/bin", "/out", "/tmp"]))
    podman("import", str(tmp / "runtime.tar"), "localhost/imagecap-test-runtime:1")
    podman("import", str(tmp / "binary.tar"), "localhost/imagecap-test-binary:1")

    built = podman("build", "--isolation", "chroot",
                   "--build-arg", "RUNTIME_IMAGE=localhost/imagecap-test-runtime:1",
                   "--build-arg", "BUILD_IMAGE=localhost/imagecap-test-binary:1",
                   "-t", IMAGE, "-f", str(ROOT / "Dockerfile"), str(ROOT), timeout=600)
    assert "using the prebuilt /out/imagecap-exporter" in built.stdout + built.stderr, built.stdout
    config = yaml.safe_load(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/usr/local/bin/imagecap-exporter"]

    # A container at all? If not, say why and skip: nothing about the image is known.
    probe = podman("run", "--rm", "--network", "none", IMAGE, "--version", check=False, timeout=120)
    if probe.returncode != 0 and "imagecap-exporter" not in probe.stdout:
        pytest.skip(f"containers cannot run on this machine: {probe.stderr.strip()[-800:]}")
    assert probe.stdout.startswith("imagecap-exporter "), probe.stdout

    pod, container, config_yaml = _chart_pod()
    security = _podman_security_flags(pod, container)
    args = list(container["args"])
    # The one change: the chart listens on 0.0.0.0:9754 in the pod's network; on the
    # host network the test takes a free loopback port.
    port = free_port()
    flag = next(a for a in ("--web.listen-address", "--listen") if a in args)
    args[args.index(flag) + 1] = f"127.0.0.1:{port}"
    # The chart's volumes: the config map, and a kubeconfig in place of the service
    # account (kube's in-cluster configuration needs the pod's environment).
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_dir = tmp / "config"
    config_dir.mkdir()
    (config_dir / "config.yaml").write_text(config_yaml)
    kube_dir = tmp / "kube"
    kube_dir.mkdir()
    shutil.copy(fake_apiserver, kube_dir / "config")
    for d in (tmp, config_dir, kube_dir):
        d.chmod(0o755)
    for f in (config_dir / "config.yaml", kube_dir / "config"):
        f.chmod(0o644)

    run = podman("run", "--detach", "--name", "imagecap", "--network", "host", *security,
                 "-v", f"{config_dir}:{mounts['config']}:ro", "-v", f"{kube_dir}:/kube:ro",
                 "-e", "KUBECONFIG=/kube/config", IMAGE, *args)
    name = run.stdout.strip()
    url = f"http://127.0.0.1:{port}"

    def ready():
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            raise RuntimeError(f"container {state}:\n{podman('logs', name, check=False).stderr}")
        return requests.get(url + "/readyz", timeout=5).status_code == 200

    wait_for("the container's /readyz", ready, timeout=120)
    metrics = requests.get(url + "/metrics", timeout=10).text
    assert f"imagecap_nodes {NODES}" in metrics.splitlines(), metrics
    assert any(line.startswith("process_resident_memory_bytes ") for line in metrics.splitlines())
    assert 'imagecap_kube_requests_total{verb="list",code="200"}' in metrics

    # What the process in the container really runs with.
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())
    assert _status_field(pid, "Uid").split()[:2] == ["65532", "65532"]
    assert _status_field(pid, "Gid").split()[:2] == ["65532", "65532"]
    assert int(_status_field(pid, "CapEff"), 16) == 0
    assert int(_status_field(pid, "CapBnd"), 16) == 0
    assert _status_field(pid, "NoNewPrivs") == "1"
    assert _status_field(pid, "Seccomp") == "2", "a seccomp filter"
    inspect = yaml.safe_load(podman("inspect", name).stdout)[0]
    assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    # The read-only root refuses writes, as readOnlyRootFilesystem promises.
    root = Path(f"/proc/{pid}/root")
    with pytest.raises(OSError):
        (root / "written-by-test").write_text("x")
