"""`registries.d`: where a registry image's signatures are (containers-registries.d(5)).

Every `*.yaml` file of the directory is read and merged: a `docker:` entry
(keyed by a scope as the policy's `docker` transport spells them, from
`host/ns/repo:tag` up to `*.domain`) or `default-docker` may be defined in
one file only. For an image, the most specific entry that sets a value wins:

- `lookaside` (or the older `sigstore`): the base URL of simple signatures,
  `file://` or `http(s)://`; without one, the built-in default directory
  (`/var/lib/containers/sigstore` for root, else
  `~/.local/share/containers/sigstore`);
- `use-sigstore-attachments`: whether to read cosign attachments.

The directory is `--registries.d DIR`, else `~/.config/containers/registries.d`
if it exists, else `/etc/containers/registries.d`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from unpack.errors import PolicyError

SYSTEM_DIRECTORY = "/etc/containers/registries.d"
USER_DIRECTORY = ".config/containers/registries.d"
ROOT_LOOKASIDE = "file:///var/lib/containers/sigstore"
USER_LOOKASIDE = ".local/share/containers/sigstore"


@dataclass(frozen=True)
class Namespace:
    """One `docker:` entry (or `default-docker`)."""

    lookaside: str = ""
    use_sigstore_attachments: bool | None = None


@dataclass(frozen=True)
class RegistriesD:
    """The merged configuration of a registries.d directory."""

    directory: str
    default: Namespace | None = None
    docker: dict[str, Namespace] = field(default_factory=dict)

    def _entries(self, identity: str, namespaces: tuple[str, ...]) -> list[Namespace]:
        """Most specific first: the image's own scope, its namespaces, then default-docker."""
        found = [self.docker[name] for name in (identity, *namespaces) if name in self.docker]
        return found + ([self.default] if self.default is not None else [])

    def lookaside(self, identity: str, namespaces: tuple[str, ...]) -> str:
        """The lookaside base URL for an image (the built-in default when none is set)."""
        for entry in self._entries(identity, namespaces):
            if entry.lookaside:
                return entry.lookaside
        if os.geteuid() == 0:
            return ROOT_LOOKASIDE
        return "file://" + quote(os.path.join(os.path.expanduser("~"), USER_LOOKASIDE))

    def use_sigstore_attachments(self, identity: str, namespaces: tuple[str, ...]) -> bool:
        for entry in self._entries(identity, namespaces):
            if entry.use_sigstore_attachments is not None:
                return entry.use_sigstore_attachments
        return False


def registries_d_directory(explicit: str | None) -> str:
    """`--registries.d`, else the user's directory if it exists, else the system's."""
    if explicit:
        return explicit
    user = os.path.join(os.path.expanduser("~"), USER_DIRECTORY)
    return user if os.path.isdir(user) else SYSTEM_DIRECTORY


def load_registries_d(directory: str) -> RegistriesD:
    """Read and merge `directory/*.yaml` (a missing directory is an empty configuration)."""
    import yaml  # only when signatures are looked for

    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return RegistriesD(directory)
    except OSError as error:
        raise PolicyError(f"registries.d {directory}: {error.strerror}") from None
    default: Namespace | None = None
    default_from = ""
    docker: dict[str, Namespace] = {}
    docker_from: dict[str, str] = {}
    for name in names:
        if not name.endswith(".yaml"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as file:
                document = yaml.safe_load(file.read(1 << 20))
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as error:
            raise PolicyError(f"registries.d file {path}: {_first_line(error)}") from None
        if document is None:
            continue
        if not isinstance(document, dict):
            raise PolicyError(f"registries.d file {path}: expected a mapping")
        if document.get("default-docker") is not None:
            if default is not None:
                raise PolicyError(
                    f'registries.d: "default-docker" defined both in {default_from} and {path}'
                )
            default, default_from = _namespace(document["default-docker"], path), path
        entries = document.get("docker") or {}
        if not isinstance(entries, dict):
            raise PolicyError(f"registries.d file {path}: docker: expected a mapping")
        for scope, entry in entries.items():
            if scope in docker:
                raise PolicyError(f'registries.d: "docker" namespace {scope!r} defined both in '
                                 f"{docker_from[scope]} and {path}")
            docker[str(scope)], docker_from[str(scope)] = _namespace(entry, path), path
    return RegistriesD(directory, default, docker)


def _namespace(value: Any, path: str) -> Namespace:
    if value is None:
        return Namespace()
    if not isinstance(value, dict):
        raise PolicyError(f"registries.d file {path}: an entry must be a mapping")
    lookaside = value.get("lookaside") or value.get("sigstore") or ""
    attachments = value.get("use-sigstore-attachments")
    if not isinstance(lookaside, str) or (
        attachments is not None and not isinstance(attachments, bool)
    ):
        raise PolicyError(f"registries.d file {path}: lookaside must be a URL and "
                         "use-sigstore-attachments true or false")
    return Namespace(lookaside, attachments)


def _first_line(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(text.split())
