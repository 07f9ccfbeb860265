"""`signedBy`: simple signatures checked with gpgv, on generated keys and on real vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_tool
from gpgkeys import GpgHome
from trustutil import cimage_fixtures_or_skip, judge

from unpack.errors import PolicyError
from unpack.trust.openpgp import KeyFileError, dearmor, primary_fingerprints
from unpack.trust.signatures import SimpleSignature, signature_from_blob

pytestmark = [needs_tool("gpg"), needs_tool("gpgv")]

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType":
                       "application/vnd.oci.image.manifest.v1+json", "layers": []}).encode()
OTHER_MANIFEST = MANIFEST.replace(b'"layers": []', b'"layers": [], "x": 1')
REFERENCE = "registry.example:5000/team/app:v1"


def digest_of(manifest: bytes) -> str:
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def simple_payload(reference: str = REFERENCE, manifest: bytes = MANIFEST,
                   kind: str = "atomic container signature") -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": reference},
                                    "image": {"docker-manifest-digest": digest_of(manifest)},
                                    "type": kind},
                       "optional": {"creator": "test", "timestamp": 1700000000}}).encode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Keys and signatures made once: trusted, untrusted, subkey, revoked, expired."""
    home = GpgHome(tmp_path_factory.mktemp("gpg") / "home")
    trusted = home.generate("trusted")
    untrusted = home.generate("untrusted")
    with_subkey = home.generate("withsub", signing_subkey=True)
    revoked = home.generate("revoked", signing_subkey=True)
    past = home.generate("past", faked_time="20190101T000000!")
    expiring = home.generate("expiring", expire="1d", faked_time="20190101T000000!")
    body = simple_payload()
    signatures = {
        "good": home.sign(body, trusted),
        "untrusted": home.sign(body, untrusted),
        "subkey": home.sign(body, home.fingerprints("withsub")[1] + "!"),
        "revoked-subkey": home.sign(body, home.fingerprints("revoked")[1] + "!"),
        "expired-signature": home.sign(body, past, faked_time="20200101T000000!", expire="1d"),
        "expired-key": home.sign(body, expiring, faked_time="20190101T120000!"),
        "other-manifest": home.sign(simple_payload(manifest=OTHER_MANIFEST), trusted),
        "other-repository": home.sign(simple_payload("registry.example:5000/team/x:v1"),
                                      trusted),
        "other-tag": home.sign(simple_payload("registry.example:5000/team/app:v2"), trusted),
        "invalid-reference": home.sign(simple_payload("UPPERCASE/Invalid"), trusted),
        "cosign-type": home.sign(simple_payload(kind="cosign container image signature"),
                                 trusted),
        "not-json": home.sign(b"This is not JSON\n", trusted),
    }
    home.revoke_subkey(revoked)
    directory = home.path.parent
    files = {}
    for name, fingerprint in (("trusted", trusted), ("untrusted", untrusted),
                              ("withsub", with_subkey), ("revoked", revoked),
                              ("past", past), ("expiring", expiring)):
        files[name] = directory / f"{name}.gpg"
        files[name].write_bytes(home.export(fingerprint))
        (directory / f"{name}.asc").write_bytes(home.export(fingerprint, armor=True))
        files[f"{name}.asc"] = directory / f"{name}.asc"
    return {"signatures": signatures, "files": files, "trusted": trusted,
            "with_subkey": with_subkey}


def signed_by(key_file: Path | list[Path], identity: dict[str, Any] | None = None) -> dict:
    requirement: dict[str, Any] = {"type": "signedBy", "keyType": "GPGKeys"}
    if isinstance(key_file, list):
        requirement["keyPaths"] = [str(k) for k in key_file]
    else:
        requirement["keyPath"] = str(key_file)
    if identity is not None:
        requirement["signedIdentity"] = identity
    return {"default": [requirement]}


def verdict(keys: dict[str, Any], names: list[str], key: str = "trusted",
            reference: str = REFERENCE, identity: dict[str, Any] | None = None) -> Any:
    signatures = [SimpleSignature(keys["signatures"][n], n) for n in names]
    return judge(signed_by(keys["files"][key], identity), reference, MANIFEST, signatures)


