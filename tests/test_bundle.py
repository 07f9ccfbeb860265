"""No partial bundle: failures, signals and stale temporary directories.

The bundle is built in `.DIR.oci-unpack-PID-RANDOM` beside DIR and renamed into place
only when complete — or, when DIR is an existing empty directory, in
`DIR/.oci-unpack-PID-RANDOM`, whose `rootfs` and `config.json` are then renamed into
DIR (which keeps its inode); after any failure neither a bundle nor a temporary
directory remains.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from conftest import REPO, needs_root, run_cli

from fixtures.layout import LayoutWriter, digest_of
from fixtures.tarwriter import BLOCK, build_tar, dirent, header, reg
from fixtures.variants import CORRUPT_KINDS, SMALL_EXPECTED
from unpack.errors import FilesystemError
from unpack.fs import bundle as bundle_module
from unpack.fs.bundle import BundleDir

BIG_SIZE = 300 << 20

#: Unpacking sets file owners (rootless unpacking is not supported yet).
pytestmark = needs_root


def temp_dirs(parent: Path) -> list[str]:
    return sorted(n for n in os.listdir(parent) if ".oci-unpack-" in n)


def assert_nothing_left(dest: Path) -> None:
    assert not os.path.lexists(dest), f"{dest} exists after a failure"
    assert temp_dirs(dest.parent) == []


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


# -- failures leave nothing ------------------------------------------------------------------


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_corrupt_image_leaves_nothing(images: Path, tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "bundle"
    result = run_cli(images / f"corrupt-{kind}", dest)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci-unpack: error: "), result.stderr
    assert_nothing_left(dest)


@pytest.mark.parametrize("kind", CORRUPT_KINDS)
def test_corrupt_image_leaves_an_empty_dir_empty(images: Path, tmp_path: Path, kind: str) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir()
    result = run_cli(images / f"corrupt-{kind}", dest)
    assert result.returncode == 3, result.stderr
    assert os.listdir(dest) == []
    assert temp_dirs(tmp_path) == []


def _three_layers(root: Path, *, break_layer: int, how: str) -> list[dict[str, str]]:
    """Three gzip layers with real content; layer `break_layer` (1-based) broken by `how`."""
    out = LayoutWriter(root)
    layers = []
    for number in (1, 2, 3):
        tar = build_tar([dirent(f"d{number}"),
                         *(reg(f"d{number}/f{i}", os.urandom(4096)) for i in range(50))])
        desc, diff_id = out.add_layer(tar)
        if number == break_layer:
            path = out.blob_path(desc["digest"])
            if how == "diff_id":
                diff_id = digest_of(b"something else")
            elif how == "truncated":
                blob = path.read_bytes()[: desc["size"] * 2 // 3]
                path.write_bytes(blob)
            elif how == "digest":
                blob = bytearray(path.read_bytes())
                blob[4:8] = b"\1\1\1\1"  # gzip mtime: still valid gzip, other digest
                path.write_bytes(bytes(blob))
        layers.append((desc, diff_id))
    out.tag(out.add_image(layers, {}), "latest")
    out.write()
    return [desc for desc, _ in layers]


@pytest.mark.parametrize("how", ["diff_id", "truncated", "digest"])
@pytest.mark.parametrize("break_layer", [2, 3])
def test_failure_in_a_later_layer_leaves_nothing(
    tmp_path: Path, how: str, break_layer: int
) -> None:
    descs = _three_layers(tmp_path / "img", break_layer=break_layer, how=how)
    dest = tmp_path / "bundle"
    result = run_cli(tmp_path / "img", dest)
    assert result.returncode == 3, result.stderr
    assert descs[break_layer - 1]["digest"] in result.stderr
    assert_nothing_left(dest)


def test_layer_refused_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    out = LayoutWriter(tmp_path / "img")
    good = out.add_layer(build_tar([dirent("etc"), reg("etc/a", b"a")]))
    bad_header = reg("bad-checksum", b"x", raw={"chksum": b"0000000\0"})
    broken = build_tar([reg("ok1", b"1" * 5000), bad_header, reg("ok2", b"2")])
    out.tag(out.add_image([good, out.add_layer(broken)], {}), "latest")
    out.write()
    result = run_cli(tmp_path / "img", tmp_path / "bundle")
    assert result.returncode == 3, result.stderr
    assert "checksum" in result.stderr
    assert_nothing_left(tmp_path / "bundle")


# -- DIR and stale temporary directories -----------------------------------------------------


def _check_small_bundle(dest: Path) -> None:
    assert (dest / "config.json").is_file()
    for name, expected in SMALL_EXPECTED.items():
        assert (dest / "rootfs" / name).read_bytes() == expected["content"]


def test_an_empty_dir_keeps_its_inode(images: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    dest.mkdir(mode=0o750)
    before = dest.stat()
    result = run_cli(images / "sha512", dest)
    assert result.returncode == 0, result.stderr
    _check_small_bundle(dest)
    after = dest.stat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert sorted(os.listdir(dest)) == ["config.json", "rootfs"]
    assert temp_dirs(tmp_path) == []


def test_dot_is_the_working_directory_kept(images: Path, tmp_path: Path) -> None:
    """`oci-unpack IMAGE .` in an empty directory: a shell standing there stays in it."""
    before = tmp_path.stat().st_ino
    result = run_cli(images / "sha512", ".", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tmp_path.stat().st_ino == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "rootfs"]
    _check_small_bundle(tmp_path)


def test_a_stale_temp_dir_inside_dir_is_removed(images: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bundle"
    stale = dest / f".oci-unpack-{dead_pid()}-deadbeef"
    (stale / "rootfs").mkdir(parents=True)
    result = run_cli(images / "sha512", dest)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(dest)) == ["config.json", "rootfs"]


def test_a_failed_move_into_dir_leaves_it_empty(tmp_path: Path) -> None:
    """config.json cannot be moved in (a directory of that name is in the way, made after
    the check): the rootfs moved first goes back, DIR is left as it was."""
    dest = tmp_path / "bundle"
    dest.mkdir()
    with BundleDir(str(dest)) as bundle:
        (Path(bundle.path) / "rootfs").mkdir()
        (Path(bundle.path) / "config.json").write_text("{}")
        (dest / "config.json").mkdir()
        (dest / "config.json" / "x").write_text("in the way")
        with pytest.raises(FilesystemError, match="cannot move the bundle into place"):
            bundle.commit()
    assert os.listdir(dest) == ["config.json"]


def test_slow_removal_is_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    announced: list[str] = []
    monkeypatch.setattr(bundle_module, "_SLOW_DISCARD", 0.01)
    real = bundle_module.remove_tree

    def slow(fd: int, name: str) -> None:
        time.sleep(0.3)
        real(fd, name)

    monkeypatch.setattr(bundle_module, "remove_tree", slow)
    with BundleDir(str(tmp_path / "b"), on_slow_discard=lambda: announced.append("!")):
        pass
    assert announced == ["!"]
    with BundleDir(str(tmp_path / "c"), on_slow_discard=lambda: announced.append("?")) as b:
        b.commit()  # nothing removed: nothing announced
    assert announced == ["!"]


def test_a_read_only_destination_is_named_as_dir(images: Path, tmp_path: Path) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)]
                      ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = run_cli(images / "sha512", mount / "bundle")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
    assert result.returncode == 4
    assert f"{mount / 'bundle'}: cannot create the bundle there (Read-only file system)" \
        in result.stderr
    assert ".oci-unpack-" not in result.stderr


def test_relative_dir(images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = subprocess.run([sys.executable, "-m", "unpack", images / "sha512", "bundle"],
                            capture_output=True, text=True, env={**os.environ,
                                                                 "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    _check_small_bundle(tmp_path / "bundle")
    assert temp_dirs(tmp_path) == []


def test_stale_temp_dir_of_a_dead_process_is_removed(images: Path, tmp_path: Path) -> None:
    stale = tmp_path / f".bundle.oci-unpack-{dead_pid()}-deadbeef"
    (stale / "rootfs" / "etc").mkdir(parents=True)
    (stale / "rootfs" / "etc" / "passwd").write_text("half-written\n")
    (stale / "rootfs" / "link").symlink_to("/etc/passwd")
    result = run_cli(images / "sha512", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert temp_dirs(tmp_path) == []
    _check_small_bundle(tmp_path / "bundle")


def test_stale_temp_dir_is_removed_even_when_the_run_fails(images: Path, tmp_path: Path) -> None:
    stale = tmp_path / f".bundle.oci-unpack-{dead_pid()}-0badf00d"
    stale.mkdir()
    result = run_cli(images / "corrupt-diff-id", tmp_path / "bundle")
    assert result.returncode == 3
    assert_nothing_left(tmp_path / "bundle")


def test_temp_dir_of_a_live_process_is_left_alone(images: Path, tmp_path: Path) -> None:
    alive = tmp_path / f".bundle.oci-unpack-{os.getpid()}-12345678"
    (alive / "rootfs").mkdir(parents=True)
    (alive / "rootfs" / "file").write_text("in progress\n")
    result = run_cli(images / "sha512", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert (alive / "rootfs" / "file").read_text() == "in progress\n"
    assert temp_dirs(tmp_path) == [alive.name]
    _check_small_bundle(tmp_path / "bundle")


def test_other_temp_dirs_are_left_alone(images: Path, tmp_path: Path) -> None:
    pid = dead_pid()
    others = [
        tmp_path / f".other.oci-unpack-{pid}-aaaaaaaa",  # another DIR's
        tmp_path / ".bundle.oci-unpack-notapid-bbbbbbbb",  # not ours to judge
        tmp_path / f".bundle-2.oci-unpack-{pid}-cccccccc",
    ]
    for path in others:
        path.mkdir()
    result = run_cli(images / "sha512", tmp_path / "bundle")
    assert result.returncode == 0, result.stderr
    assert all(path.is_dir() for path in others)


def test_bundle_dir_discard(tmp_path: Path) -> None:
    """The BundleDir context manager removes its temporary directory unless committed."""
    with BundleDir(str(tmp_path / "bundle")) as bundle:
        assert Path(bundle.path).parent == tmp_path
        assert Path(bundle.path).name.startswith(f".bundle.oci-unpack-{os.getpid()}-")
        (Path(bundle.path) / "rootfs").mkdir()
        (Path(bundle.path) / "rootfs" / "x").write_text("x")
    assert_nothing_left(tmp_path / "bundle")
    with BundleDir(str(tmp_path / "bundle")) as bundle:
        (Path(bundle.path) / "config.json").write_text("{}")
        bundle.commit()
    assert (tmp_path / "bundle" / "config.json").read_text() == "{}"
    assert temp_dirs(tmp_path) == []


# -- signals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout with one gzip layer holding a 300 MB file of zeros (about 1 MB compressed)."""
    root = tmp_path_factory.mktemp("big") / "img"
    fields: dict[str, bytes | int] = {
        "name": b"big.bin", "mode": 0o644, "uid": 0, "gid": 0, "size": BIG_SIZE,
        "mtime": 0, "typeflag": b"0", "magic": b"ustar\0", "version": b"00",
    }
    diff_id = hashlib.sha256()
    writer = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    zeros = bytes(1 << 20)
    for data in (header(fields), *(zeros for _ in range(BIG_SIZE >> 20)), bytes(2 * BLOCK)):
        diff_id.update(data)
        parts.append(writer.compress(data))
    parts.append(writer.flush())
    out = LayoutWriter(root)
    desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            **out.add_blob(b"".join(parts))}
    small = out.add_layer(build_tar([dirent("etc"), reg("etc/hostname", b"big\n")]))
    out.tag(out.add_image([small, (desc, f"sha256:{diff_id.hexdigest()}")], {}), "latest")
    out.write()
    return root


