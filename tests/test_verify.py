"""Verification of every blob and layer against its descriptor: sizes, digests, diff_ids.

Each defect is checked for its exit code (3) and for a message naming the blob, digest or
file at fault. Most run in-process through `unpack_image()`; a few go through the CLI.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root, run_cli

from fixtures.layout import LayoutWriter, digest_of, json_bytes
from fixtures.tarwriter import build_tar, dirent, reg
from fixtures.variants import SMALL_EXPECTED
from unpack import UnpackOptions, unpack_image
from unpack.errors import EXIT_IMAGE, ImageError, UnpackError, VerificationError
from unpack.verify import Digest, verified, verify_bytes

HELLO_TAR = build_tar([dirent("etc"), reg("etc/hello.txt", b"hello\n" * 100)])


# -- helpers -------------------------------------------------------------------------------


def run_unpack(image: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Unpack in-process, quietly."""
    unpack_image(str(image), str(dest), UnpackOptions(), warn=lambda _message: None)


def unpack_error(image: str | os.PathLike[str], dest: str | os.PathLike[str]) -> UnpackError:
    """Unpack in-process; return the error it must raise (checking nothing is left at dest)."""
    with pytest.raises(UnpackError) as excinfo:
        run_unpack(image, dest)
    assert not os.path.lexists(dest)
    leftovers = [n for n in os.listdir(os.path.dirname(dest)) if ".oci-unpack-" in n]
    assert leftovers == []
    return excinfo.value


