"""The IMAGE argument, with skopeo's transport names, parsed once into an `ImageReference`.

    oci:PATH[:REF]                        an OCI image layout directory
    oci-archive:PATH[:REF]                an OCI layout in a tar (plain, .gz, .zst)
    docker-archive:PATH[:NAME:TAG|:@N]    a `docker save` / skopeo docker-archive tarball
    docker://HOST[:PORT]/NAME[:TAG|@DIGEST]   a registry (docker://NAME: Docker Hub)
    PATH[:REF]                            a directory: a layout; a file: an archive
    NAME[:TAG|@DIGEST]                    no such path: an image name, resolved through
                                          registries.conf (`discovery`)

REF is a tag, a digest (`sha256:…`) or `@N` (the N-th image, from 0). A
transport prefix always wins (write `./oci:x` for a local path named so). In a
path, `:` separates REF only where the part before it exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from unpack.errors import ImageError, UsageError
from unpack.source.dockerref import InvalidReference, parse_normalized
from unpack.source.registryref import RegistryReference
from unpack.verify import Digest

TRANSPORTS = ("oci", "oci-archive", "docker-archive", "docker")
ACCEPTED_FORMS = (
    "oci:PATH[:REF], oci-archive:PATH[:REF], docker-archive:PATH[:NAME:TAG], "
    "docker://HOST[:PORT]/NAME[:TAG|@DIGEST], or a layout directory or archive PATH[:REF]"
)
_REF = re.compile(r"[A-Za-z0-9@][A-Za-z0-9._:@/+-]*")
_INDEX = re.compile(r"@[0-9]+")


@dataclass(frozen=True)
class ImageReference:
    """A parsed IMAGE: its transport, where it is, and which image there."""

    transport: str  # oci, oci-archive, docker-archive, docker, or archive (kind sniffed)
    location: str  # a path, or for docker: the RegistryReference's text
    tag: str | None = None  # a tag: ref.name, a docker-archive NAME:TAG, a registry tag
    digest: Digest | None = None
    index: int | None = None  # @N: the N-th image of the index or archive
    registry: RegistryReference | None = None  # None for a name yet to resolve
    short_name: str | None = None  # IMAGE as written, when it was a name to resolve
    resolution: str | None = None  # how it was resolved ("alias in FILE", …)

    @property
    def ref(self) -> str | None:
        """REF as written: the digest, `@N`, or the tag (None for none)."""
        if self.registry is not None:
            return self.registry.ref
        if self.digest is not None:
            return str(self.digest)
        if self.index is not None:
            return f"@{self.index}"
        return self.tag

    def __str__(self) -> str:
        if self.registry is not None:
            return str(self.registry)
        ref = self.ref
        text = self.location if ref is None else f"{self.location}:{ref}"
        return text if self.transport == "archive" else f"{self.transport}:{text}"


def parse_image_reference(text: str) -> ImageReference:
    """Parse IMAGE into a transport, a location and which image (checking local paths exist)."""
    if not text:
        raise UsageError(f"IMAGE is empty; expected {ACCEPTED_FORMS}")
    transport, colon, rest = text.partition(":")
    if colon and transport in TRANSPORTS:
        if transport == "docker":
            return _registry(text, rest)
        exists = os.path.isdir if transport == "oci" else os.path.isfile
        path, ref = _split(rest, exists)
        if path is None:
            kind = "an OCI image layout directory" if transport == "oci" else "an archive file"
            present, _ = _split(rest, os.path.exists)
            if present is not None:
                raise UsageError(f"{present}: not {kind}, which {transport}: names")
            raise _missing(rest or text)
        return _local(transport, path, ref, text)
    path, ref = _split(text, os.path.exists)
    if path is None:
        if _looks_like_a_registry_name(text):  # resolved through registries.conf
            return ImageReference("docker", text, short_name=text)
        raise _missing(text)
    return _local("oci" if os.path.isdir(path) else "archive", path, ref, text)


def _split(text: str, exists: Callable[[str], bool]) -> tuple[str | None, str | None]:
    """`PATH[:REF]` where PATH exists: the whole string wins, else the longest prefix."""
    if text and exists(text):
        return text, None
    colons = [i for i, char in enumerate(text) if char == ":"]
    for index in reversed(colons):
        prefix, suffix = text[:index], text[index + 1 :]
        if prefix and exists(prefix):
            if not _REF.fullmatch(suffix):
                raise UsageError(f"{text!r}: invalid image reference {suffix!r} after the path")
            return prefix, suffix
    return None, None


def _local(transport: str, path: str, ref: str | None, text: str) -> ImageReference:
    """A local image: its REF read as `@N`, a digest, or a tag."""
    if ref is None:
        return ImageReference(transport, path)
    if _INDEX.fullmatch(ref):
        return ImageReference(transport, path, index=int(ref[1:]))
    if ref.split(":", 1)[0] in ("sha256", "sha512"):
        try:
            return ImageReference(transport, path, digest=Digest.parse(ref))
        except ImageError as error:
            raise UsageError(f"{text!r}: {error}") from None
    return ImageReference(transport, path, tag=ref)


def _missing(path: str) -> UsageError:
    """`PATH: no such file or directory`."""
    return UsageError(f"{path}: no such file or directory")


def _looks_like_a_registry_name(text: str) -> bool:
    """`busybox`, `team/app:1`: a Docker reference, not a path someone obviously meant."""
    if text.startswith(("/", "./", "../", "~")) or text.endswith("/"):
        return False
    try:
        parse_normalized(text)
    except InvalidReference:
        return False
    return True


def _registry(text: str, rest: str) -> ImageReference:
    """`docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`, normalised as Docker does (see dockerref)."""
    if not rest.startswith("//"):
        raise UsageError(f"{text!r}: expected docker://HOST[:PORT]/NAME[:TAG|@DIGEST]")
    try:
        parsed = parse_normalized(rest[2:])
        digest = None if parsed.digest is None else Digest.parse(parsed.digest)
    except (InvalidReference, ImageError) as error:
        raise UsageError(f"{text!r}: {error}") from None
    tag = "latest" if parsed.name_only else parsed.tag
    return registry_image(RegistryReference(parsed.domain, parsed.path, tag, digest))


def registry_image(registry: RegistryReference, **how: str | None) -> ImageReference:
    """The ImageReference of a registry image (`how`: short_name, resolution)."""
    return ImageReference("docker", str(registry), tag=registry.tag, digest=registry.digest,
                          registry=registry, **how)
