"""Converting an image config into a runtime bundle config (image-spec ``conversion.md``).

The image config (OCI or Docker; Docker's ``container_config`` is never read) is laid
onto :func:`~unpack.config.template.default_config`:

* ``process.args`` is Entrypoint + Cmd. ``RuntimeOptions.entrypoint`` replaces the
  Entrypoint and, unless ``args`` is also given, drops the Cmd (as ``docker run
  --entrypoint`` does); ``args`` replaces the Cmd. When all that leaves no command, args
  are ``/bin/sh`` (runc's example command) rather than an error, so a data-only image
  still unpacks into a bundle whose config the user can edit. A Cmd or Entrypoint given
  as one string is taken as a one-element list, as docker reads it.
* ``process.env`` is the image Env verbatim, then ``PATH`` (runc's default) when no entry
  starts with ``PATH=``, ``HOME`` (the user's home) when none starts with ``HOME=``, and,
  with a terminal, ``TERM=xterm`` when none starts with ``TERM=`` (as docker does); then
  each ``RuntimeOptions.env`` entry replaces the first entry of its name in place (later
  ones of that name are dropped, so the override is the only value) or is appended.
* ``process.cwd`` is WorkingDir, or ``/``; a relative WorkingDir is taken from ``/``
  (the runtime requires an absolute cwd).
* ``process.user`` comes from :func:`~unpack.config.user.resolve_user`.
* ``annotations`` are the implicit ``org.opencontainers.image.*`` ones for the fields
  present and not empty (``os.features`` and ``exposedPorts`` comma-joined, the ports
  sorted; ``created`` verbatim), overridden by the config's Labels.
* ``mounts`` gain the Volumes as :mod:`~unpack.config.volumes` describes.
* with ID mappings or ``rootless``, a user namespace whose mappings cover the process
  user, and for rootless the shape of ``runc spec --rootless``
  (:mod:`~unpack.config.rootless`).

An image ``os`` other than ``linux`` is refused; a missing ``os`` is taken as linux.
"""

import dataclasses
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from unpack.config.rootless import (
    HostIds,
    IdMapping,
    add_user_namespace,
    covers,
    make_rootless,
    rootless_mappings,
)
from unpack.config.template import DEFAULT_ARGS, DEFAULT_PATH, default_config
from unpack.config.user import resolve_user
from unpack.config.volumes import volume_mounts
from unpack.errors import ConfigError

ANNOTATION_PREFIX = "org.opencontainers.image."
_STRING_ANNOTATIONS = ("os", "architecture", "variant", "os.version", "author", "created")


@dataclass(frozen=True)
class RuntimeOptions:
    """What the caller overrides or adds to the image config."""

    tty: bool = False
    hostname: str | None = None
    readonly_rootfs: bool = False
    env: tuple[str, ...] = ()
    args: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    volumes: str = "tmpfs"
    rootless: bool = False
    uid_mappings: tuple[IdMapping, ...] = ()
    gid_mappings: tuple[IdMapping, ...] = ()
    host: HostIds = dataclasses.field(default_factory=HostIds)


@dataclass(frozen=True)
class RuntimeBundle:
    """The runtime config (JSON-serialisable) and the bundle directories it bind-mounts."""

    config: dict[str, Any]
    volume_dirs: tuple[str, ...]


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    """``value`` as a JSON object; null or absent is empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"image config {field}: expected an object")
    return value


def _string(value: Any, field: str) -> str:
    """``value`` as a string; null or absent is empty."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"image config {field}: expected a string")
    return value


