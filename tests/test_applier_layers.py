"""Layer applier across layers: whiteouts, opaque dirs, replacement and hardlinks.

Each rule is a small list of layers and the expected tree, run with both resolvers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from layers import APPLIER_MODES, Unpacker, tree, unpacker_fixture

from fixtures.tarwriter import Entry, dirent, hardlink, opaque, reg, symlink, whiteout
from unpack.errors import LayerError

LOWER = [
    dirent("etc"), reg("etc/keep", b"keep\n"), reg("etc/gone", b"gone\n"),
    dirent("dir"), reg("dir/a", b"a\n"), dirent("dir/sub"), reg("dir/sub/b", b"b\n"),
    symlink("dir/sub/lnk", "../a"),
    reg("target-file", b"target\n"), dirent("target-dir"), reg("target-dir/x", b"x\n"),
    symlink("to-file", "target-file"), symlink("to-dir", "target-dir"),
    symlink("to-dir-abs", "/target-dir"),
]  # fmt: skip


@pytest.fixture(params=APPLIER_MODES)
def unpacker(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Unpacker]:
    """Unpacks layer lists with each resolver; sentinels are checked afterwards."""
    yield from unpacker_fixture(request, tmp_path, monkeypatch)


HOST = "/HOST-SENTINEL"  # replaced by the host sentinel dir in the test


def paths(root: os.PathLike[str] | str) -> set[str]:
    """Every path under `root` (relative), without the root itself."""
    return set(tree(root)) - {"."}


# -- whiteouts ------------------------------------------------------------------------------


def test_whiteout_removes_file(unpacker: Unpacker) -> None:
    root = unpacker([LOWER, [whiteout("etc/gone")]])
    assert not (root / "etc/gone").exists()
    assert (root / "etc/keep").read_bytes() == b"keep\n"
    assert not any(p.rsplit("/", 1)[-1].startswith(".wh.") for p in paths(root))


def test_whiteout_removes_whole_subtree(unpacker: Unpacker) -> None:
    root = unpacker([LOWER, [whiteout("dir")]])
    assert not any(p == "dir" or p.startswith("dir/") for p in paths(root))
    assert (root / "target-file").read_bytes() == b"target\n"


@pytest.mark.parametrize("link", ["to-file", "to-dir", "to-dir-abs"])
def test_whiteout_removes_symlink_not_target(unpacker: Unpacker, link: str) -> None:
    root = unpacker([LOWER, [whiteout(link)]])
    assert not os.path.lexists(root / link)
    assert (root / "target-file").read_bytes() == b"target\n"
    assert (root / "target-dir/x").read_bytes() == b"x\n"


def test_whiteout_through_symlinked_parent_stays_in_root(unpacker: Unpacker) -> None:
    """`to-dir/.wh.x` resolves `to-dir` inside the rootfs: it removes target-dir/x."""
    root = unpacker([LOWER, [whiteout("to-dir-abs/x")]])
    assert not (root / "target-dir/x").exists()
    assert os.path.islink(root / "to-dir-abs")


def test_whiteout_of_nonexistent_path_creates_nothing(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            LOWER,
            [
                whiteout("nope"),
                whiteout("no/such/parents/here"),
                whiteout("etc/missing"),
                whiteout("etc/keep/under-a-file"),
            ],
        ]
    )
    assert paths(root) == paths(unpacker([LOWER]))
    assert not os.path.lexists(root / "no")


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_opaque_hides_lower_children_keeps_same_layer(unpacker: Unpacker, position: str) -> None:
    marker = opaque("dir")
    upper = [reg("dir/new1", b"n1\n"), dirent("dir/newsub"), reg("dir/newsub/c", b"c\n")]
    at = {"first": 0, "middle": 1, "last": len(upper)}[position]
    upper.insert(at, marker)
    root = unpacker([LOWER, [dirent("dir", mode=0o710), *upper]])
    found = {p for p in paths(root) if p.startswith("dir/")}
    assert found == {"dir/new1", "dir/newsub", "dir/newsub/c"}
    assert (root / "dir/new1").read_bytes() == b"n1\n"
    assert tree(root)["dir"].mode == 0o710  # the dir itself stays, with its new header
    assert (root / "etc/keep").exists()


def test_opaque_keeps_same_layer_subdir_of_lower_name(unpacker: Unpacker) -> None:
    """A lower subdir the same layer writes into survives, but only with the new child."""
    root = unpacker([LOWER, [reg("dir/sub/new", b"new\n"), opaque("dir")]])
    assert {p for p in paths(root) if p.startswith("dir/")} == {"dir/sub", "dir/sub/new"}


def test_opaque_without_lower_dir_is_harmless(unpacker: Unpacker) -> None:
    root = unpacker([[reg("f", b"f")], [opaque("nodir"), reg("other", b"o")]])
    assert paths(root) <= {"f", "other", "nodir"}
    assert not any(".wh." in p for p in paths(root))


def test_whiteout_never_removes_same_layer_file(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            LOWER,
            [
                reg("etc/gone", b"rewritten\n"),
                whiteout("etc/gone"),
                whiteout("fresh"),
                reg("fresh", b"fresh\n"),
            ],
        ]
    )
    assert (root / "etc/gone").read_bytes() == b"rewritten\n"
    assert (root / "fresh").read_bytes() == b"fresh\n"


def test_whiteout_of_dir_same_layer_wrote_into(unpacker: Unpacker) -> None:
    """Lower content of `dir` goes; what this layer put under it stays."""
    root = unpacker([LOWER, [reg("dir/sub/new", b"new\n"), whiteout("dir")]])
    assert {p for p in paths(root) if p.startswith("dir")} == {"dir", "dir/sub", "dir/sub/new"}


def test_whiteout_in_next_layer_removes_what_previous_wrote(unpacker: Unpacker) -> None:
    root = unpacker([[reg("f", b"1")], [whiteout("f")], [reg("f", b"3")], [whiteout("f")]])
    assert not (root / "f").exists()


@pytest.mark.parametrize("hider", [opaque("real"), whiteout("real/new"), whiteout("real")])
def test_same_layer_file_written_through_symlink_is_not_hidden(
    unpacker: Unpacker, hider: Entry
) -> None:
    """Same-layer content is recognised by where it landed, not by the name it was written as."""
    root = unpacker([[dirent("real"), reg("real/old", b"o"), symlink("alias", "real")],
                     [reg("alias/new", b"n\n"), hider]])  # fmt: skip
    assert (root / "real/new").read_bytes() == b"n\n"


@pytest.mark.parametrize("name", [".wh.", "dir/.wh..", "dir/.wh..."])
def test_invalid_whiteout_names_are_errors(unpacker: Unpacker, name: str) -> None:
    with pytest.raises(LayerError, match="whiteout"):
        unpacker([LOWER, [reg(name)]])
    assert not unpacker.bundle.exists()
    assert not [n for n in os.listdir(unpacker.workdir) if "oci-unpack" in n]


def test_aufs_metadata_entries_are_ignored(unpacker: Unpacker) -> None:
    root = unpacker(
        [LOWER, [reg(".wh..wh.aufs"), dirent(".wh..wh.orph"), reg("dir/.wh..wh.plnk", b"meta")]]
    )
    assert paths(root) == paths(unpacker([LOWER]))


def test_aufs_hardlink_dir_contents_are_ignored(unpacker: Unpacker) -> None:
    """Docker skips every path under a root `.wh..wh.*` dir (AUFS plnk hardlink stash)."""
    root = unpacker([LOWER, [dirent(".wh..wh.plnk"), reg(".wh..wh.plnk/1234.5678", b"x")]])
    assert not any(p.startswith(".wh.") for p in paths(root))


# -- replacement -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "kind"),
    [
        ([reg("p", b"file")], [dirent("p"), reg("p/c", b"c")], "dir"),
        ([dirent("p"), reg("p/c", b"c")], [reg("p", b"file")], "file"),
        ([reg("p", b"file")], [symlink("p", "elsewhere")], "symlink"),
        ([symlink("p", "elsewhere")], [reg("p", b"file")], "file"),
        ([dirent("p"), reg("p/c", b"c")], [symlink("p", HOST)], "symlink"),
        ([symlink("p", HOST)], [dirent("p"), reg("p/c", b"c")], "dir"),
        ([Entry("p", "fifo")], [reg("p", b"file")], "file"),
        ([reg("p", b"file")], [Entry("p", "fifo")], "fifo"),
    ],
    ids=[
        "file>dir",
        "dir>file",
        "file>symlink",
        "symlink>file",
        "dir>symlink",
        "symlink>dir",
        "fifo>file",
        "file>fifo",
    ],
)
def test_replacement_across_layers(
    unpacker: Unpacker, lower: list[Entry], upper: list[Entry], kind: str
) -> None:
    """Absolute link targets point at the host sentinel dir (a wrong follow touches only it)."""
    assert unpacker.sentinels is not None
    host = str(unpacker.sentinels.host / "outside")
    lower, upper = ([_at_host(e, host) for e in entries] for entries in (lower, upper))
    root = unpacker([[*lower], upper])
    t = tree(root)
    assert t["p"].type == kind
    if kind == "dir":
        assert set(os.listdir(root / "p")) == {"c"}
    elif kind == "file":
        assert (root / "p").read_bytes() == b"file"
    elif kind == "symlink":
        assert t["p"].target == upper[0].linkname
    assert set(t) == {".", "p"} | ({"p/c"} if kind == "dir" else set())


def _at_host(entry: Entry, host: str) -> Entry:
    return dataclasses.replace(entry, linkname=host) if entry.linkname == HOST else entry


def test_symlink_replacing_dir_then_write_goes_through_it(unpacker: Unpacker) -> None:
    root = unpacker([[dirent("real"), dirent("p"), reg("p/old", b"o")],
                     [symlink("p", "real")], [reg("p/new", b"n")]])  # fmt: skip
    assert os.path.islink(root / "p")
    assert (root / "real/new").read_bytes() == b"n"
    assert not (root / "real/old").exists()


def test_dir_over_dir_merges_and_takes_new_metadata(unpacker: Unpacker) -> None:
    root = unpacker([
        [dirent("d", mode=0o755, uid=0, mtime=1000000000), reg("d/lower", b"l")],
        [dirent("d", mode=0o711, mtime=1200000000, xattrs={"user.v": b"2"}),
         reg("d/upper", b"u")],
    ])  # fmt: skip
    t = tree(root)
    assert set(os.listdir(root / "d")) == {"lower", "upper"}
    assert (t["d"].mode, t["d"].mtime_ns) == (0o711, 1200000000 * 10**9)
    assert t["d"].xattrs == {"user.v": b"2"}


def test_duplicates_in_one_layer_last_wins(unpacker: Unpacker) -> None:
    root = unpacker(
        [
            [
                reg("f", b"first", mode=0o600),
                reg("f", b"second", mode=0o640),
                dirent("d", mode=0o700),
                dirent("d", mode=0o750),
                symlink("s", "one"),
                symlink("s", "two"),
                reg("x", b"file"),
                dirent("x"),
                reg("x/in", b"in"),
                dirent("y"),
                reg("y", b"file-after-dir"),
            ]
        ]
    )
    t = tree(root)
    assert ((root / "f").read_bytes(), t["f"].mode) == (b"second", 0o640)
    assert t["d"].mode == 0o750
    assert t["s"].target == "two"
    assert t["x"].type == "dir" and (root / "x/in").read_bytes() == b"in"
    assert (root / "y").read_bytes() == b"file-after-dir"


@pytest.mark.parametrize("same_layer", [False, True])
def test_file_in_the_way_of_a_parent_becomes_a_dir(unpacker: Unpacker, same_layer: bool) -> None:
    first = [reg("a", b"file"), reg("b", b"file")]
    second = [reg("a/child", b"c"), reg("b/x/y/z", b"deep")]
    root = unpacker([first + second] if same_layer else [first, second])
    t = tree(root)
    assert t["a"].type == "dir" and (root / "a/child").read_bytes() == b"c"
    assert t["b/x/y"].type == "dir" and (root / "b/x/y/z").read_bytes() == b"deep"


def test_missing_parents_are_created(unpacker: Unpacker) -> None:
    root = unpacker([[reg("x/y/z/f", b"f")]])
    t = tree(root)
    assert [t[p].type for p in ("x", "x/y", "x/y/z")] == ["dir"] * 3
    assert t["x"].mode == 0o755


# -- hardlinks ----------------------------------------------------------------------------------


def test_hardlink_to_lower_layer_file(unpacker: Unpacker) -> None:
    root = unpacker([LOWER, [hardlink("etc/keep2", "etc/keep"), hardlink("hl", "/dir/sub/b")]])
    t = tree(root)
    assert t["etc/keep2"].inode == t["etc/keep"].inode and t["etc/keep"].nlink == 2
    assert t["hl"].inode == t["dir/sub/b"].inode


def test_hardlink_when_the_directory_cache_overflows(
    unpacker: Unpacker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolving the link's own directory may evict the target's cached directory fd."""
    monkeypatch.setattr("unpack.fs.rootfs._CACHE_LIMIT", 1)
    root = unpacker([[reg("a/f", b"data\n"), reg("c/g", b"other\n")],
                     [hardlink("b/link", "a/f")]])  # fmt: skip
    t = tree(root)
    assert t["b/link"].inode == t["a/f"].inode and t["a/f"].nlink == 2


