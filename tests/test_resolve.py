"""Resolution: index.json → (nested) indexes → manifest → config and layers, and media types."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_root

from fixtures.images import DOCKER_ABSENT, DOCKER_EXPECTED
from fixtures.layout import (
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    LayoutWriter,
    compress,
    digest_of,
    host_platform,
    json_bytes,
)
from fixtures.tarwriter import build_tar, dirent, reg
from fixtures.variants import UNKNOWN_MEDIA_TYPE
from unpack import UnpackOptions, unpack_image
from unpack.errors import EXIT_IMAGE, ImageError, UnpackError
from unpack.image.compression import Compression
from unpack.image.resolve import MAX_INDEX_DEPTH, Image, resolve_image
from unpack.source import layout as layout_module
from unpack.source.layout import Layout

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
TAR = build_tar([dirent("etc"), reg("etc/hello.txt", b"hello\n")])


def resolve(root: Path, ref: str | None = None) -> Image:
    with Layout(str(root)) as layout:
        return resolve_image(layout, ref, None)


def resolve_error(root: Path, ref: str | None = None) -> ImageError:
    with pytest.raises(ImageError) as excinfo:
        resolve(root, ref)
    assert excinfo.value.exit_code == EXIT_IMAGE
    return excinfo.value


def run_unpack(root: Path, dest: Path) -> None:
    unpack_image(str(root), str(dest), UnpackOptions(), warn=lambda _message: None)


def unpack_error(root: Path, dest: Path) -> UnpackError:
    with pytest.raises(UnpackError) as excinfo:
        run_unpack(root, dest)
    assert not dest.exists()
    return excinfo.value


def blob_path(root: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return root / "blobs" / algorithm / hexdigest


def simple_image(out: LayoutWriter, tar: bytes = TAR, **kw: Any) -> dict[str, Any]:
    return out.add_image([out.add_layer(tar)], {"config": {"Cmd": ["/bin/true"]}}, **kw)


def store_manifest(out: LayoutWriter, manifest: dict[str, Any], media_type: str) -> dict[str, Any]:
    """Store a hand-edited manifest and tag it latest (replacing index.json)."""
    desc = out.add_json(manifest, media_type)
    out.manifests = []
    out.tag(desc, "latest")
    out.write()
    return desc


def manifest_doc(root: Path, desc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(blob_path(root, desc["digest"]).read_bytes())


# -- nested indexes --------------------------------------------------------------------------


def nest(out: LayoutWriter, desc: dict[str, Any], levels: int) -> dict[str, Any]:
    for _ in range(levels):
        desc = out.add_index([desc])
    return desc


@needs_root
def test_index_in_index_to_manifest(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = simple_image(out)
    out.tag(out.add_index([out.add_index([manifest])]), "latest")
    out.write()
    image = resolve(tmp_path / "img")
    assert str(image.manifest.digest) == manifest["digest"]
    run_unpack(tmp_path / "img", tmp_path / "bundle")
    assert (tmp_path / "bundle/rootfs/etc/hello.txt").read_bytes() == b"hello\n"


def test_docker_manifest_list_inside_oci_index(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = simple_image(out, media_style="docker")
    out.tag(out.add_index([out.add_index([manifest], "docker")]), "latest")
    out.write()
    assert str(resolve(tmp_path / "img").manifest.digest) == manifest["digest"]


def test_nesting_up_to_the_limit(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = simple_image(out)
    out.tag(nest(out, manifest, MAX_INDEX_DEPTH), "latest")
    out.write()
    assert str(resolve(tmp_path / "img").manifest.digest) == manifest["digest"]


def test_nesting_too_deep(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    top = nest(out, simple_image(out), MAX_INDEX_DEPTH + 1)
    out.tag(top, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert "indexes nest in a cycle or too deep" in message
    assert message.startswith("image index sha256:")


def test_same_index_twice_is_not_a_cycle(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = simple_image(out)
    inner = out.add_index([manifest])
    out.tag(out.add_index([inner, inner]), "latest")
    out.write()
    assert str(resolve(tmp_path / "img").manifest.digest) == manifest["digest"]


def _fake_digest(n: int) -> str:
    return "sha256:" + f"{n:x}" * 64


def test_index_self_reference_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Content addressing makes a cycle need a hash collision: simulate one."""
    monkeypatch.setattr(layout_module, "verify_bytes", lambda data, *a: data)
    out = LayoutWriter(tmp_path / "img")
    digest = _fake_digest(1)
    me = {"mediaType": INDEX_TYPES["oci"], "digest": digest, "size": 1000}
    body = json_bytes({"schemaVersion": 2, "mediaType": INDEX_TYPES["oci"], "manifests": [me]})
    body = body.ljust(1000)  # JSON allows trailing whitespace
    blob_path(out.path, digest).parent.mkdir(parents=True)
    blob_path(out.path, digest).write_bytes(body)
    out.tag(me, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert f"image index {digest}: indexes nest in a cycle" in message


def test_index_cycle_of_two_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layout_module, "verify_bytes", lambda data, *a: data)
    out = LayoutWriter(tmp_path / "img")
    a = {"mediaType": INDEX_TYPES["oci"], "digest": _fake_digest(10), "size": 1000}
    b = {"mediaType": INDEX_TYPES["oci"], "digest": _fake_digest(11), "size": 1000}
    (out.path / "blobs" / "sha256").mkdir(parents=True)
    for this, other in ((a, b), (a, b)[::-1]):
        body = json_bytes({"schemaVersion": 2, "manifests": [other]})
        blob_path(out.path, this["digest"]).write_bytes(body.ljust(1000))
    out.tag(a, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert "indexes nest in a cycle" in message
    assert a["digest"] in message


# -- schemaVersion and mediaType checks ------------------------------------------------------


def test_manifest_schema_version_fixture(images: Path) -> None:
    message = str(resolve_error(images / "corrupt-bad-schema-version"))
    assert "manifest sha256:" in message
    assert "unsupported schemaVersion 3 (expected 2)" in message


@pytest.mark.parametrize("version", [1, 3, "2", None, True, 2.5])
def test_manifest_schema_version(tmp_path: Path, version: object) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = manifest_doc(out.path, simple_image(out))
    manifest["schemaVersion"] = version
    if version is None:
        del manifest["schemaVersion"]
    desc = store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    message = str(resolve_error(tmp_path / "img"))
    assert f"manifest {desc['digest']}: unsupported schemaVersion {version!r}" in message


def test_nested_index_schema_version(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    index = {"schemaVersion": 1, "mediaType": INDEX_TYPES["oci"], "manifests": [simple_image(out)]}
    desc = out.add_json(index, INDEX_TYPES["oci"])
    out.tag(desc, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert f"image index {desc['digest']}: unsupported schemaVersion 1" in message


def test_index_json_schema_version(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    out.tag(simple_image(out), "latest")
    out.write()
    index = json.loads((out.path / "index.json").read_bytes())
    index["schemaVersion"] = 1
    (out.path / "index.json").write_bytes(json_bytes(index))
    message = str(resolve_error(tmp_path / "img"))
    assert f"{out.path}/index.json: unsupported schemaVersion 1" in message


def test_manifest_media_type_mismatch(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    desc = simple_image(out)  # an OCI manifest, listed as a Docker one
    desc["mediaType"] = MANIFEST_TYPES["docker"]
    out.tag(desc, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert f"manifest {desc['digest']}" in message
    assert MANIFEST_TYPES["oci"] in message and MANIFEST_TYPES["docker"] in message


def test_index_media_type_mismatch(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    desc = out.add_index([simple_image(out)], "docker")
    desc["mediaType"] = INDEX_TYPES["oci"]
    out.tag(desc, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert f"image index {desc['digest']}" in message
    assert INDEX_TYPES["oci"] in message and INDEX_TYPES["docker"] in message


def test_manifest_without_media_type_field_is_accepted(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = manifest_doc(out.path, simple_image(out))
    del manifest["mediaType"]
    store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    assert resolve(tmp_path / "img").layers[0].compression is Compression.GZIP


def test_unknown_manifest_media_type(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    desc = simple_image(out)
    desc["mediaType"] = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    out.tag(desc, "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert "unsupported manifest media type" in message
    assert "v1+prettyjws" in message and desc["digest"] in message


def test_unknown_config_media_type(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = manifest_doc(out.path, simple_image(out))
    manifest["config"]["mediaType"] = "application/vnd.example.config+json"
    desc = store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    message = str(resolve_error(tmp_path / "img"))
    assert f"manifest {desc['digest']}" in message
    assert "unsupported config media type 'application/vnd.example.config+json'" in message


def test_unknown_layer_media_type_fixture(images: Path) -> None:
    root = images / "corrupt-unknown-media-type"
    index = json.loads((root / "index.json").read_bytes())
    manifest = manifest_doc(root, index["manifests"][0])
    message = str(resolve_error(root))
    assert f"layer 2 ({manifest['layers'][1]['digest']})" in message
    assert f"unsupported media type {UNKNOWN_MEDIA_TYPE!r}" in message


@pytest.mark.parametrize("media_type", [
    "application/vnd.oci.image.layer.v1.tar+bzip2",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.zstd",
    "application/octet-stream",
])
def test_unknown_layer_media_types(tmp_path: Path, media_type: str) -> None:
    out = LayoutWriter(tmp_path / "img")
    desc, diff_id = out.add_layer(TAR)
    desc["mediaType"] = media_type
    out.tag(out.add_image([(desc, diff_id)], {}), "latest")
    out.write()
    message = str(resolve_error(tmp_path / "img"))
    assert desc["digest"] in message and repr(media_type) in message


# -- manifest and config structure -----------------------------------------------------------


@pytest.mark.parametrize("diff_ids", [0, 1, 3])
def test_diff_id_count_must_match_layers(tmp_path: Path, diff_ids: int) -> None:
    out = LayoutWriter(tmp_path / "img")
    layers = [out.add_layer(build_tar([reg(f"f{i}")])) for i in range(2)]
    padded = [*layers, *layers][:diff_ids]
    manifest = manifest_doc(out.path, out.add_image(padded, {}))
    manifest["layers"] = [desc for desc, _ in layers]
    desc = store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    message = str(resolve_error(tmp_path / "img"))
    assert f"manifest {desc['digest']}: 2 layers but its config lists {diff_ids} diff_ids" \
        in message


@pytest.mark.parametrize(
    ("rootfs", "needle"),
    [
        (None, "rootfs must be an object with type 'layers'"),
        ({"type": "other", "diff_ids": []}, "rootfs must be an object with type 'layers'"),
        ({"type": "layers"}, "rootfs.diff_ids is not a list"),
        ({"type": "layers", "diff_ids": "sha256:x"}, "rootfs.diff_ids is not a list"),
    ],
)
def test_config_rootfs_shape(tmp_path: Path, rootfs: object, needle: str) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = manifest_doc(out.path, simple_image(out))
    config = json.loads(blob_path(out.path, manifest["config"]["digest"]).read_bytes())
    config["rootfs"] = rootfs
    manifest["config"] = out.add_json(config, CONFIG_TYPES["oci"])
    store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    message = str(resolve_error(tmp_path / "img"))
    assert f"image config {manifest['config']['digest']}: {needle}" in message


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda m: m.pop("layers"), "layers is not a list"),
        (lambda m: m.update(layers={}), "layers is not a list"),
        (lambda m: m.pop("config"), "config: descriptor is not a JSON object"),
        (lambda m: m["layers"][0].pop("mediaType"), "layers[0]: descriptor has no mediaType"),
        (lambda m: m["layers"][0].update(annotations={"a": 1}), "annotations must map strings"),
        (lambda m: m["layers"][0].update(urls="http://x"), "urls must be a list of strings"),
    ],
)
def test_manifest_structure(tmp_path: Path, edit: Any, needle: str) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = manifest_doc(out.path, simple_image(out))
    edit(manifest)
    desc = store_manifest(out, manifest, MANIFEST_TYPES["oci"])
    message = str(resolve_error(tmp_path / "img"))
    assert f"manifest {desc['digest']}" in message and needle in message


def test_index_json_manifests_not_a_list(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    out.write()
    (out.path / "index.json").write_bytes(json_bytes({"schemaVersion": 2, "manifests": {}}))
    message = str(resolve_error(tmp_path / "img"))
    assert f"{out.path}/index.json: manifests is not a list" in message


@pytest.mark.parametrize("content", [None, b'{"imageLayoutVersion": "2.0.0"}', b"[]"])
def test_oci_layout_file(tmp_path: Path, content: bytes | None) -> None:
    out = LayoutWriter(tmp_path / "img")
    out.tag(simple_image(out), "latest")
    out.write()
    if content is None:
        (out.path / "oci-layout").unlink()
    else:
        (out.path / "oci-layout").write_bytes(content)
    error = unpack_error(tmp_path / "img", tmp_path / "bundle")
    assert error.exit_code == EXIT_IMAGE
    assert f"{out.path}/oci-layout" in str(error)


# -- media types: OCI and Docker -------------------------------------------------------------


@needs_root
@pytest.mark.parametrize("style", ["oci", "docker"])
@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_layer_media_types(tmp_path: Path, style: str, compression: str) -> None:
    out = LayoutWriter(tmp_path / "img")
    lower = build_tar([dirent("etc"), reg("etc/a", b"lower\n"), reg("etc/b", b"b\n")])
    upper = build_tar([reg("etc/a", b"upper\n")])
    layers = [out.add_layer(lower, "gzip", style),  # type: ignore[arg-type]
              out.add_layer(upper, compression, style)]  # type: ignore[arg-type]
    manifest = out.add_image(layers, {}, media_style=style)  # type: ignore[arg-type]
    out.tag(out.add_index([manifest], style), "latest")  # type: ignore[arg-type]
    out.write()
    image = resolve(tmp_path / "img")
    suffix = {"oci": {"none": "", "gzip": "+gzip", "zstd": "+zstd"},
              "docker": {"none": "", "gzip": ".gzip", "zstd": ".zstd"}}[style][compression]
    base = OCI_LAYER if style == "oci" else DOCKER_LAYER
    assert image.layers[1].descriptor.media_type == base + suffix
    assert image.layers[1].compression is Compression(compression)
    assert image.config_descriptor.media_type == CONFIG_TYPES[style]
    assert image.manifest.media_type == MANIFEST_TYPES[style]
    run_unpack(tmp_path / "img", tmp_path / "bundle")
    assert (tmp_path / "bundle/rootfs/etc/a").read_bytes() == b"upper\n"
    assert (tmp_path / "bundle/rootfs/etc/b").read_bytes() == b"b\n"


@needs_root
def test_docker_fixture(images: Path, tmp_path: Path) -> None:
    root = images / "docker"
    index = json.loads((root / "index.json").read_bytes())
    assert index["manifests"][0]["mediaType"] == INDEX_TYPES["docker"]
    run_unpack(root, tmp_path / "bundle")
    rootfs = tmp_path / "bundle" / "rootfs"
    for name, expected in DOCKER_EXPECTED.items():
        if "content" in expected:
            assert (rootfs / name).read_bytes() == expected["content"]
        else:
            assert (rootfs / name).is_dir()
    for name in DOCKER_ABSENT:
        assert not os.path.lexists(rootfs / name)


FOREIGN_TYPES = [
    ("application/vnd.oci.image.layer.nondistributable.v1.tar", "none"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", "gzip"),
    ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", "zstd"),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar", "none"),
    ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "gzip"),
]


def _foreign_image(root: Path, media_type: str, compression: str) -> dict[str, Any]:
    out = LayoutWriter(root)
    base = out.add_layer(build_tar([dirent("etc"), reg("etc/base", b"base\n")]))
    tar = build_tar([reg("etc/foreign", b"from a foreign layer\n")])
    blob = compress(tar, compression)  # type: ignore[arg-type]
    desc = {"mediaType": media_type, **out.add_blob(blob),
            "urls": ["https://example.invalid/layer.tar"]}
    out.tag(out.add_image([base, (desc, digest_of(tar))], {}), "latest")
    out.write()
    return desc


@needs_root
@pytest.mark.parametrize(("media_type", "compression"), FOREIGN_TYPES)
def test_foreign_layer_present_locally(tmp_path: Path, media_type: str, compression: str) -> None:
    _foreign_image(tmp_path / "img", media_type, compression)
    run_unpack(tmp_path / "img", tmp_path / "bundle")
    rootfs = tmp_path / "bundle" / "rootfs"
    assert (rootfs / "etc/foreign").read_bytes() == b"from a foreign layer\n"
    assert (rootfs / "etc/base").read_bytes() == b"base\n"


@needs_root
@pytest.mark.parametrize(("media_type", "compression"), FOREIGN_TYPES[::2])
def test_foreign_layer_absent(tmp_path: Path, media_type: str, compression: str) -> None:
    desc = _foreign_image(tmp_path / "img", media_type, compression)
    path = blob_path(tmp_path / "img", desc["digest"])
    path.unlink()
    error = unpack_error(tmp_path / "img", tmp_path / "bundle")
    message = str(error)
    assert error.exit_code == EXIT_IMAGE
    assert f"blob {desc['digest']} ({media_type})" in message
    assert f"missing at {path}" in message


def test_image_platform_comes_from_the_config(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    out.tag(simple_image(out, platform=host_platform()), "latest")
    out.write()
    image = resolve(tmp_path / "img")
    assert image.platform is not None
    assert image.platform.architecture == host_platform()["architecture"]
    assert [str(layer.diff_id) for layer in image.layers] == [digest_of(TAR)]


def test_digest_ref_names_a_manifest_inside_a_nested_index(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    manifest = simple_image(out)
    out.tag(nest(out, manifest, 2), "latest")
    out.write()
    image = resolve(tmp_path / "img", manifest["digest"])
    assert str(image.manifest.digest) == manifest["digest"]
