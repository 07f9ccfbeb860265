"""Bad images (issue #5): malformed layouts, documents, descriptors and blobs.

Each case builds a small valid image, breaks it in one way, runs the CLI with a timeout
(a FIFO must never hang it) and expects exit 3, one `oci-unpack: error:` line containing
the case's key words, and nothing at DIR (no temp bundle either).

Self-reference cannot be built with content addressing (a document cannot contain its own
digest, and index A → B → A would need each digest before the other), so cycles are
covered by the depth limit (a chain of 10 nested indexes) and by a config descriptor that
points at a manifest blob.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hostile import run_unpack

from fixtures.layout import (
    CONFIG_TYPES,
    INDEX_TYPES,
    MANIFEST_TYPES,
    REF_NAME,
    LayoutWriter,
    host_arch,
    json_bytes,
)
from fixtures.tarwriter import build_tar, reg

Doc = dict[str, Any]


@dataclass
class Built:
    """The parts of a built image that cases break."""

    path: Path
    writer: LayoutWriter
    layer: Doc
    config: Doc
    manifest: Doc
    extra: dict[str, Any] = field(default_factory=dict)

    def blob(self, descriptor: Doc) -> Path:
        return self.writer.blob_path(descriptor["digest"])

    def index(self) -> Doc:
        return json.loads((self.path / "index.json").read_bytes())

    def write_index(self, index: Any) -> None:
        (self.path / "index.json").write_bytes(json_bytes(index))


Edit = Callable[[Doc, Built], None]


def build(
    path: Path,
    *,
    config: Edit | None = None,
    manifest: Edit | None = None,
    index: Edit | None = None,
) -> Built:
    """A one-layer image tagged `latest`; each edit changes a document before it is stored."""
    writer = LayoutWriter(path)
    layer, diff_id = writer.add_layer(build_tar([reg("hello.txt", b"hello\n")]), "gzip")
    built = Built(path, writer, layer, {}, {})
    cfg: Doc = {
        "architecture": host_arch(), "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }  # fmt: skip
    if config:
        config(cfg, built)
    built.config = writer.add_json(cfg, CONFIG_TYPES["oci"])
    doc: Doc = {
        "schemaVersion": 2, "mediaType": MANIFEST_TYPES["oci"], "config": built.config,
        "layers": [layer],
    }  # fmt: skip
    if manifest:
        manifest(doc, built)
    built.manifest = writer.add_json(doc, MANIFEST_TYPES["oci"])
    top: Doc = {
        "schemaVersion": 2, "mediaType": INDEX_TYPES["oci"],
        "manifests": [{**built.manifest, "annotations": {REF_NAME: "latest"}}],
    }  # fmt: skip
    if index:
        index(top, built)
    (path / "oci-layout").write_bytes(json_bytes({"imageLayoutVersion": "1.0.0"}))
    built.write_index(top)
    return built


# -- edits ----------------------------------------------------------------------------------


def _set(where: str, key: str, value: Any) -> Edit:
    """Set `key` of the document (or of its first `manifests`/`layers` descriptor)."""

    def edit(doc: Doc, built: Built) -> None:
        target = doc
        for step in where.split(".") if where else ():
            target = target[step][0] if step in ("manifests", "layers") else target[step]
        target[key] = value

    return edit


def _delete(where: str, key: str) -> Edit:
    def edit(doc: Doc, built: Built) -> None:
        target = doc[where] if where else doc
        del target[key]

    return edit


def _replace_file(name: str, data: bytes) -> Callable[[Built], None]:
    def post(built: Built) -> None:
        (built.path / name).unlink()
        (built.path / name).write_bytes(data)

    return post


def _remove_file(name: str) -> Callable[[Built], None]:
    return lambda built: (built.path / name).unlink()


def _fifo_at(name: str) -> Callable[[Built], None]:
    def post(built: Built) -> None:
        (built.path / name).unlink()
        os.mkfifo(built.path / name)

    return post


def _dir_at(name: str) -> Callable[[Built], None]:
    def post(built: Built) -> None:
        (built.path / name).unlink()
        (built.path / name).mkdir()

    return post


def _symlink_copy(name: str) -> Callable[[Built], None]:
    """Replace a layout file with a symlink to an identical copy outside the layout."""

    def post(built: Built) -> None:
        copy = built.path.parent / f"outside-{name}"
        shutil.copyfile(built.path / name, copy)
        (built.path / name).unlink()
        (built.path / name).symlink_to(copy)

    return post


def _blob_post(which: str, how: str) -> Callable[[Built], None]:
    """Replace the layer/manifest/config blob: symlink to a copy, to /etc/passwd, FIFO, dir."""

    def post(built: Built) -> None:
        blob = built.blob(getattr(built, which))
        if how == "copy":
            copy = built.path.parent / f"outside-{which}-blob"
            shutil.copyfile(blob, copy)
            blob.unlink()
            blob.symlink_to(copy)
        elif how == "passwd":
            blob.unlink()
            blob.symlink_to("/etc/passwd")
        elif how == "fifo":
            blob.unlink()
            os.mkfifo(blob)
        elif how == "dir":
            blob.unlink()
            blob.mkdir()
        elif how == "missing":
            blob.unlink()

    return post


def _blobs_dir_symlink(level: str) -> Callable[[Built], None]:
    """Move `blobs` (or `blobs/sha256`) outside the layout and symlink to it."""

    def post(built: Built) -> None:
        inside = built.path / level
        outside = built.path.parent / f"outside-{level.replace('/', '-')}"
        shutil.move(inside, outside)
        inside.symlink_to(outside)

    return post


def _nested(depth: int) -> Edit:
    """Wrap the manifest in `depth` nested indexes; index.json lists the outermost."""

    def edit(doc: Doc, built: Built) -> None:
        child = {**built.manifest, "platform": {"os": "linux", "architecture": host_arch()}}
        for _ in range(depth):
            child = built.writer.add_index([child])
        doc["manifests"] = [{**child, "annotations": {REF_NAME: "latest"}}]

    return edit


def _config_is_manifest_blob(doc: Doc, built: Built) -> None:
    """The config descriptor points at a manifest blob (stored under a config media type)."""
    other = built.writer.add_json(
        {"schemaVersion": 2, "mediaType": MANIFEST_TYPES["oci"], "config": doc["config"],
         "layers": doc["layers"]}, CONFIG_TYPES["oci"])  # fmt: skip
    doc["config"] = other


def _config_is_layer_blob(doc: Doc, built: Built) -> None:
    doc["config"] = {**built.layer, "mediaType": CONFIG_TYPES["oci"]}


def _manifest_is_index_blob(doc: Doc, built: Built) -> None:
    """index.json's entry says manifest, but its digest is an index blob."""
    inner = built.writer.add_index([built.manifest])
    doc["manifests"] = [{**inner, "mediaType": MANIFEST_TYPES["oci"]}]


