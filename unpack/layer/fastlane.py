"""The fast lane: the plain files and directories after a created entry are made by C
code (`_fastlane.c`), a run per call.

Layers are sorted, so most entries are plain files and directories right after their
parent. Each costs the Python path ~25 µs of parsing, admission and dispatch; in C it
costs the syscalls alone. The lane takes only entries the Python rules would take as
they are — a plain ustar file or directory named `<a clean directory>/<one ASCII
component>`, not a whiteout, permission bits only — and stops, leaving it to the
reader, at any other entry or at any create that does not simply succeed (an existing
name, for one). So the safety policy and the replacement rules stay in `policy` and
`applier`; the lane only repeats their simplest outcome, and `policy.lane_directory`
decides which directories it may work in.

The lane runs only where it is exact: the C module was built, owners are set as they
are (root, no ID maps), and the umask is 0 (new names get their modes at creation).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from unpack.errors import UnpackError
from unpack.fs.rootfs import Rootfs
from unpack.layer.policy import Member, lane_directory
from unpack.layer.tarstream import EntryKind, TarReader

try:
    from unpack.layer._fastlane import create_files
except ImportError:  # built without a C compiler: the Python path does everything
    create_files = None

AVAILABLE = create_files is not None

# As each run lands: its directory's fd and parts, the names made, the directories among
# them as (name, inode, mtime in seconds), and whether that directory was itself made by
# the previous run (so it lies right below a directory already noted).
Created = Callable[
    [int, tuple[str, ...], list[str], list[tuple[str, int, int]], bool], None
]


class FastLane:
    """Makes runs of plain files and directories after the entry just applied, directory by
    directory."""

    def __init__(self, rootfs: Rootfs, owner: tuple[int, int], created: Created) -> None:
        self.rootfs = rootfs
        self.owner = owner
        self.created = created

    @classmethod
    def for_rootfs(
        cls, rootfs: Rootfs, created: Created, *, exact_modes: bool
    ) -> FastLane | None:
        """A lane for `rootfs`, or None where it would not be exact."""
        owner = rootfs.plain_owner()
        if not AVAILABLE or owner is None or not exact_modes:
            return None
        return cls(rootfs, owner, created)

    def follow(self, member: Member, reader: TarReader) -> None:
        """After `member` (just created), make the plain entries that follow, starting in
        its directory and moving to each next entry's directory where it already exists;
        report each run to `created` before the next directory is looked up."""
        parts = member.parts if member.entry.kind is EntryKind.DIR else member.parts[:-1]
        raw = os.fsencode("/".join(parts) + "/" if parts else "")
        where = self._directory(raw)
        descended = False
        while where is not None:
            parts, parent, setgid = where
            taken = reader.take_plain(partial(_run, parent, raw, *self.owner, setgid))
            if taken is None:
                return
            names, dirs, other = taken
            if names:
                self.created(parent, parts, names, dirs, descended)
            if other is None:
                return
            child = os.fsdecode(other[len(raw) : -1]) if other.startswith(raw) else ""
            descended = any(name == child for name, _, _ in dirs)
            if descended:
                # Into a directory this run just made (no setgid bit, nothing in it yet):
                # it is opened from its parent, and no lookup from the root is needed.
                where = ((*parts, child), self.rootfs.child_dir_fd(parts, parent, child), False)
            else:
                where = self._directory(other)
            raw = other

    def _directory(self, raw: bytes) -> tuple[tuple[str, ...], int, bool] | None:
        """The parts, fd and setgid bit of existing directory `raw` (as named in the tar,
        with its '/'), where the policy lets the lane work; else None."""
        parts = lane_directory(os.fsdecode(raw))
        if parts is None:
            return None
        try:
            parent = self.rootfs.dir_fd(parts, create=False)
        except UnpackError:  # e.g. a symlink loop now: the Python path meets it, if at all
            return None
        if parent is None:
            return None
        return parts, parent, self.rootfs.is_setgid_dir(parent)


def _run(
    parent: int, prefix: bytes, uid: int, gid: int, setgid: bool, buffer: memoryview, pos: int
) -> tuple[int, int, tuple[list[str], list[tuple[str, int, int]], bytes | None]]:
    """One `create_files` call, in the shape `TarReader.take_plain` expects."""
    assert create_files is not None
    end, names, dirs, other = create_files(buffer, pos, parent, prefix, uid, gid, setgid)
    return end, len(names), (names, dirs, other)
