"""Apply the signature policy to a resolved image, before any layer is read.

`check_image` finds the policy file, picks the scope for the image, runs
every requirement of that scope (all must allow it) and returns a report;
on a rejection it raises `PolicyRejected` naming the scope and the reason.
Signatures are fetched only if a requirement asks for them, and what is
fetched is the manifest's signatures only: no config, no layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from unpack.errors import PolicyRejected
from unpack.image.store import Source
from unpack.source import ImageReference
from unpack.source.dockerref import DockerReference
from unpack.trust.evaluation import PolicyImage, RequirementResult
from unpack.trust.policy import Policy, load_policy, policy_path
from unpack.trust.signatures import Signature
from unpack.trust.subject import (
    PolicySubject,
    docker_archive_subject,
    docker_subject,
    path_subject,
)


@dataclass(frozen=True)
class TrustOptions:
    """Which policy to apply (`--policy`, `--insecure-policy`, `--registries.d`)."""

    policy: str | None = None
    insecure_policy: bool = False
    registries_d: str | None = None


@dataclass
class SignatureReport:
    """What the policy decided, for `--json` and `inspect`."""

    policy: str | None  # the policy file applied; None when none was
    scope: str | None = None
    accepted: bool | None = None  # None: not checked
    requirements: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)  # the accepted ones
    found: list[dict[str, str]] | None = None  # every signature found (inspect)
    note: str | None = None


def policy_subject(reference: ImageReference, source: Source) -> PolicySubject:
    """The image as the policy sees it, from the IMAGE argument and the opened source."""
    if reference.registry is not None:
        registry = reference.registry
        digest = str(registry.digest) if registry.digest else None
        return docker_subject(
            DockerReference(registry.registry, registry.repository, registry.tag, digest)
        )
    transport = reference.transport
    if transport == "archive":
        from unpack.source.archive import DockerArchive

        transport = "docker-archive" if isinstance(source, DockerArchive) else "oci-archive"
    if transport == "docker-archive":
        return docker_archive_subject(reference.tag)
    return path_subject(transport, reference.location)


def signature_fetcher(reference: ImageReference, source: Source, subject: PolicySubject,
                      manifest_digest: str,
                      options: TrustOptions) -> Callable[[], Sequence[Signature]]:
    """What fetches this image's signatures when a requirement needs them."""
    if reference.registry is None:
        return list

    def fetch() -> Sequence[Signature]:
        from unpack.source.registry import RegistrySource
        from unpack.trust.fetch import registry_signatures
        from unpack.trust.registriesd import load_registries_d, registries_d_directory

        assert isinstance(source, RegistrySource)
        config = load_registries_d(registries_d_directory(options.registries_d))
        return registry_signatures(source, subject, manifest_digest, config)

    return fetch


def load_applicable_policy(options: TrustOptions) -> Policy | None:
    """The policy to apply; None for `--insecure-policy` or when no file exists."""
    if options.insecure_policy:
        return None
    path = policy_path(options.policy)
    return None if path is None else load_policy(path)


def evaluate(policy: Policy, image: PolicyImage) -> SignatureReport:
    """Run the requirements of the image's scope, in order, stopping at the first refusal."""
    scope, requirements = policy.requirements_for(image.subject)
    report = SignatureReport(policy.path, str(scope), accepted=True)
    for requirement in requirements:
        result = requirement.evaluate(image)
        report.requirements.append(_result_dict(result))
        report.signatures += [asdict(s) for s in result.signatures]
        if not result.allowed:
            report.accepted = False
            break
    return report


def check_image(policy: Policy, image: PolicyImage) -> SignatureReport:
    """`evaluate`, raising PolicyRejected when the image is not allowed."""
    report = evaluate(policy, image)
    if not report.accepted:
        refused = report.requirements[-1]
        raise PolicyRejected(
            f"{image.subject}: rejected by the signature policy {policy.path}, scope "
            f"{report.scope}: {refused['type']}: {refused['reason']}"
        )
    return report


def describe_found(signatures: Sequence[Signature]) -> list[dict[str, str]]:
    """Every signature found, as `inspect` lists them (not a verdict)."""
    return [{"kind": s.kind, "origin": s.origin} for s in signatures]


def _result_dict(result: RequirementResult) -> dict[str, Any]:
    return {"type": result.requirement, "allowed": result.allowed, "reason": result.reason}
