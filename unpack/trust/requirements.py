"""Policy requirements: one small type per `type`, each with `from_json` and `evaluate`.

`insecureAcceptAnything` and `reject` are here; `signedBy` and
`sigstoreSigned` have modules of their own. `signedBaseLayer` is accepted in
a policy file, as containers/image accepts it, and rejects every image, as
containers/image does ("not implemented").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unpack.trust import strictjson
from unpack.trust.evaluation import PolicyImage, Requirement, RequirementResult
from unpack.trust.identity import parse_identity_rule
from unpack.trust.signedby import SignedBy
from unpack.trust.sigstoresigned import SigstoreSigned
from unpack.trust.strictjson import StrictJSONError


@dataclass(frozen=True)
class InsecureAcceptAnything:
    """Every image is allowed, signed or not."""

    type = "insecureAcceptAnything"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> InsecureAcceptAnything:
        strictjson.obj(value, what, required=("type",))
        return cls()

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        return RequirementResult(self.type, True)


@dataclass(frozen=True)
class Reject:
    """Every image is rejected."""

    type = "reject"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> Reject:
        strictjson.obj(value, what, required=("type",))
        return cls()

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        return RequirementResult(self.type, False, "the policy rejects every image here")


@dataclass(frozen=True)
class SignedBaseLayer:
    """Valid in a policy, implemented nowhere: it rejects, as containers/image's does."""

    type = "signedBaseLayer"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> SignedBaseLayer:
        fields = strictjson.obj(value, what, required=("type", "baseLayerIdentity"))
        parse_identity_rule(fields["baseLayerIdentity"], f"{what}.baseLayerIdentity")
        return cls()

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        return RequirementResult(self.type, False, "signedBaseLayer is not implemented")


_TYPES: dict[str, Any] = {
    kind.type: kind
    for kind in (InsecureAcceptAnything, Reject, SignedBy, SignedBaseLayer, SigstoreSigned)
}


def parse_requirements(value: Any, what: str) -> tuple[Requirement, ...]:
    """A non-empty list of requirements."""
    if not isinstance(value, list):
        raise StrictJSONError(f"{what}: expected a list of requirements")
    if not value:
        raise StrictJSONError(f"{what}: the list of requirements must not be empty")
    parsed = []
    for number, item in enumerate(value):
        where = f"{what}[{number}]"
        if not isinstance(item, dict):
            raise StrictJSONError(f"{where}: expected a JSON object")
        kind = strictjson.string(item.get("type", ""), f"{where}.type")
        if kind not in _TYPES:
            raise StrictJSONError(f"{where}: unknown policy requirement type {kind!r}")
        parsed.append(_TYPES[kind].from_json(item, where))
    return tuple(parsed)
