"""Rootless unpacking and ID mapping (issue 7), checked on the unpacked trees.

As an unprivileged user (a throwaway `oci-unpack-test-*` account made with useradd, removed
with `userdel -r`), the fixture images and a purpose-built one are unpacked and checked:
every file belongs to the caller, the image's owners are recorded in the
`user.rootlesscontainers` xattr, modes (setuid, 0500, 0000 dirs with children) are kept,
devices are placeholders, fifos and hardlinks are what they were. As root, `--rootless`
gives the same tree, and `--uid-map/--gid-map` give mapped owners. A differential part
compares `--rootless` with `umoci unpack --rootless` (0.4.7).

If the interpreter lives where the test user cannot reach it (pyenv under a 0700 /root),
oci-unpack runs as that user with CAP_DAC_READ_SEARCH only (read and traverse, as
tests/test_applier_confine.py does): still no chown, no mknod, no write permission it
would not have, and a non-zero euid. Every other command (umoci, rm, chmod) runs as the
plain user.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, needs_root, needs_tool, run_cli
from layers import Node, build_image, tree

from fixtures.images import DEMO_EXPECTED
from fixtures.layout import LayoutWriter
from fixtures.tarwriter import Entry, build_tar, dirent, hardlink, reg, symlink
from unpack.fs.rootless import OWNER_XATTR, encode_owner

NOOP_ID = 0xFFFFFFFF  # rootlesscontainers: "leave this ID unchanged"

# -- the purpose-built image ------------------------------------------------------------------

PASSWD = b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:50:Bob:/home/bob:/bin/sh\n"
GROUP = b"root:x:0:\ntty:x:5:bob\nstaff:x:50:\n"

SPECIAL_LAYERS: list[list[Entry]] = [
    [
        dirent("etc"), reg("etc/passwd", PASSWD), reg("etc/group", GROUP),
        dirent("home"), dirent("home/bob", mode=0o750, uid=1000, gid=50),
        reg("home/bob/file", b"bob's file\n", mode=0o640, uid=1000, gid=50),
        hardlink("home/bob/hard", "home/bob/file"),
        symlink("home/bob/link", "file", uid=1000, gid=50),
        dirent("usr"), dirent("usr/bin"),
        reg("usr/bin/suid-root", b"#!/bin/sh\n", mode=0o4755),
        reg("usr/bin/suid-bob", b"#!/bin/sh\necho bob\n", mode=0o4750, uid=1000, gid=50),
        reg("usr/bin/sgid-staff", b"#!/bin/sh\necho staff\n", mode=0o2755, gid=50),
        dirent("srv", uid=1000, gid=50),
        dirent("ro", mode=0o500), dirent("ro/sub", mode=0o555),
        reg("ro/sub/f", b"read-only\n", mode=0o444),
        dirent("locked", mode=0o000, uid=1000, gid=50),
        reg("locked/f", b"locked\n", mode=0o600),
        dirent("locked/inner", mode=0o000), reg("locked/inner/g", b"inner\n"),
        dirent("dev"),
        Entry("dev/null", "chardev", mode=0o666, devmajor=1, devminor=3),
        Entry("dev/sda", "blockdev", mode=0o660, gid=6, devmajor=8, devminor=0),
        Entry("dev/tty1", "chardev", mode=0o620, uid=1000, gid=5, devmajor=4, devminor=1),
        dirent("run"), Entry("run/fifo", "fifo", mode=0o620),
        reg("big", b"multi-byte varints\n", uid=4000000, gid=3000000),
    ],
    [
        dirent("srv"),  # now owned by 0:0: the record goes
        reg("ro/late", b"written into a 0500 dir by a later layer\n"),
        reg("locked/late", b"late\n", uid=1000, gid=50),
        hardlink("usr/bin/suid-link", "usr/bin/suid-bob"),  # across layers
        reg("home/bob/file2", b"gid only\n", gid=50),
    ],
]  # fmt: skip
SPECIAL_CONFIG: dict[str, Any] = {
    "created": "2023-11-14T22:13:20Z",
    "config": {"Cmd": ["/bin/sh"], "User": "bob", "WorkingDir": "/home/bob"},
}

#: Paths whose image owner is not 0:0 (the rest have no xattr); symlinks cannot carry one.
SPECIAL_OWNERS: dict[str, tuple[int, int]] = {
    "home/bob": (1000, 50), "home/bob/file": (1000, 50), "home/bob/hard": (1000, 50),
    "home/bob/file2": (0, 50), "usr/bin/suid-bob": (1000, 50),
    "usr/bin/suid-link": (1000, 50), "usr/bin/sgid-staff": (0, 50), "locked": (1000, 50),
    "locked/late": (1000, 50), "dev/sda": (0, 6), "dev/tty1": (1000, 5),
    "big": (4000000, 3000000),
}  # fmt: skip
SPECIAL_MODES: dict[str, int] = {
    "usr/bin/suid-root": 0o4755, "usr/bin/suid-bob": 0o4750, "usr/bin/suid-link": 0o4750,
    "usr/bin/sgid-staff": 0o2755, "ro": 0o500, "ro/sub": 0o555, "ro/sub/f": 0o444,
    "locked": 0o000, "locked/inner": 0o000, "locked/f": 0o600, "home/bob": 0o750,
    "home/bob/file": 0o640, "dev/null": 0o666, "dev/sda": 0o660, "dev/tty1": 0o620,
    "run/fifo": 0o620, "srv": 0o755,
}  # fmt: skip
SPECIAL_CONTENT: dict[str, bytes] = {
    "ro/sub/f": b"read-only\n",
    "ro/late": b"written into a 0500 dir by a later layer\n",
    "locked/f": b"locked\n",
    "locked/inner/g": b"inner\n",
    "locked/late": b"late\n",
    "home/bob/file": b"bob's file\n",
}
DEVICES = ("dev/null", "dev/sda", "dev/tty1")


def build_special(path: Path, *, user: str = "bob", layers: Sequence[Sequence[Entry]] = ()) -> str:
    """Write the purpose-built image (or other `layers`) at `path`; return `PATH:latest`."""
    out = LayoutWriter(path)
    descriptors = [out.add_layer(build_tar(e), "gzip") for e in (layers or SPECIAL_LAYERS)]
    config = {**SPECIAL_CONFIG, "config": {**SPECIAL_CONFIG["config"], "User": user}}
    out.tag(out.add_image(descriptors, config), "latest")
    out.write()
    return f"{path}:latest"


# -- the user.rootlesscontainers value ---------------------------------------------------------


def decode_owner(value: bytes) -> tuple[int, int]:
    """Decode a rootlesscontainers `Resource{uint32 uid = 1; uint32 gid = 2}` (proto3)."""
    fields = {1: 0, 2: 0}
    i = 0
    while i < len(value):
        key = value[i]
        i += 1
        assert key & 7 == 0 and key >> 3 in fields, f"unexpected protobuf key {key:#x}"
        number = shift = 0
        while True:
            byte = value[i]
            i += 1
            number |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        fields[key >> 3] = number
    return fields[1], fields[2]


def recorded_owner(node: Node) -> tuple[int, int] | None:
    raw = node.xattrs.get(OWNER_XATTR)
    return None if raw is None else decode_owner(raw)


@pytest.mark.parametrize(
    ("uid", "gid", "encoded"),
    [
        (1000, 50, b"\x08\xe8\x07\x10\x32"),  # what umoci 0.4.7 writes for 1000:50
        (7, 8, b"\x08\x07\x10\x08"),
        (0, 6, b"\x10\x06"),
        (1000, 0, b"\x08\xe8\x07"),
        (4000000, 3000000, b"\x08\x80\x92\xf4\x01\x10\xc0\x8d\xb7\x01"),
        (NOOP_ID, 1, b"\x08\xff\xff\xff\xff\x0f\x10\x01"),
        (0, 0, b""),
    ],
)
def test_owner_encoding(uid: int, gid: int, encoded: bytes) -> None:
    assert encode_owner(uid, gid) == encoded
    assert decode_owner(encoded) == (uid, gid)


# -- a throwaway unprivileged user -------------------------------------------------------------


@dataclass(frozen=True)
class HostUser:
    """An account created for the tests."""

    name: str
    uid: int
    gid: int
    home: Path
    subuid: tuple[int, int] | None
    subgid: tuple[int, int] | None


def _subid(path: str, name: str) -> tuple[int, int] | None:
    """`name`'s first range in /etc/subuid or /etc/subgid (read here, not with parse_subid)."""
    with contextlib.suppress(OSError), open(path) as file:
        for line in file:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == name:
                return int(fields[1]), int(fields[2])
    return None


