"""The image documents, typed and checked once: `Index`, `Manifest`, `ImageConfig`.

Every source hands out verified bytes; these types turn them into values whose
shape is known (schema version, media types, descriptor lists, diff_ids), so
the resolver, `inspect` and the sources never re-check raw JSON. The limits
on documents, and the annotation naming a tag, are defined here once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unpack.errors import ImageError
from unpack.image import mediatypes
from unpack.image.compression import Compression
from unpack.image.descriptor import Descriptor
from unpack.image.platform import Platform
from unpack.verify import Digest

#: The annotation that tags an image in an index (`LAYOUT:TAG`).
REF_NAME = "org.opencontainers.image.ref.name"
#: The largest index.json read, and the largest manifest, index or config.
MAX_INDEX_SIZE = 16 << 20
MAX_DOCUMENT_SIZE = 32 << 20
#: How deep indexes may nest under index.json.
MAX_INDEX_DEPTH = 8


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Decode a JSON document that must be an object."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise ImageError(f"{what}: invalid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what}: expected a JSON object")
    return value


def _check_schema_version(document: Mapping[str, Any], what: str) -> None:
    version = document.get("schemaVersion")
    if version != 2 or isinstance(version, bool):
        raise ImageError(f"{what}: unsupported schemaVersion {version!r} (expected 2)")


def _check_media_type(document: Mapping[str, Any], descriptor: Descriptor | None,
                      what: str) -> None:
    declared = document.get("mediaType")
    if descriptor is not None and declared is not None and declared != descriptor.media_type:
        raise ImageError(
            f"{what}: mediaType {declared!r} does not match its descriptor's "
            f"{descriptor.media_type!r}"
        )


def descriptor_list(document: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    """The descriptors listed under `key` of a document."""
    values = document.get(key)
    if not isinstance(values, list):
        raise ImageError(f"{what}: {key} is not a list")
    return tuple(Descriptor.parse(v, f"{what} {key}[{i}]") for i, v in enumerate(values))


@dataclass(frozen=True)
class Index:
    """An image index (or Docker manifest list, or index.json): descriptors of manifests."""

    manifests: tuple[Descriptor, ...]
    media_type: str | None = None

    @classmethod
    def parse(cls, data: bytes, what: str, descriptor: Descriptor | None = None) -> Index:
        document = parse_json_object(data, what)
        _check_schema_version(document, what)
        _check_media_type(document, descriptor, what)
        declared = document.get("mediaType")
        return cls(descriptor_list(document, "manifests", what),
                   declared if isinstance(declared, str) else None)

    def tagged(self, ref: str) -> list[Descriptor]:
        """The entries whose ref.name annotation is `ref`."""
        return [d for d in self.manifests if d.annotations.get(REF_NAME) == ref]

    def refs_present(self) -> str:
        """The tags (and untagged digests) present, for messages."""
        tags = sorted({d.annotations[REF_NAME] for d in self.manifests
                       if REF_NAME in d.annotations})
        digests = [str(d.digest) for d in self.manifests if REF_NAME not in d.annotations]
        return ", ".join(tags + digests) or "(none)"


@dataclass(frozen=True)
class Layer:
    """One layer: its blob descriptor and its compression (the diff_id is in the config)."""

    descriptor: Descriptor
    compression: Compression


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2): its config and its layers."""

    config: Descriptor
    layers: tuple[Layer, ...]

    @classmethod
    def parse(cls, data: bytes, what: str, descriptor: Descriptor | None = None) -> Manifest:
        document = parse_json_object(data, what)
        _check_schema_version(document, what)
        _check_media_type(document, descriptor, what)
        config = Descriptor.parse(document.get("config"), f"{what} config")
        if config.media_type not in mediatypes.CONFIGS:
            raise ImageError(f"{what}: unsupported config media type {config.media_type!r}")
        layers = []
        for number, layer in enumerate(descriptor_list(document, "layers", what), 1):
            compression = mediatypes.LAYERS.get(layer.media_type)
            if compression is None:
                raise ImageError(f"{what}: layer {number} ({layer.digest}) has unsupported "
                                 f"media type {layer.media_type!r}")
            layers.append(Layer(layer, compression))
        return cls(config, tuple(layers))


@dataclass(frozen=True)
class ImageConfig:
    """An image config: its diff_ids, platform, and the run settings, as typed values.

    `raw` keeps the whole document for the runtime-config conversion.
    """

    raw: Mapping[str, Any]
    diff_ids: tuple[Digest, ...]
    platform: Platform | None
    created: str | None = None
    author: str | None = None
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    user: str | None = None
    working_dir: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None

    @classmethod
    def parse(cls, data: bytes, what: str) -> ImageConfig:
        document = parse_json_object(data, what)
        rootfs = document.get("rootfs")
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise ImageError(f"{what}: rootfs must be an object with type 'layers'")
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise ImageError(f"{what}: rootfs.diff_ids is not a list")
        run = document.get("config")
        run = run if isinstance(run, dict) else {}
        labels = run.get("Labels")
        return cls(
            raw=document,
            diff_ids=tuple(Digest.parse(d) for d in diff_ids),
            platform=Platform.from_descriptor(document),
            created=_text(document.get("created")),
            author=_text(document.get("author")),
            entrypoint=_words(run.get("Entrypoint")),
            cmd=_words(run.get("Cmd")),
            env=_words(run.get("Env")) or (),
            user=_text(run.get("User")),
            working_dir=_text(run.get("WorkingDir")),
            labels={str(k): str(v) for k, v in sorted(labels.items())}
            if isinstance(labels, dict) else {},
            exposed_ports=_keys(run.get("ExposedPorts")),
            volumes=_keys(run.get("Volumes")),
            stop_signal=_text(run.get("StopSignal")),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _words(value: object) -> tuple[str, ...] | None:
    return tuple(str(w) for w in value) if isinstance(value, list) else None


def _keys(value: object) -> tuple[str, ...]:
    return tuple(sorted(str(k) for k in value)) if isinstance(value, dict) else ()
