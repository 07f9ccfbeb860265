"""`sigstoreSigned`: a cosign signature by a trusted key or certificate, for this image.

One accepted signature is enough. Layers of a cosign attachment whose media
type is not cosign's simple-signing payload (attestations, SBOMs…) are not
signatures and are skipped. For a signature, in containers/image's order:

- the signer's key: one of the configured keys (`keyPath(s)`, `keyData(s)`);
  with `rekorPublicKey…` too, the key the Rekor SET records; or, for
  `fulcio`/`pki`, the key of a trusted certificate (`unpack.trust.certificates`;
  fulcio also needs the Rekor SET, whose time the certificate is checked at);
- the `dev.cosignproject.cosign/signature` annotation verifies the payload
  with that key;
- the payload is a well-formed `cosign container image signature` for this
  manifest, under an identity `signedIdentity` accepts.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unpack.errors import PolicyError
from unpack.trust import strictjson
from unpack.trust.certificates import CertificateTrust
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
    SIGSTORE_CERTIFICATE_ANNOTATION,
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
    """`{"type": "sigstoreSigned", "keyPath": …, "signedIdentity": …}` (or fulcio, or pki)."""

    keys: KeySources | None
    certificates: CertificateTrust | None
    rekor_keys: KeySources | None
    identity: IdentityRule

    type = "sigstoreSigned"

    @classmethod
    def from_json(cls, value: dict[str, Any], what: str) -> SigstoreSigned:
        fields = strictjson.obj(value, what, required=("type",), optional=_FIELDS)
        keyless = [name for name in ("fulcio", "pki") if name in fields]
        keys = KeySources.from_fields(fields, what, allow_datas=True, required=not keyless)
        if len(keyless) + (keys is not None) != 1:
            raise StrictJSONError(
                f"{what}: exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki "
                "must be given"
            )
        certificates = None
        if keyless:
            certificates = CertificateTrust.from_json(keyless[0], fields[keyless[0]],
                                                      f"{what}.{keyless[0]}")
        rekor = KeySources.from_fields(fields, what, prefix="rekorPublicKey", allow_datas=True,
                                       required=False)
        if "fulcio" in keyless and rekor is None:
            raise StrictJSONError(f"{what}: fulcio needs one of rekorPublicKeyPath(s)/Data(s)")
        if "pki" in keyless and rekor is not None:
            raise StrictJSONError(f"{what}: rekorPublicKey… cannot be used with pki")
        identity: IdentityRule = MatchRepoDigestOrExact()
        if "signedIdentity" in fields:
            identity = parse_identity_rule(fields["signedIdentity"], f"{what}.signedIdentity")
        return cls(keys, certificates, rekor, identity)

    def evaluate(self, image: PolicyImage) -> RequirementResult:
        signatures = [s for s in image.signatures() if isinstance(s, SigstoreSignature)
                      and s.media_type == SIGSTORE_MEDIA_TYPE]
        if not signatures:
            return self._refuse("no signature")
        from unpack.trust import sigstore  # cryptography is loaded only here

        try:
            keys = [sigstore.load_public_key(d, w) for w, d in (
                self.keys.load() if self.keys else [])]
            rekor = [sigstore.load_public_key(d, w) for w, d in (
                self.rekor_keys.load() if self.rekor_keys else [])]
        except sigstore.InvalidPublicKey as error:
            raise PolicyError(f"sigstoreSigned key {error}") from None
        if not all(isinstance(k.key, sigstore.ec.EllipticCurvePublicKey) for k in rekor):
            raise PolicyError("sigstoreSigned: a Rekor public key must be an ECDSA key")
        if self.keys is not None and not keys:
            return self._refuse("no public key in the keys it names")
        checker = _Checker(sigstore, keys, [k.key for k in rekor], self)
        reasons, accepted = [], []
        for signature in signatures:
            try:
                accepted.append(checker.check(signature, image))
            except SignatureRejected as error:
                reasons.append(f"{signature.origin}: {error}")
        if accepted:
            return RequirementResult(self.type, True, signatures=tuple(accepted))
        return self._refuse(summarise_rejections(reasons))

    def _refuse(self, reason: str) -> RequirementResult:
        return RequirementResult(self.type, False, reason)


@dataclass
class _Checker:
    """The checks of one signature, with the requirement's loaded keys."""

    sigstore: Any  # the unpack.trust.sigstore module, imported on first use
    keys: list[Any]
    rekor_keys: list[Any]
    requirement: SigstoreSigned

    def check(self, signature: SigstoreSignature, image: PolicyImage) -> AcceptedSignature:
        annotations = signature.annotations
        encoded = self._annotation(annotations, SIGSTORE_SIGNATURE_ANNOTATION)
        raw = self.sigstore.decode_signature(encoded)
        candidates, key_name = self._signer(annotations, raw, signature.payload)
        key = next((k for k in candidates
                    if self.sigstore.verify_signature(k, signature.payload, raw)), None)
        if key is None:
            raise SignatureRejected("signed by an untrusted key (no trusted key verifies it)")
        try:
            claim = parse_payload(signature.payload, SIGSTORE_TYPE, "cosign payload")
        except StrictJSONError as error:
            raise SignatureRejected(f"invalid signature payload ({error})") from None
        check_claim(claim.manifest_digest, claim.docker_reference, image,
                    self.requirement.identity)
        if key_name is None:
            key_name = next(k.key_id for k in self.keys if k.key is key)
        return AcceptedSignature("sigstore", key_name, claim.docker_reference,
                                 claim.manifest_digest, signature.origin)

    def _signer(self, annotations: dict[str, str], raw: bytes,
                payload: bytes) -> tuple[Sequence[Any], str | None]:
        """The candidate public keys, and a name for a certificate signer."""
        trust = self.requirement.certificates
        if trust is None:
            if not self.rekor_keys:
                return [k.key for k in self.keys], None
            bundle = self._annotation(annotations, SIGSTORE_BUNDLE_ANNOTATION)
            return [self._rekor_recorded_key(bundle, raw, payload)], None
        certificate = self._annotation(annotations, SIGSTORE_CERTIFICATE_ANNOTATION)
        at = None
        if trust.kind == "fulcio":
            bundle = self._annotation(annotations, SIGSTORE_BUNDLE_ANNOTATION)
            recorded = self.sigstore.verify_rekor_set(self.rekor_keys, bundle,
                                                      certificate.encode(), raw, payload)
            at = datetime.datetime.fromtimestamp(recorded, datetime.timezone.utc)
        key = trust.public_key(annotations, certificate, at)
        subject = trust.subject_email or trust.subject_hostname
        return [key], f"{trust.kind} certificate for {subject}"

    def _rekor_recorded_key(self, bundle: str, raw: bytes, payload: bytes) -> Any:
        """The configured key the Rekor SET records for this signature."""
        failures = []
        for key in self.keys:
            try:
                self.sigstore.verify_rekor_set(self.rekor_keys, bundle, key.pem(), raw, payload)
                return key.key
            except SignatureRejected as error:
                failures.append(str(error))
        raise SignatureRejected("no trusted key verifies against the Rekor SET: " +
                                "; ".join(dict.fromkeys(failures)))

    @staticmethod
    def _annotation(annotations: dict[str, str], name: str) -> str:
        value = annotations.get(name)
        if value is None:
            raise SignatureRejected(f"no {name} annotation")
        return value
