"""The `unpack` verb: an image reference and a directory in, a runtime bundle out."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pwd
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field

from unpack.config import HostIds, RuntimeOptions, parse_subid, runtime_config
from unpack.errors import FilesystemError
from unpack.fs.bundle import BundleDir, check_dest
from unpack.fs.rootfs import Rootfs
from unpack.fs.rootless import RootlessRootfs
from unpack.idmap import IdMap
from unpack.image.platform import Platform
from unpack.image.resolve import Image, Layer, ResolvedManifest, load_image, resolve_manifest
from unpack.image.store import Source
from unpack.layer.applier import Applier
from unpack.layer.stream import LayerStream
from unpack.progress import Progress
from unpack.source import ImageReference, SourceOptions, open_source
from unpack.trust.decide import (
    SignatureReport,
    TrustOptions,
    check_image,
    load_applicable_policy,
    policy_subject,
    signature_fetcher,
)
from unpack.trust.evaluation import PolicyImage
from unpack.trust.policy import SYSTEM_POLICY, USER_POLICY, Policy


@dataclass(frozen=True)
class UnpackOptions:
    """What to unpack and how; the defaults are what `oci-unpack IMAGE DIR` does."""

    platform: Platform | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    write_config: bool = True
    use_openat2: bool | None = None
    rootless: bool | None = None  # None: rootless exactly when not running as root
    uid_map: IdMap = field(default_factory=lambda: IdMap(kind="uid"))
    gid_map: IdMap = field(default_factory=lambda: IdMap(kind="gid"))
    source: SourceOptions = field(default_factory=SourceOptions)
    trust: TrustOptions = field(default_factory=TrustOptions)


@dataclass
class LayerReport:
    """What one layer was and what applying it took."""

    digest: str
    media_type: str
    size: int
    diff_id: str
    uncompressed_size: int = 0
    entries: int = 0
    seconds: float = 0.0


@dataclass
class UnpackReport:
    """The machine-readable summary `--json` prints."""

    image: str  # fully qualified (a short name resolved)
    transport: str
    ref: str | None
    manifest: str
    config: str
    platform: str | None
    bundle: str
    signature: SignatureReport
    layers: list[LayerReport] = field(default_factory=list)
    seconds: float = 0.0
    short_name: str | None = None  # IMAGE as written, when it was a name to resolve
    resolution: str | None = None  # how it was resolved: "alias in FILE", …


def unpack(
    image_text: str,
    dest: str,
    options: UnpackOptions,
    progress: Progress,
    warn: Callable[[str], None],
) -> UnpackReport:
    """Unpack IMAGE into the bundle directory `dest`; nothing appears at `dest` on failure.

    Every name gets exactly the mode its entry says, whatever the umask (which is left
    alone: modes are set explicitly where the kernel masked them).
    """
    started = time.monotonic()
    check_dest(dest)
    policy = load_applicable_policy(options.trust)
    source, ref, reference = open_source(image_text, options.source)
    if reference.short_name is not None:
        progress.status(f"{reference.short_name}: pulling {reference} "
                        f"({reference.resolution})")
    if options.source.cache and reference.registry is None:
        warn(f"--cache has no effect on a local image ({reference}): it caches registry "
             "blobs")
    with source:
        resolved = resolve_manifest(source, ref, options.platform)
        signature = _check_signatures(policy, options.trust, reference, source, resolved, warn)
        image = load_image(source, resolved, options.platform)
        report = UnpackReport(
            image=str(reference),
            transport=reference.transport,
            ref=reference.ref,
            manifest=str(image.manifest.digest),
            config=str(image.config_descriptor.digest),
            platform=str(image.platform) if image.platform else None,
            bundle=os.path.abspath(dest),
            signature=signature,
            short_name=reference.short_name,
            resolution=reference.resolution,
        )
        slow = functools.partial(progress.status, "removing the partial bundle…")
        with BundleDir(dest, on_slow_discard=slow) as bundle:
            if options.uid_map.ranges:
                bundle.allow_traversal()  # the mapped root must reach DIR/rootfs
            rootfs_path = os.path.join(bundle.path, "rootfs")
            os.mkdir(rootfs_path, 0o755)
            os.chmod(rootfs_path, 0o755)  # whatever the umask
            rootless = os.geteuid() != 0 if options.rootless is None else options.rootless
            with _open_rootfs(rootfs_path, options, rootless, warn) as rootfs:
                applier = Applier(rootfs, warn=warn)
                count = len(image.layers)
                with _downloads_ahead(source, image, bundle.path, options.source):
                    for number, layer in enumerate(image.layers, 1):
                        progress.start(number, count, str(layer.descriptor.digest),
                                       layer.descriptor.size)
                        report.layers.append(_apply_layer(
                            source, layer, applier, progress, _layer_label(number, count, layer)))
                        progress.finish()
                applier.finish()
                if options.write_config:
                    runtime = _runtime_options(options, rootless)
                    _write_config(bundle.path, image, rootfs, runtime, chown_volumes=not rootless)
                rootfs.finish()
            bundle.commit()
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _check_signatures(
    policy: Policy | None,
    options: TrustOptions,
    reference: ImageReference,
    source: Source,
    resolved: ResolvedManifest,
    warn: Callable[[str], None],
) -> SignatureReport:
    """Apply the signature policy to the manifest; raise PolicyRejected if it refuses it."""
    if policy is None:
        if options.insecure_policy:
            return SignatureReport(None, note="not checked (--insecure-policy)")
        note = f"no signature policy ({SYSTEM_POLICY} or ~/{USER_POLICY}); not checked"
        warn(note)
        return SignatureReport(None, note=note)
    subject = policy_subject(reference, source)
    digest = str(resolved.descriptor.digest)
    image = PolicyImage(subject, resolved.data, digest,
                        signature_fetcher(reference, source, subject, digest, options))
    return check_image(policy, image)


def _downloads_ahead(source: Source, image: Image, bundle: str,
                     options: SourceOptions) -> contextlib.AbstractContextManager[object]:
    """Parallel downloads of a registry image's layers, spooled in the bundle's temporary
    directory (removed when the block ends, whatever ends it); nothing for local sources."""
    download_ahead = getattr(source, "download_ahead", None)
    if download_ahead is None:
        return contextlib.nullcontext()
    from unpack.source.downloads import spool_directory

    count = len(image.layers)
    layers = [(layer.descriptor, _layer_label(number, count, layer))
              for number, layer in enumerate(image.layers, 1)]
    downloads = download_ahead(layers, spool_directory(bundle), options.parallel_downloads)
    return contextlib.nullcontext() if downloads is None else downloads


def _open_rootfs(
    path: str, options: UnpackOptions, rootless: bool, warn: Callable[[str], None]
) -> Rootfs:
    maps = {"use_openat2": options.use_openat2, "uid_map": options.uid_map,
            "gid_map": options.gid_map}  # fmt: skip
    if rootless:
        return RootlessRootfs(path, warn=warn, **maps)
    return Rootfs(path, **maps)


def _runtime_options(options: UnpackOptions, rootless: bool) -> RuntimeOptions:
    """The runtime options plus what the config needs to know about users and mappings."""
    uid, gid = os.geteuid(), os.getegid()
    return dataclasses.replace(
        options.runtime,
        rootless=rootless,
        uid_mappings=tuple(astuple(r) for r in options.uid_map.ranges),
        gid_mappings=tuple(astuple(r) for r in options.gid_map.ranges),
        host=HostIds(uid, gid, _subid("/etc/subuid", uid), _subid("/etc/subgid", uid)),
    )


def _subid(path: str, uid: int) -> tuple[int, int] | None:
    """This user's subordinate ID range from /etc/subuid or /etc/subgid, if any."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return parse_subid(file.read(), name, uid)
    except OSError:
        return None


