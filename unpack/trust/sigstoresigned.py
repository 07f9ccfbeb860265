"""`sigstoreSigned`: a cosign signature by a trusted public key, for this image.

One accepted signature is enough. A cosign attachment layer is accepted when
its media type is cosign's simple-signing payload, its signature annotation
verifies with one of the requirement's keys (after a Rekor SET check of that
key when `rekorPublicKey…` is set), and its payload claims this manifest
under an identity `signedIdentity` accepts.

Keyless signing (`fulcio`) and certificate trust (`pki`) are parsed, so a
policy that uses them is valid, but oci-unpack does not implement them: such
a requirement rejects every image, with that reason (never an accept).
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
from unpack.trust.gpg import SignatureRejected
from unpack.trust.identity import IdentityRule, MatchRepoDigestOrExact, parse_identity_rule
from unpack.trust.keys import KeySources
from unpack.trust.signatures import (
    SIGSTORE_BUNDLE_ANNOTATION,
    SIGSTORE_MEDIA_TYPE,
    SIGSTORE_SIGNATURE_ANNOTATION,
    SIGSTORE_TYPE,
    SigstoreSignature,
    parse_payload,
)
from unpack.trust.signedby import check_claim
from unpack.trust.strictjson import StrictJSONError

_FIELDS = ("keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "pki",
           "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData",
           "rekorPublicKeyDatas", "signedIdentity")


@dataclass(frozen=True)
class SigstoreSigned:
    """`{"type": "sigstoreSigned", "keyPath": …, "signedIdentity": …}`."""

    keys: KeySources | None
    rekor_keys: KeySources | None
    keyless: str | None  # "fulcio" or "pki" when the policy asks for one (not implemented)
    identity: IdentityRule

    type = "sigstoreSigned"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> SigstoreSigned:
        fields = strictjson.obj(value, what, required=("type",), optional=_FIELDS)
        keyless = [name for name in ("fulcio", "pki") if name in fields]
        for name in keyless:
            if not isinstance(fields[name], dict):
                raise StrictJSONError(f"{what}.{name}: expected a JSON object")
        keys = KeySources.from_fields(fields, what, allow_datas=True, required=not keyless)
        if len(keyless) + (keys is not None) != 1:
            raise StrictJSONError(
                f"{what}: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki "
                "must be given"
            )
        rekor = KeySources.from_fields(fields, what, prefix="rekorPublicKey", allow_datas=True,
                                       required=False)
        if "fulcio" in keyless and rekor is None:
            raise StrictJSONError(f"{what}: fulcio needs one of rekorPublicKeyPath(s)/Data(s)")
        if "pki" in keyless and rekor is not None:
            raise StrictJSONError(f"{what}: rekorPublicKey… cannot be used with pki")
        identity: IdentityRule = MatchRepoDigestOrExact()
        if "signedIdentity" in fields:
            identity = parse_identity_rule(fields["signedIdentity"], f"{what}.signedIdentity")
        return cls(keys, rekor, keyless[0] if keyless else None, identity)

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        from unpack.trust import sigstore  # cryptography is loaded only here

        if self.keyless is not None or self.keys is None:
            return self._refuse(f"{self.keyless} (keyless) verification is not supported by "
                                "oci-unpack; use keyPath, keyPaths, keyData or keyDatas")
        try:
            keys = [sigstore.load_public_key(data, where) for where, data in self.keys.load()]
            rekor_keys = [sigstore.load_public_key(data, where).key
                          for where, data in (self.rekor_keys.load() if self.rekor_keys else [])]
        except sigstore.InvalidPublicKey as error:
            raise PolicyError(f"sigstoreSigned key {error}") from None
        if self.rekor_keys is not None and not all(
            isinstance(k, sigstore.ec.EllipticCurvePublicKey) for k in rekor_keys
        ):
            raise PolicyError("sigstoreSigned: a Rekor public key must be an ECDSA key")
        if not keys:
            return self._refuse("no public key in the keys it names")
        signatures = [s for s in image.signatures() if isinstance(s, SigstoreSignature)]
        reasons, accepted = [], []
        for signature in signatures:
            if signature.media_type != SIGSTORE_MEDIA_TYPE:
                continue  # another kind of attachment (an attestation, an SBOM…)
            try:
                accepted.append(self._check(sigstore, keys, rekor_keys, signature, image))
            except SignatureRejected as error:
                reasons.append(f"{signature.origin}: {error}")
        if accepted:
            return RequirementResult(self.type, True, signatures=tuple(accepted))
        return self._refuse(summarise_rejections(reasons))

    def _refuse(self, reason: str) -> RequirementResult:
        return RequirementResult(self.type, False, reason)

    def _check(self, sigstore: Any, keys: list[Any], rekor_keys: list[Any],
               signature: SigstoreSignature, image: PolicyImage) -> AcceptedSignature:
        encoded = signature.annotations.get(SIGSTORE_SIGNATURE_ANNOTATION)
        if encoded is None:
            raise SignatureRejected(f"no {SIGSTORE_SIGNATURE_ANNOTATION} annotation")
        candidates = keys
        if self.rekor_keys is not None:
            bundle = signature.annotations.get(SIGSTORE_BUNDLE_ANNOTATION)
            if bundle is None:
                raise SignatureRejected(f"no {SIGSTORE_BUNDLE_ANNOTATION} annotation")
            candidates = [_rekor_key(sigstore, keys, rekor_keys, bundle, encoded, signature)]
        raw = sigstore.decode_signature(encoded)
        key = next((k for k in candidates
                    if sigstore.verify_signature(k.key, signature.payload, raw)), None)
        if key is None:
            raise SignatureRejected("signed by an untrusted key (no trusted key verifies it)")
        try:
            claim = parse_payload(signature.payload, SIGSTORE_TYPE, "cosign payload")
        except StrictJSONError as error:
            raise SignatureRejected(f"invalid signature payload ({error})") from None
        check_claim(claim.manifest_digest, claim.docker_reference, image, self.identity)
        return AcceptedSignature("sigstore", key.key_id, claim.docker_reference,
                                 claim.manifest_digest, signature.origin)


def _rekor_key(sigstore: Any, keys: list[Any], rekor_keys: list[Any], bundle: str,
               encoded: str, signature: SigstoreSignature) -> Any:
    """The trusted key the Rekor SET records for this signature."""
    raw = sigstore.decode_signature(encoded)
    failures = []
    for key in keys:
        try:
            sigstore.verify_rekor_set(rekor_keys, bundle, key.pem(), raw, signature.payload)
            return key
        except SignatureRejected as error:
            failures.append(str(error))
    raise SignatureRejected("no trusted key verifies against the Rekor SET: " + "; ".join(
        dict.fromkeys(failures)))
