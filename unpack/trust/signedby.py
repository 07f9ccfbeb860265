"""`signedBy`: a simple-signing (OpenPGP) signature by a trusted key, for this image.

One accepted signature is enough. A signature is accepted when `gpgv`
verifies it with the requirement's keys, its payload is a well-formed
`atomic container signature`, its `docker-manifest-digest` is the digest of
this manifest, and its `docker-reference` satisfies `signedIdentity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unpack.errors import PolicyError
from unpack.trust import strictjson
from unpack.trust.evaluation import (
    AcceptedSignature,
    PolicyImage,
    RequirementResult,
    summarise_rejections,
)
from unpack.trust.gpg import GpgUnavailable, Keyring, SignatureRejected
from unpack.trust.identity import IdentityRule, MatchRepoDigestOrExact, parse_identity_rule
from unpack.trust.keys import KeySources
from unpack.trust.openpgp import KeyFileError
from unpack.trust.signatures import (
    SIMPLE_SIGNING_TYPE,
    SimpleSignature,
    describe,
    parse_payload,
)
from unpack.trust.strictjson import StrictJSONError

KEY_TYPES = ("GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs")


@dataclass(frozen=True)
class SignedBy:
    """`{"type": "signedBy", "keyType": "GPGKeys", "keyPath": …, "signedIdentity": …}`."""

    key_type: str
    keys: KeySources
    identity: IdentityRule

    type = "signedBy"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> SignedBy:
        fields = strictjson.obj(value, what, required=("type", "keyType"), optional=(
            "keyPath", "keyPaths", "keyData", "signedIdentity"))
        key_type = strictjson.string(fields["keyType"], f"{what}.keyType")
        if key_type not in KEY_TYPES:
            raise StrictJSONError(f"{what}: unrecognised keyType {key_type!r}")
        keys = KeySources.from_fields(fields, what)
        assert keys is not None
        identity: IdentityRule = MatchRepoDigestOrExact()
        if "signedIdentity" in fields:
            identity = parse_identity_rule(fields["signedIdentity"], f"{what}.signedIdentity")
        return cls(key_type, keys, identity)

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        signatures = [s for s in image.signatures() if isinstance(s, SimpleSignature)]
        if not signatures:
            return self._refuse("no signature")
        if self.key_type != "GPGKeys":
            return self._refuse(f'keyType "{self.key_type}" is not implemented')
        try:
            keyring = Keyring(self.keys.load())
        except KeyFileError as error:
            raise PolicyError(f"signedBy key {error}") from None
        if not keyring.fingerprints:
            return self._refuse("no public key in the keys it names")
        reasons, accepted = [], []
        for signature in signatures:
            try:
                accepted.append(self._check(keyring, signature, image))
            except SignatureRejected as error:
                reasons.append(f"{signature.origin}: {error}")
            except GpgUnavailable as error:
                raise PolicyError(str(error)) from None
        if accepted:
            return RequirementResult(self.type, True, signatures=tuple(accepted))
        return self._refuse(summarise_rejections(reasons))

    def _refuse(self, reason: str) -> RequirementResult:
        return RequirementResult(self.type, False, reason)

    def _check(self, keyring: Keyring, signature: SimpleSignature,
               image: PolicyImage) -> AcceptedSignature:
        verified = keyring.verify(signature.blob)
        try:
            claim = parse_payload(verified.content, SIMPLE_SIGNING_TYPE, "signed payload")
        except StrictJSONError as error:
            raise SignatureRejected(f"invalid signature payload ({error})") from None
        check_claim(claim.manifest_digest, claim.docker_reference, image, self.identity)
        return AcceptedSignature("simple-signing", verified.fingerprint, claim.docker_reference,
                                 claim.manifest_digest, signature.origin)


def check_claim(digest: str, reference: str, image: PolicyImage, identity: IdentityRule) -> None:
    """The signature must be for this manifest, under an identity the rule accepts."""
    if not image.manifest_matches(digest):
        raise SignatureRejected(f"signature is for another manifest ({digest})")
    if not identity.matches(image.subject.docker_reference, reference):
        raise SignatureRejected(
            f"signature is for another repository or tag ({describe(reference)} is not accepted "
            f"for {image.subject.docker_reference or image.subject})"
        )
