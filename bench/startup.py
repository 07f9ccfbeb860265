"""The start-up scenario: what a container start waits for on a small image.

Timed, median of N runs each, round-robin:

* ``python -c pass``: the interpreter oci-unpack runs on, started bare;
* ``oci-unpack --help``: the command line alone (imports and option parsing);
* ``oci-unpack`` of the busybox fixture, and ``umoci unpack`` of the same image.

The busybox fixture has a zstd layer, which umoci 0.4.7 cannot read: both run on a
gzip copy (`gzip_copy`). Bundles go to a fresh directory under the work directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import zstandard

from fixtures.images import build_busybox, busybox_available

ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def gzip_copy(layout: Path, out: Path) -> None:
    """Copy an OCI layout with its zstd layers re-compressed with gzip (one image)."""
    shutil.copytree(layout, out)
    blobs = out / "blobs" / "sha256"
    index = json.loads((out / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads((blobs / entry["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        if layer["mediaType"] != ZSTD:
            continue
        data = zstandard.ZstdDecompressor().decompressobj().decompress(
            (blobs / layer["digest"][7:]).read_bytes())
        packed = gzip.compress(data, mtime=0)
        layer.update(mediaType=GZIP, digest=_write_blob(blobs, packed), size=len(packed))
    raw = json.dumps(manifest).encode()
    entry.update(digest=_write_blob(blobs, raw), size=len(raw))
    (out / "index.json").write_text(json.dumps(index))


def _write_blob(blobs: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}"


def interpreter(oci: list[str]) -> str:
    """The Python the oci-unpack command runs on: itself, or its script's #! line."""
    try:
        with open(oci[0], "rb") as script:
            first = script.readline()
    except OSError:
        return oci[0]
    if first.startswith(b"#!"):
        return first[2:].decode().split()[0]
    return oci[0]


def commands(python: str, oci: list[str], image: str) -> dict[str, Any]:
    """label -> argv builder (taking a fresh output path)."""
    return {
        "python -c pass": lambda out: [python, "-c", "pass"],
        "oci-unpack --help": lambda out: [*oci, "--help"],
        "oci-unpack busybox": lambda out: [*oci, "-q", image, out],
        "umoci unpack busybox": lambda out: ["umoci", "unpack", "--image", image, out],
    }


def measure(workdir: Path, python: str, oci: list[str], runs: int,
            log: Any = print) -> dict[str, dict[str, float]]:
    """Median and minimum wall seconds of each command (`runs` each, round-robin)."""
    if not busybox_available():
        raise RuntimeError("the busybox fixture needs /bin/busybox (apt-get install "
                           "busybox-static)")
    top = Path(tempfile.mkdtemp(prefix="startup-", dir=workdir))
    try:
        build_busybox(top / "busybox-zstd")
        gzip_copy(top / "busybox-zstd", top / "busybox")
        todo = commands(python, oci, f"{top / 'busybox'}:latest")
        if shutil.which("umoci") is None:
            del todo["umoci unpack busybox"]
        times: dict[str, list[float]] = {label: [] for label in todo}
        for run in range(runs + 1):  # the first round warms the page cache
            for label, argv in todo.items():
                out = top / f"out-{run}-{len(times[label])}"
                start = time.perf_counter()
                done = subprocess.run(argv(str(out)), capture_output=True)
                took = time.perf_counter() - start
                if done.returncode != 0:
                    raise RuntimeError(f"{label}: exit {done.returncode}: "
                                       f"{done.stderr.decode(errors='replace')[-300:]}")
                if run:
                    times[label].append(took)
                shutil.rmtree(out, ignore_errors=True)
        results = {label: {"median": statistics.median(t), "min": min(t)}
                   for label, t in times.items()}
        for label, result in results.items():
            log(f"  {label:24} {result['median'] * 1000:7.1f} ms (min {result['min'] * 1000:.1f})")
        return results
    finally:
        shutil.rmtree(top, ignore_errors=True)


def table(results: dict[str, dict[str, float]], runs: int) -> str:
    """The Markdown section of the start-up scenario."""
    bare = results["python -c pass"]["median"]
    umoci = results.get("umoci unpack busybox", {}).get("median")
    lines = [f"#### start-up: median of {runs} runs", "",
             "| command | median ms | vs python -c pass | vs umoci unpack |", "|---|--:|--:|--:|"]
    for label, result in results.items():
        median = result["median"]
        versus = f"{median / umoci:.2f}x" if umoci and "busybox" in label else "-"
        lines.append(f"| {label} | {median * 1000:.1f} | {median / bare:.1f}x | {versus} |")
    return "\n".join(lines) + "\n"
