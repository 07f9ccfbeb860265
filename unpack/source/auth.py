"""Registry authentication: credentials, auth files and the WWW-Authenticate challenge flow.

Credentials come from `--creds USER:PASS`, else from the first auth file
that has something for the registry: `--authfile`, `$REGISTRY_AUTH_FILE`,
`$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`. In each file, a
`credHelpers` helper for the registry first, then the `auths` entries (most
specific key first), then the `credsStore` helper (see `credhelpers`).

A request answered 401 carries a challenge. `Basic` is answered with the
credentials; `Bearer realm=...,service=...,scope=...` by asking the realm
(the token server) for a token — with the credentials as basic auth when
there are some, anonymously otherwise — and sending `Bearer TOKEN`.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from unpack.errors import NetworkError, UsageError
from unpack.source.dockerref import DOCKER_HUB_HOSTS, DOCKER_HUB_LEGACY_URL

_WORD = re.compile(r"[\s,]*([A-Za-z0-9_.+-]+)")
_VALUE = re.compile(r'\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')


@dataclass(frozen=True)
class Credentials:
    """A user name and password for basic auth and token requests — or an identity token
    (a credential helper's `<token>`), exchanged at the token server."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic(self) -> str:
        """The value of an `Authorization: Basic ...` header."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def parse_creds(text: str) -> Credentials:
    """`--creds USER:PASS` (the password may contain `:`)."""
    username, colon, password = text.partition(":")
    if not colon or not username:
        raise UsageError("--creds: expected USER:PASS")
    return Credentials(username, password)


def auth_files(authfile: str | None = None) -> list[str]:
    """The auth files searched, in order."""
    if authfile:
        return [authfile]
    files = []
    env = os.environ
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(env["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    home = os.path.expanduser("~")
    config_home = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    files.append(os.path.join(config_home, "containers", "auth.json"))
    if env.get("DOCKER_CONFIG"):
        files.append(os.path.join(env["DOCKER_CONFIG"], "config.json"))
    files.append(os.path.join(home, ".docker", "config.json"))
    return files


def find_credentials(
    registry: str, repository: str, authfile: str | None = None, helper_timeout: float = 15.0
) -> Credentials | None:
    """The credentials the auth files hold or name a helper for, for `registry`."""
    wanted = list(_keys(registry, repository))
    for path in auth_files(authfile):
        data = _read_auth_file(path, explicit=authfile is not None)
        helpers = data.get("credHelpers")
        helpers = helpers if isinstance(helpers, dict) else {}
        for key in (registry, *_hub_aliases(registry)):
            if isinstance(helpers.get(key), str):
                return _from_helper(helpers[key], registry, f"credHelpers in {path}",
                                    helper_timeout)
        auths = data.get("auths")
        normalised = {_normalise_key(key): value for key, value in auths.items()} \
            if isinstance(auths, dict) else {}
        for key in wanted:
            entry = normalised.get(key)
            credentials = _entry_credentials(entry, path, key) if entry is not None else None
            if credentials is not None:
                return credentials
        store = data.get("credsStore")
        if isinstance(store, str) and store:
            found = _from_helper(store, registry, f"credsStore in {path}", helper_timeout)
            if found is not None:
                return found
    return None


def _from_helper(name: str, registry: str, origin: str, timeout: float
                 ) -> Credentials | None:
    from unpack.source.credhelpers import IDENTITY_TOKEN_USER, run_helper

    answer = run_helper(name, registry, origin, timeout)
    if answer is None:
        return None
    username, secret = answer
    if username == IDENTITY_TOKEN_USER:
        return Credentials(username, "", identity_token=secret)
    return Credentials(username, secret)


def _hub_aliases(registry: str) -> tuple[str, ...]:
    if registry not in DOCKER_HUB_HOSTS:
        return ()
    return (*(k for k in DOCKER_HUB_HOSTS if k != registry), DOCKER_HUB_LEGACY_URL)


def _keys(registry: str, repository: str) -> Iterator[str]:
    """`host/a/b`, `host/a`, `host` — then the Docker Hub aliases."""
    parts = repository.split("/")
    for end in range(len(parts), 0, -1):
        yield f"{registry}/{'/'.join(parts[:end])}"
    yield registry
    if registry in DOCKER_HUB_HOSTS:
        yield from (key for key in DOCKER_HUB_HOSTS if key != registry)


def _normalise_key(key: str) -> str:
    """`https://index.docker.io/v1/` → `index.docker.io` (Docker's legacy key form)."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
            key = re.sub(r"/v[12]/?$", "", key)
    return key.rstrip("/")


def _read_auth_file(path: str, explicit: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = json.loads(file.read(1 << 20))
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"--authfile {path}: no such file") from None
        return {}
    except OSError as error:
        raise UsageError(f"auth file {path}: {error.strerror}") from None
    except ValueError as error:
        raise UsageError(f"auth file {path}: invalid JSON ({error})") from None
    return data if isinstance(data, dict) else {}


def _entry_credentials(entry: object, path: str, key: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            pair = base64.b64decode(encoded, validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"auth file {path}: entry {key!r}: 'auth' is not base64") from None
        username, colon, password = pair.partition(":")
        if not colon:
            raise UsageError(f"auth file {path}: entry {key!r}: 'auth' is not USER:PASS")
        return Credentials(username, password)
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credentials(username, password)
    return None


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: a scheme and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a `WWW-Authenticate` header: `Bearer realm="...",scope="a:b:pull,push"`, ..."""
    challenges: list[Challenge] = []
    position = 0
    while match := _WORD.match(header, position):
        word, position = match.group(1), match.end()
        value = _VALUE.match(header, position)
        if value and challenges:
            quoted = value.group(1)
            text = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else value.group(2)
            challenges[-1].params[word.lower()] = text
            position = value.end()
        else:
            challenges.append(Challenge(word.lower(), {}))
    return challenges


class Authorizer:
    """Answers a registry's 401 challenges; remembers the Authorization header that worked."""

    def __init__(
        self,
        session: requests.Session,
        credentials: Credentials | None,
        default_scope: str,
        timeout: float,
        verify: bool = True,
    ) -> None:
        self._verify = verify
        self._session = session
        self.credentials = credentials
        self._default_scope = default_scope
        self._timeout = timeout
        self.header: str | None = None

    def headers(self) -> dict[str, str]:
        """The Authorization header to send, if any is known yet."""
        return {"Authorization": self.header} if self.header else {}

    def answer(self, response: requests.Response, where: str) -> None:
        """Obtain a new Authorization header from a 401 response, or raise NetworkError."""
        header = response.headers.get("WWW-Authenticate", "")
        challenges = {c.scheme: c for c in parse_challenges(header)}
        if "bearer" in challenges:
            self.header = "Bearer " + self._token(challenges["bearer"], where)
        elif "basic" in challenges:
            if self.credentials is None:
                raise NetworkError(
                    f"{where}: the registry asks for a user name and password "
                    "(give --creds USER:PASS or log in with skopeo/podman/docker)"
                )
            if self.credentials.identity_token is not None:
                raise NetworkError(f"{where}: the registry asks for a user name and password, "
                                   "and the credential helper gave an identity token")
            if self.header == self.credentials.basic():
                raise NetworkError(f"{where}: the registry refused the credentials (401)")
            self.header = self.credentials.basic()
        else:
            raise NetworkError(
                f"{where}: 401 Unauthorized with no usable challenge ({header or 'none'})"
            )

    def _token(self, challenge: Challenge, where: str) -> str:
        realm = challenge.params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            raise NetworkError(f"{where}: bearer challenge without a usable realm ({realm!r})")
        params = {"scope": challenge.params.get("scope") or self._default_scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        identity = self.credentials.identity_token if self.credentials else None
        try:
            if identity is not None:  # OAuth2: the identity token is a refresh token
                reply = self._session.post(realm, data={
                    **params, "grant_type": "refresh_token", "refresh_token": identity,
                    "client_id": "oci-unpack"}, timeout=self._timeout, verify=self._verify)
            else:
                headers = {"Authorization": self.credentials.basic()} if self.credentials \
                    else {}
                reply = self._session.get(realm, params=params, headers=headers,
                                          timeout=self._timeout, verify=self._verify)
        except requests.RequestException as error:
            raise NetworkError(f"token server {realm}: {error_reason(error)}") from None
        with reply:
            if reply.status_code in (401, 403):
                raise NetworkError(
                    f"{where}: the token server {realm} refused "
                    f"{'the credentials' if self.credentials else 'anonymous access'} "
                    f"({reply.status_code})"
                )
            if reply.status_code != 200:
                raise NetworkError(f"token server {realm}: HTTP {reply.status_code}")
            try:
                body = reply.json()
            except ValueError:
                raise NetworkError(f"token server {realm}: the answer is not JSON") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise NetworkError(f"token server {realm}: no token in the answer")
        return token


def error_reason(error: BaseException) -> str:
    """A short reason for a network failure: its innermost cause, in words, without the
    libraries' reprs ("connection refused", "the connection closed after 20000 bytes of
    820485")."""
    inner = _innermost(error)
    if isinstance(inner, http.client.IncompleteRead):
        got = inner.partial if isinstance(inner.partial, int) else len(inner.partial)
        total = f" of {got + inner.expected}" if isinstance(inner.expected, int) else ""
        return f"the connection closed after {got} bytes{total}"
    if isinstance(inner, socket.gaierror):
        return f"cannot resolve the host name ({inner.strerror})"
    if isinstance(inner, TimeoutError | socket.timeout) or "timed out" in str(inner):
        return "timed out"
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed ({inner.verify_message})"
    if isinstance(inner, ssl.SSLError):
        return (inner.reason or str(inner)).lower().replace("_", " ")
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror[:1].lower() + inner.strerror[1:]
    text = str(inner)
    match = re.search(r"\(Caused by (\w+)\((.*)\)\)\s*$", text)
    return f"{match.group(1)}: {match.group(2)}" if match else text


def _innermost(error: BaseException) -> BaseException:
    """Follow `reason`, exception arguments and `__cause__` down to the first failure."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        reason = getattr(error, "reason", None)
        inner = reason if isinstance(reason, BaseException) else next(
            (a for a in reversed(error.args) if isinstance(a, BaseException)), error.__cause__)
        if inner is None:
            break
        error = inner
    return error
