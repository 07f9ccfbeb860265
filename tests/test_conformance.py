"""The external conformance kit (`../shared/conformance/run.py`), run against oci-unpack.

The kit builds an image per case, runs the command, and checks the bundle and that
nothing outside it changed. Skipped when the kit is not beside the repository.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

KIT = REPO.parent / "shared" / "conformance"
RUNNER = KIT / "run.py"


@pytest.mark.skipif(not RUNNER.is_file(), reason=f"conformance kit not found at {KIT}")
def test_conformance_kit_passes() -> None:
    cmd = f"{shlex.quote(sys.executable)} -m unpack {{image}}:{{ref}} {{dir}}"
    args = [sys.executable, str(RUNNER), "--cmd", cmd]
    no_run = os.geteuid() != 0 or shutil.which("runc") is None
    if no_run:
        args.append("--no-run")  # the runtime cases need root and runc
    result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=900)
    lines = result.stdout.strip().splitlines()
    failures = [line for line in lines if line.startswith("FAIL ")]
    assert lines, result.stderr
    assert lines[-1].endswith(" 0 failed"), "\n".join(failures) or result.stderr
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    passed = int(lines[-1].split()[0])
    assert passed > 0
    if not no_run:  # with runc and root, the runtime cases really ran
        assert not any(line.startswith("SKIP run-") for line in lines), result.stdout
