"""The C fast lane: what it takes, where it stops, and that it changes nothing.

`create_run` is tested directly (each kind of entry it must leave to the Python path
stops it, with nothing created), and end to end: random layer lists unpacked with the
lane and without it must give the same tree and the same error (a differential test;
the Python path is the reference, and it is itself checked against umoci elsewhere).
How it reads headers is checked against the Python reader in test_fastlane_rules.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layers import build_image, tree

from fixtures.tarwriter import (
    DEFAULT_MTIME,
    Entry,
    build_tar,
    dirent,
    hardlink,
    reg,
    symlink,
    whiteout,
)
from unpack import UnpackOptions, unpack_image
from unpack.errors import UnpackError
from unpack.fs.rootfs import Rootfs
from unpack.layer import fastlane
from unpack.layer.policy import admit, lane_directory
from unpack.layer.tarheader import EntryKind, TarEntry

# The lane runs for root only (owners as the image says them): so do its tests.
pytestmark = [pytest.mark.skipif(not fastlane.AVAILABLE, reason="the C fast lane is not built"),
              needs_root]

OWNER = (os.geteuid(), os.getegid())
LONG_DIR = "d/" + "x" * 120  # past the 100-byte name field: the name goes in a PAX record


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A directory fd (and its path) for `create_run` (under the caller's umask: the lane
    settles modes from what it was given)."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd, tmp_path
    finally:
        os.close(fd)


def run(data: bytes, fd: int, prefix: bytes = b"d/", pos: int = 0) -> tuple[int, list[str]]:
    """`create_run` from `pos` with directory `prefix` at `fd`: (end, names)."""
    end, names, _, _ = run_to(data, fd, prefix, pos)
    return end, names


def run_to(
    data: bytes, fd: int, prefix: bytes = b"d/", pos: int = 0
) -> tuple[int, list[str], list[tuple[str, int, int]], bytes | None]:
    """`create_run` from `pos`: (end, names, directories made, the other directory it
    stopped at)."""
    assert fastlane.create_run is not None
    return fastlane.create_run(memoryview(data), pos, fd, prefix)


def test_takes_plain_files_with_their_metadata(target: tuple[int, Path]) -> None:
    fd, path = target
    data = build_tar([reg("d/a", b"alpha", mode=0o640, mtime=1234567890),
                      reg("d/b", b"", mode=0o755, uid=OWNER[0], gid=OWNER[1]),
                      reg("d/c", b"c" * 1000, mode=0o600)])  # fmt: skip
    end, names = run(data, fd)
    assert names == ["a", "b", "c"]
    assert end == 3 * 512 + 512 + 2 * 512  # stopped at the end-of-archive blocks
    info = os.stat(path / "a")
    assert (info.st_mode & 0o7777, info.st_size, info.st_mtime_ns) == (0o640, 5, 1234567890 * 10**9)
    assert info.st_atime_ns == info.st_mtime_ns
    assert (path / "c").read_bytes() == b"c" * 1000
    assert os.stat(path / "b").st_mode & 0o777 == 0o755


def test_takes_names_from_a_lone_pax_path_record(target: tuple[int, Path]) -> None:
    fd, path = target
    base = "f" * 150
    data = build_tar([reg(f"d/{base}", b"long"), reg("d/short", b"s")])
    assert b"path=" in data
    assert run(data, fd)[1] == [base, "short"]
    assert (path / base).read_bytes() == b"long"


@needs_root
def test_sets_owners_that_differ(target: tuple[int, Path]) -> None:
    fd, path = target
    names = run(build_tar([reg("d/a", b"", uid=1000, gid=2000), reg("d/b", b"")]), fd)[1]
    assert names == ["a", "b"]
    assert (os.stat(path / "a").st_uid, os.stat(path / "a").st_gid) == (1000, 2000)
    assert (os.stat(path / "b").st_uid, os.stat(path / "b").st_gid) == (0, 0)


STOPS: dict[str, Entry] = {
    "setgid directory": dirent("d/sub", mode=0o2755),
    "directory with two slashes": dirent("d/sub//"),
    "symlink": symlink("d/s", "a"),
    "hardlink": hardlink("d/h", "d/a"),
    "fifo": Entry("d/p", "fifo"),
    "setuid": reg("d/s", b"", mode=0o4755),
    "sticky": reg("d/s", b"", mode=0o1644),
    "whiteout": whiteout("d/a"),
    "opaque marker": reg("d/.wh..wh..opq"),
    "dot-dot": reg("d/.."),
    "dot": reg("d/."),
    "deeper": reg("d/sub/f"),
    "other directory": reg("e/f"),
    "prefix only": reg("d"),
    "trailing slash": reg("d/f/"),
    "non-ascii": reg("d/caf\u00e9"),
    "bad checksum": reg("d/f", raw={"chksum": b"0000000\0"}),
    "base-256 uid": reg("d/f", raw={"uid": b"\x80\0\0\0\0\0\0\x01"}),
    "empty mode field": reg("d/f", raw={"mode": b"\0" * 8}),
    "space inside a field": reg("d/f", raw={"mtime": b"1 2345670000"}),
    "ustar prefix field": Entry("d/f", format="ustar", raw={"prefix": b"d"}),
    "contiguous file": Entry("d/f", "7"),
    "xattr record": reg("d/f", xattrs={"user.a": b"1"}),
    "pax mtime": reg("d/f", mtime=1.5),
    "pax uid": reg("d/f", uid=8**8),
    "pax path then symlink": symlink("d/" + "l" * 120, "a"),
    "pax path elsewhere": reg("e/" + "f" * 120),
    "gnu long name": Entry("d/" + "g" * 120, format="gnu"),
    "global pax": Entry("g", type="g", content=b"9 a=bcd\n"),
}


@pytest.mark.parametrize("case", STOPS, ids=list(STOPS))
def test_stops_before_what_it_must_leave_to_python(target: tuple[int, Path], case: str) -> None:
    fd, path = target
    first = build_tar([reg("d/first", b"1")], trailer=False)
    data = first + build_tar([STOPS[case], reg("d/after", b"2")])
    end, names = run(data, fd)
    assert (end, names) == (len(first), ["first"])
    assert os.listdir(path) == ["first"]


def test_stops_at_an_existing_name_and_leaves_it(target: tuple[int, Path]) -> None:
    fd, path = target
    (path / "b").write_bytes(b"lower")
    data = build_tar([reg("d/a", b"1"), reg("d/b", b"2"), reg("d/c", b"3")])
    assert run(data, fd)[1] == ["a"]
    assert (path / "b").read_bytes() == b"lower"
    assert sorted(os.listdir(path)) == ["a", "b"]


def test_stops_where_the_data_leaves_the_buffer(target: tuple[int, Path]) -> None:
    fd, path = target
    data = build_tar([reg("d/a", b"1"), reg("d/b", b"2" * 2000)])
    cut = data[: 1024 + 512 + 1024]  # a's header and data, b's header and 2 of its 4 blocks
    assert run(cut, fd) == (1024, ["a"])
    assert sorted(os.listdir(path)) == ["a"]


def test_starts_at_the_offset_given(target: tuple[int, Path]) -> None:
    fd = target[0]
    data = build_tar([reg("x/a", b"1"), reg("d/b", b"2")])
    assert run(data, fd, pos=1024) == (2048, ["b"])
    assert run(data, fd, pos=len(data)) == (len(data), [])
    with pytest.raises(ValueError):
        run(data, fd, pos=len(data) + 1)


def test_root_directory_prefix(target: tuple[int, Path]) -> None:
    fd = target[0]
    data = build_tar([reg("a", b"1"), reg("./b", b"2"), reg("c", b"3")])
    assert run(data, fd, prefix=b"")[1] == ["a"]
    assert run(data, fd, prefix=b"./", pos=1024)[1] == ["b"]


@needs_root
def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    """Past the create, a failure (here a full disk) removes the new file and stops, so
    the Python path meets the same state and reports the error itself."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
        try:
            data = build_tar([reg("d/a", b"1"), reg("d/big", b"x" * (256 << 10))])
            assert run(data, fd) == (1024, ["a"])
            assert os.listdir(mount) == ["a"]
        finally:
            os.close(fd)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


