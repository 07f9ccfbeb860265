"""Parallel layer downloads (`unpack.source.downloads`): the biggest first, applied in order,
each byte fetched once; a failure anywhere ends the unpack at once and leaves nothing.

The first tests drive `Downloads` with an in-memory connection; the others pull from
Debian's docker-registry through a slow proxy on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from registry import REGISTRY_BINARY, FaultyProxy, Registry, noise, running_registry, tree

from fixtures.layout import LayoutWriter
from fixtures.tarwriter import build_tar, dirent, reg
from unpack.errors import NetworkError, VerificationError
from unpack.image.descriptor import Descriptor
from unpack.source.downloads import Downloads, PrivateSpool
from unpack.verify import Digest

LAYER = "application/vnd.oci.image.layer.v1.tar"


def _blob(data: bytes) -> Descriptor:
    return Descriptor(LAYER, Digest.parse("sha256:" + hashlib.sha256(data).hexdigest()),
                      len(data))


class FakeRegistry:
    """Blobs served in 1000-byte chunks; a blob can be held back until released, or fail."""

    ranges_ignored = False

    def __init__(self, blobs: list[bytes]) -> None:
        self.blobs = {_blob(b).digest: b for b in blobs}
        self.fetched: list[Digest] = []
        self.ranges: list[tuple[int, int]] = []
        self.held: dict[Digest, threading.Event] = {}
        self.failing: set[Digest] = set()
        self.connections = 0

    def connect(self) -> FakeRegistry:
        self.connections += 1
        return self

    def blob_stream(self, descriptor: Descriptor, observe: None, start: int = 0,
                    end: int | None = None) -> Iterator[bytes]:
        self.fetched.append(descriptor.digest)
        data = self.blobs[descriptor.digest]
        end = len(data) if end is None else end
        self.ranges.append((start, end))
        if descriptor.digest in self.failing:
            raise NetworkError("127.0.0.1: GET blob: HTTP 500")
        for offset in range(start, end, 1000):
            if offset > start and descriptor.digest in self.held:
                assert self.held[descriptor.digest].wait(30)
            yield data[offset:min(offset + 1000, end)]

    def abort(self) -> None:
        for event in self.held.values():
            event.set()

    def close(self) -> None:
        pass

    def direct(self, descriptor: Descriptor) -> Iterator[bytes]:
        """What the applier's own pipeline would fetch."""
        yield from self.blob_stream(descriptor, None)


def _layers(blobs: list[bytes]) -> list[tuple[Descriptor, str]]:
    return [(_blob(b), f"layer {n}/{len(blobs)} {_blob(b).digest}")
            for n, b in enumerate(blobs, 1)]


def _downloads(layers: list[tuple[Descriptor, str]], tmp_path: Path, registry: FakeRegistry,
               **options: int) -> Downloads:
    return Downloads(layers, PrivateSpool(str(tmp_path / "spool")), registry.connect, **options)


def _read_all(downloads: Downloads, registry: FakeRegistry, descriptor: Descriptor) -> bytes:
    return b"".join(downloads.chunks(descriptor, lambda: registry.direct(descriptor)))


def test_the_layers_are_fetched_in_the_order_they_are_applied(tmp_path: Path) -> None:
    """One connection, three small layers (none worth splitting): b and c are fetched in
    order while the applier still waits for a; each is fetched once."""
    blobs = [noise(3_000, b"a"), noise(9_000, b"b"), noise(5_000, b"c")]
    registry = FakeRegistry(blobs)
    layers = _layers(blobs)
    spool = PrivateSpool(str(tmp_path / "spool"))
    with Downloads(layers, spool, registry.connect, parallel=1) as downloads:
        assert [_read_all(downloads, registry, d) for d, _ in layers] == blobs
    assert registry.fetched == [d.digest for d, _ in layers]
    assert registry.connections == 1
    assert not (tmp_path / "spool").exists()


def test_without_range_support_the_biggest_goes_first(tmp_path: Path) -> None:
    """Once an answer shows Range is ignored, nothing is split and the biggest layer left
    goes first (c before b)."""
    blobs = [noise(3_000, b"a"), noise(5_000, b"b"), noise(9_000, b"c")]
    registry = FakeRegistry(blobs)
    registry.ranges_ignored = True
    layers = _layers(blobs)
    with _downloads(layers, tmp_path, registry, parallel=1) as downloads:
        assert [_read_all(downloads, registry, d) for d, _ in layers] == blobs
    assert registry.fetched == [layers[0][0].digest, layers[2][0].digest, layers[1][0].digest]


