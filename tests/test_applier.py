"""Layer applier: entry types and metadata, each rule run with both path resolvers.

Every test unpacks small layer lists through the real `unpack` verb (see `layers.py`)
once with openat2(RESOLVE_IN_ROOT) and once with the component-walk fallback, and the
`unpacker` fixture checks afterwards that the sentinels outside the bundle are untouched.
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from layers import APPLIER_MODES, Unpacker, node, sha256, tree, unpacker_fixture

from fixtures.tarwriter import DEFAULT_MTIME, Entry, dirent, hardlink, reg, symlink, whiteout
from unpack.fs import openat2
from unpack.layer import fastlane

NS = 1_000_000_000


@pytest.fixture(params=APPLIER_MODES)
def unpacker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Unpacker]:
    """Unpacks layer lists with each resolver; sentinels are checked afterwards."""
    yield from unpacker_fixture(request, tmp_path, monkeypatch)


def vfs_cap_v2(*caps: int, effective: bool = True) -> bytes:
    """A `vfs_cap_data` revision 2 blob granting `caps` as permitted (and effective)."""
    permitted = 0
    for cap in caps:
        permitted |= 1 << cap
    magic = 0x02000000 | (1 if effective else 0)
    return struct.pack("<IIIII", magic, permitted & 0xFFFFFFFF, 0, permitted >> 32, 0)


CAP_NET_RAW = 13
CAP_NET_BIND_SERVICE = 10


# -- the resolvers themselves -----------------------------------------------------------------


def test_resolver_is_the_one_asked_for(unpacker: Unpacker) -> None:
    """The openat2 cases resolve nested paths with openat2; the walk case never calls it."""
    root = unpacker([[dirent("a"), dirent("a/b"), reg("a/b/c", b"deep\n")],
                     [reg("a/b/d", b"upper\n")]])  # fmt: skip
    assert (root / "a/b/c").read_bytes() == b"deep\n"
    assert (root / "a/b/d").read_bytes() == b"upper\n"
    if unpacker.use_openat2:
        assert openat2.available()
        assert unpacker.openat2_calls > 0
    else:
        assert unpacker.openat2_calls == 0
        assert unpacker.walk_calls > 0


def test_fast_lane_is_used_unless_turned_off(
    unpacker: Unpacker, request: pytest.FixtureRequest
) -> None:
    """Root with no ID maps: the plain files after a file or directory entry go through the
    C fast lane (when it was built); the "-python" mode applies every entry in Python."""
    files = [reg(f"d/f{i}", b"x" * i) for i in range(20)]
    root = unpacker([[dirent("d"), *files]])
    assert sorted(os.listdir(root / "d")) == sorted(f"f{i}" for i in range(20))
    if shutil.which("cc"):
        assert fastlane.create_run is not None, "a C compiler is here, but no fast lane"
    lane_on = fastlane.AVAILABLE and os.geteuid() == 0
    assert unpacker.lane_files == (20 if lane_on else 0)
    if request.node.callspec.params["unpacker"].endswith("-python"):
        assert unpacker.lane_files == 0


# -- entry types ------------------------------------------------------------------------------


def test_regular_dir_symlink_hardlink_fifo(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            [
                dirent("d", mode=0o750),
                reg("d/f", b"data\n", mode=0o640),
                symlink("d/rel", "f"),
                symlink("abs", "/d/f"),
                hardlink("d/h", "d/f"),
                Entry("d/pipe", "fifo", mode=0o620),
                reg("empty"),
                dirent("emptydir"),
            ]
        ]
    )
    t = tree(root)
    assert (t["d"].type, t["d"].mode) == ("dir", 0o750)
    assert (t["d/f"].type, t["d/f"].mode, t["d/f"].sha256) == ("file", 0o640, sha256(b"data\n"))
    assert (t["d/rel"].type, t["d/rel"].target) == ("symlink", "f")
    assert (t["abs"].type, t["abs"].target) == ("symlink", "/d/f")
    assert t["d/h"].inode == t["d/f"].inode and t["d/f"].nlink == 2
    assert (t["d/pipe"].type, t["d/pipe"].mode) == ("fifo", 0o620)
    assert (t["empty"].type, t["empty"].size) == ("file", 0)
    assert t["emptydir"].type == "dir" and not os.listdir(root / "emptydir")


@needs_root
def test_char_and_block_devices(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            [
                Entry("dev/null", "chardev", mode=0o666, devmajor=1, devminor=3),
                Entry("dev/loop7", "blockdev", mode=0o660, gid=6, devmajor=7, devminor=7),
            ]
        ]
    )
    t = tree(root)
    assert (t["dev/null"].type, t["dev/null"].mode) == ("chardev", 0o666)
    assert (os.major(t["dev/null"].rdev), os.minor(t["dev/null"].rdev)) == (1, 3)
    assert (t["dev/loop7"].type, t["dev/loop7"].mode, t["dev/loop7"].gid) == ("blockdev", 0o660, 6)
    assert (os.major(t["dev/loop7"].rdev), os.minor(t["dev/loop7"].rdev)) == (7, 7)


LONG_DIR = "long/" + "d" * 120
LONG_FILE = LONG_DIR + "/" + "f" * 150
LONG_TARGET = "/" + LONG_FILE


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_long_names_and_long_link_targets(unpacker: Unpacker, fmt: str) -> None:
    """PAX `path`/`linkpath` and GNU `L`/`K` records: names and targets over 100 bytes."""
    root = unpacker(
        [
            [
                dirent(LONG_DIR, format=fmt),
                reg(LONG_FILE, b"long\n", format=fmt),
                symlink("long/sym-" + "s" * 110, LONG_TARGET, format=fmt),
                hardlink("long/hard-" + "h" * 110, LONG_FILE, format=fmt),
            ]
        ]
    )
    assert (root / LONG_FILE).read_bytes() == b"long\n"
    assert os.readlink(root / ("long/sym-" + "s" * 110)) == LONG_TARGET
    hard = node(root / ("long/hard-" + "h" * 110))
    assert hard.inode == node(root / LONG_FILE).inode and hard.nlink == 2
    assert sorted(os.listdir(root / "long")) == sorted(
        ["d" * 120, "sym-" + "s" * 110, "hard-" + "h" * 110]
    )


HOLE = 4 << 20
SPARSE_LOGICAL = b"head" * 1024 + bytes(HOLE) + b"tail" * 1024
SPARSE_SEGMENTS = [(0, 4096), (4096 + HOLE, 4096)]


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_sparse_file_restored_with_holes(unpacker: Unpacker, fmt: str) -> None:
    root = unpacker([[reg("sparse.bin", SPARSE_LOGICAL, sparse=SPARSE_SEGMENTS, format=fmt,
                          mode=0o600)]])  # fmt: skip
    path = root / "sparse.bin"
    info = os.lstat(path)
    assert info.st_size == len(SPARSE_LOGICAL)
    assert path.read_bytes() == SPARSE_LOGICAL
    assert info.st_blocks * 512 < info.st_size // 2, "the hole was written out as data"
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert os.listdir(root) == ["sparse.bin"]  # no GNUSparseFile.0 directory


def test_sparse_file_with_trailing_hole(unpacker: Unpacker) -> None:
    """A map ending in a hole (zero-length last segment) still gives the full size."""
    content = b"x" * 512
    root = unpacker([[reg("t.bin", content, sparse=[(0, 512), (HOLE, 0)], format="pax")]])
    assert (root / "t.bin").read_bytes() == content + bytes(HOLE - 512)


def test_utf8_and_non_utf8_names_round_trip(unpacker: Unpacker) -> None:
    latin1 = b"caf\xe9.txt"
    root = unpacker(
        [
            [
                reg("na\u00efve-\u65e5\u672c.txt", b"utf-8\n"),
                reg(latin1, b"latin-1\n"),
                symlink(b"link-\xff", latin1),
                dirent(b"dir-\xfe"),
                reg(b"dir-\xfe/inner\xfd", b"inner\n"),
            ]
        ]
    )
    names = set(os.listdir(os.fsencode(root)))
    assert names == {"na\u00efve-\u65e5\u672c.txt".encode(), latin1, b"link-\xff", b"dir-\xfe"}
    with open(os.path.join(os.fsencode(root), latin1), "rb") as file:
        assert file.read() == b"latin-1\n"
    assert os.readlink(os.path.join(os.fsencode(root), b"link-\xff")) == latin1
    assert os.listdir(os.path.join(os.fsencode(root), b"dir-\xfe")) == [b"inner\xfd"]


# -- metadata ---------------------------------------------------------------------------------


@needs_root
def test_numeric_owner_wins_over_names(unpacker: Unpacker) -> None:
    """uid/gid come from the header numbers; uname/gname (even "root") are ignored."""
    root = unpacker(
        [
            [
                reg("f", b"x", uid=1234, gid=5678, uname="root", gname="root"),
                dirent("d", uid=4321, gid=8765, uname="nobody", gname="nogroup"),
                symlink("s", "f", uid=1111, gid=2222, uname="root"),
                reg("big", uid=4_000_000, gid=3_000_000),  # PAX uid/gid records
            ]
        ]
    )
    t = tree(root)
    assert (t["f"].uid, t["f"].gid) == (1234, 5678)
    assert (t["d"].uid, t["d"].gid) == (4321, 8765)
    assert (t["s"].uid, t["s"].gid) == (1111, 2222)
    assert (t["big"].uid, t["big"].gid) == (4_000_000, 3_000_000)


@needs_root
def test_special_mode_bits_survive_chown(unpacker: Unpacker) -> None:
    """chown clears setuid/setgid, so the mode must be set after it."""
    root = unpacker(
        [
            [
                reg("suid", b"#!/bin/sh\n", mode=0o4755, uid=1000, gid=1000),
                reg("sgid", b"#!/bin/sh\n", mode=0o2711, uid=1000, gid=50),
                reg("both", b"", mode=0o6750, uid=0, gid=1000),
                dirent("shared", mode=0o2775, uid=1000, gid=1000),
                dirent("tmp", mode=0o1777),
                Entry("fifo", "fifo", mode=0o1640, uid=1000),
            ]
        ]
    )
    t = tree(root)
    assert (t["suid"].mode, t["suid"].uid) == (0o4755, 1000)
    assert (t["sgid"].mode, t["sgid"].gid) == (0o2711, 50)
    assert t["both"].mode == 0o6750
    assert (t["shared"].mode, t["shared"].uid) == (0o2775, 1000)
    assert t["tmp"].mode == 0o1777
    assert t["fifo"].mode == 0o1640


def test_nanosecond_mtime_and_atime(unpacker: Unpacker) -> None:
    times = {"mtime": "1700000000.123456789", "atime": "1600000000.987654321"}
    root = unpacker(
        [
            [
                reg("f", b"x", pax=times),
                symlink("s", "f", pax=times),
                Entry("p", "fifo", pax=times),
                reg("plain", b"x", mtime=1500000000),
                reg("frac", b"x", pax={"mtime": "1700000000.5"}),
                reg("neg", b"x", pax={"mtime": "-1.25"}),
            ]
        ]
    )
    for name in ("f", "s", "p"):
        info = os.lstat(root / name)
        assert info.st_mtime_ns == 1700000000_123456789, name
        assert info.st_atime_ns == 1600000000_987654321, name
    plain = os.lstat(root / "plain")
    assert plain.st_mtime_ns == plain.st_atime_ns == 1500000000 * NS  # atime defaults to mtime
    assert os.lstat(root / "frac").st_mtime_ns == 1700000000_500000000
    assert os.lstat(root / "neg").st_mtime_ns == -1_250_000_000


def test_xattrs_from_pax(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            [
                reg("f", b"x", xattrs={"user.one": b"1", "user.bin": b"\x00\xff\x01"}),
                dirent("d", xattrs={"user.dir": b"yes"}),
                Entry("p", "fifo", xattrs={"trusted.fifo": b"t"} if os.geteuid() == 0 else {}),
            ]
        ]
    )
    t = tree(root)
    assert t["f"].xattrs == {"user.one": b"1", "user.bin": b"\x00\xff\x01"}
    assert t["d"].xattrs == {"user.dir": b"yes"}
    if os.geteuid() == 0:
        assert t["p"].xattrs == {"trusted.fifo": b"t"}


@needs_root
def test_security_capability_survives_chown(unpacker: Unpacker) -> None:
    """The kernel drops security.capability on chown: xattrs must come after it."""
    cap = vfs_cap_v2(CAP_NET_RAW, CAP_NET_BIND_SERVICE)
    root = unpacker(
        [
            [
                reg(
                    "ping",
                    b"\x7fELF",
                    mode=0o4711,
                    uid=1000,
                    gid=1000,
                    xattrs={"security.capability": cap},
                ),
            ]
        ]
    )
    t = tree(root)["ping"]
    assert t.xattrs.get("security.capability") == cap
    assert (t.uid, t.gid, t.mode) == (1000, 1000, 0o4711)


def test_dir_times_set_after_children(unpacker: Unpacker) -> None:
    """A directory's header mtime holds although its children are written after it."""
    root = unpacker(
        [
            [
                dirent("d", mtime=1111111111),
                reg("d/a", b"a"),
                dirent("d/sub", mtime=1222222222),
                reg("d/sub/b", b"b"),
                symlink("d/sub/l", "b"),
            ]
        ]
    )
    assert os.lstat(root / "d").st_mtime_ns == 1111111111 * NS
    assert os.lstat(root / "d/sub").st_mtime_ns == 1222222222 * NS


