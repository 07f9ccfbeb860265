"""What the policy is asked about: an image's transport, its scope identity, its Docker name.

The policy looks an image up by transport, then by the most specific scope
(containers/image's `PolicyConfigurationIdentity` and `…Namespaces`):

- `docker`: `host[:port]/ns/repo:tag` (or `@digest`), then `host[:port]/ns/repo`,
  each parent namespace, the host (with its port, if any), then `*.domain`
  wildcards from the most to the least specific (ports dropped);
- `oci`, `oci-archive`: the layout directory or archive file as an absolute
  path with symlinks resolved, then each parent directory (not `/`);
- `docker-archive`: no scope but the transport-wide `""`.

After those comes the transport's `""` scope, then the policy's `default`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from unpack.source.dockerref import DockerReference, InvalidReference, parse_normalized

#: The transports the policy names, and what our sources are to it.
TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive")


@dataclass(frozen=True)
class PolicySubject:
    """An image as the policy sees it."""

    transport: str
    identity: str  # the most specific scope ("" where the transport has none)
    namespaces: tuple[str, ...] = ()  # less specific scopes, in order
    docker_reference: DockerReference | None = None  # what signedIdentity compares with

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.identity}"
        shown = self.identity or (str(self.docker_reference) if self.docker_reference else "")
        return f"{self.transport}:{shown}"


def docker_subject(reference: DockerReference) -> PolicySubject:
    """A registry image, named as the user asked for it (`latest` added if no tag or digest)."""
    reference = reference.with_default_tag()
    if reference.digest is not None:
        identity = f"{reference.name}@{reference.digest}"
    else:
        identity = f"{reference.name}:{reference.tag}"
    return PolicySubject("docker", identity, docker_namespaces(reference), reference)


def docker_namespaces(reference: DockerReference) -> tuple[str, ...]:
    """The repository, its parents up to the host, then `*.domain` wildcards."""
    found = []
    name = reference.name
    while True:
        found.append(name)
        slash = name.rfind("/")
        if slash < 0:
            break
        name = name[:slash]
    host = name.split(":", 1)[0]
    while "." in host:
        host = host[host.index(".") + 1 :]
        found.append(f"*.{host}")
    return tuple(found)


def path_subject(transport: str, path: str) -> PolicySubject:
    """An OCI layout directory or archive: its resolved path, then its parent directories."""
    resolved = os.path.realpath(path)
    namespaces = []
    parent = os.path.dirname(resolved)
    while parent not in ("/", ""):
        namespaces.append(parent)
        parent = os.path.dirname(parent)
    return PolicySubject(transport, resolved, tuple(namespaces))


def docker_archive_subject(name_and_tag: str | None) -> PolicySubject:
    """A docker-archive: no scope of its own; its `NAME:TAG`, if given, is its Docker name."""
    reference = None
    if name_and_tag and not name_and_tag.startswith("@"):
        try:
            reference = parse_normalized(name_and_tag).with_default_tag()
        except InvalidReference:
            reference = None
    return PolicySubject("docker-archive", "", (), reference)