def test_idle_connections_take_over_halves_of_a_big_download(tmp_path: Path) -> None:
    """One blob, three connections: the first fetches from the start, each idle one takes
    the second half of the biggest rest (a ranged request); the bytes come out whole."""
    blob = noise(64_000, b"big")
    registry = FakeRegistry([blob])
    layers = _layers([blob])
    hold = registry.held[layers[0][0].digest] = threading.Event()
    spool = PrivateSpool(str(tmp_path / "spool"))
    with Downloads(layers, spool, registry.connect, parallel=3, min_split=8_000) as downloads:
        deadline = time.monotonic() + 30
        while len(registry.ranges) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        hold.set()
        assert _read_all(downloads, registry, layers[0][0]) == blob
    first, *later = registry.ranges[:3]  # (finished workers may split again)
    assert first == (0, 64_000)
    # the two splits may reach the registry in either order
    halves = [r for r in later if r[1] == 64_000 and r[0] in (32_000, 32_500)]
    assert halves, later  # half of what was left
    (other,) = [r for r in later if r != halves[0]] or [halves[0]]
    assert other[1] in (halves[0][0], 64_000) and 0 < other[0] < other[1]  # of the biggest rest
    assert not (tmp_path / "spool").exists()


def test_a_layer_is_read_while_it_downloads(tmp_path: Path) -> None:
    """The applier reads the first chunks of a layer its download has not finished."""
    blobs = [noise(20_000, b"x")]
    registry = FakeRegistry(blobs)
    layers = _layers(blobs)
    hold = registry.held[layers[0][0].digest] = threading.Event()
    with _downloads(layers, tmp_path, registry, parallel=2) as downloads:
        chunks = downloads.chunks(layers[0][0], lambda: registry.direct(layers[0][0]))
        assert next(chunks) == blobs[0][:1000]  # before the download could finish
        hold.set()
        assert next(chunks) + b"".join(chunks) == blobs[0][1000:]
        assert os.listdir(tmp_path / "spool") == []  # applied: its spool file is gone


def test_a_later_layer_that_fails_ends_the_current_one(tmp_path: Path) -> None:
    """Layer 2's fetch fails while layer 1 is read: layer 1 stops, and the error names
    layer 2, not the layer being applied."""
    blobs = [noise(20_000, b"first"), noise(30_000, b"second")]
    registry = FakeRegistry(blobs)
    layers = _layers(blobs)
    registry.held[layers[0][0].digest] = threading.Event()  # never released
    registry.failing.add(layers[1][0].digest)
    with _downloads(layers, tmp_path, registry, parallel=2) as downloads:
        with pytest.raises(NetworkError) as raised:
            _read_all(downloads, registry, layers[0][0])
        registry.held[layers[0][0].digest].set()
    assert str(raised.value) == f"{layers[1][1]}: 127.0.0.1: GET blob: HTTP 500"


def test_a_corrupt_download_is_a_verification_error(tmp_path: Path) -> None:
    blobs = [noise(4_000, b"good")]
    layers = _layers(blobs)
    registry = FakeRegistry([])
    registry.blobs[layers[0][0].digest] = noise(4_000, b"evil")
    with (_downloads(layers, tmp_path, registry, parallel=2) as downloads,
          pytest.raises(VerificationError) as raised):
        _read_all(downloads, registry, layers[0][0])
    assert str(raised.value).startswith(f"{layers[0][1]}: blob ({LAYER}): digest is sha256:")


def test_a_repeated_layer_is_fetched_once(tmp_path: Path) -> None:
    blob = noise(5_000, b"same")
    registry = FakeRegistry([blob])
    layers = _layers([blob, blob])
    with _downloads(layers, tmp_path, registry, parallel=2) as downloads:
        deadline = time.monotonic() + 30
        while not registry.fetched and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [_read_all(downloads, registry, d) for d, _ in layers] == [blob, blob]
    assert registry.fetched == [layers[0][0].digest]


# -- against a registry ------------------------------------------------------------------------

needs_registry = pytest.mark.skipif(
    not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None,
    reason="docker-registry and skopeo are needed (apt-get install docker-registry skopeo)")

SIZES = (1_200_000, 300_000, 900_000, 200_000)  # uncompressed (noise: gzip keeps it)


