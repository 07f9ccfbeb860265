"""Tests for unpack.config.user: resolving an image config User in all its forms."""

import pytest

from unpack.config.user import ExecUser, resolve_user
from unpack.errors import ConfigError

PASSWD = b"""root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bob:x:1000:1000:Bob:/home/bob:/bin/sh
nohome:x:1001:1001:::/bin/sh
1234:x:1500:1500:numeric name:/home/n:/bin/sh
"""

GROUP = b"""root:x:0:
wheel:x:10:root,bob
staff:x:50:bob,alice
bob:x:1000:
users:x:100:bob,nohome
1234:x:1600:
"""


def resolve(spec: str) -> ExecUser:
    return resolve_user(spec, PASSWD, GROUP)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # user: passwd gid, home and /etc/group memberships
        ("bob", ExecUser(1000, 1000, (10, 50, 100), "/home/bob")),
        ("daemon", ExecUser(1, 1, (), "/usr/sbin")),
        # uid found in passwd: same as its name (libcontainer)
        ("1000", ExecUser(1000, 1000, (10, 50, 100), "/home/bob")),
        # uid absent from passwd: gid 0, home /
        ("4242", ExecUser(4242, 0, (), "/")),
        # a numeric part is always an id, never a name
        ("1234", ExecUser(1234, 0, (), "/")),
        # user:group and user:gid: no additional gids
        ("bob:staff", ExecUser(1000, 50, (), "/home/bob")),
        ("bob:4242", ExecUser(1000, 4242, (), "/home/bob")),
        ("bob:0", ExecUser(1000, 0, (), "/home/bob")),
        # uid:gid and uid:group
        ("1000:50", ExecUser(1000, 50, (), "/home/bob")),
        ("4242:4243", ExecUser(4242, 4243, (), "/")),
        ("4242:staff", ExecUser(4242, 50, (), "/")),
        ("1000:1234", ExecUser(1000, 1234, (), "/home/bob")),
        # an empty home is /
        ("nohome", ExecUser(1001, 1001, (100,), "/")),
        # empty User is root in the implicit form
        ("", ExecUser(0, 0, (10,), "/root")),
        ("root", ExecUser(0, 0, (10,), "/root")),
        ("0", ExecUser(0, 0, (10,), "/root")),
        ("0:0", ExecUser(0, 0, (), "/root")),
    ],
)
def test_user_forms(spec: str, expected: ExecUser) -> None:
    assert resolve(spec) == expected


def test_without_passwd_and_group_files() -> None:
    assert resolve_user("", None, None) == ExecUser(0, 0, (), "/")
    assert resolve_user("4242", None, None) == ExecUser(4242, 0, (), "/")
    assert resolve_user("4242:77", None, None) == ExecUser(4242, 77, (), "/")
    assert resolve_user("bob", PASSWD, None) == ExecUser(1000, 1000, (), "/home/bob")


def test_empty_user_with_passwd_but_no_root_entry() -> None:
    assert resolve_user("", b"bob:x:1000:1000::/home/bob:/bin/sh\n", GROUP) == ExecUser(
        0, 0, (), "/"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alice", 'image config User "alice": no such user in /etc/passwd'),
        ("alice:staff", 'image config User "alice:staff": no such user in /etc/passwd'),
        ("bob:nogroup", 'image config User "bob:nogroup": no such group "nogroup" in /etc/group'),
        ("4242:nogroup", 'image config User "4242:nogroup": no such group "nogroup" in /etc/group'),
        ("-1", 'image config User "-1": no such user in /etc/passwd'),
        ("99999999999", 'image config User "99999999999": uid 99999999999 is out of range'),
        ("bob:2147483648", 'image config User "bob:2147483648": gid 2147483648 is out of range'),
    ],
)
def test_unknown_names_and_bad_ids_are_errors(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(spec)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("spec", ["a:b:c", "bob:staff:", ":", "bob:", ":staff", "::"])
def test_malformed_user_is_an_error(spec: str) -> None:
    with pytest.raises(ConfigError, match=f'image config User "{spec}": expected user, uid'):
        resolve(spec)


def test_missing_files_are_named_in_errors() -> None:
    with pytest.raises(ConfigError, match=r'"bob": no such user \(the image has no /etc/passwd\)'):
        resolve_user("bob", None, GROUP)
    with pytest.raises(ConfigError, match=r'no such group "staff" \(the image has no /etc/group\)'):
        resolve_user("bob:staff", PASSWD, None)
