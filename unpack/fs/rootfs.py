"""Every filesystem operation on the rootfs, confined to it.

Paths are resolved as if the rootfs were `/`: `..` stops at the root and
symlinks — absolute or relative — are followed inside it. Resolution uses
`openat2(RESOLVE_IN_ROOT)` where the kernel offers it, and otherwise an
equivalent walk, one component at a time, over directory fds opened with
`O_NOFOLLOW`. Operations then act on one final name inside a resolved
directory fd and never follow a symlink in that name, so nothing outside
the rootfs is ever created, written, linked, chmod-ed or removed.

This is the default (root) implementation; a rootless variant overrides the
ownership and device operations (umoci's `fseval` pattern).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

import xattr

from unpack.errors import FilesystemError, LayerError
from unpack.fs import openat2
from unpack.idmap import IdMap

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_MAX_SYMLINKS = 40
_CACHE_LIMIT = 256
_MAX_READ = 16 << 20

Parts = Sequence[str]


class Rootfs:
    """A rootfs directory and the confined operations on it."""

    applies_owners = True  # False where owners are recorded rather than set

    def __init__(
        self,
        path: str,
        *,
        use_openat2: bool | None = None,
        uid_map: IdMap | None = None,
        gid_map: IdMap | None = None,
    ) -> None:
        self.path = path
        self.uid_map = uid_map or IdMap(kind="uid")
        self.gid_map = gid_map or IdMap(kind="gid")
        self._owner = (os.geteuid(), os.getegid())
        self.fd = os.open(path, _DIR_FLAGS | os.O_NOFOLLOW)
        self.root_inode = os.fstat(self.fd).st_ino
        # With ID maps, the container's root owns the rootfs and the directories
        # made for entries that have no entry of their own.
        self._mapped_root = self._owner
        if self.applies_owners and self.uid_map.covers(0) and self.gid_map.covers(0):
            self._mapped_root = (self.uid_map.to_host(0), self.gid_map.to_host(0))
            if self._mapped_root != self._owner:
                os.fchown(self.fd, *self._mapped_root)
        self.use_openat2 = openat2.available() if use_openat2 is None else use_openat2
        self._dirs: dict[tuple[str, ...], int] = {}
        self._stale = False
        self._dir_stats: dict[int, os.stat_result] = {}

    def close(self) -> None:
        """Release the root fd and every cached directory fd."""
        self.forget_dirs()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Rootfs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- resolution ---------------------------------------------------------

    def forget_dirs(self) -> None:
        """Close and drop every cached directory fd."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        self._dir_stats.clear()
        self._stale = False

    def _dir_stat(self, fd: int) -> os.stat_result:
        """fstat of a directory fd from `dir_fd` (or the root fd), cached while the fd is."""
        info = self._dir_stats.get(fd)
        if info is None:
            info = self._dir_stats[fd] = os.fstat(fd)
        return info

    def dir_inode(self, fd: int) -> int:
        """The inode of a directory fd from `dir_fd` (or the root fd)."""
        return self._dir_stat(fd).st_ino

    def dir_fd(self, parts: Parts, *, create: bool) -> int | None:
        """The fd of directory `parts` resolved inside the root (cached; do not close).

        With `create`, missing directories are made (mode 0755) and a
        non-directory in the way is replaced by one; without it, a missing
        or non-directory component gives None. A returned fd stays valid
        only until the next `dir_fd` call, which may close cached fds (after
        a `remove` of a directory or symlink, or when the cache is full).
        """
        if self._stale:
            self.forget_dirs()
        key = tuple(parts)
        if not key:
            return self.fd
        cached = self._dirs.get(key)
        if cached is not None:
            return cached
        fd = self._open_dir(key, create)
        if fd is None:
            return None
        if len(self._dirs) >= _CACHE_LIMIT:
            self.forget_dirs()
        self._dirs[key] = fd
        return fd

    def child_dir_fd(self, parts: Parts, parent: int, name: str) -> int:
        """The fd of directory `name`, just made in `parent` (the `dir_fd` of `parts`):
        opened from `parent` without following a link, and cached as parts + name.

        One component, never `.` or `..`, so the result is inside `parent`.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a single path component: {name!r}")
        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        if self._stale or len(self._dirs) >= _CACHE_LIMIT:
            self.forget_dirs()
        self._dirs[(*parts, name)] = fd
        return fd

    def open_dir(self, parts: Parts) -> int | None:
        """A new fd (the caller closes it) of existing directory `parts`, or None."""
        if not parts:
            return os.dup(self.fd)
        return self._open_dir(tuple(parts), create=False)

    def _open_dir(self, parts: tuple[str, ...], create: bool) -> int | None:
        if self.use_openat2:
            try:
                return openat2.openat2(self.fd, "/".join(parts), _DIR_FLAGS, _RESOLVE)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise _too_many_links(parts) from None
                if error.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise _fs_error(error, parts) from None
                if not create:
                    return None
        return self._walk(parts, create)

    def _walk(self, parts: tuple[str, ...], create: bool) -> int | None:
        """Resolve `parts` one component at a time, as RESOLVE_IN_ROOT would."""
        stack = [os.dup(self.fd)]
        pending = list(reversed(parts))
        links = 0
        try:
            while pending:
                name = pending.pop()
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                here = stack[-1]
                try:
                    stack.append(os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=here))
                    continue
                except OSError as error:
                    if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise _fs_error(error, parts) from None
                info = self.lstat(here, name)
                if info is not None and stat.S_ISLNK(info.st_mode):
                    links += 1
                    if links > _MAX_SYMLINKS:
                        raise _too_many_links(parts)
                    target = os.readlink(name, dir_fd=here)
                    if target.startswith("/"):
                        for fd in stack[1:]:
                            os.close(fd)
                        del stack[1:]
                    pending.extend(reversed(target.split("/")))
                    continue
                if not create:
                    return None
                if info is not None:
                    self.remove(here, name, info)
                self.mkdir(here, name, 0o755)
                self.chmod(here, name, 0o755)  # a directory with no entry: 0755, any umask
                if self._mapped_root != self._owner:
                    os.chown(name, *self._mapped_root, dir_fd=here, follow_symlinks=False)
                pending.append(name)
            return stack.pop()
        finally:
            for fd in stack:
                os.close(fd)

    def resolve_file(self, path: str) -> int | None:
        """Open an in-container path for reading, following symlinks inside the root.

        Returns None if it does not exist or is not a regular file.
        """
        parts = path.strip("/").split("/")
        for _ in range(_MAX_SYMLINKS):
            parent = self.dir_fd(parts[:-1], create=False)
            if parent is None:
                return None
            info = self.lstat(parent, parts[-1])
            if info is None:
                return None
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(parts[-1], dir_fd=parent)
                base = [] if target.startswith("/") else list(parts[:-1])
                parts = base + [p for p in target.split("/") if p]
                if not parts:
                    return None
                continue
            if not stat.S_ISREG(info.st_mode):
                return None
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            return os.open(parts[-1], flags, dir_fd=parent)
        raise _too_many_links(tuple(parts))

    def read_file(self, path: str) -> bytes | None:
        """The content of an in-container regular file (e.g. /etc/passwd), or None."""
        fd = self.resolve_file(path)
        if fd is None:
            return None
        with os.fdopen(fd, "rb") as file:
            data = file.read(_MAX_READ + 1)
        if len(data) > _MAX_READ:
            raise LayerError(f"rootfs {path}: larger than {_MAX_READ} bytes")
        return data

    # -- operations on one name in a resolved directory ----------------------

    @staticmethod
    def lstat(dir_fd: int, name: str) -> os.stat_result | None:
        """lstat a name, or None if it does not exist."""
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def remove(self, dir_fd: int, name: str, info: os.stat_result) -> list[int]:
        """Remove a name: a file or link is unlinked, a directory removed with its subtree.

        Returns the inodes of the directories removed, which new ones may reuse."""
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            self._stale = self._stale or stat.S_ISLNK(info.st_mode)
            return []
        self._stale = True
        return remove_tree(dir_fd, name)

    def mkdir(self, dir_fd: int, name: str, mode: int) -> None:
        os.mkdir(name, mode, dir_fd=dir_fd)

    def create_file(self, dir_fd: int, name: str, mode: int) -> int:
        """Create a new, empty regular file for writing; FileExistsError if the name exists."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.open(name, flags, mode, dir_fd=dir_fd)

    def symlink(self, target: str, dir_fd: int, name: str) -> None:
        os.symlink(target, name, dir_fd=dir_fd)

    def link(self, src_fd: int, src_name: str, dir_fd: int, name: str) -> None:
        """Hard-link; a symlink source is linked itself, never followed."""
        os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)

    def mknod(self, dir_fd: int, name: str, mode: int, device: int) -> None:
        os.mknod(name, mode, device, dir_fd=dir_fd)

    def owners_as_is(self) -> bool:
        """Whether owners are set as the image says them (no ID maps, not recorded)."""
        return self.applies_owners and not self.uid_map.ranges and not self.gid_map.ranges

    def owner_differs(self, info: os.stat_result, uid: int, gid: int, *, new: bool = False) -> bool:
        """Whether a name with stat `info` needs a chown to have container owner uid:gid.

        Judged from what the kernel gave it (a setgid or grpid parent's group, say), never
        from who we are. `new`: the name was just made by us.
        """
        wanted = (self.uid_map.to_host(uid), self.gid_map.to_host(gid))
        return (info.st_uid, info.st_gid) != wanted

    def chown(self, dir_fd: int, name: str, uid: int, gid: int) -> None:
        """Give a name (never a symlink's target) container owner uid:gid."""
        host_uid, host_gid = self.uid_map.to_host(uid), self.gid_map.to_host(gid)
        os.chown(name, host_uid, host_gid, dir_fd=dir_fd, follow_symlinks=False)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, self.uid_map.to_host(uid), self.gid_map.to_host(gid))

    def set_root_mode(self, mode: int) -> None:
        """Set the mode of the rootfs directory itself (a `./` entry)."""
        os.fchmod(self.fd, mode)

    def finish(self) -> None:
        """Work left until every layer is applied (none for the default implementation)."""

    def chmod(self, dir_fd: int, name: str, mode: int) -> None:
        """chmod a name known not to be a symlink (symlinks have no mode on Linux)."""
        os.chmod(name, mode, dir_fd=dir_fd)

    @staticmethod
    def proc_path(dir_fd: int, name: str) -> bytes:
        """A path naming `name` in `dir_fd` for calls that take no dir fd (xattrs)."""
        return b"/proc/self/fd/%d/%s" % (dir_fd, os.fsencode(name))

    def set_xattr(self, dir_fd: int, name: str, key: str, value: bytes) -> None:
        """Set an xattr on the name itself (not a symlink's target)."""
        xattr.set(self.proc_path(dir_fd, name), key, value, nofollow=True)

    @staticmethod
    def utime(dir_fd: int, name: str, atime_ns: int, mtime_ns: int) -> None:
        os.utime(name, ns=(atime_ns, mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


_RESOLVE = openat2.RESOLVE_IN_ROOT | openat2.RESOLVE_NO_MAGICLINKS


def remove_tree(parent_fd: int, name: str) -> list[int]:
    """Remove directory `name` and its subtree without following any symlink; return
    the inodes of the directories removed.

    Iterative, so a very deep tree needs one open fd per level but no
    recursion; children are removed before their directory.
    """
    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    stack: list[tuple[int, int, str]] = [(parent_fd, fd, name)]
    removed: list[int] = []
    try:
        while stack:
            _, fd, _ = stack[-1]
            subdir = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdir = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if subdir is not None:
                child = os.open(subdir, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                stack.append((fd, child, subdir))
                continue
            parent, fd, dirname = stack.pop()
            inode = os.fstat(fd).st_ino
            os.close(fd)
            os.rmdir(dirname, dir_fd=parent)
            removed.append(inode)
        return removed
    finally:
        for _, fd, _ in stack:
            os.close(fd)


def _too_many_links(parts: Parts) -> LayerError:
    return LayerError(f"path {'/'.join(parts)!r}: too many levels of symbolic links")


def _fs_error(error: OSError, parts: Parts) -> FilesystemError:
    return FilesystemError(f"rootfs/{'/'.join(parts)}: {error.strerror}")
