"""Turning an image config's ``Volumes`` into runtime-spec mounts.

conversion.md asks that volume data not be written to the root filesystem. Three modes:

* ``tmpfs``: each volume is a fresh tmpfs (``nosuid,nodev,mode=755``; owned by the
  process user when that is not root, so an image running as a user can write to its
  volumes as it could under docker);
* ``bind``: each volume is bind-mounted (``rbind,nosuid,nodev``) from the directory
  ``volumes/<name>`` of the bundle, where ``<name>`` is the normalised path without its
  leading ``/`` with ``%``, ``/`` and other unsafe bytes percent-escaped (so distinct
  paths never share a directory); the runtime resolves that relative source against the
  bundle, and the caller creates the directories;
* ``none``: no mounts; volume data goes to the rootfs.

Paths are normalised (a relative one is taken from ``/``), duplicates are merged, and
mounts are sorted so a parent is mounted before its children. A volume at the
destination of one of the runtime's own mounts (e.g. ``/dev/shm``) is skipped: that
mount already keeps its data off the rootfs, and replacing it could break the container.
A volume at ``/`` is an error.
"""

import posixpath
from collections.abc import Collection, Iterable
from typing import Any

from unpack.errors import ConfigError

VOLUME_MODES = ("tmpfs", "bind", "none")
VOLUMES_DIR = "volumes"
_NAME_MAX = 255


def normalize_volume(path: str) -> str:
    """The absolute, normalised destination of volume ``path``; ``/`` is refused."""
    destination = posixpath.normpath("/" + path.lstrip("/"))
    if destination == "/" or "\0" in destination:
        raise ConfigError(f'image config Volumes "{path}": not a mountable volume path')
    return destination


def volume_dir(destination: str) -> str:
    """The bundle-relative directory backing ``destination`` in ``bind`` mode."""
    from urllib.parse import quote  # only bind mode needs it

    name = quote(destination[1:], safe="")
    if len(name.encode()) > _NAME_MAX:
        raise ConfigError(f'image config Volumes "{destination}": path too long for a volume')
    return f"{VOLUMES_DIR}/{name}"


def volume_mounts(
    paths: Iterable[str], mode: str, uid: int, gid: int, reserved: Collection[str]
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    """The mounts for volume ``paths`` in ``mode``, and the bundle directories they need.

    ``uid``/``gid`` are the process user's; ``reserved`` are destinations already mounted.
    """
    if mode not in VOLUME_MODES:
        raise ConfigError(f'volumes mode "{mode}": expected one of {", ".join(VOLUME_MODES)}')
    if mode == "none":
        return [], ()
    destinations = sorted({normalize_volume(path) for path in paths} - set(reserved))
    mounts: list[dict[str, Any]] = []
    dirs: list[str] = []
    for destination in destinations:
        if mode == "bind":
            source = volume_dir(destination)
            dirs.append(source)
            options = ["rbind", "nosuid", "nodev"]
            mounts.append(
                {"destination": destination, "type": "bind", "source": source, "options": options}
            )
        else:
            options = ["nosuid", "nodev", "mode=755"]
            if (uid, gid) != (0, 0):
                options += [f"uid={uid}", f"gid={gid}"]
            mounts.append(
                {"destination": destination, "type": "tmpfs", "source": "tmpfs", "options": options}
            )
    return mounts, tuple(dirs)
