"""What every image source offers the resolver and the unpack verb.

A source is anything that can hand out the top-level index and verified
blobs: an OCI layout directory, an archive read in place, a registry. The
resolver (`unpack.image.resolve`) needs exactly `index`, `read_json`,
`blob_chunks` and `path`; the verbs also close it when done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from unpack.image.descriptor import Descriptor

#: Like Layout's: the largest index.json and JSON document (manifest, config) read.
MAX_INDEX_SIZE = 16 << 20
MAX_DOCUMENT_SIZE = 32 << 20


@runtime_checkable
class Source(Protocol):
    """An image store the resolver can read; use as a context manager."""

    #: Where the images are, for messages (a path, an archive, a registry URL).
    path: str

    def index(self) -> dict[str, Any]:
        """The top-level image index (index.json), as a JSON object."""
        ...

    def read_json(self, descriptor: Descriptor, what: str) -> dict[str, Any]:
        """Read, verify (size and digest) and decode a JSON blob: index, manifest or config."""
        ...

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        """Stream a blob, verified against the descriptor's size and digest at its end."""
        ...

    def close(self) -> None:
        """Release files and connections."""
        ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc_info: object) -> None: ...


@dataclass(frozen=True)
class SourceOptions:
    """How to reach a remote source (registries); local sources ignore them."""

    #: `USER:PASS` from `--creds`; None: look in the auth files.
    creds: str | None = None
    #: An auth file to use instead of the default search (`--authfile`).
    authfile: str | None = None
    #: Verify TLS certificates (`--tls-verify=false` also allows plain HTTP).
    tls_verify: bool = True
    #: A directory of `*.crt` CA certificates and `*.cert`/`*.key` client pairs.
    cert_dir: str | None = None
    #: An OCI layout directory keeping fetched blobs (`--cache`).
    cache: str | None = None
    #: Attempts per request on dropped connections and 5xx/429 answers.
    retries: int = 5
    #: Seconds to wait for a connection and between bytes.
    timeout: float = 60.0
