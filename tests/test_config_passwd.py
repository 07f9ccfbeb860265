"""Tests for unpack.config.passwd: lenient /etc/passwd and /etc/group parsing."""

from unpack.config.passwd import (
    MAX_RUNTIME_ID as MAX_ID,
)
from unpack.config.passwd import (
    GroupEntry,
    PasswdEntry,
    find_group,
    find_user,
    parse_group,
    parse_id,
    parse_passwd,
    supplementary_gids,
)

PASSWD = b"""root:x:0:0:root:/root:/bin/bash
# a comment
  # an indented comment

daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\r
not a passwd line
short:x:5
evil:x:zero:0::/:/bin/sh
neg:x:-1:0::/:/bin/sh
huge:x:4294967295:0::/:/bin/sh
:x:7:7::/:/bin/sh
nohome:x:1001:1001
bob:x:1000:1000:Bob:/home/bob:/bin/sh
bob:x:2000:2000:second bob:/other:/bin/sh
caf\xc3\xa9:x:1002:1002::/home/cafe:/bin/sh
bad\xff:x:1003:1003::/home/bad:/bin/sh
"""

GROUP = b"""root:x:0:
wheel:x:10:root, bob ,,
# comment
users:x:100:bob
nomembers:x:101
bad:x:zz:bob
short:x
wheel:x:11:bob,bob
"""


def test_parse_passwd_skips_comments_blank_and_malformed_lines() -> None:
    users = parse_passwd(PASSWD)
    assert [user.name for user in users] == [
        "root",
        "daemon",
        "nohome",
        "bob",
        "bob",
        "café",
        "bad\udcff",
    ]
    assert users[0] == PasswdEntry("root", 0, 0, "/root")
    assert users[1] == PasswdEntry("daemon", 1, 1, "/usr/sbin")
    assert users[2] == PasswdEntry("nohome", 1001, 1001, "")


def test_parse_group_members_are_trimmed_and_empty_ones_dropped() -> None:
    groups = parse_group(GROUP)
    assert groups == [
        GroupEntry("root", 0, ()),
        GroupEntry("wheel", 10, ("root", "bob")),
        GroupEntry("users", 100, ("bob",)),
        GroupEntry("nomembers", 101, ()),
        GroupEntry("wheel", 11, ("bob", "bob")),
    ]


def test_parse_empty_data() -> None:
    assert parse_passwd(b"") == []
    assert parse_group(b"\n\n# only comments\n") == []


def test_parse_id() -> None:
    assert parse_id("0") == 0
    assert parse_id("0042") == 42
    assert parse_id(str(MAX_ID)) == MAX_ID
    for text in ("", "-1", "+1", " 1", "1.0", "x", "\u0661", str(MAX_ID + 1)):
        assert parse_id(text) is None, text


def test_find_user_first_match_wins_by_name_or_uid() -> None:
    users = parse_passwd(PASSWD)
    assert find_user(users, "bob") == PasswdEntry("bob", 1000, 1000, "/home/bob")
    assert find_user(users, 2000) == PasswdEntry("bob", 2000, 2000, "/other")
    assert find_user(users, 0) == users[0]
    assert find_user(users, "0") is None
    assert find_user(users, "evil") is None
    assert find_user(users, 4242) is None
    assert find_user([], "root") is None


def test_find_group_first_match_wins_by_name_or_gid() -> None:
    groups = parse_group(GROUP)
    assert find_group(groups, "wheel") == GroupEntry("wheel", 10, ("root", "bob"))
    assert find_group(groups, 11) == GroupEntry("wheel", 11, ("bob", "bob"))
    assert find_group(groups, "bad") is None
    assert find_group(groups, "100") is None


def test_supplementary_gids_in_file_order_without_duplicates() -> None:
    groups = parse_group(GROUP + b"again:x:10:bob\n")
    assert supplementary_gids(groups, "bob") == (10, 100, 11)
    assert supplementary_gids(groups, "root") == (10,)
    assert supplementary_gids(groups, "nobody") == ()