@pytest.fixture(autouse=True)
def _own_home(no_user_auth_files: Path) -> None:
    """No logins, registries.conf or aliases of the machine's user."""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four gzip layers of noise, in no order of size, all writing into one directory."""
    root = tmp_path_factory.mktemp("downloads")
    out = LayoutWriter(root / "layout")
    layers = [out.add_layer(build_tar([dirent("d"), reg(f"d/f{n}", noise(size, b"%d" % n))]),
                            "gzip") for n, size in enumerate(SIZES)]
    out.tag(out.add_image(layers, {"config": {"Cmd": ["/bin/sh"]}}), "latest")
    out.write()
    run_cli(root / "layout", root / "expected", check=True)
    return root


@pytest.fixture(scope="module")
def served(work: Path) -> Iterator[Registry]:
    if not os.path.exists(REGISTRY_BINARY) or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are needed")
    with running_registry(work / "registry") as registry:
        registry.push(work / "layout", "latest", "layers:v1")
        yield registry


def _layer_digests(work: Path) -> list[str]:
    import json

    index = json.loads((work / "layout/index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((work / "layout/blobs/sha256" / digest).read_text())
    return [layer["digest"] for layer in manifest["layers"]]


@needs_registry
@pytest.mark.parametrize("parallel", ["1", "3"])
def test_parallel_and_serial_pulls_make_the_same_bundle(
    work: Path, served: Registry, tmp_path: Path, parallel: str
) -> None:
    with FaultyProxy(served.host, rate=2_000_000).running() as proxy:
        result = run_cli("-q", "--tls-verify=false", "--max-parallel-downloads", parallel,
                         f"docker://{proxy.host}/layers:v1", tmp_path / "b")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "b") == tree(work / "expected")
    layers = _layer_digests(work)
    gets = [path.rsplit("/", 1)[1] for _, path, _ in proxy.blob_gets()]
    assert sorted(g for g in gets if g in layers) == sorted(layers)  # each layer once
    assert proxy.most_in_flight == int(parallel)
    assert not any(".downloads" in str(p) for p in (tmp_path / "b").rglob("*"))


@needs_registry
def test_a_corrupt_later_layer_fails_before_the_first_is_done(
    work: Path, served: Registry, tmp_path: Path
) -> None:
    """Layer 1 (1.2 MB) crawls; layer 4 (200 kB) arrives corrupt: the pull ends with layer
    4's digest mismatch long before layer 1 is through, and leaves nothing at DIR."""
    first, *_, last = _layer_digests(work)
    with FaultyProxy(served.host, rate=100_000, corrupt_blobs={last}).running() as proxy:
        result = run_cli("--tls-verify=false", "--max-parallel-downloads", "4",
                         f"docker://{proxy.host}/layers:v1", tmp_path / "b")
        sent_of_first = proxy.blob_bytes_sent().get(first, 0)
    assert result.returncode == 3, result.stderr
    assert f"layer 4/4 {last}: blob (" in result.stderr and "digest is" in result.stderr
    assert sent_of_first < SIZES[0] // 2  # far from done: layer 1 was not waited for
    assert not (tmp_path / "b").exists()
    assert [n for n in os.listdir(tmp_path) if "oci-unpack" in n] == []


@needs_registry
def test_a_download_failing_mid_way_ends_the_layer_being_applied(
    work: Path, served: Registry, tmp_path: Path
) -> None:
    """Layer 3's connection is cut every 20 kB (five tries, resumed with Range, then given
    up) while layer 1 crawls in: exit 5 naming layer 3, layer 1 not waited for."""
    digests = _layer_digests(work)
    with FaultyProxy(served.host, rate=100_000, cut_blobs={digests[2]: 20_000}
                     ).running() as proxy:
        result = run_cli("--tls-verify=false",
                         f"docker://{proxy.host}/layers:v1", tmp_path / "b")
        sent = proxy.blob_bytes_sent()
    assert result.returncode == 5, result.stderr
    assert f"layer 3/4 {digests[2]}: " in result.stderr
    assert "connection lost after 100000 bytes, 5 times (the connection closed after 20000 " \
        "bytes of " in result.stderr
    assert 0 < sent[digests[2]] < SIZES[2] // 2
    assert sent.get(digests[0], 0) < SIZES[0] // 2
    assert not (tmp_path / "b").exists()
    assert [n for n in os.listdir(tmp_path) if "oci-unpack" in n] == []


@needs_registry
@pytest.mark.parametrize("mode", ["spooled", "cached", "serial"])
def test_sigterm_during_downloads_ends_at_once(
    work: Path, served: Registry, tmp_path: Path, mode: str
) -> None:
    """SIGTERM while layers crawl in (parallel into the bundle's spool or the cache, or one
    streamed straight to the applier): exit 130 without waiting for the network; no
    bundle, no spool, no partial blob in the cache."""
    options = {"spooled": [], "cached": ["--cache", str(tmp_path / "cache")],
               "serial": ["--max-parallel-downloads", "1"]}[mode]
    spool = {"spooled": "*/.downloads/*", "cached": "cache/blobs/sha256/.*"}.get(mode)
    with FaultyProxy(served.host, rate=50_000).running() as proxy:
        proc = subprocess.Popen(
            [sys.executable, "-m", "unpack", "--tls-verify=false", *options,
             f"docker://{proxy.host}/layers:v1", str(tmp_path / "b")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=REPO)
        try:
            def receiving() -> bool:
                layers = [n for n in proxy.blob_bytes_sent() if n in _layer_digests(work)]
                return len(layers) >= (1 if spool is None else 3) and (
                    spool is None or len(list(tmp_path.glob(spool))) >= 3)

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not receiving():
                time.sleep(0.01)
            assert receiving(), "the layers were not being received"
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)  # rather than when 1.2 MB at 50 kB/s are through
            assert proc.stderr is not None
            assert code == 130, proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
        assert sum(proxy.blob_bytes_sent().values()) < sum(SIZES) // 2
    assert sorted(os.listdir(tmp_path)) == (["cache", "home"] if mode == "cached" else ["home"])
    assert list(tmp_path.glob("cache/blobs/sha256/.*")) == []
