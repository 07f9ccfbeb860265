"""Hostile layers (issue #5): every case of `hostile.CASES` through the CLI, confined.

See `tests/hostile.py` for the corpus and for what is asserted about each run.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import xattr
from hostile import (
    CASES,
    Case,
    Outcome,
    Run,
    Sandbox,
    Snapshot,
    case_ids,
    check_outcome,
    diff,
    escape_names,
    run_case,
    sandbox,
    snapshot,
)


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.name, marks=marks)


def test_corpus_is_large_and_named() -> None:
    """At least 40 uniquely named cases, both outcomes represented."""
    assert len(case_ids()) >= 40
    assert {c.error for c in CASES} >= {True, False}


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_hostile_layer(case: Case) -> None:
    with sandbox() as box:
        outcome = run_case(case, box)
        check_outcome(case, outcome)
        if outcome.run.returncode == 0:
            # the rootfs is a real directory inside DIR, not a link to somewhere else
            assert os.path.realpath(box.dest / "rootfs") == str(box.dest / "rootfs")


# -- the harness itself: a change outside the bundle must not go unnoticed -------------------


def _both(box: Sandbox) -> tuple[Snapshot, Snapshot]:
    return box.outside(), snapshot(box.host)


def test_snapshots_notice_every_kind_of_change() -> None:
    with sandbox() as box:
        secret = box.top / "outside" / "secret"
        mutations: dict[str, Callable[[], object]] = {
            "content": lambda: secret.write_bytes(b"changed\n"),
            "mode": lambda: secret.chmod(0o600),
            "times": lambda: os.utime(secret, ns=(0, 0)),
            "xattr": lambda: xattr.set(str(secret), "user.escape", b"1"),
            "hardlink": lambda: os.link(box.host / "file", box.top / "outside" / "h"),
            "symlink target": lambda: _retarget(box.top / "etc" / "lnk", "/"),
            "delete": lambda: (box.top / "sibling.txt").unlink(),
            "create in host dir": lambda: (box.host / "subdir" / "escape").write_bytes(b""),
            "host dir mode": lambda: box.host.chmod(0o700),
        }
        if os.geteuid() == 0:
            mutations["owner"] = lambda: os.chown(secret, 1234, 1234)
        (box.top / "etc" / "lnk").symlink_to("passwd")
        for what, mutate in mutations.items():
            before = _both(box)
            mutate()
            after = _both(box)
            assert [d for b, a in zip(before, after, strict=True) for d in diff(b, a)], what
        # the bundle and its temp dirs are not "outside"
        before = box.outside()
        (box.top / ".bundle.oci-unpack-1-x").mkdir()
        box.dest.mkdir()
        assert box.outside() == before


def _retarget(link: Path, target: str) -> None:
    link.unlink()
    link.symlink_to(target)


def test_escape_names_notices_new_tmp_entries() -> None:
    before = escape_names()
    probe = Path(tempfile.mkdtemp(prefix="oci-unpack-escape-selftest-", dir="/tmp"))
    try:
        assert escape_names() - before == {str(probe)}
    finally:
        probe.rmdir()


def test_check_outcome_rejects_changes_and_internal_errors() -> None:
    case = Case("self-test", (), "any")
    with sandbox() as box:
        changed = Outcome(Run(3, "", "oci-unpack: error: x\n", 1, False), box, ["deleted: x"])
        with pytest.raises(AssertionError, match="changed outside"):
            check_outcome(case, changed)
        internal = Outcome(Run(70, "", "oci-unpack: error: internal error: x\n", 1, False), box)
        with pytest.raises(AssertionError, match="exit 70"):
            check_outcome(case, internal)
        hog = Outcome(Run(3, "", "oci-unpack: error: x\n", 10 << 20, False), box)
        with pytest.raises(AssertionError, match="peak RSS"):
            check_outcome(case, hog)
