"""The bundle directory: built in a temporary sibling of DIR, renamed into place.

An interrupted or failed run never leaves something at DIR that looks like
a finished bundle. Temporary directories are named
`.NAME.oci-unpack-PID-RANDOM`; a later run for the same DIR removes those
whose process is gone (e.g. after SIGKILL).
"""

from __future__ import annotations

import os
import secrets
import signal
import stat

from unpack.errors import FilesystemError
from unpack.fs.rootfs import remove_tree

_MARK = ".oci-unpack-"


class BundleDir:
    """A bundle under construction; `commit` presents it at DIR, otherwise it is removed."""

    def __init__(self, dest: str) -> None:
        self.dest = os.path.abspath(dest)
        self.parent, base = os.path.split(self.dest)
        if not base:
            raise FilesystemError(f"{dest}: not a usable bundle directory name")
        self._prefix = f".{base[:100]}{_MARK}"
        self._check_destination(dest)
        self._remove_stale()
        self.name = f"{self._prefix}{os.getpid()}-{secrets.token_hex(4)}"
        self.path = os.path.join(self.parent, self.name)
        try:
            os.mkdir(self.path, 0o700)
        except OSError as error:
            raise FilesystemError(f"{self.path}: cannot create ({error.strerror})") from None
        self.committed = False

    def __enter__(self) -> BundleDir:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.committed:
            self.discard()

    def _check_destination(self, dest: str) -> None:
        if not os.path.isdir(self.parent):
            raise FilesystemError(f"{dest}: parent directory {self.parent} does not exist")
        try:
            info = os.lstat(self.dest)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):
            raise FilesystemError(f"{dest}: exists and is not a directory")
        if os.listdir(self.dest):
            raise FilesystemError(f"{dest}: exists and is not empty")

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
        """Rename the finished bundle to DIR (replacing an empty DIR)."""
        try:
            if os.path.isdir(self.dest):
                os.rmdir(self.dest)
            os.rename(self.path, self.dest)
        except OSError as error:
            raise FilesystemError(f"{self.dest}: cannot move the bundle into place "
                                  f"({error.strerror})") from None
        self.committed = True

    def discard(self) -> None:
        """Remove the temporary bundle, ignoring SIGINT/SIGTERM meanwhile."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._remove(self.name)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