@pytest.mark.parametrize(("names", "key", "accepted", "reason"), [
    (["good"], "trusted", True, ""),
    (["good"], "trusted.asc", True, ""),
    (["good"], "untrusted", False, "signed by an untrusted key"),
    (["untrusted"], "trusted", False, "signed by an untrusted key"),
    (["subkey"], "withsub", True, ""),
    (["revoked-subkey"], "revoked", False, "made by a revoked key"),
    (["expired-signature"], "past", False, "the signature has expired"),
    (["expired-key"], "expiring", False, "made by an expired key"),
    (["other-manifest"], "trusted", False, "signature is for another manifest"),
    (["other-repository"], "trusted", False, "signature is for another repository or tag"),
    (["other-tag"], "trusted", False, "another repository or tag"),
    (["invalid-reference"], "trusted", False, "another repository or tag"),
    (["cosign-type"], "trusted", False, "unrecognised signature type"),
    (["not-json"], "trusted", False, "invalid signature payload"),
    ([], "trusted", False, "no signature"),
    (["untrusted", "good"], "trusted", True, ""),
    (["untrusted", "other-tag"], "trusted", False, "none of the 2 signatures is accepted"),
])
def test_generated_signatures(keys: dict[str, Any], names: list[str], key: str,
                              accepted: bool, reason: str) -> None:
    report = verdict(keys, names, key)
    assert report.accepted is accepted, report.requirements
    assert reason in report.requirements[-1]["reason"]
    if accepted:
        fingerprint = keys["with_subkey"] if key == "withsub" else keys["trusted"]
        assert report.signatures[0]["key"] == fingerprint  # the primary key, for a subkey too
        assert report.signatures[0]["kind"] == "simple-signing"


def test_identity_rules_apply_to_the_claim(keys: dict[str, Any]) -> None:
    by_repository = {"type": "matchRepository"}
    assert verdict(keys, ["other-tag"], identity=by_repository).accepted
    assert not verdict(keys, ["other-repository"], identity=by_repository).accepted
    exact = {"type": "exactReference", "dockerReference": "registry.example:5000/team/x:v1"}
    assert verdict(keys, ["other-repository"], identity=exact).accepted
    digest_reference = f"registry.example:5000/team/app@{digest_of(MANIFEST)}"
    assert verdict(keys, ["other-tag"], reference=digest_reference).accepted


def test_several_keys_and_key_data(keys: dict[str, Any]) -> None:
    files = keys["files"]
    signatures = [SimpleSignature(keys["signatures"]["good"], "good")]
    assert judge(signed_by([files["untrusted"], files["trusted.asc"]]), REFERENCE, MANIFEST,
                 signatures).accepted
    assert not judge(signed_by([files["untrusted"]]), REFERENCE, MANIFEST, signatures).accepted
    assert not judge(signed_by([]), REFERENCE, MANIFEST, signatures).accepted
    inline = {"default": [{"type": "signedBy", "keyType": "GPGKeys",
                           "keyData": base64.b64encode(files["trusted"].read_bytes()).decode()}]}
    assert judge(inline, REFERENCE, MANIFEST, signatures).accepted


def test_all_requirements_must_hold(keys: dict[str, Any]) -> None:
    files = keys["files"]
    both = {"default": [signed_by(files["trusted"])["default"][0],
                        signed_by(files["untrusted"])["default"][0]]}
    only_one = [SimpleSignature(keys["signatures"]["good"], "good")]
    report = judge(both, REFERENCE, MANIFEST, only_one)
    assert not report.accepted and [r["allowed"] for r in report.requirements] == [True, False]
    two = [*only_one, SimpleSignature(keys["signatures"]["untrusted"], "untrusted")]
    assert judge(both, REFERENCE, MANIFEST, two).accepted


def test_unimplemented_key_types_reject(keys: dict[str, Any]) -> None:
    policy = signed_by(keys["files"]["trusted"])
    policy["default"][0]["keyType"] = "signedByGPGKeys"
    report = judge(policy, REFERENCE, MANIFEST,
                   [SimpleSignature(keys["signatures"]["good"], "good")])
    assert not report.accepted and "not implemented" in report.requirements[0]["reason"]


