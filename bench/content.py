"""Deterministic file content that compresses like the real thing, generated fast.

Three kinds: ``text`` (source code and docs: word soup from a Zipf-weighted vocabulary,
gzip ratio ~3x), ``binary`` (executables and libraries: a mix of random, low-entropy,
zero and text blocks, ~2x) and ``random`` (already compressed assets, ~1x).
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterator

CHUNK = 1 << 20
_BLOCK = 4096

_KEYWORDS = [
    "def", "return", "self", "import", "from", "if", "else:", "for", "in", "None", "True",
    "class", "raise", "not", "and", "or", "is", "with", "as", "try:", "except", "yield",
    "(", ")", "):", "=", "==", ",", ".", "[", "]", "+", "#", '"""', "0", "1",
    "\n", "\n    ", "\n        ", "\n            ", "\n\n",
]


def _vocabulary() -> tuple[list[str], list[float]]:
    rng = random.Random(20231114)
    letters = string.ascii_lowercase + "_"
    words = list(_KEYWORDS)
    words += ["".join(rng.choices(letters, k=rng.randint(2, 11))) for _ in range(4000)]
    weights = [1.0 / (rank + 8) for rank in range(len(words))]
    # newlines and indentation are frequent whatever their rank
    for i, w in enumerate(words):
        if w.startswith("\n"):
            weights[i] = 0.08
    return words, list(itertools.accumulate(weights))


def _phrases() -> list[bytes]:
    """65536 two-word phrases drawn from the vocabulary: text is 16-bit indices into it."""
    rng = random.Random(1700000000)
    words = rng.choices(_WORDS, cum_weights=_CUM, k=2 * 65536)
    return [f"{words[2 * i]} {words[2 * i + 1]}".encode() for i in range(65536)]


_WORDS, _CUM = _vocabulary()
_PHRASES = _phrases()
# 256 -> 16 byte values (zero 4x as likely): the statistics of code and relocation tables
_LOW = bytes(([0] * 4 + [1, 2, 3, 4, 8, 0x10, 0x20, 0x40, 0x48, 0x89, 0xE8, 0xFF]) * 16)


class Content:
    """A deterministic content source; one per layer, consumed in write order."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)

    def text(self, n: int) -> bytes:
        """`n` bytes of source-like text."""
        out = bytearray()
        while len(out) < n:
            index = memoryview(self.rng.randbytes(2 * ((n - len(out)) // 12 + 16))).cast("H")
            out += b" ".join(map(_PHRASES.__getitem__, index))
        return bytes(out[:n])

    def random(self, n: int) -> bytes:
        """`n` incompressible bytes."""
        return self.rng.randbytes(n)

    def binary(self, n: int) -> bytes:
        """`n` bytes shaped like an ELF file: code, tables, zero padding and strings."""
        rng = self.rng
        parts = []
        left = n
        while left > 0:
            k = min(_BLOCK * rng.randint(1, 8), left)
            r = rng.random()
            if r < 0.15:
                parts.append(rng.randbytes(k))
            elif r < 0.65:
                parts.append(rng.randbytes(k).translate(_LOW))
            elif r < 0.80:
                parts.append(bytes(k))
            else:
                parts.append(self.text(k))
            left -= k
        return b"".join(parts)

    def make(self, kind: str, n: int) -> bytes:
        """`n` bytes of `kind` (text, binary, random, or empty for whiteouts)."""
        if n == 0:
            return b""
        if kind == "text":
            return self.text(n)
        if kind == "binary":
            return self.binary(n)
        if kind == "random":
            return self.random(n)
        raise ValueError(f"unknown content kind {kind!r}")

    def stream(self, kind: str, n: int) -> Iterator[bytes]:
        """`n` bytes of `kind` in chunks of at most 1 MiB."""
        while n > 0:
            k = min(CHUNK, n)
            yield self.make(kind, k)
            n -= k
