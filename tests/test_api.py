"""The Python API, used only as its users use it: `from unpack import …`.

Results, progress callbacks, documented exceptions (with the CLI's exit codes),
warnings, no process-wide side effects, two bundles from two threads, `py.typed`.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import signal
import threading
from pathlib import Path

import pytest
from conftest import needs_root

import unpack
from fixtures.variants import SMALL_EXPECTED
from unpack import (
    FilesystemError,
    ImageError,
    InspectReport,
    LayerProgress,
    Platform,
    SourceOptions,
    UnpackError,
    UnpackOptions,
    UnpackReport,
    UsageError,
    VerificationError,
    inspect_image,
    unpack_image,
)

pytestmark = needs_root  # the fixtures own files as root


def check_small(bundle: Path) -> None:
    for name, expected in SMALL_EXPECTED.items():
        assert (bundle / "rootfs" / name).read_bytes() == expected["content"]
    assert json.loads((bundle / "config.json").read_text())["ociVersion"]


def test_unpack_image_returns_what_it_unpacked(images: Path, tmp_path: Path) -> None:
    report = unpack_image(f"{images / 'sha512'}", tmp_path / "bundle")
    assert isinstance(report, UnpackReport)
    check_small(tmp_path / "bundle")
    assert report.bundle == str(tmp_path / "bundle")
    assert report.manifest.startswith("sha512:") or report.manifest.startswith("sha256:")
    assert report.transport == "oci" and report.image == f"oci:{images / 'sha512'}"
    assert [layer.entries > 0 for layer in report.layers] == [True] * len(report.layers)
    assert report.seconds > 0


def test_progress_callback_sees_each_layer_start_and_end(images: Path, tmp_path: Path) -> None:
    seen: list[LayerProgress] = []
    report = unpack_image(str(images / "demo"), tmp_path / "b", progress=seen.append)
    count = len(report.layers)
    starts = [p for p in seen if p.done == 0]
    ends = [p for p in seen if p.done == p.total]
    assert [p.number for p in starts] == list(range(1, count + 1))
    assert [p.number for p in ends][-1] == count and all(p.count == count for p in seen)
    assert [p.digest for p in starts] == [layer.digest for layer in report.layers]


def test_errors_are_the_documented_types_and_leave_nothing(images: Path,
                                                          tmp_path: Path) -> None:
    with pytest.raises(UsageError) as missing:
        unpack_image(str(tmp_path / "nope"), tmp_path / "b")
    assert missing.value.exit_code == 2
    with pytest.raises(VerificationError) as corrupt:
        unpack_image(str(images / "corrupt-diff-id"), tmp_path / "b")
    assert isinstance(corrupt.value, ImageError) and corrupt.value.exit_code == 3
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine").write_text("x")
    with pytest.raises(FilesystemError) as full:
        unpack_image(str(images / "sha512"), tmp_path / "full")
    assert full.value.exit_code == 4
    with pytest.raises(UsageError):
        unpack_image(str(images / "sha512"), "")
    assert sorted(os.listdir(tmp_path)) == ["full"]
    assert all(issubclass(e, UnpackError) for e in (UsageError, ImageError, FilesystemError))


def test_options_and_inspect(images: Path, tmp_path: Path) -> None:
    info = inspect_image(str(images / "demo"))
    assert isinstance(info, InspectReport) and info.layers
    options = UnpackOptions(platform=Platform.parse(info.platform or "linux/amd64"),
                            write_config=False)
    unpack_image(str(images / "demo"), tmp_path / "b", options)
    assert os.listdir(tmp_path / "b") == ["rootfs"]


def test_warnings_go_to_warn_or_the_logger(images: Path, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    told: list[str] = []
    options = UnpackOptions(source=SourceOptions(cache=str(tmp_path / "cache")))
    unpack_image(str(images / "sha512"), tmp_path / "a", options, warn=told.append)
    assert any("--cache has no effect" in message for message in told)
    with caplog.at_level(logging.WARNING, logger="oci_unpack"):
        unpack_image(str(images / "sha512"), tmp_path / "b", options)
    assert any("--cache has no effect" in r.getMessage() for r in caplog.records)


def _umask() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))


def test_two_threads_two_bundles_no_process_wide_change(images: Path, tmp_path: Path) -> None:
    """Both bundles complete; umask and signal handlers are never touched, not even while
    they run (other threads of the caller create files too), and a failing unpack in a
    thread that is not the main one cleans up without touching signals."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    umask, seen, errors = _umask(), set(), []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.add(_umask())

    def run(image: str, bundle: Path) -> None:
        try:
            unpack_image(image, bundle)
        except UnpackError as error:
            errors.append(error)

    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=run, args=(str(images / "sha512"), tmp_path / "one")),
               threading.Thread(target=run, args=(str(images / "demo"), tmp_path / "two")),
               threading.Thread(target=run, args=(str(images / "corrupt-diff-id"),
                                                  tmp_path / "three"))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    watcher.join()
    check_small(tmp_path / "one")
    assert (tmp_path / "two" / "config.json").is_file()
    assert [type(e) for e in errors] == [VerificationError]
    assert not (tmp_path / "three").exists()
    assert seen == {umask} and _umask() == umask
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_the_package_is_typed_and_cheap_to_import() -> None:
    assert (importlib.resources.files("unpack") / "py.typed").is_file()
    assert set(unpack.__all__) >= {"unpack_image", "inspect_image", "UnpackOptions",
                                   "UnpackError", "LayerProgress"}
    for name in unpack.__all__:
        assert getattr(unpack, name) is not None
