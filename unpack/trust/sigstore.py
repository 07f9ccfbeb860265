"""The cryptography of cosign signatures (`sigstoreSigned`), with `cryptography`.

- Public keys are PEM (`PUBLIC KEY`): ECDSA (P-256, P-384, P-521), RSA or
  Ed25519. The payload is signed as cosign signs it: ECDSA with SHA-256
  (ASN.1 DER signature), RSA PKCS#1 v1.5 with SHA-256, or pure Ed25519.
- A Rekor SET (`dev.sigstore.cosign/bundle`) is Rekor's ECDSA signature over
  the RFC 8785 canonical JSON of its log entry; the entry (a `hashedrekord`
  0.0.1) must name the same key, signature and payload hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from unpack.trust import strictjson
from unpack.trust.gpg import SignatureRejected
from unpack.trust.strictjson import StrictJSONError

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class InvalidPublicKey(ValueError):
    """A configured key is not a usable public key."""


@dataclass(frozen=True)
class TrustedKey:
    """A public key from the policy and where it came from."""

    key: PublicKey
    where: str

    @property
    def key_id(self) -> str:
        """`sha256:` of the key's DER SubjectPublicKeyInfo (what `cosign public-key` prints)."""
        der = self.key.public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        return "sha256:" + hashlib.sha256(der).hexdigest()

    def pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(data: bytes, where: str) -> TrustedKey:
    """A PEM public key of a kind cosign signs with."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise InvalidPublicKey(f"{where}: not a PEM public key ({error})") from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey,
                            ed25519.Ed25519PublicKey)):
        raise InvalidPublicKey(f"{where}: unsupported public key type {type(key).__name__}")
    return TrustedKey(key, where)


def verify_signature(key: PublicKey, payload: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s signature of `payload`, as cosign makes them."""
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        else:
            key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def decode_signature(text: str) -> bytes:
    """The base64 of the `dev.cosignproject.cosign/signature` annotation (line breaks ignored)."""
    try:
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected("the signature annotation is not valid base64") from None


def verify_rekor_set(rekor_keys: list[ec.EllipticCurvePublicKey], bundle: str,
                     key_or_certificate: bytes, signature: bytes, payload: bytes) -> int:
    """Check a Rekor SET for this signature; return the entry's integratedTime."""
    try:
        value = strictjson.load(bundle, "Rekor bundle")
        top = strictjson.obj(value, "Rekor bundle", required=("SignedEntryTimestamp", "Payload"))
        timestamp = strictjson.base64_bytes(top["SignedEntryTimestamp"], "SignedEntryTimestamp")
        entry = strictjson.obj(top["Payload"], "Rekor bundle Payload",
                               required=("body", "integratedTime", "logIndex", "logID"))
        canonical = _canonical_json(entry)
    except StrictJSONError as error:
        raise SignatureRejected(str(error)) from None
    if not any(_ecdsa_ok(key, canonical, timestamp) for key in rekor_keys):
        raise SignatureRejected("the Rekor SET is not signed by a trusted Rekor key")
    try:
        body = strictjson.load(strictjson.base64_bytes(entry["body"], "Rekor body"), "Rekor body")
        integrated = strictjson.integer(entry["integratedTime"], "integratedTime")
        _check_hashedrekord(body, key_or_certificate, signature, payload)
    except StrictJSONError as error:
        raise SignatureRejected(str(error)) from None
    return integrated


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of a Rekor entry (strings and integers only)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _check_hashedrekord(body: Any, key_or_certificate: bytes, signature: bytes,
                        payload: bytes) -> None:
    if not isinstance(body, dict) or body.get("apiVersion") != "0.0.1" or \
            body.get("kind") not in (None, "hashedrekord"):
        raise SignatureRejected("the Rekor entry is not a hashedrekord 0.0.1")
    spec = body.get("spec") if isinstance(body.get("spec"), dict) else {}
    signed = spec.get("signature") if isinstance(spec.get("signature"), dict) else {}
    public_key = signed.get("publicKey") if isinstance(signed.get("publicKey"), dict) else {}
    try:
        recorded_key = base64.b64decode(public_key.get("content", ""), validate=True)
        recorded_signature = base64.b64decode(signed.get("content", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise SignatureRejected("the Rekor entry holds invalid base64") from None
    if _pem_body(recorded_key) is None or _pem_body(recorded_key) != _pem_body(key_or_certificate):
        raise SignatureRejected("the Rekor entry is for another key or certificate")
    if recorded_signature != signature:
        raise SignatureRejected("the Rekor entry is for another signature")
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    digest = data.get("hash") if isinstance(data.get("hash"), dict) else {}
    if digest.get("algorithm") != "sha256":
        raise SignatureRejected("the Rekor entry's payload hash is not sha256")
    if digest.get("value") != hashlib.sha256(payload).hexdigest():
        raise SignatureRejected("the Rekor entry is for another payload")


def _pem_body(data: bytes) -> bytes | None:
    """The DER inside the one PEM block of `data` (None if it is not exactly one block)."""
    lines = data.strip().splitlines()
    if len(lines) < 2 or not lines[0].startswith(b"-----BEGIN ") or \
            not lines[-1].startswith(b"-----END "):
        return None
    if any(line.startswith(b"-----") for line in lines[1:-1]):
        return None
    try:
        return base64.b64decode(b"".join(line.strip() for line in lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        return None
