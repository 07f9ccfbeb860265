"""Fuzzing (issue #5): the tar reader, the decompressors and the applier end to end.

What is fuzzed, and the property each must keep:

* `unpack.layer.tarstream.TarReader` on random bytes and on mutations (byte flips and
  sets, truncations, inserted/deleted/duplicated 512-byte blocks) of valid archives in
  every format the reader knows, fed in random chunk sizes: it yields entries or raises
  `unpack.errors.LayerError`, nothing else, and every file's data is as long as it says.
* `unpack.layer.compression.decompressed` + `TarReader` on mutated gzip and zstd blobs:
  only `LayerError`.
* The whole unpack in-process (`unpack.verbs.unpack.unpack` with
  `UnpackOptions(write_config=False)`, openat2 and the fallback walker) on random small
  layer lists of hostile-ish entries: names from `a`, `b`, `..`, `.`, `/`, `.wh.`,
  `.wh..wh..opq`; files, dirs, symlinks, hardlinks; symlink targets `/`, `..`, `a` and a
  host sentinel dir `/tmp/oci-unpack-fuzz-<random>`. Outcomes: success or an
  `UnpackError` subclass (never another exception), and never a change outside the
  bundle: the temp dir around it and the sentinel dir are snapshotted, and `/a`, `/b`,
  `/tmp/a`, `/tmp/b` must not appear.

The suite runs a short campaign (60 examples per property, the same ones on every run;
a few seconds). The long run, with new random examples:

    python -m fixtures.fuzz --examples 5000          # every property, 5000 examples each
    python -m fixtures.fuzz --examples 20000 -k applier --seed 1234

`fixtures.fuzz` sets `OCI_UNPACK_FUZZ_EXAMPLES` and runs this file, and the fast-lane
differential of test_fastlane.py, under pytest (extra arguments go to pytest). Failing
examples are saved in `.hypothesis/` and replayed first on the next run; hypothesis
prints the minimal failing layer list.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import diff, make_host_dir, remove, snapshot
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fixtures.layout import LayoutWriter, gzip_compress, zstd_compress
from fixtures.tarwriter import Entry, build_tar, dirent, hardlink, pax_records, reg, symlink
from unpack import UnpackOptions, unpack_image
from unpack.errors import LayerError, UnpackError
from unpack.image.compression import Compression
from unpack.layer.decompress import decompressed
from unpack.layer.tarstream import EntryKind, TarReader

EXAMPLES = int(os.environ.get("OCI_UNPACK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HOST = "@HOST@"  # the sentinel dir, substituted per run
ESCAPE_PROBES = ("/a", "/b", "/tmp/a", "/tmp/b")

# -- the tar reader ---------------------------------------------------------------------------


def _valid_archives() -> list[bytes]:
    """Valid archives covering the reader's formats and extensions."""
    long = "dir/" + "n" * 120
    sparse = b"A" * 512 + bytes(1536) + b"B" * 100
    return [
        build_tar([dirent("d"), reg("d/f", b"data" * 40, xattrs={"user.x": b"1"}),
                   symlink("d/l", "/etc/passwd"), hardlink("d/h", "d/f"),
                   Entry("d/c", "chardev", devmajor=1, devminor=3), Entry("d/p", "fifo")]),
        build_tar([reg(long, b"pax long name"), symlink(long + "l", "t" * 150),
                   reg("u", b"x", uid=10_000_000, mtime=1.5)]),
        build_tar([reg(long, b"gnu long", format="gnu"),
                   symlink("gl", "t" * 150, format="gnu"),
                   Entry("gs", content=sparse, sparse=[(0, 512), (2048, 100)], format="gnu")]),
        build_tar([reg("a/" * 40 + "ustar", b"prefix", format="ustar"),
                   Entry("ps", content=sparse, sparse=[(0, 512), (2048, 100)], format="pax"),
                   Entry("pax_global_header", "g", content=pax_records({"comment": "global"})),
                   reg("after-global", b"g")]),
        build_tar([reg("../x", b"1"), reg("/abs", b"2"), reg(".wh.x"), reg("a/.wh..wh..opq")]),
    ]


