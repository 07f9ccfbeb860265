"""Run an iterator of chunks in a background thread, ahead of its consumer.

Reading, hashing and decompressing happen in C code that releases the GIL
(os.read, hashlib, ISA-L, zstandard), so a producer thread doing them
overlaps with the consumer's tar parsing and file writing on another core.
At most `depth` chunks wait in between, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1


def prefetched(source: Iterator[T], depth: int = 8,
               abort: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield what `source` yields, produced by a background thread.

    An exception in `source` is re-raised here, in order; abandoning the
    returned iterator (or an exception in the consumer) stops the producer,
    which is waited for. `abort` unblocks a producer waiting on the network:
    it is called when a signal interrupts the wait for the next item.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, re-raised there
            put(_Failure(error))
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name="oci-unpack-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = _next_item(handoff, abort)
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _next_item(handoff: queue.Queue[object], abort: Callable[[], None] | None) -> object:
    try:
        return handoff.get()
    except BaseException:  # a signal's exception: the producer may be blocked as well
        if abort is not None:
            abort()
        raise


class _Failure:
    """An exception raised by the producer, carried across the queue."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error
