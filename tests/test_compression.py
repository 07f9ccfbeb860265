"""Layer decompression: chosen by media type, confirmed by magic, strict about stream ends."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import zstandard
from conftest import needs_root, run_cli

from fixtures.layout import LayoutWriter, digest_of, gzip_compress, zstd_compress
from fixtures.tarwriter import build_tar, reg
from fixtures.variants import DATA_TXT, GARBAGE, SMALL_EXPECTED
from unpack.errors import EXIT_IMAGE, LayerError
from unpack.image.compression import Compression, sniff
from unpack.layer.decompress import CHUNK_SIZE, decompressed

PAYLOAD = b"".join(b"payload line %06d\n" % i for i in range(20000))  # ~400 KB
SKIPPABLE = struct.pack("<II", 0x184D2A50, 5) + b"skip!"


def inflate(chunks: Iterable[bytes], compression: Compression) -> bytes:
    return b"".join(bytes(c) for c in decompressed(chunks, compression, "layer L"))


def bytewise(data: bytes) -> Iterator[bytes]:
    """Feed a stream one byte per chunk, to cross every boundary."""
    return (data[i : i + 1] for i in range(len(data)))


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def fails(chunks: Iterable[bytes], compression: Compression) -> LayerError:
    with pytest.raises(LayerError) as excinfo:
        for _ in decompressed(chunks, compression, "layer L"):
            pass
    assert str(excinfo.value).startswith("layer L: ")
    assert excinfo.value.exit_code == EXIT_IMAGE
    return excinfo.value


# -- choice by media type, confirmed by magic ------------------------------------------------


def test_detect_by_magic() -> None:
    assert sniff(gzip_compress(b"x")) is Compression.GZIP
    assert sniff(zstd_compress(b"x")) is Compression.ZSTD
    assert sniff(build_tar([reg("a")])) is Compression.NONE
    assert sniff(b"") is Compression.NONE
    assert sniff(b"\x1f") is Compression.NONE


def test_none_passes_the_bytes_through() -> None:
    tar = build_tar([reg("a", b"abc")])
    chunks = pieces(tar, 100)
    assert inflate(chunks, Compression.NONE) == tar
    assert inflate([], Compression.NONE) == b""


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_round_trip(compression: Compression) -> None:
    blob = gzip_compress(PAYLOAD) if compression is Compression.GZIP else zstd_compress(PAYLOAD)
    assert inflate([blob], compression) == PAYLOAD
    assert inflate(pieces(blob, 1000), compression) == PAYLOAD
    assert inflate(pieces(blob, 3), compression) == PAYLOAD


@pytest.mark.parametrize(
    ("declared", "content"),
    [
        (Compression.GZIP, Compression.ZSTD),
        (Compression.GZIP, Compression.NONE),
        (Compression.ZSTD, Compression.GZIP),
        (Compression.ZSTD, Compression.NONE),
        (Compression.NONE, Compression.GZIP),
        (Compression.NONE, Compression.ZSTD),
    ],
)
def test_media_type_and_magic_must_agree(declared: Compression, content: Compression) -> None:
    tar = build_tar([reg("a", b"abc")])
    blob = {Compression.GZIP: gzip_compress, Compression.ZSTD: zstd_compress}.get(
        content, lambda d: d
    )(tar)
    error = fails(bytewise(blob), declared)  # the magic spread over several chunks
    assert f"media type says {declared.value} but the content is {content.value}" in str(error)


def test_cli_gzip_media_type_with_zstd_content(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    tar = build_tar([reg("a.txt", b"a\n")])
    desc, diff_id = out.add_layer(tar, "gzip", blob=zstd_compress(tar))
    out.tag(out.add_image([(desc, diff_id)], {"config": {}}), "latest")
    out.write()
    result = run_cli(tmp_path / "img", tmp_path / "bundle")
    assert result.returncode == 3
    assert result.stderr.startswith("oci-unpack: error: ")
    assert desc["digest"] in result.stderr
    assert "media type says gzip but the content is zstd" in result.stderr
    assert not (tmp_path / "bundle").exists()


def test_empty_blob_for_a_compressed_media_type() -> None:
    error = fails([], Compression.GZIP)
    assert "media type says gzip but the content is none" in str(error)


# -- gzip ----------------------------------------------------------------------------------


def test_multi_member_gzip() -> None:
    cut1, cut2 = 12345, 300001
    blob = (gzip_compress(PAYLOAD[:cut1]) + gzip_compress(b"")
            + gzip_compress(PAYLOAD[cut1:cut2]) + gzip_compress(PAYLOAD[cut2:]))
    assert inflate([blob], Compression.GZIP) == PAYLOAD
    assert inflate(pieces(blob, 777), Compression.GZIP) == PAYLOAD
    assert inflate(bytewise(blob), Compression.GZIP) == PAYLOAD


def test_gzip_with_optional_header_fields() -> None:
    """FNAME and a non-zero mtime, as `gzip file.tar` writes them."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="layer.tar", mode="wb", fileobj=buffer, mtime=1700000000) as f:
        f.write(PAYLOAD)
    blob = buffer.getvalue()
    assert blob[3] & 0x08  # FNAME is set
    assert inflate(pieces(blob, 7), Compression.GZIP) == PAYLOAD


