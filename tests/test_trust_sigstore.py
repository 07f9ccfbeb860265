"""`sigstoreSigned`: cosign signatures from an independent test signer, and real vectors.

The signer (`tests/cosign.py`) follows cosign's published format; Debian's
skopeo 1.9.3 cannot verify sigstore signatures (Debian builds it without), so
the peer here is containers/image's own test vectors, with the verdicts its
tests give (`test_containers_image_vectors`, skipped where they are absent).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cosign import SIGNATURE_ANNOTATION, CosignKey, payload, signature_layer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from trustutil import cimage_fixtures_or_skip, judge

from unpack.errors import PolicyError
from unpack.trust.signatures import SigstoreSignature, signature_from_blob

MANIFEST = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
REFERENCE = "registry.example:5000/team/app:v1"
BUNDLE = "dev.sigstore.cosign/bundle"
CERTIFICATE = "dev.sigstore.cosign/certificate"
CHAIN = "dev.sigstore.cosign/chain"


def cosign_signature(key: CosignKey, reference: str = REFERENCE, digest: str = DIGEST,
                     annotations: dict[str, str] | None = None, body: bytes | None = None,
                     media_type: str | None = None) -> SigstoreSignature:
    body = body if body is not None else payload(reference, digest)
    layer = signature_layer(body, key.sign(body), **({"media_type": media_type}
                                                       if media_type else {}))
    return SigstoreSignature(layer["mediaType"], body,
                             {**layer["annotations"], **(annotations or {})}, "test")


def policy_for(*key_files: Path, **extra: Any) -> dict[str, Any]:
    requirement: dict[str, Any] = {"type": "sigstoreSigned"}
    if len(key_files) == 1:
        requirement["keyPath"] = str(key_files[0])
    elif key_files:
        requirement["keyPaths"] = [str(k) for k in key_files]
    requirement.update(extra)
    return {"default": [requirement]}


def write_key(directory: Path, name: str, key: CosignKey) -> Path:
    path = directory / f"{name}.pub"
    path.write_bytes(key.public_pem())
    return path


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "rsa", "ed25519"])
def test_every_key_type(tmp_path: Path, kind: str) -> None:
    key = CosignKey.generate(kind)
    report = judge(policy_for(write_key(tmp_path, "k", key)), REFERENCE, MANIFEST,
                   [cosign_signature(key)])
    assert report.accepted, report.requirements
    der = key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert report.signatures[0]["key"] == "sha256:" + hashlib.sha256(der).hexdigest()
    assert report.signatures[0]["kind"] == "sigstore"


def test_verdicts(tmp_path: Path) -> None:
    trusted, other = CosignKey.generate(), CosignKey.generate()
    trusted_file, other_file = write_key(tmp_path, "t", trusted), write_key(tmp_path, "o", other)
    good = cosign_signature(trusted)
    tampered = SigstoreSignature(good.media_type, good.payload.replace(b"v1", b"v2"),
                                 good.annotations, "tampered")
    cases = [
        ([good], policy_for(trusted_file), True, ""),
        ([good], policy_for(other_file), False, "untrusted key"),
        ([good], policy_for(other_file, trusted_file), True, ""),
        ([cosign_signature(other)], policy_for(trusted_file), False, "untrusted key"),
        ([tampered], policy_for(trusted_file), False, "untrusted key"),
        ([cosign_signature(trusted, digest="sha256:" + "ab" * 32)], policy_for(trusted_file),
         False, "another manifest"),
        ([cosign_signature(trusted, reference="registry.example:5000/team/x:v1")],
         policy_for(trusted_file), False, "another repository or tag"),
        ([cosign_signature(trusted, reference="registry.example:5000/team/app:v2")],
         policy_for(trusted_file, signedIdentity={"type": "matchRepository"}), True, ""),
        ([cosign_signature(trusted, annotations={SIGNATURE_ANNOTATION: "!!!"})],
         policy_for(trusted_file), False, "not valid base64"),
        ([SigstoreSignature(good.media_type, good.payload, {}, "bare")], policy_for(trusted_file),
         False, "no dev.cosignproject.cosign/signature annotation"),
        ([cosign_signature(trusted, media_type="application/vnd.in-toto+json")],
         policy_for(trusted_file), False, "no signature"),
        ([cosign_signature(trusted, body=payload(REFERENCE, DIGEST, kind="atomic container "
                                                  "signature"))],
         policy_for(trusted_file), False, "unrecognised signature type"),
        ([cosign_signature(trusted, body=payload(REFERENCE, DIGEST, {"creator": "x"}))],
         policy_for(trusted_file), True, ""),
        ([], policy_for(trusted_file), False, "no signature"),
        ([cosign_signature(other), good], policy_for(trusted_file), True, ""),
    ]
    for signatures, policy, accepted, reason in cases:
        report = judge(policy, REFERENCE, MANIFEST, signatures)
        assert report.accepted is accepted, (policy, report.requirements)
        assert reason in report.requirements[-1]["reason"]


def test_key_data_forms_and_bad_keys(tmp_path: Path) -> None:
    key = CosignKey.generate()
    pem = key.public_pem()
    good = [cosign_signature(key)]
    data = base64.b64encode(pem).decode()
    assert judge({"default": [{"type": "sigstoreSigned", "keyData": data}]}, REFERENCE,
                 MANIFEST, good).accepted
    assert judge({"default": [{"type": "sigstoreSigned", "keyDatas": [data]}]}, REFERENCE,
                 MANIFEST, good).accepted
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"not a key")
    with pytest.raises(PolicyError, match="not a PEM public key"):
        judge(policy_for(garbage), REFERENCE, MANIFEST, good)
    with pytest.raises(PolicyError, match="cannot read key file"):
        judge(policy_for(tmp_path / "missing.pub"), REFERENCE, MANIFEST, good)


# -- Rekor SETs, made by a test "Rekor" ----------------------------------------------------------


def rekor_bundle(rekor: ec.EllipticCurvePrivateKey, key_or_cert_pem: bytes,
                 signature: bytes, body: bytes, integrated: int = 1_700_000_000) -> str:
    """A Rekor SET as cosign stores it: Rekor's signature over the canonical log entry."""
    entry = {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": hashlib.sha256(body).hexdigest()}},
        "signature": {"content": base64.b64encode(signature).decode(),
                      "publicKey": {"content": base64.b64encode(key_or_cert_pem).decode()}}}}
    payload_ = {"body": base64.b64encode(json.dumps(entry).encode()).decode(),
                "integratedTime": integrated, "logIndex": 7, "logID": "ab" * 32}
    canonical = json.dumps(payload_, sort_keys=True, separators=(",", ":")).encode()
    signed = rekor.sign(canonical, ec.ECDSA(hashes.SHA256()))
    return json.dumps({"SignedEntryTimestamp": base64.b64encode(signed).decode(),
                       "Payload": payload_})


