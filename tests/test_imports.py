"""Commands import only what they need: `inspect` reads JSON, so it loads no decompressor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

HEAVY = ("isal", "zstandard", "xattr", "cryptography", "yaml")


def _modules_after(*args: str) -> set[str]:
    """The heavy modules loaded by running `oci-unpack ARGS` in a fresh interpreter."""
    code = (
        "import sys\n"
        "from unpack.cli import main\n"
        "try:\n"
        f"    main({list(args)!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('MODULES:' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("MODULES:"), result.stdout
    return set(filter(None, line[len("MODULES:"):].split(",")))


def test_inspect_loads_no_decompressor_or_crypto(images: Path) -> None:
    assert _modules_after("inspect", "--insecure-policy", f"{images}/demo:v1") == set()


def test_help_loads_nothing_heavy() -> None:
    assert _modules_after("--help") == set()