def test_multi_member_gzip_split_at_member_boundary() -> None:
    first, second = gzip_compress(PAYLOAD[:1000]), gzip_compress(PAYLOAD[1000:])
    assert inflate([first, second], Compression.GZIP) == PAYLOAD


@pytest.mark.parametrize("cut", [2, 5, 10, 100, 3000, -8, -4, -1])
def test_truncated_gzip(cut: int) -> None:
    blob = gzip_compress(PAYLOAD)
    error = fails(pieces(blob[:cut], 1024), Compression.GZIP)
    assert "truncated gzip stream" in str(error) or "corrupt gzip stream" in str(error)


def test_truncated_second_gzip_member() -> None:
    blob = gzip_compress(PAYLOAD[:1000]) + gzip_compress(PAYLOAD[1000:])[:500]
    error = fails([blob], Compression.GZIP)
    assert "truncated gzip stream" in str(error)


def test_corrupt_gzip_checksum() -> None:
    blob = bytearray(gzip_compress(PAYLOAD))
    blob[-6] ^= 0xFF  # the CRC32 in the trailer
    error = fails([bytes(blob)], Compression.GZIP)
    assert "corrupt gzip stream" in str(error)


@pytest.mark.parametrize(
    "garbage", [b"garbage after the stream", b"\0" * 512, b"\x1f", b"\x1f\x8b"]
)
def test_garbage_after_gzip(garbage: bytes) -> None:
    blob = gzip_compress(PAYLOAD) + garbage
    error = fails([blob], Compression.GZIP)
    assert "gzip stream" in str(error)
    error = fails([gzip_compress(PAYLOAD), garbage], Compression.GZIP)  # in its own chunk
    assert "gzip stream" in str(error)


# -- zstd ----------------------------------------------------------------------------------


def test_multi_frame_zstd() -> None:
    cut1, cut2 = 12345, 300001
    blob = (zstd_compress(PAYLOAD[:cut1]) + zstd_compress(b"")
            + zstd_compress(PAYLOAD[cut1:cut2]) + zstd_compress(PAYLOAD[cut2:]))
    assert inflate([blob], Compression.ZSTD) == PAYLOAD
    assert inflate(pieces(blob, 777), Compression.ZSTD) == PAYLOAD
    assert inflate(bytewise(blob), Compression.ZSTD) == PAYLOAD


def test_zstd_with_checksum_and_without_content_size() -> None:
    compressor = zstandard.ZstdCompressor(write_checksum=True, write_content_size=False)
    writer = compressor.compressobj()
    blob = writer.compress(PAYLOAD) + writer.flush()
    assert inflate(pieces(blob, 4096), Compression.ZSTD) == PAYLOAD


def test_zstd_skippable_frame_between_and_after_frames() -> None:
    blob = zstd_compress(PAYLOAD[:1000]) + SKIPPABLE + zstd_compress(PAYLOAD[1000:]) + SKIPPABLE
    assert inflate([blob], Compression.ZSTD) == PAYLOAD
    assert inflate(pieces(blob, 3), Compression.ZSTD) == PAYLOAD


def test_zstd_starting_with_a_skippable_frame() -> None:
    blob = SKIPPABLE + zstd_compress(PAYLOAD)
    assert inflate([blob], Compression.ZSTD) == PAYLOAD


