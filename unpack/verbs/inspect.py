"""The `inspect` verb: what an image is, from any source, without unpacking it.

Reads the index, the manifest and the config (small documents; no layer
blob is read): the platforms on offer, the manifest picked for the
platform, its layers with their sizes, and a summary of the config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from unpack.image.compression import Compression
from unpack.image.documents import ImageConfig
from unpack.image.platform import Platform
from unpack.image.resolve import (
    ResolvedManifest,
    load_image,
    platforms_under,
    resolve_manifest,
)
from unpack.source import ImageReference, Source, SourceOptions, open_source
from unpack.trust.decide import (
    SignatureReport,
    TrustOptions,
    describe_found,
    evaluate,
    load_applicable_policy,
    policy_subject,
    signature_fetcher,
)
from unpack.trust.evaluation import PolicyImage
from unpack.trust.policy import Policy


@dataclass
class InspectLayer:
    """One layer: digest, media type, compressed size, uncompressed size if known."""

    digest: str
    media_type: str
    size: int
    uncompressed_size: int | None
    diff_id: str


@dataclass
class InspectReport:
    """Everything `oci-unpack inspect` shows; `--json` prints it as is."""

    image: str
    transport: str
    ref: str | None
    platforms: list[str]
    manifest: str
    manifest_media_type: str
    manifest_size: int
    config: str
    config_size: int
    platform: str | None
    layers: list[InspectLayer] = field(default_factory=list)
    created: str | None = None
    author: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    user: str | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    signature: SignatureReport | None = None
    short_name: str | None = None  # IMAGE as written, when it was a name to resolve
    resolution: str | None = None  # how it was resolved: "alias in FILE", …


def _signatures(
    policy: Policy | None,
    trust: TrustOptions,
    reference: ImageReference,
    source: Source,
    resolved: ResolvedManifest,
) -> SignatureReport:
    """The signatures found for the manifest, and what the policy says of the image."""
    subject = policy_subject(reference, source)
    digest = str(resolved.descriptor.digest)
    image = PolicyImage(subject, resolved.data, digest,
                        signature_fetcher(reference, source, subject, digest, trust))
    found = describe_found(image.signatures())
    if policy is None:
        note = "not checked (--insecure-policy)" if trust.insecure_policy else \
            "no signature policy file; not checked"
        return SignatureReport(None, found=found, note=note)
    report = evaluate(policy, image)
    report.found = found
    return report


def inspect_image(
    image_text: str,
    platform: Platform | None = None,
    options: SourceOptions | None = None,
    trust: TrustOptions | None = None,
) -> InspectReport:
    """Describe the image IMAGE names (for `platform`, default the host's)."""
    trust = trust or TrustOptions()
    policy = load_applicable_policy(trust)
    source, ref, reference = open_source(image_text, options)
    with source:
        resolved = resolve_manifest(source, ref, platform)
        signature = _signatures(policy, trust, reference, source, resolved)
        image = load_image(source, resolved, platform)
        platforms = platforms_under(source, ref)
    image_platform = image.platform
    if not platforms and image_platform is not None:
        platforms = [str(image_platform)]
    report = InspectReport(
        image=str(reference),
        transport=reference.transport,
        ref=reference.ref,
        platforms=platforms,
        manifest=str(image.manifest.digest),
        manifest_media_type=image.manifest.media_type,
        manifest_size=image.manifest.size,
        config=str(image.config_descriptor.digest),
        config_size=image.config_descriptor.size,
        platform=str(image_platform) if image_platform else None,
        signature=signature,
        short_name=reference.short_name,
        resolution=reference.resolution,
    )
    for layer in image.layers:
        descriptor = layer.descriptor
        plain = layer.compression is Compression.NONE
        report.layers.append(InspectLayer(
            str(descriptor.digest), descriptor.media_type, descriptor.size,
            descriptor.size if plain else None, str(layer.diff_id),
        ))
    _summarise_config(report, image.config)
    return report


def _summarise_config(report: InspectReport, config: ImageConfig) -> None:
    report.created, report.author = config.created, config.author
    report.entrypoint = list(config.entrypoint) if config.entrypoint is not None else None
    report.cmd = list(config.cmd) if config.cmd is not None else None
    report.env = list(config.env)
    report.user, report.workdir = config.user, config.working_dir
    report.labels = dict(config.labels)
    report.exposed_ports = list(config.exposed_ports)
    report.volumes = list(config.volumes)
    report.stop_signal = config.stop_signal


def report_json(report: InspectReport) -> str:
    """The `--json` output."""
    return json.dumps(asdict(report), indent=2)


def human_size(size: int | None) -> str:
    """1536 → `1.5 KiB`; None → `-`."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _short_type(media_type: str) -> str:
    for prefix in ("application/vnd.oci.image.", "application/vnd.docker.image.rootfs.",
                   "application/vnd.docker.distribution.", "application/vnd.docker."):
        if media_type.startswith(prefix):
            return media_type[len(prefix):]
    return media_type


def _signature_rows(signature: SignatureReport | None) -> list[tuple[str, str]]:
    if signature is None:
        return []
    found = signature.found or []
    rows = [("Signatures", f"{len(found)} found" if found else "none found")]
    rows += [("", f"{s['kind']}: {s['origin']}") for s in found]
    if signature.policy is None:
        rows.append(("Policy", signature.note or "not checked"))
        return rows
    verdict = "accepts the image" if signature.accepted else "rejects the image"
    rows.append(("Policy", f"{signature.policy} ({signature.scope}) {verdict}"))
    rows += [("", f"{r['type']}: {'allowed' if r['allowed'] else r['reason']}")
             for r in signature.requirements]
    rows += [("", f"accepted {s['kind']} signature by {s['key']} for {s['identity']}")
             for s in signature.signatures]
    return rows


def report_table(report: InspectReport) -> str:
    """The human output: a key/value block, a layer table, the config summary."""
    rows: list[tuple[str, str]] = [
        ("Image", report.image if report.short_name is None else
         f"{report.image} ({report.short_name}: {report.resolution})"),
        ("Manifest", f"{report.manifest} ({_short_type(report.manifest_media_type)}, "
                     f"{human_size(report.manifest_size)})"),
        ("Config", f"{report.config} ({human_size(report.config_size)})"),
        ("Platform", report.platform or "(not declared)"),
        ("Platforms", ", ".join(report.platforms) or "(not declared)"),
    ]
    optional = [
        ("Created", report.created), ("Author", report.author),
        ("Entrypoint", json.dumps(report.entrypoint) if report.entrypoint is not None else None),
        ("Cmd", json.dumps(report.cmd) if report.cmd is not None else None),
        ("User", report.user), ("WorkingDir", report.workdir),
        ("ExposedPorts", ", ".join(report.exposed_ports) or None),
        ("Volumes", ", ".join(report.volumes) or None),
        ("StopSignal", report.stop_signal),
    ]
    rows += [(k, v) for k, v in optional if v is not None]
    rows += _signature_rows(report.signature)
    rows += [("Env" if i == 0 else "", value) for i, value in enumerate(report.env)]
    rows += [("Labels" if i == 0 else "", f"{k}={v}")
             for i, (k, v) in enumerate(report.labels.items())]
    lines = [f"{key:<13}{value}" for key, value in rows]
    total = sum(layer.size for layer in report.layers)
    lines.append("")
    lines.append(f"Layers ({len(report.layers)}, {human_size(total)})")
    table = [("#", "DIGEST", "MEDIA TYPE", "SIZE", "UNCOMPRESSED")]
    for number, layer in enumerate(report.layers, 1):
        table.append((str(number), layer.digest, _short_type(layer.media_type),
                      human_size(layer.size), human_size(layer.uncompressed_size)))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]),
                 row[3].rjust(widths[3]), row[4].rjust(widths[4])]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


__all__ = ["InspectLayer", "InspectReport", "inspect_image", "report_json", "report_table"]
