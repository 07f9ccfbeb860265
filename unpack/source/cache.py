"""`--cache DIR`: fetched blobs kept in an OCI image layout, reused by later pulls.

A blob enters the cache only once it has been verified: it is written to a
temporary file beside its final name while it streams through, and renamed
into `blobs/ALG/HEX` when its digest matched. Each pulled tag is recorded
in `index.json` (ref name `HOST/REPOSITORY:TAG`), so the cache is also a
layout `oci-unpack DIR:HOST/REPOSITORY:TAG` and skopeo can read.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from unpack.errors import FilesystemError, ImageError, VerificationError
from unpack.image.descriptor import Descriptor
from unpack.image.documents import REF_NAME
from unpack.image.mediatypes import OCI_INDEX
from unpack.source.layout import Layout
from unpack.verify import Digest


class BlobCache:
    """An OCI layout used as a content-addressed cache; safe for concurrent pulls."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            os.makedirs(path, exist_ok=True)
            with self._locked():
                if not os.path.exists(os.path.join(path, "oci-layout")):
                    self._write(
                        "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()
                    )
                if not os.path.exists(os.path.join(path, "index.json")):
                    self._write_index([])
        except OSError as error:
            raise FilesystemError(f"--cache {path}: {error.strerror or error}") from None
        self._layout = Layout(path)

    def close(self) -> None:
        self._layout.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, name: str, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=self.path, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, os.path.join(self.path, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        self._write("index.json", json.dumps(index, indent=1).encode())

    def _blob_path(self, digest: Digest) -> str:
        return os.path.join(self.path, "blobs", digest.algorithm, digest.hex)

    def has(self, descriptor: Descriptor) -> bool:
        """Whether the blob is cached (its content is verified when read)."""
        path = self._blob_path(descriptor.digest)
        return os.path.isfile(path) and not os.path.islink(path)

    def read_document(self, descriptor: Descriptor, what: str) -> bytes | None:
        """A cached document (verified), or None (a corrupt cached copy is removed)."""
        if not self.has(descriptor):
            return None
        try:
            return self._layout.read_document(descriptor, what)
        except ImageError:
            self.discard(descriptor)
            return None

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None
    ) -> Iterator[bytes]:
        """A cached blob, verified; a corrupt one is removed and named in the error."""
        try:
            yield from self._layout.blob_chunks(descriptor, observe)
        except VerificationError as error:
            self.discard(descriptor)
            raise VerificationError(f"{error} (cached in {self.path}; removed)") from None

    def discard(self, descriptor: Descriptor) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._blob_path(descriptor.digest))

    def store_bytes(self, digest: Digest, data: bytes) -> None:
        """Keep a verified document (manifest, index, config)."""
        with self.writer(digest) as write:
            write(data)

    @contextlib.contextmanager
    def writer(self, digest: Digest) -> Iterator[Callable[[bytes], None]]:
        """Write a blob; it is kept only if the block ends without an exception.

        The caller verifies what it writes before leaving the block.
        """
        fd, temp = self.spool_file(digest)
        kept = False
        try:
            with os.fdopen(fd, "wb") as file:
                yield file.write
            kept = self.keep_spooled(temp, digest)
        finally:
            if not kept:
                with contextlib.suppress(OSError):
                    os.unlink(temp)

    # -- the spool of parallel downloads (`downloads.Spool`)
    def spool_file(self, digest: Digest) -> tuple[int, str]:
        """A temporary file beside the blob's final name: (read-write fd, path)."""
        directory = os.path.dirname(self._blob_path(digest))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{digest.hex[:16]}.")
        except OSError as error:
            raise FilesystemError(f"--cache {self.path}: {error.strerror or error}") from None
        return fd, temp

    def keep_spooled(self, path: str, digest: Digest) -> bool:
        """A spool file, complete and verified, becomes the cached blob."""
        os.chmod(path, 0o644)
        os.replace(path, self._blob_path(digest))
        return True

    def remove_spool(self) -> None:
        """Nothing: what was not kept is removed by its writer."""

    def _manifests(self) -> list[Any]:
        """The entries of index.json (none if it is unreadable)."""
        try:
            with open(os.path.join(self.path, "index.json"), "rb") as file:
                manifests = json.loads(file.read()).get("manifests", [])
        except (OSError, ValueError, AttributeError):
            return []
        return manifests if isinstance(manifests, list) else []

    def lookup(self, ref_name: str) -> dict[str, Any] | None:
        """The descriptor recorded under `ref_name` in index.json, if any."""
        for entry in self._manifests():
            if isinstance(entry, dict) and entry.get("annotations", {}).get(REF_NAME) == ref_name:
                return entry
        return None

    def tag(self, ref_name: str, descriptor: dict[str, Any]) -> None:
        """Record `descriptor` in index.json under `ref_name` (replacing an older one)."""
        with self._locked():
            manifests = [
                m for m in self._manifests()
                if not isinstance(m, dict) or m.get("annotations", {}).get(REF_NAME) != ref_name
            ]
            entry = dict(descriptor)
            entry["annotations"] = {**descriptor.get("annotations", {}), REF_NAME: ref_name}
            manifests.append(entry)
            self._write_index(manifests)
