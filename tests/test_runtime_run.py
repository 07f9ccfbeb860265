"""It runs: bundles unpacked from the busybox fixture, run by runc and by crun.

Each test unpacks the busybox fixture with the CLI and runs the bundle once per runtime,
checking what the process sees: the image command, user and groups, working directory,
environment, volumes, a read-only rootfs, and the CLI's overrides.

crun on this kind of host (cgroup v1/hybrid, "cgroups in hybrid mode not supported")
only runs in a private mount namespace with cgroup2 mounted on /sys/fs/cgroup and
without a cgroup manager; :func:`crun_command` wraps it so. The namespace is private
(``unshare -m`` makes propagation private), so the host's mounts are untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import needs_root, run_cli

pytestmark = [needs_root]

RUNTIMES = ("runc", "crun")
TIMEOUT = 120  # a hung runtime fails the test instead of hanging the run (not a timing check)

CRUN_IN_NAMESPACE = (
    "umount -l /sys/fs/cgroup 2>/dev/null; "
    "mount -t cgroup2 none /sys/fs/cgroup || exit 125; "
    'exec crun --root "$1" --cgroup-manager=disabled run --bundle "$2" "$3"'
)


def runtime_command(runtime: str, state: Path, bundle: Path, container_id: str) -> list[str]:
    """The command that runs `bundle` as `container_id` under `runtime` (not a terminal)."""
    if runtime == "runc":
        return ["runc", "--root", str(state), "run", "--bundle", str(bundle), container_id]
    return crun_command(state, bundle, container_id)


def crun_command(state: Path, bundle: Path, container_id: str) -> list[str]:
    """`crun run` inside its own mount namespace with cgroup2 at /sys/fs/cgroup."""
    return ["unshare", "-m", "sh", "-c", CRUN_IN_NAMESPACE, "sh", str(state), str(bundle),
            container_id]


def delete_command(runtime: str, state: Path, container_id: str) -> list[str]:
    """`RUNTIME delete -f ID`, which is harmless if the container is already gone."""
    extra = ["--cgroup-manager=disabled"] if runtime == "crun" else []
    return [runtime, "--root", str(state), *extra, "delete", "-f", container_id]


def missing_tools(runtime: str) -> list[str]:
    """The commands `runtime` needs that are not installed."""
    needed = [runtime] + (["unshare", "mount", "umount"] if runtime == "crun" else [])
    return [tool for tool in needed if shutil.which(tool) is None]


@dataclass
class Run:
    """One container run: its exit status and output."""

    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        """The stdout lines."""
        return self.stdout.splitlines()


def run_bundle(runtime: str, bundle: Path, state: Path) -> Run:
    """Run `bundle` under `runtime` with a fresh id, then always delete the container."""
    container_id = f"oci-unpack-test-{uuid.uuid4().hex[:12]}"
    state.mkdir(exist_ok=True)
    try:
        result = subprocess.run(
            runtime_command(runtime, state, bundle, container_id),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
        )
    finally:
        subprocess.run(delete_command(runtime, state, container_id),
                       capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 125 or runtime != "crun", (
        f"could not mount cgroup2 for crun: {result.stderr}"
    )
    return Run(result.returncode, result.stdout, result.stderr)


UnpackAndRun = Callable[..., tuple[Path, Run]]


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    """Each runtime, skipped with the reason when its tools are missing."""
    name: str = request.param
    missing = missing_tools(name)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, which is not installed")
    return name


@pytest.fixture
def busybox(images: Path) -> Path:
    """The busybox fixture image, or skip (it needs Debian's busybox-static)."""
    path = images / "busybox"
    if not path.is_dir():
        pytest.skip("busybox fixture unavailable: apt-get install busybox-static")
    return path


@pytest.fixture
def unpack_and_run(busybox: Path, runtime: str, tmp_path: Path) -> UnpackAndRun:
    """`f(*cli_options) -> (bundle, Run)`: unpack busybox with the options, run it once."""
    count = 0

    def go(*options: str) -> tuple[Path, Run]:
        nonlocal count
        count += 1
        bundle = tmp_path / f"bundle{count}"
        run_cli("-q", *options, busybox, bundle, check=True)
        return bundle, run_bundle(runtime, bundle, tmp_path / "state")

    return go


def sh(script: str) -> list[str]:
    """`--args` running `script` with the image's /bin/sh (a JSON array, no re-quoting)."""
    return ["--args", json.dumps(["/bin/sh", "-c", script])]


def test_image_command_user_cwd_and_env(unpack_and_run: UnpackAndRun) -> None:
    """The default bundle: the image Cmd runs as alice (with her groups) in /srv/app."""
    _, run = unpack_and_run()
    assert run.returncode == 0, run.stderr
    lines = run.lines()
    assert lines[0] == "hello from busybox"
    assert lines[1] == "uid=1001(alice) gid=1001(alice) groups=50(staff),63(audio)"
    assert lines[2] == "/srv/app"
    env = set(lines[3:])
    assert {"GREETING=hi", "PATH=/bin:/usr/bin", "HOME=/home/alice", "PWD=/srv/app"} <= env
    assert not any(line.startswith("TERM=") for line in env)


def test_overrides_hostname_and_tmpfs_volume(unpack_and_run: UnpackAndRun) -> None:
    """-e, --hostname and --args reach the process; /data is a tmpfs alice can write."""
    script = (
        "cat /proc/mounts; echo ---; cat /proc/sys/kernel/hostname; "
        "echo GREETING=$GREETING EXTRA=$EXTRA; "
        "echo x > /data/f && echo data-writable; "
        "echo x > /srv/app/f && echo rootfs-writable; "
        "ls -lnd /data"
    )
    _, run = unpack_and_run("-e", "GREETING=bye", "-e", "EXTRA=1 2", "--hostname", "box-7",
                            *sh(script))
    assert run.returncode == 0, run.stderr
    mounts, _, rest = run.stdout.partition("---\n")
    fields = {line.split()[1]: line.split() for line in mounts.splitlines()}
    assert fields["/data"][2] == "tmpfs"
    data_options = fields["/data"][3].split(",")
    assert {"nosuid", "nodev", "mode=755", "uid=1001", "gid=1001"} <= set(data_options)
    assert fields["/"][3].split(",")[0] == "rw"
    lines = rest.splitlines()
    assert lines[0] == "box-7"
    assert lines[1] == "GREETING=bye EXTRA=1 2"
    assert lines[2:4] == ["data-writable", "rootfs-writable"]
    owner = lines[4].split()
    assert (owner[0], owner[2], owner[3]) == ("drwxr-xr-x", "1001", "1001")


def test_readonly_rootfs(unpack_and_run: UnpackAndRun) -> None:
    """--readonly-rootfs: writes to the rootfs fail with EROFS; the /data volume still works."""
    script = (
        "echo x > /x; echo root=$?; "
        "echo x > /srv/app/f; echo app=$?; "  # alice owns /srv/app: only EROFS can stop her
        "echo x > /data/f && echo data-writable; "
        "echo ---; cat /proc/mounts"
    )
    bundle, run = unpack_and_run("--readonly-rootfs", *sh(script))
    assert run.returncode == 0, run.stderr
    results, _, mounts = run.stdout.partition("---\n")
    lines = results.splitlines()
    assert lines[0] != "root=0" and lines[0].startswith("root=")
    assert lines[1] != "app=0" and lines[1].startswith("app=")
    assert lines[2] == "data-writable"
    assert "/x: Read-only file system" in run.stderr
    assert "/srv/app/f: Read-only file system" in run.stderr
    root = [line.split() for line in mounts.splitlines() if line.split()[1] == "/"]
    assert root[-1][3].split(",")[0] == "ro"
    assert not (bundle / "rootfs" / "x").exists()
    assert not (bundle / "rootfs" / "srv" / "app" / "f").exists()


def test_bind_volume_data_lands_in_bundle(unpack_and_run: UnpackAndRun) -> None:
    """--volumes bind: what the container writes to /data appears in DIR/volumes/data."""
    script = "echo written by $(id -un) > /data/out.txt"
    bundle, run = unpack_and_run("--volumes", "bind", *sh(script))
    assert run.returncode == 0, run.stderr
    written = bundle / "volumes" / "data" / "out.txt"
    assert written.read_text() == "written by alice\n"
    info = written.stat()
    assert (info.st_uid, info.st_gid) == (1001, 1001)
    mountpoint = bundle / "rootfs" / "data"  # created by the runtime, left empty
    assert not mountpoint.exists() or list(mountpoint.iterdir()) == []


@pytest.mark.parametrize("runtime", ["crun"], indirect=True)
def test_crun_helper_leaves_host_cgroup_mount_alone(unpack_and_run: UnpackAndRun) -> None:
    """The crun wrapper's cgroup2 mount stays inside its namespace."""
    before = cgroup_mounts()
    _, run = unpack_and_run("--args", "/bin/true")
    assert run.returncode == 0, run.stderr
    assert cgroup_mounts() == before
    assert os.path.ismount("/sys/fs/cgroup")


def cgroup_mounts() -> list[str]:
    """This mount namespace's mounts at or under /sys/fs/cgroup (mountinfo lines)."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if line.split()[4].startswith("/sys/fs/cgroup")]
