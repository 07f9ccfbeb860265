"""Rootless bundles run: the busybox fixture unpacked by an unprivileged user, run by that user.

Two throwaway users (see tests/test_rootless.py): one with /etc/subuid and /etc/subgid
ranges (the image user alice, 1001, is then mapped into the range; runc and crun call
newuidmap/newgidmap from Debian's `uidmap`), one without (alice is mapped to the caller).

What this host showed (runc 1.1.5, crun 1.8.1, cgroup v1 hybrid):

* runc refuses supplementary groups whenever it runs with a non-root euid ("cannot set
  any additional groups in a rootless container"), in every release; the rootless
  config therefore has no additionalGids, and the default busybox bundle runs;
* runc needs container uid 0 mapped (it resolves the host root of the container), so a
  bundle made without a subordinate range (only alice -> the caller) is refused with
  "User namespaces enabled, but no user mapping found." -- that test skips saying so;
  crun runs it;
* crun refuses cgroup v1/hybrid hosts ("cgroups in hybrid mode not supported"); there,
  root prepares a private mount namespace with cgroup2 on /sys/fs/cgroup (as
  tests/test_runtime_run.py does) and crun then runs in it as the unprivileged user, with
  no cgroup manager. On a cgroup v2 host crun runs as the user directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import needs_root, needs_tool, run_cli
from test_rootless import HostUser, as_user, host_user, run_cli_as, user_dir, user_env

pytestmark = [needs_root]

TIMEOUT = 120  # a hung runtime fails the test instead of hanging the run (not a timing check)
HELLO = "hello from busybox"
ALICE = "uid=1001(alice) gid=1001(alice)"
PROBE = "echo hello from busybox; id; pwd; ls -lnd /srv/app /home/alice"


def userns_problem(user: HostUser) -> str | None:
    """Why unprivileged user namespaces are unavailable here, or None."""
    for path, bad in (("/proc/sys/user/max_user_namespaces", "0"),
                      ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")):  # fmt: skip
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            return f"unprivileged user namespaces are disabled ({path} = {value})"
    probe = subprocess.run([*as_user(user), "unshare", "--user", "--map-root-user", "true"],
                           capture_output=True, text=True)  # fmt: skip
    if probe.returncode != 0:
        return f"an unprivileged user cannot create a user namespace: {probe.stderr.strip()}"
    return None


def cgroup2_host() -> bool:
    """Whether /sys/fs/cgroup is a cgroup2 mount (a pure v2 host)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/sys/fs/cgroup":
            return fields[fields.index("-") + 1] == "cgroup2"
    return False


@dataclass
class Account:
    """A test user, its directory, and the busybox bundles it unpacked."""

    user: HostUser
    work: Path

    def unpack(self, name: str, *options: str) -> Path:
        bundle = self.work / name
        result = run_cli_as(self.user, "-q", *options, self.work / "busybox", bundle)
        assert result.returncode == 0, result.stderr
        return bundle


def account(subids: bool, images: Path) -> Iterator[Account]:
    if not (images / "busybox").is_dir():
        pytest.skip("busybox fixture unavailable: apt-get install busybox-static")
    with host_user(subids=subids) as made, user_dir(made) as work:
        problem = userns_problem(made)
        if problem:
            pytest.skip(problem)
        shutil.copytree(images / "busybox", work / "busybox")
        yield Account(made, work)


@pytest.fixture(scope="module")
def ranged(images: Path) -> Iterator[Account]:
    """A user with subordinate ID ranges (needs newuidmap/newgidmap to use them)."""
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package uidmap)")
    yield from account(True, images)


@pytest.fixture(scope="module")
def rangeless(images: Path) -> Iterator[Account]:
    """A user without subordinate ID ranges."""
    yield from account(False, images)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def run_runc(who: Account, bundle: Path) -> Run:
    """`runc run` as the account's user, then `runc delete -f` (harmless when gone)."""
    state, name = who.work / "runc-state", f"oci-unpack-test-{uuid.uuid4().hex[:12]}"
    state.mkdir(exist_ok=True)
    os.chown(state, who.user.uid, who.user.gid)
    base = [*as_user(who.user), "runc", "--root", str(state)]
    try:
        result = subprocess.run([*base, "run", "--bundle", str(bundle), name],
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=TIMEOUT, env=user_env(who.user))  # fmt: skip
    finally:
        subprocess.run([*base, "delete", "-f", name], capture_output=True, timeout=TIMEOUT)
    return Run(result.returncode, result.stdout, result.stderr)


CRUN_IN_NAMESPACE = (
    "umount -l /sys/fs/cgroup 2>/dev/null; "
    "mount -t cgroup2 none /sys/fs/cgroup || exit 125; "
    'exec "$@"'
)


