"""Docker image references (`[HOST[:PORT]/]NAME[:TAG][@DIGEST]`), parsed and normalised once.

The grammar and the normalisation are Docker's (distribution/reference, as
containers/image uses it): a first component is a registry host when it has
a `.` or a `:`, is `localhost`, or holds an upper-case letter; otherwise the
host is `docker.io`, and a one-component name there lives under `library/`.
`index.docker.io` is spelled `docker.io`. Repository paths are lower case.

The registry source, the docker-archive tags, the signature policy's scopes
and its `signedIdentity` rules all read references through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where Docker Hub's registry API answers
#: Docker Hub's names in auth files (`auths` keys, `credHelpers` keys), and the legacy
#: URL Docker keeps its credentials under (what a credential helper is asked for).
DOCKER_HUB_HOSTS = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API)
DOCKER_HUB_LEGACY_URL = "https://index.docker.io/v1/"
MAX_NAME_LENGTH = 255

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(
    rf"(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?",
    re.ASCII,
)
DOMAIN_PATTERN = re.compile(_DOMAIN, re.ASCII)
#: A name as written, host optional (Docker's NameRegexp): `[HOST/]PATH`.
NAME_PATTERN = re.compile(
    rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII
)
_ANCHORED_HEX = re.compile(r"[a-f0-9]{64}")


class InvalidReference(ValueError):
    """The text is not a valid Docker reference; the message says why (not which text)."""


@dataclass(frozen=True)
class DockerReference:
    """A normalised reference: `domain/path` plus an optional tag and digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`domain/path`, without tag or digest (the repository)."""
        return f"{self.domain}/{self.path}"

    @property
    def name_only(self) -> bool:
        """Neither a tag nor a digest."""
        return self.tag is None and self.digest is None

    def with_default_tag(self) -> DockerReference:
        """`latest` added when there is neither a tag nor a digest (Docker's TagNameOnly)."""
        if self.name_only:
            return DockerReference(self.domain, self.path, "latest")
        return self

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_normalized(text: str) -> DockerReference:
    """Parse a reference as a user writes it (`busybox`, `quay.io/a/b:1`), normalising it."""
    if _ANCHORED_HEX.fullmatch(text):
        raise InvalidReference("a 64-character hexadecimal string is not a name")
    domain, remainder = _split_domain(text)
    name_part = re.split(r"[:@]", remainder, maxsplit=1)[0]
    if name_part.lower() != name_part:
        raise InvalidReference("invalid reference: repository name must be lowercase")
    return _parse(f"{domain}/{remainder}")


def parse_named(text: str) -> DockerReference:
    """Parse a reference that must already be in its normalised form (Docker's ParseNamed)."""
    reference = parse_normalized(text)
    if str(reference) != text:
        raise InvalidReference(f"not a normalised reference (that is {reference})")
    return reference


def is_qualified(text: str) -> bool:
    """Whether a reference names its registry host: its first component (before a '/')
    has a '.' or a ':', is `localhost`, or holds an upper-case letter. Otherwise it is a
    short name (`busybox`, `library/busybox:1.36`)."""
    first, slash, _ = text.partition("/")
    return bool(slash) and (any(c in first for c in ".:") or first == "localhost"
                            or first.lower() != first)


def _split_domain(text: str) -> tuple[str, str]:
    if is_qualified(text):
        domain, _, remainder = text.partition("/")
    else:
        domain, remainder = DOCKER_HUB, text
    if domain == "index.docker.io":
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in remainder:
        remainder = f"library/{remainder}"
    return domain, remainder


def _parse(full: str) -> DockerReference:
    match = _REFERENCE.fullmatch(full)
    if match is None or match["domain"] is None:
        raise InvalidReference("invalid reference format")
    if len(match["name"]) > MAX_NAME_LENGTH:
        raise InvalidReference(f"repository name is longer than {MAX_NAME_LENGTH} characters")
    domain = match["domain"]
    path = match["name"][len(domain) + 1 :]
    return DockerReference(domain, path, match["tag"], match["digest"])