def _pem(private: Any) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def test_key_with_rekor(tmp_path: Path) -> None:
    key, rekor, not_rekor = CosignKey.generate(), ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    key_file = write_key(tmp_path, "k", key)
    rekor_file = tmp_path / "rekor.pub"
    rekor_file.write_bytes(_pem(rekor))
    body = payload(REFERENCE, DIGEST)
    raw = key.sign(body)
    policy = policy_for(key_file, rekorPublicKeyPath=str(rekor_file))

    def signature(bundle: str | None) -> SigstoreSignature:
        annotations = signature_layer(body, raw)["annotations"]
        if bundle is not None:
            annotations[BUNDLE] = bundle
        return SigstoreSignature("application/vnd.dev.cosign.simplesigning.v1+json", body,
                                 annotations, "rekor")

    assert judge(policy, REFERENCE, MANIFEST,
                 [signature(rekor_bundle(rekor, key.public_pem(), raw, body))]).accepted
    for bundle, reason in [
        (None, "no dev.sigstore.cosign/bundle annotation"),
        ("not json", "invalid JSON"),
        (rekor_bundle(not_rekor, key.public_pem(), raw, body), "not signed by a trusted Rekor"),
        (rekor_bundle(rekor, CosignKey.generate().public_pem(), raw, body), "another key"),
        (rekor_bundle(rekor, key.public_pem(), b"other", body), "another signature"),
        (rekor_bundle(rekor, key.public_pem(), raw, b"other"), "another payload"),
    ]:
        report = judge(policy, REFERENCE, MANIFEST, [signature(bundle)])
        assert not report.accepted and reason in report.requirements[0]["reason"], bundle


# -- certificates (fulcio and pki), from a test CA --------------------------------------------


