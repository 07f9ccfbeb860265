"""Conversion of an image config into a runtime-spec bundle config (``config.json``)."""

from unpack.config.convert import RuntimeBundle, RuntimeOptions, runtime_config

__all__ = ["RuntimeBundle", "RuntimeOptions", "runtime_config"]
