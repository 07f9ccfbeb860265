"""The layer pipeline (`unpack.layer.stream`): errors name the layer and their real cause."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import run_cli

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, reg
from unpack.errors import LayerError, VerificationError
from unpack.image.resolve import resolve_image
from unpack.layer.stream import LayerStream
from unpack.source.layout import Layout


def _noise(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def _layout(root: Path, tar: bytes, compression: str = "gzip", blob: bytes | None = None) -> Path:
    out = LayoutWriter(root)
    layer = out.add_layer(tar, compression, blob=blob)  # type: ignore[arg-type]
    out.tag(out.add_image([layer], {"config": {"Cmd": ["/x"]}}), "latest")
    out.write()
    return out.blob_path(layer[0]["digest"])


def _apply(root: Path) -> int:
    with Layout(str(root)) as source:
        image = resolve_image(source, None, None)
        layer = image.layers[0]
        stream = LayerStream(source, layer, f"layer 1/1 {layer.descriptor.digest}")
        with stream as entries:
            count = sum(1 for _ in entries)
        return stream.uncompressed_size if count else -1


def test_a_corrupted_blob_is_reported_as_a_digest_mismatch(tmp_path: Path) -> None:
    """A flipped byte breaks the gzip stream; the cause named is the blob's digest."""
    tar = build_tar([reg(f"f{i}", _noise(50_000)) for i in range(8)])
    blob = _layout(tmp_path, tar)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as excinfo:
        _apply(tmp_path)
    message = str(excinfo.value)
    assert message.startswith("layer 1/1 sha256:") and "digest is" in message
    assert "corrupt gzip" not in message and "layer tar" not in message
    result = run_cli(tmp_path, tmp_path.parent / "bundle")
    assert result.returncode == 3 and "layer 1/1 sha256:" in result.stderr
    assert "digest is" in result.stderr and "corrupt gzip" not in result.stderr


def test_a_broken_tar_in_a_good_blob_is_a_tar_error_naming_the_layer(tmp_path: Path) -> None:
    tar = build_tar([reg("a", b"x" * 1000)])
    broken = tar[:1536] + b"\xff" * 512 + tar[2048:]  # the entry stays, the next header is junk
    _layout(tmp_path, broken, "none")
    with pytest.raises(LayerError) as excinfo:
        _apply(tmp_path)
    assert str(excinfo.value).startswith("layer 1/1 sha256:")
    assert "layer tar:" in str(excinfo.value)


def test_the_uncompressed_size_is_counted(tmp_path: Path) -> None:
    tar = build_tar([reg("a", b"hello")])
    _layout(tmp_path, tar, "zstd")
    assert _apply(tmp_path) == len(tar)


def test_the_blob_is_closed_after_a_failure(tmp_path: Path) -> None:
    tar = build_tar([reg("a", b"x" * 1000)])
    _layout(tmp_path, tar[:1536] + b"\xff" * 512 + tar[2048:], "gzip")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(LayerError):
            _apply(tmp_path)
    assert len(os.listdir("/proc/self/fd")) <= before
