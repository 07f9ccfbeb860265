"""A lean streaming tar reader: byte chunks in, `TarEntry` values and zero-copy data out.

Reads ustar, v7, old GNU and PAX archives, including GNU long names ('L'/'K'), global PAX
headers, xattrs and all GNU sparse formats (old 'S', PAX 0.0, 0.1, 1.0). Only headers are
ever buffered, and those are capped (see tarheader.MAX_*); file data is yielded as
memoryview slices of the input chunks. Every malformed input raises `LayerError`.

Decisions where the format is ambiguous:
- Data length is the header size for regular ('0', NUL, '7'), unknown, 'S' and 'D' entries,
  and 0 for '1'..'6' (links, devices, dirs, fifos), as Go's archive/tar (containerd, Docker)
  reads them; such entries report size 0.
- Unknown typeflags are regular files (POSIX); 'V' (volume label) and 'N' (old GNU names)
  are skipped with their data; 'M' (multi-volume continuation) is refused; 'X' is 'x'.
- '0'/NUL/'7' entries whose final name ends in '/' are directories (GNU tar; old v7 dirs);
  'D' (GNU dumpdir) is a directory. The data of both is skipped.
- End of archive: two zero blocks, one zero block then EOF, or EOF at a header boundary;
  a zero block followed by a non-zero block is refused (as Go does). Whatever follows the
  end is read to the end of the input and ignored.
- A second 'x' (or 'L'/'K') before an entry replaces the first (GNU tar, Go); 'x'/'L'/'K'
  not followed by an entry are refused; 'g' records apply to all later entries.
- An empty PAX value deletes the keyword, except SCHILY.xattr.* (an empty xattr value).
- The ustar prefix is used only with the "ustar\\0" magic (131 bytes for star archives).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from unpack.errors import LayerError
from unpack.layer.tarheader import (
    MAX_LONGNAME,
    MAX_PAX,
    MAX_SPARSE,
    EntryKind,
    Malformed,
    TarEntry,
    apply_pax,
    dec,
    merge_pax,
    num,
    old_gnu_sparse,
    parse_pax,
    pax_sparse,
    sparse_map,
)

__all__ = ["EntryKind", "PlainRun", "TarEntry", "TarReader"]

_ZERO = bytes(512)
_FILE, _DIR = EntryKind.FILE, EntryKind.DIR
_KIND = {
    b"0": _FILE, b"\0": _FILE, b"7": _FILE, b"S": _FILE, b"D": _DIR,
    b"1": EntryKind.HARDLINK, b"2": EntryKind.SYMLINK, b"3": EntryKind.CHARDEV,
    b"4": EntryKind.BLOCKDEV, b"5": _DIR, b"6": EntryKind.FIFO,
}  # fmt: skip
_REGULAR = frozenset((b"0", b"\0", b"7"))
_NODATA = frozenset((b"1", b"2", b"3", b"4", b"5", b"6"))
_DEVICE = frozenset((b"3", b"4"))
_META = frozenset((b"x", b"X", b"g", b"L", b"K", b"V", b"N", b"M"))
_OCTAL_FIELD = b"01234567 \0"
_NUL_SPACE = bytes.maketrans(b"\0", b" ")
_FIELDS = ((100, 108, "mode"), (108, 116, "uid"), (116, 124, "gid"), (124, 136, "size"),
           (136, 148, "mtime"), (148, 156, "checksum"))  # fmt: skip
_adler = zlib.adler32

R = TypeVar("R")
# Takes whole entries from a buffer at an offset; returns the offset after them, how many
# it took, and a result (see `TarReader.take_plain`).
PlainRun = Callable[[memoryview, int], tuple[int, int, R]]


def _show(name: bytes | str) -> str:
    if isinstance(name, bytes):
        name = name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return name[:200].encode("unicode_escape").decode("ascii")


def _checksum_ok(h: bytes, stored: int) -> bool:
    # Adler-32's low half is 1 + the byte sum while that sum stays below 65521: three
    # pieces of at most 244 bytes keep it there. 253: the checksum field counts as 8 spaces
    # (256), less the three 1s.
    s = (_adler(h[:148]) & 0xFFFF) + (_adler(h[156:400]) & 0xFFFF) + (_adler(h[400:]) & 0xFFFF)
    if s + 253 == stored:
        return True
    high = sum(b > 127 for b in h[:148]) + sum(b > 127 for b in h[156:])
    return s + 253 - 256 * high == stored  # old tars summed signed chars


class TarReader:
    """Iterate once over the entries; `data()` streams the current entry's stored bytes."""

    __slots__ = ("_after", "_base", "_cur", "_gen", "_glob", "_it", "_len", "_mv", "_pos",
                 "_read_gen", "_remain", "_started", "entries")  # fmt: skip

    def __init__(self, chunks: Iterable[bytes | memoryview]) -> None:
        self._it = iter(chunks)
        self._mv = memoryview(b"")
        self._pos = self._len = self._base = 0  # position in / length of _mv, _mv's offset
        self._remain = self._after = 0  # unread data of the current entry, bytes to skip after
        self._gen = self._read_gen = 0  # entry number, entry whose data() was taken
        self._cur: TarEntry | None = None
        self._started = False
        self._glob: dict[bytes, bytes] = {}  # global PAX records ('g')
        self.entries = 0

    # -- input buffer --------------------------------------------------------------------
    def _more(self) -> bool:
        """Move to the next non-empty chunk; False at the end of the input."""
        self._base += self._len
        for chunk in self._it:
            mv = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
            if mv.format != "B" or mv.ndim != 1:
                mv = mv.cast("B")
            if mv.nbytes:
                self._mv, self._pos, self._len = mv, 0, mv.nbytes
                return True
        self._mv, self._pos, self._len = memoryview(b""), 0, 0
        return False

    def _read(self, n: int) -> bytes:
        """Up to n bytes (fewer only at the end of the input), copied."""
        pos, end = self._pos, self._pos + n
        if end <= self._len:
            self._pos = end
            return self._mv[pos:end].tobytes()
        parts = [self._mv[pos:].tobytes()]
        n -= self._len - pos
        self._pos = self._len
        while n and self._more():
            take = min(n, self._len)
            parts.append(self._mv[:take].tobytes())
            self._pos, n = take, n - take
        return b"".join(parts)

    def _skip(self, n: int) -> bool:
        """Skip n bytes; False if the input ends first."""
        while n > self._len - self._pos:
            n -= self._len - self._pos
            if not self._more():
                return False
        self._pos += n
        return True

    # -- entries ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TarEntry]:
        if self._started:
            raise RuntimeError("a TarReader can be iterated only once")
        self._started = True
        return self._entries()

    def _entries(self) -> Iterator[TarEntry]:
        glob = self._glob
        while True:
            n, self._remain, self._after = self._remain + self._after, 0, 0
            if n and not self._skip(n):
                raise self._error("truncated tar data", self._cur.name if self._cur else "")
            self._gen += 1
            self._cur = entry = self._next(glob)
            if entry is None:
                break
            self.entries += 1
            yield entry
        for _ in self._it:  # the caller hashes the whole stream: read past the trailer
            pass

    def close(self) -> None:
        """Stop reading: close the chunk iterator (and the threads that may feed it)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def take_plain(self, run: PlainRun[R]) -> R | None:
        """Between entries, let `run` take whole plain entries (header, data and padding)
        from a read-only view of the buffered input, and count them as read; returns what
        `run` returned.

        Only when the current entry's data has been read, and no global PAX record is in
        force (it would change the entries `run` sees), and never across chunks; returns
        None without calling `run` otherwise.
        """
        pos = self._pos + self._after
        if self._remain or self._glob or pos > self._len:
            return None
        end, taken, result = run(self._mv.toreadonly(), pos)
        if taken:
            self._pos, self._after, self._cur = end, 0, None
            self.entries += taken
        return result

    def data(self) -> Iterator[memoryview]:
        """The current entry's stored bytes (sparse: the data segments, concatenated)."""
        if self._cur is None or self._read_gen == self._gen:
            raise RuntimeError("data() needs a current entry and may be called once per entry")
        self._read_gen = self._gen
        return self._data(self._gen, self._cur.name)

    def _data(self, gen: int, name: str) -> Iterator[memoryview]:
        while self._remain and self._gen == gen:
            pos = self._pos
            take = min(self._len - pos, self._remain)
            if not take:
                if not self._more():
                    raise self._error("truncated tar data", name)
                continue
            self._pos, self._remain = pos + take, self._remain - take
            yield self._mv[pos : pos + take]

    def _error(self, what: str, name: bytes | str, off: int | None = None) -> LayerError:
        off = self._base + self._pos if off is None else off
        return LayerError(f"layer tar: {what} (entry {_show(name)} at offset {off})")

    def _next(self, glob: dict[bytes, bytes]) -> TarEntry | None:
        """Read headers up to and including the next entry's; None at the end."""
        pax: dict[bytes, bytes] | None = None
        pairs: list[bytes] = []
        longname = longlink = None
        while True:
            pos = self._pos
            off = self._base + pos
            if pos + 512 <= self._len:  # fast path: the header is inside the current chunk
                h = self._mv[pos : pos + 512].tobytes()
                self._pos = pos + 512
            else:
                h = self._read(512)
            if len(h) < 512 or h == _ZERO:
                if h == _ZERO:
                    h = self._read(512)
                    if h == _ZERO:
                        h = b""
                    elif len(h) == 512:
                        raise self._error("zero block followed by a header", h[:100], off + 512)
                if h:
                    raise self._error("truncated tar header", h[:100], off)
                if pax is not None or longname is not None or longlink is not None:
                    raise self._error("extended header without an entry", b"", off)
                return None
            try:
                nums = None
                r = h[100:156]  # mode uid gid size mtime chksum: fast path for plain octal
                if not r.translate(None, _OCTAL_FIELD):
                    r = r.translate(_NUL_SPACE)  # int() skips spaces around digits, not NULs
                    try:
                        nums = (int(r[:8], 8), int(r[8:16], 8), int(r[16:24], 8),
                                int(r[24:36], 8), int(r[36:48], 8), int(r[48:], 8))  # fmt: skip
                    except ValueError:  # an empty field, or a space or NUL between digits
                        nums = None
                if nums is None:
                    nums = [num(h[a:b], w) for a, b, w in _FIELDS]
                if not _checksum_ok(h, nums[5]):
                    raise Malformed("bad header checksum")
                t, size = h[156:157], nums[3]
                if size < 0:
                    raise Malformed("negative size")
                if t in _META:
                    if t == b"M":
                        raise Malformed("multi-volume archives are not supported")
                    if t in b"xXg":
                        if size > MAX_PAX:
                            raise Malformed("PAX header too large")
                        recs, prs = parse_pax(self._meta(size))
                        if t == b"g":
                            merge_pax(glob, recs, True)
                        else:
                            pax, pairs = recs, prs
                    elif t in b"LK":
                        if size > MAX_LONGNAME:
                            raise Malformed("GNU long name too large")
                        v = self._meta(size).split(b"\0", 1)[0]
                        longname, longlink = (v, longlink) if t == b"L" else (longname, v)
                    elif not self._skip(size + (-size % 512)):  # 'V', 'N'
                        raise Malformed("truncated tar data")
                    continue
                return self._entry(h, t, nums, pax, pairs, glob, longname, longlink)
            except Malformed as e:
                raise self._error(str(e), h[:100], off) from None

    def _meta(self, size: int) -> bytes:
        data = self._read(size)
        if len(data) < size or not self._skip(-size % 512):
            raise Malformed("truncated tar extended header")
        return data

    def _entry(self, h, t, nums, pax, pairs, glob, longname, longlink) -> TarEntry:
        i = h.find(b"\0", 0, 100)
        name = h[: i if i >= 0 else 100]
        ustar = h[257:263] == b"ustar\0"
        if ustar and h[345]:
            prefix = h[345:476] if h[508:512] == b"tar\0" else h[345:500]
            name = prefix.split(b"\0", 1)[0] + b"/" + name
        if longname is not None:
            name = longname
        if longlink is not None:
            link = longlink
        elif h[157]:
            i = h.find(b"\0", 157, 257)
            link = h[157 : i if i >= 0 else 257]
        else:
            link = b""
        mode, uid, gid, size, mtime, _ = nums
        if mode < 0 or uid < 0 or gid < 0:
            raise Malformed("negative mode, uid or gid")
        dev = t in _DEVICE and (ustar or h[257:265] == b"ustar  \0")
        e = TarEntry(
            name.decode("utf-8", "surrogateescape"), _KIND.get(t, _FILE), mode & 0o7777,
            uid, gid, size, mtime * 1_000_000_000, None,
            link.decode("utf-8", "surrogateescape"),
            num(h[329:337], "devmajor") if dev else 0, num(h[337:345], "devminor") if dev else 0,
            {}, None,
        )  # fmt: skip
        if glob or pax is not None:
            recs = dict(glob)
            if pax:
                merge_pax(recs, pax, False)
            apply_pax(e, recs)
        else:
            recs = None
        stored = e.size
        if t in _NODATA:
            e.size = stored = 0
        elif e.kind is _FILE and t in _REGULAR and e.name.endswith("/"):
            e.kind = _DIR
        nums = None
        if t == b"S":
            nums = self._old_sparse(h)
            e.size = num(h[483:495], "sparse realsize")
        elif recs is not None:
            nums = pax_sparse(e, recs, pairs)
            if nums is True:
                nums, used = self._map_1x0(stored)
                stored -= used
        if nums is not None and nums is not False:
            e.sparse = sparse_map(nums, e.size, stored)
        self._remain = stored if e.kind is _FILE else 0
        self._after = (stored - self._remain) + (-stored % 512)
        if e.kind is not _FILE:
            e.size = 0
        return e

    def _old_sparse(self, h: bytes) -> list[int]:
        """The map of an old GNU 'S' header and its extension blocks (read here)."""
        nums: list[int] = []
        old_gnu_sparse(h[386:482], 4, nums)
        ext, blocks = h[482], 0
        while ext:
            blocks += 1
            blk = self._read(512)
            if len(blk) < 512 or blocks > MAX_SPARSE // 21 + 1:
                raise Malformed("truncated or oversized GNU sparse header")
            old_gnu_sparse(blk, 21, nums)
            ext = blk[504]
        return nums

    def _map_1x0(self, stored: int) -> tuple[list[int], int]:
        """The GNU sparse 1.0 map at the start of the data: decimal lines (count, then offset
        and length pairs), padded to a block. Returns the flat map and the bytes it used."""
        nums: list[int] = []
        want, pending, used = -1, b"", 0
        while len(nums) != want:
            if len(pending) > 32 or used + 512 > stored:
                raise Malformed("malformed or truncated GNU sparse map")
            blk = self._read(512)
            if len(blk) < 512:
                raise Malformed("truncated tar data")
            used += 512
            lines = (pending + blk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                v = dec(line, "GNU sparse map")
                if want >= 0:
                    nums.append(v)
                elif v > MAX_SPARSE:
                    raise Malformed("sparse map too large")
                else:
                    want = 2 * v
                if len(nums) == want:
                    break
        return nums, used