def _start_and_wait_for_the_big_file(image: Path, dest: Path) -> subprocess.Popen:
    """Start an unpack and return once the big file is being written in the temp dir."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unpack", image, dest],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )
    deadline = time.monotonic() + 120  # a guard against hanging, not a speed check
    while time.monotonic() < deadline:
        if list(dest.parent.glob(f".{dest.name}.oci-unpack-*/rootfs/big.bin")):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.002)
    proc.kill()
    _out, err = proc.communicate()
    pytest.fail(f"the unpack ended (or hung) before the big file appeared: {proc.returncode} "
                f"{err}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_removes_the_partial_bundle(big_image: Path, tmp_path: Path, signum: int) -> None:
    dest = tmp_path / "bundle"
    proc = _start_and_wait_for_the_big_file(big_image, dest)
    assert len(temp_dirs(tmp_path)) == 1
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci-unpack: error: "), stderr
    assert "partial bundle was removed" in lines[0]
    assert stdout == ""
    assert_nothing_left(dest)


def test_sigkill_leftover_is_removed_by_the_next_run(
    big_image: Path, images: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "bundle"
    proc = _start_and_wait_for_the_big_file(big_image, dest)
    proc.kill()
    proc.communicate(timeout=120)
    (leftover,) = temp_dirs(tmp_path)
    assert leftover.startswith(f".bundle.oci-unpack-{proc.pid}-")
    assert not dest.exists()
    result = run_cli(images / "sha512", dest)
    assert result.returncode == 0, result.stderr
    assert temp_dirs(tmp_path) == []
    _check_small_bundle(dest)
