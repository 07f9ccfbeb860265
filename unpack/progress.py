"""How an unpack reports its progress: per layer, over the compressed bytes read.

`Progress` is what the unpack verb calls. `TerminalProgress` draws one line per
layer on a terminal, fitted to its width (re-read at each redraw: the terminal
may be resized); `StatusLines` prints only the status notes (stderr that is not a
terminal); `CallbackProgress` hands `LayerProgress` values to a function (the
Python API); `NoProgress` does nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO, runtime_checkable

_INTERVAL = 0.1  # seconds between redraws
_MIN_BAR = 10  # narrower than this, the bar is left out and the numbers kept


@dataclass(frozen=True)
class LayerProgress:
    """Where an unpack is: layer `number` of `count`, `done` of its `total` bytes read."""

    number: int
    count: int
    digest: str
    done: int
    total: int


@runtime_checkable
class Progress(Protocol):
    """What the unpack verb reports to."""

    def start(self, number: int, count: int, digest: str, total: int) -> None:
        """Layer `number` of `count` begins; its blob has `total` bytes."""

    def advance(self, count: int) -> None:
        """`count` more bytes of the layer's blob were read."""

    def finish(self) -> None:
        """The layer is applied."""

    def status(self, text: str) -> None:
        """A note of what the unpack is doing now ("removing the partial bundle…")."""

    def close(self) -> None:
        """Nothing more will be drawn: end any line begun (before a message is printed)."""


class NoProgress:
    """Reports nothing."""

    def start(self, number: int, count: int, digest: str, total: int) -> None: ...

    def advance(self, count: int) -> None: ...

    def finish(self) -> None: ...

    def status(self, text: str) -> None: ...

    def close(self) -> None: ...


class StatusLines(NoProgress):
    """No bar (stderr is not a terminal), but the status notes, each on a line."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def status(self, text: str) -> None:
        self.stream.write(f"{text}\n")
        self.stream.flush()


class CallbackProgress:
    """Calls `callback(LayerProgress)` at each layer's start and end, and as bytes are read
    (at most every 0.1 s)."""

    def __init__(self, callback: Callable[[LayerProgress], None]) -> None:
        self._callback = callback
        self._now = LayerProgress(0, 0, "", 0, 0)
        self._told_at = 0.0

    def start(self, number: int, count: int, digest: str, total: int) -> None:
        self._now = LayerProgress(number, count, digest, 0, total)
        self._tell()

    def advance(self, count: int) -> None:
        now = self._now
        self._now = LayerProgress(now.number, now.count, now.digest, now.done + count,
                                  now.total)
        if time.monotonic() - self._told_at >= _INTERVAL:
            self._tell()

    def finish(self) -> None:
        now = self._now
        self._now = LayerProgress(now.number, now.count, now.digest, now.total, now.total)
        self._tell()

    def _tell(self) -> None:
        self._told_at = time.monotonic()
        self._callback(self._now)

    def status(self, text: str) -> None: ...

    def close(self) -> None: ...


class TerminalProgress:
    """`layer 2/6 68f3a1b2c3d4 [#####     ] 45% 12.3/27.1 MB`, one line per layer, never
    wider than the terminal: the bar narrows, then goes; the numbers stay."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self._place = self._digest = ""
        self._total = 0
        self._done = 0
        self._drawn_at = 0.0
        self._open = False  # a line is drawn and not ended
        self._drawn = 0  # its length

    def start(self, number: int, count: int, digest: str, total: int) -> None:
        self._place, self._digest = f"layer {number}/{count}", digest.partition(":")[2][:12]
        self._total, self._done = total, 0
        self._draw()

    def advance(self, count: int) -> None:
        self._done += count
        if time.monotonic() - self._drawn_at >= _INTERVAL:
            self._draw()

    def finish(self) -> None:
        self._done = self._total
        self._draw()
        self.close()

    def status(self, text: str) -> None:
        self.close()
        self.stream.write(f"{text}\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False

    def _draw(self) -> None:
        self._drawn_at = time.monotonic()
        width = self._width()
        line = fitted(self._place, self._digest, self._done, self._total, width)
        if self._open:  # cover what is left of a longer line (the terminal was resized)
            line += " " * max(min(self._drawn, width - 1) - len(line), 0)
        self.stream.write("\r" + line)
        self.stream.flush()
        self._open, self._drawn = True, len(line)

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80


def fitted(place: str, digest: str, done: int, total: int, width: int) -> str:
    """The progress line for a terminal `width` columns wide, at most width - 1 characters
    (a line that fills the last column wraps on some terminals): the bar narrows, then
    goes, then the digest; the place and the numbers stay as long as they fit."""
    fraction = min(done / total, 1.0) if total else 1.0
    numbers = f"{fraction:4.0%} {done / 1e6:.1f}/{total / 1e6:.1f} MB"
    label = f"{place} {digest}"
    room = width - 1 - len(label) - len(numbers) - 4  # spaces and brackets
    if room >= _MIN_BAR:
        filled = int(fraction * room)
        return f"{label} [{'#' * filled}{' ' * (room - filled)}] {numbers}"
    for line in (f"{label} {numbers}", f"{place} {numbers}"):
        if len(line) < width:
            return line
    return f"{place} {numbers}"[: max(width - 1, 0)]
