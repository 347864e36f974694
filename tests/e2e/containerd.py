"""A real containerd for the end-to-end tests, and images made without a registry.

Debian's `containerd` runs as root with everything of its own under a temporary
directory: root, state (runc's included), socket and configuration (CRI plugin
with the `native` snapshotter, no AppArmor, and an oom_score_adj no lower than
its own, so runc can start containers where CAP_SYS_RESOURCE is not granted; the
plugins the tests do not need are disabled so it starts in a second or two). No
registry is reachable, so images are built here as one-layer OCI archives and
imported with `ctr images import`; the CRI plugin then lists them to any CRI
client (`crictl images`, the kubelet, the node agent).

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

Images that run: an `ImageRecipe` adds executable files to the layer and sets the
config's Entrypoint (and, for any image, its `created` time):

    pause = build_pause_binary(tmpdir)          # a static C program, `cc -static`
    make_images(tmpdir, ctd, [pause_image(pause)])          # PAUSE_IMAGE
    make_images(tmpdir, ctd, [ImageRecipe("imagecap.test/run:1", 100,
        files={"/pause": pause}, entrypoint=["/pause"], created="2024-01-02T03:04:05Z")])

The CRI plugin's `sandbox_image` is `PAUSE_IMAGE`, which containerd never pulls
when it holds it: import `pause_image()` before creating a pod sandbox through CRI
(tests/e2e/cri.py). `pause_unavailable_reason()` says why the binary cannot be
built (no `cc`, no static libc).
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
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# The namespace the CRI plugin (hence the kubelet) uses.
K8S_NAMESPACE = "k8s.io"
# The CRI plugin's sandbox ("pause") image: built here (pause_image()), never
# pulled, so it must be imported before a pod sandbox is run.
PAUSE_IMAGE = "imagecap.test/pause:1"
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
  sandbox_image = "{PAUSE_IMAGE}"
  # The CRI plugin gives a sandbox an oom_score_adj of -998; lowering one needs
  # CAP_SYS_RESOURCE, which a test machine (a VM, a container) may not grant, and
  # runc then fails ("can't get final child's PID from pipe"). Restricted, no
  # container gets a lower score than containerd itself has.
  restrict_oom_score_adj = true
  # No CNI in the tests: its missing configuration is logged and harmless.
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  # runc's own state under this containerd's, not the host's /run/containerd.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{state}/runc"
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

    def remove_all_containers(self) -> None:
        """Kills and deletes every task and container in the k8s.io namespace, pod
        sandboxes included, through `ctr`: the last resort at the end of a session,
        so no runc process (nor its shim, nor a mount) outlives the tests, even
        after a test failed before removing its sandbox. CRI's own records of them
        go with this containerd."""
        if self.alive():
            tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
            for task in tasks:
                self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
            for task in tasks:
                self.ctr("tasks", "delete", "--force", task, check=False)
            containers = self.ctr("containers", "ls", "-q", check=False).stdout.split()
            if containers:
                self.ctr("containers", "delete", *containers, check=False)
        # What the CRI plugin mounted for a sandbox (its /dev/shm) and unmounts only
        # when the sandbox is stopped through CRI.
        for mount in self._mounts():
            subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=30)

    def _mounts(self) -> list[str]:
        """The mount points under this containerd's directory, deepest first."""
        prefix = str(self.workdir.resolve()) + "/"
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                # Field 5 is the mount point, with space, tab, newline and
                # backslash written as octal escapes.
                point = line.split()[4]
                point = point.encode().decode("unicode_escape")
                if point.startswith(prefix):
                    points.append(point)
        return sorted(set(points), key=len, reverse=True)

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


@dataclass(frozen=True)
class ImageRecipe:
    """One image to build, for what a (name, size_bytes) pair cannot say.

    The layer holds `data.bin` of `size_bytes` pseudo-random bytes, as for a pair,
    and each of `files` (absolute path in the image: host file to copy), executable.
    `entrypoint` becomes the config's Entrypoint (in place of the pair's
    `Cmd: ["/data.bin"]`); `created` (RFC 3339) its `created` time, which a pair's
    config leaves out. A recipe with neither files, entrypoint nor created builds
    the very image its pair does."""
    name: str
    size_bytes: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    created: str | None = None


def _recipe(image: "ImageRecipe | tuple[str, int]") -> ImageRecipe:
    if isinstance(image, ImageRecipe):
        return image
    name, size_bytes = image
    return ImageRecipe(name, size_bytes)


