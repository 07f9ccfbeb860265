"""Hostile layers (issue #5): a corpus of malicious tar layers and a runner that checks
that unpacking one never touches anything outside the bundle directory.

Each `Case` is a list of layers (lists of `fixtures.tarwriter.Entry`, or `RawLayer` /
`BlobLayer` for broken tar or compressed streams) and an expectation: `error` True (must
fail), False (must succeed) or "any". `run_case` builds the image into a fresh directory
T under /tmp holding sentinels (`T/outside/secret`, `T/sibling.txt`, `T/etc/passwd`), plus
a host directory `/tmp/oci-unpack-hostile-<random>/` (`file`, `passwd`, `subdir/inner`)
that entries reach through the placeholder `HOST`; it runs `python -m unpack` into
`T/bundle` and `check_outcome` asserts:

(a) exit 0 with a bundle of exactly `config.json` and `rootfs/`, or one
    `oci-unpack: error:` line and exit 3 or 4 (70, an internal error, is a bug);
(b) nothing outside the bundle changed: T (without the bundle) and the host directory
    are snapshotted before and after (type, content, mode, owner, mtime, ctime, inode,
    link count, xattrs); real /etc/passwd, /etc/group, ... gained no link and no payload;
    and neither `/` nor `/tmp` gained a name containing "escape" (every hostile name
    that could land outside contains it);
(c) after an error neither `T/bundle` nor a `.bundle.oci-unpack-*` temp dir exists;
(d) the unpacker's peak RSS stays under `MAX_RSS_KIB` (a memory bound, not a timing).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xattr

from fixtures.layout import LayoutWriter, gzip_compress, zstd_compress
from fixtures.tarwriter import (
    Entry,
    base256,
    build_tar,
    dirent,
    hardlink,
    opaque,
    pax_records,
    reg,
    symlink,
    whiteout,
)

REPO = Path(__file__).resolve().parent.parent
HOST = "@HOST@"  # replaced by the per-run host sentinel directory's absolute path
HOST_PREFIX = "oci-unpack-hostile-"
MAX_RSS_KIB = 200 * 1024
IS_ROOT = os.geteuid() == 0
ESCAPEE_PASSWD = b"escapee:x:4242:4242:escaped:/:/bin/sh\n"
WATCHED_HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hostname")
PAYLOAD = b"pwned by oci-unpack-hostile\n"  # what the corpus writes
GIB = 1 << 30
TIME = "/usr/bin/time"

Expect = bool | Literal["any"]
Check = Callable[[Path, Path], None]  # (rootfs, host dir) after a successful unpack


@dataclass(frozen=True)
class RawLayer:
    """A layer given as tar bytes (its diff_id), stored compressed or as `blob` verbatim."""

    tar: bytes
    compression: Literal["gzip", "zstd", "none"] = "gzip"
    blob: bytes | None = None


@dataclass(frozen=True)
class BlobLayer:
    """A layer built on demand: `make()` returns (stored blob, diff_id)."""

    make: Callable[[], tuple[bytes, str]]
    compression: Literal["gzip", "zstd", "none"] = "gzip"


LayerSpec = list[Entry] | RawLayer | BlobLayer


@dataclass(frozen=True)
class Case:
    """One hostile image: its layers, what must happen, and checks of the rootfs."""

    name: str
    layers: tuple[LayerSpec, ...]
    error: Expect
    check: Check | None = None
    user: str = ""  # the image config User
    bug: str | None = None  # a known bug in unpack/: the test is xfail(strict)
    timeout: float = 60.0


# -- outcome of one run ----------------------------------------------------------------------


@dataclass
class Run:
    """What one `python -m unpack` child did."""

    returncode: int
    stdout: str
    stderr: str
    max_rss_kib: int
    timed_out: bool


def run_unpack(
    args: Iterable[str | os.PathLike[str]],
    *,
    timeout: float = 60.0,
    python: Sequence[str] = (),
) -> Run:
    """Run `python -m unpack ARGS` in its own session; kill its group after `timeout`.

    `python` replaces the interpreter command (e.g. to run it as another user).

    The peak RSS comes from `/usr/bin/time -f %M` when installed. Otherwise it is the
    child's wait4(2) ru_maxrss, an upper bound: Linux counts the RSS the forking test
    process had into it.
    """
    command = [*(python or [sys.executable]), "-m", "unpack", *map(str, args)]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:  # fmt: skip
        if os.access(TIME, os.X_OK):
            command = [TIME, "-q", "-f", "%M", "-o", rss.name, *command]
        proc = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        proc.returncode = os.waitstatus_to_exitcode(status)
        measured = rss.read().split()
        out.seek(0)
        err.seek(0)
        return Run(
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            int(measured[-1]) if measured and measured[-1].isdigit() else usage.ru_maxrss,
            timed_out,
        )


# -- snapshots ------------------------------------------------------------------------------

Snapshot = dict[str, tuple[Any, ...]]


def _describe(path: str, info: os.stat_result) -> tuple[Any, ...]:
    mode = info.st_mode
    if stat.S_ISREG(mode):
        with open(path, "rb") as file:
            extra: Any = hashlib.sha256(file.read()).hexdigest()
    elif stat.S_ISLNK(mode):
        extra = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        extra = info.st_rdev
    else:
        extra = None
    try:
        attrs = tuple(sorted((k, xattr.get(path, k, nofollow=True))
                             for k in xattr.list(path, nofollow=True)))  # fmt: skip
    except OSError:
        attrs = ("unreadable",)
    return (
        stat.S_IFMT(mode), stat.S_IMODE(mode), info.st_uid, info.st_gid, info.st_size,
        info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_nlink, extra, attrs,
    )  # fmt: skip


def snapshot(root: str | os.PathLike[str], exclude: Callable[[str], bool] = lambda _: False,
             *, include_root: bool = True) -> Snapshot:
    """Every name under `root` (not following symlinks) → its full description.

    `exclude(relative_path)` prunes names (and their subtrees).
    """
    root = os.fspath(root)
    result: Snapshot = {}
    if include_root:
        result["."] = _describe(root, os.lstat(root))
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as entries:
            for entry in entries:
                child = f"{rel}/{entry.name}" if rel else entry.name
                if exclude(child):
                    continue
                info = entry.stat(follow_symlinks=False)
                result[child] = _describe(entry.path, info)
                if stat.S_ISDIR(info.st_mode):
                    pending.append(child)
    return result


def host_files_snapshot() -> Snapshot:
    """The few real host files a hostile image would most like to reach.

    Other programs may legitimately rewrite them meanwhile (useradd replaces /etc/passwd),
    so only what an unpacker could do to them is recorded: an extra hard link, or the
    corpus's payload written into them.
    """
    result: Snapshot = {}
    for path in WATCHED_HOST_FILES:
        try:
            with open(path, "rb") as file:
                payload = PAYLOAD in file.read()
            result[path] = (os.lstat(path).st_nlink, payload)
        except OSError:
            continue
    return result


def escape_names() -> set[str]:
    """Names in / and /tmp that contain "escape"."""
    return {f"{d}/{n}" for d in ("/", "/tmp") for n in os.listdir(d) if "escape" in n}


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """Human-readable differences between two snapshots."""
    lines = [f"deleted: {k}" for k in sorted(before.keys() - after.keys())]
    lines += [f"created: {k}" for k in sorted(after.keys() - before.keys())]
    fields = ("type", "mode", "uid", "gid", "size", "mtime", "ctime", "inode", "nlink",
              "content/target", "xattrs")  # fmt: skip
    for key in sorted(before.keys() & after.keys()):
        changed = [f for f, a, b in zip(fields, before[key], after[key], strict=True) if a != b]
        if changed:
            lines.append(f"changed {', '.join(changed)}: {key}")
    return lines


# -- sandbox --------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """T (with sentinels and DIR = T/bundle) and the host sentinel directory."""

    top: Path
    host: Path

    @property
    def dest(self) -> Path:
        return self.top / "bundle"

    @property
    def image(self) -> Path:
        return self.top / "image"

    def outside(self) -> Snapshot:
        """T without the bundle and its temp dirs."""
        return snapshot(self.top, _in_bundle, include_root=False)

    def temp_dirs(self) -> list[str]:
        return [n for n in os.listdir(self.top) if n.startswith(".bundle.oci-unpack-")]


def _in_bundle(rel: str) -> bool:
    return rel == "bundle" or rel.startswith(("bundle/", ".bundle.oci-unpack-"))


def make_host_dir(prefix: str = HOST_PREFIX) -> Path:
    """A host directory under /tmp holding `file`, `passwd`, `subdir/inner`."""
    host = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    (host / "file").write_bytes(b"host file: must never change\n")
    (host / "passwd").write_bytes(ESCAPEE_PASSWD)
    (host / "subdir").mkdir(mode=0o750)
    (host / "subdir" / "inner").write_bytes(b"inner host file\n")
    return host


def remove(path: Path) -> None:
    """Remove a tree of any depth (shutil.rmtree recurses; `rm -rf` does not)."""
    if os.path.lexists(path):
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """A fresh T directly under /tmp (so `../../..` from the rootfs is /tmp) and host dir."""
    top = Path(tempfile.mkdtemp(prefix="oci-unpack-T-", dir="/tmp"))
    host = make_host_dir()
    try:
        (top / "outside").mkdir()
        (top / "outside" / "secret").write_bytes(b"secret outside the bundle\n")
        (top / "sibling.txt").write_bytes(b"a sibling of the bundle\n")
        (top / "etc").mkdir()
        (top / "etc" / "passwd").write_bytes(b"root:x:0:0:sentinel:/root:/bin/sh\n")
        yield Sandbox(top, host)
    finally:
        remove(top)
        remove(host)


# -- building and running a case --------------------------------------------------------------


def _substitute(value: Any, host: str) -> Any:
    if isinstance(value, str):
        return value.replace(HOST, host)
    if isinstance(value, bytes):
        return value.replace(HOST.encode(), host.encode())
    return value


def materialize(entry: Entry, host: str) -> Entry:
    """The entry with HOST replaced in its name, link name and PAX values."""
    return dataclasses.replace(
        entry,
        name=_substitute(entry.name, host),
        linkname=_substitute(entry.linkname, host),
        pax={k: _substitute(v, host) for k, v in entry.pax.items()},
    )


def build_image(case: Case, box: Sandbox) -> None:
    """Write the case's image as an OCI layout at box.image."""
    writer = LayoutWriter(box.image)
    layers = []
    for spec in case.layers:
        if isinstance(spec, RawLayer):
            layers.append(writer.add_layer(spec.tar, spec.compression, blob=spec.blob))
        elif isinstance(spec, BlobLayer):
            blob, diff_id = spec.make()
            desc, _ = writer.add_layer(b"", spec.compression, blob=blob)
            layers.append((desc, diff_id))
        else:
            tar = build_tar(materialize(e, str(box.host)) for e in spec)
            layers.append(writer.add_layer(tar, "gzip"))
    config: dict[str, Any] = {"config": {"Cmd": ["/bin/sh"], "User": case.user}}
    writer.tag(writer.add_image(layers, config), "latest")
    writer.write()


