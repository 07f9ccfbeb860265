"""ID mappings (`--uid-map/--gid-map CONTAINER:HOST:SIZE`): parsing, lookup, CLI usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from unpack.errors import LayerError, UsageError
from unpack.idmap import MAX_FILE_ID as MAX_ID
from unpack.idmap import IdMap, IdRange


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0:100000:65536", IdRange(0, 100000, 65536)),
        ("1000:1000:1", IdRange(1000, 1000, 1)),
        (f"0:0:{MAX_ID + 1}", IdRange(0, 0, MAX_ID + 1)),  # 0 .. 2**32-2: every valid uid
        (f"{MAX_ID}:{MAX_ID}:1", IdRange(MAX_ID, MAX_ID, 1)),
        ("007:010:1", IdRange(7, 10, 1)),  # decimal, not octal
    ],
)
def test_range_parses(text: str, expected: IdRange) -> None:
    assert IdRange.parse(text, "--uid-map") == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("0:100000", "CONTAINER:HOST:SIZE"),
        ("0:100000:1:1", "CONTAINER:HOST:SIZE"),
        ("", "CONTAINER:HOST:SIZE"),
        ("a:b:c", "CONTAINER:HOST:SIZE"),
        ("-1:0:1", "CONTAINER:HOST:SIZE"),
        ("0:+1:1", "CONTAINER:HOST:SIZE"),
        (" 0:1:1", "CONTAINER:HOST:SIZE"),
        ("0:1:0", "size must be >= 1"),
        (f"0:0:{MAX_ID + 2}", "fit uid_t"),  # would reach 2**32-1, the invalid uid
        (f"{MAX_ID + 1}:0:1", "fit uid_t"),
        (f"0:{MAX_ID}:2", "fit uid_t"),
    ],
)
def test_range_refuses(text: str, why: str) -> None:
    with pytest.raises(UsageError) as caught:
        IdRange.parse(text, "--gid-map")
    assert str(caught.value).startswith(f"--gid-map {text!r}")
    assert why in str(caught.value)


def test_range_refuses_non_ascii_digits() -> None:
    with pytest.raises(UsageError):
        IdRange.parse("0:\u00b2:1", "--uid-map")


def test_to_runtime_entry() -> None:
    assert IdRange(1, 100000, 65536).to_runtime() == {
        "containerID": 1, "hostID": 100000, "size": 65536}  # fmt: skip


def test_map_lookup_over_several_ranges() -> None:
    """Each container ID maps through the range that holds it; the ranges' order is kept."""
    idmap = IdMap.parse(["1:100000:999", "0:1000:1", "1000:200000:10"], "uid")
    assert [r.container for r in idmap.ranges] == [1, 0, 1000]
    assert idmap.to_host(0) == 1000
    assert idmap.to_host(1) == 100000
    assert idmap.to_host(999) == 100998
    assert idmap.to_host(1000) == 200000
    assert idmap.to_host(1009) == 200009
    assert all(idmap.covers(i) for i in (0, 1, 999, 1000, 1009))
    assert not idmap.covers(1010)


@pytest.mark.parametrize("kind", ["uid", "gid"])
def test_uncovered_id_is_a_layer_error_naming_it(kind: str) -> None:
    idmap = IdMap.parse(["0:100000:1000"], kind)
    with pytest.raises(LayerError) as caught:
        idmap.to_host(1000)
    assert str(caught.value) == f"{kind} 1000 is not covered by --{kind}-map"


def test_empty_map_is_identity() -> None:
    idmap = IdMap(kind="uid")
    assert idmap.to_host(0) == 0
    assert idmap.to_host(4000000) == 4000000
    assert idmap.covers(MAX_ID)
    assert IdMap.parse([], "gid") == IdMap(kind="gid")


@pytest.mark.parametrize(
    "texts",
    [
        ["0:100000:10", "5:200000:10"],
        ["5:200000:10", "0:100000:10"],  # order does not hide it
        ["0:100000:10", "0:200000:1"],
        ["0:100000:100", "50:200000:1"],  # one inside the other
    ],
)
def test_overlapping_container_ranges_are_refused(texts: list[str]) -> None:
    with pytest.raises(UsageError, match="--uid-map: container ranges overlap"):
        IdMap.parse(texts, "uid")


def test_adjacent_ranges_are_fine() -> None:
    idmap = IdMap.parse(["0:100000:10", "10:300000:10"], "uid")
    assert idmap.to_host(9) == 100009
    assert idmap.to_host(10) == 300000


# -- the CLI: usage errors exit 2, before anything is written --------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uid-map", "0:100000:65536"], "--uid-map and --gid-map go together: give both"),
        (["--gid-map", "0:100000:65536"], "--uid-map and --gid-map go together: give both"),
        (["--uid-map", "0:100000", "--gid-map", "0:100000:65536"], "expected CONTAINER:HOST:SIZE"),
        (["--uid-map", "0:1:1", "--gid-map", "x:1:1"], "--gid-map 'x:1:1'"),
        (["--uid-map", "0:1:0", "--gid-map", "0:1:1"], "size must be >= 1"),
        (["--uid-map", "0:1:10", "--uid-map", "9:50:2", "--gid-map", "0:1:1"],
         "container ranges overlap"),
    ],
)  # fmt: skip
def test_cli_map_usage_errors_exit_2(
    images: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli(*args, images / "demo", tmp_path / "bundle")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oci-unpack: error: "), result.stderr
    assert message in lines[0]
    assert list(tmp_path.iterdir()) == []  # not even the temporary bundle
