"""The runtime options of `oci-unpack unpack`, seen in the config.json the CLI writes.

The converter's rules have unit tests (test_config_*.py); these check that each CLI option
reaches DIR/config.json, that bind volumes get their directories, that the written config
is valid against the runtime-spec schema, and how bad options and bad users are reported.
Unpacking needs root (the fixtures own files as other users; rootless unpacking is not
supported yet), so only the tests of usage errors, caught before unpacking, run without.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import runtime_schema
from conftest import needs_root, run_cli

from fixtures.images import BUSYBOX_CONFIG, DEMO_CONFIG, GROUP, PASSWD
from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, dirent, reg

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_path(images: Path, name: str) -> Path:
    """The fixture image `name`, or skip when it could not be built here."""
    path = images / name
    if not path.is_dir():
        pytest.skip(f"fixture image {name!r} is unavailable here (e.g. no busybox-static)")
    return path


def unpack_config(image: Path, bundle: Path, *options: str) -> dict[str, Any]:
    """Unpack `image` into `bundle` with `options`; return config.json, checked by the schema."""
    run_cli("-q", *options, image, bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    runtime_schema.check(config)
    return config


def build_image(path: Path, config: dict[str, Any], passwd: bool = True) -> None:
    """A one-layer image with the fixtures' /etc/passwd and /etc/group (unless `passwd`)."""
    entries = [dirent("etc")]
    if passwd:
        entries += [reg("etc/passwd", PASSWD), reg("etc/group", GROUP)]
    out = LayoutWriter(path)
    layer = out.add_layer(build_tar(entries), "gzip")
    out.tag(out.add_image([layer], {"config": config}), "latest")
    out.write()


def mount_at(config: dict[str, Any], destination: str) -> dict[str, Any] | None:
    """The one mount at `destination`, or None."""
    found = [m for m in config["mounts"] if m["destination"] == destination]
    assert len(found) <= 1, found
    return found[0] if found else None


def assert_failed_cleanly(result: Any, bundle: Path, code: int, *needles: str) -> str:
    """Exit `code`, one `oci-unpack: error:` line naming `needles`, nothing left at `bundle`."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("oci-unpack: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not bundle.exists()
    leftovers = [p.name for p in bundle.parent.iterdir() if ".oci-unpack-" in p.name]
    assert leftovers == []
    return lines[0]


# ------------------------------------------------------------------ defaults and schema


@needs_root
def test_busybox_default_config_is_schema_valid_and_complete(images: Path, tmp_path: Path) -> None:
    """Without options: the image's command, env, cwd, resolved user; a tmpfs for /data."""
    bundle = tmp_path / "bundle"
    config = unpack_config(image_path(images, "busybox"), bundle)
    runtime_schema.require_validator().validate(config)

    image = BUSYBOX_CONFIG["config"]
    process = config["process"]
    assert process["terminal"] is False
    assert process["args"] == image["Cmd"]
    assert process["env"] == [*image["Env"], "HOME=/home/alice"]
    assert process["cwd"] == "/srv/app"
    assert process["user"] == {"uid": 1001, "gid": 1001, "additionalGids": [50, 63]}
    assert config["root"] == {"path": "rootfs", "readonly": False}
    assert config["hostname"] == "oci-unpack"
    assert mount_at(config, "/data") == {
        "destination": "/data",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "nodev", "mode=755", "uid=1001", "gid=1001"],
    }
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


@needs_root
def test_demo_default_config_entrypoint_and_annotations(images: Path, tmp_path: Path) -> None:
    """The demo image: Entrypoint + Cmd, labels over implicit annotations."""
    config = unpack_config(image_path(images, "demo"), tmp_path / "bundle")
    image = DEMO_CONFIG["config"]
    assert config["process"]["args"] == [*image["Entrypoint"], *image["Cmd"]]
    assert config["process"]["cwd"] == "/home/alice"
    assert config["process"]["env"] == [*image["Env"], "HOME=/home/alice"]
    annotations = config["annotations"]
    assert annotations["org.opencontainers.image.title"] == "demo"
    assert annotations["com.example.tier"] == "fixture"
    assert annotations["org.opencontainers.image.exposedPorts"] == "53/udp,8080/tcp"
    assert annotations["org.opencontainers.image.stopSignal"] == "SIGINT"


# ------------------------------------------------------------------ one option at a time


@needs_root
def test_tty_sets_terminal_and_term(images: Path, tmp_path: Path) -> None:
    """--tty: process.terminal true, and TERM=xterm since the image sets no TERM."""
    config = unpack_config(image_path(images, "busybox"), tmp_path / "bundle", "--tty")
    assert config["process"]["terminal"] is True
    assert config["process"]["env"][-1] == "TERM=xterm"


@needs_root
def test_hostname(images: Path, tmp_path: Path) -> None:
    """--hostname: the container hostname; the uts namespace is there for it to apply."""
    config = unpack_config(
        image_path(images, "busybox"), tmp_path / "bundle", "--hostname", "box-1"
    )
    assert config["hostname"] == "box-1"
    assert {"type": "uts"} in config["linux"]["namespaces"]


