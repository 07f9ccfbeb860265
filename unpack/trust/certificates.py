"""Certificate trust for `sigstoreSigned`: keyless (`fulcio`) and `pki` (containers-policy.json(5)).

- `fulcio`: the signing certificate (annotation `dev.sigstore.cosign/certificate`,
  intermediates in `…/chain`) must chain to `caPath`/`caData`, be valid *at the
  time Rekor recorded the signature* (the SET's integratedTime), allow code
  signing, name `subjectEmail` and carry the OIDC issuer `oidcIssuer`.
- `pki`: the certificate must chain, now, to `caRootsPath`/`caRootsData` (with
  `caIntermediates…` and the annotation's chain), allow code signing, and name
  `subjectEmail` and/or `subjectHostname`.

The certificate's public key then verifies the payload as a configured key would.
Chains are checked by `cryptography`'s X.509 verifier (`unpack.trust.x509chain`).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpack.trust import strictjson
from unpack.trust.keys import KeySources
from unpack.trust.strictjson import StrictJSONError


@dataclass(frozen=True)
class CertificateTrust:
    """A `fulcio` or `pki` section: trusted CAs and the subject they must vouch for."""

    kind: str  # fulcio or pki
    roots: KeySources
    intermediates: KeySources | None = None
    oidc_issuer: str = ""
    subject_email: str = ""
    subject_hostname: str = ""

    @classmethod
    def from_json(cls, kind: str, value: Any, what: str) -> CertificateTrust:
        if kind == "fulcio":
            fields = strictjson.obj(value, what, optional=(
                "caPath", "caData", "oidcIssuer", "subjectEmail"))
            roots = _one_source(fields, what, "ca")
            issuer = strictjson.string(fields.get("oidcIssuer", ""), f"{what}.oidcIssuer")
            email = strictjson.string(fields.get("subjectEmail", ""), f"{what}.subjectEmail")
            if not issuer or not email:
                raise StrictJSONError(f"{what}: oidcIssuer and subjectEmail must be given")
            return cls(kind, roots, oidc_issuer=issuer, subject_email=email)
        fields = strictjson.obj(value, what, optional=(
            "caRootsPath", "caRootsData", "caIntermediatesPath", "caIntermediatesData",
            "subjectEmail", "subjectHostname"))
        roots = _one_source(fields, what, "caRoots")
        intermediates = KeySources.from_fields(fields, what, prefix="caIntermediates",
                                               required=False)
        email = strictjson.string(fields.get("subjectEmail", ""), f"{what}.subjectEmail")
        host = strictjson.string(fields.get("subjectHostname", ""), f"{what}.subjectHostname")
        if not email and not host:
            raise StrictJSONError(f"{what}: subjectEmail or subjectHostname must be given")
        return cls(kind, roots, intermediates, subject_email=email, subject_hostname=host)

    def public_key(self, annotations: Mapping[str, str], certificate_pem: str,
                   at: datetime.datetime | None) -> Any:
        """The signer's key, once its certificate is trusted (`at`: when; None for now)."""
        from unpack.trust.x509chain import trusted_public_key  # loads cryptography

        return trusted_public_key(self, annotations, certificate_pem, at)


def _one_source(fields: Mapping[str, Any], what: str, prefix: str) -> KeySources:
    path, data = f"{prefix}Path", f"{prefix}Data"
    if (path in fields) == (data in fields):
        raise StrictJSONError(f"{what}: exactly one of {path} and {data} must be given")
    sources = KeySources.from_fields({k: v for k, v in fields.items() if k in (path, data)},
                                     what, prefix=prefix)
    assert sources is not None
    return sources