def _layer(name: str, size_bytes: int, files: dict[str, Path] | None = None) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of `size_bytes` pseudo-random (incompressible,
    so the blob grows with it) bytes, seeded by the image name: rebuilding gives
    the same digests; then each of `files` (path in the image: host file), mode
    0755, with its parent directories. Returns the blob and the uncompressed tar's
    digest (diff id)."""
    content = random.Random(name).randbytes(size_bytes)
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data.bin")
        info.size = len(content)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
        dirs = set()
        for path, source in sorted((files or {}).items()):
            member = path.strip("/")
            parts = member.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    dinfo = tarfile.TarInfo(d)
                    dinfo.type = tarfile.DIRTYPE
                    dinfo.mode = 0o755
                    dinfo.mtime = 0
                    tar.addfile(dinfo)
            data = Path(source).read_bytes()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mode = 0o755
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    raw = tar_buf.getvalue()
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    return gz, "sha256:" + hashlib.sha256(raw).hexdigest()


def _image_blobs(recipe: ImageRecipe) -> tuple[dict, dict[str, bytes], int]:
    """The manifest descriptor, the blobs by digest, and the size CRI will report."""
    name = recipe.name
    layer, diff_id = _layer(name, recipe.size_bytes, recipe.files)
    layer_digest, _ = _blob(layer)
    config_doc = {
        "architecture": _goarch(), "os": "linux",
        "config": ({"Entrypoint": list(recipe.entrypoint)} if recipe.entrypoint is not None
                   else {"Cmd": ["/data.bin"]}),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"imagecap test image {name}"}],
    }
    if recipe.created is not None:
        config_doc["created"] = recipe.created
        config_doc["history"][0]["created"] = recipe.created
    config = json.dumps(config_doc, sort_keys=True).encode()
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


def build_oci_archive(path: Path, images: "list[tuple[str, int] | ImageRecipe]") -> list[ImportedImage]:
    """Writes an OCI image layout tar at `path` holding one single-layer image per
    (name, size_bytes) or ImageRecipe; `name` is a full reference with a tag
    (`registry/repo:tag`), `size_bytes` the size of the data file in its layer.
    Returns what CRI will report for each once imported."""
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": []}
    blobs: dict[str, bytes] = {}
    out = []
    for image in images:
        recipe = _recipe(image)
        name = recipe.name
        descriptor, image_blobs, size = _image_blobs(recipe)
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
    # The CRI plugin names an image by its id as well once it ran a sandbox or a
    # container from it (tests/e2e/cri.py); most images never have that name.
    ids = set(containerd.ctr("images", "ls", "-q", check=False).stdout.split())
    ids &= {image.id for image in images}
    if ids:
        containerd.ctr("images", "rm", *sorted(ids))


def make_images(workdir: Path, containerd: Containerd,
                images: "list[tuple[str, int] | ImageRecipe]",
                archive_name: str = "images.tar") -> list[ImportedImage]:
    """Builds one archive of `images` ((name, size_bytes) or ImageRecipe), imports
    it, names each by digest too, and returns what CRI reports for each."""
    archive = Path(workdir) / archive_name
    built = build_oci_archive(archive, images)
    import_images(containerd, archive)
    # One `ctr` per name; a few at a time, since each mostly waits on containerd.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda image: tag_digest(containerd, image), built))
    return built


# A sandbox ("pause") process: sleeps until a signal; SIGTERM and SIGINT end it
# with status 0 (as PID 1 of its PID namespace, a signal without a handler would
# be ignored).
_PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>

static void done(int sig) { (void)sig; _exit(0); }

int main(void) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    for (;;)
        pause();
}
"""


def _compile_pause(out: Path) -> str | None:
    """Compiles the pause program, statically linked, to `out`; the reason it
    could not, or None."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (`cc`) to build the pause binary (scripts/setup.sh installs gcc and libc6-dev)"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "pause.c"
        src.write_text(_PAUSE_C)
        r = subprocess.run([cc, "-static", "-O2", "-s", "-o", str(out), str(src)],
                           capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return ("`cc -static` cannot build the pause binary (is libc6-dev, with libc.a, installed?): "
                + (r.stderr.strip() or r.stdout.strip())[-500:])
    return None


_pause_failure: list[str | None] = []


def pause_unavailable_reason() -> str | None:
    """Why the pause binary cannot be built here (no `cc`, no static libc), or
    None when it can; found once per process, by building it."""
    if not _pause_failure:
        with tempfile.TemporaryDirectory() as d:
            _pause_failure.append(_compile_pause(Path(d) / "pause"))
    return _pause_failure[0]


def build_pause_binary(workdir: Path) -> Path:
    """Builds the static pause binary at `workdir`/pause (once: a binary already
    there is reused) and returns its path; RuntimeError saying why it cannot."""
    out = Path(workdir) / "pause"
    if not out.exists():
        reason = _compile_pause(out)
        if reason:
            raise RuntimeError(reason)
    return out


def pause_image(binary: Path, name: str = PAUSE_IMAGE, created: str | None = None) -> ImageRecipe:
    """An image whose entrypoint is `binary` (build_pause_binary()) at /pause: the
    CRI plugin's sandbox image under the default name, and, under any other name,
    a container image that runs until stopped."""
    return ImageRecipe(name, 0, files={"/pause": Path(binary)}, entrypoint=["/pause"], created=created)
