"""The OCI image layout directory source: `unpack.image.layout.Layout` already is one."""

from unpack.image.layout import Layout

__all__ = ["Layout"]
