"""The registry scenario: pull + unpack through a network that caps each connection.

Debian's docker-registry serves the image on 127.0.0.1 behind a proxy
(`fixtures.registry.RegistryProxy`) that sends each answer at most RATE bytes/s per
TCP connection, after a FIRST_BYTE delay: what a CDN edge does to one connection.
Timed, round-robin like the local methods:

* ``oci-unpack docker://…`` (pull + unpack, its default parallel downloads);
* ``skopeo copy docker://… oci:… && umoci unpack``: the pipeline users run today;
* ``oci-unpack`` on the local layout: the unpack alone.

The ideal is max(the transfer with CONNECTIONS connections, biggest layer first, each
at RATE after FIRST_BYTE; the local unpack time). Everything listens on 127.0.0.1 only
and is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import heapq
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.methods import HINTS, Image, Plan, plan, tool
from bench.report import fmt, rows
from fixtures.registry import REGISTRY_BINARY, RegistryProxy, running_registry

RATE = 20e6  # bytes/s per connection
FIRST_BYTE = 0.020  # seconds before each answer's first byte
CONNECTIONS = 3  # what the ideal assumes: oci-unpack's default --max-parallel-downloads
REPOSITORY = "bench/image"


def missing_tools() -> list[str]:
    """What the scenario needs and this machine lacks, as install hints."""
    needs = {"docker-registry": shutil.which(REGISTRY_BINARY) or shutil.which("docker-registry"),
             "skopeo": tool("skopeo"), "umoci": tool("umoci")}
    hints = {**HINTS, "docker-registry": "apt-get install docker-registry",
             "skopeo": "apt-get install skopeo"}
    return [f"{name} not found ({hints[name]})" for name, path in needs.items() if path is None]


@contextlib.contextmanager
def served(image: Image, workdir: Path, rate: float = RATE,
           first_byte: float = FIRST_BYTE) -> Iterator[str]:
    """The image in a registry behind the throttling proxy: yields `HOST/REPO:latest`."""
    directory = Path(tempfile.mkdtemp(prefix="registry-", dir=workdir))
    try:
        with running_registry(directory) as registry:
            registry.push(image.path, "latest", f"{REPOSITORY}:latest")
            with RegistryProxy(registry.host, rate=rate, first_byte=first_byte).running() as proxy:
                yield f"{proxy.host}/{REPOSITORY}:latest"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def plans(image: Image, images: dict[str, Image], reference: str, oci: list[str]) -> list[Plan]:
    """oci-unpack pulling, skopeo + umoci pulling, and oci-unpack's local unpack."""
    remote = f"docker://{reference}"
    pipeline = ('set -e; d=$1; skopeo copy --quiet --src-tls-verify=false "$2" "oci:$d.oci:latest";'
                ' umoci unpack --image "$d.oci:latest" "$d"')
    local = plan("oci-unpack", image, images, [], oci)
    assert local is not None
    local.label = "oci-unpack (local layout: the unpack alone)"
    return [Plan("pull-oci-unpack", "oci-unpack docker://…", image,
                 lambda d: [*oci, "--tls-verify=false", remote, d]),
            Plan("pull-skopeo-umoci", "skopeo copy docker://… oci:… && umoci unpack", image,
                 lambda d: ["sh", "-c", pipeline, "sh", d, remote]),
            local]


def ideal_transfer(sizes: list[int], rate: float = RATE, first_byte: float = FIRST_BYTE,
                   connections: int = CONNECTIONS) -> float:
    """Seconds to fetch blobs of `sizes` on `connections` connections, biggest first, each
    taking first_byte + size / rate (the manifest and config are not counted)."""
    ends = [0.0] * connections
    for size in sorted(sizes, reverse=True):
        start = heapq.heappop(ends)
        heapq.heappush(ends, start + first_byte + size / rate)
    return max(ends)


def table(image: Image, results: dict[str, dict[str, Any]], verify: str,
          rate: float = RATE, first_byte: float = FIRST_BYTE) -> str:
    """The Markdown section of the pull scenario for one image."""
    sizes = [blob.stat().st_size for blob in image.blobs]
    transfer = ideal_transfer(sizes, rate, first_byte)
    local = results.get("oci-unpack", {}).get("median")
    ideal = {"median": max(transfer, local or 0.0)} if local else None
    pipeline = results.get("pull-skopeo-umoci")
    lines = [f"#### pull {image.name}: {len(sizes)} layers, {sum(sizes) / 1e6:,.0f} MB of blobs, "
             f"each connection {rate / 1e6:g} MB/s after {first_byte * 1000:g} ms", "",
             "| method | median s | CPU s | peak RSS MB | vs skopeo + umoci | vs ideal |",
             "|---|--:|--:|--:|--:|--:|"]
    lines += rows(results, pipeline, ideal)
    one = ideal_transfer(sizes, rate, first_byte, connections=1)
    lines += ["", f"Ideal {fmt(ideal and ideal['median'])} s = max(transfer on {CONNECTIONS} "
              f"connections, biggest layer first: {transfer:.2f} s; the local unpack: "
              f"{fmt(local)} s). One connection would take {one:.2f} s.", "", verify]
    return "\n".join(lines) + "\n"