@needs_root
def test_readonly_rootfs(images: Path, tmp_path: Path) -> None:
    """--readonly-rootfs: root.readonly true; volumes stay tmpfs mounts (writable)."""
    config = unpack_config(
        image_path(images, "busybox"), tmp_path / "bundle", "--readonly-rootfs"
    )
    assert config["root"] == {"path": "rootfs", "readonly": True}
    volume = mount_at(config, "/data")
    assert volume is not None
    assert volume["type"] == "tmpfs"
    assert "ro" not in volume["options"]


@needs_root
def test_env_overrides_in_place_and_adds(images: Path, tmp_path: Path) -> None:
    """-e replaces an image variable where it stood, replaces a default, and appends new ones."""
    config = unpack_config(
        image_path(images, "busybox"), tmp_path / "bundle",
        "-e", "GREETING=bye", "--env", "NEW=a=b", "-e", "HOME=/tmp", "-e", "EMPTY=",
    )
    assert config["process"]["env"] == [
        "PATH=/bin:/usr/bin", "GREETING=bye", "HOME=/tmp", "NEW=a=b", "EMPTY=",
    ]


@needs_root
def test_env_override_of_default_path(images: Path, tmp_path: Path) -> None:
    """An image without PATH gets the default one, and -e PATH= replaces even that."""
    layout = tmp_path / "nopath"
    build_image(layout, {"Cmd": ["/bin/true"]})
    config = unpack_config(layout, tmp_path / "a")
    assert config["process"]["env"] == [DEFAULT_PATH, "HOME=/root"]
    config = unpack_config(layout, tmp_path / "b", "-e", "PATH=/opt/bin")
    assert config["process"]["env"] == ["PATH=/opt/bin", "HOME=/root"]


@needs_root
@pytest.mark.parametrize(
    ("image", "options", "args"),
    [
        ("busybox", ["--args", "sh -c 'echo a  b; id'"], ["sh", "-c", "echo a  b; id"]),
        ("busybox", ["--args", '["sh", "-c", "echo \\"x\\""]'], ["sh", "-c", 'echo "x"']),
        ("busybox", ["--args", "  [ \"/bin/true\" ]"], ["/bin/true"]),
        ("demo", ["--args", "serve 9090"], ["/usr/bin/demo-entry", "serve", "9090"]),
        ("demo", ["--args", "[]"], ["/usr/bin/demo-entry"]),
        ("demo", ["--entrypoint", "/bin/other --flag"], ["/bin/other", "--flag"]),
        ("demo", ["--entrypoint", '["/bin/other", "a b"]'], ["/bin/other", "a b"]),
        (
            "demo",
            ["--entrypoint", '["/bin/x"]', "--args", "'one arg' two"],
            ["/bin/x", "one arg", "two"],
        ),
        ("busybox", ["--entrypoint", "/bin/echo", "--args", '["$HOME"]'], ["/bin/echo", "$HOME"]),
        ("busybox", ["--args", '{"a": 1}'], ["{a:", "1}"]),
    ],
    ids=[
        "args-words", "args-json", "args-json-spaces", "args-after-entrypoint",
        "args-empty-json", "entrypoint-words-drops-cmd", "entrypoint-json-drops-cmd",
        "entrypoint-json-args-words", "entrypoint-words-args-json", "json-object-is-words",
    ],
)
def test_args_and_entrypoint(
    images: Path, tmp_path: Path, image: str, options: list[str], args: list[str]
) -> None:
    """--args replaces Cmd, --entrypoint replaces Entrypoint (and Cmd unless --args is given)."""
    config = unpack_config(image_path(images, image), tmp_path / "bundle", *options)
    assert config["process"]["args"] == args


@needs_root
def test_volumes_none(images: Path, tmp_path: Path) -> None:
    """--volumes none: no mount for /data and no volumes directory."""
    bundle = tmp_path / "bundle"
    config = unpack_config(image_path(images, "demo"), bundle, "--volumes", "none")
    assert mount_at(config, "/data") is None
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    ]
    assert not (bundle / "volumes").exists()


@needs_root
def test_volumes_bind_mount_and_directory(images: Path, tmp_path: Path) -> None:
    """--volumes bind: /data bind-mounted from DIR/volumes/data, which exists, 0755."""
    bundle = tmp_path / "bundle"
    config = unpack_config(image_path(images, "demo"), bundle, "--volumes", "bind")
    assert mount_at(config, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": "volumes/data",
        "options": ["rbind", "nosuid", "nodev"],
    }
    info = (bundle / "volumes" / "data").lstat()
    assert (info.st_mode & 0o7777, os.path.isdir(bundle / "volumes" / "data")) == (0o755, True)
    assert sorted(p.name for p in (bundle / "volumes").iterdir()) == ["data"]


