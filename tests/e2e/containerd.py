"""A real containerd for the end-to-end tests, and images made without a registry.

Debian's `containerd` runs as root with everything of its own under a temporary
directory: root, state, socket and configuration (CRI plugin with the `native`
snapshotter and no AppArmor; the plugins the tests do not need are disabled so it
starts in a second or two). No registry is reachable, so images are built here as
one-layer OCI archives and imported with `ctr images import`; the CRI plugin then
lists them to any CRI client (`crictl images`, the kubelet, the node agent).

Typical use (the session fixture `containerd` in conftest.py does the first step):

    ctd = start_containerd(tmpdir)              # Containerd(socket=..., stop(), start())
    images = make_images(tmpdir, ctd, [("imagecap.test/app:1", 10_000), ...])
    images[0].id, images[0].repo_digest, images[0].size   # what CRI ListImages says
    ctd.stop(); ctd.start()                     # a runtime restart, same root

`ImportedImage` holds, for each image, the values CRI reports (`id`, repo tag,
repo digest, `size`), so a node fixture (`node.status.images`) can be written from
them as the kubelet would.

`unavailable_reason()` says why containerd cannot run here (not root, not
installed); callers skip with that message.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

# The namespace the CRI plugin (hence the kubelet) uses.
K8S_NAMESPACE = "k8s.io"
START_TIMEOUT_S = 30.0

# Plugins a CRI image listing does not need: disabling them keeps start-up fast
# and quiet. The CRI plugin itself, the content store, metadata, the native
# snapshotter and the runtime it wants stay on.
_DISABLED_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.overlayfs",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
]


def unavailable_reason() -> str | None:
    """Why containerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "containerd needs root (the tests run as uid %d)" % os.geteuid()
    for tool in ("containerd", "ctr"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/setup.sh installs Debian's containerd)"
    return None


def _config(root: Path, state: Path, socket: Path) -> str:
    disabled = ", ".join(json.dumps(p) for p in _DISABLED_PLUGINS)
    return f"""version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [{disabled}]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  disable_apparmor = true
  # No CNI in the tests: its missing configuration is logged and harmless.
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{root}/cni-bin"
    conf_dir = "{root}/cni-conf"
"""


class Containerd:
    """One containerd process with its own root, state directory and socket.

    `stop()` and `start()` may be called any number of times: a restart keeps the
    root, hence the images."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.state = self.workdir / "state"
        # A short path: unix socket paths are limited to 107 bytes.
        self.socket = self.workdir / "c.sock"
        self.config = self.workdir / "config.toml"
        self.log_path = self.workdir / "containerd.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        for d in (self.root, self.state):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(_config(self.root, self.state, self.socket))

    @property
    def endpoint(self) -> str:
        """The CRI endpoint, as the kubelet and the agent take it."""
        return f"unix://{self.socket}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> "Containerd":
        if self.alive():
            return self
        self._log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.config), "--log-level", "warn"],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        end = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"containerd exited at start:\n{self.log()}")
            if self.socket.exists() and self._serves():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"containerd did not serve on {self.socket} within {START_TIMEOUT_S}s:\n{self.log()}")

    def _serves(self) -> bool:
        r = self.ctr("version", check=False, timeout=5)
        return r.returncode == 0

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        # containerd removes its socket on a clean stop; a killed one may leave it.
        for leftover in (self.socket, Path(f"{self.socket}.ttrpc")):
            leftover.unlink(missing_ok=True)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs `ctr` against this containerd in the k8s.io namespace."""
        argv = ["ctr", "--address", str(self.socket), "--namespace", K8S_NAMESPACE, *args]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r


def start_containerd(workdir: Path) -> Containerd:
    """Starts containerd under `workdir` and waits until it answers."""
    return Containerd(workdir).start()


@dataclass(frozen=True)
class ImportedImage:
    """One image as CRI ListImages reports it once imported."""
    name: str          # the repo tag, e.g. "imagecap.test/app:1"
    id: str            # the config digest, "sha256:..."
    digest: str        # the manifest digest, "sha256:..."
    size: int          # manifest + config + layer blobs, the size CRI reports

    @property
    def repo(self) -> str:
        return self.name.rsplit(":", 1)[0] if ":" in self.name.rsplit("/", 1)[-1] else self.name

    @property
    def repo_digest(self) -> str:
        return f"{self.repo}@{self.digest}"


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _layer(name: str, size_bytes: int) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of `size_bytes` pseudo-random (incompressible,
    so the blob grows with it) bytes, seeded by the image name: rebuilding gives
    the same digests. Returns the blob and the uncompressed tar's digest (diff id)."""
    content = random.Random(name).randbytes(size_bytes)
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(content)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    raw = tar_buf.getvalue()
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    return gz, "sha256:" + hashlib.sha256(raw).hexdigest()


def _image_blobs(name: str, size_bytes: int) -> tuple[dict, dict[str, bytes], int]:
    """The manifest descriptor, the blobs by digest, and the size CRI will report."""
    layer, diff_id = _layer(name, size_bytes)
    layer_digest, _ = _blob(layer)
    config = json.dumps({
        "architecture": _goarch(), "os": "linux",
        "config": {"Cmd": ["/data.bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"imagecap test image {name}"}],
    }, sort_keys=True).encode()
    config_digest, _ = _blob(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest, _ = _blob(manifest)
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": len(manifest),
        "platform": {"architecture": _goarch(), "os": "linux"},
        "annotations": {"io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
    }
    blobs = {manifest_digest: manifest, config_digest: config, layer_digest: layer}
    return descriptor, blobs, len(manifest) + len(config) + len(layer)


def _goarch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def build_oci_archive(path: Path, images: list[tuple[str, int]]) -> list[ImportedImage]:
    """Writes an OCI image layout tar at `path` holding one single-layer image per
    (name, size_bytes); `name` is a full reference with a tag
    (`registry/repo:tag`), `size_bytes` the size of the one file in its layer.
    Returns what CRI will report for each once imported."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": []}
    blobs: dict[str, bytes] = {}
    out = []
    for name, size_bytes in images:
        descriptor, image_blobs, size = _image_blobs(name, size_bytes)
        index["manifests"].append(descriptor)
        blobs.update(image_blobs)
        config_digest = json.loads(image_blobs[descriptor["digest"]])["config"]["digest"]
        out.append(ImportedImage(name=name, id=config_digest, digest=descriptor["digest"], size=size))

    def add(tar: tarfile.TarFile, member: str, data: bytes):
        info = tarfile.TarInfo(member)
        info.size = len(data)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return out


def import_images(containerd: Containerd, archive: Path) -> None:
    """Imports an archive from build_oci_archive into the k8s.io namespace,
    unpacked into the native snapshotter the CRI plugin uses."""
    containerd.ctr("images", "import", "--snapshotter", "native", str(archive))


def tag_digest(containerd: Containerd, image: ImportedImage) -> None:
    """Gives `image` its repo digest name (`repo@sha256:<manifest>`), as a pull
    from a registry would: CRI then lists it in repoDigests."""
    containerd.ctr("images", "tag", "--force", image.name, image.repo_digest)


def remove_images(containerd: Containerd, images: list[ImportedImage]) -> None:
    """Removes the images (both names of each), leaving the runtime as it was for
    the next test of the session."""
    names = [n for image in images for n in (image.name, image.repo_digest)]
    for i in range(0, len(names), 50):
        containerd.ctr("images", "rm", *names[i:i + 50])


def make_images(workdir: Path, containerd: Containerd, images: list[tuple[str, int]],
                archive_name: str = "images.tar") -> list[ImportedImage]:
    """Builds one archive of `images` (name, size_bytes), imports it, names each by
    digest too, and returns what CRI reports for each."""
    archive = Path(workdir) / archive_name
    built = build_oci_archive(archive, images)
    import_images(containerd, archive)
    # One `ctr` per name; a few at a time, since each mostly waits on containerd.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda image: tag_digest(containerd, image), built))
    return built
