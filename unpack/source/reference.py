"""The IMAGE argument, with skopeo's transport names; and opening the source it names.

    oci:PATH[:REF]                        an OCI image layout directory
    oci-archive:PATH[:REF]                an OCI layout in a tar (plain, .gz, .zst)
    docker-archive:PATH[:NAME:TAG|:@N]    a `docker save` / skopeo docker-archive tarball
    docker://HOST[:PORT]/NAME[:TAG|@DIGEST]   a registry (docker://NAME: Docker Hub)
    PATH[:REF]                            a directory: a layout; a file: an archive

A transport prefix always wins (write `./oci:x` for a local path named so).
In a path, `:` separates REF only where the part before it exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from unpack.errors import ImageError, UsageError
from unpack.image.reference import parse_image_reference
from unpack.image.store import Source
from unpack.source.archive import DockerArchive, OciArchive, open_archive
from unpack.source.base import SourceOptions
from unpack.source.dockerref import InvalidReference, parse_normalized
from unpack.source.layout import Layout
from unpack.source.registryref import RegistryReference
from unpack.source.tarindex import sniff_archive
from unpack.verify import Digest

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker")
ACCEPTED_FORMS = (
    "oci:PATH[:REF], oci-archive:PATH[:REF], docker-archive:PATH[:NAME:TAG], "
    "docker://HOST[:PORT]/NAME[:TAG|@DIGEST], or a layout directory or archive PATH[:REF]"
)
_REF = re.compile(r"[A-Za-z0-9@][A-Za-z0-9._:@/+-]*")


@dataclass(frozen=True)
class SourceReference:
    """A parsed IMAGE: its transport, where it is, and which image there (REF)."""

    transport: str  # oci, oci-archive, docker-archive, archive (sniffed) or docker
    location: str  # a path, or for docker: the RegistryReference's text
    ref: str | None
    registry: RegistryReference | None = None

    def __str__(self) -> str:
        if self.registry is not None:
            return str(self.registry)
        text = self.location if self.ref is None else f"{self.location}:{self.ref}"
        return text if self.transport == "archive" else f"{self.transport}:{text}"


def parse_source_reference(text: str) -> SourceReference:
    """Parse IMAGE into a transport, a location and a REF (checking local paths exist)."""
    if not text:
        raise UsageError(f"IMAGE is empty: expected {ACCEPTED_FORMS}")
    transport, colon, rest = text.partition(":")
    if colon and transport in TRANSPORTS:
        if transport == "docker":
            return _registry(text, rest)
        if transport == "oci":
            layout = _split(rest, os.path.isdir, text, "an OCI image layout directory")
            return SourceReference("oci", *layout)
        return SourceReference(transport, *_split(rest, os.path.isfile, text, "an archive file"))
    if os.path.isdir(text) or not _file_prefix(text):
        try:
            reference = parse_image_reference(text)
        except UsageError:
            raise UsageError(
                f"no OCI image layout directory found in {text!r}, nor an image archive; "
                f"expected {ACCEPTED_FORMS}"
            ) from None
        return SourceReference("oci", reference.layout, reference.ref)
    path, ref = _split(text, os.path.isfile, text, "an archive file")
    if not sniff_archive(path):
        raise UsageError(
            f"{path!r} is neither an OCI image layout directory nor a tar archive; "
            f"expected {ACCEPTED_FORMS}"
        )
    return SourceReference("archive", path, ref)


def _file_prefix(text: str) -> bool:
    """Whether `text` or a part of it before a `:` is an existing file."""
    if os.path.isfile(text):
        return True
    return any(os.path.isfile(text[:i]) for i, char in enumerate(text) if char == ":" and i)


def _split(
    rest: str, exists: Callable[[str], bool], text: str, kind: str
) -> tuple[str, str | None]:
    """`PATH[:REF]` where PATH exists: the whole string wins, else the longest prefix."""
    if rest and exists(rest):
        return rest, None
    colons = [i for i, char in enumerate(rest) if char == ":"]
    for index in reversed(colons):
        prefix, suffix = rest[:index], rest[index + 1 :]
        if prefix and exists(prefix) and _REF.fullmatch(suffix):
            return prefix, suffix
    raise UsageError(f"no {kind} found in {text!r}; expected {ACCEPTED_FORMS}")


def _registry(text: str, rest: str) -> SourceReference:
    """`docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`, normalised as Docker does (see dockerref)."""
    if not rest.startswith("//"):
        raise UsageError(f"{text!r}: expected docker://HOST[:PORT]/NAME[:TAG|@DIGEST]")
    try:
        parsed = parse_normalized(rest[2:])
        digest = None if parsed.digest is None else Digest.parse(parsed.digest)
    except (InvalidReference, ImageError) as error:
        raise UsageError(f"{text!r}: {error}") from None
    tag = "latest" if parsed.name_only else parsed.tag
    reference = RegistryReference(parsed.domain, parsed.path, tag, digest)
    return SourceReference("docker", str(reference), reference.ref, reference)


def open_source(
    text: str, options: SourceOptions | None = None
) -> tuple[Source, str | None, SourceReference]:
    """Open the source IMAGE names; return it, the REF to resolve in it, and the parse.

    For a docker-archive the REF returned is the chosen image's manifest
    digest; for a registry it is the tag (or the digest).
    """
    options = options or SourceOptions()
    reference = parse_source_reference(text)
    if reference.transport == "docker":
        assert reference.registry is not None
        from unpack.source.registry import RegistrySource  # loads requests only when needed

        return RegistrySource(reference.registry, options), reference.ref, reference
    if reference.transport == "oci":
        return Layout(reference.location), reference.ref, reference
    kind = {"oci-archive": "oci", "docker-archive": "docker"}.get(reference.transport)
    source = open_archive(reference.location, kind)
    if isinstance(source, DockerArchive):
        try:
            return source, source.select(reference.ref), reference
        except BaseException:
            source.close()
            raise
    assert isinstance(source, OciArchive)
    return source, reference.ref, reference
