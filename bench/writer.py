"""Stream layers into three OCI layouts at once: plain tar, gzip and zstd blobs.

A layer is described by a `Layer` (path -> `Spec`, small); its tar is generated entry by
entry and fed in 1 MiB chunks to the plain blob (whose digest is the diff_id) and to a
gzip and a zstd compressor, each in its own thread, so memory stays a few MiB whatever
the layer size.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import zstandard

from bench.content import CHUNK, Content
from fixtures.layout import LAYER_TYPES, LayoutWriter
from fixtures.tarwriter import Entry, encode_entry

COMPRESSIONS = ("gzip", "zstd", "tar")
MTIME = 1700000000


class Spec(NamedTuple):
    """One layer member: kind is file, dir, symlink or hardlink; link is the target."""

    kind: str
    size: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    content: str = "text"
    mtime: int = MTIME


def sortkey(path: str) -> tuple[str, ...]:
    """GNU tar --sort=name order: depth first, each directory's names sorted."""
    return tuple(path.split("/"))


class Layer:
    """The members of one layer, with parent directories added and sorted on output."""

    def __init__(self, name: str, seed: str) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.entries: dict[str, Spec] = {}

    def _mtime(self) -> int:
        return MTIME - self.rng.randrange(0, 86400 * 400)

    def file(self, path: str, size: int, content: str = "text", mode: int = 0o644,
             uid: int = 0, gid: int = 0) -> None:
        """A regular file of `size` bytes of `content` (text, binary, random)."""
        self.entries[path] = Spec("file", size, mode, uid, gid, "", content, self._mtime())

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """A directory."""
        self.entries[path] = Spec("dir", 0, mode, uid, gid, mtime=self._mtime())

    def symlink(self, path: str, target: str) -> None:
        """A symbolic link."""
        self.entries[path] = Spec("symlink", 0, 0o777, link=target, mtime=self._mtime())

    def hardlink(self, path: str, target: str) -> None:
        """A hard link to the file `target` of this layer (whichever sorts first is the file)."""
        spec = self.entries[target]
        if spec.kind != "file":
            raise ValueError(f"hardlink target {target!r} is not a file")
        if sortkey(path) < sortkey(target):
            self.entries[path] = spec
            path, target = target, path
        self.entries[path] = Spec("hardlink", 0, spec.mode, spec.uid, spec.gid, target,
                                  mtime=spec.mtime)

    def whiteout(self, path: str) -> None:
        """Hide `path` of the layers below."""
        head, _, tail = path.rpartition("/")
        self.file(f"{head}/.wh.{tail}" if head else f".wh.{tail}", 0, mode=0o600)

    def opaque(self, path: str) -> None:
        """Hide every lower-layer child of directory `path`."""
        self.dir(path)
        self.file(f"{path}/.wh..wh..opq", 0, mode=0o600)

    def items(self) -> list[tuple[str, Spec]]:
        """All members in tar order, missing parent directories added."""
        for path in list(self.entries):
            parts = path.split("/")
            for i in range(1, len(parts)):
                self.entries.setdefault("/".join(parts[:i]), Spec("dir", mode=0o755))
        return sorted(self.entries.items(), key=lambda kv: sortkey(kv[0]))


