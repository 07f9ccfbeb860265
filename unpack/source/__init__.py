"""Image sources: OCI layouts, oci-archive and docker-archive tarballs, registries.

`parse_image_reference(IMAGE)` reads the argument; `open_source(IMAGE, options)`
opens the source it names; every source offers what the resolver reads (`Source`).
"""

from unpack.image.store import Source
from unpack.source.base import SourceOptions
from unpack.source.open import open_source
from unpack.source.reference import ACCEPTED_FORMS, ImageReference, parse_image_reference

__all__ = [
    "ACCEPTED_FORMS",
    "ImageReference",
    "Source",
    "SourceOptions",
    "open_source",
    "parse_image_reference",
]
