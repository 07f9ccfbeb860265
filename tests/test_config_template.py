"""Tests for unpack.config.template and the runtime-spec schema it must satisfy."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import runtime_schema

from unpack.config.template import DEFAULT_HOSTNAME, OCI_VERSION, default_config


def test_default_config_validates_against_runtime_spec_schema() -> None:
    runtime_schema.require_validator().validate(default_config())


def test_schema_rejects_an_invalid_config() -> None:
    validator = runtime_schema.require_validator()
    config = default_config()
    config["process"]["user"]["uid"] = -1
    assert not validator.is_valid(config)


def test_default_config_is_fresh_each_call() -> None:
    first = default_config()
    first["mounts"].clear()
    first["process"]["env"].append("X=1")
    assert default_config()["mounts"]
    assert default_config()["process"]["env"] == [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ]


def test_default_config_contents() -> None:
    config = default_config()
    assert config["ociVersion"] == OCI_VERSION
    assert config["hostname"] == DEFAULT_HOSTNAME
    assert config["root"] == {"path": "rootfs", "readonly": False}
    assert config["process"]["terminal"] is False
    assert config["process"]["noNewPrivileges"] is True
    assert config["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert [ns["type"] for ns in config["linux"]["namespaces"]] == [
        "pid",
        "network",
        "ipc",
        "uts",
        "mount",
        "cgroup",
    ]
    assert config["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert [m["destination"] for m in config["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_matches_runc_spec_apart_from_documented_differences(tmp_path: Path) -> None:
    subprocess.run(["runc", "spec"], cwd=tmp_path, check=True)
    runc = json.loads((tmp_path / "config.json").read_text())
    ours = default_config()
    assert ours["mounts"] == runc["mounts"]
    assert ours["linux"]["resources"] == runc["linux"]["resources"]
    assert ours["linux"]["readonlyPaths"] == runc["linux"]["readonlyPaths"]
    assert set(runc["linux"]["maskedPaths"]) <= set(ours["linux"]["maskedPaths"])
    assert (
        runc["linux"]["namespaces"]
        == ours["linux"]["namespaces"][: len(runc["linux"]["namespaces"])]
    )
    for key in ("bounding", "effective", "permitted"):
        assert ours["process"]["capabilities"][key] == runc["process"]["capabilities"][key]
    for key in ("rlimits", "noNewPrivileges", "cwd", "user"):
        assert ours["process"][key] == runc["process"][key]
