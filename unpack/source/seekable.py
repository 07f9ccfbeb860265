"""Read-only, seekable views of an archive file's bytes, compressed or not.

A plain file is read with `pread`, so views never share a file position. A
gzip stream cannot be seeked, so while it is inflated the first time the view
keeps *checkpoints*: every `CHECKPOINT_SPACING` uncompressed bytes, a copy of
the inflater's state (zlib's `Decompress.copy()`: its 32 KiB window and bit
position) with the compressed offset it had reached. A seek restores the last
checkpoint before the target and inflates from there — the zran technique,
with no temporary copy of the file. zstd decompressors cannot be copied, so a
zstd view is re-read from its start for each backward seek.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

from unpack.errors import ImageError
from unpack.image.compression import Compression

READ_SIZE = 1 << 20
#: Uncompressed bytes between two gzip checkpoints: the most ever inflated only to skip.
CHECKPOINT_SPACING = 8 << 20
_IN_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 20


def open_view(fd: int, compression: Compression, what: str) -> BinaryIO:
    """A seekable view of the decompressed bytes of `fd`."""
    if compression is Compression.GZIP:
        return _Gunzipped(fd, what)  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        return _Unzstd(fd, what)  # type: ignore[return-value]
    return _Plain(fd)  # type: ignore[return-value]


class _ReadOnlySeekable(io.RawIOBase):
    """A read-only raw file over an fd, with its own position (`_pos`)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0  # the position read() starts at

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos


class _Decompressed(_ReadOnlySeekable):
    """A read-only, seekable view of a compressed file's decompressed bytes."""

    def __init__(self, fd: int, what: str) -> None:
        super().__init__(fd)
        self.what = what
        self._stream_pos = 0  # the uncompressed offset of _pending[0]
        self._pending = b""
        self._at_eof = False

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence != io.SEEK_SET:
            raise OSError("seek from the end of a compressed archive is not supported")
        if offset < 0:
            raise OSError("negative seek position")
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        """Read up to `size` bytes (exactly that many unless the end comes first)."""
        if size is None or size < 0:
            raise OSError("unbounded read of a compressed archive")
        self._move_to(self._pos)
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            if not self._pending and not self._fill():
                break
            part = self._pending[:wanted]
            self._pending = self._pending[len(part):]
            self._stream_pos += len(part)
            parts.append(part)
            wanted -= len(part)
        data = b"".join(parts)
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    # -- positioning
    def _move_to(self, target: int) -> None:
        if target < self._stream_pos:
            self._rewind(target)
        else:
            self._jump_ahead(target)
        while self._stream_pos < target:
            if not self._pending and not self._fill():
                return  # past the end: reads return nothing
            step = min(len(self._pending), target - self._stream_pos)
            self._pending = self._pending[step:]
            self._stream_pos += step

    def _fill(self) -> bool:
        """Decompress more into `_pending`; False at the end of the data."""
        while not self._at_eof:
            data = self._produce()
            if data:
                self._pending = data
                return True
        return False

    # -- for subclasses
    def _produce(self) -> bytes:
        """The next decompressed bytes (possibly empty); set `_at_eof` at the end."""
        raise NotImplementedError

    def _rewind(self, target: int) -> None:
        """Restart decompression at some position at or before `target`."""
        raise NotImplementedError

    def _jump_ahead(self, target: int) -> None:
        """Optionally skip forward to a known position at or before `target`."""

    def _pread(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)


@dataclass(frozen=True)
class _Checkpoint:
    out_pos: int
    in_pos: int
    inflater: zlib._Decompress
    tail: bytes


class _Gunzipped(_Decompressed):
    """gzip (one or more members), seekable through inflater checkpoints."""

    def __init__(self, fd: int, what: str) -> None:
        super().__init__(fd, what)
        self._in_pos = 0
        self._tail = b""
        self._inflater = zlib.decompressobj(31)
        self._checkpoints: list[_Checkpoint] = [_Checkpoint(0, 0, self._inflater.copy(), b"")]
        self._positions = [0]

    def _produce(self) -> bytes:
        if not self._tail:
            self._tail = self._pread(self._in_pos, _IN_CHUNK)
            self._in_pos += len(self._tail)
            if not self._tail:
                self._at_eof = True
                if not self._inflater.eof:
                    raise ImageError(f"{self.what}: the gzip stream is truncated")
                return b""
        if self._inflater.eof:  # another gzip member follows (or trailing zero padding)
            if not self._tail.strip(b"\0"):
                self._tail = b""
                return b""
            self._inflater = zlib.decompressobj(31)
        try:
            data = self._inflater.decompress(self._tail, _OUT_CHUNK)
        except zlib.error as error:
            raise ImageError(f"{self.what}: corrupt gzip data ({error})") from None
        inflater = self._inflater
        self._tail = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
        end = self._stream_pos + len(self._pending) + len(data)
        if end - self._positions[-1] >= CHECKPOINT_SPACING:
            self._checkpoints.append(_Checkpoint(end, self._in_pos, inflater.copy(), self._tail))
            self._positions.append(end)
        return data

    def _restore(self, checkpoint: _Checkpoint) -> None:
        self._inflater = checkpoint.inflater.copy()
        self._in_pos, self._tail = checkpoint.in_pos, checkpoint.tail
        self._stream_pos, self._pending, self._at_eof = checkpoint.out_pos, b"", False

    def _rewind(self, target: int) -> None:
        self._restore(self._checkpoints[bisect.bisect_right(self._positions, target) - 1])

    def _jump_ahead(self, target: int) -> None:
        index = bisect.bisect_right(self._positions, target) - 1
        if self._positions[index] > self._stream_pos + len(self._pending):
            self._restore(self._checkpoints[index])


class _Unzstd(_Decompressed):
    """zstd (one or more frames); a backward seek starts again from the beginning."""

    def __init__(self, fd: int, what: str) -> None:
        super().__init__(fd, what)
        self._reader = self._open()

    def _open(self) -> Any:
        import zstandard  # only for zstd archives

        raw = os.fdopen(os.dup(self._fd), "rb")  # shares the file offset: start over
        raw.seek(0)
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=_IN_CHUNK, read_across_frames=True, closefd=True
        )

    def _produce(self) -> bytes:
        import zstandard

        try:
            data = self._reader.read(_OUT_CHUNK)
        except zstandard.ZstdError as error:
            raise ImageError(f"{self.what}: corrupt zstd data ({error})") from None
        if not data:
            self._at_eof = True
        return data

    def _rewind(self, target: int) -> None:
        self._reader.close()
        self._reader = self._open()
        self._stream_pos, self._pending, self._at_eof = 0, b"", False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._reader.close()
        super().close()


class _Plain(_ReadOnlySeekable):
    """An uncompressed file, read with pread (no shared file position)."""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._pos
        elif whence == io.SEEK_END:
            offset += os.fstat(self._fd).st_size
        self._pos = max(offset, 0)
        return self._pos

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            size = max(os.fstat(self._fd).st_size - self._pos, 0)
        parts = []
        while size > 0:
            data = os.pread(self._fd, min(size, READ_SIZE), self._pos)
            if not data:
                break
            parts.append(data)
            self._pos += len(data)
            size -= len(data)
        return b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
