"""Compression of layer blobs and image archives: the names, and detection by magic bytes.

Only what `image/`, `layer/` and `source/` all need, with no decompressor
(those are in `unpack.layer.decompress`): naming a layer's compression, or
sniffing an archive's, costs no import of isal or zstandard.
"""

from __future__ import annotations

import enum

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MASK, _SKIPPABLE_MAGIC = 0xFFFFFFF0, 0x184D2A50
#: Formats recognised only to be refused by name.
UNSUPPORTED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


class Compression(enum.Enum):
    """How a layer blob (or an archive) is compressed."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def sniff(head: bytes) -> Compression:
    """The compression whose magic bytes start `head` (NONE if neither gzip nor zstd).

    A zstd stream may also begin with a skippable frame (pzstd writes one).
    """
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC) or (
        len(head) >= 4 and int.from_bytes(head[:4], "little") & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC
    ):
        return Compression.ZSTD
    return Compression.NONE


def unsupported(head: bytes) -> str | None:
    """The name of a compression recognised but not supported (bzip2, xz), if `head` has one."""
    return next((name for magic, name in UNSUPPORTED_MAGIC.items() if head.startswith(magic)),
                None)
