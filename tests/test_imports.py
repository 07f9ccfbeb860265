"""Commands import only what they need: `inspect` reads JSON, so it loads no decompressor;
an unpack loads the decompressor of its layers' kind only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, reg

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


def _one_layer_image(path: Path, compression: str) -> None:
    out = LayoutWriter(path)
    layer = out.add_layer(build_tar([reg("hello.txt", b"hello\n")]), compression)
    out.tag(out.add_image([layer], {"architecture": "amd64", "os": "linux"}), "latest")
    out.write()


@pytest.mark.parametrize(("compression", "loaded", "not_loaded"), [
    ("gzip", "isal", "zstandard"),
    ("zstd", "zstandard", "isal"),
])
def test_an_unpack_loads_only_the_decompressor_it_needs(
    tmp_path: Path, compression: str, loaded: str, not_loaded: str
) -> None:
    _one_layer_image(tmp_path / "image", compression)
    modules = _modules_after("-q", "--insecure-policy", f"{tmp_path / 'image'}",
                             str(tmp_path / "bundle"))
    assert (tmp_path / "bundle" / "config.json").is_file()
    assert loaded in modules and not_loaded not in modules