def _zstd_checked(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


@pytest.mark.parametrize("cut", [4, 5, 8, 20, 1000, 0.5, -5, -4, -1])
def test_truncated_zstd(cut: int | float) -> None:
    """Cut inside the frame header, inside a block, and inside the checksum."""
    blob = _zstd_checked(os.urandom(200000) + PAYLOAD)
    end = int(len(blob) * cut) if isinstance(cut, float) else cut
    error = fails(pieces(blob[:end], 4096), Compression.ZSTD)
    assert "truncated zstd stream" in str(error) or "corrupt zstd stream" in str(error)


def test_truncated_second_zstd_frame_mid_frame() -> None:
    second = zstd_compress(PAYLOAD[1000:])
    blob = zstd_compress(PAYLOAD[:1000]) + second[: len(second) // 2]
    error = fails(pieces(blob, 1000), Compression.ZSTD)
    assert "truncated zstd stream" in str(error)


def test_zstd_cut_at_a_block_boundary_is_truncated() -> None:
    """A multi-block frame cut after a whole non-last block looks clean to a naive reader."""
    data = os.urandom(400000)  # incompressible: raw blocks of 128 KiB
    blob = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    header = 6  # magic + frame header descriptor + window descriptor
    cut = header + 3 + (128 << 10)  # right after the first raw block
    assert blob[header] & 1 == 0 and (blob[header] >> 1) & 3 == 0  # a raw, non-last block
    error = fails([blob[:cut]], Compression.ZSTD)
    assert "truncated zstd stream" in str(error)


@pytest.mark.parametrize("garbage", [b"garbage after the stream", b"\0" * 512, b"\0"])
def test_garbage_after_zstd(garbage: bytes) -> None:
    blob = zstd_compress(PAYLOAD)
    error = fails([blob + garbage], Compression.ZSTD)
    assert "zstd stream" in str(error)
    error = fails([blob, garbage], Compression.ZSTD)
    assert "zstd stream" in str(error)


def test_corrupt_zstd_content() -> None:
    blob = bytearray(_zstd_checked(PAYLOAD))
    blob[-2] ^= 0xFF  # the checksum
    error = fails([bytes(blob)], Compression.ZSTD)
    assert "corrupt zstd stream" in str(error)


# -- bounded output --------------------------------------------------------------------------

ZEROS = 200 << 20


def _gzip_of_zeros() -> Iterator[bytes]:
    writer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 20)
    for _ in range(ZEROS >> 20):
        if out := writer.compress(block):
            yield out
    yield writer.flush()


def _zstd_of_zeros() -> Iterator[bytes]:
    writer = zstandard.ZstdCompressor().compressobj()
    block = bytes(1 << 20)
    for _ in range(ZEROS >> 20):
        if out := writer.compress(block):
            yield out
    yield writer.flush()


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_output_chunks_are_bounded(compression: Compression) -> None:
    """A small blob expanding to 200 MB never yields a chunk larger than CHUNK_SIZE."""
    source = _gzip_of_zeros() if compression is Compression.GZIP else _zstd_of_zeros()
    blob = b"".join(source)
    assert len(blob) < 2 << 20
    total = largest = 0
    for chunk in decompressed(pieces(blob, 256 << 10), compression, "bomb"):
        total += len(chunk)
        largest = max(largest, len(chunk))
    assert total == ZEROS
    assert 0 < largest <= CHUNK_SIZE


# -- fixtures and the command line -----------------------------------------------------------


@needs_root
@pytest.mark.parametrize("name", ["multi-member-gzip", "multi-frame-zstd", "trailing-garbage"])
def test_valid_variant_fixtures_unpack(images: Path, tmp_path: Path, name: str) -> None:
    result = run_cli(images / name, tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    rootfs = tmp_path / "bundle" / "rootfs"
    for path, expected in SMALL_EXPECTED.items():
        assert (rootfs / path).read_bytes() == expected["content"]


@needs_root
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_trailing_bytes_after_the_tar_end_count_for_the_diff_id(
    tmp_path: Path, compression: str
) -> None:
    """The diff_id covers the whole uncompressed stream, trailing bytes included."""
    tar = build_tar([reg("data.txt", DATA_TXT)])
    out = LayoutWriter(tmp_path / "good")
    out.tag(out.add_image([out.add_layer(tar + GARBAGE, compression)], {}), "latest")  # type: ignore[arg-type]
    out.write()
    assert run_cli(tmp_path / "good", tmp_path / "b1").returncode == 0
    assert (tmp_path / "b1/rootfs/data.txt").read_bytes() == DATA_TXT

    out = LayoutWriter(tmp_path / "bad")
    desc, _ = out.add_layer(tar + GARBAGE, compression)  # type: ignore[arg-type]
    without_trailer = digest_of(tar)
    out.tag(out.add_image([(desc, without_trailer)], {}), "latest")
    out.write()
    result = run_cli(tmp_path / "bad", tmp_path / "b2")
    assert result.returncode == 3
    assert "diff_id" in result.stderr and f"expected {without_trailer}" in result.stderr
    assert f"digest is {digest_of(tar + GARBAGE)}" in result.stderr
    assert not (tmp_path / "b2").exists()

