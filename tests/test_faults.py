"""Faults at the destination (issue #5): disk full, read-only, permission denied, kills.

Root only: the tests mount small tmpfs file systems and run the unpacker as `nobody`.
To run it as `nobody` although the interpreter may live under a private home (/root is
0700 here), the child gets a private mount namespace in which the interpreter's prefix is
bind-mounted at a world-readable path (with PYTHONPATH and LD_LIBRARY_PATH pointing into
it, so the same libpython and packages load), then drops to uid/gid 65534 with no
capabilities.
After every failure the destination must hold nothing: no DIR, no temp bundle.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import needs_root, needs_tool
from hostile import Run, make_host_dir, remove, run_unpack, snapshot, zero_bomb

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, dirent, reg

pytestmark = [needs_root, needs_tool("unshare"), needs_tool("setpriv")]

NOBODY = 65534
MIB = 1 << 20


@pytest.fixture
def top() -> Iterator[Path]:
    """A world-traversable temp dir (the unprivileged child must reach the image)."""
    path = Path(tempfile.mkdtemp(prefix="oci-unpack-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        remove(path)


def _image(writer: LayoutWriter, layers: list[tuple[dict, str]]) -> Path:
    writer.tag(writer.add_image(layers, {"config": {"Cmd": ["/bin/sh"]}}), "latest")
    writer.write()
    return writer.path


def big_image(path: Path, size: int) -> Path:
    """One layer holding a `size`-byte file of zeros (a small gzip blob)."""
    writer = LayoutWriter(path)
    blob, diff_id = zero_bomb(size, "big")
    desc, _ = writer.add_layer(b"", "gzip", blob=blob)
    return _image(writer, [(desc, diff_id)])


def small_image(path: Path, uid: int = 0) -> Path:
    writer = LayoutWriter(path)
    tar = build_tar([dirent("etc", uid=uid, gid=uid),
                     reg("etc/hello", b"hello\n", uid=uid, gid=uid)])  # fmt: skip
    return _image(writer, [writer.add_layer(tar, "gzip")])


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (skips if mounting is not allowed)."""
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                             str(path)], capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def as_nobody(top: Path) -> list[str]:
    """The interpreter command, run as uid/gid 65534 without capabilities."""
    prefix = os.path.realpath(sys.prefix)
    executable = os.path.realpath(sys.executable)
    purelib = os.path.realpath(sysconfig.get_paths()["purelib"])
    if not (executable.startswith(prefix + "/") and purelib.startswith(prefix + "/")):
        pytest.skip("the interpreter is not laid out under sys.prefix")
    mount_point = top / "python-prefix"
    mount_point.mkdir(exist_ok=True)
    script = (
        'mount --bind "$1" "$2" && export PYTHONPATH="$2/$3" LD_LIBRARY_PATH="$2/lib" && '
        'p="$2/$4" && shift 4 && '
        f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
        '--inh-caps=-all --bounding-set=-all "$p" "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", prefix,
        str(mount_point), os.path.relpath(purelib, prefix), os.path.relpath(executable, prefix),
    ]  # fmt: skip


def _error_line(run: Run) -> str:
    lines = run.stderr.splitlines()
    assert lines and lines[-1].startswith("oci-unpack: error: "), run.stderr
    return lines[-1].lower()


def _temp_bundles(parent: Path) -> list[str]:
    return [n for n in os.listdir(parent) if ".oci-unpack-" in n]


# -- the destination cannot take the bundle -----------------------------------------------------


def test_disk_full(top: Path) -> None:
    """20 MiB into an 8 MiB tmpfs: exit 4 naming the lack of space; the tmpfs is left empty."""
    image = big_image(top / "image", 20 * MIB)
    with tmpfs(top / "mnt", "8m") as mnt:
        run = run_unpack([image, mnt / "bundle"])
        assert run.returncode == 4, run.stderr
        assert "space" in _error_line(run)
        assert os.listdir(mnt) == [], "the partial bundle was not removed"


def test_read_only_destination(top: Path) -> None:
    image = small_image(top / "image")
    with tmpfs(top / "mnt", "8m") as mnt:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        run = run_unpack([image, mnt / "bundle"])
        assert run.returncode == 4, run.stderr
        assert "read-only" in _error_line(run)
        assert os.listdir(mnt) == []


