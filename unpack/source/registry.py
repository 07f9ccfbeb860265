"""Pull from a registry (OCI distribution spec), streaming each blob straight into the unpack.

The HTTP requests (auth, retries, Range resumes, TLS) are made by the
`RegistryClient` of `registry_client`; this is the Source over it.

- The tag (or digest) is resolved with `GET /v2/NAME/manifests/REF`, sending
  Accept for the OCI and Docker manifest and index types; the index and
  manifests below it are fetched by digest as the resolver asks for them.
- Each blob is `GET /v2/NAME/blobs/DIGEST`, streamed through `verified()`.
- With a cache, blobs are read from it when present, and written to it
  (after verification) when fetched. A tag costs one HEAD request to learn
  its current digest; a digest reference needs no network at all.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator

from unpack.errors import ImageError
from unpack.image import mediatypes
from unpack.image.descriptor import Descriptor
from unpack.image.documents import MAX_DOCUMENT_SIZE, REF_NAME, Index, parse_json_object
from unpack.source.base import SourceBase, SourceOptions
from unpack.source.cache import BlobCache
from unpack.source.downloads import Downloads, PrivateSpool
from unpack.source.registry_client import DOCUMENT_TYPES, MANIFEST_ACCEPT, RegistryClient
from unpack.source.registryref import RegistryReference
from unpack.verify import Digest, verified, verify_bytes


class RegistrySource(SourceBase):
    """An image in a registry repository, read as the resolver reads any source."""

    def __init__(self, reference: RegistryReference, options: SourceOptions) -> None:
        self.reference = reference
        self.path = str(reference)
        self.client = RegistryClient(reference, options)
        self.pull = options.pull
        self.cache = BlobCache(options.cache) if options.cache else None
        self._documents: dict[Digest, bytes] = {}
        self._top: Descriptor | None = None
        self.options = options
        self._ahead: Downloads | None = None

    def abort(self) -> None:
        self.client.abort()
        if self._ahead is not None:
            self._ahead.stop()

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
        self.client.close()
        if self.cache is not None:
            self.cache.close()

    @property
    def ref(self) -> str:
        """The REF to resolve in `index()`: the tag, or the digest."""
        return self.reference.ref

    # -- resolving the reference
    def top(self) -> Descriptor:
        """The descriptor of what the reference names (an index or a manifest)."""
        if self._top is None:
            self._top = self._resolve_top()
        return self._top

    def _resolve_top(self) -> Descriptor:
        reference = self.reference
        what = f"manifest {reference.digest}" if reference.digest else f"tag {reference.tag!r}"
        if self.cache is not None:
            known = self._cached_top()
            if known is not None:
                return known
        body, content_type, header_digest = self.client.fetch_document(
            "manifests", reference.ref, what, MANIFEST_ACCEPT
        )
        media_type = _document_type(body, content_type, what)
        digest = reference.digest or Digest("sha256", hashlib.sha256(body).hexdigest())
        verify_bytes(body, digest, len(body), f"{what} from {reference}")
        if header_digest and reference.digest is None:
            announced = Digest.parse(header_digest)
            if announced.algorithm == digest.algorithm and announced != digest:
                raise ImageError(f"{what}: content digest {digest}, the registry says {announced}")
        self._documents[digest] = body
        descriptor = Descriptor(media_type, digest, len(body))
        if self.cache is not None:
            self.cache.store_bytes(digest, body)
            self._remember(descriptor)
        return descriptor

    def _cached_top(self) -> Descriptor | None:
        """From the cache: a digest costs nothing; so does a cached tag unless pull="always"."""
        assert self.cache is not None
        reference = self.reference
        if reference.digest is not None:
            probe = Descriptor(mediatypes.OCI_MANIFEST, reference.digest, 0)
            if not self.cache.has(probe):
                return None
            path = os.path.join(self.cache.path, "blobs", reference.digest.algorithm,
                                reference.digest.hex)
            size = os.path.getsize(path)
            with open(path, "rb") as file:
                body = file.read(MAX_DOCUMENT_SIZE + 1)
            what = f"manifest {reference.digest}"
            verify_bytes(body, reference.digest, size, f"{what} (cached in {self.cache.path})")
            descriptor = Descriptor(_document_type(body, "", what), reference.digest, size)
            self._documents[reference.digest] = body
            return descriptor
        recorded = self.cache.lookup(self._cache_name()) if self.pull == "missing" else None
        if recorded is not None:
            descriptor = Descriptor.parse(recorded, f"{self.cache.path}/index.json")
            if self.cache.read_document(descriptor, "manifest") is not None:
                return descriptor
        head = self.client.head_manifest(reference.ref, f"tag {reference.tag!r}")
        if head is None:
            return None
        digest, media_type, size = head
        descriptor = Descriptor(media_type, digest, size)
        if self.cache.read_document(descriptor, "manifest") is None:
            return None
        self._remember(descriptor)
        return descriptor

    def _cache_name(self) -> str:
        """The ref name a tag is recorded under in the cache: HOST/NAME:TAG."""
        reference = self.reference
        return f"{reference.registry}/{reference.repository}:{reference.tag}"

    def _remember(self, descriptor: Descriptor) -> None:
        if self.cache is not None and self.reference.tag:
            self.cache.tag(self._cache_name(), {
                "mediaType": descriptor.media_type,
                "digest": str(descriptor.digest),
                "size": descriptor.size,
            })

    # -- Source
    def index(self) -> Index:
        """A one-entry index: what the reference names, tagged with the tag."""
        top = self.top()
        annotations = {REF_NAME: self.ref} if self.reference.digest is None else {}
        entry = Descriptor(top.media_type, top.digest, top.size, annotations=annotations)
        return Index((entry,), mediatypes.OCI_INDEX)

    def read_document(self, descriptor: Descriptor, what: str) -> bytes:
        where = f"{what} {descriptor.digest}"
        if descriptor.size > MAX_DOCUMENT_SIZE:
            raise ImageError(f"{where}: descriptor size {descriptor.size} is implausibly large")
        body = self._documents.get(descriptor.digest)
        if body is None and self.cache is not None:
            body = self.cache.read_document(descriptor, what)
        if body is None:
            kind = "manifests" if descriptor.media_type in DOCUMENT_TYPES else "blobs"
            accept = descriptor.media_type if kind == "manifests" else None
            body, _, _ = self.client.fetch_document(kind, str(descriptor.digest), where, accept)
            verify_bytes(body, descriptor.digest, descriptor.size, f"{where} from {self.path}")
            if self.cache is not None:
                self.cache.store_bytes(descriptor.digest, body)
        return verify_bytes(body, descriptor.digest, descriptor.size, where)

    # -- signatures (read by unpack.trust; never cached)
    def tagged_manifest(self, tag: str, limit: int) -> tuple[bytes, str] | None:
        """The manifest a tag of this repository names, and its media type; None if no such tag."""
        found = self.client.fetch_optional("manifests", tag, f"tag {tag!r}",
                                           mediatypes.OCI_MANIFEST, limit)
        return None if found is None else (found[0], found[1])

    def small_blob(self, descriptor: Descriptor, limit: int, what: str) -> bytes:
        """A small blob of this repository, verified against its descriptor."""
        if descriptor.size > limit:
            raise ImageError(f"{what} {descriptor.digest}: {descriptor.size} bytes is too large")
        body, _, _ = self.client.fetch_document("blobs", str(descriptor.digest), what, None, limit)
        return verify_bytes(body, descriptor.digest, descriptor.size, f"{what} from {self.path}")

    def fetch_url(self, url: str, what: str, limit: int) -> bytes | None:
        """An http(s) URL outside the registry API (lookaside signatures); None on 404."""
        return self.client.fetch_url(url, what, limit)

    # -- parallel downloads
    def download_ahead(self, layers: list[tuple[Descriptor, str]], spool: str,
                       parallel: int) -> Downloads | None:
        """Start fetching the layer blobs the cache lacks, `parallel` at once (see
        `downloads`; each comes with the label its errors start with); None when fewer
        than two connections are allowed. The caller closes it."""
        needed = [(d, label) for d, label in layers
                  if self.cache is None or not self.cache.has(d)]
        if parallel < 2 or not needed:
            return None
        where = self.cache if self.cache is not None else PrivateSpool(spool)
        self._ahead = Downloads(needed, where, self._connect, parallel)
        return self._ahead

    def _connect(self) -> RegistryClient:
        """A connection of its own for a download thread, already authorised."""
        return RegistryClient(self.reference, self.options, parent=self.client)

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        if self.cache is not None and self.cache.has(descriptor):
            return self.cache.blob_chunks(descriptor, observe)
        if self._ahead is not None and self._ahead.has(descriptor):
            return self._ahead.chunks(descriptor, lambda: self._fetched(descriptor, observe),
                                      observe)
        return self._fetched(descriptor, observe)

    def _fetched(self, descriptor: Descriptor, observe: Callable[[int], None] | None
                 ) -> Iterator[bytes]:
        """A blob straight from the network, verified (and kept in the cache, if any)."""
        what = f"blob {descriptor.digest} ({descriptor.media_type}) from {self.path}"
        stream = verified(
            self.client.blob_stream(descriptor, observe), descriptor.digest, descriptor.size, what
        )
        if self.cache is None:
            return stream  # type: ignore[return-value]
        return self._caching(descriptor, stream)  # type: ignore[arg-type]

    def _caching(self, descriptor: Descriptor, stream: Iterator[bytes]) -> Iterator[bytes]:
        """Tee a verified stream into the cache; kept only if it ends verified."""
        assert self.cache is not None
        try:
            with self.cache.writer(descriptor.digest) as write:
                for chunk in stream:
                    write(chunk)
                    yield chunk
        finally:
            stream.close()  # type: ignore[attr-defined]


def _document_type(body: bytes, content_type: str, what: str) -> str:
    """The media type of a fetched manifest: its Content-Type, else its mediaType field."""
    if content_type in DOCUMENT_TYPES:
        return content_type
    document = parse_json_object(body, what)
    declared = document.get("mediaType")
    if declared in DOCUMENT_TYPES:
        return str(declared)
    if document.get("schemaVersion") == 1:
        raise ImageError(f"{what}: Docker schema 1 manifests are not supported")
    if isinstance(document.get("manifests"), list):
        return mediatypes.OCI_INDEX
    if isinstance(document.get("layers"), list):
        return mediatypes.OCI_MANIFEST
    raise ImageError(f"{what}: unsupported manifest type {content_type or declared!r}")
