"""The CRI test fixture (tests/e2e/cri.py) against the session's containerd: a
host-network pod sandbox on the locally built pause image, containers created
and started in it from locally built images, listed and removed through CRI."""
from __future__ import annotations

import json

import pytest

import containerd as containerd_harness
from containerd import ImageRecipe, make_images, pause_image, remove_images

cri = pytest.importorskip("cri", reason="grpcio and grpcio-tools (requirements-dev.txt) are not installed")

CREATED = ["2024-01-02T03:04:05.5+02:00", "2023-06-30T23:59:59Z"]


@pytest.fixture(scope="module")
def images(containerd, tmp_path_factory):
    """The pause (sandbox) image and two images that run the pause binary, each with
    its own `created`; removed afterwards, with any sandbox a failed test left."""
    reason = containerd_harness.pause_unavailable_reason()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("cri-images")
    pause = containerd_harness.build_pause_binary(d)
    recipes = [
        pause_image(pause),
        pause_image(pause, "imagecap.test/cri/started:1", created=CREATED[0]),
        ImageRecipe("imagecap.test/cri/created:1", 1000, files={"/bin/pause": pause},
                    entrypoint=["/bin/pause"], created=CREATED[1]),
    ]
    built = make_images(d, containerd, recipes)
    yield built
    errors = cri.remove_all_sandboxes(containerd.socket)
    if containerd.alive():
        remove_images(containerd, built)
    assert not errors, errors


def test_containers_in_a_host_network_sandbox(containerd, images):
    pause, started_image, created_image = images
    assert pause.name == containerd_harness.PAUSE_IMAGE
    pb = cri.messages()
    socket = containerd.socket
    before = {c.id for c in cri.list_containers(socket)}

    sandbox = cri.run_host_network_sandbox(socket, "cri-fixture")
    config = cri.host_network_sandbox_config("cri-fixture")
    # One from the image's id and started; one from its name, only created.
    started = cri.create_container(socket, sandbox, config, started_image.id, "started", start=True)
    created = cri.create_container(socket, sandbox, config, created_image.name, "created", start=False)

    listed = {c.id: c for c in cri.list_containers(socket) if c.id not in before}
    assert set(listed) == {started, created}
    for cid, image, given, state in [
        (started, started_image, started_image.id, pb.CONTAINER_RUNNING),
        (created, created_image, created_image.name, pb.CONTAINER_CREATED),
    ]:
        c = listed[cid]
        assert c.pod_sandbox_id == sandbox
        assert c.state == state, pb.ContainerState.Name(c.state)
        # containerd: image_ref is the image id (the config digest) whatever the
        # container was created from; image.image is what it was created from.
        assert c.image_ref == image.id
        assert c.image.image == given
        assert c.image_id in ("", image.id)
        assert c.labels[cri.LABEL] == "cri"

    # The images' `created`, as the runtime reports it (verbose ImageStatus).
    for image, created_at in zip([started_image, created_image], CREATED):
        status = cri.image_status(socket, image.id)
        assert status.image.id == image.id
        assert json.loads(status.info["info"])["imageSpec"]["created"] == created_at
    assert "created" not in json.loads(cri.image_status(socket, pause.id).info["info"])["imageSpec"]

    cri.remove_sandbox(socket, sandbox)
    assert {c.id for c in cri.list_containers(socket)} == before
    # A removed image: ImageStatus answers with no image.
    assert not cri.image_status(socket, "sha256:" + "0" * 64).HasField("image")
