"""The progress line: fitted to any terminal width; the callback the Python API offers."""

from __future__ import annotations

import pytest

from unpack.progress import CallbackProgress, LayerProgress, fitted


@pytest.mark.parametrize("width", [200, 80, 60, 50, 40, 30, 20, 10, 2, 1])
@pytest.mark.parametrize("total", [0, 5_000, 143_800_000, 12_345_678_901])
def test_the_line_never_reaches_the_last_column(width: int, total: int) -> None:
    for done in (0, total // 3, total):
        line = fitted("layer 12/12", "68f3a1b2c3d4", done, total, width)
        assert len(line) <= max(width - 1, 0)


def test_the_bar_goes_first_then_the_digest_the_numbers_stay() -> None:
    wide = fitted("layer 2/6", "68f3a1b2c3d4", 72_000_000, 143_800_000, 80)
    assert wide.startswith("layer 2/6 68f3a1b2c3d4 [") and wide.endswith(" 50% 72.0/143.8 MB")
    assert len(wide) == 79
    assert fitted("layer 2/6", "68f3a1b2c3d4", 72_000_000, 143_800_000, 50) == \
        "layer 2/6 68f3a1b2c3d4  50% 72.0/143.8 MB"
    assert fitted("layer 2/6", "68f3a1b2c3d4", 72_000_000, 143_800_000, 32) == \
        "layer 2/6  50% 72.0/143.8 MB"


def test_callback_progress_reports_start_reads_and_end() -> None:
    seen: list[LayerProgress] = []
    progress = CallbackProgress(seen.append)
    progress.start(1, 2, "sha256:abc", 100)
    progress.advance(40)  # within 0.1 s of the start: not reported
    progress.finish()
    assert seen == [LayerProgress(1, 2, "sha256:abc", 0, 100),
                    LayerProgress(1, 2, "sha256:abc", 100, 100)]
