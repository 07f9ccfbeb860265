"""An entry's metadata onto what the applier made: owner, extended attributes, times.

The applier keeps the order: owner first (a chown clears setuid/setgid bits), then
mode, then xattrs (a chown also drops `security.capability`), then times last.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import xattr

from unpack.errors import FilesystemError
from unpack.fs.rootfs import Rootfs
from unpack.layer.tarstream import TarEntry

_XATTR_UNSUPPORTED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM)


def entry_times(entry: TarEntry) -> tuple[int, int]:
    """The (atime, mtime) in nanoseconds an entry gets; atime defaults to its mtime."""
    atime = entry.atime_ns if entry.atime_ns is not None else entry.mtime_ns
    return atime, entry.mtime_ns


class MetadataWriter:
    """Sets owners and xattrs through the rootfs, warning once per xattr namespace that
    the destination cannot take."""

    def __init__(self, rootfs: Rootfs, warn: Callable[[str], None]) -> None:
        self.rootfs = rootfs
        self.warn = warn
        self._warned: set[str] = set()

    def needs_chown(self, entry: TarEntry, made: os.stat_result) -> bool:
        """Whether a name just made (with stat `made`) needs a chown to get the entry's owner."""
        return self.rootfs.owner_differs(made, entry.uid, entry.gid, new=True)

    def chown(
        self, entry: TarEntry, *, fd: int | None = None, dir_fd: int = -1, name: str = ""
    ) -> None:
        """Give `fd`, or `name` in `dir_fd`, the entry's owner."""
        try:
            if fd is not None:
                self.rootfs.fchown(fd, entry.uid, entry.gid)
            else:
                self.rootfs.chown(dir_fd, name, entry.uid, entry.gid)
        except PermissionError:
            raise FilesystemError(
                f"{entry.name!r}: cannot set owner {entry.uid}:{entry.gid} here "
                "(use --rootless to record owners instead of setting them)"
            ) from None

    def xattrs(
        self,
        entry: TarEntry,
        *,
        fd: int | None = None,
        dir_fd: int = -1,
        name: str = "",
        symlink: bool = False,
    ) -> None:
        """Set the entry's xattrs on `fd`, or on `name` in `dir_fd`; where the destination
        does not support one, warn and go on."""
        for key, value in entry.xattrs.items():
            if symlink and key.startswith("user."):
                self._warn_once(key, f"{entry.name!r}: user.* xattrs cannot be set on a symlink")
                continue
            try:
                if fd is not None:
                    xattr.set(fd, key, value)
                else:
                    self.rootfs.set_xattr(dir_fd, name, key, value)
            except OSError as error:
                if error.errno not in _XATTR_UNSUPPORTED:
                    raise
                self._warn_once(key, f"{entry.name!r}: xattr {key} not set ({error.strerror})")

    def _warn_once(self, key: str, message: str) -> None:
        namespace = key.split(".", 1)[0]
        if namespace not in self._warned:
            self._warned.add(namespace)
            self.warn(message + " (further such warnings suppressed)")
