"""Registry pull against Debian's docker-registry on 127.0.0.1: anonymous, basic auth over TLS,
bearer tokens, dropped connections, redirects, corruption, and the blob cache."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli
from registry import (
    PASSWORD,
    REGISTRY_BINARY,
    USER,
    FaultyProxy,
    Registry,
    TokenServer,
    build_source_image,
    htpasswd_file,
    make_ca,
    running_registry,
    tree,
)

from fixtures.images import build_multiarch

pytestmark = [
    pytest.mark.skipif(not os.path.exists(REGISTRY_BINARY),
                       reason="docker-registry is not installed (apt-get install docker-registry)"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed"),
]
CREDS = f"{USER}:{PASSWORD}"


@pytest.fixture(autouse=True)
def _own_home(no_user_auth_files: Path) -> None:
    """No logins, registries.conf or aliases of the machine's user."""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("registry")
    build_source_image(root / "layout")
    build_multiarch(root / "multiarch")
    run_cli(root / "layout", root / "expected", check=True)
    return root


@pytest.fixture(scope="module")
def plain(work: Path) -> Iterator[Registry]:
    """An anonymous plain-HTTP registry holding src:v1 and the multi-platform multi:latest."""
    with running_registry(work / "plain") as registry:
        registry.push(work / "layout", "latest", "src:v1")
        registry.push(work / "multiarch", "latest", "multi:latest", all_images=True)
        yield registry


def assert_same_as_layout(work: Path, bundle: Path) -> None:
    assert tree(bundle) == tree(work / "expected")
    expected = json.loads((work / "expected/config.json").read_text())
    assert json.loads((bundle / "config.json").read_text()) == expected


def pull(image: str, bundle: Path, *options: str | Path) -> None:
    result = run_cli("-q", *options, image, bundle)
    assert result.returncode == 0, result.stderr


# -- anonymous, plain HTTP ---------------------------------------------------------------------


