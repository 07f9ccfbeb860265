"""oci-unpack: turn an OCI image into a runtime bundle (config.json + rootfs/).

The Python API (see `unpack.api`):

    from unpack import unpack_image, inspect_image, UnpackOptions

The names below are loaded on first use, so `import unpack` (and the command
line's start) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "unpack_image": "unpack.api", "inspect_image": "unpack.api",
    "UnpackOptions": "unpack.verbs.unpack", "UnpackReport": "unpack.verbs.unpack",
    "LayerReport": "unpack.verbs.unpack", "InspectReport": "unpack.verbs.inspect",
    "InspectLayer": "unpack.verbs.inspect", "LayerProgress": "unpack.progress",
    "RuntimeOptions": "unpack.config", "SourceOptions": "unpack.source.base",
    "TrustOptions": "unpack.trust.decide", "SignatureReport": "unpack.trust.decide",
    "Platform": "unpack.image.platform", "IdMap": "unpack.idmap",
    **{name: "unpack.errors" for name in (
        "UnpackError", "ImageError", "VerificationError", "LayerError", "ConfigError",
        "FilesystemError", "NetworkError", "UsageError", "PolicyError", "PolicyRejected",
        "Interrupted")},
}
__all__ = [  # noqa: RUF022 (grouped as above)
    "__version__", "unpack_image", "inspect_image", "UnpackOptions", "UnpackReport",
    "LayerReport", "InspectReport", "InspectLayer", "LayerProgress", "RuntimeOptions",
    "SourceOptions", "TrustOptions", "SignatureReport", "Platform", "IdMap", "UnpackError",
    "ImageError", "VerificationError", "LayerError", "ConfigError", "FilesystemError",
    "NetworkError", "UsageError", "PolicyError", "PolicyRejected", "Interrupted",
]

if TYPE_CHECKING:
    from unpack.api import inspect_image, unpack_image
    from unpack.config import RuntimeOptions
    from unpack.errors import (
        ConfigError,
        FilesystemError,
        ImageError,
        Interrupted,
        LayerError,
        NetworkError,
        PolicyError,
        PolicyRejected,
        UnpackError,
        UsageError,
        VerificationError,
    )
    from unpack.idmap import IdMap
    from unpack.image.platform import Platform
    from unpack.progress import LayerProgress
    from unpack.source.base import SourceOptions
    from unpack.trust.decide import SignatureReport, TrustOptions
    from unpack.verbs.inspect import InspectLayer, InspectReport
    from unpack.verbs.unpack import LayerReport, UnpackOptions, UnpackReport


def __getattr__(name: str) -> Any:
    """Load an exported name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'unpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
