"""The tool's own error types, each carrying the exit code the CLI reports.

Every failure a user can cause (a bad image, a bad destination, a bad option)
is one of these; anything else reaching the CLI is a bug.
"""

EXIT_USAGE = 2
EXIT_IMAGE = 3
EXIT_FILESYSTEM = 4
EXIT_NETWORK = 5
EXIT_POLICY = 6
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70


class UnpackError(Exception):
    """Base of every error the tool reports as one line."""

    exit_code = EXIT_IMAGE


class ImageError(UnpackError):
    """The image is malformed, corrupt, unsupported or does not match its digests."""

    exit_code = EXIT_IMAGE


class VerificationError(ImageError):
    """A blob or layer stream does not match its descriptor's size or digest."""


class LayerError(ImageError):
    """A layer's tar stream is malformed or asks for something refused."""


class ConfigError(ImageError):
    """The image config cannot be turned into a runtime config (e.g. unknown user)."""


class FilesystemError(UnpackError):
    """The destination cannot be written (exists, permission, disk full, ...)."""

    exit_code = EXIT_FILESYSTEM


class NetworkError(UnpackError):
    """A registry could not be reached or refused us (connection, TLS, authentication, HTTP)."""

    exit_code = EXIT_NETWORK


class UsageError(UnpackError):
    """The command line asks for something impossible."""

    exit_code = EXIT_USAGE


class PolicyError(UsageError):
    """The signature policy (or a key or registries.d file it names) is malformed or unreadable."""


class PolicyRejected(UnpackError):
    """The signature policy does not allow this image (nothing was unpacked)."""

    exit_code = EXIT_POLICY


class Interrupted(UnpackError):
    """SIGINT or SIGTERM arrived; the partial bundle has been removed."""

    exit_code = EXIT_INTERRUPTED