def _strings(value: Any, field: str) -> list[str] | None:
    """``value`` as a list of strings (a lone string is one element); null stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"image config {field}: expected a list of strings")
    return list(value)


def _has(env: list[str], name: str) -> bool:
    """Whether some entry of ``env`` sets ``name``."""
    return any(entry.startswith(name + "=") for entry in env)


def _override(env: list[str], entry: str) -> list[str]:
    """``env`` with ``entry`` (KEY=VAL) in place of the first KEY entry, or appended."""
    name, sep, _ = entry.partition("=")
    if not sep or not name:
        raise ConfigError(f'environment variable "{entry}": expected KEY=VALUE')
    prefix = name + "="
    result: list[str] = []
    replaced = False
    for old in env:
        if not old.startswith(prefix):
            result.append(old)
        elif not replaced:
            result.append(entry)
            replaced = True
    return result if replaced else [*result, entry]


def _args(config: Mapping[str, Any], options: RuntimeOptions) -> list[str]:
    """``process.args`` from Entrypoint and Cmd and their overrides."""
    if options.entrypoint is not None:
        entrypoint: list[str] | None = list(options.entrypoint)
    else:
        entrypoint = _strings(config.get("Entrypoint"), "Entrypoint")
    if options.args is not None:
        cmd: list[str] | None = list(options.args)
    elif options.entrypoint is not None:
        cmd = None
    else:
        cmd = _strings(config.get("Cmd"), "Cmd")
    args = (entrypoint or []) + (cmd or [])
    return args or list(DEFAULT_ARGS)


def _env(config: Mapping[str, Any], home: str, options: RuntimeOptions) -> list[str]:
    """``process.env`` from the image Env, the defaults and the overrides."""
    env = _strings(config.get("Env"), "Env") or []
    if not _has(env, "PATH"):
        env.append(DEFAULT_PATH)
    if not _has(env, "HOME"):
        env.append("HOME=" + home)
    if options.tty and not _has(env, "TERM"):
        env.append("TERM=xterm")
    for entry in options.env:
        env = _override(env, entry)
    return env


def _cwd(config: Mapping[str, Any]) -> str:
    """``process.cwd`` from WorkingDir."""
    workdir = _string(config.get("WorkingDir"), "WorkingDir")
    if workdir.startswith("/"):
        return workdir
    return posixpath.normpath("/" + workdir) if workdir else "/"


def _annotations(image: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    """The implicit image annotations, overridden by the Labels."""
    implicit = {}
    for field in _STRING_ANNOTATIONS:
        value = _string(image.get(field), field)
        if value:
            implicit[ANNOTATION_PREFIX + field] = value
    features = _strings(image.get("os.features"), "os.features")
    if features:
        implicit[ANNOTATION_PREFIX + "os.features"] = ",".join(features)
    stop_signal = _string(config.get("StopSignal"), "StopSignal")
    if stop_signal:
        implicit[ANNOTATION_PREFIX + "stopSignal"] = stop_signal
    ports = _mapping(config.get("ExposedPorts"), "ExposedPorts")
    if ports:
        implicit[ANNOTATION_PREFIX + "exposedPorts"] = ",".join(sorted(ports))
    labels = _mapping(config.get("Labels"), "Labels")
    for key, value in labels.items():
        if not isinstance(value, str):
            raise ConfigError(f'image config Labels "{key}": expected a string value')
    return {**implicit, **labels}


def runtime_config(
    image_config: Mapping[str, Any],
    read_file: Callable[[str], bytes | None],
    options: RuntimeOptions,
) -> RuntimeBundle:
    """Convert ``image_config`` into a runtime bundle config.

    ``read_file`` returns the bytes of an absolute path in the rootfs (/etc/passwd and
    /etc/group are read), or None when it does not exist. Raises ConfigError.
    """
    if not isinstance(image_config, Mapping):
        raise ConfigError("image config: expected a JSON object")
    image = image_config
    system = _string(image.get("os"), "os")
    if system not in ("", "linux"):
        raise ConfigError(f'image config os "{system}": only linux images are supported')
    config = _mapping(image.get("config"), "config")

    user = resolve_user(
        _string(config.get("User"), "User"), read_file("/etc/passwd"), read_file("/etc/group")
    )
    spec = default_config()
    process = spec["process"]
    process["terminal"] = options.tty
    process["args"] = _args(config, options)
    process["env"] = _env(config, user.home, options)
    process["cwd"] = _cwd(config)
    process["user"] = {"uid": user.uid, "gid": user.gid}
    if user.additional_gids:
        process["user"]["additionalGids"] = list(user.additional_gids)
    spec["root"]["readonly"] = options.readonly_rootfs
    if options.hostname is not None:
        spec["hostname"] = options.hostname

    annotations = _annotations(image, config)
    if annotations:
        spec["annotations"] = annotations

    volumes = _mapping(config.get("Volumes"), "Volumes")
    reserved = [mount["destination"] for mount in spec["mounts"]]
    mounts, volume_dirs = volume_mounts(volumes, options.volumes, user.uid, user.gid, reserved)
    spec["mounts"].extend(mounts)
    if options.rootless or options.uid_mappings or options.gid_mappings:
        _user_namespace(spec, user.uid, user.gid, options)
    return RuntimeBundle(spec, volume_dirs)


def _user_namespace(spec: dict[str, Any], uid: int, gid: int, options: RuntimeOptions) -> None:
    """A user namespace whose mappings cover the process user; rootless shape if asked."""
    host = options.host
    uids = list(options.uid_mappings) or rootless_mappings(uid, host.uid, host.subuid)
    gids = list(options.gid_mappings) or rootless_mappings(gid, host.gid, host.subgid)
    for kind, mappings, wanted in (("uid", uids, uid), ("gid", gids, gid)):
        if not covers(mappings, wanted):
            raise ConfigError(
                f"the process {kind} {wanted} is not covered by the {kind} mappings "
                f"{mappings}: the runtime could not start it"
            )
    add_user_namespace(spec, uids, gids)
    if options.rootless:
        make_rootless(spec)