@contextlib.contextmanager
def host_user(*, subids: bool) -> Iterator[HostUser]:
    """useradd a fresh `oci-unpack-test-*` user (with or without subordinate ID ranges)."""
    for tool in ("useradd", "userdel", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    name = f"oci-unpack-test-{secrets.token_hex(4)}"
    command = ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh"]
    if not subids:
        command += ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
    for _ in range(20):  # another test may hold the /etc/passwd lock for a moment
        result = subprocess.run([*command, name], capture_output=True, text=True)
        if result.returncode == 0 or "lock" not in result.stderr:
            break
        time.sleep(0.25)
    assert result.returncode == 0, f"useradd {name}: {result.stderr}"
    try:
        info = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
        group = subprocess.run(["id", "-g", name], capture_output=True, text=True, check=True)
        user = HostUser(name, int(info.stdout), int(group.stdout), Path("/home") / name,
                        _subid("/etc/subuid", name), _subid("/etc/subgid", name))  # fmt: skip
        if subids and (user.subuid is None or user.subgid is None):
            pytest.skip("useradd gave no /etc/subuid and /etc/subgid ranges (SUB_UID_COUNT?)")
        assert subids or (user.subuid, user.subgid) == (None, None)
        yield user
    finally:
        for _ in range(20):
            done = subprocess.run(["userdel", "-r", name], capture_output=True, text=True)
            if done.returncode == 0 or "lock" not in done.stderr:
                break
            time.sleep(0.25)
        gone = subprocess.run(["id", name], capture_output=True)
        assert gone.returncode != 0, f"userdel {name} failed: {done.stderr}"


@contextlib.contextmanager
def user_dir(user: HostUser) -> Iterator[Path]:
    """A fresh directory under /tmp that `user` owns (removed by root afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="oci-unpack-test-", dir="/tmp"))
    try:
        os.chown(path, user.uid, user.gid)
        os.chmod(path, 0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(user: HostUser) -> list[str]:
    """The command prefix running a program as `user`, without supplementary groups."""
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]


def user_env(user: HostUser) -> dict[str, str]:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(user.home), "LANG": "C.UTF-8"}  # fmt: skip


@functools.cache
def _python_needs_read_cap(uid: int, gid: int) -> bool:
    probe = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             sys.executable, "-c", "import unpack.cli"]  # fmt: skip
    return subprocess.run(probe, cwd=REPO, capture_output=True).returncode != 0


def run_cli_as(user: HostUser, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    """`python -m unpack ARGS` as `user` (see the module docstring on the read capability)."""
    prefix = as_user(user)
    if _python_needs_read_cap(user.uid, user.gid):
        prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "unpack", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=user_env(user),
    )  # fmt: skip


def run_as(user: HostUser, *command: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    """Any command as the plain `user` (no capability at all)."""
    return subprocess.run([*as_user(user), *map(str, command)], capture_output=True, text=True,
                          env=user_env(user))  # fmt: skip


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user() -> Iterator[HostUser]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create the unprivileged test user")
    with host_user(subids=True) as made:
        yield made


@pytest.fixture(scope="module")
def work(user: HostUser, images: Path) -> Iterator[Path]:
    """The user's directory: world-readable copies of the images, and `out/` for bundles."""
    with user_dir(user) as path:
        for name in ("demo", "busybox"):
            if (images / name).is_dir():
                shutil.copytree(images / name, path / "images" / name)
        build_special(path / "images" / "special")
        build_special(path / "images" / "no-such-user", user="nosuchuser")
        world_readable(path / "images")
        (path / "out").mkdir()
        os.chown(path / "out", user.uid, user.gid)
        yield path


def world_readable(top: Path) -> None:
    """chmod a+rX everything under `top` (whatever the umask was), for the test user."""
    for dirpath, _, filenames in os.walk(top):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


@dataclass
class Unpacked:
    """One bundle, unpacked once per module."""

    bundle: Path
    result: subprocess.CompletedProcess

    @functools.cached_property
    def tree(self) -> dict[str, Node]:
        return tree(self.bundle / "rootfs")

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.bundle / "config.json").read_text())


