"""User namespaces and rootless bundles: ID mappings and `runc spec --rootless`'s shape.

A rootless bundle is run by an unprivileged user: it gets a user namespace, no
network namespace (it could not be configured), `/sys` bind-mounted instead of
a fresh sysfs, no cgroup resources, devpts without `gid=5`, and no
additional groups (runc refuses them to an unprivileged caller).

Mappings must cover the process user, or the runtime cannot start the process
as that user. Without explicit maps, root in the container is the unpacking
user; an image user other than root needs a subordinate ID range
(/etc/subuid, /etc/subgid and newuidmap/newgidmap on the host) — or, without
one, that user is mapped to the unpacking user instead of root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IdMapping = tuple[int, int, int]  # container, host, size


@dataclass(frozen=True)
class HostIds:
    """Who unpacks (the IDs the bundle's files belong to) and their subordinate ranges."""

    uid: int = 0
    gid: int = 0
    subuid: tuple[int, int] | None = None  # (start, count) from /etc/subuid
    subgid: tuple[int, int] | None = None


def parse_subid(text: str, name: str, host_id: int) -> tuple[int, int] | None:
    """The first `NAME_OR_ID:START:COUNT` range of /etc/subuid (or subgid) for this user."""
    for line in text.splitlines():
        fields = line.strip().split(":")
        if (
            len(fields) == 3
            and fields[0] in (name, str(host_id))
            and all(f.isascii() and f.isdecimal() for f in fields[1:])
            and int(fields[2]) > 0
        ):
            return int(fields[1]), int(fields[2])
    return None


def rootless_mappings(
    user_id: int, host_id: int, subordinate: tuple[int, int] | None
) -> list[IdMapping]:
    """Default mappings for a rootless bundle whose process runs as `user_id`."""
    if user_id == 0:
        return [(0, host_id, 1)]
    if subordinate is not None and user_id <= subordinate[1]:
        return [(0, host_id, 1), (1, subordinate[0], subordinate[1])]
    return [(user_id, host_id, 1)]


def covers(mappings: Sequence[IdMapping], container_id: int) -> bool:
    return any(start <= container_id < start + size for start, _, size in mappings)


def add_user_namespace(
    spec: dict[str, Any], uid_mappings: Sequence[IdMapping], gid_mappings: Sequence[IdMapping]
) -> None:
    """Give the bundle a user namespace with these mappings."""
    linux = spec["linux"]
    if not any(ns["type"] == "user" for ns in linux["namespaces"]):
        linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [_entry(m) for m in uid_mappings]
    linux["gidMappings"] = [_entry(m) for m in gid_mappings]
    user = spec["process"]["user"]
    extra = [g for g in user.get("additionalGids", []) if covers(gid_mappings, g)]
    if extra:
        user["additionalGids"] = extra
    else:
        user.pop("additionalGids", None)
    for mount in spec["mounts"]:
        if mount["type"] == "tmpfs":
            mount["options"] = [
                o for o in mount["options"] if not _unmapped_owner(o, uid_mappings, gid_mappings)
            ]


def make_rootless(spec: dict[str, Any]) -> None:
    """Reshape a default bundle config as `runc spec --rootless` does."""
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]
    linux.pop("resources", None)
    # runc refuses additionalGids when not run by root (setgroups is denied in a
    # user namespace set up without newgidmap); the bundle must run under runc.
    spec["process"]["user"].pop("additionalGids", None)
    for mount in spec["mounts"]:
        if mount["destination"] == "/sys":
            mount.update(
                type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"]
            )
        elif mount["type"] == "devpts":
            mount["options"] = [o for o in mount["options"] if not o.startswith("gid=")]


def _entry(mapping: IdMapping) -> dict[str, int]:
    container, host, size = mapping
    return {"containerID": container, "hostID": host, "size": size}


def _unmapped_owner(option: str, uids: Sequence[IdMapping], gids: Sequence[IdMapping]) -> bool:
    """tmpfs `uid=`/`gid=` options naming IDs the namespace does not map (mount would fail)."""
    for prefix, mappings in (("uid=", uids), ("gid=", gids)):
        value = option[len(prefix) :]
        if option.startswith(prefix) and value.isascii() and value.isdecimal():
            return not covers(mappings, int(value))
    return False
