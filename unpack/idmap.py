"""User and group ID mappings (`container:host:size`), as umoci and runc use them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from unpack.errors import LayerError, UsageError

#: The largest ID a file can have: uid_t/gid_t are 32 bits, and (uid_t)-1 means
#: "leave unchanged" to chown.
MAX_FILE_ID = 2**32 - 2


@dataclass(frozen=True)
class IdRange:
    """`size` container IDs from `container` map to host IDs from `host`."""

    container: int
    host: int
    size: int

    @classmethod
    def parse(cls, text: str, option: str) -> IdRange:
        """Parse `container:host:size`."""
        fields = text.split(":")
        if len(fields) != 3 or not all(f.isascii() and f.isdecimal() for f in fields):
            raise UsageError(f"{option} {text!r}: expected CONTAINER:HOST:SIZE (numbers)")
        container, host, size = map(int, fields)
        if size < 1 or container + size - 1 > MAX_FILE_ID or host + size - 1 > MAX_FILE_ID:
            raise UsageError(f"{option} {text!r}: size must be >= 1 and the IDs must fit uid_t")
        return cls(container, host, size)

    def to_runtime(self) -> dict[str, int]:
        """This range as a runtime-spec `linux.uidMappings` entry."""
        return {"containerID": self.container, "hostID": self.host, "size": self.size}


@dataclass(frozen=True)
class IdMap:
    """A set of ranges; empty means identity (IDs are used as they are)."""

    ranges: tuple[IdRange, ...] = ()
    kind: str = "uid"

    @classmethod
    def parse(cls, texts: Iterable[str], kind: str) -> IdMap:
        option = f"--{kind}-map"
        ranges = tuple(IdRange.parse(text, option) for text in texts)
        spans = sorted((r.container, r.container + r.size) for r in ranges)
        if any(end > start for (_, end), (start, _) in itertools.pairwise(spans)):
            raise UsageError(f"{option}: container ranges overlap")
        return cls(ranges, kind)

    def to_host(self, container_id: int) -> int:
        """The host ID for a container ID; LayerError if the map does not cover it."""
        if not self.ranges:
            return container_id
        for r in self.ranges:
            if r.container <= container_id < r.container + r.size:
                return r.host + container_id - r.container
        raise LayerError(f"{self.kind} {container_id} is not covered by --{self.kind}-map")

    def covers(self, container_id: int) -> bool:
        return not self.ranges or any(
            r.container <= container_id < r.container + r.size for r in self.ranges
        )
