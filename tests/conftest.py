"""Shared test fixtures: built fixture images, a CLI runner, and skip markers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from fixtures.images import IMAGES, FixtureUnavailable

# The suite draws the same examples on every run, so a commit passes or fails CI by its
# code alone; `python -m fixtures.fuzz` sets OCI_UNPACK_HYPOTHESIS=explore for new ones.
settings.register_profile("suite", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("OCI_UNPACK_HYPOTHESIS", "suite"))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ownership, devices)")


def needs_tool(name: str) -> pytest.MarkDecorator:
    """Skip unless the command `name` is installed (CI installs it via .ci/install)."""
    return pytest.mark.skipif(shutil.which(name) is None, reason=f"{name} is not installed")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding every fixture image that can be built here, as OCI layouts."""
    root = tmp_path_factory.mktemp("images")
    for name, build in IMAGES.items():
        try:
            build(root / name)
        except FixtureUnavailable:
            shutil.rmtree(root / name, ignore_errors=True)
    return root


def run_cli(*args: str | os.PathLike[str], check: bool = False,
            cwd: os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m unpack ARGS...` (in the repository, or `cwd`) and capture its output
    (text)."""
    result = subprocess.run(
        [sys.executable, "-m", "unpack", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"oci-unpack {args} failed: {result.stderr}")
    return result


@pytest.fixture
def cli():
    """The `run_cli` function, as a fixture."""
    return run_cli


@pytest.fixture
def no_user_auth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME of its own: pulls find none of the machine user's registry logins, no user
    registries.conf, no alias cache. Returns the HOME."""
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