def test_anonymous_pull(work: Path, plain: Registry, tmp_path: Path) -> None:
    pull(f"docker://{plain.host}/src:v1", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")


def test_pull_by_digest_and_inspect(work: Path, plain: Registry, tmp_path: Path) -> None:
    result = run_cli("inspect", "--json", "--tls-verify=false", f"docker://{plain.host}/src:v1")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["transport"] == "docker" and report["ref"] == "v1"
    assert report["entrypoint"] == ["/bin/sh"] and report["labels"] == {"test": "sources"}
    assert [layer["media_type"].rsplit(".", 1)[-1] for layer in report["layers"]] == [
        "tar+gzip"] * 3  # skopeo compresses the plain layer on push
    pull(f"docker://{plain.host}/src@{report['manifest']}", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")


def test_platform_pick_from_an_index(plain: Registry, tmp_path: Path) -> None:
    image = f"docker://{plain.host}/multi:latest"
    pull(image, tmp_path / "arm", "--tls-verify=false", "--platform", "linux/arm64")
    assert (tmp_path / "arm/rootfs/platform").read_text() == "linux/arm64/v8\n"
    pull(image, tmp_path / "s390x", "--tls-verify=false", "--platform", "linux/s390x")
    assert (tmp_path / "s390x/rootfs/platform").read_text() == "linux/s390x\n"
    result = run_cli("inspect", "--json", "--tls-verify=false", image)
    assert json.loads(result.stdout)["platforms"] == [
        "linux/amd64", "linux/arm/v7", "linux/arm64", "linux/s390x"]


def test_unknown_tag_and_repository(plain: Registry, tmp_path: Path) -> None:
    for image in (f"docker://{plain.host}/src:nope", f"docker://{plain.host}/missing:v1"):
        result = run_cli("--tls-verify=false", image, tmp_path / "b")
        assert result.returncode == 3, result.stderr
        assert "not found in docker://" in result.stderr and "404" in result.stderr
        assert not (tmp_path / "b").exists()


def test_plain_http_needs_tls_verify_false(plain: Registry, tmp_path: Path) -> None:
    result = run_cli(f"docker://{plain.host}/src:v1", tmp_path / "b")
    assert result.returncode == 5, result.stderr
    assert "TLS failure" in result.stderr and "--tls-verify=false" in result.stderr
    assert not (tmp_path / "b").exists()


def test_connection_refused_is_a_network_error(tmp_path: Path) -> None:
    from registry import free_port

    result = run_cli("--tls-verify=false", f"docker://127.0.0.1:{free_port()}/x:y", tmp_path / "b")
    assert result.returncode == 5 and "oci-unpack: error: 127.0.0.1:" in result.stderr


# -- a misbehaving network ---------------------------------------------------------------------


def test_dropped_connection_resumes_with_range(work: Path, plain: Registry, tmp_path: Path) -> None:
    with FaultyProxy(plain.host, drop_after=200_000).running() as proxy:
        pull(f"docker://{proxy.host}/src:v1", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")
    # only the 3 MiB layer is longer than the cut: it alone is resumed, from where it broke
    resumed = [r for r in proxy.blob_gets() if r[2] is not None]
    assert len(resumed) == 1 and resumed[0][2] == "bytes=200000-"
    assert [r[2] for r in proxy.blob_gets() if r[1] == resumed[0][1]] == [None, "bytes=200000-"]


def test_resume_when_the_server_ignores_range(
    work: Path, plain: Registry, tmp_path: Path
) -> None:
    """A 200 answer to a Range request is read from its start, skipping what was received."""
    with FaultyProxy(plain.host, drop_after=150_000, ignore_range=True).running() as proxy:
        pull(f"docker://{proxy.host}/src:v1", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")
    assert any(r[2] == "bytes=150000-" for r in proxy.blob_gets())


def test_redirects_to_blob_storage(work: Path, plain: Registry, tmp_path: Path) -> None:
    with FaultyProxy(plain.host, redirect=True).running() as proxy:
        pull(f"docker://{proxy.host}/src:v1", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")
    storage = [r for r in proxy.requests if r[1].startswith("/_storage/")]
    assert len(storage) == 4  # the config and three layers, each fetched through the redirect


def test_unavailable_answers_are_retried(work: Path, plain: Registry, tmp_path: Path) -> None:
    with FaultyProxy(plain.host, unavailable=2).running() as proxy:
        pull(f"docker://{proxy.host}/src:v1", tmp_path / "b", "--tls-verify=false")
    assert_same_as_layout(work, tmp_path / "b")
    assert proxy.requests[0][1] == proxy.requests[2][1] == "/v2/src/manifests/v1"


def test_corrupt_blob_from_the_network(plain: Registry, tmp_path: Path) -> None:
    with FaultyProxy(plain.host, corrupt=True).running() as proxy:
        result = run_cli("--tls-verify=false", f"docker://{proxy.host}/src:v1", tmp_path / "b")
    assert result.returncode == 3, result.stderr
    assert "digest is sha256:" in result.stderr
    assert not (tmp_path / "b").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["home"]  # no partial bundle left beside


# -- the blob cache ----------------------------------------------------------------------------


def test_cache_second_pull_reads_nothing(work: Path, plain: Registry, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FaultyProxy(plain.host).running() as proxy:
        image = f"docker://{proxy.host}/src:v1"
        pull(image, tmp_path / "b1", "--tls-verify=false", "--cache", cache)
        first = list(proxy.requests)
        assert len([r for r in first if "/blobs/" in r[1]]) == 4
        proxy.requests.clear()
        pull(image, tmp_path / "b2", "--tls-verify=false", "--cache", cache)
        # the cached tag is used as it is (--pull missing, the default): no request at all
        assert proxy.requests == []
        pull(image, tmp_path / "b2a", "--tls-verify=false", "--cache", cache, "--pull", "always")
        # --pull always asks what the tag names now: one HEAD; everything else is cached
        assert proxy.requests == [("HEAD", "/v2/src/manifests/v1", None)]
        digest = json.loads(run_cli("inspect", "--json", "--cache", cache, "--tls-verify=false",
                                    image).stdout)["manifest"]
    # the registry is gone now: a digest reference still unpacks, from the cache alone
    pull(f"docker://{proxy.host}/src@{digest}", tmp_path / "b3", "--cache", cache)
    for bundle in ("b1", "b2", "b2a", "b3"):
        assert_same_as_layout(work, tmp_path / bundle)
    # the cache is an OCI layout, tagged HOST/NAME:TAG
    pull(f"{cache}:{proxy.host}/src:v1", tmp_path / "b4")
    assert_same_as_layout(work, tmp_path / "b4")


def test_cache_keeps_no_unverified_blob(plain: Registry, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with FaultyProxy(plain.host, corrupt=True).running() as proxy:
        result = run_cli("--tls-verify=false", "--cache", cache, f"docker://{proxy.host}/src:v1",
                         tmp_path / "b")
    assert result.returncode == 3
    layers = json.loads(run_cli("inspect", "--json", "--tls-verify=false",
                                f"docker://{plain.host}/src:v1").stdout)["layers"]
    blobs = {p.name for p in (cache / "blobs/sha256").iterdir()}
    assert not any(layer["digest"].split(":")[1] in blobs for layer in layers)
    assert not any(name.startswith(".") for name in blobs)  # no temporary file left


# -- basic auth over TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure(work: Path) -> Iterator[Registry]:
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    certs = make_ca(work / "tls")
    with running_registry(work / "secure", certs=certs,
                          htpasswd=htpasswd_file(work / "tls")) as registry:
        registry.push(work / "layout", "latest", "src:v1", creds=CREDS)
        yield registry


def test_tls_with_cert_dir_and_creds(work: Path, secure: Registry, tmp_path: Path) -> None:
    assert secure.certs is not None
    pull(f"docker://{secure.host}/src:v1", tmp_path / "b", "--cert-dir", secure.certs.cert_dir,
         "--creds", CREDS)
    assert_same_as_layout(work, tmp_path / "b")


def test_tls_unknown_ca_is_refused(secure: Registry, tmp_path: Path) -> None:
    result = run_cli("--creds", CREDS, f"docker://{secure.host}/src:v1", tmp_path / "b")
    assert result.returncode == 5, result.stderr
    assert "certificate verify failed" in result.stderr and "--cert-dir" in result.stderr
    assert not (tmp_path / "b").exists()


def test_tls_verify_false_skips_verification(work: Path, secure: Registry, tmp_path: Path) -> None:
    pull(f"docker://{secure.host}/src:v1", tmp_path / "b", "--tls-verify=false", "--creds", CREDS)
    assert_same_as_layout(work, tmp_path / "b")


@pytest.mark.parametrize(("creds", "message"), [
    (None, "asks for a user name and password"),
    (f"{USER}:wrong", "refused the credentials"),
])
def test_basic_auth_failures(secure: Registry, tmp_path: Path, creds: str | None,
                             message: str) -> None:
    assert secure.certs is not None
    options = ["--cert-dir", str(secure.certs.cert_dir)]
    if creds:
        options += ["--creds", creds]
    result = run_cli(*options, f"docker://{secure.host}/src:v1", tmp_path / "b")
    assert result.returncode == 5, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("where", ["REGISTRY_AUTH_FILE", "docker-config", "--authfile"])
def test_credentials_from_auth_files(
    work: Path, secure: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import base64

    assert secure.certs is not None
    auth = {"auths": {secure.host: {"auth": base64.b64encode(CREDS.encode()).decode()}}}
    options = ["--cert-dir", str(secure.certs.cert_dir)]
    if where == "REGISTRY_AUTH_FILE":
        (tmp_path / "auth.json").write_text(json.dumps(auth))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    elif where == "docker-config":
        (tmp_path / "home/.docker").mkdir()
        (tmp_path / "home/.docker/config.json").write_text(json.dumps(auth))
    else:
        (tmp_path / "mine.json").write_text(json.dumps(auth))
        options += ["--authfile", str(tmp_path / "mine.json")]
    pull(f"docker://{secure.host}/src:v1", tmp_path / "b", *options)
    assert_same_as_layout(work, tmp_path / "b")


# -- bearer tokens -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token(work: Path) -> Iterator[tuple[Registry, TokenServer]]:
    (work / "token").mkdir()
    server = TokenServer(work / "token")
    with server.running(), running_registry(work / "token-registry", token=server) as registry:
        registry.push(work / "layout", "latest", "team/src:v1", creds=CREDS)
        yield registry, server


def test_token_flow_with_creds(
    work: Path, token: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    registry, server = token
    server.requests.clear()
    pull(f"docker://{registry.host}/team/src:v1", tmp_path / "b", "--tls-verify=false",
         "--creds", CREDS)
    assert_same_as_layout(work, tmp_path / "b")
    assert server.requests == [{"scope": "repository:team/src:pull", "user": USER,
                                "granted": True}]  # one token served the whole pull


def test_token_flow_anonymous(
    work: Path, token: tuple[Registry, TokenServer], tmp_path: Path
) -> None:
    registry, server = token
    result = run_cli("--tls-verify=false", f"docker://{registry.host}/team/src:v1",
                     tmp_path / "refused")
    assert result.returncode == 5 and "refused anonymous access (401)" in result.stderr
    assert not (tmp_path / "refused").exists()
    server.anonymous_pull = True
    try:
        pull(f"docker://{registry.host}/team/src:v1", tmp_path / "b", "--tls-verify=false")
    finally:
        server.anonymous_pull = False
    assert_same_as_layout(work, tmp_path / "b")
    assert server.requests[-1] == {"scope": "repository:team/src:pull", "user": None,
                                   "granted": True}


def test_token_flow_wrong_creds(token: tuple[Registry, TokenServer], tmp_path: Path) -> None:
    registry, _ = token
    result = run_cli("--tls-verify=false", "--creds", f"{USER}:nope",
                     f"docker://{registry.host}/team/src:v1", tmp_path / "b")
    assert result.returncode == 5 and "refused the credentials (401)" in result.stderr
