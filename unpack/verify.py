"""Content digests and streams that verify themselves.

A verified stream wraps an iterator of byte chunks, hashes and counts every
chunk as it passes, and raises `VerificationError` when the source is
exhausted and the size or digest does not match — so no caller has to
remember to check (the pattern of umoci's `pkg/hardening/verified_reader`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from unpack.errors import ImageError, VerificationError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Digest:
    """A validated `algorithm:hex` content digest (sha256 or sha512)."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: object) -> Digest:
        """Parse and validate a digest string; raise ImageError naming the problem."""
        if not isinstance(text, str) or ":" not in text:
            raise ImageError(f"invalid digest {text!r}: expected ALGORITHM:HEX")
        algorithm, _, hexpart = text.partition(":")
        length = _HEX_LENGTH.get(algorithm)
        if length is None:
            raise ImageError(f"unsupported digest algorithm {algorithm!r} in {text!r}")
        if len(hexpart) != length or not _HEX.fullmatch(hexpart):
            raise ImageError(f"invalid digest {text!r}: expected {length} lowercase hex digits")
        return cls(algorithm, hexpart)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def short(self) -> str:
        """A short form for progress lines: `sha256:0123456789ab`."""
        return f"{self.algorithm}:{self.hex[:12]}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def verified(
    chunks: Iterable[bytes | memoryview], digest: Digest, size: int | None, what: str
) -> Iterator[bytes | memoryview]:
    """Yield `chunks` unchanged; at their end, fail unless size and digest match.

    `size` None means the length is not known in advance (an uncompressed
    layer checked against its diff_id). The size is also enforced while
    streaming, so an oversized blob fails as soon as it passes its size.
    """
    hasher = digest.hasher()
    update = hasher.update
    count = 0
    for chunk in chunks:
        count += len(chunk)
        if size is not None and count > size:
            raise VerificationError(f"{what}: longer than the {size} bytes its descriptor says")
        update(chunk)
        yield chunk
    if size is not None and count != size:
        raise VerificationError(f"{what}: {count} bytes, its descriptor says {size}")
    check_digest(hasher.hexdigest(), digest, what)


def check_digest(actual: str, digest: Digest, what: str) -> None:
    """Fail unless `actual` (hex) is `digest`'s value."""
    if actual != digest.hex:
        raise VerificationError(f"{what}: digest is {digest.algorithm}:{actual}, expected {digest}")


def verify_bytes(data: bytes, digest: Digest, size: int, what: str) -> bytes:
    """Check a blob held in memory (a manifest, index or config)."""
    for _ in verified((data,), digest, size, what):
        pass
    return data
