"""The vocabulary of a policy decision: the image judged, and what each requirement says.

A requirement (`unpack.trust.requirements`) is a small type with one
`evaluate(image) -> RequirementResult`, the counterpart of containers/image's
`isRunningImageAllowed`. Signatures are fetched only when a requirement asks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from unpack.trust.signatures import Signature
from unpack.trust.subject import PolicySubject


@dataclass
class PolicyImage:
    """The image being judged: who it claims to be, its manifest, its signatures."""

    subject: PolicySubject
    manifest: bytes  # the verified bytes of the (platform) manifest
    manifest_digest: str
    fetch_signatures: Callable[[], Sequence[Signature]]
    _signatures: Sequence[Signature] | None = field(default=None, repr=False)

    def signatures(self) -> Sequence[Signature]:
        """Every signature stored for this manifest (fetched once, on first use)."""
        if self._signatures is None:
            self._signatures = self.fetch_signatures()
        return self._signatures

    def manifest_matches(self, digest: str) -> bool:
        """Whether `ALGORITHM:HEX` is a digest of this manifest (any algorithm the claim uses)."""
        algorithm, _, hexpart = digest.partition(":")
        if algorithm not in ("sha256", "sha384", "sha512"):
            return False
        return hashlib.new(algorithm, self.manifest).hexdigest() == hexpart


@dataclass(frozen=True)
class AcceptedSignature:
    """A signature a requirement accepted: its kind, the key, and what it claims."""

    kind: str  # simple-signing or sigstore
    key: str  # an OpenPGP fingerprint, or sha256:… of a public key
    identity: str  # the docker-reference the signature claims
    manifest_digest: str
    origin: str  # where the signature was found


@dataclass(frozen=True)
class RequirementResult:
    """One requirement's verdict on the image."""

    requirement: str  # its type, as the policy names it
    allowed: bool
    reason: str = ""  # why not, when not allowed
    signatures: tuple[AcceptedSignature, ...] = ()


class Requirement(Protocol):
    """A policy requirement: every one of the matching scope must allow the image."""

    type: str

    def evaluate(self, image: PolicyImage) -> RequirementResult: ...


def summarise_rejections(reasons: Sequence[str]) -> str:
    """One reason, or all of them when several signatures were refused."""
    if not reasons:
        return "no signature"
    if len(reasons) == 1:
        return reasons[0]
    return f"none of the {len(reasons)} signatures is accepted: " + "; ".join(reasons)
