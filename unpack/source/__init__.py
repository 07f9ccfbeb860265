"""Image sources: OCI layouts, oci-archive and docker-archive tarballs, registries.

`open_source(IMAGE, options)` parses the transport reference and opens the
source; every source offers what the resolver reads (`Source`).
"""

from unpack.image.store import Source
from unpack.source.base import SourceOptions
from unpack.source.reference import (
    ACCEPTED_FORMS,
    SourceReference,
    open_source,
    parse_source_reference,
)

__all__ = [
    "ACCEPTED_FORMS",
    "Source",
    "SourceOptions",
    "SourceReference",
    "open_source",
    "parse_source_reference",
]