@pytest.fixture(scope="module")
def as_user_unpack(user: HostUser, work: Path) -> Any:
    """`f(image) -> Unpacked`: the image unpacked by the test user (cached)."""
    cache: dict[str, Unpacked] = {}

    def go(image: str) -> Unpacked:
        if image not in cache:
            if not (work / "images" / image).is_dir():
                pytest.skip(f"fixture image {image} unavailable (busybox needs busybox-static)")
            bundle = work / "out" / image
            result = run_cli_as(user, work / "images" / image, bundle)
            assert result.returncode == 0, result.stderr
            cache[image] = Unpacked(bundle, result)
        return cache[image]

    return go


@pytest.fixture(scope="module")
def root_special(work: Path, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    """The purpose-built image unpacked by root with --rootless."""
    bundle = tmp_path_factory.mktemp("root-rootless") / "bundle"
    result = run_cli("--rootless", work / "images" / "special", bundle)
    assert result.returncode == 0, result.stderr
    return Unpacked(bundle, result)


# -- as an unprivileged user ----------------------------------------------------------------


def check_owned_by(bundle: Path, uid: int, gid: int) -> None:
    """DIR, config.json and every name in the rootfs belong to uid:gid."""
    for path, node in tree(bundle).items():
        assert (node.uid, node.gid) == (uid, gid), path


def test_user_special_owners_recorded(user: HostUser, as_user_unpack: Any) -> None:
    """Every name belongs to the caller; the image's owners are in the xattr, 0:0 as none."""
    unpacked = as_user_unpack("special")
    check_owned_by(unpacked.bundle, user.uid, user.gid)
    for path, node in unpacked.tree.items():
        if node.type == "symlink":
            assert OWNER_XATTR not in node.xattrs, path  # user.* cannot be set on a symlink
        else:
            assert recorded_owner(node) == SPECIAL_OWNERS.get(path), path
    assert recorded_owner(unpacked.tree["srv"]) is None  # re-owned to 0:0 by layer 2


def test_user_special_modes_children_and_types(user: HostUser, as_user_unpack: Any) -> None:
    unpacked = as_user_unpack("special")
    nodes = unpacked.tree
    for path, mode in SPECIAL_MODES.items():
        assert nodes[path].mode == mode, f"{path}: {oct(nodes[path].mode)}"
    rootfs = unpacked.bundle / "rootfs"
    for path, content in SPECIAL_CONTENT.items():  # children of 0500/0000 dirs are there
        assert (rootfs / path).read_bytes() == content, path
    assert sorted(os.listdir(rootfs / "locked")) == ["f", "inner", "late"]
    assert sorted(os.listdir(rootfs / "ro")) == ["late", "sub"]
    for device in DEVICES:  # placeholders: empty regular files with the image mode
        assert (nodes[device].type, nodes[device].size) == ("file", 0), device
    assert nodes["run/fifo"].type == "fifo"
    assert (nodes["home/bob/link"].type, nodes["home/bob/link"].target) == ("symlink", "file")
    assert nodes["home/bob/hard"].inode == nodes["home/bob/file"].inode
    assert nodes["home/bob/file"].nlink == 2
    assert nodes["usr/bin/suid-link"].inode == nodes["usr/bin/suid-bob"].inode
    warnings = unpacked.result.stderr.strip().splitlines()
    assert len(warnings) == 1, unpacked.result.stderr
    assert warnings[0].startswith("oci-unpack: warning: device node ")
    assert "placeholder" in warnings[0]


def test_user_special_config_is_rootless(user: HostUser, as_user_unpack: Any) -> None:
    """The image user bob (1000:50) is inside the user's subordinate ranges."""
    config = as_user_unpack("special").config
    assert user.subuid is not None and user.subgid is not None
    assert config["linux"]["uidMappings"] == [
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": user.subuid[0], "size": user.subuid[1]},
    ]
    assert config["linux"]["gidMappings"] == [
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": user.subgid[0], "size": user.subgid[1]},
    ]
    # runc refuses additionalGids to an unprivileged caller: rootless configs have none
    assert config["process"]["user"] == {"uid": 1000, "gid": 50}
    kinds = [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "user" in kinds and "network" not in kinds
    assert "resources" not in config["linux"]
    (sys_mount,) = [m for m in config["mounts"] if m["destination"] == "/sys"]
    assert sys_mount["type"] == "none" and "rbind" in sys_mount["options"]


def test_user_demo(user: HostUser, as_user_unpack: Any) -> None:
    """The demo fixture's facts hold; its non-root owners are exactly the recorded ones."""
    unpacked = as_user_unpack("demo")
    check_owned_by(unpacked.bundle, user.uid, user.gid)
    rootfs, nodes = unpacked.bundle / "rootfs", unpacked.tree
    for path, facts in DEMO_EXPECTED.items():
        node = nodes[path]
        assert node.type == facts["type"], path
        if "content" in facts:
            assert (rootfs / path).read_bytes() == facts["content"], path
        if "mode" in facts:
            assert node.mode == facts["mode"], path
        if "target" in facts:
            assert node.target == facts["target"], path
        if "hardlink_to" in facts:
            assert node.inode == nodes[facts["hardlink_to"]].inode, path
        for key, value in facts.get("xattrs", {}).items():
            assert node.xattrs[key] == value, path
    recorded = {path: recorded_owner(n) for path, n in nodes.items() if recorded_owner(n)}
    expected = {path: (f["uid"], f["gid"]) for path, f in DEMO_EXPECTED.items() if "uid" in f}
    assert recorded == expected
    assert unpacked.result.stderr == ""  # no devices in demo: no warning


def test_user_busybox(user: HostUser, as_user_unpack: Any) -> None:
    unpacked = as_user_unpack("busybox")
    check_owned_by(unpacked.bundle, user.uid, user.gid)
    nodes = unpacked.tree
    assert recorded_owner(nodes["home/alice"]) == (1001, 1001)
    assert nodes["home/alice"].mode == 0o700
    assert recorded_owner(nodes["srv/app"]) == (1001, 1001)
    assert recorded_owner(nodes["bin/busybox"]) is None
    assert nodes["bin/sh"].inode == nodes["bin/busybox"].inode
    assert nodes["bin/id"].target == "busybox"
    config = unpacked.config
    assert config["process"]["user"]["uid"] == 1001
    assert config["linux"]["uidMappings"][0] == {"containerID": 0, "hostID": user.uid, "size": 1}


def test_user_cannot_rm_rf_restrictive_dirs_but_chmod_first_works(
    user: HostUser, work: Path
) -> None:
    """As with umoci: 0000/0500 directories stop a plain `rm -rf` (documented in the README);
    `chmod -R u+rwx DIR && rm -rf DIR` removes the bundle."""
    bundle = work / "out" / "to-delete"
    result = run_cli_as(user, "-q", work / "images" / "special", bundle)
    assert result.returncode == 0, result.stderr
    plain = run_as(user, "rm", "-rf", bundle)
    assert plain.returncode != 0
    assert "Permission denied" in plain.stderr
    assert (bundle / "rootfs" / "locked").is_dir()
    recipe = run_as(user, "sh", "-c", 'chmod -R u+rwx "$1" && rm -rf "$1"', "sh", bundle)
    assert recipe.returncode == 0, recipe.stderr
    assert not bundle.exists()


def test_user_failure_after_layers_leaves_nothing(user: HostUser, work: Path) -> None:
    """A config that cannot be converted (User names no user) fails after the layers, with
    0000 and 0500 dirs in the rootfs: neither DIR nor the temporary bundle remains."""
    parent = work / "out" / "failing"
    parent.mkdir()
    os.chown(parent, user.uid, user.gid)
    result = run_cli_as(user, work / "images" / "no-such-user", parent / "bundle")
    assert result.returncode == 3, result.stderr
    assert "nosuchuser" in result.stderr
    assert list(parent.iterdir()) == []


def test_user_root_dir_header_with_readonly_mode(user: HostUser, work: Path) -> None:
    image = build_special(
        work / "images" / "readonly-root",
        layers=[[dirent("./", mode=0o555), dirent("etc"), reg("etc/f", b"x")]],
    )
    world_readable(work / "images" / "readonly-root")
    bundle = work / "out" / "readonly-root"
    result = run_cli_as(user, "--no-config", image, bundle)
    assert result.returncode == 0, result.stderr
    assert (bundle / "rootfs" / "etc" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((bundle / "rootfs").stat().st_mode) == 0o555


# -- as root: --rootless, --uid-map/--gid-map ------------------------------------------------


def without_owners(nodes: dict[str, Node]) -> dict[str, Node]:
    """Snapshots minus what differs between two unpacks by different users on purpose."""
    return {p: n._replace(uid=0, gid=0, inode=0, atime_ns=0,
                          mtime_ns=0 if p == "." else n.mtime_ns)
            for p, n in nodes.items()}  # fmt: skip


@needs_root
def test_root_rootless_gives_the_users_tree(
    root_special: Unpacked, as_user_unpack: Any, user: HostUser
) -> None:
    """`--rootless` as root: the same tree as the unprivileged user's, owned by root."""
    check_owned_by(root_special.bundle, 0, 0)
    theirs = as_user_unpack("special").tree
    ours = root_special.tree
    assert without_owners(ours) == without_owners(theirs)
    assert recorded_owner(ours["home/bob/file"]) == (1000, 50)
    assert ours["dev/sda"].type == "file"
    assert len(root_special.result.stderr.strip().splitlines()) == 1


def _root_subuid() -> tuple[int, int] | None:
    return _subid("/etc/subuid", "root") or _subid("/etc/subuid", "0")


@needs_root
def test_root_rootless_config(root_special: Unpacked) -> None:
    config = root_special.config
    subuid = _root_subuid()
    if subuid is not None and subuid[1] >= 1000:
        assert config["linux"]["uidMappings"][:1] == [{"containerID": 0, "hostID": 0, "size": 1}]
    else:  # root has no range here: bob is mapped to root itself
        assert config["linux"]["uidMappings"] == [{"containerID": 1000, "hostID": 0, "size": 1}]
    kinds = [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "user" in kinds and "network" not in kinds
    assert "resources" not in config["linux"]
    devpts = [m for m in config["mounts"] if m["type"] == "devpts"]
    assert devpts and not any(o.startswith("gid=") for o in devpts[0]["options"])


MAP_ARGS = ("--uid-map", "0:100000:65536", "--uid-map", "4000000:300000:1",
            "--gid-map", "0:100000:65536", "--gid-map", "3000000:400000:1")  # fmt: skip


def mapped(uid: int, gid: int) -> tuple[int, int]:
    return (300000 if uid == 4000000 else 100000 + uid, 400000 if gid == 3000000 else 100000 + gid)


@pytest.fixture(scope="module")
def mapped_special(work: Path, tmp_path_factory: pytest.TempPathFactory) -> Unpacked:
    bundle = tmp_path_factory.mktemp("mapped") / "bundle"
    result = run_cli(*MAP_ARGS, work / "images" / "special", bundle)
    assert result.returncode == 0, result.stderr
    return Unpacked(bundle, result)


@needs_root
def test_uid_map_owners_are_mapped(mapped_special: Unpacked) -> None:
    nodes = mapped_special.tree
    for path, node in nodes.items():
        if path == ".":
            continue
        owner = SPECIAL_OWNERS.get(path, (1000, 50) if path == "home/bob/link" else (0, 0))
        assert (node.uid, node.gid) == mapped(*owner), path
        assert OWNER_XATTR not in node.xattrs, path
    for path, mode in SPECIAL_MODES.items():  # setuid survives the chown (chown first)
        assert nodes[path].mode == mode, path
    assert nodes["dev/sda"].type == "blockdev" and nodes["dev/sda"].rdev == os.makedev(8, 0)
    assert mapped_special.result.stderr == ""


@needs_root
def test_uid_map_rootfs_belongs_to_mapped_root(mapped_special: Unpacked) -> None:
    node = mapped_special.tree["."]
    assert (node.uid, node.gid) == (100000, 100000)


@needs_root
def test_uid_map_config(mapped_special: Unpacked) -> None:
    config = mapped_special.config
    assert config["linux"]["uidMappings"] == [
        {"containerID": 0, "hostID": 100000, "size": 65536},
        {"containerID": 4000000, "hostID": 300000, "size": 1},
    ]
    assert config["linux"]["gidMappings"][1] == {
        "containerID": 3000000, "hostID": 400000, "size": 1}  # fmt: skip
    kinds = [ns["type"] for ns in config["linux"]["namespaces"]]
    assert kinds.count("user") == 1 and "network" in kinds  # not rootless: full shape
    assert "resources" in config["linux"]
    assert config["process"]["user"] == {"uid": 1000, "gid": 50, "additionalGids": [5]}


@needs_root
def test_uid_map_not_covering_an_owner_fails(work: Path, tmp_path: Path) -> None:
    result = run_cli("--uid-map", "0:100000:65536", "--gid-map", "0:100000:65536",
                     work / "images" / "special", tmp_path / "bundle")  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("oci-unpack: error: layer 1/2 sha256:")  # the layer, named
    assert result.stderr.strip().endswith(": uid 4000000 is not covered by --uid-map")
    assert list(tmp_path.iterdir()) == []


@needs_root
def test_uid_map_not_covering_the_process_user_fails(tmp_path: Path) -> None:
    image = build_image(
        tmp_path / "image",
        [[dirent("etc"), reg("etc/f", b"x")]],
        config={"config": {"Cmd": ["/bin/sh"], "User": "1000:1000"}},
    )
    result = run_cli("--uid-map", "0:100000:1000", "--gid-map", "0:100000:65536",
                     image.removesuffix(":latest"), tmp_path / "bundle")  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "the process uid 1000 is not covered by the uid mappings" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["image"]


@needs_root
def test_rootless_fifo_with_non_root_owner(tmp_path: Path) -> None:
    image = build_image(
        tmp_path / "image", [[dirent("run"), Entry("run/fifo", "fifo", uid=1000, gid=50)]]
    )
    result = run_cli("--rootless", "--no-config", image, tmp_path / "bundle")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO((tmp_path / "bundle" / "rootfs" / "run" / "fifo").lstat().st_mode)


# -- differential: umoci unpack --rootless (0.4.7) ------------------------------------------

#: What umoci 0.4.7 does differently, on purpose or not:
UMOCI_DIFFERENCES = {
    "zero ID beside a non-zero one": "umoci writes NoopID (2**32-1, 'leave unchanged') for a "
    "0 uid or gid when the other is not 0; we write the proto3 encoding (0 omitted), which "
    "the rootlesscontainers spec says MUST be read as 0. Both mean container root (the "
    "unpacking user), so values are compared decoded, NoopID as 0",
    "implicit dirs": "directories no layer has a header for (and '.') have no specified "
    "time: each tool leaves the time it made them",
}

#: (path, field) -> why, for umoci run as the unprivileged user on the purpose-built image.
UMOCI_AS_USER_DIFFERENCES = {
    ("locked", "owner"): "umoci sets the xattr after the directory's mode 0000; user.* "
    "xattrs need write permission, so the kernel refuses it and umoci drops the record "
    "(as root it works). oci-unpack keeps u+rwx until the end and records 1000:50",
}


def comparable(nodes: dict[str, Node], headed: set[str]) -> dict[str, tuple[Any, ...]]:
    """Per path: what both tools must agree on (xattr owners decoded, NoopID as 0)."""
    out = {}
    for path, n in nodes.items():
        xattrs = dict(n.xattrs)
        owner = xattrs.pop(OWNER_XATTR, None)
        decoded = None
        if owner is not None:
            decoded = tuple(0 if i == NOOP_ID else i for i in decode_owner(owner))
        mtime = n.mtime_ns if n.type != "dir" or (path in headed and path != ".") else None
        size = n.size if n.type != "dir" else None
        out[path] = (n.type, n.mode, n.uid, n.gid, size, n.target, mtime, n.nlink, n.sha256,
                     n.rdev, xattrs, decoded)  # fmt: skip
    return out


def headed_dirs(layers: Sequence[Sequence[Entry]]) -> set[str]:
    """Directories that some layer has a header for."""
    return {os.fsdecode(e.name).strip("/").removeprefix("./") for layer in layers
            for e in layer if e.type == "dir"}  # fmt: skip


def differences(
    ours: Path, theirs: Path, headed: set[str], allowed: dict[tuple[str, str], str] | None = None
) -> list[str]:
    a, b = comparable(tree(ours), headed), comparable(tree(theirs), headed)
    fields = ("type", "mode", "uid", "gid", "size", "target", "mtime", "nlink", "sha256",
              "rdev", "xattrs", "owner")  # fmt: skip
    problems = []
    for path in sorted(a.keys() | b.keys()):
        if path not in a or path not in b:
            problems.append(f"{path}: only in {'umoci' if path not in a else 'oci-unpack'}")
            continue
        for name, x, y in zip(fields, a[path], b[path], strict=True):
            if x != y and (path, name) not in (allowed or {}):
                problems.append(f"{path}: {name} oci-unpack={x!r} umoci={y!r}")
    return problems


def umoci_images(work: Path) -> dict[str, tuple[Path, set[str]]]:
    """name -> (layout, directories with headers): demo and rich as the umoci differential
    test rebuilds them (gzip only), and the purpose-built image."""
    from test_differential_umoci import IMAGES, build  # the same gzip-only siblings

    out = {"special": (work / "images" / "special", headed_dirs(SPECIAL_LAYERS))}
    for name, (layers, config) in IMAGES.items():
        path = work / "images" / f"umoci-{name}"
        if not path.exists():
            build(path, layers, config)
        out[name] = (path, headed_dirs([entries for _, entries in layers]))
    return out


@needs_root
@needs_tool("umoci")
@pytest.mark.parametrize("name", ["special", "demo", "rich"])
def test_rootless_same_as_umoci_as_root(work: Path, tmp_path: Path, name: str) -> None:
    layout, headed = umoci_images(work)[name]
    theirs = subprocess.run(["umoci", "--log=error", "unpack", "--rootless", "--image",
                             f"{layout}:latest", str(tmp_path / "umoci")],
                            capture_output=True, text=True)  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    ours = run_cli("-q", "--rootless", "--no-config", layout, tmp_path / "ours")
    assert ours.returncode == 0, ours.stderr
    problems = differences(tmp_path / "ours" / "rootfs", tmp_path / "umoci" / "rootfs", headed)
    assert problems == []
    assert len(tree(tmp_path / "ours" / "rootfs")) > 20


@needs_tool("umoci")
def test_rootless_same_as_umoci_as_the_user(user: HostUser, work: Path) -> None:
    layout = work / "images" / "special"
    theirs = run_as(user, "umoci", "--log=error", "unpack", "--rootless", "--image",
                    f"{layout}:latest", work / "out" / "umoci-special")  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    ours = run_cli_as(user, "-q", "--no-config", layout, work / "out" / "ours-special")
    assert ours.returncode == 0, ours.stderr
    problems = differences(work / "out" / "ours-special" / "rootfs",
                           work / "out" / "umoci-special" / "rootfs",
                           headed_dirs(SPECIAL_LAYERS), UMOCI_AS_USER_DIFFERENCES)  # fmt: skip
    assert problems == []
    umoci_locked = tree(work / "out" / "umoci-special" / "rootfs")["locked"]
    assert OWNER_XATTR not in umoci_locked.xattrs  # the allowed difference is still there


def test_differences_are_reported() -> None:
    """The comparison is not vacuous: an owner record or a mode that differs is reported."""
    base = Node("file", 0o644, 0, 0, 1, None, 10, 1, 1, "h", {OWNER_XATTR: b"\x10\x06"})
    noop = base._replace(xattrs={OWNER_XATTR: b"\x08\xff\xff\xff\xff\x0f\x10\x06"})
    other = base._replace(xattrs={OWNER_XATTR: b"\x10\x07"})
    assert comparable({"a": base}, set()) == comparable({"a": noop}, set())
    assert comparable({"a": base}, set()) != comparable({"a": other}, set())
    assert comparable({"a": base}, set()) != comparable({"a": base._replace(mode=0o600)}, set())
