"""User namespaces and the rootless config: unpack.config.rootless and runtime_config's use of it.

Every config built here is checked against the runtime-spec JSON schema (when installed).
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import runtime_schema

from unpack.config import HostIds, RuntimeOptions, parse_subid, runtime_config
from unpack.config.rootless import add_user_namespace, make_rootless, rootless_mappings
from unpack.config.template import default_config
from unpack.errors import ConfigError

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:Bob:/home/bob:/bin/sh\n"
GROUP = b"root:x:0:\nwheel:x:10:bob\nstaff:x:50:bob\nbob:x:1000:\n"
SUBUID = (100000, 65536)


def read_file(path: str) -> bytes | None:
    return {"/etc/passwd": PASSWD, "/etc/group": GROUP}.get(path)


def convert(user: str | None, options: RuntimeOptions, **config: Any) -> dict[str, Any]:
    """runtime_config for an image whose User is `user`; the result is schema-checked."""
    if user is not None:
        config["User"] = user
    image = {"architecture": "amd64", "os": "linux", "config": config}
    spec = runtime_config(image, read_file, options).config
    runtime_schema.check(spec)
    return spec


def mappings(entries: list[dict[str, int]]) -> list[tuple[int, int, int]]:
    return [(e["containerID"], e["hostID"], e["size"]) for e in entries]


def namespaces(spec: dict[str, Any]) -> list[str]:
    return [ns["type"] for ns in spec["linux"]["namespaces"]]


def mount(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    (found,) = [m for m in spec["mounts"] if m["destination"] == destination]
    return found


def assert_rootless_shape(spec: dict[str, Any], *, user_namespace: bool = True) -> None:
    """What `runc spec --rootless` changes, as make_rootless must have done it."""
    assert "network" not in namespaces(spec)
    assert namespaces(spec).count("user") == (1 if user_namespace else 0)
    assert "resources" not in spec["linux"]
    assert mount(spec, "/sys") == {
        "destination": "/sys", "type": "none", "source": "/sys",
        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
    }  # fmt: skip
    assert not any(o.startswith("gid=") for o in mount(spec, "/dev/pts")["options"])


# -- parse_subid ------------------------------------------------------------------------------

SUBID_FILE = """\
# comment:1:2
cloudsdk:100000:65536
alice:165536:65536
alice:300000:10
1002:231072:65536
broken:1:2:3
zero:400000:0
bad:x:10
  spaced:500000:100