def _manifest_blob_is_array(doc: Doc, built: Built) -> None:
    data = b"[1, 2, 3]"
    desc = {"mediaType": MANIFEST_TYPES["oci"], **built.writer.add_blob(data)}
    doc["manifests"] = [desc]


def _huge_index(built: Built) -> None:
    index = built.index()
    text = json.dumps(index)
    (built.path / "index.json").write_bytes(text[:-1].encode() + b" " * (17 << 20) + b"}")


def _size(delta: int) -> Edit:
    def edit(doc: Doc, built: Built) -> None:
        doc["manifests"][0]["size"] += delta

    return edit


# -- the cases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One way to break the image and the key words the error must contain."""

    name: str
    words: tuple[str, ...]
    config: Edit | None = None
    manifest: Edit | None = None
    index: Edit | None = None
    post: Callable[[Built], None] | None = None
    ref: str | None = None
    bug: str | None = None
    timeout: float = 20.0  # a hang is a failure; a FIFO case that hangs is killed sooner


_MD5 = "md5:" + "0" * 32
_UPPER = "sha256:" + "AB" * 32
_SHORT = "sha256:" + "ab" * 31

BAD: list[Bad] = [
    # ---- oci-layout
    Bad("oci-layout-missing", ("oci-layout", "missing"), post=_remove_file("oci-layout")),
    Bad("oci-layout-not-json", ("oci-layout", "invalid json"),
        post=_replace_file("oci-layout", b"imageLayoutVersion=1.0.0")),
    Bad("oci-layout-not-object", ("oci-layout", "object"),
        post=_replace_file("oci-layout", b'["1.0.0"]')),
    Bad("oci-layout-version-2", ("imagelayoutversion", "2.0.0"),
        post=_replace_file("oci-layout", b'{"imageLayoutVersion": "2.0.0"}')),
    Bad("oci-layout-version-number", ("imagelayoutversion",),
        post=_replace_file("oci-layout", b'{"imageLayoutVersion": 1}')),
    Bad("oci-layout-symlink", ("oci-layout", "symlink"), post=_symlink_copy("oci-layout")),
    Bad("oci-layout-directory", ("oci-layout",), post=_dir_at("oci-layout")),
    Bad("oci-layout-fifo", ("oci-layout",), post=_fifo_at("oci-layout"),
        timeout=3),
    # ---- index.json
    Bad("index-missing", ("index.json", "missing"), post=_remove_file("index.json")),
    Bad("index-not-json", ("index.json", "invalid json"),
        post=_replace_file("index.json", b"{not json")),
    Bad("index-not-object", ("index.json", "object"), post=_replace_file("index.json", b"[]")),
    Bad("index-deeply-nested", ("index.json", "invalid json"),
        post=_replace_file("index.json", b"[" * 200_000 + b"]" * 200_000)),
    Bad("index-huge", ("index.json", "larger than"), post=_huge_index),
    Bad("index-symlink", ("index.json", "symlink"), post=_symlink_copy("index.json")),
    Bad("index-fifo", ("index.json",), post=_fifo_at("index.json"), timeout=3),
    Bad("index-directory", ("index.json",), post=_dir_at("index.json")),
    Bad("index-manifests-not-list", ("manifests", "not a list"),
        index=_set("", "manifests", {"a": 1})),
    Bad("index-manifests-missing", ("manifests", "not a list"),
        index=_delete("", "manifests")),
    Bad("index-schema-version-missing", ("schemaversion",), index=_delete("", "schemaVersion")),
    Bad("index-schema-version-string", ("schemaversion",),
        index=_set("", "schemaVersion", "2")),
    Bad("index-empty", ("0 manifests",), index=_set("", "manifests", [])),
    Bad("index-entry-not-object", ("descriptor", "not a json object"),
        index=_set("", "manifests", ["sha256:00"])),
    Bad("index-entry-unknown-media-type", ("unsupported manifest media type",),
        index=_set("manifests", "mediaType", "application/x-tar")),
    Bad("index-ref-missing", ("no image tagged", "nope"), ref="nope"),
    # ---- descriptors
    Bad("digest-uppercase", ("invalid digest", "lowercase"),
        index=_set("manifests", "digest", _UPPER)),
    Bad("digest-wrong-length", ("invalid digest", "64"),
        index=_set("manifests", "digest", _SHORT)),
    Bad("digest-md5", ("unsupported digest algorithm", "md5"),
        index=_set("manifests", "digest", _MD5)),
    Bad("digest-not-string", ("invalid digest",), index=_set("manifests", "digest", 1234)),
    Bad("digest-no-algorithm", ("invalid digest",),
        index=_set("manifests", "digest", "ab" * 32)),
    Bad("layer-digest-uppercase", ("invalid digest", "lowercase"),
        manifest=_set("layers", "digest", _UPPER)),
    Bad("config-digest-md5", ("unsupported digest algorithm", "md5"),
        manifest=_set("config", "digest", _MD5)),
    Bad("size-negative", ("size", "-1", "non-negative"), index=_set("manifests", "size", -1)),
    Bad("size-2-63-manifest", ("implausibly large",), index=_set("manifests", "size", 2**63)),
    Bad("size-2-63-layer", ("blob", str(2**63)), manifest=_set("layers", "size", 2**63)),
    Bad("size-float", ("size", "non-negative integer"), index=_set("manifests", "size", 1.5)),
    Bad("size-bool", ("size", "non-negative integer"), index=_set("manifests", "size", True)),
    Bad("size-string", ("size", "non-negative integer"),
        index=_set("manifests", "size", "100")),
    Bad("size-one-short", ("longer than",), index=_size(-1)),
    Bad("size-one-long", ("bytes", "descriptor says"), index=_size(+1)),
    Bad("layer-size-one-long", ("bytes", "descriptor says"),
        manifest=lambda doc, built: doc["layers"][0].update(size=doc["layers"][0]["size"] + 1)),
    Bad("annotations-not-strings", ("annotations",),
        index=_set("manifests", "annotations", {"org.opencontainers.image.ref.name": 1})),
    Bad("platform-not-object", ("platform", "not a json object"),
        index=_set("manifests", "platform", "linux/amd64")),
    # ---- manifests
    Bad("manifest-layers-not-list", ("layers", "not a list"),
        manifest=_set("", "layers", {"0": "x"})),
    Bad("manifest-layers-missing", ("layers", "not a list"), manifest=_delete("", "layers")),
    Bad("manifest-config-not-object", ("config", "not a json object"),
        manifest=_set("", "config", "sha256:" + "0" * 64)),
    Bad("manifest-config-missing", ("config", "not a json object"),
        manifest=_delete("", "config")),
    Bad("manifest-config-media-type", ("config media type",),
        manifest=_set("config", "mediaType", "application/json")),
    Bad("manifest-layer-media-type", ("unsupported media type", "application/x-foo"),
        manifest=_set("layers", "mediaType", "application/x-foo")),
    Bad("manifest-schema-version-3", ("schemaversion", "3"),
        manifest=_set("", "schemaVersion", 3)),
    Bad("manifest-media-type-mismatch", ("mediatype", "does not match"),
        manifest=_set("", "mediaType", INDEX_TYPES["oci"])),
    Bad("manifest-is-index-blob", ("does not match",), index=_manifest_is_index_blob),
    Bad("manifest-is-array", ("manifest", "object"), index=_manifest_blob_is_array),
    Bad("manifest-layer-count", ("2 layers", "1 diff_ids"),
        manifest=lambda doc, built: doc["layers"].append(built.layer)),
    # ---- configs
    Bad("config-diff-ids-missing", ("rootfs.diff_ids",),
        config=lambda doc, built: doc["rootfs"].pop("diff_ids")),
    Bad("config-diff-ids-not-list", ("rootfs.diff_ids", "not a list"),
        config=_set("rootfs", "diff_ids", "sha256:" + "0" * 64)),
    Bad("config-rootfs-not-object", ("rootfs",), config=_set("", "rootfs", ["layers"])),
    Bad("config-rootfs-type", ("rootfs", "layers"), config=_set("rootfs", "type", "tar")),
    Bad("config-diff-id-bad", ("invalid digest",),
        config=lambda doc, built: doc["rootfs"].update(diff_ids=["sha256:xyz"])),
    Bad("config-diff-id-wrong", ("diff_id",),
        config=lambda doc, built: doc["rootfs"].update(diff_ids=["sha256:" + "0" * 64])),
    Bad("config-config-not-object", ("config",), config=_set("", "config", ["/bin/sh"])),
    Bad("config-points-to-manifest-blob", ("rootfs",), manifest=_config_is_manifest_blob),
    Bad("config-points-to-layer-blob", ("image config", "invalid json"),
        manifest=_config_is_layer_blob),
    # ---- nesting
    Bad("index-nested-10-deep", ("nest", "too deep"), index=_nested(10)),
    # ---- blobs that are not plain files of the layout
    Bad("layer-blob-symlink-to-etc-passwd", ("symlink",), post=_blob_post("layer", "passwd")),
    Bad("layer-blob-symlink-right-content", ("symlink",), post=_blob_post("layer", "copy")),
    Bad("manifest-blob-symlink-right-content", ("symlink",),
        post=_blob_post("manifest", "copy")),
    Bad("config-blob-symlink-right-content", ("symlink",), post=_blob_post("config", "copy")),
    Bad("blobs-sha256-dir-symlink", ("symlink",), post=_blobs_dir_symlink("blobs/sha256")),
    Bad("blobs-dir-symlink", ("symlink",), post=_blobs_dir_symlink("blobs")),
    Bad("layer-blob-fifo", ("not a regular file",), post=_blob_post("layer", "fifo"),
        timeout=3),
    Bad("manifest-blob-fifo", ("not a regular file",), post=_blob_post("manifest", "fifo"),
        timeout=3),
    Bad("layer-blob-directory", ("not a regular file",), post=_blob_post("layer", "dir")),
    Bad("layer-blob-missing", ("missing",), post=_blob_post("layer", "missing")),
]


