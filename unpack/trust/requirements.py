"""Policy requirements: one small type per `type`, each with `from_json` and `evaluate`.

`insecureAcceptAnything` and `reject` are here; `signedBy` and
`sigstoreSigned` have modules of their own. `signedBaseLayer` is accepted in
a policy file, as containers/image accepts it, and rejects every image, as
containers/image does ("not implemented").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from unpack.trust import strictjson
from unpack.trust.evaluation import PolicyImage, Requirement, RequirementResult
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
        from unpack.trust.identity import parse_identity_rule

        fields = strictjson.obj(value, what, required=("type", "baseLayerIdentity"))
        parse_identity_rule(fields["baseLayerIdentity"], f"{what}.baseLayerIdentity")
        return cls()

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        return RequirementResult(self.type, False, "signedBaseLayer is not implemented")


#: Each type's class, or where it is: the signature machinery (OpenPGP, X.509, gpgv) loads
#: only for a policy that asks for signatures.
_TYPES: dict[str, Any] = {
    "insecureAcceptAnything": InsecureAcceptAnything, "reject": Reject,
    "signedBaseLayer": SignedBaseLayer, "signedBy": "unpack.trust.signedby:SignedBy",
    "sigstoreSigned": "unpack.trust.sigstoresigned:SigstoreSigned",
}


def _requirement_type(kind: str) -> Any:
    found = _TYPES[kind]
    if isinstance(found, str):
        module, _, name = found.partition(":")
        found = _TYPES[kind] = getattr(importlib.import_module(module), name)
    return found


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
        parsed.append(_requirement_type(kind).from_json(item, where))
    return tuple(parsed)
