"""The fast lane's reading of tar headers is the Python reader's and policy's, entry by entry.

`_fastlane.parse_plain` (the C decision "is this entry plain, and what does it say") is
run on generated headers — plain ones, and ones mutated in every field the C code looks
at — next to `TarReader` and `policy.admit`. Wherever C says "plain", Python must read
the same entry and admit it as a CREATE of the same path; and the plain entries of a
layer must really be taken by C. The C code holds no rule of its own: its numbers come
from the policy through `configure`, and changing them changes what it takes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.tarwriter import Entry, base256, build_tar, encode_entry, header
from unpack.errors import LayerError
from unpack.layer import fastlane
from unpack.layer.policy import (
    NAME_MAX,
    PATH_MAX,
    WHITEOUT_PREFIX,
    Action,
    admit,
    clean_path,
)
from unpack.layer.tarstream import EntryKind, TarReader

pytestmark = pytest.mark.skipif(not fastlane.AVAILABLE, reason="the C fast lane is not built")

NAMES = ["d/a", "a", "./d/a", "d/e/f", "d/" + "n" * 150, "d/" + "x" * NAME_MAX,
         "d/" + "x" * (NAME_MAX + 1), "d/.wh.a", "d/.wh..wh..opq", "d/..", "d/.", "d/a/",
         "d//a", "/d/a", "d/caf\u00e9", "d/sp ace", "d/\x01ctl", "../a", "d/.hidden"]
TYPES = ["0", "\0", "5", "7", "2", "1", "6", "S"]
MODES = [0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o100644, 0o40755, 0o7777]


def _python(data: bytes) -> tuple[object, int] | None:
    """The first entry as the Python reader and policy see it: (member, offset after it)."""
    reader = TarReader([data])
    try:
        for entry in reader:
            member = admit(entry)
            for _ in reader.data():
                pass
            return member, reader._base + reader._pos + reader._after
    except LayerError:
        return None
    return None


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """One entry (maybe behind a PAX header), plain or mutated in a field C reads."""
    name = draw(st.sampled_from(NAMES))
    kind = draw(st.sampled_from(TYPES))
    content = draw(st.sampled_from([b"", b"data", b"z" * 700])) if kind != "5" else b""
    entry = Entry(name, kind, mode=draw(st.sampled_from(MODES)),
                  uid=draw(st.sampled_from([0, 1000, 8**7 - 1])),
                  mtime=draw(st.sampled_from([0, 1700000000, 8**11 - 1])), content=content,
                  linkname="t" if kind in "21" else "")
    raw: dict[str, bytes | int] = {}
    mutation = draw(st.sampled_from(["none"] * 4 + [
        "spaces", "nul-padded", "base256-uid", "bad-checksum", "signed-checksum", "prefix",
        "empty-mode", "space-inside", "pax-extra", "gnu-magic", "size-mismatch"]))
    if mutation == "spaces":
        raw["mode"] = b" %06o " % (entry.mode & 0o777)
    elif mutation == "nul-padded":
        raw["uid"] = b"\0\0%05o\0" % entry.uid if entry.uid < 8**5 else b"%07o\0" % entry.uid
    elif mutation == "base256-uid":
        raw["uid"] = base256(entry.uid, 8)
    elif mutation == "bad-checksum":
        raw["chksum"] = b"0000000\0"
    elif mutation == "prefix" and len(name.encode()) <= 100:
        entry.format = "ustar"
        raw["prefix"] = b"pre"
    elif mutation == "empty-mode":
        raw["mode"] = b"\0" * 8
    elif mutation == "space-inside":
        raw["mtime"] = b"1 2345670000"
    elif mutation == "pax-extra":
        entry.pax = {"mtime": "1.5"}
    elif mutation == "gnu-magic":
        entry.format = "gnu" if len(name) <= 100 else "pax"
    elif mutation == "size-mismatch":
        raw["size"] = 5000
    entry.raw = raw
    data = encode_entry(entry)
    if mutation == "signed-checksum":
        data = _signed_checksum(data)
    return data + bytes(1024)


def _entry_header(data: bytes) -> int:
    """The offset of the entry's own header (after a PAX header and its data, if any)."""
    if data[156:157] != b"x":
        return 0
    size = int(data[124:136].strip(b"\0 ") or b"0", 8)
    return 512 + size + (-size % 512)


