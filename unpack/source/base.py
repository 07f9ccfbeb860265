"""What the image sources share: their options, and their open/check/close lifecycle.

The interface every source implements is `unpack.image.store.Source`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
S = TypeVar("S", bound="SourceBase")


class SourceBase:
    """A source is opened and checked by its constructor, closed once, usable in `with`."""

    path: str  # where the images are, for messages

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """End transfers under way (local files never block: nothing to do)."""

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked(self, check: Callable[[], T]) -> T:
        """Run a constructor's check; if it fails, close what was opened and re-raise."""
        try:
            return check()
        except BaseException:
            self.close()
            raise


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
    #: `missing`: a tag found in the cache is used as is (no network at all);
    #: `always`: ask the registry what the tag names now (one HEAD request).
    pull: str = "missing"
    #: Layer blobs fetched at once from a registry (`--max-parallel-downloads`); 1: one
    #: after the other, each streamed as it is applied.
    parallel_downloads: int = 3
    #: The registries.conf to read (`--registries-conf`); None: the usual files.
    registries_conf: str | None = None
    #: Seconds a credential helper may take.
    helper_timeout: float = 15.0
    #: Attempts per request on dropped connections and 5xx/429 answers.
    retries: int = 5
    #: Seconds to wait for a connection and between bytes.
    timeout: float = 60.0
