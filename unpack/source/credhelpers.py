"""Docker credential helpers: `docker-credential-NAME get`, the server on stdin, JSON out.

An auth file names them per registry (`credHelpers`) or for every registry it has no
entry for (`credsStore`). The helper answers `{"Username": …, "Secret": …}`; the user
name `<token>` makes the secret an identity token, exchanged at the token server for
an access token (OAuth2 `refresh_token` grant). "credentials not found" means none.

A helper that is missing, fails, takes longer than the timeout or answers something
else is a one-line error naming the helper — never its output, which may hold a
secret.
"""

from __future__ import annotations

import json
import shutil
import subprocess

from unpack.errors import NetworkError
from unpack.source.dockerref import DOCKER_HUB_HOSTS, DOCKER_HUB_LEGACY_URL

PROGRAM = "docker-credential-{}"
NOT_FOUND = "credentials not found"  # what helpers print when they hold nothing
IDENTITY_TOKEN_USER = "<token>"


def server_url(registry: str) -> str:
    """What a helper is asked for: the registry host (Docker Hub: its legacy URL)."""
    return DOCKER_HUB_LEGACY_URL if registry in DOCKER_HUB_HOSTS else registry


def run_helper(name: str, registry: str, origin: str, timeout: float
               ) -> tuple[str, str] | None:
    """(user name, secret) from helper `name` for `registry`, or None if it has none.
    `origin` says where the helper was named (for messages)."""
    program = PROGRAM.format(name)
    where = f"credential helper {program} ({origin})"
    path = shutil.which(program)
    if path is None:
        raise NetworkError(f"{where}: not found on PATH")
    try:
        done = subprocess.run([path, "get"], input=server_url(registry).encode(),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NetworkError(f"{where}: no answer within {timeout:g} s") from None
    except OSError as error:
        raise NetworkError(f"{where}: cannot run it ({error.strerror})") from None
    if done.returncode != 0:
        if NOT_FOUND in done.stdout.decode(errors="replace").lower() + \
                done.stderr.decode(errors="replace").lower():
            return None
        raise NetworkError(f"{where}: failed (exit {done.returncode}) for {registry}")
    try:
        answer = json.loads(done.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError):
        raise NetworkError(f"{where}: its answer for {registry} is not the expected JSON "
                           "(Username, Secret)") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        raise NetworkError(f"{where}: its answer for {registry} has no usable "
                           "Username and Secret")
    return username, secret