@needs_root
def test_volumes_bind_directories_owned_by_process_user(tmp_path: Path) -> None:
    """Each bind volume directory belongs to the process user; odd paths are escaped."""
    layout = tmp_path / "vols"
    build_image(layout, {
        "User": "alice",
        "Volumes": {"/data": {}, "/var/lib/db": {}, "cache dir/%x": {}, "/dev/shm": {}},
    })
    bundle = tmp_path / "bundle"
    config = unpack_config(layout, bundle, "--volumes", "bind")
    binds = {m["destination"]: m["source"] for m in config["mounts"] if m["type"] == "bind"}
    assert binds == {
        "/cache dir/%x": "volumes/cache%20dir%2F%25x",
        "/data": "volumes/data",
        "/var/lib/db": "volumes/var%2Flib%2Fdb",
    }
    assert mount_at(config, "/dev/shm")["type"] == "tmpfs"  # the runtime's own mount stays
    for source in binds.values():
        info = (bundle / source).lstat()
        assert (info.st_uid, info.st_gid) == (1001, 1001), source
    assert sorted(p.name for p in (bundle / "volumes").iterdir()) == sorted(
        source.removeprefix("volumes/") for source in binds.values()
    )


@needs_root
def test_no_config_writes_only_the_rootfs(images: Path, tmp_path: Path) -> None:
    """--no-config: a rootfs, no config.json, and no volume directories even with bind."""
    bundle = tmp_path / "bundle"
    run_cli("-q", "--no-config", "--volumes", "bind", image_path(images, "busybox"), bundle,
            check=True)
    assert [p.name for p in bundle.iterdir()] == ["rootfs"]
    assert (bundle / "rootfs" / "srv" / "app" / "README").read_bytes() == (
        b"the working directory\n"
    )


@needs_root
def test_no_config_skips_user_resolution(tmp_path: Path) -> None:
    """--no-config unpacks an image whose User would not resolve (no config is made)."""
    layout = tmp_path / "ghost"
    build_image(layout, {"User": "ghost"})
    bundle = tmp_path / "bundle"
    run_cli("-q", "--no-config", layout, bundle, check=True)
    assert (bundle / "rootfs" / "etc" / "passwd").read_bytes() == PASSWD
    assert not (bundle / "config.json").exists()


# ------------------------------------------------------------------ failures


@needs_root
@pytest.mark.parametrize(
    ("user", "passwd", "needles"),
    [
        ("mallory", True, ['"mallory"', "no such user in /etc/passwd"]),
        ("alice:wheel", True, ['"alice:wheel"', 'group "wheel"', "/etc/group"]),
        ("alice", False, ['"alice"', "the image has no /etc/passwd"]),
    ],
    ids=["unknown-user", "unknown-group", "no-passwd-file"],
)
def test_unknown_user_fails_with_exit_3_and_leaves_nothing(
    tmp_path: Path, user: str, passwd: bool, needles: list[str]
) -> None:
    """A User naming a user or group the rootfs lacks: exit 3, one line, no DIR."""
    layout = tmp_path / "image"
    build_image(layout, {"User": user, "Cmd": ["/bin/sh"]}, passwd=passwd)
    bundle = tmp_path / "out" / "bundle"
    bundle.parent.mkdir()
    result = run_cli(layout, bundle)
    assert_failed_cleanly(result, bundle, 3, *needles)
    assert list(bundle.parent.iterdir()) == []


@needs_root
@pytest.mark.parametrize("entry", ["NOEQUALS", "=value"])
def test_bad_env_is_a_usage_error(images: Path, tmp_path: Path, entry: str) -> None:
    """-e without KEY= is refused before anything is unpacked: exit 2, one line."""
    bundle = tmp_path / "out" / "bundle"
    bundle.parent.mkdir()
    result = run_cli("-e", entry, image_path(images, "busybox"), bundle)
    assert_failed_cleanly(result, bundle, 2, f"--env {entry!r}", "KEY=VAL")
    assert list(bundle.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (["--args", "[1, 2]"], ["--args", "JSON array of strings"]),
        (["--entrypoint", '["/bin/sh"'], ["--entrypoint", "invalid JSON array"]),
        (["--entrypoint", "sh -c 'unterminated"], ["--entrypoint", "quotation"]),
    ],
    ids=["args-not-strings", "entrypoint-bad-json", "entrypoint-bad-quote"],
)
def test_bad_command_words(
    images: Path, tmp_path: Path, options: list[str], needles: list[str]
) -> None:
    """A malformed --args/--entrypoint is a usage error (exit 2), reported before unpacking."""
    bundle = tmp_path / "bundle"
    result = run_cli(*options, image_path(images, "busybox"), bundle)
    assert_failed_cleanly(result, bundle, 2, *needles)


def test_bad_volumes_mode_is_usage_error(images: Path, tmp_path: Path) -> None:
    """--volumes only takes tmpfs, bind or none (click reports it: exit 2)."""
    bundle = tmp_path / "bundle"
    result = run_cli("--volumes", "nfs", image_path(images, "busybox"), bundle)
    assert result.returncode == 2
    assert "nfs" in result.stderr
    assert not bundle.exists()