def _certificate(subject_key: Any, issuer_key: Any, issuer: x509.Name, *, ca: bool,
                 email: str | None = None, host: str | None = None, issuer_ext: str | None = None,
                 start: datetime.datetime, minutes: int) -> x509.Certificate:
    name = issuer if ca and subject_key is issuer_key else x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "test")] if ca else [])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
               .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(minutes=minutes))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        names: list[x509.GeneralName] = []
        if email:
            names.append(x509.RFC822Name(email))
        if host:
            names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        if issuer_ext:
            builder = builder.add_extension(x509.UnrecognizedExtension(
                x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), issuer_ext.encode()),
                critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_fulcio_and_pki(tmp_path: Path) -> None:
    ca_key, signer, rekor = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test fulcio")])
    now = datetime.datetime.now(datetime.timezone.utc)
    signed_at = now - datetime.timedelta(days=30)  # a short-lived certificate, long expired
    ca = _certificate(ca_key, ca_key, ca_name, ca=True, start=signed_at, minutes=10 ** 6)
    leaf = _certificate(signer, ca_key, ca_name, ca=False, email="dev@example.test",
                        host="builder.example.test", issuer_ext="https://issuer.example",
                        start=signed_at, minutes=10)
    leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rekor.pub").write_bytes(_pem(rekor))
    body = payload(REFERENCE, DIGEST)
    raw = signer.sign(body, ec.ECDSA(hashes.SHA256()))
    bundle = rekor_bundle(rekor, leaf_pem, raw, body, int(signed_at.timestamp()) + 60)
    signature = SigstoreSignature(
        "application/vnd.dev.cosign.simplesigning.v1+json", body,
        {SIGNATURE_ANNOTATION: base64.b64encode(raw).decode(), BUNDLE: bundle,
         CERTIFICATE: leaf_pem.decode()}, "keyless")
    fulcio = {"caPath": str(tmp_path / "ca.pem"), "oidcIssuer": "https://issuer.example",
              "subjectEmail": "dev@example.test"}
    keyless = {"default": [{"type": "sigstoreSigned", "fulcio": fulcio,
                            "rekorPublicKeyPath": str(tmp_path / "rekor.pub")}]}
    report = judge(keyless, REFERENCE, MANIFEST, [signature])
    assert report.accepted, report.requirements
    assert report.signatures[0]["key"] == "fulcio certificate for dev@example.test"
    for change, reason in [({"subjectEmail": "else@example.test"}, "not for else@"),
                           ({"oidcIssuer": "https://other"}, "OIDC issuer")]:
        other = {"default": [{**keyless["default"][0], "fulcio": {**fulcio, **change}}]}
        assert reason in judge(other, REFERENCE, MANIFEST, [signature]).requirements[0]["reason"]
    late = rekor_bundle(rekor, leaf_pem, raw, body, int(now.timestamp()))
    expired = SigstoreSignature(signature.media_type, body, {**signature.annotations,
                                                             BUNDLE: late}, "late")
    assert "untrusted signing certificate" in judge(
        keyless, REFERENCE, MANIFEST, [expired]).requirements[0]["reason"]
    pki = {"default": [{"type": "sigstoreSigned", "pki": {
        "caRootsPath": str(tmp_path / "ca.pem"), "subjectHostname": "builder.example.test"}}]}
    # the leaf expired long ago, and pki checks certificates now: rejected
    assert "untrusted signing certificate" in judge(
        pki, REFERENCE, MANIFEST, [signature]).requirements[0]["reason"]


# -- containers/image's own vectors ------------------------------------------------------------


@pytest.fixture(scope="module")
def vectors() -> Path:
    return cimage_fixtures_or_skip()


def _directory_signatures(folder: Path) -> list[Any]:
    return [signature_from_blob(p.read_bytes(), p.name) for p in sorted(folder.glob("signature-*"))]


