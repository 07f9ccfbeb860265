"""Conversion of an image config into a runtime-spec bundle config (``config.json``)."""

from unpack.config.convert import RuntimeBundle, RuntimeOptions, runtime_config
from unpack.config.rootless import HostIds, parse_subid

__all__ = ["HostIds", "RuntimeBundle", "RuntimeOptions", "parse_subid", "runtime_config"]