def test_bad_key_files_are_policy_errors(tmp_path: Path, keys: dict[str, Any]) -> None:
    signature = [SimpleSignature(keys["signatures"]["good"], "good")]
    with pytest.raises(PolicyError, match="cannot read key file"):
        judge(signed_by(tmp_path / "missing.gpg"), REFERENCE, MANIFEST, signature)
    garbage = tmp_path / "garbage.gpg"
    garbage.write_bytes(b"this is not a key")
    with pytest.raises(PolicyError, match="not an OpenPGP packet"):
        judge(signed_by(garbage), REFERENCE, MANIFEST, signature)
    with pytest.raises(KeyFileError):
        primary_fingerprints(dearmor(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n"))


@pytest.mark.parametrize("blob", [b"", b"garbage", b"\xa3" + b"x" * 64, b"\x00unknown\nx",
                                  b"\x00sigstore-json\n{bad json"])
def test_garbage_signatures(keys: dict[str, Any], blob: bytes) -> None:
    """Garbage is refused as a stored signature, or by gpgv: never accepted."""
    try:
        signature = signature_from_blob(blob, "lookaside")
    except ValueError:
        return
    report = judge(signed_by(keys["files"]["trusted"]), REFERENCE, MANIFEST, [signature])
    assert not report.accepted


# -- containers/image's own vectors ------------------------------------------------------------

# image.signature and its siblings claim the name-only "testing/manifest", which c/image's
# tests check as an exact expected identity: matchRepository is the policy form of that.
VECTOR_VERDICTS = [
    # (signature file, key file, docker reference, manifest file, accepted) as c/image's tests
    ("image.signature", "public-key.gpg", "testing/manifest:latest", "image.manifest.json", True),
    ("dir-img-valid/signature-1", "public-key.gpg", "testing/manifest:notlatest",
     "dir-img-valid/manifest.json", False),
    ("image.signature", "public-key-2.gpg", "testing/manifest:latest", "image.manifest.json",
     False),
    ("expired.signature", "public-key.gpg", "testing/manifest:latest", "image.manifest.json",
     False),
    ("corrupt.signature", "public-key.gpg", "testing/manifest:latest", "image.manifest.json",
     False),
    ("corrupt.signature-v3", "public-key.gpg", "testing/manifest:latest", "image.manifest.json",
     False),
    ("invalid-reference.signature", "public-key.gpg", "testing/manifest:latest",
     "image.manifest.json", False),
    ("invalid-blob.signature", "public-key.gpg", "testing/manifest:latest",
     "image.manifest.json", False),
    ("unknown-key.signature", "public-key.gpg", "testing/manifest:latest", "image.manifest.json",
     False),
    ("subkey.signature", "public-key-with-subkey.gpg", "testing/manifest:latest",
     "image.manifest.json", True),
    ("subkey.signature-v3", "public-key-with-subkey.gpg", "testing/manifest:latest",
     "image.manifest.json", True),
    ("subkey-revoked.signature", "public-key-with-revoked-subkey.gpg", "testing/manifest:latest",
     "image.manifest.json", False),
    ("no-optional-fields.signature", "public-key.gpg", "testing/manifest:latest",
     "image.manifest.json", True),
    ("dir-img-valid/signature-1", "public-key.gpg", "testing/manifest:latest",
     "dir-img-valid/manifest.json", True),
    ("dir-img-valid-subkey/signature-1", "public-key-with-subkey.gpg", "testing/manifest:latest",
     "dir-img-valid-subkey/manifest.json", True),
    ("dir-img-modified-manifest/signature-1", "public-key.gpg", "testing/manifest:latest",
     "dir-img-modified-manifest/manifest.json", False),
    ("dir-img-manifest-digest-error/signature-1", "public-key.gpg", "testing/manifest:latest",
     "dir-img-manifest-digest-error/manifest.json", False),
]


@pytest.fixture(scope="module")
def vectors() -> Path:
    return cimage_fixtures_or_skip()


@pytest.mark.parametrize(("signature", "key", "reference", "manifest", "accepted"),
                         VECTOR_VERDICTS)
def test_containers_image_vectors(vectors: Path, signature: str, key: str, reference: str,
                                  manifest: str, accepted: bool) -> None:
    blob = signature_from_blob((vectors / signature).read_bytes(), signature)
    identity = {"type": "matchRepository"} if "/" not in signature else None
    report = judge(signed_by(vectors / key, identity), reference,
                   (vectors / manifest).read_bytes(), [blob])
    assert report.accepted is accepted, report.requirements


@pytest.mark.parametrize(("directory", "reference", "accepted"), [
    ("dir-img-valid-2", "testing/manifest:latest", True),
    ("dir-img-mixed", "testing/manifest:latest", True),
    ("dir-img-valid-2", "testing/manifest:notlatest", False),
    ("dir-img-unsigned", "testing/manifest:latest", False),
])
def test_containers_image_signature_directories(vectors: Path, directory: str, reference: str,
                                                accepted: bool) -> None:
    folder = vectors / directory
    signatures = [signature_from_blob(path.read_bytes(), path.name)
                  for path in sorted(folder.glob("signature-*"))]
    report = judge(signed_by(vectors / "public-key.gpg"), reference,
                   (folder / "manifest.json").read_bytes(), signatures)
    assert report.accepted is accepted, report.requirements
