"""The methods timed on an image, and the generated layouts they run on."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GNU_TIME = "/usr/bin/time"
HINTS = {"umoci": "apt-get install umoci", "zstd": "apt-get install zstd",
         "time": "apt-get install time (GNU time, for peak RSS)", "tar": "apt-get install tar"}
METHODS = ("oci-unpack", "oci-unpack-raw", "umoci-unpack", "umoci-raw", "tar", "decompress")
LABELS = {"oci-unpack": "oci-unpack", "oci-unpack-raw": "oci-unpack --no-config",
          "umoci-unpack": "umoci unpack", "umoci-raw": "umoci raw unpack"}
TAR_FLAGS = {"gzip": ["-z"], "zstd": ["--zstd"], "tar": []}
TAR_LABELS = {"gzip": "tar -xzf (floor)", "zstd": "tar --zstd -xf (floor)",
              "tar": "tar -xf (floor)"}
# The decompress floor: what oci-unpack must do at least (read, sha256 the blob,
# decompress with the same libraries, sha256 the tar), writing nothing.
DECOMPRESS = r"""
import hashlib, sys
kind = sys.argv[1]
for path in sys.argv[2:]:
    blob, diff = hashlib.sha256(), hashlib.sha256()
    with open(path, "rb") as f:
        if kind == "zstd":
            import zstandard
            d = zstandard.ZstdDecompressor().decompressobj()
        elif kind == "gzip":
            from isal import isal_zlib
            d = isal_zlib.decompressobj(wbits=31)
        else:
            d = None
        while chunk := f.read(1 << 20):
            blob.update(chunk)
            diff.update(d.decompress(chunk) if d else chunk)
"""


@dataclass
class Image:
    """One generated layout: NAME = BASE-COMPRESSION."""

    name: str
    base: str
    compression: str
    path: Path
    blobs: list[Path]
    info: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.path}:latest"


def load_image(root: Path, name: str, info: dict[str, Any]) -> Image:
    """Read the layout's index and manifest for the layer blob paths."""
    path = root / name
    blob = path / "blobs" / "sha256"
    index = json.loads((path / "index.json").read_text())
    manifest = json.loads((blob / index["manifests"][0]["digest"][7:]).read_text())
    base, _, comp = name.rpartition("-")
    return Image(name, base, comp, path, [blob / d["digest"][7:] for d in manifest["layers"]],
                 info)


def tool(name: str) -> str | None:
    """The path of a tool, or None."""
    if name == "time":
        return GNU_TIME if os.access(GNU_TIME, os.X_OK) else None
    return shutil.which(name)


def oci_unpack_argv() -> list[str]:
    """The oci-unpack command: the installed script, else this interpreter's module."""
    script = shutil.which("oci-unpack")
    return [script] if script else [sys.executable, "-m", "unpack"]


@dataclass
class Plan:
    """A method on an image: its argv builder and where it runs (`source`, for umoci)."""

    method: str
    label: str
    source: Image
    argv: Callable[[str], list[str]]
    writes: bool = True
    rootfs: str = "rootfs"  # the rootfs inside the output dir ("" = the dir itself)
    runs: list[dict[str, float]] = field(default_factory=list)
    failed: str = ""


def plan(method: str, image: Image, images: dict[str, Image], notes: list[str],
         oci: list[str] | None = None) -> Plan | None:
    """The Plan for `method` on `image`, or None (with a note) when it cannot run.

    `oci` is the oci-unpack command (default: `oci_unpack_argv()`).
    """
    comp = image.compression
    if method.startswith("oci-unpack"):
        cmd = [*(oci or oci_unpack_argv()), *(["--no-config"] if method.endswith("raw") else [])]
        return Plan(method, LABELS[method], image, lambda d: [*cmd, image.ref, d])
    if method.startswith("umoci"):
        if tool("umoci") is None:
            notes.append(f"{method} skipped: umoci not found ({HINTS['umoci']})")
            return None
        source = image
        if comp == "zstd":  # umoci 0.4.7 cannot read zstd layers
            source = images.get(f"{image.base}-gzip") or image
        sub = ["unpack"] if method == "umoci-unpack" else ["raw", "unpack"]
        label = LABELS[method] + ("*" if source is not image else "")
        return Plan(method, label, source,
                    lambda d: ["umoci", *sub, "--image", source.ref, d],
                    rootfs="rootfs" if method == "umoci-unpack" else "")
    if method == "tar":
        need = "zstd" if comp == "zstd" else "tar"
        if tool("tar") is None or tool(need) is None:
            notes.append(f"tar floor skipped: {need} not found ({HINTS[need]})")
            return None
        loop = ('set -e; d=$1; f=$2; shift 2; mkdir "$d"; '
                'for b; do tar --numeric-owner $f -xf "$b" -C "$d"; done')
        flags = " ".join(TAR_FLAGS[comp])
        return Plan(method, TAR_LABELS[comp], image,
                    lambda d: ["sh", "-c", loop, "sh", d, flags, *map(str, image.blobs)],
                    rootfs="")
    if method == "decompress":
        return Plan(method, f"read+sha256+{comp if comp != 'tar' else 'no'} decompress (py)",
                    image, lambda d: [sys.executable, "-c", DECOMPRESS, comp,
                                      *map(str, image.blobs)], writes=False)
    raise ValueError(f"unknown method {method!r}")
