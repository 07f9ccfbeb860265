"""`signedIdentity`: which identity a signature may claim for the image (containers-policy.json(5)).

Each rule is a small type with one `matches(image, signed)`: `image` is the
Docker reference the image was asked for by (None for the local transports,
which have no Docker identity: then nothing matches), `signed` the
`docker-reference` the signature claims. Unparseable references never match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from unpack.source.dockerref import (
    DOMAIN_PATTERN,
    NAME_PATTERN,
    DockerReference,
    InvalidReference,
    parse_named,
    parse_normalized,
)
from unpack.trust import strictjson
from unpack.trust.strictjson import StrictJSONError


class IdentityRule(Protocol):
    """One `signedIdentity` rule."""

    def matches(self, image: DockerReference | None, signed: str) -> bool: ...


def _parse(text: str) -> DockerReference | None:
    try:
        return parse_normalized(text)
    except InvalidReference:
        return None


def _repo_digest_or_exact(intended: DockerReference, signed: DockerReference) -> bool:
    """A tagged image: the exact reference; a digest-only image: the same repository."""
    if signed.name_only:
        return False
    if intended.tag is not None:
        return str(signed) == str(intended)
    if intended.digest is not None:
        return signed.name == intended.name
    return False


@dataclass(frozen=True)
class MatchRepoDigestOrExact:
    """The default: exact for a tag, the repository for a digest reference."""

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        claimed = _parse(signed)
        return image is not None and claimed is not None and _repo_digest_or_exact(image, claimed)


@dataclass(frozen=True)
class MatchExact:
    """The signature names exactly the reference the image was asked for."""

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        claimed = _parse(signed)
        if image is None or claimed is None or image.name_only or claimed.name_only:
            return False
        return str(claimed) == str(image)


@dataclass(frozen=True)
class MatchRepository:
    """The same repository, any tag or digest."""

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        claimed = _parse(signed)
        return image is not None and claimed is not None and claimed.name == image.name


@dataclass(frozen=True)
class ExactReference:
    """The signature names exactly `dockerReference`, whatever the image was asked for by."""

    reference: str

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        wanted, claimed = _parse(self.reference), _parse(signed)
        if wanted is None or claimed is None or wanted.name_only or claimed.name_only:
            return False
        return str(claimed) == str(wanted)


@dataclass(frozen=True)
class ExactRepository:
    """The signature names the repository `dockerRepository`, any tag or digest."""

    repository: str

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        wanted, claimed = _parse(self.repository), _parse(signed)
        return wanted is not None and claimed is not None and claimed.name == wanted.name


@dataclass(frozen=True)
class RemapIdentity:
    """matchRepoDigestOrExact after replacing `prefix` by `signedPrefix` in the image's name."""

    prefix: str
    signed_prefix: str

    def remap(self, image: DockerReference) -> DockerReference | None:
        name = image.name
        if name != self.prefix and not name.startswith(self.prefix + "/"):
            return image
        try:
            return parse_named(str(image).replace(self.prefix, self.signed_prefix, 1))
        except InvalidReference:
            return None

    def matches(self, image: DockerReference | None, signed: str) -> bool:
        claimed = _parse(signed)
        if image is None or claimed is None:
            return False
        remapped = self.remap(image)
        return remapped is not None and _repo_digest_or_exact(remapped, claimed)


def parse_identity_rule(value: Any, what: str) -> IdentityRule:
    """A `signedIdentity` object of the policy."""
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what}: expected a JSON object")
    kind = strictjson.string(value.get("type", ""), f"{what}.type")
    simple = {"matchRepoDigestOrExact": MatchRepoDigestOrExact, "matchExact": MatchExact,
              "matchRepository": MatchRepository}
    if kind in simple:
        strictjson.obj(value, what, required=("type",))
        return simple[kind]()
    if kind == "exactReference":
        text = strictjson.string(
            strictjson.obj(value, what, required=("type", "dockerReference"))["dockerReference"],
            f"{what}.dockerReference")
        reference = _checked(text, f"{what}.dockerReference")
        if reference.name_only:
            raise StrictJSONError(f"{what}.dockerReference {text!r} has neither a tag nor a digest")
        return ExactReference(text)
    if kind == "exactRepository":
        text = strictjson.string(
            strictjson.obj(value, what, required=("type", "dockerRepository"))["dockerRepository"],
            f"{what}.dockerRepository")
        _checked(text, f"{what}.dockerRepository")
        return ExactRepository(text)
    if kind == "remapIdentity":
        fields = strictjson.obj(value, what, required=("type", "prefix", "signedPrefix"))
        prefix = _prefix(fields["prefix"], f"{what}.prefix")
        return RemapIdentity(prefix, _prefix(fields["signedPrefix"], f"{what}.signedPrefix"))
    raise StrictJSONError(f"{what}: unknown signedIdentity type {kind!r}")


def _checked(text: str, what: str) -> DockerReference:
    try:
        return parse_normalized(text)
    except InvalidReference as error:
        raise StrictJSONError(f"{what} {text!r}: {error}") from None


def _prefix(value: Any, what: str) -> str:
    """A remapIdentity prefix: a host[:port], or a name that starts with one (as c/image checks)."""
    text = strictjson.string(value, what)
    host, slash, _ = text.partition("/")
    if DOMAIN_PATTERN.fullmatch(text) or (
        slash and NAME_PATTERN.fullmatch(text) and DOMAIN_PATTERN.fullmatch(host)
    ):
        return text
    raise StrictJSONError(f"{what}: prefix {text!r} is not valid")