VALID = _valid_archives()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid archive with a few mutations."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "dup"]))
        size = len(data)
        if kind == "flip" and size:
            pos = draw(st.integers(0, size - 1))
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and size:
            pos = draw(st.integers(0, size - 1))
            data[pos] = draw(st.sampled_from([0, 0x20, 0x30, 0x37, 0x80, 0xFF, 0x2F, 0x0A]))
        elif kind == "truncate":
            del data[draw(st.integers(0, size)) :]
        elif kind == "insert":
            at = 512 * draw(st.integers(0, size // 512))
            block = draw(st.one_of(st.just(bytes(512)), st.binary(min_size=512, max_size=512)))
            data[at:at] = block
        elif kind == "delete" and size >= 512:
            at = 512 * draw(st.integers(0, size // 512 - 1))
            del data[at : at + 512]
        elif kind == "dup" and size >= 512:
            at = 512 * draw(st.integers(0, size // 512 - 1))
            data[at:at] = data[at : at + 512]
    return bytes(data)


def _chunks(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    pos = 0
    for size in sizes:
        if pos >= len(data):
            break
        yield data[pos : pos + size]
        pos += size
    if pos < len(data):
        yield data[pos:]


def read_all(data: bytes, sizes: list[int], take_data: list[bool]) -> int:
    """Read every entry (and the data of some); check each file's data length."""
    reader = TarReader(_chunks(data, sizes))
    count = 0
    for count, entry in enumerate(reader, 1):
        assert isinstance(entry.name, str) and isinstance(entry.linkname, str)
        assert 0 <= entry.mode <= 0o7777 and entry.uid >= 0 and entry.gid >= 0
        assert entry.size >= 0
        if take_data and not take_data[count % len(take_data)]:
            continue
        got = sum(len(chunk) for chunk in reader.data())
        if entry.kind is EntryKind.FILE:
            expected = entry.size if entry.sparse is None else sum(n for _, n in entry.sparse)
            assert got == expected, f"{entry.name!r}: {got} data bytes, expected {expected}"
        else:
            assert got == 0
    return count


CHUNK_SIZES = st.lists(st.integers(1, 1500), max_size=8)
TAKE = st.lists(st.booleans(), max_size=4)


@FUZZ
@given(data=st.binary(max_size=3000), sizes=CHUNK_SIZES, take=TAKE)
def test_tar_reader_random_bytes(data: bytes, sizes: list[int], take: list[bool]) -> None:
    with contextlib.suppress(LayerError):
        read_all(data, sizes, take)


@FUZZ
@given(data=mutated(), sizes=CHUNK_SIZES, take=TAKE)
def test_tar_reader_mutated_archives(data: bytes, sizes: list[int], take: list[bool]) -> None:
    with contextlib.suppress(LayerError):
        read_all(data, sizes, take)


def test_valid_archives_read_cleanly() -> None:
    """The unmutated corpus is valid, so mutations start from real archives."""
    for data in VALID:
        assert read_all(data, [], []) >= 3


@FUZZ
@given(
    data=st.sampled_from(VALID),
    compression=st.sampled_from([Compression.GZIP, Compression.ZSTD]),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_decompression_mutated(
    data: bytes, compression: Compression, edits: list[tuple[float, int]], cut: float | None
) -> None:
    blob = bytearray(gzip_compress(data) if compression is Compression.GZIP
                     else zstd_compress(data))  # fmt: skip
    for where, value in edits:
        blob[min(int(where * len(blob)), len(blob) - 1)] = value
    if cut is not None:
        del blob[int(cut * len(blob)) :]
    try:
        read_all_decompressed(bytes(blob), compression)
    except LayerError:
        pass
    except zlib.error as error:  # pragma: no cover - would be a bug
        pytest.fail(f"zlib error escaped: {error}")


def read_all_decompressed(blob: bytes, compression: Compression) -> None:
    chunks = [blob[i : i + 700] for i in range(0, len(blob), 700)]
    reader = TarReader(decompressed(chunks, compression, "fuzzed layer"))
    for _ in reader:
        for _ in reader.data():
            pass


# -- the applier, end to end --------------------------------------------------------------------

# weighted: mostly real names, so most layer lists get past the first refused entry
COMPONENTS = ["a"] * 6 + ["b"] * 6 + ["..", "..", ".", ""] + [".wh.a", ".wh.b", ".wh..wh..opq",
                                                              ".wh."]
TARGETS = ["/", "..", "a", "b", "../..", "a/b", "b/../..", ".", HOST, HOST + "/a", HOST + "/b",
           "/tmp", "/a", "../../a"]  # fmt: skip

names = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from(["", "", "/", "./", "../"]),
    st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=4),
)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "symlink", "hardlink", "fifo"]))
    name = draw(names)
    mode = draw(st.sampled_from([None, 0o644, 0o755, 0o4755, 0o000, 0o1777]))
    uid = draw(st.sampled_from([0, 0, 1000]))
    if kind == "file":
        return reg(name, draw(st.sampled_from([b"", b"fuzz\n"])), mode=mode, uid=uid)
    if kind in ("dir", "fifo"):
        return Entry(name, kind, mode=mode, uid=uid)
    if kind == "symlink":
        return symlink(name, draw(st.sampled_from(TARGETS)), uid=uid)
    return hardlink(name, draw(st.one_of(names, st.sampled_from(TARGETS))))


layer_lists = st.lists(st.lists(entries(), min_size=1, max_size=8), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def sentinel() -> Iterator[Path]:
    """/tmp/oci-unpack-fuzz-<random>/ with `a` (file) and `b/a`."""
    host = make_host_dir("oci-unpack-fuzz-")
    (host / "a").write_bytes(b"host a\n")
    (host / "b").mkdir()
    (host / "b" / "a").write_bytes(b"host b/a\n")
    try:
        yield host
    finally:
        remove(host)


def _substitute(entry: Entry, host: str) -> Entry:
    name = entry.name.replace(HOST, host) if isinstance(entry.name, str) else entry.name
    link = entry.linkname.replace(HOST, host) if isinstance(entry.linkname, str) else ""
    return Entry(name, entry.type, mode=entry.mode, uid=entry.uid, gid=entry.gid,
                 content=entry.content, linkname=link)  # fmt: skip


def _outside(rel: str) -> bool:
    return rel == "bundle" or rel.startswith(("bundle/", ".bundle.oci-unpack-"))


def apply_layers(layers: list[list[Entry]], host: Path, use_openat2: bool) -> str:
    """Unpack `layers` in-process into a fresh temp dir; check the property.

    Returns what happened ("ok" or the error, quoted names elided) for statistics.
    """
    probes = [p for p in ESCAPE_PROBES if not os.path.lexists(p)]
    top = Path(tempfile.mkdtemp(prefix="oci-unpack-fuzzrun-", dir="/tmp"))
    try:
        (top / "a").write_bytes(b"sentinel a\n")
        (top / "b").mkdir()
        (top / "b" / "a").write_bytes(b"sentinel b/a\n")
        writer = LayoutWriter(top / "image")
        descriptors = [
            writer.add_layer(build_tar(_substitute(e, str(host)) for e in layer), "none")
            for layer in layers
        ]
        writer.tag(writer.add_image(descriptors, {"config": {}}), "latest")
        writer.write()
        before = (snapshot(top, _outside, include_root=False), snapshot(host))
        dest = top / "bundle"
        warnings: list[str] = []
        options = UnpackOptions(write_config=False, use_openat2=use_openat2)
        try:
            unpack_image(str(top / "image"), str(dest), options, warn=warnings.append)
        except UnpackError as error:
            message = re.sub(r"'[^']*'", "X", str(error))[:50]
            outcome = f"{type(error).__name__}: {message}"
            assert not dest.exists(), "DIR exists after an error"
        else:
            outcome = "ok"
            assert sorted(os.listdir(dest)) == ["rootfs"]
        after = (snapshot(top, _outside, include_root=False), snapshot(host))
        changes = [line for b, a in zip(before, after, strict=True) for line in diff(b, a)]
        assert not changes, f"changed outside the bundle: {changes}"
        assert not [n for n in os.listdir(top) if n.startswith(".bundle.oci-unpack-")]
        appeared = [p for p in probes if os.path.lexists(p)]
        assert not appeared, f"created outside: {appeared}"
        return outcome
    finally:
        shutil.rmtree(top, ignore_errors=True)


@FUZZ
@given(layers=layer_lists, use_openat2=st.booleans())
def test_applier_confined(sentinel: Path, layers: list[list[Entry]], use_openat2: bool) -> None:
    if use_openat2:
        from unpack.fs import openat2

        assume(openat2.available())
    event(f"unpack: {apply_layers(layers, sentinel, use_openat2)}")


def test_applier_harness_sees_a_plain_image(sentinel: Path, tmp_path: Path) -> None:
    """A benign layer list passes through the same harness (it is not vacuous)."""
    layers = [[dirent("a"), reg("a/b", b"x"), symlink("l", HOST)]]
    assert apply_layers(layers, sentinel, False) == "ok"
    with pytest.raises(AssertionError, match="changed outside"):
        _harness_self_check(sentinel)


def _harness_self_check(host: Path) -> None:
    """Like apply_layers, but writes into the sentinel dir: the harness must notice."""
    before = snapshot(host)
    (host / "a").write_bytes(b"changed\n")
    try:
        changes = diff(before, snapshot(host))
        assert not changes, f"changed outside the bundle: {changes}"
    finally:
        (host / "a").write_bytes(b"host a\n")
