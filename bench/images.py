"""The benchmark images: what they contain, and building them once per scale.

* ``pyimage``: six layers like a Python application image (distro base, security update,
  Python runtime, pip install, pip upgrade + test-suite cleanup, app) — ~55k entries,
  ~650 MB at scale 1, mostly small files, a few MB-size libraries, symlinks, hard links,
  whiteouts, an opaque directory and type changes (symlink <-> file) across layers.
* ``smallfiles``: ~100k files of 0-2 KiB in one layer.
* ``bigfile``: ~1 GiB in four files (random, ELF-like, text, mixed) in one layer.
* ``manyfiles``: 1,000,000 empty files in 1,000 directories, one layer (a node_modules-
  sized tree, ~7 MB gzip): memory and time must stay flat in the number of entries.

Each is written as three layouts, ``NAME-gzip``, ``NAME-zstd`` and ``NAME-tar`` (tag
``latest``), under ``IMAGES/scale-S/``; ``stamp.json`` there records the generator version,
the scale and per-image statistics, and an image is rebuilt only when that changes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.content import _WORDS
from bench.writer import COMPRESSIONS, Layer, write_image

GENERATOR_VERSION = 1
BASES = ("pyimage", "smallfiles", "bigfile", "manyfiles")
SITE = "usr/local/lib/python3.11/site-packages"
STDLIB = "usr/local/lib/python3.11"
_NAMES = [w for w in _WORDS if w.isidentifier() and len(w) >= 3]
MiB = 1 << 20


class _Gen:
    """Scaled counts, log-uniform sizes and identifier names from one layer's RNG."""

    def __init__(self, layer: Layer, scale: float) -> None:
        self.layer, self.rng, self.scale = layer, layer.rng, scale
        self.seq = 0

    def n(self, count: float) -> int:
        """`count` scaled (at least 1)."""
        return max(1, round(count * self.scale))

    def m(self, count: float) -> int:
        """A package's module count: full size down to scale 0.2, smaller below."""
        return max(1, round(count * min(1.0, self.scale * 5)))

    def size(self, lo: int, hi: int) -> int:
        return int(math.exp(self.rng.uniform(math.log(lo), math.log(hi))))

    def name(self) -> str:
        self.seq += 1
        return f"{self.rng.choice(_NAMES)}{self.seq}"

    def files(self, parent: str, count: int, suffix: str, lo: int, hi: int,
              content: str = "text", mode: int = 0o644, **kw: int) -> list[str]:
        paths = [f"{parent}/{self.name()}{suffix}" for _ in range(count)]
        for path in paths:
            self.layer.file(path, self.size(lo, hi), content, mode, **kw)
        return paths

    def python_package(self, root: str, modules: int, lo: int = 200, hi: int = 60000,
                       uid: int = 0) -> None:
        """A package tree: nested subpackages, .py files and their __pycache__/*.pyc."""
        dirs = [root]
        for _ in range(max(0, modules // 25)):
            dirs.append(f"{self.rng.choice(dirs)}/{self.name()}")
        for i in range(modules):
            d = dirs[i % len(dirs)]
            mod = "__init__" if i < len(dirs) else self.name()
            size = self.size(lo, hi)
            self.layer.file(f"{d}/{mod}.py", size, "text", uid=uid, gid=uid)
            self.layer.file(f"{d}/__pycache__/{mod}.cpython-311.pyc", size * 3 // 5 + 100,
                            "binary", uid=uid, gid=uid)


def pyimage(scale: float) -> list[Layer]:
    """Six layers of a Python application image."""
    layers = [Layer(f"pyimage/{i}-{n}", f"pyimage:{i}") for i, n in enumerate(
        ("base", "upgrade", "python", "pip-install", "pip-upgrade-cleanup", "app"), 1)]
    base, upgrade, python, pip, cleanup, app = layers
    g = _Gen(base, scale)
    for d in ("bin", "lib", "lib64", "sbin"):
        base.symlink(d, f"usr/{d}")
    for d, mode in (("tmp", 0o1777), ("var/tmp", 0o1777), ("root", 0o700), ("proc", 0o555),
                    ("sys", 0o555), ("home", 0o755), ("run", 0o755), ("usr/lib64", 0o755),
                    ("var/mail", 0o2775), ("opt", 0o755), ("srv", 0o755), ("mnt", 0o755)):
        base.dir(d, mode)
    users = "".join(f"{u}:x:{i}:{i}:{u}:/usr/sbin/nologin\n" for i, u in
                    enumerate(("root", "daemon", "bin", "sys", "sync", "games", "man")))
    base.file("etc/passwd", len(users), "text")
    base.file("etc/group", len(users), "text")
    base.symlink("etc/localtime", "/usr/share/zoneinfo/Etc/UTC")
    base.file("etc/issue.net", 20, "text")
    etc_dirs = ["etc"] + [f"etc/{g.name()}.d" for _ in range(g.n(60))]
    etc = [p for i in range(g.n(700))
           for p in g.files(etc_dirs[i % len(etc_dirs)], 1, ".conf", 60, 8000)]
    bins = g.files("usr/bin", g.n(500), "", 8000, 512000, "binary", 0o755)
    bins += g.files("usr/bin", g.n(10), "", MiB, 4 * MiB, "binary", 0o755)
    base.file("usr/bin/passwd", 68000, "binary", 0o4755)
    for _ in range(g.n(80)):
        base.symlink(f"usr/bin/{g.name()}", g.rng.choice(bins).rpartition("/")[2])
    for _ in range(g.n(12)):
        files = [p for p in bins if base.entries[p].kind == "file"]
        base.hardlink(f"usr/bin/{g.name()}", g.rng.choice(files))
    g.files("usr/sbin", g.n(100), "", 8000, 256000, "binary", 0o755)
    libs = []
    for i in range(g.n(500)):
        lib = f"usr/lib/x86_64-linux-gnu/lib{g.name()}.so.{i % 7}"
        real = f"{lib}.{i % 13}.{i % 5}"
        base.file(real, g.size(8000, 1024000), "binary")
        base.symlink(lib, real.rpartition("/")[2])
        base.symlink(lib.rpartition(".so")[0] + ".so", lib.rpartition("/")[2])
        libs.append(real)
    g.files("usr/lib/x86_64-linux-gnu/gconv", g.n(250), ".so", 8000, 64000, "binary")
    for _ in range(g.n(500)):
        pkg = f"usr/share/doc/{g.name()}{g.rng.randrange(1000)}"
        base.file(f"{pkg}/copyright", g.size(500, 30000), "text")
        base.file(f"{pkg}/changelog.Debian.gz", g.size(300, 20000), "random")
    zones = [f"usr/share/zoneinfo/{g.name().title()}" for _ in range(12)]
    for i in range(g.n(600)):
        g.files(zones[i % 12], 1, "", 100, 4000, "binary")
    base.file("usr/share/zoneinfo/Etc/UTC", 114, "binary")
    langs = [f"usr/share/locale/{g.name()[:2]}{i}/LC_MESSAGES" for i in range(g.n(100))]
    for i in range(g.n(2500)):
        g.files(langs[i % len(langs)], 1, ".mo", 1000, 80000, "binary")
    for i in range(g.n(1500)):
        g.files(f"usr/share/man/man{i % 8 + 1}", 1, ".gz", 500, 16000, "random")
    dpkg = g.files("var/lib/dpkg/info", g.n(4000), ".list", 100, 20000)

    g = _Gen(upgrade, scale)
    for path in [p for p in libs[::15] + bins[::20] if base.entries[p].kind == "file"]:
        upgrade.file(path, base.entries[path].size, "binary", base.entries[path].mode)
    for path in dpkg[::10]:
        upgrade.file(path, g.size(100, 20000))
    g.files("var/lib/apt/lists", g.n(25), "_Packages", 100000, 3 * MiB)
    g.files("var/cache/apt", 2, ".bin", MiB, 3 * MiB, "binary")
    g.files("var/log/apt", 3, ".log", 1000, 50000)

    g = _Gen(python, scale)
    python.file("usr/local/bin/python3.11", 16000, "binary", 0o755)
    for alias in ("python3", "python"):
        python.symlink(f"usr/local/bin/{alias}", "python3.11")
    python.file("usr/local/lib/libpython3.11.so.1.0", 6 * MiB, "binary", 0o755)
    python.symlink("usr/local/lib/libpython3.11.so", "libpython3.11.so.1.0")
    g.python_package(STDLIB, g.n(300), 500, 150000)
    for _ in range(g.n(80)):
        g.python_package(f"{STDLIB}/{g.name()}", g.m(25), 500, 150000)
    g.files(f"{STDLIB}/lib-dynload", g.n(70), ".cpython-311-x86_64-linux-gnu.so",
            20000, MiB, "binary", 0o755)
    g.files("usr/local/include/python3.11", g.n(200), ".h", 1000, 80000)
    python.dir(SITE)

    g = _Gen(pip, scale)
    packages = ["pip"] + [g.name() for _ in range(g.n(44))]
    counts = [400] + [round(5 * 300 ** ((i + 0.5) / (len(packages) - 1)))
                      for i in range(len(packages) - 1)]  # log-uniform 5..1500, no outliers
    g.rng.shuffle(counts)
    for i, pkg in enumerate(packages):
        modules = g.m(counts[i])
        g.python_package(f"{SITE}/{pkg}", modules, 200, 40000)
        if i % 3 == 1:
            g.python_package(f"{SITE}/{pkg}/tests", max(1, modules // 5), 200, 20000)
        if i % 7 == 3:
            g.files(f"{SITE}/{pkg}/_core", 1, ".cpython-311-x86_64-linux-gnu.so",
                    MiB, 20 * MiB, "binary", 0o755)
        dist = f"{SITE}/{pkg}-23.2.1.dist-info" if pkg == "pip" else f"{SITE}/{pkg}-1.{i}.dist-info"
        for meta, size in (("METADATA", g.size(500, 40000)), ("RECORD", modules * 130 + 200),
                           ("WHEEL", 92), ("top_level.txt", len(pkg) + 1), ("INSTALLER", 4)):
            pip.file(f"{dist}/{meta}", size)

    g = _Gen(cleanup, scale)
    cleanup.opaque(f"{SITE}/pip")
    g.python_package(f"{SITE}/pip", g.m(420), 200, 60000)
    cleanup.whiteout(f"{SITE}/pip-23.2.1.dist-info")
    for meta in ("METADATA", "RECORD", "WHEEL", "top_level.txt", "INSTALLER"):
        cleanup.file(f"{SITE}/pip-24.0.dist-info/{meta}", g.size(4, 40000))
    for i, pkg in enumerate(packages):
        if i % 3 == 1:
            cleanup.whiteout(f"{SITE}/{pkg}/tests")
    for name in ("pip", "pip3", "pip3.11"):
        cleanup.file(f"usr/local/bin/{name}", 230, "text", 0o755)

    g = _Gen(app, scale)
    for _ in range(g.n(40)):
        g.python_package(f"app/src/{g.name()}", g.m(50), 200, 40000, uid=1000)
    g.files("app/static", g.n(30), ".png", 10000, 2 * MiB, "random", uid=1000, gid=1000)
    app.file("app/bin/run", 48, "text", 0o755, 1000, 1000)
    app.hardlink("app/bin/run-worker", "app/bin/run")
    app.hardlink("app/bin/run-cron", "app/bin/run")
    app.symlink("usr/local/bin/app", "/app/bin/run")
    app.dir("app/data", 0o750, 1000, 1000)
    app.file("etc/passwd", len(users) + 34, "text")
    app.file("etc/group", len(users) + 12, "text")
    for path in etc[::60]:
        app.whiteout(path)
    app.file("etc/localtime", 114, "binary")  # symlink -> file
    app.symlink("etc/issue.net", "issue")  # file -> symlink
    app.opaque("usr/share/doc")
    app.file("usr/share/doc/app/README", 35, "text")
    return layers


def smallfiles(scale: float) -> list[Layer]:
    """~100k files of 0-2 KiB, a hundred per directory."""
    layer = Layer("smallfiles/1", "smallfiles:1")
    g = _Gen(layer, scale)
    for i in range(g.n(100000)):
        path = f"data/d{i // 10000:02d}/d{i // 100 % 100:02d}/{g.name()}{i}"
        size = 0 if i % 50 == 0 else g.size(16, 2048)
        layer.file(path, size, "binary" if i % 3 == 0 else "text")
    return [layer]


def bigfile(scale: float) -> list[Layer]:
    """Four big files: random weights, an ELF-like library, a text corpus, a mixed pack."""
    layer = Layer("bigfile/1", "bigfile:1")
    for name, size, content, mode in (("weights.bin", 384, "random", 0o644),
                                      ("libbundle.so", 320, "binary", 0o755),
                                      ("corpus.txt", 256, "text", 0o644),
                                      ("assets.pak", 64, "binary", 0o644)):
        layer.file(f"models/{name}", max(4096, int(size * MiB * scale)), content, mode)
    return [layer]


def manyfiles(scale: float) -> list[Layer]:
    """A million empty files, a thousand per directory."""
    layer = Layer("manyfiles/1", "manyfiles:1")
    g = _Gen(layer, scale)
    directories = g.n(1000)
    for i in range(g.n(1_000_000)):
        layer.file(f"node_modules/m{i % directories:04d}/f{i}", 0, "text")
    return [layer]


BUILDERS: dict[str, Callable[[float], list[Layer]]] = {
    "pyimage": pyimage, "smallfiles": smallfiles, "bigfile": bigfile, "manyfiles": manyfiles}
CONFIGS: dict[str, dict[str, Any]] = {
    "pyimage": {"config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
                           "Cmd": ["/app/bin/run"], "WorkingDir": "/app", "User": "1000:1000"}},
    "smallfiles": {"config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}},
    "bigfile": {"config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"],
                           "WorkingDir": "/models"}},
    "manyfiles": {"config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}},
}


def scale_dir(images: Path, scale: float) -> Path:
    """Where the images of `scale` live."""
    return Path(images) / f"scale-{scale:g}"


def build(images: Path, scale: float, bases: list[str] | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the images of `bases` not already built for this scale; return the stamp.

    Only layouts this generator wrote (named in stamp.json) are ever replaced.
    """
    root = scale_dir(images, scale)
    root.mkdir(parents=True, exist_ok=True)
    stamp_path = root / "stamp.json"
    stamp: dict[str, Any] = {"generator": GENERATOR_VERSION, "scale": scale, "images": {}}
    if stamp_path.exists():
        old = json.loads(stamp_path.read_text())
        if old.get("generator") == GENERATOR_VERSION and old.get("scale") == scale:
            stamp = old
    for base in bases or list(BASES):
        if base in stamp["images"] and all(
                (root / f"{base}-{c}" / "index.json").exists() for c in COMPRESSIONS):
            continue
        names = [f"{base}-{c}" for c in COMPRESSIONS]
        for name in names:
            if (root / name).exists() and not (root / name / ".bench-generated").exists():
                raise RuntimeError(f"{root / name} exists and was not written by bench; "
                                   "remove it or use another --images directory")
            shutil.rmtree(root / name, ignore_errors=True)
        log(f"building {base} at scale {scale:g} in {root} ...")
        start = time.monotonic()
        layouts = {c: root / f"{base}-{c}" for c in COMPRESSIONS}
        for path in layouts.values():
            path.mkdir()
            (path / ".bench-generated").write_text(f"{GENERATOR_VERSION}\n")
        info = write_image(layouts, BUILDERS[base](scale), CONFIGS[base])
        info["seconds"] = round(time.monotonic() - start, 1)
        stamp["images"][base] = info
        tmp = stamp_path.with_name(f".stamp.{os.getpid()}")
        tmp.write_text(json.dumps(stamp, indent=1, sort_keys=True))
        os.replace(tmp, stamp_path)
        log(f"  {base}: {len(info['layers'])} layers, {info['entries']} entries, "
            f"{info['tar_bytes'] / 1e6:.0f} MB tar, gzip {info['blob_bytes']['gzip'] / 1e6:.0f} MB,"
            f" zstd {info['blob_bytes']['zstd'] / 1e6:.0f} MB ({info['seconds']:.0f} s)")
    return stamp