# -- differential: with the lane and without it, the same result ------------------------------

DIRS = ["", "d/", "d/e/", "./d/", "d/\u00e9/", LONG_DIR + "/", "d/e/d/"]
BASES = ["a", "b", "a", ".wh.a", ".wh..wh..opq", "y" * 110, "..", "c", "d", "e", "\u00e9"]


@st.composite
def lane_entries(draw: st.DrawFn) -> Entry:
    """Mostly plain files in a few directories, so runs form; now and then anything else."""
    name = draw(st.sampled_from(DIRS)) + draw(st.sampled_from(BASES))
    kind = draw(st.sampled_from(["file"] * 6 + ["dir", "dir", "symlink", "hardlink"]))
    uid = draw(st.sampled_from([0, 0, 0, 1000]))
    mode = draw(st.sampled_from([None, None, 0o600, 0o4755, 0o2775, 0o000]))
    if kind == "file":
        content = draw(st.sampled_from([b"", b"data\n", b"z" * 700]))
        return reg(name, content, uid=uid, mode=mode, mtime=draw(st.sampled_from([5, 6.5])))
    if kind == "dir":
        mtime = draw(st.sampled_from([7, 8]))
        return dirent(name.rstrip("/") or "d", uid=uid, mode=mode, mtime=mtime)
    if kind == "symlink":
        return symlink(name, draw(st.sampled_from(["d", "a", "/d/e", ".."])), mtime=9)
    return hardlink(name, draw(st.sampled_from(["d/a", "a", "d/e/b"])))


