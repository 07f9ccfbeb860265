"""A structural walk over zstd frames, to tell a complete stream from a cut one.

`zstandard`'s streaming reader decompresses in bounded chunks but reports a
stream cut in the middle of a frame as a clean end. This walker follows the
frame and block headers of RFC 8878 as the compressed bytes pass (a few
operations per block of up to 128 KiB) and says whether the stream ended on
a frame boundary. Decoding itself, and its errors, stay with `zstandard`.
"""

from __future__ import annotations

import enum

from unpack.errors import LayerError

_ZSTD_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50


class _State(enum.Enum):
    """Which field comes next; the value is its size in bytes (0: computed)."""

    MAGIC = (1, 4)
    FRAME_HEADER = (2, 1)
    HEADER_REST = (3, 0)
    BLOCK = (4, 3)
    CHECKSUM = (5, 4)
    SKIPPABLE_SIZE = (6, 4)

    @property
    def size(self) -> int:
        return self.value[1]


class ZstdFrameWalker:
    """Feed compressed chunks with `feed`; `check_complete` at the end."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._state = _State.MAGIC
        self._need = _State.MAGIC.size
        self._header = bytearray()
        self._skip = 0
        self._checksum = False

    def feed(self, chunk: bytes | memoryview) -> None:
        """Advance over one chunk of the compressed stream."""
        view = memoryview(chunk)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._header), end - pos)
            self._header += view[pos : pos + take]
            pos += take
            if len(self._header) == self._need:
                self._advance(bytes(self._header))

    def check_complete(self) -> None:
        """Raise LayerError unless the stream ended exactly after a frame."""
        if self._state is not _State.MAGIC or self._header or self._skip:
            raise LayerError(f"{self._what}: truncated zstd stream")

    def _expect(self, state: _State, need: int | None = None) -> None:
        self._state = state
        self._need = state.size if need is None else need
        self._header.clear()
        if self._need == 0:
            self._advance(b"")

    def _advance(self, field: bytes) -> None:
        state = self._state
        if state is _State.MAGIC:
            magic = int.from_bytes(field, "little")
            if magic == _ZSTD_MAGIC:
                self._expect(_State.FRAME_HEADER)
            elif magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
                self._expect(_State.SKIPPABLE_SIZE)
            else:
                raise LayerError(f"{self._what}: data after the end of the zstd stream")
        elif state is _State.SKIPPABLE_SIZE:
            self._skip = int.from_bytes(field, "little")
            self._expect(_State.MAGIC)
        elif state is _State.FRAME_HEADER:
            descriptor = field[0]
            single_segment = bool(descriptor & 0x20)
            self._checksum = bool(descriptor & 0x04)
            content_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
            dictionary_id = (0, 1, 2, 4)[descriptor & 0x03]
            window = 0 if single_segment else 1
            self._expect(_State.HEADER_REST, window + dictionary_id + content_size)
        elif state is _State.HEADER_REST:
            self._expect(_State.BLOCK)
        elif state is _State.BLOCK:
            header = int.from_bytes(field, "little")
            last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
            self._skip = 1 if block_type == 1 else size
            if not last:
                self._expect(_State.BLOCK)
            elif self._checksum:
                self._expect(_State.CHECKSUM)
            else:
                self._expect(_State.MAGIC)
        else:  # CHECKSUM
            self._expect(_State.MAGIC)
