"""Content descriptors: what a blob is, its digest and its size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from unpack.errors import ImageError
from unpack.image.platform import Platform
from unpack.verify import Digest


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size."""

    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    @classmethod
    def parse(cls, value: object, where: str) -> Descriptor:
        """Validate a descriptor object found at `where` (for error messages)."""
        if not isinstance(value, dict):
            raise ImageError(f"{where}: descriptor is not a JSON object")
        media_type = value.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise ImageError(f"{where}: descriptor has no mediaType")
        size = value.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageError(f"{where}: descriptor size {size!r} is not a non-negative integer")
        digest = Digest.parse(value.get("digest"))
        annotations = value.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ImageError(f"{where}: descriptor annotations must map strings to strings")
        platform_value = value.get("platform")
        platform = None
        if platform_value is not None:
            if not isinstance(platform_value, dict):
                raise ImageError(f"{where}: descriptor platform is not a JSON object")
            platform = Platform.from_descriptor(platform_value)
        urls = value.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ImageError(f"{where}: descriptor urls must be a list of strings")
        return cls(media_type, digest, size, platform, annotations, tuple(urls))

    def __str__(self) -> str:
        return f"{self.media_type} {self.digest}"
