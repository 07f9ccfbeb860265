"""Tests for unpack.config.runtime_config: each image-config-to-runtime-config rule."""

from collections.abc import Callable
from typing import Any

import pytest
import runtime_schema

from unpack.config import RuntimeBundle, RuntimeOptions, runtime_config
from unpack.errors import ConfigError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREFIX = "org.opencontainers.image."

PASSWD = b"""root:x:0:0:root:/root:/bin/sh
bob:x:1000:1000:Bob:/home/bob:/bin/sh
"""
GROUP = b"""root:x:0:
wheel:x:10:root,bob
staff:x:50:bob
"""


def rootfs(files: dict[str, bytes] | None = None) -> Callable[[str], bytes | None]:
    """A read_file over ``files`` (default: /etc/passwd and /etc/group above)."""
    contents = {"/etc/passwd": PASSWD, "/etc/group": GROUP} if files is None else files
    return contents.get


def convert(
    config: dict[str, Any] | None = None,
    options: RuntimeOptions | None = None,
    files: dict[str, bytes] | None = None,
    **image: Any,
) -> RuntimeBundle:
    """Convert an image config with ``config`` and top-level ``image`` fields; validate it."""
    image_config = {"architecture": "amd64", "os": "linux", **image}
    if config is not None:
        image_config["config"] = config
    bundle = runtime_config(image_config, rootfs(files), options or RuntimeOptions())
    runtime_schema.check(bundle.config)
    return bundle


def process(config: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    return convert(config, **kwargs).config["process"]


# --- args ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "options", "args"),
    [
        ({"Entrypoint": ["/e", "-x"], "Cmd": ["c"]}, RuntimeOptions(), ["/e", "-x", "c"]),
        ({"Entrypoint": ["/e"]}, RuntimeOptions(), ["/e"]),
        ({"Entrypoint": ["/e"], "Cmd": None}, RuntimeOptions(), ["/e"]),
        ({"Cmd": ["/c", "1"]}, RuntimeOptions(), ["/c", "1"]),
        ({"Entrypoint": None, "Cmd": ["/c"]}, RuntimeOptions(), ["/c"]),
        ({"Cmd": "/bin/true"}, RuntimeOptions(), ["/bin/true"]),
        ({}, RuntimeOptions(), ["/bin/sh"]),
        ({"Entrypoint": [], "Cmd": []}, RuntimeOptions(), ["/bin/sh"]),
        # args replaces Cmd only
        ({"Entrypoint": ["/e"], "Cmd": ["c"]}, RuntimeOptions(args=("a", "b")), ["/e", "a", "b"]),
        ({"Entrypoint": ["/e"], "Cmd": ["c"]}, RuntimeOptions(args=()), ["/e"]),
        ({"Cmd": ["c"]}, RuntimeOptions(args=("/a",)), ["/a"]),
        # entrypoint replaces Entrypoint and drops Cmd, unless args is given too
        ({"Entrypoint": ["/e"], "Cmd": ["c"]}, RuntimeOptions(entrypoint=("/x",)), ["/x"]),
        (
            {"Entrypoint": ["/e"], "Cmd": ["c"]},
            RuntimeOptions(entrypoint=("/x",), args=("a",)),
            ["/x", "a"],
        ),
        ({"Entrypoint": ["/e"], "Cmd": ["/c"]}, RuntimeOptions(entrypoint=()), ["/bin/sh"]),
        (
            {"Entrypoint": ["/e"], "Cmd": ["c"]},
            RuntimeOptions(entrypoint=(), args=("/a",)),
            ["/a"],
        ),
    ],
)
def test_args(config: dict[str, Any], options: RuntimeOptions, args: list[str]) -> None:
    assert process(config, options=options)["args"] == args


@pytest.mark.parametrize("field", ["Entrypoint", "Cmd", "Env"])
@pytest.mark.parametrize("value", [["ok", 1], {"a": "b"}, 5])
def test_string_list_fields_are_type_checked(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"image config {field}: expected a list of strings"):
        convert({field: value})


# --- env ----------------------------------------------------------------------------------


def test_env_is_verbatim_with_path_and_home_added() -> None:
    env = ["B=2", "A=1", "A=1", "NOEQUALS"]
    assert process({"Env": env})["env"] == [*env, DEFAULT_PATH, "HOME=/root"]


def test_env_keeps_image_path_and_home() -> None:
    env = ["PATH=/only", "HOME=/h"]
    assert process({"Env": env, "User": "bob"})["env"] == env


def test_env_path_default_only_when_no_entry_starts_with_path() -> None:
    env = process({"Env": ["MYPATH=/x", "PATHX=/y", "PATH"]})["env"]
    assert env == ["MYPATH=/x", "PATHX=/y", "PATH", DEFAULT_PATH, "HOME=/root"]
    assert process({"Env": ["PATH="]})["env"] == ["PATH=", "HOME=/root"]