def test_dir_keeps_header_mtime_when_upper_layers_add_or_remove(unpacker: Unpacker) -> None:
    root = unpacker([
        [dirent("grows", mtime=1111111111), dirent("shrinks", mtime=1222222222),
         reg("shrinks/old", b"old"), dirent("emptied", mtime=1333333333),
         reg("emptied/x", b"x"), dirent("emptied/sub"), dirent("relabel", mtime=1444444444)],
        [reg("grows/new", b"new"), dirent("grows/newdir"), whiteout("shrinks/old"),
         reg("emptied/.wh..wh..opq"), dirent("relabel", mtime=1555555555, mode=0o700)],
    ])  # fmt: skip
    t = tree(root)
    assert t["grows"].mtime_ns == 1111111111 * NS
    assert "grows/new" in t and "grows/newdir" in t
    assert t["shrinks"].mtime_ns == 1222222222 * NS and "shrinks/old" not in t
    assert t["emptied"].mtime_ns == 1333333333 * NS and not os.listdir(root / "emptied")
    assert (t["relabel"].mtime_ns, t["relabel"].mode) == (1555555555 * NS, 0o700)


def test_root_dir_entry_sets_rootfs_metadata(unpacker: Unpacker) -> None:
    """`./` describes the rootfs itself: its mode and time apply, nothing is replaced."""
    root = unpacker([[Entry("./", "dir", mode=0o700, mtime=1234567890), reg("f", b"x")]])
    info = os.lstat(root)
    assert stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_mtime_ns == 1234567890 * NS
    assert (root / "f").read_bytes() == b"x"


