"""The rootless variant of the confined rootfs operations (umoci's `fseval` rootless).

An unprivileged user cannot give files other owners or create devices, and
must be able to write into every directory while unpacking. So:

- ownership is recorded, not applied: the `user.rootlesscontainers` xattr
  holds the owner the file has inside the container (the protobuf message of
  rootlesscontainers.com, as umoci writes it); 0:0 — the unpacking user,
  root in a rootless container — is recorded as no xattr. Linux allows user
  xattrs only on regular files and directories, so the owners of symlinks
  (silently, as umoci) and of fifos and sockets (with a warning) are not
  recorded;
- character and block devices become empty regular placeholder files (mode
  from the image, plus a warning): runtimes bind-mount real devices over them;
- directories keep owner rwx while unpacking; modes that lack it (0500,
  0000, ...) are set by `finish`, deepest first.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

import xattr

from unpack.fs.rootfs import Rootfs

OWNER_XATTR = "user.rootlesscontainers"
_OWNER_RWX = 0o700
_DEVICE_TYPES = (stat.S_IFCHR, stat.S_IFBLK)


def encode_owner(uid: int, gid: int) -> bytes:
    """The rootlesscontainers `Resource{uid=1, gid=2}` protobuf (proto3: zeros omitted)."""
    out = bytearray()
    for tag, value in ((0x08, uid), (0x10, gid)):
        if value:
            out.append(tag)
            while value > 0x7F:
                out.append(value & 0x7F | 0x80)
                value >>= 7
            out.append(value)
    return bytes(out)


class RootlessRootfs(Rootfs):
    """Rootfs operations for an unprivileged user."""

    applies_owners = False

    def __init__(self, path: str, *, warn: Callable[[str], None], **kwargs: object) -> None:
        super().__init__(path, **kwargs)  # type: ignore[arg-type]
        self._warn = warn
        self._warned: set[str] = set()
        self._dir_modes: dict[int, int] = {}  # directory inode -> mode to set at the end

    # -- ownership: recorded in an xattr ------------------------------------

    def owner_differs(self, info: os.stat_result, uid: int, gid: int, *, new: bool = False) -> bool:
        """A new name needs a record unless it is 0:0; an existing one may hold a stale one."""
        return (uid, gid) != (0, 0) if new else True

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        _record_owner(fd, uid, gid, nofollow=False)

    def chown(self, dir_fd: int, name: str, uid: int, gid: int) -> None:
        info = self.lstat(dir_fd, name)
        if info is None or stat.S_ISLNK(info.st_mode):
            return  # symlinks cannot carry user xattrs (umoci skips them too)
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
            self._warn_once(
                "owner",
                f"owner {uid}:{gid} of {name!r} not recorded: Linux allows user xattrs "
                "only on regular files and directories",
            )
            return
        _record_owner(self.proc_path(dir_fd, name), uid, gid, nofollow=True)

    def _warn_once(self, topic: str, message: str) -> None:
        if topic not in self._warned:
            self._warned.add(topic)
            self._warn(message + " (further such warnings suppressed)")

    # -- devices: placeholders ---------------------------------------------

    def mknod(self, dir_fd: int, name: str, mode: int, device: int) -> None:
        if stat.S_IFMT(mode) not in _DEVICE_TYPES:
            super().mknod(dir_fd, name, mode, device)
            return
        fd = self.create_file(dir_fd, name, stat.S_IMODE(mode))
        os.close(fd)
        self._warn_once(
            "device",
            f"device node {name!r} written as an empty placeholder file: "
            "an unprivileged user cannot create devices",
        )

    # -- directories: writable while unpacking -------------------------------

    def mkdir(self, dir_fd: int, name: str, mode: int) -> None:
        os.mkdir(name, mode | _OWNER_RWX, dir_fd=dir_fd)
        if mode & _OWNER_RWX != _OWNER_RWX:
            self._defer_mode(dir_fd, name, mode)
        else:  # a new directory may reuse the inode of a removed, deferred one
            self._dir_modes.pop(os.stat(name, dir_fd=dir_fd).st_ino, None)

    def set_root_mode(self, mode: int) -> None:
        os.fchmod(self.fd, mode | _OWNER_RWX)
        if mode & _OWNER_RWX != _OWNER_RWX:
            self._dir_modes[self.root_inode] = mode
        else:
            self._dir_modes.pop(self.root_inode, None)

    def chmod(self, dir_fd: int, name: str, mode: int) -> None:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode) and mode & _OWNER_RWX != _OWNER_RWX:
            os.chmod(name, mode | _OWNER_RWX, dir_fd=dir_fd)
            self._defer_mode(dir_fd, name, mode)
            return
        os.chmod(name, mode, dir_fd=dir_fd)
        self._dir_modes.pop(info.st_ino, None)

    def _defer_mode(self, dir_fd: int, name: str, mode: int) -> None:
        self._dir_modes[os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino] = mode

    def finish(self) -> None:
        """Give directories the restrictive modes they were spared while unpacking.

        Every directory is visited (symlinks are not followed), children before
        their parents, so no restricted directory has to be entered again.
        """
        if not self._dir_modes:
            return
        for parts, inode in reversed(self._directories()):
            mode = self._dir_modes.get(inode)
            fd = None if mode is None else self.open_dir(parts)
            if fd is None:
                continue
            try:
                if os.fstat(fd).st_ino == inode:
                    os.fchmod(fd, mode)
            finally:
                os.close(fd)
        self._dir_modes.clear()

    def _directories(self) -> list[tuple[list[str], int]]:
        """Every directory of the rootfs as (components, inode), parents first."""
        found: list[tuple[list[str], int]] = [([], self.root_inode)]
        index = 0
        while index < len(found):
            parts, _ = found[index]
            index += 1
            fd = self.open_dir(parts)
            if fd is None:
                continue
            try:
                with os.scandir(fd) as entries:
                    found.extend(
                        ([*parts, e.name], e.inode())
                        for e in entries
                        if e.is_dir(follow_symlinks=False)
                    )
            finally:
                os.close(fd)
        return found


def _record_owner(target: int | bytes, uid: int, gid: int, *, nofollow: bool) -> None:
    if (uid, gid) == (0, 0):
        try:
            xattr.remove(target, OWNER_XATTR, nofollow=nofollow)
        except OSError as error:
            if error.errno != errno.ENODATA:
                raise
        return
    xattr.set(target, OWNER_XATTR, encode_owner(uid, gid), nofollow=nofollow)