@pytest.mark.parametrize("how", ["whiteout", "file", "dir", "symlink"])
def test_hardlink_survives_target_removal(unpacker: Unpacker, how: str) -> None:
    replace = {
        "whiteout": [whiteout("orig")],
        "file": [reg("orig", b"new\n")],
        "dir": [dirent("orig")],
        "symlink": [symlink("orig", "elsewhere")],
    }[how]
    root = unpacker([[reg("orig", b"old\n", mode=0o640)], [hardlink("other", "orig")], replace])
    t = tree(root)
    assert (root / "other").read_bytes() == b"old\n"
    assert (t["other"].mode, t["other"].nlink) == (0o640, 1)
    if how == "whiteout":
        assert "orig" not in t
    else:
        assert t["orig"].inode != t["other"].inode


def test_hardlink_in_same_layer_then_target_rewritten(unpacker: Unpacker) -> None:
    root = unpacker([[reg("a", b"old"), hardlink("b", "a"), reg("a", b"new")]])
    assert (root / "a").read_bytes() == b"new"
    assert (root / "b").read_bytes() == b"old"


def test_hardlink_to_symlink_links_the_symlink(unpacker: Unpacker) -> None:
    root = unpacker([[reg("real", b"r"), symlink("sym", "real"), dirent("d"),
                      symlink("dsym", "d")],
                     [hardlink("sym2", "sym"), hardlink("dsym2", "dsym")]])  # fmt: skip
    t = tree(root)
    assert t["sym2"].type == "symlink" and t["sym2"].target == "real"
    assert t["sym2"].inode == t["sym"].inode and t["real"].nlink == 1
    assert t["dsym2"].type == "symlink" and t["dsym2"].inode == t["dsym"].inode