@dataclass
class Outcome:
    """A run plus what the sandbox looked like around it."""

    run: Run
    box: Sandbox
    changed: list[str] = field(default_factory=list)
    new_escapes: set[str] = field(default_factory=set)
    temp_dirs: list[str] = field(default_factory=list)


def run_case(case: Case, box: Sandbox) -> Outcome:
    """Build the image, snapshot, unpack with the CLI, snapshot again."""
    build_image(case, box)
    before = (box.outside(), snapshot(box.host), host_files_snapshot())
    escapes = escape_names()
    run = run_unpack([box.image, box.dest], timeout=case.timeout)
    after = (box.outside(), snapshot(box.host), host_files_snapshot())
    changed = [line for b, a in zip(before[:2], after[:2], strict=True) for line in diff(b, a)]
    changed += [f"host file {p}: (nlink, payload) {before[2][p]} -> {v}"
                for p, v in after[2].items() if p in before[2] and v != before[2][p]]
    return Outcome(run, box, changed, escape_names() - escapes, box.temp_dirs())


def check_outcome(case: Case, outcome: Outcome) -> None:
    """Assert (a)-(d) of the module docstring, then the case's own check."""
    run, box = outcome.run, outcome.box
    assert not run.timed_out, f"{case.name}: still running after {case.timeout}s"
    assert not outcome.changed, f"{case.name}: changed outside the bundle: {outcome.changed}"
    assert not outcome.new_escapes, f"{case.name}: created {outcome.new_escapes}"
    assert run.max_rss_kib < MAX_RSS_KIB, f"{case.name}: peak RSS {run.max_rss_kib} KiB"
    lines = run.stderr.splitlines()
    if run.returncode == 0:
        assert all(line.startswith("oci-unpack: warning:") for line in lines), run.stderr
        assert sorted(os.listdir(box.dest)) == ["config.json", "rootfs"], case.name
        rootfs = box.dest / "rootfs"
        assert stat.S_ISDIR(os.lstat(rootfs).st_mode), f"{case.name}: rootfs is not a dir"
        assert not outcome.temp_dirs, outcome.temp_dirs
    else:
        assert run.returncode in (3, 4), f"{case.name}: exit {run.returncode}: {run.stderr}"
        assert lines and lines[-1].startswith("oci-unpack: error: "), run.stderr
        assert all(line.startswith("oci-unpack: warning:") for line in lines[:-1]), run.stderr
        assert not box.dest.exists(), f"{case.name}: {box.dest} exists after an error"
        assert not outcome.temp_dirs, f"{case.name}: temp dirs left: {outcome.temp_dirs}"
    if case.error is True:
        assert run.returncode != 0, f"{case.name}: expected an error, got success"
    elif case.error is False:
        assert run.returncode == 0, f"{case.name}: expected success: {run.stderr}"
    if run.returncode == 0 and case.check is not None:
        case.check(box.dest / "rootfs", box.host)


