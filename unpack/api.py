"""The Python API: unpack an image into a runtime bundle, or describe it.

    from unpack import unpack_image, UnpackOptions
    report = unpack_image("docker://registry.example/app:1.2", "./bundle")

Both calls take the image references the command line takes, raise the
`UnpackError` subclasses of `unpack.errors` (each with the CLI's `exit_code`),
and leave nothing at the bundle directory on failure. They change nothing
process-wide (umask, signal handlers, resource limits, working directory), so two
threads may unpack two bundles at once. Warnings go to `warn`, by default the
`oci_unpack` logger.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from unpack.progress import CallbackProgress, LayerProgress, NoProgress, Progress

if TYPE_CHECKING:
    from unpack.image.platform import Platform
    from unpack.source.base import SourceOptions
    from unpack.trust.decide import TrustOptions
    from unpack.verbs.inspect import InspectReport
    from unpack.verbs.unpack import UnpackOptions, UnpackReport


def _log_warning(message: str) -> None:
    import logging

    logging.getLogger("oci_unpack").warning(message)


def unpack_image(
    image: str,
    bundle: str | os.PathLike[str],
    options: UnpackOptions | None = None,
    *,
    progress: Callable[[LayerProgress], None] | Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> UnpackReport:
    """Unpack `image` into the runtime bundle directory `bundle` (`config.json` and
    `rootfs/`), which must not exist or be empty; return what was unpacked.

    `progress` is a function called with a `LayerProgress` as each layer starts, as
    its blob is read (at most every 0.1 s) and when it is applied — or a `Progress`,
    such as the command line's `TerminalProgress()`. Raises `UsageError`, `ImageError`
    (and its `VerificationError`), `FilesystemError`, `NetworkError` or
    `PolicyRejected` (all `UnpackError`).
    """
    from unpack.verbs import unpack as unpack_verb  # the layer machinery: only here

    if progress is None:
        reporter: Progress = NoProgress()
    elif isinstance(progress, Progress):
        reporter = progress
    else:
        reporter = CallbackProgress(progress)
    return unpack_verb.unpack(image, os.fspath(bundle), options or unpack_verb.UnpackOptions(),
                              reporter, warn or _log_warning)


def inspect_image(
    image: str,
    *,
    platform: Platform | None = None,
    source: SourceOptions | None = None,
    trust: TrustOptions | None = None,
) -> InspectReport:
    """Describe `image` (for `platform`, by default this machine's) without unpacking it:
    its platforms, manifest, layers, config summary and signature verdict. Reads the
    index, manifest and config only. Raises as `unpack_image` does."""
    from unpack.verbs import inspect as inspect_verb

    return inspect_verb.inspect_image(image, platform, source, trust)
