"""Image archives read in place: `oci-archive` and `docker-archive` (legacy and current).

An oci-archive is an OCI image layout inside a tar. A docker-archive
(`docker save`, `skopeo copy ... docker-archive:`) has a `manifest.json`
listing, per image, its config file, its layer files and its tags; this
source synthesises the OCI view the resolver reads: an index with one
Docker schema 2 manifest per image, held in memory. Every byte read from
the archive is still verified:

- the config's digest is computed from its bytes (and checked against its
  file name when that is `HEX.json` or `blobs/sha256/HEX`);
- an uncompressed layer file is described by its diff_id from the config,
  so the blob check *is* the diff_id check;
- a compressed layer file is described by the digest its name or the
  `LayerSources` entry gives, else by a digest computed in a first pass;
  its uncompressed content is then checked against the diff_id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from unpack.errors import ImageError
from unpack.image import mediatypes
from unpack.image.compression import Compression, sniff
from unpack.image.descriptor import Descriptor
from unpack.image.documents import (
    MAX_DOCUMENT_SIZE,
    MAX_INDEX_SIZE,
    REF_NAME,
    Index,
    parse_json_object,
)
from unpack.source.base import SourceBase
from unpack.source.dockerref import InvalidReference, parse_normalized
from unpack.source.layout import check_layout_file
from unpack.source.tarindex import Member, TarIndex
from unpack.verify import Digest, verified, verify_bytes

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
_LAYER_TYPES = {
    Compression.NONE: DOCKER_LAYER,
    Compression.GZIP: DOCKER_LAYER + ".gzip",
    Compression.ZSTD: DOCKER_LAYER + ".zstd",
}
_HEX_FILE = re.compile(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json|\.tar)?")


class OciArchive(SourceBase):
    """An OCI image layout inside a tar archive (plain, gzip or zstd)."""

    def __init__(self, path: str, tar: TarIndex | None = None) -> None:
        self.path = path
        self._tar = tar or TarIndex(path)
        self._checked(lambda: check_layout_file(
            self._tar.read(self._tar.member("oci-layout", "file"), 1 << 16, "file"),
            f"{path}: oci-layout",
        ))

    def close(self) -> None:
        self._tar.close()

    def index(self) -> Index:
        """The archive's `index.json`."""
        member = self._tar.member("index.json", "file")
        data = self._tar.read(member, MAX_INDEX_SIZE, "file")
        return Index.parse(data, f"{self.path}: index.json")

    def _blob(self, descriptor: Descriptor) -> Member:
        digest = descriptor.digest
        return self._tar.member(
            f"blobs/{digest.algorithm}/{digest.hex}", f"blob {digest} ({descriptor.media_type})"
        )

    def read_document(self, descriptor: Descriptor, what: str) -> bytes:
        where = f"{what} {descriptor.digest}"
        if descriptor.size > MAX_DOCUMENT_SIZE:
            raise ImageError(f"{where}: descriptor size {descriptor.size} is implausibly large")
        member = self._blob(descriptor)
        data = self._tar.head(member, descriptor.size + 1)
        return verify_bytes(data, descriptor.digest, descriptor.size, where)

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        member = self._blob(descriptor)
        return verified(  # type: ignore[return-value]
            self._tar.chunks(member, observe),
            descriptor.digest,
            descriptor.size,
            f"blob {descriptor.digest} ({descriptor.media_type}) in {self.path}",
        )


@dataclass(frozen=True)
class DockerImage:
    """One image of a docker-archive, as its synthesised manifest describes it."""

    tags: tuple[str, ...]
    manifest: Descriptor


