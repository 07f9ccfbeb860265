"""Parallel layer downloads from a registry, applied in order.

Up to `parallel` layer blobs are fetched at once, the biggest first, each on a
connection of its own, into a spool file (the `--cache` layout, or a private
directory in the bundle's temporary directory), verified by size and digest as
it lands. The applier reads each layer in order with `chunks`:

- a layer no download has started yet is streamed straight from the network
  by the applier's own pipeline, as without downloads;
- a layer being downloaded is read from its spool file as it grows (the bytes
  go network → page cache → applier), one already downloaded from its file;
  a private spool file is removed once its layer is applied.

Layer N+1 never reaches the rootfs before layer N is done: only the order of
the fetches changes. A download that fails (a broken connection past its
retries, a digest mismatch) fails the unpack as soon as the applier next asks
for data, whichever layer it is on — before any byte of that layer is applied
when it was fetched ahead. `close` stops the downloads and removes the private
spool on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from unpack.errors import FilesystemError, UnpackError
from unpack.image.descriptor import Descriptor
from unpack.verify import Digest, verified

READ_SIZE = 1 << 20
_POLL_SECONDS = 0.05
_JOIN_SECONDS = 5.0


class Connection(Protocol):
    """A connection of a worker's own to the registry."""

    def blob_stream(self, descriptor: Descriptor, observe: None) -> Iterator[bytes]: ...

    def abort(self) -> None:
        """From another thread: end the transfer under way now, start no other."""

    def close(self) -> None: ...


@dataclass
class _Download:
    """One layer's fetch: where it lands, how far it got, how it ended."""

    descriptor: Descriptor
    label: str  # how errors name the layer ("layer 3/5 sha256:…")
    fd: int = -1  # a read-only fd of the file it lands in (valid across the cache's rename)
    state: str = "pending"  # pending, running, done, failed, direct (the applier streams it)
    written: int = 0
    uses: int = 0  # how many times the image lists the blob (a layer may repeat)
    error: BaseException | None = None
    grown: threading.Condition = field(default_factory=threading.Condition)


