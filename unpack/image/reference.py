"""Parse the IMAGE argument: `LAYOUT[:REF]`.

LAYOUT is an OCI image layout directory; REF a tag (`ref.name`
annotation) or a manifest digest. A path may itself contain `:`, so the
split is made only where the prefix is an existing directory and the
suffix looks like a reference; the whole string wins if it is a directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from unpack.errors import UsageError

_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+-]*")


@dataclass(frozen=True)
class ImageReference:
    """Where the image is (a layout directory) and which one (REF or None)."""

    layout: str
    ref: str | None

    def __str__(self) -> str:
        return self.layout if self.ref is None else f"{self.layout}:{self.ref}"


def parse_image_reference(text: str) -> ImageReference:
    """Split `LAYOUT[:REF]`, checking the layout directory exists."""
    if not text:
        raise UsageError("IMAGE is empty: expected LAYOUT[:REF]")
    if os.path.isdir(text):
        return ImageReference(text, None)
    colons = [i for i, char in enumerate(text) if char == ":"]
    for index in reversed(colons):
        prefix, suffix = text[:index], text[index + 1 :]
        if prefix and os.path.isdir(prefix) and _REF.fullmatch(suffix):
            return ImageReference(prefix, suffix)
    raise UsageError(f"no OCI image layout directory found in {text!r} (expected LAYOUT[:REF])")
