"""python -m bench: build the benchmark images (once) and time oci-unpack against peers."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

from bench import images as gen
from bench import methods, pull, report, run, startup

EPILOG = """\
methods (--methods, comma-separated; default all):
  oci-unpack       oci-unpack IMAGE:latest DIR              (full bundle)
  oci-unpack-raw   oci-unpack --no-config IMAGE:latest DIR  (rootfs only)
  umoci-unpack     umoci unpack --image IMAGE:latest DIR
  umoci-raw        umoci raw unpack --image IMAGE:latest DIR
  tar              GNU tar -x of every layer in order into one fresh dir: the I/O
                   floor (applies no whiteouts, so its tree is not the image's)
  decompress       read + sha256 + decompress every layer with isal/zstandard,
                   writing nothing: oci-unpack's CPU floor
umoci 0.4.7 cannot read zstd layers: for a zstd image umoci runs on the gzip
layout of the same content (marked *).

scenarios (--scenario, comma-separated; default local):
  local   the methods above on each image's layout
  pull    pull + unpack from Debian's docker-registry on 127.0.0.1, behind a proxy
          sending each TCP connection at most --rate MB/s after --first-byte ms:
          oci-unpack docker://... against skopeo copy + umoci unpack, and against
          the ideal max(3 connections biggest layer first, the local unpack)
          (images: --only, default pyimage-gzip; needs docker-registry, skopeo, umoci)
  startup python -c pass, oci-unpack --help, and oci-unpack against umoci unpack
          on the busybox fixture (a gzip copy): -n 20 runs each, median

images (--only, comma-separated names or bases; default all):
  pyimage-{gzip,zstd,tar}     6 layers, ~52k entries, ~690 MB at scale 1
  smallfiles-{gzip,zstd,tar}  ~100k files of 0-2 KiB
  bigfile-{gzip,zstd,tar}     ~1 GiB in 4 files
  manyfiles-{gzip,zstd,tar}   1,000,000 empty files in 1,000 directories
They are generated deterministically under IMAGES/scale-S/ on first use (a few
minutes and ~4 GB at scale 1) and reused while the generator version matches.

output trees:
  Every run unpacks into a fresh WORKDIR/run-*/ (default WORKDIR: IMAGES/work).
  Trees are not deleted between the runs of an image: on ext4 without a journal
  the kernel skips inodes freed less than 60 s ago when allocating new ones,
  which made a run right after deleting 20k files twice as slow (still so after
  10 s).  They are moved to WORKDIR/trash-* and purged (rm -rf, sync) before the
  next image or past --keep-gb; the next file-creating run then waits --settle.
  Only the run-* and trash-* directories it made itself are ever deleted.

examples:
  python -m bench --scale 0.1 -n 1 --settle 2          # a quick look (rough)
  python -m bench --only pyimage-gzip,bigfile-zstd --json results.json
  python -m bench --build-only                         # just generate the images
  python -m bench --scenario pull -n 3                 # the registry scenario
  python -m bench --scenario startup -n 20             # start-up latency
"""


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=Path("/tmp/oci-unpack-bench"),
                    metavar="DIR", help="where the images are built (default: %(default)s)")
    ap.add_argument("--workdir", type=Path, metavar="DIR",
                    help="where runs unpack (default: IMAGES/work, same file system)")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="image size factor, e.g. 0.1 for a quick run (default: 1)")
    ap.add_argument("--only", default="", metavar="NAMES", help="images to measure")
    ap.add_argument("--methods", default=",".join(methods.METHODS), metavar="NAMES",
                    help="methods to run (default: all)")
    ap.add_argument("-n", type=int, default=3, help="timed runs per method (default: 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (default: 1)")
    ap.add_argument("--settle", type=float, default=62.0, metavar="SECONDS",
                    help="after deleting output trees and sync, wait this long before the "
                         "next file-creating run (default: 62; see 'output trees' below)")
    ap.add_argument("--keep-gb", type=float, default=20.0, metavar="GB",
                    help="keep output trees (moved to WORKDIR/trash-*) until the next image or "
                         "until they take this much space; 0 deletes each tree right after "
                         "its run (default: 20)")
    ap.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS",
                    help="kill a run after this long (default: 1800)")
    ap.add_argument("--oci-unpack", metavar="CMD", default="",
                    help="the oci-unpack command to time, e.g. 'python3 -m unpack' "
                         "(default: oci-unpack on PATH)")
    ap.add_argument("--verify-content", action="store_true",
                    help="also compare file contents (sha256) with umoci's tree")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write all results here")
    ap.add_argument("--build-only", action="store_true", help="build the images and stop")
    ap.add_argument("--scenario", default="local", metavar="NAMES",
                    help="local, pull, startup, comma-separated (default: local; see "
                         "'scenarios' below)")
    ap.add_argument("--rate", type=float, default=pull.RATE / 1e6, metavar="MB/S",
                    help="pull: bytes per second of each connection, in MB (default: %(default)g)")
    ap.add_argument("--first-byte", type=float, default=pull.FIRST_BYTE * 1000, metavar="MS",
                    help="pull: delay before each answer's first byte (default: %(default)g)")
    args = ap.parse_args(argv)
    args.scenarios = [s for s in args.scenario.split(",") if s]
    if not args.scenarios or any(s not in ("local", "pull", "startup") for s in args.scenarios):
        ap.error("--scenario takes local, pull and startup, comma-separated")
    if args.rate <= 0 or args.first_byte < 0:
        ap.error("--rate must be > 0 and --first-byte >= 0")
    if args.scale <= 0 or args.n < 1 or min(args.warmup, args.settle, args.keep_gb) < 0:
        ap.error("--scale must be > 0, -n >= 1, --warmup, --settle and --keep-gb >= 0")
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in methods.METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(methods.METHODS)}")
    names = [f"{b}-{c}" for b in gen.BASES for c in ("gzip", "zstd", "tar")]
    want = [w for w in args.only.split(",") if w]
    bad = [w for w in want if w not in names and w not in gen.BASES]
    if bad:
        ap.error(f"unknown image(s) {', '.join(bad)}; choose from {', '.join(names)}")
    args.oci = shlex.split(args.oci_unpack) if args.oci_unpack else methods.oci_unpack_argv()
    args.names = [n for n in names if not want or n in want or n.rpartition("-")[0] in want]
    args.local_names = args.names if "local" in args.scenarios else []
    args.pull_names = ((args.names if want else ["pyimage-gzip"])
                       if "pull" in args.scenarios else [])
    return args


def missing_pull_tools(args: argparse.Namespace, out: list[str]) -> bool:
    """Note in the report what the pull scenario lacks; whether anything is."""
    lacking = pull.missing_tools() if args.pull_names else []
    out += [f"- pull scenario skipped: {note}" for note in lacking]
    return bool(lacking)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    wanted = args.local_names + args.pull_names
    bases = sorted({n.rpartition("-")[0] for n in wanted}, key=gen.BASES.index)
    stamp = gen.build(args.images, args.scale, bases, log) if bases else {"images": {}}
    if args.build_only:
        return 0
    root = gen.scale_dir(args.images, args.scale)
    images = {f"{b}-{c}": methods.load_image(root, f"{b}-{c}", stamp["images"][b])
              for b in bases for c in ("gzip", "zstd", "tar")}
    workdir = args.workdir or args.images / "work"
    created = not workdir.exists()
    workdir.mkdir(parents=True, exist_ok=True)
    runner = run.Runner(workdir, args.settle, args.keep_gb * 1e9, args.timeout,
                        args.verify_content, log)
    last_purge = args.images / ".last-purge"  # trees deleted by an earlier invocation
    with contextlib.suppress(OSError, ValueError):
        runner.settled_since(float(last_purge.read_text()))
    missing = [t for t in ("time", "umoci", "zstd") if methods.tool(t) is None]
    notes = [f"{t} not found: {methods.HINTS[t]}" for t in missing]
    machine = report.machine(workdir, args.oci)
    out = [report.heading(machine, vars(args))]
    results: dict[str, dict[str, object]] = {}
    start = time.monotonic()
    try:
        for name in args.local_names:
            image = images[name]
            log(f"{name}: {image.info['entries']} entries, {len(image.blobs)} layers")
            image_notes = [n for n in notes if n.startswith("time")]  # others: by plan()
            plans = [p for m in args.methods
                     if (p := methods.plan(m, image, images, image_notes, args.oci)) is not None]
            verify = runner.measure(image, images, plans, args.n, args.warmup)
            log(f"  {verify}")
            summaries = {p.method: run.summary(p) for p in plans}
            out.append(report.table(image, summaries, verify, image_notes))
            results[name] = {"info": {k: v for k, v in image.info.items() if k != "layers"},
                             "verify": verify, "methods": summaries}
        lacking = missing_pull_tools(args, out)
        for name in [] if lacking else args.pull_names:
            image = images[name]
            log(f"pull {name}: {len(image.blobs)} layers through a {args.rate:g} MB/s proxy")
            with pull.served(image, workdir, args.rate * 1e6, args.first_byte / 1000) as ref:
                plans = pull.plans(image, images, ref, args.oci)
                verify = runner.measure(image, images, plans, args.n, args.warmup)
            log(f"  {verify}")
            summaries = {p.method: run.summary(p) for p in plans}
            out.append(pull.table(image, summaries, verify, args.rate * 1e6,
                                  args.first_byte / 1000))
            results[f"pull {name}"] = {"verify": verify, "methods": summaries}
        if "startup" in args.scenarios:
            log("startup: busybox fixture")
            timings = startup.measure(workdir, startup.interpreter(args.oci), args.oci, args.n,
                                      log)
            out.append(startup.table(timings, args.n))
            results["startup"] = {"methods": timings}
    finally:
        if runner.purge(settle=False):
            last_purge.write_text(f"{time.time()}\n")
        if created and not any(workdir.iterdir()):
            workdir.rmdir()
    text = "\n".join(out)
    print(text)
    log(f"total {time.monotonic() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(
            {"machine": machine, "args": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in vars(args).items()},
             "images": results}, indent=1))
    failed = any(s.get("failed") for r in results.values() for s in r["methods"].values())
    return 1 if failed or any("FAILED" in str(r.get("verify")) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
