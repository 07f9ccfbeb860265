"""The signature policy: strict parsing, scope precedence, signedIdentity rules, registries.d."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from unpack.errors import PolicyError
from unpack.source.dockerref import parse_normalized
from unpack.trust.identity import (
    ExactReference,
    ExactRepository,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
    parse_identity_rule,
)
from unpack.trust.policy import Scope, parse_policy, policy_path
from unpack.trust.registriesd import ROOT_LOOKASIDE, load_registries_d, registries_d_directory
from unpack.trust.requirements import InsecureAcceptAnything, Reject, SignedBaseLayer
from unpack.trust.signedby import SignedBy
from unpack.trust.sigstoresigned import SigstoreSigned
from unpack.trust.strictjson import StrictJSONError
from unpack.trust.subject import docker_archive_subject, docker_subject, path_subject

ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]
GPG = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/a.gpg"}
COSIGN = {"type": "sigstoreSigned", "keyPath": "/keys/cosign.pub"}
FULCIO = {"caPath": "/ca.pem", "oidcIssuer": "https://issuer", "subjectEmail": "a@example"}
DIGEST = "sha256:" + "01" * 32
OTHER_DIGEST = "sha256:" + "aa" * 32


def policy(document: dict[str, Any]) -> Any:
    return parse_policy(json.dumps(document), "test-policy.json")


# -- parsing ----------------------------------------------------------------------------------


def test_every_requirement_and_identity_form_parses() -> None:
    identities = [
        {"type": "matchRepoDigestOrExact"}, {"type": "matchExact"}, {"type": "matchRepository"},
        {"type": "exactReference", "dockerReference": "quay.io/a/b:1"},
        {"type": "exactRepository", "dockerRepository": "quay.io/a/b"},
        {"type": "remapIdentity", "prefix": "mirror.local/x", "signedPrefix": "quay.io/a"},
    ]
    document = {
        "default": REJECT,
        "transports": {
            "docker": {
                "": ACCEPT,
                **{f"quay.io/r{i}": [{**GPG, "signedIdentity": identity}]
                   for i, identity in enumerate(identities)},
                "quay.io/paths": [{**GPG, "keyPath": None, "keyPaths": ["/a", "/b"]}],
                "quay.io/data": [{**{k: v for k, v in GPG.items() if k != "keyPath"},
                                  "keyData": base64.b64encode(b"key").decode()}],
                "quay.io/cosign": [COSIGN],
                "quay.io/cosign-datas": [{"type": "sigstoreSigned",
                                          "keyDatas": [base64.b64encode(b"k").decode()]}],
                "quay.io/fulcio": [{"type": "sigstoreSigned", "fulcio": FULCIO,
                                    "rekorPublicKeyPath": "/rekor.pub"}],
                "quay.io/pki": [{"type": "sigstoreSigned", "pki": {
                    "caRootsPath": "/roots.pem", "caIntermediatesPath": "/i.pem",
                    "subjectHostname": "builder.example"}}],
                "quay.io/base": [{"type": "signedBaseLayer",
                                  "baseLayerIdentity": {"type": "matchRepository"}}],
                "*.example.com": ACCEPT,
            },
            "oci": {"/srv/images": REJECT, "": ACCEPT},
            "oci-archive": {"/srv/archives/a.tar": ACCEPT},
            "docker-archive": {"": REJECT},
            "containers-storage": {"anything-goes": ACCEPT},
        },
    }
    document["transports"]["docker"]["quay.io/paths"][0].pop("keyPath")
    parsed = policy(document)
    docker = parsed.transports["docker"]
    assert isinstance(parsed.default[0], Reject)
    assert isinstance(docker[""][0], InsecureAcceptAnything)
    kinds = [type(docker[f"quay.io/r{i}"][0].identity) for i in range(len(identities))]
    assert kinds == [MatchRepoDigestOrExact, MatchExact, MatchRepository, ExactReference,
                     ExactRepository, RemapIdentity]
    assert docker["quay.io/paths"][0].keys.paths == ("/a", "/b")
    assert docker["quay.io/data"][0].keys.data == (b"key",)
    assert isinstance(docker["quay.io/cosign"][0], SigstoreSigned)
    assert docker["quay.io/fulcio"][0].certificates.oidc_issuer == "https://issuer"
    assert docker["quay.io/pki"][0].certificates.kind == "pki"
    assert isinstance(docker["quay.io/base"][0], SignedBaseLayer)
    gpg = docker["quay.io/r0"][0]
    assert isinstance(gpg, SignedBy) and isinstance(gpg.identity, MatchRepoDigestOrExact)


@pytest.mark.parametrize(("document", "message"), [
    ({}, "'default' is missing"),
    ({"default": []}, "must not be empty"),
    ({"default": ACCEPT, "extra": 1}, "unknown key 'extra'"),
    ('{"default": [{"type": "reject"}], "default": []}', "duplicate key 'default'"),
    ({"default": [{"type": "rejectt"}]}, "unknown policy requirement type"),
    ({"default": [{"type": "reject", "x": 1}]}, "unknown key 'x'"),
    ({"default": [{"type": "insecureAcceptAnything", "keyPath": "/a"}]}, "unknown key"),
    ({"default": [{**GPG, "keyType": "SSHKeys"}]}, "unrecognised keyType"),
    ({"default": [{**GPG, "keyPaths": ["/b"]}]}, "only one of"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}, "must be given"),
    ({"default": [{**GPG, "keyPath": ""}]}, "is empty"),
    ({"default": [{**GPG, "keyPath": 3}]}, "expected a string"),
    ({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "!!"}]}, "base64"),
    ({"default": [{**GPG, "signedIdentity": {"type": "matchExact", "x": 1}}]}, "unknown key"),
    ({"default": [{**GPG, "signedIdentity": {"type": "exactReference",
                                             "dockerReference": "quay.io/a"}}]},
     "neither a tag nor a digest"),
    ({"default": [{**GPG, "signedIdentity": {"type": "exactRepository",
                                             "dockerRepository": "UPPER"}}]}, "lowercase"),
    ({"default": [{**GPG, "signedIdentity": {"type": "remapIdentity", "prefix": "a b",
                                             "signedPrefix": "quay.io"}}]}, "not valid"),
    ({"default": [{**GPG, "signedIdentity": {"type": "matchFuzzy"}}]}, "unknown signedIdentity"),
    ({"default": [{"type": "sigstoreSigned"}]}, "must be given"),
    ({"default": [{**COSIGN, "fulcio": {}, "rekorPublicKeyPath": "/r"}]}, "exactly one of"),
    ({"default": [{"type": "sigstoreSigned", "fulcio": FULCIO}]}, "fulcio needs"),
    ({"default": [{"type": "sigstoreSigned", "fulcio": {"caPath": "/ca"},
                   "rekorPublicKeyPath": "/r"}]}, "oidcIssuer and subjectEmail"),
    ({"default": [{"type": "sigstoreSigned", "fulcio": {**FULCIO, "caData": "eA=="},
                   "rekorPublicKeyPath": "/r"}]}, "exactly one of caPath and caData"),
    ({"default": [{"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectEmail": "a"},
                   "rekorPublicKeyPath": "/r"}]}, "cannot be used with pki"),
    ({"default": [{"type": "sigstoreSigned", "pki": {"caRootsPath": "/r"}}]},
     "subjectEmail or subjectHostname"),
    ({"default": ACCEPT, "transports": {"oci": {"relative/dir": ACCEPT}}}, "absolute path"),
    ({"default": ACCEPT, "transports": {"oci": {"/": ACCEPT}}}, "absolute path"),
    ({"default": ACCEPT, "transports": {"oci-archive": {"/a/../b": ACCEPT}}}, "not a clean path"),
    ({"default": ACCEPT, "transports": {"docker-archive": {"/a.tar": ACCEPT}}}, 'only the ""'),
    ({"default": ACCEPT, "transports": {"docker": []}}, "expected a JSON object"),
    ("[]", "expected a JSON object"),
    ("{", "invalid JSON"),
])
def test_malformed_policies_are_errors(document: Any, message: str) -> None:
    text = document if isinstance(document, str) else json.dumps(document)
    with pytest.raises(PolicyError) as excinfo:
        parse_policy(text, "p.json")
    assert "invalid policy p.json" in str(excinfo.value)
    assert message in str(excinfo.value)


def test_cli_malformed_policy_is_a_usage_error(tmp_path: Path, images: Path) -> None:
    bad = tmp_path / "policy.json"
    bad.write_text('{"default": [{"type": "signedBy"}]}')
    result = run_cli("--policy", bad, f"{images}/busybox:latest", tmp_path / "bundle")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid policy" in result.stderr
    assert not (tmp_path / "bundle").exists()
    missing = run_cli("--policy", tmp_path / "nope.json", f"{images}/busybox", tmp_path / "b")
    assert missing.returncode == 2 and "No such file" in missing.stderr


def test_policy_file_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert policy_path("/explicit.json") == "/explicit.json"
    user = tmp_path / ".config/containers/policy.json"
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"default": ACCEPT}))
    assert policy_path(None) == str(user)


# -- scopes ------------------------------------------------------------------------------------


def _scope_of(document: dict[str, Any], subject: Any) -> str:
    scope, _ = policy(document).requirements_for(subject)
    return str(scope)


def test_docker_scopes_from_most_to_least_specific() -> None:
    image = docker_subject(parse_normalized("registry.example.com:5000/team/sub/app:v1"))
    assert image.identity == "registry.example.com:5000/team/sub/app:v1"
    assert image.namespaces == (
        "registry.example.com:5000/team/sub/app", "registry.example.com:5000/team/sub",
        "registry.example.com:5000/team", "registry.example.com:5000",
        "*.example.com", "*.com",
    )
    scopes = ["registry.example.com:5000/team/sub/app:v1", *image.namespaces, ""]
    for index, expected in enumerate(scopes):
        document = {"default": REJECT,
                    "transports": {"docker": {name: ACCEPT for name in scopes[index:]}}}
        assert _scope_of(document, image) == str(Scope("docker", expected))
    assert _scope_of({"default": REJECT, "transports": {"oci": {"": ACCEPT}}}, image) == "default"


def test_docker_digest_and_hub_identities() -> None:
    by_digest = docker_subject(parse_normalized(f"quay.io/a/b@{DIGEST}"))
    assert by_digest.identity == f"quay.io/a/b@{DIGEST}"
    hub = docker_subject(parse_normalized("busybox"))
    assert hub.identity == "docker.io/library/busybox:latest"
    assert hub.namespaces == ("docker.io/library/busybox", "docker.io/library", "docker.io",
                              "*.io")
    assert str(hub) == "docker://docker.io/library/busybox:latest"


def test_path_scopes(tmp_path: Path) -> None:
    real = tmp_path / "real" / "layout"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real.parent)
    image = path_subject("oci", str(tmp_path / "link" / "layout"))
    assert image.identity == str(real)
    assert image.namespaces[0] == str(real.parent) and "/" not in image.namespaces
    document = {"default": REJECT, "transports": {"oci": {str(real.parent): ACCEPT}}}
    assert _scope_of(document, image) == f'transports.oci."{real.parent}"'
    archive = docker_archive_subject("busybox:1")
    assert archive.identity == "" and str(archive.docker_reference) == \
        "docker.io/library/busybox:1"
    assert _scope_of({"default": ACCEPT, "transports": {"docker-archive": {"": REJECT}}},
                     archive) == 'transports.docker-archive.""'


# -- signedIdentity ----------------------------------------------------------------------------


IDENTITY_CASES = [
    # (rule, image reference, signed reference, matches)
    (MatchRepoDigestOrExact(), "quay.io/a:1", "quay.io/a:1", True),
    (MatchRepoDigestOrExact(), "quay.io/a:1", "quay.io/a:2", False),
    (MatchRepoDigestOrExact(), f"quay.io/a@{DIGEST}", "quay.io/a:2", True),
    (MatchRepoDigestOrExact(), f"quay.io/a@{DIGEST}", f"quay.io/a@{OTHER_DIGEST}", True),
    (MatchRepoDigestOrExact(), f"quay.io/a@{DIGEST}", "quay.io/b:2", False),
    (MatchRepoDigestOrExact(), f"quay.io/a@{DIGEST}", "quay.io/a", False),  # name only
    (MatchRepoDigestOrExact(), "busybox:latest", "docker.io/library/busybox:latest", True),
    (MatchRepoDigestOrExact(), "quay.io/a:1", "UPPER", False),
    (MatchExact(), "quay.io/a:1", "quay.io/a:1", True),
    (MatchExact(), f"quay.io/a@{DIGEST}", f"quay.io/a@{DIGEST}", True),
    (MatchExact(), f"quay.io/a@{DIGEST}", "quay.io/a:1", False),
    (MatchExact(), "quay.io/a:1", "quay.io/a:2", False),
    (MatchRepository(), "quay.io/a:1", "quay.io/a:2", True),
    (MatchRepository(), "quay.io/a:1", f"quay.io/a@{DIGEST}", True),
    (MatchRepository(), "quay.io/a:1", "quay.io/ab:1", False),
    (ExactReference("quay.io/signed:v9"), "quay.io/a:1", "quay.io/signed:v9", True),
    (ExactReference("quay.io/signed:v9"), "quay.io/signed:v9", "quay.io/signed:v8", False),
    (ExactRepository("quay.io/signed"), "quay.io/a:1", "quay.io/signed:anything", True),
    (ExactRepository("quay.io/signed"), "quay.io/a:1", "quay.io/other:1", False),
    (RemapIdentity("mirror.local/x", "quay.io/team"), "mirror.local/x/app:1",
     "quay.io/team/app:1", True),
    (RemapIdentity("mirror.local/x", "quay.io/team"), "mirror.local/x/app:1",
     "mirror.local/x/app:1", False),
    (RemapIdentity("mirror.local/x", "quay.io/team"), "mirror.local/xy/app:1",
     "mirror.local/xy/app:1", True),  # not under the prefix: matched as it is
    (RemapIdentity("mirror.local", "quay.io"), f"mirror.local/a@{DIGEST}", "quay.io/a:1", True),
    (RemapIdentity("docker.io", "quay.io"), "busybox:1", "quay.io/library/busybox:1", True),
]


@pytest.mark.parametrize(("rule", "image", "signed", "expected"), IDENTITY_CASES)
def test_identity_rules(rule: Any, image: str, signed: str, expected: bool) -> None:
    assert rule.matches(parse_normalized(image), signed) is expected


@pytest.mark.parametrize("rule", [MatchRepoDigestOrExact(), MatchExact(), MatchRepository()])
def test_images_without_a_docker_name_match_nothing(rule: Any) -> None:
    assert rule.matches(None, "quay.io/a:1") is False


def test_identity_rule_from_json() -> None:
    rule = parse_identity_rule({"type": "remapIdentity", "prefix": "docker.io",
                                "signedPrefix": "quay.io/mirror"}, "si")
    assert rule == RemapIdentity("docker.io", "quay.io/mirror")
    with pytest.raises(StrictJSONError):
        parse_identity_rule("matchExact", "si")


# -- registries.d ------------------------------------------------------------------------------


def test_registries_d_most_specific_entry_wins(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "default-docker:\n  lookaside: https://sigs.example/default\n"
        "docker:\n  quay.io:\n    lookaside: file:///host\n    use-sigstore-attachments: true\n"
    )
    (tmp_path / "b.yaml").write_text(
        "docker:\n  quay.io/team:\n    sigstore: file:///team\n"
        "  quay.io/team/app:\n    use-sigstore-attachments: false\n"
    )
    (tmp_path / "ignored.yml").write_text("not: [valid")
    config = load_registries_d(str(tmp_path))
    app = docker_subject(parse_normalized("quay.io/team/app:1"))
    other = docker_subject(parse_normalized("quay.io/other/x:1"))
    elsewhere = docker_subject(parse_normalized("ghcr.io/x:1"))
    assert config.lookaside(app.identity, app.namespaces) == "file:///team"
    assert config.lookaside(other.identity, other.namespaces) == "file:///host"
    assert config.lookaside(elsewhere.identity, elsewhere.namespaces) == \
        "https://sigs.example/default"
    assert config.use_sigstore_attachments(app.identity, app.namespaces) is False
    assert config.use_sigstore_attachments(other.identity, other.namespaces) is True
    assert config.use_sigstore_attachments(elsewhere.identity, elsewhere.namespaces) is False


def test_registries_d_defaults_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = load_registries_d(str(tmp_path / "missing"))
    if os.geteuid() == 0:
        assert empty.lookaside("quay.io/a:1", ()) == ROOT_LOOKASIDE
    (tmp_path / "one.yaml").write_text("default-docker:\n  lookaside: file:///a\n")
    (tmp_path / "two.yaml").write_text("default-docker:\n  lookaside: file:///b\n")
    with pytest.raises(PolicyError, match="default-docker"):
        load_registries_d(str(tmp_path))
    (tmp_path / "two.yaml").write_text("docker: [1, 2\n")
    with pytest.raises(PolicyError, match=r"two\.yaml"):
        load_registries_d(str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert registries_d_directory(None) == "/etc/containers/registries.d"
    (tmp_path / ".config/containers/registries.d").mkdir(parents=True)
    assert registries_d_directory(None) == str(tmp_path / ".config/containers/registries.d")
    assert registries_d_directory("/x") == "/x"
