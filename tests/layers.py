"""Test helpers for the layer applier: layers in, an unpacked rootfs out, and tree snapshots.

`unpack_layers` builds an OCI layout from a list of layers (each a list of
`fixtures.tarwriter.Entry`), runs the real `unpack` verb in-process with the
chosen resolver, and returns the rootfs path. `tree` snapshots a directory
tree without following symlinks. `Sentinels` plants files beside the bundle
and under a unique `/tmp/oci-unpack-test-*` directory, for confinement checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from fixtures.layout import Compression, LayoutWriter
from fixtures.tarwriter import Entry, build_tar
from unpack import UnpackOptions, unpack_image
from unpack.fs import openat2
from unpack.fs import rootfs as rootfs_module
from unpack.layer import fastlane

RESOLVERS = ("openat2", "walk")
# How the applier tests run each rule: with either resolver (and the C fast lane, where it
# was built), and once more through the pure-Python path alone.
APPLIER_MODES = (*RESOLVERS, "openat2-python", "walk-python")
CONFIG: dict[str, Any] = {"created": "2023-11-14T22:13:20Z", "config": {"Cmd": ["/bin/true"]}}


def build_image(
    path: Path,
    layers: Sequence[Sequence[Entry]],
    *,
    compression: Compression = "gzip",
    config: dict[str, Any] | None = None,
) -> str:
    """Write an OCI layout with one image tagged `latest`; return `PATH:latest`."""
    out = LayoutWriter(path)
    descriptors = [out.add_layer(build_tar(entries), compression) for entries in layers]
    out.tag(out.add_image(descriptors, config or CONFIG), "latest")
    out.write()
    return f"{path}:latest"


@dataclass
class Unpacker:
    """Unpacks layer lists with one resolver: images under `images`, bundles in `workdir`."""

    images: Path
    workdir: Path
    use_openat2: bool
    warnings: list[str] = field(default_factory=list)
    sentinels: Sentinels | None = None
    openat2_calls: int = 0
    walk_calls: int = 0
    lane_files: int = 0  # files the C fast lane created
    _count: int = 0

    @property
    def bundle(self) -> Path:
        """The bundle directory of the latest `__call__`."""
        return self.workdir / ("bundle" if self._count <= 1 else f"bundle{self._count}")

    def __call__(
        self, layers: Sequence[Sequence[Entry]], *, compression: Compression = "gzip"
    ) -> Path:
        """Unpack `layers` into a fresh bundle; return its rootfs path."""
        self._count += 1
        suffix = "" if self._count == 1 else str(self._count)
        image = build_image(self.images / f"image{suffix}", layers, compression=compression)
        options = UnpackOptions(use_openat2=self.use_openat2, write_config=False)
        unpack_image(image, str(self.bundle), options, warn=self.warnings.append)
        return self.bundle / "rootfs"


@contextlib.contextmanager
def counting_resolvers(monkeypatch: pytest.MonkeyPatch, unpacker: Unpacker) -> Iterator[None]:
    """Count calls of `openat2.openat2` and `Rootfs._walk` made while unpacking."""
    real_openat2 = openat2.openat2
    real_walk = rootfs_module.Rootfs._walk

    def spy_openat2(*args: Any, **kwargs: Any) -> int:
        unpacker.openat2_calls += 1
        return real_openat2(*args, **kwargs)

    def spy_walk(self: rootfs_module.Rootfs, *args: Any, **kwargs: Any) -> int | None:
        unpacker.walk_calls += 1
        return real_walk(self, *args, **kwargs)

    monkeypatch.setattr(openat2, "openat2", spy_openat2)
    monkeypatch.setattr(rootfs_module.Rootfs, "_walk", spy_walk)
    if fastlane.create_run is not None:
        real_create_run = fastlane.create_run

        def spy_create_run(*args: Any) -> tuple[Any, ...]:
            made = real_create_run(*args)
            unpacker.lane_files += len(made[1])
            return made

        monkeypatch.setattr(fastlane, "create_run", spy_create_run)
    yield


def resolver_param(name: str) -> bool:
    """`use_openat2` for a resolver (or applier mode) name; skips the openat2 cases on
    kernels without it."""
    use = name.startswith("openat2")
    if use and not openat2.available():
        pytest.skip("this kernel (or seccomp policy) does not offer openat2 RESOLVE_IN_ROOT")
    return use


# -- tree snapshots ---------------------------------------------------------------------------


class Node(NamedTuple):
    """What `tree` records for one path."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int
    target: str | None
    mtime_ns: int
    nlink: int
    inode: int
    sha256: str | None
    xattrs: dict[str, bytes]
    rdev: int = 0
    atime_ns: int = 0


