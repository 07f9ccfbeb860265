"""Tests for the Volumes rule of unpack.config.runtime_config, in all three modes."""

from typing import Any

import pytest
import runtime_schema

from unpack.config import RuntimeBundle, RuntimeOptions, runtime_config
from unpack.config.template import default_mounts
from unpack.config.volumes import volume_dir
from unpack.errors import ConfigError

PASSWD = b"root:x:0:0::/root:/bin/sh\nbob:x:1000:1001::/home/bob:/bin/sh\n"
DEFAULT_DESTINATIONS = [mount["destination"] for mount in default_mounts()]


def convert(volumes: Any, mode: str | None = None, user: str = "") -> RuntimeBundle:
    options = RuntimeOptions() if mode is None else RuntimeOptions(volumes=mode)
    image = {"os": "linux", "config": {"Volumes": volumes, "User": user}}
    bundle = runtime_config(image, {"/etc/passwd": PASSWD}.get, options)
    runtime_schema.check(bundle.config)
    return bundle


def volume_mounts(bundle: RuntimeBundle) -> list[dict[str, Any]]:
    mounts = bundle.config["mounts"]
    assert [m["destination"] for m in mounts[: len(DEFAULT_DESTINATIONS)]] == DEFAULT_DESTINATIONS
    return mounts[len(DEFAULT_DESTINATIONS) :]


VOLUMES = {"/var/lib/data": {}, "/data/": {}, "/data": {}, "cache": {}, "/a/../srv": {}}
ORDER = ["/cache", "/data", "/srv", "/var/lib/data"]


def test_tmpfs_is_the_default_mode() -> None:
    bundle = convert(VOLUMES)
    assert volume_mounts(bundle) == [
        {
            "destination": path,
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=755"],
        }
        for path in ORDER
    ]
    assert bundle.volume_dirs == ()
    assert convert(VOLUMES, "tmpfs").config == bundle.config


def test_tmpfs_is_owned_by_a_non_root_user() -> None:
    (mount,) = volume_mounts(convert({"/data": {}}, "tmpfs", user="bob"))
    assert mount["options"] == ["nosuid", "nodev", "mode=755", "uid=1000", "gid=1001"]
    (mount,) = volume_mounts(convert({"/data": {}}, "tmpfs", user="0:5"))
    assert mount["options"] == ["nosuid", "nodev", "mode=755", "uid=0", "gid=5"]


def test_bind_mode_uses_bundle_directories() -> None:
    bundle = convert(VOLUMES, "bind")
    sources = ["volumes/cache", "volumes/data", "volumes/srv", "volumes/var%2Flib%2Fdata"]
    assert volume_mounts(bundle) == [
        {
            "destination": path,
            "type": "bind",
            "source": source,
            "options": ["rbind", "nosuid", "nodev"],
        }
        for path, source in zip(ORDER, sources, strict=True)
    ]
    assert bundle.volume_dirs == tuple(sources)


def test_none_mode_adds_no_mounts() -> None:
    bundle = convert(VOLUMES, "none")
    assert volume_mounts(bundle) == []
    assert bundle.volume_dirs == ()


@pytest.mark.parametrize("volumes", [None, {}])
def test_no_volumes(volumes: Any) -> None:
    for mode in ("tmpfs", "bind", "none"):
        bundle = convert(volumes, mode)
        assert volume_mounts(bundle) == []
        assert bundle.volume_dirs == ()


def test_volume_at_a_runtime_mount_is_skipped() -> None:
    bundle = convert({"/dev/shm": {}, "/proc/": {}, "/dev/shm/x": {}}, "bind")
    assert [m["destination"] for m in volume_mounts(bundle)] == ["/dev/shm/x"]
    assert bundle.volume_dirs == ("volumes/dev%2Fshm%2Fx",)


@pytest.mark.parametrize("path", ["/", "", "//", "/a/..", "/x\0y"])
def test_unmountable_volume_is_an_error(path: str) -> None:
    with pytest.raises(ConfigError, match=r"image config Volumes .*: not a mountable volume path"):
        convert({path: {}})


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ConfigError, match='volumes mode "loop": expected one of tmpfs, bind, none'):
        convert({}, "loop")


def test_volumes_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="image config Volumes: expected an object"):
        convert(["/data"])


@pytest.mark.parametrize(
    ("first", "second"),
    [("/a/b", "/a%2Fb"), ("/a_b", "/a/b"), ("/a b", "/a%20b"), ("/%", "/%25")],
)
def test_volume_dirs_never_collide(first: str, second: str) -> None:
    assert volume_dir(first) != volume_dir(second)
    assert "/" not in volume_dir(first).removeprefix("volumes/")


def test_volume_dir_name_too_long_is_an_error() -> None:
    assert volume_dir("/" + "x" * 255) == "volumes/" + "x" * 255
    with pytest.raises(ConfigError, match="path too long"):
        volume_dir("/" + "x" * 256)
