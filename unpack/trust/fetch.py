"""Fetch a registry image's signatures: lookaside files and cosign attachments.

- *Lookaside* (registries.d `lookaside`): `BASE/REPOSITORY@ALG=HEX/signature-N`
  for N = 1, 2, … until one is missing (a `file://` name that does not exist,
  or an HTTP 404), at most 128; REPOSITORY is the path without the host.
- *Cosign attachments* (registries.d `use-sigstore-attachments: true`): the
  manifest tagged `ALG-HEX.sig` in the same repository; each of its layers is
  a payload, its annotations carry the signature.

Every signature is capped at 4 MiB. The local transports have no signatures
(as in containers/image): a policy that requires one rejects their images.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from unpack.errors import ImageError, NetworkError, PolicyError
from unpack.image.descriptor import Descriptor
from unpack.image.documents import descriptor_list, parse_json_object
from unpack.image.mediatypes import OCI_MANIFEST
from unpack.source.registry import RegistrySource
from unpack.trust.registriesd import RegistriesD
from unpack.trust.signatures import (
    MAX_SIGNATURE_SIZE,
    MAX_SIGNATURES,
    Signature,
    SignatureFormatError,
    SigstoreSignature,
    signature_from_blob,
)
from unpack.trust.subject import PolicySubject


def registry_signatures(source: RegistrySource, subject: PolicySubject, manifest_digest: str,
                        config: RegistriesD) -> list[Signature]:
    """Every signature stored for `manifest_digest` of a registry image."""
    assert subject.docker_reference is not None
    base = config.lookaside(subject.identity, subject.namespaces)
    found = lookaside_signatures(source, base, subject.docker_reference.path, manifest_digest)
    if config.use_sigstore_attachments(subject.identity, subject.namespaces):
        found += attachment_signatures(source, manifest_digest)
    return found


def lookaside_signatures(source: RegistrySource, base: str, repository: str,
                         manifest_digest: str) -> list[Signature]:
    """`signature-1`, `signature-2`, … under the lookaside URL, until one is missing."""
    scheme = urlsplit(base).scheme
    if scheme not in ("file", "http", "https"):
        raise PolicyError(f"lookaside {base!r}: only file://, http:// and https:// are supported")
    algorithm, _, hexpart = manifest_digest.partition(":")
    signatures: list[Signature] = []
    for number in range(1, MAX_SIGNATURES + 2):
        if number > MAX_SIGNATURES:
            raise ImageError(f"lookaside {base}: more than {MAX_SIGNATURES} signatures")
        url = f"{base.rstrip('/')}/{repository}@{algorithm}={hexpart}/signature-{number}"
        blob = _read_file(url) if scheme == "file" else source.fetch_url(
            url, f"signature {url}", MAX_SIGNATURE_SIZE)
        if blob is None:
            return signatures
        try:
            signatures.append(signature_from_blob(blob, url))
        except SignatureFormatError as error:
            raise ImageError(f"lookaside signature {error}") from None
    return signatures  # pragma: no cover (the loop returns or raises)


def _read_file(url: str) -> bytes | None:
    path = unquote(urlsplit(url).path)
    try:
        with open(path, "rb") as file:
            blob = file.read(MAX_SIGNATURE_SIZE + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise NetworkError(f"signature {path}: {error.strerror}") from None
    if len(blob) > MAX_SIGNATURE_SIZE:
        raise ImageError(f"signature {path}: larger than {MAX_SIGNATURE_SIZE} bytes")
    return blob


def attachment_signatures(source: RegistrySource, manifest_digest: str) -> list[Signature]:
    """The layers of the cosign attachment manifest `ALG-HEX.sig`, if the repository has one."""
    tag = manifest_digest.replace(":", "-", 1) + ".sig"
    found = source.tagged_manifest(tag, MAX_SIGNATURE_SIZE)
    if found is None:
        return []
    body, media_type = found
    what = f"cosign attachments {tag} in {source.path}"
    document = parse_json_object(body, what)
    declared = media_type or document.get("mediaType")
    if declared != OCI_MANIFEST:
        raise ImageError(f"{what}: media type {declared!r}, expected an OCI image manifest")
    layers = descriptor_list(document, "layers", what)
    if len(layers) > MAX_SIGNATURES:
        raise ImageError(f"{what}: more than {MAX_SIGNATURES} layers")
    return [_attachment(source, layer, what) for layer in layers]


def _attachment(source: RegistrySource, layer: Descriptor, what: str) -> SigstoreSignature:
    payload = source.small_blob(layer, MAX_SIGNATURE_SIZE, f"{what}: layer")
    origin = f"{source.path} {layer.digest.short()} (cosign attachment)"
    return SigstoreSignature(layer.media_type, payload, dict(layer.annotations), origin)
