"""The fast lane: the plain files and directories after a created entry are made by C
code (`_fastlane.c`), a run per call — in one directory and the tree the run makes below it.

Layers are sorted, so most entries are plain files and directories right after their
parent. Each costs the Python path ~25 µs of parsing, admission and dispatch; in C it
costs the syscalls alone. The lane takes only entries the Python rules would take as
they are — a plain ustar file or directory named `<a clean directory>/<one ASCII
component>`, not a whiteout, permission bits only — and stops, leaving it to the
reader, at any other entry or at any create that does not simply succeed (an existing
name, for one). The rules stay in `policy` and `tarstream`: the C code gets the
policy's numbers from `configure` below, `policy.lane_directory` says which
directories it may work in, and `tests/test_fastlane_rules.py` checks its reading of
headers against the Python reader and policy.

The lane runs where owners are set as the image says (root, no ID maps). Owner and mode
are settled from what the kernel gave each new name, as the Python path does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from unpack.errors import UnpackError
from unpack.fs.rootfs import Rootfs
from unpack.layer.policy import NAME_MAX, PATH_MAX, WHITEOUT_PREFIX, Member, lane_directory
from unpack.layer.tarstream import EntryKind, TarReader

try:
    from unpack.layer import _fastlane
except ImportError:  # built without a C compiler: the Python path does everything
    _fastlane = None  # type: ignore[assignment]
else:
    _fastlane.configure(NAME_MAX, PATH_MAX, WHITEOUT_PREFIX.encode())

AVAILABLE = _fastlane is not None
create_run = _fastlane.create_run if _fastlane is not None else None
parse_plain = _fastlane.parse_plain if _fastlane is not None else None


@dataclass(frozen=True)
class LaneRun:
    """What one C call made, in one directory and the directories it made there."""

    directory: int  # the directory's fd: valid until the next directory lookup
    parts: tuple[str, ...]  # the directory, as cleaned path components
    names: list[str]  # the names made, in order, as paths from it ("f", "sub/f")
    dirs: list[tuple[str, int, int]]  # the directories among them: (path, inode, mtime)
    below_previous: bool  # the directory was made by the previous run of this follow

    def own_names(self) -> list[str]:
        """The names made in the directory itself (the others are in directories the run
        made)."""
        return [name for name in self.names if "/" not in name]


class FastLane:
    """Makes runs of plain files and directories after the entry just applied, directory by
    directory."""

    def __init__(self, rootfs: Rootfs) -> None:
        self.rootfs = rootfs

    @classmethod
    def for_rootfs(cls, rootfs: Rootfs) -> FastLane | None:
        """A lane for `rootfs`, or None where it would not be exact (or is not built)."""
        if not AVAILABLE or not rootfs.owners_as_is():
            return None
        return cls(rootfs)

    def follow(self, member: Member, reader: TarReader) -> Iterator[LaneRun]:
        """After `member` (just created), make the plain entries that follow, starting in
        its directory and moving to each next entry's directory where it already exists.

        Each run is yielded before the next directory is looked up, while its fd is valid.
        """
        parts = member.parts if member.entry.kind is EntryKind.DIR else member.parts[:-1]
        raw = os.fsencode("/".join(parts) + "/" if parts else "")
        where = self._directory(raw)
        descended = False
        while where is not None:
            parts, parent = where
            taken = reader.take_plain(
                lambda buffer, pos, fd=parent, prefix=raw: _run(buffer, pos, fd, prefix)
            )
            if taken is None:
                return
            names, dirs, other = taken
            if names:
                yield LaneRun(parent, parts, names, dirs, descended)
            if other is None:
                return
            child = os.fsdecode(other[len(raw) : -1]) if other.startswith(raw) else ""
            descended = "/" not in child and any(path == child for path, _, _ in dirs)
            if descended:
                # Into a directory this run just made (nothing in it yet): it is opened from
                # its parent, and no lookup from the root is needed.
                where = ((*parts, child), self.rootfs.child_dir_fd(parts, parent, child))
            else:
                where = self._directory(other)
            raw = other

    def _directory(self, raw: bytes) -> tuple[tuple[str, ...], int] | None:
        """The parts and fd of existing directory `raw` (as named in the tar, with its '/'),
        where the policy lets the lane work; else None."""
        parts = lane_directory(os.fsdecode(raw))
        if parts is None:
            return None
        try:
            parent = self.rootfs.dir_fd(parts, create=False)
        except UnpackError:  # e.g. a symlink loop now: the Python path meets it, if at all
            return None
        return None if parent is None else (parts, parent)


def _run(
    buffer: memoryview, pos: int, parent: int, prefix: bytes
) -> tuple[int, int, tuple[list[str], list[tuple[str, int, int]], bytes | None]]:
    """One `create_run` call, in the shape `TarReader.take_plain` expects."""
    assert create_run is not None
    end, names, dirs, other = create_run(buffer, pos, parent, prefix)
    return end, len(names), (names, dirs, other)
