"""Parallel layer downloads from a registry, applied in order.

Up to `parallel` connections fetch layer blobs at once, each into a spool file
(a temporary file in the `--cache` layout, or in a private directory in the
bundle's temporary directory). An idle connection helps the first layer, in the
order they are applied, that is not wholly taken: it starts it, or takes the
second half of what is left of one of its pieces (a `Range` request), when
that is at least `MIN_SPLIT`. So the layers arrive about in the order they are
applied, each at the speed of all the connections together, not of one (a
registry or CDN caps each connection). Where the server does not honour Range,
nothing is split and the biggest layer nobody fetches yet goes first. Each blob
is hashed in order as its bytes become contiguous, and checked against its
size and digest as soon as it is complete.

The applier reads each layer in order with `chunks`:

- a layer no download has started yet is streamed straight from the network
  by the applier's own pipeline, as without downloads;
- a layer being downloaded is read from its spool file as its contiguous
  prefix grows (network → page cache → applier), one already downloaded from
  its file; a private spool file is removed once its layer is applied, a
  cached one is kept in the cache once verified.

Layer N+1 never reaches the rootfs before layer N is done: only the order of
the fetches changes. A download that fails (a broken connection past its
retries, a digest mismatch) fails the unpack as soon as the applier next asks
for data, whichever layer it is on — before any byte of that layer is applied
when it was fetched ahead. `stop` cuts every transfer at once; `close` also
removes what is not kept, on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from unpack.errors import FilesystemError, UnpackError, VerificationError
from unpack.image.descriptor import Descriptor
from unpack.verify import Digest, check_digest

READ_SIZE = 1 << 20
MIN_SPLIT = 4 << 20  # a download is split only when this much is left of it
_POLL_SECONDS = 0.05
_JOIN_SECONDS = 5.0


class Connection(Protocol):
    """A connection of a worker's own to the registry."""

    #: A ranged request was answered with the whole blob.
    ranges_ignored: bool

    def blob_stream(self, descriptor: Descriptor, observe: None, start: int = 0,
                    end: int | None = None) -> Iterator[bytes]: ...

    def abort(self) -> None:
        """From another thread: end the transfer under way now, start no other."""

    def close(self) -> None: ...


class Spool(Protocol):
    """Where downloads land (the cache, or a `PrivateSpool`)."""

    def spool_file(self, digest: Digest) -> tuple[int, str]:
        """A new file for the blob: (read-write fd, path)."""
        ...

    def keep_spooled(self, path: str, digest: Digest) -> bool:
        """The file is complete and verified: keep it (True), or leave it temporary."""
        ...

    def remove_spool(self) -> None:
        """At the end: remove what is left of the spool."""
        ...


@dataclass
class _Piece:
    """A byte range of a blob that one worker fetches: [start, end), `written` so far."""

    start: int
    end: int  # lowered when another worker takes over the second half
    claimed: int = 0  # bytes its worker is writing or has written
    written: int = 0


@dataclass
class _Download:
    """One layer's fetch: where it lands, how far it got, how it ended."""

    descriptor: Descriptor
    label: str  # how errors name the layer ("layer 3/5 sha256:…")
    fd: int = -1  # its spool file, read and written with pread/pwrite
    path: str = ""
    state: str = "pending"  # pending, running, done, failed, direct (the applier streams it)
    pieces: list[_Piece] = field(default_factory=list)
    contiguous: int = 0  # bytes from the start that are all written
    hashed: int = 0
    hasher: Any = None  # the blob's hashlib object, once hashing began
    uses: int = 0  # how many times the image lists the blob (a layer may repeat)
    error: BaseException | None = None
    grown: threading.Condition = field(default_factory=threading.Condition)
    hashing: threading.Lock = field(default_factory=threading.Lock)


