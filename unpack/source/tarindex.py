"""Random access to the members of a tar archive, compressed or not, without extracting it.

An archive is scanned once for its member headers (name → data offset and
size); a member is then read by seeking to its offset in a view of the
archive's uncompressed bytes (`unpack.source.seekable`: `pread` for a plain
tar, inflater checkpoints for gzip, a restart for zstd).
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from unpack.errors import ImageError
from unpack.image.compression import Compression, sniff, unsupported
from unpack.source.seekable import READ_SIZE, open_view

_MAX_LINK_HOPS = 8



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
            self._file: BinaryIO = open_view(self._fd, self.compression, self.path)
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

    def _sniff(self) -> Compression:
        head = os.pread(self._fd, 8, 0)
        name = unsupported(head)
        if name is not None:
            raise ImageError(
                f"{self.path}: {name}-compressed archives are not supported "
                "(use an uncompressed, gzip or zstd tar)"
            )
        return sniff(head)

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
    if sniff(head) is not Compression.NONE or unsupported(head) is not None:
        return True
    return len(head) == 512 and (head[257:262] == b"ustar" or _plausible_v7(head))