class Downloads:
    """Fetch some layer blobs ahead, in parallel; hand each one out in order."""

    def __init__(self, layers: list[tuple[Descriptor, str]], spool: str,
                 connect: Callable[[], Connection],
                 keep: Callable[[Digest], Any] | None = None, parallel: int = 3) -> None:
        """`layers`: each blob with the label its errors start with; `connect()` opens a
        worker's own connection; `keep(digest)`, when given, is a
        context manager writing a blob where it is kept (the cache), yielding (write, the
        path of the file being written)."""
        self._spool = spool
        self._own_spool = keep is None
        self._connect = connect
        self._keep = keep
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._connections: list[Connection] = []
        self._downloads: dict[Digest, _Download] = {}
        for descriptor, label in layers:
            download = self._downloads.setdefault(descriptor.digest, _Download(descriptor, label))
            download.uses += 1
        if self._own_spool:
            os.makedirs(spool, mode=0o700, exist_ok=True)
        self._threads = [threading.Thread(target=self._work, name=f"oci-unpack-download-{i}",
                                          daemon=True) for i in range(max(0, parallel))]
        for thread in self._threads:
            thread.start()

    def has(self, descriptor: Descriptor) -> bool:
        return descriptor.digest in self._downloads

    # -- the workers ---------------------------------------------------------------------------
    def _next(self) -> _Download | None:
        """The biggest layer nobody fetches yet (None when none is left)."""
        with self._lock:
            pending = [d for d in self._downloads.values() if d.state == "pending"]
            if self._stop.is_set() or not pending:
                return None
            chosen = max(pending, key=lambda d: d.descriptor.size)
            chosen.state = "running"
            return chosen

    def _work(self) -> None:
        connection: Connection | None = None
        try:
            while (download := self._next()) is not None:
                try:
                    connection = connection or self._connected()
                    self._fetch(connection, download)
                    state, error = "done", None
                except BaseException as failure:  # handed to the applier
                    state, error = "failed", _named(download, failure)
                with download.grown:
                    download.state, download.error = state, error
                    download.grown.notify_all()
                if error is not None:
                    if not self._stop.is_set():
                        self._failure = self._failure or error
                    return
        finally:
            if connection is not None:
                connection.close()

    def _connected(self) -> Connection:
        connection = self._connect()
        with self._lock:
            self._connections.append(connection)
        if self._stop.is_set():
            connection.abort()
        return connection

    def _fetch(self, connection: Connection, download: _Download) -> None:
        descriptor = download.descriptor
        stream = verified(connection.blob_stream(descriptor, None), descriptor.digest,
                          descriptor.size, f"blob ({descriptor.media_type})")
        with self._sink(download) as write:
            for chunk in stream:
                if self._stop.is_set():
                    raise _Stopped()
                write(chunk)
                with download.grown:
                    download.written += len(chunk)
                    download.grown.notify_all()

    @contextlib.contextmanager
    def _sink(self, download: _Download) -> Iterator[Callable[[bytes], None]]:
        """Write into the cache (kept only if verified) or into the private spool."""
        if self._keep is not None:
            with self._keep(download.descriptor.digest) as (write, path):
                self._opened(download, path)
                yield write
            return
        path = self._spool_path(download)
        with open(path, "wb") as file:
            self._opened(download, path)

            def write(data: bytes) -> None:
                file.write(data)
                file.flush()

            yield write

    @staticmethod
    def _opened(download: _Download, path: str) -> None:
        """Give the applier a way to read the file, before anything may rename it."""
        with download.grown:
            download.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            download.grown.notify_all()

    # -- the applier's side --------------------------------------------------------------------
    def chunks(self, descriptor: Descriptor, direct: Callable[[], Iterator[bytes]],
               observe: Callable[[int], None] | None = None) -> Iterator[bytes]:
        """The blob's bytes in order: from its download, or from `direct()` if none began."""
        download = self._downloads[descriptor.digest]
        with self._lock:
            if download.state == "pending":
                download.state = "direct"
        if download.state == "direct":
            yield from self._checked(direct())
            return
        yield from self._checked(self._follow(download, observe))
        download.uses -= 1
        if download.uses == 0 and self._own_spool:  # read for the last time: free the disk
            os.close(download.fd)
            download.fd = -1
            os.unlink(self._spool_path(download))

    def _spool_path(self, download: _Download) -> str:
        return os.path.join(self._spool, download.descriptor.digest.hex)

    def _checked(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Fail as soon as any download has failed (a later layer's included)."""
        for chunk in chunks:
            if self._failure is not None:
                raise self._failure
            yield chunk
        if self._failure is not None:
            raise self._failure

    def _follow(self, download: _Download, observe: Callable[[int], None] | None
                ) -> Iterator[bytes]:
        """Read the spool file as the download writes it."""
        read = 0
        while True:
            with download.grown:
                while (download.written <= read and download.state == "running"
                       and self._failure is None and not self._stop.is_set()):
                    download.grown.wait(_POLL_SECONDS)
                state, available = download.state, download.written
            if self._failure is not None:
                raise self._failure
            if download.error is not None or self._stop.is_set():
                raise download.error or _Stopped(f"{download.label}: download stopped")
            while read < available:
                chunk = os.pread(download.fd, min(READ_SIZE, available - read), read)
                if not chunk:
                    break
                read += len(chunk)
                if observe is not None:
                    observe(len(chunk))
                yield chunk
            if state == "done" and read >= available:
                return

    def stop(self) -> None:
        """From any thread: stop every download now, cutting its connection; a reader
        waiting for a download's bytes raises."""
        self._stop.set()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.abort()
        for download in self._downloads.values():
            with download.grown:
                download.grown.notify_all()

    def close(self) -> None:
        """`stop`, wait for the workers, close the files, remove the private spool."""
        self.stop()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)  # a worker stuck in a TLS or DNS call: not for long
        for download in self._downloads.values():
            if download.fd >= 0:
                os.close(download.fd)
                download.fd = -1
        if self._own_spool:
            shutil.rmtree(self._spool, ignore_errors=True)

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _named(download: _Download, error: BaseException) -> BaseException:
    """The error a failed download hands the applier, naming its own layer (the applier
    may be on another one when it hears of it)."""
    if isinstance(error, UnpackError):
        return type(error)(f"{download.label}: {error}")
    if isinstance(error, OSError):
        return FilesystemError(f"{download.label}: spooling the download: "
                               f"{error.strerror or error}")
    return error


class _Stopped(UnpackError):
    """A download stopped because the unpack is over."""


def spool_directory(bundle_path: str) -> str:
    """The private spool of an unpack: inside its temporary bundle directory."""
    return os.path.join(bundle_path, ".downloads")