def blob_path(root: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return root / "blobs" / algorithm / hexdigest


def one_layer_image(
    root: Path,
    tar: bytes = HELLO_TAR,
    compression: str = "gzip",
    *,
    edit_layer: Any = None,
    edit_config: Any = None,
    algorithm: str = "sha256",
) -> dict[str, Any]:
    """A one-layer image tagged latest; `edit_*` may change the layer descriptor / config.

    Returns {"layer": descriptor, "manifest": descriptor, "config": descriptor}.
    """
    out = LayoutWriter(root)
    desc, diff_id = out.add_layer(tar, compression, algorithm=algorithm)  # type: ignore[arg-type]
    if edit_layer is not None:
        edit_layer(desc)
    manifest = out.add_image([(desc, diff_id)], {"config": {"Cmd": ["/bin/sh"]}})
    data = json.loads(blob_path(root, manifest["digest"]).read_bytes())
    if edit_config is not None:
        config = json.loads(blob_path(root, data["config"]["digest"]).read_bytes())
        edit_config(config)
        data["config"] = out.add_json(config, data["config"]["mediaType"])
        manifest = {**out.add_json(data, manifest["mediaType"]), "platform": manifest["platform"]}
    out.tag(manifest, "latest")
    out.write()
    return {"layer": desc, "manifest": manifest, "config": data["config"]}


def manifest_of(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(index entry, manifest document) of a single-image layout."""
    entry = json.loads((root / "index.json").read_bytes())["manifests"][0]
    return entry, json.loads(blob_path(root, entry["digest"]).read_bytes())


# -- Digest ----------------------------------------------------------------------------------


def test_digest_parse_sha256_and_sha512() -> None:
    sha256 = digest_of(b"x")
    sha512 = digest_of(b"x", "sha512")
    assert str(Digest.parse(sha256)) == sha256
    assert Digest.parse(sha512).algorithm == "sha512"
    assert Digest.parse(sha256).short() == sha256[:19]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("md5:" + "0" * 32, "unsupported digest algorithm 'md5'"),
        ("sha384:" + "0" * 96, "unsupported digest algorithm 'sha384'"),
        ("sha256:" + "0" * 63, "expected 64 lowercase hex digits"),
        ("sha256:" + "A" * 64, "expected 64 lowercase hex digits"),
        ("sha256:" + "g" * 64, "expected 64 lowercase hex digits"),
        ("sha512:" + "0" * 64, "expected 128 lowercase hex digits"),
        ("sha256:../../../../etc/passwd", "invalid digest"),
        ("sha256", "expected ALGORITHM:HEX"),
        ("", "expected ALGORITHM:HEX"),
        (None, "expected ALGORITHM:HEX"),
        (42, "expected ALGORITHM:HEX"),
    ],
)
def test_digest_parse_rejects(text: object, needle: str) -> None:
    with pytest.raises(ImageError) as excinfo:
        Digest.parse(text)
    assert needle in str(excinfo.value)
    assert excinfo.value.exit_code == EXIT_IMAGE


# -- verified() ------------------------------------------------------------------------------


def test_verified_passes_chunks_through_on_match() -> None:
    chunks = [b"abc", memoryview(b"def"), b"", b"ghi"]
    data = b"abcdefghi"
    for size in (len(data), None):
        out = list(verified(chunks, Digest.parse(digest_of(data)), size, "thing"))
        assert out == chunks
        assert out[1] is chunks[1]  # unchanged, not copied


def test_verified_sha512() -> None:
    data = b"sha512 content"
    out = list(verified([data], Digest.parse(digest_of(data, "sha512")), len(data), "thing"))
    assert out == [data]


def test_verified_digest_mismatch_raises_only_at_the_end() -> None:
    data = [b"one ", b"two ", b"three"]
    wrong = Digest.parse(digest_of(b"something else"))
    seen: list[bytes] = []
    with pytest.raises(VerificationError) as excinfo:
        for chunk in verified(data, wrong, sum(map(len, data)), "blob X"):
            seen.append(bytes(chunk))
    assert seen == data  # every chunk was delivered before the failure
    message = str(excinfo.value)
    assert message.startswith("blob X: ")
    assert digest_of(b"".join(data)) in message and str(wrong) in message
    assert excinfo.value.exit_code == EXIT_IMAGE


def test_verified_short_stream_raises_at_the_end() -> None:
    data = b"0123456789"
    seen: list[bytes] = []
    with pytest.raises(VerificationError) as excinfo:
        for chunk in verified([data], Digest.parse(digest_of(data)), 11, "blob Y"):
            seen.append(bytes(chunk))
    assert seen == [data]
    assert "blob Y: 10 bytes, its descriptor says 11" in str(excinfo.value)


def test_verified_raises_as_soon_as_the_size_is_exceeded() -> None:
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"x" * 100

    seen = 0
    with pytest.raises(VerificationError) as excinfo:
        for chunk in verified(endless(), Digest.parse(digest_of(b"")), 250, "blob Z"):
            seen += len(chunk)
    assert seen == 200  # the chunk crossing the limit is not passed on
    assert len(pulled) == 3  # and nothing after it is read
    assert "blob Z: longer than the 250 bytes its descriptor says" in str(excinfo.value)


def test_verified_without_size_checks_only_the_digest() -> None:
    data = b"z" * 1000
    assert b"".join(verified([data], Digest.parse(digest_of(data)), None, "w")) == data
    with pytest.raises(VerificationError, match="digest is"):
        list(verified([data, b"!"], Digest.parse(digest_of(data)), None, "w"))


def test_verify_bytes() -> None:
    data = b'{"a": 1}'
    assert verify_bytes(data, Digest.parse(digest_of(data)), len(data), "doc") == data
    with pytest.raises(VerificationError, match="doc: longer than the 3 bytes"):
        verify_bytes(data, Digest.parse(digest_of(data)), 3, "doc")


# -- blobs in a layout: sizes and digests ------------------------------------------------------


@needs_root
def test_layer_descriptor_size_bigger_than_blob(tmp_path: Path) -> None:
    def grow(desc: dict[str, Any]) -> None:
        desc["size"] += 1

    info = one_layer_image(tmp_path / "img", edit_layer=grow)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    size = info["layer"]["size"]
    assert isinstance(error, VerificationError)
    assert error.exit_code == EXIT_IMAGE
    assert info["layer"]["digest"] in str(error)
    assert f"{size - 1} bytes, its descriptor says {size}" in str(error)


@needs_root
def test_layer_descriptor_size_smaller_than_blob(tmp_path: Path) -> None:
    def shrink(desc: dict[str, Any]) -> None:
        desc["size"] -= 1

    info = one_layer_image(tmp_path / "img", edit_layer=shrink)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert isinstance(error, VerificationError)
    assert info["layer"]["digest"] in str(error)
    assert f"longer than the {info['layer']['size']} bytes" in str(error)


@needs_root
def test_layer_wrong_digest_same_size(tmp_path: Path) -> None:
    """A different but valid gzip of the same tar, same length, stored under the old digest."""
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    blob = bytearray(path.read_bytes())
    blob[4:8] = b"\x01\x02\x03\x04"  # the gzip header's mtime: still a valid gzip
    assert gzip.decompress(bytes(blob)) == HELLO_TAR
    assert digest_of(bytes(blob)) != info["layer"]["digest"]
    path.write_bytes(bytes(blob))
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    message = str(error)
    assert isinstance(error, VerificationError)
    assert f"layer 1/1 {info['layer']['digest']}: blob (" in message  # named once
    assert f"digest is {digest_of(bytes(blob))}, expected {info['layer']['digest']}" in message


@needs_root
def test_uncompressed_layer_wrong_digest_in_trailing_padding(tmp_path: Path) -> None:
    """A changed byte after the tar's end-of-archive blocks is still caught (input drained)."""
    tar = HELLO_TAR + bytes(1024)
    info = one_layer_image(tmp_path / "img", tar, "none")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    blob = bytearray(path.read_bytes())
    blob[-1] = 1
    path.write_bytes(bytes(blob))
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert f"layer 1/1 {info['layer']['digest']}: blob (" in str(error)
    assert "digest is" in str(error)


@needs_root
def test_wrong_diff_id(tmp_path: Path) -> None:
    wrong = digest_of(b"not the layer")

    def edit(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"] = [wrong]

    info = one_layer_image(tmp_path / "img", edit_config=edit)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    message = str(error)
    assert isinstance(error, VerificationError)
    assert info["layer"]["digest"] in message and "diff_id" in message
    assert f"digest is {digest_of(HELLO_TAR)}, expected {wrong}" in message


def test_missing_layer_blob(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    path.unlink()
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert f"blob {info['layer']['digest']}" in str(error)
    assert f"missing at {path}" in str(error)


@pytest.mark.parametrize("which", ["manifest", "config"])
def test_missing_document_blob(tmp_path: Path, which: str) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info[which]["digest"])
    path.unlink()
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert info[which]["digest"] in str(error) and "missing" in str(error)


@needs_root
def test_truncated_layer_blob(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img", build_tar([reg("big", os.urandom(50000))]))
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    path.write_bytes(path.read_bytes()[:20000])
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert info["layer"]["digest"] in str(error)
    assert "truncated" in str(error) or "20000 bytes" in str(error)


@pytest.mark.parametrize("which", ["manifest", "config"])
def test_document_wrong_digest_same_size(tmp_path: Path, which: str) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info[which]["digest"])
    data = path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3')
    data = data.replace(b'"Cmd":["/bin/sh"]', b'"Cmd":["/bin/xx"]')
    path.write_bytes(data)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert isinstance(error, VerificationError)
    assert f"digest is {digest_of(data)}, expected {info[which]['digest']}" in str(error)


@pytest.mark.parametrize("delta", [-1, 1])
def test_config_descriptor_wrong_size(tmp_path: Path, delta: int) -> None:
    root = tmp_path / "img"
    info = one_layer_image(root)
    entry, manifest = manifest_of(root)
    manifest["config"]["size"] += delta
    out = LayoutWriter(root)
    out.tag({**out.add_json(manifest, entry["mediaType"])}, "latest")
    out.write()
    error = unpack_error(root, tmp_path / "out")
    assert isinstance(error, VerificationError)
    assert f"image config {info['config']['digest']}" in str(error)


def test_bad_json_index(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    (root / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": [')
    error = unpack_error(root, tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert f"{root}/index.json: invalid JSON" in str(error)


def test_bad_json_manifest(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    out = LayoutWriter(root)
    bad = b'{"schemaVersion": 2, "config": '
    out.tag({"mediaType": "application/vnd.oci.image.manifest.v1+json", **out.add_blob(bad)},
            "latest")
    out.write()
    error = unpack_error(root, tmp_path / "out")
    assert f"manifest {digest_of(bad)}: invalid JSON" in str(error)


def test_bad_json_config(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    entry, manifest = manifest_of(root)
    out = LayoutWriter(root)
    bad = b'{"architecture": "amd64", "os": '
    manifest["config"] = {"mediaType": manifest["config"]["mediaType"], **out.add_blob(bad)}
    out.tag(out.add_json(manifest, entry["mediaType"]), "latest")
    out.write()
    error = unpack_error(root, tmp_path / "out")
    assert f"image config {digest_of(bad)}: invalid JSON" in str(error)


def test_json_that_is_not_an_object(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    (root / "index.json").write_bytes(b"[1, 2, 3]")
    error = unpack_error(root, tmp_path / "out")
    assert f"{root}/index.json: expected a JSON object" in str(error)


@pytest.mark.parametrize(
    ("digest", "needle"),
    [
        ("md5:" + "0" * 32, "unsupported digest algorithm 'md5'"),
        ("sha256:" + "0" * 10, "invalid digest 'sha256:0000000000'"),
        ("sha256:../../../etc/passwd", "invalid digest"),
        ("nocolon", "invalid digest 'nocolon'"),
    ],
)
def test_layer_digest_invalid(tmp_path: Path, digest: str, needle: str) -> None:
    def edit(desc: dict[str, Any]) -> None:
        desc["digest"] = digest

    one_layer_image(tmp_path / "img", edit_layer=edit)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert needle in str(error)


def test_diff_id_unknown_algorithm(tmp_path: Path) -> None:
    def edit(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"] = ["md5:" + "0" * 32]

    one_layer_image(tmp_path / "img", edit_config=edit)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert f"unsupported digest algorithm 'md5' in 'md5:{'0' * 32}'" in str(error)


@pytest.mark.parametrize("size", [-1, "12", 1.5, True, None])
def test_layer_size_not_a_non_negative_integer(tmp_path: Path, size: object) -> None:
    def edit(desc: dict[str, Any]) -> None:
        desc["size"] = size

    one_layer_image(tmp_path / "img", edit_layer=edit)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert f"descriptor size {size!r} is not a non-negative integer" in str(error)
    assert "layers[0]" in str(error)


def test_negative_size_in_index_json(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    index = json.loads((root / "index.json").read_bytes())
    index["manifests"][0]["size"] = -5
    (root / "index.json").write_bytes(json_bytes(index))
    error = unpack_error(root, tmp_path / "out")
    assert f"{root}/index.json manifests[0]: descriptor size -5" in str(error)


def test_implausibly_large_manifest_size(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    index = json.loads((root / "index.json").read_bytes())
    index["manifests"][0]["size"] = 1 << 40
    (root / "index.json").write_bytes(json_bytes(index))
    error = unpack_error(root, tmp_path / "out")
    assert "implausibly large" in str(error)
    assert index["manifests"][0]["digest"] in str(error)


# -- sha512 ----------------------------------------------------------------------------------


@needs_root
def test_sha512_fixture_unpacks(images: Path, tmp_path: Path) -> None:
    index = json.loads((images / "sha512" / "index.json").read_bytes())
    manifest = json.loads(blob_path(images / "sha512", index["manifests"][0]["digest"])
                          .read_bytes())
    assert all(layer["digest"].startswith("sha512:") for layer in manifest["layers"])
    run_unpack(images / "sha512", tmp_path / "out")
    rootfs = tmp_path / "out" / "rootfs"
    for name, expected in SMALL_EXPECTED.items():
        assert (rootfs / name).read_bytes() == expected["content"]


@needs_root
def test_sha512_everywhere(tmp_path: Path) -> None:
    """sha512 for the layer, its diff_id, and a wrong sha512 diff_id is caught."""
    root = tmp_path / "img"
    one_layer_image(root, algorithm="sha512")
    run_unpack(root, tmp_path / "out")
    assert (tmp_path / "out/rootfs/etc/hello.txt").read_bytes() == b"hello\n" * 100

    wrong = digest_of(b"other", "sha512")

    def edit(config: dict[str, Any]) -> None:
        config["rootfs"]["diff_ids"] = [wrong]

    one_layer_image(tmp_path / "img2", algorithm="sha512", edit_config=edit)
    error = unpack_error(tmp_path / "img2", tmp_path / "out2")
    assert f"expected {wrong}" in str(error)
    assert f"digest is {digest_of(HELLO_TAR, 'sha512')}" in str(error)


# -- what a blob may be ----------------------------------------------------------------------


def test_blob_symlink_to_outside_file_is_refused(tmp_path: Path) -> None:
    """Even with the right content, a blob that is a symlink is not followed."""
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    outside = tmp_path / "outside-blob"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert error.exit_code == EXIT_IMAGE
    assert info["layer"]["digest"] in str(error)
    assert "symlink" in str(error) and "refused" in str(error)


def test_config_blob_symlink_is_refused(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["config"]["digest"])
    outside = tmp_path / "outside-config"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(outside)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert info["config"]["digest"] in str(error) and "refused" in str(error)


def test_blobs_algorithm_dir_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    elsewhere = tmp_path / "elsewhere"
    (root / "blobs" / "sha256").rename(elsewhere)
    (root / "blobs" / "sha256").symlink_to(elsewhere)
    error = unpack_error(root, tmp_path / "out")
    assert "refused" in str(error)


def test_index_json_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "img"
    one_layer_image(root)
    (root / "index.json").rename(tmp_path / "index.json")
    (root / "index.json").symlink_to(tmp_path / "index.json")
    error = unpack_error(root, tmp_path / "out")
    assert f"{root}/index.json" in str(error) and "refused" in str(error)


def test_blob_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    path.unlink()
    os.mkfifo(path)
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert f"{path} is not a regular file" in str(error)


def test_blob_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img")
    path = blob_path(tmp_path / "img", info["layer"]["digest"])
    path.unlink()
    path.mkdir()
    error = unpack_error(tmp_path / "img", tmp_path / "out")
    assert info["layer"]["digest"] in str(error)
    assert f"{path} is not a regular file" in str(error)


# -- the same through the command line -------------------------------------------------------


@needs_root
def test_cli_verification_error_is_one_line_exit_3(tmp_path: Path) -> None:
    info = one_layer_image(tmp_path / "img", edit_layer=lambda d: d.update(size=d["size"] + 1))
    result = run_cli(tmp_path / "img", tmp_path / "out")
    assert result.returncode == 3
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("oci-unpack: error: ")
    assert info["layer"]["digest"] in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()

