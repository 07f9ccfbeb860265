"""Check a signing certificate's chain and subject for `sigstoreSigned` (with `cryptography`)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from unpack.errors import PolicyError
from unpack.trust.certificates import CertificateTrust
from unpack.trust.gpg import SignatureRejected
from unpack.trust.keys import KeySources
from unpack.trust.signatures import SIGSTORE_CHAIN_ANNOTATION

OIDC_ISSUER_V1 = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2 = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def trusted_public_key(trust: CertificateTrust, annotations: Mapping[str, str],
                       certificate_pem: str, at: datetime.datetime | None) -> Any:
    """The key of the signing certificate, if `trust` vouches for it (at time `at`, or now)."""
    leaf = _one_certificate(certificate_pem)
    intermediates = _certificates(annotations.get(SIGSTORE_CHAIN_ANNOTATION, ""), "chain")
    intermediates = intermediates[:-1]  # the last one is the root: trust comes from ours
    if trust.intermediates is not None:
        intermediates += _load(trust, trust.intermediates)
    when = at or datetime.datetime.now(datetime.timezone.utc)
    builder = verification.PolicyBuilder().store(
        verification.Store(_load(trust, trust.roots))).time(when).extension_policies(
        ca_policy=verification.ExtensionPolicy.permit_all().require_present(
            x509.BasicConstraints, verification.Criticality.AGNOSTIC, None),
        ee_policy=verification.ExtensionPolicy.permit_all(),
    )
    try:
        builder.build_client_verifier().verify(leaf, intermediates)
    except (verification.VerificationError, ValueError) as error:
        raise SignatureRejected(f"untrusted signing certificate ({error})") from None
    _check_code_signing(leaf)
    _check_subject(trust, leaf)
    return leaf.public_key()


def _load(trust: CertificateTrust, sources: KeySources) -> list[x509.Certificate]:
    found = []
    for where, data in sources.load():
        try:
            found += x509.load_pem_x509_certificates(data)
        except ValueError as error:
            raise PolicyError(f"{trust.kind} certificates {where}: {error}") from None
    return found


def _check_subject(trust: CertificateTrust, leaf: x509.Certificate) -> None:
    emails, names, addresses = _subject_names(leaf)
    if trust.subject_email and trust.subject_email not in emails:
        raise SignatureRejected(f"the certificate is not for {trust.subject_email} "
                                f"(it names {', '.join(emails) or 'no e-mail'})")
    if trust.subject_hostname and not _host_matches(trust.subject_hostname, names, addresses):
        raise SignatureRejected(f"the certificate is not for host {trust.subject_hostname}")
    if trust.kind == "fulcio":
        issuer = _oidc_issuer(leaf)
        if issuer != trust.oidc_issuer:
            raise SignatureRejected(f"the certificate's OIDC issuer is {issuer!r}")


def _check_code_signing(leaf: x509.Certificate) -> None:
    """No extended key usage means any (as Go's verifier reads it); else code signing."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    allowed = (ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    if not any(oid in usage for oid in allowed):
        raise SignatureRejected("the signing certificate does not allow code signing")


def _certificates(pem: str, what: str) -> list[x509.Certificate]:
    if not pem:
        return []
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as error:
        raise SignatureRejected(f"invalid certificate {what} ({error})") from None


def _one_certificate(pem: str) -> x509.Certificate:
    found = _certificates(pem, "in the signature")
    if len(found) != 1:
        raise SignatureRejected(f"expected one signing certificate, found {len(found)}")
    return found[0]


def _subject_names(leaf: x509.Certificate) -> tuple[list[str], list[str], list[Any]]:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], [], []
    return (names.get_values_for_type(x509.RFC822Name), names.get_values_for_type(x509.DNSName),
            names.get_values_for_type(x509.IPAddress))


def _host_matches(wanted: str, names: list[str], addresses: list[Any]) -> bool:
    try:
        return ipaddress.ip_address(wanted.strip("[]")) in addresses
    except ValueError:
        pass
    wanted = wanted.lower().rstrip(".")
    for name in (n.lower().rstrip(".") for n in names):
        if name == wanted:
            return True
        if name.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == name[2:]:
            return True
    return False


def _oidc_issuer(leaf: x509.Certificate) -> str:
    """Fulcio's issuer extension: v1 holds the raw string, v2 a DER UTF8String."""
    values = {}
    for extension in leaf.extensions:
        if extension.oid in (OIDC_ISSUER_V1, OIDC_ISSUER_V2):
            raw = extension.value.value  # UnrecognizedExtension
            values[extension.oid] = raw.decode("utf-8", "replace") if \
                extension.oid == OIDC_ISSUER_V1 else _utf8_string(raw)
    if len(set(values.values())) > 1:
        raise SignatureRejected("the certificate's OIDC issuer extensions disagree")
    if not values:
        raise SignatureRejected("the certificate has no OIDC issuer extension")
    return next(iter(values.values()))


def _utf8_string(der: bytes) -> str:
    if len(der) < 2 or der[0] != 0x0C:
        raise SignatureRejected("invalid OIDC issuer v2 extension")
    length, start = der[1], 2
    if length & 0x80:
        size = length & 0x7F
        length, start = int.from_bytes(der[2 : 2 + size], "big"), 2 + size
    if start + length != len(der):
        raise SignatureRejected("invalid OIDC issuer v2 extension (trailing data)")
    return der[start:].decode("utf-8", "replace")