SINGLE = "192.168.64.2:5000/cosign-signed-single-sample"
VECTOR_CASES = [
    # (directory, reference, requirement fields, identity, accepted) as c/image's tests say
    ("dir-img-cosign-valid", SINGLE, {"keyPath": "cosign.pub"}, None, True),
    ("dir-img-cosign-valid", SINGLE, {"keyPaths": ["cosign2.pub", "cosign.pub"]}, None, True),
    ("dir-img-cosign-valid", SINGLE, {"keyPath": "cosign2.pub"}, None, False),
    ("dir-img-cosign-valid", SINGLE, {"keyPath": "cosign.pub"},
     {"type": "exactReference", "dockerReference": "this/does-not:match"}, False),
    ("dir-img-cosign-valid", SINGLE, {"keyPath": "cosign.pub", "rekorPublicKeyPath": "rekor.pub"},
     None, False),  # no Rekor SET in this signature
    ("dir-img-cosign-valid-2", SINGLE, {"keyPath": "cosign.pub"}, None, True),
    ("dir-img-cosign-mixed", SINGLE, {"keyPath": "cosign.pub"}, None, True),
    ("dir-img-cosign-modified-manifest", SINGLE, {"keyPath": "cosign.pub"}, None, False),
    ("dir-img-cosign-manifest-digest-error", SINGLE, {"keyPath": "cosign.pub"}, None, False),
    ("dir-img-cosign-other-attachment", SINGLE, {"keyPath": "cosign.pub"}, None, False),
    ("dir-img-cosign-valid-with-tag", "192.168.64.2:5000/skopeo-signed:tag",
     {"keyPath": "cosign.pub"}, {"type": "matchExact"}, True),
    ("dir-img-cosign-valid-with-tag", "192.168.64.2:5000/skopeo-signed:othertag",
     {"keyPath": "cosign.pub"}, {"type": "matchExact"}, False),
    ("dir-img-cosign-valid", SINGLE, {"keyPath": "cosign.pub"}, {"type": "matchExact"}, False),
    ("dir-img-cosign-key-rekor-valid", "192.168.64.2:5000/cosign-signed/key-1",
     {"keyPaths": ["cosign.pub", "cosign2.pub"], "rekorPublicKeyPaths": ["cosign.pub",
                                                                         "rekor.pub"]},
     None, True),
    ("dir-img-cosign-key-rekor-valid", "192.168.64.2:5000/cosign-signed/key-1",
     {"keyPath": "cosign2.pub", "rekorPublicKeyPath": "cosign.pub"}, None, False),
    ("dir-img-cosign-fulcio-rekor-valid", "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
     {"fulcio": {"caPath": "fulcio_v1.crt.pem", "oidcIssuer": "https://github.com/login/oauth",
                 "subjectEmail": "mitr@redhat.com"}, "rekorPublicKeyPath": "rekor.pub"},
     None, True),
    ("dir-img-cosign-fulcio-rekor-valid", "192.168.64.2:5000/cosign-signed/fulcio-rekor-1",
     {"fulcio": {"caPath": "fulcio_v1.crt.pem", "oidcIssuer": "https://github.com/login/oauth",
                 "subjectEmail": "someone-else@redhat.com"}, "rekorPublicKeyPath": "rekor.pub"},
     None, False),
    ("dir-img-cosign-pki-valid", "localhost:5000/test",
     {"pki": {"caRootsPath": "pki_root_crts.pem", "caIntermediatesPath":
              "pki_intermediate_crts.pem", "subjectEmail": "qiwan@redhat.com",
              "subjectHostname": "myhost.example.com"}}, None, True),
    ("dir-img-cosign-pki-valid", "localhost:5000/test",
     {"pki": {"caRootsPath": "pki_root_crts.pem", "subjectEmail": "qiwan@redhat.com"}},
     None, True),  # the chain annotation carries the intermediate
]


def _absolute(fields: Any, vectors: Path) -> Any:
    if isinstance(fields, dict):
        return {k: _absolute(v, vectors) for k, v in fields.items()}
    if isinstance(fields, list):
        return [_absolute(v, vectors) for v in fields]
    if isinstance(fields, str) and fields.endswith((".pub", ".pem")):
        return str(vectors / fields)
    return fields


@pytest.mark.parametrize(("directory", "reference", "fields", "identity", "accepted"),
                         VECTOR_CASES)
def test_containers_image_vectors(vectors: Path, directory: str, reference: str,
                                  fields: dict[str, Any], identity: dict[str, Any] | None,
                                  accepted: bool) -> None:
    requirement = {"type": "sigstoreSigned", **_absolute(fields, vectors),
                   "signedIdentity": identity or {"type": "matchRepository"}}
    folder = vectors / directory
    report = judge({"default": [requirement]}, reference,
                   (folder / "manifest.json").read_bytes(), _directory_signatures(folder))
    assert report.accepted is accepted, report.requirements


def test_unknown_cosign_key_vector(vectors: Path) -> None:
    signature = signature_from_blob((vectors / "unknown-cosign-key.signature").read_bytes(),
                                    "unknown-cosign-key.signature")
    folder = vectors / "dir-img-cosign-valid"
    report = judge(policy_for(vectors / "cosign.pub", signedIdentity={"type": "matchRepository"}),
                   SINGLE, (folder / "manifest.json").read_bytes(), [signature])
    assert not report.accepted
