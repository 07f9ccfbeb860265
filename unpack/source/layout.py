"""An OCI image layout directory (`oci-layout`, `index.json`, `blobs/ALG/HEX`).

Blobs are opened without following symlinks at any step below the layout
directory: a blob that is a symlink (say, to /etc/passwd) is refused.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

from unpack.errors import ImageError
from unpack.image.descriptor import Descriptor
from unpack.image.documents import MAX_DOCUMENT_SIZE, MAX_INDEX_SIZE, Index, parse_json_object
from unpack.source.base import SourceBase
from unpack.verify import verified, verify_bytes

READ_SIZE = 1 << 20
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def check_layout_file(data: bytes, where: str) -> None:
    """The `oci-layout` file: a JSON object with an `imageLayoutVersion` 1.x."""
    version = parse_json_object(data, where).get("imageLayoutVersion")
    if not isinstance(version, str) or not version.startswith("1."):
        raise ImageError(f"{where}: unsupported imageLayoutVersion {version!r}")


class Layout(SourceBase):
    """A layout directory opened for reading; use as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise ImageError(f"{path}: cannot open image layout ({error.strerror})") from None
        self._checked(lambda: check_layout_file(self._read_file("oci-layout", 1 << 16),
                                                os.path.join(path, "oci-layout")))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def index(self) -> Index:
        """The top-level `index.json`."""
        where = os.path.join(self.path, "index.json")
        return Index.parse(self._read_file("index.json", MAX_INDEX_SIZE), where)

    def _read_file(self, name: str, limit: int) -> bytes:
        where = os.path.join(self.path, name)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self._fd)
        except OSError as error:
            raise ImageError(f"{where}: {_reason(error)}: not an OCI image layout") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError(f"{where}: not a regular file: not an OCI image layout")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"{where}: larger than {limit} bytes")
        return data

    def blob_name(self, descriptor: Descriptor) -> str:
        """The blob's path, for messages."""
        digest = descriptor.digest
        return os.path.join(self.path, "blobs", digest.algorithm, digest.hex)

    def _open_blob(self, descriptor: Descriptor) -> int:
        digest = descriptor.digest
        fds: list[int] = []
        try:
            try:
                fds.append(os.open("blobs", _NOFOLLOW_DIR, dir_fd=self._fd))
                fds.append(os.open(digest.algorithm, _NOFOLLOW_DIR, dir_fd=fds[-1]))
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                blob = os.open(digest.hex, flags, dir_fd=fds[-1])
            except OSError as error:
                raise ImageError(
                    f"blob {digest} ({descriptor.media_type}): {_reason(error)} "
                    f"at {self.blob_name(descriptor)}"
                ) from None
        finally:
            for fd in fds:
                os.close(fd)
        if not stat.S_ISREG(os.fstat(blob).st_mode):
            os.close(blob)
            raise ImageError(f"blob {digest}: {self.blob_name(descriptor)} is not a regular file")
        os.set_blocking(blob, True)
        return blob

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        """Stream a blob in chunks, verified against the descriptor's size and digest.

        `observe` is told the length of each chunk read (for progress bars).
        """
        fd = self._open_blob(descriptor)
        return verified(
            _read_chunks(fd, observe),
            descriptor.digest,
            descriptor.size,
            f"blob {descriptor.digest} ({descriptor.media_type})",
        )

    def read_document(self, descriptor: Descriptor, what: str) -> bytes:
        """Read and verify a small blob (index, manifest or config)."""
        where = f"{what} {descriptor.digest}"
        if descriptor.size > MAX_DOCUMENT_SIZE:
            raise ImageError(f"{where}: descriptor size {descriptor.size} is implausibly large")
        fd = self._open_blob(descriptor)
        with os.fdopen(fd, "rb") as file:
            data = file.read(descriptor.size + 1)
        return verify_bytes(data, descriptor.digest, descriptor.size, where)


def _read_chunks(fd: int, observe: Callable[[int], None] | None) -> Iterator[bytes]:
    try:
        while chunk := os.read(fd, READ_SIZE):
            if observe is not None:
                observe(len(chunk))
            yield chunk
    finally:
        os.close(fd)


def _reason(error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return "missing"
    if error.errno in (errno.ELOOP, errno.ENOTDIR):
        return "is a symlink or not in a directory (refused)"
    return error.strerror or str(error)