def test_env_home_comes_from_the_user() -> None:
    assert process({"User": "bob"})["env"] == [DEFAULT_PATH, "HOME=/home/bob"]
    assert process({"User": "4242"})["env"] == [DEFAULT_PATH, "HOME=/"]
    assert process({}, files={})["env"] == [DEFAULT_PATH, "HOME=/"]


def test_env_term_only_with_a_terminal() -> None:
    assert "TERM=xterm" not in process({})["env"]
    tty = RuntimeOptions(tty=True)
    assert process({}, options=tty)["env"][-1] == "TERM=xterm"
    assert process({"Env": ["TERM=dumb"]}, options=tty)["env"][0] == "TERM=dumb"
    assert "TERM=xterm" not in process({"Env": ["TERM=dumb"]}, options=tty)["env"]


def test_env_options_override_in_place_or_append() -> None:
    options = RuntimeOptions(env=("A=new", "C=3", "HOME=/x", "PATH=/p", "E=", "C=4"))
    env = process({"Env": ["A=1", "B=2", "A=dup"]}, options=options)["env"]
    assert env == ["A=new", "B=2", "PATH=/p", "HOME=/x", "C=4", "E="]


def test_env_option_value_may_contain_equals() -> None:
    env = process({"Env": ["A=1"]}, options=RuntimeOptions(env=("A=b=c",)))["env"]
    assert env[0] == "A=b=c"


@pytest.mark.parametrize("entry", ["NOVALUE", "=value", ""])
def test_env_option_without_key_and_equals_is_an_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        convert({}, options=RuntimeOptions(env=(entry,)))


# --- cwd, terminal, hostname, root --------------------------------------------------------


@pytest.mark.parametrize(
    ("workdir", "cwd"),
    [
        (None, "/"),
        ("", "/"),
        ("/srv/app", "/srv/app"),
        ("/srv/app/", "/srv/app/"),
        ("srv/app", "/srv/app"),
        ("./srv/../app", "/app"),
    ],
)
def test_cwd(workdir: str | None, cwd: str) -> None:
    assert process({"WorkingDir": workdir})["cwd"] == cwd


def test_options_terminal_hostname_readonly() -> None:
    options = RuntimeOptions(tty=True, hostname="box", readonly_rootfs=True)
    config = convert({}, options=options).config
    assert config["process"]["terminal"] is True
    assert config["hostname"] == "box"
    assert config["root"] == {"path": "rootfs", "readonly": True}
    default = convert({}).config
    assert default["process"]["terminal"] is False
    assert default["hostname"] == "oci-unpack"
    assert default["root"] == {"path": "rootfs", "readonly": False}


# --- user ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, {"uid": 0, "gid": 0, "additionalGids": [10]}),
        ("", {"uid": 0, "gid": 0, "additionalGids": [10]}),
        ("bob", {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}),
        ("1000", {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}),
        ("bob:staff", {"uid": 1000, "gid": 50}),
        ("bob:77", {"uid": 1000, "gid": 77}),
        ("1000:staff", {"uid": 1000, "gid": 50}),
        ("4242", {"uid": 4242, "gid": 0}),
        ("4242:4243", {"uid": 4242, "gid": 4243}),
    ],
)
def test_user(user: str | None, expected: dict[str, Any]) -> None:
    assert process({"User": user})["user"] == expected


def test_user_without_passwd_files() -> None:
    assert process({"User": "7:8"}, files={})["user"] == {"uid": 7, "gid": 8}
    with pytest.raises(ConfigError, match=r'User "bob": no such user \(the image has no'):
        convert({"User": "bob"}, files={})


@pytest.mark.parametrize("user", ["alice", "bob:nogroup", "a:b:c", "bob:", ":staff"])
def test_user_errors(user: str) -> None:
    with pytest.raises(ConfigError, match=f'image config User "{user}"'):
        convert({"User": user})


def test_user_reads_only_passwd_and_group() -> None:
    asked: list[str] = []

    def read_file(path: str) -> bytes | None:
        asked.append(path)
        return None

    runtime_config({"os": "linux"}, read_file, RuntimeOptions())
    assert sorted(asked) == ["/etc/group", "/etc/passwd"]


# --- annotations --------------------------------------------------------------------------


def test_annotations_from_image_fields() -> None:
    config = {"StopSignal": "SIGQUIT", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}
    bundle = convert(
        config,
        variant="v8",
        author="Ann <ann@example.com>",
        created="2024-01-02T03:04:05.123456789Z",
        **{"os.version": "10.0.1", "os.features": ["a", "b"]},
    )
    assert bundle.config["annotations"] == {
        PREFIX + "os": "linux",
        PREFIX + "architecture": "amd64",
        PREFIX + "variant": "v8",
        PREFIX + "os.version": "10.0.1",
        PREFIX + "os.features": "a,b",
        PREFIX + "author": "Ann <ann@example.com>",
        PREFIX + "created": "2024-01-02T03:04:05.123456789Z",
        PREFIX + "stopSignal": "SIGQUIT",
        PREFIX + "exposedPorts": "53/udp,8080/tcp",
    }


