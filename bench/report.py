"""Tree comparison (oci-unpack vs umoci) and the Markdown report."""

from __future__ import annotations

import hashlib
import os
import platform
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

FIELDS = {"d": ("type", "mode", "uid", "gid"),
          "l": ("type", "uid", "gid", "target"),
          "f": ("type", "mode", "uid", "gid", "size", "mtime", "nlink", "sha256"),
          "o": ("type", "format", "mode", "uid", "gid", "rdev")}


def listing(root: Path | str, content: bool = False) -> dict[str, tuple[Any, ...]]:
    """Every path under `root` -> (type, mode, owner, size, link target, file mtime, nlink)."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            mode = st.st_mode
            rel = os.path.relpath(full, root)
            if stat.S_ISDIR(mode):
                out[rel] = ("d", stat.S_IMODE(mode), st.st_uid, st.st_gid)
            elif stat.S_ISLNK(mode):
                out[rel] = ("l", st.st_uid, st.st_gid, os.readlink(full))
            elif stat.S_ISREG(mode):
                rec: tuple[Any, ...] = ("f", stat.S_IMODE(mode), st.st_uid, st.st_gid,
                                        st.st_size, int(st.st_mtime), st.st_nlink)
                if content:
                    digest = hashlib.sha256()
                    with open(full, "rb") as f:
                        while chunk := f.read(1 << 20):
                            digest.update(chunk)
                    rec += (digest.hexdigest()[:16],)
                out[rel] = rec
            else:
                out[rel] = ("o", stat.S_IFMT(mode), stat.S_IMODE(mode), st.st_uid, st.st_gid,
                            st.st_rdev)
    return out


def differences(ref: dict[str, tuple[Any, ...]], got: dict[str, tuple[Any, ...]],
                limit: int = 8) -> tuple[int, list[str]]:
    """(number of differing paths, the first `limit` described)."""
    count, shown = 0, []
    for path in sorted(ref.keys() | got.keys()):
        a, b = ref.get(path), got.get(path)
        if a == b:
            continue
        count += 1
        if len(shown) >= limit:
            continue
        if a is None or b is None:
            shown.append(f"{'extra' if a is None else 'missing'}: /{path}")
        elif a[0] != b[0]:
            shown.append(f"type: /{path} {a[0]} (umoci) != {b[0]}")
        else:
            what = [f"{FIELDS[a[0]][i]} {x!r} (umoci) != {y!r}"
                    for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
            shown.append(f"differs: /{path} " + ", ".join(what))
    return count, shown


def verdict(ref: dict[str, tuple[Any, ...]], got: dict[str, tuple[Any, ...]],
            content: bool) -> str:
    """`verify ok ...` or `verify FAILED ...` with the first differences."""
    count, shown = differences(ref, got)
    what = "metadata and content" if content else "metadata"
    if count == 0:
        return f"verify ok: oci-unpack's rootfs equals umoci's ({len(ref)} entries, {what})"
    return (f"verify FAILED: {count} paths differ from umoci's rootfs ({what}):\n"
            + "\n".join(f"  {line}" for line in shown))


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not a.get("median") or not b.get("median"):
        return "-"
    return f"{a['median'] / b['median']:.2f}x"


def rows(results: dict[str, dict[str, Any]], *versus: dict[str, Any] | None) -> list[str]:
    """One Markdown row per method: median, CPU, peak RSS, and its ratio to each of `versus`."""
    lines = []
    for res in results.values():
        if res.get("failed"):
            lines.append(f"| {res['label']} | FAILED |" + " |" * (3 + len(versus)))
            continue
        rss = res.get("rss_mb")
        ratios = "".join(f" {ratio(res, other)} |" for other in versus)
        lines.append(f"| {res['label']} | {fmt(res.get('median'))} | {fmt(res.get('cpu'))} | "
                     f"{fmt(rss, 0) if rss else '-'} |{ratios}")
    return lines


def table(image: Any, results: dict[str, dict[str, Any]], verify: str,
          notes: list[str]) -> str:
    """The Markdown section of one image: a heading, the table, the verify line, notes."""
    info = image.info
    blob = info["blob_bytes"][image.compression] / 1e6
    lines = [f"#### {image.name}: {len(info['layers'])} layers, {info['entries']:,} entries, "
             f"{info['tar_bytes'] / 1e6:,.0f} MB uncompressed, {blob:,.0f} MB of blobs", "",
             "| method | median s | CPU s | peak RSS MB | vs umoci unpack | vs tar floor |",
             "|---|--:|--:|--:|--:|--:|"]
    lines += rows(results, results.get("umoci-unpack"), results.get("tar"))
    lines += ["", verify]
    if any(res["label"].endswith("*") for res in results.values()):
        notes = [*notes, f"\\* umoci 0.4.7 cannot read zstd layers: measured on "
                 f"{image.base}-gzip (same content)."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return f"{argv[0]} missing"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def _filesystem(path: Path) -> str:
    best, desc = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mnt, fstype, opts = line.split()[:4]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, desc = mnt, f"{fstype} ({opts})"
    return desc


def machine(workdir: Path, oci: list[str]) -> dict[str, Any]:
    """The machine and tool versions, for the report's heading."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         "?")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "kernel": platform.release(), "filesystem": _filesystem(workdir),
            "python": sys.version.split()[0],
            "oci-unpack": _first_line([*oci, "--version"]),
            "umoci": _first_line(["umoci", "--version"]),
            "tar": _first_line(["tar", "--version"])}


def heading(m: dict[str, Any], args: dict[str, Any]) -> str:
    """A Markdown paragraph describing the machine and the run."""
    return (f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, "
            f"Linux {m['kernel']}, {m['filesystem']}; Python {m['python']}, {m['oci-unpack']}, "
            f"{m['umoci']}, {m['tar']}. Images at scale {args['scale']:g}; median of "
            f"{args['n']} runs after {args['warmup']} warm-up, round-robin; output trees "
            + (f"kept per image (up to {args['keep_gb']:g} GB), then deleted + sync + "
               if args["keep_gb"] else "deleted after each run + sync + ")
            + f"{args['settle']:g} s settle before the next file-creating run.\n")
