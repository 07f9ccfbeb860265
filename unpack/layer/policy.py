"""The safety policy: one function that every tar member passes through.

Like CPython's tarfile extraction filters (PEP 706), `admit` looks at one
entry and returns what the applier may do with it — or raises `LayerError`.
Names are cleaned lexically as if joined to `/` (so `..` and absolute names
stay inside the rootfs), whiteout names are classified and validated, and
owners that no uid_t can hold are refused.
The applier then resolves the cleaned paths inside the rootfs, following
symlinks only within it (see `unpack.fs.rootfs`).
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

from unpack.errors import LayerError
from unpack.idmap import MAX_FILE_ID
from unpack.layer.tarheader import EntryKind, TarEntry

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
AUFS_META_PREFIX = ".wh..wh."
PATH_MAX = 4096
NAME_MAX = 255


class Action(enum.Enum):
    """What the applier does with an admitted member."""

    CREATE = "create"  # create or replace `parts` as the entry says
    ROOT = "root"  # a directory entry for the rootfs itself: metadata only
    WHITEOUT = "whiteout"  # remove `parts` from lower layers
    OPAQUE = "opaque"  # hide the lower-layer children of directory `parts`
    SKIP = "skip"  # AUFS metadata (.wh..wh.* and what is under it): nothing to do


@dataclass(frozen=True, slots=True)
class Member:
    """An admitted tar entry: the action, its cleaned path and hardlink target."""

    action: Action
    parts: tuple[str, ...]
    entry: TarEntry
    link_parts: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "/".join(self.parts)


def clean_path(name: str) -> tuple[str, ...]:
    """Components of `name` as if joined to `/` and normalised (`..` stops at the root)."""
    if name and name[0] not in "./" and "/." not in name and "//" not in name:
        # Already clean (the common case): at most a trailing slash to drop.
        return tuple(name[:-1].split("/") if name[-1] == "/" else name.split("/"))
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return tuple(parts)


def lane_directory(prefix: str) -> tuple[str, ...] | None:
    """For the C fast lane: the directory (cleaned parts) where `admit` would CREATE any
    plain file named `prefix` + one plain base name. None unless `prefix` is already
    clean (`a/b/`, `./a/b/`, `` or `./`) and no component is AUFS metadata or too long.
    """
    parts = clean_path(prefix)
    clean = "/".join(parts) + "/" if parts else ""
    if (prefix != clean and prefix != "./" + clean) or "\0" in prefix:
        return None
    for part in parts:
        if part.startswith(AUFS_META_PREFIX) or (
            len(part) > NAME_MAX // 4 and len(os.fsencode(part)) > NAME_MAX  # ≤ 4 bytes a char
        ):
            return None
    return parts


def admit(entry: TarEntry) -> Member:
    """Decide what may be done with `entry`; raise LayerError to refuse it."""
    parts = _checked_path(entry.name, "name", entry.name)
    if not (0 <= entry.uid <= MAX_FILE_ID and 0 <= entry.gid <= MAX_FILE_ID):
        raise LayerError(f"entry {entry.name!r}: owner {entry.uid}:{entry.gid} out of range")
    for key in entry.xattrs:
        if not key or "\0" in key or "." not in key:
            raise LayerError(f"entry {entry.name!r}: invalid xattr name {key!r}")
    if not parts:
        if entry.kind is EntryKind.DIR:
            return Member(Action.ROOT, parts, entry)
        raise LayerError(f"entry {entry.name!r} would replace the rootfs itself")
    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        return _whiteout(entry, parts)
    if AUFS_META_PREFIX in entry.name and any(p.startswith(AUFS_META_PREFIX) for p in parts):
        return Member(Action.SKIP, parts, entry)  # inside AUFS metadata like .wh..wh.plnk/
    if entry.kind is EntryKind.HARDLINK:
        link_parts = _checked_path(entry.linkname, "hardlink target", entry.name)
        if not link_parts:
            raise LayerError(f"hardlink {entry.name!r} points at the rootfs itself")
        return Member(Action.CREATE, parts, entry, link_parts)
    if entry.kind is EntryKind.SYMLINK and (not entry.linkname or "\0" in entry.linkname):
        raise LayerError(f"symlink {entry.name!r} has an empty or invalid target")
    return Member(Action.CREATE, parts, entry)


def _whiteout(entry: TarEntry, parts: tuple[str, ...]) -> Member:
    base = parts[-1]
    if base == OPAQUE_MARKER:
        return Member(Action.OPAQUE, parts[:-1], entry)
    if base.startswith(AUFS_META_PREFIX):
        return Member(Action.SKIP, parts, entry)
    hidden = base[len(WHITEOUT_PREFIX) :]
    if hidden in ("", ".", ".."):
        raise LayerError(f"invalid whiteout name {entry.name!r}")
    return Member(Action.WHITEOUT, (*parts[:-1], hidden), entry)


def _checked_path(name: str, what: str, entry_name: str) -> tuple[str, ...]:
    if "\0" in name:
        raise LayerError(f"entry {entry_name!r}: {what} contains a NUL byte")
    parts = clean_path(name)
    size = len(name) if name.isascii() else len(name.encode("utf-8", "surrogateescape"))
    if size > PATH_MAX:
        raise LayerError(f"entry {entry_name[:80]!r}...: {what} longer than {PATH_MAX} bytes")
    if size > NAME_MAX:  # only then can one component be too long
        for part in parts:
            if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
                raise LayerError(f"entry {entry_name[:80]!r}: a {what} component is too long")
    return parts
