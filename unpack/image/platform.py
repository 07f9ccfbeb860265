"""Platforms (`os/arch[/variant]`), normalised the way containerd does."""

from __future__ import annotations

import platform as host
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpack.errors import UsageError

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i686": "386",
}
_DEFAULT_VARIANT = {"armhf": "v7", "armel": "v6"}


@dataclass(frozen=True)
class Platform:
    """A normalised platform: arm64/v8 is arm64 with no variant, arm alone is arm/v7."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def of(cls, os_name: str, arch: str, variant: str = "") -> Platform:
        """Build a normalised platform from raw strings."""
        os_name, raw_arch, variant = os_name.lower(), arch.lower(), variant.lower()
        arch = _ARCH_ALIASES.get(raw_arch, raw_arch)
        variant = variant or _DEFAULT_VARIANT.get(raw_arch, "")
        if arch == "arm64" and variant in ("8", "v8"):
            variant = ""
        elif arch == "arm" and variant in ("", "7"):
            variant = "v7"
        elif arch == "arm" and variant in ("5", "6", "8"):
            variant = "v" + variant
        elif arch == "amd64" and variant == "v1":
            variant = ""
        return cls(os_name, arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse a `--platform` value: `os/arch[/variant]`."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls.of(*parts)

    @classmethod
    def from_descriptor(cls, value: Mapping[str, Any]) -> Platform | None:
        """The platform of an index entry, or None if it names none."""
        os_name, arch = value.get("os"), value.get("architecture")
        if not isinstance(os_name, str) or not isinstance(arch, str):
            return None
        variant = value.get("variant")
        return cls.of(os_name, arch, variant if isinstance(variant, str) else "")

    @classmethod
    def host(cls) -> Platform:
        """The platform of this machine (Linux containers)."""
        return cls.of("linux", host.machine())

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