class _Output:
    """One blob being written: hashed, optionally compressed, in its own thread."""

    def __init__(self, layout: Path, compression: str) -> None:
        self.compression = compression
        self.dir = layout / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dir / f".tmp-{os.getpid()}-{compression}"
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()
        self.hash = hashlib.sha256()
        self.size = 0
        self.crc = 0
        self.isize = 0
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.zobj: Any = None
        if compression == "gzip":  # one member, fixed header: mtime 0, no name, OS 255
            self.zobj = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            self._emit(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        elif compression == "zstd":
            self.zobj = zstandard.ZstdCompressor(level=3).compressobj()

    def _emit(self, data: bytes) -> None:
        self.hash.update(data)
        self.file.write(data)
        self.size += len(data)

    def _feed(self, chunk: bytes) -> None:
        if self.compression == "gzip":
            self.crc = zlib.crc32(chunk, self.crc)
            self.isize += len(chunk)
        self._emit(self.zobj.compress(chunk) if self.zobj else chunk)

    def feed(self, chunk: bytes) -> Future[None]:
        """Queue `chunk` (uncompressed tar bytes)."""
        return self.pool.submit(self._feed, chunk)

    def finish(self) -> dict[str, Any]:
        """Flush, rename the blob to its digest; return its descriptor."""
        self.pool.shutdown(wait=True)
        if self.zobj is not None:
            self._emit(self.zobj.flush())
        if self.compression == "gzip":
            self._emit(struct.pack("<II", self.crc, self.isize & 0xFFFFFFFF))
        self.file.close()
        digest = "sha256:" + self.hash.hexdigest()
        os.replace(self.tmp, self.dir / digest[7:])
        key = ("oci", "none" if self.compression == "tar" else self.compression)
        return {"mediaType": LAYER_TYPES[key], "digest": digest, "size": self.size}


class LayerSink:
    """A write() target fanning the tar stream out to one `_Output` per layout."""

    def __init__(self, layouts: dict[str, Path]) -> None:
        self.outputs = [_Output(path, comp) for comp, path in layouts.items()]
        self.diff = hashlib.sha256()
        self.buf = bytearray()
        self.pending: deque[Future[None]] = deque()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        chunk = bytes(self.buf)
        self.buf.clear()
        self.diff.update(chunk)
        self.size += len(chunk)
        for out in self.outputs:
            self.pending.append(out.feed(chunk))
        while len(self.pending) > 4 * len(self.outputs):  # bounded memory
            self.pending.popleft().result()

    def finish(self) -> tuple[dict[str, dict[str, Any]], str]:
        """Return ({compression: descriptor}, diff_id)."""
        self._flush()
        for fut in self.pending:
            fut.result()
        descs = {out.compression: out.finish() for out in self.outputs}
        return descs, "sha256:" + self.diff.hexdigest()


def write_layer(layer: Layer, sink: LayerSink) -> dict[str, int]:
    """Write `layer` as a tar into `sink`; return member statistics."""
    content = Content(f"content:{layer.name}")
    stats = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0,
             "whiteouts": 0, "opaque": 0, "bytes": 0}
    for path, spec in layer.items():
        stats["entries"] += 1
        name = path + "/" if spec.kind == "dir" else path
        kind = "file" if spec.kind == "file" else spec.kind
        raw: dict[str, bytes | int] = {"size": spec.size} if spec.size else {}
        sink.write(encode_entry(Entry(name, kind, spec.mode, spec.uid, spec.gid, mtime=spec.mtime,
                                      linkname=spec.link, raw=raw)))
        base = path.rpartition("/")[2]
        if base.startswith(".wh."):
            stats["opaque" if base == ".wh..wh..opq" else "whiteouts"] += 1
        else:
            stats[{"file": "files", "dir": "dirs", "symlink": "symlinks",
                   "hardlink": "hardlinks"}[spec.kind]] += 1
        if spec.size:
            stats["bytes"] += spec.size
            for chunk in content.stream(spec.content, spec.size):
                sink.write(chunk)
            sink.write(bytes(-spec.size % 512))
    sink.write(bytes(1024))
    return stats


def write_image(layouts: dict[str, Path], layers: list[Layer], config: dict[str, Any],
                ref: str = "latest") -> dict[str, Any]:
    """Write `layers` into one layout per compression; return statistics."""
    per: dict[str, list[tuple[dict[str, Any], str]]] = {c: [] for c in layouts}
    info: dict[str, Any] = {"layers": [], "blob_bytes": dict.fromkeys(layouts, 0)}
    for layer in layers:
        sink = LayerSink(layouts)
        stats = write_layer(layer, sink)
        descs, diff_id = sink.finish()
        for comp, desc in descs.items():
            per[comp].append((desc, diff_id))
            info["blob_bytes"][comp] += desc["size"]
        info["layers"].append({"name": layer.name, "tar_bytes": sink.size, **stats})
    for comp, path in layouts.items():
        writer = LayoutWriter(path)
        writer.tag(writer.add_image(per[comp], config), ref)
        writer.write()
    for key in ("entries", "files", "dirs", "symlinks", "hardlinks", "whiteouts", "opaque",
                "bytes", "tar_bytes"):
        info[key] = sum(layer[key] for layer in info["layers"])
    return info
