"""Smoke tests of the repository's benchmark (`python -m bench`); never asserts on times."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from conftest import REPO

from bench import images as gen
from bench import report

SCALE = 0.002


def bench_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run `python -m bench ARGS...` from the repository root."""
    return subprocess.run([sys.executable, "-m", "bench", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three benchmark images at a tiny scale (all compressions)."""
    root = tmp_path_factory.mktemp("bench-images")
    gen.build(root, SCALE, log=lambda _: None)
    return root


def _layout(tiny: Path, name: str) -> Path:
    return gen.scale_dir(tiny, SCALE) / name


def _manifest_and_config(layout: Path) -> tuple[dict, dict]:
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    return manifest, config


def test_pyimage_has_every_layer_feature(tiny: Path) -> None:
    stamp = json.loads((gen.scale_dir(tiny, SCALE) / "stamp.json").read_text())
    assert stamp["generator"] == gen.GENERATOR_VERSION and stamp["scale"] == SCALE
    py = stamp["images"]["pyimage"]
    assert len(py["layers"]) == 6
    for key in ("files", "dirs", "symlinks", "hardlinks", "whiteouts"):
        assert py[key] > 0, key
    assert py["opaque"] == 2  # site-packages/pip and usr/share/doc
    assert stamp["images"]["smallfiles"]["files"] >= 100 * SCALE * 1000
    big = stamp["images"]["bigfile"]
    assert big["files"] == 4 and big["bytes"] >= 0.9 * SCALE * 2**30
    assert big["blob_bytes"]["gzip"] < big["tar_bytes"]  # compressible, but not zeros
    assert big["blob_bytes"]["gzip"] > big["tar_bytes"] / 4


@pytest.mark.parametrize("compression", ["gzip", "zstd", "tar"])
def test_blobs_match_their_digests_and_diff_ids(tiny: Path, compression: str) -> None:
    layout = _layout(tiny, f"pyimage-{compression}")
    manifest, config = _manifest_and_config(layout)
    diff_ids = []
    for desc in manifest["layers"]:
        data = (layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]
        assert len(data) == desc["size"]
        assert desc["mediaType"].endswith({"gzip": "+gzip", "zstd": "+zstd", "tar": ".tar"}
                                          [compression])
        if compression == "gzip":
            data = gzip.decompress(data)
        elif compression == "zstd":
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
    assert diff_ids == config["rootfs"]["diff_ids"]


def test_build_is_deterministic_and_reused(tiny: Path, tmp_path: Path) -> None:
    logged: list[str] = []
    gen.build(tiny, SCALE, log=logged.append)
    assert logged == []  # the stamp matches: nothing rebuilt
    gen.build(tmp_path, SCALE, ["pyimage"], log=logged.append)
    assert any("building pyimage" in line for line in logged)
    for comp in ("gzip", "zstd", "tar"):
        name = f"pyimage-{comp}"
        assert ((gen.scale_dir(tmp_path, SCALE) / name / "index.json").read_bytes()
                == (_layout(tiny, name) / "index.json").read_bytes())


def test_build_refuses_to_replace_a_foreign_directory(tmp_path: Path) -> None:
    foreign = gen.scale_dir(tmp_path, SCALE) / "bigfile-gzip"
    foreign.mkdir(parents=True)
    (foreign / "keep").write_text("not the benchmark's")
    with pytest.raises(RuntimeError, match="not written by bench"):
        gen.build(tmp_path, SCALE, ["bigfile"], log=lambda _: None)
    assert (foreign / "keep").read_text() == "not the benchmark's"


def test_verdict_names_the_first_differences() -> None:
    ref = {"a": ("d", 0o755, 0, 0), "a/f": ("f", 0o644, 0, 0, 3, 1700000000, 1),
           "a/l": ("l", 0, 0, "f")}
    assert report.verdict(ref, dict(ref), False).startswith("verify ok")
    got = {**ref, "a/f": ("f", 0o600, 0, 0, 3, 1700000000, 2), "x": ("d", 0o755, 0, 0)}
    del got["a/l"]
    text = report.verdict(ref, got, False)
    assert text.startswith("verify FAILED: 3 paths differ")
    assert "differs: /a/f mode 420 (umoci) != 384, nlink 1 (umoci) != 2" in text
    assert "missing: /a/l" in text and "extra: /x" in text


def test_listing_records_type_mode_owner_size_target_mtime_nlink(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o750)
    (tmp_path / "d" / "f").write_bytes(b"abc")
    (tmp_path / "d" / "h").hardlink_to(tmp_path / "d" / "f")
    (tmp_path / "l").symlink_to("d/f")
    listed = report.listing(tmp_path, content=True)
    assert listed["d"][0] == "d" and listed["d"][1] == 0o750
    f = listed["d/f"]
    assert f[0] == "f" and f[4] == 3 and f[6] == 2
    assert f[7] == hashlib.sha256(b"abc").hexdigest()[:16]
    assert listed["l"][0] == "l" and listed["l"][3] == "d/f"


def test_help_and_usage_errors() -> None:
    helped = bench_cli("--help")
    assert helped.returncode == 0
    for word in ("--scale", "--settle", "--methods", "umoci-raw", "decompress", "pyimage"):
        assert word in helped.stdout
    bad = bench_cli("--methods", "nope")
    assert bad.returncode == 2 and "unknown method(s) nope" in bad.stderr


def test_runner_smoke_on_one_tiny_image(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    result = bench_cli("--images", tiny, "--scale", SCALE, "--only", "pyimage-gzip",
                       "--methods", "oci-unpack,oci-unpack-raw", "-n", "1", "--settle", "0",
                       "--json", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "#### pyimage-gzip: 6 layers" in text
    assert "| method | median s | CPU s | peak RSS MB | vs umoci unpack | vs tar floor |" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert rows == ["oci-unpack", "oci-unpack --no-config"]
    if shutil.which("umoci"):
        assert "verify ok: oci-unpack's rootfs equals umoci's" in text
    data = json.loads(out.read_text())
    assert list(data["images"]) == ["pyimage-gzip"]
    methods = data["images"]["pyimage-gzip"]["methods"]
    assert set(methods) == {"oci-unpack", "oci-unpack-raw"}
    assert all(len(m["runs"]) == 1 and m["median"] > 0 and not m["failed"]
               for m in methods.values())
    assert not (tiny / "work").exists()  # its own work dir, removed when empty


def test_ideal_transfer_fetches_the_biggest_first() -> None:
    from bench.pull import ideal_transfer

    sizes = [20, 60, 20, 20]  # bytes, at 10 bytes/s: 6 s for the big one
    assert ideal_transfer(sizes, rate=10, first_byte=0, connections=3) == 6.0
    assert ideal_transfer(sizes, rate=10, first_byte=0.5, connections=1) == 14.0
    assert ideal_transfer(sizes, rate=10, first_byte=0, connections=2) == 6.0  # 60 | 20+20+20


@pytest.mark.skipif(any(shutil.which(t) is None for t in ("docker-registry", "skopeo", "umoci")),
                    reason="the pull scenario needs docker-registry, skopeo and umoci "
                           "(apt-get install docker-registry skopeo umoci)")
def test_pull_scenario_smoke(tiny: Path, tmp_path: Path) -> None:
    """The registry and the proxy start, every method pulls, the tree verifies, all stop."""
    out = tmp_path / "results.json"
    result = bench_cli("--images", tiny, "--scale", SCALE, "--scenario", "pull", "-n", "1",
                       "--warmup", "0", "--settle", "0", "--rate", "100", "--json", out)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "#### pull pyimage-gzip: 6 layers" in text and "each connection 100 MB/s" in text
    assert "| method | median s | CPU s | peak RSS MB | vs skopeo + umoci | vs ideal |" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| method")]
    assert rows == ["oci-unpack docker://…", "skopeo copy docker://… oci:… && umoci unpack",
                    "oci-unpack (local layout: the unpack alone)"]
    assert "verify ok: oci-unpack's rootfs equals umoci's" in text
    assert "Ideal " in text and "biggest layer first" in text
    methods = json.loads(out.read_text())["images"]["pull pyimage-gzip"]["methods"]
    assert all(len(m["runs"]) == 1 and not m["failed"] for m in methods.values())
    assert not (tiny / "work").exists()  # the registry's directory went with the work dir


@pytest.mark.skipif(not Path("/bin/busybox").exists() or shutil.which("umoci") is None,
                    reason="the startup scenario needs busybox-static and umoci")
def test_startup_scenario_smoke(tmp_path: Path) -> None:
    result = bench_cli("--images", tmp_path / "images", "--workdir", tmp_path, "--scenario",
                       "startup", "-n", "1")
    assert result.returncode == 0, result.stderr
    rows = [line.split("|")[1].strip() for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| command")]
    assert rows == ["python -c pass", "oci-unpack --help", "oci-unpack busybox",
                    "umoci unpack busybox"]
    assert [p.name for p in tmp_path.iterdir()] == []  # (no images built, nothing left)


def test_gzip_copy_is_a_valid_layout_umoci_reads(tmp_path: Path) -> None:
    from bench.startup import gzip_copy
    from fixtures.images import build_demo

    build_demo(tmp_path / "demo")
    gzip_copy(tmp_path / "demo", tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "index.json").read_text())
    blobs = tmp_path / "copy" / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    for layer in manifest["layers"]:
        assert not layer["mediaType"].endswith("+zstd")
        data = (blobs / layer["digest"][7:]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == layer["digest"][7:]
        assert len(data) == layer["size"]
