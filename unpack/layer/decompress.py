"""Layer decompression: chosen by media type, confirmed by magic bytes (`image.compression`).

Every decompressor here is a generator from compressed chunks to
decompressed chunks of at most `CHUNK_SIZE` bytes, so a small blob that
expands enormously (a gzip bomb) never occupies more than one chunk.
gzip goes through ISA-L (`isal`), zstd through `zstandard`; both accept
concatenated members/frames. Each library is imported when a layer of its kind is
first read (zstandard alone costs more than a bare interpreter start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from unpack.errors import LayerError
from unpack.image.compression import GZIP_MAGIC, ZSTD_MAGIC, Compression, sniff
from unpack.layer.zstdframes import ZstdFrameWalker

CHUNK_SIZE = 1 << 20


def decompressed(
    chunks: Iterable[bytes | memoryview], expected: Compression, what: str
) -> Iterator[bytes | memoryview]:
    """Decompress `chunks` as `expected`, after checking the magic bytes agree."""
    source = iter(chunks)
    head = b""
    for chunk in source:
        head += bytes(chunk)
        if len(head) >= len(ZSTD_MAGIC):
            break
    actual = sniff(head)
    if actual is not expected:
        raise LayerError(
            f"{what}: media type says {expected.value} but the content is {actual.value}"
        )
    stream = _chain(head, source)
    if expected is Compression.GZIP:
        return _gunzip(stream, what)
    if expected is Compression.ZSTD:
        return _unzstd(stream, what)
    return stream


def _chain(head: bytes, rest: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    if head:
        yield head
    yield from rest


def _gunzip(chunks: Iterator[bytes | memoryview], what: str) -> Iterator[bytes]:
    """Inflate one or more concatenated gzip members; anything else is an error."""
    from isal import igzip_lib

    inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
    member_started = False
    try:
        for chunk in chunks:
            data = chunk
            while data or member_started:
                member_started = True
                out = inflater.decompress(data, CHUNK_SIZE)
                if out:
                    yield out
                if inflater.eof:
                    data = inflater.unused_data
                    inflater = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)
                    member_started = False
                    if data and not GZIP_MAGIC.startswith(bytes(data[:2])):
                        raise LayerError(f"{what}: data after the end of the gzip stream")
                elif inflater.needs_input:
                    break
                else:
                    data = b""
    except igzip_lib.IsalError as error:
        raise LayerError(f"{what}: corrupt gzip stream ({error})") from None
    if member_started:
        raise LayerError(f"{what}: truncated gzip stream")


def _unzstd(chunks: Iterator[bytes | memoryview], what: str) -> Iterator[bytes]:
    """Decompress one or more concatenated zstd frames in bounded output chunks."""
    import zstandard

    walker = ZstdFrameWalker(what)
    reader = zstandard.ZstdDecompressor().stream_reader(
        _ChunkReader(chunks, walker.feed), read_size=CHUNK_SIZE, read_across_frames=True
    )
    try:
        while out := reader.read(CHUNK_SIZE):
            yield out
    except zstandard.ZstdError as error:
        raise LayerError(f"{what}: corrupt zstd stream ({error})") from None
    walker.check_complete()


class _ChunkReader:
    """A minimal file-like `read(n)` over chunks (for zstandard), showing each to `observe`."""

    def __init__(
        self, chunks: Iterator[bytes | memoryview], observe: Callable[[memoryview], None]
    ) -> None:
        self._chunks = chunks
        self._observe = observe
        self._pending = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            for chunk in self._chunks:
                if len(chunk):
                    self._pending = memoryview(chunk)
                    self._observe(self._pending)
                    break
            else:
                return b""
        if size < 0 or size >= len(self._pending):
            out, self._pending = self._pending, memoryview(b"")
        else:
            out, self._pending = self._pending[:size], self._pending[size:]
        return bytes(out)
