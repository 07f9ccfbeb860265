"""Timing runner: every method on one image, round-robin, a fresh output tree per run.

A run is timed from spawning the command to reaping it; CPU (user + sys) comes from
``os.wait4``'s rusage of the child tree.  Peak RSS comes from GNU time's ``%M`` (the largest
process of the tree): the rusage of a child forked straight from this interpreter would
count the interpreter's own RSS as its floor.

Output trees are never deleted just before a timed run.  On ext4 without a journal (as
here) the inode allocator skips inodes freed less than 60 s ago (fs/ext4/ialloc.c,
``recently_deleted``: RECENTCY_MIN 60 s, 360 s while the inode table is dirty), scanning
past each of them for every new inode: a tree of 20k files unpacked right after deleting
the previous run's tree took twice as long, and still did with 10 s of settling.  So each
run's tree is moved into ``WORKDIR/trash-*`` (outside the timed part); the trash is purged
(``rm -rf``, ``sync``) before the next image or when it outgrows ``--keep-gb``, and the next
file-creating run first waits ``--settle`` seconds.  ``--keep-gb 0`` deletes every tree
right after its run (then sync + settle each time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import report
from bench.methods import GNU_TIME, Image, Plan, plan, tool


def run_timed(argv: list[str], errpath: Path, timeout: float) -> dict[str, float]:
    """Run argv; return wall, cpu (s), rss_mb (0 without GNU time) and rc."""
    rsspath = errpath.with_suffix(".rss")
    timer_cmd = [GNU_TIME, "-q", "-f", "%M", "-o", str(rsspath)] if tool("time") else []
    with open(errpath, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([*timer_cmd, *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        killed: list[bool] = []

        def kill() -> None:
            killed.append(True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: stop the run before its tree is deleted
            kill()
            os.wait4(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = 0.0
    if timer_cmd:
        try:
            rss = int(rsspath.read_text().split()[-1]) / 1024
        except (OSError, ValueError, IndexError):
            rss = 0.0
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": rss,
            "rc": 124 if killed else proc.returncode}


def prewarm(image: Image) -> None:
    """Read the blobs so that every method starts with them in the page cache."""
    for blob in image.blobs:
        with open(blob, "rb") as f:
            while f.read(1 << 22):
                pass


@dataclass
class Runner:
    """Runs plans in `workdir`, creating and removing only its own run-* and trash-* dirs."""

    workdir: Path
    settle: float = 62.0
    keep_bytes: float = 20e9
    timeout: float = 1800.0
    content: bool = False
    log: Callable[[str], None] = print
    cache: dict[tuple[str, str], Plan] = field(default_factory=dict)
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)
    trash: Path | None = None
    trash_bytes: float = 0.0
    settle_until: float = 0.0

    def purge(self, settle: bool = True) -> bool:
        """Delete the kept trees and sync; the next file-creating run settles first.

        Returns whether there was anything to delete.
        """
        if self.trash is None:
            return False
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.trash)], check=False)
        os.sync()
        if settle:
            self.settle_until = time.monotonic() + self.settle
        self.trash, self.trash_bytes = None, 0.0
        return True

    def settled_since(self, wall_time: float) -> None:
        """Trees were deleted at `wall_time` (an earlier invocation): settle from then."""
        left = wall_time + self.settle - time.time()
        self.settle_until = max(self.settle_until, time.monotonic() + min(left, self.settle))

    def _discard(self, parent: Path, image: Image) -> None:
        if self.trash is None:
            self.trash = Path(tempfile.mkdtemp(prefix="trash-", dir=self.workdir))
        os.rename(parent, self.trash / parent.name)
        self.trash_bytes += image.info["tar_bytes"] + 4096 * image.info["entries"]
        if self.trash_bytes > self.keep_bytes:
            self.purge()

    def _settle(self) -> None:
        left = self.settle_until - time.monotonic()
        if left > 0:
            self.log(f"  (settling {left:.0f} s after deleting trees)")
            time.sleep(left)

    def _one(self, p: Plan, keep: Callable[[Path], None] | None = None) -> dict[str, float]:
        if p.writes:
            self._settle()
        parent = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        try:
            prewarm(p.source)
            os.sync()
            out = run_timed(p.argv(str(parent / "out")), parent / "stderr", self.timeout)
            if out["rc"] != 0:
                tail = (parent / "stderr").read_bytes()[-400:].decode(errors="replace")
                p.failed = f"exit {out['rc']}: {tail.strip()}"
                self.log(f"  {p.label}: FAILED ({p.failed})")
            elif keep is not None:
                keep(parent / "out" / p.rootfs if p.rootfs else parent / "out")
            return out
        finally:
            if p.writes and (parent / "out").exists():
                self._discard(parent, p.source)
            else:
                shutil.rmtree(parent, ignore_errors=True)

    def reference(self, image: Image, images: dict[str, Image]) -> dict[str, Any] | None:
        """umoci's tree of this content: from a warm-up listing, else an untimed run."""
        if image.base not in self.refs:
            umoci = plan("umoci-raw", image, images, [])
            if umoci is None or umoci.source.compression == "zstd":
                return None

            def keep(root: Path) -> None:
                self.refs[image.base] = report.listing(root, self.content)

            self._one(umoci, keep)
        return self.refs.get(image.base)

    def measure(self, image: Image, images: dict[str, Image], plans: list[Plan], rounds: int,
                warmup: int) -> str:
        """Run `plans` round-robin; return the verify line (oci-unpack vs umoci)."""
        ours: dict[str, dict[str, Any]] = {}
        self.purge()  # the previous image's trees
        todo = []
        for p in plans:
            key = (p.method, p.source.name)
            if p.source is not image and key in self.cache:  # umoci numbers of the sibling
                done = self.cache[key]
                p.runs, p.failed = done.runs, done.failed
            else:
                todo.append(p)
        for r in range(warmup + rounds):
            for p in todo:
                if p.failed:
                    continue
                keep = None
                if r == 0 and "oci-unpack" in p.method and "tree" not in ours:
                    def keep(root: Path) -> None:
                        ours["tree"] = report.listing(root, self.content)
                elif r == 0 and p.method.startswith("umoci") and p.source.base not in self.refs:
                    def keep(root: Path, base: str = p.source.base) -> None:
                        self.refs[base] = report.listing(root, self.content)
                out = self._one(p, keep)
                tag = "warm-up" if r < warmup else f"run {r - warmup + 1}/{rounds}"
                self.log(f"  {tag:9} {p.label:40} {out['wall']:8.2f} s  cpu {out['cpu']:7.2f} s"
                         f"  rss {out['rss_mb']:6.0f} MB")
                if r >= warmup and not p.failed:
                    p.runs.append(out)
        for p in todo:
            self.cache[(p.method, p.source.name)] = p
        if "tree" not in ours:
            return "verify skipped: no oci-unpack run"
        ref = self.reference(image, images)
        if ref is None:
            return "verify skipped: no umoci tree (umoci missing or failed)"
        return report.verdict(ref, ours["tree"], self.content)


def summary(p: Plan) -> dict[str, Any]:
    """Median wall, median CPU and max peak RSS of a plan's runs."""
    out: dict[str, Any] = {"label": p.label, "source": p.source.name, "runs": p.runs,
                           "failed": p.failed}
    if p.runs:
        out["median"] = statistics.median(r["wall"] for r in p.runs)
        out["cpu"] = statistics.median(r["cpu"] for r in p.runs)
        out["rss_mb"] = max(r["rss_mb"] for r in p.runs)
    return out