def kind(mode: int) -> str:
    """A short type name for an `st_mode`."""
    for test, name in (
        (stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"), (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "unknown"


def xattrs_of(path: str | Path) -> dict[str, bytes]:
    """Every xattr of `path` itself (not a symlink's target); {} where unsupported."""
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for key in keys:
        with contextlib.suppress(OSError):
            out[key] = os.getxattr(path, key, follow_symlinks=False)
    return out


def node(path: str | Path) -> Node:
    """Snapshot one path (never following a symlink in its last component)."""
    info = os.lstat(path)
    digest = None
    if stat.S_ISREG(info.st_mode):
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    target = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    return Node(
        kind(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_size,
        target, info.st_mtime_ns, info.st_nlink, info.st_ino, digest, xattrs_of(path),
        info.st_rdev, info.st_atime_ns,
    )  # fmt: skip


def tree(root: str | Path, *, skip: Callable[[str], bool] | None = None) -> dict[str, Node]:
    """Snapshot every path under `root`: relative path (fsdecoded) -> `Node`.

    `root` itself is recorded as "."; `skip(relpath)` prunes a path and its subtree.
    """
    root = os.fspath(root)
    out = {".": node(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if skip is not None and skip(rel):
                if name in dirnames:
                    dirnames.remove(name)
                continue
            out[rel] = node(full)
    return out


def sha256(data: bytes) -> str:
    """Hex SHA-256, as `Node.sha256` records it."""
    return hashlib.sha256(data).hexdigest()


def stable(snapshot: dict[str, Node]) -> dict[str, tuple[Any, ...]]:
    """Drop atimes (reading a file may change them) for before/after comparisons."""
    return {path: n[:-1] for path, n in snapshot.items()}


# -- sentinels for confinement checks -----------------------------------------------------------

SENTINEL = b"sentinel: must never change\n"


@dataclass
class Sentinels:
    """Files and dirs outside the bundle that an escaping unpacker would touch.

    `beside` is the directory that holds the bundle (its `outside/`, `sibling.txt`,
    `etc/passwd`); `host` is a unique `/tmp/oci-unpack-test-*` directory. Top-level
    names in `beside` starting with one of `excluded` (after any leading dot) are the
    bundles themselves and are not checked.
    """

    beside: Path
    host: Path
    excluded: tuple[str, ...] = ()
    _before: dict[str, dict[str, tuple[Any, ...]]] = field(default_factory=dict)

    @classmethod
    def plant(cls, beside: Path, excluded: tuple[str, ...]) -> Sentinels:
        host = Path(tempfile.mkdtemp(prefix="oci-unpack-test-", dir="/tmp"))
        self = cls(beside, host, excluded)
        for base in (beside, host):
            (base / "outside" / "dir").mkdir(parents=True)
            (base / "outside" / "secret.txt").write_bytes(SENTINEL)
            (base / "outside" / "dir" / "inner.txt").write_bytes(SENTINEL)
            (base / "etc").mkdir()
            (base / "etc" / "passwd").write_bytes(SENTINEL)
            (base / "sibling.txt").write_bytes(SENTINEL)
            os.chmod(base / "sibling.txt", 0o640)
            os.utime(base / "sibling.txt", ns=(1_000_000_000, 1_000_000_000))
        self._before = self.snapshot()
        return self

    def _skip(self, rel: str) -> bool:
        top = rel.split("/", 1)[0].lstrip(".")
        return top.startswith(self.excluded)

    def snapshot(self) -> dict[str, dict[str, tuple[Any, ...]]]:
        return {
            "beside": stable(tree(self.beside, skip=self._skip)),
            "host": stable(tree(self.host)),
        }

    def check(self) -> None:
        """Assert nothing outside the bundle changed, appeared or disappeared."""
        after = self.snapshot()
        for where in ("beside", "host"):
            before_paths, after_paths = self._before[where], after[where]
            changed = {p for p in before_paths.keys() | after_paths.keys()
                       if before_paths.get(p) != after_paths.get(p)
                       and (p != "." or where == "host")}  # fmt: skip
            assert not changed, f"{where} sentinels changed: {sorted(changed)}"
            assert (self.beside / "sibling.txt").read_bytes() == SENTINEL

    def remove(self) -> None:
        shutil.rmtree(self.host, ignore_errors=True)


# -- the fixture body every applier test module wraps -------------------------------------------


def unpacker_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Unpacker]:
    """Body of the `unpacker` fixture (params=APPLIER_MODES): an `Unpacker` per mode.

    Plants sentinels beside the bundle and under `/tmp/oci-unpack-test-*` and checks them
    after the test. The openat2 cases really resolve with openat2 (calls are counted);
    the walk case never calls it; the "-python" case turns the C fast lane off. Use it as::

        @pytest.fixture(params=APPLIER_MODES)
        def unpacker(request, tmp_path, monkeypatch):
            yield from unpacker_fixture(request, tmp_path, monkeypatch)
    """
    use = resolver_param(request.param)
    if request.param.endswith("-python"):
        monkeypatch.setattr(fastlane, "AVAILABLE", False)
    images, work = tmp_path / "images", tmp_path / "work"
    images.mkdir()
    work.mkdir()
    result = Unpacker(images, work, use)
    sentinels = result.sentinels = Sentinels.plant(work, ("bundle",))
    try:
        with counting_resolvers(monkeypatch, result):
            yield result
        sentinels.check()
        if use:
            assert openat2.available()
            assert result.walk_calls == 0 or result.openat2_calls > 0
        else:
            assert result.openat2_calls == 0, "the walk resolver must not call openat2"
    finally:
        sentinels.remove()
