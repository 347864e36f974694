"""A small CRI client for the end-to-end tests: real pod sandboxes and containers
in the session's containerd (tests/e2e/containerd.py), made through the same CRI
v1 API the kubelet uses.

The Python stubs are generated once per process from the repository's own
proto/api.proto with grpc_tools.protoc, into a temporary directory: the tests
speak exactly the subset the agent is built from.

    pb = cri.messages()                                   # the generated messages
    sandbox = cri.run_host_network_sandbox(socket, "pod-a")
    config = cri.host_network_sandbox_config("pod-a")     # the config it ran with
    cid = cri.create_container(socket, sandbox, config, image.id, "app", start=True)
    cri.list_containers(socket)                           # [pb.Container, ...]
    cri.remove_sandbox(socket, sandbox)                   # its containers too

A sandbox shares the node's network namespace, so no CNI is needed; its image is
containerd's `sandbox_image`, containerd.PAUSE_IMAGE, which must have been
imported first (containerd.pause_image()). Containers need an image that runs
for `start=True` (containerd.pause_image() under another name does).

What containerd 1.6 (Debian 12's) reports for a container in ListContainers,
whether it was created from an image's id (`sha256:<config digest>`) or from one
of its names (`repo:tag`):
- `image.image`: what CreateContainer was given, the id or the name as is;
- `image_ref`: the image id, `sha256:<config digest>`, either way, even when the
  image also has a repo digest (`repo@sha256:<manifest digest>`);
- `image_id`: empty (that containerd predates the field).
So `image_ref` is the field that names the image as ListImages' `id` does.
tests/e2e/test_cri_fixture.py checks these.

Every sandbox run here is remembered until removed: `remove_all_sandboxes(socket)`
removes whatever a failed test left behind.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "api.proto"
# Each call's deadline: runc starting a container takes well under a second.
CALL_TIMEOUT_S = 60.0
# Labels on everything made here, so a leftover is recognisable.
LABEL = "imagecap.test/fixture"

_stubs: list = []
_sandboxes: dict[str, set[str]] = {}


def _generate():
    """(api_pb2, api_pb2_grpc) generated from proto/api.proto, once per process."""
    if _stubs:
        return _stubs[0]
    from grpc_tools import protoc
    out = Path(tempfile.mkdtemp(prefix="imagecap-cri-stubs-"))
    atexit.register(shutil.rmtree, out, True)
    argv = ["grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={out}",
            f"--grpc_python_out={out}", PROTO.name]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"grpc_tools.protoc could not compile {PROTO}")
    # The generated service module imports the messages as `api_pb2`.
    sys.path.insert(0, str(out))
    try:
        pb = importlib.import_module("api_pb2")
        pb_grpc = importlib.import_module("api_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    _stubs.append((pb, pb_grpc))
    return _stubs[0]


def messages():
    """The generated `runtime.v1` message classes and enums (module api_pb2)."""
    return _generate()[0]


def _call(socket, service: str, method: str, request):
    """One unary call on a fresh channel to the unix socket `socket`."""
    _, pb_grpc = _generate()
    with grpc.insecure_channel(f"unix://{socket}") as channel:
        stub = getattr(pb_grpc, f"{service}Stub")(channel)
        return getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)


def host_network_sandbox_config(name: str, log_directory: str = ""):
    """The PodSandboxConfig run_host_network_sandbox() runs `name` with: the node's
    network namespace (no CNI), a pod UID derived from the name. The same name
    gives the same config, which CreateContainer wants again."""
    pb = messages()
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=name, namespace="imagecap-test", attempt=0,
            uid=str(uuid.UUID(hashlib.sha256(name.encode()).hexdigest()[:32]))),
        # Empty: the node's hostname, as the API allows for a NODE network.
        hostname="",
        log_directory=log_directory,
        labels={LABEL: "cri"},
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.NODE))),
    )


def run_host_network_sandbox(socket, name: str) -> str:
    """Runs a pod sandbox named `name` in the node's network namespace; returns
    its id. Remove it with remove_sandbox()."""
    pb = messages()
    config = host_network_sandbox_config(name)
    r = _call(socket, "RuntimeService", "RunPodSandbox", pb.RunPodSandboxRequest(config=config))
    _sandboxes.setdefault(str(socket), set()).add(r.pod_sandbox_id)
    return r.pod_sandbox_id


def create_container(socket, sandbox_id: str, sandbox_config, image_ref: str, name: str,
                     start: bool) -> str:
    """Creates container `name` from `image_ref` (an image id or name the runtime
    holds; nothing is pulled) in the sandbox, and starts it when `start`; returns
    its id. It runs the image's entrypoint."""
    pb = messages()
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image_ref),
        labels={LABEL: "cri"},
    )
    r = _call(socket, "RuntimeService", "CreateContainer", pb.CreateContainerRequest(
        pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config))
    if start:
        _call(socket, "RuntimeService", "StartContainer",
              pb.StartContainerRequest(container_id=r.container_id))
    return r.container_id


def remove_sandbox(socket, sandbox_id: str) -> None:
    """Stops and removes the sandbox, which stops and removes its containers."""
    pb = messages()
    _call(socket, "RuntimeService", "StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
    _call(socket, "RuntimeService", "RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
    _sandboxes.get(str(socket), set()).discard(sandbox_id)


def remove_all_sandboxes(socket) -> list[str]:
    """Removes every sandbox run_host_network_sandbox() ran on `socket` and that is
    not removed yet; returns the errors (one line each) of those that could not be."""
    errors = []
    for sandbox_id in sorted(_sandboxes.get(str(socket), set())):
        try:
            remove_sandbox(socket, sandbox_id)
        except grpc.RpcError as e:
            errors.append(f"{sandbox_id}: {e.code()}: {e.details()}")
    return errors


def list_containers(socket) -> list:
    """Every container the runtime holds, in any state (no filter)."""
    pb = messages()
    return list(_call(socket, "RuntimeService", "ListContainers", pb.ListContainersRequest()).containers)


def image_status(socket, image: str):
    """The verbose ImageStatus answer for `image` (an id or a name): `.image` (unset
    when the runtime does not hold it) and `.info` (containerd: key "info", JSON
    whose `imageSpec` is the OCI image config)."""
    pb = messages()
    return _call(socket, "ImageService", "ImageStatus",
                 pb.ImageStatusRequest(image=pb.ImageSpec(image=image), verbose=True))
