"""Resolving an image config ``User`` against the rootfs's /etc/passwd and /etc/group.

The rules are libcontainer's ``GetExecUser`` (what runc and docker do), made strict
about syntax:

* ``User`` is ``user`` or ``user:group``; each part is a name or a decimal id.
  More than one ``:``, an empty part, or an id above :data:`~.passwd.MAX_RUNTIME_ID` is an error.
* A name must exist (user in /etc/passwd, group in /etc/group), else it is an error.
  A numeric uid absent from /etc/passwd is used as is with gid 0; a numeric gid
  absent from /etc/group is used as is.
* Without a group part, the gid is the passwd entry's and the additional gids are the
  /etc/group groups listing the user's name as a member. This also holds for a numeric
  uid found in /etc/passwd (libcontainer; conversion.md's SHOULD NOT is not followed so
  that a bundle behaves as the same image does under docker). With a group part, there
  are no additional gids.
* An empty ``User`` means uid 0 in that implicit form (root's passwd gid and groups).
* The home directory is the passwd entry's, or ``/`` when there is no entry or it is empty.
"""

from dataclasses import dataclass

from unpack.config.passwd import (
    MAX_RUNTIME_ID,
    find_group,
    find_user,
    parse_group,
    parse_id,
    parse_passwd,
    supplementary_gids,
)
from unpack.errors import ConfigError


@dataclass(frozen=True)
class ExecUser:
    """The identity the container process runs as."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str


def _id_or_name(spec: str, part: str, kind: str) -> int | str:
    """``part`` as an id if it is all digits (checking the range), else as a name."""
    if not (part.isascii() and part.isdigit()):
        return part
    value = parse_id(part)
    if value is None:
        raise ConfigError(
            f'image config User "{spec}": {kind} {part} is out of range 0-{MAX_RUNTIME_ID}'
        )
    return value


def _split(spec: str) -> tuple[int | str, int | str | None]:
    """Split ``User`` into its user and optional group part (ids as ints)."""
    if spec == "":
        return 0, None
    parts = spec.split(":")
    if len(parts) > 2 or "" in parts:
        raise ConfigError(
            f'image config User "{spec}": expected user, uid, user:group, uid:gid, '
            "user:gid or uid:group"
        )
    user = _id_or_name(spec, parts[0], "uid")
    group = _id_or_name(spec, parts[1], "gid") if len(parts) == 2 else None
    return user, group


def _missing(spec: str, what: str, path: str, present: bool) -> ConfigError:
    """The error for a user or group name that the rootfs does not define."""
    where = f"in {path}" if present else f"(the image has no {path})"
    return ConfigError(f'image config User "{spec}": no such {what} {where}')


def resolve_user(spec: str, passwd: bytes | None, group: bytes | None) -> ExecUser:
    """Resolve ``User`` given the rootfs's /etc/passwd and /etc/group (None when absent)."""
    user_key, group_key = _split(spec)
    users = parse_passwd(passwd) if passwd is not None else []
    groups = parse_group(group) if group is not None else []

    entry = find_user(users, user_key)
    if entry is not None:
        uid, gid, home = entry.uid, entry.gid, entry.home or "/"
    elif isinstance(user_key, int):
        uid, gid, home = user_key, 0, "/"
    else:
        raise _missing(spec, "user", "/etc/passwd", passwd is not None)

    additional: tuple[int, ...] = ()
    if isinstance(group_key, int):
        gid = group_key
    elif group_key is not None:
        found = find_group(groups, group_key)
        if found is None:
            raise _missing(spec, f'group "{group_key}"', "/etc/group", group is not None)
        gid = found.gid
    elif entry is not None:
        additional = supplementary_gids(groups, entry.name)
    return ExecUser(uid, gid, additional, home)
