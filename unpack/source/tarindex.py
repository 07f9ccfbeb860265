"""Random access to the members of a tar archive, compressed or not, without extracting it.

An archive is scanned once for its member headers (name → data offset and
size); a member is then read by seeking to its offset. A plain tar is read
with `pread`. A gzip-compressed tar cannot be seeked, so while the scan
inflates it once, it keeps *checkpoints*: every `CHECKPOINT_SPACING`
uncompressed bytes, a copy of the inflater's state (zlib's
`Decompress.copy()`: its 32 KiB window and bit position) with the
compressed offset it had reached. Reading a member restores the last
checkpoint before it and inflates from there — the zran technique, with
no temporary copy of the archive. zstd decompressors cannot be copied, so
a zstd-compressed tar is re-read from its start for each backward seek.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from unpack.errors import ImageError

READ_SIZE = 1 << 20
#: Uncompressed bytes between two gzip checkpoints: the most ever inflated only to skip.
CHECKPOINT_SPACING = 8 << 20
_IN_CHUNK = 1 << 16
_OUT_CHUNK = 1 << 20
_MAX_LINK_HOPS = 8

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


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

    def _open(self) -> zstandard.ZstdDecompressionReader:
        raw = os.fdopen(os.dup(self._fd), "rb")  # shares the file offset: start over
        raw.seek(0)
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=_IN_CHUNK, read_across_frames=True, closefd=True
        )

    def _produce(self) -> bytes:
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


@dataclass(frozen=True)
class Member:
    """One member of the archive: a file's data, or a link to another member."""

    name: str
    offset: int
    size: int
    link: str | None = None  # the normalised member a hard or symbolic link points to


def normalise(name: str) -> str:
    """A member name as looked up: no leading `./` or `/`, no `.` components."""
    name = posixpath.normpath("/" + name).lstrip("/")
    return "" if name == "." else name


class TarIndex:
    """The members of a tar archive (plain, gzip or zstd) by name; use as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise ImageError(f"{path}: cannot open archive ({error.strerror})") from None
        try:
            self.compression = self._sniff()
            self._file: BinaryIO = self._view()
            self.members = self._scan()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TarIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _sniff(self) -> str:
        head = os.pread(self._fd, 8, 0)
        if head.startswith(GZIP_MAGIC):
            return "gzip"
        if head.startswith(ZSTD_MAGIC):
            return "zstd"
        for magic, name in _UNSUPPORTED_MAGIC.items():
            if head.startswith(magic):
                raise ImageError(
                    f"{self.path}: {name}-compressed archives are not supported "
                    "(use an uncompressed, gzip or zstd tar)"
                )
        return "none"

    def _view(self) -> BinaryIO:
        if self.compression == "gzip":
            return _Gunzipped(self._fd, self.path)  # type: ignore[return-value]
        if self.compression == "zstd":
            return _Unzstd(self._fd, self.path)  # type: ignore[return-value]
        return _Plain(self._fd)  # type: ignore[return-value]

    def _scan(self) -> dict[str, Member]:
        head = self._read_at(0, 512)
        if len(head) < 512 or (head[257:262] != b"ustar" and not _plausible_v7(head)):
            raise ImageError(f"{self.path}: not a tar archive")
        members: dict[str, Member] = {}
        self._file.seek(0)  # tarfile starts where the file is
        try:
            with tarfile.open(fileobj=self._file, mode="r:") as tar:
                for info in tar:
                    name = normalise(info.name)
                    if not name:
                        continue
                    if info.isreg():
                        members[name] = Member(name, info.offset_data, info.size)
                    elif info.issym():
                        target = normalise(posixpath.join(posixpath.dirname(name), info.linkname))
                        members[name] = Member(name, 0, 0, target)
                    elif info.islnk():
                        members[name] = Member(name, 0, 0, normalise(info.linkname))
                    else:
                        members.pop(name, None)
        except tarfile.TarError as error:
            raise ImageError(f"{self.path}: not a readable tar archive ({error})") from None
        return members

    def _read_at(self, offset: int, size: int) -> bytes:
        self._file.seek(offset)
        return self._file.read(size)

    def find(self, name: str) -> Member | None:
        """The regular-file member `name` names, following links inside the archive."""
        member = self.members.get(normalise(name))
        hops = 0
        while member is not None and member.link is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ImageError(f"{self.path}: {name}: too many links inside the archive")
            member = self.members.get(member.link)
        return member

    def member(self, name: str, what: str) -> Member:
        """Like `find`, but a missing member is an ImageError naming `what`."""
        member = self.find(name)
        if member is None:
            raise ImageError(f"{self.path}: {what} {name!r} is missing from the archive")
        return member

    def read(self, member: Member, limit: int, what: str) -> bytes:
        """A small member's whole content (at most `limit` bytes)."""
        if member.size > limit:
            raise ImageError(f"{self.path}: {what} {member.name!r} is larger than {limit} bytes")
        data = self._read_at(member.offset, member.size)
        if len(data) != member.size:
            raise ImageError(f"{self.path}: {what} {member.name!r} is truncated")
        return data

    def head(self, member: Member, size: int) -> bytes:
        """The first `size` bytes of a member (fewer if it is shorter)."""
        return self._read_at(member.offset, min(size, member.size))

    def chunks(
        self, member: Member, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        """A member's content in chunks; a truncated archive just ends early.

        Each chunk is read at its own offset, so two streams may interleave.
        """
        position, end = member.offset, member.offset + member.size
        while position < end:
            data = self._read_at(position, min(READ_SIZE, end - position))
            if not data:
                return
            position += len(data)
            if observe is not None:
                observe(len(data))
            yield data


def _plausible_v7(head: bytes) -> bool:
    """A pre-POSIX tar header: a name, and a checksum field that adds up."""
    try:
        stored = int(head[148:156].split(b"\0")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    actual = sum(head[:148]) + 8 * 32 + sum(head[156:512])
    return head[0] != 0 and stored == actual


def sniff_archive(path: str) -> bool:
    """Whether the file at `path` looks like a tar archive (plain, gzip or zstd)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = os.pread(fd, 512, 0)
    finally:
        os.close(fd)
    if head.startswith((GZIP_MAGIC, ZSTD_MAGIC)) or any(
        head.startswith(m) for m in _UNSUPPORTED_MAGIC
    ):
        return True
    return len(head) == 512 and (head[257:262] == b"ustar" or _plausible_v7(head))
