"""`docker://` references, parsed without loading the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass

from unpack.source.dockerref import DOCKER_HUB, DOCKER_HUB_API
from unpack.verify import Digest


@dataclass(frozen=True)
class RegistryReference:
    """`docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`, normalised as Docker does."""

    registry: str  # as written (docker.io for the Hub)
    repository: str
    tag: str | None
    digest: Digest | None

    @property
    def api_host(self) -> str:
        """The host:port spoken to (the Hub's API lives on registry-1.docker.io)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def ref(self) -> str:
        """What the manifest request names: the digest if given, else the tag."""
        return str(self.digest) if self.digest else self.tag or "latest"

    def __str__(self) -> str:
        text = f"docker://{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text
