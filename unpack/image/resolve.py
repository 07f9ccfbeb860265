"""Resolve a reference in a source to one image: index → manifest → config + layers.

In two steps, so that the signature policy can judge the manifest before
anything else of the image is read: `resolve_manifest` walks the index to
the platform's manifest and reads it; `load_image` reads its config.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from unpack.errors import ImageError
from unpack.image import mediatypes
from unpack.image.compression import Compression
from unpack.image.descriptor import Descriptor
from unpack.image.documents import MAX_INDEX_DEPTH, REF_NAME, ImageConfig, Index, Manifest
from unpack.image.platform import Platform
from unpack.image.store import Source
from unpack.verify import Digest


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
    config: ImageConfig
    layers: tuple[Layer, ...]

    @property
    def platform(self) -> Platform | None:
        """The platform the image config declares."""
        return self.config.platform


@dataclass(frozen=True)
class ResolvedManifest:
    """The manifest `ref` names for the platform, read and verified; config not read yet."""

    descriptor: Descriptor
    data: bytes


def resolve_image(source: Source, ref: str | None, platform: Platform | None) -> Image:
    """Find the image `ref` names for `platform` (None: the host's, leniently)."""
    return load_image(source, resolve_manifest(source, ref, platform), platform)


def resolve_manifest(
    source: Source, ref: str | None, platform: Platform | None
) -> ResolvedManifest:
    """Walk the index to the platform's manifest, and read it (nothing else).

    `ref` is a tag, a manifest digest, or `@N` (the N-th entry of the index).
    """
    index = source.index()
    if ref is not None and ref.split(":", 1)[0] in ("sha256", "sha512"):
        wanted = Digest.parse(ref)
        found = next((d for d in descriptors_under(source, index.manifests) if d.digest == wanted),
                     None)
        if found is None:
            raise ImageError(
                f"no manifest {wanted} in {source.path}/index.json or the indexes under it"
            )
        candidates = [found]
    elif ref is not None and ref.startswith("@") and ref[1:].isdigit():
        number = int(ref[1:])
        if number >= len(index.manifests):
            raise ImageError(f"{source.path}: no image {ref} (it holds {len(index.manifests)}, "
                             "from @0)")
        candidates = [index.manifests[number]]
    else:
        candidates = _select_by_ref(index, ref, source.path)
    leaves = [d for d in descriptors_under(source, candidates) if d.media_type not in
              mediatypes.INDEXES]
    for leaf in leaves:
        if leaf.media_type not in mediatypes.MANIFESTS:
            raise ImageError(
                f"unsupported manifest media type {leaf.media_type!r} ({leaf.digest})"
            )
    descriptor = _pick_platform(leaves, platform, ref, source.path)
    return ResolvedManifest(descriptor, source.read_document(descriptor, "manifest"))


def platforms_under(source: Source, ref: str | None) -> list[str]:
    """The platforms named in the indexes under what `ref` names (all entries if None)."""
    index = source.index()
    chosen = [d for d in index.manifests if ref is None or d.annotations.get(REF_NAME) == ref
              or str(d.digest) == ref]
    return sorted({str(d.platform) for d in descriptors_under(source, chosen) if d.platform})


def descriptors_under(source: Source, entries: list[Descriptor] | tuple[Descriptor, ...]
                      ) -> Iterator[Descriptor]:
    """Every descriptor in `entries` and in the indexes below them, depth first.

    Nested indexes are read (and verified) as they are reached; a cycle or
    nesting deeper than MAX_INDEX_DEPTH is an error.
    """
    pending = [(entry, 0, frozenset[Digest]()) for entry in reversed(entries)]
    while pending:
        descriptor, depth, seen = pending.pop()
        yield descriptor
        if descriptor.media_type not in mediatypes.INDEXES:
            continue
        if descriptor.digest in seen or depth >= MAX_INDEX_DEPTH:
            raise ImageError(f"image index {descriptor.digest}: indexes nest in a cycle or "
                             "too deep")
        what = f"image index {descriptor.digest}"
        nested = Index.parse(source.read_document(descriptor, "image index"), what, descriptor)
        below = seen | {descriptor.digest}
        pending += [(child, depth + 1, below) for child in reversed(nested.manifests)]


def _select_by_ref(index: Index, ref: str | None, where: str) -> list[Descriptor]:
    entries = index.manifests
    if ref is None:
        if len(entries) == 1:
            return list(entries)
        tagged = index.tagged("latest")
        if tagged:
            return tagged
        raise ImageError(
            f"{where} holds {len(entries)} manifests and none is tagged 'latest'; "
            f"choose one of: {index.refs_present()}"
        )
    tagged = index.tagged(ref)
    if not tagged:
        raise ImageError(f"no image tagged {ref!r} in {where}; refs present: "
                         f"{index.refs_present()}")
    return tagged


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


def load_image(source: Source, resolved: ResolvedManifest, explicit: Platform | None) -> Image:
    """Check the manifest, read its config, and describe its layers."""
    descriptor = resolved.descriptor
    what = f"manifest {descriptor.digest}"
    manifest = Manifest.parse(resolved.data, what, descriptor)
    config = ImageConfig.parse(source.read_document(manifest.config, "image config"),
                               f"image config {manifest.config.digest}")
    if len(config.diff_ids) != len(manifest.layers):
        raise ImageError(
            f"{what}: {len(manifest.layers)} layers but its config lists "
            f"{len(config.diff_ids)} diff_ids"
        )
    layers = tuple(Layer(layer.descriptor, layer.compression, diff_id)
                   for layer, diff_id in zip(manifest.layers, config.diff_ids, strict=True))
    image = Image(descriptor, manifest.config, config, layers)
    if explicit is not None and image.platform not in (None, explicit):
        raise ImageError(f"{what} is for {image.platform}, not the requested {explicit}")
    return image