class DockerArchive(SourceBase):
    """A `docker save` / `skopeo copy docker-archive:` tarball, seen as an OCI image store."""

    def __init__(self, path: str, tar: TarIndex | None = None) -> None:
        self.path = path
        self._tar = tar or TarIndex(path)
        self._documents: dict[Digest, bytes] = {}
        self._blobs: dict[Digest, Member] = {}
        self.images = self._checked(self._load)

    def close(self) -> None:
        self._tar.close()

    # -- the synthesised view
    def _load(self) -> list[DockerImage]:
        where = f"{self.path}: manifest.json"
        data = self._tar.read(self._tar.member("manifest.json", "file"), MAX_INDEX_SIZE, "file")
        try:
            entries = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise ImageError(f"{where}: invalid JSON ({error})") from None
        if not isinstance(entries, list) or not entries:
            raise ImageError(f"{where}: expected a non-empty list of images")
        return [self._image(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]

    def _image(self, entry: object, where: str) -> DockerImage:
        if not isinstance(entry, dict):
            raise ImageError(f"{where}: expected a JSON object")
        config_name = entry.get("Config")
        layer_names = entry.get("Layers")
        tags = entry.get("RepoTags") or []
        sources = entry.get("LayerSources") or {}
        if not isinstance(config_name, str):
            raise ImageError(f"{where}: Config is not a file name")
        if not isinstance(layer_names, list) or not all(isinstance(n, str) for n in layer_names):
            raise ImageError(f"{where}: Layers is not a list of file names")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ImageError(f"{where}: RepoTags is not a list of strings")
        if not isinstance(sources, dict):
            raise ImageError(f"{where}: LayerSources is not an object")

        config_member = self._tar.member(config_name, "config")
        config_bytes = self._tar.read(config_member, MAX_DOCUMENT_SIZE, "config")
        config_digest = Digest("sha256", hashlib.sha256(config_bytes).hexdigest())
        named = _HEX_FILE.fullmatch(config_member.name)
        if named and named.group(1) != config_digest.hex:
            raise ImageError(
                f"{self.path}: config {config_name!r}: digest is {config_digest}, "
                f"its name says sha256:{named.group(1)}"
            )
        config = parse_json_object(config_bytes, f"{self.path}: config {config_name!r}")
        diff_ids = _diff_ids(config, f"{self.path}: config {config_name!r}")
        if len(diff_ids) != len(layer_names):
            raise ImageError(
                f"{where}: {len(layer_names)} layers but its config lists {len(diff_ids)} diff_ids"
            )
        self._documents[config_digest] = config_bytes
        self._blobs[config_digest] = config_member
        layers = [
            self._layer(name, diff_id, sources.get(str(diff_id)))
            for name, diff_id in zip(layer_names, diff_ids, strict=True)
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": {
                "mediaType": mediatypes.DOCKER_CONFIG,
                "digest": str(config_digest),
                "size": len(config_bytes),
            },
            "layers": layers,
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = Digest("sha256", hashlib.sha256(manifest_bytes).hexdigest())
        self._documents[manifest_digest] = manifest_bytes
        annotations = {REF_NAME: tags[0]} if tags else {}
        descriptor = Descriptor(
            mediatypes.DOCKER_MANIFEST, manifest_digest, len(manifest_bytes),
            annotations=annotations,
        )
        return DockerImage(tuple(tags), descriptor)

    def _layer(self, name: str, diff_id: Digest, source: object) -> dict[str, Any]:
        member = self._tar.member(name, "layer")
        compression = sniff(self._tar.head(member, 4))
        if compression is Compression.NONE:
            digest = diff_id
        elif isinstance(source, dict) and isinstance(source.get("digest"), str):
            digest = Digest.parse(source["digest"])
        elif named := _HEX_FILE.fullmatch(member.name):
            digest = Digest("sha256", named.group(1))
        else:  # a compressed layer named by nothing: its digest is what it hashes to
            hasher = hashlib.sha256()
            for chunk in self._tar.chunks(member):
                hasher.update(chunk)
            digest = Digest("sha256", hasher.hexdigest())
        self._blobs[digest] = member
        return {"mediaType": _LAYER_TYPES[compression], "digest": str(digest), "size": member.size}

    # -- Source
    def index(self) -> Index:
        """One entry per image, tagged with its first RepoTag."""
        return Index(tuple(image.manifest for image in self.images), mediatypes.OCI_INDEX)

    def select(self, ref: str | None) -> str:
        """The manifest digest of the image `ref` names: NAME:TAG, `@N`, or None (the only one)."""
        if ref is None:
            if len(self.images) == 1:
                return str(self.images[0].manifest.digest)
            raise ImageError(
                f"{self.path} holds {len(self.images)} images; choose one with "
                f"docker-archive:{self.path}:NAME:TAG (tags: {self._tags_present()})"
            )
        if ref.startswith("@"):
            if not ref[1:].isdigit() or int(ref[1:]) >= len(self.images):
                raise ImageError(
                    f"{self.path}: no image {ref} (it holds {len(self.images)}, from @0)"
                )
            return str(self.images[int(ref[1:])].manifest.digest)
        wanted = normalise_tag(ref)
        for image in self.images:
            if any(normalise_tag(tag) == wanted for tag in image.tags):
                return str(image.manifest.digest)
        raise ImageError(f"no image tagged {ref!r} in {self.path}; tags: {self._tags_present()}")

    def _tags_present(self) -> str:
        tags = sorted({tag for image in self.images for tag in image.tags})
        return ", ".join(tags) or "(none)"

    def read_document(self, descriptor: Descriptor, what: str) -> bytes:
        where = f"{what} {descriptor.digest}"
        data = self._documents.get(descriptor.digest)
        if data is None:
            raise ImageError(f"{where}: not in {self.path}")
        return verify_bytes(data, descriptor.digest, descriptor.size, where)

    def blob_chunks(
        self, descriptor: Descriptor, observe: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        member = self._blobs.get(descriptor.digest)
        if member is None:
            raise ImageError(f"blob {descriptor.digest}: not in {self.path}")
        return verified(  # type: ignore[return-value]
            self._tar.chunks(member, observe),
            descriptor.digest,
            descriptor.size,
            f"{descriptor.media_type} {member.name!r} ({descriptor.digest}) in {self.path}",
        )


def normalise_tag(ref: str) -> str:
    """`busybox` → `docker.io/library/busybox:latest`, as Docker reads an image name."""
    try:
        return str(parse_normalized(ref).with_default_tag())
    except InvalidReference:
        return ref  # matches only a tag written exactly so


def _diff_ids(config: dict[str, Any], what: str) -> list[Digest]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageError(f"{what}: rootfs.diff_ids is not a list")
    return [Digest.parse(d) for d in rootfs["diff_ids"]]


def open_archive(path: str, kind: str | None = None) -> OciArchive | DockerArchive:
    """Open an archive as `kind` ("oci" or "docker"), or as what its members say it is."""
    tar = TarIndex(path)
    try:
        has_oci = tar.find("oci-layout") is not None
        has_docker = tar.find("manifest.json") is not None
        if kind is None:
            if not has_oci and not has_docker:
                raise ImageError(
                    f"{path}: a tar archive, but neither an oci-archive (no oci-layout) "
                    "nor a docker-archive (no manifest.json)"
                )
            kind = "oci" if has_oci else "docker"
        if kind == "oci":
            return OciArchive(path, tar)
        return DockerArchive(path, tar)
    except BaseException:
        tar.close()
        raise
