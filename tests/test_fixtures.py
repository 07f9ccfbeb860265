"""Tests for the fixture generator: determinism, validity, and the stated corruptions."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

from fixtures import images, variants
from fixtures.__main__ import main as fixtures_main
from fixtures.layout import INDEX_TYPES, MANIFEST_TYPES, compress, gzip_compress
from fixtures.tarwriter import Entry, build_tar, reg

BUILDABLE = [n for n in images.IMAGES if n != "busybox" or images.busybox_available()]
VALID = ["demo", "docker", "multiarch", "busybox", *variants.VALID_VARIANTS]
VALID = [n for n in VALID if n in BUILDABLE]


def tree_digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def blob_path(root: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return root / "blobs" / algorithm / hexdigest


def read_blob(root: Path, desc: dict[str, Any]) -> bytes:
    data = blob_path(root, desc["digest"]).read_bytes()
    assert len(data) == desc["size"]
    assert desc["digest"].split(":")[1] == hashlib.new(desc["digest"].split(":")[0],
                                                       data).hexdigest()
    return data


def zstd_frames(blob: bytes) -> tuple[bytes, int]:
    """Decompress every frame; return (data, number of frames)."""
    out, frames = b"", 0
    while blob:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out += dobj.decompress(blob)
        blob, frames = dobj.unused_data, frames + 1
    return out, frames


def uncompress(media_type: str, blob: bytes) -> bytes:
    if media_type.endswith("gzip"):
        return gzip.decompress(blob)
    if media_type.endswith("zstd"):
        return zstd_frames(blob)[0]
    return blob


def images_in(root: Path) -> list[tuple[dict[str, Any], dict[str, Any], list[bytes]]]:
    """Every (manifest, config, uncompressed layers) reachable from index.json, verified."""
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    pending = list(json.loads((root / "index.json").read_bytes())["manifests"])
    found, done = [], set()
    while pending:
        desc = pending.pop(0)
        if desc["digest"] in done:  # the same manifest under two tags
            continue
        done.add(desc["digest"])
        doc = json.loads(read_blob(root, desc))
        assert doc["schemaVersion"] == 2 and doc["mediaType"] == desc["mediaType"]
        if desc["mediaType"] in INDEX_TYPES.values():
            pending.extend(doc["manifests"])
            continue
        assert desc["mediaType"] in MANIFEST_TYPES.values()
        config = json.loads(read_blob(root, doc["config"]))
        tars = [uncompress(d["mediaType"], read_blob(root, d)) for d in doc["layers"]]
        diff_ids = [f"{i.split(':')[0]}:{hashlib.new(i.split(':')[0], t).hexdigest()}"
                    for i, t in zip(config["rootfs"]["diff_ids"], tars, strict=True)]
        assert diff_ids == config["rootfs"]["diff_ids"]
        found.append((doc, config, tars))
    return found


def apply_layers(tars: list[bytes]) -> dict[str, dict[str, Any]]:
    """A reference model of OCI layer application, read with the stdlib tarfile."""
    fs: dict[str, dict[str, Any]] = {}

    def drop(path: str) -> None:
        for p in [p for p in fs if p == path or p.startswith(path + "/")]:
            del fs[p]

    for tar in tars:
        seen: set[str] = set()
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            for m in tf:
                path = posixpath.normpath(m.name)
                parent, base = posixpath.split(path)
                if base == ".wh..wh..opq":
                    for child in [p for p in fs if p.startswith(parent + "/") and p not in seen]:
                        del fs[child]
                    continue
                if base.startswith(".wh."):
                    drop(posixpath.join(parent, base[4:]))
                    continue
                if not (m.isdir() and fs.get(path, {}).get("type") == "dir"):
                    drop(path)
                seen.add(path)
                if m.islnk():
                    fs[path] = {**fs[posixpath.normpath(m.linkname)], "hardlink_to": m.linkname}
                    continue
                kind = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
                        tarfile.FIFOTYPE: "fifo"}.get(m.type, "file")
                content = tf.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                fs[path] = {
                    "type": kind, "mode": m.mode, "uid": m.uid, "gid": m.gid, "mtime": m.mtime,
                    "target": m.linkname, "content": content,
                    "xattrs": {k[13:]: v.encode("utf-8", "surrogateescape")
                               for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")},
                }
    return fs


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def check_expected(fs: dict[str, dict[str, Any]], expected: dict, absent: list[str]) -> None:
    for path, facts in expected.items():
        assert path in fs, path
        for key, value in facts.items():
            assert fs[path][key] == value, (path, key)
    for path in absent:
        assert path not in fs, path


@pytest.mark.parametrize("name", BUILDABLE)
def test_builds_byte_identical(tmp_path: Path, name: str) -> None:
    images.IMAGES[name](tmp_path / "a")
    images.IMAGES[name](tmp_path / "b")
    first = tree_digests(tmp_path / "a")
    assert first and first == tree_digests(tmp_path / "b")


@pytest.mark.parametrize("name", VALID)
def test_valid_layouts_verify(tmp_path: Path, name: str) -> None:
    images.IMAGES[name](tmp_path)
    for p in (tmp_path / "blobs").rglob("*"):
        if p.is_file():
            assert hashlib.new(p.parent.name, p.read_bytes()).hexdigest() == p.name
    assert images_in(tmp_path)


def test_demo_unpacks_as_expected(tmp_path: Path) -> None:
    images.build_demo(tmp_path)
    index = json.loads((tmp_path / "index.json").read_bytes())
    tags = [d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]]
    assert tags == ["latest", "v1"]
    [(manifest, config, tars)] = images_in(tmp_path)
    assert {d["mediaType"].rsplit(".", 1)[-1] for d in manifest["layers"]} == {
        "tar", "tar+gzip", "tar+zstd"}
    assert config["config"]["User"] == "alice" and config["os"] == "linux"
    names = [m.name for t in tars for m in members(t)]
    assert images.LONG_PAX in names and images.LONG_GNU in names
    check_expected(apply_layers(tars), images.DEMO_EXPECTED, images.DEMO_ABSENT)


def test_docker_and_small_variants_unpack_as_expected(tmp_path: Path) -> None:
    images.build_docker(tmp_path / "docker")
    [(manifest, _, tars)] = images_in(tmp_path / "docker")
    assert manifest["mediaType"] == MANIFEST_TYPES["docker"]
    check_expected(apply_layers(tars), images.DOCKER_EXPECTED, images.DOCKER_ABSENT)
    for kind in variants.VALID_VARIANTS:
        variants.build_corrupt(tmp_path / kind, kind)
        [(_, _, tars)] = images_in(tmp_path / kind)
        check_expected(apply_layers(tars), variants.SMALL_EXPECTED, [])


def test_multiarch(tmp_path: Path) -> None:
    images.build_multiarch(tmp_path)
    found = images_in(tmp_path)
    assert [c["architecture"] for _, c, _ in found] == ["s390x", "arm", "arm64", "amd64"]
    for _, config, tars in found:
        plat = {k: config[k] for k in ("os", "architecture", "variant") if k in config}
        content = apply_layers(tars)["platform"]["content"]
        assert content == images.platform_string(plat).encode() + b"\n"


def test_valid_variant_shapes(tmp_path: Path) -> None:
    def last_layer(kind: str) -> tuple[dict[str, Any], bytes]:
        variants.build_corrupt(tmp_path / kind, kind)
        [(manifest, _, _)] = images_in(tmp_path / kind)
        desc = manifest["layers"][-1]
        return desc, blob_path(tmp_path / kind, desc["digest"]).read_bytes()

    desc, _ = last_layer("sha512")
    assert desc["digest"].startswith("sha512:")
    desc, blob = last_layer("trailing-garbage")
    assert gzip.decompress(blob).endswith(b"\0" * 1024 + variants.GARBAGE)
    _, blob = last_layer("multi-member-gzip")
    member = zlib.decompressobj(wbits=31)
    member.decompress(blob)
    assert member.eof and member.unused_data.startswith(b"\x1f\x8b")
    _, blob = last_layer("multi-frame-zstd")
    assert zstd_frames(blob)[1] == 2


@pytest.mark.parametrize("kind", variants.CORRUPT_KINDS)
def test_corrupt_kinds(tmp_path: Path, kind: str) -> None:
    variants.build_corrupt(tmp_path, kind)
    if kind == "bad-json-index":
        with pytest.raises(json.JSONDecodeError):
            json.loads((tmp_path / "index.json").read_bytes())
        return
    if kind == "no-oci-layout":
        assert not (tmp_path / "oci-layout").exists()
        return
    [mdesc] = json.loads((tmp_path / "index.json").read_bytes())["manifests"]
    if kind == "bad-json-manifest":
        with pytest.raises(json.JSONDecodeError):
            json.loads(read_blob(tmp_path, mdesc))
        return
    manifest = json.loads(read_blob(tmp_path, mdesc))
    if kind == "bad-schema-version":
        assert manifest["schemaVersion"] == 3
        return
    if kind == "bad-json-config":
        with pytest.raises(json.JSONDecodeError):
            json.loads(read_blob(tmp_path, manifest["config"]))
        return
    config = json.loads(read_blob(tmp_path, manifest["config"]))
    desc = manifest["layers"][-1]
    path = blob_path(tmp_path, desc["digest"])
    if kind == "missing-blob":
        assert not path.exists()
        return
    blob = path.read_bytes()
    digest_ok = hashlib.sha256(blob).hexdigest() == path.name
    expected = {  # kind -> (size matches, digest matches)
        "layer-digest": (True, False), "layer-size": (False, True),
        "truncated-blob": (False, False), "diff-id": (True, True),
        "unknown-media-type": (True, True),
    }[kind]
    assert (len(blob) == desc["size"], digest_ok) == expected
    if kind == "truncated-blob":
        with pytest.raises(EOFError):
            gzip.decompress(blob)
    if kind == "diff-id":
        actual = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
        assert config["rootfs"]["diff_ids"][-1] != actual
    if kind == "unknown-media-type":
        assert desc["mediaType"] == variants.UNKNOWN_MEDIA_TYPE


def test_tarwriter_hostile_and_raw() -> None:
    data = build_tar([
        reg("../escape", b"x"), reg("/abs", b"y"), Entry("dot", "dir"),
        Entry("big", uid=1 << 40, format="gnu"), reg("u/" + "v" * 90 + "/w", format="ustar"),
    ])
    infos = members(data)
    assert [m.name for m in infos][:2] == ["../escape", "/abs"]
    assert infos[3].uid == 1 << 40 and data.endswith(b"\0" * 1024)
    bad = build_tar([reg("f", b"data", raw={"chksum": b"0000000\0"})])
    with pytest.raises(tarfile.ReadError):
        members(bad)
    assert build_tar([reg("f", raw={"size": 7})], trailer=False)[124:136] == b"00000000007\0"


def test_compression_deterministic() -> None:
    assert gzip_compress(b"abc")[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(compress(b"abc" * 100, "gzip")) == b"abc" * 100
    assert zstandard.ZstdDecompressor().decompress(compress(b"abc", "zstd")) == b"abc"


def test_main_rebuilds_layouts_and_refuses_others(tmp_path: Path, capsys) -> None:
    assert fixtures_main([str(tmp_path), "docker", "corrupt-no-oci-layout"]) == 0
    assert fixtures_main([str(tmp_path), "docker", "corrupt-no-oci-layout"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"{tmp_path}/docker:latest", f"{tmp_path}/corrupt-no-oci-layout:latest"]
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "precious").write_text("keep me")
    assert fixtures_main([str(tmp_path), "demo"]) == 1
    assert (tmp_path / "demo" / "precious").exists()
