"""A per-layer progress bar on stderr (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_INTERVAL = 0.1


class Progress:
    """Draws `layer N/M DIGEST [####    ] 45% 12.3/27.1 MB` over compressed bytes read."""

    def __init__(self, enabled: bool, stream: TextIO = sys.stderr) -> None:
        self.enabled = enabled
        self.stream = stream
        self._label = ""
        self._total = 0
        self._done = 0
        self._drawn_at = 0.0

    @classmethod
    def for_terminal(cls, quiet: bool) -> Progress:
        """Enabled when stderr is a TTY and the user did not ask for quiet."""
        return cls(enabled=not quiet and sys.stderr.isatty())

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._done, self._drawn_at = label, total, 0, 0.0
        self._draw()

    def advance(self, count: int) -> None:
        self._done += count
        if self.enabled and time.monotonic() - self._drawn_at >= _INTERVAL:
            self._draw()

    def finish(self) -> None:
        if self.enabled:
            self._done = self._total
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        if not self.enabled:
            return
        self._drawn_at = time.monotonic()
        fraction = min(self._done / self._total, 1.0) if self._total else 1.0
        filled = int(fraction * _WIDTH)
        bar = "#" * filled + " " * (_WIDTH - filled)
        self.stream.write(
            f"\r{self._label} [{bar}] {fraction:4.0%} "
            f"{self._done / 1e6:.1f}/{self._total / 1e6:.1f} MB"
        )
        self.stream.flush()
