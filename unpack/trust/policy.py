"""The signature policy file (containers-policy.json(5)), read as containers/image reads it.

    {"default": [REQUIREMENT…],
     "transports": {TRANSPORT: {SCOPE: [REQUIREMENT…], …}, …}}

The file is `--policy FILE`, else `~/.config/containers/policy.json`, else
`/etc/containers/policy.json`. It is parsed strictly: an unknown or
duplicated key, a wrong type, an empty requirement list or a scope a
transport cannot have is an error (`PolicyError`, exit 2), never ignored.
Scopes are validated for the transports containers/image validates:
`oci`, `oci-archive` and `dir` take absolute, clean paths other than `/`;
`docker-archive` and `docker-daemon` take only `""`.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpack.errors import PolicyError
from unpack.trust import strictjson
from unpack.trust.evaluation import Requirement
from unpack.trust.keys import read_config_file
from unpack.trust.requirements import parse_requirements
from unpack.trust.strictjson import StrictJSONError
from unpack.trust.subject import PolicySubject

SYSTEM_POLICY = "/etc/containers/policy.json"
USER_POLICY = ".config/containers/policy.json"
MAX_POLICY_SIZE = 4 << 20
_PATH_TRANSPORTS = ("oci", "oci-archive", "dir")
_NO_SCOPE_TRANSPORTS = ("docker-archive", "docker-daemon")


@dataclass(frozen=True)
class Scope:
    """Which section of the policy applied: a transport's scope, or `default`."""

    transport: str | None  # None: the top-level "default"
    name: str = ""

    def __str__(self) -> str:
        if self.transport is None:
            return "default"
        return f'transports.{self.transport}."{self.name}"'


@dataclass(frozen=True)
class Policy:
    """A parsed policy: the default requirements and those of each transport's scopes."""

    path: str
    default: tuple[Requirement, ...]
    transports: Mapping[str, Mapping[str, tuple[Requirement, ...]]]

    def requirements_for(self, subject: PolicySubject) -> tuple[Scope, tuple[Requirement, ...]]:
        """The most specific scope for `subject`, and its requirements."""
        scopes = self.transports.get(subject.transport)
        if scopes is not None:
            for name in (subject.identity, *subject.namespaces, ""):
                if name in scopes:
                    return Scope(subject.transport, name), scopes[name]
        return Scope(None), self.default


def policy_path(explicit: str | None) -> str | None:
    """`--policy`, else the user's policy, else the system's; None when there is none."""
    if explicit:
        return explicit
    user = os.path.join(os.path.expanduser("~"), USER_POLICY)
    for path in (user, SYSTEM_POLICY):
        if os.path.exists(path):
            return path
    return None


def load_policy(path: str) -> Policy:
    """Read and parse the policy file at `path`."""
    return parse_policy(read_config_file(path, MAX_POLICY_SIZE, "policy"), path)


def parse_policy(data: bytes | str, path: str) -> Policy:
    """Parse a policy document (`path` names it in errors)."""
    try:
        document = strictjson.obj(strictjson.load(data, "policy"), "policy",
                                  required=("default",), optional=("transports",))
        default = parse_requirements(document["default"], "default")
        transports = {
            name: _scopes(name, value)
            for name, value in _object(document.get("transports", {}), "transports").items()
        }
    except StrictJSONError as error:
        raise PolicyError(f"invalid policy {path}: {error}") from None
    return Policy(path, default, transports)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StrictJSONError(f"{what}: expected a JSON object")
    return value


def _scopes(transport: str, value: Any) -> dict[str, tuple[Requirement, ...]]:
    where = f"transports.{transport}"
    scopes = {}
    for scope, requirements in _object(value, where).items():
        _check_scope(transport, scope, where)
        scopes[scope] = parse_requirements(requirements, f'{where}."{scope}"')
    return scopes


def _check_scope(transport: str, scope: str, where: str) -> None:
    if scope == "":
        return
    if transport in _NO_SCOPE_TRANSPORTS:
        raise StrictJSONError(f'{where}: scope {scope!r}: {transport} takes only the "" scope')
    if transport in _PATH_TRANSPORTS:
        if not scope.startswith("/") or scope == "/":
            raise StrictJSONError(f"{where}: scope {scope!r} must be an absolute path, not /")
        if posixpath.normpath(scope) != scope or scope.startswith("//"):
            raise StrictJSONError(f"{where}: scope {scope!r} is not a clean path "
                                  f"(try {posixpath.normpath(scope)!r})")
