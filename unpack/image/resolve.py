"""Resolve a reference in a layout to one image: index → manifest → config + layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpack.errors import ImageError
from unpack.image import mediatypes
from unpack.image.compression import Compression
from unpack.image.descriptor import (
    Descriptor,
    check_schema_version,
    descriptor_list,
    parse_json_object,
)
from unpack.image.platform import Platform
from unpack.image.store import Source, read_json
from unpack.verify import Digest

REF_NAME = "org.opencontainers.image.ref.name"
MAX_INDEX_DEPTH = 8


@dataclass(frozen=True)
class Layer:
    """One layer: its blob descriptor, its compression and its expected diff_id."""

    descriptor: Descriptor
    compression: Compression
    diff_id: Digest


@dataclass(frozen=True)
class Image:
    """A fully resolved image, ready to unpack."""

    manifest: Descriptor
    config_descriptor: Descriptor
    config: dict[str, Any]
    layers: tuple[Layer, ...]

    @property
    def platform(self) -> Platform | None:
        """The platform the image config declares."""
        return Platform.from_descriptor(self.config)


@dataclass(frozen=True)
class ResolvedManifest:
    """The manifest `ref` names for the platform, read and verified; config not read yet."""

    descriptor: Descriptor
    data: bytes


def resolve_image(layout: Source, ref: str | None, platform: Platform | None) -> Image:
    """Find the image `ref` names for `platform` (None: the host's, leniently)."""
    return load_image(layout, resolve_manifest(layout, ref, platform), platform)


def resolve_manifest(
    layout: Source, ref: str | None, platform: Platform | None
) -> ResolvedManifest:
    """Walk the index to the platform's manifest, and read it (nothing else)."""
    index = layout.index()
    check_schema_version(index, f"{layout.path}/index.json")
    entries = descriptor_list(index, "manifests", f"{layout.path}/index.json")
    if ref is not None and ref.split(":", 1)[0] in ("sha256", "sha512"):
        candidates = [_find_digest(layout, entries, Digest.parse(ref))]
    else:
        candidates = _select_by_ref(entries, ref, layout.path)
    leaves = [leaf for c in candidates for leaf in _manifests(layout, c, 0, frozenset())]
    descriptor = _pick_platform(leaves, platform, ref, layout.path)
    return ResolvedManifest(descriptor, layout.read_document(descriptor, "manifest"))


def _select_by_ref(entries: list[Descriptor], ref: str | None, where: str) -> list[Descriptor]:
    if ref is None:
        if len(entries) == 1:
            return entries
        tagged = [e for e in entries if e.annotations.get(REF_NAME) == "latest"]
        if tagged:
            return tagged
        raise ImageError(
            f"{where} holds {len(entries)} manifests and none is tagged 'latest'; "
            f"choose one of: {_refs_present(entries)}"
        )
    tagged = [e for e in entries if e.annotations.get(REF_NAME) == ref]
    if not tagged:
        raise ImageError(
            f"no image tagged {ref!r} in {where}; refs present: {_refs_present(entries)}"
        )
    return tagged


def _find_digest(layout: Source, entries: list[Descriptor], digest: Digest) -> Descriptor:
    """The descriptor with `digest`, in index.json or any index nested under it."""
    pending = [(entry, 0) for entry in entries]
    while pending:
        descriptor, depth = pending.pop(0)
        if descriptor.digest == digest:
            return descriptor
        if descriptor.media_type in mediatypes.INDEXES and depth < MAX_INDEX_DEPTH:
            what = f"image index {descriptor.digest}"
            index = read_json(layout, descriptor, "image index")
            check_schema_version(index, what)
            children = descriptor_list(index, "manifests", what)
            pending.extend((child, depth + 1) for child in children)
    raise ImageError(f"no manifest {digest} in {layout.path}/index.json or the indexes under it")


def _refs_present(entries: list[Descriptor]) -> str:
    refs = sorted({e.annotations[REF_NAME] for e in entries if REF_NAME in e.annotations})
    digests = [str(e.digest) for e in entries if REF_NAME not in e.annotations]
    return ", ".join(refs + digests) or "(none)"


def _manifests(
    layout: Source, descriptor: Descriptor, depth: int, seen: frozenset[Digest]
) -> list[Descriptor]:
    """The image manifests reachable from `descriptor`, descending nested indexes."""
    if descriptor.media_type in mediatypes.MANIFESTS:
        return [descriptor]
    if descriptor.media_type not in mediatypes.INDEXES:
        raise ImageError(
            f"unsupported manifest media type {descriptor.media_type!r} ({descriptor.digest})"
        )
    if descriptor.digest in seen or depth >= MAX_INDEX_DEPTH:
        raise ImageError(f"image index {descriptor.digest}: indexes nest in a cycle or too deep")
    what = f"image index {descriptor.digest}"
    index = read_json(layout, descriptor, "image index")
    check_schema_version(index, what)
    _check_media_type(index, descriptor, what)
    children = descriptor_list(index, "manifests", what)
    seen = seen | {descriptor.digest}
    return [leaf for child in children for leaf in _manifests(layout, child, depth + 1, seen)]


def _pick_platform(
    leaves: list[Descriptor], wanted: Platform | None, ref: str | None, where: str
) -> Descriptor:
    if len(leaves) == 1 and (wanted is None or leaves[0].platform is None):
        return leaves[0]  # one image: take it whatever its platform, unless one was asked for
    target = wanted or Platform.host()
    matches = [d for d in leaves if d.platform is None or d.platform == target]
    if matches:
        return matches[0]
    present = ", ".join(sorted({str(d.platform) for d in leaves if d.platform})) or "(none)"
    name = f"{where}:{ref}" if ref else where
    raise ImageError(f"no manifest for platform {target} in {name}; platforms present: {present}")


def _check_media_type(document: Mapping[str, Any], descriptor: Descriptor, what: str) -> None:
    declared = document.get("mediaType")
    if declared is not None and declared != descriptor.media_type:
        raise ImageError(
            f"{what}: mediaType {declared!r} does not match its descriptor's "
            f"{descriptor.media_type!r}"
        )


def load_image(layout: Source, resolved: ResolvedManifest, explicit: Platform | None) -> Image:
    """Check the manifest, read its config, and describe its layers."""
    descriptor = resolved.descriptor
    what = f"manifest {descriptor.digest}"
    manifest = parse_json_object(resolved.data, what)
    check_schema_version(manifest, what)
    _check_media_type(manifest, descriptor, what)
    config_descriptor = Descriptor.parse(manifest.get("config"), f"{what} config")
    if config_descriptor.media_type not in mediatypes.CONFIGS:
        raise ImageError(f"{what}: unsupported config media type {config_descriptor.media_type!r}")
    layer_descriptors = descriptor_list(manifest, "layers", what)
    config = read_json(layout, config_descriptor, "image config")
    diff_ids = _diff_ids(config, f"image config {config_descriptor.digest}")
    if len(diff_ids) != len(layer_descriptors):
        raise ImageError(
            f"{what}: {len(layer_descriptors)} layers but its config lists {len(diff_ids)} diff_ids"
        )
    layers = []
    for number, (layer, diff_id) in enumerate(zip(layer_descriptors, diff_ids, strict=True), 1):
        compression = mediatypes.LAYERS.get(layer.media_type)
        if compression is None:
            raise ImageError(
                f"{what}: layer {number} ({layer.digest}) has unsupported media type "
                f"{layer.media_type!r}"
            )
        layers.append(Layer(layer, compression, diff_id))
    image = Image(descriptor, config_descriptor, config, tuple(layers))
    if explicit is not None and image.platform not in (None, explicit):
        raise ImageError(f"{what} is for {image.platform}, not the requested {explicit}")
    return image


def _diff_ids(config: Mapping[str, Any], what: str) -> list[Digest]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageError(f"{what}: rootfs must be an object with type 'layers'")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise ImageError(f"{what}: rootfs.diff_ids is not a list")
    return [Digest.parse(d) for d in diff_ids]
