"""The bundle directory: built under a temporary name, moved into place when complete.

An interrupted or failed run never leaves at DIR something that looks like a
finished bundle:

- DIR does not exist: the bundle is built in a sibling `.NAME.oci-unpack-PID-RANDOM`
  and renamed to DIR;
- DIR is an empty directory (`oci-unpack IMAGE .` included): it keeps its inode, so a
  shell standing in it stays there. The bundle is built in `DIR/.oci-unpack-PID-RANDOM`,
  then `rootfs` and `config.json` are renamed into DIR (`config.json` last: a runtime
  needs it, so DIR is never a bundle before it is whole), and the temporary directory
  goes.

A later run for the same DIR removes temporary directories whose process is gone
(e.g. after SIGKILL).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable

from unpack.errors import FilesystemError, UsageError
from unpack.fs.rootfs import remove_tree

_MARK = ".oci-unpack-"
_SLOW_DISCARD = 0.5  # seconds: past this, removing the partial bundle is announced
CONTENTS = ("rootfs", "config.json")  # moved into an existing DIR in this order


def check_dest(dest: str) -> None:
    """A usage error for a DIR that cannot name a bundle (checked before any fetch)."""
    if not dest:
        raise UsageError("DIR is empty: give the bundle directory's path")


class BundleDir:
    """A bundle under construction at `path`; `commit` presents it at DIR, else it is
    removed (`discard`)."""

    def __init__(self, dest: str, on_slow_discard: Callable[[], None] | None = None) -> None:
        check_dest(dest)
        self.dest = os.path.abspath(dest)
        self._shown = dest
        self._on_slow_discard = on_slow_discard
        parent, base = os.path.split(self.dest)
        if not base:
            raise UsageError(f"{dest}: not a usable bundle directory name")
        self.in_place = self._check_destination(parent)
        # in place: DIR/.oci-unpack-…; else: PARENT/.NAME.oci-unpack-…
        self.parent = self.dest if self.in_place else parent
        self._prefix = _MARK if self.in_place else f".{base[:100]}{_MARK}"
        self._remove_stale()
        if self.in_place and os.listdir(self.dest):
            raise FilesystemError(f"{dest}: exists and is not empty")
        self.name = f"{self._prefix}{os.getpid()}-{os.urandom(4).hex()}"
        self.path = os.path.join(self.parent, self.name)
        try:
            os.mkdir(self.path, 0o700)
        except OSError as error:
            raise FilesystemError(f"{dest}: cannot create the bundle there "
                                  f"({error.strerror})") from None
        self.committed = False

    def __enter__(self) -> BundleDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()

    def _check_destination(self, parent: str) -> bool:
        """Whether DIR exists (as a directory: the bundle is made in place)."""
        if not os.path.isdir(parent):
            raise FilesystemError(f"{self._shown}: parent directory {parent} does not exist")
        try:
            info = os.lstat(self.dest)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode):
            raise FilesystemError(f"{self._shown}: exists and is not a directory")
        return True

    def _remove_stale(self) -> None:
        """Remove temporary bundles for the same DIR left by dead processes."""
        for name in os.listdir(self.parent):
            if not name.startswith(self._prefix):
                continue
            pid_text = name[len(self._prefix) :].split("-", 1)[0]
            if pid_text.isdigit() and not _alive(int(pid_text)):
                self._remove(name)

    def _remove(self, name: str) -> None:
        """Remove one of our temporary names; whatever it is, nothing it points to."""
        fd = os.open(self.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                remove_tree(fd, name)
            else:
                os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise FilesystemError(
                f"{os.path.join(self.parent, name)}: cannot remove ({error.strerror})"
            ) from None
        finally:
            os.close(fd)

    def commit(self) -> None:
        """Present the finished bundle at DIR."""
        moved: list[str] = []
        try:
            if self.in_place:
                for name in CONTENTS:
                    if os.path.lexists(os.path.join(self.path, name)):
                        os.rename(os.path.join(self.path, name), os.path.join(self.dest, name))
                        moved.append(name)
                os.rmdir(self.path)
            else:
                os.rename(self.path, self.dest)
        except OSError as error:
            for name in moved:  # back where `discard` removes it: DIR is left as it was
                os.rename(os.path.join(self.dest, name), os.path.join(self.path, name))
            raise FilesystemError(f"{self._shown}: cannot move the bundle into place "
                                  f"({error.strerror})") from None
        self.committed = True

    def allow_traversal(self) -> None:
        """Let other users (a mapped container root) pass through to DIR/rootfs."""
        os.chmod(self.path, 0o711)
        if self.in_place:
            os.chmod(self.dest, stat.S_IMODE(os.stat(self.dest).st_mode) | 0o011)

    def discard(self) -> None:
        """Remove the temporary bundle (`on_slow_discard` is called if it takes long)."""
        timer = None
        if self._on_slow_discard is not None:
            timer = threading.Timer(_SLOW_DISCARD, self._on_slow_discard)
            timer.daemon = True
            timer.start()
        try:
            self._remove(self.name)
        finally:
            if timer is not None:
                timer.cancel()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