"""


@pytest.mark.parametrize(
    ("name", "uid", "expected"),
    [
        ("alice", 1001, (165536, 65536)),  # the first range of several
        ("carol", 1002, (231072, 65536)),  # listed by uid
        ("cloudsdk", 5, (100000, 65536)),
        ("spaced", 7, (500000, 100)),  # surrounding whitespace ignored
        ("zero", 8, None),  # a count of 0 is no range
        ("bad", 9, None),
        ("broken", 10, None),
        ("nobody", 65534, None),
        ("#", 11, None),
    ],
)
def test_parse_subid(name: str, uid: int, expected: tuple[int, int] | None) -> None:
    assert parse_subid(SUBID_FILE, name, uid) == expected


def test_parse_subid_empty() -> None:
    assert parse_subid("", "alice", 1001) is None


def test_parse_subid_skips_non_ascii_digits() -> None:
    assert parse_subid("alice:\u00b2:5\nalice:100:5\n", "alice", 1001) == (100, 5)


# -- rootless_mappings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "subordinate", "expected"),
    [
        (0, None, [(0, 1000, 1)]),
        (0, SUBUID, [(0, 1000, 1)]),  # root needs nothing more
        (1001, SUBUID, [(0, 1000, 1), (1, 100000, 65536)]),
        (65536, SUBUID, [(0, 1000, 1), (1, 100000, 65536)]),  # the last ID of the range
        (65537, SUBUID, [(65537, 1000, 1)]),  # beyond the range: the user is the caller
        (1001, None, [(1001, 1000, 1)]),
        (1001, (200000, 5), [(1001, 1000, 1)]),
    ],
)
def test_rootless_mappings(
    user_id: int, subordinate: tuple[int, int] | None, expected: list[tuple[int, int, int]]
) -> None:
    result = rootless_mappings(user_id, 1000, subordinate)
    assert result == expected
    assert any(c <= user_id < c + size for c, _, size in result)  # the user is always mapped


# -- add_user_namespace -----------------------------------------------------------------------


def spec_with(additional_gids: list[int] | None = None, *extra_mounts: dict[str, Any]) -> dict:
    spec = default_config()
    spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    if additional_gids is not None:
        spec["process"]["user"]["additionalGids"] = additional_gids
    spec["mounts"].extend(extra_mounts)
    return spec


def tmpfs(destination: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": list(options)}  # fmt: skip


def test_add_user_namespace_sets_mappings_once() -> None:
    spec = spec_with()
    uids, gids = [(0, 1000, 1), (1, 100000, 65536)], [(0, 1000, 1)]
    add_user_namespace(spec, uids, gids)
    add_user_namespace(spec, uids, gids)  # idempotent: one user namespace
    assert namespaces(spec).count("user") == 1
    assert spec["linux"]["uidMappings"] == [
        {"containerID": 0, "hostID": 1000, "size": 1},
        {"containerID": 1, "hostID": 100000, "size": 65536},
    ]
    assert mappings(spec["linux"]["gidMappings"]) == gids
    assert "network" in namespaces(spec)  # only make_rootless drops it
    runtime_schema.check(spec)


@pytest.mark.parametrize(
    ("gids", "additional", "expected"),
    [
        ([(0, 1000, 1), (1, 100000, 65536)], [10, 50, 70000], [10, 50]),
        ([(0, 100000, 20)], [10, 50], [10]),
        ([(1000, 1000, 1)], [10, 50], None),  # none covered: the key goes
        ([(0, 1000, 1)], [], None),
    ],
)
def test_add_user_namespace_keeps_only_mapped_additional_gids(
    gids: list[tuple[int, int, int]], additional: list[int], expected: list[int] | None
) -> None:
    spec = spec_with(additional)
    add_user_namespace(spec, [(0, 1000, 1000 + 1)], gids)
    assert spec["process"]["user"].get("additionalGids") == expected
    runtime_schema.check(spec)


def test_add_user_namespace_drops_tmpfs_owner_options_of_unmapped_ids() -> None:
    """A tmpfs `uid=`/`gid=` of an ID the namespace does not map would fail the mount."""
    spec = spec_with(
        None,
        tmpfs("/data", "nosuid", "nodev", "mode=755", "uid=1000", "gid=1000"),
        tmpfs("/cache", "nosuid", "uid=0", "gid=50", "size=1m"),
        {"destination": "/b", "type": "none", "source": "/x", "options": ["rbind", "uid=7"]},
    )
    before = copy.deepcopy(spec["mounts"][:7])
    add_user_namespace(spec, [(1000, 1000, 1)], [(1000, 1000, 1), (50, 200000, 1)])
    assert mount(spec, "/data")["options"] == ["nosuid", "nodev", "mode=755", "uid=1000",
                                               "gid=1000"]  # fmt: skip
    assert mount(spec, "/cache")["options"] == ["nosuid", "gid=50", "size=1m"]
    assert mount(spec, "/b")["options"] == ["rbind", "uid=7"]  # not a tmpfs: untouched
    assert spec["mounts"][:7] == before  # the runtime's own mounts name no owners
    runtime_schema.check(spec)


# -- make_rootless ----------------------------------------------------------------------------


def test_make_rootless_shape() -> None:
    spec = default_config()
    make_rootless(spec)
    assert_rootless_shape(spec, user_namespace=False)  # that comes from add_user_namespace
    assert mount(spec, "/dev/pts")["options"] == [
        "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]  # fmt: skip
    untouched = default_config()
    for destination in ("/proc", "/dev", "/dev/shm", "/dev/mqueue", "/sys/fs/cgroup"):
        assert mount(spec, destination) == mount(untouched, destination)
    assert spec["process"] == untouched["process"]


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_make_rootless_matches_runc_spec_rootless(tmp_path: Path) -> None:
    """Compared with `runc spec --rootless` on this machine (its hostID is runc's euid).

    Deliberate differences: the template's cgroup namespace (always requested, see
    unpack.config.template) and any masked path newer than this runc.
    """
    subprocess.run(["runc", "spec", "--rootless"], cwd=tmp_path, check=True,
                   capture_output=True)  # fmt: skip
    runc = json.loads((tmp_path / "config.json").read_text())
    ours = default_config()
    euid = runc["linux"]["uidMappings"][0]["hostID"]
    egid = runc["linux"]["gidMappings"][0]["hostID"]
    add_user_namespace(ours, [(0, euid, 1)], [(0, egid, 1)])
    make_rootless(ours)
    assert ours["mounts"] == runc["mounts"]
    assert set(namespaces(ours)) - {"cgroup"} == set(namespaces(runc))
    assert ours["linux"]["uidMappings"] == runc["linux"]["uidMappings"]
    assert ours["linux"]["gidMappings"] == runc["linux"]["gidMappings"]
    assert ("resources" in ours["linux"]) == ("resources" in runc["linux"]) is False
    assert set(runc["linux"]["maskedPaths"]) <= set(ours["linux"]["maskedPaths"])
    assert ours["linux"]["readonlyPaths"] == runc["linux"]["readonlyPaths"]
    runtime_schema.check(ours)


# -- runtime_config with RuntimeOptions(rootless=..., mappings, host) -------------------------


def rootless(**host: Any) -> RuntimeOptions:
    return RuntimeOptions(rootless=True, host=HostIds(**{"uid": 1000, "gid": 1000, **host}))


def test_plain_config_has_no_user_namespace() -> None:
    spec = convert("bob", RuntimeOptions())
    assert "user" not in namespaces(spec)
    assert "uidMappings" not in spec["linux"] and "resources" in spec["linux"]
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}


@pytest.mark.parametrize("user", [None, "root", "0:0"])
def test_rootless_root_image_user_maps_root_to_the_caller(user: str | None) -> None:
    spec = convert(user, rootless(subuid=SUBUID, subgid=SUBUID))
    assert_rootless_shape(spec)
    assert mappings(spec["linux"]["uidMappings"]) == [(0, 1000, 1)]
    assert mappings(spec["linux"]["gidMappings"]) == [(0, 1000, 1)]
    assert spec["process"]["user"] == {"uid": 0, "gid": 0}


def test_rootless_non_root_user_with_subordinate_ranges() -> None:
    spec = convert("bob", rootless(subuid=SUBUID, subgid=(200000, 1000)), Volumes={"/d": {}})
    assert_rootless_shape(spec)
    assert mappings(spec["linux"]["uidMappings"]) == [(0, 1000, 1), (1, 100000, 65536)]
    assert mappings(spec["linux"]["gidMappings"]) == [(0, 1000, 1), (1, 200000, 1000)]
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000}  # runc refuses them rootless
    assert {"uid=1000", "gid=1000"} <= set(mount(spec, "/d")["options"])


def test_rootless_non_root_user_without_ranges_is_mapped_to_the_caller() -> None:
    spec = convert("bob", rootless(uid=1234, gid=4321), Volumes={"/d": {}})
    assert_rootless_shape(spec)
    assert mappings(spec["linux"]["uidMappings"]) == [(1000, 1234, 1)]
    assert mappings(spec["linux"]["gidMappings"]) == [(1000, 4321, 1)]
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000}  # groups 10, 50 unmapped
    assert {"uid=1000", "gid=1000"} <= set(mount(spec, "/d")["options"])


def test_rootless_user_beyond_the_subordinate_range() -> None:
    spec = convert("70000:70001", rootless(subuid=SUBUID, subgid=SUBUID))
    assert mappings(spec["linux"]["uidMappings"]) == [(70000, 1000, 1)]
    assert mappings(spec["linux"]["gidMappings"]) == [(70001, 1000, 1)]


def test_rootless_subuid_without_subgid() -> None:
    spec = convert("bob", rootless(subuid=SUBUID))
    assert mappings(spec["linux"]["uidMappings"]) == [(0, 1000, 1), (1, 100000, 65536)]
    assert mappings(spec["linux"]["gidMappings"]) == [(1000, 1000, 1)]
    assert "additionalGids" not in spec["process"]["user"]


def test_explicit_mappings_without_rootless() -> None:
    """--uid-map/--gid-map as root: a user namespace with those maps; otherwise unchanged."""
    options = RuntimeOptions(uid_mappings=((0, 100000, 65536),),
                             gid_mappings=((0, 100000, 20), (1000, 101000, 1)))  # fmt: skip
    spec = convert("bob", options)
    assert mappings(spec["linux"]["uidMappings"]) == [(0, 100000, 65536)]
    assert mappings(spec["linux"]["gidMappings"]) == [(0, 100000, 20), (1000, 101000, 1)]
    assert namespaces(spec).count("user") == 1
    assert "network" in namespaces(spec) and "resources" in spec["linux"]
    assert mount(spec, "/sys")["type"] == "sysfs"
    assert spec["process"]["user"]["additionalGids"] == [10]  # 50 is not mapped


def test_explicit_mappings_with_rootless_win_over_defaults() -> None:
    options = RuntimeOptions(
        rootless=True,
        uid_mappings=((0, 5000, 2000),),
        gid_mappings=((0, 6000, 2000),),
        host=HostIds(1, 1, SUBUID, SUBUID),
    )
    spec = convert("bob", options)  # fmt: skip
    assert_rootless_shape(spec)
    assert mappings(spec["linux"]["uidMappings"]) == [(0, 5000, 2000)]
    assert mappings(spec["linux"]["gidMappings"]) == [(0, 6000, 2000)]


@pytest.mark.parametrize(
    ("uids", "gids", "kind"),
    [
        (((0, 100000, 1000),), ((0, 100000, 65536),), "uid 1000"),
        (((0, 100000, 65536),), ((0, 100000, 1000),), "gid 1000"),
        (((1001, 1, 10),), ((1000, 1, 1),), "uid 1000"),
    ],
)
def test_explicit_mappings_must_cover_the_process_user(
    uids: tuple[tuple[int, int, int], ...], gids: tuple[tuple[int, int, int], ...], kind: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        convert("bob", RuntimeOptions(uid_mappings=uids, gid_mappings=gids))
    assert f"the process {kind} is not covered" in str(caught.value)
