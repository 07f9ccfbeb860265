"""One layer as a stream of verified tar entries: the layer pipeline, owned here.

    blob (size + digest) → decompress (gzip / zstd / none) → count → diff_id → tar entries

For a compressed layer, reading and hashing the blob, decompressing, and
hashing the result each run in a thread of their own, joined by bounded
queues (`unpack.prefetch`), so the three overlap with the applier's work on
the main thread. An uncompressed layer whose digest is its diff_id is hashed
once. Memory stays bounded: a few chunks wait between the stages.

Errors name the layer (`layer 2/6 sha256:68f3…`). When decompression or the
tar reader fails, the rest of the blob is read and hashed first: a blob that
does not match its digest is reported as that, the real cause, rather than
as the broken gzip or tar it makes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from types import TracebackType

from unpack.errors import ImageError, NetworkError, VerificationError
from unpack.image.compression import Compression
from unpack.image.resolve import Layer
from unpack.image.store import Source
from unpack.layer.decompress import decompressed
from unpack.layer.tarstream import TarReader
from unpack.prefetch import prefetched
from unpack.verify import verified


class LayerStream:
    """`with LayerStream(...) as entries:` the layer's `TarReader`, verified as it is read."""

    def __init__(self, source: Source, layer: Layer, label: str,
                 observe: Callable[[int], None] | None = None) -> None:
        self.label = label
        self.uncompressed_size = 0
        self._source = source
        self._blob = _Drainable(source.blob_chunks(layer.descriptor, observe))
        self.entries = TarReader(prefetched(self._plain(layer), abort=source.abort))

    def _plain(self, layer: Layer) -> Iterator[bytes | memoryview]:
        """The uncompressed stream, checked against the diff_id at its end."""
        compressed = layer.compression is not Compression.NONE
        blob: Iterator[bytes | memoryview] = (
            prefetched(self._blob, abort=self._source.abort) if compressed else self._blob)
        plain = self._counted(decompressed(blob, layer.compression, self.label))
        if not compressed and layer.diff_id == layer.descriptor.digest:
            return plain  # the blob check already hashes exactly these bytes
        if compressed:
            plain = prefetched(plain, abort=self._source.abort)
        return verified(plain, layer.diff_id, None,
                        f"{self.label}: uncompressed content (diff_id)")

    def _counted(self, chunks: Iterator[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        for chunk in chunks:
            self.uncompressed_size += len(chunk)
            yield chunk

    def __enter__(self) -> TarReader:
        return self.entries

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            if error is not None and not isinstance(error, ImageError):
                self._source.abort()  # a stage blocked on the network must not be waited for
            self.entries.close()  # stop the pipeline's threads before reading on
            if isinstance(error, VerificationError | NetworkError):
                raise type(error)(_labelled(self.label, error)) from None
            if isinstance(error, ImageError):  # a broken stream: is the blob itself wrong?
                mismatch = self._blob.drain()
                if mismatch is not None:
                    raise VerificationError(_labelled(self.label, mismatch)) from None
                raise type(error)(_labelled(self.label, error)) from None
        finally:
            self._blob.release()


def _labelled(label: str, error: BaseException) -> str:
    """The message, naming the layer unless it names one already (a layer fetched ahead
    names itself when it fails while another is applied)."""
    message = str(error)
    if _NAMES_A_LAYER.match(message):
        return message
    digest = label.rpartition(" ")[2]
    if message.startswith(f"blob {digest} "):  # the label names it already
        message = "blob " + message[len(f"blob {digest} "):]
    return f"{label}: {message}"


_NAMES_A_LAYER = re.compile(r"layer \d+/\d+ ")


class _Drainable:
    """The blob's verified chunks; after a failure downstream, the rest can still be read.

    It has no `close` for `prefetched` to call when the pipeline stops: the
    stream closes it itself, after `drain` if it was needed.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._failure: VerificationError | None = None

    def __iter__(self) -> _Drainable:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except VerificationError as error:  # kept: a stage downstream may fail before it hears
            self._failure = error
            raise

    def drain(self) -> VerificationError | None:
        """Read what is left of the blob; the verification error it ends with, if any."""
        if self._failure is None:
            try:
                for _ in self:
                    pass
            except VerificationError:
                pass
            except (ImageError, OSError):  # it cannot be read to its end: no verdict
                return None
        return self._failure

    def release(self) -> None:
        """Close the blob's stream (its file or connection)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