# -- layer builders for broken streams ---------------------------------------------------------


def _simple_tar() -> bytes:
    return build_tar([dirent("d"), reg("d/escape-data", b"0123456789" * 200)])


def _truncated(cut: int) -> RawLayer:
    return RawLayer(_simple_tar()[:cut], "gzip")


def _cut_blob(compression: Literal["gzip", "zstd"]) -> RawLayer:
    tar = _simple_tar()
    blob = gzip_compress(tar) if compression == "gzip" else zstd_compress(tar)
    return RawLayer(tar, compression, blob[: len(blob) // 2])


def _garbage_after(compression: Literal["gzip", "zstd"]) -> RawLayer:
    tar = _simple_tar()
    blob = gzip_compress(tar) if compression == "gzip" else zstd_compress(tar)
    return RawLayer(tar, compression, blob + b"GARBAGE AFTER THE STREAM\n" * 8)


def _deflate_piece(data: bytes, final: bool = False) -> bytes:
    """Raw deflate blocks for `data` that refer to nothing before them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(
        zlib.Z_FINISH if final else zlib.Z_FULL_FLUSH
    )


@functools.cache
def zero_bomb(size: int = GIB, name: str = "escape-bomb") -> tuple[bytes, str]:
    """(gzip blob, diff_id) of a tar holding one `size`-byte file of zeros (size % 1 MiB == 0).

    Built from independent deflate pieces so 1 GiB takes about a second, not a minute.
    """
    mib = 1 << 20
    assert size % mib == 0
    head = _header_with_size(name, size)
    zeros = bytes(mib)
    piece = _deflate_piece(zeros)
    hasher = hashlib.sha256(head)
    crc = zlib.crc32(head)
    for _ in range(size // mib):
        hasher.update(zeros)
        crc = zlib.crc32(zeros, crc)
    trailer = bytes(1024)
    hasher.update(trailer)
    crc = zlib.crc32(trailer, crc)
    total = len(head) + size + len(trailer)
    deflated = _deflate_piece(head) + piece * (size // mib) + _deflate_piece(trailer, True)
    gzip_head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    blob = gzip_head + deflated + (crc & 0xFFFFFFFF).to_bytes(4, "little")
    blob += (total & 0xFFFFFFFF).to_bytes(4, "little")
    return blob, f"sha256:{hasher.hexdigest()}"


def _header_with_size(name: str, size: int) -> bytes:
    """The 512-byte header of a regular file of `size` bytes (its data not included)."""
    member = build_tar([reg(name, b"")], trailer=False)
    fields = bytearray(member[:512])
    fields[124:136] = b"%011o\0" % size
    fields[148:156] = b" " * 8
    fields[148:156] = b"%06o\0 " % sum(fields)
    return bytes(fields)


# -- checks -----------------------------------------------------------------------------------


def _at(rootfs: Path, host: Path, rel: str | bytes) -> bytes:
    """`rel` inside the rootfs (HOST: the host dir's path, taken as inside the rootfs)."""
    return os.fsencode(rel).replace(HOST.encode(), os.fsencode(host).lstrip(b"/"))


@contextmanager
def _parent_fd(rootfs: Path, host: Path, rel: str | bytes) -> Iterator[tuple[int, bytes]]:
    """(fd of the parent directory, last name) of `rel`, walked without following symlinks
    (so paths longer than PATH_MAX work and a link never leads the check astray)."""
    *dirs, name = _at(rootfs, host, rel).split(b"/") or [b"."]
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in dirs:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd, name or b"."
    finally:
        os.close(fd)


def _lstat(rootfs: Path, host: Path, rel: str | bytes) -> os.stat_result | None:
    with _parent_fd(rootfs, host, rel) as (fd, name):
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None


def _file(rel: str | bytes, content: bytes | None = None) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        with _parent_fd(rootfs, host, rel) as (fd, name):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            assert stat.S_ISREG(info.st_mode), f"{rel!r} is not a regular file in the rootfs"
            if content is not None:
                file = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
                with os.fdopen(file, "rb") as stream:
                    assert stream.read() == content, f"{rel!r}: wrong content"

    return check


def _absent(rel: str) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        assert _lstat(rootfs, host, rel) is None, f"{rel} should have been removed"

    return check


def _node(rel: str, kind: int, major: int = 0, minor: int = 0) -> Check:
    """A device node or FIFO (as root; rootless unpacking makes placeholders instead)."""

    def check(rootfs: Path, host: Path) -> None:
        if not IS_ROOT:
            return
        info = _lstat(rootfs, host, rel)
        assert info is not None, f"{rel} is missing"
        assert stat.S_IFMT(info.st_mode) == kind, f"{rel}: wrong type {info.st_mode:o}"
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (major, minor)

    return check


def _mode(rel: str, mode: int) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        info = _lstat(rootfs, host, rel)
        assert info is not None, f"{rel} is missing"
        assert stat.S_IMODE(info.st_mode) == mode, f"{rel}: mode {info.st_mode:o}"

    return check


def _same_inode(a: str, b: str) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        assert os.lstat(rootfs / a).st_ino == os.lstat(rootfs / b).st_ino

    return check


def _symlink(rel: str, target: str) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        assert os.readlink(rootfs / rel) == target.replace(HOST, str(host))

    return check


def _all(*checks: Check) -> Check:
    def check(rootfs: Path, host: Path) -> None:
        for one in checks:
            one(rootfs, host)

    return check


# -- the corpus -------------------------------------------------------------------------------

_DATA = PAYLOAD
_MIB = 1 << 20
_C = Case

CASES: list[Case] = [
    # ---- `..` and absolute names: cleaned as if joined to `/`
    _C("dotdot-1", ([reg("../escape-dotdot-1", _DATA)],), False, _file("escape-dotdot-1")),
    _C("dotdot-3", ([reg("../../../escape-dotdot-3", _DATA)],), False,
       _file("escape-dotdot-3")),
    _C("dotdot-20", ([reg("../" * 20 + "escape-dotdot-20", _DATA)],), False,
       _file("escape-dotdot-20")),
    _C("dotdot-inside-components",
       ([reg("a/../../escape-inner", _DATA), reg("a/b/../../../../escape-inner2", _DATA),
         reg("./a/./../../../x/../escape-inner3", _DATA)],),
       False, _all(_file("escape-inner"), _file("escape-inner2"), _file("escape-inner3"))),
    _C("dotdot-dir-over-sentinel",
       ([dirent("../../outside", mode=0o777, uid=1234), reg("../../outside/secret", _DATA)],),
       False, _all(_file("outside/secret", _DATA), _mode("outside", 0o777))),
    _C("absolute-names",
       ([reg("/tmp/escape-absolute", _DATA), reg("/etc/passwd", _DATA),
         reg("/../../../escape-abs-dotdot", _DATA)],),
       False, _all(_file("tmp/escape-absolute"), _file("etc/passwd", _DATA))),
    _C("absolute-host-path", ([reg(HOST + "/file", _DATA), reg(HOST + "/escape-new", _DATA)],),
       False, _file(HOST + "/file", _DATA)),
    _C("gnu-longname-dotdot",
       ([Entry("../" * 40 + "escape-gnu-long", content=_DATA, format="gnu")],), False,
       _file("escape-gnu-long")),
    _C("pax-global-path",
       ([Entry("pax_global_header", "g", content=pax_records({"path": "../../escape-glob"})),
         reg("plain", _DATA)],), False, _file("escape-glob")),
    # ---- symlink parents
    _C("symlink-parent-root", ([symlink("lnk", "/"), reg("lnk/escape-via-root", _DATA)],),
       False, _file("escape-via-root")),
    _C("symlink-parent-dotdot",
       ([symlink("lnk", "../../.."), reg("lnk/escape-via-dotdot", _DATA)],), False,
       _file("escape-via-dotdot")),
    _C("symlink-parent-host",
       ([symlink("lnk", HOST), reg("lnk/file", _DATA), reg("lnk/escape-via-host", _DATA)],),
       False, _all(_file(HOST + "/file", _DATA), _symlink("lnk", HOST))),
    _C("symlink-parent-host-subdir",
       ([symlink("d", HOST), dirent("d/subdir", mode=0o777, uid=1234),
         reg("d/subdir/inner", _DATA, mode=0o666)],), False,
       _file(HOST + "/subdir/inner", _DATA)),
    _C("symlink-chain",
       ([symlink("a", "b"), symlink("b", "c"), symlink("c", HOST), reg("a/escape-chain", _DATA),
         reg("a/file", _DATA)],), False, _file(HOST + "/escape-chain")),
    _C("symlink-chain-dotdot",
       ([dirent("x/y"), symlink("x/y/up", "../../../.."), symlink("a", "x/y/up"),
         reg("a/escape-chain-up", _DATA)],), False, _file("escape-chain-up")),
    _C("symlink-dotdot-repeated", ([symlink("a", ".."), reg("a/a/a/a/escape-up", _DATA)],),
       False, _file("escape-up")),
    _C("symlink-loop-pair", ([symlink("a", "b"), symlink("b", "a"), reg("a/escape-loop")],),
       True),
    _C("symlink-loop-self", ([symlink("s", "s"), reg("s/escape-self")],), True),
    _C("symlink-loop-hardlink-target",
       ([symlink("s", "s/x"), hardlink("escape-hl", "s/y")],), True),
    _C("symlink-then-write-later-layer",
       ([symlink("lnk", HOST)], [reg("lnk/file", _DATA), reg("lnk/escape-later", _DATA)]),
       False, _file(HOST + "/file", _DATA)),
    _C("symlink-root-then-write-later-layer",
       ([symlink("usr", "/")], [reg("usr/escape-later-root", _DATA)]), False,
       _file("escape-later-root")),
    _C("symlink-replaced-by-file",
       ([symlink("escape-target", HOST + "/file")], [reg("escape-target", _DATA)]), False,
       _file("escape-target", _DATA)),
    _C("symlink-replaced-by-dir",
       ([symlink("d", HOST)], [dirent("d", mode=0o777, uid=4321, mtime=0)]), False,
       _mode("d", 0o777)),
    _C("symlink-replaces-dir-same-layer",
       ([dirent("d", mtime=5), symlink("d", HOST), reg("d/escape-d", _DATA)],), False,
       _file(HOST + "/escape-d")),
    _C("symlink-metadata",
       ([symlink("escape-lnk", HOST + "/file", uid=1234, gid=1234, mode=0o777, mtime=0,
                 xattrs={"trusted.escape": b"x", "user.escape": b"y"})],), False,
       _symlink("escape-lnk", HOST + "/file")),
    _C("symlink-empty-target", ([symlink("escape-empty", "")],), True),
    _C("symlink-swap-same-name",
       ([reg("x", b"1"), symlink("x", HOST + "/file"), reg("x", _DATA)],), False,
       _file("x", _DATA)),
    # ---- hardlinks
    _C("hardlink-dotdot-passwd", ([hardlink("escape-hl", "../../etc/passwd")],), True),
    _C("hardlink-dotdot-passwd-inside",
       ([reg("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
         hardlink("escape-hl", "../../etc/passwd")],), False,
       _same_inode("escape-hl", "etc/passwd")),
    _C("hardlink-absolute-passwd", ([hardlink("escape-hl", "/etc/passwd")],), True),
    _C("hardlink-host-file", ([hardlink("escape-hl", HOST + "/file")],), True),
    _C("hardlink-pax-linkpath",
       ([Entry("escape-hl", "hardlink", linkname="x", pax={"linkpath": HOST + "/file"})],),
       True),
    _C("hardlink-through-symlink",
       ([symlink("lnk", HOST), hardlink("escape-hl", "lnk/file")],), True),
    _C("hardlink-through-root-symlink",
       ([symlink("up", "../../.."), hardlink("escape-hl", "up/sibling.txt")],), True),
    _C("hardlink-then-write-later-layer",
       ([hardlink("escape-hl", HOST + "/file")], [reg("escape-hl", _DATA)]), True),
    _C("hardlink-inside-then-write-later-layer",
       ([reg("orig", b"original\n"), hardlink("escape-hl", "orig")], [reg("escape-hl", _DATA)]),
       False, _all(_file("orig", b"original\n"), _file("escape-hl", _DATA))),
    _C("hardlink-to-symlink-then-write",
       ([symlink("lnk", HOST + "/file"), hardlink("escape-hl", "lnk")],
        [reg("escape-hl", _DATA)]), False,
       _all(_file("escape-hl", _DATA), _symlink("lnk", HOST + "/file"))),
    _C("hardlink-to-directory", ([dirent("tmp"), hardlink("escape-hl", "tmp")],), True),
    _C("hardlink-to-itself", ([hardlink("escape-hl", "escape-hl")],), True),
    # ---- whiteouts and opaque markers
    _C("whiteout-through-host-symlink",
       ([symlink("lnk", HOST)], [reg("lnk/.wh.file"), reg("lnk/.wh.subdir")]), False,
       _symlink("lnk", HOST)),
    _C("whiteout-through-host-symlink-same-layer",
       ([symlink("lnk", HOST), reg("lnk/.wh.file"), reg("lnk/subdir/.wh.inner")],), False),
    _C("whiteout-dotdot-sentinels",
       ([reg("keep")], [reg("../../.wh.sibling.txt"), reg("../../outside/.wh.secret"),
                        reg("/etc/.wh.passwd"), reg(HOST + "/.wh.file")]), False,
       _file("keep")),
    _C("whiteout-of-symlink-to-host",
       ([symlink("lnk", HOST + "/file")], [whiteout("lnk")]), False, _absent("lnk")),
    _C("opaque-through-host-symlink",
       ([symlink("lnk", HOST)], [opaque("lnk"), opaque("lnk/subdir")]), False),
    _C("whiteout-same-layer-symlink-to-root",
       ([reg("keep"), dirent("data"), reg("data/x")],
        [symlink("lnk", "/"), whiteout("lnk"), reg("new", _DATA)]), False,
       _all(_file("keep"), _file("data/x"), _symlink("lnk", "/"), _file("new"))),
    _C("opaque-through-root-symlink", ([reg("keep"), symlink("lnk", "/")], [opaque("lnk")]),
       "any"),
    _C("opaque-root-via-dotdot", ([reg("lower")], [reg("../../.wh..wh..opq"), reg("upper")]),
       False, _all(_absent("lower"), _file("upper"))),
    _C("whiteout-invalid-empty", ([reg(".wh.")],), True),
    _C("whiteout-invalid-dot", ([reg(".wh..")],), True),
    _C("whiteout-invalid-dotdot", ([reg(".wh...")],), True),
    _C("whiteout-invalid-dotdot-nested", ([reg("a/.wh...")],), True),
    # ---- the rootfs itself
    _C("name-dot-file", ([Entry(".", content=_DATA)],), True),
    _C("name-empty-file", ([Entry("", content=_DATA)],), True),
    _C("name-dotdot-file", ([Entry("..", content=_DATA)],), True),
    _C("name-slash-dir", ([Entry("/", "dir"), Entry("./", "dir"), Entry("..", "dir")],), False),
    _C("rootfs-dir-metadata", ([Entry("./", "dir", mode=0o750, uid=4321)],), False,
       _mode("", 0o750)),
    _C("rootfs-as-symlink", ([symlink(".", "/")],), True),
    _C("rootfs-as-symlink-host", ([symlink("./", HOST)],), True),
    _C("rootfs-as-hardlink", ([reg("f"), hardlink(".", "f")],), True),
    # ---- devices, fifos, setuid
    _C("device-nodes",
       ([Entry("dev/escape-null", "chardev", mode=0o666, devmajor=1, devminor=3),
         Entry("dev/escape-loop", "blockdev", mode=0o660, devmajor=7, devminor=0)],),
       False if IS_ROOT else "any",
       _all(_node("dev/escape-null", stat.S_IFCHR, 1, 3),
            _node("dev/escape-loop", stat.S_IFBLK, 7, 0))),
    _C("mknod-over-host-path-via-symlink",
       ([symlink("lnk", HOST), Entry("lnk/file", "chardev", devmajor=1, devminor=3),
         Entry("lnk/escape-fifo", "fifo")],), False if IS_ROOT else "any",
       _all(_node(HOST + "/file", stat.S_IFCHR, 1, 3),
            _node(HOST + "/escape-fifo", stat.S_IFIFO))),
    _C("xattr-name-with-nul", ([reg("escape-x", _DATA, xattrs={"user.a\0b": b"v"})],), True),
    _C("xattr-names-odd",
       ([reg("f1", xattrs={"": b"v"}), reg("f2", xattrs={"user.big": b"v" * 70000}),
         reg("f3", xattrs={b"user.\xff": b"v"}), reg("f4", xattrs={"nonamespace": b"v"})],),
       "any"),
    _C("setuid-root-files",
       ([reg("bin/escape-su", b"#!/bin/sh\n", mode=0o4755),
         reg("bin/escape-sg", b"#!/bin/sh\n", mode=0o2755),
         dirent("tmp", mode=0o1777), symlink("lnk", HOST), reg("lnk/file", _DATA, mode=0o4777)],),
       False,
       _all(_mode("bin/escape-su", 0o4755), _mode("bin/escape-sg", 0o2755),
            _mode("tmp", 0o1777), _mode(HOST + "/file", 0o4777))),
    # ---- huge and negative numbers, bad headers
    _C("pax-10mb-path", ([Entry("x", pax={"path": "a/" * (5 * _MIB) + "escape"})],), True),
    _C("pax-10mb-comment", ([Entry("escape-comment", pax={"comment": "c" * (10 * _MIB)})],),
       True),
    _C("size-negative", ([Entry("escape-neg", raw={"size": base256(-1, 12)})],), True),
    _C("size-huge", ([Entry("escape-huge", raw={"size": base256(1 << 62, 12)})],), True),
    _C("uid-negative", ([Entry("escape-uid", raw={"uid": base256(-1, 8)})],), True),
    _C("uid-huge-base256", ([Entry("escape-uid", raw={"uid": base256(1 << 40, 8)})],), True),
    _C("uid-huge-pax", ([Entry("escape-uid", pax={"uid": "99999999999999"})],), True),
    _C("mtime-extremes",
       ([Entry("escape-future", raw={"mtime": base256(1 << 60, 12)}),
         Entry("escape-past", raw={"mtime": base256(-(1 << 60), 12)}),
         Entry("escape-dir", "dir", raw={"mtime": base256(-(1 << 40), 12)})],), "any"),
    _C("mode-huge", ([Entry("escape-mode", raw={"mode": base256(1 << 40 | 0o644, 8)})],),
       False, _mode("escape-mode", 0o644)),
    _C("setuid-uid-minus-one",
       ([Entry("escape-suid", content=b"#!/bin/sh\n", mode=0o4755, pax={"uid": "4294967295"})],),
       True),
    _C("setgid-gid-minus-one",
       ([Entry("escape-sgid", content=b"#!/bin/sh\n", mode=0o2755, raw={"gid": 0o37777777777})],),
       True),
    _C("checksum-invalid", ([Entry("escape-sum", content=_DATA, raw={"chksum": b"0000000\0"})],),
       True),
    _C("truncated-tar-mid-header", (_truncated(512 + 200),), True),
    _C("truncated-tar-mid-data", (_truncated(1024 + 700),), True),
    _C("truncated-gzip-blob", (_cut_blob("gzip"),), True),
    _C("truncated-zstd-blob", (_cut_blob("zstd"),), True),
    _C("garbage-after-gzip", (_garbage_after("gzip"),), True),
    _C("garbage-after-zstd", (_garbage_after("zstd"),), True),
    _C("gzip-bomb-1gib", (BlobLayer(zero_bomb),), False,
       lambda rootfs, host: _check_size(rootfs / "escape-bomb", GIB), timeout=180),
    _C("pax-nul-path", ([Entry("x", pax={"path": b"escape\0/../../x"})],), True),
    _C("pax-nul-linkpath", ([symlink("escape-nul", "x", pax={"linkpath": b"/tmp\0x"})],),
       True),
    _C("path-longer-than-4096", ([reg("d/" * 2100 + "escape-deep")],), True),
    _C("component-longer-than-255", ([reg("escape-" + "e" * 300)],), True),
    _C("deep-path-via-symlink",  # every name < 4096 bytes, the resolved path > 4096
       ([symlink("s", "dddddddddd/" * 200 + "e"),
         reg("s/" + "ffffffffff/" * 200 + "escape-deep", _DATA)],),
       False, _file("dddddddddd/" * 200 + "e/" + "ffffffffff/" * 200 + "escape-deep")),
    _C("path-just-under-4096", ([reg("dddddddddd/" * 371 + "escape-long", _DATA)],), False,
       _file("dddddddddd/" * 371 + "escape-long", _DATA)),
    _C("non-utf8-name", ([reg(b"escape-\xff\xfe", _DATA)],), False, _file(b"escape-\xff\xfe")),
    # ---- replacing directories that hold symlinks out
    _C("file-over-dir-with-outward-symlinks",
       ([dirent("d"), symlink("d/lnk", HOST), symlink("d/root", "/"),
         symlink("d/file", HOST + "/file")], [reg("d", _DATA)]), False, _file("d", _DATA)),
    _C("whiteout-dir-with-outward-symlinks",
       ([dirent("d"), symlink("d/lnk", HOST), dirent("d/sub"), symlink("d/sub/up", "../../..")],
        [whiteout("d")]), False, _absent("d")),
    _C("opaque-dir-with-outward-symlinks",
       ([dirent("d"), symlink("d/lnk", HOST), symlink("d/up", "../../..")],
        [opaque("d"), reg("d/new", _DATA)]), False, _all(_absent("d/lnk"), _file("d/new"))),
    # ---- the config reads /etc/passwd and /etc/group from the rootfs
    _C("config-passwd-symlink-to-host",
       ([dirent("etc"), symlink("etc/passwd", HOST + "/passwd")],), True, user="escapee"),
    _C("config-etc-symlink-to-host", ([symlink("etc", HOST)],), True, user="escapee"),
    _C("config-etc-symlink-loop", ([symlink("etc", "/etc")],), "any"),
    _C("config-passwd-fifo", ([dirent("etc"), Entry("etc/passwd", "fifo")],), False,
       timeout=30),
]


def _check_size(path: Path, size: int) -> None:
    info = os.lstat(path)
    assert stat.S_ISREG(info.st_mode) and info.st_size == size


def case_ids() -> list[str]:
    """The names, checked unique."""
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    return names


__all__ = [
    "CASES", "HOST", "BlobLayer", "Case", "Outcome", "RawLayer", "Run", "Sandbox", "Snapshot",
    "check_outcome", "diff", "escape_names", "host_files_snapshot", "make_host_dir",
    "remove", "run_case", "run_unpack", "sandbox", "snapshot", "zero_bomb",
]  # fmt: skip
