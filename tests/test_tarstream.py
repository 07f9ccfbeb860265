"""Tests for unpack.layer.tarstream: the streaming tar reader."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unpack.errors import LayerError, VerificationError
from unpack.layer.tarstream import EntryKind, TarEntry, TarReader

# -- helpers -------------------------------------------------------------------------------


def _field(v: int | bytes, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, v) if isinstance(v, int) else v


def header(
    name: bytes = b"f",
    typeflag: bytes = b"0",
    size: int | bytes = 0,
    *,
    mode: int | bytes = 0o644,
    uid: int | bytes = 1000,
    gid: int | bytes = 1000,
    mtime: int | bytes = 1_600_000_000,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
    devmajor: int | bytes = 0,
    devminor: int | bytes = 0,
    prefix: bytes = b"",
    tail: bytes = b"",
    signed: bool = False,
    chksum: bytes | None = None,
) -> bytes:
    """A hand-made 512-byte header with a valid checksum (unless chksum is given)."""
    b = bytearray(512)
    for off, width, v in (
        (0, 100, name), (100, 8, _field(mode, 8)), (108, 8, _field(uid, 8)),
        (116, 8, _field(gid, 8)), (124, 12, _field(size, 12)), (136, 12, _field(mtime, 12)),
        (156, 1, typeflag), (157, 100, linkname), (257, 8, magic),
        (329, 8, _field(devmajor, 8)), (337, 8, _field(devminor, 8)), (345, 155, prefix),
        (500, 12, tail),
    ):  # fmt: skip
        assert len(v) <= width
        b[off : off + len(v)] = v
    b[148:156] = b" " * 8
    total = sum(x - 256 if signed and x > 127 else x for x in b)
    b[148:156] = chksum if chksum is not None else b"%06o\0 " % total
    return bytes(b)


def member(hdr: bytes, data: bytes = b"") -> bytes:
    return hdr + data + bytes(-len(data) % 512)


def pax(records: list[tuple[bytes, bytes]], typeflag: bytes = b"x") -> bytes:
    body = b""
    for k, v in records:
        payload = b" %s=%s\n" % (k, v)
        n = len(payload) + 1
        while len(str(n)) + len(payload) != n:
            n = len(str(n)) + len(payload)
        body += b"%d%s" % (n, payload)
    return member(header(b"PaxHeaders/x", typeflag, len(body)), body)


END = bytes(1024)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def read(data: bytes | Iterable[bytes], size: int | None = None) -> list[tuple[TarEntry, bytes]]:
    chunks = chunked(data, size) if size else [data] if isinstance(data, bytes) else data
    r = TarReader(chunks)
    out = [(e, b"".join(r.data())) for e in r]
    assert r.entries == len(out)
    return out


def one(data: bytes) -> tuple[TarEntry, bytes]:
    (got,) = read(data)
    return got


def refused(data: bytes | Iterable[bytes], match: str = "") -> LayerError:
    with pytest.raises(LayerError, match=match) as ei:
        read(data)
    assert str(ei.value).startswith("layer tar: ")
    return ei.value


def stdlib_tar(fmt: int, members: list[tuple[tarfile.TarInfo, bytes]], **kw) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tf:
        for ti, data in members:
            ti.size = len(data) if ti.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def ti(name: str, type_: bytes = tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.uid, t.gid, t.mtime = type_, 0o4755, 1000, 100, 1_700_000_000
    for k, v in attrs.items():
        setattr(t, k, v)
    return t


def all_kinds() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [
        (ti("d/", tarfile.DIRTYPE, mode=0o1777), b""),
        (ti("d/file", mode=0o6644), b"hello world"),
        (ti("d/empty"), b""),
        (ti("d/big"), bytes(range(256)) * 40 + b"x"),
        (ti("d/sym", tarfile.SYMTYPE, linkname="file"), b""),
        (ti("d/hard", tarfile.LNKTYPE, linkname="d/file"), b""),
        (ti("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), b""),
        (ti("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), b""),
        (ti("fifo", tarfile.FIFOTYPE), b""),
    ]


KINDS = [EntryKind.DIR, *[EntryKind.FILE] * 3, EntryKind.SYMLINK, EntryKind.HARDLINK]
KINDS += [EntryKind.CHARDEV, EntryKind.BLOCKDEV, EntryKind.FIFO]


# -- formats and type flags ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_kind_in_every_format(fmt: int) -> None:
    members = all_kinds()
    got = read(stdlib_tar(fmt, members))
    assert [e.kind for e, _ in got] == KINDS
    for (e, data), (t, want) in zip(got, members, strict=True):
        assert (e.name, e.linkname, data) == (t.name, t.linkname, want)
        assert (e.mode, e.uid, e.gid) == (t.mode, 1000, 100)
        assert e.mtime_ns == 1_700_000_000 * 10**9
        assert e.size == len(want)
        assert (e.devmajor, e.devminor) == (t.devmajor, t.devminor)
        assert e.xattrs == {} and e.sparse is None
    assert got[0][0].mode == 0o1777 and got[1][0].mode == 0o6644


@pytest.mark.parametrize("flag", [b"0", b"\0", b"7", b"Z", b"A"])
def test_regular_contiguous_and_unknown_flags_are_files(flag: bytes) -> None:
    e, data = one(member(header(b"f", flag, 3), b"abc") + END)
    assert (e.kind, e.size, data) == (EntryKind.FILE, 3, b"abc")


@pytest.mark.parametrize("flag", [b"0", b"\0"])
def test_v7_directory_with_trailing_slash(flag: bytes) -> None:
    arc = member(header(b"olddir/", flag, magic=b""), b"") + member(header(b"x", b"0", 1), b"y")
    got = read(arc + END)
    assert [(e.name, e.kind, d) for e, d in got] == [
        ("olddir/", EntryKind.DIR, b""),
        ("x", EntryKind.FILE, b"y"),
    ]


def test_gnu_dumpdir_is_a_directory_and_its_data_skipped() -> None:
    arc = member(header(b"dir/", b"D", 10, magic=b"ustar  \0"), b"Yfoo\0Nbar\0")
    arc += member(header(b"after"), b"")
    got = read(arc + END)
    assert [(e.name, e.kind, e.size, d) for e, d in got] == [
        ("dir/", EntryKind.DIR, 0, b""),
        ("after", EntryKind.FILE, 0, b""),
    ]


@pytest.mark.parametrize("flag", [b"1", b"2", b"3", b"4", b"5", b"6"])
def test_header_only_types_have_no_data(flag: bytes) -> None:
    # size is ignored for these (as Go's archive/tar does): the next block is a header
    arc = member(header(b"n", flag, 512, linkname=b"t")) + member(header(b"next", size=1), b"z")
    got = read(arc + END)
    assert [(e.name, e.size, d) for e, d in got] == [("n", 0, b""), ("next", 1, b"z")]


def test_volume_label_and_old_names_skipped_multivolume_refused() -> None:
    arc = member(header(b"label", b"V", 5, magic=b"ustar  \0"), b"label")
    arc += member(header(b"names", b"N", 3, magic=b"ustar  \0"), b"abc")
    arc += member(header(b"f", size=1), b"1")
    assert [e.name for e, _ in read(arc + END)] == ["f"]
    refused(member(header(b"cont", b"M", 3, magic=b"ustar  \0"), b"abc") + END, "multi-volume")


def test_ustar_prefix_joined_only_for_ustar_magic() -> None:
    long = "p" * 120 + "/" + "n" * 90
    e, _ = one(stdlib_tar(tarfile.USTAR_FORMAT, [(ti(long), b"")]))
    assert e.name == long
    e, _ = one(member(header(b"name", prefix=b"pre/fix")) + END)
    assert e.name == "pre/fix/name"
    # GNU magic: these bytes are atime/ctime, never a prefix
    e, _ = one(member(header(b"name", magic=b"ustar  \0", prefix=b"14000000000\0")) + END)
    assert e.name == "name"
    # v7: no prefix either
    e, _ = one(member(header(b"name", magic=b"", prefix=b"junk")) + END)
    assert e.name == "name"
    # star: 131-byte prefix followed by atime/ctime, "tar\0" at 508
    star = header(b"n", prefix=b"s" * 131 + b"12345670123\0", tail=b"\0" * 8 + b"tar\0")
    assert one(member(star) + END)[0].name == "s" * 131 + "/n"


def test_devices_numbers_and_v7_ignores_them() -> None:
    e, _ = one(member(header(b"c", b"3", devmajor=0o777, devminor=5)) + END)
    assert (e.kind, e.devmajor, e.devminor) == (EntryKind.CHARDEV, 0o777, 5)
    e, _ = one(member(header(b"f", devmajor=b"garbage!")) + END)  # not a device: not parsed
    assert (e.devmajor, e.devminor) == (0, 0)


def test_mode_masks_file_type_bits() -> None:
    e, _ = one(member(header(b"f", mode=0o100755)) + END)
    assert e.mode == 0o755


# -- long names, PAX -------------------------------------------------------------------------


def test_pax_long_names_and_linknames() -> None:
    name, target = "a/" * 120 + "file", "t/" * 200 + "x"
    arc = stdlib_tar(
        tarfile.PAX_FORMAT,
        [(ti(name), b"data"), (ti("l", tarfile.SYMTYPE, linkname=target), b"")],
    )
    got = read(arc)
    assert [(e.name, e.linkname, d) for e, d in got] == [(name, "", b"data"), ("l", target, b"")]


def test_gnu_longname_and_longlink() -> None:
    name, target = "n/" * 150 + "f", "t/" * 150 + "x"
    arc = stdlib_tar(
        tarfile.GNU_FORMAT,
        [(ti(name), b"x"), (ti(name + "h", tarfile.LNKTYPE, linkname=target), b"")],
    )
    got = read(arc)
    assert [(e.name, e.linkname, e.kind) for e, _ in got] == [
        (name, "", EntryKind.FILE),
        (name + "h", target, EntryKind.HARDLINK),
    ]
    # PAX path wins over a GNU long name
    arc = member(header(b"././@LongLink", b"L", 4, magic=b"ustar  \0"), b"gnu\0")
    arc += pax([(b"path", b"paxname")]) + member(header(b"short"))
    assert one(arc + END)[0].name == "paxname"


def test_global_pax_headers_apply_to_later_entries() -> None:
    arc = member(header(b"before"))
    arc += pax([(b"uid", b"7"), (b"gid", b"8"), (b"mtime", b"5.5")], b"g")
    arc += member(header(b"a"))
    arc += pax([(b"uid", b"9"), (b"mtime", b"")])  # per-entry wins; empty value deletes
    arc += member(header(b"b", mtime=3))
    arc += pax([(b"gid", b"")], b"g")  # a global deletion
    arc += member(header(b"c", gid=4))
    got = [e for e, _ in read(arc + END)]
    assert [(e.name, e.uid, e.gid, e.mtime_ns) for e in got] == [
        ("before", 1000, 1000, 1_600_000_000 * 10**9),
        ("a", 7, 8, 5_500_000_000),
        ("b", 9, 8, 3 * 10**9),
        ("c", 7, 4, 5_500_000_000),
    ]


def test_stdlib_global_header() -> None:
    arc = stdlib_tar(tarfile.PAX_FORMAT, [(ti("a"), b"")], pax_headers={"uid": "42"})
    assert one(arc)[0].uid == 42


def test_xattrs_binary_capability_and_libarchive() -> None:
    cap = bytes.fromhex("0100000200200000000000000000000000000000")
    t = ti("bin/ping", pax_headers={
        "SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.empty": "",
        "SCHILY.xattr.user.note": "héllo",
    })  # fmt: skip
    e, _ = one(stdlib_tar(tarfile.PAX_FORMAT, [(t, b"")]))
    assert e.xattrs == {
        "security.capability": cap,
        "user.empty": b"",
        "user.note": "héllo".encode(),
    }
    arc = pax([
        (b"LIBARCHIVE.xattr.user.a%20b", b"AAEC"),
        (b"LIBARCHIVE.xattr.user.c", b"aGk"),
        (b"SCHILY.xattr.user.c", b"hi!"),
    ]) + member(header(b"f"))  # fmt: skip
    assert one(arc + END)[0].xattrs == {"user.a b": b"\0\1\2", "user.c": b"hi!"}


def test_nanosecond_and_negative_times() -> None:
    t = ti("f", pax_headers={"mtime": "1700000000.123456789123", "atime": "-1.5"})
    e, _ = one(stdlib_tar(tarfile.PAX_FORMAT, [(t, b"")]))
    assert e.mtime_ns == 1_700_000_000_123_456_789
    assert e.atime_ns == -1_500_000_000
    e, _ = one(pax([(b"mtime", b"12")]) + member(header()) + END)
    assert (e.mtime_ns, e.atime_ns) == (12 * 10**9, None)
    for bad in (b"1.2.3", b"x", b"1e5", b"--1", b".5", b"1.-5", b"+1", b" 1"):
        refused(pax([(b"mtime", bad)]) + member(header()) + END, "mtime")


def test_pax_size_uid_gid_override() -> None:
    arc = pax([(b"size", b"5"), (b"uid", b"4000000000"), (b"gid", b"0")])
    arc += member(header(b"f", size=0), b"12345") + END
    e, data = one(arc)
    assert (e.size, e.uid, e.gid, data) == (5, 4_000_000_000, 0, b"12345")
    for k, v in ((b"size", b"-1"), (b"uid", b"1_0"), (b"gid", b"9" * 40), (b"size", b"0x10")):
        refused(pax([(k, v)]) + member(header()) + END, "invalid")


@pytest.mark.parametrize(
    "body",
    [
        b"10 path=ab\n",  # length says 10, record is 11
        b"12 path=ab\n",
        b"11 path=ab",  # no newline
        b"abc path=x\n",
        b"5 =x\n\n",
        b"6 path\n",  # no '='
        b"8 =abcd\n",  # empty keyword
        b"11 path=a\0\n",  # NUL in a path
        b"-11 path=ab\n",
        b"11path=ab\n\n",
        b"11 path=ab\n\0\0\0",  # trailing junk
    ],
)
def test_pax_record_syntax_is_strict(body: bytes) -> None:
    arc = member(header(b"PaxHeaders/f", b"x", len(body)), body) + member(header()) + END
    refused(arc, "PAX")


def test_pax_empty_path_deletes_the_override() -> None:
    arc = pax([(b"path", b"global")], b"g") + pax([(b"path", b"")]) + member(header(b"hdr"))
    assert one(arc + END)[0].name == "hdr"


def test_non_utf8_names_round_trip() -> None:
    raw, rawlink = b"caf\xe9/\xff\xfe", b"\x80target"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        t = ti(os.fsdecode(raw), tarfile.SYMTYPE, linkname=os.fsdecode(rawlink))
        e, _ = one(stdlib_tar(fmt, [(t, b"")], encoding="utf-8", errors="surrogateescape"))
        assert (os.fsencode(e.name), os.fsencode(e.linkname)) == (raw, rawlink)
    e, _ = one(pax([(b"path", raw * 60)]) + member(header()) + END)
    assert os.fsencode(e.name) == raw * 60


# -- numeric fields --------------------------------------------------------------------------


def test_base256_fields() -> None:
    t = ti("f", uid=2**40, gid=2**33, mtime=-(2**40))
    e, _ = one(stdlib_tar(tarfile.GNU_FORMAT, [(t, b"abc")]))
    assert (e.uid, e.gid, e.mtime_ns) == (2**40, 2**33, -(2**40) * 10**9)
    size = b"\x80" + (5).to_bytes(11, "big")
    e, data = one(member(header(b"f", size=size), b"hello") + END)
    assert (e.size, data) == (5, b"hello")
    huge = b"\x80" + (2**40).to_bytes(11, "big")  # parses fine; the stream is just short
    refused(member(header(b"f", size=huge), b"x" * 512) + END, "truncated tar data")


def test_octal_variants() -> None:
    e, _ = one(member(header(b"f", mode=b"  755 \0", uid=b"0000017 ", gid=b"\0" * 8)) + END)
    assert (e.mode, e.uid, e.gid) == (0o755, 0o17, 0)
    refused(member(header(b"f", uid=b"0000019\0")) + END, "invalid uid")
    refused(member(header(b"f", size=b"+0000000001\0")) + END, "invalid size")


def test_negative_values_refused() -> None:
    neg = b"\xff" * 12  # base-256 -1
    refused(member(header(b"f", size=neg)) + END, "negative size")
    refused(member(header(b"f", uid=b"\xff" * 8)) + END, "negative")
    e, _ = one(member(header(b"f", mtime=neg)) + END)  # pre-1970 is fine
    assert e.mtime_ns == -(10**9)
    refused(member(header(b"f", size=b"\x80" + b"\xff" * 11)) + END, "out of range")


def test_checksum_signed_accepted_bad_refused() -> None:
    name = "é-ü".encode()
    e, _ = one(member(header(name, signed=True)) + END)
    assert e.name == "é-ü"
    refused(member(header(b"f", chksum=b"000000\0 ")) + END, "checksum")
    h = bytearray(header(b"f"))
    h[0] ^= 1
    refused(bytes(h) + END, "bad header checksum")


# -- end of archive, truncation, draining ---------------------------------------------------


def body(arc: bytes) -> bytes:
    """The archive without its trailer and record padding."""
    n = len(arc.rstrip(b"\0"))
    return arc[: n + -n % 512]


def archive() -> bytes:
    return stdlib_tar(tarfile.PAX_FORMAT, all_kinds())


def test_missing_trailer_and_single_zero_block() -> None:
    body = member(header(b"a", size=3), b"abc") + member(header(b"b"))
    for arc in (body, body + bytes(512), body + END, body + END + bytes(8192)):
        assert [e.name for e, _ in read(arc)] == ["a", "b"]
    assert read(b"") == []
    refused(body + bytes(512) + member(header(b"c")), "zero block followed by a header")


def test_trailing_garbage_is_drained() -> None:
    consumed = []

    def gen() -> Iterator[bytes]:
        yield archive()
        yield b"garbage" * 1000
        yield b"more"
        consumed.append(True)

    got = read(gen())
    assert len(got) == 9 and consumed == [True]


def test_truncation_everywhere_is_refused() -> None:
    arc = body(archive())  # without the trailer (a missing trailer is fine)
    for cut in range(1, len(arc)):
        data = arc[:cut]
        try:
            read(data, 97)
        except LayerError as e:
            assert "truncated" in str(e) or "without an entry" in str(e)
        else:  # only header boundaries may end the stream
            assert cut % 512 == 0


def test_truncated_pax_and_messages_name_the_entry() -> None:
    arc = pax([(b"path", b"x" * 600)])
    err = refused(arc[:700], "truncated tar extended header")
    assert "PaxHeaders/x" in str(err) and "offset 0" in str(err)
    err = refused(member(header(b"a")) + header(b"in\nside", size=10) + b"12345", "truncated")
    assert "in\\nside" in str(err)
    refused(header(b"f")[:300], "truncated tar header")


def test_dangling_extended_headers_refused() -> None:
    refused(pax([(b"path", b"x")]) + END, "without an entry")
    refused(member(header(b"././@LongLink", b"K", 2, magic=b"ustar  \0"), b"x\0"), "without")


def test_huge_pax_header_refused_fast_and_bounded() -> None:
    size = 10 * 2**20
    hdr = header(b"PaxHeaders/evil", b"x", size)
    pulled = []

    def gen() -> Iterator[bytes]:
        yield hdr + b"%d path=" % (size) + b"a" * 1000
        for _ in range(size // 65536 + 1):
            pulled.append(1)
            yield b"a" * 65536

    tracemalloc.start()
    t0 = time.perf_counter()
    refused(gen(), "PAX header too large")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1 and peak < 2**20 and len(pulled) == 0
    refused(member(header(b"L", b"L", 2**17)) + END, "long name too large")


def test_input_errors_propagate_unchanged() -> None:
    def gen() -> Iterator[bytes]:
        yield archive()[:2048]
        raise VerificationError("digest mismatch")

    with pytest.raises(VerificationError, match="digest mismatch"):
        read(gen())


# -- chunking, data() ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 7, 511, 512, 513, 4096, None])
def test_chunk_boundaries_do_not_matter(size: int | None) -> None:
    arc = body(archive()) + stdlib_tar(tarfile.GNU_FORMAT, [(ti("g" * 300), b"q" * 1500)])
    expect = read(arc)
    assert len(expect) == 10
    assert read(arc, size) == expect
    assert read([memoryview(arc)]) == expect
    assert read([bytearray(arc[:1000]), b"", arc[1000:]]) == expect


def test_data_is_zero_copy_slices_of_input() -> None:
    chunk = member(header(b"big", size=100_000), b"z" * 100_000) + END
    r = TarReader([chunk])
    for _ in r:
        parts = list(r.data())
    assert len(parts) == 1 and parts[0].obj is chunk and parts[0].nbytes == 100_000


def test_data_skipped_partially_read_and_called_once() -> None:
    arc = member(header(b"a", size=2000), b"A" * 2000) + member(header(b"b", size=3), b"BBB")
    arc += member(header(b"c", size=5), b"CCCCC") + END
    r = TarReader(chunked(arc, 128))
    it = iter(r)
    assert next(it).name == "a"  # data never read
    assert next(it).name == "b"
    d = r.data()
    with pytest.raises(RuntimeError):
        r.data()
    assert next(it).name == "c"  # b's data skipped while unread
    assert list(d) == []  # the stale iterator is finished
    partial = r.data()
    assert bytes(next(partial)) == b"CCCCC"
    assert list(it) == []
    with pytest.raises(RuntimeError):
        r.data()
    with pytest.raises(RuntimeError):
        iter(r)


def test_partial_data_read_then_advance() -> None:
    arc = member(header(b"a", size=2000), b"A" * 2000) + member(header(b"b", size=1), b"B") + END
    r = TarReader(chunked(arc, 700))
    it = iter(r)
    next(it)
    assert bytes(next(r.data())) == b"A" * 188  # 700 - 512 header bytes
    e = next(it)
    assert (e.name, b"".join(r.data())) == ("b", b"B")


# -- sparse files ----------------------------------------------------------------------------


def expand(e: TarEntry, data: bytes) -> bytes:
    assert e.sparse is not None and sum(n for _, n in e.sparse) == len(data)
    out, pos = bytearray(e.size), 0
    for off, n in e.sparse:
        out[off : off + n] = data[pos : pos + n]
        pos += n
    return bytes(out)


@pytest.fixture(scope="module")
def sparse_dir(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is not installed")
    d = tmp_path_factory.mktemp("sparse")
    with open(d / "f", "wb") as f:
        f.truncate(3 * 2**20)
        f.seek(100_000)
        f.write(b"hello")
        f.seek(2_000_000)
        f.write(b"world")
    with open(d / "hole", "wb") as f:
        f.truncate(2**20)
    with open(d / "many", "wb") as f:  # > 4 segments: GNU extended sparse headers
        f.truncate(200 * 8192)
        for i in range(0, 200, 2):
            f.seek(i * 8192)
            f.write(b"x" * 10)
    return d


@pytest.mark.parametrize(
    "opts",
    [
        ["--format=gnu"],
        ["--format=posix", "--sparse-version=0.0"],
        ["--format=posix", "--sparse-version=0.1"],
        ["--format=posix", "--sparse-version=1.0"],
    ],
)
def test_gnu_tar_sparse_formats(sparse_dir, opts: list[str]) -> None:
    files = ["f", "hole", "many"]
    arc = subprocess.run(
        ["tar", "--sparse", *opts, "-cf", "-", *files],
        cwd=sparse_dir, check=True, capture_output=True,
    ).stdout  # fmt: skip
    for size in (None, 1000, 511):
        got = read(arc, size)
        assert [e.name for e, _ in got] == files
        for (e, data), name in zip(got, files, strict=True):
            want = (sparse_dir / name).read_bytes()
            assert e.kind is EntryKind.FILE and e.size == len(want)
            assert expand(e, data) == want
    many = read(arc)[2][0]
    assert many.sparse is not None and len(many.sparse) > 50


def old_sparse(segs: list[tuple[int, int]], realsize: int, stored: bytes) -> bytes:
    """An old GNU 'S' member, with extension blocks beyond 4 segments."""

    def area(entries: list[tuple[int, int]]) -> bytes:
        return b"".join(b"%011o\0%011o\0" % e for e in entries)

    first, rest = segs[:4], segs[4:]
    h = bytearray(header(b"sp", b"S", len(stored), magic=b"ustar  \0"))
    h[386:495] = area(first).ljust(96, b"\0") + bytes([bool(rest)]) + b"%011o\0" % realsize
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    out = bytes(h)
    while rest:
        blk, rest = rest[:21], rest[21:]
        out += area(blk).ljust(504, b"\0") + bytes([bool(rest)]) + bytes(7)
    return out + stored + bytes(-len(stored) % 512)


def test_old_gnu_sparse_with_extended_headers() -> None:
    segs = [(i * 1000, 10) for i in range(30)]
    stored = bytes(range(256)) + bytes(range(44))
    arc = old_sparse(segs, 40_000, stored) + member(header(b"after", size=1), b"!") + END
    for size in (None, 1, 513):
        got = read(arc, size)
        e, data = got[0]
        assert (e.name, e.size, e.sparse, data) == ("sp", 40_000, tuple(segs), stored)
        assert got[1][0].name == "after" and got[1][1] == b"!"


def test_pax_sparse_hand_made() -> None:
    recs = [(b"GNU.sparse.size", b"100"), (b"GNU.sparse.numblocks", b"2")]
    recs += [(b"GNU.sparse.offset", b"10"), (b"GNU.sparse.numbytes", b"3")]
    recs += [(b"GNU.sparse.offset", b"50"), (b"GNU.sparse.numbytes", b"2")]
    e, data = one(pax(recs) + member(header(b"s", size=5), b"abcde") + END)
    assert (e.size, e.sparse, data) == (100, ((10, 3), (50, 2)), b"abcde")
    m01 = [(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"0,1,8,1"), (b"GNU.sparse.name", b"n")]
    e, data = one(pax(m01) + member(header(b"GNUSparseFile.1/n", size=2), b"ab") + END)
    assert (e.name, e.size, e.sparse, data) == ("n", 9, ((0, 1), (8, 1)), b"ab")
    v10 = [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")]
    v10 += [(b"GNU.sparse.realsize", b"4096"), (b"GNU.sparse.name", b"m")]
    body = b"2\n0\n2\n4000\n1\n".ljust(512, b"\0") + b"xyz"
    e, data = one(pax(v10) + member(header(b"GNUSparseFile.1/m", size=len(body)), body) + END)
    assert (e.name, e.size, e.sparse, data) == ("m", 4096, ((0, 2), (4000, 1)), b"xyz")


@pytest.mark.parametrize(
    ("recs", "stored", "match"),
    [
        ([(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"5,2,0,1")], 3, "sparse map"),
        ([(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"0,5,4,2")], 7, "sparse map"),
        ([(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"8,5")], 5, "sparse map"),
        ([(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"0,5")], 4, "covers 5 bytes"),
        ([(b"GNU.sparse.size", b"9"), (b"GNU.sparse.map", b"0,5,1")], 5, "GNU.sparse.map"),
        ([(b"GNU.sparse.numbytes", b"1")], 1, "out of order"),
        ([(b"GNU.sparse.offset", b"1")], 1, "without"),
        ([(b"GNU.sparse.map", b"0,1"), (b"GNU.sparse.numblocks", b"3")], 1, "numblocks"),
        ([(b"GNU.sparse.major", b"2"), (b"GNU.sparse.minor", b"0")], 1, "unsupported"),
        ([(b"GNU.sparse.map", b"0,-1")], 1, "invalid"),
        ([(b"GNU.sparse.map", b"," * (2**17 + 1))], 1, "oversized"),
    ],
)
def test_pax_sparse_refused(recs: list, stored: int, match: str) -> None:
    refused(pax(recs) + member(header(b"s", size=stored), b"x" * stored) + END, match)


def test_sparse_1x0_map_refused() -> None:
    v10 = [(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0")]
    for body in (
        b"1\n0\n",  # map truncated: data area shorter than a block
        b"2\n0\n1\n".ljust(512, b"\0"),  # map incomplete, then padding
        b"70000\n".ljust(512, b"\0"),  # too many entries
        b"1\n0\n1\n".ljust(512, b"\0") + b"ab",  # map covers 1 byte, 2 stored
        b"1\n0\n1" + b"1" * 600,  # endless number
    ):
        refused(pax(v10) + member(header(b"s", size=len(body)), body) + END, "sparse")
    refused(pax(v10) + member(header(b"d", b"5")) + END, "non-regular")


# -- hostile input: only TarEntry or LayerError ---------------------------------------------


def consume(data: bytes, size: int) -> None:
    r = TarReader(chunked(data, size))
    try:
        for e in r:
            assert isinstance(e, TarEntry)
            for part in r.data():
                assert isinstance(part, memoryview)
    except LayerError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.integers(1, 1100))
def test_random_bytes_never_crash(data: bytes, size: int) -> None:
    consume(data, size)
    consume(header(b"x", b"x", len(data)) + data, size)


SPARSE_AT = len(body(archive()))
VALID = body(archive()) + b"".join(
    [
        pax([(b"GNU.sparse.map", b"0,1,5,1"), (b"GNU.sparse.size", b"9")]),
        member(header(b"s", size=2), b"ab"),
        old_sparse([(0, 1), (3, 1), (5, 1), (7, 1), (9, 1)], 10, b"abcde"),
        member(header(b"././@LongLink", b"L", 4, magic=b"ustar  \0"), b"abc\0"),
        member(header(b"q", b"2", linkname=b"z")),
    ]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=8),
    st.integers(0, len(VALID)),
    st.integers(1, 1100),
)
def test_mutated_archive_never_crashes(edits: list, cut: int, size: int) -> None:
    data = bytearray(VALID[:cut])
    for pos, val in edits:
        if pos < len(data):
            data[pos] = val
    consume(bytes(data), size)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 511), st.binary(min_size=1, max_size=12))
def test_mutated_headers_with_fixed_checksum_never_crash(pos: int, patch: bytes) -> None:
    # repair the checksum so the mutation reaches the field parsers
    data = bytearray(VALID)
    for off in (0, SPARSE_AT):  # a plain header and a PAX header
        h = data[off : off + 512]
        h[pos : pos + len(patch)] = patch
        h = h[:512]
        h[148:156] = b" " * 8
        h[148:156] = b"%06o\0 " % sum(h)
        data[off : off + 512] = h
    consume(bytes(data), 512)
