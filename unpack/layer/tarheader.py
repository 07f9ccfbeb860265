"""Entry type, numeric fields, PAX records and sparse maps for `unpack.layer.tarstream`.

Everything here works on bounded `bytes` (a 512-byte header, a PAX header capped at
MAX_PAX bytes) and reports malformed input by raising `Malformed`, which the reader turns
into a `LayerError` naming the entry and its offset. Nothing here reads the stream.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MAX_PAX = 1 << 20  # bytes in one PAX 'x'/'g' header
MAX_LONGNAME = 64 << 10  # bytes in one GNU 'L'/'K' long name/link
MAX_SPARSE = 1 << 16  # (offset, length) pairs in one sparse map
_INT64_MAX = (1 << 63) - 1
_OCTAL = b"01234567"
_XATTR = b"SCHILY.xattr."
_LAXATTR = b"LIBARCHIVE.xattr."
_SPARSE = b"GNU.sparse."
_URLSAFE = bytes.maketrans(b"-_", b"+/")


class Malformed(Exception):
    """Internal: the header data is malformed; never escapes the reader."""


class EntryKind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHARDEV = "chardev"
    BLOCKDEV = "blockdev"
    FIFO = "fifo"


@dataclass(slots=True)
class TarEntry:
    name: str
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int | None
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]
    sparse: tuple[tuple[int, int], ...] | None


def num(field: bytes, what: str) -> int:
    """A numeric header field: octal (space/NUL padded) or GNU base-256 (two's complement)."""
    if field and field[0] & 0x80:
        bits = 8 * len(field) - 1
        v = int.from_bytes(field, "big") & ((1 << bits) - 1)
        if field[0] & 0x40:
            v -= 1 << bits
        if not -_INT64_MAX - 1 <= v <= _INT64_MAX:
            raise Malformed(f"{what} field out of range")
        return v
    s = field.strip(b" \0")
    if not s:
        return 0
    if s.translate(None, _OCTAL):
        raise Malformed(f"invalid {what} field {field!r}")
    return int(s, 8)


def dec(v: bytes, what: str) -> int:
    """A non-negative decimal PAX value (or sparse map number)."""
    if not v.isdigit() or len(v) > 30 or int(v) > _INT64_MAX:
        raise Malformed(f"invalid {what} value {v[:40]!r}")
    return int(v)


def pax_time(v: bytes, what: str) -> int:
    """A PAX time ("-12.5") in nanoseconds; fraction digits beyond 9 are truncated."""
    neg = v[:1] == b"-"
    secs, _, frac = (v[1:] if neg else v).partition(b".")
    if frac and not frac.isdigit():
        raise Malformed(f"invalid {what} value {v[:40]!r}")
    ns = dec(secs, what) * 1_000_000_000 + int(frac[:9].ljust(9, b"0"))
    return -ns if neg else ns


def parse_pax(buf: bytes) -> tuple[dict[bytes, bytes], list[bytes]]:
    """PAX records "%d %s=%s\\n" → ({keyword: value}, [GNU sparse 0.0 offset, numbytes, ...])."""
    recs: dict[bytes, bytes] = {}
    pairs: list[bytes] = []
    pos, n = 0, len(buf)
    while pos < n:
        sp = buf.find(b" ", pos, pos + 24)
        length = buf[pos:sp]
        if sp < 0 or not length.isdigit():
            raise Malformed("malformed PAX record length")
        end = pos + int(length)
        if end > n or end < sp + 3 or buf[end - 1] != 0x0A:
            raise Malformed("PAX record length does not match its record")
        eq = buf.find(b"=", sp + 1, end)
        if eq <= sp + 1:
            raise Malformed("malformed PAX record")
        key, val = buf[sp + 1 : eq], buf[eq + 1 : end - 1]
        if key == b"GNU.sparse.offset" or key == b"GNU.sparse.numbytes":
            if (key == b"GNU.sparse.numbytes") != (len(pairs) % 2 == 1):
                raise Malformed("GNU.sparse.offset/numbytes records out of order")
            if len(pairs) >= 2 * MAX_SPARSE:
                raise Malformed("sparse map too large")
            pairs.append(val)
        else:
            if (key == b"path" or key == b"linkpath") and b"\0" in val:
                raise Malformed("NUL byte in PAX path")
            recs[key] = val
        pos = end
    return recs, pairs


def merge_pax(into: dict[bytes, bytes], recs: dict[bytes, bytes], glob: bool) -> None:
    """Apply records over `into`: an empty value deletes the keyword (POSIX), except for
    xattrs, where it is an empty attribute value."""
    for k, v in recs.items():
        if glob and k.startswith(_SPARSE):
            continue
        if v or k.startswith(_XATTR) or k.startswith(_LAXATTR):
            into[k] = v
        else:
            into.pop(k, None)


def apply_pax(e: TarEntry, recs: dict[bytes, bytes]) -> None:
    """Override the entry's header fields with PAX records (uname/gname/ctime are ignored)."""
    for k, v in recs.items():
        if k == b"path":
            e.name = v.decode("utf-8", "surrogateescape")
        elif k == b"linkpath":
            e.linkname = v.decode("utf-8", "surrogateescape")
        elif k == b"size":
            e.size = dec(v, "PAX size")
        elif k == b"uid":
            e.uid = dec(v, "PAX uid")
        elif k == b"gid":
            e.gid = dec(v, "PAX gid")
        elif k == b"mtime":
            e.mtime_ns = pax_time(v, "PAX mtime")
        elif k == b"atime":
            e.atime_ns = pax_time(v, "PAX atime")
        elif k.startswith(_LAXATTR):  # libarchive: URL-encoded name, base64 value
            name = unquote_to_bytes(k[len(_LAXATTR) :]).decode("utf-8", "surrogateescape")
            try:
                v = v.translate(_URLSAFE) + b"=" * (-len(v) % 4)
                e.xattrs.setdefault(name, binascii.a2b_base64(v))
            except binascii.Error:
                raise Malformed(f"invalid base64 in {k[:80]!r}") from None
    for k, v in recs.items():  # SCHILY.xattr wins over LIBARCHIVE.xattr (libarchive writes both)
        if k.startswith(_XATTR):
            e.xattrs[k[len(_XATTR) :].decode("utf-8", "surrogateescape")] = v


def pax_sparse(e: TarEntry, recs: dict[bytes, bytes], pairs: list[bytes]) -> list[int] | bool:
    """GNU PAX sparse records: the 0.0/0.1 map as [off, len, ...], True for 1.0 (map in the
    data), False when not sparse. Sets the entry's real size and GNU.sparse.name."""
    major, minor = recs.get(b"GNU.sparse.major"), recs.get(b"GNU.sparse.minor")
    if major is not None or minor is not None:
        if (major, minor) not in ((b"0", b"0"), (b"0", b"1"), (b"1", b"0")):
            raise Malformed(f"unsupported GNU sparse version {major!r}.{minor!r}")
    elif not pairs and not any(k.startswith(_SPARSE) for k in recs):
        return False
    if e.kind is not EntryKind.FILE:
        raise Malformed("GNU sparse records on a non-regular entry")
    if b"GNU.sparse.name" in recs:
        e.name = recs[b"GNU.sparse.name"].decode("utf-8", "surrogateescape")
    size = recs.get(b"GNU.sparse.size", recs.get(b"GNU.sparse.realsize"))
    if size is not None:
        e.size = dec(size, "GNU.sparse.size")
    if major == b"1":
        return True
    if pairs:
        if len(pairs) % 2:
            raise Malformed("GNU.sparse.offset without GNU.sparse.numbytes")
    else:
        smap = recs.get(b"GNU.sparse.map", b"")
        pairs = smap.split(b",", 2 * MAX_SPARSE) if smap else []
        if len(pairs) % 2 or len(pairs) > 2 * MAX_SPARSE:
            raise Malformed("malformed or oversized GNU.sparse.map")
    nums = [dec(p, "sparse map") for p in pairs]
    blocks = recs.get(b"GNU.sparse.numblocks")
    if blocks is not None and dec(blocks, "GNU.sparse.numblocks") != len(nums) // 2:
        raise Malformed("GNU.sparse.numblocks does not match the sparse map")
    return nums


def old_gnu_sparse(area: bytes, count: int, nums: list[int]) -> None:
    """Append the (offset, numbytes) pairs of an old GNU sparse area (`count` 24-byte slots);
    a slot whose offset starts with NUL ends the list (as GNU and BSD tar do)."""
    for i in range(0, 24 * count, 24):
        if not area[i]:
            return
        if len(nums) >= 2 * MAX_SPARSE:
            raise Malformed("sparse map too large")
        nums.append(num(area[i : i + 12], "sparse offset"))
        nums.append(num(area[i + 12 : i + 24], "sparse numbytes"))


def sparse_map(nums: list[int], realsize: int, stored: int) -> tuple[tuple[int, int], ...]:
    """Validate a flat [off, len, ...] map: in order, no overlap, within the real size, and
    its lengths summing to the stored data size."""
    if realsize < 0:
        raise Malformed("negative sparse file size")
    segs = tuple(zip(nums[::2], nums[1::2], strict=True))
    end = total = 0
    for off, length in segs:
        if off < end or length < 0 or off + length > realsize:
            raise Malformed("invalid sparse map (segments out of order or past the end)")
        end = off + length
        total += length
    if total != stored:
        raise Malformed(f"sparse map covers {total} bytes but {stored} are stored")
    return segs