def _signed_checksum(data: bytes) -> bytes:
    """Re-sum the entry's header with signed chars (old tars did): Python takes it, C not."""
    start = _entry_header(data)
    head = bytearray(data[start : start + 512])
    head[0] = 0xE9  # a byte above 127 in the name
    head[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in head)
    head[148:156] = b"%06o\0 " % (signed & 0o777777)
    return data[:start] + bytes(head) + data[start + 512 :]


@settings(max_examples=600, deadline=None)
@given(data=headers())
def test_c_reads_a_plain_entry_as_python_does(data: bytes) -> None:
    parsed = fastlane.parse_plain(data, 0)
    if parsed is None:
        return  # C may leave any entry to Python
    name, is_dir, mode, uid, gid, size, mtime, end = parsed
    python = _python(data)
    assert python is not None, f"C took an entry Python refuses: {parsed}"
    member, after = python
    assert member.action is Action.CREATE
    entry = member.entry
    assert entry.kind is (EntryKind.DIR if is_dir else EntryKind.FILE)
    directory, _, base = name.decode("ascii").rstrip("/").rpartition("/")
    assert member.parts == (*clean_path(directory), base)
    assert (entry.mode, entry.uid, entry.gid) == (mode, uid, gid)
    assert entry.mtime_ns == mtime * 10**9 and entry.size == size
    assert end == after


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(["d/a", "./d/a", "d/" + "n" * 150, "a", "d/e/f"]),
       kind=st.sampled_from(["0", "\0", "5"]), mode=st.sampled_from([0o644, 0o700, 0o755]),
       content=st.sampled_from([b"", b"x" * 1000]))
def test_plain_entries_are_taken(name: str, kind: str, mode: int, content: bytes) -> None:
    """The converse, for what C must not leave behind: plain entries are plain to it."""
    data = build_tar([Entry(name, kind, mode=mode, content=b"" if kind == "5" else content)])
    parsed = fastlane.parse_plain(data, 0)
    assert parsed is not None
    assert parsed[0] == name.encode()


def test_the_numbers_are_the_policys() -> None:
    """configure() is what decides: a different NAME_MAX or whiteout prefix changes the
    verdict, and the policy's own values are back afterwards."""
    longest = build_tar([Entry("d/" + "x" * NAME_MAX)])
    assert fastlane.parse_plain(longest, 0) is not None
    assert fastlane.parse_plain(build_tar([Entry("d/" + WHITEOUT_PREFIX + "a")]), 0) is None
    assert fastlane.parse_plain(build_tar([Entry("d/.xx.a")]), 0) is not None
    try:
        fastlane._fastlane.configure(NAME_MAX - 1, PATH_MAX, b".xx.")
        assert fastlane.parse_plain(longest, 0) is None
        assert fastlane.parse_plain(build_tar([Entry("d/.xx.a")]), 0) is None
        assert fastlane.parse_plain(build_tar([Entry("d/" + WHITEOUT_PREFIX + "a")]), 0)
    finally:
        fastlane._fastlane.configure(NAME_MAX, PATH_MAX, WHITEOUT_PREFIX.encode())
    assert fastlane.parse_plain(longest, 0) is not None


def test_a_header_alone_is_never_taken() -> None:
    """Data cut off by the end of the buffer: left to the reader, which reads on."""
    entry = header({"name": b"d/a", "mode": 0o644, "uid": 0, "gid": 0, "size": 100,
                    "mtime": 0, "typeflag": b"0", "magic": b"ustar\0", "version": b"00"})
    assert fastlane.parse_plain(entry, 0) is None
    assert fastlane.parse_plain(entry + bytes(512), 0) is not None