def _layer_label(number: int, count: int, layer: Layer) -> str:
    """How errors name a layer: its place and digest ("layer 2/5 sha256:…")."""
    return f"layer {number}/{count} {layer.descriptor.digest}"


def _apply_layer(
    source: Source, layer: Layer, applier: Applier, progress: Progress, label: str
) -> LayerReport:
    descriptor = layer.descriptor
    report = LayerReport(
        str(descriptor.digest), descriptor.media_type, descriptor.size, str(layer.diff_id)
    )
    started = time.monotonic()
    stream = LayerStream(source, layer, label, progress.advance)
    with stream as entries:
        report.entries = applier.apply_layer(entries)
    report.uncompressed_size = stream.uncompressed_size
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _write_config(
    bundle: str, image: Image, rootfs: Rootfs, options: RuntimeOptions, *, chown_volumes: bool
) -> None:
    converted = runtime_config(image.config.raw, rootfs.read_file, options)
    user = converted.config["process"]["user"]
    try:
        for name in converted.volume_dirs:
            path = _make_dirs(bundle, name)
            if chown_volumes:
                uid, gid = rootfs.uid_map.to_host(user["uid"]), rootfs.gid_map.to_host(user["gid"])
                os.chown(path, uid, gid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        descriptor = os.open(os.path.join(bundle, "config.json"), flags, 0o644)
        os.fchmod(descriptor, 0o644)  # whatever the umask
        with open(descriptor, "w", encoding="utf-8") as file:
            json.dump(converted.config, file, indent=2)
            file.write("\n")
    except OSError as error:
        raise FilesystemError(f"{bundle}: cannot write config ({error.strerror})") from None


def _make_dirs(bundle: str, relative: str) -> str:
    """Make `bundle/relative` and the directories above it, each mode 0755 (any umask)."""
    path = bundle
    for part in relative.split("/"):
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        os.chmod(path, 0o755)
    return path