def test_default_mtime_is_applied(unpacker: Unpacker) -> None:
    root = unpacker([[reg("f", b"x"), dirent("d")]])
    assert os.lstat(root / "f").st_mtime_ns == DEFAULT_MTIME * NS
    assert os.lstat(root / "d").st_mtime_ns == DEFAULT_MTIME * NS


def test_removed_dir_leaves_no_time_for_a_new_dir_at_its_path(unpacker: Unpacker) -> None:
    """A directory replaced within its layer takes its header time with it: the implicit
    directory made later at the same path (often with the same, reused, inode) keeps the
    time of the run. Found by the lane differential test."""
    root = unpacker([[reg("b", b""), dirent("d/e", mtime=7), reg("a", b""),
                      reg("d/e", b""), reg("d/e/a", b"")]])  # fmt: skip
    assert stat.S_ISDIR(os.lstat(root / "d/e").st_mode)
    assert os.lstat(root / "d/e").st_mtime_ns != 7 * NS


def test_dir_times_survive_a_path_that_now_loops(unpacker: Unpacker) -> None:
    """Directory times are set at the end by path: a path that now runs through a symlink
    loop is not an error, whether its directory went away or is still there elsewhere."""
    root = unpacker([
        [dirent("d", mtime=7), dirent("d/e", mtime=8), reg("d/e/f", b"f"),
         dirent("a", mtime=7), symlink("l", "a"), dirent("l/b", mtime=9)],
        [symlink("d", "d"), symlink("l", "l")],
    ])  # fmt: skip
    t = tree(root)
    assert (t["d"].type, t["d"].target) == ("symlink", "d")
    assert (t["l"].type, t["l"].target) == ("symlink", "l")
    assert t["a/b"].type == "dir"