def _param(bad: Bad) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=bad.bug)] if bad.bug else []
    return pytest.param(bad, id=bad.name, marks=marks)


def _make(tmp_path: Path, bad: Bad) -> Built:
    built = build(tmp_path / "image", config=bad.config, manifest=bad.manifest, index=bad.index)
    if bad.post:
        bad.post(built)
    return built


@pytest.mark.parametrize("bad", [_param(b) for b in BAD])
def test_bad_image(tmp_path: Path, bad: Bad) -> None:
    built = _make(tmp_path, bad)
    dest = tmp_path / "bundle"
    image = f"{built.path}:{bad.ref}" if bad.ref else str(built.path)
    run = run_unpack([image, dest], timeout=bad.timeout)
    assert not run.timed_out, f"{bad.name}: hung (killed after {bad.timeout} s)"
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci-unpack: error: "), run.stderr
    assert run.returncode == 3, f"exit {run.returncode}: {run.stderr}"
    message = lines[0].lower()
    for word in bad.words:
        assert word.lower() in message, f"{word!r} not in {lines[0]!r}"
    assert not dest.exists()
    assert not [n for n in os.listdir(tmp_path) if ".oci-unpack-" in n]


def test_case_names_unique() -> None:
    names = [b.name for b in BAD]
    assert len(names) == len(set(names)) and len(names) >= 40


def test_unbroken_base_image_unpacks(tmp_path: Path) -> None:
    """The base every case breaks is itself valid, so each error is the named defect."""
    built = build(tmp_path / "image")
    run = run_unpack([built.path, tmp_path / "bundle"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "bundle" / "rootfs" / "hello.txt").read_bytes() == b"hello\n"


def test_nested_indexes_within_the_limit_unpack(tmp_path: Path) -> None:
    """3 nested indexes are fine: the 10-deep failure is the depth limit, not nesting."""
    built = build(tmp_path / "image", index=_nested(3))
    run = run_unpack([built.path, tmp_path / "bundle"])
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "bundle" / "rootfs" / "hello.txt").is_file()
