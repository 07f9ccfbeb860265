"""A cosign signer for the tests, written from cosign's published format (not from our verifier).

`cosign sign --key` stores, in the signed image's repository, an OCI manifest
tagged `sha256-HEX.sig` whose config is an empty JSON object and whose every
layer is one signature: a `application/vnd.dev.cosign.simplesigning.v1+json`
payload

    {"critical": {"identity": {"docker-reference": REF},
                  "image": {"docker-manifest-digest": DIGEST},
                  "type": "cosign container image signature"},
     "optional": ANNOTATIONS or null}

with the base64 of its DER signature (ECDSA P-256 / SHA-256 for cosign's own
keys) in the layer annotation `dev.cosignproject.cosign/signature`. Adding a
signature appends a layer. This module pushes such manifests over the
distribution API (plain HTTP, 127.0.0.1 only).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class CosignKey:
    """A private key and its public PEM, as `cosign generate-key-pair` would give."""

    private: Any

    @classmethod
    def generate(cls, kind: str = "ecdsa-p256") -> CosignKey:
        if kind == "ecdsa-p256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if kind == "ecdsa-p384":
            return cls(ec.generate_private_key(ec.SECP384R1()))
        if kind == "rsa":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        if kind == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise ValueError(kind)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, data: bytes) -> bytes:
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(data)


def payload(reference: str, manifest_digest: str, optional: dict[str, Any] | None = None,
            kind: str = "cosign container image signature") -> bytes:
    """The simple-signing payload cosign signs (its own field order)."""
    return json.dumps({
        "critical": {"identity": {"docker-reference": reference},
                     "image": {"docker-manifest-digest": manifest_digest}, "type": kind},
        "optional": optional,
    }, separators=(",", ":")).encode()


def signature_layer(body: bytes, signature: bytes, media_type: str = PAYLOAD_TYPE,
                    annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """One layer of the attachment manifest (the blob is `body`)."""
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
        "size": len(body),
        "annotations": {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
                        **(annotations or {})},
    }


class Pusher:
    """Push blobs and manifests to a plain-HTTP registry on 127.0.0.1."""

    def __init__(self, host: str) -> None:
        self.host = host

    def _request(self, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(self.host, timeout=30)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    def blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        location = started.getheader("Location") or ""
        path = location.split(self.host, 1)[-1] if "://" in location else location
        separator = "&" if "?" in path else "?"
        done = self._request("PUT", f"{path}{separator}digest={digest}", data,
                             {"Content-Type": "application/octet-stream"})
        assert done.status == 201, f"blob upload: HTTP {done.status}"
        return digest

    def manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> str:
        body = json.dumps(manifest).encode()
        response = self._request("PUT", f"/v2/{repository}/manifests/{tag}", body,
                                 {"Content-Type": manifest["mediaType"]})
        assert response.status == 201, f"manifest push: HTTP {response.status}"
        return "sha256:" + hashlib.sha256(body).hexdigest()


def attach(pusher: Pusher, repository: str, manifest_digest: str,
           layers: list[tuple[bytes, dict[str, Any]]]) -> None:
    """Push `sha256-HEX.sig` with these (payload, layer descriptor) signatures."""
    config = b"{}"
    pusher.blob(repository, config)
    for body, _ in layers:
        pusher.blob(repository, body)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [descriptor for _, descriptor in layers],
    }
    pusher.manifest(repository, manifest_digest.replace(":", "-") + ".sig", manifest)


def sign(pusher: Pusher, repository: str, reference: str, manifest_digest: str,
         keys: list[CosignKey]) -> None:
    """`cosign sign --key` once per key: one attachment manifest, a layer per signature."""
    body = payload(reference, manifest_digest)
    attach(pusher, repository, manifest_digest,
           [(body, signature_layer(body, key.sign(body))) for key in keys])
