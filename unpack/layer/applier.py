"""Apply layers' tar entries onto a rootfs: whiteouts, opaque dirs, metadata.

Every member first passes `policy.admit`; every filesystem operation goes
through `Rootfs`, which confines it. Per layer, the applier remembers the
paths the layer wrote (and their ancestors), so whiteouts and opaque
markers hide only what lower layers left, whatever the entry order.
Directory times are set once, after all layers, from each directory's last
header — so a directory that gained or lost children later keeps them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from typing import TypeVar

from unpack.errors import FilesystemError, LayerError
from unpack.fs.rootfs import Rootfs
from unpack.layer.fastlane import FastLane, LaneRun
from unpack.layer.metadata import MetadataWriter, entry_times
from unpack.layer.policy import Action, Member, admit
from unpack.layer.tarstream import EntryKind, TarEntry, TarReader

# errnos that say "the destination cannot take this", not "the image is wrong"
_DESTINATION_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
     errno.EMFILE, errno.ENFILE, errno.ENOMEM}
)  # fmt: skip
_NODE_TYPES = {
    EntryKind.CHARDEV: stat.S_IFCHR,
    EntryKind.BLOCKDEV: stat.S_IFBLK,
    EntryKind.FIFO: stat.S_IFIFO,
}
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Warn = Callable[[str], None]
T = TypeVar("T")


class Applier:
    """Applies layers in order onto one rootfs; call `finish` after the last."""

    def __init__(self, rootfs: Rootfs, *, warn: Warn) -> None:
        self.rootfs = rootfs
        self._meta = MetadataWriter(rootfs, warn)
        # directory inode -> (its path, joined: one string per directory), atime, mtime
        self._dir_times: dict[int, tuple[str, int, int]] = {}
        self._written: dict[int, set[str]] = {}  # directory inode -> names written in it
        self._ancestors: set[int] = set()
        self._fresh: set[int] = set()  # directories this layer made: all in them is its own
        self._lane = FastLane.for_rootfs(rootfs)

    def apply_layer(self, reader: TarReader) -> int:
        """Apply every entry of one layer; return how many entries it had."""
        self._written = {}
        self._ancestors = set()
        self._fresh = set()
        for entry in reader:
            member = admit(entry)
            try:
                self._apply(member, reader)
                if self._lane is not None and member.action is Action.CREATE:
                    for run in self._lane.follow(member, reader):
                        self._note_lane_run(run)
            except OSError as error:
                raise _translate(error, member.path or ".") from None
        return reader.entries

    def finish(self) -> None:
        """Give every directory the times of its last header entry.

        A directory is found again by the path its entry named, and must still be the
        same inode; one named through a symlink that a later entry changed is not
        found, and keeps the time of the run (containerd's archive code, which also
        sets directory times by path at the end, does the same)."""
        by_parent: dict[str, list[tuple[str, int, int, int]]] = {}
        for inode, (path, atime_ns, mtime_ns) in self._dir_times.items():
            parent, _, name = path.rpartition("/")
            by_parent.setdefault(parent, []).append((name, inode, atime_ns, mtime_ns))
        for parent, children in by_parent.items():  # each parent opened once
            try:
                fd = self.rootfs.open_dir(parent.split("/") if parent else ())
            except LayerError:  # a symlink on the way now loops: not those directories
                continue
            if fd is None:
                continue
            try:
                for name, inode, atime_ns, mtime_ns in children:
                    self._set_dir_times(fd, name, inode, (atime_ns, mtime_ns))
            finally:
                os.close(fd)

    @staticmethod
    def _set_dir_times(parent: int, name: str, inode: int, times: tuple[int, int]) -> None:
        """Set the times of `name` in `parent` ("" is `parent` itself), if it is still the
        directory `inode` (never through a symlink)."""
        if not name:
            if os.fstat(parent).st_ino == inode:
                os.utime(parent, ns=times)
            return
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if info.st_ino == inode and stat.S_ISDIR(info.st_mode):
            os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)

    # -- dispatch -------------------------------------------------------------

    def _apply(self, member: Member, reader: TarReader) -> None:
        action = member.action
        if action is Action.CREATE:
            self._note_written(*self._create(member, reader))
        elif action is Action.WHITEOUT:
            self._whiteout(member.parts)
        elif action is Action.OPAQUE:
            top = self.rootfs.open_dir(member.parts)
            if top is not None:
                self._hide_lower_children(top)
        elif action is Action.ROOT:
            root = self.rootfs.fd
            self._meta.chown(member.entry, fd=root)
            self.rootfs.set_root_mode(member.entry.mode)
            self._remember_dir_times(self.rootfs.root_inode, (), *entry_times(member.entry))

    # Same-layer bookkeeping: what this layer wrote, as names per directory inode, and
    # every directory above it, as inodes. Inodes say where things really are, so a
    # path written through a symlinked parent is recognised under any name. A directory
    # the layer made itself holds nothing of lower layers: its names need no record, so
    # the memory this takes grows with what a layer writes into lower layers' directories
    # only (not with a fresh tree of a million files).

    def _note_written(self, parent: int, name: str) -> None:
        parent_inode = self.rootfs.dir_inode(parent)
        if parent_inode in self._fresh:
            return
        self._written.setdefault(parent_inode, set()).add(name)
        if parent_inode not in self._ancestors:
            self._note_ancestors(parent)

    def _note_lane_run(self, run: LaneRun) -> None:
        """Note what one fast-lane run made: like `_note_written` and `_make_dir` do.

        A directory the lane itself just made lies right below one already noted, so
        it joins the ancestors without a walk up."""
        for path, inode, mtime in run.dirs:
            mtime_ns = mtime * 1_000_000_000
            self._remember_dir_times(inode, (*run.parts, *path.split("/")), mtime_ns, mtime_ns)
            self._fresh.add(inode)
        parent_inode = self.rootfs.dir_inode(run.directory)
        if parent_inode in self._fresh:
            return
        self._written.setdefault(parent_inode, set()).update(run.own_names())
        if run.below_previous:
            self._ancestors.add(parent_inode)
        elif parent_inode not in self._ancestors:
            self._note_ancestors(run.directory)

    def _note_ancestors(self, fd: int) -> None:
        """Add directory `fd` and the directories above it, up to the rootfs root."""
        ancestors, root = self._ancestors, self.rootfs.root_inode
        here = -1
        try:
            inode = os.fstat(fd).st_ino
            while inode not in ancestors:
                ancestors.add(inode)
                if inode == root:
                    break
                up = os.open("..", _DIR_NOFOLLOW, dir_fd=fd if here < 0 else here)
                if here >= 0:
                    os.close(here)
                here = up
                inode = os.fstat(here).st_ino
        finally:
            if here >= 0:
                os.close(here)

    def _remove(self, parent: int, name: str, info: os.stat_result) -> None:
        """Remove a name, and forget what was noted of the directories that go with it:
        a directory made later may reuse one of their inodes."""
        for inode in self.rootfs.remove(parent, name, info):
            self._dir_times.pop(inode, None)
            self._written.pop(inode, None)
            self._ancestors.discard(inode)
            self._fresh.discard(inode)

    # -- whiteouts ------------------------------------------------------------

    def _whiteout(self, parts: tuple[str, ...]) -> None:
        parent = self.rootfs.dir_fd(parts[:-1], create=False)
        if parent is None:
            return
        name = parts[-1]
        info = self.rootfs.lstat(parent, name)
        if info is None:
            return
        is_dir = stat.S_ISDIR(info.st_mode)
        parent_inode = self.rootfs.dir_inode(parent)
        written = parent_inode in self._fresh or name in self._written.get(parent_inode, ())
        if written or (is_dir and info.st_ino in self._ancestors):
            # The same layer wrote this path (or below it): only lower content goes.
            if is_dir:
                self._hide_lower_children(os.open(name, _DIR_NOFOLLOW, dir_fd=parent))
            return
        self._remove(parent, name, info)

    def _hide_lower_children(self, top: int) -> None:
        """Remove what lower layers left under directory fd `top`, keeping this layer's.

        Takes ownership of `top` (closes it).
        """
        pending = [top]
        while pending:
            fd = pending.pop()
            try:
                inode = os.fstat(fd).st_ino
                if inode in self._fresh:
                    continue  # made by this layer: nothing of lower layers in it
                with os.scandir(fd) as entries:
                    children = [
                        (c.name, c.is_dir(follow_symlinks=False), c.inode()) for c in entries
                    ]
                written_here = self._written.get(inode, ())
                for name, is_dir, child_inode in children:
                    written = name in written_here
                    if is_dir and (written or child_inode in self._ancestors):
                        pending.append(os.open(name, _DIR_NOFOLLOW, dir_fd=fd))
                    elif not written:
                        info = self.rootfs.lstat(fd, name)
                        if info is not None:
                            self._remove(fd, name, info)
            finally:
                os.close(fd)

    # -- creation -------------------------------------------------------------
    # Each create is tried first; only when the name exists (EEXIST) is it looked
    # at and removed, so the common case costs no lstat.

    def _create(self, member: Member, reader: TarReader) -> tuple[int, str]:
        """Create the member's entry; return its directory fd and name."""
        entry, parts = member.entry, member.parts
        kind = entry.kind
        if kind is EntryKind.HARDLINK:
            return self._hardlink(member)
        rootfs = self.rootfs
        parent = rootfs.dir_fd(parts[:-1], create=True)
        assert parent is not None
        name = parts[-1]
        if kind is EntryKind.FILE:
            self._write_file(entry, reader, parent, name)
        elif kind is EntryKind.DIR:
            self._make_dir(entry, parts, parent, name)
        elif kind is EntryKind.SYMLINK:
            self._replacing(parent, name, lambda: rootfs.symlink(entry.linkname, parent, name))
            self._settle(entry, parent, name, mode=False)
            self._meta.xattrs(entry, dir_fd=parent, name=name, symlink=True)
            rootfs.utime(parent, name, *entry_times(entry))
        else:
            node_type = _NODE_TYPES[kind]
            device = 0 if kind is EntryKind.FIFO else os.makedev(entry.devmajor, entry.devminor)
            mode = node_type | (entry.mode & 0o777)
            self._replacing(parent, name, lambda: rootfs.mknod(parent, name, mode, device))
            self._settle(entry, parent, name, mode=True)
            self._meta.xattrs(entry, dir_fd=parent, name=name)
            rootfs.utime(parent, name, *entry_times(entry))
        return parent, name

    def _replacing(self, parent: int, name: str, create: Callable[[], T]) -> T:
        """Run `create`; if the name exists, remove what is there and run it again."""
        try:
            return create()
        except FileExistsError:
            pass
        info = self.rootfs.lstat(parent, name)
        if info is not None:
            self._remove(parent, name, info)
        return create()

    def _make_dir(self, entry: TarEntry, parts: tuple[str, ...], parent: int, name: str) -> None:
        rootfs = self.rootfs
        fresh = True
        try:
            rootfs.mkdir(parent, name, entry.mode & 0o777)
        except FileExistsError:
            existing = rootfs.lstat(parent, name)
            fresh = existing is not None and not stat.S_ISDIR(existing.st_mode)
            if fresh:
                assert existing is not None
                self._remove(parent, name, existing)
                rootfs.mkdir(parent, name, entry.mode & 0o777)
        info = rootfs.lstat(parent, name)
        assert info is not None
        if fresh:
            self._fresh.add(info.st_ino)
        chown = self.rootfs.owner_differs(info, entry.uid, entry.gid)
        if chown:
            self._meta.chown(entry, dir_fd=parent, name=name)
        if chown or stat.S_IMODE(info.st_mode) != entry.mode:
            rootfs.chmod(parent, name, entry.mode)
        self._meta.xattrs(entry, dir_fd=parent, name=name)
        self._remember_dir_times(info.st_ino, parts, *entry_times(entry))

    def _hardlink(self, member: Member) -> tuple[int, str]:
        rootfs, target = self.rootfs, member.link_parts
        cached = rootfs.dir_fd(target[:-1], create=False)
        source = None if cached is None else rootfs.lstat(cached, target[-1])
        if source is None or cached is None:
            raise LayerError(
                f"hardlink {member.entry.name!r}: target {member.entry.linkname!r} does not exist"
            )
        if stat.S_ISDIR(source.st_mode):
            raise LayerError(f"hardlink {member.entry.name!r}: target is a directory")
        source_dir = os.dup(cached)  # the next dir_fd call may close cached fds
        try:
            parent = rootfs.dir_fd(member.parts[:-1], create=True)
            assert parent is not None
            name = member.parts[-1]
            try:
                rootfs.link(source_dir, target[-1], parent, name)
                return parent, name
            except FileExistsError:
                existing = rootfs.lstat(parent, name)
            if existing is not None:
                if (existing.st_dev, existing.st_ino) == (source.st_dev, source.st_ino):
                    return parent, name
                self._remove(parent, name, existing)
            rootfs.link(source_dir, target[-1], parent, name)
            return parent, name
        finally:
            os.close(source_dir)

    def _write_file(self, entry: TarEntry, reader: TarReader, parent: int, name: str) -> None:
        rootfs = self.rootfs
        fd = self._replacing(
            parent, name, lambda: rootfs.create_file(parent, name, entry.mode & 0o777)
        )
        try:
            if entry.sparse is None:
                for chunk in reader.data():
                    _write_all(fd, chunk)
            else:
                _write_sparse(fd, entry.sparse, reader.data())
                os.ftruncate(fd, entry.size)
            made = os.fstat(fd)  # what the kernel gave: a parent's group, an ACL's mask, ...
            if self._meta.needs_chown(entry, made):
                self._meta.chown(entry, fd=fd)
            if stat.S_IMODE(made.st_mode) != entry.mode:
                os.fchmod(fd, entry.mode)
            if entry.xattrs:
                self._meta.xattrs(entry, fd=fd)
            os.utime(fd, ns=entry_times(entry))
        finally:
            os.close(fd)

    def _settle(self, entry: TarEntry, parent: int, name: str, *, mode: bool) -> None:
        """Owner (and `mode`) of a name just made, where the kernel did not give the entry's."""
        made = self.rootfs.lstat(parent, name)
        assert made is not None
        if self._meta.needs_chown(entry, made):
            self._meta.chown(entry, dir_fd=parent, name=name)
        if mode and stat.S_IMODE(made.st_mode) != entry.mode:
            self.rootfs.chmod(parent, name, entry.mode)

    def _remember_dir_times(
        self, inode: int, parts: tuple[str, ...], atime_ns: int, mtime_ns: int
    ) -> None:
        """Note the times directory `parts` gets at the end (the last header's win)."""
        self._dir_times[inode] = ("/".join(parts), atime_ns, mtime_ns)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_sparse(
    fd: int, segments: tuple[tuple[int, int], ...], data: Iterator[memoryview]
) -> None:
    """Write each stored segment at its offset, leaving holes between them."""
    pending = memoryview(b"")
    for offset, length in segments:
        os.lseek(fd, offset, os.SEEK_SET)
        while length:
            if not pending:
                pending = memoryview(next(data, b""))
                if not pending:
                    raise LayerError("sparse file: stored data shorter than its map")
            piece = pending[:length]
            _write_all(fd, piece)
            length -= len(piece)
            pending = pending[len(piece) :]


def _translate(error: OSError, path: str) -> FilesystemError | LayerError:
    message = f"rootfs/{path}: {error.strerror or error}"
    if error.errno in _DESTINATION_ERRNOS:
        return FilesystemError(message)
    return LayerError(message)