class Downloads:
    """Fetch some layer blobs ahead, in parallel; hand each one out in order."""

    def __init__(self, layers: list[tuple[Descriptor, str]], spool: Spool,
                 connect: Callable[[], Connection], parallel: int = 3,
                 min_split: int = MIN_SPLIT) -> None:
        """`layers`: each blob with the label its errors start with; `connect()` opens a
        worker's own connection."""
        self._spool = spool
        self._connect = connect
        self._min_split = min_split
        self._split = True  # until a server answers a Range with the whole blob
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._connections: list[Connection] = []
        self._downloads: dict[Digest, _Download] = {}
        for descriptor, label in layers:
            download = self._downloads.setdefault(descriptor.digest, _Download(descriptor, label))
            download.uses += 1
        self._threads = [threading.Thread(target=self._work, name=f"oci-unpack-download-{i}",
                                          daemon=True) for i in range(max(0, parallel))]
        for thread in self._threads:
            thread.start()

    def has(self, descriptor: Descriptor) -> bool:
        return descriptor.digest in self._downloads

    # -- the workers ---------------------------------------------------------------------------
    def _next(self) -> tuple[_Download, _Piece] | None:
        """Work for an idle worker: help the first layer, in the order they are applied,
        that is not wholly taken — start it, or take the second half of the biggest rest
        of one of its pieces. Where Range is not honoured, the biggest layer nobody fetches
        yet. None when there is nothing left to take."""
        with self._lock:
            if self._stop.is_set():
                return None
            if not self._split:
                pending = [d for d in self._downloads.values() if d.state == "pending"]
                return self._start(max(pending, key=lambda d: d.descriptor.size)) \
                    if pending else None
            for download in self._downloads.values():  # in the order of the layers
                if download.state == "pending":
                    return self._start(download)
                if download.state == "running" and (work := self._split_one(download)):
                    return work
            return None

    @staticmethod
    def _start(download: _Download) -> tuple[_Download, _Piece]:
        download.state = "running"
        download.pieces.append(_Piece(0, download.descriptor.size))
        return download, download.pieces[-1]

    def _split_one(self, download: _Download) -> tuple[_Download, _Piece] | None:
        """The second half of the biggest rest of a piece of `download`, if worth a request."""
        piece = max(download.pieces, key=lambda p: p.end - p.start - p.claimed)
        left = piece.end - piece.start - piece.claimed
        if left < self._min_split:
            return None
        middle = piece.end - left // 2
        second = _Piece(middle, piece.end)
        piece.end = middle
        download.pieces.append(second)
        return download, second

    def _work(self) -> None:
        connection: Connection | None = None
        try:
            while (work := self._next()) is not None:
                download, piece = work
                try:
                    connection = connection or self._connected()
                    self._fetch(connection, download, piece)
                    if connection.ranges_ignored:
                        self._split = False
                except BaseException as failure:  # handed to the applier
                    self._fail(download, _named(download, failure))
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

    def _fetch(self, connection: Connection, download: _Download, piece: _Piece) -> None:
        descriptor = download.descriptor
        self._open(download)
        whole = piece.start == 0 and piece.end == descriptor.size  # a plain GET, no Range
        for chunk in connection.blob_stream(descriptor, None, piece.start,
                                            None if whole else piece.end):
            if self._stop.is_set() or download.state != "running":
                raise _Stopped(f"{download.label}: download stopped")
            with self._lock:  # claimed first: a split never takes bytes being written
                offset = piece.start + piece.claimed
                room = piece.end - offset  # the end may have moved
                chunk = chunk[:room]
                piece.claimed += len(chunk)
            if chunk:
                os.pwrite(download.fd, chunk, offset)
                with self._lock:
                    piece.written += len(chunk)
                self._advance(download)
            if len(chunk) == room:
                break  # the piece is complete (or its rest went to another worker)
        if piece.written < piece.end - piece.start:
            raise VerificationError(
                f"blob ({descriptor.media_type}): it ended after "
                f"{piece.start + piece.written} bytes, its descriptor says {descriptor.size}")

    def _open(self, download: _Download) -> None:
        with self._lock:
            if download.fd < 0:
                try:
                    download.fd, download.path = self._spool.spool_file(
                        download.descriptor.digest)
                except OSError as error:
                    raise FilesystemError(f"spooling downloads: {error.strerror or error}"
                                          ) from None

    def _advance(self, download: _Download) -> None:
        """Let the reader see the new contiguous bytes; hash them in order, and once the
        blob is complete check it (and keep it in the cache)."""
        with self._lock:
            contiguous = 0
            for piece in sorted(download.pieces, key=lambda p: p.start):
                if piece.start > contiguous:
                    break
                contiguous = max(contiguous, piece.start + piece.written)
        with download.grown:
            download.contiguous = max(download.contiguous, contiguous)
            download.grown.notify_all()
        with download.hashing:  # one hasher at a time, in order
            descriptor = download.descriptor
            if download.hasher is None:
                download.hasher = descriptor.digest.hasher()
            while download.hashed < contiguous:
                data = os.pread(download.fd, min(READ_SIZE, contiguous - download.hashed),
                                download.hashed)
                download.hasher.update(data)
                download.hashed += len(data)
            if download.hashed != descriptor.size or download.state != "running":
                return
            check_digest(download.hasher.hexdigest(), descriptor.digest,
                         f"blob ({descriptor.media_type})")
            if self._spool.keep_spooled(download.path, descriptor.digest):
                download.path = ""  # kept: not removed at the end
            with download.grown:
                download.state = "done"
                download.grown.notify_all()

    def _fail(self, download: _Download, error: BaseException) -> None:
        with download.grown:
            if download.state != "failed":
                download.state, download.error = "failed", error
            download.grown.notify_all()
        if not self._stop.is_set():
            self._failure = self._failure or error

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
        if download.uses == 0 and download.path:  # read for the last time: free the disk
            os.close(download.fd)
            download.fd = -1
            os.unlink(download.path)
            download.path = ""

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
        """Read the spool file as the download's contiguous prefix grows."""
        read = 0
        while True:
            with download.grown:
                while (download.contiguous <= read and download.state == "running"
                       and self._failure is None and not self._stop.is_set()):
                    download.grown.wait(_POLL_SECONDS)
                state, available = download.state, download.contiguous
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

    # -- the end -------------------------------------------------------------------------------
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
        """`stop`, wait for the workers, close the files, remove what is not kept."""
        self.stop()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)  # a worker stuck in a TLS or DNS call: not for long
        for download in self._downloads.values():
            if download.fd >= 0:
                os.close(download.fd)
                download.fd = -1
            if download.path:
                with contextlib.suppress(OSError):
                    os.unlink(download.path)
        self._spool.remove_spool()

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


@dataclass
class PrivateSpool:
    """A directory of the unpack's own (in its temporary bundle), removed at the end."""

    directory: str

    def spool_file(self, digest: Digest) -> tuple[int, str]:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, digest.hex)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path

    def keep_spooled(self, path: str, digest: Digest) -> bool:
        return False

    def remove_spool(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def spool_directory(bundle_path: str) -> str:
    """The private spool of an unpack: inside its temporary bundle directory."""
    return os.path.join(bundle_path, ".downloads")
