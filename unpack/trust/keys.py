"""Where a requirement's trusted keys come from: `keyPath`, `keyPaths`, `keyData`, `keyDatas`.

Exactly one of the fields a requirement allows must be given (a `keyPath`
must not be empty; an empty `keyPaths` list is allowed and trusts nothing,
as containers/image reads it). Files are read when the requirement is
evaluated, so a key that cannot be read fails the unpack of an image its
scope covers, and only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unpack.errors import PolicyError
from unpack.trust import strictjson
from unpack.trust.strictjson import StrictJSONError

MAX_KEY_FILE_SIZE = 1 << 20


@dataclass(frozen=True)
class KeySources:
    """Key files and inline key data of one requirement (`prefix` names the fields)."""

    paths: tuple[str, ...] = ()
    data: tuple[bytes, ...] = ()

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], what: str, prefix: str = "key",
                    allow_datas: bool = False, required: bool = True) -> KeySources | None:
        """Read `{prefix}Path`, `{prefix}Paths`, `{prefix}Data` (and `{prefix}Datas`)."""
        names = [f"{prefix}Path", f"{prefix}Paths", f"{prefix}Data"]
        if allow_datas:
            names.append(f"{prefix}Datas")
        given = [name for name in names if name in fields]
        if len(given) > 1:
            raise StrictJSONError(f"{what}: only one of {', '.join(names)} may be given")
        if not given:
            if required:
                raise StrictJSONError(f"{what}: one of {', '.join(names)} must be given")
            return None
        name = given[0]
        value = fields[name]
        if name.endswith("Path"):
            path = strictjson.string(value, f"{what}.{name}")
            if not path:
                raise StrictJSONError(f"{what}.{name} is empty")
            return cls(paths=(path,))
        if name.endswith("Paths"):
            return cls(paths=strictjson.strings(value, f"{what}.{name}"))
        if name.endswith("Datas"):
            return cls(data=strictjson.base64_list(value, f"{what}.{name}"))
        return cls(data=(strictjson.base64_bytes(value, f"{what}.{name}"),))

    def load(self) -> list[tuple[str, bytes]]:
        """(where, bytes) of every key file and inline key."""
        loaded = [(path, read_config_file(path, MAX_KEY_FILE_SIZE, "key file"))
                  for path in self.paths]
        loaded += [(f"keyData #{i + 1}", data) for i, data in enumerate(self.data)]
        return loaded


def read_config_file(path: str, limit: int, what: str) -> bytes:
    """A file the policy configuration names (the policy itself, a key): at most `limit`
    bytes; a file that cannot be read, or is larger, is a PolicyError naming it."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except OSError as error:
        raise PolicyError(f"cannot read {what} {path}: {error.strerror}") from None
    if len(data) > limit:
        raise PolicyError(f"{what} {path} is larger than {limit} bytes")
    return data