def test_hardlink_to_fifo(unpacker: Unpacker) -> None:
    root = unpacker([[Entry("p", "fifo"), hardlink("p2", "p")]])
    t = tree(root)
    assert t["p2"].type == "fifo" and t["p2"].inode == t["p"].inode


@pytest.mark.parametrize("target", ["missing", "dir/missing", "etc/keep/under-file"])
def test_hardlink_to_missing_target_is_an_error(unpacker: Unpacker, target: str) -> None:
    with pytest.raises(LayerError, match="does not exist"):
        unpacker([LOWER, [hardlink("h", target)]])
    assert not unpacker.bundle.exists()


@pytest.mark.parametrize("target", ["dir", "dir/sub", "/dir/"])
def test_hardlink_to_directory_is_an_error(unpacker: Unpacker, target: str) -> None:
    with pytest.raises(LayerError, match="directory"):
        unpacker([LOWER, [hardlink("h", target)]])
    assert not unpacker.bundle.exists()


def test_hardlink_onto_itself_is_a_no_op(unpacker: Unpacker) -> None:
    root = unpacker([[reg("a", b"a"), hardlink("b", "a")], [hardlink("b", "a")]])
    t = tree(root)
    assert t["a"].inode == t["b"].inode and t["a"].nlink == 2


def test_hardlink_replaces_existing_name(unpacker: Unpacker) -> None:
    root = unpacker([[reg("a", b"a"), dirent("b"), reg("b/x", b"x")], [hardlink("b", "a")]])
    t = tree(root)
    assert t["b"].type == "file" and t["b"].inode == t["a"].inode
    assert "b/x" not in t