def test_annotations_only_where_present() -> None:
    bundle = convert({"StopSignal": "", "ExposedPorts": {}}, author="", variant=None)
    assert bundle.config["annotations"] == {
        PREFIX + "os": "linux",
        PREFIX + "architecture": "amd64",
    }


def test_no_annotations_at_all() -> None:
    bundle = runtime_config({}, rootfs(), RuntimeOptions())
    runtime_schema.check(bundle.config)
    assert "annotations" not in bundle.config


def test_labels_win_over_implicit_annotations() -> None:
    labels = {PREFIX + "os": "custom", PREFIX + "stopSignal": "SIGINT", "com.example.x": ""}
    bundle = convert({"Labels": labels, "StopSignal": "SIGTERM"})
    assert bundle.config["annotations"] == {
        PREFIX + "os": "custom",
        PREFIX + "architecture": "amd64",
        PREFIX + "stopSignal": "SIGINT",
        "com.example.x": "",
    }


def test_label_values_must_be_strings() -> None:
    with pytest.raises(ConfigError, match='image config Labels "n": expected a string value'):
        convert({"Labels": {"n": 1}})


@pytest.mark.parametrize("field", ["author", "created", "variant", "architecture"])
def test_annotation_fields_are_type_checked(field: str) -> None:
    with pytest.raises(ConfigError, match=f"image config {field}: expected a string"):
        convert({}, **{field: 5})


# --- os, null config, docker --------------------------------------------------------------


def test_non_linux_os_is_an_error() -> None:
    with pytest.raises(ConfigError, match='image config os "windows": only linux'):
        convert({}, os="windows")


def test_missing_os_is_taken_as_linux() -> None:
    bundle = runtime_config({"config": {"Cmd": ["/c"]}}, rootfs(), RuntimeOptions())
    runtime_schema.check(bundle.config)
    assert bundle.config["process"]["args"] == ["/c"]


@pytest.mark.parametrize("image", [{"os": "linux"}, {"os": "linux", "config": None}])
def test_null_or_absent_config(image: dict[str, Any]) -> None:
    bundle = runtime_config(image, rootfs(), RuntimeOptions())
    runtime_schema.check(bundle.config)
    process = bundle.config["process"]
    assert process["args"] == ["/bin/sh"]
    assert process["env"] == [DEFAULT_PATH, "HOME=/root"]
    assert process["cwd"] == "/"
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [10]}
    assert bundle.volume_dirs == ()


@pytest.mark.parametrize("image", [[], "x", None])
def test_image_config_must_be_an_object(image: Any) -> None:
    with pytest.raises(ConfigError, match="image config: expected a JSON object"):
        runtime_config(image, rootfs(), RuntimeOptions())


def test_config_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="image config config: expected an object"):
        runtime_config({"os": "linux", "config": []}, rootfs(), RuntimeOptions())


def test_docker_style_config_ignores_container_config() -> None:
    image = {
        "architecture": "amd64",
        "os": "linux",
        "docker_version": "20.10.7",
        "created": "2021-06-01T00:00:00Z",
        "config": {
            "Hostname": "",
            "Domainname": "",
            "User": "bob",
            "AttachStdin": False,
            "Tty": False,
            "Env": ["PATH=/usr/bin"],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "Image": "sha256:abc",
            "Volumes": None,
            "WorkingDir": "",
            "Entrypoint": None,
            "OnBuild": None,
            "Labels": {"maintainer": "x"},
            "StopSignal": "SIGQUIT",
        },
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"], "User": "nobody"},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created": "2021-06-01T00:00:00Z", "empty_layer": True}],
    }
    bundle = runtime_config(image, rootfs(), RuntimeOptions())
    runtime_schema.check(bundle.config)
    process = bundle.config["process"]
    assert process["args"] == ["nginx", "-g", "daemon off;"]
    assert process["env"] == ["PATH=/usr/bin", "HOME=/home/bob"]
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 50]}
    assert process["cwd"] == "/"
    assert bundle.config["annotations"] == {
        PREFIX + "os": "linux",
        PREFIX + "architecture": "amd64",
        PREFIX + "created": "2021-06-01T00:00:00Z",
        PREFIX + "stopSignal": "SIGQUIT",
        "maintainer": "x",
    }


def test_result_is_independent_of_input() -> None:
    env = ["A=1"]
    image = {"os": "linux", "config": {"Env": env, "Labels": {"k": "v"}}}
    bundle = runtime_config(image, rootfs(), RuntimeOptions(env=("A=2",)))
    bundle.config["process"]["env"].append("B=2")
    bundle.config["annotations"]["k"] = "changed"
    assert env == ["A=1"]
    assert image["config"]["Labels"] == {"k": "v"}
