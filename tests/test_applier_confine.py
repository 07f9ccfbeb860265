"""Layer applier confinement: hostile names and symlinks never reach outside the rootfs.

Sentinels beside the bundle and under a unique `/tmp/oci-unpack-test-*` dir are
planted by the `unpacker` fixture and checked (content, mode, mtime, inode, nlink, and
that nothing appeared) after every test. Also: `Rootfs` unit tests for both resolvers,
and the CLI run as an unprivileged user.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, needs_root, needs_tool
from layers import (
    APPLIER_MODES,
    RESOLVERS,
    SENTINEL,
    Sentinels,
    Unpacker,
    build_image,
    resolver_param,
    tree,
    unpacker_fixture,
)

from fixtures.tarwriter import Entry, dirent, hardlink, opaque, reg, symlink, whiteout
from unpack.errors import LayerError
from unpack.fs.rootfs import Rootfs
from unpack.layer.policy import clean_path

PWNED = b"pwned\n"


@pytest.fixture(params=APPLIER_MODES)
def unpacker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Unpacker]:
    """Unpacks layer lists with each resolver; sentinels are checked afterwards."""
    yield from unpacker_fixture(request, tmp_path, monkeypatch)


@pytest.fixture
def sentinels(unpacker: Unpacker) -> Sentinels:
    """The sentinels the `unpacker` fixture planted (and checks after the test)."""
    assert unpacker.sentinels is not None
    return unpacker.sentinels


def inside(root: Path) -> set[str]:
    return set(tree(root)) - {"."}


def rel(path: Path) -> str:
    """An absolute host path as a rootfs-relative one (where it lands inside the root)."""
    return str(path).lstrip("/")


# Safety: this suite runs as root on a real host. Every hostile path is aimed so that, if
# confinement ever broke, it would only reach the sentinels (the bundle's parent dir `beside`
# and the unique `host` dir), never `/` or other host paths: escapes that climb to `/` go on
# into the `host` sentinel dir, and whiteouts/opaque markers only go through links whose
# escape target is a sentinel dir.

# -- names -----------------------------------------------------------------------------------

#: Name templates: {host} is the host sentinel dir without its leading slash, {deep} climbs
#: far above `/`. The rootfs is beside/.bundle-X/rootfs, so "../../x" escapes to beside/x.
HOSTILE_NAMES = [
    "../../sibling.txt", "..//..//outside/secret.txt", "./../../etc/passwd",
    "{deep}{host}/sibling.txt", "/{host}/outside/secret.txt", "a/../../../sibling.txt",
    "a/b/../../{deep}{host}/etc/passwd", "/../../{host}/sibling.txt",
]  # fmt: skip


@pytest.mark.parametrize("template", HOSTILE_NAMES)
def test_dotdot_and_absolute_names_stay_inside(
    unpacker: Unpacker, sentinels: Sentinels, template: str
) -> None:
    name = template.format(deep="../" * 24, host=rel(sentinels.host))
    root = unpacker([[dirent("a"), dirent("a/b"), reg(name, PWNED)]])
    landed = "/".join(clean_path(name))
    assert (root / landed).read_bytes() == PWNED
    assert ".." not in landed.split("/")
    assert inside(root) >= {"a", "a/b", landed}


def test_absolute_host_path_names_land_inside(unpacker: Unpacker, sentinels: Sentinels) -> None:
    target = sentinels.host / "outside/secret.txt"
    root = unpacker([[reg(str(target), PWNED), reg(str(sentinels.beside / "new.txt"), PWNED)]])
    assert (root / rel(target)).read_bytes() == PWNED
    assert (root / rel(sentinels.beside / "new.txt")).read_bytes() == PWNED


def test_hardlink_target_with_dotdot_stays_inside(unpacker: Unpacker) -> None:
    with pytest.raises(LayerError, match="does not exist"):
        unpacker([[hardlink("h", "../../sibling.txt")]])
    root = unpacker([[reg("sibling.txt", b"in\n"), hardlink("h", "../../../sibling.txt")]])
    t = tree(root)
    assert t["h"].inode == t["sibling.txt"].inode and (root / "h").read_bytes() == b"in\n"


# -- symlinked parents -------------------------------------------------------------------------


def _parent_links(s: Sentinels) -> dict[str, tuple[str, str]]:
    """kind -> (target of the link at `d/lnk`, prefix of the paths written through it).

    Links whose escape would reach `/` get a prefix that carries the write on into the
    host sentinel dir, so a broken resolver could only touch sentinels.
    """
    host = rel(s.host) + "/"
    return {
        "root": ("/", host),
        "dotdot": ("../../..", ""),  # from rootfs/d: escapes to `beside`
        "dotdot-deep": ("../" * 12, host),
        "host-abs": (str(s.host), ""),
        "beside-abs": (str(s.beside), ""),
        "root-dotdot-host": ("/../../.." + str(s.host), ""),
    }


@pytest.mark.parametrize("kind", ["root", "dotdot", "dotdot-deep", "host-abs", "beside-abs",
                                  "root-dotdot-host"])  # fmt: skip
def test_write_through_symlinked_parent_stays_inside(
    unpacker: Unpacker, sentinels: Sentinels, kind: str
) -> None:
    target, prefix = _parent_links(sentinels)[kind]
    lnk = "d/lnk/" + prefix
    root = unpacker([
        [dirent("d"), symlink("d/lnk", target)],
        [reg(lnk + "sibling.txt", PWNED), reg(lnk + "outside/secret.txt", PWNED),
         dirent(lnk + "outside/dir", mode=0o777), reg(lnk + "outside/dir/inner.txt", PWNED)],
    ])  # fmt: skip
    inside_target = "" if kind in ("root", "dotdot", "dotdot-deep") else rel(Path(target))
    base = root / "/".join(clean_path(inside_target + "/" + prefix))
    assert (base / "sibling.txt").read_bytes() == PWNED
    assert (base / "outside/secret.txt").read_bytes() == PWNED
    assert stat.S_IMODE(os.lstat(base / "outside/dir").st_mode) == 0o777
    assert os.readlink(root / "d/lnk") == target


def test_symlink_chains_resolve_inside(unpacker: Unpacker, sentinels: Sentinels) -> None:
    root = unpacker([
        [symlink("a", "b"), symlink("b", "c/../d"), dirent("c"), symlink("d", "../../e"),
         symlink("e", str(sentinels.host)), symlink("f", "a/outside")],
        [reg("a/outside/secret.txt", PWNED), reg("f/dir/inner.txt", PWNED)],
    ])  # fmt: skip
    host_inside = root / rel(sentinels.host)
    assert (host_inside / "outside/secret.txt").read_bytes() == PWNED
    assert (host_inside / "outside/dir/inner.txt").read_bytes() == PWNED
    assert [os.path.islink(root / n) for n in "abdef"] == [True] * 5


@pytest.mark.parametrize("links", [
    [symlink("loop", "loop")],
    [symlink("l1", "l2"), symlink("l2", "l1")],
    [symlink("l1", "/l2/x"), symlink("l2", "../l1")],
])  # fmt: skip
def test_symlink_loops_are_layer_errors(unpacker: Unpacker, links: list[Entry]) -> None:
    first = links[0].name
    with pytest.raises(LayerError, match="symbolic links"):
        unpacker([links, [reg(f"{first}/f", PWNED)]])
    assert not unpacker.bundle.exists()


def test_dangling_absolute_symlink_parent_is_created_inside(
    unpacker: Unpacker, sentinels: Sentinels
) -> None:
    missing = sentinels.host / "not-there" / "deeper"
    root = unpacker([[symlink("lnk", str(missing))], [reg("lnk/f", PWNED)]])
    assert (root / rel(missing) / "f").read_bytes() == PWNED
    assert not missing.exists()


def test_entries_replace_symlinks_not_their_targets(
    unpacker: Unpacker, sentinels: Sentinels
) -> None:
    """A file, dir, fifo or hardlink named like a symlink replaces the link itself."""
    secret, outside = sentinels.host / "outside/secret.txt", sentinels.host / "outside"
    root = unpacker([
        [symlink("f", str(secret)), symlink("d", str(outside)), symlink("p", str(secret)),
         symlink("h", "../../sibling.txt"), reg("src", b"src\n")],
        [reg("f", PWNED, mode=0o777), dirent("d", mode=0o777, uid=0),
         Entry("p", "fifo"), hardlink("h", "src")],
    ])  # fmt: skip
    t = tree(root)
    assert (t["f"].type, t["d"].type, t["p"].type) == ("file", "dir", "fifo")
    assert t["h"].inode == t["src"].inode


def test_metadata_never_follows_symlinks(unpacker: Unpacker, sentinels: Sentinels) -> None:
    """Owner, times and xattrs of a symlink entry apply to the link, not its target."""
    secret = sentinels.beside / "outside/secret.txt"
    xattrs = {"trusted.x": b"t"} if os.geteuid() == 0 else {}
    root = unpacker([[symlink("lnk", str(secret), mtime=1234, xattrs=xattrs),
                      symlink("rel", "../../sibling.txt", mtime=1234)]])  # fmt: skip
    assert os.lstat(root / "lnk").st_mtime_ns == 1234 * 10**9
    assert os.lstat(root / "rel").st_mtime_ns == 1234 * 10**9


def test_hardlink_through_symlinks_resolves_inside(
    unpacker: Unpacker, sentinels: Sentinels
) -> None:
    with pytest.raises(LayerError, match="does not exist"):
        unpacker([[symlink("lnk", str(sentinels.host / "outside")),
                   hardlink("h", "lnk/secret.txt")]])  # fmt: skip
    decoy = rel(sentinels.host / "outside/secret.txt")
    root = unpacker([[reg(decoy, b"inside\n"), symlink("lnk", str(sentinels.host / "outside")),
                      symlink("up", "../../.."), dirent("d"),
                      hardlink("h1", "lnk/secret.txt"), hardlink("d/h2", "up/" + decoy),
                      symlink("d/lnkdir", str(sentinels.beside)),
                      hardlink("d/lnkdir/h3", "/" + decoy)]])  # fmt: skip
    t = tree(root)
    assert t["h1"].inode == t["d/h2"].inode == t[decoy].inode
    assert t[rel(sentinels.beside / "h3")].inode == t[decoy].inode
    assert (root / "h1").read_bytes() == b"inside\n"


@pytest.mark.parametrize("kind", ["host-abs", "beside-abs", "dotdot", "root-dotdot-host"])
def test_whiteouts_through_outside_symlinks_stay_inside(
    unpacker: Unpacker, sentinels: Sentinels, kind: str
) -> None:
    """Whiteouts and opaque markers through `d/lnk` (whose escape target is a sentinel dir)."""
    target, prefix = _parent_links(sentinels)[kind]
    assert prefix == ""  # never aim a whiteout where an escape would reach `/`
    root = unpacker([
        [dirent("d"), reg("sibling.txt", b"in\n"), symlink("d/lnk", target)],
        [whiteout("d/lnk/sibling.txt"), whiteout("d/lnk/outside"), whiteout("d/lnk/etc/passwd"),
         opaque("d/lnk/outside/dir"), opaque("d/lnk")],
    ])  # fmt: skip
    if kind == "dotdot":  # `d/lnk` is the rootfs itself: the opaque marker empties it
        assert inside(root) == set()
    else:
        assert os.path.islink(root / "d/lnk")
        assert (root / "sibling.txt").read_bytes() == b"in\n"


def test_whiteout_of_symlink_to_outside_removes_only_the_link(
    unpacker: Unpacker, sentinels: Sentinels
) -> None:
    root = unpacker(
        [
            [
                symlink("a", str(sentinels.host / "outside")),
                symlink("b", "../../outside/secret.txt"),
            ],
            [whiteout("a"), whiteout("b")],
        ]
    )
    assert inside(root) == set()
    assert (sentinels.host / "outside/secret.txt").read_bytes() == SENTINEL


def test_sentinel_check_detects_changes(tmp_path: Path) -> None:
    """The guard used by every test really notices a modified or added file."""
    for change in ("modify", "add", "chmod"):
        beside = tmp_path / change
        beside.mkdir()
        guard = Sentinels.plant(beside, ("bundle",))
        try:
            (beside / "bundle").mkdir()  # excluded: not a change
            if change == "modify":
                (guard.host / "outside/secret.txt").write_bytes(PWNED)
            elif change == "add":
                (beside / "outside/new").write_bytes(b"")
            else:
                os.chmod(beside / "sibling.txt", 0o600)
            with pytest.raises(AssertionError, match="sentinels changed"):
                guard.check()
        finally:
            guard.remove()


# -- Rootfs unit tests --------------------------------------------------------------------------


@pytest.fixture(params=RESOLVERS)
def rootfs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rootfs]:
    """A small rootfs at tmp/a/b/rootfs whose escaping links lead to tmp/a or tmp only."""
    use = resolver_param(request.param)
    path = tmp_path / "a/b/rootfs"
    path.mkdir(parents=True)
    (path / "etc").mkdir()
    (path / "etc/passwd").write_bytes(b"root:x:0:0::/:/bin/sh\n")
    (path / "sibling.txt").write_bytes(b"inside\n")
    (tmp_path / "a/sibling.txt").write_bytes(SENTINEL)
    os.symlink("loop", path / "loop")
    os.symlink("l2", path / "l1")
    os.symlink("l1", path / "l2")
    os.symlink("../../..", path / "up")  # escaping: tmp
    os.symlink("/etc/passwd", path / "abs-passwd")
    os.symlink("../etc/../etc/passwd", path / "etc/rel-passwd")
    os.symlink("../../../sibling.txt", path / "etc/out")  # escaping: tmp/a/sibling.txt
    os.mkfifo(path / "fifo")
    os.symlink("/fifo", path / "fifo-link")
    os.symlink("etc", path / "chain0")
    for i in range(1, 45):
        os.symlink(f"chain{i - 1}", path / f"chain{i}")
    with Rootfs(str(path), use_openat2=use) as fs:
        assert fs.use_openat2 is use
        yield fs


def _ino(fd: int | None) -> int:
    assert fd is not None
    return os.fstat(fd).st_ino


@pytest.mark.parametrize("parts", [("loop",), ("l1",), ("l2", "x"), ("chain44",)])
@pytest.mark.parametrize("create", [False, True])
def test_rootfs_dir_fd_symlink_loop_is_layer_error(
    rootfs: Rootfs, parts: tuple[str, ...], create: bool
) -> None:
    with pytest.raises(LayerError, match="too many levels of symbolic links"):
        rootfs.dir_fd(parts, create=create)
    assert os.path.islink(os.path.join(rootfs.path, parts[0]))


def test_rootfs_dir_fd_follows_a_long_chain_below_the_limit(rootfs: Rootfs) -> None:
    etc = _ino(rootfs.dir_fd(("etc",), create=False))
    assert _ino(rootfs.dir_fd(("chain30",), create=False)) == etc


@pytest.mark.parametrize("parts", [("..",), ("..", "..", ".."), ("up",), ("up", "up", ".."),
                                   ("etc", "..", "..")])  # fmt: skip
def test_rootfs_dotdot_at_root_stays_at_root(rootfs: Rootfs, parts: tuple[str, ...]) -> None:
    assert _ino(rootfs.dir_fd(parts, create=False)) == os.fstat(rootfs.fd).st_ino
    etc = _ino(rootfs.dir_fd(("etc",), create=False))
    assert _ino(rootfs.dir_fd((*parts, "etc"), create=False)) == etc


def test_rootfs_dir_fd_create_makes_dirs_inside(rootfs: Rootfs) -> None:
    fd = rootfs.dir_fd(("up", "new", "deeper"), create=True)
    assert _ino(fd) == os.stat(os.path.join(rootfs.path, "new/deeper")).st_ino
    assert not os.path.lexists(os.path.join(rootfs.path, "../../../new"))
    assert rootfs.dir_fd(("missing",), create=False) is None
    assert rootfs.dir_fd(("sibling.txt",), create=False) is None


@pytest.mark.parametrize("path", ["/etc/passwd", "abs-passwd", "/etc/rel-passwd",
                                  "../../etc/passwd", "/up/up/abs-passwd"])  # fmt: skip
def test_rootfs_read_file_follows_in_root_symlinks(rootfs: Rootfs, path: str) -> None:
    assert rootfs.read_file(path) == b"root:x:0:0::/:/bin/sh\n"


def test_rootfs_read_file_never_leaves_the_root(rootfs: Rootfs) -> None:
    assert rootfs.read_file("/etc/out") == b"inside\n"
    assert rootfs.read_file("/../sibling.txt") == b"inside\n"


@pytest.mark.parametrize("path", ["/fifo", "/fifo-link", "/etc", "/missing", "/loop", "/up"])
def test_rootfs_read_file_refuses_fifos_dirs_and_missing(rootfs: Rootfs, path: str) -> None:
    """A FIFO would block the reader: it is refused like a directory or a missing file."""
    try:
        assert rootfs.read_file(path) is None
    except LayerError as error:  # a loop may also be reported as such
        assert path == "/loop" and "symbolic links" in str(error)


# -- non-root ---------------------------------------------------------------------------------


@functools.cache
def _as_nobody() -> list[str]:
    """The command prefix running a program as nobody:nogroup without supplementary groups.

    If this interpreter lives where nobody cannot reach it (pyenv under a 0700 /root),
    the only capability kept is CAP_DAC_READ_SEARCH (read/traverse): still no chown,
    no mknod, and a non-zero euid, which is what the unpacker checks.
    """
    base = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = [sys.executable, "-c", "import unpack.cli"]
    if subprocess.run([*base, *probe], cwd=REPO, capture_output=True).returncode == 0:
        return base
    return [*base, "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oci-unpack-test-", dir="/tmp"))
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_as_nobody(image: str, dest: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_as_nobody(), sys.executable, "-m", "unpack", image, str(dest)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


@needs_root
@needs_tool("setpriv")
def test_non_root_records_owners_instead_of_failing(shared_dir: Path) -> None:
    """Not root: no chown is possible, so the owner goes into user.rootlesscontainers."""
    image = build_image(
        shared_dir / "image", [[dirent("home"), reg("home/f", b"x", uid=1000, gid=1000)]]
    )
    result = _run_as_nobody(image, shared_dir / "bundle")
    assert result.returncode == 0, result.stderr
    unpacked = shared_dir / "bundle" / "rootfs" / "home" / "f"
    assert unpacked.stat().st_uid == 65534
    assert os.getxattr(unpacked, "user.rootlesscontainers") == b"\x08\xe8\x07\x10\xe8\x07"
    assert "user.rootlesscontainers" not in os.listxattr(unpacked.parent)  # 0:0: no record


@needs_root
@needs_tool("setpriv")
def test_non_root_devices_become_placeholders(shared_dir: Path) -> None:
    image = build_image(
        shared_dir / "image",
        [
            [
                Entry("dev/sda", "blockdev", devmajor=8, devminor=0),
                Entry("dev/null", "chardev", devmajor=1, devminor=3, mode=0o666),
            ]
        ],
    )
    result = _run_as_nobody(image, shared_dir / "bundle")
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and "placeholder" in warnings[0], result.stderr
    null = shared_dir / "bundle" / "rootfs" / "dev" / "null"
    assert stat.S_ISREG(null.lstat().st_mode) and null.stat().st_size == 0
    assert stat.S_IMODE(null.stat().st_mode) == 0o666