def unpack_outcome(layers: list[list[Entry]], lane: bool) -> tuple[str, dict[str, Any]]:
    """Unpack in-process with or without the lane: the error (or "ok") and the tree."""
    top = Path(tempfile.mkdtemp(prefix="oci-unpack-lane-"))
    saved = fastlane.AVAILABLE
    fastlane.AVAILABLE = lane
    try:
        image = build_image(top / "image", layers, compression="none")
        options = UnpackOptions(write_config=False)
        try:
            unpack_image(image, str(top / "bundle"), options, warn=lambda _: None)
        except UnpackError as error:
            return f"{type(error).__name__}: {error}".replace(str(top), "TOP"), {}
        return "ok", {p: _comparable(n) for p, n in tree(top / "bundle").items()}
    finally:
        fastlane.AVAILABLE = saved
        shutil.rmtree(top, ignore_errors=True)


def _comparable(node: Any) -> Any:
    """Drop what differs between any two runs: inodes, atimes, and the times of directories
    made without a header (they get the time of the run)."""
    mtime = node.mtime_ns if node.mtime_ns < 10**12 else -1
    return node._replace(inode=0, atime_ns=0, mtime_ns=mtime)


@needs_root
@settings(max_examples=int(os.environ.get("OCI_UNPACK_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(layers=st.lists(st.lists(lane_entries(), min_size=1, max_size=12), min_size=1, max_size=3))
def test_lane_and_python_path_agree(layers: list[list[Entry]]) -> None:
    with_lane, without = unpack_outcome(layers, True), unpack_outcome(layers, False)
    assert with_lane == without


@needs_root
def test_differential_sees_a_difference() -> None:
    """The comparison is not vacuous: a lane that got the mode wrong would be caught."""
    layers = [[dirent("d"), reg("d/a", b"1"), reg("d/b", b"2", mode=0o600)]]
    outcome, snapshot = unpack_outcome(layers, True)
    assert outcome == "ok"
    real = fastlane.create_run

    def wrong_mode(buffer: memoryview, pos: int, fd: int, *args: Any) -> tuple[Any, ...]:
        made = real(buffer, pos, fd, *args)
        for name in made[1]:
            os.chmod(name, 0o666, dir_fd=fd)
        return made

    fastlane.create_run = wrong_mode
    try:
        assert unpack_outcome(layers, True) != (outcome, snapshot)
    finally:
        fastlane.create_run = real


def test_reports_a_plain_file_in_another_directory(target: tuple[int, Path]) -> None:
    fd, path = target
    data = build_tar([reg("d/a", b"1"), reg("e/f/g", b"2")])
    assert run_to(data, fd) == (1024, ["a"], [], b"e/f/")
    assert run_to(data, fd, b"e/f/", pos=1024)[:3] == (2048, ["g"], [])
    long_name = build_tar([reg(LONG_DIR + "/h", b"3")])
    assert run_to(long_name, fd)[3] == LONG_DIR.encode() + b"/"
    assert run_to(build_tar([dirent("e/sub")]), fd)[3] == b"e/"
    # only plain entries: anything else ends the lane without naming a directory
    for entry in (reg("e/.wh.x"), reg("e/s", mode=0o2755), symlink("e/l", "d")):
        assert run_to(build_tar([entry]), fd) == (0, [], [], None)
    assert sorted(os.listdir(path)) == ["a", "g"]


@needs_root
def test_makes_plain_directories(target: tuple[int, Path]) -> None:
    """Mode and owner at creation; times are left for after the last layer."""
    fd, path = target
    data = build_tar([dirent("d/sub", mode=0o750, uid=1000, gid=1001, mtime=77),
                      dirent("d/plain/"), reg("d/f", b"1")])  # fmt: skip
    _, names, dirs, other = run_to(data, fd)
    assert (names, other) == (["sub", "plain", "f"], None)
    sub, plain = os.stat(path / "sub"), os.stat(path / "plain")
    assert dirs == [("sub", sub.st_ino, 77), ("plain", plain.st_ino, DEFAULT_MTIME)]
    assert (sub.st_mode & 0o7777, sub.st_uid, sub.st_gid) == (0o750, 1000, 1001)
    assert (plain.st_mode & 0o7777, plain.st_uid, plain.st_gid) == (0o755, *OWNER)
    assert sub.st_mtime_ns != 77 * 10**9


def test_goes_down_and_back_up_within_what_it_made(target: tuple[int, Path]) -> None:
    """Down into the directory it made last, back up to any directory of its walk; not
    into a directory it did not make, nor above where it started."""
    fd, path = target
    data = build_tar([dirent("d/a"), reg("d/a/f", b"1"), dirent("d/a/b"), reg("d/a/b/g", b"2"),
                      reg("d/a/h", b"3"), reg("d/j", b"4"), dirent("d/c"), reg("d/c/k", b"5"),
                      reg("d/a/l", b"6")])  # fmt: skip
    _, names, dirs, other = run_to(data, fd)
    assert names == ["a", "a/f", "a/b", "a/b/g", "a/h", "j", "c", "c/k"]
    assert [d[0] for d in dirs] == ["a", "a/b", "c"]
    # d/a/l: d/a is no longer the directory made last in d/ (c is): left to Python
    assert other == b"d/a/"
    assert (path / "a/b/g").read_bytes() == b"2" and (path / "c/k").read_bytes() == b"5"
    assert not (path / "a/l").exists()
    # nor above where it started
    assert run_to(build_tar([reg("d/x/m", b"7"), reg("d/n", b"8")]), fd, b"d/x/")[1:] \
        == (["m"], [], b"d/")


def test_a_directory_has_no_data_whatever_its_size_field(target: tuple[int, Path]) -> None:
    """As the reader (and Go) read it: the next header follows a directory's header."""
    fd = target[0]
    data = build_tar([dirent("d/sub", raw={"size": 1024}), reg("d/f", b"1")])
    assert run(data, fd) == (1536, ["sub", "f"])


@needs_root
def test_settles_what_a_setgid_parent_gives(target: tuple[int, Path]) -> None:
    """A new directory in a setgid parent inherits its group and setgid bit, a new file its
    group: the lane sets the entry's owner and mode from what fstat says."""
    fd, path = target
    os.chown(path, 0, 4321)
    os.chmod(path, 0o2775)
    data = build_tar([dirent("d/sub", mode=0o755), reg("d/f", b"1", mode=0o644)])
    assert run(data, fd)[1] == ["sub", "f"]
    for name, mode in (("sub", 0o755), ("f", 0o644)):
        info = os.stat(path / name)
        assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (mode, 0, 0), name


def test_stops_over_an_existing_name(target: tuple[int, Path]) -> None:
    """An existing name needs the replacement rules: the Python path's."""
    fd, path = target
    (path / "sub").write_bytes(b"file")
    assert run_to(build_tar([dirent("d/sub")]), fd) == (0, [], [], None)
    assert (path / "sub").read_bytes() == b"file"


@pytest.mark.parametrize(
    ("prefix", "parts"),
    [
        ("", ()), ("./", ()), ("a/", ("a",)), ("./a/b/", ("a", "b")),
        ("a/.config/", ("a", ".config")), ("caf\u00e9/", ("caf\u00e9",)),
        # not already clean: the lane leaves these to the reader
        ("/a/", None), ("a//b/", None), ("a/./b/", None), ("a/../b/", None), ("../a/", None),
        ("a", None), ("a/.wh..wh.plnk/", None), ("a\0b/", None), ("x" * 256 + "/", None),
    ],
)  # fmt: skip
def test_lane_directory(prefix: str, parts: tuple[str, ...] | None) -> None:
    """The policy's answer for the lane: where a plain file named prefix + base lands."""
    assert lane_directory(prefix) == parts
    if parts is not None:
        entry = TarEntry(prefix + "f", EntryKind.FILE, 0o644, 0, 0, 0, 0, None, "", 0, 0, {}, None)
        assert admit(entry).parts == (*parts, "f")


@needs_root
def test_lane_goes_down_into_the_directories_it_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chain of new directories, each with a file, is made by one C call: it goes down
    into each directory it just made (opened from its parent), with no lookup from the
    root and no return to Python."""
    runs: list[list[str]] = []
    looked_up: list[str] = []
    real_run, real_child = fastlane.create_run, Rootfs.child_dir_fd

    def spy_run(*args: Any) -> tuple[Any, ...]:
        made = real_run(*args)
        runs.append(made[1])
        return made

    def spy_child(self: Rootfs, parts: Any, parent: int, name: str) -> int:
        looked_up.append(name)
        return real_child(self, parts, parent, name)

    monkeypatch.setattr(fastlane, "create_run", spy_run)
    monkeypatch.setattr(Rootfs, "child_dir_fd", spy_child)
    depth = [f"d{i}" for i in range(12)]
    layer = [dirent("top")]
    for i in range(1, len(depth) + 1):
        path = "top/" + "/".join(depth[:i])
        layer += [dirent(path, mtime=100 + i), reg(path + "/f", mtime=200 + i)]
    outcome, snapshot = unpack_outcome([layer], True)
    assert outcome == "ok"
    assert len(runs) == 1 and looked_up == []
    assert runs[0][:4] == ["d0", "d0/f", "d0/d1", "d0/d1/f"] and len(runs[0]) == 24
    deepest = "rootfs/top/" + "/".join(depth)
    assert snapshot[deepest + "/f"].type == "file"
    assert snapshot[deepest].mtime_ns == (100 + len(depth)) * 10**9
    assert snapshot[deepest + "/f"].mtime_ns == (200 + len(depth)) * 10**9
    assert (outcome, snapshot) == unpack_outcome([layer], False)