def test_entry_that_replaces_its_own_parent_path(unpacker: Unpacker) -> None:
    """`d/e` -> `..` puts `d/e/d` at the root, where it replaces `d` with a loop: the entry
    is made, and nothing after it looks its path up again (the lane neither)."""
    root = unpacker([[reg("a", b""), symlink("d/e", ".."), symlink("d/e/d", "d")]])
    t = tree(root)
    assert (t["d"].type, t["d"].target) == ("symlink", "d")
    assert sorted(t) == [".", "a", "d"]


# -- what the destination gives new names: a default ACL, an inherited group ------------------

ACL_DEFAULT = "system.posix_acl_default"
_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER = 0x01, 0x04, 0x20


def _default_acl(user: int, group: int, other: int) -> bytes:
    """A `system.posix_acl_default` value (version 2): user::, group::, other:: only."""
    entries = [(_ACL_USER_OBJ, user), (_ACL_GROUP_OBJ, group), (_ACL_OTHER, other)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                           for tag, perm in entries)


DESTINATION_LAYER = [
    dirent("d", mode=0o755), reg("d/a", b"a", mode=0o644), reg("d/b", b"b", mode=0o600),
    dirent("d/e", mode=0o750), reg("d/e/f", b"f", mode=0o664), dirent("d/e/g", mode=0o777),
    reg("d/e/g/h", b"h", mode=0o755), symlink("d/l", "a"), reg("top", b"t", mode=0o644),
]
DESTINATION_EXPECTED = {"d": 0o755, "d/a": 0o644, "d/b": 0o600, "d/e": 0o750, "d/e/f": 0o664,
                        "d/e/g": 0o777, "d/e/g/h": 0o755, "top": 0o644}


