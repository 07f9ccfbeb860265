"""containers-registries.conf(5), version 2, read as containers/image reads it.

Where a registry name is pulled from — `[[registry]]` entries matched by the longest
`prefix` (`*.example.com` for subdomains), their `location`, `insecure`, `blocked`, and
`[[registry.mirror]]` endpoints tried first (`pull-from-mirror`) — and how short names
resolve: `[aliases]`, `unqualified-search-registries`, `short-name-mode`.

Files: `--registries-conf FILE`, else `~/.config/containers/registries.conf` if it
exists, else `/etc/containers/registries.conf`; then the drop-ins `*.conf`, in name
order, of `/etc/containers/registries.conf.d` and `~/.config/containers/registries.conf.d`
(only the latter with the user's file). A drop-in replaces the entries of the same
prefix, the search list and the mode if it sets them, and adds aliases. The version 1
tables (`[registries.search]`, `.insecure`, `.block`) are converted. No file: an empty
configuration (names go where they say, no search registries).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from unpack.errors import NetworkError, UsageError
from unpack.source.dockerref import is_qualified

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SYSTEM_FILE = "/etc/containers/registries.conf"
SYSTEM_DIR = "/etc/containers/registries.conf.d"
USER_FILE = ".config/containers/registries.conf"  # under $HOME
USER_DIR = ".config/containers/registries.conf.d"
ALIAS_CACHE = ".cache/containers/short-name-aliases.conf"
MODES = ("enforcing", "permissive", "disabled")
PULL_FROM_MIRROR = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Endpoint:
    """A place to pull from: `location` (HOST[:PORT][/NAMESPACE…]) and how."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = "all"  # mirrors only: which references they serve


@dataclass(frozen=True)
class Registry:
    """A `[[registry]]` entry."""

    prefix: str
    endpoint: Endpoint  # location "" for a wildcard prefix: the name's own host
    blocked: bool = False
    mirrors: tuple[Endpoint, ...] = ()


@dataclass(frozen=True)
class PullSource:
    """One endpoint to try for a name, and the name there."""

    endpoint: Endpoint
    name: str  # HOST[:PORT]/PATH[:TAG|@DIGEST], rewritten for the endpoint
    mirror: bool


@dataclass
class RegistriesConf:
    """The merged configuration, and where each part came from (for messages)."""

    registries: dict[str, Registry] = field(default_factory=dict)  # by prefix
    search: tuple[str, ...] | None = None
    search_origin: str = ""
    short_name_mode: str | None = None
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (to, file)
    files: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.short_name_mode or "enforcing"

    def find(self, name: str) -> Registry | None:
        """The entry with the longest prefix matching `name` (fully qualified), if any."""
        best: Registry | None = None
        for registry in self.registries.values():
            if _prefix_match(name, registry.prefix) >= 0 and (
                    best is None or len(registry.prefix) > len(best.prefix)):
                best = registry
        return best

    def pull_sources(self, name: str, digested: bool) -> list[PullSource]:
        """Where to pull `name` from, in order: its mirrors that serve such a reference,
        then its location (the name itself without an entry). `BlockedError` if its
        registry is blocked."""
        registry = self.find(name)
        if registry is None:
            return [PullSource(Endpoint(_host_of(name)), name, mirror=False)]
        if registry.blocked:
            raise BlockedError(f"{name}: the registry is blocked in "
                               f"{self.described()} (prefix {registry.prefix!r})")
        wanted = ("all", "digest-only") if digested else ("all", "tag-only")
        sources = [PullSource(mirror, _rewrite(name, registry.prefix, mirror.location), True)
                   for mirror in registry.mirrors if mirror.pull_from_mirror in wanted]
        location = registry.endpoint.location
        sources.append(PullSource(
            replace(registry.endpoint, location=location or _host_of(name)),
            _rewrite(name, registry.prefix, location) if location else name, mirror=False))
        return sources

    def described(self) -> str:
        return ", ".join(self.files) or "no registries.conf"


class BlockedError(NetworkError):
    """The name's registry is `blocked` in registries.conf (exit 5, as a refusal)."""


def load(path: str | None = None, home: str | None = None) -> RegistriesConf:
    """Read the configuration as containers/image does (see the module's docstring)."""
    home = home if home is not None else os.path.expanduser("~")
    user_file = os.path.join(home, USER_FILE)
    conf = RegistriesConf()
    if path is not None:
        main, dirs = path, [SYSTEM_DIR, os.path.join(home, USER_DIR)]
        if not os.path.isfile(path):
            raise UsageError(f"--registries-conf {path}: no such file")
    elif os.path.exists(user_file):
        main, dirs = user_file, [os.path.join(home, USER_DIR)]
    else:
        main, dirs = SYSTEM_FILE, [SYSTEM_DIR, os.path.join(home, USER_DIR)]
    if os.path.isfile(main):
        _merge(conf, _read(main, v1_allowed=True), main)
    for directory in dirs:
        for drop_in in _drop_ins(directory):
            _merge(conf, _read(drop_in, v1_allowed=False), drop_in)
    cache = os.path.join(home, ALIAS_CACHE)
    if os.path.isfile(cache):
        for name, (to, _) in _aliases(_read(cache, v1_allowed=False), cache).items():
            conf.aliases.setdefault(name, (to, cache))  # the configured ones come first
    return conf


def _drop_ins(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names
            if n.endswith(".conf") and os.path.isfile(os.path.join(directory, n))]


