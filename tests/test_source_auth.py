"""Registry credentials and challenges: --creds, auth files and their search order, parsing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from unpack.errors import UsageError
from unpack.source.auth import (
    Challenge,
    Credentials,
    auth_files,
    find_credentials,
    parse_challenges,
    parse_creds,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and no auth-related environment."""
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


def write_auth(path: Path, auths: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def test_parse_creds() -> None:
    assert parse_creds("user:pa:ss") == Credentials("user", "pa:ss")
    assert parse_creds("user:") == Credentials("user", "")
    for bad in ("nocolon", ":pass", ""):
        with pytest.raises(UsageError, match="USER:PASS"):
            parse_creds(bad)


def test_basic_header() -> None:
    assert Credentials("a", "b:c").basic() == "Basic " + b64("a:b:c")


def test_search_order(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert auth_files() == [
        str(tmp_path / "env.json"),
        str(tmp_path / "run/containers/auth.json"),
        str(home / ".config/containers/auth.json"),
        str(home / ".docker/config.json"),
    ]
    assert auth_files("/explicit.json") == ["/explicit.json"]


def test_first_file_with_an_entry_wins(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_auth(home / ".docker/config.json", {"reg.example:5000": {"auth": b64("docker:1")}})
    assert find_credentials("reg.example:5000", "app") == Credentials("docker", "1")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    write_auth(tmp_path / "run/containers/auth.json",
               {"reg.example:5000": {"auth": b64("podman:2")}})
    assert find_credentials("reg.example:5000", "app") == Credentials("podman", "2")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    write_auth(tmp_path / "env.json", {"other.example": {"auth": b64("x:y")}})
    # the env file has no entry for this registry: the next file answers
    assert find_credentials("reg.example:5000", "app") == Credentials("podman", "2")
    assert find_credentials("other.example", "app") == Credentials("x", "y")
    assert find_credentials("third.example", "app") is None


def test_repository_scoped_and_legacy_keys(home: Path) -> None:
    write_auth(home / ".docker/config.json", {
        "reg.example/team/app": {"auth": b64("scoped:1")},
        "reg.example": {"username": "host", "password": "2"},
        "https://index.docker.io/v1/": {"auth": b64("hub:3")},
    })
    assert find_credentials("reg.example", "team/app") == Credentials("scoped", "1")
    assert find_credentials("reg.example", "team/other") == Credentials("host", "2")
    assert find_credentials("docker.io", "library/busybox") == Credentials("hub", "3")


def test_explicit_authfile(home: Path, tmp_path: Path) -> None:
    path = write_auth(tmp_path / "mine.json", {"r.example": {"auth": b64("me:pw")}})
    write_auth(home / ".docker/config.json", {"r.example": {"auth": b64("other:pw")}})
    assert find_credentials("r.example", "a", str(path)) == Credentials("me", "pw")
    with pytest.raises(UsageError, match="no such file"):
        find_credentials("r.example", "a", str(tmp_path / "missing.json"))


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "invalid JSON"),
    (json.dumps({"auths": {"r.example": {"auth": "***"}}}), "not base64"),
    (json.dumps({"auths": {"r.example": {"auth": b64("nocolon")}}}), "not USER:PASS"),
])
def test_broken_auth_files_are_named(home: Path, content: str, message: str) -> None:
    path = home / ".docker/config.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(UsageError, match=message) as excinfo:
        find_credentials("r.example", "a")
    assert str(path) in str(excinfo.value)


def test_entries_without_credentials_are_skipped(home: Path) -> None:
    write_auth(home / ".docker/config.json", {"r.example": {"identitytoken": "t"}})
    assert find_credentials("r.example", "a") is None


@pytest.mark.parametrize(("header", "expected"), [
    ('Bearer realm="https://auth.example/token",service="registry.example",'
     'scope="repository:a/b:pull,push"',
     [Challenge("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                           "scope": "repository:a/b:pull,push"})]),
    ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
    ('Basic realm="a, b", Bearer realm="x\\"y", error=invalid_token',
     [Challenge("basic", {"realm": "a, b"}),
      Challenge("bearer", {"realm": 'x"y', "error": "invalid_token"})]),
    ("BEARER REALM=https://a/t", [Challenge("bearer", {"realm": "https://a/t"})]),
    ("", []),
])
def test_parse_challenges(header: str, expected: list[Challenge]) -> None:
    assert parse_challenges(header) == expected
