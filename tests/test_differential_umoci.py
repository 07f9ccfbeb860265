"""Differential test: oci-unpack and `umoci unpack` (0.4.7) must build the same rootfs.

Both tools unpack the same gzip-only images; every path is compared on type, mode,
owner, size, link target, mtime, nlink, device numbers, xattrs and content. umoci
0.4.7 reads neither zstd layers nor GNU sparse ('S') members nor Docker media types,
so the `demo` fixture is rebuilt as a sibling with the same content: zstd layers
gzip-compressed and its GNU sparse file written as a PAX sparse file (same name, same
holes). Deliberate differences are listed in `DIFFERENCES` with the reason.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, needs_tool, run_cli
from layers import Node, node, sha256, tree

from fixtures.images import DEMO_CONFIG, DEMO_EXPECTED, DEMO_LAYERS, SPARSE_CONTENT
from fixtures.layout import LayoutWriter
from fixtures.tarwriter import Entry, build_tar, dirent, hardlink, opaque, reg, symlink, whiteout
from unpack import UnpackOptions, unpack_image
from unpack.layer.policy import clean_path

pytestmark = [needs_root, needs_tool("umoci")]

COMPARED = ("type", "mode", "uid", "gid", "size", "target", "mtime_ns", "nlink", "sha256",
            "xattrs", "rdev")  # fmt: skip

#: (path, attribute) -> why oci-unpack deliberately differs from umoci 0.4.7 there.
#: Path "*implicit*" stands for every directory that no layer has a header for.
DIFFERENCES: dict[tuple[str, str], str] = {
    (".", "mtime_ns"): "no layer has a './' header, so the rootfs dir has no specified time: "
    "oci-unpack leaves its creation time; umoci 0.4.7 ends with whatever its per-entry "
    "parent-mtime restoring leaves (the epoch for demo's './'-prefixed names)",
    ("*implicit*", "mtime_ns"): "a parent directory created implicitly (no header in any "
    "layer) has no specified time: both tools leave the time it was created or last changed",
}

CAP_NET_RAW = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # vfs_cap_data v2
LONG = "long/" + "x" * 120 + "/" + "y" * 130

RICH_LAYERS: list[list[Entry]] = [
    [
        dirent("bin"), reg("bin/tool", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000),
        reg("bin/ping", b"\x7fELF", mode=0o755, xattrs={"security.capability": CAP_NET_RAW}),
        reg("bin/sgid", b"x", mode=0o2755, gid=50),
        dirent("tmp", mode=0o1777), dirent("etc", mtime=1500000000),
        reg("etc/conf", b"conf\n", mode=0o600, uid=33, gid=33, uname="www-data"),
        reg("etc/xattr", b"x", xattrs={"user.a": b"1", "trusted.b": b"\x00\x01"}),
        symlink("etc/link", "conf", mtime=1400000000), dirent("etc/sub"),
        reg("etc/sub/f", b"f"),
        dirent("var"), dirent("var/lib"), reg("var/lib/db", b"db"), reg("var/lib/gone", b"g"),
        dirent("var/lib/gonedir", mtime=1300000000), reg("var/lib/gonedir/x", b"x"),
        dirent("opq"), reg("opq/old", b"old"), dirent("opq/oldsub"), reg("opq/oldsub/y", b"y"),
        dirent("opq2"), reg("opq2/old", b"old"),
        reg("file2dir", b"f"), dirent("dir2file"), reg("dir2file/x", b"x"),
        dirent("dir2link"), symlink("link2dir", "etc"), reg("link-target", b"t"),
        symlink("wlink", "link-target"),
        Entry("dev/null", "chardev", mode=0o666, devmajor=1, devminor=3),
        Entry("dev/sda", "blockdev", mode=0o660, gid=6, devmajor=8, devminor=0),
        Entry("run/fifo", "fifo", mode=0o620),
        reg("nsec", b"n", pax={"mtime": "1700000000.123456789"}),
        reg("bigid", b"b", uid=4000000, gid=3000000),
        reg("implicit/parent/file", b"deep"),
        reg("sparse", b"s" * 4096 + bytes(1 << 20) + b"e" * 512,
            sparse=[(0, 4096), ((1 << 20) + 4096, 512)]),
        reg("caf\u00e9-utf8", b"u"), reg(b"latin1-\xe9", b"l"),
    ],
    [
        whiteout("var/lib/gone"), whiteout("var/lib/gonedir"), whiteout("wlink"),
        opaque("opq"), reg("opq/new", b"new"), reg("opq2/new", b"new"), opaque("opq2"),
        dirent("file2dir"), reg("file2dir/in", b"in"), reg("dir2file", b"now a file"),
        symlink("dir2link", "/srv/elsewhere"), dirent("link2dir"), reg("link2dir/z", b"z"),
        hardlink("bin/tool-hard", "bin/tool"), hardlink("etc/conf-hard", "etc/conf"),
        dirent("etc", mode=0o750, mtime=1600000000),
        reg(LONG, b"pax long\n"), reg(LONG + "-gnu", b"gnu long\n", format="gnu"),
        symlink("long/link", "/" + LONG, format="gnu"),
        reg("dup", b"one"), reg("dup", b"two", mode=0o640),
        reg("var/lib/new", b"var/lib gains a child; keeps its header mtime"),
    ],
    [whiteout("bin/tool"), reg("etc/conf", b"replaced\n"), hardlink("hl-to-link", "etc/link")],
]  # fmt: skip


def _gzip_only(entry: Entry) -> Entry:
    """umoci 0.4.7 rejects GNU sparse members: write the same sparse file as PAX."""
    if entry.sparse is not None and entry.format == "gnu":
        return dataclasses.replace(entry, format="pax")
    return entry


def build(path: Path, layers: list[tuple[str, list[Entry]]], config: dict[str, Any]) -> None:
    """An OCI layout tagged `latest`; zstd layers become gzip (umoci 0.4.7 cannot read zstd)."""
    out = LayoutWriter(path)
    descriptors = [
        out.add_layer(build_tar([_gzip_only(e) for e in entries]),
                      "gzip" if compression == "zstd" else compression)  # type: ignore[arg-type]
        for compression, entries in layers
    ]  # fmt: skip
    out.tag(out.add_image(descriptors, config), "latest")
    out.write()


IMAGES: dict[str, tuple[list[tuple[str, list[Entry]]], dict[str, Any]]] = {
    "demo": (DEMO_LAYERS, DEMO_CONFIG),
    "rich": ([("gzip", entries) for entries in RICH_LAYERS],
             {"created": "2023-11-14T22:13:20Z", "config": {"Cmd": ["/bin/true"]}}),
}  # fmt: skip


def dirs_with_headers(layers: list[tuple[str, list[Entry]]]) -> set[str]:
    """Paths that some layer has a directory header for ("." for the rootfs)."""
    out = set()
    for _, entries in layers:
        for entry in entries:
            if entry.type == "dir":
                name = os.fsdecode(entry.name) if isinstance(entry.name, bytes) else entry.name
                out.add("/".join(clean_path(name)) or ".")
    return out


def compare(ours: dict[str, Node], theirs: dict[str, Node], headed: set[str]) -> list[str]:
    """Every undeclared difference between two tree snapshots, one line each."""
    problems = []
    for path in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(path), theirs.get(path)
        if a is None or b is None:
            problems.append(f"{path}: only in {'umoci' if a is None else 'oci-unpack'}")
            continue
        for attr in COMPARED:
            if attr == "size" and a.type == "dir":
                continue  # directory sizes are a filesystem detail
            if getattr(a, attr) == getattr(b, attr):
                continue
            implicit = a.type == "dir" and path not in headed and path != "."
            key = ("*implicit*" if implicit else path, attr)
            if key not in DIFFERENCES:
                problems.append(f"{path}: {attr} oci-unpack={getattr(a, attr)!r} "
                                f"umoci={getattr(b, attr)!r}")  # fmt: skip
    return problems


def hardlink_groups(snapshot: dict[str, Node]) -> set[frozenset[str]]:
    """Sets of paths sharing an inode (more than one name)."""
    groups: dict[int, set[str]] = {}
    for path, n in snapshot.items():
        if n.type != "dir":
            groups.setdefault(n.inode, set()).add(path)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


@pytest.fixture(scope="module")
def umoci_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (layout, umoci's rootfs), unpacked once per module."""
    out = {}
    for name, (layers, config) in IMAGES.items():
        base = tmp_path_factory.mktemp(f"umoci-{name}")
        build(base / "image", layers, config)
        result = subprocess.run(
            ["umoci", "--log=error", "unpack", "--image", f"{base / 'image'}:latest",
             str(base / "bundle")], capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 0, f"umoci unpack {name}: {result.stderr}"
        out[name] = (base / "image", base / "bundle" / "rootfs")
    return out


@pytest.mark.parametrize("how", ["cli", "walk"])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_same_rootfs_as_umoci(
    umoci_trees: dict[str, tuple[Path, Path]], tmp_path: Path, name: str, how: str
) -> None:
    """`cli` runs the oci-unpack command (openat2 where available); `walk` the fallback."""
    layout, umoci_rootfs = umoci_trees[name]
    bundle = tmp_path / "bundle"
    if how == "cli":
        run_cli("--quiet", "--no-config", f"{layout}:latest", bundle, check=True)
    else:
        options = UnpackOptions(use_openat2=False, write_config=False)
        unpack_image(f"{layout}:latest", str(bundle), options, warn=lambda _: None)
    ours, theirs = tree(bundle / "rootfs"), tree(umoci_rootfs)
    assert len(ours) > 20
    assert compare(ours, theirs, dirs_with_headers(IMAGES[name][0])) == []
    assert hardlink_groups(ours) == hardlink_groups(theirs)
    assert hardlink_groups(ours)  # the images do have hardlinks


def test_demo_sibling_matches_fixture_expectations(
    umoci_trees: dict[str, tuple[Path, Path]],
) -> None:
    """The gzip-only demo sibling has the demo content (checked on umoci's own output)."""
    rootfs = umoci_trees["demo"][1]
    for path, facts in DEMO_EXPECTED.items():
        n = node(rootfs / path)
        assert n.type == facts["type"], path
        if "content" in facts:
            assert n.sha256 == sha256(facts["content"]), path
        if "mode" in facts:
            assert n.mode == facts["mode"], path
    assert (rootfs / "data/sparse-gnu.bin").read_bytes() == SPARSE_CONTENT


def test_compare_reports_undeclared_differences() -> None:
    """The comparison itself is not vacuous: a changed mode or a missing path is reported."""
    base = Node("file", 0o644, 0, 0, 1, None, 10, 1, 1, "h", {})
    changed = base._replace(mode=0o600)
    assert compare({"a": base}, {"a": changed}, set()) == ["a: mode oci-unpack=420 umoci=384"]
    assert compare({"a": base}, {}, set()) == ["a: only in oci-unpack"]
