"""Lenient parsing of a rootfs's /etc/passwd and /etc/group, and lookups in them.

Like libcontainer's ``user`` package, the parsers never fail: blank lines, comments
and malformed lines are skipped, and the first matching entry wins a lookup. Unlike
libcontainer, a line whose uid or gid is not a number is skipped rather than read as
id 0, so a damaged line can never resolve to root.
"""

from dataclasses import dataclass

MAX_RUNTIME_ID = 2**31 - 1
"""The largest uid or gid accepted (libcontainer's limit, for 32-bit compatibility)."""


@dataclass(frozen=True)
class PasswdEntry:
    """One /etc/passwd line: ``name:password:uid:gid:gecos:home:shell``."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class GroupEntry:
    """One /etc/group line: ``name:password:gid:member,member,...``."""

    name: str
    gid: int
    members: tuple[str, ...]


def parse_id(text: str) -> int | None:
    """Return ``text`` as a uid/gid if it is ASCII digits within range, else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= MAX_RUNTIME_ID else None


def _records(data: bytes, min_fields: int) -> list[list[str]]:
    """Split passwd-format data into field lists, dropping blanks, comments, short lines."""
    records = []
    for raw in data.decode("utf-8", "surrogateescape").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) >= min_fields and fields[0]:
            records.append(fields)
    return records


def parse_passwd(data: bytes) -> list[PasswdEntry]:
    """Parse /etc/passwd contents; lines without a name or numeric uid and gid are skipped."""
    entries = []
    for fields in _records(data, 4):
        uid, gid = parse_id(fields[2]), parse_id(fields[3])
        if uid is None or gid is None:
            continue
        home = fields[5] if len(fields) > 5 else ""
        entries.append(PasswdEntry(fields[0], uid, gid, home))
    return entries


def parse_group(data: bytes) -> list[GroupEntry]:
    """Parse /etc/group contents; lines without a name or numeric gid are skipped."""
    entries = []
    for fields in _records(data, 3):
        gid = parse_id(fields[2])
        if gid is None:
            continue
        listed = fields[3].split(",") if len(fields) > 3 else []
        members = tuple(member.strip() for member in listed if member.strip())
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def find_user(users: list[PasswdEntry], key: str | int) -> PasswdEntry | None:
    """The first user named ``key`` (a str) or with uid ``key`` (an int), or None."""
    for user in users:
        if (user.uid == key) if isinstance(key, int) else (user.name == key):
            return user
    return None


def find_group(groups: list[GroupEntry], key: str | int) -> GroupEntry | None:
    """The first group named ``key`` (a str) or with gid ``key`` (an int), or None."""
    for group in groups:
        if (group.gid == key) if isinstance(key, int) else (group.name == key):
            return group
    return None


def supplementary_gids(groups: list[GroupEntry], user_name: str) -> tuple[int, ...]:
    """The gids of the groups listing ``user_name`` as a member, in file order, deduplicated."""
    gids: dict[int, None] = {}
    for group in groups:
        if user_name in group.members:
            gids.setdefault(group.gid)
    return tuple(gids)
