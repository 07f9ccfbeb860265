"""Open the source an `ImageReference` names: a layout, an archive, or a registry."""

from __future__ import annotations

import os

from unpack.errors import UsageError
from unpack.image.store import Source
from unpack.source.base import SourceOptions
from unpack.source.layout import Layout
from unpack.source.reference import ImageReference, parse_image_reference, registry_image

LAYOUT_FILES = ("oci-layout", "index.json")


def _open_registry(reference: ImageReference, options: SourceOptions
                   ) -> tuple[Source, str | None, ImageReference]:
    """A registry source through registries.conf; for a short name, the reference returned
    is the fully qualified one used (and says how it was found)."""
    from unpack.source import discovery

    conf = discovery.load_conf(options)
    if reference.registry is not None:
        resolved = discovery.Resolved((reference.registry,), None)
    else:
        resolved = discovery.resolve_short_name(reference.location, conf)
    source, used = discovery.open_registry(resolved.candidates, options, conf)
    if reference.registry is None:
        reference = registry_image(used, short_name=reference.location,
                                   resolution=resolved.rationale or "fully qualified")
    return source, reference.ref, reference


def open_source(
    image: str | ImageReference, options: SourceOptions | None = None
) -> tuple[Source, str | None, ImageReference]:
    """Open the source IMAGE names; return it, the REF to resolve in it, and the reference.

    For a docker-archive the REF returned is the chosen image's manifest
    digest; for a registry it is the tag (or the digest).
    """
    options = options or SourceOptions()
    reference = image if isinstance(image, ImageReference) else parse_image_reference(image)
    if reference.transport == "docker":
        return _open_registry(reference, options)
    path = reference.location
    if reference.transport == "oci":
        if not any(os.path.lexists(os.path.join(path, name)) for name in LAYOUT_FILES):
            # an unrelated directory (a broken layout is a bad image, exit 3, from Layout)
            raise UsageError(f"{path}: not an OCI image layout (no oci-layout or index.json)")
        return Layout(path), reference.ref, reference
    from unpack.source.archive import DockerArchive, OciArchive, open_archive
    from unpack.source.tarindex import sniff_archive

    if reference.transport == "archive" and not sniff_archive(path):
        raise UsageError(f"{path}: neither an OCI image layout directory nor a tar archive")
    kind = {"oci-archive": "oci", "docker-archive": "docker"}.get(reference.transport)
    source = open_archive(path, kind)
    if isinstance(source, DockerArchive):
        try:
            return source, source.select(reference.ref), reference
        except BaseException:
            source.close()
            raise
    assert isinstance(source, OciArchive)
    return source, reference.ref, reference
