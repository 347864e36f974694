"""Reads the cluster's nodes the way Nublado's prepuller does.

One `list_node` call of full `V1Node` objects through the `kubernetes_asyncio`
client (no pagination, no field projection), then each node's image list: the
names of every entry in `status.images`. Prints the number of nodes and image
names seen, so the work cannot be skipped.

The scale benchmark (`cargo bench --bench scale -- --peers`) runs it against its
fake API server with KUBECONFIG set, and compares its wall time and peak memory
with `imagecap-exporter check` on the same nodes.
"""
from __future__ import annotations

import asyncio

from kubernetes_asyncio import client, config


async def node_images() -> dict[str, list[str]]:
    await config.load_kube_config()
    async with client.ApiClient() as api:
        nodes = await client.CoreV1Api(api).list_node()
    images: dict[str, list[str]] = {}
    for node in nodes.items:
        names: list[str] = []
        for entry in (node.status.images or []) if node.status else []:
            names.extend(entry.names or [])
        images[node.metadata.name] = names
    return images


def main() -> None:
    images = asyncio.run(node_images())
    print(len(images), sum(len(v) for v in images.values()))


if __name__ == "__main__":
    main()
