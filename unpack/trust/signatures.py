"""Image signatures as they are stored, and the claim a verified one makes.

Two kinds exist (containers/image's `internal/signature`):

- *simple signing*: an OpenPGP message whose content is a JSON payload of
  type `atomic container signature`;
- *sigstore* (cosign): a JSON payload of type `cosign container image
  signature`, with its base64 signature (and optionally a certificate and a
  Rekor bundle) in annotations, stored as a layer of a `sha256-HEX.sig`
  attachment manifest.

A lookaside file holds either a bare OpenPGP message (the historic form) or
`\\x00FORMAT\\n` followed by the data (`simple-signing` or `sigstore-json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unpack.trust import strictjson
from unpack.trust.strictjson import StrictJSONError

#: The largest signature (or attachment payload) read, as containers/image's iolimits.
MAX_SIGNATURE_SIZE = 4 << 20
#: The most lookaside signatures read for one image before assuming a broken server.
MAX_SIGNATURES = 128

SIMPLE_SIGNING_TYPE = "atomic container signature"
SIGSTORE_TYPE = "cosign container image signature"
SIGSTORE_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGSTORE_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGSTORE_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
SIGSTORE_CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
SIGSTORE_CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"

# First bytes of a bare OpenPGP message: compressed data, one-pass signature or signature.
_OPENPGP_STARTS = frozenset(
    {0xA0, 0xA1, 0xA2, 0xA3, 0xC8, 0x90, 0x91, 0x92, 0x3D, 0xC4, 0x88, 0x89, 0x8A, 0x8B, 0xC2}
)


class SignatureFormatError(ValueError):
    """A stored signature cannot even be read as a signature."""


@dataclass(frozen=True)
class SimpleSignature:
    """An OpenPGP-signed payload (`signedBy` verifies it)."""

    blob: bytes
    origin: str  # where it was found, for messages

    kind = "simple-signing"


@dataclass(frozen=True)
class SigstoreSignature:
    """A cosign signature: media type, payload and annotations (`sigstoreSigned` verifies it)."""

    media_type: str
    payload: bytes
    annotations: dict[str, str] = field(default_factory=dict)
    origin: str = ""

    kind = "sigstore"


Signature = SimpleSignature | SigstoreSignature


def signature_from_blob(blob: bytes, origin: str) -> Signature:
    """Read a stored signature (a lookaside file), detecting its format."""
    if not blob:
        raise SignatureFormatError(f"{origin}: empty signature")
    if blob[0] in _OPENPGP_STARTS:
        return SimpleSignature(blob, origin)
    if blob[0] != 0:
        raise SignatureFormatError(
            f"{origin}: unrecognised signature format (starts with byte {blob[0]:#x})"
        )
    name, newline, chunk = blob[1:].partition(b"\n")
    if not newline:
        raise SignatureFormatError(f"{origin}: invalid signature format, no newline")
    if name == b"simple-signing":
        return SimpleSignature(chunk, origin)
    if name == b"sigstore-json":
        return _sigstore_from_json(chunk, origin)
    raise SignatureFormatError(f"{origin}: unrecognised signature format {name[:64]!r}")


def _sigstore_from_json(chunk: bytes, origin: str) -> SigstoreSignature:
    try:
        value = strictjson.load(chunk, origin)
        fields = strictjson.obj(value, origin, optional=("mimeType", "payload", "annotations"))
        media_type = strictjson.string(fields.get("mimeType", ""), f"{origin}: mimeType")
        payload = strictjson.base64_bytes(fields.get("payload", ""), f"{origin}: payload")
        annotations = fields.get("annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()
        ):
            raise StrictJSONError(f"{origin}: annotations must map strings to strings")
    except StrictJSONError as error:
        raise SignatureFormatError(str(error)) from None
    return SigstoreSignature(media_type, payload, dict(annotations), origin)


@dataclass(frozen=True)
class Claim:
    """What a signature payload says: this manifest digest is this Docker reference."""

    manifest_digest: str
    docker_reference: str
    creator: str | None = None
    timestamp: int | None = None


def parse_payload(data: bytes, expected_type: str, what: str) -> Claim:
    """A signed payload, read as strictly as containers/image reads it."""
    value = strictjson.load(data, what)
    top = strictjson.obj(value, what, required=("critical", "optional"))
    optional = top["optional"]
    creator = timestamp = None
    if optional is not None or expected_type == SIMPLE_SIGNING_TYPE:  # cosign writes null
        if not isinstance(optional, dict):
            raise StrictJSONError(f"{what}: optional: expected a JSON object")
        if "creator" in optional:
            creator = strictjson.string(optional["creator"], f"{what}: optional.creator")
        if "timestamp" in optional:
            timestamp = strictjson.integer(optional["timestamp"], f"{what}: optional.timestamp")
    critical = strictjson.obj(top["critical"], f"{what}: critical",
                              required=("type", "image", "identity"))
    kind = strictjson.string(critical["type"], f"{what}: critical.type")
    if kind != expected_type:
        raise StrictJSONError(f"{what}: unrecognised signature type {kind!r}")
    image = strictjson.obj(critical["image"], f"{what}: critical.image",
                           required=("docker-manifest-digest",))
    digest = strictjson.string(image["docker-manifest-digest"],
                               f"{what}: docker-manifest-digest")
    _check_digest_syntax(digest, what)
    identity = strictjson.obj(critical["identity"], f"{what}: critical.identity",
                              required=("docker-reference",))
    reference = strictjson.string(identity["docker-reference"], f"{what}: docker-reference")
    return Claim(digest, reference, creator, timestamp)


def _check_digest_syntax(digest: str, what: str) -> None:
    algorithm, colon, hexpart = digest.partition(":")
    lengths = {"sha256": 64, "sha384": 96, "sha512": 128}
    if not colon or lengths.get(algorithm) != len(hexpart) or not all(
        c in "0123456789abcdef" for c in hexpart
    ):
        raise StrictJSONError(f"{what}: invalid docker-manifest-digest {digest[:80]!r}")


def describe(value: Any) -> str:
    """A short, printable rendering of an untrusted value for messages."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 100 else text[:97] + "..."
