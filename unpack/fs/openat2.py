"""`openat2(2)` through ctypes, for `RESOLVE_IN_ROOT` path resolution (Linux 5.6+)."""

from __future__ import annotations

import ctypes
import errno
import functools
import os

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# openat2 has the same number on every architecture (the unified syscall table).
_SYS_OPENAT2 = 437
_RETRIES = 16


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


@functools.cache
def _syscall() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    libc = ctypes.CDLL(None, use_errno=True)
    function = libc.syscall
    function.restype = ctypes.c_long
    function.argtypes = (
        ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t
    )  # fmt: skip
    return function


def openat2(dir_fd: int, path: str | bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """Open `path` relative to `dir_fd` with `resolve` flags; raise OSError on failure.

    The kernel answers EAGAIN when a concurrent rename might have raced the
    resolution; that is retried a few times.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    encoded = os.fsencode(path)
    call = _syscall()
    for _ in range(_RETRIES):
        fd = call(_SYS_OPENAT2, dir_fd, encoded, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code), os.fsdecode(encoded))
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), os.fsdecode(encoded))


@functools.cache
def available() -> bool:
    """Whether this kernel (and seccomp policy) offers openat2 with RESOLVE_IN_ROOT."""
    try:
        fd = openat2(-100, "/", os.O_PATH | os.O_DIRECTORY, RESOLVE_IN_ROOT)  # AT_FDCWD
    except (OSError, AttributeError):
        return False
    os.close(fd)
    return True