def run_crun(who: Account, bundle: Path) -> Run:
    """`crun run` as the user, in a root-prepared cgroup2 mount namespace on v1 hosts."""
    missing = [t for t in ("crun", "unshare", "mount", "umount") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"crun needs {', '.join(missing)}, which is not installed")
    state, name = who.work / "crun-state", f"oci-unpack-test-{uuid.uuid4().hex[:12]}"
    state.mkdir(exist_ok=True)
    os.chown(state, who.user.uid, who.user.gid)
    crun = [*as_user(who.user), "crun", "--root", str(state), "--cgroup-manager=disabled"]
    command = [*crun, "run", "--bundle", str(bundle), name]
    if not cgroup2_host():
        command = ["unshare", "-m", "sh", "-c", CRUN_IN_NAMESPACE, "sh", *command]
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=TIMEOUT, env=user_env(who.user))  # fmt: skip
    finally:
        subprocess.run([*crun, "delete", "-f", name], capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 125, f"could not mount cgroup2 for crun: {result.stderr}"
    return Run(result.returncode, result.stdout, result.stderr)


def without_additional_gids(bundle: Path) -> list[int]:
    """Remove process.user.additionalGids from config.json; return what was there."""
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    removed = config["process"]["user"].pop("additionalGids", [])
    path.write_text(json.dumps(config))
    return removed


# -- with subordinate ranges ----------------------------------------------------------------


@needs_tool("runc")
def test_runc_runs_the_default_rootless_bundle(ranged: Account) -> None:
    run = run_runc(ranged, ranged.unpack("default"))
    assert run.returncode == 0, run.stderr
    assert run.lines()[:2] == [HELLO, ALICE]


@needs_tool("runc")
def test_runc_runs_it_as_alice_in_the_subordinate_range(ranged: Account) -> None:
    """runc starts alice (1001, inside the range); the rootless config has no additionalGids."""
    bundle = ranged.unpack("probe", "--args", json.dumps(["/bin/sh", "-c", PROBE]))
    assert without_additional_gids(bundle) == []
    config = json.loads((bundle / "config.json").read_text())
    assert [m["containerID"] for m in config["linux"]["uidMappings"]] == [0, 1]
    run = run_runc(ranged, bundle)
    assert run.returncode == 0, run.stderr
    lines = run.lines()
    assert lines[:3] == [HELLO, ALICE, "/srv/app"]
    # Runtimes do not read user.rootlesscontainers: every file belongs to the unpacking
    # user, root in the container (alice's recorded 1001:1001 is only recorded).
    assert [line.split()[2:4] for line in lines[3:5]] == [["0", "0"], ["0", "0"]]


def test_crun_runs_it_as_alice_in_the_subordinate_range(ranged: Account) -> None:
    run = run_crun(ranged, ranged.unpack("for-crun"))
    assert run.returncode == 0, run.stderr
    lines = run.lines()
    assert lines[0] == HELLO
    assert lines[1].startswith(ALICE)  # crun also sets alice's groups (50, 63)
    assert lines[2] == "/srv/app"


# -- without subordinate ranges -------------------------------------------------------------


def test_rangeless_config_maps_alice_to_the_caller(rangeless: Account) -> None:
    config = json.loads((rangeless.unpack("config") / "config.json").read_text())
    user = rangeless.user
    assert config["linux"]["uidMappings"] == [{"containerID": 1001, "hostID": user.uid,
                                               "size": 1}]  # fmt: skip
    assert config["linux"]["gidMappings"] == [{"containerID": 1001, "hostID": user.gid,
                                               "size": 1}]  # fmt: skip
    assert config["process"]["user"] == {"uid": 1001, "gid": 1001}  # 50, 63 are not mapped


@needs_tool("runc")
def test_runc_without_ranges(rangeless: Account) -> None:
    run = run_runc(rangeless, rangeless.unpack("for-runc"))
    if run.returncode != 0 and "no user mapping found" in run.stderr:
        pytest.skip(
            "runc needs container uid 0 mapped, and a user without a subordinate "
            f"range can map only alice (1001) to itself: {run.stderr.strip()}"
        )
    assert run.returncode == 0, run.stderr
    assert run.lines()[:3] == [HELLO, ALICE, "/srv/app"]


def test_crun_without_ranges(rangeless: Account) -> None:
    run = run_crun(rangeless, rangeless.unpack("for-crun"))
    assert run.returncode == 0, run.stderr
    assert run.lines()[:3] == [HELLO, ALICE, "/srv/app"]


# -- as root with --uid-map/--gid-map -------------------------------------------------------


@needs_tool("runc")
def test_runc_runs_a_uid_mapped_bundle_as_root(
    images: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not (images / "busybox").is_dir():
        pytest.skip("busybox fixture unavailable: apt-get install busybox-static")
    # The mapped root (host 100000) must reach DIR/rootfs: pytest's tmp_path lives
    # under a 0700 directory, so the bundle goes into a traversable directory of its own.
    parent = Path(tempfile.mkdtemp(prefix="oci-unpack-test-uidmap-", dir="/tmp"))
    parent.chmod(0o711)
    request.addfinalizer(lambda: shutil.rmtree(parent, ignore_errors=True))
    bundle = parent / "bundle"
    run_cli("-q", "--uid-map", "0:100000:65536", "--gid-map", "0:100000:65536",
            images / "busybox", bundle, check=True)  # fmt: skip
    state, name = tmp_path / "state", f"oci-unpack-test-{uuid.uuid4().hex[:12]}"
    try:
        result = subprocess.run(["runc", "--root", str(state), "run", "--bundle", str(bundle),
                                 name], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=TIMEOUT)  # fmt: skip
    finally:
        subprocess.run(["runc", "--root", str(state), "delete", "-f", name],
                       capture_output=True, timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [HELLO, ALICE + " groups=50(staff),63(audio)"]