def _read(path: str, v1_allowed: bool) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise UsageError(f"{path}: cannot read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from None
    if "registries" in data and isinstance(data["registries"], dict):
        if not v1_allowed:
            raise UsageError(f"{path}: the version 1 format is not allowed in a drop-in")
        if set(data) - {"registries"}:
            raise UsageError(f"{path}: mixes the version 1 and version 2 formats")
        return _from_v1(data["registries"], path)
    return data


def _from_v1(tables: dict[str, Any], path: str) -> dict[str, Any]:
    """[registries.search|insecure|block] registries = [...] as version 2."""
    def hosts(kind: str) -> list[str]:
        table = tables.get(kind, {})
        if not isinstance(table, dict):
            raise UsageError(f"{path}: [registries.{kind}] must be a table")
        value = table.get("registries", [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{path}: [registries.{kind}] registries must list strings")
        return value

    entries: dict[str, dict[str, Any]] = {}
    for host in hosts("insecure"):
        entries.setdefault(host, {"location": host})["insecure"] = True
    for host in hosts("block"):
        entries.setdefault(host, {"location": host})["blocked"] = True
    converted: dict[str, Any] = {"registry": list(entries.values())}
    if "search" in tables:
        converted["unqualified-search-registries"] = hosts("search")
    return converted


def _merge(conf: RegistriesConf, data: dict[str, Any], path: str) -> None:
    conf.files.append(path)
    for registry in _registries(data.get("registry", []), path):
        conf.registries[registry.prefix] = registry
    search = data.get("unqualified-search-registries")
    if search is not None:
        if not isinstance(search, list) or not all(isinstance(s, str) for s in search):
            raise UsageError(f"{path}: unqualified-search-registries must list strings")
        conf.search, conf.search_origin = tuple(s.rstrip("/") for s in search if s), path
    mode = data.get("short-name-mode")
    if mode is not None:
        if mode not in MODES:
            raise UsageError(f"{path}: short-name-mode {mode!r}: expected one of "
                             f"{', '.join(MODES)}")
        conf.short_name_mode = mode
    conf.aliases.update(_aliases(data, path))


def _aliases(data: dict[str, Any], path: str) -> dict[str, tuple[str, str]]:
    table = data.get("aliases", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [aliases] must be a table")
    aliases = {}
    for name, to in table.items():
        if not isinstance(to, str) or not is_qualified(to):
            raise UsageError(f"{path}: alias {name!r} = {to!r}: the value must be a fully "
                             "qualified name (HOST/PATH)")
        aliases[name] = (to, path)
    return aliases


def _tables(items: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise UsageError(f"{what} must be an array of tables")
    return items


def _registries(items: Any, path: str) -> Iterable[Registry]:
    for item in _tables(items, f"{path}: [[registry]]"):
        where = f"{path}: [[registry]] {item.get('prefix') or item.get('location')!r}"
        location = _location(item.get("location", ""), where)
        prefix = _location(item.get("prefix", ""), where) or location
        if not prefix:
            raise UsageError(f"{where}: neither prefix nor location is set")
        if not location and not prefix.startswith("*."):
            raise UsageError(f"{where}: location is unset and prefix is not *.DOMAIN")
        if "pull-from-mirror" in item:
            raise UsageError(f"{where}: pull-from-mirror is for mirrors only")
        by_digest = _flag(item, "mirror-by-digest-only", where)
        mirrors = []
        for mirror in _tables(item.get("mirror", []), f"{where}: mirror"):
            pull = mirror.get("pull-from-mirror", "")
            if pull and pull not in PULL_FROM_MIRROR:
                raise UsageError(f"{where}: pull-from-mirror {pull!r}: expected one of "
                                 f"{', '.join(PULL_FROM_MIRROR)}")
            if pull and by_digest:
                raise UsageError(f"{where}: mirror-by-digest-only and pull-from-mirror "
                                 "cannot both be set")
            mirror_location = _location(mirror.get("location", ""), where)
            if not mirror_location:
                raise UsageError(f"{where}: a mirror has no location")
            mirrors.append(Endpoint(mirror_location, _flag(mirror, "insecure", where),
                                    "digest-only" if by_digest else pull or "all"))
        yield Registry(prefix, Endpoint(location, _flag(item, "insecure", where)),
                       _flag(item, "blocked", where), tuple(mirrors))


def _location(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{where}: a location or prefix must be a string")
    value = value.rstrip("/")
    if value.startswith(("http://", "https://")):
        raise UsageError(f"{where}: {value!r}: URI schemes are not supported")
    return value


def _flag(table: dict[str, Any], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} must be true or false")
    return value


def _prefix_match(name: str, prefix: str) -> int:
    """The length of `prefix` in `name` if it matches there (containers/image's rule: a
    whole prefix followed by its end, ':', '/' or '@'; `*.DOMAIN` within the host), else
    -1."""
    if prefix.startswith("*."):
        index = name.find(prefix[1:])
        if index < 0 or "/" in name[:index]:
            return -1
        end = index + len(prefix) - 1
        return end if end == len(name) or name[end] in ":/@" else -1
    if name == prefix:
        return len(prefix)
    if name.startswith(prefix) and name[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def _rewrite(name: str, prefix: str, location: str) -> str:
    """`name` with its matched prefix replaced by `location`."""
    if prefix.startswith("*."):
        return name
    return location + name[_prefix_match(name, prefix):]


def _host_of(name: str) -> str:
    return name.split("/", 1)[0]

