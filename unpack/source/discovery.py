"""From a name to a registry source: short names, mirrors, blocked and insecure registries.

A short name (`busybox`, `team/app:1`) becomes fully qualified as podman makes it
(containers/image's `shortnames`): an alias first (`[aliases]` of registries.conf, then
`~/.cache/containers/short-name-aliases.conf`), else each `unqualified-search-registries`
entry in turn. `short-name-mode`: `enforcing` refuses a choice among several search
registries (oci-unpack never prompts), `permissive` and `disabled` try them in order.

Each fully qualified name is then pulled from the first of its pull sources that has
it: the mirrors of its `[[registry]]` entry that serve such a reference, then its
location. A mirror is trusted for bandwidth only: every byte is verified against the
digests the chosen manifest names, as from any registry, and the signature policy
judges the name that was asked for, not the mirror.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from unpack.errors import NetworkError, UnpackError, UsageError
from unpack.source.base import SourceOptions
from unpack.source.dockerref import InvalidReference, is_qualified, parse_normalized
from unpack.source.registriesconf import RegistriesConf, load
from unpack.source.registryref import RegistryReference
from unpack.verify import Digest

if TYPE_CHECKING:
    from unpack.source.registry import RegistrySource


@dataclass(frozen=True)
class Resolved:
    """The fully qualified references to try for what the user wrote, and why."""

    candidates: tuple[RegistryReference, ...]
    rationale: str | None  # None: the name was fully qualified already


def registry_reference(text: str) -> RegistryReference:
    """A fully qualified `HOST/PATH[:TAG][@DIGEST]` as a RegistryReference (tag `latest` when
    neither is given)."""
    parsed = parse_normalized(text)
    tag = "latest" if parsed.name_only else parsed.tag
    digest = None if parsed.digest is None else Digest.parse(parsed.digest)
    return RegistryReference(parsed.domain, parsed.path, tag, digest)


def resolve_short_name(text: str, conf: RegistriesConf) -> Resolved:
    """The candidates for IMAGE `text`, a Docker reference without a transport."""
    try:
        parsed = parse_normalized(text)
    except InvalidReference as error:
        raise UsageError(f"{text}: {error}") from None
    if is_qualified(text):
        return Resolved((registry_reference(text),), None)
    short, suffix = _split_tag(text)
    alias = conf.aliases.get(short)
    if alias is not None:
        to, origin = alias
        return Resolved((registry_reference(to + suffix),), f"alias in {origin}")
    search = conf.search or ()
    if not search:
        where = conf.search_origin or conf.described()
        raise UsageError(f"{text}: a short name with no alias and no unqualified-search "
                         f"registries ({where}); write the full name, e.g. "
                         f"docker://{parsed}")
    candidates = tuple(registry_reference(f"{registry}/{text}") for registry in search)
    if len(candidates) > 1 and conf.mode == "enforcing":
        names = ", ".join(f"{c.registry}/{c.repository}" for c in candidates)
        raise UsageError(f"{text}: short name is ambiguous in enforcing mode ({names}; "
                         f"{conf.search_origin}); use a fully qualified name or an alias")
    return Resolved(candidates, f"unqualified-search registries in {conf.search_origin}")


def _split_tag(text: str) -> tuple[str, str]:
    """`team/app:1@sha256:…` → ("team/app", ":1@sha256:…")."""
    name, at, digest = text.partition("@")
    suffix = f"@{digest}" if at else ""
    head, colon, tag = name.rpartition(":")
    if colon and "/" not in tag:
        return head, f":{tag}{suffix}"
    return name, suffix


def open_registry(candidates: tuple[RegistryReference, ...], options: SourceOptions,
                  conf: RegistriesConf) -> tuple[RegistrySource, RegistryReference]:
    """A RegistrySource at the first pull source of the first candidate that has the
    manifest, and that candidate (the name asked for: what the policy judges)."""
    failures: list[str] = []
    last: UnpackError | None = None
    for logical in candidates:
        name = f"{logical.registry}/{logical.repository}"
        name += f"@{logical.digest}" if logical.digest else f":{logical.tag}"
        try:
            sources = conf.pull_sources(name, digested=logical.digest is not None)
        except NetworkError as blocked:
            failures.append(str(blocked))
            last = blocked
            continue
        for source in sources:
            wanted = replace(options, tls_verify=False) if source.endpoint.insecure else options
            registry = _registry_source(registry_reference(source.name), wanted)
            if len(candidates) == 1 and len(sources) == 1:
                return registry, logical  # no choice to make: nothing sent until asked
            try:
                registry.top()
            except UnpackError as error:
                registry.close()
                where = "mirror" if source.mirror else "registry"
                failures.append(f"{where} {source.endpoint.location}: {error}")
                last = error
                continue
            return registry, logical
    assert last is not None
    if len(failures) == 1:
        raise last
    raise type(last)(f"no pull source has the image: {'; '.join(failures)}")


def _registry_source(reference: RegistryReference, options: SourceOptions) -> RegistrySource:
    from unpack.source.registry import RegistrySource  # loads requests only when needed

    return RegistrySource(reference, options)


def load_conf(options: SourceOptions) -> RegistriesConf:
    """The registries.conf in force for these options."""
    return load(options.registries_conf)