def test_permission_denied_as_nonroot(top: Path) -> None:
    """As nobody, into a directory it may not write: exit 4, permission denied."""
    image = small_image(top / "image")
    locked = top / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    run = run_unpack([image, locked / "bundle"], python=as_nobody(top))
    assert run.returncode == 4, run.stderr
    assert "permission denied" in _error_line(run)
    assert os.listdir(locked) == []


def test_nonroot_foreign_owners_stay_unprivileged(top: Path) -> None:
    """As nobody, an image whose files belong to uid 1000: unpacking never gives a file an
    owner nobody could not (it succeeds rootless, or fails with exit 4 naming the owner)."""
    image = small_image(top / "image", uid=1000)
    writable = top / "writable"
    writable.mkdir()
    os.chown(writable, NOBODY, NOBODY)
    run = run_unpack([image, writable / "bundle"], python=as_nobody(top))
    if run.returncode:
        assert run.returncode == 4, run.stderr
        assert "owner" in _error_line(run)
        assert os.listdir(writable) == []
        return
    hello = writable / "bundle" / "rootfs" / "etc" / "hello"
    assert hello.read_bytes() == b"hello\n"
    assert (hello.stat().st_uid, hello.stat().st_gid) == (NOBODY, NOBODY)


def test_nonroot_run_works_when_nothing_needs_root(top: Path) -> None:
    """The `as_nobody` machinery itself: nobody unpacks an image of nobody's files."""
    image = small_image(top / "image", uid=NOBODY)
    writable = top / "writable"
    writable.mkdir()
    os.chown(writable, NOBODY, NOBODY)
    run = run_unpack([image, writable / "bundle", "--no-config"], python=as_nobody(top))
    assert run.returncode == 0, run.stderr
    hello = writable / "bundle" / "rootfs" / "etc" / "hello"
    assert hello.read_bytes() == b"hello\n" and hello.stat().st_uid == NOBODY


# -- killed mid-unpack ------------------------------------------------------------------------


@contextmanager
def started(image: Path, dest: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m unpack image dest` running; killed and reaped on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unpack", str(image), str(dest)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def wait_for_temp_bundle(proc: subprocess.Popen[bytes], parent: Path) -> list[str]:
    """Poll until the unpacker has made its temp bundle (its rootfs holds a file)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        for name in _temp_bundles(parent):
            rootfs = parent / name / "rootfs"
            if rootfs.is_dir() and any(rootfs.iterdir()):
                return [name]
        time.sleep(0.002)
    pytest.fail(f"the unpacker exited ({proc.returncode}) before it could be interrupted")


def test_sigkill_leaves_temp_bundle_that_the_next_run_removes(top: Path) -> None:
    image = big_image(top / "image", 512 * MIB)
    dest = top / "bundle"
    with started(image, dest) as proc:
        names = wait_for_temp_bundle(proc, top)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    assert not dest.exists(), "DIR appeared although the unpacker was killed"
    assert _temp_bundles(top) == names, "the killed run's temp bundle should remain"
    run = run_unpack([small_image(top / "small"), dest])
    assert run.returncode == 0, run.stderr
    assert (dest / "rootfs" / "etc" / "hello").read_bytes() == b"hello\n"
    assert _temp_bundles(top) == [], "the stale temp bundle was not removed"


def test_sigterm_removes_the_partial_bundle(top: Path) -> None:
    image = big_image(top / "image", 512 * MIB)
    dest = top / "bundle"
    with started(image, dest) as proc:
        wait_for_temp_bundle(proc, top)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 130
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
    assert stderr.startswith("oci-unpack: error: ") and "partial bundle was removed" in stderr
    assert not dest.exists()
    assert _temp_bundles(top) == []


def test_stale_temp_bundle_that_is_a_symlink_is_not_followed(top: Path) -> None:
    """A `.bundle.oci-unpack-<dead pid>-*` symlink to a host dir: removing stale bundles
    must not delete through it; the run succeeds or fails cleanly."""
    host = make_host_dir("oci-unpack-faults-host-")
    try:
        before = snapshot(host)
        (top / ".bundle.oci-unpack-999999999-dead").symlink_to(host)
        shutil.copytree(small_image(top / "image"), top / "image2")
        run = run_unpack([top / "image2", top / "bundle"])
        assert snapshot(host) == before, "the host directory changed"
        assert run.returncode in (0, 4), run.stderr
        if run.returncode:
            _error_line(run)
    finally:
        remove(host)