def test_modes_are_the_images_under_a_default_acl(unpacker: Unpacker) -> None:
    """A default ACL on the destination masks new names' modes (as a umask would, but
    per directory): every name still gets the image's mode, in every applier mode."""
    import xattr

    try:
        xattr.set(str(unpacker.workdir), ACL_DEFAULT, _default_acl(7, 5, 0))
    except OSError as error:
        pytest.skip(f"no POSIX ACLs here: {error.strerror}")
    root = unpacker([DESTINATION_LAYER])
    for path, mode in DESTINATION_EXPECTED.items():
        assert stat.S_IMODE(os.lstat(root / path).st_mode) == mode, path


@needs_root
def test_owners_are_the_images_under_a_setgid_destination(unpacker: Unpacker) -> None:
    """A setgid destination makes new names inherit its group (and directories its setgid
    bit), as a grpid mount does: every name still gets the image's owner and mode."""
    os.chown(unpacker.workdir, 0, 4321)
    os.chmod(unpacker.workdir, 0o2775)
    root = unpacker([DESTINATION_LAYER])
    for path, mode in DESTINATION_EXPECTED.items():
        info = os.lstat(root / path)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, 0), path
    assert os.lstat(root / "d/l").st_gid == 0


@pytest.fixture
def grpid_mount(tmp_path: Path) -> Iterator[Path]:
    """An ext4 file system mounted with `grpid`: new names take their directory's group."""
    image, mount = tmp_path / "grpid.img", tmp_path / "grpid"
    mount.mkdir()
    with open(image, "wb") as file:
        file.truncate(64 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True)
    if made.returncode or subprocess.run(["mount", "-o", "loop,grpid", str(image), str(mount)],
                                         capture_output=True).returncode:
        pytest.skip("cannot make and mount an ext4 file system with grpid here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@needs_root
def test_owners_are_the_images_on_a_grpid_mount(unpacker: Unpacker, grpid_mount: Path) -> None:
    """On a grpid mount a new name takes its directory's group with no setgid bit in sight:
    the owner is judged from what the kernel gave, not from who we are."""
    os.chown(grpid_mount, 0, 4321)
    unpacker.workdir = grpid_mount
    root = unpacker([DESTINATION_LAYER])
    for path, mode in DESTINATION_EXPECTED.items():
        info = os.lstat(root / path)
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (mode, 0, 0), path
