"""The interface the resolver reads images through (every source implements it).

A source hands out the top-level index and verified blobs: an OCI layout
directory, an archive read in place, a registry. It lives here, beside its
consumer, so that `unpack.image` needs nothing from `unpack.source`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from unpack.image.descriptor import Descriptor
from unpack.image.documents import Index


@runtime_checkable
class Source(Protocol):
    """An image store the resolver can read; use as a context manager."""

    #: Where the images are, for messages (a path, an archive, a registry URL).
    path: str

    def index(self) -> Index:
        """The top-level image index (index.json)."""
        ...

    def read_document(self, descriptor: Descriptor, what: str) -> bytes:
        """Read and verify (size and digest) a small blob: index, manifest or config."""
        ...

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        """Stream a blob, verified against the descriptor's size and digest at its end."""
        ...

    def abort(self) -> None:
        """From any thread: end every transfer under way now (the unpack is failing; a
        blob read blocked on the network raises instead of waiting for its bytes)."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc_info: object) -> None: ...

